//! Query/Retrieve C-MOVE SCP, Patient Root and Study Root (PS3.4 C.4.2).
//!
//! Contract:
//! - Only AE titles allowed to retrieve get an answer other than 0x0124 "Refused: Not
//!   Authorized", and only what they may see is found (see `retrieve`).
//! - The Move Destination (0000,0600) must be known, else the request is refused with 0xA801
//!   before anything is sent: an AE title of the directory with a listening address that
//!   belongs to the caller's organisation, or else one of the configured [`crate::DicomNode`]s
//!   ([`crate::DimseServerOptions::destination`]).
//! - Each study moved is audited (`retrieve`, with the destination, once per study and AE per
//!   dedupe window) before its first byte is sent.
//! - The instances (resolved as for C-GET) are sent on a new association to the destination,
//!   requested with our AE title as Calling AE Title. For each SOP class it proposes one context per
//!   stored transfer syntax, plus one with Explicit and Implicit VR Little Endian as a fallback
//!   (transcoded with `vesalius-codec` when needed). Each C-STORE-RQ carries the Move Originator AE
//!   Title and Message ID (PS3.7 9.3.1.1).
//! - If the destination cannot be reached, the answer is 0xA702 with every sub-operation failed.
//! - Pending responses (0xFF00) with the counters follow each sub-operation; final status and
//!   C-CANCEL handling are as for C-GET.

use std::collections::BTreeSet;

use vesalius_core::uid;
use vesalius_store::model::StoredInstance;

use crate::access::Peer;
use crate::association::{Association, RequestOptions};
use crate::error::{Error, Result};
use crate::find::is_cancel;
use crate::message::{Command, sop_class, status, tags};
use crate::retrieve::{self, Progress, SubOutcome};
use crate::server::Server;

/// The presentation contexts proposed to send `instances`: per SOP class, each stored transfer
/// syntax on its own, then Explicit/Implicit VR Little Endian. At most 128 (PS3.8 9.3.2.2).
pub fn contexts_for(instances: &[StoredInstance]) -> Vec<(String, Vec<String>)> {
    let pairs: BTreeSet<(&str, &str)> = instances
        .iter()
        .map(|i| (i.sop_class_uid.as_str(), i.transfer_syntax.as_str()))
        .collect();
    let classes: BTreeSet<&str> = pairs.iter().map(|(c, _)| *c).collect();
    let mut out: Vec<(String, Vec<String>)> = pairs
        .iter()
        .map(|(c, t)| ((*c).to_owned(), vec![(*t).to_owned()]))
        .collect();
    for c in classes {
        out.push((
            c.to_owned(),
            vec![
                uid::EXPLICIT_VR_LE.to_owned(),
                uid::IMPLICIT_VR_LE.to_owned(),
            ],
        ));
    }
    out.truncate(128);
    out
}

/// Serves one C-MOVE-RQ.
pub(crate) async fn handle(
    assoc: &mut Association,
    server: &Server,
    caller: &Peer,
    pc: u8,
    cmd: &Command,
) -> Result<()> {
    let classes = [sop_class::PATIENT_ROOT_MOVE, sop_class::STUDY_ROOT_MOVE];
    let (model, ident, explicit) = match retrieve::read_request(assoc, pc, cmd, classes).await? {
        Ok(x) => x,
        Err(refusal) => return retrieve::refuse(assoc, pc, cmd, refusal).await,
    };
    let instances = match retrieve::resolve_for(server, caller, model, &ident).await {
        Ok(i) => i,
        Err(refusal) => return retrieve::refuse(assoc, pc, cmd, refusal).await,
    };
    let dest_ae = cmd.str(tags::MOVE_DESTINATION).unwrap_or_default();
    let Some(dest) = server.options.destination(&dest_ae, caller.org()).await else {
        let why = format!("move destination {dest_ae:?} unknown");
        return retrieve::refuse(assoc, pc, cmd, (status::MOVE_DESTINATION_UNKNOWN, why)).await;
    };
    let details = serde_json::json!({
        "operation": "C-MOVE",
        "level": crate::get::level_of(model, &ident),
        "destination": dest.ae_title,
    });
    caller.audit_retrieve(server.auth(), server.ingestor.index(), &instances, details);
    let mut progress = Progress::new(instances.len());
    if instances.is_empty() {
        return progress.send_final(assoc, pc, cmd, explicit).await;
    }
    let opts = RequestOptions {
        calling_ae: server.options.ae_title.clone(),
        called_ae: dest.ae_title.clone(),
        max_pdu_length: server.options.max_pdu_length,
        contexts: contexts_for(&instances),
        roles: Vec::new(),
        timeouts: server.options.timeouts,
    };
    let mut sub = match Association::request(&dest.addr(), &opts).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(destination = %dest_ae, error = %e, "C-MOVE destination unreachable");
            for inst in &instances {
                progress.record(inst, SubOutcome::Failed(e.to_string()));
            }
            return progress.send_final(assoc, pc, cmd, explicit).await;
        }
    };
    let id = cmd.message_id();
    let originator = assoc.peer_ae().to_owned();
    let mut broken: Option<Error> = None;
    for inst in &instances {
        if let Some(e) = &broken {
            progress.record(
                inst,
                SubOutcome::Failed(format!("destination association lost: {e}")),
            );
            continue;
        }
        if let Some((_, c)) = assoc.poll_command()?
            && is_cancel(&c, id)?
        {
            progress.cancelled = true;
            break;
        }
        let sub_id = sub.next_message_id();
        let mut no_requests = |c: &Command| -> Result<()> {
            Err(Error::Protocol(format!(
                "request 0x{:04X} from a storage destination",
                c.command_field()
            )))
        };
        let sent = retrieve::send_instance(
            &mut sub,
            &server.ingestor,
            inst,
            sub_id,
            Some((&originator, id)),
            false,
            &mut no_requests,
        )
        .await;
        match sent {
            Ok(outcome) => progress.record(inst, outcome),
            Err(e) => {
                progress.record(inst, SubOutcome::Failed(e.to_string()));
                broken = Some(e);
            }
        }
        progress.send_pending(assoc, pc, cmd).await?;
    }
    if broken.is_none() {
        if let Err(e) = sub.release().await {
            tracing::debug!(error = %e, "releasing the C-MOVE sub-association");
        }
    } else {
        sub.abort().await;
    }
    progress.send_final(assoc, pc, cmd, explicit).await
}
