//! A user of several organisations (issue 6, docs/security.md "Organisations of a session"), in
//! process against a real site (SQLite, blobs on disk, HTTP on loopback): a reader who is a
//! clinician of north and an administrator of south logs in with a password, switches the
//! session between them, and QIDO-RS, WADO-RS and the console's API answer for the active
//! organisation with the role held there; an organisation they are not a member of is refused;
//! their API token stays in north.

use serde_json::{Value, json};
use vesalius_auth::authenticator::NewUser;
use vesalius_auth::{Origin, Principal};
use vesalius_store::directory::{DirectoryChange, Membership, Org, Role};
use vesalius_store::ingest::IngestContext;

use crate::config::Config;
use crate::site::RunningSite;

const PASSWORD: &str = "a fine test password";

/// A two-slice synthetic CT head: its Study Instance UID and files.
fn study(dir: &std::path::Path, seed: u64) -> (String, Vec<Vec<u8>>) {
    let mut opts = vesalius_synth::SynthOptions::new(seed);
    opts.slices = 2;
    opts.kinds = vec!["ct-head".parse().expect("kind")];
    let r =
        vesalius_synth::write_studies(&opts, &dir.join(format!("synth-{seed}"))).expect("synth");
    let files = r
        .files
        .iter()
        .map(|f| std::fs::read(f).expect("file"))
        .collect();
    (r.studies[0].clone(), files)
}

/// How a request authenticates: the session cookie (with its CSRF token) or a bearer token.
enum Cred<'a> {
    Session { cookie: &'a str, csrf: &'a str },
    Token(&'a str),
}

async fn call(
    http: &reqwest::Client,
    site: &RunningSite,
    cred: &Cred<'_>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rq = http
        .request(
            method.parse().expect("method"),
            format!("{}{path}", site.base_url()),
        )
        .header("accept", "application/json");
    rq = match cred {
        Cred::Session { cookie, csrf } => rq
            .header("cookie", format!("vesalius_session={cookie}"))
            .header("x-csrf-token", *csrf),
        Cred::Token(t) => rq.bearer_auth(t),
    };
    if let Some(b) = body {
        rq = rq.json(&b);
    }
    let resp = rq.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The Study Instance UIDs QIDO-RS finds for `cred`.
async fn studies(http: &reqwest::Client, site: &RunningSite, cred: &Cred<'_>) -> Vec<String> {
    let (status, body) = call(http, site, cred, "GET", "/dicom-web/studies", None).await;
    assert!(status == 200 || status == 204, "QIDO-RS: {status} {body}");
    let mut uids: Vec<String> = body
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["0020000D"]["Value"][0].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    uids.sort();
    uids
}

/// The WADO-RS metadata status of `uid` for `cred`.
async fn metadata(http: &reqwest::Client, site: &RunningSite, cred: &Cred<'_>, uid: &str) -> u16 {
    let path = format!("/dicom-web/studies/{uid}/metadata");
    call(http, site, cred, "GET", &path, None).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r6_a_reader_of_two_organisations_switches_between_them() {
    let dir = tempfile::tempdir().expect("dir");
    let mut cfg = Config::default();
    cfg.storage.data_dir = dir.path().join("data");
    cfg.storage.org = "north".into();
    cfg.dicom.addr = "127.0.0.1:0".parse().expect("address");
    cfg.http.addr = "127.0.0.1:0".parse().expect("address");
    cfg.limits.min_free_bytes = 0;
    cfg.exchange.enabled = false;
    let site = RunningSite::start(cfg).await.expect("site");
    let auth = &site.storage.auth;
    let orgs = ["north", "south", "east"]
        .map(|o| {
            DirectoryChange::PutOrg(Org {
                id: o.into(),
                name: format!("{o} trust"),
                created_ms: 0,
            })
        })
        .to_vec();
    auth.directory().apply(orgs, vec![]).await.expect("orgs");
    let reader = auth
        .create_user(
            &Principal::system(),
            NewUser {
                username: "reader",
                display_name: "Reader",
                email: "",
                memberships: &[Membership {
                    org: "north".into(),
                    role: Role::Clinician,
                }],
                password: Some(PASSWORD),
                service: false,
                must_change_password: false,
            },
            Origin::default(),
        )
        .await
        .expect("user");
    auth.set_membership(
        &Principal::system(),
        &reader.id,
        "south",
        Role::Admin,
        Origin::default(),
    )
    .await
    .expect("join south");
    let (_, token) = auth
        .create_token(
            &Principal::system(),
            &reader.id,
            "north",
            Role::Clinician,
            "north",
            None,
            Origin::default(),
        )
        .await
        .expect("token");
    let mut uid = std::collections::HashMap::new();
    for (org, seed) in [("north", 71), ("south", 72)] {
        let (study_uid, files) = study(dir.path(), seed);
        let ing = &site.storage.ingestor;
        for b in &files {
            let mut spool = ing.spool().expect("spool");
            spool.write(b).expect("spool");
            let ctx = IngestContext {
                org: org.into(),
                source: "test".into(),
                ..Default::default()
            };
            ing.ingest(spool.finish().expect("spool"), &ctx)
                .await
                .expect("ingest");
        }
        uid.insert(org, study_uid);
    }
    let (north, south) = (uid["north"].clone(), uid["south"].clone());

    // A password login: in north, the first organisation.
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/api/v1/auth/login", site.base_url()))
        .json(&json!({"username": "reader", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status().as_u16(), 200);
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("vesalius_session="))
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_owned();
    let login: Value = resp.json().await.expect("login body");
    assert_eq!(login["org"], "north");
    let csrf = login["csrf"].as_str().expect("csrf").to_owned();
    let s = Cred::Session {
        cookie: &cookie,
        csrf: &csrf,
    };

    assert_eq!(studies(&http, &site, &s).await, vec![north.clone()]);
    assert_eq!(metadata(&http, &site, &s, &north).await, 200);
    assert_eq!(metadata(&http, &site, &s, &south).await, 404);
    assert_eq!(
        call(&http, &site, &s, "GET", "/api/v1/users", None).await.0,
        403
    );
    let (_, me) = call(&http, &site, &s, "GET", "/api/v1/auth/me", None).await;
    let listed: Vec<(&str, &str)> = me["orgs"]
        .as_array()
        .expect("orgs")
        .iter()
        .map(|o| {
            (
                o["id"].as_str().unwrap_or(""),
                o["role"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(listed, [("north", "clinician"), ("south", "admin")]);

    // Not a member of east (which exists) nor of a missing organisation: 403, nothing changes.
    for other in ["east", "west"] {
        let (status, body) = call(
            &http,
            &site,
            &s,
            "POST",
            "/api/v1/auth/session/org",
            Some(json!({"org": other})),
        )
        .await;
        assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    }
    assert_eq!(studies(&http, &site, &s).await, vec![north.clone()]);

    // The app's event stream, opened in north (another tab, say).
    let mut events = http
        .get(format!("{}/api/v1/events", site.base_url()))
        .header("cookie", format!("vesalius_session={cookie}"))
        .send()
        .await
        .expect("events");
    assert_eq!(events.status().as_u16(), 200);
    let opened = std::time::Instant::now();

    // Switched to south: south's study, not north's, and administrator there.
    let (status, body) = call(
        &http,
        &site,
        &s,
        "POST",
        "/api/v1/auth/session/org",
        Some(json!({"org": "south"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["org"].as_str(), body["role"].as_str()),
        (Some("south"), Some("admin"))
    );
    assert_eq!(studies(&http, &site, &s).await, vec![south.clone()]);
    assert_eq!(metadata(&http, &site, &s, &south).await, 200);
    assert_eq!(metadata(&http, &site, &s, &north).await, 404);
    let (status, users) = call(&http, &site, &s, "GET", "/api/v1/users", None).await;
    assert_eq!(status, 200);
    assert!(
        users["users"]
            .as_array()
            .expect("users")
            .iter()
            .all(|u| u["memberships"]
                .as_array()
                .expect("m")
                .iter()
                .all(|m| m["org"] == "south")),
        "only south's memberships are shown to south's administrator: {users}"
    );

    // A study arriving in north after the switch is not announced on the stream opened in
    // north: the stream re-checks its session (at most every second) and ends.
    tokio::time::sleep(vesalius_api::events::RECHECK.saturating_sub(opened.elapsed())).await;
    let (late, files) = study(dir.path(), 73);
    for b in &files {
        let ing = &site.storage.ingestor;
        let mut spool = ing.spool().expect("spool");
        spool.write(b).expect("spool");
        let ctx = IngestContext {
            org: "north".into(),
            source: "test".into(),
            ..Default::default()
        };
        ing.ingest(spool.finish().expect("spool"), &ctx)
            .await
            .expect("ingest");
    }
    let mut heard = String::new();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(chunk) = events.chunk().await.expect("stream") {
            heard.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ended; it sent {heard:?}");
    assert!(
        !heard.contains(&late),
        "north's new study not announced: {heard:?}"
    );

    // The token stays in north, and cannot switch.
    let t = Cred::Token(&token);
    let mut in_north = vec![north.clone(), late.clone()];
    in_north.sort();
    assert_eq!(studies(&http, &site, &t).await, in_north);
    assert_eq!(metadata(&http, &site, &t, &south).await, 404);
    let (status, _) = call(
        &http,
        &site,
        &t,
        "POST",
        "/api/v1/auth/session/org",
        Some(json!({"org": "south"})),
    )
    .await;
    assert_eq!(status, 403);

    site.stop().await;
}
