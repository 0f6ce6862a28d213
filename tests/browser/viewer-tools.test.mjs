// The viewer's tools in real Chromium (issue 6): layouts with linked scrolling, coronal and
// sagittal reformats and a thick-slab MIP checked pixel by pixel against the pydicom volume
// (expected.py --volume), an angle of known geometry, ROI statistics against numpy's over the
// same mask (expected.py --roi), and a key image saved as a KO document found through QIDO,
// then unmarked (an IOCM rejection note hides that KO).
// Desktop (mouse, keys) and phone (touch, buttons). Run by scripts/test-browser.
// Screenshots: target/browser-artifacts/tools-*.png.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ARTIFACTS, ROOT, Site, synth, launch, VIEWPORTS, login } from './site.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const PYTHON = process.env.VESALIUS_PYTHON || join(ROOT, '.venv/bin/python');
const KO_CLASS = '1.2.840.10008.5.1.4.1.1.88.59';
const SLICES = 24;

/** The linear VOI function of PS3.3 C.11.2.1.2.1 to 0..255, written here again on purpose. */
function linearVoi(x, c, w) {
  if (w <= 1) return x <= c - 0.5 ? 0 : 255;
  if (x <= c - 0.5 - (w - 1) / 2) return 0;
  if (x > c - 0.5 + (w - 1) / 2) return 255;
  return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255;
}

let site, ct, browser, study, vol;

before(async () => {
  site = await Site.start();
  site.user('default', 'alice');
  ct = synth(join(site.tmp, 'ct'), 11, SLICES);
  site.import(ct.dir);
  study = Object.values(ct.images)[0].study;
  // The volume as pydicom reads it, sorted along the slice normal (feet first).
  const out = join(site.tmp, 'volume.i16');
  const info = JSON.parse(execFileSync(PYTHON, [join(here, 'expected.py'), '--volume', out, ...ct.paths], { encoding: 'utf8' }));
  const buf = readFileSync(out);
  const [n, rows, cols] = info.shape;
  vol = { ...info, n, rows, cols, data: new Int16Array(buf.buffer, buf.byteOffset, n * rows * cols) };
  vol.at = (k, j, i) => vol.data[(k * rows + j) * cols + i];
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (site) await site.stop();
});

const sel = (k) => (k === 0 ? '#view' : `#view-${k}`);
const dataset = (page, k = 0) => page.$eval(sel(k), (c) => ({ ...c.dataset }));

async function waitFor(page, k, pred, arg, what) {
  // The predicate runs here, on copies of the viewport's data attributes read every 25 ms: the
  // page's Content-Security-Policy forbids evaluating it there (`new Function`), which
  // Chromium 156.0.8078.129 enforces on code Playwright runs in the page.
  const deadline = Date.now() + 20000;
  let last = null;
  let error = 'timed out after 20000 ms';
  while (Date.now() < deadline) {
    try {
      last = await page.evaluate((s) => {
        const d = document.querySelector(s)?.dataset;
        return d ? { ...d } : null;
      }, sel(k));
      if (last && pred(last, arg)) return;
    } catch (e) {
      error = e.message;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const banners = await page.$$eval('.banner, .toast', (b) => b.map((x) => x.textContent)).catch(() => []);
  throw new Error(`${what}: ${error}; viewport ${k}: ${JSON.stringify(last)}; messages: ${JSON.stringify(banners)}`);
}

/**
 * Checks the canvas of viewport `k` against `expect(u, v)` (the modality value of image pixel
 * (u, v)) at `points`, through the viewport's window: ±1 grey level.
 */
async function checkImage(page, k, label, points, expect, plane = null) {
  const d = await dataset(page, k);
  if (plane) assert.equal(d.slice, plane, `${label}: still at the plane checked`);
  const [c, w] = [Number(d.center), Number(d.width)];
  const [sx, sy, ox, oy] = [Number(d.scale), Number(d.scaleY), Number(d.ox), Number(d.oy)];
  const size = await page.$eval(sel(k), (cv) => [cv.width, cv.height]);
  const pts = points
    .map(([u, v]) => ({ u, v, x: Math.floor(ox + (u + 0.5) * sx), y: Math.floor(oy + (v + 0.5) * sy) }))
    .filter((p) => p.x >= 0 && p.y >= 0 && p.x < size[0] && p.y < size[1]);
  assert.ok(pts.length >= 10, `${label}: ${pts.length} sample points on the canvas`);
  const got = await page.$eval(sel(k), (cv, ps) => {
    const ctx = cv.getContext('2d');
    return ps.map((p) => Array.from(ctx.getImageData(p.x, p.y, 1, 1).data));
  }, pts);
  const bad = [];
  let between = 0;
  pts.forEach((p, i) => {
    // One value, or the values any of which is right (an interpolated or averaged value is
    // stored as one of the two integers around it).
    const xs = [expect(p.u, p.v)].flat();
    const wants = xs.map((x) => linearVoi(x, c, w));
    const [r, g, b] = got[i];
    if (wants.some((want) => want > 0 && want < 255)) between++;
    if (wants.every((want) => Math.abs(r - want) > 1) || r !== g || g !== b) bad.push(`(${p.u},${p.v}) value ${xs.join(' or ')}: drawn ${r}, expected ${wants.map((x) => x.toFixed(2)).join(' or ')}`);
  });
  const after = await dataset(page, k);
  assert.equal(after.slice, d.slice, `${label}: the plane did not change while being read`);
  if (bad.length) await shot(page, `FAILED-${label.replace(/\W+/g, '-')}`);
  assert.deepEqual(bad, [], `${label}: canvas pixels differ from the windowed pydicom values (${JSON.stringify(d)})`);
  assert.ok(between >= 3, `${label}: ${between} points between black and white`);
  return pts.length;
}

/** The position in slices (from the first, feet) of row y of a coronal/sagittal plane sampled every `step` mm from the head. */
function slicePos(y, step) {
  return vol.n - 1 - (y * step) / vol.spacing[2];
}

/**
 * The linear interpolation, at row y, of `at(k)` between the two slices around it: the
 * integers either side (the viewer stores the rounded value), or the slice's value on a slice.
 */
function interpolated(y, step, at) {
  const t = slicePos(y, step);
  let k0 = Math.floor(t + 1e-9);
  k0 = Math.max(0, Math.min(vol.n - 1, k0));
  const w = t - k0;
  if (w < 1e-9 || k0 === vol.n - 1) return at(k0);
  const x = at(k0) + w * (at(k0 + 1) - at(k0));
  return [Math.floor(x), Math.ceil(x)];
}

/** A grid over a width×height image plus points in several value ranges. */
function samplePoints(width, height, value) {
  const pts = [];
  for (let a = 0; a < 9; a++) for (let b = 0; b < 9; b++) pts.push([Math.floor((width * (a + 0.5)) / 9), Math.floor((height * (b + 0.5)) / 9)]);
  for (const [lo, hi] of [[-200, 0], [0, 80], [80, 400], [400, 4000]]) {
    let found = 0;
    for (let v = 0; v < height && found < 3; v += 3) {
      for (let u = 0; u < width && found < 3; u += 37) {
        const x = [value(u, v)].flat()[0];
        if (x >= lo && x < hi) { pts.push([u, v]); found++; }
      }
    }
  }
  return pts;
}

/** The code value of a document's title (Concept Name Code Sequence). */
const title = (m) => m['0040A043'].Value[0]['00080100'].Value[0];
/** The SOP Instance UIDs a KO's IMAGE items reference. */
const imageRefs = (m) => m['0040A730'].Value
  .filter((i) => i['0040A040'].Value[0] === 'IMAGE')
  .map((i) => i['00081199'].Value[0]['00081155'].Value[0]);

async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `tools-${name}.png`) });
}

/** A button of the toolbar: clicked (desktop) or tapped (phone). */
async function press(page, phone, selector) {
  if (phone) await page.tap(selector); else await page.click(selector);
}

/** A drag on viewport `k` between CSS points: mouse, or one finger through CDP. */
async function drag(page, cdp, from, to, steps = 8) {
  if (!cdp) {
    await page.mouse.move(from[0], from[1]);
    await page.mouse.down();
    for (let s = 1; s <= steps; s++) await page.mouse.move(from[0] + ((to[0] - from[0]) * s) / steps, from[1] + ((to[1] - from[1]) * s) / steps);
    await page.mouse.up();
    return;
  }
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchStart', touchPoints: [{ x: from[0], y: from[1], id: 1 }] });
  for (let s = 1; s <= steps; s++) {
    await cdp.send('Input.dispatchTouchEvent', { type: 'touchMove', touchPoints: [{ x: from[0] + ((to[0] - from[0]) * s) / steps, y: from[1] + ((to[1] - from[1]) * s) / steps, id: 1 }] });
  }
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchEnd', touchPoints: [] });
}

async function tapAt(page, cdp, at) {
  if (!cdp) { await page.mouse.click(at[0], at[1]); return; }
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchStart', touchPoints: [{ x: at[0], y: at[1], id: 1 }] });
  await cdp.send('Input.dispatchTouchEvent', { type: 'touchEnd', touchPoints: [] });
}

/** The CSS position of image point (x, y) of viewport `k`. */
async function cssOf(page, k, x, y) {
  const d = await dataset(page, k);
  const box = await page.locator(sel(k)).boundingBox();
  const dpr = await page.evaluate(() => window.devicePixelRatio);
  return [box.x + (Number(d.ox) + x * Number(d.scale)) / dpr, box.y + (Number(d.oy) + y * Number(d.scaleY)) / dpr];
}

for (const [name, options] of Object.entries(VIEWPORTS)) {
  const phone = name === 'phone';
  test(`${name}: layouts, reformats, MIP, angle, ROI, key image`, async () => {
    const context = await browser.newContext(options);
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    const cdp = phone ? await context.newCDPSession(page) : null;

    await page.goto(`${site.base}/view/${study}`);
    await page.waitForURL(/\/login/);
    await login(page, 'alice', /\/view\//);
    await waitFor(page, 0, (d) => d.state === 'raw' && d.slices && d.loaded === d.slices, null, 'all slices loaded');
    const middle = Number((await dataset(page)).slice);

    // --- 2×2 layout, linked scrolling ---------------------------------------------------
    if (phone) await press(page, phone, 'button[data-layout="2x2"]');
    else { await page.keyboard.press('l'); await page.keyboard.press('l'); }
    for (const k of [1, 2, 3]) {
      await waitFor(page, k, (d) => d.state === 'raw', null, `viewport ${k} drawn`);
    }
    assert.equal(await page.$$eval('#viewports .stage', (s) => s.length), 4);
    assert.equal((await dataset(page, 0)).active, 'true');
    // Scroll the first viewport three slices on: the others (same series, same Frame of
    // Reference, parallel planes) follow to the same position.
    const box0 = await page.locator('#view').boundingBox();
    if (phone) {
      await press(page, phone, 'button[data-tool="scroll"]');
      for (let s = 0; s < 3; s++) {
        await drag(page, cdp, [box0.x + box0.width / 2, box0.y + box0.height * 0.7], [box0.x + box0.width / 2, box0.y + box0.height * 0.7 - 32], 4);
      }
    } else {
      await page.mouse.move(box0.x + box0.width / 2, box0.y + box0.height / 2);
      for (let s = 0; s < 3; s++) await page.mouse.wheel(0, 100);
    }
    const moved = Number((await dataset(page, 0)).slice);
    assert.ok(moved > middle, `the first viewport moved on (${middle} → ${moved})`);
    for (const k of [1, 2, 3]) {
      await waitFor(page, k, (d, a) => d.slice === String(a), moved, `viewport ${k} follows to slice ${moved}`);
    }
    // The second viewport made coronal: an axial scroll does not move it (orthogonal planes).
    const box1 = await page.locator('#view-1').boundingBox();
    await tapAt(page, cdp, [box1.x + 8, box1.y + box1.height - 8]);
    await waitFor(page, 1, (d) => d.active === 'true', null, 'the second viewport is active');
    await press(page, phone, 'button[data-plane="coronal"]');
    await waitFor(page, 1, (d) => d.mode === 'coronal' && d.state === 'raw', null, 'coronal in viewport 2');
    const corSlice = (await dataset(page, 1)).slice;
    await tapAt(page, cdp, [box0.x + 8, box0.y + box0.height - 8]);
    await waitFor(page, 0, (d) => d.active === 'true', null, 'the first viewport is active again');
    await page.keyboard.press('ArrowDown');
    await waitFor(page, 0, (d, a) => d.slice === String(a), moved + 1, 'the first viewport moved');
    await waitFor(page, 2, (d, a) => d.slice === String(a), moved + 1, 'the third follows');
    assert.equal((await dataset(page, 1)).slice, corSlice, 'the coronal viewport stays');
    await shot(page, `${name}-01-layout-2x2`);
    // Linked scrolling off: the others stay.
    await press(page, phone, 'button[data-action="link"]');
    await page.keyboard.press('ArrowDown');
    await waitFor(page, 0, (d, a) => d.slice === String(a), moved + 2, 'the first viewport moved');
    assert.equal((await dataset(page, 2)).slice, String(moved + 1), 'unlinked: the third stays');
    await press(page, phone, 'button[data-action="link"]');
    await press(page, phone, 'button[data-layout="1x1"]');
    assert.equal(await page.$$eval('#viewports .stage', (s) => s.length), 1);

    // --- coronal and sagittal reformats against the pydicom volume ----------------------
    const dicomWindow = async () => { await press(page, phone, 'button[data-preset="default"]'); };
    await dicomWindow();
    await press(page, phone, 'button[data-plane="coronal"]');
    await waitFor(page, 0, (d) => d.mode === 'coronal' && d.state === 'raw', null, 'coronal');
    for (const step of [0, 1]) {
      if (step) {
        // Ten planes back: wait for the plane, not just a drawn image (the previous one is
        // still 'raw' until the next frame paints).
        const at = Number((await dataset(page)).slice);
        await page.keyboard.press('PageUp');
        await waitFor(page, 0, (d, a) => d.state === 'raw' && d.slice === String(a), at - 10, 'coronal moved');
      }
      const d = await dataset(page);
      const j = Number(d.slice) - 1; // the coronal plane holds the row index fixed
      assert.equal(Number(d.slices), vol.rows);
      // Interpolated between slices: the slice axis sampled every min(slice spacing, column
      // spacing) from the top (head) slice, so the drawn pixels are square.
      const dz = Math.min(vol.spacing[2], vol.spacing[1]);
      const height = Math.floor(((vol.n - 1) * vol.spacing[2]) / dz + 1e-6) + 1;
      assert.equal(Number(d.cols), vol.cols); assert.equal(Number(d.rows), height);
      const aspect = Number(d.scaleY) / Number(d.scale);
      assert.ok(Math.abs(aspect - dz / vol.spacing[1]) < 1e-6, `coronal aspect ${aspect}`);
      const value = (u, y) => interpolated(y, dz, (k) => vol.at(k, j, u)); // head at the top, patient's left on the right
      const pts = samplePoints(vol.cols, height, value);
      if (vol.spacing[2] > vol.spacing[1]) {
        // Rows between two slices: the value is neither slice's.
        const between = pts.filter(([u, y]) => { const t = slicePos(y, dz); return t % 1 > 0.1 && t % 1 < 0.9 && Math.abs(vol.at(Math.floor(t), j, u) - vol.at(Math.ceil(t), j, u)) > 20; });
        assert.ok(between.length >= 5, `${between.length} sample points between two slices of different values`);
        for (let y = 0; y < height && pts.length < 200; y++) {
          const t = slicePos(y, dz);
          if (t % 1 > 0.2 && t % 1 < 0.8) for (let u = 8; u < vol.cols; u += 61) pts.push([u, y]);
        }
      }
      await checkImage(page, 0, `${name} coronal ${j + 1}`, pts, value, d.slice);
    }
    assert.deepEqual(await page.$$eval('#or-left, #or-right, #or-top, #or-bottom', (es) => es.map((e) => e.textContent)), ['R', 'L', 'H', 'F']);
    await shot(page, `${name}-02-coronal`);
    await press(page, phone, 'button[data-plane="sagittal"]');
    await waitFor(page, 0, (d) => d.mode === 'sagittal' && d.state === 'raw', null, 'sagittal');
    {
      const d = await dataset(page);
      const i = Number(d.slice) - 1;
      const step = Math.min(vol.spacing[2], vol.spacing[0]);
      const height = Math.floor(((vol.n - 1) * vol.spacing[2]) / step + 1e-6) + 1;
      assert.equal(Number(d.cols), vol.rows); assert.equal(Number(d.rows), height);
      const value = (u, y) => interpolated(y, step, (k) => vol.at(k, u, i)); // anterior on the left
      await checkImage(page, 0, `${name} sagittal ${i + 1}`, samplePoints(vol.rows, height, value), value, d.slice);
    }
    assert.deepEqual(await page.$$eval('#or-left, #or-right, #or-top, #or-bottom', (es) => es.map((e) => e.textContent)), ['A', 'P', 'H', 'F']);
    await shot(page, `${name}-03-sagittal`);

    // --- thick-slab MIP (axial, 20 mm: the slices whose centres are within 10 mm) --------
    await press(page, phone, 'button[data-plane="axial"]');
    await waitFor(page, 0, (d) => d.mode === 'axial' && d.state === 'raw', null, 'axial');
    await page.fill('#slab', '20');
    await page.dispatchEvent('#slab', 'change');
    await press(page, phone, 'button[data-action="mip"]');
    await waitFor(page, 0, (d) => d.mip === 'true' && d.state === 'raw' && d.range, null, 'MIP');
    {
      const d = await dataset(page);
      const k = Number(d.slice) - 1;
      const h = Math.floor(20 / (2 * vol.spacing[2]));
      const [lo, hi] = d.range.split('-').map((x) => Number(x) - 1);
      assert.deepEqual([lo, hi], [Math.max(0, k - h), Math.min(vol.n - 1, k + h)], `slab of ${h} slices each side`);
      assert.ok(hi > lo, 'the slab covers more than one slice');
      const value = (u, v) => { let m = -Infinity; for (let s = lo; s <= hi; s++) m = Math.max(m, vol.at(s, v, u)); return m; };
      const pts = samplePoints(vol.cols, vol.rows, value);
      const differs = pts.filter(([u, v]) => value(u, v) !== vol.at(k, v, u)).length;
      assert.ok(differs >= 5, `${differs} sample points where the MIP differs from the slice itself`);
      await checkImage(page, 0, `${name} MIP`, pts, value, d.slice);
    }
    await shot(page, `${name}-04-mip`);
    // MinIP and average of the same slab.
    for (const [action, proj] of [['minip', 'min'], ['average', 'mean']]) {
      await press(page, phone, `button[data-action="${action}"]`);
      await waitFor(page, 0, (d, a) => d.projection === a && d.state === 'raw' && d.range, proj, proj);
      const d = await dataset(page);
      const k = Number(d.slice) - 1;
      const [lo, hi] = d.range.split('-').map((x) => Number(x) - 1);
      const h = Math.floor(20 / (2 * vol.spacing[2]));
      assert.deepEqual([lo, hi], [Math.max(0, k - h), Math.min(vol.n - 1, k + h)]);
      const over = (u, v) => { const xs = []; for (let s = lo; s <= hi; s++) xs.push(vol.at(s, v, u)); return xs; };
      const value = proj === 'min'
        ? (u, v) => Math.min(...over(u, v))
        : (u, v) => { const xs = over(u, v); const m = xs.reduce((a, b) => a + b, 0) / xs.length; return [Math.floor(m), Math.ceil(m)]; };
      const pts = samplePoints(vol.cols, vol.rows, value);
      const differs = pts.filter(([u, v]) => Math.abs([value(u, v)].flat()[0] - vol.at(k, v, u)) > 2).length;
      assert.ok(differs >= 5, `${differs} sample points where the ${proj} slab differs from the slice itself`);
      await checkImage(page, 0, `${name} ${proj} slab`, pts, value, d.slice);
      assert.match(await page.$eval('#ov-bl', (e) => e.textContent), proj === 'min' ? /MinIP 20 mm/ : /Average 20 mm/);
    }
    await shot(page, `${name}-04b-minip-average`);
    await press(page, phone, 'button[data-action="average"]');
    await waitFor(page, 0, (d) => d.mip === 'false', null, 'slab off');

    // --- angle along the image axes: 90° ---------------------------------------------------
    await press(page, phone, 'button[data-plane="stack"]');
    await waitFor(page, 0, (d) => d.mode === 'stack' && d.state === 'raw', null, 'stack');
    await press(page, phone, 'button[data-tool="angle"]');
    const vtx = await cssOf(page, 0, 200, 300);
    const armA = await cssOf(page, 0, 300, 300);
    const armC = await cssOf(page, 0, 200, 200);
    await drag(page, cdp, armA, vtx);
    await tapAt(page, cdp, armC);
    await page.waitForSelector('#marks g.angle[data-angle]');
    const ang = await page.$eval('#marks g.angle', (g) => ({ ...g.dataset }));
    assert.ok(Math.abs(Number(ang.angle) - 90) < 0.5, `angle ${ang.angle}°`);
    assert.match(await page.$eval('#marks g.angle text', (t) => t.textContent), /^(89\.\d|90\.\d)°$/);
    await shot(page, `${name}-05-angle`);
    await page.keyboard.press('Delete');
    assert.equal(await page.$$eval('#marks g', (g) => g.length), 0);

    // --- ROI statistics against numpy's over the same mask -------------------------------
    const shown = (await dataset(page)).sop;
    const file = ct.paths.find((p) => readFileSync(p).includes(Buffer.from(shown)));
    for (const [tool, shape, a, b] of [['ellipse', 'ellipse', [180, 200], [330, 310]], ['rect', 'rect', [240, 150], [300, 260]]]) {
      await press(page, phone, `button[data-tool="${tool}"]`);
      await drag(page, cdp, await cssOf(page, 0, ...a), await cssOf(page, 0, ...b));
      await page.waitForSelector(`#marks g.${shape}[data-n]`);
      const roi = await page.$eval(`#marks g.${shape}`, (g) => ({ ...g.dataset }));
      const [p0, p1] = JSON.parse(roi.points);
      const np = JSON.parse(execFileSync(PYTHON, [join(here, 'expected.py'), '--roi', file, shape, ...p0.map(String), ...p1.map(String)], { encoding: 'utf8' }));
      assert.ok(np.n > 200, `${shape}: ${np.n} pixels`);
      assert.equal(Number(roi.n), np.n, `${shape}: pixel count`);
      assert.ok(Math.abs(Number(roi.mean) - np.mean) <= 0.5, `${shape}: mean ${roi.mean} vs numpy ${np.mean}`);
      assert.ok(Math.abs(Number(roi.sd) - np.sd) <= 0.5, `${shape}: SD ${roi.sd} vs numpy ${np.sd}`);
      assert.equal(Number(roi.min), np.min); assert.equal(Number(roi.max), np.max);
      const area = np.n * vol.spacing[0] * vol.spacing[1];
      assert.ok(Math.abs(Number(roi.area) - area) < 1e-6, `${shape}: area ${roi.area} mm²`);
      assert.match(await page.$eval(`#marks g.${shape} text`, (t) => t.textContent), /mean -?\d+\.\d HU SD \d+\.\d/);
      await shot(page, `${name}-06-roi-${shape}`);
      await page.keyboard.press('Delete');
    }

    // --- key image: saved as a KO document, found through QIDO -----------------------------
    if (!phone) {
      // Bad requests: a clear 400 with a JSON body, nothing stored.
      const { csrf } = await page.evaluate(() => fetch('/api/v1/auth/me').then((x) => x.json()));
      const koCount = async () => {
        const t = await (await page.request.get(`${site.base}/dicom-web/studies/${study}/series?Modality=KO`)).text();
        return t ? JSON.parse(t).length : 0;
      };
      const kosBefore = await koCount();
      const url = `${site.base}/api/v1/studies/${study}/key-images`;
      for (const [body, why] of [
        [JSON.stringify({ instances: ['1.2.3.4'] }), /not an instance of study/],
        [JSON.stringify({ instances: [] }), /1 to 1000/],
        [JSON.stringify({ instances: ['not a uid'] }), /not a UID/],
        [JSON.stringify({ sops: ['1.2.3'] }), /not a key-image request/],
        ['{"instances": [', /not a key-image request/],
      ]) {
        const res = await page.request.post(url, { headers: { 'X-CSRF-Token': csrf, 'Content-Type': 'application/json' }, data: body });
        assert.equal(res.status(), 400, body);
        const j = await res.json();
        assert.equal(j.error, 'bad-request', body);
        assert.match(j.message, why, body);
      }
      const ghost = await page.request.post(`${site.base}/api/v1/studies/1.2.3.999/key-images`, {
        headers: { 'X-CSRF-Token': csrf, 'Content-Type': 'application/json' }, data: JSON.stringify({ instances: ['1.2.3.4'] }),
      });
      assert.equal(ghost.status(), 404, 'a study that does not exist');
      assert.equal((await ghost.json()).error, 'not-found');
      assert.equal(await koCount(), kosBefore, 'no key object stored by the bad requests');
    }
    const marked = (await dataset(page)).sop;
    const before = await (await page.request.get(`${site.base}/dicom-web/studies/${study}/series?Modality=KO`)).text();
    const known = before ? JSON.parse(before).length : 0;
    if (phone) await press(page, phone, 'button[data-action="key-image"]');
    else await page.keyboard.press('Shift+K');
    await waitFor(page, 0, (d) => d.key === 'true', null, 'the image is marked as a key image');
    assert.match(await page.textContent('#ov-bl'), /Key image/);
    const r = await page.request.get(`${site.base}/dicom-web/studies/${study}/series?Modality=KO`, { headers: { Accept: 'application/dicom+json' } });
    assert.equal(r.status(), 200);
    const kos = await r.json();
    assert.equal(kos.length, known + 1, 'one more KO series');
    const refs = [];
    const markedBy = []; // the KOs that flag the marked image
    for (const s of kos) {
      const uid = s['0020000E'].Value[0];
      const metas = await (await page.request.get(`${site.base}/dicom-web/studies/${study}/series/${uid}/metadata`, { headers: { Accept: 'application/dicom+json' } })).json();
      for (const m of metas) {
        assert.equal(m['00080016'].Value[0], KO_CLASS);
        // The desktop run's unmark left a rejection note (below) for the phone run to see.
        if (title(m) === '113001') continue;
        assert.equal(title(m), '113000', 'titled (113000, DCM) Of Interest');
        const images = imageRefs(m);
        refs.push(...images);
        if (images.includes(marked)) markedBy.push(m['00080018'].Value[0]);
      }
    }
    assert.ok(refs.includes(marked), `the KO references the marked image ${marked}: ${refs}`);
    await shot(page, `${name}-07-key-image`);
    // Opened again, the viewer shows the image as a key image (read from the KO).
    await page.reload();
    await waitFor(page, 0, (d) => d.state === 'raw', null, 'reopened');
    // A KO series in the strip (no thumbnail: a star) goes to the next key image (the other
    // test's too: as many presses as there are key images).
    assert.equal(await page.$$eval('button.series[data-modality="KO"] img', (i) => i.length), 0);
    for (let n = 0; n <= known; n++) {
      const at = (await dataset(page)).slice;
      await press(page, phone, 'button.series[data-modality="KO"]');
      await waitFor(page, 0, (d, a) => d.key === 'true' && (d.slice !== a[0] || d.sop === a[1]), [at, marked], 'to the next key image');
      if ((await dataset(page)).sop === marked) break;
    }
    await waitFor(page, 0, (d, a) => d.sop === a && d.key === 'true', marked, 'the key image is flagged after reopening');

    // --- unmarked: the same control toggles --------------------------------------------------
    if (phone) await press(page, phone, 'button[data-action="key-image"]');
    else await page.keyboard.press('Shift+K');
    await waitFor(page, 0, (d, a) => d.sop === a && d.key === 'false', marked, 'the key image is unmarked');
    assert.doesNotMatch(await page.textContent('#ov-bl'), /Key image/);
    // QIDO: the KO documents that flagged it are hidden (the archive honours the IHE IOCM
    // rejection note); the rejection note, titled (113001, DCM), is listed and names them as
    // COMPOSITE items and in its evidence; no KO left flags the image.
    const listed = [];
    const notes = [];
    const left = await (await page.request.get(`${site.base}/dicom-web/studies/${study}/series?Modality=KO`, { headers: { Accept: 'application/dicom+json' } })).json();
    for (const s of left) {
      const uid = s['0020000E'].Value[0];
      const metas = await (await page.request.get(`${site.base}/dicom-web/studies/${study}/series/${uid}/metadata`, { headers: { Accept: 'application/dicom+json' } })).json();
      for (const m of metas) {
        listed.push(m['00080018'].Value[0]);
        if (title(m) === '113001') notes.push(m);
        else assert.ok(!imageRefs(m).includes(marked), `a KO left flags ${marked}`);
      }
    }
    for (const sop of markedBy) assert.ok(!listed.includes(sop), `the withdrawn KO ${sop} is hidden`);
    const withdrawn = notes.flatMap((m) => m['0040A730'].Value
      .filter((i) => i['0040A040'].Value[0] === 'COMPOSITE')
      .map((i) => i['00081199'].Value[0]['00081155'].Value[0]));
    for (const sop of markedBy) assert.ok(withdrawn.includes(sop), `a rejection note lists ${sop}: ${withdrawn}`);
    const evidence = notes.flatMap((m) => m['0040A375'].Value.flatMap((st) => st['00081115'].Value
      .flatMap((se) => se['00081199'].Value.map((r) => r['00081155'].Value[0]))));
    for (const sop of markedBy) assert.ok(evidence.includes(sop), `the note's evidence lists ${sop}`);
    // The image itself is still there.
    const inst = await (await page.request.get(`${site.base}/dicom-web/studies/${study}/instances?SOPInstanceUID=${marked}`, { headers: { Accept: 'application/dicom+json' } })).json();
    assert.equal(inst.length, 1, 'the image is not hidden');
    await shot(page, `${name}-08-key-image-unmarked`);
    // Reloaded: still not a key image.
    await page.reload();
    await waitFor(page, 0, (d) => d.state === 'raw', null, 'reopened after the unmark');
    // To the marked slice, one key at a time, each awaited (a press read back too early let
    // the walk overshoot once in a full run).
    await page.keyboard.press('Home');
    await waitFor(page, 0, (d) => Number(d.slice) <= 1, null, 'at the first slice');
    for (let at = 0; at < 60; at++) {
      const d = await dataset(page);
      if (d.sop === marked || Number(d.slice) >= Number(d.slices)) break;
      await page.keyboard.press('ArrowDown');
      await waitFor(page, 0, (x, a) => x.slice === String(a), Number(d.slice) + 1, 'the next slice');
    }
    await waitFor(page, 0, (d, a) => d.sop === a && d.key === 'false', marked, 'not a key image after a reload');
    assert.deepEqual(errors, [], 'no script errors');
    await context.close();
  });
}
