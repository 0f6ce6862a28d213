// The viewer: one study (held here, or at a peer through /dicom-web/peers/{peer}), one series at
// a time on a canvas. The first image is the server's rendering of the middle slice (/rendered);
// meanwhile the series' raw frames are fetched (WADO-RS frames, PS3.18 10.4.1.1.5, as
// `application/octet-stream`), nearest to the slice on screen first, and windowed here: Modality
// LUT, then the linear VOI LUT (pixels.js). Pixels are drawn as they are (nearest neighbour).

import { ApiError, errorOf, json, request } from './api.js';
import { clear, h } from './dom.js';
import * as px from './pixels.js';

/** Window presets (Hounsfield units): center and width. */
export const PRESETS = [
  { id: 'brain', key: '1', name: 'Brain', center: 40, width: 80 },
  { id: 'subdural', key: '2', name: 'Subdural', center: 75, width: 215 },
  { id: 'stroke', key: '3', name: 'Stroke', center: 40, width: 40 },
  { id: 'bone', key: '4', name: 'Bone', center: 500, width: 2000 },
  { id: 'lung', key: '5', name: 'Lung', center: -600, width: 1500 },
  { id: 'abdomen', key: '6', name: 'Abdomen', center: 50, width: 400 },
  { id: 'angio', key: '7', name: 'Angio', center: 300, width: 600 },
];
const TOOLS = [
  { id: 'scroll', key: 's', name: 'Scroll' },
  { id: 'window', key: 'w', name: 'Window' },
  { id: 'pan', key: 'p', name: 'Pan' },
  { id: 'zoom', key: 'z', name: 'Zoom' },
  { id: 'measure', key: 'm', name: 'Length' },
];
const SVG = 'http://www.w3.org/2000/svg';
/** Cine speed, slices per second. */
const CINE_FPS = 10;
/** What a frame request asks for: the frame's native bytes, uncompressed (PS3.18 8.7.3.5.2). */
const FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"';
/** Frames fetched at the same time. */
const WORKERS = 4;
/** Modalities whose series hold no images to stack. */
const NOT_IMAGES = new Set(['SR', 'KO', 'PR', 'SEG', 'RTSTRUCT', 'DOC']);

export const SHORTCUTS = [
  ['↓ → j, wheel down', 'next slice'],
  ['↑ ← k, wheel up', 'previous slice'],
  ['Page Down / Page Up', '10 slices on / back'],
  ['Home / End', 'first / last slice'],
  ['[ / ]', 'previous / next series'],
  ['1 2 3 4 5 6 7', 'window: brain, subdural, stroke, bone, lung, abdomen, angio'],
  ['0', 'window from the image (DICOM)'],
  ['w s p z m', 'drag tool: window, scroll, pan, zoom, length'],
  ['Delete', 'remove the lengths drawn on this slice'],
  ['c', 'cine: play / stop'],
  ['+ / −, Ctrl+wheel, pinch', 'zoom in / out'],
  ['i', 'invert'],
  ['r', 'reset window, zoom and pan'],
  ['?', 'this help'],
];

export function viewer(app, { study, peer = '', others = [], expectPatient = '', back = { href: '/worklist', label: '‹ Worklist' }, extra = [] }) {
  const base = peer ? `/dicom-web/peers/${encodeURIComponent(peer)}` : '/dicom-web';
  const studyUrl = `${base}/studies/${encodeURIComponent(study)}`;
  const v = {
    series: [], cur: -1, idx: 0,
    window: null, preset: 'default', invert: false,
    zoom: 1, panX: 0, panY: 0,
    tool: matchMedia('(pointer: coarse)').matches ? 'scroll' : 'window',
    lut: null, lutKey: '', imageKey: '', imageKind: '', broken: false,
  };

  // --- the page --------------------------------------------------------------------------
  const canvas = h('canvas', { id: 'view', class: 'view', tabindex: '0', 'aria-label': 'Image', dataset: { state: 'empty' } });
  const img = document.createElement('canvas'); // the current slice at its own size
  const corners = {
    tl: h('div', { class: 'corner tl', id: 'ov-tl' }), tr: h('div', { class: 'corner tr', id: 'ov-tr' }),
    bl: h('div', { class: 'corner bl', id: 'ov-bl' }), br: h('div', { class: 'corner br', id: 'ov-br' }),
  };
  const edges = {
    left: h('div', { class: 'edge left', id: 'or-left' }), right: h('div', { class: 'edge right', id: 'or-right' }),
    top: h('div', { class: 'edge top', id: 'or-top' }), bottom: h('div', { class: 'edge bottom', id: 'or-bottom' }),
  };
  const note = h('div', { class: 'note', role: 'status', id: 'viewer-note' });
  const marks = document.createElementNS(SVG, 'svg');
  marks.setAttribute('class', 'marks');
  marks.id = 'marks';
  const scaleBar = h('div', { class: 'scalebar', id: 'scalebar', hidden: true }, h('span', {}));
  const stage = h('div', { class: 'stage' }, canvas, marks, scaleBar, Object.values(corners), Object.values(edges), note);
  const strip = h('nav', { class: 'strip', 'aria-label': 'Series', id: 'series-strip' });
  const toolButtons = TOOLS.map((t) => h('button', {
    type: 'button', class: 'tool', dataset: { tool: t.id }, title: `${t.name} (${t.key})`,
    onclick: () => setTool(t.id),
  }, t.name));
  const presetButtons = [...PRESETS, { id: 'default', key: '0', name: 'DICOM' }].map((p) => h('button', {
    type: 'button', class: 'preset', dataset: { preset: p.id }, title: `${p.name} window (${p.key})`,
    onclick: () => setPreset(p.id),
  }, p.name));
  const help = h('aside', { class: 'help', id: 'help', hidden: true, 'aria-label': 'Keyboard shortcuts' },
    h('h2', {}, 'Keyboard and gestures'),
    h('dl', {}, SHORTCUTS.map(([k, what]) => [h('dt', {}, k), h('dd', {}, what)])),
    h('p', {}, 'Touch: swipe up/down to scroll slices (Scroll tool), pinch to zoom, two fingers to pan.'),
    h('button', { type: 'button', onclick: () => toggleHelp(false) }, 'Close'));
  const toolbar = h('div', { class: 'toolbar', role: 'toolbar', 'aria-label': 'Viewer tools' },
    back && h('a', { href: back.href, class: 'back' }, back.label),
    extra,
    h('span', { class: 'group' }, toolButtons),
    h('span', { class: 'group' }, presetButtons),
    h('button', { type: 'button', dataset: { action: 'invert' }, onclick: () => { v.invert = !v.invert; schedule(); } }, 'Invert'),
    h('button', { type: 'button', dataset: { action: 'reset' }, onclick: () => reset() }, 'Reset'),
    h('button', { type: 'button', dataset: { action: 'cine' }, onclick: () => cine() }, 'Cine'),
    h('button', { type: 'button', dataset: { action: 'help' }, onclick: () => toggleHelp() }, '?'));
  const banner = h('div', { class: 'banners' });
  clear(app).append(h('section', { class: 'viewer' }, toolbar, banner, h('div', { class: 'body' }, stage, strip), help));
  document.body.classList.add('viewing');

  const say = (text, kind = 'info') => banner.append(h('p', { class: `banner ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text));
  if (peer) say(`Held at ${peer}: shown through this site.`, 'info');
  if (others.length) {
    banner.append(h('p', { class: 'banner info' }, 'Also asked for: ',
      others.map((u) => h('a', { href: `/view/${encodeURIComponent(u)}` }, u)).flatMap((a) => [a, ' '])));
  }

  // --- state helpers ---------------------------------------------------------------------
  const series = () => v.series[v.cur];
  const keyOf = (sl) => `${sl.sop}#${sl.frame}`;
  function pmOf(sl) {
    if (!sl.pm) sl.pm = px.pixelModule(sl.meta);
    return sl.pm;
  }
  function instanceUrl(s, sl) {
    return `${studyUrl}/series/${encodeURIComponent(s.uid)}/instances/${encodeURIComponent(sl.sop)}`;
  }
  function defaultWindow(sl, frame) {
    const pm = pmOf(sl);
    if (pm.windows.length) return { center: pm.windows[0].center, width: pm.windows[0].width };
    return frame ? px.autoWindow(frame, pm) : null;
  }

  // --- drawing ---------------------------------------------------------------------------
  let frameRequested = false;
  function schedule() {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(() => { frameRequested = false; paint(); });
  }

  function sizeCanvas() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const hh = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== hh) { canvas.width = w; canvas.height = hh; }
  }

  /** Puts the current slice into `img`: its raw frame windowed here, or the server's rendering. */
  function prepare() {
    const s = series();
    if (!s || !s.slices || !s.slices.length) return 'empty';
    const sl = s.slices[v.idx];
    const key = keyOf(sl);
    const raw = s.frames.get(key);
    const pm = pmOf(sl);
    if (raw) {
      if (!v.window) v.window = defaultWindow(sl, raw);
      const lutKey = [v.window.center, v.window.width, v.invert, pm.slope, pm.intercept, pm.bitsAllocated,
        pm.bitsStored, pm.pixelRepresentation, pm.photometric].join('|');
      if (lutKey !== v.lutKey) { v.lut = px.displayLut(pm, v.window.center, v.window.width, v.invert); v.lutKey = lutKey; }
      const drawKey = `raw|${key}|${lutKey}`;
      if (v.imageKey !== drawKey) {
        if (img.width !== pm.columns || img.height !== pm.rows) { img.width = pm.columns; img.height = pm.rows; }
        const ctx = img.getContext('2d');
        const data = ctx.createImageData(pm.columns, pm.rows);
        px.applyLut(raw, v.lut, data.data);
        ctx.putImageData(data, 0, 0);
        v.imageKey = drawKey;
      }
      return 'raw';
    }
    const bmp = s.rendered.get(key);
    if (bmp) {
      const drawKey = `rendered|${key}`;
      if (v.imageKey !== drawKey) {
        img.width = pm.columns || bmp.width; img.height = pm.rows || bmp.height;
        img.getContext('2d').drawImage(bmp, 0, 0, img.width, img.height);
        v.imageKey = drawKey;
      }
      return 'rendered';
    }
    return 'loading'; // the previous image stays until this one arrives
  }

  function paint() {
    sizeCanvas();
    const state = prepare();
    const ctx = canvas.getContext('2d');
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const ds = canvas.dataset;
    if (v.imageKey) {
      const fit = Math.min(canvas.width / img.width, canvas.height / img.height);
      const scale = fit * v.zoom;
      const ox = (canvas.width - img.width * scale) / 2 + v.panX;
      const oy = (canvas.height - img.height * scale) / 2 + v.panY;
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(img, ox, oy, img.width * scale, img.height * scale);
      Object.assign(ds, { scale: String(scale), ox: String(ox), oy: String(oy), cols: String(img.width), rows: String(img.height) });
      v.view = { scale, ox, oy };
    }
    const s = series();
    const sl = s && s.slices && s.slices[v.idx];
    // A study that could not be opened stays marked so (a later repaint, e.g. on resize, must
    // not make it look merely empty).
    ds.state = v.broken ? 'error' : state;
    if (sl) {
      canvas.setAttribute('aria-label', `Image ${v.idx + 1} of ${s.slices.length}, series ${s.number ?? ''} ${s.description}`.trim());
      Object.assign(ds, {
        slice: String(v.idx + 1), slices: String(s.slices.length), sop: sl.sop, frame: String(sl.frame),
        series: s.uid, loaded: String(s.frames.size), failed: String(s.failed),
        center: v.window ? String(v.window.center) : '', width: v.window ? String(v.window.width) : '',
        preset: v.preset, invert: String(v.invert),
      });
    }
    overlay(state);
    drawMarks();
    for (const b of toolButtons) b.setAttribute('aria-pressed', String(b.dataset.tool === v.tool));
    for (const b of presetButtons) b.setAttribute('aria-pressed', String(b.dataset.preset === v.preset));
  }

  function overlay(state) {
    const s = series();
    const sl = s && s.slices && s.slices[v.idx];
    if (!sl) return;
    const m = sl.meta;
    const lines = (el, ...ls) => clear(el).append(...ls.filter(Boolean).map((t) => h('div', {}, t)));
    lines(corners.tl, px.personName(px.str(m, px.T.patientName)) || '(no name)',
      [px.str(m, px.T.patientId), px.isoDate(px.str(m, px.T.birthDate)), px.str(m, px.T.sex)].filter(Boolean).join(' · '),
      px.str(m, px.T.institution));
    lines(corners.tr, `${px.isoDate(px.str(m, px.T.studyDate))} ${px.shortTime(px.str(m, px.T.studyTime))}`.trim(),
      px.str(m, px.T.studyDescription),
      `S${s.number ?? '?'} ${s.modality} ${s.description}`.trim(),
      peer ? `at ${peer}` : '');
    const loc = px.num(m, px.T.sliceLocation);
    const thick = px.num(m, px.T.sliceThickness);
    const frames = s.slices.length;
    lines(corners.bl, `Im ${v.idx + 1}/${frames}${sl.frame > 1 || pmOf(sl).frames > 1 ? ` (frame ${sl.frame})` : ''}`,
      [loc !== undefined ? `Loc ${loc.toFixed(1)} mm` : '', thick !== undefined ? `Thick ${thick} mm` : ''].filter(Boolean).join(' · '),
      s.frames.size < frames ? `Loading ${s.frames.size}/${frames}${s.failed ? `, ${s.failed} failed` : ''}` : '',
      state === 'rendered' ? 'Server rendering' : state === 'loading' ? 'Loading…' : '');
    // Orientation labels (PS3.3 C.7.6.2.1.1): where the row and column directions point.
    const o = px.values(m, px.T.imageOrientation).map(Number);
    const row = o.length === 6 ? px.orientationLabel(o.slice(0, 3)) : '';
    const col = o.length === 6 ? px.orientationLabel(o.slice(3, 6)) : '';
    edges.right.textContent = row;
    edges.left.textContent = px.oppositeLabel(row);
    edges.bottom.textContent = col;
    edges.top.textContent = px.oppositeLabel(col);
    const w = v.window;
    const presetName = (PRESETS.find((p) => p.id === v.preset) || {}).name || (v.preset === 'default' ? 'DICOM' : 'custom');
    lines(corners.br, w ? `W ${Math.round(w.width)} L ${Math.round(w.center)} (${presetName})` : '',
      `Zoom ${(v.zoom * 100).toFixed(0)}%`, v.invert ? 'Inverted' : '',
      px.str(m, px.T.lossy) === '01' ? 'LOSSY COMPRESSED' : '');
  }

  // --- lengths and the scale bar ----------------------------------------------------------
  /** Pixel Spacing (PS3.3 10.7.1.3): [between rows, between columns] in mm, or null. */
  function spacingOf(sl) {
    const ps = px.values(sl.meta, px.T.pixelSpacing).map(Number);
    return ps.length === 2 && ps.every((x) => x > 0) ? ps : null;
  }
  /** A point of the canvas (client coordinates) in image pixel coordinates. */
  function toImage(clientX, clientY) {
    const r = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const { scale, ox, oy } = v.view;
    return [((clientX - r.left) * dpr - ox) / scale, ((clientY - r.top) * dpr - oy) / scale];
  }
  /** An image point in the stage's CSS pixels. */
  function toStage([x, y]) {
    const dpr = window.devicePixelRatio || 1;
    const { scale, ox, oy } = v.view;
    return [(ox + x * scale) / dpr, (oy + y * scale) / dpr];
  }
  /** The length of a line in mm (or image pixels without Pixel Spacing). */
  function lengthOf(sl, a, b) {
    const sp = spacingOf(sl);
    const dx = b[0] - a[0], dy = b[1] - a[1];
    return sp ? { value: Math.hypot(dx * sp[1], dy * sp[0]), unit: 'mm' } : { value: Math.hypot(dx, dy), unit: 'px' };
  }
  function drawMarks() {
    while (marks.firstChild) marks.firstChild.remove();
    const s = series();
    const sl = s && s.slices && s.slices[v.idx];
    scaleBar.hidden = true;
    if (!sl || !v.view) return;
    for (const m of s.marks.get(keyOf(sl)) || []) {
      const [a, b] = [toStage(m.a), toStage(m.b)];
      const line = document.createElementNS(SVG, 'line');
      for (const [k, val] of [['x1', a[0]], ['y1', a[1]], ['x2', b[0]], ['y2', b[1]]]) line.setAttribute(k, String(val));
      const len = lengthOf(sl, m.a, m.b);
      const label = document.createElementNS(SVG, 'text');
      label.setAttribute('x', String(b[0] + 6));
      label.setAttribute('y', String(b[1] - 6));
      label.setAttribute('class', 'mark-label');
      label.textContent = `${len.value.toFixed(1)} ${len.unit}`;
      marks.append(line, label);
    }
    // A scale bar of a round length, at most a fifth of the stage's width.
    const sp = spacingOf(sl);
    if (sp) {
      const dpr = window.devicePixelRatio || 1;
      const cssPerMm = v.view.scale / dpr / sp[1];
      const mm = [1, 2, 5, 10, 20, 50, 100, 200].filter((x) => x * cssPerMm <= canvas.clientWidth / 5).pop();
      if (mm) {
        scaleBar.hidden = false;
        scaleBar.style.width = `${mm * cssPerMm}px`;
        scaleBar.firstChild.textContent = mm >= 10 ? `${mm / 10} cm` : `${mm} mm`;
      }
    }
  }

  // --- cine ------------------------------------------------------------------------------
  let cineTimer = null;
  function cine(on = cineTimer === null) {
    clearInterval(cineTimer);
    cineTimer = null;
    if (on) {
      cineTimer = setInterval(() => {
        const s = series();
        if (!s || !s.slices || !s.slices.length) return;
        go((v.idx + 1) % s.slices.length);
      }, 1000 / CINE_FPS);
    }
    canvas.dataset.cine = String(on);
  }

  // --- loading ---------------------------------------------------------------------------
  async function fetchFrame(s, sl, signal) {
    const r = await request(`${instanceUrl(s, sl)}/frames/${sl.frame}`, { headers: { Accept: FRAME_ACCEPT }, signal });
    if (!r.ok) throw await errorOf(r);
    const bytes = new Uint8Array(await r.arrayBuffer());
    return px.decodeFrame(px.frameFromAnswer(r.headers.get('content-type'), bytes), pmOf(sl));
  }

  async function fetchRendered(s, sl, signal) {
    const path = pmOf(sl).frames > 1 ? `/frames/${sl.frame}/rendered` : '/rendered';
    const r = await request(`${instanceUrl(s, sl)}${path}`, { headers: { Accept: 'image/jpeg' }, signal });
    if (!r.ok) throw await errorOf(r);
    return createImageBitmap(await r.blob());
  }

  /**
   * Starts fetches until WORKERS run; each picks the missing slice nearest to the one shown.
   * While the slice on screen is missing it is fetched alone, with the whole bandwidth.
   */
  function pump(s) {
    while (s.active < WORKERS) {
      const from = s === series() ? v.idx : 0;
      const here = keyOf(s.slices[from]);
      if (s.inflight.has(here)) return;
      const i = px.nearestFirst(from, s.slices.length).find((k) => !s.asked.has(keyOf(s.slices[k])));
      if (i === undefined) return;
      const sl = s.slices[i];
      const key = keyOf(sl);
      s.asked.add(key);
      s.active++;
      const raw = px.windowable(pmOf(sl));
      const ctrl = new AbortController();
      s.inflight.set(key, { idx: i, ctrl });
      (raw ? fetchFrame(s, sl, ctrl.signal) : fetchRendered(s, sl, ctrl.signal))
        .then((x) => (raw ? s.frames : s.rendered).set(key, x), (e) => {
          if (ctrl.signal.aborted) { s.asked.delete(key); return; } // cancelled: asked again later
          if (e instanceof ApiError && e.status === 401) return;
          s.failed++;
          if (s.failed === 1) say(`Some images could not be loaded: ${e.message}`, 'error');
        })
        .finally(() => {
          s.inflight.delete(key);
          s.active--;
          if (s === series()) schedule();
          pump(s);
        });
    }
  }

  async function openSeries(i) {
    const s = v.series[i];
    if (!s) return;
    v.cur = i;
    v.imageKey = '';
    for (const b of strip.querySelectorAll('button')) b.setAttribute('aria-current', String(Number(b.dataset.index) === i));
    if (!s.slices) {
      note.textContent = 'Loading the series…';
      const metas = await json(`${studyUrl}/series/${encodeURIComponent(s.uid)}/metadata`, { accept: 'application/dicom+json' });
      s.slices = px.slicesOf(metas || []);
      note.textContent = '';
      checkPatient(s);
    }
    if (!s.slices.length) { note.textContent = 'This series has no images.'; schedule(); return; }
    v.idx = Math.floor(s.slices.length / 2);
    if (v.preset === 'default') v.window = null;
    const first = s.slices[v.idx];
    // The server's rendering of the middle slice at once; the raw frames follow.
    fetchRendered(s, first).then((bmp) => { s.rendered.set(keyOf(first), bmp); schedule(); }, () => {});
    pump(s);
    schedule();
  }

  let patientChecked = false;
  function checkPatient(s) {
    if (patientChecked || !expectPatient || !s.slices.length) return;
    patientChecked = true;
    const pid = px.str(s.slices[0].meta, px.T.patientId);
    if (pid !== expectPatient) {
      say(`Warning: this study belongs to patient ID ${pid || '(none)'}, not ${expectPatient} as the launching system said.`, 'error');
    }
  }

  function drawStrip() {
    clear(strip);
    v.series.forEach((s, i) => {
      strip.append(h('button', { type: 'button', class: 'series', dataset: { index: String(i), series: s.uid }, onclick: () => openSeries(i) },
        h('img', { src: `${studyUrl}/series/${encodeURIComponent(s.uid)}/thumbnail?viewport=96,96`, alt: '', loading: 'lazy', width: '96', height: '96' }),
        h('span', {}, `S${s.number ?? '?'} ${s.modality}`), h('small', {}, `${s.description} (${s.count})`)));
    });
  }

  async function start() {
    note.textContent = 'Loading the study…';
    let list;
    try {
      list = await json(`${studyUrl}/series`, { accept: 'application/dicom+json' });
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      note.textContent = '';
      say(e.status === 404 ? 'No such study, or you may not see it.' : `The study could not be opened: ${e.message}`, 'error');
      v.broken = true; schedule();
      return;
    }
    v.series = (list || []).map((r) => ({
      uid: px.str(r, px.T.seriesUid), number: px.num(r, px.T.seriesNumber), modality: px.str(r, px.T.modality),
      description: px.str(r, px.T.seriesDescription), count: px.num(r, '00201209', 0, 0),
      slices: null, frames: new Map(), rendered: new Map(), asked: new Set(), inflight: new Map(), active: 0, failed: 0, marks: new Map(),
    })).sort((a, b) => (a.number ?? 1e9) - (b.number ?? 1e9));
    note.textContent = '';
    // A study the user may not see answers like a missing one (empty), never differently.
    if (!v.series.length) { say('No such study, or you may not see it.', 'error'); v.broken = true; schedule(); return; }
    drawStrip();
    const images = v.series.filter((s) => !NOT_IMAGES.has(s.modality));
    const best = (images.length ? images : v.series).reduce((a, b) => (b.count > a.count ? b : a));
    await openSeries(v.series.indexOf(best));
  }

  // --- interaction -----------------------------------------------------------------------
  function go(i) {
    const s = series();
    if (!s || !s.slices || !s.slices.length) return;
    const n = Math.max(0, Math.min(s.slices.length - 1, i));
    if (n !== v.idx) { v.idx = n; schedule(); makeRoom(s); pump(s); }
  }
  /**
   * When the slice on screen is neither loaded nor coming, cancels the other fetches (they are
   * asked again later), so it does not share the bandwidth.
   */
  function makeRoom(s) {
    const key = keyOf(s.slices[v.idx]);
    if (s.frames.has(key) || s.rendered.has(key) || s.inflight.has(key)) return;
    for (const f of s.inflight.values()) f.ctrl.abort();
  }
  function setTool(id) { v.tool = id; schedule(); }
  function setPreset(id) {
    const p = PRESETS.find((x) => x.id === id);
    v.preset = p ? id : 'default';
    if (p) v.window = { center: p.center, width: p.width };
    else {
      const s = series();
      const sl = s && s.slices && s.slices[v.idx];
      v.window = sl ? defaultWindow(sl, s.frames.get(keyOf(sl))) : null;
    }
    schedule();
  }
  function reset() { v.zoom = 1; v.panX = 0; v.panY = 0; v.invert = false; setPreset('default'); }
  function zoomBy(f) { v.zoom = Math.max(0.1, Math.min(40, v.zoom * f)); schedule(); }
  function toggleHelp(show) { help.hidden = show === undefined ? !help.hidden : !show; }

  window.addEventListener('keydown', (e) => {
    if (e.target instanceof HTMLInputElement || e.altKey || e.metaKey || (e.ctrlKey && e.key !== '0')) return;
    const preset = PRESETS.find((p) => p.key === e.key);
    const tool = TOOLS.find((t) => t.key === e.key);
    let done = true;
    switch (e.key) {
      case 'ArrowDown': case 'ArrowRight': case 'j': go(v.idx + 1); break;
      case 'ArrowUp': case 'ArrowLeft': case 'k': go(v.idx - 1); break;
      case 'PageDown': go(v.idx + 10); break;
      case 'PageUp': go(v.idx - 10); break;
      case 'Home': go(0); break;
      case 'End': go(Infinity); break;
      case ']': openSeries(Math.min(v.series.length - 1, v.cur + 1)); break;
      case '[': openSeries(Math.max(0, v.cur - 1)); break;
      case '0': setPreset('default'); break;
      case 'i': v.invert = !v.invert; schedule(); break;
      case 'c': cine(); break;
      case 'Delete': case 'Backspace': {
        const s = series();
        if (s && s.slices) s.marks.delete(keyOf(s.slices[v.idx]));
        drawMarks();
        break;
      }
      case 'r': reset(); break;
      case '+': case '=': zoomBy(1.25); break;
      case '-': zoomBy(0.8); break;
      case '?': toggleHelp(); break;
      case 'Escape': toggleHelp(false); break;
      default:
        if (preset) setPreset(preset.id);
        else if (tool) setTool(tool.id);
        else done = false;
    }
    if (done) e.preventDefault();
  });

  let wheelRest = 0;
  canvas.addEventListener('wheel', (e) => {
    e.preventDefault();
    if (e.ctrlKey) { zoomBy(Math.exp(-e.deltaY / 300)); return; }
    // A mouse notch is one slice; a touchpad's small deltas add up to one.
    const d = e.deltaMode === 0 ? e.deltaY : e.deltaY * 40;
    if (Math.abs(d) >= 40) { go(v.idx + Math.sign(d)); wheelRest = 0; return; }
    wheelRest += d;
    if (Math.abs(wheelRest) >= 40) { go(v.idx + Math.sign(wheelRest)); wheelRest = 0; }
  }, { passive: false });

  const pointers = new Map();
  let pinch = null;
  let scrollRest = 0;
  canvas.addEventListener('contextmenu', (e) => e.preventDefault());
  canvas.addEventListener('pointerdown', (e) => {
    canvas.setPointerCapture(e.pointerId);
    pointers.set(e.pointerId, { x: e.clientX, y: e.clientY, button: e.button });
    if (pointers.size === 2) {
      const [a, b] = [...pointers.values()];
      pinch = { d: Math.hypot(a.x - b.x, a.y - b.y) || 1, mx: (a.x + b.x) / 2, my: (a.y + b.y) / 2, zoom: v.zoom, panX: v.panX, panY: v.panY };
    }
    scrollRest = 0;
    const s = series();
    if (v.tool === 'measure' && e.button === 0 && pointers.size === 1 && v.view && s && s.slices) {
      const at = toImage(e.clientX, e.clientY);
      const key = keyOf(s.slices[v.idx]);
      const m = { a: at, b: at };
      s.marks.set(key, [...(s.marks.get(key) || []), m]);
      v.drawing = { m, id: e.pointerId };
    }
  });
  canvas.addEventListener('pointermove', (e) => {
    const p = pointers.get(e.pointerId);
    if (!p) return;
    const dx = e.clientX - p.x, dy = e.clientY - p.y;
    p.x = e.clientX; p.y = e.clientY;
    const dpr = window.devicePixelRatio || 1;
    if (pinch && pointers.size >= 2) {
      const [a, b] = [...pointers.values()];
      v.zoom = Math.max(0.1, Math.min(40, pinch.zoom * (Math.hypot(a.x - b.x, a.y - b.y) / pinch.d)));
      v.panX = pinch.panX + ((a.x + b.x) / 2 - pinch.mx) * dpr;
      v.panY = pinch.panY + ((a.y + b.y) / 2 - pinch.my) * dpr;
      schedule();
      return;
    }
    const tool = p.button === 1 ? 'pan' : p.button === 2 ? 'zoom' : v.tool;
    if (tool === 'window') {
      const w = v.window || { center: 40, width: 400 };
      const k = Math.max(0.5, w.width / 300);
      v.window = { center: w.center + dy * k, width: Math.max(1, w.width + dx * k) };
      v.preset = 'custom';
      schedule();
    } else if (tool === 'scroll') {
      const s = series();
      const n = (s && s.slices && s.slices.length) || 1;
      const step = Math.max(6, Math.min(30, canvas.clientHeight / n));
      scrollRest -= dy; // a swipe up goes on to the next slice
      while (Math.abs(scrollRest) >= step) {
        go(v.idx + Math.sign(scrollRest));
        scrollRest -= Math.sign(scrollRest) * step;
      }
    } else if (tool === 'pan') {
      v.panX += dx * dpr; v.panY += dy * dpr; schedule();
    } else if (tool === 'zoom') {
      zoomBy(Math.exp(-dy / 150));
    } else if (tool === 'measure' && v.drawing && v.drawing.id === e.pointerId) {
      v.drawing.m.b = toImage(e.clientX, e.clientY);
      drawMarks();
    }
  });
  const up = (e) => {
    if (v.drawing && v.drawing.id === e.pointerId) {
      const s = series();
      const key = s && s.slices ? keyOf(s.slices[v.idx]) : '';
      const list = (s && s.marks.get(key)) || [];
      // A click without a drag draws nothing.
      if (Math.hypot(v.drawing.m.b[0] - v.drawing.m.a[0], v.drawing.m.b[1] - v.drawing.m.a[1]) < 1) list.pop();
      v.drawing = null;
      drawMarks();
    }
    pointers.delete(e.pointerId);
    if (pointers.size < 2) pinch = null;
  };
  canvas.addEventListener('pointerup', up);
  canvas.addEventListener('pointercancel', up);
  new ResizeObserver(() => schedule()).observe(stage);

  start().catch((e) => say(`The viewer stopped: ${e.message}`, 'error'));
  return v;
}
