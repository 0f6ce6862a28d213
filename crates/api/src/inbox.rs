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

use crate::links::check_uid;
use crate::{ApiError, Services};

async fn reviewer(sv: &Services, caller: Option<Extension<Caller>>) -> Result<Caller, ApiError> {
    let c = crate::caller_of(caller)?;
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
    let gone = sv.ingestor.delete(&scope).await?;
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

/// A DICOM DateTime (PS3.5 6.2) in UTC, `YYYYMMDDHHMMSS+0000`, from the audit trail's RFC 3339
/// formatting.
pub(crate) fn dicom_dt(ms: i64) -> String {
    let digits: String = vesalius_auth::fhir::instant(ms)
        .chars()
        .filter(char::is_ascii_digit)
        .take(14)
        .collect();
    format!("{digits}+0000")
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
        ..Default::default()
    };
    let org = c.org().to_owned();
    let instances = inbox_instances(&sv, &org, &study).await?;
    let now = dicom_dt(vesalius_auth::now_ms());
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
            // What a guest uploaded withdraws nothing once accepted either: a rejection note
            // in it is kept as a document (`Rejections::Ignore`).
            rejections: vesalius_store::key_objects::Rejections::Ignore,
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
    fn dicom_date_times() {
        assert_eq!(super::dicom_dt(0), "19700101000000+0000");
        assert_eq!(super::dicom_dt(1_795_436_100_000), "20261123121500+0000");
        assert_eq!(super::dicom_dt(951_782_400_000), "20000229000000+0000");
    }
}
