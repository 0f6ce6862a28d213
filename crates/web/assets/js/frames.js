// A module worker (viewer.js) that fetches WADO-RS frames (PS3.18 10.4.1.1.5) and turns each
// answer into the typed arrays of its stored values, off the page's main thread: 300 CT slices
// are 150 MB of answers whose bytes would otherwise go through that thread while the user
// scrolls. Each decoded frame is transferred back (no copy).
//
// Messages in: `{ id, url, accept, pm }` (one frame; pm: the pixel module fields `decodeFrame`
// needs), `{ id, url, accept, want: [{ sop, frame, pm }] }` (several frames of a series in one
// multipart answer, read as it streams: pixels.js `readFrames`) and `{ cancel: id }`. Out:
// `{ id, data, part }` for each frame (`part`: its place in `want`), then `{ id, done: true }`;
// or `{ id, done: true, status, error, message }` for an error answer (`status` 0: no answer,
// or cancelled).

import { errorOf } from './api.js';
import { decodeFrame, frameFromAnswer, readFrames } from './pixels.js';

const running = new Map();

self.onmessage = async (e) => {
  const m = e.data;
  if (m.cancel !== undefined) {
    running.get(m.cancel)?.abort();
    return;
  }
  const ctrl = new AbortController();
  running.set(m.id, ctrl);
  try {
    const r = await fetch(m.url, { headers: { Accept: m.accept }, credentials: 'same-origin', signal: ctrl.signal });
    if (!r.ok) {
      const e = await errorOf(r);
      self.postMessage({ id: m.id, done: true, status: r.status, error: e.code, message: e.message });
      return;
    }
    if (m.want) {
      await readFrames(r, m.want, (part, data) => self.postMessage({ id: m.id, part, data }, [data.buffer]));
      self.postMessage({ id: m.id, done: true });
      return;
    }
    const bytes = new Uint8Array(await r.arrayBuffer());
    const data = decodeFrame(frameFromAnswer(r.headers.get('content-type'), bytes), m.pm);
    self.postMessage({ id: m.id, done: true, data }, [data.buffer]);
  } catch (err) {
    self.postMessage({ id: m.id, done: true, status: 0, error: ctrl.signal.aborted ? 'cancelled' : 'network', message: String(err && err.message || err) });
  } finally {
    running.delete(m.id);
  }
};
