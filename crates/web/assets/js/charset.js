// Decodes DICOM text values for the upload page's listing by the Specific Character Set
// (0008,0005). So far: UTF-8 when the bytes are valid UTF-8, else Latin-1.

/** The text of `bytes` (a value of a PN, LO, SH, ST, LT, UC or UT element), trimmed. */
export function decodeText(bytes, _charset = '') {
  let s;
  try {
    s = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    s = '';
    for (const b of bytes) s += String.fromCharCode(b);
  }
  return s.replace(/[\0 ]+$/, '').replace(/^ +/, '');
}
