//! `vesalius admin user …`: people and service accounts.
//!
//! A person needs a way to log in: a password (`--password-stdin`, `--password-env VAR`), a
//! temporary password printed once that must be changed at first login
//! (`--must-change-password` without a password), or OpenID Connect only (`--no-password`).
//! Service accounts (`--service`) have no password and act through API tokens. A person may
//! belong to several organisations with a role in each (`join`, `leave`); users are disabled,
//! never deleted (the audit trail names them); `unlock` lifts a login lockout.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::json;
use vesalius_auth::authenticator::{MembershipChange, NewUser, normalize_username};
use vesalius_auth::password;
use vesalius_store::directory::{DirectoryChange, Membership, Role, User};

use super::context::{AdminContext, print_json, read_env_secret, read_stdin_secret, show_time};

/// Parses a role name (`admin`, `clinician`, `radiographer`, `referrer`, `auditor`, `service`).
pub fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| {
        let all: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
        format!("unknown role {s:?}; one of {}", all.join(", "))
    })
}

/// Where a password comes from.
#[derive(Args, Clone)]
#[group(multiple = false)]
pub struct PasswordSource {
    /// Read the password from standard input (all of it, less a trailing line break).
    #[arg(long)]
    pub password_stdin: bool,
    /// Read the password from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
}

impl PasswordSource {
    /// The password, if a source was given.
    pub fn read(&self) -> Result<Option<String>> {
        if self.password_stdin {
            return read_stdin_secret().map(Some);
        }
        self.password_env
            .as_deref()
            .map(read_env_secret)
            .transpose()
    }
}

/// User commands.
#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user, e.g. `user create --org st-marys --role clinician --username alice
    /// --password-stdin`.
    Create {
        /// The organisation the user joins.
        #[arg(long)]
        org: String,
        /// Their role there.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Login name (stored lower-case).
        #[arg(long)]
        username: String,
        /// Display name (default: the username).
        #[arg(long)]
        display_name: Option<String>,
        /// E-mail address.
        #[arg(long, default_value = "")]
        email: String,
        #[command(flatten)]
        password: PasswordSource,
        /// The user must change the password at first login. Without a password source, a
        /// temporary password is generated and printed once.
        #[arg(long)]
        must_change_password: bool,
        /// A person who logs in through OpenID Connect only (no password).
        #[arg(long, conflicts_with_all = ["password_stdin", "password_env", "must_change_password", "service"])]
        no_password: bool,
        /// A service account (machines, scripts, peers): no password, API tokens only.
        #[arg(long, conflicts_with_all = ["password_stdin", "password_env", "must_change_password"])]
        service: bool,
        /// Also a site administrator: may create organisations from the admin console when
        /// logged in (issue 6).
        #[arg(long, conflicts_with = "service")]
        site_admin: bool,
        /// Print the user (and a generated temporary password) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List users.
    List {
        /// Only members of this organisation.
        #[arg(long)]
        org: Option<String>,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: they can no longer log in, and their sessions and tokens stop working.
    Disable {
        /// Login name.
        username: String,
    },
    /// Enable a disabled user again.
    Enable {
        /// Login name.
        username: String,
    },
    /// Give a user a role in another organisation (or change their role in one), e.g.
    /// `user join alice north --role clinician` (or `--org north`). A user of several
    /// organisations acts in one at a time and switches in the app's header.
    Join {
        /// Login name.
        username: String,
        /// The organisation (or `--org`).
        #[arg(
            value_name = "ORG",
            required_unless_present = "org",
            conflicts_with = "org"
        )]
        org_arg: Option<String>,
        /// The organisation.
        #[arg(long)]
        org: Option<String>,
        /// The role held there.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// Remove a user from one organisation (the user keeps their other memberships; to stop a
    /// person altogether, `disable` them: users are never deleted, the audit trail names them).
    /// Their API tokens of that organisation are revoked.
    Leave {
        /// Login name.
        username: String,
        /// The organisation (or `--org`).
        #[arg(
            value_name = "ORG",
            required_unless_present = "org",
            conflicts_with = "org"
        )]
        org_arg: Option<String>,
        /// The organisation.
        #[arg(long)]
        org: Option<String>,
    },
    /// Make a user a site administrator (issue 6: when logged in, they may create
    /// organisations, e.g. from the admin console, and name other site administrators), or no
    /// longer one (`--revoke`). Audited `admin-change`.
    SiteAdmin {
        /// Login name.
        username: String,
        /// Take site administration away instead.
        #[arg(long)]
        revoke: bool,
    },
    /// Lift a login lockout (too many wrong passwords) before it expires.
    Unlock {
        /// Login name.
        username: String,
    },
    /// Link a person to their OpenID Connect identity (`--issuer URL --subject SUB`, as the
    /// provider names them: `sub` of its ID tokens), or remove the link (`--unlink`). Needed
    /// for providers that do not mark e-mail addresses verified.
    OidcLink {
        /// Login name.
        username: String,
        /// The provider's issuer URL.
        #[arg(long, required_unless_present = "unlink")]
        issuer: Option<String>,
        /// The subject (`sub`) the provider gives this person.
        #[arg(long, required_unless_present = "unlink")]
        subject: Option<String>,
        /// Remove the link instead.
        #[arg(long, conflicts_with_all = ["issuer", "subject"])]
        unlink: bool,
    },
    /// Set a user's password, e.g. `printf %s "$PW" | vesalius admin user passwd alice
    /// --password-stdin`.
    Passwd {
        /// Login name.
        username: String,
        #[command(flatten)]
        password: PasswordSource,
        /// The user must change it at next login.
        #[arg(long)]
        must_change_password: bool,
    },
}

/// A user as listed: everything but the password hash.
#[derive(Debug, Serialize)]
pub struct UserView {
    /// Stable id.
    pub id: String,
    /// Login name.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// E-mail address.
    pub email: String,
    /// Organisations and roles.
    pub memberships: Vec<Membership>,
    /// A service account.
    pub service: bool,
    /// Disabled.
    pub disabled: bool,
    /// Has a password.
    pub has_password: bool,
    /// Has a linked OpenID Connect identity.
    pub oidc_linked: bool,
    /// Must change the password at next login.
    pub must_change_password: bool,
    /// Creation time, ms.
    pub created_ms: i64,
    /// A site administrator (issue 6).
    pub site_admin: bool,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.clone(),
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            memberships: u.memberships.clone(),
            service: u.service,
            disabled: u.disabled,
            has_password: u.password_hash.is_some(),
            oidc_linked: u.oidc.is_some(),
            must_change_password: u.must_change_password,
            created_ms: u.created_ms,
            site_admin: u.site_admin,
        }
    }
}

/// Runs a user command.
pub async fn run(cx: &AdminContext, cmd: UserCommand) -> Result<()> {
    match cmd {
        UserCommand::Create {
            org,
            role,
            username,
            display_name,
            email,
            password,
            must_change_password,
            no_password,
            service,
            site_admin,
            json,
        } => {
            cx.require_org(&org).await?;
            let given = password.read()?;
            if !service && !no_password && given.is_none() && !must_change_password {
                bail!(
                    "a person needs a password: --password-stdin, --password-env VAR, or \
                     --must-change-password for a temporary one printed once (--no-password: \
                     OpenID Connect only; --service: a service account)"
                );
            }
            let temporary = (given.is_none() && must_change_password)
                .then(vesalius_auth::secret::random_secret);
            let pw = given.or_else(|| temporary.clone());
            let memberships = [Membership { org, role }];
            let display = display_name.unwrap_or_else(|| username.trim().to_owned());
            let user = cx
                .auth
                .create_user(
                    &cx.principal,
                    NewUser {
                        username: &username,
                        display_name: &display,
                        email: email.trim(),
                        memberships: &memberships,
                        password: pw.as_deref(),
                        service,
                        must_change_password,
                    },
                    cx.origin(),
                )
                .await
                .context("creating the user")?;
            let user = if site_admin {
                cx.auth
                    .set_site_admin(&cx.principal, &user.id, true, cx.origin())
                    .await
                    .context("making the user a site administrator")?
            } else {
                user
            };
            if json {
                let mut v = serde_json::to_value(UserView::from(&user))?;
                if let Some(t) = &temporary {
                    v["temporary_password"] = json!(t);
                }
                print_json(&v)?;
            } else {
                println!(
                    "created {} {} ({} in {}), id {}",
                    if user.service {
                        "service account"
                    } else {
                        "user"
                    },
                    user.username,
                    role.as_str(),
                    memberships[0].org,
                    user.id
                );
                if let Some(t) = &temporary {
                    println!("temporary password (shown once, to be changed at first login): {t}");
                }
            }
            Ok(())
        }
        UserCommand::List { org, json } => {
            let users: Vec<UserView> = cx
                .dir()
                .users()
                .await?
                .iter()
                .filter(|u| {
                    org.as_ref()
                        .is_none_or(|o| u.memberships.iter().any(|m| m.org == *o))
                })
                .map(UserView::from)
                .collect();
            if json {
                return print_json(&users);
            }
            if users.is_empty() {
                println!("no users");
            }
            for u in &users {
                let roles: Vec<String> = u
                    .memberships
                    .iter()
                    .map(|m| format!("{}:{}", m.org, m.role.as_str()))
                    .collect();
                let mut flags = Vec::new();
                if u.service {
                    flags.push("service");
                }
                if u.disabled {
                    flags.push("disabled");
                }
                if u.must_change_password {
                    flags.push("must-change-password");
                }
                println!(
                    "{:<24} {:<32} {:<20} {}",
                    u.username,
                    roles.join(","),
                    show_time(u.created_ms),
                    flags.join(",")
                );
            }
            Ok(())
        }
        UserCommand::Disable { username } => set_disabled(cx, &username, true).await,
        UserCommand::Enable { username } => set_disabled(cx, &username, false).await,
        UserCommand::Join {
            username,
            org_arg,
            org,
            role,
        } => {
            let org = org_arg.or(org).unwrap_or_default();
            cx.require_org(&org).await?;
            let user = find_user(cx, &username).await?;
            // The rules and the audit (`membership-add` / `membership-set`) are the
            // authenticator's, shared with the console's API.
            let (user, change) = cx
                .auth
                .set_membership(&cx.principal, &user.id, &org, role, cx.origin())
                .await?;
            let r = role.as_str();
            match change {
                MembershipChange::Unchanged => {
                    println!("{} already is {r} in {org}", user.username)
                }
                _ => println!("{} is {r} in {org}", user.username),
            }
            Ok(())
        }
        UserCommand::Leave {
            username,
            org_arg,
            org,
        } => {
            let org = org_arg.or(org).unwrap_or_default();
            let user = find_user(cx, &username).await?;
            let user = cx
                .auth
                .remove_membership(&cx.principal, &user.id, &org, cx.origin())
                .await?;
            println!("{} left {org}", user.username);
            Ok(())
        }
        UserCommand::OidcLink {
            username,
            issuer,
            subject,
            unlink,
        } => {
            let mut user = find_user(cx, &username).await?;
            if user.service {
                bail!("{} is a service account: it does not log in", user.username);
            }
            let link = match (issuer, subject) {
                (Some(i), Some(s)) if !unlink => {
                    let (i, s) = (
                        i.trim().trim_end_matches('/').to_owned(),
                        s.trim().to_owned(),
                    );
                    if i.is_empty() || s.is_empty() {
                        bail!("--issuer and --subject must not be empty");
                    }
                    let taken = cx.dir().users().await?.into_iter().find(|u| {
                        u.id != user.id && u.oidc.as_ref() == Some(&(i.clone(), s.clone()))
                    });
                    if let Some(other) = taken {
                        bail!("that identity is linked to {} already", other.username);
                    }
                    Some((i, s))
                }
                _ => None,
            };
            user.oidc = link.clone();
            let org = first_org(&user);
            let details = json!({ "user_id": user.id, "username": user.username,
                                  "oidc": link.as_ref().map(|(i, s)| json!({"issuer": i, "subject": s})) });
            let what = if link.is_some() {
                "oidc-link"
            } else {
                "oidc-unlink"
            };
            cx.apply_admin_change(
                vec![DirectoryChange::PutUser(user.clone())],
                what,
                &org,
                details,
            )
            .await?;
            match link {
                Some((i, s)) => println!("linked {} to {s} at {i}", user.username),
                None => println!("unlinked {}", user.username),
            }
            Ok(())
        }
        UserCommand::SiteAdmin { username, revoke } => {
            let user = find_user(cx, &username).await?;
            let user = cx
                .auth
                .set_site_admin(&cx.principal, &user.id, !revoke, cx.origin())
                .await?;
            println!(
                "{} is {}a site administrator",
                user.username,
                if user.site_admin { "" } else { "no longer " }
            );
            Ok(())
        }
        UserCommand::Unlock { username } => {
            let user = find_user(cx, &username).await?;
            // The key the authenticator counts a username's login failures under.
            cx.dir()
                .throttle_reset(&format!("login-user:{}", user.username))
                .await?;
            let org = first_org(&user);
            let details = json!({ "user_id": user.id, "username": user.username });
            let ev = cx.event("user-unlock", &org, details);
            cx.auth.audit_log().append(vec![ev]).await?;
            println!("unlocked {}", user.username);
            Ok(())
        }
        UserCommand::Passwd {
            username,
            password: source,
            must_change_password,
        } => {
            let Some(pw) = source.read()? else {
                bail!("give the new password with --password-stdin or --password-env VAR");
            };
            let mut user = find_user(cx, &username).await?;
            if user.service {
                bail!("{} is a service account: it has no password", user.username);
            }
            password::check_policy(&pw, &user.username)?;
            let params = cx.auth.options().password_params;
            user.password_hash =
                Some(tokio::task::spawn_blocking(move || password::hash(&pw, params)).await??);
            user.must_change_password = must_change_password;
            let org = first_org(&user);
            let details = json!({ "user_id": user.id, "username": user.username });
            cx.apply_admin_change(
                vec![DirectoryChange::PutUser(user.clone())],
                "password-reset",
                &org,
                details,
            )
            .await?;
            println!("set the password of {}", user.username);
            Ok(())
        }
    }
}

/// The user named `username` (normalised as at creation).
pub async fn find_user(cx: &AdminContext, username: &str) -> Result<User> {
    let name = normalize_username(username);
    match cx.dir().user_by_name(&name).await? {
        Some(u) => Ok(u),
        None => bail!("no user {name:?} (vesalius admin user list)"),
    }
}

/// The user's first organisation, the `org` of events about them.
pub fn first_org(user: &User) -> String {
    user.home_org()
}

async fn set_disabled(cx: &AdminContext, username: &str, disabled: bool) -> Result<()> {
    let mut user = find_user(cx, username).await?;
    let word = if disabled { "disabled" } else { "enabled" };
    if user.disabled == disabled {
        println!("{} is already {word}", user.username);
        return Ok(());
    }
    user.disabled = disabled;
    let org = first_org(&user);
    let details = json!({ "user_id": user.id, "username": user.username });
    let what = if disabled {
        "user-disable"
    } else {
        "user-enable"
    };
    cx.apply_admin_change(
        vec![DirectoryChange::PutUser(user.clone())],
        what,
        &org,
        details,
    )
    .await?;
    println!("{word} {}", user.username);
    Ok(())
}
