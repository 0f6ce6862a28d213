//! The writer task: group commit of every write (see the crate doc).
//!
//! Requests arrive as [`WriteOp`]s. The task takes every request waiting (up to [`MAX_BATCH`]),
//! opens one `BEGIN IMMEDIATE` transaction, runs each request in its own `SAVEPOINT` (a failing
//! one is rolled back alone, and its audit chain head with it), commits once, and only then
//! answers every caller. Audit events (ingest side records, directory and registry changes,
//! plain appends) are chained by [`Chain`], which lives exactly as long as one transaction.
//! When a committed request added outbox jobs or made some ready, the task moves the outbox's
//! change counter after the commit and before answering ([`vesalius_store::Outbox::changes`]).

use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, Executor, Row};
use tokio::sync::{mpsc, oneshot, watch};
use vesalius_store::audit::{AuditEvent, Checkpoint};
use vesalius_store::directory::{DirectoryChange, ThrottleState};
use vesalius_store::error::{Error, Result};
use vesalius_store::model::*;
use vesalius_store::query::Scope;
use vesalius_store::registry::RegistryChange;

use crate::audit::Chain;
use crate::outbox::OutboxOp;
use crate::{MAX_BATCH, db_err, directory, outbox, query, registry, stored_from_row};

pub(crate) type Tx<T> = oneshot::Sender<Result<T>>;

/// One request to the writer task, with the channel its answer goes back on.
pub(crate) enum WriteOp {
    /// An ingested instance with its side records ([`vesalius_store::Index::commit`]); `true`
    /// when the caller needs it durable at once, `false` for
    /// [`vesalius_store::Index::commit_unsynced`] (the ingest journal keeps its redo record).
    Commit(Box<IngestCommit>, bool, Tx<IngestOutcome>),
    /// Makes every earlier commit durable ([`vesalius_store::Index::sync`]).
    Sync(Tx<()>),
    /// Index rows in scope ([`vesalius_store::Index::delete`]).
    Delete(
        Scope,
        Option<vesalius_store::index::DeleteAudit>,
        Tx<Vec<StoredInstance>>,
    ),
    /// Directory changes and the audit events recording them.
    Apply(Vec<DirectoryChange>, Vec<AuditEvent>, Tx<()>),
    /// Audit events on their own.
    Append(Vec<AuditEvent>, Tx<()>),
    /// A signed checkpoint of the chain.
    Checkpoint(Checkpoint, Tx<()>),
    /// One throttle failure.
    ThrottleFail {
        key: String,
        now_ms: i64,
        window_ms: i64,
        max_failures: u32,
        lock_ms: i64,
        tx: Tx<ThrottleState>,
    },
    /// Forgets a throttle key.
    ThrottleReset(String, Tx<()>),
    /// An outbox request ([`vesalius_store::Outbox`]).
    Outbox(OutboxOp),
    /// Registry changes and the audit events recording them.
    Registry(Vec<RegistryChange>, Vec<AuditEvent>, Tx<()>),
    /// An alert-store write (issue 6).
    Alerts(
        Box<crate::alerts::AlertWrite>,
        Tx<crate::alerts::AlertAnswer>,
    ),
}

impl WriteOp {
    /// Answers without running (the transaction could not begin).
    fn fail(self, e: &Error) {
        let e = clone_err(e);
        match self {
            WriteOp::Commit(_, _, tx) => drop(tx.send(Err(e))),
            WriteOp::Delete(_, _, tx) => drop(tx.send(Err(e))),
            WriteOp::Apply(_, _, tx)
            | WriteOp::Registry(_, _, tx)
            | WriteOp::Append(_, tx)
            | WriteOp::Sync(tx)
            | WriteOp::Checkpoint(_, tx)
            | WriteOp::ThrottleReset(_, tx) => drop(tx.send(Err(e))),
            WriteOp::ThrottleFail { tx, .. } => drop(tx.send(Err(e))),
            WriteOp::Outbox(op) => op.fail(e),
            WriteOp::Alerts(_, tx) => drop(tx.send(Err(e))),
        }
    }
}

/// Sends a request's answer: its own result, or the commit's error when given.
type Answer = Box<dyn FnOnce(Option<&Error>) + Send>;

/// A request that has run, waiting for its transaction's fate.
pub(crate) struct Done {
    ok: bool,
    /// It added outbox jobs or made some ready: workers are woken once it commits.
    wakes: bool,
    answer: Answer,
}

impl Done {
    /// Marks the request as one that wakes outbox workers when `wakes` (and it succeeded).
    pub(crate) fn waking(mut self, wakes: bool) -> Done {
        self.wakes = self.ok && wakes;
        self
    }
}

pub(crate) fn done<T: Send + 'static>(tx: Tx<T>, r: Result<T>) -> Done {
    Done {
        ok: r.is_ok(),
        wakes: false,
        answer: Box::new(move |commit_failed| {
            let _ = tx.send(match commit_failed {
                Some(e) => Err(clone_err(e)),
                None => r,
            });
        }),
    }
}

/// Runs one request inside the open transaction.
async fn run(conn: &mut SqliteConnection, chain: &mut Chain, op: WriteOp) -> Done {
    match op {
        WriteOp::Sync(tx) => done(tx, mark_synced(conn).await),
        WriteOp::Commit(c, _, tx) => {
            let r = apply_commit(conn, chain, &c).await;
            let wakes = matches!(r, Ok(o) if o != IngestOutcome::Duplicate)
                && c.side.iter().any(|s| matches!(s, SideRecord::Outbox(_)));
            done(tx, r).waking(wakes)
        }
        WriteOp::Delete(s, audit, tx) => done(tx, apply_delete(conn, chain, &s, audit).await),
        WriteOp::Apply(changes, events, tx) => {
            done(tx, directory::apply(conn, chain, &changes, &events).await)
        }
        WriteOp::Append(events, tx) => done(tx, chain.append(conn, &events).await),
        WriteOp::Checkpoint(c, tx) => done(tx, chain.put_checkpoint(conn, &c).await),
        WriteOp::ThrottleFail {
            key,
            now_ms,
            window_ms,
            max_failures,
            lock_ms,
            tx,
        } => {
            let r = directory::throttle_fail(conn, &key, now_ms, window_ms, max_failures, lock_ms)
                .await;
            done(tx, r)
        }
        WriteOp::ThrottleReset(key, tx) => done(tx, directory::throttle_reset(conn, &key).await),
        WriteOp::Outbox(op) => outbox::run(conn, op).await,
        WriteOp::Registry(changes, events, tx) => {
            done(tx, registry::apply(conn, chain, &changes, &events).await)
        }
        WriteOp::Alerts(w, tx) => done(tx, crate::alerts::run(conn, chain, *w).await),
    }
}

/// How often the writer refreshes planner statistics (`PRAGMA optimize`).
const OPTIMIZE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// A write that a `synchronous=FULL` commit turns into a WAL fsync (a transaction that changes
/// nothing writes no frame and syncs nothing), making every frame before it durable.
async fn mark_synced(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::query(
        "INSERT INTO sync_marks (id, at_ms) VALUES (1, ?) \
         ON CONFLICT (id) DO UPDATE SET at_ms = excluded.at_ms",
    )
    .bind(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
    )
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Whether every request of a batch is an unsynced ingest commit or an outbox worker's progress
/// ([`OutboxOp::progress_only`](crate::outbox::OutboxOp::progress_only)): the batch then commits
/// with `synchronous=NORMAL` (no WAL fsync; durable at the next FULL commit, see
/// `WriteOp::Sync`).
fn unsynced_batch(batch: &[WriteOp]) -> bool {
    batch.iter().all(|op| match op {
        WriteOp::Commit(_, synced, _) => !synced,
        WriteOp::Outbox(o) => o.progress_only(),
        _ => false,
    })
}

pub(crate) async fn writer_task(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<WriteOp>,
    changes: watch::Sender<u64>,
) {
    let mut last_optimize = std::time::Instant::now();
    // The connection opens with synchronous=FULL.
    let mut full = true;
    while let Some(first) = rx.recv().await {
        if last_optimize.elapsed() > OPTIMIZE_EVERY {
            let _ = conn.execute("PRAGMA optimize").await;
            last_optimize = std::time::Instant::now();
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let want_full = !unsynced_batch(&batch);
        if want_full != full {
            let pragma = if want_full {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            match conn.execute(pragma).await {
                Ok(_) => full = want_full,
                Err(e) => {
                    // Stay as it was; FULL is never weakened by a failure.
                    tracing::error!(error = %e, "changing synchronous failed");
                    if !full {
                        let e = db_err(e);
                        for op in batch {
                            op.fail(&e);
                        }
                        continue;
                    }
                }
            }
        }
        run_batch(&mut conn, batch, &changes).await;
    }
    let _ = conn.close().await;
}

/// Runs a batch in one transaction and answers every request after the commit. When the
/// transaction committed a request that added outbox jobs or made some ready, `changes` moves
/// after the commit and before the answers (so a caller's enqueue has signalled when it returns).
pub(crate) async fn run_batch(
    conn: &mut SqliteConnection,
    batch: Vec<WriteOp>,
    changes: &watch::Sender<u64>,
) {
    metrics::histogram!("vesalius_index_commit_batch").record(batch.len() as f64);
    if let Err(e) = conn.execute("BEGIN IMMEDIATE").await.map_err(db_err) {
        for op in batch {
            op.fail(&e);
        }
        return;
    }
    // The chain head is read again in every transaction (see `crate::audit`).
    let mut chain = Chain::default();
    // Each request of a batch in its own savepoint, so a failing one is rolled back alone; a
    // batch of one needs none (its failure rolls back the transaction), which saves two
    // statement round trips on the single-association path.
    let savepoints = batch.len() > 1;
    let mut finished = Vec::with_capacity(batch.len());
    for op in batch {
        if savepoints {
            let _ = conn.execute("SAVEPOINT op").await;
        }
        let chain_before = chain.clone();
        let d = run(conn, &mut chain, op).await;
        if savepoints {
            if !d.ok {
                let _ = conn.execute("ROLLBACK TO op").await;
                chain = chain_before;
            }
            let _ = conn.execute("RELEASE op").await;
        }
        finished.push(d);
    }
    if !savepoints && !finished[0].ok {
        // The only request failed: nothing to commit, and it already has its error.
        let _ = conn.execute("ROLLBACK").await;
        for d in finished {
            (d.answer)(None);
        }
        return;
    }
    // Durable here (WAL + synchronous=FULL): only now may anyone acknowledge. A batch of
    // unsynced ingest commits only (synchronous=NORMAL) is durable at the next FULL commit.
    let committed = conn.execute("COMMIT").await.map_err(db_err);
    if let Err(e) = &committed {
        let _ = conn.execute("ROLLBACK").await;
        tracing::error!(error = %e, "index commit failed");
    }
    if committed.is_ok() && finished.iter().any(|d| d.ok && d.wakes) {
        changes.send_modify(|c| *c = c.wrapping_add(1));
    }
    for d in finished {
        (d.answer)(committed.as_ref().err());
    }
}

fn clone_err(e: &Error) -> Error {
    Error::Index(e.to_string())
}

/// Pads a DICOM time to at least HHMMSS so text comparison orders times (PS3.5 6.2 TM).
pub(crate) fn pad_time(t: &str) -> String {
    let mut s = t.replace(':', "");
    while !s.is_empty() && s.len() < 6 {
        s.push('0');
    }
    s
}

async fn apply_commit(
    conn: &mut SqliteConnection,
    chain: &mut Chain,
    c: &IngestCommit,
) -> Result<IngestOutcome> {
    let r = &c.record;
    let mut touched_studies: Vec<i64> = Vec::new();
    for sop in &c.rejects {
        let rows = sqlx::query(
            "UPDATE instances SET status = 2 WHERE org = ? AND sop_uid = ? AND status = 0 \
             RETURNING (SELECT study_pk FROM series WHERE series.id = instances.series_pk) AS study_pk",
        )
        .bind(&r.org)
        .bind(sop)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
        touched_studies.extend(rows.iter().map(|row| row.get::<i64, _>("study_pk")));
    }
    let existing = sqlx::query(
        "SELECT i.id, i.sha256, se.study_pk FROM instances i JOIN series se ON se.id = i.series_pk \
         WHERE i.org = ? AND i.sop_uid = ? AND i.status = 0",
    )
    .bind(&r.org)
    .bind(&r.instance.sop_instance_uid)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    let mut outcome = IngestOutcome::Stored;
    if let Some(row) = existing {
        if row.get::<&str, _>("sha256") == r.sha256 {
            for s in touched_studies {
                recount(conn, s).await?;
            }
            return Ok(IngestOutcome::Duplicate);
        }
        // DESIGN.md: the newer object becomes current; the older is kept as a prior version.
        sqlx::query("UPDATE instances SET status = 1, superseded_ms = ? WHERE id = ?")
            .bind(r.received_ms)
            .bind(row.get::<i64, _>("id"))
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        touched_studies.push(row.get("study_pk"));
        outcome = IngestOutcome::Replaced;
    }
    let patient_pk: i64 = sqlx::query(
        "INSERT INTO patients (org, issuer, patient_id, name, name_norm, birth_date, sex) \
         VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (org, issuer, patient_id) DO UPDATE SET name = excluded.name, \
           name_norm = excluded.name_norm, birth_date = excluded.birth_date, sex = excluded.sex \
         RETURNING id",
    )
    .bind(&r.org)
    .bind(&r.patient.issuer)
    .bind(&r.patient.patient_id)
    .bind(&r.patient.name)
    .bind(r.patient.name.to_uppercase())
    .bind(&r.patient.birth_date)
    .bind(&r.patient.sex)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_err)?
    .get(0);
    let study_pk: i64 = sqlx::query(
        "INSERT INTO studies (org, study_uid, patient_pk, date, time, accession, referring, \
           referring_norm, description, study_id, attrs, updated_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (org, study_uid) DO UPDATE SET patient_pk = excluded.patient_pk, \
           date = excluded.date, time = excluded.time, accession = excluded.accession, \
           referring = excluded.referring, referring_norm = excluded.referring_norm, \
           description = excluded.description, study_id = excluded.study_id, \
           attrs = excluded.attrs, updated_ms = excluded.updated_ms \
         RETURNING id",
    )
    .bind(&r.org)
    .bind(&r.study.study_uid)
    .bind(patient_pk)
    .bind(&r.study.date)
    .bind(pad_time(&r.study.time))
    .bind(&r.study.accession)
    .bind(&r.study.referring_physician)
    .bind(r.study.referring_physician.to_uppercase())
    .bind(&r.study.description)
    .bind(&r.study.study_id)
    .bind(&r.study_json)
    .bind(r.received_ms)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_err)?
    .get(0);
    let series_row = sqlx::query(
        "INSERT INTO series (study_pk, series_uid, modality, number, description, attrs) \
         VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (study_pk, series_uid) DO UPDATE SET modality = excluded.modality, \
           number = excluded.number, description = excluded.description, attrs = excluded.attrs \
         RETURNING id, num_instances",
    )
    .bind(study_pk)
    .bind(&r.series.series_uid)
    .bind(&r.series.modality)
    .bind(r.series.number)
    .bind(&r.series.description)
    .bind(&r.series_json)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_err)?;
    let series_pk: i64 = series_row.get(0);
    let series_was_empty = series_row.get::<i64, _>(1) == 0;
    let frames = serde_json::to_string(&r.frame_index).map_err(|e| Error::Index(e.to_string()))?;
    sqlx::query(
        "INSERT INTO instances (series_pk, org, sop_uid, sop_class, number, ts, blob_key, size, \
           sha256, status, received_ms, source, attrs, metadata, frames) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)",
    )
    .bind(series_pk)
    .bind(&r.org)
    .bind(&r.instance.sop_instance_uid)
    .bind(&r.instance.sop_class_uid)
    .bind(r.instance.number)
    .bind(&r.instance.transfer_syntax)
    .bind(&r.blob_key)
    .bind(r.size as i64)
    .bind(&r.sha256)
    .bind(r.received_ms)
    .bind(&r.source)
    .bind(&r.instance_json)
    .bind(&r.metadata_json)
    .bind(frames)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    for side in &c.side {
        match side {
            SideRecord::Outbox(job) => {
                // As Outbox::enqueue would (dedupe included), at the instance's reception time.
                outbox::insert(conn, job, r.received_ms).await?;
            }
            SideRecord::Audit(event) => {
                chain.append(conn, std::slice::from_ref(event)).await?;
            }
        }
    }
    if outcome == IngestOutcome::Stored && touched_studies.is_empty() {
        // The common case: one more instance. Counters move incrementally; modality and SOP
        // class lists grow only when the value is new ('\\CT\\MR\\' form).
        sqlx::query("UPDATE series SET num_instances = num_instances + 1 WHERE id = ?")
            .bind(series_pk)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        sqlx::query(
            "UPDATE studies SET num_instances = num_instances + 1, num_series = num_series + ?, \
               modalities = CASE WHEN ? = '' OR instr(modalities, '\\' || ? || '\\') > 0 THEN modalities \
                 ELSE modalities || ? || '\\' END, \
               sop_classes = CASE WHEN instr(sop_classes, '\\' || ? || '\\') > 0 THEN sop_classes \
                 ELSE sop_classes || ? || '\\' END \
             WHERE id = ?",
        )
        .bind(i64::from(series_was_empty))
        .bind(&r.series.modality)
        .bind(&r.series.modality)
        .bind(&r.series.modality)
        .bind(&r.instance.sop_class_uid)
        .bind(&r.instance.sop_class_uid)
        .bind(study_pk)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
        return Ok(outcome);
    }
    touched_studies.push(study_pk);
    touched_studies.sort_unstable();
    touched_studies.dedup();
    for s in touched_studies {
        recount(conn, s).await?;
    }
    Ok(outcome)
}

/// Recomputes the counters and the modality/SOP class lists of a study and its series.
async fn recount(conn: &mut SqliteConnection, study_pk: i64) -> Result<()> {
    sqlx::query(
        "UPDATE series SET num_instances = (SELECT count(*) FROM instances i \
           WHERE i.series_pk = series.id AND i.status = 0) WHERE study_pk = ?",
    )
    .bind(study_pk)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    sqlx::query(
        "UPDATE studies SET \
           num_instances = (SELECT coalesce(sum(num_instances), 0) FROM series WHERE study_pk = studies.id), \
           num_series = (SELECT count(*) FROM series WHERE study_pk = studies.id AND num_instances > 0), \
           modalities = '\\' || coalesce((SELECT group_concat(m, '\\') FROM (SELECT DISTINCT modality AS m \
             FROM series WHERE study_pk = studies.id AND num_instances > 0 AND modality <> '' ORDER BY m)), '') || '\\', \
           sop_classes = '\\' || coalesce((SELECT group_concat(c, '\\') FROM (SELECT DISTINCT i.sop_class AS c \
             FROM instances i JOIN series se ON se.id = i.series_pk WHERE se.study_pk = studies.id \
             AND i.status = 0 ORDER BY c)), '') || '\\' \
         WHERE id = ?",
    )
    .bind(study_pk)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

async fn apply_delete(
    conn: &mut SqliteConnection,
    chain: &mut Chain,
    scope: &Scope,
    audit: Option<vesalius_store::index::DeleteAudit>,
) -> Result<Vec<StoredInstance>> {
    let rows = query::scoped_on(
        &mut *conn,
        scope,
        ", se.study_pk AS study_pk, i.id AS iid",
        query::ANY,
    )
    .await?;
    let gone: Vec<StoredInstance> = rows.iter().map(stored_from_row).collect();
    let mut studies: Vec<i64> = rows.iter().map(|r| r.get::<i64, _>("study_pk")).collect();
    studies.sort_unstable();
    studies.dedup();
    for r in &rows {
        sqlx::query("DELETE FROM instances WHERE id = ?")
            .bind(r.get::<i64, _>("iid"))
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    }
    for s in &studies {
        recount(conn, *s).await?;
        sqlx::query(
            "DELETE FROM series WHERE study_pk = ? AND NOT EXISTS \
               (SELECT 1 FROM instances i WHERE i.series_pk = series.id)",
        )
        .bind(s)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
        sqlx::query(
            "DELETE FROM studies WHERE id = ? AND NOT EXISTS (SELECT 1 FROM series WHERE study_pk = studies.id)",
        )
        .bind(s)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    sqlx::query("DELETE FROM patients WHERE NOT EXISTS (SELECT 1 FROM studies WHERE patient_pk = patients.id)")
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    // Issue 4: the deletion's audit events commit (or roll back) with it.
    if let Some(make) = audit
        && !gone.is_empty()
    {
        chain.append(conn, &make(&gone)).await?;
    }
    Ok(gone)
}
