// Saved measurements: the viewer's lengths, angles and ROIs of acquired images as a TID 1500
// "Measurement Report" Comprehensive SR (PS3.16 TID 1500, PS3.3 A.35.3), built by the server
// (POST /api/v1/studies/{study}/measurements, crates/api/src/measurements.rs), and read back
// from the study's SR series' DICOM JSON metadata (PS3.18 F.2) when the viewer opens.

import { json } from './api.js';
import { values } from './pixels.js';

const CONTENT_SEQUENCE = '0040A730';
const VALUE_TYPE = '0040A040';
const CONCEPT_NAME = '0040A043';
const CODE_VALUE = '00080100';
const GRAPHIC_DATA = '00700022';
const GRAPHIC_TYPE = '00700023';
const REFERENCED_SOP_SEQUENCE = '00081199';
const REFERENCED_SOP_INSTANCE_UID = '00081155';
const REFERENCED_FRAME_NUMBER = '00081160';
const MEASURED_VALUE_SEQUENCE = '0040A300';
const NUMERIC_VALUE = '0040A30A';
const CONTENT_TEMPLATE_SEQUENCE = '0040A504';
const TEMPLATE_IDENTIFIER = '0040DB00';

const codeOf = (item) => String(values(values(item, CONCEPT_NAME)[0] || {}, CODE_VALUE)[0] ?? '');
const children = (item) => values(item, CONTENT_SEQUENCE);
const find = (items, code) => items.find((i) => codeOf(i) === code);
const numberOf = (item) => Number(values(values(item, MEASURED_VALUE_SEQUENCE)[0] || {}, NUMERIC_VALUE)[0]);

/** Whether DICOM JSON metadata is a TID 1500 Measurement Report. */
export function isMeasurementReport(meta) {
  return values(meta, CONTENT_TEMPLATE_SEQUENCE).some((t) => String(values(t, TEMPLATE_IDENTIFIER)[0]) === '1500')
    && codeOf(meta) === '126000';
}

/** The newest Measurement Report of `metas` (by Content Date and Time), or null. */
export function newestReport(metas) {
  const when = (m) => `${values(m, '00080023')[0] || ''}${values(m, '00080033')[0] || ''}`;
  return metas.filter(isMeasurementReport).sort((a, b) => (when(a) < when(b) ? 1 : when(a) > when(b) ? -1 : 0))[0] || null;
}

/** The UCUM code of a NUM item's unit. */
function unitOf(item) {
  const mv = item && values(item, MEASURED_VALUE_SEQUENCE)[0];
  const u = mv && values(mv, '004008EA')[0];
  return u ? String(values(u, CODE_VALUE)[0] || '') : '';
}

/** An SCOORD's graphic type, points ([[x, y], …]), instance and frame. */
function geometry(sc) {
  if (!sc || values(sc, VALUE_TYPE)[0] !== 'SCOORD') return null;
  const d = values(sc, GRAPHIC_DATA).map(Number);
  const pts = [];
  for (let i = 0; i + 1 < d.length; i += 2) pts.push([d[i], d[i + 1]]);
  const img = children(sc).find((i) => values(i, VALUE_TYPE)[0] === 'IMAGE');
  const ref = img && values(img, REFERENCED_SOP_SEQUENCE)[0];
  if (!ref) return null;
  return {
    type: String(values(sc, GRAPHIC_TYPE)[0] || ''), pts,
    sop: String(values(ref, REFERENCED_SOP_INSTANCE_UID)[0] || ''),
    frame: Number(values(ref, REFERENCED_FRAME_NUMBER)[0] || 1),
  };
}

/**
 * The measurements of a Measurement Report (DICOM JSON): `[{sop, frame, mark: {type, a, b,
 * c?, values}}]` with marks as the viewer draws them (an ROI by its bounding box).
 */
export function measurementsOf(meta) {
  const out = [];
  const list = find(children(meta), '126010');
  for (const g of list ? children(list) : []) {
    if (codeOf(g) !== '125007') continue;
    const items = children(g);
    const n = find(items, '410668003') || find(items, '1483009');
    if (n) {
      const kind = codeOf(n) === '410668003' ? 'length' : 'angle';
      const geo = geometry(children(n).find((i) => values(i, VALUE_TYPE)[0] === 'SCOORD'));
      if (!geo || geo.pts.length !== (kind === 'length' ? 2 : 3)) continue;
      const [a, b, c] = geo.pts;
      out.push({ sop: geo.sop, frame: geo.frame, mark: { type: kind, a, b, ...(c ? { c } : {}), values: { [kind]: numberOf(n) } } });
      continue;
    }
    const geo = geometry(find(items, '111030'));
    if (!geo || !['ELLIPSE', 'POLYGON'].includes(geo.type) || geo.pts.length < 4) continue;
    const xs = geo.pts.map((p) => p[0]), ys = geo.pts.map((p) => p[1]);
    const v = (code) => { const x = find(items, code); return x ? numberOf(x) : NaN; };
    out.push({
      sop: geo.sop, frame: geo.frame,
      mark: {
        type: geo.type === 'ELLIPSE' ? 'ellipse' : 'rect',
        a: [Math.min(...xs), Math.min(...ys)], b: [Math.max(...xs), Math.max(...ys)],
        values: { mean: v('373098007'), sd: v('386136009'), min: v('255605001'), max: v('56851009'), area: v('42798000') },
        unit: unitOf(find(items, '373098007')) === "[hnsf'U]" ? 'HU' : '',
      },
    });
  }
  return out;
}

/**
 * Saves the study's measurements (the whole set: `[{instance, frame?, kind, points, …}]`);
 * with `peer`, at that peer, which holds the study.
 */
export function saveMeasurements(study, measurements, peer = '') {
  const at = peer ? `?peer=${encodeURIComponent(peer)}` : '';
  return json(`/api/v1/studies/${encodeURIComponent(study)}/measurements${at}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ measurements }),
  });
}
