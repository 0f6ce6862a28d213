// Unit tests of the app's pure display code (crates/web/assets/js/pixels.js), in node: the
// multipart parser, native frame decoding, stored values (Bits Stored, signed data), the VOI
// function's ends, the display LUT, slice order, orientation labels.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as px from '../../crates/web/assets/js/pixels.js';

const enc = new TextEncoder();

function multipart(boundary, bodies) {
  const chunks = [];
  for (const b of bodies) {
    chunks.push(enc.encode(`--${boundary}\r\nContent-Type: application/octet-stream\r\n\r\n`), b, enc.encode('\r\n'));
  }
  chunks.push(enc.encode(`--${boundary}--\r\n`));
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

test('multipart answers: boundary, parts, bodies that contain CRLF and dashes', () => {
  assert.equal(px.boundaryOf('multipart/related; type="application/octet-stream"; boundary=abc'), 'abc');
  assert.equal(px.boundaryOf('multipart/related; boundary="a b:c"; type=x'), 'a b:c');
  assert.equal(px.boundaryOf('application/octet-stream'), null);
  const tricky = new Uint8Array([0x0d, 0x0a, 0x2d, 0x2d, 0x61, 0, 255, 0x0d, 0x0a]);
  const body = multipart('abc', [tricky, new Uint8Array([1, 2, 3])]);
  const parts = px.multipartParts(body, 'abc');
  assert.equal(parts.length, 2);
  assert.deepEqual([...parts[0].body], [...tricky]);
  assert.deepEqual([...parts[1].body], [1, 2, 3]);
  assert.equal(parts[0].headers['content-type'], 'application/octet-stream');
  const first = px.frameFromAnswer('multipart/related; boundary=abc', body);
  assert.deepEqual([...first], [...tricky]);
  // Cut short: an error, not a frame.
  assert.throws(() => px.multipartParts(body.subarray(0, body.length - 12), 'abc'));
  // A single-part answer is its own body.
  assert.deepEqual([...px.frameFromAnswer('application/octet-stream', new Uint8Array([9]))], [9]);
});

/** A series frames answer as the server writes it: each part with its Content-Location. */
function framesAnswer(boundary, frames, { pad = 0, preamble = '' } = {}) {
  const chunks = [enc.encode(preamble)];
  frames.forEach(({ sop, n, body }, i) => {
    chunks.push(enc.encode(`${i ? '\r\n' : ''}--${boundary}\r\nContent-Type: application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1\r\nContent-Location: http://h/dicom-web/studies/1/series/2/instances/${sop}/frames/${n}\r\n\r\n`), body, new Uint8Array(pad));
  });
  chunks.push(enc.encode(`\r\n--${boundary}--\r\n`));
  const out = new Uint8Array(chunks.reduce((k, c) => k + c.length, 0));
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

/** A fetch Response whose body arrives in pieces of `size` bytes. */
function streamed(bytes, contentType, size) {
  let at = 0;
  const body = new ReadableStream({
    pull(c) {
      if (at >= bytes.length) { c.close(); return; }
      c.enqueue(bytes.slice(at, at + size));
      at += size;
    },
  });
  return new Response(body, { headers: { 'content-type': contentType } });
}

test('frames of several instances, read as they stream: exact values whatever the chunking', async () => {
  const pm16 = { rows: 3, columns: 2, samplesPerPixel: 1, bitsAllocated: 16 };
  const pm8 = { rows: 1, columns: 3, samplesPerPixel: 1, bitsAllocated: 8 };
  // Bodies full of CR, LF and dashes: the boundary is never searched for inside a body.
  const a = new Uint16Array([0x0a0d, 0x2d2d, 0xffff, 0, 0x2d0a, 1234]);
  const b = new Uint16Array([1, 2, 3, 0x8000, 0x7fff, 0x0d0a]);
  const c = new Uint8Array([0x2d, 0x0d, 0x0a]);
  const want = [{ sop: '1.2.3', frame: 1, pm: pm16 }, { sop: '1.2.4', frame: 2, pm: pm16 }, { sop: '1.2.5', frame: 1, pm: pm8 }];
  const frames = [{ sop: '1.2.3', n: 1, body: new Uint8Array(a.buffer) }, { sop: '1.2.4', n: 2, body: new Uint8Array(b.buffer) }, { sop: '1.2.5', n: 1, body: c }];
  const ct = 'multipart/related; type="application/octet-stream"; boundary=vesalius-x';
  for (const [opts, label] of [[{}, 'plain'], [{ pad: 1, preamble: 'preamble\r\n' }, 'padded, with a preamble']]) {
    const bytes = framesAnswer('vesalius-x', frames, opts);
    for (const size of [1, 2, 3, 7, 64, bytes.length]) {
      const got = [];
      await px.readFrames(streamed(bytes, ct, size), want, (i, values) => got.push([i, values]));
      assert.deepEqual(got.map(([i]) => i), [0, 1, 2], `${label}, chunks of ${size}`);
      assert.ok(got[0][1] instanceof Uint16Array && got[2][1] instanceof Uint8Array);
      assert.deepEqual([...got[0][1]], [...a], `${label}, chunks of ${size}`);
      assert.deepEqual([...got[1][1]], [...b], `${label}, chunks of ${size}`);
      assert.deepEqual([...got[2][1]], [...c], `${label}, chunks of ${size}`);
    }
  }
  const bytes = framesAnswer('vesalius-x', frames);
  // Cut short, a part other than the one asked for, or fewer parts than asked: errors.
  await assert.rejects(px.readFrames(streamed(bytes.subarray(0, bytes.length - 20), ct, 5), want, () => {}), /cut short/);
  await assert.rejects(px.readFrames(streamed(bytes, ct, 5), [want[1], want[0], want[2]], () => {}), /not frame 2 of 1\.2\.4/);
  await assert.rejects(px.readFrames(streamed(bytes, ct, 5), want.slice(0, 2), () => {}), /more parts/);
  const short = framesAnswer('vesalius-x', [frames[0], { ...frames[1], body: new Uint8Array(b.buffer).subarray(0, 10) }, frames[2]]);
  await assert.rejects(px.readFrames(streamed(short, ct, 5), want, () => {}));
  await assert.rejects(px.readFrames(streamed(bytes, 'application/octet-stream', 5), want, () => {}), /not multipart/);
});

test('colour: RGB interleaved 8-bit windowed per sample, exact with the identity window; others not', () => {
  const rgb = { rows: 1, columns: 2, samplesPerPixel: 3, photometric: 'RGB', bitsAllocated: 8, bitsStored: 8, pixelRepresentation: 0, slope: 1, intercept: 0, planar: 0, windows: [] };
  assert.ok(px.isColour(rgb) && px.windowable(rgb));
  // Without knowing how it is stored (a peer's metadata), only RGB by pixel is trusted.
  assert.ok(!px.windowable({ ...rgb, planar: 1 }), 'colour-by-plane of unknown storage: the server renders it');
  assert.ok(!px.windowable({ ...rgb, photometric: 'YBR_FULL_422' }));
  assert.ok(!px.windowable({ ...rgb, bitsAllocated: 16, bitsStored: 16 }));
  assert.equal(px.frameBytes(rgb), 6);
  const frame = new Uint8Array([0, 127, 255, 1, 128, 254]);
  const out = new Uint8Array(8);
  const { center, width } = px.COLOUR_IDENTITY;
  assert.deepEqual(px.autoWindow(frame, rgb), { center, width });
  px.applyLutColour(frame, px.displayLut(rgb, center, width), out);
  assert.deepEqual([...out], [0, 127, 255, 255, 1, 128, 254, 255]);
  px.applyLutColour(frame, px.displayLut(rgb, center, width, true), out);
  assert.deepEqual([...out], [255, 128, 0, 255, 254, 127, 1, 255]);
  px.applyLutColour(frame, px.displayLut(rgb, 128, 2), out);
  assert.deepEqual([...out], [0, 0, 255, 255, 0, 255, 255, 255]);
  const meta = { '00280002': { vr: 'US', Value: [3] }, '00280004': { vr: 'CS', Value: ['RGB'] }, '00280006': { vr: 'US', Value: [1] }, '00280010': { vr: 'US', Value: [2] }, '00280011': { vr: 'US', Value: [2] }, '00280100': { vr: 'US', Value: [8] }, '00280101': { vr: 'US', Value: [8] } };
  assert.equal(px.pixelModule(meta).planar, 1);
  assert.ok(!px.windowable(px.pixelModule(meta)));
  meta['00083002'] = { vr: 'UI', Value: ['1.2.840.10008.1.2.1'] };
  assert.ok(px.windowable(px.pixelModule(meta)), 'native RGB by plane: raw frames');
});

test('colour: the form frames arrive in (PS3.3 C.7.6.3.1.2) and YBR_FULL turned into RGB', () => {
  const pm = (photometric, transferSyntax, planar = 0) => ({ rows: 1, columns: 2, samplesPerPixel: 3, photometric, bitsAllocated: 8, bitsStored: 8, pixelRepresentation: 0, slope: 1, intercept: 0, planar, transferSyntax });
  const got = (...a) => px.receivedColour(pm(...a));
  assert.deepEqual(got('YBR_FULL', '1.2.840.10008.1.2.1', 1), { photometric: 'YBR_FULL', planar: 1 });
  assert.deepEqual(got('YBR_FULL_422', '1.2.840.10008.1.2.1'), { photometric: 'YBR_FULL', planar: 0 }, 'native 4:2:2: the server expands it');
  assert.deepEqual(got('YBR_FULL_422', '1.2.840.10008.1.2.4.50'), { photometric: 'RGB', planar: 0 }, 'JPEG baseline: decoded to RGB');
  assert.deepEqual(got('YBR_ICT', '1.2.840.10008.1.2.4.91'), { photometric: 'RGB', planar: 0 });
  assert.deepEqual(got('YBR_FULL', '1.2.840.10008.1.2.5', 1), { photometric: 'YBR_FULL', planar: 0 }, 'RLE: decoded, interleaved, YBR kept');
  assert.equal(got('RGB', '', 1), null);
  assert.ok(!px.isColour(pm('YBR_PARTIAL_420', '1.2.840.10008.1.2.4.100')));
  assert.ok(px.isColour(pm('YBR_FULL_422', '1.2.840.10008.1.2.4.50')));
  // Grey, a saturated red and blue as YBR_FULL (Y, Cb, Cr by the standard's forward equations),
  // by pixel and by plane; the identity window draws the RGB back (±1 for rounding).
  const ybr = (r, g, b) => [0.299 * r + 0.587 * g + 0.114 * b, -0.1687 * r - 0.3313 * g + 0.5 * b + 128, 0.5 * r - 0.4187 * g - 0.0813 * b + 128].map((x) => Math.min(255, Math.round(x)));
  const want = [[128, 128, 128], [255, 0, 0], [0, 0, 255], [30, 200, 90]];
  const byPixel = new Uint8Array(want.flatMap((c) => ybr(...c)));
  const byPlane = new Uint8Array([0, 1, 2].flatMap((k) => want.map((c) => ybr(...c)[k])));
  const lut = px.displayLut(pm('RGB', ''), 128, 256);
  for (const [frame, planar] of [[byPixel, 0], [byPlane, 1]]) {
    const out = new Uint8Array(16);
    px.applyLutColour(frame, lut, out, pm('YBR_FULL', '1.2.840.10008.1.2.1', planar));
    want.forEach((c, i) => c.forEach((v, k) => assert.ok(Math.abs(out[4 * i + k] - v) <= 1, `planar ${planar} pixel ${i}: ${[...out.subarray(4 * i, 4 * i + 3)]} for ${c}`)));
    assert.deepEqual([3, 7, 11, 15].map((i) => out[i]), [255, 255, 255, 255]);
  }
});

test('native frames decode little endian; a short frame is an error', () => {
  const pm = { rows: 1, columns: 2, samplesPerPixel: 1, bitsAllocated: 16 };
  const f = px.decodeFrame(new Uint8Array([0x34, 0x12, 0xff, 0xff]), pm);
  assert.deepEqual([...f], [0x1234, 0xffff]);
  assert.throws(() => px.decodeFrame(new Uint8Array([1, 2, 3]), pm), /3 bytes, 4 expected/);
  // An odd offset into the answer's buffer is fine (copied).
  const buf = new Uint8Array([0, 0x34, 0x12, 1, 0]);
  assert.deepEqual([...px.decodeFrame(buf.subarray(1), pm)], [0x1234, 1]);
});

test('stored values: masked to Bits Stored, sign-extended when signed', () => {
  const u12 = { bitsStored: 12, pixelRepresentation: 0 };
  const s12 = { bitsStored: 12, pixelRepresentation: 1 };
  const s16 = { bitsStored: 16, pixelRepresentation: 1 };
  assert.equal(px.storedValue(0xf123, u12), 0x123); // overlay bits above Bits Stored ignored
  assert.equal(px.storedValue(0x0fff, s12), -1);
  assert.equal(px.storedValue(0x0800, s12), -2048);
  assert.equal(px.storedValue(0x07ff, s12), 2047);
  assert.equal(px.storedValue(0xfc18, s16), -1000);
});

test('the linear VOI function (PS3.3 C.11.2.1.2.1) and its ends', () => {
  // c = 40, w = 80: black at or below -0.5 + ... = 0 ... white above 79.
  assert.equal(px.voi(-1000, 40, 80), 0);
  assert.equal(px.voi(0, 40, 80), 0);
  assert.equal(px.voi(79, 40, 80), 255);
  assert.equal(px.voi(80, 40, 80), 255);
  assert.equal(px.voi(40, 40, 80), Math.round((0.5 / 79 + 0.5) * 255));
  // Width 1 is a threshold at c - 0.5.
  assert.equal(px.voi(39, 40, 1), 0);
  assert.equal(px.voi(40, 40, 1), 255);
});

test('the display LUT: rescale, window, MONOCHROME1, invert', () => {
  const pm = { bitsAllocated: 16, bitsStored: 16, pixelRepresentation: 1, slope: 1, intercept: -1024, photometric: 'MONOCHROME2' };
  const lut = px.displayLut(pm, 40, 80);
  assert.equal(lut.length, 65536);
  assert.equal(lut[1024 + 79], 255);
  assert.equal(lut[1024], 0);
  assert.equal(lut[1024 + 40], px.voi(40, 40, 80));
  assert.equal(lut[0xffff], 0); // -1 stored → -1025 HU
  const inv = px.displayLut(pm, 40, 80, true);
  assert.equal(inv[1024 + 40], 255 - lut[1024 + 40]);
  const m1 = px.displayLut({ ...pm, photometric: 'MONOCHROME1' }, 40, 80);
  assert.equal(m1[1024 + 79], 0);
  assert.deepEqual(px.displayLut({ ...pm, photometric: 'MONOCHROME1' }, 40, 80, true), lut);
  const out = new Uint8ClampedArray(8);
  px.applyLut(new Uint16Array([1024 + 79, 1024]), lut, out);
  assert.deepEqual([...out], [255, 255, 255, 255, 0, 0, 0, 255]);
});

test('pixel module and windowability from DICOM JSON', () => {
  const meta = {
    '00280010': { vr: 'US', Value: [512] }, '00280011': { vr: 'US', Value: [256] },
    '00280100': { vr: 'US', Value: [16] }, '00280101': { vr: 'US', Value: [12] },
    '00280103': { vr: 'US', Value: [0] }, '00280004': { vr: 'CS', Value: ['MONOCHROME2'] },
    '00281050': { vr: 'DS', Value: [40, 300] }, '00281051': { vr: 'DS', Value: [80, 1500] },
    '00281053': { vr: 'DS', Value: [2] }, '00281052': { vr: 'DS', Value: [-100] },
  };
  const pm = px.pixelModule(meta);
  assert.equal(pm.rows, 512);
  assert.equal(pm.columns, 256);
  assert.equal(pm.slope, 2);
  assert.equal(pm.intercept, -100);
  assert.deepEqual(pm.windows.map((w) => [w.center, w.width]), [[40, 80], [300, 1500]]);
  assert.ok(px.windowable(pm));
  assert.ok(!px.windowable({ ...pm, samplesPerPixel: 3, photometric: 'RGB' }));
  assert.equal(px.frameBytes(pm), 512 * 256 * 2);
  // Without Rescale Slope/Intercept: identity.
  const bare = px.pixelModule({ '00280010': { Value: [1] }, '00280011': { Value: [1] } });
  assert.equal(bare.slope, 1);
  assert.equal(bare.intercept, 0);
});

test('slices: by Instance Number, then along the normal; frames of multi-frame instances', () => {
  const inst = (sop, n, z, frames) => ({
    '00080018': { Value: [sop] }, '00200013': { Value: [n] },
    '00200037': { Value: [1, 0, 0, 0, 1, 0] }, '00200032': { Value: [0, 0, z] },
    ...(frames ? { '00280008': { Value: [frames] } } : {}),
  });
  const s = px.slicesOf([inst('c', 3, 0), inst('a', 1, 5), inst('b', 1, 2), inst('m', 4, 0, 2)]);
  assert.deepEqual(s.map((x) => `${x.sop}#${x.frame}`), ['b#1', 'a#1', 'c#1', 'm#1', 'm#2']);
  assert.deepEqual(px.nearestFirst(2, 5), [2, 3, 1, 4, 0]);
  assert.deepEqual(px.nearestFirst(0, 3), [0, 1, 2]);
});

test('orientation labels (PS3.3 C.7.6.2.1.1)', () => {
  assert.equal(px.orientationLabel([1, 0, 0]), 'L');
  assert.equal(px.orientationLabel([-1, 0, 0]), 'R');
  assert.equal(px.orientationLabel([0, 1, 0]), 'P');
  assert.equal(px.orientationLabel([0, 0, -1]), 'F');
  assert.equal(px.orientationLabel([0.8, -0.6, 0]), 'LA');
  assert.equal(px.oppositeLabel('LA'), 'RP');
});

test('names and dates for people', () => {
  assert.equal(px.personName('DOE^JANE^M^DR'), 'DOE, DR JANE M');
  assert.equal(px.personName('DOE'), 'DOE');
  assert.equal(px.isoDate('20261207'), '2026-12-07');
  assert.equal(px.shortTime('093015.123'), '09:30');
  assert.equal(px.str({ '00100010': { Value: [{ Alphabetic: 'A^B' }] } }, '00100010'), 'A^B');
});
