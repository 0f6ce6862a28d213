//! Audit records as DICOM Audit Messages (PS3.15 A.5, the XML schema derived from RFC 3881),
//! and the RFC 5424 syslog message that carries one to an audit record repository (PS3.15 A.6
//! Syslog-TLS, A.7 Syslog-UDP). The transport lives in the binary (`vesalius::syslog`); this
//! module is pure: a record in, bytes out. It mirrors [`crate::fhir`], which exports the same
//! records as FHIR `AuditEvent`s.
//!
//! # Event codes
//!
//! Each of our actions becomes an `EventID` from PS3.16 CID 400 (Audit Event ID), an
//! `EventTypeCode` from CID 401 (Audit Event Type Code; CID 403, Security Alert Type Code, for
//! security alerts) where the message of PS3.15 A.5.3 asks for one, and an `EventActionCode`
//! (C create, R read, U update, D delete, E execute). All codes are scheme `DCM`.
//!
//! | Action | EventID (CID 400) | EventTypeCode (CID 401/403) | Action | PS3.15 |
//! |---|---|---|---|---|
//! | `login`, `login-failed`, `login-locked` | 110114 User Authentication | 110122 Login | E | A.5.3.12 |
//! | `logout` | 110114 User Authentication | 110123 Logout | E | A.5.3.12 |
//! | `query` | 110112 Query | — | E | A.5.3.10 |
//! | `retrieve` (WADO, viewer), `link-use` | 110103 DICOM Instances Accessed | — | R | A.5.3.6 |
//! | `retrieve` by C-MOVE or C-GET | 110104 DICOM Instances Transferred | — | R | A.5.3.7 |
//! | `store` | 110104 DICOM Instances Transferred | — | C | A.5.3.7 |
//! | `storage-commitment` | 110104 DICOM Instances Transferred | — | R | A.5.3.7 |
//! | `upload` (guest upload link), `inbox-accept` (into the organisation) | 110107 Import | — | C | A.5.3.5 |
//! | `export` | 110106 Export | — | R | A.5.3.4 |
//! | `delete` of a study | 110105 DICOM Study Deleted | — | D | A.5.3.8 |
//! | `delete` of series or instances (`details.level`) | 110103 DICOM Instances Accessed | — | D | A.5.3.6 |
//! | `inbox-reject` (a quarantined upload discarded) | 110105 DICOM Study Deleted | — | D | A.5.3.8 |
//! | `audit-read` | 110101 Audit Log Used | — | R | A.5.3.2 |
//! | `break-glass` | 110113 Security Alert | 110127 Emergency Override Started | E | A.5.3.11 |
//! | `share-create`, `share-revoke`, `upload-link-create`, `upload-link-revoke`, `grant-create`, `grant-revoke` | 110113 Security Alert | 110135 Object Security Attributes Changed | E | A.5.3.11 |
//! | `user-create`, `password-change`, `token-create`, `token-revoke`, `setup-complete` | 110113 Security Alert | 110137 User Security Attributes Changed | E | A.5.3.11 |
//! | `admin-change` with `details.change` `membership-*` | 110113 Security Alert | 110136 Security Roles Changed | E | A.5.3.11 |
//! | `admin-change` with `user-*`, `password-*`, `token-*` | 110113 Security Alert | 110137 User Security Attributes Changed | E | A.5.3.11 |
//! | `admin-change` otherwise (`org-create`, `ae-add`, `ae-remove`, …), `setup-start` | 110113 Security Alert | 110129 Security Configuration | E | A.5.3.11 |
//! | `association-rejected` | 110113 Security Alert | 110126 Node Authentication | E | A.5.3.11 |
//! | anything else | 110100 Application Activity | — | E | A.5.3.1 |
//!
//! Differences from the FHIR export, on purpose: C-MOVE/C-GET are transfers to another node
//! (110104, not 110103), `setup-complete` is the administrator's first password (110137; its
//! login is a `login` record of its own), and administrative changes are told apart by
//! `details.change`.
//!
//! # Outcome (`EventOutcomeIndicator`, PS3.15 A.5.2)
//!
//! `success` → `0`; `denied` → `4` (minor failure, e.g. a wrong password); `failure` → `8`
//! (serious failure); `login-locked` → `8` ("invalid password with excess retries"). A refusal
//! keeps the event id of what was refused (a denied `store` is 110104 with outcome 4).
//! `EventOutcomeDescription` is our action name, the `details.change` of an administrative
//! change, and the reason of a refusal (`login-failed: bad-password`).
//!
//! # Participants
//!
//! - `ActiveParticipant`, requestor: the actor. `UserID` is its id (user id, token id, AE title,
//!   link id), or its name when it has none (the username tried by a failed login); `UserName`
//!   its name; `AlternativeUserID` `AETITLES=<title>` for an AE (A.5.2.2); the source address as
//!   `NetworkAccessPointID` (type `2` IP address, `1` when it is a host name); `RoleIDCode`
//!   110153 Source Role ID when it sent instances, 110152 Destination Role ID when it received
//!   them (CID 402), and its Vesalius role (`urn:vesalius:role`) for role-based access control.
//! - `ActiveParticipant`, not requestor: this application ([`AuditSource`]), `AETITLES=` our AE
//!   title, our host name (type `1`), role 110152/110153 as the other side of a transfer, else
//!   110150 Application.
//! - `ActiveParticipant`, not requestor: the C-MOVE destination (110152), when there is one.
//! - `AuditSourceIdentification`: [`AuditSource::id`], the enterprise site, type code `4`
//!   (application server).
//! - `ParticipantObjectIdentification`: the patient (type `1` person, role `1` patient, ID type
//!   `2` Patient Number, ID `id^^^issuer` as HL7 CX); the study (type `2` system object, role `3`
//!   report, ID type 110180 Study Instance UID, CID 404); for a `query`, the SOP class queried
//!   (ID type 110181 SOP Class UID, Study or Patient Root C-FIND; QIDO-RS is reported as Study
//!   Root) with the query (`ParticipantObjectQuery`: the base64 of the JSON of its keys).
//!   `ParticipantObjectName` is left out: the trail holds no patient names (A.5.3 marks it U).
//!
//! Text is escaped for XML (`&<>"'`, tabs and line breaks as character references); characters
//! XML 1.0 forbids (most C0 controls) become U+FFFD, so every message is well-formed whatever a
//! client sent. Each message is one line: the XML declaration and the `AuditMessage` element.
//!
//! # Syslog (RFC 5424; PS3.15 A.6, A.7)
//!
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID DICOM+RFC3881 [meta sequenceId="SEQ"][origin
//! software="Vesalius" swVersion="…"] BOM XML`: facility 10 (security/authorization) unless
//! configured otherwise; severity 5 (notice) for a success and 4 (warning) for a refusal, a
//! failure or a break-glass; `TIMESTAMP` is the event's time (UTC, milliseconds); the MSGID
//! `DICOM+RFC3881` is the one A.7 names for these messages. The RFC 5424 `meta` `sequenceId` is
//! the record's `seq` in the hash chain, so a repository can spot gaps and drop the duplicates an
//! at-least-once sender may produce. The UTF-8 byte order mark (RFC 5424 6.4) can be turned off
//! for collectors that keep it in the XML.

use std::fmt::Write as _;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value as Json;
use vesalius_store::audit::{ActorKind, AuditEvent, AuditRecord, Outcome};

pub use crate::fhir::Code;

/// The code system of every code we write.
pub const DCM: &str = "DCM";
/// The RFC 5424 MSGID of DICOM audit messages (PS3.15 A.7).
pub const MSGID: &str = "DICOM+RFC3881";
/// RFC 5424 facility 10, security/authorization messages (PS3.15 A.6, A.7).
pub const FACILITY_AUTHPRIV: u8 = 10;
/// Severity 5, notice: "normal but significant" (PS3.15 A.7: most audit messages).
pub const SEVERITY_NOTICE: u8 = 5;
/// Severity 4, warning.
pub const SEVERITY_WARNING: u8 = 4;
/// Study Root Query/Retrieve Information Model - FIND.
pub const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
/// Patient Root Query/Retrieve Information Model - FIND.
pub const PATIENT_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";

/// Longest `EventOutcomeDescription` written, in characters (a reason can quote a client).
const MAX_DESCRIPTION: usize = 1024;

/// `EventActionCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionCode {
    /// C: create.
    Create,
    /// R: read, view, print, query.
    Read,
    /// U: update.
    Update,
    /// D: delete.
    Delete,
    /// E: execute (log-on, a security event, a query).
    Execute,
}

impl ActionCode {
    /// The one-letter code.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionCode::Create => "C",
            ActionCode::Read => "R",
            ActionCode::Update => "U",
            ActionCode::Delete => "D",
            ActionCode::Execute => "E",
        }
    }
}

/// How one event is identified in a DICOM audit message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCodes {
    /// `EventID` (CID 400).
    pub event_id: Code,
    /// `EventTypeCode` (CID 401/403), where the message defines one.
    pub event_type: Option<Code>,
    /// `EventActionCode`.
    pub action: ActionCode,
}

const AUTH: Code = ("110114", "User Authentication");
const LOGIN: Code = ("110122", "Login");
const LOGOUT: Code = ("110123", "Logout");
const ALERT: Code = ("110113", "Security Alert");
const ACCESSED: Code = ("110103", "DICOM Instances Accessed");
const TRANSFERRED: Code = ("110104", "DICOM Instances Transferred");
const OBJECT_SECURITY: Code = ("110135", "Object Security Attributes Changed");
const ROLES: Code = ("110136", "Security Roles Changed");
const USER_SECURITY: Code = ("110137", "User Security Attributes Changed");
const SECURITY_CONFIG: Code = ("110129", "Security Configuration");

/// The event codes of `e` (the table in the module documentation).
pub fn event_codes(e: &AuditEvent) -> EventCodes {
    use ActionCode::*;
    let codes = |event_id, event_type, action| EventCodes {
        event_id,
        event_type,
        action,
    };
    let detail = |key: &str| e.details.get(key).and_then(Json::as_str).unwrap_or("");
    match e.action.as_str() {
        "login" | "login-failed" | "login-locked" => codes(AUTH, Some(LOGIN), Execute),
        "logout" => codes(AUTH, Some(LOGOUT), Execute),
        "query" => codes(("110112", "Query"), None, Execute),
        "retrieve" if matches!(detail("operation"), "C-MOVE" | "C-GET") => {
            codes(TRANSFERRED, None, Read)
        }
        "retrieve" | "link-use" => codes(ACCESSED, None, Read),
        "store" => codes(TRANSFERRED, None, Create),
        "storage-commitment" => codes(TRANSFERRED, None, Read),
        "upload" | "inbox-accept" => codes(("110107", "Import"), None, Create),
        "export" => codes(("110106", "Export"), None, Read),
        "delete" if matches!(detail("level"), "" | "study" | "STUDY") => {
            codes(("110105", "DICOM Study Deleted"), None, Delete)
        }
        "delete" => codes(ACCESSED, None, Delete),
        "inbox-reject" => codes(("110105", "DICOM Study Deleted"), None, Delete),
        "audit-read" => codes(("110101", "Audit Log Used"), None, Read),
        "break-glass" => codes(
            ALERT,
            Some(("110127", "Emergency Override Started")),
            Execute,
        ),
        "share-create" | "share-revoke" | "upload-link-create" | "upload-link-revoke"
        | "grant-create" | "grant-revoke" => codes(ALERT, Some(OBJECT_SECURITY), Execute),
        "user-create" | "password-change" | "token-create" | "token-revoke" | "setup-complete" => {
            codes(ALERT, Some(USER_SECURITY), Execute)
        }
        "admin-change" => {
            let change = detail("change");
            let ty = if change.starts_with("membership") {
                ROLES
            } else if ["user-", "password-", "token-"]
                .iter()
                .any(|p| change.starts_with(p))
            {
                USER_SECURITY
            } else {
                SECURITY_CONFIG
            };
            codes(ALERT, Some(ty), Execute)
        }
        "setup-start" => codes(ALERT, Some(SECURITY_CONFIG), Execute),
        "association-rejected" => codes(ALERT, Some(("110126", "Node Authentication")), Execute),
        _ => codes(("110100", "Application Activity"), None, Execute),
    }
}

/// `EventOutcomeIndicator`: `0`, `4`, `8` (see the module documentation).
pub fn outcome_indicator(e: &AuditEvent) -> u8 {
    match (e.outcome, e.action.as_str()) {
        (Outcome::Success, _) => 0,
        (Outcome::Denied, "login-locked") => 8,
        (Outcome::Denied, _) => 4,
        (Outcome::Failure, _) => 8,
    }
}

/// The RFC 5424 severity of a record's message: notice for a success, warning for a refusal, a
/// failure or a break-glass.
pub fn severity(e: &AuditEvent) -> u8 {
    if outcome_indicator(e) == 0 && e.action != "break-glass" {
        SEVERITY_NOTICE
    } else {
        SEVERITY_WARNING
    }
}

/// Who reports: this application, as it appears in every message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditSource {
    /// `AuditSourceID`, and the `UserID` of our own active participant (e.g. the site's name or
    /// our AE title). Required by the schema: empty becomes `vesalius`.
    pub id: String,
    /// `AuditEnterpriseSiteID` (the hospital or site within the enterprise), if any.
    pub enterprise_site: Option<String>,
    /// Our AE title, written `AETITLES=<title>` (PS3.15 A.5.2.2), if any.
    pub ae_title: Option<String>,
    /// Our host name, the `NetworkAccessPointID` of our active participant, if any.
    pub host: Option<String>,
}

/// The record as a DICOM audit message (XML, one line, with the XML declaration).
pub fn audit_message(record: &AuditRecord, source: &AuditSource) -> String {
    let e = &record.event;
    let codes = event_codes(e);
    let mut x = Xml::default();
    x.out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    x.open("AuditMessage", &[]);
    x.open(
        "EventIdentification",
        &[
            ("EventActionCode", codes.action.as_str()),
            ("EventDateTime", &crate::fhir::instant(e.time_ms)),
            ("EventOutcomeIndicator", &outcome_indicator(e).to_string()),
        ],
    );
    x.code("EventID", codes.event_id);
    if let Some(t) = codes.event_type {
        x.code("EventTypeCode", t);
    }
    x.text("EventOutcomeDescription", &description(e));
    x.close("EventIdentification");
    requestor(&mut x, e, codes);
    application(&mut x, e, codes, source);
    if let Some(dest) = e.details.get("destination").and_then(Json::as_str)
        && !dest.is_empty()
        && e.action == "retrieve"
    {
        let aets = format!("AETITLES={dest}");
        x.open(
            "ActiveParticipant",
            &[
                ("UserID", dest),
                ("AlternativeUserID", &aets),
                ("UserIsRequestor", "false"),
            ],
        );
        x.code("RoleIDCode", ("110152", "Destination Role ID"));
        x.close("ActiveParticipant");
    }
    let id = if source.id.is_empty() {
        "vesalius"
    } else {
        &source.id
    };
    x.open(
        "AuditSourceIdentification",
        &[
            (
                "AuditEnterpriseSiteID",
                source.enterprise_site.as_deref().unwrap_or(""),
            ),
            ("AuditSourceID", id),
        ],
    );
    // A.5.1.2.1: 4, application server process tier.
    x.empty("AuditSourceTypeCode", &[("csd-code", "4")]);
    x.close("AuditSourceIdentification");
    objects(&mut x, e);
    x.close("AuditMessage");
    x.out
}

/// `action`, `details.change`, and the reason of a refusal or failure.
fn description(e: &AuditEvent) -> String {
    let mut d = e.action.clone();
    if let Some(change) = e.details.get("change").and_then(Json::as_str) {
        let _ = write!(d, " {change}");
    }
    if e.outcome != Outcome::Success {
        match e.details.get("reason") {
            Some(Json::String(r)) => {
                let _ = write!(d, ": {r}");
            }
            Some(r) if !r.is_null() => {
                let _ = write!(d, ": {r}");
            }
            _ => {}
        }
    }
    if d.chars().count() > MAX_DESCRIPTION {
        d = d.chars().take(MAX_DESCRIPTION - 1).collect();
        d.push('…');
    }
    d
}

/// The actor's `ActiveParticipant` (the requestor).
fn requestor(x: &mut Xml, e: &AuditEvent, codes: EventCodes) {
    let a = &e.actor;
    let user_id = [a.id.as_str(), a.name.as_str()]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or("anonymous");
    let aets = (a.kind == ActorKind::Ae).then(|| format!("AETITLES={user_id}"));
    let ip = crate::net::source_ip(&e.source).map(|ip| ip.to_string());
    let (nap, nap_type) = match &ip {
        Some(ip) => (ip.as_str(), "2"),
        None if !e.source.is_empty() => (e.source.as_str(), "1"),
        None => ("", ""),
    };
    x.open(
        "ActiveParticipant",
        &[
            ("UserID", user_id),
            ("AlternativeUserID", aets.as_deref().unwrap_or("")),
            ("UserName", &a.name),
            ("UserIsRequestor", "true"),
            ("NetworkAccessPointID", nap),
            ("NetworkAccessPointTypeCode", nap_type),
        ],
    );
    match transfer_side(e, codes) {
        Some(Side::Sender) => x.code("RoleIDCode", ("110153", "Source Role ID")),
        Some(Side::Receiver) if e.details.get("destination").is_none() => {
            x.code("RoleIDCode", ("110152", "Destination Role ID"))
        }
        _ => {}
    }
    if !a.role.is_empty() {
        x.empty(
            "RoleIDCode",
            &[
                ("csd-code", &a.role),
                ("codeSystemName", "urn:vesalius:role"),
                ("originalText", &a.role),
            ],
        );
    }
    x.close("ActiveParticipant");
}

/// Our own `ActiveParticipant`.
fn application(x: &mut Xml, e: &AuditEvent, codes: EventCodes, source: &AuditSource) {
    let id = if source.id.is_empty() {
        "vesalius"
    } else {
        &source.id
    };
    let aets = source
        .ae_title
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| format!("AETITLES={t}"));
    let host = source.host.as_deref().unwrap_or("");
    x.open(
        "ActiveParticipant",
        &[
            ("UserID", id),
            ("AlternativeUserID", aets.as_deref().unwrap_or("")),
            ("UserIsRequestor", "false"),
            ("NetworkAccessPointID", host),
            (
                "NetworkAccessPointTypeCode",
                if host.is_empty() { "" } else { "1" },
            ),
        ],
    );
    let role = match transfer_side(e, codes) {
        // The actor sent: we received.
        Some(Side::Sender) => ("110152", "Destination Role ID"),
        Some(Side::Receiver) => ("110153", "Source Role ID"),
        None => ("110150", "Application"),
    };
    x.code("RoleIDCode", role);
    x.close("ActiveParticipant");
}

/// Which side of a transfer of instances the actor is on.
#[derive(Clone, Copy)]
enum Side {
    Sender,
    Receiver,
}

fn transfer_side(e: &AuditEvent, codes: EventCodes) -> Option<Side> {
    match (e.action.as_str(), codes.action) {
        ("store" | "upload", _) => Some(Side::Sender),
        ("retrieve" | "link-use" | "export", ActionCode::Read) => Some(Side::Receiver),
        _ => None,
    }
}

/// The patient, the study and, for a query, what was queried.
fn objects(x: &mut Xml, e: &AuditEvent) {
    if let Some((issuer, id)) = &e.patient
        && !id.is_empty()
    {
        // HL7 v2 CX: ID^^^assigning authority.
        let cx = if issuer.is_empty() {
            id.clone()
        } else {
            format!("{id}^^^{issuer}")
        };
        x.open(
            "ParticipantObjectIdentification",
            &[
                ("ParticipantObjectID", &cx),
                ("ParticipantObjectTypeCode", "1"),
                ("ParticipantObjectTypeCodeRole", "1"),
            ],
        );
        x.empty(
            "ParticipantObjectIDTypeCode",
            &[
                ("csd-code", "2"),
                ("codeSystemName", "RFC-3881"),
                ("originalText", "Patient Number"),
            ],
        );
        x.close("ParticipantObjectIdentification");
    }
    if let Some(uid) = e.study_uid.as_deref().filter(|u| !u.is_empty()) {
        x.open(
            "ParticipantObjectIdentification",
            &[
                ("ParticipantObjectID", uid),
                ("ParticipantObjectTypeCode", "2"),
                ("ParticipantObjectTypeCodeRole", "3"),
            ],
        );
        x.code(
            "ParticipantObjectIDTypeCode",
            ("110180", "Study Instance UID"),
        );
        x.close("ParticipantObjectIdentification");
    }
    if e.action == "query" {
        let sop_class = match e.details.get("model").and_then(Json::as_str) {
            Some("patient-root") => PATIENT_ROOT_FIND,
            _ => STUDY_ROOT_FIND,
        };
        x.open(
            "ParticipantObjectIdentification",
            &[
                ("ParticipantObjectID", sop_class),
                ("ParticipantObjectTypeCode", "2"),
                ("ParticipantObjectTypeCodeRole", "3"),
            ],
        );
        x.code("ParticipantObjectIDTypeCode", ("110181", "SOP Class UID"));
        let keys = ["keys", "params"]
            .iter()
            .find_map(|k| e.details.get(*k))
            .cloned()
            .unwrap_or(Json::Null);
        let query = serde_json::json!({
            "level": e.details.get("level").cloned().unwrap_or(Json::Null),
            "keys": keys,
        });
        x.text(
            "ParticipantObjectQuery",
            &BASE64.encode(query.to_string().as_bytes()),
        );
        x.close("ParticipantObjectIdentification");
    }
}

/// Formatting of the RFC 5424 header of each message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogOptions {
    /// Facility, 0-23; default [`FACILITY_AUTHPRIV`].
    pub facility: u8,
    /// `HOSTNAME` (RFC 5424 6.2.4): our FQDN, host name or IP; empty: `-`.
    pub hostname: String,
    /// `APP-NAME`; empty: `-`.
    pub app_name: String,
    /// `PROCID`, e.g. the process id; empty: `-`.
    pub procid: String,
    /// Start `MSG` with the UTF-8 byte order mark (RFC 5424 6.4). Default true.
    pub bom: bool,
}

impl SyslogOptions {
    /// Facility authpriv, app name `vesalius`, no host name or process id, with BOM.
    pub fn new() -> Self {
        SyslogOptions {
            facility: FACILITY_AUTHPRIV,
            hostname: String::new(),
            app_name: "vesalius".into(),
            procid: String::new(),
            bom: true,
        }
    }

    /// Sets the facility (0-23; larger values are clamped to 23).
    pub fn facility(mut self, facility: u8) -> Self {
        self.facility = facility.min(23);
        self
    }

    /// Sets `HOSTNAME`.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = hostname.into();
        self
    }

    /// Sets `APP-NAME`.
    pub fn app_name(mut self, app_name: impl Into<String>) -> Self {
        self.app_name = app_name.into();
        self
    }

    /// Sets `PROCID`.
    pub fn procid(mut self, procid: impl Into<String>) -> Self {
        self.procid = procid.into();
        self
    }

    /// Whether `MSG` starts with the UTF-8 BOM.
    pub fn bom(mut self, bom: bool) -> Self {
        self.bom = bom;
        self
    }
}

impl Default for SyslogOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// A facility by name (`auth`, `authpriv`, `security`, `audit`, `local0`…`local7`, …) or
/// number (0-23).
pub fn facility_from_name(name: &str) -> Option<u8> {
    const NAMES: [&str; 24] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2",
        "local3", "local4", "local5", "local6", "local7",
    ];
    let name = name.trim().to_ascii_lowercase();
    if let Ok(n) = name.parse::<u8>() {
        return (n <= 23).then_some(n);
    }
    match name.as_str() {
        "security" => Some(4),
        "cron2" => Some(15),
        _ => NAMES.iter().position(|n| *n == name).map(|i| i as u8),
    }
}

/// The RFC 5424 message (`SYSLOG-MSG`, without transport framing) carrying the record's audit
/// message.
pub fn syslog_message(
    record: &AuditRecord,
    source: &AuditSource,
    options: &SyslogOptions,
) -> Vec<u8> {
    let e = &record.event;
    let pri = u16::from(options.facility.min(23)) * 8 + u16::from(severity(e));
    let mut head = format!(
        "<{pri}>1 {} {} {} {} {MSGID} ",
        crate::fhir::instant(e.time_ms),
        header_field(&options.hostname, 255),
        header_field(&options.app_name, 48),
        header_field(&options.procid, 128),
    );
    // RFC 5424 7.3.1: sequenceId is 1..2147483647.
    if (1..=2_147_483_647).contains(&record.seq) {
        let _ = write!(head, "[meta sequenceId=\"{}\"]", record.seq);
    }
    let _ = write!(
        head,
        "[origin software=\"Vesalius\" swVersion=\"{}\"] ",
        sd_escape(env!("CARGO_PKG_VERSION"))
    );
    let mut out = head.into_bytes();
    if options.bom {
        out.extend_from_slice("\u{feff}".as_bytes());
    }
    out.extend_from_slice(audit_message(record, source).as_bytes());
    out
}

/// A header field: printable US-ASCII only (RFC 5424 6: PRINTUSASCII, %d33-126), at most `max`
/// characters; empty becomes the NILVALUE `-`.
fn header_field(value: &str, max: usize) -> String {
    let v: String = value
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .take(max)
        .collect();
    if v.is_empty() { "-".into() } else { v }
}

/// A structured-data parameter value: `"`, `\` and `]` escaped (RFC 5424 6.3.3).
fn sd_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A minimal XML writer: elements, attributes (empty values left out) and escaped text.
#[derive(Default)]
struct Xml {
    out: String,
}

impl Xml {
    fn start(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs.iter().filter(|(_, v)| !v.is_empty()) {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_into(&mut self.out, v, true);
            self.out.push('"');
        }
    }

    fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.start(name, attrs);
        self.out.push('>');
    }

    fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.start(name, attrs);
        self.out.push_str("/>");
    }

    fn close(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    fn text(&mut self, name: &str, text: &str) {
        self.open(name, &[]);
        escape_into(&mut self.out, text, false);
        self.close(name);
    }

    /// A coded value (`CodedValueType`): `csd-code`, `codeSystemName` DCM, `originalText`.
    fn code(&mut self, name: &str, (code, meaning): Code) {
        self.empty(
            name,
            &[
                ("csd-code", code),
                ("codeSystemName", DCM),
                ("originalText", meaning),
            ],
        );
    }
}

/// Appends `s` escaped for XML text or (with `attr`) a double-quoted attribute value.
/// Characters XML 1.0 does not allow become U+FFFD.
pub fn escape_into(out: &mut String, s: &str, attr: bool) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attr => out.push_str("&quot;"),
            '\'' if attr => out.push_str("&apos;"),
            // As references: attribute-value normalization would turn them into spaces, and
            // every message stays on one line.
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests;
