//! The management API of the exchange (docs/api-exchange.md): transfers and their receipts,
//! parked jobs and their retry, a live event stream, and the registry of peers, DICOM nodes,
//! routes and arrivals.
//!
//! - `GET /api/v1/transfers?limit=&offset=`: per (destination, study) summaries, most recently
//!   active first; `GET /api/v1/transfers/receipts?study=&queue=&limit=&offset=`;
//!   `GET /api/v1/transfers/jobs?state=&queue=&study=&limit=&offset=` (pages by `offset`, at
//!   most [`MAX_OFFSET`]);
//!   `POST /api/v1/transfers/jobs/{id}/retry` (a parked job becomes ready now);
//!   `GET /api/v1/transfers/events`: server-sent events, one per [`ExchangeEvent`] (`event:` is
//!   its `type`, `data:` its JSON), a keep-alive comment every 15 s.
//! - `GET /api/v1/peers`, `GET|PUT|DELETE /api/v1/peers/{name}`,
//!   `POST /api/v1/peers/{name}/ping`; the same for `/api/v1/nodes` with
//!   `POST /api/v1/nodes/{name}/echo` (C-ECHO), `GET /api/v1/nodes/{name}/studies` (C-FIND) and
//!   `POST /api/v1/nodes/{name}/retrieve` (a C-MOVE job), see the `retrieve` module; `GET /api/v1/routes`,
//!   `GET|PUT|DELETE /api/v1/routes/{id}`; `GET /api/v1/arrivals?limit=`;
//!   `POST /api/v1/route-test` (which routes fire for a DICOM file, see [`crate::route_test`]).
//!
//! ## Access
//! - Every registry record belongs to an organisation (its `org` field: for a peer, the local
//!   organisation it acts as). Reading, changing, deleting, pinging or echoing a record needs
//!   [`Action::ManageOrg`] on that organisation (the right that administers AE titles and
//!   users); replacing a record with one of another organisation needs it on both. Lists show
//!   only the records the caller may manage. Records the caller may not manage answer 404 to
//!   reads, like missing ones.
//! - Transfers, receipts, jobs and the event stream need `ManageOrg` in the caller's own
//!   organisation (administrators, the server itself), and show only what concerns an
//!   organisation the caller administers: every summary, receipt, job and [`ExchangeEvent`]
//!   names its organisation (a job's is its payload's `org`, [`NewJob::org`]: the sending
//!   organisation whose route or request made it; receipts, summaries and the sender-side
//!   events carry the job's; "study complete" the receiving one). Lists are filtered in the
//!   outbox (so `limit` counts only the caller's), events as they are streamed. Things of no
//!   organisation (receipts written before schema 6 whose study no single organisation held,
//!   jobs without one) are for the server itself only.
//! - Retrying a job needs `ManageOrg` on its organisation; a job of no organisation needs it on
//!   the organisation of its destination (the peer or node record of its queue, also for
//!   `retrieve:` and `prefetch:` queues), and one whose destination is not in the registry (an
//!   analysis queue, a deleted record) may be retried by any administrator. Another
//!   organisation's job answers 404, like a missing one.
//! - Arrivals need [`Action::Query`] in the caller's organisation and list only its arrivals
//!   (the server itself sees every organisation's).
//!
//! ## Changes
//! Every change is committed with its `admin-change` audit event (`details.change`:
//! `peer-put`, `peer-delete`, `node-put`, `node-delete`, `route-put`, `route-delete`,
//! `job-retry`) through [`Registry::apply`]; a job retry, which the outbox commits alone, is
//! audited right after it. Records put by the configuration file (`managed`) are refused with
//! 409: the file would put them back at the next start. A route is validated
//! ([`crate::route::validate`]) and its destinations must exist (a node only of the route's own
//! organisation); a peer or node named by a route cannot be deleted (409). After a route
//! change this node reloads its routes at once ([`RouteObserver::refresh`]); other nodes pick
//! it up at their refresh interval.
//!
//! Errors are `{"error": "<kebab-case code>", "message": "..."}` with the status of the code's
//! [`ErrorKind`], mapped in [`ApiError`] only.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use vesalius_auth::{Action, Caller, Resource, authorize};
use vesalius_core::ErrorKind;
use vesalius_store::audit::Outcome;
use vesalius_store::outbox::{JobFilter, JobState, NewJob, ReceiptFilter, TransferFilter};
use vesalius_store::registry::{
    DicomNode, Peer, PeerKind, RegistryChange, Route, RouteDestination,
};
use vesalius_store::{Outbox, Registry};

use crate::observer::RouteObserver;
use crate::spec::{NodeSpec, PeerSpec, RouteSpec};
use crate::worker::Exchange;
use crate::{ExchangeEvent, now_ms};

/// Default and largest `limit` of the lists.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// The deepest `offset` of the transfer lists: a page is read as the first `offset + limit`
/// and cut, so deep pages cost what they skip (filter by study or queue instead).
pub const MAX_OFFSET: usize = 10_000;
/// How long a C-ECHO may take.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive comments of the event stream (proxies close idle connections).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What the management handlers need.
#[derive(Clone)]
pub struct ApiState {
    /// The engine: outbox, registry, peer client, event stream.
    pub exchange: Arc<Exchange>,
    /// The routing observer, refreshed after every route change made here.
    pub routes: Arc<RouteObserver>,
    /// Our AE title, calling DICOM nodes (C-ECHO).
    pub ae_title: String,
}

impl ApiState {
    /// The state over `exchange`, refreshing `routes`, echoing as `ae_title`.
    pub fn new(
        exchange: Arc<Exchange>,
        routes: Arc<RouteObserver>,
        ae_title: impl Into<String>,
    ) -> Self {
        ApiState {
            exchange,
            routes,
            ae_title: ae_title.into(),
        }
    }

    fn registry(&self) -> &Arc<dyn Registry> {
        self.exchange.registry()
    }

    fn outbox(&self) -> &Arc<dyn Outbox> {
        self.exchange.outbox()
    }
}

/// The management router (mount at the root).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/transfers", get(transfers))
        .route("/api/v1/transfers/receipts", get(receipts))
        .route("/api/v1/transfers/jobs", get(jobs))
        .route("/api/v1/transfers/jobs/{id}/retry", post(retry))
        .route("/api/v1/transfers/events", get(events))
        .route("/api/v1/peers", get(list_peers))
        .route(
            "/api/v1/peers/{name}",
            get(get_peer).put(put_peer).delete(delete_peer),
        )
        .route("/api/v1/peers/{name}/ping", post(ping_peer))
        .route("/api/v1/nodes", get(list_nodes))
        .route(
            "/api/v1/nodes/{name}",
            get(get_node).put(put_node).delete(delete_node),
        )
        .route("/api/v1/nodes/{name}/echo", post(echo_node))
        .route("/api/v1/nodes/{name}/studies", get(retrieve::studies))
        .route("/api/v1/nodes/{name}/retrieve", post(retrieve::retrieve))
        .route("/api/v1/routes", get(list_routes))
        .route(
            "/api/v1/routes/{id}",
            get(get_route).put(put_route).delete(delete_route),
        )
        .route("/api/v1/arrivals", get(arrivals))
        .route("/api/v1/route-test", post(crate::route_test::test))
        .with_state(state)
}

/// An API error: a kind (status and code) and a message.
#[derive(Debug)]
pub struct ApiError {
    /// The kind.
    pub kind: ErrorKind,
    /// Human-readable detail.
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }
}

impl From<vesalius_store::Error> for ApiError {
    fn from(e: vesalius_store::Error) -> Self {
        ApiError::new(e.kind(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.kind == ErrorKind::Internal {
            tracing::error!(message = %self.message, "internal error");
        }
        let status = StatusCode::from_u16(self.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(json!({"error": self.kind.code(), "message": self.message})),
        )
            .into_response()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn caller_of(caller: Option<Extension<Caller>>) -> ApiResult<Caller> {
    caller
        .map(|Extension(c)| c)
        .ok_or_else(|| ApiError::new(ErrorKind::Unauthorized, "credentials required"))
}

/// Whether the caller may administer `org` (no grants count for organisation-level actions).
pub(crate) fn may(c: &Caller, action: Action, org: &str) -> bool {
    authorize(
        &c.principal,
        action,
        &Resource::org(org.to_owned()),
        &[],
        vesalius_auth::now_ms(),
    )
    .is_allowed()
}

fn require_manage(c: &Caller, org: &str) -> ApiResult<()> {
    if may(c, Action::ManageOrg, org) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::Forbidden,
            format!(
                "{} may not administer organisation {org:?}",
                c.principal.actor.name
            ),
        ))
    }
}

/// Administrators (of the organisation they act in) and the server itself.
fn require_admin(c: &Caller) -> ApiResult<()> {
    if may(c, Action::ManageOrg, c.org()) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::Forbidden,
            "transfers are for administrators",
        ))
    }
}

/// The organisation whose transfers the caller sees: its own (the only one `ManageOrg` is ever
/// allowed on for a member), or every organisation for the server itself.
fn transfer_scope(c: &Caller) -> Option<String> {
    (!c.principal.is_system()).then(|| c.org().to_owned())
}

/// Whether the caller may see `e`: only administrators of the organisation an event concerns
/// (the server itself: all).
fn may_see(c: &Caller, e: &ExchangeEvent) -> bool {
    let org = match e {
        ExchangeEvent::StudyComplete { org, .. }
        | ExchangeEvent::Delivered { org, .. }
        | ExchangeEvent::TransferComplete { org, .. }
        | ExchangeEvent::Parked { org, .. } => org,
    };
    c.principal.is_system() || (!org.is_empty() && may(c, Action::ManageOrg, org))
}

fn limit_of(limit: Option<usize>) -> usize {
    limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}

/// A page of a transfer list: `(offset, offset + limit)` rows to read, the first `offset`
/// skipped. Over [`MAX_OFFSET`] is 400.
fn page_of(p: &ListParams) -> ApiResult<(usize, usize)> {
    let offset = p.offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(bad_request(format!(
            "offset is at most {MAX_OFFSET}, not {offset}; filter by study or queue instead"
        )));
    }
    Ok((offset, offset + limit_of(p.limit)))
}

/// `rows` without the first `offset`.
fn skip<T>(mut rows: Vec<T>, offset: usize) -> Vec<T> {
    rows.drain(..offset.min(rows.len()));
    rows
}

fn json_of<T: serde::Serialize>(v: &T) -> Json<Value> {
    Json(serde_json::to_value(v).unwrap_or(Value::Null))
}

fn bad_request(message: String) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, message)
}

fn managed(what: &str, name: &str) -> ApiError {
    ApiError::new(
        ErrorKind::Conflict,
        format!(
            "{what} {name} is put by the configuration file: change it there (it would be put \
             back at the next start)"
        ),
    )
}

fn not_found(what: &str, name: &str) -> ApiError {
    ApiError::new(ErrorKind::NotFound, format!("no {what} {name}"))
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(ErrorKind::BadRequest, format!("unreadable body: {e}")))
}

/// Applies `change` with its `admin-change` event, in one transaction.
async fn commit(
    st: &ApiState,
    c: &Caller,
    org: &str,
    change: RegistryChange,
    details: Value,
) -> ApiResult<()> {
    let ev = c.event("admin-change", Outcome::Success, org, None, details);
    st.registry().apply(vec![change], vec![ev]).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Transfers.

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListParams {
    limit: Option<usize>,
    offset: Option<usize>,
    study: Option<String>,
    queue: Option<String>,
    state: Option<String>,
}

async fn transfers(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let c = caller_of(caller)?;
    require_admin(&c)?;
    let (offset, upto) = page_of(&p)?;
    let t = st
        .outbox()
        .transfers(&TransferFilter {
            org: transfer_scope(&c),
            limit: upto,
        })
        .await?;
    Ok(json_of(&skip(t, offset)))
}

async fn receipts(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let c = caller_of(caller)?;
    require_admin(&c)?;
    let (offset, upto) = page_of(&p)?;
    let r = st
        .outbox()
        .receipts(&ReceiptFilter {
            org: transfer_scope(&c),
            queue: p.queue,
            study_uid: p.study,
            limit: upto,
        })
        .await?;
    Ok(json_of(&skip(r, offset)))
}

async fn jobs(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let c = caller_of(caller)?;
    require_admin(&c)?;
    let (offset, upto) = page_of(&p)?;
    let state = match p.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            ApiError::new(
                ErrorKind::BadRequest,
                format!("state is ready, leased or parked, not {s:?}"),
            )
        })?),
    };
    let j = st
        .outbox()
        .jobs(&JobFilter {
            org: transfer_scope(&c),
            queue: p.queue,
            study_uid: p.study,
            state,
            limit: upto,
        })
        .await?;
    Ok(json_of(&skip(j, offset)))
}

/// The organisation of the destination of `queue`, when it is in the registry.
async fn queue_org(st: &ApiState, queue: &str) -> ApiResult<Option<String>> {
    if let Some(n) = crate::priors::queue_node(queue) {
        return Ok(st.registry().node(n).await?.map(|d| d.org));
    }
    Ok(match RouteDestination::parse(queue) {
        Some(RouteDestination::Peer(n)) => st.registry().peer(&n).await?.map(|p| p.org),
        Some(RouteDestination::Node(n)) => st.registry().node(&n).await?.map(|d| d.org),
        _ => None,
    })
}

async fn retry(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = caller_of(caller)?;
    require_admin(&c)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::new(ErrorKind::NotFound, format!("no job {id}")))?;
    let found = st
        .outbox()
        .jobs(&JobFilter::default())
        .await?
        .into_iter()
        .find(|j| j.id == id)
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("no job {id}")))?;
    let job_org = NewJob::org(&found.job);
    let org = if job_org.is_empty() {
        queue_org(&st, &found.job.queue).await?
    } else if may(&c, Action::ManageOrg, &job_org) {
        Some(job_org)
    } else {
        // Hidden like a missing job: the lists do not show it either.
        return Err(ApiError::new(ErrorKind::NotFound, format!("no job {id}")));
    };
    if let Some(org) = &org {
        require_manage(&c, org)?;
    }
    if found.state != JobState::Parked {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!("job {id} is {}, not parked", found.state.as_str()),
        ));
    }
    if !st.outbox().retry(id, now_ms()).await? {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!("job {id} was taken meanwhile"),
        ));
    }
    // The outbox commits the retry alone: the event follows it (logged if it cannot be kept).
    let ev = c.event(
        "admin-change",
        Outcome::Success,
        org.as_deref().unwrap_or(c.org()),
        (!found.job.study_uid.is_empty()).then_some(found.job.study_uid.as_str()),
        json!({"change": "job-retry", "job": id, "queue": found.job.queue}),
    );
    if let Err(e) = st.registry().apply(Vec::new(), vec![ev]).await {
        tracing::error!(error = %e, job = id, "audit event of a job retry not written");
    }
    Ok(Json(
        json!({"id": id, "state": "ready", "queue": found.job.queue}),
    ))
}

async fn events(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let c = caller_of(caller)?;
    require_admin(&c)?;
    let rx = st.exchange.subscribe();
    let stream = futures::stream::unfold((rx, c), |(mut rx, c)| async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    // Every event names its organisation and goes only to its administrators.
                    if !may_see(&c, &e) {
                        continue;
                    }
                    return Some((Ok(sse_event(&e)), (rx, c)));
                }
                Err(RecvError::Lagged(_)) => {
                    // No count: the broadcast carries every organisation's events, and the
                    // count would tell an organisation's administrators how busy the others are.
                    let ev = Event::default()
                        .event("lagged")
                        .data(json!({"type": "lagged"}).to_string());
                    return Some((Ok(ev), (rx, c)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

/// One server-sent event: `event:` the event's `type`, `data:` its JSON.
fn sse_event(e: &ExchangeEvent) -> Event {
    let v = serde_json::to_value(e).unwrap_or(Value::Null);
    let kind = v["type"].as_str().unwrap_or("event").to_owned();
    Event::default().event(kind).data(v.to_string())
}

// ---------------------------------------------------------------------------------------------
// Peers.

async fn list_peers(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
) -> ApiResult<Json<Value>> {
    let c = caller_of(caller)?;
    let peers: Vec<Peer> = st
        .registry()
        .peers()
        .await?
        .into_iter()
        .filter(|p| may(&c, Action::ManageOrg, &p.org))
        .collect();
    Ok(json_of(&peers))
}

/// The peer `name` if the caller may manage it; 404 otherwise (hidden like missing).
async fn visible_peer(st: &ApiState, c: &Caller, name: &str) -> ApiResult<Peer> {
    match st.registry().peer(name).await? {
        Some(p) if may(c, Action::ManageOrg, &p.org) => Ok(p),
        _ => Err(not_found("peer", name)),
    }
}

async fn get_peer(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = caller_of(caller)?;
    Ok(json_of(&visible_peer(&st, &c, &name).await?))
}

async fn put_peer(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> ApiResult<Response> {
    let c = caller_of(caller)?;
    let input: PeerSpec = body(&bytes)?;
    require_manage(&c, &input.org)?;
    let old = st.registry().peer(&name).await?;
    if let Some(o) = &old {
        require_manage(&c, &o.org)?;
        if o.managed {
            return Err(managed("peer", &name));
        }
    }
    let created = old.as_ref().map_or_else(now_ms, |o| o.created_ms);
    let peer = input
        .record(Some(&name), false, created)
        .map_err(bad_request)?;
    let details = json!({
        "change": "peer-put", "peer": name, "kind": peer.kind, "base_url": peer.base_url,
        "auth": peer.auth.kind(),
        "may_query": peer.may_query, "created": old.is_none(),
    });
    let org = peer.org.clone();
    commit(
        &st,
        &c,
        &org,
        RegistryChange::PutPeer(peer.clone()),
        details,
    )
    .await?;
    let status = if old.is_none() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, json_of(&peer)).into_response())
}

/// The routes sending to `dest`, which keep it from being deleted.
async fn routes_to(st: &ApiState, dest: &RouteDestination) -> ApiResult<Vec<String>> {
    Ok(crate::check::routes_to(st.registry().as_ref(), dest).await?)
}

async fn delete_peer(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = caller_of(caller)?;
    let p = st
        .registry()
        .peer(&name)
        .await?
        .ok_or_else(|| not_found("peer", &name))?;
    require_manage(&c, &p.org)?;
    if p.managed {
        return Err(managed("peer", &name));
    }
    let users = routes_to(&st, &RouteDestination::Peer(name.clone())).await?;
    if !users.is_empty() {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!("routes send to peer {name}: {}", users.join(", ")),
        ));
    }
    let details = json!({"change": "peer-delete", "peer": name});
    commit(
        &st,
        &c,
        &p.org,
        RegistryChange::DeletePeer(name.clone()),
        details,
    )
    .await?;
    Ok(Json(json!({"deleted": name})))
}

async fn ping_peer(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = caller_of(caller)?;
    let peer = visible_peer(&st, &c, &name).await?;
    let sent_ms = now_ms();
    let t0 = Instant::now();
    if peer.kind == PeerKind::Dicomweb {
        // A plain DICOMweb server: a QIDO-RS request with its credentials.
        return Ok(Json(match st.exchange.client().qido_ping(&peer).await {
            Ok(a) => json!({
                "peer": name,
                "kind": peer.kind,
                "reachable": true,
                "round_trip_ms": t0.elapsed().as_millis() as i64,
                "qido_status": a.status,
            }),
            Err(e) => json!({
                "peer": name,
                "kind": peer.kind,
                "reachable": false,
                "round_trip_ms": t0.elapsed().as_millis() as i64,
                "error": e.to_string(),
            }),
        }));
    }
    // A diagnosis, not a failure of this request: an unreachable peer is answered with 200.
    Ok(Json(match st.exchange.client().ping(&peer).await {
        Ok(a) => {
            let rtt = t0.elapsed().as_millis() as i64;
            json!({
                "peer": name,
                "reachable": true,
                "round_trip_ms": rtt,
                "site": a.site,
                "known_as": a.peer_name,
                "remote_org": a.org,
                // Its clock against ours at the middle of the round trip.
                "skew_ms": a.time_ms - (sent_ms + rtt / 2),
            })
        }
        Err(e) => json!({
            "peer": name,
            "reachable": false,
            "round_trip_ms": t0.elapsed().as_millis() as i64,
            "error": e.to_string(),
        }),
    }))
}

// ---------------------------------------------------------------------------------------------
// DICOM nodes.

async fn list_nodes(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
) -> ApiResult<Json<Value>> {
    let c = caller_of(caller)?;
    let nodes: Vec<DicomNode> = st
        .registry()
        .nodes()
        .await?
        .into_iter()
        .filter(|n| may(&c, Action::ManageOrg, &n.org))
        .collect();
    Ok(json_of(&nodes))
}

async fn visible_node(st: &ApiState, c: &Caller, name: &str) -> ApiResult<DicomNode> {
    match st.registry().node(name).await? {
        Some(n) if may(c, Action::ManageOrg, &n.org) => Ok(n),
        _ => Err(not_found("node", name)),
    }
}

async fn get_node(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = caller_of(caller)?;
    Ok(json_of(&visible_node(&st, &c, &name).await?))
}

async fn put_node(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> ApiResult<Response> {
    let c = caller_of(caller)?;
    let input: NodeSpec = body(&bytes)?;
    require_manage(&c, &input.org)?;
    let old = st.registry().node(&name).await?;
    if let Some(o) = &old {
        require_manage(&c, &o.org)?;
        if o.managed {
            return Err(managed("node", &name));
        }
    }
    let created = old.as_ref().map_or_else(now_ms, |o| o.created_ms);
    let node = input
        .record(Some(&name), false, created)
        .map_err(bad_request)?;
    let details = json!({
        "change": "node-put", "node": name, "ae_title": node.ae_title,
        "host": node.host, "port": node.port, "created": old.is_none(),
    });
    let org = node.org.clone();
    commit(
        &st,
        &c,
        &org,
        RegistryChange::PutNode(node.clone()),
        details,
    )
    .await?;
    let status = if old.is_none() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, json_of(&node)).into_response())
}

async fn delete_node(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = caller_of(caller)?;
    let n = st
        .registry()
        .node(&name)
        .await?
        .ok_or_else(|| not_found("node", &name))?;
    require_manage(&c, &n.org)?;
    if n.managed {
        return Err(managed("node", &name));
    }
    let users = routes_to(&st, &RouteDestination::Node(name.clone())).await?;
    if !users.is_empty() {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!("routes send to node {name}: {}", users.join(", ")),
        ));
    }
    let details = json!({"change": "node-delete", "node": name});
    commit(
        &st,
        &c,
        &n.org,
        RegistryChange::DeleteNode(name.clone()),
        details,
    )
    .await?;
    Ok(Json(json!({"deleted": name})))
}

async fn echo_node(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = caller_of(caller)?;
    let node = visible_node(&st, &c, &name).await?;
    let addr = if node.host.contains(':') {
        format!("[{}]:{}", node.host, node.port)
    } else {
        format!("{}:{}", node.host, node.port)
    };
    let t0 = Instant::now();
    let outcome = tokio::time::timeout(
        ECHO_TIMEOUT,
        vesalius_dimse::scu::echo(&addr, &st.ae_title, &node.ae_title),
    )
    .await;
    let rtt = t0.elapsed().as_millis() as i64;
    // Like a ping: the node's answer is the result, 200 either way.
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {} s", ECHO_TIMEOUT.as_secs())),
    };
    Ok(Json(json!({
        "node": name,
        "ae_title": node.ae_title,
        "address": addr,
        "ok": error.is_none(),
        "round_trip_ms": rtt,
        "error": error,
    })))
}

// ---------------------------------------------------------------------------------------------
// Routes.

async fn list_routes(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
) -> ApiResult<Json<Value>> {
    let c = caller_of(caller)?;
    let routes: Vec<Route> = st
        .registry()
        .routes()
        .await?
        .into_iter()
        .filter(|r| may(&c, Action::ManageOrg, &r.org))
        .collect();
    Ok(json_of(&routes))
}

async fn find_route(st: &ApiState, id: &str) -> ApiResult<Option<Route>> {
    Ok(st
        .registry()
        .routes()
        .await?
        .into_iter()
        .find(|r| r.id == id))
}

async fn get_route(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = caller_of(caller)?;
    match find_route(&st, &id).await? {
        Some(r) if may(&c, Action::ManageOrg, &r.org) => Ok(json_of(&r)),
        _ => Err(not_found("route", &id)),
    }
}

/// Every destination must exist and may receive the route's data
/// ([`crate::check::destination_problem`]).
async fn check_destinations(st: &ApiState, r: &Route) -> ApiResult<()> {
    match crate::check::destination_problem(st.registry().as_ref(), r).await? {
        Some(p) => Err(ApiError::new(ErrorKind::BadRequest, p)),
        None => Ok(()),
    }
}

/// Reloads this node's routes after a change (the change is committed: a failure is logged,
/// and the periodic refresh picks the change up).
async fn refresh(st: &ApiState) {
    if let Err(e) = st.routes.refresh().await {
        tracing::warn!(error = %e, "reloading the routes after a change");
    }
}

async fn put_route(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> ApiResult<Response> {
    let c = caller_of(caller)?;
    let input: RouteSpec = body(&bytes)?;
    require_manage(&c, &input.org)?;
    let old = find_route(&st, &id).await?;
    if let Some(o) = &old {
        require_manage(&c, &o.org)?;
        if o.managed {
            return Err(managed("route", &id));
        }
    }
    let created = old.as_ref().map_or_else(now_ms, |o| o.created_ms);
    let r = input
        .record(Some(&id), false, created)
        .map_err(bad_request)?;
    check_destinations(&st, &r).await?;
    let dests: Vec<String> = r.destinations.iter().map(RouteDestination::text).collect();
    let details = json!({
        "change": "route-put", "route": id, "enabled": r.enabled, "priority": r.priority,
        "destinations": dests, "deid": r.deid, "created": old.is_none(),
    });
    let org = r.org.clone();
    commit(&st, &c, &org, RegistryChange::PutRoute(r.clone()), details).await?;
    refresh(&st).await;
    let status = if old.is_none() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, json_of(&r)).into_response())
}

async fn delete_route(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = caller_of(caller)?;
    let r = find_route(&st, &id)
        .await?
        .ok_or_else(|| not_found("route", &id))?;
    require_manage(&c, &r.org)?;
    if r.managed {
        return Err(managed("route", &id));
    }
    let details = json!({"change": "route-delete", "route": id});
    commit(
        &st,
        &c,
        &r.org,
        RegistryChange::DeleteRoute(id.clone()),
        details,
    )
    .await?;
    refresh(&st).await;
    Ok(Json(json!({"deleted": id})))
}

// ---------------------------------------------------------------------------------------------
// Arrivals.

async fn arrivals(
    State(st): State<ApiState>,
    caller: Option<Extension<Caller>>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let c = caller_of(caller)?;
    let org = (!c.principal.is_system()).then(|| c.org().to_owned());
    if let Some(o) = &org
        && !may(&c, Action::Query, o)
    {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!(
                "{} may not search organisation {o:?}",
                c.principal.actor.name
            ),
        ));
    }
    let a = st
        .registry()
        .arrivals(org.as_deref(), limit_of(p.limit))
        .await?;
    Ok(json_of(&a))
}

mod retrieve;
#[cfg(test)]
mod tests;
