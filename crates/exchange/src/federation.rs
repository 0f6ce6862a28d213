//! Seeing across sites without copying first (issue 5, docs/exchange.md "Federated search and
//! remote viewing"):
//!
//! - **Federated search**: QIDO-RS with `scope=network` ([`network_scope`], a layer in front of
//!   the DICOMweb router) and `GET /api/v1/search` ([`search`]) ask this site and every peer the
//!   caller's organisation is linked with, in parallel, each within a deadline
//!   ([`FederationOptions::deadline`]). Answers are merged and de-duplicated by UID (this site
//!   first, then peers by name); each result is labelled with the sites that hold it, and a
//!   peer's RetrieveURL is rewritten to this site's proxy, so a viewer reaches it the same way.
//!   A peer that fails or does not answer in time is reported (a `Warning: 299` header in
//!   QIDO, `sites[].status` in the JSON API), never fails the whole search.
//! - **Remote viewing** ([`crate::remote`]): WADO-RS and QIDO-RS of a peer under
//!   `/dicom-web/peers/{peer}/…`, proxied with a bounded cache.
//! - **Pull to local** ([`crate::remote`]): the peer is asked to send the study here with the
//!   same transfer engine (outbox, manifests, receipts).
//!
//! ## Who sees what
//! Only users (sessions, API tokens) search the network and view remotely: peers, links and AE
//! titles get local answers only (so a search never fans out twice). The peers asked are those
//! registered for the caller's organisation (the peer record's `org`). Each request to a peer is
//! signed by this site and names the user (`sub`, `sub_org`, `sub_name` claims): the peer answers
//! with what **its** policy grants us (a peer registered there with `may_query` sees the
//! organisation it acts in, nothing else) and audits the access as that user at this site. This
//! site audits the search (`query`, `details.scope = "network"`) and each remote study viewed
//! (`retrieve`, `details.peer`).
//!
//! Answers of searches and views are not signed (the manifests and pings are): off loopback,
//! peers are reached over HTTPS only ([`crate::client::check_scheme`]).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use futures::future::join_all;
use serde::Serialize;
use serde_json::{Value, json};
use vesalius_auth::peer::OnBehalf;
use vesalius_auth::principal::PrincipalKind;
use vesalius_auth::{Action, Authenticator, Caller};
use vesalius_core::ErrorKind;
use vesalius_core::lru::{Lru, Weigh};
use vesalius_store::Index;
use vesalius_store::audit::Outcome;
use vesalius_store::query::StudyOrder;
use vesalius_store::registry::Peer;

use crate::api::{ApiError, ApiResult, caller_of, may};
use crate::client::transport;
use crate::worker::Exchange;

mod annotate;
mod outgoing;
mod worklist;

/// Private creator of the labels this site adds to federated answers (PS3.5 7.8.1): the block
/// `(0009,10xx)`.
pub const PRIVATE_CREATOR: &str = "VESALIUS";
/// `(0009,0010)`: the private creator element reserving block `10`.
pub const PRIVATE_CREATOR_TAG: &str = "00090010";
/// `(0009,1001)` LO, multi-valued: the sites holding the result (this site's name first when
/// it holds it).
pub const SITES_TAG: &str = "00091001";

/// What the federation needs to know.
#[derive(Debug, Clone)]
pub struct FederationOptions {
    /// How long a peer may take to answer a search.
    pub deadline: Duration,
    /// How long a proxied view request may take (large retrievals stream for a while).
    pub view_timeout: Duration,
    /// Bytes of remote answers kept ([`crate::remote`]).
    pub cache_bytes: usize,
    /// The largest JSON answer read from a peer (searches, metadata).
    pub max_json_bytes: usize,
    /// This site's public URL (`[http] public_base_url`), for rewritten RetrieveURLs; `None`:
    /// from the request's `Host`.
    pub public_base_url: Option<String>,
}

impl Default for FederationOptions {
    fn default() -> Self {
        FederationOptions {
            deadline: Duration::from_secs(3),
            view_timeout: Duration::from_secs(600),
            cache_bytes: 256 << 20,
            max_json_bytes: 64 << 20,
            public_base_url: None,
        }
    }
}

/// A cached remote answer: its content type and body.
#[derive(Clone)]
pub(crate) struct Cached {
    pub content_type: HeaderValue,
    pub body: bytes::Bytes,
}

impl Weigh for Cached {
    fn weight(&self) -> usize {
        self.body.len() + self.content_type.len()
    }
}

/// Federated search, remote viewing and pulls, shared by their handlers.
pub struct Federation {
    pub(crate) exchange: Arc<Exchange>,
    pub(crate) index: Arc<dyn Index>,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) opts: FederationOptions,
    pub(crate) cache: Lru<Cached>,
    local: OnceLock<Router>,
}

impl Federation {
    /// The federation over `exchange`'s registry, outbox and peer client and this site's
    /// `index` (what a pull sends), auditing through `auth`.
    pub fn new(
        exchange: Arc<Exchange>,
        index: Arc<dyn Index>,
        auth: Arc<Authenticator>,
        opts: FederationOptions,
    ) -> Arc<Self> {
        Arc::new(Federation {
            cache: Lru::new(opts.cache_bytes),
            exchange,
            index,
            auth,
            opts,
            local: OnceLock::new(),
        })
    }

    /// Sets the local DICOMweb router (as nested under `/dicom-web`, with its state) that
    /// `/api/v1/search` asks for this site's own answers. Set once; later calls are ignored.
    pub fn set_local(&self, dicomweb: Router) {
        let _ = self.local.set(dicomweb);
    }

    /// Bytes of remote answers cached.
    pub fn cached_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// This site's name, as its peers know it (the `iss` of its request tokens).
    pub fn site_name(&self) -> &str {
        self.exchange.client().identity().name()
    }

    /// The peers `caller`'s organisation is linked with, optionally only those named.
    async fn peers_for(&self, caller: &Caller, only: Option<&[String]>) -> ApiResult<Vec<Peer>> {
        let mut peers: Vec<Peer> = self
            .exchange
            .registry()
            .peers()
            .await?
            .into_iter()
            .filter(|p| p.org == caller.org())
            // Plain DICOMweb destinations are sent to, not searched (no signed exchange API).
            .filter(|p| p.kind == vesalius_store::registry::PeerKind::Vesalius)
            .filter(|p| only.is_none_or(|names| names.iter().any(|n| n == &p.name)))
            .collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(peers)
    }

    /// The peer `name` when it is linked with `caller`'s organisation (404 otherwise, like a
    /// missing one).
    pub(crate) async fn peer_for(&self, caller: &Caller, name: &str) -> ApiResult<Peer> {
        match self.exchange.registry().peer(name).await? {
            Some(p)
                if p.org == caller.org()
                    && p.kind == vesalius_store::registry::PeerKind::Vesalius =>
            {
                Ok(p)
            }
            _ => Err(ApiError::new(
                ErrorKind::NotFound,
                format!("no peer {name:?} for organisation {:?}", caller.org()),
            )),
        }
    }

    /// One peer's answer to a search, within the deadline.
    async fn ask(&self, peer: &Peer, caller: &Caller, path_and_query: &str) -> SiteAnswer {
        let started = Instant::now();
        let mut answer = SiteAnswer::new(&peer.name, false);
        let result = tokio::time::timeout(self.opts.deadline, async {
            let url = crate::client::PeerClient::url(peer, path_and_query)?;
            let (rb, _) = self.exchange.client().request(
                peer,
                Method::GET,
                url,
                Some(OnBehalf::of(&caller.principal)),
            );
            let resp = rb
                .timeout(self.opts.deadline)
                .header(header::ACCEPT, "application/dicom+json")
                .send()
                .await
                .map_err(|e| transport(peer, e))?;
            let status = resp.status();
            let body = read_limited(resp, self.opts.max_json_bytes, peer).await?;
            Ok::<_, crate::Error>((status, body))
        })
        .await;
        answer.elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            Err(_) => {
                answer.status = SiteStatus::Timeout;
                answer.error = Some(format!(
                    "no answer within {} ms",
                    self.opts.deadline.as_millis()
                ));
            }
            Ok(Err(e)) => {
                answer.status = SiteStatus::Unreachable;
                answer.error = Some(e.to_string());
            }
            Ok(Ok((status, body))) if status == StatusCode::NO_CONTENT => {
                answer.status = SiteStatus::Ok;
                let _ = body;
            }
            Ok(Ok((status, body))) if status.is_success() => {
                match serde_json::from_slice::<Vec<Value>>(&body) {
                    Ok(results) => {
                        answer.status = SiteStatus::Ok;
                        answer.results = results;
                    }
                    Err(e) => {
                        answer.status = SiteStatus::Error;
                        answer.error = Some(format!("unreadable answer: {e}"));
                    }
                }
            }
            Ok(Ok((status, body))) => {
                answer.status = SiteStatus::Refused;
                answer.error = Some(format!(
                    "HTTP {}: {}",
                    status.as_u16(),
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                ));
            }
        }
        answer
    }

    /// Asks every peer in `peers` in parallel.
    async fn ask_all(&self, peers: &[Peer], caller: &Caller, pq: &str) -> Vec<SiteAnswer> {
        join_all(peers.iter().map(|p| self.ask(p, caller, pq))).await
    }

    /// Audits a network search by `caller`.
    fn audit_search(&self, caller: &Caller, query: &str, sites: &[SiteAnswer]) {
        let ev = caller.event(
            "query",
            Outcome::Success,
            caller.org(),
            None,
            json!({
                "scope": "network",
                "query": query,
                "sites": sites.iter().map(|s| json!({"site": s.site, "status": s.status}))
                    .collect::<Vec<_>>(),
            }),
        );
        audit_in_background(&self.auth, ev);
    }
}

/// How one site answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SiteStatus {
    /// It answered.
    Ok,
    /// Not within the deadline.
    Timeout,
    /// Could not be reached.
    Unreachable,
    /// Answered with an error status (authentication, policy, bad query).
    Refused,
    /// Answered something unreadable.
    Error,
}

/// One site's part of a federated answer.
#[derive(Debug, Clone, Serialize)]
pub struct SiteAnswer {
    /// The site: this site's name or the peer's.
    pub site: String,
    /// Whether it is this site.
    pub local: bool,
    /// How it answered.
    pub status: SiteStatus,
    /// Results (DICOM JSON objects).
    #[serde(skip)]
    pub results: Vec<Value>,
    /// How many results it gave.
    pub count: usize,
    /// How long it took.
    pub elapsed_ms: u64,
    /// What went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SiteAnswer {
    fn new(site: &str, local: bool) -> Self {
        SiteAnswer {
            site: site.to_owned(),
            local,
            status: SiteStatus::Error,
            results: Vec::new(),
            count: 0,
            elapsed_ms: 0,
            error: None,
        }
    }
}

/// Reads a peer's answer body, at most `limit` bytes (an error beyond: never unbounded memory).
pub(crate) async fn read_limited(
    resp: reqwest::Response,
    limit: usize,
    peer: &Peer,
) -> Result<bytes::Bytes, crate::Error> {
    let mut out = bytes::BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transport(peer, e))?;
        if out.len() + chunk.len() > limit {
            return Err(crate::Error::Peer(format!(
                "peer {}: answer larger than {limit} bytes",
                peer.name
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// The UID that identifies a result at the level of a QIDO-RS path (`…/studies`, `…/series`,
/// `…/instances`), as a DICOM JSON tag.
fn level_key(path: &str) -> Option<&'static str> {
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    match last {
        "studies" => Some("0020000D"),
        "series" => Some("0020000E"),
        "instances" => Some("00080018"),
        _ => None,
    }
}

/// The first value of `tag` in a DICOM JSON object, as text (person names: their alphabetic
/// form).
pub(crate) fn first_str(obj: &Value, tag: &str) -> Option<String> {
    let v = obj.get(tag)?.get("Value")?.get(0)?;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => o
            .get("Alphabetic")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

/// Merges the sites' answers: one result per UID, in site order (this site first), each
/// labelled with every site holding it; a peer's URLs point at this site's proxy.
pub fn merge(key: &str, answers: &[SiteAnswer], local_service: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for a in answers {
        for r in &a.results {
            let uid = first_str(r, key);
            if let Some(i) = uid.as_ref().and_then(|u| index.get(u)) {
                add_site(&mut out[*i], &a.site);
                continue;
            }
            let mut r = r.clone();
            if !r.is_object() {
                continue;
            }
            if !a.local {
                rewrite_urls(&mut r, &a.site, local_service);
            }
            add_site(&mut r, &a.site);
            if let Some(u) = uid {
                index.insert(u, out.len());
            }
            out.push(r);
        }
    }
    out
}

fn add_site(obj: &mut Value, site: &str) {
    let Some(o) = obj.as_object_mut() else {
        return;
    };
    o.insert(
        PRIVATE_CREATOR_TAG.to_owned(),
        json!({"vr": "LO", "Value": [PRIVATE_CREATOR]}),
    );
    let entry = o
        .entry(SITES_TAG.to_owned())
        .or_insert_with(|| json!({"vr": "LO", "Value": []}));
    if let Some(values) = entry.get_mut("Value").and_then(Value::as_array_mut)
        && !values.iter().any(|v| v == site)
    {
        values.push(Value::String(site.to_owned()));
    }
}

/// Rewrites every `…/dicom-web/…` URL inside `v` (RetrieveURL, BulkDataURI) to this site's
/// proxy for `peer`: `{local_service}/peers/{peer}/…`.
pub(crate) fn rewrite_urls(v: &mut Value, peer: &str, local_service: &str) {
    match v {
        Value::String(s) => {
            if let Some(r) = rewrite_url(s, peer, local_service) {
                *s = r;
            }
        }
        Value::Array(a) => a
            .iter_mut()
            .for_each(|x| rewrite_urls(x, peer, local_service)),
        Value::Object(o) => o
            .values_mut()
            .for_each(|x| rewrite_urls(x, peer, local_service)),
        _ => {}
    }
}

fn rewrite_url(s: &str, peer: &str, local_service: &str) -> Option<String> {
    if !(s.starts_with("http://") || s.starts_with("https://")) {
        return None;
    }
    let at = s.find("/dicom-web/")?;
    let rest = &s[at + "/dicom-web/".len()..];
    if rest.starts_with("peers/") {
        return None;
    }
    Some(format!("{local_service}/peers/{peer}/{rest}"))
}

/// This site's DICOMweb service URL as the client reached it (`[http] public_base_url` or the
/// `Host` header), e.g. `http://127.0.0.1:8080/dicom-web`.
pub(crate) fn local_service(public: Option<&str>, headers: &HeaderMap) -> String {
    let origin = match public {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let h = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.split(',').next().unwrap_or("").trim().to_owned())
                    .filter(|v| {
                        !v.is_empty()
                            && v.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-._~:[]".contains(&b))
                    })
            };
            let host = h("x-forwarded-host")
                .or_else(|| h("host"))
                .unwrap_or_else(|| "localhost".into());
            let scheme = h("x-forwarded-proto")
                .filter(|s| s == "http" || s == "https")
                .unwrap_or_else(|| "http".into());
            format!("{scheme}://{host}")
        }
    };
    format!("{origin}/dicom-web")
}

/// Whether the caller may search the network and view remotely: users only.
pub(crate) fn is_user(c: &Caller) -> bool {
    matches!(
        c.principal.kind,
        PrincipalKind::Session { .. } | PrincipalKind::Token { .. }
    )
}

/// Refuses (403, saying `what` needs it) a caller that is not a user allowed `actions` in its
/// own organisation.
pub(crate) fn require_user(c: &Caller, actions: &[Action], what: &str) -> ApiResult<()> {
    if is_user(c) && actions.iter().all(|a| may(c, *a, c.org())) {
        Ok(())
    } else {
        Err(ApiError::new(ErrorKind::Forbidden, what.to_owned()))
    }
}

/// Appends `ev` to the audit trail off the response path.
pub(crate) fn audit_in_background(auth: &Authenticator, ev: vesalius_store::audit::AuditEvent) {
    auth.audit_later(vec![ev]);
}

/// Splits off `scope` from a query string: `(scope, the rest)`.
fn take_scope(query: &str) -> (Option<String>, String) {
    let mut scope = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            if k == "scope" {
                scope = Some(v.to_owned());
                false
            } else {
                true
            }
        })
        .collect();
    (scope, rest.join("&"))
}

/// The layer in front of the DICOMweb router (as nested under `/dicom-web`): QIDO-RS with
/// `scope=network` fans out; everything else passes through untouched. `scope=local` (or no
/// scope) is this site only; another value is a 400.
pub async fn network_scope(
    State(fed): State<Arc<Federation>>,
    req: Request,
    next: Next,
) -> Response {
    let query = req.uri().query().unwrap_or("").to_owned();
    if req.method() != Method::GET || !query.contains("scope=") {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    let (scope, rest) = take_scope(&query);
    let Some(key) = level_key(&path).filter(|_| !path.starts_with("/peers/")) else {
        return next.run(req).await;
    };
    let network = match scope.as_deref() {
        Some("network") => true,
        Some("local") | None => false,
        Some(other) => {
            return ApiError::new(
                ErrorKind::BadRequest,
                format!("scope must be local or network, not {other:?}"),
            )
            .into_response();
        }
    };
    let caller = req.extensions().get::<Caller>().cloned();
    let service = local_service(fed.opts.public_base_url.as_deref(), req.headers());
    let req = with_query(req, &path, &rest);
    let Some(caller) = caller.filter(|c| network && is_user(c)) else {
        // Not a user (or local scope): this site only, so a search never fans out twice.
        return next.run(req).await;
    };
    let peers = match fed.peers_for(&caller, None).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let pq = if rest.is_empty() {
        format!("/dicom-web{path}")
    } else {
        format!("/dicom-web{path}?{rest}")
    };
    let (local, remote) = tokio::join!(
        local_answer(next.run(req), fed.site_name(), fed.opts.max_json_bytes),
        fed.ask_all(&peers, &caller, &pq)
    );
    let local = match local {
        Ok(a) => a,
        // The local engine refused the query (a bad parameter): its answer stands.
        Err(resp) => return resp,
    };
    let mut answers = vec![local];
    answers.extend(remote);
    fed.audit_search(&caller, &rest, &answers);
    let merged = merge(key, &answers, &service);
    let mut resp = (StatusCode::OK, Json(merged)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/dicom+json"),
    );
    for a in answers.iter().filter(|a| a.status != SiteStatus::Ok) {
        // PS3.18 8.3.4.? / RFC 7234 5.5: warn-code 299, one per site that did not answer.
        let text = format!(
            "299 {}: \"site {} {}: {}\"",
            fed.site_name(),
            a.site,
            serde_json::to_value(a.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            a.error
                .as_deref()
                .unwrap_or("")
                .replace(['"', '\\', '\r', '\n'], " ")
        );
        if let Ok(v) = HeaderValue::from_str(&text) {
            h.append(header::WARNING, v);
        }
    }
    resp
}

fn with_query(req: Request, path: &str, query: &str) -> Request {
    let (mut parts, body) = req.into_parts();
    let pq = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    if let Ok(uri) = pq.parse() {
        parts.uri = uri;
    }
    Request::from_parts(parts, body)
}

/// This site's answer from the local QIDO-RS response, or that response itself when it is an
/// error.
async fn local_answer(
    resp: impl Future<Output = Response>,
    site: &str,
    limit: usize,
) -> Result<SiteAnswer, Response> {
    let started = Instant::now();
    let resp = resp.await;
    let status = resp.status();
    if !status.is_success() {
        return Err(resp);
    }
    let body = axum::body::to_bytes(resp.into_body(), limit)
        .await
        .map_err(|e| {
            ApiError::new(ErrorKind::Internal, format!("local answer: {e}")).into_response()
        })?;
    let mut a = SiteAnswer::new(site, true);
    a.results = if body.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(ErrorKind::Internal, format!("local answer: {e}")).into_response()
        })?
    };
    a.status = SiteStatus::Ok;
    a.count = a.results.len();
    a.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(a)
}

/// `GET /api/v1/search?…`: studies across this site and its peers, as JSON for people and
/// apps. Parameters are QIDO-RS study-level ones (`PatientID`, `PatientName`, `StudyDate`,
/// `ModalitiesInStudy`, `AccessionNumber`, `StudyDescription`, `fuzzymatching`, …) plus
/// `peers=a,b` (only these peers), `scope=local|network` (default network), a page of the
/// merged list (`orderby`, `limit`, `offset`: [`SearchPage`]) and the worklist's `priority`,
/// `status` and `site` ([`worklist`]).
pub async fn search(
    State(fed): State<Arc<Federation>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> ApiResult<Response> {
    let caller = caller_of(caller)?;
    require_user(
        &caller,
        &[Action::Query],
        "searching needs a user allowed to query in an organisation",
    )?;
    let mut only: Option<Vec<String>> = None;
    let mut network = true;
    let mut qido: Vec<(String, String)> = Vec::new();
    let mut page = SearchPage::default();
    let mut filter = worklist::WorklistFilter::default();
    let bad = |m: String| ApiError::new(ErrorKind::BadRequest, m);
    for (k, v) in params {
        match k.as_str() {
            "limit" | "offset" => {
                let n: usize = v
                    .parse()
                    .map_err(|_| bad(format!("{k} must be a whole number, not {v:?}")))?;
                if k == "limit" {
                    page.limit = n;
                } else {
                    page.offset = n;
                }
            }
            "orderby" if v == "priority" => {
                page.priority = true;
                page.order = StudyOrder::DateDesc;
                page.orderby = "-StudyDate".into();
            }
            "orderby" => {
                page.order = StudyOrder::parse(&v).ok_or_else(|| {
                    bad(format!(
                        "orderby must be -StudyDate, StudyDate, PatientName or priority, not {v:?}"
                    ))
                })?;
                page.orderby = v;
            }
            "priority" => {
                filter.min_priority = Some(
                    v.parse()
                        .map_err(|_| bad(format!("priority must be a whole number, not {v:?}")))?,
                )
            }
            "status" => {
                filter.status = Some(worklist::Delivery::parse(&v).ok_or_else(|| {
                    bad(format!(
                        "status must be arriving, complete or none, not {v:?}"
                    ))
                })?)
            }
            "count" => {
                page.count = match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad(format!("count must be true or false, not {v:?}"))),
                }
            }
            "site" if !v.trim().is_empty() => filter.site = Some(v.trim().to_owned()),
            "site" => {}
            "peers" => {
                only = Some(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                )
            }
            "scope" => match v.as_str() {
                "network" => network = true,
                "local" => network = false,
                other => {
                    return Err(bad(format!(
                        "scope must be local or network, not {other:?}"
                    )));
                }
            },
            _ => qido.push((k, v)),
        }
    }
    if page.limit == 0 || page.offset + page.limit > MAX_SEARCH_DEPTH {
        return Err(bad(format!(
            "limit must be at least 1 and offset + limit at most {MAX_SEARCH_DEPTH} (narrow the filters)"
        )));
    }
    for extra in ["IssuerOfPatientID", "ModalitiesInStudy", "StudyDescription"] {
        qido.push(("includefield".into(), extra.into()));
    }
    let ask = worklist::Ask {
        qido,
        page,
        filter,
        network,
        only,
    };
    Ok(match fed.search_page(&caller, &headers, ask).await {
        Ok(v) => Json(v).into_response(),
        Err(resp) => *resp,
    })
}

/// The deepest a federated search pages: `offset + limit` (each site is asked that many).
pub const MAX_SEARCH_DEPTH: usize = 500;

/// A page of the federated search (`GET /api/v1/search?limit=&offset=&orderby=`).
///
/// Semantics: every site is asked for its first `offset + limit` (+ 1) studies in the page's
/// order (QIDO-RS `limit` and our vendor `orderby`, see [`StudyOrder`]); the answers are
/// merged (a study held by several sites once), sorted again in that order, and
/// `[offset, offset + limit)` of the merge is the page. The first `offset + limit` of the merged
/// order are always among the sites' first `offset + limit`, so a page is exact whatever the
/// number of sites, at the cost of asking deeper for later pages ([`MAX_SEARCH_DEPTH`]). The
/// sort is stable: studies equal in the key (same date, same name) keep each site's order,
/// and ties between sites may order differently from page to page. A plain DICOMweb peer that
/// ignores `orderby` answers in its own order; its studies are still sorted within what it sent.
#[derive(Debug, Clone)]
struct SearchPage {
    offset: usize,
    limit: usize,
    order: StudyOrder,
    /// The `orderby` as given (passed on to the sites), empty when absent.
    orderby: String,
    /// `orderby=priority`: arrivals at a priority above 0 first ([`worklist`]); the sites
    /// are asked newest first.
    priority: bool,
    /// `count=true`: every site is asked at least [`MAX_SEARCH_DEPTH`] deep, so that `total`
    /// is known whenever none holds more (the worklist's "Studies 26–50 of 73").
    count: bool,
}

impl Default for SearchPage {
    fn default() -> Self {
        SearchPage {
            offset: 0,
            limit: 500,
            order: StudyOrder::DateDesc,
            orderby: String::new(),
            priority: false,
            count: false,
        }
    }
}

impl SearchPage {
    /// Sorts study summaries in the page's order (stable; the index's keys: the study date,
    /// the upper-cased patient name).
    fn sort(&self, studies: &mut [Value]) {
        let text = |s: &Value, k: &str| s[k].as_str().unwrap_or("").to_owned();
        match self.order {
            StudyOrder::DateDesc => {
                studies.sort_by_key(|s| std::cmp::Reverse(text(s, "study_date")))
            }
            StudyOrder::DateAsc => studies.sort_by_key(|s| text(s, "study_date")),
            StudyOrder::PatientName => {
                studies.sort_by_key(|s| text(s, "patient_name").to_uppercase())
            }
        }
    }
}

/// A study of a federated answer as flat JSON.
fn study_summary(s: &Value, here: &str) -> Value {
    let f = |tag: &str| first_str(s, tag);
    let sites: Vec<String> = s
        .get(SITES_TAG)
        .and_then(|v| v.get("Value"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let held_here = sites.first().is_some_and(|x| x == here);
    let modalities: Vec<Value> = s
        .get("00080061")
        .and_then(|v| v.get("Value"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let uid = f("0020000D").unwrap_or_default();
    let view = if held_here {
        format!("/dicom-web/studies/{uid}")
    } else {
        format!(
            "/dicom-web/peers/{}/studies/{uid}",
            sites.first().map(String::as_str).unwrap_or("")
        )
    };
    json!({
        "study_instance_uid": uid,
        "patient_name": f("00100010"),
        "patient_id": f("00100020"),
        "issuer_of_patient_id": f("00100021"),
        "patient_birth_date": f("00100030"),
        "patient_sex": f("00100040"),
        "study_date": f("00080020"),
        "study_time": f("00080030"),
        "accession_number": f("00080050"),
        "study_description": f("00081030"),
        "modalities": modalities,
        "series": f("00201206").and_then(|n| n.parse::<u64>().ok()),
        "instances": f("00201208").and_then(|n| n.parse::<u64>().ok()),
        "local": held_here,
        "site": sites.first(),
        "sites": sites,
        "retrieve_url": f("00081190"),
        "dicomweb_path": view,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study(uid: &str, url: &str) -> Value {
        json!({
            "0020000D": {"vr": "UI", "Value": [uid]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE"}]},
            "00081190": {"vr": "UR", "Value": [url]},
        })
    }

    fn answer(site: &str, local: bool, results: Vec<Value>) -> SiteAnswer {
        SiteAnswer {
            results,
            status: SiteStatus::Ok,
            ..SiteAnswer::new(site, local)
        }
    }

    #[test]
    fn merge_deduplicates_labels_and_rewrites_peer_urls() {
        let here = answer(
            "hub",
            true,
            vec![study("1.1", "http://hub:80/dicom-web/studies/1.1")],
        );
        let a = answer(
            "spoke-a",
            false,
            vec![
                study("1.1", "http://a:81/dicom-web/studies/1.1"),
                study("1.2", "http://a:81/dicom-web/studies/1.2"),
            ],
        );
        let b = answer(
            "spoke-b",
            false,
            vec![study("1.2", "https://b/x/dicom-web/studies/1.2")],
        );
        let m = merge("0020000D", &[here, a, b], "http://hub:80/dicom-web");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0][SITES_TAG]["Value"], json!(["hub", "spoke-a"]));
        assert_eq!(
            first_str(&m[0], "00081190").unwrap(),
            "http://hub:80/dicom-web/studies/1.1",
            "this site's own URL stays"
        );
        assert_eq!(m[1][SITES_TAG]["Value"], json!(["spoke-a", "spoke-b"]));
        assert_eq!(
            first_str(&m[1], "00081190").unwrap(),
            "http://hub:80/dicom-web/peers/spoke-a/studies/1.2"
        );
        assert_eq!(m[1][PRIVATE_CREATOR_TAG]["Value"], json!([PRIVATE_CREATOR]));
    }

    #[test]
    fn scope_is_split_off_and_levels_found() {
        assert_eq!(
            take_scope("PatientID=1&scope=network&limit=5"),
            (Some("network".into()), "PatientID=1&limit=5".into())
        );
        assert_eq!(take_scope("limit=5"), (None, "limit=5".into()));
        assert_eq!(level_key("/studies"), Some("0020000D"));
        assert_eq!(level_key("/studies/1.2/series"), Some("0020000E"));
        assert_eq!(
            level_key("/studies/1.2/series/3/instances"),
            Some("00080018")
        );
        assert_eq!(level_key("/studies/1.2/metadata"), None);
    }

    #[test]
    fn only_dicomweb_urls_are_rewritten() {
        assert_eq!(
            rewrite_url(
                "http://a/dicom-web/studies/1/bulkdata/x",
                "p",
                "http://h/dicom-web"
            )
            .as_deref(),
            Some("http://h/dicom-web/peers/p/studies/1/bulkdata/x")
        );
        assert_eq!(rewrite_url("1.2.840", "p", "http://h/dicom-web"), None);
        assert_eq!(
            rewrite_url("http://a/other/x", "p", "http://h/dicom-web"),
            None
        );
    }

    #[test]
    fn local_service_from_host_or_public_url() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert_eq!(local_service(None, &h), "http://127.0.0.1:8080/dicom-web");
        assert_eq!(
            local_service(Some("https://pacs.example.org/"), &h),
            "https://pacs.example.org/dicom-web"
        );
        h.insert(header::HOST, HeaderValue::from_static("evil\"host"));
        assert_eq!(local_service(None, &h), "http://localhost/dicom-web");
    }
}
