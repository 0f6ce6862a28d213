//! [`Caller`]: an authenticated principal as a front end (DICOMweb, JSON API) carries it through
//! one request, with what it may see already resolved and where it came from for audit.

use serde_json::Value as Json;
use vesalius_store::audit::{AuditEvent, Outcome};
use vesalius_store::query::Access;

use crate::principal::Principal;

/// Who is asking, as the authentication layer resolved it for one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The principal.
    pub principal: Principal,
    /// What it may see ([`crate::policy::access`]); `None` only for the server itself.
    pub access: Option<Access>,
    /// Source address (`ip:port`).
    pub source: String,
    /// User agent.
    pub user_agent: String,
}

impl Caller {
    /// The server itself (tests, internal calls): unrestricted.
    pub fn system() -> Self {
        Caller {
            principal: Principal::system(),
            access: None,
            source: String::new(),
            user_agent: String::new(),
        }
    }

    /// The organisation the caller acts in ("" when none).
    pub fn org(&self) -> &str {
        self.principal.org_str()
    }

    /// An audit event of this caller.
    pub fn event(
        &self,
        action: &str,
        outcome: Outcome,
        org: &str,
        study_uid: Option<&str>,
        details: Json,
    ) -> AuditEvent {
        AuditEvent {
            time_ms: crate::now_ms(),
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
}
