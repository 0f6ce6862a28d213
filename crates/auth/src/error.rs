//! Errors of the access-control layer, each with its [`ErrorKind`].
//!
//! Credential failures are deliberately coarse on the wire: an unknown user, a wrong password and
//! a disabled account all answer [`Error::BadCredentials`], so that the answer does not tell an
//! attacker which usernames exist. The audit trail records the precise reason.

use vesalius_core::ErrorKind;

/// What went wrong while authenticating or authorising.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Username/password, token, link secret, passcode or setup token wrong or unknown.
    #[error("invalid credentials")]
    BadCredentials,
    /// Too many failures: locked until the given time (ms since the Unix epoch).
    #[error("too many attempts; locked until {until_ms}")]
    Locked {
        /// When the lock ends, ms.
        until_ms: i64,
    },
    /// The credential (session, token, link, setup token, grant) has expired.
    #[error("{0} expired")]
    Expired(&'static str),
    /// The credential has been revoked or its user disabled.
    #[error("{0} revoked")]
    Revoked(&'static str),
    /// The session's CSRF token is missing or wrong on a state-changing request.
    #[error("missing or wrong CSRF token")]
    Csrf,
    /// The token text is not `vsl_<id>_<secret>`.
    #[error("malformed token")]
    MalformedToken,
    /// The policy refuses.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A new password does not meet the policy.
    #[error("password rejected: {0}")]
    WeakPassword(&'static str),
    /// A request parameter is wrong (empty break-glass reason, unknown role…).
    #[error("{0}")]
    BadRequest(String),
    /// Something named does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The upload exceeds the link's remaining size.
    #[error("upload of {bytes} bytes exceeds the link's remaining {remaining} bytes")]
    TooLarge {
        /// Bytes offered.
        bytes: u64,
        /// Bytes the link still accepts.
        remaining: u64,
    },
    /// The state does not allow it (setup already completed…).
    #[error("{0}")]
    Conflict(String),
    /// Hashing failed (bad parameters, malformed stored hash).
    #[error("password hashing: {0}")]
    Hash(String),
    /// The site key file cannot be read, written or trusted.
    #[error("site key {path}: {reason}")]
    KeyFile {
        /// The key file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The OpenID Connect provider cannot be reached or is misconfigured.
    #[error("identity provider: {0}")]
    OidcProvider(String),
    /// The OpenID Connect response was refused (state, code, ID token).
    #[error("identity provider response refused: {0}")]
    OidcRejected(String),
    /// A peer site's request token is refused (see [`crate::peer::PeerAuthError::code`]).
    #[error("peer authentication: {0}")]
    Peer(#[from] crate::peer::PeerAuthError),
    /// The directory or audit log failed.
    #[error("{0}")]
    Store(#[from] vesalius_store::Error),
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadCredentials
            | Error::Expired(_)
            | Error::Revoked(_)
            | Error::MalformedToken
            | Error::OidcRejected(_)
            | Error::Peer(_) => ErrorKind::Unauthorized,
            Error::OidcProvider(_) => ErrorKind::Unavailable,
            Error::Locked { .. } => ErrorKind::TooManyRequests,
            Error::Csrf | Error::Forbidden(_) => ErrorKind::Forbidden,
            Error::WeakPassword(_) | Error::BadRequest(_) => ErrorKind::BadRequest,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::TooLarge { .. } => ErrorKind::PayloadTooLarge,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Hash(_) | Error::KeyFile { .. } => ErrorKind::Internal,
            Error::Store(e) => e.kind(),
        }
    }
}

/// Result with the auth [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_the_wire() {
        assert_eq!(Error::BadCredentials.kind().http_status(), 401);
        assert_eq!(Error::Locked { until_ms: 1 }.kind().http_status(), 429);
        assert_eq!(Error::Csrf.kind().http_status(), 403);
        assert_eq!(
            Error::TooLarge {
                bytes: 2,
                remaining: 1
            }
            .kind()
            .http_status(),
            413
        );
        let store = vesalius_store::Error::NotFound("x".into());
        assert_eq!(Error::from(store).kind(), ErrorKind::NotFound);
    }
}
