//! The audit check shared by both halves: every allowed access must have left an event by its
//! actor (naming its study where it concerns one).

use std::collections::HashMap;

use vesalius_store::audit::{AuditRecord, Outcome};

use super::fixture::Site;
use super::report::{Cell, Matrix};

/// Known gaps: cells whose audit check fails today for a reason outside the routes' access
/// decisions, each with why. A gap that is closed fails the test until it is removed here.
pub const KNOWN_GAPS: &[(&str, &str)] = &[];

/// An audit event an allowed cell must have left.
pub struct Expected {
    /// The cell.
    pub cell: usize,
    /// The actor id of the event.
    pub actor_id: String,
    /// Any of these actions.
    pub actions: &'static [&'static str],
    /// The study it must name, if any.
    pub study: Option<String>,
    /// Whether a failure event counts (a request relayed to a peer the matrix cannot reach is
    /// audited as attempted and failed).
    pub any_outcome: bool,
}

/// Checks every expected audit event (reads are appended off the response path: waits for
/// them briefly).
pub async fn audited(site: &Site, matrix: &mut Matrix, expected: Vec<Expected>) {
    let mut pending = expected;
    for attempt in 0..20 {
        let mut cache: HashMap<String, Vec<AuditRecord>> = HashMap::new();
        let mut still = Vec::new();
        for e in pending {
            if !cache.contains_key(&e.actor_id) {
                cache.insert(e.actor_id.clone(), site.audit_of(&e.actor_id).await);
            }
            let found = cache[&e.actor_id].iter().any(|r| {
                let ev = &r.event;
                e.actions.contains(&ev.action.as_str())
                    && (e.any_outcome || ev.outcome == Outcome::Success)
                    && e.study
                        .as_ref()
                        .is_none_or(|s| ev.study_uid.as_ref() == Some(s))
            });
            if !found {
                still.push(e);
            }
        }
        pending = still;
        if pending.is_empty() || attempt == 19 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for e in pending {
        let cell = &mut matrix.cells[e.cell];
        cell.problems.push(format!(
            "allowed, but no {:?} audit event by {}{}",
            e.actions,
            e.actor_id,
            e.study
                .as_ref()
                .map(|s| format!(" naming study {s}"))
                .unwrap_or_default()
        ));
        cell.known = KNOWN_GAPS
            .iter()
            .find(|(r, _)| *r == cell.row)
            .map(|(_, why)| *why);
    }
    // A known gap whose cells are all fine now must leave the list.
    for (row, _) in KNOWN_GAPS {
        let cells: Vec<&Cell> = matrix.cells.iter().filter(|c| c.row == *row).collect();
        let gap_seen = cells.iter().any(|c| c.known.is_some());
        let allowed_seen = cells.iter().any(|c| c.allowed);
        if allowed_seen
            && !gap_seen
            && let Some(c) = matrix.cells.iter_mut().find(|c| c.row == *row && c.allowed)
        {
            c.problems
                .push("a known gap is closed: remove it from KNOWN_GAPS".into());
        }
    }
}
