//! The C-MOVE SCU (PS3.4 C.4.2, PS3.7 9.1.4 and 9.3.4): asks a Query/Retrieve SCP to send the
//! instances matching an identifier to a Move Destination AE title, and follows the operation to
//! its end.
//!
//! Contract:
//! - One association, one C-MOVE-RQ (Study Root, or Patient Root at PATIENT level or when
//!   [`MoveOptions::model`] says so), Priority
//!   MEDIUM. The instances travel on **other** associations the SCP opens to the destination:
//!   this function only sees the counters.
//! - Pending responses (0xFF00) carry the sub-operation counters (PS3.4 C.4.2.1.4); each is
//!   handed to the caller's `progress` and kept, so a final response without counters (some
//!   SCPs omit them on failure) reports the last ones seen.
//! - Every final status is an `Ok(`[`MoveOutcome`]`)`: success (0x0000), warning 0xB000 (some
//!   sub-operations failed or warned; the Failed SOP Instance UID List (0008,0058) of the
//!   identifier is kept), cancel (0xFE00) and the failures (0xA701, 0xA702, 0xA801 destination unknown, 0xA900,
//!   0xCxxx, 0x0122, 0x0124). `Err` means the association failed: refused, aborted, malformed.
//! - A deadline bounds the whole operation ([`MoveOptions::timeout`]). When it passes, a
//!   C-CANCEL-RQ (PS3.7 9.3.2.3) is sent and the final response awaited for
//!   [`MoveOptions::cancel_grace`]; an SCP that still does not answer is aborted
//!   (`Err(Timeout)`). The outcome of a cancelled move has `cancelled` set.
//!
//! Waiting for a response is abandoned at the deadline; the association reads whole PDUs into
//! its buffer, so nothing is lost unless a command set split over several PDVs was half read at
//! that very moment (then the association fails as malformed and is aborted).

use std::time::Duration;

use tokio::time::Instant;
use vesalius_core::tag;
use vesalius_store::query::{Level, QueryModel};

use super::{request_options, response, uncompressed};
use crate::association::Association;
use crate::dataset;
use crate::error::{Error, Result};
use crate::message::{Command, SubOperations, field, sop_class, status, tags};

/// How a C-MOVE is asked for; [`MoveOptions::new`] names the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveOptions {
    /// The Move Destination (0000,0600): the AE title the SCP sends the instances to. The SCP
    /// must know its address (a C-MOVE destination is configured at the SCP, PS3.4 C.4.2.1.2.2).
    pub destination: String,
    /// The longest the whole operation may take before it is cancelled.
    pub timeout: Duration,
    /// How long to wait for the final response after a C-CANCEL-RQ before aborting.
    pub cancel_grace: Duration,
    /// The information model of the C-MOVE SOP class (PS3.4 C.6): Study Root by default;
    /// Patient Root needs the Patient ID among the keys of a STUDY-level request.
    pub model: QueryModel,
}

impl MoveOptions {
    /// A move to `destination`, at most 10 minutes, 10 s of grace after a cancel.
    pub fn new(destination: impl Into<String>) -> Self {
        MoveOptions {
            destination: destination.into(),
            timeout: Duration::from_secs(600),
            cancel_grace: Duration::from_secs(10),
            model: QueryModel::Study,
        }
    }

    /// Sets the deadline of the whole operation.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Sets how long a cancelled operation may take to answer.
    pub fn cancel_grace(mut self, d: Duration) -> Self {
        self.cancel_grace = d;
        self
    }

    /// Sets the information model (Patient Root MOVE, 1.2.840.10008.5.1.4.1.2.1.2, or Study
    /// Root MOVE, …2.2.2).
    pub fn model(mut self, model: QueryModel) -> Self {
        self.model = model;
        self
    }
}

/// How a C-MOVE ended (and, as [`super::GetOutcome::retrieve`], what the SCP said of a C-GET:
/// the responses and statuses are the same, PS3.4 C.4.3.1.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoveOutcome {
    /// The final status.
    pub status: u16,
    /// The final counters (the last pending ones when the final response carried none).
    pub suboperations: SubOperations,
    /// The Error Comment (0000,0902), if any.
    pub comment: Option<String>,
    /// Failed SOP Instance UID List (0008,0058) of the final identifier, if any.
    pub failed_instances: Vec<String>,
    /// Pending responses received.
    pub pending_responses: u32,
    /// A C-CANCEL-RQ was sent (the deadline passed).
    pub cancelled: bool,
}

impl MoveOutcome {
    /// True when every sub-operation completed (some perhaps with a warning, PS3.4 C.4.2.1.5:
    /// 0xB000 covers warnings as well as failures) and nothing was cancelled.
    pub fn is_complete(&self) -> bool {
        let done = self.status == status::SUCCESS || self.status == status::SUBOPERATIONS_WARNING;
        done && self.suboperations.failed == 0 && !self.cancelled
    }

    /// What the status means, for messages (PS3.4 C.4.2.1.5).
    pub fn status_meaning(&self) -> &'static str {
        match self.status {
            status::SUCCESS => "success",
            status::SUBOPERATIONS_WARNING => "some sub-operations failed or warned",
            status::CANCEL => "cancelled",
            status::OUT_OF_RESOURCES_MATCHES => "out of resources (number of matches)",
            status::OUT_OF_RESOURCES_SUBOPERATIONS => "out of resources (sub-operations)",
            status::MOVE_DESTINATION_UNKNOWN => "move destination unknown",
            status::IDENTIFIER_MISMATCH => "identifier does not match SOP class",
            status::SOP_CLASS_NOT_SUPPORTED => "SOP class not supported",
            status::NOT_AUTHORIZED => "not authorized",
            0xC000..=0xCFFF => "unable to process",
            _ => "failure",
        }
    }
}

/// Folds the responses to one C-MOVE-RQ: the pure part of the SCU, tested without sockets.
#[derive(Debug, Default)]
pub(crate) struct MoveResponses {
    last: SubOperations,
    pending: u32,
    /// A C-CANCEL-RQ was sent (set by the caller).
    pub(crate) cancelled: bool,
}

impl MoveResponses {
    /// Takes one response and the Failed SOP Instance UID List of its identifier: `None` while
    /// pending, the outcome once final.
    pub(crate) fn on_response(
        &mut self,
        rsp: &Command,
        failed_instances: Vec<String>,
    ) -> Option<MoveOutcome> {
        let st = rsp.status().unwrap_or(status::PROCESSING_FAILURE);
        let has_counts = [
            tags::NUMBER_OF_COMPLETED_SUBOPERATIONS,
            tags::NUMBER_OF_FAILED_SUBOPERATIONS,
            tags::NUMBER_OF_WARNING_SUBOPERATIONS,
            tags::NUMBER_OF_REMAINING_SUBOPERATIONS,
        ]
        .iter()
        .any(|t| rsp.u16(*t).is_some());
        if status::is_pending(st) {
            self.pending += 1;
            if has_counts {
                self.last = rsp.suboperations();
            }
            return None;
        }
        let mut counts = if has_counts {
            rsp.suboperations()
        } else {
            self.last
        };
        // PS3.4 C.4.2.1.4: the final response has no Number of Remaining Sub-operations,
        // except after a cancel, where it may say what was left undone.
        if st != status::CANCEL {
            counts.remaining = 0;
        }
        Some(MoveOutcome {
            status: st,
            suboperations: counts,
            comment: rsp.error_comment(),
            failed_instances,
            pending_responses: self.pending,
            cancelled: self.cancelled,
        })
    }

    /// The counters of the last pending response.
    pub(crate) fn last(&self) -> &SubOperations {
        &self.last
    }
}

/// The C-CANCEL-RQ for request `id` (PS3.7 9.3.2.3: no SOP class, no data set).
pub(crate) fn cancel_request(id: u16) -> Command {
    let mut c = Command::new(field::C_CANCEL_RQ);
    c.set_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, id);
    c
}

/// Sends a C-MOVE at `level` with `keys` (tag and value; a study is `(StudyInstanceUID, uid)`
/// at [`Level::Study`]) to `called` at `addr`, calling as `calling`, and follows it to its final
/// response; `progress` sees the counters of every pending response.
pub async fn move_(
    addr: &str,
    calling: &str,
    called: &str,
    level: Level,
    keys: &[(u32, String)],
    opts: &MoveOptions,
    mut progress: impl FnMut(&SubOperations),
) -> Result<MoveOutcome> {
    if !vesalius_core::ae::valid_ae_title(&opts.destination) {
        return Err(Error::Rejected(format!(
            "invalid move destination {:?}",
            opts.destination
        )));
    }
    let model = match opts.model.at(level) {
        QueryModel::Patient => sop_class::PATIENT_ROOT_MOVE,
        QueryModel::Study => sop_class::STUDY_ROOT_MOVE,
    };
    let mut ro = request_options(calling, called, vec![(model.to_owned(), uncompressed())]);
    // Our own deadline governs: the association must not give up on a quiet SCP before it
    // (an SCP may send no pending response at all while it works).
    ro.timeouts.read = ro.timeouts.read.max(opts.timeout + opts.cancel_grace);
    let mut assoc = Association::request(addr, &ro).await?;
    let Some(pc) = assoc.find_context(model, None).cloned() else {
        assoc.abort().await;
        return Err(Error::NoPresentationContext(model.into()));
    };
    let ident = super::identifier(level, keys);
    let explicit = dataset::is_explicit(&pc.transfer_syntax);
    let id = assoc.next_message_id();
    let mut rq = Command::request(field::C_MOVE_RQ, id, model);
    rq.set_u16(tags::PRIORITY, crate::message::PRIORITY_MEDIUM);
    rq.set_str(tags::MOVE_DESTINATION, opts.destination.trim());
    assoc
        .send_message(pc.id, &rq, Some(&ident.encode(explicit)))
        .await?;
    let mut responses = MoveResponses::default();
    let mut deadline = Instant::now() + opts.timeout;
    loop {
        let next =
            tokio::time::timeout_at(deadline, response(&mut assoc, id, field::C_MOVE_RSP)).await;
        let (rpc, rsp) = match next {
            Ok(r) => r?,
            Err(_) if !responses.cancelled => {
                // PS3.7 9.1.4.1.1: the SCU may cancel; the SCP ends with status 0xFE00.
                tracing::info!(called, "C-MOVE deadline passed: sending C-CANCEL-RQ");
                assoc.send_message(pc.id, &cancel_request(id), None).await?;
                responses.cancelled = true;
                deadline = Instant::now() + opts.cancel_grace;
                continue;
            }
            Err(_) => {
                assoc.abort().await;
                return Err(Error::Timeout("waiting for the end of a cancelled C-MOVE"));
            }
        };
        let failed = response_failed(&mut assoc, &rsp, rpc, &pc.transfer_syntax).await?;
        match responses.on_response(&rsp, failed) {
            None => progress(responses.last()),
            Some(outcome) => {
                let _ = assoc.release().await;
                return Ok(outcome);
            }
        }
    }
}

/// The Failed SOP Instance UID List of a C-MOVE or C-GET response (PS3.4 C.4.2.1.4,
/// C.4.3.1.4), read from the identifier that follows it on presentation context `pc`, if the
/// response has one.
pub(crate) async fn response_failed(
    assoc: &mut crate::association::Association,
    rsp: &crate::message::Command,
    pc: u8,
    ts: &str,
) -> crate::error::Result<Vec<String>> {
    if !rsp.has_data_set() {
        return Ok(Vec::new());
    }
    let bytes = assoc
        .recv_data_set(pc, dataset::MAX_IDENTIFIER_BYTES)
        .await?;
    Ok(failed_list(&bytes, ts))
}

/// The Failed SOP Instance UID List (0008,0058) of an identifier; empty when absent or
/// unreadable (it is informative: the counters are what the caller acts on).
pub(crate) fn failed_list(bytes: &[u8], ts: &str) -> Vec<String> {
    let Ok(ds) = dataset::read(bytes, ts) else {
        return Vec::new();
    };
    let json = vesalius_core::json::dataset_to_json(&ds, None);
    json.get(&format!("{:08X}", tag::FAILED_SOP_INSTANCE_UID_LIST))
        .and_then(|e| e.get("Value"))
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsp(st: u16, counts: Option<(u16, u16, u16, u16)>) -> Command {
        let mut c = Command::new(field::C_MOVE_RSP);
        c.set_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, 1);
        c.set_u16(tags::STATUS, st);
        if let Some((r, done, failed, warn)) = counts {
            c.set_u16(tags::NUMBER_OF_REMAINING_SUBOPERATIONS, r);
            c.set_u16(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS, done);
            c.set_u16(tags::NUMBER_OF_FAILED_SUBOPERATIONS, failed);
            c.set_u16(tags::NUMBER_OF_WARNING_SUBOPERATIONS, warn);
        }
        c
    }

    #[test]
    fn pending_then_success() {
        let mut m = MoveResponses::default();
        assert!(
            m.on_response(&rsp(status::PENDING, Some((2, 1, 0, 0))), vec![])
                .is_none()
        );
        assert_eq!(m.last().completed, 1);
        assert!(
            m.on_response(&rsp(0xFF01, Some((1, 2, 0, 0))), vec![])
                .is_none()
        );
        let mut fin = rsp(status::SUCCESS, Some((0, 3, 0, 0)));
        // A final response must not report remaining sub-operations; ignore it if it does.
        fin.set_u16(tags::NUMBER_OF_REMAINING_SUBOPERATIONS, 7);
        let o = m.on_response(&fin, vec![]).unwrap();
        assert_eq!(o.status, status::SUCCESS);
        assert_eq!(o.suboperations.completed, 3);
        assert_eq!(o.suboperations.remaining, 0);
        assert_eq!(o.pending_responses, 2);
        assert!(o.is_complete());
    }

    #[test]
    fn warning_keeps_the_failed_list_and_is_not_complete() {
        let mut m = MoveResponses::default();
        let o = m
            .on_response(
                &rsp(status::SUBOPERATIONS_WARNING, Some((0, 2, 1, 0))),
                vec!["1.2.3".into()],
            )
            .unwrap();
        assert_eq!(o.suboperations.failed, 1);
        assert_eq!(o.failed_instances, vec!["1.2.3".to_owned()]);
        assert!(!o.is_complete());
        assert_eq!(o.status_meaning(), "some sub-operations failed or warned");
        // 0xB000 with warnings only: everything was stored.
        let mut m = MoveResponses::default();
        let o = m
            .on_response(
                &rsp(status::SUBOPERATIONS_WARNING, Some((0, 2, 0, 1))),
                vec![],
            )
            .unwrap();
        assert!(o.is_complete());
    }

    #[test]
    fn final_without_counters_reports_the_last_pending_ones() {
        let mut m = MoveResponses::default();
        m.on_response(&rsp(status::PENDING, Some((5, 4, 1, 0))), vec![]);
        let mut fin = rsp(status::OUT_OF_RESOURCES_SUBOPERATIONS, None);
        fin.set_error_comment("disk full");
        let o = m.on_response(&fin, vec![]).unwrap();
        assert_eq!(o.suboperations.completed, 4);
        assert_eq!(o.suboperations.failed, 1);
        assert_eq!(o.comment.as_deref(), Some("disk full"));
        assert!(!o.is_complete());
    }

    #[test]
    fn destination_unknown_and_cancel() {
        let mut m = MoveResponses::default();
        let o = m
            .on_response(&rsp(status::MOVE_DESTINATION_UNKNOWN, None), vec![])
            .unwrap();
        assert_eq!(o.status_meaning(), "move destination unknown");
        assert_eq!(o.suboperations, SubOperations::default());
        let mut m = MoveResponses {
            cancelled: true,
            ..Default::default()
        };
        let o = m
            .on_response(&rsp(status::CANCEL, Some((3, 1, 0, 0))), vec![])
            .unwrap();
        assert!(o.cancelled && !o.is_complete());
        assert_eq!(o.suboperations.remaining, 3);
        // A success after our cancel still counts as cancelled (the caller asked to stop).
        let mut m = MoveResponses {
            cancelled: true,
            ..Default::default()
        };
        assert!(
            !m.on_response(&rsp(status::SUCCESS, Some((0, 1, 0, 0))), vec![])
                .unwrap()
                .is_complete()
        );
    }

    #[test]
    fn cancel_request_names_the_request() {
        let c = cancel_request(42);
        assert_eq!(c.command_field(), field::C_CANCEL_RQ);
        assert_eq!(c.responded_to(), Some(42));
        assert!(!c.has_data_set());
        assert!(c.affected_sop_class().is_none());
    }
}
