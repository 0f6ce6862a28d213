// The screens around a session (issue 6), inside the app's shell:
//   /login?next=PATH     local login (JSON API) and, when the site has a provider, OpenID Connect
//   /setup?token=T       the first start's administrator (username, password, confirmation), or
//                        a password link an administrator handed out (password, confirmation)
//   /account[?next=P]    changing one's own password (also the way out of "must change password")
// They talk to the JSON API only (docs/web.md, "Login and set-up"): POST /api/v1/auth/login,
// GET /api/v1/auth/methods, GET and POST /api/v1/auth/setup, POST /api/v1/auth/password. Each form
// is a real form whose `action` is the server's script-less form endpoint, so that a browser
// without this module still posts somewhere that answers.

import { errorOf, json, me, setCsrf } from './api.js';
import { clear, h } from './dom.js';

/** Where to go after logging in: the same-origin path `next` names, or the worklist. */
export function safeNext(next) {
  const home = '/worklist';
  // A path of this site only: `//host`, `/\host`, `https://…`, `javascript:` are not paths here.
  if (typeof next !== 'string' || !next.startsWith('/') || next.startsWith('//') || next.includes('\\')) return home;
  let u;
  try {
    u = new URL(next, location.origin);
  } catch {
    return home;
  }
  if (u.origin !== location.origin) return home;
  // Not back to the screens of this module (a loop after logging in).
  if (['/login', '/setup'].includes(u.pathname)) return home;
  return u.pathname + u.search + u.hash;
}

/**
 * What the login screen says when the server's OpenID Connect callback refused a login
 * (`/login?refused=CODE`, crates/api/src/oidc.rs): only the error code crosses, the words are
 * the app's own.
 */
export function refusedMessage(code, provider) {
  switch (code) {
    case 'forbidden':
      return `${provider} signed you in, but no active Vesalius user matches that identity. `
        + 'An administrator can create your user with the e-mail address your provider vouches for, or re-enable it.';
    case 'unavailable':
      return `${provider} cannot be reached just now. Log in with your password, or try again later.`;
    case 'unauthorized':
    case 'bad-request':
      return `The login with ${provider} did not complete (it was cancelled, took too long or was refused). Try again.`;
    default:
      return `The login with ${provider} failed. Try again, or ask an administrator.`;
  }
}

/** A labelled field: `<label for>` and its input (screen readers read the label). */
function field(id, label, attrs, hint) {
  const hintId = hint ? `${id}-hint` : null;
  return h('div', { class: 'auth-field' },
    h('label', { for: id }, label),
    h('input', { id, name: id, ...attrs, 'aria-describedby': hintId }),
    hint ? h('p', { class: 'hint', id: hintId }, hint) : null);
}

/** The screen's frame: a heading, a message area read out when it changes, the content. */
function screen(app, title, ...content) {
  document.title = `${title} · Vesalius`;
  const err = h('p', { class: 'error auth-error', id: 'auth-error', role: 'alert', hidden: true });
  clear(app).append(h('section', { class: 'auth', 'aria-labelledby': 'auth-title' },
    h('h1', { id: 'auth-title' }, title), err, ...content));
  return err;
}

/** Shows `text` in the message area (or hides it), and marks `fields` invalid. */
function say(err, text, fields = []) {
  err.textContent = text || '';
  err.hidden = !text;
  for (const f of document.querySelectorAll('.auth input')) f.removeAttribute('aria-invalid');
  for (const f of fields) f?.setAttribute('aria-invalid', 'true');
  if (text) fields[0]?.focus();
}

/** A POST of JSON without api.js's "401 → login page" (a 401 here is a wrong password). */
async function post(url, body) {
  const r = await fetch(url, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw await errorOf(r);
  return r.json();
}

/** "HH:MM" of a time in ms, in the visitor's time zone. */
function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/** What a refused login means, in words. */
function loginMessage(e) {
  if (e.status === 401) return 'The username or password is wrong.';
  if (e.status === 429) {
    const until = /locked until (\d+)/.exec(e.message || '');
    return `Too many failed attempts: logging in as this user or from this address is locked${until ? ` until ${clock(Number(until[1]))}` : ' for a while'}.`;
  }
  if (e instanceof TypeError) return 'The server cannot be reached. Check the network and try again.';
  return `Logging in failed: ${e.message}`;
}

/** The login screen. */
export async function loginPage(app, q) {
  const next = safeNext(q.get('next') || '');
  const err = screen(app, 'Log in');
  const section = app.querySelector('section.auth');
  const form = h('form', { method: 'post', action: `/login?next=${encodeURIComponent(next)}`, class: 'auth-form' },
    field('username', 'Username', { autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' }),
    field('password', 'Password', { type: 'password', autocomplete: 'current-password', required: true }),
    h('button', { type: 'submit', class: 'primary' }, 'Log in'));
  section.append(form);
  // OpenID Connect, when the site has a provider: the server's flow, back to `next`.
  const refused = q.get('refused');
  json('/api/v1/auth/methods').then((m) => {
    // "Keep me signed in" (issue 6), when the site offers it: a persistent cookie and a longer
    // session; without it the login ends with the browser.
    if (m?.remember_days > 0) {
      const days = m.remember_days;
      form.querySelector('button').before(h('div', { class: 'auth-check' },
        h('input', { type: 'checkbox', id: 'remember', name: 'remember', 'aria-describedby': 'remember-hint' }),
        h('label', { for: 'remember' }, 'Keep me signed in'),
        h('p', { class: 'hint', id: 'remember-hint' },
          `For ${days} day${days === 1 ? '' : 's'} on this device. Not on a shared computer: without it you are signed out when the browser closes.`)));
    }
    if (!m?.oidc) return;
    section.append(h('div', { class: 'auth-alt' },
      h('p', { class: 'or' }, 'or'),
      h('a', { class: 'button', id: 'oidc-login', href: `${m.oidc.login}?next=${encodeURIComponent(next)}` }, m.oidc.label)));
    if (refused) say(err, refusedMessage(refused, m.oidc.label));
  }).catch(() => { /* password login still works */ });
  const user = form.querySelector('#username');
  const pass = form.querySelector('#password');
  user.focus();
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!user.value.trim() || !pass.value) {
      say(err, 'Enter your username and password.', [!user.value.trim() ? user : pass]);
      return;
    }
    const button = form.querySelector('button');
    button.disabled = true;
    say(err, '');
    try {
      const remember = form.querySelector('#remember')?.checked || false;
      const ok = await post('/api/v1/auth/login', { username: user.value.trim(), password: pass.value, remember });
      setCsrf(ok.csrf);
      location.assign(ok.must_change_password ? `/account?next=${encodeURIComponent(next)}` : next);
    } catch (e) {
      pass.value = '';
      say(err, loginMessage(e), e.status === 401 ? [pass, user] : [pass]);
      button.disabled = false;
    }
  });
}

/** A new password and its confirmation; `check()` says what is wrong, or nothing. */
function newPassword(form, err, username) {
  const pw = form.querySelector('#new-password');
  const again = form.querySelector('#confirm-password');
  return () => {
    if ([...pw.value].length < 12) {
      say(err, 'The password needs 12 characters or more.', [pw]);
      return false;
    }
    if (username && pw.value.trim().toLowerCase() === username().trim().toLowerCase()) {
      say(err, 'The password may not be the username.', [pw]);
      return false;
    }
    if (pw.value !== again.value) {
      say(err, 'The two passwords differ.', [again]);
      return false;
    }
    return true;
  };
}

const PASSWORD_HINT = '12 characters or more; a few words you remember are fine.';

/** The set-up screen: the first start's administrator, or a password link. */
export async function setupPage(app, q) {
  const token = q.get('token') || '';
  // The token stays in memory only: not in the address bar, the history or a bookmark.
  history.replaceState(null, '', '/setup');
  let err = screen(app, 'Set up Vesalius', h('p', { class: 'loading' }, 'Checking the link…'));
  let info;
  try {
    // Not api.js's `json`: a 401 here is a wrong token, not a session to log in for.
    const r = await fetch(`/api/v1/auth/setup?token=${encodeURIComponent(token)}`, { headers: { Accept: 'application/json' } });
    if (!r.ok) throw await errorOf(r);
    info = await r.json();
  } catch (e) {
    const why = !token ? 'This address has no set-up token: open the whole link you were given.'
      : e.status === 409 ? 'This link was used already: it works once. Log in with the password you chose.'
        : e.code === 'unauthorized' && /expired/.test(e.message || '') ? 'This link has expired. Ask an administrator for a new one (or restart the server for a new first-start link).'
          : e.status === 401 ? 'This link is not valid: check that it was copied whole, or ask for a new one.'
            : `The link cannot be checked now: ${e.message}`;
    err = screen(app, 'Set up Vesalius', h('p', {}, h('a', { href: '/login' }, 'Go to the login page')));
    say(err, why);
    return;
  }
  const first = info.first_start;
  err = screen(app, first ? 'Set up Vesalius' : 'Choose your password',
    h('p', { class: 'lead' }, first
      ? 'Create the first administrator of this site. They administer its first organisation and the site (new organisations, site administrators).'
      : `Choose the password of ${info.username}. The link works once.`));
  const form = h('form', { method: 'post', action: '/setup', class: 'auth-form' },
    h('input', { type: 'hidden', name: 'token', value: token }),
    first
      ? field('username', 'Administrator username', { value: info.username, autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false', maxlength: 64 },
        'Letters, digits, ".", "-", "_" or "@".')
      : field('username', 'Username', { value: info.username, autocomplete: 'username', readonly: true }),
    field('new-password', 'Password', { name: 'password', type: 'password', autocomplete: 'new-password', required: true, minlength: 12 }, PASSWORD_HINT),
    field('confirm-password', 'Password again', { type: 'password', autocomplete: 'new-password', required: true }),
    h('button', { type: 'submit', class: 'primary' }, first ? 'Create the administrator' : 'Set the password'));
  app.querySelector('section.auth').append(form);
  const user = form.querySelector('#username');
  const check = newPassword(form, err, () => user.value);
  (first ? user : form.querySelector('#new-password')).focus();
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (first && !/^[\p{L}\p{N}.\-_@]{1,64}$/u.test(user.value.trim())) {
      say(err, 'The username is 1 to 64 letters, digits, ".", "-", "_" or "@".', [user]);
      return;
    }
    if (!check()) return;
    const button = form.querySelector('button');
    button.disabled = true;
    say(err, '');
    try {
      const body = { token, password: form.querySelector('#new-password').value };
      if (first) body.username = user.value.trim();
      const ok = await post('/api/v1/auth/setup', body);
      setCsrf(ok.csrf);
      // The first administrator lands in the admin console; a user in the worklist.
      location.assign(first ? '/admin' : '/worklist');
    } catch (e) {
      say(err, e.status === 409 && first ? `${e.message}.` : e.status === 409
        ? 'This link was used already: it works once.' : `The password was not set: ${e.message}`,
      e.code === 'bad-request' && /username/.test(e.message || '') ? [user] : [form.querySelector('#new-password')]);
      button.disabled = false;
    }
  });
}

/** The password screen (`/account`): needs a session (api.js sends a visitor to log in). */
export async function accountPage(app, q) {
  const who = await me();
  setCsrf(who.csrf);
  const name = who.actor?.name || '';
  const must = Boolean(who.must_change_password);
  const next = safeNext(q.get('next') || '');
  const err = screen(app, 'Change password',
    must ? h('p', { class: 'lead' }, `${name}, choose a new password before going on.`) : null);
  const form = h('form', { method: 'post', action: '/account/password', class: 'auth-form' },
    h('input', { type: 'text', name: 'username', value: name, autocomplete: 'username', hidden: true, readonly: true }),
    field('current', 'Current password', { type: 'password', autocomplete: 'current-password', required: true }),
    field('new-password', 'New password', { name: 'new', type: 'password', autocomplete: 'new-password', required: true, minlength: 12 }, PASSWORD_HINT),
    field('confirm-password', 'New password again', { type: 'password', autocomplete: 'new-password', required: true }),
    h('button', { type: 'submit', class: 'primary' }, 'Change password'));
  app.querySelector('section.auth').append(form);
  const current = form.querySelector('#current');
  const check = newPassword(form, err, () => name);
  current.focus();
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!current.value) {
      say(err, 'Enter your current password.', [current]);
      return;
    }
    if (!check()) return;
    const button = form.querySelector('button');
    button.disabled = true;
    say(err, '');
    try {
      const r = await fetch('/api/v1/auth/password', {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'X-CSRF-Token': who.csrf || '' },
        body: JSON.stringify({ current: current.value, new: form.querySelector('#new-password').value }),
      });
      if (!r.ok) throw await errorOf(r);
      if (must) {
        location.assign(next);
        return;
      }
      clear(app.querySelector('section.auth')).append(
        h('h1', { id: 'auth-title' }, 'Change password'),
        h('p', { role: 'status' }, 'Your password was changed.'),
        h('p', {}, h('a', { href: next }, 'Continue')));
    } catch (e) {
      const text = e.status === 401 ? 'The current password is wrong.'
        : e.status === 429 ? loginMessage(e) : `The password was not changed: ${e.message}`;
      say(err, text, e.status === 401 || e.status === 429 ? [current] : [form.querySelector('#new-password')]);
      button.disabled = false;
    }
  });
}
