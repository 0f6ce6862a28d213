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

/// Two in-process archives: our C-MOVE SCU asks the source to move a study to the destination
/// (the source knows it as a configured node), then finds what is there with `study_find_keys`.
#[tokio::test(flavor = "multi_thread")]
async fn move_study_between_two_archives_and_find_it() {
    use vesalius_dimse::scu::{MoveOptions, move_, study_find_keys};
    use vesalius_store::query::Level;
    let dest_access = Access::new().await;
    // The source calls the destination with its own AE title: the destination must know it.
    dest_access.add_ae(AE, ORG, &[], false).await;
    let dest = start_with(dest_access, |o| o.ae_title = "DEST".into()).await;
    let dest_port: u16 = dest.port().parse().unwrap();
    let source = start(|o| {
        o.nodes.push(vesalius_dimse::DicomNode {
            ae_title: "DEST".into(),
            host: "127.0.0.1".into(),
            port: dest_port,
        })
    })
    .await;
    let mut specs = Vec::new();
    for i in 1..=3u16 {
        let mut s = Spec::new("30", "30.1", &format!("30.1.{i}"));
        s.number = i;
        s.patient_id = "PRIOR-1";
        specs.push(s);
    }
    seed(&source, &specs).await;

    let keys = study_find_keys("PRIOR-1", "", "");
    let found = vesalius_dimse::scu::find(&source.addr(), "SCU", AE, Level::Study, &keys)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["0020000D"]["Value"][0], uid("30").as_str());
    assert_eq!(found[0]["00201208"]["Value"][0], 3);

    let mut pendings = Vec::new();
    let study = vec![(vesalius_core::tag::STUDY_INSTANCE_UID, uid("30"))];
    let o = move_(
        &source.addr(),
        "MOVESCU",
        AE,
        Level::Study,
        &study,
        &MoveOptions::new("DEST"),
        |c| pendings.push(*c),
    )
    .await
    .unwrap();
    assert!(o.is_complete(), "{o:?}");
    assert_eq!(o.suboperations.completed, 3);
    assert_eq!(o.pending_responses as usize, pendings.len());
    assert!(pendings.iter().any(|p| p.completed > 0), "{pendings:?}");
    let got = dest.instances(&uid("30")).await;
    assert_eq!(got.len(), 3);
    for i in &got {
        assert_eq!(
            dest.stored_data_set(&i.sop_instance_uid).await,
            source.stored_data_set(&i.sop_instance_uid).await
        );
    }

    // An unknown destination is a final status, not an error of the association.
    let o = move_(
        &source.addr(),
        "MOVESCU",
        AE,
        Level::Study,
        &study,
        &MoveOptions::new("NOWHERE"),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(o.status, 0xA801);
    assert!(!o.is_complete());
    source.stop().await;
    dest.stop().await;
}

/// A Q/R SCP that answers one pending response and then nothing until it is cancelled: the
/// SCU cancels at its deadline and reports the SCP's final 0xFE00; one that ignores the cancel
/// too is aborted.
#[tokio::test(flavor = "multi_thread")]
async fn move_cancels_at_its_deadline() {
    use std::time::Duration;
    use vesalius_dimse::association::{AcceptOptions, Association};
    use vesalius_dimse::message::{Command, SubOperations, field, sop_class, tags};
    use vesalius_dimse::scu::{MoveOptions, move_};
    use vesalius_store::query::Level;

    async fn fake_scp(listener: tokio::net::TcpListener, answer_cancel: bool) -> bool {
        let (socket, _) = listener.accept().await.unwrap();
        let mut syntaxes = std::collections::HashMap::new();
        syntaxes.insert(
            sop_class::STUDY_ROOT_MOVE.to_owned(),
            std::sync::Arc::new(vec![EXPLICIT.to_owned()]),
        );
        let opts = AcceptOptions {
            ae_title: "SLOWPACS".into(),
            max_pdu_length: 16384,
            syntaxes,
            ..Default::default()
        };
        let mut a = Association::accept(socket, &opts).await.unwrap();
        let (pc, rq) = a.recv_command().await.unwrap().unwrap();
        assert_eq!(rq.command_field(), field::C_MOVE_RQ);
        assert_eq!(rq.str(tags::MOVE_DESTINATION).as_deref(), Some("VESALIUS"));
        a.drain_data_set(pc).await.unwrap();
        let mut pending = Command::response_to(&rq, 0xFF00);
        pending.set_suboperations(
            &SubOperations {
                remaining: 4,
                completed: 1,
                failed: 0,
                warning: 0,
            },
            true,
        );
        a.send_message(pc, &pending, None).await.unwrap();
        let Ok(Some((_, cancel))) = a.recv_command().await else {
            return false;
        };
        let got_cancel = cancel.command_field() == field::C_CANCEL_RQ
            && cancel.responded_to() == Some(rq.message_id());
        if answer_cancel {
            let mut fin = Command::response_to(&rq, 0xFE00);
            fin.set_suboperations(
                &SubOperations {
                    remaining: 3,
                    completed: 2,
                    failed: 0,
                    warning: 0,
                },
                true,
            );
            a.send_message(pc, &fin, None).await.unwrap();
            let _ = a.recv_command().await;
        } else {
            // Say nothing until the SCU aborts.
            let _ = a.recv_command().await;
        }
        got_cancel
    }

    let study = vec![(vesalius_core::tag::STUDY_INSTANCE_UID, uid("31"))];
    let opts = MoveOptions::new("VESALIUS")
        .timeout(Duration::from_millis(300))
        .cancel_grace(Duration::from_millis(500));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let scp = tokio::spawn(fake_scp(listener, true));
    let mut seen = 0;
    let o = move_(&addr, "SCU", "SLOWPACS", Level::Study, &study, &opts, |c| {
        seen = c.completed
    })
    .await
    .unwrap();
    assert!(scp.await.unwrap(), "the SCP got a C-CANCEL-RQ for the move");
    assert_eq!(seen, 1);
    assert!(o.cancelled && !o.is_complete(), "{o:?}");
    assert_eq!(o.status, 0xFE00);
    assert_eq!(o.suboperations.completed, 2);
    assert_eq!(o.suboperations.remaining, 3);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let scp = tokio::spawn(fake_scp(listener, false));
    let t0 = std::time::Instant::now();
    let err = move_(
        &addr,
        "SCU",
        "SLOWPACS",
        Level::Study,
        &study,
        &opts,
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, vesalius_dimse::Error::Timeout(_)), "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(scp.await.unwrap());
}
