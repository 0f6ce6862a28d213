//! The SCU side, used by the CLI (`vesalius echo | send --to-dicom | query`) and by other crates.
//!
//! - [`echo`]: one C-ECHO (PS3.4 A).
//! - [`store_files`]: C-STORE of Part 10 files over one association (one per 128 distinct
//!   SOP class/transfer syntax pairs), each file's data set streamed from disk after its meta
//!   group; per-file failures are collected, not fatal.
//! - [`find`]: C-FIND in the Study Root model (Patient Root at PATIENT level), answers as DICOM
//!   JSON objects like QIDO-RS returns; [`find_limited`] in either model with a cap on the
//!   answers. [`study_find_keys`] lists the Study Root keys asked for when looking for a
//!   patient's studies (priors); [`patient_find_keys`] and [`patient_root_study_keys`] the
//!   PATIENT-level and STUDY-level keys of the same search under Patient Root.
//! - [`move_`]: C-MOVE (PS3.4 C.4.2) to a Move Destination AE title, following pending
//!   responses and cancelling at a deadline ([`MoveOptions`], [`MoveOutcome`]).
//! - [`get()`]: C-GET (PS3.4 C.4.3): the instances come back as C-STORE sub-operations on our own
//!   association and are stored through the ingest path ([`GetOptions`], [`GetOutcome`]).
//! - [`StoreSession`]: a storage association for callers that stream data sets themselves.
//!
//! Every association is requested with `TCP_NODELAY` and the default [`Timeouts`].

use std::path::{Path, PathBuf};

use dicom_core::VR;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_dictionary_std::StandardDataDictionary;
use serde_json::{Map, Value as Json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};
use vesalius_core::parse::implicit_vr;
use vesalius_core::{tag, uid};
use vesalius_store::query::{Level, QueryModel};

mod get;
mod move_;

pub use get::{
    COMMON_STORAGE_CLASSES, GetOptions, GetOutcome, MAX_REFUSALS, Refusal, get,
    storage_classes_for_modalities, storage_contexts,
};
pub use move_::{MoveOptions, MoveOutcome, move_};

use crate::Timeouts;
use crate::association::{Association, RequestOptions};
use crate::dataset::{self, DataSetWriter};
use crate::error::{Error, Result};
use crate::message::{Command, field, sop_class, status, tags};

/// The Maximum Length our SCU associations announce.
const SCU_MAX_PDU: u32 = 256 << 10;
/// Read size when streaming a file.
const CHUNK: usize = 256 << 10;

fn request_options(
    calling: &str,
    called: &str,
    contexts: Vec<(String, Vec<String>)>,
) -> RequestOptions {
    RequestOptions {
        calling_ae: calling.to_owned(),
        called_ae: called.to_owned(),
        max_pdu_length: SCU_MAX_PDU,
        contexts,
        roles: Vec::new(),
        timeouts: Timeouts::default(),
    }
}

fn uncompressed() -> Vec<String> {
    vec![
        uid::EXPLICIT_VR_LE.to_owned(),
        uid::IMPLICIT_VR_LE.to_owned(),
    ]
}

/// True when `c` is the response `rsp_field` to request `id`.
fn response_matching(c: &Command, id: u16, rsp_field: u16) -> bool {
    c.command_field() == rsp_field && c.responded_to() == Some(id)
}

/// Waits for the response to request `id`, failing on anything else.
async fn response(assoc: &mut Association, id: u16, rsp_field: u16) -> Result<(u8, Command)> {
    match assoc.recv_command().await? {
        Some((pc, c)) if response_matching(&c, id, rsp_field) => Ok((pc, c)),
        Some((_, c)) => Err(Error::Protocol(format!(
            "unexpected command 0x{:04X}",
            c.command_field()
        ))),
        None => Err(Error::Aborted),
    }
}

/// Sends one C-ECHO-RQ to `called` at `addr` (`host:port`).
pub async fn echo(addr: &str, calling: &str, called: &str) -> Result<()> {
    let ctx = vec![(sop_class::VERIFICATION.to_owned(), uncompressed())];
    let mut assoc = Association::request(addr, &request_options(calling, called, ctx)).await?;
    let Some(pc) = assoc
        .find_context(sop_class::VERIFICATION, None)
        .map(|c| c.id)
    else {
        assoc.abort().await;
        return Err(Error::NoPresentationContext("Verification".into()));
    };
    let id = assoc.next_message_id();
    let rq = Command::request(field::C_ECHO_RQ, id, sop_class::VERIFICATION);
    assoc.send_message(pc, &rq, None).await?;
    let (_, rsp) = response(&mut assoc, id, field::C_ECHO_RSP).await?;
    let _ = assoc.release().await;
    match rsp.status() {
        Some(status::SUCCESS) => Ok(()),
        s => Err(Error::Status {
            operation: "C-ECHO",
            status: s.unwrap_or(status::PROCESSING_FAILURE),
            comment: rsp.error_comment(),
        }),
    }
}

/// What a C-STORE answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOutcome {
    /// The status (0x0000 success, 0x0001/0xBxxx warning, others failure).
    pub status: u16,
    /// The Error Comment, if any.
    pub comment: Option<String>,
}

impl StoreOutcome {
    /// True for success and warning statuses.
    pub fn is_stored(&self) -> bool {
        self.status == status::SUCCESS || status::is_warning(self.status)
    }
}

/// A storage association: stream data sets with [`StoreSession::store`].
pub struct StoreSession {
    assoc: Association,
}

impl StoreSession {
    /// Requests an association proposing `contexts` (SOP class, transfer syntaxes).
    pub async fn connect(
        addr: &str,
        calling: &str,
        called: &str,
        contexts: Vec<(String, Vec<String>)>,
    ) -> Result<StoreSession> {
        let assoc = Association::request(addr, &request_options(calling, called, contexts)).await?;
        Ok(StoreSession { assoc })
    }

    /// The association (for its negotiated contexts).
    pub fn association(&self) -> &Association {
        &self.assoc
    }

    /// Sends a C-STORE-RQ for a data set encoded in `ts`, read from `data` until its end, and
    /// returns the response. `Err` means the association is unusable.
    pub async fn store(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        ts: &str,
        data: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<StoreOutcome> {
        let pc = self
            .assoc
            .find_context(sop_class, Some(ts))
            .map(|c| c.id)
            .ok_or_else(|| Error::NoPresentationContext(format!("{sop_class} in {ts}")))?;
        let id = self.assoc.next_message_id();
        let mut rq = Command::request(field::C_STORE_RQ, id, sop_class);
        rq.set_str(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance);
        rq.set_u16(tags::PRIORITY, crate::message::PRIORITY_MEDIUM);
        self.assoc.send_command_for_stream(pc, &rq).await?;
        let mut w = self.assoc.data_writer(pc);
        let mut buf = vec![0u8; CHUNK];
        let mut read_error = None;
        loop {
            match data.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => w.write(&buf[..n]).await?,
                Err(e) => {
                    // The message must still end: the truncated data set will be refused.
                    read_error = Some(e);
                    break;
                }
            }
        }
        w.finish().await?;
        let (_, rsp) = response(&mut self.assoc, id, field::C_STORE_RSP).await?;
        let outcome = StoreOutcome {
            status: rsp.status().unwrap_or(status::PROCESSING_FAILURE),
            comment: rsp.error_comment(),
        };
        match read_error {
            Some(e) => Ok(StoreOutcome {
                status: status::PROCESSING_FAILURE,
                comment: Some(format!("reading the data set: {e}")),
            }),
            None => Ok(outcome),
        }
    }

    /// Releases the association.
    pub async fn release(self) -> Result<()> {
        self.assoc.release().await
    }
}

/// What [`store_files`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSummary {
    /// Files stored (success or warning).
    pub sent: usize,
    /// Files not stored.
    pub failed: usize,
    /// Each failed file and why.
    pub failures: Vec<(PathBuf, String)>,
}

/// The file meta information of a Part 10 file (PS3.10 7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// Media Storage SOP Class UID.
    pub sop_class: String,
    /// Media Storage SOP Instance UID.
    pub sop_instance: String,
    /// Transfer Syntax UID.
    pub transfer_syntax: String,
    /// Offset of the data set.
    pub data_offset: u64,
}

/// Reads the file meta information of a Part 10 file, bounded (at most 1 MiB of meta group).
pub fn read_file_meta(path: &Path) -> Result<FileMeta> {
    use std::io::Read;
    let invalid = |reason: &str| Error::InvalidFile {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let file_err = |source| Error::File {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(file_err)?;
    let mut head = [0u8; 144];
    f.read_exact(&mut head)
        .map_err(|_| invalid("too short for a DICOM Part 10 file"))?;
    if &head[128..132] != b"DICM" || head[132..138] != [2, 0, 0, 0, b'U', b'L'] {
        return Err(invalid(
            "not a DICOM Part 10 file (no DICM prefix and group length)",
        ));
    }
    let gl = u32::from_le_bytes([head[140], head[141], head[142], head[143]]) as usize;
    if gl > 1 << 20 {
        return Err(invalid("file meta group too large"));
    }
    let mut meta = vec![0u8; gl];
    f.read_exact(&mut meta)
        .map_err(|_| invalid("truncated file meta group"))?;
    let (mut class, mut instance, mut ts) = (None, None, None);
    let mut pos = 0usize;
    while pos + 8 <= meta.len() {
        let t = (u32::from(u16::from_le_bytes([meta[pos], meta[pos + 1]])) << 16)
            | u32::from(u16::from_le_bytes([meta[pos + 2], meta[pos + 3]]));
        let vr = [meta[pos + 4], meta[pos + 5]];
        let (len, start) = if matches!(&vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT" | b"UC" | b"UR") {
            let b = meta
                .get(pos + 8..pos + 12)
                .ok_or_else(|| invalid("truncated meta element"))?;
            (
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
                pos + 12,
            )
        } else {
            (
                usize::from(u16::from_le_bytes([meta[pos + 6], meta[pos + 7]])),
                pos + 8,
            )
        };
        let value = start
            .checked_add(len)
            .and_then(|end| meta.get(start..end))
            .ok_or_else(|| invalid("meta element beyond the group"))?;
        let text = || {
            uid::trim_uid(&String::from_utf8_lossy(value))
                .trim()
                .to_owned()
        };
        match t {
            tag::MEDIA_STORAGE_SOP_CLASS_UID => class = Some(text()),
            tag::MEDIA_STORAGE_SOP_INSTANCE_UID => instance = Some(text()),
            tag::TRANSFER_SYNTAX_UID => ts = Some(text()),
            _ => {}
        }
        pos = start + len;
    }
    match (class, instance, ts) {
        (Some(c), Some(i), Some(t)) if !c.is_empty() && !i.is_empty() && !t.is_empty() => {
            Ok(FileMeta {
                sop_class: c,
                sop_instance: i,
                transfer_syntax: t,
                data_offset: 144 + gl as u64,
            })
        }
        _ => Err(invalid(
            "file meta lacks SOP class, SOP instance or transfer syntax",
        )),
    }
}

async fn store_one(
    session: &mut StoreSession,
    path: &Path,
    meta: &FileMeta,
) -> Result<StoreOutcome> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|source| Error::File {
            path: path.to_owned(),
            source,
        })?;
    f.seek(std::io::SeekFrom::Start(meta.data_offset))
        .await
        .map_err(|source| Error::File {
            path: path.to_owned(),
            source,
        })?;
    session
        .store(
            &meta.sop_class,
            &meta.sop_instance,
            &meta.transfer_syntax,
            &mut f,
        )
        .await
}

/// Sends Part 10 files with C-STORE; `progress(done, total)` is called after each file.
/// Fails only when no association can be established at all.
pub async fn store_files(
    addr: &str,
    calling: &str,
    called: &str,
    files: Vec<PathBuf>,
    progress: impl Fn(usize, usize),
) -> Result<StoreSummary> {
    let total = files.len();
    let metas = tokio::task::spawn_blocking(move || {
        files
            .into_iter()
            .map(|p| {
                let m = read_file_meta(&p);
                (p, m)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| Error::Protocol(format!("reading file metas: {e}")))?;
    let mut summary = StoreSummary::default();
    let mut done = 0usize;
    let fail = |summary: &mut StoreSummary, p: &Path, why: String| {
        summary.failed += 1;
        summary.failures.push((p.to_owned(), why));
    };
    let mut todo: Vec<(PathBuf, FileMeta)> = Vec::new();
    for (p, m) in metas {
        match m {
            Ok(m) => todo.push((p, m)),
            Err(e) => {
                fail(&mut summary, &p, e.to_string());
                done += 1;
                progress(done, total);
            }
        }
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (_, m) in &todo {
        let pair = (m.sop_class.clone(), m.transfer_syntax.clone());
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    }
    let mut connected_once = false;
    for chunk in pairs.chunks(128) {
        let contexts = chunk
            .iter()
            .map(|(c, t)| (c.clone(), vec![t.clone()]))
            .collect();
        let batch: Vec<&(PathBuf, FileMeta)> = todo
            .iter()
            .filter(|(_, m)| {
                chunk
                    .iter()
                    .any(|(c, t)| *c == m.sop_class && *t == m.transfer_syntax)
            })
            .collect();
        let mut session = match StoreSession::connect(addr, calling, called, contexts).await {
            Ok(s) => s,
            Err(e) if !connected_once => return Err(e),
            Err(e) => {
                for (p, _) in &batch {
                    fail(&mut summary, p, e.to_string());
                    done += 1;
                    progress(done, total);
                }
                continue;
            }
        };
        connected_once = true;
        let mut broken: Option<String> = None;
        for (p, m) in batch {
            if let Some(why) = &broken {
                fail(&mut summary, p, format!("association lost: {why}"));
            } else {
                match store_one(&mut session, p, m).await {
                    Ok(o) if o.is_stored() => summary.sent += 1,
                    Ok(o) => fail(
                        &mut summary,
                        p,
                        format!(
                            "status 0x{:04X}{}",
                            o.status,
                            o.comment.map(|c| format!(": {c}")).unwrap_or_default()
                        ),
                    ),
                    Err(e @ (Error::File { .. } | Error::NoPresentationContext(_))) => {
                        fail(&mut summary, p, e.to_string())
                    }
                    Err(e) => {
                        fail(&mut summary, p, e.to_string());
                        broken = Some(e.to_string());
                    }
                }
            }
            done += 1;
            progress(done, total);
        }
        if broken.is_none() {
            let _ = session.release().await;
        }
    }
    Ok(summary)
}

/// The tag for a keyword (`PatientName`) or a hexadecimal tag (`00100010`, `0010,0010`).
pub fn tag_of(key: &str) -> Option<u32> {
    let hex: String = key.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    if hex.len() == 8
        && key
            .chars()
            .all(|c| c.is_ascii_hexdigit() || "(),".contains(c))
    {
        return u32::from_str_radix(&hex, 16).ok();
    }
    let e = StandardDataDictionary.by_name(key)?;
    let t = e.tag_range().inner();
    Some((u32::from(t.group()) << 16) | u32::from(t.element()))
}

/// The identifier of a C-FIND, C-MOVE or C-GET request (PS3.4 C.4.1.1.3, C.4.2.1.4): the level and the
/// keys, each with its dictionary VR (LO for one the dictionary does not know).
pub(crate) fn identifier(level: Level, keys: &[(u32, String)]) -> DataSetWriter {
    let mut ident = DataSetWriter::new();
    ident.put_str(tag::QUERY_RETRIEVE_LEVEL, VR::CS, level.as_str());
    for (t, v) in keys {
        let vr = match implicit_vr(*t) {
            VR::UN => VR::LO,
            vr => vr,
        };
        ident.put_str(*t, vr, v);
    }
    ident
}

/// Sends a C-FIND at `level` with `keys` (tag and value; an empty value asks for the attribute
/// to be returned) and returns every match as a DICOM JSON object.
pub async fn find(
    addr: &str,
    calling: &str,
    called: &str,
    level: Level,
    keys: &[(u32, String)],
) -> Result<Vec<Map<String, Json>>> {
    Ok(find_limited(
        addr,
        calling,
        called,
        QueryModel::Study,
        level,
        keys,
        usize::MAX,
    )
    .await?
    .0)
}

/// The Study Root study-level keys asking a PACS for a patient's studies (priors): Patient ID
/// and, when known, Issuer of Patient ID (PS3.4 C.6.2.1.2 optional key, matched by SCPs that
/// support it), an optional Study Date range (`YYYYMMDD-YYYYMMDD`), and the attributes a list
/// of studies shows, asked for with empty values, with SOP Classes in Study (the storage
/// classes a C-GET of the study proposes).
pub fn study_find_keys(patient_id: &str, issuer: &str, study_date: &str) -> Vec<(u32, String)> {
    let mut keys = vec![(tag::PATIENT_ID, patient_id.to_owned())];
    if !issuer.is_empty() {
        keys.push((tag::ISSUER_OF_PATIENT_ID, issuer.to_owned()));
    }
    keys.push((tag::STUDY_DATE, study_date.to_owned()));
    for t in [
        tag::PATIENT_NAME,
        tag::STUDY_TIME,
        tag::ACCESSION_NUMBER,
        tag::MODALITIES_IN_STUDY,
        tag::STUDY_DESCRIPTION,
        tag::STUDY_INSTANCE_UID,
        tag::NUMBER_OF_STUDY_RELATED_INSTANCES,
        tag::SOP_CLASSES_IN_STUDY,
        // General Study module (PS3.3 C.7.2.1); a zero-length sequence asks for the whole
        // sequence (PS3.4 C.2.2.2.6). Relevant-prior matching compares its codes.
        tag::PROCEDURE_CODE_SEQUENCE,
    ] {
        keys.push((t, String::new()));
    }
    if issuer.is_empty() {
        keys.push((tag::ISSUER_OF_PATIENT_ID, String::new()));
    }
    keys
}

/// The Patient Root PATIENT-level keys of a search for one patient (PS3.4 C.6.1.1.2): Patient
/// ID and, when known, Issuer of Patient ID, with Patient's Name (and the issuer when not given)
/// asked for.
pub fn patient_find_keys(patient_id: &str, issuer: &str) -> Vec<(u32, String)> {
    vec![
        (tag::PATIENT_ID, patient_id.to_owned()),
        (tag::ISSUER_OF_PATIENT_ID, issuer.to_owned()),
        (tag::PATIENT_NAME, String::new()),
    ]
}

/// The Patient Root STUDY-level keys of the studies of one patient (PS3.4 C.6.1.1.3): the
/// Patient ID as the unique key of the level above (C.4.1.3.1: a hierarchical search names
/// nothing else of that level), an optional Study Date range and the study attributes
/// [`study_find_keys`] asks for.
pub fn patient_root_study_keys(patient_id: &str, study_date: &str) -> Vec<(u32, String)> {
    study_find_keys(patient_id, "", study_date)
        .into_iter()
        .filter(|(t, _)| tag::group(*t) != 0x0010 || *t == tag::PATIENT_ID)
        .collect()
}

/// [`find`] in the information model `model` (Patient Root whatever `model` at PATIENT level),
/// keeping at most `max_results` matches: when more arrive, a C-CANCEL-RQ is sent (PS3.7
/// 9.3.2.3) and the rest is drained unread. Returns the matches and whether the answer was cut.
/// Under Patient Root the search is hierarchical (PS3.4 C.4.1.3.1): below PATIENT level, `keys`
/// must carry the Patient ID ([`patient_root_study_keys`]).
pub async fn find_limited(
    addr: &str,
    calling: &str,
    called: &str,
    model: QueryModel,
    level: Level,
    keys: &[(u32, String)],
    max_results: usize,
) -> Result<(Vec<Map<String, Json>>, bool)> {
    let model = match model.at(level) {
        QueryModel::Patient => sop_class::PATIENT_ROOT_FIND,
        QueryModel::Study => sop_class::STUDY_ROOT_FIND,
    };
    let ctx = vec![(model.to_owned(), uncompressed())];
    let mut assoc = Association::request(addr, &request_options(calling, called, ctx)).await?;
    let Some(pc) = assoc.find_context(model, None).cloned() else {
        assoc.abort().await;
        return Err(Error::NoPresentationContext(model.into()));
    };
    let mut ident = identifier(level, keys);
    if keys.iter().any(|(_, v)| !v.is_ascii()) {
        ident.put_str(tag::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    }
    let explicit = dataset::is_explicit(&pc.transfer_syntax);
    let id = assoc.next_message_id();
    let mut rq = Command::request(field::C_FIND_RQ, id, model);
    rq.set_u16(tags::PRIORITY, crate::message::PRIORITY_MEDIUM);
    assoc
        .send_message(pc.id, &rq, Some(&ident.encode(explicit)))
        .await?;
    let mut out = Vec::new();
    let mut cut = false;
    loop {
        let (rpc, rsp) = response(&mut assoc, id, field::C_FIND_RSP).await?;
        let st = rsp.status().unwrap_or(status::PROCESSING_FAILURE);
        if rsp.has_data_set() {
            let bytes = assoc
                .recv_data_set(rpc, dataset::MAX_IDENTIFIER_BYTES)
                .await?;
            if status::is_pending(st) && !cut {
                if out.len() == max_results {
                    cut = true;
                    assoc
                        .send_message(pc.id, &move_::cancel_request(id), None)
                        .await?;
                } else {
                    let ds = dataset::read(&bytes, &pc.transfer_syntax)?;
                    out.push(vesalius_core::json::dataset_to_json(&ds, None));
                }
            }
        }
        if status::is_pending(st) {
            continue;
        }
        let _ = assoc.release().await;
        if st == status::SUCCESS || st == status::CANCEL {
            return Ok((out, cut));
        }
        return Err(Error::Status {
            operation: "C-FIND",
            status: st,
            comment: rsp.error_comment(),
        });
    }
}
