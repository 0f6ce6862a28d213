// The worklist's server paging (issue 6, docs/web.md "Worklist") and the admin console's
// site-administrator toggle (docs/admin-console.md), in real Chromium against a real
// `vesalius serve`: 60 one-slice CT studies (`vesalius synth --patients 60`, imported through
// the API), 33 of them with an arrival from a peer written into the site's index database with
// Python's sqlite3 module (what the exchange writes when a peer delivers a study: 3 complete
// and 2 still arriving at stroke priority 100, 28 complete at priority 0).
// Run: `scripts/test-browser` (or `node --test worklist.test.mjs`).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ARTIFACTS, Site, launch, VIEWPORTS, login, synth } from './site.mjs';


let site;
let browser;
/** Every study's UID, sorted. */
let uids;
/** UIDs by delivery: stroke-priority (complete, arriving), routine complete, none. */
let stroke;
let arriving;
let routine;

before(async () => {
  site = await Site.start('worklist');
  site.user('default', 'alice', 'clinician');
  site.user('default', 'root', 'admin');
  site.admin('user', 'create', '--org', 'default', '--role', 'admin', '--username', 'chief',
    '--password-env', 'VES_PW', '--site-admin');
  const many = synth(join(site.tmp, 'many'), 31, 1, 60);
  uids = [...new Set(Object.values(many.images).map((i) => i.study))].sort();
  assert.equal(uids.length, 60);
  site.import(many.dir);
  stroke = uids.slice(0, 3);
  arriving = uids.slice(3, 5);
  routine = uids.slice(5, 33);
  const row = (uid, priority, complete) => `('default', '${uid}', 'spoke', ${priority}, 1, ${complete}, 1796600000000)`;
  site.sql(`INSERT INTO arrivals (org, study_uid, from_peer, priority, manifest_instances, complete_ms, updated_ms) VALUES
    ${[...stroke.map((u) => row(u, 100, 1796600000000)), ...arriving.map((u) => row(u, 100, 0)),
    ...routine.map((u) => row(u, 0, 1796600000000))].join(',\n')};`);
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  await site?.stop();
});


async function open(kind, username, path) {
  const ctx = await browser.newContext(VIEWPORTS[kind]);
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('dialog', (d) => d.accept());
  await page.goto(`${site.base}${path}`);
  await page.waitForURL(/\/login/);
  await login(page, username, (u) => u.pathname === path.split('?')[0]);
  return { ctx, page, errors };
}

/** The worklist's pager status, once a page is drawn (`Studies 26–50 of 60`). */
async function where(page, want) {
  const s = page.locator('#wl-pages .pager-status');
  if (want) await s.filter({ hasText: want }).waitFor({ timeout: 15000 });
  return (await s.innerText()).trim();
}

/** The rows shown, once the list is not busy. */
async function rows(page) {
  await page.locator('#worklist:not([aria-busy])').waitFor();
  return page.locator('tr.study').evaluateAll((trs) => trs.map((r) => ({
    uid: r.dataset.uid,
    urgent: r.classList.contains('urgent'),
    badge: r.querySelector('td.prio')?.textContent || '',
    // The day: the server orders by Study Date (studies of one day as they were stored).
    date: (r.querySelector('td[data-label=Date]')?.textContent || '').slice(0, 10),
    name: r.querySelector('a.open')?.textContent || '',
  })));
}

/** Every row of every page, turning pages with Next by keyboard (the focus stays on the pager). */
async function allPages(page, total) {
  const seen = [];
  const pages = Math.ceil(total / 25);
  for (let p = 0; p < pages; p += 1) {
    const to = Math.min(total, (p + 1) * 25);
    assert.equal(await where(page, `Studies ${p * 25 + 1}–${to} of ${total}`), `Studies ${p * 25 + 1}–${to} of ${total}`);
    const r = await rows(page);
    assert.equal(r.length, to - p * 25, `page ${p + 1} is full`);
    seen.push(...r);
    if (p + 1 < pages) {
      await page.locator('#wl-pages button[data-rel=next]').focus();
      await page.keyboard.press('Enter');
      await where(page, `Studies ${(p + 1) * 25 + 1}–`);
      const focused = await page.evaluate(() => document.activeElement?.dataset.rel);
      // On the last page Next is disabled: the focus moves to Previous.
      assert.equal(focused, p + 2 < pages ? 'next' : 'prev', 'the focus stays on the pager');
    }
  }
  return seen;
}

const desc = (xs) => xs.every((x, i) => i === 0 || xs[i - 1] >= x);

test('desktop: the worklist pages 60 studies from the server, stroke first; filters with paging; live reload keeps the page', async () => {
  const { ctx, page, errors } = await open('desktop', 'alice', '/worklist');
  // Only the page shown is asked of the server.
  const asked = [];
  page.on('request', (r) => { if (r.url().includes('/api/v1/search?')) asked.push(new URL(r.url()).searchParams); });
  // Priority, then newest: the five stroke-priority studies first, then every study newest first.
  const all = await allPages(page, 60);
  assert.deepEqual(new Set(all.map((r) => r.uid)), new Set(uids), 'every study once');
  assert.equal(all.length, 60);
  assert.deepEqual(new Set(all.slice(0, 5).map((r) => r.uid)), new Set([...stroke, ...arriving]));
  assert.ok(all.slice(0, 5).every((r) => r.urgent && /STROKE/.test(r.badge)));
  assert.ok(all.slice(5).every((r) => !r.urgent));
  assert.ok(desc(all.slice(0, 5).map((r) => r.date)) && desc(all.slice(5).map((r) => r.date)), 'newest first after the priority');
  assert.ok(asked.length >= 3 && asked.every((q) => q.get('limit') === '25' && q.get('orderby') === 'priority'));
  assert.deepEqual(asked.slice(-3).map((q) => q.get('offset')), ['0', '25', '50']);
  await page.screenshot({ path: join(ARTIFACTS, 'worklist-01-last-page.png') });
  // Previous comes back.
  await page.locator('#wl-pages button[data-rel=prev]').click();
  await where(page, 'Studies 26–50 of 60');

  // Stroke priority only: one page of five (no pager), the filter reset to the first page.
  await page.selectOption('select[name=priority]', 'stroke');
  await page.waitForFunction(() => document.querySelectorAll('tr.study').length === 5);
  assert.equal(await page.locator('#wl-pages nav.pager').count(), 0, 'no pager for one page');
  assert.match(page.url(), /priority=stroke/);
  await page.selectOption('select[name=priority]', '');

  // Received complete (31: 3 stroke, 28 routine) by patient name: two pages, each full, in order.
  await page.selectOption('select[name=status]', 'complete');
  await page.selectOption('select[name=sort]', 'name');
  await page.locator('#worklist[data-sort=name]:not([aria-busy])').waitFor();
  const complete = await allPages(page, 31);
  assert.deepEqual(new Set(complete.map((r) => r.uid)), new Set([...stroke, ...routine]));
  assert.ok(complete.every((r) => /STROKE|from spoke/.test(r.badge)), 'every row was delivered');
  const names = complete.map((r) => r.name.toUpperCase());
  assert.deepEqual(names, [...names].sort(), 'by name across the pages');
  await page.screenshot({ path: join(ARTIFACTS, 'worklist-02-complete-by-name.png') });

  // Not received from a peer (27), newest first: 25 and 2.
  await page.selectOption('select[name=status]', 'here');
  await page.selectOption('select[name=sort]', 'date-desc');
  await page.locator('#worklist[data-sort=date-desc]:not([aria-busy])').waitFor();
  const here = await allPages(page, 27);
  const delivered = new Set([...stroke, ...arriving, ...routine]);
  assert.ok(here.every((r) => !delivered.has(r.uid) && r.badge === ''));
  assert.ok(desc(here.map((r) => r.date)));
  assert.match(page.url(), /status=here/);
  assert.match(page.url(), /sort=date-desc/);

  // A study imported while the second page is shown: that page is asked again, no reload.
  await page.waitForFunction(() => !document.getElementById('wl-status').classList.contains('offline'));
  await page.evaluate(() => { window.__sameDocument = true; });
  const next = synth(join(site.tmp, 'next'), 32, 1, 1);
  site.import(next.dir);
  await where(page, 'of 28');
  assert.equal(await where(page), 'Studies 26–28 of 28', 'still the second page');
  assert.equal((await rows(page)).length, 3);
  assert.equal(await page.evaluate(() => window.__sameDocument), true);
  assert.deepEqual(errors, []);
  await ctx.close();
});

test('phone: the worklist pager fits 390 px and turns pages by tap', async () => {
  const { ctx, page, errors } = await open('phone', 'alice', '/worklist?status=here');
  const total = 28;
  await where(page, `Studies 1–25 of ${total}`);
  const next = page.locator('#wl-pages button[data-rel=next]');
  const box = await next.boundingBox();
  assert.ok(box.height >= 44, `Next is ${box.height} px high`);
  assert.ok(box.x >= 0 && box.x + box.width <= 390, 'Next within the screen');
  assert.ok(await page.evaluate(() => document.scrollingElement.scrollWidth <= 390), 'nothing scrolls sideways');
  await next.scrollIntoViewIfNeeded();
  await next.tap();
  await where(page, `Studies 26–${total} of ${total}`);
  assert.equal((await rows(page)).length, total - 25);
  await page.screenshot({ path: join(ARTIFACTS, 'worklist-03-phone-page-2.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await ctx.close();
});

test('desktop: a site administrator names and removes site administrators in the console; others cannot', async () => {
  const { ctx, page, errors } = await open('desktop', 'chief', '/admin/users');
  const sec = page.locator('section.admin-section[aria-label="Users and roles"]');
  const rowOf = (name) => sec.locator('table[aria-label=Users] tbody tr', { has: page.locator(`strong:text-is("${name}")`) });
  await rowOf('root').waitFor();
  assert.match(await rowOf('chief').innerText(), /site administrator/);
  assert.equal(await rowOf('chief').getByRole('button', { name: /site administ/ }).count(), 0, 'not for oneself');
  assert.equal(await rowOf('root').locator('.badge.site-admin').count(), 0);
  await rowOf('root').getByRole('button', { name: 'Make site administrator' }).click();
  await rowOf('root').locator('.badge.site-admin').waitFor();
  const flag = () => page.evaluate(async () => (await (await fetch('/api/v1/users?limit=100')).json())
    .users.find((u) => u.username === 'root').site_admin);
  assert.equal(await flag(), true, 'the server says so');
  await page.screenshot({ path: join(ARTIFACTS, 'worklist-04-site-admin-granted.png'), fullPage: true });
  await rowOf('root').getByRole('button', { name: 'Remove site administration' }).click();
  await rowOf('root').getByRole('button', { name: 'Make site administrator' }).waitFor();
  assert.equal(await rowOf('root').locator('.badge.site-admin').count(), 0);
  assert.equal(await flag(), false);
  // The grant and the revocation are audited.
  const changes = await page.evaluate(async () => (await (await fetch('/api/v1/audit/events?action=admin-change&limit=50')).json()).records
    .map((r) => r.details?.change));
  const kinds = JSON.stringify(changes);
  assert.match(kinds, /site-admin-grant/);
  assert.match(kinds, /site-admin-revoke/);
  assert.deepEqual(errors, []);
  await ctx.close();

  // An organisation's administrator sees the flag but no toggle; the API refuses them (403 JSON).
  const other = await open('desktop', 'root', '/admin/users');
  const sec2 = other.page.locator('section.admin-section[aria-label="Users and roles"]');
  await sec2.locator('table[aria-label=Users] tbody tr').first().waitFor();
  assert.equal(await sec2.getByRole('button', { name: /site administ/ }).count(), 0);
  assert.match(await sec2.locator('table[aria-label=Users]').innerText(), /site administrator/, 'chief is shown as one');
  const refused = await other.page.evaluate(async () => {
    const me = await (await fetch('/api/v1/auth/me')).json();
    const r = await fetch('/api/v1/users/alice', {
      method: 'PATCH',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf || '' },
      body: JSON.stringify({ site_admin: true }),
    });
    return { status: r.status, type: r.headers.get('content-type'), body: await r.json() };
  });
  assert.equal(refused.status, 403);
  assert.match(refused.type, /application\/json/);
  assert.equal(refused.body.error, 'forbidden');
  assert.deepEqual(other.errors, []);
  await other.ctx.close();
});

// Issue 6: outgoing transfers on the sender's worklist. A spoke routes every CT to a hub that
// does not know it yet (the hub refuses its signed requests: the spoke's jobs wait and retry),
// so the row shows the study leaving and waiting ("sending to hub 0/6"); once the hub registers
// the spoke, the transfer completes and the row says "delivered to hub ✓ verified" with the
// hub's receipt, without a reload.
test('desktop: a study routed from a spoke shows its transfer, then delivered, on the spoke\'s worklist', async () => {
  // Retries at most 1 s apart (the default backs off to 5 minutes) and never parked while the
  // hub refuses (the default parks after 10 attempts).
  const env = { VESALIUS__EXCHANGE__BACKOFF_MAX_MS: '1000', VESALIUS__EXCHANGE__MAX_ATTEMPTS: '100000' };
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  let hub;
  let spoke;
  try {
    Object.assign(process.env, env);
    hub = await Site.start('hub');
    spoke = await Site.start('spoke');
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]; else process.env[k] = v;
    }
  }
  try {
    spoke.admin('peer', 'add', 'hub', '--url', hub.base, '--public-key', hub.publicKey(), '--org', 'default');
    spoke.admin('route', 'add', 'to-hub', '--org', 'default', '--to', 'peer:hub', '--modality', 'CT');
    spoke.user('default', 'rita', 'radiographer');
    await new Promise((r) => setTimeout(r, 2500)); // the spoke reloads its routes every 2 s
    const ctx = await browser.newContext(VIEWPORTS.desktop);
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${spoke.base}/worklist`);
    await login(page, 'rita');
    await page.waitForFunction(() => !document.getElementById('wl-status').classList.contains('offline'));
    await page.evaluate(() => { window.__sameDocument = true; });

    const ct = synth(join(spoke.tmp, 'routed'), 41, 6);
    const uid = Object.values(ct.images)[0].study;
    spoke.import(ct.dir);
    const row = page.locator(`tr.study[data-uid="${uid}"]`);
    const sending = row.locator('.outgoing.sending[data-to="hub"]');
    await sending.waitFor({ timeout: 30000 });
    await page.waitForFunction((u) => /sending to hub 0\/6/.test(document.querySelector(`tr.study[data-uid="${u}"] .outgoing`)?.textContent || ''), uid, { timeout: 30000 });
    const bar = sending.locator('progress');
    assert.equal(await bar.getAttribute('max'), '6');
    assert.equal(await bar.getAttribute('value'), '0');
    assert.equal(await bar.getAttribute('aria-label'), '0 of 6 images sent to hub');
    await page.screenshot({ path: join(ARTIFACTS, 'worklist-outgoing-sending.png') });

    // The hub learns the spoke: the next retry is accepted and the study is delivered.
    hub.admin('peer', 'add', 'spoke', '--url', spoke.base, '--public-key', spoke.publicKey(), '--org', 'default');
    const done = row.locator('.outgoing.delivered[data-to="hub"]');
    await done.waitFor({ timeout: 60000 });
    assert.match(await done.innerText(), /delivered to hub ✓ verified/);
    assert.equal(await row.locator('.outgoing.sending').count(), 0);
    assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was not reloaded');
    await page.screenshot({ path: join(ARTIFACTS, 'worklist-outgoing-delivered.png') });

    // The hub's user sees the study delivered there; outgoing rows are the sender's only.
    const r = await page.request.get(`${spoke.base}/api/v1/search?scope=local`);
    const found = (await r.json()).studies.find((s) => s.study_instance_uid === uid);
    assert.deepEqual(found.outgoing.map((o) => [o.to, o.state, o.delivered, o.verified, o.total]), [['hub', 'delivered', 6, 6, 6]]);
    assert.ok(found.outgoing[0].complete_ms > 0, 'the hub\'s study receipt');
    assert.deepEqual(errors, []);
    await ctx.close();
  } finally {
    await hub?.stop();
    await spoke?.stop();
  }
});
