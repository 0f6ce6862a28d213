// Saved measurements: the viewer's lengths, angles and ROIs as a TID 1500 "Measurement Report"
// Comprehensive SR (PS3.16 TID 1500, PS3.3 A.35.3; Comprehensive 3D SR, A.35.13, when it holds
// reformats' measurements), built by the server (POST /api/v1/studies/{study}/measurements,
// crates/api/src/measurements.rs), and read back from the study's SR series' DICOM JSON
// metadata (PS3.18 F.2) when the viewer opens. Those of acquired images are SCOORDs on their
// image; those of reformats SCOORD3Ds in patient coordinates (PS3.3 C.18.9) with the series
// and, for a thick slab, its projection and thickness.

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

const REFERENCED_FRAME_OF_REFERENCE = '30060024';
const UID = '0040A124';
const CONCEPT_CODE = '0040A168';

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

/** An SCOORD3D's graphic type, points ([[x, y, z], …]) and Frame of Reference. */
function geometry3d(sc) {
  const d = values(sc, GRAPHIC_DATA).map(Number);
  const pts = [];
  for (let i = 0; i + 2 < d.length; i += 3) pts.push([d[i], d[i + 1], d[i + 2]]);
  const frameOfReference = String(values(sc, REFERENCED_FRAME_OF_REFERENCE)[0] || '');
  if (!frameOfReference) return null;
  return { type: String(values(sc, GRAPHIC_TYPE)[0] || ''), pts, frameOfReference };
}

const isGeometry = (i) => ['SCOORD', 'SCOORD3D'].includes(values(i, VALUE_TYPE)[0]);

/** Projection codes of a thick slab (CID 7203) and the viewer's names for them. */
const PROJECTION_CODES = { 113078: 'max', 113079: 'min', 113049: 'mean' };

/**
 * Where a reformat's measurement group was measured: `{series, slab}` (the Source series
 * UIDREF; Measurement Method and Slice Thickness of a thick slab, or null).
 */
function volumeContext(items) {
  const series = find(items, '121232');
  const method = find(items, '370129005');
  const thick = find(items, '112225');
  const projection = method && PROJECTION_CODES[String(values(values(method, CONCEPT_CODE)[0] || {}, CODE_VALUE)[0])];
  return {
    series: series ? String(values(series, UID)[0] || '') : '',
    slab: projection && thick ? { projection, thickness: numberOf(thick) } : null,
  };
}

/** An SCOORD's graphic type, points ([[x, y], …]), instance and frame. */
function geometry(sc) {
  if (!sc) return null;
  if (values(sc, VALUE_TYPE)[0] === 'SCOORD3D') return geometry3d(sc);
  if (values(sc, VALUE_TYPE)[0] !== 'SCOORD') return null;
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
 * c?, values}}]` with marks as the viewer draws them (an ROI by its bounding box) for those of
 * images, and `[{world: {frameOfReference, series, points, slab}, mark: {type, values,
 * unit?}}]` for those of reformats (patient coordinates: an ROI by its outline, a rectangle's
 * 4 corners, an ellipse's axes' ends; the viewer places them on the planes they lie on).
 */
export function measurementsOf(meta) {
  const out = [];
  const list = find(children(meta), '126010');
  const place = (geo, items, mark) => {
    if (!geo.frameOfReference) { out.push({ sop: geo.sop, frame: geo.frame, mark }); return; }
    const { series, slab } = volumeContext(items);
    if (!series) return;
    let points = geo.pts;
    if (geo.type === 'POLYGON') points = points.slice(0, 4);
    delete mark.a; delete mark.b; delete mark.c;
    out.push({ world: { frameOfReference: geo.frameOfReference, series, points, slab }, mark });
  };
  for (const g of list ? children(list) : []) {
    if (codeOf(g) !== '125007') continue;
    const items = children(g);
    const n = find(items, '410668003') || find(items, '1483009');
    if (n) {
      const kind = codeOf(n) === '410668003' ? 'length' : 'angle';
      const geo = geometry(children(n).find(isGeometry));
      if (!geo || geo.pts.length !== (kind === 'length' ? 2 : 3)) continue;
      const [a, b, c] = geo.pts;
      place(geo, items, { type: kind, a, b, ...(c ? { c } : {}), values: { [kind]: numberOf(n) } });
      continue;
    }
    const geo = geometry(find(items, '111030'));
    if (!geo || !['ELLIPSE', 'POLYGON'].includes(geo.type) || geo.pts.length < 4) continue;
    const xs = geo.pts.map((p) => p[0]), ys = geo.pts.map((p) => p[1]);
    const v = (code) => { const x = find(items, code); return x ? numberOf(x) : NaN; };
    place(geo, items, {
      type: geo.type === 'ELLIPSE' ? 'ellipse' : 'rect',
      a: [Math.min(...xs), Math.min(...ys)], b: [Math.max(...xs), Math.max(...ys)],
      values: { mean: v('373098007'), sd: v('386136009'), min: v('255605001'), max: v('56851009'), area: v('42798000') },
      unit: unitOf(find(items, '373098007')) === "[hnsf'U]" ? 'HU' : '',
    });
  }
  return out;
}

/**
 * Saves the study's measurements (the whole set: `[{instance, frame?, kind, points, …}]` on
 * images, `[{frameOfReference, series, kind, points, slab?, …}]` on reformats); with `peer`,
 * at that peer, which holds the study.
 */
export function saveMeasurements(study, measurements, peer = '') {
  const at = peer ? `?peer=${encodeURIComponent(peer)}` : '';
  return json(`/api/v1/studies/${encodeURIComponent(study)}/measurements${at}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ measurements }),
  });
}
