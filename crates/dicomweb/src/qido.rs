//! QIDO-RS: search for studies, series and instances (PS3.18 10.6).
//!
//! Resources: `GET /studies`, `/series`, `/instances`, `/studies/{study}/series`,
//! `/studies/{study}/instances`, `/studies/{study}/series/{series}/instances`.
//!
//! Query parameters (PS3.18 8.3.4):
//! - `{attribute}={value}` where the attribute is a keyword (`PatientName`) or a tag
//!   (`00100010`): matched per PS3.4 C.2.2.2 by the shared query engine ([`Matcher::parse`]:
//!   single value, `*`/`?` wildcards, date/time ranges, UID lists). A valid attribute the engine
//!   cannot match on (including sequence paths `00081032.00080100`) is ignored with a
//!   `Warning: 299 {host}: "The attribute X is not supported for matching."` header; an unknown
//!   one is a 400. An empty value asks for the attribute to be returned (universal matching).
//! - `includefield` (repeatable, comma-separated, `all`), `limit` (capped by
//!   `max_query_results`), `offset`, `fuzzymatching=true` (person-name component prefixes).
//!
//! Each answer carries the attributes its level requires (PS3.18 Tables 10.6.3-3, -4, -5; the
//! study-level ones too when the resource names no study, the series-level ones when it names no
//! series), the matching keys, the included fields, and its RetrieveURL (0008,1190). When more
//! matches exist than `max_query_results`, the answer holds that many and a Warning says so.
//! An empty result is `200 []`: PS3.18 allows 204 but clients cope better with an empty array.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use axum::extract::{Path, Query as QueryParams};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_dictionary_std::StandardDataDictionary;

use vesalius_core::tag::{self, Tag};
use vesalius_store::query::{Key, Level, Matcher, Query, Scope, StudyOrder};

use crate::caller::Ctx;
use crate::error::{DicomWebError, Result};
use crate::multipart::parse_accept;
use crate::{ServiceUrl, check_uids};

type Params = QueryParams<Vec<(String, String)>>;
use vesalius_store::query::Answer;

/// PS3.18 Table 10.6.3-3 (study), plus Specific Character Set and Study Description.
const STUDY_DEFAULT: &[Tag] = &[
    tag::SPECIFIC_CHARACTER_SET,
    tag::STUDY_DATE,
    tag::STUDY_TIME,
    tag::ACCESSION_NUMBER,
    tag::INSTANCE_AVAILABILITY,
    tag::MODALITIES_IN_STUDY,
    tag::REFERRING_PHYSICIAN_NAME,
    tag::TIMEZONE_OFFSET_FROM_UTC,
    tag::STUDY_DESCRIPTION,
    tag::RETRIEVE_URL,
    tag::PATIENT_NAME,
    tag::PATIENT_ID,
    tag::PATIENT_BIRTH_DATE,
    tag::PATIENT_SEX,
    tag::STUDY_INSTANCE_UID,
    tag::STUDY_ID,
    tag::NUMBER_OF_STUDY_RELATED_SERIES,
    tag::NUMBER_OF_STUDY_RELATED_INSTANCES,
];

/// PS3.18 Table 10.6.3-4 (series), plus Specific Character Set and the Study Instance UID.
const SERIES_DEFAULT: &[Tag] = &[
    tag::SPECIFIC_CHARACTER_SET,
    tag::MODALITY,
    tag::TIMEZONE_OFFSET_FROM_UTC,
    tag::SERIES_DESCRIPTION,
    tag::RETRIEVE_URL,
    tag::STUDY_INSTANCE_UID,
    tag::SERIES_INSTANCE_UID,
    tag::SERIES_NUMBER,
    tag::NUMBER_OF_SERIES_RELATED_INSTANCES,
    0x0040_0244, // PerformedProcedureStepStartDate
    0x0040_0245, // PerformedProcedureStepStartTime
    0x0040_0275, // RequestAttributesSequence
];

/// PS3.18 Table 10.6.3-5 (instance), plus Specific Character Set and the parent UIDs.
const INSTANCE_DEFAULT: &[Tag] = &[
    tag::SPECIFIC_CHARACTER_SET,
    tag::SOP_CLASS_UID,
    tag::SOP_INSTANCE_UID,
    tag::INSTANCE_AVAILABILITY,
    tag::TIMEZONE_OFFSET_FROM_UTC,
    tag::RETRIEVE_URL,
    tag::STUDY_INSTANCE_UID,
    tag::SERIES_INSTANCE_UID,
    tag::INSTANCE_NUMBER,
    tag::NUMBER_OF_FRAMES,
    tag::ROWS,
    tag::COLUMNS,
    tag::BITS_ALLOCATED,
];

/// The resource searched: its level and the UIDs its path fixes.
#[derive(Debug, Clone)]
struct Target {
    level: Level,
    study: Option<String>,
    series: Option<String>,
}

/// `GET /studies`.
pub(crate) async fn studies(st: Ctx, url: ServiceUrl, h: HeaderMap, p: Params) -> Response {
    search(st, url, h, p, Level::Study, None, None).await
}

/// `GET /series`.
pub(crate) async fn series(st: Ctx, url: ServiceUrl, h: HeaderMap, p: Params) -> Response {
    search(st, url, h, p, Level::Series, None, None).await
}

/// `GET /instances`.
pub(crate) async fn instances(st: Ctx, url: ServiceUrl, h: HeaderMap, p: Params) -> Response {
    search(st, url, h, p, Level::Image, None, None).await
}

/// `GET /studies/{study}/series`.
pub(crate) async fn study_series(
    st: Ctx,
    url: ServiceUrl,
    Path(study): Path<String>,
    h: HeaderMap,
    p: Params,
) -> Response {
    search(st, url, h, p, Level::Series, Some(study), None).await
}

/// `GET /studies/{study}/instances`.
pub(crate) async fn study_instances(
    st: Ctx,
    url: ServiceUrl,
    Path(study): Path<String>,
    h: HeaderMap,
    p: Params,
) -> Response {
    search(st, url, h, p, Level::Image, Some(study), None).await
}

/// `GET /studies/{study}/series/{series}/instances`.
pub(crate) async fn series_instances(
    st: Ctx,
    url: ServiceUrl,
    Path((study, series)): Path<(String, String)>,
    h: HeaderMap,
    p: Params,
) -> Response {
    search(st, url, h, p, Level::Image, Some(study), Some(series)).await
}

async fn search(
    st: Ctx,
    url: ServiceUrl,
    headers: HeaderMap,
    QueryParams(params): Params,
    level: Level,
    study: Option<String>,
    series: Option<String>,
) -> Response {
    let started = Instant::now();
    let target = Target {
        level,
        study,
        series,
    };
    let r = run(&st, &url, &headers, &params, &target).await;
    metrics::histogram!("vesalius_qido_seconds").record(started.elapsed().as_secs_f64());
    match r {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// A parsed QIDO request.
#[derive(Debug, Default)]
struct Request {
    filters: Vec<(Key, Matcher)>,
    /// Tags named as matching keys: returned too (PS3.18 10.6.3.3).
    keys: BTreeSet<Tag>,
    include_all: bool,
    include: BTreeSet<Tag>,
    limit: Option<usize>,
    offset: usize,
    order: StudyOrder,
    fuzzy: bool,
    warnings: Vec<String>,
    accept: Vec<String>,
}

async fn run(
    st: &Ctx,
    url: &ServiceUrl,
    headers: &HeaderMap,
    params: &[(String, String)],
    target: &Target,
) -> Result<Response> {
    let mut req = parse_params(params)?;
    let accept_header = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    check_accept(accept_header, &req.accept)?;
    let mut path_uids: Vec<&str> = Vec::new();
    if let Some(s) = &target.study {
        path_uids.push(s);
        req.filters
            .push((Key::StudyInstanceUid, Matcher::Single(s.clone())));
    }
    if let Some(s) = &target.series {
        path_uids.push(s);
        req.filters
            .push((Key::SeriesInstanceUid, Matcher::Single(s.clone())));
    }
    check_uids(&path_uids)?;
    let max = st.options.max_query_results;
    let limit = req.limit.unwrap_or(max).min(max);
    // Ask for one more than the cap to know whether to warn that results were cut.
    let probe = req.limit.is_none_or(|l| l > max);
    let query = Query {
        level: target.level,
        access: st.access(),
        filters: std::mem::take(&mut req.filters),
        fuzzy: req.fuzzy,
        offset: req.offset,
        limit: if probe { limit + 1 } else { limit },
        order: req.order,
    };
    let mut answers = st.ingestor.index().find(&query).await?;
    // Issue 4: every search is audited (what was asked, how many answers), off the response path.
    st.append(st.caller.event(
        "query",
        vesalius_store::audit::Outcome::Success,
        st.caller.org(),
        target.study.as_deref(),
        serde_json::json!({
            "level": target.level.as_str(),
            "params": params,
            "answers": answers.len().min(limit),
        }),
    ));
    if answers.len() > limit {
        answers.truncate(limit);
        req.warnings.push(format!(
            "There are more results than the maximum of {max}: use offset to page"
        ));
    }
    complete(st, target, &mut answers).await?;
    let allowed = allowed_tags(target, &req);
    let mut body = String::with_capacity(answers.len() * 1024 + 2);
    body.push('[');
    for (n, mut a) in answers.into_iter().enumerate() {
        add_retrieve_url(url, target.level, &mut a);
        if n > 0 {
            body.push(',');
        }
        match &allowed {
            Some(allowed) => a.write_json(&mut body, |t| t.is_some_and(|t| allowed.contains(&t))),
            None => a.write_json(&mut body, |_| true),
        }
    }
    body.push(']');
    let mut resp = ([(header::CONTENT_TYPE, "application/dicom+json")], body).into_response();
    let agent = url
        .0
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("vesalius")
        .to_owned();
    for w in &req.warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 {agent}: \"{w}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    Ok(resp)
}

/// The tag of an attribute named by keyword or by 8 hex digits.
pub(crate) fn attribute_tag(name: &str) -> Option<Tag> {
    if name.len() == 8 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return u32::from_str_radix(name, 16).ok();
    }
    let e = StandardDataDictionary.by_name(name)?;
    let t = e.tag();
    Some(tag::tag(t.group(), t.element()))
}

fn parse_params(params: &[(String, String)]) -> Result<Request> {
    let mut req = Request::default();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for (name, value) in params {
        match name.as_str() {
            "includefield" => {
                for f in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if f == "all" {
                        req.include_all = true;
                        continue;
                    }
                    // A sequence path includes its top-level sequence.
                    let top = f.split('.').next().unwrap_or(f);
                    let t = attribute_tag(top).ok_or_else(|| {
                        DicomWebError::bad_request(format!("includefield: unknown attribute {f:?}"))
                    })?;
                    req.include.insert(t);
                }
            }
            "limit" => req.limit = Some(number(name, value)?),
            "offset" => req.offset = number(name, value)?,
            // Not in PS3.18: our vendor sort of study-level answers (StudyOrder).
            "orderby" => {
                req.order = StudyOrder::parse(value).ok_or_else(|| {
                    DicomWebError::bad_request(format!(
                        "orderby must be -StudyDate, StudyDate or PatientName, not {value:?}"
                    ))
                })?
            }
            "fuzzymatching" => {
                req.fuzzy = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    v => {
                        return Err(DicomWebError::bad_request(format!(
                            "fuzzymatching must be true or false, not {v:?}"
                        )));
                    }
                }
            }
            "emptyvaluematching" => {
                if value == "true" {
                    req.warnings
                        .push("The emptyvaluematching parameter is not supported".into());
                }
            }
            "accept" => req.accept.push(value.clone()),
            attr => {
                if !seen.insert(attr) {
                    return Err(DicomWebError::bad_request(format!(
                        "the attribute {attr} is given more than once"
                    )));
                }
                parse_attribute(&mut req, attr, value)?;
            }
        }
    }
    Ok(req)
}

fn parse_attribute(req: &mut Request, attr: &str, value: &str) -> Result<()> {
    let path: Option<Vec<Tag>> = attr.split('.').map(attribute_tag).collect();
    let path = path.ok_or_else(|| {
        DicomWebError::bad_request(format!("unknown query parameter or attribute {attr:?}"))
    })?;
    let key = match path.as_slice() {
        [t] => Key::from_tag(*t),
        _ => None,
    };
    req.keys.insert(path[0]);
    match key {
        Some(key) => {
            if let Some(m) = Matcher::parse(key, value)? {
                req.filters.push((key, m));
            }
        }
        None => req.warnings.push(format!(
            "The attribute {attr} is not supported for matching."
        )),
    }
    Ok(())
}

fn number(name: &str, value: &str) -> Result<usize> {
    value.trim().parse().map_err(|_| {
        DicomWebError::bad_request(format!(
            "{name} must be a non-negative integer, not {value:?}"
        ))
    })
}

/// QIDO answers are DICOM JSON: refuse clients that accept only something else (XML).
fn check_accept(header: Option<&str>, params: &[String]) -> Result<()> {
    let mut entries = parse_accept(header);
    for p in params {
        entries.extend(parse_accept(Some(p)));
    }
    if entries.is_empty()
        || entries
            .iter()
            .any(|m| m.covers("application/dicom+json") || m.covers("application/json"))
    {
        return Ok(());
    }
    Err(DicomWebError::not_acceptable(
        "QIDO-RS answers application/dicom+json only",
    ))
}

fn uid_of(a: &Answer, t: Tag) -> Option<String> {
    a.first_str(t)
}

fn set_uid(a: &mut Answer, t: Tag, uid: &str) {
    a.insert(t, &serde_json::json!({"vr": "UI", "Value": [uid]}));
}

/// Adds what the stored level attributes lack: the UIDs of the parent levels and, when the
/// resource names no study (series), the study- (and series-) level attributes.
async fn complete(st: &Ctx, target: &Target, answers: &mut [Answer]) -> Result<()> {
    if target.level == Level::Study || answers.is_empty() {
        return Ok(());
    }
    let access = st.access();
    // Within one study, one index read maps every instance to its series.
    let mut in_study: Option<BTreeMap<String, (String, String)>> = None;
    for a in answers.iter_mut() {
        let missing_study = !a.contains(tag::STUDY_INSTANCE_UID);
        let missing_series = target.level == Level::Image && !a.contains(tag::SERIES_INSTANCE_UID);
        if !missing_study && !missing_series {
            continue;
        }
        let parents = match (&target.study, &target.series) {
            (Some(s), Some(se)) => Some((s.clone(), se.clone())),
            (Some(s), None) if !missing_series => Some((s.clone(), String::new())),
            (Some(s), None) => {
                if in_study.is_none() {
                    let scope = Scope {
                        access: access.clone(),
                        study: Some(s.clone()),
                        ..Default::default()
                    };
                    let all = st.ingestor.index().instances(&scope).await?;
                    in_study = Some(
                        all.into_iter()
                            .map(|i| (i.sop_instance_uid, (i.study_uid, i.series_uid)))
                            .collect(),
                    );
                }
                uid_of(a, tag::SOP_INSTANCE_UID)
                    .and_then(|sop| in_study.as_ref().and_then(|m| m.get(&sop)).cloned())
            }
            (None, _) => {
                // The stored level JSON lacks the parent UIDs: ask the index (one row).
                let scope = match target.level {
                    Level::Series => Scope {
                        access: access.clone(),
                        series: uid_of(a, tag::SERIES_INSTANCE_UID),
                        ..Default::default()
                    },
                    _ => Scope {
                        access: access.clone(),
                        instance: uid_of(a, tag::SOP_INSTANCE_UID),
                        ..Default::default()
                    },
                };
                if scope.is_unbounded() {
                    None
                } else {
                    let found = st.ingestor.index().instances(&scope).await?;
                    found
                        .into_iter()
                        .next()
                        .map(|i| (i.study_uid, i.series_uid))
                }
            }
        };
        let Some((study, series)) = parents else {
            continue;
        };
        set_uid(a, tag::STUDY_INSTANCE_UID, &study);
        if missing_series && !series.is_empty() {
            set_uid(a, tag::SERIES_INSTANCE_UID, &series);
        }
    }
    if target.study.is_none() {
        merge_level(st, answers, Level::Study, Key::StudyInstanceUid).await?;
    }
    if target.level == Level::Image && target.series.is_none() {
        merge_level(st, answers, Level::Series, Key::SeriesInstanceUid).await?;
    }
    Ok(())
}

/// Copies the attributes of each answer's study (or series) into it, one query per 500 UIDs.
async fn merge_level(st: &Ctx, answers: &mut [Answer], level: Level, key: Key) -> Result<()> {
    let mut uids: Vec<String> = answers
        .iter()
        .filter_map(|a| uid_of(a, key.tag()))
        .collect();
    uids.sort();
    uids.dedup();
    let mut by_uid: BTreeMap<String, Answer> = BTreeMap::new();
    for chunk in uids.chunks(500) {
        let m = match chunk {
            [one] => Matcher::Single(one.clone()),
            _ => Matcher::List(chunk.to_vec()),
        };
        let q = Query {
            level,
            access: st.access(),
            filters: vec![(key, m)],
            fuzzy: false,
            offset: 0,
            limit: chunk.len(),
            order: Default::default(),
        };
        for found in st.ingestor.index().find(&q).await? {
            if let Some(u) = uid_of(&found, key.tag()) {
                by_uid.insert(u, found);
            }
        }
    }
    for a in answers.iter_mut() {
        let Some(parent) = uid_of(a, key.tag()).and_then(|u| by_uid.get(&u)) else {
            continue;
        };
        a.merge_missing(parent);
    }
    Ok(())
}

fn add_retrieve_url(url: &ServiceUrl, level: Level, a: &mut Answer) {
    // Only the UIDs the level needs: each lookup reads the answer's stored JSON again.
    let Some(study) = uid_of(a, tag::STUDY_INSTANCE_UID) else {
        return;
    };
    let u = match level {
        Level::Study | Level::Patient => url.study(&study),
        Level::Series => match uid_of(a, tag::SERIES_INSTANCE_UID) {
            Some(se) => url.series(&study, &se),
            None => return,
        },
        Level::Image => match (
            uid_of(a, tag::SERIES_INSTANCE_UID),
            uid_of(a, tag::SOP_INSTANCE_UID),
        ) {
            (Some(se), Some(i)) => url.instance(&study, &se, &i),
            _ => return,
        },
    };
    a.insert_strings(tag::RETRIEVE_URL, "UR", &[u]);
}

/// The keys an answer keeps, or `None` for all (`includefield=all`).
fn allowed_tags(target: &Target, req: &Request) -> Option<BTreeSet<Tag>> {
    if req.include_all {
        return None;
    }
    let mut tags: BTreeSet<Tag> = BTreeSet::new();
    let level_default = match target.level {
        Level::Study | Level::Patient => STUDY_DEFAULT,
        Level::Series => SERIES_DEFAULT,
        Level::Image => INSTANCE_DEFAULT,
    };
    tags.extend(level_default);
    if target.level > Level::Study && target.study.is_none() {
        tags.extend(STUDY_DEFAULT);
    }
    if target.level == Level::Image && target.series.is_none() {
        tags.extend(SERIES_DEFAULT);
    }
    tags.extend(&req.include);
    tags.extend(&req.keys);
    Some(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn attributes_by_keyword_and_tag() {
        assert_eq!(attribute_tag("PatientName"), Some(tag::PATIENT_NAME));
        assert_eq!(attribute_tag("0020000d"), Some(tag::STUDY_INSTANCE_UID));
        assert_eq!(attribute_tag("NotAKeyword"), None);
    }

    #[test]
    fn parameters() {
        let r = parse_params(&p(&[
            ("PatientName", "doe*"),
            ("00080020", "20200101-"),
            ("includefield", "00081030,SeriesDescription"),
            ("includefield", "all"),
            ("limit", "5"),
            ("offset", "2"),
            ("fuzzymatching", "true"),
            ("InstitutionName", "x"),
            ("00081032.00080100", "y"),
        ]))
        .unwrap();
        assert_eq!(r.filters.len(), 2);
        assert!(r.include_all && r.fuzzy);
        assert_eq!((r.limit, r.offset), (Some(5), 2));
        assert!(r.include.contains(&tag::SERIES_DESCRIPTION));
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("InstitutionName"));
        for bad in [
            p(&[("Bogus", "1")]),
            p(&[("limit", "-1")]),
            p(&[("StudyDate", "2020")]),
            p(&[("StudyInstanceUID", "1.02")]),
            p(&[("PatientID", "1"), ("PatientID", "2")]),
            p(&[("includefield", "Nope")]),
        ] {
            assert!(parse_params(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn accept() {
        assert!(check_accept(None, &[]).is_ok());
        assert!(check_accept(Some("application/dicom+json"), &[]).is_ok());
        assert!(check_accept(Some("*/*"), &[]).is_ok());
        assert!(
            check_accept(
                Some("multipart/related; type=\"application/dicom+xml\""),
                &[]
            )
            .is_err()
        );
    }
}
