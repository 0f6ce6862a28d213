// Organisations, users and roles, API tokens (GET/POST /api/v1/orgs|users|tokens,
// docs/admin-console.md).

import { json } from '../api.js';
import { clear, h, toast } from '../dom.js';
import { act, field, form, list, once, section, send, table, time } from './ui.js';

export const ROLES = ['admin', 'clinician', 'radiographer', 'referrer', 'auditor', 'service'];
const roleOptions = ROLES.map((r) => [r, r]);

export function orgs(who) {
  return section('Organisations', async (body) => {
    const r = await json('/api/v1/orgs');
    clear(body).append(
      table([
        ['Id', (o) => o.id],
        ['Name', (o) => o.name],
        ['Created', (o) => time(o.created_ms)],
        ['', (o) => (o.current ? h('span', { class: 'badge' }, 'you act here') : '')],
      ], r.orgs, 'No organisation you administer.'),
      h('p', { class: 'note-text' }, r.may_create
        ? 'You may create organisations.'
        : `Creating an organisation is a site-level change: run \`vesalius admin org create ID\` on the server. You act in ${who.org}.`),
    );
  });
}

function roleText(u) {
  return list(u.memberships.map((m) => `${m.role} in ${m.org}`));
}

export function users(who) {
  // Secrets shown once survive the reload that follows their creation.
  const shown = h('div', { class: 'once-box', 'aria-live': 'polite' });
  return section('Users and roles', async (body, reload) => {
    const r = await json('/api/v1/users');
    const create = form('New user', [
      field('Username', 'username', { required: true, pattern: '[A-Za-z0-9._@-]{1,64}' }),
      field('Display name', 'display_name'),
      field('E-mail', 'email', { type: 'email' }),
      field('Role', 'role', { options: roleOptions, value: 'clinician' }),
      field('Service account (tokens only, no password)', 'service', { type: 'checkbox' }),
    ], 'Create user', async (v, f, out) => {
      const res = await send('POST', '/api/v1/users', {
        username: v.username, display_name: v.display_name, email: v.email,
        role: v.service ? 'service' : v.role, service: v.service, org: who.org,
      });
      f.reset();
      out.textContent = `Created ${res.user.username}.`;
      clear(shown);
      if (res.password_link) shown.append(once(`Password link for ${res.user.username}`, res.password_link.url));
      await reload(body, reload);
    });
    const rows = table([
      ['User', (u) => h('span', {}, h('strong', {}, u.username), h('small', {}, u.display_name !== u.username ? u.display_name : ''))],
      ['Roles', roleText],
      ['State', (u) => [u.disabled ? h('span', { class: 'badge warn' }, 'disabled') : h('span', { class: 'badge ok' }, 'active'),
        u.service ? h('span', { class: 'badge' }, 'service') : null,
        !u.service && !u.has_password && !u.oidc_linked ? h('span', { class: 'badge' }, 'no password yet') : null]],
      ['Created', (u) => time(u.created_ms)],
      ['Actions', (u) => userActions(u, who, shown, () => reload(body, reload))],
    ], r.users, 'No users.', { 'aria-label': 'Users' });
    clear(body).append(shown, rows, create);
  });
}

function userActions(u, who, shown, reload) {
  const mine = u.memberships.find((m) => m.org === who.org);
  const box = h('div', { class: 'row-actions' });
  if (mine) {
    const sel = h('select', { 'aria-label': `Role of ${u.username} in ${who.org}` },
      ROLES.filter((r) => (u.service ? r === 'service' : r !== 'service'))
        .map((r) => h('option', { value: r, selected: r === mine.role }, r)));
    box.append(sel, act('Set role', async () => {
      await send('PATCH', `/api/v1/users/${encodeURIComponent(u.username)}`, { org: who.org, role: sel.value });
      toast(`${u.username} is ${sel.value} in ${who.org}`);
    }, { after: reload }));
  }
  box.append(act(u.disabled ? 'Enable' : 'Disable', () =>
    send('PATCH', `/api/v1/users/${encodeURIComponent(u.username)}`, { disabled: !u.disabled }), {
    confirmText: u.disabled ? null : `Disable ${u.username}? Their sessions and tokens stop working.`,
    after: reload,
  }));
  if (!u.service) {
    box.append(act('Password link', async () => {
      const r = await send('POST', `/api/v1/users/${encodeURIComponent(u.username)}/password-link`);
      clear(shown).append(once(`Password link for ${r.username}`, r.password_link.url));
    }, { confirmText: `Reset the password of ${u.username}? Their current password stops working at once.`, after: reload }));
  }
  return box;
}

export function tokens(who) {
  // Secrets shown once survive the reload that follows their creation.
  const shown = h('div', { class: 'once-box', 'aria-live': 'polite' });
  return section('API tokens', async (body, reload) => {
    const [t, u] = await Promise.all([json('/api/v1/tokens'), json('/api/v1/users')]);
    const people = u.users.filter((x) => !x.disabled && x.memberships.some((m) => m.org === who.org));
    const create = form('New token', [
      field('For user', 'username', { options: people.map((x) => [x.username, x.username]), required: true }),
      field('Role (at most the user\'s)', 'role', { options: roleOptions, value: 'service' }),
      field('Name', 'name', { required: true, placeholder: 'ct-gateway' }),
      field('Expires after (days; empty: never)', 'ttl_days', { type: 'number', min: 1, max: 3650 }),
    ], 'Create token', async (v, f, out) => {
      const res = await send('POST', '/api/v1/tokens', {
        username: v.username, role: v.role, name: v.name, org: who.org,
        ttl_days: v.ttl_days ? Number(v.ttl_days) : undefined,
      });
      f.reset();
      out.textContent = `Created token ${res.id}.`;
      clear(shown).append(once(`Token ${res.name} (${res.id})`, res.token));
      await reload(body, reload);
    });
    const rows = table([
      ['Id', (x) => h('code', {}, x.id)],
      ['Name', (x) => x.name],
      ['User', (x) => x.username],
      ['Role', (x) => `${x.role} in ${x.org}`],
      ['Expires', (x) => (x.expires_ms ? time(x.expires_ms) : 'never')],
      ['State', (x) => h('span', { class: `badge ${x.status === 'active' ? 'ok' : 'warn'}` }, x.status)],
      ['', (x) => (x.revoked ? '' : act('Revoke', () => send('DELETE', `/api/v1/tokens/${encodeURIComponent(x.id)}`), {
        confirmText: `Revoke token ${x.name} (${x.id})?`, after: () => reload(body, reload),
      }))],
    ], t.tokens, 'No tokens.', { 'aria-label': 'Tokens' });
    clear(body).append(shown, rows, create);
  });
}
