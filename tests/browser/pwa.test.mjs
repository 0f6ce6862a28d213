// The app as a progressive web app (issue 6): a Web App Manifest and a service worker that keeps
// the app shell and its assets on the device, and nothing else: no API answer, no DICOMweb
// answer, no image. Real `vesalius serve`, Debian's Chromium (playwright-core).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { ARTIFACTS, CHROMIUM, FLAGS, Site, VIEWPORTS, synth, launch, login } from './site.mjs';


let site;
let browser;
let study;

before(async () => {
  site = await Site.start();
  site.user('default', 'alice');
  site.user('default', 'boss', 'admin');
  const ct = synth(join(site.tmp, 'ct'), 5, 6);
  site.import(ct.dir);
  study = Object.values(ct.images)[0].study;
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (site) await site.stop();
});

test('phone: installable; the shell opens offline; no study data is ever cached', async () => {
  const ctx = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 3, isMobile: true, hasTouch: true });
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${site.base}/worklist`);
  await page.waitForURL(/\/login/);
  await login(page, 'alice');

  // The manifest: a name, a start URL inside the app, standalone, an icon.
  const href = await page.getAttribute('link[rel=manifest]', 'href');
  const manifest = await (await ctx.request.get(new URL(href, site.base).href)).json();
  assert.equal(manifest.start_url, '/worklist');
  assert.equal(manifest.display, 'standalone');
  assert.ok(manifest.icons.length > 0 && manifest.name);

  // The service worker takes over the page and caches the shell and the assets.
  await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 20000 });
  await page.locator(`tr[data-uid="${study}"] a.open`).click();
  await page.waitForURL(/\/view\//);
  await page.waitForFunction(() => { const d = document.getElementById('view')?.dataset; return d && d.slices && d.loaded === d.slices; }, null, { timeout: 30000 });
  const cached = await page.evaluate(async () => {
    const out = [];
    for (const key of await caches.keys()) {
      for (const req of await (await caches.open(key)).keys()) out.push(new URL(req.url).pathname);
    }
    return out;
  });
  assert.ok(cached.includes('/worklist'), `the shell is cached: ${cached.join(', ')}`);
  assert.ok(cached.some((p) => /^\/app\/[0-9a-f]{16}\/js\/main\.js$/.test(p)), 'the assets are cached');
  const data = cached.filter((p) => !(p === '/worklist' || /^\/app\/[0-9a-f]{16}\//.test(p)));
  assert.deepEqual(data, [], 'nothing but the shell and the assets is cached (no API, DICOMweb or image)');

  // Offline: the app still opens, and says why it shows no studies.
  await ctx.setOffline(true);
  await page.goto(`${site.base}/worklist`);
  await page.locator('header.bar .brand').waitFor();
  const msg = await page.locator('#app [role=alert]').textContent({ timeout: 20000 });
  assert.match(msg, /offline/i);
  await page.screenshot({ path: join(ARTIFACTS, 'pwa-offline-phone.png') });
  await ctx.setOffline(false);
  // Back online the server is the authority again (network first): the worklist lists the study.
  await page.goto(`${site.base}/worklist`);
  await page.locator(`tr[data-uid="${study}"]`).waitFor({ timeout: 20000 });
  assert.deepEqual(errors, [], 'no script error');
  await ctx.close();
});

/** The addresses Chromium's on-disk caches of `profile` are keyed by (see below). */
function cacheKeys(profile) {
  return walk(profile)
    .filter((f) => /\/(Cache|Code Cache|Service Worker)\//.test(f.slice(profile.length)) && /_0$/.test(f))
    .map((f) => {
      const m = /https?:\/\/127\.0\.0\.1:\d+(\/[\x21-\x7e]*)/.exec(readFileSync(f).subarray(0, 4096).toString('latin1'));
      return m ? m[1] : null;
    })
    .filter(Boolean);
}

/** Every file under `dir`. */
function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = statSync(p, { throwIfNoEntry: false });
    if (!st) continue;
    if (st.isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

test("a browser profile on disk keeps no study data: every API and DICOMweb answer is no-store", async () => {
  // A persistent profile, as on a phone (the other tests' contexts keep their HTTP cache in
  // memory): after the worklist and the whole study were shown, nothing of them is in the
  // profile's files (HTTP disk cache, code cache, service worker storage).
  const profile = mkdtempSync(join(tmpdir(), 'vesalius-profile-'));
  try {
    const ctx = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: FLAGS, ...VIEWPORTS.phone });
    const page = ctx.pages()[0] || await ctx.newPage();
    const noStore = [];
    page.on('response', (r) => {
      const path = new URL(r.url()).pathname;
      if (/^\/(dicom-web|api)\//.test(path) && r.request().method() === 'GET' && r.status() === 200) {
        // The event stream is never cached by a browser (axum's `no-cache` is kept).
        if (!(r.headers()['content-type'] || '').startsWith('text/event-stream')) noStore.push([path, r.headers()['cache-control'] || '']);
      }
    });
    await page.goto(`${site.base}/worklist`);
    await page.waitForURL(/\/login/);
    await login(page, 'alice');
    await page.locator(`tr[data-uid="${study}"] a.open`).click();
    await page.waitForURL(/\/view\//);
    await page.waitForFunction(() => { const d = document.getElementById('view')?.dataset; return d && d.slices && d.loaded === d.slices; }, null, { timeout: 30000 });
    // Back to the worklist and to the study again: a browser that kept them would reuse them.
    await page.goto(`${site.base}/worklist`);
    await page.locator(`tr[data-uid="${study}"]`).waitFor();
    await ctx.close();
    assert.ok(noStore.some(([p]) => p.includes('/frames')), `the viewer fetched frames: ${noStore.map(([p]) => p).join(' ')}`);
    assert.ok(noStore.some(([p]) => p.includes('/rendered') || p.includes('/thumbnail')), 'and renderings');
    // What the profile's caches hold, by the addresses their entries are keyed by (Chromium's
    // simple cache: each entry file starts with a header and its key, the URL): the app's shell
    // and assets only. Before `no-store` the HTTP disk cache held the worklist's search, the
    // study's metadata, its renderings and frames.
    const keys = walk(profile)
      .filter((f) => /\/(Cache|Code Cache|Service Worker)\//.test(f.slice(profile.length)) && /_0$/.test(f))
      .map((f) => {
        const m = /https?:\/\/127\.0\.0\.1:\d+(\/[\x21-\x7e]*)/.exec(readFileSync(f).subarray(0, 4096).toString('latin1'));
        return m ? m[1] : null;
      })
      .filter(Boolean);
    assert.ok(keys.some((k) => k.startsWith('/app/')), `the cache entries were read: ${keys.join(' ')}`);
    const data = keys.filter((k) => /^\/(dicom-web|api)\//.test(k));
    assert.deepEqual(data, [], 'no API or DICOMweb answer is kept in the profile');
    for (const [p, cc] of noStore) assert.match(cc, /no-store/, `${p}: Cache-Control ${cc}`);
  } finally {
    rmSync(profile, { recursive: true, force: true });
  }
});


test('an organisation that allows it: images are kept on the device for its lifetime and deleted at logout', async () => {
  // Runs last: it turns the organisation's setting on (in the admin console, as its
  // administrator would), so the tests above see it off.
  const profile = mkdtempSync(join(tmpdir(), 'vesalius-profile-'));
  let ctx;
  let page;
  const open = async () => {
    const c = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: FLAGS, ...VIEWPORTS.phone });
    return [c, c.pages()[0] || await c.newPage()];
  };
  try {
    // The administrator allows it, for 2 hours.
    [ctx, page] = await open();
    await page.goto(`${site.base}/admin/orgs`);
    await page.waitForURL(/\/login/);
    await login(page, 'boss', /\/admin\/orgs/);
    const settings = page.locator('form[aria-label="Images kept on devices"]');
    await settings.locator('input[name=allowed]').check();
    await settings.locator('input[name=hours]').fill('2');
    await settings.locator('button[type=submit]').click();
    await page.locator('table[aria-label=Organisations] tr', { hasText: 'kept up to 2 h' }).waitFor();
    await page.locator('#logout').click();
    await page.waitForURL(/\/login/);
    await ctx.close();

    // A user of that organisation views the study.
    [ctx, page] = await open();
    const seen = [];
    page.on('response', (r) => {
      const path = new URL(r.url()).pathname;
      if (path.startsWith('/dicom-web/') && r.request().method() === 'GET' && r.status() === 200) {
        seen.push([path, r.headers()['cache-control'] || '', r.headers().vary || '']);
      }
    });
    await page.goto(`${site.base}/worklist`);
    await page.waitForURL(/\/login/);
    // As on a phone: kept signed in, so the session outlives the browser closing below.
    await page.getByLabel('Keep me signed in').check();
    await login(page, 'alice');
    await page.locator(`tr[data-uid="${study}"] a.open`).click();
    await page.waitForURL(/\/view\//);
    await page.waitForFunction(() => { const d = document.getElementById('view')?.dataset; return d && d.slices && d.loaded === d.slices; }, null, { timeout: 30000 });
    await page.goto(`${site.base}/worklist`);
    await page.locator(`tr[data-uid="${study}"]`).waitFor();
    await ctx.close();
    const images = seen.filter(([p]) => /\/(frames|rendered|thumbnail)(\/|$)/.test(p));
    assert.ok(images.some(([p]) => p.includes('/frames')), `the viewer fetched frames: ${seen.map(([p]) => p).join(' ')}`);
    for (const [p, cc, vary] of images) {
      const m = /^private, max-age=(\d+)$/.exec(cc);
      assert.ok(m && Number(m[1]) > 7000 && Number(m[1]) <= 7200, `${p}: Cache-Control ${cc}`);
      assert.match(vary, /cookie/i, `${p}: Vary ${vary}`);
    }
    // Metadata (patient data) and searches stay no-store.
    const other = seen.filter(([p]) => !/\/(frames|rendered|thumbnail)(\/|$)/.test(p));
    assert.ok(other.some(([p]) => p.endsWith('/metadata')), 'metadata was fetched');
    for (const [p, cc] of other) assert.match(cc, /no-store/, `${p}: Cache-Control ${cc}`);
    const kept = cacheKeys(profile).filter((k) => k.startsWith('/dicom-web/'));
    assert.ok(kept.some((k) => k.includes('/frames')), `the frames are kept on the device: ${kept.join(' ')}`);
    assert.ok(kept.every((k) => /\/(frames|rendered|thumbnail)(\/|\?|$)/.test(k)), `only images are kept: ${kept.join(' ')}`);
    assert.ok(!cacheKeys(profile).some((k) => k.startsWith('/api/')), 'no API answer is kept');

    // Logging out deletes them (Clear-Site-Data).
    [ctx, page] = await open();
    await page.goto(`${site.base}/worklist`);
    await page.locator(`tr[data-uid="${study}"]`).waitFor();
    const [res] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === '/api/v1/auth/logout'),
      page.locator('#logout').click(),
    ]);
    assert.equal((await res.allHeaders())['clear-site-data'], '"cache"');
    await page.waitForURL(/\/login/);
    // Chromium empties the cache in the background: the files go shortly after the answer.
    const deadline = Date.now() + 10000;
    let left = [];
    do {
      await page.waitForTimeout(250);
      left = cacheKeys(profile).filter((k) => k.startsWith('/dicom-web/'));
    } while (left.length && Date.now() < deadline);
    await ctx.close();
    left = cacheKeys(profile).filter((k) => k.startsWith('/dicom-web/'));
    assert.deepEqual(left, [], 'nothing of the study is left on the device after logout');
  } finally {
    if (ctx) await ctx.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
});
