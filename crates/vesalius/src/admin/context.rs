//! What every directory command of `vesalius admin` shares: the opened data directory, the
//! principal the command line acts as, and audited changes.
//!
//! The commands open `<data dir>/index.db` directly (creating the directory and the schema when
//! the server never ran), so they work with the server stopped or running: SQLite's WAL lets
//! both processes open the file, and the index writer re-reads the audit chain's head in every
//! transaction, so events appended here and by the server form one linear chain.
//!
//! Every change goes through `Directory::apply` together with the audit event that records it,
//! through the `Authenticator` where it has a method for the change (users, tokens) and directly
//! otherwise (organisations, AE titles, disabling a user). The actor is
//! `{kind: system, id: "cli", name: <OS user>}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde_json::Value as Json;
use vesalius_auth::{AuthOptions, Authenticator, Origin, Principal};
use vesalius_store::Directory;
use vesalius_store::audit::{AuditEvent, Outcome};
use vesalius_store::directory::DirectoryChange;
use vesalius_store_sqlite::SqliteIndex;

use crate::config::Config;

/// The audit action of directory changes that have no action of their own; the kind of change
/// is in `details.change` (`org-create`, `ae-add`, …).
pub const ADMIN_CHANGE: &str = "admin-change";

/// The `user_agent` of events written by the command line.
pub const USER_AGENT: &str = concat!("vesalius-cli/", env!("CARGO_PKG_VERSION"));

/// The data directory: `--data-dir` when given, else the configuration's.
pub fn data_dir(cfg: &Config, flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| cfg.storage.data_dir.clone())
}

/// The opened directory of a data directory and the principal the command line acts as.
pub struct AdminContext {
    /// The index database (directory and audit trail).
    pub index: Arc<SqliteIndex>,
    /// Access control over it.
    pub auth: Authenticator,
    /// The command line as a principal: the system, audited as `cli`.
    pub principal: Principal,
}

impl AdminContext {
    /// Opens `<data_dir>/index.db`, creating the directory and the schema when missing.
    pub async fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let index = Self::open_index(data_dir).await?;
        Ok(Self::over(index))
    }

    /// Opens `<data_dir>/index.db`, which must exist (commands that only read).
    pub async fn open_existing(data_dir: &Path) -> Result<Self> {
        let db = data_dir.join("index.db");
        if !db.is_file() {
            bail!(
                "no index at {} (wrong --data-dir, or nothing was ever stored there)",
                db.display()
            );
        }
        let index = Self::open_index(data_dir).await?;
        Ok(Self::over(index))
    }

    async fn open_index(data_dir: &Path) -> Result<Arc<SqliteIndex>> {
        let db = data_dir.join("index.db");
        Ok(Arc::new(SqliteIndex::open(&db).await.with_context(
            || format!("opening the index {}", db.display()),
        )?))
    }

    fn over(index: Arc<SqliteIndex>) -> Self {
        let auth = Authenticator::new(index.clone(), index.clone(), AuthOptions::new());
        AdminContext {
            index,
            auth,
            principal: cli_principal(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &dyn Directory {
        self.index.as_ref()
    }

    /// Where command-line changes come from, for audit events.
    pub fn origin(&self) -> Origin<'static> {
        Origin::new("", USER_AGENT)
    }

    /// An event by the command line about `org`, now.
    pub fn event(&self, action: &str, org: &str, details: Json) -> AuditEvent {
        AuditEvent {
            time_ms: self.auth.now_ms(),
            actor: self.principal.actor.clone(),
            action: action.to_owned(),
            outcome: Outcome::Success,
            org: org.to_owned(),
            patient: None,
            study_uid: None,
            source: String::new(),
            user_agent: USER_AGENT.to_owned(),
            details,
        }
    }

    /// Applies `changes` with one [`ADMIN_CHANGE`] event whose `details` gain `"change": what`.
    pub async fn apply_admin_change(
        &self,
        changes: Vec<DirectoryChange>,
        what: &str,
        org: &str,
        mut details: Json,
    ) -> Result<()> {
        details["change"] = Json::String(what.to_owned());
        let ev = self.event(ADMIN_CHANGE, org, details);
        self.dir()
            .apply(changes, vec![ev])
            .await
            .with_context(|| format!("{what} failed"))
    }

    /// The organisation `id`, which must exist.
    pub async fn require_org(&self, id: &str) -> Result<vesalius_store::directory::Org> {
        match self.dir().org(id).await? {
            Some(o) => Ok(o),
            None => bail!("no organisation {id:?} (vesalius admin org list)"),
        }
    }
}

/// The principal of the command line: the system (allowed every administrative change, as
/// local administration on the data directory is), audited as actor `cli` named after the OS
/// user who ran it.
pub fn cli_principal() -> Principal {
    let mut p = Principal::system();
    p.actor.id = "cli".into();
    p.actor.name = os_user();
    p
}

/// The OS user running the command (`$USER`, `$LOGNAME`, else the name of the process's uid in
/// `/etc/passwd`), or `cli` when unknown.
fn os_user() -> String {
    ["USER", "LOGNAME"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok())
        .chain(passwd_name())
        .map(|v| v.trim().chars().take(64).collect::<String>())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| "cli".into())
}

/// The name of this process's uid in `/etc/passwd` (the owner of `/proc/self` is our uid).
fn passwd_name() -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
        std::fs::read_to_string("/etc/passwd")
            .ok()?
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[2] == uid)
            .map(|f| f[0].to_owned())
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Reads a secret from standard input (all of it, less one trailing line break).
pub fn read_stdin_secret() -> Result<String> {
    use std::io::Read;
    let mut s = String::new();
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut s)
        .context("reading the password from standard input")?;
    let s = s
        .strip_suffix("\r\n")
        .or_else(|| s.strip_suffix('\n'))
        .unwrap_or(&s)
        .to_owned();
    if s.is_empty() {
        bail!("standard input held no password");
    }
    Ok(s)
}

/// Reads a secret from the environment variable `var`.
pub fn read_env_secret(var: &str) -> Result<String> {
    match std::env::var(var) {
        Ok(s) if !s.is_empty() => Ok(s),
        Ok(_) => bail!("environment variable {var} is empty"),
        Err(_) => bail!("environment variable {var} is not set"),
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` for tables.
pub fn show_time(ms: i64) -> String {
    let s = vesalius_auth::fhir::instant(ms);
    // Drop the milliseconds: `…:SS.mmmZ` → `…:SSZ`.
    match s.rsplit_once('.') {
        Some((head, _)) => format!("{head}Z"),
        None => s,
    }
}

/// Prints `value` as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
