//! [`BatchedAuditLog`]: an [`AuditLog`] that also takes events to write *later*, in batches.
//!
//! Read events (a QIDO query, a WADO or C-MOVE retrieval) are recorded off the response path.
//! Written one commit each, every query cost the index a durable commit (a WAL fsync), and in
//! SQLite's WAL mode every commit makes every other connection drop its page cache, so the next
//! queries read their pages again. This wrapper holds such events for at most `delay` and
//! appends them in one call (one transaction), so a busy read load costs a few commits a second
//! instead of one per request.
//!
//! Contract (on top of [`AuditLog`]'s):
//! - [`AuditLog::append`] is unchanged: durable when it returns (events of data changes do not
//!   come here at all: they are committed with the change itself).
//! - [`BatchedAuditLog::append_later`] returns at once; the events are appended within `delay`
//!   (sooner when [`MAX_PENDING`] are waiting), in the order they were given. They are lost if
//!   the process dies before that: at most `delay` of read events, the same kind of window an
//!   audit record repository fed by syslog has (PS3.15 A.5). Shutdown calls [`Self::flush`].
//! - Every read ([`AuditLog::records`], [`AuditLog::head`], [`AuditLog::search`],
//!   [`AuditLog::checkpoints`]) and [`AuditLog::put_checkpoint`] first appends what is waiting,
//!   so whoever looks at the trail through this process sees every event it was given.
//! - A failed batch append is logged, kept and retried after another `delay` (at most
//!   [`MAX_KEPT`] events are kept; beyond that the oldest are dropped with an error in the log).
//! - `delay` zero appends each event in its own background task, as before batching.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::audit::{AuditEvent, AuditFilter, AuditLog, AuditRecord, Checkpoint};
use crate::error::Result;

/// Waiting events that trigger a batch at once, without waiting for `delay`.
pub const MAX_PENDING: usize = 1024;

/// Most events kept in memory while appends fail.
pub const MAX_KEPT: usize = 65_536;

/// An [`AuditLog`] that can defer events and write them in batches; see the module doc.
pub struct BatchedAuditLog {
    shared: Arc<Shared>,
    /// Wakes the writer task; held apart so the task does not keep [`Shared`] alive.
    wake: Arc<Notify>,
}

struct Shared {
    inner: Arc<dyn AuditLog>,
    delay: Duration,
    pending: Mutex<Pending>,
    /// Serializes batch appends so batches reach the log in the order they were taken.
    writing: tokio::sync::Mutex<()>,
    /// Set when the log is dropped: the writer stops waiting.
    closed: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Pending {
    events: Vec<AuditEvent>,
    /// Whether the writer task runs (started on the first deferred event, inside a runtime).
    started: bool,
}

impl BatchedAuditLog {
    /// Wraps `inner`; deferred events wait at most `delay`.
    pub fn new(inner: Arc<dyn AuditLog>, delay: Duration) -> Self {
        BatchedAuditLog {
            shared: Arc::new(Shared {
                inner,
                delay,
                pending: Mutex::new(Pending::default()),
                writing: tokio::sync::Mutex::new(()),
                closed: false.into(),
            }),
            wake: Arc::new(Notify::new()),
        }
    }

    /// The wrapped log.
    pub fn inner(&self) -> &Arc<dyn AuditLog> {
        &self.shared.inner
    }

    /// Queues `events` to be appended within the delay; never blocks on the database. Must be
    /// called inside a Tokio runtime.
    pub fn append_later(&self, events: Vec<AuditEvent>) {
        if events.is_empty() {
            return;
        }
        if self.shared.delay.is_zero() {
            let inner = self.shared.inner.clone();
            tokio::spawn(async move {
                if let Err(e) = inner.append(events).await {
                    tracing::error!(error = %e, "audit append failed");
                }
            });
            return;
        }
        let start = {
            let mut p = self.shared.pending.lock().expect("audit queue lock");
            p.events.extend(events);
            !std::mem::replace(&mut p.started, true)
        };
        if start {
            tokio::spawn(writer(Arc::downgrade(&self.shared), self.wake.clone()));
        }
        self.wake.notify_one();
    }

    /// Appends every waiting event now (durable when it returns).
    pub async fn flush(&self) -> Result<()> {
        self.shared.flush().await
    }

    /// Number of events waiting (for tests and metrics).
    pub fn pending(&self) -> usize {
        self.shared
            .pending
            .lock()
            .expect("audit queue lock")
            .events
            .len()
    }
}

impl Shared {
    async fn flush(&self) -> Result<()> {
        let _order = self.writing.lock().await;
        let batch = std::mem::take(&mut self.pending.lock().expect("audit queue lock").events);
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len();
        match self.inner.append(batch.clone()).await {
            Ok(()) => {
                tracing::trace!(events = n, "audit batch appended");
                Ok(())
            }
            Err(e) => {
                // Keep them, oldest first, ahead of what arrived meanwhile.
                let mut p = self.pending.lock().expect("audit queue lock");
                let mut kept = batch;
                kept.append(&mut p.events);
                if kept.len() > MAX_KEPT {
                    let dropped = kept.len() - MAX_KEPT;
                    kept.drain(..dropped);
                    tracing::error!(dropped, "audit events dropped: the log keeps failing");
                }
                p.events = kept;
                Err(e)
            }
        }
    }
}

/// The writer task: after each wake-up, waits `delay` (less when the queue fills), appends the
/// batch, and ends when the log is dropped.
async fn writer(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(s) = shared.upgrade() else { return };
        let deadline = tokio::time::Instant::now() + s.delay;
        // Wake-ups while waiting (more events) cut the wait short only when the queue is full.
        loop {
            if s.closed.load(std::sync::atomic::Ordering::Relaxed)
                || s.pending.lock().expect("audit queue lock").events.len() >= MAX_PENDING
            {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = wake.notified() => {}
            }
        }
        if let Err(e) = s.flush().await {
            tracing::error!(error = %e, "audit batch append failed; kept for the next round");
            // Retry after another delay even if nothing else arrives.
            wake.notify_one();
        }
        if s.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
    }
}

impl Drop for BatchedAuditLog {
    /// Appends what is still waiting in a last background task (best effort: the server's
    /// shutdown calls [`BatchedAuditLog::flush`] itself), and lets the writer task end.
    fn drop(&mut self) {
        let shared = self.shared.clone();
        shared
            .closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let waiting = !shared
            .pending
            .lock()
            .map(|p| p.events.is_empty())
            .unwrap_or(true);
        if waiting && let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = shared.flush().await {
                    tracing::error!(error = %e, "audit append at shutdown failed");
                }
            });
        }
        self.wake.notify_one();
    }
}

#[async_trait]
impl AuditLog for BatchedAuditLog {
    async fn append(&self, events: Vec<AuditEvent>) -> Result<()> {
        self.shared.inner.append(events).await
    }

    async fn records(&self, from: u64, limit: u32) -> Result<Vec<AuditRecord>> {
        self.flush().await?;
        self.shared.inner.records(from, limit).await
    }

    async fn head(&self) -> Result<Option<AuditRecord>> {
        self.flush().await?;
        self.shared.inner.head().await
    }

    async fn search(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
        self.flush().await?;
        self.shared.inner.search(filter).await
    }

    async fn put_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
        self.flush().await?;
        self.shared.inner.put_checkpoint(checkpoint).await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.flush().await?;
        self.shared.inner.checkpoints().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, ActorKind, Outcome};
    use crate::memory_directory::MemoryAuditLog;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn event(n: i64) -> AuditEvent {
        AuditEvent {
            time_ms: n,
            actor: Actor {
                kind: ActorKind::User,
                id: "u1".into(),
                name: "alice".into(),
                org: "o".into(),
                role: "clinician".into(),
            },
            action: "query".into(),
            outcome: Outcome::Success,
            org: "o".into(),
            patient: None,
            study_uid: None,
            source: String::new(),
            user_agent: String::new(),
            details: serde_json::json!({}),
        }
    }

    /// Counts append calls, and fails them while `fail` is set.
    struct Counting {
        log: MemoryAuditLog,
        calls: AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl AuditLog for Counting {
        async fn append(&self, events: Vec<AuditEvent>) -> Result<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(crate::error::Error::Unavailable("down".into()));
            }
            self.log.append(events).await
        }
        async fn records(&self, from: u64, limit: u32) -> Result<Vec<AuditRecord>> {
            self.log.records(from, limit).await
        }
        async fn head(&self) -> Result<Option<AuditRecord>> {
            self.log.head().await
        }
        async fn search(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
            self.log.search(f).await
        }
        async fn put_checkpoint(&self, c: Checkpoint) -> Result<()> {
            self.log.put_checkpoint(c).await
        }
        async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
            self.log.checkpoints().await
        }
    }

    fn counting() -> Arc<Counting> {
        Arc::new(Counting {
            log: MemoryAuditLog::default(),
            calls: AtomicUsize::new(0),
            fail: false.into(),
        })
    }

    async fn times(log: &Counting) -> Vec<i64> {
        let recs = log.log.records(1, 10_000).await.unwrap();
        recs.into_iter().map(|r| r.event.time_ms).collect()
    }

    /// Polls `cond` every 5 ms for up to 10 s.
    async fn eventually(mut cond: impl AsyncFnMut() -> bool) -> bool {
        for _ in 0..2000 {
            if cond().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    #[tokio::test]
    async fn deferred_events_are_written_in_one_batch_after_the_delay() {
        let inner = counting();
        let log = BatchedAuditLog::new(inner.clone(), Duration::from_secs(2));
        for n in 0..50 {
            log.append_later(vec![event(n)]);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            inner.calls.load(Ordering::SeqCst),
            0,
            "nothing before the delay"
        );
        assert_eq!(log.pending(), 50);
        assert!(eventually(async || log.pending() == 0).await);
        assert_eq!(
            inner.calls.load(Ordering::SeqCst),
            1,
            "one append for the batch"
        );
        assert_eq!(times(&inner).await, (0..50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_full_queue_is_written_without_waiting() {
        let inner = counting();
        let log = BatchedAuditLog::new(inner.clone(), Duration::from_secs(3600));
        log.append_later((0..MAX_PENDING as i64).map(event).collect());
        assert!(eventually(async || inner.calls.load(Ordering::SeqCst) == 1).await);
        assert_eq!(times(&inner).await.len(), MAX_PENDING);
    }

    #[tokio::test]
    async fn reads_through_the_wrapper_see_waiting_events() {
        let inner = counting();
        let log = BatchedAuditLog::new(inner.clone(), Duration::from_secs(3600));
        log.append_later(vec![event(1), event(2)]);
        let found = log.search(&AuditFilter::default()).await.unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(log.head().await.unwrap().unwrap().seq, 2);
        // A durable append keeps its own semantics.
        log.append(vec![event(3)]).await.unwrap();
        assert_eq!(times(&inner).await, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn a_failed_batch_is_kept_and_retried_in_order() {
        let inner = counting();
        let log = BatchedAuditLog::new(inner.clone(), Duration::from_millis(10));
        inner.fail.store(true, Ordering::SeqCst);
        log.append_later(vec![event(1)]);
        assert!(eventually(async || inner.calls.load(Ordering::SeqCst) >= 1).await);
        assert!(log.pending() >= 1, "kept after the failure");
        log.append_later(vec![event(2)]);
        inner.fail.store(false, Ordering::SeqCst);
        // Retried by the writer itself, without another event or a flush.
        assert!(eventually(async || log.pending() == 0).await);
        assert_eq!(times(&inner).await, vec![1, 2]);
    }

    #[tokio::test]
    async fn flush_writes_at_once_and_zero_delay_writes_each() {
        let inner = counting();
        let log = BatchedAuditLog::new(inner.clone(), Duration::from_secs(3600));
        log.append_later(vec![event(1)]);
        log.flush().await.unwrap();
        assert_eq!(times(&inner).await, vec![1]);

        let inner = counting();
        let log = BatchedAuditLog::new(inner.clone(), Duration::ZERO);
        log.append_later(vec![event(1)]);
        log.append_later(vec![event(2)]);
        assert!(eventually(async || inner.calls.load(Ordering::SeqCst) == 2).await);
        assert_eq!(log.pending(), 0);
    }

    #[tokio::test]
    async fn dropping_the_log_appends_what_waits() {
        let inner = counting();
        let log = BatchedAuditLog::new(inner.clone(), Duration::from_secs(3600));
        log.append_later(vec![event(7)]);
        drop(log);
        assert!(eventually(async || inner.calls.load(Ordering::SeqCst) == 1).await);
        assert_eq!(times(&inner).await, vec![7]);
    }
}
