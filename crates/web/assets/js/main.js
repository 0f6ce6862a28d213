// The app's entry: checks the session, then shows the screen the URL names.
//   /, /worklist            the worklist (filters in the query string)
//   /view/{study}[?peer=P]  the viewer (a study held here, or at peer P through this site)
//   /viewer?requestType=STUDY&studyUID=…[&patientID=…]   IHE Invoke Image Display launch
//   /viewer?requestType=PATIENT&patientID=…               the patient's studies
//   /alerts                 the user's alerts, subscriptions and rules (issue 6, js/alertspage.js)
//   /admin, /admin/{section}  the admin console (issue 6, js/admin/console.js)
//   /upload/{id}/{secret}   a guest upload link's page (no session: the link is the credential)
//   /s/{id}                 a share link's viewer (no session: the link's pass cookie)
//   /login?next=, /setup?token=, /account   logging in, first start and password links, the
//                           password screen (issue 6, js/login.js)

import { ApiError, json, logout, me, prefetch, setCsrf } from './api.js';
import { clear, h, toast } from './dom.js';
import { worklist } from './worklist.js';
import { loadPreview, viewer } from './viewer.js';
import { startAlerts } from './alerts.js';

const app = document.getElementById('app');

function fail(e) {
  document.getElementById('preview')?.remove(); // the viewer's first image (viewer.css)
  const offline = !navigator.onLine || e instanceof TypeError; // fetch's network failure
  clear(app).append(h('p', { class: 'error', role: 'alert' }, offline
    ? 'You are offline: Vesalius needs the network to show studies (nothing is kept on this device).'
    : `Vesalius: ${e.message || e}`));
}

/**
 * Issue 6: a user of several organisations acts in one at a time; the header's switcher moves
 * the session to another (`POST /api/v1/auth/session/org`), then the page loads again for it
 * (the worklist lists the new organisation's studies; a study on screen may not be visible
 * there, so the viewer goes back to the worklist).
 */
function orgSwitcher(who) {
  const label = h('label', { for: 'org-switch', class: 'visually-hidden' }, 'Organisation');
  const select = h('select', { id: 'org-switch', class: 'org-switch' },
    who.orgs.map((o) => h('option', { value: o.id, selected: o.current }, `${o.name} (${o.role})`)));
  select.addEventListener('change', async () => {
    select.disabled = true;
    try {
      await json('/api/v1/auth/session/org', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ org: select.value }),
      });
      if (location.pathname.startsWith('/view/') || location.pathname === '/viewer') location.assign('/worklist');
      else location.reload();
    } catch (e) {
      select.value = who.org;
      select.disabled = false;
      toast(`Could not switch organisation: ${e.message || e}`, 'error');
    }
  });
  return [label, select];
}

function showUser(who) {
  const name = (who.actor && (who.actor.name || who.actor.id)) || 'unknown';
  const several = Array.isArray(who.orgs) && who.orgs.length > 1;
  document.getElementById('who-name').textContent = several
    ? `${name} ·`
    : `${name} · ${who.org || ''}${who.role ? ` (${who.role})` : ''}`;
  // Administrators, and the server itself on a site without required credentials.
  // Site administrators (issue 6) administer every organisation, whatever their role here.
  if ((who.role === 'admin' || who.site_admin || who.actor?.kind === 'system') && !document.getElementById('admin-link')) {
    const a = h('a', { href: '/admin', id: 'admin-link' }, 'Admin');
    document.getElementById('who-name').after(a);
  }
  // Shown by startAlerts once the user's alerts answered (users who may have alerts).
  if (!document.getElementById('alerts-link')) {
    const a = h('a', { href: '/alerts', id: 'alerts-link', hidden: true,
      'aria-current': location.pathname === '/alerts' ? 'page' : null }, 'Alerts');
    document.getElementById('who-name').after(a);
  }
  // Right after the name: "name · [organisation (role)]".
  if (several && !document.getElementById('org-switch')) document.getElementById('who-name').after(...orgSwitcher(who));
  document.getElementById('who').hidden = false;
  document.getElementById('logout').addEventListener('click', () => logout());
  // The header's height (taller on a phone, where its links wrap), for what sits under it: the
  // alert panel (alerts.css). Set through the CSSOM, which the CSP allows (no style attribute).
  const bar = document.querySelector('header.bar');
  if (bar && 'ResizeObserver' in window) {
    new ResizeObserver(() => document.documentElement.style.setProperty('--bar-h', `${bar.offsetHeight}px`)).observe(bar);
  }
}

/** Adds the admin console's stylesheet (tables, forms, cards on a phone) to the page. */
function adminStyles() {
  const css = document.createElement('link');
  css.rel = 'stylesheet';
  css.href = new URL('../admin.css', import.meta.url).href;
  document.head.append(css);
}

/** IHE IID (ITI TF-1 42): `studyUID` (one or more, comma-separated) or `patientID`. */
function invokeImageDisplay(q) {
  const type = (q.get('requestType') || (q.get('studyUID') ? 'STUDY' : 'PATIENT')).toUpperCase();
  const studies = (q.get('studyUID') || '').split(',').map((s) => s.trim()).filter(Boolean);
  const patient = q.get('patientID') || '';
  if (type === 'STUDY' && studies.length) {
    return viewer(app, { study: studies[0], others: studies.slice(1), expectPatient: patient });
  }
  if (patient) {
    location.replace(`/worklist?patientID=${encodeURIComponent(patient)}`);
    return null;
  }
  throw new Error('the launch URL names no study (studyUID) and no patient (patientID)');
}

async function boot() {
  // Guest pages (issue 6) need no session: the server answered the shell after checking the link.
  // The link pages load their modules only there (the worklist and viewer never need them).
  if (/^\/upload\/[^/]+\/[^/]+\/?$/.test(location.pathname)) {
    const { uploadPage } = await import('./upload.js');
    return uploadPage(app);
  }
  if (/^\/s\/[^/]+\/?$/.test(location.pathname)) {
    const { sharePage } = await import('./share.js');
    return sharePage(app);
  }
  // Logging in, setting up and the password screen (issue 6): before (and without) a session.
  const screens = { '/login': 'loginPage', '/setup': 'setupPage', '/account': 'accountPage' };
  if (screens[location.pathname]) {
    const mod = await import('./login.js');
    return mod[screens[location.pathname]](app, new URLSearchParams(location.search));
  }
  // The viewer's first question (the study's series) goes out with the session check.
  const viewing = /^\/view\/([^/]+)$/.exec(location.pathname);
  let early = null; // the viewer's first image, on its way
  if (viewing && !new URLSearchParams(location.search).get('peer')) {
    const studyUrl = `/dicom-web/studies/${encodeURIComponent(decodeURIComponent(viewing[1]))}`;
    prefetch(`${studyUrl}/series`, 'application/dicom+json');
    early = loadPreview(studyUrl);
  }
  let who;
  try {
    who = await me();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return; // on the way to /login
    fail(e);
    return;
  }
  if (who.must_change_password) {
    location.assign(`/account?next=${encodeURIComponent(location.pathname + location.search)}`);
    return;
  }
  setCsrf(who.csrf);
  showUser(who);
  const path = location.pathname;
  // Issue 6: the user's alerts on every page (the alerts page lists them itself).
  if (path !== '/alerts') startAlerts();
  const q = new URLSearchParams(location.search);
  if (path === '/') history.replaceState(null, '', `/worklist${location.search}`);
  if (path === '/' || path === '/worklist') return worklist(app, q, who);
  if (path.startsWith('/view/')) {
    const study = decodeURIComponent(path.slice('/view/'.length));
    return viewer(app, { study, peer: q.get('peer') || '', expectPatient: q.get('patientID') || '', early });
  }
  if (path === '/viewer') return invokeImageDisplay(q);
  if (path === '/alerts') {
    // The console's tables and forms, loaded only here and on /admin.
    adminStyles();
    const { alertsPage } = await import('./alertspage.js');
    return alertsPage(app, who);
  }
  if (path === '/admin' || path.startsWith('/admin/')) {
    // Loaded only here: the console's modules and stylesheet are not part of the other pages.
    adminStyles();
    const { adminConsole } = await import('./admin/console.js');
    return adminConsole(app, decodeURIComponent(path.slice('/admin/'.length)), who);
  }
  throw new Error(`no page at ${path}`);
}

boot().catch(fail);

// The app shell works offline and the app can be installed (docs/web.md, "Progressive web app").
if ('serviceWorker' in navigator) navigator.serviceWorker.register('/sw.js').catch(() => {});
