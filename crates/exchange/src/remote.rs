//! Remote viewing and "pull to local" (issue 5, docs/exchange.md):
//!
//! - `GET /dicom-web/peers/{peer}/{studies|series|instances}…` ([`proxy`]): any DICOMweb read
//!   (QIDO-RS, WADO-RS instances, metadata, frames, rendered, thumbnails, bulk data) of a peer,
//!   through this site, signed for the viewing user (see [`crate::federation`] for who may). The
//!   peer's URLs inside JSON answers (RetrieveURL, BulkDataURI) are rewritten to this proxy, so a
//!   viewer given `/dicom-web/peers/{peer}` as its DICOMweb root works the same as on a local
//!   study. Successful answers up to a quarter of `[exchange] remote_cache_bytes` are kept in a
//!   byte-bounded LRU (per node, keyed by peer, path, query and `Accept`; the peer's policy is
//!   the same for every user of the organisation, as it answers this site's organisation):
//!   scrolling back through a stack does not cross the network again. Larger answers stream
//!   through without being held.
//! - `POST /api/v1/peers/{peer}/pull` `{"study_uid", "priority"}` ([`pull`]): asks the peer to
//!   send the study here. The peer ([`serve_pull`], `POST /api/v1/exchange/pull`, signed both
//!   ways) queues transfer jobs for every instance of it that we may retrieve there, in its own
//!   outbox towards us, so the copy travels with the same engine as routed studies: manifests,
//!   resume, receipts at the peer, and "study complete" here when its final manifest is
//!   satisfied.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vesalius_auth::peer::{OnBehalf, PeerRequest};
use vesalius_auth::principal::PrincipalKind;
use vesalius_auth::{Action, Caller};
use vesalius_core::ErrorKind;
use vesalius_store::audit::Outcome;
use vesalius_store::query::Scope;
use vesalius_store::registry::RouteDestination;

use crate::api::{ApiError, ApiResult, caller_of};
use crate::client::{PeerClient, transport};
use crate::federation::{
    Cached, Federation, audit_in_background, local_service, read_limited, require_user,
    rewrite_urls,
};
use crate::job::TransferJob;

/// The highest priority a pull may ask for (stroke).
const MAX_PULL_PRIORITY: i32 = 100;

/// The proxy, to merge into the DICOMweb router before it is nested under `/dicom-web`.
pub fn proxy_router(fed: Arc<Federation>) -> Router {
    Router::new()
        .route("/peers/{name}/{*rest}", get(proxy))
        .with_state(fed)
}

/// The pull API (`/api/v1/peers/{peer}/pull` for users, `/api/v1/exchange/pull` for peers).
pub fn pull_router(fed: Arc<Federation>) -> Router {
    Router::new()
        .route("/api/v1/peers/{name}/pull", post(pull))
        .route("/api/v1/exchange/pull", post(serve_pull))
        .route("/api/v1/search", get(crate::federation::search))
        .with_state(fed)
}

/// Whether `rest` is a DICOMweb read path we forward: `studies`, `series` or `instances` and
/// what follows, plain segments only (no `..`, no empty segment, no encoded separators).
fn forwardable(rest: &str) -> bool {
    let mut segs = rest.split('/');
    let first_ok = matches!(segs.next(), Some("studies" | "series" | "instances"));
    first_ok
        && rest.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_,=".contains(&b))
        })
}

/// The Study Instance UID a forwarded path names, if any.
fn study_of(rest: &str) -> Option<&str> {
    let mut segs = rest.split('/');
    (segs.next() == Some("studies"))
        .then(|| segs.next())
        .flatten()
}

fn is_json(ct: &HeaderValue) -> bool {
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    ct.starts_with("application/dicom+json") || ct.starts_with("application/json")
}

/// `GET /dicom-web/peers/{peer}/{rest}`.
async fn proxy(
    State(fed): State<Arc<Federation>>,
    Path((peer_name, rest)): Path<(String, String)>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    let caller = caller_of(caller)?;
    require_user(
        &caller,
        &[Action::Query],
        "viewing a peer's studies needs a user allowed to query in an organisation",
    )?;
    let peer = fed.peer_for(&caller, &peer_name).await?;
    if !forwardable(&rest) {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            format!("{rest:?} is not a DICOMweb resource of a peer"),
        ));
    }
    let query = req.uri().query().map(str::to_owned);
    let accept = headers
        .get(header::ACCEPT)
        .cloned()
        .unwrap_or(HeaderValue::from_static("*/*"));
    let path = match &query {
        Some(q) => format!("/dicom-web/{rest}?{q}"),
        None => format!("/dicom-web/{rest}"),
    };
    if let Some(study) = study_of(&rest) {
        audit_view(&fed, &caller, &peer.name, study);
    }
    let key = format!(
        "{}\n{path}\n{}",
        peer.name,
        accept.to_str().unwrap_or_default()
    );
    if let Some(c) = fed.cache.get(&key) {
        metrics::counter!("vesalius_remote_cache_hits_total").increment(1);
        return Ok(cached_response(c));
    }
    let url = PeerClient::url(&peer, &path).map_err(peer_error)?;
    let (rb, _) = fed.exchange.client().request(
        &peer,
        Method::GET,
        url,
        Some(OnBehalf::of(&caller.principal)),
    );
    let resp = rb
        .timeout(fed.opts.view_timeout)
        .header(header::ACCEPT, accept)
        .send()
        .await
        .map_err(|e| peer_error(transport(&peer, e)))?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let warnings: Vec<HeaderValue> = resp
        .headers()
        .get_all(header::WARNING)
        .iter()
        .cloned()
        .collect();
    if !status.is_success() {
        // The peer's refusal (404, 406, 401…), passed on with its JSON body.
        let body = read_limited(resp, 64 << 10, &peer)
            .await
            .map_err(peer_error)?;
        let mut r = (status, body).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, content_type);
        return Ok(r);
    }
    let service = local_service(fed.opts.public_base_url.as_deref(), &headers);
    // A whole answer: kept when it is a 200, then served like a cached one.
    let keep = |body: Bytes| {
        let c = Cached {
            content_type: content_type.clone(),
            body,
        };
        if status == StatusCode::OK {
            fed.cache.put(key, c.clone());
        }
        cached_response(c)
    };
    let mut out = if is_json(&content_type) {
        let body = read_limited(resp, fed.opts.max_json_bytes, &peer)
            .await
            .map_err(peer_error)?;
        let body = match serde_json::from_slice::<Value>(&body) {
            Ok(mut v) => {
                rewrite_urls(&mut v, &peer.name, &service);
                Bytes::from(serde_json::to_vec(&v).expect("serialisable"))
            }
            Err(_) => body,
        };
        keep(body)
    } else {
        // Hold up to a cache entry's worth; beyond that stream the rest through.
        let max_entry = fed.cache.max_bytes() / 4;
        let mut held = BytesMut::new();
        let mut stream = resp.bytes_stream();
        let mut complete = true;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| peer_error(transport(&peer, e)))?;
            held.extend_from_slice(&chunk);
            if held.len() > max_entry {
                complete = false;
                break;
            }
        }
        if complete {
            keep(held.freeze())
        } else {
            let name = peer.name.clone();
            let rest = stream
                .map(move |r| r.map_err(|e| std::io::Error::other(format!("peer {name}: {e}"))));
            let body = stream::once(futures::future::ready(Ok(held.freeze()))).chain(rest);
            let mut r = Response::new(Body::from_stream(body));
            r.headers_mut().insert(header::CONTENT_TYPE, content_type);
            r
        }
    };
    *out.status_mut() = status;
    for w in warnings {
        out.headers_mut().append(header::WARNING, w);
    }
    Ok(out)
}

fn cached_response(c: Cached) -> Response {
    let mut r = Response::new(Body::from(c.body));
    r.headers_mut().insert(header::CONTENT_TYPE, c.content_type);
    r
}

pub(crate) fn peer_error(e: crate::Error) -> ApiError {
    match e {
        crate::Error::Refused {
            status: 401 | 403,
            body,
        } => ApiError::new(ErrorKind::Forbidden, format!("the peer refused: {body}")),
        crate::Error::Refused { status: 404, body } => ApiError::new(
            ErrorKind::NotFound,
            format!("the peer has no such study: {body}"),
        ),
        e => ApiError::new(ErrorKind::PeerUnavailable, e.to_string()),
    }
}

/// Audits a user's view of a peer's study here, once per user and study per dedupe window.
fn audit_view(fed: &Federation, caller: &Caller, peer: &str, study: &str) {
    let auth = &fed.auth;
    if !auth.dedupe().first_in_window(
        &caller.principal.actor.id,
        "retrieve-remote",
        caller.org(),
        study,
        auth.now_ms(),
    ) {
        return;
    }
    let ev = caller.event(
        "retrieve",
        Outcome::Success,
        caller.org(),
        Some(study),
        json!({"peer": peer, "remote": true}),
    );
    audit_in_background(auth, ev);
}

/// A pull request, to the local API and to the peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullRequest {
    /// The study to copy here.
    pub study_uid: String,
    /// Its transfer priority (100 = stroke); default 0.
    #[serde(default)]
    pub priority: i32,
}

/// The peer's (signed) answer to a pull.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullAnswer {
    /// The study.
    pub study_uid: String,
    /// Instances it holds of it that we may retrieve.
    pub instances: u64,
    /// Transfer jobs it queued (instances already queued towards us are not queued twice).
    pub queued: u64,
}

/// `POST /api/v1/peers/{peer}/pull`: asks the peer to send a study here.
async fn pull(
    State(fed): State<Arc<Federation>>,
    Path(peer_name): Path<String>,
    caller: Option<Extension<Caller>>,
    Json(body): Json<PullRequest>,
) -> ApiResult<Response> {
    let caller = caller_of(caller)?;
    let org = caller.org().to_owned();
    require_user(
        &caller,
        &[Action::Query, Action::Store],
        "pulling a study needs a user allowed to query and store in an organisation",
    )?;
    if !vesalius_core::uid::is_valid_uid(&body.study_uid) {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            format!("{:?} is not a valid UID", body.study_uid),
        ));
    }
    let peer = fed.peer_for(&caller, &peer_name).await?;
    let req = PullRequest {
        study_uid: body.study_uid.clone(),
        priority: body.priority.clamp(0, MAX_PULL_PRIORITY),
    };
    let answer: Result<PullAnswer, crate::Error> = fed
        .exchange
        .client()
        .signed_json_for(
            &peer,
            Method::POST,
            "/api/v1/exchange/pull",
            Some(serde_json::to_vec(&req).expect("serialisable")),
            Some(OnBehalf::of(&caller.principal)),
        )
        .await;
    let (outcome, result) = match answer {
        Ok(a) => (Outcome::Success, Ok(a)),
        Err(e) => (Outcome::Failure, Err(peer_error(e))),
    };
    let ev = caller.event(
        "pull-request",
        outcome,
        &org,
        Some(&req.study_uid),
        json!({"peer": peer.name, "priority": req.priority}),
    );
    if let Err(e) = fed.auth.audit_log().append(vec![ev]).await {
        tracing::error!(error = %e, "audit append failed");
    }
    let a = result?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "peer": peer.name,
            "study_uid": a.study_uid,
            "instances": a.instances,
            "queued": a.queued,
        })),
    )
        .into_response())
}

/// `POST /api/v1/exchange/pull` (peers only): queues the study towards the calling peer.
async fn serve_pull(
    State(fed): State<Arc<Federation>>,
    caller: Option<Extension<Caller>>,
    req: Option<Extension<PeerRequest>>,
    Json(body): Json<PullRequest>,
) -> Response {
    use crate::http::{error, peer_of, signed_answer};
    let caller = caller.map(|c| c.0);
    let name = match peer_of(caller.as_ref()) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let caller = caller.expect("a peer is a caller");
    if !matches!(
        caller.principal.kind,
        PrincipalKind::Peer {
            may_query: true,
            ..
        }
    ) {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this peer may not retrieve here (may_query is off)",
        );
    }
    if !vesalius_core::uid::is_valid_uid(&body.study_uid) {
        return error(StatusCode::BAD_REQUEST, "bad-request", "invalid study UID");
    }
    let index = &fed.index;
    let scope = Scope {
        access: caller.access.clone(),
        ..Scope::study(&body.study_uid)
    };
    let instances = match index.instances(&scope).await {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "pull: reading the study");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "index unavailable",
            );
        }
    };
    if instances.is_empty() {
        return error(StatusCode::NOT_FOUND, "not-found", "no such study");
    }
    let dest = RouteDestination::Peer(name.clone());
    let priority = body.priority.clamp(0, MAX_PULL_PRIORITY);
    let jobs: Vec<_> = instances
        .iter()
        .map(|i| {
            TransferJob {
                org: i.org.clone(),
                study_uid: i.study_uid.clone(),
                series_uid: i.series_uid.clone(),
                sop_instance_uid: i.sop_instance_uid.clone(),
                sop_class_uid: i.sop_class_uid.clone(),
                transfer_syntax: i.transfer_syntax.clone(),
                blob_key: i.blob_key.clone(),
                sha256: i.sha256.clone(),
                size: i.size,
                route_id: String::new(),
                deid: None,
            }
            .to_job(&dest, priority)
        })
        .collect();
    let queued = match fed.exchange.outbox().enqueue(jobs, crate::now_ms()).await {
        Ok(ids) => ids.len() as u64,
        Err(e) => {
            tracing::error!(error = %e, "pull: queueing");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "outbox unavailable",
            );
        }
    };
    let ev = caller.event(
        "pull",
        Outcome::Success,
        &instances[0].org,
        Some(&body.study_uid),
        json!({"peer": name, "instances": instances.len(), "priority": priority}),
    );
    if let Err(e) = fed.auth.audit_log().append(vec![ev]).await {
        tracing::error!(error = %e, "audit append failed");
    }
    let answer = PullAnswer {
        study_uid: body.study_uid,
        instances: instances.len() as u64,
        queued,
    };
    signed_answer(
        fed.exchange.client().identity(),
        req.as_ref().map(|r| &r.0),
        serde_json::to_vec(&answer).expect("serialisable"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_dicomweb_read_paths_are_forwarded() {
        assert!(forwardable(
            "studies/1.2.3/series/4.5/instances/6.7/frames/1,2"
        ));
        assert!(forwardable("studies/1.2/metadata"));
        assert!(forwardable("studies"));
        assert!(!forwardable("api/v1/users"));
        assert!(!forwardable("studies/../../api"));
        assert!(!forwardable("studies//x"));
        assert!(!forwardable("studies/1.2%2F..")); // '%' is not a path character here
        assert_eq!(study_of("studies/1.2/metadata"), Some("1.2"));
        assert_eq!(study_of("series"), None);
    }
}
