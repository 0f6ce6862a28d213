//! Priors from a legacy PACS (issue 5): a DICOM node as a **source**. Query it (C-FIND, Study
//! Root), retrieve studies from it (C-MOVE to our own AE title) and prefetch a patient's prior
//! studies when a new study arrives (`prefetch:NODE` route destinations).
//!
//! ## How the instances come in
//! A C-MOVE names a Move Destination; here it is always **our own AE title** (`[dicom]
//! ae_title`). The node opens its own association to our DICOM listener and sends the instances
//! with C-STORE, so they take the normal ingest path: durable before acknowledged, routed,
//! audited (`store`, actor the node's AE title), owned by the organisation of the node's AE title
//! in our directory. Two things must be configured once, outside Vesalius' control:
//! - at the node: our AE title with our DICOM listener's host and port as a move destination;
//! - here: the node's AE title as a calling AE title of the node's organisation
//!   (`vesalius admin ae add NODE_AE --org ORG`), else its associations are refused.
//!
//! ## Jobs (durable, in the outbox)
//! - `retrieve` on queue `retrieve:NODE`, one per study (dedupe key: the Study Instance UID):
//!   one C-MOVE of the study. Completed only when the node's final status is success without
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
//!   the key), keeps the **N most recent** priors (by Study Date and Time; N = the rule's `max`,
//!   optionally within `years`), and adds a `retrieve` job for each that is not already held
//!   here. Its study receipt says what it found.
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
use vesalius_dimse::scu::{self, MoveOptions, MoveOutcome};
use vesalius_store::audit::Outcome;
use vesalius_store::model::{InstanceRecord, StoredInstance};
use vesalius_store::outbox::{Job, JobFilter, NewJob, Receipt, ReceiptFilter, ReceiptKind};
use vesalius_store::query::{Access, Level, Scope};
use vesalius_store::registry::{DicomNode, Prefetch};

use crate::worker::Exchange;
use crate::{Error, ExchangeEvent, now_ms};

/// The job kind of a study retrieval from a DICOM node.
pub const RETRIEVE: &str = "retrieve";
/// The job kind of a prefetch (find the priors, then retrieve them).
pub const PREFETCH: &str = "prefetch";
/// How long a prefetch job waits after the first instance of its study arrived.
pub const DEFAULT_PREFETCH_DELAY: Duration = Duration::from_secs(2);
/// The most studies read from one C-FIND answer (the rest is cancelled).
pub const MAX_FIND_RESULTS: usize = 1000;

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
}

impl PrefetchJob {
    /// The prefetch for the study of `record`; `None` without a Patient ID (nothing to match).
    pub fn of(record: &InstanceRecord, rule: &Prefetch, route_id: &str) -> Option<PrefetchJob> {
        let patient_id = record.patient.patient_id.trim();
        if patient_id.is_empty() {
            return None;
        }
        Some(PrefetchJob {
            org: record.org.clone(),
            study_uid: record.study.study_uid.clone(),
            patient_id: patient_id.to_owned(),
            issuer: record.patient.issuer.trim().to_owned(),
            rule: rule.clone(),
            route_id: route_id.to_owned(),
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

/// One study a node answered with (C-FIND, study level).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStudy {
    /// Study Instance UID.
    pub study_uid: String,
    /// Patient ID.
    pub patient_id: String,
    /// Issuer of Patient ID.
    pub issuer: String,
    /// Patient's Name.
    pub patient_name: String,
    /// Study Date.
    pub study_date: String,
    /// Study Time.
    pub study_time: String,
    /// Accession Number.
    pub accession: String,
    /// Modalities in Study.
    pub modalities: Vec<String>,
    /// Study Description.
    pub description: String,
    /// Number of Study Related Instances, when answered.
    pub instances: Option<u64>,
}

impl NodeStudy {
    /// Reads a C-FIND answer (DICOM JSON).
    pub fn of(answer: &Map<String, Json>) -> NodeStudy {
        let first = |t: u32| -> Option<&Json> {
            answer
                .get(&format!("{t:08X}"))?
                .get("Value")?
                .as_array()?
                .first()
        };
        let text = |t: u32| -> String {
            match first(t) {
                Some(Json::String(s)) => s.trim().to_owned(),
                Some(Json::Number(n)) => n.to_string(),
                Some(Json::Object(o)) => o
                    .get("Alphabetic")
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                _ => String::new(),
            }
        };
        let modalities = answer
            .get(&format!("{:08X}", tag::MODALITIES_IN_STUDY))
            .and_then(|e| e.get("Value"))
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        NodeStudy {
            study_uid: text(tag::STUDY_INSTANCE_UID),
            patient_id: text(tag::PATIENT_ID),
            issuer: text(tag::ISSUER_OF_PATIENT_ID),
            patient_name: text(tag::PATIENT_NAME),
            study_date: text(tag::STUDY_DATE),
            study_time: text(tag::STUDY_TIME),
            accession: text(tag::ACCESSION_NUMBER),
            modalities,
            description: text(tag::STUDY_DESCRIPTION),
            instances: text(tag::NUMBER_OF_STUDY_RELATED_INSTANCES).parse().ok(),
        }
    }
}

/// What to ask a node for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeQuery {
    /// Patient ID (required: a node is not browsed whole).
    pub patient_id: String,
    /// Issuer of Patient ID, "" for any.
    pub issuer: String,
    /// Study Date: `YYYYMMDD`, or a range `YYYYMMDD-YYYYMMDD` (either side may be open).
    pub study_date: String,
}

/// Queries `node` for studies (C-FIND, Study Root, study level), calling as `calling`, within
/// `timeout`; at most [`MAX_FIND_RESULTS`]. Answers whose Patient ID differs, or whose issuer
/// differs from a given one, are dropped (for nodes that match loosely or ignore the issuer).
pub async fn find_studies(
    node: &DicomNode,
    calling: &str,
    q: &NodeQuery,
    timeout: Duration,
) -> Result<Vec<NodeStudy>, Error> {
    let keys = scu::study_find_keys(&q.patient_id, &q.issuer, &q.study_date);
    let addr = node_addr(node);
    let find = scu::find_limited(
        &addr,
        calling,
        &node.ae_title,
        Level::Study,
        &keys,
        MAX_FIND_RESULTS,
    );
    let (answers, _) = tokio::time::timeout(timeout, find)
        .await
        .map_err(|_| {
            Error::Unreachable(format!(
                "{}: no C-FIND answer within {} s",
                node.name,
                timeout.as_secs()
            ))
        })?
        .map_err(|e| dimse_error(node, "C-FIND", e))?;
    Ok(answers
        .iter()
        .map(NodeStudy::of)
        .filter(|s| !s.study_uid.is_empty() && s.patient_id == q.patient_id)
        .filter(|s| q.issuer.is_empty() || s.issuer.is_empty() || s.issuer == q.issuer)
        .collect())
}

fn dimse_error(node: &DicomNode, op: &str, e: vesalius_dimse::Error) -> Error {
    let msg = format!("{} ({}): {op}: {e}", node.name, node.ae_title);
    match e.kind() {
        vesalius_core::ErrorKind::Unavailable => Error::Unreachable(msg),
        _ => Error::Dimse(msg),
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

/// The priors to hold: the `rule.max` most recent of `found` other than `current`, within
/// `rule.years` (by Study Date) when set. Most recent first.
pub fn choose_priors(
    found: &[NodeStudy],
    current: &str,
    rule: &Prefetch,
    now_ms: i64,
) -> Vec<NodeStudy> {
    let oldest = rule.years.map(|y| years_ago(now_ms, y));
    let mut priors: Vec<NodeStudy> = found
        .iter()
        .filter(|s| s.study_uid != current)
        .filter(|s| {
            oldest
                .as_deref()
                .is_none_or(|o| !s.study_date.is_empty() && s.study_date.as_str() >= o)
        })
        .cloned()
        .collect();
    priors.sort_by(|a, b| {
        (&b.study_date, &b.study_time, &b.study_uid).cmp(&(
            &a.study_date,
            &a.study_time,
            &a.study_uid,
        ))
    });
    priors.dedup_by(|a, b| a.study_uid == b.study_uid);
    priors.truncate(rule.max as usize);
    priors
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
    async fn held(&self, org: &str, study: &str) -> Result<Vec<StoredInstance>, Error> {
        let scope = Scope {
            access: Some(Access::orgs([org.to_owned()])),
            ..Scope::study(study)
        };
        Ok(self.index().instances(&scope).await?)
    }

    async fn retrieve(&self, j: &Job, node: &DicomNode, r: &RetrieveJob) {
        if node.org != r.org {
            let msg = format!(
                "DICOM node {} now belongs to organisation {}, not {}",
                node.name, node.org, r.org
            );
            return self.fail_job(j, &msg, true).await;
        }
        let ours = self.options().ae_title.clone();
        let opts = MoveOptions::new(&ours).timeout(self.options().move_timeout);
        let study_key = vec![(tag::STUDY_INSTANCE_UID, r.study_uid.clone())];
        let t0 = std::time::Instant::now();
        let outcome = scu::move_(
            &node_addr(node),
            &ours,
            &node.ae_title,
            Level::Study,
            &study_key,
            &opts,
            |_| {},
        )
        .await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                return self
                    .fail_job(j, &dimse_error(node, "C-MOVE", e).to_string(), false)
                    .await;
            }
        };
        let held = match self.held(&r.org, &r.study_uid).await {
            Ok(h) => h,
            Err(e) => return self.fail_job(j, &e.to_string(), false).await,
        };
        if let Some((message, park)) = move_problem(node, &ours, &r.org, &outcome, held.len()) {
            return self.fail_job(j, &message, park).await;
        }
        let c = &outcome.suboperations;
        let detail = format!(
            "C-MOVE from {} ({}): {} moved, {} warning, {} held here, {} ms",
            node.name,
            node.ae_title,
            c.completed,
            c.warning,
            held.len(),
            t0.elapsed().as_millis()
        );
        let now = now_ms();
        let queue = &j.job.queue;
        let mut receipts: Vec<Receipt> = held
            .iter()
            .map(|i| Receipt {
                queue: queue.clone(),
                kind: ReceiptKind::Instance,
                study_uid: r.study_uid.clone(),
                sop_instance_uid: i.sop_instance_uid.clone(),
                sha256: i.sha256.clone(),
                size: i.size,
                delivered_ms: now,
                verified: false,
                detail: format!("C-MOVE from {}", node.name),
            })
            .collect();
        receipts.push(Receipt::study(
            queue,
            &r.study_uid,
            held.len() as u64,
            now,
            false,
            detail,
        ));
        if let Err(e) = self
            .outbox()
            .complete(&self.options().owner, &[j.id], receipts)
            .await
        {
            tracing::warn!("{queue}: completing the retrieval of {}: {e}", r.study_uid);
            return;
        }
        metrics::counter!("vesalius_exchange_retrieved_studies_total").increment(1);
        self.publish(ExchangeEvent::TransferComplete {
            queue: queue.clone(),
            study_uid: r.study_uid.clone(),
            instances: held.len() as u64,
        });
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
            "operation": "C-FIND", "model": "study-root", "node": node.name,
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
        let priors = choose_priors(&found, &p.study_uid, &p.rule, now);
        let mut wanted = Vec::new();
        for s in &priors {
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
                }
                .to_job(j.job.priority)
            })
            .collect();
        if !jobs.is_empty()
            && let Err(e) = self.outbox().enqueue(jobs, now_ms()).await
        {
            return self.fail_job(j, &e.to_string(), false).await;
        }
        let detail = format!(
            "{} other studies of the patient at {}, {} most recent kept, {} already here, {} to \
             retrieve",
            found.iter().filter(|s| s.study_uid != p.study_uid).count(),
            node.name,
            priors.len(),
            priors.len() - wanted.len(),
            wanted.len()
        );
        let r = self.study_receipt(queue, &p.study_uid, detail, wanted.len() as u64);
        self.complete_quietly(j, vec![r]).await;
    }

    fn study_receipt(&self, queue: &str, study: &str, detail: String, size: u64) -> Receipt {
        Receipt::study(queue, study, size, now_ms(), false, detail)
    }

    /// Whether `queue` has a receipt for `study` (only study receipts when `study_only`).
    async fn has_receipt(&self, queue: &str, study: &str, study_only: bool) -> Result<bool, Error> {
        let r = self
            .outbox()
            .receipts(&ReceiptFilter {
                queue: Some(queue.to_owned()),
                study_uid: Some(study.to_owned()),
                limit: 0,
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

/// Why a finished C-MOVE does not count as a retrieval, and whether retrying cannot help
/// (`true`: park at once).
fn move_problem(
    node: &DicomNode,
    ours: &str,
    org: &str,
    o: &MoveOutcome,
    held: usize,
) -> Option<(String, bool)> {
    let c = &o.suboperations;
    let who = format!("{} ({})", node.name, node.ae_title);
    if o.status == 0xA801 {
        return Some((
            format!(
                "{who} does not know our AE title {ours} as a move destination (0xA801): add \
                 {ours} with the host and port of our DICOM listener to its destinations"
            ),
            false,
        ));
    }
    if o.cancelled {
        return Some((
            format!(
                "C-MOVE from {who} timed out and was cancelled: {} moved, {} failed, {} left",
                c.completed, c.failed, c.remaining
            ),
            false,
        ));
    }
    let moved = c.completed + c.warning;
    if (o.status == 0x0000 || o.status == 0xB000) && moved > 0 && held == 0 {
        return Some((
            format!(
                "{who} reports {moved} instances sent, but none is held in organisation {org}: \
                 register its AE title here (vesalius admin ae add {} --org {org})",
                node.ae_title
            ),
            false,
        ));
    }
    if o.is_complete() && moved == 0 && held == 0 {
        return Some((format!("{who} holds no instances of the study"), true));
    }
    if !o.is_complete() {
        let comment = o
            .comment
            .as_deref()
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        let failed = if o.failed_instances.is_empty() {
            String::new()
        } else {
            format!(" (failed: {})", o.failed_instances.join(", "))
        };
        // Nothing could be stored here: the usual causes are on our side of the set-up.
        let hint = if moved == 0 && c.failed > 0 {
            format!(
                "; none could be stored here: does {} reach our DICOM listener as {ours}, and is \
                 its AE title registered here (vesalius admin ae add {} --org {org})?",
                node.name, node.ae_title
            )
        } else {
            String::new()
        };
        return Some((
            format!(
                "C-MOVE from {who} ended with status 0x{:04X} ({}{comment}): {} moved, {} \
                 failed{failed}{hint}",
                o.status,
                o.status_meaning(),
                moved,
                c.failed
            ),
            false,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesalius_dimse::message::SubOperations;

    fn study(uid: &str, date: &str) -> NodeStudy {
        NodeStudy {
            study_uid: uid.into(),
            patient_id: "P1".into(),
            study_date: date.into(),
            ..Default::default()
        }
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
        let got: Vec<String> = choose_priors(&found, "current", &rule, 1_709_208_000_000)
            .into_iter()
            .map(|s| s.study_uid)
            .collect();
        assert_eq!(got, ["recent", "middle"]);
        rule.max = 10;
        rule.years = Some(5);
        let got: Vec<String> = choose_priors(&found, "current", &rule, 1_709_208_000_000)
            .into_iter()
            .map(|s| s.study_uid)
            .collect();
        assert_eq!(got, ["recent", "middle"], "older than 5 years is left out");
    }

    #[test]
    fn node_study_from_a_find_answer() {
        let a: Map<String, Json> = serde_json::from_str(
            r#"{"0020000D":{"vr":"UI","Value":["1.2.3"]},"00100020":{"vr":"LO","Value":["P1"]},
                "00100010":{"vr":"PN","Value":[{"Alphabetic":"DOE^JO"}]},
                "00080061":{"vr":"CS","Value":["CT","SR"]},
                "00201208":{"vr":"IS","Value":[12]},"00080020":{"vr":"DA","Value":["20240101"]}}"#,
        )
        .unwrap();
        let s = NodeStudy::of(&a);
        assert_eq!(s.study_uid, "1.2.3");
        assert_eq!(s.patient_name, "DOE^JO");
        assert_eq!(s.modalities, ["CT", "SR"]);
        assert_eq!(s.instances, Some(12));
        assert_eq!(s.study_date, "20240101");
        assert_eq!(s.issuer, "");
    }

    #[test]
    fn move_outcomes_that_are_not_retrievals() {
        let node = DicomNode {
            name: "pacs".into(),
            ae_title: "PACS".into(),
            host: "127.0.0.1".into(),
            port: 104,
            transfer_syntaxes: vec![],
            retrieve: Default::default(),
            org: "o".into(),
            description: String::new(),
            managed: false,
            created_ms: 0,
        };
        let ok = |completed| MoveOutcome {
            status: 0,
            suboperations: SubOperations {
                completed,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(move_problem(&node, "US", "o", &ok(3), 3).is_none());
        let (m, park) = move_problem(&node, "US", "o", &ok(3), 0).unwrap();
        assert!(
            m.contains("vesalius admin ae add PACS --org o") && !park,
            "{m}"
        );
        let (m, park) = move_problem(&node, "US", "o", &ok(0), 0).unwrap();
        assert!(m.contains("holds no instances") && park, "{m}");
        let unknown = MoveOutcome {
            status: 0xA801,
            ..Default::default()
        };
        let (m, park) = move_problem(&node, "US", "o", &unknown, 0).unwrap();
        assert!(m.contains("does not know our AE title US") && !park, "{m}");
        let partial = MoveOutcome {
            status: 0xB000,
            suboperations: SubOperations {
                completed: 2,
                failed: 1,
                ..Default::default()
            },
            failed_instances: vec!["1.2.9".into()],
            ..Default::default()
        };
        let (m, _) = move_problem(&node, "US", "o", &partial, 2).unwrap();
        assert!(m.contains("0xB000") && m.contains("1.2.9"), "{m}");
        assert!(!m.contains("none could be stored"), "{m}");
        let refused = MoveOutcome {
            status: 0xA702,
            suboperations: SubOperations {
                failed: 3,
                ..Default::default()
            },
            ..Default::default()
        };
        let (m, _) = move_problem(&node, "US", "o", &refused, 0).unwrap();
        assert!(m.contains("vesalius admin ae add PACS --org o"), "{m}");
    }
}
