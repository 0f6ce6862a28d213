//! First start: on an empty directory, create the first organisation and an administrator
//! without a password, and hand out a one-time setup link that sets the password.
//!
//! The setup token is a random secret; the directory keeps its SHA-256 with its expiry and the
//! administrator's id in the setting [`SETUP_SETTING`] until setup completes. If the server
//! restarts before that, [`Authenticator::first_start`] issues a fresh token (the old one is
//! invalidated: its plaintext was only ever printed). Nothing is open meanwhile: the
//! administrator has no password and must-change-password set.

use serde::{Deserialize, Serialize};
use serde_json::json;
use vesalius_store::audit::Outcome;
use vesalius_store::directory::{DirectoryChange, Membership, Org, Role, User};
use vesalius_store::model::DEFAULT_ORG;

use super::sessions::check_username;
use super::{Authenticator, LoginOk, Origin, normalize_username, user_actor};
use crate::error::{Error, Result};
use crate::password;
use crate::policy::{Action, Resource};
use crate::principal::Principal;
use crate::secret::{constant_time_eq, random_secret, sha256_hex};

/// The setting holding the pending setup token (JSON: hash, expiry, user id).
pub const SETUP_SETTING: &str = "setup-token";
/// Username of the first administrator.
pub const FIRST_ADMIN: &str = "admin";

#[derive(Serialize, Deserialize)]
struct PendingSetup {
    hash: String,
    expires_ms: i64,
    user_id: String,
}

/// What [`Authenticator::first_start`] hands out: print it once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupLink {
    /// The one-time token.
    pub token: String,
    /// The administrator it sets the password of.
    pub user_id: String,
    /// Their username.
    pub username: String,
    /// The organisation created.
    pub org: String,
    /// When the token expires, ms.
    pub expires_ms: i64,
}

impl SetupLink {
    /// The path of the setup page with the token, to append to the site's base URL.
    pub fn path(&self) -> String {
        format!("/setup?token={}", self.token)
    }
}

impl Authenticator {
    /// On a directory without organisations, creates organisation `org_id` (default
    /// `default`), the administrator `admin` without a password, and a setup token valid for
    /// [`super::AuthOptions::setup_ttl_ms`]. When setup is still pending from an earlier start,
    /// issues a fresh token. Otherwise (set up already) returns `None`. Audited `setup-start`.
    pub async fn first_start(&self, org_id: Option<&str>) -> Result<Option<SetupLink>> {
        let now = self.now_ms();
        let pending = self.pending_setup().await?;
        let orgs = self.dir.orgs().await?;
        let mut changes = Vec::new();
        let (user, org) = match (orgs.is_empty(), pending) {
            (true, _) => {
                let org = org_id.unwrap_or(DEFAULT_ORG).to_owned();
                changes.push(DirectoryChange::PutOrg(Org {
                    id: org.clone(),
                    name: org.clone(),
                    created_ms: now,
                }));
                let user = match self.dir.user_by_name(FIRST_ADMIN).await? {
                    Some(mut u) => {
                        u.memberships = vec![Membership {
                            org: org.clone(),
                            role: Role::Admin,
                        }];
                        u.must_change_password = true;
                        u.site_admin = true;
                        u
                    }
                    None => User {
                        id: uuid::Uuid::new_v4().to_string(),
                        username: FIRST_ADMIN.into(),
                        display_name: "Administrator".into(),
                        email: String::new(),
                        memberships: vec![Membership {
                            org: org.clone(),
                            role: Role::Admin,
                        }],
                        password_hash: None,
                        oidc: None,
                        service: false,
                        disabled: false,
                        must_change_password: true,
                        created_ms: now,
                        // Issue 6: the first administrator also administers the site.
                        site_admin: true,
                    },
                };
                changes.push(DirectoryChange::PutUser(user.clone()));
                (user, org)
            }
            (false, Some(p)) => {
                let user = self
                    .dir
                    .user(&p.user_id)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("setup user {}", p.user_id)))?;
                let org = user.home_org();
                (user, org)
            }
            (false, None) => return Ok(None),
        };
        let token = random_secret();
        let expires_ms = now.saturating_add(self.opts.setup_ttl_ms);
        let setting = PendingSetup {
            hash: sha256_hex(&token),
            expires_ms,
            user_id: user.id.clone(),
        };
        changes.push(DirectoryChange::PutSetting {
            key: SETUP_SETTING.into(),
            value: serde_json::to_string(&setting).expect("serializes"),
        });
        let mut ev = self.event(
            Principal::system().actor,
            "setup-start",
            Outcome::Success,
            Origin::default(),
            json!({ "user_id": user.id, "username": user.username, "expires_ms": expires_ms }),
        );
        ev.org = org.clone();
        self.dir.apply(changes, vec![ev]).await?;
        Ok(Some(SetupLink {
            token,
            user_id: user.id,
            username: user.username,
            org,
            expires_ms,
        }))
    }

    async fn pending_setup(&self) -> Result<Option<PendingSetup>> {
        Ok(self
            .dir
            .setting(SETUP_SETTING)
            .await?
            .and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// What a set-up or password link's `token` is for, without using it (the app's set-up
    /// screen asks before showing its form): the first start's administrator, or a password
    /// link of a user. A used, unknown or expired token is an error (409 when the first start
    /// is complete and the token is no password link).
    pub async fn setup_info(&self, token: &str) -> Result<SetupInfo> {
        let pending = self.pending_setup().await?;
        let first_start = pending
            .as_ref()
            .is_some_and(|p| token.len() <= 128 && constant_time_eq(sha256_hex(token), &p.hash));
        let setup_pending = pending.is_some();
        let Some(p) = pending.filter(|_| first_start) else {
            if let Some((user, expires_ms)) = self.reset_info(token).await? {
                return Ok(SetupInfo {
                    first_start: false,
                    username: user.username,
                    expires_ms,
                });
            }
            return Err(if setup_pending {
                Error::BadCredentials
            } else {
                Error::Conflict(
                    "this link was used already or is unknown (the first start is complete)".into(),
                )
            });
        };
        if self.now_ms() >= p.expires_ms {
            return Err(Error::Expired("setup token"));
        }
        let user = self
            .dir
            .user(&p.user_id)
            .await?
            .ok_or(Error::BadCredentials)?;
        Ok(SetupInfo {
            first_start: true,
            username: user.username,
            expires_ms: p.expires_ms,
        })
    }

    /// Completes first-start setup: sets the administrator's password, consumes the token and
    /// logs them in. Audited `setup-complete` and `login`.
    pub async fn complete_setup(
        &self,
        token: &str,
        new_password: &str,
        origin: Origin<'_>,
    ) -> Result<LoginOk> {
        self.complete_setup_as(token, None, new_password, origin)
            .await
    }

    /// [`Self::complete_setup`], naming the first administrator `username` (issue 6: the app's
    /// set-up screen asks for it; default [`FIRST_ADMIN`]). A password link's user keeps their
    /// username: another one is refused (400).
    pub async fn complete_setup_as(
        &self,
        token: &str,
        username: Option<&str>,
        new_password: &str,
        origin: Origin<'_>,
    ) -> Result<LoginOk> {
        let username = username.map(normalize_username).filter(|u| !u.is_empty());
        let pending = self.pending_setup().await?;
        let first_start = pending
            .as_ref()
            .is_some_and(|p| token.len() <= 128 && constant_time_eq(sha256_hex(token), &p.hash));
        if !first_start {
            if let Some(name) = &username
                && let Some((user, _)) = self.reset_info(token).await?
                && *name != user.username
            {
                return Err(Error::BadRequest(format!(
                    "this password link is {}'s: the username cannot change",
                    user.username
                )));
            }
            // Issue 6: a password link an administrator issued (`reset.rs`) uses this page too.
            if let Some(ok) = self.complete_reset(token, new_password, origin).await? {
                return Ok(ok);
            }
            return Err(match pending {
                None => Error::Conflict("setup is already complete".into()),
                Some(_) => Error::BadCredentials,
            });
        }
        let pending = pending.expect("checked above");
        if self.now_ms() >= pending.expires_ms {
            return Err(Error::Expired("setup token"));
        }
        let mut user = self
            .dir
            .user(&pending.user_id)
            .await?
            .ok_or(Error::BadCredentials)?;
        let renamed = match username {
            Some(name) if name != user.username => {
                check_username(&name)?;
                if self.dir.user_by_name(&name).await?.is_some() {
                    return Err(Error::Conflict(format!("the username {name:?} is taken")));
                }
                let old = std::mem::replace(&mut user.username, name);
                Some(old)
            }
            _ => None,
        };
        password::check_policy(new_password, &user.username)?;
        let (pw, params) = (new_password.to_owned(), self.opts.password_params);
        user.password_hash = Some(Self::blocking(move || password::hash(&pw, params)).await??);
        user.must_change_password = false;
        let org = user.home_org();
        let mut ev = self.event(
            user_actor(&user, &org, Some(Role::Admin)),
            "setup-complete",
            Outcome::Success,
            origin,
            match &renamed {
                Some(old) => json!({ "username": user.username, "renamed_from": old }),
                None => json!({ "username": user.username }),
            },
        );
        ev.org = org;
        let changes = vec![
            DirectoryChange::PutUser(user.clone()),
            DirectoryChange::DeleteSetting(SETUP_SETTING.into()),
        ];
        self.start_session(
            user,
            "login",
            json!({ "method": "setup" }),
            origin,
            changes,
            vec![ev],
        )
        .await
    }
}

impl Authenticator {
    /// Makes `user_id` a site administrator or no longer one (issue 6). `actor` must be allowed
    /// site-level changes ([`Action::ManageOrg`] on [`Resource::Site`]: the server itself or a
    /// logged-in site administrator). Audited `admin-change` with `details.change`
    /// `site-admin-grant` or `site-admin-revoke`. Nobody takes the flag from themselves (the
    /// site must not lose its last administrator by a slip); the server may.
    pub async fn set_site_admin(
        &self,
        actor: &Principal,
        user_id: &str,
        site_admin: bool,
        origin: Origin<'_>,
    ) -> Result<vesalius_store::directory::User> {
        self.require(actor, Action::ManageOrg, &Resource::Site)
            .await?;
        let mut user = self
            .dir
            .user(user_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {user_id}")))?;
        if !site_admin && actor.user_id.as_deref() == Some(user.id.as_str()) {
            return Err(Error::Conflict(
                "a site administrator cannot remove their own site administration".into(),
            ));
        }
        if user.service && site_admin {
            return Err(Error::Conflict(format!(
                "{} is a service account: it acts through tokens, which carry no site rights",
                user.username
            )));
        }
        if user.site_admin == site_admin {
            return Ok(user);
        }
        user.site_admin = site_admin;
        let change = if site_admin {
            "site-admin-grant"
        } else {
            "site-admin-revoke"
        };
        let mut ev = self.event(
            actor.actor.clone(),
            "admin-change",
            Outcome::Success,
            origin,
            json!({ "change": change, "user_id": user.id, "username": user.username }),
        );
        ev.org = user.home_org();
        self.dir
            .apply(vec![DirectoryChange::PutUser(user.clone())], vec![ev])
            .await?;
        Ok(user)
    }
}

/// What a set-up or password link is for ([`Authenticator::setup_info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupInfo {
    /// The first start's link (the first administrator, whose username may still be chosen),
    /// rather than a password link.
    pub first_start: bool,
    /// The user whose password the link sets.
    pub username: String,
    /// When the link expires, ms.
    pub expires_ms: i64,
}
