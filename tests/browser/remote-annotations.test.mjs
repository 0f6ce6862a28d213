// Issue 6 in real Chromium: a key image marked in the viewer on a study held at a peer (two
// `vesalius serve`, "hub" and "spoke", linked as peers) is stored at the spoke, and the hub's
// viewer shows the image as a key image after a reload (read back through the hub's proxy,
// whose cached metadata of the study was dropped after the write); a length drawn there is
// saved as a measurement report at the spoke and drawn again after a reload; the key image is
// then unmarked (a rejection note stored at the spoke hides the KO there). Run by
// scripts/test-browser.
// Screenshots: target/browser-artifacts/remote-*.png.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ARTIFACTS, Site, synth, launch, VIEWPORTS, login } from './site.mjs';

let hub, spoke, browser, remote, uid;

before(async () => {
  hub = await Site.start('hub');
  spoke = await Site.start('spoke');
  hub.user('default', 'alice');
  hub.peerWith(spoke);
  remote = synth(join(spoke.tmp, 'remote'), 21, 6);
  uid = Object.values(remote.images)[0].study;
  spoke.import(remote.dir);
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (hub) await hub.stop();
  if (spoke) await spoke.stop();
});

const dataset = (page) => page.$eval('#view', (c) => ({ ...c.dataset }));

/** Waits until `pred(dataset of #view, arg)` holds (polled from here: the page's CSP forbids eval). */
async function waitView(page, pred, arg, what) {
  const until = Date.now() + 30000;
  let d = null;
  while (Date.now() < until) {
    d = await dataset(page).catch(() => null);
    if (d && pred(d, arg)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  const banners = await page.$$eval('.banner, .toast', (b) => b.map((x) => x.textContent)).catch(() => []);
  throw new Error(`${what}: timed out; ${JSON.stringify(d)}; messages: ${JSON.stringify(banners)}`);
}

async function cssOf(page, x, y) {
  const d = await dataset(page);
  const box = await page.locator('#view').boundingBox();
  const dpr = await page.evaluate(() => window.devicePixelRatio);
  return [box.x + (Number(d.ox) + x * Number(d.scale)) / dpr, box.y + (Number(d.oy) + y * Number(d.scaleY)) / dpr];
}

async function drag(page, from, to) {
  await page.mouse.move(from[0], from[1]);
  await page.mouse.down();
  for (let s = 1; s <= 6; s++) await page.mouse.move(from[0] + ((to[0] - from[0]) * s) / 6, from[1] + ((to[1] - from[1]) * s) / 6);
  await page.mouse.up();
}

/** The KO series of the study at the spoke itself (QIDO-RS with the spoke's own token). */
const kosAtSpoke = (page) => seriesAtSpoke(page, 'KO');

/** The series of one modality of the study at the spoke itself (QIDO-RS, the spoke's token). */
async function seriesAtSpoke(page, modality) {
  const r = await page.request.get(`${spoke.base}/dicom-web/studies/${uid}/series?Modality=${modality}`, {
    headers: { Accept: 'application/dicom+json', Authorization: `Bearer ${spoke.token}` },
  });
  assert.ok(r.status() === 200 || r.status() === 204, `QIDO at the spoke: ${r.status()}`);
  const t = await r.text();
  return t ? JSON.parse(t) : [];
}

test('desktop: a key image and a length on a study held at a peer are stored there and shown after a reload; the key image unmarked', async () => {
  const context = await browser.newContext(VIEWPORTS.desktop);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${hub.base}/worklist`);
  await login(page, 'alice');
  await page.goto(`${hub.base}/view/${uid}?peer=spoke`);
  await waitView(page, (d) => d.state === 'raw' && d.slices && d.loaded === d.slices, null, 'the remote study opens');
  assert.equal((await kosAtSpoke(page)).length, 0);
  // Another slice than the first, so that the reload's first image is not it by chance.
  await page.keyboard.press('End');
  await waitView(page, (d) => d.slice === d.slices, null, 'the last slice');
  const marked = (await dataset(page)).sop;
  assert.equal((await dataset(page)).key, 'false');
  assert.equal(await page.getAttribute('button[data-action="key-image"]', 'disabled'), null, 'the key button works on a peer\'s study');
  await page.keyboard.press('Shift+K');
  await waitView(page, (d) => d.key === 'true', null, 'marked as a key image');
  await page.locator('.toast', { hasText: /Saved as a key image at spoke/ }).waitFor();
  await page.screenshot({ path: join(ARTIFACTS, 'remote-01-key-image.png') });

  // Stored at the spoke, in the study, referencing the marked image.
  const kos = await kosAtSpoke(page);
  assert.equal(kos.length, 1, 'one KO series at the spoke');
  const series = kos[0]['0020000E'].Value[0];
  const metas = await (await page.request.get(`${spoke.base}/dicom-web/studies/${uid}/series/${series}/metadata`, {
    headers: { Accept: 'application/dicom+json', Authorization: `Bearer ${spoke.token}` },
  })).json();
  const refs = metas[0]['0040A730'].Value.filter((i) => i['0040A040'].Value[0] === 'IMAGE')
    .map((i) => i['00081199'].Value[0]['00081155'].Value[0]);
  assert.deepEqual(refs, [marked]);
  // Nothing stored at the hub.
  const local = await page.request.get(`${hub.base}/dicom-web/studies/${uid}/series`, { headers: { Accept: 'application/dicom+json' } });
  assert.ok(local.status() === 204 || (await local.text()) === '' || (await local.json()).length === 0, 'no copy at the hub');

  // Opened again: the KO series is in the strip and its image is flagged.
  await page.reload();
  await waitView(page, (d) => d.state === 'raw', null, 'reopened');
  await page.locator('button.series[data-modality="KO"]').waitFor();
  await page.click('button.series[data-modality="KO"]');
  await waitView(page, (d, a) => d.sop === a && d.key === 'true', marked, 'the key image is flagged after reopening');
  assert.match(await page.textContent('#ov-bl'), /Key image/);
  await page.screenshot({ path: join(ARTIFACTS, 'remote-02-after-reload.png') });

  // A length on the remote study: saved as a TID 1500 report at the spoke, back after a reload.
  await page.waitForFunction(() => document.body.dataset.measurementsLoaded === '0');
  await page.keyboard.press('m');
  await drag(page, await cssOf(page, 100, 150), await cssOf(page, 300, 250));
  await page.waitForFunction(() => document.body.dataset.measurementsSaved === '1', null, { timeout: 15000 });
  const shown = Number((await page.$eval('#marks g.mark.length', (g) => g.dataset.length)));
  const srs = await seriesAtSpoke(page, 'SR');
  assert.equal(srs.length, 1, 'one SR series at the spoke');
  const sr = (await (await page.request.get(`${spoke.base}/dicom-web/studies/${uid}/series/${srs[0]['0020000E'].Value[0]}/metadata`, {
    headers: { Accept: 'application/dicom+json', Authorization: `Bearer ${spoke.token}` },
  })).json())[0];
  const lengths = [];
  const walk = (items) => {
    for (const it of items || []) {
      const code = it['0040A043']?.Value?.[0]?.['00080100']?.Value?.[0];
      if (code === '410668003') lengths.push(Number(it['0040A300'].Value[0]['0040A30A'].Value[0]));
      walk(it['0040A730']?.Value);
    }
  };
  walk(sr['0040A730'].Value);
  assert.equal(lengths.length, 1);
  assert.ok(Math.abs(lengths[0] - shown) < 0.01, `the report's length ${lengths[0]}, shown ${shown}`);
  await page.reload();
  await waitView(page, (d) => d.state === 'raw', null, 'reopened again');
  await page.waitForFunction(() => document.body.dataset.measurementsLoaded === '1', null, { timeout: 15000 });

  // Unmarked with the same key: at the spoke, an IHE IOCM rejection note (113001, DCM) made
  // for the user withdraws the KO, which the spoke then hides; the image stays.
  const ko = metas[0]['00080018'].Value[0];
  await page.keyboard.press('End');
  await waitView(page, (d, a) => d.sop === a && d.key === 'true', marked, 'back at the key image');
  await page.keyboard.press('Shift+K');
  await page.locator('.toast', { hasText: /Key image unmarked at spoke/ }).waitFor();
  await waitView(page, (d, a) => d.sop === a && d.key === 'false', marked, 'unmarked');
  await page.screenshot({ path: join(ARTIFACTS, 'remote-03-unmarked.png') });
  const left = await kosAtSpoke(page);
  assert.ok(!left.some((x) => x['0020000E'].Value[0] === series), 'the KO series is hidden at the spoke');
  assert.equal(left.length, 1, 'one KO series at the spoke: the rejection note');
  const note = (await (await page.request.get(`${spoke.base}/dicom-web/studies/${uid}/series/${left[0]['0020000E'].Value[0]}/metadata`, {
    headers: { Accept: 'application/dicom+json', Authorization: `Bearer ${spoke.token}` },
  })).json())[0];
  assert.equal(note['0040A043'].Value[0]['00080100'].Value[0], '113001', 'Rejected for Quality Reasons');
  const withdrawn = note['0040A730'].Value.filter((i) => i['0040A040'].Value[0] === 'COMPOSITE')
    .map((i) => i['00081199'].Value[0]['00081155'].Value[0]);
  assert.deepEqual(withdrawn, [ko]);
  const image = await page.request.get(`${spoke.base}/dicom-web/studies/${uid}/instances?SOPInstanceUID=${marked}`, {
    headers: { Accept: 'application/dicom+json', Authorization: `Bearer ${spoke.token}` },
  });
  assert.equal((await image.json()).length, 1, 'the image is still at the spoke');
  await page.reload();
  await waitView(page, (d) => d.state === 'raw', null, 'reopened after the unmark');
  await page.keyboard.press('End');
  await waitView(page, (d, a) => d.sop === a && d.key === 'false', marked, 'not a key image after a reload');
  assert.deepEqual(errors, [], 'no script errors');
  await context.close();
});
