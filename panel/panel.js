// tandem agent panel: live suggestions, summary, customer history and alerts; keyboard first.
//
// Security rules of this file (CSP forbids inline script and style; these keep the rest safe):
//  - customer and model text goes into the page with textContent only, never as HTML;
//  - the token is never logged, never put in the page, and travels in a URL only for
//    EventSource (which cannot send headers); it lives in this tab's sessionStorage;
//  - embedded in the browser extension's side panel the page has no token at all: the
//    extension's service worker makes every call and relays answers by postMessage.
'use strict';

(() => {
  const ID_RE = /^[A-Za-z0-9._-]{1,128}$/;
  const FOCUS_POLL_MS = 2000;
  const RESUBSCRIBE_MS = 3000;
  const MAX_SHORTCUT = 3;
  const MESSAGES_SHOWN = 6;
  const TOKEN_KEY = 'tandem.token';

  const $ = (id) => document.getElementById(id);

  // ---- small DOM helpers (text only) ------------------------------------------------------

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function kbd(text) {
    return el('kbd', 'key', text);
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function str(v) {
    return typeof v === 'string' ? v : (v === null || v === undefined ? '' : String(v));
  }

  function announce(text, urgent) {
    const region = $(urgent ? 'live-assertive' : 'live-polite');
    // a change of text is what screen readers announce: clear first so a repeat is heard
    region.textContent = '';
    window.setTimeout(() => { region.textContent = text; }, 30);
  }

  let toastTimer = 0;
  function toast(text, kind) {
    const t = $('toast');
    t.textContent = text;
    t.dataset.kind = kind || 'info';
    t.hidden = false;
    window.clearTimeout(toastTimer);
    toastTimer = window.setTimeout(() => { t.hidden = true; }, 4000);
  }

  function banner(text, kind) {
    const b = $('banner');
    if (!text) {
      b.hidden = true;
      b.textContent = '';
      return;
    }
    b.textContent = text;
    b.dataset.kind = kind || 'info';
    b.hidden = false;
  }

  function setConn(stateName, text) {
    const c = $('conn');
    c.dataset.state = stateName;
    $('conn-text').textContent = text;
  }

  function uuid() {
    if (window.crypto && typeof window.crypto.randomUUID === 'function') return window.crypto.randomUUID();
    const b = new Uint8Array(16);
    window.crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  function sleep(ms) {
    return new Promise((resolve) => window.setTimeout(resolve, ms));
  }

  function parseJSON(text) {
    try {
      return JSON.parse(text);
    } catch (e) {
      return null;
    }
  }

  // ---- transports ---------------------------------------------------------------------------
  // Both offer: api(method, path, body) -> {status, json}; subscribe(conv, onEvent, onState)
  // -> unsubscribe(); insert(text) -> {ok, message}.

  function readToken() {
    // #token=... (a link from `tandem status`, or a bookmark): moved to sessionStorage and
    // removed from the address bar and history at once.
    const frag = new URLSearchParams(location.hash.slice(1));
    const t = frag.get('token');
    if (t) {
      try { sessionStorage.setItem(TOKEN_KEY, t); } catch (e) { /* storage off: keep in memory */ }
      history.replaceState(null, '', location.pathname + location.search);
      return t;
    }
    try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
  }

  function standaloneTransport() {
    let token = readToken();
    return {
      mode: 'standalone',
      hasToken: () => token !== '',
      setToken(t) {
        token = t;
        try { sessionStorage.setItem(TOKEN_KEY, t); } catch (e) { /* memory only */ }
      },
      forgetToken() {
        token = '';
        try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* nothing stored */ }
      },
      async api(method, path, body) {
        const headers = { Authorization: 'Bearer ' + token, Accept: 'application/json' };
        const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
        if (body !== undefined) {
          headers['Content-Type'] = 'application/json';
          init.body = JSON.stringify(body);
        }
        let r;
        try {
          r = await fetch(path, init);
        } catch (e) {
          return { status: 0, json: null };
        }
        let json = null;
        try { json = await r.json(); } catch (e) { json = null; }
        return { status: r.status, json };
      },
      subscribe(conv, onEvent, onState) {
        const url = '/v1/conversations/' + encodeURIComponent(conv) + '/events?token=' + encodeURIComponent(token);
        const es = new EventSource(url);
        onState('connecting');
        es.onopen = () => onState('live');
        es.onerror = () => onState(es.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting');
        for (const name of ['suggestions', 'summary', 'alert', 'status']) {
          es.addEventListener(name, (ev) => onEvent(name, ev.data, ev.lastEventId));
        }
        return () => es.close();
      },
      async insert(text) {
        // the standalone page cannot reach the helpdesk: the clipboard is the hand-over
        try {
          await navigator.clipboard.writeText(text);
          return { ok: true, message: 'Copied — paste it into the reply box' };
        } catch (e) {
          const ta = el('textarea', 'offscreen');
          ta.value = text;
          ta.setAttribute('readonly', '');
          document.body.appendChild(ta);
          ta.select();
          let ok = false;
          try { ok = document.execCommand('copy'); } catch (e2) { ok = false; }
          ta.remove();
          return ok ? { ok: true, message: 'Copied — paste it into the reply box' }
                    : { ok: false, message: 'The browser refused the clipboard; select the text and copy it' };
        }
      },
    };
  }

  // In the extension's side panel this page is framed by chrome-extension://<id>/sidepanel.html.
  // location.ancestorOrigins cannot be forged by the framing page, so it names the one origin we
  // talk to, in both directions.
  function bridgeTransport(parentOrigin) {
    const pending = new Map();
    let seq = 0;
    let sub = null;
    let commandHandler = null;

    function post(msg) {
      window.parent.postMessage(Object.assign({ tandem: 'panel' }, msg), parentOrigin);
    }

    function call(type, payload, timeoutMs) {
      return new Promise((resolve) => {
        const id = ++seq;
        const timer = window.setTimeout(() => {
          pending.delete(id);
          resolve({ status: 0, ok: false, message: 'the extension did not answer' });
        }, timeoutMs || 15000);
        pending.set(id, (m) => { window.clearTimeout(timer); resolve(m); });
        post(Object.assign({ type, id }, payload));
      });
    }

    window.addEventListener('message', (ev) => {
      if (ev.source !== window.parent || ev.origin !== parentOrigin) return;
      const m = ev.data;
      if (!m || typeof m !== 'object' || m.tandem !== 'ext') return;
      if (m.type === 'result') {
        const done = pending.get(m.id);
        if (done) {
          pending.delete(m.id);
          done(m);
        }
      } else if (m.type === 'event' && sub && m.conversation_id === sub.conv) {
        sub.onEvent(str(m.name), str(m.data), str(m.lastEventId));
      } else if (m.type === 'stream' && sub && m.conversation_id === sub.conv) {
        sub.onState(str(m.state));
      } else if (m.type === 'command' && commandHandler) {
        commandHandler(str(m.name));
      }
    });

    return {
      mode: 'extension',
      hasToken: () => true,
      setToken() {},
      forgetToken() {},
      onCommand(fn) { commandHandler = fn; },
      hello() { post({ type: 'ready' }); },
      async api(method, path, body) {
        const m = await call('api', { method, path, body });
        return { status: m.status || 0, json: m.json === undefined ? null : m.json };
      },
      subscribe(conv, onEvent, onState) {
        sub = { conv, onEvent, onState };
        onState('connecting');
        post({ type: 'subscribe', conversation_id: conv });
        return () => {
          if (sub && sub.conv === conv) sub = null;
          post({ type: 'unsubscribe', conversation_id: conv });
        };
      },
      async insert(text) {
        const m = await call('insert', { text }, 10000);
        return { ok: !!m.ok, message: str(m.message) };
      },
    };
  }

  function pickTransport() {
    const params = new URLSearchParams(location.search);
    if (params.get('embed') === '1' && window.parent !== window) {
      const anc = location.ancestorOrigins;
      const parentOrigin = anc && anc.length ? anc[0] : '';
      if (/^chrome-extension:\/\/[a-p]{32}$/.test(parentOrigin)) return bridgeTransport(parentOrigin);
    }
    return standaloneTransport();
  }

  // ---- state ---------------------------------------------------------------------------------

  const params = new URLSearchParams(location.search);
  const pinned = ID_RE.test(params.get('conversation') || '') ? params.get('conversation') : null;
  const transport = pickTransport();

  const state = {
    conv: null,
    unsubscribe: null,
    streamState: 'idle',
    suggestions: [],      // the list on screen
    pending: null,        // a newer list held back while the agent edits or rejects
    basedOn: '',
    selected: 0,
    mode: null,           // {kind: 'edit'|'reject', id}
    outcome: new Map(),   // suggestion id -> {action, error, body}
    shownAt: new Map(),   // suggestion id -> unix ms it was first on screen
    alerts: new Map(),    // alert type -> alert
    agentId: '',
    contextTimer: 0,
    resubTimer: 0,
    summaryOpen: true,
  };

  // ---- rendering: suggestions ---------------------------------------------------------------

  function sourceLabel(s) {
    const title = str(s.title) || str(s.kb_id);
    if (s.source === 'kb') return title ? 'KB: ' + title : 'KB';
    if (s.source === 'memory') return title ? 'Past reply · KB: ' + title : 'Past reply';
    if (s.source === 'llm') return title ? 'LLM · grounded on KB: ' + title : 'LLM';
    return str(s.source) || 'unknown source';
  }

  function scoreLabel(s) {
    return typeof s.score === 'number' && isFinite(s.score) ? 'score ' + s.score.toFixed(2) : '';
  }

  function cardOf(id) {
    return document.querySelector('#suggestion-list > li[data-sid="' + CSS.escape(id) + '"]');
  }

  function renderSuggestions() {
    const list = $('suggestion-list');
    const hadFocusInList = list.contains(document.activeElement);
    clear(list);
    const items = state.suggestions;
    $('suggestions-empty').hidden = items.length > 0;
    if (!items.length) {
      $('suggestions-empty').textContent = state.conv ? 'No suggestions for this conversation yet.' : 'No conversation in focus.';
    }
    if (state.selected >= items.length) state.selected = 0;
    const tpl = $('suggestion-template');
    items.forEach((s, i) => {
      const li = tpl.content.firstElementChild.cloneNode(true);
      const n = i + 1;
      const sid = str(s.id);
      li.dataset.sid = sid;
      li.dataset.index = String(i);
      li.id = 'suggestion-' + n;
      const src = sourceLabel(s);
      li.setAttribute('aria-label', 'Suggestion ' + n + ' of ' + items.length + ', machine-suggested, source ' + src);
      li.querySelector('.s-num').textContent = String(n);
      li.querySelector('.s-source').textContent = src;
      li.querySelector('.s-source').dataset.source = str(s.source);
      li.querySelector('.s-score').textContent = scoreLabel(s);
      li.querySelector('.s-score').title = 'Relevance score from the ' + (s.source === 'llm' ? 'model' : 'retrieval') + ' (higher is closer)';
      li.querySelector('.s-text').textContent = str(s.text);
      const ins = li.querySelector('.s-insert');
      ins.textContent = transport.mode === 'extension' ? 'Insert' : 'Copy';
      if (i < MAX_SHORTCUT) {
        ins.appendChild(document.createTextNode(' '));
        ins.appendChild(kbd('Alt+' + n));
        ins.setAttribute('aria-keyshortcuts', 'Alt+' + n);
      }
      ins.setAttribute('aria-label', (transport.mode === 'extension' ? 'Insert' : 'Copy') + ' suggestion ' + n);
      const insEdited = li.querySelector('.s-edit-insert');
      insEdited.firstChild.textContent = (transport.mode === 'extension' ? 'Insert' : 'Copy') + ' edited ';
      // per-card ids for the edit/reject controls' labels
      const ta = li.querySelector('.s-edit-text');
      ta.id = 'edit-' + n;
      li.querySelector('.s-edit label').htmlFor = ta.id;
      const rr = li.querySelector('.s-reject-reason');
      rr.id = 'reason-' + n;
      li.querySelector('.s-reject-label').htmlFor = rr.id;
      ins.addEventListener('click', () => doInsert(i));
      li.querySelector('.s-edit-btn').addEventListener('click', () => startEdit(i));
      li.querySelector('.s-reject-btn').addEventListener('click', () => startReject(i));
      li.querySelector('.s-edit-insert').addEventListener('click', () => finishEdit(i));
      li.querySelector('.s-edit-cancel').addEventListener('click', () => cancelMode());
      li.querySelector('.s-reject-confirm').addEventListener('click', () => finishReject(i));
      li.querySelector('.s-reject-cancel').addEventListener('click', () => cancelMode());
      li.addEventListener('focusin', () => select(i, false));
      li.addEventListener('click', (ev) => {
        if (ev.target === li || ev.target.classList.contains('s-text')) select(i, true);
      });
      list.appendChild(li);
      renderOutcome(sid);
    });
    markSelected();
    if (hadFocusInList && items.length) focusCard(state.selected);
  }

  function renderOutcome(sid) {
    const li = cardOf(sid);
    if (!li) return;
    const o = state.outcome.get(sid);
    const p = li.querySelector('.s-state');
    clear(p);
    li.classList.remove('done', 'failed');
    if (!o) return;
    const words = { accepted: 'Inserted', edited: 'Edited and inserted', rejected: 'Rejected' };
    if (transport.mode !== 'extension') words.accepted = 'Copied';
    if (transport.mode !== 'extension') words.edited = 'Edited and copied';
    if (o.error) {
      li.classList.add('failed');
      p.appendChild(document.createTextNode((words[o.action] || o.action) + ' — feedback not saved: ' + o.error + ' '));
      const retry = el('button', 'btn small', 'Retry');
      retry.type = 'button';
      retry.addEventListener('click', () => sendFeedback(sid, o.body));
      p.appendChild(retry);
    } else {
      li.classList.add('done');
      p.textContent = (words[o.action] || o.action) + (o.saved ? ' · feedback saved' : ' · saving feedback…');
    }
  }

  function markSelected() {
    document.querySelectorAll('#suggestion-list > li').forEach((li, i) => {
      const on = i === state.selected;
      li.classList.toggle('selected', on);
      if (on) li.setAttribute('aria-current', 'true');
      else li.removeAttribute('aria-current');
    });
  }

  function select(i, focus) {
    if (i < 0 || i >= state.suggestions.length) return;
    state.selected = i;
    markSelected();
    if (focus) focusCard(i);
  }

  function focusCard(i) {
    const li = document.querySelectorAll('#suggestion-list > li')[i];
    if (li) li.focus();
  }

  function applySuggestions(answer) {
    if (!answer || !Array.isArray(answer.suggestions)) return;
    if (answer.conversation_id && answer.conversation_id !== state.conv) return;
    const fresh = answer.suggestions.filter((s) => s && typeof s === 'object');
    const before = state.suggestions.map((s) => s.id).join(',');
    const after = fresh.map((s) => s.id).join(',');
    if (state.mode) {
      // never pull the text out from under an agent who is editing or giving a reason
      state.pending = answer;
      if (after !== before) toast('New suggestions arrived — they show when you finish');
      return;
    }
    state.basedOn = str(answer.based_on);
    // the same list again (a reconnect's snapshot): leave the cards, and the agent's focus, alone
    if (after === before && state.suggestions.length) return;
    state.suggestions = fresh;
    const now = Date.now();
    for (const sg of state.suggestions) if (sg.id && !state.shownAt.has(str(sg.id))) state.shownAt.set(str(sg.id), now);
    state.selected = 0;
    renderSuggestions();
    if (state.suggestions.length) {
      const first = state.suggestions[0];
      announce(state.suggestions.length + ' new machine-suggested ' + (state.suggestions.length === 1 ? 'reply' : 'replies') +
               '. First, from ' + sourceLabel(first) + ': ' + str(first.text).slice(0, 140));
    }
  }

  function flushPending() {
    if (state.pending) {
      const p = state.pending;
      state.pending = null;
      applySuggestions(p);
    }
  }

  // ---- actions --------------------------------------------------------------------------------

  async function sendFeedback(sid, body) {
    state.outcome.set(sid, { action: body.action, body, saved: false, error: '' });
    renderOutcome(sid);
    const path = '/v1/suggestions/' + encodeURIComponent(sid) + '/feedback';
    let last = null;
    for (let attempt = 0; attempt < 3; attempt++) {
      if (attempt) await sleep(500 * Math.pow(2, attempt));
      last = await transport.api('POST', path, body);
      if (last.status >= 200 && last.status < 300) {
        state.outcome.set(sid, { action: body.action, body, saved: true, error: '' });
        renderOutcome(sid);
        return true;
      }
      // the same feedback_id makes a retry safe; only retry what may pass next time
      if (last.status !== 0 && last.status !== 429 && last.status < 500) break;
    }
    const msg = last && last.json && last.json.error ? str(last.json.error.message) : (last && last.status ? 'HTTP ' + last.status : 'tandem unreachable');
    state.outcome.set(sid, { action: body.action, body, saved: false, error: msg || 'failed' });
    renderOutcome(sid);
    if (last && last.status === 401) onUnauthorized();
    toast('Feedback not saved: ' + msg, 'error');
    return false;
  }

  function feedbackBody(sid, action, finalText, reason) {
    const body = { action, feedback_id: uuid(), conversation_id: state.conv };
    // when the agent first saw it: tandem measures time to action from this
    if (state.shownAt.has(sid)) body.shown_at_ms = state.shownAt.get(sid);
    if (finalText !== undefined) body.final_text = finalText;
    if (state.agentId) body.agent_id = state.agentId;
    if (reason) body.reason = reason;
    return body;
  }

  async function doInsert(i, textOverride) {
    const s = state.suggestions[i];
    if (!s) return;
    select(i, false);
    const text = textOverride !== undefined ? textOverride : str(s.text);
    const r = await transport.insert(text);
    if (!r.ok) {
      toast(r.message || 'Could not insert the text', 'error');
      announce('Insert failed: ' + (r.message || ''), true);
      return;
    }
    const action = textOverride !== undefined && textOverride !== str(s.text) ? 'edited' : 'accepted';
    toast((transport.mode === 'extension' ? 'Inserted suggestion ' : 'Copied suggestion ') + (i + 1) +
          (transport.mode === 'extension' ? ' — review it and press send' : ' — paste it into the reply box'));
    await sendFeedback(str(s.id), feedbackBody(str(s.id), action, text));
  }

  function modeBox(i) {
    const s = state.suggestions[i];
    return s ? cardOf(str(s.id)) : null;
  }

  function startEdit(i) {
    const s = state.suggestions[i];
    if (!s) return;
    cancelMode(true);
    select(i, false);
    const li = modeBox(i);
    state.mode = { kind: 'edit', id: str(s.id) };
    const box = li.querySelector('.s-edit');
    const ta = li.querySelector('.s-edit-text');
    ta.value = str(s.text);
    box.hidden = false;
    li.querySelector('.s-text').hidden = true;
    li.querySelector('.s-actions').hidden = true;
    ta.focus();
    ta.setSelectionRange(ta.value.length, ta.value.length);
  }

  async function finishEdit(i) {
    const s = state.suggestions[i];
    if (!s || !state.mode || state.mode.id !== str(s.id)) return;
    const li = cardOf(str(s.id));
    const text = li.querySelector('.s-edit-text').value;
    if (!text.trim()) {
      toast('The reply is empty; cancel with Esc or reject the suggestion', 'error');
      return;
    }
    closeMode(li);
    focusCard(i);
    await doInsert(i, text);
    flushPending();
  }

  function startReject(i) {
    const s = state.suggestions[i];
    if (!s) return;
    cancelMode(true);
    select(i, false);
    const li = modeBox(i);
    state.mode = { kind: 'reject', id: str(s.id) };
    li.querySelector('.s-reject').hidden = false;
    li.querySelector('.s-actions').hidden = true;
    const input = li.querySelector('.s-reject-reason');
    input.value = '';
    input.focus();
  }

  async function finishReject(i) {
    const s = state.suggestions[i];
    if (!s || !state.mode || state.mode.id !== str(s.id)) return;
    const li = cardOf(str(s.id));
    const reason = li.querySelector('.s-reject-reason').value.trim();
    closeMode(li);
    // move on to the next suggestion, the likely next choice
    const next = i + 1 < state.suggestions.length ? i + 1 : i;
    select(next, true);
    announce('Suggestion ' + (i + 1) + ' rejected');
    await sendFeedback(str(s.id), feedbackBody(str(s.id), 'rejected', undefined, reason));
    flushPending();
  }

  function closeMode(li) {
    state.mode = null;
    if (!li) return;
    li.querySelector('.s-edit').hidden = true;
    li.querySelector('.s-reject').hidden = true;
    li.querySelector('.s-text').hidden = false;
    li.querySelector('.s-actions').hidden = false;
  }

  function cancelMode(quiet) {
    if (!state.mode) return;
    const li = cardOf(state.mode.id);
    const idx = li ? Number(li.dataset.index) : state.selected;
    closeMode(li);
    if (!quiet) {
      focusCard(idx);
      flushPending();
    }
  }

  // ---- rendering: summary, customer, alerts, messages ---------------------------------------

  function addFact(dl, label, content) {
    if (content === null || content === undefined || content === '') return;
    if (Array.isArray(content) && !content.length) return;
    const row = el('div', 'fact');
    row.appendChild(el('dt', null, label));
    const dd = el('dd');
    if (Array.isArray(content)) {
      const ul = el('ul', 'plain');
      for (const item of content) ul.appendChild(el('li', null, item));
      dd.appendChild(ul);
    } else {
      dd.textContent = content;
    }
    row.appendChild(dd);
    dl.appendChild(row);
  }

  function itemText(v) {
    if (typeof v === 'string') return v;
    if (v && typeof v === 'object') return str(v.text || v.value || v.id || '');
    return str(v);
  }

  function renderSummary(ans) {
    const dl = $('summary-list');
    clear(dl);
    const c = ans && ans.conversation ? ans.conversation : null;
    if (c) {
      addFact(dl, 'Wants', str(c.wants));
      if (Array.isArray(c.tried)) {
        addFact(dl, 'Already tried', c.tried.map((t) => {
          const who = str(t.by), kind = str(t.kind);
          return (who ? who + (kind ? ' ' + kind : '') + ': ' : '') + str(t.text);
        }));
      }
      const f = c.facts || {};
      const facts = [];
      for (const [key, label] of [['order_numbers', 'Order'], ['references', 'Reference'], ['amounts', 'Amount'], ['dates', 'Date']]) {
        if (Array.isArray(f[key])) {
          for (const v of f[key]) {
            const t = itemText(v);
            const iso = v && typeof v === 'object' && v.iso && v.iso !== t ? ' (' + str(v.iso) + ')' : '';
            if (t) facts.push(label + ': ' + t + iso);
          }
        }
      }
      addFact(dl, 'Facts', facts);
      if (c.sentiment && typeof c.sentiment === 'object') {
        const s = c.sentiment;
        const parts = [str(s.label)];
        if (typeof s.score === 'number') parts[0] += ' (' + s.score.toFixed(2) + ')';
        if (s.trend) parts.push('trend ' + str(s.trend));
        addFact(dl, 'Sentiment', parts.filter(Boolean).join(', '));
        const row = dl.lastElementChild;
        if (row && s.label) row.dataset.sentiment = str(s.label);
      }
      if (Array.isArray(c.open_questions)) addFact(dl, 'Open questions', c.open_questions.map(itemText).filter(Boolean));
      if (c.handoff && typeof c.handoff === 'object') {
        const h = c.handoff;
        const lines = [];
        if (h.reason) lines.push(str(h.reason));
        if (h.customer_said) lines.push('Customer said: ' + str(h.customer_said));
        if (Array.isArray(h.bot_steps) && h.bot_steps.length) lines.push('Bot tried: ' + h.bot_steps.map(str).join(' · '));
        if (h.note) lines.push(str(h.note));
        addFact(dl, 'Handoff from bot', lines);
      }
      if (Array.isArray(c.alerts)) {
        for (const a of c.alerts) addAlert(a, false);
      }
    }
    $('summary-empty').hidden = dl.children.length > 0;
    renderCustomer(ans && ans.customer ? ans.customer : null);
  }

  function renderCustomer(cu) {
    const body = $('customer-body');
    const has = cu && typeof cu === 'object' && (cu.profile || cu.history_summary || cu.id);
    $('customer-empty').hidden = !!has;
    body.hidden = !has;
    if (!has) return;
    const p = cu.profile || {};
    const line = $('customer-line');
    clear(line);
    line.appendChild(el('strong', null, str(p.name) || str(cu.id) || 'Customer'));
    const bits = [str(p.tier || cu.tier), str(p.country), p.since ? 'since ' + str(p.since) : ''].filter(Boolean);
    if (bits.length) line.appendChild(document.createTextNode(' · ' + bits.join(' · ')));
    if (cu.repeat_contact) {
      line.appendChild(document.createTextNode(' '));
      line.appendChild(el('span', 'badge warn', 'repeat contact'));
    }
    $('customer-history-summary').textContent = str(cu.history_summary);
    const ol = $('history-list');
    clear(ol);
    if (Array.isArray(cu.last_outcomes)) {
      for (const h of cu.last_outcomes) {
        const li = el('li');
        const when = typeof h.days_ago === 'number' ? (h.days_ago === 0 ? 'today' : h.days_ago + ' d ago') : '';
        if (when) li.appendChild(el('span', 'when', when));
        li.appendChild(el('span', 'what', str(h.summary)));
        if (h.outcome) li.appendChild(el('span', 'badge outcome-' + str(h.outcome).replace(/[^a-z_-]/g, ''), str(h.outcome)));
        ol.appendChild(li);
      }
    }
  }

  const ALERT_NAMES = {
    fraud: 'Possible fraud',
    frustration: 'Frustrated customer',
    billing_error: 'Billing error',
    cancellation: 'Wants to cancel',
    legal: 'Legal / regulatory',
    repeat_contact: 'Repeat contact',
    vulnerable_customer: 'Vulnerable customer',
  };

  function alertName(type) {
    const t = str(type);
    if (ALERT_NAMES[t]) return ALERT_NAMES[t];
    const s = t.replace(/_/g, ' ');
    return s.charAt(0).toUpperCase() + s.slice(1);
  }

  function addAlert(a, announceIt) {
    if (!a || typeof a !== 'object' || !a.type) return;
    const type = str(a.type);
    const isNew = !state.alerts.has(type);
    state.alerts.set(type, a);
    renderAlerts();
    if (isNew && announceIt) announce('Alert: ' + alertName(type) + '. ' + str(a.reason), true);
  }

  function renderAlerts() {
    const ul = $('alert-list');
    clear(ul);
    const order = { high: 0, medium: 1, low: 2 };
    const list = Array.from(state.alerts.values()).sort((x, y) => (order[x.severity] ?? 3) - (order[y.severity] ?? 3));
    for (const a of list) {
      const li = el('li', 'alert');
      li.dataset.severity = str(a.severity) || 'medium';
      li.dataset.type = str(a.type);
      const head = el('p', 'alert-head');
      head.appendChild(el('span', 'alert-sev', str(a.severity) || 'alert'));
      head.appendChild(el('strong', 'alert-name', alertName(a.type)));
      li.appendChild(head);
      if (a.reason) li.appendChild(el('p', 'alert-reason', str(a.reason)));
      if (a.excerpt) li.appendChild(el('blockquote', 'alert-excerpt', str(a.excerpt)));
      ul.appendChild(li);
    }
    $('alerts').hidden = list.length === 0;
  }

  const ROLE_NAMES = { customer: 'Customer', agent: 'Agent', bot: 'Bot', system: 'System', note: 'Note' };

  function renderMessages(ctx) {
    const ol = $('message-list');
    clear(ol);
    const msgs = ctx && Array.isArray(ctx.messages) ? ctx.messages.slice(-MESSAGES_SHOWN) : [];
    for (const m of msgs) {
      const li = el('li', 'msg');
      li.dataset.role = str(m.role);
      const who = ROLE_NAMES[m.role] || str(m.role);
      li.appendChild(el('span', 'msg-role', who + (m.author ? ' (' + str(m.author) + ')' : '')));
      li.appendChild(el('span', 'msg-text', str(m.text)));
      ol.appendChild(li);
    }
    if (!msgs.length) ol.appendChild(el('li', 'empty', 'No messages.'));
  }

  // ---- data flow ---------------------------------------------------------------------------

  function convPath(conv, what) {
    return '/v1/conversations/' + encodeURIComponent(conv) + '/' + what;
  }

  async function loadContext() {
    const conv = state.conv;
    if (!conv) return;
    const r = await transport.api('GET', convPath(conv, 'context'));
    if (conv !== state.conv) return;
    if (r.status === 200 && r.json) {
      renderMessages(r.json);
      const meta = r.json.meta || {};
      state.agentId = ID_RE.test(str(meta.agent_id)) ? str(meta.agent_id) : state.agentId;
    } else if (r.status === 401) {
      onUnauthorized();
    }
  }

  function scheduleContext() {
    window.clearTimeout(state.contextTimer);
    state.contextTimer = window.setTimeout(loadContext, 150);
  }

  function onEvent(name, data, lastId) {
    const d = parseJSON(data);
    if (!d) return;
    if (name === 'suggestions') {
      applySuggestions(d);
      scheduleContext();
    } else if (name === 'summary') {
      if (!d.conversation_id || d.conversation_id === state.conv) renderSummary(d);
    } else if (name === 'alert') {
      if (!d.conversation_id || d.conversation_id === state.conv) addAlert(d.alert, true);
    } else if (name === 'status') {
      if (d.redis === 'unavailable') banner(str(d.message) || 'Redis is not reachable; updates resume when it is back', 'warn');
      else banner('');
    }
    void lastId;
  }

  function onStreamState(s) {
    state.streamState = s;
    if (s === 'live') {
      setConn('live', 'live');
      banner('');
    } else if (s === 'connecting') {
      setConn('connecting', 'connecting');
    } else if (s === 'reconnecting') {
      setConn('reconnecting', 'reconnecting');
    } else if (s === 'closed' || s === 'error') {
      setConn('offline', 'offline');
      diagnose();
    }
  }

  // The stream ended for good (EventSource gives no status): ask the API why, then try again.
  async function diagnose() {
    const conv = state.conv;
    if (!conv) return;
    const r = await transport.api('GET', convPath(conv, 'context'));
    if (conv !== state.conv) return;
    if (r.status === 401) {
      onUnauthorized();
      return;
    }
    if (r.status === 404) {
      banner('Conversation ' + conv + ' has no messages yet; waiting for the first one.', 'info');
    } else if (r.status === 0) {
      banner('tandem is not reachable; retrying.', 'warn');
    } else if (r.status >= 500) {
      banner(r.json && r.json.error ? str(r.json.error.message) : 'tandem cannot answer right now; retrying.', 'warn');
    }
    window.clearTimeout(state.resubTimer);
    state.resubTimer = window.setTimeout(() => {
      if (conv === state.conv) subscribe();
    }, RESUBSCRIBE_MS);
  }

  function subscribe() {
    if (state.unsubscribe) state.unsubscribe();
    state.unsubscribe = transport.subscribe(state.conv, onEvent, onStreamState);
  }

  function showConversation(conv) {
    if (conv === state.conv) return;
    if (state.unsubscribe) {
      state.unsubscribe();
      state.unsubscribe = null;
    }
    window.clearTimeout(state.resubTimer);
    state.conv = conv;
    state.suggestions = [];
    state.pending = null;
    state.mode = null;
    state.selected = 0;
    state.alerts.clear();
    state.outcome.clear();
    state.shownAt.clear();
    state.agentId = '';
    $('conv-id').textContent = conv || '—';
    document.title = conv ? 'tandem — ' + conv : 'tandem — agent panel';
    renderAlerts();
    renderSuggestions();
    renderSummary(null);
    renderMessages(null);
    banner('');
    if (!conv) {
      setConn('idle', 'no focus');
      return;
    }
    announce('Showing conversation ' + conv);
    subscribe();
    loadContext();
  }

  let unauthorized = false;
  function onUnauthorized() {
    if (unauthorized) return;
    unauthorized = true;
    setConn('offline', 'token rejected');
    if (state.unsubscribe) {
      state.unsubscribe();
      state.unsubscribe = null;
    }
    if (transport.mode === 'extension') {
      banner('tandem rejected the token: set it in the extension options.', 'error');
    } else {
      transport.forgetToken();
      askToken('tandem rejected the token. Paste the current one.');
    }
  }

  function askToken(why) {
    const f = $('token-form');
    f.hidden = false;
    if (why) banner(why, 'error');
    $('token-input').focus();
  }

  let focusTimer = 0;
  let focusBusy = false;
  let focusAgain = false;
  // One poll at a time; a request that comes in meanwhile runs right after it.
  async function pollFocus() {
    window.clearTimeout(focusTimer);
    if (unauthorized) return;
    if (focusBusy) {
      focusAgain = true;
      return;
    }
    focusBusy = true;
    let r;
    try {
      r = await transport.api('GET', '/v1/focus');
    } finally {
      focusBusy = false;
    }
    if (r.status === 200 && r.json) {
      const id = str(r.json.conversation_id);
      showConversation(ID_RE.test(id) ? id : null);
    } else if (r.status === 404) {
      showConversation(null);
      $('suggestions-empty').textContent = 'No conversation in focus — open one in your helpdesk, or run: tandem focus ID';
    } else if (r.status === 401) {
      onUnauthorized();
      return;
    } else if (r.status === 0 && !state.conv) {
      setConn('offline', 'unreachable');
    }
    if (focusAgain) {
      focusAgain = false;
      pollFocus();
      return;
    }
    focusTimer = window.setTimeout(pollFocus, FOCUS_POLL_MS);
  }

  function start() {
    unauthorized = false;
    $('token-form').hidden = true;
    if (pinned) {
      showConversation(pinned);
    } else {
      pollFocus();
    }
  }

  // ---- keyboard ------------------------------------------------------------------------------

  function inTextField(t) {
    return t && (t.tagName === 'TEXTAREA' || (t.tagName === 'INPUT' && t.type !== 'button' && t.type !== 'submit') || t.isContentEditable);
  }

  function toggleSummary(forceOpen) {
    const open = forceOpen === undefined ? !state.summaryOpen : forceOpen;
    state.summaryOpen = open;
    $('summary-toggle').setAttribute('aria-expanded', String(open));
    $('summary-body').hidden = !open;
    if (open) $('summary-body').focus();
  }

  function runCommand(name) {
    const m = /^insert-([1-9])$/.exec(name);
    if (m) {
      doInsert(Number(m[1]) - 1);
    } else if (name === 'edit') {
      startEdit(state.selected);
    } else if (name === 'reject') {
      startReject(state.selected);
    } else if (name === 'summary') {
      toggleSummary(true);
    } else if (name === 'refresh-focus' && !pinned) {
      pollFocus(); // the extension just moved the focus: no need to wait for the next poll
    }
  }

  document.addEventListener('keydown', (ev) => {
    const t = ev.target;
    // inside the edit box and the reason field
    if (state.mode && t && t.closest && t.closest('#suggestion-list')) {
      const idx = Number((t.closest('li.suggestion') || {}).dataset?.index);
      if (ev.key === 'Escape') {
        ev.preventDefault();
        cancelMode();
        return;
      }
      if (state.mode.kind === 'edit' && ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        finishEdit(idx);
        return;
      }
      if (state.mode.kind === 'reject' && ev.key === 'Enter' && t.classList.contains('s-reject-reason')) {
        ev.preventDefault();
        finishReject(idx);
        return;
      }
    }
    if (ev.altKey && !ev.ctrlKey && !ev.metaKey) {
      // event.code: the physical key, so layouts where Alt+digit types a character still work
      const code = ev.code;
      if (code === 'KeyS') {
        ev.preventDefault();
        toggleSummary();
        return;
      }
      if (inTextField(t)) return;
      const dm = /^(?:Digit|Numpad)([1-9])$/.exec(code);
      if (dm && Number(dm[1]) <= MAX_SHORTCUT) {
        ev.preventDefault();
        doInsert(Number(dm[1]) - 1);
      } else if (code === 'KeyE') {
        ev.preventDefault();
        startEdit(state.selected);
      } else if (code === 'KeyR') {
        ev.preventDefault();
        startReject(state.selected);
      }
      return;
    }
    if ((ev.key === 'ArrowDown' || ev.key === 'ArrowUp') && t && t.classList && t.classList.contains('suggestion')) {
      ev.preventDefault();
      const n = state.suggestions.length;
      if (n) select((state.selected + (ev.key === 'ArrowDown' ? 1 : n - 1)) % n, true);
    }
  });

  // ---- start -----------------------------------------------------------------------------------

  $('summary-toggle').addEventListener('click', () => toggleSummary());
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = $('token-input').value.trim();
    if (!v) return;
    $('token-input').value = '';
    transport.setToken(v);
    banner('');
    start();
  });

  document.documentElement.dataset.mode = transport.mode;
  if (transport.mode === 'extension') {
    transport.onCommand(runCommand);
    transport.hello();
    start();
  } else if (!transport.hasToken()) {
    setConn('idle', 'no token');
    askToken('');
  } else {
    start();
  }
})();
