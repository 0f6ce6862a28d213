//! Multi-site tests of the exchange (issue 5), in process: real sites (SQLite, blobs on disk,
//! HTTP and DICOM on loopback) linked as `vesalius demo` links them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::TryStreamExt;
use vesalius_store::outbox::{JobFilter, ReceiptFilter};
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
            let t = outbox.transfers(10).await.unwrap();
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
            let t = outbox.transfers(10).await.unwrap();
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
    assert_eq!(outbox.transfers(10).await.unwrap()[0].complete_ms, 0);
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
