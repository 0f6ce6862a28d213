// Colour images in the viewer (issue 6): RGB frames (8 bits, interleaved) are fetched raw, in
// one request for the frames of a multi-frame instance, and drawn exactly as stored; a window
// (preset) acts on each of R, G and B; colour-by-plane RGB stays the server's rendering. The
// images are written here with pydicom (not by Vesalius), so the expected values are known.
// Run: `scripts/test-browser` (target/debug/vesalius built, .venv with pydicom).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
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

/** Canvas pixels over sample points of frame `f` against `want(rgb)` (±`tol`). */
async function checkColour(page, f, want, tol, label) {
  const d = await dataset(page);
  const [scale, ox, oy] = [Number(d.scale), Number(d.ox), Number(d.oy)];
  const pts = [];
  for (let r = 1; r < ROWS; r += 7) for (let c = 2; c < COLS; c += 9) pts.push({ c, r, x: Math.floor(ox + (c + 0.5) * scale), y: Math.floor(oy + (r + 0.5) * scale) });
  const got = await page.$eval('#view', (cv, ps) => ps.map((p) => Array.from(cv.getContext('2d').getImageData(p.x, p.y, 1, 1).data)), pts);
  const bad = [];
  pts.forEach((p, i) => {
    const exp = want(sample(f, p.c, p.r));
    if (exp.some((v, k) => Math.abs(got[i][k] - v) > tol) || got[i][3] !== 255) bad.push(`(${p.c},${p.r}): drawn ${got[i]}, expected ${exp.map((v) => v.toFixed(1))}`);
  });
  assert.ok(pts.length >= 40, `${label}: ${pts.length} points`);
  assert.deepEqual(bad, [], `${label}: canvas pixels differ from the stored colours`);
}

test('desktop: RGB frames drawn exactly as stored, windowed per channel; colour-by-plane is the server\'s rendering', async () => {
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
  // Series 2 (RGB, colour-by-plane): the server's rendering, not raw frames.
  await page.keyboard.press(']');
  await page.waitForFunction(() => { const x = document.getElementById('view').dataset; return x.series && x.series.endsWith('.2') && x.state === 'rendered'; }, null, { timeout: 20000 });
  assert.ok(!requests.some((u) => u.includes(`${STUDY}.2.1`) && /\/frames(\/\d+$|\?)/.test(u)), 'no raw frame of the colour-by-plane image');
  await page.screenshot({ path: join(ARTIFACTS, 'colour-02-planar-rendered.png') });
  assert.deepEqual(errors, []);
  await ctx.close();
});
