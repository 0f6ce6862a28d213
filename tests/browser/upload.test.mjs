// The guest upload page and the share-link page (issue 6) in real Chromium (Debian's
// /usr/bin/chromium through playwright-core) against a real `vesalius serve`:
// - desktop: an upload link made through the API; the page opened through a TCP proxy that
//   cuts every connection after 0.6–1.2 MB (tests/tools/netproxy.py); a CD folder (a synthetic
//   CT written as a DICOMDIR file set by pydicom, plus a text file) chosen as a folder; the
//   list before sending (1 patient, 1 study, 1 series, every image, from the DICOMDIR's
//   records; the text file an extra the DICOMDIR does not name); sent in 256 KiB chunks through the cuts, resumed from the server's offsets; every
//   file's result; then through the API: the inbox holds the study with every instance once,
//   and each stored instance's SHA-256 (the server's hash of what it stored) is the file's.
// - desktop: a zip through the same proxy: entries sent from the inflating stream, resumed.
// - desktop: a file over the limit of crypto.subtle's one-piece hash (lowered by `?subtle=`)
//   is hashed as a stream; the SHA-256 sent is the file's and the server's.
// - phone: a zip of another synthetic study dropped on the page (DataTransfer), listed, sent,
//   stored; the same zip again is all "already there".
// - both: a share link with a passcode (wrong one refused, right one shows the study in the
//   app's viewer, canvas not blank), the download button fetches a zip of every instance, and
//   the pass opens no other study.
// Screenshots: target/browser-artifacts/upload-*.png, share-*.png.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { ARTIFACTS, ROOT, Site, synth, launch, VIEWPORTS } from './site.mjs';
import { readZip } from '../../crates/web/assets/js/unzip.js';

const PYTHON = process.env.VESALIUS_PYTHON || join(ROOT, '.venv/bin/python');

let site, browser, token, shared, proxy, otherStudy;
const sha = (b) => createHash('sha256').update(b).digest('hex');

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out.sort();
}

async function api(path, opts = {}) {
  const r = await fetch(site.base + path, {
    ...opts,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', ...(opts.headers || {}) },
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

/** netproxy.py in front of the server, cutting each connection after 0.6–1.2 MB. */
async function startProxy(target) {
  const stats = join(site.tmp, 'proxy-stats.json');
  const p = spawn(PYTHON, [join(ROOT, 'tests/tools/netproxy.py'), '--listen', '127.0.0.1:0', '--target', target,
    '--cut-min-bytes', String(600 << 10), '--cut-max-bytes', String(1200 << 10), '--seed', '6', '--stats', stats],
  { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((ok, fail) => {
    const t = setTimeout(() => fail(new Error('netproxy did not start')), 20000);
    createInterface({ input: p.stdout }).on('line', (l) => {
      const m = /LISTENING (\d+)/.exec(l);
      if (m) { clearTimeout(t); ok(m[1]); }
    });
  });
  return { proc: p, base: `http://127.0.0.1:${port}`, stats: () => JSON.parse(readFileSync(stats, 'utf8')) };
}

before(async () => {
  site = await Site.start();
  // A study in the archive to share.
  shared = synth(join(site.tmp, 'share'), 5, 6);
  site.import(shared.dir);
  // Another study of the same organisation, which no share link names.
  otherStudy = Object.values(synth(join(site.tmp, 'other'), 9, 2).images)[0].study;
  site.import(join(site.tmp, 'other'));
  token = site.token;
  browser = await launch();
  proxy = await startProxy(site.base.replace('http://', ''));
});

after(async () => {
  if (browser) await browser.close();
  if (proxy) proxy.proc.kill('SIGTERM');
  if (site) await site.stop();
});

async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

function watchErrors(page) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  return errors;
}

/** The listing's numbers: patients, studies, series and the images per series. */
async function listing(page) {
  return page.evaluate(() => ({
    patients: document.querySelectorAll('#found .patient').length,
    studies: [...document.querySelectorAll('#found .study')].map((s) => s.dataset.studyUid),
    series: [...document.querySelectorAll('#found tr[data-series-uid]')].map((r) => [r.dataset.seriesUid, Number(r.dataset.images)]),
    skipped: [...document.querySelectorAll('#skipped li')].map((li) => li.textContent),
    status: document.getElementById('scan-status').textContent,
  }));
}

async function waitSent(page, n) {
  await page.waitForFunction(() => document.getElementById('progress-text')?.dataset.finished === 'true', null, { timeout: 120000 });
  return page.evaluate(() => [...document.querySelectorAll('#result-table tbody tr')].map((r) => ({ path: r.dataset.path, ...r.dataset, text: r.textContent })));
}

test('desktop: a CD folder through a link that keeps dropping: listed, resumed, each file once in the inbox', async () => {
  const link = await api('/api/v1/upload-links', { method: 'POST', body: JSON.stringify({ label: 'for Dr X, neurosurgery', max_bytes: 200e6 }) });
  assert.equal(link.status, 201, JSON.stringify(link.body));
  // The CD: a synthetic CT (seed 21, 12 slices) as a DICOMDIR file set (pydicom), plus a note.
  const src = synth(join(site.tmp, 'cd-src'), 21, 12);
  const cd = join(site.tmp, 'CD');
  execFileSync(PYTHON, ['-c', `
import sys, pydicom
from pydicom.fileset import FileSet
fs = FileSet()
for p in sys.argv[2:]:
    fs.add(pydicom.dcmread(p))
fs.write(sys.argv[1])
`, cd, ...src.paths]);
  writeFileSync(join(cd, 'README.TXT'), 'Images of the patient, burnt by the hospital.\n');
  const cdFiles = walk(cd);
  const images = cdFiles.filter((p) => !/DICOMDIR$|README\.TXT$/.test(p));
  assert.equal(images.length, 12);
  const study = Object.values(src.images)[0].study;

  const context = await browser.newContext(VIEWPORTS.desktop);
  const page = await context.newPage();
  const errors = watchErrors(page);
  const url = link.body.url.replace(site.base, proxy.base);
  await page.goto(`${url}?chunk=262144`);
  await page.waitForSelector('#dropzone');
  assert.equal(await page.textContent('#link-label'), 'for Dr X, neurosurgery');
  assert.match(await page.textContent('#allowance'), /200\.0 MB more/);
  await shot(page, 'upload-desktop-1-empty');
  // The folder, as the folder picker gives it (webkitdirectory).
  await page.setInputFiles('#pick-folder', cd);
  await page.waitForFunction(() => document.getElementById('scan-status')?.dataset.files === '12', null, { timeout: 30000 });
  const l = await listing(page);
  assert.equal(l.patients, 1, l.status);
  assert.deepEqual(l.studies, [study]);
  assert.equal(l.series.length, 1);
  assert.equal(l.series[0][1], 12, 'images in the series');
  // The CD is listed by its DICOMDIR's records: all 12 named files found, the note an extra.
  assert.equal(l.skipped.length, 0, l.skipped.join('; '));
  const index = await page.evaluate(() => ({ ...document.querySelector('.cd-index').dataset, extras: [...document.querySelectorAll('.cd-index .extras li')].map((li) => li.textContent) }));
  assert.deepEqual([index.named, index.found, index.missing], ['12', '12', '0']);
  assert.deepEqual(index.extras, ['CD/README.TXT']);
  await shot(page, 'upload-desktop-2-listed');

  const before = proxy.stats().cuts;
  await page.click('#send');
  await page.waitForFunction(() => Number(document.getElementById('progress-text')?.dataset.done || 0) >= 3, null, { timeout: 60000 });
  await shot(page, 'upload-desktop-3-sending');
  const rows = await waitSent(page, 12);
  await shot(page, 'upload-desktop-4-done');
  const cuts = proxy.stats().cuts - before;
  const resumes = await page.evaluate(() => ({ ...document.getElementById('progress-text').dataset }));
  console.log(`upload through the cutting proxy: ${cuts} connections cut, ${resumes.resumes} resumes (${resumes.resumedMidChunk || 0} in the middle of a chunk)`);
  assert.ok(cuts >= 3, `the proxy cut ${cuts} connections`);
  assert.ok(Number(resumes.resumes) >= 1, 'the page resumed from the server\'s offset after a cut');
  assert.ok(Number(resumes.resumedMidChunk) >= 1, 'the server kept part of a cut chunk, and the page went on from there');
  assert.equal(rows.length, 12);
  // Every file stored, with the server's hash of what it stored equal to the file's.
  const want = new Map(images.map((p) => [relative(resolve(cd, '..'), p), sha(readFileSync(p))]));
  for (const r of rows) {
    assert.equal(r.outcome, 'stored', `${r.path}: ${r.text}`);
    assert.equal(r.sha256, want.get(r.path), `${r.path}: stored bytes differ`);
  }
  assert.equal(new Set(rows.map((r) => r.sop)).size, 12, 'each instance once');
  assert.match(await page.textContent('#progress-text'), /Done: 12 stored, 0 already there, 0 rejected/);
  // Through the API: the inbox holds the study with its 12 instances, and the link counted
  // each file's bytes once.
  const inbox = await api('/api/v1/inbox');
  const entry = inbox.body.studies.find((s) => s.study_uid === study);
  assert.ok(entry, JSON.stringify(inbox.body));
  assert.equal(Number(entry.instances), 12);
  const links = await api('/api/v1/upload-links');
  const used = links.body.upload_links.find((x) => x.id === link.body.id).used_bytes;
  assert.equal(used, images.reduce((s, p) => s + statSync(p).size, 0));
  assert.deepEqual(errors, []);
  await context.close();
});

test('desktop: a zip through the link that keeps dropping: entries streamed, resumed from the server\'s offsets, stored byte for byte', async () => {
  const link = await api('/api/v1/upload-links', { method: 'POST', body: JSON.stringify({ label: 'zip through cuts', max_bytes: 200e6 }) });
  const src = synth(join(site.tmp, 'zipcut-src'), 23, 8);
  const zipPath = join(site.tmp, 'cut.zip');
  execFileSync(PYTHON, ['-c', `
import sys, zipfile, os
with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:
    for p in sys.argv[2:]:
        z.write(p, 'CD/' + os.path.basename(p))
`, zipPath, ...src.paths]);
  const context = await browser.newContext(VIEWPORTS.desktop);
  const page = await context.newPage();
  const errors = watchErrors(page);
  await page.goto(`${link.body.url.replace(site.base, proxy.base)}?chunk=262144`);
  await page.setInputFiles('#pick-files', zipPath);
  await page.waitForFunction(() => document.getElementById('scan-status')?.dataset.files === '8', null, { timeout: 30000 });
  const before = proxy.stats().cuts;
  await page.click('#send');
  const rows = await waitSent(page, 8);
  const cuts = proxy.stats().cuts - before;
  const d = await page.$eval('#progress-text', (e) => ({ ...e.dataset }));
  console.log(`zip through the cutting proxy: ${cuts} connections cut, ${d.resumes} resumes`);
  assert.ok(cuts >= 1 && Number(d.resumes) >= 1, `cuts ${cuts}, resumes ${d.resumes}`);
  const want = new Set(src.paths.map((p) => sha(readFileSync(p))));
  assert.equal(rows.length, 8);
  for (const r of rows) {
    assert.equal(r.outcome, 'stored', `${r.path}: ${r.text}`);
    assert.ok(want.has(r.sha256), `${r.path}: stored bytes differ`);
  }
  assert.deepEqual(errors, []);
  await context.close();
});

test('desktop: a page reloaded half-way resumes the files it was sending and skips those it sent', async () => {
  const link = await api('/api/v1/upload-links', { method: 'POST', body: JSON.stringify({ label: 'reload test', max_bytes: 100e6 }) });
  const src = synth(join(site.tmp, 'reload-src'), 44, 10);
  const study = Object.values(src.images)[0].study;
  const context = await browser.newContext(VIEWPORTS.desktop);
  const page = await context.newPage();
  const errors = watchErrors(page);
  await page.goto(`${link.body.url}?chunk=65536`);
  await page.setInputFiles('#pick-folder', src.dir);
  await page.waitForFunction(() => document.getElementById('scan-status')?.dataset.files === '10', null, { timeout: 30000 });
  // Chunks are held back a little before the reload, so that files are still half-sent when it
  // comes (on a fast or a busy machine the ones in flight could otherwise all finish first).
  const slowChunks = (r) => (r.request().method() === 'PATCH'
    ? new Promise((res) => setTimeout(() => r.continue().then(res, res), 150))
    : r.continue());
  await page.route('**/files/**', slowChunks);
  await page.click('#send');
  await page.waitForFunction(() => Number(document.getElementById('progress-text')?.dataset.done || 0) >= 3, null, { timeout: 60000 });
  const doneBefore = Number(await page.$eval('#progress-text', (e) => e.dataset.done));
  // The page goes away half-way (a reload: the same as closing it and opening the link again).
  await page.reload();
  await page.unroute('**/files/**', slowChunks);
  const creates = [];
  page.on('request', (r) => { if (r.method() === 'POST' && r.url().endsWith('/files')) creates.push(r.url()); });
  await page.setInputFiles('#pick-folder', src.dir);
  await page.waitForFunction(() => document.getElementById('scan-status')?.dataset.files === '10', null, { timeout: 30000 });
  await page.click('#send');
  const rows = await waitSent(page, 10);
  const d = await page.$eval('#progress-text', (e) => ({ ...e.dataset }));
  await shot(page, 'upload-desktop-5-after-reload');
  assert.ok(Number(d.remembered) >= doneBefore, `files sent before the reload shown without sending: ${d.remembered} (${doneBefore} were done)`);
  assert.ok(Number(d.resumedAfterReload || 0) >= 1, 'a file half-sent before the reload resumed');
  assert.equal(creates.length, 10 - Number(d.remembered) - Number(d.resumedAfterReload), 'only the files never started were started');
  for (const r of rows) assert.equal(r.outcome, 'stored', `${r.path}: ${r.text}`);
  const want = new Set(src.paths.map((p) => sha(readFileSync(p))));
  for (const r of rows) assert.ok(want.has(r.sha256), `${r.path}: stored bytes differ`);
  const inbox = await api('/api/v1/inbox');
  assert.equal(Number(inbox.body.studies.find((s) => s.study_uid === study).instances), 10);
  const used = (await api('/api/v1/upload-links')).body.upload_links.find((x) => x.id === link.body.id).used_bytes;
  assert.equal(used, src.paths.reduce((n, p) => n + statSync(p).size, 0), 'each file counted once');
  assert.deepEqual(errors, []);
  await context.close();
});

test('desktop: a file over the crypto.subtle limit is hashed as a stream, and the hash sent is the server\'s', async () => {
  const link = await api('/api/v1/upload-links', { method: 'POST', body: JSON.stringify({ label: 'large file hash', max_bytes: 100e6 }) });
  const src = synth(join(site.tmp, 'hash-src'), 45, 2);
  const [small, large] = [...src.paths].sort((a, b) => statSync(a).size - statSync(b).size);
  // The limit set just under the larger file (`?subtle=BYTES`, standing in for 256 MB): it is
  // one byte over and goes through the streamed SHA-256; the other, at the limit or under, through crypto.subtle.
  const limit = statSync(large).size - 1;
  assert.ok(statSync(small).size <= limit);
  const context = await browser.newContext(VIEWPORTS.desktop);
  const page = await context.newPage();
  const errors = watchErrors(page);
  const sent = new Map();
  page.on('request', (r) => {
    if (r.method() === 'POST' && r.url().endsWith('/files')) { const b = JSON.parse(r.postData()); sent.set(b.name, b); }
  });
  await page.goto(`${link.body.url}?subtle=${limit}`);
  await page.setInputFiles('#pick-files', [small, large]);
  await page.waitForFunction(() => document.getElementById('scan-status')?.dataset.files === '2', null, { timeout: 30000 });
  await page.click('#send');
  const rows = await waitSent(page, 2);
  const by = new Map(rows.map((r) => [r.path.split('/').pop(), r]));
  for (const [file, how] of [[large, 'stream'], [small, 'subtle']]) {
    const name = file.split('/').pop();
    const r = by.get(name);
    assert.equal(r.outcome, 'stored', `${name}: ${r.text}`);
    assert.equal(r.hashed, how, `${name} hashed by ${r.hashed}`);
    const want = sha(readFileSync(file));
    assert.equal(sent.get(name).sha256, want, `${name}: the SHA-256 sent`);
    assert.equal(r.sha256, want, `${name}: the server's SHA-256 of what it stored`);
  }
  assert.deepEqual(errors, []);
  await context.close();
});

test('phone: a zip dropped on the page is listed, sent and stored; again, all already there', async () => {
  const link = await api('/api/v1/upload-links', { method: 'POST', body: JSON.stringify({ label: 'zip test', max_bytes: 100e6 }) });
  const src = synth(join(site.tmp, 'zip-src'), 33, 5);
  const zipPath = join(site.tmp, 'study.zip');
  execFileSync(PYTHON, ['-c', `
import sys, zipfile, os
with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:
    for p in sys.argv[2:]:
        z.write(p, 'EXPORT/' + os.path.basename(p))
    z.writestr('EXPORT/notes.txt', 'not an image')
`, zipPath, ...src.paths]);
  const zipBytes = readFileSync(zipPath);
  const context = await browser.newContext(VIEWPORTS.phone);
  const page = await context.newPage();
  const errors = watchErrors(page);
  for (const round of [1, 2]) {
    await page.goto(link.body.url);
    await page.waitForSelector('#dropzone');
    // A drop as a file manager makes it: a DataTransfer holding the zip.
    await page.evaluate((b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], 'study.zip', { type: 'application/zip' }));
      const zone = document.getElementById('dropzone');
      zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
      zone.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }, zipBytes.toString('base64'));
    await page.waitForFunction(() => document.getElementById('scan-status')?.dataset.files === '5', null, { timeout: 30000 });
    const l = await listing(page);
    assert.equal(l.patients, 1);
    assert.equal(l.series.length, 1);
    assert.equal(l.series[0][1], 5);
    assert.equal(l.skipped.length, 1);
    assert.match(l.skipped[0], /notes\.txt/);
    if (round === 1) await shot(page, 'upload-phone-1-zip-listed');
    await page.click('#send');
    const rows = await waitSent(page, 5);
    assert.equal(rows.length, 5);
    const outcome = round === 1 ? 'stored' : 'duplicate';
    for (const r of rows) assert.equal(r.outcome, outcome, `${r.path}: ${r.text}`);
    const want = new Set(src.paths.map((p) => sha(readFileSync(p))));
    for (const r of rows) assert.ok(want.has(r.sha256), `${r.path}: stored bytes differ`);
    await shot(page, `upload-phone-${round + 1}-zip-${outcome}`);
  }
  assert.deepEqual(errors, []);
  await context.close();
});

test('a bad upload link shows why, and nothing else', async () => {
  const context = await browser.newContext(VIEWPORTS.phone);
  const page = await context.newPage();
  const r = await page.goto(`${site.base}/upload/nosuchlink/not-the-secret`);
  assert.equal(r.status(), 401);
  assert.match(await page.textContent('main'), /not valid/);
  await context.close();
});

for (const [name, vp] of Object.entries(VIEWPORTS)) {
  test(`${name}: a share link with a passcode opens the study in the viewer and downloads it`, async () => {
    const study = Object.values(shared.images)[0].study;
    const link = await api(`/api/v1/studies/${study}/share-links`, { method: 'POST', body: JSON.stringify({ passcode: '4711', allow_download: true, ttl_hours: 2 }) });
    assert.equal(link.status, 201, JSON.stringify(link.body));
    const context = await browser.newContext({ ...vp, acceptDownloads: true });
    const page = await context.newPage();
    const errors = watchErrors(page);
    await page.goto(link.body.url);
    await page.fill('input[name=passcode]', '0000');
    const wrong = await Promise.all([page.waitForNavigation(), page.click('form button')]);
    assert.equal(wrong[0].status(), 401);
    assert.match(await page.textContent('main'), /not right/);
    await shot(page, `share-${name}-1-wrong-passcode`);
    await page.fill('input[name=passcode]', '4711');
    await Promise.all([page.waitForURL(/\/s\/[^/]+$/), page.click('form button')]);
    // The app's viewer on the study: an image drawn (not blank).
    await page.waitForFunction(() => ['raw', 'rendered'].includes(document.getElementById('view')?.dataset.state), null, { timeout: 30000 });
    await page.waitForFunction(() => document.getElementById('view')?.dataset.state === 'raw', null, { timeout: 30000 });
    const lit = await page.$eval('#view', (cv) => {
      const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
      let n = 0, sum = 0;
      for (let i = 0; i < d.length; i += 4) { if (d[i] > 16) n++; sum += d[i]; }
      return { n, mean: sum / (d.length / 4), pixels: d.length / 4 };
    });
    assert.ok(lit.n > lit.pixels * 0.05, `the canvas shows an image (${lit.n} of ${lit.pixels} pixels lit)`);
    assert.equal(await page.$('a.back'), null, 'no worklist link for a visitor');
    await shot(page, `share-${name}-2-viewer`);
    // The pass opens this study only: no other study, no search, no worklist data.
    const other = await page.evaluate(async (uid) => {
      const a = await fetch(`/dicom-web/studies/${uid}/series`, { headers: { Accept: 'application/dicom+json' } });
      const listed = a.status === 200 ? (await a.json()).length : 0;
      const m = await fetch(`/dicom-web/studies/${uid}/metadata`, { headers: { Accept: 'application/dicom+json' } });
      const q = await fetch('/dicom-web/studies', { headers: { Accept: 'application/dicom+json' } });
      const studies = q.status === 200 ? (await q.json()).map((s) => s['0020000D'].Value[0]) : [];
      const b = await fetch('/api/v1/search');
      return { series: [a.status, listed], metadata: m.status, studies, search: b.status };
    }, otherStudy);
    assert.equal(other.series[1], 0, `another study's series: ${JSON.stringify(other)}`);
    assert.ok([404, 204].includes(other.metadata), `another study's metadata: ${other.metadata}`);
    assert.deepEqual(other.studies, [study], 'QIDO-RS lists the shared study only');
    assert.ok([401, 403].includes(other.search), `search: ${other.search}`);
    // Download: a zip of every instance of the study.
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    const path = join(ARTIFACTS, `share-${name}.zip`);
    mkdirSync(ARTIFACTS, { recursive: true });
    await download.saveAs(path);
    const entries = await readZip(new Blob([readFileSync(path)]));
    assert.equal(entries.length, shared.paths.length);
    const want = new Set(shared.paths.map((p) => sha(readFileSync(p))));
    for (const e of entries) assert.ok(want.has(sha(new Uint8Array(await (await e.blob()).arrayBuffer()))), e.name);
    assert.deepEqual(errors, []);
    await context.close();
  });
}
