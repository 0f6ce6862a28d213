//! [`Outbox`]: the durable queue of transfers and jobs (DESIGN.md vocabulary).
//!
//! ## Invariants
//! - A job exists before its work starts: routing jobs are committed **in the ingest transaction**
//!   of the instance that caused them ([`crate::model::SideRecord::Outbox`]), other jobs by
//!   [`Outbox::enqueue`]. A job is removed only by [`Outbox::complete`], which the worker calls
//!   after the receiver confirmed; the delivery's [`Receipt`]s are written in the same step.
//! - A job is visible to exactly one worker while its lease is fresh. [`Outbox::lease`] hands out
//!   `Ready` jobs whose `not_before_ms` has passed and `Leased` jobs whose lease has expired (their
//!   worker died or hung), highest `priority` first, then oldest (`id`) first, and sets the owner
//!   and lease expiry in one atomic step.
//! - Only the current lease holder changes a leased job: [`Outbox::heartbeat`],
//!   [`Outbox::complete`] and [`Outbox::fail`] by an owner whose lease was taken over change
//!   nothing and say so (a count of 0, or `None`), so a stale worker cannot undo another's work.
//! - [`Outbox::fail`] counts the attempt; after `max_attempts` the job is `Parked` with its last
//!   error visible and is not leased again until [`Outbox::retry`]. Otherwise it is `Ready` again
//!   at `retry_at_ms` (the worker computes capped exponential backoff with jitter).
//! - [`Outbox::release`] (graceful shutdown) puts an owner's leased jobs back to `Ready` without
//!   counting an attempt.
//! - A job with a `dedupe_key` is not added again while a job with the same queue and key is
//!   still in the outbox (pending or parked).
//!
//! ## Crash behaviour
//! A worker that dies leaves its jobs `Leased`; they are handed out again when the lease expires,
//! so every job is delivered **at least once**. Receivers make redelivery harmless: the same SOP
//! Instance with the same bytes is a no-op success (DESIGN.md), and exchange transfers ask the
//! receiver what it already has before sending (manifests).
//!
//! ## Signalling
//! [`Outbox::changes`] is a counter that moves when jobs were added or became ready; workers wait
//! on it with a poll interval as the fallback, so a node that shares the database with others
//! still finds their jobs (PostgreSQL will back it with `LISTEN/NOTIFY`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::Result;

/// A job to add: what to do, on which queue, with what priority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewJob {
    /// Job kind, e.g. `transfer`.
    pub kind: String,
    /// Queue: one per destination (`peer:hub`, `node:PACS`), so each gets its own workers,
    /// concurrency and order.
    pub queue: String,
    /// The study the job belongs to ("" when none): transfers are summarised per study.
    pub study_uid: String,
    /// JSON payload, read by the worker of `kind`.
    pub payload: String,
    /// Higher first (stroke priority is higher than routine).
    pub priority: i32,
    /// Not handed out before this time, ms since the Unix epoch (0: at once).
    pub not_before_ms: i64,
    /// Optional de-duplication key within the queue.
    pub dedupe_key: Option<String>,
}

impl NewJob {
    /// The organisation the job belongs to, see [`payload_org`].
    pub fn org(&self) -> String {
        payload_org(&self.payload)
    }
}

/// The organisation a job belongs to: the `org` field of its JSON payload (transfer, retrieval
/// and prefetch payloads name the sending organisation, the one whose route or request made
/// the job), "" when the payload has none. Every backend filters by this same rule
/// ([`JobFilter::org`]).
pub fn payload_org(payload: &str) -> String {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("org").and_then(|o| o.as_str()).map(str::to_owned))
        .unwrap_or_default()
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Waiting for a worker (possibly until `not_before_ms`).
    Ready,
    /// Held by a worker until `lease_until_ms`.
    Leased,
    /// Given up after too many attempts; waits for an administrator's retry.
    Parked,
}

impl JobState {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Ready => "ready",
            JobState::Leased => "leased",
            JobState::Parked => "parked",
        }
    }

    /// Parses the kebab-case name.
    pub fn parse(s: &str) -> Option<JobState> {
        [JobState::Ready, JobState::Leased, JobState::Parked]
            .into_iter()
            .find(|j| j.as_str() == s)
    }
}

/// A job in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Id, increasing in insertion order.
    pub id: i64,
    /// What was asked.
    #[serde(flatten)]
    pub job: NewJob,
    /// Where it stands.
    pub state: JobState,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The worker holding the lease ("" when none).
    pub lease_owner: String,
    /// Lease expiry, ms (0 when not leased).
    pub lease_until_ms: i64,
    /// The last failure, "" when none.
    pub last_error: String,
    /// Creation time, ms.
    pub created_ms: i64,
}

/// What a receipt confirms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReceiptKind {
    /// One instance delivered (and its hash verified by the receiver when `verified`).
    Instance,
    /// A study's manifest satisfied at the receiver: the study is complete there.
    Study,
}

/// Proof of one delivery, kept for the sender (API, `vesalius transfers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The organisation whose transfer it is: the delivered job's ([`NewJob::org`]). "" for
    /// receipts written before schema 6 whose study no single organisation held.
    #[serde(default)]
    pub org: String,
    /// The destination queue (`peer:hub`, `node:PACS`).
    pub queue: String,
    /// Instance or study.
    pub kind: ReceiptKind,
    /// Study Instance UID.
    pub study_uid: String,
    /// SOP Instance UID ("" for a study receipt).
    pub sop_instance_uid: String,
    /// SHA-256 hex of what was delivered ("" for a study receipt).
    pub sha256: String,
    /// Bytes delivered (instances of the manifest for a study receipt).
    pub size: u64,
    /// When, ms.
    pub delivered_ms: i64,
    /// The receiver confirmed the hash (a peer's signed manifest answer), rather than only
    /// answering success (a DICOM node's C-STORE status).
    pub verified: bool,
    /// Free text: the receiver's answer, e.g. "C-STORE 0x0000" or "manifest 300/300".
    pub detail: String,
}

impl Receipt {
    /// The receipt of `org`'s whole study at `queue`: `size` instances, delivered at
    /// `delivered_ms`.
    pub fn study(
        org: &str,
        queue: &str,
        study_uid: &str,
        size: u64,
        delivered_ms: i64,
        verified: bool,
        detail: String,
    ) -> Receipt {
        Receipt {
            org: org.to_owned(),
            queue: queue.to_owned(),
            kind: ReceiptKind::Study,
            study_uid: study_uid.to_owned(),
            sop_instance_uid: String::new(),
            sha256: String::new(),
            size,
            delivered_ms,
            verified,
            detail,
        }
    }
}

/// Which jobs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs of this organisation ([`NewJob::org`]).
    pub org: Option<String>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this study.
    pub study_uid: Option<String>,
    /// Only in this state.
    pub state: Option<JobState>,
    /// At most this many (0: no limit), by id.
    pub limit: usize,
}

/// Which receipts to list (newest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptFilter {
    /// Only receipts of this organisation.
    pub org: Option<String>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this study.
    pub study_uid: Option<String>,
    /// At most this many (0: no limit).
    pub limit: usize,
}

/// Which transfer summaries to list (the most recently active first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferFilter {
    /// Only transfers of this organisation.
    pub org: Option<String>,
    /// At most this many (0: no limit).
    pub limit: usize,
}

impl TransferFilter {
    /// Every organisation's transfers, at most `limit` (0: all).
    pub fn limit(limit: usize) -> Self {
        TransferFilter { org: None, limit }
    }
}

/// One organisation's transfer of one study to one destination, summarised from its jobs and
/// receipts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferSummary {
    /// The sending organisation (the jobs' [`NewJob::org`], the receipts' `org`).
    pub org: String,
    /// The destination queue.
    pub queue: String,
    /// The study.
    pub study_uid: String,
    /// Highest priority among its pending and parked jobs (0 when none is left: receipts do not
    /// keep it; the receiver's arrival record does).
    pub priority: i32,
    /// Jobs waiting or in flight.
    pub pending: u64,
    /// Jobs parked after too many attempts.
    pub parked: u64,
    /// Instance receipts.
    pub delivered: u64,
    /// Bytes of delivered instances.
    pub delivered_bytes: u64,
    /// Instance receipts whose hash the receiver verified.
    pub verified: u64,
    /// The newest study receipt's time: the receiver reported the study complete (0: not yet).
    pub complete_ms: i64,
    /// The newest receipt's time, ms (0 when none).
    pub last_delivered_ms: i64,
    /// The last error of a pending or parked job, "" when none.
    pub last_error: String,
}

/// The durable queue.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Adds jobs (outside an ingest); returns their ids (an existing job's id when a dedupe key
    /// matched).
    async fn enqueue(&self, jobs: Vec<NewJob>, now_ms: i64) -> Result<Vec<i64>>;

    /// Leases up to `max` jobs of `queue` for `owner` until `now_ms + lease_ms`.
    async fn lease(
        &self,
        queue: &str,
        owner: &str,
        max: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<Job>>;

    /// Extends `owner`'s leases of `ids` to `lease_until_ms`; returns how many it still held.
    async fn heartbeat(&self, owner: &str, ids: &[i64], lease_until_ms: i64) -> Result<usize>;

    /// Removes `owner`'s jobs `ids` and writes `receipts`, in one step; returns how many jobs it
    /// still held (the receipts are written whatever the count: the delivery happened).
    async fn complete(&self, owner: &str, ids: &[i64], receipts: Vec<Receipt>) -> Result<usize>;

    /// Records a failed attempt of `owner`'s job `id`: `Parked` when `attempts` reaches
    /// `max_attempts`, else `Ready` at `retry_at_ms`. `None` when `owner` no longer held it.
    async fn fail(
        &self,
        owner: &str,
        id: i64,
        error: &str,
        retry_at_ms: i64,
        max_attempts: u32,
    ) -> Result<Option<JobState>>;

    /// Puts every job leased by `owner` back to `Ready` (graceful shutdown); returns how many.
    async fn release(&self, owner: &str) -> Result<usize>;

    /// Makes a parked (or waiting) job ready now with its attempts reset; false when no such job.
    async fn retry(&self, id: i64, now_ms: i64) -> Result<bool>;

    /// Jobs, by id.
    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>>;

    /// Queues that have `Ready` or `Leased` jobs (workers discover destinations from them).
    async fn active_queues(&self) -> Result<Vec<String>>;

    /// Receipts, newest first.
    async fn receipts(&self, filter: &ReceiptFilter) -> Result<Vec<Receipt>>;

    /// Per (organisation, queue, study) summaries, the most recently active first, as
    /// `filter` says.
    async fn transfers(&self, filter: &TransferFilter) -> Result<Vec<TransferSummary>>;

    /// A counter that moves whenever jobs are added or made ready on this node.
    fn changes(&self) -> watch::Receiver<u64>;
}

/// Summaries from jobs and receipts: the one definition every backend can share (the SQLite
/// backend loads the rows of the studies concerned and calls it).
pub fn summarize(jobs: &[Job], receipts: &[Receipt], limit: usize) -> Vec<TransferSummary> {
    type Key = (String, String, String);
    let mut m: BTreeMap<Key, TransferSummary> = BTreeMap::new();
    let mut touched: BTreeMap<Key, i64> = BTreeMap::new();
    for j in jobs {
        let key = (j.job.org(), j.job.queue.clone(), j.job.study_uid.clone());
        let s = m.entry(key.clone()).or_default();
        s.priority = s.priority.max(j.job.priority);
        match j.state {
            JobState::Parked => s.parked += 1,
            _ => s.pending += 1,
        }
        if !j.last_error.is_empty() {
            s.last_error = j.last_error.clone();
        }
        let t = touched.entry(key).or_default();
        *t = (*t).max(j.created_ms);
    }
    for r in receipts {
        let key = (r.org.clone(), r.queue.clone(), r.study_uid.clone());
        let s = m.entry(key.clone()).or_default();
        match r.kind {
            ReceiptKind::Instance => {
                s.delivered += 1;
                s.delivered_bytes += r.size;
                s.verified += u64::from(r.verified);
            }
            ReceiptKind::Study => s.complete_ms = s.complete_ms.max(r.delivered_ms),
        }
        s.last_delivered_ms = s.last_delivered_ms.max(r.delivered_ms);
        let t = touched.entry(key).or_default();
        *t = (*t).max(r.delivered_ms);
    }
    let mut out: Vec<(i64, TransferSummary)> = m
        .into_iter()
        .map(|(key, mut s)| {
            let t = touched[&key];
            (s.org, s.queue, s.study_uid) = key;
            (t, s)
        })
        .collect();
    out.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| a.1.queue.cmp(&b.1.queue))
            .then_with(|| a.1.study_uid.cmp(&b.1.study_uid))
            .then_with(|| a.1.org.cmp(&b.1.org))
    });
    if limit > 0 {
        out.truncate(limit);
    }
    out.into_iter().map(|(_, s)| s).collect()
}

#[derive(Default)]
struct MemoryState {
    next_id: i64,
    jobs: BTreeMap<i64, Job>,
    receipts: Vec<Receipt>,
}

/// The in-memory outbox: the reference model the durable backends are tested against.
pub struct MemoryOutbox {
    state: Mutex<MemoryState>,
    changes: watch::Sender<u64>,
}

impl Default for MemoryOutbox {
    fn default() -> Self {
        MemoryOutbox {
            state: Mutex::default(),
            changes: watch::channel(0).0,
        }
    }
}

impl MemoryOutbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds jobs; used by [`Outbox::enqueue`] and by [`crate::memory::MemoryIndex`] for the
    /// jobs of an ingest commit.
    pub fn insert(&self, jobs: Vec<NewJob>, now_ms: i64) -> Vec<i64> {
        let mut st = self.state.lock().expect("lock");
        let mut ids = Vec::with_capacity(jobs.len());
        for job in jobs {
            if let Some(key) = &job.dedupe_key
                && let Some(existing) = st
                    .jobs
                    .values()
                    .find(|j| j.job.queue == job.queue && j.job.dedupe_key.as_ref() == Some(key))
            {
                ids.push(existing.id);
                continue;
            }
            st.next_id += 1;
            let id = st.next_id;
            st.jobs.insert(
                id,
                Job {
                    id,
                    job,
                    state: JobState::Ready,
                    attempts: 0,
                    lease_owner: String::new(),
                    lease_until_ms: 0,
                    last_error: String::new(),
                    created_ms: now_ms,
                },
            );
            ids.push(id);
        }
        drop(st);
        self.changes.send_modify(|c| *c += 1);
        ids
    }
}

/// Whether `j` may be leased at `now_ms` (the shared rule of every backend).
pub fn leasable(j: &Job, now_ms: i64) -> bool {
    match j.state {
        JobState::Ready => j.job.not_before_ms <= now_ms,
        JobState::Leased => j.lease_until_ms < now_ms,
        JobState::Parked => false,
    }
}

#[async_trait]
impl Outbox for MemoryOutbox {
    async fn enqueue(&self, jobs: Vec<NewJob>, now_ms: i64) -> Result<Vec<i64>> {
        Ok(self.insert(jobs, now_ms))
    }

    async fn lease(
        &self,
        queue: &str,
        owner: &str,
        max: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<Job>> {
        let mut st = self.state.lock().expect("lock");
        let mut ids: Vec<(i32, i64)> = st
            .jobs
            .values()
            .filter(|j| j.job.queue == queue && leasable(j, now_ms))
            .map(|j| (j.job.priority, j.id))
            .collect();
        ids.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        ids.truncate(max);
        let mut out = Vec::with_capacity(ids.len());
        for (_, id) in ids {
            let j = st.jobs.get_mut(&id).expect("present");
            j.state = JobState::Leased;
            j.lease_owner = owner.to_owned();
            j.lease_until_ms = now_ms + lease_ms;
            out.push(j.clone());
        }
        Ok(out)
    }

    async fn heartbeat(&self, owner: &str, ids: &[i64], lease_until_ms: i64) -> Result<usize> {
        let mut st = self.state.lock().expect("lock");
        let mut n = 0;
        for id in ids {
            if let Some(j) = st.jobs.get_mut(id)
                && j.state == JobState::Leased
                && j.lease_owner == owner
            {
                j.lease_until_ms = lease_until_ms;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn complete(&self, owner: &str, ids: &[i64], receipts: Vec<Receipt>) -> Result<usize> {
        let mut st = self.state.lock().expect("lock");
        let mut n = 0;
        for id in ids {
            if st
                .jobs
                .get(id)
                .is_some_and(|j| j.state == JobState::Leased && j.lease_owner == owner)
            {
                st.jobs.remove(id);
                n += 1;
            }
        }
        st.receipts.extend(receipts);
        Ok(n)
    }

    async fn fail(
        &self,
        owner: &str,
        id: i64,
        error: &str,
        retry_at_ms: i64,
        max_attempts: u32,
    ) -> Result<Option<JobState>> {
        let mut st = self.state.lock().expect("lock");
        let Some(j) = st.jobs.get_mut(&id) else {
            return Ok(None);
        };
        if j.state != JobState::Leased || j.lease_owner != owner {
            return Ok(None);
        }
        j.attempts += 1;
        j.last_error = error.to_owned();
        j.lease_owner.clear();
        j.lease_until_ms = 0;
        if j.attempts >= max_attempts {
            j.state = JobState::Parked;
        } else {
            j.state = JobState::Ready;
            j.job.not_before_ms = retry_at_ms;
        }
        let state = j.state;
        drop(st);
        self.changes.send_modify(|c| *c += 1);
        Ok(Some(state))
    }

    async fn release(&self, owner: &str) -> Result<usize> {
        let mut st = self.state.lock().expect("lock");
        let mut n = 0;
        for j in st.jobs.values_mut() {
            if j.state == JobState::Leased && j.lease_owner == owner {
                j.state = JobState::Ready;
                j.lease_owner.clear();
                j.lease_until_ms = 0;
                n += 1;
            }
        }
        drop(st);
        self.changes.send_modify(|c| *c += 1);
        Ok(n)
    }

    async fn retry(&self, id: i64, now_ms: i64) -> Result<bool> {
        let mut st = self.state.lock().expect("lock");
        let Some(j) = st.jobs.get_mut(&id) else {
            return Ok(false);
        };
        if j.state == JobState::Leased {
            return Ok(false);
        }
        j.state = JobState::Ready;
        j.attempts = 0;
        j.job.not_before_ms = now_ms;
        drop(st);
        self.changes.send_modify(|c| *c += 1);
        Ok(true)
    }

    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let st = self.state.lock().expect("lock");
        let mut out: Vec<Job> = st
            .jobs
            .values()
            .filter(|j| filter.org.as_ref().is_none_or(|o| &j.job.org() == o))
            .filter(|j| filter.queue.as_ref().is_none_or(|q| &j.job.queue == q))
            .filter(|j| {
                filter
                    .study_uid
                    .as_ref()
                    .is_none_or(|s| &j.job.study_uid == s)
            })
            .filter(|j| filter.state.is_none_or(|s| j.state == s))
            .cloned()
            .collect();
        if filter.limit > 0 {
            out.truncate(filter.limit);
        }
        Ok(out)
    }

    async fn active_queues(&self) -> Result<Vec<String>> {
        let st = self.state.lock().expect("lock");
        let mut q: Vec<String> = st
            .jobs
            .values()
            .filter(|j| j.state != JobState::Parked)
            .map(|j| j.job.queue.clone())
            .collect();
        q.sort();
        q.dedup();
        Ok(q)
    }

    async fn receipts(&self, filter: &ReceiptFilter) -> Result<Vec<Receipt>> {
        let st = self.state.lock().expect("lock");
        let mut out: Vec<Receipt> = st
            .receipts
            .iter()
            .rev()
            .filter(|r| filter.org.as_ref().is_none_or(|o| &r.org == o))
            .filter(|r| filter.queue.as_ref().is_none_or(|q| &r.queue == q))
            .filter(|r| filter.study_uid.as_ref().is_none_or(|s| &r.study_uid == s))
            .cloned()
            .collect();
        if filter.limit > 0 {
            out.truncate(filter.limit);
        }
        Ok(out)
    }

    async fn transfers(&self, filter: &TransferFilter) -> Result<Vec<TransferSummary>> {
        let st = self.state.lock().expect("lock");
        let ours = |o: &str| filter.org.as_deref().is_none_or(|f| f == o);
        let jobs: Vec<Job> = st
            .jobs
            .values()
            .filter(|j| ours(&j.job.org()))
            .cloned()
            .collect();
        let receipts: Vec<Receipt> = st
            .receipts
            .iter()
            .filter(|r| ours(&r.org))
            .cloned()
            .collect();
        Ok(summarize(&jobs, &receipts, filter.limit))
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(queue: &str, priority: i32) -> NewJob {
        NewJob {
            kind: "transfer".into(),
            queue: queue.into(),
            study_uid: "1.2".into(),
            payload: "{}".into(),
            priority,
            not_before_ms: 0,
            dedupe_key: None,
        }
    }

    #[tokio::test]
    async fn lease_orders_by_priority_and_holds_exclusively() {
        let o = MemoryOutbox::new();
        o.enqueue(vec![job("q", 0), job("q", 10), job("other", 99)], 1)
            .await
            .unwrap();
        let a = o.lease("q", "w1", 1, 100, 1000).await.unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].job.priority, 10);
        // The leased job is not handed to a second worker while fresh...
        let b = o.lease("q", "w2", 10, 200, 1000).await.unwrap();
        assert_eq!(b.len(), 1);
        assert_ne!(b[0].id, a[0].id);
        // ...but is after its lease expired, and the first worker can no longer complete it.
        let c = o.lease("q", "w3", 10, 1200, 1000).await.unwrap();
        assert_eq!(c.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a[0].id]);
        assert_eq!(o.complete("w1", &[a[0].id], vec![]).await.unwrap(), 0);
        assert_eq!(o.complete("w3", &[a[0].id], vec![]).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn fail_backs_off_then_parks_and_retry_revives() {
        let o = MemoryOutbox::new();
        let id = o.enqueue(vec![job("q", 0)], 0).await.unwrap()[0];
        o.lease("q", "w", 1, 0, 100).await.unwrap();
        assert_eq!(
            o.fail("w", id, "refused", 500, 2).await.unwrap(),
            Some(JobState::Ready)
        );
        assert!(o.lease("q", "w", 1, 400, 100).await.unwrap().is_empty());
        assert_eq!(o.lease("q", "w", 1, 500, 100).await.unwrap().len(), 1);
        assert_eq!(
            o.fail("w", id, "refused again", 900, 2).await.unwrap(),
            Some(JobState::Parked)
        );
        assert!(o.lease("q", "w", 1, 10_000, 100).await.unwrap().is_empty());
        let parked = o
            .jobs(&JobFilter {
                state: Some(JobState::Parked),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(parked[0].last_error, "refused again");
        assert!(o.retry(id, 10_000).await.unwrap());
        assert_eq!(o.lease("q", "w", 1, 10_000, 100).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn dedupe_and_release() {
        let o = MemoryOutbox::new();
        let mut j = job("q", 0);
        j.dedupe_key = Some("k".into());
        let a = o.enqueue(vec![j.clone()], 0).await.unwrap();
        let b = o.enqueue(vec![j], 0).await.unwrap();
        assert_eq!(a, b);
        o.lease("q", "w", 5, 0, 100_000).await.unwrap();
        assert_eq!(o.release("w").await.unwrap(), 1);
        assert_eq!(o.lease("q", "x", 5, 1, 100).await.unwrap().len(), 1);
    }
}
