//! In-memory [`Index`] and [`BlobStore`]: the reference model for tests and the semantics every
//! durable backend must agree with. Nothing here survives a restart.
//!
//! [`MemoryIndex`] appends the [`SideRecord::Audit`] events of a commit to its
//! [`MemoryAuditLog`] while it holds its row lock, so an instance and its audit events appear
//! together (the in-memory form of "one transaction"); a duplicate commit adds neither.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

use crate::blob::{BlobEntry, BlobStore, Persisted};
use crate::error::{Error, Result};
use crate::index::{Index, IndexStats, IndexedBlob, InstanceMetadata};
use crate::memory_directory::MemoryAuditLog;
use crate::model::*;
use crate::query::{Access, Answer, Computed, Key, Level, Query, Scope, StudyOrder, answer};

/// Blobs in a map.
#[derive(Default)]
pub struct MemoryBlobStore {
    blobs: Mutex<BTreeMap<String, Bytes>>,
}

#[async_trait]
impl BlobStore for MemoryBlobStore {
    async fn persist(&self, spool: &Path, key: &str) -> Result<Persisted> {
        let bytes = std::fs::read(spool).map_err(|e| Error::blob(key, e))?;
        let _ = std::fs::remove_file(spool);
        let mut m = self.blobs.lock().expect("lock");
        if m.contains_key(key) {
            return Ok(Persisted::AlreadyExisted);
        }
        m.insert(key.to_owned(), Bytes::from(bytes));
        Ok(Persisted::Created)
    }

    async fn read_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let b = self.get(key)?;
        if range.end > b.len() as u64 || range.start > range.end {
            return Err(Error::blob(key, std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(b.slice(range.start as usize..range.end as usize))
    }

    async fn read(&self, key: &str) -> Result<BoxStream<'static, Result<Bytes>>> {
        let b = self.get(key)?;
        Ok(stream::iter([Ok(b)]).boxed())
    }

    async fn size(&self, key: &str) -> Result<u64> {
        Ok(self.get(key)?.len() as u64)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.blobs.lock().expect("lock").remove(key);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<BlobEntry>> {
        Ok(self
            .blobs
            .lock()
            .expect("lock")
            .iter()
            .map(|(k, v)| BlobEntry {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }
}

impl MemoryBlobStore {
    fn get(&self, key: &str) -> Result<Bytes> {
        self.blobs
            .lock()
            .expect("lock")
            .get(key)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("blob {key}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Current,
    Prior,
    Rejected,
}

#[derive(Debug, Clone)]
struct Row {
    rec: InstanceRecord,
    status: Status,
    superseded_ms: i64,
}

/// An index in a vector, evaluated with the reference matching semantics.
///
/// `MemoryIndex::default()` keeps its ingest audit events in a log of its own;
/// [`MemoryIndex::with_audit`] shares one with a [`crate::memory_directory::MemoryDirectory`].
#[derive(Default)]
pub struct MemoryIndex {
    rows: Mutex<Vec<Row>>,
    audit: Arc<MemoryAuditLog>,
    outbox: Option<Arc<crate::outbox::MemoryOutbox>>,
}

fn stored(r: &InstanceRecord) -> StoredInstance {
    StoredInstance {
        org: r.org.clone(),
        study_uid: r.study.study_uid.clone(),
        series_uid: r.series.series_uid.clone(),
        sop_class_uid: r.instance.sop_class_uid.clone(),
        sop_instance_uid: r.instance.sop_instance_uid.clone(),
        transfer_syntax: r.instance.transfer_syntax.clone(),
        blob_key: r.blob_key.clone(),
        size: r.size,
        sha256: r.sha256.clone(),
        number: r.instance.number,
    }
}

fn visible(access: Option<&Access>, r: &InstanceRecord) -> bool {
    access.is_none_or(|a| {
        a.allows(
            &r.org,
            &r.study.study_uid,
            &r.patient.issuer,
            &r.patient.patient_id,
        )
    })
}

fn in_scope(r: &InstanceRecord, s: &Scope) -> bool {
    visible(s.access.as_ref(), r)
        && s.study.as_ref().is_none_or(|u| *u == r.study.study_uid)
        && s.series.as_ref().is_none_or(|u| *u == r.series.series_uid)
        && s.instance
            .as_ref()
            .is_none_or(|u| *u == r.instance.sop_instance_uid)
}

/// The stored value(s) of a key for one instance record.
fn values(r: &InstanceRecord, key: Key) -> Vec<String> {
    let one = |s: &str| vec![s.to_owned()];
    match key {
        Key::PatientName => one(&r.patient.name),
        Key::PatientId => one(&r.patient.patient_id),
        Key::IssuerOfPatientId => one(&r.patient.issuer),
        Key::PatientBirthDate => one(&r.patient.birth_date),
        Key::PatientSex => one(&r.patient.sex),
        Key::StudyInstanceUid => one(&r.study.study_uid),
        Key::StudyDate => one(&r.study.date),
        Key::StudyTime => one(&r.study.time),
        Key::AccessionNumber => one(&r.study.accession),
        Key::ReferringPhysicianName => one(&r.study.referring_physician),
        Key::StudyDescription => one(&r.study.description),
        Key::StudyId => one(&r.study.study_id),
        Key::ModalitiesInStudy => one(&r.series.modality),
        Key::SeriesInstanceUid => one(&r.series.series_uid),
        Key::Modality => one(&r.series.modality),
        Key::SeriesNumber => r.series.number.map(|n| n.to_string()).into_iter().collect(),
        Key::SeriesDescription => one(&r.series.description),
        Key::SopInstanceUid => one(&r.instance.sop_instance_uid),
        Key::SopClassUid => one(&r.instance.sop_class_uid),
        Key::InstanceNumber => r
            .instance
            .number
            .map(|n| n.to_string())
            .into_iter()
            .collect(),
    }
}

impl MemoryIndex {
    /// An empty index appending ingest audit events to `audit`.
    pub fn with_audit(audit: Arc<MemoryAuditLog>) -> Self {
        MemoryIndex {
            rows: Mutex::default(),
            audit,
            outbox: None,
        }
    }

    /// Adds the outbox that the [`SideRecord::Outbox`] jobs of commits go to (dropped without).
    pub fn with_outbox(mut self, outbox: Arc<crate::outbox::MemoryOutbox>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// The audit log ingest events go to.
    pub fn audit(&self) -> &Arc<MemoryAuditLog> {
        &self.audit
    }

    fn current(&self) -> Vec<InstanceRecord> {
        self.rows
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.status == Status::Current)
            .map(|r| r.rec.clone())
            .collect()
    }
}

#[async_trait]
impl Index for MemoryIndex {
    async fn commit(&self, c: IngestCommit) -> Result<IngestOutcome> {
        let mut rows = self.rows.lock().expect("lock");
        for sop in &c.rejects {
            for r in rows.iter_mut() {
                if r.rec.instance.sop_instance_uid == *sop && r.rec.org == c.record.org {
                    r.status = Status::Rejected;
                }
            }
        }
        let sop = &c.record.instance.sop_instance_uid;
        let existing = rows.iter_mut().find(|r| {
            r.status == Status::Current
                && r.rec.org == c.record.org
                && r.rec.instance.sop_instance_uid == *sop
        });
        let outcome = match existing {
            Some(r) if r.rec.sha256 == c.record.sha256 => return Ok(IngestOutcome::Duplicate),
            Some(r) => {
                r.status = Status::Prior;
                r.superseded_ms = c.record.received_ms;
                IngestOutcome::Replaced
            }
            None => IngestOutcome::Stored,
        };
        let mut events = Vec::new();
        let mut jobs = Vec::new();
        for s in c.side {
            match s {
                SideRecord::Audit(e) => events.push(e),
                SideRecord::Outbox(j) => jobs.push(j),
            }
        }
        self.audit.append_now(events);
        if let Some(o) = &self.outbox
            && !jobs.is_empty()
        {
            o.insert(jobs, c.record.received_ms);
        }
        rows.push(Row {
            rec: c.record,
            status: Status::Current,
            superseded_ms: 0,
        });
        Ok(outcome)
    }

    async fn find(&self, q: &Query) -> Result<Vec<Answer>> {
        let all = self.current();
        let in_org = |r: &&InstanceRecord| visible(q.access.as_ref(), r);
        let group_key = |r: &InstanceRecord| -> String {
            match q.level {
                Level::Patient => {
                    format!("{}|{}|{}", r.org, r.patient.issuer, r.patient.patient_id)
                }
                Level::Study => format!("{}|{}", r.org, r.study.study_uid),
                Level::Series => format!("{}|{}", r.org, r.series.series_uid),
                Level::Image => format!("{}|{}", r.org, r.instance.sop_instance_uid),
            }
        };
        let mut groups: BTreeMap<String, Vec<&InstanceRecord>> = BTreeMap::new();
        for r in all.iter().filter(in_org) {
            groups.entry(group_key(r)).or_default().push(r);
        }
        let mut out = Vec::new();
        // Study level: the order of `q.order` (the SQLite index's, ties by the latest stored).
        let mut groups: Vec<&Vec<&InstanceRecord>> = groups.values().collect();
        if q.level == Level::Study {
            groups.sort_by(|a, b| {
                let (a, b) = (a[a.len() - 1], b[b.len() - 1]);
                match q.order {
                    StudyOrder::DateDesc => b.study.date.cmp(&a.study.date),
                    StudyOrder::DateAsc => a.study.date.cmp(&b.study.date),
                    StudyOrder::PatientName => a
                        .patient
                        .name
                        .to_uppercase()
                        .cmp(&b.patient.name.to_uppercase()),
                }
            });
        }
        for members in groups {
            let ok = q.filters.iter().all(|(k, m)| {
                // A level's key matches if any member matches (e.g. ModalitiesInStudy).
                members
                    .iter()
                    .any(|r| values(r, *k).iter().any(|v| m.matches(*k, v, q.fuzzy)))
            });
            if !ok {
                continue;
            }
            let first = members[members.len() - 1];
            let mut modalities: Vec<String> =
                members.iter().map(|r| r.series.modality.clone()).collect();
            modalities.sort();
            modalities.dedup();
            modalities.retain(|m| !m.is_empty());
            let mut classes: Vec<String> = members
                .iter()
                .map(|r| r.instance.sop_class_uid.clone())
                .collect();
            classes.sort();
            classes.dedup();
            let count = |f: &dyn Fn(&InstanceRecord) -> &str| {
                let mut v: Vec<&str> = members.iter().map(|r| f(r)).collect();
                v.sort();
                v.dedup();
                v.len() as u64
            };
            let computed = Computed {
                modalities,
                sop_classes: classes,
                studies: Some(count(&|r| &r.study.study_uid)),
                series: Some(count(&|r| &r.series.series_uid)),
                instances: Some(members.len() as u64),
            };
            let stored: Vec<&str> = match q.level {
                Level::Patient | Level::Study => vec![&first.study_json],
                Level::Series => vec![&first.series_json],
                Level::Image => vec![&first.instance_json],
            };
            out.push(answer(q.level, &stored, &computed));
        }
        Ok(out.into_iter().skip(q.offset).take(q.limit).collect())
    }

    async fn instances(&self, scope: &Scope) -> Result<Vec<StoredInstance>> {
        let mut v: Vec<InstanceRecord> = self
            .current()
            .into_iter()
            .filter(|r| in_scope(r, scope))
            .collect();
        v.sort_by(|a, b| {
            (
                a.series.number,
                &a.series.series_uid,
                a.instance.number,
                &a.instance.sop_instance_uid,
            )
                .cmp(&(
                    b.series.number,
                    &b.series.series_uid,
                    b.instance.number,
                    &b.instance.sop_instance_uid,
                ))
        });
        Ok(v.iter().map(stored).collect())
    }

    async fn metadata(&self, scope: &Scope) -> Result<Vec<InstanceMetadata>> {
        let inst = self.instances(scope).await?;
        let cur = self.current();
        Ok(inst
            .into_iter()
            .filter_map(|i| {
                let r = cur.iter().find(|r| r.blob_key == i.blob_key)?;
                Some(InstanceMetadata {
                    instance: i,
                    json: r.metadata_json.clone(),
                })
            })
            .collect())
    }

    async fn frames(&self, scope: &Scope) -> Result<Option<(StoredInstance, FrameIndex)>> {
        Ok(self
            .current()
            .into_iter()
            .find(|r| in_scope(r, scope))
            .map(|r| (stored(&r), r.frame_index.clone())))
    }

    async fn delete(&self, scope: &Scope) -> Result<Vec<StoredInstance>> {
        if scope.is_unbounded() {
            return Err(Error::BadRequest(
                "refusing to delete without a scope".into(),
            ));
        }
        let mut rows = self.rows.lock().expect("lock");
        let (gone, keep): (Vec<Row>, Vec<Row>) =
            rows.drain(..).partition(|r| in_scope(&r.rec, scope));
        *rows = keep;
        Ok(gone.iter().map(|r| stored(&r.rec)).collect())
    }

    async fn prior_versions(&self, scope: &Scope) -> Result<Vec<PriorVersion>> {
        Ok(self
            .rows
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.status == Status::Prior && in_scope(&r.rec, scope))
            .map(|r| PriorVersion {
                instance: stored(&r.rec),
                superseded_ms: r.superseded_ms,
            })
            .collect())
    }

    async fn blobs(&self) -> Result<Vec<IndexedBlob>> {
        Ok(self
            .rows
            .lock()
            .expect("lock")
            .iter()
            .map(|r| IndexedBlob {
                key: r.rec.blob_key.clone(),
                size: r.rec.size,
                sha256: r.rec.sha256.clone(),
            })
            .collect())
    }

    async fn stats(&self) -> Result<IndexStats> {
        let cur = self.current();
        let mut studies: Vec<&str> = cur.iter().map(|r| r.study.study_uid.as_str()).collect();
        studies.sort();
        studies.dedup();
        let mut series: Vec<&str> = cur.iter().map(|r| r.series.series_uid.as_str()).collect();
        series.sort();
        series.dedup();
        Ok(IndexStats {
            studies: studies.len() as u64,
            series: series.len() as u64,
            instances: cur.len() as u64,
            bytes: cur.iter().map(|r| r.size).sum(),
        })
    }
}
