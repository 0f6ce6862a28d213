// `scripts/bench viewer` (issue 6, "Benchmark"): in headless Chromium with a cold browser cache,
// the time from navigation to a CT study of N slices (default 300) to the first image drawn and
// to every slice loaded, for Vesalius' viewer and, as the baseline in the same run, for OHIF
// served by the same Vesalius (`scripts/ohif`), on loopback and with the network throttled to
// a mobile profile by the Chrome DevTools protocol (10 Mbit/s, 40 ms latency). Also: under
// throttling, after a jump to another slice while the stack loads, how long until that slice
// is shown from its raw frame (the slice under the cursor must come first).
//
// A measurement, not a test. Knobs (environment): BENCH_SLICES (300), BENCH_REPS (3, loopback),
// BENCH_THROTTLED_REPS (1), BENCH_THROTTLED_ALL (0: under throttling, stop after the first
// image and the jump instead of waiting ~2 min per viewer for the whole stack), BENCH_OHIF (1),
// VESALIUS_BIN (scripts/bench uses the release build), VESALIUS_OHIF_DIST,
// BENCH_SHOTS (folder for the screenshots of what was drawn).
//
// Time zero is the navigation's start (performance.timeOrigin of the page); "first image" is,
// for Vesalius, the first paint of the study's image: the page's own `<img>` of the server's
// rendering (its Element Timing `renderTime`) or the viewer's canvas showing an image (its
// `data-state` `rendered` or `raw`), whichever came first (the canvas time is printed too); for OHIF,
// cornerstone's first CORNERSTONE_IMAGE_RENDERED event; "all" is the last frame's response end
// (Vesalius: its `data-loaded` reaching `data-slices`; OHIF: N distinct WADO-RS frame
// responses, which OHIF's stack prefetch fetches).

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ARTIFACTS, PASSWORD, ROOT, Site, BIN, launch } from './site.mjs';

const env = (k, d) => (process.env[k] === undefined || process.env[k] === '' ? d : Number(process.env[k]));
const SLICES = env('BENCH_SLICES', 300);
const REPS = env('BENCH_REPS', 3);
const THROTTLED_REPS = env('BENCH_THROTTLED_REPS', 1);
const THROTTLED_ALL = env('BENCH_THROTTLED_ALL', 0) === 1;
const DIST = process.env.VESALIUS_OHIF_DIST || join(ROOT, 'target/ohif/dist');
const WITH_OHIF = env('BENCH_OHIF', 1) === 1 && existsSync(join(DIST, 'index.html'));
const SHOTS = process.env.BENCH_SHOTS || join(ARTIFACTS, 'bench-viewer');
const MOBILE = { offline: false, latency: 40, downloadThroughput: 10e6 / 8, uploadThroughput: 10e6 / 8 };

mkdirSync(SHOTS, { recursive: true });
if (WITH_OHIF) process.env.VESALIUS__WEB__OHIF_DIR = DIST;
const site = await Site.start();
delete process.env.VESALIUS__WEB__OHIF_DIR;
const browser = await launch();

/** One study per repetition (so that no server-side cache is warm for the first viewer). */
function studies(n) {
  const dir = join(site.tmp, 'ct');
  execFileSync(BIN, ['synth', '--out', dir, '--seed', '42', '--slices', String(SLICES), '--kinds', 'ct-head', '--patients', String(n)]);
  site.import(dir);
  return fetch(`${site.base}/dicom-web/studies?limit=1000`, { headers: { Authorization: `Bearer ${site.token}`, Accept: 'application/dicom+json' } })
    .then((r) => r.json())
    .then((list) => list.map((s) => s['0020000D'].Value[0]).sort());
}

async function context() {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // Logged in through the API: no page of either viewer is loaded before the measurement.
  const r = await ctx.request.post(`${site.base}/api/v1/auth/login`, { data: { username: 'alice', password: PASSWORD } });
  if (!r.ok()) throw new Error(`login: ${r.status()}`);
  return ctx;
}

/** The milliseconds since the page's navigation start at which `pred` (run in the page) held. */
function when(page, pred, arg, timeout) {
  return page.waitForFunction(pred, arg, { timeout, polling: 'raf' }).then((h) => h.jsonValue());
}

async function vesalius(study, throttle, shot) {
  const ctx = await context();
  const page = await ctx.newPage();
  // Requests for raw frames (the worker's too): one per slice, or several slices per request.
  let frameRequests = 0;
  ctx.on('request', (r) => { if (/\/frames(\/\d+|\?instances=)/.test(r.url()) && !/\/rendered/.test(r.url())) frameRequests++; });
  await page.addInitScript(() => {
    // When the page's own first image (`<img elementtiming="first-image">`, the server's
    // thumbnail put into /view/{study}) was painted (W3C Element Timing).
    window.__painted = null;
    new PerformanceObserver((l) => {
      for (const e of l.getEntries()) if (e.identifier === 'first-image' && window.__painted === null) window.__painted = e.renderTime;
    }).observe({ type: 'element', buffered: true });
  });
  if (throttle) {
    const cdp = await ctx.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', throttle);
  }
  const long = throttle ? 600000 : 120000;
  await page.goto(`${site.base}/view/${study}`, { waitUntil: 'commit' });
  const canvas = await when(page, () => ['rendered', 'raw'].includes(document.getElementById('view')?.dataset.state) && performance.now(), null, long);
  const painted = await page.evaluate(() => window.__painted);
  const first = painted === null ? canvas : Math.min(painted, canvas);
  if (shot) await page.screenshot({ path: join(SHOTS, `${shot}.png`) });
  let jump = null;
  if (throttle) {
    // Jump to the first slice (the stack loads outwards from the middle): the time until it
    // is shown from its raw frame. Once the series is open: a key pressed while the page shows
    // only its first image (no series yet) does nothing, and slice 1 would never be shown.
    await when(page, () => Boolean(document.getElementById('view')?.dataset.slices), null, long);
    await page.keyboard.press('Home');
    const t = await page.evaluate(() => performance.now());
    const shown = await when(page, () => { const d = document.getElementById('view').dataset; return d.slice === '1' && d.state === 'raw' && performance.now(); }, null, long);
    jump = shown - t;
  }
  let all = null;
  if (!throttle || THROTTLED_ALL) {
    all = await when(page, () => { const d = document.getElementById('view')?.dataset; return d && d.slices && d.loaded === d.slices && performance.now(); }, null, long);
  }
  // The browser's part of the stack: from the viewer's first request for raw frames to the
  // last frame in (its User Timing marks; null for a build without them).
  const frames = all === null ? null : await page.evaluate(() => {
    const [a] = performance.getEntriesByName('vesalius-frames-start');
    const [b] = performance.getEntriesByName('vesalius-frames-all');
    return a && b ? b.startTime - a.startTime : null;
  });
  await ctx.close();
  return { first, canvas, all, jump, frames, requests: all === null ? null : frameRequests };
}

async function ohif(study, throttle, shot) {
  const ctx = await context();
  const page = await ctx.newPage();
  await page.addInitScript(() => {
    // The default buffer keeps 250 entries: fewer than the frames of a CT.
    performance.setResourceTimingBufferSize(100000);
    window.__firstRendered = null;
    // Cornerstone dispatches it on the viewport element (not bubbling): a capturing listener
    // on the window sees it.
    window.addEventListener('CORNERSTONE_IMAGE_RENDERED', () => {
      if (window.__firstRendered === null) window.__firstRendered = performance.now();
    }, true);
  });
  if (throttle) {
    const cdp = await ctx.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', throttle);
  }
  const long = throttle ? 600000 : 180000;
  await page.goto(`${site.base}/ohif/viewer?StudyInstanceUIDs=${study}`, { waitUntil: 'commit' });
  const first = await when(page, () => window.__firstRendered, null, long);
  if (shot) {
    await page.waitForTimeout(300);
    await page.screenshot({ path: join(SHOTS, `${shot}.png`) });
  }
  let all = null;
  if (!throttle || THROTTLED_ALL) {
    all = await when(page, (n) => {
      const ends = new Map();
      for (const e of performance.getEntriesByType('resource')) {
        if (/\/frames\/\d+$/.test(e.name) && e.responseEnd > 0) ends.set(e.name, e.responseEnd);
      }
      return ends.size >= n && Math.max(...ends.values());
    }, SLICES, long).catch(() => null); // OHIF may not prefetch every slice: reported as "-"
  }
  await ctx.close();
  return { first, all, jump: null };
}

const median = (xs) => {
  const v = xs.filter((x) => x !== null && x !== undefined).sort((a, b) => a - b);
  return v.length ? v[Math.floor((v.length - 1) / 2)] : null;
};
const fmt = (ms) => (ms === null ? '-' : ms >= 10000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`);
const ratio = (a, b) => (a === null || b === null ? '-' : `${(a / b).toFixed(2)}×`);

try {
  site.user('default', 'alice');
  const uids = await studies(Math.max(REPS, THROTTLED_REPS));
  const rows = [];
  for (const [net, throttle, reps] of [['loopback', null, REPS], ['10 Mbit/s, 40 ms', MOBILE, THROTTLED_REPS]]) {
    const res = { vesalius: [], ohif: [] };
    for (let i = 0; i < reps; i++) {
      const shot = i === 0 ? (throttle ? 'throttled' : 'loopback') : null;
      res.vesalius.push(await vesalius(uids[i], throttle, shot && `vesalius-${shot}`));
      if (WITH_OHIF) res.ohif.push(await ohif(uids[i], throttle, shot && `ohif-${shot}`));
      console.error(`${net} rep ${i + 1}: vesalius ${JSON.stringify(res.vesalius.at(-1))}${WITH_OHIF ? ` ohif ${JSON.stringify(res.ohif.at(-1))}` : ''}`);
    }
    const m = (list, k) => median(list.map((r) => r[k]));
    rows.push({ net, reps, v: { first: m(res.vesalius, 'first'), canvas: m(res.vesalius, 'canvas'), all: m(res.vesalius, 'all'), jump: m(res.vesalius, 'jump'), frames: m(res.vesalius, 'frames'), requests: m(res.vesalius, 'requests') },
      o: { first: m(res.ohif, 'first'), all: m(res.ohif, 'all') } });
  }
  console.log(`\nViewer benchmark: ${SLICES}-slice synthetic CT head (512×512, 16 bits), cold browser cache, headless Chromium, median of the runs`);
  console.log('| Network | Runs | Vesalius first image | (in the viewer canvas) | OHIF first image | ratio | Vesalius all slices | OHIF all slices | ratio | Vesalius: slice 1 after a jump |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(`| ${r.net} | ${r.reps} | ${fmt(r.v.first)} | ${fmt(r.v.canvas)} | ${fmt(r.o.first)} | ${ratio(r.v.first, r.o.first)} | ${fmt(r.v.all)} | ${fmt(r.o.all)} | ${ratio(r.v.all, r.o.all)} | ${fmt(r.v.jump)} |`);
  }
  for (const r of rows) {
    if (r.v.all !== null) console.log(`\n${r.net}: Vesalius' raw frames from the first request to the last frame in: ${fmt(r.v.frames)}, in ${r.v.requests ?? '-'} requests`);
  }
  console.log(`\nScreenshots of what was drawn at the first image: ${SHOTS}`);
} finally {
  await browser.close();
  await site.stop();
}
