//! The admin console's API (issue 6, docs/admin-console.md), in process against a real site
//! (SQLite, blobs on disk, HTTP on loopback): organisations, users and roles, password links,
//! tokens, the audit search, the system summary and the route test. Every route as an
//! administrator (allowed), an ordinary user (403) and nobody (401), and bad bodies (4xx JSON).

use std::path::Path;

use serde_json::{Value, json};
use vesalius_auth::authenticator::NewUser;
use vesalius_auth::{Origin, Principal};
use vesalius_store::directory::{DirectoryChange, Membership, Org, Role};

use crate::config::Config;
use crate::site::RunningSite;

const NORTH: &str = "north";
const SOUTH: &str = "south";

struct Fixture {
    _dir: tempfile::TempDir,
    site: RunningSite,
    http: reqwest::Client,
    /// Token text by `(org, role)`.
    tokens: Vec<((String, Role), String)>,
}

/// Who calls: a token of `(org, role)`, a token text, or nobody.
#[derive(Clone, Copy)]
enum As<'a> {
    Role(&'a str, Role),
    Token(&'a str),
    Nobody,
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture::start_with(true).await
    }

    /// A site whose HTTP requests need credentials (`required`), or one that serves anonymous
    /// requests as the server itself (`[auth] required = false`).
    async fn start_with(required: bool) -> Fixture {
        let dir = tempfile::tempdir().expect("dir");
        let mut cfg = Config::default();
        cfg.auth.required = required;
        cfg.storage.data_dir = dir.path().join("data");
        cfg.storage.org = NORTH.into();
        cfg.dicom.addr = "127.0.0.1:0".parse().expect("address");
        cfg.http.addr = "127.0.0.1:0".parse().expect("address");
        cfg.limits.min_free_bytes = 0;
        cfg.exchange.enabled = false;
        let site = RunningSite::start(cfg).await.expect("site");
        let auth = &site.storage.auth;
        let now = auth.now_ms();
        let orgs = [NORTH, SOUTH]
            .map(|o| {
                DirectoryChange::PutOrg(Org {
                    id: o.into(),
                    name: format!("{o} hospital"),
                    created_ms: now,
                })
            })
            .to_vec();
        auth.directory().apply(orgs, vec![]).await.expect("orgs");
        let mut tokens = Vec::new();
        for (org, role) in [
            (NORTH, Role::Admin),
            (NORTH, Role::Clinician),
            (NORTH, Role::Auditor),
            (SOUTH, Role::Admin),
            (SOUTH, Role::Clinician),
        ] {
            let username = format!("{org}-{}", role.as_str());
            let user = auth
                .create_user(
                    &Principal::system(),
                    NewUser {
                        username: &username,
                        display_name: &username,
                        email: "",
                        memberships: &[Membership {
                            org: org.into(),
                            role,
                        }],
                        password: Some("a fine test password"),
                        service: false,
                        must_change_password: false,
                    },
                    Origin::default(),
                )
                .await
                .expect("user");
            let (_, text) = auth
                .create_token(
                    &Principal::system(),
                    &user.id,
                    org,
                    role,
                    "test",
                    None,
                    Origin::default(),
                )
                .await
                .expect("token");
            tokens.push(((org.to_owned(), role), text));
        }
        Fixture {
            _dir: dir,
            site,
            http: reqwest::Client::new(),
            tokens,
        }
    }

    fn token(&self, org: &str, role: Role) -> &str {
        &self
            .tokens
            .iter()
            .find(|((o, r), _)| o == org && *r == role)
            .expect("token")
            .1
    }

    /// Status and JSON body of a request (`body`: JSON text, or raw bytes with a type).
    async fn call(
        &self,
        who: As<'_>,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.site.base_url());
        let mut rq = self
            .http
            .request(method.parse().expect("method"), url)
            .header("accept", "application/json");
        match who {
            As::Role(org, role) => rq = rq.bearer_auth(self.token(org, role)),
            As::Token(t) => rq = rq.bearer_auth(t),
            As::Nobody => {}
        }
        if let Some((ty, b)) = body {
            rq = rq.header("content-type", ty).body(b);
        } else if method != "GET" {
            rq = rq.header("content-length", "0");
        }
        let resp = rq.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn json(&self, who: As<'_>, method: &str, path: &str, v: Value) -> (u16, Value) {
        self.call(
            who,
            method,
            path,
            Some(("application/json", v.to_string().into_bytes())),
        )
        .await
    }

    async fn get(&self, who: As<'_>, path: &str) -> (u16, Value) {
        self.call(who, "GET", path, None).await
    }

    async fn stop(self) {
        self.site.stop().await;
    }
}

const ADMIN: As<'static> = As::Role(NORTH, Role::Admin);
const CLINICIAN: As<'static> = As::Role(NORTH, Role::Clinician);

/// An error answer: the status and a kebab-case code in a JSON body.
fn refused(r: &(u16, Value), status: u16, code: &str) {
    assert_eq!(r.0, status, "{:?}", r.1);
    assert_eq!(r.1["error"], code, "{:?}", r.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r6_every_admin_route_refuses_users_and_nobody() {
    let f = Fixture::start().await;
    let routes: [(&str, &str, Option<Value>); 10] = [
        ("GET", "/api/v1/orgs", None),
        ("GET", "/api/v1/users", None),
        (
            "POST",
            "/api/v1/users",
            Some(json!({"username": "x1", "role": "clinician"})),
        ),
        (
            "PATCH",
            "/api/v1/users/north-clinician",
            Some(json!({"disabled": true})),
        ),
        ("POST", "/api/v1/users/north-clinician/password-link", None),
        ("GET", "/api/v1/tokens", None),
        (
            "POST",
            "/api/v1/tokens",
            Some(json!({"username": "north-clinician", "role": "clinician", "name": "x"})),
        ),
        ("DELETE", "/api/v1/tokens/abcdefabcdef", None),
        ("GET", "/api/v1/system", None),
        ("GET", "/api/v1/audit/events", None),
    ];
    for (method, path, body) in &routes {
        let b = body
            .as_ref()
            .map(|v| ("application/json", v.to_string().into_bytes()));
        let r = f.call(As::Nobody, method, path, b.clone()).await;
        assert_eq!(r.0, 401, "{method} {path} without credentials");
        // A clinician may do none of it; an auditor only the audit search.
        let r = f.call(CLINICIAN, method, path, b.clone()).await;
        refused(&r, 403, "forbidden");
        let r = f
            .call(As::Role(NORTH, Role::Auditor), method, path, b.clone())
            .await;
        if *path == "/api/v1/audit/events" {
            assert_eq!(r.0, 200, "{:?}", r.1);
        } else {
            refused(&r, 403, "forbidden");
        }
    }
    // Nothing changed: the clinician is enabled and still has a password.
    let u = f
        .site
        .storage
        .auth
        .directory()
        .user_by_name("north-clinician")
        .await
        .unwrap()
        .unwrap();
    assert!(!u.disabled && u.password_hash.is_some());
    // The route test: nobody 401, a clinician 403.
    let dcm = ("application/dicom", b"DICM".to_vec());
    assert_eq!(
        f.call(As::Nobody, "POST", "/api/v1/route-test", Some(dcm.clone()))
            .await
            .0,
        401
    );
    refused(
        &f.call(CLINICIAN, "POST", "/api/v1/route-test", Some(dcm))
            .await,
        403,
        "forbidden",
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r6_users_roles_password_links_and_tokens() {
    let f = Fixture::start().await;
    // Organisations: the admin's own only; creating one is the server's.
    let (s, v) = f.get(ADMIN, "/api/v1/orgs").await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = v["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![NORTH]);
    assert_eq!(v["orgs"][0]["name"], "north hospital");
    assert_eq!(v["may_create"], false);
    // Users: north's only.
    let (s, v) = f.get(ADMIN, "/api/v1/users").await;
    assert_eq!(s, 200);
    let names: Vec<&str> = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"north-clinician") && !names.contains(&"south-clinician"));
    assert!(v.to_string().find("password_hash").is_none());
    // Bad bodies: 400 with a code; unknown role; unknown field; a service with a person's role.
    for bad in [
        json!({"username": "dora"}),
        json!({"username": "dora", "role": "wizard"}),
        json!({"username": "dora", "role": "clinician", "shoe_size": 9}),
        json!({"username": "dora", "role": "clinician", "service": true}),
        json!({"username": "not a name", "role": "clinician"}),
    ] {
        refused(
            &f.json(ADMIN, "POST", "/api/v1/users", bad).await,
            400,
            "bad-request",
        );
    }
    let r = f
        .call(
            ADMIN,
            "POST",
            "/api/v1/users",
            Some(("application/json", b"{not json".to_vec())),
        )
        .await;
    refused(&r, 400, "bad-request");
    // Not into an organisation the admin does not run.
    refused(
        &f.json(
            ADMIN,
            "POST",
            "/api/v1/users",
            json!({"username": "dora", "role": "clinician", "org": SOUTH}),
        )
        .await,
        403,
        "forbidden",
    );
    // A person: no password, a password link shown once.
    let (s, v) = f
        .json(
            ADMIN,
            "POST",
            "/api/v1/users",
            json!({"username": "Dora", "role": "clinician", "display_name": "Dr Dora"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["user"]["username"], "dora");
    assert_eq!(v["user"]["has_password"], false);
    let url = v["password_link"]["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("{}/setup?token=", f.site.base_url())));
    let token = url.split("token=").nth(1).unwrap().to_owned();
    // The same username again: 409.
    let again = f
        .json(
            ADMIN,
            "POST",
            "/api/v1/users",
            json!({"username": "dora", "role": "clinician"}),
        )
        .await;
    assert!(matches!(again.0, 400 | 409), "{:?}", again);
    // The link sets the password and logs Dora in; then her password works.
    let (s, v) = f
        .json(
            As::Nobody,
            "POST",
            "/api/v1/auth/setup",
            json!({"token": token, "password": "dora's own password"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = f
        .json(
            As::Nobody,
            "POST",
            "/api/v1/auth/login",
            json!({"username": "dora", "password": "dora's own password"}),
        )
        .await;
    assert_eq!(s, 200);
    // A second use of the link fails.
    let (s, _) = f
        .json(
            As::Nobody,
            "POST",
            "/api/v1/auth/setup",
            json!({"token": token, "password": "someone else's pw"}),
        )
        .await;
    assert!((400..500).contains(&s));
    // A service account: no link.
    let (s, v) = f
        .json(
            ADMIN,
            "POST",
            "/api/v1/users",
            json!({"username": "ct-gateway", "role": "service", "service": true}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert!(v["password_link"].is_null());

    // Roles: set, refused for other organisations' users (404), bad role 400, empty 400.
    let (s, v) = f
        .json(
            ADMIN,
            "PATCH",
            "/api/v1/users/dora",
            json!({"role": "radiographer"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["user"]["memberships"][0]["role"], "radiographer");
    refused(
        &f.json(
            ADMIN,
            "PATCH",
            "/api/v1/users/south-clinician",
            json!({"role": "admin"}),
        )
        .await,
        404,
        "not-found",
    );
    refused(
        &f.json(
            ADMIN,
            "PATCH",
            "/api/v1/users/dora",
            json!({"role": "king"}),
        )
        .await,
        400,
        "bad-request",
    );
    refused(
        &f.json(ADMIN, "PATCH", "/api/v1/users/dora", json!({}))
            .await,
        400,
        "bad-request",
    );
    // An administrator cannot disable themself.
    refused(
        &f.json(
            ADMIN,
            "PATCH",
            "/api/v1/users/north-admin",
            json!({"disabled": true}),
        )
        .await,
        409,
        "conflict",
    );

    // Tokens: create (secret once), it works, list (no secret), revoke, it stops working.
    refused(
        &f.json(
            ADMIN,
            "POST",
            "/api/v1/tokens",
            json!({"username": "dora", "role": "admin", "name": "too much"}),
        )
        .await,
        403,
        "forbidden",
    );
    refused(
        &f.json(
            ADMIN,
            "POST",
            "/api/v1/tokens",
            json!({"username": "dora", "role": "radiographer", "name": "x", "ttl_days": 0}),
        )
        .await,
        400,
        "bad-request",
    );
    let (s, v) = f
        .json(
            ADMIN,
            "POST",
            "/api/v1/tokens",
            json!({"username": "dora", "role": "radiographer", "name": "dora's script", "ttl_days": 30}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (id, text) = (
        v["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    );
    assert!(text.starts_with("vsl_"));
    let (s, me) = f.get(As::Token(&text), "/api/v1/auth/me").await;
    assert_eq!(s, 200);
    assert_eq!(me["role"], "radiographer");
    let (_, list) = f.get(ADMIN, "/api/v1/tokens").await;
    let listed = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .expect("listed")
        .clone();
    assert_eq!(listed["status"], "active");
    assert!(
        !list.to_string().contains(&text),
        "the secret is shown once"
    );
    // South's admin cannot see or revoke it.
    let south = As::Role(SOUTH, Role::Admin);
    let (_, theirs) = f.get(south, "/api/v1/tokens").await;
    assert!(!theirs.to_string().contains(&id));
    refused(
        &f.call(south, "DELETE", &format!("/api/v1/tokens/{id}"), None)
            .await,
        404,
        "not-found",
    );
    let (s, _) = f
        .call(ADMIN, "DELETE", &format!("/api/v1/tokens/{id}"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(f.get(As::Token(&text), "/api/v1/auth/me").await.0, 401);

    // Disabling stops a user's tokens; enabling brings them back.
    let (_, v) = f
        .json(
            ADMIN,
            "POST",
            "/api/v1/tokens",
            json!({"username": "dora", "role": "radiographer", "name": "second"}),
        )
        .await;
    let text = v["token"].as_str().unwrap().to_owned();
    let (s, v) = f
        .json(
            ADMIN,
            "PATCH",
            "/api/v1/users/dora",
            json!({"disabled": true}),
        )
        .await;
    assert_eq!((s, &v["user"]["disabled"]), (200, &json!(true)));
    assert_eq!(f.get(As::Token(&text), "/api/v1/auth/me").await.0, 401);
    f.json(
        ADMIN,
        "PATCH",
        "/api/v1/users/dora",
        json!({"disabled": false}),
    )
    .await;
    assert_eq!(f.get(As::Token(&text), "/api/v1/auth/me").await.0, 200);
    // A password link for an existing person: the old password stops working.
    let (s, v) = f
        .call(ADMIN, "POST", "/api/v1/users/dora/password-link", None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(
        v["password_link"]["url"]
            .as_str()
            .unwrap()
            .contains("/setup?token=")
    );
    let (s, _) = f
        .json(
            As::Nobody,
            "POST",
            "/api/v1/auth/login",
            json!({"username": "dora", "password": "dora's own password"}),
        )
        .await;
    assert_eq!(s, 401);
    refused(
        &f.call(
            ADMIN,
            "POST",
            "/api/v1/users/ct-gateway/password-link",
            None,
        )
        .await,
        409,
        "conflict",
    );
    // Everything above is on north's audit trail.
    let (s, v) = f
        .get(ADMIN, "/api/v1/audit/events?action=admin-change&limit=50")
        .await;
    assert_eq!(s, 200);
    let changes: Vec<&str> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["details"]["change"].as_str().unwrap_or(""))
        .collect();
    for c in ["membership-set", "user-disable", "user-enable"] {
        assert!(changes.contains(&c), "{c} in {changes:?}");
    }
    f.stop().await;
}

/// A synthetic CT head slice (and an MR slice), as files.
fn files(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let mut out = Vec::new();
    for (seed, kind) in [(5, "ct-head"), (6, "mr-brain")] {
        let mut opts = vesalius_synth::SynthOptions::new(seed);
        opts.slices = 1;
        opts.kinds = vec![kind.parse().expect("kind")];
        let r = vesalius_synth::write_studies(&opts, &dir.join(kind)).expect("synth");
        out.push(std::fs::read(&r.files[0]).expect("file"));
    }
    let mr = out.pop().unwrap();
    (out.pop().unwrap(), mr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r6_route_test_audit_search_and_system() {
    let f = Fixture::start().await;
    let (ct, mr) = files(f._dir.path());
    // A route of north's CT heads, and one of south's CT.
    let (s, v) = f
        .json(
            ADMIN,
            "PUT",
            "/api/v1/routes/ct-head-out",
            json!({"org": NORTH, "destinations": ["analysis:stroke"], "priority": 100,
                   "matcher": {"modality": ["CT"], "time_of_day": "08:00-18:00"}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = f
        .json(
            As::Role(SOUTH, Role::Admin),
            "PUT",
            "/api/v1/routes/south-ct",
            json!({"org": SOUTH, "destinations": ["analysis:other"], "matcher": {"modality": ["CT"]}}),
        )
        .await;
    assert_eq!(s, 201);
    let test = |body: Vec<u8>, query: &'static str| {
        let f = &f;
        async move {
            f.call(
                ADMIN,
                "POST",
                &format!("/api/v1/route-test{query}"),
                Some(("application/dicom", body)),
            )
            .await
        }
    };
    let (s, v) = test(ct.clone(), "?at=10:30").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["input"]["modality"], "CT");
    assert_eq!(v["at"], "10:30");
    let fired = v["fired"].as_array().unwrap();
    assert_eq!(fired.len(), 1, "{v}: south's route is not north's admin's");
    assert_eq!(fired[0]["route"], "ct-head-out");
    assert_eq!(fired[0]["destinations"], json!(["analysis:stroke"]));
    assert_eq!(fired[0]["priority"], 100);
    // Outside its hours, an MR, another organisation's routes: nothing fires.
    let (_, v) = test(ct.clone(), "?at=22:00").await;
    assert_eq!(v["fired"], json!([]));
    let (_, v) = test(mr, "?at=10:30").await;
    assert_eq!(v["input"]["modality"], "MR");
    assert_eq!(v["fired"], json!([]));
    refused(&test(ct.clone(), "?org=south").await, 403, "forbidden");
    // Bad input.
    refused(&test(ct.clone(), "?at=25:00").await, 400, "bad-request");
    refused(&test(ct.clone(), "?color=red").await, 400, "bad-request");
    refused(
        &test(b"not a dicom file at all".to_vec(), "").await,
        400,
        "invalid-dicom",
    );
    refused(&test(Vec::new(), "").await, 400, "invalid-dicom");

    // The audit search: the route changes above, by user, by action; patients and studies.
    let study_uid = {
        // A stored study: its `store` event names the patient.
        let ing = &f.site.storage.ingestor;
        let mut spool = ing.spool().unwrap();
        spool.write(&ct).unwrap();
        let done = ing
            .ingest(
                spool.finish().unwrap(),
                &vesalius_store::ingest::IngestContext {
                    org: NORTH.into(),
                    source: "test".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        done.instance.study_uid.clone()
    };
    // Read it as the clinician, so that someone "saw" it.
    let (s, _) = f
        .call(
            CLINICIAN,
            "GET",
            &format!("/dicom-web/studies/{study_uid}/metadata"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    // Reads are audited in the background: wait for the event.
    let path = format!("/api/v1/audit/events?study={study_uid}&user=north-clinician");
    let mut tries = 0;
    let (s, v) = loop {
        let r = f.get(As::Role(NORTH, Role::Auditor), &path).await;
        tries += 1;
        if r.0 != 200 || !r.1["records"].as_array().is_some_and(|a| a.is_empty()) || tries > 50 {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(s, 200, "{v}");
    let recs = v["records"].as_array().unwrap();
    assert!(!recs.is_empty(), "{v}");
    assert!(
        recs.iter().all(
            |r| r["study_uid"] == study_uid.as_str() && r["actor"]["name"] == "north-clinician"
        )
    );
    // The patient the events name (the synthetic data's own ID).
    let pid = recs
        .iter()
        .find_map(|r| r["patient"][1].as_str())
        .expect("a patient named")
        .to_owned();
    let (s, v) = f
        .get(ADMIN, &format!("/api/v1/audit/events?patient_id={pid}"))
        .await;
    assert_eq!(s, 200);
    assert!(
        v["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "retrieve"),
        "{v}"
    );
    // Time window: nothing before 1970 + 1 s.
    let (_, v) = f.get(ADMIN, "/api/v1/audit/events?until_ms=1000").await;
    assert_eq!(v["records"], json!([]));
    // South's admin sees none of north's trail.
    let (_, v) = f
        .get(
            As::Role(SOUTH, Role::Admin),
            &format!("/api/v1/audit/events?study={study_uid}"),
        )
        .await;
    assert_eq!(v["records"], json!([]));
    refused(
        &f.get(ADMIN, "/api/v1/audit/events?limit=many").await,
        400,
        "bad-request",
    );
    refused(
        &f.get(ADMIN, "/api/v1/audit/events?issuer=X").await,
        400,
        "bad-request",
    );
    // The searches themselves are audited.
    let (_, v) = f
        .get(ADMIN, "/api/v1/audit/events?action=audit-search")
        .await;
    assert!(v["records"].as_array().unwrap().len() >= 3, "{v}");

    // The system summary.
    let (s, v) = f.get(ADMIN, "/api/v1/system").await;
    assert_eq!(s, 200);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["stats"]["instances"], 1);
    assert!(v["disk"]["free_bytes"].as_u64().unwrap() > 0);
    assert_eq!(v["index"]["ok"], true);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r6_only_the_site_creates_organisations() {
    // With credentials required, nobody over HTTP is the site: an organisation's administrator
    // may not create one (the policy keeps it for the server), nor anyone else.
    let f = Fixture::start().await;
    let east = json!({"id": "east", "name": "East Hospital"});
    assert_eq!(
        f.json(As::Nobody, "POST", "/api/v1/orgs", east.clone())
            .await
            .0,
        401
    );
    for who in [ADMIN, CLINICIAN, As::Role(SOUTH, Role::Admin)] {
        let r = f.json(who, "POST", "/api/v1/orgs", east.clone()).await;
        refused(&r, 403, "forbidden");
    }
    // Refused before the body is read: a bad one is still 403, not 400.
    let r = f
        .call(
            ADMIN,
            "POST",
            "/api/v1/orgs",
            Some(("application/json", b"{".to_vec())),
        )
        .await;
    refused(&r, 403, "forbidden");
    let dir = f.site.storage.auth.directory();
    assert!(dir.org("east").await.unwrap().is_none());
    let (_, v) = f.get(ADMIN, "/api/v1/orgs").await;
    assert_eq!(v["may_create"], false);
    f.stop().await;

    // A site serving anonymous requests as the server itself: the site creates them.
    let f = Fixture::start_with(false).await;
    let site = As::Nobody;
    let (s, v) = f.get(site, "/api/v1/orgs").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["may_create"], true);
    let (s, v) = f.json(site, "POST", "/api/v1/orgs", east.clone()).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["org"]["id"].as_str(), v["org"]["name"].as_str()),
        (Some("east"), Some("East Hospital"))
    );
    let made = f
        .site
        .storage
        .auth
        .directory()
        .org("east")
        .await
        .unwrap()
        .expect("east");
    assert_eq!(made.name, "East Hospital");
    // The same id again: 409; bad ids, names and bodies: 400 with a code.
    refused(
        &f.json(site, "POST", "/api/v1/orgs", east.clone()).await,
        409,
        "conflict",
    );
    for bad in [
        json!({"id": "East"}),
        json!({"id": "-east"}),
        json!({"id": "a/b"}),
        json!({"id": ""}),
        json!({"id": "x".repeat(65)}),
        json!({"name": "no id"}),
        json!({"id": "west", "colour": "blue"}),
        json!({"id": "west", "name": "w".repeat(201)}),
        json!({"id": "west", "name": "line\nbreak"}),
    ] {
        refused(
            &f.json(site, "POST", "/api/v1/orgs", bad.clone()).await,
            400,
            "bad-request",
        );
    }
    refused(
        &f.call(
            site,
            "POST",
            "/api/v1/orgs",
            Some(("application/json", b"not json".to_vec())),
        )
        .await,
        400,
        "bad-request",
    );
    assert!(
        f.site
            .storage
            .auth
            .directory()
            .org("west")
            .await
            .unwrap()
            .is_none()
    );
    // Without a name the id is the name.
    let (s, v) = f
        .json(site, "POST", "/api/v1/orgs", json!({"id": "west"}))
        .await;
    assert_eq!((s, v["org"]["name"].as_str()), (201, Some("west")));
    // Its members: a first administrator, listed with the organisation.
    let (s, v) = f
        .json(
            site,
            "POST",
            "/api/v1/users",
            json!({"username": "eve", "role": "admin", "org": "east"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (_, v) = f.get(site, "/api/v1/users?org=east").await;
    let names: Vec<&str> = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["eve"]);
    assert_eq!(
        v["users"][0]["memberships"],
        json!([{"org": "east", "role": "admin"}])
    );
    let (_, v) = f.get(site, "/api/v1/orgs").await;
    let east_row = v["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == "east")
        .cloned();
    assert_eq!(east_row.map(|o| o["members"].clone()), Some(json!(1)));
    refused(
        &f.get(site, "/api/v1/users?org=nowhere").await,
        404,
        "not-found",
    );
    // Audited as the CLI's change is.
    let events = f
        .site
        .storage
        .auth
        .audit_log()
        .search(&vesalius_store::audit::AuditFilter {
            action: Some("admin-change".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let created: Vec<&str> = events
        .iter()
        .filter(|r| r.event.details["change"] == "org-create")
        .map(|r| r.event.org.as_str())
        .collect();
    assert_eq!(created, ["west", "east"]);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r6_users_and_audit_searches_come_a_page_at_a_time() {
    let f = Fixture::start().await;
    for i in 0..7 {
        let (s, v) = f
            .json(
                ADMIN,
                "POST",
                "/api/v1/users",
                json!({"username": format!("pager-{i}"), "role": "clinician"}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    // Users by username, three at a time: every one once, `more` until the last page.
    let (_, all) = f.get(ADMIN, "/api/v1/users?limit=500").await;
    let total = all["total"].as_u64().unwrap() as usize;
    assert_eq!(total, all["users"].as_array().unwrap().len());
    assert!(total >= 10, "north's three and seven pagers: {total}");
    let mut paged: Vec<String> = Vec::new();
    let mut offset = 0;
    loop {
        let (s, v) = f
            .get(ADMIN, &format!("/api/v1/users?limit=3&offset={offset}"))
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["total"].as_u64(), Some(total as u64));
        let page = v["users"].as_array().unwrap();
        assert!(page.len() <= 3);
        paged.extend(
            page.iter()
                .map(|u| u["username"].as_str().unwrap().to_owned()),
        );
        offset += 3;
        assert_eq!(v["more"], offset < total, "{v}");
        if v["more"] == false {
            break;
        }
    }
    let mut sorted = paged.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(paged, sorted, "by username, none twice");
    assert_eq!(paged.len(), total);
    assert!(!paged.iter().any(|n| n.starts_with("south")));
    // Past the end: an empty page.
    let (_, v) = f.get(ADMIN, "/api/v1/users?offset=1000").await;
    assert_eq!(
        (v["users"].as_array().map(Vec::len), v["more"].as_bool()),
        (Some(0), Some(false))
    );
    // One organisation's members; another's is refused; bad parameters are 400.
    let (_, v) = f.get(ADMIN, "/api/v1/users?org=north&limit=2").await;
    assert_eq!(
        (v["users"].as_array().map(Vec::len), v["more"].as_bool()),
        (Some(2), Some(true))
    );
    refused(
        &f.get(ADMIN, "/api/v1/users?org=south").await,
        403,
        "forbidden",
    );
    refused(
        &f.get(ADMIN, "/api/v1/users?org=nowhere").await,
        403,
        "forbidden",
    );
    for bad in ["limit=0", "limit=501", "limit=many", "offset=-1", "page=2"] {
        refused(
            &f.get(ADMIN, &format!("/api/v1/users?{bad}")).await,
            400,
            "bad-request",
        );
    }
    assert_eq!(f.get(As::Nobody, "/api/v1/users?limit=3").await.0, 401);
    refused(
        &f.get(CLINICIAN, "/api/v1/users?limit=3").await,
        403,
        "forbidden",
    );

    // The audit search: the ten user-create events (the fixture's three and the seven pagers),
    // three at a time, newest first.
    let (_, whole) = f
        .get(ADMIN, "/api/v1/audit/events?action=user-create&limit=100")
        .await;
    let want: Vec<u64> = whole["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(want.len(), 10, "{whole}");
    assert_eq!(
        (whole["more"].as_bool(), whole["next_before"].as_u64()),
        (Some(false), None)
    );
    let mut got: Vec<u64> = Vec::new();
    let mut before: Option<u64> = None;
    for page in 0.. {
        let path = match before {
            None => "/api/v1/audit/events?action=user-create&limit=3".to_owned(),
            Some(b) => format!("/api/v1/audit/events?action=user-create&limit=3&before={b}"),
        };
        let (s, v) = f.get(ADMIN, &path).await;
        assert_eq!(s, 200, "{v}");
        let seqs: Vec<u64> = v["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["seq"].as_u64().unwrap())
            .collect();
        got.extend(&seqs);
        if page < 3 {
            assert_eq!(seqs.len(), 3);
            assert_eq!(v["more"], true);
            assert_eq!(v["next_before"].as_u64(), seqs.last().copied());
            before = v["next_before"].as_u64();
        } else {
            assert_eq!((seqs.len(), v["more"].as_bool()), (1, Some(false)), "{v}");
            assert!(v["next_before"].is_null());
            break;
        }
    }
    assert_eq!(
        got, want,
        "the pages together are the whole search, newest first"
    );
    // South's administrator pages through nothing of north's.
    let (_, v) = f
        .get(
            As::Role(SOUTH, Role::Admin),
            &format!(
                "/api/v1/audit/events?action=user-create&limit=3&before={}",
                want[0] + 1
            ),
        )
        .await;
    let orgs: Vec<&str> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["org"].as_str().unwrap())
        .collect();
    assert_eq!(orgs, [SOUTH, SOUTH], "south's own two users only: {v}");
    for bad in ["before=0", "before=soon", "before=-3"] {
        refused(
            &f.get(ADMIN, &format!("/api/v1/audit/events?{bad}")).await,
            400,
            "bad-request",
        );
    }
    assert_eq!(
        f.get(As::Nobody, "/api/v1/audit/events?before=5").await.0,
        401
    );
    refused(
        &f.get(CLINICIAN, "/api/v1/audit/events?before=5").await,
        403,
        "forbidden",
    );
    f.stop().await;
}

/// A browser-like session over the JSON API: its cookie and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

/// `POST /api/v1/auth/login` (or `/api/v1/auth/setup` with `body`): status, body and the
/// session when it answered one.
async fn post_session(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: Value,
) -> (u16, Value, Option<Session>) {
    let r = http
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .map(str::to_owned);
    let v: Value = r.json().await.unwrap_or(Value::Null);
    let session = cookie.map(|cookie| Session {
        cookie,
        csrf: v["csrf"].as_str().unwrap_or("").to_owned(),
    });
    (status, v, session)
}

/// A request in a session (with its CSRF token).
async fn in_session(
    http: &reqwest::Client,
    base: &str,
    s: &Session,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rq = http
        .request(method.parse().expect("method"), format!("{base}{path}"))
        .header("cookie", &s.cookie)
        .header("x-csrf-token", &s.csrf);
    if let Some(b) = body {
        rq = rq.json(&b);
    }
    let r = rq.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Issue 6: the first start's link names the first administrator (a site administrator) once;
/// a site administrator logged in creates organisations and names others, an organisation's
/// administrator may not (403 JSON), nor the site administrator's own API token; logins
/// through the JSON API are throttled and locked out like the form's, and audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r6_site_administrators_set_up_log_in_and_create_organisations() {
    let dir = tempfile::tempdir().expect("dir");
    let mut cfg = Config::default();
    cfg.storage.data_dir = dir.path().join("data");
    cfg.dicom.addr = "127.0.0.1:0".parse().expect("address");
    cfg.http.addr = "127.0.0.1:0".parse().expect("address");
    cfg.limits.min_free_bytes = 0;
    cfg.exchange.enabled = false;
    let site = RunningSite::start(cfg).await.expect("site");
    let auth = &site.storage.auth;
    let link = auth.first_start(None).await.unwrap().expect("a fresh site");
    let base = site.base_url();
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let r = http.get(format!("{base}{path}")).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // The app's set-up screen asks first; a wrong token is refused, the right one named.
    let (s, v) = get(format!("/api/v1/auth/setup?token={}", link.token)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["first_start"].as_bool(), v["username"].as_str()),
        (Some(true), Some("admin"))
    );
    refused(
        &get("/api/v1/auth/setup?token=nope".into()).await,
        401,
        "unauthorized",
    );
    // A weak password or a bad username leaves the token usable.
    let setup = |username: &str, password: &str| json!({"token": link.token, "username": username, "password": password});
    let (s, v, _) = post_session(&http, &base, "/api/v1/auth/setup", setup("chief", "short")).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("bad-request")), "{v}");
    let (s, _, _) = post_session(
        &http,
        &base,
        "/api/v1/auth/setup",
        setup("two words", PW_CHIEF),
    )
    .await;
    assert_eq!(s, 400);
    let (s, v, chief) =
        post_session(&http, &base, "/api/v1/auth/setup", setup("chief", PW_CHIEF)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["username"], "chief");
    let chief = chief.expect("a session");
    // Single use: asked or used again, a conflict.
    let (s, v, again) = post_session(
        &http,
        &base,
        "/api/v1/auth/setup",
        setup("chief2", "another fine pw!"),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (409, Some("conflict")), "{v}");
    assert!(again.is_none());
    refused(
        &get(format!("/api/v1/auth/setup?token={}", link.token)).await,
        409,
        "conflict",
    );
    let (s, me) = in_session(&http, &base, &chief, "GET", "/api/v1/auth/me", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        (me["actor"]["name"].as_str(), me["site_admin"].as_bool()),
        (Some("chief"), Some(true))
    );

    // The site administrator creates an organisation, sees it listed and gives it its first
    // administrator (they administer every organisation), without becoming its member.
    let (s, v) = in_session(
        &http,
        &base,
        &chief,
        "POST",
        "/api/v1/orgs",
        Some(json!({"id": "east", "name": "East Hospital"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["org"]["members"], 0);
    let (_, v) = in_session(&http, &base, &chief, "GET", "/api/v1/orgs", None).await;
    assert_eq!(v["may_create"], true);
    let ids: Vec<&str> = v["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["id"].as_str())
        .collect();
    assert_eq!(ids, ["default", "east"], "{v}");
    let (s, v) = in_session(
        &http,
        &base,
        &chief,
        "POST",
        "/api/v1/users",
        Some(json!({"username": "eve", "role": "admin", "org": "east"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let chief_user = auth
        .directory()
        .user_by_name("chief")
        .await
        .unwrap()
        .unwrap();
    assert!(chief_user.memberships.iter().all(|m| m.org == "default"));
    // Their own API token carries no site rights.
    let (_, token) = auth
        .create_token(
            &Principal::system(),
            &chief_user.id,
            "default",
            Role::Admin,
            "t",
            None,
            Origin::default(),
        )
        .await
        .unwrap();
    let r = http
        .post(format!("{base}/api/v1/orgs"))
        .bearer_auth(&token)
        .json(&json!({"id": "west"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "forbidden");

    // An organisation's administrator (a session too) may not create one, nor name site
    // administrators; the site administrator may name them.
    auth.create_user(
        &Principal::system(),
        NewUser {
            username: "olga",
            display_name: "Olga",
            email: "",
            memberships: &[Membership {
                org: "default".into(),
                role: Role::Admin,
            }],
            password: Some(PW_CHIEF),
            service: false,
            must_change_password: false,
        },
        Origin::default(),
    )
    .await
    .unwrap();
    let (s, _, olga) = post_session(
        &http,
        &base,
        "/api/v1/auth/login",
        json!({"username": "olga", "password": PW_CHIEF}),
    )
    .await;
    assert_eq!(s, 200);
    let olga = olga.expect("a session");
    let r = in_session(
        &http,
        &base,
        &olga,
        "POST",
        "/api/v1/orgs",
        Some(json!({"id": "west"})),
    )
    .await;
    refused(&r, 403, "forbidden");
    let r = in_session(
        &http,
        &base,
        &olga,
        "PATCH",
        "/api/v1/users/olga",
        Some(json!({"site_admin": true})),
    )
    .await;
    refused(&r, 403, "forbidden");
    assert!(auth.directory().org("west").await.unwrap().is_none());
    let (s, v) = in_session(
        &http,
        &base,
        &chief,
        "PATCH",
        "/api/v1/users/olga",
        Some(json!({"site_admin": true})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["user"]["site_admin"], true);
    let (s, v) = in_session(
        &http,
        &base,
        &olga,
        "POST",
        "/api/v1/orgs",
        Some(json!({"id": "west"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");

    // The JSON login: a wrong password 401, then a lockout (429) even for the right one.
    let login = |password: &str| json!({"username": "olga", "password": password});
    let (s, v, none) =
        post_session(&http, &base, "/api/v1/auth/login", login("wrong password!")).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")), "{v}");
    assert!(none.is_none());
    let mut locked = None;
    for _ in 0..10 {
        let (s, v, _) =
            post_session(&http, &base, "/api/v1/auth/login", login("wrong password!")).await;
        if s == 429 {
            locked = Some(v);
            break;
        }
        assert_eq!(s, 401);
    }
    let locked = locked.expect("locked out after repeated failures");
    assert!(
        locked["message"].as_str().unwrap().contains("locked until"),
        "{locked}"
    );
    let (s, _, none) = post_session(&http, &base, "/api/v1/auth/login", login(PW_CHIEF)).await;
    assert_eq!(s, 429);
    assert!(none.is_none());

    // Audited: the set-up, the organisations and memberships, the site administrator named,
    // the failures and the lockout.
    let log = auth.audit_log();
    let actions: Vec<(String, String)> = log
        .search(&vesalius_store::audit::AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            let change = r.event.details["change"].as_str().unwrap_or("").to_owned();
            (r.event.action, change)
        })
        .collect();
    for want in [
        ("setup-complete", ""),
        ("admin-change", "org-create"),
        ("user-create", ""),
        ("admin-change", "site-admin-grant"),
        ("login-failed", ""),
        ("login-locked", ""),
    ] {
        assert!(
            actions.iter().any(|(a, c)| a == want.0 && c == want.1),
            "{want:?} in {actions:?}"
        );
    }
    site.stop().await;
}

const PW_CHIEF: &str = "chief's fine password";
