//! Interoperability with the Python `dicomweb-client` (and pydicom) against a running server.
//!
//! Needs `/work/main/.venv` (or `$VESALIUS_VENV`) with `dicomweb-client` and `pydicom`:
//! `python3 -m venv .venv && .venv/bin/pip install dicomweb-client pydicom`. Without it the test
//! prints why and passes.

use std::path::PathBuf;
use std::process::Command;

use vesalius_dicomweb::DicomWebOptions;

use crate::dicom::Obj;
use crate::start_with;

const STUDY: &str = "1.2.826.0.1.3680043.10.3.1";

/// The client side: STOW, QIDO, metadata, bulk data, instance and frame retrieval, each
/// compared with what was sent. Prints "OK" at the end.
const SCRIPT: &str = r#"
import sys
import pydicom
from dicomweb_client.api import DICOMwebClient

base, files = sys.argv[1], sys.argv[2:]
client = DICOMwebClient(url=base)
sent = [pydicom.dcmread(f) for f in files]
study = sent[0].StudyInstanceUID

resp = client.store_instances(sent)
refs = resp.ReferencedSOPSequence
assert len(refs) == len(sent), resp
assert {r.ReferencedSOPInstanceUID for r in refs} == {d.SOPInstanceUID for d in sent}
assert "FailedSOPSequence" not in resp

studies = client.search_for_studies(search_filters={"PatientName": "interop*"})
assert [s["0020000D"]["Value"][0] for s in studies] == [study], studies
series = client.search_for_series(study)
assert len(series) == 2, series
instances = client.search_for_instances(study_instance_uid=study, fields=["Rows"])
assert len(instances) == len(sent), instances
assert all(i["00280010"]["Value"][0] == 32 for i in instances)

def fetch(tag, vr, uri):
    # dicomweb-client hands out a bytearray, which pydicom would take for a list of values.
    return bytes(client.retrieve_bulkdata(uri)[0])

meta = client.retrieve_study_metadata(study)
assert sorted(m["00080018"]["Value"][0] for m in meta) == sorted(d.SOPInstanceUID for d in sent)
for m in meta:
    ds = pydicom.Dataset.from_json(m, bulk_data_uri_handler=fetch)
    orig = next(d for d in sent if d.SOPInstanceUID == ds.SOPInstanceUID)
    assert ds.PatientName == orig.PatientName
    assert ds.PixelData == orig.PixelData, "bulk data differs"

for d in sent:
    got = client.retrieve_instance(study, d.SeriesInstanceUID, d.SOPInstanceUID)
    assert got.SOPInstanceUID == d.SOPInstanceUID
    assert got.PixelData == d.PixelData
    assert got.file_meta.TransferSyntaxUID == d.file_meta.TransferSyntaxUID

mf = next(d for d in sent if int(d.get("NumberOfFrames", 1)) > 1)
frames = client.retrieve_instance_frames(study, mf.SeriesInstanceUID, mf.SOPInstanceUID, frame_numbers=[2, 1])
n = len(mf.PixelData) // int(mf.NumberOfFrames)
assert frames[0] == mf.PixelData[n:2 * n] and frames[1] == mf.PixelData[:n]

whole = client.retrieve_study(study)
assert sorted(d.SOPInstanceUID for d in whole) == sorted(d.SOPInstanceUID for d in sent)
print("OK")
"#;

fn python() -> Option<PathBuf> {
    let venv = std::env::var_os("VESALIUS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv"));
    let py = venv.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import dicomweb_client, pydicom"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(py)
    } else {
        eprintln!(
            "SKIPPED: {} lacks dicomweb_client/pydicom \
             (python3 -m venv .venv && .venv/bin/pip install dicomweb-client pydicom)",
            py.display()
        );
        None
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dicomweb_client_round_trip() {
    let Some(py) = python() else {
        return;
    };
    // dicomweb-client sends `Host: 127.0.0.1` without the port (RFC 9110 7.2 wants it), so URLs
    // built from the Host header would point at port 80: configure the public URL, as a
    // deployment behind such clients must.
    let srv = start_with(|origin| DicomWebOptions::new("default").public_base_url(origin)).await;
    let dir = srv.dir.path().join("fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for n in 1..=3u32 {
        let series = format!("{STUDY}.{}", 1 + n / 3);
        let o = Obj::new(STUDY, &series, &format!("{STUDY}.{}", 100 + n))
            .text(0x0010_0010, "PN", "Interop^Test")
            .text(0x0020_0013, "IS", &n.to_string())
            .pixels(32, 24, if n == 3 { 4 } else { 1 });
        let path = dir.join(format!("{n}.dcm"));
        std::fs::write(&path, o.encode()).unwrap();
        files.push(path);
    }
    let script = dir.join("client.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let base = srv.dicomweb.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .arg(script)
            .arg(base)
            .args(&files)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "dicomweb-client failed:\n{stdout}\n{stderr}"
    );
}
