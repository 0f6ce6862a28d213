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

/// Our C-GET SCU against our own C-GET SCP: the study comes back on the SCU's association and
/// is stored through the SCU side's ingest path, byte-identical; a SOP class not proposed fails
/// at the SCP (0xB000 with the failed instance), and instances of another study than the one
/// expected are refused here.
#[tokio::test(flavor = "multi_thread")]
async fn get_study_into_our_ingest_path() {
    use vesalius_dimse::scu::{GetOptions, get};
    use vesalius_store::ingest::IngestContext;
    use vesalius_store::query::Level;

    let source = start(|_| {}).await;
    let mut specs = Vec::new();
    for i in 1..=4u16 {
        let mut s = Spec::new("40", "40.1", &format!("40.1.{i}"));
        s.number = i;
        s.patient_id = "PRIOR-2";
        if i == 4 {
            s.series = uid("40.2");
            s.sop_class = MR;
            s.modality = "MR";
        }
        specs.push(s);
    }
    seed(&source, &specs).await;
    let study = vec![(vesalius_core::tag::STUDY_INSTANCE_UID, uid("40"))];
    let ctx = IngestContext {
        org: ORG.into(),
        source: format!("dimse:{AE}"),
        expected_study: Some(uid("40")),
        ..Default::default()
    };

    let dir = tempfile::tempdir().unwrap();
    let audit = std::sync::Arc::new(vesalius_store::memory_directory::MemoryAuditLog::default());
    let here = ingestor(dir.path(), &audit);
    let mut pendings = Vec::new();
    let opts = GetOptions::new().storage_classes(vec![CT.into(), MR.into()]);
    let o = get(
        &source.addr(),
        "GETSCU",
        AE,
        Level::Study,
        &study,
        &opts,
        &here,
        &ctx,
        |c| pendings.push(*c),
    )
    .await
    .unwrap();
    assert!(o.retrieve.is_complete(), "{o:?}");
    assert_eq!(
        (o.retrieve.suboperations.completed, o.stored, o.refused),
        (4, 4, 0)
    );
    assert_eq!(o.scp_roles, 2, "{o:?}");
    assert!(
        pendings.iter().any(|p| p.completed > 0 && p.remaining > 0),
        "{pendings:?}"
    );
    let scope = vesalius_store::query::Scope::study(uid("40"));
    let got = here.index().instances(&scope).await.unwrap();
    assert_eq!(got.len(), 4);
    for i in &got {
        let mut bytes = Vec::new();
        let mut s = here.blobs().read(&i.blob_key).await.unwrap();
        while let Some(c) = futures::StreamExt::next(&mut s).await {
            bytes.extend_from_slice(&c.unwrap());
        }
        assert_eq!(
            strip_meta(&bytes),
            source.stored_data_set(&i.sop_instance_uid).await.as_slice()
        );
    }

    // Only CT proposed: the MR cannot be sent on this association.
    let dir = tempfile::tempdir().unwrap();
    let here = ingestor(dir.path(), &audit);
    let opts = GetOptions::new().storage_classes(vec![CT.into()]);
    let o = get(
        &source.addr(),
        "GETSCU",
        AE,
        Level::Study,
        &study,
        &opts,
        &here,
        &ctx,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(o.retrieve.status, 0xB000, "{o:?}");
    assert_eq!((o.stored, o.retrieve.suboperations.failed), (3, 1));
    assert_eq!(o.retrieve.failed_instances, vec![uid("40.1.4")]);
    assert!(!o.retrieve.is_complete());

    // Expecting another study: every sub-operation is refused here, nothing stored.
    let dir = tempfile::tempdir().unwrap();
    let here = ingestor(dir.path(), &audit);
    let other = IngestContext {
        expected_study: Some(uid("41")),
        ..ctx.clone()
    };
    let o = get(
        &source.addr(),
        "GETSCU",
        AE,
        Level::Study,
        &study,
        &GetOptions::new(),
        &here,
        &other,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!((o.stored, o.refused), (0, 4), "{o:?}");
    assert_eq!(o.retrieve.suboperations.failed, 4);
    assert!(
        o.refusals[0].reason.contains(&uid("41")),
        "{:?}",
        o.refusals
    );
    assert!(here.index().instances(&scope).await.unwrap().is_empty());
    source.stop().await;
}

/// A C-GET SCP that sends one sub-operation and a pending response, then nothing until
/// cancelled: the instance is stored, the SCU cancels at its deadline and reports 0xFE00.
#[tokio::test(flavor = "multi_thread")]
async fn get_cancels_at_its_deadline_and_keeps_what_was_stored() {
    use std::time::Duration;
    use vesalius_dimse::association::{AcceptOptions, Association};
    use vesalius_dimse::message::{Command, SubOperations, field, sop_class, tags};
    use vesalius_dimse::scu::{GetOptions, get};
    use vesalius_store::ingest::IngestContext;
    use vesalius_store::query::Level;

    let src = tempfile::tempdir().unwrap();
    let mut spec = Spec::new("42", "42.1", "42.1.1");
    spec.patient_id = "PRIOR-3";
    let file = write_instance(src.path(), &spec);
    let data = file_data_set(&file);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let scp = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut syntaxes = std::collections::HashMap::new();
        for c in [sop_class::STUDY_ROOT_GET, CT] {
            syntaxes.insert(c.to_owned(), std::sync::Arc::new(vec![EXPLICIT.to_owned()]));
        }
        let opts = AcceptOptions {
            ae_title: "SLOWPACS".into(),
            max_pdu_length: 16384,
            syntaxes,
            requestor_scp_classes: [CT.to_owned()].into_iter().collect(),
            ..Default::default()
        };
        let mut a = Association::accept(socket, &opts).await.unwrap();
        let (pc, rq) = a.recv_command().await.unwrap().unwrap();
        assert_eq!(rq.command_field(), field::C_GET_RQ);
        a.drain_data_set(pc).await.unwrap();
        assert!(a.requestor_is_scp(CT));
        let store_pc = a.find_context(CT, Some(EXPLICIT)).unwrap().id;
        let mut st = Command::request(field::C_STORE_RQ, 7, CT);
        st.set_str(tags::AFFECTED_SOP_INSTANCE_UID, &uid("42.1.1"));
        a.send_message(store_pc, &st, Some(&data)).await.unwrap();
        let (_, rsp) = a.recv_command().await.unwrap().unwrap();
        assert_eq!(
            (rsp.command_field(), rsp.status()),
            (field::C_STORE_RSP, Some(0))
        );
        let mut pending = Command::response_to(&rq, 0xFF00);
        let mut counts = SubOperations {
            remaining: 4,
            completed: 1,
            failed: 0,
            warning: 0,
        };
        pending.set_suboperations(&counts, true);
        a.send_message(pc, &pending, None).await.unwrap();
        let Ok(Some((_, cancel))) = a.recv_command().await else {
            return false;
        };
        let mut fin = Command::response_to(&rq, 0xFE00);
        counts.remaining = 4;
        fin.set_suboperations(&counts, true);
        a.send_message(pc, &fin, None).await.unwrap();
        let _ = a.recv_command().await;
        cancel.command_field() == field::C_CANCEL_RQ
            && cancel.responded_to() == Some(rq.message_id())
    });

    let dir = tempfile::tempdir().unwrap();
    let audit = std::sync::Arc::new(vesalius_store::memory_directory::MemoryAuditLog::default());
    let here = ingestor(dir.path(), &audit);
    let ctx = IngestContext {
        org: ORG.into(),
        source: "dimse:SLOWPACS".into(),
        ..Default::default()
    };
    let opts = GetOptions::new()
        .storage_classes(vec![CT.into()])
        .timeout(Duration::from_millis(300))
        .cancel_grace(Duration::from_millis(2000));
    let study = vec![(vesalius_core::tag::STUDY_INSTANCE_UID, uid("42"))];
    let o = get(
        &addr,
        "SCU",
        "SLOWPACS",
        Level::Study,
        &study,
        &opts,
        &here,
        &ctx,
        |_| {},
    )
    .await
    .unwrap();
    assert!(scp.await.unwrap(), "the SCP got a C-CANCEL-RQ for the get");
    assert!(o.retrieve.cancelled && !o.retrieve.is_complete(), "{o:?}");
    assert_eq!((o.retrieve.status, o.stored), (0xFE00, 1));
    assert_eq!(o.retrieve.suboperations.remaining, 4);
    let held = here
        .index()
        .instances(&vesalius_store::query::Scope::study(uid("42")))
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
}
