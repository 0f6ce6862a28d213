//! `vesalius admin …`: work on a data directory directly (offline set-up and checks).
//!
//! `check` and `cert` work on files; `org`, `user`, `token` and `ae` edit the directory of the
//! index database and `site`, `peer`, `node` and `route` the exchange registry in it, with the
//! server stopped or running (see [`context`]), so deployments and tests are set up without a
//! browser. `patient` changes data, so it talks to the running server (`--server`).

mod ae;
pub(crate) mod context;
mod node;
mod node_qr;
mod org;
mod patient;
mod peer;
mod route;
mod site;
mod token;
mod user;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use futures::TryStreamExt;
use serde::Serialize;
use sha2::Digest;

use crate::config::Config;

/// Administration commands.
#[derive(Subcommand)]
pub enum AdminCommand {
    /// Verify every blob against the index (presence, size, SHA-256) and report orphans.
    Check {
        /// Data directory (default from the configuration).
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// Delete orphan blobs older than an hour (never ones an ingest may still commit).
        #[arg(long)]
        sweep: bool,
        /// Skip hashing (presence and size only).
        #[arg(long)]
        quick: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// TLS certificates for HTTPS and DICOM TLS.
    Cert {
        #[command(subcommand)]
        what: crate::tls::CertCommand,
    },
    /// Organisations: create, list.
    Org {
        /// Data directory (default from the configuration).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        what: org::OrgCommand,
    },
    /// Users and service accounts: create, list, disable, enable, passwd.
    User {
        /// Data directory (default from the configuration).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        what: user::UserCommand,
    },
    /// API tokens: create (shown once), list, revoke.
    Token {
        /// Data directory (default from the configuration).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        what: token::TokenCommand,
    },
    /// Calling AE titles (DICOM nodes) allowed to associate: add, list, remove.
    Ae {
        /// Data directory (default from the configuration).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        what: ae::AeCommand,
    },
    /// This site in the exchange network: show its name and public key.
    Site {
        /// Data directory (default from the configuration).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        what: site::SiteCommand,
    },
    /// Peer sites: add, list, remove, ping.
    Peer {
        /// Data directory (default from the configuration).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        what: peer::PeerCommand,
    },
    /// DICOM nodes routes send to and priors come from: add, list, remove, echo, find, retrieve.
    ///
    /// A node is retrieved from by C-MOVE (`--retrieve move`, the default: it must know our AE
    /// title, host and port, and its AE title must be registered here with `admin ae add`) or by
    /// C-GET (`--retrieve get`: the instances come back on our own association, so a node that
    /// cannot reach us works too). Prefetch routes (`admin route add --to
    /// 'prefetch:NODE?max=3&years=5&match=modality,body-part'`) retrieve a patient's relevant
    /// priors when a new study arrives (docs/exchange.md, "Priors from a legacy PACS").
    Node {
        /// Data directory (default from the configuration).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        what: node::NodeCommand,
    },
    /// Patient identity through the running server: link a study's patient to the local
    /// record, merge two patients, split studies off (docs/patients.md).
    Patient {
        #[command(flatten)]
        server: patient::ServerArgs,
        #[command(subcommand)]
        what: patient::PatientCommand,
    },
    /// Routes: add, list, remove, test against DICOM files.
    Route {
        /// Data directory (default from the configuration).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        what: route::RouteCommand,
    },
}

/// What `admin check` found.
#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    /// Blobs the index refers to.
    pub indexed: usize,
    /// Blobs verified intact.
    pub ok: usize,
    /// Indexed blobs that are missing.
    pub missing: Vec<String>,
    /// Indexed blobs whose size or hash differs.
    pub damaged: Vec<String>,
    /// Blobs no index row refers to.
    pub orphans: Vec<String>,
    /// Orphans deleted by `--sweep`.
    pub swept: usize,
}

/// Runs an admin command.
pub async fn run(cmd: AdminCommand, mut cfg: Config) -> Result<()> {
    match cmd {
        AdminCommand::Check {
            data_dir,
            sweep,
            quick,
            json,
        } => {
            if let Some(d) = data_dir {
                cfg.storage.data_dir = d;
            }
            let storage = crate::serve::open_storage(&cfg).await?;
            let report = check(&storage.ingestor, sweep, quick).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("indexed blobs : {}", report.indexed);
                println!("intact        : {}", report.ok);
                println!("missing       : {}", report.missing.len());
                println!("damaged       : {}", report.damaged.len());
                println!(
                    "orphans       : {} (swept {})",
                    report.orphans.len(),
                    report.swept
                );
                for k in report.missing.iter() {
                    println!("missing {k}");
                }
                for k in report.damaged.iter() {
                    println!("damaged {k}");
                }
                for k in report.orphans.iter() {
                    println!("orphan  {k}");
                }
            }
            if !report.missing.is_empty() || !report.damaged.is_empty() {
                anyhow::bail!("the archive has missing or damaged blobs");
            }
            Ok(())
        }
        AdminCommand::Cert { what } => crate::tls::run_cert(what),
        AdminCommand::Org { data_dir, what } => {
            let cx = context::AdminContext::open(&context::data_dir(&cfg, data_dir)).await?;
            org::run(&cx, what).await
        }
        AdminCommand::User { data_dir, what } => {
            let cx = context::AdminContext::open(&context::data_dir(&cfg, data_dir)).await?;
            user::run(&cx, what).await
        }
        AdminCommand::Token { data_dir, what } => {
            let cx = context::AdminContext::open(&context::data_dir(&cfg, data_dir)).await?;
            token::run(&cx, what).await
        }
        AdminCommand::Ae { data_dir, what } => {
            let cx = context::AdminContext::open(&context::data_dir(&cfg, data_dir)).await?;
            ae::run(&cx, what).await
        }
        AdminCommand::Site { data_dir, what } => {
            site::run(&cfg, &context::data_dir(&cfg, data_dir), what)
        }
        AdminCommand::Peer { data_dir, what } => {
            let dir = context::data_dir(&cfg, data_dir);
            let cx = context::AdminContext::open(&dir).await?;
            peer::run(&cx, &cfg, &dir, what).await
        }
        AdminCommand::Node { data_dir, what } => {
            let cx = context::AdminContext::open(&context::data_dir(&cfg, data_dir)).await?;
            node::run(&cx, &cfg, what).await
        }
        AdminCommand::Patient { server, what } => patient::run(server, what).await,
        AdminCommand::Route { data_dir, what } => {
            let cx = context::AdminContext::open(&context::data_dir(&cfg, data_dir)).await?;
            route::run(&cx, &cfg, what).await
        }
    }
}

/// Compares the index and the blob store.
pub async fn check(
    ingestor: &vesalius_store::Ingestor,
    sweep: bool,
    quick: bool,
) -> Result<CheckReport> {
    let indexed = ingestor.index().blobs().await?;
    let stored: HashMap<String, u64> = ingestor
        .blobs()
        .list()
        .await?
        .into_iter()
        .map(|b| (b.key, b.size))
        .collect();
    let mut report = CheckReport {
        indexed: indexed.len(),
        ..Default::default()
    };
    let mut seen = std::collections::HashSet::new();
    for b in &indexed {
        seen.insert(b.key.clone());
        match stored.get(&b.key) {
            None => report.missing.push(b.key.clone()),
            Some(size) if *size != b.size => report.damaged.push(b.key.clone()),
            Some(_) if quick => report.ok += 1,
            Some(_) => {
                let mut h = sha2::Sha256::new();
                let mut s = ingestor.blobs().read(&b.key).await?;
                while let Some(chunk) = s.try_next().await? {
                    h.update(&chunk);
                }
                if hex::encode(h.finalize()) == b.sha256 {
                    report.ok += 1;
                } else {
                    report.damaged.push(b.key.clone());
                }
            }
        }
    }
    for key in stored.keys() {
        if !seen.contains(key) {
            report.orphans.push(key.clone());
        }
    }
    report.orphans.sort();
    if sweep {
        for key in &report.orphans {
            let old = ingestor
                .blobs()
                .local_path(key)
                .and_then(|p| std::fs::metadata(p).ok())
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age > std::time::Duration::from_secs(3600));
            if old {
                ingestor.blobs().delete(key).await?;
                report.swept += 1;
            }
        }
    }
    Ok(report)
}
