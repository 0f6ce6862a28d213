//! Secondary Capture Image IOD (PS3.3 A.8.1): tiny studies whose patients' names need a
//! Specific Character Set other than the default repertoire.

use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};

use crate::charset::Charset;
use crate::error::SynthError;
use crate::patient::{self, Patient};
use crate::study::{self, Series, Study, Written};
use crate::writer::{DataSet, TransferSyntax};

const SC_SIZE: u16 = 64;

/// The charset-variety patients: key, name, sex, character set and study description.
const CASES: [(&str, &str, &str, Charset, &str); 4] = [
    (
        "latin1",
        "Müller^Jürgen",
        "M",
        Charset::Latin1,
        "Röntgen Schädel",
    ),
    (
        "utf8",
        "Παπαδοπούλου^Ελένη",
        "F",
        Charset::Utf8,
        "Εγκέφαλος",
    ),
    (
        "cyrillic",
        "Иванов^Пётр^Сергеевич",
        "M",
        Charset::Cyrillic,
        "Снимок черепа",
    ),
    (
        "japanese",
        "Yamada^Tarou=山田^太郎=やまだ^たろう",
        "M",
        Charset::Iso2022Japanese,
        "SC HEAD",
    ),
];

/// One 64 × 64 8-bit image: a seeded diagonal gradient with a bright disc, so that viewers have
/// something to show and the files differ by seed.
fn pixels(seed: u64) -> Vec<u8> {
    let n = usize::from(SC_SIZE);
    let cx = 20 + (seed % 24) as usize;
    let cy = 20 + (seed / 24 % 24) as usize;
    (0..n * n)
        .map(|i| {
            let (r, c) = (i / n, i % n);
            let d2 = (r as isize - cy as isize).pow(2) + (c as isize - cx as isize).pow(2);
            if d2 < 100 { 240 } else { ((r + c) * 3) as u8 }
        })
        .collect()
}

/// The charset-variety patients of a run.
pub(crate) fn patients(seed: u64) -> Vec<(Patient, &'static str)> {
    CASES
        .iter()
        .map(|&(key, name, sex, charset, description)| {
            (
                patient::with_charset(seed, key, name, sex, charset),
                description,
            )
        })
        .collect()
}

/// Writes one single-image study for `patient`, returning the study and its file.
pub(crate) fn write_study(
    root: &Path,
    seed: u64,
    patient: &Patient,
    description: &str,
) -> Result<(Study, Written), SynthError> {
    let charset = patient.charset.unwrap_or(Charset::Utf8);
    let encoded = charset
        .encode(description)
        .unwrap_or_else(|| panic!("{description:?} is not encodable in {charset:?}"));
    let study = Study::with_description(seed, patient, "sc", 0, encoded);
    let series = Series::new(seed, &study, 1, "OT", "SCREEN CAPTURE", "HEAD", 2);
    let dir = study::series_dir(root, patient, &study, &series)?;
    let sop_uid = series.instance_uid(seed, 1);
    let mut ds = DataSet::new();
    study::put_common(&mut ds, patient, &study, &series, "Phantom Capture");
    study::put_instance(
        &mut ds,
        uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
        &sop_uid,
        &study,
        1,
        series.time,
    );
    // SC Equipment module (PS3.3 C.8.6.1): workstation capture.
    ds.text(tags::CONVERSION_TYPE, VR::CS, "WSD");
    ds.texts(tags::IMAGE_TYPE, VR::CS, &["DERIVED", "SECONDARY"]);
    ds.us(tags::SAMPLES_PER_PIXEL, &[1]);
    ds.text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    ds.us(tags::ROWS, &[SC_SIZE]);
    ds.us(tags::COLUMNS, &[SC_SIZE]);
    ds.us(tags::BITS_ALLOCATED, &[8]);
    ds.us(tags::BITS_STORED, &[8]);
    ds.us(tags::HIGH_BIT, &[7]);
    ds.us(tags::PIXEL_REPRESENTATION, &[0]);
    ds.native_pixels(VR::OB, pixels(patient.seed));
    let file = study::write_instance(
        study::instance_file(&dir, 1),
        uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
        &sop_uid,
        TransferSyntax::ExplicitVrLittleEndian,
        &ds,
    )?;
    Ok((study, file))
}
