//! Every action's codes, outcomes, participants, escaping and the syslog header. Messages are
//! read back with a small strict XML parser (well-formedness: one root, balanced tags, quoted
//! and unique attributes, only the five predefined entities and character references).

use std::collections::BTreeMap;

use serde_json::json;
use vesalius_store::audit::{Actor, ActorKind, GENESIS_HASH, chain_hash};

use super::*;

/// An element read back.
#[derive(Debug, Default)]
struct El {
    name: String,
    attrs: BTreeMap<String, String>,
    children: Vec<El>,
    text: String,
}

impl El {
    fn attr(&self, k: &str) -> Option<&str> {
        self.attrs.get(k).map(String::as_str)
    }
    fn all(&self, name: &str) -> Vec<&El> {
        self.children.iter().filter(|c| c.name == name).collect()
    }
    fn one(&self, name: &str) -> &El {
        let v = self.all(name);
        assert_eq!(v.len(), 1, "{name} in {}", self.name);
        v[0]
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';').expect("entity ends with ;") + i;
        let ent = &rest[i + 1..end];
        let c = match ent {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let n = ent.strip_prefix('#').expect("known entity");
                let n = match n.strip_prefix('x') {
                    Some(h) => u32::from_str_radix(h, 16).unwrap(),
                    None => n.parse().unwrap(),
                };
                char::from_u32(n).unwrap()
            }
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn xml_char_ok(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || ((c as u32) >= 0x20 && c != '\u{fffe}' && c != '\u{ffff}')
}

fn name_end(s: &str) -> usize {
    s.find(|c: char| !(c.is_alphanumeric() || matches!(c, '-' | '_' | ':' | '.')))
        .unwrap_or(s.len())
}

/// Parses a document with an XML declaration and one root element; panics when not
/// well-formed.
fn parse(doc: &str) -> El {
    assert!(doc.chars().all(xml_char_ok), "a character XML forbids");
    let rest = doc
        .strip_prefix(r#"<?xml version="1.0" encoding="UTF-8"?>"#)
        .expect("XML declaration");
    let (root, tail) = element(rest);
    assert!(tail.trim().is_empty(), "content after the root: {tail:?}");
    root
}

fn element(s: &str) -> (El, &str) {
    let s = s.strip_prefix('<').expect("element starts with <");
    let n = name_end(s);
    assert!(n > 0, "element name");
    let mut el = El {
        name: s[..n].to_owned(),
        ..Default::default()
    };
    let mut s = &s[n..];
    loop {
        let t = s.trim_start();
        if let Some(r) = t.strip_prefix("/>") {
            return (el, r);
        }
        if let Some(r) = t.strip_prefix('>') {
            s = r;
            break;
        }
        assert!(t.len() < s.len(), "whitespace before an attribute");
        let n = name_end(t);
        assert!(n > 0, "attribute name in {}", el.name);
        let key = &t[..n];
        let r = t[n..].strip_prefix("=\"").expect("attribute =\"");
        let end = r.find('"').expect("closing quote");
        let raw = &r[..end];
        assert!(!raw.contains('<'), "< in an attribute");
        let prev = el.attrs.insert(key.to_owned(), unescape(raw));
        assert!(prev.is_none(), "duplicate attribute {key}");
        s = &r[end + 1..];
    }
    loop {
        let lt = s.find('<').expect("closing tag");
        let raw = &s[..lt];
        el.text.push_str(&unescape(raw));
        s = &s[lt..];
        if let Some(r) = s.strip_prefix("</") {
            let r = r.strip_prefix(el.name.as_str()).expect("matching end tag");
            let r = r.strip_prefix('>').expect("end tag >");
            return (el, r);
        }
        let (child, r) = element(s);
        el.children.push(child);
        s = r;
    }
}

fn record(action: &str, outcome: Outcome, kind: ActorKind) -> AuditRecord {
    let event = AuditEvent {
        time_ms: 1_700_000_000_123,
        actor: Actor {
            kind,
            id: if kind == ActorKind::Anonymous {
                String::new()
            } else {
                "u-1".into()
            },
            name: "alice".into(),
            org: "st-marys".into(),
            role: if kind == ActorKind::User {
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
        details: json!({ "reason": "bad-password" }),
    };
    AuditRecord {
        seq: 7,
        prev_hash: GENESIS_HASH.into(),
        hash: chain_hash(7, GENESIS_HASH, &event),
        event,
    }
}

fn source() -> AuditSource {
    AuditSource {
        id: "Vesalius St Mary's".into(),
        enterprise_site: Some("St Mary's".into()),
        ae_title: Some("VESALIUS".into()),
        host: Some("pacs.example.org".into()),
    }
}

fn message(r: &AuditRecord) -> El {
    parse(&audit_message(r, &source()))
}

/// (action, details, EventID, EventTypeCode, EventActionCode) for every action we write.
#[test]
fn every_action_maps_to_its_dicom_event() {
    let table: &[(&str, Json, &str, Option<&str>, &str)] = &[
        ("login", json!({}), "110114", Some("110122"), "E"),
        ("login-failed", json!({}), "110114", Some("110122"), "E"),
        ("login-locked", json!({}), "110114", Some("110122"), "E"),
        ("logout", json!({}), "110114", Some("110123"), "E"),
        ("query", json!({}), "110112", None, "E"),
        ("retrieve", json!({}), "110103", None, "R"),
        (
            "retrieve",
            json!({"operation": "C-MOVE", "destination": "WS1"}),
            "110104",
            None,
            "R",
        ),
        (
            "retrieve",
            json!({"operation": "C-GET"}),
            "110104",
            None,
            "R",
        ),
        ("link-use", json!({}), "110103", None, "R"),
        ("store", json!({}), "110104", None, "C"),
        ("storage-commitment", json!({}), "110104", None, "R"),
        ("upload", json!({}), "110107", None, "C"),
        ("inbox-accept", json!({}), "110107", None, "C"),
        ("inbox-reject", json!({}), "110105", None, "D"),
        (
            "upload-link-revoke",
            json!({}),
            "110113",
            Some("110135"),
            "E",
        ),
        ("export", json!({}), "110106", None, "R"),
        ("delete", json!({}), "110105", None, "D"),
        ("delete", json!({"level": "series"}), "110103", None, "D"),
        ("audit-read", json!({}), "110101", None, "R"),
        ("break-glass", json!({}), "110113", Some("110127"), "E"),
        ("share-create", json!({}), "110113", Some("110135"), "E"),
        ("share-revoke", json!({}), "110113", Some("110135"), "E"),
        (
            "upload-link-create",
            json!({}),
            "110113",
            Some("110135"),
            "E",
        ),
        ("grant-create", json!({}), "110113", Some("110135"), "E"),
        ("grant-revoke", json!({}), "110113", Some("110135"), "E"),
        ("user-create", json!({}), "110113", Some("110137"), "E"),
        ("password-change", json!({}), "110113", Some("110137"), "E"),
        ("token-create", json!({}), "110113", Some("110137"), "E"),
        ("token-revoke", json!({}), "110113", Some("110137"), "E"),
        ("setup-complete", json!({}), "110113", Some("110137"), "E"),
        (
            "admin-change",
            json!({"change": "membership-add"}),
            "110113",
            Some("110136"),
            "E",
        ),
        (
            "admin-change",
            json!({"change": "user-disable"}),
            "110113",
            Some("110137"),
            "E",
        ),
        (
            "admin-change",
            json!({"change": "password-reset"}),
            "110113",
            Some("110137"),
            "E",
        ),
        (
            "admin-change",
            json!({"change": "ae-add"}),
            "110113",
            Some("110129"),
            "E",
        ),
        (
            "admin-change",
            json!({"change": "org-create"}),
            "110113",
            Some("110129"),
            "E",
        ),
        ("setup-start", json!({}), "110113", Some("110129"), "E"),
        (
            "association-rejected",
            json!({}),
            "110113",
            Some("110126"),
            "E",
        ),
        ("something-new", json!({}), "110100", None, "E"),
    ];
    for (action, details, id, ty, act) in table {
        let mut r = record(action, Outcome::Success, ActorKind::User);
        r.event.details = details.clone();
        let what = format!("{action} {details}");
        let codes = event_codes(&r.event);
        assert_eq!(codes.event_id.0, *id, "{what}");
        assert_eq!(codes.event_type.map(|t| t.0), *ty, "{what}");
        assert_eq!(codes.action.as_str(), *act, "{what}");
        // The same codes in the XML.
        let m = message(&r);
        assert_eq!(m.name, "AuditMessage");
        let ev = m.one("EventIdentification");
        assert_eq!(ev.attr("EventActionCode"), Some(*act), "{what}");
        assert_eq!(ev.attr("EventDateTime"), Some("2023-11-14T22:13:20.123Z"));
        assert_eq!(ev.attr("EventOutcomeIndicator"), Some("0"));
        let eid = ev.one("EventID");
        assert_eq!(eid.attr("csd-code"), Some(*id), "{what}");
        assert_eq!(eid.attr("codeSystemName"), Some("DCM"));
        assert_eq!(eid.attr("originalText"), Some(codes.event_id.1));
        let types = ev.all("EventTypeCode");
        assert_eq!(
            types.first().and_then(|t| t.attr("csd-code")),
            *ty,
            "{what}"
        );
        assert!(ev.one("EventOutcomeDescription").text.starts_with(*action));
        // Schema order: EventID, EventTypeCode*, EventOutcomeDescription.
        let order: Vec<&str> = ev.children.iter().map(|c| c.name.as_str()).collect();
        let want: Vec<&str> = std::iter::once("EventID")
            .chain(ty.map(|_| "EventTypeCode"))
            .chain(std::iter::once("EventOutcomeDescription"))
            .collect();
        assert_eq!(order, want, "{what}");
        let kids: Vec<&str> = m.children.iter().map(|c| c.name.as_str()).collect();
        let first_source = kids
            .iter()
            .position(|k| *k == "AuditSourceIdentification")
            .unwrap();
        assert_eq!(kids[0], "EventIdentification");
        assert!(
            kids[1..first_source]
                .iter()
                .all(|k| *k == "ActiveParticipant")
        );
        assert!(
            kids[first_source + 1..]
                .iter()
                .all(|k| *k == "ParticipantObjectIdentification")
        );
        // Exactly one requestor.
        let requestors = m
            .all("ActiveParticipant")
            .iter()
            .filter(|p| p.attr("UserIsRequestor") == Some("true"))
            .count();
        assert_eq!(requestors, 1, "{what}");
    }
}

#[test]
fn outcomes_and_severities() {
    let cases = [
        ("login", Outcome::Success, 0, SEVERITY_NOTICE),
        ("login-failed", Outcome::Denied, 4, SEVERITY_WARNING),
        ("login-locked", Outcome::Denied, 8, SEVERITY_WARNING),
        ("export", Outcome::Failure, 8, SEVERITY_WARNING),
        ("store", Outcome::Denied, 4, SEVERITY_WARNING),
        ("break-glass", Outcome::Success, 0, SEVERITY_WARNING),
    ];
    for (action, outcome, indicator, sev) in cases {
        let r = record(action, outcome, ActorKind::Anonymous);
        assert_eq!(outcome_indicator(&r.event), indicator, "{action}");
        assert_eq!(severity(&r.event), sev, "{action}");
        let m = message(&r);
        let ev = m.one("EventIdentification");
        assert_eq!(
            ev.attr("EventOutcomeIndicator"),
            Some(indicator.to_string().as_str())
        );
        let desc = &ev.one("EventOutcomeDescription").text;
        if outcome == Outcome::Success {
            assert_eq!(desc, action);
        } else {
            assert_eq!(desc, &format!("{action}: bad-password"));
        }
    }
}

#[test]
fn participants_of_a_failed_login() {
    let r = record("login-failed", Outcome::Denied, ActorKind::Anonymous);
    let m = message(&r);
    let ps = m.all("ActiveParticipant");
    assert_eq!(ps.len(), 2);
    // The username tried stands in for the missing id.
    assert_eq!(ps[0].attr("UserID"), Some("alice"));
    assert_eq!(ps[0].attr("UserName"), Some("alice"));
    assert_eq!(ps[0].attr("UserIsRequestor"), Some("true"));
    assert_eq!(ps[0].attr("NetworkAccessPointID"), Some("10.0.0.1"));
    assert_eq!(ps[0].attr("NetworkAccessPointTypeCode"), Some("2"));
    assert!(ps[0].attr("AlternativeUserID").is_none());
    assert!(ps[0].children.is_empty());
    assert_eq!(ps[1].attr("UserID"), Some("Vesalius St Mary's"));
    assert_eq!(ps[1].attr("AlternativeUserID"), Some("AETITLES=VESALIUS"));
    assert_eq!(ps[1].attr("UserIsRequestor"), Some("false"));
    assert_eq!(ps[1].attr("NetworkAccessPointID"), Some("pacs.example.org"));
    assert_eq!(ps[1].attr("NetworkAccessPointTypeCode"), Some("1"));
    assert_eq!(ps[1].one("RoleIDCode").attr("csd-code"), Some("110150"));
    let src = m.one("AuditSourceIdentification");
    assert_eq!(src.attr("AuditSourceID"), Some("Vesalius St Mary's"));
    assert_eq!(src.attr("AuditEnterpriseSiteID"), Some("St Mary's"));
    assert_eq!(src.one("AuditSourceTypeCode").attr("csd-code"), Some("4"));
    // Nobody at all: still a UserID.
    let mut r = r;
    r.event.actor.name.clear();
    r.event.source.clear();
    let m = message(&r);
    let p = &m.all("ActiveParticipant")[0];
    assert_eq!(p.attr("UserID"), Some("anonymous"));
    assert!(p.attr("NetworkAccessPointID").is_none());
    assert!(p.attr("NetworkAccessPointTypeCode").is_none());
}

#[test]
fn patient_and_study_objects() {
    let m = message(&record("retrieve", Outcome::Success, ActorKind::User));
    let objs = m.all("ParticipantObjectIdentification");
    assert_eq!(objs.len(), 2);
    let patient = objs[0];
    assert_eq!(patient.attr("ParticipantObjectID"), Some("12345^^^HOSP"));
    assert_eq!(patient.attr("ParticipantObjectTypeCode"), Some("1"));
    assert_eq!(patient.attr("ParticipantObjectTypeCodeRole"), Some("1"));
    let t = patient.one("ParticipantObjectIDTypeCode");
    assert_eq!(t.attr("csd-code"), Some("2"));
    assert_eq!(t.attr("originalText"), Some("Patient Number"));
    let study = objs[1];
    assert_eq!(
        study.attr("ParticipantObjectID"),
        Some("1.2.826.0.1.3680043.8.498.1")
    );
    assert_eq!(study.attr("ParticipantObjectTypeCode"), Some("2"));
    assert_eq!(study.attr("ParticipantObjectTypeCodeRole"), Some("3"));
    let t = study.one("ParticipantObjectIDTypeCode");
    assert_eq!(t.attr("csd-code"), Some("110180"));
    assert_eq!(t.attr("codeSystemName"), Some("DCM"));
    assert_eq!(t.attr("originalText"), Some("Study Instance UID"));
    // The reader received the instances; we sent them; the role-based access role is there.
    let ps = m.all("ActiveParticipant");
    let roles = |p: &El| -> Vec<String> {
        p.all("RoleIDCode")
            .iter()
            .map(|r| r.attr("csd-code").unwrap().to_owned())
            .collect()
    };
    assert_eq!(roles(ps[0]), ["110152", "clinician"]);
    assert_eq!(roles(ps[1]), ["110153"]);
    // No patient without an id; no issuer, no CX suffix.
    let mut r = record("retrieve", Outcome::Success, ActorKind::User);
    r.event.patient = Some(("".into(), "P1".into()));
    let m = message(&r);
    assert_eq!(
        m.all("ParticipantObjectIdentification")[0].attr("ParticipantObjectID"),
        Some("P1")
    );
    r.event.patient = Some(("HOSP".into(), "".into()));
    r.event.study_uid = None;
    assert!(
        message(&r)
            .all("ParticipantObjectIdentification")
            .is_empty()
    );
}

#[test]
fn store_and_move_participants() {
    let mut r = record("store", Outcome::Success, ActorKind::Ae);
    r.event.actor.id = "CT1".into();
    r.event.actor.name = "CT1".into();
    let m = message(&r);
    let ps = m.all("ActiveParticipant");
    assert_eq!(ps[0].attr("UserID"), Some("CT1"));
    assert_eq!(ps[0].attr("AlternativeUserID"), Some("AETITLES=CT1"));
    assert_eq!(ps[0].one("RoleIDCode").attr("csd-code"), Some("110153"));
    assert_eq!(ps[1].one("RoleIDCode").attr("csd-code"), Some("110152"));

    let mut r = record("retrieve", Outcome::Success, ActorKind::Ae);
    r.event.details = json!({ "operation": "C-MOVE", "destination": "WS<1>" });
    let m = message(&r);
    let ps = m.all("ActiveParticipant");
    assert_eq!(ps.len(), 3);
    // The mover asked; we sent; the destination received.
    assert!(ps[0].all("RoleIDCode").is_empty());
    assert_eq!(ps[1].one("RoleIDCode").attr("csd-code"), Some("110153"));
    assert_eq!(ps[2].attr("UserID"), Some("WS<1>"));
    assert_eq!(ps[2].attr("AlternativeUserID"), Some("AETITLES=WS<1>"));
    assert_eq!(ps[2].attr("UserIsRequestor"), Some("false"));
    assert_eq!(ps[2].one("RoleIDCode").attr("csd-code"), Some("110152"));
}

#[test]
fn query_object_carries_the_query() {
    let mut r = record("query", Outcome::Success, ActorKind::Ae);
    r.event.details = json!({
        "level": "STUDY",
        "keys": { "00100010": "DOE^J*" },
        "answers": 3,
        "model": "patient-root",
    });
    let m = message(&r);
    let objs = m.all("ParticipantObjectIdentification");
    let q = objs.last().unwrap();
    assert_eq!(q.attr("ParticipantObjectID"), Some(PATIENT_ROOT_FIND));
    assert_eq!(
        q.one("ParticipantObjectIDTypeCode").attr("csd-code"),
        Some("110181")
    );
    let b = BASE64
        .decode(q.one("ParticipantObjectQuery").text.as_bytes())
        .unwrap();
    let v: Json = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        v,
        json!({ "level": "STUDY", "keys": { "00100010": "DOE^J*" } })
    );
    // QIDO-RS (params, no model) is reported as Study Root.
    r.event.details = json!({ "level": "study", "params": [["PatientID", "1"]] });
    let m = message(&r);
    let q = *m.all("ParticipantObjectIdentification").last().unwrap();
    assert_eq!(q.attr("ParticipantObjectID"), Some(STUDY_ROOT_FIND));
}

#[test]
fn hostile_text_is_escaped() {
    let nasty = "a&b<c>d\"e'f\tg\nh\ri\u{0}j\u{1b}k\u{fffe}l]m\\n é 東";
    let mut r = record("login-failed", Outcome::Denied, ActorKind::Anonymous);
    r.event.actor.name = nasty.into();
    r.event.source = nasty.into();
    r.event.actor.role = nasty.into();
    r.event.patient = Some((nasty.into(), nasty.into()));
    r.event.study_uid = Some(nasty.into());
    r.event.details = json!({ "reason": nasty, "change": "</EventOutcomeDescription>" });
    let text = audit_message(&r, &source());
    assert!(!text.contains('\u{0}') && !text.contains('\u{1b}'));
    assert!(!text.contains('\n'), "one line");
    let m = parse(&text);
    let cleaned = "a&b<c>d\"e'f\tg\nh\ri\u{fffd}j\u{fffd}k\u{fffd}l]m\\n é 東";
    let p = m.all("ActiveParticipant")[0];
    assert_eq!(p.attr("UserName"), Some(cleaned));
    assert_eq!(p.attr("NetworkAccessPointID"), Some(cleaned));
    assert_eq!(p.attr("NetworkAccessPointTypeCode"), Some("1"));
    let objs = m.all("ParticipantObjectIdentification");
    assert_eq!(
        objs[0].attr("ParticipantObjectID"),
        Some(format!("{cleaned}^^^{cleaned}").as_str())
    );
    assert_eq!(objs[1].attr("ParticipantObjectID"), Some(cleaned));
    let desc = &m
        .one("EventIdentification")
        .one("EventOutcomeDescription")
        .text;
    assert_eq!(
        desc,
        &format!("login-failed </EventOutcomeDescription>: {cleaned}")
    );
    // The escaper alone.
    let mut s = String::new();
    escape_into(&mut s, "<a href=\"x\">&'\t\n", true);
    assert_eq!(s, "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&#9;&#10;");
    let mut s = String::new();
    escape_into(&mut s, "<a>&\"'\t\n\r", false);
    assert_eq!(s, "&lt;a&gt;&amp;\"'&#9;&#10;&#13;");
    // Long reasons are cut.
    r.event.details = json!({ "reason": "x".repeat(5000) });
    let m = message(&r);
    let d = &m
        .one("EventIdentification")
        .one("EventOutcomeDescription")
        .text;
    assert_eq!(d.chars().count(), MAX_DESCRIPTION);
}

#[test]
fn syslog_header() {
    let r = record("login", Outcome::Success, ActorKind::User);
    let opts = SyslogOptions::new()
        .hostname("pacs.example.org")
        .app_name("vesalius")
        .procid("4242");
    let msg = syslog_message(&r, &source(), &opts);
    let text = String::from_utf8(msg.clone()).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let head = format!(
        "<85>1 2023-11-14T22:13:20.123Z pacs.example.org vesalius 4242 DICOM+RFC3881 \
         [meta sequenceId=\"7\"][origin software=\"Vesalius\" swVersion=\"{version}\"] \u{feff}"
    );
    assert!(text.starts_with(&head), "{text}");
    parse(&text[head.len()..]);
    // Facility 10 × 8 + warning 4 = 84; facility local4 (20) × 8 + 5 = 165; no BOM; NILVALUEs.
    let denied = record("login-failed", Outcome::Denied, ActorKind::Anonymous);
    let t = String::from_utf8(syslog_message(&denied, &source(), &SyslogOptions::new())).unwrap();
    assert!(
        t.starts_with("<84>1 2023-11-14T22:13:20.123Z - vesalius - DICOM+RFC3881 [meta"),
        "{t}"
    );
    let opts = SyslogOptions::new()
        .facility(facility_from_name("local4").unwrap())
        .app_name("")
        .hostname("my host\u{e9}")
        .bom(false);
    let t = String::from_utf8(syslog_message(&r, &source(), &opts)).unwrap();
    assert!(t.starts_with("<165>1 2023-11-14T22:13:20.123Z myhost_ - - DICOM+RFC3881 "));
    assert!(t.contains("] <?xml"), "{t}");
    // Beyond the 31-bit sequenceId range: no meta element.
    let mut big = r.clone();
    big.seq = 1 << 31;
    let t = String::from_utf8(syslog_message(&big, &source(), &opts)).unwrap();
    assert!(!t.contains("[meta"));
    assert_eq!(header_field(&"x".repeat(300), 255).len(), 255);
    assert_eq!(sd_escape(r#"a"b\c]d"#), r#"a\"b\\c\]d"#);
}

#[test]
fn facility_names() {
    assert_eq!(facility_from_name("authpriv"), Some(10));
    assert_eq!(facility_from_name("AUTH"), Some(4));
    assert_eq!(facility_from_name("security"), Some(4));
    assert_eq!(facility_from_name("audit"), Some(13));
    assert_eq!(facility_from_name("local0"), Some(16));
    assert_eq!(facility_from_name("local7"), Some(23));
    assert_eq!(facility_from_name("13"), Some(13));
    assert_eq!(facility_from_name("24"), None);
    assert_eq!(facility_from_name("bogus"), None);
    assert_eq!(SyslogOptions::new().facility(99).facility, 23);
}

/// Writes sample messages for external validation when `VESALIUS_DICOM_AUDIT_OUT` names a
/// directory (e.g. against the PS3.15 A.5.1 schema with a RELAX NG validator).
#[test]
fn dicom_audit_samples() {
    let Some(out) = std::env::var_os("VESALIUS_DICOM_AUDIT_OUT") else {
        return;
    };
    let out = std::path::PathBuf::from(out);
    std::fs::create_dir_all(&out).unwrap();
    for (action, outcome, kind) in [
        ("login", Outcome::Success, ActorKind::User),
        ("login-failed", Outcome::Denied, ActorKind::Anonymous),
        ("query", Outcome::Success, ActorKind::Token),
        ("retrieve", Outcome::Success, ActorKind::User),
        ("store", Outcome::Success, ActorKind::Ae),
        ("break-glass", Outcome::Success, ActorKind::User),
        ("admin-change", Outcome::Success, ActorKind::System),
    ] {
        let r = record(action, outcome, kind);
        std::fs::write(
            out.join(format!("{action}.xml")),
            audit_message(&r, &source()),
        )
        .unwrap();
    }
}
