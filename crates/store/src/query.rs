//! The query model shared by QIDO-RS and C-FIND, with PS3.4 C.2.2.2 attribute matching.
//!
//! A protocol front end turns its request (QIDO query parameters, a C-FIND identifier) into a
//! [`Query`]: a level, a list of `(Key, Matcher)` filters and paging. Every [`crate::Index`]
//! evaluates it the same way; [`Matcher::matches`] is the reference semantics (the in-memory
//! index uses it directly; SQL backends translate it and are tested against it).

use dicom_core::VR;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value as Json};
use vesalius_core::tag::{self, Tag};

use crate::error::{Error, Result};
use crate::model::OrgId;

/// The query/retrieve level (PS3.4 C.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// PATIENT
    Patient,
    /// STUDY
    Study,
    /// SERIES
    Series,
    /// IMAGE (instances)
    Image,
}

impl Level {
    /// Parses the Query/Retrieve Level (0008,0052) value.
    pub fn parse(s: &str) -> Option<Level> {
        match s.trim() {
            "PATIENT" => Some(Level::Patient),
            "STUDY" => Some(Level::Study),
            "SERIES" => Some(Level::Series),
            "IMAGE" => Some(Level::Image),
            _ => None,
        }
    }

    /// The value for (0008,0052).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Patient => "PATIENT",
            Level::Study => "STUDY",
            Level::Series => "SERIES",
            Level::Image => "IMAGE",
        }
    }
}

/// The Query/Retrieve Information Model a node is queried and retrieved from in (PS3.4 C.6):
/// which C-FIND, C-MOVE and C-GET SOP classes are proposed, and which keys each level needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueryModel {
    /// Study Root (PS3.4 C.6.2): STUDY, SERIES and IMAGE levels; a study is found by its own
    /// keys, patient attributes among them.
    #[default]
    Study,
    /// Patient Root (PS3.4 C.6.1): PATIENT, STUDY, SERIES and IMAGE levels. The search is
    /// hierarchical (C.4.1.3.1): a query below PATIENT level carries the Patient ID, the unique
    /// key of the level above, and so does a C-MOVE or C-GET of a study (C.4.2.2.1). Some PACS
    /// answer only this model.
    Patient,
}

impl QueryModel {
    /// `study` or `patient`.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryModel::Study => "study",
            QueryModel::Patient => "patient",
        }
    }

    /// Parses [`QueryModel::as_str`]'s names.
    pub fn parse(s: &str) -> Option<QueryModel> {
        match s {
            "study" => Some(QueryModel::Study),
            "patient" => Some(QueryModel::Patient),
            _ => None,
        }
    }

    /// Its name in the standard, for messages: `Study Root` or `Patient Root`.
    pub fn name(self) -> &'static str {
        match self {
            QueryModel::Study => "Study Root",
            QueryModel::Patient => "Patient Root",
        }
    }

    /// The model a request at `level` uses: Study Root has no PATIENT level, so a PATIENT-level
    /// request is always a Patient Root one.
    pub fn at(self, level: Level) -> QueryModel {
        if level == Level::Patient {
            QueryModel::Patient
        } else {
            self
        }
    }
}

/// An attribute the index can match on, with the level it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // named after PS3.6 keywords
pub enum Key {
    PatientName,
    PatientId,
    IssuerOfPatientId,
    PatientBirthDate,
    PatientSex,
    StudyInstanceUid,
    StudyDate,
    StudyTime,
    AccessionNumber,
    ReferringPhysicianName,
    StudyDescription,
    StudyId,
    ModalitiesInStudy,
    SeriesInstanceUid,
    Modality,
    SeriesNumber,
    SeriesDescription,
    SopInstanceUid,
    SopClassUid,
    InstanceNumber,
}

impl Key {
    /// Every matching key.
    pub const ALL: &'static [Key] = &[
        Key::PatientName,
        Key::PatientId,
        Key::IssuerOfPatientId,
        Key::PatientBirthDate,
        Key::PatientSex,
        Key::StudyInstanceUid,
        Key::StudyDate,
        Key::StudyTime,
        Key::AccessionNumber,
        Key::ReferringPhysicianName,
        Key::StudyDescription,
        Key::StudyId,
        Key::ModalitiesInStudy,
        Key::SeriesInstanceUid,
        Key::Modality,
        Key::SeriesNumber,
        Key::SeriesDescription,
        Key::SopInstanceUid,
        Key::SopClassUid,
        Key::InstanceNumber,
    ];

    /// The tag of this key.
    pub fn tag(self) -> Tag {
        match self {
            Key::PatientName => tag::PATIENT_NAME,
            Key::PatientId => tag::PATIENT_ID,
            Key::IssuerOfPatientId => tag::ISSUER_OF_PATIENT_ID,
            Key::PatientBirthDate => tag::PATIENT_BIRTH_DATE,
            Key::PatientSex => tag::PATIENT_SEX,
            Key::StudyInstanceUid => tag::STUDY_INSTANCE_UID,
            Key::StudyDate => tag::STUDY_DATE,
            Key::StudyTime => tag::STUDY_TIME,
            Key::AccessionNumber => tag::ACCESSION_NUMBER,
            Key::ReferringPhysicianName => tag::REFERRING_PHYSICIAN_NAME,
            Key::StudyDescription => tag::STUDY_DESCRIPTION,
            Key::StudyId => tag::STUDY_ID,
            Key::ModalitiesInStudy => tag::MODALITIES_IN_STUDY,
            Key::SeriesInstanceUid => tag::SERIES_INSTANCE_UID,
            Key::Modality => tag::MODALITY,
            Key::SeriesNumber => tag::SERIES_NUMBER,
            Key::SeriesDescription => tag::SERIES_DESCRIPTION,
            Key::SopInstanceUid => tag::SOP_INSTANCE_UID,
            Key::SopClassUid => tag::SOP_CLASS_UID,
            Key::InstanceNumber => tag::INSTANCE_NUMBER,
        }
    }

    /// The key for a tag, if the index can match on it.
    pub fn from_tag(t: Tag) -> Option<Key> {
        Key::ALL.iter().copied().find(|k| k.tag() == t)
    }

    /// The level whose records carry this key.
    pub fn level(self) -> Level {
        match self {
            Key::PatientName
            | Key::PatientId
            | Key::IssuerOfPatientId
            | Key::PatientBirthDate
            | Key::PatientSex => Level::Patient,
            Key::StudyInstanceUid
            | Key::StudyDate
            | Key::StudyTime
            | Key::AccessionNumber
            | Key::ReferringPhysicianName
            | Key::StudyDescription
            | Key::StudyId
            | Key::ModalitiesInStudy => Level::Study,
            Key::SeriesInstanceUid | Key::Modality | Key::SeriesNumber | Key::SeriesDescription => {
                Level::Series
            }
            Key::SopInstanceUid | Key::SopClassUid | Key::InstanceNumber => Level::Image,
        }
    }

    /// The VR of the key's attribute.
    pub fn vr(self) -> VR {
        match self {
            Key::PatientName | Key::ReferringPhysicianName => VR::PN,
            Key::PatientBirthDate | Key::StudyDate => VR::DA,
            Key::StudyTime => VR::TM,
            Key::StudyInstanceUid
            | Key::SeriesInstanceUid
            | Key::SopInstanceUid
            | Key::SopClassUid => VR::UI,
            Key::SeriesNumber | Key::InstanceNumber => VR::IS,
            Key::ModalitiesInStudy | Key::Modality | Key::PatientSex => VR::CS,
            Key::AccessionNumber | Key::StudyId => VR::SH,
            _ => VR::LO,
        }
    }
}

/// How a key's value is matched (PS3.4 C.2.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Single value matching (C.2.2.2.1); case-insensitive for person names.
    Single(String),
    /// Wildcard matching with `*` and `?` (C.2.2.2.4).
    Wildcard(String),
    /// Range matching on dates and times (C.2.2.2.5); either end may be open.
    Range {
        /// Lower bound, inclusive.
        from: Option<String>,
        /// Upper bound, inclusive.
        to: Option<String>,
    },
    /// List of UID matching (C.2.2.2.2).
    List(Vec<String>),
}

impl Matcher {
    /// Builds the matcher for a key from its raw request value; `None` is universal matching
    /// (an empty value: the key is only asked to be returned).
    pub fn parse(key: Key, raw: &str) -> Result<Option<Matcher>> {
        let raw = raw.trim_matches(|c| c == ' ' || c == '\0');
        if raw.is_empty() || raw == "*" {
            return Ok(None);
        }
        let vr = key.vr();
        if vr == VR::UI {
            let list: Vec<String> = raw
                .split(['\\', ','])
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            if let Some(bad) = list.iter().find(|u| !vesalius_core::uid::is_valid_uid(u)) {
                return Err(Error::BadRequest(format!(
                    "invalid UID {bad:?} for {key:?}"
                )));
            }
            return Ok(Some(if list.len() == 1 {
                Matcher::Single(list.into_iter().next().unwrap_or_default())
            } else {
                Matcher::List(list)
            }));
        }
        if matches!(vr, VR::DA | VR::TM) && raw.contains('-') {
            let (a, b) = raw.split_once('-').unwrap_or((raw, ""));
            let norm = |s: &str| {
                let s = s.trim().replace(['.', ':'], "");
                (!s.is_empty()).then_some(s)
            };
            let (from, to) = (norm(a), norm(b));
            check_date_time(vr, from.as_deref())?;
            check_date_time(vr, to.as_deref())?;
            return Ok(Some(Matcher::Range { from, to }));
        }
        if matches!(vr, VR::DA | VR::TM) {
            let v = raw.replace(['.', ':'], "");
            check_date_time(vr, Some(&v))?;
            return Ok(Some(Matcher::Single(v)));
        }
        if raw.contains('\\') && vr == VR::CS {
            // Multiple values in a CS key: any of them (used for ModalitiesInStudy lists).
            return Ok(Some(Matcher::List(
                raw.split('\\').map(|s| s.trim().to_owned()).collect(),
            )));
        }
        if raw.contains(['*', '?']) {
            return Ok(Some(Matcher::Wildcard(raw.to_owned())));
        }
        Ok(Some(Matcher::Single(raw.to_owned())))
    }

    /// The reference semantics: does `value` (one stored value) match? `fuzzy` enables
    /// component-prefix matching of person names (PS3.4 C.2.2.2.1.1 leaves it to the SCP).
    pub fn matches(&self, key: Key, value: &str, fuzzy: bool) -> bool {
        let pn = key.vr() == VR::PN;
        let norm = |s: &str| if pn { s.to_uppercase() } else { s.to_owned() };
        let value = value.trim_end_matches([' ', '\0']);
        match self {
            Matcher::Single(s) => {
                if pn {
                    let (s, v) = (norm(s), norm(value));
                    v == s || (fuzzy && fuzzy_pn(&s, &v)) || pn_component_equal(&s, &v)
                } else {
                    value == s
                }
            }
            Matcher::Wildcard(p) => {
                let (p, v) = (norm(p), norm(value));
                wildcard_match(p.as_bytes(), v.as_bytes())
                    || (fuzzy && pn && fuzzy_pn(p.trim_end_matches('*'), &v))
            }
            Matcher::Range { from, to } => {
                if value.is_empty() {
                    return false;
                }
                let v = value.replace(['.', ':'], "");
                let v = if key.vr() == VR::TM { pad_time(&v) } else { v };
                from.as_ref().is_none_or(|f| {
                    let f = if key.vr() == VR::TM {
                        pad_time(f)
                    } else {
                        f.clone()
                    };
                    v >= f
                }) && to.as_ref().is_none_or(|t| {
                    let t = if key.vr() == VR::TM {
                        pad_time_upper(t)
                    } else {
                        t.clone()
                    };
                    v <= t
                })
            }
            Matcher::List(list) => list.iter().any(|s| s == value),
        }
    }
}

/// Person names compare equal when the alphabetic group matches (a query without the
/// ideographic part matches names that have one).
fn pn_component_equal(query: &str, value: &str) -> bool {
    !query.contains('=') && value.split('=').next() == Some(query)
}

/// Fuzzy person-name matching: every query component is a prefix of some name component.
fn fuzzy_pn(query: &str, value: &str) -> bool {
    let parts: Vec<&str> = value
        .split(['^', '=', ' '])
        .filter(|s| !s.is_empty())
        .collect();
    let q: Vec<&str> = query.split(['^', ' ']).filter(|s| !s.is_empty()).collect();
    !q.is_empty() && q.iter().all(|q| parts.iter().any(|p| p.starts_with(q)))
}

fn pad_time(t: &str) -> String {
    let mut s = t.to_owned();
    while s.len() < 6 {
        s.push('0');
    }
    s
}

fn pad_time_upper(t: &str) -> String {
    // "10" as an upper bound means up to 10:59:59.999999.
    let mut s = t.to_owned();
    while s.len() < 6 {
        s.push('9');
    }
    if !s.contains('.') {
        s.push_str(".999999");
    }
    s
}

fn check_date_time(vr: VR, v: Option<&str>) -> Result<()> {
    let Some(v) = v else { return Ok(()) };
    let ok = match vr {
        VR::DA => v.len() == 8 && v.bytes().all(|b| b.is_ascii_digit()),
        _ => !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.') && v.len() <= 13,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!("invalid {vr} value {v:?}")))
    }
}

/// Glob matching with `*` (any run) and `?` (one character), on bytes of UTF-8 text.
pub fn wildcard_match(p: &[u8], v: &[u8]) -> bool {
    let s = std::str::from_utf8(p).unwrap_or("");
    let t = std::str::from_utf8(v).unwrap_or("");
    let p: Vec<char> = s.chars().collect();
    let v: Vec<char> = t.chars().collect();
    let (mut pi, mut vi, mut star, mut mark) = (0usize, 0usize, None, 0usize);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// The order of study-level answers, so that pages (`offset`, `limit`) follow a sort the
/// client chose. QIDO-RS (PS3.18 8.3.4) defines no sort: our vendor parameter `orderby`
/// (`-StudyDate`, `StudyDate`, `PatientName`) selects one; other levels keep their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StudyOrder {
    /// Newest study date first (then the most recently stored): the default.
    #[default]
    DateDesc,
    /// Oldest study date first (then the first stored).
    DateAsc,
    /// Patient name (case-insensitive), then the most recently stored.
    PatientName,
}

impl StudyOrder {
    /// The `orderby` value: `-StudyDate`, `StudyDate` or `PatientName`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "-StudyDate" => Some(StudyOrder::DateDesc),
            "StudyDate" => Some(StudyOrder::DateAsc),
            "PatientName" => Some(StudyOrder::PatientName),
            _ => None,
        }
    }
}

/// A query over the index.
#[derive(Debug, Clone)]
pub struct Query {
    /// The level of the records returned.
    pub level: Level,
    /// What may be returned (`None`: everything — the server itself).
    pub access: Option<Access>,
    /// Filters, all of which must match.
    pub filters: Vec<(Key, Matcher)>,
    /// Fuzzy person-name matching.
    pub fuzzy: bool,
    /// Results to skip.
    pub offset: usize,
    /// The most results to return.
    pub limit: usize,
    /// The order of study-level answers.
    pub order: StudyOrder,
}

impl Query {
    /// A query at `level` without filters.
    pub fn new(level: Level) -> Self {
        Query {
            level,
            access: None,
            filters: Vec::new(),
            fuzzy: false,
            offset: 0,
            limit: 1000,
            order: StudyOrder::DateDesc,
        }
    }

    /// Adds a filter.
    pub fn with(mut self, key: Key, m: Matcher) -> Self {
        self.filters.push((key, m));
        self
    }

    /// The matcher for `key`, if any.
    pub fn matcher(&self, key: Key) -> Option<&Matcher> {
        self.filters.iter().find(|(k, _)| *k == key).map(|(_, m)| m)
    }
}

/// What a principal may see, applied **inside** the index query so that paging stays correct
/// (issue 4). Built by `vesalius_auth::policy::access`; `None` in a [`Query`]/[`Scope`] means
/// unrestricted (the server itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Access {
    /// Organisations whose every study is visible.
    pub orgs: Vec<OrgId>,
    /// Single studies visible through grants: `(owner org, Study Instance UID)`.
    pub studies: Vec<(OrgId, String)>,
    /// Patients visible through grants: `(owner org, issuer, patient id)`.
    pub patients: Vec<(OrgId, String, String)>,
}

impl Access {
    /// Everything of these organisations, nothing else.
    pub fn orgs(orgs: impl IntoIterator<Item = impl Into<OrgId>>) -> Self {
        Access {
            orgs: orgs.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// True when nothing at all is visible.
    pub fn is_empty(&self) -> bool {
        self.orgs.is_empty() && self.studies.is_empty() && self.patients.is_empty()
    }

    /// Whether a study of `org` with this patient is visible.
    pub fn allows(&self, org: &str, study_uid: &str, issuer: &str, patient_id: &str) -> bool {
        self.orgs.iter().any(|o| o == org)
            || self.studies.iter().any(|(o, s)| o == org && s == study_uid)
            || self
                .patients
                .iter()
                .any(|(o, i, p)| o == org && i == issuer && p == patient_id)
    }
}

/// The scope of a retrieval or deletion: a study, a series of it, or one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// What is visible (`None`: everything — the server itself).
    pub access: Option<Access>,
    /// Study Instance UID.
    pub study: Option<String>,
    /// Series Instance UID.
    pub series: Option<String>,
    /// SOP Instance UID.
    pub instance: Option<String>,
}

impl Scope {
    /// A whole study.
    pub fn study(study: impl Into<String>) -> Self {
        Scope {
            study: Some(study.into()),
            ..Default::default()
        }
    }

    /// A series.
    pub fn series(study: impl Into<String>, series: impl Into<String>) -> Self {
        Scope {
            study: Some(study.into()),
            series: Some(series.into()),
            ..Default::default()
        }
    }

    /// One instance.
    pub fn instance(
        study: impl Into<String>,
        series: impl Into<String>,
        sop: impl Into<String>,
    ) -> Self {
        Scope {
            study: Some(study.into()),
            series: Some(series.into()),
            instance: Some(sop.into()),
            ..Default::default()
        }
    }

    /// True when nothing narrows the scope (refused for deletion).
    pub fn is_unbounded(&self) -> bool {
        self.study.is_none() && self.series.is_none() && self.instance.is_none()
    }
}

/// Computed attributes added to a stored level JSON for a query answer.
#[derive(Debug, Clone, Default)]
pub struct Computed {
    /// ModalitiesInStudy.
    pub modalities: Vec<String>,
    /// SOP classes in study.
    pub sop_classes: Vec<String>,
    /// Number of related studies (patient level).
    pub studies: Option<u64>,
    /// Number of related series.
    pub series: Option<u64>,
    /// Number of related instances.
    pub instances: Option<u64>,
}

/// The attributes of one query answer: layers of stored DICOM JSON object text plus attributes
/// set one by one, merged only when written. Answers are spliced from stored text rather than
/// parsed into [`Json`] trees and serialized again: big QIDO answers (hundreds of studies) spent
/// most of their time in that round trip and its allocations (docs/benchmarks.md).
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// Attributes set one by one, as `(tag, raw JSON value)` sorted by tag; they win over
    /// layers.
    set: Vec<(Tag, String)>,
    /// Stored JSON objects, highest priority first.
    layers: Vec<Layer>,
}

/// One stored DICOM JSON object and where its top-level attributes are in its text, found
/// once when it is added (lookups and the final write then read the spans, not the text).
#[derive(Debug, Clone, Default)]
struct Layer {
    text: String,
    /// `(key start, key end, value start, value end)` byte offsets into `text`, in key order.
    spans: Vec<(u32, u32, u32, u32)>,
    /// The order key of each span ([`key_order`]), in the same order.
    keys: Vec<u64>,
}

/// The key of a tag in DICOM JSON: 8 upper-case hex digits (PS3.18 F.2.1.1.2).
fn tag_key(t: Tag) -> [u8; 8] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    std::array::from_fn(|i| HEX[((t >> (28 - 4 * i)) & 0xF) as usize])
}

/// Where a member key sorts: its tag for 8 hex digits (in the same order as the text, PS3.18
/// F.2.1.1.2), after every tag for anything else (`2^32 + n`, in the order met).
fn key_order(key: &str, n: usize) -> u64 {
    match key_tag(key) {
        Some(t) => u64::from(t),
        None => (1 << 32) + n as u64,
    }
}

/// The tag of an 8-hex-digit member key (either case).
fn key_tag(key: &str) -> Option<Tag> {
    let b = key.as_bytes();
    if b.len() != 8 {
        return None;
    }
    b.iter().try_fold(0u32, |acc, &c| {
        let d = (c as char).to_digit(16)?;
        Some(acc << 4 | d)
    })
}

/// The first value of a raw DICOM JSON string attribute (`{"vr":…,"Value":["…",…]}`) without
/// parsing it, when it holds no escape; `None` sends the caller to the full parse.
fn first_plain_string(raw: &str) -> Option<&str> {
    let at = raw.find("\"Value\":[\"")? + 10;
    let rest = &raw[at..];
    let end = rest.find(['"', '\\'])?;
    (rest.as_bytes()[end] == b'"').then(|| &rest[..end])
}

/// Appends `v` as a JSON string.
fn push_json_str(out: &mut String, v: &str) {
    if v.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(v);
        out.push('"');
    } else {
        out.push_str(&Json::from(v).to_string());
    }
}

/// The spans of the top-level members of a compact JSON object as `serde_json` writes it
/// (what the index stores); `None` for anything else, which the caller then parses fully.
fn scan_members(text: &str) -> Option<Vec<(u32, u32, u32, u32)>> {
    let b = text.as_bytes();
    let ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\n' | b'\r') {
            *i += 1;
        }
    };
    // The end of the string starting at `i` (on its opening quote): after its closing quote.
    let string_end = |mut i: usize| -> Option<usize> {
        i += 1;
        while i < b.len() {
            match b[i] {
                b'"' => return Some(i + 1),
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
        None
    };
    let mut out = Vec::with_capacity(24);
    let mut i = 0;
    ws(&mut i);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    ws(&mut i);
    if b.get(i) == Some(&b'}') {
        return Some(out);
    }
    loop {
        ws(&mut i);
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(i)?;
        let key = (i + 1, key_end - 1);
        if text[key.0..key.1].contains('\\') {
            return None; // an escaped key: let serde decode it
        }
        i = key_end;
        ws(&mut i);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        ws(&mut i);
        let start = i;
        match b.get(i)? {
            b'"' => i = string_end(i)?,
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match b.get(i)? {
                        b'"' => {
                            i = string_end(i)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {
                while i < b.len() && !matches!(b[i], b',' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                    i += 1;
                }
            }
        }
        out.push((key.0 as u32, key.1 as u32, start as u32, i as u32));
        ws(&mut i);
        match b.get(i)? {
            b',' => i += 1,
            b'}' => return Some(out),
            _ => return None,
        }
    }
}

impl Layer {
    fn new(text: String) -> Self {
        let spans = match scan_members(&text) {
            Some(spans) if text.len() < u32::MAX as usize => spans,
            _ => {
                let base = text.as_ptr() as usize;
                // Borrowed keys and raw values point into `text`: their offsets are what we keep.
                let at = |p: *const u8| (p as usize - base) as u32;
                pairs(&text)
                    .into_iter()
                    .map(|(k, v)| {
                        let (ks, vs) = (at(k.as_ptr()), at(v.get().as_ptr()));
                        (ks, ks + k.len() as u32, vs, vs + v.get().len() as u32)
                    })
                    .collect()
            }
        };
        let mut keyed: Vec<(u64, (u32, u32, u32, u32))> = spans
            .into_iter()
            .enumerate()
            .map(|(n, sp)| (key_order(&text[sp.0 as usize..sp.1 as usize], n), sp))
            .collect();
        // What the index stores is in tag order already; anything else is put in order once.
        if !keyed.is_sorted_by_key(|k| k.0) {
            keyed.sort_by_key(|k| k.0);
        }
        let (keys, spans) = keyed.into_iter().unzip();
        Layer { text, spans, keys }
    }

    /// The `(key, raw value)` pairs, in the object's order.
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans.iter().map(|&(ks, ke, vs, ve)| {
            (
                &self.text[ks as usize..ke as usize],
                &self.text[vs as usize..ve as usize],
            )
        })
    }

    /// The raw value of the member whose order key is `k`.
    fn get(&self, k: u64) -> Option<&str> {
        let n = self.keys.binary_search(&k).ok()?;
        let (_, _, vs, ve) = self.spans[n];
        Some(&self.text[vs as usize..ve as usize])
    }
}

/// The top-level `(key, raw value)` pairs of a JSON object, borrowed from its text.
struct Pairs<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Pairs<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Pairs<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a DICOM JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut v = Vec::with_capacity(map.size_hint().unwrap_or(24));
                while let Some(e) = map.next_entry::<&'de str, &'de RawValue>()? {
                    v.push(e);
                }
                Ok(Pairs(v))
            }
        }
        d.deserialize_map(V)
    }
}

fn pairs(text: &str) -> Vec<(&str, &RawValue)> {
    serde_json::from_str::<Pairs>(text)
        .map(|p| p.0)
        .unwrap_or_default()
}

impl Answer {
    /// Adds a stored DICOM JSON object whose attributes win over those added before.
    pub fn merge_text(&mut self, text: &str) {
        self.layers.insert(0, Layer::new(text.to_owned()));
    }

    /// Adds a stored DICOM JSON object, owned, whose attributes win over those added before.
    pub fn merge_owned(&mut self, text: String) {
        self.layers.insert(0, Layer::new(text));
    }

    /// Adds the attributes of another answer that this one lacks.
    pub fn merge_missing(&mut self, other: &Answer) {
        for (t, v) in &other.set {
            if !self.contains(*t) {
                self.set_raw(*t, v.clone());
            }
        }
        self.layers.extend(other.layers.iter().cloned());
    }

    /// Sets one attribute's raw JSON value, keeping `set` in tag order.
    fn set_raw(&mut self, t: Tag, v: String) {
        match self.set.binary_search_by_key(&t, |e| e.0) {
            Ok(n) => self.set[n].1 = v,
            Err(n) => self.set.insert(n, (t, v)),
        }
    }

    /// Sets one attribute from a DICOM JSON value (`{"vr": …, "Value": […]}`).
    pub fn insert(&mut self, t: Tag, value: &Json) {
        self.set_raw(t, value.to_string());
    }

    /// Sets one attribute to `{"vr": vr, "Value": values}` (`values`: a JSON array's text).
    pub fn insert_values(&mut self, t: Tag, vr: &str, values: &str) {
        let mut v = String::with_capacity(20 + vr.len() + values.len());
        v.push_str("{\"vr\":\"");
        v.push_str(vr);
        v.push_str("\",\"Value\":");
        v.push_str(values);
        v.push('}');
        self.set_raw(t, v);
    }

    /// Sets one attribute to a list of strings (UIDs, code strings, a URL).
    pub fn insert_strings<S: AsRef<str>>(&mut self, t: Tag, vr: &str, values: &[S]) {
        let len: usize = values.iter().map(|v| v.as_ref().len() + 3).sum();
        let mut v = String::with_capacity(22 + vr.len() + len);
        v.push_str("{\"vr\":\"");
        v.push_str(vr);
        v.push_str("\",\"Value\":[");
        for (n, s) in values.iter().enumerate() {
            if n > 0 {
                v.push(',');
            }
            push_json_str(&mut v, s.as_ref());
        }
        v.push_str("]}");
        self.set_raw(t, v);
    }

    /// The raw JSON value of an attribute (the highest-priority one).
    fn raw(&self, t: Tag) -> Option<&str> {
        if let Ok(n) = self.set.binary_search_by_key(&t, |e| e.0) {
            return Some(&self.set[n].1);
        }
        self.layers.iter().find_map(|l| l.get(u64::from(t)))
    }

    /// Whether the attribute is present.
    pub fn contains(&self, t: Tag) -> bool {
        self.raw(t).is_some()
    }

    /// One attribute, parsed.
    pub fn get(&self, t: Tag) -> Option<Json> {
        serde_json::from_str(self.raw(t)?).ok()
    }

    /// The first value of a string attribute (a UID).
    pub fn first_str(&self, t: Tag) -> Option<String> {
        let raw = self.raw(t)?;
        if let Some(v) = first_plain_string(raw) {
            return Some(v.to_owned());
        }
        serde_json::from_str::<Json>(raw)
            .ok()?
            .get("Value")?
            .get(0)?
            .as_str()
            .map(str::to_owned)
    }

    /// Every attribute once (the highest-priority value), in tag order, as `(tag or None for a
    /// key that is not a tag, the key's text when stored, raw value)`.
    fn merged(&self) -> Vec<(Option<Tag>, Option<&str>, &str)> {
        let mut all: Vec<(u64, usize, Option<&str>, &str)> = Vec::with_capacity(40);
        all.extend(
            self.set
                .iter()
                .map(|(t, v)| (u64::from(*t), 0, None, v.as_str())),
        );
        for (n, l) in self.layers.iter().enumerate() {
            all.extend(
                l.keys
                    .iter()
                    .zip(l.pairs())
                    .map(|(k, (kt, v))| (*k, n + 1, Some(kt), v)),
            );
        }
        all.sort_unstable_by_key(|e| (e.0, e.1));
        // Keys that are not tags are told apart by their text.
        all.dedup_by(|later, first| {
            later.0 == first.0 && (later.0 < 1 << 32 || later.2 == first.2)
        });
        all.into_iter()
            .map(|(k, _, kt, v)| (u32::try_from(k).ok(), kt, v))
            .collect()
    }

    /// Appends the answer as one DICOM JSON object, attributes in tag order (PS3.18 F.2), keeping
    /// only the attributes `keep` accepts (it is given `None` for a key that is not a tag).
    pub fn write_json(&self, out: &mut String, mut keep: impl FnMut(Option<Tag>) -> bool) {
        out.push('{');
        let mut first = true;
        for (t, kt, v) in self.merged() {
            if !keep(t) {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            out.push('"');
            match (t, kt) {
                // Tag keys are written upper-case, whatever the stored text had.
                (Some(t), _) => out.push_str(std::str::from_utf8(&tag_key(t)).expect("hex")),
                (None, Some(k)) => out.push_str(k),
                (None, None) => {}
            }
            out.push_str("\":");
            out.push_str(v);
        }
        out.push('}');
    }

    /// The answer as a parsed JSON object (C-FIND builds data sets from it).
    pub fn to_map(&self) -> Map<String, Json> {
        self.merged()
            .into_iter()
            .filter_map(|(t, kt, v)| {
                let k = match t {
                    Some(t) => String::from_utf8(tag_key(t).to_vec()).expect("hex"),
                    None => kt?.to_owned(),
                };
                Some((k, serde_json::from_str(v).ok()?))
            })
            .collect()
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.merged().len()
    }

    /// True without attributes.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.layers.iter().all(|l| l.spans.is_empty())
    }
}

/// Builds the answer attributes for one match: the stored level JSON (and the levels above it)
/// plus computed attributes (PS3.18 Table 10.6.3-3..5, PS3.4 C.3.4).
pub fn answer(level: Level, stored: &[&str], computed: &Computed) -> Answer {
    let mut m = Answer::default();
    for s in stored {
        m.merge_text(s);
    }
    // Raw JSON text, not `Json` trees: this runs for every answer of a query.
    let put_int = |m: &mut Answer, t: Tag, n: Option<u64>| {
        if let Some(n) = n {
            m.insert_values(t, "IS", &format!("[{n}]"));
        }
    };
    match level {
        Level::Patient => {
            put_int(
                &mut m,
                tag::NUMBER_OF_PATIENT_RELATED_STUDIES,
                computed.studies,
            );
            put_int(
                &mut m,
                tag::NUMBER_OF_PATIENT_RELATED_SERIES,
                computed.series,
            );
            put_int(
                &mut m,
                tag::NUMBER_OF_PATIENT_RELATED_INSTANCES,
                computed.instances,
            );
        }
        Level::Study => {
            if !computed.modalities.is_empty() {
                m.insert_strings(tag::MODALITIES_IN_STUDY, "CS", &computed.modalities);
            }
            if !computed.sop_classes.is_empty() {
                m.insert_strings(tag::SOP_CLASSES_IN_STUDY, "UI", &computed.sop_classes);
            }
            put_int(&mut m, tag::NUMBER_OF_STUDY_RELATED_SERIES, computed.series);
            put_int(
                &mut m,
                tag::NUMBER_OF_STUDY_RELATED_INSTANCES,
                computed.instances,
            );
        }
        Level::Series => {
            put_int(
                &mut m,
                tag::NUMBER_OF_SERIES_RELATED_INSTANCES,
                computed.instances,
            );
        }
        Level::Image => {}
    }
    m.insert_values(tag::INSTANCE_AVAILABILITY, "CS", "[\"ONLINE\"]");
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_merge_layers_and_set_values_in_tag_order() {
        let mut a = Answer::default();
        // A layer out of tag order, with a lower-case key and a key that is not a tag.
        a.merge_text(r#"{"00100020":{"vr":"LO","Value":["old"]},"0008005a":{"vr":"CS"},"zz":1}"#);
        a.merge_text(r#"{"00100020":{"vr":"LO","Value":["new"]},"00100010":{"vr":"PN"}}"#);
        a.insert_strings(0x0020_000D, "UI", &["1.2.3"]);
        a.insert_values(0x0008_0061, "CS", "[\"CT\"]");
        a.insert_values(0x0008_0061, "CS", "[\"MR\"]"); // replaces
        let mut out = String::new();
        a.write_json(&mut out, |_| true);
        assert_eq!(
            out,
            r#"{"0008005A":{"vr":"CS"},"00080061":{"vr":"CS","Value":["MR"]},"00100010":{"vr":"PN"},"00100020":{"vr":"LO","Value":["new"]},"0020000D":{"vr":"UI","Value":["1.2.3"]},"zz":1}"#
        );
        assert_eq!(a.first_str(0x0010_0020).as_deref(), Some("new"));
        assert_eq!(a.first_str(0x0020_000D).as_deref(), Some("1.2.3"));
        assert!(a.contains(0x0008_005A) && !a.contains(0x0008_0050));
        let mut only = String::new();
        a.write_json(&mut only, |t| t == Some(0x0010_0010));
        assert_eq!(only, r#"{"00100010":{"vr":"PN"}}"#);
        let serde: Json = serde_json::from_str(&out).unwrap();
        assert_eq!(Json::Object(a.to_map()), serde);
    }

    #[test]
    fn the_member_scanner_agrees_with_serde() {
        for text in [
            r#"{}"#,
            r#" { } "#,
            r#"{"00100010":{"vr":"PN","Value":[{"Alphabetic":"Doe^J}]\"o"}]},"00201208":{"vr":"IS","Value":[23]}}"#,
            r#"{ "0020000D" : {"vr":"UI","Value":["1.2.3"]} , "00081115":{"vr":"SQ","Value":[{"0020000E":{"vr":"UI","Value":["1.2"]}},{}]},"7FE00010":{"vr":"OW","BulkDataURI":"x[{"},"x":true,"y":null,"z":-1.5e3}"#,
        ] {
            let mut scanned = scan_members(text).unwrap();
            let mut want: Vec<(&str, &str)> =
                pairs(text).into_iter().map(|(k, v)| (k, v.get())).collect();
            let layer = Layer::new(text.to_owned());
            // The layer keeps its members in tag order (here also the text's order: tags
            // begin with digits, the other keys with letters).
            scanned.sort_by_key(|sp| &text[sp.0 as usize..sp.1 as usize]);
            want.sort();
            assert_eq!(layer.spans, scanned, "{text}");
            let got: Vec<(&str, &str)> = layer.pairs().collect();
            assert_eq!(got, want, "{text}");
        }
        // Not an object, cut short, an escaped key: left to serde.
        for text in [
            r#"[]"#,
            r#"{"a":"#,
            r#"{"a":1"#,
            r#"{"\u0061":1}"#,
            r#"{"a" 1}"#,
        ] {
            assert!(scan_members(text).is_none(), "{text}");
        }
        assert_eq!(&tag_key(0x0020_000D), b"0020000D");
        assert_eq!(&tag_key(0x7FE0_0010), b"7FE00010");
        assert_eq!(key_tag("0020000d"), Some(0x0020_000D));
        assert_eq!(key_tag("7FE00010"), Some(0x7FE0_0010));
        assert_eq!(key_tag("7FE0001"), None);
        assert_eq!(key_tag("7FE0001G"), None);
        assert_eq!(
            first_plain_string(r#"{"vr":"UI","Value":["1.2.3","4"]}"#),
            Some("1.2.3")
        );
        assert_eq!(first_plain_string(r#"{"vr":"LO","Value":["a\"b"]}"#), None);
        assert_eq!(first_plain_string(r#"{"vr":"UI"}"#), None);
        let mut a = Answer::default();
        a.insert_strings(tag::RETRIEVE_URL, "UR", &["http://h/a\"b"]);
        assert_eq!(
            a.get(tag::RETRIEVE_URL).unwrap()["Value"][0],
            "http://h/a\"b"
        );
    }

    fn m(key: Key, raw: &str) -> Matcher {
        Matcher::parse(key, raw).unwrap().unwrap()
    }

    #[test]
    fn matching_rules() {
        assert!(m(Key::PatientName, "doe^j*").matches(Key::PatientName, "Doe^Jane", false));
        assert!(!m(Key::PatientName, "doe^x*").matches(Key::PatientName, "Doe^Jane", false));
        assert!(m(Key::PatientName, "doe^jane").matches(
            Key::PatientName,
            "Doe^Jane=ドウ^ジェーン",
            false
        ));
        assert!(m(Key::PatientName, "jan").matches(Key::PatientName, "Doe^Jane", true));
        assert!(!m(Key::PatientName, "jan").matches(Key::PatientName, "Doe^Jane", false));
        assert!(m(Key::PatientId, "AB?1").matches(Key::PatientId, "ABC1", false));
        assert!(!m(Key::PatientId, "ab?1").matches(Key::PatientId, "ABC1", false));
        let r = m(Key::StudyDate, "20200101-20201231");
        assert!(r.matches(Key::StudyDate, "20200615", false));
        assert!(!r.matches(Key::StudyDate, "20210101", false));
        assert!(m(Key::StudyDate, "-20200101").matches(Key::StudyDate, "19991231", false));
        assert!(m(Key::StudyTime, "10-11").matches(Key::StudyTime, "1130", false));
        assert!(!m(Key::StudyTime, "10-11").matches(Key::StudyTime, "1200", false));
        assert_eq!(
            m(Key::StudyInstanceUid, "1.2\\1.3"),
            Matcher::List(vec!["1.2".into(), "1.3".into()])
        );
        assert!(Matcher::parse(Key::StudyInstanceUid, "1.02").is_err());
        assert!(Matcher::parse(Key::StudyDate, "2020-13").is_err());
        assert!(Matcher::parse(Key::PatientId, "*").unwrap().is_none());
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"*", b""));
        assert!(wildcard_match(b"A*C", b"ABBBC"));
        assert!(!wildcard_match(b"A*C", b"ABBBD"));
        assert!(wildcard_match("Ü?".as_bytes(), "ÜX".as_bytes()));
    }
}
