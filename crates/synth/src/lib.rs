//! Synthetic DICOM studies for tests, demos and benchmarks of the Vesalius archive.
//!
//! [`write_studies`] writes DICOM Part 10 files of invented patients — no real patient data is
//! involved — that look like what a PACS receives: a 512 × 512 CT head series with a
//! Hounsfield-calibrated phantom, a T1 MR brain series in implicit VR little endian, an
//! ultrasound multi-frame cine loop, an RLE Lossless CT series, and small secondary capture
//! studies whose patient names need ISO 8859-1, ISO 8859-5, UTF-8 and ISO 2022 JIS X 0208.
//!
//! # Determinism
//!
//! Every byte follows from [`SynthOptions::seed`]: UIDs (under the `2.25` root), names, dates,
//! anatomy and noise. The same options always give byte-identical files, independently of
//! thread scheduling; no clock or environment is read.
//!
//! # On-disk layout
//!
//! ```text
//! out_dir/{PatientID}/{StudyDate}_{study}/{SeriesNumber:03}_{Modality}/{InstanceNumber:04}.dcm
//! e.g.    VS04815162/20240312_ct-head/001_CT/0001.dcm
//! ```
//!
//! Study keys are `ct-head`, `ct-head-prior` (RLE), `mr-brain`, `us-carotid` and `sc`.
//!
//! # Dependencies
//!
//! Only `dicom-core`/`dicom-dictionary-std` for tag and UID constants; files are encoded by the
//! small writer in this crate (see `writer.rs` for why), and the crate must not depend on any
//! other Vesalius crate.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod charset;
mod ct;
mod date;
mod error;
mod hash;
mod mr;
mod noise;
mod patient;
mod phantom;
pub mod rle;
mod sc;
mod study;
mod us;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use ct::{CT_FOV_MM, CT_RESCALE_INTERCEPT, ct_head_slice};
pub use error::SynthError;
pub use patient::patient_seed;

use ct::CtEncoding;
use study::{Series, Study, Written};

/// Number of slices of the RLE-compressed prior CT series.
pub const RLE_SLICES: u32 = 20;

/// The kinds of synthetic studies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SynthKind {
    /// CT Image Storage, 512 × 512 × `slices`, signed 16-bit, explicit VR little endian.
    CtHead,
    /// MR Image Storage, 256 × 256 × 24, unsigned 12-in-16-bit, implicit VR little endian.
    MrBrain,
    /// Ultrasound Multi-frame Image Storage, 30 frames of 256 × 256 8-bit grey scale.
    MultiFrame,
    /// A prior CT head study of [`RLE_SLICES`] slices in RLE Lossless.
    CompressedRle,
    /// Four single-image secondary capture studies of patients with non-ASCII names
    /// (ISO_IR 100, ISO_IR 192, ISO_IR 144 and ISO 2022 IR 87).
    CharsetVariety,
}

impl SynthKind {
    /// All kinds, in the order their studies are written.
    pub const ALL: [SynthKind; 5] = [
        SynthKind::CtHead,
        SynthKind::MrBrain,
        SynthKind::MultiFrame,
        SynthKind::CompressedRle,
        SynthKind::CharsetVariety,
    ];

    /// Kebab-case name, as accepted by [`FromStr`]: `ct-head`, `mr-brain`, `multi-frame`,
    /// `compressed-rle`, `charset-variety`.
    pub fn name(self) -> &'static str {
        match self {
            SynthKind::CtHead => "ct-head",
            SynthKind::MrBrain => "mr-brain",
            SynthKind::MultiFrame => "multi-frame",
            SynthKind::CompressedRle => "compressed-rle",
            SynthKind::CharsetVariety => "charset-variety",
        }
    }
}

impl fmt::Display for SynthKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error of [`SynthKind::from_str`]: the name is not one of [`SynthKind::name`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown study kind {0:?} (expected ct-head, mr-brain, multi-frame, compressed-rle or charset-variety)"
)]
pub struct UnknownSynthKind(pub String);

impl FromStr for SynthKind {
    type Err = UnknownSynthKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SynthKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownSynthKind(s.to_string()))
    }
}

/// What [`write_studies`] generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthOptions {
    /// Seed of every UID, name, date and pixel.
    pub seed: u64,
    /// Number of slices of the CT head series (default 300, at least 1).
    pub slices: u32,
    /// Number of patients that get the CT, MR, US and RLE studies (default 1).
    pub patients: u32,
    /// Which kinds of studies to write (default all); order and duplicates do not matter.
    pub kinds: Vec<SynthKind>,
}

impl SynthOptions {
    /// All kinds, 300 CT slices, one patient.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            slices: 300,
            patients: 1,
            kinds: SynthKind::ALL.to_vec(),
        }
    }

    /// Sets the number of CT head slices.
    pub fn slices(mut self, slices: u32) -> Self {
        self.slices = slices;
        self
    }

    /// Sets the number of patients.
    pub fn patients(mut self, patients: u32) -> Self {
        self.patients = patients;
        self
    }

    /// Sets the kinds of studies.
    pub fn kinds(mut self, kinds: impl IntoIterator<Item = SynthKind>) -> Self {
        self.kinds = kinds.into_iter().collect();
        self
    }

    fn wants(&self, kind: SynthKind) -> bool {
        self.kinds.contains(&kind)
    }
}

/// What [`write_studies`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SynthReport {
    /// Every file written, grouped by study and series, instances in order.
    pub files: Vec<PathBuf>,
    /// Study Instance UIDs, in the order the studies were written.
    pub studies: Vec<String>,
    /// Total size of the files in bytes.
    pub bytes: u64,
}

impl SynthReport {
    fn add_study(&mut self, study: &Study, files: Vec<Written>) {
        self.studies.push(study.uid.clone());
        for (path, len) in files {
            self.files.push(path);
            self.bytes += len;
        }
    }
}

/// Writes the synthetic studies selected by `opts` below `out_dir` (created if missing).
///
/// Existing files with the same names are overwritten; nothing else in `out_dir` is touched.
/// For each patient the studies are, relative to a seed-derived date in 2023–2024: the CT head
/// (day 0), the MR brain (day 3), the carotid ultrasound (day 10) and the RLE prior CT head
/// (one year earlier). The charset-variety patients come after all others.
pub fn write_studies(opts: &SynthOptions, out_dir: &Path) -> Result<SynthReport, SynthError> {
    if opts.slices == 0 {
        return Err(SynthError::InvalidOptions {
            reason: "slices must be at least 1".into(),
        });
    }
    std::fs::create_dir_all(out_dir).map_err(|source| SynthError::CreateDir {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let seed = opts.seed;
    let mut report = SynthReport::default();
    for p in 0..opts.patients {
        let patient = patient::synthetic(seed, p);
        if opts.wants(SynthKind::CtHead) {
            let study = Study::new(seed, &patient, "ct-head", 0, "CT HEAD WO CONTRAST");
            let series = Series::new(seed, &study, 1, "CT", "AXIAL BRAIN", "HEAD", 4)
                .with_frame_of_reference(seed);
            let files = ct::write_series(
                out_dir,
                seed,
                &patient,
                &study,
                &series,
                opts.slices,
                CtEncoding::Native,
            )?;
            report.add_study(&study, files);
        }
        if opts.wants(SynthKind::MrBrain) {
            let study = Study::new(seed, &patient, "mr-brain", 3, "MR BRAIN WO CONTRAST");
            let series = Series::new(seed, &study, 1, "MR", "AX T1 SE", "HEAD", 6)
                .with_frame_of_reference(seed);
            let files = mr::write_series(out_dir, seed, &patient, &study, &series)?;
            report.add_study(&study, files);
        }
        if opts.wants(SynthKind::MultiFrame) {
            let study = Study::new(seed, &patient, "us-carotid", 10, "US CAROTID DUPLEX");
            let series = Series::new(seed, &study, 1, "US", "CAROTID LONG CINE", "NECK", 3);
            let files = us::write_series(out_dir, seed, &patient, &study, &series)?;
            report.add_study(&study, files);
        }
        if opts.wants(SynthKind::CompressedRle) {
            let study = Study::new(seed, &patient, "ct-head-prior", -365, "CT HEAD WO CONTRAST");
            let series = Series::new(seed, &study, 1, "CT", "AXIAL BRAIN RLE", "HEAD", 4)
                .with_frame_of_reference(seed);
            let files = ct::write_series(
                out_dir,
                seed,
                &patient,
                &study,
                &series,
                RLE_SLICES,
                CtEncoding::Rle,
            )?;
            report.add_study(&study, files);
        }
    }
    if opts.wants(SynthKind::CharsetVariety) {
        for (patient, description) in sc::patients(seed) {
            let (study, file) = sc::write_study(out_dir, seed, &patient, description)?;
            report.add_study(&study, vec![file]);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_print() {
        for k in SynthKind::ALL {
            assert_eq!(k.to_string().parse::<SynthKind>(), Ok(k));
        }
        assert!("ct".parse::<SynthKind>().is_err());
    }

    #[test]
    fn options_defaults_and_setters() {
        let o = SynthOptions::new(7);
        assert_eq!(
            (o.seed, o.slices, o.patients, o.kinds.len()),
            (7, 300, 1, 5)
        );
        let o = o.slices(10).patients(2).kinds([SynthKind::MrBrain]);
        assert_eq!((o.slices, o.patients), (10, 2));
        assert!(o.wants(SynthKind::MrBrain) && !o.wants(SynthKind::CtHead));
    }

    #[test]
    fn zero_slices_is_rejected() {
        let dir = std::env::temp_dir().join("vesalius-synth-never-created");
        let err = write_studies(&SynthOptions::new(1).slices(0), &dir).unwrap_err();
        assert!(matches!(err, SynthError::InvalidOptions { .. }));
    }
}
