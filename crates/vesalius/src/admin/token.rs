//! `vesalius admin token …`: API tokens for scripts, modalities' gateways and peers.
//!
//! A token acts for a user in one organisation with a role no greater than the user's there.
//! Without `--user`, `token create` issues it to a service account named after the token's
//! label, creating the account (or adding the organisation to it) when needed. The token text is
//! printed once; only its SHA-256 is stored.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde::Serialize;
use serde_json::json;
use vesalius_auth::authenticator::NewUser;
use vesalius_store::directory::{ApiToken, DirectoryChange, Membership, Role, User};

use super::context::{AdminContext, print_json, show_time};
use super::user::{find_user, parse_role};

const DAY_MS: i64 = 86_400_000;

/// Token commands.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Issue a token and print it once, e.g. `token create --org st-marys --role service
    /// --name ct-gateway --json`.
    Create {
        /// The organisation it acts in.
        #[arg(long)]
        org: String,
        /// The role it acts with (at most the user's role in the organisation).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The user it acts for; without it, a service account named after --name (created
        /// when missing).
        #[arg(long)]
        user: Option<String>,
        /// Label, e.g. what script or machine holds it.
        #[arg(long)]
        name: String,
        /// Days until it expires; 0: never.
        #[arg(long, default_value_t = 365)]
        ttl_days: u32,
        /// Print the token and its record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List tokens (never their secrets).
    List {
        /// Only tokens of this organisation.
        #[arg(long)]
        org: Option<String>,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id (the part after `vsl_` and before the next `_`).
    Revoke {
        /// The token id.
        id: String,
    },
}

/// A token as listed.
#[derive(Debug, Serialize)]
struct TokenView {
    id: String,
    name: String,
    org: String,
    role: Role,
    user_id: String,
    username: String,
    created_ms: i64,
    expires_ms: Option<i64>,
    revoked: bool,
    /// `active`, `expired` or `revoked`.
    status: &'static str,
}

/// Runs a token command.
pub async fn run(cx: &AdminContext, cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Create {
            org,
            role,
            user,
            name,
            ttl_days,
            json,
        } => {
            cx.require_org(&org).await?;
            let label = name.trim();
            if label.is_empty() || label.chars().count() > 128 {
                bail!("--name must be 1-128 characters");
            }
            let user = match user {
                Some(u) => find_user(cx, &u).await?,
                None => service_account(cx, label, &org, role).await?,
            };
            let ttl_ms = (ttl_days > 0).then(|| i64::from(ttl_days) * DAY_MS);
            let (rec, text) = cx
                .auth
                .create_token(
                    &cx.principal,
                    &user.id,
                    &org,
                    role,
                    label,
                    ttl_ms,
                    cx.origin(),
                )
                .await
                .context("creating the token")?;
            if json {
                print_json(&json!({
                    "token": text,
                    "id": rec.id,
                    "org": rec.org,
                    "role": rec.role,
                    "user": user.username,
                    "user_id": user.id,
                    "name": rec.name,
                    "created_ms": rec.created_ms,
                    "expires_ms": rec.expires_ms,
                }))?;
            } else {
                println!("{text}");
                eprintln!(
                    "token {} for {} ({} in {}), {}; shown once: store it now",
                    rec.id,
                    user.username,
                    role.as_str(),
                    rec.org,
                    match rec.expires_ms {
                        Some(e) => format!("expires {}", show_time(e)),
                        None => "never expires".into(),
                    }
                );
            }
            Ok(())
        }
        TokenCommand::List { org, json } => {
            let orgs = match org {
                Some(o) => vec![cx.require_org(&o).await?.id],
                None => cx.dir().orgs().await?.into_iter().map(|o| o.id).collect(),
            };
            let now = cx.auth.now_ms();
            let mut views = Vec::new();
            for o in &orgs {
                for t in cx.dir().tokens(o).await? {
                    let username = match cx.dir().user(&t.user_id).await? {
                        Some(u) => u.username,
                        None => String::new(),
                    };
                    views.push(view(t, username, now));
                }
            }
            if json {
                return print_json(&views);
            }
            if views.is_empty() {
                println!("no tokens");
            }
            for t in &views {
                println!(
                    "{:<14} {:<8} {:<16} {:<12} {:<20} {:<24} {}",
                    t.id,
                    t.status,
                    t.org,
                    t.role.as_str(),
                    t.expires_ms.map_or("never".into(), show_time),
                    t.username,
                    t.name
                );
            }
            Ok(())
        }
        TokenCommand::Revoke { id } => {
            cx.auth
                .revoke_token(&cx.principal, id.trim(), cx.origin())
                .await
                .context("revoking the token")?;
            println!("revoked token {}", id.trim());
            Ok(())
        }
    }
}

fn view(t: ApiToken, username: String, now: i64) -> TokenView {
    let status = if t.revoked {
        "revoked"
    } else if t.expires_ms.is_some_and(|e| now >= e) {
        "expired"
    } else {
        "active"
    };
    let username = if username.is_empty() {
        format!("(deleted user {})", t.user_id)
    } else {
        username
    };
    TokenView {
        id: t.id,
        name: t.name,
        org: t.org,
        role: t.role,
        user_id: t.user_id,
        username,
        created_ms: t.created_ms,
        expires_ms: t.expires_ms,
        revoked: t.revoked,
        status,
    }
}

/// The service account a label names: `ct-gateway` for "CT gateway".
fn service_username(label: &str) -> String {
    let mut s = String::new();
    for c in label.trim().to_lowercase().chars() {
        if c.is_alphanumeric() || matches!(c, '.' | '_' | '@') {
            s.push(c);
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    s.trim_matches('-').chars().take(64).collect()
}

/// The service account for tokens labelled `label`, a member of `org` with at least `role`'s
/// rights: reused when it exists (the organisation is added to it when missing), created
/// otherwise. A person of that name is never reused.
async fn service_account(cx: &AdminContext, label: &str, org: &str, role: Role) -> Result<User> {
    let username = service_username(label);
    if username.is_empty() {
        bail!("--name {label:?} gives no usable account name; pass --user");
    }
    let Some(mut user) = cx.dir().user_by_name(&username).await? else {
        let memberships = [Membership {
            org: org.to_owned(),
            role,
        }];
        return cx
            .auth
            .create_user(
                &cx.principal,
                NewUser {
                    username: &username,
                    display_name: label,
                    email: "",
                    memberships: &memberships,
                    password: None,
                    service: true,
                    must_change_password: false,
                },
                cx.origin(),
            )
            .await
            .context("creating the service account");
    };
    if !user.service {
        bail!(
            "{username:?} is a person, not a service account: pass --user {username} to issue \
             them a token, or choose another --name"
        );
    }
    if !user.memberships.iter().any(|m| m.org == org) {
        user.memberships.push(Membership {
            org: org.to_owned(),
            role,
        });
        let details = json!({
            "user_id": user.id,
            "username": user.username,
            "role": role.as_str(),
        });
        cx.apply_admin_change(
            vec![DirectoryChange::PutUser(user.clone())],
            "membership-add",
            org,
            details,
        )
        .await?;
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::service_username;

    #[test]
    fn labels_become_usernames() {
        assert_eq!(service_username("CT gateway"), "ct-gateway");
        assert_eq!(service_username("  ci/cd  job "), "ci-cd-job");
        assert_eq!(service_username("svc.backup_1"), "svc.backup_1");
        assert_eq!(service_username("///"), "");
    }
}
