//! [`AuditObserver`]: the `store` audit events of the ingest path (issue 4).
//!
//! Registered on the [`vesalius_store::Ingestor`], it is called inside every ingest transaction
//! and returns a [`SideRecord::Audit`] that the index commits **with the instance**: an
//! acknowledged store always has its event, and a store that failed before its commit has none.
//!
//! One event per actor and study per dedupe window ([`AccessDedupe`], shared with the
//! authenticator; default 5 minutes), not one per instance: a 300-slice CT sent by a scanner
//! writes one `store` event, so auditing costs the ingest path nothing measurable. The event
//! names the first instance of the window (`details.sop_class`, `details.sop_instance_uid`,
//! `details.series_uid`) and says how long its window is (`details.dedupe_window_ms`);
//! the instance rows themselves keep each instance's source and receive time.
//!
//! Limits, all towards writing less than one event per new instance, never more than one per
//! window: the observer runs before the commit and does not know its outcome, so when the first
//! instance of a window is a duplicate (its event is dropped with the no-op commit) or its commit
//! fails, the study's other new instances within that window go without an event of their own;
//! a replacement (same SOP Instance UID, other bytes) within a window is covered by the window's
//! event and listed as a prior version. Like every dedupe here, the memory is per process.
//!
//! The actor is the front end's ([`IngestContext::actor`]: the calling AE title, the token or
//! session's user); without one (imports through internal paths, tests) the server itself, named
//! after the ingest source.

use std::sync::Arc;

use serde_json::json;
use vesalius_auth::Authenticator;
use vesalius_auth::dedupe::AccessDedupe;
use vesalius_store::audit::{Actor, ActorKind, AuditEvent, Outcome};
use vesalius_store::ingest::{IngestContext, IngestObserver};
use vesalius_store::model::{InstanceRecord, SideRecord};

/// Adds a deduplicated `store` audit event to ingest transactions.
pub struct AuditObserver {
    auth: Arc<Authenticator>,
}

impl AuditObserver {
    /// An observer deduplicating with `auth`'s [`AccessDedupe`] and clock.
    pub fn new(auth: Arc<Authenticator>) -> Self {
        AuditObserver { auth }
    }

    fn dedupe(&self) -> &AccessDedupe {
        self.auth.dedupe()
    }
}

/// The server itself, as the actor of stores without one.
fn system_actor(source: &str) -> Actor {
    Actor {
        kind: ActorKind::System,
        id: "system".into(),
        name: if source.is_empty() {
            "system".into()
        } else {
            source.to_owned()
        },
        org: String::new(),
        role: String::new(),
    }
}

impl IngestObserver for AuditObserver {
    fn observe(&self, r: &InstanceRecord, ctx: &IngestContext) -> Vec<SideRecord> {
        let actor = ctx
            .actor
            .clone()
            .unwrap_or_else(|| system_actor(&ctx.source));
        let now = self.auth.now_ms();
        let study = &r.study.study_uid;
        if !self
            .dedupe()
            .first_in_window(&actor.id, "store", &r.org, study, now)
        {
            return Vec::new();
        }
        let patient = (!r.patient.patient_id.is_empty())
            .then(|| (r.patient.issuer.clone(), r.patient.patient_id.clone()));
        vec![SideRecord::Audit(AuditEvent {
            time_ms: now,
            actor,
            action: "store".into(),
            outcome: Outcome::Success,
            org: r.org.clone(),
            patient,
            study_uid: Some(study.clone()),
            source: ctx.source_addr.clone(),
            user_agent: ctx.user_agent.clone(),
            details: json!({
                "via": ctx.source,
                "sop_class": r.instance.sop_class_uid,
                "sop_instance_uid": r.instance.sop_instance_uid,
                "series_uid": r.series.series_uid,
                "dedupe_window_ms": self.auth.options().audit_dedupe_ms,
            }),
        })]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};
    use vesalius_auth::AuthOptions;
    use vesalius_auth::authenticator::Clock;
    use vesalius_store::memory_directory::{MemoryAuditLog, MemoryDirectory};
    use vesalius_store::model::{InstanceAttrs, PatientAttrs, StudyAttrs};

    fn record(study: &str, sop: &str) -> InstanceRecord {
        InstanceRecord {
            org: "a".into(),
            patient: PatientAttrs {
                patient_id: "P1".into(),
                issuer: "HOSP".into(),
                ..Default::default()
            },
            study: StudyAttrs {
                study_uid: study.into(),
                ..Default::default()
            },
            series: Default::default(),
            instance: InstanceAttrs {
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                sop_instance_uid: sop.into(),
                ..Default::default()
            },
            blob_key: String::new(),
            size: 0,
            sha256: String::new(),
            metadata_json: String::new(),
            study_json: String::new(),
            series_json: String::new(),
            instance_json: String::new(),
            frame_index: Default::default(),
            source: "dimse:CT1".into(),
            received_ms: 0,
        }
    }

    fn observer(now: &Arc<AtomicI64>) -> AuditObserver {
        let audit = Arc::new(MemoryAuditLog::new());
        let dir = Arc::new(MemoryDirectory::new(audit.clone()));
        let opts = AuthOptions::new().clock(Clock::manual(now.clone()));
        AuditObserver::new(Arc::new(Authenticator::new(dir, audit, opts)))
    }

    fn ae_ctx() -> IngestContext {
        IngestContext {
            org: "a".into(),
            source: "dimse:CT1".into(),
            actor: Some(vesalius_auth::Principal::ae("CT1", "a", false).actor),
            source_addr: "10.1.2.7:50000".into(),
            user_agent: "OFFIS_DCMTK_367".into(),
            ..Default::default()
        }
    }

    fn events(side: Vec<SideRecord>) -> Vec<AuditEvent> {
        side.into_iter()
            .filter_map(|s| match s {
                SideRecord::Audit(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_300_slice_study_is_one_event_per_window() {
        let now = Arc::new(AtomicI64::new(1_000_000));
        let o = observer(&now);
        let ctx = ae_ctx();
        let all: Vec<AuditEvent> = (0..300)
            .flat_map(|i| events(o.observe(&record("1.2.3", &format!("1.2.3.{i}")), &ctx)))
            .collect();
        assert_eq!(all.len(), 1);
        let e = &all[0];
        assert_eq!(e.action, "store");
        assert_eq!(e.outcome, Outcome::Success);
        assert_eq!(e.actor.kind, ActorKind::Ae);
        assert_eq!(e.actor.id, "CT1");
        assert_eq!(
            (e.org.as_str(), e.study_uid.as_deref()),
            ("a", Some("1.2.3"))
        );
        assert_eq!(e.patient, Some(("HOSP".into(), "P1".into())));
        assert_eq!(e.source, "10.1.2.7:50000");
        assert_eq!(e.user_agent, "OFFIS_DCMTK_367");
        assert_eq!(e.details["sop_instance_uid"], "1.2.3.0");
        assert_eq!(e.details["via"], "dimse:CT1");
        // Another study, or the same one after the window: an event again.
        assert_eq!(
            events(o.observe(&record("1.2.4", "1.2.4.1"), &ctx)).len(),
            1
        );
        now.fetch_add(5 * 60 * 1000, Ordering::SeqCst);
        assert_eq!(
            events(o.observe(&record("1.2.3", "1.2.3.9"), &ctx)).len(),
            1
        );
    }

    #[test]
    fn stores_without_an_actor_are_the_servers() {
        let now = Arc::new(AtomicI64::new(0));
        let o = observer(&now);
        let ctx = IngestContext {
            org: "a".into(),
            source: "stow".into(),
            ..Default::default()
        };
        let e = events(o.observe(&record("1.2.3", "1.2.3.1"), &ctx));
        assert_eq!(e[0].actor.kind, ActorKind::System);
        assert_eq!(e[0].actor.name, "stow");
        // Another actor on the same study is audited on its own.
        assert_eq!(
            events(o.observe(&record("1.2.3", "1.2.3.2"), &ae_ctx())).len(),
            1
        );
    }
}
