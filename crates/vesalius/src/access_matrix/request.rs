//! The request of one cell: URL, headers and the body a client would send.

use axum::http::HeaderMap;

use super::fixture::Site;
use super::http::{Aim, Credential};
use super::routes::{Route, Shows};

/// Builds and sends the request of one cell.
pub(super) async fn send(
    site: &Site,
    route: &Route,
    aim: &Aim,
    cred: &Credential,
    n: usize,
) -> (u16, HeaderMap, bytes::Bytes) {
    let path = route
        .path
        .replace("{study}", &aim.study)
        .replace("{series}", &aim.series)
        .replace("{sop}", &aim.sop)
        .replace("{frames}", "1")
        .replace("{spec}", "0-16")
        .replace("{id}", &aim.link)
        .replace("{name}", &aim.link)
        .replace("{secret}", "not-the-secret")
        // Issue 6: a resumable upload nobody made.
        .replace("{upload}", "MATRIXUPLOAD0000")
        .replace("{*rest}", "studies/1.2.826.0.1.3680043.10.1/metadata")
        .replace("{section}", "users")
        // Issue 6: memberships are tried in the caller's own organisation.
        .replace("{org}", super::fixture::ORG_A)
        .replace("{version}", vesalius_web::version())
        .replace("{*file}", "js/main.js")
        .replace("{*path}", "viewer");
    let query = match route.path {
        "/wado" => format!(
            "?requestType=WADO&studyUID={}&seriesUID={}&objectUID={}&contentType=application%2Fdicom",
            aim.study, aim.series, aim.sop
        ),
        "/api/v1/audit/who-saw" => format!("?study={}", aim.study),
        "/api/v1/nodes/{name}/studies" => "?PatientID=MATRIX".into(),
        "/dicom-web/studies/{study}/series/{series}/frames" => format!("?instances={}", aim.sop),
        _ => String::new(),
    };
    let accept = if route.path.contains("/rendered") || route.path.contains("/thumbnail") {
        Some("image/jpeg")
    } else if route.path.contains("/frames/")
        || route.path.ends_with("/frames")
        || route.path.contains("/bulkdata/")
    {
        Some("multipart/related; type=\"application/octet-stream\"")
    } else if route.path.ends_with("/metadata") || route.shows == Shows::Listing {
        Some("application/dicom+json")
    } else if route.path.starts_with("/dicom-web/studies/{study}") {
        Some("multipart/related; type=\"application/dicom\"")
    } else {
        None
    };
    let (content_type, body) = body(route, aim, n);
    let method = reqwest::Method::from_bytes(route.method.as_bytes()).expect("method");
    let mut rq = site
        .http
        .request(method, format!("{}{path}{query}", site.base));
    if let Some((name, value)) = &cred.header {
        rq = rq.header(*name, value);
    }
    if let Some(a) = accept {
        rq = rq.header("accept", a);
    }
    if let Some(ct) = content_type {
        rq = rq.header("content-type", ct);
    }
    if route.method != "GET" {
        // Like curl, say so when there is no body (guest upload links must declare a length).
        if body.is_empty() {
            rq = rq.header("content-length", "0");
        }
        rq = rq.body(body);
    }
    let resp = rq.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    // An event stream never ends: its status and headers are the answer.
    let stream = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let body = if stream {
        bytes::Bytes::new()
    } else {
        resp.bytes().await.unwrap_or_default()
    };
    (status, headers, body)
}

const BOUNDARY: &str = "vesalius-access-matrix";

/// The body of a state-changing request: what a client would send, with a wrong password,
/// set-up token or passcode where the route checks one.
fn body(route: &Route, aim: &Aim, n: usize) -> (Option<String>, Vec<u8>) {
    let json = |v: serde_json::Value| (Some("application/json".to_owned()), v.to_string().into());
    let form = |s: String| {
        (
            Some("application/x-www-form-urlencoded".to_owned()),
            s.into_bytes(),
        )
    };
    let wrong = "not-the-right-password";
    match (route.method, route.path) {
        ("POST", "/login") => form(format!("username=nobody-{n}&password={wrong}")),
        ("POST", "/api/v1/auth/login") => {
            json(serde_json::json!({"username": format!("nobody-{n}"), "password": wrong}))
        }
        ("POST", "/api/v1/auth/setup") => {
            json(serde_json::json!({"token": "bogus", "password": wrong}))
        }
        ("PUT", "/api/v1/auth/setup") | ("POST", "/setup") => {
            form(format!("token=bogus&password={wrong}"))
        }
        ("POST", "/account/password") => form(format!("current={wrong}&new={wrong}-2")),
        ("POST", "/api/v1/auth/password") => {
            json(serde_json::json!({"current": wrong, "new": format!("{wrong}-2")}))
        }
        ("POST", "/s/{id}/{secret}") => form("passcode=0000".into()),
        ("POST", "/upload/{id}/{secret}") => {
            let mut b = format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; \
                 filename=\"x.dcm\"\r\nContent-Type: application/dicom\r\n\r\n"
            )
            .into_bytes();
            b.extend_from_slice(b"not dicom");
            b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
            (Some(format!("multipart/form-data; boundary={BOUNDARY}")), b)
        }
        ("POST", "/api/v1/studies/{study}/share-links") => {
            json(serde_json::json!({"allow_download": false, "ttl_hours": 1}))
        }
        ("POST", "/api/v1/upload-links") => json(
            serde_json::json!({"label": "access matrix", "max_bytes": 1_000_000, "ttl_hours": 1}),
        ),
        ("POST", "/api/v1/inbox/studies/{study}/accept") => {
            json(serde_json::json!({"patient_id": "LOCAL-1", "issuer": "MATRIX"}))
        }
        // A new identity per cell, so that every allowed cell changes something.
        ("POST", "/api/v1/studies/{study}/link-patient") => {
            json(serde_json::json!({"issuer": "MATRIX", "patient_id": format!("LINK-{n}")}))
        }
        ("POST", "/api/v1/studies/{study}/key-images") => {
            json(serde_json::json!({"instances": [aim.sop], "description": format!("matrix {n}")}))
        }
        ("POST", "/api/v1/studies/{study}/measurements") => {
            json(serde_json::json!({"measurements": [
                {"instance": aim.sop, "kind": "length", "points": [[1, 1], [10 + n, 1]], "length": 9 + n}
            ]}))
        }
        ("POST", "/api/v1/patients/merge") => {
            let (issuer, pid) = aim
                .study_ref
                .as_ref()
                .and_then(|s| s.patient.clone())
                .unwrap_or_else(|| ("GHOST".into(), "GHOST".into()));
            json(serde_json::json!({
                "from": {"issuer": issuer, "patient_id": pid},
                "into": {"issuer": super::fixture::MERGE_INTO.0, "patient_id": super::fixture::MERGE_INTO.1},
            }))
        }
        ("POST", "/api/v1/patients/split") => json(serde_json::json!({
            "study_uids": [aim.study],
            "to": {"issuer": "MATRIX", "patient_id": format!("SPLIT-{n}")},
        })),
        ("POST", "/api/v1/studies/{study}/break-glass") => {
            json(serde_json::json!({"reason": "access matrix: emergency at night"}))
        }
        ("POST", "/api/v1/studies/{study}/export") => json(serde_json::json!({})),
        ("POST", "/api/v1/peers/{name}/pull") => {
            json(serde_json::json!({"study_uid": "1.2.826.0.1.3680043.10.1"}))
        }
        ("POST", "/api/v1/exchange/pull") => {
            json(serde_json::json!({"study_uid": "1.2.826.0.1.3680043.10.1"}))
        }
        // Registry records of the target's organisation, marked with the cell's number.
        ("PUT", "/api/v1/peers/{name}") => json(serde_json::json!({
            "base_url": "http://127.0.0.1:1",
            "public_key": vesalius_auth::peer::SiteIdentity::from_site_key(
                "matrix",
                &vesalius_auth::audit_chain::SiteKey::generate(),
            )
            .public_key(),
            "org": aim.org,
            "description": format!("matrix {n}"),
        })),
        ("PUT", "/api/v1/nodes/{name}") => json(serde_json::json!({
            "ae_title": "MATRIX",
            "host": "127.0.0.1",
            "port": 1,
            "org": aim.org,
            "description": format!("matrix {n}"),
        })),
        ("POST", "/api/v1/nodes/{name}/retrieve") => {
            json(serde_json::json!({"study_uid": "1.2.826.0.1.3680043.10.1137.99"}))
        }
        ("PUT", "/api/v1/routes/{id}") => json(serde_json::json!({
            "name": format!("matrix {n}"),
            "org": aim.org,
            "enabled": false,
            "destinations": ["analysis:matrix"],
        })),
        // A disk-low rule that never fires (threshold 0 bytes).
        ("POST", "/api/v1/alerts/rules") => json(serde_json::json!({
            "name": format!("matrix {n}"), "kind": "disk-low", "threshold": 0,
        })),
        // The admin console's API (issue 6).
        ("POST", "/api/v1/users") => {
            json(serde_json::json!({"username": aim.link, "role": "clinician"}))
        }
        ("POST", "/api/v1/orgs") => json(serde_json::json!({"id": aim.link, "name": "Matrix"})),
        ("PATCH", "/api/v1/orgs/{org}") => json(serde_json::json!({
            "device_image_cache": {"allowed": true, "hours": 7},
        })),
        ("PATCH", "/api/v1/users/{name}") => json(serde_json::json!({"role": "radiographer"})),
        ("PUT", "/api/v1/users/{name}/memberships/{org}") => {
            json(serde_json::json!({"role": "radiographer"}))
        }
        ("POST", "/api/v1/auth/session/org") => {
            json(serde_json::json!({"org": super::fixture::ORG_B}))
        }
        ("POST", "/api/v1/tokens") => json(serde_json::json!({
            "username": "a-clinician", "role": "clinician", "name": format!("matrix {n}"),
        })),
        ("POST", "/api/v1/route-test") => (
            Some("application/dicom".into()),
            aim.fresh.as_ref().expect("a fresh study").bytes.clone(),
        ),
        ("POST", "/api/v1/instances") => (
            Some("application/dicom".into()),
            aim.fresh.as_ref().expect("a fresh study").bytes.clone(),
        ),
        ("POST", p) if p.starts_with("/dicom-web/studies") => {
            let f = aim.fresh.as_ref().expect("a fresh study");
            let mut b =
                format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").into_bytes();
            b.extend_from_slice(&f.bytes);
            b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
            (
                Some(format!(
                    "multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}"
                )),
                b,
            )
        }
        _ => (None, Vec::new()),
    }
}
