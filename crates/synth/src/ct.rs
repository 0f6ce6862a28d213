//! CT Image IOD (PS3.3 A.3): the axial head series, natively or RLE encoded.

use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use rand::{SeedableRng, rngs::StdRng};

use crate::error::SynthError;
use crate::hash;
use crate::noise;
use crate::patient::Patient;
use crate::phantom::{self, Anatomy, Contrast, Plane};
use crate::rle::{self, FrameLayout};
use crate::study::{self, Series, Study, Written};
use crate::writer::{DataSet, TransferSyntax};

/// Tissue attenuation in Hounsfield units.
pub(crate) const CT_CONTRAST: Contrast = Contrast {
    air: -1000.0,
    scalp: 40.0,
    bone_table: 1450.0,
    bone_diploe: 1050.0,
    csf: 6.0,
    grey: 40.0,
    white: 29.0,
    deep_grey: 37.0,
    calcification: 180.0,
    falx: 65.0,
};

/// (0028,1052) Rescale Intercept: stored value = HU + 1024.
pub const CT_RESCALE_INTERCEPT: i16 = -1024;
/// Reconstruction field of view (mm); pixel spacing is this over the larger image dimension.
pub const CT_FOV_MM: f32 = 250.0;
/// Patient z (mm) of the inferior edge of the first slice.
const FIRST_Z_MM: f32 = -85.0;
/// Craniocaudal coverage (mm) of every CT series, whatever its slice count.
const COVERAGE_MM: f32 = 187.5;
/// Standard deviation of quantum noise (HU) and amplitude of smooth inhomogeneity (HU).
const NOISE_SIGMA_HU: f32 = 4.0;
const INHOMOGENEITY_HU: f32 = 2.5;

/// Slice thickness (mm) of a series of `slices` contiguous slices.
pub(crate) fn slice_thickness(slices: u32) -> f32 {
    COVERAGE_MM / slices.max(1) as f32
}

/// Patient z (mm) of the centre of `slice` (0-based, inferior to superior).
pub(crate) fn slice_z(slice: u32, slices: u32) -> f32 {
    FIRST_Z_MM + (slice as f32 + 0.5) * slice_thickness(slices)
}

/// The pixel generator for one CT head slice, exposed for later analysis ground truth.
///
/// Returns `rows * cols` values in Hounsfield units, row-major, clamped to [-1024, 3071]. The
/// stored pixel values of the written files are these plus 1024 (Rescale Intercept -1024,
/// slope 1). `slice` counts from 0 at the most inferior slice; the series covers 187.5 mm of
/// the head (z = -85 mm to +102.5 mm) in `slices` contiguous slices, and the pixel spacing is
/// 250 mm divided by `max(rows, cols)`. The anatomy (head size and position, cortical folds)
/// depends on `seed` only, the noise on `seed`, `slice` and `slices`. Files written by
/// [`crate::write_studies`] for patient `p` use the seed [`crate::patient_seed`]`(seed, p)`,
/// which is `seed` itself for the first patient.
pub fn ct_head_slice(seed: u64, slice: u32, slices: u32, rows: u16, cols: u16) -> Vec<i16> {
    let (r, c) = (usize::from(rows), usize::from(cols));
    if r == 0 || c == 0 {
        return Vec::new();
    }
    let anat = Anatomy::from_seed(seed);
    let plane = Plane {
        z: slice_z(slice, slices),
        rows,
        cols,
        spacing: CT_FOV_MM / f32::from(rows.max(cols)),
    };
    let hu = phantom::render(&anat, &plane, &CT_CONTRAST);
    let mut rng = StdRng::seed_from_u64(hash::mix(seed, &format!("ct/{slice}/{slices}")));
    let quantum = noise::correlated(&mut rng, r, c, NOISE_SIGMA_HU);
    let cell = (c / 16).max(4);
    let smooth = noise::smooth(&mut rng, r, c, cell);
    hu.iter()
        .zip(quantum.iter().zip(&smooth))
        .map(|(&v, (&q, &s))| {
            // Inhomogeneity only inside the head; quantum noise everywhere, as on a scanner.
            let inhom = if v > -500.0 {
                s * INHOMOGENEITY_HU
            } else {
                0.0
            };
            (v + q + inhom).round().clamp(-1024.0, 3071.0) as i16
        })
        .collect()
}

/// How a CT series is stored.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CtEncoding {
    /// Explicit VR little endian, native pixel data.
    Native,
    /// RLE Lossless encapsulated pixel data.
    Rle,
}

/// Image size of every CT instance.
const CT_ROWS: u16 = 512;
const CT_COLS: u16 = 512;

/// Writes one axial CT head series of `slices` instances.
pub(crate) fn write_series(
    root: &Path,
    seed: u64,
    patient: &Patient,
    study: &Study,
    series: &Series,
    slices: u32,
    encoding: CtEncoding,
) -> Result<Vec<Written>, SynthError> {
    let dir = study::series_dir(root, patient, study, series)?;
    let template = template(patient, study, series, slices, encoding);
    let spacing = CT_FOV_MM / f32::from(CT_ROWS.max(CT_COLS));
    let origin = -(f32::from(CT_COLS) / 2.0 - 0.5) * spacing;
    study::parallel_map(slices, |i| {
        let number = i + 1;
        let sop_uid = series.instance_uid(seed, number);
        let mut ds = template.clone();
        // Half a second per slice after the series start.
        study::put_instance(
            &mut ds,
            uids::CT_IMAGE_STORAGE,
            &sop_uid,
            study,
            number,
            series.time + i / 2,
        );
        let z = f64::from(slice_z(i, slices));
        ds.ds(
            tags::IMAGE_POSITION_PATIENT,
            &[f64::from(origin), f64::from(origin), z],
        );
        ds.ds(tags::SLICE_LOCATION, &[z]);
        let hu = ct_head_slice(patient.seed, i, slices, CT_ROWS, CT_COLS);
        let native: Vec<u8> = hu
            .iter()
            .flat_map(|&v| (v - CT_RESCALE_INTERCEPT).to_le_bytes())
            .collect();
        let ts = match encoding {
            CtEncoding::Native => {
                ds.native_pixels(VR::OW, native);
                TransferSyntax::ExplicitVrLittleEndian
            }
            CtEncoding::Rle => {
                let layout = FrameLayout {
                    rows: CT_ROWS,
                    cols: CT_COLS,
                    samples_per_pixel: 1,
                    bytes_per_sample: 2,
                };
                ds.encapsulated_pixels(vec![rle::encode_frame(&native, layout)]);
                TransferSyntax::RleLossless
            }
        };
        study::write_instance(
            study::instance_file(&dir, number),
            uids::CT_IMAGE_STORAGE,
            &sop_uid,
            ts,
            &ds,
        )
    })
}

/// Everything shared by the instances of one CT series.
fn template(
    patient: &Patient,
    study: &Study,
    series: &Series,
    slices: u32,
    encoding: CtEncoding,
) -> DataSet {
    let spacing = f64::from(CT_FOV_MM / f32::from(CT_ROWS.max(CT_COLS)));
    let thickness = f64::from(slice_thickness(slices));
    let mut ds = DataSet::new();
    study::put_common(&mut ds, patient, study, series, "Phantom CT 64");
    // CT Image module (PS3.3 C.8.2.1).
    ds.texts(tags::IMAGE_TYPE, VR::CS, &["ORIGINAL", "PRIMARY", "AXIAL"]);
    ds.ds(tags::SLICE_THICKNESS, &[thickness]);
    ds.ds(tags::KVP, &[120.0]);
    ds.ds(tags::DATA_COLLECTION_DIAMETER, &[500.0]);
    ds.ds(tags::RECONSTRUCTION_DIAMETER, &[f64::from(CT_FOV_MM)]);
    ds.ds(tags::GANTRY_DETECTOR_TILT, &[0.0]);
    ds.ds(tags::TABLE_HEIGHT, &[145.0]);
    ds.text(tags::ROTATION_DIRECTION, VR::CS, "CW");
    ds.is(tags::EXPOSURE_TIME, 1000);
    ds.is(tags::X_RAY_TUBE_CURRENT, 280);
    ds.is(tags::EXPOSURE, 280);
    ds.text(tags::CONVOLUTION_KERNEL, VR::SH, "H30s");
    ds.text(tags::PATIENT_POSITION, VR::CS, "HFS");
    ds.is(tags::ACQUISITION_NUMBER, 1);
    // Image Plane module: rows run posterior, columns run to the patient's left.
    ds.ds(
        tags::IMAGE_ORIENTATION_PATIENT,
        &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    );
    ds.ds(tags::PIXEL_SPACING, &[spacing, spacing]);
    // Image Pixel module.
    ds.us(tags::SAMPLES_PER_PIXEL, &[1]);
    ds.text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    ds.us(tags::ROWS, &[CT_ROWS]);
    ds.us(tags::COLUMNS, &[CT_COLS]);
    ds.us(tags::BITS_ALLOCATED, &[16]);
    ds.us(tags::BITS_STORED, &[16]);
    ds.us(tags::HIGH_BIT, &[15]);
    ds.us(tags::PIXEL_REPRESENTATION, &[1]);
    ds.ds(tags::WINDOW_CENTER, &[40.0]);
    ds.ds(tags::WINDOW_WIDTH, &[80.0]);
    ds.text(tags::WINDOW_CENTER_WIDTH_EXPLANATION, VR::LO, "BRAIN");
    ds.ds(tags::RESCALE_INTERCEPT, &[f64::from(CT_RESCALE_INTERCEPT)]);
    ds.ds(tags::RESCALE_SLOPE, &[1.0]);
    ds.text(tags::RESCALE_TYPE, VR::LO, "HU");
    if let CtEncoding::Rle = encoding {
        ds.text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    }
    ds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(img: &[i16], cols: usize, x_mm: f32, y_mm: f32) -> i16 {
        let spacing = CT_FOV_MM / cols as f32;
        let c = (x_mm / spacing + cols as f32 / 2.0 - 0.5).round() as usize;
        let r = (y_mm / spacing + cols as f32 / 2.0 - 0.5).round() as usize;
        img[r * cols + c]
    }

    #[test]
    fn slice_has_air_bone_and_brain() {
        let seed = 42;
        let anat = Anatomy::from_seed(seed);
        // Slice 160 of 300 lies at z = 15.3 mm, through the lateral ventricles.
        let img = ct_head_slice(seed, 160, 300, 512, 512);
        assert_eq!(img.len(), 512 * 512);
        let z = slice_z(160, 300);
        let ax = anat.semi_axes()[0] * (1.0 - (z / anat.semi_axes()[2]).powi(2)).sqrt();
        let (cx, cy) = (anat.cx, anat.cy);
        let corner = at(&img, 512, -120.0, -120.0);
        assert!((-1024..=-980).contains(&corner), "air {corner}");
        let scalp = at(&img, 512, cx + ax - 2.5, cy);
        assert!((20..=60).contains(&scalp), "scalp {scalp}");
        let max = *img.iter().max().unwrap();
        assert!((1400..=1550).contains(&max), "bone max {max}");
        let bone = at(&img, 512, cx - ax + 6.0, cy);
        assert!((1000..=1500).contains(&bone), "bone {bone}");
        let white = at(&img, 512, cx + 38.0 * anat.scale, cy);
        assert!((18..=40).contains(&white), "white {white}");
        let ventricle = at(&img, 512, cx - 8.0 * anat.scale, cy - 3.0 * anat.scale);
        assert!((-10..=20).contains(&ventricle), "csf {ventricle}");
        // Grey/white contrast over regions, averaging out the noise.
        let mean = |lo: i16, hi: i16| {
            let v: Vec<f64> = img
                .iter()
                .filter(|&&p| (lo..=hi).contains(&p))
                .map(|&p| f64::from(p))
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!(mean(15, 60) > 25.0 && mean(15, 60) < 45.0);
    }

    #[test]
    fn deterministic_per_seed_and_slice() {
        let a = ct_head_slice(1, 10, 20, 64, 64);
        assert_eq!(a, ct_head_slice(1, 10, 20, 64, 64));
        assert_ne!(a, ct_head_slice(2, 10, 20, 64, 64));
        assert_ne!(a, ct_head_slice(1, 11, 20, 64, 64));
        assert!(ct_head_slice(1, 0, 1, 0, 10).is_empty());
    }

    #[test]
    fn noise_level_in_air() {
        let img = ct_head_slice(3, 150, 300, 512, 512);
        // Top-left 40 x 40 pixels are air.
        let v: Vec<f64> = (0..40)
            .flat_map(|r| (0..40).map(move |c| (r, c)))
            .map(|(r, c)| f64::from(img[r * 512 + c]))
            .collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        assert!((mean + 1000.0).abs() < 1.5, "{mean}");
        assert!((2.5..=5.5).contains(&sd), "{sd}");
    }
}
