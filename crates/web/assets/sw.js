// The Vesalius app's service worker (served at /sw.js; crates/web/src/sw.rs fills in the
// version and the asset list). It caches the app shell and this version's assets only: never an
// API or DICOMweb answer, never an image (/dicom-web and /api are never cached).
const VERSION = '{{V}}';
const CACHE = `vesalius-app-${VERSION}`;
const ASSETS = ["{{ASSETS}}"];
const SHELL = '/worklist';
const APP_PAGES = /^\/(worklist|viewer|alerts|view\/[^/]+)?$/;

self.addEventListener('install', (e) => {
  e.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(ASSETS);
    // The shell holds no data; fetched without credentials so no session is involved.
    const shell = await fetch(SHELL, { credentials: 'omit', cache: 'no-store' });
    if (shell.ok) await cache.put(SHELL, shell);
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (e) => {
  e.waitUntil((async () => {
    for (const key of await caches.keys()) {
      if (key.startsWith('vesalius-app-') && key !== CACHE) await caches.delete(key);
    }
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (e) => {
  const req = e.request;
  if (req.method !== 'GET') return;
  const url = new URL(req.url);
  if (url.origin !== self.location.origin) return;
  if (req.mode === 'navigate' && APP_PAGES.test(url.pathname)) {
    // Network first: the server decides (login redirects, a new version); offline, the shell.
    e.respondWith(fetch(req).catch(async () => (await caches.match(SHELL)) || Response.error()));
    return;
  }
  if (url.pathname.startsWith(`/app/${VERSION}/`)) {
    e.respondWith((async () => (await caches.match(req)) || fetch(req))());
  }
  // Anything else (the API, DICOMweb, images, OHIF): not intercepted, never cached.
});
