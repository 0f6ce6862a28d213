// Served by Vesalius at /ohif/vesalius-init.js, first thing in OHIF's index.html (scripts/ohif
// puts it there instead of the dist's two inline scripts, which the Content-Security-Policy
// would block).
console.time('scriptToView');
window.PUBLIC_URL = '/ohif/';
// OHIF loads its extensions and modes through this global.
// eslint-disable-next-line no-unused-vars
function browserImportFunction(n) {
  return import(n);
}
window.browserImportFunction = browserImportFunction;
// OHIF reads this server's DICOMweb under the user's session: without one, log in and come back.
fetch('/api/v1/auth/me', { credentials: 'same-origin' }).then((r) => {
  if (r.status === 401) {
    location.replace(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
  }
});
