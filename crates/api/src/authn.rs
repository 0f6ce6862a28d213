//! The HTTP authentication layer (issue 4): turns a request's credentials into a
//! [`vesalius_auth::Caller`] request extension that every router below reads.
//!
//! - `Authorization: Bearer vsl_…` (API tokens) or the `vesalius_session` cookie (logins); a
//!   cookie-authenticated request that changes state (`POST`, `PUT`, `PATCH`, `DELETE`) must carry
//!   the session's CSRF token in `X-CSRF-Token`.
//! - Invalid, expired or revoked credentials: 401 `{"error": "unauthorized"}`, never a fallback.
//! - No credentials: 401 as well when [`AuthnOptions::required`] (the default); open paths
//!   (`/healthz`, `/readyz`, `/metrics`, login and first-start set-up) are always served.
//!   `required = false` exists only for test suites that do not yet carry credentials: the
//!   request then acts as the server itself, and the start-up banner says so.
//! - The caller's [`vesalius_store::query::Access`] is resolved here once per request.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use vesalius_auth::{Authenticator, Caller, cookie};

/// Options of the authentication layer.
#[derive(Debug, Clone)]
pub struct AuthnOptions {
    /// Refuse requests without credentials (default true).
    pub required: bool,
}

impl Default for AuthnOptions {
    fn default() -> Self {
        AuthnOptions { required: true }
    }
}

/// State of the layer.
#[derive(Clone)]
pub struct Authn {
    auth: Arc<Authenticator>,
    opts: AuthnOptions,
}

impl Authn {
    /// The layer over `auth`.
    pub fn new(auth: Arc<Authenticator>, opts: AuthnOptions) -> Self {
        Authn { auth, opts }
    }
}

/// Paths served to anybody.
fn open_path(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/readyz"
            | "/metrics"
            | "/api/v1/auth/login"
            | "/api/v1/auth/logout"
            | "/api/v1/auth/setup"
            | "/setup"
    )
}

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"error": "unauthorized", "message": message})),
    )
        .into_response()
}

/// The middleware: `axum::middleware::from_fn_with_state(Authn, authenticate)`.
pub async fn authenticate(State(a): State<Authn>, mut req: Request, next: Next) -> Response {
    let source = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let user_agent = header_str(req.headers(), header::USER_AGENT.as_str()).to_owned();
    let resolved = match credentials(&a, req.headers(), req.method()).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let principal = match resolved {
        Some(p) => p,
        None if open_path(req.uri().path()) => return next.run(req).await,
        None if !a.opts.required => vesalius_auth::Principal::system(),
        None => return unauthorized("credentials required: a bearer token or a session"),
    };
    let access = match a.auth.access(&principal).await {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "resolving access");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "unavailable", "message": "access control unavailable"})),
            )
                .into_response();
        }
    };
    req.extensions_mut().insert(Caller {
        principal,
        access,
        source,
        user_agent,
    });
    next.run(req).await
}

/// A header's value as text ("" when absent or not text).
pub(crate) fn header_str<'h>(h: &'h HeaderMap, name: &str) -> &'h str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The principal the request's credentials name, `None` without credentials, or the 401 to send.
async fn credentials(
    a: &Authn,
    headers: &HeaderMap,
    method: &Method,
) -> Result<Option<vesalius_auth::Principal>, Response> {
    if let Some(token) = cookie::bearer_token(header_str(headers, header::AUTHORIZATION.as_str())) {
        return match a.auth.from_bearer(token).await {
            Ok(p) => Ok(Some(p)),
            Err(e) => Err(unauthorized(&e.to_string())),
        };
    }
    if let Some(secret) = cookie::session_secret(header_str(headers, header::COOKIE.as_str())) {
        let (p, session) = match a.auth.from_session(secret).await {
            Ok(x) => x,
            Err(e) => return Err(unauthorized(&e.to_string())),
        };
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe
            && let Err(e) = a.auth.check_csrf(
                &session,
                headers.get("x-csrf-token").and_then(|v| v.to_str().ok()),
            )
        {
            return Err((
                StatusCode::FORBIDDEN,
                Json(json!({"error": "forbidden", "message": e.to_string()})),
            )
                .into_response());
        }
        return Ok(Some(p));
    }
    Ok(None)
}
