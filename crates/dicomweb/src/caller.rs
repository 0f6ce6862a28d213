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
        let ev = c.event(action, Outcome::Success, c.org(), Some(study), json!({}));
        self.append(ev);
    }

    /// Appends one event in the background (never on the response path).
    pub fn append(&self, ev: vesalius_store::audit::AuditEvent) {
        if let Some(auth) = &self.st.auth {
            let log = auth.audit_log().clone();
            tokio::spawn(async move {
                if let Err(e) = log.append(vec![ev]).await {
                    tracing::error!(error = %e, "audit append failed");
                }
            });
        }
    }
}
