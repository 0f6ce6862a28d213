//! Taking a copy of a study out (issue 4, action `export`): a zip of its instances, optionally
//! de-identified with PS3.15 Annex E (the export action of `vesalius deid`).
//!
//! - `GET /api/v1/studies/{study}/archive`: the study as stored.
//! - `POST /api/v1/studies/{study}/export` `{"deidentify": true, "key": "...", "options":
//!   ["retain-longitudinal-full-dates", ...]}`: de-identified with the project key (pseudonyms
//!   are consistent across exports with the same key), or as stored without `deidentify`.
//! - `GET /s/{link}/download` (share links that allow download) uses the same writer.
//!
//! The zip is built in an anonymous temporary file (deleted when the response ends), one
//! instance in memory at a time, entries `STUDY/SERIES/SOP.dcm`, stored uncompressed (pixel
//! data is mostly compressed already, and the archive is built before the first byte goes out).
//! Every export is audited `export` with the instance count and whether it was de-identified.

use std::io::{Seek, Write};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use vesalius_auth::policy::StudyRef;
use vesalius_auth::{Action, Caller, Resource};
use vesalius_core::ErrorKind;
use vesalius_deid::{DeidOptions, ProfileOption};
use vesalius_store::audit::Outcome;
use vesalius_store::model::StoredInstance;
use vesalius_store::query::Scope;

use crate::{ApiError, Services};

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError {
        kind: ErrorKind::Internal,
        message: format!("building the archive: {e}"),
    }
}

/// The instances of `study` the caller may see, with the study's owner, after checking the
/// caller may export it (refusals audited). 404 when the caller cannot see the study at all.
pub(crate) async fn exportable(
    sv: &Services,
    c: &Caller,
    study: &str,
) -> Result<(Vec<StoredInstance>, StudyRef), ApiError> {
    crate::links::check_uid(study)?;
    let scope = Scope {
        access: c.access.clone(),
        ..Scope::study(study)
    };
    let mut instances = sv.ingestor.index().instances(&scope).await?;
    let Some(org) = instances.first().map(|i| i.org.clone()) else {
        return Err(ApiError {
            kind: ErrorKind::NotFound,
            message: format!("no study {study}"),
        });
    };
    // One owner's copy: a study held by two organisations is two copies.
    instances.retain(|i| i.org == org);
    let study_ref = crate::links::study_ref(sv, &org, study).await?;
    let decision = sv
        .auth
        .authorize(
            &c.principal,
            Action::Export,
            &Resource::Study(study_ref.clone()),
        )
        .await
        .map_err(internal)?;
    if !decision.is_allowed() {
        let why = json!({ "decision": format!("{decision:?}") });
        audit(sv, c, &study_ref, Outcome::Denied, why).await;
        return Err(ApiError {
            kind: ErrorKind::Forbidden,
            message: format!("{} may not export this study", c.principal.actor.name),
        });
    }
    Ok((instances, study_ref))
}

async fn audit(
    sv: &Services,
    c: &Caller,
    study: &StudyRef,
    outcome: Outcome,
    details: serde_json::Value,
) {
    let mut ev = c.event(
        "export",
        outcome,
        &study.org,
        Some(&study.study_uid),
        details,
    );
    ev.patient = study.patient.clone();
    if let Err(e) = sv.auth.audit_log().append(vec![ev]).await {
        tracing::error!(error = %e, "export audit event not written");
    }
}

/// Builds the zip of `instances` (de-identified with `deid` when given) and answers it as a
/// download named `name.zip`; audits the export.
pub(crate) async fn zip_response(
    sv: &Services,
    c: &Caller,
    (instances, study_ref): (Vec<StoredInstance>, StudyRef),
    deid: Option<DeidOptions>,
    name: &str,
) -> Result<Response, ApiError> {
    let file = tokio::task::spawn_blocking(tempfile::tempfile)
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let mut zip = zip::ZipWriter::new(file);
    let count = instances.len();
    let mut flagged = 0usize;
    let deid = deid.map(std::sync::Arc::new);
    for inst in instances {
        let bytes = sv
            .ingestor
            .blobs()
            .read_range(&inst.blob_key, 0..inst.size)
            .await?;
        let deid = deid.clone();
        let (z, burned) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
            let (data, entry, burned) = match &deid {
                Some(opts) => {
                    let (out, report) =
                        vesalius_deid::deidentify_bytes(&bytes, opts).map_err(|e| ApiError {
                            kind: e.kind(),
                            message: format!("de-identifying {}: {e}", inst.sop_instance_uid),
                        })?;
                    let obj = vesalius_deid::coerce::read_object(&out).map_err(internal)?;
                    let p = vesalius_deid::output_path(&obj, std::path::Path::new(""));
                    let burned = !report.warnings.is_empty();
                    (out, p.to_string_lossy().into_owned(), burned)
                }
                None => (
                    bytes.to_vec(),
                    format!(
                        "{}/{}/{}.dcm",
                        inst.study_uid, inst.series_uid, inst.sop_instance_uid
                    ),
                    false,
                ),
            };
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .large_file(data.len() as u64 >= u32::MAX as u64);
            zip.start_file(entry, opts).map_err(internal)?;
            zip.write_all(&data).map_err(internal)?;
            Ok((zip, burned))
        })
        .await
        .map_err(internal)??;
        zip = z;
        flagged += usize::from(burned);
    }
    let mut file = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let mut f = zip.finish().map_err(internal)?;
        f.flush().map_err(internal)?;
        f.rewind().map_err(internal)?;
        Ok(f)
    })
    .await
    .map_err(internal)??;
    let len = file.seek(std::io::SeekFrom::End(0)).map_err(internal)?;
    file.rewind().map_err(internal)?;
    audit(
        sv,
        c,
        &study_ref,
        Outcome::Success,
        json!({ "instances": count, "deidentified": deid.is_some(), "bytes": len, "flagged": flagged }),
    )
    .await;
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    let safe: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{safe}.zip\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `GET /api/v1/studies/{study}/archive`.
pub(crate) async fn archive(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path(study): Path<String>,
) -> Result<Response, ApiError> {
    let c = crate::caller_of(caller)?;
    let found = exportable(&sv, &c, &study).await?;
    zip_response(&sv, &c, found, None, &study).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ExportRequest {
    deidentify: bool,
    key: String,
    options: Vec<String>,
}

/// `POST /api/v1/studies/{study}/export`.
pub(crate) async fn export(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path(study): Path<String>,
    Json(r): Json<ExportRequest>,
) -> Result<Response, ApiError> {
    let c = crate::caller_of(caller)?;
    let deid = if r.deidentify {
        if r.key.len() < 16 {
            return Err(ApiError {
                kind: ErrorKind::BadRequest,
                message: "de-identification needs a project key of 16 characters or more".into(),
            });
        }
        let mut o = DeidOptions::new(r.key.as_bytes());
        for name in &r.options {
            let Some(opt) = ProfileOption::ALL.into_iter().find(|p| p.as_str() == name) else {
                return Err(ApiError {
                    kind: ErrorKind::BadRequest,
                    message: format!("unknown de-identification option {name:?}"),
                });
            };
            o = o.option(opt, true);
        }
        Some(o)
    } else {
        None
    };
    let found = exportable(&sv, &c, &study).await?;
    let name = if deid.is_some() {
        "deidentified"
    } else {
        study.as_str()
    };
    zip_response(&sv, &c, found, deid, name).await
}
