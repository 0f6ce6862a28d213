//! Memberships and the organisation a login session acts in (issue 6).
//!
//! A user's memberships are the `(organisation, role)` list of their [`User`] record (the
//! `memberships` column of `users`); there is no table of its own. A person may hold a role in
//! several organisations — a radiologist of a regional hub reads for two trusts — and acts in
//! one of them at a time:
//!
//! - A **session** carries the organisation it acts in ([`Session::org`]); its role is the
//!   user's role there, read on every request ([`Authenticator::from_session`]), so every
//!   decision (`policy::authorize`, `policy::access`) is the active organisation's.
//! - A login starts in the organisation the user last switched to, while they are still a
//!   member there, else in their first ([`Authenticator::login_membership`]). The last one is
//!   the directory setting `last-org:{user id}` ([`LAST_ORG_SETTING_PREFIX`]): a setting of
//!   its own rather than a field of the user, so that switching never rewrites the user record
//!   (an administrator's concurrent change to it, a disabling for one, cannot be lost).
//! - [`Authenticator::switch_org`] moves a session to another organisation of its user
//!   (audited `org-switch`); one the user is not a member of is refused (403, audited denied).
//! - API tokens stay bound to the organisation they were issued for; only sessions switch.
//! - [`Authenticator::set_membership`] (join, or change the role) and
//!   [`Authenticator::remove_membership`] (leave) need `manage-org` on the organisation
//!   concerned; audited `admin-change` `membership-add`, `membership-set`,
//!   `membership-remove`. Leaving revokes the user's tokens of that organisation (so joining
//!   again does not revive them); a session acting there is refused from its next request.
//!   The last membership cannot be left (users are disabled, never deleted).

use serde_json::json;
use vesalius_store::audit::Outcome;
use vesalius_store::directory::{DirectoryChange, Membership, Role, Session, User};

use super::{Authenticator, Origin, user_actor};
use crate::error::{Error, Result};
use crate::policy::{Action, Resource};
use crate::principal::Principal;

/// Directory setting `last-org:{user id}`: the organisation the user last switched a session
/// to, where their next login starts.
pub const LAST_ORG_SETTING_PREFIX: &str = "last-org:";

/// What [`Authenticator::set_membership`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipChange {
    /// The user joined the organisation.
    Added,
    /// The user's role there changed (`from` was the role before).
    RoleChanged {
        /// The role before.
        from: Role,
    },
    /// The user already held that role there: nothing changed, nothing audited.
    Unchanged,
}

impl Authenticator {
    /// The membership a new session of `user` starts in: the organisation they last switched
    /// to while still a member there, else their first. `Forbidden` for a user of none.
    pub async fn login_membership(&self, user: &User) -> Result<Membership> {
        let key = format!("{LAST_ORG_SETTING_PREFIX}{}", user.id);
        let last = self.dir.setting(&key).await?;
        last.and_then(|o| user.memberships.iter().find(|m| m.org == o).cloned())
            .or_else(|| user.memberships.first().cloned())
            .ok_or_else(|| {
                Error::Forbidden(format!("user {} belongs to no organisation", user.username))
            })
    }

    /// Moves the session of `cookie_secret` to `org`, one of its user's organisations, and
    /// remembers it for their next login; audited `org-switch` (`details.from`, `to`, `role`)
    /// in the new organisation. A user who is not a member of `org` (or an organisation that
    /// does not exist: the two are not told apart) is refused with `Forbidden`, audited denied
    /// in the session's organisation. Switching to the organisation the session acts in
    /// already changes nothing. The answer is the session's principal there and the session.
    pub async fn switch_org(
        &self,
        cookie_secret: &str,
        org: &str,
        origin: Origin<'_>,
    ) -> Result<(Principal, Session)> {
        let (principal, session) = self.from_session(cookie_secret).await?;
        if session.org == org {
            return Ok((principal, session));
        }
        let user = self
            .dir
            .user(&session.user_id)
            .await?
            .ok_or(Error::BadCredentials)?;
        let Some(role) = user
            .memberships
            .iter()
            .find(|m| m.org == org)
            .map(|m| m.role)
        else {
            let mut ev = self.event(
                principal.actor.clone(),
                "org-switch",
                Outcome::Denied,
                origin,
                json!({ "from": session.org, "to": org, "reason": "not-a-member" }),
            );
            ev.org = session.org.clone();
            self.audit.append(vec![ev]).await?;
            return Err(Error::Forbidden(format!(
                "{} is not a member of {org:?}",
                user.username
            )));
        };
        let moved = Session {
            org: org.to_owned(),
            ..session.clone()
        };
        let mut ev = self.event(
            user_actor(&user, org, Some(role)),
            "org-switch",
            Outcome::Success,
            origin,
            json!({ "from": session.org, "to": org, "role": role.as_str() }),
        );
        ev.org = org.to_owned();
        self.dir
            .apply(
                vec![
                    DirectoryChange::SetSessionOrg {
                        id_hash: session.id_hash.clone(),
                        org: org.to_owned(),
                    },
                    DirectoryChange::PutSetting {
                        key: format!("{LAST_ORG_SETTING_PREFIX}{}", user.id),
                        value: org.to_owned(),
                    },
                ],
                vec![ev],
            )
            .await
            // Logged out meanwhile: the session stays gone.
            .map_err(|e| match e {
                vesalius_store::Error::NotFound(_) => Error::BadCredentials,
                e => e.into(),
            })?;
        let mut p = Principal::session(&user.id, &user.username, org, role);
        p.must_change_password = user.must_change_password;
        p.site_admin = user.site_admin;
        Ok((p, moved))
    }

    /// Gives user `user_id` the role `role` in `org`: they join it, or their role there
    /// changes. `actor` needs `manage-org` on `org` (`Forbidden`); the organisation and the
    /// user must exist (`NotFound`); service accounts hold the service role and only they do
    /// (`BadRequest`); an actor cannot take away their own administrator role in the
    /// organisation they act in (`Conflict`). Audited `admin-change` `membership-add` or
    /// `membership-set` in `org`, in the change's transaction.
    pub async fn set_membership(
        &self,
        actor: &Principal,
        user_id: &str,
        org: &str,
        role: Role,
        origin: Origin<'_>,
    ) -> Result<(User, MembershipChange)> {
        self.require(actor, Action::ManageOrg, &Resource::org(org.to_owned()))
            .await?;
        if self.dir.org(org).await?.is_none() {
            return Err(Error::NotFound(format!("organisation {org:?}")));
        }
        let mut user = self
            .dir
            .user(user_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {user_id}")))?;
        if user.service != (role == Role::Service) {
            return Err(Error::BadRequest(
                "service accounts hold the service role, and only they do".into(),
            ));
        }
        let before = user
            .memberships
            .iter()
            .find(|m| m.org == org)
            .map(|m| m.role);
        let change = match before {
            None => MembershipChange::Added,
            Some(r) if r == role => return Ok((user, MembershipChange::Unchanged)),
            Some(from) => MembershipChange::RoleChanged { from },
        };
        if acts_as(actor, &user, org) && before == Some(Role::Admin) {
            return Err(Error::Conflict(
                "you cannot take your own administrator role away in the organisation you \
                 act in"
                    .into(),
            ));
        }
        let mut details = json!({
            "user_id": user.id, "username": user.username, "org": org, "role": role.as_str(),
        });
        match change {
            MembershipChange::Added => user.memberships.push(Membership {
                org: org.to_owned(),
                role,
            }),
            _ => {
                details["previous_role"] = json!(before.map(Role::as_str));
                for m in user.memberships.iter_mut().filter(|m| m.org == org) {
                    m.role = role;
                }
            }
        }
        details["change"] = json!(if change == MembershipChange::Added {
            "membership-add"
        } else {
            "membership-set"
        });
        let mut ev = self.event(
            actor.actor.clone(),
            "admin-change",
            Outcome::Success,
            origin,
            details,
        );
        ev.org = org.to_owned();
        self.dir
            .apply(vec![DirectoryChange::PutUser(user.clone())], vec![ev])
            .await?;
        Ok((user, change))
    }

    /// Removes user `user_id` from `org`. `actor` needs `manage-org` on `org` (`Forbidden`);
    /// a user who is not a member there is `NotFound`; their last organisation cannot be left
    /// (`Conflict`: disable the user instead, users are never deleted), nor the organisation
    /// the actor's own session acts in (`Conflict`: switch first). The user's unrevoked API
    /// tokens of `org` are revoked with it. Audited `admin-change` `membership-remove` in
    /// `org` (`details.tokens_revoked`), in the change's transaction.
    pub async fn remove_membership(
        &self,
        actor: &Principal,
        user_id: &str,
        org: &str,
        origin: Origin<'_>,
    ) -> Result<User> {
        self.require(actor, Action::ManageOrg, &Resource::org(org.to_owned()))
            .await?;
        let mut user = self
            .dir
            .user(user_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {user_id}")))?;
        if !user.memberships.iter().any(|m| m.org == org) {
            return Err(Error::NotFound(format!(
                "{} is not a member of {org:?}",
                user.username
            )));
        }
        if user.memberships.len() == 1 {
            return Err(Error::Conflict(format!(
                "{org} is {}'s only organisation: disable the user instead (users are never \
                 deleted; the audit trail names them)",
                user.username
            )));
        }
        if acts_as(actor, &user, org) {
            return Err(Error::Conflict(
                "you cannot leave the organisation you act in: switch to another first".into(),
            ));
        }
        user.memberships.retain(|m| m.org != org);
        let mut changes = vec![DirectoryChange::PutUser(user.clone())];
        let revoked: Vec<String> = self
            .dir
            .tokens(org)
            .await?
            .into_iter()
            .filter(|t| t.user_id == user.id && !t.revoked)
            .map(|t| t.id)
            .collect();
        changes.extend(revoked.iter().cloned().map(DirectoryChange::RevokeToken));
        let mut ev = self.event(
            actor.actor.clone(),
            "admin-change",
            Outcome::Success,
            origin,
            json!({
                "change": "membership-remove", "user_id": user.id, "username": user.username,
                "org": org, "tokens_revoked": revoked,
            }),
        );
        ev.org = org.to_owned();
        self.dir.apply(changes, vec![ev]).await?;
        Ok(user)
    }
}

/// Whether `actor` is `user` (a session or one of their tokens) acting in `org`.
fn acts_as(actor: &Principal, user: &User, org: &str) -> bool {
    actor.user_id.as_deref() == Some(user.id.as_str()) && actor.org.as_deref() == Some(org)
}
