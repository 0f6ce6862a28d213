//! The records the index keeps, named after the DICOM information model (PS3.3 A.1, PS3.4 C.6).

use serde::{Deserialize, Serialize};

/// The organisation that owns a stored copy. One default org until organisations arrive.
pub type OrgId = String;

/// The org every object belongs to while the site has only one.
pub const DEFAULT_ORG: &str = "default";

/// The suffix of quarantine inbox namespaces (organisation ids never contain a `.`).
const INBOX_SUFFIX: &str = ".inbox";

/// The quarantine inbox of `org`: the namespace guest uploads are stored under until a user of
/// `org` accepts them. No principal is ever a member of it, so nothing in it is visible through
/// queries, retrievals or grants, and nothing may route it (issue 4: "nothing in the inbox is
/// routed or visible to others before acceptance").
pub fn inbox_org(org: &str) -> OrgId {
    format!("{org}{INBOX_SUFFIX}")
}

/// The organisation whose inbox `org` is, `None` for an ordinary organisation.
pub fn inbox_owner(org: &str) -> Option<&str> {
    org.strip_suffix(INBOX_SUFFIX)
}

/// Patient-level attributes of an instance (Patient module, PS3.3 C.7.1.1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PatientAttrs {
    /// Patient ID (0010,0020).
    pub patient_id: String,
    /// Issuer of Patient ID (0010,0021).
    pub issuer: String,
    /// Patient's Name (0010,0010), decoded to UTF-8, all component groups.
    pub name: String,
    /// Patient's Birth Date (0010,0030).
    pub birth_date: String,
    /// Patient's Sex (0010,0040).
    pub sex: String,
}

/// Study-level attributes (General Study module, PS3.3 C.7.2.1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StudyAttrs {
    /// Study Instance UID (0020,000D).
    pub study_uid: String,
    /// Study Date (0008,0020), YYYYMMDD.
    pub date: String,
    /// Study Time (0008,0030).
    pub time: String,
    /// Accession Number (0008,0050).
    pub accession: String,
    /// Referring Physician's Name (0008,0090).
    pub referring_physician: String,
    /// Study Description (0008,1030).
    pub description: String,
    /// Study ID (0020,0010).
    pub study_id: String,
}

/// Series-level attributes (General Series module, PS3.3 C.7.3.1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesAttrs {
    /// Series Instance UID (0020,000E).
    pub series_uid: String,
    /// Modality (0008,0060).
    pub modality: String,
    /// Series Number (0020,0011).
    pub number: Option<i64>,
    /// Series Description (0008,103E).
    pub description: String,
    /// Body Part Examined (0018,0015).
    pub body_part: String,
}

/// Instance-level attributes (SOP Common and image modules).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceAttrs {
    /// SOP Class UID (0008,0016).
    pub sop_class_uid: String,
    /// SOP Instance UID (0008,0018).
    pub sop_instance_uid: String,
    /// Instance Number (0020,0013).
    pub number: Option<i64>,
    /// Transfer Syntax UID the instance is stored in.
    pub transfer_syntax: String,
    /// Rows (0028,0010).
    pub rows: Option<u16>,
    /// Columns (0028,0011).
    pub columns: Option<u16>,
    /// Number of Frames (0028,0008); 1 for single-frame images, 0 without pixel data.
    pub frames: u32,
}

/// Where each frame's bytes lie in the blob (PS3.5 A.4 for encapsulated data).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameIndex {
    /// For each frame, the `(offset, length)` ranges of its bytes, in order (one range for native
    /// data; one per fragment for encapsulated data).
    pub frames: Vec<Vec<(u64, u32)>>,
}

/// Everything the index stores about one ingested instance. Built by the ingest pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    /// Owning organisation.
    pub org: OrgId,
    /// Patient attributes.
    pub patient: PatientAttrs,
    /// Study attributes.
    pub study: StudyAttrs,
    /// Series attributes.
    pub series: SeriesAttrs,
    /// Instance attributes.
    pub instance: InstanceAttrs,
    /// The blob holding the Part 10 bytes.
    pub blob_key: String,
    /// Blob size in bytes.
    pub size: u64,
    /// SHA-256 of the blob, hex.
    pub sha256: String,
    /// DICOM JSON of the whole instance with relative BulkDataURIs (WADO-RS metadata).
    pub metadata_json: String,
    /// DICOM JSON of the patient and study attributes (QIDO study level).
    pub study_json: String,
    /// DICOM JSON of the series attributes (QIDO series level).
    pub series_json: String,
    /// DICOM JSON of the instance-level attributes (QIDO instance level).
    pub instance_json: String,
    /// Frame locations.
    pub frame_index: FrameIndex,
    /// Where it came from: "dimse:CALLING_AE", "stow", "import".
    pub source: String,
    /// Receive time, milliseconds since the Unix epoch.
    pub received_ms: i64,
}

/// A stored instance as read back for retrieval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredInstance {
    /// Owning organisation.
    pub org: OrgId,
    /// Study Instance UID.
    pub study_uid: String,
    /// Series Instance UID.
    pub series_uid: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Stored transfer syntax.
    pub transfer_syntax: String,
    /// Blob key.
    pub blob_key: String,
    /// Blob size.
    pub size: u64,
    /// SHA-256 hex.
    pub sha256: String,
    /// Instance Number, for ordering.
    pub number: Option<i64>,
}

#[cfg(test)]
mod inbox_tests {
    #[test]
    fn inbox_namespaces_round_trip_and_never_collide_with_org_ids() {
        assert_eq!(super::inbox_org("north"), "north.inbox");
        assert_eq!(super::inbox_owner("north.inbox"), Some("north"));
        assert_eq!(super::inbox_owner("north"), None);
    }
}

/// What an ingest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IngestOutcome {
    /// A new instance was stored.
    Stored,
    /// The same bytes were already stored: nothing changed.
    Duplicate,
    /// A different object with the same SOP Instance UID became the current version; the older
    /// one is kept as a prior version.
    Replaced,
}

/// A side effect an [`crate::IngestObserver`] adds to the ingest transaction.
// A handful per commit, built once and moved: boxing the audit event would only add an
// allocation and make observers write `Box::new`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SideRecord {
    /// A durable job for the outbox (routing, analysis): committed with the instance, so a routed
    /// instance always has its job ([`crate::outbox`]). Not written for a duplicate.
    Outbox(crate::outbox::NewJob),
    /// An audit event, appended to the hash chain in the same transaction as the instance
    /// (see [`crate::audit`]). Not written when the commit is a duplicate (nothing changed).
    Audit(crate::audit::AuditEvent),
}

/// One instance plus everything committed with it, in one transaction.
#[derive(Debug, Clone)]
pub struct IngestCommit {
    /// The instance.
    pub record: InstanceRecord,
    /// Side records from observers.
    pub side: Vec<SideRecord>,
    /// SOP Instance UIDs this object rejects (an IOCM rejection note, PS3.3 C.17.6).
    pub rejects: Vec<String>,
}

/// A prior version of an instance, kept when a different object with its SOP UID arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorVersion {
    /// The instance as it was.
    pub instance: StoredInstance,
    /// When it was superseded, ms since the epoch.
    pub superseded_ms: i64,
}
