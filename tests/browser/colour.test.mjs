// Colour images in the viewer (issue 6): RGB frames (8 bits, by pixel or by plane) are fetched
// raw, in one request for the frames of a multi-frame instance, and drawn exactly as stored; a
// window (preset) acts on each of R, G and B. YBR_FULL (by pixel, by plane), native
// YBR_FULL_422, JPEG baseline 4:2:2 (DCMTK's dcmcjpeg) and RLE YBR_FULL (dcmcrle) are drawn
// from raw frames too, turned into RGB in the browser where they arrive as YBR (PS3.3
// C.7.6.3.1.2). The images are written here with pydicom (not by Vesalius), so the expected
// values are known.
// Run: `scripts/test-browser` (target/debug/vesalius built, .venv with pydicom).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ARTIFACTS, PASSWORD, ROOT, Site, launch } from './site.mjs';

const PYTHON = process.env.VESALIUS_PYTHON || join(ROOT, '.venv/bin/python');
const ROWS = 48, COLS = 64, FRAMES = 3;
const STUDY = '1.2.826.0.1.3680043.10.1.77';

/** The stored sample of frame f (0-based) at (col, row): R, G, B. Also in the Python below. */
const sample = (f, c, r) => [(c * 4 + f * 10) % 256, (r * 5) % 256, (c + r * 3 + f * 50) % 256];

const WRITE = `
import sys
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
out, study, rows, cols, frames = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def write(name, series, number, sop, cls, planar, nframes):
    f = np.arange(nframes).reshape(-1, 1, 1)
    r = np.arange(rows).reshape(1, -1, 1)
    c = np.arange(cols).reshape(1, 1, -1)
    rgb = np.stack([(c * 4 + f * 10 + 0 * r) % 256, (r * 5 + 0 * c + 0 * f) % 256, (c + r * 3 + f * 50) % 256], axis=-1).astype(np.uint8)
    if planar:
        rgb = np.moveaxis(rgb, -1, 1)  # frame, sample, row, column
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = cls
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = cls, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID, ds.StudyDate, ds.Modality = 'COLOUR^TEST', 'COLOUR1', '20240101', 'US'
    ds.SeriesNumber, ds.InstanceNumber = number, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, 'RGB', planar
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = rows, cols, 8, 8, 7, 0
    ds.PixelSpacing = [0.5, 0.5]
    if nframes > 1:
        ds.NumberOfFrames = nframes
    ds.PixelData = rgb.tobytes()
    ds.save_as(f'{out}/{name}.dcm', enforce_file_format=True)
write('cine', study + '.1', 1, study + '.1.1', '1.2.840.10008.5.1.4.1.1.3.1', 0, frames)
write('planes', study + '.2', 2, study + '.2.1', '1.2.840.10008.5.1.4.1.1.7', 1, 1)
`;

/** The linear VOI function of PS3.3 C.11.2.1.2.1 to 0..255, written here again on purpose. */
function linearVoi(x, c, w) {
  if (x <= c - 0.5 - (w - 1) / 2) return 0;
  if (x > c - 0.5 + (w - 1) / 2) return 255;
  return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255;
}

let site, browser;

before(async () => {
  site = await Site.start();
  site.user('default', 'alice');
  const dir = join(site.tmp, 'colour');
  mkdirSync(dir, { recursive: true });
  execFileSync(PYTHON, ['-c', WRITE, dir, STUDY, String(ROWS), String(COLS), String(FRAMES)]);
  site.import(dir);
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (site) await site.stop();
});

const dataset = (page) => page.$eval('#view', (c) => ({ ...c.dataset }));

/**
 * Canvas pixels over sample points of frame `f` against `want(rgb)` (±`tol`), `rgb` the
 * picture's colour at (column, row): `at(c, r)`, by default the stored sample.
 */
async function checkColour(page, f, want, tol, label, at = (c, r) => sample(f, c, r)) {
  const d = await dataset(page);
  const [scale, ox, oy] = [Number(d.scale), Number(d.ox), Number(d.oy)];
  const pts = [];
  for (let r = 1; r < ROWS; r += 7) for (let c = 2; c < COLS; c += 9) pts.push({ c, r, x: Math.floor(ox + (c + 0.5) * scale), y: Math.floor(oy + (r + 0.5) * scale) });
  const got = await page.$eval('#view', (cv, ps) => ps.map((p) => Array.from(cv.getContext('2d').getImageData(p.x, p.y, 1, 1).data)), pts);
  const bad = [];
  pts.forEach((p, i) => {
    const exp = want(at(p.c, p.r));
    if (exp.some((v, k) => Math.abs(got[i][k] - v) > tol) || got[i][3] !== 255) bad.push(`(${p.c},${p.r}): drawn ${got[i]}, expected ${exp.map((v) => v.toFixed(1))}`);
  });
  assert.ok(pts.length >= 40, `${label}: ${pts.length} points`);
  assert.deepEqual(bad, [], `${label}: canvas pixels differ from the stored colours`);
}

test('desktop: RGB frames drawn exactly as stored, windowed per channel, by pixel and by plane', async () => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const r = await ctx.request.post(`${site.base}/api/v1/auth/login`, { data: { username: 'alice', password: PASSWORD } });
  assert.ok(r.ok());
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const requests = [];
  ctx.on('request', (q) => requests.push(q.url()));
  await page.goto(`${site.base}/view/${STUDY}`);
  // The multi-frame RGB series opens (series 1): every frame raw, in one request.
  await page.waitForFunction(() => { const d = document.getElementById('view')?.dataset; return d && d.slices === '3' && d.loaded === '3' && d.state === 'raw'; }, null, { timeout: 30000 });
  const frames = requests.filter((u) => /\/frames(\/|\?)/.test(u) && !/rendered|thumbnail/.test(u));
  assert.equal(frames.length, 1, `frame requests: ${frames}`);
  assert.deepEqual(decodeURIComponent(new URL(frames[0]).searchParams.get('instances')).split(',').sort(),
    [`${STUDY}.1.1`, `${STUDY}.1.1:2`, `${STUDY}.1.1:3`]);
  const d = await dataset(page);
  assert.equal(d.center, '128');
  assert.equal(d.width, '256');
  await page.keyboard.press('Home');
  await page.waitForFunction(() => document.getElementById('view').dataset.slice === '1');
  for (let f = 0; f < FRAMES; f++) {
    if (f) {
      await page.keyboard.press('ArrowDown');
      await page.waitForFunction((n) => { const x = document.getElementById('view').dataset; return x.slice === String(n) && x.state === 'raw'; }, f + 1);
    }
    await checkColour(page, f, (rgb) => rgb, 0, `frame ${f + 1} as stored`);
  }
  await page.screenshot({ path: join(ARTIFACTS, 'colour-01-raw.png') });
  // A window on colour: each sample through the same VOI function (Angio: W600/L300).
  await page.keyboard.press('7');
  await page.waitForFunction(() => document.getElementById('view').dataset.center === '300');
  await checkColour(page, FRAMES - 1, (rgb) => rgb.map((v) => linearVoi(v, 300, 600)), 1, 'angio window');
  // Invert, then back to the image's own window.
  await page.keyboard.press('i');
  await page.keyboard.press('0');
  await page.waitForFunction(() => document.getElementById('view').dataset.center === '128');
  await checkColour(page, FRAMES - 1, (rgb) => rgb.map((v) => 255 - v), 0, 'inverted');
  await page.keyboard.press('i');
  // A colour ROI has an area and no values.
  await page.click('button[data-tool="rect"]');
  const css = async (c, r) => {
    const x = await dataset(page);
    const box = await page.locator('#view').boundingBox();
    const k = box.width / (await page.$eval('#view', (cv) => cv.width));
    return [box.x + (Number(x.ox) + c * Number(x.scale)) * k, box.y + (Number(x.oy) + r * Number(x.scale)) * k];
  };
  const [x0, y0] = await css(10, 10);
  const [x1, y1] = await css(30, 20);
  await page.mouse.move(x0, y0);
  await page.mouse.down();
  await page.mouse.move(x1, y1, { steps: 5 });
  await page.mouse.up();
  await page.waitForSelector('#marks g.rect[data-n]');
  const roi = await page.$eval('#marks g.rect', (g) => ({ ...g.dataset }));
  assert.ok(Number(roi.n) >= 150, `ROI of ${roi.n} pixels`);
  assert.equal(Number(roi.area), Number(roi.n) * 0.25, 'area: pixels × 0.5 mm × 0.5 mm');
  assert.equal(roi.mean, undefined, 'no mean of colour samples');
  assert.match(await page.$eval('#marks g.rect text', (t) => t.textContent), /mm² \(colour: no values\)$/);
  await page.keyboard.press('Delete');
  await page.click('button[data-tool="window"]');
  // Reformats are refused with a reason.
  await page.keyboard.press('Shift+C');
  await page.waitForFunction(() => /Colour images are not reformatted|Multi-frame/.test(document.querySelector('.viewport')?.innerText || document.body.innerText));
  await page.keyboard.press('Shift+O');
  // Series 2 (RGB, colour-by-plane): its raw frame too, the planes put back together.
  await page.keyboard.press(']');
  await page.waitForFunction(() => { const x = document.getElementById('view').dataset; return x.series && x.series.endsWith('.2') && x.state === 'raw'; }, null, { timeout: 20000 });
  assert.ok(requests.some((u) => u.includes(`${STUDY}.2.1`) && /\/frames(\/\d+$|\?)/.test(u)), 'the colour-by-plane image\'s raw frame');
  await checkColour(page, 0, (rgb) => rgb, 0, 'colour by plane');
  await page.screenshot({ path: join(ARTIFACTS, 'colour-02-planar.png') });
  assert.deepEqual(errors, []);
  await ctx.close();
});

// --- YBR colour (PS3.3 C.7.6.3.1.2) ---------------------------------------------------------
const YBR_STUDY = '1.2.826.0.1.3680043.10.1.78';

/**
 * Writes YBR_FULL (interleaved and by plane) and native YBR_FULL_422 images of the same RGB
 * picture (frame 0 of `sample`; the 4:2:2 one twice, as two frames), and an RGB copy that DCMTK's dcmcjpeg turns into JPEG baseline
 * (YBR_FULL_422, 4:2:2) and an YBR_FULL copy dcmcrle turns into RLE; `expected-*.json` hold the
 * RGB each should show: PS3.3 C.7.6.3.1.2's equations applied to the stored samples, here in
 * numpy (the browser's code is not used).
 */
const WRITE_YBR = `
import json, sys
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
out, study, rows, cols = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
r = np.arange(rows).reshape(-1, 1)
c = np.arange(cols).reshape(1, -1)
rgb = np.stack([(c * 4 + 0 * r) % 256, (r * 5 + 0 * c) % 256, (c + r * 3) % 256], axis=-1).astype(float)
R, G, B = rgb[..., 0], rgb[..., 1], rgb[..., 2]
# PS3.3 C.7.6.3.1.2, YBR_FULL from RGB.
Y = .2990 * R + .5870 * G + .1140 * B
Cb = -.1687 * R - .3313 * G + .5000 * B + 128
Cr = .5000 * R - .4187 * G - .0813 * B + 128
q = lambda a: np.clip(np.round(a), 0, 255).astype(np.uint8)
ybr = np.stack([q(Y), q(Cb), q(Cr)], axis=-1)
def to_rgb(y, cb, cr):
    y, cb, cr = (np.asarray(a, dtype=float) for a in (y, cb, cr))
    return np.stack([y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)], axis=-1).clip(0, 255)
def write(name, series, number, pi, planar, data, expected, frames=1):
    sop = series + '.1'
    cls = '1.2.840.10008.5.1.4.1.1.3.1' if frames > 1 else '1.2.840.10008.5.1.4.1.1.7'
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = cls
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = cls, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID, ds.StudyDate, ds.Modality = 'YBR^TEST', 'YBR1', '20240101', 'US'
    ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = number, 1, name
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, pi, planar
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = rows, cols, 8, 8, 7, 0
    ds.PixelSpacing = [0.5, 0.5]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = data.tobytes() * frames
    ds.save_as(f'{out}/{name}.dcm', enforce_file_format=True)
    if expected is not None:
        json.dump(np.round(expected).astype(int).tolist(), open(f'{out}/expected-{name}.json', 'w'))
write('ybr', study + '.1', 1, 'YBR_FULL', 0, ybr, to_rgb(ybr[..., 0], ybr[..., 1], ybr[..., 2]))
write('ybrplanes', study + '.2', 2, 'YBR_FULL', 1, np.moveaxis(ybr, -1, 0), to_rgb(ybr[..., 0], ybr[..., 1], ybr[..., 2]))
# YBR_FULL_422: per two pixels of a row Y1 Y2 Cb Cr, the chroma of the pair (PS3.3 C.7.6.3.1.2).
cb2 = q((Cb[:, 0::2] + Cb[:, 1::2]) / 2)
cr2 = q((Cr[:, 0::2] + Cr[:, 1::2]) / 2)
packed = np.stack([ybr[:, 0::2, 0], ybr[:, 1::2, 0], cb2, cr2], axis=-1)
# Two frames: a frame of native 4:2:2 is 2 bytes a pixel, not Samples per Pixel's 3.
write('ybr422', study + '.3', 3, 'YBR_FULL_422', 0, packed, to_rgb(ybr[..., 0], np.repeat(cb2, 2, axis=1), np.repeat(cr2, 2, axis=1)), 2)
write('jpeg-source', study + '.4', 4, 'RGB', 0, q(rgb), None)
write('rle-source', study + '.5', 5, 'YBR_FULL', 0, ybr, to_rgb(ybr[..., 0], ybr[..., 1], ybr[..., 2]))
json.dump(q(rgb).astype(int).tolist(), open(f'{out}/expected-jpeg.json', 'w'))
`;

test('YBR_FULL, YBR_FULL by plane, native YBR_FULL_422, JPEG baseline 4:2:2 and RLE YBR_FULL: converted to RGB in the browser', async () => {
  const src = join(site.tmp, 'ybr-src'), dir = join(site.tmp, 'ybr');
  mkdirSync(src, { recursive: true });
  mkdirSync(dir, { recursive: true });
  execFileSync(PYTHON, ['-c', WRITE_YBR, src, YBR_STUDY, String(ROWS), String(COLS)]);
  for (const n of ['ybr', 'ybrplanes', 'ybr422']) copyFileSync(join(src, `${n}.dcm`), join(dir, `${n}.dcm`));
  // DCMTK makes the compressed ones: JPEG baseline (YCbCr, 4:2:2 by default) and RLE.
  execFileSync('dcmcjpeg', ['+eb', join(src, 'jpeg-source.dcm'), join(dir, 'jpeg.dcm')]);
  execFileSync('dcmcrle', [join(src, 'rle-source.dcm'), join(dir, 'rle.dcm')]);
  const pi = (f) => execFileSync('dcmdump', ['+P', '0028,0004', '+P', '0002,0010', f], { encoding: 'utf8' });
  assert.match(pi(join(dir, 'jpeg.dcm')), /JPEGBaseline/);
  assert.match(pi(join(dir, 'jpeg.dcm')), /YBR_FULL_422/);
  assert.match(pi(join(dir, 'rle.dcm')), /YBR_FULL\b/);
  site.import(dir);
  const expected = (n) => JSON.parse(readFileSync(join(src, `expected-${n}.json`), 'utf8'));
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  assert.ok((await ctx.request.post(`${site.base}/api/v1/auth/login`, { data: { username: 'alice', password: PASSWORD } })).ok());
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${site.base}/view/${YBR_STUDY}`);
  // Series in order; the expected RGB of each and the tolerance: rounding for the equations,
  // more for JPEG (lossy, and decoders upsample 4:2:2 chroma differently).
  const cases = [['.1', 'ybr', 1], ['.2', 'ybrplanes', 1], ['.3', 'ybr422', 1], ['.4', 'jpeg', 12], ['.5', 'rle-source', 1]];
  for (const [i, [suffix, name, tol]] of cases.entries()) {
    if (i) await page.keyboard.press(']');
    await page.waitForFunction((s) => { const x = document.getElementById('view')?.dataset; return x && x.series && x.series.endsWith(s) && x.state === 'raw'; }, suffix, { timeout: 30000 })
      .catch(async (e) => { throw new Error(`${name}: not drawn from raw frames (${JSON.stringify(await dataset(page))}): ${e.message}`); });
    const want = expected(name);
    await checkColour(page, 0, (rgb) => rgb, tol, name, (c, r) => want[r][c]);
  }
  await page.screenshot({ path: join(ARTIFACTS, 'colour-03-ybr.png') });
  assert.deepEqual(errors, []);
  await ctx.close();
});
