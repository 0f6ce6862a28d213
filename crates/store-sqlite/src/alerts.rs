//! Alerts in SQLite: [`AlertStore`] for [`SqliteIndex`], answering as the reference model
//! [`vesalius_store::alerts::MemoryAlertStore`] does (the shared contract test runs on both).
//!
//! ## Invariants
//! - Every write is a [`WriteOp::Alerts`] of the one writer task, inside its own savepoint:
//!   rule and subscription changes commit with their audit events, an acknowledgement with its
//!   audit events, a raise with its key (`alert_keys`), alerts and deliveries, an escalation's
//!   conditional update with the alerts it adds. So a raise or an escalation happens once, also
//!   with several nodes on one database.
//! - A claim moves the claimed deliveries' `next_ms` to the end of the lease in the same
//!   statement batch as it reads them, so two senders never hold one delivery at once while the
//!   lease lasts.
//!
//! ## Layout
//! `alert_rules`, `alert_subscriptions`, `alert_keys`, `alerts`, `alert_deliveries`
//! (`schema.sql`); a rule's escalation list and an alert's details are JSON text.
//!
//! ## Crash behaviour
//! As every write of the writer: durable once committed. A delivery claimed by a process that
//! then crashed is due again when its lease ends (at least once).

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Row};
use vesalius_store::alerts::*;
use vesalius_store::audit::AuditEvent;
use vesalius_store::error::{Error, Result};

use crate::audit::Chain;
use crate::directory::{read, read_one};
use crate::write::WriteOp;
use crate::{SqliteIndex, db_err};

/// One write of the alert store.
pub(crate) enum AlertWrite {
    Apply(Vec<AlertChange>, Vec<AuditEvent>),
    Raise(String, Vec<Alert>, Vec<Delivery>),
    Acknowledge {
        chain: String,
        by: String,
        now_ms: i64,
        audit: Vec<AuditEvent>,
    },
    Escalate(String, Vec<Alert>, Vec<Delivery>),
    Claim {
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    },
    Finish {
        id: String,
        state: DeliveryState,
        next_ms: i64,
        error: String,
    },
}

/// What a write answers.
pub(crate) enum AlertAnswer {
    Unit,
    Bool(bool),
    Deliveries(Vec<Delivery>),
}

fn json_err(what: &str, e: serde_json::Error) -> Error {
    Error::Index(format!("{what}: {e}"))
}

async fn exec(
    conn: &mut SqliteConnection,
    q: sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
) -> Result<u64> {
    Ok(q.execute(&mut *conn).await.map_err(db_err)?.rows_affected())
}

/// Runs one write inside the writer's transaction (its savepoint is the caller's).
pub(crate) async fn run(
    conn: &mut SqliteConnection,
    chain: &mut Chain,
    w: AlertWrite,
) -> Result<AlertAnswer> {
    match w {
        AlertWrite::Apply(changes, events) => {
            for c in &changes {
                apply_change(conn, c).await?;
            }
            chain.append(conn, &events).await?;
            Ok(AlertAnswer::Unit)
        }
        AlertWrite::Raise(key, alerts, deliveries) => {
            let at = alerts.first().map_or(0, |a| a.created_ms);
            let n = exec(
                conn,
                sqlx::query("INSERT OR IGNORE INTO alert_keys (key, created_ms) VALUES (?, ?)")
                    .bind(&key)
                    .bind(at),
            )
            .await?;
            if n == 0 {
                return Ok(AlertAnswer::Bool(false));
            }
            insert(conn, &alerts, &deliveries).await?;
            Ok(AlertAnswer::Bool(true))
        }
        AlertWrite::Acknowledge {
            chain: id,
            by,
            now_ms,
            audit,
        } => {
            let n = exec(
                conn,
                sqlx::query(
                    "UPDATE alerts SET acknowledged_ms = ?, acknowledged_by = ?, \
                       escalate_at_ms = NULL WHERE chain = ? AND acknowledged_ms IS NULL",
                )
                .bind(now_ms)
                .bind(&by)
                .bind(&id),
            )
            .await?;
            if n > 0 {
                chain.append(conn, &audit).await?;
            }
            Ok(AlertAnswer::Bool(n > 0))
        }
        AlertWrite::Escalate(from, next, deliveries) => {
            let n = exec(
                conn,
                sqlx::query(
                    "UPDATE alerts SET escalate_at_ms = NULL WHERE id = ? \
                       AND escalate_at_ms IS NOT NULL AND acknowledged_ms IS NULL",
                )
                .bind(&from),
            )
            .await?;
            if n == 0 {
                return Ok(AlertAnswer::Bool(false));
            }
            insert(conn, &next, &deliveries).await?;
            Ok(AlertAnswer::Bool(true))
        }
        AlertWrite::Claim {
            now_ms,
            lease_ms,
            limit,
        } => {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let sql = format!(
                "{DELIVERY} WHERE state = 'pending' AND next_ms <= ? ORDER BY next_ms, id \
                 LIMIT {limit}"
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(now_ms)
                .fetch_all(&mut *conn)
                .await
                .map_err(db_err)?;
            let mut got = rows
                .iter()
                .map(delivery_from_row)
                .collect::<Result<Vec<_>>>()?;
            for d in &mut got {
                d.next_ms = now_ms + lease_ms;
                exec(
                    conn,
                    sqlx::query("UPDATE alert_deliveries SET next_ms = ? WHERE id = ?")
                        .bind(d.next_ms)
                        .bind(&d.id),
                )
                .await?;
            }
            Ok(AlertAnswer::Deliveries(got))
        }
        AlertWrite::Finish {
            id,
            state,
            next_ms,
            error,
        } => {
            let n = exec(
                conn,
                sqlx::query(
                    "UPDATE alert_deliveries SET attempts = attempts + 1, state = ?, \
                       next_ms = ?, last_error = ? WHERE id = ?",
                )
                .bind(state.as_str())
                .bind(next_ms)
                .bind(&error)
                .bind(&id),
            )
            .await?;
            if n == 0 {
                return Err(Error::NotFound(format!("delivery {id}")));
            }
            Ok(AlertAnswer::Unit)
        }
    }
}

async fn insert(
    conn: &mut SqliteConnection,
    alerts: &[Alert],
    deliveries: &[Delivery],
) -> Result<()> {
    for a in alerts {
        let details =
            serde_json::to_string(&a.details).map_err(|e| json_err("alert details", e))?;
        exec(
            conn,
            sqlx::query(
                "INSERT INTO alerts (id, chain, org, rule_id, kind, username, title, study_uid, \
                   link, details, created_ms, step, escalate_at_ms, acknowledged_ms, \
                   acknowledged_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&a.id)
            .bind(&a.chain)
            .bind(&a.org)
            .bind(&a.rule_id)
            .bind(a.kind.as_str())
            .bind(&a.username)
            .bind(&a.title)
            .bind(&a.study_uid)
            .bind(&a.link)
            .bind(details)
            .bind(a.created_ms)
            .bind(i64::from(a.step))
            .bind(a.escalate_at_ms)
            .bind(a.acknowledged_ms)
            .bind(&a.acknowledged_by),
        )
        .await?;
    }
    for d in deliveries {
        exec(
            conn,
            sqlx::query(
                "INSERT INTO alert_deliveries (id, alert_id, channel, target, secret, attempts, \
                   next_ms, state, last_error, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&d.id)
            .bind(&d.alert_id)
            .bind(d.channel.as_str())
            .bind(&d.target)
            .bind(&d.secret)
            .bind(i64::from(d.attempts))
            .bind(d.next_ms)
            .bind(d.state.as_str())
            .bind(&d.last_error)
            .bind(d.created_ms),
        )
        .await?;
    }
    Ok(())
}

async fn apply_change(conn: &mut SqliteConnection, c: &AlertChange) -> Result<()> {
    match c {
        AlertChange::PutRule(r) => {
            let esc =
                serde_json::to_string(&r.escalation).map_err(|e| json_err("escalation", e))?;
            exec(
                conn,
                sqlx::query(
                    "INSERT OR REPLACE INTO alert_rules (id, org, name, kind, threshold, \
                       escalation, escalate_after_ms, enabled, created_ms) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&r.id)
                .bind(&r.org)
                .bind(&r.name)
                .bind(r.kind.as_str())
                .bind(r.threshold)
                .bind(esc)
                .bind(r.escalate_after_ms)
                .bind(r.enabled)
                .bind(r.created_ms),
            )
            .await?;
        }
        AlertChange::DeleteRule(id) => {
            if exec(
                conn,
                sqlx::query("DELETE FROM alert_rules WHERE id = ?").bind(id),
            )
            .await?
                == 0
            {
                return Err(Error::NotFound(format!("alert rule {id}")));
            }
            exec(
                conn,
                sqlx::query("DELETE FROM alert_subscriptions WHERE rule_id = ?").bind(id),
            )
            .await?;
        }
        AlertChange::PutSubscription(s) => {
            exec(
                conn,
                sqlx::query(
                    "INSERT OR REPLACE INTO alert_subscriptions (id, rule_id, org, username, \
                       channel, target, secret, escalation_only, created_ms) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&s.id)
                .bind(&s.rule_id)
                .bind(&s.org)
                .bind(&s.username)
                .bind(s.channel.as_str())
                .bind(&s.target)
                .bind(&s.secret)
                .bind(s.escalation_only)
                .bind(s.created_ms),
            )
            .await?;
        }
        AlertChange::DeleteSubscription(id) => {
            if exec(
                conn,
                sqlx::query("DELETE FROM alert_subscriptions WHERE id = ?").bind(id),
            )
            .await?
                == 0
            {
                return Err(Error::NotFound(format!("subscription {id}")));
            }
        }
    }
    Ok(())
}

const RULE: &str = "SELECT id, org, name, kind, threshold, escalation, escalate_after_ms, \
    enabled, created_ms FROM alert_rules";
const SUB: &str = "SELECT id, rule_id, org, username, channel, target, secret, escalation_only, \
    created_ms FROM alert_subscriptions";
const ALERT: &str = "SELECT id, chain, org, rule_id, kind, username, title, study_uid, link, \
    details, created_ms, step, escalate_at_ms, acknowledged_ms, acknowledged_by FROM alerts";
const DELIVERY: &str = "SELECT id, alert_id, channel, target, secret, attempts, next_ms, state, \
    last_error, created_ms FROM alert_deliveries";

fn kind(s: &str) -> Result<AlertKind> {
    AlertKind::parse(s).ok_or_else(|| Error::Index(format!("alert kind {s:?}")))
}

fn channel(s: &str) -> Result<Channel> {
    Channel::parse(s).ok_or_else(|| Error::Index(format!("alert channel {s:?}")))
}

fn rule_from_row(r: &SqliteRow) -> Result<AlertRule> {
    Ok(AlertRule {
        id: r.get("id"),
        org: r.get("org"),
        name: r.get("name"),
        kind: kind(r.get("kind"))?,
        threshold: r.get("threshold"),
        escalation: serde_json::from_str(r.get("escalation"))
            .map_err(|e| json_err("escalation", e))?,
        escalate_after_ms: r.get("escalate_after_ms"),
        enabled: r.get("enabled"),
        created_ms: r.get("created_ms"),
    })
}

fn sub_from_row(r: &SqliteRow) -> Result<Subscription> {
    Ok(Subscription {
        id: r.get("id"),
        rule_id: r.get("rule_id"),
        org: r.get("org"),
        username: r.get("username"),
        channel: channel(r.get("channel"))?,
        target: r.get("target"),
        secret: r.get("secret"),
        escalation_only: r.get("escalation_only"),
        created_ms: r.get("created_ms"),
    })
}

fn alert_from_row(r: &SqliteRow) -> Result<Alert> {
    Ok(Alert {
        id: r.get("id"),
        chain: r.get("chain"),
        org: r.get("org"),
        rule_id: r.get("rule_id"),
        kind: kind(r.get("kind"))?,
        username: r.get("username"),
        title: r.get("title"),
        study_uid: r.get("study_uid"),
        link: r.get("link"),
        details: serde_json::from_str(r.get("details"))
            .map_err(|e| json_err("alert details", e))?,
        created_ms: r.get("created_ms"),
        step: u32::try_from(r.get::<i64, _>("step")).unwrap_or(0),
        escalate_at_ms: r.get("escalate_at_ms"),
        acknowledged_ms: r.get("acknowledged_ms"),
        acknowledged_by: r.get("acknowledged_by"),
    })
}

fn delivery_from_row(r: &SqliteRow) -> Result<Delivery> {
    let state: String = r.get("state");
    Ok(Delivery {
        id: r.get("id"),
        alert_id: r.get("alert_id"),
        channel: channel(r.get("channel"))?,
        target: r.get("target"),
        secret: r.get("secret"),
        attempts: u32::try_from(r.get::<i64, _>("attempts")).unwrap_or(0),
        next_ms: r.get("next_ms"),
        state: DeliveryState::parse(&state)
            .ok_or_else(|| Error::Index(format!("delivery state {state:?}")))?,
        last_error: r.get("last_error"),
        created_ms: r.get("created_ms"),
    })
}

impl SqliteIndex {
    async fn alert_write(&self, w: AlertWrite) -> Result<AlertAnswer> {
        self.send(|tx| WriteOp::Alerts(Box::new(w), tx)).await
    }

    async fn alert_bool(&self, w: AlertWrite) -> Result<bool> {
        match self.alert_write(w).await? {
            AlertAnswer::Bool(b) => Ok(b),
            _ => Err(Error::Index("alert write answered unexpectedly".into())),
        }
    }
}

#[async_trait]
impl AlertStore for SqliteIndex {
    async fn apply_alerts(&self, changes: Vec<AlertChange>, audit: Vec<AuditEvent>) -> Result<()> {
        if changes.is_empty() && audit.is_empty() {
            return Ok(());
        }
        self.alert_write(AlertWrite::Apply(changes, audit))
            .await
            .map(|_| ())
    }

    async fn alert_rules(&self) -> Result<Vec<AlertRule>> {
        read(
            &self.read,
            &format!("{RULE} ORDER BY id"),
            &[],
            rule_from_row,
        )
        .await
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        read(&self.read, &format!("{SUB} ORDER BY id"), &[], sub_from_row).await
    }

    async fn raise(
        &self,
        key: &str,
        alerts: Vec<Alert>,
        deliveries: Vec<Delivery>,
    ) -> Result<bool> {
        self.alert_bool(AlertWrite::Raise(key.to_owned(), alerts, deliveries))
            .await
    }

    async fn alerts_page(
        &self,
        username: &str,
        open_only: bool,
        after: Option<&AlertCursor>,
        limit: usize,
    ) -> Result<Vec<Alert>> {
        let open = if open_only {
            "AND acknowledged_ms IS NULL"
        } else {
            ""
        };
        let limit = i64::try_from(limit).unwrap_or(-1);
        // The cursor's values are ours (an i64, an id checked by the API), bound all the same.
        let (keyset, created, id) = match after {
            Some(c) => (
                "AND (created_ms < CAST(? AS INTEGER) OR (created_ms = CAST(? AS INTEGER) AND id > ?))",
                c.created_ms.to_string(),
                c.id.clone(),
            ),
            None => ("", String::new(), String::new()),
        };
        let sql = format!(
            "{ALERT} WHERE username = ? {open} {keyset} ORDER BY created_ms DESC, id LIMIT {limit}"
        );
        let args: Vec<&str> = if after.is_some() {
            vec![username, &created, &created, &id]
        } else {
            vec![username]
        };
        read(&self.read, &sql, &args, alert_from_row).await
    }

    async fn alert(&self, id: &str) -> Result<Option<Alert>> {
        read_one(
            &self.read,
            &format!("{ALERT} WHERE id = ?"),
            &[id],
            alert_from_row,
        )
        .await
    }

    async fn chain(&self, chain: &str) -> Result<Vec<Alert>> {
        read(
            &self.read,
            &format!("{ALERT} WHERE chain = ? ORDER BY created_ms, id"),
            &[chain],
            alert_from_row,
        )
        .await
    }

    async fn acknowledge(
        &self,
        chain: &str,
        by: &str,
        now_ms: i64,
        audit: Vec<AuditEvent>,
    ) -> Result<bool> {
        self.alert_bool(AlertWrite::Acknowledge {
            chain: chain.to_owned(),
            by: by.to_owned(),
            now_ms,
            audit,
        })
        .await
    }

    async fn due_escalations(&self, now_ms: i64, limit: usize) -> Result<Vec<Alert>> {
        let limit = i64::try_from(limit).unwrap_or(-1);
        let sql = format!(
            "{ALERT} WHERE escalate_at_ms IS NOT NULL AND escalate_at_ms <= {now_ms} \
             AND acknowledged_ms IS NULL ORDER BY escalate_at_ms, id LIMIT {limit}"
        );
        read(&self.read, &sql, &[], alert_from_row).await
    }

    async fn escalate(
        &self,
        from: &str,
        next: Vec<Alert>,
        deliveries: Vec<Delivery>,
    ) -> Result<bool> {
        self.alert_bool(AlertWrite::Escalate(from.to_owned(), next, deliveries))
            .await
    }

    async fn next_delivery_ms(&self) -> Result<Option<i64>> {
        let row =
            sqlx::query("SELECT min(next_ms) AS m FROM alert_deliveries WHERE state = 'pending'")
                .fetch_one(&self.read)
                .await
                .map_err(db_err)?;
        Ok(row.get("m"))
    }

    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        match self
            .alert_write(AlertWrite::Claim {
                now_ms,
                lease_ms,
                limit,
            })
            .await?
        {
            AlertAnswer::Deliveries(d) => Ok(d),
            _ => Err(Error::Index("alert claim answered unexpectedly".into())),
        }
    }

    async fn finish_delivery(
        &self,
        id: &str,
        state: DeliveryState,
        next_ms: i64,
        error: &str,
    ) -> Result<()> {
        self.alert_write(AlertWrite::Finish {
            id: id.to_owned(),
            state,
            next_ms,
            error: error.to_owned(),
        })
        .await
        .map(|_| ())
    }

    async fn deliveries(&self, alert_id: &str) -> Result<Vec<Delivery>> {
        read(
            &self.read,
            &format!("{DELIVERY} WHERE alert_id = ? ORDER BY created_ms, id"),
            &[alert_id],
            delivery_from_row,
        )
        .await
    }
}
