//! Cross-checks with DCMTK's `dcmdump` and `dcmdrle`, skipped when they are not installed.

use std::path::Path;
use std::process::Command;

use dicom_dictionary_std::tags;
use dicom_object::open_file;
use vesalius_synth::{CT_RESCALE_INTERCEPT, RLE_SLICES, ct_head_slice};

use crate::common::{SEED, files_with};

fn tool(name: &str) -> bool {
    let found = Command::new(name).arg("--version").output().is_ok();
    if !found {
        eprintln!("{name} not installed; skipping DCMTK cross-check");
    }
    found
}

#[test]
fn dcmdump_reads_every_kind_cleanly() {
    if !tool("dcmdump") {
        return;
    }
    for needle in [
        "_ct-head/",
        "_mr-brain/",
        "_us-carotid/",
        "_ct-head-prior/",
        "_sc/",
    ] {
        for path in files_with(needle).iter().take(2) {
            let out = Command::new("dcmdump")
                .arg("-q")
                .arg(path)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{}: {stderr}", path.display());
            assert!(
                !stderr.contains("E:") && !stderr.contains("W:"),
                "{}: {stderr}",
                path.display()
            );
        }
    }
}

#[test]
fn dcmdrle_decompresses_to_generator() {
    if !tool("dcmdrle") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let slice = 7;
    let src = &files_with("_ct-head-prior/")[slice];
    let dst = dir.path().join("native.dcm");
    let out = Command::new("dcmdrle")
        .args([src.as_path(), Path::new(&dst)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let obj = open_file(&dst).unwrap();
    let pixels = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    let expected = ct_head_slice(SEED, slice as u32, RLE_SLICES, 512, 512);
    let stored: Vec<i16> = pixels
        .chunks(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert_eq!(stored.len(), expected.len());
    assert!(
        stored
            .iter()
            .zip(&expected)
            .all(|(&s, &hu)| s + CT_RESCALE_INTERCEPT == hu)
    );
}
