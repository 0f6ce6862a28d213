// Volumes and reformats, without the DOM: the geometry of a stack of slices from Image
// Position/Orientation (Patient) (PS3.3 C.7.6.2), whether it can be reformatted (one
// orientation, no gantry tilt, uniform spacing), and axial / coronal / sagittal planes through
// it, linearly interpolated between slices, optionally as a thick-slab projection (maximum,
// minimum or mean: MIP, MinIP, average). Pixels are given back as the frames' bit patterns
// (pixels.js windows them with the same LUT as the acquired slices).
//
// Voxel coordinates: i along a row (the column index), j down a column (the row index), k the
// slice in order along the normal. The patient position of voxel (i, j, k) is
//   origin + i·Δc·row + j·Δr·col + k·Δs·normal
// (row, col: the two direction cosines of Image Orientation; Δr, Δc: Pixel Spacing's row and
// column spacing; Δs: the slice spacing; normal = row × col).

import { num, storedValue, T, values } from './pixels.js';

/** Fewest slices a reformat is made from. */
export const MIN_SLICES = 3;

const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const norm = (a) => Math.hypot(a[0], a[1], a[2]);
const scale = (a, s) => [a[0] * s, a[1] * s, a[2] * s];
const add = (a, b) => [a[0] + b[0], a[1] + b[1], a[2] + b[2]];

/**
 * The geometry of a series' slices (`[{meta}]` as pixels.slicesOf gives them), or `{error}`
 * saying why it cannot be reformatted: too few slices, multi-frame, missing position or
 * orientation, slices not parallel or of different sizes or pixel encodings, two slices at one
 * position, irregular spacing (more than 1 % or 0.01 mm off the mean), gantry tilt (a slice
 * shifted in its own plane by more than 1 % of the spacing).
 */
export function volumeGeometry(slices) {
  const n = slices.length;
  if (n < MIN_SLICES) return { error: `Too few slices to reformat (${n}; at least ${MIN_SLICES}).` };
  if (slices.some((sl) => num(sl.meta, T.numberOfFrames, 0, 1) > 1)) {
    return { error: 'Multi-frame images cannot be reformatted here yet.' };
  }
  if (slices.some((sl) => num(sl.meta, T.samplesPerPixel, 0, 1) !== 1)) {
    return { error: 'Colour images are not reformatted.' };
  }
  const m0 = slices[0].meta;
  const o0 = values(m0, T.imageOrientation).map(Number);
  if (o0.length !== 6 || o0.some((x) => !Number.isFinite(x))) return { error: 'The images have no Image Orientation (Patient).' };
  const ps = values(m0, T.pixelSpacing).map(Number);
  const spacing = ps.length === 2 && ps.every((x) => x > 0) ? ps : null;
  if (!spacing) return { error: 'The images have no Pixel Spacing.' };
  const same = [T.rows, T.columns, T.bitsAllocated, T.bitsStored, T.pixelRepresentation, T.rescaleSlope, T.rescaleIntercept];
  const entries = [];
  for (let i = 0; i < n; i++) {
    const m = slices[i].meta;
    const o = values(m, T.imageOrientation).map(Number);
    if (o.length !== 6 || o.some((x, c) => Math.abs(x - o0[c]) > 1e-3)) return { error: 'The slices are not parallel (their orientations differ).' };
    if (same.some((t) => num(m, t, 0, null) !== num(m0, t, 0, null))
      || values(m, T.pixelSpacing).map(Number).some((x, c) => Math.abs(x - spacing[c]) > 1e-4)) {
      return { error: 'The slices differ in size, spacing or pixel encoding.' };
    }
    const p = values(m, T.imagePosition).map(Number);
    if (p.length !== 3 || p.some((x) => !Number.isFinite(x))) return { error: 'The images have no Image Position (Patient).' };
    entries.push({ i, p });
  }
  const row = o0.slice(0, 3), col = o0.slice(3, 6);
  const c = cross(row, col);
  const normal = scale(c, 1 / (norm(c) || 1));
  for (const e of entries) e.along = dot(e.p, normal);
  entries.sort((a, b) => a.along - b.along);
  const gaps = [];
  for (let k = 1; k < n; k++) {
    const d = entries[k].along - entries[k - 1].along;
    if (d < 1e-3) return { error: 'Two slices are at the same position.' };
    gaps.push(d);
    const shift = norm(sub(sub(entries[k].p, entries[k - 1].p), scale(normal, d)));
    if (shift > 0.01 * d + 1e-3) {
      return { error: `The slices are shifted in their plane (gantry tilt or a sheared stack: ${shift.toFixed(2)} mm per slice).` };
    }
  }
  const mean = (entries[n - 1].along - entries[0].along) / (n - 1);
  const lo = Math.min(...gaps), hi = Math.max(...gaps);
  if (hi - mean > Math.max(0.01 * mean, 0.01) || mean - lo > Math.max(0.01 * mean, 0.01)) {
    return { error: `Irregular slice spacing (${lo.toFixed(2)} to ${hi.toFixed(2)} mm).` };
  }
  return {
    n, rows: num(m0, T.rows, 0, 0), cols: num(m0, T.columns, 0, 0),
    order: entries.map((e) => e.i), origin: entries[0].p,
    row, col, normal,
    /** [Δr (between rows), Δc (between columns), Δs (between slices)] in mm. */
    spacing: [spacing[0], spacing[1], mean],
    frameOfReference: String(values(m0, '00200052')[0] || ''),
  };
}

/** The patient directions each plane is shown with: screen right and screen down. */
export const PLANES = {
  // Radiological convention: the patient's right on the viewer's left, anterior up (axial),
  // head up (coronal, sagittal), anterior on the left (sagittal).
  axial: { right: [1, 0, 0], down: [0, 1, 0], across: [0, 0, 1] },
  coronal: { right: [1, 0, 0], down: [0, 0, -1], across: [0, 1, 0] },
  sagittal: { right: [0, 1, 0], down: [0, 0, -1], across: [1, 0, 0] },
};

/**
 * How `plane` cuts the volume: the voxel axis held fixed (0: i, 1: j, 2: k), the axes along
 * the screen's x (`u`) and y (`v`) with their signs (−1: reversed), sizes and spacings, and
 * the patient directions of the screen's x and y.
 */
export function planeAxes(g, plane) {
  const P = PLANES[plane];
  if (!P) throw new Error(`no plane ${plane}`);
  const dirs = [g.row, g.col, g.normal];
  const dims = [g.cols, g.rows, g.n];
  const step = [g.spacing[1], g.spacing[0], g.spacing[2]];
  const fixed = [0, 1, 2].reduce((a, b) => (Math.abs(dot(dirs[b], P.across)) > Math.abs(dot(dirs[a], P.across)) ? b : a));
  const [a, b] = [0, 1, 2].filter((x) => x !== fixed);
  const u = Math.abs(dot(dirs[a], P.right)) >= Math.abs(dot(dirs[b], P.right)) ? a : b;
  const v = u === a ? b : a;
  const su = dot(dirs[u], P.right) < 0 ? -1 : 1;
  const sv = dot(dirs[v], P.down) < 0 ? -1 : 1;
  return {
    fixed, u, v, su, sv,
    width: dims[u], height: dims[v], count: dims[fixed],
    /** [between rows, between columns] of the reformatted image (mm). */
    spacing: [step[v], step[u]],
    rowDir: scale(dirs[u], su), colDir: scale(dirs[v], sv),
    normal: dirs[fixed], step: step[fixed],
  };
}

/**
 * The indices along the fixed axis a slab of `slabMm` around index `f` covers: the slices
 * whose centres are within `slabMm / 2` of the centre of `f` (just `f` when the slab is
 * thinner than two slice spacings), clipped to the volume.
 */
export function slabRange(count, step, f, slabMm) {
  const h = slabMm > 0 ? Math.floor(slabMm / (2 * step) + 1e-9) : 0;
  return [Math.max(0, f - h), Math.min(count - 1, f + h)];
}

/** Modality values (PS3.3 C.11.1.1.2) of every bit pattern of `pm` (256 or 65536 entries). */
export function modalityTable(pm) {
  const size = pm.bitsAllocated === 8 ? 256 : 65536;
  const t = new Float32Array(size);
  for (let p = 0; p < size; p++) t[p] = storedValue(p, pm) * pm.slope + pm.intercept;
  return t;
}

/**
 * The bit pattern (as pixels.storedValue reads it) whose modality value is nearest to `x`:
 * the inverse of the Modality LUT (PS3.3 C.11.1.1.2), rounded and clamped to the range Bits
 * Stored and Pixel Representation allow. Interpolated and averaged values go back through it
 * so reformats are windowed by the same LUT as the acquired slices.
 */
export function toPattern(x, pm) {
  const bits = pm.bitsStored;
  const s = Math.round((x - pm.intercept) / (pm.slope || 1));
  const signed = pm.pixelRepresentation === 1;
  const lo = signed ? -(2 ** (bits - 1)) : 0;
  const hi = signed ? 2 ** (bits - 1) - 1 : 2 ** bits - 1;
  const c = Math.min(hi, Math.max(lo, Number.isFinite(s) ? s : 0));
  return c < 0 ? c + 2 ** bits : c;
}

/** Thick-slab projections: maximum (MIP), minimum (MinIP) and mean (average). */
export const PROJECTIONS = ['max', 'min', 'mean'];

/**
 * The samples of one screen axis: the voxel index of screen position x (`i0`), and when the
 * axis runs across the slices and is resampled, the next slice (`i1`) and the weight of the
 * next one (`w`, linear interpolation).
 */
function axisSamples(n, dim, sign, resample) {
  const i0 = new Int32Array(n), i1 = new Int32Array(n), w = new Float64Array(n);
  for (let x = 0; x < n; x++) {
    if (!resample) {
      i0[x] = i1[x] = sign > 0 ? x : dim - 1 - x;
      continue;
    }
    // `resample` = output step / slice spacing: the position in slices from the first (or,
    // reversed, from the last) slice.
    const t = sign > 0 ? x * resample : dim - 1 - x * resample;
    let a = Math.floor(t + 1e-6);
    let f = t - a;
    if (f < 1e-6) f = 0;
    a = Math.max(0, Math.min(dim - 1, a));
    i0[x] = a; i1[x] = Math.min(dim - 1, a + 1); w[x] = i1[x] === a ? 0 : f;
  }
  return { i0, i1, w };
}

/**
 * The plane `plane` at index `f` of the fixed axis from `frames` (the slices' bit patterns in
 * the volume's order, `g.order` applied), as bit patterns: `{width, height, data, spacing,
 * rowDir, colDir, normal, position, count, range, projection}`.
 *
 * With `table` (modalityTable) and `pm` (the pixel module), a plane that runs across the
 * slices is **linearly interpolated** between them: when the slice spacing is larger than the
 * in-plane spacing along the other screen axis, the slice axis is resampled at that spacing
 * (square pixels) and each sample is (1 − w)·a + w·b of the modality values of the two slices
 * around it, then turned back into a bit pattern (toPattern). With `slabMm`, each pixel is
 * the `projection` of the modality values over the planes whose centres lie within half the
 * slab: `max` (MIP), `min` (MinIP) or `mean` (average). Without `table`, nearest voxel.
 */
export function reformat(g, frames, plane, f, { slabMm = 0, projection = 'max', table = null, pm = null } = {}) {
  if (!PROJECTIONS.includes(projection)) throw new Error(`no projection ${projection}`);
  const mp = planeMapping(g, plane, !!(table && pm));
  const { ax, ru, rv, width, height, spacing } = mp;
  const { u, v, su, sv, fixed } = ax;
  const dims = [g.cols, g.rows, g.n];
  const U = axisSamples(width, dims[u], su, ru), V = axisSamples(height, dims[v], sv, rv);
  const range = table ? slabRange(ax.count, ax.step, f, slabMm) : [f, f];
  const out = new (frames[0].constructor)(width * height);
  const cols = g.cols;
  const idx = [0, 0, 0];
  if (!table || !pm) {
    // Bit patterns as they are: nearest voxel, one plane.
    idx[fixed] = f;
    for (let y = 0; y < height; y++) {
      idx[v] = V.i0[y];
      for (let x = 0; x < width; x++) {
        idx[u] = U.i0[x];
        out[y * width + x] = frames[idx[2]][idx[1] * cols + idx[0]];
      }
    }
  } else {
    const acc = new Float64Array(width * height);
    const kOnU = u === 2, kOnV = v === 2;
    for (let s = range[0]; s <= range[1]; s++) {
      idx[fixed] = s;
      const first = s === range[0];
      for (let y = 0; y < height; y++) {
        idx[v] = V.i0[y];
        for (let x = 0; x < width; x++) {
          idx[u] = U.i0[x];
          const off = idx[1] * cols + idx[0];
          let val = table[frames[idx[2]][off]];
          const w = kOnU ? U.w[x] : kOnV ? V.w[y] : 0;
          if (w) {
            const k1 = kOnU ? U.i1[x] : V.i1[y];
            val += w * (table[frames[k1][off]] - val);
          }
          const o = y * width + x;
          if (first) acc[o] = val;
          else if (projection === 'max') { if (val > acc[o]) acc[o] = val; } else if (projection === 'min') { if (val < acc[o]) acc[o] = val; } else acc[o] += val;
        }
      }
    }
    const nPlanes = range[1] - range[0] + 1;
    const div = projection === 'mean' ? nPlanes : 1;
    for (let o = 0; o < acc.length; o++) out[o] = toPattern(acc[o] / div, pm);
  }
  const position = add(g.origin, scale(ax.normal, ax.step * f));
  return {
    width, height, data: out, spacing, rowDir: ax.rowDir, colDir: ax.colDir,
    normal: ax.normal, position, count: ax.count, range, projection,
  };
}

/**
 * How the images of `plane` map onto the volume: the plane's axes (planeAxes), the resampling
 * of the screen axis that runs across the slices (`ru`, `rv`: output step ÷ slice spacing, 0
 * when not resampled; only when `interpolated`, as reformat does with a modality table), the
 * image's size and [row, column] spacing.
 */
export function planeMapping(g, plane, interpolated = true) {
  const ax = planeAxes(g, plane);
  const { u, v, fixed } = ax;
  const dims = [g.cols, g.rows, g.n];
  const step = [g.spacing[1], g.spacing[0], g.spacing[2]];
  const spacing = [step[v], step[u]];
  let width = dims[u], height = dims[v];
  let ru = 0, rv = 0;
  if (interpolated && fixed !== 2) {
    const other = u === 2 ? step[v] : step[u];
    if (step[2] > other * (1 + 1e-6)) {
      const m = Math.floor(((g.n - 1) * step[2]) / other + 1e-6) + 1;
      if (u === 2) { ru = other / step[2]; width = m; spacing[1] = other; } else { rv = other / step[2]; height = m; spacing[0] = other; }
    }
  }
  return { ax, ru, rv, width, height, spacing };
}

/**
 * The patient coordinates (mm, PS3.3 C.7.6.2.1.1) of image point `[x, y]` of plane index `f`
 * of `plane` (image coordinates as measure.js uses them: pixel (c, r)'s centre at
 * (c + 0.5, r + 0.5)).
 */
export function toPatient(g, plane, f, [x, y]) {
  const { ax, ru, rv } = planeMapping(g, plane);
  const dims = [g.cols, g.rows, g.n];
  const step = [g.spacing[1], g.spacing[0], g.spacing[2]];
  const dirs = [g.row, g.col, g.normal];
  const along = (t, dim, sign, r) => (sign > 0 ? (t - 0.5) * (r || 1) : dim - 1 - (t - 0.5) * (r || 1));
  const idx = [0, 0, 0];
  idx[ax.fixed] = f;
  idx[ax.u] = along(x, dims[ax.u], ax.su, ru);
  idx[ax.v] = along(y, dims[ax.v], ax.sv, rv);
  let p = g.origin;
  for (let a = 0; a < 3; a++) p = add(p, scale(dirs[a], idx[a] * step[a]));
  return p;
}

/**
 * Where patient points `pts` lie on `plane`: `{f, points}` (the plane's index and the points'
 * image coordinates) when they all lie on one of its planes (within 5 % of the spacing
 * between them), else null. The inverse of toPatient.
 */
export function onPlane(g, plane, pts) {
  const { ax, ru, rv } = planeMapping(g, plane);
  const dims = [g.cols, g.rows, g.n];
  const step = [g.spacing[1], g.spacing[0], g.spacing[2]];
  const dirs = [g.row, g.col, g.normal];
  const back = (i, dim, sign, r) => (sign > 0 ? i : dim - 1 - i) / (r || 1) + 0.5;
  let f = null;
  const out = [];
  for (const p of pts) {
    const d = sub(p, g.origin);
    const idx = [0, 1, 2].map((a) => dot(d, dirs[a]) / step[a]);
    const k = Math.round(idx[ax.fixed]);
    if (Math.abs(idx[ax.fixed] - k) > 0.05 || k < 0 || k >= ax.count || (f !== null && k !== f)) return null;
    f = k;
    out.push([back(idx[ax.u], dims[ax.u], ax.su, ru), back(idx[ax.v], dims[ax.v], ax.sv, rv)]);
  }
  return f === null ? null : { f, points: out };
}

/** The positions along `normal` of planes 0..count−1 of `plane` (for linked scrolling). */
export function planePositions(g, plane) {
  const ax = planeAxes(g, plane);
  const o = dot(g.origin, ax.normal);
  return { normal: ax.normal, along: Array.from({ length: ax.count }, (_, f) => o + f * ax.step) };
}

/**
 * Linked scrolling: the index in `target` (`{normal, along}`) nearest to the plane through
 * `point` with normal `normal`, or null when the planes are not parallel (|cos| < 0.99).
 */
export function linkedIndex(point, normal, target) {
  if (!point || !normal || !target || !target.along.length) return null;
  if (Math.abs(dot(normal, target.normal)) < 0.99) return null;
  const want = dot(point, target.normal);
  let bestI = 0;
  for (let i = 1; i < target.along.length; i++) {
    if (Math.abs(target.along[i] - want) < Math.abs(target.along[bestI] - want)) bestI = i;
  }
  return bestI;
}

/**
 * Where patient points `pts` lie on an acquired slice (its metadata): their image coordinates
 * (pixel (c, r)'s centre at (c + 0.5, r + 0.5): Image Position (Patient) is the first pixel's
 * centre, PS3.3 C.7.6.2.1.1) when every one is within `tolMm` of the slice's plane, else null.
 */
export function onSlice(meta, pts, tolMm) {
  const o = values(meta, T.imageOrientation).map(Number);
  const p0 = values(meta, T.imagePosition).map(Number);
  const ps = values(meta, T.pixelSpacing).map(Number);
  if (o.length !== 6 || p0.length !== 3 || ps.length !== 2 || !(ps[0] > 0 && ps[1] > 0)) return null;
  const row = o.slice(0, 3), col = o.slice(3, 6);
  const c = cross(row, col);
  const n = scale(c, 1 / (norm(c) || 1));
  const out = [];
  for (const p of pts) {
    const d = sub(p, p0);
    if (Math.abs(dot(d, n)) > tolMm) return null;
    out.push([dot(d, row) / ps[1] + 0.5, dot(d, col) / ps[0] + 0.5]);
  }
  return out;
}

/** The slice normal (unit) and position of an acquired slice's metadata, or nulls. */
export function slicePlane(meta) {
  const o = values(meta, T.imageOrientation).map(Number);
  const p = values(meta, T.imagePosition).map(Number);
  if (o.length !== 6 || p.length !== 3) return { normal: null, position: null };
  const c = cross(o.slice(0, 3), o.slice(3, 6));
  return { normal: scale(c, 1 / (norm(c) || 1)), position: p };
}
