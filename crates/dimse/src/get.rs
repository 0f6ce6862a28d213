//! Query/Retrieve C-GET SCP, Patient Root and Study Root (PS3.4 C.4.3).
//!
//! Contract:
//! - The identifier names what to retrieve by its unique keys (PatientID, StudyInstanceUID,
//!   SeriesInstanceUID, SOPInstanceUID lists, PS3.4 C.4.3.2.1); a missing key is 0xA900.
//! - Each instance is sent as a C-STORE sub-operation on the *same* association (PS3.4 C.4.3.3),
//!   which requires the SCU to have proposed a storage context for its SOP class and to have
//!   negotiated the SCP role for it (SCP/SCU Role Selection, PS3.7 D.3.3.4); without one the
//!   sub-operation fails. Stored bytes are sent unchanged when the context accepts the stored
//!   transfer syntax, else transcoded (see `retrieve`). At negotiation, such contexts prefer a
//!   syntax every instance can be delivered in losslessly (`server::accept_options`).
//! - A pending response (0xFF00) with the four counters follows each sub-operation; the final
//!   status is 0x0000, 0xB000 (some failed or warned) or 0xA702 (all failed), with the Failed SOP
//!   Instance UID List. A C-CANCEL-RQ stops before the next sub-operation: final 0xFE00.
//! - Only AE titles allowed to retrieve get an answer other than 0x0124, and only what they may
//!   see is found (see `retrieve`); each study retrieved is audited (`retrieve`, once per study
//!   and AE per dedupe window) before its first byte is sent.

use crate::access::Peer;
use crate::association::Association;
use crate::error::Result;
use crate::find::is_cancel;
use crate::message::{Command, sop_class};
use crate::retrieve::{self, Progress};
use crate::server::Server;

/// Serves one C-GET-RQ.
pub(crate) async fn handle(
    assoc: &mut Association,
    server: &Server,
    caller: &Peer,
    pc: u8,
    cmd: &Command,
) -> Result<()> {
    let classes = [sop_class::PATIENT_ROOT_GET, sop_class::STUDY_ROOT_GET];
    let (model, ident, explicit) = match retrieve::read_request(assoc, pc, cmd, classes).await? {
        Ok(x) => x,
        Err(refusal) => return retrieve::refuse(assoc, pc, cmd, refusal).await,
    };
    let instances = match retrieve::resolve_for(server, caller, model, &ident).await {
        Ok(i) => i,
        Err(refusal) => return retrieve::refuse(assoc, pc, cmd, refusal).await,
    };
    let details = serde_json::json!({ "operation": "C-GET", "level": level_of(model, &ident) });
    caller.audit_retrieve(server.auth(), server.ingestor.index(), &instances, details);
    let id = cmd.message_id();
    let mut progress = Progress::new(instances.len());
    for inst in &instances {
        if let Some((_, c)) = assoc.poll_command()?
            && is_cancel(&c, id)?
        {
            progress.cancelled = true;
        }
        if progress.cancelled {
            break;
        }
        let sub_id = assoc.next_message_id();
        let mut cancelled = false;
        let mut on_request = |c: &Command| -> Result<()> {
            cancelled |= is_cancel(c, id)?;
            Ok(())
        };
        let outcome = retrieve::send_instance(
            assoc,
            &server.ingestor,
            inst,
            sub_id,
            None,
            true,
            &mut on_request,
        )
        .await?;
        progress.cancelled |= cancelled;
        progress.record(inst, outcome);
        if !progress.cancelled {
            progress.send_pending(assoc, pc, cmd).await?;
        }
    }
    progress.send_final(assoc, pc, cmd, explicit).await
}

/// The Query/Retrieve Level of a resolved identifier, for audit details.
pub(crate) fn level_of(
    model: crate::find::Model,
    ident: &vesalius_core::parse::DataSet,
) -> &'static str {
    model.level(ident).map_or("", |l| l.as_str())
}
