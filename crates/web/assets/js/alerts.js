// Alerts in the app (issue 6, docs/alerts.md): the signed-in user's open alerts
// (GET /api/v1/alerts) and the new ones the event stream brings (`event: alert`, for this user
// only) are shown in a panel on every page, each with its link to the viewer and an
// acknowledge button (POST /api/v1/alerts/{id}/acknowledge). A new alert also beeps (WebAudio,
// no audio file) and shows a browser notification when the user allows them. The panel and the
// header link lead to the alerts page (`/alerts`, js/alertspage.js), which lists the same
// alerts itself instead of the panel.

import { json } from './api.js';
import { h } from './dom.js';

let panel = null;
let audio = null;

/** What each kind of rule watches, and what its threshold means (docs/alerts.md, "Rules"). */
export const KINDS = {
  'stroke-arrival': { name: 'Stroke-priority arrival', threshold: 'Route priority at least', default: '50', admin: false },
  'study-complete': { name: 'Study complete from a peer', threshold: null, admin: false },
  'transfer-parked': { name: 'Transfer parked', threshold: null, admin: true },
  'peer-down': { name: 'Peer unreachable', threshold: 'Unreachable for (minutes)', default: '5', admin: true },
  'disk-low': { name: 'Disk space low', threshold: 'Free space under (bytes)', default: '10000000000 (10 GB)', admin: true },
  'certificate-expiry': { name: 'HTTPS certificate expiring', threshold: 'Days before it expires', default: '14', admin: true },
};

/** `Stroke-priority arrival` for `stroke-arrival` (the code itself when unknown). */
export function kindName(kind) {
  return KINDS[kind]?.name || kind;
}

/** A rule's threshold in words: `priority ≥ 100`, `after 5 min`, `under 10.0 GB`, `—`. */
export function thresholdText(r) {
  const t = Number(r.threshold);
  switch (r.kind) {
    case 'stroke-arrival': return `priority ≥ ${t}`;
    case 'peer-down': return `after ${t} min`;
    case 'disk-low': return `under ${(t / 1e9).toFixed(t % 1e9 ? 1 : 0)} GB`;
    case 'certificate-expiry': return `${t} days before`;
    default: return '—';
  }
}

/** Open alerts the floating panel shows at once (newest first); the rest are counted. */
export const PANEL_MAX = 3;

/**
 * Shows the newest PANEL_MAX alerts of the panel and hides the others (a phone's screen or a
 * night of arrivals would otherwise be covered by them); the panel's link says how many more
 * are open.
 */
function fit() {
  if (!panel) return;
  const items = [...panel.querySelectorAll('.live-alert')];
  items.forEach((el, i) => { el.hidden = i >= PANEL_MAX; });
  const more = Math.max(0, items.length - PANEL_MAX);
  panel.querySelector('a.all').textContent = more ? `All alerts and subscriptions (${more} more open)` : 'All alerts and subscriptions';
}

function box() {
  if (!panel) {
    panel = h('section', { id: 'live-alerts', class: 'live-alerts', 'aria-label': 'Alerts', 'aria-live': 'assertive' },
      h('a', { class: 'all', href: '/alerts' }, 'All alerts and subscriptions'));
    // Right under the header: on a phone the panel takes its place in the page there, above the
    // worklist, rather than floating over its first rows (alerts.css).
    const bar = document.querySelector('body > header.bar');
    if (bar) bar.after(panel);
    else document.body.append(panel);
  }
  return panel;
}

/** Two short tones. Browsers may keep audio off until the user touched the page. */
export function beep() {
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!Ctx) return false;
  try {
    audio = audio || new Ctx();
    if (audio.state === 'suspended' && audio.resume) audio.resume().catch(() => {});
    const t0 = audio.currentTime || 0;
    for (const [at, freq] of [[0, 880], [0.3, 660]]) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.type = 'square';
      osc.frequency.value = freq;
      gain.gain.value = 0.15;
      osc.connect(gain);
      gain.connect(audio.destination);
      osc.start(t0 + at);
      osc.stop(t0 + at + 0.22);
    }
    return true;
  } catch {
    return false;
  }
}

/** A browser notification for `a`, asking for permission the first time. */
export async function notify(a) {
  if (!('Notification' in window)) return;
  let perm = window.Notification.permission;
  if (perm === 'default' && window.Notification.requestPermission) {
    try { perm = await window.Notification.requestPermission(); } catch { perm = 'denied'; }
  }
  if (perm !== 'granted') return;
  const n = new window.Notification(a.title, { body: 'Vesalius alert: open it in the app', tag: a.id, requireInteraction: true });
  n.onclick = () => { window.focus(); if (a.link) location.assign(a.link); };
}

function time(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function show(a) {
  const list = box();
  if (list.querySelector(`[data-id="${CSS.escape(a.id)}"]`)) return null;
  const ack = h('button', { type: 'button', class: 'ack' }, 'Acknowledge');
  const el = h('div', { class: `live-alert kind-${a.kind}`, role: 'alert', dataset: { id: a.id, chain: a.chain } },
    h('strong', { class: 'title' }, a.title),
    h('small', { class: 'when' }, ` ${time(a.created_ms)}${a.step ? ` · escalated (${a.step})` : ''} `),
    a.link ? h('a', { class: 'open', href: a.link }, a.study_uid ? 'Open study' : 'Open') : '',
    ack);
  ack.addEventListener('click', async () => {
    ack.disabled = true;
    try {
      await json(`/api/v1/alerts/${encodeURIComponent(a.id)}/acknowledge`, { method: 'POST' });
      for (const x of list.querySelectorAll(`[data-chain="${CSS.escape(a.chain)}"]`)) x.remove();
      fit();
    } catch (e) {
      ack.disabled = false;
      el.append(h('small', { class: 'error' }, ` ${e.message}`));
    }
  });
  list.querySelector('a.all').after(el);
  fit();
  return el;
}

/**
 * Shows the open alerts and listens for new ones; quiet for users without alerts. With
 * `onAlert` (the alerts page) there is no panel: every alert event, new or acknowledged, goes to
 * `onAlert(alert)`, and a new one still beeps and notifies.
 */
export async function startAlerts({ onAlert } = {}) {
  let open;
  try {
    // The newest open alerts (a page of 200; older open ones are on the Alerts page).
    open = (await json('/api/v1/alerts')).alerts;
  } catch {
    return; // not a user who may have alerts (403), or the server is away
  }
  const link = document.getElementById('alerts-link');
  if (link) link.hidden = false;
  if (!onAlert) for (const a of [...open].reverse()) show(a);
  const seen = new Set(open.map((a) => a.id));
  const events = new EventSource('/api/v1/events');
  events.addEventListener('alert', (m) => {
    const a = JSON.parse(m.data).alert;
    if (!a) return;
    if (onAlert) {
      onAlert(a);
      if (!a.acknowledged_ms && !seen.has(a.id)) {
        seen.add(a.id);
        beep();
        notify(a);
      }
      return;
    }
    if (a.acknowledged_ms) {
      panel?.querySelector(`[data-id="${CSS.escape(a.id)}"]`)?.remove();
      fit();
      return;
    }
    if (show(a)) {
      beep();
      notify(a);
    }
  });
  window.addEventListener('pagehide', () => events.close());
}
