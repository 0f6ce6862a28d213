//! `vesalius admin ae …`: the calling AE titles (modalities, PACS, workstations) the DICOM
//! listener accepts, each belonging to one organisation, with the addresses it may call from.
//! An association from a title not listed here, or from an address outside its allow-list, is
//! refused at association time (A-ASSOCIATE-RJ, calling AE title not recognized).

use anyhow::{Result, bail};
use clap::Subcommand;
use serde::Serialize;
use serde_json::json;
use vesalius_auth::net::Cidr;
use vesalius_store::directory::{AeEntry, DirectoryChange};

use super::context::{AdminContext, print_json};

/// AE title commands.
#[derive(Subcommand)]
pub enum AeCommand {
    /// Allow a calling AE title, e.g. `ae add CT_ROOM2 --org st-marys --allow 10.1.2.0/24
    /// --listen 10.1.2.7:104`.
    Add {
        /// The AE title (1-16 characters, no backslash or control characters).
        title: String,
        /// The organisation it stores into.
        #[arg(long)]
        org: String,
        /// An address or CIDR block it may call from (repeat for several); none: any address.
        #[arg(long = "allow", value_name = "ADDR_OR_CIDR")]
        allow: Vec<String>,
        /// Where it listens (`HOST:PORT`), for C-MOVE and sending to it.
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<String>,
        /// It may also query and retrieve (C-FIND, C-GET, C-MOVE), not only store.
        #[arg(long)]
        may_query: bool,
        /// Description, e.g. "CT scanner, room 2".
        #[arg(long, default_value = "")]
        description: String,
        /// Replace an existing entry with this title.
        #[arg(long)]
        replace: bool,
    },
    /// List the AE titles.
    List {
        /// Only those of this organisation.
        #[arg(long)]
        org: Option<String>,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an AE title: its associations are refused from then on.
    Remove {
        /// The AE title.
        title: String,
    },
}

/// An AE title as listed.
#[derive(Debug, Serialize)]
struct AeView {
    ae_title: String,
    org: String,
    allowed_addrs: Vec<String>,
    /// `host:port`.
    listen: Option<String>,
    description: String,
    may_query: bool,
}

impl From<AeEntry> for AeView {
    fn from(a: AeEntry) -> Self {
        AeView {
            listen: a.listen.map(|(h, p)| join_host_port(&h, p)),
            ae_title: a.ae_title,
            org: a.org,
            allowed_addrs: a.allowed_addrs,
            description: a.description,
            may_query: a.may_query,
        }
    }
}

/// Runs an AE title command.
pub async fn run(cx: &AdminContext, cmd: AeCommand) -> Result<()> {
    match cmd {
        AeCommand::Add {
            title,
            org,
            allow,
            listen,
            may_query,
            description,
            replace,
        } => {
            let title = check_ae_title(&title)?;
            cx.require_org(&org).await?;
            for a in &allow {
                if Cidr::parse(a).is_none() {
                    bail!(
                        "--allow {a:?} is not an IP address or CIDR block (10.1.2.3, 10.1.0.0/16)"
                    );
                }
            }
            let listen = listen.as_deref().map(parse_host_port).transpose()?;
            if let Some(old) = cx.dir().ae(&title).await?
                && !replace
            {
                bail!(
                    "AE title {title} already exists (organisation {}); --replace to change it",
                    old.org
                );
            }
            let entry = AeEntry {
                ae_title: title.clone(),
                org: org.clone(),
                allowed_addrs: allow.iter().map(|a| a.trim().to_owned()).collect(),
                listen,
                description: description.trim().to_owned(),
                may_query,
            };
            let details = json!({
                "ae_title": entry.ae_title,
                "allowed_addrs": entry.allowed_addrs,
                "listen": entry.listen.as_ref().map(|(h, p)| join_host_port(h, *p)),
                "may_query": entry.may_query,
            });
            cx.apply_admin_change(vec![DirectoryChange::PutAe(entry)], "ae-add", &org, details)
                .await?;
            println!(
                "{} AE title {title} for {org}{}",
                if replace { "set" } else { "added" },
                if allow.is_empty() {
                    " (from any address)".to_owned()
                } else {
                    format!(" (from {})", allow.join(", "))
                }
            );
            Ok(())
        }
        AeCommand::List { org, json } => {
            let aes: Vec<AeView> = cx
                .dir()
                .aes()
                .await?
                .into_iter()
                .filter(|a| org.as_ref().is_none_or(|o| *o == a.org))
                .map(AeView::from)
                .collect();
            if json {
                return print_json(&aes);
            }
            if aes.is_empty() {
                println!("no AE titles");
            }
            for a in &aes {
                println!(
                    "{:<16} {:<16} {:<5} {:<22} {:<32} {}",
                    a.ae_title,
                    a.org,
                    if a.may_query { "query" } else { "store" },
                    a.listen.as_deref().unwrap_or("-"),
                    if a.allowed_addrs.is_empty() {
                        "any address".to_owned()
                    } else {
                        a.allowed_addrs.join(",")
                    },
                    a.description
                );
            }
            Ok(())
        }
        AeCommand::Remove { title } => {
            let title = check_ae_title(&title)?;
            let Some(old) = cx.dir().ae(&title).await? else {
                bail!("no AE title {title} (vesalius admin ae list)");
            };
            cx.apply_admin_change(
                vec![DirectoryChange::DeleteAe(title.clone())],
                "ae-remove",
                &old.org,
                json!({ "ae_title": title }),
            )
            .await?;
            println!("removed AE title {title}");
            Ok(())
        }
    }
}

/// PS3.5 Table 6.2-1 (AE): at most 16 characters of the default repertoire without backslash
/// or control characters; leading and trailing spaces are not significant and are dropped.
fn check_ae_title(title: &str) -> Result<String> {
    if !vesalius_core::ae::valid_ae_title(title) {
        bail!("an AE title is 1-16 ASCII characters without backslash or control characters");
    }
    Ok(title.trim().to_owned())
}

/// `host:port` or `[v6]:port`.
fn parse_host_port(s: &str) -> Result<(String, u16)> {
    let bad = || anyhow::anyhow!("--listen {s:?} is not HOST:PORT");
    let (host, port) = s.trim().rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ae_titles_follow_ps3_5() {
        assert_eq!(check_ae_title(" CT_ROOM2 ").unwrap(), "CT_ROOM2");
        for bad in ["", "   ", "A\\B", "ABCDEFGHIJKLMNOPQ", "CT\u{1}", "CTé"] {
            assert!(check_ae_title(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_host_port("10.1.2.7:104").unwrap(),
            ("10.1.2.7".into(), 104)
        );
        assert_eq!(
            parse_host_port("[::1]:11112").unwrap(),
            ("::1".into(), 11112)
        );
        assert_eq!(join_host_port("::1", 11112), "[::1]:11112");
        for bad in ["host", "host:0", ":104", "host:x", "a b:104"] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
    }
}
