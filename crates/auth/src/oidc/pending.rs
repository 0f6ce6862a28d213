//! The pending login: what the browser carries between [`super::OidcClient::begin`] and the
//! callback, in the [`OIDC_COOKIE`] cookie.
//!
//! Value: `state.nonce.verifier[.next]`, where the first three are the base64url secrets the
//! `openidconnect` crate makes (no `.` in them) and `next` is the base64url (no padding) of the
//! relative path to return to. Nothing is kept in the process, so any node can take the
//! callback; the cookie binds the callback to the browser that started the login.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The cookie holding the pending login (state, nonce, PKCE verifier, where to return).
pub const OIDC_COOKIE: &str = "vesalius_oidc";
/// Lifetime of a pending login, seconds: the time a person has to log in at the provider.
pub const PENDING_SECS: i64 = 600;
/// Longest `next` path kept; longer ones are dropped (the login still works, it returns to `/`).
pub const MAX_NEXT_LEN: usize = 1024;

/// A pending login read back from its cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLogin {
    /// The `state` sent to the provider.
    pub state: String,
    /// The `nonce` sent to the provider.
    pub nonce: String,
    /// The PKCE code verifier.
    pub verifier: String,
    /// The same-site path to return to after the login, if one was asked for and is safe.
    pub next: Option<String>,
}

impl PendingLogin {
    /// The cookie value.
    pub fn to_cookie_value(&self) -> String {
        let mut v = format!("{}.{}.{}", self.state, self.nonce, self.verifier);
        if let Some(n) = self.next.as_deref().and_then(safe_next) {
            v.push('.');
            v.push_str(&URL_SAFE_NO_PAD.encode(n));
        }
        v
    }

    /// Parses a cookie value; `None` when it is not one of ours.
    pub fn parse(value: &str) -> Option<PendingLogin> {
        let mut parts = value.split('.');
        let (Some(state), Some(nonce), Some(verifier)) = (parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let next = match parts.next() {
            None => None,
            Some(b) => {
                let bytes = URL_SAFE_NO_PAD.decode(b).ok()?;
                let s = String::from_utf8(bytes).ok()?;
                // Checked again on the way out: the cookie came back from the browser.
                Some(safe_next(&s)?.to_owned())
            }
        };
        let b64 = |s: &str| {
            !s.is_empty()
                && s.len() <= 256
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if parts.next().is_some() || !b64(state) || !b64(nonce) || !b64(verifier) {
            return None;
        }
        Some(PendingLogin {
            state: state.to_owned(),
            nonce: nonce.to_owned(),
            verifier: verifier.to_owned(),
            next,
        })
    }
}

/// `next` if it is a path on this site: it starts with one `/`, is not protocol-relative
/// (`//host`, `/\host`, which browsers treat as another host), and is printable ASCII without
/// backslashes (anything else in a URL is percent-encoded). Anything else (absolute URLs
/// included) is refused, so a login link cannot send the browser elsewhere (an open redirect).
pub fn safe_next(next: &str) -> Option<&str> {
    let ok = next.len() <= MAX_NEXT_LEN
        && next.starts_with('/')
        && !next.starts_with("//")
        && next.chars().all(|c| c.is_ascii_graphic() && c != '\\');
    ok.then_some(next)
}

/// The `Set-Cookie` value for a pending login. `SameSite=Lax`: it must come back on the
/// provider's top-level redirect to the callback, which `Strict` would drop.
pub fn pending_cookie(value: &str, secure: bool) -> String {
    format!(
        "{OIDC_COOKIE}={value}; HttpOnly; SameSite=Lax; Path=/{}; Max-Age={PENDING_SECS}",
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the pending login (every callback outcome sends it).
pub fn clear_pending_cookie(secure: bool) -> String {
    format!(
        "{OIDC_COOKIE}=; HttpOnly; SameSite=Lax; Path=/{}; Max-Age=0",
        if secure { "; Secure" } else { "" }
    )
}
