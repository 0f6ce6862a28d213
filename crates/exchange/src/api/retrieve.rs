//! Query/retrieve from a DICOM node of the registry ([`crate::priors`]):
//!
//! - `GET /api/v1/nodes/{name}/studies?PatientID=&IssuerOfPatientID=&StudyDate=`: a C-FIND
//!   at the node in its information model (Study Root at study level, or Patient Root at
//!   patient then study level: [`crate::priors::find_studies`]), calling as our AE title; the answer lists each study
//!   with the instances held here of it (`held_instances`, in the node's organisation).
//!   PatientID is required (a node is not browsed whole); StudyDate is `YYYYMMDD` or a range
//!   `YYYYMMDD-YYYYMMDD` with either side open. Audited as `query` (operation C-FIND, the node,
//!   the keys, the number of results; a failed C-FIND with outcome failure).
//! - `POST /api/v1/nodes/{name}/retrieve` `{"study_uid": "…", "patient_id": "…", "priority":
//!   0}`: adds a durable `retrieve` job (queue `retrieve:NAME`, one per study: asking again
//!   while one is pending answers the same job) that C-MOVEs the study to our AE title (or
//!   C-GETs it); 202 with the job id. `patient_id` is required for a node queried in Patient
//!   Root (its C-MOVE and C-GET name the patient, PS3.4 C.4.2.2.1), optional otherwise. Its
//!   progress and receipts are those of the transfers API. Audited as `admin-change`
//!   (`node-retrieve`).
//!
//! Both need `ManageOrg` on the node's organisation (a node the caller may not manage is 404,
//! like a missing one). A node that cannot be reached, or answers with a failure status, is 503
//! `unavailable` with its reason.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use vesalius_auth::Caller;
use vesalius_core::ErrorKind;
use vesalius_store::audit::Outcome;
use vesalius_store::query::{Access, QueryModel, Scope};

use super::{ApiError, ApiResult, ApiState, body, caller_of, visible_node};
use crate::now_ms;
use crate::priors::{self, NodeQuery, RetrieveJob};

/// The query keys, named as in DICOM (and QIDO-RS).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct StudiesParams {
    #[serde(rename = "PatientID")]
    patient_id: Option<String>,
    #[serde(rename = "IssuerOfPatientID")]
    issuer: Option<String>,
    #[serde(rename = "StudyDate")]
    study_date: Option<String>,
}

/// `YYYYMMDD`, or a range of them with either side open.
fn valid_date_key(s: &str) -> bool {
    let date = |d: &str| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit());
    match s.split_once('-') {
        None => date(s),
        Some((a, b)) => (a.is_empty() || date(a)) && (b.is_empty() || date(b)) && s.len() > 1,
    }
}

/// A DICOM text value we put in an identifier: no backslash (it would split the value) and no
/// control characters; `*` and `?` stay (wildcards are the caller's choice).
fn valid_text_key(s: &str, max: usize) -> bool {
    !s.is_empty() && s.chars().count() <= max && !s.chars().any(|c| c == '\\' || c.is_control())
}

pub(super) async fn studies(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    params: Result<Query<StudiesParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let c = caller_of(caller)?;
    let node = visible_node(&st, &c, &name).await?;
    let Query(p) = params.map_err(|e| ApiError::new(ErrorKind::BadRequest, e.body_text()))?;
    let bad = |m: &str| ApiError::new(ErrorKind::BadRequest, m.to_owned());
    let patient_id = p.patient_id.unwrap_or_default().trim().to_owned();
    if !valid_text_key(&patient_id, 64) {
        return Err(bad(
            "PatientID is required: 1-64 characters without backslash (a node is not browsed whole)",
        ));
    }
    let issuer = p.issuer.unwrap_or_default().trim().to_owned();
    if !issuer.is_empty() && !valid_text_key(&issuer, 64) {
        return Err(bad(
            "IssuerOfPatientID: at most 64 characters without backslash",
        ));
    }
    let study_date = p.study_date.unwrap_or_default().trim().to_owned();
    if !study_date.is_empty() && !valid_date_key(&study_date) {
        return Err(bad(
            "StudyDate is YYYYMMDD or a range YYYYMMDD-YYYYMMDD (either side may be open)",
        ));
    }
    let q = NodeQuery {
        patient_id,
        issuer,
        study_date,
    };
    let ex = &st.exchange;
    let found = priors::find_studies(&node, &st.ae_title, &q, ex.options().find_timeout).await;
    let details = json!({
        "operation": "C-FIND", "model": crate::priors::audit_model(&node), "node": node.name,
        "keys": {"PatientID": q.patient_id, "IssuerOfPatientID": q.issuer,
                 "StudyDate": q.study_date},
        "results": found.as_ref().map(Vec::len).ok(),
    });
    let outcome = if found.is_ok() {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    let mut ev = c.event("query", outcome, &node.org, None, details);
    // The patient asked about, for "who looked at this patient" (the issuer as given).
    ev.patient = Some((q.issuer.clone(), q.patient_id.clone()));
    ex.audit(ev).await;
    let found = found.map_err(|e| ApiError::new(ErrorKind::Unavailable, e.to_string()))?;
    let mut out = Vec::with_capacity(found.len());
    for s in found {
        let scope = Scope {
            access: Some(Access::orgs([node.org.clone()])),
            ..Scope::study(s.study_uid.clone())
        };
        let held = ex.index().instances(&scope).await?.len();
        let mut v = serde_json::to_value(&s).unwrap_or(Value::Null);
        v["held_instances"] = json!(held);
        out.push(v);
    }
    Ok(Json(Value::Array(out)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrieveInput {
    study_uid: String,
    #[serde(default)]
    patient_id: String,
    #[serde(default)]
    priority: i32,
}

pub(super) async fn retrieve(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> ApiResult<Response> {
    let c = caller_of(caller)?;
    let node = visible_node(&st, &c, &name).await?;
    let input: RetrieveInput = body(&bytes)?;
    let study_uid = input.study_uid.trim().to_owned();
    if !vesalius_core::uid::is_valid_uid(&study_uid) {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            format!("study_uid {:?} is not a UID", input.study_uid),
        ));
    }
    let patient_id = input.patient_id.trim().to_owned();
    if !patient_id.is_empty() && !valid_text_key(&patient_id, 64) {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            "patient_id: 1-64 characters without backslash".to_owned(),
        ));
    }
    if node.query_model == QueryModel::Patient && patient_id.is_empty() {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            format!(
                "node {} is queried in Patient Root: give the study's patient_id (its C-MOVE \
                 and C-GET name the patient)",
                node.name
            ),
        ));
    }
    let job = RetrieveJob {
        org: node.org.clone(),
        node: node.name.clone(),
        study_uid: study_uid.clone(),
        expected_instances: None,
        requested_by: c.principal.actor.name.clone(),
        prior_of: None,
        sop_classes: Vec::new(),
        patient_id,
    };
    let queue = priors::retrieve_queue(&node.name);
    let ex = &st.exchange;
    let ids = ex
        .outbox()
        .enqueue(vec![job.to_job(input.priority)], now_ms())
        .await?;
    let id = ids.first().copied().unwrap_or_default();
    let details = json!({
        "change": "node-retrieve", "node": node.name, "study_uid": study_uid,
        "job": id, "queue": queue,
    });
    ex.audit(c.event(
        "admin-change",
        Outcome::Success,
        &node.org,
        Some(&study_uid),
        details,
    ))
    .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"job": id, "queue": queue, "study_uid": study_uid, "node": node.name})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_and_text_keys() {
        for ok in ["20240101", "20200101-20241231", "20200101-", "-20241231"] {
            assert!(valid_date_key(ok), "{ok}");
        }
        for bad in ["2024", "-", "2024-01-01", "20240101-x", "abcdefgh"] {
            assert!(!valid_date_key(bad), "{bad}");
        }
        assert!(valid_text_key("PAT*1", 64));
        assert!(!valid_text_key("A\\B", 64));
        assert!(!valid_text_key("", 64));
        assert!(!valid_text_key(&"x".repeat(65), 64));
    }
}
