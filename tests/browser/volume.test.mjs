// Unit tests of the viewer tools' pure code, in node: volume geometry and its refusals
// (crates/web/assets/js/volume.js), reformat planes, orientation and aspect, thick-slab MIP,
// linked-scroll positions; length, angle and ROI statistics on non-square pixels (measure.js);
// the key images a KO document references (keyimages.js).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as vol from '../../crates/web/assets/js/volume.js';
import * as ms from '../../crates/web/assets/js/measure.js';
import { keyImagesOf } from '../../crates/web/assets/js/keyimages.js';
import { orientationLabel } from '../../crates/web/assets/js/pixels.js';

const COLS = 4, ROWS = 3;

/** DICOM JSON of one slice. */
function meta({ pos, iop = [1, 0, 0, 0, 1, 0], spacing = [0.5, 0.8], rows = ROWS, cols = COLS, frames }) {
  const m = {
    '00200032': { vr: 'DS', Value: pos },
    '00200037': { vr: 'DS', Value: iop },
    '00280030': { vr: 'DS', Value: spacing },
    '00280010': { vr: 'US', Value: [rows] },
    '00280011': { vr: 'US', Value: [cols] },
    '00280100': { vr: 'US', Value: [16] },
    '00280101': { vr: 'US', Value: [16] },
    '00280103': { vr: 'US', Value: [1] },
    '00281053': { vr: 'DS', Value: [1] },
    '00281052': { vr: 'DS', Value: [-1024] },
    '00200052': { vr: 'UI', Value: ['1.2.3.4'] },
  };
  if (frames) m['00280008'] = { vr: 'IS', Value: [frames] };
  return { meta: m };
}

/** An axial stack of 5 slices 2 mm apart, given in reverse order (head first). */
function axial(n = 5, gap = 2) {
  return Array.from({ length: n }, (_, i) => meta({ pos: [-10, -20, 30 - gap * i] }));
}

/** Frames in the volume's order: value 100·k + 10·j + i (k: slice from the feet up). */
function frames(g) {
  return Array.from({ length: g.n }, (_, k) => {
    const f = new Uint16Array(g.rows * g.cols);
    for (let j = 0; j < g.rows; j++) for (let i = 0; i < g.cols; i++) f[j * g.cols + i] = 100 * k + 10 * j + i;
    return f;
  });
}

test('geometry: sorted along the normal, spacing from positions', () => {
  const g = vol.volumeGeometry(axial());
  assert.ok(!g.error, g.error);
  // Given head first (z 30, 28, …, 22): the volume runs from the feet (z = 22) up.
  assert.deepEqual(g.order, [4, 3, 2, 1, 0]);
  assert.deepEqual(g.origin, [-10, -20, 22]);
  assert.deepEqual(g.spacing, [0.5, 0.8, 2]);
  assert.deepEqual(g.normal, [0, 0, 1]);
  assert.equal(g.frameOfReference, '1.2.3.4');
});

test('geometry: what cannot be reformatted is refused with a reason', () => {
  assert.match(vol.volumeGeometry(axial(2)).error, /Too few slices to reformat \(2; at least 3\)/);
  const tilted = axial().map((s, i) => meta({ pos: [-10, -20 + 0.5 * i, 30 - 2 * i] }));
  assert.match(vol.volumeGeometry(tilted).error, /gantry tilt/);
  const irregular = [0, 2, 4, 7, 9].map((z) => meta({ pos: [0, 0, z] }));
  assert.match(vol.volumeGeometry(irregular).error, /Irregular slice spacing \(2\.00 to 3\.00 mm\)/);
  const twice = [0, 2, 2, 4].map((z) => meta({ pos: [0, 0, z] }));
  assert.match(vol.volumeGeometry(twice).error, /same position/);
  const turned = axial();
  turned[2] = meta({ pos: [0, 0, 26], iop: [1, 0, 0, 0, 0, -1] });
  assert.match(vol.volumeGeometry(turned).error, /not parallel/);
  const sized = axial();
  sized[1] = meta({ pos: [-10, -20, 28], rows: 2 });
  assert.match(vol.volumeGeometry(sized).error, /differ/);
  assert.match(vol.volumeGeometry(axial().map((s, i) => meta({ pos: [0, 0, i], frames: 2 }))).error, /Multi-frame/);
  // A spacing 0.5 % off the mean is accepted (rounding in scanners' positions).
  const wobble = [0, 2, 4.01, 6, 8].map((z) => meta({ pos: [0, 0, z] }));
  assert.ok(!vol.volumeGeometry(wobble).error);
});

test('axial, coronal and sagittal planes of an axial stack: values, aspect, orientation', () => {
  const g = vol.volumeGeometry(axial());
  const f = frames(g);
  // Axial at k = 1: the slice itself.
  const ax = vol.reformat(g, f, 'axial', 1);
  assert.equal(ax.width, COLS); assert.equal(ax.height, ROWS); assert.equal(ax.count, 5);
  assert.deepEqual([...ax.data.slice(0, 4)], [100, 101, 102, 103]);
  assert.deepEqual(ax.spacing, [0.5, 0.8]);
  assert.equal(orientationLabel(ax.rowDir), 'L');
  assert.equal(orientationLabel(ax.colDir), 'P');
  // Coronal at row j = 2: x along i (to the left), y down from the head (k = 4 first).
  const cor = vol.reformat(g, f, 'coronal', 2);
  assert.equal(cor.width, COLS); assert.equal(cor.height, 5); assert.equal(cor.count, ROWS);
  assert.deepEqual([...cor.data.slice(0, 4)], [420, 421, 422, 423]);
  assert.deepEqual([...cor.data.slice(16, 20)], [20, 21, 22, 23]);
  // Pixels 2 mm high (slice spacing), 0.8 mm wide (column spacing).
  assert.deepEqual(cor.spacing, [2, 0.8]);
  assert.equal(orientationLabel(cor.rowDir), 'L');
  assert.equal(orientationLabel(cor.colDir), 'F');
  assert.deepEqual(cor.position, [-10, -19, 22]);
  // Sagittal at column i = 3: x along j (posterior), y down from the head.
  const sag = vol.reformat(g, f, 'sagittal', 3);
  assert.equal(sag.width, ROWS); assert.equal(sag.height, 5); assert.equal(sag.count, COLS);
  assert.deepEqual([...sag.data.slice(0, 3)], [403, 413, 423]);
  assert.deepEqual([...sag.data.slice(12, 15)], [3, 13, 23]);
  assert.deepEqual(sag.spacing, [2, 0.5]);
  assert.equal(orientationLabel(sag.rowDir), 'P');
  assert.equal(orientationLabel(sag.colDir), 'F');
});

test('a coronal acquisition: its axial plane is a reformat, its coronal the slices', () => {
  // Rows run to the left, columns to the feet; slices from anterior (y = -4) to posterior.
  const slices = [0, 1, 2, 3].map((k) => meta({ pos: [0, -4 + 2 * k, 50], iop: [1, 0, 0, 0, 0, -1] }));
  const g = vol.volumeGeometry(slices);
  assert.ok(!g.error, g.error);
  assert.deepEqual(g.normal.map((x) => x + 0), [0, 1, 0]);
  const f = frames(g);
  const axes = vol.planeAxes(g, 'coronal');
  assert.equal(axes.fixed, 2);
  const ax = vol.planeAxes(g, 'axial');
  assert.equal(ax.fixed, 1, 'axial holds the row index (z) fixed');
  // Axial: screen down = posterior = increasing k.
  const a = vol.reformat(g, f, 'axial', 0);
  assert.equal(a.height, 4);
  assert.deepEqual([...a.data.slice(0, 4)], [0, 1, 2, 3]);
  assert.deepEqual([...a.data.slice(12, 16)], [300, 301, 302, 303]);
  assert.equal(orientationLabel(a.colDir), 'P');
});

test('thick-slab MIP: the largest modality value over the slab, signed values', () => {
  const g = vol.volumeGeometry(axial());
  const pm = { bitsAllocated: 16, bitsStored: 16, pixelRepresentation: 1, slope: 1, intercept: -1024 };
  const table = vol.modalityTable(pm);
  assert.equal(table[0xffff], -1 - 1024, 'bit pattern 0xFFFF is stored value −1');
  const f = frames(g);
  // A negative stored value must lose against a positive one, whatever its bit pattern.
  f[2][0] = 0xffff;
  f[3][0] = 5;
  // Slab 4 mm at k = 2 (2 mm apart): k 1..3.
  assert.deepEqual(vol.slabRange(5, 2, 2, 4), [1, 3]);
  assert.deepEqual(vol.slabRange(5, 2, 2, 3.9), [2, 2]);
  assert.deepEqual(vol.slabRange(5, 2, 0, 100), [0, 4]);
  const mip = vol.reformat(g, f, 'axial', 2, { slabMm: 4, table, pm });
  assert.deepEqual(mip.range, [1, 3]);
  assert.equal(mip.data[0], 100, 'max(k1: 100, k2: −1, k3: 5) is 100');
  assert.equal(mip.data[1], 301);
  const cor = vol.reformat(g, f, 'coronal', 1, { slabMm: 2, table, pm: { ...pm, pixelRepresentation: 0 } });
  assert.deepEqual(cor.range, [0, 2]);
  assert.equal(cor.data[0], 420, 'coronal MIP over rows 0..2 at the top slice');
});

test('MinIP and average slabs: the smallest and the mean modality value over the slab', () => {
  const g = vol.volumeGeometry(axial());
  const pm = { bitsAllocated: 16, bitsStored: 16, pixelRepresentation: 1, slope: 1, intercept: -1024 };
  const table = vol.modalityTable(pm);
  const f = frames(g);
  f[2][0] = 0xffff; // stored −1: the smallest
  f[3][0] = 5;
  const min = vol.reformat(g, f, 'axial', 2, { slabMm: 4, projection: 'min', table, pm });
  assert.deepEqual(min.range, [1, 3]);
  assert.equal(min.projection, 'min');
  assert.equal(min.data[0], 0xffff, 'min(k1: 100, k2: −1, k3: 5) is −1 (pattern 0xFFFF)');
  assert.equal(min.data[1], 101);
  const mean = vol.reformat(g, f, 'axial', 2, { slabMm: 4, projection: 'mean', table, pm });
  // (100 − 1 + 5) / 3 = 34.67 stored → 35; pixel 1: (101 + 201 + 301) / 3 = 201.
  assert.equal(mean.data[0], 35);
  assert.equal(mean.data[1], 201);
  assert.equal(table[mean.data[5]], (table[f[1][5]] + table[f[2][5]] + table[f[3][5]]) / 3);
  assert.throws(() => vol.reformat(g, f, 'axial', 2, { slabMm: 4, projection: 'median', table, pm }));
});

test('toPattern: the inverse of the Modality LUT, rounded and clamped', () => {
  const s12 = { bitsAllocated: 16, bitsStored: 12, pixelRepresentation: 1, slope: 1, intercept: 0 };
  assert.equal(vol.toPattern(-1, s12), 0xfff);
  assert.equal(vol.toPattern(-5000, s12), 0x800, 'clamped to −2048');
  assert.equal(vol.toPattern(5000, s12), 0x7ff, 'clamped to 2047');
  const u = { bitsAllocated: 16, bitsStored: 16, pixelRepresentation: 0, slope: 2, intercept: -1000 };
  assert.equal(vol.toPattern(-1000, u), 0);
  assert.equal(vol.toPattern(-995, u), 3, '2.5 rounds up');
  assert.equal(vol.toPattern(-2000, u), 0);
  const t = vol.modalityTable(s12);
  for (const p of [0, 1, 0x7ff, 0x800, 0xfff]) assert.equal(vol.toPattern(t[p], s12), p);
});

test('coronal and sagittal planes interpolated between slices 2 mm apart (square pixels)', () => {
  const g = vol.volumeGeometry(axial());
  const pm = { bitsAllocated: 16, bitsStored: 16, pixelRepresentation: 0, slope: 1, intercept: -1024 };
  const table = vol.modalityTable(pm);
  const f = frames(g);
  // Coronal: columns 0.8 mm apart, so the slices (2 mm) are sampled every 0.8 mm from the
  // top (k = 4): 4 · 2 / 0.8 + 1 = 11 rows.
  const cor = vol.reformat(g, f, 'coronal', 2, { table, pm });
  assert.equal(cor.width, COLS); assert.equal(cor.height, 11);
  assert.deepEqual(cor.spacing, [0.8, 0.8]);
  for (let y = 0; y < cor.height; y++) {
    const t = 4 - (y * 0.8) / 2;
    const k0 = Math.floor(t + 1e-9), w = t - k0;
    for (let x = 0; x < COLS; x++) {
      const a = 100 * k0 + 20 + x, b = 100 * Math.min(4, k0 + 1) + 20 + x;
      assert.equal(cor.data[y * COLS + x], Math.round(a + w * (b - a)), `coronal (${x}, ${y})`);
    }
  }
  assert.equal(cor.data[COLS], 380, 'row 1: 0.8 mm below slice 4, 40 % of the way to slice 3 (420 − 40)');
  // Sagittal: rows 0.5 mm apart; 4 · 2 / 0.5 + 1 = 17 rows.
  const sag = vol.reformat(g, f, 'sagittal', 3, { table, pm });
  assert.equal(sag.width, ROWS); assert.equal(sag.height, 17);
  assert.deepEqual(sag.spacing, [0.5, 0.5]);
  assert.equal(sag.data[0], 403);
  assert.equal(sag.data[1 * ROWS + 1], 388, '0.5 mm below k = 4: 413 − 25');
  assert.equal(sag.data[16 * ROWS + 2], 23);
  // A slab across the resampled plane: the MIP of interpolated planes.
  const mip = vol.reformat(g, f, 'coronal', 1, { slabMm: 2, table, pm });
  assert.deepEqual(mip.range, [0, 2]);
  assert.equal(mip.data[COLS], 380, 'the largest of rows 0..2 (j = 2) at 0.8 mm below the top');
  // Slices thinner than the pixels are not resampled.
  const thin = vol.volumeGeometry(axial(5, 0.4));
  const c2 = vol.reformat(thin, frames(thin), 'coronal', 2, { table, pm });
  assert.equal(c2.height, 5);
  assert.ok(Math.abs(c2.spacing[0] - 0.4) < 1e-9 && c2.spacing[1] === 0.8, `${c2.spacing}`);
});

test('patient coordinates of reformat points and back (saved reformat measurements)', () => {
  // Axial slices 2 mm apart, pixels 0.5 × 0.8 mm: coronal and sagittal resampled across slices.
  const g = vol.volumeGeometry(axial());
  for (const plane of ['axial', 'coronal', 'sagittal']) {
    const mp = vol.planeMapping(g, plane);
    const { count } = vol.planeAxes(g, plane);
    for (let f = 0; f < count; f++) {
      const pts = [[0.5, 0.5], [mp.width - 0.5, mp.height - 0.5], [1.3, 2.7]];
      const world = pts.map((p) => vol.toPatient(g, plane, f, p));
      const back = vol.onPlane(g, plane, world);
      assert.ok(back, `${plane} ${f}`);
      assert.equal(back.f, f);
      back.points.forEach((p, i) => { assert.ok(Math.hypot(p[0] - pts[i][0], p[1] - pts[i][1]) < 1e-9, `${plane} ${f} ${p} ${pts[i]}`); });
      // Lengths in mm are the same in the image (its spacing) and in patient space.
      const [a, b] = pts;
      const mm = ms.length(a, b, mp.spacing).value;
      const d = Math.hypot(...world[1].map((x, c) => x - world[0][c]));
      assert.ok(Math.abs(mm - d) < 1e-9, `${plane}: ${mm} vs ${d}`);
    }
  }
  // Pixel centres are voxel centres: the coronal's top-left pixel is the head's first voxel
  // (slice z = 30, the patient's right, i.e. x = −10), its bottom-right the feet's last.
  const c = vol.planeMapping(g, 'coronal');
  assert.deepEqual(vol.toPatient(g, 'coronal', 1, [0.5, 0.5]), [-10, -20 + 0.5, 30]);
  assert.deepEqual(vol.toPatient(g, 'coronal', 1, [c.width - 0.5, c.height - 0.5]), [-10 + 3 * 0.8, -20 + 0.5, 22]);
  // The axial planes of an axial stack are its slices: the same image coordinates on the
  // acquired slice (its own metadata), none on the slice next to it.
  const slices = axial();
  const pts = [[0.5, 0.5], [2.25, 1.75]];
  for (let f = 0; f < g.n; f++) {
    const world = pts.map((p) => vol.toPatient(g, 'axial', f, p));
    const back = vol.onSlice(slices[g.order[f]].meta, world, 0.1);
    assert.ok(back, `slice ${f}`);
    back.forEach((p, i) => assert.ok(Math.hypot(p[0] - pts[i][0], p[1] - pts[i][1]) < 1e-9, `slice ${f}: ${p}`));
    assert.equal(vol.onSlice(slices[g.order[(f + 1) % g.n]].meta, world, 0.1), null);
  }
  // A point off every plane, or points on two planes, are on none.
  assert.equal(vol.onPlane(g, 'coronal', [[-10, -20.25, 30]]), null);
  assert.equal(vol.onPlane(g, 'coronal', [[-10, -20, 30], [-10, -19.5, 30]]), null);
  assert.equal(vol.onPlane(g, 'coronal', [[-10, -30, 30]]), null);
});

test('linked scrolling: nearest parallel plane, none for orthogonal planes', () => {
  const g = vol.volumeGeometry(axial());
  const pos = vol.planePositions(g, 'axial');
  assert.deepEqual(pos.along, [22, 24, 26, 28, 30]);
  assert.equal(vol.linkedIndex([5, 5, 27.2], [0, 0, 1], pos), 3);
  assert.equal(vol.linkedIndex([5, 5, 27.2], [0, 0, -1], pos), 3, 'an opposite normal is parallel too');
  assert.equal(vol.linkedIndex([5, 5, 27.2], [0, 1, 0], pos), null);
  const cor = vol.planePositions(g, 'coronal');
  assert.deepEqual(cor.along, [-20, -19.5, -19]);
});

test('length and angle on non-square pixels', () => {
  const sp = [2, 0.5]; // 2 mm between rows, 0.5 mm between columns
  assert.equal(ms.length([0, 0], [10, 0], sp).value, 5);
  assert.equal(ms.length([0, 0], [0, 10], sp).value, 20);
  assert.equal(ms.length([0, 0], [3, 4], null).value, 5);
  assert.equal(ms.length([0, 0], [3, 4], null).unit, 'px');
  // Along the image axes: 90°.
  assert.ok(Math.abs(ms.angle([10, 0], [0, 0], [0, 10], sp) - 90) < 1e-9);
  // (4, 1) pixels is (2, 2) mm: 45° to the row direction in the patient, not 14°.
  assert.ok(Math.abs(ms.angle([10, 0], [0, 0], [4, 1], sp) - 45) < 1e-9);
  assert.ok(Number.isNaN(ms.angle([0, 0], [0, 0], [1, 1], sp)));
});

test('ROI mask rule and statistics', () => {
  // 6×4 image, value = stored − 1024 = 10·r + c.
  const w = 6, hgt = 4;
  const data = new Uint16Array(w * hgt);
  for (let r = 0; r < hgt; r++) for (let c = 0; c < w; c++) data[r * w + c] = 1024 + 10 * r + c;
  const table = vol.modalityTable({ bitsAllocated: 16, bitsStored: 16, pixelRepresentation: 0, slope: 1, intercept: -1024 });
  // Rectangle from (1, 1) to (3, 3): pixel centres 1.5, 2.5 in both → 4 pixels.
  const rect = ms.roiStats(data, w, hgt, table, 'rect', [1, 1], [3, 3], [2, 0.5]);
  assert.equal(rect.n, 4);
  assert.equal(rect.mean, (11 + 12 + 21 + 22) / 4);
  assert.equal(rect.min, 11); assert.equal(rect.max, 22);
  assert.ok(Math.abs(rect.sd - Math.sqrt(((11 - 16.5) ** 2 + (12 - 16.5) ** 2 + (21 - 16.5) ** 2 + (22 - 16.5) ** 2) / 4)) < 1e-12);
  assert.equal(rect.area, 4 * 2 * 0.5);
  // An ellipse in the box (0, 0)–(6, 4): centre (3, 2), radii 3 and 2; the corners are out.
  assert.equal(ms.inRoi('ellipse', [0, 0], [6, 4], 0, 0), false);
  assert.equal(ms.inRoi('ellipse', [0, 0], [6, 4], 2, 1), true);
  assert.equal(ms.inRoi('ellipse', [6, 4], [0, 0], 2, 1), true, 'corners in any order');
  const ell = ms.roiStats(data, w, hgt, table, 'ellipse', [0, 0], [6, 4], null);
  let n = 0;
  for (let r = 0; r < hgt; r++) for (let c = 0; c < w; c++) if (((c + 0.5 - 3) / 3) ** 2 + ((r + 0.5 - 2) / 2) ** 2 <= 1) n++;
  assert.equal(ell.n, n);
  assert.equal(ell.areaUnit, 'px²');
  // Outside the image: nothing.
  assert.equal(ms.roiStats(data, w, hgt, table, 'rect', [10, 10], [12, 12], null).n, 0);
});

test('key images: the IMAGE items of KO documents', () => {
  const ko = {
    '0040A730': { vr: 'SQ', Value: [
      { '0040A040': { vr: 'CS', Value: ['TEXT'] }, '0040A160': { vr: 'UT', Value: ['x'] } },
      { '0040A040': { vr: 'CS', Value: ['IMAGE'] }, '00081199': { vr: 'SQ', Value: [{ '00081155': { vr: 'UI', Value: ['1.2.3'] } }] } },
      { '0040A040': { vr: 'CS', Value: ['IMAGE'] }, '00081199': { vr: 'SQ', Value: [{ '00081155': { vr: 'UI', Value: ['1.2.4'] } }] } },
    ] },
  };
  assert.deepEqual([...keyImagesOf([ko, {}])].sort(), ['1.2.3', '1.2.4']);
});
