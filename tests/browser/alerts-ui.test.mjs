// The alert pages in real Chromium (issue 6, docs/alerts.md "In the app"): an administrator of
// a real `vesalius serve` ("hub") creates, changes and deletes alert rules in the admin console
// (/admin/alerts); a clinician finds the Alerts page from the worklist's header, sees only the
// rules users may subscribe to (not the administrators' kinds), has a webhook into the site's
// network refused, gets a public webhook's secret once, unsubscribes it and subscribes in the
// app with the keyboard; a stroke route at a second `vesalius serve` ("spoke") delivers a study,
// the alert appears in the page's history live (with its viewer link, the beep and the
// notification: stubbed), is acknowledged there and stays listed as acknowledged. On a phone
// (390×844): the alert panel's link leads to the page, the alert is acknowledged by tap, and
// neither page scrolls sideways; contrast and accessible names are checked (a11y.mjs).
// Run: `scripts/test-browser`. Screenshots: target/browser-artifacts/alerts-ui-*.png.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ARTIFACTS, Site, synth, launch, VIEWPORTS, login, alertStubs } from './site.mjs';
import { lowContrast, unnamed } from './a11y.mjs';

const TITLE = 'Stroke-priority study arrived from spoke';

let hub;
let spoke;
let browser;
let token; // the hub's administrator token, for what the test checks through the API

before(async () => {
  [hub, spoke] = await Promise.all([Site.start('hub'), Site.start('spoke')]);
  hub.user('default', 'root', 'admin');
  hub.user('default', 'alice', 'clinician');
  hub.peerWith(spoke);
  token = JSON.parse(hub.admin('token', 'create', '--org', 'default', '--role', 'admin', '--name', 'alerts-ui', '--json')).token;
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  await Promise.all([spoke?.stop(), hub?.stop()]);
});

async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `alerts-ui-${name}.png`), fullPage: true });
}

/** A page of `kind` logged in as `username` at `path` (alert stubs installed). */
async function open(kind, username, path) {
  const ctx = await browser.newContext(VIEWPORTS[kind]);
  await ctx.addInitScript(alertStubs);
  // The strict CSP must hold on these pages too: any violation is reported as an error.
  await ctx.addInitScript(() => document.addEventListener('securitypolicyviolation',
    (e) => { throw new Error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`); }));
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('dialog', (d) => d.accept());
  await page.goto(`${hub.base}${path}`);
  await page.waitForURL(/\/login/);
  await login(page, username, (u) => u.pathname === path);
  return { ctx, page, errors };
}

/** The hub's rules, as its administrator's token sees them. */
async function rules() {
  const r = await fetch(`${hub.base}/api/v1/alerts/rules`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(r.status, 200);
  return r.json();
}

/** The spoke sends a synthetic CT head here through its stroke route; answers the study UID. */
function route(seed) {
  const ct = synth(join(spoke.tmp, `ct-${seed}`), seed, 3);
  spoke.import(ct.dir);
  return Object.values(ct.images)[0].study;
}

async function noSidewaysScroll(page, label) {
  const { sw, w } = await page.evaluate(() => ({ sw: document.scrollingElement.scrollWidth, w: window.innerWidth }));
  assert.ok(sw <= w + 1, `${label} scrolls sideways: ${sw} > ${w}`);
}

async function accessible(page, label) {
  assert.deepEqual(await page.evaluate(lowContrast), [], `${label}: text below the WCAG AA contrast minimum`);
  assert.deepEqual(await unnamed(page), [], `${label}: controls without an accessible name`);
}

/** Fills the labelled controls of `form`: `{label: value}` (selects by value, booleans tick). */
async function fillForm(form, fields) {
  for (const [label, value] of Object.entries(fields)) {
    const el = form.getByLabel(label, { exact: true });
    if (typeof value === 'boolean') await el.setChecked(value);
    else if ((await el.evaluate((e) => e.tagName)) === 'SELECT') await el.selectOption(value);
    else await el.fill(String(value));
  }
}

test('desktop: rules made in the console, a subscription on the Alerts page, the alert acknowledged in its history', async () => {
  // The administrator: a rule created, changed, an administrators' rule, and one deleted.
  const admin = await open('desktop', 'root', '/admin/alerts');
  const ap = admin.page;
  const sec = ap.locator('section.admin-section[aria-label="Alert rules"]');
  await sec.locator('p.empty').waitFor();
  const editor = sec.locator('form[aria-label="Add or change an alert rule"]');
  await fillForm(editor, { Kind: 'stroke-arrival', Name: 'Stroke arrivals (console)', 'Route priority at least': 90, Enabled: true });
  await editor.getByRole('button', { name: 'Save rule' }).click();
  const row = sec.locator('table[aria-label="Alert rules"] tr', { hasText: 'Stroke arrivals (console)' });
  await row.waitFor();
  assert.match(await row.innerText(), /priority ≥ 90/);
  await sec.getByRole('button', { name: 'Edit rule Stroke arrivals (console)' }).click();
  await sec.getByText('Changing rule “Stroke arrivals (console)”.').waitFor();
  await fillForm(sec.locator('form[aria-label="Add or change an alert rule"]'), { 'Route priority at least': 100 });
  await sec.getByRole('button', { name: 'Save rule' }).click();
  await sec.locator('tr', { hasText: 'priority ≥ 100' }).waitFor();
  // An administrators' kind (disk low) and a rule made only to be deleted.
  await fillForm(sec.locator('form[aria-label="Add or change an alert rule"]'), { Kind: 'disk-low', Name: 'Disk (administrators)', 'Free space under (bytes)': 1 });
  await sec.getByRole('button', { name: 'Save rule' }).click();
  await sec.locator('tr', { hasText: 'Disk (administrators)' }).waitFor();
  await fillForm(sec.locator('form[aria-label="Add or change an alert rule"]'), { Kind: 'study-complete', Name: 'Scratch rule' });
  await sec.getByRole('button', { name: 'Save rule' }).click();
  await sec.locator('tr', { hasText: 'Scratch rule' }).waitFor();
  await sec.getByRole('button', { name: 'Delete rule Scratch rule' }).click();
  await sec.locator('tr', { hasText: 'Scratch rule' }).waitFor({ state: 'detached' });
  const made = await rules();
  assert.deepEqual(made.map((r) => [r.name, r.kind, r.threshold]).sort(), [
    ['Disk (administrators)', 'disk-low', 1],
    ['Stroke arrivals (console)', 'stroke-arrival', 100],
  ]);
  const stroke = made.find((r) => r.kind === 'stroke-arrival');
  await shot(ap, 'desktop-1-console-rules');
  assert.deepEqual(admin.errors, []);
  await admin.ctx.close();

  // The clinician: from the worklist's header to the Alerts page.
  const { ctx, page, errors } = await open('desktop', 'alice', '/worklist');
  const link = page.locator('#alerts-link');
  await link.waitFor();
  await link.focus();
  await Promise.all([page.waitForURL(/\/alerts$/), page.keyboard.press('Enter')]);
  const rulesTable = page.locator('table[aria-label="Rules"]');
  await rulesTable.waitFor();
  assert.match(await rulesTable.innerText(), /Stroke arrivals \(console\)/);
  assert.doesNotMatch(await rulesTable.innerText(), /Disk/, 'no administrators\' kinds for a clinician');
  const form = page.locator('form.subscribe');
  const options = await form.locator('select[name=rule_id] option').allInnerTexts();
  assert.deepEqual(options, ['Stroke arrivals (console) (Stroke-priority arrival)']);

  // A webhook into the site's network is refused with the server's reason (the default).
  await fillForm(form, { Channel: 'webhook', 'Webhook URL': 'http://127.0.0.1:9/hook' });
  await form.getByRole('button', { name: 'Subscribe' }).click();
  const result = form.locator('.result.error');
  await result.waitFor();
  assert.match(await result.innerText(), /bad-request: .*127\.0\.0\.1.*webhook_allow_private/);
  // A public one: its secret is shown once; then it is unsubscribed.
  await fillForm(form, { 'Webhook URL': 'https://pager.example/hooks/vesalius' });
  await form.getByRole('button', { name: 'Subscribe' }).click();
  const secret = page.locator('.once code.secret');
  await secret.waitFor();
  assert.match(await secret.innerText(), /^[0-9a-f]{64}$/);
  const subs = page.locator('section[aria-label="My subscriptions"]');
  await subs.locator('table tr', { hasText: 'pager.example' }).waitFor();
  const listed = await page.evaluate(() => fetch('/api/v1/alerts/subscriptions').then((r) => r.json()));
  assert.equal(listed.length, 1);
  assert.equal(listed[0].secret, undefined, 'the secret is not listed again');
  await shot(page, 'desktop-2-webhook-secret');
  await subs.getByRole('button', { name: 'Unsubscribe from Stroke arrivals (console) (webhook)' }).click();
  await subs.locator('p.empty').waitFor();
  // In the app, with the keyboard only.
  const f2 = page.locator('form.subscribe');
  await f2.locator('select[name=channel]').focus();
  await page.keyboard.press('Home'); // the first channel: in the app
  assert.equal(await f2.locator('select[name=channel]').inputValue(), 'in-app');
  assert.equal(await f2.getByLabel('Webhook URL').isVisible(), false, 'no target for in-app');
  await f2.getByRole('button', { name: 'Subscribe' }).focus();
  await page.keyboard.press('Enter');
  await subs.locator('table tr', { hasText: 'In the app' }).waitFor();
  const mine = await page.evaluate(() => fetch('/api/v1/alerts/subscriptions').then((r) => r.json()));
  assert.deepEqual(mine.map((s) => [s.rule_id, s.channel, s.escalation_only]), [[stroke.id, 'in-app', false]]);

  // A stroke study from the spoke: the alert appears in the history without a reload.
  await page.evaluate(() => { window.__sameDocument = true; });
  spoke.admin('route', 'add', 'stroke', '--org', 'default', '--to', `peer:${hub.name}`, '--modality', 'CT', '--priority', '100');
  await new Promise((r) => setTimeout(r, 2500)); // the spoke reloads its routes every 2 s
  const uid = route(31);
  const history = page.locator('table[aria-label="My alerts"]');
  const openRow = history.locator('tr.alert-row.open');
  await openRow.waitFor({ timeout: 60000 });
  assert.equal(await openRow.locator('.title').innerText(), TITLE);
  assert.equal(await openRow.locator('a.open').getAttribute('href'), `/view/${uid}`);
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'no reload');
  await page.waitForFunction(() => window.__seen.notes.length === 1);
  const seen = await page.evaluate(() => window.__seen);
  assert.equal(seen.notes[0].title, TITLE);
  assert.ok(seen.tones >= 2, `beep attempted: ${JSON.stringify(seen)}`);
  assert.equal(await page.locator('.live-alert').count(), 0, 'the page lists alerts itself, no panel');
  await accessible(page, 'desktop alerts page');
  await shot(page, 'desktop-3-alert-open');

  // Acknowledged there: it stays in the history, acknowledged, also after a reload.
  await history.getByRole('button', { name: `Acknowledge: ${TITLE}` }).click();
  const done = history.locator('tr.alert-row.acknowledged');
  await done.waitFor();
  assert.match(await done.innerText(), /Acknowledged by alice/);
  assert.deepEqual(await page.evaluate(() => fetch('/api/v1/alerts').then((r) => r.json())), { alerts: [], more: false, next_before: null }, 'none open');
  await page.reload();
  await history.locator('tr.alert-row.acknowledged').waitFor();
  assert.equal(await history.locator('tr.alert-row.open').count(), 0);
  await shot(page, 'desktop-4-acknowledged');
  // Its deliveries: in the app only.
  await history.getByRole('button', { name: `Deliveries of: ${TITLE}` }).click();
  await history.getByText('In the app only (no webhook or e-mail).').waitFor();
  // The viewer link.
  await Promise.all([page.waitForURL(new RegExp(`/view/${uid.replaceAll('.', '\\.')}$`)), history.locator('a.open').click()]);
  await page.waitForFunction(() => document.getElementById('view')?.dataset.state === 'raw', null, { timeout: 30000 });
  assert.deepEqual(errors, []);
  await ctx.close();
});

test('phone: the panel leads to the Alerts page, acknowledged by tap; the console refuses the clinician; nothing scrolls sideways', async () => {
  const { ctx, page, errors } = await open('phone', 'alice', '/worklist');
  await page.locator('#alerts-link').waitFor();
  const uid = route(32);
  const alert = page.locator('.live-alert');
  await alert.waitFor({ timeout: 60000 });
  assert.equal(await alert.locator('a.open').getAttribute('href'), `/view/${uid}`);
  await shot(page, 'phone-1-panel');
  await Promise.all([page.waitForURL(/\/alerts$/), page.locator('#live-alerts a.all').tap()]);
  const history = page.locator('table[aria-label="My alerts"]');
  await history.locator('tr.alert-row.open').waitFor();
  assert.equal(await history.locator('tr.alert-row.acknowledged').count(), 1, 'the first one, acknowledged');
  await noSidewaysScroll(page, '/alerts');
  await accessible(page, 'phone alerts page');
  await shot(page, 'phone-2-alerts-page');
  await history.getByRole('button', { name: `Acknowledge: ${TITLE}` }).tap();
  await page.waitForFunction(() => document.querySelectorAll('tr.alert-row.acknowledged').length === 2);
  await shot(page, 'phone-3-acknowledged');
  // Rules are the administrators'.
  await page.goto(`${hub.base}/admin/alerts`);
  await page.getByText('The admin console is for administrators').waitFor();
  assert.deepEqual(errors, []);
  await ctx.close();

  const admin = await open('phone', 'root', '/admin/alerts');
  await admin.page.locator('table[aria-label="Alert rules"]').waitFor();
  await noSidewaysScroll(admin.page, '/admin/alerts');
  await accessible(admin.page, 'phone admin alert rules');
  await shot(admin.page, 'phone-4-console-rules');
  assert.deepEqual(admin.errors, []);
  await admin.ctx.close();
});
