// Organisations, users and roles, API tokens (GET/POST /api/v1/orgs|users|tokens,
// docs/admin-console.md).

import { json } from '../api.js';
import { clear, h, toast } from '../dom.js';
import { act, field, form, list, once, pager, section, send, table, time } from './ui.js';

export const ROLES = ['admin', 'clinician', 'radiographer', 'referrer', 'auditor', 'service'];
const roleOptions = ROLES.map((r) => [r, r]);

export function orgs(who) {
  // What the last creation did, kept across the reload that follows it.
  const created = h('p', { class: 'result', role: 'status', 'aria-live': 'polite' });
  return section('Organisations', async (body, reload) => {
    const r = await json('/api/v1/orgs');
    const rows = table([
      ['Id', (o) => o.id],
      ['Name', (o) => o.name],
      ['Members', (o) => h('a', {
        href: `/admin/users?org=${encodeURIComponent(o.id)}`,
        'aria-label': `Members of ${o.name} (${o.members})`,
      }, `${o.members} member${o.members === 1 ? '' : 's'}`)],
      ['Created', (o) => time(o.created_ms)],
      ['Images on devices', (o) => (o.device_image_cache.allowed ? `kept up to ${o.device_image_cache.hours} h` : 'never kept')],
      ['', (o) => (o.current ? h('span', { class: 'badge' }, 'you act here') : '')],
    ], r.orgs, 'No organisation you administer.', { 'aria-label': 'Organisations' });
    const settings = r.orgs.length ? deviceCacheForm(r.orgs, who, () => reload(body, reload)) : null;
    if (!r.may_create) {
      clear(body).append(rows, settings || '', h('p', { class: 'note-text' },
        `Creating an organisation is a site-level change for site administrators, which no organisation's administrator is: a site administrator creates it here, or run \`vesalius admin org create ID --name NAME\` on the server. You act in ${who.org}.`));
      return;
    }
    const create = form('New organisation', [
      field('Id (lower-case letters, digits, -)', 'id', {
        required: true, pattern: '[a-z0-9][a-z0-9-]{0,63}', placeholder: 'st-marys', autocapitalize: 'none',
        hint: 'It names the organisation in every record it owns and cannot be changed.',
      }),
      field('Name', 'name', { placeholder: "St Mary's Hospital", maxlength: 200 }),
    ], 'Create organisation', async (v, f) => {
      const res = await send('POST', '/api/v1/orgs', { id: v.id, name: v.name || undefined });
      f.reset();
      created.textContent = `Created organisation ${res.org.id} (${res.org.name}). Add its first administrator under its members.`;
      await reload(body, reload);
    });
    clear(body).append(created, rows, settings || '', create);
  });
}

/**
 * Whether an organisation's users' browsers may keep the viewer's images, and how long
 * (PATCH /api/v1/orgs/{org}, issue 6; docs/admin-console.md, "Organisations").
 */
function deviceCacheForm(all, who, done) {
  const first = all.find((o) => o.id === who.org) || all[0];
  const max = first.device_image_cache.max_hours || 168;
  const f = form('Images kept on devices', [
    all.length > 1 ? field('Organisation', 'org', { options: all.map((o) => [o.id, `${o.name} (${o.id})`]), value: first.id }) : null,
    field('Allow the browsers of its users to keep the images they viewed', 'allowed', { type: 'checkbox', value: first.device_image_cache.allowed }),
    field('For at most (hours)', 'hours', {
      type: 'number', min: 1, max, required: true, value: first.device_image_cache.hours,
      hint: `1 to ${max}. Kept only when the study's owner allows it too; deleted at logout. Off: images are never kept.`,
    }),
  ], 'Save', async (v) => {
    const org = v.org || first.id;
    const res = await send('PATCH', `/api/v1/orgs/${encodeURIComponent(org)}`, {
      device_image_cache: { allowed: v.allowed, hours: Number(v.hours) },
    });
    await done();
    toast(res.device_image_cache.allowed
      ? `${org}: images may be kept on devices for ${res.device_image_cache.hours} h.`
      : `${org}: images are never kept on devices.`);
  });
  const pick = f.querySelector('select[name=org]');
  if (pick) {
    pick.addEventListener('change', () => {
      const o = all.find((x) => x.id === pick.value);
      if (!o) return;
      f.querySelector('input[name=allowed]').checked = o.device_image_cache.allowed;
      f.querySelector('input[name=hours]').value = o.device_image_cache.hours;
    });
  }
  return f;
}

function roleText(u) {
  return list(u.memberships.map((m) => `${m.role} in ${m.org}`));
}

/** Users per page of the console's list: the choices, and the first. */
const PAGE_SIZES = [10, 25, 50, 100];

export function users(who) {
  // Secrets shown once survive the reload that follows their creation.
  const shown = h('div', { class: 'once-box', 'aria-live': 'polite' });
  // `/admin/users?org=ID`: the members of one organisation (the Organisations section links here).
  const only = new URLSearchParams(location.search).get('org') || '';
  const state = { offset: 0, limit: PAGE_SIZES[1], focus: null };
  return section(only ? `Members of ${only}` : 'Users and roles', async (body, reload) => {
    const q = new URLSearchParams({ limit: String(state.limit), offset: String(state.offset) });
    if (only) q.set('org', only);
    const [r, o] = await Promise.all([json(`/api/v1/users?${q}`), json('/api/v1/orgs')]);
    if (!r.users.length && r.total && state.offset) {
      // The page emptied (users of the last page were removed): show the last one there is.
      state.offset = Math.max(0, Math.floor((r.total - 1) / state.limit) * state.limit);
      return reload(body, reload);
    }
    const home = only || who.org || (o.orgs[0] && o.orgs[0].id) || '';
    const create = form('New user', [
      field('Username', 'username', { required: true, pattern: '[A-Za-z0-9._@-]{1,64}' }),
      field('Display name', 'display_name'),
      field('E-mail', 'email', { type: 'email' }),
      field('Role', 'role', { options: roleOptions, value: 'clinician' }),
      o.orgs.length > 1 ? field('Organisation', 'org', { options: o.orgs.map((x) => [x.id, `${x.name} (${x.id})`]), value: home }) : null,
      field('Service account (tokens only, no password)', 'service', { type: 'checkbox' }),
    ], 'Create user', async (v, f, out) => {
      const res = await send('POST', '/api/v1/users', {
        username: v.username, display_name: v.display_name, email: v.email,
        role: v.service ? 'service' : v.role, service: v.service, org: v.org || home,
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
        u.site_admin ? h('span', { class: 'badge site-admin' }, 'site administrator') : null,
        !u.service && !u.has_password && !u.oidc_linked ? h('span', { class: 'badge' }, 'no password yet') : null]],
      ['Created', (u) => time(u.created_ms)],
      ['Organisations', (u) => memberships(u, o.orgs, who, () => reload(body, reload))],
      ['Actions', (u) => userActions(u, only || who.org, who, shown, () => reload(body, reload))],
    ], r.users, only ? `No members of ${only}.` : 'No users.', { 'aria-label': 'Users' });
    const go = (offset, focus) => () => {
      state.offset = offset;
      state.focus = focus;
      return reload(body, reload);
    };
    const from = r.users.length ? r.offset + 1 : 0;
    const pages = pager('Users', {
      status: `Users ${from}–${r.offset + r.users.length} of ${r.total}`,
      prev: r.offset > 0 ? go(Math.max(0, r.offset - r.limit), 'prev') : null,
      next: r.more ? go(r.offset + r.limit, 'next') : null,
      focus: state.focus,
    });
    state.focus = null;
    const size = h('select', { 'aria-label': 'Users per page', class: 'page-size' },
      PAGE_SIZES.map((n) => h('option', { value: n, selected: n === state.limit }, `${n} per page`)));
    size.addEventListener('change', () => {
      state.limit = Number(size.value);
      state.offset = 0;
      reload(body, reload);
    });
    // (`append` would write a null as the text "null".)
    clear(body).append(...[
      only ? h('p', {}, h('a', { href: '/admin/users' }, 'All users')) : null,
      shown, rows, h('div', { class: 'pager-row' }, pages, size), create,
    ].filter(Boolean));
  });
}

/**
 * Issue 6: the organisations of user `u` the caller administers, each with a button to take
 * them out of it (`DELETE /api/v1/users/{name}/memberships/{org}`; not their last one: the
 * server refuses it, and only offered when they belong to another), and a form to add them
 * to another organisation the caller administers (`PUT …/memberships/{org}` `{"role"}`).
 */
function memberships(u, managed, who, reload) {
  const box = h('div', { class: 'row-actions memberships' });
  const several = u.memberships.length > 1 || u.memberships_elsewhere;
  // (The roles themselves are the Roles column.)
  for (const m of u.memberships) {
    if (several) {
      box.append(act(`Remove from ${m.org}`, async () => {
        await send('DELETE', `/api/v1/users/${encodeURIComponent(u.username)}/memberships/${encodeURIComponent(m.org)}`);
        toast(`${u.username} left ${m.org}`);
      }, {
        confirmText: `Remove ${u.username} from ${m.org}? Their tokens of ${m.org} are revoked, and a session of theirs there ends.`,
        after: reload,
      }));
    }
  }
  const others = managed.filter((x) => !u.memberships.some((m) => m.org === x.id));
  if (others.length) {
    const org = h('select', { 'aria-label': `Organisation to add ${u.username} to` },
      others.map((x) => h('option', { value: x.id }, `${x.name} (${x.id})`)));
    const role = h('select', { 'aria-label': `Role of ${u.username} there` },
      ROLES.filter((r) => (u.service ? r === 'service' : r !== 'service'))
        .map((r) => h('option', { value: r, selected: r === (u.service ? 'service' : 'clinician') }, r)));
    box.append(org, role, act('Add to organisation', async () => {
      await send('PUT', `/api/v1/users/${encodeURIComponent(u.username)}/memberships/${encodeURIComponent(org.value)}`, { role: role.value });
      toast(`${u.username} is ${role.value} in ${org.value}`);
    }, { after: reload }));
  }
  return box;
}

/**
 * The actions on user `u`; roles are set in organisation `org` (the one shown, or the
 * caller's). Site administrators (`who.site_admin`) also name and remove site administrators
 * (`PATCH /api/v1/users/{username}` `{"site_admin"}`; not service accounts, and not
 * themselves: the server refuses both).
 */
function userActions(u, org, who, shown, reload) {
  const mine = u.memberships.find((m) => m.org === org) || (u.memberships.length === 1 ? u.memberships[0] : null);
  const box = h('div', { class: 'row-actions' });
  if (mine) {
    const sel = h('select', { 'aria-label': `Role of ${u.username} in ${mine.org}` },
      ROLES.filter((r) => (u.service ? r === 'service' : r !== 'service'))
        .map((r) => h('option', { value: r, selected: r === mine.role }, r)));
    box.append(sel, act('Set role', async () => {
      await send('PATCH', `/api/v1/users/${encodeURIComponent(u.username)}`, { org: mine.org, role: sel.value });
      toast(`${u.username} is ${sel.value} in ${mine.org}`);
    }, { after: reload }));
  }
  box.append(act(u.disabled ? 'Enable' : 'Disable', () =>
    send('PATCH', `/api/v1/users/${encodeURIComponent(u.username)}`, { disabled: !u.disabled }), {
    confirmText: u.disabled ? null : `Disable ${u.username}? Their sessions and tokens stop working.`,
    after: reload,
  }));
  if (who.site_admin === true && !u.service && !(u.site_admin && u.username === who.actor?.name)) {
    const on = !u.site_admin;
    box.append(act(on ? 'Make site administrator' : 'Remove site administration', async () => {
      await send('PATCH', `/api/v1/users/${encodeURIComponent(u.username)}`, { site_admin: on });
      toast(on ? `${u.username} is a site administrator` : `${u.username} is no longer a site administrator`);
    }, {
      confirmText: on
        ? `Make ${u.username} a site administrator? They will create organisations and administer every organisation of this site.`
        : `Remove ${u.username}'s site administration?`,
      after: reload,
    }));
  }
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
    const [t, u] = await Promise.all([json('/api/v1/tokens'), json('/api/v1/users?limit=500')]);
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
