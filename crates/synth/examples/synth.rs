//! Writes synthetic studies: `cargo run --release -p vesalius-synth --example synth -- OUT_DIR [SEED] [SLICES] [PATIENTS]`.

use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .expect("usage: synth OUT_DIR [SEED] [SLICES] [PATIENTS]"),
    );
    let mut next = |default: u64| {
        args.next()
            .map_or(default, |s| s.parse().expect("a number"))
    };
    let seed = next(1);
    let slices = next(300) as u32;
    let patients = next(1) as u32;
    let opts = vesalius_synth::SynthOptions::new(seed)
        .slices(slices)
        .patients(patients);
    let start = Instant::now();
    let report = vesalius_synth::write_studies(&opts, &out).expect("write studies");
    println!(
        "{} files, {} studies, {} bytes in {:.2?}",
        report.files.len(),
        report.studies.len(),
        report.bytes,
        start.elapsed()
    );
}
