// What the guest upload page reads in the browser beyond plain Little Endian files (issue 6), in
// real Chromium (Debian's /usr/bin/chromium through playwright-core):
// - a CD's DICOMDIR (js/dicomdir.js): made by DCMTK's dcmmkdir over synthetic images
//   (`vesalius synth`), one file then removed and two added; the records read in the browser
//   agree with pydicom's reading of the files; on the upload page (a real `vesalius serve`) the
//   CD is listed by its records, the missing file and the extras are reported, and the files the
//   DICOMDIR names and that are present are sent and stored.
// The modules are loaded by a page whose origin is routed to crates/web/assets (unit tests in
// the browser, no server), or served by the real binary (page tests).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ARTIFACTS, ROOT, Site, launch, synth, VIEWPORTS } from './site.mjs';

const PYTHON = process.env.VESALIUS_PYTHON || join(ROOT, '.venv/bin/python');
const ASSETS = resolve(ROOT, 'crates/web/assets');
const DCMMKDIR = process.env.DCMMKDIR || '/usr/bin/dcmmkdir';

let browser, site, token;
const b64 = (path) => readFileSync(path).toString('base64');

before(async () => {
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (site) await site.stop();
});

/** The server (started for the page tests only). */
async function server() {
  if (!site) {
    site = await Site.start();
    token = JSON.parse(site.admin('token', 'create', '--org', 'default', '--role', 'admin', '--name', 'formats', '--json')).token;
  }
  return site;
}

async function api(path, opts = {}) {
  const r = await fetch(site.base + path, {
    ...opts,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', ...(opts.headers || {}) },
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

/** A page of an origin routed to the app's assets on disk, for unit tests in the browser. */
async function unitPage() {
  const context = await browser.newContext();
  await context.route('http://vesalius.test/**', (route) => {
    const path = new URL(route.request().url()).pathname;
    if (path === '/') return route.fulfill({ contentType: 'text/html', body: '<!doctype html><title>unit tests</title>' });
    const file = resolve(ASSETS, `.${path}`);
    if (!file.startsWith(ASSETS) || !existsSync(file)) return route.fulfill({ status: 404, body: '' });
    return route.fulfill({ contentType: 'text/javascript', body: readFileSync(file) });
  });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto('http://vesalius.test/');
  return { context, page, errors };
}

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out.sort();
}

/**
 * A CD: the synthetic files copied as DICOM/ST1/IM0001… (PS3.10 8.5 file IDs) and a DICOMDIR
 * written by DCMTK's dcmmkdir over them.
 */
function makeCd(dir, src) {
  const files = join(dir, 'DICOM', 'ST1');
  mkdirSync(files, { recursive: true });
  src.paths.forEach((p, i) => copyFileSync(p, join(files, `IM${String(i + 1).padStart(4, '0')}`)));
  execFileSync(DCMMKDIR, ['+r', 'DICOM'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  assert.ok(existsSync(join(dir, 'DICOMDIR')), 'dcmmkdir wrote the DICOMDIR');
  return dir;
}

/** pydicom's reading of each file: [file ID, SOP instance, patient name, ID, study, series, modality, number]. */
function pydicomView(paths, root) {
  const py = `
import json, sys, os, pydicom
out = []
for p in sys.argv[2:]:
    d = pydicom.dcmread(p, stop_before_pixels=True)
    out.append([os.path.relpath(p, sys.argv[1]).split(os.sep), d.SOPInstanceUID, str(d.PatientName), d.PatientID,
                d.StudyInstanceUID, d.SeriesInstanceUID, d.Modality, str(d.SeriesNumber)])
print(json.dumps(out))`;
  return JSON.parse(execFileSync(PYTHON, ['-c', py, root, ...paths], { encoding: 'utf8' }));
}

test('DICOMDIR records of dcmmkdir read in the browser agree with the files (pydicom)', async () => {
  const tmp = join(ARTIFACTS, 'formats-dicomdir-unit');
  rmSync(tmp, { recursive: true, force: true });
  const src = synth(join(tmp, 'src'), 71, 4);
  const cd = makeCd(join(tmp, 'CD'), src);
  const want = pydicomView(walk(join(cd, 'DICOM')), cd);
  const { context, page, errors } = await unitPage();
  const got = await page.evaluate(async (bytes) => {
    const m = await import('/js/dicomdir.js');
    const raw = Uint8Array.from(atob(bytes), (c) => c.charCodeAt(0));
    const d = m.dicomdirFiles(raw);
    let broken = '';
    try { m.dicomdirFiles(raw.subarray(0, raw.length - 40)); } catch (e) { broken = e.message; }
    let notDir = '';
    try { m.readRecords(new TextEncoder().encode('hello, not a DICOMDIR at all'.repeat(10))); } catch (e) { notDir = e.message; }
    return { ...d, broken, notDir };
  }, b64(join(cd, 'DICOMDIR')));
  assert.equal(got.fileSetId, 'DCMTK_MEDIA_DEMO');
  assert.equal(got.files.length, 4);
  // PATIENT, STUDY, SERIES and 4 IMAGE records.
  assert.equal(got.records, 7);
  const byId = new Map(got.files.map((f) => [f.fileId.join('/'), f]));
  for (const [fileId, sop, name, pid, study, series, modality, number] of want) {
    const f = byId.get(fileId.join('/'));
    assert.ok(f, `the DICOMDIR names ${fileId.join('/')}`);
    assert.equal(f.type, 'IMAGE');
    assert.deepEqual([f.sopInstanceUid, f.patientName, f.patientId, f.studyUid, f.seriesUid, f.modality, f.seriesNumber],
      [sop, name, pid, study, series, modality, number], fileId.join('/'));
  }
  assert.match(got.broken, /cut short|broken/);
  assert.match(got.notDir, /not a DICOM/);
  assert.deepEqual(errors, []);
  await context.close();
});

test('desktop: a CD with its DICOMDIR (dcmmkdir), one file missing and two extra: listed by its records, the rest sent', async () => {
  await server();
  const tmp = join(site.tmp, 'dicomdir-page');
  const src = synth(join(tmp, 'src'), 72, 6);
  const cd = makeCd(join(tmp, 'CD'), src);
  // One file the DICOMDIR names is gone; a note and an image the DICOMDIR does not name are added.
  rmSync(join(cd, 'DICOM', 'ST1', 'IM0003'));
  writeFileSync(join(cd, 'README.TXT'), 'Burnt by the hospital.\n');
  copyFileSync(src.paths[0], join(cd, 'DICOM', 'EXTRA1'));
  const sent = walk(join(cd, 'DICOM', 'ST1'));
  assert.equal(sent.length, 5);
  const want = pydicomView(sent, cd);
  const study = want[0][4];

  const link = await api('/api/v1/upload-links', { method: 'POST', body: JSON.stringify({ label: 'CD with a DICOMDIR', max_bytes: 100e6 }) });
  assert.equal(link.status, 201, JSON.stringify(link.body));
  const context = await browser.newContext(VIEWPORTS.desktop);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(link.body.url);
  await page.waitForSelector('#dropzone');
  await page.setInputFiles('#pick-folder', cd);
  await page.waitForFunction(() => document.getElementById('scan-status')?.dataset.files === '5', null, { timeout: 30000 });
  const l = await page.evaluate(() => ({
    patients: [...document.querySelectorAll('#found .patient h2')].map((e) => e.firstChild.textContent),
    studies: [...document.querySelectorAll('#found .study')].map((s) => s.dataset.studyUid),
    series: [...document.querySelectorAll('#found tr[data-series-uid]')].map((r) => [r.dataset.seriesUid, Number(r.dataset.images)]),
    cd: { ...document.querySelector('.cd-index').dataset },
    missing: [...document.querySelectorAll('.cd-index .missing li')].map((li) => li.textContent),
    extras: [...document.querySelectorAll('.cd-index .extras li')].map((li) => li.textContent),
    alert: document.querySelector('.cd-index [role=alert]')?.textContent || '',
    skipped: [...document.querySelectorAll('#skipped li')].map((li) => li.textContent),
  }));
  await page.screenshot({ path: join(ARTIFACTS, 'upload-dicomdir-listed.png'), fullPage: true });
  assert.deepEqual(l.patients, [want[0][2].replace(/\^/g, ' ')]);
  assert.deepEqual(l.studies, [study]);
  assert.deepEqual(l.series, [[want[0][5], 5]]);
  assert.deepEqual({ named: l.cd.named, found: l.cd.found, missing: l.cd.missing, extras: l.cd.extras }, { named: '6', found: '5', missing: '1', extras: '2' });
  assert.deepEqual(l.missing, ['CD/DICOM/ST1/IM0003']);
  assert.deepEqual(l.extras.sort(), ['CD/DICOM/EXTRA1', 'CD/README.TXT']);
  assert.match(l.alert, /1 file\(s\) the DICOMDIR names are not among the files dropped/);
  assert.deepEqual(l.skipped, []);

  await page.click('#send');
  await page.waitForFunction(() => document.getElementById('progress-text')?.dataset.finished === 'true', null, { timeout: 120000 });
  const rows = await page.evaluate(() => [...document.querySelectorAll('#result-table tbody tr')].map((r) => ({ ...r.dataset })));
  assert.deepEqual(rows.map((r) => r.path).sort(), ['CD/DICOM/ST1/IM0001', 'CD/DICOM/ST1/IM0002', 'CD/DICOM/ST1/IM0004', 'CD/DICOM/ST1/IM0005', 'CD/DICOM/ST1/IM0006']);
  for (const r of rows) assert.equal(r.outcome, 'stored', JSON.stringify(r));
  assert.deepEqual(new Set(rows.map((r) => r.sop)), new Set(want.map((w) => w[1])));
  const inbox = await api('/api/v1/inbox');
  assert.equal(Number(inbox.body.studies.find((s) => s.study_uid === study).instances), 5);
  assert.deepEqual(errors, []);
  await context.close();
});

