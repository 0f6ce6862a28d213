//! The transfer engine: one worker per outbox queue, draining it to a peer (signed STOW-RS with
//! manifests) or a DICOM node (C-STORE SCU).
//!
//! ## Invariants (with the outbox's own, `vesalius_store::outbox`)
//! - A job is completed only after the destination confirmed it: for a peer, a signed answer
//!   names the instance as held **with the same SHA-256** (the receipt is `verified`): the
//!   STOW-RS answer itself (signed, each stored instance's hash in a private element,
//!   `vesalius_auth::peer::HASH_TAG`) or, when that does not settle it (an older peer, another
//!   hash), a manifest answer; for a DICOM node, a success or warning C-STORE status.
//! - Streaming forward: a worker leases whatever is ready as soon as the outbox signals new jobs
//!   (or at the poll interval), so instances leave while the study is still arriving. Leasing
//!   to a peer is pipelined: up to `concurrency` leased batches are being sent at once, new jobs are
//!   leased while earlier ones are still on the wire, and at most `concurrency` STOW-RS
//!   requests of at most `batch_bytes` each are in flight per destination (verifications run
//!   beside them). Final manifests are considered only when nothing is in flight.
//! - Resume: jobs created before this process started, or already attempted, are first checked
//!   with a manifest, and only what the peer does not hold is sent again. A request cut midway
//!   costs at most one batch.
//! - Study completion: when a study has had no job for `settle` and none is pending for the
//!   destination, the worker sends the **final manifest** (everything it delivered of the study);
//!   the peer marks the study complete and raises "study complete"; the sender writes a study
//!   receipt. A study that grows later gets another final manifest. A final manifest that gets
//!   no answer (link cut, peer down) is sent again with the jobs' backoff until it does.
//! - Failures are retried with capped exponential backoff and jitter; after `max_attempts` a job
//!   is parked with its last error. On shutdown the worker releases its leases.
//!
//! ## Crash behaviour
//! A sender killed mid-study leaves leased jobs that are taken over when their lease expires (by
//! this node after restart or another node); those are resumed with a manifest check, so no
//! instance is stored twice and nothing is lost. A final manifest not sent before the crash is
//! sent after restart for studies whose receipts lack a study receipt.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::stream::{self, StreamExt, TryStreamExt};
use rand::Rng;
use tokio::sync::{Mutex, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use vesalius_store::outbox::{Job, JobFilter, Receipt, ReceiptFilter, ReceiptKind};
use vesalius_store::registry::{DicomNode, Peer, PeerKind};
use vesalius_store::{BlobStore, Index, Ingestor, Outbox, Registry};

use crate::client::PeerClient;
use crate::job::{TRANSFER, TransferJob};
use crate::manifest::{Manifest, ManifestEntry};
use crate::{Error, ExchangeEvent, now_ms};

/// Tunables of the engine (`[exchange]` in the configuration).
#[derive(Debug, Clone)]
pub struct ExchangeOptions {
    /// This worker's lease owner name (unique per node and process).
    pub owner: String,
    /// How often idle workers look for jobs that no signal announced (other nodes' jobs).
    pub poll_interval: Duration,
    /// How long a lease lasts without a heartbeat.
    pub lease: Duration,
    /// Most jobs leased at once per queue.
    pub batch_jobs: usize,
    /// Most bytes in one STOW-RS request (at least one instance per request) over a slow link.
    pub batch_bytes: u64,
    /// The same over a fast link ([`PeerClient::fast_link`]).
    pub fast_batch_bytes: u64,
    /// STOW-RS requests in flight per destination.
    pub concurrency: usize,
    /// Attempts before a job is parked.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Quiet time after a study's last job before its final manifest.
    pub settle: Duration,
    /// Our AE title, calling DICOM nodes, and the Move Destination of retrievals from them.
    pub ae_title: String,
    /// The longest one C-MOVE from a DICOM node may take before it is cancelled.
    pub move_timeout: Duration,
    /// The longest one C-FIND to a DICOM node may take.
    pub find_timeout: Duration,
    /// The key de-identifying routes derive pseudonyms from (derived from the site key).
    pub deid_key: Vec<u8>,
}

impl Default for ExchangeOptions {
    fn default() -> Self {
        ExchangeOptions {
            owner: format!("node-{}", uuid::Uuid::new_v4().simple()),
            poll_interval: Duration::from_secs(2),
            lease: Duration::from_secs(60),
            batch_jobs: 64,
            batch_bytes: 1 << 20,
            fast_batch_bytes: 4 << 20,
            concurrency: 4,
            max_attempts: 10,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            settle: Duration::from_millis(50),
            ae_title: "VESALIUS".into(),
            move_timeout: Duration::from_secs(600),
            find_timeout: Duration::from_secs(60),
            deid_key: b"vesalius-route-deidentification".to_vec(),
        }
    }
}

/// The engine: owns the workers.
pub struct Exchange {
    outbox: Arc<dyn Outbox>,
    index: Arc<dyn Index>,
    registry: Arc<dyn Registry>,
    blobs: Arc<dyn BlobStore>,
    client: PeerClient,
    opts: ExchangeOptions,
    events: broadcast::Sender<ExchangeEvent>,
    started_ms: i64,
    workers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// The ingest path, for C-GET retrievals from DICOM nodes (their instances arrive on our
    /// own association); set once by the binary, which builds the ingestor after the routing
    /// observer the engine's registry feeds.
    ingestor: std::sync::OnceLock<Arc<Ingestor>>,
}

impl Exchange {
    /// An engine over the stores, sending with `client`; `index` tells what is held here
    /// (retrievals from DICOM nodes check it).
    pub fn new(
        outbox: Arc<dyn Outbox>,
        index: Arc<dyn Index>,
        registry: Arc<dyn Registry>,
        blobs: Arc<dyn BlobStore>,
        client: PeerClient,
        opts: ExchangeOptions,
    ) -> Arc<Self> {
        Arc::new(Exchange {
            outbox,
            index,
            registry,
            blobs,
            client,
            opts,
            events: broadcast::channel(1024).0,
            started_ms: now_ms(),
            workers: Mutex::default(),
            ingestor: std::sync::OnceLock::new(),
        })
    }

    /// Gives the engine the ingest path C-GET retrievals store through (once; later calls are
    /// ignored).
    pub fn set_ingestor(&self, ingestor: Arc<Ingestor>) {
        let _ = self.ingestor.set(ingestor);
    }

    /// The ingest path, when given.
    pub fn ingestor(&self) -> Option<&Arc<Ingestor>> {
        self.ingestor.get()
    }

    /// The event stream (sender and receiver side).
    pub fn subscribe(&self) -> broadcast::Receiver<ExchangeEvent> {
        self.events.subscribe()
    }

    /// The sender of the event stream, for the receiving HTTP side.
    pub fn events(&self) -> broadcast::Sender<ExchangeEvent> {
        self.events.clone()
    }

    /// Publishes an event (the receiving HTTP side uses it too).
    pub fn publish(&self, e: ExchangeEvent) {
        let _ = self.events.send(e);
    }

    /// The client (pings, federated requests).
    pub fn client(&self) -> &PeerClient {
        &self.client
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.registry
    }

    /// The outbox.
    pub fn outbox(&self) -> &Arc<dyn Outbox> {
        &self.outbox
    }

    /// The index (what is held here).
    pub fn index(&self) -> &Arc<dyn Index> {
        &self.index
    }

    /// Runs until `shutdown`: starts a worker for every queue with work (peers, DICOM nodes,
    /// retrievals and prefetches from DICOM nodes; analysis queues are left to the analysis
    /// layer), then releases every lease.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut changes = self.outbox.changes();
        // Studies delivered before a restart whose final manifest may not have been sent, per
        // queue: read once here and handed to each queue's first worker.
        let mut recovered = self.unfinished_studies().await;
        let mut started: std::collections::HashSet<String> = Default::default();
        loop {
            match self.outbox.active_queues().await {
                Ok(mut queues) => {
                    queues.extend(recovered.keys().cloned());
                    let mut w = self.workers.lock().await;
                    w.retain(|_, h| !h.is_finished());
                    for q in queues {
                        if w.contains_key(&q) || !worked_here(&q) {
                            continue;
                        }
                        let me = self.clone();
                        let sd = shutdown.clone();
                        let queue = q.clone();
                        // A queue's first worker gets what was read above; a restarted one
                        // (after a quiet minute) reads again.
                        let initial = started
                            .insert(q.clone())
                            .then(|| recovered.remove(&q).unwrap_or_default());
                        w.insert(
                            q,
                            tokio::spawn(async move { me.work(queue, initial, sd).await }),
                        );
                    }
                }
                Err(e) => tracing::warn!("outbox: {e}"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changes.changed() => {}
                _ = tokio::time::sleep(self.opts.poll_interval) => {}
            }
        }
        let handles: Vec<_> = self.workers.lock().await.drain().map(|(_, h)| h).collect();
        for h in handles {
            let _ = h.await;
        }
        if let Err(e) = self.outbox.release(&self.opts.owner).await {
            tracing::warn!("releasing outbox leases: {e}");
        }
    }

    /// Per queue, the studies with deliveries newer than their study receipt and nothing
    /// pending: their final manifest is due, `(study, priority)`.
    async fn unfinished_studies(&self) -> HashMap<String, Vec<(String, i32)>> {
        let mut out: HashMap<String, Vec<(String, i32)>> = HashMap::new();
        match self
            .outbox
            .transfers(&vesalius_store::outbox::TransferFilter::limit(1000))
            .await
        {
            Ok(t) => {
                for t in t {
                    if t.complete_ms < t.last_delivered_ms && t.pending == 0 {
                        out.entry(t.queue)
                            .or_default()
                            .push((t.study_uid, t.priority));
                    }
                }
            }
            Err(e) => tracing::warn!("outbox: transfer summaries: {e}"),
        }
        out
    }

    /// One queue's loop, starting with the final manifests of `initial` due (`None`: looked up
    /// here). Ends after a minute without work (the supervisor restarts it when
    /// work appears) or at shutdown.
    async fn work(
        self: Arc<Self>,
        queue: String,
        initial: Option<Vec<(String, i32)>>,
        shutdown: CancellationToken,
    ) {
        let mut changes = self.outbox.changes();
        let settle = self.opts.settle.as_millis() as i64;
        let initial = match initial {
            Some(i) => i,
            None => self
                .unfinished_studies()
                .await
                .remove(&queue)
                .unwrap_or_default(),
        };
        // study -> (deadline for its final manifest, priority)
        let mut finals: BTreeMap<String, (i64, i32)> = initial
            .into_iter()
            .map(|(study, priority)| (study, (0, priority)))
            .collect();
        // study -> final manifests sent without an answer so far (for the backoff)
        let mut unanswered: HashMap<String, u32> = HashMap::new();
        let mut idle_since = now_ms();
        // Leased batches being sent: new jobs are leased while earlier ones are still on the
        // wire (pipelining), up to `concurrency` batches; the requests themselves share the
        // queue's `slots`.
        let slots = Semaphore::new(self.opts.concurrency.max(1));
        let mut in_flight = FuturesUnordered::new();
        loop {
            if shutdown.is_cancelled() {
                // Let what is on the wire finish (its jobs complete or fail), then stop.
                while in_flight.next().await.is_some() {}
                return;
            }
            // Retrievals run one C-MOVE at a time: lease few, one batch at a time, so other
            // nodes can take the rest. DICOM nodes get one association at a time, as before;
            // peers get pipelined STOW-RS.
            let (batch, pipeline) = if crate::priors::queue_node(&queue).is_some() {
                (PRIORS_BATCH, 1)
            } else if queue.starts_with("peer:") {
                (self.opts.batch_jobs, self.opts.concurrency.max(1))
            } else {
                (self.opts.batch_jobs, 1)
            };
            let jobs = if in_flight.len() < pipeline {
                match self
                    .outbox
                    .lease(
                        &queue,
                        &self.opts.owner,
                        batch,
                        now_ms(),
                        self.opts.lease.as_millis() as i64,
                    )
                    .await
                {
                    Ok(j) => j,
                    Err(e) => {
                        tracing::warn!("{queue}: leasing: {e}");
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            if !jobs.is_empty() {
                for j in &jobs {
                    let e = finals.entry(j.job.study_uid.clone()).or_insert((0, 0));
                    e.0 = e.0.max(j.created_ms + settle);
                    e.1 = e.1.max(j.job.priority);
                }
                in_flight.push(self.process(&queue, jobs, &slots));
                idle_since = now_ms();
                continue;
            }
            if !in_flight.is_empty() {
                // Something finished (a slot for the next lease) or new jobs were announced.
                tokio::select! {
                    _ = in_flight.next() => {}
                    _ = changes.changed() => {}
                }
                idle_since = now_ms();
                continue;
            }
            // Final manifests of settled studies.
            let now = now_ms();
            let due: Vec<String> = finals
                .iter()
                .filter(|(_, (d, _))| *d <= now)
                .map(|(s, _)| s.clone())
                .collect();
            for study in due {
                let (_, priority) = finals.remove(&study).unwrap_or_default();
                let pending = match self
                    .outbox
                    .jobs(&JobFilter {
                        queue: Some(queue.clone()),
                        study_uid: Some(study.clone()),
                        limit: 1,
                        ..Default::default()
                    })
                    .await
                {
                    Ok(j) => !j.is_empty(),
                    Err(e) => {
                        tracing::warn!("{queue}: pending jobs of {study}: {e}");
                        let again = now_ms() + self.opts.poll_interval.as_millis() as i64;
                        finals.insert(study, (again, priority));
                        continue;
                    }
                };
                if !pending && let Some(peer) = queue.strip_prefix("peer:") {
                    if self.final_manifest(peer, &queue, &study, priority).await {
                        unanswered.remove(&study);
                    } else {
                        // Not answered: again after a backoff, or the peer would never learn
                        // that the study is complete (found by the fault-proxy test).
                        let attempt = unanswered.entry(study.clone()).or_insert(0);
                        *attempt += 1;
                        let again = now_ms() + self.backoff_ms(*attempt) as i64;
                        let e = finals.entry(study).or_insert((0, priority));
                        e.0 = e.0.max(again);
                        e.1 = e.1.max(priority);
                    }
                }
            }
            if finals.is_empty() && now_ms() - idle_since > 60_000 {
                return;
            }
            let wait = finals
                .values()
                .map(|(d, _)| (*d - now_ms()).max(1) as u64)
                .min()
                .map(Duration::from_millis)
                .unwrap_or(self.opts.poll_interval)
                .min(self.opts.poll_interval);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changes.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sends one leased batch, keeping the leases alive meanwhile; its STOW-RS requests take
    /// one of the queue's `slots` each.
    async fn process(&self, queue: &str, jobs: Vec<Job>, slots: &Semaphore) {
        let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        let stop = CancellationToken::new();
        let hb = {
            let outbox = self.outbox.clone();
            let owner = self.opts.owner.clone();
            let lease = self.opts.lease;
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(lease / 3) => {}
                    }
                    let until = now_ms() + lease.as_millis() as i64;
                    if let Err(e) = outbox.heartbeat(&owner, &ids, until).await {
                        tracing::warn!("outbox heartbeat: {e}");
                    }
                }
            })
        };
        if crate::priors::queue_node(queue).is_some() {
            self.run_priors(queue, jobs).await;
            stop.cancel();
            let _ = hb.await;
            return;
        }
        let mut transfers = Vec::new();
        for j in jobs {
            if j.job.kind != TRANSFER {
                self.fail_job(&j, &format!("unknown job kind {}", j.job.kind), true)
                    .await;
                continue;
            }
            match serde_json::from_str::<TransferJob>(&j.job.payload) {
                Ok(t) => transfers.push((j, t)),
                Err(e) => {
                    self.fail_job(&j, &format!("unreadable job: {e}"), true)
                        .await
                }
            }
        }
        let jobs: Vec<&Job> = transfers.iter().map(|(j, _)| j).collect();
        if let Some(name) = queue.strip_prefix("peer:") {
            match self.registry.peer(name).await {
                Ok(Some(peer)) => self.send_to_peer(queue, &peer, transfers, slots).await,
                Ok(None) => self.fail_all(&jobs, &format!("no peer named {name}")).await,
                Err(e) => self.fail_all(&jobs, &e.to_string()).await,
            }
        } else if let Some(name) = queue.strip_prefix("node:") {
            match self.registry.node(name).await {
                Ok(Some(node)) => self.send_to_node(queue, &node, transfers).await,
                Ok(None) => {
                    self.fail_all(&jobs, &format!("no DICOM node named {name}"))
                        .await
                }
                Err(e) => self.fail_all(&jobs, &e.to_string()).await,
            }
        }
        stop.cancel();
        let _ = hb.await;
    }

    /// Records a failed attempt of each of `jobs` (with backoff).
    async fn fail_all(&self, jobs: &[&Job], error: &str) {
        for j in jobs {
            self.fail_job(j, error, false).await;
        }
    }

    /// Records a failed attempt with backoff (or parks at once when `park`).
    pub(crate) async fn fail_job(&self, j: &Job, error: &str, park: bool) {
        let attempt = j.attempts + 1;
        let delay = self.backoff_ms(attempt);
        let max = if park { 0 } else { self.opts.max_attempts };
        tracing::info!(queue = %j.job.queue, job = j.id, attempt, "transfer failed: {error}");
        match self
            .outbox
            .fail(&self.opts.owner, j.id, error, now_ms() + delay as i64, max)
            .await
        {
            Ok(Some(vesalius_store::outbox::JobState::Parked)) => {
                metrics::counter!("vesalius_exchange_parked_total").increment(1);
                self.publish(ExchangeEvent::Parked {
                    // Transfer, retrieval and prefetch payloads name their organisation.
                    org: j.job.org(),
                    queue: j.job.queue.clone(),
                    study_uid: j.job.study_uid.clone(),
                    error: error.to_owned(),
                })
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("outbox: recording a failure: {e}"),
        }
    }

    /// The wait before attempt `attempt + 1` after `attempt` failed ones (1-based), ms:
    /// `backoff_base` doubling per attempt up to `backoff_max`, with jitter.
    fn backoff_ms(&self, attempt: u32) -> u64 {
        backoff_ms(&self.opts, attempt, &mut rand::thread_rng())
    }

    /// The engine's options.
    pub fn options(&self) -> &ExchangeOptions {
        &self.opts
    }

    /// The stored bytes of `t`.
    pub(crate) async fn read_blob(&self, t: &TransferJob) -> Result<Bytes, Error> {
        let parts: Vec<Bytes> = self.blobs.read(&t.blob_key).await?.try_collect().await?;
        Ok(if parts.len() == 1 {
            parts.into_iter().next().expect("one")
        } else {
            Bytes::from(parts.concat())
        })
    }

    /// Reads the bytes to send for `t`: the stored blob, or its de-identified copy.
    async fn payload(&self, t: &TransferJob) -> Result<(Bytes, String, String), Error> {
        let bytes = self.read_blob(t).await?;
        match &t.deid {
            None => Ok((bytes, t.sop_instance_uid.clone(), t.sha256.clone())),
            Some(profile) => {
                let profile = profile.clone();
                let key = self.opts.deid_key.clone();
                tokio::task::spawn_blocking(move || deid(&bytes, &profile, &key))
                    .await
                    .map_err(|e| Error::Peer(format!("de-identification: {e}")))?
            }
        }
    }

    async fn send_to_peer(
        &self,
        queue: &str,
        peer: &Peer,
        transfers: Vec<(Job, TransferJob)>,
        slots: &Semaphore,
    ) {
        let mut by_study: BTreeMap<String, Vec<(Job, TransferJob)>> = BTreeMap::new();
        for (j, t) in transfers {
            by_study
                .entry(t.study_uid.clone())
                .or_default()
                .push((j, t));
        }
        for (study, mut items) in by_study {
            let priority = items.iter().map(|(j, _)| j.job.priority).max().unwrap_or(0);
            // Resume: ask first for what may already be there (jobs of an earlier process or
            // already attempted); only plain de-identification-free jobs can be checked by hash.
            // A plain DICOMweb peer has no manifests: what it already holds is sent again (a
            // STOW-RS of identical bytes is harmless there).
            let resume = peer.kind == PeerKind::Vesalius
                && items.iter().any(|(j, t)| {
                    t.deid.is_none() && (j.created_ms < self.started_ms || j.attempts > 0)
                });
            if resume {
                let m = Manifest {
                    study_uid: study.clone(),
                    priority,
                    final_: false,
                    instances: items.iter().map(|(_, t)| entry_of(t)).collect(),
                };
                match self.client.manifest(peer, &m).await {
                    Ok(answer) => {
                        let held: std::collections::HashSet<&String> =
                            answer.present.iter().collect();
                        let (done, rest): (Vec<_>, Vec<_>) =
                            items.into_iter().partition(|(_, t)| {
                                t.deid.is_none() && held.contains(&t.sop_instance_uid)
                            });
                        let done: Vec<(Job, ManifestEntry)> = done
                            .into_iter()
                            .map(|(j, t)| {
                                let e = entry_of(&t);
                                (j, e)
                            })
                            .collect();
                        self.complete(queue, &study, &done, true, "already held (manifest)")
                            .await;
                        items = rest;
                    }
                    Err(e) => {
                        self.fail_all(
                            &items.iter().map(|t| &t.0).collect::<Vec<_>>(),
                            &e.to_string(),
                        )
                        .await;
                        continue;
                    }
                }
            }
            // Batches of at most batch_bytes (at least one instance each; larger on a fast
            // link, where a resent request costs little), several in flight.
            let max = if self.client.fast_link(peer).await {
                self.opts.fast_batch_bytes
            } else {
                self.opts.batch_bytes
            };
            let mut batches: Vec<Vec<(Job, TransferJob)>> = Vec::new();
            let mut size = 0u64;
            for it in items {
                if batches.is_empty() || size + it.1.size > max {
                    batches.push(Vec::new());
                    size = 0;
                }
                size += it.1.size;
                batches.last_mut().expect("pushed").push(it);
            }
            stream::iter(batches)
                .for_each_concurrent(self.opts.concurrency.max(1), |batch| {
                    let study = study.clone();
                    async move {
                        self.send_batch(queue, peer, &study, priority, batch, slots)
                            .await
                    }
                })
                .await;
        }
    }

    async fn send_batch(
        &self,
        queue: &str,
        peer: &Peer,
        study: &str,
        priority: i32,
        batch: Vec<(Job, TransferJob)>,
        slots: &Semaphore,
    ) {
        let mut parts = Vec::with_capacity(batch.len());
        let mut sent: Vec<(Job, TransferJob, ManifestEntry)> = Vec::with_capacity(batch.len());
        for (j, t) in batch {
            match self.payload(&t).await {
                Ok((bytes, sop, sha)) => {
                    let entry = ManifestEntry {
                        sop_instance_uid: sop,
                        sha256: sha,
                        size: bytes.len() as u64,
                    };
                    parts.push(bytes);
                    sent.push((j, t, entry));
                }
                Err(e) => {
                    self.fail_job(&j, &format!("reading the instance: {e}"), false)
                        .await
                }
            }
        }
        if parts.is_empty() {
            return;
        }
        // De-identified objects carry a new Study Instance UID: they go to the base path.
        let target = if sent.iter().any(|(_, t, _)| t.deid.is_some()) {
            None
        } else {
            Some(study)
        };
        // One request on the wire per slot; the verification below runs outside it.
        let outcome = {
            let _slot = slots.acquire().await;
            self.client.stow(peer, target, priority, parts).await
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                self.fail_all(
                    &sent.iter().map(|t| &t.0).collect::<Vec<_>>(),
                    &e.to_string(),
                )
                .await;
                return;
            }
        };
        if peer.kind == PeerKind::Dicomweb {
            return self.complete_by_answer(queue, study, sent, &outcome).await;
        }
        let failed: HashMap<&str, u16> = outcome
            .failed
            .iter()
            .map(|(u, r)| (u.as_str(), *r))
            .collect();
        let mut stored = Vec::new();
        for (j, t, e) in sent {
            match failed.get(e.sop_instance_uid.as_str()) {
                Some(reason) => {
                    self.fail_job(
                        &j,
                        &format!("refused by the peer (reason 0x{reason:04X})"),
                        false,
                    )
                    .await
                }
                None => stored.push((j, t, e)),
            }
        }
        if stored.is_empty() {
            return;
        }
        // De-identified copies carry new UIDs the sender's manifest cannot name: their receipt
        // is the STOW-RS answer alone (not verified by hash).
        let (deid, plain): (Vec<_>, Vec<_>) =
            stored.into_iter().partition(|(_, t, _)| t.deid.is_some());
        let deid: Vec<(Job, ManifestEntry)> = deid.into_iter().map(|(j, _, e)| (j, e)).collect();
        self.complete(
            queue,
            study,
            &deid,
            false,
            "stored (STOW-RS), de-identified",
        )
        .await;
        if plain.is_empty() {
            return;
        }
        // Verification: the peer's signed STOW-RS answer names the SHA-256 of what it stored;
        // those stored with ours are done. Anything else (an older peer's unsigned answer, a
        // hash that differs, e.g. a version the peer superseded itself) is asked by manifest.
        let signed: HashMap<&str, &str> = outcome
            .hashes
            .iter()
            .map(|(u, h)| (u.as_str(), h.as_str()))
            .collect();
        let (by_answer, plain): (Vec<_>, Vec<_>) = plain.into_iter().partition(|(_, _, e)| {
            signed
                .get(e.sop_instance_uid.as_str())
                .is_some_and(|h| h.eq_ignore_ascii_case(&e.sha256))
        });
        let by_answer: Vec<(Job, ManifestEntry)> =
            by_answer.into_iter().map(|(j, _, e)| (j, e)).collect();
        self.complete(
            queue,
            study,
            &by_answer,
            true,
            "stored (STOW-RS), hash verified (signed answer)",
        )
        .await;
        if plain.is_empty() {
            return;
        }
        let m = Manifest {
            study_uid: study.to_owned(),
            priority,
            final_: false,
            instances: plain.iter().map(|(_, _, e)| e.clone()).collect(),
        };
        match self.client.manifest(peer, &m).await {
            Ok(answer) => {
                let held: std::collections::HashSet<&String> = answer.present.iter().collect();
                let mut done = Vec::new();
                for (j, _, e) in plain {
                    if held.contains(&e.sop_instance_uid) {
                        done.push((j, e));
                    } else {
                        self.fail_job(
                            &j,
                            "stored but not held with the same hash (manifest)",
                            false,
                        )
                        .await;
                    }
                }
                self.complete(
                    queue,
                    study,
                    &done,
                    true,
                    "stored (STOW-RS), hash verified (manifest)",
                )
                .await;
            }
            Err(e) => {
                self.fail_all(
                    &plain.iter().map(|t| &t.0).collect::<Vec<_>>(),
                    &format!("verifying: {e}"),
                )
                .await;
            }
        }
    }

    /// A plain DICOMweb peer's receipts: what its STOW-RS answer lists as stored (Referenced
    /// SOP Sequence) is complete, not hash-verified; a failure (Failed SOP Sequence) or an
    /// instance the answer does not mention is retried.
    async fn complete_by_answer(
        &self,
        queue: &str,
        study: &str,
        sent: Vec<(Job, TransferJob, ManifestEntry)>,
        outcome: &crate::client::StowOutcome,
    ) {
        let stored: std::collections::HashSet<&str> =
            outcome.stored.iter().map(String::as_str).collect();
        let failed: HashMap<&str, u16> = outcome
            .failed
            .iter()
            .map(|(u, r)| (u.as_str(), *r))
            .collect();
        let mut done = Vec::new();
        for (j, _, e) in sent {
            let uid = e.sop_instance_uid.as_str();
            if stored.contains(uid) {
                done.push((j, e));
            } else if let Some(reason) = failed.get(uid) {
                self.fail_job(
                    &j,
                    &format!("refused by the peer (reason 0x{reason:04X})"),
                    false,
                )
                .await
            } else {
                self.fail_job(&j, "not listed as stored in the STOW-RS answer", false)
                    .await
            }
        }
        self.complete(queue, study, &done, false, "stored (STOW-RS answer)")
            .await;
    }

    /// Completes delivered jobs with their receipts (one per instance, as sent).
    pub(crate) async fn complete(
        &self,
        queue: &str,
        study: &str,
        done: &[(Job, ManifestEntry)],
        verified: bool,
        detail: &str,
    ) {
        if done.is_empty() {
            return;
        }
        let now = now_ms();
        let receipts: Vec<Receipt> = done
            .iter()
            .map(|(j, e)| Receipt {
                org: j.job.org(),
                queue: queue.to_owned(),
                kind: ReceiptKind::Instance,
                study_uid: j.job.study_uid.clone(),
                sop_instance_uid: e.sop_instance_uid.clone(),
                sha256: e.sha256.clone(),
                size: e.size,
                delivered_ms: now,
                verified,
                detail: detail.to_owned(),
            })
            .collect();
        let ids: Vec<i64> = done.iter().map(|(j, _)| j.id).collect();
        if let Err(e) = self.outbox.complete(&self.opts.owner, &ids, receipts).await {
            tracing::warn!("outbox: completing {} jobs: {e}", ids.len());
            return;
        }
        metrics::counter!("vesalius_exchange_delivered_total").increment(ids.len() as u64);
        // One event per sending organisation (a Vesalius peer's queue carries every
        // organisation's transfers to it), so each goes only to its own administrators.
        let mut per_org: BTreeMap<String, u64> = BTreeMap::new();
        for (j, _) in done {
            *per_org.entry(j.job.org()).or_default() += 1;
        }
        for (org, instances) in per_org {
            self.publish(ExchangeEvent::Delivered {
                org,
                queue: queue.to_owned(),
                study_uid: study.to_owned(),
                instances,
            });
        }
    }

    /// Sends the final manifest of `study` and writes the study receipt from the answer.
    /// Answers false when it should be tried again later (no answer, or the receipts could not
    /// be read); true when it was answered, or cannot be sent (the peer or its deliveries are
    /// gone).
    async fn final_manifest(
        &self,
        peer_name: &str,
        queue: &str,
        study: &str,
        priority: i32,
    ) -> bool {
        let peer = match self.registry.peer(peer_name).await {
            Ok(Some(p)) => p,
            Ok(None) => return true,
            Err(e) => {
                tracing::warn!("{queue}: peer {peer_name}: {e}");
                return false;
            }
        };
        let receipts = match self
            .outbox
            .receipts(&ReceiptFilter {
                queue: Some(queue.to_owned()),
                study_uid: Some(study.to_owned()),
                ..Default::default()
            })
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("{queue}: receipts of {study}: {e}");
                return false;
            }
        };
        // Newest receipt per instance (a re-sent instance has several), with the organisation
        // that sent it.
        let dicomweb = peer.kind == PeerKind::Dicomweb;
        let mut latest: BTreeMap<String, (ManifestEntry, String)> = BTreeMap::new();
        for r in receipts
            .iter()
            .filter(|r| r.kind == ReceiptKind::Instance && (r.verified || dicomweb))
        {
            latest.entry(r.sop_instance_uid.clone()).or_insert_with(|| {
                (
                    ManifestEntry {
                        sop_instance_uid: r.sop_instance_uid.clone(),
                        sha256: r.sha256.clone(),
                        size: r.size,
                    },
                    r.org.clone(),
                )
            });
        }
        if latest.is_empty() {
            return true;
        }
        // The study at the peer is one, whoever sent its instances: the manifest covers them
        // all, and each sending organisation gets its own study receipt and event (with the
        // count of instances it sent), so its summary completes and only its administrators
        // hear of it. Usually there is one.
        let mut orgs: BTreeMap<String, u64> = BTreeMap::new();
        for (_, org) in latest.values() {
            *orgs.entry(org.clone()).or_default() += 1;
        }
        let instances: Vec<ManifestEntry> = latest.into_values().map(|(e, _)| e).collect();
        let n = instances.len() as u64;
        let study_receipts = |verified: bool, detail: &str| -> Vec<Receipt> {
            orgs.iter()
                .map(|(org, k)| {
                    Receipt::study(org, queue, study, *k, now_ms(), verified, detail.to_owned())
                })
                .collect()
        };
        let announce = |this: &Self| {
            for (org, k) in &orgs {
                this.publish(ExchangeEvent::TransferComplete {
                    org: org.clone(),
                    queue: queue.to_owned(),
                    study_uid: study.to_owned(),
                    instances: *k,
                });
            }
        };
        if dicomweb {
            // No manifest to ask: the study receipt sums up the STOW-RS answers.
            let rs = study_receipts(
                false,
                &format!("{n} instances stored (STOW-RS answers, no manifest)"),
            );
            match self.outbox.complete(&self.opts.owner, &[], rs).await {
                Ok(_) => announce(self),
                Err(e) => {
                    tracing::warn!("{queue}: study receipt of {study}: {e}");
                    return false;
                }
            }
            return true;
        }
        let m = Manifest {
            study_uid: study.to_owned(),
            priority,
            final_: true,
            instances,
        };
        match self.client.manifest(&peer, &m).await {
            Ok(a) => {
                let detail = if a.complete {
                    format!("manifest {n}/{n} verified")
                } else {
                    format!(
                        "manifest incomplete: {} missing, {} different of {n}",
                        a.missing.len(),
                        a.mismatched.len()
                    )
                };
                let rs = study_receipts(a.complete, &detail);
                if let Err(e) = self.outbox.complete(&self.opts.owner, &[], rs).await {
                    tracing::warn!("{queue}: study receipt of {study}: {e}");
                }
                if a.complete {
                    announce(self);
                }
                true
            }
            Err(e) => {
                tracing::warn!("{queue}: final manifest of {study}: {e}");
                false
            }
        }
    }

    async fn send_to_node(
        &self,
        queue: &str,
        node: &DicomNode,
        transfers: Vec<(Job, TransferJob)>,
    ) {
        crate::node::send(self, queue, node, transfers).await
    }
}

/// Jobs leased at once on a `retrieve:` or `prefetch:` queue.
const PRIORS_BATCH: usize = 4;

/// Whether this engine works the queue: peers, DICOM nodes, retrievals and prefetches from
/// DICOM nodes (not analyses).
fn worked_here(queue: &str) -> bool {
    ["peer:", "node:", "retrieve:", "prefetch:"]
        .iter()
        .any(|p| queue.starts_with(p))
}

/// The wait after `attempt` failed attempts (1-based), ms: `backoff_base` doubling per attempt,
/// capped at `backoff_max`, with full jitter in [delay/2, delay] so that workers retrying one
/// peer do not stampede together.
fn backoff_ms(opts: &ExchangeOptions, attempt: u32, rng: &mut impl Rng) -> u64 {
    let base = opts.backoff_base.as_millis() as u64;
    let cap = opts.backoff_max.as_millis() as u64;
    let exp = base.saturating_mul(1u64 << attempt.min(30).saturating_sub(1));
    let delay = exp.min(cap);
    delay / 2 + rng.gen_range(0..=delay / 2)
}

/// The manifest entry of a job (the stored bytes).
fn entry_of(t: &TransferJob) -> ManifestEntry {
    ManifestEntry {
        sop_instance_uid: t.sop_instance_uid.clone(),
        sha256: t.sha256.clone(),
        size: t.size,
    }
}

/// De-identifies `bytes` with `profile` (as `vesalius deid` names options): the new bytes, their
/// SOP Instance UID and SHA-256.
pub(crate) fn deid(
    bytes: &[u8],
    profile: &str,
    key: &[u8],
) -> Result<(Bytes, String, String), Error> {
    let opts = deid_options(profile, key)?;
    let (out, report) = vesalius_deid::deidentify_bytes(bytes, &opts)
        .map_err(|e| Error::Peer(format!("de-identification: {e}")))?;
    let sha = vesalius_auth::secret::sha256_hex(&out);
    let sop = report
        .sop_instance_uid
        .ok_or_else(|| Error::Peer("de-identified object without SOP Instance UID".into()))?;
    Ok((Bytes::from(out), sop, sha))
}

/// The options of a route's profile: `basic` followed by option names (`vesalius deid`'s), comma
/// separated, with the site's de-identification key.
pub fn deid_options(profile: &str, key: &[u8]) -> Result<vesalius_deid::DeidOptions, Error> {
    let mut o = vesalius_deid::DeidOptions::new(key);
    for name in profile.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name == "basic" {
            continue;
        }
        let opt = vesalius_deid::ProfileOption::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .ok_or_else(|| Error::Peer(format!("unknown de-identification option {name:?}")))?;
        o = o.option(opt, true);
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let opts = ExchangeOptions {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            ..Default::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for (attempt, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (60, 1000),
        ] {
            for _ in 0..200 {
                let d = backoff_ms(&opts, attempt, &mut rng);
                assert!((full / 2..=full).contains(&d), "attempt {attempt}: {d} ms");
            }
        }
    }
}
