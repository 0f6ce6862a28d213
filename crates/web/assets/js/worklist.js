// The worklist: studies the user may see, here and at the peer sites (GET /api/v1/search,
// docs/api-exchange.md "Federated search"), with filters, sort and paging, all done by the
// server: each page asks the search for that page only. Each row carries its study's arrival
// from a peer (`arrival`), which flags stroke-priority studies; a server-sent event stream
// (GET /api/v1/events) reloads the page shown when studies of the user's organisation change.

import { json } from './api.js';
import { clear, h, toast } from './dom.js';
import { isoDate, personName, shortTime } from './pixels.js';
import { pager } from './admin/ui.js';

/** Rows per page. */
const PAGE = 25;
/** The deepest the search pages (`offset + limit`, docs/api-exchange.md). */
const DEEPEST = 500;
/** Arrivals with this route priority or more stand out (stroke routes use 100). */
export const URGENT_PRIORITY = 50;
const MODALITIES = ['CT', 'MR', 'CR', 'DX', 'US', 'PT', 'NM', 'XA', 'MG', 'RF', 'OT'];
const SORTS = [
  ['priority', 'Priority, then newest'],
  ['date-desc', 'Newest first'],
  ['date-asc', 'Oldest first'],
  ['name', 'Patient name'],
];
/** The search's `orderby` of each sort. */
const ORDERBY = { priority: 'priority', 'date-desc': '-StudyDate', 'date-asc': 'StudyDate', name: 'PatientName' };

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

/**
 * Delivery states of the status filter (the search's `status`: this site's arrivals from
 * peers; the page's `here` is the search's `none`).
 */
const STATUSES = [
  ['arriving', 'Arriving from a peer'],
  ['complete', 'Received complete'],
  ['here', 'Not received from a peer'],
];

/**
 * The search's query string for filters `f`, sort `sort` and page `page` (from 0). The server
 * filters (also by priority, status and site), sorts and pages: docs/web.md, "Worklist".
 */
export function searchQuery(f, sort, page) {
  const p = new URLSearchParams();
  if (f.patientName) p.set('PatientName', prefix(f.patientName));
  if (f.patientID) p.set('PatientID', prefix(f.patientID));
  if (f.from || f.to) p.set('StudyDate', `${dicomDate(f.from)}-${dicomDate(f.to)}`);
  if (f.modality) p.set('ModalitiesInStudy', f.modality);
  if (f.priority === 'stroke') p.set('priority', String(URGENT_PRIORITY));
  if (f.status) p.set('status', f.status === 'here' ? 'none' : f.status);
  if (f.site === 'local') p.set('scope', 'local');
  else if (f.site) p.set('site', f.site);
  p.set('orderby', ORDERBY[sort] || 'priority');
  p.set('limit', String(PAGE));
  p.set('offset', String(page * PAGE));
  // Every site is asked 500 deep, so the total is known unless a site holds more.
  p.set('count', 'true');
  return p.toString();
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
    total: null,
    more: false,
    // Which pager button had the focus when a page was asked (kept there when it is drawn).
    focus: null,
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
  const pages = h('div', { class: 'pager-row', id: 'wl-pages' });
  // On a phone the filters fold away unless some are set.
  const anySet = Object.values(st.f).some(Boolean);
  const filters = h('details', { class: 'filterbox', open: anySet || !matchMedia('(max-width: 720px)').matches },
    h('summary', {}, 'Filters'), form);
  clear(app).append(h('section', { class: 'worklist' }, h('h1', {}, 'Worklist'), filters, alerts, status, list, pages));

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
  for (const sel of [sort, priority, statusSel, modality, site]) {
    sel.addEventListener('change', () => { readForm(); st.page = 0; load(); });
  }

  // --- loading ---------------------------------------------------------------------------
  /** Asks the search for the page shown (`st.page`); a page emptied by changes goes back to the last one. */
  async function load() {
    const seq = ++st.seq;
    status.textContent = 'Searching…';
    list.setAttribute('aria-busy', 'true');
    try {
      const res = await json(`/api/v1/search?${searchQuery(st.f, st.sort, st.page)}`);
      if (seq !== st.seq) return; // a newer search is under way
      if (!(res.studies || []).length && st.page > 0) {
        // Studies left the list (or the filters changed): show the last page there is.
        st.page = res.total ? Math.floor((res.total - 1) / PAGE) : 0;
        load();
        return;
      }
      st.studies = res.studies || [];
      st.sites = res.sites || [];
      st.complete = res.complete !== false;
      st.total = typeof res.total === 'number' ? res.total : null;
      st.more = Boolean(res.more);
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
  function siteLine() {
    const down = st.sites.filter((s) => s.status !== 'ok');
    const here = st.sites.find((s) => s.local);
    const parts = [];
    if (here) parts.push(`${here.site} (this site)`);
    for (const s of st.sites.filter((x) => !x.local && x.status === 'ok')) parts.push(s.site);
    const line = [`Sites searched: ${parts.join(', ') || 'none'}`];
    if (down.length) line.push(`not answering: ${down.map((s) => `${s.site} (${s.status})`).join(', ')}`);
    return { text: line.join(' · '), down };
  }

  /**
   * This site's transfers of the study (`outgoing`, docs/web.md "Worklist"): "sending to hub
   * 120/300" with a bar, "delivered to hub ✓ verified" once the receiver confirmed the study,
   * "sending to hub stopped" when a job was parked.
   */
  function outgoing(s) {
    return (s.outgoing || []).map((o) => {
      const to = o.to || o.queue;
      if (o.state === 'delivered') {
        const verified = o.verified >= o.delivered ? ' ✓ verified' : ' ✓';
        return h('small', { class: 'outgoing delivered', dataset: { to, state: o.state }, title: `${o.delivered} images, receipt from ${to}` },
          ` delivered to ${to}${verified}`);
      }
      const stopped = o.state === 'stopped';
      return h('small', { class: `outgoing ${o.state}`, dataset: { to, state: o.state }, title: o.error || '' },
        stopped ? ` sending to ${to} stopped (${o.parked} not delivered)` : ` sending to ${to} ${o.delivered}/${o.total}`,
        stopped ? '' : h('progress', {
          max: String(o.total || 1), value: String(o.delivered),
          'aria-label': `${o.delivered} of ${o.total} images sent to ${to}`,
        }));
    });
  }

  function row(s) {
    const arrival = s.arrival;
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
        }) : '',
        ...outgoing(s)),
      h('td', { 'data-label': 'Site' }, h('span', { class: s.local ? 'site here' : 'site remote' },
        s.local ? `${s.site || ''} (here)` : (s.site || '')),
      (s.sites || []).length > 1 ? h('small', {}, ` also ${(s.sites || []).slice(1).join(', ')}`) : ''));
  }

  /** How many studies match, as far as the search knows. */
  function count() {
    const shown = st.page * PAGE + st.studies.length;
    if (st.total === null) return `More than ${shown} studies`;
    return `${st.total} ${st.total === 1 ? 'study' : 'studies'}${st.complete ? '' : ' or more'}`;
  }

  /** "Studies 26–50 of 73" (or "of more than 50" when the total is not known). */
  function where() {
    const from = st.page * PAGE + 1;
    const to = st.page * PAGE + st.studies.length;
    if (st.total === null) return `Studies ${from}–${to} of more than ${to}`;
    return `Studies ${from}–${to} of ${st.total}${st.complete ? '' : ' or more (a site did not answer)'}`;
  }

  function draw() {
    const shown = st.studies;
    const line = siteLine();
    status.textContent = `${count()}. ${line.text}`;
    status.classList.toggle('warn', line.down.length > 0);
    // What is shown (for scripts and tests: the sort and page of the rows drawn).
    list.dataset.sort = st.sort;
    list.dataset.page = String(st.page);
    clear(list);
    if (!shown.length) {
      list.append(h('p', { class: 'empty' }, 'No studies match.'));
    } else {
      list.append(h('table', { class: 'studies' },
        h('thead', {}, h('tr', {}, [['', 'priority'], ['Patient', 'name'], ['Date', 'date-desc'], ['Modality'],
          ['Description'], ['Images'], ['Site']].map(([t, by]) => h('th', {
          scope: 'col', 'aria-sort': by && st.sort === by ? (by === 'name' ? 'ascending' : 'descending') : null,
        }, by ? h('button', { type: 'button', class: 'sort', dataset: { sort: by }, title: `Sort by ${t || 'priority'}`,
          onclick: () => { sort.value = by; readForm(); st.page = 0; load(); } }, t || 'Priority') : t)))),
        h('tbody', {}, shown.map(row))));
    }
    clear(pages);
    // The search pages at most 500 deep: beyond, the filters must narrow the list.
    const deeper = (st.page + 2) * PAGE <= DEEPEST;
    if (st.page > 0 || st.more) {
      const go = (page, focus) => () => { st.page = page; st.focus = focus; load(); };
      pages.append(pager('Studies', {
        status: where(),
        prev: st.page > 0 ? go(st.page - 1, 'prev') : null,
        next: st.more && deeper ? go(st.page + 1, 'next') : null,
        focus: st.focus,
      }));
      if (st.more && !deeper) pages.append(h('p', { class: 'note-text' }, `Only the first ${DEEPEST} studies are paged: narrow the filters.`));
    }
    st.focus = null;
  }

  // --- live updates ----------------------------------------------------------------------
  // At most one search per 0.7 s while events keep coming (a transfer's steps, a study
  // arriving): the first event schedules it, the following ones wait for it.
  let reloadTimer = null;
  function soon() {
    if (reloadTimer) return;
    reloadTimer = setTimeout(() => { reloadTimer = null; load(); }, 700);
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
  events.addEventListener('transfer', (m) => {
    const d = JSON.parse(m.data);
    if (d.state === 'delivered') toast(`Delivered to ${d.to}`);
    else if (d.state === 'stopped') toast(`Sending to ${d.to} stopped`);
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
