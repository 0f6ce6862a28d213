// The admin console (issue 6): /admin and /admin/{section}. For administrators of the
// organisation the session acts in; others are told so (the API refuses them with 403 anyway).
// Each section is its own address (a plain link), so a section's live stream ends with it.

import { clear, h } from '../dom.js';
import { orgs, tokens, users } from './directory.js';
import { nodes, peers, routes, transfers } from './exchange.js';
import { audit, health, inbox, links } from './records.js';
import { alertRules } from './alerts.js';

/** `[path segment, title, render(who)]` in menu order. */
export const SECTIONS = [
  ['health', 'System', health],
  ['transfers', 'Transfers', transfers],
  ['peers', 'Peers', peers],
  ['nodes', 'DICOM nodes', nodes],
  ['routes', 'Routes', routes],
  ['alerts', 'Alert rules', alertRules],
  ['users', 'Users', users],
  ['tokens', 'Tokens', tokens],
  ['orgs', 'Organisations', orgs],
  ['links', 'Links', links],
  ['inbox', 'Inbox', inbox],
  ['audit', 'Audit', audit],
];

/**
 * Whether `who` may use the console: an administrator of the organisation the session acts in,
 * or the server itself (a site serving anonymous requests as the server, `[auth] required =
 * false`; the only caller that may create organisations).
 */
export function consoleUser(who) {
  return who.role === 'admin' || who.site_admin === true || (who.actor && who.actor.kind === 'system');
}

/** Shows the console's `section` (default: the system's health) in `app`. */
export function adminConsole(app, section, who) {
  document.title = 'Vesalius · Admin';
  document.body.classList.add('admin');
  if (!consoleUser(who)) {
    clear(app).append(h('section', { class: 'admin-refused', role: 'alert' },
      h('h1', {}, 'Admin console'),
      h('p', {}, `The admin console is for administrators. You are ${who.role || 'not'} in ${who.org || 'no organisation'}.`),
      h('p', {}, h('a', { href: '/worklist' }, 'Back to the worklist'))));
    return;
  }
  const found = SECTIONS.find(([k]) => k === (section || 'health'));
  const nav = h('nav', { class: 'admin-nav', 'aria-label': 'Admin sections' },
    SECTIONS.map(([k, title]) => h('a', {
      href: `/admin/${k}`, 'aria-current': found && found[0] === k ? 'page' : null,
    }, title)));
  const main = found ? found[2](who) : h('p', { class: 'error', role: 'alert' }, `No section “${section}”.`);
  clear(app).append(h('div', { class: 'admin-console' },
    h('h1', {}, `Admin · ${who.org || 'the whole site'}`), nav, main));
}
