//! The exchange registry in SQLite: [`Registry`] for [`SqliteIndex`], answering as the reference
//! model [`MemoryRegistry`] does.
//!
//! ## Invariants
//! - Every write is a [`WriteOp::Registry`] of the one writer task: a [`Registry::apply`] runs
//!   its changes and then appends its audit events ([`Chain::append`]) inside one savepoint, so
//!   they commit together or not at all, group-committed with whatever else the writer is doing.
//!   Deleting a missing record fails with [`Error::NotFound`] and rolls back that request alone
//!   (its earlier changes and its events with it).
//! - Names are primary keys (`peers.name`, `dicom_nodes.name`, `routes.id`, `arrivals (org,
//!   study_uid)`); a put replaces the whole row.
//! - Lists come in the contract's order, by the database: peers and nodes by name, routes by
//!   `(sort_order, id)` ([`sort_routes`]), arrivals most recently updated first, then org and
//!   study ([`sort_arrivals`]); text compares bytewise in both.
//! - Reads use the read pool and see the last committed state.
//!
//! ## Layout
//! One table per record kind (`schema.sql`). A node's transfer syntaxes, a route's matcher and its
//! destinations are JSON text (serde), read whole with their row.
//!
//! ## Crash behaviour
//! As every write of the writer: a change is durable, with its audit events, once its
//! transaction commits; a crash before loses both.

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Row};
use vesalius_store::audit::AuditEvent;
use vesalius_store::error::{Error, Result};
use vesalius_store::registry::*;

use crate::audit::Chain;
use crate::directory::{read, read_one};
use crate::write::WriteOp;
use crate::{SqliteIndex, db_err};

fn json_err(what: &str, e: serde_json::Error) -> Error {
    Error::Index(format!("{what}: {e}"))
}

fn to_json<T: serde::Serialize>(what: &str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| json_err(what, e))
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| json_err(what, e))
}

/// Runs one [`Registry::apply`] inside the writer's transaction (its savepoint is the caller's).
pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    chain: &mut Chain,
    changes: &[RegistryChange],
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

/// Deletes the row of `table` whose `key` is `id`; `NotFound` when there was none.
async fn delete(
    conn: &mut SqliteConnection,
    table: &str,
    key: &str,
    what: &str,
    id: &str,
) -> Result<()> {
    let sql = format!("DELETE FROM {table} WHERE {key} = ?");
    if exec(conn, sqlx::query(AssertSqlSafe(sql)).bind(id)).await? == 0 {
        return Err(Error::NotFound(format!("{what} {id}")));
    }
    Ok(())
}

async fn apply_change(conn: &mut SqliteConnection, change: &RegistryChange) -> Result<()> {
    use RegistryChange as C;
    match change {
        C::PutPeer(p) => {
            exec(
                conn,
                sqlx::query(
                    "INSERT OR REPLACE INTO peers (name, base_url, public_key, org, remote_org, \
                       may_query, description, managed, created_ms, kind, auth_type, auth_user, \
                       auth_secret) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&p.name)
                .bind(&p.base_url)
                .bind(&p.public_key)
                .bind(&p.org)
                .bind(&p.remote_org)
                .bind(p.may_query)
                .bind(&p.description)
                .bind(p.managed)
                .bind(p.created_ms)
                .bind(p.kind.as_str())
                .bind(p.auth.kind())
                .bind(match &p.auth {
                    PeerAuth::Basic { username, .. } => username.as_str(),
                    _ => "",
                })
                .bind(match &p.auth {
                    PeerAuth::None => "",
                    PeerAuth::Basic { password, .. } => password.as_str(),
                    PeerAuth::Bearer { token } => token.as_str(),
                }),
            )
            .await?;
        }
        C::DeletePeer(name) => delete(conn, "peers", "name", "peer", name).await?,
        C::PutNode(n) => {
            let syntaxes = to_json("transfer syntaxes", &n.transfer_syntaxes)?;
            exec(
                conn,
                sqlx::query(
                    "INSERT OR REPLACE INTO dicom_nodes (name, ae_title, host, port, \
                       transfer_syntaxes, org, description, managed, created_ms, retrieve, \
                       query_model) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&n.name)
                .bind(&n.ae_title)
                .bind(&n.host)
                .bind(i64::from(n.port))
                .bind(syntaxes)
                .bind(&n.org)
                .bind(&n.description)
                .bind(n.managed)
                .bind(n.created_ms)
                .bind(n.retrieve.as_str())
                .bind(n.query_model.as_str()),
            )
            .await?;
        }
        C::DeleteNode(name) => delete(conn, "dicom_nodes", "name", "node", name).await?,
        C::PutRoute(r) => {
            let matcher = to_json("route matcher", &r.matcher)?;
            let destinations = to_json("route destinations", &r.destinations)?;
            exec(
                conn,
                sqlx::query(
                    "INSERT OR REPLACE INTO routes (id, name, org, enabled, sort_order, matcher, \
                       destinations, priority, deid, managed, created_ms) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&r.id)
                .bind(&r.name)
                .bind(&r.org)
                .bind(r.enabled)
                .bind(r.order)
                .bind(matcher)
                .bind(destinations)
                .bind(r.priority)
                .bind(&r.deid)
                .bind(r.managed)
                .bind(r.created_ms),
            )
            .await?;
        }
        C::DeleteRoute(id) => delete(conn, "routes", "id", "route", id).await?,
        C::PutArrival(a) => {
            exec(
                conn,
                sqlx::query(
                    "INSERT OR REPLACE INTO arrivals (org, study_uid, from_peer, priority, \
                       manifest_instances, complete_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&a.org)
                .bind(&a.study_uid)
                .bind(&a.from_peer)
                .bind(a.priority)
                .bind(a.manifest_instances as i64)
                .bind(a.complete_ms)
                .bind(a.updated_ms),
            )
            .await?;
        }
    }
    Ok(())
}

const PEER: &str = "SELECT name, base_url, public_key, org, remote_org, may_query, description, \
    managed, created_ms, kind, auth_type, auth_user, auth_secret FROM peers";
const NODE: &str = "SELECT name, ae_title, host, port, transfer_syntaxes, org, description, \
    managed, created_ms, retrieve, query_model FROM dicom_nodes";
const ROUTE: &str = "SELECT id, name, org, enabled, sort_order, matcher, destinations, priority, \
    deid, managed, created_ms FROM routes";
const ARRIVAL: &str = "SELECT org, study_uid, from_peer, priority, manifest_instances, \
    complete_ms, updated_ms FROM arrivals";

fn peer_from_row(r: &SqliteRow) -> Result<Peer> {
    let kind: String = r.get("kind");
    let auth_type: String = r.get("auth_type");
    let secret: String = r.get("auth_secret");
    let auth = match auth_type.as_str() {
        "none" => PeerAuth::None,
        "basic" => PeerAuth::Basic {
            username: r.get("auth_user"),
            password: secret,
        },
        "bearer" => PeerAuth::Bearer { token: secret },
        other => return Err(Error::Index(format!("peer authentication {other:?}"))),
    };
    Ok(Peer {
        name: r.get("name"),
        kind: PeerKind::parse(&kind).ok_or_else(|| Error::Index(format!("peer kind {kind:?}")))?,
        base_url: r.get("base_url"),
        public_key: r.get("public_key"),
        auth,
        org: r.get("org"),
        remote_org: r.get("remote_org"),
        may_query: r.get("may_query"),
        description: r.get("description"),
        managed: r.get("managed"),
        created_ms: r.get("created_ms"),
    })
}

fn node_from_row(r: &SqliteRow) -> Result<DicomNode> {
    let port: i64 = r.get("port");
    let retrieve: String = r.get("retrieve");
    let model: String = r.get("query_model");
    Ok(DicomNode {
        name: r.get("name"),
        ae_title: r.get("ae_title"),
        host: r.get("host"),
        port: u16::try_from(port)
            .map_err(|_| Error::Index(format!("DICOM node port {port} out of range")))?,
        transfer_syntaxes: from_json("transfer syntaxes", r.get("transfer_syntaxes"))?,
        retrieve: RetrieveMethod::parse(&retrieve)
            .ok_or_else(|| Error::Index(format!("DICOM node retrieval {retrieve:?}")))?,
        query_model: QueryModel::parse(&model)
            .ok_or_else(|| Error::Index(format!("DICOM node query model {model:?}")))?,
        org: r.get("org"),
        description: r.get("description"),
        managed: r.get("managed"),
        created_ms: r.get("created_ms"),
    })
}

fn route_from_row(r: &SqliteRow) -> Result<Route> {
    Ok(Route {
        id: r.get("id"),
        name: r.get("name"),
        org: r.get("org"),
        enabled: r.get("enabled"),
        order: r.get("sort_order"),
        matcher: from_json("route matcher", r.get("matcher"))?,
        destinations: from_json("route destinations", r.get("destinations"))?,
        priority: r.get("priority"),
        deid: r.get("deid"),
        managed: r.get("managed"),
        created_ms: r.get("created_ms"),
    })
}

fn arrival_from_row(r: &SqliteRow) -> Result<Arrival> {
    Ok(Arrival {
        org: r.get("org"),
        study_uid: r.get("study_uid"),
        from_peer: r.get("from_peer"),
        priority: r.get("priority"),
        manifest_instances: r.get::<i64, _>("manifest_instances") as u64,
        complete_ms: r.get("complete_ms"),
        updated_ms: r.get("updated_ms"),
    })
}

#[async_trait]
impl Registry for SqliteIndex {
    async fn apply(&self, changes: Vec<RegistryChange>, audit: Vec<AuditEvent>) -> Result<()> {
        if changes.is_empty() && audit.is_empty() {
            return Ok(());
        }
        self.send(|tx| WriteOp::Registry(changes, audit, tx)).await
    }

    async fn peers(&self) -> Result<Vec<Peer>> {
        let sql = format!("{PEER} ORDER BY name");
        read(&self.read, &sql, &[], peer_from_row).await
    }

    async fn peer(&self, name: &str) -> Result<Option<Peer>> {
        let sql = format!("{PEER} WHERE name = ?");
        read_one(&self.read, &sql, &[name], peer_from_row).await
    }

    async fn nodes(&self) -> Result<Vec<DicomNode>> {
        let sql = format!("{NODE} ORDER BY name");
        read(&self.read, &sql, &[], node_from_row).await
    }

    async fn node(&self, name: &str) -> Result<Option<DicomNode>> {
        let sql = format!("{NODE} WHERE name = ?");
        read_one(&self.read, &sql, &[name], node_from_row).await
    }

    async fn routes(&self) -> Result<Vec<Route>> {
        let sql = format!("{ROUTE} ORDER BY sort_order, id");
        read(&self.read, &sql, &[], route_from_row).await
    }

    async fn arrival(&self, org: &str, study_uid: &str) -> Result<Option<Arrival>> {
        let sql = format!("{ARRIVAL} WHERE org = ? AND study_uid = ?");
        read_one(&self.read, &sql, &[org, study_uid], arrival_from_row).await
    }

    async fn arrivals(&self, org: Option<&str>, limit: usize) -> Result<Vec<Arrival>> {
        let filter = if org.is_some() { "WHERE org = ?" } else { "" };
        // LIMIT -1: none (limit 0, as in the model).
        let limit = if limit == 0 {
            -1
        } else {
            i64::try_from(limit).unwrap_or(-1)
        };
        let sql =
            format!("{ARRIVAL} {filter} ORDER BY updated_ms DESC, org, study_uid LIMIT {limit}");
        read(&self.read, &sql, org.as_slice(), arrival_from_row).await
    }
}
