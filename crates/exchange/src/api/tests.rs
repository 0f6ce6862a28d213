//! The management API over memory stores, with the caller put in by a test layer.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;
use vesalius_auth::audit_chain::SiteKey;
use vesalius_auth::peer::SiteIdentity;
use vesalius_auth::{Caller, Principal};
use vesalius_store::directory::Role;
use vesalius_store::memory::MemoryBlobStore;
use vesalius_store::memory_directory::MemoryAuditLog;
use vesalius_store::outbox::{MemoryOutbox, NewJob, Receipt, ReceiptKind};
use vesalius_store::registry::{DicomNode, MemoryRegistry, RegistryChange};
use vesalius_store::{AuditLog, Outbox, Registry};

use super::{ApiState, router};
use crate::{Exchange, ExchangeOptions, PeerClient, RouteObserver};

struct Fixture {
    state: ApiState,
    outbox: Arc<MemoryOutbox>,
    registry: Arc<MemoryRegistry>,
    audit: Arc<MemoryAuditLog>,
}

fn fixture() -> Fixture {
    let audit = Arc::new(MemoryAuditLog::new());
    let outbox = Arc::new(MemoryOutbox::new());
    let registry = Arc::new(MemoryRegistry::new(audit.clone()));
    let identity = Arc::new(SiteIdentity::from_site_key("here", &SiteKey::generate()));
    let client = PeerClient::new(identity, Duration::from_secs(5)).expect("client");
    let exchange = Exchange::new(
        outbox.clone(),
        Arc::new(vesalius_store::memory::MemoryIndex::default()),
        registry.clone(),
        Arc::new(MemoryBlobStore::default()),
        client,
        ExchangeOptions::default(),
    );
    let routes = Arc::new(RouteObserver::new(registry.clone(), 0));
    Fixture {
        state: ApiState::new(exchange, routes, "VESALIUS"),
        outbox,
        registry,
        audit,
    }
}

fn user(role: Role) -> Caller {
    Caller {
        principal: Principal::session("u1", &format!("a-{}", role.as_str()), "a", role),
        access: None,
        source: "127.0.0.1:1".into(),
        user_agent: "test".into(),
    }
}

/// An administrator of `org`.
fn admin_of(org: &str) -> Caller {
    Caller {
        principal: Principal::session("u-admin", &format!("admin-{org}"), org, Role::Admin),
        access: None,
        source: "127.0.0.1:1".into(),
        user_agent: "test".into(),
    }
}

/// Sends one request as `caller`; answers status and JSON body.
async fn call(
    f: &Fixture,
    caller: &Caller,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let app = router(f.state.clone()).layer(axum::Extension(caller.clone()));
    let mut rq = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(v) => {
            rq = rq.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let resp = app.oneshot(rq.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn put_node(f: &Fixture, name: &str, org: &str) {
    f.registry
        .apply(
            vec![RegistryChange::PutNode(DicomNode {
                name: name.into(),
                ae_title: "PACS".into(),
                host: "127.0.0.1".into(),
                port: 1,
                transfer_syntaxes: vec![],
                retrieve: Default::default(),
                query_model: Default::default(),
                org: org.into(),
                description: String::new(),
                managed: false,
                created_ms: 1,
            })],
            vec![],
        )
        .await
        .unwrap();
}

fn ct_route(org: &str) -> Value {
    json!({
        "name": "CT to the PACS",
        "org": org,
        "matcher": {"modality": ["CT"], "body_part": ["HEAD*"]},
        "destinations": ["node:pacs"],
        "priority": 100,
    })
}

#[tokio::test]
async fn admin_puts_lists_and_deletes_a_route_and_it_is_applied_at_once() {
    let f = fixture();
    put_node(&f, "pacs", "a").await;
    let admin = user(Role::Admin);
    let (s, v) = call(&f, &admin, "PUT", "/api/v1/routes/ct", Some(ct_route("a"))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["destinations"], json!([{"node": "pacs"}]));
    // The routing observer reloaded: the route is in force without waiting for the refresher.
    assert!(!f.state.routes.routes().is_empty());
    let (s, v) = call(&f, &admin, "GET", "/api/v1/routes", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["id"], "ct");
    let (s, _) = call(&f, &admin, "GET", "/api/v1/routes/ct", None).await;
    assert_eq!(s, StatusCode::OK);
    // The node cannot go while a route sends to it.
    let (s, v) = call(&f, &admin, "DELETE", "/api/v1/nodes/pacs", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, _) = call(&f, &admin, "DELETE", "/api/v1/routes/ct", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(f.state.routes.routes().is_empty());
    let (_, v) = call(&f, &admin, "GET", "/api/v1/routes", None).await;
    assert_eq!(v, json!([]));
    // Both changes were audited as admin-change, with the actor.
    let trail = f
        .audit
        .search(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .filter(|e| e.action == "admin-change")
        .map(|e| {
            (
                e.details["change"].as_str().unwrap().to_owned(),
                e.actor.name,
            )
        })
        .collect::<Vec<_>>();
    assert!(
        trail.contains(&("route-put".into(), "a-admin".into())),
        "{trail:?}"
    );
    assert!(
        trail.contains(&("route-delete".into(), "a-admin".into())),
        "{trail:?}"
    );
}

#[tokio::test]
async fn a_clinician_may_not_manage_routes_nor_an_admin_another_organisation() {
    let f = fixture();
    put_node(&f, "pacs", "a").await;
    let (s, v) = call(
        &f,
        &user(Role::Clinician),
        "PUT",
        "/api/v1/routes/ct",
        Some(ct_route("a")),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(v["error"], "forbidden");
    let (s, _) = call(
        &f,
        &user(Role::Admin),
        "PUT",
        "/api/v1/routes/ct",
        Some(ct_route("b")),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(f.registry.routes().await.unwrap().is_empty());
    // Lists and reads of records the caller may not manage show nothing.
    let (s, v) = call(&f, &user(Role::Clinician), "GET", "/api/v1/nodes", None).await;
    assert_eq!((s, v), (StatusCode::OK, json!([])));
    let (s, _) = call(
        &f,
        &user(Role::Clinician),
        "GET",
        "/api/v1/nodes/pacs",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&f, &user(Role::Clinician), "GET", "/api/v1/transfers", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn invalid_routes_are_refused() {
    let f = fixture();
    put_node(&f, "pacs", "a").await;
    put_node(&f, "pacs-b", "b").await;
    let admin = user(Role::Admin);
    let mut bad = ct_route("a");
    bad["matcher"]["study_description"] = json!("re:(unclosed");
    let (s, v) = call(&f, &admin, "PUT", "/api/v1/routes/ct", Some(bad)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"], "bad-request");
    let mut window = ct_route("a");
    window["matcher"]["time_of_day"] = json!("25:00-26:00");
    let (s, _) = call(&f, &admin, "PUT", "/api/v1/routes/ct", Some(window)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let mut missing = ct_route("a");
    missing["destinations"] = json!(["peer:nowhere"]);
    let (s, v) = call(&f, &admin, "PUT", "/api/v1/routes/ct", Some(missing)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let mut foreign = ct_route("a");
    foreign["destinations"] = json!(["node:pacs-b"]);
    let (s, _) = call(&f, &admin, "PUT", "/api/v1/routes/ct", Some(foreign)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call(
        &f,
        &admin,
        "PUT",
        "/api/v1/routes/c%20t",
        Some(ct_route("a")),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(f.registry.routes().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_parked_job_is_retried_and_the_transfer_is_summarised() {
    let f = fixture();
    put_node(&f, "pacs", "a").await;
    let job = |study: &str| NewJob {
        kind: "transfer".into(),
        queue: "node:pacs".into(),
        study_uid: study.into(),
        payload: r#"{"org":"a"}"#.into(),
        priority: 100,
        not_before_ms: 0,
        dedupe_key: None,
    };
    let ids = f.outbox.enqueue(vec![job("1.2.3")], 0).await.unwrap();
    f.outbox.lease("node:pacs", "w", 1, 0, 1000).await.unwrap();
    f.outbox
        .fail("w", ids[0], "association rejected", 0, 1)
        .await
        .unwrap();
    f.outbox
        .complete(
            "nobody",
            &[],
            vec![Receipt {
                org: "a".into(),
                queue: "node:pacs".into(),
                kind: ReceiptKind::Instance,
                study_uid: "1.2.3".into(),
                sop_instance_uid: "1.2.3.1".into(),
                sha256: "ab".into(),
                size: 10,
                delivered_ms: 5,
                verified: false,
                detail: "C-STORE 0x0000".into(),
            }],
        )
        .await
        .unwrap();
    let admin = user(Role::Admin);
    let (s, v) = call(&f, &admin, "GET", "/api/v1/transfers", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v[0]["queue"], "node:pacs");
    assert_eq!(v[0]["study_uid"], "1.2.3");
    assert_eq!(v[0]["priority"], 100);
    assert_eq!(
        (v[0]["parked"].as_u64(), v[0]["delivered"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(v[0]["last_error"], "association rejected");
    let (_, v) = call(
        &f,
        &admin,
        "GET",
        "/api/v1/transfers/jobs?state=parked",
        None,
    )
    .await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    let (s, _) = call(&f, &admin, "GET", "/api/v1/transfers/jobs?state=lost", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, v) = call(
        &f,
        &admin,
        "GET",
        "/api/v1/transfers/receipts?study=1.2.3",
        None,
    )
    .await;
    assert_eq!(v[0]["sop_instance_uid"], "1.2.3.1");

    // Another organisation's administrator sees none of it (issue 6) and cannot retry it.
    let admin_b = admin_of("b");
    for list in [
        "/api/v1/transfers",
        "/api/v1/transfers/jobs",
        "/api/v1/transfers/receipts",
        "/api/v1/transfers/receipts?study=1.2.3",
    ] {
        let (s, v) = call(&f, &admin_b, "GET", list, None).await;
        assert_eq!(s, StatusCode::OK, "{list}");
        assert_eq!(v, json!([]), "b's administrator sees a's {list}");
    }
    let uri = format!("/api/v1/transfers/jobs/{}/retry", ids[0]);
    let (s, v) = call(&f, &admin_b, "POST", &uri, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"], "not-found");
    let (s, _) = call(&f, &user(Role::Clinician), "POST", &uri, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = call(&f, &admin, "POST", &uri, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = call(&f, &admin, "GET", "/api/v1/transfers/jobs", None).await;
    assert_eq!(v[0]["state"], "ready");
    assert_eq!(v[0]["attempts"], 0);
    // Not parked any more: a second retry is a conflict.
    let (s, _) = call(&f, &admin, "POST", &uri, None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = call(&f, &admin, "POST", "/api/v1/transfers/jobs/999/retry", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// 130 studies to one node (a parked job each, and a receipt each): the three lists page by
/// `limit` and `offset`, every row once in the lists' order; deep and bad offsets are 400.
#[tokio::test]
async fn transfer_lists_page_by_limit_and_offset() {
    let f = fixture();
    put_node(&f, "pacs", "a").await;
    for i in 0..130i64 {
        let study = format!("1.2.{i}");
        let ids = f
            .outbox
            .enqueue(
                vec![NewJob {
                    kind: "transfer".into(),
                    queue: "node:pacs".into(),
                    study_uid: study.clone(),
                    payload: r#"{"org":"a"}"#.into(),
                    priority: 100,
                    not_before_ms: 0,
                    dedupe_key: None,
                }],
                i,
            )
            .await
            .unwrap();
        f.outbox.lease("node:pacs", "w", 1, i, 1000).await.unwrap();
        f.outbox.fail("w", ids[0], "refused", i, 1).await.unwrap();
        let receipt = Receipt {
            org: "a".into(),
            queue: "node:pacs".into(),
            kind: ReceiptKind::Instance,
            study_uid: study.clone(),
            sop_instance_uid: format!("{study}.1"),
            sha256: "ab".into(),
            size: 10,
            delivered_ms: 1000 + i,
            verified: true,
            detail: "C-STORE 0x0000".into(),
        };
        f.outbox
            .complete("nobody", &[], vec![receipt])
            .await
            .unwrap();
    }
    let admin = user(Role::Admin);
    for (list, key) in [
        ("/api/v1/transfers", "study_uid"),
        ("/api/v1/transfers/jobs?state=parked", "id"),
        ("/api/v1/transfers/receipts", "sop_instance_uid"),
    ] {
        let sep = if list.contains('?') { '&' } else { '?' };
        let (s, whole) = call(&f, &admin, "GET", &format!("{list}{sep}limit=1000"), None).await;
        assert_eq!(s, StatusCode::OK);
        let whole = whole.as_array().unwrap().clone();
        assert_eq!(whole.len(), 130, "{list}");
        let mut paged = Vec::new();
        for offset in (0..).step_by(50) {
            let uri = format!("{list}{sep}limit=50&offset={offset}");
            let (s, v) = call(&f, &admin, "GET", &uri, None).await;
            assert_eq!(s, StatusCode::OK, "{uri}");
            let page = v.as_array().unwrap().clone();
            let n = page.len();
            paged.extend(page);
            if n < 50 {
                assert_eq!(n, 30, "{uri}: the last page");
                break;
            }
        }
        assert_eq!(paged, whole, "{list}: every row once, in order");
        let keys: std::collections::BTreeSet<String> =
            paged.iter().map(|r| r[key].to_string()).collect();
        assert_eq!(keys.len(), 130, "{list}");
        let (s, v) = call(&f, &admin, "GET", &format!("{list}{sep}offset=10001"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{list}");
        assert_eq!(v["error"], "bad-request");
        let (s, _) = call(&f, &admin, "GET", &format!("{list}{sep}offset=-1"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{list}");
        let (_, v) = call(&f, &admin, "GET", &format!("{list}{sep}offset=200"), None).await;
        assert_eq!(v, json!([]), "{list}: past the end");
    }
    // Most recently active first: the newest study leads the summaries.
    let (_, v) = call(
        &f,
        &admin,
        "GET",
        "/api/v1/transfers?limit=2&offset=1",
        None,
    )
    .await;
    assert_eq!(v[0]["study_uid"], "1.2.128");
}

#[tokio::test]
async fn peers_are_validated_and_an_unreachable_one_is_reported() {
    let f = fixture();
    let admin = user(Role::Admin);
    let key = SiteIdentity::from_site_key("hub", &SiteKey::generate()).public_key();
    let peer = json!({"base_url": "http://127.0.0.1:1", "public_key": key, "org": "a"});
    let (s, v) = call(&f, &admin, "PUT", "/api/v1/peers/hub", Some(peer.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let mut plain = peer.clone();
    plain["base_url"] = json!("http://hub.example.org");
    let (s, _) = call(&f, &admin, "PUT", "/api/v1/peers/hub", Some(plain)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = call(&f, &admin, "POST", "/api/v1/peers/hub/ping", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["reachable"], false, "{v}");
    let (s, _) = call(
        &f,
        &user(Role::Service),
        "DELETE",
        "/api/v1/peers/hub",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(&f, &admin, "DELETE", "/api/v1/peers/hub", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&f, &admin, "DELETE", "/api/v1/peers/hub", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn arrivals_are_scoped_to_the_callers_organisation() {
    let f = fixture();
    let arrival = |org: &str| vesalius_store::registry::Arrival {
        org: org.into(),
        study_uid: format!("1.{org}"),
        from_peer: "hub".into(),
        priority: 100,
        manifest_instances: 3,
        complete_ms: 7,
        updated_ms: 7,
    };
    f.registry
        .apply(
            vec![
                RegistryChange::PutArrival(arrival("a")),
                RegistryChange::PutArrival(arrival("b")),
            ],
            vec![],
        )
        .await
        .unwrap();
    let (s, v) = call(&f, &user(Role::Clinician), "GET", "/api/v1/arrivals", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["org"], "a");
    let (_, v) = call(&f, &Caller::system(), "GET", "/api/v1/arrivals", None).await;
    assert_eq!(v.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn node_queries_and_retrievals_are_checked_queued_and_audited() {
    let f = fixture();
    put_node(&f, "pacs", "a").await;
    put_node(&f, "elsewhere", "b").await;
    let admin = user(Role::Admin);
    let studies = "/api/v1/nodes/pacs/studies";
    let (s, v) = call(&f, &admin, "GET", studies, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("PatientID"), "{v}");
    let (s, _) = call(
        &f,
        &admin,
        "GET",
        &format!("{studies}?PatientID=P&StudyDate=2024"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call(&f, &admin, "GET", &format!("{studies}?PatientName=x"), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unknown keys are refused");
    // Another organisation's node is not there for this administrator, nor for a clinician.
    let (s, _) = call(
        &f,
        &admin,
        "GET",
        "/api/v1/nodes/elsewhere/studies?PatientID=P",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(
        &f,
        &user(Role::Clinician),
        "GET",
        &format!("{studies}?PatientID=P"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The node (port 1) does not answer: 503, and the failed query is audited.
    let (s, v) = call(&f, &admin, "GET", &format!("{studies}?PatientID=P"), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"], "unavailable");
    let events = f.audit.records(1, 100).await.unwrap();
    let q = events
        .iter()
        .find(|r| r.event.action == "query")
        .expect("query audited");
    assert_eq!(q.event.details["node"], "pacs");
    assert_eq!(q.event.details["keys"]["PatientID"], "P");

    let retrieve = "/api/v1/nodes/pacs/retrieve";
    let (s, _) = call(
        &f,
        &admin,
        "POST",
        retrieve,
        Some(json!({"study_uid": "x.1"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let body = json!({"study_uid": "1.2.826.0.1.3680043.10.1137.7"});
    let (s, v) = call(&f, &admin, "POST", retrieve, Some(body.clone())).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["queue"], "retrieve:pacs");
    let (s, again) = call(&f, &admin, "POST", retrieve, Some(body)).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(again["job"], v["job"], "one job per study while pending");
    let jobs = f.outbox.jobs(&Default::default()).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job.kind, "retrieve");
    let events = f.audit.records(1, 100).await.unwrap();
    assert!(
        events
            .iter()
            .any(|r| r.event.details["change"] == "node-retrieve"),
        "retrieval audited"
    );
    let (s, _) = call(
        &f,
        &admin,
        "POST",
        "/api/v1/nodes/elsewhere/retrieve",
        Some(json!({"study_uid": "1.2.3"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn prefetch_routes_name_a_node_of_their_organisation() {
    let f = fixture();
    put_node(&f, "pacs", "a").await;
    put_node(&f, "elsewhere", "b").await;
    let admin = user(Role::Admin);
    let mut r = ct_route("a");
    r["destinations"] = json!(["prefetch:pacs?max=2&years=5"]);
    let (s, v) = call(&f, &admin, "PUT", "/api/v1/routes/priors", Some(r.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["destinations"],
        json!([{"prefetch": {"node": "pacs", "max": 2, "years": 5}}])
    );
    let (s, v) = call(&f, &admin, "DELETE", "/api/v1/nodes/pacs", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "a prefetch route uses it: {v}");
    r["destinations"] = json!(["prefetch:elsewhere"]);
    let (s, v) = call(&f, &admin, "PUT", "/api/v1/routes/priors2", Some(r.clone())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    r["destinations"] = json!(["prefetch:pacs?max=0"]);
    let (s, v) = call(&f, &admin, "PUT", "/api/v1/routes/priors2", Some(r.clone())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("max"), "{v}");
    // Relevant priors: the text and the tagged form say the same.
    r["destinations"] = json!(["prefetch:pacs?match=body-part,modality"]);
    let (s, v) = call(&f, &admin, "PUT", "/api/v1/routes/priors3", Some(r.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let tagged =
        json!([{"prefetch": {"node": "pacs", "max": 3, "match": ["modality", "body-part"]}}]);
    assert_eq!(v["destinations"], tagged);
    r["destinations"] = tagged.clone();
    let (s, v) = call(&f, &admin, "PUT", "/api/v1/routes/priors3", Some(r.clone())).await;
    assert_eq!((s, &v["destinations"]), (StatusCode::OK, &tagged), "{v}");
    r["destinations"] = json!(["prefetch:pacs?match=colour"]);
    let (s, v) = call(&f, &admin, "PUT", "/api/v1/routes/priors4", Some(r)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("body-part"), "{v}");
}

#[tokio::test]
async fn a_node_is_put_with_its_retrieval_method() {
    let f = fixture();
    let admin = user(Role::Admin);
    let body = json!({"ae_title": "PACS", "host": "10.0.0.9", "port": 104, "org": "a",
                      "retrieve": "get"});
    let (s, v) = call(&f, &admin, "PUT", "/api/v1/nodes/nat", Some(body.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["retrieve"], "get");
    let (_, v) = call(&f, &admin, "GET", "/api/v1/nodes/nat", None).await;
    assert_eq!(v["retrieve"], "get");
    let mut plain = body.clone();
    plain.as_object_mut().unwrap().remove("retrieve");
    let (_, v) = call(&f, &admin, "PUT", "/api/v1/nodes/nat", Some(plain)).await;
    assert_eq!(v["retrieve"], "move", "C-MOVE unless said otherwise");
    let mut bad = body;
    bad["retrieve"] = json!("ftp");
    let (s, v) = call(&f, &admin, "PUT", "/api/v1/nodes/nat", Some(bad)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}

/// Reads the event stream's body until `want` appears in it (or 5 s pass); answers what came.
async fn read_events_until(body: Body, want: &str) -> String {
    use futures::StreamExt;
    let mut frames = body.into_data_stream();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.contains(want) {
        match tokio::time::timeout_at(deadline, frames.next()).await {
            Ok(Some(Ok(b))) => seen.push_str(&String::from_utf8_lossy(&b)),
            _ => break,
        }
    }
    seen
}

#[tokio::test]
async fn r6_transfer_events_go_only_to_administrators_of_the_sending_organisation() {
    let f = fixture();
    let open = |caller: Caller| {
        let app = router(f.state.clone()).layer(axum::Extension(caller));
        let rq = Request::get("/api/v1/transfers/events")
            .body(Body::empty())
            .unwrap();
        async move { app.oneshot(rq).await.unwrap() }
    };
    // Both streams are subscribed once their answers' heads are back.
    let b = open(admin_of("b")).await;
    let a = open(admin_of("a")).await;
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    let a_study = "1.2.840.99.10";
    let events = |org: &str, study: &str| {
        [
            crate::ExchangeEvent::Delivered {
                org: org.into(),
                queue: "peer:hub".into(),
                study_uid: study.into(),
                instances: 3,
            },
            crate::ExchangeEvent::TransferComplete {
                org: org.into(),
                queue: "peer:hub".into(),
                study_uid: study.into(),
                instances: 3,
            },
            crate::ExchangeEvent::Parked {
                org: org.into(),
                queue: "peer:hub".into(),
                study_uid: study.into(),
                error: "refused".into(),
            },
        ]
    };
    // a's events first, then b's own (and one of no organisation, for the server only): when
    // b's last one arrives, a's had their turn.
    for e in events("a", a_study) {
        f.state.exchange.publish(e);
    }
    f.state.exchange.publish(crate::ExchangeEvent::Delivered {
        org: String::new(),
        queue: "analysis:x".into(),
        study_uid: "1.2.840.99.12".into(),
        instances: 1,
    });
    for e in events("b", "1.2.840.99.11") {
        f.state.exchange.publish(e);
    }
    let seen_b = read_events_until(b.into_body(), "event: parked").await;
    for kind in ["delivered", "transfer-complete", "parked"] {
        assert!(seen_b.contains(&format!("event: {kind}")), "{seen_b}");
    }
    assert!(seen_b.contains("1.2.840.99.11"), "{seen_b}");
    assert!(
        !seen_b.contains(a_study) && !seen_b.contains("\"org\":\"a\""),
        "b's administrator got a's events: {seen_b}"
    );
    assert!(!seen_b.contains("1.2.840.99.12"), "{seen_b}");
    let seen_a = read_events_until(a.into_body(), "event: parked").await;
    for kind in ["delivered", "transfer-complete", "parked"] {
        assert!(seen_a.contains(&format!("event: {kind}")), "{seen_a}");
    }
    assert!(seen_a.contains(a_study), "{seen_a}");
    assert!(
        !seen_a.contains("1.2.840.99.11") && !seen_a.contains("1.2.840.99.12"),
        "{seen_a}"
    );
}

#[tokio::test]
async fn r6_parked_events_go_only_to_administrators_of_the_jobs_organisation() {
    let f = fixture();
    let admin_of = |org: &str| Caller {
        principal: Principal::session("u-admin", &format!("admin-{org}"), org, Role::Admin),
        access: None,
        source: "127.0.0.1:1".into(),
        user_agent: "test".into(),
    };
    let open = |caller: Caller| {
        let app = router(f.state.clone()).layer(axum::Extension(caller));
        let rq = Request::get("/api/v1/transfers/events")
            .body(Body::empty())
            .unwrap();
        async move { app.oneshot(rq).await.unwrap() }
    };
    // Both streams are subscribed once their answers' heads are back.
    let b = open(admin_of("b")).await;
    let a = open(admin_of("a")).await;
    assert_eq!(b.status(), StatusCode::OK);
    let parked = |org: &str, study: &str| crate::ExchangeEvent::Parked {
        org: org.into(),
        queue: "node:pacs".into(),
        study_uid: study.into(),
        error: "association rejected".into(),
    };
    f.state.exchange.publish(parked("a", "1.2.840.99.1"));
    f.state.exchange.publish(parked("b", "1.2.840.99.2"));
    let seen_b = read_events_until(b.into_body(), "1.2.840.99.2").await;
    assert!(
        seen_b.contains("1.2.840.99.2"),
        "b's own parked job: {seen_b}"
    );
    assert!(
        !seen_b.contains("1.2.840.99.1"),
        "b's administrator got a's parked job: {seen_b}"
    );
    let seen_a = read_events_until(a.into_body(), "1.2.840.99.1").await;
    assert!(seen_a.contains("event: parked"), "{seen_a}");
    assert!(seen_a.contains("1.2.840.99.1"), "{seen_a}");
}
