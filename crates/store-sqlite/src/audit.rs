//! The audit trail in SQLite: [`AuditLog`] for [`SqliteIndex`], and the chain the writer task
//! extends.
//!
//! ## Invariants
//! - Only the writer task appends (ingest side records,
//!   [`Directory::apply`](vesalius_store::Directory::apply), [`AuditLog::append`]), inside its
//!   `BEGIN IMMEDIATE` transaction, so appends are serialised even across processes.
//! - The writer reads the head `(seq, hash)` once per transaction, at the first append, and keeps
//!   it in [`Chain`] while the transaction lasts; a request rolled back to its savepoint restores
//!   the head it started from. Reading the head per transaction (one rowid seek) instead of once
//!   at start-up keeps the chain linear even when another process (`vesalius admin` on the same
//!   data directory) appended in between.
//! - The `audit_linear` trigger refuses any record that is not `max(seq) + 1` or does not carry
//!   its predecessor's hash, and the `audit_no_*` triggers refuse updates and deletes.
//! - `event` holds [`canonical_json`], the exact text the hash covers; the other columns copy its
//!   fields for the search indexes.
//!
//! ## Crash behaviour
//! An event is durable when the transaction holding it commits, together with the change it
//! records; a crash before that loses both. The chain never has a gap: a rolled-back seq is
//! reused by the next append.

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Row, SqlitePool};
use vesalius_store::audit::{
    AuditEvent, AuditFilter, AuditLog, AuditRecord, Checkpoint, GENESIS_HASH, canonical_json,
    chain_hash,
};
use vesalius_store::error::{Error, Result};

use crate::write::WriteOp;
use crate::{SqliteIndex, db_err};

/// The head of the chain as the writer's current transaction sees it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Chain {
    /// `(seq, hash)` of the last record, once read in this transaction.
    head: Option<(u64, String)>,
}

fn kebab<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

async fn read_head(conn: &mut SqliteConnection) -> Result<(u64, String)> {
    let row = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    Ok(match row {
        Some(r) => (r.get::<i64, _>("seq") as u64, r.get("hash")),
        None => (0, GENESIS_HASH.to_owned()),
    })
}

impl Chain {
    /// Appends `events` after the head, inside the writer's transaction.
    pub(crate) async fn append(
        &mut self,
        conn: &mut SqliteConnection,
        events: &[AuditEvent],
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let (mut seq, mut prev) = match self.head.take() {
            Some(h) => h,
            None => read_head(conn).await?,
        };
        for e in events {
            let hash = chain_hash(seq + 1, &prev, e);
            let (issuer, patient_id) = e.patient.clone().unzip();
            sqlx::query(
                "INSERT INTO audit (seq, prev_hash, hash, time_ms, action, outcome, actor_kind, \
                   actor_id, actor_org, org, patient_issuer, patient_id, study_uid, event) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind((seq + 1) as i64)
            .bind(&prev)
            .bind(&hash)
            .bind(e.time_ms)
            .bind(&e.action)
            .bind(kebab(&e.outcome))
            .bind(kebab(&e.actor.kind))
            .bind(&e.actor.id)
            .bind(&e.actor.org)
            .bind(&e.org)
            .bind(issuer)
            .bind(patient_id)
            .bind(&e.study_uid)
            .bind(canonical_json(e))
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
            seq += 1;
            prev = hash;
        }
        self.head = Some((seq, prev));
        Ok(())
    }

    /// Stores a checkpoint after checking it against the chain.
    pub(crate) async fn put_checkpoint(
        &mut self,
        conn: &mut SqliteConnection,
        c: &Checkpoint,
    ) -> Result<()> {
        let expected: String = if c.seq == 0 {
            GENESIS_HASH.to_owned()
        } else {
            sqlx::query_scalar("SELECT hash FROM audit WHERE seq = ?")
                .bind(c.seq as i64)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_err)?
                .ok_or_else(|| Error::NotFound(format!("audit record {}", c.seq)))?
        };
        if expected != c.hash {
            return Err(Error::BadRequest(format!(
                "checkpoint hash differs from audit record {}",
                c.seq
            )));
        }
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, hash, time_ms, alg, key_id, signature) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(c.seq as i64)
        .bind(&c.hash)
        .bind(c.time_ms)
        .bind(&c.alg)
        .bind(&c.key_id)
        .bind(&c.signature)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}

fn record_from_row(r: &SqliteRow) -> Result<AuditRecord> {
    let seq = r.get::<i64, _>("seq") as u64;
    let event = serde_json::from_str(r.get::<&str, _>("event"))
        .map_err(|e| Error::Index(format!("audit record {seq}: {e}")))?;
    Ok(AuditRecord {
        seq,
        prev_hash: r.get("prev_hash"),
        hash: r.get("hash"),
        event,
    })
}

fn records_from_rows(rows: &[SqliteRow]) -> Result<Vec<AuditRecord>> {
    rows.iter().map(record_from_row).collect()
}

/// `u64` to an SQLite integer, saturating (seqs never get near `i64::MAX`).
fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn search(pool: &SqlitePool, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
    let mut sql = String::from("SELECT seq, prev_hash, hash, event FROM audit WHERE 1 = 1");
    let mut equal: Vec<(&str, &str)> = [
        ("org", &f.org),
        ("actor_org", &f.actor_org),
        ("actor_id", &f.actor_id),
        ("action", &f.action),
        ("study_uid", &f.study_uid),
    ]
    .into_iter()
    .filter_map(|(column, v)| Some((column, v.as_deref()?)))
    .collect();
    if let Some((issuer, id)) = &f.patient {
        equal.push(("patient_id", id));
        equal.push(("patient_issuer", issuer));
    }
    for (column, _) in &equal {
        sql.push_str(&format!(" AND {column} = ?"));
    }
    if f.since_ms.is_some() {
        sql.push_str(" AND time_ms >= ?");
    }
    if f.until_ms.is_some() {
        sql.push_str(" AND time_ms < ?");
    }
    if f.before_seq.is_some() {
        sql.push_str(" AND seq < ?");
    }
    // Written, not bound (see `crate::outbox::sql_limit`).
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT {}", f.effective_limit()));
    let mut q = sqlx::query(AssertSqlSafe(sql.as_str()));
    for (_, v) in equal {
        q = q.bind(v);
    }
    for t in [f.since_ms, f.until_ms].into_iter().flatten() {
        q = q.bind(t);
    }
    if let Some(b) = f.before_seq {
        q = q.bind(sql_int(b));
    }
    let rows = q.fetch_all(pool).await.map_err(db_err)?;
    records_from_rows(&rows)
}

#[async_trait]
impl AuditLog for SqliteIndex {
    async fn append(&self, events: Vec<AuditEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.send(|tx| WriteOp::Append(events, tx)).await
    }

    async fn records(&self, from: u64, limit: u32) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT seq, prev_hash, hash, event FROM audit WHERE seq >= ? AND seq < ? ORDER BY seq",
        )
        .bind(sql_int(from))
        .bind(sql_int(from.saturating_add(u64::from(limit))))
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        records_from_rows(&rows)
    }

    async fn head(&self) -> Result<Option<AuditRecord>> {
        let row =
            sqlx::query("SELECT seq, prev_hash, hash, event FROM audit ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&self.read)
                .await
                .map_err(db_err)?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn search(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        search(&self.read, filter).await
    }

    async fn put_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
        self.send(|tx| WriteOp::Checkpoint(checkpoint, tx)).await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let rows = sqlx::query(
            "SELECT seq, hash, time_ms, alg, key_id, signature FROM audit_checkpoints \
             ORDER BY seq, id",
        )
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| Checkpoint {
                seq: r.get::<i64, _>("seq") as u64,
                hash: r.get("hash"),
                time_ms: r.get("time_ms"),
                alg: r.get("alg"),
                key_id: r.get("key_id"),
                signature: r.get("signature"),
            })
            .collect())
    }
}
