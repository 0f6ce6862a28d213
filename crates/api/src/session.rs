//! Login, logout, "who am I" and the first-start set-up (issue 4), as JSON endpoints plus the
//! minimal server-rendered set-up page the start-up banner links to (the web app issue replaces
//! the page).
//!
//! - `POST /api/v1/auth/login` `{"username", "password"}` → `Set-Cookie: vesalius_session=…`
//!   (HttpOnly, SameSite=Strict, Secure on TLS) and `{"csrf": …}` for `X-CSRF-Token`.
//! - `POST /api/v1/auth/logout`, `GET /api/v1/auth/me` (with the session's CSRF token, for pages
//!   reached through a browser login).
//! - `GET /setup?token=…` (a form, no script) → `POST /api/v1/auth/setup` (form or JSON
//!   `{"token", "password"}`) sets the first administrator's password and logs them in.

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
        .route("/api/v1/auth/setup", post(setup_json).put(setup_form))
        .route("/setup", get(setup_page).post(setup_form))
        .with_state(auth)
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

async fn login(
    State(auth): State<Arc<Authenticator>>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Json(l): Json<Login>,
) -> Response {
    let src = source(&ci);
    match auth
        .login(&l.username, &l.password, Origin::new(&src, agent(&headers)))
        .await
    {
        Ok(ok) => (
            [(header::SET_COOKIE, auth.session_cookie(&ok.cookie_secret))],
            Json(json!({
                "csrf": ok.csrf,
                "username": ok.user.username,
                "org": ok.session.org,
                "must_change_password": ok.must_change_password,
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
    (
        [(header::SET_COOKIE, cookie::clear_session_cookie(secure))],
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
    let p = &c.principal;
    // A page reached through a browser login (OpenID Connect) learns its CSRF token here.
    let cookies = crate::authn::header_str(&headers, header::COOKIE.as_str());
    let csrf = match cookie::session_secret(cookies) {
        Some(secret) => auth.from_session(secret).await.ok().map(|(_, s)| s.csrf),
        None => None,
    };
    Json(json!({
        "actor": p.actor,
        "org": p.org,
        "role": p.role.map(|r| r.as_str()),
        "must_change_password": p.must_change_password,
        "csrf": csrf,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct Setup {
    token: String,
    password: String,
}

async fn setup(auth: &Authenticator, src: &str, ua: &str, s: Setup) -> Response {
    match auth
        .complete_setup(&s.token, &s.password, Origin::new(src, ua))
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

async fn setup_page(Query(q): Query<SetupQuery>) -> Html<String> {
    let token: String = q
        .token
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    Html(format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>\
         <title>Vesalius set-up</title><h1>Vesalius: first start</h1>\
         <form method=post action=/setup><input type=hidden name=token value='{token}'>\
         <label>New administrator password (12 characters or more) \
         <input type=password name=password minlength=12 required autocomplete=new-password>\
         </label><button>Set password</button></form>"
    ))
}
