//! The user's live event stream (issue 6): `GET /api/v1/events`, server-sent events about the
//! studies of the caller's organisation, so the worklist updates without a reload.
//!
//! - `event: study`, `data: {"study_uid": "…"}`: instances of the study were stored here (any
//!   front end: C-STORE, STOW-RS, import, a peer's delivery). Debounced per study: at most one
//!   event per study per [`DEBOUNCE`].
//! - `event: arrival`, `data: {"study_uid", "from_peer", "priority", "instances"}`: a peer's
//!   delivery of the study is complete here (the exchange's `study-complete`).
//! - `event: transfer`, `data: {"type": "transfer", "study_uid", "to", "state"}`: one of this
//!   site's outgoing transfers of the study moved (`sending`: instances delivered, debounced
//!   like `study`; `delivered`: the receiver confirmed the whole study; `stopped`: a job was
//!   parked). The organisation's users see the counts in the search's `outgoing`.
//! - `event: alert`, `data: {"type": "alert", "alert": {…}}`: an alert for the subscriber
//!   itself (issue 6, `crate::alerts`); sent to that user only, never debounced.
//! - `event: lagged`, `data: {"type": "lagged"}`: the client was too slow; it should reload.
//!   How many events it missed is not said: the broadcast carries every organisation's events,
//!   so the count would tell one organisation how busy the others are.
//! - A `: keep-alive` comment every 15 s.
//!
//! A stream re-checks its credentials before it sends an event, at most every [`RECHECK`]
//! (issue 6): a session that switched organisation (in another tab), logged out or whose
//! user was disabled, and a revoked token, end their stream instead of hearing more of the
//! organisation; the app reconnects with what it is now.
//!
//! Events name studies only (no patient data): the client reloads what it shows through the
//! API, which applies the caller's access. Only the caller's own organisation's studies are
//! announced (not studies granted from another organisation, nor the guest inbox). Any user
//! who may query in their organisation may subscribe.
//!
//! The source is [`StudyEvents`], an in-process broadcast fed by an [`IngestObserver`] (called
//! inside each ingest transaction, just before its commit: a client reloading a moment later
//! sees the instance) and by the binary with the exchange's arrivals. Each node announces what
//! it ingested itself: with several nodes, a user connected to another node learns of a study
//! at the worklist's periodic reload instead (docs/web.md).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Extension, Router};
use futures::Stream;
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use vesalius_auth::{Action, Authenticator, Caller, PrincipalKind, cookie};
use vesalius_core::ErrorKind;
use vesalius_store::ingest::{IngestContext, IngestObserver};
use vesalius_store::model::{InstanceRecord, SideRecord};

use crate::{ApiError, allowed_in_own_org, caller_of};

/// Events a slow subscriber may fall behind by before it is told it lagged.
const CAPACITY: usize = 1024;
/// At most one `study` event per study and subscriber in this time.
pub const DEBOUNCE: Duration = Duration::from_millis(500);
/// Keep-alive comments (proxies close idle connections).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Something that happened to a study of an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum StudyEvent {
    /// Instances were stored.
    Study {
        /// The owning organisation (not sent to clients).
        #[serde(skip)]
        org: String,
        /// The study.
        study_uid: String,
    },
    /// A peer's delivery of the study is complete.
    Arrival {
        /// The receiving organisation (not sent to clients).
        #[serde(skip)]
        org: String,
        /// The study.
        study_uid: String,
        /// The sending peer.
        from_peer: String,
        /// The route's priority (stroke routes: 100).
        priority: i32,
        /// Instances in the delivery.
        instances: u64,
    },
    /// Progress of one of this site's outgoing transfers of the study (issue 6: the worklist's
    /// "sending to hub", then "delivered"); the client reads the counts through the search.
    Transfer {
        /// The sending organisation (not sent to clients).
        #[serde(skip)]
        org: String,
        /// The study.
        study_uid: String,
        /// The destination's name (a peer or DICOM node).
        to: String,
        /// `sending` (instances delivered), `delivered` (the receiver confirmed the whole
        /// study) or `stopped` (a job was parked).
        state: String,
    },
    /// An alert for one user (issue 6: `crate::alerts`).
    Alert {
        /// The alert's organisation (not sent to clients).
        #[serde(skip)]
        org: String,
        /// The recipient's username (not sent to clients).
        #[serde(skip)]
        user: String,
        /// The alert as the API lists it.
        alert: serde_json::Value,
    },
}

impl StudyEvent {
    fn org(&self) -> &str {
        match self {
            StudyEvent::Study { org, .. }
            | StudyEvent::Arrival { org, .. }
            | StudyEvent::Transfer { org, .. }
            | StudyEvent::Alert { org, .. } => org,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            StudyEvent::Study { .. } => "study",
            StudyEvent::Arrival { .. } => "arrival",
            StudyEvent::Transfer { .. } => "transfer",
            StudyEvent::Alert { .. } => "alert",
        }
    }
}

/// The broadcast of study events of this process.
#[derive(Debug, Clone)]
pub struct StudyEvents {
    tx: broadcast::Sender<StudyEvent>,
}

impl Default for StudyEvents {
    fn default() -> Self {
        StudyEvents::new()
    }
}

impl StudyEvents {
    /// An empty broadcast.
    pub fn new() -> Self {
        StudyEvents {
            tx: broadcast::channel(CAPACITY).0,
        }
    }

    /// Announces `event` to every subscriber (none listening is fine).
    pub fn send(&self, event: StudyEvent) {
        let _ = self.tx.send(event);
    }

    /// A new subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<StudyEvent> {
        self.tx.subscribe()
    }
}

impl IngestObserver for StudyEvents {
    fn observe(&self, record: &InstanceRecord, _ctx: &IngestContext) -> Vec<SideRecord> {
        self.send(StudyEvent::Study {
            org: record.org.clone(),
            study_uid: record.study.study_uid.clone(),
        });
        Vec::new()
    }
}

/// How often, at most, an open stream checks that its credentials still act in its
/// organisation (module documentation).
pub const RECHECK: Duration = Duration::from_secs(1);

/// Whether a stream's credentials still act in the subscriber's organisation.
type StillValid = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// What the route needs: the broadcast, and the authenticator to re-check credentials with.
#[derive(Clone)]
struct Streams {
    events: Arc<StudyEvents>,
    auth: Arc<Authenticator>,
}

/// The route `GET /api/v1/events` (mount at the root).
pub fn router(events: Arc<StudyEvents>, auth: Arc<Authenticator>) -> Router {
    Router::new()
        .route("/api/v1/events", get(stream))
        .with_state(Streams { events, auth })
}

/// What one subscriber has been sent recently (for the debounce).
struct Subscriber {
    rx: broadcast::Receiver<StudyEvent>,
    org: String,
    /// The subscriber's username (alerts are for it alone).
    user: String,
    sent: HashMap<String, Instant>,
    /// Re-checks the credentials (none: nothing to re-check).
    still: Option<StillValid>,
    /// When they were last found valid.
    checked: Instant,
    /// [`RECHECK`] (tests: zero).
    recheck: Duration,
}

/// What a subscriber is sent next.
#[derive(Debug, PartialEq)]
enum Outgoing {
    /// An event of its organisation.
    Event(StudyEvent),
    /// It fell behind by this many events.
    Lagged(u64),
}

impl Subscriber {
    /// The next event for this subscriber, `None` when the broadcast is gone.
    async fn next(&mut self) -> Option<Outgoing> {
        loop {
            let e = match self.rx.recv().await {
                Ok(e) => e,
                Err(RecvError::Lagged(n)) => return Some(Outgoing::Lagged(n)),
                Err(RecvError::Closed) => return None,
            };
            if e.org() != self.org {
                continue;
            }
            if let StudyEvent::Alert { user, .. } = &e
                && *user != self.user
            {
                continue;
            }
            // Stored instances and transfer steps are debounced per study (a transfer's end
            // or stop is always sent: it is the state the worklist must end on).
            let debounced = match &e {
                StudyEvent::Study { study_uid, .. } => Some(study_uid.clone()),
                StudyEvent::Transfer {
                    study_uid, state, ..
                } if state == "sending" => Some(format!("transfer\n{study_uid}")),
                _ => None,
            };
            if let Some(key) = debounced {
                let now = Instant::now();
                if self
                    .sent
                    .get(&key)
                    .is_some_and(|t| now.duration_since(*t) < DEBOUNCE)
                {
                    continue;
                }
                self.sent.retain(|_, t| now.duration_since(*t) < DEBOUNCE);
                self.sent.insert(key, now);
            }
            if let Some(still) = &self.still
                && self.checked.elapsed() >= self.recheck
            {
                if !still().await {
                    return None;
                }
                self.checked = Instant::now();
            }
            return Some(Outgoing::Event(e));
        }
    }
}

/// One server-sent event: `event:` its name, `data:` its JSON.
fn sse(o: &Outgoing) -> Event {
    match o {
        Outgoing::Event(e) => Event::default()
            .event(e.name())
            .data(serde_json::to_string(e).unwrap_or_default()),
        // No count: it would include other organisations' events (module doc).
        Outgoing::Lagged(_) => Event::default()
            .event("lagged")
            .data(json!({"type": "lagged"}).to_string()),
    }
}

/// How the stream's credentials are checked again: the session cookie (still valid and still
/// acting in `org`) or the bearer token (still valid) the request was authenticated with.
fn recheck_of(c: &Caller, headers: &HeaderMap, auth: &Arc<Authenticator>) -> Option<StillValid> {
    let org = c.org().to_owned();
    let auth = auth.clone();
    match c.principal.kind {
        PrincipalKind::Session { .. } => {
            let cookies = crate::authn::header_str(headers, header::COOKIE.as_str());
            let secret = cookie::session_secret(cookies)?.to_owned();
            Some(Arc::new(move || {
                let (auth, secret, org) = (auth.clone(), secret.clone(), org.clone());
                Box::pin(async move {
                    auth.from_session(&secret)
                        .await
                        .is_ok_and(|(p, _)| p.org.as_deref() == Some(org.as_str()))
                })
            }))
        }
        PrincipalKind::Token { .. } => {
            let authz = crate::authn::header_str(headers, header::AUTHORIZATION.as_str());
            let token = cookie::bearer_token(authz)?.to_owned();
            Some(Arc::new(move || {
                let (auth, token) = (auth.clone(), token.clone());
                Box::pin(async move { auth.from_bearer(&token).await.is_ok() })
            }))
        }
        _ => None,
    }
}

async fn stream(
    State(st): State<Streams>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let c = caller_of(caller)?;
    if c.principal.is_system() || !allowed_in_own_org(&c, Action::Query) || c.org().is_empty() {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "the event stream is for users who may query in an organisation",
        ));
    }
    let sub = Subscriber {
        rx: st.events.subscribe(),
        org: c.org().to_owned(),
        user: c.principal.actor.name.clone(),
        sent: HashMap::new(),
        still: recheck_of(&c, &headers, &st.auth),
        checked: Instant::now(),
        recheck: RECHECK,
    };
    let stream = futures::stream::unfold(sub, |mut s| async move {
        let o = s.next().await?;
        Some((Ok(sse(&o)), s))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study(org: &str, uid: &str) -> StudyEvent {
        StudyEvent::Study {
            org: org.into(),
            study_uid: uid.into(),
        }
    }

    #[tokio::test]
    async fn a_subscriber_gets_its_organisations_events_debounced() {
        let ev = StudyEvents::new();
        let mut sub = Subscriber {
            rx: ev.subscribe(),
            org: "a".into(),
            user: "alice".into(),
            sent: HashMap::new(),
            still: None,
            checked: Instant::now(),
            recheck: RECHECK,
        };
        let arrival = StudyEvent::Arrival {
            org: "a".into(),
            study_uid: "1.2".into(),
            from_peer: "spoke".into(),
            priority: 100,
            instances: 3,
        };
        ev.send(study("b", "1.1"));
        ev.send(study("a", "1.2"));
        ev.send(study("a", "1.2"));
        ev.send(study("a.inbox", "1.3"));
        ev.send(arrival.clone());
        let alert = |user: &str| StudyEvent::Alert {
            org: "a".into(),
            user: user.into(),
            alert: json!({"id": "x"}),
        };
        ev.send(alert("bob"));
        ev.send(alert("alice"));
        let transfer = |org: &str, state: &str| StudyEvent::Transfer {
            org: org.into(),
            study_uid: "1.4".into(),
            to: "hub".into(),
            state: state.into(),
        };
        ev.send(transfer("a", "sending"));
        ev.send(transfer("a", "sending"));
        ev.send(transfer("b", "delivered"));
        ev.send(transfer("a", "delivered"));
        drop(ev);
        let mut got = Vec::new();
        while let Some(o) = sub.next().await {
            got.push(o);
        }
        assert_eq!(
            got,
            vec![
                Outgoing::Event(study("a", "1.2")),
                Outgoing::Event(arrival.clone()),
                Outgoing::Event(alert("alice")),
                Outgoing::Event(transfer("a", "sending")),
                Outgoing::Event(transfer("a", "delivered")),
            ]
        );
        // The data names the study, never the organisation.
        assert_eq!(
            serde_json::to_value(&arrival).unwrap(),
            json!({"type": "arrival", "study_uid": "1.2", "from_peer": "spoke",
                   "priority": 100, "instances": 3})
        );
        assert_eq!(
            serde_json::to_value(alert("alice")).unwrap(),
            json!({"type": "alert", "alert": {"id": "x"}})
        );
        assert_eq!(
            serde_json::to_value(study("a", "1.2")).unwrap(),
            json!({"type": "study", "study_uid": "1.2"})
        );
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_it_lagged() {
        let ev = StudyEvents::new();
        let mut sub = Subscriber {
            rx: ev.subscribe(),
            org: "a".into(),
            user: "alice".into(),
            sent: HashMap::new(),
            still: None,
            checked: Instant::now(),
            recheck: RECHECK,
        };
        for i in 0..CAPACITY + 10 {
            ev.send(study("a", &format!("1.{i}")));
        }
        let lagged = sub.next().await.expect("an event");
        assert_eq!(lagged, Outgoing::Lagged(10));
        // What the client is sent says it lagged, not by how many of everyone's events.
        let text = format!("{:?}", sse(&lagged));
        assert!(
            text.contains("lagged") && !text.contains("missed"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_stream_ends_when_its_credentials_no_longer_act_in_its_organisation() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let ev = StudyEvents::new();
        let valid = Arc::new(AtomicBool::new(true));
        let v = valid.clone();
        let mut sub = Subscriber {
            rx: ev.subscribe(),
            org: "a".into(),
            user: "alice".into(),
            sent: HashMap::new(),
            still: Some(Arc::new(move || {
                let ok = v.load(Ordering::SeqCst);
                Box::pin(async move { ok })
            })),
            checked: Instant::now(),
            recheck: Duration::ZERO,
        };
        ev.send(study("a", "1.1"));
        assert_eq!(sub.next().await, Some(Outgoing::Event(study("a", "1.1"))));
        // The session switched organisation (or ended): the next event is not sent.
        valid.store(false, Ordering::SeqCst);
        ev.send(study("a", "1.2"));
        assert_eq!(sub.next().await, None);
    }
}
