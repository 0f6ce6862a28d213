//! SQLite [`Index`], [`Directory`](vesalius_store::Directory),
//! [`AuditLog`](vesalius_store::AuditLog), [`Outbox`](vesalius_store::Outbox) and
//! [`Registry`](vesalius_store::Registry) for the embedded deployment: one [`SqliteIndex`] over
//! one database file, so the binary hands the same `Arc<SqliteIndex>` out as all five, a change
//! commits in one transaction with the audit events recording it, and an instance commits with
//! the outbox jobs that route it.
//!
//! ## Durability and group commit
//! - The database runs in WAL mode with `synchronous=FULL`: a transaction is durable when
//!   `COMMIT` returns (the WAL is fsync'd at every commit; NORMAL would only sync at checkpoints
//!   and could lose the last acknowledged instances on power loss).
//! - All writes (ingest commits, deletions, directory and registry changes, audit appends,
//!   checkpoints, throttle counts, every outbox change including leases) go through **one writer
//!   task** owning one connection (`write.rs`). It takes every request waiting in its queue (up
//!   to [`MAX_BATCH`]), applies each inside its own SAVEPOINT (one bad request does not fail the
//!   others), and commits them in one transaction: concurrent requests share one WAL fsync
//!   (group commit). Each caller is answered only after that commit.
//! - The audit chain is extended only by that writer, inside its transaction (`audit.rs`), so
//!   `seq` has no gaps and every record links to the one before.
//! - The ingest journal (`vesalius_store::journal`) commits instances with
//!   [`Index::commit_unsynced`]: a batch made only of those commits with `synchronous=NORMAL`
//!   (no WAL fsync; the journal file is the durable redo record until then), and
//!   [`Index::sync`] commits a one-row write (`sync_marks`) with `synchronous=FULL`, whose WAL
//!   fsync makes every earlier frame durable. Outbox workers' progress (leases, heartbeats,
//!   completions, failures) commits the same way when batched alone or with such commits
//!   (`outbox.rs`, "Crash behaviour": losing it only repeats safe work).
//! - Reads use a separate pool of connections, which WAL lets run beside the writer.
//! - The writer moves [`Outbox::changes`](vesalius_store::Outbox::changes) only after a commit
//!   that added outbox jobs or made some ready, before answering its callers (`outbox.rs`).
//!
//! ## Layout
//! `schema.sql`: patients, studies, series, instances (status 0 current, 1 prior version,
//! 2 rejected); the outbox and its receipts; the directory (orgs, users, api_tokens, sessions,
//! grants, ae_titles, share_links, upload_links, settings, throttle); the registry (peers,
//! dicom_nodes, routes, arrivals); the audit trail (audit, audit_checkpoints).
//! Level rows keep the attributes QIDO answers with (`attrs`, DICOM JSON) and counters maintained
//! by the writer; instance rows keep the WADO-RS metadata and frame offsets, so no read ever
//! parses a blob. The schema version is `PRAGMA user_version`, migrated at open (`schema.rs`).
//!
//! ## Crash behaviour
//! A crash loses only transactions whose `COMMIT` had not returned, and none of those were
//! acknowledged. SQLite's WAL recovery runs at the next open. An interrupted migration rolls
//! back whole and runs again at the next open.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod alerts;
mod audit;
mod directory;
mod outbox;
mod query;
mod registry;
mod schema;
mod write;

pub use schema::SCHEMA_VERSION;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row};
use tokio::sync::{mpsc, oneshot, watch};
use vesalius_store::error::{Error, Result};
use vesalius_store::index::{Index, IndexStats, IndexedBlob, InstanceMetadata};
use vesalius_store::model::*;
use vesalius_store::query::{Answer, Query, Scope};
use write::WriteOp;

/// The most requests committed in one transaction.
pub const MAX_BATCH: usize = 512;

pub(crate) fn db_err(e: sqlx::Error) -> Error {
    Error::Index(e.to_string())
}

/// The SQLite index.
pub struct SqliteIndex {
    writer: mpsc::Sender<WriteOp>,
    read: SqlitePool,
    /// The outbox's change counter, moved by the writer task after commits that add jobs or
    /// make them ready.
    changes: watch::Sender<u64>,
}

impl SqliteIndex {
    /// Opens (creating if needed) the index database at `path` and starts its writer task.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .map_err(db_err)?
            .filename(path)
            .create_if_missing(true)
            // WAL: readers never block the writer, and a commit is one sequential append.
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: the WAL is fsync'd at every commit (the durability contract).
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            // Bigger page cache for the 1M-instance query targets (value in KiB when negative).
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory");
        let mut conn = opts.connect().await.map_err(db_err)?;
        schema::migrate(&mut conn).await?;
        // Planner statistics: without them SQLite may walk the date index for a date range plus
        // modality query over a million rows instead of narrowing first. `optimize` analyses
        // only tables whose statistics are missing or stale, and `analysis_limit` bounds the
        // work, so start-up stays fast on any index size. The writer repeats it periodically.
        sqlx::raw_sql("PRAGMA analysis_limit = 2000; PRAGMA optimize = 0x10002;")
            .execute(&mut conn)
            .await
            .map_err(db_err)?;
        let read = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(opts.clone().pragma("query_only", "true"))
            .await
            .map_err(db_err)?;
        let (tx, rx) = mpsc::channel(4096);
        let changes = watch::channel(0).0;
        tokio::spawn(write::writer_task(conn, rx, changes.clone()));
        Ok(SqliteIndex {
            writer: tx,
            read,
            changes,
        })
    }

    async fn send<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> WriteOp) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(make(tx))
            .await
            .map_err(|_| Error::Unavailable("index writer stopped".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("index writer stopped".into()))?
    }

    /// The read pool (for tools and benchmarks that fill the index in bulk).
    pub fn read_pool(&self) -> &SqlitePool {
        &self.read
    }
}

pub(crate) fn stored_from_row(r: &SqliteRow) -> StoredInstance {
    StoredInstance {
        org: r.get("org"),
        study_uid: r.get("study_uid"),
        series_uid: r.get("series_uid"),
        sop_class_uid: r.get("sop_class"),
        sop_instance_uid: r.get("sop_uid"),
        transfer_syntax: r.get("ts"),
        blob_key: r.get("blob_key"),
        size: r.get::<i64, _>("size") as u64,
        sha256: r.get("sha256"),
        number: r.get("number"),
    }
}

#[async_trait]
impl Index for SqliteIndex {
    async fn commit(&self, commit: IngestCommit) -> Result<IngestOutcome> {
        self.send(|tx| WriteOp::Commit(Box::new(commit), true, tx))
            .await
    }

    async fn commit_unsynced(&self, commit: IngestCommit) -> Result<IngestOutcome> {
        self.send(|tx| WriteOp::Commit(Box::new(commit), false, tx))
            .await
    }

    async fn sync(&self) -> Result<()> {
        self.send(WriteOp::Sync).await
    }

    async fn find(&self, q: &Query) -> Result<Vec<Answer>> {
        query::find(&self.read, q).await
    }

    async fn instances(&self, scope: &Scope) -> Result<Vec<StoredInstance>> {
        let rows = query::scoped(&self.read, scope, "", query::CURRENT).await?;
        Ok(rows.iter().map(stored_from_row).collect())
    }

    async fn metadata(&self, scope: &Scope) -> Result<Vec<InstanceMetadata>> {
        let rows = query::scoped(&self.read, scope, ", i.metadata", query::CURRENT).await?;
        Ok(rows
            .iter()
            .map(|r| InstanceMetadata {
                instance: stored_from_row(r),
                json: r.get("metadata"),
            })
            .collect())
    }

    async fn frames(&self, scope: &Scope) -> Result<Option<(StoredInstance, FrameIndex)>> {
        let rows = query::scoped(&self.read, scope, ", i.frames", query::CURRENT).await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let frames: FrameIndex = serde_json::from_str(r.get::<&str, _>("frames"))
            .map_err(|e| Error::Index(format!("frame index: {e}")))?;
        Ok(Some((stored_from_row(r), frames)))
    }

    async fn delete(&self, scope: &Scope) -> Result<Vec<StoredInstance>> {
        if scope.is_unbounded() {
            return Err(Error::BadRequest(
                "refusing to delete without a scope".into(),
            ));
        }
        self.send(|tx| WriteOp::Delete(scope.clone(), None, tx))
            .await
    }

    async fn delete_audited(
        &self,
        scope: &Scope,
        audit: vesalius_store::index::DeleteAudit,
    ) -> Result<Vec<StoredInstance>> {
        if scope.is_unbounded() {
            return Err(Error::BadRequest(
                "refusing to delete without a scope".into(),
            ));
        }
        self.send(|tx| WriteOp::Delete(scope.clone(), Some(audit), tx))
            .await
    }

    async fn prior_versions(&self, scope: &Scope) -> Result<Vec<PriorVersion>> {
        let rows = query::scoped(&self.read, scope, ", i.superseded_ms", query::PRIOR).await?;
        Ok(rows
            .iter()
            .map(|r| PriorVersion {
                instance: stored_from_row(r),
                superseded_ms: r.get("superseded_ms"),
            })
            .collect())
    }

    async fn blobs(&self) -> Result<Vec<IndexedBlob>> {
        let rows = sqlx::query("SELECT blob_key, size, sha256 FROM instances")
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| IndexedBlob {
                key: r.get("blob_key"),
                size: r.get::<i64, _>("size") as u64,
                sha256: r.get("sha256"),
            })
            .collect())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn stats(&self) -> Result<IndexStats> {
        let r = sqlx::query(
            "SELECT (SELECT count(*) FROM studies WHERE num_instances > 0) AS studies, \
                    (SELECT count(*) FROM series WHERE num_instances > 0) AS series, \
                    (SELECT count(*) FROM instances WHERE status = 0) AS instances, \
                    (SELECT coalesce(sum(size), 0) FROM instances WHERE status = 0) AS bytes",
        )
        .fetch_one(&self.read)
        .await
        .map_err(db_err)?;
        Ok(IndexStats {
            studies: r.get::<i64, _>("studies") as u64,
            series: r.get::<i64, _>("series") as u64,
            instances: r.get::<i64, _>("instances") as u64,
            bytes: r.get::<i64, _>("bytes") as u64,
        })
    }
}

#[cfg(test)]
mod tests;
