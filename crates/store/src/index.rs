//! [`Index`]: the database of patients, studies, series and instances.
//!
//! Contract:
//! - [`Index::commit`] writes one instance row, its precomputed metadata and frame offsets, and
//!   the observers' side records in **one transaction** with full durability, and returns only
//!   after it is durable. Implementations batch concurrent commits into shared transactions
//!   (group commit) so durability does not cost one sync per instance.
//! - An instance row always refers to a blob that was durable before the commit began.
//! - Rejected instances (IOCM) and prior versions are invisible to `find`, `instances` and
//!   `metadata`; prior versions are listed by `prior_versions`.

use async_trait::async_trait;

use crate::error::Result;
use crate::model::{FrameIndex, IngestCommit, IngestOutcome, PriorVersion, StoredInstance};
use crate::query::{Answer, Query, Scope};

/// Counts of what the index holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Studies.
    pub studies: u64,
    /// Series.
    pub series: u64,
    /// Current instances.
    pub instances: u64,
    /// Bytes of current instances.
    pub bytes: u64,
}

/// One blob the index refers to (current, prior or rejected instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedBlob {
    /// Blob key.
    pub key: String,
    /// Expected size.
    pub size: u64,
    /// Expected SHA-256 (hex).
    pub sha256: String,
}

/// The metadata of one instance: which instance, and its DICOM JSON (relative BulkDataURIs).
#[derive(Debug, Clone)]
pub struct InstanceMetadata {
    /// The instance.
    pub instance: StoredInstance,
    /// DICOM JSON object text.
    pub json: String,
}

/// Makes the audit events of a deletion from what it removed (see [`Index::delete_audited`]).
pub type DeleteAudit =
    Box<dyn FnOnce(&[StoredInstance]) -> Vec<crate::audit::AuditEvent> + Send + 'static>;

/// The archive's index.
#[async_trait]
pub trait Index: Send + Sync + 'static {
    /// Commits an ingested instance durably (group-committed with concurrent callers).
    async fn commit(&self, commit: IngestCommit) -> Result<IngestOutcome>;

    /// [`Index::commit`] that may return before the commit is durable, for a caller that keeps
    /// what it needs to redo it (the ingest journal, [`crate::journal`]); the commit is durable
    /// after the next [`Index::sync`]. Visible to reads when it returns, like `commit`. The
    /// default commits durably.
    async fn commit_unsynced(&self, commit: IngestCommit) -> Result<IngestOutcome> {
        self.commit(commit).await
    }

    /// Makes every commit that has returned durable (after [`Index::commit_unsynced`]).
    async fn sync(&self) -> Result<()> {
        Ok(())
    }

    /// Runs a query; answers are DICOM JSON objects of the requested level.
    async fn find(&self, query: &Query) -> Result<Vec<Answer>>;

    /// Current instances in scope, ordered by series then instance number.
    async fn instances(&self, scope: &Scope) -> Result<Vec<StoredInstance>>;

    /// Precomputed metadata of current instances in scope, in `instances` order.
    async fn metadata(&self, scope: &Scope) -> Result<Vec<InstanceMetadata>>;

    /// Frame locations of one current instance.
    async fn frames(&self, scope: &Scope) -> Result<Option<(StoredInstance, FrameIndex)>>;

    /// Deletes everything in scope (current, prior and rejected versions) and returns what was
    /// removed, so the caller deletes the blobs *after* the commit.
    async fn delete(&self, scope: &Scope) -> Result<Vec<StoredInstance>>;

    /// [`Index::delete`] that also appends the audit events `audit` makes of what was removed,
    /// in the **same transaction** (issue 4: events of a data change commit with the change),
    /// when the index holds the audit trail too. Nothing removed: no events. The default, for
    /// indexes that keep no audit trail, refuses (`Unavailable`) rather than drop the events.
    async fn delete_audited(
        &self,
        scope: &Scope,
        audit: DeleteAudit,
    ) -> Result<Vec<StoredInstance>> {
        let _ = (scope, audit);
        Err(crate::Error::Unavailable(
            "this index keeps no audit trail: use delete and append the events".into(),
        ))
    }

    /// Prior versions of instances in scope.
    async fn prior_versions(&self, scope: &Scope) -> Result<Vec<PriorVersion>>;

    /// Every blob the index refers to.
    async fn blobs(&self) -> Result<Vec<IndexedBlob>>;

    /// Counts.
    async fn stats(&self) -> Result<IndexStats>;

    /// A cheap check that the index answers (readiness probes).
    async fn ping(&self) -> Result<()> {
        self.stats().await.map(|_| ())
    }
}
