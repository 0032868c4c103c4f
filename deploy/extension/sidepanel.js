// tandem side panel: frames http://127.0.0.1:8787/panel/?embed=1 and relays between it and the
// service worker (which alone holds the token). Messages are accepted only from that frame's
// window and origin, and sent only to that origin.
'use strict';

(async () => {
  const frame = document.getElementById('panel');
  const status = document.getElementById('status');
  let port = null;
  let lastSubscribe = null;
  let frameReady = false;

  function showStatus(text, withOptionsLink) {
    status.textContent = text;
    if (withOptionsLink) {
      status.appendChild(document.createTextNode(' '));
      const a = document.createElement('a');
      a.href = '#';
      a.textContent = 'Open the options';
      a.addEventListener('click', (e) => { e.preventDefault(); chrome.runtime.openOptionsPage(); });
      status.appendChild(a);
    }
    status.hidden = false;
  }

  const { config, hasToken } = await chrome.runtime.sendMessage({ type: 'getConfig' });
  const origin = new URL(config.tandemUrl).origin;
  if (!hasToken) showStatus('Set your tandem token first.', true);

  function toFrame(m) {
    if (frame.contentWindow) frame.contentWindow.postMessage(Object.assign({}, m, { tandem: 'ext' }), origin);
  }

  function connect() {
    port = chrome.runtime.connect({ name: 'panel' });
    port.onMessage.addListener((m) => {
      if (m && m.type === 'stream' && m.state === 'closed' && m.detail === 'unauthorized') {
        showStatus('tandem has no valid token.', true);
      }
      if (m && m.type !== 'pong') toFrame(m);
    });
    port.onDisconnect.addListener(() => {
      // the service worker was stopped: reconnect and restore the stream
      port = null;
      setTimeout(() => {
        connect();
        if (lastSubscribe) port.postMessage(lastSubscribe);
      }, 200);
    });
  }
  connect();
  // keeps the service worker (and its event stream) alive while the panel is open
  setInterval(() => { if (port) port.postMessage({ type: 'ping' }); }, 20000);

  window.addEventListener('message', (ev) => {
    if (ev.source !== frame.contentWindow || ev.origin !== origin) return;
    const m = ev.data;
    if (!m || typeof m !== 'object' || m.tandem !== 'panel') return;
    if (m.type === 'ready') {
      frameReady = true;
      if (hasToken) status.hidden = true;
      return;
    }
    if (m.type === 'subscribe') lastSubscribe = m;
    if (m.type === 'unsubscribe') lastSubscribe = null;
    if (port) port.postMessage(m);
  });

  frame.addEventListener('load', () => {
    // a frame that loaded but never said "ready" is an error page: tandem is not running
    setTimeout(() => {
      if (!frameReady) showStatus('tandem does not answer at ' + origin + '. Start it, then reopen this panel.', true);
    }, 3000);
  });
  frame.src = origin + '/panel/?embed=1';
})();
