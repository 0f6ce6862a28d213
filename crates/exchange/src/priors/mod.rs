//! Priors from a legacy PACS (issue 5): a DICOM node as a **source**. Query it (C-FIND, in
//! Study Root or Patient Root: the node's `query_model`), retrieve studies from it (C-MOVE to our own AE title, or C-GET on our own association:
//! the node's `retrieve` method) and prefetch a patient's relevant prior studies when a new
//! study arrives (`prefetch:NODE` route destinations).
//!
//! Submodules: `find` (C-FIND of a patient's studies and of a study's series, in either
//! information model), `retrieve` (running a retrieval job by either method, and what its
//! outcome means), [`relevance`] (which priors a `match=` rule keeps) and [`anatomy`] (coded
//! anatomic regions read as body parts).
//!
//! ## How the instances come in
//! - **C-MOVE**: the Move Destination is always **our own AE title** (`[dicom] ae_title`). The
//!   node opens its own association to our DICOM listener and sends the instances with C-STORE,
//!   so they take the normal ingest path: durable before acknowledged, routed, audited (`store`,
//!   actor the node's AE title), owned by the organisation of the node's AE title in our
//!   directory. Two things must be configured once, outside Vesalius' control: at the node, our
//!   AE title with our DICOM listener's host and port as a move destination; here, the node's
//!   AE title as a calling AE title of the node's organisation (`vesalius admin ae add NODE_AE
//!   --org ORG`), else its associations are refused.
//! - **C-GET**: the instances come as C-STORE sub-operations on the association we opened and go
//!   through the same ingest path (the engine's [`Exchange::set_ingestor`]), in the node's
//!   organisation, with the node's AE title as the actor; instances of another study than the
//!   one asked for are refused. Nothing needs configuring here, and the node needs no address
//!   for us.
//!
//! ## Jobs (durable, in the outbox)
//! - `retrieve` on queue `retrieve:NODE`, one per study (dedupe key: the Study Instance UID):
//!   one C-MOVE or C-GET of the study. Completed only when the node's final status is success without
//!   failed sub-operations **and** the study is held here in the node's organisation afterwards;
//!   the receipts are one per instance held (their SHA-256 as stored here; not verified by the
//!   node: DIMSE has no such confirmation) plus a study receipt. Anything else is a failed
//!   attempt (retried with backoff, parked after `max_attempts`), with a message that says what
//!   to fix (0xA801: the node does not know our AE title; instances reported sent but none held:
//!   its AE title is not registered here for that organisation). A node holding nothing for the
//!   study parks the job at once.
//! - `prefetch` on queue `prefetch:NODE`, one per arriving study (dedupe key: organisation and
//!   Study Instance UID), made inside the ingest transaction of the study's instances by the
//!   routing observer, not before [`DEFAULT_PREFETCH_DELAY`] so that one job serves the whole
//!   study. It runs once per study: a study receipt on its queue marks it done, and later jobs
//!   for that study (instances arriving after it ran) complete without work. It skips studies
//!   that were themselves retrieved from that node (no chain of prefetches). Otherwise it
//!   C-FINDs the node for the patient's studies (same Patient ID, and Issuer of Patient ID when
//!   the arriving study has one; answers with another issuer are dropped, for nodes that ignore
//!   the key), keeps the **N most recent relevant** priors (by Study Date and Time; N = the
//!   rule's `max`, optionally within `years`, relevant by the rule's `match` criteria, asking the
//!   node for a prior's series when its study-level answer cannot tell), and adds a `retrieve`
//!   job for each that is not already held here. Its study receipt says what it found.
//!
//! ## Crash behaviour
//! A prefetch that dies after adding its retrieve jobs but before completing runs again: the
//! retrieve jobs' dedupe keys (and the "held here" check) keep studies from being moved twice.
//! A retrieve that dies mid-move runs again: the node sends the study again and identical
//! instances are no-op successes here.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use vesalius_auth::Caller;
use vesalius_core::tag;
use vesalius_store::audit::Outcome;
use vesalius_store::model::{InstanceRecord, StoredInstance};
use vesalius_store::outbox::{Job, JobFilter, NewJob, Receipt, ReceiptFilter, ReceiptKind};
use vesalius_store::query::{Access, Scope};
use vesalius_store::registry::{DicomNode, Prefetch};

use crate::worker::Exchange;
use crate::{Error, now_ms};

pub mod anatomy;
mod find;
pub mod relevance;
mod retrieve;

pub(crate) use find::dimse_error;
pub use find::{NodeQuery, NodeStudy, audit_model, find_studies, study_keys};
pub use relevance::{ArrivingStudy, Selection, SeriesInfo, choose_priors};

/// The job kind of a study retrieval from a DICOM node.
pub const RETRIEVE: &str = "retrieve";
/// The job kind of a prefetch (find the priors, then retrieve them).
pub const PREFETCH: &str = "prefetch";
/// How long a prefetch job waits after the first instance of its study arrived.
pub const DEFAULT_PREFETCH_DELAY: Duration = Duration::from_secs(2);
/// The most studies read from one C-FIND answer (the rest is cancelled).
pub const MAX_FIND_RESULTS: usize = 1000;
/// The most series-level C-FINDs one prefetch makes to judge priors its study-level answer
/// cannot (no Modalities in Study, a Study Description naming no body region); priors beyond
/// are not relevant.
pub const MAX_SERIES_QUERIES: usize = 10;

/// The queue of retrievals from `node`.
pub fn retrieve_queue(node: &str) -> String {
    format!("retrieve:{node}")
}

/// The queue of prefetches from `node`.
pub fn prefetch_queue(node: &str) -> String {
    format!("prefetch:{node}")
}

/// The DICOM node of a `retrieve:` or `prefetch:` queue.
pub fn queue_node(queue: &str) -> Option<&str> {
    queue
        .strip_prefix("retrieve:")
        .or_else(|| queue.strip_prefix("prefetch:"))
}

/// `host:port` of a node, bracketing IPv6 addresses.
pub fn node_addr(node: &DicomNode) -> String {
    if node.host.contains(':') {
        format!("[{}]:{}", node.host, node.port)
    } else {
        format!("{}:{}", node.host, node.port)
    }
}

/// One study to move from a node to us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrieveJob {
    /// The organisation the study is for (the node's).
    pub org: String,
    /// The node, by name.
    pub node: String,
    /// Study Instance UID.
    pub study_uid: String,
    /// Number of Study Related Instances the node announced, if it did.
    #[serde(default)]
    pub expected_instances: Option<u64>,
    /// Who asked: `route:ID` (prefetch) or the actor's name.
    pub requested_by: String,
    /// For a prefetch, the arriving study whose prior this is.
    #[serde(default)]
    pub prior_of: Option<String>,
    /// SOP Classes in Study the node announced (the storage classes a C-GET proposes); empty
    /// when unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sop_classes: Vec<String>,
    /// The study's Patient ID at the node: a Patient Root C-MOVE or C-GET names it beside the
    /// Study Instance UID (PS3.4 C.4.2.2.1). Empty when unknown (Study Root needs none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub patient_id: String,
}

impl RetrieveJob {
    /// The outbox job, on queue `retrieve:NODE`, deduplicated by study.
    pub fn to_job(&self, priority: i32) -> NewJob {
        NewJob {
            kind: RETRIEVE.to_owned(),
            queue: retrieve_queue(&self.node),
            study_uid: self.study_uid.clone(),
            payload: serde_json::to_string(self).expect("serialisable"),
            priority,
            not_before_ms: 0,
            dedupe_key: Some(self.study_uid.clone()),
        }
    }
}

/// A prefetch for an arriving study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchJob {
    /// The organisation of the arriving study.
    pub org: String,
    /// The arriving study.
    pub study_uid: String,
    /// Its Patient ID.
    pub patient_id: String,
    /// Its Issuer of Patient ID ("" when none).
    pub issuer: String,
    /// The rule.
    pub rule: Prefetch,
    /// The route that fired.
    pub route_id: String,
    /// The arriving study's Modality, Body Part Examined and Study Description (of the
    /// instance that made the job), which relevant priors are matched against.
    #[serde(default)]
    pub modality: String,
    /// Body Part Examined.
    #[serde(default)]
    pub body_part: String,
    /// The codes of its Anatomic Region Sequence (0008,2218).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anatomic_region: Vec<anatomy::AnatomicCode>,
    /// Study Description.
    #[serde(default)]
    pub description: String,
    /// Its coded procedures ([`anatomy::procedure_codes`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub procedures: Vec<anatomy::AnatomicCode>,
    /// The sides it states ([`anatomy::sides`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sides: Vec<anatomy::Side>,
}

impl PrefetchJob {
    /// The prefetch for the study of `record`; `None` without a Patient ID (nothing to match).
    pub fn of(record: &InstanceRecord, rule: &Prefetch, route_id: &str) -> Option<PrefetchJob> {
        let patient_id = record.patient.patient_id.trim();
        if patient_id.is_empty() {
            return None;
        }
        let coded = coded_of(&record.metadata_json);
        Some(PrefetchJob {
            org: record.org.clone(),
            study_uid: record.study.study_uid.clone(),
            patient_id: patient_id.to_owned(),
            issuer: record.patient.issuer.trim().to_owned(),
            rule: rule.clone(),
            route_id: route_id.to_owned(),
            modality: record.series.modality.trim().to_owned(),
            body_part: record.series.body_part.trim().to_owned(),
            anatomic_region: coded.anatomic_region,
            description: record.study.description.trim().to_owned(),
            procedures: coded.procedures,
            sides: coded.sides,
        })
    }

    /// The outbox job on queue `prefetch:NODE`, not before `not_before_ms`, deduplicated by
    /// organisation and study.
    pub fn to_job(&self, priority: i32, not_before_ms: i64) -> NewJob {
        NewJob {
            kind: PREFETCH.to_owned(),
            queue: prefetch_queue(&self.rule.node),
            study_uid: self.study_uid.clone(),
            payload: serde_json::to_string(self).expect("serialisable"),
            priority,
            not_before_ms,
            dedupe_key: Some(format!("{}:{}", self.org, self.study_uid)),
        }
    }
}

/// What an instance codes of its anatomy, procedures and side.
#[derive(Debug, Default)]
struct Coded {
    anatomic_region: Vec<anatomy::AnatomicCode>,
    procedures: Vec<anatomy::AnatomicCode>,
    sides: Vec<anatomy::Side>,
}

/// The codes of the Anatomic Region Sequence (0008,2218), the coded procedures and the sides
/// in an instance's metadata (DICOM JSON); the metadata is parsed only when it has one of the
/// attributes.
fn coded_of(metadata_json: &str) -> Coded {
    let keys = [
        tag::ANATOMIC_REGION_SEQUENCE,
        tag::PROCEDURE_CODE_SEQUENCE,
        tag::REQUESTED_PROCEDURE_CODE_SEQUENCE,
        tag::REQUEST_ATTRIBUTES_SEQUENCE,
        tag::LATERALITY,
        tag::IMAGE_LATERALITY,
        tag::FRAME_ANATOMY_SEQUENCE,
    ];
    if !keys
        .iter()
        .any(|t| metadata_json.contains(&format!("\"{t:08X}\"")))
    {
        return Coded::default();
    }
    match serde_json::from_str::<Map<String, Json>>(metadata_json) {
        Ok(m) => Coded {
            anatomic_region: {
                // An enhanced multi-frame object codes its region per frame (PS3.3 C.7.6.16.2.8).
                let mut codes = anatomy::codes(&m, tag::ANATOMIC_REGION_SEQUENCE);
                for frame in anatomy::frame_anatomy(&m) {
                    codes.extend(anatomy::codes(frame, tag::ANATOMIC_REGION_SEQUENCE));
                }
                let mut seen = std::collections::HashSet::new();
                codes.retain(|c| seen.insert(c.clone()));
                codes
            },
            procedures: anatomy::procedure_codes(&m),
            sides: anatomy::sides(&m),
        },
        Err(_) => Coded::default(),
    }
}

/// `YYYYMMDD` of `now_ms` (UTC) less `years` years, for a Study Date range.
pub fn years_ago(now_ms: i64, years: u32) -> String {
    let (y, m, d) = vesalius_deid::civil_from_days(now_ms.div_euclid(86_400_000));
    let y = y - i64::from(years);
    // 29 February of a year that has none becomes the 28th: the range stays a range.
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let d = if m == 2 && d == 29 && !leap { 28 } else { d };
    format!("{y:04}{m:02}{d:02}")
}

impl Exchange {
    /// Runs leased `retrieve` and `prefetch` jobs of `queue`, one after the other (one C-MOVE at
    /// a time per node: legacy PACS are slow to serve several).
    pub(crate) async fn run_priors(&self, queue: &str, jobs: Vec<Job>) {
        let Some(name) = queue_node(queue) else {
            return;
        };
        let node = match self.registry().node(name).await {
            Ok(Some(n)) => n,
            Ok(None) => {
                for j in &jobs {
                    self.fail_job(j, &format!("no DICOM node named {name}"), false)
                        .await;
                }
                return;
            }
            Err(e) => {
                for j in &jobs {
                    self.fail_job(j, &e.to_string(), false).await;
                }
                return;
            }
        };
        for j in jobs {
            match j.job.kind.as_str() {
                RETRIEVE => match serde_json::from_str::<RetrieveJob>(&j.job.payload) {
                    Ok(r) => self.retrieve(&j, &node, &r).await,
                    Err(e) => {
                        self.fail_job(&j, &format!("unreadable job: {e}"), true)
                            .await
                    }
                },
                PREFETCH => match serde_json::from_str::<PrefetchJob>(&j.job.payload) {
                    Ok(p) => self.prefetch(&j, &node, &p).await,
                    Err(e) => {
                        self.fail_job(&j, &format!("unreadable job: {e}"), true)
                            .await
                    }
                },
                other => {
                    self.fail_job(&j, &format!("unknown job kind {other}"), true)
                        .await
                }
            }
        }
    }

    /// The current instances of `study` held in `org`.
    pub(crate) async fn held(&self, org: &str, study: &str) -> Result<Vec<StoredInstance>, Error> {
        let scope = Scope {
            access: Some(Access::orgs([org.to_owned()])),
            ..Scope::study(study)
        };
        Ok(self.index().instances(&scope).await?)
    }

    async fn prefetch(&self, j: &Job, node: &DicomNode, p: &PrefetchJob) {
        let queue = &j.job.queue;
        if node.org != p.org {
            let msg = format!(
                "DICOM node {} belongs to organisation {}: studies of {} are not prefetched \
                 from it",
                node.name, node.org, p.org
            );
            return self.fail_job(j, &msg, true).await;
        }
        // Once per study: a study receipt on this queue says it ran.
        match self.has_receipt(queue, &p.study_uid, true).await {
            Ok(true) => return self.complete_quietly(j, vec![]).await,
            Ok(false) => {}
            Err(e) => return self.fail_job(j, &e.to_string(), false).await,
        }
        let rq = retrieve_queue(&node.name);
        let from_node = match self.has_receipt(&rq, &p.study_uid, false).await {
            Ok(true) => true,
            Ok(false) => match self
                .outbox()
                .jobs(&JobFilter {
                    queue: Some(rq.clone()),
                    study_uid: Some(p.study_uid.clone()),
                    limit: 1,
                    ..Default::default()
                })
                .await
            {
                Ok(jobs) => !jobs.is_empty(),
                Err(e) => return self.fail_job(j, &e.to_string(), false).await,
            },
            Err(e) => return self.fail_job(j, &e.to_string(), false).await,
        };
        if from_node {
            let r = self.study_receipt(
                &p.org,
                queue,
                &p.study_uid,
                format!("skipped: the study was retrieved from {}", node.name),
                0,
            );
            return self.complete_quietly(j, vec![r]).await;
        }
        let now = now_ms();
        let q = NodeQuery {
            patient_id: p.patient_id.clone(),
            // `peer:NAME` is the index's issuer for a peer's unqualified IDs (docs/patients.md),
            // unknown to any node: the object itself has none, so neither has the query.
            issuer: if p.issuer.starts_with("peer:") {
                String::new()
            } else {
                p.issuer.clone()
            },
            study_date: p
                .rule
                .years
                .map(|y| format!("{}-", years_ago(now, y)))
                .unwrap_or_default(),
        };
        let found = find_studies(
            node,
            &self.options().ae_title,
            &q,
            self.options().find_timeout,
        )
        .await;
        let details = json!({
            "operation": "C-FIND", "model": audit_model(node), "node": node.name,
            "keys": {"PatientID": q.patient_id, "IssuerOfPatientID": q.issuer,
                     "StudyDate": q.study_date},
            "prefetch_for": p.study_uid, "route": p.route_id,
            "results": found.as_ref().map(Vec::len).ok(),
        });
        let outcome = if found.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        let mut ev = Caller::system().event("query", outcome, &p.org, None, details);
        ev.patient = Some((p.issuer.clone(), p.patient_id.clone()));
        self.audit(ev).await;
        let found = match found {
            Ok(f) => f,
            Err(e) => return self.fail_job(j, &e.to_string(), false).await,
        };
        let arriving = ArrivingStudy {
            modalities: vec![p.modality.clone()],
            body_part: p.body_part.clone(),
            anatomic_region: p.anatomic_region.clone(),
            description: p.description.clone(),
            procedures: p.procedures.clone(),
            sides: p.sides.clone(),
        };
        // Priors the study-level answer cannot judge (no Modalities in Study, a description
        // naming no body region) are judged by their series, asked for one study at a time,
        // most recent first, at most MAX_SERIES_QUERIES.
        let mut series = std::collections::HashMap::new();
        let selection = loop {
            let sel = choose_priors(&found, &p.study_uid, &arriving, &p.rule, now, &series);
            let Some(uid) = sel.need_series else {
                break sel;
            };
            let info = if series.len() < MAX_SERIES_QUERIES {
                match self.series_info(node, &p.patient_id, &uid).await {
                    Ok(info) => info,
                    Err(e) => return self.fail_job(j, &e.to_string(), false).await,
                }
            } else {
                SeriesInfo::default()
            };
            series.insert(uid, info);
        };
        let priors = &selection.chosen;
        let mut wanted = Vec::new();
        for s in priors {
            match self.held(&p.org, &s.study_uid).await {
                Ok(h) if !h.is_empty() => {}
                Ok(_) => wanted.push(s),
                Err(e) => return self.fail_job(j, &e.to_string(), false).await,
            }
        }
        let jobs: Vec<NewJob> = wanted
            .iter()
            .map(|s| {
                RetrieveJob {
                    org: p.org.clone(),
                    node: node.name.clone(),
                    study_uid: s.study_uid.clone(),
                    expected_instances: s.instances,
                    requested_by: format!("route:{}", p.route_id),
                    prior_of: Some(p.study_uid.clone()),
                    sop_classes: s.sop_classes.clone(),
                    patient_id: s.patient_id.clone(),
                }
                .to_job(j.job.priority)
            })
            .collect();
        if !jobs.is_empty()
            && let Err(e) = self.outbox().enqueue(jobs, now_ms()).await
        {
            return self.fail_job(j, &e.to_string(), false).await;
        }
        let relevant = if p.rule.matching.is_empty() {
            String::new()
        } else {
            let m: Vec<&str> = p.rule.matching.iter().map(|m| m.as_str()).collect();
            format!(
                "{} not relevant by {}, ",
                selection.not_relevant,
                m.join(" and ")
            )
        };
        let detail = format!(
            "{} other studies of the patient at {}, {relevant}{} most recent kept, {} already \
             here, {} to retrieve",
            found.iter().filter(|s| s.study_uid != p.study_uid).count(),
            node.name,
            priors.len(),
            priors.len() - wanted.len(),
            wanted.len()
        );
        let r = self.study_receipt(&p.org, queue, &p.study_uid, detail, wanted.len() as u64);
        self.complete_quietly(j, vec![r]).await;
    }

    fn study_receipt(
        &self,
        org: &str,
        queue: &str,
        study: &str,
        detail: String,
        size: u64,
    ) -> Receipt {
        Receipt::study(org, queue, study, size, now_ms(), false, detail)
    }

    /// Whether `queue` has a receipt for `study` (only study receipts when `study_only`).
    async fn has_receipt(&self, queue: &str, study: &str, study_only: bool) -> Result<bool, Error> {
        let r = self
            .outbox()
            .receipts(&ReceiptFilter {
                queue: Some(queue.to_owned()),
                study_uid: Some(study.to_owned()),
                ..Default::default()
            })
            .await?;
        Ok(r.iter()
            .any(|r| !study_only || r.kind == ReceiptKind::Study))
    }

    async fn complete_quietly(&self, j: &Job, receipts: Vec<Receipt>) {
        if let Err(e) = self
            .outbox()
            .complete(&self.options().owner, &[j.id], receipts)
            .await
        {
            tracing::warn!("{}: completing job {}: {e}", j.job.queue, j.id);
        }
    }

    /// Appends one audit event (through the registry, which commits audit events).
    pub(crate) async fn audit(&self, ev: vesalius_store::audit::AuditEvent) {
        if let Err(e) = self.registry().apply(Vec::new(), vec![ev]).await {
            tracing::warn!("audit of a node query: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study(uid: &str, date: &str) -> NodeStudy {
        NodeStudy {
            study_uid: uid.into(),
            patient_id: "P1".into(),
            study_date: date.into(),
            ..Default::default()
        }
    }

    /// The arriving study's codes and sides come from its metadata; a job queued before they
    /// existed still reads.
    #[test]
    fn coded_procedures_and_sides_of_the_arriving_instance() {
        let c = coded_of(
            r#"{"00200060":{"vr":"CS","Value":["L"]},
                "00081032":{"vr":"SQ","Value":[{"00080100":{"vr":"SH","Value":["36510-6"]},
                                               "00080102":{"vr":"SH","Value":["LN"]}}]}}"#,
        );
        assert_eq!(c.sides, [anatomy::Side::Left]);
        assert_eq!(c.procedures, [anatomy::AnatomicCode::new("LN", "36510-6")]);
        assert!(c.anatomic_region.is_empty());
        let none = coded_of(r#"{"00100020":{"vr":"LO","Value":["P1"]}}"#);
        assert!(none.sides.is_empty() && none.procedures.is_empty());
        assert!(coded_of("{not json \"00200060\"").sides.is_empty());
        let old: PrefetchJob = serde_json::from_str(
            r#"{"org":"o","study_uid":"1.2","patient_id":"P1","issuer":"",
                "rule":{"node":"pacs"},"route_id":"r1","modality":"MR"}"#,
        )
        .unwrap();
        assert!(old.procedures.is_empty() && old.sides.is_empty());
    }

    #[test]
    fn years_ago_is_a_calendar_date() {
        // 2024-02-29T12:00Z
        let leap = 1_709_208_000_000;
        assert_eq!(years_ago(leap, 0), "20240229");
        assert_eq!(years_ago(leap, 1), "20230228");
        assert_eq!(years_ago(leap, 5), "20190228");
        assert_eq!(years_ago(0, 0), "19700101");
    }

    #[test]
    fn the_most_recent_priors_other_than_the_current_study() {
        let found = vec![
            study("old", "20100101"),
            study("current", "20240101"),
            study("recent", "20230101"),
            study("middle", "20200101"),
            study("recent", "20230101"),
        ];
        let mut rule = Prefetch::new("pacs");
        rule.max = 2;
        let none = std::collections::HashMap::new();
        let any = ArrivingStudy::default();
        let chosen = |rule: &Prefetch| -> Vec<String> {
            choose_priors(&found, "current", &any, rule, 1_709_208_000_000, &none)
                .chosen
                .into_iter()
                .map(|s| s.study_uid)
                .collect()
        };
        assert_eq!(chosen(&rule), ["recent", "middle"]);
        rule.max = 10;
        rule.years = Some(5);
        assert_eq!(
            chosen(&rule),
            ["recent", "middle"],
            "older than 5 years is left out"
        );
    }
}
