//! [`Authenticator`]: turns credentials into a [`Principal`], with throttling, lockout and
//! audit, and performs the audited access-control changes (break-glass, tokens, links, setup).
//!
//! | Credential | Method | Principal |
//! |---|---|---|
//! | username + password | [`Authenticator::login`] → session cookie | — |
//! | session cookie | [`Authenticator::from_session`] (+ [`Authenticator::check_csrf`]) | `Session` |
//! | `Authorization: Bearer vsl_…` | [`Authenticator::from_bearer`] | `Token` |
//! | calling/called AE title, peer address | [`Authenticator::from_ae`] | `Ae` |
//! | share link id + secret (+ passcode, birth date) | [`Authenticator::share_link_open`] | `ShareLink` |
//! | upload link id + secret | [`Authenticator::upload_link_open`] | `UploadLink` |
//! | one-time setup token | [`Authenticator::complete_setup`] → session | — |
//! | session cookie + organisation | [`Authenticator::switch_org`] (issue 6, `memberships`) | `Session` there |
//! | `Authorization: Vesalius-Peer …` (a peer site) | [`Authenticator::authenticate_peer`] | `Peer` |
//!
//! # Invariants
//! - Secrets are compared in constant time and only their SHA-256 is stored; passwords and
//!   link passcodes are argon2id, verified on the blocking pool.
//! - Login failures are counted per username **and** per source address in the directory
//!   (`Directory::throttle_*`, shared by every node); reaching the threshold locks the key.
//!   An unknown username costs the same argon2 work as a wrong password and answers the same.
//! - Every login success, failure and lockout, logout, password change, link use, setup step,
//!   token and link creation and break-glass is an audit event. Events that record a directory
//!   change are committed with it (`Directory::apply`); the others are appended directly.
//! - Nothing is cached in the process except the [`AccessDedupe`] of read events (harmless
//!   to lose, see its docs): several nodes can share one directory.
//! - Sessions have an absolute lifetime ([`AuthOptions::session_ttl_ms`]), no sliding renewal.

mod ae;
mod glass;
mod links;
mod memberships;
mod peers;
mod reset;
mod sessions;
mod setup;
mod tokens;

#[cfg(test)]
mod memberships_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::{Value as Json, json};
use vesalius_store::audit::{Actor, ActorKind, AuditEvent, Outcome};
use vesalius_store::audit_batch::BatchedAuditLog;
use vesalius_store::directory::{Grant, Role, User};
use vesalius_store::query::Access;
use vesalius_store::{AuditLog, Directory, Registry};

pub use ae::AeRejection;
pub use glass::READ_ACTIONS;
pub use links::{
    LINK_PASS_MS, ShareLinkOptions, UPLOAD_TOKEN_PREFIX, parse_upload_token, upload_token,
};
pub use memberships::{LAST_ORG_SETTING_PREFIX, MembershipChange};
pub use peers::PEER_MAX_SKEW_MS;
pub use reset::RESET_SETTING_PREFIX;
pub use sessions::{LoginOk, NewUser};
pub use setup::{FIRST_ADMIN, SETUP_SETTING, SetupInfo, SetupLink};

use crate::dedupe::AccessDedupe;
use crate::error::{Error, Result};
use crate::password::PasswordParams;
use crate::peer::SiteIdentity;
use crate::policy::{self, Action, Decision, Resource};
use crate::principal::Principal;

/// Where "now" comes from: the system clock, or a controllable one in tests.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// Milliseconds since the Unix epoch from the system clock.
    pub fn system() -> Self {
        Clock(Arc::new(crate::now_ms))
    }

    /// A clock reading `now` (tests advance it).
    pub fn manual(now: Arc<AtomicI64>) -> Self {
        Clock(Arc::new(move || now.load(Ordering::SeqCst)))
    }

    /// The current time, ms.
    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Clock({})", self.now_ms())
    }
}

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// Default of [`AuthOptions::audit_read_batch_ms`].
pub const DEFAULT_AUDIT_READ_BATCH_MS: u64 = 250;

/// Settings of the [`Authenticator`]; [`AuthOptions::new`] gives the safe defaults.
#[derive(Debug, Clone)]
pub struct AuthOptions {
    /// Lifetime of a login session, ms (default 12 h).
    pub session_ttl_ms: i64,
    /// Lifetime of a session whose user ticked "Keep me signed in" at a password login, ms
    /// (default 30 days; 0: the option is off). Its cookie persists for as long; without the
    /// option the cookie ends with the browser session (issue 6).
    pub remember_ttl_ms: i64,
    /// Window in which login failures are counted, ms (default 15 min).
    pub login_window_ms: i64,
    /// Failures per username within the window that lock it (default 5).
    pub login_max_failures: u32,
    /// Failures per source address within the window that lock it (default 20: several users
    /// behind one hospital NAT mistype too).
    pub source_max_failures: u32,
    /// How long a locked username or address stays locked, ms (default 15 min).
    pub lockout_ms: i64,
    /// Wrong passcodes or birth dates per share link within the window that lock it (default 5).
    pub link_max_failures: u32,
    /// How long a locked share link stays locked, ms (default 15 min).
    pub link_lockout_ms: i64,
    /// Whether cookies carry `Secure` (on unless the site is plain HTTP on loopback).
    pub secure_cookies: bool,
    /// Lifetime of a break-glass grant, ms (default 4 h).
    pub break_glass_ttl_ms: i64,
    /// Fewest characters a break-glass reason must have (default 10).
    pub break_glass_min_reason: usize,
    /// Lifetime of the first-start setup token, ms (default 24 h).
    pub setup_ttl_ms: i64,
    /// Longest lifetime a share or upload link may be given, ms (default 90 days).
    pub max_link_ttl_ms: i64,
    /// argon2id parameters for new password and passcode hashes.
    pub password_params: PasswordParams,
    /// The site's own AE titles: associations calling another are refused (PS3.8 reason 7).
    /// Empty accepts any called AE title.
    pub local_ae_titles: Vec<String>,
    /// Window within which repeated reads of a study by one actor are audited once, ms.
    pub audit_dedupe_ms: i64,
    /// Longest time a read event (query, retrieval) waits to be appended with others in one
    /// batch, ms ([`vesalius_store::audit_batch`]); 0 appends each on its own.
    pub audit_read_batch_ms: u64,
    /// The key that signs share-link passes (the cookie a visitor gets once a link's passcode
    /// or birth date was checked). Every node of a site must share it.
    pub link_key: LinkKey,
    /// The clock.
    pub clock: Clock,
}

/// A 32-byte HMAC key, never printed.
#[derive(Clone)]
pub struct LinkKey(pub [u8; 32]);

impl LinkKey {
    /// A fresh random key (passes then last as long as the process).
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
        LinkKey(k)
    }
}

impl fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkKey(…)")
    }
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            session_ttl_ms: 12 * HOUR,
            remember_ttl_ms: 30 * 24 * HOUR,
            login_window_ms: 15 * MINUTE,
            login_max_failures: 5,
            source_max_failures: 20,
            lockout_ms: 15 * MINUTE,
            link_max_failures: 5,
            link_lockout_ms: 15 * MINUTE,
            secure_cookies: true,
            break_glass_ttl_ms: 4 * HOUR,
            break_glass_min_reason: 10,
            setup_ttl_ms: 24 * HOUR,
            max_link_ttl_ms: 90 * 24 * HOUR,
            password_params: PasswordParams::OWASP,
            local_ae_titles: Vec::new(),
            audit_dedupe_ms: crate::dedupe::DEFAULT_WINDOW_MS,
            audit_read_batch_ms: DEFAULT_AUDIT_READ_BATCH_MS,
            link_key: LinkKey::random(),
            clock: Clock::system(),
        }
    }
}

impl AuthOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the clock.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the argon2id parameters.
    pub fn password_params(mut self, params: PasswordParams) -> Self {
        self.password_params = params;
        self
    }

    /// Sets how long read events may wait to be appended in one batch, ms (0: each alone).
    pub fn audit_read_batch_ms(mut self, ms: u64) -> Self {
        self.audit_read_batch_ms = ms;
        self
    }

    /// Sets whether cookies are `Secure`.
    pub fn secure_cookies(mut self, secure: bool) -> Self {
        self.secure_cookies = secure;
        self
    }

    /// Sets the site's own AE titles.
    pub fn local_ae_titles(mut self, titles: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.local_ae_titles = titles.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the key of share-link passes.
    pub fn link_key(mut self, key: [u8; 32]) -> Self {
        self.link_key = LinkKey(key);
        self
    }

    /// Sets the session lifetime.
    pub fn session_ttl_ms(mut self, ttl: i64) -> Self {
        self.session_ttl_ms = ttl;
        self
    }

    /// Sets the lifetime of remembered sessions (0: no "Keep me signed in").
    pub fn remember_ttl_ms(mut self, ttl: i64) -> Self {
        self.remember_ttl_ms = ttl.max(0);
        self
    }
}

/// Where a request came from, for audit events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin<'a> {
    /// Source address (`ip` or `ip:port`).
    pub source: &'a str,
    /// User agent or calling application.
    pub user_agent: &'a str,
}

impl<'a> Origin<'a> {
    /// An origin.
    pub fn new(source: &'a str, user_agent: &'a str) -> Self {
        Origin { source, user_agent }
    }
}

/// Decides who a request is, and records what it did.
pub struct Authenticator {
    dir: Arc<dyn Directory>,
    /// `later` as a plain log: reads through it see deferred events too.
    audit: Arc<dyn AuditLog>,
    later: Arc<BatchedAuditLog>,
    opts: AuthOptions,
    dedupe: AccessDedupe,
    /// The peer registry: who may call with a peer token ([`Self::authenticate_peer`]).
    registry: Option<Arc<dyn Registry>>,
    /// This site's peer key: the audience of peer tokens, the signer of answers.
    identity: Option<Arc<SiteIdentity>>,
}

impl Authenticator {
    /// An authenticator over a directory and the audit log it shares a database with.
    pub fn new(dir: Arc<dyn Directory>, audit: Arc<dyn AuditLog>, opts: AuthOptions) -> Self {
        let dedupe = AccessDedupe::new(opts.audit_dedupe_ms);
        let later = Arc::new(BatchedAuditLog::new(
            audit,
            std::time::Duration::from_millis(opts.audit_read_batch_ms),
        ));
        Authenticator {
            dir,
            audit: later.clone(),
            later,
            opts,
            dedupe,
            registry: None,
            identity: None,
        }
    }

    /// Admits peer sites registered in `registry` ([`Self::authenticate_peer`]); needs
    /// [`Self::with_peer_identity`] too.
    pub fn with_registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Sets this site's peer identity: peer tokens must name its public key as their audience,
    /// and handlers sign their answers to peers with it ([`Self::peer_identity`]).
    pub fn with_peer_identity(mut self, identity: SiteIdentity) -> Self {
        self.identity = Some(Arc::new(identity));
        self
    }

    /// This site's peer identity, when configured.
    pub fn peer_identity(&self) -> Option<&Arc<SiteIdentity>> {
        self.identity.as_ref()
    }

    /// The peer registry, when configured.
    pub fn registry(&self) -> Option<&Arc<dyn Registry>> {
        self.registry.as_ref()
    }

    /// The options.
    pub fn options(&self) -> &AuthOptions {
        &self.opts
    }

    /// The directory.
    pub fn directory(&self) -> &Arc<dyn Directory> {
        &self.dir
    }

    /// The audit log.
    pub fn audit_log(&self) -> &Arc<dyn AuditLog> {
        &self.audit
    }

    /// Appends read events (queries, retrievals) off the response path, batched with others
    /// for at most [`AuthOptions::audit_read_batch_ms`]. Events of data changes do not come
    /// here: they are committed with the change.
    pub fn audit_later(&self, events: Vec<AuditEvent>) {
        self.later.append_later(events);
    }

    /// Appends every deferred event now (at shutdown).
    pub async fn flush_audit(&self) -> vesalius_store::Result<()> {
        self.later.flush().await
    }

    /// The read-event dedupe the protocol layers share (one event per study per actor per
    /// window).
    pub fn dedupe(&self) -> &AccessDedupe {
        &self.dedupe
    }

    /// Now, from the configured clock.
    pub fn now_ms(&self) -> i64 {
        self.opts.clock.now_ms()
    }

    /// The `Set-Cookie` value for a new session's secret, with the configured lifetime and
    /// `Secure` setting.
    pub fn session_cookie(&self, secret: &str) -> String {
        crate::cookie::session_cookie(
            secret,
            self.opts.secure_cookies,
            self.opts.session_ttl_ms / 1000,
        )
    }

    /// The `Set-Cookie` value for a password login's session ([`Self::login_with`]): a
    /// persistent cookie as long as the session when the user asked to be remembered, else a
    /// browser-session cookie (no `Max-Age`: it ends when the browser does; the session itself
    /// still ends at its expiry).
    pub fn login_cookie(&self, ok: &LoginOk) -> String {
        if ok.remembered {
            crate::cookie::session_cookie(
                &ok.cookie_secret,
                self.opts.secure_cookies,
                (ok.session.expires_ms - ok.session.created_ms) / 1000,
            )
        } else {
            crate::cookie::browser_session_cookie(&ok.cookie_secret, self.opts.secure_cookies)
        }
    }

    /// The grants that may open data for `principal` (to its organisation or user).
    pub async fn grants(&self, principal: &Principal) -> Result<Vec<Grant>> {
        match (&principal.org, &principal.user_id) {
            (None, None) => Ok(Vec::new()),
            (org, user) => Ok(self
                .dir
                .grants_for(org.as_deref().unwrap_or(""), user.as_deref().unwrap_or(""))
                .await?),
        }
    }

    /// [`policy::authorize`] with the principal's grants fetched and the clock's time.
    pub async fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource,
    ) -> Result<Decision> {
        let grants = self.grants(principal).await?;
        Ok(policy::authorize(
            principal,
            action,
            resource,
            &grants,
            self.now_ms(),
        ))
    }

    /// [`policy::access`] with the principal's grants fetched and the clock's time.
    pub async fn access(&self, principal: &Principal) -> Result<Option<Access>> {
        if principal.is_system() {
            return Ok(None);
        }
        let grants = self.grants(principal).await?;
        Ok(policy::access(principal, &grants, self.now_ms()))
    }

    /// Like [`Self::authorize`], but an error when denied.
    async fn require(&self, p: &Principal, action: Action, resource: &Resource) -> Result<()> {
        self.authorize(p, action, resource)
            .await?
            .into_result()
            .map(|_| ())
    }

    /// An audit event at the clock's time.
    pub(crate) fn event(
        &self,
        actor: Actor,
        action: &str,
        outcome: Outcome,
        origin: Origin<'_>,
        details: Json,
    ) -> AuditEvent {
        AuditEvent {
            time_ms: self.now_ms(),
            actor,
            action: action.to_owned(),
            outcome,
            org: String::new(),
            patient: None,
            study_uid: None,
            source: origin.source.to_owned(),
            user_agent: truncate(origin.user_agent, 256),
            details,
        }
    }

    /// Runs argon2 work on the blocking pool.
    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Error::Hash(format!("hashing task failed: {e}")))
    }
}

/// The actor of a user acting in `org` (empty org: not yet in one).
pub(crate) fn user_actor(user: &User, org: &str, role: Option<Role>) -> Actor {
    Actor {
        kind: ActorKind::User,
        id: user.id.clone(),
        name: user.username.clone(),
        org: org.to_owned(),
        role: role.map(|r| r.as_str().to_owned()).unwrap_or_default(),
    }
}

/// An unidentified actor; `name` is what it claimed to be (a typed username, an AE title).
pub(crate) fn anonymous(name: &str) -> Actor {
    Actor {
        kind: ActorKind::Anonymous,
        id: String::new(),
        name: truncate(name, 64),
        org: String::new(),
        role: String::new(),
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

/// Usernames are stored trimmed and lower-cased (the directory matches them exactly).
pub fn normalize_username(name: &str) -> String {
    name.trim().to_lowercase()
}

fn details_reason(reason: &str) -> Json {
    json!({ "reason": reason })
}
