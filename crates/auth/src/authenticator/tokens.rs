//! API tokens: checking a presented bearer token, issuing and revoking.

use serde_json::json;
use vesalius_store::audit::Outcome;
use vesalius_store::directory::{ApiToken, DirectoryChange, Role};

use super::{Authenticator, Origin};
use crate::error::{Error, Result};
use crate::policy::{Action, Resource, role_covers};
use crate::principal::Principal;
use crate::secret::{constant_time_eq, sha256_hex};
use crate::token;

impl Authenticator {
    /// The principal of a bearer token (`vsl_<id>_<secret>`, without the `Bearer ` scheme: see
    /// [`crate::cookie::bearer_token`]). Refused when unknown, wrong, revoked or expired, when
    /// its user is disabled or gone, or when the user no longer holds a role covering the
    /// token's in its organisation.
    pub async fn from_bearer(&self, token_text: &str) -> Result<Principal> {
        let parsed = token::parse(token_text.trim())?;
        let rec = self
            .dir
            .token(parsed.id)
            .await?
            .ok_or(Error::BadCredentials)?;
        if !constant_time_eq(sha256_hex(token_text.trim()), &rec.secret_hash) {
            return Err(Error::BadCredentials);
        }
        if rec.revoked {
            return Err(Error::Revoked("token"));
        }
        if rec.expires_ms.is_some_and(|e| self.now_ms() >= e) {
            return Err(Error::Expired("token"));
        }
        let user = self
            .dir
            .user(&rec.user_id)
            .await?
            .ok_or(Error::BadCredentials)?;
        if user.disabled {
            return Err(Error::Revoked("user"));
        }
        let held = user
            .memberships
            .iter()
            .find(|m| m.org == rec.org)
            .map(|m| m.role)
            .ok_or(Error::Revoked("membership"))?;
        if !role_covers(held, rec.role) {
            return Err(Error::Revoked("role"));
        }
        Ok(Principal::token(
            &rec.id,
            &user.id,
            &user.username,
            &rec.org,
            rec.role,
        ))
    }

    /// Issues a token for `user_id` in `org` with `role` (audited `token-create`). The actor must
    /// manage `org`, or be that user issuing for themself (the role still at most their own).
    /// Returns the record and the token text, to show once.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_token(
        &self,
        actor: &Principal,
        user_id: &str,
        org: &str,
        role: Role,
        name: &str,
        ttl_ms: Option<i64>,
        origin: Origin<'_>,
    ) -> Result<(ApiToken, String)> {
        let own = actor.user_id.as_deref() == Some(user_id) && !actor.must_change_password;
        if !own {
            self.require(actor, Action::ManageOrg, &Resource::org(org))
                .await?;
        }
        let user = self
            .dir
            .user(user_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {user_id}")))?;
        let (rec, text) = token::issue(&user, org, role, name, ttl_ms, self.now_ms())?;
        let mut ev = self.event(
            actor.actor.clone(),
            "token-create",
            Outcome::Success,
            origin,
            json!({
                "token_id": rec.id,
                "user_id": user.id,
                "username": user.username,
                "role": role.as_str(),
                "name": name,
                "expires_ms": rec.expires_ms,
            }),
        );
        ev.org = org.to_owned();
        self.dir
            .apply(vec![DirectoryChange::PutToken(rec.clone())], vec![ev])
            .await?;
        Ok((rec, text))
    }

    /// Revokes a token (audited `token-revoke`): by its user or a manager of its organisation.
    pub async fn revoke_token(
        &self,
        actor: &Principal,
        token_id: &str,
        origin: Origin<'_>,
    ) -> Result<()> {
        let rec = self
            .dir
            .token(token_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("token {token_id}")))?;
        if actor.user_id.as_deref() != Some(rec.user_id.as_str()) {
            self.require(actor, Action::ManageOrg, &Resource::org(rec.org.clone()))
                .await?;
        }
        let mut ev = self.event(
            actor.actor.clone(),
            "token-revoke",
            Outcome::Success,
            origin,
            json!({ "token_id": rec.id, "user_id": rec.user_id }),
        );
        ev.org = rec.org.clone();
        self.dir
            .apply(vec![DirectoryChange::RevokeToken(rec.id)], vec![ev])
            .await?;
        Ok(())
    }
}
