//! [`AlertStore`]: alert rules, users' subscriptions to them, the alerts raised, and the durable
//! queue of their webhook and e-mail deliveries (issue 6, docs/alerts.md). Data only: matching
//! rules, escalating, signing and sending live in `vesalius-api`'s `alerts` module.
//!
//! Contract:
//! - A rule belongs to one organisation; a subscription to one user (by username, unique on the
//!   site) and one rule; deleting a rule deletes its subscriptions.
//! - [`AlertStore::raise`] is idempotent per key: the first call with a key stores its alerts and
//!   deliveries, later calls with the same key store nothing and answer `false` (so two nodes, or
//!   a repeated signal, raise one alert).
//! - Alerts raised together form a **chain** (`Alert::chain`, the id of its first alert);
//!   escalations join the chain. Acknowledging acknowledges the whole chain and stops its
//!   escalation; it is recorded with its audit events in one transaction.
//! - Only one alert of a chain carries `escalate_at_ms` at a time. [`AlertStore::escalate`] is
//!   conditional: it clears that alert's `escalate_at_ms` and stores the next alerts only while
//!   the chain is unacknowledged and the alert still due, so an escalation happens at most once
//!   (also with several nodes) and never after an acknowledgement.
//! - Deliveries are a durable queue: a delivery stays `pending` until sent or given up
//!   (`failed`). [`AlertStore::claim_deliveries`] leases due ones by moving their `next_ms` past
//!   the lease, so a crashed sender's deliveries are taken again when the lease runs out
//!   (at-least-once: a receiver may see a delivery twice and can tell by its alert id).
//! - Lists come in a fixed order: rules and subscriptions by id, alerts newest first (then id).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::memory_directory::MemoryAuditLog;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    /// A peer's delivery with priority at least `threshold` (default 50) completed in the rule's
    /// organisation.
    StrokeArrival,
    /// Any peer's delivery completed in the rule's organisation.
    StudyComplete,
    /// An outbox job of the rule's organisation was parked (administrators).
    TransferParked,
    /// A peer did not answer pings for `threshold` minutes (administrators).
    PeerDown,
    /// Free space on the data directory's filesystem under `threshold` bytes (administrators).
    DiskLow,
    /// The HTTPS certificate expires within `threshold` days (administrators).
    CertificateExpiry,
}

impl AlertKind {
    /// Every kind.
    pub const ALL: [AlertKind; 6] = [
        AlertKind::StrokeArrival,
        AlertKind::StudyComplete,
        AlertKind::TransferParked,
        AlertKind::PeerDown,
        AlertKind::DiskLow,
        AlertKind::CertificateExpiry,
    ];

    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::StrokeArrival => "stroke-arrival",
            AlertKind::StudyComplete => "study-complete",
            AlertKind::TransferParked => "transfer-parked",
            AlertKind::PeerDown => "peer-down",
            AlertKind::DiskLow => "disk-low",
            AlertKind::CertificateExpiry => "certificate-expiry",
        }
    }

    /// Parses [`AlertKind::as_str`]'s names.
    pub fn parse(s: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Kinds about the site's operation, for administrators only.
    pub fn admin_only(self) -> bool {
        !matches!(self, AlertKind::StrokeArrival | AlertKind::StudyComplete)
    }
}

/// An alert rule: what to watch in an organisation, and who to escalate to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRule {
    /// Unique id.
    pub id: String,
    /// The organisation it belongs to (its events, its users).
    pub org: String,
    /// A label.
    pub name: String,
    /// What it watches.
    pub kind: AlertKind,
    /// The kind's threshold: minimum priority (stroke-arrival), minutes (peer-down), bytes
    /// (disk-low), days (certificate-expiry); unused otherwise.
    pub threshold: i64,
    /// Usernames the alert goes to, in turn, while nobody acknowledged it.
    pub escalation: Vec<String>,
    /// How long an alert may stay unacknowledged before it goes to the next person (ms; 0: no
    /// escalation).
    pub escalate_after_ms: i64,
    /// Disabled rules raise nothing.
    pub enabled: bool,
    /// Creation time, ms.
    pub created_ms: i64,
}

/// How a subscriber is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Channel {
    /// In the web app while it is open (the event stream).
    InApp,
    /// A signed JSON POST to a URL.
    Webhook,
    /// An e-mail.
    Email,
}

impl Channel {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::InApp => "in-app",
            Channel::Webhook => "webhook",
            Channel::Email => "email",
        }
    }

    /// Parses [`Channel::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Channel> {
        [Channel::InApp, Channel::Webhook, Channel::Email]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// A user's subscription to a rule on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Unique id.
    pub id: String,
    /// The rule.
    pub rule_id: String,
    /// The rule's organisation.
    pub org: String,
    /// The subscriber.
    pub username: String,
    /// The channel.
    pub channel: Channel,
    /// The webhook URL or e-mail address ("" for in-app; for e-mail: the user's address).
    pub target: String,
    /// The webhook's HMAC-SHA256 key ("" for the other channels).
    pub secret: String,
    /// Only when the alert escalates to this user (the rule's escalation list), not when it is
    /// first raised.
    pub escalation_only: bool,
    /// Creation time, ms.
    pub created_ms: i64,
}

/// One alert, addressed to one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique id.
    pub id: String,
    /// The chain: the id of the first alert raised for the same event.
    pub chain: String,
    /// The organisation.
    pub org: String,
    /// The rule that raised it.
    pub rule_id: String,
    /// Its kind.
    pub kind: AlertKind,
    /// The recipient.
    pub username: String,
    /// One line, without patient data.
    pub title: String,
    /// The study concerned, if any.
    pub study_uid: Option<String>,
    /// Where to look (`/view/{study}`, `/worklist`), relative to the site.
    pub link: Option<String>,
    /// Details of the event (peer, priority, queue, free bytes…; no patient data).
    pub details: serde_json::Value,
    /// Raised at, ms.
    pub created_ms: i64,
    /// 0 when first raised; n after n escalations.
    pub step: u32,
    /// When it escalates if still unacknowledged (at most one alert of a chain has it).
    pub escalate_at_ms: Option<i64>,
    /// When the chain was acknowledged.
    pub acknowledged_ms: Option<i64>,
    /// Who acknowledged it ("" while open).
    pub acknowledged_by: String,
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryState {
    /// Waiting to be sent (again) at `next_ms`.
    Pending,
    /// Accepted by the receiver.
    Sent,
    /// Given up after too many attempts.
    Failed,
}

impl DeliveryState {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sent => "sent",
            DeliveryState::Failed => "failed",
        }
    }

    /// Parses [`DeliveryState::as_str`]'s names.
    pub fn parse(s: &str) -> Option<DeliveryState> {
        [
            DeliveryState::Pending,
            DeliveryState::Sent,
            DeliveryState::Failed,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// One webhook call or e-mail of an alert, in the durable queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Unique id.
    pub id: String,
    /// The alert.
    pub alert_id: String,
    /// Webhook or e-mail.
    pub channel: Channel,
    /// URL or address.
    pub target: String,
    /// The webhook's key.
    pub secret: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it is due (or its lease ends), ms.
    pub next_ms: i64,
    /// Where it is.
    pub state: DeliveryState,
    /// The last failure.
    pub last_error: String,
    /// Queued at, ms.
    pub created_ms: i64,
}

/// One change to rules or subscriptions.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertChange {
    /// Creates or replaces a rule (by id).
    PutRule(AlertRule),
    /// Deletes a rule and its subscriptions.
    DeleteRule(String),
    /// Creates or replaces a subscription (by id).
    PutSubscription(Subscription),
    /// Deletes a subscription.
    DeleteSubscription(String),
}

/// The alert store.
#[async_trait]
pub trait AlertStore: Send + Sync + 'static {
    /// Applies changes and appends audit events in one durable transaction. Deleting a missing
    /// record fails with `NotFound` and changes nothing.
    async fn apply_alerts(&self, changes: Vec<AlertChange>, audit: Vec<AuditEvent>) -> Result<()>;
    /// Every rule, by id.
    async fn alert_rules(&self) -> Result<Vec<AlertRule>>;
    /// Every subscription, by id.
    async fn subscriptions(&self) -> Result<Vec<Subscription>>;
    /// Stores `alerts` and `deliveries` unless `key` was raised before (then `false`).
    async fn raise(&self, key: &str, alerts: Vec<Alert>, deliveries: Vec<Delivery>)
    -> Result<bool>;
    /// `username`'s alerts, newest first, only unacknowledged ones when `open_only`.
    async fn alerts_of(&self, username: &str, open_only: bool, limit: usize) -> Result<Vec<Alert>> {
        self.alerts_page(username, open_only, None, limit).await
    }
    /// A page of `username`'s alerts in the order of [`sort_alerts`] (newest first, then by
    /// id): the first `limit` after `after` (the last alert of the previous page), or from the
    /// newest when `None`. A keyset cursor: alerts raised meanwhile do not shift the pages.
    async fn alerts_page(
        &self,
        username: &str,
        open_only: bool,
        after: Option<&AlertCursor>,
        limit: usize,
    ) -> Result<Vec<Alert>>;
    /// One alert.
    async fn alert(&self, id: &str) -> Result<Option<Alert>>;
    /// Every alert of a chain, oldest first (then by id).
    async fn chain(&self, chain: &str) -> Result<Vec<Alert>>;
    /// Acknowledges every alert of `chain` (by `by`, at `now_ms`) with `audit`; `false` (and no
    /// events written) when it was acknowledged already.
    async fn acknowledge(
        &self,
        chain: &str,
        by: &str,
        now_ms: i64,
        audit: Vec<AuditEvent>,
    ) -> Result<bool>;
    /// Unacknowledged alerts whose `escalate_at_ms` has come, oldest due first.
    async fn due_escalations(&self, now_ms: i64, limit: usize) -> Result<Vec<Alert>>;
    /// Clears `from`'s `escalate_at_ms` and stores the next alerts and deliveries, if `from` is
    /// still due and its chain unacknowledged; `false` otherwise (nothing stored).
    async fn escalate(
        &self,
        from: &str,
        next: Vec<Alert>,
        deliveries: Vec<Delivery>,
    ) -> Result<bool>;
    /// When the next pending delivery is due (or its lease ends), if any: a read, so an idle
    /// sender looks without writing.
    async fn next_delivery_ms(&self) -> Result<Option<i64>>;
    /// Up to `limit` pending deliveries due at `now_ms`, leased until `now_ms + lease_ms`.
    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>>;
    /// Records an attempt: the delivery's new state, when it is due again (pending), and the
    /// error ("" when sent). `attempts` grows by one.
    async fn finish_delivery(
        &self,
        id: &str,
        state: DeliveryState,
        next_ms: i64,
        error: &str,
    ) -> Result<()>;
    /// The deliveries of an alert, by creation then id.
    async fn deliveries(&self, alert_id: &str) -> Result<Vec<Delivery>>;
}

/// Where a page of alerts ends: the last alert's `created_ms` and `id` (the order of
/// [`sort_alerts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertCursor {
    /// The last alert's raise time, ms.
    pub created_ms: i64,
    /// The last alert's id.
    pub id: String,
}

impl AlertCursor {
    /// The cursor after `a`.
    pub fn after(a: &Alert) -> Self {
        AlertCursor {
            created_ms: a.created_ms,
            id: a.id.clone(),
        }
    }

    /// Whether `a` comes after the cursor in the order of [`sort_alerts`].
    pub fn precedes(&self, a: &Alert) -> bool {
        a.created_ms < self.created_ms || (a.created_ms == self.created_ms && a.id > self.id)
    }
}

/// Sorts alerts newest first, then by id: the order every backend answers in.
pub fn sort_alerts(alerts: &mut [Alert]) {
    alerts.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
}

#[derive(Default, Clone)]
struct AlertState {
    rules: BTreeMap<String, AlertRule>,
    subs: BTreeMap<String, Subscription>,
    keys: BTreeSet<String>,
    alerts: BTreeMap<String, Alert>,
    deliveries: BTreeMap<String, Delivery>,
}

/// The in-memory alert store: the reference model.
pub struct MemoryAlertStore {
    state: Mutex<AlertState>,
    audit: Arc<MemoryAuditLog>,
}

impl MemoryAlertStore {
    /// An empty store appending its audit events to `audit`.
    pub fn new(audit: Arc<MemoryAuditLog>) -> Self {
        MemoryAlertStore {
            state: Mutex::default(),
            audit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AlertState> {
        self.state.lock().expect("lock")
    }
}

#[async_trait]
impl AlertStore for MemoryAlertStore {
    async fn apply_alerts(&self, changes: Vec<AlertChange>, audit: Vec<AuditEvent>) -> Result<()> {
        let mut st = self.lock();
        let mut next = st.clone();
        for c in changes {
            match c {
                AlertChange::PutRule(r) => {
                    next.rules.insert(r.id.clone(), r);
                }
                AlertChange::DeleteRule(id) => {
                    next.rules
                        .remove(&id)
                        .ok_or_else(|| Error::NotFound(format!("alert rule {id}")))?;
                    next.subs.retain(|_, s| s.rule_id != id);
                }
                AlertChange::PutSubscription(s) => {
                    next.subs.insert(s.id.clone(), s);
                }
                AlertChange::DeleteSubscription(id) => {
                    next.subs
                        .remove(&id)
                        .ok_or_else(|| Error::NotFound(format!("subscription {id}")))?;
                }
            }
        }
        *st = next;
        self.audit.append_now(audit);
        Ok(())
    }

    async fn alert_rules(&self) -> Result<Vec<AlertRule>> {
        Ok(self.lock().rules.values().cloned().collect())
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        Ok(self.lock().subs.values().cloned().collect())
    }

    async fn raise(
        &self,
        key: &str,
        alerts: Vec<Alert>,
        deliveries: Vec<Delivery>,
    ) -> Result<bool> {
        let mut st = self.lock();
        if !st.keys.insert(key.to_owned()) {
            return Ok(false);
        }
        for a in alerts {
            st.alerts.insert(a.id.clone(), a);
        }
        for d in deliveries {
            st.deliveries.insert(d.id.clone(), d);
        }
        Ok(true)
    }

    async fn alerts_page(
        &self,
        username: &str,
        open_only: bool,
        after: Option<&AlertCursor>,
        limit: usize,
    ) -> Result<Vec<Alert>> {
        let mut v: Vec<Alert> = self
            .lock()
            .alerts
            .values()
            .filter(|a| a.username == username && (!open_only || a.acknowledged_ms.is_none()))
            .filter(|a| after.is_none_or(|c| c.precedes(a)))
            .cloned()
            .collect();
        sort_alerts(&mut v);
        v.truncate(limit);
        Ok(v)
    }

    async fn alert(&self, id: &str) -> Result<Option<Alert>> {
        Ok(self.lock().alerts.get(id).cloned())
    }

    async fn chain(&self, chain: &str) -> Result<Vec<Alert>> {
        let mut v: Vec<Alert> = self
            .lock()
            .alerts
            .values()
            .filter(|a| a.chain == chain)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    async fn acknowledge(
        &self,
        chain: &str,
        by: &str,
        now_ms: i64,
        audit: Vec<AuditEvent>,
    ) -> Result<bool> {
        let mut st = self.lock();
        let mut changed = false;
        for a in st.alerts.values_mut().filter(|a| a.chain == chain) {
            if a.acknowledged_ms.is_none() {
                a.acknowledged_ms = Some(now_ms);
                a.acknowledged_by = by.to_owned();
                a.escalate_at_ms = None;
                changed = true;
            }
        }
        if changed {
            self.audit.append_now(audit);
        }
        Ok(changed)
    }

    async fn due_escalations(&self, now_ms: i64, limit: usize) -> Result<Vec<Alert>> {
        let mut v: Vec<Alert> = self
            .lock()
            .alerts
            .values()
            .filter(|a| {
                a.acknowledged_ms.is_none() && a.escalate_at_ms.is_some_and(|t| t <= now_ms)
            })
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            a.escalate_at_ms
                .cmp(&b.escalate_at_ms)
                .then(a.id.cmp(&b.id))
        });
        v.truncate(limit);
        Ok(v)
    }

    async fn escalate(
        &self,
        from: &str,
        next: Vec<Alert>,
        deliveries: Vec<Delivery>,
    ) -> Result<bool> {
        let mut st = self.lock();
        match st.alerts.get_mut(from) {
            Some(a) if a.acknowledged_ms.is_none() && a.escalate_at_ms.is_some() => {
                a.escalate_at_ms = None;
            }
            _ => return Ok(false),
        }
        for a in next {
            st.alerts.insert(a.id.clone(), a);
        }
        for d in deliveries {
            st.deliveries.insert(d.id.clone(), d);
        }
        Ok(true)
    }

    async fn next_delivery_ms(&self) -> Result<Option<i64>> {
        Ok(self
            .lock()
            .deliveries
            .values()
            .filter(|d| d.state == DeliveryState::Pending)
            .map(|d| d.next_ms)
            .min())
    }

    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let mut st = self.lock();
        let mut due: Vec<&mut Delivery> = st
            .deliveries
            .values_mut()
            .filter(|d| d.state == DeliveryState::Pending && d.next_ms <= now_ms)
            .collect();
        due.sort_by(|a, b| a.next_ms.cmp(&b.next_ms).then(a.id.cmp(&b.id)));
        Ok(due
            .into_iter()
            .take(limit)
            .map(|d| {
                d.next_ms = now_ms + lease_ms;
                d.clone()
            })
            .collect())
    }

    async fn finish_delivery(
        &self,
        id: &str,
        state: DeliveryState,
        next_ms: i64,
        error: &str,
    ) -> Result<()> {
        let mut st = self.lock();
        let d = st
            .deliveries
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(format!("delivery {id}")))?;
        d.attempts += 1;
        d.state = state;
        d.next_ms = next_ms;
        d.last_error = error.to_owned();
        Ok(())
    }

    async fn deliveries(&self, alert_id: &str) -> Result<Vec<Delivery>> {
        let mut v: Vec<Delivery> = self
            .lock()
            .deliveries
            .values()
            .filter(|d| d.alert_id == alert_id)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then(a.id.cmp(&b.id)));
        Ok(v)
    }
}

/// Contract tests any [`AlertStore`] must pass (run against the model here and against SQLite
/// in `vesalius-store-sqlite`).
pub mod contract {
    use super::*;

    /// A rule for tests.
    pub fn rule(id: &str, kind: AlertKind) -> AlertRule {
        AlertRule {
            id: id.into(),
            org: "org1".into(),
            name: format!("rule {id}"),
            kind,
            threshold: 50,
            escalation: vec!["bob".into()],
            escalate_after_ms: 1000,
            enabled: true,
            created_ms: 1,
        }
    }

    /// An alert for tests.
    pub fn alert(id: &str, chain: &str, user: &str, at: i64, escalate_at: Option<i64>) -> Alert {
        Alert {
            id: id.into(),
            chain: chain.into(),
            org: "org1".into(),
            rule_id: "r1".into(),
            kind: AlertKind::StrokeArrival,
            username: user.into(),
            title: "Stroke-priority study arrived".into(),
            study_uid: Some("1.2.3".into()),
            link: Some("/view/1.2.3".into()),
            details: serde_json::json!({"priority": 100}),
            created_ms: at,
            step: 0,
            escalate_at_ms: escalate_at,
            acknowledged_ms: None,
            acknowledged_by: String::new(),
        }
    }

    /// A delivery for tests.
    pub fn delivery(id: &str, alert_id: &str, next_ms: i64) -> Delivery {
        Delivery {
            id: id.into(),
            alert_id: alert_id.into(),
            channel: Channel::Webhook,
            target: "http://127.0.0.1:9/hook".into(),
            secret: "s3cret".into(),
            attempts: 0,
            next_ms,
            state: DeliveryState::Pending,
            last_error: String::new(),
            created_ms: next_ms,
        }
    }

    /// Runs the contract against `s`.
    pub async fn run(s: &dyn AlertStore) {
        // Rules and subscriptions; deleting a rule deletes its subscriptions.
        let r1 = rule("r1", AlertKind::StrokeArrival);
        let r2 = rule("r2", AlertKind::DiskLow);
        let sub = Subscription {
            id: "s1".into(),
            rule_id: "r1".into(),
            org: "org1".into(),
            username: "alice".into(),
            channel: Channel::Email,
            target: "alice@example.org".into(),
            secret: String::new(),
            escalation_only: false,
            created_ms: 2,
        };
        s.apply_alerts(
            vec![
                AlertChange::PutRule(r2.clone()),
                AlertChange::PutRule(r1.clone()),
                AlertChange::PutSubscription(sub.clone()),
            ],
            vec![],
        )
        .await
        .unwrap();
        assert_eq!(s.alert_rules().await.unwrap(), vec![r1.clone(), r2.clone()]);
        assert_eq!(s.subscriptions().await.unwrap(), vec![sub.clone()]);
        let missing = s
            .apply_alerts(
                vec![
                    AlertChange::DeleteRule("r2".into()),
                    AlertChange::DeleteSubscription("nope".into()),
                ],
                vec![],
            )
            .await;
        assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
        assert_eq!(s.alert_rules().await.unwrap().len(), 2, "all or nothing");
        s.apply_alerts(vec![AlertChange::DeleteRule("r1".into())], vec![])
            .await
            .unwrap();
        assert!(s.subscriptions().await.unwrap().is_empty());

        // Raising is idempotent per key.
        let a1 = alert("a1", "a1", "alice", 10, Some(100));
        let a2 = alert("a2", "a1", "carol", 10, None);
        assert!(
            s.raise(
                "k1",
                vec![a1.clone(), a2.clone()],
                vec![delivery("d1", "a1", 10)]
            )
            .await
            .unwrap()
        );
        assert!(
            !s.raise("k1", vec![alert("a9", "a9", "alice", 11, None)], vec![])
                .await
                .unwrap()
        );
        assert_eq!(s.alert("a9").await.unwrap(), None);
        assert_eq!(
            s.alerts_of("alice", true, 10).await.unwrap(),
            vec![a1.clone()]
        );

        // Escalation: due at 100, conditional, once.
        assert!(s.due_escalations(99, 10).await.unwrap().is_empty());
        assert_eq!(s.due_escalations(100, 10).await.unwrap(), vec![a1.clone()]);
        let mut b = alert("a3", "a1", "bob", 100, None);
        b.step = 1;
        assert!(s.escalate("a1", vec![b.clone()], vec![]).await.unwrap());
        assert!(!s.escalate("a1", vec![b.clone()], vec![]).await.unwrap());
        assert!(s.due_escalations(1000, 10).await.unwrap().is_empty());
        assert_eq!(s.alerts_of("bob", true, 10).await.unwrap(), vec![b.clone()]);
        let ids: Vec<String> = s
            .chain("a1")
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, ["a1", "a2", "a3"]);

        // Acknowledging acknowledges the chain, once.
        assert!(s.acknowledge("a1", "bob", 150, vec![]).await.unwrap());
        assert!(!s.acknowledge("a1", "bob", 160, vec![]).await.unwrap());
        assert!(s.alerts_of("alice", true, 10).await.unwrap().is_empty());
        let all = s.alerts_of("alice", false, 10).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].acknowledged_ms, Some(150));
        assert_eq!(all[0].acknowledged_by, "bob");
        // An acknowledged chain does not escalate.
        let c = alert("c1", "c1", "alice", 200, Some(210));
        assert!(s.raise("k2", vec![c], vec![]).await.unwrap());
        assert!(s.acknowledge("c1", "alice", 205, vec![]).await.unwrap());
        assert!(s.due_escalations(1000, 10).await.unwrap().is_empty());
        assert!(!s.escalate("c1", vec![], vec![]).await.unwrap());
        // Newest first.
        let mut newest = s.alerts_of("alice", false, 10).await.unwrap();
        assert_eq!(newest.remove(0).id, "c1");
        // Pages by a keyset cursor: seven of dave's, three at one instant (ties by id).
        for (i, t) in [
            (1, 500),
            (2, 500),
            (3, 500),
            (4, 400),
            (5, 300),
            (6, 300),
            (7, 100),
        ] {
            let a = alert(&format!("p{i}"), &format!("p{i}"), "dave", t, None);
            assert!(s.raise(&format!("kp{i}"), vec![a], vec![]).await.unwrap());
        }
        let whole: Vec<String> = s
            .alerts_of("dave", false, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(whole, ["p1", "p2", "p3", "p4", "p5", "p6", "p7"]);
        let (mut paged, mut after) = (Vec::new(), None::<AlertCursor>);
        loop {
            let page = s
                .alerts_page("dave", false, after.as_ref(), 3)
                .await
                .unwrap();
            assert!(page.len() <= 3);
            let Some(last) = page.last() else { break };
            after = Some(AlertCursor::after(last));
            paged.extend(page.into_iter().map(|a| a.id));
        }
        assert_eq!(paged, whole, "every alert once, in order");
        // A newer alert raised meanwhile does not shift a page already begun.
        let cursor = AlertCursor {
            created_ms: 500,
            id: "p2".into(),
        };
        assert!(
            s.raise("kp8", vec![alert("p8", "p8", "dave", 900, None)], vec![])
                .await
                .unwrap()
        );
        let next: Vec<String> = s
            .alerts_page("dave", false, Some(&cursor), 2)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(next, ["p3", "p4"]);

        // Deliveries: leased, retried, finished.
        assert_eq!(s.next_delivery_ms().await.unwrap(), Some(10));
        assert!(s.claim_deliveries(9, 50, 10).await.unwrap().is_empty());
        let got = s.claim_deliveries(10, 50, 10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].next_ms, 60);
        assert!(s.claim_deliveries(59, 50, 10).await.unwrap().is_empty());
        s.finish_delivery("d1", DeliveryState::Pending, 70, "connection refused")
            .await
            .unwrap();
        let again = s.claim_deliveries(70, 50, 10).await.unwrap();
        assert_eq!(again[0].attempts, 1);
        assert_eq!(again[0].last_error, "connection refused");
        s.finish_delivery("d1", DeliveryState::Sent, 0, "")
            .await
            .unwrap();
        assert!(s.claim_deliveries(10_000, 50, 10).await.unwrap().is_empty());
        assert_eq!(s.next_delivery_ms().await.unwrap(), None, "none pending");
        let d = s.deliveries("a1").await.unwrap();
        assert_eq!(d[0].state, DeliveryState::Sent);
        assert_eq!(d[0].attempts, 2);
        assert!(matches!(
            s.finish_delivery("nope", DeliveryState::Sent, 0, "").await,
            Err(Error::NotFound(_))
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_model_keeps_the_contract() {
        let s = MemoryAlertStore::new(Arc::new(MemoryAuditLog::default()));
        contract::run(&s).await;
    }

    #[test]
    fn kinds_and_channels_round_trip() {
        for k in AlertKind::ALL {
            assert_eq!(AlertKind::parse(k.as_str()), Some(k));
        }
        assert!(AlertKind::DiskLow.admin_only());
        assert!(!AlertKind::StrokeArrival.admin_only());
        assert_eq!(Channel::parse("webhook"), Some(Channel::Webhook));
        assert_eq!(Channel::parse("sms"), None);
    }
}
