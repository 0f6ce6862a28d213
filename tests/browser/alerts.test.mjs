// Alerts in real Chromium (issue 6): a user with the worklist open sees a live alert when a
// stroke route at a second `vesalius serve` sends a study here; the alert links to the viewer,
// beeps (WebAudio, stubbed here to count the tones), asks for and shows a browser notification
// (window.Notification stubbed), and once acknowledged is gone after a reload.
// Run: `scripts/test-browser`. Screenshots: target/browser-artifacts/alerts-*.png.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ARTIFACTS, PASSWORD, Site, synth, launch, login, alertStubs } from './site.mjs';


let hub;
let spoke;
let browser;

before(async () => {
  hub = await Site.start('hub');
  spoke = await Site.start('spoke');
  hub.user('default', 'alice');
  hub.peerWith(spoke);
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (spoke) await spoke.stop();
  if (hub) await hub.stop();
});

/** A JSON call with `headers`; answers [status, body]. */
async function call(method, url, headers, body) {
  const r = await fetch(url, {
    method,
    headers: { 'Content-Type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return [r.status, text ? JSON.parse(text) : null];
}

test('desktop: a live alert with its viewer link, sound and notification; acknowledged, it stays gone', async () => {
  // An administrator's rule (API token) and alice's in-app subscription (her session).
  const token = JSON.parse(hub.admin('token', 'create', '--org', 'default', '--role', 'admin', '--name', 'alerts-admin', '--json')).token;
  const [st, rule] = await call('POST', `${hub.base}/api/v1/alerts/rules`, { Authorization: `Bearer ${token}` },
    { name: 'Stroke arrivals', kind: 'stroke-arrival' });
  assert.equal(st, 201, JSON.stringify(rule));
  const session = await fetch(`${hub.base}/api/v1/auth/login`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: 'alice', password: PASSWORD }),
  });
  assert.equal(session.status, 200);
  const { csrf } = await session.json();
  const cookie = session.headers.getSetCookie().find((c) => c.startsWith('vesalius_session=')).split(';')[0];
  const [st2, sub] = await call('POST', `${hub.base}/api/v1/alerts/subscriptions`, { Cookie: cookie, 'X-CSRF-Token': csrf },
    { rule_id: rule.id, channel: 'in-app' });
  assert.equal(st2, 201, JSON.stringify(sub));

  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await context.addInitScript(alertStubs);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${hub.base}/worklist`);
  await login(page, 'alice');
  await page.waitForFunction(() => !document.getElementById('wl-status')?.classList.contains('offline'));
  await page.evaluate(() => { window.__sameDocument = true; });
  assert.equal(await page.locator('.live-alert').count(), 0, 'no alert yet');

  // The spoke's stroke route sends a CT head here at priority 100.
  spoke.admin('route', 'add', 'stroke', '--org', 'default', '--to', `peer:${hub.name}`, '--modality', 'CT', '--priority', '100');
  await new Promise((r) => setTimeout(r, 2500)); // the spoke reloads its routes every 2 s
  const ct = synth(join(spoke.tmp, 'urgent'), 21, 3);
  const uid = Object.values(ct.images)[0].study;
  spoke.import(ct.dir);

  const alert = page.locator('.live-alert');
  await alert.waitFor({ timeout: 60000 });
  assert.match(await alert.locator('.title').innerText(), /^Stroke-priority study arrived from spoke$/);
  assert.equal(await alert.locator('a.open').getAttribute('href'), `/view/${uid}`);
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'no reload');
  await page.waitForFunction(() => window.__seen.notes.length === 1);
  const seen = await page.evaluate(() => window.__seen);
  assert.equal(seen.asked, 1, 'notification permission requested');
  assert.equal(seen.notes[0].title, 'Stroke-priority study arrived from spoke');
  assert.ok(seen.contexts >= 1 && seen.tones >= 2, `beep attempted: ${JSON.stringify(seen)}`);
  // No patient data in what the browser was told.
  const name = Object.values(ct.images)[0].patient_name || '';
  if (name) assert.ok(!(await alert.innerText()).includes(name.split('^')[0]));
  await page.screenshot({ path: join(ARTIFACTS, 'alerts-1-live-alert.png') });

  // Acknowledged: gone, and still gone after a reload.
  const acked = page.waitForResponse((r) => r.url().includes('/acknowledge') && r.status() === 200);
  await alert.locator('button.ack').click();
  await acked;
  await alert.waitFor({ state: 'detached' });
  const listed = page.waitForResponse((r) => r.url().endsWith('/api/v1/alerts') && r.status() === 200);
  await page.reload();
  const open = (await (await listed).json()).alerts;
  assert.deepEqual(open, [], 'no open alerts after the acknowledgement');
  await page.locator('tr.study').first().waitFor();
  assert.equal(await page.locator('.live-alert').count(), 0);
  await page.screenshot({ path: join(ARTIFACTS, 'alerts-2-acknowledged.png') });

  // The link opens the viewer on the study.
  await page.goto(`${hub.base}/view/${uid}`);
  await page.waitForFunction(() => document.getElementById('view')?.dataset.state === 'raw', null, { timeout: 30000 });
  assert.deepEqual(errors, []);
  await context.close();
});
