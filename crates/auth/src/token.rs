//! API tokens: `vsl_<id>_<secret>`.
//!
//! - `vsl_` marks the text as a Vesalius token (secret scanners can look for it).
//! - `<id>` is 12 lowercase letters and digits: the public id, stored in clear, shown in lists
//!   and audit records, used to find the record.
//! - `<secret>` is 32 random bytes in unpadded base64url (it may itself contain `_` and `-`).
//!
//! The whole text is shown once, at [`issue`]; the directory keeps its SHA-256
//! ([`ApiToken::secret_hash`]). A token acts for one user in one organisation with one role,
//! never more than the user holds there ([`crate::policy::role_covers`]). Checking a presented
//! token (hash, expiry, revocation, the user still enabled and a member) is done by
//! [`crate::Authenticator::from_bearer`].

use vesalius_store::directory::{ApiToken, Role, User};

use crate::error::{Error, Result};
use crate::policy::role_covers;
use crate::secret::{random_id, random_secret, sha256_hex};

/// The prefix of every token.
pub const PREFIX: &str = "vsl_";
/// Length of the public id.
pub const ID_LEN: usize = 12;

/// A token's text split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToken<'a> {
    /// The public id.
    pub id: &'a str,
    /// The secret part.
    pub secret: &'a str,
}

/// Splits `vsl_<id>_<secret>`; fails with [`Error::MalformedToken`] on anything else.
pub fn parse(text: &str) -> Result<ParsedToken<'_>> {
    let rest = text.strip_prefix(PREFIX).ok_or(Error::MalformedToken)?;
    if rest.len() < ID_LEN + 2 || !rest.is_char_boundary(ID_LEN) {
        return Err(Error::MalformedToken);
    }
    let (id, tail) = rest.split_at(ID_LEN);
    let secret = tail.strip_prefix('_').ok_or(Error::MalformedToken)?;
    let id_ok = id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let secret_ok = secret.len() <= 128
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !id_ok || !secret_ok {
        return Err(Error::MalformedToken);
    }
    Ok(ParsedToken { id, secret })
}

/// Issues a token for `user` in `org` with `role` (at most the user's role there), named
/// `name`, expiring `ttl_ms` after `now_ms` (`None`: never). Returns the record to store and the
/// plaintext to show once.
pub fn issue(
    user: &User,
    org: &str,
    role: Role,
    name: &str,
    ttl_ms: Option<i64>,
    now_ms: i64,
) -> Result<(ApiToken, String)> {
    let held = user
        .memberships
        .iter()
        .find(|m| m.org == org)
        .map(|m| m.role)
        .ok_or_else(|| {
            Error::Forbidden(format!("user {} is not a member of {org}", user.username))
        })?;
    if !role_covers(held, role) {
        return Err(Error::Forbidden(format!(
            "a {} cannot issue a {} token",
            held.as_str(),
            role.as_str()
        )));
    }
    if user.disabled {
        return Err(Error::Revoked("user"));
    }
    if let Some(ttl) = ttl_ms
        && ttl <= 0
    {
        return Err(Error::BadRequest("token lifetime must be positive".into()));
    }
    let id = random_id(ID_LEN);
    let text = format!("{PREFIX}{id}_{}", random_secret());
    let record = ApiToken {
        id,
        secret_hash: sha256_hex(&text),
        user_id: user.id.clone(),
        org: org.to_owned(),
        role,
        name: name.to_owned(),
        created_ms: now_ms,
        expires_ms: ttl_ms.map(|t| now_ms.saturating_add(t)),
        revoked: false,
    };
    Ok((record, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesalius_store::directory::Membership;

    fn user(role: Role) -> User {
        User {
            id: "u1".into(),
            username: "alice".into(),
            display_name: "Alice".into(),
            email: String::new(),
            memberships: vec![Membership {
                org: "a".into(),
                role,
            }],
            password_hash: None,
            oidc: None,
            service: false,
            disabled: false,
            must_change_password: false,
            created_ms: 0,
            site_admin: false,
        }
    }

    #[test]
    fn issue_and_parse() {
        let (rec, text) =
            issue(&user(Role::Admin), "a", Role::Service, "ct", Some(1000), 5).unwrap();
        assert!(text.starts_with("vsl_"));
        let p = parse(&text).unwrap();
        assert_eq!(p.id, rec.id);
        assert_eq!(p.secret.len(), 43);
        assert_eq!(rec.secret_hash, sha256_hex(&text));
        assert_eq!(rec.expires_ms, Some(1005));
        assert_eq!((rec.org.as_str(), rec.role), ("a", Role::Service));
    }

    #[test]
    fn never_more_than_the_user_holds() {
        assert!(issue(&user(Role::Radiographer), "a", Role::Admin, "x", None, 0).is_err());
        assert!(issue(&user(Role::Admin), "b", Role::Admin, "x", None, 0).is_err());
        assert!(issue(&user(Role::Clinician), "a", Role::Clinician, "x", None, 0).is_ok());
        let mut disabled = user(Role::Admin);
        disabled.disabled = true;
        assert!(issue(&disabled, "a", Role::Admin, "x", None, 0).is_err());
    }

    #[test]
    fn parse_rejects_malformed() {
        let good = format!("vsl_abcdef123456_{}", "A-_b".repeat(10));
        assert!(parse(&good).is_ok());
        // The secret may contain underscores.
        assert_eq!(parse("vsl_abcdef123456_a_b").unwrap().secret, "a_b");
        for bad in [
            "",
            "vsl_",
            "Bearer vsl_abcdef123456_x",
            "vsl_ABCDEF123456_x",
            "vsl_abcdef12345_xx",
            "vsl_abcdef123456x",
            "vsl_abcdef123456_",
            "vsl_abcdef123456_a b",
            "vsl_abcdéf12345_xx",
            "xyz_abcdef123456_x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
