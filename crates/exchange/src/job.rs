//! The payload of a transfer job: everything a worker needs to send one instance without
//! another index read (the outbox row is self-contained, so a worker on any node can run it).

use serde::{Deserialize, Serialize};
use vesalius_store::model::InstanceRecord;
use vesalius_store::outbox::NewJob;
use vesalius_store::registry::RouteDestination;

/// The job kind of instance transfers.
pub const TRANSFER: &str = "transfer";

/// One instance to send to one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferJob {
    /// The owning organisation (the sender's).
    pub org: String,
    /// Study Instance UID.
    pub study_uid: String,
    /// Series Instance UID.
    pub series_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// Transfer syntax the blob is stored in.
    pub transfer_syntax: String,
    /// Where the bytes are.
    pub blob_key: String,
    /// Their SHA-256 (hex): the manifest entry and the dedupe key.
    pub sha256: String,
    /// Their size.
    pub size: u64,
    /// The route that made the job ("" when asked by hand).
    pub route_id: String,
    /// De-identify with this profile before sending.
    pub deid: Option<String>,
}

impl TransferJob {
    /// The job for `record` to `dest`.
    pub fn of(record: &InstanceRecord, route_id: &str, deid: Option<String>) -> TransferJob {
        TransferJob {
            org: record.org.clone(),
            study_uid: record.study.study_uid.clone(),
            series_uid: record.series.series_uid.clone(),
            sop_instance_uid: record.instance.sop_instance_uid.clone(),
            sop_class_uid: record.instance.sop_class_uid.clone(),
            transfer_syntax: record.instance.transfer_syntax.clone(),
            blob_key: record.blob_key.clone(),
            sha256: record.sha256.clone(),
            size: record.size,
            route_id: route_id.to_owned(),
            deid,
        }
    }

    /// The outbox job sending this to `dest` at `priority`. The dedupe key (SOP Instance UID and
    /// hash) keeps two routes to one destination from sending the same bytes twice.
    pub fn to_job(&self, dest: &RouteDestination, priority: i32) -> NewJob {
        NewJob {
            kind: TRANSFER.to_owned(),
            queue: dest.queue(),
            study_uid: self.study_uid.clone(),
            payload: serde_json::to_string(self).expect("serialisable"),
            priority,
            not_before_ms: 0,
            dedupe_key: Some(format!("{}:{}", self.sop_instance_uid, self.sha256)),
        }
    }
}
