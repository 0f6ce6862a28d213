//! Tamper tests: each kind of tampering is found with the right seq and kind.

use std::sync::Arc;

use vesalius_store::audit::{Actor, ActorKind, AuditEvent, Outcome};
use vesalius_store::memory_directory::MemoryAuditLog;

use super::*;

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        time_ms: 1_700_000_000_000 + n as i64,
        actor: Actor {
            kind: ActorKind::User,
            id: format!("u{n}"),
            name: "alice".into(),
            org: "a".into(),
            role: "clinician".into(),
        },
        action: "retrieve".into(),
        outcome: Outcome::Success,
        org: "a".into(),
        patient: None,
        study_uid: Some(format!("1.2.{n}")),
        source: "10.0.0.1".into(),
        user_agent: String::new(),
        details: serde_json::json!({ "n": n }),
    }
}

/// A sound chain of `n` records, numbered from 1.
fn chain(n: u64) -> Vec<AuditRecord> {
    let mut out: Vec<AuditRecord> = Vec::new();
    for seq in 1..=n {
        let prev_hash = out
            .last()
            .map_or(GENESIS_HASH.to_owned(), |r| r.hash.clone());
        let event = event(seq);
        out.push(AuditRecord {
            seq,
            hash: chain_hash(seq, &prev_hash, &event),
            prev_hash,
            event,
        });
    }
    out
}

/// A record that fits the chain at `seq` after `prev` (what a forger who knows the hash
/// function makes).
fn forged(seq: u64, prev: &AuditRecord) -> AuditRecord {
    let mut event = event(seq);
    event.action = "forged".into();
    AuditRecord {
        seq,
        prev_hash: prev.hash.clone(),
        hash: chain_hash(seq, &prev.hash, &event),
        event,
    }
}

fn found(report: &VerifyReport) -> Vec<(u64, ProblemKind)> {
    report.problems.iter().map(|p| (p.seq, p.kind)).collect()
}

fn check(records: &[AuditRecord]) -> Vec<(u64, ProblemKind)> {
    found(&verify_records(records, &[], &[]))
}

#[test]
fn a_sound_chain_verifies() {
    let r = verify_records(&chain(20), &[], &[]);
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(
        (r.records_checked, r.head_seq, r.unsigned_tail()),
        (20, 20, 20)
    );
    assert!(verify_records(&[], &[], &[]).is_ok());
}

#[test]
fn edited_event() {
    let mut c = chain(10);
    c[4].event.details = serde_json::json!({"n": "changed"});
    assert_eq!(check(&c), vec![(5, ProblemKind::Edited)]);
}

#[test]
fn edited_and_rehashed() {
    let mut c = chain(10);
    c[4] = forged(5, &c[3]);
    assert_eq!(check(&c), vec![(5, ProblemKind::Edited)]);
}

#[test]
fn deleted_record() {
    let mut c = chain(10);
    c.remove(4);
    assert_eq!(check(&c), vec![(5, ProblemKind::Deleted)]);
    // Several in a row: one problem naming the first.
    let mut c = chain(10);
    c.drain(4..7);
    let r = verify_records(&c, &[], &[]);
    assert_eq!(found(&r), vec![(5, ProblemKind::Deleted)]);
    assert!(r.problems[0].detail.contains("5 to 7"), "{:?}", r.problems);
}

#[test]
fn deleted_and_renumbered() {
    let mut c = chain(10);
    c.remove(4);
    for r in &mut c[4..] {
        r.seq -= 1;
    }
    assert_eq!(check(&c), vec![(5, ProblemKind::Deleted)]);
}

#[test]
fn inserted_with_a_duplicate_seq() {
    let mut c = chain(10);
    let f = forged(5, &c[3]);
    c.insert(4, f);
    assert_eq!(check(&c), vec![(5, ProblemKind::Inserted)]);
}

#[test]
fn inserted_and_renumbered() {
    let mut c = chain(10);
    let f = forged(5, &c[3]);
    c.insert(4, f);
    for r in &mut c[5..] {
        r.seq += 1;
    }
    assert_eq!(check(&c), vec![(5, ProblemKind::Inserted)]);
}

#[test]
fn swapped_records() {
    // Whole records swapped (their seq fields travel with them).
    let mut c = chain(10);
    c.swap(4, 5);
    assert_eq!(check(&c), vec![(5, ProblemKind::Reordered)]);
    // Contents swapped, numbering left in place (what swapping rows' values in a table does).
    let mut c = chain(10);
    c.swap(4, 5);
    c[4].seq = 5;
    c[5].seq = 6;
    assert_eq!(check(&c), vec![(5, ProblemKind::Reordered)]);
}

#[test]
fn truncated_after_a_checkpoint() {
    let key = SiteKey::generate();
    let trusted = vec![key.public_hex()];
    let mut c = chain(10);
    let cp = key.sign(10, &c[9].hash, 0);
    let r = verify_records(&c, std::slice::from_ref(&cp), &trusted);
    assert!(r.is_ok(), "{r:?}");
    assert_eq!((r.last_signed_seq, r.unsigned_tail()), (10, 0));
    c.truncate(7);
    let r = verify_records(&c, &[cp], &trusted);
    assert_eq!(found(&r), vec![(8, ProblemKind::Truncated)]);
}

#[test]
fn a_rewritten_tail_is_caught_by_its_checkpoint() {
    let key = SiteKey::generate();
    let trusted = vec![key.public_hex()];
    let c = chain(10);
    let cp = key.sign(6, &c[5].hash, 0);
    // The forger rewrites everything from 3 with fresh, consistent hashes.
    let mut forged_chain = c[..2].to_vec();
    for seq in 3..=10 {
        let f = forged(seq, forged_chain.last().unwrap());
        forged_chain.push(f);
    }
    assert!(verify_records(&forged_chain, &[], &[]).is_ok());
    let r = verify_records(&forged_chain, &[cp], &trusted);
    assert_eq!(found(&r), vec![(6, ProblemKind::CheckpointMismatch)]);
}

#[test]
fn bad_and_untrusted_signatures() {
    let key = SiteKey::generate();
    let c = chain(5);
    let mut bad = key.sign(5, &c[4].hash, 0);
    bad.time_ms += 1;
    let r = verify_records(&c, &[bad], &[key.public_hex()]);
    assert_eq!(found(&r), vec![(5, ProblemKind::BadCheckpointSignature)]);
    let other = SiteKey::generate();
    let cp = other.sign(5, &c[4].hash, 0);
    let r = verify_records(&c, &[cp], &[key.public_hex()]);
    assert_eq!(found(&r), vec![(5, ProblemKind::BadCheckpointSignature)]);
    // A forged checkpoint beyond the head is a signature problem, not a truncation.
    let mut far = key.sign(99, "00", 0);
    far.signature = key.sign(5, &c[4].hash, 0).signature;
    let r = verify_records(&c, &[far], &[key.public_hex()]);
    assert_eq!(found(&r), vec![(99, ProblemKind::BadCheckpointSignature)]);
}

#[test]
fn key_file_is_private_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys/site-key");
    let a = SiteKey::load_or_create(&path).unwrap();
    let b = SiteKey::load_or_create(&path).unwrap();
    assert_eq!(a.public_hex(), b.public_hex());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = SiteKey::load_or_create(&path).unwrap_err();
        assert!(e.to_string().contains("readable by others"), "{e}");
    }
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1,
        "no temporary file left behind"
    );
}

#[tokio::test]
async fn verify_reads_a_memory_log_in_pages() {
    let log = Arc::new(MemoryAuditLog::new());
    log.append((1..=25).map(event).collect()).await.unwrap();
    let key = SiteKey::generate();
    let trusted = vec![key.public_hex()];
    let cp = checkpoint(log.as_ref(), &key, 5).await.unwrap().unwrap();
    assert_eq!(cp.seq, 25);
    assert!(checkpoint(log.as_ref(), &key, 6).await.unwrap().is_none());
    let r = verify_paged(log.as_ref(), &trusted, 7).await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!((r.records_checked, r.checkpoints_checked), (25, 1));

    // Each tampering through the log itself, found across page boundaries.
    log.tamper_with(|v| v[13].event.action = "nothing-to-see".into());
    let r = verify_paged(log.as_ref(), &trusted, 7).await.unwrap();
    assert_eq!(found(&r), vec![(14, ProblemKind::Edited)]);
    log.tamper_with(|v| {
        v.remove(6);
    });
    let r = verify_paged(log.as_ref(), &trusted, 7).await.unwrap();
    assert_eq!(
        found(&r),
        vec![(7, ProblemKind::Deleted), (14, ProblemKind::Edited)]
    );
    log.tamper_with(|v| v.truncate(20));
    let r = verify(log.as_ref(), &trusted).await.unwrap();
    assert_eq!(
        found(&r),
        vec![
            (7, ProblemKind::Deleted),
            (14, ProblemKind::Edited),
            (22, ProblemKind::Truncated)
        ]
    );
}

#[tokio::test]
async fn swapped_and_inserted_in_a_memory_log() {
    let log = MemoryAuditLog::new();
    log.append((1..=12).map(event).collect()).await.unwrap();
    log.tamper_with(|v| v.swap(3, 4));
    let r = verify_paged(&log, &[], 5).await.unwrap();
    assert_eq!(found(&r), vec![(4, ProblemKind::Reordered)]);
    log.tamper_with(|v| {
        v.swap(3, 4);
        let f = forged(9, &v[7]);
        v.insert(8, f);
    });
    let r = verify_paged(&log, &[], 5).await.unwrap();
    assert_eq!(found(&r), vec![(9, ProblemKind::Inserted)]);
}
