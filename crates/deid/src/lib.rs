//! De-identification of DICOM instances with the Basic Application Level Confidentiality
//! Profile of PS3.15 Annex E and its options.
//!
//! [`deidentify`] applies Table E.1-1 (encoded as data in [`table`], one row per attribute)
//! to an in-memory `dicom-object` instance, recursively through sequences, and returns a
//! [`DeidReport`] with counts per action and warnings. The options of PS3.15 E.3 are chosen
//! with [`DeidOptions`]: Retain Longitudinal Temporal Information (full dates, or dates
//! shifted per patient), Retain Patient Characteristics, Retain Device Identity, Retain
//! Institution Identity, Retain UIDs, Clean Descriptors, Clean Structured Content and Retain
//! Safe Private ([`SAFE_PRIVATE`]).
//!
//! # Pseudonyms
//!
//! Replacements are keyed, not random: UIDs become `2.25.` UUID-derived UIDs of
//! HMAC-SHA256(project key, UID), Patient ID and Patient's Name a keyed pseudonym of the
//! patient, so instances de-identified in separate runs with the same key still reference each
//! other and group by patient ([`pseudonym`] gives the exact derivations).
//!
//! # What it does not do
//!
//! It does not clean pixel data (Clean Pixel Data and Clean Recognizable Visual Features are
//! not claimed): instances that may carry burned-in text are flagged in the report instead.
//! Graphics, curves and overlays are removed as the Basic Profile says (Clean Graphics is not
//! implemented). See docs/deidentification.md.
//!
//! # Dependencies
//!
//! `dicom-object` for the data model and `vesalius-core` for the error kinds; no storage,
//! protocol or runtime crate.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod coerce;
mod engine;
mod error;
mod options;
mod private;
pub mod pseudonym;
mod report;
pub mod table;
mod values;

use std::path::{Path, PathBuf};

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Length, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject};

pub use error::Error;
pub use options::{BASIC_PROFILE_CODE, DEFAULT_MAX_DATE_SHIFT_DAYS, DeidOptions, ProfileOption};
pub use private::{SAFE_PRIVATE, SafePrivate};
pub use pseudonym::pseudonymous_uid;
pub use report::{Applied, DeidReport, Warning, WarningKind};
pub use values::{DUMMY_TEXT, civil_from_days};

use engine::{Engine, Mode};

/// The Implementation Class UID written into the file meta of de-identified files (the same
/// as the archive's, `vesalius_store::ingest::IMPLEMENTATION_CLASS_UID`).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.143386247271958049164617452452154213505";
/// The Implementation Version Name written with it.
pub const IMPLEMENTATION_VERSION_NAME: &str = "VESALIUS_01";

/// The first value of De-identification Method (0012,0063); the option names follow.
pub const METHOD_NAME: &str = "Vesalius PS3.15 Annex E";

/// De-identifies a DICOM file in memory: the data set (see [`deidentify_dataset`]) and the
/// file meta, whose Media Storage SOP Instance UID follows the new SOP Instance UID and whose
/// AE titles and private information are removed (PS3.15 E.1.1 item 7).
pub fn deidentify(
    obj: &mut FileDicomObject<InMemDicomObject>,
    opts: &DeidOptions,
) -> Result<DeidReport, Error> {
    let report = deidentify_dataset(obj, opts)?;
    let new_sop = report.sop_instance_uid.clone();
    let retain_uids = opts.is_enabled(ProfileOption::RetainUids);
    obj.update_meta(|m| {
        m.media_storage_sop_instance_uid = match &new_sop {
            Some(u) => u.clone(),
            None if retain_uids => m.media_storage_sop_instance_uid.clone(),
            None => pseudonymous_uid(&opts.key, &m.media_storage_sop_instance_uid),
        };
        m.implementation_class_uid = IMPLEMENTATION_CLASS_UID.into();
        m.implementation_version_name = Some(IMPLEMENTATION_VERSION_NAME.into());
        m.source_application_entity_title = None;
        m.sending_application_entity_title = None;
        m.receiving_application_entity_title = None;
        m.private_information_creator_uid = None;
        m.private_information = None;
    });
    Ok(report)
}

/// De-identifies a data set in place with the Basic Profile and the options of `opts`, and
/// records how: Patient Identity Removed (0012,0062) = YES, De-identification Method
/// (0012,0063), De-identification Method Code Sequence (0012,0064) with the CID 7050 codes of
/// the profile and options, and Longitudinal Temporal Information Modified (0028,0303).
pub fn deidentify_dataset(
    ds: &mut InMemDicomObject,
    opts: &DeidOptions,
) -> Result<DeidReport, Error> {
    if opts.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if opts.is_enabled(ProfileOption::CleanGraphics) {
        return Err(Error::UnsupportedOption {
            option: ProfileOption::CleanGraphics,
        });
    }
    let mut engine = Engine::new(opts, ds);
    flag_pixels(ds, &mut engine.report);
    engine.dataset(ds, Mode::Profile);
    let mut report = engine.finish();
    record_method(ds, opts);
    report.sop_instance_uid = ds
        .get(tags::SOP_INSTANCE_UID)
        .and_then(|e| e.value().to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .filter(|s| !s.is_empty());
    Ok(report)
}

fn text(ds: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    ds.get(tag)
        .and_then(|e| e.value().to_str().ok())
        .map(|v| v.trim_end_matches(['\0', ' ']).trim().to_uppercase())
        .unwrap_or_default()
}

/// Kinds of images that often carry burned-in text: secondary capture and ultrasound (PS3.15
/// E.3.1 note 1).
fn often_burned_in(sop_class: &str, modality: &str) -> bool {
    const SC: &str = "1.2.840.10008.5.1.4.1.1.7";
    const US: [&str; 4] = [
        "1.2.840.10008.5.1.4.1.1.6.1",
        "1.2.840.10008.5.1.4.1.1.6.2",
        "1.2.840.10008.5.1.4.1.1.3.1",
        "1.2.840.10008.5.1.4.1.1.6",
    ];
    sop_class == SC
        || sop_class.starts_with("1.2.840.10008.5.1.4.1.1.7.")
        || US.contains(&sop_class)
        || sop_class == "1.2.840.10008.5.1.4.1.1.3"
        || modality == "US"
}

/// Flags instances whose pixels may identify the patient; the pixels are not changed.
fn flag_pixels(ds: &InMemDicomObject, report: &mut DeidReport) {
    let burned = text(ds, tags::BURNED_IN_ANNOTATION);
    let sop_class = text(ds, tags::SOP_CLASS_UID);
    let modality = text(ds, tags::MODALITY);
    if burned == "YES" {
        report.warn(
            WarningKind::BurnedInAnnotation,
            "Burned In Annotation is YES: the pixel data may show identifying text",
        );
    } else if burned.is_empty() && often_burned_in(&sop_class, &modality) {
        report.warn(
            WarningKind::PossibleBurnedInAnnotation,
            format!(
                "no Burned In Annotation in a {} image ({sop_class}): check the pixels for text",
                if modality.is_empty() { "?" } else { &modality }
            ),
        );
    }
    if text(ds, tags::RECOGNIZABLE_VISUAL_FEATURES) == "YES" {
        report.warn(
            WarningKind::RecognizableVisualFeatures,
            "Recognizable Visual Features is YES: the patient may be recognised from the images",
        );
    }
}

fn code_item(value: &str, meaning: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(value)),
        DataElement::new(
            tags::CODING_SCHEME_DESIGNATOR,
            VR::SH,
            PrimitiveValue::from("DCM"),
        ),
        DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
    ])
}

/// Adds the attributes of PS3.15 E.1.1 item 6 and E.3.6.
fn record_method(ds: &mut InMemDicomObject, opts: &DeidOptions) {
    let codes: Vec<(&str, &str)> = std::iter::once(BASIC_PROFILE_CODE)
        .chain(opts.enabled().iter().map(|o| o.code()))
        .collect();
    // Codes of an earlier de-identification stay; ours are added once.
    let mut items: Vec<InMemDicomObject> = ds
        .get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
        .and_then(|e| e.items())
        .map(|i| i.to_vec())
        .unwrap_or_default();
    for (value, meaning) in &codes {
        let present = items.iter().any(|i| {
            i.get(tags::CODE_VALUE)
                .and_then(|e| e.value().to_str().ok())
                .is_some_and(|v| v.trim() == *value)
        });
        if !present {
            items.push(code_item(value, meaning));
        }
    }
    let method: Vec<String> = std::iter::once(METHOD_NAME.to_string())
        .chain(opts.enabled().iter().map(|o| o.code().1.to_string()))
        .collect();
    let temporal = if opts.is_enabled(ProfileOption::RetainLongitudinalFullDates) {
        "UNMODIFIED"
    } else if opts.is_enabled(ProfileOption::RetainLongitudinalModifiedDates) {
        "MODIFIED"
    } else {
        "REMOVED"
    };
    ds.put(DataElement::new(
        tags::PATIENT_IDENTITY_REMOVED,
        VR::CS,
        PrimitiveValue::from("YES"),
    ));
    ds.put(DataElement::new(
        tags::DEIDENTIFICATION_METHOD,
        VR::LO,
        PrimitiveValue::Strs(method.into()),
    ));
    ds.put(DataElement::new(
        tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
        VR::SQ,
        DataSetSequence::new(items, Length::UNDEFINED),
    ));
    ds.put(DataElement::new(
        tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
        VR::CS,
        PrimitiveValue::from(temporal),
    ));
}

/// A de-identified file written by [`deidentify_file`].
#[derive(Debug, Clone)]
pub struct FileOutcome {
    /// Where it was written.
    pub output: PathBuf,
    /// What was done.
    pub report: DeidReport,
}

fn path_part(uid: Option<String>, fallback: &str) -> String {
    match uid {
        Some(u) if !u.is_empty() => u
            .chars()
            .map(|c| {
                if c.is_ascii_digit() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
        _ => fallback.to_string(),
    }
}

/// De-identifies a Part 10 object held in memory (see [`deidentify`]); returns the new
/// object's bytes and the report.
pub fn deidentify_bytes(bytes: &[u8], opts: &DeidOptions) -> Result<(Vec<u8>, DeidReport), Error> {
    let mut obj = coerce::read_object(bytes)?;
    let report = deidentify(&mut obj, opts)?;
    Ok((coerce::write_object(&obj)?, report))
}

/// The path of a de-identified instance under `out_dir`, named by its (new) UIDs:
/// `{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm`.
pub fn output_path(ds: &InMemDicomObject, out_dir: &Path) -> PathBuf {
    let uid = |t| {
        ds.get(t)
            .and_then(|e| e.value().to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
    };
    out_dir
        .join(path_part(uid(tags::STUDY_INSTANCE_UID), "unknown-study"))
        .join(path_part(uid(tags::SERIES_INSTANCE_UID), "unknown-series"))
        .join(format!(
            "{}.dcm",
            path_part(uid(tags::SOP_INSTANCE_UID), "unknown-instance")
        ))
}

/// Reads the DICOM file `input`, de-identifies it and writes it under `out_dir` at
/// [`output_path`]. The input is never modified.
pub fn deidentify_file(
    input: &Path,
    out_dir: &Path,
    opts: &DeidOptions,
) -> Result<FileOutcome, Error> {
    let mut obj = dicom_object::open_file(input).map_err(|source| Error::OpenFile {
        path: input.to_path_buf(),
        source: Box::new(source),
    })?;
    let report = deidentify(&mut obj, opts)?;
    let output = output_path(&obj, out_dir);
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    obj.write_to_file(&output)
        .map_err(|source| Error::WriteFile {
            path: output.clone(),
            source: Box::new(source),
        })?;
    Ok(FileOutcome { output, report })
}
