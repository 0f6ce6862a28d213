//! Study and series identity, the modules every synthetic IOD shares (Patient, General Study,
//! General Series, General Equipment, SOP Common), and the file output helpers.

use std::path::{Path, PathBuf};

use dicom_core::VR;
use dicom_dictionary_std::tags;

use crate::date::{Date, tm};
use crate::error::SynthError;
use crate::hash;
use crate::patient::Patient;
use crate::writer::{DataSet, FileMeta, TransferSyntax, encode_file};

/// (0008,0070) Manufacturer of every synthetic instance.
pub(crate) const MANUFACTURER: &str = "Vesalius Synthetic";
/// (0008,0080) Institution Name of every synthetic instance.
pub(crate) const INSTITUTION: &str = "Vesalius Synthetic Hospital";
/// (0018,1020) Software Versions.
pub(crate) const SOFTWARE_VERSION: &str = concat!("vesalius-synth ", env!("CARGO_PKG_VERSION"));

const REFERRING: [&str; 6] = [
    "Rivera^Carla^^Dr.",
    "Okafor^Daniel^^Dr.",
    "Lindqvist^Maja^^Dr.",
    "Moreau^Julien^^Dr.",
    "Patel^Priya^^Dr.",
    "Fischer^Hannes^^Dr.",
];

/// One study of one patient.
#[derive(Debug, Clone)]
pub(crate) struct Study {
    /// Stable label for UID derivation, e.g. `p0/ct-head`.
    pub label: String,
    /// (0020,000D) Study Instance UID.
    pub uid: String,
    /// (0008,0020) Study Date.
    pub date: Date,
    /// (0008,0030) Study Time in seconds after midnight.
    pub time: u32,
    /// (0008,0050) Accession Number.
    pub accession: String,
    /// (0020,0010) Study ID.
    pub id: String,
    /// (0008,1030) Study Description, encoded in the patient's character set.
    pub description: Vec<u8>,
    /// (0008,0090) Referring Physician's Name (ASCII).
    pub referring: &'static str,
    /// Directory name of the study below the patient directory.
    pub dir: String,
}

impl Study {
    /// A study of `patient` labelled `key`, `day_offset` days from the patient's base date.
    pub fn new(
        seed: u64,
        patient: &Patient,
        key: &str,
        day_offset: i64,
        description: &str,
    ) -> Self {
        Self::with_description(
            seed,
            patient,
            key,
            day_offset,
            description.as_bytes().to_vec(),
        )
    }

    /// Like [`Study::new`] with a pre-encoded description.
    pub fn with_description(
        seed: u64,
        patient: &Patient,
        key: &str,
        day_offset: i64,
        description: Vec<u8>,
    ) -> Self {
        let label = format!("{}/{key}", patient.label);
        // Each patient's studies cluster around a base date in 2023–2024.
        let base = Date {
            year: 2023,
            month: 1,
            day: 1,
        }
        .plus_days((hash::mix(seed, &format!("{}/base-date", patient.label)) % 700) as i64);
        let date = base.plus_days(day_offset);
        // Working hours, 07:30 to 17:30.
        let time = 27_000 + (hash::mix(seed, &format!("{label}/time")) % 36_000) as u32;
        Self {
            uid: hash::uid(seed, &format!("{label}/study")),
            accession: format!("A{}", hash::digits(seed, &format!("{label}/accession"), 9)),
            id: hash::digits(seed, &format!("{label}/study-id"), 6),
            referring: *hash::pick(seed, &format!("{label}/referring"), &REFERRING),
            dir: format!("{}_{key}", date.da()),
            date,
            time,
            description,
            label,
        }
    }
}

/// One series of a study.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    /// Stable label for UID derivation.
    pub label: String,
    /// (0020,000E) Series Instance UID.
    pub uid: String,
    /// (0020,0011) Series Number.
    pub number: u32,
    /// (0008,0060) Modality.
    pub modality: &'static str,
    /// (0008,103E) Series Description.
    pub description: &'static str,
    /// (0018,0015) Body Part Examined.
    pub body_part: &'static str,
    /// (0008,0031) Series Time in seconds after midnight.
    pub time: u32,
    /// (0020,0052) Frame of Reference UID, for IODs with a Frame of Reference module.
    pub frame_of_reference: Option<String>,
    /// Directory name of the series below the study directory.
    pub dir: String,
}

impl Series {
    /// Series `number` of `study`, starting `minutes` after the study.
    pub fn new(
        seed: u64,
        study: &Study,
        number: u32,
        modality: &'static str,
        description: &'static str,
        body_part: &'static str,
        minutes: u32,
    ) -> Self {
        let label = format!("{}/series/{number}", study.label);
        Self {
            uid: hash::uid(seed, &label),
            frame_of_reference: None,
            dir: format!("{number:03}_{modality}"),
            time: study.time + 60 * minutes,
            number,
            modality,
            description,
            body_part,
            label,
        }
    }

    /// Adds a Frame of Reference UID.
    pub fn with_frame_of_reference(mut self, seed: u64) -> Self {
        self.frame_of_reference = Some(hash::uid(
            seed,
            &format!("{}/frame-of-reference", self.label),
        ));
        self
    }

    /// SOP Instance UID of instance `number` (1-based) of this series.
    pub fn instance_uid(&self, seed: u64, number: u32) -> String {
        hash::uid(seed, &format!("{}/instance/{number}", self.label))
    }
}

/// Puts the Patient, General Study, General Series and General Equipment modules.
pub(crate) fn put_common(
    ds: &mut DataSet,
    patient: &Patient,
    study: &Study,
    series: &Series,
    model: &str,
) {
    if let Some(cs) = patient.charset {
        ds.text(tags::SPECIFIC_CHARACTER_SET, VR::CS, cs.term());
    }
    ds.text(tags::STUDY_DATE, VR::DA, &study.date.da());
    ds.text(tags::SERIES_DATE, VR::DA, &study.date.da());
    ds.text(tags::STUDY_TIME, VR::TM, &tm(study.time));
    ds.text(tags::SERIES_TIME, VR::TM, &tm(series.time));
    ds.text(tags::ACCESSION_NUMBER, VR::SH, &study.accession);
    ds.text(tags::MODALITY, VR::CS, series.modality);
    ds.text(tags::MANUFACTURER, VR::LO, MANUFACTURER);
    ds.text(tags::INSTITUTION_NAME, VR::LO, INSTITUTION);
    ds.text(tags::REFERRING_PHYSICIAN_NAME, VR::PN, study.referring);
    ds.text(
        tags::STATION_NAME,
        VR::SH,
        &format!("VSYN-{}", series.modality),
    );
    ds.bytes(tags::STUDY_DESCRIPTION, VR::LO, study.description.clone());
    ds.text(tags::SERIES_DESCRIPTION, VR::LO, series.description);
    ds.text(tags::MANUFACTURER_MODEL_NAME, VR::LO, model);
    ds.bytes(tags::PATIENT_NAME, VR::PN, patient.name.clone());
    ds.text(tags::PATIENT_ID, VR::LO, &patient.id);
    ds.text(tags::ISSUER_OF_PATIENT_ID, VR::LO, "VESALIUS-SYNTH");
    ds.text(tags::PATIENT_BIRTH_DATE, VR::DA, &patient.birth_date.da());
    ds.text(tags::PATIENT_SEX, VR::CS, patient.sex);
    let age = patient.birth_date.age_on(study.date);
    ds.text(tags::PATIENT_AGE, VR::AS, &format!("{age:03}Y"));
    ds.text(tags::BODY_PART_EXAMINED, VR::CS, series.body_part);
    ds.text(tags::SOFTWARE_VERSIONS, VR::LO, SOFTWARE_VERSION);
    ds.uid(tags::STUDY_INSTANCE_UID, &study.uid);
    ds.uid(tags::SERIES_INSTANCE_UID, &series.uid);
    ds.text(tags::STUDY_ID, VR::SH, &study.id);
    ds.is(tags::SERIES_NUMBER, i64::from(series.number));
    if let Some(for_uid) = &series.frame_of_reference {
        ds.uid(tags::FRAME_OF_REFERENCE_UID, for_uid);
        ds.text(tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    }
}

/// Puts the SOP Common module and the instance-level identification and timing.
pub(crate) fn put_instance(
    ds: &mut DataSet,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    study: &Study,
    number: u32,
    content_time: u32,
) {
    ds.uid(tags::SOP_CLASS_UID, sop_class_uid);
    ds.uid(tags::SOP_INSTANCE_UID, sop_instance_uid);
    ds.text(tags::INSTANCE_CREATION_DATE, VR::DA, &study.date.da());
    ds.text(tags::INSTANCE_CREATION_TIME, VR::TM, &tm(content_time));
    ds.text(tags::CONTENT_DATE, VR::DA, &study.date.da());
    ds.text(tags::CONTENT_TIME, VR::TM, &tm(content_time));
    ds.text(tags::ACQUISITION_DATE, VR::DA, &study.date.da());
    ds.text(tags::ACQUISITION_TIME, VR::TM, &tm(content_time));
    ds.is(tags::INSTANCE_NUMBER, i64::from(number));
}

/// A file written by the generators: its path and size.
pub(crate) type Written = (PathBuf, u64);

/// Encodes `ds` as a Part 10 file at `path`, whose parent directory must exist.
pub(crate) fn write_instance(
    path: PathBuf,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    ts: TransferSyntax,
    ds: &DataSet,
) -> Result<Written, SynthError> {
    let meta = FileMeta {
        sop_class_uid,
        sop_instance_uid,
        transfer_syntax: ts,
    };
    let bytes = encode_file(&meta, ds);
    std::fs::write(&path, &bytes).map_err(|source| SynthError::WriteFile {
        path: path.clone(),
        source,
    })?;
    Ok((path, bytes.len() as u64))
}

/// Creates (if needed) and returns `root/patient/study/series`.
pub(crate) fn series_dir(
    root: &Path,
    patient: &Patient,
    study: &Study,
    series: &Series,
) -> Result<PathBuf, SynthError> {
    let dir = root.join(&patient.id).join(&study.dir).join(&series.dir);
    std::fs::create_dir_all(&dir).map_err(|source| SynthError::CreateDir {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// File name of instance `number` (1-based) in its series directory.
pub(crate) fn instance_file(dir: &Path, number: u32) -> PathBuf {
    dir.join(format!("{number:04}.dcm"))
}

/// Runs `f(0..n)` on all cores, returning results in index order. Each index is independent,
/// so the output does not depend on scheduling.
pub(crate) fn parallel_map<T, F>(n: u32, f: F) -> Result<Vec<T>, SynthError>
where
    T: Send,
    F: Fn(u32) -> Result<T, SynthError> + Sync,
{
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(n.max(1) as usize) as u32;
    let mut slots: Vec<Option<T>> = (0..n).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let f = &f;
                scope.spawn(move || {
                    (w..n)
                        .step_by(workers as usize)
                        .map(|i| f(i).map(|t| (i, t)))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        for h in handles {
            let done = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))?;
            for (i, t) in done {
                slots[i as usize] = Some(t);
            }
        }
        Ok::<_, SynthError>(())
    })?;
    Ok(slots.into_iter().flatten().collect())
}
