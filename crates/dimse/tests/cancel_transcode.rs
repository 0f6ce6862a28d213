//! C-CANCEL of C-FIND and C-GET (driven with our association API, so the cancel is on the
//! wire before the first response), and the transfer syntax of C-GET sub-operations when DCMTK
//! getscu prefers a compressed syntax (JPEG-LS: transcoded; JPEG 2000: not encodable, so the
//! stored Explicit VR Little Endian bytes are sent).

use dicom_core::VR;
use vesalius_core::tag;
use vesalius_dimse::association::{Association, RequestOptions};
use vesalius_dimse::dataset::{self, DataSetWriter};
use vesalius_dimse::message::{Command, field, sop_class, status, tags};

use crate::common::*;

fn five_studies() -> Vec<Spec> {
    (1..=5)
        .map(|i| {
            Spec::new(
                &format!("40.{i}"),
                &format!("40.{i}.1"),
                &format!("40.{i}.1.1"),
            )
        })
        .collect()
}

/// Sends a request with an identifier and a C-CANCEL-RQ for it in one go, then collects the
/// responses until the final one; returns the pending count and the final response.
async fn request_and_cancel(
    assoc: &mut Association,
    rq_field: u16,
    class: &str,
    ident: &DataSetWriter,
) -> (usize, Command) {
    let pc = assoc.find_context(class, None).unwrap().id;
    let mut rq = Command::request(rq_field, 9, class);
    rq.set_u16(tags::PRIORITY, 0);
    let mut cancel = Command::new(field::C_CANCEL_RQ);
    cancel.set_u16(tags::MESSAGE_ID_BEING_RESPONDED_TO, 9);
    let ident = ident.encode(true);
    assoc
        .send_messages(&[(pc, &rq, Some(&ident)), (pc, &cancel, None)])
        .await
        .unwrap();
    let mut pending = 0;
    loop {
        let (rpc, rsp) = assoc.recv_command().await.unwrap().unwrap();
        assert_eq!(rsp.command_field(), rq_field | 0x8000);
        if rsp.has_data_set() {
            assoc.recv_data_set(rpc, 1 << 20).await.unwrap();
        }
        if status::is_pending(rsp.status().unwrap()) {
            pending += 1;
        } else {
            return (pending, rsp);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn c_cancel_stops_find_and_get() {
    let server = start(|_| {}).await;
    seed(&server, &five_studies()).await;
    let mut contexts = vec![
        (
            sop_class::STUDY_ROOT_FIND.to_owned(),
            vec![EXPLICIT.to_owned()],
        ),
        (
            sop_class::STUDY_ROOT_GET.to_owned(),
            vec![EXPLICIT.to_owned()],
        ),
    ];
    contexts.push((CT.to_owned(), vec![EXPLICIT.to_owned()]));
    let opts = RequestOptions {
        calling_ae: "CANCELLER".into(),
        called_ae: AE.into(),
        max_pdu_length: 16384,
        contexts,
        roles: vec![(CT.to_owned(), true, true)],
        ..Default::default()
    };
    let mut assoc = Association::request(&server.addr(), &opts).await.unwrap();

    let mut find = DataSetWriter::new();
    find.put_str(tag::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY");
    find.put_str(tag::STUDY_INSTANCE_UID, VR::UI, "");
    let (pending, last) = request_and_cancel(
        &mut assoc,
        field::C_FIND_RQ,
        sop_class::STUDY_ROOT_FIND,
        &find,
    )
    .await;
    assert_eq!(last.status(), Some(status::CANCEL));
    assert!(pending < 5, "{pending} pending responses after a cancel");

    let mut get = DataSetWriter::new();
    get.put_str(tag::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY");
    let studies: Vec<String> = (1..=5).map(|i| uid(&format!("40.{i}"))).collect();
    get.put_str(tag::STUDY_INSTANCE_UID, VR::UI, &studies.join("\\"));
    let (pending, last) =
        request_and_cancel(&mut assoc, field::C_GET_RQ, sop_class::STUDY_ROOT_GET, &get).await;
    assert_eq!(last.status(), Some(status::CANCEL));
    assert_eq!(pending, 0);
    let counts = last.suboperations();
    assert_eq!(counts.remaining, 5, "{counts:?}");
    assoc.release().await.unwrap();
    server.stop().await;
}

/// Runs getscu (bit-preserving) for study `study` with extra `opts`; returns the received files.
async fn getscu(server: &Server, study: &str, opts: &[&str]) -> Vec<std::path::PathBuf> {
    let out = server.dir.path().join(format!("get{}", opts.join("")));
    std::fs::create_dir_all(&out).unwrap();
    let od = out.display().to_string();
    let study_key = format!("StudyInstanceUID={}", uid(study));
    let port = server.port();
    let mut args = vec!["-S", "+B", "-aec", AE, "-od", &od];
    args.extend_from_slice(opts);
    args.extend([
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        &study_key,
        "127.0.0.1",
        &port,
    ]);
    let o = dcmtk("getscu", &args, 10).await;
    assert!(o.status.success(), "{}", text(&o));
    wait_for_files(&out, 1).await
}

#[tokio::test(flavor = "multi_thread")]
async fn getscu_gets_a_lossless_syntax_it_prefers_and_never_a_failed_one() {
    let server = start(|_| {}).await;
    let files = seed(&server, &[Spec::new("41", "41.1", "41.1.1")]).await;
    let sent = dataset::read(&file_data_set(&files[0]), EXPLICIT).unwrap();

    // JPEG-LS lossless proposed first: transcoded by vesalius-codec.
    let got = getscu(&server, "41", &["+xt"]).await;
    let meta = vesalius_dimse::scu::read_file_meta(&got[0]).unwrap();
    assert_eq!(meta.sop_instance, uid("41.1.1"));
    assert_eq!(meta.transfer_syntax, "1.2.840.10008.1.2.4.80");
    let plain = server.dir.path().join("decompressed.dcm");
    let o = dcmtk(
        "dcmdjpls",
        &[&got[0].display().to_string(), &plain.display().to_string()],
        5,
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let decoded = dataset::read(&file_data_set(&plain), EXPLICIT).unwrap();
    for t in [
        tag::PATIENT_NAME,
        tag::STUDY_INSTANCE_UID,
        tag::SOP_INSTANCE_UID,
        tag::ROWS,
        tag::PIXEL_DATA,
    ] {
        assert_eq!(sent.bytes(t), decoded.bytes(t), "{}", tag::display(t));
    }

    // JPEG 2000 proposed first: the codec cannot encode it, so the next proposal (Explicit VR
    // Little Endian) is accepted and the stored bytes travel unchanged.
    let got = getscu(&server, "41", &["+xv"]).await;
    assert_eq!(file_data_set(&got[0]), file_data_set(&files[0]));
    server.stop().await;
}
