//! The directory in SQLite: [`Directory`] for [`SqliteIndex`].
//!
//! ## Invariants
//! - Every write is a [`WriteOp`] of the one writer task: a [`Directory::apply`] runs its changes
//!   and then appends its audit events ([`Chain::append`]) inside one savepoint, so they commit
//!   together or not at all, group-committed with whatever else the writer is doing. A failing
//!   change (a taken username, a missing record) rolls back that request alone.
//! - Uniqueness is the database's: `users.username` and `users_oidc` are unique indexes, and a
//!   violation becomes [`Error::BadRequest`] as in the in-memory model.
//! - `throttle_fail` reads, counts ([`ThrottleRecord::fail`]) and writes in the writer, so two
//!   failures counted at once both count. It also deletes every row that no longer says
//!   anything (`expires_ms` passed), which bounds the table by the keys failing right now.
//! - Reads use the read pool and see the last committed state.
//!
//! Layout: one table per record kind (`schema.sql`); lists of values (memberships, allowed
//! addresses) are JSON text read whole with their row.

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Row, SqlitePool};
use vesalius_store::audit::AuditEvent;
use vesalius_store::directory::*;
use vesalius_store::error::{Error, Result};

use crate::audit::Chain;
use crate::write::WriteOp;
use crate::{SqliteIndex, db_err};

/// A database error, with unique-key violations reported like the in-memory model does.
fn write_err(what: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            Error::BadRequest(format!("{what} conflicts with an existing one: {d}"))
        }
        _ => db_err(e),
    }
}

fn json_err(what: &str, e: serde_json::Error) -> Error {
    Error::Index(format!("{what}: {e}"))
}

fn role(s: &str) -> Result<Role> {
    Role::parse(s).ok_or_else(|| Error::Index(format!("unknown role {s:?} in the directory")))
}

/// Fails with `NotFound` when an `UPDATE`/`DELETE` naming one record touched none.
fn one(rows: u64, what: &str, id: &str) -> Result<()> {
    if rows == 0 {
        Err(Error::NotFound(format!("{what} {id}")))
    } else {
        Ok(())
    }
}

/// Runs one [`Directory::apply`] inside the writer's transaction (its savepoint is the caller's).
pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    chain: &mut Chain,
    changes: &[DirectoryChange],
    events: &[AuditEvent],
) -> Result<()> {
    for c in changes {
        apply_change(conn, c).await?;
    }
    chain.append(conn, events).await
}

async fn exec(
    conn: &mut SqliteConnection,
    q: sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
) -> Result<u64> {
    Ok(q.execute(&mut *conn).await.map_err(db_err)?.rows_affected())
}

async fn apply_change(conn: &mut SqliteConnection, change: &DirectoryChange) -> Result<()> {
    use DirectoryChange as C;
    match change {
        C::PutOrg(o) => {
            exec(
                conn,
                sqlx::query("INSERT OR REPLACE INTO orgs (id, name, created_ms) VALUES (?, ?, ?)")
                    .bind(&o.id)
                    .bind(&o.name)
                    .bind(o.created_ms),
            )
            .await?;
        }
        C::PutUser(u) => put_user(conn, u).await?,
        C::DeleteUser(id) => {
            let n = exec(conn, sqlx::query("DELETE FROM users WHERE id = ?").bind(id)).await?;
            one(n, "user", id)?;
            exec(
                conn,
                sqlx::query("DELETE FROM api_tokens WHERE user_id = ?").bind(id),
            )
            .await?;
            exec(
                conn,
                sqlx::query("DELETE FROM sessions WHERE user_id = ?").bind(id),
            )
            .await?;
        }
        C::PutToken(t) => {
            exec(
                conn,
                sqlx::query(
                    "INSERT OR REPLACE INTO api_tokens (id, secret_hash, user_id, org, role, name, \
                       created_ms, expires_ms, revoked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&t.id)
                .bind(&t.secret_hash)
                .bind(&t.user_id)
                .bind(&t.org)
                .bind(t.role.as_str())
                .bind(&t.name)
                .bind(t.created_ms)
                .bind(t.expires_ms)
                .bind(t.revoked),
            )
            .await?;
        }
        C::RevokeToken(id) => revoke(conn, "api_tokens", "token", id).await?,
        C::PutSession(s) => {
            exec(
                conn,
                sqlx::query(
                    "INSERT OR REPLACE INTO sessions (id_hash, user_id, org, csrf, created_ms, \
                       expires_ms) VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(&s.id_hash)
                .bind(&s.user_id)
                .bind(&s.org)
                .bind(&s.csrf)
                .bind(s.created_ms)
                .bind(s.expires_ms),
            )
            .await?;
        }
        C::DeleteSession(h) => {
            exec(
                conn,
                sqlx::query("DELETE FROM sessions WHERE id_hash = ?").bind(h),
            )
            .await?;
        }
        C::SetSessionOrg { id_hash, org } => {
            let n = exec(
                conn,
                sqlx::query("UPDATE sessions SET org = ? WHERE id_hash = ?")
                    .bind(org)
                    .bind(id_hash),
            )
            .await?;
            one(n, "session", id_hash)?;
        }
        C::PutGrant(g) => put_grant(conn, g).await?,
        C::RevokeGrant(id) => revoke(conn, "grants", "grant", id).await?,
        C::PutAe(a) => {
            let addrs =
                serde_json::to_string(&a.allowed_addrs).map_err(|e| json_err("AE title", e))?;
            let (host, port) = a.listen.clone().unzip();
            exec(
                conn,
                sqlx::query(
                    "INSERT OR REPLACE INTO ae_titles (ae_title, org, allowed_addrs, listen_host, \
                       listen_port, description, may_query) VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&a.ae_title)
                .bind(&a.org)
                .bind(addrs)
                .bind(host)
                .bind(port.map(i64::from))
                .bind(&a.description)
                .bind(a.may_query),
            )
            .await?;
        }
        C::DeleteAe(t) => {
            let n = exec(
                conn,
                sqlx::query("DELETE FROM ae_titles WHERE ae_title = ?").bind(t),
            )
            .await?;
            one(n, "AE title", t)?;
        }
        C::PutShareLink(l) => {
            exec(
                conn,
                sqlx::query(
                    "INSERT OR REPLACE INTO share_links (id, secret_hash, org, study_uid, \
                       allow_download, passcode_hash, birth_date_check, created_by, created_ms, \
                       expires_ms, revoked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&l.id)
                .bind(&l.secret_hash)
                .bind(&l.org)
                .bind(&l.study_uid)
                .bind(l.allow_download)
                .bind(&l.passcode_hash)
                .bind(&l.birth_date_check)
                .bind(&l.created_by)
                .bind(l.created_ms)
                .bind(l.expires_ms)
                .bind(l.revoked),
            )
            .await?;
        }
        C::RevokeShareLink(id) => revoke(conn, "share_links", "share link", id).await?,
        C::PutUploadLink(l) => put_upload_link(conn, l).await?,
        C::RevokeUploadLink(id) => revoke(conn, "upload_links", "upload link", id).await?,
        C::AddUploadBytes { id, bytes } => {
            let row = sqlx::query(AssertSqlSafe(format!("{UPLOAD_LINK} WHERE id = ?")))
                .bind(id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_err)?
                .ok_or_else(|| Error::NotFound(format!("upload link {id}")))?;
            let mut link = upload_link_from_row(&row);
            link.add_used_bytes(*bytes)?;
            exec(
                conn,
                sqlx::query("UPDATE upload_links SET used_bytes = ? WHERE id = ?")
                    .bind(link.used_bytes as i64)
                    .bind(id),
            )
            .await?;
        }
        C::PutSetting { key, value } => {
            exec(
                conn,
                sqlx::query("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)")
                    .bind(key)
                    .bind(value),
            )
            .await?;
        }
        C::DeleteSetting(key) => {
            exec(
                conn,
                sqlx::query("DELETE FROM settings WHERE key = ?").bind(key),
            )
            .await?;
        }
    }
    Ok(())
}

async fn revoke(conn: &mut SqliteConnection, table: &str, what: &str, id: &str) -> Result<()> {
    let sql = format!("UPDATE {table} SET revoked = 1 WHERE id = ?");
    let n = exec(conn, sqlx::query(AssertSqlSafe(sql)).bind(id)).await?;
    one(n, what, id)
}

async fn put_user(conn: &mut SqliteConnection, u: &User) -> Result<()> {
    let memberships = serde_json::to_string(&u.memberships).map_err(|e| json_err("user", e))?;
    let (issuer, subject) = u.oidc.clone().unzip();
    // UPDATE, then INSERT when there was no row: never INSERT OR REPLACE here, which would
    // silently delete *another* user holding the same username instead of failing.
    for sql in [
        "UPDATE users SET username = ?2, display_name = ?3, email = ?4, memberships = ?5, \
           password_hash = ?6, oidc_issuer = ?7, oidc_subject = ?8, service = ?9, disabled = ?10, \
           must_change_password = ?11, created_ms = ?12, site_admin = ?13 WHERE id = ?1",
        "INSERT INTO users (id, username, display_name, email, memberships, password_hash, \
           oidc_issuer, oidc_subject, service, disabled, must_change_password, created_ms, \
           site_admin) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    ] {
        let n = sqlx::query(sql)
            .bind(&u.id)
            .bind(&u.username)
            .bind(&u.display_name)
            .bind(&u.email)
            .bind(&memberships)
            .bind(&u.password_hash)
            .bind(&issuer)
            .bind(&subject)
            .bind(u.service)
            .bind(u.disabled)
            .bind(u.must_change_password)
            .bind(u.created_ms)
            .bind(u.site_admin)
            .execute(&mut *conn)
            .await
            .map_err(write_err("user"))?
            .rows_affected();
        if n > 0 {
            break;
        }
    }
    Ok(())
}

async fn put_grant(conn: &mut SqliteConnection, g: &Grant) -> Result<()> {
    let (grantee_kind, grantee_id) = match &g.grantee {
        Grantee::Org(o) => ("org", o),
        Grantee::User(u) => ("user", u),
    };
    let (subject_kind, study, issuer, patient) = match &g.subject {
        GrantSubject::Study { study_uid } => ("study", Some(study_uid), None, None),
        GrantSubject::Patient { issuer, patient_id } => {
            ("patient", None, Some(issuer), Some(patient_id))
        }
    };
    exec(
        conn,
        sqlx::query(
            "INSERT OR REPLACE INTO grants (id, owner_org, grantee_kind, grantee_id, subject_kind, \
               study_uid, patient_issuer, patient_id, expires_ms, break_glass, reason, created_by, \
               created_ms, revoked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&g.id)
        .bind(&g.owner_org)
        .bind(grantee_kind)
        .bind(grantee_id)
        .bind(subject_kind)
        .bind(study)
        .bind(issuer)
        .bind(patient)
        .bind(g.expires_ms)
        .bind(g.break_glass)
        .bind(&g.reason)
        .bind(&g.created_by)
        .bind(g.created_ms)
        .bind(g.revoked),
    )
    .await?;
    Ok(())
}

async fn put_upload_link(conn: &mut SqliteConnection, l: &UploadLink) -> Result<()> {
    exec(
        conn,
        sqlx::query(
            "INSERT OR REPLACE INTO upload_links (id, secret_hash, org, label, max_bytes, \
               used_bytes, created_by, created_ms, expires_ms, revoked) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&l.id)
        .bind(&l.secret_hash)
        .bind(&l.org)
        .bind(&l.label)
        // Stored as the same 64 bits (u64 -> i64 -> u64 round-trips); compared only in Rust.
        .bind(l.max_bytes as i64)
        .bind(l.used_bytes as i64)
        .bind(&l.created_by)
        .bind(l.created_ms)
        .bind(l.expires_ms)
        .bind(l.revoked),
    )
    .await?;
    Ok(())
}

/// Counts one failure for `key` (inside the writer).
pub(crate) async fn throttle_fail(
    conn: &mut SqliteConnection,
    key: &str,
    now_ms: i64,
    window_ms: i64,
    max_failures: u32,
    lock_ms: i64,
) -> Result<ThrottleState> {
    exec(
        conn,
        sqlx::query("DELETE FROM throttle WHERE expires_ms <= ?").bind(now_ms),
    )
    .await?;
    let row = sqlx::query(AssertSqlSafe(format!("{THROTTLE} WHERE key = ?")))
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    let r = row
        .as_ref()
        .map(throttle_from_row)
        .unwrap_or_default()
        .fail(now_ms, window_ms, max_failures, lock_ms);
    exec(
        conn,
        sqlx::query(
            "INSERT OR REPLACE INTO throttle (key, failures, window_start_ms, window_ms, \
               locked_until_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(key)
        .bind(i64::from(r.failures))
        .bind(r.window_start_ms)
        .bind(r.window_ms)
        .bind(r.locked_until_ms)
        .bind(r.expires_ms()),
    )
    .await?;
    Ok(r.state(now_ms))
}

/// Forgets `key` (inside the writer).
pub(crate) async fn throttle_reset(conn: &mut SqliteConnection, key: &str) -> Result<()> {
    exec(
        conn,
        sqlx::query("DELETE FROM throttle WHERE key = ?").bind(key),
    )
    .await?;
    Ok(())
}

const USER: &str = "SELECT id, username, display_name, email, memberships, password_hash, \
    oidc_issuer, oidc_subject, service, disabled, must_change_password, created_ms, site_admin \
    FROM users";
const TOKEN: &str = "SELECT id, secret_hash, user_id, org, role, name, created_ms, expires_ms, \
    revoked FROM api_tokens";
const SESSION: &str = "SELECT id_hash, user_id, org, csrf, created_ms, expires_ms FROM sessions";
const GRANT: &str = "SELECT id, owner_org, grantee_kind, grantee_id, subject_kind, study_uid, \
    patient_issuer, patient_id, expires_ms, break_glass, reason, created_by, created_ms, revoked \
    FROM grants";
const AE: &str = "SELECT ae_title, org, allowed_addrs, listen_host, listen_port, description, \
    may_query FROM ae_titles";
const SHARE_LINK: &str = "SELECT id, secret_hash, org, study_uid, allow_download, passcode_hash, \
    birth_date_check, created_by, created_ms, expires_ms, revoked FROM share_links";
const UPLOAD_LINK: &str = "SELECT id, secret_hash, org, label, max_bytes, used_bytes, \
    created_by, created_ms, expires_ms, revoked FROM upload_links";
const THROTTLE: &str = "SELECT failures, window_start_ms, window_ms, locked_until_ms FROM throttle";

fn user_from_row(r: &SqliteRow) -> Result<User> {
    let memberships = serde_json::from_str(r.get::<&str, _>("memberships"))
        .map_err(|e| json_err("user memberships", e))?;
    let oidc = match (r.get("oidc_issuer"), r.get("oidc_subject")) {
        (Some(i), Some(s)) => Some((i, s)),
        _ => None,
    };
    Ok(User {
        id: r.get("id"),
        username: r.get("username"),
        display_name: r.get("display_name"),
        email: r.get("email"),
        memberships,
        password_hash: r.get("password_hash"),
        oidc,
        service: r.get("service"),
        disabled: r.get("disabled"),
        must_change_password: r.get("must_change_password"),
        created_ms: r.get("created_ms"),
        site_admin: r.get("site_admin"),
    })
}

fn token_from_row(r: &SqliteRow) -> Result<ApiToken> {
    Ok(ApiToken {
        id: r.get("id"),
        secret_hash: r.get("secret_hash"),
        user_id: r.get("user_id"),
        org: r.get("org"),
        role: role(r.get("role"))?,
        name: r.get("name"),
        created_ms: r.get("created_ms"),
        expires_ms: r.get("expires_ms"),
        revoked: r.get("revoked"),
    })
}

fn session_from_row(r: &SqliteRow) -> Result<Session> {
    Ok(Session {
        id_hash: r.get("id_hash"),
        user_id: r.get("user_id"),
        org: r.get("org"),
        csrf: r.get("csrf"),
        created_ms: r.get("created_ms"),
        expires_ms: r.get("expires_ms"),
    })
}

fn grant_from_row(r: &SqliteRow) -> Result<Grant> {
    let grantee = match r.get::<&str, _>("grantee_kind") {
        "org" => Grantee::Org(r.get("grantee_id")),
        "user" => Grantee::User(r.get("grantee_id")),
        k => return Err(Error::Index(format!("unknown grantee kind {k:?}"))),
    };
    let subject = match r.get::<&str, _>("subject_kind") {
        "study" => GrantSubject::Study {
            study_uid: r.get::<Option<String>, _>("study_uid").unwrap_or_default(),
        },
        "patient" => GrantSubject::Patient {
            issuer: r
                .get::<Option<String>, _>("patient_issuer")
                .unwrap_or_default(),
            patient_id: r.get::<Option<String>, _>("patient_id").unwrap_or_default(),
        },
        k => return Err(Error::Index(format!("unknown grant subject kind {k:?}"))),
    };
    Ok(Grant {
        id: r.get("id"),
        owner_org: r.get("owner_org"),
        grantee,
        subject,
        expires_ms: r.get("expires_ms"),
        break_glass: r.get("break_glass"),
        reason: r.get("reason"),
        created_by: r.get("created_by"),
        created_ms: r.get("created_ms"),
        revoked: r.get("revoked"),
    })
}

fn ae_from_row(r: &SqliteRow) -> Result<AeEntry> {
    let allowed_addrs = serde_json::from_str(r.get::<&str, _>("allowed_addrs"))
        .map_err(|e| json_err("AE title addresses", e))?;
    let listen = match (
        r.get::<Option<String>, _>("listen_host"),
        r.get::<Option<i64>, _>("listen_port"),
    ) {
        (Some(h), Some(p)) => Some((h, p as u16)),
        _ => None,
    };
    Ok(AeEntry {
        ae_title: r.get("ae_title"),
        org: r.get("org"),
        allowed_addrs,
        listen,
        description: r.get("description"),
        may_query: r.get("may_query"),
    })
}

fn share_link_from_row(r: &SqliteRow) -> Result<ShareLink> {
    Ok(ShareLink {
        id: r.get("id"),
        secret_hash: r.get("secret_hash"),
        org: r.get("org"),
        study_uid: r.get("study_uid"),
        allow_download: r.get("allow_download"),
        passcode_hash: r.get("passcode_hash"),
        birth_date_check: r.get("birth_date_check"),
        created_by: r.get("created_by"),
        created_ms: r.get("created_ms"),
        expires_ms: r.get("expires_ms"),
        revoked: r.get("revoked"),
    })
}

fn upload_link_from_row(r: &SqliteRow) -> UploadLink {
    UploadLink {
        id: r.get("id"),
        secret_hash: r.get("secret_hash"),
        org: r.get("org"),
        label: r.get("label"),
        max_bytes: r.get::<i64, _>("max_bytes") as u64,
        used_bytes: r.get::<i64, _>("used_bytes") as u64,
        created_by: r.get("created_by"),
        created_ms: r.get("created_ms"),
        expires_ms: r.get("expires_ms"),
        revoked: r.get("revoked"),
    }
}

fn throttle_from_row(r: &SqliteRow) -> ThrottleRecord {
    ThrottleRecord {
        failures: u32::try_from(r.get::<i64, _>("failures")).unwrap_or(u32::MAX),
        window_start_ms: r.get("window_start_ms"),
        window_ms: r.get("window_ms"),
        locked_until_ms: r.get("locked_until_ms"),
    }
}

/// Runs a read with string parameters and maps every row.
pub(crate) async fn read<T>(
    pool: &SqlitePool,
    sql: &str,
    params: &[&str],
    map: impl Fn(&SqliteRow) -> Result<T>,
) -> Result<Vec<T>> {
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for p in params {
        q = q.bind(*p);
    }
    let rows = q.fetch_all(pool).await.map_err(db_err)?;
    rows.iter().map(map).collect()
}

/// [`read`] for at most one row.
pub(crate) async fn read_one<T>(
    pool: &SqlitePool,
    sql: &str,
    params: &[&str],
    map: impl Fn(&SqliteRow) -> Result<T>,
) -> Result<Option<T>> {
    Ok(read(pool, sql, params, map).await?.into_iter().next())
}

#[async_trait]
impl Directory for SqliteIndex {
    async fn apply(&self, changes: Vec<DirectoryChange>, audit: Vec<AuditEvent>) -> Result<()> {
        if changes.is_empty() && audit.is_empty() {
            return Ok(());
        }
        self.send(|tx| WriteOp::Apply(changes, audit, tx)).await
    }

    async fn orgs(&self) -> Result<Vec<Org>> {
        read(
            &self.read,
            "SELECT id, name, created_ms FROM orgs ORDER BY id",
            &[],
            org_from_row,
        )
        .await
    }

    async fn org(&self, id: &str) -> Result<Option<Org>> {
        read_one(
            &self.read,
            "SELECT id, name, created_ms FROM orgs WHERE id = ?",
            &[id],
            org_from_row,
        )
        .await
    }

    async fn users(&self) -> Result<Vec<User>> {
        let sql = format!("{USER} ORDER BY username");
        read(&self.read, &sql, &[], user_from_row).await
    }

    async fn user(&self, id: &str) -> Result<Option<User>> {
        let sql = format!("{USER} WHERE id = ?");
        read_one(&self.read, &sql, &[id], user_from_row).await
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>> {
        let sql = format!("{USER} WHERE username = ?");
        read_one(&self.read, &sql, &[username], user_from_row).await
    }

    async fn user_by_oidc(&self, issuer: &str, subject: &str) -> Result<Option<User>> {
        let sql = format!("{USER} WHERE oidc_issuer = ? AND oidc_subject = ?");
        read_one(&self.read, &sql, &[issuer, subject], user_from_row).await
    }

    async fn token(&self, id: &str) -> Result<Option<ApiToken>> {
        let sql = format!("{TOKEN} WHERE id = ?");
        read_one(&self.read, &sql, &[id], token_from_row).await
    }

    async fn tokens(&self, org: &str) -> Result<Vec<ApiToken>> {
        let sql = format!("{TOKEN} WHERE org = ? ORDER BY created_ms, id");
        read(&self.read, &sql, &[org], token_from_row).await
    }

    async fn session(&self, id_hash: &str) -> Result<Option<Session>> {
        let sql = format!("{SESSION} WHERE id_hash = ?");
        read_one(&self.read, &sql, &[id_hash], session_from_row).await
    }

    async fn grants_for(&self, org: &str, user: &str) -> Result<Vec<Grant>> {
        let sql = format!(
            "{GRANT} WHERE (grantee_kind = 'org' AND grantee_id = ?) \
               OR (grantee_kind = 'user' AND grantee_id = ?) ORDER BY created_ms, id"
        );
        read(&self.read, &sql, &[org, user], grant_from_row).await
    }

    async fn grants_of(&self, owner_org: &str) -> Result<Vec<Grant>> {
        let sql = format!("{GRANT} WHERE owner_org = ? ORDER BY created_ms, id");
        read(&self.read, &sql, &[owner_org], grant_from_row).await
    }

    async fn ae(&self, ae_title: &str) -> Result<Option<AeEntry>> {
        let sql = format!("{AE} WHERE ae_title = ?");
        read_one(&self.read, &sql, &[ae_title], ae_from_row).await
    }

    async fn aes(&self) -> Result<Vec<AeEntry>> {
        let sql = format!("{AE} ORDER BY ae_title");
        read(&self.read, &sql, &[], ae_from_row).await
    }

    async fn share_link(&self, id: &str) -> Result<Option<ShareLink>> {
        let sql = format!("{SHARE_LINK} WHERE id = ?");
        read_one(&self.read, &sql, &[id], share_link_from_row).await
    }

    async fn share_links(&self, org: &str) -> Result<Vec<ShareLink>> {
        let sql = format!("{SHARE_LINK} WHERE org = ? ORDER BY created_ms, id");
        read(&self.read, &sql, &[org], share_link_from_row).await
    }

    async fn upload_link(&self, id: &str) -> Result<Option<UploadLink>> {
        let sql = format!("{UPLOAD_LINK} WHERE id = ?");
        read_one(&self.read, &sql, &[id], |r| Ok(upload_link_from_row(r))).await
    }

    async fn upload_links(&self, org: &str) -> Result<Vec<UploadLink>> {
        let sql = format!("{UPLOAD_LINK} WHERE org = ? ORDER BY created_ms, id");
        read(&self.read, &sql, &[org], |r| Ok(upload_link_from_row(r))).await
    }

    async fn setting(&self, key: &str) -> Result<Option<String>> {
        read_one(
            &self.read,
            "SELECT value FROM settings WHERE key = ?",
            &[key],
            |r| Ok(r.get("value")),
        )
        .await
    }

    async fn throttle_fail(
        &self,
        key: &str,
        now_ms: i64,
        window_ms: i64,
        max_failures: u32,
        lock_ms: i64,
    ) -> Result<ThrottleState> {
        let key = key.to_owned();
        self.send(|tx| WriteOp::ThrottleFail {
            key,
            now_ms,
            window_ms,
            max_failures,
            lock_ms,
            tx,
        })
        .await
    }

    async fn throttle_state(&self, key: &str, now_ms: i64) -> Result<ThrottleState> {
        let sql = format!("{THROTTLE} WHERE key = ?");
        let r = read_one(&self.read, &sql, &[key], |r| Ok(throttle_from_row(r))).await?;
        Ok(r.unwrap_or_default().state(now_ms))
    }

    async fn throttle_reset(&self, key: &str) -> Result<()> {
        // Most resets follow a success with nothing counted: skip the writer (and its fsync)
        // then. A failure counted concurrently with the reset may survive it either way.
        let sql = format!("{THROTTLE} WHERE key = ?");
        if read_one(&self.read, &sql, &[key], |_| Ok(()))
            .await?
            .is_none()
        {
            return Ok(());
        }
        let key = key.to_owned();
        self.send(|tx| WriteOp::ThrottleReset(key, tx)).await
    }
}

fn org_from_row(r: &SqliteRow) -> Result<Org> {
    Ok(Org {
        id: r.get("id"),
        name: r.get("name"),
        created_ms: r.get("created_ms"),
    })
}
