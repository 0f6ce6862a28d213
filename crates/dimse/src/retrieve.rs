//! What C-GET and C-MOVE share: resolving an identifier to stored instances (PS3.4 C.4.2.2.1,
//! C.4.3.2.1) and sending one instance as a C-STORE sub-operation (PS3.4 C.4.2.3, C.4.3.3).
//!
//! An instance is sent unchanged (its data set streamed from the blob store with the file meta
//! group skipped, never loaded whole) when an accepted context has its stored transfer syntax;
//! otherwise it is transcoded with `vesalius-codec` to the syntax of an accepted context of its
//! SOP class (the whole result is then in memory, as the codec returns it), or the
//! sub-operation fails.
//!
//! Access control (issue 4, [`resolve_for`]): only AE titles allowed to retrieve
//! (`Action::Retrieve`: registered with `may_query`) get past 0x0124 "Refused: Not Authorized";
//! the identifier is resolved over what the AE may see (its `Access`, inside the index query,
//! so another organisation's study is simply not found), and each study is authorized again
//! before its first byte is sent.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use futures::StreamExt;
use vesalius_auth::{Action, Resource};
use vesalius_core::parse::DataSet;
use vesalius_core::tag;
use vesalius_store::model::StoredInstance;
use vesalius_store::query::{Access, Key, Level, Matcher, Query, Scope};
use vesalius_store::{BlobStore, Ingestor};

use crate::access::Peer;
use crate::association::{Association, PresentationContext};
use crate::dataset::DataSetWriter;
use crate::error::{Error, Result};
use crate::find::Model;
use crate::message::{Command, SubOperations, field, status, tags};
use crate::server::Server;
use dicom_core::VR;

/// Why an identifier could not be resolved: the status and Error Comment to answer.
pub(crate) type Refusal = (u16, String);

fn uid_list(ident: &DataSet, t: u32) -> Vec<String> {
    ident
        .str(t)
        .unwrap_or("")
        .split('\\')
        .map(|s| s.trim_matches(|c| c == ' ' || c == '\0').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The instances an identifier names that `caller` may retrieve (see the module doc), or the
/// refusal to answer with (a policy refusal is audited).
pub(crate) async fn resolve_for(
    server: &Server,
    caller: &Peer,
    model: Model,
    ident: &DataSet,
) -> std::result::Result<Vec<StoredInstance>, Refusal> {
    let auth = server.auth();
    let own = Resource::org(caller.org());
    let access = match caller
        .authorize(auth, Action::Retrieve, &own, "retrieve")
        .await
    {
        Ok(()) => caller.access(auth).await,
        Err(d) => Err(d),
    };
    let access = access.map_err(|d| {
        caller.audit_denied(auth, "retrieve", &d);
        (d.status, d.comment)
    })?;
    let mut instances = resolve(&server.ingestor, access, model, ident).await?;
    // PS3.4 C.4.2.3 / C.4.3.3 send nothing before this: one decision per study.
    let mut decided: HashMap<(String, String), bool> = HashMap::new();
    for inst in &instances {
        let key = (inst.org.clone(), inst.study_uid.clone());
        if decided.contains_key(&key) {
            continue;
        }
        let study = Resource::study(key.0.clone(), key.1.clone());
        let allowed = match caller
            .authorize(auth, Action::Retrieve, &study, "retrieve this study")
            .await
        {
            Ok(()) => true,
            Err(d) if d.is_policy() => {
                // The access filter and the policy agree by construction (tested in
                // vesalius-auth); if they ever did not, the policy wins.
                tracing::warn!(calling = caller.ae(), study = %key.1, "retrieval filtered out by the policy");
                false
            }
            Err(d) => return Err((d.status, d.comment)),
        };
        decided.insert(key, allowed);
    }
    instances.retain(|i| decided[&(i.org.clone(), i.study_uid.clone())]);
    Ok(instances)
}

/// The current instances an identifier names within `access` (`None`: everything), in
/// series/instance order, without duplicates.
pub(crate) async fn resolve(
    ingestor: &Ingestor,
    access: Option<Access>,
    model: Model,
    ident: &DataSet,
) -> std::result::Result<Vec<StoredInstance>, Refusal> {
    let level = model
        .level(ident)
        .map_err(|why| (status::IDENTIFIER_MISMATCH, why))?;
    let (key_tag, name) = match level {
        Level::Patient => (tag::PATIENT_ID, "PatientID"),
        Level::Study => (tag::STUDY_INSTANCE_UID, "StudyInstanceUID"),
        Level::Series => (tag::SERIES_INSTANCE_UID, "SeriesInstanceUID"),
        Level::Image => (tag::SOP_INSTANCE_UID, "SOPInstanceUID"),
    };
    let values = uid_list(ident, key_tag);
    if values.is_empty() {
        return Err((
            status::IDENTIFIER_MISMATCH,
            format!("{name} is required at {} level", level.as_str()),
        ));
    }
    let internal = |e: vesalius_store::Error| (status::UNABLE_TO_PROCESS, e.to_string());
    let mut scopes = Vec::new();
    match level {
        Level::Patient => {
            // PS3.4 C.4.2.2.1: a patient-level retrieval takes every study of the patient.
            for pid in &values {
                let mut q =
                    Query::new(Level::Study).with(Key::PatientId, Matcher::Single(pid.clone()));
                q.access = access.clone();
                q.limit = usize::MAX;
                for study in ingestor.index().find(&q).await.map_err(internal)? {
                    if let Some(uid) = study.first_str(tag::STUDY_INSTANCE_UID) {
                        scopes.push(Scope {
                            access: access.clone(),
                            study: Some(uid),
                            ..Default::default()
                        });
                    }
                }
            }
        }
        Level::Study => {
            for s in values {
                scopes.push(Scope {
                    access: access.clone(),
                    study: Some(s),
                    ..Default::default()
                });
            }
        }
        Level::Series => {
            let study = uid_list(ident, tag::STUDY_INSTANCE_UID).into_iter().next();
            for s in values {
                scopes.push(Scope {
                    access: access.clone(),
                    study: study.clone(),
                    series: Some(s),
                    ..Default::default()
                });
            }
        }
        Level::Image => {
            let study = uid_list(ident, tag::STUDY_INSTANCE_UID).into_iter().next();
            let series = uid_list(ident, tag::SERIES_INSTANCE_UID).into_iter().next();
            for s in values {
                scopes.push(Scope {
                    access: access.clone(),
                    study: study.clone(),
                    series: series.clone(),
                    instance: Some(s),
                });
            }
        }
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for scope in scopes {
        for inst in ingestor.index().instances(&scope).await.map_err(internal)? {
            if seen.insert(inst.sop_instance_uid.clone()) {
                out.push(inst);
            }
        }
    }
    Ok(out)
}

/// The outcome of one C-STORE sub-operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SubOutcome {
    /// Stored (0x0000).
    Completed,
    /// Stored with a warning status.
    Warning,
    /// Not stored: why.
    Failed(String),
}

/// How an instance will travel.
enum Plan {
    /// The stored bytes, unchanged, on this context.
    Raw(PresentationContext),
    /// Transcoded to this context's transfer syntax.
    Transcode(PresentationContext),
}

fn plan(assoc: &Association, inst: &StoredInstance, need_requestor_scp: bool) -> Option<Plan> {
    if need_requestor_scp && !assoc.requestor_is_scp(&inst.sop_class_uid) {
        return None;
    }
    if let Some(c) = assoc.find_context(&inst.sop_class_uid, Some(&inst.transfer_syntax)) {
        return Some(Plan::Raw(c.clone()));
    }
    assoc
        .contexts()
        .iter()
        .find(|c| {
            c.abstract_syntax == inst.sop_class_uid
                && vesalius_codec::can_transcode(&inst.transfer_syntax, &c.transfer_syntax)
        })
        .map(|c| Plan::Transcode(c.clone()))
}

/// Length of the Part 10 header (preamble, "DICM", file meta group) at the start of `head`;
/// `None` while more bytes are needed. A source without "DICM" is a bare data set (0).
pub fn meta_length(head: &[u8]) -> Option<usize> {
    if head.len() < 132 {
        return None;
    }
    if &head[128..132] != b"DICM" {
        return Some(0);
    }
    let el = head.get(132..144)?;
    // (0002,0000) UL, 4: the group length (PS3.10 7.1).
    if el[..6] != [0x02, 0x00, 0x00, 0x00, b'U', b'L'] {
        return Some(usize::MAX);
    }
    let gl = u32::from_le_bytes([el[8], el[9], el[10], el[11]]) as usize;
    Some(144usize.saturating_add(gl))
}

/// The data set bytes of a whole Part 10 file in memory.
fn data_set_of(file: &[u8]) -> Result<&[u8]> {
    match meta_length(file) {
        Some(n) if n <= file.len() => Ok(&file[n..]),
        _ if file.len() < 132 => Ok(file),
        _ => Err(Error::Protocol(
            "transcoded file has a malformed meta group".into(),
        )),
    }
}

/// A local path for the blob (the store's own file, or a temporary copy).
async fn local_copy(
    blobs: &dyn BlobStore,
    key: &str,
) -> Result<(PathBuf, Option<tempfile::TempPath>)> {
    if let Some(p) = blobs.local_path(key) {
        return Ok((p, None));
    }
    let tmp = tempfile::NamedTempFile::new().map_err(Error::Network)?;
    let mut f = tokio::fs::File::from_std(tmp.reopen().map_err(Error::Network)?);
    let mut stream = blobs.read(key).await?;
    while let Some(chunk) = stream.next().await {
        tokio::io::AsyncWriteExt::write_all(&mut f, &chunk?)
            .await
            .map_err(Error::Network)?;
    }
    let path = tmp.into_temp_path();
    Ok((path.to_path_buf(), Some(path)))
}

/// Sends `inst` as a C-STORE-RQ with `message_id` and waits for its response. `on_request` is
/// given any request the peer sends meanwhile (a C-CANCEL of the parent operation) and fails for
/// anything it does not expect. `Err` means the association is unusable.
pub(crate) async fn send_instance(
    assoc: &mut Association,
    ingestor: &Ingestor,
    inst: &StoredInstance,
    message_id: u16,
    originator: Option<(&str, u16)>,
    need_requestor_scp: bool,
    on_request: &mut (dyn FnMut(&Command) -> Result<()> + Send),
) -> Result<SubOutcome> {
    let Some(plan) = plan(assoc, inst, need_requestor_scp) else {
        return Ok(SubOutcome::Failed(format!(
            "no presentation context for {} in {}",
            inst.sop_class_uid, inst.transfer_syntax
        )));
    };
    let mut rq = Command::request(field::C_STORE_RQ, message_id, &inst.sop_class_uid);
    rq.set_str(tags::AFFECTED_SOP_INSTANCE_UID, &inst.sop_instance_uid);
    rq.set_u16(tags::PRIORITY, crate::message::PRIORITY_MEDIUM);
    if let Some((ae, id)) = originator {
        rq.set_str(tags::MOVE_ORIGINATOR_AE_TITLE, ae);
        rq.set_u16(tags::MOVE_ORIGINATOR_MESSAGE_ID, id);
    }
    let blobs = ingestor.blobs().clone();
    match plan {
        Plan::Raw(ctx) => {
            let mut stream = match blobs.read(&inst.blob_key).await {
                Ok(s) => s,
                Err(e) => return Ok(SubOutcome::Failed(e.to_string())),
            };
            // Read past the file meta group before committing to the message.
            let mut head = Vec::new();
            let skip = loop {
                if let Some(n) = meta_length(&head)
                    && (n == usize::MAX || head.len() >= n)
                {
                    break n;
                }
                match stream.next().await {
                    Some(Ok(chunk)) => head.extend_from_slice(&chunk),
                    Some(Err(e)) => return Ok(SubOutcome::Failed(e.to_string())),
                    None => break meta_length(&head).unwrap_or(0),
                }
            };
            if skip > head.len() {
                return Ok(SubOutcome::Failed(
                    "stored file has a malformed meta group".into(),
                ));
            }
            assoc.send_command_for_stream(ctx.id, &rq).await?;
            let mut w = assoc.data_writer(ctx.id);
            w.write(&head[skip..]).await?;
            while let Some(chunk) = stream.next().await {
                w.write(&chunk?).await?;
            }
            w.finish().await?;
        }
        Plan::Transcode(ctx) => {
            let (path, _tmp) = match local_copy(blobs.as_ref(), &inst.blob_key).await {
                Ok(x) => x,
                Err(e) => return Ok(SubOutcome::Failed(e.to_string())),
            };
            let to = ctx.transfer_syntax.clone();
            let done =
                tokio::task::spawn_blocking(move || vesalius_codec::transcode_file(&path, &to))
                    .await
                    .map_err(|e| Error::Protocol(format!("transcoding task: {e}")))?;
            let file = match done {
                Ok(f) => f,
                Err(e) => return Ok(SubOutcome::Failed(format!("transcoding: {e}"))),
            };
            assoc
                .send_message(ctx.id, &rq, Some(data_set_of(&file)?))
                .await?;
        }
    }
    loop {
        let Some((_, c)) = assoc.recv_command().await? else {
            return Err(Error::Protocol(
                "released while a C-STORE was outstanding".into(),
            ));
        };
        if c.command_field() == field::C_STORE_RSP && c.responded_to() == Some(message_id) {
            let st = c.status().unwrap_or(status::PROCESSING_FAILURE);
            return Ok(if st == status::SUCCESS {
                SubOutcome::Completed
            } else if status::is_warning(st) {
                SubOutcome::Warning
            } else {
                SubOutcome::Failed(format!(
                    "C-STORE status 0x{st:04X}{}",
                    c.error_comment()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ))
            });
        }
        if c.command_field() & 0x8000 != 0 {
            return Err(Error::Protocol(format!(
                "unexpected response 0x{:04X}",
                c.command_field()
            )));
        }
        on_request(&c)?;
    }
}

/// Progress of a C-GET or C-MOVE: counters, failed instances, cancellation.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) counts: SubOperations,
    pub(crate) failed_uids: Vec<String>,
    pub(crate) cancelled: bool,
}

impl Progress {
    pub(crate) fn new(total: usize) -> Self {
        Progress {
            counts: SubOperations {
                remaining: u32::try_from(total).unwrap_or(u32::MAX),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Records the outcome of one sub-operation.
    pub(crate) fn record(&mut self, inst: &StoredInstance, outcome: SubOutcome) {
        self.counts.remaining = self.counts.remaining.saturating_sub(1);
        match outcome {
            SubOutcome::Completed => self.counts.completed += 1,
            SubOutcome::Warning => self.counts.warning += 1,
            SubOutcome::Failed(why) => {
                tracing::info!(sop = %inst.sop_instance_uid, reason = %why, "sub-operation failed");
                self.counts.failed += 1;
                self.failed_uids.push(inst.sop_instance_uid.clone());
            }
        }
    }

    /// Sends a pending response (PS3.4 C.4.2.1.5) while sub-operations remain.
    pub(crate) async fn send_pending(
        &self,
        assoc: &mut Association,
        pc: u8,
        rq: &Command,
    ) -> Result<()> {
        if self.counts.remaining == 0 {
            return Ok(());
        }
        let mut rsp = Command::response_to(rq, status::PENDING);
        rsp.set_suboperations(&self.counts, true);
        assoc.send_message(pc, &rsp, None).await
    }

    /// Sends the final response: success, 0xB000, 0xA702 or, after a C-CANCEL, 0xFE00; with a
    /// Failed SOP Instance UID List identifier when something failed (PS3.4 C.4.2.1.4.2).
    pub(crate) async fn send_final(
        &self,
        assoc: &mut Association,
        pc: u8,
        rq: &Command,
        explicit: bool,
    ) -> Result<()> {
        let st = if self.cancelled {
            status::CANCEL
        } else {
            self.counts.final_status()
        };
        let mut rsp = Command::response_to(rq, st);
        rsp.set_suboperations(&self.counts, self.cancelled);
        if self.failed_uids.is_empty() {
            return assoc.send_message(pc, &rsp, None).await;
        }
        let mut w = DataSetWriter::new();
        w.put_str(
            tag::FAILED_SOP_INSTANCE_UID_LIST,
            VR::UI,
            &self.failed_uids.join("\\"),
        );
        assoc
            .send_message(pc, &rsp, Some(&w.encode(explicit)))
            .await
    }
}

/// Answers a refused C-GET/C-MOVE.
pub(crate) async fn refuse(
    assoc: &mut Association,
    pc: u8,
    rq: &Command,
    (st, why): Refusal,
) -> Result<()> {
    tracing::info!(command = rq.command_field(), status = format!("0x{st:04X}"), reason = %why, "retrieve refused");
    let mut rsp = Command::response_to(rq, st);
    rsp.set_error_comment(&why);
    assoc.send_message(pc, &rsp, None).await
}

/// Receives and parses the identifier of a C-GET/C-MOVE on a context of one of `classes`.
pub(crate) async fn read_request(
    assoc: &mut Association,
    pc: u8,
    rq: &Command,
    classes: [&str; 2],
) -> Result<std::result::Result<(Model, DataSet, bool), Refusal>> {
    let Some(ctx) = assoc.context(pc).cloned() else {
        return Err(Error::Protocol(format!(
            "unknown presentation context {pc}"
        )));
    };
    if !rq.has_data_set() {
        return Ok(Err((status::IDENTIFIER_MISMATCH, "no identifier".into())));
    }
    let bytes = assoc
        .recv_data_set(pc, crate::dataset::MAX_IDENTIFIER_BYTES)
        .await?;
    let model =
        Model::of(&ctx.abstract_syntax).filter(|_| classes.contains(&ctx.abstract_syntax.as_str()));
    let Some(model) = model else {
        return Ok(Err((
            status::SOP_CLASS_NOT_SUPPORTED,
            "wrong presentation context".into(),
        )));
    };
    Ok(crate::dataset::read(&bytes, &ctx.transfer_syntax)
        .map(|ds| (model, ds, crate::dataset::is_explicit(&ctx.transfer_syntax)))
        .map_err(|e| (status::IDENTIFIER_MISMATCH, e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_length_reads_the_group_length() {
        let mut f = vec![0u8; 128];
        f.extend_from_slice(b"DICM");
        f.extend_from_slice(&[0x02, 0, 0, 0, b'U', b'L', 4, 0, 10, 0, 0, 0]);
        assert_eq!(meta_length(&f[..140]), None);
        assert_eq!(meta_length(&f), Some(154));
        assert_eq!(meta_length(&[1u8; 200]), Some(0));
        assert_eq!(meta_length(&[1u8; 20]), None);
    }
}
