//! Patient identity (issue 5): a received study's patient linked to the local record, two
//! patients merged, studies split off to another patient. The IHE Import Reconciliation
//! Workflow (RAD TF-1 ch. 21, RAD TF-2 RAD-66) done after the import: the study keeps the
//! sender's identity until a user reconciles it.
//!
//! Patient identity is `(Issuer of Patient ID, Patient ID)` within one organisation (the
//! index's patient row is per organisation): the same Patient ID of two organisations, or of two
//! issuers, is never the same patient unless a user says so here.
//!
//! - `POST /api/v1/studies/{study}/link-patient` `{"patient_id", "issuer", "name"?,
//!   "birth_date"?, "sex"?}`: the study's patient becomes this identity. Demographics not given
//!   are taken from the local record of that identity when the organisation has one (so
//!   `{"issuer", "patient_id"}` alone is a reference to an existing patient), otherwise kept
//!   as received.
//! - `POST /api/v1/patients/merge` `{"from": {"issuer", "patient_id"}, "into": {...}}`: every
//!   study of `from` in the caller's organisation gets `into`'s identity and demographics
//!   (`into` must exist there).
//! - `POST /api/v1/patients/split` `{"study_uids": [...], "to": {identity as for a link}}`:
//!   the named studies (of the caller's organisation) move to `to`.
//!
//! Every instance concerned is rewritten with [`vesalius_deid::coerce`] (the replaced values
//! kept in Original Attributes Sequence (0400,0561), reason `COERCE`, PS3.3 C.12.1.1.9) and
//! stored again through the normal ingest (group commit, `store` audit event, routing): the
//! rewritten object becomes the current version and the one it replaces is kept as a prior
//! version (DESIGN.md, durability contract), so QIDO-RS, WADO-RS and C-FIND show the new
//! identity and nothing is lost. Instances that already carry the identity are left alone, so
//! a repeated request changes nothing and a request interrupted half-way is finished by sending
//! it again; except when the index shows the study under another identity than its bytes (a
//! peer's Patient ID without issuer, indexed as `peer:NAME`): then they are rewritten anyway,
//! since only a new version moves the study in the index. Instances that arrive for the study while a link runs keep the identity they came
//! with: link again once the study is complete.
//!
//! Who may: `reconcile` on the study's organisation (administrators, clinicians,
//! radiographers: the right that accepts guest uploads). A study the caller cannot see, or that
//! is not its organisation's, is answered 404 like a missing one. Each study changed is audited
//! (`patient-link`, `patient-merge`, `patient-split`; the patient of the event is the new
//! identity, the details say what it was before and after), also when nothing had to change.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vesalius_auth::policy::StudyRef;
use vesalius_auth::{Action, Caller, Resource};
use vesalius_core::ErrorKind;
use vesalius_deid::coerce::{
    PatientIdentity, coerce_patient, coerce_patient_forced, read_object, write_object,
};
use vesalius_store::audit::Outcome;
use vesalius_store::ingest::IngestContext;
use vesalius_store::model::StoredInstance;
use vesalius_store::query::{Access, Answer, Key, Level, Matcher, Query, Scope};

use crate::links::check_uid;
use crate::{ApiError, Services};

/// Modifying System (0400,0563) of the rewritten objects.
const MODIFYING_SYSTEM: &str = "VESALIUS";
/// Instances rewritten at once (their commits share group commits).
const CONCURRENCY: usize = 4;
/// Most studies one split names.
const MAX_SPLIT_STUDIES: usize = 1000;
/// Most studies one merge moves.
const MAX_MERGE_STUDIES: usize = 10_000;

/// A patient as requests name it and answers show it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Identity {
    /// Issuer of Patient ID (0010,0021); "" for none.
    #[serde(default)]
    pub(crate) issuer: String,
    /// Patient ID (0010,0020).
    pub(crate) patient_id: String,
    /// Patient's Name (0010,0010), DICOM PN form (`Family^Given`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// Patient's Birth Date (0010,0030), `YYYYMMDD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) birth_date: Option<String>,
    /// Patient's Sex (0010,0040): `M`, `F`, `O`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sex: Option<String>,
}

/// A patient named by identity only (merge).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatientRef {
    #[serde(default)]
    issuer: String,
    patient_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Merge {
    from: PatientRef,
    into: PatientRef,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Split {
    study_uids: Vec<String>,
    to: Identity,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, message)
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| bad(format!("unreadable body: {e}")))
}

/// Checks one LO/PN-like value: at most `max` characters, no backslash (the value delimiter,
/// PS3.5 6.2) and no control characters.
fn check_text(what: &str, v: &str, max: usize) -> Result<(), ApiError> {
    if v.chars().count() > max {
        return Err(bad(format!("{what} has more than {max} characters")));
    }
    if v.contains('\\') || v.chars().any(char::is_control) {
        return Err(bad(format!(
            "{what} must not contain a backslash or control characters"
        )));
    }
    Ok(())
}

/// A valid DICOM date `YYYYMMDD` (PS3.5 6.2 DA).
fn is_date(d: &str) -> bool {
    if d.len() != 8 || !d.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let (y, m, day) = (&d[..4], &d[4..6], &d[6..]);
    let (y, m, day): (u32, u32, u32) = (
        y.parse().unwrap_or(0),
        m.parse().unwrap_or(0),
        day.parse().unwrap_or(0),
    );
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    y > 0 && (1..=days).contains(&day)
}

fn check_ref(what: &str, issuer: &str, patient_id: &str) -> Result<(), ApiError> {
    if patient_id.is_empty() {
        return Err(bad(format!("{what}patient_id is required")));
    }
    // Patient ID and Issuer of Patient ID are LO: 64 characters (PS3.5 Table 6.2-1).
    check_text(&format!("{what}patient_id"), patient_id, 64)?;
    check_text(&format!("{what}issuer"), issuer, 64)
}

impl PatientRef {
    fn normalized(mut self, what: &str) -> Result<PatientRef, ApiError> {
        self.issuer = self.issuer.trim().to_owned();
        self.patient_id = self.patient_id.trim().to_owned();
        check_ref(what, &self.issuer, &self.patient_id)?;
        Ok(self)
    }
}

impl Identity {
    /// Trims and checks every value; sex upper-cased.
    fn normalized(mut self, what: &str) -> Result<Identity, ApiError> {
        self.issuer = self.issuer.trim().to_owned();
        self.patient_id = self.patient_id.trim().to_owned();
        check_ref(what, &self.issuer, &self.patient_id)?;
        let trim = |v: &mut Option<String>| {
            if let Some(s) = v {
                *s = s.trim().to_owned();
            }
        };
        trim(&mut self.name);
        trim(&mut self.birth_date);
        trim(&mut self.sex);
        if let Some(n) = &self.name {
            // PS3.5 6.2 PN: three component groups of at most 64 characters each.
            check_text(&format!("{what}name"), n, 3 * 64 + 2)?;
            if n.split('=').count() > 3 || n.split('=').any(|g| g.chars().count() > 64) {
                return Err(bad(format!(
                    "{what}name: at most three component groups of 64 characters"
                )));
            }
        }
        if let Some(d) = &self.birth_date
            && !d.is_empty()
            && !is_date(d)
        {
            return Err(bad(format!(
                "{what}birth_date {d:?} is not a date YYYYMMDD"
            )));
        }
        if let Some(s) = &mut self.sex {
            *s = s.to_ascii_uppercase();
            if !matches!(s.as_str(), "" | "M" | "F" | "O") {
                return Err(bad(format!("{what}sex must be M, F, O or empty")));
            }
        }
        Ok(self)
    }

    fn key(&self) -> (String, String) {
        (self.issuer.clone(), self.patient_id.clone())
    }

    fn to_coerce(&self) -> PatientIdentity {
        PatientIdentity {
            patient_id: self.patient_id.clone(),
            issuer: self.issuer.clone(),
            name: self.name.clone(),
            birth_date: self.birth_date.clone(),
            sex: self.sex.clone(),
        }
    }
}

/// A person name of a DICOM JSON answer as PN text (`Alphabetic=Ideographic=Phonetic`).
fn pn_text(a: &Answer) -> String {
    let Some(v) = a
        .get(Key::PatientName.tag())
        .and_then(|v| v.get("Value").and_then(|x| x.get(0)).cloned())
    else {
        return String::new();
    };
    let part = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut s = [part("Alphabetic"), part("Ideographic"), part("Phonetic")].join("=");
    while s.ends_with('=') {
        s.pop();
    }
    s
}

/// The identity and demographics an index answer (study or patient level) shows.
fn identity_of(a: &Answer) -> Identity {
    let text = |k: Key| a.first_str(k.tag()).unwrap_or_default();
    Identity {
        issuer: text(Key::IssuerOfPatientId),
        patient_id: text(Key::PatientId),
        name: Some(pn_text(a)),
        birth_date: Some(text(Key::PatientBirthDate)),
        sex: Some(text(Key::PatientSex)),
    }
}

/// The organisation the caller acts in (the configured one for the server itself).
fn org_of(sv: &Services, c: &Caller) -> String {
    if c.principal.is_system() || c.org().is_empty() {
        sv.options.org.clone()
    } else {
        c.org().to_owned()
    }
}

fn auth_err(e: vesalius_auth::Error) -> ApiError {
    ApiError::new(e.kind(), e.to_string())
}

/// The local record of `(issuer, patient_id)` in `org`, if the organisation has studies of it.
async fn local_patient(
    sv: &Services,
    org: &str,
    issuer: &str,
    patient_id: &str,
) -> Result<Option<Identity>, ApiError> {
    let mut q =
        Query::new(Level::Patient).with(Key::PatientId, Matcher::Single(patient_id.to_owned()));
    q.access = Some(Access::orgs([org]));
    q.limit = 100;
    let found = sv.ingestor.index().find(&q).await?;
    Ok(found
        .iter()
        .map(identity_of)
        // Matching on Patient ID is exact in the index; the issuer is compared here, so that
        // "no issuer" is a value of its own (an empty key would match any issuer).
        .find(|i| i.patient_id == patient_id && i.issuer == issuer))
}

/// Studies of `(issuer, patient_id)` in `org`.
async fn studies_of(
    sv: &Services,
    org: &str,
    issuer: &str,
    patient_id: &str,
) -> Result<Vec<String>, ApiError> {
    let mut q =
        Query::new(Level::Study).with(Key::PatientId, Matcher::Single(patient_id.to_owned()));
    q.access = Some(Access::orgs([org]));
    q.limit = MAX_MERGE_STUDIES + 1;
    let found = sv.ingestor.index().find(&q).await?;
    let mut out: Vec<String> = found
        .iter()
        .filter(|a| {
            let i = identity_of(a);
            i.patient_id == patient_id && i.issuer == issuer
        })
        .filter_map(|a| a.first_str(Key::StudyInstanceUid.tag()))
        .collect();
    out.sort();
    out.dedup();
    if out.len() > MAX_MERGE_STUDIES {
        return Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("the patient has more than {MAX_MERGE_STUDIES} studies: split them first"),
        ));
    }
    Ok(out)
}

/// A study of `org` the caller may reconcile, with its patient as the index shows it: 404 when
/// the organisation does not hold it or the caller cannot see it, 403 when the caller sees it
/// but may not reconcile.
async fn reconcilable_study(
    sv: &Services,
    c: &Caller,
    org: &str,
    study: &str,
) -> Result<(StudyRef, Identity), ApiError> {
    check_uid(study)?;
    let mut q =
        Query::new(Level::Study).with(Key::StudyInstanceUid, Matcher::Single(study.to_owned()));
    q.access = Some(Access::orgs([org]));
    q.limit = 1;
    let found = sv.ingestor.index().find(&q).await?;
    let missing = || {
        ApiError::new(
            ErrorKind::NotFound,
            format!("no study {study} in organisation {org}"),
        )
    };
    let Some(a) = found.first() else {
        return Err(missing());
    };
    let before = identity_of(a);
    let sref = StudyRef {
        org: org.to_owned(),
        study_uid: study.to_owned(),
        patient: (!before.patient_id.is_empty()).then(|| before.key()),
    };
    let resource = Resource::Study(sref.clone());
    // Issue 4: a study the caller cannot see is answered like a missing one.
    let sees = sv
        .auth
        .authorize(&c.principal, Action::Retrieve, &resource)
        .await
        .map_err(auth_err)?;
    if !sees.is_allowed() {
        return Err(missing());
    }
    let may = sv
        .auth
        .authorize(&c.principal, Action::Reconcile, &resource)
        .await
        .map_err(auth_err)?;
    if !may.is_allowed() {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!(
                "{} may not change patient identities in {org:?}",
                c.principal.actor.name
            ),
        ));
    }
    Ok((sref, before))
}

/// Fills the demographics `to` leaves open from the local record of its identity, if any.
async fn complete(sv: &Services, org: &str, mut to: Identity) -> Result<Identity, ApiError> {
    if to.name.is_some() && to.birth_date.is_some() && to.sex.is_some() {
        return Ok(to);
    }
    if let Some(local) = local_patient(sv, org, &to.issuer, &to.patient_id).await? {
        to.name = to.name.or(local.name);
        to.birth_date = to.birth_date.or(local.birth_date);
        to.sex = to.sex.or(local.sex);
    }
    Ok(to)
}

/// What rewriting one study did.
struct Rewritten {
    instances: usize,
    changed: usize,
}

/// Rewrites one instance to `who` and stores it through the ingest path; `false` when it
/// already carried that identity. `force`: the index shows the study under another identity
/// than the one asked for, so an instance whose bytes already carry it is rewritten anyway (a
/// peer's unqualified ID indexed as `peer:NAME`). Owned arguments: it runs in a buffered
/// stream.
async fn reassign_one(
    sv: Services,
    c: Caller,
    org: String,
    inst: StoredInstance,
    who: PatientIdentity,
    now: String,
    force: bool,
) -> Result<bool, ApiError> {
    let bytes = sv
        .ingestor
        .blobs()
        .read_range(&inst.blob_key, 0..inst.size)
        .await?;
    let out = tokio::task::spawn_blocking(move || {
        let mut obj = read_object(&bytes)?;
        let changed = if force {
            coerce_patient_forced(&mut obj, &who, MODIFYING_SYSTEM, &now)
        } else {
            coerce_patient(&mut obj, &who, MODIFYING_SYSTEM, &now)
        };
        if !changed {
            return Ok(None);
        }
        write_object(&obj).map(Some)
    })
    .await
    .map_err(|e| ApiError::new(ErrorKind::Internal, format!("rewriting: {e}")))?
    .map_err(|e: vesalius_deid::Error| {
        ApiError::new(
            e.kind(),
            format!("rewriting {}: {e}", inst.sop_instance_uid),
        )
    })?;
    let Some(out) = out else {
        return Ok(false);
    };
    let mut spool = sv.ingestor.spool()?;
    spool.write(&out)?;
    let ctx = IngestContext {
        org,
        source: "reconcile".into(),
        expected_sop_instance: Some(inst.sop_instance_uid.clone()),
        expected_study: Some(inst.study_uid.clone()),
        actor: Some(c.principal.actor.clone()),
        source_addr: c.source.clone(),
        user_agent: c.user_agent.clone(),
        ..Default::default()
    };
    sv.ingestor.ingest(spool.finish()?, &ctx).await?;
    Ok(true)
}

/// Gives every current instance of `study` in `org` the identity `who`, storing each changed
/// one through the ingest path (the old one becomes a prior version).
async fn reassign(
    sv: &Services,
    c: &Caller,
    org: &str,
    study: &str,
    who: &PatientIdentity,
    force: bool,
) -> Result<Rewritten, ApiError> {
    let scope = Scope {
        access: Some(Access::orgs([org])),
        ..Scope::study(study)
    };
    let instances = sv.ingestor.index().instances(&scope).await?;
    let total = instances.len();
    let now = crate::inbox::dicom_dt(vesalius_auth::now_ms());
    let results: Vec<Result<bool, ApiError>> = futures::stream::iter(instances)
        .map(|inst| {
            reassign_one(
                sv.clone(),
                c.clone(),
                org.to_owned(),
                inst,
                who.clone(),
                now.clone(),
                force,
            )
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut changed = 0;
    for r in results {
        changed += usize::from(r?);
    }
    Ok(Rewritten {
        instances: total,
        changed,
    })
}

/// Appends one event per study (the change is made by then: a failure is logged).
async fn audit(
    sv: &Services,
    c: &Caller,
    action: &str,
    org: &str,
    study: &str,
    after: &Identity,
    details: Value,
) {
    let mut ev = c.event(action, Outcome::Success, org, Some(study), details);
    ev.patient = Some(after.key());
    if let Err(e) = sv.auth.audit_log().append(vec![ev]).await {
        tracing::error!(error = %e, action, "patient identity audit event not written");
    }
}

/// Moves `study` (checked by [`reconcilable_study`]) from `before` to `to` and audits it.
async fn move_study(
    sv: &Services,
    c: &Caller,
    action: &str,
    org: &str,
    study: &str,
    before: &Identity,
    to: &Identity,
) -> Result<Value, ApiError> {
    let force = before.key() != to.key();
    let done = reassign(sv, c, org, study, &to.to_coerce(), force).await?;
    let details = json!({
        "before": before,
        "after": to,
        "instances": done.instances,
        "changed": done.changed,
    });
    audit(sv, c, action, org, study, to, details.clone()).await;
    let mut out = details;
    out["study_uid"] = json!(study);
    Ok(out)
}

/// `POST /api/v1/studies/{study}/link-patient`.
pub(crate) async fn link(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    Path(study): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let c = crate::caller_of(caller)?;
    let org = org_of(&sv, &c);
    let (_, before) = reconcilable_study(&sv, &c, &org, &study).await?;
    let to = body::<Identity>(&bytes)?.normalized("")?;
    let to = complete(&sv, &org, to).await?;
    let mut out = move_study(&sv, &c, "patient-link", &org, &study, &before, &to).await?;
    out["org"] = json!(org);
    Ok(Json(out).into_response())
}

/// `POST /api/v1/patients/merge`.
pub(crate) async fn merge(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let c = crate::caller_of(caller)?;
    let org = org_of(&sv, &c);
    // Organisation-level: refused alike whatever the body names, so a refusal tells nothing.
    let may = sv
        .auth
        .authorize(&c.principal, Action::Reconcile, &Resource::org(org.clone()))
        .await
        .map_err(auth_err)?;
    if !may.is_allowed() {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!(
                "{} may not merge patients in {org:?}",
                c.principal.actor.name
            ),
        ));
    }
    let m: Merge = body(&bytes)?;
    let from = m.from.normalized("from.")?;
    let into = m.into.normalized("into.")?;
    if (&from.issuer, &from.patient_id) == (&into.issuer, &into.patient_id) {
        return Err(bad("from and into are the same patient"));
    }
    let Some(target) = local_patient(&sv, &org, &into.issuer, &into.patient_id).await? else {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            // The patients named are not repeated: an answer never names another
            // organisation's patient, even one the caller typed.
            format!("the patient to merge into has no studies in organisation {org}"),
        ));
    };
    let studies = studies_of(&sv, &org, &from.issuer, &from.patient_id).await?;
    if studies.is_empty() {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            format!(
                "the patient to merge from has no studies in organisation {org} (already merged?)"
            ),
        ));
    }
    let from_identity = Identity {
        issuer: from.issuer.clone(),
        patient_id: from.patient_id.clone(),
        ..Default::default()
    };
    let mut moved = Vec::with_capacity(studies.len());
    for study in &studies {
        let before = match local_study(&sv, &org, study).await? {
            Some(b) => b,
            None => from_identity.clone(),
        };
        moved.push(move_study(&sv, &c, "patient-merge", &org, study, &before, &target).await?);
    }
    Ok(Json(json!({
        "org": org,
        "from": from_identity,
        "into": target,
        "studies": moved,
    }))
    .into_response())
}

/// The identity a study of `org` shows now.
async fn local_study(sv: &Services, org: &str, study: &str) -> Result<Option<Identity>, ApiError> {
    let mut q =
        Query::new(Level::Study).with(Key::StudyInstanceUid, Matcher::Single(study.to_owned()));
    q.access = Some(Access::orgs([org]));
    q.limit = 1;
    Ok(sv.ingestor.index().find(&q).await?.first().map(identity_of))
}

/// `POST /api/v1/patients/split`.
pub(crate) async fn split(
    State(sv): State<Services>,
    caller: Option<Extension<Caller>>,
    bytes: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let c = crate::caller_of(caller)?;
    let org = org_of(&sv, &c);
    let s: Split = body(&bytes)?;
    let mut uids: Vec<String> = s.study_uids.iter().map(|u| u.trim().to_owned()).collect();
    uids.sort();
    uids.dedup();
    if uids.is_empty() || uids.len() > MAX_SPLIT_STUDIES {
        return Err(bad(format!(
            "study_uids: between 1 and {MAX_SPLIT_STUDIES} Study Instance UIDs"
        )));
    }
    for u in &uids {
        check_uid(u)?;
    }
    let to = s.to.normalized("to.")?;
    // Every study is checked before any changes.
    let mut checked = Vec::with_capacity(uids.len());
    for u in &uids {
        checked.push(reconcilable_study(&sv, &c, &org, u).await?);
    }
    let to = complete(&sv, &org, to).await?;
    let mut moved = Vec::with_capacity(checked.len());
    for (sref, before) in &checked {
        moved.push(move_study(&sv, &c, "patient-split", &org, &sref.study_uid, before, &to).await?);
    }
    Ok(Json(json!({ "org": org, "to": to, "studies": moved })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_checked_and_normalized() {
        let ok = Identity {
            issuer: " NORTH ".into(),
            patient_id: " MRN1 ".into(),
            name: Some("Doe^Jane".into()),
            birth_date: Some("20000229".into()),
            sex: Some("f".into()),
        }
        .normalized("")
        .unwrap();
        assert_eq!(ok.key(), ("NORTH".into(), "MRN1".into()));
        assert_eq!(ok.sex.as_deref(), Some("F"));
        let with = |f: &dyn Fn(&mut Identity)| {
            let mut i = Identity {
                patient_id: "MRN1".into(),
                ..Default::default()
            };
            f(&mut i);
            i.normalized("").map(|_| ()).map_err(|e| e.message)
        };
        assert!(with(&|_| {}).is_ok());
        assert!(with(&|i| i.patient_id = "  ".into()).is_err());
        assert!(with(&|i| i.patient_id = "A\\B".into()).is_err());
        assert!(with(&|i| i.patient_id = "x".repeat(65)).is_err());
        assert!(with(&|i| i.issuer = "tab\there".into()).is_err());
        assert!(with(&|i| i.birth_date = Some("20010229".into())).is_err());
        assert!(with(&|i| i.birth_date = Some("1980-01-02".into())).is_err());
        assert!(with(&|i| i.birth_date = Some(String::new())).is_ok());
        assert!(with(&|i| i.sex = Some("X".into())).is_err());
        assert!(with(&|i| i.name = Some("a=b=c=d".into())).is_err());
        assert!(with(&|i| i.name = Some("Müller^Zoë".into())).is_ok());
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(body::<Identity>(br#"{"patient_id": "1", "patientid": "2"}"#).is_err());
        assert!(body::<Identity>(br#"{"issuer": "X"}"#).is_err());
        assert!(body::<Merge>(br#"{"from": {"patient_id": "1"}}"#).is_err());
    }

    #[test]
    fn person_names_from_dicom_json() {
        let mut a = Answer::default();
        a.merge_text(
            r#"{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}]}}"#,
        );
        assert_eq!(pn_text(&a), "Yamada^Tarou=山田^太郎");
        assert_eq!(pn_text(&Answer::default()), "");
    }
}
