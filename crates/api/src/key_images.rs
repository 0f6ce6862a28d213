//! Key images (issue 6): `POST /api/v1/studies/{study}/key-images` saves a Key Object
//! Selection Document (PS3.3 A.35.4, SOP class 1.2.840.10008.5.1.4.1.1.88.59) that flags
//! instances of the study as "Of Interest", in a new series of the same study, so that any
//! DICOM viewer (and QIDO-RS `Modality=KO`) finds them.
//!
//! Body: `{"instances": ["<SOP Instance UID>", ...], "description": "optional text"}` (1 to
//! [`MAX_INSTANCES`] instances of the study). Answer `201 {"studyInstanceUID",
//! "seriesInstanceUID", "sopInstanceUID", "referenced"}`. With `?peer=NAME` the study is one
//! held at that peer and the document is stored there ([`crate::annotate`]); the rules below
//! are then the peer's, and this site's are in that module.
//!
//! Rules:
//! - the caller must see the study (otherwise 404, like a missing study) and have the
//!   `annotate` right on it (otherwise 403 `forbidden`): admins, clinicians and radiographers
//!   of the organisation that owns it; a study seen through a grant from another organisation
//!   cannot be written to;
//! - every instance named must be an instance of that copy of the study (otherwise 400
//!   `bad-request`, nothing stored);
//! - the document is built here (the browser never encodes DICOM) and goes through the ingest
//!   path like any other object (durable, routed, announced); the request is audited
//!   `key-images` with the new SOP Instance UID and the number of references.
//!
//! The document (TID 2010 "Key Object Selection"): a CONTAINER titled (113000, DCM, "Of
//! Interest"), the observer context (TID 1002 / 1003: Observer Type person, Person Observer
//! Name, Person Observer's Login Name (128774, DCM) = the creator, see
//! `vesalius_store::key_objects`), one IMAGE item per instance (Referenced SOP Sequence), a
//! TEXT item (113012, DCM, "Key Object Description") when a description is given; the Current
//! Requested Procedure Evidence Sequence lists the instances by series. Patient and study
//! attributes are copied from the study's stored metadata. Text is UTF-8 (`ISO_IR 192`).
//!
//! Unmarking: `DELETE /api/v1/studies/{study}/key-images/{sop}` (`?peer=NAME` for a study held
//! at a peer). Instances are never changed: the caller's key image documents that reference
//! `sop` (anyone's for an administrator of the organisation holding the study here) are
//! withdrawn by an IHE IOCM rejection note (a KO titled (113001, DCM, "Rejected for Quality
//! Reasons"), PS3.16 CID 7011, series 9002, listing them in its evidence and as COMPOSITE
//! items), which the archive honours by hiding them; when they flagged other images too, a new
//! key image document for those (same creator) is stored first. The last key image is
//! unmarked by the rejection note alone (a KO references at least one instance). Answer `200
//! {"studyInstanceUID", "unmarked", "rejected", "rejectionNote", "replacements",
//! "stillFlaggedBy"}` (documents of others that still flag it); an image no
//! document of the caller flags: `200` withdrawing nothing; one flagged only by others'
//! documents (or other systems'): 403 `forbidden`, audited denied. The ingest refuses any
//! rejection but of that creator's key image documents ([`key_objects::Rejections`]), so this
//! never hides an image. Audited `key-images` (`details.unmark`, `rejects`, `replaces`).

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, Length, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use serde::Deserialize;
use serde_json::{Value as Json_, json};
use vesalius_auth::{Action, Caller, Resource};
use vesalius_core::ErrorKind;
use vesalius_store::audit::Outcome;
use vesalius_store::index::InstanceMetadata;
use vesalius_store::ingest::IngestContext;
use vesalius_store::key_objects;
use vesalius_store::query::Scope;

use crate::annotate::{AtPeer, Home, annotated_study};
use crate::{ApiError, Services};

/// SOP Class UID of the Key Object Selection Document.
pub const KEY_OBJECT_SELECTION: &str = "1.2.840.10008.5.1.4.1.1.88.59";
/// Most instances one document may reference.
pub const MAX_INSTANCES: usize = 1000;
/// Longest description accepted (characters; stored as UT).
pub const MAX_DESCRIPTION: usize = 1024;
/// Series Number of the new series (PS3.3 C.17.6.1: type 1).
const SERIES_NUMBER: i32 = 9001;
/// Series Number of a rejection note's series.
const REJECTION_SERIES_NUMBER: i32 = 9002;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKeyImages {
    instances: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

pub(crate) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, message)
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorKind::Internal, format!("building the key object: {e}"))
}

/// A new UID under the `2.25` root (PS3.5 B.2: a UUID as a decimal integer).
pub(crate) fn new_uid() -> String {
    format!("2.25.{}", uuid::Uuid::new_v4().as_u128())
}

/// `POST /api/v1/studies/{study}/key-images`.
pub(crate) async fn create(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path(study): Path<String>,
    Query(at): Query<AtPeer>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c = crate::caller_of(caller)?;
    crate::links::check_uid(&study)?;
    let req: NewKeyImages = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("the body is not a key-image request: {e}")))?;
    let mut wanted = req.instances;
    wanted.sort();
    wanted.dedup();
    if wanted.is_empty() || wanted.len() > MAX_INSTANCES {
        return Err(bad(format!(
            "instances: 1 to {MAX_INSTANCES} SOP Instance UIDs expected, {} given",
            wanted.len()
        )));
    }
    for uid in &wanted {
        crate::links::check_uid(uid)?;
    }
    let description = req.description.unwrap_or_default().trim().to_owned();
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(bad(format!(
            "description: at most {MAX_DESCRIPTION} characters"
        )));
    }

    let target = annotated_study(
        &sv,
        &c,
        &study,
        at.peer.as_deref(),
        "key-images",
        json!({ "instances": wanted.len() }),
    )
    .await?;
    let refs = target.images(wanted.iter().map(String::as_str))?;
    let series_uid = new_uid();
    let sop_uid = new_uid();
    let doc = KeyObject {
        title: Title::OfInterest,
        study_uid: &study,
        series_uid: &series_uid,
        sop_uid: &sop_uid,
        source: &target.source,
        references: references(&refs),
        description: &description,
        observer: Observer {
            name: &c.principal.actor.name,
            creator: &target.creator,
        },
        now: now_parts(),
    };
    let bytes = doc.encode()?;
    target
        .save(
            &sv,
            &c,
            &sop_uid,
            bytes,
            "key-images",
            json!({ "series": series_uid, "sop": sop_uid, "instances": refs.len() }),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "studyInstanceUID": study,
            "seriesInstanceUID": series_uid,
            "sopInstanceUID": sop_uid,
            "referenced": refs.len(),
        })),
    )
        .into_response())
}

/// A key image document that an unmark withdraws.
struct Withdrawn<'a> {
    doc: &'a Json_,
    creator: String,
}

/// `DELETE /api/v1/studies/{study}/key-images/{instance}`: unmarks a key image (module doc).
pub(crate) async fn unmark(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path((study, instance)): Path<(String, String)>,
    Query(at): Query<AtPeer>,
) -> Result<Response, ApiError> {
    let c = crate::caller_of(caller)?;
    crate::links::check_uid(&study)?;
    crate::links::check_uid(&instance)?;
    let target = annotated_study(
        &sv,
        &c,
        &study,
        at.peer.as_deref(),
        "key-images",
        json!({ "unmark": instance }),
    )
    .await?;
    // An administrator of the organisation owning a study held here withdraws anyone's key
    // images; everyone else (and everyone at a peer) only their own.
    let any_creator = matches!(target.home, Home::Here { .. })
        && c.principal.role == Some(vesalius_store::directory::Role::Admin);
    let mut withdrawn: Vec<Withdrawn> = Vec::new();
    let mut others = 0;
    for doc in &target.key_objects {
        if !key_objects::referenced_images(doc).contains(&instance) {
            continue;
        }
        match key_objects::key_image_creator(doc) {
            Some(creator) if any_creator || creator == target.creator => {
                withdrawn.push(Withdrawn { doc, creator })
            }
            _ => others += 1,
        }
    }
    if withdrawn.is_empty() && others > 0 {
        let mut detail = json!({ "unmark": instance, "reason": "marked by someone else" });
        let org = target.audit_org(&c, &mut detail);
        audit(
            &sv,
            c.event("key-images", Outcome::Denied, &org, Some(&study), detail),
        )
        .await;
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!(
                "{instance} is a key image of someone else's document (or of another system's): \
                 only they or an administrator of the study's organisation may unmark it"
            ),
        ));
    }
    let now = now_parts();
    // What each creator keeps: the other images of their withdrawn documents, in a new one.
    let mut kept: BTreeMap<&str, (Vec<String>, String, String)> = BTreeMap::new();
    for w in &withdrawn {
        let e = kept
            .entry(w.creator.as_str())
            .or_insert_with(|| (Vec::new(), observer_name(w.doc), String::new()));
        e.0.extend(
            key_objects::referenced_images(w.doc)
                .into_iter()
                .filter(|s| *s != instance && target.images.contains_key(s)),
        );
        if e.2.is_empty() {
            e.2 = description_of(w.doc);
        }
    }
    let rejected: Vec<String> = withdrawn
        .iter()
        .map(|w| json_str(w.doc, "00080018"))
        .collect();
    let mut replacements = Vec::new();
    for (creator, (mut sops, name, description)) in kept {
        sops.sort();
        sops.dedup();
        if sops.is_empty() {
            continue;
        }
        let refs = target.images(sops.iter().map(String::as_str))?;
        let (series_uid, sop_uid) = (new_uid(), new_uid());
        let bytes = KeyObject {
            title: Title::OfInterest,
            study_uid: &study,
            series_uid: &series_uid,
            sop_uid: &sop_uid,
            source: &target.source,
            references: references(&refs),
            description: &description,
            observer: Observer {
                name: &name,
                creator,
            },
            now: now.clone(),
        }
        .encode()?;
        target
            .save_as(
                &sv,
                &c,
                &sop_uid,
                bytes,
                "key-images",
                json!({ "series": series_uid, "sop": sop_uid, "instances": refs.len(),
                        "replaces": rejected, "for": creator }),
                any_creator,
            )
            .await?;
        replacements.push(json!({
            "seriesInstanceUID": series_uid,
            "sopInstanceUID": sop_uid,
            "referenced": refs.len(),
        }));
    }
    let note = if withdrawn.is_empty() {
        // Not a key image (any more): nothing to withdraw; audited all the same.
        let mut detail = json!({ "unmark": instance, "rejects": [] });
        let org = target.audit_org(&c, &mut detail);
        audit(
            &sv,
            c.event("key-images", Outcome::Success, &org, Some(&study), detail),
        )
        .await;
        Json_::Null
    } else {
        // The rejection note (IHE IOCM, PS3.3 C.17.6.2.1): the withdrawn documents in its
        // evidence (the archive hides what it lists there) and as COMPOSITE items.
        let (series_uid, sop_uid) = (new_uid(), new_uid());
        let docs: Vec<(String, String, String)> = withdrawn
            .iter()
            .map(|w| {
                (
                    json_str(w.doc, "0020000E"),
                    json_str(w.doc, "00080016"),
                    json_str(w.doc, "00080018"),
                )
            })
            .collect();
        let bytes = KeyObject {
            title: Title::Rejected,
            study_uid: &study,
            series_uid: &series_uid,
            sop_uid: &sop_uid,
            source: &target.source,
            references: docs
                .iter()
                .map(|(series, class, sop)| Reference {
                    series_uid: series,
                    sop_class_uid: class,
                    sop_uid: sop,
                })
                .collect(),
            description: "",
            observer: Observer {
                name: &c.principal.actor.name,
                creator: &target.creator,
            },
            now,
        }
        .encode()?;
        target
            .save_as(
                &sv,
                &c,
                &sop_uid,
                bytes,
                "key-images",
                json!({ "unmark": instance, "series": series_uid, "sop": sop_uid,
                        "rejects": rejected }),
                any_creator,
            )
            .await?;
        json!({ "seriesInstanceUID": series_uid, "sopInstanceUID": sop_uid })
    };
    Ok((
        StatusCode::OK,
        Json(json!({
            "studyInstanceUID": study,
            "unmarked": instance,
            "rejected": rejected,
            "rejectionNote": note,
            "replacements": replacements,
            // Documents that still flag the image (another user's, another system's).
            "stillFlaggedBy": others,
        })),
    )
        .into_response())
}

/// The Person Observer Name (121008, DCM) of a document, "" when none.
fn observer_name(doc: &Json_) -> String {
    content_item(doc, "121008")
        .map(|i| json_str(i, "0040A123"))
        .unwrap_or_default()
}

/// The Key Object Description (113012, DCM) of a document, "" when none.
fn description_of(doc: &Json_) -> String {
    content_item(doc, "113012")
        .map(|i| json_str(i, "0040A160"))
        .unwrap_or_default()
}

/// The first content item of `doc` whose concept name has code value `code` (scheme DCM).
fn content_item<'a>(doc: &'a Json_, code: &str) -> Option<&'a Json_> {
    doc.get("0040A730")?
        .get("Value")?
        .as_array()?
        .iter()
        .find(|i| {
            i.get("0040A043")
                .and_then(|c| c.get("Value"))
                .and_then(|v| v.get(0))
                .is_some_and(|c| {
                    json_str(c, "00080100") == code && json_str(c, "00080102") == "DCM"
                })
        })
}

/// The study `study` as the caller may annotate it (issue 6: key images, measurements): its
/// owner organisation (the caller's own copy when two organisations hold one), the instances
/// of that copy and its reference. A study the caller may not see is 404 (like a missing
/// one); without the `annotate` right 403, audited `kind` denied with `detail`.
pub(crate) async fn writable_study(
    sv: &Services,
    c: &Caller,
    study: &str,
    kind: &str,
    detail: Json_,
) -> Result<
    (
        String,
        Vec<InstanceMetadata>,
        vesalius_auth::policy::StudyRef,
    ),
    ApiError,
> {
    // What the caller sees of the study; its own organisation's copy when there are two.
    let scope = Scope {
        access: c.access.clone(),
        ..Scope::study(study)
    };
    let mut metas = sv.ingestor.index().metadata(&scope).await?;
    let own = metas.iter().any(|m| m.instance.org == c.org());
    let Some(owner) = metas
        .iter()
        .map(|m| m.instance.org.clone())
        .find(|o| !own || o == c.org())
    else {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            format!("no study {study}"),
        ));
    };
    metas.retain(|m| m.instance.org == owner);
    let study_ref = crate::links::study_ref(sv, &owner, study).await?;
    let decide = |action| {
        let (auth, p, r) = (sv.auth.clone(), c.principal.clone(), study_ref.clone());
        async move {
            auth.authorize(&p, action, &Resource::Study(r))
                .await
                .map(|d| d.is_allowed())
                .map_err(|e| ApiError::new(e.kind(), e.to_string()))
        }
    };
    // A study the caller may not see is answered like a missing one.
    if !decide(Action::Retrieve).await? {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            format!("no study {study}"),
        ));
    }
    if !decide(Action::Annotate).await? {
        let mut ev = c.event(kind, Outcome::Denied, &owner, Some(study), detail);
        ev.patient = study_ref.patient.clone();
        audit(sv, ev).await;
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!(
                "{} may not annotate this study (organisation {owner:?})",
                c.principal.actor.name
            ),
        ));
    }

    Ok((owner, metas, study_ref))
}

/// Ingests a document the server built into the study (durable before the answer, routed,
/// announced on the event stream), as the caller.
pub(crate) async fn ingest_document(
    sv: &Services,
    c: &Caller,
    owner: &str,
    study: &str,
    sop_uid: &str,
    bytes: &[u8],
    rejections: vesalius_store::key_objects::Rejections,
) -> Result<vesalius_store::ingest::Ingested, ApiError> {
    let mut spool = sv.ingestor.spool()?;
    spool.write(bytes)?;
    let ctx = IngestContext {
        org: owner.to_owned(),
        source: "api".into(),
        expected_study: Some(study.to_owned()),
        expected_sop_instance: Some(sop_uid.to_owned()),
        actor: Some(c.principal.actor.clone()),
        source_addr: c.source.clone(),
        user_agent: c.user_agent.clone(),
        rejections,
        ..Default::default()
    };
    Ok(sv.ingestor.ingest(spool.finish()?, &ctx).await?)
}

pub(crate) async fn audit(sv: &Services, ev: vesalius_store::audit::AuditEvent) {
    if let Err(e) = sv.auth.audit_log().append(vec![ev]).await {
        tracing::error!(error = %e, "key-images audit event not written");
    }
}

/// The document's references to `images` of the study.
fn references<'a>(images: &[&'a crate::annotate::Image]) -> Vec<Reference<'a>> {
    images
        .iter()
        .map(|i| Reference {
            series_uid: &i.series_uid,
            sop_class_uid: &i.sop_class_uid,
            sop_uid: &i.sop_uid,
        })
        .collect()
}

/// One referenced instance.
struct Reference<'a> {
    series_uid: &'a str,
    sop_class_uid: &'a str,
    sop_uid: &'a str,
}

/// What a document says of the instances it references (its title, PS3.16 CID 7010 / 7011).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Title {
    /// (113000, DCM, "Of Interest"): key images.
    OfInterest,
    /// (113001, DCM, "Rejected for Quality Reasons"): an IHE IOCM rejection note withdrawing
    /// key image documents.
    Rejected,
}

/// The person a document is made for (TID 1002 observer context, TID 1003).
struct Observer<'a> {
    /// Person Observer Name (121008, DCM).
    name: &'a str,
    /// Person Observer's Login Name (128774, DCM): the creator (`vesalius_store::key_objects`).
    creator: &'a str,
}

/// The document to encode.
struct KeyObject<'a> {
    title: Title,
    study_uid: &'a str,
    series_uid: &'a str,
    sop_uid: &'a str,
    /// DICOM JSON of an instance of the study (patient and study attributes).
    source: &'a Json_,
    references: Vec<Reference<'a>>,
    description: &'a str,
    observer: Observer<'a>,
    /// Content date (`YYYYMMDD`) and time (`HHMMSS`), UTC.
    now: (String, String),
}

/// Today's date and time (UTC) as DA and TM.
pub(crate) fn now_parts() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let (y, m, d) = vesalius_deid::civil_from_days(days);
    let s = secs % 86_400;
    (
        format!("{y:04}{m:02}{d:02}"),
        format!("{:02}{:02}{:02}", s / 3600, (s / 60) % 60, s % 60),
    )
}

pub(crate) fn text(tag: Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
    if value.is_empty() {
        DataElement::new(tag, vr, PrimitiveValue::Empty)
    } else {
        DataElement::new(tag, vr, PrimitiveValue::from(value))
    }
}

pub(crate) fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED))
}

/// A coded concept (PS3.3 Table 8.8-1): value, scheme, meaning.
pub(crate) fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        text(tags::CODE_VALUE, VR::SH, value),
        text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        text(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

/// The first value of `tag` (8 hex digits) of a DICOM JSON object as text ("" when absent);
/// person names in their alphabetic form.
/// The Patient and General Study modules (PS3.3 C.7.1.1, C.7.2.1; type 2 attributes present,
/// possibly empty) of a new object of the study, from the study's stored attributes `source`
/// (Study Description apart: each object decides).
pub(crate) fn put_patient_and_study(ds: &mut InMemDicomObject, source: &Json_, study_uid: &str) {
    let src = |tag: &str| json_str(source, tag);
    ds.put(text(tags::PATIENT_NAME, VR::PN, &src("00100010")));
    ds.put(text(tags::PATIENT_ID, VR::LO, &src("00100020")));
    let issuer = src("00100021");
    if !issuer.is_empty() {
        ds.put(text(tags::ISSUER_OF_PATIENT_ID, VR::LO, &issuer));
    }
    ds.put(text(tags::PATIENT_BIRTH_DATE, VR::DA, &src("00100030")));
    ds.put(text(tags::PATIENT_SEX, VR::CS, &src("00100040")));
    ds.put(text(tags::STUDY_INSTANCE_UID, VR::UI, study_uid));
    ds.put(text(tags::STUDY_DATE, VR::DA, &src("00080020")));
    ds.put(text(tags::STUDY_TIME, VR::TM, &src("00080030")));
    ds.put(text(
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        &src("00080090"),
    ));
    ds.put(text(tags::STUDY_ID, VR::SH, &src("00200010")));
    ds.put(text(tags::ACCESSION_NUMBER, VR::SH, &src("00080050")));
}

/// The Current Requested Procedure Evidence Sequence (PS3.3 C.17.2.3) of a document about one
/// study: for each series, the Referenced SOP Sequence items of its instances.
pub(crate) fn evidence<'a>(
    study_uid: &str,
    series: impl Iterator<Item = (&'a str, Vec<InMemDicomObject>)>,
) -> DataElement<InMemDicomObject> {
    let series_items = series
        .map(|(series, refs)| {
            InMemDicomObject::from_element_iter([
                seq(tags::REFERENCED_SOP_SEQUENCE, refs),
                text(tags::SERIES_INSTANCE_UID, VR::UI, series),
            ])
        })
        .collect();
    seq(
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([
            seq(tags::REFERENCED_SERIES_SEQUENCE, series_items),
            text(tags::STUDY_INSTANCE_UID, VR::UI, study_uid),
        ])],
    )
}

/// The root content item of an SR document (PS3.3 C.17.3): a CONTAINER named `concept`, with
/// SEPARATE continuity, made from DCMR template `template`.
pub(crate) fn put_root_container(
    ds: &mut InMemDicomObject,
    concept: InMemDicomObject,
    template: &str,
) {
    ds.put(text(tags::VALUE_TYPE, VR::CS, "CONTAINER"));
    ds.put(seq(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![concept]));
    ds.put(text(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"));
    ds.put(seq(
        tags::CONTENT_TEMPLATE_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([
            text(tags::MAPPING_RESOURCE, VR::CS, "DCMR"),
            text(tags::TEMPLATE_IDENTIFIER, VR::CS, template),
        ])],
    ));
}

pub(crate) fn json_str(obj: &Json_, tag: &str) -> String {
    match obj
        .get(tag)
        .and_then(|e| e.get("Value"))
        .and_then(|v| v.get(0))
    {
        Some(Json_::String(s)) => s.clone(),
        Some(Json_::Number(n)) => n.to_string(),
        Some(Json_::Object(pn)) => pn
            .get("Alphabetic")
            .and_then(Json_::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    }
}

impl KeyObject<'_> {
    /// The data set (PS3.3 A.35.4.3: Patient, General Study, Key Object Document Series,
    /// General Equipment, Key Object Document, SR Document Content, SOP Common).
    fn dataset(&self) -> InMemDicomObject {
        let src = |tag: &str| json_str(self.source, tag);
        let (date, time) = (&self.now.0, &self.now.1);
        let mut ds = InMemDicomObject::new_empty();
        // SOP Common.
        ds.put(text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"));
        ds.put(text(tags::SOP_CLASS_UID, VR::UI, KEY_OBJECT_SELECTION));
        ds.put(text(tags::SOP_INSTANCE_UID, VR::UI, self.sop_uid));
        put_patient_and_study(&mut ds, self.source, self.study_uid);
        let study_description = src("00081030");
        if !study_description.is_empty() {
            ds.put(text(tags::STUDY_DESCRIPTION, VR::LO, &study_description));
        }
        // Key Object Document Series (PS3.3 C.17.6.1).
        ds.put(text(tags::MODALITY, VR::CS, "KO"));
        ds.put(text(tags::SERIES_INSTANCE_UID, VR::UI, self.series_uid));
        let (number, series_description) = match self.title {
            Title::OfInterest => (SERIES_NUMBER, "Key images"),
            Title::Rejected => (REJECTION_SERIES_NUMBER, "Key images withdrawn"),
        };
        ds.put(DataElement::new(
            tags::SERIES_NUMBER,
            VR::IS,
            PrimitiveValue::from(number.to_string()),
        ));
        ds.put(text(tags::SERIES_DESCRIPTION, VR::LO, series_description));
        ds.put(seq(
            tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
            vec![],
        ));
        // General Equipment.
        ds.put(text(tags::MANUFACTURER, VR::LO, "Vesalius"));
        // Key Object Document (PS3.3 C.17.6.2).
        ds.put(DataElement::new(
            tags::INSTANCE_NUMBER,
            VR::IS,
            PrimitiveValue::from("1"),
        ));
        ds.put(text(tags::CONTENT_DATE, VR::DA, date));
        ds.put(text(tags::CONTENT_TIME, VR::TM, time));
        let mut by_series: BTreeMap<&str, Vec<&Reference>> = BTreeMap::new();
        for r in &self.references {
            by_series.entry(r.series_uid).or_default().push(r);
        }
        ds.put(evidence(
            self.study_uid,
            by_series
                .iter()
                .map(|(series, refs)| (*series, refs.iter().map(|r| sop_ref(r)).collect())),
        ));
        // SR Document Content (PS3.3 C.17.3), TID 2010.
        let title = match self.title {
            Title::OfInterest => code("113000", "DCM", "Of Interest"),
            Title::Rejected => code("113001", "DCM", "Rejected for Quality Reasons"),
        };
        put_root_container(&mut ds, title, "2010");
        let mut content = observer_context(&self.observer);
        if !self.description.is_empty() {
            content.push(InMemDicomObject::from_element_iter([
                text(tags::RELATIONSHIP_TYPE, VR::CS, "CONTAINS"),
                text(tags::VALUE_TYPE, VR::CS, "TEXT"),
                seq(
                    tags::CONCEPT_NAME_CODE_SEQUENCE,
                    vec![code("113012", "DCM", "Key Object Description")],
                ),
                text(tags::TEXT_VALUE, VR::UT, self.description),
            ]));
        }
        // Images are IMAGE items; the documents a rejection note withdraws COMPOSITE ones.
        let value_type = match self.title {
            Title::OfInterest => "IMAGE",
            Title::Rejected => "COMPOSITE",
        };
        for r in &self.references {
            content.push(InMemDicomObject::from_element_iter([
                text(tags::RELATIONSHIP_TYPE, VR::CS, "CONTAINS"),
                text(tags::VALUE_TYPE, VR::CS, value_type),
                seq(tags::REFERENCED_SOP_SEQUENCE, vec![sop_ref(r)]),
            ]));
        }
        ds.put(seq(tags::CONTENT_SEQUENCE, content));
        ds
    }

    /// The Part 10 bytes (Explicit VR Little Endian).
    fn encode(&self) -> Result<Vec<u8>, ApiError> {
        part10(self.dataset(), KEY_OBJECT_SELECTION, self.sop_uid)
    }
}

/// A document the server built as Part 10 bytes (PS3.10 7.1 file meta, Explicit VR Little
/// Endian): the Key Object Selection here and the measurement report (`crate::measurements`).
pub(crate) fn part10(
    ds: InMemDicomObject,
    sop_class: &str,
    sop_uid: &str,
) -> Result<Vec<u8>, ApiError> {
    let obj = ds
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(sop_class)
                .media_storage_sop_instance_uid(sop_uid),
        )
        .map_err(internal)?;
    vesalius_deid::coerce::write_object(&obj).map_err(internal)
}

/// The observer context of a document (TID 2010 row 3 includes TID 1002; TID 1003): observer
/// type person, Person Observer Name, Person Observer's Login Name.
fn observer_context(o: &Observer) -> Vec<InMemDicomObject> {
    let context =
        |value_type: &str, concept: InMemDicomObject, value: DataElement<InMemDicomObject>| {
            InMemDicomObject::from_element_iter([
                text(tags::RELATIONSHIP_TYPE, VR::CS, "HAS OBS CONTEXT"),
                text(tags::VALUE_TYPE, VR::CS, value_type),
                seq(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![concept]),
                value,
            ])
        };
    let (login, scheme, meaning) = key_objects::LOGIN_NAME;
    vec![
        context(
            "CODE",
            code("121005", "DCM", "Observer Type"),
            seq(
                tags::CONCEPT_CODE_SEQUENCE,
                vec![code("121006", "DCM", "Person")],
            ),
        ),
        context(
            "PNAME",
            code("121008", "DCM", "Person Observer Name"),
            text(tags::PERSON_NAME, VR::PN, o.name),
        ),
        context(
            "TEXT",
            code(login, scheme, meaning),
            text(tags::TEXT_VALUE, VR::UT, o.creator),
        ),
    ]
}

fn sop_ref(r: &Reference) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, r.sop_class_uid),
        text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, r.sop_uid),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::header::Header;

    fn doc_bytes(description: &str) -> Vec<u8> {
        doc_of(Title::OfInterest, description)
    }

    fn doc_of(title: Title, description: &str) -> Vec<u8> {
        let source = json!({
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Zoë"}]},
            "00100020": {"vr": "LO", "Value": ["MRN7"]},
            "00080020": {"vr": "DA", "Value": ["20261201"]},
        });
        KeyObject {
            title,
            study_uid: "1.2.3",
            series_uid: "1.2.3.4",
            sop_uid: "1.2.3.4.5",
            source: &source,
            references: vec![
                Reference {
                    series_uid: "1.2.3.9",
                    sop_class_uid: "1.2.840.10008.5.1.4.1.1.2",
                    sop_uid: "1.2.3.9.1",
                },
                Reference {
                    series_uid: "1.2.3.9",
                    sop_class_uid: "1.2.840.10008.5.1.4.1.1.2",
                    sop_uid: "1.2.3.9.2",
                },
            ],
            description,
            observer: Observer {
                name: "Zoë Müller",
                creator: "u-7",
            },
            now: ("20261207".into(), "120000".into()),
        }
        .encode()
        .unwrap()
    }

    /// The document as the archive's metadata (DICOM JSON) has it.
    fn as_json(bytes: &[u8]) -> Json_ {
        let parsed = vesalius_core::parse::parse_file(
            std::io::Cursor::new(bytes),
            bytes.len() as u64,
            &Default::default(),
        )
        .unwrap();
        Json_::Object(vesalius_core::json::dataset_to_json(&parsed.dataset, None))
    }

    fn items(obj: &InMemDicomObject, tag: Tag) -> Vec<InMemDicomObject> {
        obj.element(tag).unwrap().items().unwrap().to_vec()
    }

    fn s(obj: &InMemDicomObject, tag: Tag) -> String {
        obj.element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(['\0', ' '])
            .to_owned()
    }

    #[test]
    fn the_document_is_a_tid_2010_key_object_selection() {
        let obj = vesalius_deid::coerce::read_object(&doc_bytes("two slices")).unwrap();
        assert_eq!(s(&obj, tags::SOP_CLASS_UID), KEY_OBJECT_SELECTION);
        assert_eq!(s(&obj, tags::MODALITY), "KO");
        assert_eq!(s(&obj, tags::PATIENT_NAME), "Müller^Zoë");
        assert_eq!(s(&obj, tags::PATIENT_ID), "MRN7");
        assert_eq!(s(&obj, tags::STUDY_DATE), "20261201");
        // Type 2 attributes are present even when the source has no value.
        assert_eq!(s(&obj, tags::ACCESSION_NUMBER), "");
        let title = items(&obj, tags::CONCEPT_NAME_CODE_SEQUENCE);
        assert_eq!(s(&title[0], tags::CODE_VALUE), "113000");
        assert_eq!(s(&title[0], tags::CODING_SCHEME_DESIGNATOR), "DCM");
        let template = items(&obj, tags::CONTENT_TEMPLATE_SEQUENCE);
        assert_eq!(s(&template[0], tags::TEMPLATE_IDENTIFIER), "2010");
        let content = items(&obj, tags::CONTENT_SEQUENCE);
        assert_eq!(
            content.len(),
            6,
            "observer context, a description and two images"
        );
        // TID 1002 / 1003: observer type person, name, login name (the creator).
        assert!(
            content[..3]
                .iter()
                .all(|c| s(c, tags::RELATIONSHIP_TYPE) == "HAS OBS CONTEXT")
        );
        assert_eq!(s(&content[1], tags::PERSON_NAME), "Zoë Müller");
        let login = items(&content[2], tags::CONCEPT_NAME_CODE_SEQUENCE);
        assert_eq!(s(&login[0], tags::CODE_VALUE), "128774");
        assert_eq!(s(&content[2], tags::TEXT_VALUE), "u-7");
        assert_eq!(s(&content[3], tags::VALUE_TYPE), "TEXT");
        assert_eq!(s(&content[3], tags::TEXT_VALUE), "two slices");
        let image = items(&content[5], tags::REFERENCED_SOP_SEQUENCE);
        assert_eq!(s(&image[0], tags::REFERENCED_SOP_INSTANCE_UID), "1.2.3.9.2");
        // The evidence: one series with both instances.
        let evidence = items(&obj, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE);
        let series = items(&evidence[0], tags::REFERENCED_SERIES_SEQUENCE);
        assert_eq!(series.len(), 1);
        assert_eq!(items(&series[0], tags::REFERENCED_SOP_SEQUENCE).len(), 2);
        assert_eq!(
            obj.meta().transfer_syntax(),
            uids::EXPLICIT_VR_LITTLE_ENDIAN
        );
        assert_eq!(
            obj.element(tags::CONTENT_SEQUENCE).unwrap().tag(),
            tags::CONTENT_SEQUENCE
        );
    }

    #[test]
    fn without_a_description_only_images_are_listed() {
        let obj = vesalius_deid::coerce::read_object(&doc_bytes("")).unwrap();
        let content = items(&obj, tags::CONTENT_SEQUENCE);
        assert_eq!(content.len(), 5);
        assert!(
            content[3..]
                .iter()
                .all(|c| s(c, tags::VALUE_TYPE) == "IMAGE")
        );
    }

    #[test]
    fn the_archive_reads_the_creator_and_images_of_a_key_image_document() {
        let json = as_json(&doc_bytes(""));
        assert_eq!(
            key_objects::key_image_creator(&json).as_deref(),
            Some("u-7")
        );
        assert_eq!(
            key_objects::referenced_images(&json),
            ["1.2.3.9.1", "1.2.3.9.2"]
        );
        assert!(!key_objects::is_rejection_note(&json));
        assert_eq!(observer_name(&json), "Zoë Müller");
        assert_eq!(description_of(&as_json(&doc_bytes("why"))), "why");
    }

    #[test]
    fn a_rejection_note_is_an_iocm_ko_listing_the_documents_withdrawn() {
        let bytes = doc_of(Title::Rejected, "");
        let obj = vesalius_deid::coerce::read_object(&bytes).unwrap();
        let title = items(&obj, tags::CONCEPT_NAME_CODE_SEQUENCE);
        assert_eq!(s(&title[0], tags::CODE_VALUE), "113001");
        assert_eq!(s(&obj, tags::SERIES_NUMBER), "9002");
        let content = items(&obj, tags::CONTENT_SEQUENCE);
        assert!(
            content[3..]
                .iter()
                .all(|c| s(c, tags::VALUE_TYPE) == "COMPOSITE")
        );
        let json = as_json(&bytes);
        assert!(key_objects::is_rejection_note(&json));
        // Not a key image document itself: it cannot be withdrawn, and lists no key image.
        assert_eq!(key_objects::key_image_creator(&json), None);
        assert!(key_objects::referenced_images(&json).is_empty());
    }
}
