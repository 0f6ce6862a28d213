//! `vesalius admin node …`: legacy DICOM nodes (PACS, modalities, workstations) routes send to
//! with C-STORE, and query and retrieve from (`node find`, `node retrieve`, see `node_qr`). A
//! node belongs to one organisation: only that organisation's routes may send there or prefetch
//! from there. `node echo` checks one with a C-ECHO calling as our `[dicom] ae_title`.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::json;
use vesalius_store::Registry;
use vesalius_store::registry::{
    DicomNode, QueryModel, RegistryChange, RetrieveMethod, RouteDestination,
};

use super::context::{AdminContext, print_json};
use super::site::{apply_registry_change, check_slug, routes_to};
use crate::config::Config;

/// DICOM node commands.
#[derive(Subcommand)]
pub enum NodeCommand {
    /// Register (or replace) a DICOM node, e.g. `node add pacs --ae-title PACS --host 10.1.2.9
    /// --port 104 --org st-marys`.
    Add {
        /// Short name, routes send to `node:NAME`.
        name: String,
        /// Its AE title (the called AE title of our associations).
        #[arg(long)]
        ae_title: String,
        /// Host name or address.
        #[arg(long)]
        host: String,
        /// Port.
        #[arg(long)]
        port: u16,
        /// The organisation whose data may be sent there.
        #[arg(long)]
        org: String,
        /// Transfer syntax UIDs it accepts, comma separated; default: the uncompressed ones.
        #[arg(long = "ts", value_name = "UID,...", value_delimiter = ',')]
        transfer_syntaxes: Vec<String>,
        /// How studies are retrieved from it (`node retrieve`, prefetch routes): `move`, a C-MOVE
        /// to our AE title (the node must know our AE title, host and port, and its AE title
        /// must be registered here with `admin ae add`), or `get`, a C-GET whose instances come
        /// back on our own association (the node needs no address for us).
        #[arg(long, default_value = "move", value_parser = parse_retrieve)]
        retrieve: RetrieveMethod,
        /// The Query/Retrieve Information Model it is queried and retrieved from in: `study`
        /// (Study Root) or `patient` (Patient Root: PATIENT then STUDY level queries, C-MOVE and
        /// C-GET with the Patient ID; for a PACS that answers only Patient Root).
        #[arg(long, default_value = "study", value_parser = parse_query_model)]
        query_model: QueryModel,
        /// Description, e.g. "Departmental PACS".
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the DICOM nodes.
    List {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a DICOM node.
    Remove {
        /// The node's name.
        name: String,
    },
    /// Send a C-ECHO to a node, calling as `[dicom] ae_title`.
    Echo {
        /// The node's name.
        name: String,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
    },
    /// Search a node for a patient's studies (C-FIND, Study Root), calling as `[dicom]
    /// ae_title`; shows which are held here already.
    Find(super::node_qr::FindArgs),
    /// Retrieve a study from a node: a durable job run by the server, by the node's `--retrieve`
    /// method (C-MOVE to our AE title: the node must know it as a move destination and the
    /// node's AE title must be registered here with `admin ae add`; or C-GET on our own
    /// association).
    Retrieve(super::node_qr::RetrieveArgs),
}

/// Runs a DICOM node command.
pub async fn run(cx: &AdminContext, cfg: &Config, cmd: NodeCommand) -> Result<()> {
    match cmd {
        NodeCommand::Find(a) => super::node_qr::find(cx, cfg, a).await,
        NodeCommand::Retrieve(a) => super::node_qr::retrieve(cx, a).await,
        NodeCommand::Add {
            name,
            ae_title,
            host,
            port,
            org,
            transfer_syntaxes,
            retrieve,
            query_model,
            description,
        } => {
            check_slug("node name", &name)?;
            let ae_title = check_ae_title(&ae_title)?;
            let host = check_host(&host)?;
            if port == 0 {
                bail!("--port must be 1-65535");
            }
            let transfer_syntaxes = check_transfer_syntaxes(&transfer_syntaxes)?;
            cx.require_org(&org).await?;
            let old = cx.index.node(&name).await?;
            let node = DicomNode {
                name: name.clone(),
                ae_title,
                host,
                port,
                transfer_syntaxes,
                retrieve,
                query_model,
                org: org.clone(),
                description: description.trim().to_owned(),
                managed: false,
                created_ms: old
                    .as_ref()
                    .map_or_else(|| cx.auth.now_ms(), |o| o.created_ms),
            };
            let details = json!({
                "node": node.name,
                "ae_title": node.ae_title,
                "host": node.host,
                "port": node.port,
                "transfer_syntaxes": node.transfer_syntaxes,
                "retrieve": node.retrieve,
                "query_model": node.query_model,
                "replaced": old.is_some(),
            });
            apply_registry_change(
                cx,
                vec![RegistryChange::PutNode(node.clone())],
                "node-add",
                &org,
                details,
            )
            .await?;
            println!(
                "{} node {name} ({}@{}) for {org}, retrieved from by {}, queried in {}",
                if old.is_some() { "replaced" } else { "added" },
                node.ae_title,
                address(&node),
                node.retrieve.operation(),
                node.query_model.name()
            );
            if old.is_some_and(|o| o.managed) {
                eprintln!(
                    "note: node {name} is also in the configuration file, which puts its own \
                     version back at the next start"
                );
            }
            Ok(())
        }
        NodeCommand::List { json } => {
            let nodes = cx.index.nodes().await?;
            if json {
                return print_json(&nodes);
            }
            if nodes.is_empty() {
                println!("no DICOM nodes");
            }
            for n in &nodes {
                println!(
                    "{:<16} {:<16} {:<28} {:<16} {:<6} {:<8} {}",
                    n.name,
                    n.ae_title,
                    address(n),
                    n.org,
                    n.retrieve.as_str(),
                    n.query_model.as_str(),
                    n.description
                );
            }
            Ok(())
        }
        NodeCommand::Remove { name } => {
            check_slug("node name", &name)?;
            let Some(old) = cx.index.node(&name).await? else {
                bail!("no DICOM node {name} (vesalius admin node list)");
            };
            apply_registry_change(
                cx,
                vec![RegistryChange::DeleteNode(name.clone())],
                "node-remove",
                &old.org,
                json!({ "node": name }),
            )
            .await?;
            println!("removed node {name}");
            let routes = routes_to(cx, &RouteDestination::Node(name.clone())).await?;
            if !routes.is_empty() {
                eprintln!(
                    "warning: routes still send to node:{name}: {} (vesalius admin route remove)",
                    routes.join(", ")
                );
            }
            Ok(())
        }
        NodeCommand::Echo { name, timeout_ms } => {
            let Some(node) = cx.index.node(&name).await? else {
                bail!("no DICOM node {name} (vesalius admin node list)");
            };
            let addr = address(&node);
            let calling = cfg.dicom.ae_title.trim();
            let t0 = Instant::now();
            let echo = vesalius_dimse::scu::echo(&addr, calling, &node.ae_title);
            match tokio::time::timeout(Duration::from_millis(timeout_ms.max(1)), echo).await {
                Ok(Ok(())) => {
                    println!(
                        "C-ECHO {calling} -> {}@{addr}: success in {} ms",
                        node.ae_title,
                        t0.elapsed().as_millis()
                    );
                    Ok(())
                }
                Ok(Err(e)) => bail!("C-ECHO {calling} -> {}@{addr} failed: {e}", node.ae_title),
                Err(_) => bail!(
                    "C-ECHO {calling} -> {}@{addr}: no answer within {timeout_ms} ms",
                    node.ae_title
                ),
            }
        }
    }
}

/// `--retrieve move|get`.
fn parse_retrieve(s: &str) -> std::result::Result<RetrieveMethod, String> {
    RetrieveMethod::parse(s.trim())
        .ok_or_else(|| format!("{s:?} is not a retrieval method: move (C-MOVE) or get (C-GET)"))
}

/// `--query-model study|patient`.
fn parse_query_model(s: &str) -> std::result::Result<QueryModel, String> {
    QueryModel::parse(s.trim()).ok_or_else(|| {
        format!("{s:?} is not a query model: study (Study Root) or patient (Patient Root)")
    })
}

/// `host:port`, or `[v6]:port`.
fn address(n: &DicomNode) -> String {
    if n.host.contains(':') {
        format!("[{}]:{}", n.host, n.port)
    } else {
        format!("{}:{}", n.host, n.port)
    }
}

/// PS3.5 Table 6.2-1 (AE): at most 16 characters of the default repertoire without backslash
/// or control characters; leading and trailing spaces are not significant and are dropped.
fn check_ae_title(title: &str) -> Result<String> {
    if !vesalius_core::ae::valid_ae_title(title) {
        bail!(
            "--ae-title: an AE title is 1-16 ASCII characters without backslash or control \
             characters"
        );
    }
    Ok(title.trim().to_owned())
}

/// A host name or address, without brackets around IPv6 addresses.
fn check_host(host: &str) -> Result<String> {
    let h = host.trim();
    let h = h
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h);
    if h.is_empty() || h.len() > 253 || h.chars().any(|c| c.is_whitespace() || c == '/') {
        bail!("--host {host:?} is not a host name or address");
    }
    Ok(h.to_owned())
}

fn check_transfer_syntaxes(ts: &[String]) -> Result<Vec<String>> {
    ts.iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| {
            if vesalius_core::uid::is_valid_uid(t) {
                Ok(t.to_owned())
            } else {
                bail!("--ts {t:?} is not a transfer syntax UID")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ae_titles() {
        assert_eq!(check_ae_title(" PACS ").unwrap(), "PACS");
        for bad in ["", "A\\B", "ABCDEFGHIJKLMNOPQ", "P\u{7}"] {
            assert!(check_ae_title(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(check_host("pacs.example.org").unwrap(), "pacs.example.org");
        assert_eq!(check_host("[::1]").unwrap(), "::1");
        for bad in ["", " ", "a b", "http://x"] {
            assert!(check_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn retrieval_methods() {
        assert_eq!(parse_retrieve("get").unwrap(), RetrieveMethod::Get);
        assert_eq!(parse_retrieve(" move").unwrap(), RetrieveMethod::Move);
        assert!(
            parse_retrieve("c-get")
                .unwrap_err()
                .contains("move (C-MOVE) or get")
        );
    }

    #[test]
    fn query_models() {
        assert_eq!(parse_query_model("patient").unwrap(), QueryModel::Patient);
        assert_eq!(parse_query_model(" study").unwrap(), QueryModel::Study);
        assert!(
            parse_query_model("patient-root")
                .unwrap_err()
                .contains("study (Study Root) or patient (Patient Root)")
        );
    }

    #[test]
    fn transfer_syntaxes() {
        assert_eq!(
            check_transfer_syntaxes(&["1.2.840.10008.1.2.1".into(), " ".into()]).unwrap(),
            vec!["1.2.840.10008.1.2.1".to_owned()]
        );
        assert!(check_transfer_syntaxes(&["jpeg".into()]).is_err());
    }

    #[test]
    fn addresses() {
        let mut n = DicomNode {
            name: "pacs".into(),
            ae_title: "PACS".into(),
            host: "10.0.0.9".into(),
            port: 104,
            transfer_syntaxes: vec![],
            retrieve: Default::default(),
            query_model: Default::default(),
            org: "o".into(),
            description: String::new(),
            managed: false,
            created_ms: 0,
        };
        assert_eq!(address(&n), "10.0.0.9:104");
        n.host = "::1".into();
        assert_eq!(address(&n), "[::1]:104");
    }
}
