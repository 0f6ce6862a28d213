//! Login and password change for the web app's screens (issue 6), plus the HTML helpers the
//! share-link and guest-upload pages use.
//!
//! - `GET /api/v1/auth/methods`: how one logs in here, for the app's login screen:
//!   `{"password": true, "remember_days": N, "oidc": {"label", "login"} | null}` (served to
//!   anybody; `remember_days`: how long "Keep me signed in" keeps a password login, 0 when the
//!   site offers no such option).
//! - `POST /api/v1/auth/password` `{"current", "new"}`: the caller changes their own password
//!   (the app's password screen; also the way out of "must change password"). A wrong current
//!   password counts as a failed login (throttling, lockout, audit), 401; a weak new one 400.
//! - `POST /login?next=` and `POST /account/password` (issue 4's forms) stay for clients
//!   without script: `GET /login` and `GET /account` (where `GET /account/password` now
//!   leads) are the app's screens (`vesalius_web`), whose forms name these as their `action`. Forms post same-origin, which
//!   the authentication layer accepts instead of a CSRF header (`Sec-Fetch-Site: same-origin`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use serde::Deserialize;
use serde_json::json;
use vesalius_auth::{Authenticator, Caller, Origin};

use crate::session::{agent, source};

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The stylesheet of these pages, served by the web app (`crates/web/assets/pages.css`, issue 6):
/// the Content-Security-Policy of HTML pages forbids inline `<style>`. Without the web app the
/// pages still work, unstyled.
pub const STYLESHEET: &str = "/app/pages.css";

/// A whole page: `title` (escaped here) and `body` (already HTML).
pub fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=en><meta charset=utf-8>\
         <meta name=viewport content='width=device-width,initial-scale=1'>\
         <meta name=referrer content=no-referrer>\
         <title>{t} · Vesalius</title><link rel=stylesheet href={STYLESHEET}>\
         <body class=page><main><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title)
    ))
}

/// A page with a status.
pub fn page_status(status: StatusCode, title: &str, body: &str) -> Response {
    (status, page(title, body)).into_response()
}

/// State of the pages: the authenticator and the OpenID Connect button's label, if any.
#[derive(Clone)]
struct PagesState {
    auth: Arc<Authenticator>,
    oidc_button: Option<Arc<str>>,
}

/// The routes: `POST /login`, `POST /account/password`, `GET /api/v1/auth/methods`,
/// `POST /api/v1/auth/password`. `oidc_button` labels the OpenID Connect login, offered only
/// when the site has a provider.
pub fn router(auth: Arc<Authenticator>, oidc_button: Option<String>) -> Router {
    Router::new()
        .route("/login", post(login_form))
        .route(
            "/account/password",
            get(|| async { Redirect::to("/account") }).post(password_form),
        )
        .route("/api/v1/auth/methods", get(methods))
        .route("/api/v1/auth/password", post(password_json))
        .with_state(PagesState {
            auth,
            oidc_button: oidc_button.map(Into::into),
        })
}

#[derive(Deserialize, Default)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

/// Only same-site relative paths are followed after login (no open redirect).
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

fn login_body(next: &str, error: Option<&str>, oidc: Option<&str>) -> String {
    let err = error
        .map(|e| format!("<p class=err role=alert>{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "{err}<form method=post action='/login?next={n}'>\
         <label>Username <input name=username required autocomplete=username autofocus></label>\
         <label>Password <input type=password name=password required \
         autocomplete=current-password></label><button>Log in</button></form>{o}",
        n = esc(&urlencode(safe_next(next))),
        o = oidc
            .map(|label| format!(
                "<p><a href='/api/v1/auth/oidc/login?next={}'>{}</a></p>",
                esc(&urlencode(safe_next(next))),
                esc(label)
            ))
            .unwrap_or_default()
    )
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn methods(State(ps): State<PagesState>) -> Json<serde_json::Value> {
    let remember_ms = ps.auth.options().remember_ttl_ms;
    Json(json!({
        "password": true,
        // Whole days, rounded up (a site may configure hours in tests).
        "remember_days": (remember_ms + 86_399_999) / 86_400_000,
        "oidc": ps.oidc_button.as_deref().map(|label| json!({
            "label": label,
            "login": crate::oidc::LOGIN_PATH,
        })),
    }))
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    /// The "Keep me signed in" checkbox (`on` when ticked).
    #[serde(default)]
    remember: Option<String>,
}

async fn login_form(
    State(ps): State<PagesState>,
    ci: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
    Form(f): Form<LoginForm>,
) -> Response {
    let src = source(&ci);
    let auth = &ps.auth;
    match auth
        .login_with(
            &f.username,
            &f.password,
            f.remember.is_some(),
            Origin::new(&src, agent(&headers)),
        )
        .await
    {
        Ok(ok) => {
            let to = if ok.must_change_password {
                "/account/password"
            } else {
                safe_next(&q.next)
            };
            (
                [
                    (header::SET_COOKIE, auth.login_cookie(&ok)),
                    (
                        header::HeaderName::from_static("clear-site-data"),
                        crate::device_cache::CLEAR_SITE_DATA.to_owned(),
                    ),
                ],
                Redirect::to(to),
            )
                .into_response()
        }
        Err(e) => {
            let status =
                StatusCode::from_u16(e.kind().http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            let body = login_body(&q.next, Some(&e.to_string()), ps.oidc_button.as_deref());
            page_status(status, "Log in", &body)
        }
    }
}

fn password_body(error: Option<&str>, done: bool) -> String {
    if done {
        return "<p>Your password was changed.</p><p><a href='/'>Continue</a></p>".into();
    }
    let err = error
        .map(|e| format!("<p class=err role=alert>{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "{err}<form method=post action=/account/password>\
         <label>Current password <input type=password name=current required \
         autocomplete=current-password></label>\
         <label>New password (12 characters or more) <input type=password name=new \
         minlength=12 required autocomplete=new-password></label>\
         <button>Change password</button></form>"
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current: String,
    new: String,
}

async fn password_json(
    State(ps): State<PagesState>,
    caller: Option<Extension<Caller>>,
    bytes: axum::body::Bytes,
) -> Response {
    let Some((c, user_id)) = caller.and_then(|Extension(c)| {
        let id = c.principal.user_id.clone()?;
        Some((c, id))
    }) else {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"error": "forbidden", "message": "only a logged-in user has a password"})),
        )
            .into_response();
    };
    // Sessions only: an API token does not change its user's password.
    if !matches!(
        c.principal.kind,
        vesalius_auth::PrincipalKind::Session { .. }
    ) {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"error": "forbidden", "message": "log in to change your password"})),
        )
            .into_response();
    }
    let b: PasswordChange = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "bad-request", "message": format!("unreadable body: {e}")})),
            )
                .into_response();
        }
    };
    let origin = Origin::new(&c.source, &c.user_agent);
    match ps
        .auth
        .change_password(&user_id, &b.current, &b.new, origin)
        .await
    {
        Ok(()) => Json(json!({"status": "changed"})).into_response(),
        Err(e) => crate::session::error(e),
    }
}

#[derive(Deserialize)]
struct PasswordForm {
    current: String,
    new: String,
}

async fn password_form(
    State(ps): State<PagesState>,
    caller: Option<Extension<Caller>>,
    Form(f): Form<PasswordForm>,
) -> Response {
    let Some((c, user_id)) = caller.and_then(|Extension(c)| {
        let id = c.principal.user_id.clone()?;
        Some((c, id))
    }) else {
        return Redirect::to("/login?next=/account/password").into_response();
    };
    let origin = Origin::new(&c.source, &c.user_agent);
    match ps
        .auth
        .change_password(&user_id, &f.current, &f.new, origin)
        .await
    {
        Ok(_) => page("Change password", &password_body(None, true)).into_response(),
        Err(e) => {
            let status =
                StatusCode::from_u16(e.kind().http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            page_status(
                status,
                "Change password",
                &password_body(Some(&e.to_string()), false),
            )
        }
    }
}
