// Saved measurements in real Chromium (issue 6): a length, an angle and a rectangle ROI drawn
// on a synthetic CT are saved by the server as a TID 1500 Comprehensive SR in the study (QIDO
// finds it, its content items checked here), come back with the same values after a reload,
// and are seen by a second user of the organisation; a user of another organisation cannot
// save any. Run by scripts/test-browser.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Site, synth, launch, VIEWPORTS, login } from './site.mjs';
import { join } from 'node:path';

const SR_CLASS = '1.2.840.10008.5.1.4.1.1.88.33';
let site, ct, browser, study;

before(async () => {
  site = await Site.start();
  site.user('default', 'alice');
  site.user('default', 'bob');
  site.admin('org', 'create', 'north');
  site.user('north', 'mallory');
  ct = synth(join(site.tmp, 'ct'), 5, 6);
  site.import(ct.dir);
  study = Object.values(ct.images)[0].study;
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (site) await site.stop();
});

const dataset = (page) => page.$eval('#view', (c) => ({ ...c.dataset }));

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

/** The marks drawn on the image shown: type and data attributes. */
const marks = (page) => page.$$eval('#marks g.mark', (gs) => gs.map((g) => ({ type: g.classList[1], ...g.dataset })));

async function open(page, user) {
  await page.goto(`${site.base}/view/${study}`);
  if (user) { await page.waitForURL(/\/login/); await login(page, user, /\/view\//); }
  await page.waitForFunction(() => {
    const d = document.querySelector('#view')?.dataset;
    return d && d.state === 'raw' && d.loaded === d.slices && document.body.dataset.measurementsLoaded !== undefined;
  }, null, { timeout: 20000 });
}

test('measurements saved as a TID 1500 SR, back after a reload and for another user of the organisation', async () => {
  const context = await browser.newContext(VIEWPORTS.desktop);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await open(page, 'alice');
  assert.equal(await page.evaluate(() => document.body.dataset.measurementsLoaded), '0');
  const shown = await dataset(page);
  // A length, an angle (first arm, then the third point) and a rectangle ROI.
  await page.keyboard.press('m');
  await drag(page, await cssOf(page, 100, 150), await cssOf(page, 300, 250));
  await page.keyboard.press('n');
  await drag(page, await cssOf(page, 350, 300), await cssOf(page, 250, 300));
  await page.mouse.click(...(await cssOf(page, 250, 180)));
  await page.keyboard.press('b');
  await drag(page, await cssOf(page, 200, 200), await cssOf(page, 260, 240));
  await page.waitForFunction(() => document.body.dataset.measurementsSaved === '3', null, { timeout: 10000 });
  const before = await marks(page);
  assert.deepEqual(before.map((m) => m.type).sort(), ['angle', 'length', 'rect']);
  const len = before.find((m) => m.type === 'length');
  const ang = before.find((m) => m.type === 'angle');
  const roi = before.find((m) => m.type === 'rect');
  assert.ok(Number(len.length) > 50, `length ${len.length}`);
  assert.ok(Number(roi.n) > 100, `ROI of ${roi.n} pixels`);

  // The document in the study: QIDO lists an SR series; its metadata is a TID 1500 report
  // whose length and angle equal what the viewer shows, on the image shown.
  const sr = await page.evaluate(async (s) => {
    const series = await (await fetch(`/dicom-web/studies/${s}/series?Modality=SR`, { headers: { accept: 'application/dicom+json' } })).json();
    const uid = series[0]['0020000E'].Value[0];
    return fetch(`/dicom-web/studies/${s}/series/${uid}/metadata`, { headers: { accept: 'application/dicom+json' } }).then((r) => r.json());
  }, study);
  assert.equal(sr.length, 1);
  const doc = sr[0];
  assert.equal(doc['00080016'].Value[0], SR_CLASS);
  assert.equal(doc['0040A504'].Value[0]['0040DB00'].Value[0], '1500');
  assert.equal(doc['0040A043'].Value[0]['00080100'].Value[0], '126000');
  const groups = doc['0040A730'].Value.find((i) => i['0040A043'].Value[0]['00080100'].Value[0] === '126010')['0040A730'].Value;
  assert.equal(groups.length, 3);
  const numOf = (code) => {
    for (const g of groups) {
      for (const i of g['0040A730'].Value) {
        if (i['0040A043']?.Value[0]['00080100'].Value[0] === code) {
          const mv = i['0040A300'].Value[0];
          return { value: Number(mv['0040A30A'].Value[0]), unit: mv['004008EA'].Value[0]['00080100'].Value[0], item: i };
        }
      }
    }
    return null;
  };
  const l = numOf('410668003');
  assert.equal(l.unit, 'mm');
  assert.ok(Math.abs(l.value - Number(len.length)) < 0.001, `SR length ${l.value}, shown ${len.length}`);
  const ref = l.item['0040A730'].Value[0]['0040A730'].Value[0]['00081199'].Value[0]['00081155'].Value[0];
  assert.equal(ref, shown.sop, 'the SCOORD references the image measured');
  const a = numOf('1483009');
  assert.equal(a.unit, 'deg');
  assert.ok(Math.abs(a.value - Number(ang.angle)) < 0.001);
  const mean = numOf('373098007');
  assert.equal(mean.unit, "[hnsf'U]");
  assert.ok(Math.abs(mean.value - Number(roi.mean)) < 1e-3, `SR mean ${mean.value}, shown ${roi.mean}`);

  // Reloaded: the same three marks with the same values.
  await page.reload();
  await open(page, null);
  assert.equal(await page.evaluate(() => document.body.dataset.measurementsLoaded), '3');
  assert.equal((await dataset(page)).sop, shown.sop);
  await page.waitForFunction(() => document.querySelectorAll('#marks g.mark').length === 3, null, { timeout: 10000 });
  const again = await marks(page);
  const l2 = again.find((m) => m.type === 'length'), a2 = again.find((m) => m.type === 'angle'), r2 = again.find((m) => m.type === 'rect');
  assert.ok(Math.abs(Number(l2.length) - Number(len.length)) < 0.01, `length ${l2.length} after reload, ${len.length} before`);
  assert.ok(Math.abs(Number(a2.angle) - Number(ang.angle)) < 0.01);
  assert.equal(r2.n, roi.n);
  assert.ok(Math.abs(Number(r2.mean) - Number(roi.mean)) < 1e-6);
  assert.match(await page.$eval('#marks g.length text', (t) => t.textContent), new RegExp(`^${Number(len.length).toFixed(1)} mm$`));

  // Delete removes them from the saved set too.
  await page.keyboard.press('Delete');
  await page.waitForFunction(() => document.body.dataset.measurementsSaved === '0', null, { timeout: 10000 });
  await page.reload();
  await open(page, null);
  assert.equal(await page.evaluate(() => document.body.dataset.measurementsLoaded), '0');
  // Drawn again for the second user.
  await page.keyboard.press('m');
  await drag(page, await cssOf(page, 100, 150), await cssOf(page, 300, 250));
  await page.waitForFunction(() => document.body.dataset.measurementsSaved === '1', null, { timeout: 10000 });
  const mine = (await marks(page))[0];
  assert.deepEqual(errors, []);
  await context.close();

  // Bob, of the same organisation, sees it with the same value.
  const ctx2 = await browser.newContext(VIEWPORTS.desktop);
  const page2 = await ctx2.newPage();
  await open(page2, 'bob');
  assert.equal(await page2.evaluate(() => document.body.dataset.measurementsLoaded), '1');
  await page2.waitForFunction(() => document.querySelectorAll('#marks g.length').length === 1, null, { timeout: 10000 });
  const his = (await marks(page2))[0];
  assert.ok(Math.abs(Number(his.length) - Number(mine.length)) < 0.01, `bob sees ${his.length}, alice drew ${mine.length}`);
  await ctx2.close();
});

test('bad measurement requests: 400 with a JSON body; another organisation: 404', async () => {
  const context = await browser.newContext(VIEWPORTS.desktop);
  const page = await context.newPage();
  await page.goto(`${site.base}/login`);
  await login(page, 'alice');
  const post = (s, body) => page.evaluate(async ([st, b]) => {
    const r = await fetch(`/api/v1/studies/${st}/measurements`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: b });
    return { status: r.status, body: await r.json().catch(() => null) };
  }, [s, body]);
  const sop = Object.keys(ct.images)[0];
  for (const body of [
    '{"measurements": [{"instance": "1.2.3.4", "kind": "length", "points": [[0,0],[1,1]], "length": 1}]}',
    `{"measurements": [{"instance": "${sop}", "kind": "length", "points": [[0,0]], "length": 1}]}`,
    `{"measurements": [{"instance": "${sop}", "kind": "circle", "points": [[0,0],[1,1]]}]}`,
    '{"measurements": [',
    '{"nope": []}',
  ]) {
    const r = await post(study, body);
    assert.equal(r.status, 400, body);
    assert.equal(r.body.error, 'bad-request', body);
  }
  await context.close();
  const ctx2 = await browser.newContext(VIEWPORTS.desktop);
  const p2 = await ctx2.newPage();
  await p2.goto(`${site.base}/login`);
  await login(p2, 'mallory');
  const r = await p2.evaluate(async ([st, s]) => {
    const x = await fetch(`/api/v1/studies/${st}/measurements`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ measurements: [{ instance: s, kind: 'length', points: [[0, 0], [1, 1]], length: 1 }] }) });
    return { status: x.status, body: await x.json() };
  }, [study, sop]);
  assert.equal(r.status, 404);
  assert.equal(r.body.error, 'not-found');
  await ctx2.close();
});
