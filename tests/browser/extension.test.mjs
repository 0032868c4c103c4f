// The browser extension loaded into chromium (--load-extension) against a local demo helpdesk:
// options, conversation detection, focus, the side panel, insertion into the reply box, hotkeys.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  addConversation, extensionIdFromManifest, launchBrowser, screenshot, startHelpdesk, startRedis, startTandemd, waitFor,
} from './lib/harness.mjs';

const EXT_ID = extensionIdFromManifest();
let redis, srv, helpdesk, browser, worker;

before(async () => {
  redis = await startRedis();
  srv = await startTandemd(redis, { TANDEM_ALLOWED_ORIGINS: `chrome-extension://${EXT_ID}` });
  helpdesk = await startHelpdesk();
  browser = await launchBrowser({ extension: true });
  worker = browser.serviceWorkers()[0] || await browser.waitForEvent('serviceworker', { timeout: 15000 });
  const customer = { id: 'cust-e1', profile: { name: 'Anna Berg', tier: 'gold', country: 'SE' } };
  await addConversation(redis, 'hd-refund', {
    messages: [['customer', 'I returned my jacket and still have no refund. How long does a refund take?']], customer,
  });
  await addConversation(redis, 'hd-charge', {
    messages: [['customer', 'You charged me twice for the same order! Please refund the duplicate payment.']], customer,
  });
});

after(async () => {
  if (browser) await browser.close();
  if (helpdesk) await helpdesk.close();
  if (srv) await srv.close();
  if (redis) await redis.close();
});

async function focus() {
  const r = await srv.api('GET', '/v1/focus');
  return r.status === 200 ? r.json.conversation_id : null;
}

async function feedback(action) {
  return (await redis.xrange('tandem:feedback')).filter((r) => r.fields.action === action);
}

describe('browser extension', () => {
  test('loads with the id its manifest key gives', () => {
    assert.equal(new URL(worker.url()).host, EXT_ID);
  });

  test('options, focus from the helpdesk address, side panel, insert into the reply box, hotkeys', async () => {
    // 1. options: where tandem is, the token, the helpdesk
    const opts = await browser.newPage();
    await opts.goto(`chrome-extension://${EXT_ID}/options.html`);
    await opts.locator('#tandemUrl').fill(srv.base);
    await opts.locator('#token').fill(srv.token);
    await opts.locator('#helpdeskPatterns').fill('http://localhost/*');
    await opts.locator('#agentId').fill('ag-ext');
    await opts.locator('#save').click();
    await waitFor(async () => (await opts.locator('#result').textContent()) === 'Saved', { what: 'options saved' });
    await opts.locator('#test').click();
    await waitFor(async () => /^Connected to tandem/.test(await opts.locator('#result').textContent()), { what: 'connection test' });
    // the page never gets the token back
    assert.equal(await opts.locator('#token').inputValue(), '');
    assert.ok(!(await opts.content()).includes(srv.token));
    await screenshot(opts, 'extension-options.png');
    await opts.close();

    // 2. a helpdesk conversation: the content script reports it, the worker sets the focus
    const desk = await browser.newPage();
    await desk.setViewportSize({ width: 900, height: 700 });
    await desk.goto(`${helpdesk.base}/tickets/hd-refund`);
    await waitFor(async () => (await focus()) === 'hd-refund', { what: 'focus set from the helpdesk tab' });
    // the helpdesk page (main world) has nothing of ours, and no token
    assert.ok(!(await desk.content()).includes(srv.token));
    // and a content script (the extension's code in that page) cannot read the stored token
    const fromContentScript = await worker.evaluate(async () => {
      const { helpdeskTab } = await chrome.storage.session.get('helpdeskTab');
      const [r] = await chrome.scripting.executeScript({
        target: { tabId: helpdeskTab },
        world: 'ISOLATED',
        func: async () => {
          try {
            return 'read: ' + JSON.stringify(await chrome.storage.local.get(null));
          } catch (e) {
            return 'denied: ' + e.message;
          }
        },
      });
      return r.result;
    });
    assert.match(fromContentScript, /^denied/);
    assert.ok(!fromContentScript.includes(srv.token));

    // 3. the side panel frames tandem's panel and shows that conversation
    const side = await browser.newPage();
    await side.setViewportSize({ width: 360, height: 900 });
    await side.goto(`chrome-extension://${EXT_ID}/sidepanel.html`);
    const panel = side.frameLocator('#panel');
    await waitFor(async () => (await panel.locator('#conv-id').textContent()) === 'hd-refund', { what: 'panel on hd-refund' });
    await panel.locator('#suggestion-list > li').first().waitFor();
    await waitFor(async () => (await panel.locator('#conn').getAttribute('data-state')) === 'live', { what: 'stream via the worker' });
    assert.equal(await panel.locator('#suggestion-1 .s-insert').textContent().then((t) => t.startsWith('Insert')), true);
    const frame = side.frames().find((f) => f.url().startsWith(srv.base + '/panel/'));
    assert.ok(frame, 'the panel frame');
    assert.equal(await frame.evaluate(() => JSON.stringify(sessionStorage)), '{}', 'the framed panel holds no token');
    const texts = await panel.locator('#suggestion-list > li .s-text').allTextContents();

    // 4. insert: the text lands in the helpdesk's reply box (not sent), feedback is recorded
    await panel.locator('#suggestion-1 .s-insert').click();
    await waitFor(async () => (await desk.locator('#reply').inputValue()) === texts[0], { what: 'text in the reply box' });
    assert.equal(await desk.locator('#sent').textContent(), '', 'nothing was sent');
    await waitFor(async () => (await feedback('accepted')).length === 1, { what: 'accepted feedback' });
    const fb = (await feedback('accepted'))[0].fields;
    assert.equal(fb.conversation_id, 'hd-refund');
    assert.equal(fb.agent_id, 'ag-ext');
    await waitFor(async () => (await panel.locator('#suggestion-1 .s-state').textContent()).includes('feedback saved'),
      { what: 'panel shows the feedback saved' });
    await screenshot(side, 'extension-sidepanel.png');
    await screenshot(desk, 'helpdesk-inserted.png');

    // 5. the helpdesk moves to another ticket without reloading: focus and panel follow
    await desk.bringToFront();
    await desk.locator('a[href="/tickets/hd-charge"]').click();
    await waitFor(async () => (await focus()) === 'hd-charge', { what: 'focus follows the address' });
    await waitFor(async () => (await panel.locator('#conv-id').textContent()) === 'hd-charge', { what: 'panel follows' });
    await waitFor(async () => (await panel.locator('#suggestion-list > li').count()) >= 2, { what: 'hd-charge suggestions' });
    const texts2 = await panel.locator('#suggestion-list > li .s-text').allTextContents();

    // 6. hotkeys (chrome.commands): with the panel open the panel acts on what it shows
    const r1 = await worker.evaluate(() => globalThis.tandemRunCommand('insert-2'));
    assert.equal(r1.via, 'panel');
    await waitFor(async () => (await desk.locator('#reply').inputValue()) === texts2[1], { what: 'hotkey insert via the panel' });
    await waitFor(async () => (await feedback('accepted')).length === 2, { what: 'hotkey feedback' });

    // without the panel the worker inserts the focused conversation's suggestion itself
    await side.close();
    await desk.locator('#reply').fill('');
    await waitFor(async () => (await worker.evaluate(() => globalThis.tandemRunCommand('insert-1'))).ok === true,
      { what: 'worker hotkey', timeout: 5000, interval: 300 });
    const want = await srv.api('GET', '/v1/focus/suggestions/1?format=text');
    assert.equal(await desk.locator('#reply').inputValue(), want.text);
    await waitFor(async () => (await feedback('accepted')).length === 3, { what: 'worker hotkey feedback' });
    await desk.close();
  });

  test('options explain a tandem that does not accept the extension origin', async () => {
    const other = await startTandemd(redis);
    try {
      const opts = await browser.newPage();
      await opts.goto(`chrome-extension://${EXT_ID}/options.html`);
      await opts.locator('#tandemUrl').fill(other.base);
      await opts.locator('#token').fill(other.token);
      await opts.locator('#save').click();
      await waitFor(async () => (await opts.locator('#result').textContent()) === 'Saved', { what: 'saved' });
      await opts.locator('#test').click();
      await waitFor(async () => (await opts.locator('#result').textContent()).includes(
        `TANDEM_ALLOWED_ORIGINS=chrome-extension://${EXT_ID}`), { what: 'origin hint' });
      assert.equal(await opts.locator('#result').getAttribute('data-ok'), 'false');
      // back to the tandem that accepts us
      await opts.locator('#tandemUrl').fill(srv.base);
      await opts.locator('#token').fill(srv.token);
      await opts.locator('#save').click();
      await waitFor(async () => (await opts.locator('#result').textContent()) === 'Saved', { what: 'saved' });
      await opts.close();
    } finally {
      await other.close();
    }
  });

  test('a reply box the selector does not find is reported, not guessed', async () => {
    for (const p of browser.pages()) if (p.url().includes('sidepanel.html')) await p.close();
    await waitFor(() => worker.evaluate(() => true), { what: 'worker' });
    const desk = await browser.newPage();
    await desk.goto(`${helpdesk.base}/tickets/hd-refund`);
    await waitFor(async () => (await focus()) === 'hd-refund', { what: 'focus' });
    await desk.evaluate(() => document.getElementById('reply-form').remove());
    const r = await worker.evaluate(() => globalThis.tandemRunCommand('insert-1'));
    assert.equal(r.ok, false);
    assert.match(r.message, /No reply box/);
    await desk.close();
  });
});
