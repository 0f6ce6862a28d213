//! Storage Commitment Push Model SCP, driven with our association API (DCMTK has no
//! storage commitment SCU; pynetdicom drives it in tests/interop). A store-only AE title may
//! ask, and is called back at its listening address from the directory.

use dicom_core::VR;
use vesalius_core::tag;
use vesalius_dimse::association::{AcceptOptions, Association, RequestOptions};
use vesalius_dimse::dataset::{self, DataSetWriter};
use vesalius_dimse::message::{Command, field, sop_class, tags};

use crate::common::*;

fn action(refs: &[(&str, String)]) -> Vec<u8> {
    let mut w = DataSetWriter::new();
    w.put_str(tag::TRANSACTION_UID, VR::UI, &uid("77"));
    let items = refs
        .iter()
        .map(|(class, sop)| {
            let mut i = DataSetWriter::new();
            i.put_str(tag::REFERENCED_SOP_CLASS_UID, VR::UI, class);
            i.put_str(tag::REFERENCED_SOP_INSTANCE_UID, VR::UI, sop);
            i
        })
        .collect();
    w.put_items(tag::REFERENCED_SOP_SEQUENCE, items);
    w.encode(true)
}

async fn request_commitment(server: &Server, calling: &str) -> (Association, u8) {
    let opts = RequestOptions {
        calling_ae: calling.into(),
        called_ae: AE.into(),
        max_pdu_length: 16384,
        contexts: vec![(
            sop_class::STORAGE_COMMITMENT_PUSH.into(),
            vec![EXPLICIT.into()],
        )],
        ..Default::default()
    };
    let mut assoc = Association::request(&server.addr(), &opts).await.unwrap();
    let pc = assoc.contexts()[0].id;
    let mut rq = Command::new(field::N_ACTION_RQ);
    rq.set_u16(tags::MESSAGE_ID, 5);
    rq.set_str(
        tags::REQUESTED_SOP_CLASS_UID,
        sop_class::STORAGE_COMMITMENT_PUSH,
    );
    rq.set_str(
        tags::REQUESTED_SOP_INSTANCE_UID,
        sop_class::STORAGE_COMMITMENT_PUSH_INSTANCE,
    );
    rq.set_u16(tags::ACTION_TYPE_ID, 1);
    let data = action(&[(CT, uid("30.1.1")), (CT, uid("30.1.404"))]);
    assoc.send_message(pc, &rq, Some(&data)).await.unwrap();
    let (_, rsp) = assoc.recv_command().await.unwrap().unwrap();
    assert_eq!(rsp.command_field(), field::N_ACTION_RSP);
    assert_eq!(rsp.status(), Some(0));
    (assoc, pc)
}

/// Receives an N-EVENT-REPORT-RQ, answers it and checks its content.
async fn expect_report(assoc: &mut Association) {
    let (pc, rq) = assoc.recv_command().await.unwrap().unwrap();
    assert_eq!(rq.command_field(), field::N_EVENT_REPORT_RQ);
    assert_eq!(
        rq.u16(tags::EVENT_TYPE_ID),
        Some(2),
        "one instance is missing"
    );
    let bytes = assoc.recv_data_set(pc, 1 << 20).await.unwrap();
    let ts = assoc.context(pc).unwrap().transfer_syntax.clone();
    let ds = dataset::read(&bytes, &ts).unwrap();
    assert_eq!(ds.str(tag::TRANSACTION_UID), Some(uid("77").as_str()));
    let ok = ds.items(tag::REFERENCED_SOP_SEQUENCE).unwrap();
    assert_eq!(ok.len(), 1);
    assert_eq!(
        ok[0].str(tag::REFERENCED_SOP_INSTANCE_UID),
        Some(uid("30.1.1").as_str())
    );
    let failed = ds.items(tag::FAILED_SOP_SEQUENCE).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].u16(tag::FAILURE_REASON), Some(0x0112));
    let rsp = Command::response_to(&rq, 0);
    assoc.send_message(pc, &rsp, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn commitment_report_on_the_same_association() {
    let server = start(|_| {}).await;
    seed(&server, &[Spec::new("30", "30.1", "30.1.1")]).await;
    let (mut assoc, _) = request_commitment(&server, "COMMITSCU").await;
    expect_report(&mut assoc).await;
    assoc.release().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn commitment_report_on_a_new_association_after_release() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = start(|o| {
        o.nodes.push(vesalius_dimse::DicomNode {
            ae_title: "COMMITSCU".into(),
            host: "127.0.0.1".into(),
            port,
        })
    })
    .await;
    seed(&server, &[Spec::new("30", "30.1", "30.1.1")]).await;
    let (assoc, _) = request_commitment(&server, "COMMITSCU").await;
    assoc.release().await.unwrap();
    expect_callback(listener, "COMMITSCU").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn store_only_ae_is_called_back_at_its_directory_address() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = start(|_| {}).await;
    server
        .access
        .put_ae(vesalius_store::directory::AeEntry {
            ae_title: "MODALITY".into(),
            org: ORG.into(),
            allowed_addrs: Vec::new(),
            listen: Some(("127.0.0.1".into(), port)),
            description: String::new(),
            may_query: false,
        })
        .await;
    seed(&server, &[Spec::new("30", "30.1", "30.1.1")]).await;
    let (assoc, _) = request_commitment(&server, "MODALITY").await;
    assoc.release().await.unwrap();
    expect_callback(listener, "MODALITY").await;
    server.stop().await;
}

/// Accepts the server's call back to `ae` and checks the report it brings.
async fn expect_callback(listener: tokio::net::TcpListener, ae: &str) {
    // The server calls back, taking the SCP role for the Push Model SOP class.
    let (socket, _) = tokio::time::timeout(std::time::Duration::from_secs(5), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut syntaxes = std::collections::HashMap::new();
    syntaxes.insert(
        sop_class::STORAGE_COMMITMENT_PUSH.to_owned(),
        std::sync::Arc::new(vec![EXPLICIT.to_owned()]),
    );
    let opts = AcceptOptions {
        ae_title: ae.into(),
        max_pdu_length: 16384,
        syntaxes,
        ..Default::default()
    };
    let mut back = Association::accept(socket, &opts).await.unwrap();
    assert_eq!(back.peer_ae(), AE);
    expect_report(&mut back).await;
    assert!(
        back.recv_command().await.unwrap().is_none(),
        "the server releases"
    );
}
