// Unit tests of the upload page's file reading, in node: the DICOM header scanner
// (crates/web/assets/js/dicomscan.js: Part 10 with Explicit and Implicit VR Little Endian,
// bare data sets, sequences of defined and undefined length, a header cut short, not DICOM, a
// DICOMDIR, the patient/study/series summary) and the zip reader (js/unzip.js: stored and
// deflated entries, limits against bombs and lying sizes, broken archives). The synthetic files
// of `vesalius synth` are read too, and checked against pydicom's reading (expected.py's
// neighbour below) when the binary is built.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deflateRawSync } from 'node:zlib';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { scanFile, scanHeader, summarize, TS, DICOMDIR_CLASS } from '../../crates/web/assets/js/dicomscan.js';
import { readZip, MAX_RATIO } from '../../crates/web/assets/js/unzip.js';
import { BIN, ROOT } from './site.mjs';

const enc = new TextEncoder();

function cat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}
const u16 = (x) => new Uint8Array([x & 255, x >> 8]);
const u32 = (x) => new Uint8Array([x & 255, (x >> 8) & 255, (x >> 16) & 255, (x >>> 24) & 255]);
function pad(s) {
  const b = enc.encode(s);
  return b.length % 2 ? cat(b, new Uint8Array([0x20])) : b;
}
/** An Explicit VR Little Endian element. */
function ex(group, elem, vr, value) {
  const v = typeof value === 'string' ? pad(value) : value;
  const long = ['OB', 'OW', 'SQ', 'UN', 'UT'].includes(vr);
  return long ? cat(u16(group), u16(elem), enc.encode(vr), u16(0), u32(v.length), v)
    : cat(u16(group), u16(elem), enc.encode(vr), u16(v.length), v);
}
/** An Implicit VR Little Endian element. */
function im(group, elem, value) {
  const v = typeof value === 'string' ? pad(value) : value;
  return cat(u16(group), u16(elem), u32(v.length), v);
}
const UNDEF = 0xffffffff;

function part10(ts, body, sopClass = '1.2.840.10008.5.1.4.1.1.2') {
  const meta = cat(ex(2, 1, 'OB', new Uint8Array([0, 1])), ex(2, 2, 'UI', sopClass), ex(2, 3, 'UI', '1.2.3.4.5'), ex(2, 0x10, 'UI', ts));
  return cat(new Uint8Array(128), enc.encode('DICM'), ex(2, 0, 'UL', u32(meta.length)), meta, body);
}

const attrs = (e) => cat(
  e(0x0008, 0x0016, 'UI', '1.2.840.10008.5.1.4.1.1.2'), e(0x0008, 0x0018, 'UI', '1.2.3.4.5'),
  e(0x0008, 0x0020, 'DA', '20260102'), e(0x0008, 0x0060, 'CS', 'CT'),
  e(0x0010, 0x0010, 'PN', 'Doe^Jane'), e(0x0010, 0x0020, 'LO', 'PID-1'),
  e(0x0020, 0x000d, 'UI', '1.2.3'), e(0x0020, 0x000e, 'UI', '1.2.3.1'), e(0x0020, 0x0011, 'IS', '4'),
);

test('Part 10, Explicit VR Little Endian: the attributes before Pixel Data', () => {
  const e = (g, el, vr, v) => ex(g, el, vr, v);
  const pixel = cat(u16(0x7fe0), u16(0x0010), enc.encode('OW'), u16(0), u32(8), new Uint8Array(8));
  const s = scanHeader(part10(TS.explicitLE, cat(attrs(e), pixel)));
  assert.equal(s.dicom, true);
  assert.equal(s.partial, false);
  assert.equal(s.patientName, 'Doe^Jane');
  assert.equal(s.patientId, 'PID-1');
  assert.equal(s.studyUid, '1.2.3');
  assert.equal(s.seriesUid, '1.2.3.1');
  assert.equal(s.seriesNumber, '4');
  assert.equal(s.modality, 'CT');
  assert.equal(s.studyDate, '20260102');
  assert.equal(s.transferSyntax, TS.explicitLE);
  assert.equal(s.frames, 1);
  assert.equal(s.dicomdir, false);
});

test('Part 10, Implicit VR, with sequences of undefined length (nested) skipped', () => {
  const e = (g, el, _vr, v) => im(g, el, v);
  // (0008,1140) Referenced Image Sequence, undefined length, one undefined-length item holding
  // another undefined-length sequence; then a defined-length item.
  const item = (inner) => cat(u16(0xfffe), u16(0xe000), u32(UNDEF), inner, u16(0xfffe), u16(0xe00d), u32(0));
  const seqU = (g, el, items) => cat(u16(g), u16(el), u32(UNDEF), ...items, u16(0xfffe), u16(0xe0dd), u32(0));
  const nested = seqU(0x0008, 0x1155, [item(im(0x0008, 0x1150, '1.2'))]);
  const defItem = cat(u16(0xfffe), u16(0xe000), u32(10), im(0x0008, 0x0100, 'AB'));
  const seq = seqU(0x0008, 0x1140, [item(nested), defItem]);
  const body = cat(attrs(e).subarray(0, 0), im(0x0008, 0x0016, '1.2.840.10008.5.1.4.1.1.2'), im(0x0008, 0x0060, 'MR'),
    seq, im(0x0010, 0x0010, 'Roe^Richard'), im(0x0020, 0x000d, '9.8.7'), im(0x0028, 0x0008, '12'));
  const s = scanHeader(part10(TS.implicitLE, body));
  assert.equal(s.dicom, true, s.reason);
  assert.equal(s.modality, 'MR');
  assert.equal(s.patientName, 'Roe^Richard');
  assert.equal(s.studyUid, '9.8.7');
  assert.equal(s.frames, 12);
  // Explicit VR with an SQ of undefined length too.
  const exSeq = cat(u16(0x0008), u16(0x1140), enc.encode('SQ'), u16(0), u32(UNDEF),
    u16(0xfffe), u16(0xe000), u32(UNDEF), ex(0x0008, 0x1150, 'UI', '1.2'), u16(0xfffe), u16(0xe00d), u32(0),
    u16(0xfffe), u16(0xe0dd), u32(0));
  const s2 = scanHeader(part10(TS.explicitLE, cat(ex(0x0008, 0x0060, 'CS', 'US'), exSeq, ex(0x0010, 0x0020, 'LO', 'X1'))));
  assert.equal(s2.modality, 'US');
  assert.equal(s2.patientId, 'X1');
});

test('bare data sets (no preamble), cut-short headers, not DICOM, a DICOMDIR', () => {
  const imp = attrs((g, el, _vr, v) => im(g, el, v));
  const s = scanHeader(imp);
  assert.equal(s.dicom, true);
  assert.equal(s.patientName, 'Doe^Jane');
  const exp = attrs((g, el, vr, v) => ex(g, el, vr, v));
  assert.equal(scanHeader(exp).studyUid, '1.2.3');
  // Cut in the middle of the header: DICOM, what was read, and marked partial.
  const full = part10(TS.explicitLE, exp);
  const cut = scanHeader(full.subarray(0, full.length - 3));
  assert.equal(cut.dicom, true);
  assert.equal(cut.partial, true);
  assert.equal(cut.patientName, 'Doe^Jane');
  assert.equal(cut.seriesNumber, undefined);
  // Not DICOM.
  assert.equal(scanHeader(enc.encode('%PDF-1.7 hello world, this is not an image')).dicom, false);
  assert.equal(scanHeader(new Uint8Array(3)).dicom, false);
  // A DICOMDIR is DICOM but not an image to send.
  const dir = scanHeader(part10(TS.explicitLE, ex(0x0004, 0x1130, 'CS', 'CD'), DICOMDIR_CLASS));
  assert.equal(dir.dicom, true);
  assert.equal(dir.dicomdir, true);
  // Big endian (PS3.5 A.3): the data set read in its byte order.
  const be16 = (x) => new Uint8Array([x >> 8, x & 255]);
  const exBE = (g, el, vr, v) => { const b = pad(v); return cat(be16(g), be16(el), enc.encode(vr), be16(b.length), b); };
  const be = scanHeader(part10(TS.explicitBE, cat(exBE(8, 0x60, 'CS', 'MR'), exBE(0x10, 0x10, 'PN', 'Big^Endian'), exBE(0x20, 0x11, 'IS', '7'))));
  assert.equal(be.dicom, true);
  assert.equal(be.partial, false);
  assert.deepEqual([be.modality, be.patientName, be.seriesNumber], ['MR', 'Big^Endian', '7']);
  // Garbage after a plausible start: an error message, not an exception.
  const bad = cat(ex(8, 0x16, 'UI', '1.2'), u16(8), u16(0x18), enc.encode('zz'), u16(2), enc.encode('12'));
  assert.equal(scanHeader(bad).dicom, false);
});

test('deflated data sets (PS3.5 A.5): inflated and read, also when only their first bytes are given', async () => {
  const pixels = ex(0x7fe0, 0x0010, 'OW', new Uint8Array(200000).map((_, i) => (i * 31) % 256));
  const body = cat(attrs((g, el, vr, v) => ex(g, el, vr, v)), ex(0x0028, 0x0010, 'US', u16(512)), pixels);
  const file = part10(TS.deflated, new Uint8Array(deflateRawSync(body)));
  const head = scanHeader(file);
  assert.equal(head.headerUnread, true);
  assert.ok(head.deflatedAt > 132);
  for (const bytes of [file, file.subarray(0, 1500)]) {
    const s = await scanFile(bytes);
    assert.equal(s.dicom, true, s.reason);
    assert.deepEqual([s.patientName, s.patientId, s.studyUid, s.modality, s.transferSyntax], ['Doe^Jane', 'PID-1', '1.2.3', 'CT', TS.deflated]);
  }
  // A "deflated" file whose data set is not DEFLATE at all.
  assert.equal((await scanFile(part10(TS.deflated, new Uint8Array(64).fill(0xff)))).dicom, false);
});

test('summary: patients, studies, series with image counts (frames counted)', () => {
  const mk = (p, st, se, frames = 1, n = '1') => ({ size: 10, scan: { patientId: p, patientName: p, studyUid: st, seriesUid: se, seriesNumber: n, frames } });
  const tree = summarize([mk('A', 's1', 'x', 1, '2'), mk('A', 's1', 'x'), mk('A', 's1', 'y', 1, '1'), mk('A', 's2', 'z', 30), mk('B', 's3', 'w')]);
  assert.equal(tree.length, 2);
  const a = tree.find((p) => p.id === 'A');
  assert.equal(a.studies.length, 2);
  const s1 = a.studies.find((s) => s.uid === 's1');
  assert.deepEqual(s1.series.map((s) => [s.uid, s.images, s.bytes]), [['y', 1, 10], ['x', 2, 20]]);
  assert.equal(a.studies.find((s) => s.uid === 's2').series[0].images, 30);
});

// --- zip ---------------------------------------------------------------------------------------
/** A zip of `[name, bytes, {method, lieSize}]`. */
function zip(entries) {
  const locals = [], centrals = [];
  let offset = 0;
  for (const [name, data, opt = {}] of entries) {
    const method = opt.method ?? 8;
    const body = method === 8 ? new Uint8Array(deflateRawSync(data)) : data;
    const size = opt.lieSize ?? data.length;
    const nb = enc.encode(name);
    const local = cat(u32(0x04034b50), u16(20), u16(0x800), u16(method), u16(0), u16(0), u32(0), u32(body.length), u32(size), u16(nb.length), u16(0), nb, body);
    centrals.push(cat(u32(0x02014b50), u16(20), u16(20), u16(0x800), u16(method), u16(0), u16(0), u32(0), u32(body.length), u32(size),
      u16(nb.length), u16(0), u16(0), u16(0), u16(0), u32(0), u32(offset), nb));
    locals.push(local);
    offset += local.length;
  }
  const cd = cat(...centrals);
  const eocd = cat(u32(0x06054b50), u16(0), u16(0), u16(entries.length), u16(entries.length), u32(cd.length), u32(offset), u16(0));
  return new Blob([cat(...locals, cd, eocd)]);
}

test('zip: stored and deflated entries, heads and whole entries, folders left out', async () => {
  const big = new Uint8Array(300000).map((_, i) => (i * 7) % 251);
  const z = zip([['CD/', new Uint8Array(0), { method: 0 }], ['CD/IM1', big], ['CD/IM2', enc.encode('stored bytes'), { method: 0 }]]);
  const entries = await readZip(z);
  assert.deepEqual(entries.map((e) => [e.name, e.size, e.problem]), [['CD/IM1', big.length, ''], ['CD/IM2', 12, '']]);
  assert.deepEqual([...(await entries[0].head(1000))], [...big.subarray(0, 1000)]);
  const whole = new Uint8Array(await (await entries[0].blob()).arrayBuffer());
  assert.deepEqual(whole, big);
  assert.equal(new TextDecoder().decode(await entries[1].head(6)), 'stored');
});

test('zip: bombs, lying sizes and broken archives are refused', async () => {
  // A high ratio: zeros compress ~1000:1; the entry is marked, not inflated.
  const zeros = new Uint8Array(4 << 20);
  const [bomb] = await readZip(zip([['bomb', zeros]]));
  assert.match(bomb.problem, new RegExp(`more than ${MAX_RATIO}:1`));
  await assert.rejects(bomb.head(10));
  // Larger than allowed per entry.
  const [large] = await readZip(zip([['large', new Uint8Array(5000).map((_, i) => i % 7)]]), { maxEntryBytes: 4000 });
  assert.match(large.problem, /larger than 4000/);
  // Declared smaller than it inflates: inflating stops with an error.
  const data = new Uint8Array(200000).map((_, i) => (i * 13) % 255);
  const [liar] = await readZip(zip([['liar', data, { lieSize: 1000 }]]));
  await assert.rejects(liar.blob(), /inflates past its declared size/);
  // A total over the limit.
  await assert.rejects(readZip(zip([['a', data], ['b', data]]), { maxTotalBytes: 300000 }), /unpacks to more than/);
  // Not a zip at all; a truncated central directory.
  await assert.rejects(readZip(new Blob([enc.encode('hello')])), /not a zip/);
  const good = new Uint8Array(await zip([['x', data]]).arrayBuffer());
  const broken = good.slice();
  broken.set(u32(0x12345678), good.length - 22 - 46 - 1); // the central header's signature
  await assert.rejects(readZip(new Blob([broken])));
});

test('the synthetic CT of `vesalius synth` reads like pydicom reads it', { skip: !existsSync(BIN) && 'no vesalius binary' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'vesalius-scan-'));
  try {
    execFileSync(BIN, ['synth', '--out', dir, '--seed', '3', '--slices', '4', '--kinds', 'ct-head,mr-brain'], { stdio: 'ignore' });
    const py = `
import json, sys, pathlib, pydicom
out = []
for p in sorted(pathlib.Path(sys.argv[1]).rglob('*.dcm')):
    d = pydicom.dcmread(p, stop_before_pixels=True)
    out.append([str(p), str(d.PatientName), d.PatientID, d.StudyInstanceUID, d.SeriesInstanceUID, d.Modality, str(d.get('SeriesNumber', ''))])
print(json.dumps(out))`;
    const python = process.env.VESALIUS_PYTHON || join(ROOT, '.venv/bin/python');
    const expected = JSON.parse(execFileSync(python, ['-c', py, dir], { encoding: 'utf8' }));
    assert.ok(expected.length >= 8);
    for (const [path, name, pid, study, series, modality, number] of expected) {
      const s = scanHeader(new Uint8Array(readFileSync(path)));
      assert.deepEqual([s.patientName, s.patientId, s.studyUid, s.seriesUid, s.modality, s.seriesNumber], [name, pid, study, series, modality, number], path);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
