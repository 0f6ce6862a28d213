// The guest upload page (`/upload/{id}/{secret}`, issue 6): someone outside with a CD and no
// account drops files, folders, zip archives or a CD's DICOMDIR folder; the page reads a CD's
// DICOMDIR records (dicomdir.js) and every other file's DICOM header here (dicomscan.js), lists
// the patients, studies and series it found (what the DICOMDIR names but is missing, and what it
// skips) BEFORE anything is sent, then sends each file in chunks through the link's
// resumable upload API (crates/api/src/uploads.rs): a dropped connection is retried and resumed
// from the offset the server reports. Each file ends with the server's result.

import { clear, h } from './dom.js';
import { scanFile, summarize } from './dicomscan.js';
import { readZip } from './unzip.js';
import { Sha256 } from './sha256.js';
import { MAX_DICOMDIR_BYTES, dicomdirFiles, isDicomdirPath, normalPath } from './dicomdir.js';

/** Bytes read from each file for its header (the header stops before Pixel Data). */
const HEAD_BYTES = 1 << 20;
/** Files sent at the same time. */
const PARALLEL = 2;
/** Tries per chunk before a file is given up (the wait grows to 15 s between tries). */
const MAX_TRIES = 40;
/**
 * Every file is hashed (SHA-256) so the server checks it arrived intact. Files up to this size
 * are hashed by `crypto.subtle.digest` (native, fast, but it takes all the bytes at once);
 * larger ones are read a piece at a time through the streamed SHA-256 (sha256.js), so memory
 * holds one piece whatever the file's size. `?subtle=BYTES` lowers the limit (tests).
 */
const SUBTLE_HASH_BYTES = 256 << 20;
/** The pieces a large file is read in for its hash. */
const HASH_PIECE_BYTES = 4 << 20;

const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('');

function addStylesheet() {
  if (document.getElementById('guest-css')) return;
  document.head.append(h('link', { id: 'guest-css', rel: 'stylesheet', href: new URL('../guest.css', import.meta.url).href }));
}

/** The dropped items as files with their paths (folders walked: webkitGetAsEntry). */
async function fromDataTransfer(dt) {
  const entries = [...dt.items].map((it) => (it.webkitGetAsEntry ? it.webkitGetAsEntry() : null));
  if (entries.every((e) => !e)) return [...dt.files].map((f) => ({ path: f.name, file: f }));
  const out = [];
  async function walk(entry, prefix) {
    if (!entry) return;
    if (entry.isFile) {
      const file = await new Promise((ok, fail) => entry.file(ok, fail));
      out.push({ path: prefix + entry.name, file });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
        if (!batch.length) break;
        for (const e of batch) await walk(e, `${prefix}${entry.name}/`);
      }
    }
  }
  for (const e of entries) await walk(e, '');
  return out;
}

/**
 * A source of bytes: a File, or an entry of a zip. `key`: the same file chosen again; `head(n)`:
 * its first bytes; `hash()`: its SHA-256 (hex) or undefined; `slicer()`: `{read(start, end),
 * close()}`, its bytes range by range (a zip entry is inflated front to back as it is sent).
 */
function fileSource(path, file) {
  return {
    path, size: file.size, key: `${path}|${file.size}|${file.lastModified}`,
    head: async (n) => new Uint8Array(await file.slice(0, n).arrayBuffer()),
    // `hashedBy`: how it was hashed ('subtle' or 'stream'), shown on its line for tests.
    async hash() { const { sha256, by } = await hashFile(file); this.hashedBy = by; return sha256; },
    slicer: () => ({ read: async (start, end) => file.slice(start, end), close() {} }),
  };
}

/** The largest file `crypto.subtle` hashes in one piece (`?subtle=BYTES` lowers it). */
function subtleLimit() {
  const q = new URLSearchParams(location.search);
  const asked = Number(q.get('subtle'));
  return q.has('subtle') && Number.isFinite(asked) && asked >= 0 ? Math.min(asked, SUBTLE_HASH_BYTES) : SUBTLE_HASH_BYTES;
}

/**
 * A file's SHA-256: `{sha256 (hex), by}`, by crypto.subtle when small enough ('subtle'), else
 * streamed piece by piece ('stream').
 */
async function hashFile(file) {
  if (file.size <= subtleLimit() && crypto.subtle) {
    return { sha256: hex(await crypto.subtle.digest('SHA-256', await file.arrayBuffer())), by: 'subtle' };
  }
  const sha = new Sha256();
  for (let at = 0; at < file.size; at += HASH_PIECE_BYTES) {
    sha.update(new Uint8Array(await file.slice(at, Math.min(file.size, at + HASH_PIECE_BYTES)).arrayBuffer()));
  }
  return { sha256: sha.hex(), by: 'stream' };
}

/** A zip entry as a source (readZip's entry: streamed, hashed as a stream). */
function zipSource(path, file, e) {
  return {
    path: `${path}/${e.name}`, size: e.size, key: `${path}|${file.size}|${file.lastModified}|${e.name}|${e.size}`,
    head: e.head, hash: e.hash, slicer: e.slicer, hashedBy: 'stream',
  };
}

/**
 * What this browser remembers of a file sent through this link (localStorage, so a page
 * closed or reloaded half-way resumes the file's upload, and a file already sent shows its
 * result instead of being sent again): `{url, result?}`.
 */
const memory = {
  get(base, it) {
    try { return JSON.parse(localStorage.getItem(`vesalius-upload ${base} ${it.src.key}`) || 'null'); } catch { return null; }
  },
  set(base, it, value) {
    try { localStorage.setItem(`vesalius-upload ${base} ${it.src.key}`, JSON.stringify(value)); } catch { /* private mode: no memory */ }
  },
  forget(base, it) {
    try { localStorage.removeItem(`vesalius-upload ${base} ${it.src.key}`); } catch { /* as above */ }
  },
};

export async function uploadPage(app) {
  addStylesheet();
  document.body.classList.add('guest');
  const brand = document.querySelector('.brand');
  if (brand) brand.removeAttribute('href');
  const base = location.pathname.replace(/\/+$/, '');
  clear(app).append(h('p', { class: 'loading' }, 'Loading…'));
  let info;
  try {
    const r = await fetch(`${base}/info`, { headers: { Accept: 'application/json' } });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.message || r.statusText);
    info = body;
  } catch (e) {
    clear(app).append(h('section', { class: 'upload' }, h('h1', {}, 'Send images'),
      h('p', { class: 'error', role: 'alert' }, `This upload link cannot be used: ${e.message}`)));
    return;
  }

  if (info.resumable === false) {
    clear(app).append(h('section', { class: 'upload' }, h('h1', {}, 'Send images'),
      h('p', {}, 'This server takes files through ', h('a', { href: `${base}?basic` }, 'the simple form'), ' only.')));
    return;
  }
  const state = { items: [], skipped: [], cds: [], scanning: false, sending: false, resumes: 0, resumedMidChunk: 0, remembered: 0, resumedAfterReload: 0 };
  const allowance = h('span', { id: 'allowance' });
  const showAllowance = () => { allowance.textContent = `${mb(info.remaining_bytes)} more`; };
  showAllowance();
  const expiry = new Date(info.expires_ms);
  const fileInput = h('input', { type: 'file', multiple: true, id: 'pick-files', class: 'visually-hidden' });
  const dirInput = h('input', { type: 'file', multiple: true, webkitdirectory: true, id: 'pick-folder', class: 'visually-hidden' });
  const drop = h('div', { class: 'dropzone', id: 'dropzone', tabindex: '0', role: 'button', 'aria-label': 'Drop files, folders or zip archives here' },
    h('p', { class: 'big' }, 'Drop the CD\'s folder, files or a zip here'),
    h('p', {}, h('label', { for: 'pick-folder', class: 'button' }, 'Choose a folder'), ' ',
      h('label', { for: 'pick-files', class: 'button' }, 'Choose files or a zip')),
    fileInput, dirInput);
  const status = h('p', { class: 'status', id: 'scan-status', role: 'status' });
  const found = h('div', { id: 'found' });
  const sendButton = h('button', { type: 'button', id: 'send', class: 'primary', hidden: true, onclick: () => send() }, 'Send');
  const clearButton = h('button', { type: 'button', id: 'clear', hidden: true, onclick: () => reset() }, 'Start again');
  const bar = h('progress', { id: 'progress', max: '1', value: '0', hidden: true });
  const barText = h('p', { class: 'status', id: 'progress-text', role: 'status', 'aria-live': 'polite' });
  const results = h('div', { id: 'results' });
  clear(app).append(h('section', { class: 'upload' },
    h('h1', {}, 'Send images'),
    h('p', { class: 'link-label', id: 'link-label' }, info.label || ''),
    h('p', {}, 'The images go to a reception area of ', h('b', {}, info.org),
      ', where staff check them before they join the patient\'s record. This link accepts ', allowance,
      ` until ${expiry.toLocaleString()}.`),
    drop, status, found, h('p', { class: 'actions' }, sendButton, clearButton), bar, barText, results,
    h('p', { class: 'muted small' }, 'Without JavaScript: ', h('a', { href: `${base}?basic` }, 'the simple form'), '.')));

  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', async (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    if (state.sending) return;
    add(await fromDataTransfer(e.dataTransfer));
  });
  drop.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); dirInput.click(); } });
  for (const input of [fileInput, dirInput]) {
    input.addEventListener('change', () => {
      add([...input.files].map((f) => ({ path: f.webkitRelativePath || f.name, file: f })));
      input.value = '';
    });
  }

  function reset() {
    state.items = []; state.skipped = []; state.cds = [];
    clear(found); clear(results); status.textContent = ''; barText.textContent = '';
    bar.hidden = true; sendButton.hidden = true; clearButton.hidden = true;
  }

  /** Scans new files (zips unpacked) and redraws the list. */
  async function add(list) {
    if (state.scanning) return;
    state.scanning = true;
    sendButton.disabled = true;
    const known = new Set(state.items.map((i) => i.src.path));
    const sources = [];
    for (const { path, file } of list) {
      if (/\.zip$/i.test(path)) {
        try {
          // Limits as the server's: an entry at most its instance limit, all of them at most
          // what the link still accepts.
          for (const e of await readZip(file, { maxEntryBytes: info.max_file_bytes, maxTotalBytes: Math.max(0, info.remaining_bytes) })) {
            const src = zipSource(path, file, e);
            if (e.problem) state.skipped.push({ path: src.path, reason: e.problem });
            else sources.push(src);
          }
        } catch (err) {
          state.skipped.push({ path, reason: `zip not read: ${err.message}` });
        }
      } else {
        sources.push(fileSource(path, file));
      }
    }
    const claimed = await readDicomdirs(sources, known);
    let n = 0;
    for (const src of sources) {
      if (claimed.has(src)) continue;
      n += 1;
      if (n % 20 === 0 || n === sources.length) status.textContent = `Reading ${n} of ${sources.length} files…`;
      if (known.has(src.path)) continue;
      known.add(src.path);
      let scan;
      try {
        // A deflated data set (PS3.5 A.5) is inflated here, up to what its header needs.
        scan = await scanFile(await src.head(HEAD_BYTES));
      } catch (err) {
        scan = { dicom: false, reason: err.message };
      }
      if (!scan.dicom) state.skipped.push({ path: src.path, reason: scan.reason });
      else if (scan.dicomdir) state.skipped.push({ path: src.path, reason: 'a DICOMDIR under another name than DICOMDIR: not read as the CD\'s index (the files are read one by one)' });
      else if (src.size > info.max_file_bytes) state.skipped.push({ path: src.path, reason: `larger than ${mb(info.max_file_bytes)}` });
      else state.items.push({ src, scan, size: src.size, sent: 0, result: null, row: null });
    }
    state.scanning = false;
    draw();
  }

  /**
   * The CDs among `sources`: each DICOMDIR's records are read (PS3.3 F.5), the files they name
   * are listed from the records (their headers are not read) and sent; what they name but was not
   * dropped is reported missing; other files in the DICOMDIR's folder are reported as extras and
   * not sent. Returns the sources dealt with here (the others are scanned one by one).
   */
  async function readDicomdirs(sources, known) {
    const claimed = new Set();
    const byPath = new Map(sources.map((s) => [normalPath(s.path), s]));
    const cds = [];
    for (const src of sources.filter((s) => isDicomdirPath(s.path))) {
      if (known.has(src.path)) { claimed.add(src); continue; }
      known.add(src.path);
      claimed.add(src);
      let index;
      try {
        if (src.size > MAX_DICOMDIR_BYTES) throw new Error(`larger than ${mb(MAX_DICOMDIR_BYTES)}`);
        index = dicomdirFiles(await src.head(src.size));
      } catch (err) {
        state.skipped.push({ path: src.path, reason: `DICOMDIR not read (${err.message}): the files are read one by one` });
        continue;
      }
      const dir = src.path.includes('/') ? src.path.slice(0, src.path.lastIndexOf('/')) : '';
      const cd = { path: src.path, dir, records: index.records, named: index.files.length, found: 0, missing: [], extras: [] };
      for (const f of index.files) {
        const path = (dir ? `${dir}/` : '') + f.fileId.join('/');
        const hit = byPath.get(normalPath(path));
        if (!hit) { cd.missing.push(path); continue; }
        if (claimed.has(hit)) continue; // named twice
        claimed.add(hit);
        cd.found += 1;
        if (known.has(hit.path)) continue;
        known.add(hit.path);
        if (hit.size > info.max_file_bytes) { state.skipped.push({ path: hit.path, reason: `larger than ${mb(info.max_file_bytes)}` }); continue; }
        const { fileId, type, ...attrs } = f;
        state.items.push({ src: hit, scan: { dicom: true, dicomdir: false, fromDicomdir: true, ...attrs }, size: hit.size, sent: 0, result: null, row: null });
      }
      cds.push(cd);
    }
    // Files in a CD's folder that its DICOMDIR does not name: extras, not sent.
    for (const cd of cds) {
      const under = cd.dir ? `${normalPath(cd.dir)}/` : '';
      for (const s of sources) {
        if (claimed.has(s) || !normalPath(s.path).startsWith(under)) continue;
        claimed.add(s);
        cd.extras.push(s.path);
      }
      state.cds.push(cd);
    }
    return claimed;
  }

  function draw() {
    clear(found);
    const total = state.items.reduce((s, i) => s + i.size, 0);
    const tree = summarize(state.items);
    const studies = tree.reduce((s, p) => s + p.studies.length, 0);
    const series = tree.reduce((s, p) => s + p.studies.reduce((t, st) => t + st.series.length, 0), 0);
    status.textContent = `Found ${state.items.length} DICOM file(s) (${mb(total)}): ${tree.length} patient(s), ${studies} study(ies), ${series} series` +
      (state.skipped.length ? `; ${state.skipped.length} file(s) skipped.` : '.');
    status.dataset.files = String(state.items.length);
    for (const p of tree) {
      const pid = p.id ? ` · ID ${p.id}` : '';
      const dob = p.birthDate ? ` · born ${fmtDate(p.birthDate)}` : '';
      found.append(h('article', { class: 'patient', dataset: { patientId: p.id } },
        h('h2', {}, (p.name || '(no name)').replace(/\^/g, ' '), h('small', {}, pid + dob)),
        p.studies.map((st) => h('div', { class: 'study', dataset: { studyUid: st.uid } },
          h('h3', {}, `${fmtDate(st.date)} ${st.description || '(no description)'}`),
          h('table', { class: 'series-list' },
            h('thead', {}, h('tr', {}, h('th', {}, 'Series'), h('th', {}, 'Modality'), h('th', {}, 'Description'), h('th', {}, 'Images'), h('th', {}, 'Size'))),
            h('tbody', {}, st.series.map((se) => h('tr', { dataset: { seriesUid: se.uid, images: String(se.images) } },
              h('td', {}, se.number), h('td', {}, se.modality), h('td', {}, se.description), h('td', { class: 'count' }, String(se.images)), h('td', {}, mb(se.bytes))))))))));
    }
    for (const cd of state.cds) {
      found.append(h('section', { class: 'cd-index', dataset: { path: cd.path, named: String(cd.named), found: String(cd.found), missing: String(cd.missing.length), extras: String(cd.extras.length) } },
        h('p', {}, h('b', {}, 'CD index '), h('code', {}, cd.path), `: ${cd.records} record(s) naming ${cd.named} file(s); ${cd.found} found, ${cd.missing.length} missing, ${cd.extras.length} extra file(s).`),
        cd.missing.length ? h('p', { class: 'error', role: 'alert' }, `${cd.missing.length} file(s) the DICOMDIR names are not among the files dropped: the copy of the CD may be incomplete. The others can still be sent.`) : null,
        cd.missing.length ? h('details', { class: 'missing' }, h('summary', {}, `${cd.missing.length} missing file(s)`),
          h('ul', {}, cd.missing.map((p) => h('li', {}, h('code', {}, p))))) : null,
        cd.extras.length ? h('details', { class: 'extras' }, h('summary', {}, `${cd.extras.length} extra file(s) the DICOMDIR does not name (not sent)`),
          h('ul', {}, cd.extras.map((p) => h('li', {}, h('code', {}, p))))) : null));
    }
    if (state.skipped.length) {
      found.append(h('details', { class: 'skipped', id: 'skipped' },
        h('summary', {}, `${state.skipped.length} file(s) skipped (not sent)`),
        h('ul', {}, state.skipped.map((s) => h('li', {}, h('code', {}, s.path), ` — ${s.reason}`)))));
    }
    const fits = total <= info.remaining_bytes;
    if (!fits) found.append(h('p', { class: 'error', role: 'alert' }, `Too much: this link accepts ${mb(info.remaining_bytes)} more, these files have ${mb(total)}.`));
    sendButton.hidden = !state.items.length;
    sendButton.disabled = !fits || state.sending;
    sendButton.textContent = `Send ${state.items.length} file(s)`;
    clearButton.hidden = !(state.items.length || state.skipped.length);
  }

  // --- sending ------------------------------------------------------------------------------
  async function send() {
    if (state.sending) return;
    state.sending = true;
    sendButton.disabled = true; clearButton.disabled = true;
    bar.hidden = false;
    const todo = state.items.filter((i) => !i.result || ['failed', 'refused'].includes(i.result.outcome));
    const total = state.items.reduce((s, i) => s + i.size, 0);
    clear(results).append(h('table', { class: 'results', id: 'result-table' },
      h('thead', {}, h('tr', {}, h('th', {}, 'File'), h('th', {}, 'Result'))),
      h('tbody', {}, state.items.map((it) => {
        it.row = h('td', { class: 'result' }, it.result ? label(it.result) : 'waiting');
        return h('tr', { dataset: { path: it.src.path } }, h('td', {}, h('code', {}, it.src.path)), it.row);
      }))));
    const progress = () => {
      const done = state.items.reduce((s, i) => s + (i.result ? i.size : i.sent), 0);
      bar.value = total ? done / total : 1;
      const finished = state.items.filter((i) => i.result).length;
      barText.textContent = `Sent ${mb(done)} of ${mb(total)} · ${finished} of ${state.items.length} file(s) done` + (state.waiting ? ` · ${state.waiting}` : '');
      barText.dataset.done = String(finished);
    };
    state.progress = progress;
    progress();
    const queue = [...todo];
    await Promise.all(Array.from({ length: PARALLEL }, async () => {
      while (queue.length) {
        const it = queue.shift();
        try {
          it.result = await sendOne(it);
        } catch (e) {
          it.result = { outcome: 'failed', reason: e.message };
        }
        it.row.textContent = label(it.result);
        it.row.className = `result ${it.result.outcome}`;
        Object.assign(it.row.parentElement.dataset, { outcome: it.result.outcome, sha256: it.result.sha256 || '', sop: it.result.sop_instance_uid || '' });
        progress();
      }
    }));
    state.sending = false;
    state.waiting = '';
    progress();
    const count = (o) => state.items.filter((i) => i.result && i.result.outcome === o).length;
    const failed = count('failed') + count('refused');
    barText.textContent = `Done: ${count('stored') + count('replaced')} stored, ${count('duplicate')} already there, ${count('rejected')} rejected` +
      (failed ? `, ${failed} not sent` : '') + '. Thank you: staff will check them before they join the patient\'s record.';
    barText.dataset.finished = 'true';
    clearButton.disabled = false;
    sendButton.disabled = !failed;
    sendButton.textContent = 'Send the files not sent again';
    try {
      const r = await fetch(`${base}/info`);
      if (r.ok) { info = await r.json(); showAllowance(); }
    } catch { /* offline: the numbers stay */ }
  }

  function label(r) {
    switch (r.outcome) {
      case 'stored': return r.before ? 'stored (sent before from this browser)' : 'stored';
      case 'replaced': return 'stored (replaced an earlier copy)';
      case 'duplicate': return r.before ? 'already sent from this browser' : 'already there';
      case 'rejected': return `rejected: ${r.message || r.reason}`;
      case 'refused': return `not sent: ${r.reason}`;
      default: return `not sent: ${r.reason || 'failed'}`;
    }
  }

  /** A request, retried on network errors and server failures with a growing wait. */
  async function withRetry(what, fn) {
    let wait = 500;
    for (let attempt = 1; ; attempt++) {
      try {
        const r = await fn();
        if (r.status < 500 && r.status !== 429) { state.waiting = ''; return r; }
        throw new Error(`server answered ${r.status}`);
      } catch (e) {
        if (attempt >= MAX_TRIES) throw new Error(`${what}: ${e.message}`);
        state.waiting = `connection problem, trying again in ${Math.round(wait / 1000)} s`;
        if (state.progress) state.progress();
        await sleep(wait);
        wait = Math.min(15000, wait * 2);
      }
    }
  }

  async function sendOne(it) {
    const known = memory.get(base, it);
    if (known && known.result) { state.remembered += 1; barText.dataset.remembered = String(state.remembered); return { ...known.result, before: true }; }
    if (known && known.url && !it.upload) it.upload = known.url;
    const size = it.src.size;
    it.row.textContent = 'checking';
    let sha256;
    try {
      sha256 = await it.src.hash();
      it.row.parentElement.dataset.hashed = sha256 ? it.src.hashedBy : 'none';
    } catch (e) {
      return { outcome: 'failed', reason: e.message };
    }
    it.row.textContent = 'sending';
    if (!it.upload) {
      const r = await withRetry('starting', () => fetch(`${base}/files`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: it.src.path.slice(-255), length: size, sha256 }),
      }));
      const body = await r.json().catch(() => ({}));
      if (!r.ok) return { outcome: 'refused', reason: body.message || r.statusText };
      it.upload = body.url;
      memory.set(base, it, { url: it.upload });
    }
    // `?chunk=BYTES` (64 KiB at least) sends smaller chunks, for a link that keeps dropping.
    const asked = Number(new URLSearchParams(location.search).get('chunk'));
    const chunk = asked >= 65536 ? asked : (info.chunk_bytes || (2 << 20));
    let offset = await currentOffset(it);
    if (offset.lost) {
      // Remembered from an earlier page, but gone from the server (swept, another node): anew.
      it.upload = null;
      memory.forget(base, it);
      return sendOne(it);
    }
    if (known && known.url) { state.resumedAfterReload += 1; barText.dataset.resumedAfterReload = String(state.resumedAfterReload); }
    const slicer = it.src.slicer();
    try {
      return await sendChunks(it, slicer, size, chunk, offset);
    } finally {
      slicer.close();
    }
  }

  /** Sends `it` from `offset` on in chunks of `chunk` bytes; its result. */
  async function sendChunks(it, slicer, size, chunk, offset) {
    for (;;) {
      if (offset.done) { memory.set(base, it, { url: it.upload, result: offset.done }); return offset.done; }
      const at = offset.at;
      const end = Math.min(size, at + chunk);
      const body = await slicer.read(at, end);
      let r;
      try {
        r = await fetch(it.upload, {
          method: 'PATCH',
          headers: { 'Upload-Offset': String(at), 'Content-Type': 'application/offset+octet-stream' },
          body,
        });
      } catch {
        // The connection dropped: ask the server where it got to, then go on from there.
        offset = await currentOffset(it);
        note(offset, at, end);
        continue;
      }
      const answer = await r.json().catch(() => ({}));
      if (r.status === 409 || r.status >= 500) {
        // Not where the server is (the browser may have re-sent a request whose connection was
        // cut after part of it arrived), or a server failure: ask, and go on from there.
        offset = await currentOffset(it);
        note(offset, at, end);
        continue;
      }
      if (r.status === 404) { it.upload = null; memory.forget(base, it); return { outcome: 'failed', reason: 'the server lost this upload: send it again' }; }
      if (!r.ok) return { outcome: 'failed', reason: answer.message || r.statusText };
      it.sent = answer.offset;
      if (state.progress) state.progress();
      if (answer.state === 'done') { memory.set(base, it, { url: it.upload, result: answer.result }); return answer.result; }
      offset = { at: answer.offset };
    }
  }

  /** Counts a resume (shown in the progress line's data attributes, for the tests). */
  function note(offset, at, end) {
    state.resumes += 1;
    if (!offset.done && offset.at > at && offset.at < end) state.resumedMidChunk += 1;
    barText.dataset.resumes = String(state.resumes);
    barText.dataset.resumedMidChunk = String(state.resumedMidChunk);
  }

  /** Where the upload stands (GET, retried): `{at}` or `{done: result}`. */
  async function currentOffset(it) {
    const r = await withRetry('resuming', () => fetch(it.upload, { method: 'GET', cache: 'no-store' }));
    const body = await r.json().catch(() => ({}));
    if (r.status === 404) return { lost: true };
    if (!r.ok) throw new Error(body.message || r.statusText);
    it.sent = body.offset;
    if (body.state === 'done') return { done: body.result };
    return { at: body.offset };
  }
}

function fmtDate(d) {
  return /^\d{8}$/.test(d || '') ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : (d || '');
}
