// Measurements, without the DOM: length, angle and region-of-interest statistics on an image
// whose pixels may be non-square. Points are image coordinates (x along a row, y down a
// column; pixel (c, r) covers [c, c+1) × [r, r+1), its centre is (c + 0.5, r + 0.5)).
// `spacing` is [between rows, between columns] in mm (Pixel Spacing, PS3.3 10.7.1.3), or null
// (then results are in pixels).

/** A vector between image points in mm (or pixels without spacing). */
function mm(a, b, spacing) {
  const [rs, cs] = spacing || [1, 1];
  return [(b[0] - a[0]) * cs, (b[1] - a[1]) * rs];
}

/** The length of the line a–b: `{value, unit}`. */
export function length(a, b, spacing) {
  const [dx, dy] = mm(a, b, spacing);
  return { value: Math.hypot(dx, dy), unit: spacing ? 'mm' : 'px' };
}

/**
 * The angle at `vertex` between the arms to `a` and `c`, in degrees (0..180), measured in
 * the patient's millimetres (so non-square pixels do not bend it); NaN for a zero-length arm.
 */
export function angle(a, vertex, c, spacing) {
  const u = mm(vertex, a, spacing), w = mm(vertex, c, spacing);
  const nu = Math.hypot(u[0], u[1]), nw = Math.hypot(w[0], w[1]);
  if (!nu || !nw) return NaN;
  const cos = Math.max(-1, Math.min(1, (u[0] * w[0] + u[1] * w[1]) / (nu * nw)));
  return (Math.acos(cos) * 180) / Math.PI;
}

/**
 * Whether pixel (c, r) is in the ROI: its centre lies inside the rectangle with corners a and
 * b (edges included), or inside the ellipse inscribed in that rectangle
 * (((x − xc)/rx)² + ((y − yc)/ry)² ≤ 1).
 */
export function inRoi(shape, a, b, c, r) {
  const x0 = Math.min(a[0], b[0]), x1 = Math.max(a[0], b[0]);
  const y0 = Math.min(a[1], b[1]), y1 = Math.max(a[1], b[1]);
  const x = c + 0.5, y = r + 0.5;
  if (shape === 'rect') return x >= x0 && x <= x1 && y >= y0 && y <= y1;
  const rx = (x1 - x0) / 2, ry = (y1 - y0) / 2;
  if (rx <= 0 || ry <= 0) return false;
  const dx = (x - (x0 + rx)) / rx, dy = (y - (y0 + ry)) / ry;
  return dx * dx + dy * dy <= 1;
}

/** The pixels in the ROI (see inRoi) of a `width`×`height` image: count and area. */
export function roiArea(width, height, shape, a, b, spacing) {
  const c0 = Math.max(0, Math.floor(Math.min(a[0], b[0]))), c1 = Math.min(width - 1, Math.ceil(Math.max(a[0], b[0])));
  const r0 = Math.max(0, Math.floor(Math.min(a[1], b[1]))), r1 = Math.min(height - 1, Math.ceil(Math.max(a[1], b[1])));
  let n = 0;
  for (let r = r0; r <= r1; r++) for (let c = c0; c <= c1; c++) if (inRoi(shape, a, b, c, r)) n++;
  const [rs, cs] = spacing || [1, 1];
  return { n, area: n * rs * cs, areaUnit: spacing ? 'mm²' : 'px²' };
}

/**
 * Statistics of the pixels in the ROI (see inRoi) of a `width`×`height` image of bit patterns
 * `data`, through `table` (bit pattern → modality value): count, mean, population standard
 * deviation, min, max, and area (count × pixel area: mm², or px² without spacing).
 */
export function roiStats(data, width, height, table, shape, a, b, spacing) {
  const c0 = Math.max(0, Math.floor(Math.min(a[0], b[0]))), c1 = Math.min(width - 1, Math.ceil(Math.max(a[0], b[0])));
  const r0 = Math.max(0, Math.floor(Math.min(a[1], b[1]))), r1 = Math.min(height - 1, Math.ceil(Math.max(a[1], b[1])));
  let n = 0, sum = 0, min = Infinity, max = -Infinity;
  const vals = [];
  for (let r = r0; r <= r1; r++) {
    for (let c = c0; c <= c1; c++) {
      if (!inRoi(shape, a, b, c, r)) continue;
      const x = table[data[r * width + c]];
      vals.push(x);
      n++; sum += x;
      if (x < min) min = x;
      if (x > max) max = x;
    }
  }
  const [rs, cs] = spacing || [1, 1];
  if (!n) return { n: 0, mean: NaN, sd: NaN, min: NaN, max: NaN, area: 0, areaUnit: spacing ? 'mm²' : 'px²' };
  const mean = sum / n;
  let ss = 0;
  for (const x of vals) ss += (x - mean) * (x - mean);
  return { n, mean, sd: Math.sqrt(ss / n), min, max, area: n * rs * cs, areaUnit: spacing ? 'mm²' : 'px²' };
}
