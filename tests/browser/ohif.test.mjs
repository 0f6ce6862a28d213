// OHIF as a second viewer (issue 6, "OHIF compatibility"): the prebuilt OHIF app of the npm
// package @ohif/app, prepared by `scripts/ohif` and served by a real `vesalius serve` at /ohif/
// (`[web] ohif_dir`), opened from the worklist's "Open in OHIF" link in Debian's Chromium: it
// must log in through Vesalius, read the study over this server's DICOMweb under the session,
// and draw the image. `scripts/test-browser` runs `scripts/ohif` first (VESALIUS_OHIF_DIST
// points elsewhere).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ARTIFACTS, ROOT, Site, synth, launch, login } from './site.mjs';

const DIST = process.env.VESALIUS_OHIF_DIST || join(ROOT, 'target/ohif/dist');

let site;
let browser;
let study;

before(async () => {
  assert.ok(existsSync(join(DIST, 'index.html')), `OHIF is not prepared in ${DIST}: run scripts/ohif`);
  process.env.VESALIUS__WEB__OHIF_DIR = DIST;
  try {
    site = await Site.start();
  } finally {
    delete process.env.VESALIUS__WEB__OHIF_DIR;
  }
  site.user('default', 'alice');
  const ct = synth(join(site.tmp, 'ct'), 11, 24);
  site.import(ct.dir);
  study = Object.values(ct.images)[0].study;
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (site) await site.stop();
});

/** Grey-level statistics of a PNG, decoded by the browser in a blank page. */
async function pngStats(png) {
  const page = await browser.newPage();
  try {
    return await page.evaluate(async (b64) => {
      const img = new Image();
      img.src = `data:image/png;base64,${b64}`;
      await img.decode();
      const c = document.createElement('canvas');
      c.width = img.width;
      c.height = img.height;
      const g = c.getContext('2d');
      g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      let bright = 0;
      let dark = 0;
      const levels = new Set();
      for (let i = 0; i < d.length; i += 4) {
        const v = Math.round((d[i] + d[i + 1] + d[i + 2]) / 3);
        levels.add(v);
        if (v > 100) bright++;
        if (v < 10) dark++;
      }
      const n = d.length / 4;
      return { n, bright: bright / n, dark: dark / n, levels: levels.size };
    }, png.toString('base64'));
  } finally {
    await page.close();
  }
}

test('OHIF, opened from the worklist, reads the study from Vesalius and draws it', async () => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  const csp = [];
  const errors = [];
  const failed = [];
  const dicomweb = [];
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) csp.push(m.text()); });
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('response', (r) => {
    const u = new URL(r.url());
    if (u.pathname.startsWith('/dicom-web/')) dicomweb.push(`${r.status()} ${u.pathname}`);
    if (r.status() >= 400 && !u.pathname.startsWith('/api/v1/auth/me')) failed.push(`${r.status()} ${u.pathname}`);
  });

  // Without a session OHIF's page sends the visitor to Vesalius' login, and DICOMweb refuses.
  const anon = await ctx.request.get(`${site.base}/dicom-web/studies`);
  assert.equal(anon.status(), 401);
  await page.goto(`${site.base}/worklist`);
  await page.waitForURL(/\/login/);
  await login(page, 'alice');

  // The worklist offers "Open in OHIF" for the study held here.
  const link = page.locator(`tr[data-uid="${study}"] a.ohif`);
  await link.waitFor({ timeout: 20000 });
  assert.equal(await link.getAttribute('href'), `/ohif/viewer?StudyInstanceUIDs=${study}`);
  const t0 = Date.now();
  await link.click();
  await page.waitForURL(/\/ohif\/viewer\?StudyInstanceUIDs=/);

  // OHIF asks this server's DICOMweb (QIDO-RS, WADO-RS metadata, frames) and draws the image.
  const canvas = page.locator('.cornerstone-viewport-element canvas, canvas.cornerstone-canvas').first();
  await canvas.waitFor({ timeout: 60000 });
  await page.waitForFunction(() => performance.getEntriesByType('resource')
    .some((e) => /\/frames\/1$/.test(e.name)), null, { timeout: 60000 });
  // Drawn: the head (bright skull and brain at OHIF's default window) on a black background.
  let stats;
  for (let i = 0; i < 40; i++) {
    stats = await pngStats(await canvas.screenshot());
    if (stats.bright > 0.05 && stats.levels > 20) break;
    await page.waitForTimeout(500);
  }
  const drawnMs = Date.now() - t0;
  await page.screenshot({ path: join(ARTIFACTS, 'ohif-desktop.png') });
  assert.ok(stats.bright > 0.05, `the canvas shows the head (bright share ${stats.bright.toFixed(3)})`);
  assert.ok(stats.dark > 0.2, `and the black around it (dark share ${stats.dark.toFixed(3)})`);
  assert.ok(stats.levels > 20, `with grey levels, not a flat fill (${stats.levels})`);
  assert.ok(dicomweb.some((r) => r.startsWith('200 ') && r.includes(`/studies/${study}/series/`) && r.endsWith('/metadata')),
    `OHIF read the series metadata from /dicom-web: ${dicomweb.slice(0, 5).join(', ')}`);
  assert.ok(dicomweb.some((r) => /^200 .*\/frames\/1$/.test(r)), 'OHIF read frames from /dicom-web');
  assert.deepEqual(dicomweb.filter((r) => !/^2\d\d /.test(r)), [], 'every DICOMweb request succeeded');
  assert.deepEqual(failed, [], 'no request failed');
  assert.deepEqual(csp, [], 'nothing was blocked by the Content-Security-Policy');
  assert.deepEqual(errors, [], 'no script error');
  console.log(`OHIF drew the first image ${drawnMs} ms after the click (debug build, loopback)`);
  await ctx.close();
});
