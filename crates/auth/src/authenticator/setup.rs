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

use super::{Authenticator, LoginOk, Origin, user_actor};
use crate::error::{Error, Result};
use crate::password;
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

    /// Completes first-start setup: sets the administrator's password, consumes the token and
    /// logs them in. Audited `setup-complete` and `login`.
    pub async fn complete_setup(
        &self,
        token: &str,
        new_password: &str,
        origin: Origin<'_>,
    ) -> Result<LoginOk> {
        let pending = self.pending_setup().await?;
        let first_start = pending
            .as_ref()
            .is_some_and(|p| token.len() <= 128 && constant_time_eq(sha256_hex(token), &p.hash));
        if !first_start {
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
            json!({}),
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
