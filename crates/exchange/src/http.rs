//! The receiving side of the exchange API (docs/exchange.md), for peers only:
//! - `GET /api/v1/exchange/ping`: who we are, our clock, the name and organisation we know the
//!   caller by (`vesalius admin peer ping` checks reachability, keys both ways and clock skew).
//! - `POST /api/v1/exchange/manifest`: compares a sender's manifest with what the caller's
//!   deliveries hold here ([`crate::manifest::check`]), records the arrival (sender, priority)
//!   and, for a satisfied final manifest, marks the study complete, audits it and raises
//!   [`ExchangeEvent::StudyComplete`].
//!
//! Both answers are signed (`X-Vesalius-Signature`, `vesalius_auth::peer`) over the request's
//! `jti` and the body, so the sender can prove who answered. Instances themselves arrive by
//! standard STOW-RS under the same peer authentication; [`sign_peer_answers`] signs the answers
//! to a peer's STOW-RS the same way (they name each stored instance's SHA-256, so the sender
//! needs no manifest to verify a batch).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;
use tokio::sync::broadcast;
use vesalius_auth::Caller;
use vesalius_auth::peer::{PeerRequest, SIGNATURE_HEADER, SiteIdentity};
use vesalius_auth::principal::PrincipalKind;
use vesalius_store::audit::{AuditEvent, Outcome};
use vesalius_store::query::Access;
use vesalius_store::registry::{Arrival, RegistryChange};
use vesalius_store::{Index, Registry};

use crate::client::PingAnswer;
use crate::manifest::{MAX_ENTRIES, Manifest, check};
use crate::{ExchangeEvent, now_ms};

/// Largest manifest body accepted (about 150 bytes per entry).
const MAX_MANIFEST_BYTES: usize = 32 << 20;

/// What the receiving handlers need.
#[derive(Clone)]
pub struct ReceiverState {
    /// The index (what we hold).
    pub index: Arc<dyn Index>,
    /// The registry (arrivals).
    pub registry: Arc<dyn Registry>,
    /// Our identity (signs answers).
    pub identity: Arc<SiteIdentity>,
    /// Where "study complete" goes.
    pub events: broadcast::Sender<ExchangeEvent>,
}

/// The router of the receiving side.
pub fn router(state: ReceiverState) -> Router {
    Router::new()
        .route("/api/v1/exchange/ping", get(ping))
        .route("/api/v1/exchange/manifest", post(manifest))
        .layer(DefaultBodyLimit::max(MAX_MANIFEST_BYTES))
        .with_state(state)
}

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

/// The calling peer's name, or the refusal.
pub(crate) fn peer_of(caller: Option<&Caller>) -> Result<String, Box<Response>> {
    match caller.map(|c| &c.principal.kind) {
        Some(PrincipalKind::Peer { name, .. }) => Ok(name.clone()),
        Some(_) => Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the exchange API is for peer sites (Authorization: Vesalius-Peer)",
        ))),
        None => Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "peer authentication required",
        ))),
    }
}

/// Largest answer [`sign_peer_answers`] signs (a STOW-RS answer is ~300 bytes per instance).
const MAX_SIGNED_ANSWER: usize = 64 << 20;

/// Middleware: the answer to a peer site's `POST` (STOW-RS under `/dicom-web`) is signed with our
/// identity over the request's `jti` and the body (`X-Vesalius-Signature`), like the exchange
/// API's answers; other requests and callers pass untouched.
pub async fn sign_peer_answers(
    State(identity): State<Arc<SiteIdentity>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = (req.method() == axum::http::Method::POST)
        .then(|| req.extensions().get::<PeerRequest>().cloned())
        .flatten();
    let resp = next.run(req).await;
    let Some(peer) = peer else {
        return resp;
    };
    if resp.headers().contains_key(SIGNATURE_HEADER) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    match axum::body::to_bytes(body, MAX_SIGNED_ANSWER).await {
        Ok(bytes) => {
            let sig = identity.sign_response(&peer.jti, &bytes);
            if let Ok(v) = HeaderValue::from_str(&sig) {
                parts.headers.insert(SIGNATURE_HEADER, v);
            }
            Response::from_parts(parts, axum::body::Body::from(bytes))
        }
        Err(e) => {
            tracing::error!(error = %e, "answer to a peer not signed: unreadable or too large");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the answer could not be signed",
            )
        }
    }
}

fn signed(state: &ReceiverState, req: Option<&PeerRequest>, body: Vec<u8>) -> Response {
    signed_answer(&state.identity, req, body)
}

/// A JSON answer signed with our identity over the request's `jti` and the body.
pub(crate) fn signed_answer(
    identity: &SiteIdentity,
    req: Option<&PeerRequest>,
    body: Vec<u8>,
) -> Response {
    let jti = req.map(|r| r.jti.as_str()).unwrap_or_default();
    let sig = identity.sign_response(jti, &body);
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&sig) {
        h.insert(SIGNATURE_HEADER, v);
    }
    resp
}

async fn ping(
    State(state): State<ReceiverState>,
    caller: Option<Extension<Caller>>,
    req: Option<Extension<PeerRequest>>,
) -> Response {
    let caller = caller.map(|c| c.0);
    let name = match peer_of(caller.as_ref()) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let answer = PingAnswer {
        site: state.identity.name().to_owned(),
        public_key: state.identity.public_key(),
        time_ms: now_ms(),
        peer_name: name,
        org: caller.map(|c| c.org().to_owned()).unwrap_or_default(),
    };
    signed(
        &state,
        req.as_ref().map(|r| &r.0),
        serde_json::to_vec(&answer).expect("serialisable"),
    )
}

async fn manifest(
    State(state): State<ReceiverState>,
    caller: Option<Extension<Caller>>,
    req: Option<Extension<PeerRequest>>,
    body: Bytes,
) -> Response {
    let caller = caller.map(|c| c.0);
    let peer = match peer_of(caller.as_ref()) {
        Ok(n) => n,
        Err(r) => return *r,
    };
    let caller = caller.expect("checked");
    let m: Manifest = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad-request",
                &format!("unreadable manifest: {e}"),
            );
        }
    };
    if m.instances.len() > MAX_ENTRIES || m.study_uid.is_empty() || m.study_uid.len() > 64 {
        return error(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "a manifest names one study and at most 100000 instances",
        );
    }
    let org = caller.org().to_owned();
    // Only what this peer's deliveries hold here: the organisation it stores into.
    let answer = match check(state.index.as_ref(), Some(Access::orgs([org.clone()])), &m).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("manifest of {}: {e}", m.study_uid);
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "index unavailable",
            );
        }
    };
    let now = now_ms();
    let previous = state
        .registry
        .arrival(&org, &m.study_uid)
        .await
        .ok()
        .flatten();
    let complete = m.final_ && answer.complete;
    let arrival = Arrival {
        org: org.clone(),
        study_uid: m.study_uid.clone(),
        from_peer: peer.clone(),
        priority: previous
            .as_ref()
            .map_or(m.priority, |p| p.priority.max(m.priority)),
        manifest_instances: if m.final_ {
            m.instances.len() as u64
        } else {
            previous.as_ref().map_or(0, |p| p.manifest_instances)
        },
        complete_ms: if complete {
            now
        } else {
            previous.as_ref().map_or(0, |p| p.complete_ms)
        },
        updated_ms: now,
    };
    let audit = if complete {
        vec![AuditEvent {
            time_ms: now,
            actor: caller.principal.actor.clone(),
            action: "transfer-complete".into(),
            outcome: Outcome::Success,
            org: org.clone(),
            patient: None,
            study_uid: Some(m.study_uid.clone()),
            source: caller.source.clone(),
            user_agent: caller.user_agent.clone(),
            details: json!({
                "from_peer": peer,
                "instances": m.instances.len(),
                "priority": m.priority,
            }),
        }]
    } else {
        Vec::new()
    };
    // The arrival changes only when something new is known (priority, a final manifest).
    let changed = previous.as_ref().is_none_or(|p| {
        p.priority != arrival.priority
            || p.manifest_instances != arrival.manifest_instances
            || p.complete_ms != arrival.complete_ms
            || p.from_peer != arrival.from_peer
    });
    if changed
        && let Err(e) = state
            .registry
            .apply(vec![RegistryChange::PutArrival(arrival.clone())], audit)
            .await
    {
        tracing::warn!("recording the arrival of {}: {e}", m.study_uid);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "index unavailable",
        );
    }
    if complete {
        metrics::counter!("vesalius_exchange_studies_complete_total").increment(1);
        let _ = state.events.send(ExchangeEvent::StudyComplete {
            org,
            study_uid: m.study_uid.clone(),
            from_peer: peer,
            priority: arrival.priority,
            instances: m.instances.len() as u64,
        });
    }
    signed(
        &state,
        req.as_ref().map(|r| &r.0),
        serde_json::to_vec(&answer).expect("serialisable"),
    )
}
