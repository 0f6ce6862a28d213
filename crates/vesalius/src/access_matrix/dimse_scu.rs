//! The SCU side the DIMSE half needs beyond `vesalius_dimse::scu` (which has C-ECHO, C-STORE
//! and C-FIND): C-GET, C-MOVE with a storage SCP as destination, and Storage Commitment, built
//! on the crate's association API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dicom_core::VR;
use tokio::net::TcpListener;
use vesalius_core::tag;
use vesalius_dimse::association::{AcceptOptions, Association, RequestOptions};
use vesalius_dimse::dataset::{self, DataSetWriter};
use vesalius_dimse::message::{Command, field, sop_class, status, tags};

use super::fixture::{OUR_AE, Site};

/// Secondary Capture Image Storage: the class of every synthetic study.
pub const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";
const EXPLICIT: &str = "1.2.840.10008.1.2.1";
const IMPLICIT: &str = "1.2.840.10008.1.2";

/// What C-STORE sub-operations delivered to a move destination: `(SOP Instance UID)`.
pub type Received = Arc<Mutex<Vec<String>>>;

/// A storage SCP taking every C-STORE, as a C-MOVE destination.
pub async fn destination(ae: &'static str) -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("port");
    let port = listener.local_addr().expect("address").port();
    let got: Received = Arc::default();
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let g = g.clone();
            tokio::spawn(async move {
                let opts = AcceptOptions {
                    ae_title: ae.into(),
                    accept_any_called_ae: true,
                    max_pdu_length: 65536,
                    syntaxes: [(
                        SECONDARY_CAPTURE.to_owned(),
                        Arc::new(vec![EXPLICIT.to_owned(), IMPLICIT.to_owned()]),
                    )]
                    .into_iter()
                    .collect(),
                    ..Default::default()
                };
                let Ok(mut assoc) = Association::accept(socket, &opts).await else {
                    return;
                };
                while let Ok(Some((pc, rq))) = assoc.recv_command().await {
                    if rq.command_field() != field::C_STORE_RQ {
                        return;
                    }
                    if assoc.recv_data_set(pc, 1 << 24).await.is_err() {
                        return;
                    }
                    g.lock()
                        .expect("received")
                        .push(rq.affected_sop_instance().unwrap_or_default());
                    let rsp = Command::response_to(&rq, status::SUCCESS);
                    if assoc.send_message(pc, &rsp, None).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, got)
}

/// What one DIMSE exchange came to.
#[derive(Debug, Default)]
pub struct Outcome {
    /// `RJ` (association rejected), a status in hex, `ERR` (anything else failed).
    pub text: String,
    /// The association was rejected.
    pub rejected: bool,
    /// Final status.
    pub status: Option<u16>,
    /// Study Instance UIDs found (C-FIND), SOP Instance UIDs received (C-GET/C-MOVE) or
    /// committed (N-ACTION), or stored (C-STORE).
    pub uids: Vec<String>,
}

impl Outcome {
    /// The outcome of an exchange that failed.
    pub fn from_err(e: vesalius_dimse::Error) -> Outcome {
        match e {
            vesalius_dimse::Error::Rejected(_) => Outcome {
                text: "RJ".into(),
                rejected: true,
                ..Default::default()
            },
            vesalius_dimse::Error::Status { status, .. } => Outcome {
                text: format!("{status:04X}"),
                status: Some(status),
                ..Default::default()
            },
            other => Outcome {
                text: format!("ERR {other}"),
                ..Default::default()
            },
        }
    }

    /// A final status and what it concerned.
    pub fn done(status: u16, uids: Vec<String>) -> Outcome {
        Outcome {
            text: if uids.is_empty() {
                format!("{status:04X}")
            } else {
                format!("{status:04X}:{}", uids.len())
            },
            status: Some(status),
            uids,
            ..Default::default()
        }
    }
}

pub fn request(calling: &str, contexts: Vec<(String, Vec<String>)>) -> RequestOptions {
    RequestOptions {
        calling_ae: calling.into(),
        called_ae: OUR_AE.into(),
        max_pdu_length: 65536,
        contexts,
        roles: vec![(SECONDARY_CAPTURE.into(), true, true)],
        ..Default::default()
    }
}

pub fn syntaxes() -> Vec<String> {
    vec![EXPLICIT.into(), IMPLICIT.into()]
}

/// A C-GET or C-MOVE of one study; returns the final status and the SOP instances received on
/// this association (C-GET) or by the destination (C-MOVE).
pub async fn retrieve(
    site: &Site,
    calling: &str,
    study: &str,
    destination: Option<(&str, &Received)>,
) -> Result<Outcome, vesalius_dimse::Error> {
    let (class, rq_field) = match destination {
        None => (sop_class::STUDY_ROOT_GET, field::C_GET_RQ),
        Some(_) => (sop_class::STUDY_ROOT_MOVE, field::C_MOVE_RQ),
    };
    let contexts = vec![
        (class.to_owned(), syntaxes()),
        (SECONDARY_CAPTURE.to_owned(), syntaxes()),
    ];
    let mut assoc =
        Association::request(&site.dicom.to_string(), &request(calling, contexts)).await?;
    let pc = assoc.find_context(class, None).expect("accepted").clone();
    let mut ident = DataSetWriter::new();
    ident.put_str(tag::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY");
    ident.put_str(tag::STUDY_INSTANCE_UID, VR::UI, study);
    let id = assoc.next_message_id();
    let mut rq = Command::request(rq_field, id, class);
    rq.set_u16(tags::PRIORITY, 0);
    if let Some((dest, _)) = destination {
        rq.set_str(tags::MOVE_DESTINATION, dest);
    }
    let before = destination.map_or(0, |(_, r)| r.lock().expect("received").len());
    assoc
        .send_message(
            pc.id,
            &rq,
            Some(&ident.encode(dataset::is_explicit(&pc.transfer_syntax))),
        )
        .await?;
    let mut got = Vec::new();
    loop {
        let Some((rpc, cmd)) = assoc.recv_command().await? else {
            return Err(vesalius_dimse::Error::Aborted);
        };
        if cmd.command_field() == field::C_STORE_RQ {
            assoc.recv_data_set(rpc, 1 << 24).await?;
            got.push(cmd.affected_sop_instance().unwrap_or_default());
            let rsp = Command::response_to(&cmd, status::SUCCESS);
            assoc.send_message(rpc, &rsp, None).await?;
            continue;
        }
        if cmd.has_data_set() {
            assoc.drain_data_set(rpc).await?;
        }
        let st = cmd.status().unwrap_or(status::PROCESSING_FAILURE);
        if status::is_pending(st) {
            continue;
        }
        let _ = assoc.release().await;
        if let Some((_, r)) = destination {
            got = r.lock().expect("received")[before..].to_vec();
        }
        return Ok(Outcome::done(st, got));
    }
}

/// Storage Commitment for one instance: the N-ACTION status, then the instances the report
/// (on the same association) says are committed.
pub async fn commit(
    site: &Site,
    calling: &str,
    sop: &str,
) -> Result<Outcome, vesalius_dimse::Error> {
    let contexts = vec![(sop_class::STORAGE_COMMITMENT_PUSH.to_owned(), syntaxes())];
    let mut assoc =
        Association::request(&site.dicom.to_string(), &request(calling, contexts)).await?;
    let pc = assoc.contexts()[0].clone();
    let mut data = DataSetWriter::new();
    data.put_str(tag::TRANSACTION_UID, VR::UI, "2.25.4242");
    let mut item = DataSetWriter::new();
    item.put_str(tag::REFERENCED_SOP_CLASS_UID, VR::UI, SECONDARY_CAPTURE);
    item.put_str(tag::REFERENCED_SOP_INSTANCE_UID, VR::UI, sop);
    data.put_items(tag::REFERENCED_SOP_SEQUENCE, vec![item]);
    let mut rq = Command::new(field::N_ACTION_RQ);
    rq.set_u16(tags::MESSAGE_ID, 7);
    rq.set_str(
        tags::REQUESTED_SOP_CLASS_UID,
        sop_class::STORAGE_COMMITMENT_PUSH,
    );
    rq.set_str(
        tags::REQUESTED_SOP_INSTANCE_UID,
        sop_class::STORAGE_COMMITMENT_PUSH_INSTANCE,
    );
    rq.set_u16(tags::ACTION_TYPE_ID, 1);
    rq.set_has_data_set(true);
    let explicit = dataset::is_explicit(&pc.transfer_syntax);
    assoc
        .send_message(pc.id, &rq, Some(&data.encode(explicit)))
        .await?;
    let Some((_, rsp)) = assoc.recv_command().await? else {
        return Err(vesalius_dimse::Error::Aborted);
    };
    let st = rsp.status().unwrap_or(status::PROCESSING_FAILURE);
    if st != status::SUCCESS {
        let _ = assoc.release().await;
        return Ok(Outcome::done(st, Vec::new()));
    }
    let report = tokio::time::timeout(Duration::from_secs(10), assoc.recv_command())
        .await
        .map_err(|_| vesalius_dimse::Error::Timeout("the commitment report"))??;
    let Some((rpc, ev)) = report else {
        return Err(vesalius_dimse::Error::Aborted);
    };
    let bytes = assoc.recv_data_set(rpc, 1 << 20).await?;
    let ts = assoc.context(rpc).expect("context").transfer_syntax.clone();
    let ds = dataset::read(&bytes, &ts)?;
    let committed = ds
        .items(tag::REFERENCED_SOP_SEQUENCE)
        .unwrap_or_default()
        .iter()
        .filter_map(|i| i.str(tag::REFERENCED_SOP_INSTANCE_UID).map(str::to_owned))
        .collect();
    assoc
        .send_message(rpc, &Command::response_to(&ev, status::SUCCESS), None)
        .await?;
    let _ = assoc.release().await;
    Ok(Outcome::done(st, committed))
}
