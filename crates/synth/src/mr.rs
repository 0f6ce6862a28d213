//! MR Image IOD (PS3.3 A.4): an axial T1-weighted spin-echo brain series in implicit VR.

use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use rand::{SeedableRng, rngs::StdRng};

use crate::error::SynthError;
use crate::hash;
use crate::noise;
use crate::patient::Patient;
use crate::phantom::{self, Anatomy, Contrast, Plane};
use crate::study::{self, Series, Study, Written};
use crate::writer::{DataSet, TransferSyntax};

/// T1 spin-echo signal (arbitrary units within 12 bits): fat-rich scalp and diploë bright,
/// white matter brighter than grey, CSF dark, cortical bone and air nearly void.
const MR_T1_CONTRAST: Contrast = Contrast {
    air: 0.0,
    scalp: 650.0,
    bone_table: 30.0,
    bone_diploe: 520.0,
    csf: 160.0,
    grey: 470.0,
    white: 690.0,
    deep_grey: 540.0,
    calcification: 120.0,
    falx: 250.0,
};

/// Number of slices, slice thickness and centre-to-centre spacing (mm): 5 mm with a 1 mm gap.
pub(crate) const MR_SLICES: u32 = 24;
const THICKNESS_MM: f64 = 5.0;
const SPACING_MM: f64 = 6.0;
const MR_ROWS: u16 = 256;
const MR_COLS: u16 = 256;
const FOV_MM: f32 = 240.0;
/// Thermal noise per channel; magnitude images therefore have Rician noise.
const NOISE_SIGMA: f32 = 14.0;
/// Receive-coil bias field amplitude (fraction of the signal).
const BIAS: f32 = 0.08;

fn slice_z(slice: u32) -> f64 {
    (f64::from(slice) - f64::from(MR_SLICES - 1) / 2.0) * SPACING_MM
}

/// One T1 slice as unsigned 12-bit values, row-major.
pub(crate) fn mr_brain_slice(seed: u64, slice: u32) -> Vec<u16> {
    let anat = Anatomy::from_seed(seed);
    let plane = Plane {
        z: slice_z(slice) as f32,
        rows: MR_ROWS,
        cols: MR_COLS,
        spacing: FOV_MM / f32::from(MR_COLS),
    };
    let signal = phantom::render(&anat, &plane, &MR_T1_CONTRAST);
    let (r, c) = (usize::from(MR_ROWS), usize::from(MR_COLS));
    // The coil profile is a property of the exam, not of the slice.
    let mut bias_rng = StdRng::seed_from_u64(hash::mix(seed, "mr/bias"));
    let bias = noise::smooth(&mut bias_rng, r, c, 96);
    let mut rng = StdRng::seed_from_u64(hash::mix(seed, &format!("mr/{slice}")));
    signal
        .iter()
        .zip(&bias)
        .map(|(&s, &b)| {
            let re = s * (1.0 + BIAS * b) + NOISE_SIGMA * noise::gaussian(&mut rng);
            let im = NOISE_SIGMA * noise::gaussian(&mut rng);
            (re * re + im * im).sqrt().round().clamp(0.0, 4095.0) as u16
        })
        .collect()
}

/// Writes the MR series.
pub(crate) fn write_series(
    root: &Path,
    seed: u64,
    patient: &Patient,
    study: &Study,
    series: &Series,
) -> Result<Vec<Written>, SynthError> {
    let dir = study::series_dir(root, patient, study, series)?;
    let template = template(patient, study, series);
    let spacing = f64::from(FOV_MM) / f64::from(MR_COLS);
    let origin = -(f64::from(MR_COLS) / 2.0 - 0.5) * spacing;
    study::parallel_map(MR_SLICES, |i| {
        let number = i + 1;
        let sop_uid = series.instance_uid(seed, number);
        let mut ds = template.clone();
        // Interleaved multi-slice acquisition: all slices share one 2.5-minute acquisition.
        study::put_instance(
            &mut ds,
            uids::MR_IMAGE_STORAGE,
            &sop_uid,
            study,
            number,
            series.time,
        );
        ds.ds(tags::IMAGE_POSITION_PATIENT, &[origin, origin, slice_z(i)]);
        ds.ds(tags::SLICE_LOCATION, &[slice_z(i)]);
        let pixels = mr_brain_slice(patient.seed, i);
        ds.native_pixels(
            VR::OW,
            pixels.iter().flat_map(|v| v.to_le_bytes()).collect(),
        );
        study::write_instance(
            study::instance_file(&dir, number),
            uids::MR_IMAGE_STORAGE,
            &sop_uid,
            TransferSyntax::ImplicitVrLittleEndian,
            &ds,
        )
    })
}

fn template(patient: &Patient, study: &Study, series: &Series) -> DataSet {
    let spacing = f64::from(FOV_MM) / f64::from(MR_COLS);
    let mut ds = DataSet::new();
    study::put_common(&mut ds, patient, study, series, "Phantom MR 1.5T");
    // MR Image module (PS3.3 C.8.3.1).
    ds.texts(
        tags::IMAGE_TYPE,
        VR::CS,
        &["ORIGINAL", "PRIMARY", "M", "ND"],
    );
    ds.text(tags::SCANNING_SEQUENCE, VR::CS, "SE");
    ds.text(tags::SEQUENCE_VARIANT, VR::CS, "NONE");
    ds.text(tags::SCAN_OPTIONS, VR::CS, "");
    ds.text(tags::MR_ACQUISITION_TYPE, VR::CS, "2D");
    ds.text(tags::SEQUENCE_NAME, VR::SH, "*se2d1");
    ds.ds(tags::SLICE_THICKNESS, &[THICKNESS_MM]);
    ds.ds(tags::REPETITION_TIME, &[550.0]);
    ds.ds(tags::ECHO_TIME, &[12.0]);
    ds.ds(tags::NUMBER_OF_AVERAGES, &[1.0]);
    ds.ds(tags::IMAGING_FREQUENCY, &[63.8967]);
    ds.text(tags::IMAGED_NUCLEUS, VR::SH, "1H");
    ds.is(tags::ECHO_NUMBERS, 1);
    ds.ds(tags::MAGNETIC_FIELD_STRENGTH, &[1.5]);
    ds.ds(tags::SPACING_BETWEEN_SLICES, &[SPACING_MM]);
    ds.is(tags::ECHO_TRAIN_LENGTH, 1);
    ds.text(tags::RECEIVE_COIL_NAME, VR::SH, "HEAD");
    ds.ds(tags::FLIP_ANGLE, &[90.0]);
    ds.text(tags::PATIENT_POSITION, VR::CS, "HFS");
    ds.is(tags::ACQUISITION_NUMBER, 1);
    ds.ds(
        tags::IMAGE_ORIENTATION_PATIENT,
        &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    );
    ds.ds(tags::PIXEL_SPACING, &[spacing, spacing]);
    ds.us(tags::SAMPLES_PER_PIXEL, &[1]);
    ds.text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    ds.us(tags::ROWS, &[MR_ROWS]);
    ds.us(tags::COLUMNS, &[MR_COLS]);
    ds.us(tags::BITS_ALLOCATED, &[16]);
    ds.us(tags::BITS_STORED, &[12]);
    ds.us(tags::HIGH_BIT, &[11]);
    ds.us(tags::PIXEL_REPRESENTATION, &[0]);
    ds.ds(tags::WINDOW_CENTER, &[450.0]);
    ds.ds(tags::WINDOW_WIDTH, &[900.0]);
    ds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t1_contrast_and_range() {
        let img = mr_brain_slice(8, 12);
        assert_eq!(img.len(), 256 * 256);
        assert!(img.iter().all(|&v| v <= 4095));
        // Background: Rician noise floor, mean about sigma * sqrt(pi / 2).
        let corner: f64 = (0..20).map(|i| f64::from(img[i * 256 + i])).sum::<f64>() / 20.0;
        assert!(corner < 40.0, "{corner}");
        // Somewhere white matter is brighter than grey matter: the histogram has signal there.
        let white = img.iter().filter(|&&v| (640..=740).contains(&v)).count();
        assert!(white > 2000, "{white}");
    }
}
