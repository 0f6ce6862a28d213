// One viewport of the viewer: a canvas showing one series, either as acquired (the stack) or
// as an axial, coronal or sagittal reformat of its volume (optionally a thick-slab MIP), with
// its own window, zoom and pan, the overlay, orientation labels, a scale bar, and the
// measurements (length, angle, ellipse and rectangle ROI) on an SVG layer over the image.
// Pixels are drawn as they are (nearest neighbour) with the physical aspect of the image
// (row and column spacing may differ: reformats, non-square Pixel Spacing).
//
// The host (viewer.js) owns the series (metadata, frames, loading) and what is shared: the
// drag tool, the slab thickness, the key images, the layout and linked scrolling.

import { clear, h } from './dom.js';
import * as px from './pixels.js';
import * as vol from './volume.js';
import * as ms from './measure.js';

const SVG = 'http://www.w3.org/2000/svg';
export const MODES = ['stack', 'axial', 'coronal', 'sagittal'];
const MODE_NAMES = { stack: 'Stack', axial: 'Axial', coronal: 'Coronal', sagittal: 'Sagittal' };
const PROJECTION_NAMES = { max: 'MIP', min: 'MinIP', mean: 'Average' };
/** Reformatted images kept per series (each up to a slice's size). */
const REFORMAT_CACHE = 8;

const keyOf = (sl) => `${sl.sop}#${sl.frame}`;

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

/** Pixel Spacing of a slice: [between rows, between columns] in mm, or null. */
export function spacingOf(meta) {
  const ps = px.values(meta, px.T.pixelSpacing).map(Number);
  return ps.length === 2 && ps.every((x) => x > 0) ? ps : null;
}

/**
 * The patient coordinates of mark `m` on reformat image `im` (volume.js toPatient): a line's
 * or an angle's points; a rectangle's 4 corners in order; an ellipse's major axis' ends then
 * its minor axis' (PS3.3 C.18.9.1.2), in mm.
 */
function worldPoints(im, m) {
  const at = (p) => vol.toPatient(im.g, im.plane, im.f, p);
  if (m.type === 'length' || m.type === 'angle') return [m.a, m.b, m.c].filter(Boolean).map(at);
  const x0 = Math.min(m.a[0], m.b[0]), x1 = Math.max(m.a[0], m.b[0]);
  const y0 = Math.min(m.a[1], m.b[1]), y1 = Math.max(m.a[1], m.b[1]);
  if (m.type === 'rect') return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]].map(at);
  const xc = (x0 + x1) / 2, yc = (y0 + y1) / 2;
  const across = [[x0, yc], [x1, yc]], down = [[xc, y0], [xc, y1]];
  const wide = (x1 - x0) * im.spacing[1] >= (y1 - y0) * im.spacing[0];
  return (wide ? [...across, ...down] : [...down, ...across]).map(at);
}

export class Viewport {
  /** `host`: the viewer; `k`: this viewport's number (0 is the first, with the plain ids). */
  constructor(host, k) {
    this.host = host;
    this.k = k;
    const id = (base) => (k === 0 ? base : `${base}-${k}`);
    this.canvas = h('canvas', { id: id('view'), class: 'view', tabindex: '0', 'aria-label': 'Image', dataset: { state: 'empty', viewport: String(k) } });
    this.img = document.createElement('canvas');
    this.corners = {};
    for (const c of ['tl', 'tr', 'bl', 'br']) this.corners[c] = h('div', { class: `corner ${c}`, id: id(`ov-${c}`) });
    this.edges = {};
    for (const e of ['left', 'right', 'top', 'bottom']) this.edges[e] = h('div', { class: `edge ${e}`, id: id(`or-${e}`) });
    this.note = h('div', { class: 'note', role: 'status', id: id('viewer-note') });
    this.marks = svg('svg', { class: 'marks' });
    this.marks.id = id('marks');
    this.scaleBar = h('div', { class: 'scalebar', id: id('scalebar'), hidden: true }, h('span', {}));
    this.el = h('div', { class: 'stage', dataset: { viewport: String(k) } },
      this.canvas, this.marks, this.scaleBar, Object.values(this.corners), Object.values(this.edges), this.note);
    this.s = null;
    /** `{ sop, bitmap }`: the study's first image, shown until a series is (viewer.js). */
    this.preview = null;
    /** The canvas' CSS size (a ResizeObserver keeps it), or null before the first layout. */
    this.cssSize = null;
    this.idx = 0;
    this.mode = 'stack';
    this.pos = {};
    this.mip = false;
    /** The thick slab's projection: 'max' (MIP), 'min' (MinIP), 'mean' (average). */
    this.projection = 'max';
    this.window = null;
    this.preset = 'default';
    this.invert = false;
    this.zoom = 1; this.panX = 0; this.panY = 0;
    this.lut = null; this.lutKey = ''; this.imageKey = ''; this.view = null;
    this.listen();
  }

  // --- what is shown ----------------------------------------------------------------------
  /** Shows series `s` (its slices known) as a stack, at its middle slice. */
  show(s, idx) {
    if (this.s !== s) { this.pos = {}; this.mode = 'stack'; this.mip = false; }
    this.s = s;
    this.idx = idx ?? Math.floor((s.slices.length || 1) / 2);
    this.imageKey = '';
    if (this.preset === 'default') this.window = null;
  }

  /** How many positions the current mode scrolls through. */
  count() {
    const s = this.s;
    if (!s || !s.slices) return 0;
    if (this.mode === 'stack') return s.slices.length;
    const g = this.host.geometry(s);
    return g.error ? 0 : vol.planeAxes(g, this.mode).count;
  }

  /** The current position in the current mode. */
  index() {
    return this.mode === 'stack' ? this.idx : (this.pos[this.mode] ?? Math.floor(this.count() / 2));
  }

  setIndex(i) {
    const n = this.count();
    if (!n) return false;
    const j = Math.max(0, Math.min(n - 1, i));
    if (j === this.index()) return false;
    if (this.mode === 'stack') this.idx = j; else this.pos[this.mode] = j;
    return true;
  }

  /** Switches between the stack and the reformats; says why when the series cannot be. */
  setMode(mode) {
    if (!MODES.includes(mode) || !this.s || !this.s.slices) return;
    if (mode !== 'stack') {
      const g = this.host.geometry(this.s);
      if (g.error) { this.host.say(`${MODE_NAMES[mode]} reformat: ${g.error}`, 'error'); return; }
      if (this.pos[mode] === undefined) {
        // Start at the plane through the slice on screen (its centre, for the other planes).
        const ax = vol.planeAxes(g, mode);
        const along = this.s.slices.length ? g.order.indexOf(this.idx) : -1;
        this.pos[mode] = ax.fixed === 2 && along >= 0 ? along : Math.floor(ax.count / 2);
      }
    }
    this.mode = mode;
    this.imageKey = '';
  }

  /**
   * The image to draw: `{key, markKey, data|bitmap, pm, width, height, spacing, rowDir,
   * colDir, normal, position, sop?, meta}`, or `{state, message}` when there is none.
   */
  current() {
    const s = this.s;
    if (this.preview && !s) {
      // The study's first image before its series is read (viewer.js `fetchPreview`).
      const b = this.preview.bitmap;
      return { key: `preview|${this.preview.sop}`, sop: this.preview.sop, bitmap: b, width: b.width, height: b.height };
    }
    if (!s || !s.slices || !s.slices.length) return { state: 'empty' };
    if (this.mode === 'stack') {
      // Saved measurements of this series' reformats that lie on its slices.
      if (this.host.hasWorldMarks()) {
        const g = this.host.geometry(s);
        if (!g.error) this.host.placeWorldMarks(s, g);
      }
      const sl = s.slices[this.idx];
      const key = keyOf(sl);
      const pm = this.host.pmOf(sl);
      const o = px.values(sl.meta, px.T.imageOrientation).map(Number);
      const plane = vol.slicePlane(sl.meta);
      return {
        key: `stack|${key}`, markKey: key, sl, sop: sl.sop, frame: sl.frame, meta: sl.meta, pm,
        data: s.frames.get(key), bitmap: s.rendered.get(key), width: pm.columns, height: pm.rows,
        spacing: spacingOf(sl.meta), rowDir: o.length === 6 ? o.slice(0, 3) : null, colDir: o.length === 6 ? o.slice(3, 6) : null,
        normal: plane.normal, position: plane.position,
      };
    }
    const g = this.host.geometry(s);
    if (g.error) return { state: 'error', message: g.error };
    this.host.placeWorldMarks(s, g);
    const f = this.index();
    const slab = this.mip ? this.host.slabMm() : 0;
    const key = `${this.mode}|${f}|${slab ? `${this.projection}${slab}` : 0}`;
    const sl0 = s.slices[g.order[0]];
    const pm = this.host.pmOf(sl0);
    let r = s.reformats.get(key);
    if (!r) {
      const frames = g.order.map((i) => s.frames.get(keyOf(s.slices[i])));
      const missing = frames.filter((x) => !x).length;
      if (missing) return { state: 'loading', message: `Loading the volume: ${frames.length - missing}/${frames.length} slices` };
      r = vol.reformat(g, frames, this.mode, f, { slabMm: slab, projection: this.projection, table: this.host.table(pm), pm });
      s.reformats.set(key, r);
      if (s.reformats.size > REFORMAT_CACHE) s.reformats.delete(s.reformats.keys().next().value);
    }
    return {
      key: `${s.uid}|${key}`, markKey: `${s.uid}|${key}`, meta: sl0.meta, pm, data: r.data,
      width: r.width, height: r.height, spacing: r.spacing, rowDir: r.rowDir, colDir: r.colDir,
      normal: r.normal, position: r.position, range: r.range, count: r.count,
      plane: this.mode, f, g, slab: slab ? { projection: this.projection, thickness: Number(slab) } : null,
    };
  }

  /** Positions of every index of the current mode along its normal (linked scrolling). */
  positions() {
    const s = this.s;
    if (!s || !s.slices) return null;
    if (this.mode !== 'stack') {
      const g = this.host.geometry(s);
      return g.error ? null : vol.planePositions(g, this.mode);
    }
    if (!s.stackPositions) {
      const planes = s.slices.map((sl) => vol.slicePlane(sl.meta));
      const n0 = planes[0] && planes[0].normal;
      s.stackPositions = n0 && planes.every((p) => p.position)
        ? { normal: n0, along: planes.map((p) => p.position[0] * n0[0] + p.position[1] * n0[1] + p.position[2] * n0[2]) }
        : null;
    }
    return s.stackPositions;
  }

  frameOfReference() {
    const s = this.s;
    return s && s.slices && s.slices.length ? px.str(s.slices[0].meta, '00200052') : '';
  }

  // --- drawing ----------------------------------------------------------------------------
  sizeCanvas() {
    const dpr = window.devicePixelRatio || 1;
    const css = this.cssSize || { width: this.canvas.clientWidth, height: this.canvas.clientHeight };
    const w = Math.max(1, Math.round(css.width * dpr));
    const hh = Math.max(1, Math.round(css.height * dpr));
    if (this.canvas.width !== w || this.canvas.height !== hh) { this.canvas.width = w; this.canvas.height = hh; }
  }

  defaultWindow(im) {
    const pm = im.pm;
    if (pm.windows.length) return { center: pm.windows[0].center, width: pm.windows[0].width };
    return im.data ? px.autoWindow(im.data, pm) : null;
  }

  /** Puts the current image into `img`: raw bit patterns windowed here, or the server's rendering. */
  prepare(im) {
    if (im.state) return im.state;
    const pm = im.pm;
    if (im.data) {
      if (!this.window) this.window = this.defaultWindow(im);
      const lutKey = [this.window.center, this.window.width, this.invert, pm.slope, pm.intercept, pm.bitsAllocated,
        pm.bitsStored, pm.pixelRepresentation, pm.photometric].join('|');
      if (lutKey !== this.lutKey) { this.lut = px.displayLut(pm, this.window.center, this.window.width, this.invert); this.lutKey = lutKey; }
      const drawKey = `raw|${im.key}|${lutKey}`;
      if (this.imageKey !== drawKey) {
        if (this.img.width !== im.width || this.img.height !== im.height) { this.img.width = im.width; this.img.height = im.height; }
        const ctx = this.img.getContext('2d');
        const data = ctx.createImageData(im.width, im.height);
        if (px.isColour(pm)) px.applyLutColour(im.data, this.lut, data.data, pm);
        else px.applyLut(im.data, this.lut, data.data);
        ctx.putImageData(data, 0, 0);
        this.imageKey = drawKey;
        this.shown = im;
      }
      return 'raw';
    }
    if (im.bitmap) {
      const drawKey = `rendered|${im.key}`;
      if (this.imageKey !== drawKey) {
        this.img.width = im.width || im.bitmap.width; this.img.height = im.height || im.bitmap.height;
        this.img.getContext('2d').drawImage(im.bitmap, 0, 0, this.img.width, this.img.height);
        this.imageKey = drawKey;
        this.shown = im;
      }
      return 'rendered';
    }
    return 'loading'; // the previous image stays until this one arrives
  }

  paint() {
    this.sizeCanvas();
    const im = this.current();
    const state = this.prepare(im);
    const canvas = this.canvas;
    const ctx = canvas.getContext('2d');
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const ds = canvas.dataset;
    if (this.imageKey && this.shown) {
      const img = this.img;
      const [rs, cs] = (this.shown && this.shown.spacing) || [1, 1];
      // Physical aspect: one image pixel is cs mm wide and rs mm high.
      const fit = Math.min(canvas.width / (img.width * cs), canvas.height / (img.height * rs));
      const sx = fit * this.zoom * cs, sy = fit * this.zoom * rs;
      const ox = (canvas.width - img.width * sx) / 2 + this.panX;
      const oy = (canvas.height - img.height * sy) / 2 + this.panY;
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(img, ox, oy, img.width * sx, img.height * sy);
      Object.assign(ds, { scale: String(sx), scaleY: String(sy), ox: String(ox), oy: String(oy), cols: String(img.width), rows: String(img.height) });
      this.view = { sx, sy, ox, oy };
    }
    const s = this.s;
    ds.state = this.host.broken ? 'error' : state;
    if (this.host.broken || state === 'rendered' || state === 'raw') document.getElementById('preview')?.remove();
    ds.mode = this.mode;
    ds.mip = String(this.mip && this.mode !== 'stack');
    ds.projection = this.mip && this.mode !== 'stack' ? this.projection : '';
    ds.active = String(this.host.active === this);
    this.note.textContent = im.message || '';
    if (s && s.slices && s.slices.length) {
      const n = this.count();
      const i = this.index();
      this.canvas.setAttribute('aria-label', `${MODE_NAMES[this.mode]} image ${i + 1} of ${n}, series ${s.number ?? ''} ${s.description}`.trim());
      Object.assign(ds, {
        slice: String(i + 1), slices: String(n), series: s.uid, loaded: String(s.frames.size), failed: String(s.failed),
        center: this.window ? String(this.window.center) : '', width: this.window ? String(this.window.width) : '',
        preset: this.preset, invert: String(this.invert),
        sop: im.sop || '', frame: im.frame ? String(im.frame) : '', key: String(Boolean(im.sop && this.host.isKey(im.sop))),
        range: im.range ? `${im.range[0] + 1}-${im.range[1] + 1}` : '',
      });
    }
    this.overlay(im, state);
    this.drawMarks();
    this.el.classList.toggle('active', this.host.active === this && this.host.layoutCells() > 1);
  }

  overlay(im, state) {
    const s = this.s;
    if (!s || !s.slices || !s.slices.length || !im.meta) return;
    const m = im.meta;
    const lines = (el, ...ls) => clear(el).append(...ls.filter(Boolean).map((t) => h('div', {}, t)));
    lines(this.corners.tl, px.personName(px.str(m, px.T.patientName)) || '(no name)',
      [px.str(m, px.T.patientId), px.isoDate(px.str(m, px.T.birthDate)), px.str(m, px.T.sex)].filter(Boolean).join(' · '),
      px.str(m, px.T.institution));
    lines(this.corners.tr, `${px.isoDate(px.str(m, px.T.studyDate))} ${px.shortTime(px.str(m, px.T.studyTime))}`.trim(),
      px.str(m, px.T.studyDescription),
      `S${s.number ?? '?'} ${s.modality} ${s.description}`.trim(),
      this.host.peer ? `at ${this.host.peer}` : '');
    const n = this.count();
    const i = this.index();
    const bl = [];
    if (this.mode === 'stack') {
      const loc = px.num(m, px.T.sliceLocation);
      const thick = px.num(m, px.T.sliceThickness);
      bl.push(`Im ${i + 1}/${n}${im.frame > 1 || im.pm.frames > 1 ? ` (frame ${im.frame})` : ''}`,
        [loc !== undefined ? `Loc ${loc.toFixed(1)} mm` : '', thick !== undefined ? `Thick ${thick} mm` : ''].filter(Boolean).join(' · '));
      if (im.sop && this.host.isKey(im.sop)) bl.push('★ Key image');
    } else {
      const g = this.host.geometry(s);
      const step = g.error ? 0 : vol.planeAxes(g, this.mode).step;
      bl.push(`${MODE_NAMES[this.mode]} ${i + 1}/${n}${step ? ` · ${step.toFixed(2)} mm apart` : ''}`,
        this.mip ? `${PROJECTION_NAMES[this.projection]} ${this.host.slabMm()} mm${im.range ? ` (${im.range[1] - im.range[0] + 1} planes)` : ''}` : 'Reformat');
    }
    const total = s.slices.length;
    bl.push(s.frames.size < total ? `Loading ${s.frames.size}/${total}${s.failed ? `, ${s.failed} failed` : ''}` : '',
      state === 'rendered' ? 'Server rendering' : state === 'loading' ? 'Loading…' : '');
    lines(this.corners.bl, ...bl);
    // Orientation labels (PS3.3 C.7.6.2.1.1): where the image's rows and columns point.
    const row = im.rowDir ? px.orientationLabel(im.rowDir) : '';
    const col = im.colDir ? px.orientationLabel(im.colDir) : '';
    this.edges.right.textContent = row;
    this.edges.left.textContent = px.oppositeLabel(row);
    this.edges.bottom.textContent = col;
    this.edges.top.textContent = px.oppositeLabel(col);
    const w = this.window;
    const presetName = (this.host.presets.find((p) => p.id === this.preset) || {}).name || (this.preset === 'default' ? 'DICOM' : 'custom');
    lines(this.corners.br, w ? `W ${Math.round(w.width)} L ${Math.round(w.center)} (${presetName})` : '',
      `Zoom ${(this.zoom * 100).toFixed(0)}%`, this.invert ? 'Inverted' : '',
      px.str(m, px.T.lossy) === '01' ? 'LOSSY COMPRESSED' : '');
  }

  // --- measurements -----------------------------------------------------------------------
  /** A point of the canvas (client coordinates) in image coordinates. */
  toImage(clientX, clientY) {
    const r = this.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const { sx, sy, ox, oy } = this.view;
    return [((clientX - r.left) * dpr - ox) / sx, ((clientY - r.top) * dpr - oy) / sy];
  }

  /** An image point in the stage's CSS pixels. */
  toStage([x, y]) {
    const dpr = window.devicePixelRatio || 1;
    const { sx, sy, ox, oy } = this.view;
    return [(ox + x * sx) / dpr, (oy + y * sy) / dpr];
  }

  marksHere() {
    const im = this.shown;
    if (!this.s || !im || !im.markKey) return [];
    return this.s.marks.get(im.markKey) || [];
  }

  clearMarks() {
    if (this.s && this.shown && this.shown.markKey) {
      // A reformat's mark may be shown on several planes (a line lies on more than one):
      // removed from all of them.
      const worlds = new Set((this.s.marks.get(this.shown.markKey) || []).map((m) => m.world).filter(Boolean));
      this.s.marks.delete(this.shown.markKey);
      if (worlds.size) this.host.forgetWorldMarks(worlds);
    }
    this.drawMarks();
    this.host.marksChanged();
  }

  /**
   * A mark just completed on the image shown: its values kept with it (in mm, degrees,
   * modality values) for saving (viewer.js, reports.js). Saved are marks with Pixel Spacing
   * of acquired images (image coordinates) and of reformats (`m.world`: the points in patient
   * coordinates, the series, its Frame of Reference and the slab).
   */
  finished(m) {
    const im = this.shown;
    if (!im || !im.spacing) return;
    if (this.mode === 'stack' ? !im.sop : !(im.g && im.g.frameOfReference)) return;
    const sp = im.spacing;
    if (m.type === 'length') m.values = { length: ms.length(m.a, m.b, sp).value };
    else if (m.type === 'angle') {
      const d = ms.angle(m.a, m.b, m.c, sp);
      if (!Number.isFinite(d)) return;
      m.values = { angle: d };
    } else {
      if (!im.data || px.isColour(im.pm)) return; // a colour ROI has no values to save
      const st = ms.roiStats(im.data, im.width, im.height, this.host.table(im.pm), m.type, m.a, m.b, sp);
      if (!st.n) return;
      m.values = { mean: st.mean, sd: st.sd, min: st.min, max: st.max, area: st.area };
      m.unit = px.str(im.meta, px.T.modality) === 'CT' || this.s.modality === 'CT' ? 'HU' : '';
    }
    if (this.mode !== 'stack') {
      m.world = { frameOfReference: im.g.frameOfReference, series: this.s.uid, points: worldPoints(im, m), slab: im.slab };
    }
    this.host.marksChanged();
  }

  /** What a mark measures, on the image shown. */
  measure(m) {
    const im = this.shown;
    const sp = im.spacing;
    if (m.type === 'length') {
      const l = ms.length(m.a, m.b, sp);
      return { text: `${l.value.toFixed(1)} ${l.unit}`, data: { length: l.value.toFixed(3), unit: l.unit } };
    }
    if (m.type === 'angle') {
      if (!m.c) return { text: '', data: {} };
      const d = ms.angle(m.a, m.b, m.c, sp);
      return { text: Number.isFinite(d) ? `${d.toFixed(1)}°` : '', data: { angle: Number.isFinite(d) ? d.toFixed(3) : '' } };
    }
    if (!im.data) return { text: 'no raw pixels yet', data: {} };
    if (px.isColour(im.pm)) {
      // Colour samples are not measurements (no modality values): the area only.
      const a = ms.roiArea(im.width, im.height, m.type, m.a, m.b, sp);
      return { text: `${a.area.toFixed(1)} ${a.areaUnit} (colour: no values)`, data: { n: String(a.n), area: String(a.area) } };
    }
    const st = ms.roiStats(im.data, im.width, im.height, this.host.table(im.pm), m.type, m.a, m.b, sp);
    const unit = px.str(im.meta, px.T.modality) === 'CT' || this.s.modality === 'CT' ? ' HU' : '';
    const data = { n: String(st.n), mean: String(st.mean), sd: String(st.sd), min: String(st.min), max: String(st.max), area: String(st.area) };
    if (!st.n) return { text: 'empty', data };
    const f = (x) => x.toFixed(1);
    return {
      text: `mean ${f(st.mean)}${unit} SD ${f(st.sd)} · min ${f(st.min)} max ${f(st.max)} · ${f(st.area)} ${st.areaUnit}`,
      data,
    };
  }

  drawMarks() {
    const marks = this.marks;
    while (marks.firstChild) marks.firstChild.remove();
    this.scaleBar.hidden = true;
    const im = this.shown;
    if (!im || !this.view || !this.imageKey) return;
    for (const m of this.marksHere()) {
      const g = svg('g', { class: `mark ${m.type}` });
      const p = [m.a, m.b, m.c].filter(Boolean).map((q) => this.toStage(q));
      if (m.type === 'length' || m.type === 'angle') {
        for (let i = 1; i < p.length; i++) g.append(svg('line', { x1: p[i - 1][0], y1: p[i - 1][1], x2: p[i][0], y2: p[i][1] }));
      } else if (m.type === 'rect') {
        g.append(svg('rect', { x: Math.min(p[0][0], p[1][0]), y: Math.min(p[0][1], p[1][1]), width: Math.abs(p[1][0] - p[0][0]), height: Math.abs(p[1][1] - p[0][1]) }));
      } else {
        g.append(svg('ellipse', { cx: (p[0][0] + p[1][0]) / 2, cy: (p[0][1] + p[1][1]) / 2, rx: Math.abs(p[1][0] - p[0][0]) / 2, ry: Math.abs(p[1][1] - p[0][1]) / 2 }));
      }
      const r = this.measure(m);
      const at = p[p.length - 1];
      const label = svg('text', { x: at[0] + 6, y: at[1] - 6, class: 'mark-label' });
      label.textContent = r.text;
      g.append(label);
      // The geometry in image coordinates and the values, for whoever checks them.
      Object.assign(g.dataset, r.data, { points: JSON.stringify([m.a, m.b, m.c].filter(Boolean)) });
      marks.append(g);
    }
    // A scale bar of a round length, at most a fifth of the stage's width.
    const sp = im.spacing;
    if (sp) {
      const dpr = window.devicePixelRatio || 1;
      const cssPerMm = this.view.sx / dpr / sp[1];
      const mm = [1, 2, 5, 10, 20, 50, 100, 200].filter((x) => x * cssPerMm <= this.canvas.width / dpr / 5).pop();
      if (mm) {
        this.scaleBar.hidden = false;
        this.scaleBar.style.width = `${mm * cssPerMm}px`;
        this.scaleBar.firstChild.textContent = mm >= 10 ? `${mm / 10} cm` : `${mm} mm`;
      }
    }
  }

  // --- interaction ------------------------------------------------------------------------
  listen() {
    const canvas = this.canvas;
    const host = this.host;
    let wheelRest = 0;
    canvas.addEventListener('wheel', (e) => {
      e.preventDefault();
      host.activate(this);
      if (e.ctrlKey) { this.zoomBy(Math.exp(-e.deltaY / 300)); return; }
      // A mouse notch is one slice; a touchpad's small deltas add up to one.
      const d = e.deltaMode === 0 ? e.deltaY : e.deltaY * 40;
      if (Math.abs(d) >= 40) { host.go(this, this.index() + Math.sign(d)); wheelRest = 0; return; }
      wheelRest += d;
      if (Math.abs(wheelRest) >= 40) { host.go(this, this.index() + Math.sign(wheelRest)); wheelRest = 0; }
    }, { passive: false });

    const pointers = new Map();
    let pinch = null;
    let scrollRest = 0;
    canvas.addEventListener('contextmenu', (e) => e.preventDefault());
    canvas.addEventListener('pointerdown', (e) => {
      host.activate(this);
      canvas.setPointerCapture(e.pointerId);
      pointers.set(e.pointerId, { x: e.clientX, y: e.clientY, button: e.button });
      if (pointers.size === 2) {
        const [a, b] = [...pointers.values()];
        pinch = { d: Math.hypot(a.x - b.x, a.y - b.y) || 1, mx: (a.x + b.x) / 2, my: (a.y + b.y) / 2, zoom: this.zoom, panX: this.panX, panY: this.panY };
        this.drawing = null;
      }
      scrollRest = 0;
      const tool = host.tool();
      if (!['measure', 'angle', 'ellipse', 'rect'].includes(tool) || e.button !== 0 || pointers.size !== 1 || !this.view || !this.shown || !this.shown.markKey) return;
      const at = this.toImage(e.clientX, e.clientY);
      if (this.angleOpen) {
        // The angle's third point: set where this press is (and follows the drag).
        this.angleOpen.c = at;
        this.drawing = { m: this.angleOpen, id: e.pointerId, third: true };
        this.drawMarks();
        return;
      }
      const type = { measure: 'length', angle: 'angle', ellipse: 'ellipse', rect: 'rect' }[tool];
      const m = { type, a: at, b: at };
      const key = this.shown.markKey;
      this.s.marks.set(key, [...(this.s.marks.get(key) || []), m]);
      this.drawing = { m, id: e.pointerId, key };
    });
    canvas.addEventListener('pointermove', (e) => {
      const p = pointers.get(e.pointerId);
      if (!p) {
        // A mouse moving without a button shows where the angle's third point would go.
        if (this.angleOpen && this.view) { this.angleOpen.c = this.toImage(e.clientX, e.clientY); this.drawMarks(); }
        return;
      }
      const dx = e.clientX - p.x, dy = e.clientY - p.y;
      p.x = e.clientX; p.y = e.clientY;
      const dpr = window.devicePixelRatio || 1;
      if (pinch && pointers.size >= 2) {
        const [a, b] = [...pointers.values()];
        this.zoom = Math.max(0.1, Math.min(40, pinch.zoom * (Math.hypot(a.x - b.x, a.y - b.y) / pinch.d)));
        this.panX = pinch.panX + ((a.x + b.x) / 2 - pinch.mx) * dpr;
        this.panY = pinch.panY + ((a.y + b.y) / 2 - pinch.my) * dpr;
        host.schedule();
        return;
      }
      const tool = p.button === 1 ? 'pan' : p.button === 2 ? 'zoom' : host.tool();
      if (tool === 'window') {
        const w = this.window || { center: 40, width: 400 };
        const k = Math.max(0.5, w.width / 300);
        this.window = { center: w.center + dy * k, width: Math.max(1, w.width + dx * k) };
        this.preset = 'custom';
        host.schedule();
      } else if (tool === 'scroll') {
        const n = this.count() || 1;
        const step = Math.max(6, Math.min(30, canvas.clientHeight / n));
        scrollRest -= dy; // a swipe up goes on to the next slice
        while (Math.abs(scrollRest) >= step) {
          host.go(this, this.index() + Math.sign(scrollRest));
          scrollRest -= Math.sign(scrollRest) * step;
        }
      } else if (tool === 'pan') {
        this.panX += dx * dpr; this.panY += dy * dpr; host.schedule();
      } else if (tool === 'zoom') {
        this.zoomBy(Math.exp(-dy / 150));
      } else if (this.drawing && this.drawing.id === e.pointerId) {
        const at = this.toImage(e.clientX, e.clientY);
        if (this.drawing.third) this.drawing.m.c = at; else this.drawing.m.b = at;
        this.drawMarks();
      }
    });
    const up = (e) => {
      const d = this.drawing;
      if (d && d.id === e.pointerId) {
        this.drawing = null;
        if (d.third) {
          this.angleOpen = null; // the angle is complete
          this.finished(d.m);
        } else if (Math.hypot(d.m.b[0] - d.m.a[0], d.m.b[1] - d.m.a[1]) < 1) {
          // A click without a drag draws nothing.
          const list = this.s.marks.get(d.key) || [];
          list.splice(list.indexOf(d.m), 1);
        } else if (d.m.type === 'angle') {
          this.angleOpen = d.m; // the first arm is drawn (a to the vertex b); now the third point
        } else {
          this.finished(d.m);
        }
        this.drawMarks();
      }
      pointers.delete(e.pointerId);
      if (pointers.size < 2) pinch = null;
    };
    canvas.addEventListener('pointerup', up);
    canvas.addEventListener('pointercancel', up);
    new ResizeObserver(() => host.schedule()).observe(this.el);
    // The canvas' CSS size, kept here: reading clientWidth in every paint forces a layout after
    // the overlay's text changed (a paint per loaded frame while the stack streams in).
    new ResizeObserver((entries) => {
      const r = entries[entries.length - 1].contentRect;
      this.cssSize = { width: r.width, height: r.height };
      host.schedule();
    }).observe(canvas);
  }

  zoomBy(f) { this.zoom = Math.max(0.1, Math.min(40, this.zoom * f)); this.host.schedule(); }

  reset() { this.zoom = 1; this.panX = 0; this.panY = 0; this.invert = false; }
}
