//! Patient identity (issue 5, docs/patients.md), in process against a real site (SQLite, blobs
//! on disk, HTTP and DICOM on loopback): identity per organisation, link, split and merge
//! through the JSON API, what QIDO-RS, WADO-RS metadata and C-FIND show after each, Original
//! Attributes Sequence, prior versions, audit events, refusals and bad input; and a study
//! received from a peer linked at the hub.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use vesalius_auth::authenticator::NewUser;
use vesalius_auth::{Origin, Principal};
use vesalius_deid::coerce::{PatientIdentity, coerce_patient_bytes};
use vesalius_store::audit::AuditFilter;
use vesalius_store::directory::{AeEntry, DirectoryChange, Membership, Org, Role};
use vesalius_store::ingest::IngestContext;

use crate::config::Config;
use crate::site::RunningSite;

const NORTH: &str = "north";
const SOUTH: &str = "south";

/// Three CT slices of one synthetic study, re-identified as `(issuer, id, name)`.
fn study(dir: &Path, seed: u64, issuer: &str, id: &str, name: &str) -> (String, Vec<Vec<u8>>) {
    let mut opts = vesalius_synth::SynthOptions::new(seed);
    opts.slices = 3;
    opts.kinds = vec!["ct-head".parse().expect("kind")];
    let r =
        vesalius_synth::write_studies(&opts, &dir.join(format!("synth-{seed}"))).expect("synth");
    let who = PatientIdentity {
        patient_id: id.into(),
        issuer: issuer.into(),
        name: Some(name.into()),
        birth_date: Some(String::new()),
        sex: Some(String::new()),
    };
    let files = r
        .files
        .iter()
        .map(|f| {
            let b = std::fs::read(f).expect("file");
            coerce_patient_bytes(&b, &who, "TEST", "20260101000000").expect("identity")
        })
        .collect();
    (r.studies[0].clone(), files)
}

struct Fixture {
    _dir: tempfile::TempDir,
    site: RunningSite,
    http: reqwest::Client,
    /// API tokens by `(org, role)`.
    tokens: Vec<((String, Role), String, String)>,
}

impl Fixture {
    async fn start() -> Fixture {
        let dir = tempfile::tempdir().expect("dir");
        let mut cfg = Config::default();
        cfg.storage.data_dir = dir.path().join("data");
        cfg.storage.org = NORTH.into();
        cfg.dicom.addr = "127.0.0.1:0".parse().expect("address");
        cfg.http.addr = "127.0.0.1:0".parse().expect("address");
        cfg.limits.min_free_bytes = 0;
        cfg.exchange.enabled = false;
        let site = RunningSite::start(cfg).await.expect("site");
        let auth = &site.storage.auth;
        let now = auth.now_ms();
        let mut changes = Vec::new();
        for org in [NORTH, SOUTH] {
            changes.push(DirectoryChange::PutOrg(Org {
                id: org.into(),
                name: org.into(),
                created_ms: now,
            }));
        }
        // A workstation of north that may query (C-FIND).
        changes.push(DirectoryChange::PutAe(AeEntry {
            ae_title: "NORTHWS".into(),
            org: NORTH.into(),
            allowed_addrs: vec![],
            listen: None,
            description: "test workstation".into(),
            may_query: true,
        }));
        auth.directory().apply(changes, vec![]).await.expect("orgs");
        let mut tokens = Vec::new();
        for (org, role) in [
            (NORTH, Role::Admin),
            (NORTH, Role::Radiographer),
            (NORTH, Role::Service),
            (NORTH, Role::Referrer),
            (SOUTH, Role::Admin),
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
                        password: None,
                        service: role == Role::Service,
                        must_change_password: false,
                    },
                    Origin::default(),
                )
                .await
                .expect("user");
            let (rec, text) = auth
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
            tokens.push(((org.to_owned(), role), text, rec.id));
        }
        Fixture {
            _dir: dir,
            site,
            http: reqwest::Client::new(),
            tokens,
        }
    }

    fn token(&self, org: &str, role: Role) -> (&str, &str) {
        let t = self
            .tokens
            .iter()
            .find(|((o, r), _, _)| o == org && *r == role)
            .expect("token");
        (&t.1, &t.2)
    }

    async fn ingest(&self, org: &str, files: &[Vec<u8>]) {
        let ing = &self.site.storage.ingestor;
        for b in files {
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
    }

    /// Sends a request as `(org, role)` (no credentials: `None`); status and JSON body.
    async fn call(
        &self,
        who: Option<(&str, Role)>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.site.base_url());
        let mut rq = self
            .http
            .request(method.parse().expect("method"), url)
            .header("accept", "application/dicom+json");
        if let Some((org, role)) = who {
            rq = rq.bearer_auth(self.token(org, role).0);
        }
        if let Some(b) = body {
            rq = rq
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let resp = rq.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, who: (&str, Role), path: &str, body: Value) -> (u16, Value) {
        self.call(Some(who), "POST", path, Some(&body.to_string()))
            .await
    }

    /// QIDO-RS studies as `who` with `query`: `(study, issuer, id, name)` per answer, sorted.
    async fn qido(&self, who: (&str, Role), query: &str) -> Vec<(String, String, String, String)> {
        let (status, v) = self
            .call(
                Some(who),
                "GET",
                &format!("/dicom-web/studies?{query}&includefield=00100021"),
                None,
            )
            .await;
        assert!(status == 200 || status == 204, "QIDO {query}: {status} {v}");
        let mut out: Vec<_> = v
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|a| {
                (
                    str_of(a, "0020000D"),
                    str_of(a, "00100021"),
                    str_of(a, "00100020"),
                    a["00100010"]["Value"][0]["Alphabetic"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    }
}

fn str_of(a: &Value, tag: &str) -> String {
    a[tag]["Value"][0].as_str().unwrap_or("").to_owned()
}

fn row(study: &str, issuer: &str, id: &str, name: &str) -> (String, String, String, String) {
    (study.into(), issuer.into(), id.into(), name.into())
}

/// The first item of a sequence attribute of a DICOM JSON object.
fn item<'a>(v: &'a Value, tag: &str, n: usize) -> &'a Value {
    &v[tag]["Value"][n]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_link_split_merge_with_originals_versions_and_audit() {
    let f = Fixture::start().await;
    let dir = f._dir.path();
    let admin = (NORTH, Role::Admin);
    // North received a study of SPOKE/12345 and has its own patient NORTH/MRN1; south holds a
    // study of the same SPOKE/12345 and one of 12345 without issuer.
    let (received, rx) = study(dir, 1, "SPOKE", "12345", "Received^Ann");
    let (local, lx) = study(dir, 2, "NORTH", "MRN1", "Local^Ann");
    let (south, sx) = study(dir, 3, "SPOKE", "12345", "South^Sam");
    let (south2, s2x) = study(dir, 4, "", "12345", "NoIssuer^Sam");
    f.ingest(NORTH, &rx).await;
    f.ingest(NORTH, &lx).await;
    f.ingest(SOUTH, &sx).await;
    f.ingest(SOUTH, &s2x).await;
    // The local record has demographics; the received study has none.
    let (status, v) = f
        .post(
            admin,
            &format!("/api/v1/studies/{local}/link-patient"),
            json!({"issuer": "NORTH", "patient_id": "MRN1", "birth_date": "19700102", "sex": "F"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["changed"], 3);

    // Identity is per organisation and per issuer: each sees its own 12345 only.
    assert_eq!(
        f.qido(admin, "PatientID=12345").await,
        vec![row(&received, "SPOKE", "12345", "Received^Ann")]
    );
    let mut want = vec![
        row(&south, "SPOKE", "12345", "South^Sam"),
        row(&south2, "", "12345", "NoIssuer^Sam"),
    ];
    want.sort();
    assert_eq!(f.qido((SOUTH, Role::Admin), "PatientID=12345").await, want);

    // Link the received study to the local record by reference: the record's demographics.
    let path = format!("/api/v1/studies/{received}/link-patient");
    let (status, v) = f
        .post(
            admin,
            &path,
            json!({"issuer": "NORTH", "patient_id": "MRN1"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["instances"].clone(), v["changed"].clone()),
        (json!(3), json!(3))
    );
    assert_eq!(v["before"]["patient_id"], "12345");
    assert_eq!(v["before"]["issuer"], "SPOKE");
    assert_eq!(v["after"]["name"], "Local^Ann");
    assert_eq!(v["after"]["birth_date"], "19700102");
    let mut both = vec![
        row(&received, "NORTH", "MRN1", "Local^Ann"),
        row(&local, "NORTH", "MRN1", "Local^Ann"),
    ];
    both.sort();
    assert_eq!(f.qido(admin, "PatientID=MRN1").await, both);
    assert!(f.qido(admin, "PatientID=12345").await.is_empty());
    // South's patient 12345 is untouched.
    assert_eq!(
        f.qido(
            (SOUTH, Role::Admin),
            "PatientID=12345&IssuerOfPatientID=SPOKE"
        )
        .await
        .len(),
        1
    );

    // WADO-RS metadata: the new identity, the originals in Original Attributes Sequence.
    let (status, md) = f
        .call(
            Some(admin),
            "GET",
            &format!("/dicom-web/studies/{received}/metadata"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let md = md.as_array().expect("metadata");
    assert_eq!(md.len(), 3);
    for inst in md {
        assert_eq!(str_of(inst, "00100020"), "MRN1");
        assert_eq!(str_of(inst, "00100030"), "19700102");
        // The synthetic files were coerced once already (TEST): ours is the last item.
        let items = inst["04000561"]["Value"].as_array().expect("originals");
        let ours = items.last().expect("an item");
        assert_eq!(str_of(ours, "04000563"), "VESALIUS");
        assert_eq!(str_of(ours, "04000565"), "COERCE");
        assert!(!str_of(ours, "04000562").is_empty(), "modification time");
        let old = item(ours, "04000550", 0);
        assert_eq!(str_of(old, "00100020"), "12345");
        assert_eq!(str_of(old, "00100021"), "SPOKE");
        assert_eq!(old["00100010"]["Value"][0]["Alphabetic"], "Received^Ann");
        let others = inst["00101002"]["Value"].as_array().expect("other ids");
        assert!(
            others
                .iter()
                .any(|o| str_of(o, "00100020") == "12345" && str_of(o, "00100021") == "SPOKE")
        );
    }

    // C-FIND shows the same.
    let found = vesalius_dimse::scu::find(
        &f.site.dicom.to_string(),
        "NORTHWS",
        &f.site.cfg.dicom.ae_title,
        vesalius_store::query::Level::Study,
        &[
            (0x0010_0020, "MRN1".into()),
            (0x0020_000D, received.clone()),
            (0x0010_0010, String::new()),
        ],
    )
    .await
    .expect("C-FIND");
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0]["00100010"]["Value"][0]["Alphabetic"],
        json!("Local^Ann")
    );

    // The received versions are kept.
    let (status, versions) = f
        .call(
            Some(admin),
            "GET",
            &format!("/api/v1/studies/{received}/versions"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(versions.as_array().map(Vec::len), Some(3), "{versions}");

    // Linking again to the identity it has: 200, nothing rewritten, no new version.
    let (status, v) = f
        .post(
            admin,
            &path,
            json!({"issuer": "NORTH", "patient_id": "MRN1"}),
        )
        .await;
    assert_eq!((status, v["changed"].clone()), (200, json!(0)), "{v}");
    let (_, versions) = f
        .call(
            Some(admin),
            "GET",
            &format!("/api/v1/studies/{received}/versions"),
            None,
        )
        .await;
    assert_eq!(versions.as_array().map(Vec::len), Some(3));

    // Split the received study off to a new patient with its own demographics (a
    // radiographer may reconcile).
    let (status, v) = f
        .post(
            (NORTH, Role::Radiographer),
            "/api/v1/patients/split",
            json!({"study_uids": [received], "to": {"issuer": "NORTH", "patient_id": "MRN2",
                   "name": "Other^Bob", "sex": "M"}}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["studies"][0]["changed"], 3);
    assert_eq!(
        f.qido(admin, "PatientID=MRN1").await,
        vec![row(&local, "NORTH", "MRN1", "Local^Ann")]
    );
    assert_eq!(
        f.qido(admin, "PatientID=MRN2").await,
        vec![row(&received, "NORTH", "MRN2", "Other^Bob")]
    );

    // Merge MRN2 into MRN1: MRN1's demographics.
    let (status, v) = f
        .post(
            admin,
            "/api/v1/patients/merge",
            json!({"from": {"issuer": "NORTH", "patient_id": "MRN2"},
                   "into": {"issuer": "NORTH", "patient_id": "MRN1"}}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["studies"].as_array().map(Vec::len), Some(1));
    assert_eq!(f.qido(admin, "PatientID=MRN1").await, both);
    assert!(f.qido(admin, "PatientID=MRN2").await.is_empty());
    let (_, md) = f
        .call(
            Some(admin),
            "GET",
            &format!("/dicom-web/studies/{received}/metadata"),
            None,
        )
        .await;
    for inst in md.as_array().expect("metadata") {
        assert_eq!(str_of(inst, "00100040"), "F");
        // Received, linked, split, merged: three changes of ours after the synthetic one.
        assert_eq!(inst["04000561"]["Value"].as_array().map(Vec::len), Some(4));
    }
    // Merging again: nothing left to merge.
    let (status, v) = f
        .post(
            admin,
            "/api/v1/patients/merge",
            json!({"from": {"issuer": "NORTH", "patient_id": "MRN2"},
                   "into": {"issuer": "NORTH", "patient_id": "MRN1"}}),
        )
        .await;
    assert_eq!(
        (status, v["error"].clone()),
        (404, json!("not-found")),
        "{v}"
    );
    // Every version is kept: 3 instances × 3 rewrites.
    let (_, versions) = f
        .call(
            Some(admin),
            "GET",
            &format!("/api/v1/studies/{received}/versions"),
            None,
        )
        .await;
    assert_eq!(versions.as_array().map(Vec::len), Some(9));

    // The audit trail: one event per action and study, by the caller, before and after.
    let trail = f
        .site
        .storage
        .auth
        .audit_log()
        .search(&AuditFilter {
            study_uid: Some(received.clone()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("audit");
    let of = |action: &str| -> Vec<&vesalius_store::audit::AuditEvent> {
        trail
            .iter()
            .map(|r| &r.event)
            .filter(|e| e.action == action)
            .collect()
    };
    let links = of("patient-link");
    assert_eq!(links.len(), 2, "the first link and the repeated one");
    let first = links.last().expect("oldest last");
    assert_eq!(first.actor.id, f.token(NORTH, Role::Admin).1);
    assert_eq!(first.org, NORTH);
    assert_eq!(first.patient, Some(("NORTH".into(), "MRN1".into())));
    assert_eq!(first.details["before"]["patient_id"], "12345");
    assert_eq!(first.details["changed"], 3);
    let split = of("patient-split");
    assert_eq!(split.len(), 1);
    assert_eq!(split[0].actor.id, f.token(NORTH, Role::Radiographer).1);
    assert_eq!(split[0].details["after"]["patient_id"], "MRN2");
    let merge = of("patient-merge");
    assert_eq!(merge.len(), 1);
    assert_eq!(merge[0].details["before"]["patient_id"], "MRN2");
    assert_eq!(merge[0].patient, Some(("NORTH".into(), "MRN1".into())));
    // The rewritten instances were stored (and audited) through the ingest path.
    assert!(!of("store").is_empty());
    f.site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_patient_identity_refusals_and_bad_input() {
    let f = Fixture::start().await;
    let dir = f._dir.path();
    let (received, rx) = study(dir, 5, "SPOKE", "777", "Received^Ann");
    let (other, ox) = study(dir, 6, "NORTH", "MRN5", "Local^Bob");
    f.ingest(NORTH, &rx).await;
    f.ingest(NORTH, &ox).await;
    let admin = (NORTH, Role::Admin);
    let link = format!("/api/v1/studies/{received}/link-patient");
    let good = json!({"issuer": "NORTH", "patient_id": "MRN9"});
    // Without credentials; another organisation's administrator; who cannot see it; who sees
    // it but may not reconcile.
    let (status, _) = f.call(None, "POST", &link, Some(&good.to_string())).await;
    assert_eq!(status, 401);
    for (who, want) in [
        ((SOUTH, Role::Admin), 404),
        ((NORTH, Role::Referrer), 404),
        ((NORTH, Role::Service), 403),
    ] {
        let (status, v) = f.post(who, &link, good.clone()).await;
        assert_eq!(status, want, "{who:?}: {v}");
        assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
    }
    let ghost = "/api/v1/studies/2.25.1234567/link-patient";
    assert_eq!(f.post(admin, ghost, good.clone()).await.0, 404);
    // Merge and split are refused alike.
    let merge = json!({"from": {"issuer": "SPOKE", "patient_id": "777"},
                       "into": {"issuer": "NORTH", "patient_id": "MRN5"}});
    assert_eq!(
        f.post(
            (NORTH, Role::Service),
            "/api/v1/patients/merge",
            merge.clone()
        )
        .await
        .0,
        403
    );
    assert_eq!(
        f.post(
            (SOUTH, Role::Admin),
            "/api/v1/patients/merge",
            merge.clone()
        )
        .await
        .0,
        404,
        "south has no such patients"
    );
    let split = json!({"study_uids": [received], "to": {"patient_id": "X"}});
    assert_eq!(
        f.post((SOUTH, Role::Admin), "/api/v1/patients/split", split)
            .await
            .0,
        404
    );

    // Bad input: 400 with a JSON error naming the problem.
    for (path, body) in [
        (link.as_str(), json!({"issuer": "NORTH"})),
        (link.as_str(), json!({"patient_id": ""})),
        (link.as_str(), json!({"patient_id": "A\\B"})),
        (
            link.as_str(),
            json!({"patient_id": "X", "birth_date": "1980-01-02"}),
        ),
        (link.as_str(), json!({"patient_id": "X", "sex": "unknown"})),
        (
            link.as_str(),
            json!({"patient_id": "X", "patientname": "Typo^Field"}),
        ),
        (
            "/api/v1/studies/not-a-uid/link-patient",
            json!({"patient_id": "X"}),
        ),
        (
            "/api/v1/patients/merge",
            json!({"from": {"issuer": "N", "patient_id": "1"}, "into": {"issuer": "N", "patient_id": "1"}}),
        ),
        (
            "/api/v1/patients/merge",
            json!({"from": {"patient_id": "1"}}),
        ),
        (
            "/api/v1/patients/split",
            json!({"study_uids": [], "to": {"patient_id": "X"}}),
        ),
        (
            "/api/v1/patients/split",
            json!({"study_uids": ["1.2.x"], "to": {"patient_id": "X"}}),
        ),
    ] {
        let (status, v) = f.post(admin, path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {v}");
        assert_eq!(v["error"], "bad-request", "{v}");
    }
    let (status, v) = f.call(Some(admin), "POST", &link, Some("{not json")).await;
    assert_eq!((status, v["error"].clone()), (400, json!("bad-request")));

    // Merging into a patient the organisation does not have: 404, nothing changed.
    let (status, v) = f
        .post(
            admin,
            "/api/v1/patients/merge",
            json!({"from": {"issuer": "SPOKE", "patient_id": "777"},
                   "into": {"issuer": "NORTH", "patient_id": "NOBODY"}}),
        )
        .await;
    assert_eq!(status, 404, "{v}");
    // A split naming one unknown study changes none of them.
    let (status, _) = f
        .post(
            admin,
            "/api/v1/patients/split",
            json!({"study_uids": [received, other, "2.25.99"], "to": {"patient_id": "X"}}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        f.qido(admin, "PatientID=777").await,
        vec![row(&received, "SPOKE", "777", "Received^Ann")]
    );
    assert_eq!(f.qido(admin, "PatientID=MRN5").await.len(), 1);
    // Nothing refused was audited as a change.
    let trail = f
        .site
        .storage
        .auth
        .audit_log()
        .search(&AuditFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("audit");
    assert!(
        !trail.iter().any(|r| r.event.action.starts_with("patient-")),
        "no patient change happened"
    );
    f.site.stop().await;
}

fn ct_head(dir: &Path, seed: u64, slices: u32) -> Vec<PathBuf> {
    let mut opts = vesalius_synth::SynthOptions::new(seed);
    opts.slices = slices;
    opts.kinds = vec!["ct-head".parse().expect("kind")];
    vesalius_synth::write_studies(&opts, &dir.join(format!("synth-{seed}")))
        .expect("synth")
        .files
}

/// A study received from a peer keeps the sender's Issuer of Patient ID at the hub, is a
/// patient of its own there, and is linked to the hub's local record through the hub's API;
/// the spoke's copy keeps its identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r5_received_study_linked_at_the_hub() {
    let dir = tempfile::tempdir().expect("dir");
    let sites = crate::demo::start_network(dir.path())
        .await
        .expect("network");
    let (hub, spoke) = (&sites[0], &sites[1]);
    let files = ct_head(dir.path(), 11, 3);
    let figures = crate::demo::send_and_wait(
        spoke,
        "CT_SPOKE_A",
        files,
        hub.storage.exchange.subscribe(),
        Duration::from_secs(60),
    )
    .await
    .expect("delivered");
    let study = figures.study_uid.clone();
    let hub_org = hub.cfg.storage.org.clone();
    let auth = &hub.storage.auth;
    let user = auth
        .create_user(
            &Principal::system(),
            NewUser {
                username: "clin",
                display_name: "Clinician",
                email: "",
                memberships: &[Membership {
                    org: hub_org.clone(),
                    role: Role::Clinician,
                }],
                password: None,
                service: false,
                must_change_password: false,
            },
            Origin::default(),
        )
        .await
        .expect("user");
    let (_, token) = auth
        .create_token(
            &Principal::system(),
            &user.id,
            &hub_org,
            Role::Clinician,
            "t",
            None,
            Origin::default(),
        )
        .await
        .expect("token");
    let http = reqwest::Client::new();
    let qido = |base: String, token: Option<String>| {
        let http = http.clone();
        let study = study.clone();
        async move {
            let mut rq = http.get(format!(
                "{base}/dicom-web/studies?StudyInstanceUID={study}&includefield=00100021"
            ));
            if let Some(t) = token {
                rq = rq.bearer_auth(t);
            }
            let v: Value = rq.send().await.expect("qido").json().await.expect("json");
            (str_of(&v[0], "00100021"), str_of(&v[0], "00100020"))
        }
    };
    let (issuer, sender_id) = qido(hub.base_url(), Some(token.clone())).await;
    assert_eq!(issuer, "VESALIUS-SYNTH", "the sender's issuer is kept");
    let resp = http
        .post(format!(
            "{}/api/v1/studies/{study}/link-patient",
            hub.base_url()
        ))
        .bearer_auth(&token)
        .json(&json!({"issuer": "CSC", "patient_id": "CSC-0001", "name": "Stroke^Pat"}))
        .send()
        .await
        .expect("link");
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["changed"], 3, "{v}");
    assert_eq!(v["before"]["patient_id"], json!(sender_id));
    assert_eq!(
        qido(hub.base_url(), Some(token.clone())).await,
        ("CSC".into(), "CSC-0001".into())
    );
    // The spoke's bytes are still held (prior versions): a manifest of them finds them all
    // present, so a resumed transfer or a final manifest does not send them again (which
    // would undo the link); other bytes are still reported as different.
    let access = Some(vesalius_store::query::Access::orgs([hub_org.clone()]));
    let sent: Vec<_> = spoke
        .storage
        .ingestor
        .index()
        .instances(&vesalius_store::query::Scope::study(study.clone()))
        .await
        .expect("instances")
        .into_iter()
        .map(|i| vesalius_exchange::manifest::ManifestEntry {
            sop_instance_uid: i.sop_instance_uid,
            sha256: i.sha256,
            size: i.size,
        })
        .collect();
    let mut m = vesalius_exchange::manifest::Manifest {
        study_uid: study.clone(),
        priority: 0,
        final_: true,
        instances: sent,
    };
    let a = vesalius_exchange::manifest::check(
        hub.storage.ingestor.index().as_ref(),
        access.clone(),
        &m,
    )
    .await
    .expect("manifest");
    assert!(a.complete && a.present.len() == 3, "{a:?}");
    m.instances[0].sha256 = "00".repeat(32);
    let a = vesalius_exchange::manifest::check(hub.storage.ingestor.index().as_ref(), access, &m)
        .await
        .expect("manifest");
    assert_eq!((a.present.len(), a.mismatched.len()), (2, 1));
    // The arrival record still names the sender.
    let arrival = hub
        .storage
        .exchange
        .registry()
        .arrival(&hub_org, &study)
        .await
        .expect("arrival")
        .expect("recorded");
    assert_eq!(arrival.from_peer, "spoke-a");
    // The spoke's copy is unchanged (the hub routes nothing back).
    let spoke_held = spoke
        .storage
        .ingestor
        .index()
        .instances(&vesalius_store::query::Scope::study(study.clone()))
        .await
        .expect("instances");
    assert_eq!(spoke_held.len(), 3);
    let bytes = spoke
        .storage
        .ingestor
        .blobs()
        .read_range(&spoke_held[0].blob_key, 0..spoke_held[0].size)
        .await
        .expect("blob");
    let obj = vesalius_deid::coerce::read_object(&bytes).expect("object");
    assert_eq!(
        vesalius_deid::coerce::patient_id(&obj).as_deref(),
        Some(sender_id.as_str())
    );
    for s in sites {
        s.stop().await;
    }
}

/// A peer's Patient ID without issuer is indexed at the hub under `peer:NAME` (the bytes stay
/// as sent), so it does not share a patient record with the hub's own patient of the same ID
/// without issuer; linking it to that local patient (same ID, empty issuer: the bytes already
/// say so) rewrites it anyway, and then the hub has one patient.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r5_unqualified_ids_from_a_peer_are_kept_apart_until_linked() {
    let dir = tempfile::tempdir().expect("dir");
    let sites = crate::demo::start_network(dir.path())
        .await
        .expect("network");
    let (hub, spoke) = (&sites[0], &sites[1]);
    let hub_org = hub.cfg.storage.org.clone();
    let unqualified = PatientIdentity {
        patient_id: "12345".into(),
        issuer: String::new(),
        ..Default::default()
    };
    let rewrite = |files: Vec<PathBuf>| -> Vec<PathBuf> {
        for f in &files {
            let b = std::fs::read(f).expect("file");
            let out =
                coerce_patient_bytes(&b, &unqualified, "TEST", "20260101000000").expect("identity");
            std::fs::write(f, out).expect("write");
        }
        files
    };
    // The hub's own patient 12345 (no issuer), and the spoke's, sent over the network.
    let local = rewrite(ct_head(dir.path(), 12, 2));
    let ing = &hub.storage.ingestor;
    crate::test_site::ingest_files(ing, &hub_org, &local).await;
    let figures = crate::demo::send_and_wait(
        spoke,
        "CT_SPOKE_A",
        rewrite(ct_head(dir.path(), 13, 2)),
        hub.storage.exchange.subscribe(),
        Duration::from_secs(60),
    )
    .await
    .expect("delivered");
    let received = figures.study_uid.clone();
    let patients = || async {
        let mut q = vesalius_store::query::Query::new(vesalius_store::query::Level::Patient).with(
            vesalius_store::query::Key::PatientId,
            vesalius_store::query::Matcher::Single("12345".into()),
        );
        q.access = Some(vesalius_store::query::Access::orgs([hub_org.clone()]));
        let mut issuers: Vec<String> = ing
            .index()
            .find(&q)
            .await
            .expect("find")
            .iter()
            .map(|a| a.first_str(0x0010_0021).unwrap_or_default())
            .collect();
        issuers.sort();
        issuers
    };
    assert_eq!(patients().await, vec!["".to_owned(), "peer:spoke-a".into()]);
    // The delivered bytes are the sender's, unchanged (no issuer in the object).
    let held = ing
        .index()
        .instances(&vesalius_store::query::Scope::study(received.clone()))
        .await
        .expect("instances");
    let sent = spoke
        .storage
        .ingestor
        .index()
        .instances(&vesalius_store::query::Scope::study(received.clone()))
        .await
        .expect("instances");
    let hashes = |v: &[vesalius_store::model::StoredInstance]| {
        let mut h: Vec<String> = v.iter().map(|i| i.sha256.clone()).collect();
        h.sort();
        h
    };
    assert_eq!(hashes(&held), hashes(&sent));

    // Link it to the hub's patient 12345 without issuer.
    let user = hub
        .storage
        .auth
        .create_user(
            &Principal::system(),
            NewUser {
                username: "radio",
                display_name: "Radiographer",
                email: "",
                memberships: &[Membership {
                    org: hub_org.clone(),
                    role: Role::Radiographer,
                }],
                password: None,
                service: false,
                must_change_password: false,
            },
            Origin::default(),
        )
        .await
        .expect("user");
    let (_, token) = hub
        .storage
        .auth
        .create_token(
            &Principal::system(),
            &user.id,
            &hub_org,
            Role::Radiographer,
            "t",
            None,
            Origin::default(),
        )
        .await
        .expect("token");
    let v: Value = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/studies/{received}/link-patient",
            hub.base_url()
        ))
        .bearer_auth(&token)
        .json(&json!({"issuer": "", "patient_id": "12345"}))
        .send()
        .await
        .expect("link")
        .json()
        .await
        .expect("json");
    assert_eq!(v["before"]["issuer"], "peer:spoke-a", "{v}");
    assert_eq!(v["changed"], 2, "{v}");
    assert_eq!(patients().await, vec!["".to_owned()]);
    // Linking again changes nothing.
    let v: Value = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/studies/{received}/link-patient",
            hub.base_url()
        ))
        .bearer_auth(&token)
        .json(&json!({"issuer": "", "patient_id": "12345"}))
        .send()
        .await
        .expect("link")
        .json()
        .await
        .expect("json");
    assert_eq!(v["changed"], 0, "{v}");
    for s in sites {
        s.stop().await;
    }
}
