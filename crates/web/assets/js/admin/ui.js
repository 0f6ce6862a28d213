// Small building blocks of the admin console: labelled form fields, tables, times and sizes,
// and an action runner that shows what the server answered. Text only, never HTML.

import { ApiError, json } from '../api.js';
import { clear, h, toast } from '../dom.js';

/** `2026-12-07 10:58:12` in the browser's time zone (`—` for 0 or nothing). */
export function time(ms) {
  if (!ms) return '—';
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** `1.5 GB` (decimal units). */
export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = Number(n), i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

let uid = 0;

/**
 * A labelled field: `field('Username', 'username', {required: true})`. `opts.options` makes a
 * select (`[[value, label], …]`), `opts.type` an input type (`checkbox` puts the label after).
 */
export function field(label, name, opts = {}) {
  uid += 1;
  const id = `f-${name}-${uid}`;
  const { options, value, hint, ...attrs } = opts;
  let control;
  if (options) {
    control = h('select', { id, name, ...attrs },
      options.map(([v, l]) => h('option', { value: v, selected: String(v) === String(value ?? '') }, l)));
  } else if (attrs.type === 'checkbox') {
    control = h('input', { id, name, ...attrs, checked: Boolean(value) });
    return h('div', { class: 'field check' }, control, h('label', { for: id }, label));
  } else {
    control = h('input', { id, name, autocomplete: 'off', ...attrs, value: value ?? '' });
  }
  // The label names the control alone (`for`), not wrapping it: its text is the label's only.
  return h('div', { class: 'field' }, h('label', { for: id }, label), control,
    hint ? h('small', { class: 'hint' }, hint) : null);
}

/** The values of a form's named controls (checkboxes as booleans). */
export function values(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    out[el.name] = el.type === 'checkbox' ? el.checked : el.value.trim();
  }
  return out;
}

/**
 * A form: fields, a submit button, and `onsubmit(values, form)`; the button is disabled while
 * it runs and an error answer is shown under it.
 */
export function form(title, fields, submitLabel, onsubmit, attrs = {}) {
  const out = h('p', { class: 'result', role: 'status', 'aria-live': 'polite' });
  const button = h('button', { type: 'submit' }, submitLabel);
  const f = h('form', { class: 'admin-form', 'aria-label': title, ...attrs },
    h('h3', {}, title), h('div', { class: 'grid' }, fields), h('div', { class: 'actions' }, button), out);
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    clear(out).className = 'result';
    try {
      await onsubmit(values(f), f, out);
    } catch (e) {
      showError(out, e);
    } finally {
      button.disabled = false;
    }
  });
  return f;
}

/** Shows an API error (its code and message) in `el`. */
export function showError(el, e) {
  clear(el).className = 'result error';
  el.setAttribute('role', 'alert');
  el.append(e instanceof ApiError ? `${e.code}: ${e.message}` : String(e.message || e));
}

/** A table: `columns` `[[header, cell(row) → node|text], …]`; an empty list says `empty`. */
export function table(columns, rows, empty = 'None.', attrs = {}) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h('div', { class: 'table-wrap' }, h('table', { class: 'admin-table', ...attrs },
    h('thead', {}, h('tr', {}, columns.map(([head]) => h('th', { scope: 'col' }, head)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, columns.map(([head, cell]) =>
      h('td', { 'data-label': head }, cell(r))))))));
}

/**
 * A button that runs `action()` (a promise); `confirmText` asks first. Errors become a toast;
 * `after(result)` runs on success.
 */
export function act(label, action, { confirmText, after, cls } = {}) {
  const b = h('button', { type: 'button', class: cls || '' }, label);
  b.addEventListener('click', async () => {
    if (confirmText && !window.confirm(confirmText)) return;
    b.disabled = true;
    try {
      const r = await action();
      if (after) await after(r);
    } catch (e) {
      toast(e instanceof ApiError ? `${e.code}: ${e.message}` : String(e.message || e), 'error');
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

/** A JSON request with a JSON body. */
export function send(method, url, body) {
  return json(url, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

/** `a, b, c` of a list, `—` when empty. */
export function list(xs) {
  return xs && xs.length ? xs.join(', ') : '—';
}

/**
 * "Previous" and "Next" of a paged list with where it stands (`status`, announced politely):
 * plain buttons, so keyboards and taps work alike. `prev`/`next` run on click (absent: the
 * button is disabled). `focus` (`'prev'` or `'next'`) puts the focus back on that button after
 * a page was drawn anew, or on the other one when it ended (first or last page).
 */
export function pager(label, { status, prev, next, focus }) {
  const button = (rel, text, fn) => h('button', {
    type: 'button', class: 'pager-btn', 'data-rel': rel, disabled: !fn, onclick: fn || null,
  }, text);
  const p = button('prev', 'Previous', prev);
  const n = button('next', 'Next', next);
  const nav = h('nav', { class: 'pager', 'aria-label': `${label} pages` },
    p, h('span', { class: 'pager-status', role: 'status', 'aria-live': 'polite' }, status), n);
  if (focus) {
    const want = focus === 'prev' ? p : n;
    const other = focus === 'prev' ? n : p;
    // After the section's body holds the new page (the caller appends `nav` first).
    queueMicrotask(() => (want.disabled ? other : want).focus());
  }
  return nav;
}

/** A secret shown once, with a copy button. */
export function once(label, text) {
  const code = h('code', { class: 'secret' }, text);
  const copy = h('button', { type: 'button' }, 'Copy');
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
      toast('Copied');
    } catch {
      const r = document.createRange();
      r.selectNodeContents(code);
      getSelection().removeAllRanges();
      getSelection().addRange(r);
    }
  });
  return h('div', { class: 'once' }, h('strong', {}, label), h('small', {}, 'Shown once: copy it now.'), code, copy);
}

/** A section: a heading, a "Reload" button and a body that `load(body)` fills. */
export function section(title, load) {
  const body = h('div', { class: 'section-body' });
  const reload = async () => {
    try {
      await load(body, reload);
    } catch (e) {
      const p = h('p', {});
      showError(p, e);
      clear(body).append(p);
    }
  };
  const root = h('section', { class: 'admin-section', 'aria-label': title },
    h('div', { class: 'section-head' }, h('h2', {}, title),
      act('Reload', reload, { cls: 'small' })), body);
  reload();
  return root;
}
