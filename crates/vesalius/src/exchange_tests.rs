//! Multi-site tests of the exchange (issue 5), in process: real sites (SQLite, blobs on disk,
//! HTTP and DICOM on loopback) linked as `vesalius demo` links them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::TryStreamExt;
use vesalius_store::outbox::{JobFilter, ReceiptFilter, ReceiptKind};
use vesalius_store::query::Scope;
use vesalius_store::registry::RegistryChange;

use crate::demo::{self, STROKE_PRIORITY};
use crate::site::RunningSite;

fn ct_head(dir: &Path, seed: u64, slices: u32) -> Vec<PathBuf> {
    let mut opts = vesalius_synth::SynthOptions::new(seed);
    opts.slices = slices;
    opts.kinds = vec!["ct-head".parse().expect("kind")];
    vesalius_synth::write_studies(&opts, &dir.join(format!("synth-{seed}")))
        .expect("synth")
        .files
}

/// SOP Instance UID → SHA-256 of the bytes each site holds of `study`.
async fn held(site: &RunningSite, study: &str) -> BTreeMap<String, String> {
    let index = site.storage.ingestor.index();
    let mut out = BTreeMap::new();
    for i in index
        .instances(&Scope::study(study))
        .await
        .expect("instances")
    {
        let bytes: Vec<bytes::Bytes> = site
            .storage
            .ingestor
            .blobs()
            .read(&i.blob_key)
            .await
            .expect("blob")
            .try_collect()
            .await
            .expect("read");
        let sha = vesalius_auth::secret::sha256_hex(bytes.concat());
        assert_eq!(sha, i.sha256, "blob matches its index row");
        out.insert(i.sop_instance_uid, sha);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r5_ct_head_is_routed_verified_and_complete_at_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let sites = demo::start_network(dir.path()).await.unwrap();
    let (hub, spoke) = (&sites[0], &sites[1]);
    let files = ct_head(dir.path(), 3, 12);
    let f = demo::send_and_wait(
        spoke,
        "CT_SPOKE_A",
        files,
        hub.storage.exchange.subscribe(),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(f.instances, 12);
    // Issue 6: the demo's rule alerts the hub's administrator, with a link to the viewer.
    let mut alerted = Vec::new();
    for _ in 0..100 {
        alerted = hub
            .storage
            .alerts
            .store()
            .alerts_of("admin-hub", true, 10)
            .await
            .unwrap();
        if !alerted.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(alerted.len(), 1, "one stroke-arrival alert for admin-hub");
    assert_eq!(alerted[0].study_uid.as_deref(), Some(f.study_uid.as_str()));
    assert_eq!(
        alerted[0].link.as_deref(),
        Some(format!("/view/{}", f.study_uid).as_str())
    );
    // Byte-identical copies at the hub, in the hub's organisation.
    let at_spoke = held(spoke, &f.study_uid).await;
    let at_hub = held(hub, &f.study_uid).await;
    assert_eq!(at_spoke.len(), 12);
    assert_eq!(at_spoke, at_hub);
    let arrival = hub
        .storage
        .exchange
        .registry()
        .arrival("csc", &f.study_uid)
        .await
        .unwrap()
        .expect("arrival recorded");
    assert_eq!(arrival.from_peer, "spoke-a");
    assert_eq!(arrival.priority, STROKE_PRIORITY);
    assert_eq!(arrival.manifest_instances, 12);
    assert!(arrival.complete_ms > 0);
    // The sender's receipts: every instance verified, and a study receipt.
    // (The spoke writes its study receipt when the hub's signed answer reaches it, just after
    // the hub raised "study complete".)
    let outbox = spoke.storage.exchange.outbox();
    let t = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let t = outbox
                .transfers(&vesalius_store::outbox::TransferFilter::limit(10))
                .await
                .unwrap();
            if t.first().is_some_and(|t| t.complete_ms > 0) {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("study receipt at the spoke");
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].queue, "peer:hub");
    assert_eq!((t[0].delivered, t[0].verified, t[0].pending), (12, 12, 0));
    assert!(t[0].complete_ms > 0);
    // Verified by the hub's signed STOW-RS answers (each instance's SHA-256 in it), without a
    // manifest per batch.
    let receipts = outbox
        .receipts(&vesalius_store::outbox::ReceiptFilter {
            study_uid: Some(f.study_uid.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let instance_receipts: Vec<_> = receipts
        .iter()
        .filter(|r| r.kind == vesalius_store::outbox::ReceiptKind::Instance)
        .collect();
    assert_eq!(instance_receipts.len(), 12);
    assert!(
        instance_receipts
            .iter()
            .all(|r| r.verified && r.detail == "stored (STOW-RS), hash verified (signed answer)"),
        "{instance_receipts:?}"
    );
    // Spoke B routed nothing; nothing of spoke A's reached it.
    assert!(held(&sites[2], &f.study_uid).await.is_empty());
    // An MR does not match the CT head route: no job.
    let before = outbox.jobs(&JobFilter::default()).await.unwrap().len();
    let mut opts = vesalius_synth::SynthOptions::new(9);
    opts.kinds = vec!["mr-brain".parse().unwrap()];
    let mr = vesalius_synth::write_studies(&opts, &dir.path().join("mr"))
        .unwrap()
        .files;
    let s = vesalius_dimse::scu::store_files(
        &spoke.dicom.to_string(),
        "CT_SPOKE_A",
        "VESALIUS",
        mr,
        |_, _| {},
    )
    .await
    .unwrap();
    assert!(s.sent > 0 && s.failed == 0);
    assert_eq!(
        outbox.jobs(&JobFilter::default()).await.unwrap().len(),
        before
    );
    for s in sites {
        s.stop().await;
    }
}

/// Points `spoke`'s peer record `hub` at `hub`'s (new) address.
async fn point_at_hub(spoke: &RunningSite, hub: &RunningSite) {
    let registry = spoke.storage.exchange.registry();
    let mut peer = registry.peer("hub").await.unwrap().unwrap();
    peer.base_url = hub.base_url();
    registry
        .apply(vec![RegistryChange::PutPeer(peer)], vec![])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r5_hub_down_then_back_the_spoke_queues_and_delivers_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let mut sites = demo::start_network(dir.path()).await.unwrap();
    let spoke_b = sites.pop().unwrap();
    spoke_b.stop().await;
    let spoke = sites.pop().unwrap();
    let hub = sites.pop().unwrap();
    let hub_cfg = hub.cfg.clone();
    hub.stop().await;
    // The spoke takes the study while the hub is down, and keeps retrying.
    let files = ct_head(dir.path(), 4, 8);
    let s = vesalius_dimse::scu::store_files(
        &spoke.dicom.to_string(),
        "CT_SPOKE_A",
        "VESALIUS",
        files,
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(s.sent, 8);
    let outbox = spoke.storage.exchange.outbox().clone();
    let failed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let jobs = outbox.jobs(&JobFilter::default()).await.unwrap();
            if jobs.len() == 8 && jobs.iter().all(|j| j.attempts >= 1) {
                return jobs;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the spoke retries while the hub is down");
    assert!(!failed[0].last_error.is_empty());
    // The hub comes back (same data directory and key, a new port).
    let hub = RunningSite::start(hub_cfg).await.unwrap();
    let events = hub.storage.exchange.subscribe();
    point_at_hub(&spoke, &hub).await;
    // Retried jobs are checked with a manifest first; everything arrives once.
    let mut events = events;
    let study = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(vesalius_exchange::ExchangeEvent::StudyComplete {
                study_uid,
                instances: 8,
                ..
            }) = events.recv().await
            {
                return study_uid;
            }
        }
    })
    .await
    .expect("study complete at the hub after it came back");
    assert_eq!(held(&hub, &study).await, held(&spoke, &study).await);
    let all = hub
        .storage
        .ingestor
        .index()
        .prior_versions(&Scope::study(&study))
        .await
        .unwrap();
    assert!(all.is_empty(), "no instance stored twice: {all:?}");
    let receipts = outbox.receipts(&ReceiptFilter::default()).await.unwrap();
    assert!(receipts.iter().any(|r| r.study_uid == study && r.verified));
    assert!(outbox.jobs(&JobFilter::default()).await.unwrap().is_empty());
    spoke.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r5_a_spoke_signing_with_the_wrong_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sites = demo::start_network(dir.path()).await.unwrap();
    let (hub, spoke) = (&sites[0], &sites[1]);
    // The hub now believes spoke-a has spoke-b's key: spoke-a's signatures no longer verify.
    let mut wrong = spoke.as_peer("csc", false);
    wrong.public_key = sites[2].storage.identity.public_key();
    hub.put_exchange(vec![wrong], vec![]).await.unwrap();
    let files = ct_head(dir.path(), 5, 3);
    vesalius_dimse::scu::store_files(
        &spoke.dicom.to_string(),
        "CT_SPOKE_A",
        "VESALIUS",
        files,
        |_, _| {},
    )
    .await
    .unwrap();
    let outbox = spoke.storage.exchange.outbox().clone();
    let jobs = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let jobs = outbox.jobs(&JobFilter::default()).await.unwrap();
            if !jobs.is_empty() && jobs.iter().all(|j| j.attempts >= 1) {
                return jobs;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("refused deliveries are retried, not lost");
    assert!(
        jobs.iter().all(|j| j.last_error.contains("401")),
        "{:?}",
        jobs.iter().map(|j| &j.last_error).collect::<Vec<_>>()
    );
    assert!(
        hub.storage
            .ingestor
            .index()
            .stats()
            .await
            .unwrap()
            .instances
            == 0
    );
    // The refusals are in the hub's audit trail.
    let refused = hub
        .storage
        .auth
        .audit_log()
        .search(&vesalius_store::audit::AuditFilter {
            action: Some("login-failed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!refused.is_empty());
    for s in sites {
        s.stop().await;
    }
}

/// Found by the fault-proxy test (tests/interop/test_exchange_faults.py): a final manifest that
/// got no answer was never sent again, so the hub never marked the study complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r5_a_final_manifest_without_answer_is_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut sites = demo::start_network(dir.path()).await.unwrap();
    sites.pop().unwrap().stop().await;
    let spoke = sites.pop().unwrap();
    let hub = sites.pop().unwrap();
    // The spoke waits 3 s after a study's last instance before its final manifest: time to
    // take the hub away once every instance is delivered and verified.
    let mut spoke_cfg = spoke.cfg.clone();
    spoke.stop().await;
    spoke_cfg.exchange.settle_ms = 3_000;
    let spoke = RunningSite::start(spoke_cfg).await.unwrap();
    let s = vesalius_dimse::scu::store_files(
        &spoke.dicom.to_string(),
        "CT_SPOKE_A",
        "VESALIUS",
        ct_head(dir.path(), 6, 4),
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(s.sent, 4);
    let outbox = spoke.storage.exchange.outbox().clone();
    let delivered = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let t = outbox
                .transfers(&vesalius_store::outbox::TransferFilter::limit(10))
                .await
                .unwrap();
            if t.first().is_some_and(|t| t.verified == 4) {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every instance delivered and verified");
    assert_eq!(
        delivered[0].complete_ms, 0,
        "final manifest before settle_ms"
    );
    let study = delivered[0].study_uid.clone();
    let hub_cfg = hub.cfg.clone();
    hub.stop().await;
    // The final manifest falls due while the hub is away and gets no answer.
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    assert_eq!(
        outbox
            .transfers(&vesalius_store::outbox::TransferFilter::limit(10))
            .await
            .unwrap()[0]
            .complete_ms,
        0
    );
    let hub = RunningSite::start(hub_cfg).await.unwrap();
    let mut events = hub.storage.exchange.subscribe();
    point_at_hub(&spoke, &hub).await;
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(vesalius_exchange::ExchangeEvent::StudyComplete {
                study_uid,
                instances: 4,
                ..
            }) = events.recv().await
                && study_uid == study
            {
                return;
            }
        }
    })
    .await
    .expect("the final manifest is sent again and the study completes at the hub");
    assert_eq!(held(&hub, &study).await, held(&spoke, &study).await);
    spoke.stop().await;
    hub.stop().await;
}

/// SOP Instance UID → the data set bytes (the file meta group, which each site writes itself,
/// left out) a site holds of `study`.
async fn held_data_sets(site: &RunningSite, study: &str) -> BTreeMap<String, Vec<u8>> {
    let index = site.storage.ingestor.index();
    let mut out = BTreeMap::new();
    for i in index.instances(&Scope::study(study)).await.unwrap() {
        let bytes: Vec<bytes::Bytes> = site
            .storage
            .ingestor
            .blobs()
            .read(&i.blob_key)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let bytes = bytes.concat();
        let start = vesalius_dimse::meta_length(&bytes).expect("a Part 10 blob");
        out.insert(i.sop_instance_uid, bytes[start..].to_vec());
    }
    out
}

/// A site for the priors test: `name`, organisation `org`, AE title `ae`, quick workers.
async fn priors_site(dir: &Path, name: &str, org: &str, ae: &str) -> RunningSite {
    let mut cfg = crate::config::Config::default();
    cfg.storage.data_dir = dir.join(name);
    cfg.storage.org = org.into();
    cfg.site.name = name.into();
    cfg.dicom.ae_title = ae.into();
    cfg.dicom.addr = "127.0.0.1:0".parse().unwrap();
    cfg.http.addr = "127.0.0.1:0".parse().unwrap();
    cfg.limits.min_free_bytes = 0;
    cfg.exchange.poll_ms = 100;
    cfg.exchange.route_refresh_ms = 100;
    cfg.exchange.prefetch_delay_ms = 100;
    cfg.exchange.backoff_base_ms = 100;
    cfg.exchange.backoff_max_ms = 1000;
    let site = RunningSite::start(cfg).await.unwrap();
    site.create_org_admin(org, org, &format!("admin-{name}"), "a long demo password 1")
        .await
        .unwrap();
    site
}

async fn put_ae(site: &RunningSite, ae: &str, org: &str, listen: Option<std::net::SocketAddr>) {
    use vesalius_store::directory::{AeEntry, DirectoryChange};
    site.storage
        .auth
        .directory()
        .apply(
            vec![DirectoryChange::PutAe(AeEntry {
                ae_title: ae.into(),
                org: org.into(),
                allowed_addrs: vec![],
                listen: listen.map(|a| (a.ip().to_string(), a.port())),
                description: String::new(),
                may_query: true,
            })],
            vec![],
        )
        .await
        .unwrap();
}

/// Issue 5, priors: another Vesalius plays the legacy PACS (its C-FIND and C-MOVE SCP). A
/// `prefetch:` route at our site fires when a CT of a patient arrives; the patient's MR, held only
/// at the PACS, arrives through our own C-STORE SCP, byte-identical, with receipts; the prefetch
/// runs once per study.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r5_prefetch_pulls_a_prior_from_a_dicom_node() {
    use vesalius_store::registry::{DicomNode, Prefetch, RouteDestination, RouteMatch};
    let dir = tempfile::tempdir().unwrap();
    let pacs = priors_site(dir.path(), "pacs", "radiology", "PACS_AE").await;
    let here = priors_site(dir.path(), "here", "st-marys", "HERE_AE").await;
    // The PACS knows us (querying, and as a move destination at our DICOM address); we know
    // the PACS (its stores land in st-marys) and a scanner.
    put_ae(&pacs, "HERE_AE", "radiology", Some(here.dicom)).await;
    put_ae(&pacs, "SEEDER", "radiology", None).await;
    put_ae(&here, "PACS_AE", "st-marys", None).await;
    put_ae(&here, "CT_HERE", "st-marys", None).await;
    let node = DicomNode {
        name: "pacs".into(),
        ae_title: "PACS_AE".into(),
        host: "127.0.0.1".into(),
        port: pacs.dicom.port(),
        transfer_syntaxes: vec![],
        retrieve: Default::default(),
        query_model: Default::default(),
        org: "st-marys".into(),
        description: String::new(),
        managed: false,
        created_ms: 0,
    };
    let mut rule = Prefetch::new("pacs");
    rule.max = 2;
    let route = vesalius_store::registry::Route {
        id: "ct-priors".into(),
        name: "priors of CTs".into(),
        org: "st-marys".into(),
        enabled: true,
        order: 0,
        matcher: RouteMatch {
            modality: vec!["CT".into()],
            ..Default::default()
        },
        destinations: vec![RouteDestination::Prefetch(rule)],
        priority: 10,
        deid: None,
        managed: false,
        created_ms: 0,
    };
    here.storage
        .exchange
        .registry()
        .apply(vec![RegistryChange::PutNode(node)], vec![])
        .await
        .unwrap();
    here.put_exchange(vec![], vec![route]).await.unwrap();

    // One patient: an MR at the PACS only, then a new CT here.
    let mut opts = vesalius_synth::SynthOptions::new(7);
    opts.slices = 3;
    opts.kinds = vec!["ct-head".parse().unwrap(), "mr-brain".parse().unwrap()];
    let files = vesalius_synth::write_studies(&opts, &dir.path().join("synth"))
        .unwrap()
        .files;
    let (mr, ct): (Vec<PathBuf>, Vec<PathBuf>) = files
        .into_iter()
        .partition(|p| p.to_string_lossy().contains("mr-brain"));
    let ct: Vec<PathBuf> = ct
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("_ct-head/"))
        .collect();
    assert!(!mr.is_empty() && !ct.is_empty());
    let s = vesalius_dimse::scu::store_files(
        &pacs.dicom.to_string(),
        "SEEDER",
        "PACS_AE",
        mr,
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(s.failed, 0, "{:?}", s.failures);
    // The MR's study: the only one at the PACS.
    let mr_study = pacs
        .storage
        .ingestor
        .index()
        .instances(&Scope::default())
        .await
        .unwrap()[0]
        .study_uid
        .clone();
    let s = vesalius_dimse::scu::store_files(
        &here.dicom.to_string(),
        "CT_HERE",
        "HERE_AE",
        ct,
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(s.failed, 0, "{:?}", s.failures);

    let at_pacs = held_data_sets(&pacs, &mr_study).await;
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let h = held_data_sets(&here, &mr_study).await;
            if h.len() == at_pacs.len() {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the prior MR arrives");
    assert_eq!(got, at_pacs, "byte-identical data sets");
    let owner = here
        .storage
        .ingestor
        .index()
        .instances(&Scope::study(&mr_study))
        .await
        .unwrap();
    assert!(owner.iter().all(|i| i.org == "st-marys"));
    // Receipts: one per instance and a study receipt on retrieve:pacs; one prefetch receipt.
    let outbox = here.storage.exchange.outbox();
    let t = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let t = outbox
                .transfers(&vesalius_store::outbox::TransferFilter::limit(10))
                .await
                .unwrap();
            if t.iter()
                .any(|t| t.queue == "retrieve:pacs" && t.complete_ms > 0)
            {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("retrieval receipt");
    let r = t.iter().find(|t| t.queue == "retrieve:pacs").unwrap();
    assert_eq!(r.study_uid, mr_study);
    assert_eq!(r.delivered as usize, at_pacs.len());
    let prefetch = outbox
        .receipts(&ReceiptFilter {
            queue: Some("prefetch:pacs".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(prefetch.len(), 1, "{prefetch:?}");
    assert!(prefetch[0].detail.contains("1 to retrieve"), "{prefetch:?}");
    // The prior arrived as an MR: the CT route does not match it; nothing is left queued.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(outbox.jobs(&JobFilter::default()).await.unwrap().is_empty());
    pacs.stop().await;
    here.stop().await;
}

/// Issue 5, priors by C-GET: the PACS (another Vesalius, its C-GET SCP) does not know our DICOM
/// address and its AE title is not registered here, so a C-MOVE could not work; the node's
/// `retrieve = get` brings the prior in on our own association. The prefetch matches on
/// modality: of the patient's CT head prior and MR at the PACS, only the CT comes, byte for byte
/// (RLE Lossless as stored, through the context proposed for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r5_prefetch_by_c_get_brings_only_the_relevant_prior() {
    use vesalius_store::registry::{
        DicomNode, Prefetch, PriorMatch, RetrieveMethod, RouteDestination, RouteMatch,
    };
    let dir = tempfile::tempdir().unwrap();
    let pacs = priors_site(dir.path(), "pacs", "radiology", "PACS_AE").await;
    let here = priors_site(dir.path(), "here", "st-marys", "HERE_AE").await;
    // The PACS lets us query and retrieve, but has no address for us.
    put_ae(&pacs, "HERE_AE", "radiology", None).await;
    put_ae(&pacs, "SEEDER", "radiology", None).await;
    put_ae(&here, "CT_HERE", "st-marys", None).await;
    let node = DicomNode {
        name: "pacs".into(),
        ae_title: "PACS_AE".into(),
        host: "127.0.0.1".into(),
        port: pacs.dicom.port(),
        transfer_syntaxes: vec![],
        retrieve: RetrieveMethod::Get,
        query_model: Default::default(),
        org: "st-marys".into(),
        description: String::new(),
        managed: false,
        created_ms: 0,
    };
    let mut rule = Prefetch::new("pacs");
    rule.matching = vec![PriorMatch::Modality];
    let route = vesalius_store::registry::Route {
        id: "ct-priors".into(),
        name: "relevant priors of CTs".into(),
        org: "st-marys".into(),
        enabled: true,
        order: 0,
        matcher: RouteMatch {
            modality: vec!["CT".into()],
            ..Default::default()
        },
        destinations: vec![RouteDestination::Prefetch(rule)],
        priority: 10,
        deid: None,
        managed: false,
        created_ms: 0,
    };
    here.storage
        .exchange
        .registry()
        .apply(vec![RegistryChange::PutNode(node)], vec![])
        .await
        .unwrap();
    here.put_exchange(vec![], vec![route]).await.unwrap();

    let mut opts = vesalius_synth::SynthOptions::new(7);
    opts.slices = 3;
    opts.kinds = vec![
        "ct-head".parse().unwrap(),
        "mr-brain".parse().unwrap(),
        "compressed-rle".parse().unwrap(),
    ];
    let files = vesalius_synth::write_studies(&opts, &dir.path().join("synth"))
        .unwrap()
        .files;
    let of = |kind: &str| -> Vec<PathBuf> {
        files
            .iter()
            .filter(|p| p.to_string_lossy().contains(&format!("_{kind}/")))
            .cloned()
            .collect()
    };
    let (ct, prior, mr) = (of("ct-head"), of("ct-head-prior"), of("mr-brain"));
    assert!(!ct.is_empty() && !prior.is_empty() && !mr.is_empty());
    let s = vesalius_dimse::scu::store_files(
        &pacs.dicom.to_string(),
        "SEEDER",
        "PACS_AE",
        [prior.clone(), mr.clone()].concat(),
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(s.failed, 0, "{:?}", s.failures);
    // The two studies at the PACS, by SOP class: the CT prior and the MR.
    let at_pacs_all = pacs
        .storage
        .ingestor
        .index()
        .instances(&Scope::default())
        .await
        .unwrap();
    let study_of = |class: &str| {
        at_pacs_all
            .iter()
            .find(|i| i.sop_class_uid == class)
            .unwrap()
            .study_uid
            .clone()
    };
    let prior_study = study_of("1.2.840.10008.5.1.4.1.1.2");
    let mr_study = study_of("1.2.840.10008.5.1.4.1.1.4");
    let s = vesalius_dimse::scu::store_files(
        &here.dicom.to_string(),
        "CT_HERE",
        "HERE_AE",
        ct,
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(s.failed, 0, "{:?}", s.failures);

    let at_pacs = held_data_sets(&pacs, &prior_study).await;
    assert_eq!(at_pacs.len(), prior.len());
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let h = held_data_sets(&here, &prior_study).await;
            if h.len() == at_pacs.len() {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the prior CT arrives");
    assert_eq!(got, at_pacs, "byte-identical data sets");
    let index = here.storage.ingestor.index();
    let held = index.instances(&Scope::study(&prior_study)).await.unwrap();
    assert!(held.iter().all(|i| i.org == "st-marys"));
    assert!(
        held.iter()
            .all(|i| i.transfer_syntax == vesalius_core::uid::RLE_LOSSLESS),
        "stored as the PACS stored it"
    );
    let outbox = here.storage.exchange.outbox();
    let t = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let r = outbox
                .receipts(&ReceiptFilter {
                    queue: Some("retrieve:pacs".into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            if r.iter().any(|r| r.kind == ReceiptKind::Study) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("retrieval receipt");
    let study = t.iter().find(|r| r.kind == ReceiptKind::Study).unwrap();
    assert!(
        study.detail.starts_with("C-GET from pacs (PACS_AE)")
            && study.detail.contains(&format!("{} held here", prior.len())),
        "{study:?}"
    );
    // Two prefetches: the new CT's, and the retrieved prior's (a CT too), skipped. The second
    // runs after the prior's arrival, so it may still be under way when the retrieval's
    // receipt is written.
    let prefetch = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let r = outbox
                .receipts(&ReceiptFilter {
                    queue: Some("prefetch:pacs".into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            if r.len() >= 2 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the prior's own prefetch receipt");
    assert_eq!(prefetch.len(), 2, "{prefetch:?}");
    let prior_one = prefetch
        .iter()
        .find(|r| r.study_uid == prior_study)
        .unwrap();
    assert!(prior_one.detail.starts_with("skipped"), "{prefetch:?}");
    let new_one = prefetch
        .iter()
        .find(|r| r.study_uid != prior_study)
        .unwrap();
    assert!(
        new_one.detail.contains(
            "1 not relevant by modality, 1 most recent kept, 0 already here, 1 to retrieve"
        ),
        "{prefetch:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        index
            .instances(&Scope::study(&mr_study))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(outbox.jobs(&JobFilter::default()).await.unwrap().is_empty());
    pacs.stop().await;
    here.stop().await;
}

/// An API token of administrator `username` in `org` on `site`.
async fn admin_token(site: &RunningSite, org: &str, username: &str) -> String {
    let auth = &site.storage.auth;
    let user = auth
        .directory()
        .user_by_name(username)
        .await
        .unwrap()
        .expect("the administrator");
    auth.create_token(
        &vesalius_auth::Principal::system(),
        &user.id,
        org,
        vesalius_store::directory::Role::Admin,
        "test",
        None,
        vesalius_auth::Origin::default(),
    )
    .await
    .unwrap()
    .1
}

/// Reads a server-sent event stream until `want` appears in it (or `wait` passes).
async fn read_until(resp: &mut reqwest::Response, want: &str, wait: Duration) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + wait;
    while !seen.contains(want) {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(b))) => seen.push_str(&String::from_utf8_lossy(&b)),
            _ => break,
        }
    }
    seen
}

/// Issue 6: a transfer's live events (`delivered`, `transfer-complete`) and its summary,
/// receipts and jobs reach the administrators of the sending organisation only: an
/// administrator of another organisation on the same site sees none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r6_transfer_events_and_lists_reach_only_the_sending_organisations_administrators() {
    let dir = tempfile::tempdir().unwrap();
    let sites = demo::start_network(dir.path()).await.unwrap();
    let (hub, spoke) = (&sites[0], &sites[1]);
    let ours = spoke.cfg.storage.org.clone();
    spoke
        .create_org_admin(
            "other",
            "Another hospital",
            "admin-other",
            "a fine test password",
        )
        .await
        .unwrap();
    let token_a = admin_token(spoke, &ours, "admin-spoke-a").await;
    let token_b = admin_token(spoke, "other", "admin-other").await;
    let http = reqwest::Client::new();
    let get = |token: &str, path: &str| {
        http.get(format!("{}{path}", spoke.base_url()))
            .bearer_auth(token)
            .send()
    };
    let mut stream_a = get(&token_a, "/api/v1/transfers/events").await.unwrap();
    let mut stream_b = get(&token_b, "/api/v1/transfers/events").await.unwrap();
    assert_eq!(
        (stream_a.status().as_u16(), stream_b.status().as_u16()),
        (200, 200)
    );
    let mut spoke_events = spoke.storage.exchange.subscribe();
    let f = demo::send_and_wait(
        spoke,
        "CT_SPOKE_A",
        ct_head(dir.path(), 6, 5),
        hub.storage.exchange.subscribe(),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    // The administrator of the sending organisation is told of the deliveries and the study
    // receipt.
    let seen_a = read_until(
        &mut stream_a,
        "event: transfer-complete",
        Duration::from_secs(30),
    )
    .await;
    assert!(seen_a.contains("event: delivered"), "{seen_a}");
    assert!(seen_a.contains("event: transfer-complete"), "{seen_a}");
    assert!(seen_a.contains(&f.study_uid), "{seen_a}");
    assert!(seen_a.contains(&format!("\"org\":\"{ours}\"")), "{seen_a}");
    // Every sender-side event the worker raised names the sending organisation.
    let mut kinds = Vec::new();
    while let Ok(e) = spoke_events.try_recv() {
        match e {
            vesalius_exchange::ExchangeEvent::Delivered { org, .. } => kinds.push(("d", org)),
            vesalius_exchange::ExchangeEvent::TransferComplete { org, .. } => {
                kinds.push(("c", org))
            }
            _ => {}
        }
    }
    assert!(kinds.iter().any(|(k, _)| *k == "d"), "{kinds:?}");
    assert!(kinds.iter().any(|(k, _)| *k == "c"), "{kinds:?}");
    assert!(kinds.iter().all(|(_, o)| *o == ours), "{kinds:?}");
    // The other organisation's administrator: everything up to a marker event of their own
    // (published after the transfer was complete) holds nothing of it.
    spoke
        .storage
        .exchange
        .publish(vesalius_exchange::ExchangeEvent::Parked {
            org: "other".into(),
            queue: "node:marker".into(),
            study_uid: "1.2.826.0.1.3680043.10.1137.777".into(),
            error: "marker".into(),
        });
    let seen_b = read_until(
        &mut stream_b,
        "1.2.826.0.1.3680043.10.1137.777",
        Duration::from_secs(10),
    )
    .await;
    assert!(seen_b.contains("event: parked"), "{seen_b}");
    assert!(
        !seen_b.contains(&f.study_uid)
            && !seen_b.contains("event: delivered")
            && !seen_b.contains("event: transfer-complete"),
        "another organisation's administrator got the transfer's events: {seen_b}"
    );
    // The lists follow the same rule.
    for path in [
        "/api/v1/transfers",
        "/api/v1/transfers/receipts",
        "/api/v1/transfers/jobs",
    ] {
        let b: serde_json::Value = get(&token_b, path).await.unwrap().json().await.unwrap();
        assert_eq!(b, serde_json::json!([]), "{path} for another organisation");
    }
    let a: serde_json::Value = get(&token_a, "/api/v1/transfers")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a[0]["study_uid"], f.study_uid.as_str(), "{a}");
    assert_eq!(a[0]["org"], ours.as_str(), "{a}");
    assert_eq!(a[0]["delivered"], 5, "{a}");
    let r: serde_json::Value = get(&token_a, "/api/v1/transfers/receipts")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r.as_array().map(Vec::len),
        Some(6),
        "five instances and the study: {r}"
    );
    drop((stream_a, stream_b));
    for s in sites {
        s.stop().await;
    }
}
