//! `vesalius admin site …`: this site in the exchange network (issue 5), and what the `peer`,
//! `node` and `route` commands share.
//!
//! A site is known to its peers by its name (`[site] name`) and its Ed25519 public key, which
//! derives from the site key (`<data dir>/site.key`, created on first use exactly as `serve`
//! creates it). `site show` prints both so an administrator can hand them to the other site,
//! which registers us with `vesalius admin peer add NAME --public-key KEY …`.
//!
//! Registry changes (peers, nodes, routes) are committed through [`Registry::apply`] together
//! with one `admin-change` audit event, like the directory changes of `admin ae`. A running
//! server picks them up by itself (routes every `[exchange] route_refresh_ms`, peers at every
//! request).

use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde::Serialize;
use serde_json::Value as Json;
use vesalius_auth::audit_chain::SiteKey;
use vesalius_auth::peer::SiteIdentity;
use vesalius_store::Registry;
use vesalius_store::registry::{RegistryChange, RouteDestination};

use super::context::{ADMIN_CHANGE, AdminContext, print_json};
use crate::config::Config;

/// Site commands.
#[derive(Subcommand)]
pub enum SiteCommand {
    /// Show this site's name and public key, for the administrators of other sites.
    Show {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What `site show` prints.
#[derive(Debug, Serialize)]
struct SiteView {
    /// `[site] name`: the name peers must register us under.
    name: String,
    /// `ed25519:…`: the key peers must register for us.
    public_key: String,
}

/// Runs a site command.
pub fn run(cfg: &Config, data_dir: &Path, cmd: SiteCommand) -> Result<()> {
    match cmd {
        SiteCommand::Show { json } => {
            let id = identity(cfg, data_dir)?;
            let view = SiteView {
                name: id.name().to_owned(),
                public_key: id.public_key(),
            };
            if json {
                return print_json(&view);
            }
            println!("site name  : {}", view.name);
            println!("public key : {}", view.public_key);
            println!();
            println!("On the other site, register this one with");
            println!(
                "  vesalius admin peer add {} --public-key {} --url <our base URL> --org <their org>",
                view.name, view.public_key
            );
            Ok(())
        }
    }
}

/// This site's exchange identity: `[site] name` and the key pair derived from
/// `<data_dir>/site.key` (created when missing, as `serve` does).
pub fn identity(cfg: &Config, data_dir: &Path) -> Result<SiteIdentity> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let path = data_dir.join(crate::audit_cmd::SITE_KEY_FILE);
    let key = SiteKey::load_or_create(&path)
        .with_context(|| format!("loading the site key {}", path.display()))?;
    Ok(SiteIdentity::from_site_key(&cfg.site.name, &key))
}

/// Applies registry `changes` with one `admin-change` event whose `details` gain
/// `"change": what`, in one transaction.
pub async fn apply_registry_change(
    cx: &AdminContext,
    changes: Vec<RegistryChange>,
    what: &str,
    org: &str,
    mut details: Json,
) -> Result<()> {
    details["change"] = Json::String(what.to_owned());
    let ev = cx.event(ADMIN_CHANGE, org, details);
    Registry::apply(&*cx.index, changes, vec![ev])
        .await
        .map_err(|e| match e.kind() {
            vesalius_core::ErrorKind::NotFound => anyhow::anyhow!("{what} failed: {e}"),
            _ => anyhow::Error::new(e).context(format!("{what} failed")),
        })
}

/// Names of peers, nodes and route ids: 1-64 lower-case letters, digits and '-' (they name
/// outbox queues, `peer:NAME`, and a peer's name is its site name in signed requests).
pub fn check_slug(what: &str, s: &str) -> Result<()> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        bail!("{what} {s:?} must be 1-64 lower-case letters, digits and '-'");
    }
    Ok(())
}

/// The ids of the routes that send to `dest`, to warn before it disappears.
pub async fn routes_to(cx: &AdminContext, dest: &RouteDestination) -> Result<Vec<String>> {
    Ok(vesalius_exchange::check::routes_to(&*cx.index, dest).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        check_slug("peer name", "hub").unwrap();
        check_slug("peer name", "st-marys-2").unwrap();
        for bad in ["", "Hub", "a b", "a_b", "a:b", &"x".repeat(65)] {
            assert!(check_slug("peer name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn identity_is_stable_and_named_after_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.site.name = "spoke".into();
        let a = identity(&cfg, dir.path()).unwrap();
        let b = identity(&cfg, dir.path()).unwrap();
        assert_eq!(a.name(), "spoke");
        assert_eq!(a.public_key(), b.public_key());
        assert!(vesalius_auth::peer::valid_public_key(&a.public_key()));
    }
}
