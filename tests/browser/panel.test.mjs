// The agent panel in a real browser: live suggestions, feedback actions, keyboard, safety, layout.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  addConversation, addMessage, launchBrowser, screenshot, startRedis, startTandemd, waitFor,
} from './lib/harness.mjs';

const CUSTOMER = {
  id: 'cust-b1',
  profile: { name: 'Anna Berg', tier: 'gold', country: 'SE', since: '2021-04-12' },
  history: [{ conv_id: 'old-1', summary: 'Asked how to pay an instalment early.', outcome: 'resolved', tags: 'instalments' }],
};

let redis, srv, browser;

before(async () => {
  redis = await startRedis();
  srv = await startTandemd(redis);
  browser = await launchBrowser();
  await browser.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: srv.base });
});

after(async () => {
  if (browser) await browser.close();
  if (srv) await srv.close();
  if (redis) await redis.close();
});

// Opens the panel with the token in the fragment; collects console text and dialogs.
async function openPanel(query = '') {
  const page = await browser.newPage();
  const seen = { console: [], dialogs: [], errors: [] };
  page.on('console', (m) => seen.console.push(m.text()));
  page.on('pageerror', (e) => seen.errors.push(e.message));
  page.on('dialog', async (d) => {
    seen.dialogs.push(d.message());
    await d.dismiss();
  });
  const resp = await page.goto(`${srv.base}/panel/${query}#token=${srv.token}`);
  return { page, seen, resp };
}

async function suggestionTexts(page) {
  return page.locator('#suggestion-list > li .s-text').allTextContents();
}

async function feedbackFor(sid) {
  const rows = await redis.xrange('tandem:feedback');
  return rows.filter((r) => r.fields.suggestion_id === sid);
}

describe('agent panel', () => {
  test('is served with a strict CSP, shows focused suggestions and updates live after XADD', async () => {
    await addConversation(redis, 'b-live', {
      messages: [['customer', 'Hi, I returned my jacket last week and I still have not got my refund. How long does a refund take?']],
      customer: CUSTOMER,
      meta: { agent_id: 'ag-7' },
    });
    const r = await srv.api('PUT', '/v1/focus', { conversation_id: 'b-live' });
    assert.equal(r.status, 200);
    const { page, seen, resp } = await openPanel();
    const csp = resp.headers()['content-security-policy'];
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    // the token leaves the address bar at once and is never printed
    assert.equal(await page.evaluate(() => location.hash), '');
    await page.locator('#suggestion-list > li').first().waitFor();
    assert.equal(await page.locator('#conv-id').textContent(), 'b-live');
    await waitFor(async () => (await page.locator('#conn').getAttribute('data-state')) === 'live', { what: 'live stream' });
    const first = await suggestionTexts(page);
    assert.ok(first.length >= 1);
    // every card says it is machine-made, where it came from and its score
    const card = page.locator('#suggestion-list > li').first();
    assert.equal(await card.locator('.s-label').textContent(), 'Machine-suggested');
    assert.match(await card.locator('.s-source').textContent(), /^(KB: .+|Past reply.*|LLM.*)$/);
    assert.match(await card.locator('.s-score').textContent(), /^score \d\.\d\d$/);
    assert.match(await card.getAttribute('aria-label'), /machine-suggested/);

    // a marker that a reload would lose: the update must arrive on the open page
    await page.evaluate(() => { window.__noReload = true; });
    await addMessage(redis, 'b-live', 'customer', 'Also I was charged twice for the same order, there is a duplicate payment on my card.');
    await waitFor(async () => JSON.stringify(await suggestionTexts(page)) !== JSON.stringify(first),
      { timeout: 5000, what: 'suggestions to change after XADD' });
    assert.equal(await page.evaluate(() => window.__noReload), true);
    // announced to screen readers
    await waitFor(async () => /new machine-suggested/.test(await page.locator('#live-polite').textContent()),
      { what: 'live region announcement' });
    // customer history from the summary
    await waitFor(async () => (await page.locator('#customer-line').textContent()).includes('Anna Berg'), { what: 'customer' });
    assert.match(await page.locator('#history-list').textContent(), /pay an instalment early/);
    assert.equal(await page.evaluate(() => document.documentElement.scrollWidth <= 360), true, 'no sideways scrolling at 360 px');
    await screenshot(page, 'panel-360.png');
    assert.ok(!seen.console.some((t) => t.includes(srv.token)), 'the token must never be logged');

    assert.deepEqual(seen.errors, []);
    await page.setViewportSize({ width: 1100, height: 900 });
    await screenshot(page, 'panel-wide.png');
    await page.close();
    // EventSource carries the token in the query: tandemd's access log (written when the
    // stream ends) must not keep it
    await waitFor(() => /"route":"events"/.test(srv.log()), { what: 'the stream in the access log' });
    assert.ok(!srv.log().includes(srv.token), 'the token is not in the server log');
  });

  test('insert, edit then insert, and reject send feedback', async () => {
    await addConversation(redis, 'b-fb', {
      messages: [['customer', 'I was charged twice for my order, please refund the duplicate payment. How long does a refund take?']],
      customer: CUSTOMER,
      meta: { agent_id: 'ag-7' },
    });
    const { page, seen } = await openPanel('?conversation=b-fb');
    await waitFor(async () => (await page.locator('#suggestion-list > li').count()) >= 3, { what: 'three suggestions' });
    const sids = await page.locator('#suggestion-list > li').evaluateAll((els) => els.map((e) => e.dataset.sid));
    const texts = await suggestionTexts(page);

    // 1. insert (the standalone page copies to the clipboard)
    await page.locator('#suggestion-1 .s-insert').click();
    await waitFor(async () => (await page.locator('#suggestion-1 .s-state').textContent()).includes('feedback saved'),
      { what: 'accepted feedback saved' });
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), texts[0]);
    let fb = await feedbackFor(sids[0]);
    assert.equal(fb.length, 1);
    assert.equal(fb[0].fields.action, 'accepted');
    assert.equal(fb[0].fields.conversation_id, 'b-fb');
    assert.equal(fb[0].fields.agent_id, 'ag-7');

    // 2. edit then insert
    await page.locator('#suggestion-2 .s-edit-btn').click();
    const ta = page.locator('#suggestion-2 .s-edit-text');
    await ta.waitFor();
    assert.equal(await ta.evaluate((e) => e === document.activeElement), true, 'the editor takes the focus');
    await screenshot(page, 'panel-edit.png');
    await ta.fill('Hi Anna, I have refunded the duplicate payment today. Thanks for your patience!');
    await page.keyboard.press('Control+Enter');
    await waitFor(async () => (await page.locator('#suggestion-2 .s-state').textContent()).includes('feedback saved'),
      { what: 'edited feedback saved' });
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()),
      'Hi Anna, I have refunded the duplicate payment today. Thanks for your patience!');
    fb = await feedbackFor(sids[1]);
    assert.equal(fb.length, 1);
    assert.equal(fb[0].fields.action, 'edited');
    assert.match(fb[0].fields.final_text, /refunded the duplicate payment today/);
    assert.ok(Number(fb[0].fields.edit_distance) > 0);

    // 3. reject with a reason
    await page.locator('#suggestion-3 .s-reject-btn').click();
    await page.locator('#suggestion-3 .s-reject-reason').fill('wrong topic');
    await screenshot(page, 'panel-reject.png');
    await page.keyboard.press('Enter');
    await waitFor(async () => (await page.locator('#suggestion-3 .s-state').textContent()).includes('feedback saved'),
      { what: 'rejected feedback saved' });
    fb = await feedbackFor(sids[2]);
    assert.equal(fb.length, 1);
    assert.equal(fb[0].fields.action, 'rejected');
    assert.equal(fb[0].fields.reason, 'wrong topic');
    assert.deepEqual(seen.errors, []);
    await page.close();
  });

  test('keyboard: Alt+1..3 insert, arrows choose, Alt+E edit, Alt+R reject, Alt+S summary', async () => {
    await addConversation(redis, 'b-keys', {
      messages: [['customer', 'How can I change my payment date? Also how long does a refund take?']],
      customer: CUSTOMER,
    });
    const { page } = await openPanel('?conversation=b-keys');
    await waitFor(async () => (await page.locator('#suggestion-list > li').count()) >= 3, { what: 'three suggestions' });
    const sids = await page.locator('#suggestion-list > li').evaluateAll((els) => els.map((e) => e.dataset.sid));
    const texts = await suggestionTexts(page);
    // the shortcuts are shown
    assert.match(await page.locator('#suggestion-1 .s-insert').textContent(), /Alt\+1/);
    assert.match(await page.locator('footer.keys').textContent(), /Alt\+E edit.*Alt\+R reject.*Alt\+S summary/s);

    await page.locator('body').click({ position: { x: 5, y: 5 } });
    await page.keyboard.press('Alt+2');
    await waitFor(async () => (await feedbackFor(sids[1])).length === 1, { what: 'Alt+2 feedback' });
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), texts[1]);
    assert.equal((await feedbackFor(sids[1]))[0].fields.action, 'accepted');

    // focus a card, move down with the arrow, edit it with Alt+E, leave with Escape
    await page.locator('#suggestion-1').focus();
    await page.keyboard.press('ArrowDown');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'suggestion-2');
    await page.keyboard.press('ArrowDown');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'suggestion-3');
    await page.keyboard.press('Alt+E');
    assert.equal(await page.locator('#suggestion-3 .s-edit').isVisible(), true);
    assert.equal(await page.evaluate(() => document.activeElement.classList.contains('s-edit-text')), true);
    await page.keyboard.press('Escape');
    assert.equal(await page.locator('#suggestion-3 .s-edit').isVisible(), false);
    assert.equal(await page.evaluate(() => document.activeElement.id), 'suggestion-3', 'focus returns to the card');

    // Alt+R on the selected card, Enter without a reason
    await page.keyboard.press('Alt+R');
    assert.equal(await page.evaluate(() => document.activeElement.classList.contains('s-reject-reason')), true);
    await page.keyboard.press('Enter');
    await waitFor(async () => (await feedbackFor(sids[2])).length === 1, { what: 'Alt+R feedback' });
    assert.equal((await feedbackFor(sids[2]))[0].fields.action, 'rejected');

    // Alt+S folds and unfolds the summary
    const toggle = page.locator('#summary-toggle');
    assert.equal(await toggle.getAttribute('aria-expanded'), 'true');
    await page.keyboard.press('Alt+S');
    assert.equal(await toggle.getAttribute('aria-expanded'), 'false');
    assert.equal(await page.locator('#summary-body').isVisible(), false);
    await page.keyboard.press('Alt+S');
    assert.equal(await toggle.getAttribute('aria-expanded'), 'true');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'summary-body');
    await page.close();
  });

  test('new suggestions wait while the agent edits', async () => {
    await addConversation(redis, 'b-wait', { messages: [['customer', 'How long does a refund take?']] });
    const { page } = await openPanel('?conversation=b-wait');
    await page.locator('#suggestion-list > li').first().waitFor();
    await waitFor(async () => (await page.locator('#conn').getAttribute('data-state')) === 'live', { what: 'live' });
    const before = await suggestionTexts(page);
    await page.locator('#suggestion-1 .s-edit-btn').click();
    await page.locator('#suggestion-1 .s-edit-text').fill('my draft');
    await addMessage(redis, 'b-wait', 'customer', 'Actually, I was charged twice for the same order. Duplicate payment!');
    await waitFor(async () => /New suggestions arrived/.test(await page.locator('#toast').textContent()), { what: 'the notice' });
    // the draft is untouched and still focused
    assert.equal(await page.locator('#suggestion-1 .s-edit-text').inputValue(), 'my draft');
    assert.equal(await page.evaluate(() => document.activeElement.classList.contains('s-edit-text')), true);
    assert.deepEqual(await suggestionTexts(page), before);
    await page.keyboard.press('Escape');
    await waitFor(async () => JSON.stringify(await suggestionTexts(page)) !== JSON.stringify(before), { what: 'the new list' });
    await page.close();
  });

  test('customer markup and script stay inert text', async () => {
    const evil = '<img src=x onerror=alert(1)><script>window.__pwned=1;alert(2)</script>';
    await addConversation(redis, 'b-xss', {
      messages: [['customer', `This is fraud, an unauthorised charge I did not make! ${evil} Can you block my card ${evil}?`]],
      customer: {
        id: 'cust-xss',
        profile: { name: `Mallory ${evil}`, tier: '<b>gold</b>' },
        history: [{ conv_id: 'old-x', summary: `Earlier: ${evil}`, outcome: '<i>resolved</i>', tags: 'x' }],
      },
    });
    const { page, seen } = await openPanel('?conversation=b-xss');
    await page.locator('#suggestion-list > li').first().waitFor();
    await page.locator('#messages-details summary').click();
    await waitFor(async () => (await page.locator('#message-list').textContent()).includes('<img src=x'), { what: 'message text' });
    await waitFor(async () => (await page.locator('#customer-line').textContent()).includes('<img src=x'), { what: 'profile' });
    await waitFor(async () => (await page.locator('#alert-list').textContent()).length > 0, { what: 'the fraud alert' });
    await page.waitForTimeout(500); // give any injected handler the chance to run
    const dom = await page.evaluate(() => ({
      imgs: document.querySelectorAll('img').length,
      scripts: [...document.querySelectorAll('script')].map((s) => s.getAttribute('src')),
      bold: document.querySelectorAll('main b, main i').length,
      pwned: window.__pwned === 1,
      handlers: [...document.querySelectorAll('*')].some((e) => [...e.attributes].some((a) => a.name.startsWith('on'))),
    }));
    assert.deepEqual(dom, { imgs: 0, scripts: ['panel.js'], bold: 0, pwned: false, handlers: false });
    assert.deepEqual(seen.dialogs, []);
    // the text is shown as typed
    assert.match(await page.locator('#message-list').textContent(), /<script>window.__pwned=1;alert\(2\)<\/script>/);
    assert.match(await page.locator('#history-list').textContent(), /Earlier: <img src=x/);
    // the fraud alert is prominent and gives its reason
    const alert = page.locator('#alert-list > li[data-type="fraud"]');
    assert.equal(await alert.getAttribute('data-severity'), 'high');
    assert.ok((await alert.locator('.alert-reason').textContent()).length > 10);
    await screenshot(page, 'panel-xss.png');
    await page.close();
  });

  test('a wrong token asks for the right one; no focus says so', async () => {
    const page = await browser.newPage();
    await page.goto(`${srv.base}/panel/#token=not-the-token-at-all`);
    await page.locator('#token-form').waitFor({ state: 'visible' });
    assert.match(await page.locator('#banner').textContent(), /rejected the token/);
    await screenshot(page, 'panel-token.png');
    await srv.api('PUT', '/v1/focus', { conversation_id: null });
    await page.locator('#token-input').fill(srv.token);
    await page.locator('#token-form button[type=submit]').click();
    await waitFor(async () => /No conversation in focus/.test(await page.locator('#suggestions-empty').textContent()),
      { what: 'no-focus message' });
    // the focus is followed: set it from outside, the panel switches
    await addConversation(redis, 'b-follow', { messages: [['customer', 'How do I return an item?']] });
    await srv.api('PUT', '/v1/focus', { conversation_id: 'b-follow' });
    await waitFor(async () => (await page.locator('#conv-id').textContent()) === 'b-follow', { what: 'focus followed' });
    await page.locator('#suggestion-list > li').first().waitFor();
    await page.close();
  });
});
