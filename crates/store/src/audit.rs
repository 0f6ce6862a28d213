//! [`AuditLog`]: the append-only, hash-chained record of who did what to which study, from where.
//!
//! Contract:
//! - Records are numbered `seq = 1, 2, 3…` without gaps, in commit order.
//! - Each record carries `prev_hash` (the `hash` of record `seq - 1`; [`GENESIS_HASH`] for the
//!   first) and `hash = chain_hash(seq, prev_hash, event)`. Editing, deleting, inserting or
//!   reordering a record breaks the chain at that point; truncating the tail is caught by signed
//!   [`Checkpoint`]s (made by `vesalius-auth` with the site key).
//! - Events recording a data change are appended in the same transaction as the change (through
//!   [`crate::model::SideRecord::Audit`] on ingest, [`crate::directory::Directory::apply`] for the
//!   directory). Backends append through one serialized writer so the chain stays linear.
//! - Nothing in the product updates or deletes records.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::model::OrgId;

/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What kind of party acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActorKind {
    /// A logged-in user (session).
    User,
    /// An API token.
    Token,
    /// A DICOM application entity (by calling AE title).
    Ae,
    /// A share or upload link.
    Link,
    /// A peer site.
    Peer,
    /// The server itself (sweeps, start-up).
    System,
    /// Nobody identified (failed logins, refused requests).
    Anonymous,
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The kind of party.
    pub kind: ActorKind,
    /// User id, token id, AE title, link id or peer name ("" when anonymous).
    pub id: String,
    /// Human-readable name (username, AE title).
    pub name: String,
    /// The organisation it acted for ("" when none).
    pub org: OrgId,
    /// The role it acted with ("" when none).
    pub role: String,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Done.
    Success,
    /// Refused by policy or credentials.
    Denied,
    /// Failed for another reason.
    Failure,
}

/// One audited action. `action` is a stable kebab-case verb: `login`, `login-failed`, `logout`,
/// `query`, `retrieve`, `store`, `delete`, `export`, `share-create`, `share-revoke`, `link-use`,
/// `upload`, `break-glass`, `admin-change`, `grant-create`, …
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When, ms since the Unix epoch.
    pub time_ms: i64,
    /// Who.
    pub actor: Actor,
    /// What was done.
    pub action: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The organisation owning the data acted on ("" when none).
    pub org: OrgId,
    /// Patient `(issuer, patient_id)` when known.
    pub patient: Option<(String, String)>,
    /// Study Instance UID when one study is concerned.
    pub study_uid: Option<String>,
    /// Source address (`IP[:port]`) when known.
    pub source: String,
    /// User agent or calling application when known.
    pub user_agent: String,
    /// Action-specific details (query parameters, counts, reason of a break-glass…).
    pub details: Json,
}

/// An event as stored, with its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position, from 1, without gaps.
    pub seq: u64,
    /// Hash of the previous record (hex SHA-256).
    pub prev_hash: String,
    /// This record's hash (hex SHA-256), see [`chain_hash`].
    pub hash: String,
    /// The event.
    pub event: AuditEvent,
}

/// A signed statement "the chain had `hash` at `seq`", made periodically with the site key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The record it covers.
    pub seq: u64,
    /// That record's hash.
    pub hash: String,
    /// When it was made, ms.
    pub time_ms: i64,
    /// Signature algorithm, e.g. `ed25519`.
    pub alg: String,
    /// Public key of the signer (hex), to find the key it was made with.
    pub key_id: String,
    /// The signature (hex) over [`checkpoint_message`].
    pub signature: String,
}

/// The bytes a [`Checkpoint`] signature covers.
pub fn checkpoint_message(seq: u64, hash: &str, time_ms: i64) -> Vec<u8> {
    format!("vesalius-audit-checkpoint\n{seq}\n{hash}\n{time_ms}\n").into_bytes()
}

/// `SHA-256(seq || "\n" || prev_hash || "\n" || canonical JSON of event)`, hex.
///
/// The canonical JSON is [`canonical_json`]: the event turned into a `serde_json::Value` and
/// printed compactly. serde_json without its `preserve_order` feature keeps `Value` objects in
/// a `BTreeMap`, so every object's keys, the struct's fields included, come out sorted and the
/// same event always hashes the same. The workspace must never enable `preserve_order` (the
/// golden-hash test below fails if it does).
///
/// A backend that stores events as JSON text must read them back bit-exactly: serde_json parses
/// some floats one ULP off unless its `float_roundtrip` feature is on (`vesalius-store-sqlite`
/// turns it on), and a float in `details` would then break verification of a sound chain.
pub fn chain_hash(seq: u64, prev_hash: &str, event: &AuditEvent) -> String {
    let mut h = Sha256::new();
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical_json(event).as_bytes());
    hex::encode(h.finalize())
}

/// The canonical JSON text of an event, the one [`chain_hash`] covers (keys sorted, compact).
/// Backends store this text so a verifier can rehash exactly what was hashed.
pub fn canonical_json(event: &AuditEvent) -> String {
    serde_json::to_value(event)
        .expect("audit events serialize")
        .to_string()
}

/// The number of records [`AuditLog::search`] returns when the filter's `limit` is 0.
pub const DEFAULT_SEARCH_LIMIT: u32 = 1000;

/// Filters for [`AuditLog::search`]; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Data owner org.
    pub org: Option<OrgId>,
    /// Acting org (actor.org).
    pub actor_org: Option<OrgId>,
    /// Actor id.
    pub actor_id: Option<String>,
    /// Action.
    pub action: Option<String>,
    /// Study Instance UID.
    pub study_uid: Option<String>,
    /// Patient `(issuer, patient_id)`.
    pub patient: Option<(String, String)>,
    /// From this time (ms, inclusive).
    pub since_ms: Option<i64>,
    /// Before this time (ms, exclusive).
    pub until_ms: Option<i64>,
    /// Only records older than this one (`seq` below it): the next page of a search, newest
    /// first, after a page whose last record had this `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_seq: Option<u64>,
    /// At most this many records (newest first); 0 means a backend default (1000).
    pub limit: u32,
}

impl AuditFilter {
    /// Whether `event` passes every set field (the reference semantics of [`AuditLog::search`];
    /// `limit` is not a filter).
    pub fn matches(&self, event: &AuditEvent) -> bool {
        self.org.as_ref().is_none_or(|o| *o == event.org)
            && self
                .actor_org
                .as_ref()
                .is_none_or(|o| *o == event.actor.org)
            && self.actor_id.as_ref().is_none_or(|a| *a == event.actor.id)
            && self.action.as_ref().is_none_or(|a| *a == event.action)
            && self
                .study_uid
                .as_ref()
                .is_none_or(|s| event.study_uid.as_ref() == Some(s))
            && self
                .patient
                .as_ref()
                .is_none_or(|p| event.patient.as_ref() == Some(p))
            && self.since_ms.is_none_or(|t| event.time_ms >= t)
            && self.until_ms.is_none_or(|t| event.time_ms < t)
    }

    /// The number of records to return: `limit`, or [`DEFAULT_SEARCH_LIMIT`] when 0.
    pub fn effective_limit(&self) -> u32 {
        if self.limit == 0 {
            DEFAULT_SEARCH_LIMIT
        } else {
            self.limit
        }
    }
}

/// The audit trail.
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Appends events durably (group-committed with other writes), chaining each.
    async fn append(&self, events: Vec<AuditEvent>) -> Result<()>;

    /// Records with `seq` in `from..from + limit`, in order (for verification and export).
    /// `limit` 0 returns nothing.
    async fn records(&self, from: u64, limit: u32) -> Result<Vec<AuditRecord>>;

    /// The last record, if any.
    async fn head(&self) -> Result<Option<AuditRecord>>;

    /// Records matching a filter, newest first.
    async fn search(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;

    /// Stores a signed checkpoint. Fails with `NotFound` when the chain has no record `seq`, and
    /// with `BadRequest` when `hash` is not that record's hash (`seq` 0 stands for the empty
    /// chain, whose hash is [`GENESIS_HASH`]). Several checkpoints may cover one `seq`.
    async fn put_checkpoint(&self, checkpoint: Checkpoint) -> Result<()>;

    /// Every checkpoint, by `seq` (then in the order they were stored).
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AuditEvent {
        AuditEvent {
            time_ms: 1_700_000_000_000,
            actor: Actor {
                kind: ActorKind::User,
                id: "u1".into(),
                name: "alice".into(),
                org: "st-marys".into(),
                role: "clinician".into(),
            },
            action: "retrieve".into(),
            outcome: Outcome::Success,
            org: "st-marys".into(),
            patient: Some(("HOSP".into(), "12345".into())),
            study_uid: Some("1.2.3".into()),
            source: "10.0.0.1:5555".into(),
            user_agent: "curl".into(),
            details: serde_json::json!({"z": 1, "a": [true, 0.5]}),
        }
    }

    /// Pins the hash function: records written by one build must verify in every later one.
    #[test]
    fn chain_hash_is_stable() {
        let e = event();
        assert_eq!(
            canonical_json(&e),
            r#"{"action":"retrieve","actor":{"id":"u1","kind":"user","name":"alice","org":"st-marys","role":"clinician"},"details":{"a":[true,0.5],"z":1},"org":"st-marys","outcome":"success","patient":["HOSP","12345"],"source":"10.0.0.1:5555","study_uid":"1.2.3","time_ms":1700000000000,"user_agent":"curl"}"#
        );
        // sha256("1\n" + GENESIS_HASH + "\n" + the JSON above), computed independently.
        let h = chain_hash(1, GENESIS_HASH, &e);
        assert_eq!(
            h,
            "e7c164e69f0ba7475996c60963ef7cf8acad13a8a388d3e1a6b4ee9e231241eb"
        );
        assert_ne!(h, chain_hash(2, GENESIS_HASH, &e));
    }

    #[test]
    fn filter_matches_every_set_field() {
        let e = event();
        assert!(AuditFilter::default().matches(&e));
        let f = AuditFilter {
            org: Some("st-marys".into()),
            patient: Some(("HOSP".into(), "12345".into())),
            since_ms: Some(e.time_ms),
            until_ms: Some(e.time_ms + 1),
            ..Default::default()
        };
        assert!(f.matches(&e));
        for f in [
            AuditFilter {
                until_ms: Some(e.time_ms),
                ..Default::default()
            },
            AuditFilter {
                study_uid: Some("9".into()),
                ..Default::default()
            },
            AuditFilter {
                actor_org: Some("other".into()),
                ..Default::default()
            },
            AuditFilter {
                patient: Some(("".into(), "12345".into())),
                ..Default::default()
            },
        ] {
            assert!(!f.matches(&e), "{f:?}");
        }
        assert_eq!(
            AuditFilter::default().effective_limit(),
            DEFAULT_SEARCH_LIMIT
        );
    }
}
