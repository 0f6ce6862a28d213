//! The `vesalius` binary: command line, configuration and wiring of every layer.

#[cfg(test)]
mod access_matrix;
mod admin;
#[cfg(test)]
mod admin_api_tests;
mod alerts;
mod audit_cmd;
mod audit_observer;
mod config;
mod deid;
mod demo;
#[cfg(test)]
mod device_cache_tests;
#[cfg(test)]
mod exchange_tests;
#[cfg(test)]
mod federation_tests;
mod import;
#[cfg(test)]
mod journal_tests;
#[cfg(test)]
mod key_images_tests;
#[cfg(test)]
mod orgs_tests;
#[cfg(test)]
mod patients_tests;
mod peer_studies;
mod registry_seed;
mod send;
mod serve;
mod site;
mod syslog;
#[cfg(test)]
mod test_site;
mod tls;
mod transfers;
#[cfg(test)]
mod uploads_tests;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

/// Vesalius: a regional DICOM archive and exchange.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); every key is documented in docs/configuration.md.
    #[arg(long, global = true, env = "VESALIUS_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the archive: DICOM and HTTP servers over the data directory.
    Serve(ServeArgs),
    /// A stroke network on loopback: a hub and two spokes, peered, with a CT head routed from a
    /// spoke to the hub; prints the URLs and the transfer time, runs until Ctrl-C.
    Demo(demo::DemoArgs),
    /// Show the effective configuration.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
    /// Write synthetic studies (no real patient data) with a fixed seed.
    Synth(SynthArgs),
    /// Import files, folders, zip archives and DICOMDIR media through the running server.
    Import(ImportArgs),
    /// Send instances to a DICOM node (C-STORE) or a DICOMweb server (STOW-RS).
    Send(send::SendArgs),
    /// Verify a DICOM node answers (C-ECHO).
    Echo(send::EchoArgs),
    /// Search the running server (QIDO-RS), e.g. `vesalius query PatientName=doe*`.
    Query(send::QueryArgs),
    /// Delete a study, series or instance through the running server.
    Delete(send::DeleteArgs),
    /// Outgoing transfers of the running server (destination, study, priority, progress, state);
    /// `--watch` follows them live.
    Transfers(transfers::TransfersArgs),
    /// Write de-identified copies of DICOM files (PS3.15 Annex E Basic Profile and options).
    Deid(deid::DeidArgs),
    /// Administration on a data directory.
    Admin {
        #[command(subcommand)]
        what: admin::AdminCommand,
    },
    /// The audit trail: verify the hash chain, search, export (FHIR), sign checkpoints.
    Audit(audit_cmd::AuditArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration as TOML (secrets redacted).
    Dump,
}

#[derive(Args)]
struct ServeArgs {
    /// Data directory (index and blobs).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// DICOM listen address.
    #[arg(long)]
    dicom_addr: Option<std::net::SocketAddr>,
    /// HTTP listen address.
    #[arg(long)]
    http_addr: Option<std::net::SocketAddr>,
    /// Our AE title.
    #[arg(long)]
    ae_title: Option<String>,
    /// PEM certificate chain: with --tls-key, HTTPS on the HTTP address and DICOM TLS on
    /// --dicom-tls-addr.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// DICOM TLS listen address (PS3.15 B.1; only when a certificate is configured).
    #[arg(long)]
    dicom_tls_addr: Option<std::net::SocketAddr>,
}

#[derive(Args)]
struct SynthArgs {
    /// Output folder.
    #[arg(long, short)]
    out: PathBuf,
    /// Seed: the same seed writes the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// CT slices.
    #[arg(long, default_value_t = 300)]
    slices: u32,
    /// Patients.
    #[arg(long, default_value_t = 1)]
    patients: u32,
    /// Kinds to write (ct-head, mr-brain, multi-frame, compressed-rle, charset-variety); all by default.
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<String>,
}

#[derive(Args)]
struct ImportArgs {
    /// Files, folders, zip archives or DICOMDIR files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The running server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Parallel uploads.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

fn init_logging(cfg: &config::Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log.format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut cfg = config::load(cli.config.as_deref(), std::env::vars())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Demo(a) => {
            init_logging(&cfg);
            rt.block_on(demo::run(a))
        }
        Command::Serve(a) => {
            if let Some(d) = a.data_dir {
                cfg.storage.data_dir = d;
            }
            if let Some(x) = a.dicom_addr {
                cfg.dicom.addr = x;
            }
            if let Some(x) = a.http_addr {
                cfg.http.addr = x;
            }
            if let Some(x) = a.ae_title {
                cfg.dicom.ae_title = x;
            }
            if let Some(x) = a.tls_cert {
                cfg.http.tls_cert = Some(x);
            }
            if let Some(x) = a.tls_key {
                cfg.http.tls_key = Some(x);
            }
            if let Some(x) = a.dicom_tls_addr {
                cfg.dicom.tls_addr = x;
            }
            init_logging(&cfg);
            let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
                ])
                .ok()
                .and_then(|b| b.install_recorder().ok());
            rt.block_on(serve::run(cfg, metrics))
        }
        Command::Config {
            what: ConfigCommand::Dump,
        } => {
            print!("{}", config::dump(&cfg)?);
            Ok(())
        }
        Command::Synth(a) => {
            let mut opts = vesalius_synth::SynthOptions::new(a.seed);
            opts.slices = a.slices;
            opts.patients = a.patients;
            if !a.kinds.is_empty() {
                opts.kinds = a
                    .kinds
                    .iter()
                    .map(|k| k.parse().map_err(|e| anyhow::anyhow!("{e}")))
                    .collect::<Result<_>>()?;
            }
            let r = vesalius_synth::write_studies(&opts, &a.out)
                .context("writing synthetic studies")?;
            println!(
                "wrote {} files ({} MB) in {} studies under {}",
                r.files.len(),
                r.bytes / 1_000_000,
                r.studies.len(),
                a.out.display()
            );
            Ok(())
        }
        Command::Import(a) => {
            init_logging(&cfg);
            let limits = import::ImportLimits {
                max_zip_entries: cfg.limits.max_zip_entries,
                max_zip_ratio: cfg.limits.max_zip_ratio,
                max_instance_bytes: cfg.limits.max_instance_bytes,
            };
            let paths = import::expand_dicomdirs(&a.paths)?;
            let s = rt.block_on(import::run(
                &a.server,
                &paths,
                limits,
                a.concurrency,
                a.json,
            ))?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                for (k, n) in &s.counts {
                    println!("{k:>10}: {n}");
                }
                for r in &s.rejected {
                    println!(
                        "rejected {}: {}",
                        r.source,
                        r.reason.as_deref().unwrap_or("")
                    );
                }
            }
            let total: usize = s.counts.values().sum();
            if total > 0 && s.rejected.len() == total {
                bail!("nothing was imported");
            }
            Ok(())
        }
        Command::Send(a) => rt.block_on(send::send(a)),
        Command::Echo(a) => rt.block_on(send::echo(a)),
        Command::Query(a) => rt.block_on(send::query(a)),
        Command::Delete(a) => rt.block_on(send::delete(a)),
        Command::Transfers(a) => rt.block_on(transfers::run(a)),
        Command::Deid(a) => deid::run(a),
        Command::Admin { what } => rt.block_on(admin::run(what, cfg)),
        Command::Audit(a) => rt.block_on(audit_cmd::run(a, cfg)),
    }
}

/// The HTTP client for commands that talk to the running server (`--server`): it sends the API
/// token from `VESALIUS_TOKEN` (made with `vesalius admin token create`), since the server
/// refuses requests without credentials (docs/security.md).
fn server_client() -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(token) = std::env::var("VESALIUS_TOKEN")
        && !token.is_empty()
    {
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("VESALIUS_TOKEN is not a valid header value"))?;
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}
