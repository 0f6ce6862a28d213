// Reads zip archives in the browser (APPNOTE.TXT 6.3: end of central directory, central
// directory, local headers), so a guest can drop a zip of a CD. Entries are stored (method 0)
// or deflated (method 8, inflated by the browser's DecompressionStream('deflate-raw')). Only
// the central directory is read up front; an entry's bytes are read from the Blob when needed,
// and inflated as a stream: a piece at a time, never the whole entry in memory.
//
// ZIP64 (APPNOTE 4.3.14–4.3.15, 4.5.3): an archive over 4 GB or with more than 65 535 entries
// has a ZIP64 end of central directory record, found through its locator just before the end
// of central directory record; an entry over 4 GB (or any entry of a writer that always uses
// ZIP64) keeps its sizes and local header offset in its ZIP64 extended information extra field
// (header ID 0x0001) where the central directory has 0xFFFFFFFF.
//
// Limits against zip bombs and hostile archives: at most MAX_ENTRIES entries, an entry at most
// `maxEntryBytes` (the server's instance limit; declared and actually inflated: inflating stops
// past the declared size), a compression ratio of at most MAX_RATIO, and the declared total at
// most `maxTotalBytes` (what the upload link still accepts). An entry is checked against its
// CRC-32 when it is hashed before sending. Encrypted entries, split archives and other methods
// are refused with a reason.

import { Sha256, crc32 } from './sha256.js';

export const MAX_ENTRIES = 200000;
export const MAX_RATIO = 1000;
/** Most bytes handed on at a time when an entry is streamed. */
const PIECE = 1 << 20;
/** Compressed bytes fed to the inflater at a time. */
const IN_PIECE = 16 << 10;

export class ZipError extends Error {}

async function bytesOf(blob, start, end) {
  return new Uint8Array(await blob.slice(start, end).arrayBuffer());
}

function text(bytes, isUtf8) {
  return new TextDecoder(isUtf8 ? 'utf-8' : 'latin1').decode(bytes);
}

/** A little-endian 64-bit field as a Number (exact below 2^53, which any real size is). */
function u64(v, at) {
  const n = v.getBigUint64(at, true);
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new ZipError('a ZIP64 size or offset too large');
  return Number(n);
}

/**
 * Where the central directory is and how many entries it has: from the end of central
 * directory record (APPNOTE 4.3.16), or from the ZIP64 end of central directory record
 * (4.3.14) when a field of the former is at its maximum.
 */
async function centralDirectory(blob) {
  // The end of central directory record: 22 bytes, then a comment of up to 65535 bytes.
  const tailStart = Math.max(0, blob.size - (22 + 65535));
  const tail = await bytesOf(blob, tailStart, blob.size);
  const tv = new DataView(tail.buffer);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tv.getUint32(i, true) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) throw new ZipError('not a zip archive (no end of central directory)');
  const disk = tv.getUint16(eocd + 4, true);
  let count = tv.getUint16(eocd + 10, true);
  let cdSize = tv.getUint32(eocd + 12, true);
  let cdOffset = tv.getUint32(eocd + 16, true);
  let zip64 = false;
  const locatorAt = tailStart + eocd - 20;
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff || disk === 0xffff) {
    // The ZIP64 end of central directory locator (4.3.15): signature, disk, offset (8), disks.
    if (locatorAt < 0) throw new ZipError('a ZIP64 archive without its locator');
    const loc = await bytesOf(blob, locatorAt, locatorAt + 20);
    const lv = new DataView(loc.buffer);
    if (lv.getUint32(0, true) !== 0x07064b50) throw new ZipError('a ZIP64 archive without its locator');
    if (lv.getUint32(16, true) > 1) throw new ZipError('split (multi-disk) archives are not read here');
    const at = u64(lv, 8);
    const rec = await bytesOf(blob, at, at + 56);
    const rv = new DataView(rec.buffer);
    if (rec.length < 56 || rv.getUint32(0, true) !== 0x06064b50) throw new ZipError('a broken ZIP64 end of central directory');
    // 4.3.14: signature, record size (8), versions (2+2), disk (4), CD disk (4), entries on
    // this disk (8), entries (8), CD size (8), CD offset (8).
    count = u64(rv, 32);
    cdSize = u64(rv, 40);
    cdOffset = u64(rv, 48);
    zip64 = true;
  } else if (disk !== 0) {
    throw new ZipError('split (multi-disk) archives are not read here');
  }
  return { count, cdSize, cdOffset, zip64 };
}

/**
 * The ZIP64 extended information of a central directory entry (APPNOTE 4.5.3): the fields
 * present are those whose 32-bit field is 0xFFFFFFFF, in the order size, compressed size,
 * local header offset.
 */
function zip64Extra(v, start, length, entry) {
  for (let p = start; p + 4 <= start + length;) {
    const id = v.getUint16(p, true);
    const size = v.getUint16(p + 2, true);
    if (p + 4 + size > start + length) break;
    if (id === 0x0001) {
      let q = p + 4;
      const take = () => {
        if (q + 8 > p + 4 + size) throw new ZipError(`${entry.name}: a short ZIP64 extra field`);
        const n = u64(v, q);
        q += 8;
        return n;
      };
      if (entry.size === 0xffffffff) entry.size = take();
      if (entry.compressedSize === 0xffffffff) entry.compressedSize = take();
      if (entry.local === 0xffffffff) entry.local = take();
      return;
    }
    p += 4 + size;
  }
  if (entry.size === 0xffffffff || entry.compressedSize === 0xffffffff || entry.local === 0xffffffff) {
    throw new ZipError(`${entry.name}: ZIP64 sizes without a ZIP64 extra field`);
  }
}

/**
 * The entries of the zip `blob` (a File): `[{name, size, compressedSize, method, crc,
 * problem, head(n), stream(), slicer(), hash()}]` (directories left out). Throws ZipError
 * when it is not a zip, or breaks a limit.
 */
export async function readZip(blob, { maxEntryBytes = 4 * 2 ** 30, maxTotalBytes = 16 * 2 ** 30 } = {}) {
  const { count, cdSize, cdOffset, zip64 } = await centralDirectory(blob);
  if (count > MAX_ENTRIES) throw new ZipError(`more than ${MAX_ENTRIES} entries`);
  if (cdOffset + cdSize > blob.size) throw new ZipError('the central directory lies outside the file');
  // 46 bytes at least per entry: a count the directory cannot hold is a lie.
  if (count * 46 > cdSize) throw new ZipError('a broken central directory (fewer entries than it says)');
  const cd = await bytesOf(blob, cdOffset, cdOffset + cdSize);
  const v = new DataView(cd.buffer);
  const out = [];
  let total = 0;
  let p = 0;
  for (let n = 0; n < count; n++) {
    if (p + 46 > cd.length || v.getUint32(p, true) !== 0x02014b50) throw new ZipError('a broken central directory');
    const flags = v.getUint16(p + 8, true);
    const method = v.getUint16(p + 10, true);
    const nameLen = v.getUint16(p + 28, true);
    const extraLen = v.getUint16(p + 30, true);
    const commentLen = v.getUint16(p + 32, true);
    if (p + 46 + nameLen + extraLen > cd.length) throw new ZipError('a broken central directory');
    const entry = {
      name: text(cd.subarray(p + 46, p + 46 + nameLen), (flags & 0x800) !== 0),
      method, crc: v.getUint32(p + 16, true),
      compressedSize: v.getUint32(p + 20, true), size: v.getUint32(p + 24, true), local: v.getUint32(p + 42, true),
      problem: '', zip64,
    };
    p += 46 + nameLen;
    zip64Extra(v, p, extraLen, entry);
    p += extraLen + commentLen;
    if (entry.name.endsWith('/')) continue;
    if (flags & 1) entry.problem = 'encrypted';
    else if (method !== 0 && method !== 8) entry.problem = `compression method ${method} is not supported`;
    else if (entry.size > maxEntryBytes) entry.problem = `larger than ${maxEntryBytes} bytes`;
    else if (method === 8 && entry.size > Math.max(1, entry.compressedSize) * MAX_RATIO) entry.problem = `compressed more than ${MAX_RATIO}:1 (a zip bomb?)`;
    else if (method === 0 && entry.size !== entry.compressedSize) entry.problem = 'stored sizes differ';
    else if (entry.local + 30 + entry.compressedSize > blob.size) entry.problem = 'its data lies outside the file';
    if (!entry.problem) {
      total += entry.size;
      if (total > maxTotalBytes) throw new ZipError(`the archive unpacks to more than ${maxTotalBytes} bytes`);
    }
    entry.head = (k) => readHead(blob, entry, k);
    entry.stream = () => entryStream(blob, entry);
    entry.slicer = () => slicer(entry);
    entry.hash = () => hashEntry(entry);
    // The whole entry as a Blob (in memory: for tests and small entries only).
    entry.blob = () => new Response(entry.stream()).blob();
    out.push(entry);
  }
  return out;
}

/** Where an entry's data start (after its local header, APPNOTE 4.3.7). */
async function dataStart(blob, entry) {
  if (entry.problem) throw new ZipError(entry.problem);
  const lh = await bytesOf(blob, entry.local, entry.local + 30);
  const lv = new DataView(lh.buffer);
  if (lh.length < 30 || lv.getUint32(0, true) !== 0x04034b50) throw new ZipError(`${entry.name}: a broken local header`);
  return entry.local + 30 + lv.getUint16(26, true) + lv.getUint16(28, true);
}

/**
 * The entry's bytes as a stream of pieces (at most PIECE bytes each for stored entries; what
 * the inflater hands out for deflated ones), failing as soon as it inflates past its declared
 * size or ends short of it.
 */
function entryStream(blob, entry) {
  let reader = null;
  let got = 0;
  return new ReadableStream({
    async pull(ctl) {
      if (!reader) {
        const start = await dataStart(blob, entry);
        const raw = blob.slice(start, start + entry.compressedSize);
        reader = entry.method === 0 ? raw.stream().getReader() : inflater(raw);
      }
      let r;
      try {
        r = await reader.read();
      } catch (e) {
        throw new ZipError(`${entry.name}: does not inflate (${e.message})`);
      }
      if (r.done) {
        if (got !== entry.size) throw new ZipError(`${entry.name}: ${got} bytes inflated, ${entry.size} declared`);
        ctl.close();
        return;
      }
      got += r.value.length;
      // Never more than the declared size: a lying header cannot make the browser inflate more.
      if (got > entry.size) {
        reader.cancel().catch(() => {});
        throw new ZipError(`${entry.name}: inflates past its declared size`);
      }
      for (let i = 0; i < r.value.length; i += PIECE) ctl.enqueue(r.value.subarray(i, i + PIECE));
    },
    cancel() { if (reader) reader.cancel().catch(() => {}); },
  });
}

/**
 * A reader of what `raw` (raw DEFLATE) inflates to. The compressed bytes are written IN_PIECE
 * at a time, each once the inflated side has room (the stream's backpressure), so what is held
 * at once is what one piece inflates to: at most IN_PIECE × MAX_RATIO, a few tens of KB for
 * DICOM images (a Blob's own stream hands out 64 KB and more per piece).
 */
function inflater(raw) {
  const ds = new DecompressionStream('deflate-raw');
  const writer = ds.writable.getWriter();
  (async () => {
    try {
      for (let at = 0; at < raw.size; at += IN_PIECE) {
        await writer.ready;
        await writer.write(new Uint8Array(await raw.slice(at, at + IN_PIECE).arrayBuffer()));
      }
      await writer.close();
    } catch {
      // The reader was cancelled, or the data do not inflate: the reader reports it.
    }
  })();
  return ds.readable.getReader();
}

/** The entry's first `limit` bytes (at most). */
async function readHead(blob, entry, limit) {
  const want = Math.min(limit, entry.size);
  const reader = entryStream(blob, entry).getReader();
  const out = new Uint8Array(want);
  let at = 0;
  try {
    while (at < want) {
      const { done, value } = await reader.read();
      if (done) break;
      const take = Math.min(value.length, want - at);
      out.set(value.subarray(0, take), at);
      at += take;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  return out.subarray(0, at);
}

/**
 * Reads the entry front to back in ranges, for sending it in chunks without holding it:
 * `read(start, end)` gives bytes [start, end); a range before the current position (a chunk
 * sent again after a dropped connection) starts the stream again from the beginning.
 */
function slicer(entry) {
  let reader = null;
  let pos = 0;
  let left = new Uint8Array(0);
  const restart = () => { if (reader) reader.cancel().catch(() => {}); reader = entry.stream().getReader(); pos = 0; left = new Uint8Array(0); };
  return {
    async read(start, end) {
      if (!reader || start < pos) restart();
      const out = new Uint8Array(end - start);
      let at = 0;
      while (at < out.length) {
        if (!left.length) {
          const { done, value } = await reader.read();
          if (done) throw new ZipError(`${entry.name}: ends early`);
          left = value;
        }
        // Skip what lies before `start`, then copy.
        const skip = Math.min(left.length, Math.max(0, start - pos));
        if (skip) { left = left.subarray(skip); pos += skip; continue; }
        const take = Math.min(left.length, out.length - at);
        out.set(left.subarray(0, take), at);
        left = left.subarray(take);
        pos += take;
        at += take;
      }
      return out;
    },
    close() { if (reader) reader.cancel().catch(() => {}); reader = null; },
  };
}

/** The entry's SHA-256 (hex), read as a stream and checked against its CRC-32 on the way. */
async function hashEntry(entry) {
  const h = new Sha256();
  let crc = 0;
  const reader = entry.stream().getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    h.update(value);
    crc = crc32(value, crc);
  }
  if (crc !== entry.crc) throw new ZipError(`${entry.name}: its bytes do not match the archive's CRC-32`);
  return h.hex();
}
