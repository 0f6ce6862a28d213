// Peers (with ping), DICOM nodes (with C-ECHO), routes (with "test this file") and live
// transfers (docs/api-exchange.md; POST /api/v1/route-test, docs/admin-console.md).

import { errorOf, json, request } from '../api.js';
import { clear, h, toast } from '../dom.js';
import { act, bytes, field, form, list, pager, section, send, showError, table, time } from './ui.js';

const enc = encodeURIComponent;

/** `a, b ,c` → `['a', 'b', 'c']`. */
function split(s) {
  return (s || '').split(',').map((x) => x.trim()).filter(Boolean);
}

/** Fills the named controls of `f` from `v`. */
function fill(f, v) {
  for (const el of f.elements) {
    if (!el.name || !(el.name in v)) continue;
    if (el.type === 'checkbox') el.checked = Boolean(v[el.name]);
    else el.value = v[el.name] ?? '';
  }
  f.scrollIntoView({ block: 'nearest' });
  f.querySelector('input,select')?.focus();
}

// --- peers ------------------------------------------------------------------------------

export function peers(who) {
  return section('Peers', async (body, reload) => {
    const r = await json('/api/v1/peers');
    const editor = form('Add or change a peer', [
      field('Name (its site name)', 'name', { required: true, pattern: '[A-Za-z0-9._-]{1,64}' }),
      field('Base URL', 'base_url', { required: true, type: 'url', placeholder: 'https://hub.example' }),
      field('Kind', 'kind', { options: [['vesalius', 'Vesalius site'], ['dicomweb', 'DICOMweb server']], value: 'vesalius' }),
      field('Public key (Vesalius peers)', 'public_key'),
      field('Acts as organisation', 'org', { value: who.org, required: true }),
      field('Deliver into organisation there', 'remote_org'),
      field('Credentials (DICOMweb)', 'auth', { options: [['none', 'none'], ['basic', 'basic'], ['bearer', 'bearer']], value: 'none' }),
      field('User (basic)', 'auth_user'),
      field('Password or token', 'auth_secret', { type: 'password', autocomplete: 'new-password' }),
      field('Description', 'description'),
      field('May search and retrieve here', 'may_query', { type: 'checkbox' }),
    ], 'Save peer', async (v, f, out) => {
      const auth = v.auth === 'basic' ? { type: 'basic', username: v.auth_user, password: v.auth_secret }
        : v.auth === 'bearer' ? { type: 'bearer', token: v.auth_secret } : { type: 'none' };
      const p = await send('PUT', `/api/v1/peers/${enc(v.name)}`, {
        kind: v.kind, base_url: v.base_url, public_key: v.public_key, org: v.org,
        remote_org: v.remote_org || null, may_query: v.may_query, description: v.description, auth,
      });
      out.textContent = `Saved peer ${p.name}.`;
      f.reset();
      await reload();
    });
    const rows = table([
      ['Name', (p) => h('strong', {}, p.name)],
      ['URL', (p) => h('span', { class: 'wrap' }, p.base_url)],
      ['Kind', (p) => p.kind],
      ['Organisation', (p) => (p.remote_org ? `${p.org} → ${p.remote_org}` : p.org)],
      ['May query', (p) => (p.may_query ? 'yes' : 'no')],
      ['Description', (p) => p.description || ''],
      ['Ping', (p) => pingCell(p)],
      ['', (p) => h('div', { class: 'row-actions' },
        p.managed ? h('span', { class: 'badge' }, 'config file') : [
          act('Edit', async () => fill(editor, { ...p, auth: p.auth?.type || 'none', auth_user: '', auth_secret: '', remote_org: p.remote_org || '' })),
          act('Remove', () => send('DELETE', `/api/v1/peers/${enc(p.name)}`), { confirmText: `Remove peer ${p.name}?`, after: reload }),
        ])],
    ], r, 'No peers.', { 'aria-label': 'Peers' });
    clear(body).append(rows, editor);
  });
}

function pingCell(p) {
  const out = h('span', { class: 'probe', 'data-peer': p.name });
  const b = act('Ping', async () => {
    out.textContent = '…';
    const r = await send('POST', `/api/v1/peers/${enc(p.name)}/ping`);
    out.className = `probe ${r.reachable ? 'ok' : 'bad'}`;
    out.textContent = r.reachable
      ? `OK · ${r.round_trip_ms} ms${r.site ? ` · ${r.site}` : ''}${r.skew_ms !== undefined ? ` · clock ${r.skew_ms} ms` : ''}`
      : `Unreachable: ${r.error || ''}`;
  });
  return h('div', { class: 'row-actions' }, b, out);
}

// --- DICOM nodes --------------------------------------------------------------------------

export function nodes(who) {
  return section('DICOM nodes', async (body, reload) => {
    const r = await json('/api/v1/nodes');
    const editor = form('Add or change a DICOM node', [
      field('Name', 'name', { required: true, pattern: '[A-Za-z0-9._-]{1,64}' }),
      field('AE title', 'ae_title', { required: true, maxlength: 16 }),
      field('Host', 'host', { required: true }),
      field('Port', 'port', { required: true, type: 'number', min: 1, max: 65535 }),
      field('Organisation', 'org', { value: who.org, required: true }),
      // How studies are retrieved from it and the Query/Retrieve Information Model it answers
      // (docs/exchange-admin.md, "DICOM nodes").
      field('Retrieve by', 'retrieve', { options: [['move', 'C-MOVE to us'], ['get', 'C-GET']], value: 'move' }),
      field('Query model', 'query_model', { options: [['study', 'Study Root'], ['patient', 'Patient Root']], value: 'study' }),
      // The transfer syntaxes it accepts (UIDs); empty: the uncompressed ones. Saving the form
      // replaces the node, so an edited node keeps what it had only if they are in the form.
      field('Transfer syntaxes (UIDs, comma separated)', 'transfer_syntaxes'),
      field('Description', 'description'),
    ], 'Save node', async (v, f, out) => {
      const n = await send('PUT', `/api/v1/nodes/${enc(v.name)}`, {
        ae_title: v.ae_title, host: v.host, port: Number(v.port), org: v.org, description: v.description,
        retrieve: v.retrieve, query_model: v.query_model,
        transfer_syntaxes: String(v.transfer_syntaxes || '').split(/[\s,]+/).filter(Boolean),
      });
      out.textContent = `Saved node ${n.name}.`;
      f.reset();
      await reload();
    });
    const rows = table([
      ['Name', (n) => h('strong', {}, n.name)],
      ['AE title', (n) => h('code', {}, n.ae_title)],
      ['Address', (n) => `${n.host}:${n.port}`],
      ['Organisation', (n) => n.org],
      ['Retrieval', (n) => `${n.retrieve === 'get' ? 'C-GET' : 'C-MOVE'} · ${n.query_model === 'patient' ? 'Patient Root' : 'Study Root'}`],
      ['Accepts', (n) => (n.transfer_syntaxes?.length ? n.transfer_syntaxes.join(', ') : 'uncompressed')],
      ['Description', (n) => n.description || ''],
      ['C-ECHO', (n) => echoCell(n)],
      ['', (n) => h('div', { class: 'row-actions' },
        n.managed ? h('span', { class: 'badge' }, 'config file') : [
          act('Edit', async () => fill(editor, n)),
          act('Remove', () => send('DELETE', `/api/v1/nodes/${enc(n.name)}`), { confirmText: `Remove node ${n.name}?`, after: reload }),
        ])],
    ], r, 'No DICOM nodes.', { 'aria-label': 'DICOM nodes' });
    clear(body).append(rows, editor);
  });
}

function echoCell(n) {
  const out = h('span', { class: 'probe', 'data-node': n.name });
  const b = act('C-ECHO', async () => {
    out.textContent = '…';
    const r = await send('POST', `/api/v1/nodes/${enc(n.name)}/echo`);
    out.className = `probe ${r.ok ? 'ok' : 'bad'}`;
    out.textContent = r.ok ? `OK · ${r.round_trip_ms} ms` : `Failed: ${r.error || ''}`;
  });
  return h('div', { class: 'row-actions' }, b, out);
}

// --- routes -------------------------------------------------------------------------------

function destText(d) {
  if (typeof d === 'string') return d;
  const [k, v] = Object.entries(d)[0] || ['', ''];
  if (k === 'prefetch' && v && typeof v === 'object') return `prefetch:${v.node || ''}`;
  return `${k}:${v}`;
}

function matcherText(m) {
  const parts = [];
  for (const k of ['calling_ae', 'called_ae', 'source_org', 'modality', 'sop_class', 'body_part']) {
    if (m[k] && m[k].length) parts.push(`${k}=${m[k].join('|')}`);
  }
  for (const k of ['study_description', 'station_name', 'time_of_day']) if (m[k]) parts.push(`${k}=${m[k]}`);
  return parts.length ? parts.join(' ') : 'everything';
}

export function routes(who) {
  return section('Routes', async (body, reload) => {
    const r = await json('/api/v1/routes');
    const editor = form('Add or change a route', [
      field('Id', 'id', { required: true, pattern: '[A-Za-z0-9._-]{1,64}' }),
      field('Name', 'name'),
      field('Organisation', 'org', { value: who.org, required: true }),
      field('Destinations (comma separated)', 'destinations', { required: true, placeholder: 'peer:hub, node:PACS' }),
      field('Modalities', 'modality', { placeholder: 'CT, MR' }),
      field('Body parts', 'body_part', { placeholder: 'HEAD' }),
      field('Calling AE titles', 'calling_ae'),
      field('Called AE titles', 'called_ae'),
      field('Study description pattern', 'study_description', { placeholder: '*HEAD*' }),
      field('Station name pattern', 'station_name'),
      field('Time of day', 'time_of_day', { placeholder: '08:00-18:00' }),
      field('Priority (100: stroke)', 'priority', { type: 'number', value: 0 }),
      field('Order', 'order', { type: 'number', value: 0 }),
      field('De-identification profile', 'deid'),
      field('Enabled', 'enabled', { type: 'checkbox', value: true }),
    ], 'Save route', async (v, f, out) => {
      const matcher = {
        modality: split(v.modality), body_part: split(v.body_part), calling_ae: split(v.calling_ae),
        called_ae: split(v.called_ae), study_description: v.study_description || null,
        station_name: v.station_name || null, time_of_day: v.time_of_day || null,
      };
      const saved = await send('PUT', `/api/v1/routes/${enc(v.id)}`, {
        name: v.name, org: v.org, enabled: v.enabled, order: Number(v.order || 0),
        priority: Number(v.priority || 0), destinations: split(v.destinations), matcher, deid: v.deid || null,
      });
      out.textContent = `Saved route ${saved.id}.`;
      f.reset();
      await reload();
    });
    const rows = table([
      ['Id', (x) => h('strong', {}, x.id)],
      ['Organisation', (x) => x.org],
      ['Matches', (x) => matcherText(x.matcher || {})],
      ['Destinations', (x) => list(x.destinations.map(destText))],
      ['Priority', (x) => String(x.priority)],
      ['State', (x) => h('span', { class: `badge ${x.enabled ? 'ok' : 'warn'}` }, x.enabled ? 'enabled' : 'disabled')],
      ['', (x) => h('div', { class: 'row-actions' },
        x.managed ? h('span', { class: 'badge' }, 'config file') : [
          act('Edit', async () => {
            const m = x.matcher || {};
            fill(editor, {
              id: x.id, name: x.name, org: x.org, enabled: x.enabled, order: x.order, priority: x.priority,
              destinations: x.destinations.map(destText).join(', '), deid: x.deid || '',
              modality: (m.modality || []).join(', '), body_part: (m.body_part || []).join(', '),
              calling_ae: (m.calling_ae || []).join(', '), called_ae: (m.called_ae || []).join(', '),
              study_description: m.study_description || '', station_name: m.station_name || '',
              time_of_day: m.time_of_day || '',
            });
          }),
          act('Remove', () => send('DELETE', `/api/v1/routes/${enc(x.id)}`), { confirmText: `Remove route ${x.id}?`, after: reload }),
        ])],
    ], r, 'No routes.', { 'aria-label': 'Routes' });
    clear(body).append(rows, editor, routeTest(who));
  });
}

/** "Test this file": which routes would fire for a DICOM file (nothing is stored). */
function routeTest(who) {
  const out = h('div', { class: 'result', role: 'status', 'aria-live': 'polite' });
  const f = form('Test this file', [
    field('DICOM file', 'file', { type: 'file', required: true, accept: '.dcm,application/dicom,*/*' }),
    field('Stored into organisation', 'org', { value: who.org }),
    field('Calling AE title (empty: over HTTP)', 'calling_ae'),
    field('At site time (HH:MM; empty: now)', 'at', { placeholder: '14:30' }),
  ], 'Test', async (v, form_) => {
    const file = form_.elements.file.files[0];
    if (!file) throw new Error('choose a file');
    const q = new URLSearchParams();
    if (v.org) q.set('org', v.org);
    if (v.calling_ae) q.set('calling_ae', v.calling_ae);
    if (v.at) q.set('at', v.at);
    const r = await request(`/api/v1/route-test?${q}`, {
      method: 'POST', headers: { 'Content-Type': 'application/dicom', Accept: 'application/json' }, body: file,
    });
    if (!r.ok) throw await errorOf(r);
    const res = await r.json();
    const i = res.input;
    clear(out).className = 'result';
    out.append(
      h('p', {}, `${file.name}: ${i.modality || '?'} ${i.body_part || ''} “${i.study_description || ''}” at ${res.at}`),
      res.fired.length
        ? h('ul', { class: 'fired' }, res.fired.map((x) => h('li', {},
          h('strong', {}, x.route), ` (${x.org}) → ${x.destinations.join(', ')}, priority ${x.priority}${x.deid ? `, de-identified (${x.deid})` : ''}`)))
        : h('p', { class: 'empty' }, 'No route fires.'),
      res.skipped.length ? h('p', { class: 'status warn' }, `Left out (do not compile): ${res.skipped.join('; ')}`) : null,
    );
  }, { class: 'admin-form route-test' });
  f.append(out);
  return f;
}

// --- transfers -------------------------------------------------------------------------------

/** Rows per page of the transfers page's lists. */
const PAGES = { transfers: 50, parked: 50, receipts: 50 };

export function transfers() {
  let es = null;
  const log = h('ol', { class: 'event-log', 'aria-label': 'Live events' });
  const live = h('p', { class: 'status' }, 'Connecting to live events…');
  let timer = null;
  // Each list is paged by limit/offset (docs/api-exchange.md); one row more than the page is
  // asked for, to know whether a next page exists. A live reload keeps the pages shown.
  const at = { transfers: 0, parked: 0, receipts: 0 };
  let focus = null; // [list, 'prev'|'next'] after a page turn
  const root = section('Transfers', async (body, reload) => {
    const page = (url, key, size) => json(`${url}${url.includes('?') ? '&' : '?'}limit=${size + 1}&offset=${at[key]}`);
    const [t, parked, receipts] = await Promise.all([
      page('/api/v1/transfers', 'transfers', PAGES.transfers),
      page('/api/v1/transfers/jobs?state=parked', 'parked', PAGES.parked),
      page('/api/v1/transfers/receipts', 'receipts', PAGES.receipts),
    ]);
    /** The rows of one page of `list` and its pager ("Transfers 51–100", Previous, Next). */
    const paged = (key, label, rows) => {
      const size = PAGES[key];
      const more = rows.length > size;
      const shown = rows.slice(0, size);
      const go = (offset, rel) => () => {
        at[key] = offset;
        focus = [key, rel];
        return reload();
      };
      const nav = at[key] > 0 || more
        ? pager(label, {
          status: shown.length ? `${label} ${at[key] + 1}–${at[key] + shown.length}${more ? '' : ' (the last)'}` : `No ${label.toLowerCase()} here`,
          prev: at[key] > 0 ? go(Math.max(0, at[key] - size), 'prev') : null,
          next: more ? go(at[key] + size, 'next') : null,
          focus: focus && focus[0] === key ? focus[1] : null,
        })
        : null;
      return [shown, nav];
    };
    const [tRows, tNav] = paged('transfers', 'Transfers', t);
    const [pRows, pNav] = paged('parked', 'Parked jobs', parked);
    const [rRows, rNav] = paged('receipts', 'Receipts', receipts);
    focus = null;
    clear(body).append(...[
      live, log,
      h('h3', {}, 'Outbox'),
      table([
        ['Destination', (x) => x.queue],
        ['Study', (x) => h('code', { class: 'uid' }, x.study_uid)],
        ['Progress', (x) => progress(x)],
        ['Verified', (x) => `${x.verified}/${x.delivered}`],
        ['Sent', (x) => bytes(x.delivered_bytes)],
        ['Complete', (x) => (x.complete_ms ? time(x.complete_ms) : 'not yet')],
        ['Last error', (x) => x.last_error || ''],
      ], tRows, 'Nothing sent yet.', { 'aria-label': 'Transfers' }),
      tNav,
      h('h3', {}, 'Parked jobs'),
      table([
        ['Job', (j) => String(j.id)],
        ['Destination', (j) => j.queue],
        ['Study', (j) => h('code', { class: 'uid' }, j.study_uid)],
        ['Attempts', (j) => String(j.attempts)],
        ['Error', (j) => j.last_error],
        ['', (j) => act('Retry', async () => {
          await send('POST', `/api/v1/transfers/jobs/${j.id}/retry`);
          toast(`Job ${j.id} will be retried now`);
        }, { after: reload })],
      ], pRows, 'No parked jobs.', { 'aria-label': 'Parked jobs' }),
      pNav,
      h('h3', {}, 'Receipts'),
      table([
        ['When', (x) => time(x.delivered_ms)],
        ['Destination', (x) => x.queue],
        ['Kind', (x) => x.kind],
        ['Study', (x) => h('code', { class: 'uid' }, x.study_uid)],
        ['Verified', (x) => (x.verified ? 'yes' : 'no')],
        ['Detail', (x) => x.detail],
      ], rRows, 'No receipts yet.', { 'aria-label': 'Receipts' }),
      rNav,
    ].filter(Boolean));
    if (!es) {
      es = new EventSource('/api/v1/transfers/events');
      es.onopen = () => { live.textContent = 'Live: transfers update as they happen.'; live.className = 'status'; };
      es.onerror = () => { live.textContent = 'Live events reconnecting…'; live.className = 'status warn'; };
      for (const type of ['delivered', 'transfer-complete', 'parked', 'study-complete']) {
        es.addEventListener(type, (ev) => {
          let d = {};
          try { d = JSON.parse(ev.data); } catch { /* keep-alive or junk */ }
          log.prepend(h('li', { class: `ev ${type}` }, `${time(Date.now())} ${type} ${d.queue || d.from_peer || ''} ${d.study_uid || ''}${d.instances ? ` (${d.instances})` : ''}${d.error ? `: ${d.error}` : ''}`));
          while (log.children.length > 20) log.lastChild.remove();
          clearTimeout(timer);
          timer = setTimeout(reload, 700);
        });
      }
      addEventListener('pagehide', () => es.close());
    }
  });
  return root;
}

function progress(x) {
  const total = x.delivered + x.pending + x.parked;
  const pct = total ? Math.round((100 * x.delivered) / total) : 0;
  return h('div', { class: 'progress-cell' },
    h('progress', { max: total || 1, value: x.delivered, 'aria-label': `Delivered ${x.delivered} of ${total}` }),
    h('small', {}, `${x.delivered}/${total} (${pct} %)${x.parked ? ` · ${x.parked} parked` : ''}`));
}

export { showError };
