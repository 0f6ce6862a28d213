//! [`Directory`]: organisations, users, credentials, grants, AE titles and links — the records the
//! access-control layer (`vesalius-auth`) decides with. This module holds only data and storage;
//! every decision (who may do what, how secrets are hashed and checked) lives in `vesalius-auth`.
//!
//! Contract:
//! - Secrets are never stored: tokens, session ids and link tokens are stored as the SHA-256 hex
//!   of the secret (`*_hash` fields), passwords as argon2id PHC strings made by `vesalius-auth`.
//! - Usernames and AE titles are unique on the site; organisation ids are stable slugs.
//! - Every method is atomic; implementations share the index database so that a change and the
//!   audit event recording it can commit together ([`Directory::apply`]).
//! - Nothing is cached in a process: several nodes may share one database.
//! - Records refer to each other by id without foreign keys (a token whose user is gone is refused
//!   by `vesalius-auth` because the user lookup fails); [`DirectoryChange::DeleteUser`] removes
//!   the user's tokens and sessions with it, so no credential outlives its user.
//! - Lists come in a fixed order so that every backend answers alike: organisations by id, users
//!   by username, AE titles by title, everything else by `(created_ms, id)`.
//! - A change that conflicts with the unique keys (a username or OpenID Connect identity already
//!   held by another user) fails the whole [`Directory::apply`] with
//!   [`Error::BadRequest`](crate::Error::BadRequest); a change naming a record that does not exist
//!   fails it with [`Error::NotFound`](crate::Error::NotFound).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::audit::AuditEvent;
use crate::error::Result;
use crate::model::OrgId;

/// A user's stable identifier (UUID text).
pub type UserId = String;

/// An organisation: the owner of data and users (DESIGN.md vocabulary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Org {
    /// Stable slug, e.g. `st-marys`. Also the `org` column of stored instances.
    pub id: OrgId,
    /// Display name.
    pub name: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
}

impl Org {
    /// Whether `id` may name an organisation: a slug of 1-64 lower-case ASCII letters, digits
    /// and '-', not starting with '-' (ids name folders of the blob store, appear in URLs and in
    /// every record the organisation owns). The CLI and the API check it alike.
    pub fn valid_id(id: &str) -> bool {
        (1..=64).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !id.starts_with('-')
    }
}

/// What a member of an organisation may do. Decisions are made by `vesalius_auth::policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Manages the organisation: users, tokens, nodes, links; reads and deletes its data.
    Admin,
    /// Clinician or radiologist: reads the organisation's and granted studies; may break glass.
    Clinician,
    /// Radiographer: sends (stores) into the organisation and sees what it stored.
    Radiographer,
    /// Referrer: sees only studies explicitly granted to them (what they referred).
    Referrer,
    /// Auditor / privacy officer: reads the audit trail only, no images.
    Auditor,
    /// A machine (modality, script, peer site): stores and reads as its scopes allow.
    Service,
}

impl Role {
    /// Every role, in declaration order.
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Clinician,
        Role::Radiographer,
        Role::Referrer,
        Role::Auditor,
        Role::Service,
    ];

    /// The kebab-case name used in the API, CLI and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Clinician => "clinician",
            Role::Radiographer => "radiographer",
            Role::Referrer => "referrer",
            Role::Auditor => "auditor",
            Role::Service => "service",
        }
    }

    /// Parses the kebab-case name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A user's role in one organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The organisation.
    pub org: OrgId,
    /// The role held there.
    pub role: Role,
}

/// A person or a service account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable id.
    pub id: UserId,
    /// Login name, unique on the site.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// E-mail address (alerts, privacy-officer reports); may be empty.
    pub email: String,
    /// Organisations and roles; at least one.
    pub memberships: Vec<Membership>,
    /// argon2id PHC string; `None` for service accounts and OIDC-only users.
    pub password_hash: Option<String>,
    /// OpenID Connect identity `(issuer, subject)` when linked.
    pub oidc: Option<(String, String)>,
    /// A service account (machines, peers) rather than a person.
    pub service: bool,
    /// Disabled users cannot log in or use their tokens.
    pub disabled: bool,
    /// Must change the password at next login (first-start admin, reset).
    pub must_change_password: bool,
    /// Creation time, ms.
    pub created_ms: i64,
    /// A site administrator (issue 6): besides their roles in their organisations, may make
    /// site-level changes (create organisations) when logged in (`vesalius_auth::policy`).
    #[serde(default)]
    pub site_admin: bool,
}

impl User {
    /// The organisation of the user's first membership (where their audit events are filed);
    /// empty for a user without any.
    pub fn home_org(&self) -> String {
        self.memberships
            .first()
            .map(|m| m.org.clone())
            .unwrap_or_default()
    }
}

/// A scoped API token. The secret is shown once; only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Public id (the part of the token before the secret), unique.
    pub id: String,
    /// SHA-256 hex of the whole token text.
    pub secret_hash: String,
    /// The user the token acts for.
    pub user_id: UserId,
    /// The organisation it acts in.
    pub org: OrgId,
    /// The role it acts with (never more than the user's role in `org`).
    pub role: Role,
    /// Label given at creation.
    pub name: String,
    /// Creation time, ms.
    pub created_ms: i64,
    /// Expiry, ms; `None` never expires.
    pub expires_ms: Option<i64>,
    /// Revoked tokens are refused.
    pub revoked: bool,
}

/// A server-side login session (cookie holds the secret; only its hash is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// SHA-256 hex of the session secret.
    pub id_hash: String,
    /// The user.
    pub user_id: UserId,
    /// The organisation the session acts in.
    pub org: OrgId,
    /// CSRF token expected on state-changing requests of this session.
    pub csrf: String,
    /// Creation time, ms.
    pub created_ms: i64,
    /// Absolute expiry, ms.
    pub expires_ms: i64,
}

/// Who a [`Grant`] is given to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "id")]
pub enum Grantee {
    /// Every member of an organisation.
    Org(OrgId),
    /// One user.
    User(UserId),
}

/// What a [`Grant`] opens: data of the grant's `owner_org`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum GrantSubject {
    /// One study (Study Instance UID).
    Study {
        /// Study Instance UID.
        study_uid: String,
    },
    /// Every study of one patient, present and future.
    Patient {
        /// Issuer of Patient ID.
        issuer: String,
        /// Patient ID.
        patient_id: String,
    },
}

/// An explicit permission to read another organisation's data (sharing, referral, routing
/// delivery, break-glass).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Stable id.
    pub id: String,
    /// The organisation that owns the data.
    pub owner_org: OrgId,
    /// Who may read it.
    pub grantee: Grantee,
    /// What may be read.
    pub subject: GrantSubject,
    /// Expiry, ms; `None` until revoked.
    pub expires_ms: Option<i64>,
    /// A break-glass grant: flagged in audit and reported to the owner's privacy officer.
    pub break_glass: bool,
    /// Why (mandatory for break-glass).
    pub reason: String,
    /// The user who created it.
    pub created_by: String,
    /// Creation time, ms.
    pub created_ms: i64,
    /// Revoked grants open nothing.
    pub revoked: bool,
}

/// A calling AE title known to the site: which organisation it stores into, from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AeEntry {
    /// The AE title (PS3.8 9.3.2: up to 16 characters), unique on the site.
    pub ae_title: String,
    /// The organisation it belongs to (DESIGN.md: an AE title belongs to exactly one org).
    pub org: OrgId,
    /// Source addresses it may call from: IPs or CIDR blocks; empty means any.
    pub allowed_addrs: Vec<String>,
    /// Where it listens, for C-MOVE destinations and sending: `(host, port)`.
    pub listen: Option<(String, u16)>,
    /// Description, e.g. "CT scanner, room 2".
    pub description: String,
    /// Whether it may also query and retrieve (C-FIND/C-GET/C-MOVE), not only store.
    pub may_query: bool,
}

/// A share link: a capability to see one study without an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareLink {
    /// Public id (appears in URLs and audit).
    pub id: String,
    /// SHA-256 hex of the link secret.
    pub secret_hash: String,
    /// The owning organisation.
    pub org: OrgId,
    /// The study.
    pub study_uid: String,
    /// View only, or view and download.
    pub allow_download: bool,
    /// argon2id of the passcode, if one is required.
    pub passcode_hash: Option<String>,
    /// Patient access: the visitor must type this birth date (YYYYMMDD).
    pub birth_date_check: Option<String>,
    /// Creator user id.
    pub created_by: String,
    /// Creation time, ms.
    pub created_ms: i64,
    /// Expiry, ms.
    pub expires_ms: i64,
    /// Revoked links open nothing.
    pub revoked: bool,
}

/// A guest upload link: anyone holding it may upload into the organisation's quarantine inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadLink {
    /// Public id.
    pub id: String,
    /// SHA-256 hex of the link secret.
    pub secret_hash: String,
    /// The receiving organisation.
    pub org: OrgId,
    /// Label shown on the upload page ("for Dr X, neurosurgery").
    pub label: String,
    /// Most bytes the link accepts in total.
    pub max_bytes: u64,
    /// Bytes accepted so far.
    pub used_bytes: u64,
    /// Creator user id.
    pub created_by: String,
    /// Creation time, ms.
    pub created_ms: i64,
    /// Expiry, ms.
    pub expires_ms: i64,
    /// Revoked links accept nothing.
    pub revoked: bool,
}

impl UploadLink {
    /// Adds `bytes` to `used_bytes`, refused with [`Error::TooLarge`](crate::Error::TooLarge)
    /// (and nothing changed) when the total would pass `max_bytes`: the rule of
    /// [`DirectoryChange::AddUploadBytes`], shared by every backend.
    pub fn add_used_bytes(&mut self, bytes: u64) -> Result<()> {
        match self.used_bytes.checked_add(bytes) {
            Some(total) if total <= self.max_bytes => {
                self.used_bytes = total;
                Ok(())
            }
            _ => Err(crate::Error::TooLarge(format!(
                "upload link {} accepts at most {} bytes",
                self.id, self.max_bytes
            ))),
        }
    }
}

/// The state of one throttle key (login name, source address, link id) after a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleState {
    /// Failures counted in the current window.
    pub failures: u32,
    /// Locked until this time (ms) — 0 when not locked.
    pub locked_until_ms: i64,
}

/// One change to the directory, applied atomically with the audit events that record it.
///
/// `Put*` inserts or replaces the record with the same key. Changes naming a record (`Delete*`,
/// `Revoke*`, [`AddUploadBytes`](DirectoryChange::AddUploadBytes),
/// [`SetSessionOrg`](DirectoryChange::SetSessionOrg)) fail with
/// [`Error::NotFound`](crate::Error::NotFound) when it does not exist, except
/// [`DeleteSession`](DirectoryChange::DeleteSession) and
/// [`DeleteSetting`](DirectoryChange::DeleteSetting), which are idempotent (a second logout is
/// not an error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DirectoryChange {
    /// Creates or replaces an organisation (by id).
    PutOrg(Org),
    /// Creates or replaces a user (by id). Fails with `BadRequest` when another user holds the
    /// username or the OpenID Connect identity.
    PutUser(User),
    /// Deletes a user with their API tokens and sessions.
    DeleteUser(UserId),
    /// Creates or replaces an API token (by id).
    PutToken(ApiToken),
    /// Marks a token revoked.
    RevokeToken(String),
    /// Creates or replaces a session (by `id_hash`).
    PutSession(Session),
    /// Deletes a session by `id_hash`; nothing happens when it is already gone.
    DeleteSession(String),
    /// Moves a session to another organisation (issue 6: a user of several switching). Fails
    /// with `NotFound` when the session is gone, so a switch racing a logout (or the user's
    /// deletion) cannot bring the session back, as a `PutSession` would.
    SetSessionOrg {
        /// SHA-256 hex of the session secret.
        id_hash: String,
        /// The organisation it acts in from now on.
        org: OrgId,
    },
    /// Creates or replaces a grant (by id).
    PutGrant(Grant),
    /// Marks a grant revoked.
    RevokeGrant(String),
    /// Creates or replaces an AE title entry (by title).
    PutAe(AeEntry),
    /// Deletes an AE title entry.
    DeleteAe(String),
    /// Creates or replaces a share link (by id).
    PutShareLink(ShareLink),
    /// Marks a share link revoked.
    RevokeShareLink(String),
    /// Creates or replaces an upload link (by id).
    PutUploadLink(UploadLink),
    /// Marks an upload link revoked.
    RevokeUploadLink(String),
    /// Adds to an upload link's `used_bytes`. Fails with
    /// [`Error::TooLarge`](crate::Error::TooLarge) (and changes nothing) when the total would
    /// pass `max_bytes`: the check and the addition are one atomic step, so concurrent uploads
    /// through one link cannot overshoot its limit together.
    AddUploadBytes {
        /// The upload link.
        id: String,
        /// Bytes accepted now.
        bytes: u64,
    },
    /// Sets a site-wide setting (e.g. `setup-token-hash`).
    PutSetting {
        /// Setting name.
        key: String,
        /// Its value.
        value: String,
    },
    /// Deletes a site-wide setting; nothing happens when it is not set.
    DeleteSetting(String),
}

/// The stored state of one throttle key, and the arithmetic every backend applies to it (so the
/// SQLite writer, a future PostgreSQL backend and the in-memory model count alike).
///
/// The window is fixed: it starts at the first failure after the previous window ended, and all
/// its failures are forgotten together when it ends (`window_ms` after its start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleRecord {
    /// Failures counted in the current window.
    pub failures: u32,
    /// Start of the current window, ms.
    pub window_start_ms: i64,
    /// Length of the current window, ms (as given with the last failure).
    pub window_ms: i64,
    /// Locked until this time, ms (0 or past when not locked).
    pub locked_until_ms: i64,
}

impl ThrottleRecord {
    /// The record after one more failure at `now_ms` (see [`Directory::throttle_fail`]). A
    /// failure while locked counts too and, at or past `max_failures`, extends the lock.
    pub fn fail(self, now_ms: i64, window_ms: i64, max_failures: u32, lock_ms: i64) -> Self {
        let mut r = self;
        if r.failures == 0 || now_ms >= r.window_start_ms.saturating_add(r.window_ms) {
            r.failures = 0;
            r.window_start_ms = now_ms;
        }
        r.window_ms = window_ms;
        r.failures = r.failures.saturating_add(1);
        if r.failures >= max_failures {
            r.locked_until_ms = r.locked_until_ms.max(now_ms.saturating_add(lock_ms));
        }
        r
    }

    /// What the record says at `now_ms`: failures of an ended window count as 0, a lock in the
    /// past as 0.
    pub fn state(&self, now_ms: i64) -> ThrottleState {
        let window_open = now_ms < self.window_start_ms.saturating_add(self.window_ms);
        ThrottleState {
            failures: if window_open { self.failures } else { 0 },
            locked_until_ms: if self.locked_until_ms > now_ms {
                self.locked_until_ms
            } else {
                0
            },
        }
    }

    /// From this time on the record says nothing ([`state`](Self::state) is all zero), so a
    /// backend may forget it.
    pub fn expires_ms(&self) -> i64 {
        self.window_start_ms
            .saturating_add(self.window_ms)
            .max(self.locked_until_ms)
    }
}

/// The directory of organisations, users and capabilities.
#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// Applies changes and appends audit events in one durable transaction.
    async fn apply(&self, changes: Vec<DirectoryChange>, audit: Vec<AuditEvent>) -> Result<()>;

    /// Every organisation.
    async fn orgs(&self) -> Result<Vec<Org>>;
    /// One organisation.
    async fn org(&self, id: &str) -> Result<Option<Org>>;

    /// Every user (of every organisation).
    async fn users(&self) -> Result<Vec<User>>;
    /// A user by id.
    async fn user(&self, id: &str) -> Result<Option<User>>;
    /// A user by login name (exact match; `vesalius-auth` normalises names before storing).
    async fn user_by_name(&self, username: &str) -> Result<Option<User>>;
    /// A user by linked OpenID Connect identity.
    async fn user_by_oidc(&self, issuer: &str, subject: &str) -> Result<Option<User>>;

    /// A token by public id.
    async fn token(&self, id: &str) -> Result<Option<ApiToken>>;
    /// Tokens of an organisation.
    async fn tokens(&self, org: &str) -> Result<Vec<ApiToken>>;

    /// A session by the hash of its secret.
    async fn session(&self, id_hash: &str) -> Result<Option<Session>>;

    /// Grants whose grantee is `org` or `user` (revoked and expired included: the caller filters).
    async fn grants_for(&self, org: &str, user: &str) -> Result<Vec<Grant>>;
    /// Grants on data of `owner_org`.
    async fn grants_of(&self, owner_org: &str) -> Result<Vec<Grant>>;

    /// One AE title.
    async fn ae(&self, ae_title: &str) -> Result<Option<AeEntry>>;
    /// Every AE title.
    async fn aes(&self) -> Result<Vec<AeEntry>>;

    /// A share link by id.
    async fn share_link(&self, id: &str) -> Result<Option<ShareLink>>;
    /// Share links of an organisation.
    async fn share_links(&self, org: &str) -> Result<Vec<ShareLink>>;
    /// An upload link by id.
    async fn upload_link(&self, id: &str) -> Result<Option<UploadLink>>;
    /// Upload links of an organisation.
    async fn upload_links(&self, org: &str) -> Result<Vec<UploadLink>>;

    /// A site-wide setting.
    async fn setting(&self, key: &str) -> Result<Option<String>>;

    /// Counts one failure for `key` at `now_ms`: failures older than `window_ms` are forgotten;
    /// reaching `max_failures` locks the key for `lock_ms`. Atomic across nodes. The exact
    /// arithmetic is [`ThrottleRecord::fail`]; the answer is the state right after it.
    async fn throttle_fail(
        &self,
        key: &str,
        now_ms: i64,
        window_ms: i64,
        max_failures: u32,
        lock_ms: i64,
    ) -> Result<ThrottleState>;
    /// The current state of `key` (not locked and zero failures when unknown).
    async fn throttle_state(&self, key: &str, now_ms: i64) -> Result<ThrottleState>;
    /// Forgets `key` (after a success).
    async fn throttle_reset(&self, key: &str) -> Result<()>;
}
