//! The schema and its migrations, applied once at open in one `BEGIN IMMEDIATE` transaction (so
//! two processes opening one database at once migrate it once, and a failed migration changes
//! nothing).
//!
//! The version lives in `PRAGMA user_version`:
//! - **0**: a new file, or one made by the first schema (issue 1), which had no version. Its
//!   `audit(id, action, details, created_ms)` table was a placeholder that nothing in the product
//!   wrote; it is dropped when empty and renamed `audit_v1` (kept, never read) otherwise, so the
//!   chained `audit` table of version 2 can take its name.
//! - **2**: directory tables, chained audit trail, checkpoints; `outbox(id, kind, queue, payload,
//!   created_ms)` as a stub.
//! - **3**: `schema.sql` as it is: the outbox gains study, priority, not-before, dedupe key,
//!   state, attempts, lease and last error, and its ids become `AUTOINCREMENT` (never reused);
//!   new `receipts` and the registry (`peers`, `dicom_nodes`, `routes`, `arrivals`). SQLite
//!   cannot add `AUTOINCREMENT` to an existing table, so a stub outbox of versions 1 and 2 is
//!   renamed `outbox_v2`, `schema.sql` creates the new one, and the old rows move over with
//!   their ids as `ready` jobs of no study (columns at their defaults); `outbox_v2` is dropped.
//! - **4**: peers gain `kind` (`vesalius` or `dicomweb`) and the credentials presented to a
//!   plain DICOMweb peer (`auth_type`, `auth_user`, `auth_secret`); a version-3 table gets the
//!   columns added with their defaults, so every existing peer is a Vesalius site without
//!   credentials.
//! - **5**: DICOM nodes gain `retrieve` (`move` or `get`: C-MOVE to our AE title or C-GET on our
//!   own association); a version-4 table gets the column with its default, so every existing
//!   node goes on being retrieved from by C-MOVE.
//! - **6**: receipts gain `org`, the sending organisation, so that transfers, receipts and
//!   their live events go only to that organisation's administrators. A version-5 receipt gets
//!   the organisation that holds its study when exactly one does (the sender kept its copy);
//!   otherwise it stays "" and only the server itself (`vesalius transfers`, the CLI) lists it.
//!   The delivery-time index `receipts_time` is replaced by `receipts_time_org` (the same order,
//!   covering the organisation) and `receipts_org_time` (one organisation's, newest first).
//! - **7**: DICOM nodes gain `query_model` (`study` or `patient`: the Query/Retrieve
//!   Information Model they are queried and retrieved from in, PS3.4 C.6); a version-6 table
//!   gets the column with its default, so every existing node goes on being asked in Study
//!   Root.
//!   Users gain `site_admin` (issue 6: a person who may create organisations); a
//!   version-6 table gets the column with its default, so nobody is a site administrator until
//!   one is named (`vesalius admin user site-admin`).
//!
//! A database with a higher version than [`SCHEMA_VERSION`] was written by a newer Vesalius and
//! is refused rather than modified.

use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Executor};
use vesalius_store::error::{Error, Result};

use crate::db_err;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 7;

/// Brings the database to [`SCHEMA_VERSION`] (creating it when empty).
pub(crate) async fn migrate(conn: &mut SqliteConnection) -> Result<()> {
    conn.execute("BEGIN IMMEDIATE").await.map_err(db_err)?;
    match migrate_in_transaction(conn).await {
        Ok(()) => {
            conn.execute("COMMIT").await.map_err(db_err)?;
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn migrate_in_transaction(conn: &mut SqliteConnection) -> Result<()> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
    if version > SCHEMA_VERSION {
        return Err(Error::Index(format!(
            "the index database has schema version {version}, newer than this build's \
             {SCHEMA_VERSION}: use a newer Vesalius"
        )));
    }
    if version < 2 {
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('audit')")
                .fetch_all(&mut *conn)
                .await
                .map_err(db_err)?;
        if columns.iter().any(|c| c == "details") {
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit")
                .fetch_one(&mut *conn)
                .await
                .map_err(db_err)?;
            let sql = if rows == 0 {
                "DROP TABLE audit"
            } else {
                tracing::warn!(
                    rows,
                    "keeping the unchained audit table of schema 1 as audit_v1"
                );
                "ALTER TABLE audit RENAME TO audit_v1"
            };
            conn.execute(sql).await.map_err(db_err)?;
        }
    }
    // Version 3: the stub outbox makes way for the new table (module doc); its rows follow.
    let stub_outbox = version < 3 && {
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('outbox')")
                .fetch_all(&mut *conn)
                .await
                .map_err(db_err)?;
        !columns.is_empty() && !columns.iter().any(|c| c == "state")
    };
    if stub_outbox {
        conn.execute("ALTER TABLE outbox RENAME TO outbox_v2")
            .await
            .map_err(db_err)?;
    }
    sqlx::raw_sql(include_str!("schema.sql"))
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    if stub_outbox {
        sqlx::raw_sql(
            "INSERT INTO outbox (id, kind, queue, payload, created_ms) \
               SELECT id, kind, queue, payload, created_ms FROM outbox_v2 ORDER BY id; \
             DROP TABLE outbox_v2;",
        )
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    // Version 4: a version-3 peers table (left as it was by `CREATE TABLE IF NOT EXISTS`)
    // gains the kind and credential columns.
    let peer_columns: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('peers')")
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
    if !peer_columns.iter().any(|c| c == "kind") {
        sqlx::raw_sql(
            "ALTER TABLE peers ADD COLUMN kind TEXT NOT NULL DEFAULT 'vesalius'; \
             ALTER TABLE peers ADD COLUMN auth_type TEXT NOT NULL DEFAULT 'none'; \
             ALTER TABLE peers ADD COLUMN auth_user TEXT NOT NULL DEFAULT ''; \
             ALTER TABLE peers ADD COLUMN auth_secret TEXT NOT NULL DEFAULT '';",
        )
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    // Version 5: a version-4 dicom_nodes table gains the retrieval method.
    let node_columns: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('dicom_nodes')")
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
    if !node_columns.iter().any(|c| c == "retrieve") {
        conn.execute("ALTER TABLE dicom_nodes ADD COLUMN retrieve TEXT NOT NULL DEFAULT 'move'")
            .await
            .map_err(db_err)?;
    }
    // Version 7: a version-6 dicom_nodes table gains the query model.
    if !node_columns.iter().any(|c| c == "query_model") {
        conn.execute(
            "ALTER TABLE dicom_nodes ADD COLUMN query_model TEXT NOT NULL DEFAULT 'study'",
        )
        .await
        .map_err(db_err)?;
    }
    // Version 6: a version-5 receipts table gains the sending organisation (module doc).
    let receipt_columns: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('receipts')")
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
    if !receipt_columns.iter().any(|c| c == "org") {
        sqlx::raw_sql(
            "ALTER TABLE receipts ADD COLUMN org TEXT NOT NULL DEFAULT ''; \
             UPDATE receipts SET org = (SELECT min(s.org) FROM studies s \
                 WHERE s.study_uid = receipts.study_uid) \
               WHERE (SELECT count(*) FROM studies s WHERE s.study_uid = receipts.study_uid) = 1; \
             DROP INDEX IF EXISTS receipts_time;",
        )
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    // Outbox::transfers walks these from the newest delivery and stops (covering: it never
    // visits the table), over every organisation or one.
    sqlx::raw_sql(
        "CREATE INDEX IF NOT EXISTS receipts_time_org \
           ON receipts (delivered_ms DESC, queue, study_uid, org); \
         CREATE INDEX IF NOT EXISTS receipts_org_time \
           ON receipts (org, delivered_ms DESC, queue, study_uid);",
    )
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    // Version 7: a version-6 users table gains the site-administrator flag (module doc).
    let user_columns: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('users')")
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)?;
    if !user_columns.iter().any(|c| c == "site_admin") {
        conn.execute("ALTER TABLE users ADD COLUMN site_admin INTEGER NOT NULL DEFAULT 0")
            .await
            .map_err(db_err)?;
    }
    if version != SCHEMA_VERSION {
        sqlx::query(AssertSqlSafe(format!(
            "PRAGMA user_version = {SCHEMA_VERSION}"
        )))
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    Ok(())
}
