// What the guest upload page reads in the browser beyond plain Little Endian files (issue 6), in
// real Chromium (Debian's /usr/bin/chromium through playwright-core):
// - a CD's DICOMDIR (js/dicomdir.js): made by DCMTK's dcmmkdir over synthetic images
//   (`vesalius synth`), one file then removed and two added; the records read in the browser
//   agree with pydicom's reading of the files; on the upload page (a real `vesalius serve`) the
//   CD is listed by its records, the missing file and the extras are reported, and the files the
//   DICOMDIR names and that are present are sent and stored.
// - character sets (js/charset.js): the decoder on the examples of PS3.5 Annexes H, I, J and K
//   byte for byte, and on pydicom's charset files against pydicom's decoding; on the page,
//   names in ISO 2022 IR 87 (also from a DICOMDIR record), ISO 2022 IR 149 and ISO_IR 144.
// - Explicit VR Big Endian and deflated files (DCMTK dcmconv) listed by patient and stored.
// - zip (js/unzip.js): a ZIP64 archive built byte by byte and one of 65 600 entries (Python's
//   zipfile) read in the browser; entries streamed in bounded pieces, hashed (js/sha256.js)
//   and checked against their CRC-32; on the page a `force_zip64` zip of a study sent from
//   the stream and stored byte for byte.
// - a zip of a CD: listed by its DICOMDIR (read from the zip entry).
// - sha256.js and its CRC-32 against node.s crypto and zlib at the padding edges.
// The modules are loaded by a page whose origin is routed to crates/web/assets (unit tests in
// the browser, no server), or served by the real binary (page tests).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
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

/**
 * A page of an origin routed to the app's assets on disk, for unit tests in the browser;
 * `/fixtures/NAME` is the file NAME of `fixtures` (a directory).
 */
async function unitPage(fixtures = null) {
  const context = await browser.newContext();
  await context.route('http://vesalius.test/**', (route) => {
    const path = new URL(route.request().url()).pathname;
    if (path === '/') return route.fulfill({ contentType: 'text/html', body: '<!doctype html><title>unit tests</title>' });
    if (fixtures && path.startsWith('/fixtures/')) {
      const file = resolve(fixtures, path.slice('/fixtures/'.length));
      return route.fulfill({ contentType: 'application/octet-stream', body: readFileSync(file) });
    }
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

// --- character sets (PS3.5 6.1.2.5, Annexes H, I, J, K) -----------------------------------------
/** The standard's examples: [where, Specific Character Set, bytes (hex), the text, VR]. */
const VECTORS = [
  ['PS3.5 H.3.1 (ISO 2022 IR 87)', '\\ISO 2022 IR 87',
    '59616d6164615e5461726f753d1b24423b3345441b28425e1b244242404f3a1b28423d1b244224642' +
    '45e24401b28425e1b2442243f246d24261b2842', 'Yamada^Tarou=山田^太郎=やまだ^たろう'],
  ['PS3.5 H.3.2 (ISO 2022 IR 13, ISO 2022 IR 87)', 'ISO 2022 IR 13\\ISO 2022 IR 87',
    'd4cfc0de5ec0dbb33d1b24423b3345441b284a5e1b244242404f3a1b284a3d1b24422464245e24401b284a5e1b2442243f246d24261b284a',
    'ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう'],
  ['PS3.5 I.2 (ISO 2022 IR 149)', '\\ISO 2022 IR 149',
    '486f6e675e47696c646f6e673d1b242943fbf35e1b242943d1ced4d73d1b242943c8ab5e1b242943b1e6b5bf',
    'Hong^Gildong=洪^吉洞=홍^길동'],
  ['PS3.5 J.1 (ISO_IR 192)', 'ISO_IR 192', '57616e675e5869616f446f6e673de78e8b5ee5b08fe69db13d', 'Wang^XiaoDong=王^小東='],
  ['PS3.5 J.3 (GB18030)', 'GB18030', '57616e675e5869616f446f6e673dcdf55ed0a1b6ab3d', 'Wang^XiaoDong=王^小东='],
  ['PS3.5 K.2 (ISO 2022 IR 58)', '\\ISO 2022 IR 58',
    '5a68616e675e5869616f446f6e673d1b242941d5c55e1b242941d0a1b6ab3d20', 'Zhang^XiaoDong=张^小东='],
  ['PS3.5 J.2 (ISO_IR 192, LT)', 'ISO_IR 192',
    '546865206669727374206c696e6520696e636c75646573e4b8ade696872e0d0a546865207365636f6e64206c696e6520696e636c75646573e4b8ade696872c20746f6f2e0d0a546865207468697264206c696e652e0d0a',
    'The first line includes中文.\r\nThe second line includes中文, too.\r\nThe third line.\r\n', 'LT'],
  ['PS3.5 J.4 (GB18030, LT)', 'GB18030',
    '546865206669727374206c696e6520696e636c75646573d6d0cec42e0d0a546865207365636f6e64206c696e6520696e636c75646573d6d0cec42c20746f6f2e0d0a546865207468697264206c696e652e0d0a',
    'The first line includes中文.\r\nThe second line includes中文, too.\r\nThe third line.\r\n', 'LT'],
  ['PS3.5 K.3 (ISO 2022 IR 58, LT: G1 designated again on each line)', '\\ISO 2022 IR 58',
    '312e1b242941b5dad2bbd0d0cec4d7d6a1a30d0a322e1b242941b5dab6fed0d0cec4d7d6a1a30d0a332e1b242941b5dac8fdd0d0cec4d7d6a1a30d0a',
    '1.第一行文字。\r\n2.第二行文字。\r\n3.第三行文字。\r\n', 'LT'],
];


test('character sets: the standard\'s examples and pydicom\'s charset files decoded in the browser', async () => {
  // pydicom's bundled charset files (the standard's examples among them): raw bytes of the
  // Patient Name, the Specific Character Set, and pydicom's decoding.
  const py = `
import json, pydicom
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.data import get_charset_files
out = []
for f in sorted(get_charset_files('*.dcm')):
    d = pydicom.dcmread(f)
    if 'PatientName' not in d:
        continue
    cs = d.get('SpecificCharacterSet', '')
    cs = list(cs) if isinstance(cs, pydicom.multival.MultiValue) else [cs]
    raw = d.get_item((0x10, 0x10)).value
    # The whole value as pydicom decodes it (str() of a PersonName drops empty groups).
    text = decode_bytes(raw, convert_encodings(cs), {0x5e, 0x3d}).rstrip(' \\0')
    out.append([f.split('/')[-1], cs, raw.hex(), text])
print(json.dumps(out))`;
  const files = JSON.parse(execFileSync(PYTHON, ['-c', py], { encoding: 'utf8' }));
  assert.ok(files.length >= 14, `pydicom's charset files: ${files.length}`);
  const { context, page, errors } = await unitPage();
  const got = await page.evaluate(async ({ vectors, files, hex }) => {
    const m = await import('/js/charset.js');
    const bytes = (h) => Uint8Array.from(h.match(/../g) || [], (x) => parseInt(x, 16));
    const labels = {};
    for (const term of m.SUPPORTED) {
      try { m.decodeText(new Uint8Array([0x41, 0xa1, 0xa2]), term.startsWith('ISO 2022') ? `\\${term}` : term); labels[term] = 'ok'; } catch (e) { labels[term] = e.message; }
    }
    return {
      vectors: vectors.map(([where, cs, h, , vr]) => [where, m.decodeText(bytes(h), cs, vr || 'PN')]),
      files: files.map(([name, cs, h]) => [name, m.decodeText(bytes(h), cs, 'PN')]),
      labels,
    };
  }, { vectors: VECTORS, files });
  for (const [i, [where, text]] of got.vectors.entries()) assert.equal(text, VECTORS[i][3], where);
  for (const [i, [name, text]] of got.files.entries()) assert.equal(text, files[i][3], `${name} (${files[i][1].join('\\')})`);
  for (const [term, r] of Object.entries(got.labels)) assert.equal(r, 'ok', `Chromium decodes ${term}`);
  assert.deepEqual(errors, []);
  await context.close();
});

test('desktop: names in ISO 2022 (Japanese, in files and a DICOMDIR; Korean) and ISO 8859-5 listed as written (pydicom, dcmmkdir)', async () => {
  await server();
  const tmp = join(site.tmp, 'charsets');
  // Three patients (`vesalius synth`), their names and study descriptions rewritten by pydicom
  // in three character sets; pydicom writes the ISO 2022 escape sequences.
  const people = [
    [81, 3, ['', 'ISO 2022 IR 87'], 'Yamada^Tarou=山田^太郎=やまだ^たろう', '頭部単純CT'],
    [82, 2, ['', 'ISO 2022 IR 149'], 'Hong^Gildong=洪^吉洞=홍^길동', '두부 CT'],
    [83, 2, 'ISO_IR 144', 'Люксембург^Иван', 'КТ головы'],
  ];
  const dirs = [];
  for (const [seed, n, cs, name, description] of people) {
    const src = synth(join(site.tmp, `charset-src${seed}`), seed, n);
    execFileSync(PYTHON, ['-c', `
import json, sys, pydicom
cs, name, description = json.loads(sys.argv[1])
for p in sys.argv[2:]:
    d = pydicom.dcmread(p)
    d.SpecificCharacterSet = cs
    d.PatientName = name
    d.StudyDescription = description
    d.save_as(p)
    check = pydicom.dcmread(p)
    assert str(check.PatientName) == name, (str(check.PatientName), name)
`, JSON.stringify([cs, name, description]), ...src.paths]);
    dirs.push(src);
  }
  // The Japanese patient as a CD whose DICOMDIR (dcmmkdir) carries the name in its PATIENT
  // record, with the record's Specific Character Set (PS3.3 F.5); the others as folders.
  makeCd(join(tmp, 'JP'), dirs[0]);
  for (const src of dirs.slice(1)) {
    const to = join(tmp, `P${src.paths.length}${dirs.indexOf(src)}`);
    mkdirSync(to, { recursive: true });
    src.paths.forEach((p, i) => copyFileSync(p, join(to, `${i}.dcm`)));
  }
  // The bytes pydicom wrote for the Japanese name hold the escape sequences (ESC $ B).
  const raw = execFileSync(PYTHON, ['-c', 'import sys, pydicom; print(pydicom.dcmread(sys.argv[1]).get_item((0x10, 0x10)).value.hex())', dirs[0].paths[0]], { encoding: 'utf8' }).trim();
  assert.match(raw, /1b2442/, 'ISO 2022 escape sequences in the file');

  const link = await api('/api/v1/upload-links', { method: 'POST', body: JSON.stringify({ label: 'character sets', max_bytes: 100e6 }) });
  const context = await browser.newContext(VIEWPORTS.desktop);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(link.body.url);
  await page.waitForSelector('#dropzone');
  await page.setInputFiles('#pick-folder', tmp);
  await page.waitForFunction(() => document.getElementById('scan-status')?.dataset.files === '7', null, { timeout: 30000 });
  const cd = await page.evaluate(() => ({ ...document.querySelector('.cd-index').dataset }));
  assert.deepEqual([cd.named, cd.found, cd.missing], ['3', '3', '0'], 'the Japanese CD read by its DICOMDIR');
  const l = await page.evaluate(() => [...document.querySelectorAll('#found .patient')].map((p) => ({
    name: p.querySelector('h2').firstChild.textContent,
    studies: [...p.querySelectorAll('.study h3')].map((h) => h.textContent),
  })));
  await page.screenshot({ path: join(ARTIFACTS, 'upload-charsets-listed.png'), fullPage: true });
  const byName = new Map(l.map((p) => [p.name, p.studies]));
  for (const [, , , name, description] of people) {
    const shown = name.replace(/\^/g, ' ');
    assert.ok(byName.has(shown), `${shown} listed: ${JSON.stringify(l)}`);
    assert.match(byName.get(shown)[0], new RegExp(`${description}$`));
  }
  await page.click('#send');
  await page.waitForFunction(() => document.getElementById('progress-text')?.dataset.finished === 'true', null, { timeout: 120000 });
  const rows = await page.evaluate(() => [...document.querySelectorAll('#result-table tbody tr')].map((r) => ({ ...r.dataset })));
  assert.equal(rows.length, 7);
  for (const r of rows) assert.equal(r.outcome, 'stored', JSON.stringify(r));
  assert.deepEqual(errors, []);
  await context.close();
});

test('desktop: Explicit VR Big Endian and Deflated Explicit VR Little Endian files (DCMTK dcmconv) listed by patient', async () => {
  await server();
  const tmp = join(site.tmp, 'syntaxes');
  const src = synth(join(site.tmp, 'syntaxes-src'), 91, 4);
  mkdirSync(tmp, { recursive: true });
  // Two files rewritten in Explicit VR Big Endian (+tb), two deflated (+td), by DCMTK.
  src.paths.forEach((p, i) => execFileSync('/usr/bin/dcmconv', [i < 2 ? '+tb' : '+td', p, join(tmp, `IM${i}`)]));
  const syntaxes = execFileSync(PYTHON, ['-c', 'import sys, pydicom; print(" ".join(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID for p in sys.argv[1:]))',
    ...[0, 1, 2, 3].map((i) => join(tmp, `IM${i}`))], { encoding: 'utf8' }).trim().split(' ');
  assert.deepEqual(syntaxes, ['1.2.840.10008.1.2.2', '1.2.840.10008.1.2.2', '1.2.840.10008.1.2.1.99', '1.2.840.10008.1.2.1.99']);
  const want = pydicomView(src.paths, site.tmp)[0];

  const link = await api('/api/v1/upload-links', { method: 'POST', body: JSON.stringify({ label: 'old syntaxes', max_bytes: 100e6 }) });
  const context = await browser.newContext(VIEWPORTS.desktop);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(link.body.url);
  await page.waitForSelector('#dropzone');
  await page.setInputFiles('#pick-folder', tmp);
  await page.waitForFunction(() => document.getElementById('scan-status')?.dataset.files === '4', null, { timeout: 30000 });
  const l = await page.evaluate(() => ({
    patients: [...document.querySelectorAll('#found .patient')].map((p) => [p.querySelector('h2').firstChild.textContent, p.dataset.patientId]),
    studies: [...document.querySelectorAll('#found .study')].map((s) => s.dataset.studyUid),
    series: [...document.querySelectorAll('#found tr[data-series-uid]')].map((r) => [r.dataset.seriesUid, Number(r.dataset.images)]),
    skipped: [...document.querySelectorAll('#skipped li')].map((li) => li.textContent),
  }));
  await page.screenshot({ path: join(ARTIFACTS, 'upload-syntaxes-listed.png'), fullPage: true });
  assert.deepEqual(l.patients, [[want[2].replace(/\^/g, ' '), want[3]]]);
  assert.deepEqual(l.studies, [want[4]]);
  assert.deepEqual(l.series, [[want[5], 4]]);
  assert.deepEqual(l.skipped, []);
  await page.click('#send');
  await page.waitForFunction(() => document.getElementById('progress-text')?.dataset.finished === 'true', null, { timeout: 120000 });
  const rows = await page.evaluate(() => [...document.querySelectorAll('#result-table tbody tr')].map((r) => ({ ...r.dataset, text: r.textContent })));
  assert.equal(rows.length, 4);
  for (const r of rows) assert.equal(r.outcome, 'stored', JSON.stringify(r));
  assert.deepEqual(errors, []);
  await context.close();
});

// --- ZIP64 archives and streamed entries (APPNOTE 4.3.14–4.3.15, 4.5.3) ---------------------------
/** A ZIP64 archive built byte by byte (every size and offset in ZIP64 fields), checked by Python's zipfile. */
const ZIP64_BY_HAND = `
import struct, sys, zlib, zipfile, hashlib, json
out, *paths = sys.argv[1:]
body, central = b'', b''
for i, p in enumerate(paths):
    data = open(p, 'rb').read()
    method = 8 if i % 2 == 0 else 0
    if method == 8:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        comp = c.compress(data) + c.flush()
    else:
        comp = data
    name = ('CD/IMG%d' % i).encode()
    crc = zlib.crc32(data)
    offset = len(body)
    extra = struct.pack('<HHQQ', 1, 16, len(data), len(comp))
    body += struct.pack('<IHHHHHIIIHH', 0x04034b50, 45, 0x800, method, 0, 0, crc, 0xffffffff, 0xffffffff, len(name), len(extra)) + name + extra + comp
    cextra = struct.pack('<HHQQQ', 1, 24, len(data), len(comp), offset)
    central += struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, 45, 45, 0x800, method, 0, 0, crc, 0xffffffff, 0xffffffff,
                           len(name), len(cextra), 0, 0, 0, 0, 0xffffffff) + name + cextra
n = len(paths)
cd_offset = len(body)
end64 = struct.pack('<IQHHIIQQQQ', 0x06064b50, 44, 45, 45, 0, 0, n, n, len(central), cd_offset)
locator = struct.pack('<IIQI', 0x07064b50, 0, cd_offset + len(central), 1)
end = struct.pack('<IHHHHIIH', 0x06054b50, 0, 0, 0xffff, 0xffff, 0xffffffff, 0xffffffff, 0)
open(out, 'wb').write(body + central + end64 + locator + end)
z = zipfile.ZipFile(out)
assert z.testzip() is None
print(json.dumps([[i.filename, i.file_size, hashlib.sha256(z.read(i)).hexdigest()] for i in z.infolist()]))
`;

test('ZIP64 in the browser: a hand-made ZIP64 archive, one of >65 535 entries (Python zipfile), entries streamed and hashed', async () => {
  const tmp = join(ARTIFACTS, 'formats-zip64-unit');
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const src = synth(join(tmp, 'src'), 95, 3);
  const byHand = JSON.parse(execFileSync(PYTHON, ['-c', ZIP64_BY_HAND, join(tmp, 'hand.zip'), ...src.paths], { encoding: 'utf8' }));
  // 65 600 tiny entries: Python writes the ZIP64 end of central directory record and locator.
  const many = 65600;
  execFileSync(PYTHON, ['-c', `
import sys, zipfile, struct
with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_STORED) as z:
    for i in range(int(sys.argv[2])):
        z.writestr('F/%05d' % i, b'entry %d' % i)
data = open(sys.argv[1], 'rb').read()
assert data.rfind(struct.pack('<I', 0x06064b50)) > 0, 'no ZIP64 end of central directory'
`, join(tmp, 'many.zip'), String(many)]);
  // A stored entry of 24 MB to stream (the hash and ranges checked against node's reading).
  const big = Buffer.alloc(24 << 20);
  for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE((i * 2654435761) >>> 0, i);
  writeFileSync(join(tmp, 'big.bin'), big);
  execFileSync(PYTHON, ['-c', `
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:
    z.write(sys.argv[2], 'BIG/big.bin')
    with z.open('BIG/forced', 'w', force_zip64=True) as w:
        w.write(open(sys.argv[2], 'rb').read()[:3000000])
`, join(tmp, 'big.zip'), join(tmp, 'big.bin')]);
  const sha = (b) => createHash('sha256').update(b).digest('hex');

  const { context, page, errors } = await unitPage(tmp);
  const got = await page.evaluate(async () => {
    const { readZip } = await import('/js/unzip.js');
    const blob = async (name) => (await fetch(`/fixtures/${name}`)).blob();
    const hand = await readZip(await blob('hand.zip'));
    const handOut = [];
    for (const e of hand) handOut.push([e.name, e.size, e.zip64, e.problem, await e.hash(), [...await e.head(132)].slice(128).map((c) => String.fromCharCode(c)).join('')]);
    const t0 = performance.now();
    const many = await readZip(await blob('many.zip'));
    const manyMs = performance.now() - t0;
    const last = many[many.length - 1];
    const bigZip = await readZip(await blob('big.zip'));
    const e = bigZip[0];
    // The stream hands out pieces of at most 1 MB; ranges read front to back, then one again
    // from before (a chunk sent again), as the upload page does.
    let largest = 0, pieces = 0;
    const reader = e.stream().getReader();
    for (;;) { const { done, value } = await reader.read(); if (done) break; largest = Math.max(largest, value.length); pieces += 1; }
    const s = e.slicer();
    const a = await s.read(0, 2 << 20);
    const b = await s.read(2 << 20, 5 << 20);
    const again = await s.read(1 << 20, 3 << 20);
    const tail = await s.read(e.size - 10, e.size);
    s.close();
    // (crypto.subtle exists in secure contexts only; this origin is not one.)
    const { Sha256 } = await import('/js/sha256.js');
    const hex = async (u8) => new Sha256().update(u8).hex();
    return {
      hand: handOut, many: [many.length, many[0].name, last.name, new TextDecoder().decode(await last.head(100)), manyMs],
      big: { names: bigZip.map((x) => [x.name, x.size]), hash: await e.hash(), forced: await bigZip[1].hash(), largest, pieces,
        a: await hex(a), b: await hex(b), again: await hex(again), tail: [...tail] },
    };
  });
  assert.deepEqual(got.hand.map(([n, size, zip64, problem, hash, dicm]) => [n, size, hash, zip64, problem, dicm]),
    byHand.map(([n, size, hash]) => [n, size, hash, true, '', 'DICM']));
  assert.equal(got.many[0], many);
  assert.deepEqual(got.many.slice(1, 4), ['F/00000', `F/${many - 1}`, `entry ${many - 1}`]);
  console.log(`readZip of ${many} entries: ${Math.round(got.many[4])} ms`);
  assert.deepEqual(got.big.names, [['BIG/big.bin', big.length], ['BIG/forced', 3000000]]);
  assert.equal(got.big.hash, sha(big));
  assert.equal(got.big.forced, sha(big.subarray(0, 3000000)));
  assert.ok(got.big.largest <= 1 << 20 && got.big.pieces >= 24, `streamed in pieces: ${got.big.pieces}, the largest ${got.big.largest} bytes`);
  assert.equal(got.big.a, sha(big.subarray(0, 2 << 20)));
  assert.equal(got.big.b, sha(big.subarray(2 << 20, 5 << 20)));
  assert.equal(got.big.again, sha(big.subarray(1 << 20, 3 << 20)));
  assert.deepEqual(got.big.tail, [...big.subarray(big.length - 10)]);
  assert.deepEqual(errors, []);
  await context.close();
});

test('a zip entry whose bytes do not match its CRC-32 is not sent', async () => {
  const tmp = join(ARTIFACTS, 'formats-zip-crc');
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  execFileSync(PYTHON, ['-c', `
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_STORED) as z:
    z.writestr('A', b'the right bytes' * 100)
data = bytearray(open(sys.argv[1], 'rb').read())
at = data.find(b'the right bytes')
data[at] ^= 0x20
open(sys.argv[1], 'wb').write(bytes(data))
`, join(tmp, 'crc.zip')]);
  const { context, page } = await unitPage(tmp);
  const message = await page.evaluate(async () => {
    const { readZip } = await import('/js/unzip.js');
    const [e] = await readZip(await (await fetch('/fixtures/crc.zip')).blob());
    try { await e.hash(); return 'hashed'; } catch (err) { return err.message; }
  });
  assert.match(message, /do not match the archive's CRC-32/);
  await context.close();
});

test('phone: a ZIP64 zip (Python zipfile, force_zip64) of a study: listed, streamed, stored byte for byte', async () => {
  await server();
  const src = synth(join(site.tmp, 'zip64-src'), 96, 5);
  const zipPath = join(site.tmp, 'study64.zip');
  const check = execFileSync(PYTHON, ['-c', `
import sys, os, zipfile, struct
with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:
    for p in sys.argv[2:]:
        with open(p, 'rb') as f, z.open('EXPORT/' + os.path.basename(p), 'w', force_zip64=True) as w:
            w.write(f.read())
    z.writestr('EXPORT/notes.txt', 'not an image')
data = open(sys.argv[1], 'rb').read()
# The first local header: sizes 0xFFFFFFFF and a ZIP64 extended information extra field (ID 1).
sig, _, _, _, _, _, _, csize, size, nlen, xlen = struct.unpack('<IHHHHHIIIHH', data[:30])
xid = struct.unpack('<H', data[30 + nlen:32 + nlen])[0]
print(csize == 0xffffffff and size == 0xffffffff and xid == 1)
`, zipPath, ...src.paths], { encoding: 'utf8' }).trim();
  assert.equal(check, 'True', 'the archive has ZIP64 local headers');
  const link = await api('/api/v1/upload-links', { method: 'POST', body: JSON.stringify({ label: 'zip64', max_bytes: 100e6 }) });
  const context = await browser.newContext(VIEWPORTS.phone);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${link.body.url}?chunk=262144`);
  await page.waitForSelector('#dropzone');
  await page.setInputFiles('#pick-files', zipPath);
  await page.waitForFunction(() => document.getElementById('scan-status')?.dataset.files === '5', null, { timeout: 30000 });
  const l = await page.evaluate(() => ({
    series: [...document.querySelectorAll('#found tr[data-series-uid]')].map((r) => Number(r.dataset.images)),
    skipped: [...document.querySelectorAll('#skipped li')].map((li) => li.textContent),
  }));
  assert.deepEqual(l.series, [5]);
  assert.equal(l.skipped.length, 1);
  assert.match(l.skipped[0], /notes\.txt/);
  await page.click('#send');
  await page.waitForFunction(() => document.getElementById('progress-text')?.dataset.finished === 'true', null, { timeout: 120000 });
  await page.screenshot({ path: join(ARTIFACTS, 'upload-zip64-sent.png'), fullPage: true });
  const rows = await page.evaluate(() => [...document.querySelectorAll('#result-table tbody tr')].map((r) => ({ ...r.dataset, text: r.textContent })));
  const sha = (b) => createHash('sha256').update(b).digest('hex');
  const want = new Set(src.paths.map((p) => sha(readFileSync(p))));
  assert.equal(rows.length, 5);
  for (const r of rows) {
    assert.equal(r.outcome, 'stored', JSON.stringify(r));
    assert.ok(want.has(r.sha256), `${r.path}: stored bytes differ`);
  }
  const study = pydicomView(src.paths.slice(0, 1), site.tmp)[0][4];
  const inbox = await api('/api/v1/inbox');
  assert.equal(Number(inbox.body.studies.find((s) => s.study_uid === study).instances), 5);
  assert.deepEqual(errors, []);
  await context.close();
});

test('phone: a zip of a CD with its DICOMDIR is listed by the DICOMDIR\'s records', async () => {
  await server();
  const src = synth(join(site.tmp, 'zipcd-src'), 97, 3);
  const cd = makeCd(join(site.tmp, 'zipcd', 'CD'), src);
  const zipPath = join(site.tmp, 'cd.zip');
  execFileSync(PYTHON, ['-c', `
import sys, os, zipfile
root = sys.argv[2]
with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            z.write(p, os.path.relpath(p, os.path.dirname(root)))
`, zipPath, cd]);
  const link = await api('/api/v1/upload-links', { method: 'POST', body: JSON.stringify({ label: 'zipped CD', max_bytes: 100e6 }) });
  const context = await browser.newContext(VIEWPORTS.phone);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(link.body.url);
  await page.waitForSelector('#dropzone');
  await page.setInputFiles('#pick-files', zipPath);
  await page.waitForFunction(() => document.getElementById('scan-status')?.dataset.files === '3', null, { timeout: 30000 });
  const index = await page.evaluate(() => ({ ...document.querySelector('.cd-index').dataset }));
  assert.deepEqual([index.path, index.named, index.found, index.missing, index.extras], ['cd.zip/CD/DICOMDIR', '3', '3', '0', '0']);
  const want = pydicomView(src.paths, site.tmp)[0];
  const series = await page.evaluate(() => [...document.querySelectorAll('#found tr[data-series-uid]')].map((r) => [r.dataset.seriesUid, Number(r.dataset.images)]));
  assert.deepEqual(series, [[want[5], 3]]);
  assert.deepEqual(errors, []);
  await context.close();
});

test('sha256.js and crc32 in the browser equal node\'s crypto and zlib at every padding edge', async () => {
  const lengths = [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 65537];
  const bytes = (n) => Uint8Array.from({ length: n }, (_, i) => (i * 131 + 7) & 255);
  const { context, page, errors } = await unitPage();
  const got = await page.evaluate(async (lengths) => {
    const { Sha256, crc32 } = await import('/js/sha256.js');
    return lengths.map((n) => {
      const b = Uint8Array.from({ length: n }, (_, i) => (i * 131 + 7) & 255);
      // Fed in uneven pieces, as a stream hands them out.
      const h = new Sha256();
      let c = 0;
      for (let i = 0; i < n; i += 37) { h.update(b.subarray(i, i + 37)); c = crc32(b.subarray(i, i + 37), c); }
      return [h.hex(), c];
    });
  }, lengths);
  const { crc32 } = await import('node:zlib');
  lengths.forEach((n, i) => {
    assert.equal(got[i][0], createHash('sha256').update(bytes(n)).digest('hex'), `SHA-256 of ${n} bytes`);
    if (crc32) assert.equal(got[i][1], crc32(bytes(n)), `CRC-32 of ${n} bytes`);
  });
  assert.deepEqual(errors, []);
  await context.close();
});
