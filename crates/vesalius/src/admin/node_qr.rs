//! `vesalius admin node find | retrieve`: a DICOM node as a source of studies
//! (`vesalius_exchange::priors`).
//!
//! `find` sends the C-FIND itself, calling as `[dicom] ae_title`, and marks the studies already
//! held here (in the node's organisation). `retrieve` adds a durable `retrieve` job to the
//! outbox of the data directory; the running server's exchange workers find it within `[exchange]
//! poll_ms` and C-MOVE the study to our AE title, retrying with backoff (`vesalius transfers`
//! shows it as `retrieve:NODE`). With `--wait` the command follows the job until it is completed
//! or parked. Both are audited (`query`; `admin-change` with `node-retrieve`).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;
use vesalius_exchange::priors::{self, NodeQuery, RetrieveJob};
use vesalius_store::audit::Outcome;
use vesalius_store::outbox::{JobFilter, JobState, ReceiptFilter, ReceiptKind};
use vesalius_store::query::{Access, QueryModel, Scope};
use vesalius_store::registry::DicomNode;
use vesalius_store::{Index, Outbox, Registry};

use super::context::{ADMIN_CHANGE, AdminContext, print_json};
use crate::config::Config;

/// Arguments of `node find`.
#[derive(Args)]
pub struct FindArgs {
    /// The node's name.
    name: String,
    /// Patient ID (0010,0020).
    #[arg(long)]
    patient_id: String,
    /// Issuer of Patient ID (0010,0021).
    #[arg(long, default_value = "")]
    issuer: String,
    /// Study Date: YYYYMMDD or a range YYYYMMDD-YYYYMMDD (either side may be open).
    #[arg(long, default_value = "")]
    study_date: String,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,
    /// Print the studies as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `node retrieve`.
#[derive(Args)]
pub struct RetrieveArgs {
    /// The node's name.
    name: String,
    /// Study Instance UID.
    #[arg(long)]
    study: String,
    /// The study's Patient ID at the node: required for a node queried in Patient Root (its
    /// C-MOVE and C-GET name the patient), ignored otherwise.
    #[arg(long, default_value = "")]
    patient_id: String,
    /// Job priority (higher first; 100 = stroke).
    #[arg(long, default_value_t = 0)]
    priority: i32,
    /// Wait until the server completed the job (exit 0) or parked it (exit 1).
    #[arg(long)]
    wait: bool,
    /// With --wait, give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    wait_secs: u64,
}

async fn node(cx: &AdminContext, name: &str) -> Result<DicomNode> {
    match cx.index.node(name).await? {
        Some(n) => Ok(n),
        None => bail!("no DICOM node {name} (vesalius admin node list)"),
    }
}

/// Runs `node find`.
pub async fn find(cx: &AdminContext, cfg: &Config, a: FindArgs) -> Result<()> {
    let node = node(cx, &a.name).await?;
    let q = NodeQuery {
        patient_id: a.patient_id.trim().to_owned(),
        issuer: a.issuer.trim().to_owned(),
        study_date: a.study_date.trim().to_owned(),
    };
    if q.patient_id.is_empty() || q.patient_id.contains('\\') {
        bail!("--patient-id: 1-64 characters without backslash");
    }
    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    let found = priors::find_studies(&node, cfg.dicom.ae_title.trim(), &q, timeout).await;
    let mut ev = cx.event(
        "query",
        &node.org,
        json!({
            "operation": "C-FIND", "node": node.name,
            "model": priors::audit_model(&node),
            "keys": {"PatientID": q.patient_id, "IssuerOfPatientID": q.issuer,
                     "StudyDate": q.study_date},
            "results": found.as_ref().map(Vec::len).ok(),
        }),
    );
    if found.is_err() {
        ev.outcome = Outcome::Failure;
    }
    ev.patient = Some((q.issuer.clone(), q.patient_id.clone()));
    Registry::apply(&*cx.index, Vec::new(), vec![ev]).await?;
    let found = match found {
        Ok(f) => f,
        Err(e) => bail!("{e}"),
    };
    let mut rows = Vec::with_capacity(found.len());
    for s in found {
        let scope = Scope {
            access: Some(Access::orgs([node.org.clone()])),
            ..Scope::study(s.study_uid.clone())
        };
        let held = cx.index.instances(&scope).await?.len();
        rows.push((s, held));
    }
    if a.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(s, held)| {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                v["held_instances"] = json!(held);
                v
            })
            .collect();
        return print_json(&v);
    }
    if rows.is_empty() {
        println!("no studies of patient {} at {}", q.patient_id, node.name);
        return Ok(());
    }
    println!(
        "{:<8} {:<10} {:>5} {:>5} {:<28} StudyInstanceUID",
        "Date", "Modality", "Inst", "Here", "Description"
    );
    for (s, held) in &rows {
        println!(
            "{:<8} {:<10} {:>5} {:>5} {:<28} {}",
            s.study_date,
            s.modalities.join(","),
            s.instances.map(|n| n.to_string()).unwrap_or_default(),
            held,
            s.description.chars().take(28).collect::<String>(),
            s.study_uid
        );
    }
    Ok(())
}

/// Runs `node retrieve`.
pub async fn retrieve(cx: &AdminContext, a: RetrieveArgs) -> Result<()> {
    let node = node(cx, &a.name).await?;
    let study = a.study.trim().to_owned();
    if !vesalius_core::uid::is_valid_uid(&study) {
        bail!("--study {:?} is not a UID", a.study);
    }
    let patient_id = a.patient_id.trim().to_owned();
    if patient_id.contains('\\') || patient_id.chars().count() > 64 {
        bail!("--patient-id: 1-64 characters without backslash");
    }
    if node.query_model == QueryModel::Patient && patient_id.is_empty() {
        bail!(
            "node {} is queried in Patient Root: give the study's --patient-id (its C-MOVE and \
             C-GET name the patient; `node find` lists it)",
            node.name
        );
    }
    let job = RetrieveJob {
        org: node.org.clone(),
        node: node.name.clone(),
        study_uid: study.clone(),
        expected_instances: None,
        requested_by: cx.principal.actor.name.clone(),
        prior_of: None,
        sop_classes: Vec::new(),
        patient_id,
    };
    let queue = priors::retrieve_queue(&node.name);
    let ids = Outbox::enqueue(&*cx.index, vec![job.to_job(a.priority)], cx.auth.now_ms()).await?;
    let id = ids.first().copied().unwrap_or_default();
    let mut ev = cx.event(
        ADMIN_CHANGE,
        &node.org,
        json!({"change": "node-retrieve", "node": node.name, "study_uid": study, "job": id,
               "queue": queue}),
    );
    ev.study_uid = Some(study.clone());
    Registry::apply(&*cx.index, Vec::new(), vec![ev]).await?;
    println!(
        "retrieval of {study} from {} queued as job {id} ({queue})",
        node.name
    );
    if !a.wait {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(a.wait_secs);
    loop {
        let jobs = cx
            .index
            .jobs(&JobFilter {
                queue: Some(queue.clone()),
                study_uid: Some(study.clone()),
                ..Default::default()
            })
            .await?;
        match jobs.iter().find(|j| j.id == id) {
            None => {
                let receipts = cx
                    .index
                    .receipts(&ReceiptFilter {
                        queue: Some(queue.clone()),
                        study_uid: Some(study.clone()),
                        ..Default::default()
                    })
                    .await?;
                match receipts.iter().find(|r| r.kind == ReceiptKind::Study) {
                    Some(r) => println!("retrieved: {}", r.detail),
                    None => println!("job {id} is done"),
                }
                return Ok(());
            }
            Some(j) if j.state == JobState::Parked => {
                bail!("job {id} parked: {}", j.last_error)
            }
            Some(j) => {
                if Instant::now() > deadline {
                    bail!(
                        "job {id} still {} after {} s{}",
                        j.state.as_str(),
                        a.wait_secs,
                        if j.last_error.is_empty() {
                            String::new()
                        } else {
                            format!(" (last error: {})", j.last_error)
                        }
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
