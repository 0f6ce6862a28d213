//! C-ECHO and C-STORE SCP against DCMTK echoscu/storescu; lifecycle of the server.

use std::time::Duration;

use crate::common::*;
use vesalius_dimse::scu::StoreSession;

#[tokio::test(flavor = "multi_thread")]
async fn echoscu_is_answered() {
    let server = start(|_| {}).await;
    let out = dcmtk("echoscu", &["-aec", AE, "127.0.0.1", &server.port()], 5).await;
    assert!(out.status.success(), "{}", text(&out));
    // A wrong called AE title is rejected unless the server accepts any.
    let out = dcmtk(
        "echoscu",
        &["-aec", "NOT_US", "127.0.0.1", &server.port()],
        5,
    )
    .await;
    assert!(!out.status.success());
    server.stop().await;
    let any = start(|o| o.accept_any_called_ae = true).await;
    let out = dcmtk("echoscu", &["-aec", "NOT_US", "127.0.0.1", &any.port()], 5).await;
    assert!(out.status.success(), "{}", text(&out));
    any.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn storescu_files_are_indexed_and_byte_identical() {
    let server = start(|_| {}).await;
    let src = tempfile::tempdir().unwrap();
    let mut specs = Vec::new();
    for i in 1..=3u16 {
        let mut s = Spec::new("1", "1.1", &format!("1.1.{i}"));
        s.number = i;
        specs.push(s);
    }
    let files: Vec<_> = specs
        .iter()
        .map(|s| write_instance(src.path(), s))
        .collect();
    let mut args = vec!["-aec", AE, "-aet", "STORESCU", "127.0.0.1"];
    let port = server.port();
    args.push(&port);
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let out = dcmtk("storescu", &args, 10).await;
    assert!(out.status.success(), "{}", text(&out));

    // Directory mode (+r +sd) with a second study in a nested folder.
    let tree = tempfile::tempdir().unwrap();
    let nested = tree.path().join("a/b");
    std::fs::create_dir_all(&nested).unwrap();
    let mut dir_specs = Vec::new();
    for i in 1..=2u16 {
        let mut s = Spec::new("2", "2.1", &format!("2.1.{i}"));
        s.number = i;
        s.modality = "MR";
        s.sop_class = MR;
        write_instance(&nested, &s);
        dir_specs.push(s);
    }
    let dir = tree.path().display().to_string();
    let out = dcmtk(
        "storescu",
        &["-aec", AE, "+r", "+sd", "127.0.0.1", &port, &dir],
        10,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));

    assert_eq!(server.instances(&uid("1")).await.len(), 3);
    let second = server.instances(&uid("2")).await;
    assert_eq!(second.len(), 2);
    assert!(
        second
            .iter()
            .all(|i| i.sop_class_uid == MR && i.transfer_syntax == EXPLICIT)
    );
    for (spec, file) in specs.iter().zip(&files) {
        assert_eq!(
            server.stored_data_set(&spec.sop).await,
            file_data_set(file),
            "stored data set of {} differs from the file sent",
            spec.sop
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_resend_is_a_success() {
    let server = start(|_| {}).await;
    let src = tempfile::tempdir().unwrap();
    let f = write_instance(src.path(), &Spec::new("3", "3.1", "3.1.1"));
    let f = f.display().to_string();
    for _ in 0..2 {
        let out = dcmtk(
            "storescu",
            &["-aec", AE, "127.0.0.1", &server.port(), &f],
            5,
        )
        .await;
        assert!(out.status.success(), "{}", text(&out));
        assert!(!text(&out).contains("Error"), "{}", text(&out));
    }
    assert_eq!(server.instances(&uid("3")).await.len(), 1);
    server.stop().await;
}

/// DCMTK storescu always announces the UIDs of the file it sends, and pynetdicom is not installed
/// here, so the mismatch is crafted with our own SCU session.
#[tokio::test(flavor = "multi_thread")]
async fn mismatched_sop_instance_is_refused_and_the_association_goes_on() {
    let server = start(|_| {}).await;
    let src = tempfile::tempdir().unwrap();
    let spec = Spec::new("4", "4.1", "4.1.1");
    let path = write_instance(src.path(), &spec);
    let meta = vesalius_dimse::scu::read_file_meta(&path).unwrap();
    let contexts = vec![(CT.to_owned(), vec![EXPLICIT.to_owned()])];
    let mut session = StoreSession::connect(&server.addr(), "SCU", AE, contexts)
        .await
        .unwrap();
    let data = file_data_set(&path);
    let wrong = session
        .store(CT, &uid("9.9.9"), EXPLICIT, &mut data.as_slice())
        .await
        .unwrap();
    assert_eq!(wrong.status & 0xFF00, 0xA900, "{wrong:?}");
    assert!(wrong.comment.unwrap().contains("SOP Instance UID"));
    // The association is still usable.
    let right = session
        .store(CT, &meta.sop_instance, EXPLICIT, &mut data.as_slice())
        .await
        .unwrap();
    assert_eq!(right.status, 0x0000, "{right:?}");
    // Garbage that is not a data set: 0xC000-ish failure, association still fine.
    let junk = vec![0xFFu8; 100];
    let bad = session
        .store(CT, &uid("8.8.8"), EXPLICIT, &mut junk.as_slice())
        .await
        .unwrap();
    assert!(
        vesalius_dimse::message::status::is_failure(bad.status),
        "{bad:?}"
    );
    session.release().await.unwrap();
    assert_eq!(server.instances(&uid("4")).await.len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_aborts_idle_associations_and_returns() {
    let server = start(|_| {}).await;
    let contexts = vec![(CT.to_owned(), vec![EXPLICIT.to_owned()])];
    let session = StoreSession::connect(&server.addr(), "SCU", AE, contexts)
        .await
        .unwrap();
    let addr = server.addr();
    server.stop().await;
    drop(session);
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn associations_beyond_the_limit_are_rejected_transiently() {
    let server = start(|o| o.max_associations = 1).await;
    let contexts = vec![(CT.to_owned(), vec![EXPLICIT.to_owned()])];
    let first = StoreSession::connect(&server.addr(), "SCU", AE, contexts.clone())
        .await
        .unwrap();
    let second = StoreSession::connect(&server.addr(), "SCU", AE, contexts.clone()).await;
    assert!(
        matches!(second, Err(vesalius_dimse::Error::Rejected(_))),
        "{:?}",
        second.err()
    );
    first.release().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = StoreSession::connect(&server.addr(), "SCU", AE, contexts).await;
    assert!(third.is_ok());
    third.unwrap().release().await.unwrap();
    server.stop().await;
}
