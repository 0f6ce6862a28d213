//! The quarantine inbox (issue 4): what guests uploaded through an organisation's upload links,
//! kept apart until a user of the organisation reconciles and accepts it.
//!
//! Uploads are stored under the organisation's inbox namespace
//! ([`vesalius_store::model::inbox_org`]): durable like everything else, but no principal's
//! access reaches it, so nothing there is visible in queries or retrievable, and routing skips
//! it. Users with `reconcile` (administrators, clinicians, radiographers) of the organisation:
//!
//! - `GET /api/v1/inbox`: the studies waiting, with the patient as the sender named them.
//! - `POST /api/v1/inbox/studies/{study}/accept` `{"patient_id", "issuer", "patient_name"?}`:
//!   rewrites every instance to the local patient identity (the sender's values kept in
//!   Original Attributes Sequence and Other Patient IDs Sequence, see
//!   [`vesalius_deid::coerce`]), stores it in the archive through the normal ingest (group
//!   commit, `store` audit events), then removes it from the inbox. Audited `inbox-accept`.
//!   A crash half-way leaves instances in both places; accepting again finishes the job.
//! - `DELETE /api/v1/inbox/studies/{study}`: rejects (deletes) it. Audited `inbox-reject`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use vesalius_auth::{Action, Caller, Resource};
use vesalius_core::ErrorKind;
use vesalius_deid::coerce::{PatientIdentity, coerce_patient_bytes};
use vesalius_store::audit::Outcome;
use vesalius_store::ingest::IngestContext;
use vesalius_store::model::{StoredInstance, inbox_org};
use vesalius_store::query::{Access, Key, Level, Query, Scope};

use crate::links::{check_uid, require_caller};
use crate::{ApiError, Services};

async fn reviewer(sv: &Services, caller: Option<Extension<Caller>>) -> Result<Caller, ApiError> {
    let c = require_caller(caller)?;
    let d = sv
        .auth
        .authorize(&c.principal, Action::Reconcile, &Resource::org(c.org()))
        .await
        .map_err(|e| ApiError {
            kind: e.kind(),
            message: e.to_string(),
        })?;
    if !d.is_allowed() {
        return Err(ApiError {
            kind: ErrorKind::Forbidden,
            message: format!(
                "{} may not review the inbox of {:?}",
                c.principal.actor.name,
                c.org()
            ),
        });
    }
    Ok(c)
}

/// `GET /api/v1/inbox`.
pub(crate) async fn list(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
) -> Result<Response, ApiError> {
    let c = reviewer(&sv, caller).await?;
    let mut q = Query::new(Level::Study);
    q.access = Some(Access::orgs([inbox_org(c.org())]));
    let found = sv.ingestor.index().find(&q).await?;
    let text = |a: &vesalius_store::query::Answer, k: Key| a.first_str(k.tag()).unwrap_or_default();
    let studies: Vec<_> = found
        .iter()
        .map(|a| {
            json!({
                "study_uid": text(a, Key::StudyInstanceUid),
                "patient_name": text(a, Key::PatientName),
                "patient_id": text(a, Key::PatientId),
                "issuer": text(a, Key::IssuerOfPatientId),
                "birth_date": text(a, Key::PatientBirthDate),
                "study_date": text(a, Key::StudyDate),
                "description": text(a, Key::StudyDescription),
                "modalities": a.get(Key::ModalitiesInStudy.tag())
                    .and_then(|v| v.get("Value").cloned()),
                "instances": a.get(0x0020_1208)
                    .and_then(|v| v.get("Value").and_then(|x| x.get(0)).cloned()),
            })
        })
        .collect();
    Ok(Json(json!({ "org": c.org(), "studies": studies })).into_response())
}

async fn inbox_instances(
    sv: &Services,
    org: &str,
    study: &str,
) -> Result<Vec<StoredInstance>, ApiError> {
    check_uid(study)?;
    let scope = Scope {
        access: Some(Access::orgs([inbox_org(org)])),
        ..Scope::study(study)
    };
    let found = sv.ingestor.index().instances(&scope).await?;
    if found.is_empty() {
        return Err(ApiError {
            kind: ErrorKind::NotFound,
            message: format!("no study {study} in the inbox"),
        });
    }
    Ok(found)
}

/// Removes `study` from `org`'s inbox: index rows first, then blobs.
async fn remove(sv: &Services, org: &str, study: &str) -> Result<usize, ApiError> {
    let scope = Scope {
        access: Some(Access::orgs([inbox_org(org)])),
        ..Scope::study(study)
    };
    let gone = sv.ingestor.index().delete(&scope).await?;
    for g in &gone {
        if let Err(e) = sv.ingestor.blobs().delete(&g.blob_key).await {
            tracing::warn!(key = %g.blob_key, error = %e, "inbox blob left behind");
        }
    }
    Ok(gone.len())
}

#[derive(Deserialize)]
pub(crate) struct Accept {
    patient_id: String,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    patient_name: Option<String>,
}

fn dicom_now() -> String {
    // DT in UTC (PS3.5 6.2): YYYYMMDDHHMMSS+0000.
    let secs = vesalius_auth::now_ms().div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `POST /api/v1/inbox/studies/{study}/accept`.
pub(crate) async fn accept(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path(study): Path<String>,
    Json(a): Json<Accept>,
) -> Result<Response, ApiError> {
    let c = reviewer(&sv, caller).await?;
    let pid = a.patient_id.trim();
    if pid.is_empty() || pid.len() > 64 || a.issuer.len() > 64 {
        return Err(ApiError {
            kind: ErrorKind::BadRequest,
            message: "patient_id (1-64 characters) is required; issuer has at most 64".into(),
        });
    }
    let who = PatientIdentity {
        patient_id: pid.to_owned(),
        issuer: a.issuer.trim().to_owned(),
        name: a
            .patient_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned),
    };
    let org = c.org().to_owned();
    let instances = inbox_instances(&sv, &org, &study).await?;
    let now = dicom_now();
    let mut stored = 0usize;
    for inst in &instances {
        let bytes = sv
            .ingestor
            .blobs()
            .read_range(&inst.blob_key, 0..inst.size)
            .await?;
        let (who, now) = (who.clone(), now.clone());
        let out = tokio::task::spawn_blocking(move || {
            coerce_patient_bytes(&bytes, &who, "VESALIUS", &now)
        })
        .await
        .map_err(|e| ApiError {
            kind: ErrorKind::Internal,
            message: format!("reconciling: {e}"),
        })?
        .map_err(|e| ApiError {
            kind: e.kind(),
            message: format!("reconciling {}: {e}", inst.sop_instance_uid),
        })?;
        let mut spool = sv.ingestor.spool()?;
        spool.write(&out)?;
        let ctx = IngestContext {
            org: org.clone(),
            source: "inbox".into(),
            actor: Some(c.principal.actor.clone()),
            source_addr: c.source.clone(),
            user_agent: c.user_agent.clone(),
            ..Default::default()
        };
        sv.ingestor.ingest(spool.finish()?, &ctx).await?;
        stored += 1;
    }
    let removed = remove(&sv, &org, &study).await?;
    let mut ev = c.event(
        "inbox-accept",
        Outcome::Success,
        &org,
        Some(&study),
        json!({ "instances": stored, "removed_from_inbox": removed,
                "patient_id": who.patient_id, "issuer": who.issuer }),
    );
    ev.patient = Some((who.issuer.clone(), who.patient_id.clone()));
    if let Err(e) = sv.auth.audit_log().append(vec![ev]).await {
        tracing::error!(error = %e, "inbox-accept audit event not written");
    }
    Ok(Json(json!({ "study_uid": study, "accepted": stored })).into_response())
}

/// `DELETE /api/v1/inbox/studies/{study}`.
pub(crate) async fn reject(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path(study): Path<String>,
) -> Result<Response, ApiError> {
    let c = reviewer(&sv, caller).await?;
    let org = c.org().to_owned();
    inbox_instances(&sv, &org, &study).await?;
    let removed = remove(&sv, &org, &study).await?;
    let ev = c.event(
        "inbox-reject",
        Outcome::Success,
        &org,
        Some(&study),
        json!({ "instances": removed }),
    );
    if let Err(e) = sv.auth.audit_log().append(vec![ev]).await {
        tracing::error!(error = %e, "inbox-reject audit event not written");
    }
    Ok(Json(json!({ "study_uid": study, "rejected": removed })).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_780), (2026, 11, 23));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
