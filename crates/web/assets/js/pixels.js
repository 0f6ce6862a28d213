// Frames and their display, without the DOM: the DICOM JSON model (PS3.18 F.2), WADO-RS
// multipart answers (PS3.18 8.7.3.5, RFC 2046), native pixel data (PS3.5 8.1.1) and the grey
// scale pipeline: Modality LUT (PS3.3 C.11.1.1.2, rescale slope/intercept) then the linear VOI
// LUT (PS3.3 C.11.2.1.2.1, window center/width) to 8-bit display values.

/** The values of `tag` (8 hex digits) in a DICOM JSON object, or []. */
export function values(obj, tag) {
  const e = obj && obj[tag];
  return (e && Array.isArray(e.Value)) ? e.Value : [];
}

/** The first value of `tag` as text ('' when absent); person names in their alphabetic form. */
export function str(obj, tag) {
  const v = values(obj, tag)[0];
  if (v === undefined || v === null) return '';
  if (typeof v === 'object') return v.Alphabetic || '';
  return String(v);
}

/** Value `i` of `tag` as a number (`dflt` when absent or not a number). */
export function num(obj, tag, i = 0, dflt = undefined) {
  const v = values(obj, tag)[i];
  const n = typeof v === 'number' ? v : parseFloat(v);
  return Number.isFinite(n) ? n : dflt;
}

/** A person name for people: `DOE^JANE` → `DOE, JANE`. */
export function personName(pn) {
  const [family = '', given = '', middle = '', prefix = '', suffix = ''] = String(pn || '').split('^');
  const rest = [prefix, given, middle, suffix].filter(Boolean).join(' ');
  return family && rest ? `${family}, ${rest}` : (family || rest);
}

/** `YYYYMMDD` → `YYYY-MM-DD` (anything else unchanged). */
export function isoDate(da) {
  const s = String(da || '');
  return /^\d{8}$/.test(s) ? `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}` : s;
}

/** `HHMMSS.frac` → `HH:MM`. */
export function shortTime(tm) {
  const s = String(tm || '');
  return /^\d{4}/.test(s) ? `${s.slice(0, 2)}:${s.slice(2, 4)}` : s;
}

// Tags used below (PS3.6).
export const T = {
  sopInstanceUid: '00080018', modality: '00080060', studyDate: '00080020', studyTime: '00080030',
  studyDescription: '00081030', seriesDescription: '0008103E', patientName: '00100010',
  patientId: '00100020', birthDate: '00100030', sex: '00100040', sliceThickness: '00180050',
  seriesUid: '0020000E', seriesNumber: '00200011', instanceNumber: '00200013',
  imagePosition: '00200032', imageOrientation: '00200037', sliceLocation: '00201041',
  samplesPerPixel: '00280002', photometric: '00280004', numberOfFrames: '00280008',
  rows: '00280010', columns: '00280011', pixelSpacing: '00280030', bitsAllocated: '00280100',
  bitsStored: '00280101', pixelRepresentation: '00280103', windowCenter: '00281050',
  windowWidth: '00281051', rescaleIntercept: '00281052', rescaleSlope: '00281053',
  windowExplanation: '00281055', availableTransferSyntax: '00083002', lossy: '00282110', institution: '00080080', planar: '00280006',
};

/**
 * The Image Pixel and VOI attributes of an instance's metadata that display needs.
 * Throws when the image cannot be windowed in the browser (colour, compressed-only layouts).
 */
export function pixelModule(meta) {
  const pm = {
    rows: num(meta, T.rows, 0, 0),
    columns: num(meta, T.columns, 0, 0),
    samplesPerPixel: num(meta, T.samplesPerPixel, 0, 1),
    bitsAllocated: num(meta, T.bitsAllocated, 0, 16),
    bitsStored: num(meta, T.bitsStored, 0, num(meta, T.bitsAllocated, 0, 16)),
    pixelRepresentation: num(meta, T.pixelRepresentation, 0, 0),
    photometric: str(meta, T.photometric) || 'MONOCHROME2',
    // PS3.3 C.11.1.1.2: without Rescale Slope/Intercept the Modality LUT is the identity.
    slope: num(meta, T.rescaleSlope, 0, 1),
    intercept: num(meta, T.rescaleIntercept, 0, 0),
    frames: Math.max(1, num(meta, T.numberOfFrames, 0, 1)),
    planar: num(meta, T.planar, 0, 0),
    // The transfer syntax the instance is stored in (PS3.18 Available Transfer Syntax UID):
    // which colour space its frames arrive in (receivedColour).
    transferSyntax: str(meta, T.availableTransferSyntax),
    windows: [],
  };
  const centers = values(meta, T.windowCenter), widths = values(meta, T.windowWidth);
  const names = values(meta, T.windowExplanation);
  for (let i = 0; i < Math.min(centers.length, widths.length); i++) {
    const c = Number(centers[i]), w = Number(widths[i]);
    if (Number.isFinite(c) && Number.isFinite(w) && w >= 1) {
      pm.windows.push({ center: c, width: w, name: names[i] ? String(names[i]) : `DICOM ${i + 1}` });
    }
  }
  return pm;
}

/** Native transfer syntaxes whose frames the server sends as stored (PS3.5 8.2). */
const NATIVE = new Set(['1.2.840.10008.1.2', '1.2.840.10008.1.2.1', '1.2.840.10008.1.2.2']);
/** JPEG lossy syntaxes: their decoder turns YCbCr into RGB (crates/codec `decoder_converts_to_rgb`). */
const JPEG_LOSSY = new Set(['1.2.840.10008.1.2.4.50', '1.2.840.10008.1.2.4.51']);

/**
 * The colour space and sample layout of the frames the viewer receives (uncompressed Explicit
 * VR Little Endian): `{photometric, planar}`, from how the instance is stored. Native frames
 * arrive as stored (RGB or YBR_FULL, by pixel or by plane), except native YBR_FULL_422, which
 * the server does not index by frame and decodes, expanded to YBR_FULL. Encapsulated (and
 * deflated) ones are decoded by the server (crates/codec, "Pixel form"): interleaved; JPEG
 * lossy and YBR_ICT / YBR_RCT (JPEG 2000) in RGB; the others in the stored colour space,
 * YBR_FULL_422 expanded to YBR_FULL. When the metadata does not say how the instance is
 * stored (a peer's), only RGB by pixel is trusted (the same either way). Null: not known.
 */
export function receivedColour(pm) {
  const ts = pm.transferSyntax, stored = pm.photometric;
  if (!ts) return stored === 'RGB' && pm.planar === 0 ? { photometric: 'RGB', planar: 0 } : null;
  if (NATIVE.has(ts) && stored !== 'YBR_FULL_422') return { photometric: stored, planar: pm.planar };
  if (JPEG_LOSSY.has(ts) || stored === 'YBR_ICT' || stored === 'YBR_RCT') return { photometric: 'RGB', planar: 0 };
  return { photometric: stored === 'YBR_FULL_422' ? 'YBR_FULL' : stored, planar: 0 };
}

/**
 * Whether this is a colour image the browser shows from its raw frames: 8 bits per sample,
 * received (receivedColour) as RGB or YBR_FULL, by pixel or by plane; YBR_FULL is turned
 * into RGB here (PS3.3 C.7.6.3.1.2). Other colour images (16-bit samples, palette colour,
 * YBR_PARTIAL) are shown as the server's renderings.
 */
export function isColour(pm) {
  if (pm.samplesPerPixel !== 3 || pm.bitsAllocated !== 8 || pm.bitsStored !== 8 || !(pm.rows > 0 && pm.columns > 0)) return false;
  const c = receivedColour(pm);
  return !!c && (c.photometric === 'RGB' || c.photometric === 'YBR_FULL') && (c.planar === 0 || c.planar === 1);
}

/**
 * Whether the browser can window this image itself: monochrome, 8 or 16 bits per sample; or
 * colour as [isColour] says (each of R, G and B through the same window, below).
 */
export function windowable(pm) {
  if (isColour(pm)) return true;
  return pm.samplesPerPixel === 1 && pm.rows > 0 && pm.columns > 0
    && (pm.photometric === 'MONOCHROME1' || pm.photometric === 'MONOCHROME2')
    && (pm.bitsAllocated === 8 || pm.bitsAllocated === 16)
    && pm.bitsStored >= 1 && pm.bitsStored <= pm.bitsAllocated;
}

/**
 * The window that shows a colour image as stored: the linear VOI function with center 128 and
 * width 256 maps each sample value 0–255 to itself.
 */
export const COLOUR_IDENTITY = Object.freeze({ center: 128, width: 256 });

/** Bytes of one native frame. */
export function frameBytes(pm) {
  return pm.rows * pm.columns * pm.samplesPerPixel * (pm.bitsAllocated / 8);
}

/** The `boundary` parameter of a multipart Content-Type, or null. */
export function boundaryOf(contentType) {
  const m = /;\s*boundary=("?)([^";]+)\1/i.exec(contentType || '');
  return m ? m[2] : null;
}

function indexOf(hay, needle, from) {
  const first = needle[0];
  const last = hay.length - needle.length;
  // The typed array's own indexOf (native) finds the candidates: a frame's body is long.
  for (let i = hay.indexOf(first, from); i >= 0 && i <= last; i = hay.indexOf(first, i + 1)) {
    let j = 1;
    while (j < needle.length && hay[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
  }
  return -1;
}

/**
 * The parts of a multipart body (RFC 2046 5.1.1): `[{headers, body}]`, `headers` lower-cased,
 * `body` a view into `bytes`. Throws on a body without the closing delimiter.
 */
export function multipartParts(bytes, boundary) {
  const enc = new TextEncoder();
  const delim = enc.encode(`--${boundary}`);
  const parts = [];
  let at = indexOf(bytes, delim, 0);
  if (at < 0) throw new Error('multipart answer without its boundary');
  for (;;) {
    let p = at + delim.length;
    // The closing delimiter: `--boundary--`.
    if (bytes[p] === 0x2d && bytes[p + 1] === 0x2d) return parts;
    // Skip transport padding and the CRLF after the delimiter.
    while (p < bytes.length && bytes[p] !== 0x0a) p++;
    p++;
    const headEnd = indexOf(bytes, enc.encode('\r\n\r\n'), p);
    if (headEnd < 0) throw new Error('multipart part without a header end');
    const headers = {};
    for (const line of new TextDecoder().decode(bytes.subarray(p, headEnd)).split('\r\n')) {
      const i = line.indexOf(':');
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    const bodyStart = headEnd + 4;
    const next = indexOf(bytes, enc.encode(`\r\n--${boundary}`), bodyStart);
    if (next < 0) throw new Error('multipart answer cut short');
    parts.push({ headers, body: bytes.subarray(bodyStart, next) });
    at = next + 2;
  }
}

/** The pixels of one frame from a WADO-RS frames answer: its first part's bytes. */
export function frameFromAnswer(contentType, bytes) {
  const ct = (contentType || '').toLowerCase();
  if (ct.startsWith('multipart/')) {
    const b = boundaryOf(contentType);
    if (!b) throw new Error('multipart answer without a boundary');
    const parts = multipartParts(bytes, b);
    if (!parts.length) throw new Error('multipart answer without parts');
    return parts[0].body;
  }
  return bytes;
}

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const CRLF2 = new Uint8Array([13, 10, 13, 10]);
const NOTHING = new Uint8Array(0);

function headersOf(bytes) {
  const headers = {};
  for (const line of new TextDecoder().decode(bytes).split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return headers;
}

/**
 * A multipart answer of frames read as it streams in (RFC 2046 5.1.1), without holding it
 * whole: `push` each chunk as it arrives, `end` after the last. Part `i`'s body is copied once,
 * straight from the chunks, into a new buffer of `sizes[i]` bytes (the frame's size, known from
 * the metadata), then handed to `onPart(i, headers, bytes)`; bytes after it up to the next
 * delimiter (padding) are skipped, so the body is never searched for the boundary. Throws on
 * a part shorter than its size (its bytes then hold the next delimiter: caught by `end`, or by
 * the caller's check of the parts' Content-Location), more parts than sizes, or an answer
 * cut short.
 */
export class FrameParts {
  constructor(boundary, sizes, onPart) {
    const enc = new TextEncoder();
    this.first = enc.encode(`--${boundary}`);
    this.delim = enc.encode(`\r\n--${boundary}`);
    this.sizes = sizes;
    this.onPart = onPart;
    this.count = 0;
    this.state = 'delim';
    this.pend = NOTHING;
    this.body = null;
    this.filled = 0;
    this.headers = null;
  }

  push(chunk) {
    let src = chunk, at = 0;
    if (this.pend.length) { src = new Uint8Array(this.pend.length + chunk.length); src.set(this.pend); src.set(chunk, this.pend.length); this.pend = NOTHING; }
    while (at < src.length) {
      switch (this.state) {
        case 'body': {
          const k = Math.min(src.length - at, this.body.length - this.filled);
          this.body.set(src.subarray(at, at + k), this.filled);
          this.filled += k;
          at += k;
          if (this.filled === this.body.length) {
            const body = this.body;
            this.body = null;
            this.state = 'delim';
            this.onPart(this.count++, this.headers, body);
          }
          break;
        }
        case 'delim': {
          // The first delimiter may follow a preamble; the others follow a body's CRLF.
          const d = this.count === 0 ? this.first : this.delim;
          const i = indexOf(src, d, at);
          if (i < 0) { this.pend = src.slice(Math.max(at, src.length - d.length + 1)); return; }
          at = i + d.length;
          this.state = 'line';
          break;
        }
        case 'line': // after a delimiter: `--` closes the answer, else padding and CRLF
          if (src.length - at < 2) { this.pend = src.slice(at); return; }
          if (src[at] === 0x2d && src[at + 1] === 0x2d) { this.state = 'done'; return; }
          {
            const lf = src.indexOf(0x0a, at);
            if (lf < 0) { this.pend = src.slice(at); return; }
            at = lf + 1;
          }
          this.state = 'head';
          break;
        case 'head': {
          if (src.length - at < 2) { this.pend = src.slice(at); return; }
          if (src[at] === 13 && src[at + 1] === 10) {
            this.headers = {};
            at += 2;
          } else {
            const e = indexOf(src, CRLF2, at);
            if (e < 0) { this.pend = src.slice(at); return; }
            this.headers = headersOf(src.subarray(at, e));
            at = e + 4;
          }
          if (this.count >= this.sizes.length) throw new Error(`more parts than the ${this.sizes.length} frames asked for`);
          this.body = new Uint8Array(this.sizes[this.count]);
          this.filled = 0;
          this.state = 'body';
          break;
        }
        default: return; // 'done': the epilogue is ignored
      }
    }
  }

  end() {
    if (this.state !== 'done') throw new Error('multipart answer cut short');
    if (this.count !== this.sizes.length) throw new Error(`${this.count} frames in the answer, ${this.sizes.length} asked for`);
  }
}

/**
 * The stored values of a frame whose `frameBytes(pm)` bytes are in a buffer of their own (a
 * [FrameParts] body): the same typed arrays as [decodeFrame], without a copy on little endian
 * machines.
 */
export function framePixels(bytes, pm) {
  if (pm.bitsAllocated === 8) return bytes;
  if (littleEndian) return new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length >> 1);
  return decodeFrame(bytes, pm);
}

/**
 * Reads a `fetch` answer of several frames (the series frames request, docs/api-dicomweb.md)
 * as it streams: calls `onFrame(i, values)` for frame `i` of `want` (`[{ sop, frame, pm }]`,
 * in the order asked) as soon as its bytes are in. Each part's `Content-Location`, when
 * present, must name the frame asked for at its place.
 */
export async function readFrames(response, want, onFrame) {
  const boundary = boundaryOf(response.headers.get('content-type'));
  if (!boundary) throw new Error('the frames answer is not multipart');
  const parts = new FrameParts(boundary, want.map((w) => frameBytes(w.pm)), (i, headers, bytes) => {
    const w = want[i];
    const loc = headers['content-location'];
    if (loc && !loc.endsWith(`/instances/${w.sop}/frames/${w.frame}`)) throw new Error(`part ${i + 1} is ${loc}, not frame ${w.frame} of ${w.sop}`);
    onFrame(i, framePixels(bytes, w.pm));
  });
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
  }
  parts.end();
}


/**
 * The stored values of a native frame as a typed array of bit patterns (Uint8Array for 8 bits,
 * Uint16Array for 16), copied so the answer's buffer can go. Explicit VR Little Endian bytes
 * (PS3.18 8.7.3.5.2: the default for `application/octet-stream`).
 */
export function decodeFrame(body, pm) {
  const need = frameBytes(pm);
  if (body.length < need) throw new Error(`frame has ${body.length} bytes, ${need} expected`);
  if (pm.bitsAllocated === 8) return body.slice(0, need);
  const n = pm.rows * pm.columns;
  if (littleEndian) {
    // One copy (an aligned view is copied directly; an odd offset needs the bytes first).
    return body.byteOffset % 2 === 0
      ? new Uint16Array(body.buffer, body.byteOffset, n).slice()
      : new Uint16Array(body.slice(0, need).buffer);
  }
  const out = new Uint16Array(n);
  const dv = new DataView(body.buffer, body.byteOffset, need);
  for (let i = 0; i < n; i++) out[i] = dv.getUint16(2 * i, true);
  return out;
}

/** The stored value of a bit pattern: masked to Bits Stored and sign-extended when signed. */
export function storedValue(pattern, pm) {
  const bits = pm.bitsStored;
  const mask = bits >= 32 ? 0xffffffff : (2 ** bits) - 1;
  let v = pattern & mask;
  if (pm.pixelRepresentation === 1 && v >= 2 ** (bits - 1)) v -= 2 ** bits;
  return v;
}

/**
 * The linear VOI function of PS3.3 C.11.2.1.2.1 from a modality value `x` to 0..255 (rounded),
 * for window `center`/`width`.
 */
export function voi(x, center, width) {
  const c = center, w = Math.max(1, width);
  if (w === 1) return x <= c - 0.5 ? 0 : 255; // the formula's limit: a threshold
  if (x <= c - 0.5 - (w - 1) / 2) return 0;
  if (x > c - 0.5 + (w - 1) / 2) return 255;
  return Math.round(((x - (c - 0.5)) / (w - 1) + 0.5) * 255);
}

/**
 * A lookup table from every bit pattern (256 or 65536 entries) to its display value: Modality
 * LUT, VOI LUT, then inversion (MONOCHROME1 shows low values white; `invert` flips again).
 */
export function displayLut(pm, center, width, invert = false) {
  const size = pm.bitsAllocated === 8 ? 256 : 65536;
  const lut = new Uint8Array(size);
  const flip = (pm.photometric === 'MONOCHROME1') !== Boolean(invert);
  for (let p = 0; p < size; p++) {
    const y = voi(storedValue(p, pm) * pm.slope + pm.intercept, center, width);
    lut[p] = flip ? 255 - y : y;
  }
  return lut;
}

/** Writes a frame through `lut` into RGBA `out` (an ImageData's data). */
export function applyLut(frame, lut, out) {
  for (let i = 0, j = 0; i < frame.length; i++, j += 4) {
    const y = lut[frame[i]];
    out[j] = y; out[j + 1] = y; out[j + 2] = y; out[j + 3] = 255;
  }
}

/**
 * Writes a colour frame (8 bits per sample, as receivedColour says: RGB or YBR_FULL, by pixel
 * or by plane) into RGBA `out`, each of R, G and B through `lut` (a [displayLut] of the image:
 * the VOI function on each; PS3.3 defines VOI LUTs for grey scale only, so this is a viewer's
 * brightness/contrast on colour, exact with [COLOUR_IDENTITY]). YBR_FULL is first turned into
 * RGB by the inverse of PS3.3 C.7.6.3.1.2's equations (rounded, clamped to 0–255):
 * R = Y + 1.402 (Cr − 128), G = Y − 0.344136 (Cb − 128) − 0.714136 (Cr − 128),
 * B = Y + 1.772 (Cb − 128).
 */
export function applyLutColour(frame, lut, out, pm = null) {
  const c = pm ? receivedColour(pm) : { photometric: 'RGB', planar: 0 };
  const n = out.length / 4;
  // Sample s of pixel i: interleaved at 3i + s, by plane at s·n + i.
  const [d0, d1, d2, step] = c.planar === 1 ? [0, n, 2 * n, 1] : [0, 1, 2, 3];
  const ybr = c.photometric === 'YBR_FULL';
  const clamp = (x) => (x <= 0 ? 0 : x >= 255 ? 255 : Math.round(x));
  for (let i = 0, k = 0, j = 0; i < n; i++, k += step, j += 4) {
    let r = frame[k + d0], g = frame[k + d1], b = frame[k + d2];
    if (ybr) {
      const y = r, cb = g - 128, cr = b - 128;
      r = clamp(y + 1.402 * cr); g = clamp(y - 0.344136 * cb - 0.714136 * cr); b = clamp(y + 1.772 * cb);
    }
    out[j] = lut[r]; out[j + 1] = lut[g]; out[j + 2] = lut[b]; out[j + 3] = 255;
  }
}

/** A window covering a frame's modality values (for images without a VOI window). */
export function autoWindow(frame, pm) {
  if (isColour(pm)) return { ...COLOUR_IDENTITY };
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < frame.length; i += 7) {
    const v = storedValue(frame[i], pm) * pm.slope + pm.intercept;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (!Number.isFinite(lo)) return { center: 0, width: 1 };
  return { center: (lo + hi) / 2, width: Math.max(1, hi - lo) };
}

/**
 * Instances of one series as slices in display order: by Instance Number, then by position
 * along the slice normal; multi-frame instances give one slice per frame.
 */
export function slicesOf(metas) {
  const rows = metas.map((m) => {
    const o = values(m, T.imageOrientation).map(Number);
    const p = values(m, T.imagePosition).map(Number);
    let along = 0;
    if (o.length === 6 && p.length === 3) {
      const n = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
      along = n[0] * p[0] + n[1] * p[1] + n[2] * p[2];
    }
    return { meta: m, number: num(m, T.instanceNumber, 0, 0), along };
  });
  rows.sort((a, b) => (a.number - b.number) || (a.along - b.along));
  const out = [];
  for (const r of rows) {
    const frames = Math.max(1, num(r.meta, T.numberOfFrames, 0, 1));
    for (let f = 1; f <= frames; f++) {
      out.push({ sop: str(r.meta, T.sopInstanceUid), frame: f, meta: r.meta });
    }
  }
  return out;
}

/**
 * The patient direction a unit vector points to, as PS3.3 C.7.6.2.1.1 letters (L, R, A, P, H,
 * F; the patient coordinate system's +x is left, +y posterior, +z head), strongest first, for
 * components over 0.25 of the vector: (1, 0, 0) → `L`, (0.7, 0.7, 0) → `LP`.
 */
export function orientationLabel(v) {
  const parts = [[v[0], 'L', 'R'], [v[1], 'P', 'A'], [v[2], 'H', 'F']]
    .filter(([c]) => Math.abs(c) > 0.25)
    .sort((a, b) => Math.abs(b[0]) - Math.abs(a[0]));
  return parts.map(([c, pos, neg]) => (c > 0 ? pos : neg)).join('');
}

/** The label of the opposite direction: `LP` → `RA`. */
export function oppositeLabel(label) {
  const opposite = { L: 'R', R: 'L', A: 'P', P: 'A', H: 'F', F: 'H' };
  return [...label].map((c) => opposite[c] || c).join('');
}

/** Indices of `n` slices ordered by distance from `from` (nearest first, the next one first). */
export function nearestFirst(from, n) {
  const out = [];
  for (let d = 0; out.length < n && d < n; d++) {
    if (from + d < n) out.push(from + d);
    if (d > 0 && from - d >= 0) out.push(from - d);
  }
  return out;
}
