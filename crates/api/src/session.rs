//! Login, logout, "who am I" and the first-start set-up (issue 4), as JSON endpoints. The
//! screens that use them are the web app's (issue 6: `/login`, `/setup?token=…`,
//! `/account/password` answer the app's shell, `vesalius_web`).
//!
//! - `POST /api/v1/auth/login` `{"username", "password", "remember"?}` → `Set-Cookie:
//!   vesalius_session=…` (HttpOnly, SameSite=Strict, Secure on TLS; without `remember` a
//!   browser-session cookie and a session of `session_ttl`, with it — "Keep me signed in",
//!   issue 6 — a persistent cookie and session of `[auth] remember_days`) and `{"csrf",
//!   "remembered", "session_expires_ms", …}` for `X-CSRF-Token`. The
//!   same throttling, lockout and audit as every login (`Authenticator::login`): a wrong
//!   password is 401 `unauthorized`, a locked username or address 429 `locked`.
//!   The session starts in the organisation the user last switched to, else their first.
//! - `POST /api/v1/auth/logout`, `GET /api/v1/auth/me` (with the session's CSRF token, for pages
//!   reached through a browser login, `site_admin`, and `orgs`: the organisations a session's
//!   user may switch to, `[{"id", "name", "role", "current"}]`; a token's own organisation only).
//! - `POST /api/v1/auth/session/org` `{"org"}` (issue 6): the session acts in another of its
//!   user's organisations from the next request on, with their role there
//!   (`Authenticator::switch_org`, audited `org-switch`); answers like `me`. An organisation the
//!   user is not a member of (or that does not exist) is 403 `forbidden`; API tokens stay bound
//!   to their organisation (403); the session's CSRF token is required.
//! - `GET /api/v1/auth/setup?token=…`: what a set-up or password link is for, without using it
//!   (`{"first_start", "username", "expires_ms"}`; a used one 409, a wrong one 401, an expired
//!   one 401 `expired`).
//! - `POST /api/v1/auth/setup` (JSON `{"token", "password", "username"?}`; `PUT` and
//!   `POST /setup` take the same as a form, for clients without script) sets the first
//!   administrator's username and password, or a password link's password, and logs them in.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use serde::Deserialize;
use serde_json::json;
use vesalius_auth::{Authenticator, Caller, Origin, cookie};

pub(crate) fn error(e: vesalius_auth::Error) -> Response {
    let kind = e.kind();
    let status =
        StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(json!({"error": kind.code(), "message": e.to_string()})),
    )
        .into_response()
}

pub(crate) fn source(ci: &Option<Extension<ConnectInfo<SocketAddr>>>) -> String {
    ci.as_ref().map(|c| c.0.0.to_string()).unwrap_or_default()
}

pub(crate) fn agent(h: &HeaderMap) -> &str {
    crate::authn::header_str(h, header::USER_AGENT.as_str())
}

/// The routes (mount at the root).
pub fn router(auth: Arc<Authenticator>) -> Router {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/me", get(me))
        .route("/api/v1/auth/session/org", post(switch_org))
        .route(
            "/api/v1/auth/setup",
            get(setup_info).post(setup_json).put(setup_form),
        )
        .route("/setup", post(setup_form))
        .with_state(auth)
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
    /// "Keep me signed in" (issue 6): a longer session with a persistent cookie.
    #[serde(default)]
    remember: bool,
}

/// `Clear-Site-Data` (W3C Clear Site Data): sent on login, logout and organisation switch.
const CLEAR_SITE_DATA: header::HeaderName = header::HeaderName::from_static("clear-site-data");

async fn login(
    State(auth): State<Arc<Authenticator>>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Json(l): Json<Login>,
) -> Response {
    let src = source(&ci);
    match auth
        .login_with(
            &l.username,
            &l.password,
            l.remember,
            Origin::new(&src, agent(&headers)),
        )
        .await
    {
        Ok(ok) => (
            [
                (header::SET_COOKIE, auth.login_cookie(&ok)),
                (
                    CLEAR_SITE_DATA,
                    crate::device_cache::CLEAR_SITE_DATA.to_owned(),
                ),
            ],
            Json(json!({
                "csrf": ok.csrf,
                "username": ok.user.username,
                "org": ok.session.org,
                "must_change_password": ok.must_change_password,
                "remembered": ok.remembered,
                "session_expires_ms": ok.session.expires_ms,
            })),
        )
            .into_response(),
        Err(e) => error(e),
    }
}

async fn logout(
    State(auth): State<Arc<Authenticator>>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    let src = source(&ci);
    let secure = auth.options().secure_cookies;
    let cookies = crate::authn::header_str(&headers, header::COOKIE.as_str());
    if let Some(secret) = cookie::session_secret(cookies)
        && let Err(e) = auth
            .logout(secret, Origin::new(&src, agent(&headers)))
            .await
    {
        return error(e);
    }
    // Issue 6: images an organisation let the browser keep (crate::device_cache) go with the
    // session.
    (
        [
            (header::SET_COOKIE, cookie::clear_session_cookie(secure)),
            (
                CLEAR_SITE_DATA,
                crate::device_cache::CLEAR_SITE_DATA.to_owned(),
            ),
        ],
        Json(json!({"status": "logged-out"})),
    )
        .into_response()
}

async fn me(
    State(auth): State<Arc<Authenticator>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
) -> Response {
    let Some(Extension(c)) = caller else {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "unauthorized", "message": "not logged in"})),
        )
            .into_response();
    };
    // A page reached through a browser login (OpenID Connect) learns its CSRF token here.
    let cookies = crate::authn::header_str(&headers, header::COOKIE.as_str());
    let csrf = match cookie::session_secret(cookies) {
        Some(secret) => auth.from_session(secret).await.ok().map(|(_, s)| s.csrf),
        None => None,
    };
    match who(&auth, &c.principal, csrf).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(e),
    }
}

/// `me`'s answer for `p`: who, where, with which role, and where else a session may act.
async fn who(
    auth: &Authenticator,
    p: &vesalius_auth::Principal,
    csrf: Option<String>,
) -> vesalius_auth::Result<serde_json::Value> {
    let dir = auth.directory();
    let current = p.org.as_deref().unwrap_or("");
    // Only a session switches (tokens stay bound to their organisation): its user's
    // memberships, in the user's order.
    let memberships = match (&p.kind, &p.user_id) {
        (vesalius_auth::PrincipalKind::Session { .. }, Some(id)) => dir
            .user(id)
            .await?
            .map(|u| u.memberships)
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let mut orgs = Vec::new();
    for m in memberships {
        let name = dir
            .org(&m.org)
            .await?
            .map_or_else(|| m.org.clone(), |o| o.name);
        orgs.push(json!({
            "id": m.org, "name": name, "role": m.role.as_str(), "current": m.org == current,
        }));
    }
    if orgs.is_empty() && !current.is_empty() {
        let name = dir
            .org(current)
            .await?
            .map_or_else(|| current.to_owned(), |o| o.name);
        orgs.push(json!({
            "id": current, "name": name, "role": p.role.map(|r| r.as_str()), "current": true,
        }));
    }
    Ok(json!({
        "actor": p.actor,
        "org": p.org,
        "role": p.role.map(|r| r.as_str()),
        "must_change_password": p.must_change_password,
        "site_admin": p.site_admin,
        "csrf": csrf,
        "orgs": orgs,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchOrg {
    org: String,
}

async fn switch_org(
    State(auth): State<Arc<Authenticator>>,
    caller: Option<Extension<Caller>>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let refuse = |status: StatusCode, code: &str, message: &str| {
        (status, Json(json!({"error": code, "message": message}))).into_response()
    };
    let Some(Extension(c)) = caller else {
        return refuse(StatusCode::UNAUTHORIZED, "unauthorized", "not logged in");
    };
    // The authentication layer resolved the caller from the session cookie (and checked the
    // CSRF token) unless other credentials came first: those never switch.
    let cookies = crate::authn::header_str(&headers, header::COOKIE.as_str());
    let secret = match (&c.principal.kind, cookie::session_secret(cookies)) {
        (vesalius_auth::PrincipalKind::Session { .. }, Some(s)) => s,
        _ => {
            return refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only a logged-in session switches organisation: API tokens stay bound to the \
                 organisation they were issued for",
            );
        }
    };
    let b: SwitchOrg = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad-request",
                &format!("unreadable body: {e}"),
            );
        }
    };
    let src = source(&ci);
    match auth
        .switch_org(secret, b.org.trim(), Origin::new(&src, agent(&headers)))
        .await
    {
        // What the browser kept under the old organisation's setting goes (crate::device_cache).
        Ok((p, s)) => match who(&auth, &p, Some(s.csrf)).await {
            Ok(v) => (
                [(CLEAR_SITE_DATA, crate::device_cache::CLEAR_SITE_DATA)],
                Json(v),
            )
                .into_response(),
            Err(e) => error(e),
        },
        Err(e) => error(e),
    }
}

#[derive(Deserialize)]
struct Setup {
    token: String,
    password: String,
    /// The first administrator's username (issue 6; default `admin`).
    #[serde(default)]
    username: Option<String>,
}

async fn setup(auth: &Authenticator, src: &str, ua: &str, s: Setup) -> Response {
    match auth
        .complete_setup_as(
            &s.token,
            s.username.as_deref(),
            &s.password,
            Origin::new(src, ua),
        )
        .await
    {
        Ok(ok) => (
            [(header::SET_COOKIE, auth.session_cookie(&ok.cookie_secret))],
            Json(json!({"status": "ready", "username": ok.user.username, "csrf": ok.csrf})),
        )
            .into_response(),
        Err(e) => error(e),
    }
}

async fn setup_json(
    State(auth): State<Arc<Authenticator>>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Json(s): Json<Setup>,
) -> Response {
    setup(&auth, &source(&ci), agent(&headers), s).await
}

async fn setup_form(
    State(auth): State<Arc<Authenticator>>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(s): Form<Setup>,
) -> Response {
    let r = setup(&auth, &source(&ci), agent(&headers), s).await;
    if r.status().is_success() {
        let cookie = r.headers().get(header::SET_COOKIE).cloned();
        let mut page = Html(
            "<!doctype html><title>Vesalius</title><p>The administrator's password is set. \
             You are logged in.</p>",
        )
        .into_response();
        if let Some(c) = cookie {
            page.headers_mut().insert(header::SET_COOKIE, c);
        }
        page
    } else {
        r
    }
}

#[derive(Deserialize)]
struct SetupQuery {
    #[serde(default)]
    token: String,
}

async fn setup_info(
    State(auth): State<Arc<Authenticator>>,
    Query(q): Query<SetupQuery>,
) -> Response {
    match auth.setup_info(&q.token).await {
        Ok(i) => Json(json!({
            "first_start": i.first_start,
            "username": i.username,
            "expires_ms": i.expires_ms,
        }))
        .into_response(),
        Err(e) => error(e),
    }
}
