//! Access control of the DIMSE services (issue 4): who an association acts as, what it may do,
//! and the audit trail of what it did. The decisions are `vesalius-auth`'s; this module only
//! asks them at the right moments and answers in DICOM terms.
//!
//! - **Admission.** On A-ASSOCIATE-RQ the calling AE title, the called AE title and the peer's
//!   IP address go to [`Authenticator::from_ae`]: an unknown calling AE title, or a known one
//!   calling from an address outside its allow-list, is refused with A-ASSOCIATE-RJ
//!   "rejected-permanent, service-user, calling-AE-title-not-recognized" (PS3.8 9.3.4, reason 3;
//!   the address case answers the same so that the answer does not confirm the title exists); a
//!   called AE title that is not one of the site's (`AuthOptions::local_ae_titles`, or else our
//!   own AE title in negotiation) with reason 7, unless `accept_any_called_ae`; a directory
//!   that cannot be read with "rejected-transient, service-provider (presentation),
//!   temporary-congestion". The authenticator audits each refusal (`association-rejected`).
//!   An accepted association keeps its [`Principal`] (an AE of exactly one organisation) for
//!   its whole lifetime: [`Peer`].
//! - **Operations.** C-ECHO is open to every admitted AE. C-STORE needs `Store` on the AE's
//!   organisation (decided once per association) and stores into that organisation. C-FIND
//!   needs `Query`, C-GET and C-MOVE `Retrieve` (only AE titles registered with `may_query`);
//!   their index queries and retrieval scopes carry the principal's [`Access`], so nothing of
//!   another organisation is found, and each study is authorized again before its first byte
//!   is sent. Storage Commitment needs `Store` (it only confirms, by SOP Instance UID, what the
//!   caller's own organisation holds: a modality that may store must be able to ask whether its
//!   images are safe without being given the right to query). A refusal is answered with
//!   0x0124 "Refused: Not Authorized" and an Error Comment, and the association goes on.
//! - **Audit.** Stores are audited in the ingest transaction (the binary's ingest observer sees
//!   the actor, source address and user agent through `IngestContext`). Every C-FIND is a
//!   `query` event (level, keys, number of answers); C-GET and C-MOVE a `retrieve` event per
//!   study and AE per dedupe window; refusals a `denied` event of the action, at most one per
//!   AE and action per window. These are appended in spawned tasks, never on the response
//!   path; a failed append is logged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value as Json, json};
use tokio::sync::OnceCell;
use vesalius_auth::policy::Decision;
use vesalius_auth::{Action, Authenticator, Principal, Resource};
use vesalius_core::tag;
use vesalius_store::audit::{AuditEvent, Outcome};
use vesalius_store::model::StoredInstance;
use vesalius_store::query::{Access, Key, Level, Matcher, Query};

use crate::association::{Refusal, RequestInfo};
use crate::message::status;
use crate::server::DimseServerOptions;

/// A refused or failed access check: the DIMSE status and Error Comment to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denial {
    /// 0x0124 when the policy refused, 0x0110 when the check itself failed.
    pub(crate) status: u16,
    /// The Error Comment (at most 64 characters go on the wire).
    pub(crate) comment: String,
}

impl Denial {
    fn not_authorized(comment: String) -> Self {
        Denial {
            status: status::NOT_AUTHORIZED,
            comment,
        }
    }

    /// Whether the policy said no (as opposed to the check failing).
    pub(crate) fn is_policy(&self) -> bool {
        self.status == status::NOT_AUTHORIZED
    }
}

/// Decides admission on an A-ASSOCIATE-RQ (see the module doc).
pub(crate) async fn admit(
    auth: &Authenticator,
    options: &DimseServerOptions,
    info: RequestInfo,
    peer: SocketAddr,
) -> Result<Peer, Refusal> {
    // With `accept_any_called_ae` whatever the modality calls us is taken as our own title.
    let called = if options.accept_any_called_ae {
        options.ae_title.as_str()
    } else {
        info.called_ae.as_str()
    };
    match auth.from_ae(&info.calling_ae, called, peer.ip()).await {
        Ok(principal) => Ok(Peer {
            principal,
            source: peer.to_string(),
            user_agent: info.user_agent().to_owned(),
            store: OnceCell::new(),
        }),
        Err(r) => Err(Refusal {
            result: r.result(),
            source: r.source(),
            reason: r.reason(),
            why: r.to_string(),
        }),
    }
}

/// The party an accepted association acts as, for its whole lifetime.
pub(crate) struct Peer {
    /// The calling AE title as a principal of its organisation.
    pub(crate) principal: Principal,
    /// `ip:port` of the peer.
    pub(crate) source: String,
    /// The peer's Implementation Version Name (or Class UID), as the user agent of its events.
    pub(crate) user_agent: String,
    /// The `Store` decision, taken at the first C-STORE and kept (a 300-slice CT asks once).
    store: OnceCell<Result<(), Denial>>,
}

impl Peer {
    /// The calling AE title.
    pub(crate) fn ae(&self) -> &str {
        &self.principal.actor.id
    }

    /// The organisation the AE belongs to.
    pub(crate) fn org(&self) -> &str {
        self.principal.org_str()
    }

    /// Asks the policy whether the AE may do `action` on `resource`; `verb` words the refusal.
    pub(crate) async fn authorize(
        &self,
        auth: &Authenticator,
        action: Action,
        resource: &Resource,
        verb: &str,
    ) -> Result<(), Denial> {
        match auth.authorize(&self.principal, action, resource).await {
            Ok(Decision::Allow(_)) => Ok(()),
            Ok(Decision::Deny(reason)) => Err(Denial::not_authorized(format!(
                "AE title {} may not {verb} ({reason})",
                self.ae()
            ))),
            Err(e) => {
                tracing::warn!(calling = self.ae(), error = %e, "access check failed");
                Err(Denial {
                    status: status::PROCESSING_FAILURE,
                    comment: "access check failed, try again later".into(),
                })
            }
        }
    }

    /// Whether the AE may store into its organisation; decided once per association (a failed
    /// check is not remembered).
    pub(crate) async fn may_store(&self, auth: &Authenticator) -> Result<(), Denial> {
        if let Some(d) = self.store.get() {
            return d.clone();
        }
        let org = Resource::org(self.org());
        let d = self.authorize(auth, Action::Store, &org, "store").await;
        if d.as_ref().map_or_else(Denial::is_policy, |_| true) {
            let _ = self.store.set(d.clone());
        }
        d
    }

    /// What the AE may see in queries and retrievals.
    pub(crate) async fn access(&self, auth: &Authenticator) -> Result<Option<Access>, Denial> {
        auth.access(&self.principal).await.map_err(|e| {
            tracing::warn!(calling = self.ae(), error = %e, "access resolution failed");
            Denial {
                status: status::PROCESSING_FAILURE,
                comment: "access check failed, try again later".into(),
            }
        })
    }

    /// An audit event of this AE, now.
    pub(crate) fn event(
        &self,
        auth: &Authenticator,
        action: &str,
        outcome: Outcome,
        org: &str,
        study_uid: Option<&str>,
        details: Json,
    ) -> AuditEvent {
        AuditEvent {
            time_ms: auth.now_ms(),
            actor: self.principal.actor.clone(),
            action: action.to_owned(),
            outcome,
            org: org.to_owned(),
            patient: None,
            study_uid: study_uid.map(str::to_owned),
            source: self.source.clone(),
            user_agent: self.user_agent.clone(),
            details,
        }
    }

    /// Audits a refusal of `action` (outcome `denied`), at most once per AE and action per
    /// dedupe window (a modality retrying a refused store 300 times writes one event).
    pub(crate) fn audit_denied(&self, auth: &Arc<Authenticator>, action: &str, denial: &Denial) {
        if !denial.is_policy() {
            return;
        }
        let key = format!("{action}-denied");
        if !auth
            .dedupe()
            .first_in_window(self.ae(), &key, self.org(), "", auth.now_ms())
        {
            return;
        }
        let ev = self.event(
            auth,
            action,
            Outcome::Denied,
            self.org(),
            None,
            json!({ "reason": denial.comment, "status": denial.status }),
        );
        append(auth, vec![ev]);
    }

    /// Audits a C-GET or C-MOVE of `instances`: one `retrieve` event per study not audited for
    /// this AE within the dedupe window, with the patient looked up in the index (in the
    /// background, like the append itself).
    pub(crate) fn audit_retrieve(
        &self,
        auth: &Arc<Authenticator>,
        index: &Arc<dyn vesalius_store::Index>,
        instances: &[StoredInstance],
        details: Json,
    ) {
        let mut studies: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for i in instances {
            *studies.entry((&i.org, &i.study_uid)).or_default() += 1;
        }
        let now = auth.now_ms();
        let events: Vec<AuditEvent> = studies
            .into_iter()
            .filter(|((org, study), _)| {
                auth.dedupe()
                    .first_in_window(self.ae(), "retrieve", org, study, now)
            })
            .map(|((org, study), n)| {
                let mut d = details.clone();
                d["instances"] = json!(n);
                self.event(auth, "retrieve", Outcome::Success, org, Some(study), d)
            })
            .collect();
        if events.is_empty() {
            return;
        }
        let (auth, index) = (auth.clone(), index.clone());
        tokio::spawn(async move {
            let mut events = events;
            for ev in &mut events {
                ev.patient = patient_of(index.as_ref(), &ev.org, ev.study_uid.as_deref()).await;
            }
            auth.audit_later(events);
        });
    }
}

/// The patient `(issuer, id)` of a study, from its index row (for "who saw this patient").
async fn patient_of(
    index: &dyn vesalius_store::Index,
    org: &str,
    study: Option<&str>,
) -> Option<(String, String)> {
    let mut q =
        Query::new(Level::Study).with(Key::StudyInstanceUid, Matcher::Single(study?.to_owned()));
    q.access = Some(Access::orgs([org]));
    q.limit = 1;
    let found = index.find(&q).await.ok()?;
    let a = found.first()?;
    let id = a.first_str(tag::PATIENT_ID)?;
    let issuer = a.first_str(tag::ISSUER_OF_PATIENT_ID).unwrap_or_default();
    Some((issuer, id))
}

/// Appends events off the response path, batched with other read events
/// ([`Authenticator::audit_later`]).
pub(crate) fn append(auth: &Arc<Authenticator>, events: Vec<AuditEvent>) {
    auth.audit_later(events);
}
