//! Password links (issue 6, the admin console): an administrator hands a person a one-time
//! link that sets their password, instead of choosing one for them.
//!
//! The link is the first-start set-up page (`/setup?token=…`) with a token of its own: the
//! directory keeps the token's SHA-256 as the setting `password-reset:{hash}` with the user's id
//! and an expiry ([`super::AuthOptions::setup_ttl_ms`]); [`Authenticator::complete_setup`]
//! falls back to it when the token is not the first-start one. Issuing a link removes the
//! user's password at once (the old one stops working); a new link does not revoke an earlier
//! unused one (links are found by their hash only; both expire). Using a link sets the password,
//! deletes the setting and logs the person in. Audited `password-link` (issue) and
//! `password-reset` (use).

use serde::{Deserialize, Serialize};
use serde_json::json;
use vesalius_store::audit::Outcome;
use vesalius_store::directory::DirectoryChange;

use super::{Authenticator, LoginOk, Origin, SetupLink, user_actor};
use crate::error::{Error, Result};
use crate::password;
use crate::policy::{Action, Resource};
use crate::principal::Principal;
use crate::secret::{random_secret, sha256_hex};

/// The prefix of the settings holding pending password links (`password-reset:{sha256}`).
pub const RESET_SETTING_PREFIX: &str = "password-reset:";

#[derive(Serialize, Deserialize)]
struct PendingReset {
    user_id: String,
    expires_ms: i64,
}

impl Authenticator {
    /// Issues a one-time password link for `user_id` (audited `password-link`). The actor must
    /// manage every organisation the user belongs to (the link takes over the account); service
    /// accounts have no password (409). The user's current password stops working at once and
    /// they must set one through the link.
    pub async fn password_link(
        &self,
        actor: &Principal,
        user_id: &str,
        origin: Origin<'_>,
    ) -> Result<SetupLink> {
        let mut user = self
            .dir
            .user(user_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {user_id}")))?;
        for m in &user.memberships {
            self.require(actor, Action::ManageOrg, &Resource::org(m.org.clone()))
                .await?;
        }
        if user.service {
            return Err(Error::Conflict(format!(
                "{} is a service account: it has no password",
                user.username
            )));
        }
        let token = random_secret();
        let expires_ms = self.now_ms().saturating_add(self.opts.setup_ttl_ms);
        let pending = PendingReset {
            user_id: user.id.clone(),
            expires_ms,
        };
        user.password_hash = None;
        user.must_change_password = false;
        let org = user.home_org();
        let mut ev = self.event(
            actor.actor.clone(),
            "password-link",
            Outcome::Success,
            origin,
            json!({ "user_id": user.id, "username": user.username, "expires_ms": expires_ms }),
        );
        ev.org = org.clone();
        self.dir
            .apply(
                vec![
                    DirectoryChange::PutUser(user.clone()),
                    DirectoryChange::PutSetting {
                        key: format!("{RESET_SETTING_PREFIX}{}", sha256_hex(&token)),
                        value: serde_json::to_string(&pending).expect("serializes"),
                    },
                ],
                vec![ev],
            )
            .await?;
        Ok(SetupLink {
            token,
            user_id: user.id,
            username: user.username,
            org,
            expires_ms,
        })
    }

    /// Completes a password link, if `token` is one: `None` when it is not (the caller then
    /// refuses it like any wrong token).
    /// The user and expiry of a pending password link `token`, or `None` when it is no
    /// (longer a) password link. Nothing is used up.
    pub(super) async fn reset_info(
        &self,
        token: &str,
    ) -> Result<Option<(vesalius_store::directory::User, i64)>> {
        let Some((_, pending)) = self.pending_reset(token).await? else {
            return Ok(None);
        };
        if self.now_ms() >= pending.expires_ms {
            return Err(Error::Expired("password link"));
        }
        match self.dir.user(&pending.user_id).await? {
            Some(u) if !u.disabled => Ok(Some((u, pending.expires_ms))),
            _ => Ok(None),
        }
    }

    /// The pending password link of `token` and the key of its setting, when there is one.
    /// The setting is found by the token's hash: no comparison of secrets in this process.
    async fn pending_reset(&self, token: &str) -> Result<Option<(String, PendingReset)>> {
        if token.len() > 128 {
            return Ok(None);
        }
        let key = format!("{RESET_SETTING_PREFIX}{}", sha256_hex(token));
        let pending = self
            .dir
            .setting(&key)
            .await?
            .and_then(|v| serde_json::from_str::<PendingReset>(&v).ok());
        Ok(pending.map(|p| (key, p)))
    }

    pub(super) async fn complete_reset(
        &self,
        token: &str,
        new_password: &str,
        origin: Origin<'_>,
    ) -> Result<Option<LoginOk>> {
        let Some((key, pending)) = self.pending_reset(token).await? else {
            return Ok(None);
        };
        if self.now_ms() >= pending.expires_ms {
            self.dir
                .apply(vec![DirectoryChange::DeleteSetting(key)], vec![])
                .await?;
            return Err(Error::Expired("password link"));
        }
        let mut user = self
            .dir
            .user(&pending.user_id)
            .await?
            .ok_or(Error::BadCredentials)?;
        if user.disabled {
            return Err(Error::BadCredentials);
        }
        password::check_policy(new_password, &user.username)?;
        let (pw, params) = (new_password.to_owned(), self.opts.password_params);
        user.password_hash = Some(Self::blocking(move || password::hash(&pw, params)).await??);
        user.must_change_password = false;
        let (org, role) = user
            .memberships
            .first()
            .map(|m| (m.org.clone(), Some(m.role)))
            .unwrap_or_default();
        let mut ev = self.event(
            user_actor(&user, &org, role),
            "password-reset",
            Outcome::Success,
            origin,
            json!({ "method": "link" }),
        );
        ev.org = org;
        let changes = vec![
            DirectoryChange::PutUser(user.clone()),
            DirectoryChange::DeleteSetting(key),
        ];
        self.start_session(
            user,
            "login",
            json!({ "method": "password-link" }),
            origin,
            changes,
            vec![ev],
        )
        .await
        .map(Some)
    }
}
