//! The outbox in SQLite: [`Outbox`] for [`SqliteIndex`], answering exactly as the reference model
//! [`MemoryOutbox`](vesalius_store::outbox::MemoryOutbox) does (ids included).
//!
//! ## Invariants
//! - Every write is an [`OutboxOp`] of the one writer task, so it is serialised with ingest
//!   commits and group-committed with them. [`Outbox::lease`] selects and marks its jobs in one
//!   `UPDATE … WHERE id IN (SELECT …)` inside the writer's transaction: no two workers (in this
//!   process or another one on the same file, since the writer holds `BEGIN IMMEDIATE`) can
//!   lease one job while its lease is fresh.
//! - Heartbeat, complete and fail name the owner in their `WHERE`, so a worker whose lease was
//!   taken over changes nothing. [`Outbox::complete`] deletes the jobs and inserts the receipts
//!   in one step.
//! - Routing jobs of an ingest are inserted by [`insert`] inside that instance's savepoint, with
//!   the same dedupe rule as [`Outbox::enqueue`]: a job whose `(queue, dedupe_key)` is already in
//!   the outbox is not added, its id is answered instead (`outbox_dedupe` is a unique index, so
//!   the database refuses a second one anyway). A duplicate instance writes no job.
//! - Ids come from `AUTOINCREMENT`: increasing and never reused, as in the model.
//! - [`Outbox::changes`] moves after the `COMMIT` of a transaction that added jobs or made jobs
//!   ready (ingest with routing jobs, enqueue, fail back to ready, release, retry), never before
//!   (a woken worker always finds the job), and before the callers are answered (when enqueue
//!   returns, workers have been signalled). The counter is per process; workers also poll, which
//!   finds jobs another process committed.
//! - Reads (jobs, receipts, transfers, active queues, and lease's cheap "anything to lease?"
//!   pre-check) use the read pool and see the last committed state.
//!
//! ## Layout
//! `outbox` (one row per job; `state` is `ready`/`leased`/`parked`; indexes `outbox_lease`
//! (queue, state, priority DESC, id), `outbox_dedupe`, `outbox_owner`, `outbox_study`) and
//! `receipts` (append-only proof of deliveries, each with the sending organisation since schema
//! 6; indexes by transfer, study, delivery time and organisation). A job's organisation is not a
//! column: it is its payload's `org` ([`JOB_ORG`], the rule of
//! [`payload_org`](vesalius_store::outbox::payload_org)); the outbox holds pending work only, so
//! filtering it by an expression stays cheap. [`Outbox::transfers`] is computed in SQL over the
//! most recently active (org, queue, study) triples only; it mirrors
//! [`summarize`](vesalius_store::outbox::summarize) and the model test checks the two agree.
//!
//! ## Crash behaviour
//! A job is durable when its transaction commits (an ingest's with its instance). A crash of the
//! process leaves leased jobs `leased` in the file; after the restart they are handed out again
//! once their lease expires (at least once delivery). A crash between a delivery and
//! [`Outbox::complete`] therefore repeats the delivery, which receivers treat as a no-op.
//! Progress writes (lease, heartbeat, complete, fail, release: [`OutboxOp::progress_only`])
//! commit without a WAL fsync when nothing else in their batch needs one: a process crash keeps
//! them (the WAL is written), a power cut may lose the last ones, which puts those jobs back
//! where they were before: the same as a crash before them.

use async_trait::async_trait;
use futures::TryStreamExt;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::watch;
use vesalius_store::error::{Error, Result};
use vesalius_store::outbox::{
    Job, JobFilter, JobState, NewJob, Outbox, Receipt, ReceiptFilter, ReceiptKind, TransferFilter,
    TransferSummary,
};

use crate::write::{Done, Tx, WriteOp, done};
use crate::{SqliteIndex, db_err};

/// One outbox write, with the channel its answer goes back on.
pub(crate) enum OutboxOp {
    /// [`Outbox::enqueue`].
    Enqueue(Vec<NewJob>, i64, Tx<Vec<i64>>),
    /// [`Outbox::lease`].
    Lease {
        queue: String,
        owner: String,
        max: usize,
        now_ms: i64,
        lease_ms: i64,
        tx: Tx<Vec<Job>>,
    },
    /// [`Outbox::heartbeat`].
    Heartbeat {
        owner: String,
        ids: Vec<i64>,
        lease_until_ms: i64,
        tx: Tx<usize>,
    },
    /// [`Outbox::complete`].
    Complete {
        owner: String,
        ids: Vec<i64>,
        receipts: Vec<Receipt>,
        tx: Tx<usize>,
    },
    /// [`Outbox::fail`].
    Fail {
        owner: String,
        id: i64,
        error: String,
        retry_at_ms: i64,
        max_attempts: u32,
        tx: Tx<Option<JobState>>,
    },
    /// [`Outbox::release`].
    Release(String, Tx<usize>),
    /// [`Outbox::retry`].
    Retry(i64, i64, Tx<bool>),
}

impl OutboxOp {
    /// Whether it only records a worker's progress (lease, heartbeat, completion, failure,
    /// release): such a write may commit without a WAL fsync (`synchronous=NORMAL`, durable at
    /// the next synced commit), because losing it to a power cut only repeats work the
    /// exchange already makes safe to repeat: a lost lease or heartbeat leaves the job to be
    /// leased again, a lost completion or failure leaves it leased until its lease expires,
    /// then resumed with a manifest (what the peer holds is not sent again). Enqueue and an
    /// administrator's retry are synced (their callers are told the work is queued).
    pub(crate) fn progress_only(&self) -> bool {
        !matches!(self, OutboxOp::Enqueue(..) | OutboxOp::Retry(..))
    }

    /// Answers `e` without running.
    pub(crate) fn fail(self, e: Error) {
        match self {
            OutboxOp::Enqueue(_, _, tx) => drop(tx.send(Err(e))),
            OutboxOp::Lease { tx, .. } => drop(tx.send(Err(e))),
            OutboxOp::Heartbeat { tx, .. }
            | OutboxOp::Complete { tx, .. }
            | OutboxOp::Release(_, tx) => drop(tx.send(Err(e))),
            OutboxOp::Fail { tx, .. } => drop(tx.send(Err(e))),
            OutboxOp::Retry(_, _, tx) => drop(tx.send(Err(e))),
        }
    }
}

/// Runs one request inside the writer's transaction (its savepoint is the caller's).
pub(crate) async fn run(conn: &mut SqliteConnection, op: OutboxOp) -> Done {
    match op {
        OutboxOp::Enqueue(jobs, now_ms, tx) => {
            let wakes = !jobs.is_empty();
            done(tx, enqueue(conn, &jobs, now_ms).await).waking(wakes)
        }
        OutboxOp::Lease {
            queue,
            owner,
            max,
            now_ms,
            lease_ms,
            tx,
        } => done(
            tx,
            lease(conn, &queue, &owner, max, now_ms, now_ms + lease_ms).await,
        ),
        OutboxOp::Heartbeat {
            owner,
            ids,
            lease_until_ms,
            tx,
        } => done(tx, heartbeat(conn, &owner, &ids, lease_until_ms).await),
        OutboxOp::Complete {
            owner,
            ids,
            receipts,
            tx,
        } => done(tx, complete(conn, &owner, &ids, &receipts).await),
        OutboxOp::Fail {
            owner,
            id,
            error,
            retry_at_ms,
            max_attempts,
            tx,
        } => {
            let r = fail(conn, &owner, id, &error, retry_at_ms, max_attempts).await;
            let wakes = matches!(r, Ok(Some(JobState::Ready)));
            done(tx, r).waking(wakes)
        }
        OutboxOp::Release(owner, tx) => {
            let r = release(conn, &owner).await;
            let wakes = matches!(r, Ok(n) if n > 0);
            done(tx, r).waking(wakes)
        }
        OutboxOp::Retry(id, now_ms, tx) => {
            let r = retry(conn, id, now_ms).await;
            let wakes = matches!(r, Ok(true));
            done(tx, r).waking(wakes)
        }
    }
}

/// The columns a [`Job`] is read from.
const JOB: &str = "SELECT id, kind, queue, study_uid, payload, priority, not_before_ms, \
    dedupe_key, state, attempts, lease_owner, lease_until_ms, last_error, created_ms FROM outbox";

/// The columns `RETURNING` gives back for a [`Job`].
const JOB_RETURNING: &str = "RETURNING id, kind, queue, study_uid, payload, priority, \
    not_before_ms, dedupe_key, state, attempts, lease_owner, lease_until_ms, last_error, created_ms";

/// A job's organisation in SQL, the rule of [`vesalius_store::outbox::payload_org`]: the text
/// `org` of a JSON object payload, "" otherwise.
const JOB_ORG: &str = "(CASE WHEN json_valid(payload) AND json_type(payload, '$.org') = 'text' \
    THEN json_extract(payload, '$.org') ELSE '' END)";

fn job_from_row(r: &SqliteRow) -> Result<Job> {
    let state: &str = r.get("state");
    Ok(Job {
        id: r.get("id"),
        job: NewJob {
            kind: r.get("kind"),
            queue: r.get("queue"),
            study_uid: r.get("study_uid"),
            payload: r.get("payload"),
            priority: r.get("priority"),
            not_before_ms: r.get("not_before_ms"),
            dedupe_key: r.get("dedupe_key"),
        },
        state: JobState::parse(state)
            .ok_or_else(|| Error::Index(format!("unknown job state {state:?} in the outbox")))?,
        attempts: u32::try_from(r.get::<i64, _>("attempts")).unwrap_or(u32::MAX),
        lease_owner: r.get("lease_owner"),
        lease_until_ms: r.get("lease_until_ms"),
        last_error: r.get("last_error"),
        created_ms: r.get("created_ms"),
    })
}

fn receipt_kind(k: ReceiptKind) -> &'static str {
    match k {
        ReceiptKind::Instance => "instance",
        ReceiptKind::Study => "study",
    }
}

fn receipt_from_row(r: &SqliteRow) -> Result<Receipt> {
    let kind = match r.get::<&str, _>("kind") {
        "instance" => ReceiptKind::Instance,
        "study" => ReceiptKind::Study,
        k => return Err(Error::Index(format!("unknown receipt kind {k:?}"))),
    };
    Ok(Receipt {
        org: r.get("org"),
        queue: r.get("queue"),
        kind,
        study_uid: r.get("study_uid"),
        sop_instance_uid: r.get("sop_uid"),
        sha256: r.get("sha256"),
        size: r.get::<i64, _>("size") as u64,
        delivered_ms: r.get("delivered_ms"),
        verified: r.get("verified"),
        detail: r.get("detail"),
    })
}

/// A `LIMIT` value: 0 and anything beyond `i64` mean "no limit" (-1 in SQLite). It is written
/// into the SQL text, never bound: SQLite (3.51, `computeLimitRegisters`) plans with a bound
/// LIMIT's value and so marks the statement expired at every new binding, re-preparing it at
/// each run (a statement cached per distinct limit is prepared once).
pub(crate) fn sql_limit(limit: usize) -> i64 {
    if limit == 0 {
        -1
    } else {
        i64::try_from(limit).unwrap_or(-1)
    }
}

/// Adds one job at `now_ms` unless its `(queue, dedupe_key)` is already in the outbox; returns
/// its id (the existing job's on a dedupe match). Shared by enqueue and the ingest commit.
pub(crate) async fn insert(conn: &mut SqliteConnection, job: &NewJob, now_ms: i64) -> Result<i64> {
    if let Some(key) = &job.dedupe_key {
        let existing: Option<i64> =
            sqlx::query_scalar("SELECT id FROM outbox WHERE queue = ? AND dedupe_key = ?")
                .bind(&job.queue)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_err)?;
        if let Some(id) = existing {
            return Ok(id);
        }
    }
    sqlx::query_scalar(
        "INSERT INTO outbox (kind, queue, study_uid, payload, priority, not_before_ms, \
           dedupe_key, state, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, 'ready', ?) RETURNING id",
    )
    .bind(&job.kind)
    .bind(&job.queue)
    .bind(&job.study_uid)
    .bind(&job.payload)
    .bind(job.priority)
    .bind(job.not_before_ms)
    .bind(&job.dedupe_key)
    .bind(now_ms)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_err)
}

async fn enqueue(conn: &mut SqliteConnection, jobs: &[NewJob], now_ms: i64) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(jobs.len());
    for job in jobs {
        ids.push(insert(conn, job, now_ms).await?);
    }
    Ok(ids)
}

/// The ids of `queue`'s leasable jobs in hand-out order, at most `max`: ready jobs due by `now`
/// and leased jobs whose lease expired ([`vesalius_store::outbox::leasable`]), each state walked
/// along `outbox_lease` and stopped at `max`, then merged. `?1` is the queue, `?2` now.
fn leasable(max: usize) -> String {
    let limit = sql_limit(max);
    format!(
        "SELECT id FROM ( \
          SELECT id, priority FROM (SELECT id, priority FROM outbox \
            WHERE queue = ?1 AND state = 'ready' AND not_before_ms <= ?2 \
            ORDER BY priority DESC, id LIMIT {limit}) \
          UNION ALL \
          SELECT id, priority FROM (SELECT id, priority FROM outbox \
            WHERE queue = ?1 AND state = 'leased' AND lease_until_ms < ?2 \
            ORDER BY priority DESC, id LIMIT {limit}) \
          ORDER BY priority DESC, id LIMIT {limit})"
    )
}

async fn lease(
    conn: &mut SqliteConnection,
    queue: &str,
    owner: &str,
    max: usize,
    now_ms: i64,
    lease_until_ms: i64,
) -> Result<Vec<Job>> {
    let sql = format!(
        "UPDATE outbox SET state = 'leased', lease_owner = ?3, lease_until_ms = ?4 \
         WHERE id IN ({}) {JOB_RETURNING}",
        leasable(max)
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(queue)
        .bind(now_ms)
        .bind(owner)
        .bind(lease_until_ms)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    let mut jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
    // RETURNING comes in no particular order; the contract's is the hand-out order.
    jobs.sort_by(|a, b| b.job.priority.cmp(&a.job.priority).then(a.id.cmp(&b.id)));
    Ok(jobs)
}

async fn heartbeat(
    conn: &mut SqliteConnection,
    owner: &str,
    ids: &[i64],
    lease_until_ms: i64,
) -> Result<usize> {
    let mut n = 0;
    // One statement per id, as the model counts: an id named twice counts twice.
    for id in ids {
        n += sqlx::query(
            "UPDATE outbox SET lease_until_ms = ? \
             WHERE id = ? AND state = 'leased' AND lease_owner = ?",
        )
        .bind(lease_until_ms)
        .bind(id)
        .bind(owner)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?
        .rows_affected() as usize;
    }
    Ok(n)
}

/// Deletes the completed jobs and inserts their receipts: one statement each (the ids and the
/// receipts travel as one JSON array; a statement is a round trip to SQLite's thread), except
/// when an id is named twice, which the model counts twice (one statement per id then).
async fn complete(
    conn: &mut SqliteConnection,
    owner: &str,
    ids: &[i64],
    receipts: &[Receipt],
) -> Result<usize> {
    let mut n = 0;
    let distinct: std::collections::HashSet<&i64> = ids.iter().collect();
    if distinct.len() == ids.len() {
        if !ids.is_empty() {
            n = sqlx::query(
                "DELETE FROM outbox WHERE state = 'leased' AND lease_owner = ?1 \
                 AND id IN (SELECT value FROM json_each(?2))",
            )
            .bind(owner)
            .bind(serde_json::to_string(ids).expect("integers"))
            .execute(&mut *conn)
            .await
            .map_err(db_err)?
            .rows_affected() as usize;
        }
    } else {
        for id in ids {
            n += sqlx::query(
                "DELETE FROM outbox WHERE id = ? AND state = 'leased' AND lease_owner = ?",
            )
            .bind(id)
            .bind(owner)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?
            .rows_affected() as usize;
        }
    }
    if !receipts.is_empty() {
        let rows: Vec<serde_json::Value> = receipts
            .iter()
            .map(|r| {
                serde_json::json!([
                    r.org,
                    r.queue,
                    receipt_kind(r.kind),
                    r.study_uid,
                    r.sop_instance_uid,
                    r.sha256,
                    r.size as i64,
                    r.delivered_ms,
                    r.verified,
                    r.detail
                ])
            })
            .collect();
        // In the array's order, so receipt ids keep the order they were given in.
        sqlx::query(
            "INSERT INTO receipts (org, queue, kind, study_uid, sop_uid, sha256, size, \
               delivered_ms, verified, detail) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
               value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9 \
             FROM json_each(?) ORDER BY key",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    Ok(n)
}

async fn fail(
    conn: &mut SqliteConnection,
    owner: &str,
    id: i64,
    error: &str,
    retry_at_ms: i64,
    max_attempts: u32,
) -> Result<Option<JobState>> {
    let attempts: Option<i64> = sqlx::query_scalar(
        "SELECT attempts FROM outbox WHERE id = ? AND state = 'leased' AND lease_owner = ?",
    )
    .bind(id)
    .bind(owner)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    let Some(attempts) = attempts else {
        return Ok(None);
    };
    let attempts = attempts + 1;
    let (state, not_before) = if attempts >= i64::from(max_attempts) {
        // Parked: keeps its not-before; only a retry sets a new one.
        (JobState::Parked, None)
    } else {
        (JobState::Ready, Some(retry_at_ms))
    };
    sqlx::query(
        "UPDATE outbox SET attempts = ?, last_error = ?, lease_owner = '', lease_until_ms = 0, \
           state = ?, not_before_ms = coalesce(?, not_before_ms) WHERE id = ?",
    )
    .bind(attempts)
    .bind(error)
    .bind(state.as_str())
    .bind(not_before)
    .bind(id)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(Some(state))
}

async fn release(conn: &mut SqliteConnection, owner: &str) -> Result<usize> {
    let r = sqlx::query(
        "UPDATE outbox SET state = 'ready', lease_owner = '', lease_until_ms = 0 \
         WHERE state = 'leased' AND lease_owner = ?",
    )
    .bind(owner)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(r.rows_affected() as usize)
}

async fn retry(conn: &mut SqliteConnection, id: i64, now_ms: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE outbox SET state = 'ready', attempts = 0, not_before_ms = ? \
         WHERE id = ? AND state <> 'leased'",
    )
    .bind(now_ms)
    .bind(id)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(r.rows_affected() > 0)
}

/// Per (queue, study) aggregates of the candidate pairs (a JSON array of `[queue, study]`), the
/// same quantities [`summarize`](vesalius_store::outbox::summarize) adds up, each floored at 0
/// as its defaults are. `touched` is the newest job creation or delivery.
/// The summaries of the (org, queue, study) triples bound as a JSON array of arrays.
fn transfers_sql() -> String {
    format!(
        "WITH keys(org, queue, study_uid) AS ( \
          SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), \
            json_extract(value, '$[2]') FROM json_each(?)), \
        o AS (SELECT *, {JOB_ORG} AS org FROM outbox), \
        j AS (SELECT o.org, o.queue, o.study_uid, max(o.priority) AS priority, \
            sum(o.state <> 'parked') AS pending, sum(o.state = 'parked') AS parked, \
            max(o.created_ms) AS touched, \
            (SELECT e.last_error FROM o e WHERE e.org = o.org AND e.queue = o.queue \
               AND e.study_uid = o.study_uid AND e.last_error <> '' ORDER BY e.id DESC LIMIT 1) \
              AS last_error \
          FROM o JOIN keys k ON k.org = o.org AND k.queue = o.queue AND k.study_uid = o.study_uid \
          GROUP BY o.org, o.queue, o.study_uid), \
        r AS (SELECT r.org, r.queue, r.study_uid, sum(r.kind = 'instance') AS delivered, \
            sum(CASE WHEN r.kind = 'instance' THEN r.size ELSE 0 END) AS delivered_bytes, \
            sum(r.kind = 'instance' AND r.verified) AS verified, \
            max(CASE WHEN r.kind = 'study' THEN r.delivered_ms END) AS complete_ms, \
            max(r.delivered_ms) AS last_delivered_ms \
          FROM receipts r JOIN keys k \
            ON k.org = r.org AND k.queue = r.queue AND k.study_uid = r.study_uid \
          GROUP BY r.org, r.queue, r.study_uid) \
        SELECT k.org, k.queue, k.study_uid, \
          max(coalesce(j.priority, 0), 0) AS priority, \
          coalesce(j.pending, 0) AS pending, coalesce(j.parked, 0) AS parked, \
          coalesce(r.delivered, 0) AS delivered, \
          coalesce(r.delivered_bytes, 0) AS delivered_bytes, \
          coalesce(r.verified, 0) AS verified, \
          max(coalesce(r.complete_ms, 0), 0) AS complete_ms, \
          max(coalesce(r.last_delivered_ms, 0), 0) AS last_delivered_ms, \
          coalesce(j.last_error, '') AS last_error, \
          max(coalesce(j.touched, 0), coalesce(r.last_delivered_ms, 0), 0) AS touched \
        FROM keys k \
          LEFT JOIN j ON j.org = k.org AND j.queue = k.queue AND j.study_uid = k.study_uid \
          LEFT JOIN r ON r.org = k.org AND r.queue = k.queue AND r.study_uid = k.study_uid \
        WHERE j.queue IS NOT NULL OR r.queue IS NOT NULL"
    )
}

/// One transfer: (organisation, queue, study).
type Triple = (String, String, String);

impl SqliteIndex {
    /// The (org, queue, study) triples that can be among the `limit` most recently active of
    /// `org` (every organisation when `None`): the `limit` newest by job creation and the
    /// `limit` newest by delivery (a triple in the answer is newest by one of the two). Every
    /// triple when `limit` is 0.
    async fn transfer_candidates(&self, org: Option<&str>, limit: usize) -> Result<Vec<Triple>> {
        let triple = |r: &SqliteRow| -> Triple { (r.get(0), r.get(1), r.get(2)) };
        let job_where = if org.is_some() {
            format!(" WHERE {JOB_ORG} = ?1")
        } else {
            String::new()
        };
        let receipt_where = if org.is_some() { " WHERE org = ?1" } else { "" };
        let mut pairs: Vec<Triple> = Vec::new();
        if limit == 0 {
            let sql = format!(
                "SELECT {JOB_ORG}, queue, study_uid FROM outbox{job_where} \
                 UNION SELECT org, queue, study_uid FROM receipts{receipt_where}"
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(org.unwrap_or_default())
                .fetch_all(&self.read)
                .await
                .map_err(db_err)?;
            return Ok(rows.iter().map(triple).collect());
        }
        // The outbox holds pending work only: grouping all of it is cheap.
        let sql = format!(
            "SELECT {JOB_ORG} AS org, queue, study_uid, max(max(created_ms), 0) AS t FROM outbox\
             {job_where} GROUP BY 1, 2, 3 ORDER BY t DESC, queue, study_uid, org LIMIT {}",
            sql_limit(limit)
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(org.unwrap_or_default())
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        pairs.extend(rows.iter().map(triple));
        // Receipts grow without bound: walk `receipts_time_org` (or `receipts_org_time` for one
        // organisation) from the newest and stop at the `limit`-th distinct triple. (Times at or
        // below 0 all count as 0 in the summary and rank by name; if the walk gets there, it
        // reads on to the end to rank them.)
        let mut seen: Vec<Triple> = Vec::new();
        let sql = format!(
            "SELECT org, queue, study_uid, delivered_ms FROM receipts{receipt_where} \
             ORDER BY delivered_ms DESC, queue, study_uid, org"
        );
        let mut rows = sqlx::query(AssertSqlSafe(sql))
            .bind(org.unwrap_or_default())
            .fetch(&self.read);
        while let Some(r) = rows.try_next().await.map_err(db_err)? {
            let t: i64 = r.get(3);
            if seen.len() >= limit && t > 0 {
                break;
            }
            let p = triple(&r);
            if !seen.contains(&p) {
                seen.push(p);
            }
        }
        drop(rows);
        for p in seen {
            if !pairs.contains(&p) {
                pairs.push(p);
            }
        }
        Ok(pairs)
    }
}

#[async_trait]
impl Outbox for SqliteIndex {
    async fn enqueue(&self, jobs: Vec<NewJob>, now_ms: i64) -> Result<Vec<i64>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.send(|tx| WriteOp::Outbox(OutboxOp::Enqueue(jobs, now_ms, tx)))
            .await
    }

    async fn lease(
        &self,
        queue: &str,
        owner: &str,
        max: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<Job>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        // Workers poll every queue; most polls find nothing. Asking the read pool first keeps
        // those off the writer (no write lock, no queueing behind ingest). A job committed
        // after this read is found by the next poll or wake-up.
        let any: Option<i64> =
            sqlx::query_scalar(AssertSqlSafe(format!("{} LIMIT 1", leasable(1))))
                .bind(queue)
                .bind(now_ms)
                .fetch_optional(&self.read)
                .await
                .map_err(db_err)?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        let (queue, owner) = (queue.to_owned(), owner.to_owned());
        self.send(|tx| {
            WriteOp::Outbox(OutboxOp::Lease {
                queue,
                owner,
                max,
                now_ms,
                lease_ms,
                tx,
            })
        })
        .await
    }

    async fn heartbeat(&self, owner: &str, ids: &[i64], lease_until_ms: i64) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let (owner, ids) = (owner.to_owned(), ids.to_vec());
        self.send(|tx| {
            WriteOp::Outbox(OutboxOp::Heartbeat {
                owner,
                ids,
                lease_until_ms,
                tx,
            })
        })
        .await
    }

    async fn complete(&self, owner: &str, ids: &[i64], receipts: Vec<Receipt>) -> Result<usize> {
        if ids.is_empty() && receipts.is_empty() {
            return Ok(0);
        }
        let (owner, ids) = (owner.to_owned(), ids.to_vec());
        self.send(|tx| {
            WriteOp::Outbox(OutboxOp::Complete {
                owner,
                ids,
                receipts,
                tx,
            })
        })
        .await
    }

    async fn fail(
        &self,
        owner: &str,
        id: i64,
        error: &str,
        retry_at_ms: i64,
        max_attempts: u32,
    ) -> Result<Option<JobState>> {
        let (owner, error) = (owner.to_owned(), error.to_owned());
        self.send(|tx| {
            WriteOp::Outbox(OutboxOp::Fail {
                owner,
                id,
                error,
                retry_at_ms,
                max_attempts,
                tx,
            })
        })
        .await
    }

    async fn release(&self, owner: &str) -> Result<usize> {
        let owner = owner.to_owned();
        self.send(|tx| WriteOp::Outbox(OutboxOp::Release(owner, tx)))
            .await
    }

    async fn retry(&self, id: i64, now_ms: i64) -> Result<bool> {
        self.send(|tx| WriteOp::Outbox(OutboxOp::Retry(id, now_ms, tx)))
            .await
    }

    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let mut sql = format!("{JOB} WHERE 1");
        let mut params: Vec<&str> = Vec::new();
        if let Some(o) = &filter.org {
            sql.push_str(&format!(" AND {JOB_ORG} = ?"));
            params.push(o);
        }
        if let Some(q) = &filter.queue {
            sql.push_str(" AND queue = ?");
            params.push(q);
        }
        if let Some(s) = &filter.study_uid {
            sql.push_str(" AND study_uid = ?");
            params.push(s);
        }
        if let Some(s) = filter.state {
            sql.push_str(" AND state = ?");
            params.push(s.as_str());
        }
        sql.push_str(&format!(" ORDER BY id LIMIT {}", sql_limit(filter.limit)));
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for p in params {
            q = q.bind(p);
        }
        let rows = q.fetch_all(&self.read).await.map_err(db_err)?;
        rows.iter().map(job_from_row).collect()
    }

    async fn active_queues(&self) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT DISTINCT queue FROM outbox WHERE state <> 'parked' ORDER BY queue",
        )
        .fetch_all(&self.read)
        .await
        .map_err(db_err)
    }

    async fn receipts(&self, filter: &ReceiptFilter) -> Result<Vec<Receipt>> {
        let mut sql = String::from(
            "SELECT org, queue, kind, study_uid, sop_uid, sha256, size, delivered_ms, verified, \
             detail FROM receipts WHERE 1",
        );
        let mut params: Vec<&str> = Vec::new();
        if let Some(o) = &filter.org {
            sql.push_str(" AND org = ?");
            params.push(o);
        }
        if let Some(q) = &filter.queue {
            sql.push_str(" AND queue = ?");
            params.push(q);
        }
        if let Some(s) = &filter.study_uid {
            sql.push_str(" AND study_uid = ?");
            params.push(s);
        }
        sql.push_str(&format!(
            " ORDER BY id DESC LIMIT {}",
            sql_limit(filter.limit)
        ));
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for p in params {
            q = q.bind(p);
        }
        let rows = q.fetch_all(&self.read).await.map_err(db_err)?;
        rows.iter().map(receipt_from_row).collect()
    }

    async fn transfers(&self, filter: &TransferFilter) -> Result<Vec<TransferSummary>> {
        let limit = filter.limit;
        let pairs = self
            .transfer_candidates(filter.org.as_deref(), limit)
            .await?;
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let keys = serde_json::to_string(&pairs).map_err(|e| Error::Index(e.to_string()))?;
        let rows = sqlx::query(AssertSqlSafe(transfers_sql()))
            .bind(keys)
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        let count = |r: &SqliteRow, c: &str| r.get::<i64, _>(c) as u64;
        let mut out: Vec<(i64, TransferSummary)> = rows
            .iter()
            .map(|r| {
                let s = TransferSummary {
                    org: r.get("org"),
                    queue: r.get("queue"),
                    study_uid: r.get("study_uid"),
                    priority: r.get("priority"),
                    pending: count(r, "pending"),
                    parked: count(r, "parked"),
                    delivered: count(r, "delivered"),
                    delivered_bytes: count(r, "delivered_bytes"),
                    verified: count(r, "verified"),
                    complete_ms: r.get("complete_ms"),
                    last_delivered_ms: r.get("last_delivered_ms"),
                    last_error: r.get("last_error"),
                };
                (r.get::<i64, _>("touched"), s)
            })
            .collect();
        // summarize's order: most recently touched first, then by queue and study.
        out.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| a.1.queue.cmp(&b.1.queue))
                .then_with(|| a.1.study_uid.cmp(&b.1.study_uid))
                .then_with(|| a.1.org.cmp(&b.1.org))
        });
        if limit > 0 {
            out.truncate(limit);
        }
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
