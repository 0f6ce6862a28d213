//! Resumable guest uploads (issue 6, `vesalius_api` `uploads.rs`, docs/sharing.md), in process
//! against a real site (SQLite, blobs on disk, HTTP on loopback): chunks, a wrong offset, a
//! body cut off half-way, a restart in the middle, the result asked twice and counted once,
//! what lands in the inbox (byte for byte), and the refusals (413, 404, 409, 400, 429, 401).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use vesalius_auth::{Origin, Principal};
use vesalius_store::directory::{DirectoryChange, Org};
use vesalius_store::query::{Access, Scope};

use crate::config::Config;
use crate::site::RunningSite;

const ORG: &str = "north";

fn config(dir: &std::path::Path) -> Config {
    crate::test_site::config(dir, ORG)
}

/// Three synthetic CT files.
fn files(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut opts = vesalius_synth::SynthOptions::new(11);
    opts.slices = 3;
    opts.kinds = vec!["ct-head".parse().expect("kind")];
    let r = vesalius_synth::write_studies(&opts, &dir.join("synth")).expect("synth");
    r.files
        .iter()
        .map(|f| std::fs::read(f).expect("file"))
        .collect()
}

/// A site with organisation `north` and an upload link of `max_bytes`: (site, link id, base
/// URL of the link's pages `…/upload/{id}/{secret}`).
async fn site_with_link(cfg: Config, max_bytes: u64) -> (RunningSite, String, String) {
    let site = RunningSite::start(cfg).await.expect("site");
    let auth = &site.storage.auth;
    auth.directory()
        .apply(
            vec![DirectoryChange::PutOrg(Org {
                id: ORG.into(),
                name: ORG.into(),
                created_ms: auth.now_ms(),
            })],
            vec![],
        )
        .await
        .expect("org");
    let (link, secret) = auth
        .create_upload_link(
            &Principal::system(),
            ORG,
            "for Dr X",
            max_bytes,
            3_600_000,
            Origin::default(),
        )
        .await
        .expect("link");
    let base = format!("{}/upload/{}/{}", site.base_url(), link.id, secret);
    (site, link.id, base)
}

async fn create(http: &reqwest::Client, base: &str, body: Value) -> (u16, Value) {
    let r = http
        .post(format!("{base}/files"))
        .json(&body)
        .send()
        .await
        .expect("create");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn patch(http: &reqwest::Client, url: &str, offset: u64, bytes: &[u8]) -> (u16, Value) {
    let r = http
        .patch(url)
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .expect("patch");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn head_offset(http: &reqwest::Client, url: &str) -> (u16, Option<u64>) {
    let r = http.head(url).send().await.expect("head");
    let off = r
        .headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (r.status().as_u16(), off)
}

/// The instances in organisation `north`'s inbox (where guest uploads land).
async fn inbox(site: &RunningSite) -> Vec<vesalius_store::model::StoredInstance> {
    site.storage
        .ingestor
        .index()
        .instances(&Scope {
            access: Some(Access::orgs([vesalius_store::model::inbox_org(ORG)])),
            ..Scope::default()
        })
        .await
        .expect("instances")
}

async fn used_bytes(site: &RunningSite, id: &str) -> u64 {
    site.storage
        .auth
        .directory()
        .upload_link(id)
        .await
        .expect("link")
        .expect("link")
        .used_bytes
}

#[tokio::test]
async fn chunks_resume_after_a_cut_and_a_restart_and_land_in_the_inbox_once() {
    let dir = tempfile::tempdir().expect("dir");
    let files = files(dir.path());
    let total: u64 = files.iter().map(|f| f.len() as u64).sum();
    let (site, link_id, base) = site_with_link(config(dir.path()), total + 10).await;
    let http = reqwest::Client::new();
    let origin = site.base_url();

    let info: Value = http
        .get(format!("{base}/info"))
        .send()
        .await
        .expect("info")
        .json()
        .await
        .expect("json");
    assert_eq!(info["label"], "for Dr X");
    assert_eq!(info["remaining_bytes"], total + 10);

    // File 0: three chunks, with a wrong offset in between.
    let f0 = &files[0];
    let (st, up) = create(
        &http,
        &base,
        json!({"name": "IM0", "length": f0.len(), "sha256": vesalius_auth::secret::sha256_hex(f0)}),
    )
    .await;
    assert_eq!(st, 201, "{up}");
    let url0 = format!("{origin}{}", up["url"].as_str().expect("url"));
    // The reservation shows in what the link still accepts.
    let info: Value = http
        .get(format!("{base}/info"))
        .send()
        .await
        .expect("info")
        .json()
        .await
        .expect("json");
    assert_eq!(info["reserved_bytes"], f0.len());
    let third = f0.len() / 3;
    let (st, v) = patch(&http, &url0, 0, &f0[..third]).await;
    assert_eq!((st, v["offset"].as_u64()), (200, Some(third as u64)), "{v}");
    assert_eq!(v["state"], "partial");
    let (st, v) = patch(&http, &url0, 0, &f0[..third]).await;
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["error"], "conflict");
    assert_eq!(v["offset"].as_u64(), Some(third as u64));
    // Nothing is visible before the last byte.
    assert!(inbox(&site).await.is_empty());

    // A body cut off half-way (the connection closes after 100 of 1000 declared bytes):
    // what arrived is kept, and HEAD says where to go on.
    let path = url0.strip_prefix(&origin).expect("path").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(site.http)
        .await
        .expect("connect");
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nUpload-Offset: {third}\r\nContent-Length: 1000\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    tcp.write_all(&f0[third..third + 100]).await.expect("write");
    tcp.flush().await.expect("flush");
    drop(tcp);
    let mut off = None;
    for _ in 0..50 {
        off = head_offset(&http, &url0).await.1;
        if off == Some(third as u64 + 100) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(off, Some(third as u64 + 100));

    // A restart: the partial upload is still there, at the same offset.
    let cfg = site.cfg.clone();
    drop(http);
    site.stop().await;
    let site = RunningSite::start(cfg).await.expect("restart");
    let http = reqwest::Client::new();
    let old_origin = origin;
    let origin = site.base_url();
    let base = base.replace(&old_origin, &origin);
    let url0 = url0.replace(&old_origin, &origin);
    let (st, off) = head_offset(&http, &url0).await;
    assert_eq!((st, off), (200, Some(third as u64 + 100)));
    let at = third + 100;
    // A chunk past the declared length: 413, nothing appended.
    let mut longer = f0[at..].to_vec();
    longer.push(0);
    let (st, v) = patch(&http, &url0, at as u64, &longer).await;
    assert_eq!(st, 413, "{v}");
    assert_eq!(v["error"], "payload-too-large");
    assert_eq!(head_offset(&http, &url0).await.1, Some(at as u64));
    // The rest: done, stored in the inbox.
    let (st, v) = patch(&http, &url0, at as u64, &f0[at..]).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["state"], "done");
    assert_eq!(v["result"]["outcome"], "stored", "{v}");
    assert_eq!(v["result"]["sha256"], vesalius_auth::secret::sha256_hex(f0));
    let used = used_bytes(&site, &link_id).await;
    assert_eq!(used, f0.len() as u64);
    // The answer was lost: asked again (GET, and the same PATCH), the same result, counted once.
    let (st, again) = patch(&http, &url0, at as u64, &f0[at..]).await;
    assert_eq!(st, 409, "{again}");
    assert_eq!(again["offset"].as_u64(), Some(f0.len() as u64));
    let (st, again) = patch(&http, &url0, f0.len() as u64, &[]).await;
    assert_eq!((st, &again["result"]), (200, &v["result"]));
    let got: Value = http
        .get(&url0)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(got["result"], v["result"]);
    assert_eq!(used_bytes(&site, &link_id).await, used);

    // Files 1 and 2 in one chunk each; file 2's twin again is a duplicate.
    for f in &files[1..] {
        let (st, up) = create(&http, &base, json!({"name": "IM", "length": f.len()})).await;
        assert_eq!(st, 201, "{up}");
        let url = format!("{origin}{}", up["url"].as_str().expect("url"));
        let (st, v) = patch(&http, &url, 0, f).await;
        assert_eq!(
            (st, &v["result"]["outcome"]),
            (200, &json!("stored")),
            "{v}"
        );
    }
    // The inbox holds each file once, byte for byte.
    let stored = inbox(&site).await;
    assert_eq!(stored.len(), files.len());
    for s in &stored {
        let blobs = site.storage.ingestor.blobs();
        let size = blobs.size(&s.blob_key).await.expect("size");
        let bytes = blobs.read_range(&s.blob_key, 0..size).await.expect("blob");
        assert!(
            files.iter().any(|f| f[..] == bytes[..]),
            "{}",
            s.sop_instance_uid
        );
    }
    assert_eq!(used_bytes(&site, &link_id).await, total);
    drop(http);
    site.stop().await;
}

#[tokio::test]
async fn refusals_are_json_with_their_codes() {
    let dir = tempfile::tempdir().expect("dir");
    let files = files(dir.path());
    let f = &files[0];
    let len = f.len() as u64;
    let (site, _link_id, base) = site_with_link(config(dir.path()), len * 3).await;
    let http = reqwest::Client::new();
    let origin = site.base_url();

    // Larger than the link accepts: 413 before any byte.
    let (st, v) = create(&http, &base, json!({"name": "big", "length": len * 3 + 1})).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (413, Some("payload-too-large")),
        "{v}"
    );
    // Two unfinished uploads reserve 2 × len; a third of 2 × len does not fit any more.
    let (st, a) = create(&http, &base, json!({"name": "a", "length": len})).await;
    assert_eq!(st, 201);
    let (st, _) = create(&http, &base, json!({"name": "b", "length": len})).await;
    assert_eq!(st, 201);
    let (st, v) = create(&http, &base, json!({"name": "c", "length": len * 2})).await;
    assert_eq!(st, 413, "{v}");
    // Bad bodies: 400.
    for body in [
        json!({"name": "x"}),
        json!({"length": 0}),
        json!({"length": 5, "sha256": "zz"}),
    ] {
        let (st, v) = create(&http, &base, body.clone()).await;
        assert_eq!(
            (st, v["error"].as_str()),
            (400, Some("bad-request")),
            "{body}: {v}"
        );
    }
    // Unknown upload, another link's path, a malformed id: 404.
    for id in ["AAAAAAAAAAAAAAAAAAAAAAAA", "a.b", "a-b"] {
        let url = format!("{base}/files/{id}");
        let (st, v) = patch(&http, &url, 0, b"x").await;
        assert_eq!(
            (st, v["error"].as_str()),
            (404, Some("not-found")),
            "{id}: {v}"
        );
        assert_eq!(head_offset(&http, &url).await.0, 404);
    }
    // A wrong secret: 401, whatever the upload.
    let url_a = format!("{origin}{}", a["url"].as_str().expect("url"));
    let wrong = url_a.replacen(
        base.rsplit('/').next().expect("secret"),
        "not-the-secret",
        1,
    );
    let (st, v) = patch(&http, &wrong, 0, b"x").await;
    assert_eq!(
        (st, v["error"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    // No Upload-Offset: 400.
    let r = http.patch(&url_a).body("x").send().await.expect("patch");
    assert_eq!(r.status(), 400);
    // Not DICOM, and a wrong declared SHA-256: rejected with a reason, nothing stored.
    let (st, v) = patch(&http, &url_a, 0, &vec![b'x'; len as usize]).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"]["outcome"], "rejected");
    assert_eq!(v["result"]["reason"], "invalid-dicom", "{v}");
    let (st, up) = create(
        &http,
        &base,
        json!({"name": "s", "length": len, "sha256": "0".repeat(64)}),
    )
    .await;
    assert_eq!(st, 201, "{up}");
    let url = format!("{origin}{}", up["url"].as_str().expect("url"));
    let (_, v) = patch(&http, &url, 0, f).await;
    assert_eq!(v["result"]["reason"], "sha256-mismatch", "{v}");
    assert!(inbox(&site).await.is_empty());
    // DELETE abandons an upload.
    let r = http.delete(&url).send().await.expect("delete");
    assert_eq!(r.status(), 204);
    assert_eq!(head_offset(&http, &url).await.0, 404);
    drop(http);
    site.stop().await;
}

#[tokio::test]
async fn unfinished_uploads_per_link_are_bounded() {
    let dir = tempfile::tempdir().expect("dir");
    let (site, _, base) = site_with_link(config(dir.path()), 1 << 30).await;
    let http = reqwest::Client::new();
    for i in 0..vesalius_api::uploads::MAX_PENDING_PER_LINK {
        let (st, v) = create(&http, &base, json!({"name": format!("f{i}"), "length": 10})).await;
        assert_eq!(st, 201, "{i}: {v}");
    }
    let (st, v) = create(&http, &base, json!({"name": "one more", "length": 10})).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (429, Some("too-many-requests")),
        "{v}"
    );
    drop(http);
    site.stop().await;
}

#[tokio::test]
async fn concurrent_uploads_cannot_share_the_allowance() {
    let dir = tempfile::tempdir().expect("dir");
    let (site, _, base) = site_with_link(config(dir.path()), 3000).await;
    let http = reqwest::Client::new();
    let tries = (0..6).map(|i| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            create(
                &http,
                &base,
                json!({"name": format!("f{i}"), "length": 1000}),
            )
            .await
            .0
        }
    });
    let mut codes = futures::future::join_all(tries).await;
    codes.sort_unstable();
    assert_eq!(codes, [201, 201, 201, 413, 413, 413]);
    drop(http);
    site.stop().await;
}

/// An API token of a new user of `ORG` with `role`.
async fn token(
    site: &RunningSite,
    username: &str,
    role: vesalius_store::directory::Role,
) -> String {
    let auth = &site.storage.auth;
    let user = auth
        .create_user(
            &Principal::system(),
            vesalius_auth::authenticator::NewUser {
                username,
                display_name: username,
                email: "",
                memberships: &[vesalius_store::directory::Membership {
                    org: ORG.into(),
                    role,
                }],
                password: None,
                service: false,
                must_change_password: false,
            },
            Origin::default(),
        )
        .await
        .expect("user");
    auth.create_token(
        &Principal::system(),
        &user.id,
        ORG,
        role,
        "test",
        None,
        Origin::default(),
    )
    .await
    .expect("token")
    .1
}

#[tokio::test]
async fn users_upload_into_their_own_organisation_and_see_only_their_uploads() {
    use vesalius_store::directory::Role;
    let dir = tempfile::tempdir().expect("dir");
    let files = files(dir.path());
    let (site, _, link_base) = site_with_link(config(dir.path()), 1000).await;
    let origin = site.base_url();
    let admin = token(&site, "north-admin", Role::Admin).await;
    let radiographer = token(&site, "north-radiographer", Role::Radiographer).await;
    let referrer = token(&site, "north-referrer", Role::Referrer).await;
    let http = reqwest::Client::new();
    let post = |t: &str, body: Value| {
        http.post(format!("{origin}/api/v1/uploads"))
            .bearer_auth(t)
            .json(&body)
            .send()
    };
    let f = &files[0];
    // Without the store right: 403; without credentials: 401.
    let r = post(&referrer, json!({"name": "x", "length": f.len()}))
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    let r = http
        .post(format!("{origin}/api/v1/uploads"))
        .json(&json!({"length": 5}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    // The administrator's upload, in two chunks; another user of the organisation cannot see it.
    let r = post(&admin, json!({"name": "IM0", "length": f.len()}))
        .await
        .expect("post");
    assert_eq!(r.status(), 201);
    let up: Value = r.json().await.expect("json");
    let url = format!("{origin}{}", up["url"].as_str().expect("url"));
    assert!(url.contains("/api/v1/uploads/"), "{url}");
    let half = f.len() / 2;
    let send = |t: &str, at: usize, bytes: &[u8]| {
        http.patch(&url)
            .bearer_auth(t)
            .header("Upload-Offset", at.to_string())
            .body(bytes.to_vec())
            .send()
    };
    let r = send(&admin, 0, &f[..half]).await.expect("patch");
    assert_eq!(r.status(), 200);
    let r = send(&radiographer, half, &f[half..]).await.expect("patch");
    assert_eq!(r.status(), 404);
    let r = http
        .get(&url)
        .bearer_auth(&radiographer)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let r = send(&admin, half, &f[half..]).await.expect("patch");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["result"]["outcome"], "stored", "{v}");
    // Stored into the organisation itself (not its inbox), byte for byte.
    let stored = site
        .storage
        .ingestor
        .index()
        .instances(&Scope {
            access: Some(Access::orgs([ORG])),
            ..Scope::default()
        })
        .await
        .expect("instances");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].sha256, vesalius_auth::secret::sha256_hex(f));
    // An upload link's paths do not reach a user's upload.
    let id = up["id"].as_str().expect("id");
    assert_eq!(
        head_offset(&http, &format!("{link_base}/files/{id}"))
            .await
            .0,
        404
    );
    drop(http);
    site.stop().await;
}

/// A client that goes away while its last chunk is being ingested (a page reloaded half-way:
/// the browser drops the request, the server the request's future) does not cancel the ingest
/// between the archive's answer and the record of the result: the upload is done, told the
/// same when asked again, in the inbox once and counted once. Before, the resumed page found it
/// complete but not done and ingested it again ("already there", its bytes counted twice).
#[tokio::test(flavor = "multi_thread")]
async fn r6_a_client_gone_during_the_last_chunk_leaves_the_upload_done_once() {
    let dir = tempfile::tempdir().expect("dir");
    let files = files(dir.path());
    let f = &files[0];
    let (site, link_id, base) = site_with_link(config(dir.path()), f.len() as u64 + 10).await;
    let http = reqwest::Client::new();
    let origin = site.base_url();
    let (st, up) = create(
        &http,
        &base,
        json!({"name": "IM0", "length": f.len(), "sha256": vesalius_auth::secret::sha256_hex(f)}),
    )
    .await;
    assert_eq!(st, 201, "{up}");
    let path = up["url"].as_str().expect("url").to_owned();
    let url = format!("{origin}{path}");

    // The whole file in one PATCH on a connection of our own, reset (RST) as soon as the
    // archive has the instance, that is between its ingest and the record of the result.
    let host = origin.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {host}\r\nUpload-Offset: 0\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        f.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("head");
    tcp.write_all(f).await.expect("body");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while inbox(&site).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the instance never reached the archive"
        );
        tokio::task::yield_now().await;
    }
    tcp.set_zero_linger().expect("linger");
    drop(tcp);

    // The resumed page asks where the upload stands (upload.js `currentOffset`): done, or — when
    // the reset came before the server had finished writing the chunk, so no ingest started —
    // complete but not done, which the page's empty `PATCH` at the end finishes. Either way the
    // file is stored once: before, a reset during the ingest left it complete but not done
    // *after* the archive had stored it, and that `PATCH` stored it again ("duplicate").
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut complete_since = None;
    let v = loop {
        let v: Value = http
            .get(&url)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if v["state"] == "done" {
            break v;
        }
        assert_eq!(v["offset"].as_u64(), Some(f.len() as u64), "{v}");
        let since = *complete_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() > Duration::from_secs(1) {
            let (st, v) = patch(&http, &url, f.len() as u64, &[]).await;
            if st == 200 {
                break v;
            }
            assert_eq!(st, 409, "{v}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upload stayed {v} after its client went away"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(v["result"]["outcome"], "stored", "{v}");
    // Asked again (the page's empty PATCH at the end), the same, without a second ingest.
    let (st, again) = patch(&http, &url, f.len() as u64, &[]).await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["result"], v["result"]);
    assert_eq!(used_bytes(&site, &link_id).await, f.len() as u64);
    assert_eq!(inbox(&site).await.len(), 1);
}
