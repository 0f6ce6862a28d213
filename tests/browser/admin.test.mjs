// The admin console (issue 6) in real Chromium: an administrator of a real `vesalius serve`
// ("hub") creates a user and a token, adds a peer (a second `vesalius serve`, "spoke") and
// pings it, adds a DICOM node pointing at DCMTK's storescp and C-ECHOes it, adds a route and
// tests a synthetic file against it, sees the transfer the route makes and its receipt,
// revokes a share link, accepts a guest upload from the quarantine inbox and searches the
// audit trail for a patient; an ordinary user is refused. The users list and the audit search
// are paged (by keyboard on the desktop, by tap on a phone); a third server serving anonymous
// requests as the server itself ("site", the site level) creates organisations in the console
// and lists their members, which no organisation's administrator may. Desktop and phone viewports.
// Run: `scripts/test-browser`. Screenshots: target/browser-artifacts/admin-*.png.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { ARTIFACTS, PASSWORD, Site, synth, launch, VIEWPORTS, login } from './site.mjs';

const STORESCP = process.env.STORESCP || '/usr/bin/storescp';
/** Users made for paging (with root, alice, the first-start admin and carol: two pages of ten). */
const PAGER_USERS = 12;

let hub;
let spoke;
let site; // `[auth] required = false`: the console acts as the server itself
let browser;
let storescp;
let storePort;
let ct; // imported at the hub before the tests
let routed; // imported once the route exists: the route sends it to the spoke

/** A free TCP port on loopback (bound, then released for storescp). */
function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

before(async () => {
  [hub, spoke, site] = await Promise.all([Site.start('hub'), Site.start('spoke'),
    Site.start('site', { authRequired: false })]);
  hub.user('default', 'root', 'admin');
  hub.user('default', 'alice', 'clinician');
  // Enough users for two pages of ten (created through the API, without passwords).
  for (let i = 1; i <= PAGER_USERS; i++) {
    const r = await fetch(`${hub.base}/api/v1/users`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${adminToken()}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ username: `pager-${String(i).padStart(2, '0')}`, role: 'clinician' }),
    });
    assert.equal(r.status, 201, await r.text());
  }
  // The spoke knows the hub (so that the hub's signed pings and deliveries are accepted); the
  // hub's side of the link is made in the console.
  spoke.admin('peer', 'add', 'hub', '--url', hub.base, '--public-key', hub.publicKey(), '--org', 'default');
  ct = synth(join(hub.tmp, 'ct'), 21, 3);
  hub.import(ct.dir);
  storePort = await freePort();
  const out = mkdtempSync(join(hub.tmp, 'storescp-'));
  storescp = spawn(STORESCP, ['-aet', 'STORESCP', '-od', out, String(storePort)], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 300));
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (storescp) storescp.kill('SIGTERM');
  await Promise.all([hub?.stop(), spoke?.stop(), site?.stop()]);
});

async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `admin-${name}.png`), fullPage: true });
}

/** A page of `kind` logged in as `username`, at `path`. */
async function open(kind, username, path) {
  const ctx = await browser.newContext(VIEWPORTS[kind]);
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('dialog', (d) => d.accept());
  await page.goto(`${hub.base}${path}`);
  await page.waitForURL(/\/login/);
  await login(page, username, (u) => u.pathname === path);
  return { ctx, page, errors };
}

/** The section body once loaded (its first table or "empty" line). */
async function loaded(page, title) {
  const sec = page.locator(`section.admin-section[aria-label="${title}"]`);
  await sec.locator('.section-body > *').first().waitFor({ state: 'attached', timeout: 20000 });
  return sec;
}

/** Fills the labelled fields of `form` (a locator): `{label: value}`; booleans tick boxes. */
async function fillForm(form, fields) {
  for (const [label, value] of Object.entries(fields)) {
    const el = form.getByLabel(label, { exact: true });
    if (typeof value === 'boolean') await el.setChecked(value);
    else if ((await el.evaluate((e) => e.tagName)) === 'SELECT') await el.selectOption(value);
    else await el.fill(String(value));
  }
}

/** An admin token of the hub (for what the test sets up through the API). */
function adminToken() {
  if (!hub.adminToken) {
    hub.adminToken = JSON.parse(hub.admin('token', 'create', '--org', 'default', '--role', 'admin',
      '--name', 'admin-test', '--json')).token;
  }
  return hub.adminToken;
}

/** A guest upload through an upload link (STOW-RS with the link's token): into the inbox. */
async function guestUpload(dir) {
  const r = await fetch(`${hub.base}/api/v1/upload-links`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${adminToken()}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ label: 'CD from elsewhere', ttl_hours: 1 }),
  });
  assert.equal(r.status, 201);
  const link = await r.json();
  const boundary = 'admin-test-boundary';
  const parts = [];
  for (const p of dir.paths) {
    parts.push(Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`), readFileSync(p), Buffer.from('\r\n'));
  }
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  const s = await fetch(link.stow_url, {
    method: 'POST',
    headers: {
      Authorization: `Bearer ${link.token}`,
      'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}`,
      Accept: 'application/dicom+json',
    },
    body: Buffer.concat(parts),
  });
  assert.equal(s.status, 200, await s.text());
}

test('desktop: an administrator runs the site from the console', async () => {
  const { ctx, page, errors } = await open('desktop', 'root', '/admin');
  try {
    // --- system health ------------------------------------------------------------------
    const sys = await loaded(page, 'System health');
    await sys.locator('dl.health').waitFor();
    const health = await sys.innerText();
    assert.match(health, /up · \d+ ms/);
    assert.match(health, /ready/);
    assert.match(health, /3 instances/);
    assert.match(health, /free/);
    assert.ok(await page.locator('#admin-link').isVisible(), 'the header links the console');
    await shot(page, 'desktop-01-health');

    // --- users: create one, a password link shown once -------------------------------------
    await page.click('nav.admin-nav >> text=Users');
    await page.waitForURL(/\/admin\/users$/);
    let sec = await loaded(page, 'Users and roles');
    const newUser = sec.locator('form[aria-label="New user"]');
    await fillForm(newUser, { Username: 'carol', 'Display name': 'Dr Carol', Role: 'radiographer' });
    await newUser.locator('button[type=submit]').click();
    const link = sec.locator('.once code.secret');
    await link.waitFor();
    assert.match(await link.innerText(), /\/setup\?token=/);
    const carolRow = sec.locator('tr', { hasText: 'carol' });
    await carolRow.waitFor();
    assert.match(await carolRow.innerText(), /radiographer in default/);
    // Her role changed to clinician.
    await carolRow.getByLabel('Role of carol in default').selectOption('clinician');
    await carolRow.locator('button', { hasText: 'Set role' }).click();
    await sec.locator('tr', { hasText: 'clinician in default' }).filter({ hasText: 'carol' }).waitFor();
    await shot(page, 'desktop-02-users');
    // The password link works: Carol sets her password on the app's set-up screen (issue 6:
    // her username shown, not editable; the password twice), which logs her in.
    const url = await link.innerText();
    const carol = await browser.newContext(VIEWPORTS.desktop);
    const cp = await carol.newPage();
    await cp.goto(url);
    await cp.getByRole('heading', { name: 'Choose your password' }).waitFor();
    assert.equal(await cp.getByLabel('Username').inputValue(), 'carol');
    assert.equal(await cp.getByLabel('Username').getAttribute('readonly'), '');
    await cp.fill('input[name=password]', 'carol has a fine password');
    await cp.getByLabel('Password again').fill('carol has a fine password');
    await Promise.all([cp.waitForURL(/\/worklist$/), cp.click('form button')]);
    await carol.close();
    const session = await fetch(`${hub.base}/api/v1/auth/login`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username: 'carol', password: 'carol has a fine password' }),
    });
    assert.equal(session.status, 200, 'the password link set her password');

    // --- tokens: create one (secret once), it works -----------------------------------------
    await page.click('nav.admin-nav >> text=Tokens');
    sec = await loaded(page, 'API tokens');
    const newToken = sec.locator('form[aria-label="New token"]');
    await fillForm(newToken, { 'For user': 'carol', "Role (at most the user's)": 'clinician', Name: 'carol-script' });
    await newToken.locator('button[type=submit]').click();
    const secret = sec.locator('.once code.secret');
    await secret.waitFor();
    const token = await secret.innerText();
    assert.match(token, /^vsl_/);
    const me = await fetch(`${hub.base}/api/v1/auth/me`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(me.status, 200);
    assert.equal((await me.json()).role, 'clinician');
    await sec.locator('tr', { hasText: 'carol-script' }).waitFor();
    await shot(page, 'desktop-03-tokens');

    // --- peers: add the spoke, ping it ---------------------------------------------------------
    await page.click('nav.admin-nav >> text=Peers');
    sec = await loaded(page, 'Peers');
    const peerForm = sec.locator('form[aria-label="Add or change a peer"]');
    await fillForm(peerForm, {
      'Name (its site name)': 'spoke', 'Base URL': spoke.base, 'Public key (Vesalius peers)': spoke.publicKey(),
      Description: 'the spoke in the test',
    });
    await peerForm.locator('button[type=submit]').click();
    const peerRow = sec.locator('tr', { hasText: 'the spoke in the test' });
    await peerRow.waitFor();
    await peerRow.locator('button', { hasText: 'Ping' }).click();
    const ping = peerRow.locator('.probe[data-peer=spoke]');
    await page.waitForFunction(() => /OK|Unreachable/.test(document.querySelector('.probe[data-peer=spoke]')?.textContent || ''));
    assert.match(await ping.innerText(), /^OK · \d+ ms · spoke/, 'the spoke answered the signed ping');
    await shot(page, 'desktop-04-peer-ping');

    // --- DICOM nodes: storescp, C-ECHO -----------------------------------------------------------
    await page.click('nav.admin-nav >> text=DICOM nodes');
    sec = await loaded(page, 'DICOM nodes');
    const nodeForm = sec.locator('form[aria-label="Add or change a DICOM node"]');
    await fillForm(nodeForm, {
      Name: 'dcmtk', 'AE title': 'STORESCP', Host: '127.0.0.1', Port: storePort, Description: 'DCMTK storescp',
      'Retrieve by': 'get', 'Query model': 'patient',
      'Transfer syntaxes (UIDs, comma separated)': '1.2.840.10008.1.2.4.80, 1.2.840.10008.1.2.1',
    });
    await nodeForm.locator('button[type=submit]').click();
    let nodeRow = sec.locator('tr', { hasText: 'DCMTK storescp' });
    await nodeRow.waitFor();
    assert.match(await nodeRow.innerText(), /C-GET · Patient Root/, 'the retrieval method and query model are saved');
    const nodeSyntaxes = () => page.evaluate(async () =>
      (await (await fetch('/api/v1/nodes')).json()).find((n) => n.name === 'dcmtk').transfer_syntaxes);
    assert.deepEqual(await nodeSyntaxes(), ['1.2.840.10008.1.2.4.80', '1.2.840.10008.1.2.1'], 'the accepted syntaxes are saved');
    // Edited and saved again (only the description changed): the node keeps its syntaxes.
    await nodeRow.locator('button', { hasText: 'Edit' }).click();
    await fillForm(nodeForm, { Description: 'DCMTK storescp (edited)' });
    await nodeForm.locator('button[type=submit]').click();
    nodeRow = sec.locator('tr', { hasText: 'DCMTK storescp (edited)' });
    await nodeRow.waitFor();
    assert.deepEqual(await nodeSyntaxes(), ['1.2.840.10008.1.2.4.80', '1.2.840.10008.1.2.1'], 'editing keeps the accepted syntaxes');
    assert.match(await nodeRow.innerText(), /1\.2\.840\.10008\.1\.2\.4\.80/);
    await nodeRow.locator('button', { hasText: 'C-ECHO' }).click();
    await page.waitForFunction(() => /OK|Failed/.test(document.querySelector('.probe[data-node=dcmtk]')?.textContent || ''));
    assert.match(await nodeRow.locator('.probe').innerText(), /^OK · \d+ ms$/, 'storescp answered the C-ECHO');
    await shot(page, 'desktop-05-node-echo');

    // --- routes: add one, test a file against it ------------------------------------------------
    await page.click('nav.admin-nav >> text=Routes');
    sec = await loaded(page, 'Routes');
    const routeForm = sec.locator('form[aria-label="Add or change a route"]');
    await fillForm(routeForm, {
      Id: 'ct-to-spoke', 'Destinations (comma separated)': 'peer:spoke', Modalities: 'CT', 'Priority (100: stroke)': 100,
    });
    await routeForm.locator('button[type=submit]').click();
    const routeRow = sec.locator('tr', { hasText: 'ct-to-spoke' });
    await routeRow.waitFor();
    assert.match(await routeRow.innerText(), /modality=CT/);
    assert.match(await routeRow.innerText(), /peer:spoke/);
    const testForm = sec.locator('form[aria-label="Test this file"]');
    await testForm.getByLabel('DICOM file').setInputFiles(ct.paths[0]);
    await testForm.locator('button[type=submit]').click();
    const fired = testForm.locator('ul.fired li');
    await fired.first().waitFor();
    assert.match(await fired.first().innerText(), /ct-to-spoke \(default\) → peer:spoke, priority 100/);
    assert.match(await testForm.locator('.result').last().innerText(), /CT/);
    await shot(page, 'desktop-06-route-test');

    // --- transfers: the route sends the next CT study to the spoke; its receipt ------------------
    await page.click('nav.admin-nav >> text=Transfers');
    sec = await loaded(page, 'Transfers');
    await page.waitForFunction(() => /Live:/.test(document.querySelector('.admin-section .status')?.textContent || ''));
    routed = synth(join(hub.tmp, 'routed'), 22, 3);
    const routedStudy = Object.values(routed.images)[0].study;
    hub.import(routed.dir);
    // Live: the table fills without a reload, then the study receipt arrives.
    const tRow = sec.locator('table[aria-label=Transfers] tr', { hasText: routedStudy });
    await tRow.waitFor({ timeout: 30000 });
    await page.waitForFunction((uid) => [...document.querySelectorAll('table[aria-label=Receipts] tr')]
      .some((tr) => tr.textContent.includes(uid) && /study/.test(tr.textContent)), routedStudy, { timeout: 30000 });
    assert.match(await tRow.innerText(), /peer:spoke/);
    await page.waitForFunction((uid) => [...document.querySelectorAll('table[aria-label=Transfers] tr')]
      .some((tr) => tr.textContent.includes(uid) && /3\/3 \(100 %\)/.test(tr.textContent)), routedStudy, { timeout: 30000 });
    assert.ok(await page.locator('.event-log li').count() > 0, 'live events are listed');
    await shot(page, 'desktop-07-transfers');

    // --- share links: create one, revoke it ----------------------------------------------------
    await page.click('nav.admin-nav >> text=Links');
    sec = await loaded(page, 'Share and upload links');
    const shareForm = sec.locator('form[aria-label="New share link"]');
    const shared = Object.values(ct.images)[0].study;
    await fillForm(shareForm, { 'Study Instance UID': shared });
    await shareForm.locator('button[type=submit]').click();
    const shareUrl = sec.locator('.once code.secret');
    await shareUrl.waitFor();
    const opened = await fetch(await shareUrl.innerText(), { redirect: 'manual' });
    assert.ok(opened.status < 400, `the share link opens (${opened.status})`);
    const shareRow = sec.locator('table[aria-label="Share links"] tr', { hasText: shared }).first();
    await shareRow.locator('button', { hasText: 'Revoke' }).click();
    await sec.locator('table[aria-label="Share links"] tr', { hasText: shared }).filter({ hasText: 'revoked' }).first().waitFor();
    const after = await fetch(await shareUrl.innerText(), { redirect: 'manual' });
    assert.ok(after.status >= 400, `the revoked link is refused (${after.status})`);
    await shot(page, 'desktop-08-links');

    // --- inbox: a guest upload accepted under a local patient ID -------------------------------
    const guest = synth(join(hub.tmp, 'guest'), 23, 2);
    await guestUpload(guest);
    await page.click('nav.admin-nav >> text=Inbox');
    sec = await loaded(page, 'Quarantine inbox');
    const inboxRow = sec.locator('table[aria-label=Inbox] tbody tr').first();
    await inboxRow.waitFor();
    await inboxRow.getByLabel('Local patient ID', { exact: true }).fill('LOCAL-777');
    await inboxRow.locator('button', { hasText: 'Accept' }).click();
    await sec.locator('text=The inbox is empty.').waitFor({ timeout: 20000 });
    const q = await fetch(`${hub.base}/dicom-web/studies?PatientID=LOCAL-777`, {
      headers: { Authorization: `Bearer ${adminToken()}`, Accept: 'application/dicom+json' },
    });
    assert.equal(q.status, 200);
    assert.equal((await q.json()).length, 1, 'the accepted study is in the archive under LOCAL-777');
    await shot(page, 'desktop-09-inbox');

    // --- audit: search by patient; who saw the patient -------------------------------------------
    const pid = Object.values(ct.images)[0].patient_id;
    // Alice reads the study, so that someone "saw" it.
    const alice = await fetch(`${hub.base}/api/v1/auth/login`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ username: 'alice', password: PASSWORD }),
    });
    const cookie = alice.headers.get('set-cookie').split(';')[0];
    const read = await fetch(`${hub.base}/dicom-web/studies/${shared}/metadata`, { headers: { Cookie: cookie, Accept: 'application/dicom+json' } });
    assert.equal(read.status, 200);
    await page.click('nav.admin-nav >> text=Audit');
    sec = await loaded(page, 'Audit');
    const search = sec.locator('form[aria-label="Search the audit trail"]');
    await fillForm(search, { 'Patient ID': pid });
    let found = '';
    for (let i = 0; i < 20 && !/alice/.test(found); i++) {
      await search.locator('button[type=submit]').click();
      await sec.locator('table[aria-label="Audit events"], .audit-results .empty').first().waitFor();
      found = await sec.locator('.audit-results').innerText();
      if (!/alice/.test(found)) await page.waitForTimeout(250); // reads are audited in the background
    }
    assert.match(found, /alice/, 'the search by patient lists Alice\'s read');
    assert.match(found, /retrieve/);
    const whoSaw = sec.locator('form[aria-label="Who saw this patient or study?"]');
    await fillForm(whoSaw, { 'or Study Instance UID': shared });
    await whoSaw.locator('button[type=submit]').click();
    await sec.locator('table[aria-label=Readers]').waitFor();
    assert.match(await sec.locator('table[aria-label=Readers]').innerText(), /alice/);
    await shot(page, 'desktop-10-audit');

    // --- organisations -----------------------------------------------------------------------------
    await page.click('nav.admin-nav >> text=Organisations');
    sec = await loaded(page, 'Organisations');
    assert.match(await sec.innerText(), /default/);
    assert.match(await sec.innerText(), /vesalius admin org create/);
    assert.equal(await sec.locator('form[aria-label="New organisation"]').count(), 0,
      'an organisation\'s administrator may not create organisations');
    const refusedOrg = await page.evaluate(async () => {
      const me = await (await fetch('/api/v1/auth/me')).json();
      const r = await fetch('/api/v1/orgs', {
        method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf },
        body: JSON.stringify({ id: 'sneaky' }),
      });
      return r.status;
    });
    assert.equal(refusedOrg, 403, 'and the API refuses it');
    assert.deepEqual(errors, [], 'no script error');
  } finally {
    await ctx.close();
  }
});

test('desktop: an ordinary user is refused', async () => {
  const { ctx, page, errors } = await open('desktop', 'alice', '/admin/users');
  try {
    await page.locator('.admin-refused').waitFor();
    assert.match(await page.locator('.admin-refused').innerText(), /for administrators\. You are clinician in default/);
    assert.equal(await page.locator('#admin-link').count(), 0, 'no console link for her');
    const status = await page.evaluate(async () => (await fetch('/api/v1/users')).status);
    assert.equal(status, 403, 'the API refuses her too');
    await shot(page, 'desktop-11-refused');
    assert.deepEqual(errors, []);
  } finally {
    await ctx.close();
  }
  const anon = await fetch(`${hub.base}/api/v1/users`);
  assert.equal(anon.status, 401, 'and nobody without a session');
});

test('phone: the console fits 390 px, and ping and C-ECHO work there', async () => {
  const { ctx, page, errors } = await open('phone', 'root', '/admin/peers');
  try {
    const fits = () => page.evaluate(() => document.scrollingElement.scrollWidth <= window.innerWidth + 1);
    let sec = await loaded(page, 'Peers');
    const row = sec.locator('tr', { hasText: 'the spoke in the test' });
    await row.waitFor();
    assert.ok(await fits(), 'no sideways scrolling on the peers page');
    await row.locator('button', { hasText: 'Ping' }).tap();
    await page.waitForFunction(() => /OK|Unreachable/.test(document.querySelector('.probe[data-peer=spoke]')?.textContent || ''));
    assert.match(await row.locator('.probe').innerText(), /^OK/);
    await shot(page, 'phone-01-peers');
    await page.goto(`${hub.base}/admin/nodes`);
    sec = await loaded(page, 'DICOM nodes');
    const node = sec.locator('tr', { hasText: 'DCMTK storescp' });
    await node.locator('button', { hasText: 'C-ECHO' }).tap();
    await page.waitForFunction(() => /OK|Failed/.test(document.querySelector('.probe[data-node=dcmtk]')?.textContent || ''));
    assert.match(await node.locator('.probe').innerText(), /^OK/);
    assert.ok(await fits(), 'no sideways scrolling on the nodes page');
    await shot(page, 'phone-02-nodes');
    for (const s of ['health', 'transfers', 'users', 'tokens', 'routes', 'alerts', 'links', 'inbox', 'audit']) {
      await page.goto(`${hub.base}/admin/${s}`);
      await page.locator('.section-body > *').first().waitFor({ state: 'attached', timeout: 20000 });
      assert.ok(await fits(), `no sideways scrolling on /admin/${s}`);
    }
    await shot(page, 'phone-03-audit');
    assert.deepEqual(errors, []);
  } finally {
    await ctx.close();
  }
});

/** A page of `kind` on the site-level server (no login: it serves everyone as the server). */
async function openSite(kind, path) {
  const ctx = await browser.newContext(VIEWPORTS[kind]);
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('dialog', (d) => d.accept());
  await page.goto(`${site.base}${path}`);
  return { ctx, page, errors };
}

/** The text of the users pager's status (`Users 1–10 of 16`). */
async function usersStatus(sec) {
  return (await sec.locator('nav.pager .pager-status').innerText()).trim();
}

/** Every username listed on the current page of the users section. */
async function listedUsers(sec) {
  return sec.locator('table[aria-label=Users] tbody tr td:first-child strong').allInnerTexts();
}

test('desktop: the site creates an organisation and sees its members', async () => {
  const { ctx, page, errors } = await openSite('desktop', '/admin/orgs');
  try {
    const sec = await loaded(page, 'Organisations');
    assert.match(await page.locator('.admin-console h1').innerText(), /the whole site/);
    const create = sec.locator('form[aria-label="New organisation"]');
    await fillForm(create, { 'Id (lower-case letters, digits, -)': 'east', Name: 'East Hospital' });
    await create.locator('button[type=submit]').click();
    const row = sec.locator('table[aria-label=Organisations] tr', { hasText: 'East Hospital' });
    await row.waitFor();
    assert.match(await row.innerText(), /east/);
    assert.match(await row.innerText(), /0 members/);
    assert.match(await sec.locator('p.result').first().innerText(), /Created organisation east/);
    // An id that exists: the server's answer is shown under the form.
    const again = sec.locator('form[aria-label="New organisation"]');
    await fillForm(again, { 'Id (lower-case letters, digits, -)': 'east' });
    await again.locator('button[type=submit]').click();
    await again.locator('.result.error').waitFor();
    assert.match(await again.locator('.result.error').innerText(), /conflict: organisation "east" already exists/);
    // Its members: none yet; a first administrator created there.
    await row.getByRole('link', { name: /Members of East Hospital/ }).click();
    await page.waitForURL(/\/admin\/users\?org=east$/);
    const members = await loaded(page, 'Members of east');
    assert.match(await members.innerText(), /No members of east/);
    const newUser = members.locator('form[aria-label="New user"]');
    assert.equal(await newUser.getByLabel('Organisation', { exact: true }).inputValue(), 'east');
    await fillForm(newUser, { Username: 'eve', Role: 'admin' });
    await newUser.locator('button[type=submit]').click();
    const eve = members.locator('table[aria-label=Users] tr', { hasText: 'eve' });
    await eve.waitFor();
    assert.match(await eve.innerText(), /admin in east/);
    assert.equal((await listedUsers(members)).join(','), 'eve', 'only east\'s members');
    await shot(page, 'desktop-12-site-orgs');
    await page.goto(`${site.base}/admin/orgs`);
    const orgsAgain = await loaded(page, 'Organisations');
    await orgsAgain.locator('tr', { hasText: 'East Hospital' }).filter({ hasText: '1 member' }).waitFor();
    const made = await (await fetch(`${site.base}/api/v1/orgs`)).json();
    assert.ok(made.orgs.some((o) => o.id === 'east' && o.name === 'East Hospital'), 'the API has it');
    assert.deepEqual(errors, []);
  } finally {
    await ctx.close();
  }
});

test('desktop: the users list and the audit search page by keyboard', async () => {
  const { ctx, page, errors } = await open('desktop', 'root', '/admin/users');
  try {
    const sec = await loaded(page, 'Users and roles');
    await sec.getByLabel('Users per page').selectOption('10');
    await page.waitForFunction(() => /^Users 1–10 of \d+$/.test(document.querySelector('nav.pager .pager-status')?.textContent || ''));
    const total = Number(/of (\d+)/.exec(await usersStatus(sec))[1]);
    assert.ok(total > 10 && total <= 20, `two pages of users (${total})`);
    const first = await listedUsers(sec);
    assert.equal(first.length, 10);
    assert.doesNotMatch(await sec.innerText(), /\bnull\b|undefined/, 'no stray "null" text');
    assert.ok(await sec.locator('nav.pager button[data-rel=prev]').isDisabled(), 'no page before the first');
    // Next by keyboard: Tab to the button, Enter; the focus stays on the pager.
    await sec.locator('nav.pager button[data-rel=next]').focus();
    await page.keyboard.press('Enter');
    await page.waitForFunction((t) => (document.querySelector('nav.pager .pager-status')?.textContent || '') === `Users 11–${t} of ${t}`, total);
    const second = await listedUsers(sec);
    assert.equal(second.length, total - 10);
    assert.equal(new Set([...first, ...second]).size, total, 'every user once');
    assert.deepEqual([...first, ...second], [...first, ...second].slice().sort(), 'by username');
    for (let i = 1; i <= PAGER_USERS; i++) assert.ok([...first, ...second].includes(`pager-${String(i).padStart(2, '0')}`));
    assert.equal(await page.evaluate(() => document.activeElement?.dataset.rel), 'prev',
      'on the last page the focus moves to Previous');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => /^Users 1–10 of/.test(document.querySelector('nav.pager .pager-status')?.textContent || ''));
    assert.deepEqual(await listedUsers(sec), first);
    await shot(page, 'desktop-13-users-paged');

    // The audit search: the user-create events, ten at a time, "Older events" by keyboard.
    const all = await (await fetch(`${hub.base}/api/v1/audit/events?action=user-create&limit=1000`, {
      headers: { Authorization: `Bearer ${adminToken()}` },
    })).json();
    const want = all.records.length;
    assert.ok(want > 10 && !all.more, `more than a page of user-create events (${want})`);
    await page.click('nav.admin-nav >> text=Audit');
    const audit = await loaded(page, 'Audit');
    const search = audit.locator('form[aria-label="Search the audit trail"]');
    await fillForm(search, { Action: 'user-create', 'Per page': '10' });
    await search.locator('button[type=submit]').click();
    const rows = audit.locator('table[aria-label="Audit events"] tbody tr');
    await audit.locator('table[aria-label="Audit events"]').waitFor();
    assert.equal(await rows.count(), 10);
    assert.match(await audit.locator('.audit-results .status').innerText(), /10 event\(s\).*and older ones/);
    let pages = 1;
    while (await audit.locator('nav[aria-label="Audit pages"] button').count()) {
      const before = await rows.count();
      await audit.locator('nav[aria-label="Audit pages"] button').focus();
      await page.keyboard.press('Enter');
      await page.waitForFunction((n) => document.querySelectorAll('table[aria-label="Audit events"] tbody tr').length > n, before);
      pages += 1;
      // The focus is on the first row of the page just added.
      assert.equal(await page.evaluate(() => [...document.querySelectorAll('table[aria-label="Audit events"] tbody tr')]
        .indexOf(document.activeElement)), before);
    }
    assert.equal(await rows.count(), want, 'every event once, over the pages');
    assert.equal(pages, Math.ceil(want / 10));
    assert.doesNotMatch(await audit.locator('.audit-results').innerText(), /\bnull\b|undefined/);
    const whenShown = await rows.locator('td[data-label=When]').allInnerTexts();
    assert.deepEqual(whenShown, whenShown.slice().sort().reverse(), 'newest first');
    await shot(page, 'desktop-14-audit-paged');
    assert.deepEqual(errors, []);
  } finally {
    await ctx.close();
  }
});

test('phone: organisations, users and audit pages by tap, within 390 px', async () => {
  const fits = (page) => page.evaluate(() => document.scrollingElement.scrollWidth <= window.innerWidth + 1);
  const tall = (loc) => loc.evaluate((b) => b.getBoundingClientRect().height);
  let { ctx, page, errors } = await openSite('phone', '/admin/orgs');
  try {
    const sec = await loaded(page, 'Organisations');
    const create = sec.locator('form[aria-label="New organisation"]');
    await fillForm(create, { 'Id (lower-case letters, digits, -)': 'west', Name: 'West Hospital' });
    await create.locator('button[type=submit]').tap();
    await sec.locator('table[aria-label=Organisations] tr', { hasText: 'West Hospital' }).waitFor();
    assert.ok(await fits(page), 'no sideways scrolling on the organisations page');
    await shot(page, 'phone-04-site-orgs');
    assert.deepEqual(errors, []);
  } finally {
    await ctx.close();
  }
  ({ ctx, page, errors } = await open('phone', 'root', '/admin/users'));
  try {
    const sec = await loaded(page, 'Users and roles');
    await sec.getByLabel('Users per page').selectOption('10');
    await page.waitForFunction(() => /^Users 1–10 of/.test(document.querySelector('nav.pager .pager-status')?.textContent || ''));
    const next = sec.locator('nav.pager button[data-rel=next]');
    assert.ok(await tall(next) >= 44, 'Next is big enough to tap');
    await next.tap();
    await page.waitForFunction(() => /^Users 11–/.test(document.querySelector('nav.pager .pager-status')?.textContent || ''));
    assert.ok(await fits(page), 'no sideways scrolling on the second page of users');
    await shot(page, 'phone-05-users-paged');
    await page.goto(`${hub.base}/admin/audit`);
    const audit = await loaded(page, 'Audit');
    const search = audit.locator('form[aria-label="Search the audit trail"]');
    await fillForm(search, { Action: 'user-create', 'Per page': '10' });
    await search.locator('button[type=submit]').tap();
    const rows = audit.locator('table[aria-label="Audit events"] tbody tr');
    await audit.locator('table[aria-label="Audit events"]').waitFor();
    assert.equal(await rows.count(), 10);
    const older = audit.locator('nav[aria-label="Audit pages"] button');
    assert.ok(await tall(older) >= 44, 'Older events is big enough to tap');
    await older.tap();
    await page.waitForFunction(() => document.querySelectorAll('table[aria-label="Audit events"] tbody tr').length > 10);
    assert.ok(await fits(page), 'no sideways scrolling with two pages of audit events');
    await shot(page, 'phone-06-audit-paged');
    assert.deepEqual(errors, []);
  } finally {
    await ctx.close();
  }
});
