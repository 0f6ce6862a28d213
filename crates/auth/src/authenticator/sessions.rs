//! Local login, sessions, CSRF, password changes and user creation.

use serde_json::json;
use vesalius_store::audit::{AuditEvent, Outcome};
use vesalius_store::directory::{DirectoryChange, Membership, Session, User};

use super::{Authenticator, Origin, anonymous, details_reason, normalize_username, user_actor};
use crate::error::{Error, Result};
use crate::net::source_ip;
use crate::password;
use crate::policy::{Action, Resource};
use crate::principal::Principal;
use crate::secret::{constant_time_eq, random_secret, sha256_hex};

/// A successful login.
#[derive(Debug, Clone)]
pub struct LoginOk {
    /// The stored session (its `id_hash`, organisation, expiry, CSRF token).
    pub session: Session,
    /// The session secret for the cookie ([`Authenticator::session_cookie`]); shown once.
    pub cookie_secret: String,
    /// The CSRF token the client must send with state-changing requests.
    pub csrf: String,
    /// The user.
    pub user: User,
    /// The user must change their password before anything else.
    pub must_change_password: bool,
    /// A password login with "Keep me signed in": the session lasts
    /// [`super::AuthOptions::remember_ttl_ms`] and its cookie persists
    /// ([`Authenticator::login_cookie`]).
    pub remembered: bool,
}

/// Most bytes of a presented session secret (ours are 43): longer input is refused unread.
const MAX_SECRET_LEN: usize = 128;

impl Authenticator {
    /// Logs in with username and password. Refused while the username or the source address
    /// is locked; every outcome is audited (`login`, `login-failed`, `login-locked`).
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        origin: Origin<'_>,
    ) -> Result<LoginOk> {
        self.login_with(username, password, false, origin).await
    }

    /// [`Self::login`], with "Keep me signed in" (`remember`, issue 6): the session lasts
    /// [`super::AuthOptions::remember_ttl_ms`] instead of the session lifetime (when that is
    /// not 0), audited `details.remember`.
    pub async fn login_with(
        &self,
        username: &str,
        password: &str,
        remember: bool,
        origin: Origin<'_>,
    ) -> Result<LoginOk> {
        let now = self.now_ms();
        let name = normalize_username(username);
        let user_key = format!("login-user:{name}");
        let addr_key = source_ip(origin.source).map(|ip| format!("login-addr:{ip}"));

        let mut locked_until = self
            .dir
            .throttle_state(&user_key, now)
            .await?
            .locked_until_ms;
        if let Some(k) = &addr_key {
            locked_until = locked_until.max(self.dir.throttle_state(k, now).await?.locked_until_ms);
        }
        if locked_until > now {
            let ev = self.event(
                anonymous(&name),
                "login-locked",
                Outcome::Denied,
                origin,
                json!({ "reason": "locked", "until_ms": locked_until }),
            );
            self.audit.append(vec![ev]).await?;
            return Err(Error::Locked {
                until_ms: locked_until,
            });
        }

        let user = self.dir.user_by_name(&name).await?;
        let (ok, why) = self.check_password(user.as_ref(), password).await?;
        let Some(user) = user.filter(|_| ok) else {
            return Err(self
                .login_failed(&name, why, &user_key, addr_key.as_deref(), origin)
                .await?);
        };
        self.dir.throttle_reset(&user_key).await?;
        let mut extra = Vec::new();
        if password::needs_rehash(
            user.password_hash.as_deref().unwrap_or(""),
            self.opts.password_params,
        ) {
            let pw = password.to_owned();
            let params = self.opts.password_params;
            let h = Self::blocking(move || password::hash(&pw, params)).await??;
            let mut u = user.clone();
            u.password_hash = Some(h);
            extra.push(DirectoryChange::PutUser(u));
        }
        let remember = remember && self.opts.remember_ttl_ms > 0;
        let (details, ttl) = if remember {
            (
                json!({ "method": "password", "remember": true }),
                self.opts.remember_ttl_ms,
            )
        } else {
            (json!({ "method": "password" }), self.opts.session_ttl_ms)
        };
        let mut ok = self
            .start_session_for(user, "login", details, origin, extra, Vec::new(), ttl)
            .await?;
        ok.remembered = remember;
        Ok(ok)
    }

    /// Verifies a password for a (possibly unknown) user; the reason is for the audit only.
    async fn check_password(
        &self,
        user: Option<&User>,
        password: &str,
    ) -> Result<(bool, &'static str)> {
        let pw = password.to_owned();
        let params = self.opts.password_params;
        let (hash, why) = match user {
            None => (None, "unknown-user"),
            Some(u) if u.disabled => (None, "disabled"),
            Some(u) if u.password_hash.is_none() => (None, "no-password"),
            Some(u) => (u.password_hash.clone(), "wrong-password"),
        };
        let ok = Self::blocking(move || match hash {
            Some(h) => password::verify(&pw, &h),
            None => {
                password::dummy_verify(&pw, params);
                false
            }
        })
        .await?;
        Ok((ok, why))
    }

    /// Counts a failed login, audits it (and a lockout it causes); the error to return.
    async fn login_failed(
        &self,
        name: &str,
        why: &str,
        user_key: &str,
        addr_key: Option<&str>,
        origin: Origin<'_>,
    ) -> Result<Error> {
        let now = self.now_ms();
        let o = &self.opts;
        let us = self
            .dir
            .throttle_fail(
                user_key,
                now,
                o.login_window_ms,
                o.login_max_failures,
                o.lockout_ms,
            )
            .await?;
        let mut locked = Vec::new();
        if us.locked_until_ms > now {
            locked.push(("username", us.locked_until_ms));
        }
        if let Some(k) = addr_key {
            let st = self
                .dir
                .throttle_fail(
                    k,
                    now,
                    o.login_window_ms,
                    o.source_max_failures,
                    o.lockout_ms,
                )
                .await?;
            if st.locked_until_ms > now {
                locked.push(("address", st.locked_until_ms));
            }
        }
        let mut events = vec![self.event(
            anonymous(name),
            "login-failed",
            Outcome::Denied,
            origin,
            json!({ "reason": why, "failures": us.failures }),
        )];
        for (what, until) in &locked {
            events.push(self.event(
                anonymous(name),
                "login-locked",
                Outcome::Denied,
                origin,
                json!({ "reason": "too-many-failures", "locked": what, "until_ms": until }),
            ));
        }
        self.audit.append(events).await?;
        Ok(Error::BadCredentials)
    }

    /// Creates a session for `user` in the organisation they last switched to, else their first
    /// ([`Self::login_membership`]), committing `changes` and
    /// `events` with it and an `action` event with `details` (plus the session's expiry).
    pub(crate) async fn start_session(
        &self,
        user: User,
        action: &str,
        details: serde_json::Value,
        origin: Origin<'_>,
        changes: Vec<DirectoryChange>,
        events: Vec<AuditEvent>,
    ) -> Result<LoginOk> {
        let ttl = self.opts.session_ttl_ms;
        self.start_session_for(user, action, details, origin, changes, events, ttl)
            .await
    }

    /// [`Self::start_session`] for a session of `ttl_ms`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start_session_for(
        &self,
        user: User,
        action: &str,
        mut details: serde_json::Value,
        origin: Origin<'_>,
        mut changes: Vec<DirectoryChange>,
        mut events: Vec<AuditEvent>,
        ttl_ms: i64,
    ) -> Result<LoginOk> {
        let now = self.now_ms();
        let Membership { org, role } = self.login_membership(&user).await?;
        let secret = random_secret();
        let session = Session {
            id_hash: sha256_hex(&secret),
            user_id: user.id.clone(),
            org: org.clone(),
            csrf: random_secret(),
            created_ms: now,
            expires_ms: now.saturating_add(ttl_ms),
        };
        changes.push(DirectoryChange::PutSession(session.clone()));
        let mut ev = self.event(
            user_actor(&user, &org, Some(role)),
            action,
            Outcome::Success,
            origin,
            {
                details["session_expires_ms"] = json!(session.expires_ms);
                details
            },
        );
        ev.org = org;
        events.push(ev);
        self.dir.apply(changes, events).await?;
        Ok(LoginOk {
            csrf: session.csrf.clone(),
            session,
            cookie_secret: secret,
            must_change_password: user.must_change_password,
            user,
            remembered: false,
        })
    }

    /// Ends the session whose cookie secret is given (audited `logout`); nothing happens for an
    /// unknown or expired session.
    pub async fn logout(&self, cookie_secret: &str, origin: Origin<'_>) -> Result<()> {
        if cookie_secret.len() > MAX_SECRET_LEN {
            return Ok(());
        }
        let hash = sha256_hex(cookie_secret);
        let Some(session) = self.dir.session(&hash).await? else {
            return Ok(());
        };
        let actor = match self.dir.user(&session.user_id).await? {
            Some(u) => user_actor(&u, &session.org, None),
            None => anonymous(&session.user_id),
        };
        let mut ev = self.event(actor, "logout", Outcome::Success, origin, json!({}));
        ev.org = session.org.clone();
        self.dir
            .apply(vec![DirectoryChange::DeleteSession(hash)], vec![ev])
            .await?;
        Ok(())
    }

    /// The principal of a session cookie, with the session (for [`Self::check_csrf`]). The
    /// user's role is read now, so a changed or removed membership applies at once.
    pub async fn from_session(&self, cookie_secret: &str) -> Result<(Principal, Session)> {
        if cookie_secret.is_empty() || cookie_secret.len() > MAX_SECRET_LEN {
            return Err(Error::BadCredentials);
        }
        let session = self
            .dir
            .session(&sha256_hex(cookie_secret))
            .await?
            .ok_or(Error::BadCredentials)?;
        if self.now_ms() >= session.expires_ms {
            return Err(Error::Expired("session"));
        }
        let user = self
            .dir
            .user(&session.user_id)
            .await?
            .ok_or(Error::BadCredentials)?;
        if user.disabled {
            return Err(Error::Revoked("user"));
        }
        let role = user
            .memberships
            .iter()
            .find(|m| m.org == session.org)
            .map(|m| m.role)
            .ok_or(Error::Revoked("membership"))?;
        let mut p = Principal::session(&user.id, &user.username, &session.org, role);
        p.must_change_password = user.must_change_password;
        p.site_admin = user.site_admin;
        Ok((p, session))
    }

    /// Checks the CSRF header of a state-changing request against the session.
    pub fn check_csrf(&self, session: &Session, header_value: Option<&str>) -> Result<()> {
        match header_value {
            Some(v) if constant_time_eq(v.trim(), &session.csrf) => Ok(()),
            _ => Err(Error::Csrf),
        }
    }

    /// The same user acting in another of their organisations for one request (STOW-RS
    /// `?org=`; a session's lasting switch is [`Self::switch_org`]). Only sessions: tokens stay
    /// bound to their organisation. The role is the user's role there.
    pub async fn act_in(&self, principal: &Principal, org: &str) -> Result<Principal> {
        if principal.org.as_deref() == Some(org) {
            return Ok(principal.clone());
        }
        let (Some(user_id), crate::PrincipalKind::Session { .. }) =
            (&principal.user_id, &principal.kind)
        else {
            return Err(Error::Forbidden(
                "only a logged-in user can switch organisation".into(),
            ));
        };
        let user = self.dir.user(user_id).await?.ok_or(Error::BadCredentials)?;
        let role = user
            .memberships
            .iter()
            .find(|m| m.org == org)
            .map(|m| m.role)
            .ok_or_else(|| Error::Forbidden(format!("not a member of {org}")))?;
        let mut p = Principal::session(&user.id, &user.username, org, role);
        p.must_change_password = user.must_change_password;
        p.site_admin = user.site_admin;
        Ok(p)
    }

    /// Changes a user's own password (audited `password-change`). A wrong old password counts
    /// as a failed login for the username.
    pub async fn change_password(
        &self,
        user_id: &str,
        old_password: &str,
        new_password: &str,
        origin: Origin<'_>,
    ) -> Result<()> {
        let now = self.now_ms();
        let user = self.dir.user(user_id).await?.ok_or(Error::BadCredentials)?;
        let user_key = format!("login-user:{}", user.username);
        let locked = self
            .dir
            .throttle_state(&user_key, now)
            .await?
            .locked_until_ms;
        if locked > now {
            return Err(Error::Locked { until_ms: locked });
        }
        let (ok, why) = self.check_password(Some(&user), old_password).await?;
        if !ok {
            let addr_key = source_ip(origin.source).map(|ip| format!("login-addr:{ip}"));
            return Err(self
                .login_failed(&user.username, why, &user_key, addr_key.as_deref(), origin)
                .await?);
        }
        password::check_policy(new_password, &user.username)?;
        if new_password == old_password {
            return Err(Error::WeakPassword("equal to the old password"));
        }
        self.set_password(user, new_password, "password-change", origin)
            .await
    }

    /// Stores a new password hash and clears `must_change_password`, audited as `action`.
    pub(super) async fn set_password(
        &self,
        mut user: User,
        new_password: &str,
        action: &str,
        origin: Origin<'_>,
    ) -> Result<()> {
        let pw = new_password.to_owned();
        let params = self.opts.password_params;
        user.password_hash = Some(Self::blocking(move || password::hash(&pw, params)).await??);
        user.must_change_password = false;
        let org = user.home_org();
        let mut ev = self.event(
            user_actor(&user, &org, None),
            action,
            Outcome::Success,
            origin,
            json!({}),
        );
        ev.org = org;
        self.dir
            .apply(vec![DirectoryChange::PutUser(user)], vec![ev])
            .await?;
        Ok(())
    }

    /// Creates a user (audited `user-create`). `actor` must manage every organisation the user
    /// joins. A password, when given, must meet the policy; users without one log in through
    /// OpenID Connect or are service accounts (tokens only).
    pub async fn create_user(
        &self,
        actor: &Principal,
        new: NewUser<'_>,
        origin: Origin<'_>,
    ) -> Result<User> {
        if new.memberships.is_empty() {
            return Err(Error::BadRequest(
                "a user needs at least one organisation".into(),
            ));
        }
        for m in new.memberships {
            self.require(actor, Action::ManageOrg, &Resource::org(m.org.clone()))
                .await?;
        }
        let username = normalize_username(new.username);
        check_username(&username)?;
        let password_hash = match new.password {
            Some(pw) => {
                password::check_policy(pw, &username)?;
                let pw = pw.to_owned();
                let params = self.opts.password_params;
                Some(Self::blocking(move || password::hash(&pw, params)).await??)
            }
            None => None,
        };
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            username,
            display_name: new.display_name.to_owned(),
            email: new.email.to_owned(),
            memberships: new.memberships.to_vec(),
            password_hash,
            oidc: None,
            service: new.service,
            disabled: false,
            must_change_password: new.must_change_password,
            created_ms: self.now_ms(),
            site_admin: false,
        };
        let mut ev = self.event(
            actor.actor.clone(),
            "user-create",
            Outcome::Success,
            origin,
            json!({
                "user_id": user.id,
                "username": user.username,
                "memberships": user.memberships,
                "service": user.service,
            }),
        );
        ev.org = user.memberships[0].org.clone();
        self.dir
            .apply(vec![DirectoryChange::PutUser(user.clone())], vec![ev])
            .await?;
        Ok(user)
    }

    /// Audits a refused request (`action` with outcome denied) for the protocol layers.
    pub async fn audit_denied(
        &self,
        principal: &Principal,
        action: &str,
        reason: &str,
        origin: Origin<'_>,
    ) -> Result<()> {
        let ev = self.event(
            principal.actor.clone(),
            action,
            Outcome::Denied,
            origin,
            details_reason(reason),
        );
        self.audit.append(vec![ev]).await?;
        Ok(())
    }
}

/// Refuses a (normalised) username that is not 1-64 letters, digits, '.', '-', '_' or '@'.
pub(super) fn check_username(username: &str) -> Result<()> {
    if username.is_empty()
        || username.len() > 64
        || !username
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
    {
        return Err(Error::BadRequest(
            "usernames are 1-64 letters, digits, '.', '-', '_' or '@'".into(),
        ));
    }
    Ok(())
}

/// What [`Authenticator::create_user`] needs.
#[derive(Debug, Clone, Copy)]
pub struct NewUser<'a> {
    /// Login name (normalised to lower case).
    pub username: &'a str,
    /// Display name.
    pub display_name: &'a str,
    /// E-mail address, may be empty.
    pub email: &'a str,
    /// Organisations and roles (at least one).
    pub memberships: &'a [Membership],
    /// Initial password, if any.
    pub password: Option<&'a str>,
    /// A service account.
    pub service: bool,
    /// Must change the password at first login.
    pub must_change_password: bool,
}
