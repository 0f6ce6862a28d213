//! Unmarking key images (issue 6, docs/web.md "Key images"), in process against a real site
//! (SQLite, blobs on disk, HTTP on loopback): a user withdraws their own key image documents
//! (an IOCM rejection note, and a new document for their other images), never another user's
//! (an administrator may), never an image; the last one too; what QIDO-RS shows after each;
//! refusals and audit events.

use serde_json::{Value, json};
use vesalius_store::audit::{AuditFilter, Outcome};
use vesalius_store::directory::Role;
use vesalius_store::key_objects;

use crate::site::RunningSite;
use crate::test_site;

const NORTH: &str = "north";
const SOUTH: &str = "south";

struct Fixture {
    _dir: tempfile::TempDir,
    site: RunningSite,
    http: reqwest::Client,
    /// `(username, token)`.
    tokens: Vec<(String, String)>,
}

impl Fixture {
    async fn start() -> Fixture {
        let dir = tempfile::tempdir().expect("dir");
        let site = RunningSite::start(test_site::config(dir.path(), NORTH))
            .await
            .expect("site");
        let auth = &site.storage.auth;
        test_site::put_orgs(auth, &[(NORTH, NORTH), (SOUTH, SOUTH)]).await;
        let mut tokens = Vec::new();
        for (name, org, role) in [
            ("alice", NORTH, Role::Clinician),
            ("bob", NORTH, Role::Clinician),
            ("boss", NORTH, Role::Admin),
            ("ref", NORTH, Role::Referrer),
            ("southadmin", SOUTH, Role::Admin),
        ] {
            let user = test_site::user(auth, name, org, role, None).await;
            let text = test_site::token(auth, &user, org, role).await;
            tokens.push((name.to_owned(), text));
        }
        Fixture {
            _dir: dir,
            site,
            http: reqwest::Client::new(),
            tokens,
        }
    }

    async fn call(&self, who: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let token = &self.tokens.iter().find(|(n, _)| n == who).expect("user").1;
        let mut rq = self
            .http
            .request(
                method.parse().expect("method"),
                format!("{}{path}", self.site.base_url()),
            )
            .bearer_auth(token)
            .header("accept", "application/dicom+json");
        if let Some(b) = body {
            rq = rq
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = rq.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn mark(&self, base: &str, who: &str, sops: Vec<String>) -> String {
        let (status, v) = self
            .call(who, "POST", base, Some(json!({ "instances": sops })))
            .await;
        assert_eq!(status, 201, "{v}");
        v["sopInstanceUID"].as_str().expect("sop").to_owned()
    }

    async fn unmark(&self, base: &str, who: &str, sop: String) -> (u16, Value) {
        self.call(who, "DELETE", &format!("{base}/{sop}"), None)
            .await
    }

    /// The study's instances as QIDO-RS shows them to alice: SOP Instance UID → modality.
    async fn instances(&self, study: &str) -> Vec<(String, String)> {
        let (status, v) = self
            .call(
                "alice",
                "GET",
                &format!("/dicom-web/studies/{study}/instances?includefield=00080060"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        let mut out: Vec<_> = v
            .as_array()
            .expect("answers")
            .iter()
            .map(|a| {
                (
                    a["00080018"]["Value"][0].as_str().unwrap_or("").to_owned(),
                    a["00080060"]["Value"][0].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// The key images the study's KOs flag, as a viewer reads them (WADO-RS metadata of every
    /// KO that is not a rejection note): SOP Instance UIDs, sorted.
    async fn key_images(&self, study: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (sop, modality) in self.instances(study).await {
            if modality != "KO" {
                continue;
            }
            let (_, v) = self
                .call(
                    "alice",
                    "GET",
                    &format!("/dicom-web/studies/{study}/metadata"),
                    None,
                )
                .await;
            for m in v.as_array().expect("metadata") {
                if m["00080018"]["Value"][0] == sop && !key_objects::is_rejection_note(m) {
                    out.extend(key_objects::referenced_images(m));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

#[tokio::test]
async fn users_unmark_their_own_key_images_and_never_hide_an_image() {
    let f = Fixture::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let mut opts = vesalius_synth::SynthOptions::new(5);
    opts.slices = 3;
    opts.kinds = vec!["ct-head".parse().expect("kind")];
    let r = vesalius_synth::write_studies(&opts, dir.path()).expect("synth");
    let study = r.studies[0].clone();
    test_site::ingest_files(&f.site.storage.ingestor, NORTH, &r.files).await;
    let images: Vec<String> = f.instances(&study).await.into_iter().map(|i| i.0).collect();
    assert_eq!(images.len(), 3);
    let (s0, s1, s2) = (&images[0], &images[1], &images[2]);
    let base = format!("/api/v1/studies/{study}/key-images");
    let mark = |who: &'static str, sops: Vec<String>| f.mark(&base, who, sops);
    let unmark = |who: &'static str, sop: &String| f.unmark(&base, who, sop.clone());
    // Alice marks s0 and s1 together, then s2; Bob marks s2 too.
    let a01 = mark("alice", vec![s0.clone(), s1.clone()]).await;
    let a2 = mark("alice", vec![s2.clone()]).await;
    let b2 = mark("bob", vec![s2.clone()]).await;
    assert_eq!(
        f.key_images(&study).await,
        [s0.clone(), s1.clone(), s2.clone()]
    );

    // Refusals: Bob may not unmark what only Alice marked; a user of another organisation
    // does not see the study; a referrer without a grant neither; a malformed UID is a 400.
    let (status, v) = unmark("bob", s0).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"], "forbidden");
    assert_eq!(unmark("southadmin", s0).await.0, 404);
    assert_eq!(unmark("ref", s0).await.0, 404);
    let (status, v) = f
        .call("alice", "DELETE", &format!("{base}/not-a-uid"), None)
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(f.key_images(&study).await.len(), 3, "nothing withdrawn");

    // Alice unmarks s0: her document of s0 and s1 is withdrawn, a new one keeps s1.
    let (status, v) = unmark("alice", s0).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rejected"], json!([a01]));
    assert_eq!(v["replacements"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["replacements"][0]["referenced"], 1);
    let a1 = v["replacements"][0]["sopInstanceUID"]
        .as_str()
        .expect("sop")
        .to_owned();
    let note = v["rejectionNote"]["sopInstanceUID"]
        .as_str()
        .expect("note")
        .to_owned();
    let shown: Vec<String> = f.instances(&study).await.into_iter().map(|i| i.0).collect();
    assert!(
        !shown.contains(&a01),
        "the withdrawn document is hidden: {shown:?}"
    );
    for sop in [&a1, &note, &a2, &b2, s0, s1, s2] {
        assert!(shown.contains(sop), "{sop} shown: {shown:?}");
    }
    assert_eq!(f.key_images(&study).await, [s1.clone(), s2.clone()]);

    // s2: Alice withdraws her own mark only; Bob's stays until an administrator withdraws it.
    let (status, v) = unmark("alice", s2).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rejected"], json!([a2]));
    assert_eq!(v["replacements"], json!([]));
    assert_eq!(v["stillFlaggedBy"], 1, "Bob's document");
    assert_eq!(f.key_images(&study).await, [s1.clone(), s2.clone()]);
    let (status, v) = unmark("boss", s2).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rejected"], json!([b2]));
    assert_eq!(f.key_images(&study).await, std::slice::from_ref(s1));

    // The last key image: no new document (a KO references at least one instance), the
    // rejection note alone withdraws it.
    let (status, v) = unmark("alice", s1).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rejected"], json!([a1]));
    assert_eq!(v["replacements"], json!([]));
    assert!(f.key_images(&study).await.is_empty());
    // Again: nothing left to withdraw, nothing made.
    let before = f.instances(&study).await;
    let (status, v) = unmark("alice", s1).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rejected"], json!([]));
    assert_eq!(v["rejectionNote"], Value::Null);
    assert_eq!(f.instances(&study).await, before);
    // The images are all there.
    let cts = before.iter().filter(|i| i.1 == "CT").count();
    assert_eq!(cts, 3);

    // Audited: Alice's unmarks, Bob's refusal.
    let trail = f
        .site
        .storage
        .auth
        .audit_log()
        .search(&AuditFilter {
            study_uid: Some(study.clone()),
            action: Some("key-images".into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("audit");
    let unmarks = |name: &str, outcome: Outcome| {
        trail
            .iter()
            .filter(|r| {
                r.event.actor.name == name
                    && r.event.outcome == outcome
                    && r.event.details.get("unmark").is_some()
            })
            .count()
    };
    assert!(unmarks("alice", Outcome::Success) >= 4, "{trail:#?}");
    assert_eq!(unmarks("bob", Outcome::Denied), 1);
    assert_eq!(unmarks("boss", Outcome::Success), 1);
}
