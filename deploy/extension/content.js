// tandem content script for helpdesk pages: reports the page address (the service worker finds
// the conversation in it and sets tandem's focus) and puts text into the reply box on request.
// It never sees the token and never sends anything: the agent presses send.
'use strict';

(() => {
  if (globalThis.__tandemHelpdesk) return; // injected twice (registered script + executeScript)
  globalThis.__tandemHelpdesk = true;

  const POLL_MS = 700; // single-page helpdesks change the address without an event we can hear
  let last = '';

  function report(force) {
    if (!force && location.href === last) return;
    last = location.href;
    try {
      chrome.runtime.sendMessage({ type: 'location', url: location.href, force: !!force }).catch(() => {});
    } catch (e) {
      // the extension was reloaded: this copy of the script is orphaned
      clearInterval(timer);
    }
  }

  const timer = setInterval(() => report(false), POLL_MS);
  window.addEventListener('popstate', () => report(false));
  window.addEventListener('hashchange', () => report(false));
  // back in this tab: its conversation is what the agent looks at again
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') report(true);
  });
  window.addEventListener('focus', () => report(true));
  report(true);

  function insert(text, selector) {
    let box = null;
    try {
      box = document.querySelector(selector);
    } catch (e) {
      return { ok: false, message: 'The reply box selector is not valid CSS: ' + selector };
    }
    if (!box) return { ok: false, message: 'No reply box on this page (selector: ' + selector + ')' };
    box.focus();
    if (box instanceof HTMLTextAreaElement || (box instanceof HTMLInputElement && box.type === 'text')) {
      const start = typeof box.selectionStart === 'number' ? box.selectionStart : box.value.length;
      const end = typeof box.selectionEnd === 'number' ? box.selectionEnd : box.value.length;
      box.setRangeText(text, start, end, 'end');
      // frameworks (React, Vue) listen for these to pick up the new value
      box.dispatchEvent(new InputEvent('input', { bubbles: true, inputType: 'insertText', data: text }));
      box.dispatchEvent(new Event('change', { bubbles: true }));
      return { ok: true, message: 'Inserted — review it and press send' };
    }
    if (box.isContentEditable) {
      // execCommand keeps the editor's undo stack and its own input handling
      let ok = false;
      try { ok = document.execCommand('insertText', false, text); } catch (e) { ok = false; }
      if (!ok) {
        box.append(document.createTextNode(text));
        box.dispatchEvent(new InputEvent('input', { bubbles: true, inputType: 'insertText', data: text }));
      }
      return { ok: true, message: 'Inserted — review it and press send' };
    }
    return { ok: false, message: 'The element the selector matches is not editable' };
  }

  chrome.runtime.onMessage.addListener((msg, sender, sendResponse) => {
    if (sender.id !== chrome.runtime.id || !msg || msg.type !== 'insert') return false;
    if (typeof msg.text !== 'string' || typeof msg.selector !== 'string') {
      sendResponse({ ok: false, message: 'bad request' });
      return false;
    }
    sendResponse(insert(msg.text, msg.selector));
    return false;
  });
})();
