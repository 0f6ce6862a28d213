//! Seeds `[[exchange.peers]]`, `[[exchange.nodes]]` and `[[exchange.routes]]` from the
//! configuration into the registry at start (DESIGN.md: "the config file may seed entries at
//! start, which are then marked as managed by the config").
//!
//! Each entry is checked exactly as the API checks a `PUT` (`vesalius_exchange::spec`), its
//! organisation must exist and a route's destinations must exist (peers and nodes first, so a
//! route may name a peer seeded with it). Records that differ are written, managed records the
//! file no longer lists are removed (routes first, so a peer or node is not removed under a
//! route), and every change carries an `admin-change` audit event by the actor `config`. Records
//! made with the API or `vesalius admin` are left alone unless the file names them: the file
//! then wins and the record becomes managed. Any error stops the start, naming the entry.

use anyhow::{Context, Result, bail};
use serde_json::json;
use vesalius_auth::Authenticator;
use vesalius_store::Registry;
use vesalius_store::registry::RegistryChange;

use crate::config::Config;

/// What seeding changed: `(written, removed)`.
pub async fn seed_registry(
    cfg: &Config,
    registry: &dyn Registry,
    auth: &Authenticator,
) -> Result<(usize, usize)> {
    let x = &cfg.exchange;
    let now = vesalius_exchange::now_ms();
    let event =
        |org: &str, details: serde_json::Value| crate::serve::config_event(auth, org, details);
    let org_exists = |org: String| async move {
        auth.directory()
            .org(&org)
            .await
            .map(|o| o.is_some())
            .map_err(anyhow::Error::from)
    };

    // Peers and nodes.
    let (old_peers, old_nodes) = (registry.peers().await?, registry.nodes().await?);
    let (mut changes, mut events) = (Vec::new(), Vec::new());
    let (mut written, mut removed) = (0, 0);
    let mut peer_names = Vec::new();
    for (i, spec) in x.peers.iter().enumerate() {
        let what = format!("[[exchange.peers]] #{} ({:?})", i + 1, spec.name);
        let old = old_peers.iter().find(|p| p.name == spec.name);
        let created = old.map_or(now, |o| o.created_ms);
        let peer = spec
            .clone()
            .record(None, true, created)
            .map_err(anyhow::Error::msg)
            .context(what.clone())?;
        if !org_exists(peer.org.clone()).await? {
            bail!("{what}: organisation {:?} does not exist", peer.org);
        }
        if peer_names.contains(&peer.name) {
            bail!("{what}: listed twice");
        }
        peer_names.push(peer.name.clone());
        if old != Some(&peer) {
            let d = json!({"change": "peer-put", "peer": peer.name, "kind": peer.kind,
                "base_url": peer.base_url, "may_query": peer.may_query, "managed_by": "config"});
            events.push(event(&peer.org, d));
            changes.push(RegistryChange::PutPeer(peer));
            written += 1;
        }
    }
    let mut node_names = Vec::new();
    for (i, spec) in x.nodes.iter().enumerate() {
        let what = format!("[[exchange.nodes]] #{} ({:?})", i + 1, spec.name);
        let old = old_nodes.iter().find(|n| n.name == spec.name);
        let created = old.map_or(now, |o| o.created_ms);
        let node = spec
            .clone()
            .record(None, true, created)
            .map_err(anyhow::Error::msg)
            .context(what.clone())?;
        if !org_exists(node.org.clone()).await? {
            bail!("{what}: organisation {:?} does not exist", node.org);
        }
        if node_names.contains(&node.name) {
            bail!("{what}: listed twice");
        }
        node_names.push(node.name.clone());
        if old != Some(&node) {
            let d = json!({"change": "node-put", "node": node.name, "ae_title": node.ae_title,
                "host": node.host, "port": node.port, "managed_by": "config"});
            events.push(event(&node.org, d));
            changes.push(RegistryChange::PutNode(node));
            written += 1;
        }
    }
    // Routes the file no longer lists go first, before any peer or node they name.
    let old_routes = registry.routes().await?;
    for r in old_routes
        .iter()
        .filter(|r| r.managed && !x.routes.iter().any(|s| s.id == r.id))
    {
        events.push(event(
            &r.org,
            json!({"change": "route-delete", "route": r.id, "managed_by": "config"}),
        ));
        changes.push(RegistryChange::DeleteRoute(r.id.clone()));
        removed += 1;
    }
    if !changes.is_empty() {
        registry
            .apply(changes, events)
            .await
            .context("seeding [[exchange.peers]] and [[exchange.nodes]]")?;
    }

    // Routes, checked against the registry as it now is.
    let (mut changes, mut events) = (Vec::new(), Vec::new());
    let mut ids = Vec::new();
    for (i, spec) in x.routes.iter().enumerate() {
        let what = format!("[[exchange.routes]] #{} ({:?})", i + 1, spec.id);
        let old = old_routes.iter().find(|r| r.id == spec.id);
        let created = old.map_or(now, |o| o.created_ms);
        let route = spec
            .clone()
            .record(None, true, created)
            .map_err(anyhow::Error::msg)
            .context(what.clone())?;
        if !org_exists(route.org.clone()).await? {
            bail!("{what}: organisation {:?} does not exist", route.org);
        }
        if ids.contains(&route.id) {
            bail!("{what}: listed twice");
        }
        ids.push(route.id.clone());
        if let Some(p) = vesalius_exchange::check::destination_problem(registry, &route).await? {
            bail!("{what}: {p}");
        }
        if old != Some(&route) {
            let d = json!({"change": "route-put", "route": route.id, "priority": route.priority,
                "destinations": route.destinations.iter().map(|d| d.text()).collect::<Vec<_>>(),
                "managed_by": "config"});
            events.push(event(&route.org, d));
            changes.push(RegistryChange::PutRoute(route));
            written += 1;
        }
    }
    // Peers and nodes the file no longer lists (a route of the API still naming one stops the
    // start: remove the route first).
    let routes_now = registry.routes().await?;
    let named = |dest: &str| {
        routes_now
            .iter()
            .filter(|r| !r.managed || ids.contains(&r.id))
            .find(|r| {
                r.destinations.iter().any(|d| {
                    let t = d.text();
                    t == dest || t.starts_with(&format!("{dest}?"))
                })
            })
            .map(|r| r.id.clone())
    };
    for p in old_peers
        .iter()
        .filter(|p| p.managed && !peer_names.contains(&p.name))
    {
        if let Some(r) = named(&format!("peer:{}", p.name)) {
            bail!(
                "peer {} is no longer in [[exchange.peers]] but route {r} sends to it",
                p.name
            );
        }
        events.push(event(
            &p.org,
            json!({"change": "peer-delete", "peer": p.name, "managed_by": "config"}),
        ));
        changes.push(RegistryChange::DeletePeer(p.name.clone()));
        removed += 1;
    }
    for n in old_nodes
        .iter()
        .filter(|n| n.managed && !node_names.contains(&n.name))
    {
        if let Some(r) =
            named(&format!("node:{}", n.name)).or_else(|| named(&format!("prefetch:{}", n.name)))
        {
            bail!(
                "node {} is no longer in [[exchange.nodes]] but route {r} uses it",
                n.name
            );
        }
        events.push(event(
            &n.org,
            json!({"change": "node-delete", "node": n.name, "managed_by": "config"}),
        ));
        changes.push(RegistryChange::DeleteNode(n.name.clone()));
        removed += 1;
    }
    if !changes.is_empty() {
        registry
            .apply(changes, events)
            .await
            .context("seeding [[exchange.routes]]")?;
    }
    Ok((written, removed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesalius_store::directory::{DirectoryChange, Org};

    fn config(dir: &std::path::Path, exchange: &str) -> Config {
        let file = dir.join("vesalius.toml");
        std::fs::write(
            &file,
            format!(
                "[storage]\ndata_dir = {:?}\norg = \"dgh\"\n[site]\nname = \"spoke\"\n{exchange}",
                dir.join("data")
            ),
        )
        .unwrap();
        crate::config::load(Some(&file), std::iter::empty()).unwrap()
    }

    const HUB_KEY: &str = "ed25519:11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn seeds(with_route: bool) -> String {
        let mut s = format!(
            r#"
[[exchange.peers]]
name = "hub"
base_url = "http://127.0.0.1:8081"
public_key = "{HUB_KEY}"
org = "dgh"
may_query = true

[[exchange.nodes]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = 11113
org = "dgh"
retrieve = "get"
query_model = "patient"
"#
        );
        if with_route {
            s.push_str(
                r#"
[[exchange.routes]]
id = "ct-to-hub"
org = "dgh"
destinations = ["peer:hub", "node:pacs", "prefetch:pacs?years=5&match=modality,body-part"]
priority = 100
matcher = { modality = ["CT"], body_part = ["HEAD", "BRAIN"] }
"#,
            );
        }
        s
    }

    #[tokio::test]
    async fn the_file_seeds_managed_records_and_removes_what_it_drops() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), &format!("[exchange]\n{}", seeds(true)));
        let storage = crate::serve::open_storage(&cfg).await.unwrap();
        let org = Org {
            id: "dgh".into(),
            name: "DGH".into(),
            created_ms: 1,
        };
        storage
            .auth
            .directory()
            .apply(vec![DirectoryChange::PutOrg(org)], vec![])
            .await
            .unwrap();
        let reg = storage.exchange.registry().clone();
        assert_eq!(
            seed_registry(&cfg, reg.as_ref(), &storage.auth)
                .await
                .unwrap(),
            (3, 0)
        );
        let peer = reg.peer("hub").await.unwrap().unwrap();
        assert!(peer.managed && peer.may_query);
        let node = reg.node("pacs").await.unwrap().unwrap();
        assert!(node.managed);
        assert_eq!(node.retrieve, vesalius_store::registry::RetrieveMethod::Get);
        assert_eq!(
            node.query_model,
            vesalius_store::registry::QueryModel::Patient
        );
        let routes = reg.routes().await.unwrap();
        assert_eq!(routes.len(), 1);
        assert!(routes[0].managed && routes[0].priority == 100);
        assert_eq!(
            routes[0].destinations[2].text(),
            "prefetch:pacs?years=5&match=modality,body-part"
        );
        // The same file again changes nothing.
        assert_eq!(
            seed_registry(&cfg, reg.as_ref(), &storage.auth)
                .await
                .unwrap(),
            (0, 0)
        );
        // Dropping the route and the node: both go, the route first.
        let cfg2 = config(
            dir.path(),
            &format!(
                "[exchange]\n{}",
                seeds(false).split("[[exchange.nodes]]").next().unwrap()
            ),
        );
        assert_eq!(
            seed_registry(&cfg2, reg.as_ref(), &storage.auth)
                .await
                .unwrap(),
            (0, 2)
        );
        assert!(reg.node("pacs").await.unwrap().is_none());
        assert!(reg.routes().await.unwrap().is_empty());
        assert!(reg.peer("hub").await.unwrap().is_some());
        // Every change is audited as the configuration's.
        let events = storage
            .auth
            .audit_log()
            .search(&vesalius_store::audit::AuditFilter::default())
            .await
            .unwrap();
        let by_config = events
            .iter()
            .filter(|e| e.event.actor.id == "config" && e.event.action == "admin-change")
            .count();
        assert_eq!(by_config, 5);
        // Bad entries stop the start, naming the entry.
        for (bad, says) in [
            (
                seeds(true).replace("http://127.0.0.1:8081", "http://hub.example.org"),
                "[[exchange.peers]] #1",
            ),
            (
                seeds(true).replace("\"peer:hub\"", "\"peer:nobody\""),
                "[[exchange.routes]] #1",
            ),
            (
                seeds(true).replace("org = \"dgh\"\nmay_query", "org = \"nowhere\"\nmay_query"),
                "nowhere",
            ),
            (
                seeds(true).replace("ae_title = \"PACS\"", "ae_title = \"\""),
                "[[exchange.nodes]] #1",
            ),
        ] {
            let cfg = config(dir.path(), &format!("[exchange]\n{bad}"));
            let e = seed_registry(&cfg, reg.as_ref(), &storage.auth)
                .await
                .unwrap_err();
            assert!(format!("{e:#}").contains(says), "{e:#}");
        }
    }
}
