// Share and upload links, the quarantine inbox, the audit search with "who saw this patient",
// and the system's health (docs/admin-console.md).

import { json, request } from '../api.js';
import { clear, h, toast } from '../dom.js';
import { act, bytes, field, form, once, section, send, table, time } from './ui.js';

const enc = encodeURIComponent;

function linkState(l) {
  if (l.revoked) return h('span', { class: 'badge warn' }, 'revoked');
  if (l.expires_ms && l.expires_ms <= Date.now()) return h('span', { class: 'badge warn' }, 'expired');
  return h('span', { class: 'badge ok' }, 'active');
}

export function links() {
  // Secrets shown once survive the reload that follows their creation.
  const shown = h('div', { class: 'once-box', 'aria-live': 'polite' });
  return section('Share and upload links', async (body, reload) => {
    const [s, u] = await Promise.all([json('/api/v1/share-links'), json('/api/v1/upload-links')]);
    const share = form('New share link', [
      field('Study Instance UID', 'study', { required: true, pattern: '[0-9.]{1,64}' }),
      field('Valid for (hours)', 'ttl_hours', { type: 'number', min: 1, value: 72 }),
      field('Passcode (optional)', 'passcode', { autocomplete: 'off' }),
      field('Allow download', 'allow_download', { type: 'checkbox' }),
    ], 'Create share link', async (v, f, out) => {
      const r = await send('POST', `/api/v1/studies/${enc(v.study)}/share-links`, {
        allow_download: v.allow_download, passcode: v.passcode || null, ttl_hours: Number(v.ttl_hours || 72),
      });
      f.reset();
      out.textContent = `Created share link ${r.id}.`;
      clear(shown).append(once(`Share link ${r.id}`, r.url));
      await reload();
    });
    const upload = form('New guest upload link', [
      field('Label', 'label', { required: true, placeholder: 'CD from St Elsewhere' }),
      field('Valid for (hours)', 'ttl_hours', { type: 'number', min: 1, value: 72 }),
      field('Size limit (MB)', 'max_mb', { type: 'number', min: 1, value: 2000 }),
    ], 'Create upload link', async (v, f, out) => {
      const r = await send('POST', '/api/v1/upload-links', {
        label: v.label, ttl_hours: Number(v.ttl_hours || 72), max_bytes: Number(v.max_mb || 2000) * 1e6,
      });
      f.reset();
      out.textContent = `Created upload link ${r.id}.`;
      clear(shown).append(once(`Upload link ${r.id}`, r.url));
      await reload();
    });
    clear(body).append(shown,
      h('h3', {}, 'Share links'),
      table([
        ['Id', (l) => h('code', {}, l.id)],
        ['Study', (l) => h('code', { class: 'uid' }, l.study_uid)],
        ['Checks', (l) => [l.passcode ? 'passcode' : '', l.birth_date_check ? 'birth date' : ''].filter(Boolean).join(', ') || 'none'],
        ['Download', (l) => (l.allow_download ? 'yes' : 'no')],
        ['Expires', (l) => time(l.expires_ms)],
        ['State', linkState],
        ['', (l) => (l.revoked ? '' : act('Revoke', () => send('DELETE', `/api/v1/share-links/${enc(l.id)}`), {
          confirmText: `Revoke share link ${l.id}? Whoever holds it can no longer open the study.`, after: reload,
        }))],
      ], s.share_links, 'No share links.', { 'aria-label': 'Share links' }),
      share,
      h('h3', {}, 'Guest upload links'),
      table([
        ['Id', (l) => h('code', {}, l.id)],
        ['Label', (l) => l.label],
        ['Used', (l) => `${bytes(l.used_bytes)} of ${bytes(l.max_bytes)}`],
        ['Expires', (l) => time(l.expires_ms)],
        ['State', linkState],
        ['', (l) => (l.revoked ? '' : act('Revoke', () => send('DELETE', `/api/v1/upload-links/${enc(l.id)}`), {
          confirmText: `Revoke upload link ${l.id}?`, after: reload,
        }))],
      ], u.upload_links, 'No upload links.', { 'aria-label': 'Upload links' }),
      upload);
  });
}

function modalities(m) {
  return Array.isArray(m) ? m.join(', ') : '';
}

export function inbox() {
  return section('Quarantine inbox', async (body, reload) => {
    const r = await json('/api/v1/inbox');
    clear(body).append(
      h('p', { class: 'note-text' }, `What guests uploaded into ${r.org} through upload links. Accepting stores the study under the local patient identity you give; rejecting deletes it.`),
      table([
        ['Patient (as sent)', (s) => h('span', {}, h('strong', {}, s.patient_name || '?'), h('small', {}, `${s.patient_id || ''}${s.issuer ? ` (${s.issuer})` : ''} · born ${s.birth_date || '?'}`))],
        ['Study', (s) => h('span', {}, s.description || '', h('small', {}, `${s.study_date || ''} ${modalities(s.modalities)} · ${s.instances ?? '?'} images`))],
        ['Reconcile', (s) => accept(s, reload)],
        ['', (s) => act('Reject', () => send('DELETE', `/api/v1/inbox/studies/${enc(s.study_uid)}`), {
          confirmText: 'Reject and delete this upload?', after: reload,
        })],
      ], r.studies, 'The inbox is empty.', { 'aria-label': 'Inbox' }),
    );
  });
}

function accept(s, reload) {
  const f = form('Accept as', [
    field('Local patient ID', 'patient_id', { required: true, value: s.patient_id || '' }),
    field('Issuer', 'issuer', { value: s.issuer || '' }),
    field('Patient name', 'patient_name', { value: s.patient_name || '' }),
  ], 'Accept', async (v) => {
    const r = await send('POST', `/api/v1/inbox/studies/${enc(s.study_uid)}/accept`, {
      patient_id: v.patient_id, issuer: v.issuer, patient_name: v.patient_name || undefined,
    });
    toast(`Accepted ${r.accepted} images`);
    await reload();
  }, { class: 'admin-form inline' });
  return f;
}

// --- audit ---------------------------------------------------------------------------------

/** `YYYY-MM-DDTHH:MM` of a datetime-local input as ms (local time), or undefined. */
function localMs(v) {
  if (!v) return undefined;
  const t = new Date(v).getTime();
  return Number.isFinite(t) ? t : undefined;
}

/** Audit events per page: the choices of the search form. */
const AUDIT_PAGES = [10, 50, 200];

function auditTable(records, label) {
  return table([
    ['When', (r) => time(r.time_ms)],
    ['Who', (r) => h('span', {}, r.actor.name || r.actor.id || r.actor.kind, h('small', {}, `${r.actor.kind}${r.actor.role ? ` · ${r.actor.role}` : ''}`))],
    ['Action', (r) => h('span', {}, r.action, r.outcome !== 'success' ? h('small', { class: 'warn-text' }, r.outcome) : null)],
    ['Patient', (r) => (r.patient ? `${r.patient[1]}${r.patient[0] ? ` (${r.patient[0]})` : ''}` : '')],
    ['Study', (r) => (r.study_uid ? h('code', { class: 'uid' }, r.study_uid) : '')],
    ['From', (r) => r.source || ''],
  ], records, 'No matching events.', { 'aria-label': label });
}

export function audit(who) {
  return section('Audit', async (body) => {
    const results = h('div', { class: 'audit-results', 'aria-live': 'polite' });
    const search = form('Search the audit trail', [
      field('Patient ID', 'patient_id'),
      field('Issuer', 'issuer'),
      field('Study Instance UID', 'study'),
      field('User (username)', 'user'),
      field('Action', 'action', { placeholder: 'retrieve, login, delete…' }),
      field('From', 'since', { type: 'datetime-local' }),
      field('Until', 'until', { type: 'datetime-local' }),
      field('Per page', 'limit', { options: AUDIT_PAGES.map((n) => [n, String(n)]), value: 50 }),
    ], 'Search', async (v) => {
      const q = new URLSearchParams();
      for (const k of ['patient_id', 'issuer', 'study', 'user', 'action', 'limit']) if (v[k]) q.set(k, v[k]);
      const since = localMs(v.since), until = localMs(v.until);
      if (since !== undefined) q.set('since_ms', String(since));
      if (until !== undefined) q.set('until_ms', String(until));
      // Newest first, a page at a time: "Older events" asks for the page before the oldest
      // shown (the answer's `next_before`) and adds it under the others.
      const shown = [];
      const page = async (before) => {
        if (before) q.set('before', String(before));
        const r = await json(`/api/v1/audit/events?${q}`);
        const first = shown.length;
        shown.push(...r.records);
        const older = r.more
          ? act('Older events', () => page(r.next_before), { cls: 'pager-btn' })
          : null;
        clear(results).append(
          h('p', { class: 'status', role: 'status', 'aria-live': 'polite' },
            `${shown.length} event(s) in ${who.org || 'the site'}'s trail${r.more ? ', and older ones' : ''}.`),
          auditTable(shown, 'Audit events'));
        if (older) results.append(h('nav', { class: 'pager', 'aria-label': 'Audit pages' }, older));
        if (before) {
          // Keyboard users go on where they were: the first row of the new page (or the button).
          const row = results.querySelectorAll('table[aria-label="Audit events"] tbody tr')[first];
          if (row) {
            row.tabIndex = -1;
            row.focus();
          }
        }
      };
      await page(null);
    });
    const whoSaw = form('Who saw this patient or study?', [
      field('Patient ID', 'patient_id'),
      field('Issuer', 'issuer'),
      field('or Study Instance UID', 'study'),
    ], 'Who saw it', async (v) => {
      const q = new URLSearchParams();
      if (v.study) q.set('study', v.study);
      else { q.set('patient_id', v.patient_id); q.set('issuer', v.issuer || ''); }
      const r = await json(`/api/v1/audit/who-saw?${q}`);
      const people = new Map();
      for (const e of r.records) {
        const k = `${e.actor.kind}:${e.actor.id}`;
        const p = people.get(k) || { name: e.actor.name || e.actor.id, kind: e.actor.kind, n: 0, last: 0 };
        p.n += 1;
        p.last = Math.max(p.last, e.time_ms);
        people.set(k, p);
      }
      clear(results).append(
        h('p', { class: 'status' }, `${people.size} reader(s), ${r.records.length} access(es).`),
        table([
          ['Who', (p) => p.name], ['Kind', (p) => p.kind], ['Accesses', (p) => String(p.n)], ['Last', (p) => time(p.last)],
        ], [...people.values()], 'Nobody.', { 'aria-label': 'Readers' }),
        auditTable(r.records, 'Accesses'));
    });
    clear(body).append(search, whoSaw, results);
  });
}

// --- system health --------------------------------------------------------------------------

async function probe(url) {
  const t0 = performance.now();
  try {
    const r = await request(url, { headers: { Accept: 'application/json' } });
    let b = {};
    try { b = await r.json(); } catch { /* not JSON */ }
    return { ok: r.ok, status: r.status, ms: Math.round(performance.now() - t0), body: b };
  } catch (e) {
    return { ok: false, status: 0, ms: 0, body: { message: String(e.message || e) } };
  }
}

/** A few figures of the Prometheus text at /metrics: `name{labels} value` summed per name. */
export function metricsSummary(text) {
  const sums = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const v = Number(m[3]);
    if (!Number.isFinite(v)) continue;
    sums.set(m[1], (sums.get(m[1]) || 0) + v);
  }
  return sums;
}

export function health() {
  return section('System health', async (body) => {
    const [hz, rz, sys] = await Promise.all([probe('/healthz'), probe('/readyz'), json('/api/v1/system')]);
    let metrics = null;
    try {
      const r = await request('/metrics');
      if (r.ok) metrics = metricsSummary(await r.text());
    } catch { /* no metrics */ }
    const light = (ok, text) => h('span', { class: `badge ${ok ? 'ok' : 'warn'}` }, text);
    const d = sys.disk;
    clear(body).append(
      h('dl', { class: 'health' },
        h('dt', {}, 'Process (/healthz)'), h('dd', {}, light(hz.ok, hz.ok ? `up · ${hz.ms} ms` : `down (${hz.status})`)),
        h('dt', {}, 'Ready (/readyz)'), h('dd', {}, light(rz.ok, rz.ok ? 'ready' : `not ready: ${rz.body.message || rz.status}`)),
        h('dt', {}, 'Version'), h('dd', {}, sys.version),
        h('dt', {}, 'Index'), h('dd', {}, light(sys.index.ok, sys.index.ok ? 'answers' : 'does not answer')),
        h('dt', {}, 'Disk free'), h('dd', {}, light(d.ok, `${bytes(d.free_bytes)} free`),
          ` (watermark ${d.min_free_bytes ? bytes(d.min_free_bytes) : 'off'})`),
        h('dt', {}, 'Stored'), h('dd', {}, `${sys.stats.studies} studies, ${sys.stats.series} series, ${sys.stats.instances} instances, ${bytes(sys.stats.bytes)}`),
        h('dt', {}, 'Server time'), h('dd', {}, time(sys.now_ms))),
      h('h3', {}, 'Metrics'),
      metrics
        ? table([['Metric', (x) => h('code', {}, x[0])], ['Total', (x) => String(Math.round(x[1] * 1000) / 1000)]],
          [...metrics.entries()].filter(([k]) => k.startsWith('vesalius_') && !/_bucket$|_sum$/.test(k)).slice(0, 40),
          'No Vesalius metrics yet.', { 'aria-label': 'Metrics' })
        : h('p', { class: 'empty' }, 'This server does not export /metrics.'),
    );
  });
}
