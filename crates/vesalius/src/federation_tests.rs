//! Federated search, remote viewing and pulls (issue 5) across real sites in process, linked
//! as `vesalius demo` links them: the spokes let the hub search them (`may_query`), the hub
//! does not let the spokes search it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use vesalius_exchange::ExchangeEvent;
use vesalius_store::audit::AuditFilter;

use crate::demo::{self, DEMO_PASSWORD};
use crate::site::RunningSite;

/// The files of one synthetic study and its Study Instance UID.
fn synth(dir: &Path, seed: u64, kind: &str, slices: u32) -> (Vec<PathBuf>, String) {
    let mut opts = vesalius_synth::SynthOptions::new(seed);
    opts.slices = slices;
    opts.kinds = vec![kind.parse().expect("kind")];
    let w = vesalius_synth::write_studies(&opts, &dir.join(format!("synth-{kind}-{seed}")))
        .expect("synth");
    (w.files, w.studies[0].clone())
}

/// A logged-in user of a site: its session cookie and CSRF token.
struct Session {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

impl Session {
    async fn login(site: &RunningSite, username: &str) -> Session {
        let http = reqwest::Client::new();
        let base = site.base_url();
        let resp = http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"username": username, "password": DEMO_PASSWORD}))
            .send()
            .await
            .expect("login");
        assert_eq!(resp.status(), 200, "login of {username}");
        let cookie = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("vesalius_session="))
            .expect("session cookie")
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let body: Value = resp.json().await.expect("login JSON");
        Session {
            http,
            base,
            cookie,
            csrf: body["csrf"].as_str().unwrap_or_default().to_owned(),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .expect("GET")
    }

    async fn get_json(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self.get(path).await;
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        (status, headers, r.json().await.unwrap_or(Value::Null))
    }

    async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .header("x-csrf-token", &self.csrf)
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

async fn store(site: &RunningSite, scanner: &str, files: Vec<PathBuf>) {
    let s = vesalius_dimse::scu::store_files(
        &site.dicom.to_string(),
        scanner,
        &site.cfg.dicom.ae_title,
        files,
        |_, _| {},
    )
    .await
    .expect("C-STORE");
    assert_eq!(s.failed, 0, "{:?}", s.failures);
}

fn by_uid<'a>(studies: &'a [Value], uid: &str) -> &'a Value {
    studies
        .iter()
        .find(|s| s["study_instance_uid"] == uid)
        .unwrap_or_else(|| panic!("study {uid} in {studies:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r5_federated_search_labels_sites_views_remotely_and_survives_a_peer_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut sites = demo::start_network(dir.path()).await.unwrap();
    // A CT head at spoke A, routed to the hub (held at both); an MR at spoke B only.
    let (ct, _) = synth(dir.path(), 11, "ct-head", 4);
    let f = demo::send_and_wait(
        &sites[1],
        "CT_SPOKE_A",
        ct,
        sites[0].storage.exchange.subscribe(),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let (mr, mr_uid) = synth(dir.path(), 12, "mr-brain", 3);
    let n = mr.len();
    store(&sites[2], "CT_SPOKE_B", mr).await;

    let hub = Session::login(&sites[0], "admin-hub").await;
    let (status, _, body) = hub.get_json("/api/v1/search").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["complete"], true, "{body}");
    let sites_json = body["sites"].as_array().unwrap();
    assert_eq!(sites_json.len(), 3, "this site and both spokes: {body}");
    assert!(sites_json.iter().all(|s| s["status"] == "ok"), "{body}");
    let studies = body["studies"].as_array().unwrap();
    let ct = by_uid(studies, &f.study_uid);
    assert_eq!(ct["sites"], json!(["hub", "spoke-a"]), "held here and at A");
    assert_eq!(ct["local"], true);
    assert_eq!(
        ct["dicomweb_path"],
        format!("/dicom-web/studies/{}", f.study_uid)
    );
    let remote = by_uid(studies, &mr_uid);
    assert_eq!(remote["sites"], json!(["spoke-b"]));
    assert_eq!(remote["local"], false);
    assert_eq!(
        remote["dicomweb_path"],
        format!("/dicom-web/peers/spoke-b/studies/{mr_uid}")
    );
    assert_eq!(remote["instances"], n);
    assert_eq!(
        studies
            .iter()
            .filter(|s| s["study_instance_uid"] == f.study_uid.as_str())
            .count(),
        1,
        "de-duplicated"
    );
    // Local scope: only what the hub holds.
    let (_, _, local) = hub.get_json("/api/v1/search?scope=local").await;
    assert!(
        local["studies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["local"] == true)
    );

    // QIDO-RS scope=network: the same, labelled, with RetrieveURLs through the hub's proxy.
    let (status, _, qido) = hub
        .get_json(&format!(
            "/dicom-web/studies?scope=network&StudyInstanceUID={mr_uid}"
        ))
        .await;
    assert_eq!(status, 200);
    let qido = qido.as_array().unwrap().clone();
    assert_eq!(qido.len(), 1);
    assert_eq!(qido[0]["00091001"]["Value"], json!(["spoke-b"]));
    let url = qido[0]["00081190"]["Value"][0].as_str().unwrap();
    assert_eq!(
        url,
        format!("{}/dicom-web/peers/spoke-b/studies/{mr_uid}", hub.base)
    );
    // Plain QIDO (no scope) stays local.
    let (_, _, plain) = hub
        .get_json(&format!("/dicom-web/studies?StudyInstanceUID={mr_uid}"))
        .await;
    assert_eq!(plain, json!([]));

    // Remote viewing: metadata and a rendered image of B's study, through the hub.
    let root = format!("/dicom-web/peers/spoke-b/studies/{mr_uid}");
    let (status, _, meta) = hub.get_json(&format!("{root}/metadata")).await;
    assert_eq!(status, 200, "{meta}");
    let meta = meta.as_array().unwrap().clone();
    assert_eq!(meta.len(), n);
    let series = meta[0]["0020000E"]["Value"][0].as_str().unwrap().to_owned();
    let sop = meta[0]["00080018"]["Value"][0].as_str().unwrap().to_owned();
    let text = serde_json::to_string(&meta).unwrap();
    assert!(
        !text.contains(&sites[2].base_url()),
        "no URL of the peer itself leaks to the viewer"
    );
    let rendered = format!("{root}/series/{series}/instances/{sop}/rendered");
    let via_hub = hub.get(&rendered).await;
    assert_eq!(via_hub.status(), 200);
    assert_eq!(via_hub.headers()["content-type"], "image/jpeg");
    let via_hub = via_hub.bytes().await.unwrap();
    let at_b = Session::login(&sites[2], "admin-spoke-b").await;
    let direct = at_b
        .get(&format!(
            "/dicom-web/studies/{mr_uid}/series/{series}/instances/{sop}/rendered"
        ))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(via_hub, direct, "the same image as at the peer");
    // The peer audited the access as the hub's user.
    let events = sites[2]
        .storage
        .auth
        .audit_log()
        .search(&AuditFilter::default())
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.event.actor.name.contains("peer:hub for admin-hub")
                && e.event.action == "retrieve"),
        "spoke B audits the hub user's view"
    );
    // Refusals: a path that is not DICOMweb, a peer of another organisation.
    let (status, _, _) = hub.get_json("/dicom-web/peers/spoke-b/api/v1/users").await;
    assert_eq!(status, 400);
    let (status, _, _) = hub
        .get_json(&format!(
            "/dicom-web/peers/nobody/studies/{mr_uid}/metadata"
        ))
        .await;
    assert_eq!(status, 404);
    // A spoke may not search the hub (the hub did not give it may_query): its network search
    // reports the refusal and still answers with its own studies.
    let a = Session::login(&sites[1], "admin-spoke-a").await;
    let (status, _, body) = a.get_json("/api/v1/search").await;
    assert_eq!(status, 200);
    let hub_part = &body["sites"].as_array().unwrap()[1];
    assert_eq!(hub_part["site"], "hub");
    assert_eq!(body["studies"].as_array().unwrap().len(), 1, "{body}");
    assert!(
        hub_part["status"] == "ok" && hub_part["count"] == 0 || hub_part["status"] == "refused",
        "{body}"
    );

    // Spoke B goes down: the search still answers, says so, and cached views still work.
    let b = sites.remove(2);
    b.stop().await;
    let (status, _, body) = hub.get_json("/api/v1/search").await;
    assert_eq!(status, 200);
    assert_eq!(body["complete"], false);
    let b_part = body["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == "spoke-b")
        .unwrap();
    assert!(
        b_part["status"] == "unreachable" || b_part["status"] == "timeout",
        "{body}"
    );
    assert!(by_uid(body["studies"].as_array().unwrap(), &f.study_uid)["local"] == true);
    let (status, headers, _) = hub.get_json("/dicom-web/studies?scope=network").await;
    assert_eq!(status, 200);
    let warning = headers
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        warning.contains("299") && warning.contains("spoke-b"),
        "{warning}"
    );
    let again = hub.get(&rendered).await;
    assert_eq!(again.status(), 200, "served from the hub's cache");
    assert_eq!(again.bytes().await.unwrap(), direct);
    for s in sites {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r5_pull_to_local_copies_a_remote_study_with_the_transfer_engine() {
    let dir = tempfile::tempdir().unwrap();
    let sites = demo::start_network(dir.path()).await.unwrap();
    let (mr, mr_uid) = synth(dir.path(), 21, "mr-brain", 3);
    let n = mr.len() as u64;
    store(&sites[2], "CT_SPOKE_B", mr).await;
    let mut events = sites[0].storage.exchange.subscribe();
    let hub = Session::login(&sites[0], "admin-hub").await;
    let (status, body) = hub
        .post_json(
            "/api/v1/peers/spoke-b/pull",
            json!({"study_uid": mr_uid, "priority": 100}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["instances"], n);
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(ExchangeEvent::StudyComplete {
                study_uid,
                from_peer,
                priority,
                instances,
                ..
            }) = events.recv().await
                && study_uid == mr_uid
            {
                assert_eq!(
                    (from_peer.as_str(), priority, instances),
                    ("spoke-b", 100, n)
                );
                return;
            }
        }
    })
    .await
    .expect("the pulled study completes at the hub");
    // Now held at the hub: a local search finds it.
    let (_, _, local) = hub
        .get_json(&format!(
            "/api/v1/search?scope=local&StudyInstanceUID={mr_uid}"
        ))
        .await;
    assert_eq!(local["studies"].as_array().unwrap().len(), 1, "{local}");
    // The spoke's receipts say it was delivered and verified.
    let receipts = sites[2]
        .storage
        .exchange
        .outbox()
        .receipts(&vesalius_store::outbox::ReceiptFilter::default())
        .await
        .unwrap();
    assert!(receipts.iter().filter(|r| r.study_uid == mr_uid).count() as u64 >= n);
    // Errors: an unknown study is a 404, a bad UID a 400; the spokes may not pull from the hub.
    let (status, _) = hub
        .post_json(
            "/api/v1/peers/spoke-b/pull",
            json!({"study_uid": "1.2.3.4"}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = hub
        .post_json("/api/v1/peers/spoke-b/pull", json!({"study_uid": "x y"}))
        .await;
    assert_eq!(status, 400);
    let a = Session::login(&sites[1], "admin-spoke-a").await;
    let (status, body) = a
        .post_json("/api/v1/peers/hub/pull", json!({"study_uid": mr_uid}))
        .await;
    assert_eq!(status, 403, "{body}");
    for s in sites {
        s.stop().await;
    }
}

/// Issue 6: the sender's worklist rows carry its outgoing transfers. A CT head stored at spoke
/// A is routed to the hub (the demo's stroke route): the users' event stream at the spoke
/// announces the transfer's steps and its end, and spoke A's search row of the study says
/// delivered to the hub, every instance verified, with the hub's study receipt; the hub's row
/// of the same study (a delivery it received) lists no outgoing transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r6_outgoing_transfers_show_on_the_senders_worklist_rows() {
    use vesalius_api::events::StudyEvent;
    let dir = tempfile::tempdir().unwrap();
    let sites = demo::start_network(dir.path()).await.unwrap();
    let (ct, ct_uid) = synth(dir.path(), 51, "ct-head", 4);
    let n = ct.len() as u64;
    let mut user_events = sites[1].storage.study_events.subscribe();
    store(&sites[1], "CT_SPOKE_A", ct).await;
    let mut states = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(StudyEvent::Transfer {
                study_uid,
                to,
                state,
                ..
            }) = user_events.recv().await
                && study_uid == ct_uid
            {
                assert_eq!(to, "hub");
                states.push(state.clone());
                if state == "delivered" {
                    return;
                }
            }
        }
    })
    .await
    .expect("the transfer to the hub is announced to spoke A's users");
    assert_eq!(
        states.first().map(String::as_str),
        Some("sending"),
        "{states:?}"
    );
    let a = Session::login(&sites[1], "admin-spoke-a").await;
    let (status, _, found) = a
        .get_json(&format!(
            "/api/v1/search?scope=local&StudyInstanceUID={ct_uid}"
        ))
        .await;
    assert_eq!(status, 200, "{found}");
    let row = by_uid(found["studies"].as_array().unwrap(), &ct_uid);
    let out = row["outgoing"].as_array().expect("outgoing");
    assert_eq!(out.len(), 1, "{row}");
    assert_eq!(
        (
            out[0]["to"].as_str(),
            out[0]["state"].as_str(),
            out[0]["delivered"].as_u64(),
            out[0]["verified"].as_u64(),
            out[0]["total"].as_u64()
        ),
        (Some("hub"), Some("delivered"), Some(n), Some(n), Some(n))
    );
    assert!(out[0]["complete_ms"].as_i64().unwrap() > 0);
    let hub = Session::login(&sites[0], "admin-hub").await;
    let (_, _, at_hub) = hub
        .get_json(&format!(
            "/api/v1/search?scope=local&StudyInstanceUID={ct_uid}"
        ))
        .await;
    let row = by_uid(at_hub["studies"].as_array().unwrap(), &ct_uid);
    assert_eq!(row["outgoing"], json!([]), "{row}");
    for s in sites {
        s.stop().await;
    }
}

/// Issue 6: the worklist's pages come from the server. Studies at the hub and both spokes
/// (several patients each): `/api/v1/search` sorted by `orderby` and paged by `limit` and
/// `offset` gives, page after page, exactly the whole merged list in that order, with a
/// `total` and `more`; bad paging parameters are 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r6_federated_search_is_sorted_and_paged_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let sites = demo::start_network(dir.path()).await.unwrap();
    let n = fill_sites(&sites, dir.path(), "paged", 60, |_| {
        &["ct-head", "mr-brain"]
    })
    .await;
    assert!(n >= 12, "{n} studies");
    let hub = Session::login(&sites[0], "admin-hub").await;
    let key = |s: &Value, k: &str| s[k].as_str().unwrap_or("").to_owned();
    for (orderby, field, desc) in [
        ("-StudyDate", "study_date", true),
        ("StudyDate", "study_date", false),
        ("PatientName", "patient_name", false),
    ] {
        let (status, _, whole) = hub
            .get_json(&format!("/api/v1/search?orderby={orderby}&limit=500"))
            .await;
        assert_eq!(status, 200, "{whole}");
        assert_eq!(whole["complete"], true, "{whole}");
        let whole: Vec<Value> = whole["studies"].as_array().unwrap().clone();
        assert_eq!(whole.len(), n, "{orderby}: every study once");
        let keys: Vec<String> = whole.iter().map(|s| key(s, field).to_uppercase()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        if desc {
            sorted.reverse();
        }
        assert_eq!(keys, sorted, "{orderby}: sorted by {field}");
        let mut paged: Vec<Value> = Vec::new();
        for offset in (0..).step_by(5) {
            let (status, _, page) = hub
                .get_json(&format!(
                    "/api/v1/search?orderby={orderby}&limit=5&offset={offset}"
                ))
                .await;
            assert_eq!(status, 200, "{page}");
            // Known exactly once no site holds more than it sent (the last pages here).
            assert!(
                page["total"].is_null() || page["total"] == n,
                "{orderby} at {offset}: {page}"
            );
            assert_eq!(
                (page["offset"].as_u64(), page["limit"].as_u64()),
                (Some(offset), Some(5))
            );
            let studies = page["studies"].as_array().unwrap().clone();
            let more = page["more"].as_bool().unwrap();
            assert_eq!(more, offset + 5 < n as u64, "{orderby} at {offset}");
            paged.extend(studies);
            if !more {
                assert_eq!(page["total"], n, "{orderby}: the last page knows the total");
                break;
            }
        }
        let uids = |v: &[Value]| -> Vec<String> {
            v.iter().map(|s| key(s, "study_instance_uid")).collect()
        };
        assert_eq!(
            uids(&paged),
            uids(&whole),
            "{orderby}: the pages are the whole list"
        );
    }
    for bad in [
        "/api/v1/search?orderby=PatientID",
        "/api/v1/search?limit=0",
        "/api/v1/search?limit=ten",
        "/api/v1/search?offset=490&limit=20",
        "/dicom-web/studies?orderby=StudyTime",
    ] {
        let (status, _, body) = hub.get_json(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    for s in sites {
        s.stop().await;
    }
}

/// Issue 6: the worklist's filters and order that come from the hub's arrivals (`priority`,
/// `status`, `orderby=priority`) and its site filter (`site`) are applied by the server before
/// paging: page after page (3 a page), every study once, in order, with an exact total. A CT
/// head routed from spoke A (a real delivery, priority 100) is held at both and labelled so
/// under an arrival filter; the hub's own studies get arrivals written into its registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r6_worklist_filters_and_priority_order_are_paged_by_the_server() {
    use vesalius_store::registry::{Arrival, RegistryChange};
    let dir = tempfile::tempdir().unwrap();
    let sites = demo::start_network(dir.path()).await.unwrap();
    // CT heads and MRs at the hub (no routes there); MRs only at the spokes (their route sends
    // CT heads to the hub, and only the one below should go).
    let mut n = fill_sites(&sites, dir.path(), "wl", 80, |i| {
        if i == 0 {
            &["ct-head", "mr-brain"]
        } else {
            &["mr-brain"]
        }
    })
    .await;
    let (ct, _) = synth(dir.path(), 11, "ct-head", 2);
    let routed = demo::send_and_wait(
        &sites[1],
        "CT_SPOKE_A",
        ct,
        sites[0].storage.exchange.subscribe(),
        Duration::from_secs(60),
    )
    .await
    .unwrap()
    .study_uid;
    n += 1;
    let hub = Session::login(&sites[0], "admin-hub").await;
    let uids = |v: &Value| -> Vec<String> {
        v["studies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["study_instance_uid"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, _, local) = hub.get_json("/api/v1/search?scope=local&limit=500").await;
    let own: Vec<String> = uids(&local).into_iter().filter(|u| *u != routed).collect();
    assert!(own.len() >= 6, "{local}");
    // Arrivals at the hub for four of its own studies.
    let arrival = |uid: &str, priority: i32, complete_ms: i64, from: &str| {
        RegistryChange::PutArrival(Arrival {
            org: "csc".into(),
            study_uid: uid.into(),
            from_peer: from.into(),
            priority,
            manifest_instances: 1,
            complete_ms,
            updated_ms: 1,
        })
    };
    sites[0]
        .storage
        .exchange
        .registry()
        .apply(
            vec![
                arrival(&own[0], 100, 5, "spoke-a"),
                arrival(&own[1], 100, 0, "spoke-b"),
                arrival(&own[2], 0, 5, "spoke-a"),
                arrival(&own[3], 20, 5, "spoke-b"),
            ],
            vec![],
        )
        .await
        .unwrap();

    // The whole list (one page of 500) and the same by pages of 3 must agree.
    let paged = |query: &'static str| {
        let hub = &hub;
        async move {
            let (status, _, whole) = hub
                .get_json(&format!("/api/v1/search?{query}&limit=500"))
                .await;
            assert_eq!(status, 200, "{query}: {whole}");
            let mut pages: Vec<String> = Vec::new();
            for offset in (0..).step_by(3) {
                let (status, _, page) = hub
                    .get_json(&format!("/api/v1/search?{query}&limit=3&offset={offset}"))
                    .await;
                assert_eq!(status, 200, "{query}: {page}");
                let got = uids(&page);
                let more = page["more"].as_bool().unwrap();
                if more {
                    assert_eq!(got.len(), 3, "{query} at {offset}: a full page");
                }
                pages.extend(got);
                if !more {
                    assert_eq!(page["total"], pages.len(), "{query}: {page}");
                    break;
                }
            }
            assert_eq!(pages, uids(&whole), "{query}: the pages are the whole list");
            assert_eq!(whole["total"], pages.len(), "{query}");
            whole
        }
    };
    let set = |v: &Value| -> std::collections::BTreeSet<String> { uids(v).into_iter().collect() };
    let of = |xs: &[&String]| -> std::collections::BTreeSet<String> {
        xs.iter().map(|s| (*s).clone()).collect()
    };

    let stroke = paged("priority=50").await;
    assert_eq!(set(&stroke), of(&[&own[0], &own[1], &routed]), "{stroke}");
    let both = by_uid(stroke["studies"].as_array().unwrap(), &routed);
    assert_eq!(
        both["sites"],
        json!(["hub", "spoke-a"]),
        "labelled by the peers"
    );
    assert_eq!(both["arrival"]["from_peer"], "spoke-a");
    assert_eq!(
        by_uid(stroke["studies"].as_array().unwrap(), &own[1])["arrival"]["complete_ms"],
        0
    );
    let complete = paged("status=complete").await;
    assert_eq!(
        set(&complete),
        of(&[&own[0], &own[2], &own[3], &routed]),
        "{complete}"
    );
    assert_eq!(set(&paged("status=arriving").await), of(&[&own[1]]));
    assert_eq!(
        set(&paged("status=complete&site=spoke-b").await),
        of(&[&own[3]]),
        "delivered by spoke B"
    );
    assert!(uids(&paged("status=arriving&priority=101").await).is_empty());
    let none = paged("status=none").await;
    assert_eq!(none["total"], n - 5, "{none}");
    assert!(
        none["studies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["arrival"].is_null())
    );

    // Priority, then newest: 100 (newest first), 20, then every other study newest first.
    let prio = paged("orderby=priority").await;
    assert_eq!(prio["total"], n);
    let rows = prio["studies"].as_array().unwrap();
    let key = |s: &Value| {
        (
            std::cmp::Reverse(s["arrival"]["priority"].as_i64().unwrap_or(0).max(0)),
            std::cmp::Reverse(s["study_date"].as_str().unwrap_or("").to_owned()),
        )
    };
    let keys: Vec<_> = rows.iter().map(key).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "{prio}");
    assert_eq!(
        rows[3]["study_instance_uid"],
        own[3].as_str(),
        "priority 20 fourth"
    );
    // With a filter the search matches, the head keeps only what matches.
    let mr = paged("orderby=priority&ModalitiesInStudy=MR").await;
    assert!(
        mr["studies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["modalities"] == json!(["MR"])),
        "{mr}"
    );

    // A peer's studies only, labelled with the hub where it holds them too; this site's name
    // is the local scope.
    let at_a = paged("site=spoke-a&orderby=PatientName").await;
    let rows = at_a["studies"].as_array().unwrap();
    assert!(
        rows.iter()
            .all(|s| s["sites"].as_array().unwrap().contains(&json!("spoke-a")))
    );
    assert_eq!(by_uid(rows, &routed)["sites"], json!(["hub", "spoke-a"]));
    assert_eq!(by_uid(rows, &routed)["local"], true);
    assert_eq!(
        set(&paged("site=hub").await),
        set(&local),
        "site=hub is scope=local"
    );

    // `count=true`: the first page knows the total (every site asked 500 deep).
    let (_, _, counted) = hub
        .get_json("/api/v1/search?orderby=priority&limit=3&count=true")
        .await;
    assert_eq!(
        (counted["total"].as_u64(), counted["more"].as_bool()),
        (Some(n as u64), Some(true)),
        "{counted}"
    );
    assert_eq!(uids(&counted), uids(&prio)[..3]);
    let (_, _, uncounted) = hub
        .get_json("/api/v1/search?orderby=priority&limit=3")
        .await;
    assert!(uncounted["total"].is_null(), "{uncounted}");

    for (bad, want) in [
        ("/api/v1/search?count=yes", 400),
        ("/api/v1/search?status=here", 400),
        ("/api/v1/search?priority=high", 400),
        ("/api/v1/search?orderby=Priority", 400),
        ("/api/v1/search?site=spoke-a&scope=local", 400),
        ("/api/v1/search?site=nowhere", 404),
    ] {
        let (status, _, body) = hub.get_json(bad).await;
        assert_eq!(status, want, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: JSON error {body}");
    }
    for s in sites {
        s.stop().await;
    }
}

/// Stores synthetic studies (4 patients, one slice each, of the kinds `kinds(i)` names) into
/// every site `i` of the network, as its own scanner, from seed `seed + i`; the number of
/// studies stored.
async fn fill_sites(
    sites: &[RunningSite],
    dir: &Path,
    name: &str,
    seed: u64,
    kinds: impl Fn(usize) -> &'static [&'static str],
) -> usize {
    let mut n = 0;
    for (i, site) in sites.iter().enumerate() {
        let mut opts = vesalius_synth::SynthOptions::new(seed + i as u64);
        opts.slices = 1;
        opts.patients = 4;
        opts.kinds = kinds(i).iter().map(|k| k.parse().unwrap()).collect();
        let w =
            vesalius_synth::write_studies(&opts, &dir.join(format!("{name}-{i}"))).expect("synth");
        n += w.studies.len();
        store(site, ["CT_HUB", "CT_SPOKE_A", "CT_SPOKE_B"][i], w.files).await;
    }
    n
}
