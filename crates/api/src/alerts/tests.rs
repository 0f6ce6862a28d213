//! The engine with the in-memory store and an injected clock: rule matching, escalation timing,
//! webhook signatures and retries (against a real HTTP server on loopback).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use vesalius_store::alerts::*;
use vesalius_store::memory_directory::{MemoryAuditLog, MemoryDirectory};

use super::*;

fn rule(id: &str, kind: AlertKind, threshold: i64) -> AlertRule {
    AlertRule {
        id: id.into(),
        org: "org1".into(),
        name: id.into(),
        kind,
        threshold,
        escalation: vec![],
        escalate_after_ms: 0,
        enabled: true,
        created_ms: 0,
    }
}

fn arrival(org: &str, priority: i32) -> AlertSignal {
    AlertSignal::Arrival {
        org: org.into(),
        study_uid: "1.2.3".into(),
        from_peer: "spoke".into(),
        priority,
        instances: 24,
    }
}

#[test]
fn rules_match_their_kind_organisation_and_threshold() {
    let day = 86_400_000;
    let stroke = rule("r", AlertKind::StrokeArrival, 50);
    let m = matches(&stroke, &arrival("org1", 100), 5, day).expect("stroke");
    assert_eq!(m.title, "Stroke-priority study arrived from spoke");
    assert_eq!(m.study_uid.as_deref(), Some("1.2.3"));
    assert_eq!(m.details["priority"], 100);
    assert!(matches(&stroke, &arrival("org1", 49), 5, day).is_none());
    assert!(matches(&stroke, &arrival("org2", 100), 5, day).is_none());
    let mut off = stroke.clone();
    off.enabled = false;
    assert!(matches(&off, &arrival("org1", 100), 5, day).is_none());
    let complete = rule("c", AlertKind::StudyComplete, 0);
    assert!(matches(&complete, &arrival("org1", 0), 5, day).is_some());
    assert!(matches(&complete, &AlertSignal::DiskFree { free_bytes: 1 }, 5, day).is_none());

    let down = rule("p", AlertKind::PeerDown, 5);
    let sig = AlertSignal::PeerDown {
        org: "org1".into(),
        peer: "spoke".into(),
        since_ms: 0,
        error: "connection refused".into(),
    };
    assert!(matches(&down, &sig, 4 * 60_000, day).is_none());
    let m = matches(&down, &sig, 5 * 60_000, day).expect("down for 5 min");
    assert_eq!(m.title, "Peer spoke unreachable for 5 min");
    // One outage, one key, however often it is seen.
    assert_eq!(matches(&down, &sig, 50 * 60_000, day).unwrap().key, m.key);

    let disk = rule("d", AlertKind::DiskLow, 1_000);
    assert!(matches(&disk, &AlertSignal::DiskFree { free_bytes: 1_000 }, 5, day).is_none());
    let a = matches(&disk, &AlertSignal::DiskFree { free_bytes: 999 }, 5, day).unwrap();
    let b = matches(
        &disk,
        &AlertSignal::DiskFree { free_bytes: 10 },
        day - 1,
        day,
    )
    .unwrap();
    let c = matches(
        &disk,
        &AlertSignal::DiskFree { free_bytes: 10 },
        day + 5,
        day,
    )
    .unwrap();
    assert_eq!(a.key, b.key, "at most one a day");
    assert_ne!(a.key, c.key, "again the next day");

    let cert = rule("t", AlertKind::CertificateExpiry, 14);
    let sig = |days: i64| AlertSignal::Certificate {
        not_after_ms: days * day,
    };
    assert!(matches(&cert, &sig(15), 0, day).is_none());
    assert_eq!(
        matches(&cert, &sig(13), 0, day).unwrap().title,
        "The HTTPS certificate expires in 13 days"
    );
    assert_eq!(
        matches(&cert, &sig(0), day, day).unwrap().title,
        "The HTTPS certificate has expired"
    );
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let (b, m) = (Duration::from_millis(100), Duration::from_millis(1000));
    let v: Vec<i64> = (1..=6).map(|a| backoff_ms(b, m, a)).collect();
    assert_eq!(v, vec![100, 200, 400, 800, 1000, 1000]);
    assert_eq!(backoff_ms(b, m, 500), 1000);
}

#[test]
fn webhook_signatures_are_hmac_sha256_over_timestamp_and_body() {
    // Computed independently: python3 -c 'import hmac,hashlib;
    // print(hmac.new(b"0123456789abcdef", b"1765100000.{\"a\":1}", hashlib.sha256).hexdigest())'
    let sig = webhook::signature("0123456789abcdef", 1_765_100_000, br#"{"a":1}"#);
    assert_eq!(
        sig,
        "v1=1a9e4be1474ee7e4009dd4ca5d346887822d2e6d016d82f9a2da5f740218d330"
    );
    let body = br#"{"a":1}"#;
    assert!(webhook::verify(
        "0123456789abcdef",
        1_765_100_000,
        body,
        &sig,
        1_765_100_100,
        300
    ));
    assert!(!webhook::verify(
        "0123456789abcdef",
        1_765_100_000,
        br#"{"a":2}"#,
        &sig,
        1_765_100_000,
        300
    ));
    assert!(!webhook::verify(
        "another-secret-0",
        1_765_100_000,
        body,
        &sig,
        1_765_100_000,
        300
    ));
    assert!(
        !webhook::verify(
            "0123456789abcdef",
            1_765_100_000,
            body,
            &sig,
            1_765_101_000,
            300
        ),
        "too old"
    );
}

struct Fixture {
    alerts: Arc<Alerts>,
    store: Arc<MemoryAlertStore>,
    clock: Arc<AtomicI64>,
    events: Arc<StudyEvents>,
}

fn fixture(opts: AlertOptions) -> Fixture {
    let audit = Arc::new(MemoryAuditLog::default());
    let store = Arc::new(MemoryAlertStore::new(audit.clone()));
    let dir = Arc::new(MemoryDirectory::new(audit));
    let events = Arc::new(StudyEvents::new());
    let clock = Arc::new(AtomicI64::new(1_000_000));
    let c = clock.clone();
    let alerts = Alerts::new(store.clone(), dir, events.clone(), opts)
        .unwrap()
        .with_clock(Arc::new(move || c.load(Ordering::SeqCst)));
    Fixture {
        alerts: Arc::new(alerts),
        store,
        clock,
        events,
    }
}

fn sub(
    id: &str,
    rule: &str,
    user: &str,
    channel: Channel,
    target: &str,
    esc: bool,
) -> Subscription {
    Subscription {
        id: id.into(),
        rule_id: rule.into(),
        org: "org1".into(),
        username: user.into(),
        channel,
        target: target.into(),
        secret: "0123456789abcdef".into(),
        escalation_only: esc,
        created_ms: 0,
    }
}

#[tokio::test]
async fn unacknowledged_alerts_escalate_in_turn_and_acknowledged_ones_do_not() {
    let f = fixture(AlertOptions::default());
    let mut r = rule("r1", AlertKind::StrokeArrival, 50);
    r.escalation = vec!["bob".into(), "carol".into()];
    r.escalate_after_ms = 1000;
    f.store
        .apply_alerts(
            vec![
                AlertChange::PutRule(r),
                AlertChange::PutSubscription(sub("s1", "r1", "alice", Channel::InApp, "", false)),
                AlertChange::PutSubscription(sub("s2", "r1", "bob", Channel::InApp, "", true)),
            ],
            vec![],
        )
        .await
        .unwrap();
    let mut rx = f.events.subscribe();
    assert_eq!(f.alerts.signal(&arrival("org1", 100)).await.unwrap(), 1);
    // The same event again raises nothing.
    assert_eq!(f.alerts.signal(&arrival("org1", 100)).await.unwrap(), 0);
    let first = f.store.alerts_of("alice", true, 10).await.unwrap();
    assert_eq!(first.len(), 1, "bob subscribed for escalations only");
    assert_eq!(first[0].link.as_deref(), Some("/view/1.2.3"));
    assert!(
        f.store
            .alerts_of("bob", false, 10)
            .await
            .unwrap()
            .is_empty()
    );
    match rx.try_recv().unwrap() {
        StudyEvent::Alert { user, alert, .. } => {
            assert_eq!(user, "alice");
            assert_eq!(alert["link"], "/view/1.2.3");
            assert!(alert.get("org").is_none());
        }
        e => panic!("{e:?}"),
    }

    f.clock.fetch_add(999, Ordering::SeqCst);
    assert_eq!(f.alerts.escalate_due().await.unwrap(), 0, "not yet");
    f.clock.fetch_add(1, Ordering::SeqCst);
    assert_eq!(f.alerts.escalate_due().await.unwrap(), 1);
    assert_eq!(f.alerts.escalate_due().await.unwrap(), 0, "once");
    let bob = f.store.alerts_of("bob", true, 10).await.unwrap();
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].step, 1);
    assert_eq!(bob[0].chain, first[0].chain);
    f.clock.fetch_add(1000, Ordering::SeqCst);
    assert_eq!(f.alerts.escalate_due().await.unwrap(), 1);
    assert_eq!(f.store.alerts_of("carol", true, 10).await.unwrap().len(), 1);
    // The list is done: nothing further.
    f.clock.fetch_add(10_000, Ordering::SeqCst);
    assert_eq!(f.alerts.escalate_due().await.unwrap(), 0);

    // Another study, acknowledged in time: no escalation.
    let other = AlertSignal::Arrival {
        org: "org1".into(),
        study_uid: "1.2.4".into(),
        from_peer: "spoke".into(),
        priority: 100,
        instances: 1,
    };
    assert_eq!(f.alerts.signal(&other).await.unwrap(), 1);
    let a = f.store.alerts_of("alice", true, 10).await.unwrap();
    let a = a
        .iter()
        .find(|a| a.study_uid.as_deref() == Some("1.2.4"))
        .unwrap();
    f.clock.fetch_add(500, Ordering::SeqCst);
    while rx.try_recv().is_ok() {}
    assert!(
        f.alerts
            .acknowledge(&a.chain, "alice", vec![])
            .await
            .unwrap()
    );
    assert!(
        !f.alerts
            .acknowledge(&a.chain, "alice", vec![])
            .await
            .unwrap()
    );
    // The acknowledgement reaches the recipient's open app.
    match rx.try_recv().unwrap() {
        StudyEvent::Alert { user, alert, .. } => {
            assert_eq!(user, "alice");
            assert_eq!(alert["acknowledged_by"], "alice");
            assert!(alert["acknowledged_ms"].is_i64());
        }
        e => panic!("{e:?}"),
    }
    assert!(rx.try_recv().is_err(), "once");
    f.clock.fetch_add(5000, Ordering::SeqCst);
    assert_eq!(f.alerts.escalate_due().await.unwrap(), 0);
    assert_eq!(f.store.alerts_of("bob", false, 10).await.unwrap().len(), 1);
}

type Seen = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// A webhook receiver on loopback answering `statuses` in turn (then 200).
async fn receiver(statuses: Vec<u16>) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let left = Arc::new(Mutex::new(statuses));
    let s2 = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |h: HeaderMap, body: axum::body::Bytes| {
            let (seen, left) = (s2.clone(), left.clone());
            async move {
                seen.lock().unwrap().push((h, body.to_vec()));
                let mut l = left.lock().unwrap();
                let code = if l.is_empty() { 200 } else { l.remove(0) };
                StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn webhooks_are_signed_and_retried_with_capped_backoff() {
    let (url, seen) = receiver(vec![503, 500]).await;
    let f = fixture(AlertOptions {
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_millis(150),
        base_url: "https://pacs.example".into(),
        // The receiver is on loopback.
        webhook_allow_private: true,
        ..Default::default()
    });
    f.store
        .apply_alerts(
            vec![
                AlertChange::PutRule(rule("r1", AlertKind::StudyComplete, 0)),
                AlertChange::PutSubscription(sub(
                    "s1",
                    "r1",
                    "alice",
                    Channel::Webhook,
                    &url,
                    false,
                )),
            ],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(f.alerts.signal(&arrival("org1", 0)).await.unwrap(), 1);
    let alert = f.store.alerts_of("alice", true, 1).await.unwrap().remove(0);
    let t0 = f.clock.load(Ordering::SeqCst);
    assert_eq!(f.alerts.deliver_due().await.unwrap(), 0, "503");
    let d = f.store.deliveries(&alert.id).await.unwrap().remove(0);
    assert_eq!(
        (d.state, d.attempts, d.next_ms),
        (DeliveryState::Pending, 1, t0 + 100)
    );
    assert_eq!(f.alerts.deliver_due().await.unwrap(), 0, "not due yet");
    f.clock.fetch_add(100, Ordering::SeqCst);
    assert_eq!(f.alerts.deliver_due().await.unwrap(), 0, "500");
    let d = f.store.deliveries(&alert.id).await.unwrap().remove(0);
    assert_eq!(d.next_ms, t0 + 100 + 150, "capped");
    f.clock.fetch_add(150, Ordering::SeqCst);
    assert_eq!(f.alerts.deliver_due().await.unwrap(), 1);
    let d = f.store.deliveries(&alert.id).await.unwrap().remove(0);
    assert_eq!((d.state, d.attempts), (DeliveryState::Sent, 3));

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for (h, body) in seen.iter() {
        let ts: i64 = h["x-vesalius-timestamp"].to_str().unwrap().parse().unwrap();
        let sig = h["x-vesalius-signature"].to_str().unwrap();
        assert!(webhook::verify("0123456789abcdef", ts, body, sig, ts, 0));
        assert_eq!(h["x-vesalius-delivery"].to_str().unwrap(), d.id);
    }
    let v: Value = serde_json::from_slice(&seen[2].1).unwrap();
    assert_eq!(v["alert"]["url"], "https://pacs.example/view/1.2.3");
    assert_eq!(v["alert"]["kind"], "study-complete");
    assert!(v["alert"].get("org").is_none());
}

#[tokio::test]
async fn a_refused_webhook_fails_at_once_and_attempts_are_bounded() {
    let (url, _) = receiver(vec![404]).await;
    let (down, _) = receiver(vec![503; 100]).await;
    let f = fixture(AlertOptions {
        retry_base: Duration::from_millis(1),
        retry_max: Duration::from_millis(1),
        max_attempts: 3,
        webhook_allow_private: true,
        ..Default::default()
    });
    f.store
        .apply_alerts(
            vec![
                AlertChange::PutRule(rule("r1", AlertKind::StudyComplete, 0)),
                AlertChange::PutSubscription(sub(
                    "s1",
                    "r1",
                    "alice",
                    Channel::Webhook,
                    &url,
                    false,
                )),
                AlertChange::PutSubscription(sub(
                    "s2",
                    "r1",
                    "alice",
                    Channel::Webhook,
                    &down,
                    false,
                )),
            ],
            vec![],
        )
        .await
        .unwrap();
    f.alerts.signal(&arrival("org1", 0)).await.unwrap();
    let alert = f.store.alerts_of("alice", true, 1).await.unwrap().remove(0);
    for _ in 0..5 {
        f.alerts.deliver_due().await.unwrap();
        f.clock.fetch_add(10, Ordering::SeqCst);
    }
    let d = f.store.deliveries(&alert.id).await.unwrap();
    let refused = d.iter().find(|d| d.target == url).unwrap();
    assert_eq!(
        (refused.state, refused.attempts),
        (DeliveryState::Failed, 1)
    );
    assert!(refused.last_error.contains("404"), "{}", refused.last_error);
    let retried = d.iter().find(|d| d.target == down).unwrap();
    assert_eq!(
        (retried.state, retried.attempts),
        (DeliveryState::Failed, 3)
    );
}

#[tokio::test]
async fn webhooks_inside_the_network_fail_at_send_time_unless_allowed() {
    // A subscription made while the site allowed loopback targets, sent after it stopped.
    let (url, seen) = receiver(vec![]).await;
    let f = fixture(AlertOptions::default());
    f.store
        .apply_alerts(
            vec![
                AlertChange::PutRule(rule("r1", AlertKind::StudyComplete, 0)),
                AlertChange::PutSubscription(sub(
                    "s1",
                    "r1",
                    "alice",
                    Channel::Webhook,
                    &url,
                    false,
                )),
            ],
            vec![],
        )
        .await
        .unwrap();
    f.alerts.signal(&arrival("org1", 0)).await.unwrap();
    let alert = f.store.alerts_of("alice", true, 1).await.unwrap().remove(0);
    assert_eq!(f.alerts.deliver_due().await.unwrap(), 0);
    let d = f.store.deliveries(&alert.id).await.unwrap().remove(0);
    assert_eq!((d.state, d.attempts), (DeliveryState::Failed, 1), "at once");
    assert!(
        d.last_error.contains("loopback") && d.last_error.contains("webhook_allow_private"),
        "{}",
        d.last_error
    );
    assert!(seen.lock().unwrap().is_empty(), "nothing was sent");

    // A name that resolves to loopback at send time (DNS rebinding): the guarded resolver
    // leaves nothing to connect to, and the error says why.
    let port = url.rsplit(':').next().unwrap().trim_end_matches("/hook");
    let by_name = format!("http://localhost:{port}/hook");
    let body = json!({"type": "alert", "delivery": "d1"});
    let e = webhook::post(&f.alerts.http, &by_name, "0123456789abcdef", &body, 1)
        .await
        .unwrap_err();
    assert!(e.permanent, "{e:?}");
    assert!(
        e.message
            .contains("localhost resolves to 127.0.0.1 (loopback)"),
        "{}",
        e.message
    );
    assert!(seen.lock().unwrap().is_empty(), "nothing was sent");
    // The same name with private targets allowed is delivered.
    let open = fixture(AlertOptions {
        webhook_allow_private: true,
        ..Default::default()
    });
    webhook::post(&open.alerts.http, &by_name, "0123456789abcdef", &body, 1)
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// `POST /api/v1/alerts/subscriptions` as alice (a clinician of org1) through the router.
async fn subscribe(f: &Fixture, body: Value) -> (StatusCode, Value) {
    let rq = axum::http::Request::post("/api/v1/alerts/subscriptions")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    as_alice(f, rq).await
}

/// `GET uri` as alice through the router.
async fn get_as_alice(f: &Fixture, uri: &str) -> (StatusCode, Value) {
    let rq = axum::http::Request::get(uri)
        .body(axum::body::Body::empty())
        .unwrap();
    as_alice(f, rq).await
}

/// Alice's 450 alerts (and 5 of bob's), with ties of `created_ms` (ordered by id), every
/// tenth acknowledged: the API pages them all, newest first, each once.
#[tokio::test]
async fn more_than_200_alerts_are_paged_by_a_cursor() {
    let f = fixture(AlertOptions::default());
    for i in 0..450 {
        let mut a = contract::alert(
            &format!("a{i:03}"),
            &format!("a{i:03}"),
            "alice",
            1000 + i / 3,
            None,
        );
        if i % 10 == 0 {
            a.acknowledged_ms = Some(5000);
            a.acknowledged_by = "alice".into();
        }
        assert!(
            f.store
                .raise(&format!("k{i}"), vec![a], vec![])
                .await
                .unwrap()
        );
    }
    for i in 0..5 {
        let a = contract::alert(&format!("b{i}"), &format!("b{i}"), "bob", 2000 + i, None);
        assert!(
            f.store
                .raise(&format!("kb{i}"), vec![a], vec![])
                .await
                .unwrap()
        );
    }
    let mut want: Vec<Alert> = f.store.alerts_of("alice", false, 1000).await.unwrap();
    sort_alerts(&mut want);
    let want: Vec<String> = want.into_iter().map(|a| a.id).collect();
    assert_eq!(want.len(), 450);

    // Default pages of 200: 200, 200, 50; the cursor of each answers the next.
    let (mut got, mut uri, mut sizes) = (Vec::new(), "/api/v1/alerts?all=true".to_string(), vec![]);
    loop {
        let (s, v) = get_as_alice(&f, &uri).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let page = v["alerts"].as_array().unwrap();
        sizes.push(page.len());
        got.extend(page.iter().map(|a| a["id"].as_str().unwrap().to_owned()));
        if !v["more"].as_bool().unwrap() {
            assert!(v["next_before"].is_null());
            break;
        }
        let next = v["next_before"].as_str().unwrap();
        uri = format!("/api/v1/alerts?all=true&before={next}");
    }
    assert_eq!(sizes, [200, 200, 50]);
    assert_eq!(got, want, "every alert once, newest first; none of bob's");

    // Open ones only, 100 at a time: 405 in five pages.
    let (mut open, mut before) = (0, None::<String>);
    for n in 1.. {
        let uri = match &before {
            Some(b) => format!("/api/v1/alerts?limit=100&before={b}"),
            None => "/api/v1/alerts?limit=100".into(),
        };
        let (s, v) = get_as_alice(&f, &uri).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let page = v["alerts"].as_array().unwrap();
        assert!(page.iter().all(|a| a["acknowledged_ms"].is_null()));
        open += page.len();
        before = v["next_before"].as_str().map(str::to_owned);
        if before.is_none() {
            assert_eq!(n, 5);
            break;
        }
    }
    assert_eq!(open, 405);

    // Bad paging parameters: 400 with a message.
    for uri in [
        "/api/v1/alerts?limit=0",
        "/api/v1/alerts?limit=501",
        "/api/v1/alerts?limit=ten",
        "/api/v1/alerts?before=1000",
        "/api/v1/alerts?before=x.a001",
        "/api/v1/alerts?before=1000.a%27%20OR%201",
        "/api/v1/alerts?page=2",
    ] {
        let (s, v) = get_as_alice(&f, uri).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {v}");
        assert_eq!(v["error"], "bad-request", "{uri}: {v}");
    }
}

/// `rq` through the router as alice (a clinician of org1).
async fn as_alice(f: &Fixture, rq: axum::http::Request<axum::body::Body>) -> (StatusCode, Value) {
    use tower::ServiceExt;
    let caller = vesalius_auth::Caller {
        principal: vesalius_auth::Principal::session(
            "u-alice",
            "alice",
            "org1",
            vesalius_store::directory::Role::Clinician,
        ),
        access: None,
        source: "127.0.0.1:1".into(),
        user_agent: "test".into(),
    };
    let app = router(f.alerts.clone()).layer(axum::Extension(caller));
    let resp = app.oneshot(rq).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_webhook_to_loopback_or_cloud_metadata_is_refused_by_default() {
    let f = fixture(AlertOptions::default());
    f.store
        .apply_alerts(
            vec![AlertChange::PutRule(rule(
                "r1",
                AlertKind::StrokeArrival,
                50,
            ))],
            vec![],
        )
        .await
        .unwrap();
    for target in [
        "http://127.0.0.1/hook",
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/hook",
    ] {
        let (s, v) = subscribe(
            &f,
            json!({"rule_id": "r1", "channel": "webhook", "target": target}),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{target}: {v}");
        assert_eq!(v["error"], "bad-request");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains("webhook_allow_private"), "{target}: {msg}");
    }
    assert!(f.store.subscriptions().await.unwrap().is_empty());
    let (s, v) = subscribe(
        &f,
        json!({"rule_id": "r1", "channel": "webhook", "target": "https://pager.example/hooks/v"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["secret"].as_str().unwrap().len(), 64);

    // A site that allows it (webhook receivers on its own network).
    let open = fixture(AlertOptions {
        webhook_allow_private: true,
        ..Default::default()
    });
    open.store
        .apply_alerts(
            vec![AlertChange::PutRule(rule(
                "r1",
                AlertKind::StrokeArrival,
                50,
            ))],
            vec![],
        )
        .await
        .unwrap();
    let (s, v) = subscribe(
        &open,
        json!({"rule_id": "r1", "channel": "webhook", "target": "http://127.0.0.1/hook"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}
