//! Header helpers as plain strings: the session cookie, reading cookies and bearer tokens.
//!
//! The session cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (no cross-site
//! request carries it: with the CSRF token on state-changing requests, two independent
//! defences), `Path=/`, and `Secure` whenever the site is served over TLS. Its value is the
//! session secret; the directory keeps only its hash.

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "vesalius_session";
/// Header carrying the CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The `Set-Cookie` value that installs a session.
pub fn session_cookie(secret: &str, secure: bool, max_age_secs: i64) -> String {
    format!(
        "{SESSION_COOKIE}={secret}; HttpOnly; SameSite=Strict; Path=/{}; Max-Age={}",
        if secure { "; Secure" } else { "" },
        max_age_secs.max(0)
    )
}

/// The `Set-Cookie` value that installs a session for as long as the browser session lasts (no
/// `Max-Age`, RFC 6265 4.1.2.2: a password login without "Keep me signed in").
pub fn browser_session_cookie(secret: &str, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={secret}; HttpOnly; SameSite=Strict; Path=/{}",
        if secure { "; Secure" } else { "" },
    )
}

/// Name of the cookie carrying a verified share-link visit (see
/// [`crate::Authenticator::share_link_pass`]).
pub const LINK_COOKIE: &str = "vesalius_link";

/// The `Set-Cookie` value that installs a share-link pass (same attributes as the session).
pub fn link_cookie(pass: &str, secure: bool, max_age_secs: i64) -> String {
    format!(
        "{LINK_COOKIE}={pass}; HttpOnly; SameSite=Strict; Path=/{}; Max-Age={}",
        if secure { "; Secure" } else { "" },
        max_age_secs.max(0)
    )
}

/// The share-link pass in a `Cookie` header, if any.
pub fn link_pass(cookie_header: &str) -> Option<&str> {
    cookie_value(cookie_header, LINK_COOKIE).filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value that removes the session cookie (logout).
pub fn clear_session_cookie(secure: bool) -> String {
    session_cookie("", secure, 0)
}

/// The value of cookie `name` in a `Cookie` request header (`a=1; b=2`).
pub fn cookie_value<'a>(cookie_header: &'a str, name: &str) -> Option<&'a str> {
    cookie_header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// The session secret in a `Cookie` header, if any.
pub fn session_secret(cookie_header: &str) -> Option<&str> {
    cookie_value(cookie_header, SESSION_COOKIE).filter(|v| !v.is_empty())
}

/// The token of an `Authorization: Bearer …` header value (scheme case-insensitive, RFC 6750).
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cookie_strings() {
        assert_eq!(
            session_cookie("abc", true, 3600),
            "vesalius_session=abc; HttpOnly; SameSite=Strict; Path=/; Secure; Max-Age=3600"
        );
        assert_eq!(
            session_cookie("abc", false, 60),
            "vesalius_session=abc; HttpOnly; SameSite=Strict; Path=/; Max-Age=60"
        );
        assert!(clear_session_cookie(true).contains("Max-Age=0"));
        assert_eq!(
            browser_session_cookie("abc", true),
            "vesalius_session=abc; HttpOnly; SameSite=Strict; Path=/; Secure"
        );
    }

    #[test]
    fn reading_headers() {
        let h = "theme=dark; vesalius_session=s3cr3t-_x; other=1";
        assert_eq!(session_secret(h), Some("s3cr3t-_x"));
        assert_eq!(session_secret("vesalius_session="), None);
        assert_eq!(session_secret("xvesalius_session=1"), None);
        assert_eq!(cookie_value("a=\"q\"", "a"), Some("q"));
        assert_eq!(bearer_token("Bearer vsl_x_y"), Some("vsl_x_y"));
        assert_eq!(bearer_token("bearer  vsl_x_y "), Some("vsl_x_y"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }
}
