//! Audit records as FHIR R4 `AuditEvent` resources (for export to a FHIR audit repository or a
//! SIEM), following the DICOM audit vocabulary where it fits (PS3.15 A.5, PS3.16 CID 400-404)
//! and the IHE BALP / ATNA conventions for patients and studies:
//!
//! - `type` / `subtype`: DCM event ids and type codes (`110114` User Authentication with
//!   `110122` Login, `110103` DICOM Instances Accessed, `110113` Security Alert with `110127`
//!   Emergency Override Started for break-glass, …); see [`event_type`].
//! - `action`: C/R/U/D/E; `outcome`: `0` success, `4` denied (minor failure), `8` failure.
//! - `agent`: the actor (user, token, AE title, link) as requestor, with the source address.
//! - `source`: this site, observer `Vesalius`, type `4` application server.
//! - `entity`: the patient (type 1 person, role 1 patient), the study (type 2 system object,
//!   role 3 report, identifier `urn:dicom:uid` / `urn:oid:…` typed DCM 110180), the owning
//!   organisation, and the event details with the record's place in the hash chain.
//!
//! FHIR forbids empty strings, so absent values are left out rather than written empty.

use serde_json::{Map, Value as Json, json};
use vesalius_store::audit::{AuditRecord, Outcome};

/// The DICOM controlled terminology.
pub const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";

/// A DCM code with its meaning.
pub type Code = (&'static str, &'static str);

/// The DICOM audit event id and, where one fits, type code of an action.
pub fn event_type(action: &str) -> (Code, Option<Code>) {
    const AUTH: Code = ("110114", "User Authentication");
    const ALERT: Code = ("110113", "Security Alert");
    match action {
        "login" | "login-failed" | "login-locked" | "setup-complete" => {
            (AUTH, Some(("110122", "Login")))
        }
        "logout" => (AUTH, Some(("110123", "Logout"))),
        "query" => (("110112", "Query"), None),
        "retrieve" | "link-use" => (("110103", "DICOM Instances Accessed"), None),
        "store" => (("110104", "DICOM Instances Transferred"), None),
        "upload" => (("110107", "Import"), None),
        "delete" => (("110105", "DICOM Study Deleted"), None),
        "export" => (("110106", "Export"), None),
        "break-glass" => (ALERT, Some(("110127", "Emergency Override Started"))),
        "share-create" | "share-revoke" | "upload-link-create" | "grant-create"
        | "grant-revoke" => (
            ALERT,
            Some(("110135", "Object Security Attributes Changed")),
        ),
        "user-create" | "password-change" | "token-create" | "token-revoke" | "admin-change" => {
            (ALERT, Some(("110137", "User Security Attributes Changed")))
        }
        "setup-start" => (ALERT, Some(("110129", "Security Configuration"))),
        "association-rejected" => (ALERT, Some(("110126", "Node Authentication"))),
        "audit-read" => (("110101", "Audit Log Used"), None),
        _ => (("110100", "Application Activity"), None),
    }
}

/// The FHIR `AuditEvent.action` code (C create, R read, U update, D delete, E execute).
pub fn action_code(action: &str) -> &'static str {
    match action {
        "retrieve" | "link-use" | "export" | "audit-read" => "R",
        "store" | "upload" | "share-create" | "upload-link-create" | "grant-create"
        | "token-create" | "user-create" => "C",
        "delete" => "D",
        "share-revoke" | "grant-revoke" | "token-revoke" | "password-change" | "admin-change" => {
            "U"
        }
        _ => "E",
    }
}

fn coding(system: &str, (code, display): Code) -> Json {
    json!({ "system": system, "code": code, "display": display })
}

/// Inserts `key: value` when `value` is not empty.
fn put_str(m: &mut Map<String, Json>, key: &str, value: &str) {
    if !value.is_empty() {
        m.insert(key.to_owned(), Json::String(value.to_owned()));
    }
}

/// An RFC 3339 UTC instant with milliseconds (FHIR `instant`).
pub fn instant(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant, "chrono-Compatible Low-Level Date
    // Algorithms").
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// The record as a FHIR R4 `AuditEvent`; `site` names this site (`source.site`).
pub fn audit_event(record: &AuditRecord, site: &str) -> Json {
    let e = &record.event;
    let (ty, sub) = event_type(&e.action);
    let mut ev = Map::new();
    ev.insert("resourceType".into(), json!("AuditEvent"));
    ev.insert("id".into(), json!(format!("vesalius-{}", record.seq)));
    ev.insert("type".into(), coding(DCM, ty));
    if let Some(sub) = sub {
        ev.insert("subtype".into(), json!([coding(DCM, sub)]));
    }
    ev.insert("action".into(), json!(action_code(&e.action)));
    ev.insert("recorded".into(), json!(instant(e.time_ms)));
    let outcome = match e.outcome {
        Outcome::Success => "0",
        Outcome::Denied => "4",
        Outcome::Failure => "8",
    };
    ev.insert("outcome".into(), json!(outcome));
    let mut desc = e.action.clone();
    if let Some(reason) = e.details.get("reason").and_then(Json::as_str)
        && e.outcome != Outcome::Success
    {
        desc = format!("{desc}: {reason}");
    }
    ev.insert("outcomeDesc".into(), json!(desc));
    if e.action == "break-glass" {
        ev.insert(
            "purposeOfEvent".into(),
            json!([{ "coding": [coding(ACT_REASON, ("BTG", "break the glass"))] }]),
        );
    }
    ev.insert("agent".into(), json!([agent(record)]));
    let mut source = Map::new();
    put_str(&mut source, "site", site);
    source.insert("observer".into(), json!({ "display": "Vesalius" }));
    source.insert(
        "type".into(),
        json!([coding(SOURCE_TYPE, ("4", "Application Server"))]),
    );
    ev.insert("source".into(), Json::Object(source));
    ev.insert("entity".into(), Json::Array(entities(record)));
    Json::Object(ev)
}

fn agent(record: &AuditRecord) -> Json {
    let a = &record.event.actor;
    let kind = serde_json::to_value(a.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "anonymous".into());
    let mut who = Map::new();
    let id = if a.id.is_empty() { &a.name } else { &a.id };
    if !id.is_empty() {
        who.insert(
            "identifier".into(),
            json!({ "system": format!("urn:vesalius:{kind}"), "value": id }),
        );
    }
    who.insert(
        "display".into(),
        json!(if a.name.is_empty() {
            kind.as_str()
        } else {
            a.name.as_str()
        }),
    );
    let mut agent = Map::new();
    agent.insert(
        "type".into(),
        json!({ "coding": [coding(DCM, ("110153", "Source Role ID"))] }),
    );
    if !a.role.is_empty() {
        agent.insert("role".into(), json!([{ "text": a.role }]));
    }
    agent.insert("who".into(), Json::Object(who));
    put_str(&mut agent, "name", &a.name);
    agent.insert("requestor".into(), json!(true));
    let ip = crate::net::source_ip(&record.event.source)
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| record.event.source.clone());
    if !ip.is_empty() {
        agent.insert("network".into(), json!({ "address": ip, "type": "2" }));
    }
    Json::Object(agent)
}

fn entities(record: &AuditRecord) -> Vec<Json> {
    let e = &record.event;
    let mut out = Vec::new();
    if let Some((issuer, patient_id)) = &e.patient
        && !patient_id.is_empty()
    {
        let mut identifier = Map::new();
        identifier.insert("value".into(), json!(patient_id));
        if !issuer.is_empty() {
            identifier.insert("assigner".into(), json!({ "display": issuer }));
        }
        out.push(json!({
            "what": { "identifier": identifier },
            "type": coding(ENTITY_TYPE, ("1", "Person")),
            "role": coding(OBJECT_ROLE, ("1", "Patient")),
        }));
    }
    if let Some(uid) = e.study_uid.as_deref().filter(|u| !u.is_empty()) {
        out.push(json!({
            "what": { "identifier": {
                "type": { "coding": [coding(DCM, ("110180", "Study Instance UID"))] },
                "system": "urn:dicom:uid",
                "value": format!("urn:oid:{uid}"),
            }},
            "type": coding(ENTITY_TYPE, ("2", "System Object")),
            "role": coding(OBJECT_ROLE, ("3", "Report")),
        }));
    }
    if !e.org.is_empty() {
        out.push(json!({
            "what": { "identifier": { "system": "urn:vesalius:org", "value": e.org } },
            "type": coding(ENTITY_TYPE, ("3", "Organization")),
        }));
    }
    let mut detail = vec![
        json!({ "type": "vesalius-action", "valueString": e.action }),
        json!({ "type": "chain", "valueString": format!("seq={} hash={}", record.seq, record.hash) }),
    ];
    let details = e.details.to_string();
    if !(e.details.is_null() || details == "{}") {
        detail.push(json!({ "type": "details", "valueString": details }));
    }
    if !e.user_agent.is_empty() {
        detail.push(json!({ "type": "user-agent", "valueString": e.user_agent }));
    }
    out.push(json!({
        "type": coding(ENTITY_TYPE, ("4", "Other")),
        "name": "vesalius audit record",
        "detail": detail,
    }));
    out
}

/// Records as a FHIR `Bundle` of type `collection`.
pub fn bundle(records: &[AuditRecord], site: &str) -> Json {
    let entries: Vec<Json> = records
        .iter()
        .map(|r| json!({ "resource": audit_event(r, site) }))
        .collect();
    json!({ "resourceType": "Bundle", "type": "collection", "entry": entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesalius_store::audit::{Actor, ActorKind, AuditEvent, GENESIS_HASH, chain_hash};

    fn record(action: &str, outcome: Outcome, actor: ActorKind) -> AuditRecord {
        let event = AuditEvent {
            time_ms: 1_700_000_000_123,
            actor: Actor {
                kind: actor,
                id: if actor == ActorKind::Anonymous {
                    String::new()
                } else {
                    "u-1".into()
                },
                name: "alice".into(),
                org: "st-marys".into(),
                role: if actor == ActorKind::User {
                    "clinician".into()
                } else {
                    String::new()
                },
            },
            action: action.into(),
            outcome,
            org: "st-marys".into(),
            patient: Some(("HOSP".into(), "12345".into())),
            study_uid: Some("1.2.826.0.1.3680043.8.498.1".into()),
            source: "10.0.0.1:5555".into(),
            user_agent: "Mozilla/5.0".into(),
            details: json!({ "reason": "stroke thrombolysis decision" }),
        };
        AuditRecord {
            seq: 7,
            prev_hash: GENESIS_HASH.into(),
            hash: chain_hash(7, GENESIS_HASH, &event),
            event,
        }
    }

    /// Every action the product writes, as (action, outcome, actor kind).
    fn samples() -> Vec<AuditRecord> {
        use ActorKind::*;
        [
            ("login", Outcome::Success, User),
            ("login-failed", Outcome::Denied, Anonymous),
            ("login-locked", Outcome::Denied, Anonymous),
            ("logout", Outcome::Success, User),
            ("query", Outcome::Success, Token),
            ("retrieve", Outcome::Success, User),
            ("store", Outcome::Success, Ae),
            ("upload", Outcome::Success, Link),
            ("delete", Outcome::Success, User),
            ("export", Outcome::Failure, User),
            ("break-glass", Outcome::Success, User),
            ("share-create", Outcome::Success, User),
            ("link-use", Outcome::Denied, Link),
            ("token-create", Outcome::Success, User),
            ("association-rejected", Outcome::Denied, Anonymous),
            ("audit-read", Outcome::Success, User),
            ("setup-start", Outcome::Success, System),
        ]
        .into_iter()
        .map(|(a, o, k)| record(a, o, k))
        .collect()
    }

    fn no_empty_strings(v: &Json, path: &str) {
        match v {
            Json::String(s) => assert!(!s.is_empty(), "empty string at {path}"),
            Json::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, x)| no_empty_strings(x, &format!("{path}[{i}]"))),
            Json::Object(o) => o
                .iter()
                .for_each(|(k, x)| no_empty_strings(x, &format!("{path}.{k}"))),
            _ => {}
        }
    }

    #[test]
    fn instants() {
        assert_eq!(instant(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(instant(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(instant(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(instant(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn break_glass_event() {
        let ev = audit_event(
            &record("break-glass", Outcome::Success, ActorKind::User),
            "Site A",
        );
        assert_eq!(ev["resourceType"], "AuditEvent");
        assert_eq!(ev["id"], "vesalius-7");
        assert_eq!(ev["type"]["code"], "110113");
        assert_eq!(ev["subtype"][0]["code"], "110127");
        assert_eq!(ev["purposeOfEvent"][0]["coding"][0]["code"], "BTG");
        assert_eq!(ev["outcome"], "0");
        assert_eq!(ev["recorded"], "2023-11-14T22:13:20.123Z");
        assert_eq!(ev["agent"][0]["network"]["address"], "10.0.0.1");
        assert_eq!(ev["agent"][0]["requestor"], true);
        assert_eq!(ev["source"]["site"], "Site A");
        let entities = ev["entity"].as_array().unwrap();
        assert_eq!(entities[0]["what"]["identifier"]["value"], "12345");
        assert_eq!(entities[0]["role"]["code"], "1");
        assert_eq!(
            entities[1]["what"]["identifier"]["value"],
            "urn:oid:1.2.826.0.1.3680043.8.498.1"
        );
        assert!(
            entities[3]["detail"][1]["valueString"]
                .as_str()
                .unwrap()
                .starts_with("seq=7 hash=")
        );
    }

    #[test]
    fn outcomes_and_codes() {
        for r in samples() {
            let ev = audit_event(&r, "s");
            no_empty_strings(&ev, &r.event.action);
            let want = match r.event.outcome {
                Outcome::Success => "0",
                Outcome::Denied => "4",
                Outcome::Failure => "8",
            };
            assert_eq!(ev["outcome"], want);
            assert!(["C", "R", "U", "D", "E"].contains(&ev["action"].as_str().unwrap()));
        }
        assert_eq!(event_type("login").1.unwrap().0, "110122");
        assert_eq!(event_type("retrieve").0.0, "110103");
        assert_eq!(event_type("something-new").0.0, "110100");
    }

    /// Writes sample resources for external validation (PyPI `fhir.resources`, see
    /// `tests/interop/test_fhir_audit.py`) when `VESALIUS_FHIR_OUT` names a directory.
    #[test]
    fn fhir_samples() {
        let Some(out) = std::env::var_os("VESALIUS_FHIR_OUT") else {
            return;
        };
        let out = std::path::PathBuf::from(out);
        std::fs::create_dir_all(&out).unwrap();
        let records = samples();
        for r in &records {
            let path = out.join(format!("audit-event-{}.json", r.event.action));
            let text = serde_json::to_string_pretty(&audit_event(r, "Vesalius test site")).unwrap();
            std::fs::write(&path, text).unwrap();
        }
        let b = serde_json::to_string_pretty(&bundle(&records, "Vesalius test site")).unwrap();
        std::fs::write(out.join("bundle.json"), b).unwrap();
        println!(
            "wrote {} FHIR AuditEvent samples to {}",
            records.len(),
            out.display()
        );
    }
}
