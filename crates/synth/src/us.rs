//! Ultrasound Multi-frame Image IOD (PS3.3 A.7): a 30-frame grey-scale cine loop of a carotid
//! artery in long axis, pulsating once per second.

use std::f32::consts::PI;
use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use rand::{SeedableRng, rngs::StdRng};

use crate::error::SynthError;
use crate::hash;
use crate::noise;
use crate::patient::Patient;
use crate::study::{self, Series, Study, Written};
use crate::writer::{DataSet, TransferSyntax};

/// (0028,0008) Number of Frames.
pub(crate) const US_FRAMES: u32 = 30;
const US_ROWS: usize = 256;
const US_COLS: usize = 256;
/// (0018,1063) Frame Time in ms: 30 frames per second, one heartbeat per loop.
const FRAME_TIME_MS: f64 = 1000.0 / 30.0;

/// Relative arterial distension over one cardiac cycle, `phase` in [0, 1): a fast systolic
/// upstroke followed by an exponential diastolic run-off.
fn pulse(phase: f32) -> f32 {
    if phase < 0.12 {
        (phase / 0.12 * PI / 2.0).sin()
    } else {
        (-(phase - 0.12) / 0.22).exp()
    }
}

/// All frames, 8-bit, frame after frame, row-major.
pub(crate) fn carotid_cine(seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(hash::mix(seed, "us/speckle"));
    // Fully developed speckle: Rayleigh amplitude, blurred laterally as a linear probe's beam is
    // wider than its pulse is long.
    let raw: Vec<f32> = (0..US_ROWS * US_COLS)
        .map(|_| noise::gaussian(&mut rng).hypot(noise::gaussian(&mut rng)))
        .collect();
    let speckle: Vec<f32> = (0..US_ROWS * US_COLS)
        .map(|i| {
            let (r, c) = (i / US_COLS, i % US_COLS);
            let at = |dc: isize| {
                raw[r * US_COLS + (c as isize + dc).clamp(0, US_COLS as isize - 1) as usize]
            };
            (at(-2) + 2.0 * at(-1) + 3.0 * at(0) + 2.0 * at(1) + at(2)) / 9.0 * 1.1
        })
        .collect();
    let tilt = ((hash::mix(seed, "us/tilt") % 100) as f32 / 100.0 - 0.5) * 0.12;
    let base_radius = 22.0;
    let mut out = Vec::with_capacity(US_FRAMES as usize * US_ROWS * US_COLS);
    for f in 0..US_FRAMES {
        let dr = 3.5 * pulse(f as f32 / US_FRAMES as f32);
        let radius = base_radius + dr;
        for r in 0..US_ROWS {
            for c in 0..US_COLS {
                let centre = 128.0 + tilt * (c as f32 - 128.0);
                let y = r as f32;
                let dist = (y - centre).abs();
                let echo = if dist < radius - 1.0 {
                    // Lumen: anechoic blood with faint noise.
                    0.04 * speckle[r * US_COLS + c]
                } else if dist < radius + 2.0 {
                    // Intima–media complex: a bright double line.
                    0.95 * speckle[r * US_COLS + c].max(0.6)
                } else {
                    // Tissue around the artery is pushed outward by the distension.
                    let shift = dr * (-(dist - radius) / 25.0).exp();
                    let src = (y - shift * (y - centre).signum()).clamp(0.0, (US_ROWS - 1) as f32);
                    let sr = src as usize;
                    let layer = tissue_echo(src);
                    layer * speckle[sr * US_COLS + c]
                };
                // Depth attenuation not fully compensated by time-gain compensation.
                let gain = 1.0 - 0.35 * y / US_ROWS as f32;
                let v = 185.0 * echo * gain + 3.0 * noise::gaussian(&mut rng);
                out.push(v.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

/// Echogenicity of the tissue layers at depth `y` (rows): bright skin, subcutaneous fat,
/// fascia lines and sternocleidomastoid muscle.
fn tissue_echo(y: f32) -> f32 {
    let line = |at: f32, width: f32| (-((y - at) / width).powi(2)).exp();
    let base = if y < 8.0 {
        0.9
    } else if y < 30.0 {
        0.35
    } else {
        0.55
    };
    (base + 0.6 * line(30.0, 2.0) + 0.5 * line(75.0, 2.5) + 0.4 * line(200.0, 3.0)).min(1.2)
}

/// Writes the cine loop as one instance.
pub(crate) fn write_series(
    root: &Path,
    seed: u64,
    patient: &Patient,
    study: &Study,
    series: &Series,
) -> Result<Vec<Written>, SynthError> {
    let dir = study::series_dir(root, patient, study, series)?;
    let sop_uid = series.instance_uid(seed, 1);
    let mut ds = DataSet::new();
    study::put_common(&mut ds, patient, study, series, "Phantom US L12");
    study::put_instance(
        &mut ds,
        uids::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE,
        &sop_uid,
        study,
        1,
        series.time,
    );
    // US Image module (PS3.3 C.8.5.6): value 3 of Image Type names the region.
    ds.texts(
        tags::IMAGE_TYPE,
        VR::CS,
        &["ORIGINAL", "PRIMARY", "VASCULAR"],
    );
    ds.us(tags::SAMPLES_PER_PIXEL, &[1]);
    ds.text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    ds.us(tags::ROWS, &[US_ROWS as u16]);
    ds.us(tags::COLUMNS, &[US_COLS as u16]);
    ds.us(tags::BITS_ALLOCATED, &[8]);
    ds.us(tags::BITS_STORED, &[8]);
    ds.us(tags::HIGH_BIT, &[7]);
    ds.us(tags::PIXEL_REPRESENTATION, &[0]);
    ds.text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    // Multi-frame and Cine modules (PS3.3 C.7.6.6, C.7.6.5).
    ds.is(tags::NUMBER_OF_FRAMES, i64::from(US_FRAMES));
    ds.at(tags::FRAME_INCREMENT_POINTER, tags::FRAME_TIME);
    ds.ds(tags::FRAME_TIME, &[FRAME_TIME_MS]);
    ds.is(tags::CINE_RATE, 30);
    ds.is(tags::RECOMMENDED_DISPLAY_FRAME_RATE, 30);
    ds.is(tags::HEART_RATE, 60);
    ds.text(tags::TRANSDUCER_TYPE, VR::CS, "LINEAR");
    ds.native_pixels(VR::OB, carotid_cine(patient.seed));
    let file = study::write_instance(
        study::instance_file(&dir, 1),
        uids::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE,
        &sop_uid,
        TransferSyntax::ExplicitVrLittleEndian,
        &ds,
    )?;
    Ok(vec![file])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lumen_is_dark_and_pulsates() {
        let cine = carotid_cine(4);
        let frame = US_ROWS * US_COLS;
        assert_eq!(cine.len(), US_FRAMES as usize * frame);
        // Lumen centre is near-black, tissue above it is grey.
        let lumen = cine[128 * US_COLS + 128];
        let tissue: f32 = (40..60)
            .map(|r| f32::from(cine[r * US_COLS + 128]))
            .sum::<f32>()
            / 20.0;
        assert!(lumen < 30, "{lumen}");
        assert!(tissue > 40.0, "{tissue}");
        // Systole (frame 3) has a wider dark lumen than end-diastole (frame 29).
        let lumen_rows = |f: usize| {
            let px = |r: usize| cine[f * frame + r * US_COLS + 128];
            let up = (0..128).rev().take_while(|&r| px(r) < 40).count();
            let down = (128..US_ROWS).take_while(|&r| px(r) < 40).count();
            up + down
        };
        assert!(
            lumen_rows(3) >= lumen_rows(29) + 4,
            "{} vs {}",
            lumen_rows(3),
            lumen_rows(29)
        );
    }
}
