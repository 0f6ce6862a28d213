//! Storage SOP Class SCP: C-STORE (PS3.4 Annex B, PS3.7 9.1.1).
//!
//! Contract:
//! - The data set is never held in memory: each data PDV is appended to the ingest spool file
//!   (behind a Part 10 file meta header naming the negotiated transfer syntax) as it arrives, so
//!   memory per association is bounded by the Maximum Length. The spool write is buffered
//!   (256 KiB) synchronous file I/O to the page cache; the fsync happens inside `ingest`, off the
//!   runtime.
//! - Success (0x0000) is answered only after `Ingestor::ingest` returned, i.e. after the blob and
//!   the index row are durable; a duplicate (same bytes) is a success too.
//! - A failing instance is answered with the status of its error kind
//!   (`ErrorKind::store_status`: 0xA700 out of resources or disk watermark, 0xA900 data set does
//!   not match the SOP class, 0xC000 cannot understand) and an Error Comment, and the
//!   association goes on: the rest of its data set is still read and discarded.
//! - Only a protocol violation (a PDV on another context, a command inside the data set) ends
//!   the association.
//! - Access control (issue 4): the instance belongs to the calling AE title's organisation (an
//!   AE title belongs to exactly one). Before anything is spooled, the AE must be allowed to
//!   store there (`Action::Store` on that organisation, decided once per association); if not,
//!   the data set is read and discarded and the answer is 0x0124 "Refused: Not Authorized"
//!   (audited as a denied `store`). The ingest context carries the AE as the actor with its
//!   address and implementation name, for the `store` audit event committed with the instance.

use std::time::Instant;

use vesalius_core::{ErrorKind, uid};
use vesalius_store::ingest::IngestContext;

use crate::access::Peer;
use crate::association::Association;
use crate::error::Result;
use crate::message::{Command, status};
use crate::server::Server;

/// A refusal decided before or while the data set arrives.
struct Refusal {
    status: u16,
    comment: String,
}

impl Refusal {
    fn of(kind: ErrorKind, comment: impl Into<String>) -> Self {
        Refusal {
            status: kind.store_status(),
            comment: comment.into(),
        }
    }
}

/// Serves one C-STORE-RQ.
pub(crate) async fn handle(
    assoc: &mut Association,
    server: &Server,
    caller: &Peer,
    pc: u8,
    cmd: &Command,
) -> Result<()> {
    let Some(ctx) = assoc.context(pc).cloned() else {
        return Err(crate::Error::Protocol(format!(
            "unknown presentation context {pc}"
        )));
    };
    let sop_class = cmd.affected_sop_class().unwrap_or_default();
    let sop_instance = cmd.affected_sop_instance().unwrap_or_default();
    if !cmd.has_data_set() {
        let mut rsp = Command::response_to(cmd, status::UNABLE_TO_PROCESS);
        rsp.set_error_comment("C-STORE-RQ without a data set");
        return assoc.send_message(pc, &rsp, None).await;
    }
    let mut refusal = if !uid::is_storage_sop_class(&ctx.abstract_syntax) {
        Some(Refusal {
            status: status::SOP_CLASS_NOT_SUPPORTED,
            comment: "not a storage presentation context".into(),
        })
    } else if sop_class != ctx.abstract_syntax {
        // PS3.4 B.2.3: the SOP class must be the one of the presentation context.
        Some(Refusal::of(
            ErrorKind::DataSetMismatch,
            format!("SOP class {sop_class} on a {} context", ctx.abstract_syntax),
        ))
    } else if !uid::is_valid_uid(&sop_instance) {
        Some(Refusal::of(
            ErrorKind::InvalidDicom,
            format!("invalid Affected SOP Instance UID {sop_instance:?}"),
        ))
    } else if let Err(d) = caller.may_store(server.auth()).await {
        caller.audit_denied(server.auth(), "store", &d);
        Some(Refusal {
            status: d.status,
            comment: d.comment,
        })
    } else {
        None
    };
    let mut spool = None;
    if refusal.is_none() {
        match server.ingestor.spool_with_meta(
            &sop_class,
            &sop_instance,
            &ctx.transfer_syntax,
            Some(assoc.peer_ae()),
        ) {
            Ok(w) => spool = Some(w),
            Err(e) => refusal = Some(Refusal::of(e.kind(), e.to_string())),
        }
    }
    // Stream every fragment to the spool; after a refusal, read and discard the rest.
    let mut received = 0u64;
    loop {
        let (data, last) = assoc.recv_data_fragment(pc).await?;
        received += data.len() as u64;
        if let Some(w) = spool.as_mut()
            && let Err(e) = w.write(&data)
        {
            refusal = Some(Refusal::of(e.kind(), e.to_string()));
            spool = None;
        }
        if last {
            break;
        }
    }
    metrics::counter!("vesalius_dimse_bytes_received_total").increment(received);
    if let (Some(w), None) = (spool, &refusal) {
        let started = Instant::now();
        let ctx = IngestContext {
            org: caller.org().to_owned(),
            source: format!("dimse:{}", assoc.peer_ae()),
            called_ae: assoc.local_ae().to_owned(),
            expected_sop_class: Some(sop_class.clone()),
            expected_sop_instance: Some(sop_instance.clone()),
            actor: Some(caller.principal.actor.clone()),
            source_addr: caller.source.clone(),
            user_agent: caller.user_agent.clone(),
            ..Default::default()
        };
        let outcome = match w.finish() {
            Ok(spooled) => server.ingestor.ingest(spooled, &ctx).await,
            Err(e) => Err(e),
        };
        metrics::histogram!("vesalius_ingest_seconds").record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(done) => {
                metrics::counter!("vesalius_dimse_instances_received_total").increment(1);
                tracing::debug!(sop = %sop_instance, outcome = ?done.outcome, "C-STORE");
            }
            Err(e) => refusal = Some(Refusal::of(e.kind(), e.to_string())),
        }
    }
    let rsp = match refusal {
        None => Command::response_to(cmd, status::SUCCESS),
        Some(r) => {
            tracing::info!(
                calling = assoc.peer_ae(),
                sop = %sop_instance,
                status = format!("0x{:04X}", r.status),
                reason = %r.comment,
                "C-STORE refused"
            );
            let mut rsp = Command::response_to(cmd, r.status);
            rsp.set_error_comment(&r.comment);
            rsp
        }
    };
    assoc.send_message(pc, &rsp, None).await
}
