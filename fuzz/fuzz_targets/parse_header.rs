//! Fuzzes the bounded DICOM parser with arbitrary bytes (as a Part 10 file and as bare data sets
//! in each transfer syntax): it must return Ok or Err, never panic or allocate unboundedly.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vesalius_core::parse::{ParseLimits, SeekSource, parse_dataset, parse_file};

fuzz_target!(|data: &[u8]| {
    let limits = ParseLimits { max_kept_bytes: 1 << 20, max_value_length: 1 << 20, ..Default::default() };
    let _ = parse_file(std::io::Cursor::new(data), data.len() as u64, &limits);
    for ts in ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"] {
        let mut src = SeekSource(std::io::Cursor::new(data));
        let _ = parse_dataset(&mut src, 0, data.len() as u64, ts, &limits);
    }
});
