// Reads zip archives in the browser (APPNOTE.TXT 6.3: end of central directory, central
// directory, local headers), so a guest can drop a zip of a CD. Entries are stored (method 0)
// or deflated (method 8, inflated by the browser's DecompressionStream('deflate-raw')). Only
// the central directory is read up front; an entry's bytes are read from the Blob when needed.
//
// Limits against zip bombs and hostile archives: at most MAX_ENTRIES entries, an entry at most
// `maxEntryBytes` (declared and actually inflated: inflating stops past the declared size), a
// compression ratio of at most MAX_RATIO, and the declared total at most `maxTotalBytes`.
// Encrypted entries, ZIP64 archives and other methods are refused with a reason.

export const MAX_ENTRIES = 20000;
export const MAX_RATIO = 1000;

export class ZipError extends Error {}

async function bytesOf(blob, start, end) {
  return new Uint8Array(await blob.slice(start, end).arrayBuffer());
}

function utf8(bytes, isUtf8) {
  return new TextDecoder(isUtf8 ? 'utf-8' : 'latin1').decode(bytes);
}

/**
 * The entries of the zip `blob` (a File): `[{name, size, compressedSize, method,
 * head(n), blob()}]` (directories left out). Throws ZipError when it is not a zip, or breaks a
 * limit.
 */
export async function readZip(blob, { maxEntryBytes = 4 * 2 ** 30, maxTotalBytes = 16 * 2 ** 30 } = {}) {
  // The end of central directory record: 22 bytes, then a comment of up to 65535 bytes.
  const tailStart = Math.max(0, blob.size - (22 + 65535));
  const tail = await bytesOf(blob, tailStart, blob.size);
  const tv = new DataView(tail.buffer);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tv.getUint32(i, true) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) throw new ZipError('not a zip archive (no end of central directory)');
  const count = tv.getUint16(eocd + 10, true);
  const cdSize = tv.getUint32(eocd + 12, true);
  const cdOffset = tv.getUint32(eocd + 16, true);
  if (count === 0xffff || cdOffset === 0xffffffff || cdSize === 0xffffffff) {
    throw new ZipError('ZIP64 archives are not read here: please send the files or a smaller zip');
  }
  if (count > MAX_ENTRIES) throw new ZipError(`more than ${MAX_ENTRIES} entries`);
  if (cdOffset + cdSize > blob.size) throw new ZipError('the central directory lies outside the file');
  const cd = await bytesOf(blob, cdOffset, cdOffset + cdSize);
  const v = new DataView(cd.buffer);
  const out = [];
  let total = 0;
  let p = 0;
  for (let n = 0; n < count; n++) {
    if (p + 46 > cd.length || v.getUint32(p, true) !== 0x02014b50) throw new ZipError('a broken central directory');
    const flags = v.getUint16(p + 8, true);
    const method = v.getUint16(p + 10, true);
    const compressedSize = v.getUint32(p + 20, true);
    const size = v.getUint32(p + 24, true);
    const nameLen = v.getUint16(p + 28, true);
    const extraLen = v.getUint16(p + 30, true);
    const commentLen = v.getUint16(p + 32, true);
    const local = v.getUint32(p + 42, true);
    if (p + 46 + nameLen > cd.length) throw new ZipError('a broken central directory');
    const name = utf8(cd.subarray(p + 46, p + 46 + nameLen), (flags & 0x800) !== 0);
    p += 46 + nameLen + extraLen + commentLen;
    if (name.endsWith('/')) continue;
    const entry = { name, size, compressedSize, method, local, problem: '' };
    if (flags & 1) entry.problem = 'encrypted';
    else if (method !== 0 && method !== 8) entry.problem = `compression method ${method} is not supported`;
    else if (size === 0xffffffff || compressedSize === 0xffffffff) entry.problem = 'ZIP64 entry';
    else if (size > maxEntryBytes) entry.problem = `larger than ${maxEntryBytes} bytes`;
    else if (method === 8 && size > Math.max(1, compressedSize) * MAX_RATIO) entry.problem = `compressed more than ${MAX_RATIO}:1 (a zip bomb?)`;
    else if (method === 0 && size !== compressedSize) entry.problem = 'stored sizes differ';
    if (!entry.problem) {
      total += size;
      if (total > maxTotalBytes) throw new ZipError(`the archive unpacks to more than ${maxTotalBytes} bytes`);
    }
    entry.head = (k) => readEntry(blob, entry, k);
    entry.blob = async () => new Blob([await readEntry(blob, entry, Infinity)]);
    out.push(entry);
  }
  return out;
}

/** The data of `entry`, at most its first `limit` bytes (inflated, checked against its size). */
async function readEntry(blob, entry, limit) {
  if (entry.problem) throw new ZipError(entry.problem);
  const lh = await bytesOf(blob, entry.local, entry.local + 30);
  const lv = new DataView(lh.buffer);
  if (lh.length < 30 || lv.getUint32(0, true) !== 0x04034b50) throw new ZipError(`${entry.name}: a broken local header`);
  const start = entry.local + 30 + lv.getUint16(26, true) + lv.getUint16(28, true);
  const raw = blob.slice(start, start + entry.compressedSize);
  if (entry.method === 0) return new Uint8Array(await raw.slice(0, Math.min(limit, entry.size)).arrayBuffer());
  const want = Math.min(limit, entry.size);
  const reader = raw.stream().pipeThrough(new DecompressionStream('deflate-raw')).getReader();
  const parts = [];
  let got = 0;
  try {
    while (got < want) {
      const { done, value } = await reader.read();
      if (done) break;
      got += value.length;
      // Never more than the declared size: a lying header cannot make the browser inflate more.
      if (got > entry.size) throw new ZipError(`${entry.name}: inflates past its declared size`);
      parts.push(value);
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  if (limit === Infinity && got !== entry.size) throw new ZipError(`${entry.name}: ${got} bytes inflated, ${entry.size} declared`);
  const out = new Uint8Array(Math.min(got, want));
  let at = 0;
  for (const part of parts) {
    const take = Math.min(part.length, out.length - at);
    out.set(part.subarray(0, take), at);
    at += take;
    if (at >= out.length) break;
  }
  return out;
}
