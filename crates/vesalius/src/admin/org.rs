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
    /// Whether the organisation's users' browsers may keep the viewer's images (issue 6; off
    /// by default): `org device-cache st-marys --allow --hours 12`, `--deny`, or neither to
    /// show the setting.
    DeviceCache {
        /// The organisation.
        id: String,
        /// Allow it (for `--hours`, default 12, at most 168).
        #[arg(long, conflicts_with = "deny")]
        allow: bool,
        /// No longer allow it: every image answer is `no-store` again.
        #[arg(long)]
        deny: bool,
        /// How long a browser may keep an image, in hours (1-168).
        #[arg(long, requires = "allow")]
        hours: Option<u32>,
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
        OrgCommand::DeviceCache {
            id,
            allow,
            deny,
            hours,
        } => {
            use vesalius_api::device_cache::{DEFAULT_HOURS, MAX_HOURS, SETTING_PREFIX};
            cx.require_org(&id).await?;
            let key = format!("{SETTING_PREFIX}{id}");
            if allow || deny {
                let h = hours.unwrap_or(DEFAULT_HOURS);
                if !(1..=MAX_HOURS).contains(&h) {
                    bail!("--hours is 1 to {MAX_HOURS} (a week), not {h}");
                }
                let change = if allow {
                    DirectoryChange::PutSetting {
                        key,
                        value: h.to_string(),
                    }
                } else {
                    DirectoryChange::DeleteSetting(key)
                };
                cx.apply_admin_change(
                    vec![change],
                    "org-settings",
                    &id,
                    json!({ "org_id": id,
                            "device_image_cache": {"allowed": allow, "hours": allow.then_some(h)} }),
                )
                .await?;
            }
            match vesalius_api::device_cache::hours(cx.dir(), &id).await? {
                Some(h) => println!("{id}: images may be kept on devices for {h} h"),
                None => println!("{id}: images are never kept on devices"),
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
