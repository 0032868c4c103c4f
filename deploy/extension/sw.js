// tandem extension service worker: holds the token, makes every call to tandem, relays events
// to the side panel, sets the focus from helpdesk tabs and inserts text into their reply box.
//
// Trust boundaries:
//  - the token is read here and nowhere else; no message ever carries it out, and storage.local
//    is closed to content scripts (setAccessLevel), so a helpdesk page cannot get at it;
//  - content scripts may only report their URL and answer "insert" requests;
//  - the side panel (our own page) may ask for a fixed set of API calls (ALLOWED_CALLS).
'use strict';

const DEFAULTS = {
  tandemUrl: 'http://127.0.0.1:8787',
  helpdeskPatterns: [],
  conversationRegex: '/(?:tickets|conversations?|chats?)/([A-Za-z0-9._-]+)',
  replySelector: 'textarea[name="reply"], #reply, [contenteditable="true"]',
  agentId: '',
};
const ID_RE = /^[A-Za-z0-9._-]{1,128}$/;
const SCRIPT_ID = 'tandem-helpdesk';
const CALL_TIMEOUT_MS = 15000;
const SSE_RETRY_MS = 3000;
const SSE_RETRY_MAX_MS = 30000;

// The calls the panel may make through us: [method, path regex].
const ALLOWED_CALLS = [
  ['GET', /^\/v1\/focus$/],
  ['PUT', /^\/v1\/focus$/],
  ['GET', /^\/v1\/conversations\/[A-Za-z0-9._-]{1,128}\/(?:context|summary)$/],
  ['GET', /^\/v1\/conversations\/[A-Za-z0-9._-]{1,128}\/suggestions(?:\?[A-Za-z0-9=&_]*)?$/],
  ['POST', /^\/v1\/suggestions\/[A-Za-z0-9._-]{1,128}\/feedback$/],
];

// ---- storage -----------------------------------------------------------------------------------

async function lockStorage() {
  // Chrome opens storage.local to content scripts by default; ours never need it.
  try {
    await chrome.storage.local.setAccessLevel({ accessLevel: 'TRUSTED_CONTEXTS' });
  } catch (e) {
    console.warn('tandem: cannot restrict storage.local to the extension:', String(e && e.message));
  }
}

async function getConfig() {
  const { config } = await chrome.storage.local.get('config');
  return Object.assign({}, DEFAULTS, config || {});
}

async function getToken() {
  const { token } = await chrome.storage.local.get('token');
  return typeof token === 'string' ? token : '';
}

function baseUrl(cfg) {
  return String(cfg.tandemUrl || DEFAULTS.tandemUrl).replace(/\/+$/, '');
}

// ---- calls to tandem ---------------------------------------------------------------------------

async function api(method, path, body) {
  const cfg = await getConfig();
  const token = await getToken();
  if (!token) return { status: 401, json: { error: { code: 'unauthorized', message: 'no token: set it on the extension options page' } } };
  const headers = { Authorization: 'Bearer ' + token, Accept: 'application/json' };
  const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
  if (body !== undefined && body !== null) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), CALL_TIMEOUT_MS);
  init.signal = ctl.signal;
  try {
    const r = await fetch(baseUrl(cfg) + path, init);
    let json = null;
    try { json = await r.json(); } catch (e) { json = null; }
    return { status: r.status, json };
  } catch (e) {
    return { status: 0, json: { error: { code: 'unreachable', message: 'tandem is not reachable at ' + baseUrl(cfg) } } };
  } finally {
    clearTimeout(timer);
  }
}

function callAllowed(method, path) {
  return typeof method === 'string' && typeof path === 'string' &&
    ALLOWED_CALLS.some(([m, re]) => m === method && re.test(path));
}

// ---- focus from helpdesk tabs ------------------------------------------------------------------

async function session() {
  return chrome.storage.session.get(['helpdeskTab', 'focus']);
}

async function onLocation(url, tabId, force) {
  const cfg = await getConfig();
  let re;
  try {
    re = new RegExp(cfg.conversationRegex);
  } catch (e) {
    return;
  }
  const m = re.exec(String(url));
  if (!m) return;
  const conv = m[1] || m[0];
  if (!ID_RE.test(conv)) return;
  await chrome.storage.session.set({ helpdeskTab: tabId });
  const s = await session();
  if (!force && s.focus === conv) return;
  const r = await api('PUT', '/v1/focus', { conversation_id: conv });
  if (r.status === 200) {
    await chrome.storage.session.set({ focus: conv });
    for (const p of panels) p.port.postMessage({ type: 'command', name: 'refresh-focus' });
  }
}

chrome.runtime.onMessage.addListener((msg, sender, sendResponse) => {
  if (sender.id !== chrome.runtime.id || !msg || typeof msg !== 'object') return false;
  const fromPage = (name) => sender.url && sender.url.startsWith(chrome.runtime.getURL(name));
  if (msg.type === 'location' && sender.tab && typeof sender.tab.id === 'number') {
    // a content script in a helpdesk tab
    onLocation(msg.url, sender.tab.id, !!msg.force).then(() => sendResponse({ ok: true }), () => sendResponse({ ok: false }));
    return true;
  }
  if (sender.tab && !fromPage('sidepanel.html') && !fromPage('options.html')) return false; // nothing else for content scripts
  if (msg.type === 'getConfig' && (fromPage('options.html') || fromPage('sidepanel.html'))) {
    Promise.all([getConfig(), getToken()]).then(([cfg, token]) => sendResponse({ config: cfg, hasToken: token !== '' }));
    return true;
  }
  if (msg.type === 'saveConfig' && fromPage('options.html')) {
    saveConfig(msg.config, msg.token, !!msg.forgetToken).then(sendResponse, (e) => sendResponse({ ok: false, message: String(e && e.message) }));
    return true;
  }
  if (msg.type === 'testConnection' && fromPage('options.html')) {
    testConnection().then(sendResponse);
    return true;
  }
  return false;
});

async function saveConfig(c, token, forgetToken) {
  const cfg = Object.assign({}, DEFAULTS);
  if (c && typeof c === 'object') {
    for (const k of Object.keys(DEFAULTS)) if (k in c) cfg[k] = c[k];
  }
  try {
    const u = new URL(cfg.tandemUrl);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme');
    cfg.tandemUrl = u.origin;
  } catch (e) {
    return { ok: false, message: 'The tandem address must be like http://127.0.0.1:8787' };
  }
  try {
    new RegExp(cfg.conversationRegex);
  } catch (e) {
    return { ok: false, message: 'The conversation pattern is not a valid regular expression' };
  }
  cfg.helpdeskPatterns = (Array.isArray(cfg.helpdeskPatterns) ? cfg.helpdeskPatterns : [])
    .map((p) => String(p).trim()).filter(Boolean);
  cfg.agentId = ID_RE.test(String(cfg.agentId || '')) ? String(cfg.agentId) : '';
  const set = { config: cfg };
  if (typeof token === 'string' && token.trim()) set.token = token.trim();
  await chrome.storage.local.set(set);
  if (forgetToken) await chrome.storage.local.remove('token');
  const reg = await syncContentScripts(cfg);
  return { ok: reg.ok, message: reg.ok ? 'Saved' : reg.message };
}

async function testConnection() {
  const originHint = 'tandem refused this extension\'s origin: start it with TANDEM_ALLOWED_ORIGINS=' + location.origin;
  const r = await api('GET', '/v1/focus');
  if (r.status === 403) return { ok: false, message: originHint };
  if (!(r.status === 200 || (r.status === 404 && r.json && r.json.error && r.json.error.code === 'no_focus'))) {
    return { ok: false, message: (r.json && r.json.error && r.json.error.message) || ('HTTP ' + r.status) };
  }
  // Chrome sends Origin on writes (not on GETs): probe one that tandem refuses before writing
  // anything (an empty feedback body is a 400 once the origin is accepted)
  const w = await api('POST', '/v1/suggestions/sg_0000000000000000/feedback', {});
  if (w.status === 403) return { ok: false, message: originHint };
  return { ok: true, message: 'Connected to tandem; focus: ' + (r.status === 200 ? r.json.conversation_id : 'none') };
}

// Content scripts run only on the helpdesk addresses the agent configured (and permitted).
async function syncContentScripts(cfg) {
  try {
    const existing = await chrome.scripting.getRegisteredContentScripts({ ids: [SCRIPT_ID] });
    if (existing.length) await chrome.scripting.unregisterContentScripts({ ids: [SCRIPT_ID] });
    if (!cfg.helpdeskPatterns.length) return { ok: true };
    await chrome.scripting.registerContentScripts([{
      id: SCRIPT_ID,
      matches: cfg.helpdeskPatterns,
      js: ['content.js'],
      runAt: 'document_idle',
      allFrames: false,
      persistAcrossSessions: true,
    }]);
    // tabs already open get the script now
    const tabs = await chrome.tabs.query({ url: cfg.helpdeskPatterns });
    for (const t of tabs) {
      chrome.scripting.executeScript({ target: { tabId: t.id }, files: ['content.js'] }).catch(() => {});
    }
    return { ok: true };
  } catch (e) {
    return { ok: false, message: 'Helpdesk addresses not usable: ' + String(e && e.message) };
  }
}

// ---- insert into the helpdesk ------------------------------------------------------------------

async function insertIntoHelpdesk(text) {
  if (typeof text !== 'string' || !text) return { ok: false, message: 'nothing to insert' };
  const { helpdeskTab } = await session();
  if (typeof helpdeskTab !== 'number') return { ok: false, message: 'No helpdesk tab yet: open a conversation in your helpdesk' };
  const cfg = await getConfig();
  try {
    const r = await chrome.tabs.sendMessage(helpdeskTab, { type: 'insert', text, selector: cfg.replySelector });
    return r && typeof r === 'object' ? { ok: !!r.ok, message: String(r.message || '') } : { ok: false, message: 'the helpdesk tab did not answer' };
  } catch (e) {
    return { ok: false, message: 'The helpdesk tab is gone or not a configured helpdesk page; reload it' };
  }
}

// ---- event streams for the side panel ----------------------------------------------------------

// EventSource does not exist in service workers; fetch streams the same text/event-stream and
// lets the token go in a header instead of the URL.
class Stream {
  constructor(conv, emit) {
    this.conv = conv;
    this.emit = emit;
    this.ctl = null;
    this.lastId = '';
    this.retry = SSE_RETRY_MS;
    this.stopped = false;
    this.timer = 0;
    this.run();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ctl) this.ctl.abort();
  }

  async run() {
    if (this.stopped) return;
    const cfg = await getConfig();
    const token = await getToken();
    if (!token) {
      this.emit({ type: 'stream', state: 'closed', detail: 'unauthorized' });
      return;
    }
    this.ctl = new AbortController();
    const headers = { Authorization: 'Bearer ' + token, Accept: 'text/event-stream' };
    if (this.lastId) headers['Last-Event-ID'] = this.lastId;
    let backoff = this.retry;
    try {
      this.emit({ type: 'stream', state: this.lastId ? 'reconnecting' : 'connecting' });
      const r = await fetch(baseUrl(cfg) + '/v1/conversations/' + encodeURIComponent(this.conv) + '/events',
        { headers, cache: 'no-store', credentials: 'omit', signal: this.ctl.signal });
      if (r.status !== 200 || !r.body) {
        // the panel asks the API why (401, 404 ...) and subscribes again
        this.emit({ type: 'stream', state: 'closed', detail: 'HTTP ' + r.status });
        this.stopped = true;
        return;
      }
      this.emit({ type: 'stream', state: 'live' });
      await this.read(r.body);
      backoff = this.retry;
    } catch (e) {
      if (this.stopped) return;
      backoff = Math.min(SSE_RETRY_MAX_MS, backoff * 2);
    }
    if (this.stopped) return;
    this.emit({ type: 'stream', state: 'reconnecting' });
    this.timer = setTimeout(() => this.run(), backoff);
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let ev = { name: 'message', data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
        if (line === '') {
          if (ev.id !== null) this.lastId = ev.id;
          if (ev.data.length) {
            this.emit({ type: 'event', name: ev.name, data: ev.data.join('\n'), lastEventId: this.lastId });
          }
          ev = { name: 'message', data: [], id: null };
          continue;
        }
        if (line[0] === ':') continue; // comment / heartbeat
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? '' : line.slice(colon + 1);
        if (val[0] === ' ') val = val.slice(1);
        if (field === 'event') ev.name = val;
        else if (field === 'data') ev.data.push(val);
        else if (field === 'id' && !val.includes('\0')) ev.id = val;
        else if (field === 'retry' && /^\d+$/.test(val)) this.retry = Number(val);
      }
    }
  }
}

// ---- the side panel ----------------------------------------------------------------------------

const panels = new Set();

chrome.runtime.onConnect.addListener((port) => {
  if (port.name !== 'panel' || !port.sender || port.sender.id !== chrome.runtime.id ||
      !String(port.sender.url || '').startsWith(chrome.runtime.getURL('sidepanel.html'))) {
    port.disconnect();
    return;
  }
  const p = { port, stream: null };
  panels.add(p);
  const send = (m) => {
    try { port.postMessage(m); } catch (e) { /* panel closed */ }
  };
  port.onMessage.addListener(async (m) => {
    if (!m || typeof m !== 'object') return;
    if (m.type === 'api') {
      const method = String(m.method || 'GET').toUpperCase();
      if (!callAllowed(method, m.path)) {
        send({ type: 'result', id: m.id, status: 400, json: { error: { code: 'not_allowed', message: 'the extension does not relay this call' } } });
        return;
      }
      let body = m.body;
      if (method === 'POST' && /\/feedback$/.test(m.path) && body && typeof body === 'object' && !body.agent_id) {
        const cfg = await getConfig();
        if (cfg.agentId) body = Object.assign({}, body, { agent_id: cfg.agentId });
      }
      const r = await api(method, m.path, body);
      send({ type: 'result', id: m.id, status: r.status, json: r.json });
    } else if (m.type === 'subscribe' && ID_RE.test(String(m.conversation_id))) {
      if (p.stream) p.stream.stop();
      const conv = String(m.conversation_id);
      p.stream = new Stream(conv, (e) => send(Object.assign({ conversation_id: conv }, e)));
    } else if (m.type === 'unsubscribe') {
      if (p.stream && p.stream.conv === m.conversation_id) {
        p.stream.stop();
        p.stream = null;
      }
    } else if (m.type === 'insert') {
      const r = await insertIntoHelpdesk(m.text);
      send({ type: 'result', id: m.id, ok: r.ok, message: r.message });
    } else if (m.type === 'ping') {
      send({ type: 'pong' });
    }
  });
  port.onDisconnect.addListener(() => {
    if (p.stream) p.stream.stop();
    panels.delete(p);
  });
});

// ---- hotkeys -----------------------------------------------------------------------------------

// With the panel open the panel acts (it knows what the agent sees and selected); without it,
// insert-N takes the focused conversation's N-th suggestion and records the acceptance.
async function runCommand(name) {
  if (panels.size) {
    for (const p of panels) p.port.postMessage({ type: 'command', name });
    return { ok: true, via: 'panel' };
  }
  const m = /^insert-([1-9])$/.exec(name);
  if (!m) return { ok: false, message: 'open the tandem panel for this command' };
  const r = await api('GET', '/v1/focus/suggestions/' + m[1] + '?format=json');
  if (r.status !== 200 || !r.json || typeof r.json.text !== 'string') {
    return { ok: false, message: (r.json && r.json.error && r.json.error.message) || 'no suggestion' };
  }
  const ins = await insertIntoHelpdesk(r.json.text);
  if (!ins.ok) return ins;
  const cfg = await getConfig();
  const body = { action: 'accepted', final_text: r.json.text, feedback_id: crypto.randomUUID() };
  if (cfg.agentId) body.agent_id = cfg.agentId;
  const fb = await api('POST', '/v1/suggestions/' + encodeURIComponent(r.json.id) + '/feedback', body);
  return { ok: fb.status >= 200 && fb.status < 300, via: 'worker', message: fb.status >= 300 ? 'feedback not saved' : 'inserted' };
}
// for tests: a browser under automation cannot press global shortcuts
globalThis.tandemRunCommand = runCommand;

chrome.commands.onCommand.addListener((name) => {
  const map = { 'reject-selected': 'reject', 'show-summary': 'summary' };
  runCommand(map[name] || name);
});

// ---- lifecycle ---------------------------------------------------------------------------------

chrome.runtime.onInstalled.addListener(async () => {
  await lockStorage();
  await chrome.sidePanel.setPanelBehavior({ openPanelOnActionClick: true }).catch(() => {});
  await syncContentScripts(await getConfig());
});
chrome.runtime.onStartup.addListener(lockStorage);
lockStorage();
