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

/// The state of one throttle key (login name, source address, link id) after a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleState {
    /// Failures counted in the current window.
    pub failures: u32,
    /// Locked until this time (ms) — 0 when not locked.
    pub locked_until_ms: i64,
}

/// One change to the directory, applied atomically with the audit events that record it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum DirectoryChange {
    PutOrg(Org),
    PutUser(User),
    DeleteUser(UserId),
    PutToken(ApiToken),
    RevokeToken(String),
    PutSession(Session),
    DeleteSession(String),
    PutGrant(Grant),
    RevokeGrant(String),
    PutAe(AeEntry),
    DeleteAe(String),
    PutShareLink(ShareLink),
    RevokeShareLink(String),
    PutUploadLink(UploadLink),
    RevokeUploadLink(String),
    /// Adds to an upload link's `used_bytes`.
    AddUploadBytes {
        id: String,
        bytes: u64,
    },
    /// Sets a site-wide setting (e.g. `setup-token-hash`).
    PutSetting {
        key: String,
        value: String,
    },
    DeleteSetting(String),
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
    /// A user by login name.
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
    /// reaching `max_failures` locks the key for `lock_ms`. Atomic across nodes.
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
