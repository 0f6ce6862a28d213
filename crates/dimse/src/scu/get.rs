//! C-GET SCU (PS3.4 C.4.3, PS3.7 9.1.3): retrieve instances on **our own association**. The SCP
//! sends each matching instance back as a C-STORE sub-operation on the association we opened,
//! so it needs no address for us (unlike C-MOVE, whose destination the SCP must know).
//!
//! Contract:
//! - Negotiation (PS3.4 C.4.3.1.1, PS3.7 D.3.3.4): one presentation context for the Query/
//!   Retrieve GET SOP class, and storage contexts for the SOP classes we expect
//!   ([`GetOptions::storage_classes`], else [`COMMON_STORAGE_CLASSES`]), each class with an SCP/SCU
//!   Role Selection item asking for the SCP role (SCU role 0, SCP role 1). Per class the first
//!   context offers the uncompressed syntaxes, further ones a single compressed syntax each (as
//!   many as [`storage_contexts`] can fit into the 128 contexts of an association), so an SCP that
//!   picks the context matching the stored syntax sends the instance unchanged.
//! - Each C-STORE-RQ sub-operation is handled like our C-STORE SCP does (`crate::store`): its data
//!   set streams fragment by fragment into the ingest spool (memory bounded by our Maximum Length,
//!   size bounded by the ingest limits), then [`Ingestor::ingest`] parses it with the ingest
//!   limits, checks it against the request (SOP class and instance, and the study when the
//!   caller's [`IngestContext::expected_study`] names one) and commits it durably, with the ingest
//!   observers' side records (routes, audit). Only then is the sub-operation answered 0x0000;
//!   a refused one gets the status of its error kind and an Error Comment, and the C-GET goes on.
//! - The C-GET responses are folded as for C-MOVE: pending counters go to `progress`; the final
//!   status, counters and Failed SOP Instance UID List end up in [`GetOutcome::retrieve`].
//! - A deadline bounds the operation ([`GetOptions::timeout`]): when it passes, C-CANCEL-RQ is sent
//!   (between sub-operations: one being received is finished first, within the grace) and the
//!   final response awaited for [`GetOptions::cancel_grace`]; an SCP that does not end by then is
//!   aborted (`Err(Timeout)`).
//! - `Err` means the association failed (refused, aborted, malformed, or no storage context
//!   accepted). What was stored before that stays stored: every acknowledged instance is durable.

use std::time::Duration;

use tokio::time::Instant;
use vesalius_core::{ErrorKind, uid};
use vesalius_store::Ingestor;
use vesalius_store::ingest::IngestContext;
use vesalius_store::query::{Level, QueryModel};

use super::move_::{MoveOutcome, MoveResponses, cancel_request, response_failed};
use super::{request_options, response_matching, uncompressed};
use crate::association::Association;
use crate::dataset;
use crate::error::{Error, Result};
use crate::message::{Command, SubOperations, field, sop_class, status, tags};

/// Storage SOP classes proposed when the caller does not know which to expect (PS3.4 B.5): the
/// images and documents a PACS commonly holds for a study.
pub const COMMON_STORAGE_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.2",     // CT Image
    "1.2.840.10008.5.1.4.1.1.4",     // MR Image
    "1.2.840.10008.5.1.4.1.1.1",     // Computed Radiography Image
    "1.2.840.10008.5.1.4.1.1.1.1",   // Digital X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.2",   // Digital Mammography X-Ray Image - For Presentation
    "1.2.840.10008.5.1.4.1.1.6.1",   // Ultrasound Image
    "1.2.840.10008.5.1.4.1.1.3.1",   // Ultrasound Multi-frame Image
    "1.2.840.10008.5.1.4.1.1.7",     // Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.12.1",  // X-Ray Angiographic Image
    "1.2.840.10008.5.1.4.1.1.12.2",  // X-Ray Radiofluoroscopic Image
    "1.2.840.10008.5.1.4.1.1.20",    // Nuclear Medicine Image
    "1.2.840.10008.5.1.4.1.1.128",   // Positron Emission Tomography Image
    "1.2.840.10008.5.1.4.1.1.2.1",   // Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4.1",   // Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.88.11", // Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22", // Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33", // Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.59", // Key Object Selection Document
    "1.2.840.10008.5.1.4.1.1.11.1",  // Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.104.1", // Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.66.4",  // Segmentation
    "1.2.840.10008.5.1.4.1.1.7.2",   // Multi-frame Grayscale Byte Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.7.4",   // Multi-frame True Color Secondary Capture Image
    "1.2.840.10008.5.1.4.1.1.481.1", // RT Image
    "1.2.840.10008.5.1.4.1.1.481.2", // RT Dose
    "1.2.840.10008.5.1.4.1.1.481.3", // RT Structure Set
];

/// The storage SOP classes of [`COMMON_STORAGE_CLASSES`] an object of each Modality (0008,0060)
/// defined term is stored in (PS3.3 C.7.3.1.1.1 and the IODs of PS3.3 A).
const MODALITY_CLASSES: &[(&str, &[&str])] = &[
    (
        "CT",
        &["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"],
    ),
    (
        "MR",
        &["1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1"],
    ),
    ("CR", &["1.2.840.10008.5.1.4.1.1.1"]),
    ("DX", &["1.2.840.10008.5.1.4.1.1.1.1"]),
    ("MG", &["1.2.840.10008.5.1.4.1.1.1.2"]),
    (
        "US",
        &["1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1"],
    ),
    ("XA", &["1.2.840.10008.5.1.4.1.1.12.1"]),
    ("RF", &["1.2.840.10008.5.1.4.1.1.12.2"]),
    ("NM", &["1.2.840.10008.5.1.4.1.1.20"]),
    ("PT", &["1.2.840.10008.5.1.4.1.1.128"]),
    (
        "SR",
        &[
            "1.2.840.10008.5.1.4.1.1.88.11",
            "1.2.840.10008.5.1.4.1.1.88.22",
            "1.2.840.10008.5.1.4.1.1.88.33",
        ],
    ),
    ("KO", &["1.2.840.10008.5.1.4.1.1.88.59"]),
    ("PR", &["1.2.840.10008.5.1.4.1.1.11.1"]),
    ("DOC", &["1.2.840.10008.5.1.4.1.1.104.1"]),
    ("SEG", &["1.2.840.10008.5.1.4.1.1.66.4"]),
    (
        "OT",
        &["1.2.840.10008.5.1.4.1.1.7.2", "1.2.840.10008.5.1.4.1.1.7.4"],
    ),
    ("RTIMAGE", &["1.2.840.10008.5.1.4.1.1.481.1"]),
    ("RTDOSE", &["1.2.840.10008.5.1.4.1.1.481.2"]),
    ("RTSTRUCT", &["1.2.840.10008.5.1.4.1.1.481.3"]),
];

/// The storage SOP classes to propose for a study whose SOP Classes in Study are unknown but
/// whose modalities are (Modalities in Study, or its series' Modality): those of
/// [`COMMON_STORAGE_CLASSES`] the modalities are stored in, and Secondary Capture, which any
/// modality may produce. With far fewer classes than the common set, each gets a context for
/// every compressed syntax (about 4 contexts per class for the common set: uncompressed and 3
/// compressed syntaxes, so an SCP holding another compressed syntax would have to transcode).
/// Empty (propose the common set) when `modalities` is empty or names one not listed here.
pub fn storage_classes_for_modalities(modalities: &[String]) -> Vec<String> {
    let mut out = vec!["1.2.840.10008.5.1.4.1.1.7".to_owned()];
    let mut any = false;
    for m in modalities {
        let m = m.trim().to_ascii_uppercase();
        if m.is_empty() {
            continue;
        }
        let Some((_, classes)) = MODALITY_CLASSES.iter().find(|(t, _)| *t == m) else {
            return Vec::new();
        };
        any = true;
        for c in *classes {
            if !out.iter().any(|o| o == c) {
                out.push((*c).to_owned());
            }
        }
    }
    if any { out } else { Vec::new() }
}

/// Compressed syntaxes offered for the sub-operations, one context each, most common in PACS
/// first; as many per SOP class as fit (see [`storage_contexts`]).
const COMPRESSED: &[&str] = &[
    uid::JPEG_LOSSLESS_SV1,
    uid::JPEG_BASELINE,
    uid::JPEG_2000_LOSSLESS,
    uid::RLE_LOSSLESS,
    uid::JPEG_LS_LOSSLESS,
    uid::JPEG_2000,
    uid::JPEG_EXTENDED,
    uid::JPEG_LS_NEAR_LOSSLESS,
    uid::JPEG_LOSSLESS,
    uid::DEFLATED_EXPLICIT_VR_LE,
];

/// Presentation contexts of an association are at most 128 (odd IDs 1-255, PS3.8 9.3.2.2); one is
/// the C-GET's own.
const MAX_STORAGE_CONTEXTS: usize = 127;

/// Refusals kept by name in [`GetOutcome::refusals`] (the rest are only counted).
pub const MAX_REFUSALS: usize = 20;

/// How a C-GET is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetOptions {
    /// The longest the whole operation may take before it is cancelled.
    pub timeout: Duration,
    /// How long to wait for the final response after a C-CANCEL-RQ before aborting.
    pub cancel_grace: Duration,
    /// The storage SOP classes to propose for the sub-operations; empty: the common ones.
    pub storage_classes: Vec<String>,
    /// The information model of the C-GET SOP class (PS3.4 C.6): Study Root by default; Patient
    /// Root needs the Patient ID among the keys of a STUDY-level request.
    pub model: QueryModel,
}

impl Default for GetOptions {
    fn default() -> Self {
        GetOptions::new()
    }
}

impl GetOptions {
    /// At most 10 minutes, 10 s of grace after a cancel, the common storage classes.
    pub fn new() -> Self {
        GetOptions {
            timeout: Duration::from_secs(600),
            cancel_grace: Duration::from_secs(10),
            storage_classes: Vec::new(),
            model: QueryModel::Study,
        }
    }

    /// Sets the deadline of the whole operation.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Sets how long a cancelled operation may take to answer.
    pub fn cancel_grace(mut self, d: Duration) -> Self {
        self.cancel_grace = d;
        self
    }

    /// Sets the storage SOP classes to expect (e.g. the study's SOP Classes in Study).
    pub fn storage_classes(mut self, classes: Vec<String>) -> Self {
        self.storage_classes = classes;
        self
    }

    /// Sets the information model (Patient Root GET, 1.2.840.10008.5.1.4.1.2.1.3, or Study
    /// Root GET, …2.2.3).
    pub fn model(mut self, model: QueryModel) -> Self {
        self.model = model;
        self
    }
}

/// A sub-operation we answered with a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Affected SOP Instance UID of the C-STORE-RQ.
    pub sop_instance_uid: String,
    /// The status we answered.
    pub status: u16,
    /// Why.
    pub reason: String,
}

/// How a C-GET ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetOutcome {
    /// The SCP's account: final status, counters, Failed SOP Instance UID List, cancel.
    pub retrieve: MoveOutcome,
    /// Sub-operations stored here (durably) and answered 0x0000; duplicates count.
    pub stored: u32,
    /// Sub-operations we answered with a failure.
    pub refused: u32,
    /// The first [`MAX_REFUSALS`] of them.
    pub refusals: Vec<Refusal>,
    /// Storage presentation contexts the SCP accepted.
    pub storage_contexts: usize,
    /// SOP classes for which the SCP granted us the SCP role (PS3.7 D.3.3.4).
    pub scp_roles: usize,
}

/// The storage presentation contexts proposed for `classes` (empty: [`COMMON_STORAGE_CLASSES`]),
/// at most [`MAX_STORAGE_CONTEXTS`]: per class the uncompressed syntaxes first, then single
/// compressed syntaxes, as many per class as the budget allows (the same number for each).
/// Invalid and duplicate UIDs are dropped; classes beyond the budget too.
pub fn storage_contexts(classes: &[String]) -> Vec<(String, Vec<String>)> {
    let mut wanted: Vec<String> = Vec::new();
    let given: Vec<&str> = if classes.is_empty() {
        COMMON_STORAGE_CLASSES.to_vec()
    } else {
        classes.iter().map(|c| uid::trim_uid(c.trim())).collect()
    };
    for c in given {
        if uid::is_valid_uid(c) && !wanted.iter().any(|w| w == c) {
            wanted.push(c.to_owned());
        }
    }
    wanted.truncate(MAX_STORAGE_CONTEXTS);
    if wanted.is_empty() {
        return Vec::new();
    }
    let extra = ((MAX_STORAGE_CONTEXTS - wanted.len()) / wanted.len()).min(COMPRESSED.len());
    let mut out = Vec::new();
    for c in &wanted {
        out.push((c.clone(), uncompressed()));
    }
    for ts in &COMPRESSED[..extra] {
        for c in &wanted {
            out.push((c.clone(), vec![(*ts).to_owned()]));
        }
    }
    out
}

/// Sends a C-GET at `level` with `keys` (a study is `(StudyInstanceUID, uid)` at
/// [`Level::Study`]) to `called` at `addr`, calling as `calling`, storing every C-STORE
/// sub-operation through `ingestor` with `ctx` (its organisation, source, actor and expected
/// study; the SOP class and instance are set per sub-operation), and follows it to its final
/// response; `progress` sees the counters of every pending response.
#[allow(clippy::too_many_arguments)]
pub async fn get(
    addr: &str,
    calling: &str,
    called: &str,
    level: Level,
    keys: &[(u32, String)],
    opts: &GetOptions,
    ingestor: &Ingestor,
    ctx: &IngestContext,
    mut progress: impl FnMut(&SubOperations),
) -> Result<GetOutcome> {
    let model = match opts.model.at(level) {
        QueryModel::Patient => sop_class::PATIENT_ROOT_GET,
        QueryModel::Study => sop_class::STUDY_ROOT_GET,
    };
    let storage = storage_contexts(&opts.storage_classes);
    let mut classes: Vec<String> = Vec::new();
    for (c, _) in &storage {
        if !classes.contains(c) {
            classes.push(c.clone());
        }
    }
    let mut contexts = vec![(model.to_owned(), uncompressed())];
    contexts.extend(storage);
    let mut ro = request_options(calling, called, contexts);
    ro.roles = classes.iter().map(|c| (c.clone(), false, true)).collect();
    // Our own deadline governs (an SCP may be quiet while it prepares the sub-operations).
    ro.timeouts.read = ro.timeouts.read.max(opts.timeout + opts.cancel_grace);
    let mut assoc = Association::request(addr, &ro).await?;
    let Some(pc) = assoc.find_context(model, None).cloned() else {
        assoc.abort().await;
        return Err(Error::NoPresentationContext(model.into()));
    };
    let mut outcome = GetOutcome {
        storage_contexts: assoc
            .contexts()
            .iter()
            .filter(|c| c.abstract_syntax != model)
            .count(),
        scp_roles: classes.iter().filter(|c| assoc.requestor_is_scp(c)).count(),
        ..Default::default()
    };
    if outcome.storage_contexts == 0 {
        assoc.abort().await;
        return Err(Error::NoPresentationContext(
            "no storage presentation context for the C-GET sub-operations".into(),
        ));
    }
    let ident = super::identifier(level, keys);
    let explicit = dataset::is_explicit(&pc.transfer_syntax);
    let id = assoc.next_message_id();
    let mut rq = Command::request(field::C_GET_RQ, id, model);
    rq.set_u16(tags::PRIORITY, crate::message::PRIORITY_MEDIUM);
    assoc
        .send_message(pc.id, &rq, Some(&ident.encode(explicit)))
        .await?;
    let mut responses = MoveResponses::default();
    let mut deadline = Instant::now() + opts.timeout;
    loop {
        if !responses.cancelled && Instant::now() >= deadline {
            cancel(&mut assoc, pc.id, id, called).await?;
            responses.cancelled = true;
            deadline = Instant::now() + opts.cancel_grace;
        }
        let next = tokio::time::timeout_at(deadline, assoc.recv_command()).await;
        let (rpc, cmd) = match next {
            Ok(Ok(Some(x))) => x,
            Ok(Ok(None)) => return Err(Error::Aborted),
            Ok(Err(e)) => return Err(e),
            Err(_) if !responses.cancelled => {
                cancel(&mut assoc, pc.id, id, called).await?;
                responses.cancelled = true;
                deadline = Instant::now() + opts.cancel_grace;
                continue;
            }
            Err(_) => {
                assoc.abort().await;
                return Err(Error::Timeout("waiting for the end of a cancelled C-GET"));
            }
        };
        match cmd.command_field() {
            field::C_STORE_RQ => {
                // A sub-operation under way is finished, within the grace, before cancelling.
                let limit = if responses.cancelled {
                    deadline
                } else {
                    deadline + opts.cancel_grace
                };
                let sub = store_sub_operation(&mut assoc, rpc, &cmd, ingestor, ctx);
                match tokio::time::timeout_at(limit, sub).await {
                    Ok(Ok(None)) => outcome.stored += 1,
                    Ok(Ok(Some(r))) => {
                        outcome.refused += 1;
                        if outcome.refusals.len() < MAX_REFUSALS {
                            outcome.refusals.push(r);
                        }
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        assoc.abort().await;
                        return Err(Error::Timeout("receiving a C-GET sub-operation"));
                    }
                }
            }
            field::C_GET_RSP if response_matching(&cmd, id, field::C_GET_RSP) => {
                let failed = response_failed(&mut assoc, &cmd, rpc, &pc.transfer_syntax).await?;
                match responses.on_response(&cmd, failed) {
                    None => progress(responses.last()),
                    Some(o) => {
                        outcome.retrieve = o;
                        let _ = assoc.release().await;
                        return Ok(outcome);
                    }
                }
            }
            other => {
                assoc.abort().await;
                return Err(Error::Protocol(format!(
                    "unexpected command 0x{other:04X} during a C-GET"
                )));
            }
        }
    }
}

/// PS3.7 9.3.3.3: the SCU may cancel a C-GET; the SCP ends with status 0xFE00.
async fn cancel(assoc: &mut Association, pc: u8, id: u16, called: &str) -> Result<()> {
    tracing::info!(called, "C-GET deadline passed: sending C-CANCEL-RQ");
    assoc.send_message(pc, &cancel_request(id), None).await
}

/// Receives one C-STORE sub-operation, stores it through the ingest path and answers it:
/// `None` when stored (0x0000 answered), else the refusal answered. `Err` only when the
/// association is unusable.
async fn store_sub_operation(
    assoc: &mut Association,
    pc: u8,
    cmd: &Command,
    ingestor: &Ingestor,
    ctx: &IngestContext,
) -> Result<Option<Refusal>> {
    let Some(context) = assoc.context(pc).cloned() else {
        return Err(Error::Protocol(format!(
            "unknown presentation context {pc}"
        )));
    };
    let sop_class = cmd.affected_sop_class().unwrap_or_default();
    let sop_instance = cmd.affected_sop_instance().unwrap_or_default();
    let refuse = |status: u16, reason: String| Refusal {
        sop_instance_uid: sop_instance.clone(),
        status,
        reason,
    };
    if !cmd.has_data_set() {
        let r = refuse(
            status::UNABLE_TO_PROCESS,
            "C-STORE-RQ without a data set".into(),
        );
        answer(assoc, pc, cmd, Some(&r)).await?;
        return Ok(Some(r));
    }
    let mut refusal = if !uid::is_storage_sop_class(&context.abstract_syntax) {
        Some(refuse(
            status::SOP_CLASS_NOT_SUPPORTED,
            "not a storage presentation context".into(),
        ))
    } else if sop_class != context.abstract_syntax {
        // PS3.4 B.2.3: the SOP class must be the one of the presentation context.
        Some(refuse(
            ErrorKind::DataSetMismatch.store_status(),
            format!(
                "SOP class {sop_class} on a {} context",
                context.abstract_syntax
            ),
        ))
    } else if !uid::is_valid_uid(&sop_instance) {
        Some(refuse(
            ErrorKind::InvalidDicom.store_status(),
            format!("invalid Affected SOP Instance UID {sop_instance:?}"),
        ))
    } else {
        None
    };
    let mut spool = None;
    if refusal.is_none() {
        match ingestor.spool_with_meta(
            &sop_class,
            &sop_instance,
            &context.transfer_syntax,
            Some(assoc.peer_ae()),
        ) {
            Ok(w) => spool = Some(w),
            Err(e) => refusal = Some(refuse(e.kind().store_status(), e.to_string())),
        }
    }
    // Every fragment goes to the spool as it arrives; after a refusal the rest is discarded.
    let mut received = 0u64;
    loop {
        let (data, last) = assoc.recv_data_fragment(pc).await?;
        received += data.len() as u64;
        if let Some(w) = spool.as_mut()
            && let Err(e) = w.write(&data)
        {
            refusal = Some(refuse(e.kind().store_status(), e.to_string()));
            spool = None;
        }
        if last {
            break;
        }
    }
    metrics::counter!("vesalius_dimse_bytes_received_total").increment(received);
    if let (Some(w), None) = (spool, &refusal) {
        let ctx = IngestContext {
            expected_sop_class: Some(sop_class.clone()),
            expected_sop_instance: Some(sop_instance.clone()),
            ..ctx.clone()
        };
        let stored = match w.finish() {
            Ok(spooled) => ingestor.ingest(spooled, &ctx).await,
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            refusal = Some(refuse(e.kind().store_status(), e.to_string()));
        }
    }
    answer(assoc, pc, cmd, refusal.as_ref()).await?;
    if let Some(r) = &refusal {
        tracing::info!(
            called = assoc.peer_ae(),
            sop = %sop_instance,
            status = format!("0x{:04X}", r.status),
            reason = %r.reason,
            "C-GET sub-operation refused"
        );
    }
    Ok(refusal)
}

/// The C-STORE-RSP: success, or the refusal's status and comment.
async fn answer(
    assoc: &mut Association,
    pc: u8,
    cmd: &Command,
    refusal: Option<&Refusal>,
) -> Result<()> {
    let rsp = match refusal {
        None => Command::response_to(cmd, status::SUCCESS),
        Some(r) => {
            let mut rsp = Command::response_to(cmd, r.status);
            rsp.set_error_comment(&r.reason);
            rsp
        }
    };
    assoc.send_message(pc, &rsp, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_classes_get_every_compressed_syntax() {
        let ctx = storage_contexts(&[
            "1.2.840.10008.5.1.4.1.1.2".into(),
            "1.2.840.10008.5.1.4.1.1.2\0".into(),
            "not a uid".into(),
        ]);
        assert_eq!(ctx.len(), 1 + COMPRESSED.len());
        assert_eq!(ctx[0].1, uncompressed());
        assert!(ctx.iter().all(|(c, _)| c == "1.2.840.10008.5.1.4.1.1.2"));
        assert!(ctx.iter().any(|(_, t)| t == &[uid::RLE_LOSSLESS]));
    }

    #[test]
    fn the_common_set_fits_one_association() {
        let ctx = storage_contexts(&[]);
        assert!(ctx.len() <= MAX_STORAGE_CONTEXTS, "{}", ctx.len());
        let n = COMMON_STORAGE_CLASSES.len();
        // Every class gets its uncompressed context first, then the same compressed ones.
        assert_eq!(ctx.len() % n, 0);
        assert!(ctx[..n].iter().all(|(_, t)| *t == uncompressed()));
        assert!(ctx.len() / n >= 4, "{} per class", ctx.len() / n);
        for (c, t) in &ctx[n..] {
            assert_eq!(t.len(), 1, "{c}");
        }
    }

    #[test]
    fn too_many_classes_are_cut_to_the_budget() {
        let many: Vec<String> = (1..=200).map(|i| format!("1.2.3.{i}")).collect();
        let ctx = storage_contexts(&many);
        assert_eq!(ctx.len(), MAX_STORAGE_CONTEXTS);
        assert!(ctx.iter().all(|(_, t)| *t == uncompressed()));
    }

    #[test]
    fn a_study_of_known_modalities_gets_every_compressed_syntax() {
        let mr = storage_classes_for_modalities(&["MR".into()]);
        assert_eq!(
            mr,
            [
                "1.2.840.10008.5.1.4.1.1.7",
                "1.2.840.10008.5.1.4.1.1.4",
                "1.2.840.10008.5.1.4.1.1.4.1"
            ]
        );
        let ctx = storage_contexts(&mr);
        assert_eq!(ctx.len(), mr.len() * (1 + COMPRESSED.len()));
        for c in &mr {
            for ts in COMPRESSED {
                assert!(ctx.iter().any(|(k, t)| k == c && t == &[*ts]), "{c} {ts}");
            }
        }
        // Several modalities, in any case and with blanks; every class is one of the common set.
        let ct_sr = storage_classes_for_modalities(&[" ct".into(), "SR".into(), "".into()]);
        assert_eq!(ct_sr.len(), 1 + 2 + 3);
        assert!(
            ct_sr
                .iter()
                .all(|c| COMMON_STORAGE_CLASSES.contains(&c.as_str()))
        );
        for (_, classes) in MODALITY_CLASSES {
            assert!(classes.iter().all(|c| COMMON_STORAGE_CLASSES.contains(c)));
        }
        // A modality not listed, or none: the common set (empty).
        assert!(storage_classes_for_modalities(&["CT".into(), "XC".into()]).is_empty());
        assert!(storage_classes_for_modalities(&[]).is_empty());
        assert!(storage_classes_for_modalities(&[" ".into()]).is_empty());
    }
}
