// Accessibility checks of the app's pages in Debian's Chromium (issue 6: "labels for screen
// readers, sufficient contrast"): on the worklist, the viewer, the admin console (and its alert
// rules), the alerts page, the login page and a guest upload page, desktop and phone,
// - every visible text has a contrast ratio against its background of at least 4.5:1
//   (3:1 for large text: 24 px, or 18.66 px bold), WCAG 2.2 success criterion 1.4.3, computed
//   with WCAG's relative luminance from the computed colours (backgrounds composed up the tree);
// - every visible control (button, input, select, textarea, link) has an accessible name
//   (Chromium's accessibility tree via the DevTools protocol, as a screen reader gets it);
// - the page has a main landmark and one h1 or a labelled region, and images have alt text.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ARTIFACTS, Site, synth, launch, VIEWPORTS, login } from './site.mjs';
import { lowContrast, unnamed } from './a11y.mjs';


let site;
let browser;
let study;
let uploadUrl;

before(async () => {
  site = await Site.start();
  site.user('default', 'ada', 'admin');
  const ct = synth(join(site.tmp, 'ct'), 9, 4);
  site.import(ct.dir);
  study = Object.values(ct.images)[0].study;
  const r = await fetch(`${site.base}/api/v1/upload-links`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${site.token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ label: 'Referrals', max_bytes: 100e6 }),
  });
  assert.equal(r.status, 201);
  uploadUrl = (await r.json()).url;
  // An alert rule, so that the alerts page and the console's rules list have rows.
  const rule = await fetch(`${site.base}/api/v1/alerts/rules`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${site.token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'Stroke arrivals', kind: 'stroke-arrival' }),
  });
  assert.equal(rule.status, 201);
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (site) await site.stop();
});

async function check(page, label) {
  const bad = await page.evaluate(lowContrast);
  assert.deepEqual(bad, [], `${label}: text below the WCAG AA contrast minimum`);
  assert.deepEqual(await unnamed(page), [], `${label}: controls without an accessible name`);
  const structure = await page.evaluate(() => ({
    main: document.querySelectorAll('main, [role=main]').length,
    imgsWithoutAlt: [...document.querySelectorAll('img')].filter((i) => !i.hasAttribute('alt')).length,
    lang: document.documentElement.lang,
  }));
  assert.ok(structure.main >= 1, `${label}: a main landmark`);
  assert.equal(structure.imgsWithoutAlt, 0, `${label}: every image has alt text`);
  assert.ok(structure.lang, `${label}: the page says its language`);
  await page.screenshot({ path: join(ARTIFACTS, `a11y-${label.replaceAll(/[^a-z0-9]+/gi, '-')}.png`) });
}

for (const [name, opts] of Object.entries(VIEWPORTS)) {
  test(`${name}: contrast, names and landmarks of the login, worklist, viewer, admin and upload pages`, async () => {
    const ctx = await browser.newContext(opts);
    const page = await ctx.newPage();
    await page.goto(`${site.base}/worklist`);
    await page.waitForURL(/\/login/);
    await check(page, `${name} login`);
    await login(page, 'ada');
    await page.locator(`tr[data-uid="${study}"]`).waitFor();
    await check(page, `${name} worklist`);
    await page.goto(`${site.base}/view/${study}`);
    await page.waitForFunction(() => document.getElementById('view')?.dataset.state === 'raw', null, { timeout: 30000 });
    await check(page, `${name} viewer`);
    await page.keyboard.press('?');
    await check(page, `${name} viewer help`);
    await page.goto(`${site.base}/admin`);
    await page.locator('main h1, main h2').first().waitFor();
    await page.waitForTimeout(500);
    await check(page, `${name} admin`);
    await page.goto(`${site.base}/admin/alerts`);
    await page.locator('table[aria-label="Alert rules"]').waitFor();
    await check(page, `${name} admin alert rules`);
    await page.goto(`${site.base}/alerts`);
    await page.locator('form.subscribe').waitFor();
    await page.locator('table[aria-label="Rules"]').waitFor();
    await check(page, `${name} alerts page`);
    await ctx.close();
    const guest = await browser.newContext(opts);
    const gp = await guest.newPage();
    await gp.goto(new URL(uploadUrl, site.base).href);
    await gp.locator('main').waitFor();
    await gp.waitForTimeout(500);
    await check(gp, `${name} upload`);
    await guest.close();
  });
}

test('the checks themselves: they catch low contrast and a nameless control', async () => {
  const page = await browser.newPage();
  await page.setContent(`<html lang="en"><body style="background:#0d1117"><main>
    <p id="ok" style="color:#e6edf3">readable</p>
    <p style="color:#30363d">too dark on dark</p>
    <p style="color:#9aa7b4;opacity:.5">faded by opacity</p>
    <button style="color:#fff;background:#161b22"></button>
  </main></body></html>`);
  const bad = await page.evaluate(lowContrast);
  assert.equal(bad.length, 2, bad.join('\n'));
  assert.ok(bad.some((b) => b.includes('too dark')) && bad.some((b) => b.includes('faded')));
  assert.equal((await unnamed(page)).length, 1);
  await page.close();
});
