//! `POST /api/v1/route-test` (issue 6, the admin console's "test this file" box): which routes
//! would fire for a DICOM file, as `vesalius admin route test FILE` answers, without storing
//! anything.
//!
//! The body is one DICOM Part 10 file (`application/dicom`; at most [`MAX_BYTES`], only its
//! header is parsed). Query parameters: `org` (the organisation it would be stored into;
//! default: every organisation the caller administers that has routes), `calling_ae`,
//! `called_ae` (as a DICOM sender would address us; "" as over HTTP), `at=HH:MM` (site time of
//! day; default now). Routes are read from the registry at the time of the request (not the
//! copy the ingest uses, which may be up to a refresh interval old), and only routes of
//! organisations the caller administers ([`Action::ManageOrg`]) are evaluated.
//!
//! Answer: `{"at": "HH:MM", "input": {modality, body_part, sop_class, study_description,
//! station_name}, "fired": [{"route", "org", "destinations", "priority", "deid"}], "skipped":
//! [errors of routes that do not compile]}`. A body that is not DICOM: 400 `invalid-dicom`;
//! a larger one: 413 `payload-too-large`.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::{Extension, Json};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use vesalius_auth::{Action, Caller};
use vesalius_core::ErrorKind;

use crate::api::{ApiError, ApiResult, ApiState, caller_of, may};
use crate::route::{RouteInput, RouteSet, minute_of_day};

/// The largest file accepted (a DICOM header is rarely more than a few kilobytes, but the whole
/// file is sent by the browser).
pub const MAX_BYTES: usize = 64 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TestParams {
    org: Option<String>,
    calling_ae: String,
    called_ae: String,
    at: Option<String>,
}

/// `HH:MM` as minutes since midnight.
fn parse_minute(t: &str) -> Option<u32> {
    let (h, m) = t.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// `POST /api/v1/route-test`.
pub(crate) async fn test(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    params: Result<Query<TestParams>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let c = caller_of(caller)?;
    if !may(&c, Action::ManageOrg, c.org()) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "testing routes is for administrators",
        ));
    }
    let Query(p) = params.map_err(|e| ApiError::new(ErrorKind::BadRequest, e.body_text()))?;
    let minute = match p.at.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => parse_minute(t).ok_or_else(|| {
            ApiError::new(ErrorKind::BadRequest, format!("at is HH:MM, not {t:?}"))
        })?,
        None => minute_of_day(crate::now_ms(), st.routes.utc_offset_minutes()),
    };
    // Bounded: the body is read up to MAX_BYTES and refused beyond.
    let mut bytes = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::new(ErrorKind::BadRequest, format!("reading the body: {e}")))?;
        if bytes.len() + chunk.len() > MAX_BYTES {
            return Err(ApiError::new(
                ErrorKind::PayloadTooLarge,
                format!("a file to test is at most {MAX_BYTES} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.is_empty() {
        return Err(ApiError::new(ErrorKind::InvalidDicom, "empty body"));
    }
    let len = bytes.len() as u64;
    let mut input = RouteInput::read(std::io::Cursor::new(bytes), len).map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidDicom,
            format!("not a readable DICOM file: {e}"),
        )
    })?;
    // The parser reads bytes without a preamble as a bare data set; what the ingest would
    // refuse (no SOP Class UID) is refused here too.
    if input.sop_class.is_empty() {
        return Err(ApiError::new(
            ErrorKind::InvalidDicom,
            "not a DICOM object: no SOP Class UID (0008,0016)",
        ));
    }
    input.calling_ae = p.calling_ae.trim().to_owned();
    input.called_ae = p.called_ae.trim().to_owned();
    let routes: Vec<_> = st
        .exchange
        .registry()
        .routes()
        .await?
        .into_iter()
        .filter(|r| may(&c, Action::ManageOrg, &r.org))
        .collect();
    let orgs: Vec<String> = match p.org.map(|o| o.trim().to_owned()) {
        Some(o) if !o.is_empty() => {
            if !may(&c, Action::ManageOrg, &o) {
                return Err(ApiError::new(
                    ErrorKind::Forbidden,
                    format!("{} may not administer {o:?}", c.principal.actor.name),
                ));
            }
            vec![o]
        }
        _ => {
            let mut o: Vec<String> = routes.iter().map(|r| r.org.clone()).collect();
            o.sort();
            o.dedup();
            o
        }
    };
    let (set, skipped) = RouteSet::new(&routes);
    let mut fired = Vec::new();
    for o in &orgs {
        input.org = o.clone();
        for f in set.evaluate(&input, minute) {
            fired.push(json!({
                "route": f.route_id,
                "org": o,
                "destinations": f.destinations.iter().map(|d| d.text()).collect::<Vec<_>>(),
                "priority": f.priority,
                "deid": f.deid,
            }));
        }
    }
    Ok(Json(json!({
        "at": format!("{:02}:{:02}", minute / 60, minute % 60),
        "input": {
            "modality": input.modality, "body_part": input.body_part,
            "sop_class": input.sop_class, "study_description": input.study_description,
            "station_name": input.station_name,
            "calling_ae": input.calling_ae, "called_ae": input.called_ae,
        },
        "orgs": orgs,
        "fired": fired,
        "skipped": skipped,
    })))
}

#[cfg(test)]
mod tests {
    use super::parse_minute;

    #[test]
    fn times_of_day() {
        assert_eq!(parse_minute("00:00"), Some(0));
        assert_eq!(parse_minute("23:59"), Some(23 * 60 + 59));
        assert_eq!(parse_minute(" 7:05 "), Some(425));
        for bad in ["24:00", "12:60", "noon", "12", ":", "-1:00"] {
            assert_eq!(parse_minute(bad), None, "{bad}");
        }
    }
}
