//! Our SCU against DCMTK: store_files into storescp, echo.

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn store_files_into_dcmtk_storescp() {
    let dest = tempfile::tempdir().unwrap();
    let (_scp, port) = storescp(dest.path(), "STORESCP").await;
    let addr = format!("127.0.0.1:{port}");
    vesalius_dimse::scu::echo(&addr, "VESALIUS", "STORESCP")
        .await
        .unwrap();
    let src = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 1..=4u16 {
        let mut s = Spec::new("20", "20.1", &format!("20.1.{i}"));
        s.number = i;
        if i == 4 {
            s.sop_class = MR;
            s.modality = "MR";
        }
        files.push(write_instance(src.path(), &s));
    }
    let not_dicom = src.path().join("notes.txt");
    std::fs::write(&not_dicom, b"not a DICOM file").unwrap();
    files.push(not_dicom.clone());
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let summary = vesalius_dimse::scu::store_files(
        &addr,
        "VESALIUS",
        "STORESCP",
        files.clone(),
        |done, total| {
            assert!(done <= total && total == 5);
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        },
    )
    .await
    .unwrap();
    assert_eq!(summary.sent, 4, "{:?}", summary.failures);
    assert_eq!(summary.failed, 1);
    assert_eq!(summary.failures[0].0, not_dicom);
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 5);
    let got = by_sop(&wait_for_files(dest.path(), 4).await);
    let sent = by_sop(&files[..4]);
    assert_eq!(got, sent);
}

#[tokio::test(flavor = "multi_thread")]
async fn scu_errors_have_kinds() {
    let port = free_port();
    let err = vesalius_dimse::scu::echo(&format!("127.0.0.1:{port}"), "A", "B")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), vesalius_core::ErrorKind::Unavailable);
    let server = start(|_| {}).await;
    let err = vesalius_dimse::scu::echo(&server.addr(), "A", "WRONG")
        .await
        .unwrap_err();
    assert!(matches!(err, vesalius_dimse::Error::Rejected(_)), "{err}");
    server.stop().await;
}
