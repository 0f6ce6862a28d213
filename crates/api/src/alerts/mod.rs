//! Alerts (issue 6, docs/alerts.md): rules matched against what happens on the site, alerts
//! raised for the rules' subscribers, delivered in the app (the event stream's `alert` event),
//! by signed webhook and by e-mail, acknowledged, and escalated to the next person in the
//! rule's list when nobody acknowledged them in time.
//!
//! - **Signals** ([`AlertSignal`]) come from where things happen, wired by the binary: the
//!   exchange's study-complete (stroke-priority and study-complete rules) and parked jobs, and a
//!   monitor that pings peers and checks the disk and the certificate. This crate does not watch
//!   anything itself.
//! - **Raising** ([`Alerts::signal`]): every enabled rule the signal matches raises one chain of
//!   alerts (one per subscribed user) with its deliveries, idempotently per `(rule, event key)`
//!   ([`AlertStore::raise`]); conditions (peer down, disk low, certificate) use a key that
//!   repeats at most every [`AlertOptions::repeat`].
//! - **Delivery** ([`Alerts::deliver_due`]): the store's delivery queue is durable; webhooks and
//!   e-mails are retried with capped exponential backoff ([`backoff_ms`]) until sent or
//!   [`AlertOptions::max_attempts`] is reached (then `failed`). In-app alerts go out on the
//!   event stream when raised; the app also lists open alerts at load.
//! - **Escalation** ([`Alerts::escalate_due`]): the first alert of a chain carries
//!   `escalate_at_ms`; when due and unacknowledged, the next user of the rule's escalation list
//!   gets the alert (in the app, and on that user's channels for the rule).
//! - Alerts carry a study UID and a link (`/view/{study}`) where they concern a study, never
//!   patient names or IDs.
//!
//! The clock is injectable ([`Alerts::with_clock`]) so escalation and retry timing are tested
//! without sleeping.

mod http;
pub mod smtp;
pub mod target;
pub mod webhook;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use vesalius_store::alerts::{
    Alert, AlertKind, AlertRule, AlertStore, Channel, Delivery, DeliveryState, Subscription,
};
use vesalius_store::directory::Directory;

use crate::events::{StudyEvent, StudyEvents};

pub use http::router;

/// Something that happened, for the rules to match.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertSignal {
    /// A peer's delivery is complete in `org` (the exchange's study-complete).
    Arrival {
        /// The receiving organisation.
        org: String,
        /// The study.
        study_uid: String,
        /// The sending peer.
        from_peer: String,
        /// The route's priority.
        priority: i32,
        /// Instances delivered.
        instances: u64,
    },
    /// An outbox job of `org` was parked.
    TransferParked {
        /// The sending organisation.
        org: String,
        /// The destination queue (`peer:NAME`, `node:NAME`).
        queue: String,
        /// The study.
        study_uid: String,
        /// The last error.
        error: String,
    },
    /// A peer has not answered pings since `since_ms`.
    PeerDown {
        /// The organisation the peer is linked with.
        org: String,
        /// The peer.
        peer: String,
        /// First failed ping, ms.
        since_ms: i64,
        /// The last error.
        error: String,
    },
    /// Free space on the data directory's filesystem.
    DiskFree {
        /// Free bytes.
        free_bytes: u64,
    },
    /// The HTTPS certificate's end of validity.
    Certificate {
        /// `notAfter`, ms since the epoch.
        not_after_ms: i64,
    },
}

/// How the SMTP connection is protected (`[alerts] smtp_tls`).
#[derive(Debug, Clone, Default)]
pub enum SmtpTls {
    /// Plain text (a relay on the same host or network); no credentials are ever sent.
    #[default]
    None,
    /// `STARTTLS` (RFC 3207) after the first `EHLO`; required, never skipped.
    StartTls(Arc<rustls::ClientConfig>),
    /// TLS from the first byte (RFC 8314 3.3, port 465).
    Implicit(Arc<rustls::ClientConfig>),
}

/// The SMTP client's settings (`[alerts] smtp_*`).
#[derive(Debug, Clone)]
pub struct SmtpOptions {
    /// Server host (also the name its TLS certificate must carry).
    pub host: String,
    /// Server port.
    pub port: u16,
    /// The sender address (`From:` and `MAIL FROM`).
    pub from: String,
    /// `AUTH PLAIN` user name, if any.
    pub username: Option<String>,
    /// `AUTH PLAIN` password.
    pub password: Option<String>,
    /// The name given in `EHLO`.
    pub helo: String,
    /// Deadline of one whole conversation.
    pub timeout: Duration,
    /// TLS, with the roots its certificate is verified against.
    pub tls: SmtpTls,
}

/// Settings of the alert engine.
#[derive(Debug, Clone)]
pub struct AlertOptions {
    /// How often due escalations and deliveries are looked for.
    pub tick: Duration,
    /// How long a claimed delivery is held before another sender may take it.
    pub lease: Duration,
    /// First retry delay; doubles per attempt.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Attempts before a delivery is given up.
    pub max_attempts: u32,
    /// Deadline of one webhook call.
    pub webhook_timeout: Duration,
    /// Whether webhooks may go to loopback, private, link-local and unique-local addresses
    /// (default false: refused at subscription and at send time, see [`target`]).
    pub webhook_allow_private: bool,
    /// A condition still true is alerted again after this long.
    pub repeat: Duration,
    /// The site's external base URL, for the absolute links of webhooks and e-mails.
    pub base_url: String,
    /// E-mail, when configured.
    pub smtp: Option<SmtpOptions>,
}

impl Default for AlertOptions {
    fn default() -> Self {
        AlertOptions {
            tick: Duration::from_secs(1),
            lease: Duration::from_secs(60),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            max_attempts: 10,
            webhook_timeout: Duration::from_secs(10),
            webhook_allow_private: false,
            repeat: Duration::from_secs(24 * 3600),
            base_url: String::new(),
            smtp: None,
        }
    }
}

/// Milliseconds since the epoch, as the engine sees them.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The alert engine.
pub struct Alerts {
    store: Arc<dyn AlertStore>,
    directory: Arc<dyn Directory>,
    events: Arc<StudyEvents>,
    opts: AlertOptions,
    http: reqwest::Client,
    clock: Clock,
    /// [`AlertOptions::base_url`], settable once the listener is bound.
    base_url: std::sync::RwLock<String>,
}

/// An event a rule matched: what the alert says.
#[derive(Debug, Clone, PartialEq)]
pub struct Matched {
    /// The event's key (with the rule's id, the raise's idempotency key).
    pub key: String,
    /// One line, without patient data.
    pub title: String,
    /// The study concerned.
    pub study_uid: Option<String>,
    /// Details (no patient data).
    pub details: Value,
}

/// Whether `rule` matches `s` at `now_ms`, and what the alert says. Conditions repeat every
/// `repeat_ms` (their key changes).
pub fn matches(rule: &AlertRule, s: &AlertSignal, now_ms: i64, repeat_ms: i64) -> Option<Matched> {
    if !rule.enabled {
        return None;
    }
    let period = now_ms / repeat_ms.max(1);
    match (rule.kind, s) {
        (
            AlertKind::StrokeArrival | AlertKind::StudyComplete,
            AlertSignal::Arrival {
                org,
                study_uid,
                from_peer,
                priority,
                instances,
            },
        ) if *org == rule.org => {
            let stroke = rule.kind == AlertKind::StrokeArrival;
            if stroke && i64::from(*priority) < rule.threshold {
                return None;
            }
            let title = if stroke {
                format!("Stroke-priority study arrived from {from_peer}")
            } else {
                format!("Study from {from_peer} complete ({instances} images)")
            };
            Some(Matched {
                key: format!("arrival:{study_uid}:{from_peer}"),
                title,
                study_uid: Some(study_uid.clone()),
                details: json!({"from_peer": from_peer, "priority": priority,
                                "instances": instances}),
            })
        }
        (
            AlertKind::TransferParked,
            AlertSignal::TransferParked {
                org,
                queue,
                study_uid,
                error,
            },
        ) if *org == rule.org => Some(Matched {
            key: format!("parked:{queue}:{study_uid}:{period}"),
            title: format!("Transfer to {queue} parked"),
            study_uid: Some(study_uid.clone()),
            details: json!({"queue": queue, "error": truncate(error, 300)}),
        }),
        (
            AlertKind::PeerDown,
            AlertSignal::PeerDown {
                org,
                peer,
                since_ms,
                error,
            },
        ) if *org == rule.org => {
            let minutes = (now_ms - since_ms) / 60_000;
            if minutes < rule.threshold {
                return None;
            }
            Some(Matched {
                key: format!("peer-down:{peer}:{since_ms}"),
                title: format!("Peer {peer} unreachable for {minutes} min"),
                study_uid: None,
                details: json!({"peer": peer, "since_ms": since_ms,
                                "error": truncate(error, 300)}),
            })
        }
        (AlertKind::DiskLow, AlertSignal::DiskFree { free_bytes }) => {
            if i64::try_from(*free_bytes).unwrap_or(i64::MAX) >= rule.threshold {
                return None;
            }
            Some(Matched {
                key: format!("disk-low:{period}"),
                title: format!(
                    "Disk low: {} MB free on the data directory",
                    free_bytes / 1_000_000
                ),
                study_uid: None,
                details: json!({"free_bytes": free_bytes, "threshold_bytes": rule.threshold}),
            })
        }
        (AlertKind::CertificateExpiry, AlertSignal::Certificate { not_after_ms }) => {
            let days = (not_after_ms - now_ms).div_euclid(86_400_000);
            if days >= rule.threshold {
                return None;
            }
            let title = if *not_after_ms <= now_ms {
                "The HTTPS certificate has expired".to_owned()
            } else {
                format!("The HTTPS certificate expires in {days} days")
            };
            Some(Matched {
                key: format!("certificate:{not_after_ms}:{period}"),
                title,
                study_uid: None,
                details: json!({"not_after_ms": not_after_ms, "days_left": days}),
            })
        }
        _ => None,
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The wait before attempt `attempts + 1` after `attempts` failed ones: `base` doubling per
/// attempt, at most `max`.
pub fn backoff_ms(base: Duration, max: Duration, attempts: u32) -> i64 {
    let base = base.as_millis().max(1) as i64;
    let max = max.as_millis() as i64;
    base.saturating_mul(1i64 << attempts.saturating_sub(1).min(30))
        .min(max)
}

/// An alert as the API lists it and the event stream sends it (no organisation).
pub fn alert_json(a: &Alert) -> Value {
    json!({
        "id": a.id, "chain": a.chain, "rule_id": a.rule_id, "kind": a.kind,
        "title": a.title, "study_uid": a.study_uid, "link": a.link, "details": a.details,
        "created_ms": a.created_ms, "step": a.step, "escalate_at_ms": a.escalate_at_ms,
        "acknowledged_ms": a.acknowledged_ms, "acknowledged_by": a.acknowledged_by,
    })
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Alerts {
    /// An engine over `store`, reading users' e-mail addresses from `directory` and pushing
    /// in-app alerts through `events`.
    pub fn new(
        store: Arc<dyn AlertStore>,
        directory: Arc<dyn Directory>,
        events: Arc<StudyEvents>,
        opts: AlertOptions,
    ) -> Result<Self, reqwest::Error> {
        let mut http = reqwest::Client::builder()
            .timeout(opts.webhook_timeout)
            .redirect(reqwest::redirect::Policy::none());
        if !opts.webhook_allow_private {
            // Names resolve to public addresses only, checked at each connection (DNS rebinding).
            http = http.dns_resolver(Arc::new(target::GuardedResolver));
        }
        let http = http.build()?;
        Ok(Alerts {
            store,
            directory,
            events,
            http,
            clock: Arc::new(vesalius_auth::now_ms),
            base_url: std::sync::RwLock::new(opts.base_url.clone()),
            opts,
        })
    }

    /// Uses `clock` instead of the system time (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the site's external base URL (absolute links in webhooks and e-mails) when the
    /// configuration gave none and the listener's address is known only now.
    pub fn set_base_url(&self, url: &str) {
        *self.base_url.write().expect("lock") = url.trim_end_matches('/').to_owned();
    }

    fn base(&self) -> String {
        self.base_url.read().expect("lock").clone()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn AlertStore> {
        &self.store
    }

    /// The engine's settings.
    pub fn options(&self) -> &AlertOptions {
        &self.opts
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Matches `s` against every rule and raises what matched; answers how many alerts were
    /// raised (0 when nothing matched or it was raised before).
    pub async fn signal(&self, s: &AlertSignal) -> vesalius_store::Result<usize> {
        let now = self.now();
        let repeat = self.opts.repeat.as_millis() as i64;
        let rules = self.store.alert_rules().await?;
        let mut subs: Option<Vec<Subscription>> = None;
        let mut raised = 0;
        for rule in &rules {
            let Some(m) = matches(rule, s, now, repeat) else {
                continue;
            };
            if subs.is_none() {
                subs = Some(self.store.subscriptions().await?);
            }
            let subs = subs.as_deref().unwrap_or_default();
            let mine: Vec<&Subscription> = subs
                .iter()
                .filter(|x| x.rule_id == rule.id && !x.escalation_only)
                .collect();
            let users: BTreeSet<&str> = mine.iter().map(|x| x.username.as_str()).collect();
            if users.is_empty() {
                continue;
            }
            let chain = new_id();
            let mut alerts = Vec::new();
            let mut deliveries = Vec::new();
            for (i, user) in users.into_iter().enumerate() {
                let id = if i == 0 { chain.clone() } else { new_id() };
                let escalate_at =
                    (i == 0 && rule.escalate_after_ms > 0 && !rule.escalation.is_empty())
                        .then(|| now + rule.escalate_after_ms);
                let a = self.make_alert(rule, &m, &id, &chain, user, 0, escalate_at, now);
                for sub in mine.iter().filter(|x| x.username == user) {
                    if let Some(d) = self.delivery(&a, sub, now).await {
                        deliveries.push(d);
                    }
                }
                alerts.push(a);
            }
            let key = format!("{}|{}", rule.id, m.key);
            if self.store.raise(&key, alerts.clone(), deliveries).await? {
                raised += alerts.len();
                tracing::info!(rule = %rule.id, kind = rule.kind.as_str(), alerts = alerts.len(),
                    "alert raised");
                metrics::counter!("vesalius_alerts_raised_total").increment(alerts.len() as u64);
                for a in &alerts {
                    self.push(a);
                }
            }
        }
        Ok(raised)
    }

    #[allow(clippy::too_many_arguments)]
    fn make_alert(
        &self,
        rule: &AlertRule,
        m: &Matched,
        id: &str,
        chain: &str,
        user: &str,
        step: u32,
        escalate_at_ms: Option<i64>,
        now: i64,
    ) -> Alert {
        Alert {
            id: id.to_owned(),
            chain: chain.to_owned(),
            org: rule.org.clone(),
            rule_id: rule.id.clone(),
            kind: rule.kind,
            username: user.to_owned(),
            title: m.title.clone(),
            study_uid: m.study_uid.clone(),
            link: Some(match &m.study_uid {
                Some(s) => format!("/view/{s}"),
                None => "/worklist".to_owned(),
            }),
            details: m.details.clone(),
            created_ms: now,
            step,
            escalate_at_ms,
            acknowledged_ms: None,
            acknowledged_by: String::new(),
        }
    }

    /// The delivery of `a` on `sub`'s channel (none for in-app; none for an e-mail without an
    /// address or without SMTP).
    async fn delivery(&self, a: &Alert, sub: &Subscription, now: i64) -> Option<Delivery> {
        let target = match sub.channel {
            Channel::InApp => return None,
            Channel::Webhook => sub.target.clone(),
            Channel::Email => {
                if self.opts.smtp.is_none() {
                    tracing::warn!(user = %sub.username, "e-mail alert, but [alerts] smtp_host is not set");
                    return None;
                }
                if !sub.target.is_empty() {
                    sub.target.clone()
                } else {
                    match self.directory.user_by_name(&sub.username).await {
                        Ok(Some(u)) if !u.email.is_empty() => u.email,
                        _ => {
                            tracing::warn!(user = %sub.username, "e-mail alert, but the user has no address");
                            return None;
                        }
                    }
                }
            }
        };
        Some(Delivery {
            id: new_id(),
            alert_id: a.id.clone(),
            channel: sub.channel,
            target,
            secret: sub.secret.clone(),
            attempts: 0,
            next_ms: now,
            state: DeliveryState::Pending,
            last_error: String::new(),
            created_ms: now,
        })
    }

    /// Sends `a` to its recipient's open app.
    fn push(&self, a: &Alert) {
        self.events.send(StudyEvent::Alert {
            org: a.org.clone(),
            user: a.username.clone(),
            alert: alert_json(a),
        });
    }

    /// Acknowledges `chain` as `by` (with its audit events) and tells every recipient's open
    /// app, so the alert goes away everywhere; `false` when it was acknowledged already.
    pub async fn acknowledge(
        &self,
        chain: &str,
        by: &str,
        audit: Vec<vesalius_store::audit::AuditEvent>,
    ) -> vesalius_store::Result<bool> {
        let changed = self.store.acknowledge(chain, by, self.now(), audit).await?;
        if changed {
            for a in self.store.chain(chain).await? {
                self.push(&a);
            }
        }
        Ok(changed)
    }

    /// Escalates every due, unacknowledged alert to the next person of its rule; answers how
    /// many alerts that made.
    pub async fn escalate_due(&self) -> vesalius_store::Result<usize> {
        let now = self.now();
        let due = self.store.due_escalations(now, 100).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let rules = self.store.alert_rules().await?;
        let subs = self.store.subscriptions().await?;
        let mut made = 0;
        for from in due {
            let rule = rules.iter().find(|r| r.id == from.rule_id);
            let next_user = rule.and_then(|r| r.escalation.get(from.step as usize));
            let (Some(rule), Some(user)) = (rule, next_user) else {
                // The rule is gone or its list is done: stop escalating this chain.
                self.store.escalate(&from.id, vec![], vec![]).await?;
                continue;
            };
            let step = from.step + 1;
            let escalate_at = ((step as usize) < rule.escalation.len())
                .then(|| now + rule.escalate_after_ms.max(1));
            let m = Matched {
                key: String::new(),
                title: from.title.clone(),
                study_uid: from.study_uid.clone(),
                details: from.details.clone(),
            };
            let mut a = self.make_alert(
                rule,
                &m,
                &new_id(),
                &from.chain,
                user,
                step,
                escalate_at,
                now,
            );
            a.link = from.link.clone();
            let mut deliveries = Vec::new();
            for sub in subs
                .iter()
                .filter(|x| x.rule_id == rule.id && x.username == *user)
            {
                if let Some(d) = self.delivery(&a, sub, now).await {
                    deliveries.push(d);
                }
            }
            if self
                .store
                .escalate(&from.id, vec![a.clone()], deliveries)
                .await?
            {
                made += 1;
                tracing::info!(rule = %rule.id, to = %user, step, "alert escalated");
                metrics::counter!("vesalius_alerts_escalated_total").increment(1);
                self.push(&a);
            }
        }
        Ok(made)
    }

    /// Sends every due delivery (at once, each under its lease); answers how many were sent.
    pub async fn deliver_due(&self) -> vesalius_store::Result<usize> {
        let now = self.now();
        // A read first: an idle engine does not write (the claim is a write transaction).
        if self.store.next_delivery_ms().await?.is_none_or(|t| t > now) {
            return Ok(0);
        }
        let lease = self.opts.lease.as_millis() as i64;
        let due = self.store.claim_deliveries(now, lease, 32).await?;
        let results = futures::future::join_all(due.iter().map(|d| self.send(d))).await;
        let mut sent = 0;
        for (d, r) in due.iter().zip(results) {
            let now = self.now();
            let (state, next, error) = match r {
                Ok(()) => {
                    sent += 1;
                    (DeliveryState::Sent, now, String::new())
                }
                Err(e) => {
                    let attempts = d.attempts + 1;
                    let give_up = e.permanent || attempts >= self.opts.max_attempts;
                    tracing::warn!(delivery = %d.id, channel = d.channel.as_str(), attempts,
                        give_up, "alert delivery failed: {}", e.message);
                    let state = if give_up {
                        DeliveryState::Failed
                    } else {
                        DeliveryState::Pending
                    };
                    let wait = backoff_ms(self.opts.retry_base, self.opts.retry_max, attempts);
                    (state, now + wait, e.message)
                }
            };
            metrics::counter!("vesalius_alert_deliveries_total",
                "channel" => d.channel.as_str(), "state" => state.as_str())
            .increment(1);
            self.store
                .finish_delivery(&d.id, state, next, &error)
                .await?;
        }
        Ok(sent)
    }

    /// One attempt at `d`.
    async fn send(&self, d: &Delivery) -> Result<(), SendError> {
        let a = match self.store.alert(&d.alert_id).await {
            Ok(Some(a)) => a,
            Ok(None) => return Err(SendError::permanent("the alert is gone")),
            Err(e) => return Err(SendError::retry(e.to_string())),
        };
        let url = a
            .link
            .as_deref()
            .map(|l| format!("{}{l}", self.base().trim_end_matches('/')));
        match d.channel {
            Channel::InApp => Ok(()),
            Channel::Webhook => {
                let mut v = alert_json(&a);
                v["url"] = json!(url);
                v["recipient"] = json!(a.username);
                let body = json!({"type": "alert", "delivery": d.id, "alert": v});
                // Checked again: the setting may have changed since the subscription.
                target::check_url(&d.target, self.opts.webhook_allow_private)
                    .map_err(|e| SendError::permanent(format!("POST {}: {e}", d.target)))?;
                webhook::post(&self.http, &d.target, &d.secret, &body, self.now() / 1000).await
            }
            Channel::Email => {
                let Some(smtp) = &self.opts.smtp else {
                    return Err(SendError::permanent("SMTP is not configured"));
                };
                let mut text = format!("{}\r\n\r\n", a.title);
                if let Some(u) = &url {
                    text.push_str(&format!("Open: {u}\r\n"));
                }
                text.push_str(&format!(
                    "\r\nAcknowledge it in Vesalius ({}/worklist).\r\n\r\nRule {}, alert {}.\r\n",
                    self.base().trim_end_matches('/'),
                    a.rule_id,
                    a.id
                ));
                let subject = format!("[Vesalius] {}", a.title);
                smtp::send(smtp, &d.target, &subject, &text, self.now())
                    .await
                    .map_err(|e| SendError {
                        permanent: e.permanent,
                        message: e.message,
                    })
            }
        }
    }

    /// Runs escalations and deliveries every [`AlertOptions::tick`] until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.opts.tick.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.escalate_due().await {
                tracing::warn!("alert escalation: {e}");
            }
            if let Err(e) = self.deliver_due().await {
                tracing::warn!("alert deliveries: {e}");
            }
        }
    }
}

/// Why a delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// Retrying cannot help (a 4xx answer, a refused address).
    pub permanent: bool,
    /// What happened.
    pub message: String,
}

impl SendError {
    fn retry(message: impl Into<String>) -> Self {
        SendError {
            permanent: false,
            message: message.into(),
        }
    }

    fn permanent(message: impl Into<String>) -> Self {
        SendError {
            permanent: true,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests;
