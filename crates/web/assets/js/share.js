// The share-link page (`/s/{id}`, issue 6): the app's viewer on the link's one study. The
// visitor got here through `/s/{id}/{secret}` (with the passcode or date-of-birth check when the
// link asks for one), which set the link's pass cookie; the pass opens DICOMweb for this study
// only (docs/sharing.md). A "Download (zip)" button when the link allows download.

import { setUnauthorized } from './api.js';
import { clear, h } from './dom.js';
import { viewer } from './viewer.js';

function addStylesheet() {
  if (document.getElementById('guest-css')) return;
  document.head.append(h('link', { id: 'guest-css', rel: 'stylesheet', href: new URL('../guest.css', import.meta.url).href }));
}

function gone(app, text) {
  clear(app).append(h('section', { class: 'upload' }, h('h1', {}, 'Shared images'),
    h('p', { class: 'error', role: 'alert', id: 'share-error' }, text)));
}

export async function sharePage(app) {
  addStylesheet();
  document.body.classList.add('guest');
  const brand = document.querySelector('.brand');
  if (brand) brand.removeAttribute('href');
  const id = decodeURIComponent(location.pathname.split('/')[2] || '');
  const expired = 'Please open the full link you were given again (your access has ended, or the link expired or was withdrawn).';
  // The pass ends (2 h at most, or the link is withdrawn): no login page for a visitor.
  setUnauthorized(() => gone(app, expired));
  let info;
  try {
    const r = await fetch(`/s/${encodeURIComponent(id)}/info`, { headers: { Accept: 'application/json' }, cache: 'no-store' });
    if (r.status === 401) return gone(app, expired);
    if (!r.ok) throw new Error(r.statusText);
    info = await r.json();
  } catch (e) {
    return gone(app, `The shared study cannot be shown: ${e.message}`);
  }
  const extra = [];
  if (info.download_url) {
    extra.push(h('a', { class: 'button download', id: 'download', href: info.download_url, download: '' }, 'Download (zip)'));
  }
  extra.push(h('a', { class: 'button', href: `/s/${encodeURIComponent(id)}/images` }, 'Simple page'));
  return viewer(app, { study: info.study_uid, back: null, extra });
}
