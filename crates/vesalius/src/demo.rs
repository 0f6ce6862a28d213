//! `vesalius demo`: a small regional stroke network on loopback (issue 5). A hub ("Comprehensive
//! Stroke Centre") and two spokes, each a whole site with its own data directory, DICOM and
//! HTTP ports and site key, peered with each other; each spoke routes every CT head to the hub at
//! stroke priority. A synthetic CT head is sent into spoke A by C-STORE, as a scanner would, and
//! the demo prints how long after the last slice the study was complete at the hub, then the
//! URLs to open. It runs until Ctrl-C.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::sync::broadcast;
use vesalius_exchange::ExchangeEvent;
use vesalius_store::registry::{Route, RouteDestination, RouteMatch};

use crate::config::Config;
use crate::site::RunningSite;

/// `vesalius demo` options.
#[derive(Args)]
pub struct DemoArgs {
    /// Where the three sites keep their data (emptied at start).
    #[arg(long, default_value = "./vesalius-demo")]
    pub dir: PathBuf,
    /// Slices of the synthetic CT head sent into spoke A.
    #[arg(long, default_value_t = 300)]
    pub slices: u32,
    /// Start, send, print the figures and stop (for scripts and tests) instead of running
    /// until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The demo's administrator password on every site (printed; demo data only).
pub const DEMO_PASSWORD: &str = "stroke-demo-2026";

/// Stroke priority (routes and the hub's worklist).
pub const STROKE_PRIORITY: i32 = 100;

/// The sites: (site name, organisation id, organisation name, scanner AE title).
const SITES: [(&str, &str, &str, &str); 3] = [
    ("hub", "csc", "Comprehensive Stroke Centre", "CT_HUB"),
    (
        "spoke-a",
        "dgh-a",
        "District General Hospital A",
        "CT_SPOKE_A",
    ),
    (
        "spoke-b",
        "dgh-b",
        "District General Hospital B",
        "CT_SPOKE_B",
    ),
];

fn site_config(dir: &std::path::Path, name: &str, org: &str) -> Config {
    let mut cfg = Config::default();
    cfg.storage.data_dir = dir.join(name);
    cfg.storage.org = org.into();
    cfg.site.name = name.into();
    cfg.dicom.addr = "127.0.0.1:0".parse().expect("address");
    cfg.http.addr = "127.0.0.1:0".parse().expect("address");
    cfg.limits.min_free_bytes = 0;
    cfg.exchange.poll_ms = 500;
    cfg.exchange.backoff_base_ms = 200;
    cfg.exchange.backoff_max_ms = 5_000;
    cfg
}

/// The route every spoke has: CT of the head or brain to the hub at stroke priority.
pub fn ct_head_route(org: &str, hub: &str) -> Route {
    Route {
        id: "ct-head-to-hub".into(),
        name: "CT head to the stroke centre".into(),
        org: org.into(),
        enabled: true,
        order: 0,
        matcher: RouteMatch {
            modality: vec!["CT".into()],
            body_part: vec!["HEAD".into(), "BRAIN".into()],
            ..Default::default()
        },
        destinations: vec![RouteDestination::Peer(hub.into())],
        priority: STROKE_PRIORITY,
        deid: None,
        managed: false,
        created_ms: vesalius_exchange::now_ms(),
    }
}

/// Starts and links the three sites.
pub async fn start_network(dir: &std::path::Path) -> Result<Vec<RunningSite>> {
    let mut sites = Vec::new();
    for (name, org, org_name, scanner) in SITES {
        let site = RunningSite::start(site_config(dir, name, org))
            .await
            .with_context(|| format!("starting {name}"))?;
        site.create_org_admin(org, org_name, &format!("admin-{name}"), DEMO_PASSWORD)
            .await?;
        site.add_caller(scanner, org).await?;
        sites.push(site);
    }
    let (hub_org, spokes) = (SITES[0].1, &SITES[1..]);
    stroke_alert(&sites[0], hub_org, &format!("admin-{}", SITES[0].0)).await?;
    // The hub knows each spoke (deliveries land in the hub's organisation); each spoke knows the
    // hub (which may search it) and routes CT heads there.
    let spoke_peers = sites[1..]
        .iter()
        .map(|s| s.as_peer(hub_org, false))
        .collect();
    sites[0].put_exchange(spoke_peers, vec![]).await?;
    for (i, (_, org, _, _)) in spokes.iter().enumerate() {
        let hub_peer = sites[0].as_peer(org, true);
        let route = ct_head_route(org, &hub_peer.name);
        sites[i + 1]
            .put_exchange(vec![hub_peer], vec![route])
            .await?;
    }
    Ok(sites)
}

/// Issue 6: the hub's administrator is alerted in the app (a beep, a browser notification, a
/// link to the viewer) when a stroke-priority study arrives: a `stroke-arrival` rule of the
/// hub's organisation and an in-app subscription (docs/alerts.md).
async fn stroke_alert(hub: &RunningSite, org: &str, username: &str) -> Result<()> {
    use vesalius_store::alerts::{AlertChange, AlertKind, AlertRule, Channel, Subscription};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let rule = AlertRule {
        id: "demo-stroke-arrival".into(),
        org: org.into(),
        name: "Stroke-priority study arrived".into(),
        kind: AlertKind::StrokeArrival,
        threshold: i64::from(STROKE_PRIORITY),
        escalation: vec![],
        escalate_after_ms: 0,
        enabled: true,
        created_ms: now,
    };
    let sub = Subscription {
        id: "demo-stroke-arrival-admin".into(),
        rule_id: rule.id.clone(),
        org: org.into(),
        username: username.into(),
        channel: Channel::InApp,
        target: String::new(),
        secret: String::new(),
        escalation_only: false,
        created_ms: now,
    };
    hub.storage
        .alerts
        .store()
        .apply_alerts(
            vec![
                AlertChange::PutRule(rule),
                AlertChange::PutSubscription(sub),
            ],
            vec![],
        )
        .await?;
    Ok(())
}

/// What sending a study through the network measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    /// Instances sent into the spoke.
    pub instances: usize,
    /// First C-STORE to last C-STORE response at the spoke, s.
    pub spoke_ingest_s: f64,
    /// Last C-STORE response at the spoke to "study complete" at the hub, s.
    pub lag_s: f64,
    /// First C-STORE at the spoke to "study complete" at the hub, s.
    pub end_to_end_s: f64,
    /// The study.
    pub study_uid: String,
}

/// Sends the files into `spoke` by C-STORE as `scanner` and waits for "study complete" at
/// `hub` (events from `hub_events`, subscribed before sending).
pub async fn send_and_wait(
    spoke: &RunningSite,
    scanner: &str,
    files: Vec<PathBuf>,
    mut hub_events: broadcast::Receiver<ExchangeEvent>,
    deadline: Duration,
) -> Result<Figures> {
    let n = files.len();
    let started = Instant::now();
    let summary = vesalius_dimse::scu::store_files(
        &spoke.dicom.to_string(),
        scanner,
        &spoke.cfg.dicom.ae_title,
        files,
        |_, _| {},
    )
    .await?;
    let ingested = started.elapsed();
    if summary.failed > 0 {
        bail!(
            "{} of {n} instances refused by the spoke: {:?}",
            summary.failed,
            summary.failures
        );
    }
    let last = Instant::now();
    let study_uid = tokio::time::timeout(deadline, async {
        loop {
            match hub_events.recv().await {
                Ok(ExchangeEvent::StudyComplete {
                    study_uid,
                    instances,
                    ..
                }) if instances as usize == n => return Ok(study_uid),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => bail!("hub events: {e}"),
            }
        }
    })
    .await
    .context("the study did not complete at the hub in time")??;
    Ok(Figures {
        instances: n,
        spoke_ingest_s: ingested.as_secs_f64(),
        lag_s: last.elapsed().as_secs_f64(),
        end_to_end_s: started.elapsed().as_secs_f64(),
        study_uid,
    })
}

/// Runs the demo.
pub async fn run(a: DemoArgs) -> Result<()> {
    if a.dir.exists() {
        std::fs::remove_dir_all(&a.dir).with_context(|| format!("emptying {}", a.dir.display()))?;
    }
    std::fs::create_dir_all(&a.dir)?;
    let sites = start_network(&a.dir).await?;
    let mut opts = vesalius_synth::SynthOptions::new(7);
    opts.slices = a.slices;
    opts.kinds = vec!["ct-head".parse().map_err(|e| anyhow::anyhow!("{e}"))?];
    let synth_dir = a.dir.join("scanner");
    let files = vesalius_synth::write_studies(&opts, &synth_dir)
        .context("writing the synthetic CT head")?
        .files;
    if !a.json {
        println!("Vesalius demo: a stroke network on loopback");
        for s in &sites {
            println!(
                "  {:8} {}  (DICOM {} AE {}, site key {})",
                s.storage.identity.name(),
                s.base_url(),
                s.dicom,
                s.cfg.dicom.ae_title,
                s.storage.identity.public_key()
            );
        }
        println!(
            "sending a {}-slice synthetic CT head into spoke-a as scanner {} ...",
            files.len(),
            SITES[1].3
        );
    }
    let figures = send_and_wait(
        &sites[1],
        SITES[1].3,
        files,
        sites[0].storage.exchange.subscribe(),
        Duration::from_secs(120),
    )
    .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        println!(
            "  spoke-a received {} instances in {:.2} s",
            figures.instances, figures.spoke_ingest_s
        );
        println!(
            "  complete at the hub {:.3} s after the last slice ({:.2} s from the first), every instance verified by SHA-256",
            figures.lag_s, figures.end_to_end_s
        );
        let hub = sites[0].base_url();
        println!("open the hub:");
        println!("  web app        : {hub}/worklist  (user admin-hub, password {DEMO_PASSWORD})");
        println!("  the study      : {hub}/view/{}", figures.study_uid);
        println!(
            "  its series     : {hub}/dicom-web/studies/{}/series",
            figures.study_uid
        );
        println!("  worklist (QIDO): {hub}/dicom-web/studies");
        println!("  arrivals       : {hub}/api/v1/arrivals");
        println!(
            "  spoke transfers: {}/api/v1/transfers (user admin-spoke-a)",
            sites[1].base_url()
        );
        println!(
            "send more: storescu -aet {} -aec VESALIUS {} FILES",
            SITES[1].3,
            sites[1].dicom.to_string().replace(':', " ")
        );
    }
    if !a.exit {
        if !a.json {
            println!("running; Ctrl-C stops the three sites");
        }
        tokio::signal::ctrl_c().await?;
    }
    for s in sites {
        s.stop().await;
    }
    Ok(())
}
