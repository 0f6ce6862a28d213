//! Running a `retrieve` job: one study from a DICOM node, by the node's retrieval method.
//!
//! - **C-MOVE** (`retrieve = "move"`, PS3.4 C.4.2): the Move Destination is our own AE title; the
//!   node opens its own association to our DICOM listener and the instances arrive through our
//!   C-STORE SCP, owned by the organisation of the node's AE title in our directory.
//! - **C-GET** (`retrieve = "get"`, PS3.4 C.4.3): the instances come back as C-STORE
//!   sub-operations on the association we opened ([`vesalius_dimse::scu::get()`]), each stored
//!   through the ingest path with full durability before it is answered, in the node's
//!   organisation, only if it belongs to the study asked for. The storage SOP classes proposed are
//!   the study's SOP Classes in Study (0008,0062) from the prefetch's C-FIND answer, or from a
//!   C-FIND for the study itself, else a common set.
//!
//! Either way the job is completed only when the node reports no failed sub-operation **and**
//! the study is held here afterwards; its receipts are one per instance held (SHA-256 as stored
//! here, not verified by the node) and a study receipt. Anything else fails the attempt with a
//! message that says what to fix.

use vesalius_core::tag;
use vesalius_dimse::scu::{self, GetOptions, GetOutcome, MoveOptions, MoveOutcome};
use vesalius_store::ingest::IngestContext;
use vesalius_store::outbox::{Job, Receipt, ReceiptKind};
use vesalius_store::query::Level;
use vesalius_store::registry::{DicomNode, RetrieveMethod};

use super::{RetrieveJob, dimse_error, node_addr};
use crate::worker::Exchange;
use crate::{ExchangeEvent, now_ms};

/// What the node said of one retrieval.
enum Retrieval {
    Move(MoveOutcome),
    Get(GetOutcome),
}

impl Retrieval {
    fn outcome(&self) -> &MoveOutcome {
        match self {
            Retrieval::Move(o) => o,
            Retrieval::Get(g) => &g.retrieve,
        }
    }
}

impl Exchange {
    /// Runs one `retrieve` job.
    pub(super) async fn retrieve(&self, j: &Job, node: &DicomNode, r: &RetrieveJob) {
        if node.org != r.org {
            let msg = format!(
                "DICOM node {} now belongs to organisation {}, not {}",
                node.name, node.org, r.org
            );
            return self.fail_job(j, &msg, true).await;
        }
        let Some(study_key) = super::study_keys(node, &r.patient_id, &r.study_uid) else {
            let msg = format!(
                "DICOM node {} is queried in Patient Root: retrieving study {} needs its Patient \
                 ID (PS3.4 C.4.2.2.1), which this job does not have; ask again with the Patient ID",
                node.name, r.study_uid
            );
            return self.fail_job(j, &msg, true).await;
        };
        let ours = self.options().ae_title.clone();
        let op = node.retrieve.operation();
        let t0 = std::time::Instant::now();
        let done = match node.retrieve {
            RetrieveMethod::Move => self
                .retrieve_by_move(node, &study_key)
                .await
                .map(Retrieval::Move),
            RetrieveMethod::Get => match self.ingestor() {
                Some(_) => self
                    .retrieve_by_get(node, r, &study_key)
                    .await
                    .map(Retrieval::Get),
                None => {
                    let msg = "C-GET needs the ingest path, which this engine was not given";
                    return self.fail_job(j, msg, true).await;
                }
            },
        };
        let done = match done {
            Ok(d) => d,
            Err(e) => {
                return self
                    .fail_job(j, &dimse_error(node, op, e).to_string(), false)
                    .await;
            }
        };
        let held = match self.held(&r.org, &r.study_uid).await {
            Ok(h) => h,
            Err(e) => return self.fail_job(j, &e.to_string(), false).await,
        };
        let problem = match &done {
            Retrieval::Move(o) => move_problem(node, &ours, &r.org, o, held.len()),
            Retrieval::Get(g) => get_problem(node, g, held.len()),
        };
        if let Some((message, park)) = problem {
            return self.fail_job(j, &message, park).await;
        }
        let c = &done.outcome().suboperations;
        let detail = format!(
            "{op} from {} ({}): {} {}, {} warning, {} held here, {} ms",
            node.name,
            node.ae_title,
            c.completed,
            if node.retrieve == RetrieveMethod::Move {
                "moved"
            } else {
                "retrieved"
            },
            c.warning,
            held.len(),
            t0.elapsed().as_millis()
        );
        let now = now_ms();
        let queue = &j.job.queue;
        let mut receipts: Vec<Receipt> = held
            .iter()
            .map(|i| Receipt {
                org: r.org.clone(),
                queue: queue.clone(),
                kind: ReceiptKind::Instance,
                study_uid: r.study_uid.clone(),
                sop_instance_uid: i.sop_instance_uid.clone(),
                sha256: i.sha256.clone(),
                size: i.size,
                delivered_ms: now,
                verified: false,
                detail: format!("{op} from {}", node.name),
            })
            .collect();
        receipts.push(Receipt::study(
            &r.org,
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
            org: r.org.clone(),
            queue: queue.clone(),
            study_uid: r.study_uid.clone(),
            instances: held.len() as u64,
        });
    }

    /// One C-MOVE of the study (named by `study_key`, [`super::study_keys`]) to our own AE
    /// title, in the node's information model.
    async fn retrieve_by_move(
        &self,
        node: &DicomNode,
        study_key: &[(u32, String)],
    ) -> Result<MoveOutcome, vesalius_dimse::Error> {
        let ours = &self.options().ae_title;
        let opts = MoveOptions::new(ours)
            .timeout(self.options().move_timeout)
            .model(node.query_model);
        scu::move_(
            &node_addr(node),
            ours,
            &node.ae_title,
            Level::Study,
            study_key,
            &opts,
            |_| {},
        )
        .await
    }

    /// One C-GET of the study on our own association, its instances stored through the ingest
    /// path as if the node had sent them with C-STORE (organisation, source `dimse:NODE_AE`,
    /// actor the node's AE title), refused when they belong to another study.
    async fn retrieve_by_get(
        &self,
        node: &DicomNode,
        r: &RetrieveJob,
        study_key: &[(u32, String)],
    ) -> Result<GetOutcome, vesalius_dimse::Error> {
        let Some(ingestor) = self.ingestor() else {
            return Err(vesalius_dimse::Error::Protocol("no ingest path".into()));
        };
        let ours = &self.options().ae_title;
        let classes = if r.sop_classes.is_empty() {
            self.study_sop_classes(node, r, study_key).await
        } else {
            r.sop_classes.clone()
        };
        let opts = GetOptions::new()
            .timeout(self.options().move_timeout)
            .storage_classes(classes)
            .model(node.query_model);
        let addr = node_addr(node);
        let ctx = IngestContext {
            org: node.org.clone(),
            source: format!("dimse:{}", node.ae_title),
            called_ae: ours.clone(),
            expected_study: Some(r.study_uid.clone()),
            actor: Some(
                vesalius_auth::principal::Principal::ae(&node.ae_title, &node.org, false).actor,
            ),
            source_addr: addr.clone(),
            ..Default::default()
        };
        scu::get(
            &addr,
            ours,
            &node.ae_title,
            Level::Study,
            study_key,
            &opts,
            ingestor,
            &ctx,
            |_| {},
        )
        .await
    }

    /// The storage SOP classes to propose for the study's C-GET: its SOP Classes in Study
    /// (0008,0062) as the node answers a C-FIND for it (named by `study_key`, in the node's
    /// model); when the node does not say (an optional key: DCMTK's dcmqrscp does not support
    /// it), the classes of its modalities (Modalities in Study from the same answer, else its
    /// series' Modality values, [`scu::storage_classes_for_modalities`]), so that each class gets
    /// a context for every compressed syntax; empty when neither is known (the C-GET then
    /// proposes the common storage classes).
    async fn study_sop_classes(
        &self,
        node: &DicomNode,
        r: &RetrieveJob,
        study_key: &[(u32, String)],
    ) -> Vec<String> {
        let mut keys = study_key.to_vec();
        keys.push((tag::SOP_CLASSES_IN_STUDY, String::new()));
        keys.push((tag::MODALITIES_IN_STUDY, String::new()));
        let addr = node_addr(node);
        let find = scu::find_limited(
            &addr,
            &self.options().ae_title,
            &node.ae_title,
            node.query_model,
            Level::Study,
            &keys,
            1,
        );
        let study = match tokio::time::timeout(self.options().find_timeout, find).await {
            Ok(Ok((answers, _))) => answers.first().map(super::NodeStudy::of),
            _ => None,
        }
        .unwrap_or_default();
        if !study.sop_classes.is_empty() {
            return study.sop_classes;
        }
        let modalities = if study.modalities.is_empty() {
            match self.series_info(node, &r.patient_id, &r.study_uid).await {
                Ok(s) => s.modalities,
                Err(_) => Vec::new(),
            }
        } else {
            study.modalities
        };
        let classes = scu::storage_classes_for_modalities(&modalities);
        let proposed = if classes.is_empty() {
            "the common".to_owned()
        } else {
            classes.len().to_string()
        };
        tracing::info!(
            node = %node.name,
            study = %r.study_uid,
            "no SOP Classes in Study: proposing {proposed} storage classes for modalities {modalities:?}"
        );
        classes
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
        let (comment, failed) = comment_and_failed(o, usize::MAX);
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

/// The parts of a failed retrieval's message: the status comment (`: …`) and the Failed SOP
/// Instance UID List (` (failed: …)`, at most `max_listed` UIDs named, then how many more).
fn comment_and_failed(o: &MoveOutcome, max_listed: usize) -> (String, String) {
    let comment = o
        .comment
        .as_deref()
        .map(|c| format!(": {c}"))
        .unwrap_or_default();
    let n = o.failed_instances.len();
    let failed = if n == 0 {
        String::new()
    } else {
        let shown: Vec<&str> = o
            .failed_instances
            .iter()
            .take(max_listed)
            .map(String::as_str)
            .collect();
        let more = if n > max_listed {
            format!(" and {} more", n - max_listed)
        } else {
            String::new()
        };
        format!(" (failed: {}{more})", shown.join(", "))
    };
    (comment, failed)
}

/// Why a finished C-GET does not count as a retrieval, and whether retrying cannot help.
fn get_problem(node: &DicomNode, g: &GetOutcome, held: usize) -> Option<(String, bool)> {
    let o = &g.retrieve;
    let c = &o.suboperations;
    let who = format!("{} ({})", node.name, node.ae_title);
    let refused = if g.refusals.is_empty() {
        String::new()
    } else {
        let named: Vec<String> = g
            .refusals
            .iter()
            .take(3)
            .map(|r| format!("{} (0x{:04X}: {})", r.sop_instance_uid, r.status, r.reason))
            .collect();
        format!("; {} refused here: {}", g.refused, named.join("; "))
    };
    if o.cancelled {
        return Some((
            format!(
                "C-GET from {who} timed out and was cancelled: {} stored here, {} failed, {} \
                 left{refused}",
                g.stored, c.failed, c.remaining
            ),
            false,
        ));
    }
    if o.is_complete() && c.completed + c.warning == 0 && held == 0 {
        return Some((format!("{who} holds no instances of the study"), true));
    }
    if o.is_complete() && held == 0 {
        return Some((
            format!(
                "C-GET from {who} reports {} instances sent, but none of the study is held \
                 here{refused}",
                c.completed + c.warning
            ),
            false,
        ));
    }
    if o.is_complete() {
        return None;
    }
    let (comment, failed) = comment_and_failed(o, 5);
    // Failed at the node without reaching us: the usual cause is negotiation.
    let hint = if g.stored == 0 && g.refused == 0 && c.failed > 0 {
        format!(
            "; none was sent on our association: does {} support C-GET and the study's SOP \
             classes (it accepted {} storage contexts and the SCP role for {} SOP classes)?",
            node.name, g.storage_contexts, g.scp_roles
        )
    } else {
        String::new()
    };
    Some((
        format!(
            "C-GET from {who} ended with status 0x{:04X} ({}{comment}): {} stored here, {} \
             failed{failed}{refused}{hint}",
            o.status,
            o.status_meaning(),
            g.stored,
            c.failed
        ),
        false,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesalius_dimse::message::SubOperations;
    use vesalius_dimse::scu::Refusal;

    #[test]
    fn move_outcomes_that_are_not_retrievals() {
        let node = DicomNode {
            name: "pacs".into(),
            ae_title: "PACS".into(),
            host: "127.0.0.1".into(),
            port: 104,
            transfer_syntaxes: vec![],
            retrieve: Default::default(),
            query_model: Default::default(),
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

    #[test]
    fn get_outcomes_that_are_not_retrievals() {
        let node = DicomNode {
            name: "pacs".into(),
            ae_title: "PACS".into(),
            host: "127.0.0.1".into(),
            port: 104,
            transfer_syntaxes: vec![],
            retrieve: RetrieveMethod::Get,
            query_model: Default::default(),
            org: "o".into(),
            description: String::new(),
            managed: false,
            created_ms: 0,
        };
        let done = |completed, failed, stored| GetOutcome {
            retrieve: MoveOutcome {
                status: if failed == 0 { 0 } else { 0xB000 },
                suboperations: SubOperations {
                    completed,
                    failed,
                    ..Default::default()
                },
                ..Default::default()
            },
            stored,
            storage_contexts: 4,
            scp_roles: 1,
            ..Default::default()
        };
        assert!(get_problem(&node, &done(3, 0, 3), 3).is_none());
        let (m, park) = get_problem(&node, &done(0, 0, 0), 0).unwrap();
        assert!(m.contains("holds no instances") && park, "{m}");
        // Every sub-operation failed at the node, none reached us: negotiation.
        let mut none = done(0, 3, 0);
        none.retrieve.status = 0xA702;
        let (m, park) = get_problem(&node, &none, 0).unwrap();
        assert!(
            m.contains("0xA702") && m.contains("support C-GET") && !park,
            "{m}"
        );
        assert!(m.contains("4 storage contexts"), "{m}");
        // Refused here (a full disk): named, with our status.
        let mut refused = done(2, 1, 2);
        refused.refused = 1;
        refused.refusals = vec![Refusal {
            sop_instance_uid: "1.2.9".into(),
            status: 0xA700,
            reason: "disk full".into(),
        }];
        refused.retrieve.failed_instances = vec!["1.2.9".into()];
        let (m, _) = get_problem(&node, &refused, 2).unwrap();
        assert!(
            m.contains("1.2.9 (0xA700: disk full)") && m.contains("2 stored here"),
            "{m}"
        );
        assert!(!m.contains("support C-GET"), "{m}");
        let mut cancelled = done(1, 0, 1);
        cancelled.retrieve.cancelled = true;
        cancelled.retrieve.status = 0xFE00;
        let (m, park) = get_problem(&node, &cancelled, 1).unwrap();
        assert!(m.contains("timed out and was cancelled") && !park, "{m}");
    }
}
