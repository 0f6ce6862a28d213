// The worklist: studies the user may see, here and at the peer sites (GET /api/v1/search,
// docs/api-exchange.md "Federated search"), with filters, sort and paging; arrivals from peers
// (GET /api/v1/arrivals) flag stroke-priority studies; a server-sent event stream
// (GET /api/v1/events) reloads the list when studies of the user's organisation change.

import { ApiError, json } from './api.js';
import { clear, h, toast } from './dom.js';
import { isoDate, personName, shortTime } from './pixels.js';

/** Rows per page. */
const PAGE = 25;
/** Results asked of each site (the search's `limit`, applied at every site). */
const PER_SITE = 500;
/** Arrivals with this route priority or more stand out (stroke routes use 100). */
export const URGENT_PRIORITY = 50;
const MODALITIES = ['CT', 'MR', 'CR', 'DX', 'US', 'PT', 'NM', 'XA', 'MG', 'RF', 'OT'];
const SORTS = [
  ['priority', 'Priority, then newest'],
  ['date-desc', 'Newest first'],
  ['date-asc', 'Oldest first'],
  ['name', 'Patient name'],
];

/** `2026-12-07` → `20261207`. */
function dicomDate(iso) {
  return (iso || '').replaceAll('-', '');
}

/** A name or ID typed by a person as a QIDO-RS pattern: a trailing wildcard (PS3.4 C.2.2.2.4). */
function prefix(s) {
  const t = s.trim();
  return !t || /[*?]$/.test(t) ? t : `${t}*`;
}

function filtersFrom(q) {
  return {
    patientName: q.get('patientName') || '',
    patientID: q.get('patientID') || '',
    from: q.get('from') || '',
    to: q.get('to') || '',
    modality: q.get('modality') || '',
    site: q.get('site') || '',
    priority: q.get('priority') || '',
    status: q.get('status') || '',
  };
}

/** Delivery states of the status filter, from `GET /api/v1/arrivals`. */
const STATUSES = [
  ['arriving', 'Arriving from a peer'],
  ['complete', 'Received complete'],
  ['here', 'Not received from a peer'],
];

/** Whether study `s` is in delivery state `status` (see [`STATUSES`]). */
export function hasStatus(s, status, arrivals) {
  const a = arrivals.get(s.study_instance_uid);
  switch (status) {
    case 'arriving': return Boolean(a && !a.complete_ms);
    case 'complete': return Boolean(a && a.complete_ms);
    case 'here': return !a;
    default: return true;
  }
}

/** The search's query string for `f`. */
export function searchQuery(f) {
  const p = new URLSearchParams();
  if (f.patientName) p.set('PatientName', prefix(f.patientName));
  if (f.patientID) p.set('PatientID', prefix(f.patientID));
  if (f.from || f.to) p.set('StudyDate', `${dicomDate(f.from)}-${dicomDate(f.to)}`);
  if (f.modality) p.set('ModalitiesInStudy', f.modality);
  // `priority` and `status` are applied here, to the arrivals (the search knows neither).
  if (f.site === 'local') p.set('scope', 'local');
  else if (f.site) p.set('peers', f.site);
  p.set('limit', String(PER_SITE));
  return p.toString();
}

function when(s) {
  return `${s.study_date || ''}${s.study_time || ''}`;
}

function sorter(sort, arrivals) {
  const prio = (s) => arrivals.get(s.study_instance_uid)?.priority ?? -1;
  const byDate = (a, b) => when(b).localeCompare(when(a));
  switch (sort) {
    case 'date-asc': return (a, b) => -byDate(a, b);
    case 'name': return (a, b) => (a.patient_name || '').localeCompare(b.patient_name || '') || byDate(a, b);
    case 'date-desc': return byDate;
    default: return (a, b) => (prio(b) - prio(a)) || byDate(a, b);
  }
}

/**
 * "Open in OHIF" (docs/web.md, "OHIF"): when the server serves OHIF (`<body data-ohif>`), for
 * studies held here (OHIF reads this site's DICOMweb only).
 */
function ohifUrl(s) {
  const base = document.body.dataset.ohif;
  return base && s.local ? `${base}viewer?StudyInstanceUIDs=${encodeURIComponent(s.study_instance_uid)}` : '';
}

/** The viewer URL of a study of the search: here, or through this site's proxy to its site. */
export function viewUrl(s) {
  const uid = encodeURIComponent(s.study_instance_uid);
  return s.local ? `/view/${uid}` : `/view/${uid}?peer=${encodeURIComponent(s.site || '')}`;
}

export function worklist(app, q, who) {
  const st = {
    f: filtersFrom(q),
    sort: q.get('sort') || 'priority',
    page: 0,
    studies: [],
    sites: [],
    complete: true,
    arrivals: new Map(),
    fresh: new Set(),
    siteNames: new Set(),
    seq: 0,
  };

  // --- the filter form -------------------------------------------------------------------
  const input = (name, label, attrs = {}) => h('label', { class: 'field' }, h('span', {}, label),
    h('input', { name, value: st.f[name], autocomplete: 'off', ...attrs }));
  const modality = h('select', { name: 'modality' }, h('option', { value: '' }, 'Any'),
    MODALITIES.map((m) => h('option', { value: m, selected: st.f.modality === m }, m)));
  const site = h('select', { name: 'site' }, h('option', { value: '' }, 'All sites'),
    h('option', { value: 'local', selected: st.f.site === 'local' }, 'This site only'));
  const priority = h('select', { name: 'priority' }, h('option', { value: '' }, 'Any'),
    h('option', { value: 'stroke', selected: st.f.priority === 'stroke' }, 'Stroke priority only'));
  const statusSel = h('select', { name: 'status' }, h('option', { value: '' }, 'Any'),
    STATUSES.map(([v, label]) => h('option', { value: v, selected: st.f.status === v }, label)));
  const sort = h('select', { name: 'sort' },
    SORTS.map(([v, label]) => h('option', { value: v, selected: st.sort === v }, label)));
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Find studies' },
    input('patientName', 'Patient name', { type: 'search', placeholder: 'DOE^JANE' }),
    input('patientID', 'Patient ID', { type: 'search' }),
    input('from', 'From', { type: 'date' }),
    input('to', 'To', { type: 'date' }),
    h('label', { class: 'field' }, h('span', {}, 'Modality'), modality),
    h('label', { class: 'field' }, h('span', {}, 'Site'), site),
    h('label', { class: 'field' }, h('span', {}, 'Priority'), priority),
    h('label', { class: 'field' }, h('span', {}, 'Status'), statusSel),
    h('label', { class: 'field' }, h('span', {}, 'Sort'), sort),
    h('button', { type: 'submit' }, 'Search'));
  const status = h('p', { class: 'status', id: 'wl-status', role: 'status' });
  const alerts = h('div', { class: 'alerts', id: 'wl-alerts' });
  const list = h('div', { class: 'list', id: 'worklist' });
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' });
  // On a phone the filters fold away unless some are set.
  const anySet = Object.values(st.f).some(Boolean);
  const filters = h('details', { class: 'filterbox', open: anySet || !matchMedia('(max-width: 720px)').matches },
    h('summary', {}, 'Filters'), form);
  clear(app).append(h('section', { class: 'worklist' }, h('h1', {}, 'Worklist'), filters, alerts, status, list, pager));

  function readForm() {
    const d = new FormData(form);
    for (const k of Object.keys(st.f)) st.f[k] = String(d.get(k) || '');
    st.sort = String(d.get('sort') || 'priority');
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(st.f)) if (v) p.set(k, v);
    if (st.sort !== 'priority') p.set('sort', st.sort);
    history.replaceState(null, '', `/worklist${p.toString() ? `?${p}` : ''}`);
  }
  form.addEventListener('submit', (e) => { e.preventDefault(); readForm(); st.page = 0; load(); });
  for (const sel of [sort, priority, statusSel]) sel.addEventListener('change', () => { readForm(); st.page = 0; draw(); });
  for (const sel of [modality, site]) sel.addEventListener('change', () => { readForm(); st.page = 0; load(); });

  // --- loading ---------------------------------------------------------------------------
  async function loadArrivals() {
    try {
      const a = await json('/api/v1/arrivals?limit=1000');
      st.arrivals = new Map((a || []).map((x) => [x.study_uid, x]));
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 403) throw e;
      st.arrivals = new Map(); // not allowed to see arrivals: nothing stands out
    }
  }

  async function load() {
    const seq = ++st.seq;
    status.textContent = 'Searching…';
    list.setAttribute('aria-busy', 'true');
    try {
      const [res] = await Promise.all([json(`/api/v1/search?${searchQuery(st.f)}`), loadArrivals()]);
      if (seq !== st.seq) return; // a newer search is under way
      st.studies = res.studies || [];
      st.sites = res.sites || [];
      st.complete = res.complete !== false;
      for (const s of st.sites) if (!s.local) st.siteNames.add(s.site);
      refreshSites();
      draw();
    } catch (e) {
      if (seq !== st.seq) return;
      status.textContent = '';
      clear(list).append(h('p', { class: 'error', role: 'alert' }, `The search failed: ${e.message}`));
    } finally {
      if (seq === st.seq) list.removeAttribute('aria-busy');
    }
  }

  function refreshSites() {
    const have = new Set([...site.options].map((o) => o.value));
    for (const name of [...st.siteNames].sort()) {
      if (!have.has(name)) site.append(h('option', { value: name, selected: st.f.site === name }, name));
    }
  }

  // --- drawing ---------------------------------------------------------------------------
  function visible() {
    let rows = st.studies;
    if (st.f.site && st.f.site !== 'local') rows = rows.filter((s) => (s.sites || []).includes(st.f.site));
    if (st.f.priority === 'stroke') {
      rows = rows.filter((s) => (st.arrivals.get(s.study_instance_uid)?.priority ?? -1) >= URGENT_PRIORITY);
    }
    if (st.f.status) rows = rows.filter((s) => hasStatus(s, st.f.status, st.arrivals));
    return [...rows].sort(sorter(st.sort, st.arrivals));
  }

  function siteLine() {
    const down = st.sites.filter((s) => s.status !== 'ok');
    const here = st.sites.find((s) => s.local);
    const parts = [];
    if (here) parts.push(`${here.site} (this site)`);
    for (const s of st.sites.filter((x) => !x.local && x.status === 'ok')) parts.push(s.site);
    const line = [`Sites searched: ${parts.join(', ') || 'none'}`];
    if (down.length) line.push(`not answering: ${down.map((s) => `${s.site} (${s.status})`).join(', ')}`);
    const full = st.sites.filter((s) => s.count >= PER_SITE).map((s) => s.site);
    if (full.length) line.push(`more than ${PER_SITE} studies at ${full.join(', ')}: narrow the filters`);
    return { text: line.join(' · '), down };
  }

  function row(s) {
    const arrival = st.arrivals.get(s.study_instance_uid);
    const urgent = arrival && arrival.priority >= URGENT_PRIORITY;
    const name = personName(s.patient_name) || '(no name)';
    const arriving = arrival && !arrival.complete_ms;
    const cls = ['study', urgent ? 'urgent' : '', st.fresh.has(s.study_instance_uid) ? 'fresh' : ''].join(' ').trim();
    return h('tr', { class: cls, dataset: { uid: s.study_instance_uid, site: s.site || '' } },
      h('td', { 'data-label': 'Priority', class: 'prio' },
        urgent ? h('span', { class: 'badge urgent', title: `priority ${arrival.priority} from ${arrival.from_peer}` }, 'STROKE')
          : arrival ? h('span', { class: 'badge' }, `from ${arrival.from_peer}`) : ''),
      h('td', { 'data-label': 'Patient', class: 'patient' },
        h('a', { href: viewUrl(s), class: 'open' }, name),
        ohifUrl(s) ? h('a', { href: ohifUrl(s), class: 'ohif', title: 'Open in OHIF' }, 'OHIF') : '',
        h('small', {}, [s.patient_id, isoDate(s.patient_birth_date), s.patient_sex].filter(Boolean).join(' · '))),
      h('td', { 'data-label': 'Date' }, `${isoDate(s.study_date)} ${shortTime(s.study_time)}`.trim()),
      h('td', { 'data-label': 'Modality' }, (s.modalities || []).join(', ')),
      h('td', { 'data-label': 'Description' }, s.study_description || ''),
      h('td', { 'data-label': 'Images' },
        `${s.series ?? '?'} series, ${s.instances ?? '?'} images`,
        arriving ? h('small', { class: 'arriving' }, ` arriving (${arrival.manifest_instances} expected)`) : '',
        arriving && arrival.manifest_instances ? h('progress', {
          max: String(arrival.manifest_instances), value: String(Math.min(s.instances || 0, arrival.manifest_instances)),
          'aria-label': `${s.instances || 0} of ${arrival.manifest_instances} images received`,
        }) : ''),
      h('td', { 'data-label': 'Site' }, h('span', { class: s.local ? 'site here' : 'site remote' },
        s.local ? `${s.site || ''} (here)` : (s.site || '')),
      (s.sites || []).length > 1 ? h('small', {}, ` also ${(s.sites || []).slice(1).join(', ')}`) : ''));
  }

  function draw() {
    const rows = visible();
    const pages = Math.max(1, Math.ceil(rows.length / PAGE));
    st.page = Math.min(st.page, pages - 1);
    const shown = rows.slice(st.page * PAGE, (st.page + 1) * PAGE);
    const line = siteLine();
    status.textContent = `${rows.length} ${rows.length === 1 ? 'study' : 'studies'}. ${line.text}`;
    status.classList.toggle('warn', line.down.length > 0);
    clear(list);
    if (!rows.length) {
      list.append(h('p', { class: 'empty' }, 'No studies match.'));
    } else {
      list.append(h('table', { class: 'studies' },
        h('thead', {}, h('tr', {}, [['', 'priority'], ['Patient', 'name'], ['Date', 'date-desc'], ['Modality'],
          ['Description'], ['Images'], ['Site']].map(([t, by]) => h('th', {
          scope: 'col', 'aria-sort': by && st.sort === by ? (by === 'name' ? 'ascending' : 'descending') : null,
        }, by ? h('button', { type: 'button', class: 'sort', dataset: { sort: by }, title: `Sort by ${t || 'priority'}`,
          onclick: () => { sort.value = by; readForm(); st.page = 0; draw(); } }, t || 'Priority') : t)))),
        h('tbody', {}, shown.map(row))));
    }
    clear(pager);
    if (pages > 1) {
      pager.append(
        h('button', { type: 'button', disabled: st.page === 0, onclick: () => { st.page--; draw(); } }, '‹ Previous'),
        h('span', {}, `${st.page * PAGE + 1}–${st.page * PAGE + shown.length} of ${rows.length}`),
        h('button', { type: 'button', disabled: st.page >= pages - 1, onclick: () => { st.page++; draw(); } }, 'Next ›'));
    }
  }

  // --- live updates ----------------------------------------------------------------------
  let reloadTimer = null;
  function soon() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(load, 700);
  }
  function urgentAlert(d) {
    const link = h('a', { href: `/view/${encodeURIComponent(d.study_uid)}` }, 'open');
    alerts.append(h('div', { class: 'alert urgent', role: 'alert' },
      `Stroke-priority study arrived from ${d.from_peer || 'a peer'} (${d.instances} images) `, link));
  }
  const events = new EventSource('/api/v1/events');
  events.addEventListener('study', (m) => {
    const d = JSON.parse(m.data);
    st.fresh.add(d.study_uid);
    soon();
  });
  events.addEventListener('arrival', (m) => {
    const d = JSON.parse(m.data);
    st.fresh.add(d.study_uid);
    if (d.priority >= URGENT_PRIORITY) urgentAlert(d);
    else toast(`Study complete from ${d.from_peer}`);
    soon();
  });
  events.addEventListener('open', () => status.classList.remove('offline'));
  events.addEventListener('error', () => status.classList.add('offline'));
  // A fallback for studies this stream does not announce (another node's, granted ones).
  const every = setInterval(() => { if (!document.hidden) load(); }, 60000);
  window.addEventListener('pagehide', () => { events.close(); clearInterval(every); });

  load();
  return { reload: load };
}
