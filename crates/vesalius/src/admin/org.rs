//! `vesalius admin org …`: organisations, the owners of data and users.

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::json;
use vesalius_store::directory::{DirectoryChange, Org};

use super::context::{AdminContext, print_json, show_time};

/// Organisation commands.
#[derive(Subcommand)]
pub enum OrgCommand {
    /// Create an organisation, e.g. `org create st-marys --name "St Mary's Hospital"`.
    Create {
        /// Stable id: 1-64 lower-case letters, digits and '-' (it names folders of the blob
        /// store and appears in every record the organisation owns).
        id: String,
        /// Display name (default: the id).
        #[arg(long)]
        name: Option<String>,
        /// Print the organisation as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the organisations.
    List {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an organisation command.
pub async fn run(cx: &AdminContext, cmd: OrgCommand) -> Result<()> {
    match cmd {
        OrgCommand::Create { id, name, json } => {
            check_org_id(&id)?;
            if cx.dir().org(&id).await?.is_some() {
                bail!("organisation {id:?} already exists");
            }
            let org = Org {
                name: name
                    .map(|n| n.trim().to_owned())
                    .unwrap_or_else(|| id.clone()),
                id,
                created_ms: cx.auth.now_ms(),
            };
            cx.apply_admin_change(
                vec![DirectoryChange::PutOrg(org.clone())],
                "org-create",
                &org.id,
                json!({ "org_id": org.id, "name": org.name }),
            )
            .await?;
            if json {
                print_json(&org)?;
            } else {
                println!("created organisation {} ({})", org.id, org.name);
            }
            Ok(())
        }
        OrgCommand::List { json } => {
            let orgs = cx.dir().orgs().await?;
            if json {
                return print_json(&orgs);
            }
            if orgs.is_empty() {
                println!("no organisations");
            }
            for o in &orgs {
                println!("{:<24} {:<20} {}", o.id, show_time(o.created_ms), o.name);
            }
            Ok(())
        }
    }
}

/// Organisation ids are slugs: they appear in blob keys and URLs.
fn check_org_id(id: &str) -> Result<()> {
    if !Org::valid_id(id) {
        bail!(
            "organisation ids are 1-64 lower-case letters, digits and '-', not starting with '-'"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_org_id;

    #[test]
    fn org_ids_are_slugs() {
        for ok in ["st-marys", "a", "org1"] {
            assert!(check_org_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "St-Marys", "a/b", "-a", "a b", "../x", &"x".repeat(65)] {
            assert!(check_org_id(bad).is_err(), "{bad}");
        }
    }
}
