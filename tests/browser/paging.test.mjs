// Paging in real Chromium against a real `vesalius serve`: the Alerts page's history (issue 6,
// docs/alerts.md "The Alerts page") with more alerts than one page, by the "Older alerts"
// button. The alerts are rows written into the site's index database with Python's sqlite3 module
// (what the alert engine writes when it raises; raising 120 through real events would
// take minutes).
// Run: `scripts/test-browser` (or `node --test paging.test.mjs`).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { ARTIFACTS, ROOT, Site, launch, VIEWPORTS, login, alertStubs } from './site.mjs';

const PYTHON = process.env.VESALIUS_PYTHON || join(ROOT, '.venv/bin/python');

let site;
let browser;

before(async () => {
  site = await Site.start('paging');
  site.user('default', 'alice', 'clinician');
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
  execFileSync(PYTHON, ['-c', 'import sqlite3, sys\nc = sqlite3.connect(sys.argv[1], timeout=10)\nc.executescript(sys.stdin.read())\nc.commit()',
    join(site.data, 'index.db')], { input: sql });
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
