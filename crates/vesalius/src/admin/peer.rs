//! `vesalius admin peer …`: the other Vesalius sites this one exchanges studies with.
//!
//! A peer is registered under its own site name (its `[site] name`, the `iss` of the requests
//! it signs) with its public key (`vesalius admin site show` on that site), its base URL, and
//! the local organisation its requests act as. Linking two sites takes one `peer add` on each
//! side (docs/exchange-admin.md). `peer ping` checks the link end to end: reachability, our
//! signature accepted there, its signed answer verified here, and the clocks.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Subcommand;
use reqwest::Url;
use serde::Serialize;
use serde_json::json;
use vesalius_auth::peer::valid_public_key;
use vesalius_exchange::PeerClient;
use vesalius_store::Registry;
use vesalius_store::registry::{Peer, PeerAuth, PeerKind, RegistryChange, RouteDestination};

use super::context::{AdminContext, print_json};
use super::site::{apply_registry_change, check_slug, identity, routes_to};
use crate::config::Config;

/// Peer commands.
// Parsed once per process: the size of `Add` costs nothing worth boxing it for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum PeerCommand {
    /// Register (or replace) a peer site, e.g. `peer add hub --url https://hub.example.org
    /// --public-key ed25519:… --org st-marys`.
    Add {
        /// The peer's own site name (its `[site] name`; it signs its requests with it). For a
        /// plain DICOMweb peer any short name.
        name: String,
        /// `vesalius` (another Vesalius site) or `dicomweb` (any DICOMweb server, e.g. Orthanc
        /// with its DICOMweb plug-in: standard STOW-RS, no manifests).
        #[arg(long, default_value = "vesalius", value_parser = ["vesalius", "dicomweb"])]
        kind: String,
        /// Its base URL: https, or plain http to a loopback host only. For a DICOMweb peer its
        /// service root, e.g. `http://127.0.0.1:8042/dicom-web`.
        #[arg(long)]
        url: String,
        /// Its public key, `ed25519:…` (`vesalius admin site show` on the peer); Vesalius peers
        /// only.
        #[arg(long, default_value = "")]
        public_key: String,
        /// How we authenticate to a DICOMweb peer: `none`, `basic` (--username, --password) or
        /// `bearer` (--token).
        #[arg(long, default_value = "none", value_parser = ["none", "basic", "bearer"])]
        auth: String,
        /// User name for `--auth basic`.
        #[arg(long, default_value = "")]
        username: String,
        /// Read the password for `--auth basic` from this environment variable (never from the
        /// command line, where process lists show it).
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// Read the token for `--auth bearer` from this environment variable.
        #[arg(long, value_name = "VAR")]
        token_env: Option<String>,
        /// The local organisation the peer acts as when it calls us (its stores land there).
        #[arg(long)]
        org: String,
        /// The organisation to deliver into at the peer; default: the one it maps us to.
        #[arg(long)]
        remote_org: Option<String>,
        /// The peer may also search and retrieve here, not only deliver.
        #[arg(long)]
        may_query: bool,
        /// Description, e.g. "Regional stroke centre".
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the peers.
    List {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a peer: its requests are refused from then on.
    Remove {
        /// The peer's name.
        name: String,
    },
    /// Call a peer's ping with a signed request and check its signed answer.
    Ping {
        /// The peer's name.
        name: String,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What `peer ping` found.
#[derive(Debug, Serialize)]
struct PingView {
    /// The peer as registered here.
    peer: String,
    url: String,
    ok: bool,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt_ms: Option<i64>,
    /// The peer's own site name.
    #[serde(skip_serializing_if = "Option::is_none")]
    site: Option<String>,
    /// The public key the peer reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    /// Whether it is the key registered here.
    #[serde(skip_serializing_if = "Option::is_none")]
    key_matches: Option<bool>,
    /// The name the peer knows us by.
    #[serde(skip_serializing_if = "Option::is_none")]
    known_as: Option<String>,
    /// The organisation our deliveries land in there.
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_org: Option<String>,
    /// The peer's clock minus the midpoint of our request, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    clock_skew_ms: Option<i64>,
    /// How transfers classify the link (`[exchange] slow_link_rtt_ms`, the shortest of three
    /// more pings): `fast` (plain bodies with `content_encoding = "auto"`, requests up to
    /// `fast_batch_bytes`) or `slow` (gzip, `batch_bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<&'static str>,
}

/// Runs a peer command.
pub async fn run(cx: &AdminContext, cfg: &Config, data_dir: &Path, cmd: PeerCommand) -> Result<()> {
    match cmd {
        PeerCommand::Add {
            name,
            kind,
            url,
            public_key,
            auth,
            username,
            password_env,
            token_env,
            org,
            remote_org,
            may_query,
            description,
        } => {
            check_slug("peer name", &name)?;
            let kind = PeerKind::parse(&kind).unwrap_or_default();
            let base_url = check_url(&url)?;
            let public_key = public_key.trim().to_owned();
            if kind == PeerKind::Vesalius && !valid_public_key(&public_key) {
                bail!(
                    "--public-key {public_key:?} is not an Ed25519 public key \
                     (ed25519:… as `vesalius admin site show` prints it on the peer)"
                );
            }
            let secret = |flag: &str, var: Option<String>| -> Result<String> {
                let Some(var) = var else {
                    bail!("--auth {auth} needs {flag} VAR (the variable holding the secret)");
                };
                std::env::var(&var).map_err(|_| anyhow::anyhow!("{flag}: ${var} is not set"))
            };
            let auth = match auth.as_str() {
                "basic" => PeerAuth::Basic {
                    username,
                    password: secret("--password-env", password_env)?,
                },
                "bearer" => PeerAuth::Bearer {
                    token: secret("--token-env", token_env)?,
                },
                _ => PeerAuth::None,
            };
            if let Err(e) = vesalius_exchange::check::peer_fields(
                kind,
                &public_key,
                &auth,
                remote_org.as_deref(),
                may_query,
            ) {
                bail!("peer {name}: {e}");
            }
            cx.require_org(&org).await?;
            if let Some(r) = &remote_org {
                check_slug("--remote-org", r)?;
            }
            let old = cx.index.peer(&name).await?;
            let peer = Peer {
                name: name.clone(),
                kind,
                base_url,
                public_key,
                auth,
                org: org.clone(),
                remote_org,
                may_query,
                description: description.trim().to_owned(),
                managed: false,
                created_ms: old
                    .as_ref()
                    .map_or_else(|| cx.auth.now_ms(), |o| o.created_ms),
            };
            let details = json!({
                "peer": peer.name,
                "kind": peer.kind,
                "base_url": peer.base_url,
                "auth": peer.auth.kind(),
                "public_key": peer.public_key,
                "remote_org": peer.remote_org,
                "may_query": peer.may_query,
                "replaced": old.is_some(),
            });
            apply_registry_change(
                cx,
                vec![RegistryChange::PutPeer(peer.clone())],
                "peer-add",
                &org,
                details,
            )
            .await?;
            println!(
                "{} {} peer {name} ({}) of {org}{}",
                if old.is_some() { "replaced" } else { "added" },
                peer.kind.as_str(),
                peer.base_url,
                if may_query { ", may query" } else { "" }
            );
            if old.is_some_and(|o| o.managed) {
                eprintln!(
                    "note: peer {name} is also in the configuration file, which puts its own \
                     version back at the next start"
                );
            }
            if name == cfg.site.name {
                eprintln!("warning: {name} is this site's own name ([site] name)");
            }
            Ok(())
        }
        PeerCommand::List { json } => {
            let peers = cx.index.peers().await?;
            if json {
                return print_json(&peers);
            }
            if peers.is_empty() {
                println!("no peers");
            }
            for p in &peers {
                let key = match p.kind {
                    PeerKind::Vesalius => short_key(&p.public_key),
                    PeerKind::Dicomweb => format!("dicomweb, auth {}", p.auth.kind()),
                };
                println!(
                    "{:<16} {:<40} {:<16} {:<5} {} {}",
                    p.name,
                    p.base_url,
                    p.org,
                    if p.may_query { "query" } else { "store" },
                    key,
                    p.description
                );
            }
            Ok(())
        }
        PeerCommand::Remove { name } => {
            check_slug("peer name", &name)?;
            let Some(old) = cx.index.peer(&name).await? else {
                bail!("no peer {name} (vesalius admin peer list)");
            };
            apply_registry_change(
                cx,
                vec![RegistryChange::DeletePeer(name.clone())],
                "peer-remove",
                &old.org,
                json!({ "peer": name }),
            )
            .await?;
            println!("removed peer {name}");
            let routes = routes_to(cx, &RouteDestination::Peer(name.clone())).await?;
            if !routes.is_empty() {
                eprintln!(
                    "warning: routes still send to peer:{name}: {} (vesalius admin route remove)",
                    routes.join(", ")
                );
            }
            Ok(())
        }
        PeerCommand::Ping {
            name,
            timeout_ms,
            json,
        } => {
            let Some(peer) = cx.index.peer(&name).await? else {
                bail!("no peer {name} (vesalius admin peer list)");
            };
            let id = Arc::new(identity(cfg, data_dir)?);
            let client = PeerClient::new(id, Duration::from_millis(timeout_ms.max(1)))?
                .slow_link_rtt(Duration::from_millis(cfg.exchange.slow_link_rtt_ms));
            let mut view = ping(&client, &peer).await;
            if view.ok && peer.kind == PeerKind::Vesalius {
                view.link = Some(if client.fast_link(&peer).await {
                    "fast"
                } else {
                    "slow"
                });
            }
            if json {
                print_json(&view)?;
            } else {
                print_ping(&view);
            }
            if let Some(e) = view.error {
                bail!("ping {name} failed: {e}");
            }
            Ok(())
        }
    }
}

/// Pings `peer` and judges the answer: it must come from the site registered under that name
/// with the registered key.
async fn ping(client: &PeerClient, peer: &Peer) -> PingView {
    let mut view = PingView {
        peer: peer.name.clone(),
        url: peer.base_url.clone(),
        ok: false,
        error: None,
        rtt_ms: None,
        site: None,
        public_key: None,
        key_matches: None,
        known_as: None,
        remote_org: None,
        clock_skew_ms: None,
        link: None,
    };
    let t0 = vesalius_exchange::now_ms();
    if peer.kind == PeerKind::Dicomweb {
        // A plain DICOMweb server: a QIDO-RS request with its credentials.
        match client.qido_ping(peer).await {
            Ok(_) => {
                view.rtt_ms = Some(vesalius_exchange::now_ms() - t0);
                view.ok = true;
            }
            Err(e) => view.error = Some(e.to_string()),
        }
        return view;
    }
    let answer = match client.ping(peer).await {
        Ok(a) => a,
        Err(e) => {
            view.error = Some(e.to_string());
            return view;
        }
    };
    let t1 = vesalius_exchange::now_ms();
    let key_matches = answer.public_key == peer.public_key;
    view.rtt_ms = Some(t1 - t0);
    view.clock_skew_ms = Some(answer.time_ms - (t0 + (t1 - t0) / 2));
    view.key_matches = Some(key_matches);
    view.error = if !key_matches {
        Some(format!(
            "the peer reports the key {}, not the registered one",
            answer.public_key
        ))
    } else if answer.site != peer.name {
        Some(format!(
            "the peer's site name is {:?}: register it under that name, or its requests to us \
             are refused",
            answer.site
        ))
    } else {
        None
    };
    view.ok = view.error.is_none();
    view.site = Some(answer.site);
    view.public_key = Some(answer.public_key);
    view.known_as = Some(answer.peer_name);
    view.remote_org = Some(answer.org);
    view
}

fn print_ping(v: &PingView) {
    let Some(rtt) = v.rtt_ms else {
        println!("peer {} ({}) did not answer", v.peer, v.url);
        return;
    };
    println!("peer          : {} ({})", v.peer, v.url);
    println!("round trip    : {rtt} ms");
    if v.site.is_none() {
        // A plain DICOMweb peer: its QIDO-RS answered.
        println!("QIDO-RS       : answered");
        if v.ok {
            println!("ok");
        }
        return;
    }
    println!("site name     : {}", v.site.as_deref().unwrap_or(""));
    println!(
        "public key    : {} ({})",
        v.public_key.as_deref().unwrap_or(""),
        if v.key_matches == Some(true) {
            "matches the registered key"
        } else {
            "DIFFERS from the registered key"
        }
    );
    println!("knows us as   : {}", v.known_as.as_deref().unwrap_or(""));
    println!("delivers into : {}", v.remote_org.as_deref().unwrap_or(""));
    println!("clock skew    : {} ms", v.clock_skew_ms.unwrap_or(0));
    if let Some(link) = v.link {
        println!(
            "link          : {link} ({})",
            if link == "fast" {
                "plain STOW-RS bodies with content_encoding auto, large requests"
            } else {
                "gzip-coded STOW-RS bodies with content_encoding auto, small requests"
            }
        );
    }
    if v.ok {
        println!("ok");
    }
}

/// A base URL: http(s) with a host and no query or fragment, plain http only to loopback (as
/// the client enforces); returned without a trailing '/'.
fn check_url(url: &str) -> Result<String> {
    let u = Url::parse(url.trim()).map_err(|e| anyhow::anyhow!("--url {url:?}: {e}"))?;
    if u.host_str().is_none_or(str::is_empty) {
        bail!("--url {url:?} has no host");
    }
    if u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
        bail!("--url {url:?}: a base URL has no credentials, query or fragment");
    }
    vesalius_exchange::client::check_scheme(&u).map_err(|e| anyhow::anyhow!("--url: {e}"))?;
    Ok(u.as_str().trim_end_matches('/').to_owned())
}

/// `ed25519:abcdefgh…` for tables.
fn short_key(k: &str) -> String {
    match k.char_indices().nth(16) {
        Some((i, _)) => format!("{}…", &k[..i]),
        None => k.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            check_url("https://hub.example.org/").unwrap(),
            "https://hub.example.org"
        );
        assert_eq!(
            check_url("https://hub.example.org/vesalius/").unwrap(),
            "https://hub.example.org/vesalius"
        );
        assert_eq!(
            check_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        check_url("http://localhost:8080").unwrap();
        check_url("http://[::1]:8080").unwrap();
        for bad in [
            "http://hub.example.org",
            "http://10.0.0.1:8080",
            "ftp://hub.example.org",
            "hub.example.org",
            "https://hub.example.org/?org=x",
            "https://user:pw@hub.example.org",
            "",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_shortened_for_tables() {
        assert_eq!(short_key("ed25519:abc"), "ed25519:abc");
        assert_eq!(short_key("ed25519:abcdefghijklmnop"), "ed25519:abcdefgh…");
    }
}
