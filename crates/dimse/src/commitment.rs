//! Storage Commitment Push Model SCP (PS3.4 Annex J.3).
//!
//! Contract:
//! - N-ACTION-RQ with Action Type ID 1 ("Request Storage Commitment"), a Transaction UID
//!   (0008,1195) and a Referenced SOP Sequence (0008,1199) is answered N-ACTION-RSP 0x0000 at
//!   once; anything else gets 0x0123 (no such action type), 0x0121 (missing attribute) or 0x0122
//!   (not a commitment context).
//! - Access control (issue 4): the requester must be allowed to store into its organisation
//!   (`Action::Store`, what every registered AE title may do), else the answer is 0x0124
//!   "Refused: Not Authorized". Query rights are not needed: a modality asking whether its own
//!   images are safe must not have to be given the right to search its organisation's archive,
//!   and the answer reveals nothing beyond the SOP Instance UIDs it names, in its own
//!   organisation.
//! - Each referenced instance is then checked in the index: it must be a current instance of the
//!   requester's organisation with the same SOP class. Instances are durable before the index
//!   row exists (see the ingest contract), so presence in the index is the commitment.
//! - The result is an N-EVENT-REPORT-RQ (PS3.4 J.3.3): Event Type ID 1 when everything is
//!   committed, 2 when something failed, with the Referenced SOP Sequence of committed instances
//!   and the Failed SOP Sequence with Failure Reason 0x0112 (no such object instance) or 0x0119
//!   (class/instance conflict).
//! - It is sent on the same association when that is still open and idle (PS3.4 J.3.3.1);
//!   otherwise on a new association to the requesting AE (its listening address in the directory,
//!   else a configured node: [`crate::DimseServerOptions::destination`]), on which we propose the
//!   SCP role for the Push Model SOP class with SCP/SCU Role Selection (PS3.4 J.3.3.2, PS3.7
//!   D.3.3.4). A requester we cannot reach that way cannot be called back: the report is logged
//!   and dropped (the SCU will ask again). The callback runs in its own task, so the
//!   association (if still open) goes on serving.

use dicom_core::VR;
use vesalius_core::tag;
use vesalius_core::uid;
use vesalius_store::Ingestor;
use vesalius_store::query::Scope;

use crate::access::Peer;
use crate::association::{Association, Polled, RequestOptions};
use crate::dataset::{self, DataSetWriter};
use crate::error::{Error, Result};
use crate::message::{Command, field, sop_class, status, tags};
use crate::server::{DicomNode, Server};

/// The outcome of one commitment request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitmentResult {
    /// Transaction UID of the request.
    pub transaction_uid: String,
    /// Committed instances: SOP class and instance UIDs.
    pub committed: Vec<(String, String)>,
    /// Failed instances: SOP class, instance UID and failure reason.
    pub failed: Vec<(String, String, u16)>,
}

impl CommitmentResult {
    /// Event Type ID: 1 all committed, 2 some failed (PS3.4 J.3.3.1).
    pub fn event_type(&self) -> u16 {
        if self.failed.is_empty() { 1 } else { 2 }
    }

    /// The Event Information data set.
    pub fn event_information(&self) -> DataSetWriter {
        let mut w = DataSetWriter::new();
        w.put_str(tag::TRANSACTION_UID, VR::UI, &self.transaction_uid);
        let item = |class: &str, sop: &str| {
            let mut i = DataSetWriter::new();
            i.put_str(tag::REFERENCED_SOP_CLASS_UID, VR::UI, class);
            i.put_str(tag::REFERENCED_SOP_INSTANCE_UID, VR::UI, sop);
            i
        };
        if !self.committed.is_empty() {
            let items = self.committed.iter().map(|(c, s)| item(c, s)).collect();
            w.put_items(tag::REFERENCED_SOP_SEQUENCE, items);
        }
        if !self.failed.is_empty() {
            let items = self
                .failed
                .iter()
                .map(|(c, s, reason)| {
                    let mut i = item(c, s);
                    i.put_u16(tag::FAILURE_REASON, *reason);
                    i
                })
                .collect();
            w.put_items(tag::FAILED_SOP_SEQUENCE, items);
        }
        w
    }
}

/// Checks every referenced instance of a commitment request against the index.
pub async fn check(
    ingestor: &Ingestor,
    org: &str,
    transaction_uid: &str,
    refs: &[(String, String)],
) -> Result<CommitmentResult> {
    let mut out = CommitmentResult {
        transaction_uid: transaction_uid.to_owned(),
        ..Default::default()
    };
    for (class, sop) in refs {
        let scope = Scope {
            access: Some(vesalius_store::query::Access::orgs([org])),
            instance: Some(sop.clone()),
            ..Default::default()
        };
        let found = ingestor.index().instances(&scope).await?;
        match found.first() {
            Some(i) if i.sop_class_uid == *class => {
                out.committed.push((class.clone(), sop.clone()))
            }
            Some(_) => out.failed.push((class.clone(), sop.clone(), 0x0119)),
            None => out
                .failed
                .push((class.clone(), sop.clone(), status::NO_SUCH_OBJECT_INSTANCE)),
        }
    }
    Ok(out)
}

/// Sends the report as N-EVENT-REPORT-RQ on `assoc` (context `pc`) and waits for its response.
/// `Ok(false)` when the peer released instead of answering.
pub async fn send_report(
    assoc: &mut Association,
    pc: u8,
    result: &CommitmentResult,
) -> Result<bool> {
    let explicit = assoc
        .context(pc)
        .is_some_and(|c| dataset::is_explicit(&c.transfer_syntax));
    let id = assoc.next_message_id();
    let mut rq = Command::request(
        field::N_EVENT_REPORT_RQ,
        id,
        sop_class::STORAGE_COMMITMENT_PUSH,
    );
    rq.set_str(
        tags::AFFECTED_SOP_INSTANCE_UID,
        sop_class::STORAGE_COMMITMENT_PUSH_INSTANCE,
    );
    rq.set_u16(tags::EVENT_TYPE_ID, result.event_type());
    let info = result.event_information().encode(explicit);
    assoc.send_message(pc, &rq, Some(&info)).await?;
    let Some((rpc, c)) = assoc.recv_command().await? else {
        return Ok(false);
    };
    if c.command_field() != field::N_EVENT_REPORT_RSP || c.responded_to() != Some(id) {
        return Err(Error::Protocol(format!(
            "0x{:04X} while waiting for N-EVENT-REPORT-RSP",
            c.command_field()
        )));
    }
    if c.has_data_set() {
        assoc.drain_data_set(rpc).await?;
    }
    let st = c.status().unwrap_or(status::PROCESSING_FAILURE);
    if status::is_failure(st) {
        tracing::warn!(
            status = format!("0x{st:04X}"),
            "N-EVENT-REPORT refused by the SCU"
        );
    }
    Ok(true)
}

/// Delivers a report on a new association to `node` (PS3.4 J.3.3.2).
pub async fn deliver(
    node: &DicomNode,
    our_ae: &str,
    timeouts: crate::Timeouts,
    result: &CommitmentResult,
) -> Result<()> {
    let opts = RequestOptions {
        calling_ae: our_ae.to_owned(),
        called_ae: node.ae_title.clone(),
        max_pdu_length: 64 << 10,
        contexts: vec![(
            sop_class::STORAGE_COMMITMENT_PUSH.to_owned(),
            vec![
                uid::EXPLICIT_VR_LE.to_owned(),
                uid::IMPLICIT_VR_LE.to_owned(),
            ],
        )],
        roles: vec![(sop_class::STORAGE_COMMITMENT_PUSH.to_owned(), false, true)],
        timeouts,
    };
    let mut assoc = Association::request(&node.addr(), &opts).await?;
    let Some(pc) = assoc
        .find_context(sop_class::STORAGE_COMMITMENT_PUSH, None)
        .map(|c| c.id)
    else {
        assoc.abort().await;
        return Err(Error::NoPresentationContext(
            "Storage Commitment Push Model".into(),
        ));
    };
    let answered = send_report(&mut assoc, pc, result).await?;
    if answered {
        assoc.release().await?;
    }
    Ok(())
}

/// Parses the Action Information: Transaction UID and the referenced instances.
fn action_information(
    ds: &vesalius_core::parse::DataSet,
) -> Option<(String, Vec<(String, String)>)> {
    let transaction = ds.str(tag::TRANSACTION_UID)?.to_owned();
    let refs = ds
        .items(tag::REFERENCED_SOP_SEQUENCE)?
        .iter()
        .filter_map(|i| {
            Some((
                i.str(tag::REFERENCED_SOP_CLASS_UID)?.to_owned(),
                i.str(tag::REFERENCED_SOP_INSTANCE_UID)?.to_owned(),
            ))
        })
        .collect::<Vec<_>>();
    (!refs.is_empty()).then_some((transaction, refs))
}

/// Serves one N-ACTION-RQ.
pub(crate) async fn handle(
    assoc: &mut Association,
    server: &Server,
    caller: &Peer,
    pc: u8,
    cmd: &Command,
) -> Result<()> {
    let Some(ctx) = assoc.context(pc).cloned() else {
        return Err(Error::Protocol(format!(
            "unknown presentation context {pc}"
        )));
    };
    let info = if cmd.has_data_set() {
        Some(
            assoc
                .recv_data_set(pc, dataset::MAX_IDENTIFIER_BYTES)
                .await?,
        )
    } else {
        None
    };
    let refuse = |st: u16, why: &str| {
        let mut rsp = Command::response_to(cmd, st);
        rsp.set_error_comment(why);
        rsp
    };
    let parsed = if ctx.abstract_syntax != sop_class::STORAGE_COMMITMENT_PUSH {
        Err(refuse(
            status::SOP_CLASS_NOT_SUPPORTED,
            "not a storage commitment context",
        ))
    } else if cmd.u16(tags::ACTION_TYPE_ID) != Some(1) {
        Err(refuse(status::NO_SUCH_ACTION_TYPE, "action type must be 1"))
    } else {
        info.as_deref()
            .and_then(|b| dataset::read(b, &ctx.transfer_syntax).ok())
            .as_ref()
            .and_then(action_information)
            .ok_or_else(|| {
                refuse(
                    status::MISSING_ATTRIBUTE_VALUE,
                    "Transaction UID and Referenced SOP Sequence are required",
                )
            })
    };
    let (transaction, refs) = match parsed {
        Ok(x) => x,
        Err(rsp) => return assoc.send_message(pc, &rsp, None).await,
    };
    if let Err(d) = caller.may_store(server.auth()).await {
        caller.audit_denied(server.auth(), "storage-commitment", &d);
        tracing::info!(calling = caller.ae(), reason = %d.comment, "storage commitment refused");
        return assoc
            .send_message(pc, &refuse(d.status, &d.comment), None)
            .await;
    }
    let mut rsp = Command::response_to(cmd, status::SUCCESS);
    rsp.set_u16(tags::ACTION_TYPE_ID, 1);
    assoc.send_message(pc, &rsp, None).await?;

    let result = match check(&server.ingestor, caller.org(), &transaction, &refs).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "storage commitment check failed; no report sent");
            return Ok(());
        }
    };
    tracing::info!(
        transaction = %transaction,
        committed = result.committed.len(),
        failed = result.failed.len(),
        "storage commitment"
    );
    match assoc.poll()? {
        Polled::Nothing => {
            if send_report(assoc, pc, &result).await? {
                return Ok(());
            }
        }
        Polled::Release => assoc.answer_release().await,
        Polled::Command(next_pc, next) => {
            // The SCU went on with another request: serve it, report on a new association.
            assoc.unread(next_pc, next);
        }
    }
    let requester = assoc.peer_ae().to_owned();
    let Some(node) = server.options.destination(&requester, caller.org()).await else {
        tracing::warn!(requester = %requester, "storage commitment report dropped: requester has no listening address and is not a configured node");
        return Ok(());
    };
    let (ae, timeouts) = (server.options.ae_title.clone(), server.options.timeouts);
    tokio::spawn(async move {
        if let Err(e) = deliver(&node, &ae, timeouts, &result).await {
            tracing::warn!(requester = %requester, error = %e, "storage commitment report not delivered");
        }
    });
    Ok(())
}
