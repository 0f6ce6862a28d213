// Paging in real Chromium against a real `vesalius serve`: the Alerts page's history (issue 6,
// docs/alerts.md "The Alerts page") with more alerts than one page, by the "Older alerts"
// button. The alerts are rows written into the site's index database with Python's sqlite3 module
// (what the alert engine writes when it raises; raising 120 through real events would
// take minutes).
// Run: `scripts/test-browser` (or `node --test paging.test.mjs`).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ARTIFACTS, Site, launch, VIEWPORTS, login, alertStubs } from './site.mjs';


let site;
let browser;

before(async () => {
  site = await Site.start('paging');
  site.user('default', 'alice', 'clinician');
  site.user('default', 'root', 'admin');
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  await site?.stop();
});


/** Writes `n` alerts for `user`, alert-000 the oldest; every third acknowledged. */
function alerts(user, n) {
  const sql = `WITH RECURSIVE i(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM i WHERE x < ${n - 1})
    INSERT INTO alerts (id, chain, org, rule_id, kind, username, title, study_uid, link, details,
      created_ms, step, escalate_at_ms, acknowledged_ms, acknowledged_by)
    SELECT printf('alert-%03d', x), printf('alert-%03d', x), 'default', 'r1', 'disk-low', '${user}',
      printf('Paging test alert %03d', x), NULL, '/worklist', '{}', 1796600000000 + x * 60000, 0, NULL,
      CASE WHEN x % 3 = 0 THEN 1796700000000 END, CASE WHEN x % 3 = 0 THEN '${user}' ELSE '' END FROM i;`;
  site.sql(sql);
}

test('the Alerts page pages 120 alerts by "Older alerts", newest first, each once', async () => {
  alerts('alice', 120);
  const ctx = await browser.newContext(VIEWPORTS.desktop);
  await ctx.addInitScript(alertStubs);
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${site.base}/alerts`);
  await page.waitForURL(/\/login/);
  await login(page, 'alice', (u) => u.pathname === '/alerts');
  const sec = page.locator('section.admin-section[aria-label="My alerts"]');
  const rows = sec.locator('table[aria-label="My alerts"] tbody tr');
  const titles = async () => (await rows.locator('strong.title').allInnerTexts());
  await rows.first().waitFor();
  assert.equal(await rows.count(), 50, 'the first page: 50');
  assert.match(await sec.locator('p.status').innerText(), /50 alerts shown: 34 open, 16 acknowledged; older ones follow/);
  const older = sec.getByRole('button', { name: 'Older alerts' });
  // By keyboard: Enter on the button, the focus moves to the first row of the new page.
  await older.focus();
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelectorAll('table[aria-label="My alerts"] tbody tr').length === 100);
  assert.equal(await page.evaluate(() => document.activeElement?.dataset.id), 'alert-069', 'focus on the 51st row');
  await sec.getByRole('button', { name: 'Older alerts' }).click();
  await page.waitForFunction(() => document.querySelectorAll('table[aria-label="My alerts"] tbody tr').length === 120);
  assert.equal(await sec.getByRole('button', { name: 'Older alerts' }).count(), 0, 'no older page after the last');
  const want = Array.from({ length: 120 }, (_, i) => `Paging test alert ${String(119 - i).padStart(3, '0')}`);
  assert.deepEqual(await titles(), want, 'every alert once, newest first');
  assert.match(await sec.locator('p.status').innerText(), /120 alerts shown: 80 open, 40 acknowledged\.$/);
  // Acknowledging one reloads the list with as many as were shown.
  await sec.getByRole('button', { name: 'Acknowledge: Paging test alert 001' }).click();
  await sec.locator('tr[data-id="alert-001"].acknowledged').waitFor();
  assert.equal(await rows.count(), 120);
  await page.screenshot({ path: join(ARTIFACTS, 'paging-alerts.png'), fullPage: false });
  assert.deepEqual(errors, []);
  await ctx.close();
});

test('the transfers page pages 60 transfers and their receipts by Previous and Next', async () => {
  // 60 delivered studies (one receipt each) to one node, study 1.2.999.59 the newest.
  site.sql(`WITH RECURSIVE i(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM i WHERE x < 59)
    INSERT INTO receipts (org, queue, kind, study_uid, sop_uid, sha256, size, delivered_ms, verified, detail)
    SELECT 'default', 'node:pacs', 'instance', '1.2.999.' || x, '1.2.999.' || x || '.1', 'ab', 10,
      1796600000000 + x * 1000, 1, 'C-STORE 0x0000' FROM i;`);
  const ctx = await browser.newContext(VIEWPORTS.desktop);
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${site.base}/admin/transfers`);
  await page.waitForURL(/\/login/);
  await login(page, 'root', (u) => u.pathname === '/admin/transfers');
  const studies = (label) => page.locator(`table[aria-label="${label}"] tbody tr code.uid`).allInnerTexts();
  const nav = (label) => page.locator(`nav[aria-label="${label} pages"]`);
  await page.locator('table[aria-label="Transfers"]').waitFor();
  const want = Array.from({ length: 60 }, (_, i) => `1.2.999.${59 - i}`);
  assert.deepEqual(await studies('Transfers'), want.slice(0, 50), 'the newest 50 transfers');
  assert.equal(await nav('Transfers').locator('.pager-status').innerText(), 'Transfers 1–50');
  assert.equal(await nav('Parked jobs').count(), 0, 'no pager without a second page');
  // Next by keyboard: the page turns, the focus stays on the pager (Previous: Next is disabled).
  await nav('Transfers').getByRole('button', { name: 'Next' }).focus();
  await page.keyboard.press('Enter');
  await nav('Transfers').locator('.pager-status', { hasText: 'Transfers 51–60 (the last)' }).waitFor();
  assert.deepEqual(await studies('Transfers'), want.slice(50), 'the 10 oldest');
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Previous');
  // The receipts are paged on their own (the transfers stay on their second page).
  assert.deepEqual(await studies('Receipts'), want.slice(0, 50));
  await nav('Receipts').getByRole('button', { name: 'Next' }).click();
  await nav('Receipts').locator('.pager-status', { hasText: 'Receipts 51–60 (the last)' }).waitFor();
  assert.deepEqual(await studies('Receipts'), want.slice(50));
  assert.deepEqual(await studies('Transfers'), want.slice(50));
  await nav('Transfers').getByRole('button', { name: 'Previous' }).click();
  await nav('Transfers').locator('.pager-status', { hasText: 'Transfers 1–50' }).waitFor();
  assert.deepEqual(await studies('Transfers'), want.slice(0, 50));
  await page.screenshot({ path: join(ARTIFACTS, 'paging-transfers.png'), fullPage: false });
  assert.deepEqual(errors, []);
  await ctx.close();
});
