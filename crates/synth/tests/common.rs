//! A shared, lazily written fixture.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vesalius_synth::{SynthOptions, SynthReport, write_studies};

/// Seed, slice count and patient count of the shared fixture.
pub const SEED: u64 = 1234;
pub const SLICES: u32 = 12;
pub const PATIENTS: u32 = 2;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub report: SynthReport,
}

/// Writes all kinds once per test binary.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let report = write_studies(&options(SEED), dir.path()).unwrap();
        Fixture { dir, report }
    })
}

pub fn options(seed: u64) -> SynthOptions {
    SynthOptions::new(seed).slices(SLICES).patients(PATIENTS)
}

/// Files of the fixture whose path contains `needle`, in report order.
pub fn files_with(needle: &str) -> Vec<PathBuf> {
    fixture()
        .report
        .files
        .iter()
        .filter(|p| p.to_string_lossy().contains(needle))
        .cloned()
        .collect()
}

pub fn relative<'a>(root: &Path, p: &'a Path) -> &'a Path {
    p.strip_prefix(root).unwrap()
}
