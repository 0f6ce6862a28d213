//! Images kept on devices (issue 6, `vesalius_api::device_cache`), in process against a real
//! site (SQLite, blobs on disk, HTTP on loopback): who may change an organisation's
//! `device_image_cache`, and the `Cache-Control` of the viewer's answers for a session acting in
//! north, on north's own study and on south's study seen through a grant, as the two settings
//! change (a grant's expiry bounds the lifetime, break-glass is never kept); `Clear-Site-Data`
//! on login, logout, an organisation switch and a stale session.

use serde_json::{Value, json};
use vesalius_auth::{Origin, Principal};
use vesalius_store::directory::{DirectoryChange, Grant, GrantSubject, Grantee, Role};
use vesalius_store::query::Scope;

use crate::site::RunningSite;
use crate::test_site;

const PASSWORD: &str = "a fine test password";

struct Session {
    cookie: String,
    csrf: String,
}

async fn login(http: &reqwest::Client, site: &RunningSite, user: &str) -> Session {
    let resp = http
        .post(format!("{}/api/v1/auth/login", site.base_url()))
        .json(&json!({"username": user, "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["clear-site-data"],
        "\"cache\"",
        "a new session starts with nothing kept"
    );
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("vesalius_session="))
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_owned();
    let body: Value = resp.json().await.expect("login body");
    Session {
        cookie,
        csrf: body["csrf"].as_str().expect("csrf").to_owned(),
    }
}

/// A request of `s`: status, headers, JSON body (or null).
async fn call(
    http: &reqwest::Client,
    site: &RunningSite,
    s: &Session,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut rq = http
        .request(
            method.parse().expect("method"),
            format!("{}{path}", site.base_url()),
        )
        .header("cookie", format!("vesalius_session={}", s.cookie))
        .header("x-csrf-token", &s.csrf);
    if let Some(b) = body {
        rq = rq.json(&b);
    }
    let resp = rq.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.bytes().await.expect("body");
    (
        status,
        headers,
        serde_json::from_slice(&text).unwrap_or(Value::Null),
    )
}

/// The `Cache-Control` of a 200 answer to `path` for `s`.
async fn cache_control(
    http: &reqwest::Client,
    site: &RunningSite,
    s: &Session,
    path: &str,
) -> String {
    let (status, h, _) = call(http, site, s, "GET", path, None).await;
    assert_eq!(status, 200, "{path}");
    h.get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The `max-age` of a `private, max-age=N` value.
fn max_age(cc: &str) -> Option<u64> {
    cc.strip_prefix("private, max-age=")?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r6_images_kept_on_devices_only_when_both_organisations_allow_it() {
    let dir = tempfile::tempdir().expect("dir");
    let site = RunningSite::start(test_site::config(dir.path(), "north"))
        .await
        .expect("site");
    let auth = &site.storage.auth;
    test_site::put_orgs(auth, &[("north", "north trust"), ("south", "south trust")]).await;
    for (name, org, role) in [
        ("reader", "north", Role::Clinician),
        ("boss", "north", Role::Admin),
        ("southboss", "south", Role::Admin),
    ] {
        test_site::user(auth, name, org, role, Some(PASSWORD)).await;
    }
    // One study in each; south's is granted to north.
    let mut paths = std::collections::HashMap::new();
    for (org, seed) in [("north", 81), ("south", 82)] {
        let mut opts = vesalius_synth::SynthOptions::new(seed);
        opts.slices = 2;
        opts.kinds = vec!["ct-head".parse().expect("kind")];
        let r = vesalius_synth::write_studies(&opts, &dir.path().join(format!("s{seed}")))
            .expect("synth");
        let ing = &site.storage.ingestor;
        test_site::ingest_files(ing, org, &r.files).await;
        let study = r.studies[0].clone();
        let i = ing
            .index()
            .instances(&Scope::study(&study))
            .await
            .expect("instances");
        let base = format!(
            "/dicom-web/studies/{study}/series/{}/instances/{}",
            i[0].series_uid, i[0].sop_instance_uid
        );
        paths.insert(org, (study, base));
    }
    auth.directory()
        .apply(
            vec![DirectoryChange::PutGrant(Grant {
                id: "g-south".into(),
                owner_org: "south".into(),
                grantee: Grantee::Org("north".into()),
                subject: GrantSubject::Study {
                    study_uid: paths["south"].0.clone(),
                },
                expires_ms: None,
                break_glass: false,
                reason: String::new(),
                created_by: "test".into(),
                created_ms: 0,
                revoked: false,
            })],
            vec![],
        )
        .await
        .expect("grant");
    let images = |org: &str| {
        let (study, base) = &paths[org];
        vec![
            format!("{base}/frames/1"),
            format!("{base}/rendered"),
            format!("{base}/thumbnail"),
            format!("/dicom-web/studies/{study}/thumbnail"),
        ]
    };
    let metadata = |org: &str| format!("/dicom-web/studies/{}/metadata", paths[org].0);

    let http = reqwest::Client::new();
    let reader = login(&http, &site, "reader").await;
    let boss = login(&http, &site, "boss").await;
    let southboss = login(&http, &site, "southboss").await;

    // Off by default: every answer is no-store.
    for org in ["north", "south"] {
        for p in images(org).iter().chain([&metadata(org)]) {
            assert_eq!(
                cache_control(&http, &site, &reader, p).await,
                "no-store",
                "{p}"
            );
        }
    }
    let (_, _, list) = call(&http, &site, &boss, "GET", "/api/v1/orgs", None).await;
    assert_eq!(
        list["orgs"][0]["device_image_cache"],
        json!({"allowed": false, "hours": 12, "max_hours": 168})
    );

    // Who may change it: north's administrator (not its clinician, not south's administrator,
    // who cannot even learn it exists); bad bodies are 400.
    let allow = |h: u32| json!({"device_image_cache": {"allowed": true, "hours": h}});
    let patch = |s: &Session, org: &str, b: Value| {
        let (http, site) = (&http, &site);
        let path = format!("/api/v1/orgs/{org}");
        let s = Session {
            cookie: s.cookie.clone(),
            csrf: s.csrf.clone(),
        };
        async move { call(http, site, &s, "PATCH", &path, Some(b)).await }
    };
    assert_eq!(patch(&reader, "north", allow(3)).await.0, 403);
    assert_eq!(patch(&southboss, "north", allow(3)).await.0, 404);
    assert_eq!(patch(&boss, "west", allow(3)).await.0, 404);
    for bad in [
        allow(0),
        allow(169),
        json!({"device_image_cache": {"allowed": "yes"}}),
        json!({"colour": "blue"}),
        json!({}),
    ] {
        let (status, _, body) = patch(&boss, "north", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    assert_eq!(
        cache_control(&http, &site, &reader, &images("north")[0]).await,
        "no-store"
    );
    let (status, _, body) = patch(&boss, "north", allow(3)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["device_image_cache"]["hours"], 3);
    let audited = site
        .storage
        .auth
        .audit_log()
        .search(&vesalius_store::audit::AuditFilter {
            org: Some("north".into()),
            action: Some("admin-change".into()),
            ..Default::default()
        })
        .await
        .expect("audit");
    assert!(
        audited
            .iter()
            .any(|r| r.event.details["change"] == "org-settings"),
        "the change is audited"
    );

    // North allows it: north's images are kept for up to 3 h, with Vary: Cookie; metadata is not.
    for p in images("north") {
        let (status, h, _) = call(&http, &site, &reader, "GET", &p, None).await;
        assert_eq!(status, 200);
        let cc = h["cache-control"].to_str().expect("text");
        let age = max_age(cc).unwrap_or_else(|| panic!("{p}: {cc}"));
        assert!((10_700..=10_800).contains(&age), "{p}: {cc}");
        assert_eq!(h["vary"], "Cookie", "{p}");
    }
    assert_eq!(
        cache_control(&http, &site, &reader, &metadata("north")).await,
        "no-store"
    );
    // An API token of the same user's organisation: never (not a browser's session).
    let (_, token) = auth
        .create_token(
            &Principal::system(),
            &auth
                .directory()
                .user_by_name("reader")
                .await
                .expect("user")
                .expect("reader")
                .id,
            "north",
            Role::Clinician,
            "t",
            None,
            Origin::default(),
        )
        .await
        .expect("token");
    let resp = http
        .get(format!("{}{}", site.base_url(), images("north")[0]))
        .bearer_auth(&token)
        .send()
        .await
        .expect("token request");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    // South's study through the grant: south has not allowed it, so not kept.
    for p in images("south") {
        assert_eq!(
            cache_control(&http, &site, &reader, &p).await,
            "no-store",
            "{p}"
        );
    }
    // South allows it for 1 h: kept for the shorter of the two.
    assert_eq!(patch(&southboss, "south", allow(1)).await.0, 200);
    for p in images("south") {
        let cc = cache_control(&http, &site, &reader, &p).await;
        let age = max_age(&cc).unwrap_or_else(|| panic!("{p}: {cc}"));
        assert!((3_500..=3_600).contains(&age), "{p}: {cc}");
    }
    // A grant ending in 10 minutes: never kept beyond it.
    let grant = |expires_ms: Option<i64>, break_glass: bool| {
        DirectoryChange::PutGrant(Grant {
            id: "g-south".into(),
            owner_org: "south".into(),
            grantee: Grantee::Org("north".into()),
            subject: GrantSubject::Study {
                study_uid: paths["south"].0.clone(),
            },
            expires_ms,
            break_glass,
            reason: "test".into(),
            created_by: "test".into(),
            created_ms: 0,
            revoked: false,
        })
    };
    let soon = auth.now_ms() + 600_000;
    auth.directory()
        .apply(vec![grant(Some(soon), false)], vec![])
        .await
        .expect("grant");
    let cc = cache_control(&http, &site, &reader, &images("south")[0]).await;
    let age = max_age(&cc).unwrap_or_else(|| panic!("{cc}"));
    assert!((500..=600).contains(&age), "{cc}");
    // Opened by break-glass: never kept.
    auth.directory()
        .apply(vec![grant(Some(soon), true)], vec![])
        .await
        .expect("grant");
    for p in images("south") {
        assert_eq!(
            cache_control(&http, &site, &reader, &p).await,
            "no-store",
            "{p}"
        );
    }
    assert!(
        max_age(&cache_control(&http, &site, &reader, &images("north")[0]).await).is_some(),
        "north's own study still is"
    );

    // Switching organisation empties the browser's cache (what was kept under the old
    // organisation's setting).
    let both = auth
        .directory()
        .user_by_name("southboss")
        .await
        .expect("user")
        .expect("southboss");
    auth.set_membership(
        &Principal::system(),
        &both.id,
        "north",
        Role::Clinician,
        Origin::default(),
    )
    .await
    .expect("join north");
    let (status, h, _) = call(
        &http,
        &site,
        &southboss,
        "POST",
        "/api/v1/auth/session/org",
        Some(json!({"org": "north"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["clear-site-data"], "\"cache\"");

    // North no longer allows it: nothing is kept, south's setting notwithstanding.
    let (status, _, _) = patch(
        &boss,
        "north",
        json!({"device_image_cache": {"allowed": false}}),
    )
    .await;
    assert_eq!(status, 200);
    for org in ["north", "south"] {
        for p in images(org) {
            assert_eq!(
                cache_control(&http, &site, &reader, &p).await,
                "no-store",
                "{p}"
            );
        }
    }

    // Everything kept is deleted at logout, and on the next request of a stale session.
    let (status, h, _) = call(&http, &site, &reader, "POST", "/api/v1/auth/logout", None).await;
    assert_eq!(status, 200);
    assert_eq!(h["clear-site-data"], "\"cache\"");
    let (status, h, _) = call(&http, &site, &reader, "GET", "/api/v1/auth/me", None).await;
    assert_eq!(status, 401);
    assert_eq!(h["clear-site-data"], "\"cache\"");
    let (status, h, _) = call(&http, &site, &reader, "GET", &images("north")[0], None).await;
    assert_eq!(status, 401);
    assert_eq!(h["clear-site-data"], "\"cache\"");
}
