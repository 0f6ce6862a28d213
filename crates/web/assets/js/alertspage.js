// The alerts page (/alerts, issue 6, docs/alerts.md "In the app"), for every user who may have
// alerts: their alerts (open and acknowledged: GET /api/v1/alerts?all=true, 50 at a time,
// "Older alerts" adding the next page by the answer's cursor) with the viewer
// link, acknowledge and the webhook / e-mail deliveries; their subscriptions with unsubscribe;
// a form to subscribe to one of the organisation's rules (in the app, a webhook or e-mail), a
// new webhook's secret shown once; and the rules they may subscribe to (administrators' kinds
// are listed to administrators only: the API decides). Rules are made in the admin console
// (/admin/alerts). Built from the console's blocks (js/admin/ui.js): labelled fields, tables
// that become cards on a phone, text only.

import { json } from './api.js';
import { clear, h, toast } from './dom.js';
import { kindName, startAlerts, thresholdText } from './alerts.js';
import { act, field, form, list, once, section, send, table, time } from './admin/ui.js';

const enc = encodeURIComponent;

const CHANNELS = [['in-app', 'In the app'], ['webhook', 'Webhook (signed HTTP POST)'], ['email', 'E-mail']];

function channelText(s) {
  if (s.channel === 'in-app') return 'In the app';
  if (s.channel === 'webhook') return ['Webhook ', h('span', { class: 'wrap' }, s.target)];
  return `E-mail ${s.target || '(your address in the directory)'}`;
}

/** The alerts page in `app` for `who` (from `GET /api/v1/auth/me`). */
export function alertsPage(app, who) {
  document.title = 'Vesalius · Alerts';
  document.body.classList.add('admin');
  const page = h('div', { class: 'admin-console alerts-page' });
  let reloadHistory = async () => {};

  const history = historySection((r) => { reloadHistory = r; });
  const subs = subscriptionsSection();
  const rulesSec = section('Rules you may subscribe to', async (body) => {
    const rules = await json('/api/v1/alerts/rules');
    const rows = table([
      ['Rule', (r) => h('span', {}, h('strong', {}, r.name), h('small', {}, kindName(r.kind)))],
      ['When', (r) => thresholdText(r)],
      ['Escalates to', (r) => (r.escalation.length
        ? `${list(r.escalation)} after ${Math.round(r.escalate_after_ms / 1000)} s each`
        : 'nobody')],
      ['State', (r) => h('span', { class: `badge ${r.enabled ? 'ok' : 'warn'}` }, r.enabled ? 'enabled' : 'disabled')],
      ['', (r) => {
        const b = act('Subscribe…', async () => pick(r.id));
        b.setAttribute('aria-label', `Subscribe to ${r.name}`);
        return b;
      }],
    ], rules, 'No rules yet: an administrator makes them in the admin console.', { 'aria-label': 'Rules' });
    clear(body).append(rows);
  });

  /** Puts rule `id` in the subscribe form and moves the focus there. */
  function pick(id) {
    const f = page.querySelector('form.subscribe');
    if (!f) return;
    f.elements.rule_id.value = id;
    f.scrollIntoView({ block: 'nearest' });
    f.elements.rule_id.focus();
  }

  page.append(
    h('h1', {}, 'Alerts'),
    h('p', { class: 'intro' }, 'Your alerts, and how they reach you: in the app (with a sound and a browser notification while Vesalius is open), by a signed webhook or by e-mail. ',
      who.role === 'admin' ? h('a', { href: '/admin/alerts' }, 'Manage the rules in the admin console.') : 'Administrators make the rules.'),
    history, subs, rulesSec,
  );
  clear(app).append(page);

  // New alerts and acknowledgements (this tab or another) refresh the history; no panel here.
  let timer = null;
  startAlerts({
    onAlert: () => {
      clearTimeout(timer);
      timer = setTimeout(() => reloadHistory(), 300);
    },
  });
}

/** Alerts per page of "My alerts"; a reload asks again for as many as were shown (≤ 500). */
const PAGE = 50;

function historySection(expose) {
  let wanted = PAGE;
  const root = section('My alerts', async (body, reload) => {
    expose(reload);
    // Newest first, a page at a time: "Older alerts" asks for the page after the oldest shown
    // (the answer's `next_before`) and adds it under the others, like the audit search.
    const shown = [];
    const load = async (before) => {
      const q = new URLSearchParams({ all: 'true', limit: String(before ? PAGE : wanted) });
      if (before) q.set('before', before);
      const r = await json(`/api/v1/alerts?${q}`);
      const first = shown.length;
      shown.push(...r.alerts);
      wanted = Math.min(500, Math.max(PAGE, shown.length));
      render(r.more ? r.next_before : null);
      if (before) {
        // Keyboard users go on where they were: the first row of the new page.
        const row = body.querySelectorAll('table[aria-label="My alerts"] tbody tr')[first];
        if (row) {
          row.tabIndex = -1;
          row.focus();
        }
      }
    };
    const render = (next) => {
      const open = shown.filter((a) => !a.acknowledged_ms).length;
      const rows = table([
        ['When', (a) => time(a.created_ms)],
        ['Alert', (a) => h('span', {}, h('strong', { class: 'title' }, a.title),
          h('small', {}, `${kindName(a.kind)}${a.step ? ` · escalated to you (step ${a.step})` : ''}`))],
        ['Study', (a) => (a.link
          ? h('a', { class: 'open', href: a.link, 'aria-label': `${a.study_uid ? 'Open the study in the viewer' : 'Open the worklist'}: ${a.title}` },
            a.study_uid ? 'Open in viewer' : 'Worklist')
          : '—')],
        ['State', (a) => (a.acknowledged_ms
          ? h('span', { class: 'state-ack' }, `Acknowledged by ${a.acknowledged_by || '?'} at ${time(a.acknowledged_ms)}`)
          : h('span', { class: 'state-open' }, 'Open'))],
        ['', (a) => actions(a, reload)],
      ], shown, 'No alerts yet.', { 'aria-label': 'My alerts' });
      // Rows carry their state, for the eye (a coloured edge) and for tests.
      rows.querySelectorAll('tbody tr').forEach((tr, i) => {
        const a = shown[i];
        tr.className = `alert-row ${a.acknowledged_ms ? 'acknowledged' : 'open'} kind-${a.kind}`;
        tr.dataset.id = a.id;
      });
      clear(body).append(h('p', { class: 'status', role: 'status', 'aria-live': 'polite' },
        `${shown.length} alert${shown.length === 1 ? '' : 's'} shown: ${open} open, ${shown.length - open} acknowledged${next ? '; older ones follow' : ''}.`), rows);
      if (next) {
        body.append(h('nav', { class: 'pager', 'aria-label': 'Older alerts' },
          act('Older alerts', () => load(next), { cls: 'pager-btn older' })));
      }
    };
    await load(null);
  });
  return root;
}

function actions(a, reload) {
  const box = h('div', { class: 'row-actions' });
  if (!a.acknowledged_ms) {
    const ack = act('Acknowledge', async () => {
      const r = await send('POST', `/api/v1/alerts/${enc(a.id)}/acknowledge`);
      toast(r.acknowledged ? 'Acknowledged.' : `Already acknowledged by ${r.alert.acknowledged_by}.`);
    }, { after: reload, cls: 'ack' });
    ack.setAttribute('aria-label', `Acknowledge: ${a.title}`);
    box.append(ack);
  }
  const out = h('div', { class: 'deliveries-out', 'aria-live': 'polite' });
  const more = act('Deliveries', async () => {
    const d = await json(`/api/v1/alerts/${enc(a.id)}/deliveries`);
    clear(out).append(d.length
      ? h('ul', { class: 'deliveries' }, d.map((x) => h('li', { class: x.state },
        `${x.channel} ${x.target}: ${x.state}, ${x.attempts} attempt${x.attempts === 1 ? '' : 's'}${x.last_error ? ` — ${x.last_error}` : ''}`)))
      : h('p', { class: 'empty' }, 'In the app only (no webhook or e-mail).'));
  }, { cls: 'small' });
  more.setAttribute('aria-label', `Deliveries of: ${a.title}`);
  box.append(more, out);
  return box;
}

function subscriptionsSection() {
  // A new webhook's secret survives the reload that follows its creation.
  const shown = h('div', { class: 'once-box', 'aria-live': 'polite' });
  return section('My subscriptions', async (body, reload) => {
    const [subs, rules] = await Promise.all([
      json('/api/v1/alerts/subscriptions'), json('/api/v1/alerts/rules')]);
    const ruleName = (id) => rules.find((r) => r.id === id)?.name || id;
    const rows = table([
      ['Rule', (s) => h('strong', {}, ruleName(s.rule_id))],
      ['Channel', (s) => channelText(s)],
      ['For', (s) => (s.escalation_only ? 'escalations to me only' : 'every alert')],
      ['Since', (s) => time(s.created_ms)],
      ['', (s) => {
        const b = act('Unsubscribe', () => send('DELETE', `/api/v1/alerts/subscriptions/${enc(s.id)}`),
          { confirmText: `Unsubscribe from ${ruleName(s.rule_id)} (${s.channel})?`, after: reload });
        b.setAttribute('aria-label', `Unsubscribe from ${ruleName(s.rule_id)} (${s.channel})`);
        return b;
      }],
    ], subs, 'You are not subscribed to any rule.', { 'aria-label': 'My subscriptions' });

    const target = field('Webhook URL', 'target', { type: 'url', placeholder: 'https://pager.example/hooks/vesalius', hint: 'An http(s) address outside the site\'s network.' });
    const secret = field('Webhook secret (empty: one is made for you)', 'secret', { type: 'password', autocomplete: 'new-password', minlength: 16, maxlength: 256 });
    const sub = form('Subscribe', [
      field('Rule', 'rule_id', {
        options: rules.length ? rules.map((r) => [r.id, `${r.name} (${kindName(r.kind)})`]) : [['', 'No rules yet']],
        required: true,
      }),
      field('Channel', 'channel', { options: CHANNELS, value: 'in-app' }),
      target,
      secret,
      field('Only when escalated to me', 'escalation_only', { type: 'checkbox' }),
    ], 'Subscribe', async (v, f, out) => {
      if (!v.rule_id) throw new Error('There is no rule to subscribe to yet.');
      const bodyOut = { rule_id: v.rule_id, channel: v.channel, escalation_only: v.escalation_only };
      if (v.channel !== 'in-app') bodyOut.target = v.target;
      if (v.channel === 'webhook' && v.secret) bodyOut.secret = v.secret;
      const made = await send('POST', '/api/v1/alerts/subscriptions', bodyOut);
      clear(shown);
      if (made.secret && !v.secret) {
        shown.append(once(`Webhook secret for ${ruleName(made.rule_id)}`, made.secret),
          h('p', { class: 'note-text' }, 'Your receiver checks each call\'s X-Vesalius-Signature (HMAC-SHA256 of "timestamp.body") with it.'));
      }
      f.reset();
      toast(`Subscribed to ${ruleName(made.rule_id)} (${made.channel}).`);
      await reload();
    }, { class: 'admin-form subscribe' });
    // The target fits the channel: a URL for a webhook, an address (or none) for e-mail.
    const channel = sub.elements.channel;
    const input = target.querySelector('input');
    const label = target.querySelector('label');
    const hint = target.querySelector('.hint');
    const sync = () => {
      const c = channel.value;
      target.hidden = c === 'in-app';
      secret.hidden = c !== 'webhook';
      input.required = c === 'webhook';
      if (c === 'webhook') {
        input.type = 'url';
        label.textContent = 'Webhook URL';
        input.placeholder = 'https://pager.example/hooks/vesalius';
        hint.textContent = 'An http(s) address outside the site\'s network.';
      } else {
        input.type = 'email';
        label.textContent = 'E-mail address (empty: yours in the directory)';
        input.placeholder = 'name@hospital.example';
        hint.textContent = 'The message has the alert\'s title and the viewer link, no patient data.';
      }
    };
    channel.addEventListener('change', sync);
    sub.addEventListener('reset', () => setTimeout(sync));
    sync();
    clear(body).append(rows, sub, shown);
  });
}
