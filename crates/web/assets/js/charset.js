// Decodes DICOM text values by their Specific Character Set (0008,0005), for the names the
// upload page lists (PS3.5 6.1, PS3.3 C.12.1.1.2).
//
// - One value without code extensions: the whole value in that set. ISO_IR 100…203 are the
//   ISO 8859 parts (Latin-1 is mapped byte for byte: the browser's "iso-8859-1" is
//   windows-1252), ISO_IR 13 is JIS X 0201 (Shift_JIS decodes its bytes), ISO_IR 166 TIS 620,
//   ISO_IR 192 UTF-8, GB18030 and GBK themselves. No value: the default repertoire (ASCII);
//   bytes outside it are then read as UTF-8 when they are valid UTF-8, else as Latin-1 (what
//   senders that leave the attribute out mostly mean).
// - Values "ISO 2022 IR …": ISO 2022 code extensions (PS3.5 6.1.2.5). Each value starts with
//   G0 = ASCII (ISO-IR 6, or ISO-IR 14 romaji for ISO 2022 IR 13) and G1 = the set of the first
//   value; escape sequences (PS3.3 Table C.12-3 and C.12-4) designate other sets to G0 or G1,
//   and bytes below 0x80 are read in G0, bytes from 0x80 in G1. The multi-byte sets are decoded
//   by the browser's own decoders: JIS X 0208 (ISO-IR 87) and JIS X 0212 (ISO-IR 159) as EUC-JP
//   (each byte with its high bit set, JIS X 0212 after 0x8F), KS X 1001 (ISO-IR 149) as EUC-KR,
//   GB 2312 (ISO-IR 58) as GBK. PS3.5 6.1.2.5.3: an encoder switches back to the initial sets
//   before "\\", control characters and, in person names, "^" and "="; so this decoder returns
//   to them there (when G0 is a one-byte set: in a two-byte G0 those bytes belong to characters).
// Only PN, LO, SH, ST, LT, UC and UT values are affected (PS3.5 6.1.2.5.3); the others are ASCII.

/** The decoder label of each single-byte or unextended Defined Term (PS3.3 Table C.12-2). */
const SINGLE = {
  'ISO_IR 6': 'ascii', 'ISO_IR 100': 'latin1', 'ISO_IR 101': 'iso-8859-2', 'ISO_IR 109': 'iso-8859-3',
  'ISO_IR 110': 'iso-8859-4', 'ISO_IR 144': 'iso-8859-5', 'ISO_IR 127': 'iso-8859-6', 'ISO_IR 126': 'iso-8859-7',
  'ISO_IR 138': 'iso-8859-8', 'ISO_IR 148': 'iso-8859-9', 'ISO_IR 203': 'iso-8859-15', 'ISO_IR 13': 'shift_jis',
  'ISO_IR 166': 'windows-874', 'ISO_IR 192': 'utf-8', GB18030: 'gb18030', GBK: 'gbk',
};

/** The G1 set each "ISO 2022 IR …" Defined Term starts with (PS3.3 Table C.12-3 and C.12-4). */
const INITIAL_G1 = {
  'ISO 2022 IR 6': null, 'ISO 2022 IR 100': 'latin1', 'ISO 2022 IR 101': 'iso-8859-2',
  'ISO 2022 IR 109': 'iso-8859-3', 'ISO 2022 IR 110': 'iso-8859-4', 'ISO 2022 IR 144': 'iso-8859-5',
  'ISO 2022 IR 127': 'iso-8859-6', 'ISO 2022 IR 126': 'iso-8859-7', 'ISO 2022 IR 138': 'iso-8859-8',
  'ISO 2022 IR 148': 'iso-8859-9', 'ISO 2022 IR 203': 'iso-8859-15', 'ISO 2022 IR 13': 'katakana',
  'ISO 2022 IR 166': 'windows-874',
  // Multi-byte sets as value 1 (not allowed by PS3.3, but seen): their G1 set.
  'ISO 2022 IR 149': 'ks-x-1001', 'ISO 2022 IR 58': 'gb2312',
};

/**
 * Escape sequences (after ESC, 0x1B) and what they designate (PS3.3 Tables C.12-3, C.12-4):
 * `[g, set]` with g 0 or 1.
 */
const ESCAPES = [
  ['(B', 0, 'ascii'], ['(J', 0, 'romaji'], ['$B', 0, 'jis-x-0208'], ['$@', 0, 'jis-x-0208'],
  ['$(D', 0, 'jis-x-0212'], [')I', 1, 'katakana'], ['$)C', 1, 'ks-x-1001'], ['$)A', 1, 'gb2312'],
  ['-A', 1, 'latin1'], ['-B', 1, 'iso-8859-2'], ['-C', 1, 'iso-8859-3'], ['-D', 1, 'iso-8859-4'],
  ['-L', 1, 'iso-8859-5'], ['-G', 1, 'iso-8859-6'], ['-F', 1, 'iso-8859-7'], ['-H', 1, 'iso-8859-8'],
  ['-M', 1, 'iso-8859-9'], ['-b', 1, 'iso-8859-15'], ['-T', 1, 'windows-874'],
].map(([s, g, set]) => [[...s].map((c) => c.charCodeAt(0)), g, set]);

const decoders = new Map();
function decoder(label) {
  if (!decoders.has(label)) decoders.set(label, new TextDecoder(label));
  return decoders.get(label);
}

/** Bytes as Latin-1 (ISO 8859-1 byte = code point; not windows-1252). */
function latin1(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return s;
}

/** Bytes with no declared set: ASCII, or UTF-8 when valid, else Latin-1. */
function undeclared(bytes) {
  if (bytes.every((b) => b < 0x80)) return latin1(bytes);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return latin1(bytes);
  }
}

/** The Specific Character Set's values: from a string "A\B" or an array. */
function values(charset) {
  const list = Array.isArray(charset) ? charset : String(charset || '').split('\\');
  return list.map((v) => v.trim().toUpperCase().replace(/^ISO[ -_]?IR[ _]?(\d+)$/, 'ISO_IR $1').replace(/^ISO[ _]?2022[ _]?IR[ _]?(\d+)$/, 'ISO 2022 IR $1'));
}

/** Decodes a run of bytes that all belong to one set. */
function run(set, bytes) {
  if (!bytes.length) return '';
  switch (set) {
    case 'ascii': case 'romaji': return latin1(bytes);
    case 'latin1': return latin1(bytes);
    case 'katakana': {
      // JIS X 0201 katakana in G1: 0xA1–0xDF are U+FF61–U+FF9F.
      let s = '';
      for (const b of bytes) s += b >= 0xa1 && b <= 0xdf ? String.fromCharCode(0xff61 + b - 0xa1) : '\ufffd';
      return s;
    }
    case 'jis-x-0208': return decoder('euc-jp').decode(bytes.map((b) => b | 0x80));
    case 'jis-x-0212': {
      const out = new Uint8Array(bytes.length * 3 / 2);
      for (let i = 0, j = 0; i + 1 < bytes.length; i += 2) { out[j++] = 0x8f; out[j++] = bytes[i] | 0x80; out[j++] = bytes[i + 1] | 0x80; }
      return decoder('euc-jp').decode(out);
    }
    case 'ks-x-1001': return decoder('euc-kr').decode(bytes);
    case 'gb2312': return decoder('gbk').decode(bytes);
    case null: case undefined: return undeclared(bytes);
    default: return decoder(set).decode(bytes);
  }
}

/** Bytes before which the initial sets are active again (PS3.5 6.1.2.5.3): CR, LF, FF, TAB, "\\". */
const RESET = new Set([0x0d, 0x0a, 0x0c, 0x09, 0x5c]);
/** And in person names, the component and group delimiters "^" and "=". */
const RESET_PN = new Set([...RESET, 0x5e, 0x3d]);

/**
 * One element value with ISO 2022 code extensions (PS3.5 6.1.2.5), starting in `g0`/`g1`.
 * `pn`: a person name.
 */
function iso2022(bytes, g0Initial, g1Initial, pn) {
  const reset = pn ? RESET_PN : RESET;
  let g0 = g0Initial;
  let g1 = g1Initial;
  let out = '';
  let set = null;
  let pending = [];
  const flush = () => { out += run(set, Uint8Array.from(pending)); pending = []; };
  const put = (s, ...bs) => {
    if (s !== set) { flush(); set = s; }
    pending.push(...bs);
  };
  const twoByte = (s) => s === 'jis-x-0208' || s === 'jis-x-0212';
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b === 0x1b) {
      const esc = ESCAPES.find(([seq]) => seq.every((c, k) => bytes[i + 1 + k] === c));
      if (esc) {
        if (esc[1] === 0) g0 = esc[2]; else g1 = esc[2];
        i += esc[0].length;
        continue;
      }
      put('ascii', 0x3f); // an unknown escape: shown as "?"
      continue;
    }
    if (b < 0x80) {
      // A delimiter or control character read in a one-byte G0: the initial sets again (an
      // encoder must have switched back before it, PS3.5 6.1.2.5.3).
      if (!twoByte(g0) && reset.has(b)) { g0 = g0Initial; g1 = g1Initial; }
      // Control characters and space are never part of a two-byte character.
      if (twoByte(g0) && b > 0x20 && b < 0x7f) {
        if (i + 1 < bytes.length) { put(g0, b, bytes[i + 1]); i += 1; } else put('ascii', 0x3f);
      } else {
        put(twoByte(g0) ? 'ascii' : g0, b);
      }
    } else if (g1 === 'ks-x-1001' || g1 === 'gb2312') {
      if (i + 1 < bytes.length) { put(g1, b, bytes[i + 1]); i += 1; } else put('ascii', 0x3f);
    } else {
      put(g1, b);
    }
  }
  flush();
  return out;
}

/**
 * The text of `bytes`, a value of a PN, LO, SH, ST, LT, UC or UT element (`vr`), decoded with
 * the Specific Character Set `charset` ("ISO_IR 100", "\\ISO 2022 IR 87", or its values as an
 * array); trailing spaces and NULs and leading spaces trimmed (PS3.5 6.2).
 */
export function decodeText(bytes, charset = '', vr = 'PN') {
  return decodeValue(bytes, charset, vr).replace(/[\0 ]+$/, '').replace(/^ +/, '');
}

/** As decodeText, untrimmed. */
export function decodeValue(bytes, charset = '', vr = 'PN') {
  const v = values(charset);
  const extended = v.length > 1 || v.some((x) => x.startsWith('ISO 2022'));
  if (!extended) {
    const label = SINGLE[v[0]] ?? (v[0] ? SINGLE[v[0].replace(/^ISO 2022/, 'ISO_IR')] : undefined);
    if (!label || label === 'ascii') return undeclared(bytes);
    return run(label, bytes);
  }
  const first = v[0] || 'ISO 2022 IR 6';
  const g1 = INITIAL_G1[first.replace(/^ISO_IR/, 'ISO 2022 IR')] ?? null;
  const g0 = first.endsWith(' 13') ? 'romaji' : 'ascii';
  // Values of a multi-valued element are split after decoding ("\\" may be a byte of a
  // two-byte character).
  return iso2022(bytes, g0, g1, vr === 'PN');
}

/** Which Specific Character Set Defined Terms this browser can decode (the tests check all). */
export const SUPPORTED = [...Object.keys(SINGLE), ...Object.keys(INITIAL_G1)];
