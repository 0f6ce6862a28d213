//! C-FIND, C-GET and C-MOVE SCP against DCMTK findscu, getscu, movescu and storescp.

use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::open_file;

use crate::common::*;

/// Two studies of DOE^JOHN (2020, CT, two images) and ROE^JANE (2021, MR, one image).
fn specs() -> Vec<Spec> {
    let mut a1 = Spec::new("10", "10.1", "10.1.1");
    a1.number = 1;
    let mut a2 = Spec::new("10", "10.1", "10.1.2");
    a2.number = 2;
    let mut b = Spec::new("11", "11.1", "11.1.1");
    b.patient_name = "ROE^JANE";
    b.patient_id = "PID2";
    b.date = "20210101";
    b.modality = "MR";
    b.sop_class = MR;
    vec![a1, a2, b]
}

/// Runs findscu (Study Root) with `keys`, extracting each answer to a file; returns the files.
async fn findscu(server: &Server, out: &Path, keys: &[&str]) -> Vec<PathBuf> {
    findscu_model(server, out, "-S", keys).await
}

/// Runs findscu with the given model flag (`-S` Study Root, `-P` Patient Root).
async fn findscu_model(server: &Server, out: &Path, model: &str, keys: &[&str]) -> Vec<PathBuf> {
    let od = out.display().to_string();
    let port = server.port();
    let mut args = vec![model, "-aec", AE, "-X", "-od", &od];
    for k in keys {
        args.push("-k");
        args.push(k);
    }
    args.extend(["127.0.0.1", &port]);
    let o = dcmtk("findscu", &args, 10).await;
    assert!(o.status.success(), "{}", text(&o));
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

fn value(path: &Path, tag: dicom_core::Tag) -> String {
    let obj = open_file(path).unwrap();
    obj.element(tag)
        .map(|e| e.to_str().unwrap_or_default().trim().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn findscu_at_study_series_and_image_level() {
    let server = start(|_| {}).await;
    seed(&server, &specs()).await;
    let tmp = tempfile::tempdir().unwrap();

    let study_dir = tmp.path().join("study");
    std::fs::create_dir(&study_dir).unwrap();
    let answers = findscu(
        &server,
        &study_dir,
        &[
            "QueryRetrieveLevel=STUDY",
            "PatientName=DOE*",
            "StudyDate=20200101-20201231",
            "StudyInstanceUID",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedInstances",
        ],
    )
    .await;
    assert_eq!(answers.len(), 1, "one study matches");
    assert_eq!(value(&answers[0], tags::STUDY_INSTANCE_UID), uid("10"));
    assert_eq!(value(&answers[0], tags::PATIENT_NAME), "DOE^JOHN");
    assert_eq!(value(&answers[0], tags::MODALITIES_IN_STUDY), "CT");
    assert_eq!(
        value(&answers[0], tags::NUMBER_OF_STUDY_RELATED_INSTANCES),
        "2"
    );
    assert_eq!(value(&answers[0], tags::QUERY_RETRIEVE_LEVEL), "STUDY");
    // Exactly the requested keys plus Query/Retrieve Level.
    let obj = open_file(&answers[0]).unwrap();
    let mut got: Vec<dicom_core::Tag> = obj.iter().map(|e| e.header().tag).collect();
    got.sort();
    let mut want = vec![
        tags::STUDY_DATE,
        tags::QUERY_RETRIEVE_LEVEL,
        tags::MODALITIES_IN_STUDY,
        tags::PATIENT_NAME,
        tags::STUDY_INSTANCE_UID,
        tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
    ];
    want.sort();
    assert_eq!(got, want);

    let series_dir = tmp.path().join("series");
    std::fs::create_dir(&series_dir).unwrap();
    let study_key = format!("StudyInstanceUID={}", uid("10"));
    let answers = findscu(
        &server,
        &series_dir,
        &[
            "QueryRetrieveLevel=SERIES",
            &study_key,
            "SeriesInstanceUID",
            "Modality",
        ],
    )
    .await;
    assert_eq!(answers.len(), 1);
    assert_eq!(value(&answers[0], tags::SERIES_INSTANCE_UID), uid("10.1"));
    assert_eq!(value(&answers[0], tags::MODALITY), "CT");
    assert_eq!(value(&answers[0], tags::STUDY_INSTANCE_UID), uid("10"));

    let image_dir = tmp.path().join("image");
    std::fs::create_dir(&image_dir).unwrap();
    let series_key = format!("SeriesInstanceUID={}", uid("10.1"));
    let answers = findscu(
        &server,
        &image_dir,
        &[
            "QueryRetrieveLevel=IMAGE",
            &study_key,
            &series_key,
            "SOPInstanceUID",
            "InstanceNumber",
        ],
    )
    .await;
    let mut sops: Vec<String> = answers
        .iter()
        .map(|a| value(a, tags::SOP_INSTANCE_UID))
        .collect();
    sops.sort();
    assert_eq!(sops, vec![uid("10.1.1"), uid("10.1.2")]);

    // Wildcard on a name of the other study, and an empty result.
    let wild = tmp.path().join("wild");
    std::fs::create_dir(&wild).unwrap();
    let answers = findscu(
        &server,
        &wild,
        &[
            "QueryRetrieveLevel=STUDY",
            "PatientName=R?E*",
            "StudyInstanceUID",
        ],
    )
    .await;
    assert_eq!(answers.len(), 1);
    assert_eq!(value(&answers[0], tags::STUDY_INSTANCE_UID), uid("11"));
    let none = tmp.path().join("none");
    std::fs::create_dir(&none).unwrap();
    let answers = findscu(
        &server,
        &none,
        &["QueryRetrieveLevel=STUDY", "StudyDate=19000101-19001231"],
    )
    .await;
    assert!(answers.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn our_find_returns_dicom_json() {
    use vesalius_store::query::Level;
    let server = start(|_| {}).await;
    seed(&server, &specs()).await;
    let keys = vec![
        (0x0010_0010, "*JANE".to_owned()),
        (0x0020_000D, String::new()),
        (0x0008_0061, String::new()),
    ];
    let found = vesalius_dimse::scu::find(&server.addr(), "SCU", AE, Level::Study, &keys)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["0020000D"]["Value"][0], uid("11"));
    assert_eq!(found[0]["00080061"]["Value"][0], "MR");
    assert_eq!(
        vesalius_dimse::scu::tag_of("PatientName"),
        Some(0x0010_0010)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn getscu_retrieves_a_study_unchanged() {
    let server = start(|_| {}).await;
    let files = seed(&server, &specs()).await;
    let out = tempfile::tempdir().unwrap();
    let od = out.path().display().to_string();
    let study_key = format!("StudyInstanceUID={}", uid("10"));
    let o = dcmtk(
        "getscu",
        &[
            "-S",
            "+B",
            "-aec",
            AE,
            "-od",
            &od,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &study_key,
            "127.0.0.1",
            &server.port(),
        ],
        10,
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let got = by_sop(&wait_for_files(out.path(), 2).await);
    let sent = by_sop(&files);
    assert_eq!(got.len(), 2);
    for (sop, data) in &got {
        assert_eq!(Some(data), sent.get(sop), "{sop} differs");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn movescu_sends_a_study_to_storescp() {
    let dest = tempfile::tempdir().unwrap();
    let (_scp, port) = storescp(dest.path(), "DEST").await;
    let server = start(|o| {
        o.nodes.push(vesalius_dimse::DicomNode {
            ae_title: "DEST".into(),
            host: "127.0.0.1".into(),
            port,
        })
    })
    .await;
    let files = seed(&server, &specs()).await;
    let study_key = format!("StudyInstanceUID={}", uid("10"));
    let o = dcmtk(
        "movescu",
        &[
            "-S",
            "-aec",
            AE,
            "-aem",
            "DEST",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &study_key,
            "127.0.0.1",
            &server.port(),
        ],
        10,
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let got = by_sop(&wait_for_files(dest.path(), 2).await);
    let sent = by_sop(&files);
    assert_eq!(got.len(), 2);
    for (sop, data) in &got {
        assert_eq!(Some(data), sent.get(sop), "{sop} differs");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_move_destination_is_a801() {
    let server = start(|_| {}).await;
    seed(&server, &specs()).await;
    let study_key = format!("StudyInstanceUID={}", uid("10"));
    let o = dcmtk(
        "movescu",
        &[
            "-v",
            "-S",
            "-aec",
            AE,
            "-aem",
            "NOWHERE",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &study_key,
            "127.0.0.1",
            &server.port(),
        ],
        10,
    )
    .await;
    let t = text(&o).to_lowercase();
    // DCMTK names the status instead of printing 0xA801.
    assert!(
        t.contains("a801") || t.contains("movedestinationunknown"),
        "{t}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn patient_root_find_and_get_by_patient_id() {
    let server = start(|_| {}).await;
    let files = seed(&server, &specs()).await;
    let tmp = tempfile::tempdir().unwrap();
    let answers = findscu_model(
        &server,
        tmp.path(),
        "-P",
        &[
            "QueryRetrieveLevel=PATIENT",
            "PatientID=PID1",
            "PatientName",
            "NumberOfPatientRelatedStudies",
        ],
    )
    .await;
    assert_eq!(answers.len(), 1);
    assert_eq!(value(&answers[0], tags::PATIENT_NAME), "DOE^JOHN");
    assert_eq!(
        value(&answers[0], tags::NUMBER_OF_PATIENT_RELATED_STUDIES),
        "1"
    );

    let out = tempfile::tempdir().unwrap();
    let od = out.path().display().to_string();
    let o = dcmtk(
        "getscu",
        &[
            "-P",
            "+B",
            "-aec",
            AE,
            "-od",
            &od,
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID=PID1",
            "127.0.0.1",
            &server.port(),
        ],
        10,
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let got = by_sop(&wait_for_files(out.path(), 2).await);
    let sent = by_sop(&files);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|(sop, data)| sent.get(sop) == Some(data)));
    server.stop().await;
}
