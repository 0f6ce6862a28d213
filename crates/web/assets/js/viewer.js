// The viewer: one study (held here, or at a peer through /dicom-web/peers/{peer}) in one, two
// or four viewports (viewport.js). The first image is the server's rendering of the middle
// slice (/rendered); meanwhile the series' raw frames are fetched (WADO-RS frames, PS3.18
// 10.4.1.1.5, as `application/octet-stream`), nearest to the slice on screen first, and
// windowed here: Modality LUT, then the linear VOI LUT (pixels.js). Reformats and MIP are
// computed here from the frames (volume.js); key images are saved by the server as a Key
// Object Selection Document (keyimages.js).

import { ApiError, errorOf, json, request, sessionGone } from './api.js';
import { clear, h, toast } from './dom.js';
import * as px from './pixels.js';
import * as vol from './volume.js';
import { MODES, Viewport } from './viewport.js';
import { isRejectionNote, keyImagesOf, markKeyImage, unmarkKeyImage } from './keyimages.js';
import { measurementsOf, newestReport, saveMeasurements } from './reports.js';

/**
 * A study's first image, relative to the study's URL: its thumbnail (the middle slice of the
 * largest series) at natural size, at the quality of `/rendered`. The page preloads it
 * (crates/web/src/lib.rs `preview_url`, the same URL) and main.js asks for it at boot.
 */
export const PREVIEW = 'thumbnail?viewport=8192,8192&quality=90';

/**
 * The frame worker (frames.js): fetches and decodes frames off the main thread. One for the
 * page; null where module workers are missing (frames are then fetched here).
 */
let framesWorker;
const framesWaiting = new Map();
let framesNext = 1;
function frameWorker() {
  if (framesWorker === undefined) {
    try {
      framesWorker = new Worker(new URL('./frames.js', import.meta.url), { type: 'module' });
      framesWorker.onmessage = (e) => {
        const on = framesWaiting.get(e.data.id);
        if (e.data.done) framesWaiting.delete(e.data.id);
        if (on) on(e.data);
      };
      // A worker that cannot run (its script refused or broken): frames are fetched here.
      framesWorker.onerror = () => {
        framesWorker = null;
        for (const on of framesWaiting.values()) on({ done: true, status: 0, error: 'worker' });
        framesWaiting.clear();
      };
    } catch {
      framesWorker = null;
    }
  }
  return framesWorker;
}

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
  { id: 'angle', key: 'n', name: 'Angle' },
  { id: 'ellipse', key: 'e', name: 'Ellipse' },
  { id: 'rect', key: 'b', name: 'Rectangle' },
];
/** Plane buttons and their keys (Shift + letter). */
const PLANE_KEYS = { O: 'stack', A: 'axial', C: 'coronal', S: 'sagittal' };
const PLANE_NAMES = { stack: 'Stack', axial: 'Axial', coronal: 'Coronal', sagittal: 'Sagittal' };
/** Layouts: [columns, rows]. */
const LAYOUTS = { '1x1': [1, 1], '1x2': [2, 1], '2x2': [2, 2] };
/** Cine speed, slices per second. */
const CINE_FPS = 10;
/** What a frame request asks for: the frame's native bytes, uncompressed (PS3.18 8.7.3.5.2). */
const FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"';
/** Requests for single frames (or renderings) at the same time. */
const WORKERS = 4;
/**
 * Frames asked for in one request (the series frames request, docs/web.md), and such requests
 * at a time: one request per slice cost Chromium more than the bytes (reading 300 frames one
 * request each, four at a time, took 2.1–2.3 s on loopback; 10 requests of 32 frames 0.7–0.9
 * s; 5 of 64, two at a time, 0.45 s); two at a time rather than four, so that on a slow link
 * the frames nearest the one on screen share the bandwidth with fewer others. Studies held at
 * a peer are asked frame by frame, WORKERS at a time.
 */
const BATCH = 64;
const BATCH_WORKERS = 2;
/** What a request for several frames asks for: uncompressed, decoded by the server if need be. */
const BATCH_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1';
/** Modalities whose series hold no images to stack. */
const NOT_IMAGES = new Set(['SR', 'KO', 'PR', 'SEG', 'RTSTRUCT', 'DOC']);
/** Default thick-slab thickness (mm). */
const DEFAULT_SLAB_MM = 10;

export const SHORTCUTS = [
  ['↓ → j, wheel down', 'next slice'],
  ['↑ ← k, wheel up', 'previous slice'],
  ['Page Down / Page Up', '10 slices on / back'],
  ['Home / End', 'first / last slice'],
  ['[ / ]', 'previous / next series'],
  ['1 2 3 4 5 6 7', 'window: brain, subdural, stroke, bone, lung, abdomen, angio'],
  ['0', 'window from the image (DICOM)'],
  ['w s p z', 'drag tool: window, scroll, pan, zoom'],
  ['m n e b', 'measure: length, angle (drag one arm, then click the third point), ellipse ROI, rectangle ROI'],
  ['Delete', 'remove the measurements drawn on this image'],
  ['Shift+O / A / C / S', 'stack as acquired / axial / coronal / sagittal reformat'],
  ['Shift+M / Shift+N / Shift+V', 'thick slab on / off: MIP, MinIP, average (slab thickness in the toolbar, mm)'],
  ['l', 'layout: 1×1, 1×2, 2×2'],
  ['v', 'next viewport'],
  ['Shift+L', 'linked scrolling on / off'],
  ['Shift+K', 'mark the image as a key image, or unmark it'],
  ['c', 'cine: play / stop'],
  ['+ / −, Ctrl+wheel, pinch', 'zoom in / out'],
  ['i', 'invert'],
  ['r', 'reset window, zoom and pan'],
  ['?', 'this help'],
];

/**
 * The first image of the study at `studyUrl` ([PREVIEW]), decoded: `{ sop, bitmap }`, or null
 * when there is none (the viewer then goes the usual way). main.js starts it at boot, before
 * the session check, so that it is decoded by the time the viewer is built.
 */
export async function loadPreview(studyUrl) {
  try {
    // No headers of our own: the request must match the page's preload to reuse its answer.
    const r = await request(`${studyUrl}/${PREVIEW}`);
    if (!r.ok) return null;
    const sop = (/\/instances\/([0-9.]+)$/.exec(r.headers.get('content-location') || '') || [])[1];
    return sop ? { sop, bitmap: await createImageBitmap(await r.blob()) } : null;
  } catch {
    return null;
  }
}

export function viewer(app, { study, peer = '', others = [], expectPatient = '', back = { href: '/worklist', label: '‹ Worklist' }, extra = [], early = null }) {
  const base = peer ? `/dicom-web/peers/${encodeURIComponent(peer)}` : '/dicom-web';
  const studyUrl = `${base}/studies/${encodeURIComponent(study)}`;
  const v = {
    series: [], viewports: [], active: null, layout: '1x1', link: true, keySops: new Set(),
    tool: matchMedia('(pointer: coarse)').matches ? 'scroll' : 'window',
    slab: DEFAULT_SLAB_MM, broken: false, tables: new Map(),
    // Measurements of every series, by image (`sop#frame`) or reformatted plane
    // (`series|plane|index|slab`), all saved (reports.js); `worldMarks`: the saved measurements
    // of reformats (patient coordinates), placed on their series' planes once its volume is in.
    marks: new Map(), marksLoaded: null, saveTimer: 0, worldMarks: [], worldVersion: 0,
  };
  const keyOf = (sl) => `${sl.sop}#${sl.frame}`;
  // The study's first image, asked for at once: the server's thumbnail of its representative
  // slice at natural size (the shell preloads the same URL, see crates/web/src/lib.rs
  // `preview_url`); Content-Location says which instance it is. Drawn before the metadata is in.
  const preview = peer ? Promise.resolve(null) : (early || loadPreview(studyUrl));

  // --- the host the viewports ask ---------------------------------------------------------
  const host = {
    peer, presets: PRESETS,
    get active() { return v.active; },
    get broken() { return v.broken; },
    tool: () => v.tool,
    slabMm: () => v.slab,
    pmOf(sl) { if (!sl.pm) sl.pm = px.pixelModule(sl.meta); return sl.pm; },
    geometry(s) { if (!s.geometry) s.geometry = vol.volumeGeometry(s.slices); return s.geometry; },
    table(pm) {
      const k = [pm.bitsAllocated, pm.bitsStored, pm.pixelRepresentation, pm.slope, pm.intercept].join('|');
      if (!v.tables.has(k)) v.tables.set(k, vol.modalityTable(pm));
      return v.tables.get(k);
    },
    isKey: (sop) => v.keySops.has(sop),
    marksChanged: () => saveSoon(),
    placeWorldMarks, forgetWorldMarks, hasWorldMarks: () => v.worldMarks.length > 0,
    layoutCells: () => v.viewports.length,
    activate, go, schedule,
    say: (text, kind) => say(text, kind),
  };

  // --- the page --------------------------------------------------------------------------
  const grid = h('div', { class: 'grid', id: 'viewports', dataset: { layout: v.layout } });
  const strip = h('nav', { class: 'strip', 'aria-label': 'Series', id: 'series-strip' });
  const pressed = (b, on) => b.setAttribute('aria-pressed', String(on));
  const toolButtons = TOOLS.map((t) => h('button', {
    type: 'button', class: 'tool', dataset: { tool: t.id }, title: `${t.name} (${t.key})`,
    onclick: () => setTool(t.id),
  }, t.name));
  const presetButtons = [...PRESETS, { id: 'default', key: '0', name: 'DICOM' }].map((p) => h('button', {
    type: 'button', class: 'preset', dataset: { preset: p.id }, title: `${p.name} window (${p.key})`,
    onclick: () => setPreset(p.id),
  }, p.name));
  const planeButtons = MODES.map((m) => h('button', {
    type: 'button', class: 'plane', dataset: { plane: m },
    title: `${PLANE_NAMES[m]} (Shift+${Object.keys(PLANE_KEYS).find((k) => PLANE_KEYS[k] === m)})`,
    onclick: () => setMode(m),
  }, PLANE_NAMES[m]));
  const SLABS = [['max', 'mip', 'MIP', 'Thick-slab maximum intensity projection (Shift+M)'], ['min', 'minip', 'MinIP', 'Thick-slab minimum intensity projection (Shift+N)'], ['mean', 'average', 'Avg', 'Thick-slab average (Shift+V)']];
  const slabButtons = SLABS.map(([proj, action, label, title]) => h('button', { type: 'button', dataset: { action, projection: proj }, title, onclick: () => toggleMip(undefined, proj) }, label));
  const slabInput = h('input', {
    type: 'number', id: 'slab', min: '0', max: '500', step: '1', value: String(v.slab), 'aria-label': 'Slab thickness (mm)', title: 'Slab thickness (mm)', class: 'slab',
    onchange: (e) => {
      const x = Number(e.target.value);
      if (Number.isFinite(x) && x >= 0 && x <= 500) { v.slab = x; schedule(); } else e.target.value = String(v.slab);
    },
  });
  const layoutButtons = Object.keys(LAYOUTS).map((l) => h('button', {
    type: 'button', class: 'layout', dataset: { layout: l }, title: `Layout ${l.replace('x', '×')} (l)`,
    onclick: () => setLayout(l),
  }, l.replace('x', '×')));
  const linkButton = h('button', { type: 'button', dataset: { action: 'link' }, title: 'Linked scrolling (Shift+L)', onclick: () => setLink(!v.link) }, 'Link');
  const keyButton = h('button', { type: 'button', dataset: { action: 'key-image' }, title: 'Mark or unmark as key image (Shift+K)', onclick: () => markKey() }, '★ Key');
  const help = h('aside', { class: 'help', id: 'help', hidden: true, 'aria-label': 'Keyboard shortcuts' },
    h('h2', {}, 'Keyboard and gestures'),
    h('dl', {}, SHORTCUTS.map(([k, what]) => [h('dt', {}, k), h('dd', {}, what)])),
    h('p', {}, 'Touch: swipe up/down to scroll slices (Scroll tool), pinch to zoom, two fingers to pan. Tap a viewport to make it the active one.'),
    h('button', { type: 'button', onclick: () => toggleHelp(false) }, 'Close'));
  const toolbar = h('div', { class: 'toolbar', role: 'toolbar', 'aria-label': 'Viewer tools' },
    back && h('a', { href: back.href, class: 'back' }, back.label),
    extra,
    h('span', { class: 'group' }, toolButtons),
    h('span', { class: 'group' }, presetButtons),
    h('span', { class: 'group' }, planeButtons, slabButtons, h('label', { class: 'slab-label' }, slabInput, ' mm')),
    h('span', { class: 'group' }, layoutButtons, linkButton),
    h('span', { class: 'group' },
      h('button', { type: 'button', dataset: { action: 'invert' }, onclick: () => { const vp = v.active; if (vp) { vp.invert = !vp.invert; schedule(); } } }, 'Invert'),
      h('button', { type: 'button', dataset: { action: 'reset' }, onclick: () => reset() }, 'Reset'),
      h('button', { type: 'button', dataset: { action: 'cine' }, onclick: () => cine() }, 'Cine'),
      keyButton,
      h('button', { type: 'button', dataset: { action: 'help' }, onclick: () => toggleHelp() }, '?')));
  const banner = h('div', { class: 'banners' });
  clear(app).append(h('section', { class: 'viewer' }, toolbar, banner, h('div', { class: 'body' }, grid, strip), help));
  document.body.classList.add('viewing');

  function say(text, kind = 'info') {
    banner.append(h('p', { class: `banner ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text));
  }
  if (peer) say(`Held at ${peer}: shown through this site.`, 'info');
  if (others.length) {
    banner.append(h('p', { class: 'banner info' }, 'Also asked for: ',
      others.map((u) => h('a', { href: `/view/${encodeURIComponent(u)}` }, u)).flatMap((a) => [a, ' '])));
  }

  // --- viewports and layout ---------------------------------------------------------------
  function addViewport() {
    const vp = new Viewport(host, v.viewports.length);
    v.viewports.push(vp);
    return vp;
  }

  /** 1×1, 1×2 or 2×2: new viewports show the next image series (or the active one's). */
  function setLayout(layout) {
    if (!LAYOUTS[layout]) return;
    const [cols, rows] = LAYOUTS[layout];
    const n = cols * rows;
    while (v.viewports.length < n) {
      const vp = addViewport();
      const shown = new Set(v.viewports.map((x) => x.s).filter(Boolean));
      const other = v.series.find((s) => !NOT_IMAGES.has(s.modality) && !shown.has(s));
      const same = !other && v.active && v.active.s && v.active.s.slices && v.active.s.slices.length ? v.active : null;
      // The active viewport's series again: at its slice, so that linked viewports start together.
      if (other || same) loadInto(vp, other || same.s, same ? same.idx : undefined).catch((e) => say(`The series could not be opened: ${e.message}`, 'error'));
    }
    while (v.viewports.length > n) {
      const vp = v.viewports.pop();
      if (v.active === vp) v.active = v.viewports[0];
    }
    v.layout = layout;
    grid.dataset.layout = layout;
    grid.style.gridTemplateColumns = `repeat(${cols}, 1fr)`;
    grid.style.gridTemplateRows = `repeat(${rows}, 1fr)`;
    clear(grid).append(...v.viewports.map((vp) => vp.el));
    schedule();
  }

  function activate(vp) {
    if (v.active === vp) return;
    v.active = vp;
    if (vp.s) pump(vp.s);
    schedule();
  }

  function setLink(on) { v.link = on; schedule(); }

  // --- drawing ---------------------------------------------------------------------------
  let frameRequested = false;
  function schedule() {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(() => { frameRequested = false; paint(); });
  }

  function paint() {
    for (const vp of v.viewports) vp.paint();
    const vp = v.active;
    for (const b of toolButtons) pressed(b, b.dataset.tool === v.tool);
    for (const b of presetButtons) pressed(b, Boolean(vp) && b.dataset.preset === vp.preset);
    for (const b of planeButtons) pressed(b, Boolean(vp) && b.dataset.plane === vp.mode);
    for (const b of layoutButtons) pressed(b, b.dataset.layout === v.layout);
    for (const b of slabButtons) {
      pressed(b, Boolean(vp && vp.mip && vp.projection === b.dataset.projection));
      b.disabled = !vp || vp.mode === 'stack';
    }
    pressed(linkButton, v.link);
    linkButton.disabled = v.viewports.length < 2;
    const im = vp && vp.mode === 'stack' && vp.s && vp.s.slices && vp.s.slices[vp.idx];
    keyButton.disabled = !im;
    pressed(keyButton, Boolean(im && v.keySops.has(im.sop)));
    for (const b of strip.querySelectorAll('button.series')) {
      b.setAttribute('aria-current', String(Boolean(vp) && vp.s === v.series[Number(b.dataset.index)]));
    }
  }

  // --- cine ------------------------------------------------------------------------------
  let cineTimer = null;
  function cine(on = cineTimer === null) {
    clearInterval(cineTimer);
    cineTimer = null;
    if (on) {
      cineTimer = setInterval(() => {
        const vp = v.active;
        const n = vp ? vp.count() : 0;
        if (n) go(vp, (vp.index() + 1) % n);
      }, 1000 / CINE_FPS);
    }
    for (const vp of v.viewports) vp.canvas.dataset.cine = String(on);
  }

  // --- loading ---------------------------------------------------------------------------
  function instanceUrl(s, sl) {
    return `${studyUrl}/series/${encodeURIComponent(s.uid)}/instances/${encodeURIComponent(sl.sop)}`;
  }

  async function fetchFrame(s, sl, signal) {
    const url = `${instanceUrl(s, sl)}/frames/${sl.frame}`;
    const pm = host.pmOf(sl);
    const worker = frameWorker();
    if (worker) {
      const id = framesNext++;
      const m = await new Promise((done) => {
        framesWaiting.set(id, done);
        const { rows, columns, samplesPerPixel, bitsAllocated } = pm;
        worker.postMessage({ id, url, accept: FRAME_ACCEPT, pm: { rows, columns, samplesPerPixel, bitsAllocated } });
        signal.addEventListener('abort', () => worker.postMessage({ cancel: id }), { once: true });
      });
      if (m.data) return m.data;
      if (m.status === 401) sessionGone();
      if (m.error !== 'worker') throw new ApiError(m.status, m.error, m.message);
    }
    const r = await request(url, { headers: { Accept: FRAME_ACCEPT }, signal });
    if (!r.ok) throw await errorOf(r);
    const bytes = new Uint8Array(await r.arrayBuffer());
    return px.decodeFrame(px.frameFromAnswer(r.headers.get('content-type'), bytes), host.pmOf(sl));
  }

  /**
   * Frames `list` (slices of series `s`) in one request, nearest first as listed: `onFrame(i,
   * values)` as each arrives (streamed, in the worker when there is one).
   */
  async function fetchFrames(s, list, signal, onFrame) {
    const ids = list.map((sl) => (sl.frame > 1 ? `${sl.sop}:${sl.frame}` : sl.sop)).join(',');
    const url = `${studyUrl}/series/${encodeURIComponent(s.uid)}/frames?instances=${ids}`;
    const want = list.map((sl) => {
      const { rows, columns, samplesPerPixel, bitsAllocated } = host.pmOf(sl);
      return { sop: sl.sop, frame: sl.frame, pm: { rows, columns, samplesPerPixel, bitsAllocated } };
    });
    const worker = frameWorker();
    if (worker) {
      const id = framesNext++;
      const m = await new Promise((done) => {
        framesWaiting.set(id, (x) => { if (x.data) onFrame(x.part, x.data); if (x.done) done(x); });
        worker.postMessage({ id, url, accept: BATCH_ACCEPT, want });
        signal.addEventListener('abort', () => worker.postMessage({ cancel: id }), { once: true });
      });
      if (m.status === undefined) return;
      if (m.status === 401) sessionGone();
      if (m.error !== 'worker') throw new ApiError(m.status, m.error, m.message);
    }
    const r = await request(url, { headers: { Accept: BATCH_ACCEPT }, signal });
    if (!r.ok) throw await errorOf(r);
    await px.readFrames(r, want, onFrame);
  }

  async function fetchRendered(s, sl, signal) {
    const path = host.pmOf(sl).frames > 1 ? `/frames/${sl.frame}/rendered` : '/rendered';
    const r = await request(`${instanceUrl(s, sl)}${path}`, { headers: { Accept: 'image/jpeg' }, signal });
    if (!r.ok) throw await errorOf(r);
    return createImageBitmap(await r.blob());
  }

  /** The slice index loading should start from: the active viewport's, if it shows `s`. */
  function focusOf(s) {
    const vp = [v.active, ...v.viewports].find((x) => x && x.s === s && x.mode === 'stack');
    return vp ? vp.idx : Math.floor(s.slices.length / 2);
  }

  /**
   * Starts fetches, each for the missing slices nearest to the one shown: up to BATCH raw
   * frames in one request (streamed, nearest first; BATCH_WORKERS such requests at a time),
   * else one slice (WORKERS at a time). While the slice on screen is missing it is fetched
   * alone (first in its request).
   */
  function pump(s) {
    for (;;) {
      const from = focusOf(s);
      const here = keyOf(s.slices[from]);
      if (s.inflight.has(here)) return;
      const order = px.nearestFirst(from, s.slices.length).filter((k) => !s.asked.has(keyOf(s.slices[k])));
      if (!order.length) return;
      const i = order[0];
      const sl = s.slices[i];
      const key = keyOf(sl);
      const raw = px.windowable(host.pmOf(sl));
      const batch = raw && !peer && !s.single.has(key);
      if (s.active >= (batch ? BATCH_WORKERS : WORKERS)) return;
      if (batch) {
        const list = order.map((k) => s.slices[k])
          .filter((x) => px.windowable(host.pmOf(x)) && !s.single.has(keyOf(x))).slice(0, BATCH);
        pumpBatch(s, list);
        continue;
      }
      s.asked.add(key);
      s.active++;
      const ctrl = new AbortController();
      s.inflight.set(key, { idx: i, ctrl });
      if (raw) markFrames(s, 'start');
      (raw ? fetchFrame(s, sl, ctrl.signal) : fetchRendered(s, sl, ctrl.signal))
        .then((x) => { (raw ? s.frames : s.rendered).set(key, x); if (raw) markFrames(s, 'all'); }, (e) => {
          if (ctrl.signal.aborted) { s.asked.delete(key); return; } // cancelled: asked again later
          if (e instanceof ApiError && e.status === 401) return;
          s.failed++;
          if (s.failed === 1) say(`Some images could not be loaded: ${e.message}`, 'error');
        })
        .finally(() => {
          s.inflight.delete(key);
          s.active--;
          if (v.viewports.some((vp) => vp.s === s)) schedule();
          pump(s);
        });
    }
  }

  /**
   * Performance marks (User Timing) for measurements (tests/browser/bench-viewer.mjs): the
   * first request for a series' raw frames, and all of its raw frames in; once per page.
   */
  function markFrames(s, what) {
    const name = `vesalius-frames-${what}`;
    if (what === 'all' && s.frames.size < s.slices.length) return;
    if (!performance.getEntriesByName(name).length) performance.mark(name, { detail: { series: s.uid } });
  }

  /** One request for the raw frames of `list` (pump). */
  function pumpBatch(s, list) {
    markFrames(s, 'start');
    const ctrl = new AbortController();
    // Frames arrive in the order asked: `got` of them so far, `list[got]` the next one.
    const batch = { got: 0 };
    list.forEach((sl, at) => { s.asked.add(keyOf(sl)); s.inflight.set(keyOf(sl), { ctrl, batch, at }); });
    s.active++;
    let got = 0;
    let again = true;
    fetchFrames(s, list, ctrl.signal, (i, data) => {
      const key = keyOf(list[i]);
      s.frames.set(key, data);
      s.inflight.delete(key);
      got++;
      batch.got = i + 1;
      markFrames(s, 'all');
      if (v.viewports.some((vp) => vp.s === s)) schedule();
      pump(s); // the frame on screen in: the next requests may start
    })
      .catch((e) => {
        if (ctrl.signal.aborted) return;
        if (e instanceof ApiError && e.status === 401) { again = false; return; } // logged out
        // The frames not received are asked for one by one (each failing on its own, if so):
        // the series frames request is this server's (a proxy or an older one may lack it).
        for (const sl of list) if (!s.frames.has(keyOf(sl))) s.single.add(keyOf(sl));
        if (got === 0 && e instanceof ApiError && [400, 404, 405, 406].includes(e.status)) {
          for (const sl of s.slices) s.single.add(keyOf(sl));
        }
      })
      .finally(() => {
        // Not received (cancelled, failed): asked again later (unless the session is gone).
        for (const sl of list) {
          const key = keyOf(sl);
          if (s.inflight.get(key)?.ctrl === ctrl) s.inflight.delete(key);
          if (!s.frames.has(key) && again) s.asked.delete(key);
        }
        s.active--;
        if (v.viewports.some((vp) => vp.s === s)) schedule();
        pump(s);
      });
  }

  async function slicesOf(s) {
    if (!s.slices) {
      const metas = await json(`${studyUrl}/series/${encodeURIComponent(s.uid)}/metadata`, { accept: 'application/dicom+json' });
      s.slices = px.slicesOf(metas || []);
      checkPatient(s);
    }
    return s.slices;
  }

  /** Shows series `s` in viewport `vp`: the server's rendering of the middle slice at once. */
  async function loadInto(vp, s, idx) {
    vp.note.textContent = 'Loading the series…';
    await slicesOf(s);
    vp.note.textContent = '';
    if (!s.slices.length) { vp.s = s; vp.note.textContent = 'This series has no images.'; schedule(); return; }
    if (idx === undefined && vp.preview) {
      // The preview already on screen is a slice of this series: open the series there.
      const at = s.slices.findIndex((sl) => sl.sop === vp.preview.sop && sl.frame === 1);
      if (at >= 0) { idx = at; s.rendered.set(keyOf(s.slices[at]), vp.preview.bitmap); }
    }
    vp.preview = null;
    vp.show(s, idx);
    const first = s.slices[vp.idx];
    if (!s.rendered.has(keyOf(first)) && !s.frames.has(keyOf(first))) {
      // The raw frames start once the rendering is drawn (or failed, or late): decoding them
      // would otherwise hold up the page while the first image is on its way.
      let started = false;
      const start = () => { if (!started) { started = true; pump(s); } };
      setTimeout(start, 250);
      fetchRendered(s, first).then((bmp) => {
        s.rendered.set(keyOf(first), bmp);
        schedule();
        requestAnimationFrame(start);
      }, start);
    } else {
      pump(s);
    }
    schedule();
  }

  function openSeries(i) {
    const s = v.series[i];
    if (!s || !v.active) return;
    loadInto(v.active, s).catch((e) => say(`The series could not be opened: ${e.message}`, 'error'));
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
      // Series without images (KO, SR, …) have no thumbnail; a KO goes to the next key image.
      const picture = NOT_IMAGES.has(s.modality)
        ? h('span', { class: 'no-thumb', 'aria-hidden': 'true' }, s.modality === 'KO' ? (s.withdrawn ? '☆' : '★') : s.modality)
        : h('img', { src: `${studyUrl}/series/${encodeURIComponent(s.uid)}/thumbnail?viewport=96,96`, alt: '', loading: 'lazy', width: '96', height: '96' });
      strip.append(h('button', {
        type: 'button', class: 'series', dataset: { index: String(i), series: s.uid, modality: s.modality },
        onclick: () => (s.modality === 'KO' ? (s.withdrawn ? toast('Key images withdrawn (IOCM rejection note).') : nextKeyImage()) : openSeries(i)),
      }, picture, h('span', {}, `S${s.number ?? '?'} ${s.modality}`), h('small', {}, `${s.description} (${s.count})`)));
    });
  }

  /** The active viewport goes to the next key image of its series (after the one shown). */
  function nextKeyImage() {
    const vp = v.active;
    if (!vp || !vp.s || !vp.s.slices) return;
    const n = vp.s.slices.length;
    for (let d = 1; d <= n; d++) {
      const i = (vp.idx + d) % n;
      if (v.keySops.has(vp.s.slices[i].sop)) {
        if (vp.mode !== 'stack') vp.setMode('stack');
        go(vp, i);
        return;
      }
    }
    toast('No key image in this series.');
  }

  function seriesOf(r) {
    return {
      uid: px.str(r, px.T.seriesUid), number: px.num(r, px.T.seriesNumber), modality: px.str(r, px.T.modality),
      description: px.str(r, px.T.seriesDescription), count: px.num(r, '00201209', 0, 0),
      slices: null, frames: new Map(), rendered: new Map(), reformats: new Map(), asked: new Set(), inflight: new Map(), single: new Set(),
      active: 0, failed: 0, marks: v.marks,
    };
  }

  /** The study's series (QIDO-RS), keeping what is known of those already listed. */
  async function listSeries() {
    const list = await json(`${studyUrl}/series`, { accept: 'application/dicom+json' });
    const known = new Map(v.series.map((s) => [s.uid, s]));
    v.series = (list || []).map((r) => known.get(px.str(r, px.T.seriesUid)) || seriesOf(r))
      .sort((a, b) => (a.number ?? 1e9) - (b.number ?? 1e9));
  }

  /** Which images key object documents (KO series) of the study flag. */
  async function loadKeyImages() {
    const keys = new Set();
    let notes = false;
    for (const s of v.series.filter((x) => x.modality === 'KO')) {
      try {
        const metas = await json(`${studyUrl}/series/${encodeURIComponent(s.uid)}/metadata`, { accept: 'application/dicom+json' });
        for (const sop of keyImagesOf(metas || [])) keys.add(sop);
        // A series of rejection notes (key images withdrawn) leads to no key image.
        const withdrawn = Boolean(metas && metas.length && metas.every(isRejectionNote));
        if (withdrawn !== Boolean(s.withdrawn)) { s.withdrawn = withdrawn; notes = true; }
      } catch (e) {
        if (e instanceof ApiError && e.status === 401) return;
        say(`Key images could not be read: ${e.message}`, 'error');
      }
    }
    v.keySops = keys;
    if (notes) drawStrip();
    schedule();
  }

  // --- saved measurements (a TID 1500 Comprehensive SR, reports.js) ----------------------
  /** Draws the measurements of the study's newest Measurement Report. */
  async function loadMeasurements() {
    let n = 0;
    for (const s of v.series.filter((x) => x.modality === 'SR')) {
      try {
        const metas = await json(`${studyUrl}/series/${encodeURIComponent(s.uid)}/metadata`, { accept: 'application/dicom+json' });
        const newest = newestReport([...(metas || []), ...(v.report ? [v.report] : [])]);
        if (newest) v.report = newest;
      } catch (e) {
        if (e instanceof ApiError && e.status === 401) return;
        say(`Measurements could not be read: ${e.message}`, 'error');
      }
    }
    if (v.report) {
      for (const { sop, frame, mark, world } of measurementsOf(v.report)) {
        n++;
        if (world) { v.worldMarks.push({ world, mark, placed: false }); continue; }
        const key = `${sop}#${frame}`;
        v.marks.set(key, [...(v.marks.get(key) || []), mark]);
      }
      v.worldVersion++;
    }
    document.body.dataset.measurementsLoaded = String(n);
    schedule();
  }

  /**
   * Puts the saved measurements of reformats of series `s` (volume geometry `g`) on the planes
   * they lie on (volume.js onPlane: axial, coronal, sagittal; a line may lie on two), each
   * with its slab, and, without a slab, on the acquired slices they lie on (within 5 % of the
   * slice spacing: volume.js onSlice), as marks in that image's coordinates sharing the saved
   * `world`.
   */
  function placeWorldMarks(s, g) {
    if (s.worldPlaced === v.worldVersion || !s.slices) return;
    s.worldPlaced = v.worldVersion;
    const put = (key, w, p) => {
      const m = { ...w.mark, world: w.world };
      if (m.type === 'length' || m.type === 'angle') [m.a, m.b, m.c] = p;
      else {
        m.a = [Math.min(...p.map((q) => q[0])), Math.min(...p.map((q) => q[1]))];
        m.b = [Math.max(...p.map((q) => q[0])), Math.max(...p.map((q) => q[1]))];
      }
      if (!m.c) delete m.c;
      v.marks.set(key, [...(v.marks.get(key) || []), m]);
      v.placedMarks = (v.placedMarks || 0) + 1;
      document.body.dataset.measurementsPlaced = String(v.placedMarks); // (for tests)
    };
    for (const w of v.worldMarks) {
      if (w.placed || w.world.series !== s.uid || w.world.frameOfReference !== g.frameOfReference) continue;
      w.placed = true;
      for (const plane of ['axial', 'coronal', 'sagittal']) {
        const at = vol.onPlane(g, plane, w.world.points);
        const slab = w.world.slab ? `${w.world.slab.projection}${w.world.slab.thickness}` : 0;
        if (at) put(`${s.uid}|${plane}|${at.f}|${slab}`, w, at.points);
      }
      if (w.world.slab) continue;
      for (const sl of s.slices) {
        const p = vol.onSlice(sl.meta, w.world.points, 0.05 * g.spacing[2]);
        if (p) put(keyOf(sl), w, p);
      }
    }
  }

  /** Removes the reformat measurements `worlds` from every plane they were shown on. */
  function forgetWorldMarks(worlds) {
    for (const [key, list] of v.marks) {
      if (list.some((m) => worlds.has(m.world))) v.marks.set(key, list.filter((m) => !worlds.has(m.world)));
    }
    v.worldMarks = v.worldMarks.filter((w) => !worlds.has(w.world));
  }

  /** Saves every measurement, shortly after the last change. */
  function saveSoon() {
    clearTimeout(v.saveTimer);
    v.saveTimer = setTimeout(async () => {
      await v.marksLoaded;
      const list = [];
      const seen = new Set();
      const values = (m) => ({ kind: m.type, ...m.values, ...(m.unit !== undefined ? { unit: m.unit } : {}) });
      const world = (m) => {
        if (seen.has(m.world)) return;
        seen.add(m.world);
        const { frameOfReference, series, points, slab } = m.world;
        list.push({ frameOfReference, series, ...values(m), points, ...(slab ? { slab } : {}) });
      };
      for (const [key, marks] of v.marks) {
        const [sop, frame] = key.split('#');
        for (const m of marks) {
          if (!m.values) continue;
          if (m.world) { world(m); continue; }
          if (key.includes('|')) continue; // a reformat without a Frame of Reference: not saved
          list.push({
            instance: sop, ...(Number(frame) > 1 ? { frame: Number(frame) } : {}),
            ...values(m), points: [m.a, m.b, m.c].filter(Boolean),
          });
        }
      }
      // Saved measurements of reformats not shown yet (their series' volume not opened).
      for (const w of v.worldMarks) if (!w.placed) world({ ...w.mark, world: w.world });
      document.body.dataset.measurementsSaved = 'saving';
      try {
        await saveMeasurements(study, list, peer);
        document.body.dataset.measurementsSaved = String(list.length);
      } catch (e) {
        document.body.dataset.measurementsSaved = 'error';
        if (!(e instanceof ApiError && e.status === 401)) say(`The measurements could not be saved: ${e.message}`, 'error');
      }
    }, 400);
  }

  async function start() {
    const first = addViewport();
    v.active = first;
    setLayout('1x1');
    first.note.textContent = 'Loading the study…';
    preview.then((p) => { if (p && !first.s) { first.preview = p; schedule(); } });
    try {
      await listSeries();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      first.note.textContent = '';
      say(e.status === 404 ? 'No such study, or you may not see it.' : `The study could not be opened: ${e.message}`, 'error');
      v.broken = true; schedule();
      return;
    }
    first.note.textContent = '';
    // A study the user may not see answers like a missing one (empty), never differently.
    if (!v.series.length) { say('No such study, or you may not see it.', 'error'); v.broken = true; schedule(); return; }
    drawStrip();
    loadKeyImages();
    v.marksLoaded = loadMeasurements();
    const images = v.series.filter((s) => !NOT_IMAGES.has(s.modality));
    const best = (images.length ? images : v.series).reduce((a, b) => (b.count > a.count ? b : a));
    await loadInto(first, best);
  }

  // --- key images -------------------------------------------------------------------------
  async function markKey() {
    const vp = v.active;
    const sl = vp && vp.mode === 'stack' && vp.s && vp.s.slices && vp.s.slices[vp.idx];
    if (!sl) { say('Key images are acquired images: show the stack (Shift+O) to mark one.', 'error'); return; }
    keyButton.disabled = true;
    // The same control toggles: a key image is unmarked (the caller's documents that flag it
    // are withdrawn by the server), any other image marked.
    const unmark = v.keySops.has(sl.sop);
    try {
      if (unmark) {
        const r = await unmarkKeyImage(study, sl.sop, peer);
        toast(peer ? `Key image unmarked at ${peer}.` : 'Key image unmarked.');
        if (r && r.stillFlaggedBy > 0) say(`Your mark is withdrawn, but ${r.stillFlaggedBy} other document(s) (another user's or another system's) still flag this image.`, 'info');
      } else {
        const r = await markKeyImage(study, [sl.sop], '', peer);
        v.keySops.add(sl.sop);
        toast(peer ? `Saved as a key image at ${peer} (series ${r.seriesInstanceUID}).` : `Saved as a key image (series ${r.seriesInstanceUID}).`);
      }
      await listSeries();
      drawStrip();
      if (unmark) await loadKeyImages();
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) {
        say(unmark ? `The key image could not be unmarked: ${e.message}` : `The key image could not be saved: ${e.message}`, 'error');
      }
    } finally {
      keyButton.disabled = false;
    }
    schedule();
  }

  // --- interaction -----------------------------------------------------------------------
  /**
   * Moves viewport `vp` to index `i`; with linked scrolling, the other viewports follow: to
   * the plane nearest the same position along their normal when they share the Frame of
   * Reference and their planes are parallel, by the same number of steps when they do not
   * share it (or lack positions); planes at an angle to this one stay.
   */
  function go(vp, i) {
    const before = vp.index();
    if (!vp.setIndex(i)) return;
    const delta = vp.index() - before;
    if (v.link && v.viewports.length > 1) {
      const im = vp.current();
      const here = im.position && im.normal ? im : null;
      const fo = vp.frameOfReference();
      for (const other of v.viewports) {
        if (other === vp || !other.s || !other.s.slices) continue;
        const same = fo && other.frameOfReference() === fo;
        if (same && here) {
          const j = vol.linkedIndex(here.position, here.normal, other.positions());
          if (j !== null) other.setIndex(j);
        } else if (!same) {
          other.setIndex(other.index() + delta);
        }
      }
    }
    for (const x of v.viewports) {
      if (x.s && x.mode === 'stack') { makeRoom(x.s, x.idx); pump(x.s); }
    }
    schedule();
  }

  /**
   * When the slice on screen is neither loaded nor coming next (alone, or the next frame of
   * its request: one later in a request waits for those before it), cancels the fetches in
   * flight (what they had not delivered is asked again later), so that it is fetched first,
   * with the whole bandwidth.
   */
  function makeRoom(s, idx) {
    const key = keyOf(s.slices[idx]);
    if (s.frames.has(key) || s.rendered.has(key)) return;
    const f = s.inflight.get(key);
    if (f && (!f.batch || f.at === f.batch.got)) return;
    for (const g of s.inflight.values()) g.ctrl.abort();
  }

  function setTool(id) { v.tool = id; for (const vp of v.viewports) vp.angleOpen = null; schedule(); }

  function setPreset(id) {
    const vp = v.active;
    if (!vp) return;
    const p = PRESETS.find((x) => x.id === id);
    vp.preset = p ? id : 'default';
    if (p) vp.window = { center: p.center, width: p.width };
    else {
      const im = vp.current();
      vp.window = im.pm ? vp.defaultWindow(im) : null;
    }
    schedule();
  }

  function setMode(mode) {
    const vp = v.active;
    if (!vp) return;
    vp.setMode(mode);
    if (vp.s) pump(vp.s);
    schedule();
  }

  /** The thick slab on or off (a projection other than the one shown: switched to it). */
  function toggleMip(on, projection = 'max') {
    const vp = v.active;
    if (!vp) return;
    if (vp.mode === 'stack') { say('Thick slab: choose a plane first (axial, coronal or sagittal).', 'error'); return; }
    const same = vp.projection === projection;
    vp.mip = on === undefined ? !(vp.mip && same) : on;
    vp.projection = projection;
    schedule();
  }

  function reset() { const vp = v.active; if (vp) { vp.reset(); setPreset('default'); } }
  function toggleHelp(show) { help.hidden = show === undefined ? !help.hidden : !show; }
  function cycleLayout() {
    const ls = Object.keys(LAYOUTS);
    setLayout(ls[(ls.indexOf(v.layout) + 1) % ls.length]);
  }

  window.addEventListener('keydown', (e) => {
    if (e.target instanceof HTMLInputElement || e.altKey || e.metaKey || (e.ctrlKey && e.key !== '0')) return;
    const vp = v.active;
    const preset = PRESETS.find((p) => p.key === e.key);
    const tool = TOOLS.find((t) => t.key === e.key);
    let done = true;
    switch (e.key) {
      case 'ArrowDown': case 'ArrowRight': case 'j': if (vp) go(vp, vp.index() + 1); break;
      case 'ArrowUp': case 'ArrowLeft': case 'k': if (vp) go(vp, vp.index() - 1); break;
      case 'PageDown': if (vp) go(vp, vp.index() + 10); break;
      case 'PageUp': if (vp) go(vp, vp.index() - 10); break;
      case 'Home': if (vp) go(vp, 0); break;
      case 'End': if (vp) go(vp, Infinity); break;
      case ']': case '[': {
        const cur = vp && vp.s ? v.series.indexOf(vp.s) : 0;
        openSeries(e.key === ']' ? Math.min(v.series.length - 1, cur + 1) : Math.max(0, cur - 1));
        break;
      }
      case '0': setPreset('default'); break;
      case 'i': if (vp) { vp.invert = !vp.invert; schedule(); } break;
      case 'c': cine(); break;
      case 'Delete': case 'Backspace': if (vp) vp.clearMarks(); break;
      case 'r': reset(); break;
      case '+': case '=': if (vp) vp.zoomBy(1.25); break;
      case '-': if (vp) vp.zoomBy(0.8); break;
      case '?': toggleHelp(); break;
      case 'Escape': toggleHelp(false); for (const x of v.viewports) x.angleOpen = null; schedule(); break;
      case 'l': cycleLayout(); break;
      case 'v': activate(v.viewports[(v.viewports.indexOf(vp) + 1) % v.viewports.length]); break;
      case 'L': setLink(!v.link); break;
      case 'K': markKey(); break;
      case 'M': toggleMip(); break;
      case 'N': toggleMip(undefined, 'min'); break;
      case 'V': toggleMip(undefined, 'mean'); break;
      default:
        if (PLANE_KEYS[e.key]) setMode(PLANE_KEYS[e.key]);
        else if (preset) setPreset(preset.id);
        else if (tool) setTool(tool.id);
        else done = false;
    }
    if (done) e.preventDefault();
  });

  start().catch((e) => say(`The viewer stopped: ${e.message}`, 'error'));
  return v;
}
