//! OpenID Connect login endpoints (issue 4) over [`vesalius_auth::oidc`]. Both paths are open
//! (no credentials needed; see [`crate::authn`]).
//!
//! - `GET /api/v1/auth/oidc/login[?next=/path]` → `302 Found` to the provider's authorization
//!   URL, setting the pending-login cookie (`vesalius_oidc`: state, nonce, PKCE verifier and
//!   `next`, `SameSite=Lax`, ten minutes). `next` is kept only when it is a path on this site
//!   ([`vesalius_auth::oidc::safe_next`]); anything else is ignored (no open redirect).
//! - `GET /api/v1/auth/oidc/callback?code&state` (where the provider sends the browser back) →
//!   checks state, exchanges the code with PKCE, verifies the ID token, maps the identity to a
//!   user ([`Authenticator::oidc_login`]) and starts the same session a password login starts
//!   (`vesalius_session` cookie). The answer depends on `Accept`:
//!   - `text/html` (a browser): `200` with a page that moves on to `next` (default `/`) by
//!     itself. Not a redirect on purpose: the navigation began at the provider, a cross-site
//!     redirect chain, and browsers withhold the `SameSite=Strict` session cookie on every hop of
//!     such a chain; the page's own navigation is same-site, so the cookie goes along.
//!   - `application/json`: `200 {"csrf", "username", "org", "must_change_password", "next"}`,
//!     like `POST /api/v1/auth/login`.
//!   - anything else: `303 See Other` to `next`.
//!
//!   Refusals: `401` (provider error such as `access_denied`, no pending login, state mismatch,
//!   code or ID token refused), `403` (no active user matches the identity), `503` (provider
//!   unreachable), as `{"error": code, "message": …}` or a short HTML page per `Accept`. Every
//!   refusal is audited `login-failed` (method `oidc`, with the reason) and every outcome clears
//!   the pending cookie.
//!
//! The provider is discovered in the background ([`OidcService::spawn_discovery`]): until it
//! answers, both endpoints say `503` and password login works as usual.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::json;
use vesalius_auth::oidc::{
    OIDC_COOKIE, OidcClient, OidcOptions, PendingLogin, clear_pending_cookie, pending_cookie,
};
use vesalius_auth::{Authenticator, Error, Origin, cookie};

/// Path of the login endpoint.
pub const LOGIN_PATH: &str = "/api/v1/auth/oidc/login";
/// Path of the callback endpoint (the redirect URL registered with the provider ends in it).
pub const CALLBACK_PATH: &str = "/api/v1/auth/oidc/callback";

/// The identity provider as the HTTP layer sees it: a client once discovery succeeded, and the
/// label of the login button. Cheap to clone (shared).
#[derive(Clone)]
pub struct OidcService {
    inner: Arc<Inner>,
}

struct Inner {
    client: RwLock<Option<Arc<OidcClient>>>,
    issuer: String,
    display_name: String,
}

impl OidcService {
    /// A service whose client is ready.
    pub fn ready(client: Arc<OidcClient>, display_name: &str) -> Self {
        let issuer = client.options().issuer.clone();
        let s = Self::pending(&issuer, display_name);
        s.set_client(client);
        s
    }

    /// A service waiting for discovery ([`Self::spawn_discovery`]) of `issuer`.
    pub fn pending(issuer: &str, display_name: &str) -> Self {
        OidcService {
            inner: Arc::new(Inner {
                client: RwLock::new(None),
                issuer: issuer.to_owned(),
                display_name: display_name.to_owned(),
            }),
        }
    }

    /// The client, once discovered.
    pub fn client(&self) -> Option<Arc<OidcClient>> {
        self.inner.client.read().expect("oidc lock").clone()
    }

    fn set_client(&self, client: Arc<OidcClient>) {
        *self.inner.client.write().expect("oidc lock") = Some(client);
    }

    /// The label for a login button (`[auth.oidc] display_name`), and where it points.
    pub fn login_button(&self) -> (&str, &'static str) {
        (&self.inner.display_name, LOGIN_PATH)
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// Discovers the provider in a background task, retrying with backoff (1 s doubling to a
    /// minute, each failure logged) until it answers; the login endpoints work from then on.
    /// A provider that is down at start does not stop the archive: password login, tokens and
    /// DICOM go on meanwhile.
    pub fn spawn_discovery(&self, opts: OidcOptions) -> tokio::task::JoinHandle<()> {
        let svc = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_secs(1);
            loop {
                match OidcClient::discover(opts.clone()).await {
                    Ok(c) => {
                        tracing::info!(issuer = %opts.issuer, "identity provider discovered: OpenID Connect login enabled");
                        svc.set_client(Arc::new(c));
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(issuer = %opts.issuer, error = %e, retry_in_s = delay.as_secs(), "identity provider discovery failed");
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        })
    }
}

/// The routes for a discovered provider (mount at the root). The login button reads
/// "Single sign-on"; [`service_router`] takes a label and a provider still being discovered.
pub fn router(auth: Arc<Authenticator>, client: Arc<OidcClient>) -> Router {
    service_router(auth, OidcService::ready(client, "Single sign-on"))
}

/// The routes over an [`OidcService`] (mount at the root).
pub fn service_router(auth: Arc<Authenticator>, svc: OidcService) -> Router {
    Router::new()
        .route(LOGIN_PATH, get(login))
        .route(CALLBACK_PATH, get(callback))
        .with_state(St { auth, svc })
}

#[derive(Clone)]
struct St {
    auth: Arc<Authenticator>,
    svc: OidcService,
}

/// What the client wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Html,
    Json,
    Other,
}

fn wants(h: &HeaderMap) -> Want {
    let accept = crate::authn::header_str(h, header::ACCEPT.as_str()).to_ascii_lowercase();
    if accept.contains("text/html") {
        Want::Html
    } else if accept.contains("application/json") {
        Want::Json
    } else {
        Want::Other
    }
}

fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A refusal: status and code from the error's kind, JSON or a page per `Accept`.
/// `next` for a query string: everything but unreserved characters and `/` percent-encoded
/// (RFC 3986 2.1).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The refusal of a login; a browser goes back to the login screen with the code, and with the
/// page it was going to (`next`, a path of this site: issue 6) so a second try lands there.
fn refusal(e: &Error, want: Want, secure: bool, next: Option<&str>) -> Response {
    let kind = e.kind();
    let status =
        StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = e.to_string();
    let clear = AppendHeaders([(header::SET_COOKIE, clear_pending_cookie(secure))]);
    if want == Want::Html {
        // A browser moves on to the app's login screen, which says what happened in the app's
        // own words for the code (only a code crosses: a message in the address would let
        // anyone put text of their choosing on the login screen). The page says it too, for a
        // browser that does not follow the refresh.
        let back = next
            .and_then(vesalius_auth::oidc::safe_next)
            .map(|n| format!("&next={}", query_escape(n)))
            .unwrap_or_default();
        let to = escape(&format!("/login?refused={}{back}", kind.code()));
        let page = format!(
            "<!doctype html><meta charset=utf-8><title>Vesalius: login refused</title>\
             <meta http-equiv=refresh content=\"0;url={to}\">\
             <h1>Login refused</h1><p>{}</p><p><a href=\"{to}\">Try again</a></p>",
            escape(&message),
        );
        (status, clear, Html(page)).into_response()
    } else {
        (
            status,
            clear,
            Json(json!({"error": kind.code(), "message": message})),
        )
            .into_response()
    }
}

fn unavailable() -> Error {
    Error::OidcProvider("not reachable yet (discovery is retried); password login works".into())
}

fn source(ci: &Option<Extension<ConnectInfo<SocketAddr>>>) -> String {
    ci.as_ref().map(|c| c.0.0.to_string()).unwrap_or_default()
}

/// The query as pairs: reading it cannot fail (repeated keys, stray parameters), so every
/// answer, refusals included, comes from the handlers below and clears the pending cookie.
type Pairs = Query<Vec<(String, String)>>;

/// The first value of `key`.
fn param<'q>(q: &'q [(String, String)], key: &str) -> Option<&'q str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

async fn login(State(st): State<St>, headers: HeaderMap, Query(q): Pairs) -> Response {
    let secure = st.auth.options().secure_cookies;
    let Some(client) = st.svc.client() else {
        return refusal(&unavailable(), wants(&headers), secure, param(&q, "next"));
    };
    let start = client.begin_with_next(param(&q, "next"));
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, start.url),
            (
                header::SET_COOKIE,
                pending_cookie(&start.cookie_value, secure),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

/// At most `max` characters of text from the provider's redirect, for messages and the audit.
fn clip(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

async fn callback(
    State(st): State<St>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(q): Pairs,
) -> Response {
    // RFC 6749 4.1.2 and 4.1.2.1. `iss` (RFC 9207) is not needed: there is one provider, and
    // the ID token's issuer is checked.
    let (code, state) = (param(&q, "code"), param(&q, "state"));
    let want = wants(&headers);
    let secure = st.auth.options().secure_cookies;
    let src = source(&ci);
    let ua = crate::authn::header_str(&headers, header::USER_AGENT.as_str());
    let origin = Origin::new(&src, ua);
    let cookies = crate::authn::header_str(&headers, header::COOKIE.as_str());
    let pending = cookie::cookie_value(cookies, OIDC_COOKIE).unwrap_or("");
    // Where the browser was going: back to the login screen with it when refused.
    let back = PendingLogin::parse(pending).and_then(|p| p.next);

    // Refusals before an identity is known are audited here; after, by `oidc_login`.
    let refuse = |reason: &'static str, e: Error| {
        let auth = st.auth.clone();
        let detail = e.to_string();
        let (src, ua, back) = (src.clone(), ua.to_owned(), back.clone());
        async move {
            if let Err(ae) = auth
                .oidc_refused(reason, &detail, Origin::new(&src, &ua))
                .await
            {
                tracing::error!(error = %ae, "auditing a refused OpenID Connect login");
                return refusal(&ae, want, secure, back.as_deref());
            }
            refusal(&e, want, secure, back.as_deref())
        }
    };

    if let Some(err) = param(&q, "error") {
        let desc = param(&q, "error_description").unwrap_or("");
        let msg = format!(
            "the identity provider answered {}{}{}",
            clip(err, 64),
            if desc.is_empty() { "" } else { ": " },
            clip(desc, 256)
        );
        return refuse("provider-error", Error::OidcRejected(msg)).await;
    }
    let Some(client) = st.svc.client() else {
        return refuse("provider-unavailable", unavailable()).await;
    };
    let Some(p) = PendingLogin::parse(pending) else {
        let e = Error::OidcRejected(
            "no pending login in this browser (it expired after ten minutes, cookies are \
             blocked, or the login started elsewhere): start again"
                .into(),
        );
        return refuse("no-pending-login", e).await;
    };
    let state = state.unwrap_or("");
    if !vesalius_auth::secret::constant_time_eq(state, &p.state) {
        let e = Error::OidcRejected("state does not match the pending login".into());
        return refuse("state-mismatch", e).await;
    }
    let identity = match client.finish(code.unwrap_or(""), state, pending).await {
        Ok(i) => i,
        Err(e) => {
            let reason = match &e {
                Error::OidcProvider(_) => "provider-unavailable",
                _ => "token-rejected",
            };
            tracing::warn!(error = %e, "OpenID Connect callback refused");
            return refuse(reason, e).await;
        }
    };
    let link = client.options().link_by_email;
    let ok = match st.auth.oidc_login(&identity, link, origin).await {
        Ok(ok) => ok,
        Err(e) => return refusal(&e, want, secure, back.as_deref()),
    };
    let next = p.next.unwrap_or_else(|| "/".to_owned());
    let cookies = AppendHeaders([
        (
            header::SET_COOKIE,
            st.auth.session_cookie(&ok.cookie_secret),
        ),
        (header::SET_COOKIE, clear_pending_cookie(secure)),
        // Issue 6: a new session starts with nothing kept (crate::device_cache).
        (
            header::HeaderName::from_static("clear-site-data"),
            crate::device_cache::CLEAR_SITE_DATA.to_owned(),
        ),
    ]);
    match want {
        Want::Html => {
            let n = escape(&next);
            let page = format!(
                "<!doctype html><meta charset=utf-8>\
                 <meta http-equiv=refresh content=\"0;url={n}\"><title>Vesalius</title>\
                 <p>Logged in as {}. <a href=\"{n}\">Continue</a></p>",
                escape(&ok.user.username)
            );
            (cookies, Html(page)).into_response()
        }
        Want::Json => (
            cookies,
            Json(json!({
                "csrf": ok.csrf,
                "username": ok.user.username,
                "org": ok.session.org,
                "must_change_password": ok.must_change_password,
                "next": next,
            })),
        )
            .into_response(),
        Want::Other => (cookies, Redirect::to(&next)).into_response(),
    }
}

#[cfg(test)]
mod tests {
    //! The endpoints without a provider: refusals, cookies and redirects. The whole flow
    //! against a real provider is tests/interop/test_oidc.py.

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    use vesalius_auth::AuthOptions;
    use vesalius_auth::password::PasswordParams;
    use vesalius_store::AuditLog;
    use vesalius_store::audit::AuditFilter;
    use vesalius_store::memory_directory::{MemoryAuditLog, MemoryDirectory};

    use super::*;

    const DISCOVERY: &str = r#"{
        "issuer": "https://idp.example",
        "authorization_endpoint": "https://idp.example/auth",
        "token_endpoint": "https://idp.example/token",
        "jwks_uri": "https://idp.example/jwks",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"]
    }"#;

    fn setup(ready: bool) -> (Router, Arc<MemoryAuditLog>) {
        let log = Arc::new(MemoryAuditLog::new());
        let dir = Arc::new(MemoryDirectory::new(log.clone()));
        let auth = Arc::new(Authenticator::new(
            dir,
            log.clone(),
            AuthOptions::new()
                .password_params(PasswordParams::INSECURE_FOR_TESTS)
                .secure_cookies(false),
        ));
        let opts = OidcOptions::new(
            "https://idp.example",
            "vesalius",
            "http://127.0.0.1:8080/api/v1/auth/oidc/callback",
        );
        let svc = if ready {
            let c = OidcClient::from_metadata_json(opts, DISCOVERY).unwrap();
            OidcService::ready(Arc::new(c), "Hospital login")
        } else {
            OidcService::pending("https://idp.example", "Hospital login")
        };
        assert_eq!(svc.login_button(), ("Hospital login", LOGIN_PATH));
        (service_router(auth, svc), log)
    }

    async fn get(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = Request::get(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        app.clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn set_cookies(r: &Response) -> Vec<String> {
        r.headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    async fn body_json(r: Response) -> serde_json::Value {
        let b = r.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&b).unwrap()
    }

    async fn reasons(log: &MemoryAuditLog) -> Vec<String> {
        log.search(&AuditFilter::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.event.action == "login-failed")
            .map(|r| r.event.details["reason"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    #[tokio::test]
    async fn login_redirects_to_the_provider_with_a_pending_cookie() {
        let (app, _) = setup(true);
        let r = get(&app, "/api/v1/auth/oidc/login?next=/studies%3Fa=1", &[]).await;
        assert_eq!(r.status(), StatusCode::FOUND);
        let to = r.headers()[header::LOCATION].to_str().unwrap();
        assert!(to.starts_with("https://idp.example/auth?"), "{to}");
        let c = set_cookies(&r);
        assert_eq!(c.len(), 1);
        let value = c[0]
            .strip_prefix("vesalius_oidc=")
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        let p = PendingLogin::parse(value).unwrap();
        assert_eq!(p.next.as_deref(), Some("/studies?a=1"));
        assert!(to.contains(&format!("state={}", p.state)));
        // Another site as `next` is dropped.
        let r = get(
            &app,
            "/api/v1/auth/oidc/login?next=https://evil.example/",
            &[],
        )
        .await;
        let c = set_cookies(&r);
        let value = c[0].split(';').next().unwrap();
        let p = PendingLogin::parse(value.strip_prefix("vesalius_oidc=").unwrap()).unwrap();
        assert_eq!(p.next, None);
    }

    #[tokio::test]
    async fn callbacks_are_refused_audited_and_clear_the_pending_cookie() {
        let (app, log) = setup(true);
        let r = get(&app, "/api/v1/auth/oidc/login", &[]).await;
        let pending = set_cookies(&r)[0].split(';').next().unwrap().to_owned();
        let state = PendingLogin::parse(pending.strip_prefix("vesalius_oidc=").unwrap())
            .unwrap()
            .state;

        let cases = [
            (
                format!("?error=access_denied&error_description=User+said+no&state={state}"),
                pending.as_str(),
                401,
                "provider-error",
            ),
            (
                format!("?code=c&state={state}"),
                "",
                401,
                "no-pending-login",
            ),
            (
                "?code=c&state=tampered".to_owned(),
                pending.as_str(),
                401,
                "state-mismatch",
            ),
            // Repeated keys: the first counts, and the answer is still ours.
            (
                format!("?code=c&state=tampered&state={state}"),
                pending.as_str(),
                401,
                "state-mismatch",
            ),
        ];
        for (query, cookie, status, reason) in &cases {
            let uri = format!("/api/v1/auth/oidc/callback{query}");
            let r = get(&app, &uri, &[("cookie", cookie)]).await;
            assert_eq!(r.status().as_u16(), *status, "{reason}");
            let c = set_cookies(&r);
            assert_eq!(c.len(), 1, "{reason}: only the pending cookie, cleared");
            assert!(c[0].starts_with("vesalius_oidc=;") && c[0].ends_with("Max-Age=0"));
            let v = body_json(r).await;
            assert_eq!(v["error"], "unauthorized", "{reason}");
            assert!(!v["message"].as_str().unwrap().is_empty());
        }
        let r = get(
            &app,
            "/api/v1/auth/oidc/callback?error=access_denied&error_description=%3Cscript%3E",
            &[("accept", "text/html")],
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let page = r.into_body().collect().await.unwrap().to_bytes();
        let page = String::from_utf8_lossy(&page);
        assert!(
            page.contains("&lt;script&gt;") && !page.contains("<script>"),
            "{page}"
        );
        assert_eq!(
            reasons(&log).await,
            vec![
                "provider-error",
                "state-mismatch",
                "state-mismatch",
                "no-pending-login",
                "provider-error"
            ]
        );
    }

    #[tokio::test]
    async fn until_discovery_succeeds_the_endpoints_say_unavailable() {
        let (app, _) = setup(false);
        let r = get(&app, "/api/v1/auth/oidc/login", &[]).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body_json(r).await["error"], "unavailable");
        let r = get(&app, "/api/v1/auth/oidc/callback?code=c&state=s", &[]).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
