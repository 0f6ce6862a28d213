//! Ingest audit over the in-memory backends: an observer's `SideRecord::Audit` events land in
//! the audit chain with the instance, and only when something changed.

use std::sync::Arc;

use vesalius_store::Ingestor;
use vesalius_store::audit::{Actor, ActorKind, AuditEvent, AuditLog, Outcome, chain_hash};
use vesalius_store::ingest::{IngestContext, IngestLimits, IngestObserver};
use vesalius_store::memory::{MemoryBlobStore, MemoryIndex};
use vesalius_store::memory_directory::MemoryAuditLog;
use vesalius_store::model::{IngestOutcome, InstanceRecord, SideRecord};

use super::{instance, put};

/// What `vesalius-auth` does on ingest: one `store` event per instance.
struct AuditStores;

impl IngestObserver for AuditStores {
    fn observe(&self, r: &InstanceRecord, ctx: &IngestContext) -> Vec<SideRecord> {
        vec![SideRecord::Audit(AuditEvent {
            time_ms: r.received_ms,
            actor: Actor {
                kind: ActorKind::Ae,
                id: ctx.source.clone(),
                name: ctx.source.clone(),
                org: ctx.org.clone(),
                role: String::new(),
            },
            action: "store".into(),
            outcome: Outcome::Success,
            org: r.org.clone(),
            patient: Some((r.patient.issuer.clone(), r.patient.patient_id.clone())),
            study_uid: Some(r.study.study_uid.clone()),
            source: String::new(),
            user_agent: String::new(),
            details: serde_json::json!({ "sha256": r.sha256 }),
        })]
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_audit_events_are_chained_with_their_instance() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(MemoryAuditLog::new());
    let ing = Ingestor::new(
        Arc::new(MemoryIndex::with_audit(log.clone())),
        Arc::new(MemoryBlobStore::default()),
        dir.path().join("spool"),
        IngestLimits {
            min_free_bytes: 0,
            ..Default::default()
        },
    )
    .unwrap()
    .with_observer(Arc::new(AuditStores));
    let ctx = IngestContext {
        org: "default".into(),
        source: "dimse:CT1".into(),
        ..Default::default()
    };
    let a = instance("1.2.3.1.1", Some("1.2.3"), 1);
    assert_eq!(put(&ing, &a, &ctx).await.unwrap(), IngestOutcome::Stored);
    assert_eq!(put(&ing, &a, &ctx).await.unwrap(), IngestOutcome::Duplicate);
    let b = instance("1.2.3.1.1", Some("1.2.3"), 2);
    assert_eq!(put(&ing, &b, &ctx).await.unwrap(), IngestOutcome::Replaced);
    // A refused object records nothing here (its refusal is the front end's to audit).
    let wrong = IngestContext {
        expected_sop_instance: Some("9.9".into()),
        ..ctx.clone()
    };
    assert!(put(&ing, &a, &wrong).await.is_err());

    let records = log.records(1, 10).await.unwrap();
    assert_eq!(
        records.len(),
        2,
        "stored and replaced; the duplicate changed nothing"
    );
    assert_ne!(records[0].event.details, records[1].event.details);
    assert_eq!(records[1].prev_hash, records[0].hash);
    for r in &records {
        assert_eq!(r.hash, chain_hash(r.seq, &r.prev_hash, &r.event));
        assert_eq!(r.event.study_uid.as_deref(), Some("1.2.3"));
        assert_eq!(r.event.patient, Some((String::new(), "PID1".into())));
    }
}
