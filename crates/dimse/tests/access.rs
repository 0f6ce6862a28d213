//! Access control of the DIMSE services (issue 4): admission by calling AE title and address
//! (A-ASSOCIATE-RJ read as raw PDU bytes and as DCMTK reports it), store-only AE titles,
//! isolation between organisations on C-FIND, C-GET and C-MOVE, move destinations from the
//! directory, and the audit events every allowed (and refused) operation leaves.

use std::time::Duration;

use dicom_ul::pdu::{AssociationRQ, PresentationContextProposed, UserVariableItem};
use dicom_ul::{Pdu, write_pdu};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vesalius_auth::AuthOptions;
use vesalius_dimse::message::status;
use vesalius_store::audit::{ActorKind, Outcome};
use vesalius_store::directory::AeEntry;
use vesalius_store::query::Level;

use crate::common::*;

/// Sends an A-ASSOCIATE-RQ (Verification) as `calling` to `called` and returns the answer's
/// PDU type with the A-ASSOCIATE-RJ fields `(result, source, reason)` when it is one.
async fn associate_raw(server: &Server, calling: &str, called: &str) -> (u8, Option<[u8; 3]>) {
    let rq = Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: calling.into(),
        called_ae_title: called.into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: "1.2.840.10008.1.1".into(),
            transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
        }],
        user_variables: vec![
            UserVariableItem::MaxLength(16384),
            UserVariableItem::ImplementationClassUID("1.2.3.4".into()),
            UserVariableItem::ImplementationVersionName("RAWTEST_1".into()),
        ],
    });
    let mut buf = Vec::new();
    write_pdu(&mut buf, &rq).unwrap();
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&buf).await.unwrap();
    let mut head = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    if head[0] != 0x03 {
        return (head[0], None);
    }
    // PS3.8 9.3.4: length 4, then reserved, result, source, reason/diag.
    assert_eq!(u32::from_be_bytes([head[2], head[3], head[4], head[5]]), 4);
    let mut body = [0u8; 4];
    s.read_exact(&mut body).await.unwrap();
    (0x03, Some([body[1], body[2], body[3]]))
}

fn study_key(study: &str) -> String {
    format!("StudyInstanceUID={}", uid(study))
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_calling_ae_is_rejected_with_reason_3_and_audited() {
    let server = start(|_| {}).await;
    assert_eq!(
        associate_raw(&server, "UNKNOWN", AE).await,
        (0x03, Some([1, 1, 3])),
        "rejected-permanent, service-user, calling-AE-title-not-recognized"
    );
    // DCMTK reports it in words.
    let out = dcmtk(
        "echoscu",
        &["-aet", "UNKNOWN", "-aec", AE, "127.0.0.1", &server.port()],
        5,
    )
    .await;
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("Calling AE Title Not Recognized"), "{t}");
    // Our SCU too.
    let err = vesalius_dimse::scu::echo(&server.addr(), "UNKNOWN", AE)
        .await
        .unwrap_err();
    assert!(
        matches!(err, vesalius_dimse::Error::Rejected(ref m) if m.contains("calling AE title not recognized")),
        "{err}"
    );
    let events = server.access.events(3).await;
    let rejected: Vec<_> = events
        .iter()
        .filter(|e| e.action == "association-rejected")
        .collect();
    assert_eq!(rejected.len(), 3, "{events:?}");
    assert_eq!(rejected[0].actor.name, "UNKNOWN");
    assert_eq!(rejected[0].outcome, Outcome::Denied);
    assert_eq!(rejected[0].source, "127.0.0.1");
    assert_eq!(rejected[0].details["rj_reason"], 3);
    // A registered title is served as before.
    vesalius_dimse::scu::echo(&server.addr(), "ECHOSCU", AE)
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn known_caller_from_another_address_is_rejected() {
    let server = start(|_| {}).await;
    server
        .access
        .add_ae("FARAWAY", ORG, &["10.9.9.9", "192.168.0.0/16"], true)
        .await;
    server
        .access
        .add_ae("NEARBY", ORG, &["127.0.0.0/8"], true)
        .await;
    // Answered like an unknown title, so the answer does not confirm the title exists.
    assert_eq!(
        associate_raw(&server, "FARAWAY", AE).await,
        (0x03, Some([1, 1, 3]))
    );
    assert_eq!(associate_raw(&server, "NEARBY", AE).await, (0x02, None));
    let ev = server
        .access
        .events_of("FARAWAY", "association-rejected", 1)
        .await;
    assert!(
        ev[0].details["reason"]
            .as_str()
            .unwrap()
            .contains("not allowed from 127.0.0.1"),
        "{:?}",
        ev[0].details
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn called_ae_title_not_ours_is_rejected_with_reason_7() {
    let access = Access::with_options(AuthOptions::new().local_ae_titles([AE])).await;
    let server = start_with(access, |_| {}).await;
    assert_eq!(
        associate_raw(&server, "ECHOSCU", "NOT_US").await,
        (0x03, Some([1, 1, 7]))
    );
    let ev = server
        .access
        .events_of("ECHOSCU", "association-rejected", 1)
        .await;
    assert_eq!(ev[0].details["rj_reason"], 7);
    // With accept_any_called_ae, whatever the modality calls us is taken as our title.
    let access = Access::with_options(AuthOptions::new().local_ae_titles([AE])).await;
    let lenient = start_with(access, |o| o.accept_any_called_ae = true).await;
    assert_eq!(
        associate_raw(&lenient, "ECHOSCU", "NOT_US").await,
        (0x02, None)
    );
    server.stop().await;
    lenient.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn store_only_ae_stores_into_its_org_but_may_not_query_or_retrieve() {
    let server = start(|_| {}).await;
    server
        .access
        .add_ae("MODALITY", "st-marys", &[], false)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = (1..=3u16)
        .map(|i| {
            let mut s = Spec::new("40", "40.1", &format!("40.1.{i}"));
            s.number = i;
            write_instance(dir.path(), &s)
        })
        .collect();
    let summary =
        vesalius_dimse::scu::store_files(&server.addr(), "MODALITY", AE, files, |_, _| {})
            .await
            .unwrap();
    assert_eq!(summary.sent, 3, "{:?}", summary.failures);
    // Stored into the AE's organisation.
    let stored = server.instances(&uid("40")).await;
    assert_eq!(stored.len(), 3);
    assert!(stored.iter().all(|i| i.org == "st-marys"), "{stored:?}");
    // Each store carried the AE as its actor, with address and implementation name.
    let stores = server.access.events_of("MODALITY", "store", 3).await;
    let e = &stores[0];
    assert_eq!(e.actor.kind, ActorKind::Ae);
    assert_eq!(e.actor.org, "st-marys");
    assert_eq!(e.org, "st-marys");
    assert_eq!(e.study_uid.as_deref(), Some(uid("40").as_str()));
    assert!(e.source.starts_with("127.0.0.1:"), "{}", e.source);
    assert!(e.user_agent.starts_with("VESALIUS"), "{}", e.user_agent);

    // C-FIND: 0x0124, audited as a denied query.
    let err = vesalius_dimse::scu::find(
        &server.addr(),
        "MODALITY",
        AE,
        Level::Study,
        &[(0x0020_000D, String::new())],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            vesalius_dimse::Error::Status {
                status: status::NOT_AUTHORIZED,
                ..
            }
        ),
        "{err}"
    );
    let denied = server.access.events_of("MODALITY", "query", 1).await;
    assert_eq!(denied[0].outcome, Outcome::Denied);
    // C-GET with DCMTK: refused, nothing retrieved.
    let out_dir = tempfile::tempdir().unwrap();
    let od = out_dir.path().display().to_string();
    let key = study_key("40");
    let port = server.port();
    let out = dcmtk(
        "getscu",
        &[
            "-aet",
            "MODALITY",
            "-aec",
            AE,
            "-S",
            "-od",
            &od,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &key,
            "127.0.0.1",
            &port,
        ],
        10,
    )
    .await;
    let t = text(&out);
    // DCMTK 3.6.7 has no name for 0x0124: "Unknown Status: 0x124".
    assert!(t.contains("0x124") || t.contains("0x0124"), "{t}");
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0);
    let denied = server.access.events_of("MODALITY", "retrieve", 1).await;
    assert_eq!(denied[0].outcome, Outcome::Denied);
    assert!(
        server
            .access
            .events(0)
            .await
            .iter()
            .all(|e| !(e.action == "retrieve" && e.outcome == Outcome::Success)),
        "nothing was retrieved"
    );
    server.stop().await;
}

/// Two organisations, each with a querying AE title and one study.
async fn two_orgs() -> Server {
    let server = start(|_| {}).await;
    server.access.add_ae("CT_A", "org-a", &[], true).await;
    server.access.add_ae("CT_B", "org-b", &[], true).await;
    let dir = tempfile::tempdir().unwrap();
    for (ae, study, pid) in [("CT_A", "50", "PA"), ("CT_B", "51", "PB")] {
        let mut spec = Spec::new(study, &format!("{study}.1"), &format!("{study}.1.1"));
        spec.patient_id = pid;
        let f = write_instance(dir.path(), &spec);
        let s = vesalius_dimse::scu::store_files(&server.addr(), ae, AE, vec![f], |_, _| {})
            .await
            .unwrap();
        assert_eq!(s.sent, 1, "{:?}", s.failures);
    }
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn an_org_does_not_see_or_retrieve_another_orgs_study() {
    let server = two_orgs().await;
    let keys = [(0x0020_000D, String::new()), (0x0010_0010, "*".to_owned())];
    let found = vesalius_dimse::scu::find(&server.addr(), "CT_A", AE, Level::Study, &keys)
        .await
        .unwrap();
    let studies: Vec<_> = found
        .iter()
        .map(|a| a["0020000D"]["Value"][0].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(studies, vec![uid("50")], "org-a sees only its own study");
    // Asking for org-b's study by UID finds nothing either.
    let by_uid = [(0x0020_000D, uid("51"))];
    let none = vesalius_dimse::scu::find(&server.addr(), "CT_A", AE, Level::Study, &by_uid)
        .await
        .unwrap();
    assert!(none.is_empty());
    let queries = server.access.events_of("CT_A", "query", 2).await;
    assert_eq!(queries[0].outcome, Outcome::Success);
    assert_eq!(queries[0].details["level"], "STUDY");
    assert_eq!(queries[0].details["keys"]["00100010"], "*");
    assert_eq!(queries[0].details["answers"], 1);
    assert_eq!(queries[1].study_uid.as_deref(), Some(uid("51").as_str()));
    assert_eq!(queries[1].details["answers"], 0);

    // C-GET of the other organisation's study: nothing comes back; of its own: the instance.
    for (study, expected) in [("51", 0), ("50", 1)] {
        let out_dir = tempfile::tempdir().unwrap();
        let od = out_dir.path().display().to_string();
        let key = study_key(study);
        let port = server.port();
        let out = dcmtk(
            "getscu",
            &[
                "-aet",
                "CT_A",
                "-aec",
                AE,
                "-S",
                "-od",
                &od,
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                &key,
                "127.0.0.1",
                &port,
            ],
            10,
        )
        .await;
        assert!(out.status.success(), "{}", text(&out));
        let got = std::fs::read_dir(out_dir.path()).unwrap().count();
        assert_eq!(got, expected, "study {study}: {}", text(&out));
    }
    let retrieves = server.access.events_of("CT_A", "retrieve", 1).await;
    assert_eq!(retrieves.len(), 1, "only the own study was retrieved");
    let r = &retrieves[0];
    assert_eq!(r.outcome, Outcome::Success);
    assert_eq!(r.org, "org-a");
    assert_eq!(r.study_uid.as_deref(), Some(uid("50").as_str()));
    assert_eq!(r.patient, Some((String::new(), "PA".to_owned())));
    assert_eq!(r.details["operation"], "C-GET");
    assert_eq!(r.details["instances"], 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retrieval_is_audited_once_per_study_per_window() {
    let server = two_orgs().await;
    for _ in 0..3 {
        let out_dir = tempfile::tempdir().unwrap();
        let od = out_dir.path().display().to_string();
        let key = study_key("50");
        let port = server.port();
        let out = dcmtk(
            "getscu",
            &[
                "-aet",
                "CT_A",
                "-aec",
                AE,
                "-S",
                "-od",
                &od,
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                &key,
                "127.0.0.1",
                &port,
            ],
            10,
        )
        .await;
        assert!(out.status.success(), "{}", text(&out));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server.access.events_of("CT_A", "retrieve", 1).await.len(),
        1
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn move_destinations_come_from_the_directory_within_the_org() {
    let dest = tempfile::tempdir().unwrap();
    let (_scp, port) = storescp(dest.path(), "WORKSTATION").await;
    let server = two_orgs().await;
    let listening = |ae: &str, org: &str| AeEntry {
        ae_title: ae.into(),
        org: org.into(),
        allowed_addrs: Vec::new(),
        listen: Some(("127.0.0.1".into(), port)),
        description: String::new(),
        may_query: false,
    };
    server
        .access
        .put_ae(listening("WORKSTATION", "org-a"))
        .await;
    server.access.put_ae(listening("ELSEWHERE", "org-b")).await;
    let movescu = |dest_ae: &'static str, study: &'static str| {
        let port = server.port();
        async move {
            let key = study_key(study);
            dcmtk(
                "movescu",
                &[
                    "-v",
                    "-S",
                    "-aet",
                    "CT_A",
                    "-aec",
                    AE,
                    "-aem",
                    dest_ae,
                    "-k",
                    "QueryRetrieveLevel=STUDY",
                    "-k",
                    &key,
                    "127.0.0.1",
                    &port,
                ],
                10,
            )
            .await
        }
    };
    let o = movescu("WORKSTATION", "50").await;
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(wait_for_files(dest.path(), 1).await.len(), 1);
    // Another organisation's listening AE title is no destination for org-a.
    let t = text(&movescu("ELSEWHERE", "50").await).to_lowercase();
    assert!(
        t.contains("a801") || t.contains("movedestinationunknown"),
        "{t}"
    );
    // Org-b's study cannot be moved by org-a: nothing is sent.
    let o = movescu("WORKSTATION", "51").await;
    assert!(o.status.success(), "{}", text(&o));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(std::fs::read_dir(dest.path()).unwrap().count(), 1);
    let moved = server.access.events_of("CT_A", "retrieve", 1).await;
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].details["operation"], "C-MOVE");
    assert_eq!(moved[0].details["destination"], "WORKSTATION");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_audited_once_per_window_and_echo_stays_open() {
    let server = start(|_| {}).await;
    server.access.add_ae("ECHOONLY", ORG, &[], false).await;
    vesalius_dimse::scu::echo(&server.addr(), "ECHOONLY", AE)
        .await
        .unwrap();
    for _ in 0..3 {
        let err = vesalius_dimse::scu::find(
            &server.addr(),
            "ECHOONLY",
            AE,
            Level::Study,
            &[(0x0020_000D, String::new())],
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("0x0124"), "{err}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let denied = server.access.events_of("ECHOONLY", "query", 1).await;
    assert_eq!(
        denied.len(),
        1,
        "a retrying AE writes one denied event per window"
    );
    server.stop().await;
}
