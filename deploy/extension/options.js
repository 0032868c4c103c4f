// tandem extension options: sends the settings (and a new token) to the service worker, which
// stores them; this page never reads the token back.
'use strict';

(async () => {
  const $ = (id) => document.getElementById(id);
  const result = $('result');

  function say(text, ok) {
    result.textContent = text;
    result.dataset.ok = String(ok);
  }

  async function load() {
    const { config, hasToken } = await chrome.runtime.sendMessage({ type: 'getConfig' });
    $('tandemUrl').value = config.tandemUrl;
    $('helpdeskPatterns').value = (config.helpdeskPatterns || []).join('\n');
    $('conversationRegex').value = config.conversationRegex;
    $('replySelector').value = config.replySelector;
    $('agentId').value = config.agentId || '';
    $('token').value = '';
    $('token').placeholder = hasToken ? 'stored (hidden)' : 'not set';
    $('token-state').textContent = hasToken ? 'A token is stored.' : 'No token is stored yet.';
  }

  $('origin').textContent = location.origin;

  $('form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const patterns = $('helpdeskPatterns').value.split('\n').map((s) => s.trim()).filter(Boolean);
    const tandemUrl = $('tandemUrl').value.trim();
    // permissions must be asked for from this click (a user gesture), before any await
    let origins = patterns.slice();
    try {
      origins.push(new URL(tandemUrl).origin + '/*');
    } catch (e) {
      say('The tandem address must be like http://127.0.0.1:8787', false);
      return;
    }
    let granted = false;
    try {
      granted = await chrome.permissions.request({ origins });
    } catch (e) {
      say('Not a valid match pattern: ' + String(e && e.message), false);
      return;
    }
    if (!granted) {
      say('Chrome did not grant access to these addresses; nothing saved.', false);
      return;
    }
    const r = await chrome.runtime.sendMessage({
      type: 'saveConfig',
      config: {
        tandemUrl,
        helpdeskPatterns: patterns,
        conversationRegex: $('conversationRegex').value.trim(),
        replySelector: $('replySelector').value.trim(),
        agentId: $('agentId').value.trim(),
      },
      token: $('token').value,
      forgetToken: $('forgetToken').checked,
    });
    $('forgetToken').checked = false;
    say(r.message || (r.ok ? 'Saved' : 'Not saved'), !!r.ok);
    if (r.ok) await load();
  });

  $('test').addEventListener('click', async () => {
    say('Testing…', true);
    const r = await chrome.runtime.sendMessage({ type: 'testConnection' });
    say(r.message, !!r.ok);
  });

  await load();
})();
