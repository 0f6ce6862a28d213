//! The SQLite index against the in-memory reference model.

use std::sync::Arc;

use vesalius_store::Index;
use vesalius_store::audit::{Actor, ActorKind, AuditEvent, Outcome};
use vesalius_store::memory::MemoryIndex;
use vesalius_store::model::*;
use vesalius_store::query::{Key, Level, Matcher, Query, Scope};

use super::SqliteIndex;

mod alerts;
mod audit;
mod directory;
mod migration;
mod outbox;
mod registry;

fn record(p: usize, st: usize, se: usize, i: usize, sha: &str) -> InstanceRecord {
    let names = [
        "Doe^Jane",
        "Müller^Jürgen",
        "Smith^John=スミス^ジョン",
        "Doe^Jonathan",
    ];
    let study_uid = format!("1.2.3.{p}.{st}");
    let series_uid = format!("{study_uid}.{se}");
    let sop = format!("{series_uid}.{i}");
    let modality = if se.is_multiple_of(2) { "CT" } else { "MR" };
    InstanceRecord {
        org: DEFAULT_ORG.into(),
        patient: PatientAttrs {
            patient_id: format!("PID{p}"),
            name: names[p % names.len()].into(),
            birth_date: "19700101".into(),
            sex: "F".into(),
            ..Default::default()
        },
        study: StudyAttrs {
            study_uid: study_uid.clone(),
            date: format!("2024{:02}{:02}", st % 12 + 1, p % 28 + 1),
            time: format!("{:02}3000", 8 + st),
            accession: format!("ACC{p}{st}"),
            description: "CT HEAD".into(),
            ..Default::default()
        },
        series: SeriesAttrs {
            series_uid: series_uid.clone(),
            modality: modality.into(),
            number: Some(se as i64),
            ..Default::default()
        },
        instance: InstanceAttrs {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: sop.clone(),
            number: Some(i as i64),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            frames: 1,
            ..Default::default()
        },
        blob_key: format!("default/{study_uid}/{series_uid}/{sop}/{sha}"),
        size: 100,
        sha256: sha.into(),
        metadata_json: format!(r#"{{"00080018":{{"vr":"UI","Value":["{sop}"]}}}}"#),
        study_json: format!(
            r#"{{"0020000D":{{"vr":"UI","Value":["{study_uid}"]}},"00100020":{{"vr":"LO","Value":["PID{p}"]}}}}"#
        ),
        series_json: format!(r#"{{"0020000E":{{"vr":"UI","Value":["{series_uid}"]}}}}"#),
        instance_json: format!(r#"{{"00080018":{{"vr":"UI","Value":["{sop}"]}}}}"#),
        frame_index: FrameIndex {
            frames: vec![vec![(10, 90)]],
        },
        source: "test".into(),
        received_ms: 1,
    }
}

/// The audit event an ingest observer adds for `r`.
fn stored_event(r: &InstanceRecord) -> AuditEvent {
    AuditEvent {
        time_ms: r.received_ms,
        actor: Actor {
            kind: ActorKind::Ae,
            id: "CT1".into(),
            name: "CT1".into(),
            org: r.org.clone(),
            role: "service".into(),
        },
        action: "store".into(),
        outcome: Outcome::Success,
        org: r.org.clone(),
        patient: Some((r.patient.issuer.clone(), r.patient.patient_id.clone())),
        study_uid: Some(r.study.study_uid.clone()),
        source: "127.0.0.1".into(),
        user_agent: String::new(),
        details: serde_json::json!({ "sop": r.instance.sop_instance_uid }),
    }
}

fn commit(r: InstanceRecord) -> IngestCommit {
    IngestCommit {
        side: vec![SideRecord::Audit(stored_event(&r))],
        record: r,
        rejects: vec![],
    }
}

async fn fill(idx: &dyn Index) {
    for p in 0..4 {
        for st in 0..2 {
            for se in 0..2 {
                for i in 0..3 {
                    let o = idx
                        .commit(commit(record(p, st, se, i, "aa")))
                        .await
                        .unwrap();
                    assert_eq!(o, IngestOutcome::Stored);
                }
            }
        }
    }
}

fn uids(answers: &[vesalius_store::query::Answer], tag: &str) -> Vec<String> {
    let mut v: Vec<String> = answers
        .iter()
        .map(|a| {
            a.to_map()[tag]["Value"][0]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_agree_with_the_reference_model() {
    let dir = tempfile::tempdir().unwrap();
    let sql = SqliteIndex::open(&dir.path().join("index.db"))
        .await
        .unwrap();
    let mem = MemoryIndex::default();
    fill(&sql).await;
    fill(&mem).await;
    let m = |k: Key, v: &str| Matcher::parse(k, v).unwrap().unwrap();
    let queries = vec![
        Query::new(Level::Study),
        Query::new(Level::Study).with(Key::PatientName, m(Key::PatientName, "doe*")),
        Query::new(Level::Study).with(Key::PatientName, m(Key::PatientName, "smith^john")),
        Query::new(Level::Study).with(Key::PatientName, m(Key::PatientName, "MÜLLER*")),
        Query::new(Level::Study).with(Key::PatientId, m(Key::PatientId, "PID1")),
        Query::new(Level::Study).with(Key::StudyDate, m(Key::StudyDate, "20240101-20240131")),
        Query::new(Level::Study).with(Key::StudyTime, m(Key::StudyTime, "08-08")),
        Query::new(Level::Study).with(Key::AccessionNumber, m(Key::AccessionNumber, "ACC2?")),
        Query::new(Level::Study).with(Key::ModalitiesInStudy, m(Key::ModalitiesInStudy, "MR")),
        Query::new(Level::Study).with(
            Key::StudyInstanceUid,
            m(Key::StudyInstanceUid, "1.2.3.0.0\\1.2.3.1.1"),
        ),
        Query::new(Level::Study).with(Key::Modality, m(Key::Modality, "CT")),
        Query::new(Level::Series)
            .with(Key::StudyInstanceUid, m(Key::StudyInstanceUid, "1.2.3.0.0")),
        Query::new(Level::Series).with(Key::Modality, m(Key::Modality, "MR")),
        Query::new(Level::Image).with(
            Key::SeriesInstanceUid,
            m(Key::SeriesInstanceUid, "1.2.3.0.0.1"),
        ),
        Query::new(Level::Image).with(Key::InstanceNumber, m(Key::InstanceNumber, "2")),
        Query::new(Level::Patient).with(Key::PatientName, m(Key::PatientName, "DOE^J*")),
        Query::new(Level::Patient).with(Key::StudyDate, m(Key::StudyDate, "20240201-")),
    ];
    for q in &queries {
        let a = sql.find(q).await.unwrap();
        let b = mem.find(q).await.unwrap();
        let tag = match q.level {
            Level::Patient => "00100020",
            Level::Study => "0020000D",
            Level::Series => "0020000E",
            Level::Image => "00080018",
        };
        assert_eq!(uids(&a, tag), uids(&b, tag), "query {q:?}");
        assert!(
            !a.is_empty() || q.filters.iter().any(|(k, _)| *k == Key::StudyTime),
            "{q:?}"
        );
    }
    let mut fuzzy = Query::new(Level::Study).with(Key::PatientName, m(Key::PatientName, "jon"));
    fuzzy.fuzzy = true;
    assert_eq!(
        sql.find(&fuzzy).await.unwrap().len(),
        mem.find(&fuzzy).await.unwrap().len()
    );
    assert!(!sql.find(&fuzzy).await.unwrap().is_empty());
    // Counts and modalities are computed.
    let q =
        Query::new(Level::Study).with(Key::StudyInstanceUid, m(Key::StudyInstanceUid, "1.2.3.0.0"));
    let a = &sql.find(&q).await.unwrap()[0].to_map();
    assert_eq!(a["00201206"]["Value"][0], 2);
    assert_eq!(a["00201208"]["Value"][0], 6);
    assert_eq!(a["00080061"]["Value"], serde_json::json!(["CT", "MR"]));
    // Paging.
    let mut paged = Query::new(Level::Study);
    paged.limit = 3;
    paged.offset = 6;
    assert_eq!(sql.find(&paged).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_rejection_delete_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let sql = SqliteIndex::open(&path).await.unwrap();
    let r = record(0, 0, 0, 0, "aa");
    assert_eq!(
        sql.commit(commit(r.clone())).await.unwrap(),
        IngestOutcome::Stored
    );
    assert_eq!(
        sql.commit(commit(r.clone())).await.unwrap(),
        IngestOutcome::Duplicate
    );
    let r2 = record(0, 0, 0, 0, "bb");
    assert_eq!(
        sql.commit(commit(r2.clone())).await.unwrap(),
        IngestOutcome::Replaced
    );
    let cur = sql.instances(&Scope::study("1.2.3.0.0")).await.unwrap();
    assert_eq!(cur.len(), 1);
    assert_eq!(cur[0].sha256, "bb");
    let prior = sql
        .prior_versions(&Scope::study("1.2.3.0.0"))
        .await
        .unwrap();
    assert_eq!(prior.len(), 1);
    assert_eq!(prior[0].instance.sha256, "aa");
    assert_eq!(sql.blobs().await.unwrap().len(), 2);

    // A rejection note hides the instance everywhere.
    let other = record(0, 0, 0, 1, "cc");
    sql.commit(commit(other)).await.unwrap();
    let mut kos = commit(record(0, 0, 1, 9, "dd"));
    kos.rejects = vec!["1.2.3.0.0.0.1".into()];
    sql.commit(kos).await.unwrap();
    let cur = sql
        .instances(&Scope::series("1.2.3.0.0", "1.2.3.0.0.0"))
        .await
        .unwrap();
    assert_eq!(cur.len(), 1);
    let q =
        Query::new(Level::Image).with(Key::SopInstanceUid, Matcher::Single("1.2.3.0.0.0.1".into()));
    assert!(sql.find(&q).await.unwrap().is_empty());
    drop(sql);

    // Everything committed survives a reopen.
    let sql = SqliteIndex::open(&path).await.unwrap();
    assert_eq!(sql.stats().await.unwrap().instances, 2);
    let (inst, frames) = sql
        .frames(&Scope::study("1.2.3.0.0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(frames.frames[0], vec![(10, 90)]);
    assert!(!inst.blob_key.is_empty());
    let gone = sql.delete(&Scope::study("1.2.3.0.0")).await.unwrap();
    assert_eq!(gone.len(), 4);
    assert_eq!(sql.stats().await.unwrap().studies, 0);
    assert!(sql.delete(&Scope::default()).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_commits_are_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let sql = Arc::new(
        SqliteIndex::open(&dir.path().join("index.db"))
            .await
            .unwrap(),
    );
    let mut tasks = Vec::new();
    for i in 0..200 {
        let sql = sql.clone();
        tasks.push(tokio::spawn(async move {
            sql.commit(commit(record(i % 3, 0, i % 2, i, "ee"))).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), IngestOutcome::Stored);
    }
    assert_eq!(sql.stats().await.unwrap().instances, 200);
}

/// Issue 4: what a principal may see is filtered inside the SQL, at every level and for
/// retrieval scopes, exactly as the reference model filters.
#[tokio::test(flavor = "multi_thread")]
async fn access_filters_agree_with_the_reference_model() {
    use vesalius_store::query::Access;
    let dir = tempfile::tempdir().unwrap();
    let sql = SqliteIndex::open(&dir.path().join("index.db"))
        .await
        .unwrap();
    let mem = MemoryIndex::default();
    for (p, org) in [(0, "a"), (1, "b"), (2, "b"), (3, "c")] {
        for st in 0..2 {
            for i in 0..2 {
                let mut r = record(p, st, 0, i, "aa");
                r.org = org.into();
                sql.commit(commit(r.clone())).await.unwrap();
                mem.commit(commit(r)).await.unwrap();
            }
        }
    }
    let accesses = [
        Access::orgs(["a"]),
        Access {
            orgs: vec!["a".into()],
            studies: vec![("b".into(), "1.2.3.1.1".into())],
            patients: vec![("b".into(), String::new(), "PID2".into())],
        },
        // A grant naming the wrong org opens nothing.
        Access {
            studies: vec![("c".into(), "1.2.3.1.0".into())],
            ..Default::default()
        },
        Access::default(),
    ];
    let expect_studies = [2, 5, 0, 0];
    for (access, n) in accesses.iter().zip(expect_studies) {
        for level in [Level::Patient, Level::Study, Level::Series, Level::Image] {
            let mut q = Query::new(level);
            q.access = Some(access.clone());
            let tag = match level {
                Level::Patient => "00100020",
                Level::Study => "0020000D",
                Level::Series => "0020000E",
                Level::Image => "00080018",
            };
            let a = sql.find(&q).await.unwrap();
            let b = mem.find(&q).await.unwrap();
            assert_eq!(uids(&a, tag), uids(&b, tag), "{level:?} {access:?}");
            if level == Level::Study {
                assert_eq!(a.len(), n, "{access:?}");
            }
        }
        let scope = Scope {
            access: Some(access.clone()),
            study: Some("1.2.3.2.0".into()),
            ..Default::default()
        };
        assert_eq!(
            sql.instances(&scope).await.unwrap(),
            mem.instances(&scope).await.unwrap()
        );
    }
}
