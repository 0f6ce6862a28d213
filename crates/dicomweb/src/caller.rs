//! [`Ctx`]: the service state together with the [`Caller`] the binary's authentication layer
//! resolved for this request (a request extension). A request without one is refused with 401:
//! the router never serves anybody it does not know (issue 4).
//!
//! Retrieval scopes built through [`Ctx::scope`] carry the caller's [`Access`], so the index
//! itself hides what the caller may not see (404, never a hint that the study exists), and the
//! access is audited once per caller and study per dedupe window, not once per frame.

use std::ops::Deref;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde_json::json;
use vesalius_auth::Caller;
use vesalius_store::audit::Outcome;
use vesalius_store::query::{Access, Scope};

use crate::{AppState, DicomWebError};

/// Service state plus the caller of this request.
pub(crate) struct Ctx {
    st: AppState,
    /// Who is asking.
    pub caller: Caller,
}

impl Deref for Ctx {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.st
    }
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = DicomWebError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Self::Rejection> {
        let caller = parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| DicomWebError::unauthorized("credentials required"))?;
        Ok(Ctx {
            st: st.clone(),
            caller,
        })
    }
}

impl Ctx {
    /// What the caller may see.
    pub fn access(&self) -> Option<Access> {
        self.caller.access.clone()
    }

    /// A retrieval scope limited to what the caller may see; records a deduplicated `retrieve`
    /// audit event for the study.
    pub fn scope(&self, study: &str, series: Option<&str>, sop: Option<&str>) -> Scope {
        self.audit_study("retrieve", study);
        Scope {
            access: self.access(),
            study: Some(study.to_owned()),
            series: series.map(str::to_owned),
            instance: sop.map(str::to_owned),
        }
    }

    /// Appends `action` on `study` to the audit trail in the background, once per caller, action
    /// and study per dedupe window (the archive's read speed holds with audit on).
    pub fn audit_study(&self, action: &str, study: &str) {
        let Some(auth) = &self.st.auth else {
            return;
        };
        let c = &self.caller;
        let now = auth.now_ms();
        if !auth
            .dedupe()
            .first_in_window(&c.principal.actor.id, action, c.org(), study, now)
        {
            return;
        }
        let mut ev = c.event(action, Outcome::Success, c.org(), Some(study), json!({}));
        let (index, auth, access) = (
            self.st.ingestor.index().clone(),
            auth.clone(),
            c.access.clone(),
        );
        let (study, action, actor_org) = (study.to_owned(), action.to_owned(), c.org().to_owned());
        tokio::spawn(async move {
            // The event belongs to the study's owner (a grant or break-glass reader is of
            // another organisation), with its patient, so that the owner's "who saw" finds it.
            match owner(&*index, access, &study).await {
                Some((org, patient)) => {
                    ev.org = org;
                    ev.patient = patient;
                }
                None => {
                    // Nothing was read (the study is not visible): no event, and the next
                    // access, perhaps after a grant, is audited.
                    auth.dedupe()
                        .forget(&ev.actor.id, &action, &actor_org, &study);
                    return;
                }
            }
            auth.audit_later(vec![ev]);
        });
    }

    /// Appends one event in the background (never on the response path), batched with other
    /// read events ([`vesalius_auth::Authenticator::audit_later`]).
    pub fn append(&self, ev: vesalius_store::audit::AuditEvent) {
        if let Some(auth) = &self.st.auth {
            auth.audit_later(vec![ev]);
        }
    }
}

/// The organisation owning the copy of `study` that `access` sees, and its patient
/// `(issuer, patient id)`; `None` when the study is not visible (nothing was read).
async fn owner(
    index: &dyn vesalius_store::Index,
    access: Option<Access>,
    study: &str,
) -> Option<(String, Option<(String, String)>)> {
    use vesalius_store::query::{Key, Level, Matcher, Query};
    let scope = Scope {
        access,
        ..Scope::study(study)
    };
    let org = index.instances(&scope).await.ok()?.first()?.org.clone();
    let mut q = Query::new(Level::Study).with(Key::StudyInstanceUid, Matcher::Single(study.into()));
    q.access = Some(Access::orgs([org.clone()]));
    q.limit = 1;
    let patient = index.find(&q).await.ok().and_then(|a| {
        let a = a.first()?;
        let id = a.first_str(Key::PatientId.tag())?;
        let issuer = a
            .first_str(Key::IssuerOfPatientId.tag())
            .unwrap_or_default();
        Some((issuer, id))
    });
    Some((org, patient))
}
