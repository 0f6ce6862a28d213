//! From a verified identity to a local user and a session, and the audit of refused logins.

use serde_json::json;
use vesalius_store::audit::{AuditEvent, Outcome};
use vesalius_store::directory::{DirectoryChange, User};

use super::OidcIdentity;
use crate::authenticator::{Authenticator, LoginOk, Origin, anonymous, user_actor};
use crate::error::{Error, Result};

/// What a person whose identity maps to no usable account is told (the audit trail keeps the
/// precise reason: unknown identity, unverified or ambiguous e-mail, disabled user…).
pub const NO_USER_MESSAGE: &str = "no active Vesalius user matches this identity: an \
     administrator creates one with this (verified) e-mail address, or re-enables it";

impl Authenticator {
    /// Logs in the user an OpenID Connect identity belongs to: the user linked to the
    /// `(issuer, subject)`, or else, with `link_by_email`, the one user whose e-mail address
    /// equals the identity's **verified** address (case-insensitively) and who has no linked
    /// identity yet, is not disabled and is not a service account; that user is then linked
    /// (audited `oidc-link`, in the same transaction as the session).
    ///
    /// Audited `login` (method `oidc`) on success and `login-failed` (method `oidc`, with the
    /// reason) otherwise; a refusal is [`Error::Forbidden`] with [`NO_USER_MESSAGE`].
    pub async fn oidc_login(
        &self,
        identity: &OidcIdentity,
        link_by_email: bool,
        origin: Origin<'_>,
    ) -> Result<LoginOk> {
        let dir = self.directory();
        if let Some(user) = dir
            .user_by_oidc(&identity.issuer, &identity.subject)
            .await?
        {
            if user.disabled {
                return Err(self.oidc_failed(identity, "disabled", origin).await);
            }
            return self
                .start_oidc_session(user, identity, origin, Vec::new(), Vec::new())
                .await;
        }
        let email = identity
            .email
            .as_deref()
            .filter(|e| link_by_email && identity.email_verified && !e.is_empty());
        let Some(email) = email else {
            let why = match (&identity.email, identity.email_verified, link_by_email) {
                (_, _, false) => "unknown-identity",
                (None, _, _) => "unknown-identity-no-email",
                (Some(_), false, _) => "unknown-identity-email-unverified",
                _ => "unknown-identity",
            };
            return Err(self.oidc_failed(identity, why, origin).await);
        };
        let matches: Vec<User> = dir
            .users()
            .await?
            .into_iter()
            .filter(|u| u.email.eq_ignore_ascii_case(email))
            .collect();
        let [user] = matches.as_slice() else {
            let why = if matches.is_empty() {
                "no-email-match"
            } else {
                "ambiguous-email-match"
            };
            return Err(self.oidc_failed(identity, why, origin).await);
        };
        if user.disabled || user.oidc.is_some() || user.service {
            return Err(self
                .oidc_failed(identity, "email-user-not-linkable", origin)
                .await);
        }
        let mut linked = user.clone();
        linked.oidc = Some((identity.issuer.clone(), identity.subject.clone()));
        let org = linked.home_org();
        let mut ev = self.event(
            user_actor(&linked, &org, None),
            "oidc-link",
            Outcome::Success,
            origin,
            json!({ "issuer": identity.issuer, "subject": identity.subject, "email": email }),
        );
        ev.org = org;
        let changes = vec![DirectoryChange::PutUser(linked.clone())];
        self.start_oidc_session(linked, identity, origin, changes, vec![ev])
            .await
    }

    /// Audits a callback refused before an identity was known (provider error, no pending
    /// login, state mismatch, failed code exchange or ID-token check) as `login-failed` with
    /// method `oidc`, `reason` and `detail`.
    pub async fn oidc_refused(&self, reason: &str, detail: &str, origin: Origin<'_>) -> Result<()> {
        let ev = self.event(
            anonymous("oidc"),
            "login-failed",
            Outcome::Denied,
            origin,
            json!({ "reason": reason, "method": "oidc", "detail": truncate(detail, 512) }),
        );
        self.audit_log().append(vec![ev]).await?;
        Ok(())
    }

    async fn start_oidc_session(
        &self,
        user: User,
        identity: &OidcIdentity,
        origin: Origin<'_>,
        changes: Vec<DirectoryChange>,
        events: Vec<AuditEvent>,
    ) -> Result<LoginOk> {
        let details = json!({
            "method": "oidc",
            "issuer": identity.issuer,
            "subject": identity.subject,
        });
        self.start_session(user, "login", details, origin, changes, events)
            .await
    }

    async fn oidc_failed(&self, identity: &OidcIdentity, why: &str, origin: Origin<'_>) -> Error {
        let ev = self.event(
            anonymous(&identity.subject),
            "login-failed",
            Outcome::Denied,
            origin,
            json!({
                "reason": why,
                "method": "oidc",
                "issuer": identity.issuer,
                "subject": identity.subject,
                "email": identity.email,
                "email_verified": identity.email_verified,
            }),
        );
        match self.audit_log().append(vec![ev]).await {
            Ok(()) => Error::Forbidden(NO_USER_MESSAGE.into()),
            Err(e) => e.into(),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
