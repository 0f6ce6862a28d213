// Alert rules (issue 6, docs/alerts.md "Rules"): list, create, change and delete the
// organisation's rules (GET/POST /api/v1/alerts/rules, PUT/DELETE /api/v1/alerts/rules/{id};
// each change audited `admin-change` by the server). Users subscribe to them on /alerts.

import { json } from '../api.js';
import { clear, h, toast } from '../dom.js';
import { KINDS, kindName, thresholdText } from '../alerts.js';
import { act, field, form, list, section, send, table, time } from './ui.js';

const enc = encodeURIComponent;

/** `a, b ,c` → `['a', 'b', 'c']`. */
function split(s) {
  return (s || '').split(',').map((x) => x.trim()).filter(Boolean);
}

/** The threshold field's label and hint for `kind` (hidden for kinds without one). */
function thresholdLabel(kind) {
  const k = KINDS[kind];
  if (!k?.threshold) return null;
  return { label: k.threshold, hint: `Empty: ${k.default}.` };
}

export function alertRules(who) {
  return section('Alert rules', async (body, reload) => {
    const rules = await json('/api/v1/alerts/rules');
    const id = h('input', { type: 'hidden', name: 'id' });
    const editing = h('p', { class: 'status', role: 'status', 'aria-live': 'polite' }, 'A new rule.');
    const threshold = field('Threshold', 'threshold', { type: 'number', min: 0, step: 1 });
    const editor = form('Add or change an alert rule', [
      id,
      field('Kind', 'kind', { options: Object.keys(KINDS).map((k) => [k, `${KINDS[k].name}${KINDS[k].admin ? ' (administrators)' : ''}`]), value: 'stroke-arrival' }),
      field('Name', 'name', { maxlength: 200, placeholder: 'Stroke arrivals' }),
      threshold,
      field('Escalate to (usernames, in order, comma separated)', 'escalation', { placeholder: 'bob, carol' }),
      field('Escalate after (seconds without acknowledgement)', 'escalate_after_s', { type: 'number', min: 0, value: 0, hint: '0: no escalation.' }),
      field('Enabled', 'enabled', { type: 'checkbox', value: true }),
    ], 'Save rule', async (v, f, out) => {
      const payload = {
        kind: v.kind, name: v.name || undefined, escalation: split(v.escalation),
        escalate_after_s: Number(v.escalate_after_s || 0), enabled: v.enabled,
      };
      if (v.threshold !== '' && thresholdLabel(v.kind)) payload.threshold = Number(v.threshold);
      const saved = v.id
        ? await send('PUT', `/api/v1/alerts/rules/${enc(v.id)}`, payload)
        : await send('POST', '/api/v1/alerts/rules', payload);
      toast(`${v.id ? 'Saved' : 'Created'} rule ${saved.name}.`);
      out.textContent = `${v.id ? 'Saved' : 'Created'} rule ${saved.name}.`;
      await reload();
    });
    const kind = editor.elements.kind;
    const syncKind = () => {
      const t = thresholdLabel(kind.value);
      threshold.hidden = !t;
      if (t) {
        threshold.querySelector('label').textContent = t.label;
        threshold.querySelector('input').placeholder = KINDS[kind.value].default.split(' ')[0];
        let hint = threshold.querySelector('.hint');
        if (!hint) threshold.append(hint = h('small', { class: 'hint' }));
        hint.textContent = t.hint;
      }
    };
    kind.addEventListener('change', syncKind);
    const startNew = h('button', { type: 'button' }, 'New rule instead');
    startNew.addEventListener('click', () => {
      editor.reset();
      id.value = '';
      editing.textContent = 'A new rule.';
      startNew.hidden = true;
      setTimeout(syncKind);
    });
    startNew.hidden = true;
    editor.querySelector('.actions').append(' ', startNew);
    editor.querySelector('h3').after(editing);
    syncKind();

    const edit = (r) => {
      id.value = r.id;
      const e = editor.elements;
      e.kind.value = r.kind;
      e.name.value = r.name;
      e.threshold.value = thresholdLabel(r.kind) ? r.threshold : '';
      e.escalation.value = r.escalation.join(', ');
      e.escalate_after_s.value = Math.round(r.escalate_after_ms / 1000);
      e.enabled.checked = r.enabled;
      syncKind();
      editing.textContent = `Changing rule “${r.name}”.`;
      startNew.hidden = false;
      editor.scrollIntoView({ block: 'nearest' });
      e.name.focus();
    };
    const rows = table([
      ['Rule', (r) => h('span', {}, h('strong', {}, r.name), h('small', {}, kindName(r.kind)))],
      ['When', (r) => thresholdText(r)],
      ['Escalation', (r) => (r.escalation.length && r.escalate_after_ms
        ? `${list(r.escalation)}, every ${Math.round(r.escalate_after_ms / 1000)} s`
        : 'none')],
      ['State', (r) => h('span', { class: `badge ${r.enabled ? 'ok' : 'warn'}` }, r.enabled ? 'enabled' : 'disabled')],
      ['Created', (r) => time(r.created_ms)],
      ['', (r) => {
        const e = act('Edit', async () => edit(r));
        e.setAttribute('aria-label', `Edit rule ${r.name}`);
        const d = act('Delete', () => send('DELETE', `/api/v1/alerts/rules/${enc(r.id)}`),
          { confirmText: `Delete rule ${r.name}? Its subscriptions go with it.`, after: reload });
        d.setAttribute('aria-label', `Delete rule ${r.name}`);
        return h('div', { class: 'row-actions' }, e, d);
      }],
    ], rules, 'No alert rules yet.', { 'aria-label': 'Alert rules' });
    clear(body).append(
      h('p', { class: 'note-text' }, `Rules of ${who.org}. Users subscribe to them on their `,
        h('a', { href: '/alerts' }, 'Alerts page'),
        ' (peer, disk, certificate and parked-transfer rules: administrators only).'),
      rows, editor);
  });
}
