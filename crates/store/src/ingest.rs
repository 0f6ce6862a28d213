//! The ingest path: the one way an instance enters the archive (DESIGN.md, durability contract).
//!
//! 1. The protocol front end streams the bytes into a [`SpoolWriter`] from [`Ingestor::spool`]
//!    (refused early when the disk is below its watermark).
//! 2. [`Ingestor::ingest`] parses the spooled object with hard limits (a blocking thread, so a
//!    slow parse never stalls the runtime), checks its UIDs against what the request declared,
//!    and precomputes the WADO-RS metadata, the QIDO level attributes and the frame offsets.
//! 3. The spool file is fsync'd and handed to the [`BlobStore`], which makes it durable under
//!    `{org}/{study}/{series}/{sop}/{sha256}` (file and directory entries synced).
//! 4. The [`IngestObserver`]s add their side records (outbox rows, audit events) and the
//!    [`Index`] commits everything in one durable, group-committed transaction.
//! 5. Only then does `ingest` return, and the front end may acknowledge.
//!
//! Crash behaviour: a crash before 4 leaves a spool file (emptied at start-up) or a blob without
//! an index row (garbage, reported and swept by `admin check`); after 4 the instance is there.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use vesalius_core::charset::CharacterSet;
use vesalius_core::json::dataset_to_json;
use vesalius_core::parse::{self, DataSet, Element, ParseLimits, ParsedObject, Value};
use vesalius_core::tag::{self, Tag};
use vesalius_core::uid;

use crate::blob::{BlobStore, instance_key};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::journal::{self, JOURNAL_EXT, Journal};
use crate::model::*;
use crate::query::Scope;
use crate::spool::{SpoolWriter, SpooledFile};

/// Called inside the ingest transaction: adds outbox rows, audit events and the like.
pub trait IngestObserver: Send + Sync + 'static {
    /// Returns the side records to commit with `record`.
    fn observe(&self, record: &InstanceRecord, ctx: &IngestContext) -> Vec<SideRecord>;
}

/// Limits applied to incoming objects.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Largest accepted object in bytes.
    pub max_instance_bytes: u64,
    /// Parser limits.
    pub parse: ParseLimits,
    /// Refuse new objects when the spool/blob filesystem has less free space than this.
    pub min_free_bytes: u64,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_instance_bytes: 4 << 30,
            parse: ParseLimits::default(),
            min_free_bytes: 1 << 30,
        }
    }
}

/// Who sent an object and what they said it is (kept in the seal of a journal file, so an
/// instance is ingested again with it after a crash: [`crate::journal`]).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct IngestContext {
    /// Owning organisation.
    pub org: OrgId,
    /// "dimse:AE", "stow", "import".
    pub source: String,
    /// SOP Class UID declared by the request (C-STORE Affected SOP Class UID).
    pub expected_sop_class: Option<String>,
    /// SOP Instance UID declared by the request.
    pub expected_sop_instance: Option<String>,
    /// Study the request is addressed to (STOW-RS `/studies/{study}`).
    pub expected_study: Option<String>,
    /// Who sent it (the calling AE title, the token or session's user), for the audit event
    /// an observer commits with the instance; `None` for the server itself (imports, tests).
    pub actor: Option<crate::audit::Actor>,
    /// The sender's address (`ip:port`), "" when unknown.
    pub source_addr: String,
    /// The sender's user agent (HTTP `User-Agent`, a DICOM peer's Implementation Version
    /// Name), "" when unknown.
    pub user_agent: String,
    /// The AE title the sender called (ours, as a modality addressed us), "" over HTTP; routes
    /// may match on it.
    pub called_ae: String,
    /// The Issuer of Patient ID to index the patient under when the object has a Patient ID
    /// but no issuer (issue 5: a peer's deliveries get `peer:NAME`, so the sender's
    /// unqualified IDs never share a patient record with the receiver's own). The object is
    /// stored unchanged; the index's patient and the study-level QIDO/C-FIND attributes carry
    /// the issuer (docs/patients.md).
    pub default_issuer: Option<String>,
    /// Which rejection notes this ingest may carry out (issue 6: a user's key-image unmark, a
    /// peer writing for one of its users): [`crate::key_objects::Rejections`].
    pub rejections: crate::key_objects::Rejections,
}

/// The extension a sealed journal file gets when it cannot be ingested again at start-up.
pub const FAILED_EXT: &str = "journal-failed";

/// What an ingest produced.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// Stored, duplicate or replaced.
    pub outcome: IngestOutcome,
    /// The instance.
    pub instance: StoredInstance,
}

/// The ingest pipeline.
pub struct Ingestor {
    index: Arc<dyn Index>,
    blobs: Arc<dyn BlobStore>,
    observers: Vec<Arc<dyn IngestObserver>>,
    limits: IngestLimits,
    spool_dir: PathBuf,
    journal: Option<Arc<Journal>>,
    /// Held when this process owns the spool (`None`: another process, such as a running
    /// server, does; then the spool is neither emptied nor recovered here).
    spool_lock: Option<crate::spool::SpoolLock>,
}

/// What [`Ingestor::recover`] found in the journal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Sealed journal files ingested again.
    pub replayed: usize,
    /// Unsealed or torn journal files removed (never acknowledged).
    pub discarded: usize,
    /// Sealed files that could not be ingested again, kept as `*.journal-failed`.
    pub failed: usize,
}

impl Ingestor {
    /// Builds the pipeline; `spool_dir` must be on the same filesystem as local blobs.
    pub fn new(
        index: Arc<dyn Index>,
        blobs: Arc<dyn BlobStore>,
        spool_dir: PathBuf,
        limits: IngestLimits,
    ) -> Result<Self> {
        std::fs::create_dir_all(&spool_dir).map_err(Error::Spool)?;
        let spool_lock = crate::spool::SpoolLock::try_acquire(&spool_dir)?;
        // Anything left in the spool was never acknowledged (see the module doc), except
        // journal files, which [`Ingestor::recover`] reads (and failed ones, kept for a person).
        // Only the owner of the spool cleans it: another process's files may be in flight.
        if spool_lock.is_none() {
            tracing::info!(spool = %spool_dir.display(), "the spool belongs to another process (a running server): left alone");
        } else if let Ok(rd) = std::fs::read_dir(&spool_dir) {
            for e in rd.flatten() {
                let ext = e
                    .path()
                    .extension()
                    .map(|x| x.to_string_lossy().into_owned());
                let keep = matches!(ext.as_deref(), Some(JOURNAL_EXT | FAILED_EXT))
                    || e.file_name() == crate::spool::LOCK_FILE;
                if !keep {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(Ingestor {
            index,
            blobs,
            observers: Vec::new(),
            limits,
            spool_dir,
            journal: None,
            spool_lock,
        })
    }

    /// Whether this process owns the spool directory (see [`crate::spool::SpoolLock`]): only
    /// then may it use a journal there and recover one.
    pub fn owns_spool(&self) -> bool {
        self.spool_lock.is_some()
    }

    /// Spools into the journal's files from now on: one flush per instance (see
    /// [`crate::journal`]). The journal must live in this ingestor's spool directory.
    pub fn with_journal(mut self, journal: Arc<Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// The journal, when there is one.
    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal.as_ref()
    }

    /// Makes every acknowledged instance durable without its journal file (a journal
    /// checkpoint); a no-op without a journal. Deletions call it first, since a journal file
    /// ingested again after a crash would bring a deleted instance back.
    pub async fn checkpoint(&self) -> Result<()> {
        match &self.journal {
            Some(j) => j.checkpoint().await,
            None => Ok(()),
        }
    }

    /// Deletes the index rows in scope ([`Index::delete`]) after a journal checkpoint: a
    /// journal file ingested again after a crash would bring a deleted instance back. The
    /// caller deletes the blobs of what it returns.
    pub async fn delete(&self, scope: &Scope) -> Result<Vec<StoredInstance>> {
        self.checkpoint().await?;
        self.index.delete(scope).await
    }

    /// [`Ingestor::delete`] with the audit events of what was removed in the same transaction
    /// ([`Index::delete_audited`]).
    pub async fn delete_audited(
        &self,
        scope: &Scope,
        audit: crate::index::DeleteAudit,
    ) -> Result<Vec<StoredInstance>> {
        self.checkpoint().await?;
        self.index.delete_audited(scope, audit).await
    }

    /// Ingests again every sealed journal file left by a crash, in sealing order, and removes
    /// unsealed or torn ones (see [`crate::journal`]); call once at start-up, after the
    /// observers are added and before serving. A sealed file that fails is renamed
    /// `*.journal-failed` and kept. Nothing is done when another process owns the spool.
    pub async fn recover(&self) -> Result<Recovered> {
        if !self.owns_spool() {
            // A running server owns these files; it recovered them at its own start.
            return Ok(Recovered::default());
        }
        let dir = self.spool_dir.clone();
        let found = tokio::task::spawn_blocking(move || journal::scan(&dir))
            .await
            .map_err(|e| Error::Unavailable(format!("journal scan: {e}")))?;
        let mut r = Recovered::default();
        for f in found {
            match f {
                journal::Found::Unsealed(p) => {
                    if self.journal.as_ref().is_some_and(|j| j.is_free(&p)) {
                        continue;
                    }
                    // Empty: a free file of an earlier run's pool; else never acknowledged.
                    let empty = std::fs::metadata(&p).is_ok_and(|m| m.len() == 0);
                    let _ = std::fs::remove_file(&p);
                    r.discarded += usize::from(!empty);
                }
                journal::Found::Sealed(p, seal) => {
                    let spooled = SpooledFile::from_journal(p.clone(), seal.size, seal.sha256);
                    match self.ingest(spooled, &seal.ctx).await {
                        Ok(done) => {
                            r.replayed += 1;
                            tracing::info!(
                                sop = %done.instance.sop_instance_uid,
                                outcome = ?done.outcome,
                                file = %p.display(),
                                "journal: instance ingested again after a crash"
                            );
                        }
                        Err(e) => {
                            r.failed += 1;
                            let _ = std::fs::rename(&p, p.with_extension(FAILED_EXT));
                            tracing::error!(file = %p.display(), error = %e, "journal: a sealed file could not be ingested again; kept as .journal-failed");
                        }
                    }
                }
            }
        }
        self.checkpoint().await?;
        Ok(r)
    }

    /// Adds an observer called inside every ingest transaction.
    pub fn with_observer(mut self, o: Arc<dyn IngestObserver>) -> Self {
        self.observers.push(o);
        self
    }

    /// The index.
    pub fn index(&self) -> &Arc<dyn Index> {
        &self.index
    }

    /// The blob store.
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    /// The limits.
    pub fn limits(&self) -> &IngestLimits {
        &self.limits
    }

    /// Opens a spool file for a new object; refused when the disk is below its watermark.
    pub fn spool(&self) -> Result<SpoolWriter> {
        self.check_free_space()?;
        let max = self.limits.max_instance_bytes;
        if let Some(path) = self.journal.as_ref().and_then(|j| j.take()) {
            match SpoolWriter::journal(path.clone(), max) {
                Ok(w) => return Ok(w),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "journal file unusable");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        SpoolWriter::create(&self.spool_dir, max)
    }

    /// Free bytes on the filesystem of the spool (and so of the blobs beside it).
    pub fn free_bytes(&self) -> Result<u64> {
        free_bytes(&self.spool_dir).map_err(Error::Spool)
    }

    /// Fails with [`Error::InsufficientStorage`] when free space is below the watermark.
    pub fn check_free_space(&self) -> Result<()> {
        if self.limits.min_free_bytes == 0 {
            return Ok(());
        }
        let free = free_bytes(&self.spool_dir).map_err(Error::Spool)?;
        if free < self.limits.min_free_bytes {
            return Err(Error::InsufficientStorage(format!(
                "{free} bytes free, the watermark is {}",
                self.limits.min_free_bytes
            )));
        }
        Ok(())
    }

    /// Spools a bare data set (as a C-STORE carries it) behind a Part 10 file meta header.
    pub fn spool_with_meta(
        &self,
        sop_class: &str,
        sop_instance: &str,
        transfer_syntax: &str,
        source_ae: Option<&str>,
    ) -> Result<SpoolWriter> {
        let mut w = self.spool()?;
        w.write(&file_meta(
            sop_class,
            sop_instance,
            transfer_syntax,
            source_ae,
        ))?;
        Ok(w)
    }

    /// Under [`crate::key_objects::Rejections::KeyImagesOf`], refuses an object that would
    /// reject anything but that creator's key image documents of the study, or that claims
    /// another creator ([`crate::key_objects::refusal`]).
    async fn check_rejections(
        &self,
        record: &InstanceRecord,
        rejects: &[String],
        ctx: &IngestContext,
    ) -> Result<()> {
        let crate::key_objects::Rejections::KeyImagesOf(who) = &ctx.rejections else {
            return Ok(());
        };
        let json: serde_json::Value = serde_json::from_str(&record.metadata_json)
            .map_err(|e| Error::Index(format!("metadata of the new object: {e}")))?;
        let mut rejected = Vec::with_capacity(rejects.len());
        for sop in rejects {
            let scope = Scope {
                access: Some(crate::query::Access::orgs([record.org.as_str()])),
                study: Some(record.study.study_uid.clone()),
                instance: Some(sop.clone()),
                ..Default::default()
            };
            let doc = match self.index.metadata(&scope).await?.into_iter().next() {
                Some(m) => Some(
                    serde_json::from_str(&m.json)
                        .map_err(|e| Error::Index(format!("metadata of {sop}: {e}")))?,
                ),
                None => None,
            };
            rejected.push((sop.clone(), doc));
        }
        match crate::key_objects::refusal(&json, who.as_deref(), &rejected) {
            Some(why) => {
                tracing::warn!(sop = %record.instance.sop_instance_uid, why, "rejection refused");
                Err(Error::Forbidden(why))
            }
            None => Ok(()),
        }
    }

    /// Parses, persists and commits a spooled object; returns once it is durable (or, for a
    /// journal file, once its journal file is sealed and synced: [`crate::journal`]).
    pub async fn ingest(&self, spooled: SpooledFile, ctx: &IngestContext) -> Result<Ingested> {
        let started = std::time::Instant::now();
        let limits = self.limits.parse;
        let ctx_owned = ctx.clone();
        let journal = self.journal.clone().filter(|_| spooled.is_journal());
        let recovering = spooled.is_recovered();
        let blobs = self.blobs.clone();
        let (spooled, built) = match journal {
            // Two blocking tasks at once: one seals and fsyncs the journal file while the other
            // parses it (so the parse costs no time of its own before the acknowledgement); the
            // first links it to its key once both are done: a blob is never published before its
            // bytes are durable.
            Some(j) => {
                let (key_tx, key_rx) = std::sync::mpsc::sync_channel::<Option<String>>(1);
                let (path, size, sha256) = (
                    spooled.path().to_owned(),
                    spooled.size,
                    spooled.sha256.clone(),
                );
                let ctx_seal = ctx_owned.clone();
                let sealing = tokio::task::spawn_blocking(move || {
                    let mut spooled = spooled;
                    let r = seal_then_link(&mut spooled, &j, &*blobs, &ctx_seal, &key_rx);
                    (spooled, r)
                });
                let parsing = tokio::task::spawn_blocking(move || {
                    let built = parse_spooled(&path, size, &limits).and_then(|parsed| {
                        let org = ctx_owned.org.clone();
                        let source = ctx_owned.source.clone();
                        build_record(&parsed, size, &sha256, &ctx_owned, org, source)
                    });
                    let _ = key_tx.send(built.as_ref().ok().map(|b| b.0.blob_key.clone()));
                    built
                });
                let (sealed, parsed) = tokio::join!(sealing, parsing);
                let task =
                    |e: tokio::task::JoinError| Error::Unavailable(format!("ingest task: {e}"));
                let (spooled, linked) = sealed.map_err(task)?;
                let built = parsed.map_err(task)?;
                (spooled, built.and_then(|b| Ok((b, linked?))))
            }
            // One blocking hop: parse with limits, validate, precompute, then fsync.
            None => tokio::task::spawn_blocking(move || {
                let mut spooled = spooled;
                let built = parse_spooled(spooled.path(), spooled.size, &limits)
                    .and_then(|parsed| {
                        let org = ctx_owned.org.clone();
                        let source = ctx_owned.source.clone();
                        build_record(
                            &parsed,
                            spooled.size,
                            &spooled.sha256,
                            &ctx_owned,
                            org,
                            source,
                        )
                    })
                    .and_then(|built| spooled.sync().map(|_| (built, None)));
                (spooled, built)
            })
            .await
            .map_err(|e| Error::Unavailable(format!("ingest task: {e}")))?,
        };
        let ((record, mut rejects), linked) = built?;
        if ctx.rejections == crate::key_objects::Rejections::Ignore && !rejects.is_empty() {
            tracing::info!(
                sop = %record.instance.sop_instance_uid,
                "rejection note from a guest upload: stored, hides nothing"
            );
            rejects.clear();
        }
        if let Err(e) = self.check_rejections(&record, &rejects, ctx).await {
            // Refused before anything is committed (a journal file is not ingested again).
            if let (Some(_), Some(j)) = (&linked, &self.journal)
                && !recovering
            {
                j.discard(spooled.path());
            }
            return Err(e);
        }
        let parsed_at = started.elapsed();

        // Durable blob first: an index row must never point at a blob that could vanish (with
        // the journal: its journal file is that durable copy until the checkpoint).
        let key = record.blob_key.clone();
        let journal_file = spooled.path().to_owned();
        let journaled = match linked {
            Some(dirs) => Some(dirs),
            None => {
                self.blobs.persist(spooled.path(), &key).await?;
                None
            }
        };
        let persisted_at = started.elapsed();
        spooled.disarm();

        let side = self
            .observers
            .iter()
            .flat_map(|o| o.observe(&record, ctx))
            .collect();
        let instance = StoredInstance {
            org: record.org.clone(),
            study_uid: record.study.study_uid.clone(),
            series_uid: record.series.series_uid.clone(),
            sop_class_uid: record.instance.sop_class_uid.clone(),
            sop_instance_uid: record.instance.sop_instance_uid.clone(),
            transfer_syntax: record.instance.transfer_syntax.clone(),
            blob_key: record.blob_key.clone(),
            size: record.size,
            sha256: record.sha256.clone(),
            number: record.instance.number,
        };
        let commit = IngestCommit {
            record,
            side,
            rejects,
        };
        let outcome = match (journaled, &self.journal) {
            (Some(dirs), Some(j)) => match self.index.commit_unsynced(commit).await {
                Ok(o) => {
                    j.committed(journal_file, dirs);
                    o
                }
                Err(e) => {
                    // Not acknowledged: the journal file must not be ingested again (unless it
                    // was acknowledged before a crash: then it is kept, see `recover`).
                    if !recovering {
                        j.discard(&journal_file);
                    }
                    return Err(e);
                }
            },
            _ => self.index.commit(commit).await?,
        };
        tracing::debug!(
            sop = %instance.sop_instance_uid,
            parse_and_sync_us = parsed_at.as_micros() as u64,
            persist_us = (persisted_at - parsed_at).as_micros() as u64,
            commit_us = (started.elapsed() - persisted_at).as_micros() as u64,
            "ingested"
        );
        // Metrics by source kind ("dimse", "stow", "api", ...), not by peer.
        let kind = ctx.source.split(':').next().unwrap_or("other").to_owned();
        metrics::counter!("vesalius_instances_received_total", "source" => kind.clone())
            .increment(1);
        metrics::counter!("vesalius_bytes_received_total", "source" => kind.clone())
            .increment(instance.size);
        metrics::histogram!("vesalius_ingest_latency_seconds", "source" => kind)
            .record(started.elapsed().as_secs_f64());
        Ok(Ingested { outcome, instance })
    }
}

/// Seals and fsyncs a journal file, then, once the parse sends its blob key (`None`: the parse
/// failed), links it to that key without syncs; returns the directories the checkpoint must
/// sync (`None`: not linked, the caller persists it the usual way).
fn seal_then_link(
    spooled: &mut SpooledFile,
    journal: &Journal,
    blobs: &dyn BlobStore,
    ctx: &IngestContext,
    key: &std::sync::mpsc::Receiver<Option<String>>,
) -> Result<Option<Vec<PathBuf>>> {
    let (size, sha256) = (spooled.size, spooled.sha256.clone());
    let sealed = journal.seal(spooled.file()?, size, &sha256, ctx)?;
    spooled.sync()?;
    let Ok(Some(key)) = key.recv() else {
        return Ok(None);
    };
    if !sealed {
        return Ok(None);
    }
    match blobs.persist_unsynced(spooled.path(), &key) {
        Some(r) => r.map(|(_, dirs)| Some(dirs)),
        None => Ok(None),
    }
}

fn parse_spooled(path: &Path, size: u64, limits: &ParseLimits) -> Result<ParsedObject> {
    let f = std::fs::File::open(path).map_err(Error::Spool)?;
    let r = std::io::BufReader::with_capacity(64 << 10, f);
    Ok(parse::parse_file(r, size, limits)?)
}

/// Builds the File Meta Information group (PS3.10 7.1) for a data set received over the network.
pub fn file_meta(
    sop_class: &str,
    sop_instance: &str,
    ts: &str,
    source_ae: Option<&str>,
) -> Vec<u8> {
    fn el(out: &mut Vec<u8>, t: Tag, vr: &[u8; 2], v: &[u8], pad: u8) {
        let mut v = v.to_vec();
        if v.len() % 2 == 1 {
            v.push(pad);
        }
        out.extend_from_slice(&((t >> 16) as u16).to_le_bytes());
        out.extend_from_slice(&((t & 0xFFFF) as u16).to_le_bytes());
        out.extend_from_slice(vr);
        if vr == b"OB" {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(&v);
    }
    let mut body = Vec::with_capacity(256);
    el(
        &mut body,
        tag::FILE_META_INFORMATION_VERSION,
        b"OB",
        &[0, 1],
        0,
    );
    el(
        &mut body,
        tag::MEDIA_STORAGE_SOP_CLASS_UID,
        b"UI",
        uid::trim_uid(sop_class).as_bytes(),
        0,
    );
    el(
        &mut body,
        tag::MEDIA_STORAGE_SOP_INSTANCE_UID,
        b"UI",
        uid::trim_uid(sop_instance).as_bytes(),
        0,
    );
    el(
        &mut body,
        tag::TRANSFER_SYNTAX_UID,
        b"UI",
        uid::trim_uid(ts).as_bytes(),
        0,
    );
    el(
        &mut body,
        tag::IMPLEMENTATION_CLASS_UID,
        b"UI",
        IMPLEMENTATION_CLASS_UID.as_bytes(),
        0,
    );
    el(
        &mut body,
        tag::IMPLEMENTATION_VERSION_NAME,
        b"SH",
        IMPLEMENTATION_VERSION_NAME.as_bytes(),
        b' ',
    );
    if let Some(ae) = source_ae.filter(|a| !a.is_empty()) {
        el(
            &mut body,
            tag::SOURCE_APPLICATION_ENTITY_TITLE,
            b"AE",
            ae.trim().as_bytes(),
            b' ',
        );
    }
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    el(
        &mut out,
        tag::FILE_META_INFORMATION_GROUP_LENGTH,
        b"UL",
        &(body.len() as u32).to_le_bytes(),
        0,
    );
    out.extend_from_slice(&body);
    out
}

/// Our Implementation Class UID (PS3.7 D.3.3.2), under the UUID-derived root 2.25.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.143386247271958049164617452452154213505";
/// Our Implementation Version Name.
pub const IMPLEMENTATION_VERSION_NAME: &str = "VESALIUS_01";

fn required<'a>(ds: &'a DataSet, t: Tag, name: &'static str) -> Result<&'a str> {
    let v = ds.str(t).ok_or_else(|| {
        Error::Mismatch(format!(
            "missing required attribute {name} {}",
            tag::display(t)
        ))
    })?;
    if !uid::is_valid_uid(v) {
        return Err(Error::Mismatch(format!("{name} {v:?} is not a valid UID")));
    }
    Ok(v)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Attributes kept for QIDO study-level answers (PS3.18 Table 10.6.3-3 and the Patient and
/// General Study modules); group 0010 is kept whole.
const STUDY_TAGS: &[Tag] = &[
    tag::SPECIFIC_CHARACTER_SET,
    tag::STUDY_DATE,
    tag::STUDY_TIME,
    tag::ACCESSION_NUMBER,
    tag::REFERRING_PHYSICIAN_NAME,
    tag::TIMEZONE_OFFSET_FROM_UTC,
    tag::STUDY_DESCRIPTION,
    tag::STUDY_INSTANCE_UID,
    tag::STUDY_ID,
    0x0008_1032, // ProcedureCodeSequence
    0x0032_1060, // RequestedProcedureDescription
];

/// Attributes kept for QIDO series-level answers (PS3.18 Table 10.6.3-4).
const SERIES_TAGS: &[Tag] = &[
    tag::SPECIFIC_CHARACTER_SET,
    tag::SERIES_DATE,
    tag::SERIES_TIME,
    tag::MODALITY,
    tag::MANUFACTURER,
    tag::INSTITUTION_NAME,
    tag::SERIES_DESCRIPTION,
    tag::BODY_PART_EXAMINED,
    tag::STUDY_INSTANCE_UID,
    tag::SERIES_INSTANCE_UID,
    tag::SERIES_NUMBER,
    0x0008_1111, // ReferencedPerformedProcedureStepSequence
    0x0040_0244, // PerformedProcedureStepStartDate
    0x0040_0245, // PerformedProcedureStepStartTime
    0x0040_0275, // RequestAttributesSequence
    0x0018_5100, // PatientPosition
    0x0020_0060, // Laterality
];

/// Attributes kept for QIDO instance-level answers (PS3.18 Table 10.6.3-5).
const INSTANCE_TAGS: &[Tag] = &[
    tag::SPECIFIC_CHARACTER_SET,
    tag::IMAGE_TYPE,
    tag::SOP_CLASS_UID,
    tag::SOP_INSTANCE_UID,
    tag::STUDY_INSTANCE_UID,
    tag::SERIES_INSTANCE_UID,
    tag::CONTENT_DATE,
    tag::CONTENT_TIME,
    tag::INSTANCE_NUMBER,
    tag::SAMPLES_PER_PIXEL,
    tag::PHOTOMETRIC_INTERPRETATION,
    tag::NUMBER_OF_FRAMES,
    tag::ROWS,
    tag::COLUMNS,
    tag::BITS_ALLOCATED,
    tag::WINDOW_CENTER,
    tag::WINDOW_WIDTH,
    0x0020_0032, // ImagePositionPatient
    0x0020_0037, // ImageOrientationPatient
    0x0028_0030, // PixelSpacing
    0x0018_0050, // SliceThickness
    0x0040_A043, // ConceptNameCodeSequence
    0x0040_A491, // CompletionFlag
    0x0040_A493, // VerificationFlag
];

fn level_json(ds: &DataSet, keep: impl Fn(Tag) -> bool) -> String {
    let filtered = DataSet {
        elements: ds
            .elements
            .iter()
            .filter(|e| keep(e.tag))
            .cloned()
            .collect::<Vec<Element>>(),
    };
    serde_json::Value::Object(dataset_to_json(&filtered, None)).to_string()
}

/// The study-level DICOM JSON `json` with Issuer of Patient ID (0010,0021) set to `issuer`
/// (see [`IngestContext::default_issuer`]).
fn with_issuer(json: &str, issuer: &str) -> String {
    let mut m: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).unwrap_or_default();
    m.insert(
        format!("{:08X}", tag::ISSUER_OF_PATIENT_ID),
        serde_json::json!({"vr": "LO", "Value": [issuer]}),
    );
    serde_json::Value::Object(m).to_string()
}

fn build_record(
    p: &ParsedObject,
    size: u64,
    sha256: &str,
    ctx: &IngestContext,
    org: OrgId,
    source: String,
) -> Result<(InstanceRecord, Vec<String>)> {
    let ds = &p.dataset;
    let sop_class = required(ds, tag::SOP_CLASS_UID, "SOPClassUID")?;
    let sop_instance = required(ds, tag::SOP_INSTANCE_UID, "SOPInstanceUID")?;
    let study_uid = required(ds, tag::STUDY_INSTANCE_UID, "StudyInstanceUID")?;
    let series_uid = required(ds, tag::SERIES_INSTANCE_UID, "SeriesInstanceUID")?;
    // PS3.4 B.2.3 / C-STORE: the data set must be the instance the command announced.
    if let Some(exp) = &ctx.expected_sop_instance
        && uid::trim_uid(exp) != sop_instance
    {
        return Err(Error::Mismatch(format!(
            "SOP Instance UID {sop_instance} differs from the request's {exp}"
        )));
    }
    if let Some(exp) = &ctx.expected_sop_class
        && uid::trim_uid(exp) != sop_class
    {
        return Err(Error::Mismatch(format!(
            "SOP Class UID {sop_class} differs from the request's {exp}"
        )));
    }
    if let Some(exp) = &ctx.expected_study
        && exp != study_uid
    {
        return Err(Error::Mismatch(format!(
            "Study Instance UID {study_uid} differs from the target study {exp}"
        )));
    }
    if let Some(meta_sop) = p.meta.str(tag::MEDIA_STORAGE_SOP_INSTANCE_UID)
        && meta_sop != sop_instance
    {
        // PS3.10 7.1 requires equality, but real files break it; the data set is authoritative
        // and the object is kept unchanged, as received.
        tracing::warn!(
            media_storage_sop_instance_uid = meta_sop,
            sop_instance_uid = sop_instance,
            "file meta SOP Instance UID differs from the data set's; indexing the data set's"
        );
    }
    let cs = CharacterSet::from_value(ds.bytes(tag::SPECIFIC_CHARACTER_SET));
    let frames_declared = ds.int(tag::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as u32;
    let frame_index = frame_index(ds, p);
    let frames = if p.pixel_data.is_some() {
        frames_declared
    } else {
        0
    };
    let metadata_json =
        serde_json::Value::Object(dataset_to_json(ds, p.pixel_data.as_ref())).to_string();
    let patient_id = ds.text(&cs, tag::PATIENT_ID);
    let mut issuer = ds.text(&cs, tag::ISSUER_OF_PATIENT_ID);
    let mut study_json = level_json(ds, |t| tag::group(t) == 0x0010 || STUDY_TAGS.contains(&t));
    if let Some(d) = ctx.default_issuer.as_deref()
        && issuer.is_empty()
        && !patient_id.is_empty()
        && !d.is_empty()
    {
        issuer = d.to_owned();
        study_json = with_issuer(&study_json, d);
    }
    let record = InstanceRecord {
        org: org.clone(),
        patient: PatientAttrs {
            patient_id,
            issuer,
            name: ds.text(&cs, tag::PATIENT_NAME),
            birth_date: ds.str(tag::PATIENT_BIRTH_DATE).unwrap_or("").to_owned(),
            sex: ds.str(tag::PATIENT_SEX).unwrap_or("").to_owned(),
        },
        study: StudyAttrs {
            study_uid: study_uid.to_owned(),
            date: ds.str(tag::STUDY_DATE).unwrap_or("").replace('.', ""),
            time: ds.str(tag::STUDY_TIME).unwrap_or("").replace(':', ""),
            accession: ds.text(&cs, tag::ACCESSION_NUMBER),
            referring_physician: ds.text(&cs, tag::REFERRING_PHYSICIAN_NAME),
            description: ds.text(&cs, tag::STUDY_DESCRIPTION),
            study_id: ds.text(&cs, tag::STUDY_ID),
        },
        series: SeriesAttrs {
            series_uid: series_uid.to_owned(),
            modality: ds.str(tag::MODALITY).unwrap_or("").to_owned(),
            number: ds.int(tag::SERIES_NUMBER),
            description: ds.text(&cs, tag::SERIES_DESCRIPTION),
            body_part: ds.str(tag::BODY_PART_EXAMINED).unwrap_or("").to_owned(),
        },
        instance: InstanceAttrs {
            sop_class_uid: sop_class.to_owned(),
            sop_instance_uid: sop_instance.to_owned(),
            number: ds.int(tag::INSTANCE_NUMBER),
            transfer_syntax: p.transfer_syntax.clone(),
            rows: ds.u16(tag::ROWS),
            columns: ds.u16(tag::COLUMNS),
            frames,
        },
        blob_key: instance_key(&org, study_uid, series_uid, sop_instance, sha256),
        size,
        sha256: sha256.to_owned(),
        metadata_json,
        study_json,
        series_json: level_json(ds, |t| SERIES_TAGS.contains(&t)),
        instance_json: level_json(ds, |t| INSTANCE_TAGS.contains(&t)),
        frame_index,
        source,
        received_ms: now_ms(),
    };
    let rejects = rejected_instances(ds);
    Ok((record, rejects))
}

/// Frame locations (PS3.5 8.2 native, A.4 encapsulated).
fn frame_index(ds: &DataSet, p: &ParsedObject) -> FrameIndex {
    let Some(px) = &p.pixel_data else {
        return FrameIndex::default();
    };
    if p.encoding.deflated {
        // Offsets in a deflated stream are not blob offsets: frames are decoded on demand.
        return FrameIndex::default();
    }
    let n = ds.int(tag::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as usize;
    match &px.value {
        // Native YBR_FULL_422 stores two samples per pixel on average (PS3.3 C.7.6.3.1.2), not
        // Samples per Pixel: not indexed, its frames are decoded (expanded to YBR_FULL).
        Value::Bulk { .. }
            if ds.str(tag::PHOTOMETRIC_INTERPRETATION).map(str::trim) == Some("YBR_FULL_422") =>
        {
            FrameIndex::default()
        }
        Value::Bulk { offset, length } => {
            let rows = u64::from(ds.u16(tag::ROWS).unwrap_or(0));
            let cols = u64::from(ds.u16(tag::COLUMNS).unwrap_or(0));
            let spp = u64::from(ds.u16(tag::SAMPLES_PER_PIXEL).unwrap_or(1));
            let bits = u64::from(ds.u16(tag::BITS_ALLOCATED).unwrap_or(8));
            let frame_len = (rows * cols * spp * bits).div_ceil(8);
            if frame_len == 0 || frame_len > u64::from(u32::MAX) {
                return FrameIndex::default();
            }
            let frames = (0..n as u64)
                .take_while(|i| (i + 1) * frame_len <= *length)
                .map(|i| vec![(offset + i * frame_len, frame_len as u32)])
                .collect();
            FrameIndex { frames }
        }
        Value::Encapsulated {
            offset_table,
            fragments,
        } => {
            if fragments.is_empty() {
                return FrameIndex::default();
            }
            let frames = if n == 1 {
                vec![fragments.clone()]
            } else if fragments.len() == n {
                fragments.iter().map(|f| vec![*f]).collect()
            } else if offset_table.len() == n {
                // BOT entries are offsets of each frame's first item tag from the first fragment's
                // item tag (PS3.5 A.4); each item header is 8 bytes.
                let base = fragments[0].0 - 8;
                let mut out: Vec<Vec<(u64, u32)>> = vec![Vec::new(); n];
                for f in fragments {
                    let rel = (f.0 - 8 - base) as u32;
                    let idx = offset_table.iter().rposition(|&o| o <= rel).unwrap_or(0);
                    out[idx].push(*f);
                }
                out
            } else {
                // Unknown split: serve everything as frame 1 rather than guess.
                vec![fragments.clone()]
            };
            FrameIndex { frames }
        }
        _ => FrameIndex::default(),
    }
}

/// IOCM rejection notes (PS3.3 C.17.6.2, CID 7011): a Key Object Selection Document whose
/// Concept Name is one of the rejection codes rejects every instance it references.
fn rejected_instances(ds: &DataSet) -> Vec<String> {
    if ds.str(tag::SOP_CLASS_UID) != Some(uid::KEY_OBJECT_SELECTION_DOCUMENT) {
        return Vec::new();
    }
    let code = ds
        .items(tag::CONCEPT_NAME_CODE_SEQUENCE)
        .and_then(|i| i.first())
        .map(|c| {
            (
                c.str(tag::CODE_VALUE).unwrap_or(""),
                c.str(tag::CODING_SCHEME_DESIGNATOR).unwrap_or(""),
            )
        });
    let is_rejection = matches!(
        code,
        Some(("113001" | "113037" | "113038" | "113039", "DCM"))
    );
    if !is_rejection {
        return Vec::new();
    }
    let mut out = Vec::new();
    for study in ds
        .items(tag::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE)
        .unwrap_or(&[])
    {
        for series in study.items(tag::REFERENCED_SERIES_SEQUENCE).unwrap_or(&[]) {
            for sop in series.items(tag::REFERENCED_SOP_SEQUENCE).unwrap_or(&[]) {
                if let Some(u) = sop.str(tag::REFERENCED_SOP_INSTANCE_UID) {
                    out.push(u.to_owned());
                }
            }
        }
    }
    out
}

/// Free bytes on the filesystem holding `path` (statvfs).
#[allow(unsafe_code)]
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path with NUL"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}
