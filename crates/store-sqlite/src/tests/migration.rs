//! Opening databases made by earlier (and later) schemas.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions, Connection, Executor};
use vesalius_store::audit::{AuditLog, GENESIS_HASH};
use vesalius_store::outbox::{JobFilter, JobState, NewJob, Outbox};
use vesalius_store::query::Scope;
use vesalius_store::{Directory, Index};

use super::directory::admin_event;
use crate::{SCHEMA_VERSION, SqliteIndex};

/// A database as issue 1's build left it: one instance, and `audit_rows` placeholder rows.
async fn schema_1_database(path: &Path, audit_rows: usize) {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(include_str!("schema_v1.sql"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.execute(ONE_INSTANCE).await.unwrap();
    for _ in 0..audit_rows {
        conn.execute(
            "INSERT INTO audit (action, details, created_ms) VALUES ('instance-stored', '{}', 1)",
        )
        .await
        .unwrap();
    }
    conn.close().await.unwrap();
}

/// One patient, study, series and instance, in the tables schemas 1 and 2 share.
const ONE_INSTANCE: &str = "INSERT INTO patients (id, org, issuer, patient_id, name, name_norm, birth_date, sex) \
           VALUES (1, 'default', '', 'PID1', 'Doe^Jane', 'DOE^JANE', '19700101', 'F'); \
         INSERT INTO studies (id, org, study_uid, patient_pk, date, time, accession, referring, \
           referring_norm, description, study_id, modalities, sop_classes, num_series, \
           num_instances, attrs, updated_ms) \
           VALUES (1, 'default', '1.2.3', 1, '20240101', '083000', 'ACC1', '', '', 'CT HEAD', \
           '1', '\\CT\\', '\\1.2.840.10008.5.1.4.1.1.2\\', 1, 1, '{}', 1); \
         INSERT INTO series (id, study_pk, series_uid, modality, number, description, \
           num_instances, attrs) VALUES (1, 1, '1.2.3.1', 'CT', 1, '', 1, '{}'); \
         INSERT INTO instances (series_pk, org, sop_uid, sop_class, number, ts, blob_key, size, \
           sha256, status, received_ms, source, attrs, metadata, frames) \
           VALUES (1, 'default', '1.2.3.1.1', '1.2.840.10008.5.1.4.1.1.2', 1, \
           '1.2.840.10008.1.2.1', 'default/1.2.3/1.2.3.1/1.2.3.1.1.aa', 100, 'aa', 0, 1, \
           'test', '{}', '{}', '{\"frames\":[]}');";

async fn scalar(idx: &SqliteIndex, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(idx.read_pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_1_database_upgrades_and_keeps_its_instances() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    schema_1_database(&path, 0).await;

    let idx = SqliteIndex::open(&path).await.unwrap();
    assert_eq!(scalar(&idx, "PRAGMA user_version").await, SCHEMA_VERSION);
    assert_eq!(idx.stats().await.unwrap().instances, 1);
    assert_eq!(
        idx.instances(&Scope::study("1.2.3")).await.unwrap().len(),
        1
    );
    // The empty placeholder is gone, the chained table took its place.
    assert_eq!(
        scalar(
            &idx,
            "SELECT count(*) FROM sqlite_master WHERE name = 'audit_v1'"
        )
        .await,
        0
    );
    assert_eq!(
        scalar(
            &idx,
            "SELECT count(*) FROM pragma_table_info('audit') WHERE name = 'prev_hash'"
        )
        .await,
        1
    );
    AuditLog::append(&idx, vec![admin_event(1, "a", "login")])
        .await
        .unwrap();
    let head = idx.head().await.unwrap().unwrap();
    assert_eq!((head.seq, head.prev_hash.as_str()), (1, GENESIS_HASH));
    drop(idx);

    // Opening again changes nothing.
    let idx = SqliteIndex::open(&path).await.unwrap();
    assert_eq!(scalar(&idx, "PRAGMA user_version").await, SCHEMA_VERSION);
    assert_eq!(idx.head().await.unwrap().unwrap(), head);
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_1_audit_rows_are_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    schema_1_database(&path, 2).await;
    let idx = SqliteIndex::open(&path).await.unwrap();
    assert_eq!(scalar(&idx, "SELECT count(*) FROM audit_v1").await, 2);
    assert_eq!(scalar(&idx, "SELECT count(*) FROM audit").await, 0);
    assert_eq!(idx.stats().await.unwrap().instances, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_schema_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    schema_1_database(&path, 0).await;
    {
        let mut conn = SqliteConnectOptions::new()
            .filename(&path)
            .connect()
            .await
            .unwrap();
        conn.execute("PRAGMA user_version = 99").await.unwrap();
        conn.close().await.unwrap();
    }
    let err = SqliteIndex::open(&path).await.err().expect("refused");
    assert!(err.to_string().contains("99"), "{err}");
    let mut conn = SqliteConnectOptions::new()
        .filename(&path)
        .connect()
        .await
        .unwrap();
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name IN ('users', 'orgs')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(tables, 0);
    let details: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pragma_table_info('audit') WHERE name = 'details'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(details, 1);
}

/// A database as the issue 4 build left it (schema 2): one instance, one organisation, and
/// stub outbox rows (ids 1 and 3; 2 was deleted).
async fn schema_2_database(path: &Path) {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(include_str!("schema_v2.sql"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.execute(ONE_INSTANCE).await.unwrap();
    conn.execute(
        "INSERT INTO orgs (id, name, created_ms) VALUES ('a', 'Org A', 1); \
         INSERT INTO outbox (id, kind, queue, payload, created_ms) VALUES \
           (1, 'route', 'peer:hub', '{\"n\":1}', 10), (3, 'route', 'node:pacs', '{}', 30); \
         PRAGMA user_version = 2;",
    )
    .await
    .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_2_database_upgrades_and_keeps_its_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    schema_2_database(&path).await;

    let idx = SqliteIndex::open(&path).await.unwrap();
    assert_eq!(scalar(&idx, "PRAGMA user_version").await, SCHEMA_VERSION);
    assert_eq!(idx.stats().await.unwrap().instances, 1);
    assert_eq!(idx.org("a").await.unwrap().unwrap().name, "Org A");
    assert_eq!(
        scalar(
            &idx,
            "SELECT count(*) FROM sqlite_master WHERE name = 'outbox_v2'"
        )
        .await,
        0
    );
    // The stub rows are ready jobs of no study, with their ids and creation times.
    let jobs = idx.jobs(&JobFilter::default()).await.unwrap();
    let summary: Vec<_> = jobs
        .iter()
        .map(|j| {
            (
                j.id,
                j.job.queue.as_str(),
                j.job.study_uid.as_str(),
                j.job.payload.as_str(),
                j.state,
                j.attempts,
                j.created_ms,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "peer:hub", "", r#"{"n":1}"#, JobState::Ready, 0, 10),
            (3, "node:pacs", "", "{}", JobState::Ready, 0, 30)
        ]
    );
    let leased = idx.lease("peer:hub", "w", 5, 100, 1_000).await.unwrap();
    assert_eq!(leased.len(), 1);
    // New ids continue after the highest old one.
    let job = NewJob {
        kind: "transfer".into(),
        queue: "peer:hub".into(),
        study_uid: "1.2.3".into(),
        payload: "{}".into(),
        priority: 0,
        not_before_ms: 0,
        dedupe_key: Some("k".into()),
    };
    assert_eq!(idx.enqueue(vec![job], 200).await.unwrap(), [4]);
    drop(idx);

    // Opening again changes nothing.
    let idx = SqliteIndex::open(&path).await.unwrap();
    assert_eq!(scalar(&idx, "PRAGMA user_version").await, SCHEMA_VERSION);
    assert_eq!(idx.jobs(&JobFilter::default()).await.unwrap().len(), 3);
    assert_eq!(
        scalar(
            &idx,
            "SELECT count(*) FROM outbox WHERE state = 'leased' AND lease_owner = 'w'"
        )
        .await,
        1
    );
}

/// A database as the first exchange build left it (schema 3): one instance and one peer.
async fn schema_3_database(path: &Path) {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(include_str!("schema_v3.sql"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.execute(ONE_INSTANCE).await.unwrap();
    conn.execute(
        "INSERT INTO peers (name, base_url, public_key, org, remote_org, may_query, \
           description, managed, created_ms) \
         VALUES ('hub', 'http://127.0.0.1:8042', 'ed25519:abc', 'a', NULL, 1, 'Hub', 0, 7); \
         PRAGMA user_version = 3;",
    )
    .await
    .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_3_peers_become_vesalius_peers_and_dicomweb_peers_fit() {
    use vesalius_store::Registry;
    use vesalius_store::registry::{Peer, PeerAuth, PeerKind, RegistryChange};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    schema_3_database(&path).await;

    let idx = SqliteIndex::open(&path).await.unwrap();
    assert_eq!(scalar(&idx, "PRAGMA user_version").await, SCHEMA_VERSION);
    assert_eq!(idx.stats().await.unwrap().instances, 1);
    let hub = idx.peer("hub").await.unwrap().unwrap();
    assert_eq!(
        (hub.kind, &hub.auth, hub.public_key.as_str(), hub.created_ms),
        (PeerKind::Vesalius, &PeerAuth::None, "ed25519:abc", 7)
    );
    let orthanc = Peer {
        name: "orthanc".into(),
        kind: PeerKind::Dicomweb,
        base_url: "http://127.0.0.1:8042/dicom-web".into(),
        public_key: String::new(),
        auth: PeerAuth::Basic {
            username: "alice".into(),
            password: "s3cret".into(),
        },
        org: "a".into(),
        remote_org: None,
        may_query: false,
        description: String::new(),
        managed: false,
        created_ms: 9,
    };
    Registry::apply(&idx, vec![RegistryChange::PutPeer(orthanc.clone())], vec![])
        .await
        .unwrap();
    drop(idx);

    // Opening again changes nothing; the credentials come back as given.
    let idx = SqliteIndex::open(&path).await.unwrap();
    assert_eq!(scalar(&idx, "PRAGMA user_version").await, SCHEMA_VERSION);
    assert_eq!(idx.peer("orthanc").await.unwrap().unwrap(), orthanc);
    assert_eq!(idx.peers().await.unwrap().len(), 2);
    // Listings never carry the secret.
    let shown = serde_json::to_string(&orthanc).unwrap();
    assert!(
        !shown.contains("s3cret") && shown.contains("<redacted>"),
        "{shown}"
    );
}

/// A database as the plain-DICOMweb-peers build left it (schema 4): one DICOM node.
async fn schema_4_database(path: &Path) {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(include_str!("schema_v4.sql"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.execute(ONE_INSTANCE).await.unwrap();
    conn.execute(
        "INSERT INTO dicom_nodes (name, ae_title, host, port, transfer_syntaxes, org, \
           description, managed, created_ms) \
         VALUES ('pacs', 'PACS', '10.0.0.9', 104, '[]', 'a', 'Old PACS', 0, 5); \
         PRAGMA user_version = 4;",
    )
    .await
    .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_4_nodes_keep_c_move_and_c_get_nodes_fit() {
    use vesalius_store::Registry;
    use vesalius_store::registry::{RegistryChange, RetrieveMethod};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    schema_4_database(&path).await;

    let idx = SqliteIndex::open(&path).await.unwrap();
    assert_eq!(scalar(&idx, "PRAGMA user_version").await, SCHEMA_VERSION);
    assert_eq!(idx.stats().await.unwrap().instances, 1);
    let pacs = idx.node("pacs").await.unwrap().unwrap();
    assert_eq!(
        (pacs.retrieve, pacs.ae_title.as_str(), pacs.created_ms),
        (RetrieveMethod::Move, "PACS", 5)
    );
    let mut nat = pacs.clone();
    nat.name = "behind-nat".into();
    nat.retrieve = RetrieveMethod::Get;
    Registry::apply(&idx, vec![RegistryChange::PutNode(nat.clone())], vec![])
        .await
        .unwrap();
    drop(idx);

    // Opening again changes nothing; each node keeps its method.
    let idx = SqliteIndex::open(&path).await.unwrap();
    assert_eq!(scalar(&idx, "PRAGMA user_version").await, SCHEMA_VERSION);
    assert_eq!(idx.node("behind-nat").await.unwrap().unwrap(), nat);
    assert_eq!(idx.node("pacs").await.unwrap().unwrap(), pacs);
    // The JSON form names the method; records without it (older clients) mean C-MOVE.
    assert!(
        serde_json::to_string(&nat)
            .unwrap()
            .contains(r#""retrieve":"get""#)
    );
    let mut old = serde_json::to_value(&pacs).unwrap();
    old.as_object_mut().unwrap().remove("retrieve");
    let back: vesalius_store::registry::DicomNode = serde_json::from_value(old).unwrap();
    assert_eq!(back.retrieve, RetrieveMethod::Move);
}

/// A database as the C-GET build left it (schema 5): receipts without their organisation, of a
/// study one organisation holds (`1.2.3`, of `default`) and of one nobody holds.
async fn schema_5_database(path: &Path) {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(include_str!("schema_v5.sql"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.execute(ONE_INSTANCE).await.unwrap();
    conn.execute(
        "INSERT INTO receipts (queue, kind, study_uid, sop_uid, sha256, size, delivered_ms, \
           verified, detail) VALUES \
           ('peer:hub', 'instance', '1.2.3', '1.2.3.1', 'h', 10, 100, 1, 'ok'), \
           ('peer:hub', 'study', '1.2.3', '', '', 1, 110, 1, 'manifest 1/1'), \
           ('peer:hub', 'instance', '9.9', '9.9.1', 'h', 10, 120, 1, 'ok'); \
         PRAGMA user_version = 5;",
    )
    .await
    .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_5_receipts_gain_the_organisation_holding_their_study() {
    use vesalius_store::Outbox;
    use vesalius_store::outbox::{ReceiptFilter, TransferFilter};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    schema_5_database(&path).await;

    let idx = SqliteIndex::open(&path).await.unwrap();
    assert_eq!(scalar(&idx, "PRAGMA user_version").await, SCHEMA_VERSION);
    let all = idx.receipts(&ReceiptFilter::default()).await.unwrap();
    let orgs: Vec<(&str, &str)> = all
        .iter()
        .map(|r| (r.study_uid.as_str(), r.org.as_str()))
        .collect();
    assert_eq!(
        orgs,
        [("9.9", ""), ("1.2.3", "default"), ("1.2.3", "default")]
    );
    let of_default = idx
        .transfers(&TransferFilter {
            org: Some("default".into()),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(
        of_default
            .iter()
            .map(|s| (s.study_uid.as_str(), s.delivered, s.complete_ms))
            .collect::<Vec<_>>(),
        [("1.2.3", 1, 110)]
    );
    // The old delivery-time index made way for the two that cover the organisation.
    assert_eq!(
        scalar(
            &idx,
            "SELECT count(*) FROM sqlite_master WHERE name IN \
               ('receipts_time_org', 'receipts_org_time')"
        )
        .await,
        2
    );
    assert_eq!(
        scalar(
            &idx,
            "SELECT count(*) FROM sqlite_master WHERE name = 'receipts_time'"
        )
        .await,
        0
    );
    drop(idx);
    // Opening again changes nothing.
    let idx = SqliteIndex::open(&path).await.unwrap();
    assert_eq!(idx.receipts(&ReceiptFilter::default()).await.unwrap(), all);
}

/// A database as the receipts-of-an-organisation build left it (schema 6): one DICOM node.
async fn schema_6_database(path: &Path) {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(include_str!("schema_v6.sql"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.execute(ONE_INSTANCE).await.unwrap();
    conn.execute(
        "INSERT INTO dicom_nodes (name, ae_title, host, port, transfer_syntaxes, org, \
           description, managed, created_ms, retrieve) \
         VALUES ('pacs', 'PACS', '10.0.0.9', 104, '[]', 'a', 'Old PACS', 0, 5, 'get'); \
         PRAGMA user_version = 6;",
    )
    .await
    .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_6_nodes_keep_study_root_and_patient_root_nodes_fit() {
    use vesalius_store::Registry;
    use vesalius_store::registry::{QueryModel, RegistryChange, RetrieveMethod};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    schema_6_database(&path).await;

    let idx = SqliteIndex::open(&path).await.unwrap();
    assert_eq!(scalar(&idx, "PRAGMA user_version").await, SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 7);
    assert_eq!(idx.stats().await.unwrap().instances, 1);
    let pacs = idx.node("pacs").await.unwrap().unwrap();
    assert_eq!(
        (pacs.query_model, pacs.retrieve, pacs.created_ms),
        (QueryModel::Study, RetrieveMethod::Get, 5)
    );
    let mut old_pacs = pacs.clone();
    old_pacs.name = "patient-root".into();
    old_pacs.query_model = QueryModel::Patient;
    Registry::apply(
        &idx,
        vec![RegistryChange::PutNode(old_pacs.clone())],
        vec![],
    )
    .await
    .unwrap();
    drop(idx);

    // Opening again changes nothing; each node keeps its model.
    let idx = SqliteIndex::open(&path).await.unwrap();
    assert_eq!(scalar(&idx, "PRAGMA user_version").await, SCHEMA_VERSION);
    assert_eq!(idx.node("patient-root").await.unwrap().unwrap(), old_pacs);
    assert_eq!(idx.node("pacs").await.unwrap().unwrap(), pacs);
    // The JSON form names the model; records without it (older clients) mean Study Root.
    assert!(
        serde_json::to_string(&old_pacs)
            .unwrap()
            .contains(r#""query_model":"patient""#)
    );
    let mut old = serde_json::to_value(&pacs).unwrap();
    old.as_object_mut().unwrap().remove("query_model");
    let back: vesalius_store::registry::DicomNode = serde_json::from_value(old).unwrap();
    assert_eq!(back.query_model, QueryModel::Study);
    // A value this build does not know is an error, not a silent Study Root.
    drop(idx);
    let mut conn = SqliteConnectOptions::new()
        .filename(&path)
        .connect()
        .await
        .unwrap();
    conn.execute("UPDATE dicom_nodes SET query_model = 'series' WHERE name = 'pacs'")
        .await
        .unwrap();
    conn.close().await.unwrap();
    let idx = SqliteIndex::open(&path).await.unwrap();
    let e = idx.node("pacs").await.unwrap_err();
    assert!(e.to_string().contains("query model"), "{e}");
}

/// Issue 6: a database of schema 6 with a user (no `site_admin` column): the user is kept and is
/// no site administrator until named one, and the flag then round-trips.
#[tokio::test(flavor = "multi_thread")]
async fn schema_6_users_become_site_admins_only_when_named() {
    use vesalius_store::directory::DirectoryChange;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let mut conn = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(include_str!("schema_v6.sql"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.execute(
        "INSERT INTO users (id, username, display_name, email, memberships, password_hash, \
           service, disabled, must_change_password, created_ms) VALUES \
           ('u1', 'alice', 'Alice', '', '[{\"org\":\"default\",\"role\":\"admin\"}]', 'h', \
            0, 0, 0, 5); \
         PRAGMA user_version = 6;",
    )
    .await
    .unwrap();
    conn.close().await.unwrap();

    let idx = SqliteIndex::open(&path).await.unwrap();
    assert_eq!(scalar(&idx, "PRAGMA user_version").await, SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 7);
    let mut alice = idx.user("u1").await.unwrap().expect("kept");
    assert_eq!(
        (alice.username.as_str(), alice.site_admin),
        ("alice", false)
    );
    alice.site_admin = true;
    idx.apply(vec![DirectoryChange::PutUser(alice)], vec![])
        .await
        .unwrap();
    drop(idx);
    // Opening again keeps the flag.
    let idx = SqliteIndex::open(&path).await.unwrap();
    assert!(idx.user_by_name("alice").await.unwrap().unwrap().site_admin);
}
