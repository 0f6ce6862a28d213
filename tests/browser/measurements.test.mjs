// Saved measurements in real Chromium (issue 6): a length, an angle and a rectangle ROI drawn
// on a synthetic CT are saved by the server as a TID 1500 Comprehensive SR in the study (QIDO
// finds it, its content items checked here), come back with the same values after a reload,
// and are seen by a second user of the organisation; a user of another organisation cannot
// save any. A length drawn on a coronal reformat is saved as an SCOORD3D in patient
// coordinates (a Comprehensive 3D SR that DCMTK's dsrdump reads without complaint) and comes
// back on that coronal plane after a reload. Run by scripts/test-browser.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { ROOT, Site, synth, launch, VIEWPORTS, login } from './site.mjs';
import { join } from 'node:path';

const SR_CLASS = '1.2.840.10008.5.1.4.1.1.88.33';
const SR_3D_CLASS = '1.2.840.10008.5.1.4.1.1.88.34';
const PYTHON = process.env.VESALIUS_PYTHON || join(ROOT, '.venv/bin/python');
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

/** The CT's geometry as pydicom reads it: Frame of Reference, orientation, spacing, positions sorted along z. */
function ctGeometry() {
  const script = `
import json, sys, pydicom
out = []
for p in sys.argv[1:]:
    ds = pydicom.dcmread(p)
    if "PixelData" in ds:
        out.append({"for": ds.FrameOfReferenceUID, "iop": [float(x) for x in ds.ImageOrientationPatient],
                    "ipp": [float(x) for x in ds.ImagePositionPatient], "spacing": [float(x) for x in ds.PixelSpacing],
                    "rows": int(ds.Rows), "cols": int(ds.Columns)})
out.sort(key=lambda s: s["ipp"][2])
print(json.dumps(out))`;
  return JSON.parse(execFileSync(PYTHON, ['-c', script, ...ct.paths], { encoding: 'utf8' }));
}

/** The study's newest Measurement Report: DICOM JSON, and the Part 10 bytes (WADO-RS). */
async function newestReport(page) {
  return page.evaluate(async (s) => {
    const accept = { accept: 'application/dicom+json' };
    const series = await (await fetch(`/dicom-web/studies/${s}/series?Modality=SR`, { headers: accept })).json();
    const docs = [];
    for (const se of series) {
      const uid = se['0020000E'].Value[0];
      for (const d of await (await fetch(`/dicom-web/studies/${s}/series/${uid}/metadata`, { headers: accept })).json()) docs.push({ uid, d });
    }
    const when = ({ d }) => `${d['00080023'].Value[0]}${d['00080033'].Value[0]}`;
    docs.sort((a, b) => (when(a) < when(b) ? 1 : -1));
    const { uid, d } = docs[0];
    const sop = d['00080018'].Value[0];
    const r = await fetch(`/dicom-web/studies/${s}/series/${uid}/instances/${sop}`, { headers: { accept: 'multipart/related; type="application/dicom"' } });
    const body = new Uint8Array(await r.arrayBuffer());
    return { doc: d, type: r.headers.get('content-type'), bytes: Array.from(body) };
  }, study);
}

/** The single part of a multipart/related body. */
function onePart(type, bytes) {
  const boundary = /boundary="?([^";]+)"?/.exec(type)[1];
  const buf = Buffer.from(bytes);
  const start = buf.indexOf('\r\n\r\n') + 4;
  const end = buf.indexOf(`\r\n--${boundary}`, start);
  return buf.subarray(start, end);
}

test('a length on a coronal reformat: saved as an SCOORD3D in patient space, back on the coronal after a reload; one on the axial back on its acquired slice', async () => {
  const geo = ctGeometry();
  const [dr, dc] = geo[0].spacing;
  assert.deepEqual(geo[0].iop, [1, 0, 0, 0, 1, 0], 'the synthetic CT is axial');
  const dzSlices = (geo[geo.length - 1].ipp[2] - geo[0].ipp[2]) / (geo.length - 1);
  const dz = Math.min(dzSlices, dc); // the coronal's rows: every min(slice spacing, column spacing) from the head
  const context = await browser.newContext(VIEWPORTS.desktop);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await open(page, 'alice');
  const n0 = Number(await page.evaluate(() => document.body.dataset.measurementsLoaded));
  const coronal = async () => {
    await page.click('button[data-plane="coronal"]');
    await page.waitForFunction(() => { const d = document.querySelector('#view').dataset; return d.mode === 'coronal' && d.state === 'raw'; }, null, { timeout: 20000 });
    return dataset(page);
  };
  const d = await coronal();
  const j = Number(d.slice) - 1;
  const [w, hgt] = [Number(d.cols), Number(d.rows)];
  assert.equal(w, geo[0].cols);
  assert.equal(hgt, Math.floor(((geo.length - 1) * dzSlices) / dz + 1e-6) + 1);
  // A line from the patient's right and the head down to the left and the feet: its true
  // length from the CT's own geometry.
  const from = [Math.round(w * 0.2) + 0.5, Math.round(hgt * 0.15) + 0.5], to = [Math.round(w * 0.75) + 0.5, Math.round(hgt * 0.85) + 0.5];
  const truth = Math.hypot((to[0] - from[0]) * dc, (to[1] - from[1]) * dz);
  await page.keyboard.press('m');
  await drag(page, await cssOf(page, ...from), await cssOf(page, ...to));
  await page.waitForFunction((n) => document.body.dataset.measurementsSaved === String(n), n0 + 1, { timeout: 10000 });
  const drawn = (await marks(page)).find((m) => m.type === 'length');
  assert.ok(drawn, 'the length is drawn on the coronal');
  assert.ok(Math.abs(Number(drawn.length) - truth) <= dc, `coronal length ${drawn.length}, true ${truth}`);

  // The report: a Comprehensive 3D SR whose length is inferred from an SCOORD3D in the CT's
  // Frame of Reference, at the patient positions of the points drawn.
  const { doc, type, bytes } = await newestReport(page);
  assert.equal(doc['00080016'].Value[0], SR_3D_CLASS);
  const groups = doc['0040A730'].Value.find((i) => i['0040A043'].Value[0]['00080100'].Value[0] === '126010')['0040A730'].Value;
  assert.equal(groups.length, n0 + 1);
  const num = groups.flatMap((g) => g['0040A730'].Value).find((i) => i['0040A043']?.Value[0]['00080100'].Value[0] === '410668003'
    && i['0040A730'].Value[0]['0040A040'].Value[0] === 'SCOORD3D');
  assert.ok(num, 'a length with an SCOORD3D');
  assert.ok(Math.abs(Number(num['0040A300'].Value[0]['0040A30A'].Value[0]) - Number(drawn.length)) < 1e-3, 'the value shown is the value saved');
  const sc = num['0040A730'].Value[0];
  assert.equal(sc['30060024'].Value[0], geo[0].for);
  assert.equal(sc['00700023'].Value[0], 'POLYLINE');
  const p = sc['00700022'].Value;
  assert.equal(p.length, 6);
  const [a, b] = [p.slice(0, 3), p.slice(3, 6)];
  const pts = JSON.parse(drawn.points);
  const top = geo[geo.length - 1].ipp;
  const expect = ([x, y]) => [top[0] + (x - 0.5) * dc, top[1] + j * dr, top[2] - (y - 0.5) * dz];
  for (const [got, want] of [[a, expect(pts[0])], [b, expect(pts[1])]]) {
    assert.ok(Math.hypot(...got.map((x, c) => x - want[c])) < 0.01, `SCOORD3D point ${got}, expected ${want}`);
  }
  assert.ok(Math.abs(Math.hypot(...a.map((x, c) => x - b[c])) - truth) <= dc);
  // DCMTK's SR reader checks the Comprehensive 3D SR's content constraints; pydicom reads it.
  const file = join(site.tmp, 'report3d.dcm');
  writeFileSync(file, onePart(type, bytes));
  const dump = spawnSync('dsrdump', [file], { encoding: 'utf8' });
  assert.equal(dump.status, 0, `dsrdump: ${dump.stderr}`);
  // (Its VR checker does not know UTF-8 and says so; anything else is a complaint.)
  const complaints = dump.stderr.split('\n').filter((l) => l.trim() && !/VR checker does not support this Specific Character Set/.test(l));
  assert.deepEqual(complaints, [], dump.stderr);
  assert.match(dump.stdout, /Comprehensive 3D SR/);
  assert.match(dump.stdout, /SCOORD3D/);
  const py = execFileSync(PYTHON, ['-c', 'import pydicom, sys\nds = pydicom.dcmread(sys.argv[1])\nprint(ds.SOPClassUID, ds.file_meta.MediaStorageSOPClassUID)', file], { encoding: 'utf8' }).trim();
  assert.equal(py, `${SR_3D_CLASS} ${SR_3D_CLASS}`);

  // Reloaded: back on the same coronal plane with the same value; not on the acquired slices.
  await page.reload();
  await open(page, null);
  assert.equal(await page.evaluate(() => document.body.dataset.measurementsLoaded), String(n0 + 1));
  const d2 = await coronal();
  assert.equal(d2.slice, d.slice);
  await page.waitForFunction(() => document.querySelectorAll('#marks g.length').length === 1, null, { timeout: 10000 });
  const again = (await marks(page))[0];
  assert.ok(Math.abs(Number(again.length) - Number(drawn.length)) < 0.01, `after the reload ${again.length}, drawn ${drawn.length}`);
  assert.ok(Math.abs(Number(again.length) - truth) <= dc);
  JSON.parse(again.points).forEach((q, i) => assert.ok(Math.hypot(q[0] - pts[i][0], q[1] - pts[i][1]) < 0.01, `point ${q} was ${pts[i]}`));
  assert.match(await page.$eval('#marks g.length text', (t) => t.textContent), new RegExp(`^${Number(drawn.length).toFixed(1)} mm$`));
  // Another coronal plane does not show it.
  await page.keyboard.press('ArrowDown');
  await page.waitForFunction((s) => { const x = document.querySelector('#view').dataset; return x.slice !== s && x.state === 'raw'; }, d.slice, { timeout: 10000 });
  assert.equal(await page.$$eval('#marks g.mark', (g) => g.length), 0);
  await page.keyboard.press('ArrowUp');
  await page.waitForFunction(() => document.querySelectorAll('#marks g.length').length === 1, null, { timeout: 10000 });

  // Deleted there, it is gone from the saved set.
  await page.keyboard.press('Delete');
  await page.waitForFunction((n) => document.body.dataset.measurementsSaved === String(n), n0, { timeout: 10000 });

  // A length on the axial reformat (the plane through the slice shown) lies on that acquired
  // slice: after a reload the stack shows it there, with the same value.
  const plane = async (name) => {
    await page.click(`button[data-plane="${name}"]`);
    await page.waitForFunction((m) => { const x = document.querySelector('#view').dataset; return x.mode === m && x.state === 'raw'; }, name, { timeout: 20000 });
    return dataset(page);
  };
  const stackSop = (await plane('stack')).sop;
  await plane('axial');
  await page.keyboard.press('m');
  await drag(page, await cssOf(page, 100.5, 120.5), await cssOf(page, 300.5, 200.5));
  await page.waitForFunction((n) => document.body.dataset.measurementsSaved === String(n), n0 + 1, { timeout: 10000 });
  const axialMark = (await marks(page)).find((m) => m.type === 'length');
  await page.reload();
  await open(page, null);
  const st = await dataset(page);
  assert.equal(st.mode, 'stack');
  assert.equal(st.sop, stackSop);
  // (The slice also holds the first test's length.)
  const near = (m) => Math.abs(Number(m.length) - Number(axialMark.length)) < 0.01;
  await page.waitForFunction((want) => [...document.querySelectorAll('#marks g.length')].some((g) => Math.abs(Number(g.dataset.length) - want) < 0.01),
    Number(axialMark.length), { timeout: 10000 });
  const onSlice = (await marks(page)).find(near);
  JSON.parse(onSlice.points).forEach((q, i) => assert.ok(Math.hypot(q[0] - JSON.parse(axialMark.points)[i][0], q[1] - JSON.parse(axialMark.points)[i][1]) < 0.01));
  // Deleted on the slice (with what else is on it), it is gone from the axial plane too, and
  // from the saved set.
  const onThisSlice = (await marks(page)).length;
  await page.keyboard.press('Delete');
  await page.waitForFunction((n) => document.body.dataset.measurementsSaved === String(n), n0 + 1 - onThisSlice, { timeout: 10000 });
  await plane('axial');
  assert.equal(await page.$$eval('#marks g.mark', (g) => g.length), 0);
  assert.deepEqual(errors, []);
  await context.close();
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
