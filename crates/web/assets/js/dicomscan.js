// Reads what the upload page lists about a file before sending it: the DICOM header up to
// Pixel Data, in the browser, from the file's first bytes. Part 10 files (PS3.10 7.1: 128-byte
// preamble, "DICM", the File Meta Information in Explicit VR Little Endian), and bare data sets
// (no preamble, as some CDs carry) in Implicit or Explicit VR Little Endian (PS3.5 7.1).
// Explicit VR Big Endian data sets (PS3.5 A.3, retired but still on old CDs) are read in their
// byte order; Deflated Explicit VR Little Endian data sets (PS3.5 A.5: everything after the File
// Meta Information is a raw DEFLATE stream, RFC 1951) are inflated by the browser's
// DecompressionStream('deflate-raw') up to what the header needs (`scanFile`). Sequences are
// skipped (defined and undefined lengths, PS3.5 7.5). Names and descriptions are decoded by the
// Specific Character Set (0008,0005) (charset.js). No pixel data is read.

import { decodeText } from './charset.js';

/** Transfer syntaxes (PS3.5 A.1, A.2, A.3, A.5). */
export const TS = {
  implicitLE: '1.2.840.10008.1.2',
  explicitLE: '1.2.840.10008.1.2.1',
  deflated: '1.2.840.10008.1.2.1.99',
  explicitBE: '1.2.840.10008.1.2.2',
};
/** Media Storage Directory Storage: a DICOMDIR (PS3.10 8.6, PS3.3 F). */
export const DICOMDIR_CLASS = '1.2.840.10008.1.3.10';

/** VRs with a 2-byte reserved field and a 4-byte length in Explicit VR (PS3.5 7.1.2). */
export const LONG_VR = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV']);
export const UNDEFINED = 0xffffffff;

/** The attributes kept, by tag (gggg,eeee as a number). */
const WANTED = {
  0x00080005: 'charset', 0x00020002: 'mediaSopClass', 0x00020003: 'mediaSopInstance', 0x00020010: 'transferSyntax',
  0x00080016: 'sopClass', 0x00080018: 'sopInstanceUid', 0x00080020: 'studyDate',
  0x00080060: 'modality', 0x00081030: 'studyDescription', 0x0008103e: 'seriesDescription',
  0x00100010: 'patientName', 0x00100020: 'patientId', 0x00100030: 'birthDate',
  0x0020000d: 'studyUid', 0x0020000e: 'seriesUid', 0x00200011: 'seriesNumber',
  0x00200013: 'instanceNumber', 0x00280008: 'numberOfFrames',
};
/** The wanted attributes whose values the Specific Character Set applies to, with their VR. */
const TEXT_VR = { patientName: 'PN', patientId: 'LO', studyDescription: 'LO', seriesDescription: 'LO' };
/** Past this group nothing wanted follows (Pixel Data is 7FE0). */
const LAST_GROUP = 0x0028;

/** Thrown when an element goes past the bytes given. */
export class Short extends Error {}

/** A cursor over `bytes` in one byte order. */
export class Reader {
  constructor(bytes, littleEndian = true) {
    this.b = bytes;
    this.v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.le = littleEndian;
    this.pos = 0;
  }
  need(n) { if (this.pos + n > this.b.length) throw new Short(); }
  u16() { this.need(2); const x = this.v.getUint16(this.pos, this.le); this.pos += 2; return x; }
  u32() { this.need(4); const x = this.v.getUint32(this.pos, this.le); this.pos += 4; return x; }
  text(n) {
    this.need(n);
    let s = '';
    for (let i = 0; i < n; i++) s += String.fromCharCode(this.b[this.pos + i]);
    this.pos += n;
    return s;
  }
}

/** A value of the default repertoire as text: trailing spaces and NULs trimmed (PS3.5 6.2). */
function valueText(bytes) {
  let raw = '';
  for (const b of bytes) raw += String.fromCharCode(b);
  return raw.replace(/[\0 ]+$/, '').replace(/^ +/, '');
}

/**
 * One element header at `r.pos`: `{tag, vr, length}` (vr '' in Implicit VR). Items and
 * delimiters (FFFE) never have a VR.
 */
export function elementHeader(r, explicit) {
  const group = r.u16();
  const elem = r.u16();
  const tag = ((group << 16) | elem) >>> 0;
  if (group === 0xfffe) return { tag, vr: '', length: r.u32() };
  if (!explicit) return { tag, vr: '', length: r.u32() };
  const vr = r.text(2);
  if (!/^[A-Z]{2}$/.test(vr)) throw new Error(`not a DICOM element (VR ${JSON.stringify(vr)})`);
  if (LONG_VR.has(vr)) {
    r.u16();
    return { tag, vr, length: r.u32() };
  }
  return { tag, vr, length: r.u16() };
}

/** Skips an undefined-length sequence's items up to its delimiter (FFFE,E0DD). */
function skipUndefined(r, explicit, depth) {
  if (depth > 16) throw new Error('sequences nested too deep');
  for (;;) {
    const el = elementHeader(r, explicit);
    if (el.tag === 0xfffee0dd) return; // sequence delimitation
    if (el.tag !== 0xfffee000) throw new Error('a sequence holds something other than items');
    if (el.length !== UNDEFINED) { r.need(el.length); r.pos += el.length; continue; }
    // An undefined-length item: its elements up to the item delimitation (FFFE,E00D).
    for (;;) {
      const inner = elementHeader(r, explicit);
      if (inner.tag === 0xfffee00d) break;
      if (inner.length === UNDEFINED) skipUndefined(r, explicit, depth + 1);
      else { r.need(inner.length); r.pos += inner.length; }
    }
  }
}

/**
 * Reads elements from `r.pos` into `out` until Pixel Data, a group past what is wanted, or the
 * end of the bytes. Returns 'done' or 'short' (more bytes would be needed).
 */
function readDataSet(r, explicit, out, stopAfterGroup2 = false) {
  try {
    while (r.pos < r.b.length) {
      const start = r.pos;
      if (stopAfterGroup2) {
        r.need(2);
        if (r.v.getUint16(r.pos, true) !== 0x0002) return 'done';
      }
      const el = elementHeader(r, explicit);
      const group = el.tag >>> 16;
      if (el.tag === 0x7fe00010 || (group > LAST_GROUP && group !== 0xfffe)) { r.pos = start; return 'done'; }
      if (el.length === UNDEFINED) { skipUndefined(r, explicit, 0); continue; }
      r.need(el.length);
      const name = WANTED[el.tag];
      if (name) {
        // Every wanted attribute is text (UI, DA, CS, LO, PN, IS); names and descriptions are
        // decoded at the end, with the Specific Character Set (which comes first, 0008,0005).
        const bytes = r.b.subarray(r.pos, r.pos + el.length);
        if (TEXT_VR[name]) (out.raw ||= {})[name] = bytes;
        else out[name] = valueText(bytes);
      }
      r.pos += el.length;
    }
    return 'done';
  } catch (e) {
    if (e instanceof Short) return 'short';
    throw e;
  }
}

/**
 * What the first bytes of a file say: `{dicom: false, reason}` or `{dicom: true, ...attributes,
 * dicomdir, partial}` (`partial`: the header went on past the bytes given). A deflated data set
 * is read from `inflated` (its first bytes inflated) when given; else the answer has
 * `deflatedAt` (where the DEFLATE stream starts) and the File Meta Information only.
 */
export function scanHeader(bytes, inflated = null) {
  const out = {};
  let r = new Reader(bytes, true);
  let explicit = true;
  if (bytes.length >= 132 && bytes[128] === 0x44 && bytes[129] === 0x49 && bytes[130] === 0x43 && bytes[131] === 0x4d) {
    r.pos = 132;
    let meta;
    try {
      meta = readDataSet(r, true, out, true);
    } catch (e) {
      return { dicom: false, reason: `a broken DICOM file meta header (${e.message})` };
    }
    if (meta === 'short') return { dicom: true, partial: true, ...finish(out) };
    const ts = out.transferSyntax || TS.explicitLE;
    if (ts === TS.deflated) {
      if (!inflated) return { dicom: true, headerUnread: true, deflatedAt: r.pos, ...finish(out) };
      r = new Reader(inflated, true);
    } else if (ts === TS.explicitBE) {
      // PS3.5 A.3: the data set after the File Meta Information is in big endian order.
      const at = r.pos;
      r = new Reader(bytes, false);
      r.pos = at;
    }
    explicit = ts !== TS.implicitLE;
  } else {
    // A bare data set: it must start with a plausible element of group 0008 (PS3.10 7.1 says
    // files have the preamble; CDs written by some systems do not).
    if (bytes.length < 8) return { dicom: false, reason: 'too short for DICOM' };
    const g = bytes[0] | (bytes[1] << 8);
    if (g !== 0x0008 && g !== 0x0002) return { dicom: false, reason: 'not DICOM (no "DICM" marker)' };
    explicit = /^[A-Z]{2}$/.test(String.fromCharCode(bytes[4], bytes[5]));
  }
  let state;
  try {
    state = readDataSet(r, explicit, out);
  } catch (e) {
    return { dicom: false, reason: `not readable as DICOM (${e.message})` };
  }
  return { dicom: true, partial: state === 'short', ...finish(out) };
}

/** Most bytes inflated from a deflated data set for its header. */
export const INFLATE_HEAD_BYTES = 1 << 20;

/**
 * The first `limit` bytes that the raw DEFLATE stream `bytes` inflates to. The stream may be
 * cut short (only the file's first bytes were read): what it gave until then is kept.
 */
export async function inflateHead(bytes, limit = INFLATE_HEAD_BYTES) {
  const ds = new DecompressionStream('deflate-raw');
  const writer = ds.writable.getWriter();
  const reader = ds.readable.getReader();
  // Written in pieces, so what each piece inflates to is handed out before a cut-short end
  // fails the stream (written whole, nothing may come out before the error).
  (async () => {
    try {
      for (let i = 0; i < bytes.length; i += 16384) await writer.write(bytes.subarray(i, i + 16384));
      await writer.close();
    } catch { /* the reader failed or stopped: nothing more to write */ }
  })();
  const parts = [];
  let got = 0;
  try {
    while (got < limit) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
      got += value.length;
    }
  } catch {
    // The end of the bytes given is not the end of the stream: keep what came out.
  } finally {
    reader.cancel().catch(() => {});
  }
  const out = new Uint8Array(Math.min(got, limit));
  let at = 0;
  for (const p of parts) {
    const take = Math.min(p.length, out.length - at);
    out.set(p.subarray(0, take), at);
    at += take;
  }
  return out;
}

/** As scanHeader, with a deflated data set inflated (PS3.5 A.5) and read. */
export async function scanFile(bytes) {
  const s = scanHeader(bytes);
  if (s.deflatedAt === undefined) return s;
  const inflated = await inflateHead(bytes.subarray(s.deflatedAt));
  if (!inflated.length) return { dicom: false, reason: 'a deflated data set that does not inflate' };
  return scanHeader(bytes, inflated);
}

function finish(found) {
  const { raw, ...out } = found;
  for (const [name, bytes] of Object.entries(raw || {})) out[name] = decodeText(bytes, out.charset || '', TEXT_VR[name]);
  const sopClass = out.sopClass || out.mediaSopClass || '';
  return {
    ...out,
    sopClass,
    sopInstanceUid: out.sopInstanceUid || out.mediaSopInstance || '',
    dicomdir: sopClass === DICOMDIR_CLASS,
    frames: Number(out.numberOfFrames) > 1 ? Number(out.numberOfFrames) : 1,
  };
}

/**
 * Groups scanned files for the list shown before sending: patients → studies → series, with
 * image counts. `items`: `[{scan, size}]` with `scan.dicom` true and not a DICOMDIR.
 */
export function summarize(items) {
  const patients = new Map();
  for (const it of items) {
    const s = it.scan;
    const pkey = `${s.patientId || ''}\u0000${s.patientName || ''}`;
    if (!patients.has(pkey)) patients.set(pkey, { id: s.patientId || '', name: s.patientName || '', birthDate: s.birthDate || '', studies: new Map() });
    const p = patients.get(pkey);
    const skey = s.studyUid || '(no study UID)';
    if (!p.studies.has(skey)) p.studies.set(skey, { uid: skey, date: s.studyDate || '', description: s.studyDescription || '', series: new Map() });
    const st = p.studies.get(skey);
    const sekey = s.seriesUid || '(no series UID)';
    if (!st.series.has(sekey)) st.series.set(sekey, { uid: sekey, number: s.seriesNumber || '', modality: s.modality || '', description: s.seriesDescription || '', files: 0, images: 0, bytes: 0 });
    const se = st.series.get(sekey);
    se.files += 1;
    se.images += s.frames || 1;
    se.bytes += it.size || 0;
  }
  return [...patients.values()].map((p) => ({
    ...p,
    studies: [...p.studies.values()].map((st) => ({
      ...st,
      series: [...st.series.values()].sort((a, b) => (Number(a.number) || 0) - (Number(b.number) || 0)),
    })),
  }));
}
