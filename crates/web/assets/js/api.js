// The server's APIs as the app uses them: same-origin requests with the session cookie; the
// session's CSRF token on every request that changes state (docs/security.md). A 401 means the
// session is gone: the visitor is sent to the login page, which comes back here afterwards.

let csrf = null;
/** What a 401 does: the login page, or what a guest page sets (issue 6: share links). */
let unauthorized = () => location.assign(loginUrl());

/** Replaces what a 401 answer does (a share-link visitor has no login to go to). */
export function setUnauthorized(fn) {
  unauthorized = fn;
}

/** Does what a 401 answer does, for answers that came another way (the viewer's frame worker). */
export function sessionGone() {
  unauthorized();
}

/** Remembers the session's CSRF token (from `GET /api/v1/auth/me`). */
export function setCsrf(token) {
  csrf = token || null;
}

/** An error answer of the API: HTTP status, kebab-case code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
  }
}

/** The login page, coming back to where the visitor is. */
export function loginUrl() {
  return `/login?next=${encodeURIComponent(location.pathname + location.search)}`;
}

/** GET answers asked ahead of time (`prefetch`), each taken once by `request`. */
const early = new Map();

/**
 * Starts a GET now (e.g. the viewer's series list while `/api/v1/auth/me` is under way); the
 * first `request` of the same URL and Accept takes its answer instead of asking again.
 */
export function prefetch(url, accept) {
  const key = `${accept} ${url}`;
  if (!early.has(key)) {
    early.set(key, fetch(url, { headers: { Accept: accept }, credentials: 'same-origin' }));
  }
}

/** A request to this server; 401 sends the visitor to log in. */
export async function request(url, opts = {}) {
  const headers = new Headers(opts.headers || {});
  const method = (opts.method || 'GET').toUpperCase();
  if (!['GET', 'HEAD', 'OPTIONS'].includes(method) && csrf) headers.set('X-CSRF-Token', csrf);
  const key = `${headers.get('Accept')} ${url}`;
  const ahead = method === 'GET' && !opts.signal && early.get(key);
  if (ahead) early.delete(key);
  const r = await (ahead ? ahead.catch(() => fetch(url, { ...opts, method, headers, credentials: 'same-origin' }))
    : fetch(url, { ...opts, method, headers, credentials: 'same-origin' }));
  if (r.status === 401) {
    unauthorized();
    throw new ApiError(401, 'unauthorized', 'not logged in');
  }
  return r;
}

/** The error an answer carries (`{"error", "message"}` or its status). */
export async function errorOf(r) {
  let code = `http-${r.status}`, message = r.statusText;
  try {
    const b = await r.json();
    code = b.error || code;
    message = b.message || message;
  } catch { /* not JSON */ }
  return new ApiError(r.status, code, message);
}

/** A JSON answer (`null` for 204); an error answer throws an ApiError. */
export async function json(url, opts = {}) {
  const accept = opts.accept || 'application/json';
  const r = await request(url, { ...opts, headers: { Accept: accept, ...(opts.headers || {}) } });
  if (!r.ok) throw await errorOf(r);
  if (r.status === 204) return null;
  const text = await r.text();
  return text ? JSON.parse(text) : null;
}

/** Who is logged in: `{actor, org, role, must_change_password, csrf}`. */
export function me() {
  return json('/api/v1/auth/me');
}

/** Ends the session and goes to the login page. */
export async function logout() {
  try {
    await request('/api/v1/auth/logout', { method: 'POST' });
  } finally {
    location.assign('/login');
  }
}
