//! This site's outgoing transfers on the worklist's rows (issue 6, docs/web.md "Worklist"): a
//! spoke's radiographer sees their study leaving ("sending to hub 120/300") and then delivered
//! with the receiver's receipt, without the administrators' transfers page.
//!
//! Each row of `GET /api/v1/search` held here carries `outgoing`: the transfers of that study
//! by the caller's organisation to peers and DICOM nodes, summarised from the outbox
//! ([`vesalius_store::outbox::Outbox::transfers`], the [`OUTGOING_DEPTH`] most recently active
//! of the organisation). Only callers who may query in their organisation get them, and only
//! on rows they are shown (the search applied their access); retrievals and analysis queues
//! are not listed.

use std::collections::HashMap;

use serde_json::{Value, json};
use vesalius_auth::{Action, Caller};
use vesalius_store::outbox::{TransferFilter, TransferSummary};

use super::Federation;
use crate::api::may;

/// How many of the organisation's most recently active transfers are looked at: a study whose
/// last transfer is older than that many others shows none.
pub const OUTGOING_DEPTH: usize = 500;

impl Federation {
    /// The caller's organisation's transfers to peers and nodes, by study UID (each study's
    /// sorted by destination); empty for callers who may not query in their organisation or
    /// when the outbox cannot be read (the search still answers).
    pub(super) async fn outgoing_of(&self, caller: &Caller) -> HashMap<String, Vec<Value>> {
        let org = caller.org();
        if org.is_empty() || !may(caller, Action::Query, org) {
            return HashMap::new();
        }
        let filter = TransferFilter {
            org: Some(org.to_owned()),
            limit: OUTGOING_DEPTH,
        };
        let summaries = match self.exchange.outbox().transfers(&filter).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "worklist: outgoing transfers not read");
                return HashMap::new();
            }
        };
        let mut out: HashMap<String, Vec<Value>> = HashMap::new();
        for s in summaries.iter().filter(|s| s.org == org) {
            if let Some(v) = outgoing(s) {
                out.entry(s.study_uid.clone()).or_default().push(v);
            }
        }
        for v in out.values_mut() {
            v.sort_by(|a, b| a["queue"].as_str().cmp(&b["queue"].as_str()));
        }
        out
    }
}

/// One transfer as a row shows it, `None` for queues that are not a destination of this
/// site's routes or requests (retrievals, analyses).
fn outgoing(s: &TransferSummary) -> Option<Value> {
    let (kind, to) = s.queue.split_once(':')?;
    if !matches!(kind, "peer" | "node") {
        return None;
    }
    let done = s.pending == 0 && s.parked == 0;
    let state = if s.parked > 0 {
        "stopped"
    } else if done && s.complete_ms > 0 {
        "delivered"
    } else {
        "sending"
    };
    Some(json!({
        "to": to,
        "kind": kind,
        "queue": s.queue,
        "state": state,
        "delivered": s.delivered,
        "verified": s.verified,
        "total": s.delivered + s.pending + s.parked,
        "pending": s.pending,
        "parked": s.parked,
        "complete_ms": s.complete_ms,
        "last_delivered_ms": s.last_delivered_ms,
        "error": s.last_error,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(
        queue: &str,
        pending: u64,
        parked: u64,
        delivered: u64,
        complete_ms: i64,
    ) -> TransferSummary {
        TransferSummary {
            org: "a".into(),
            queue: queue.into(),
            study_uid: "1.2".into(),
            pending,
            parked,
            delivered,
            verified: delivered,
            complete_ms,
            ..Default::default()
        }
    }

    #[test]
    fn a_transfer_is_sending_delivered_or_stopped() {
        let v = outgoing(&summary("peer:hub", 180, 0, 120, 0)).unwrap();
        assert_eq!(
            (v["state"].as_str(), v["to"].as_str()),
            (Some("sending"), Some("hub"))
        );
        assert_eq!(
            (v["delivered"].as_u64(), v["total"].as_u64()),
            (Some(120), Some(300))
        );
        // Every instance delivered but no study receipt yet: still sending.
        let v = outgoing(&summary("peer:hub", 0, 0, 300, 0)).unwrap();
        assert_eq!(v["state"], "sending");
        let v = outgoing(&summary("node:PACS", 0, 0, 300, 1_700_000_000_000)).unwrap();
        assert_eq!(
            (v["state"].as_str(), v["kind"].as_str()),
            (Some("delivered"), Some("node"))
        );
        let v = outgoing(&summary("peer:hub", 0, 2, 298, 0)).unwrap();
        assert_eq!(
            (v["state"].as_str(), v["total"].as_u64()),
            (Some("stopped"), Some(300))
        );
        assert!(outgoing(&summary("retrieve:PACS", 1, 0, 0, 0)).is_none());
    }
}
