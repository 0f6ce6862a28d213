//! Break-glass and the privacy officer's reports (issue 4).
//!
//! - `POST /api/v1/studies/{study}/break-glass` `{"reason", "org"?}`: a clinician opens another
//!   organisation's study that no grant opens, stating why. Granted for a few hours, flagged,
//!   audited `break-glass` on the **owning** organisation's trail.
//! - `GET /api/v1/audit/who-saw?study=UID` or `?patient_id=ID&issuer=ISSUER`: who read (queried,
//!   retrieved, exported, opened by link, broke glass on) a study or a patient's studies of the
//!   caller's organisation.
//! - `GET /api/v1/audit/break-glass[?since_ms=&until_ms=]`: break-glass accesses to the
//!   organisation's data.
//!
//! The reports need `read-audit` (administrators, auditors) and are themselves audited.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use vesalius_auth::policy::{Decision, StudyRef};
use vesalius_auth::{Action, Caller, Origin, Resource};
use vesalius_core::ErrorKind;
use vesalius_store::audit::AuditRecord;
use vesalius_store::directory::GrantSubject;
use vesalius_store::query::Scope;

use crate::links::{check_uid, study_ref};
use crate::session::error;
use crate::{ApiError, Services};

#[derive(Deserialize)]
pub(crate) struct BreakGlass {
    reason: String,
    #[serde(default)]
    org: Option<String>,
}

/// `POST /api/v1/studies/{study}/break-glass`.
pub(crate) async fn break_glass(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path(study): Path<String>,
    Json(b): Json<BreakGlass>,
) -> Result<Response, ApiError> {
    let c = crate::caller_of(caller)?;
    check_uid(&study)?;
    // Whether the caller may break glass at all (on a study of some other organisation): one
    // who may not is refused alike whether or not another organisation holds the study, so
    // the answer tells nothing about other organisations' data (found by the access-matrix
    // test). Refusals on a study that exists are still audited by `break_glass` below.
    let probe = StudyRef {
        org: String::new(),
        study_uid: study.clone(),
        patient: None,
    };
    let may = sv
        .auth
        .authorize(&c.principal, Action::BreakGlass, &Resource::Study(probe))
        .await
        .map_err(|e| ApiError {
            kind: e.kind(),
            message: e.to_string(),
        })?;
    let refuse = |d: &Decision| match d {
        Decision::Deny(why) => Some(error(vesalius_auth::Error::Forbidden(why.as_str().into()))),
        Decision::Allow(_) => None,
    };
    // Which organisations hold the study: the server looks (the caller cannot see it yet).
    let holders = sv
        .ingestor
        .index()
        .instances(&Scope::study(study.clone()))
        .await?;
    let mut orgs: Vec<String> = holders
        .into_iter()
        .map(|i| i.org)
        .filter(|o| vesalius_store::model::inbox_owner(o).is_none() && o != c.org())
        .collect();
    orgs.sort();
    orgs.dedup();
    let org = match (&b.org, orgs.as_slice()) {
        (Some(o), _) if orgs.contains(o) => o.clone(),
        (None, [one]) => one.clone(),
        (None, []) | (Some(_), _) => {
            if let Some(r) = refuse(&may) {
                return Ok(r);
            }
            return Err(ApiError {
                kind: ErrorKind::NotFound,
                message: format!("no other organisation holds study {study}"),
            });
        }
        (None, _) => {
            if let Some(r) = refuse(&may) {
                return Ok(r);
            }
            return Err(ApiError {
                kind: ErrorKind::Conflict,
                message: "several organisations hold this study: name one with \"org\"".into(),
            });
        }
    };
    let sref = study_ref(&sv, &org, &study).await?;
    match sv
        .auth
        .break_glass(
            &c.principal,
            &sref,
            &b.reason,
            Origin::new(&c.source, &c.user_agent),
        )
        .await
    {
        Ok(g) => Ok(Json(json!({
            "grant_id": g.id,
            "org": g.owner_org,
            "study_uid": study,
            "expires_ms": g.expires_ms,
        }))
        .into_response()),
        Err(e) => Ok(error(e)),
    }
}

fn records(rs: &[AuditRecord]) -> Json<serde_json::Value> {
    let out: Vec<_> = rs.iter().map(record_json).collect();
    Json(json!({ "records": out }))
}

/// One audit record as the API shows it (the privacy reports and the admin console's search).
pub(crate) fn record_json(r: &AuditRecord) -> serde_json::Value {
    let e = &r.event;
    json!({
        "seq": r.seq, "time_ms": e.time_ms, "action": e.action, "outcome": e.outcome,
        "actor": e.actor, "org": e.org, "study_uid": e.study_uid, "patient": e.patient,
        "source": e.source, "user_agent": e.user_agent, "details": e.details,
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct WhoSaw {
    study: Option<String>,
    patient_id: Option<String>,
    issuer: String,
}

/// `GET /api/v1/audit/who-saw`.
pub(crate) async fn who_saw(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Query(q): Query<WhoSaw>,
) -> Result<Response, ApiError> {
    let c = crate::caller_of(caller)?;
    let subject = match (q.study, q.patient_id) {
        (Some(s), None) => GrantSubject::Study { study_uid: s },
        (None, Some(p)) => GrantSubject::Patient {
            issuer: q.issuer,
            patient_id: p,
        },
        _ => {
            return Err(ApiError {
                kind: ErrorKind::BadRequest,
                message: "name either study=UID or patient_id=ID (with issuer=)".into(),
            });
        }
    };
    match sv
        .auth
        .who_saw(
            &c.principal,
            c.org(),
            &subject,
            Origin::new(&c.source, &c.user_agent),
        )
        .await
    {
        Ok(rs) => Ok(records(&rs).into_response()),
        Err(e) => Ok(error(e)),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Period {
    since_ms: Option<i64>,
    until_ms: Option<i64>,
}

/// `GET /api/v1/audit/break-glass`.
pub(crate) async fn break_glass_report(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Query(p): Query<Period>,
) -> Result<Response, ApiError> {
    let c = crate::caller_of(caller)?;
    match sv
        .auth
        .privacy_report(
            &c.principal,
            c.org(),
            p.since_ms,
            p.until_ms,
            Origin::new(&c.source, &c.user_agent),
        )
        .await
    {
        Ok(rs) => Ok(records(&rs).into_response()),
        Err(e) => Ok(error(e)),
    }
}
