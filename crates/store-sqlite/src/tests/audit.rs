//! The audit chain in SQLite: linear under concurrency, atomic with the changes it records,
//! durable across reopening, searchable like the reference model.

use std::sync::Arc;

use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use tokio::sync::oneshot;
use vesalius_core::ErrorKind;
use vesalius_store::Index;
use vesalius_store::audit::*;
use vesalius_store::directory::{Directory, DirectoryChange, Membership, Role, User};
use vesalius_store::memory::MemoryIndex;
use vesalius_store::memory_directory::{MemoryAuditLog, MemoryDirectory};
use vesalius_store::model::IngestOutcome;

use super::directory::admin_event;
use super::{commit, record};
use crate::SqliteIndex;
use crate::write::{WriteOp, run_batch};

/// Checks the whole chain: seq 1..=n without gaps, each hash recomputed, each link.
async fn verify(log: &dyn AuditLog) -> Vec<AuditRecord> {
    let records = log.records(1, u32::MAX).await.unwrap();
    let mut prev = GENESIS_HASH.to_owned();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1, "gap or reordering at {}", r.seq);
        assert_eq!(r.prev_hash, prev, "broken link at {}", r.seq);
        assert_eq!(
            r.hash,
            chain_hash(r.seq, &r.prev_hash, &r.event),
            "bad hash at {}",
            r.seq
        );
        prev = r.hash.clone();
    }
    assert_eq!(log.head().await.unwrap().as_ref(), records.last());
    records
}

fn user(id: &str, username: &str) -> User {
    User {
        id: id.into(),
        username: username.into(),
        display_name: String::new(),
        email: String::new(),
        memberships: vec![Membership {
            org: "a".into(),
            role: Role::Clinician,
        }],
        password_hash: None,
        oidc: None,
        service: false,
        disabled: false,
        must_change_password: false,
        created_ms: 0,
        site_admin: false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_appends_and_ingests_form_one_chain_that_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let sql = Arc::new(SqliteIndex::open(&path).await.unwrap());
    let mut appends = Vec::new();
    for task in 0..8i64 {
        let sql = sql.clone();
        appends.push(tokio::spawn(async move {
            for i in 0..50 {
                let n = task * 1000 + i;
                // Every tenth append carries two events: they must stay adjacent.
                let mut events = vec![admin_event(n, "a", "query")];
                if i % 10 == 0 {
                    events.push(admin_event(n, "a", "query-2"));
                }
                AuditLog::append(sql.as_ref(), events).await.unwrap();
            }
        }));
    }
    for i in 0..60 {
        let sql = sql.clone();
        appends.push(tokio::spawn(async move {
            let o = sql
                .commit(commit(record(i % 4, 0, i % 2, i, "ab")))
                .await
                .unwrap();
            assert_eq!(o, IngestOutcome::Stored);
            // A duplicate changes nothing and adds no audit record.
            let o = sql
                .commit(commit(record(i % 4, 0, i % 2, i, "ab")))
                .await
                .unwrap();
            assert_eq!(o, IngestOutcome::Duplicate);
        }));
    }
    let mut applies = Vec::new();
    for i in 0..20i64 {
        let sql = sql.clone();
        applies.push(tokio::spawn(async move {
            // Five applies want the username "shared": one wins, four fail alone.
            let name = if i % 5 == 4 || i == 0 {
                "shared".to_owned()
            } else {
                format!("user{i}")
            };
            let r = sql
                .apply(
                    vec![DirectoryChange::PutUser(user(&format!("u{i}"), &name))],
                    vec![admin_event(9_000 + i, "a", "user-create")],
                )
                .await;
            (i, r.map_err(|e| e.kind()))
        }));
    }
    for t in appends {
        t.await.unwrap();
    }
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for t in applies {
        match t.await.unwrap() {
            (i, Ok(())) => ok.push(i),
            (i, Err(kind)) => {
                assert_eq!(kind, ErrorKind::BadRequest);
                failed.push(i);
            }
        }
    }
    assert_eq!(failed.len(), 4);
    assert!(
        failed.iter().all(|i| [0, 4, 9, 14, 19].contains(i)),
        "{failed:?}"
    );

    let records = verify(sql.as_ref()).await;
    assert_eq!(records.len(), 8 * 55 + 60 + 16);
    assert_eq!(sql.users().await.unwrap().len(), 16);
    let mut created: Vec<i64> = records
        .iter()
        .filter(|r| r.event.action == "user-create")
        .map(|r| r.event.details["n"].as_i64().unwrap() - 9_000)
        .collect();
    created.sort();
    assert_eq!(created, ok);
    let mut pairs = 0;
    for w in records.windows(2) {
        if w[1].event.action == "query-2" {
            assert_eq!(w[0].event.action, "query");
            assert_eq!(w[0].event.details, w[1].event.details);
            pairs += 1;
        }
    }
    assert_eq!(pairs, 8 * 5);

    // Reopen: the chain is intact and grows from its head.
    drop(sql);
    let sql = SqliteIndex::open(&path).await.unwrap();
    assert_eq!(verify(&sql).await, records);
    AuditLog::append(&sql, vec![admin_event(1, "a", "login")])
        .await
        .unwrap();
    let after = verify(&sql).await;
    assert_eq!(after.len(), records.len() + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_models_chain_ingest_and_directory_events_together() {
    let audit = Arc::new(MemoryAuditLog::new());
    let index = Arc::new(MemoryIndex::with_audit(audit.clone()));
    let dir = Arc::new(MemoryDirectory::new(audit.clone()));
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (index, dir) = (index.clone(), dir.clone());
        tasks.push(tokio::spawn(async move {
            index
                .commit(commit(record(0, 0, 0, i, "cd")))
                .await
                .unwrap();
            index
                .commit(commit(record(0, 0, 0, i, "cd")))
                .await
                .unwrap();
            dir.apply(vec![], vec![admin_event(i as i64, "a", "x")])
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let records = verify(audit.as_ref()).await;
    assert_eq!(records.len(), 60);
    assert_eq!(
        records.iter().filter(|r| r.event.action == "store").count(),
        30
    );
    // Tamper tests can edit the memory log, and the checks above see it.
    audit.tamper_with(|r| r[3].event.action = "nothing".into());
    let r = &audit.records(4, 1).await.unwrap()[0];
    assert_ne!(r.hash, chain_hash(r.seq, &r.prev_hash, &r.event));
}

/// Runs `ops` as one batch on a connection of its own (deterministic batching).
async fn batch(path: &std::path::Path, ops: Vec<WriteOp>) {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap();
    run_batch(&mut conn, ops, &tokio::sync::watch::channel(0).0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_request_rolls_back_its_changes_and_events_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let sql = SqliteIndex::open(&path).await.unwrap();
    let put = |id: &str, name: &str| DirectoryChange::PutUser(user(id, name));

    let (tx1, rx1) = oneshot::channel();
    let (tx2, rx2) = oneshot::channel();
    let (tx3, rx3) = oneshot::channel();
    let (tx4, rx4) = oneshot::channel();
    let (tx5, rx5) = oneshot::channel();
    batch(
        &path,
        vec![
            WriteOp::Apply(
                vec![put("u1", "alice")],
                vec![admin_event(1, "a", "x")],
                tx1,
            ),
            // Same username, other id: fails, and its two events must not appear.
            WriteOp::Apply(
                vec![
                    DirectoryChange::PutSetting {
                        key: "k".into(),
                        value: "v".into(),
                    },
                    put("u2", "alice"),
                ],
                vec![admin_event(2, "a", "x"), admin_event(3, "a", "x")],
                tx2,
            ),
            WriteOp::Append(vec![admin_event(4, "a", "x")], tx3),
            WriteOp::Commit(Box::new(commit(record(0, 0, 0, 0, "ef"))), true, tx4),
            WriteOp::Apply(
                vec![put("u3", "carol")],
                vec![admin_event(5, "a", "x")],
                tx5,
            ),
        ],
    )
    .await;
    rx1.await.unwrap().unwrap();
    assert_eq!(
        rx2.await.unwrap().unwrap_err().kind(),
        ErrorKind::BadRequest
    );
    rx3.await.unwrap().unwrap();
    assert_eq!(rx4.await.unwrap().unwrap(), IngestOutcome::Stored);
    rx5.await.unwrap().unwrap();

    let records = verify(&sql).await;
    let ns: Vec<Option<i64>> = records
        .iter()
        .map(|r| r.event.details["n"].as_i64())
        .collect();
    assert_eq!(ns, [Some(1), Some(4), None, Some(5)]);
    assert_eq!(records[2].event.action, "store");
    assert_eq!(sql.setting("k").await.unwrap(), None);
    assert_eq!(sql.user("u2").await.unwrap(), None);
    assert_eq!(sql.users().await.unwrap().len(), 2);

    // A batch of one fails by rolling back the transaction; the next append follows on.
    let r = sql
        .apply(vec![put("u4", "carol")], vec![admin_event(6, "a", "x")])
        .await;
    assert_eq!(r.unwrap_err().kind(), ErrorKind::BadRequest);
    AuditLog::append(&sql, vec![admin_event(7, "a", "x")])
        .await
        .unwrap();
    let records = verify(&sql).await;
    assert_eq!(records.len(), 5);
    assert_eq!(records[4].event.details["n"], 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_refuses_edits_and_forks_of_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let sql = SqliteIndex::open(&path).await.unwrap();
    AuditLog::append(&sql, (0..3).map(|i| admin_event(i, "a", "x")).collect())
        .await
        .unwrap();
    let mut conn = SqliteConnectOptions::new()
        .filename(&path)
        .connect()
        .await
        .unwrap();
    for bad in [
        "UPDATE audit SET action = 'nothing' WHERE seq = 2",
        "DELETE FROM audit WHERE seq = 3",
        // A second writer with a stale head: seq 3 again, or a gap, or a wrong link.
        "INSERT INTO audit SELECT 3, prev_hash, hash, time_ms, action, outcome, actor_kind, \
           actor_id, actor_org, org, patient_issuer, patient_id, study_uid, event FROM audit WHERE seq = 3",
        "INSERT INTO audit SELECT 5, hash, hash, time_ms, action, outcome, actor_kind, \
           actor_id, actor_org, org, patient_issuer, patient_id, study_uid, event FROM audit WHERE seq = 3",
        "INSERT INTO audit SELECT 4, prev_hash, hash, time_ms, action, outcome, actor_kind, \
           actor_id, actor_org, org, patient_issuer, patient_id, study_uid, event FROM audit WHERE seq = 3",
    ] {
        assert!(sqlx::query(bad).execute(&mut conn).await.is_err(), "{bad}");
    }
    assert_eq!(verify(&sql).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn floats_in_details_survive_storage_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let sql = SqliteIndex::open(&dir.path().join("index.db"))
        .await
        .unwrap();
    let mut e = admin_event(1, "a", "x");
    // Values serde_json reads back one ULP off without `float_roundtrip`.
    e.details = serde_json::json!({
        "f": [1.0715660391465826e-75, -1.81996730402717e-179, -1.603964615428183e143, 0.1]
    });
    AuditLog::append(&sql, vec![e.clone()]).await.unwrap();
    let r = verify(&sql).await;
    assert_eq!(r[0].event, e);
}

/// A small audit history with varied fields.
fn history() -> Vec<AuditEvent> {
    let mut out = Vec::new();
    for i in 0..40i64 {
        let mut e = admin_event(
            i,
            ["a", "b"][i as usize % 2],
            ["query", "retrieve", "login"][i as usize % 3],
        );
        e.time_ms = 10_000 + i * 100;
        e.actor.id = format!("u{}", i % 4);
        e.actor.org = ["a", "b", "c"][i as usize % 3].into();
        if i % 3 != 2 {
            e.study_uid = Some(format!("1.2.{}", i % 5));
            e.patient = Some((["", "HOSP"][i as usize % 2].into(), format!("P{}", i % 5)));
        }
        out.push(e);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn search_filters_like_the_reference_model() {
    let dir = tempfile::tempdir().unwrap();
    let sql = SqliteIndex::open(&dir.path().join("index.db"))
        .await
        .unwrap();
    let mem = MemoryAuditLog::new();
    let events = history();
    AuditLog::append(&sql, events.clone()).await.unwrap();
    mem.append(events.clone()).await.unwrap();
    let f = AuditFilter::default;
    let filters = vec![
        (f(), 40),
        (AuditFilter { limit: 7, ..f() }, 7),
        (
            AuditFilter {
                org: Some("b".into()),
                ..f()
            },
            20,
        ),
        (
            AuditFilter {
                actor_org: Some("c".into()),
                ..f()
            },
            13,
        ),
        (
            AuditFilter {
                actor_id: Some("u1".into()),
                ..f()
            },
            10,
        ),
        (
            AuditFilter {
                action: Some("login".into()),
                ..f()
            },
            13,
        ),
        (
            AuditFilter {
                study_uid: Some("1.2.3".into()),
                ..f()
            },
            5,
        ),
        (
            AuditFilter {
                patient: Some(("HOSP".into(), "P3".into())),
                ..f()
            },
            3,
        ),
        (
            AuditFilter {
                patient: Some(("".into(), "P3".into())),
                ..f()
            },
            2,
        ),
        (
            AuditFilter {
                since_ms: Some(10_500),
                until_ms: Some(11_000),
                ..f()
            },
            5,
        ),
        (
            AuditFilter {
                org: Some("a".into()),
                action: Some("query".into()),
                since_ms: Some(11_000),
                limit: 2,
                ..f()
            },
            2,
        ),
        (
            AuditFilter {
                org: Some("zz".into()),
                ..f()
            },
            0,
        ),
        // Paging (issue 6): records older than seq 30, then the page after 5 of them.
        (
            AuditFilter {
                before_seq: Some(30),
                ..f()
            },
            29,
        ),
        (
            AuditFilter {
                action: Some("login".into()),
                before_seq: Some(30),
                limit: 4,
                ..f()
            },
            4,
        ),
        (
            AuditFilter {
                before_seq: Some(1),
                ..f()
            },
            0,
        ),
    ];
    for (filter, n) in filters {
        let got = sql.search(&filter).await.unwrap();
        let want = mem.search(&filter).await.unwrap();
        assert_eq!(got, want, "{filter:?}");
        assert_eq!(got.len(), n, "{filter:?}");
        // Newest first, and exactly the newest matching records.
        let mut expected: Vec<u64> = (1..=40u64)
            .rev()
            .filter(|s| filter.before_seq.is_none_or(|b| *s < b))
            .filter(|s| filter.matches(&events[*s as usize - 1]))
            .collect();
        expected.truncate(filter.effective_limit() as usize);
        assert_eq!(
            got.iter().map(|r| r.seq).collect::<Vec<_>>(),
            expected,
            "{filter:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deletion_commits_its_audit_events_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let sql = SqliteIndex::open(&dir.path().join("index.db"))
        .await
        .unwrap();
    for i in 0..3 {
        sql.commit(commit(record(0, 0, 0, i, "ab"))).await.unwrap();
    }
    let before = verify(&sql).await.len();
    let study = sql
        .instances(&vesalius_store::query::Scope::default())
        .await
        .unwrap()[0]
        .study_uid
        .clone();
    let gone = sql
        .delete_audited(
            &vesalius_store::query::Scope::study(study.clone()),
            Box::new(|gone| vec![admin_event(gone.len() as i64, "a", "delete")]),
        )
        .await
        .unwrap();
    assert_eq!(gone.len(), 3);
    let after = verify(&sql).await;
    assert_eq!(after.len(), before + 1);
    assert_eq!(after.last().unwrap().event.action, "delete");
    // Nothing left to delete: no event.
    let none = sql
        .delete_audited(
            &vesalius_store::query::Scope::study(study),
            Box::new(|_| vec![admin_event(0, "a", "delete")]),
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(verify(&sql).await.len(), before + 1);
    // An index without an audit trail refuses rather than drop the events.
    let mem = MemoryIndex::default();
    let e = mem
        .delete_audited(
            &vesalius_store::query::Scope::study("1.2.3"),
            Box::new(|_| Vec::new()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
}
