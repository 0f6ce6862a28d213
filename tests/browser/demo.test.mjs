// Issue 6's "done when", with the real `vesalius demo` (a hub and two spokes on loopback, the
// spoke's CT heads routed to the hub at stroke priority): a newcomer opens the hub URL it prints
// on a phone-sized window, logs in with the printed user, finds the alert of the CT the demo
// sent and the study in the worklist; then a scanner (DCMTK's storescu, as the demo's "send
// more" line says) sends another CT head into the spoke, and the alert of its arrival appears
// live (sound and notification stubbed to count them); with two more the panel shows the
// newest three and counts the rest; the alert's link opens the viewer, which draws the study. Run: `scripts/test-browser`. Screenshots: target/browser-artifacts/demo-*.png.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ARTIFACTS, BIN, VIEWPORTS, alertStubs, launch, synth } from './site.mjs';

const STORESCU = '/usr/bin/storescu';

let demo;
let tmp;
let browser;
/** What the demo printed: hub URL, the study's viewer URL, user, password, spoke's DICOM port. */
const printed = {};

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'vesalius-demo-'));
  demo = spawn(BIN, ['demo', '--dir', join(tmp, 'demo'), '--slices', '6'], {
    env: { ...process.env, RUST_LOG: 'warn' }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`the demo did not print its URLs in 120 s: ${JSON.stringify(printed)}`)), 120000);
    createInterface({ input: demo.stdout }).on('line', (line) => {
      let m;
      if ((m = /^\s*web app\s*:\s*(http:\/\/127\.0\.0\.1:\d+)\/worklist\s+\(user (\S+), password (\S+)\)/.exec(line))) {
        [, printed.hub, printed.user, printed.password] = m;
      } else if ((m = /^\s*the study\s*:\s*(\S+\/view\/(\S+))$/.exec(line))) {
        [, printed.view, printed.study] = m;
      } else if ((m = /^send more: storescu -aet (\S+) -aec (\S+) (127\.0\.0\.1) (\d+) FILES/.exec(line))) {
        [, printed.aet, printed.aec, printed.host, printed.port] = m;
        clearTimeout(timer);
        ok();
      }
    });
    demo.on('exit', (code) => fail(new Error(`the demo exited (${code})`)));
  });
  for (const k of ['hub', 'user', 'password', 'view', 'study', 'aet', 'port']) assert.ok(printed[k], `the demo printed ${k}`);
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (demo && demo.exitCode === null) {
    const exited = new Promise((ok) => demo.once('exit', ok));
    demo.kill('SIGINT');
    await Promise.race([exited, new Promise((ok) => setTimeout(ok, 15000))]);
  }
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('phone: the demo hub, its login, the alert of the spoke CT, a live alert for the next one, the viewer', async () => {
  const ctx = await browser.newContext(VIEWPORTS.phone);
  await ctx.addInitScript(alertStubs);
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  try {
    await page.goto(`${printed.hub}/worklist`);
    await page.waitForURL(/\/login\?next=/);
    await page.getByLabel('Username').fill(printed.user);
    await page.getByLabel('Password').fill(printed.password);
    await Promise.all([page.waitForURL(/\/worklist$/), page.getByRole('button', { name: 'Log in' }).click()]);

    // The CT the demo sent: in the worklist, and its arrival's alert is open.
    const row = page.locator(`tr.study[data-uid="${printed.study}"]`);
    await row.waitFor({ timeout: 30000 });
    const first = page.locator('.live-alert', { has: page.locator(`a.open[href="/view/${printed.study}"]`) });
    await first.waitFor({ timeout: 30000 });
    assert.match(await first.locator('.title').innerText(), /^Stroke-priority study arrived from spoke-a$/);
    await page.waitForFunction(() => !document.getElementById('wl-status')?.classList.contains('offline'));
    await page.evaluate(() => { window.__sameDocument = true; });
    await page.screenshot({ path: join(ARTIFACTS, 'demo-1-worklist.png') });

    // A scanner at spoke A sends the next CT head, as the demo says.
    const ct = synth(join(tmp, 'next'), 77, 3);
    const next = Object.values(ct.images)[0].study;
    assert.notEqual(next, printed.study);
    execFileSync(STORESCU, ['-aet', printed.aet, '-aec', printed.aec, printed.host, printed.port, ...ct.paths],
      { env: { ...process.env, TCP_NODELAY: '1' }, stdio: 'inherit' });

    const live = page.locator('.live-alert', { has: page.locator(`a.open[href="/view/${next}"]`) });
    await live.waitFor({ timeout: 60000 });
    assert.equal(await page.evaluate(() => window.__sameDocument), true, 'no reload');
    await page.waitForFunction(() => window.__seen.tones >= 2 && window.__seen.notes.length >= 1);
    await page.locator(`tr.study[data-uid="${next}"]`).waitFor({ timeout: 30000 });
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1), 'no sideways scrolling');
    await page.screenshot({ path: join(ARTIFACTS, 'demo-2-live-alert.png') });

    // Two more arrive in one association: the panel shows the newest three alerts, counts
    // the fourth, and the page stays usable on the phone.
    const more = synth(join(tmp, 'more'), 78, 2, 2);
    execFileSync(STORESCU, ['-aet', printed.aet, '-aec', printed.aec, printed.host, printed.port, ...more.paths],
      { env: { ...process.env, TCP_NODELAY: '1' }, stdio: 'inherit' });
    await page.waitForFunction(() => document.querySelectorAll('#live-alerts .live-alert').length === 4, null, { timeout: 60000 });
    assert.equal(await page.locator('#live-alerts .live-alert:visible').count(), 3);
    assert.equal(await first.isVisible(), false, 'the oldest is counted, not shown');
    assert.equal(await page.locator('#live-alerts a.all').innerText(), 'All alerts and subscriptions (1 more open)');
    await page.screenshot({ path: join(ARTIFACTS, 'demo-3-panel.png') });
    // The panel hides no worklist row: it sits above them, and the first row takes a tap.
    const firstRow = page.locator('tr.study').first();
    const [panelBox, rowBox] = [await page.locator('#live-alerts').boundingBox(), await firstRow.boundingBox()];
    const mainBox = await page.locator('main#app').boundingBox();
    assert.ok(mainBox.y >= panelBox.y + panelBox.height - 1, `the worklist (top ${mainBox.y}) starts below the panel (bottom ${panelBox.y + panelBox.height}): it covers none of it`);
    assert.ok(rowBox.y >= panelBox.y + panelBox.height - 1, `the first row (top ${rowBox.y}) is below the panel (bottom ${panelBox.y + panelBox.height})`);
    const openBox = await firstRow.locator('a.open').boundingBox();
    assert.ok(openBox.y >= 0 && openBox.y + openBox.height <= 844, `the first row's link is on the screen without scrolling: ${JSON.stringify(openBox)}`);
    const hit = await page.evaluate(() => {
      const r = document.querySelector('tr.study a.open').getBoundingClientRect();
      return document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2)?.closest('tr.study') === document.querySelector('tr.study');
    });
    assert.ok(hit, 'nothing covers the first row');
    await firstRow.locator('a.open').click({ trial: true, timeout: 5000 });

    // The alert's link: the viewer draws the study.
    await Promise.all([page.waitForURL(`${printed.hub}/view/${next}`), live.locator('a.open').click()]);
    await page.waitForFunction(() => ['rendered', 'raw'].includes(document.getElementById('view')?.dataset.state), null, { timeout: 30000 });
    await page.waitForFunction(() => { const d = document.getElementById('view')?.dataset; return d && d.slices === '3' && d.loaded === d.slices; }, null, { timeout: 30000 });
    await page.screenshot({ path: join(ARTIFACTS, 'demo-4-viewer.png') });
    assert.deepEqual(errors, []);
  } finally {
    await ctx.close();
  }
});
