// Reads a DICOMDIR (the index of a CD or other File-set, PS3.10 8.6 and PS3.3 Annex F) in the
// browser, so the upload page lists a CD by its directory records and notices files the index
// names that were not dropped.
//
// A DICOMDIR is a Part 10 file (Media Storage SOP Class 1.2.840.10008.1.3.10) whose data set
// holds the Directory Record Sequence (0004,1220). Each item is a directory record (PS3.3 F.3.2.2):
// its type (0004,1430: PATIENT, STUDY, SERIES, IMAGE, SR DOCUMENT, …), the byte offset of the
// next record at the same level (0004,1400) and of its first lower-level record (0004,1420),
// whether it is in use (0004,1410, 0000 = inactive), and for records of files the Referenced
// File ID (0004,1500: path components, PS3.10 8.5) and the Referenced SOP Instance UID in File
// (0004,1511). Offsets count bytes from the first byte of the file (the preamble) to the item's
// tag (PS3.3 F.3.2.1). The hierarchy is walked from the root's first record (0004,1200); a
// DICOMDIR whose offsets are missing or broken is read in sequence order, nesting by record type.

import { Reader, Short, UNDEFINED, elementHeader, TS } from './dicomscan.js';
import { decodeText } from './charset.js';

/** Most bytes of a DICOMDIR read (a CD's index of 10 000 images is a few MB). */
export const MAX_DICOMDIR_BYTES = 64 << 20;

export class DicomdirError extends Error {}

/** Attributes of records kept, by tag: [name, is the value text subject to the character set]. */
const KEPT = {
  0x00041400: ['next', false], 0x00041410: ['inUse', false], 0x00041420: ['lower', false],
  0x00041430: ['type', false], 0x00041500: ['fileId', false], 0x00041510: ['sopClass', false],
  0x00041511: ['sopInstanceUid', false], 0x00041512: ['transferSyntax', false],
  0x00080005: ['charset', false], 0x00080020: ['studyDate', false], 0x00080060: ['modality', false],
  0x00081030: ['studyDescription', true], 0x0008103e: ['seriesDescription', true],
  0x00100010: ['patientName', true], 0x00100020: ['patientId', true], 0x00100030: ['birthDate', false],
  0x0020000d: ['studyUid', false], 0x0020000e: ['seriesUid', false], 0x00200011: ['seriesNumber', false],
  0x00200013: ['instanceNumber', false], 0x00280008: ['numberOfFrames', false],
};
const NUMERIC = new Set(['next', 'inUse', 'lower']);
/** Record types above the file level, by depth (PS3.3 F.4: Patient → Study → Series → …). */
const LEVEL = { PATIENT: 0, STUDY: 1, SERIES: 2 };

const latin = (b) => { let s = ''; for (const x of b) s += String.fromCharCode(x); return s; };
const trim = (s) => s.replace(/[\0 ]+$/, '').replace(/^ +/, '');

/** Reads one directory record (an item) whose header starts at `r.pos`. */
function readRecord(r, explicit, start) {
  const item = elementHeader(r, explicit);
  if (item.tag !== 0xfffee000) throw new DicomdirError('the Directory Record Sequence holds something other than items');
  const end = item.length === UNDEFINED ? Infinity : r.pos + item.length;
  const rec = { offset: start, raw: {} };
  while (r.pos < end) {
    const el = elementHeader(r, explicit);
    if (el.tag === 0xfffee00d) break; // item delimitation
    if (el.length === UNDEFINED) { skipUndefinedValue(r, explicit); continue; }
    r.need(el.length);
    const kept = KEPT[el.tag];
    if (kept) {
      const [name, text] = kept;
      const bytes = r.b.subarray(r.pos, r.pos + el.length);
      if (NUMERIC.has(name)) {
        rec[name] = el.length >= 4 ? r.v.getUint32(r.pos, r.le) : el.length >= 2 ? r.v.getUint16(r.pos, r.le) : 0;
      } else if (text) {
        rec.raw[name] = bytes;
      } else {
        rec[name] = trim(latin(bytes));
      }
    }
    r.pos += el.length;
  }
  return rec;
}

/** Skips a value of undefined length (a sequence, or encapsulated data) up to its delimiter. */
function skipUndefinedValue(r, explicit, depth = 0) {
  if (depth > 16) throw new DicomdirError('sequences nested too deep');
  for (;;) {
    const el = elementHeader(r, explicit);
    if (el.tag === 0xfffee0dd) return;
    if (el.length !== UNDEFINED) { r.need(el.length); r.pos += el.length; continue; }
    if (el.tag === 0xfffee000) {
      for (;;) {
        const inner = elementHeader(r, explicit);
        if (inner.tag === 0xfffee00d) break;
        if (inner.length === UNDEFINED) skipUndefinedValue(r, explicit, depth + 1);
        else { r.need(inner.length); r.pos += inner.length; }
      }
    } else {
      throw new DicomdirError('a broken sequence');
    }
  }
}

/**
 * The records of the DICOMDIR `bytes` (the whole file): `{records, root, fileSetId}`, records
 * in sequence order with their offsets. Throws DicomdirError when it is not a readable DICOMDIR.
 */
export function readRecords(bytes) {
  if (bytes.length < 132 || latin(bytes.subarray(128, 132)) !== 'DICM') throw new DicomdirError('not a DICOM file (no "DICM" marker)');
  let r = new Reader(bytes, true);
  r.pos = 132;
  let ts = TS.explicitLE;
  let sopClass = '';
  try {
    // File Meta Information: Explicit VR Little Endian, group 0002 (PS3.10 7.1).
    while (r.pos + 2 <= bytes.length && r.v.getUint16(r.pos, true) === 0x0002) {
      const el = elementHeader(r, true);
      r.need(el.length);
      const v = trim(latin(bytes.subarray(r.pos, r.pos + el.length)));
      if (el.tag === 0x00020010) ts = v;
      if (el.tag === 0x00020002) sopClass = v;
      r.pos += el.length;
    }
    if (sopClass && sopClass !== '1.2.840.10008.1.3.10') throw new DicomdirError('not a DICOMDIR (another SOP class)');
    if (ts === TS.deflated) throw new DicomdirError('a deflated DICOMDIR is not read here');
    const explicit = ts !== TS.implicitLE;
    if (ts === TS.explicitBE) { const at = r.pos; r = new Reader(bytes, false); r.pos = at; }
    const out = { records: [], root: 0, fileSetId: '' };
    while (r.pos < bytes.length) {
      const el = elementHeader(r, explicit);
      if (el.tag === 0x00041220) {
        // The Directory Record Sequence (PS3.3 F.5).
        const end = el.length === UNDEFINED ? Infinity : r.pos + el.length;
        while (r.pos < end) {
          const start = r.pos;
          r.need(8);
          if (r.v.getUint16(r.pos, r.le) === 0xfffe && r.v.getUint16(r.pos + 2, r.le) === 0xe0dd) { r.pos += 8; break; }
          out.records.push(readRecord(r, explicit, start));
        }
        continue;
      }
      if (el.length === UNDEFINED) { skipUndefinedValue(r, explicit); continue; }
      r.need(el.length);
      if (el.tag === 0x00041200) out.root = r.v.getUint32(r.pos, r.le);
      if (el.tag === 0x00041130) out.fileSetId = trim(latin(bytes.subarray(r.pos, r.pos + el.length)));
      r.pos += el.length;
    }
    return out;
  } catch (e) {
    if (e instanceof Short) throw new DicomdirError('the DICOMDIR is cut short');
    if (e instanceof DicomdirError) throw e;
    throw new DicomdirError(`a broken DICOMDIR (${e.message})`);
  }
}

/** The records in hierarchy order with their depth, following the offsets (PS3.3 F.3.2.1). */
function walk(dir) {
  const byOffset = new Map(dir.records.map((rec) => [rec.offset, rec]));
  if (!dir.root || !byOffset.has(dir.root)) return null;
  const out = [];
  const seen = new Set();
  const level = (first, depth, parents) => {
    if (depth > 16) throw new DicomdirError('directory records nested too deep');
    for (let at = first; at; ) {
      const rec = byOffset.get(at);
      if (!rec) throw new DicomdirError(`a record offset (${at}) points at no record`);
      if (seen.has(at)) throw new DicomdirError('the directory records form a loop');
      seen.add(at);
      // An inactive record (0004,1410 = 0000) and what lies below it are not part of the set.
      if (rec.inUse !== 0) {
        out.push({ rec, parents });
        if (rec.lower) level(rec.lower, depth + 1, [...parents, rec]);
      }
      at = rec.next;
    }
  };
  level(dir.root, 0, []);
  return out;
}

/** The records in sequence order, nested by type (for DICOMDIRs without usable offsets). */
function bySequence(dir) {
  const out = [];
  const stack = [];
  for (const rec of dir.records) {
    if (rec.inUse === 0) continue;
    const depth = LEVEL[rec.type] ?? 3;
    stack.length = Math.min(stack.length, depth);
    out.push({ rec, parents: [...stack] });
    if (depth < 3) stack[depth] = rec;
  }
  return out;
}

/** A record's text attribute decoded with the record's Specific Character Set (PS3.3 F.5). */
function text(rec, name) {
  const raw = rec.raw && rec.raw[name];
  return raw ? decodeText(raw, rec.charset || '', name === 'patientName' ? 'PN' : 'LO') : (rec[name] || '');
}

/**
 * The files a DICOMDIR names, each with what its records say: `[{fileId: ['DICOM', 'IM1'],
 * type, sopInstanceUid, sopClass, transferSyntax, patientName, patientId, birthDate, studyUid,
 * studyDate, studyDescription, seriesUid, seriesNumber, modality, seriesDescription,
 * instanceNumber, frames}]`, and `{fileSetId, records}` (the number of records in use).
 */
export function dicomdirFiles(bytes) {
  const dir = readRecords(bytes);
  let order = null;
  try { order = walk(dir); } catch (e) { if (!(e instanceof DicomdirError)) throw e; }
  if (!order) order = bySequence(dir);
  const files = [];
  for (const { rec, parents } of order) {
    if (!rec.fileId) continue;
    const find = (type) => parents.find((p) => p.type === type) || {};
    const patient = find('PATIENT');
    const study = find('STUDY');
    const series = find('SERIES');
    files.push({
      fileId: rec.fileId.split('\\').map((c) => c.trim()).filter(Boolean),
      type: rec.type || '',
      sopInstanceUid: rec.sopInstanceUid || '', sopClass: rec.sopClass || '', transferSyntax: rec.transferSyntax || '',
      patientName: text(patient, 'patientName'), patientId: text(patient, 'patientId'), birthDate: patient.birthDate || '',
      studyUid: study.studyUid || '', studyDate: study.studyDate || '', studyDescription: text(study, 'studyDescription'),
      seriesUid: series.seriesUid || '', seriesNumber: series.seriesNumber || '', modality: series.modality || '',
      seriesDescription: text(series, 'seriesDescription'),
      instanceNumber: rec.instanceNumber || '',
      frames: Number(rec.numberOfFrames) > 1 ? Number(rec.numberOfFrames) : 1,
    });
  }
  return { fileSetId: dir.fileSetId, records: order.length, files };
}

/**
 * A path made comparable with a Referenced File ID: upper case (CD file names are upper case,
 * PS3.10 8.5, but file managers may show them otherwise), without ISO 9660 version suffixes
 * (";1") and trailing periods, `/` between components.
 */
export function normalPath(path) {
  return path.split(/[/\\]/).filter(Boolean).map((c) => c.replace(/;\d*$/, '').replace(/\.$/, '').toUpperCase()).join('/');
}

/** True for a file named like a DICOMDIR (PS3.10 8.6: its File ID is "DICOMDIR"). */
export function isDicomdirPath(path) {
  const base = path.split('/').pop();
  return normalPath(base) === 'DICOMDIR';
}
