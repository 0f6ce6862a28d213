// The app as a progressive web app (issue 6): a Web App Manifest and a service worker that keeps
// the app shell and its assets on the device, and nothing else: no API answer, no DICOMweb
// answer, no image. Real `vesalius serve`, Debian's Chromium (playwright-core).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ARTIFACTS, Site, synth, launch, login } from './site.mjs';


let site;
let browser;
let study;

before(async () => {
  site = await Site.start();
  site.user('default', 'alice');
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
