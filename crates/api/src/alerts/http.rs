//! The alerts API (docs/alerts.md):
//!
//! - `GET /api/v1/alerts[?all=true][&limit=][&before=]`: the caller's alerts, newest first
//!   (open ones only unless `all`), a page at a time: `{"alerts", "more", "next_before"}`, the
//!   cursor `next_before` given as `before` answering the next page (keyset paging, as the
//!   audit search's `before`).
//! - `POST /api/v1/alerts/{id}/acknowledge`: acknowledges the alert's chain (its recipient, or
//!   an administrator of its organisation); audited (`alert-acknowledge`).
//! - `GET /api/v1/alerts/{id}/deliveries`: its webhook and e-mail deliveries (no secrets).
//! - `GET|POST /api/v1/alerts/rules`, `GET|PUT|DELETE /api/v1/alerts/rules/{id}`: the
//!   organisation's rules; users list the rules they may subscribe to, administrators
//!   (manage-org) create, change and delete them (audited `admin-change`).
//! - `GET|POST /api/v1/alerts/subscriptions`, `DELETE /api/v1/alerts/subscriptions/{id}`: the
//!   caller's own subscriptions. A webhook subscription's secret is answered once, at creation.
//!
//! Who: users who may query in an organisation; the administrator kinds (parked transfers, peer
//! down, disk low, certificate) only for administrators.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use vesalius_auth::{Action, Caller};
use vesalius_core::ErrorKind;
use vesalius_store::alerts::{
    AlertChange, AlertCursor, AlertKind, AlertRule, Channel, Subscription,
};
use vesalius_store::audit::Outcome;

use super::{Alerts, alert_json, new_id, smtp};
use crate::{ApiError, allowed_in_own_org, caller_of};

type St = State<Arc<Alerts>>;
type Res<T> = Result<T, ApiError>;

/// The routes (mount at the root).
pub fn router(alerts: Arc<Alerts>) -> Router {
    Router::new()
        .route("/api/v1/alerts", get(list))
        .route("/api/v1/alerts/{id}/acknowledge", post(acknowledge))
        .route("/api/v1/alerts/{id}/deliveries", get(deliveries))
        .route("/api/v1/alerts/rules", get(list_rules).post(create_rule))
        .route(
            "/api/v1/alerts/rules/{id}",
            put(update_rule).get(get_rule).delete(delete_rule),
        )
        .route(
            "/api/v1/alerts/subscriptions",
            get(list_subs).post(create_sub),
        )
        .route(
            "/api/v1/alerts/subscriptions/{id}",
            axum::routing::delete(delete_sub),
        )
        .with_state(alerts)
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, msg)
}

/// The caller, if it may query in an organisation (a user, or a token acting for one).
fn user(caller: Option<Extension<Caller>>) -> Res<Caller> {
    let c = caller_of(caller)?;
    if c.principal.is_system() || c.org().is_empty() || !allowed_in_own_org(&c, Action::Query) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "alerts are for users who may query in an organisation",
        ));
    }
    Ok(c)
}

fn is_admin(c: &Caller) -> bool {
    allowed_in_own_org(c, Action::ManageOrg)
}

fn admin(caller: Option<Extension<Caller>>) -> Res<Caller> {
    let c = user(caller)?;
    if !is_admin(&c) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "alert rules are changed by administrators",
        ));
    }
    Ok(c)
}

/// Alerts per page unless `limit` says otherwise, and the most one page holds.
const PAGE_DEFAULT: usize = 200;
const PAGE_MAX: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    all: bool,
    limit: Option<String>,
    before: Option<String>,
}

/// `before`: `{created_ms}.{id}` of the last alert of the previous page.
fn parse_cursor(s: &str) -> Option<AlertCursor> {
    let (ms, id) = s.split_once('.')?;
    let ok_id = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    Some(AlertCursor {
        created_ms: ms.parse().ok()?,
        id: ok_id.then(|| id.to_owned())?,
    })
}

async fn list(
    st: St,
    caller: Option<Extension<Caller>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Res<Json<Value>> {
    let c = user(caller)?;
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let limit = match q.limit.as_deref() {
        None => PAGE_DEFAULT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=PAGE_MAX).contains(n))
            .ok_or_else(|| bad(format!("limit must be a number from 1 to {PAGE_MAX}")))?,
    };
    let after = match q.before.as_deref() {
        None => None,
        Some(b) => Some(parse_cursor(b).ok_or_else(|| {
            bad("before must be the next_before of a previous page ({created_ms}.{id})")
        })?),
    };
    // One more than the page, to know whether another follows.
    let mut v = st
        .store
        .alerts_page(&c.principal.actor.name, !q.all, after.as_ref(), limit + 1)
        .await?;
    let more = v.len() > limit;
    v.truncate(limit);
    let next = more
        .then(|| v.last().map(AlertCursor::after))
        .flatten()
        .map(|c| format!("{}.{}", c.created_ms, c.id));
    let alerts: Vec<Value> = v
        .iter()
        .filter(|a| a.org == c.org())
        .map(alert_json)
        .collect();
    Ok(Json(
        json!({"alerts": alerts, "more": more, "next_before": next}),
    ))
}

/// The alert `id` if the caller may see it (its recipient, or an administrator of its org).
async fn visible(st: &Alerts, c: &Caller, id: &str) -> Res<vesalius_store::alerts::Alert> {
    match st.store.alert(id).await? {
        Some(a) if a.org == c.org() && (a.username == c.principal.actor.name || is_admin(c)) => {
            Ok(a)
        }
        _ => Err(ApiError::new(
            ErrorKind::NotFound,
            format!("alert {id} not found"),
        )),
    }
}

async fn acknowledge(
    st: St,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Res<Json<Value>> {
    let c = user(caller)?;
    let a = visible(&st, &c, &id).await?;
    let ev = c.event(
        "alert-acknowledge",
        Outcome::Success,
        &a.org,
        a.study_uid.as_deref(),
        json!({"alert": a.id, "chain": a.chain, "rule": a.rule_id, "kind": a.kind}),
    );
    let by = c.principal.actor.name.clone();
    let changed = st.acknowledge(&a.chain, &by, vec![ev]).await?;
    let now = st.store.alert(&id).await?.unwrap_or(a);
    Ok(Json(
        json!({"acknowledged": changed, "alert": alert_json(&now)}),
    ))
}

async fn deliveries(
    st: St,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Res<Json<Value>> {
    let c = user(caller)?;
    let a = visible(&st, &c, &id).await?;
    let v = st.store.deliveries(&a.id).await?;
    Ok(Json(Value::Array(
        v.iter()
            .map(|d| {
                json!({"id": d.id, "channel": d.channel, "target": d.target,
                       "state": d.state, "attempts": d.attempts, "next_ms": d.next_ms,
                       "last_error": d.last_error})
            })
            .collect(),
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    name: Option<String>,
    kind: String,
    threshold: Option<i64>,
    #[serde(default)]
    escalation: Vec<String>,
    /// ms; `escalate_after_s` is the same in seconds.
    escalate_after_ms: Option<i64>,
    escalate_after_s: Option<i64>,
    enabled: Option<bool>,
}

fn default_threshold(kind: AlertKind) -> i64 {
    match kind {
        AlertKind::StrokeArrival => 50,
        AlertKind::PeerDown => 5,
        AlertKind::DiskLow => 10_000_000_000,
        AlertKind::CertificateExpiry => 14,
        AlertKind::StudyComplete | AlertKind::TransferParked => 0,
    }
}

async fn rule_of(st: &Alerts, c: &Caller, id: String, body: RuleBody) -> Res<AlertRule> {
    let kind = AlertKind::parse(&body.kind).ok_or_else(|| {
        bad(format!(
            "unknown alert kind {:?} (stroke-arrival, study-complete, transfer-parked, \
             peer-down, disk-low, certificate-expiry)",
            body.kind
        ))
    })?;
    let escalate_after_ms = body
        .escalate_after_ms
        .or(body.escalate_after_s.map(|s| s.saturating_mul(1000)))
        .unwrap_or(0);
    if escalate_after_ms < 0 || body.threshold.is_some_and(|t| t < 0) {
        return Err(bad("thresholds and times are not negative"));
    }
    if body.escalation.len() > 20 {
        return Err(bad("at most 20 people in an escalation list"));
    }
    for u in &body.escalation {
        let member = st
            .directory
            .user_by_name(u)
            .await?
            .is_some_and(|x| !x.disabled && x.memberships.iter().any(|m| m.org == c.org()));
        if !member {
            return Err(bad(format!(
                "escalation: {u:?} is not a user of this organisation"
            )));
        }
    }
    let name = body.name.unwrap_or_else(|| kind.as_str().to_owned());
    if name.len() > 200 {
        return Err(bad("the name is longer than 200 bytes"));
    }
    Ok(AlertRule {
        id,
        org: c.org().to_owned(),
        name,
        kind,
        threshold: body.threshold.unwrap_or(default_threshold(kind)),
        escalation: body.escalation,
        escalate_after_ms,
        enabled: body.enabled.unwrap_or(true),
        created_ms: (st.clock)(),
    })
}

fn rule_json(r: &AlertRule) -> Value {
    json!({"id": r.id, "name": r.name, "kind": r.kind, "threshold": r.threshold,
           "escalation": r.escalation, "escalate_after_ms": r.escalate_after_ms,
           "enabled": r.enabled, "created_ms": r.created_ms})
}

async fn list_rules(st: St, caller: Option<Extension<Caller>>) -> Res<Json<Value>> {
    let c = user(caller)?;
    let admin = is_admin(&c);
    let v = st.store.alert_rules().await?;
    Ok(Json(Value::Array(
        v.iter()
            .filter(|r| r.org == c.org() && (admin || !r.kind.admin_only()))
            .map(rule_json)
            .collect(),
    )))
}

async fn visible_rule(st: &Alerts, c: &Caller, id: &str) -> Res<AlertRule> {
    st.store
        .alert_rules()
        .await?
        .into_iter()
        .find(|r| r.id == id && r.org == c.org() && (is_admin(c) || !r.kind.admin_only()))
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("alert rule {id} not found")))
}

async fn get_rule(
    st: St,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Res<Json<Value>> {
    let c = user(caller)?;
    Ok(Json(rule_json(&visible_rule(&st, &c, &id).await?)))
}

fn change_event(c: &Caller, change: &str, r: &AlertRule) -> vesalius_store::audit::AuditEvent {
    c.event(
        "admin-change",
        Outcome::Success,
        c.org(),
        None,
        json!({"change": change, "rule": r.id, "kind": r.kind, "name": r.name,
               "escalation": r.escalation}),
    )
}

async fn create_rule(
    st: St,
    caller: Option<Extension<Caller>>,
    body: Result<Json<RuleBody>, axum::extract::rejection::JsonRejection>,
) -> Res<(StatusCode, Json<Value>)> {
    let c = admin(caller)?;
    let Json(body) = body.map_err(|e| bad(e.body_text()))?;
    let r = rule_of(&st, &c, new_id(), body).await?;
    st.store
        .apply_alerts(
            vec![AlertChange::PutRule(r.clone())],
            vec![change_event(&c, "alert-rule-add", &r)],
        )
        .await?;
    Ok((StatusCode::CREATED, Json(rule_json(&r))))
}

async fn update_rule(
    st: St,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
    body: Result<Json<RuleBody>, axum::extract::rejection::JsonRejection>,
) -> Res<Json<Value>> {
    let c = admin(caller)?;
    let old = visible_rule(&st, &c, &id).await?;
    let Json(body) = body.map_err(|e| bad(e.body_text()))?;
    let mut r = rule_of(&st, &c, id, body).await?;
    r.created_ms = old.created_ms;
    st.store
        .apply_alerts(
            vec![AlertChange::PutRule(r.clone())],
            vec![change_event(&c, "alert-rule-change", &r)],
        )
        .await?;
    Ok(Json(rule_json(&r)))
}

async fn delete_rule(
    st: St,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Res<StatusCode> {
    let c = admin(caller)?;
    let r = visible_rule(&st, &c, &id).await?;
    st.store
        .apply_alerts(
            vec![AlertChange::DeleteRule(id)],
            vec![change_event(&c, "alert-rule-remove", &r)],
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubBody {
    rule_id: String,
    channel: String,
    #[serde(default)]
    target: String,
    secret: Option<String>,
    #[serde(default)]
    escalation_only: bool,
}

fn sub_json(s: &Subscription) -> Value {
    json!({"id": s.id, "rule_id": s.rule_id, "channel": s.channel, "target": s.target,
           "escalation_only": s.escalation_only, "created_ms": s.created_ms})
}

async fn list_subs(st: St, caller: Option<Extension<Caller>>) -> Res<Json<Value>> {
    let c = user(caller)?;
    let v = st.store.subscriptions().await?;
    Ok(Json(Value::Array(
        v.iter()
            .filter(|s| s.username == c.principal.actor.name && s.org == c.org())
            .map(sub_json)
            .collect(),
    )))
}

async fn create_sub(
    st: St,
    caller: Option<Extension<Caller>>,
    body: Result<Json<SubBody>, axum::extract::rejection::JsonRejection>,
) -> Res<(StatusCode, Json<Value>)> {
    let c = user(caller)?;
    let Json(b) = body.map_err(|e| bad(e.body_text()))?;
    let rule = visible_rule(&st, &c, &b.rule_id).await?;
    let channel = Channel::parse(&b.channel).ok_or_else(|| {
        bad(format!(
            "unknown channel {:?} (in-app, webhook, email)",
            b.channel
        ))
    })?;
    let mut secret = String::new();
    match channel {
        Channel::InApp => {}
        Channel::Webhook => {
            super::target::check_url(&b.target, st.opts.webhook_allow_private).map_err(bad)?;
            secret = match b.secret {
                Some(s) if s.len() >= 16 && s.len() <= 256 => s,
                Some(_) => return Err(bad("a webhook secret has 16 to 256 bytes")),
                None => {
                    use rand::RngCore;
                    let mut k = [0u8; 32];
                    rand::thread_rng().fill_bytes(&mut k);
                    hex::encode(k)
                }
            };
        }
        Channel::Email => {
            if !b.target.is_empty() && !smtp::valid_address(&b.target) {
                return Err(bad(format!("{:?} is not an e-mail address", b.target)));
            }
        }
    }
    let s = Subscription {
        id: new_id(),
        rule_id: rule.id,
        org: c.org().to_owned(),
        username: c.principal.actor.name.clone(),
        channel,
        target: if channel == Channel::InApp {
            String::new()
        } else {
            b.target
        },
        secret: secret.clone(),
        escalation_only: b.escalation_only,
        created_ms: (st.clock)(),
    };
    let ev = c.event(
        "admin-change",
        Outcome::Success,
        c.org(),
        None,
        json!({"change": "alert-subscribe", "rule": s.rule_id, "channel": s.channel}),
    );
    st.store
        .apply_alerts(vec![AlertChange::PutSubscription(s.clone())], vec![ev])
        .await?;
    let mut v = sub_json(&s);
    if channel == Channel::Webhook {
        v["secret"] = json!(secret);
    }
    Ok((StatusCode::CREATED, Json(v)))
}

async fn delete_sub(
    st: St,
    caller: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> Res<StatusCode> {
    let c = user(caller)?;
    let found = st
        .store
        .subscriptions()
        .await?
        .into_iter()
        .any(|s| s.id == id && s.username == c.principal.actor.name && s.org == c.org());
    if !found {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            format!("subscription {id} not found"),
        ));
    }
    let ev = c.event(
        "admin-change",
        Outcome::Success,
        c.org(),
        None,
        json!({"change": "alert-unsubscribe", "subscription": id}),
    );
    st.store
        .apply_alerts(vec![AlertChange::DeleteSubscription(id)], vec![ev])
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
