//! Break-glass and the privacy officer's reports.
//!
//! Break-glass lets a clinician open another organisation's study that no grant opens, by
//! stating a reason. It creates a short [`Grant`] flagged `break_glass` for that user and study
//! and an audit event `break-glass` whose `org` is the **owning** organisation, so that its
//! auditors find it in [`Authenticator::privacy_report`]. Every read through the grant is then
//! decided [`crate::policy::Basis::Grant`] with `break_glass: true`, for the protocol layers to
//! audit flagged.

use serde_json::json;
use vesalius_store::audit::{AuditFilter, AuditRecord, Outcome};
use vesalius_store::directory::{DirectoryChange, Grant, GrantSubject, Grantee};

use super::{Authenticator, Origin};
use crate::error::{Error, Result};
use crate::policy::{Action, Decision, Resource, StudyRef};
use crate::principal::Principal;

/// Audit actions that mean someone saw or took a copy of images.
pub const READ_ACTIONS: &[&str] = &["retrieve", "export", "link-use", "break-glass", "query"];

impl Authenticator {
    /// Opens `study` (of another organisation) for `principal` for
    /// [`super::AuthOptions::break_glass_ttl_ms`], with a mandatory `reason`. Refusals are
    /// audited too.
    pub async fn break_glass(
        &self,
        principal: &Principal,
        study: &StudyRef,
        reason: &str,
        origin: Origin<'_>,
    ) -> Result<Grant> {
        let reason = reason.trim();
        let resource = Resource::Study(study.clone());
        let decision = self
            .authorize(principal, Action::BreakGlass, &resource)
            .await?;
        let mut ev = self.event(
            principal.actor.clone(),
            "break-glass",
            Outcome::Denied,
            origin,
            json!({ "reason": reason }),
        );
        ev.org = study.org.clone();
        ev.study_uid = Some(study.study_uid.clone());
        ev.patient = study.patient.clone();
        if let Decision::Deny(why) = decision {
            ev.details["denied"] = json!(why.as_str());
            self.audit.append(vec![ev]).await?;
            return Err(Error::Forbidden(why.as_str().into()));
        }
        if reason.chars().count() < self.opts.break_glass_min_reason {
            return Err(Error::BadRequest(format!(
                "break-glass needs a reason of at least {} characters",
                self.opts.break_glass_min_reason
            )));
        }
        let user_id = principal
            .user_id
            .clone()
            .ok_or_else(|| Error::Forbidden("break-glass needs a user".into()))?;
        let now = self.now_ms();
        let grant = Grant {
            id: uuid::Uuid::new_v4().to_string(),
            owner_org: study.org.clone(),
            grantee: Grantee::User(user_id.clone()),
            subject: GrantSubject::Study {
                study_uid: study.study_uid.clone(),
            },
            expires_ms: Some(now.saturating_add(self.opts.break_glass_ttl_ms)),
            break_glass: true,
            reason: reason.to_owned(),
            created_by: user_id,
            created_ms: now,
            revoked: false,
        };
        ev.outcome = Outcome::Success;
        ev.details = json!({
            "reason": reason,
            "grant_id": grant.id,
            "expires_ms": grant.expires_ms,
            "acting_org": principal.org_str(),
        });
        tracing::warn!(
            user = %principal.actor.name, org = %study.org, study = %study.study_uid,
            "break-glass access granted"
        );
        self.dir
            .apply(vec![DirectoryChange::PutGrant(grant.clone())], vec![ev])
            .await?;
        Ok(grant)
    }

    /// Break-glass events on `org`'s data between `since_ms` and `until_ms` (newest first), for
    /// its privacy officer. The actor must read `org`'s audit trail; the reading is audited
    /// (`audit-read`).
    pub async fn privacy_report(
        &self,
        actor: &Principal,
        org: &str,
        since_ms: Option<i64>,
        until_ms: Option<i64>,
        origin: Origin<'_>,
    ) -> Result<Vec<AuditRecord>> {
        let filter = AuditFilter {
            org: Some(org.to_owned()),
            action: Some("break-glass".into()),
            since_ms,
            until_ms,
            ..Default::default()
        };
        self.read_audit(actor, org, &filter, "privacy-report", origin)
            .await
    }

    /// "Who saw this": read events ([`READ_ACTIONS`]) on one study or one patient of `org`,
    /// newest first (at most the backend's default search limit). Audited (`audit-read`).
    pub async fn who_saw(
        &self,
        actor: &Principal,
        org: &str,
        subject: &GrantSubject,
        origin: Origin<'_>,
    ) -> Result<Vec<AuditRecord>> {
        let mut filter = AuditFilter {
            org: Some(org.to_owned()),
            ..Default::default()
        };
        match subject {
            GrantSubject::Study { study_uid } => filter.study_uid = Some(study_uid.clone()),
            GrantSubject::Patient { issuer, patient_id } => {
                filter.patient = Some((issuer.clone(), patient_id.clone()))
            }
        }
        let mut records = self
            .read_audit(actor, org, &filter, "who-saw", origin)
            .await?;
        records.retain(|r| {
            READ_ACTIONS.contains(&r.event.action.as_str()) && r.event.outcome == Outcome::Success
        });
        Ok(records)
    }

    async fn read_audit(
        &self,
        actor: &Principal,
        org: &str,
        filter: &AuditFilter,
        report: &str,
        origin: Origin<'_>,
    ) -> Result<Vec<AuditRecord>> {
        self.require(actor, Action::ReadAudit, &Resource::org(org))
            .await?;
        let records = self.audit.search(filter).await?;
        let mut ev = self.event(
            actor.actor.clone(),
            "audit-read",
            Outcome::Success,
            origin,
            json!({ "report": report, "filter": filter, "records": records.len() }),
        );
        ev.org = org.to_owned();
        self.audit.append(vec![ev]).await?;
        Ok(records)
    }
}
