//! Query/Retrieve C-FIND SCP, Patient Root and Study Root information models (PS3.4 C.4.1,
//! C.6.1, C.6.2), over the query model shared with QIDO-RS.
//!
//! Contract:
//! - The identifier's Query/Retrieve Level (0008,0052) picks the level; every other key with a
//!   non-empty value that the index can match on ([`Key::from_tag`]) becomes a filter parsed with
//!   PS3.4 C.2.2.2 rules ([`Matcher::parse`]): single value, wildcards, ranges, UID lists. Keys of
//!   the levels above (PatientID, StudyInstanceUID, SeriesInstanceUID) therefore narrow the query as
//!   PS3.4 C.4.1.3.1 requires; keys of levels below the query level are ignored.
//! - A key the index cannot match on is ignored for matching and returned empty when it carried a
//!   value; a return key (empty in the request) is filled from the answer when the index has it.
//! - Each match is one pending response (0xFF00) whose identifier holds exactly the requested keys
//!   plus Query/Retrieve Level, and Specific Character Set "ISO_IR 192" when a value is not ASCII
//!   (answers are UTF-8). The final response is 0x0000, or 0xFE00 after a C-CANCEL-RQ.
//! - Only AE titles allowed to query (`Action::Query`: registered with `may_query`) may search;
//!   others get 0x0124 "Refused: Not Authorized". Answers are limited to what the AE may see
//!   (its [`Access`], filtered inside the index query, so paging stays correct) and to
//!   `max_query_results`.
//! - Every search is audited as a `query` event (level, matching keys by tag, number of
//!   answers), appended off the response path.

use dicom_core::VR;
use serde_json::{Map, Value as Json};
use vesalius_auth::{Action, Resource};
use vesalius_core::charset::CharacterSet;
use vesalius_core::parse::{DataSet, Value};
use vesalius_core::tag;
use vesalius_store::audit::Outcome;
use vesalius_store::query::{Access, Key, Level, Matcher, Query};

use crate::access::Peer;
use crate::association::Association;
use crate::dataset::{self, DataSetWriter, from_json};
use crate::error::{Error, Result};
use crate::message::{Command, field, sop_class, status};
use crate::server::Server;

/// The information model of a Q/R SOP class (PS3.4 C.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Patient Root (PATIENT, STUDY, SERIES, IMAGE).
    PatientRoot,
    /// Study Root (STUDY, SERIES, IMAGE).
    StudyRoot,
}

impl Model {
    /// The model of a FIND/MOVE/GET SOP class UID.
    pub fn of(sop_class_uid: &str) -> Option<Model> {
        match sop_class_uid {
            sop_class::PATIENT_ROOT_FIND
            | sop_class::PATIENT_ROOT_MOVE
            | sop_class::PATIENT_ROOT_GET => Some(Model::PatientRoot),
            sop_class::STUDY_ROOT_FIND | sop_class::STUDY_ROOT_MOVE | sop_class::STUDY_ROOT_GET => {
                Some(Model::StudyRoot)
            }
            _ => None,
        }
    }

    /// The level of an identifier, checked against the model.
    pub fn level(self, ident: &DataSet) -> std::result::Result<Level, String> {
        let raw = ident.str(tag::QUERY_RETRIEVE_LEVEL).unwrap_or("");
        let level =
            Level::parse(raw).ok_or_else(|| format!("invalid Query/Retrieve Level {raw:?}"))?;
        if self == Model::StudyRoot && level == Level::Patient {
            return Err("PATIENT level in the Study Root model".into());
        }
        Ok(level)
    }
}

/// One key of the request, as it must be answered.
#[derive(Debug, Clone)]
struct Requested {
    tag: u32,
    vr: VR,
    /// Non-empty but not matchable: returned empty.
    empty: bool,
    /// The request's own value, echoed for unique keys the answer lacks.
    echo: Option<String>,
    /// Keys asked for inside a sequence's item.
    item_keys: Vec<(u32, VR)>,
}

/// A parsed C-FIND request: the index query and how to build each answer.
#[derive(Debug, Clone)]
pub struct FindPlan {
    /// The query over the index.
    pub query: Query,
    requested: Vec<Requested>,
    /// The matching keys as asked (tag as in DICOM JSON, value as sent), for the audit trail.
    keys: Map<String, Json>,
}

fn is_unique_key(t: u32) -> bool {
    matches!(
        t,
        tag::PATIENT_ID
            | tag::STUDY_INSTANCE_UID
            | tag::SERIES_INSTANCE_UID
            | tag::SOP_INSTANCE_UID
    )
}

impl FindPlan {
    /// Builds the plan for an identifier (PS3.4 C.4.1.2.1, C.4.1.3.1) over what `access` lets
    /// the caller see (`None`: everything); `Err` carries the Error Comment of a 0xA900 answer.
    pub fn new(
        ident: &DataSet,
        model: Model,
        access: Option<Access>,
        limit: usize,
    ) -> std::result::Result<FindPlan, String> {
        let level = model.level(ident)?;
        let cs = CharacterSet::from_value(ident.bytes(tag::SPECIFIC_CHARACTER_SET));
        let mut query = Query::new(level);
        query.access = access;
        query.limit = limit;
        let mut requested = Vec::new();
        let mut keys = Map::new();
        for el in &ident.elements {
            let t = el.tag;
            if tag::group(t) <= 0x0002
                || tag::is_group_length(t)
                || t == tag::SPECIFIC_CHARACTER_SET
                || t == tag::QUERY_RETRIEVE_LEVEL
            {
                continue;
            }
            let mut r = Requested {
                tag: t,
                vr: el.vr,
                empty: false,
                echo: None,
                item_keys: Vec::new(),
            };
            match &el.value {
                Value::Items(items) => {
                    if let Some(first) = items.first() {
                        r.item_keys = first.elements.iter().map(|e| (e.tag, e.vr)).collect();
                    }
                }
                Value::Bytes(b) => {
                    let raw = cs.decode(b).text;
                    let raw = raw.trim_matches(|c| c == ' ' || c == '\0');
                    if !raw.is_empty() {
                        keys.insert(format!("{t:08X}"), Json::from(raw));
                        match Key::from_tag(t) {
                            // Keys of the levels below the query level are not matched.
                            Some(key) if key.level() <= level => match Matcher::parse(key, raw) {
                                Ok(Some(m)) => {
                                    if is_unique_key(t) && matches!(m, Matcher::Single(_)) {
                                        r.echo = Some(raw.to_owned());
                                    }
                                    query.filters.push((key, m));
                                }
                                Ok(None) => {}
                                Err(e) => return Err(e.to_string()),
                            },
                            Some(_) => {}
                            None => r.empty = true,
                        }
                    }
                }
                _ => r.empty = true,
            }
            requested.push(r);
        }
        Ok(FindPlan {
            query,
            requested,
            keys,
        })
    }

    /// The Study Instance UID the query is limited to, when it names exactly one.
    fn single_study(&self) -> Option<&str> {
        self.query.filters.iter().find_map(|(k, m)| match (k, m) {
            (Key::StudyInstanceUid, Matcher::Single(uid)) => Some(uid.as_str()),
            _ => None,
        })
    }

    /// The answer identifier for one match (a DICOM JSON object of the query's level).
    pub fn answer(&self, json: &Map<String, Json>, our_ae: &str) -> DataSetWriter {
        let mut w = DataSetWriter::new();
        let mut non_ascii = false;
        w.put_str(tag::QUERY_RETRIEVE_LEVEL, VR::CS, self.query.level.as_str());
        for r in &self.requested {
            let el = json.get(&format!("{:08X}", r.tag));
            let vr = match (r.vr, el.and_then(from_json::vr_of)) {
                (VR::UN, Some(v)) => v,
                (v, _) => v,
            };
            if r.empty {
                from_json::put(&mut w, r.tag, vr, None, None);
            } else if el.is_none() && r.echo.is_some() {
                w.put_str(r.tag, vr, r.echo.as_deref().unwrap_or(""));
            } else if el.is_none() && r.tag == tag::RETRIEVE_AE_TITLE {
                w.put_str(r.tag, VR::AE, our_ae);
            } else {
                let keys = (!r.item_keys.is_empty()).then_some(r.item_keys.as_slice());
                non_ascii |= from_json::put(&mut w, r.tag, vr, el, keys);
            }
        }
        if non_ascii {
            w.put_str(tag::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
        }
        w
    }
}

async fn refuse(assoc: &mut Association, pc: u8, cmd: &Command, st: u16, why: &str) -> Result<()> {
    tracing::info!(
        status = format!("0x{st:04X}"),
        reason = why,
        "C-FIND refused"
    );
    let mut rsp = Command::response_to(cmd, st);
    rsp.set_error_comment(why);
    assoc.send_message(pc, &rsp, None).await
}

/// True when `c` cancels the operation `message_id` (PS3.7 9.3.2.3).
pub(crate) fn is_cancel(c: &Command, message_id: u16) -> Result<bool> {
    if c.command_field() != field::C_CANCEL_RQ {
        return Err(Error::Protocol(format!(
            "request 0x{:04X} while an operation is in progress",
            c.command_field()
        )));
    }
    Ok(c.responded_to() == Some(message_id))
}

/// Serves one C-FIND-RQ.
pub(crate) async fn handle(
    assoc: &mut Association,
    server: &Server,
    caller: &Peer,
    pc: u8,
    cmd: &Command,
) -> Result<()> {
    let Some(ctx) = assoc.context(pc).cloned() else {
        return Err(Error::Protocol(format!(
            "unknown presentation context {pc}"
        )));
    };
    if !cmd.has_data_set() {
        return refuse(assoc, pc, cmd, status::IDENTIFIER_MISMATCH, "no identifier").await;
    }
    let bytes = assoc
        .recv_data_set(pc, dataset::MAX_IDENTIFIER_BYTES)
        .await?;
    let model = match ctx.abstract_syntax.as_str() {
        sop_class::PATIENT_ROOT_FIND | sop_class::STUDY_ROOT_FIND => {
            Model::of(&ctx.abstract_syntax)
        }
        _ => None,
    };
    let Some(model) = model else {
        return refuse(
            assoc,
            pc,
            cmd,
            status::SOP_CLASS_NOT_SUPPORTED,
            "not a FIND context",
        )
        .await;
    };
    let ident = match dataset::read(&bytes, &ctx.transfer_syntax) {
        Ok(d) => d,
        Err(e) => {
            return refuse(assoc, pc, cmd, status::IDENTIFIER_MISMATCH, &e.to_string()).await;
        }
    };
    let auth = server.auth();
    let allowed = match caller
        .authorize(auth, Action::Query, &Resource::Site, "query")
        .await
    {
        Ok(()) => caller.access(auth).await,
        Err(d) => Err(d),
    };
    let access = match allowed {
        Ok(a) => a,
        Err(d) => {
            caller.audit_denied(auth, "query", &d);
            return refuse(assoc, pc, cmd, d.status, &d.comment).await;
        }
    };
    let opts = &server.options;
    let plan = match FindPlan::new(&ident, model, access, opts.max_query_results) {
        Ok(p) => p,
        Err(why) => return refuse(assoc, pc, cmd, status::IDENTIFIER_MISMATCH, &why).await,
    };
    let answers = match server.ingestor.index().find(&plan.query).await {
        Ok(a) => a,
        Err(e) => {
            let st = match e.kind() {
                vesalius_core::ErrorKind::BadRequest => status::IDENTIFIER_MISMATCH,
                vesalius_core::ErrorKind::Unavailable => status::OUT_OF_RESOURCES_MATCHES,
                _ => status::UNABLE_TO_PROCESS,
            };
            return refuse(assoc, pc, cmd, st, &e.to_string()).await;
        }
    };
    // Issue 4: every search is audited (what was asked, how many answers), off the response path.
    let ev = caller.event(
        auth,
        "query",
        Outcome::Success,
        caller.org(),
        plan.single_study(),
        serde_json::json!({
            "level": plan.query.level.as_str(),
            "keys": plan.keys,
            "answers": answers.len(),
            "model": match model {
                Model::PatientRoot => "patient-root",
                Model::StudyRoot => "study-root",
            },
        }),
    );
    crate::access::append(auth, vec![ev]);
    let explicit = dataset::is_explicit(&ctx.transfer_syntax);
    for answer in &answers {
        if let Some((_, c)) = assoc.poll_command()?
            && is_cancel(&c, cmd.message_id())?
        {
            let rsp = Command::response_to(cmd, status::CANCEL);
            return assoc.send_message(pc, &rsp, None).await;
        }
        let ident = plan
            .answer(&answer.to_map(), &opts.ae_title)
            .encode(explicit);
        let rsp = Command::response_to(cmd, status::PENDING);
        assoc.send_message(pc, &rsp, Some(&ident)).await?;
    }
    assoc
        .send_message(pc, &Command::response_to(cmd, status::SUCCESS), None)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use vesalius_core::uid;

    fn ident(level: &str, keys: &[(u32, VR, &str)]) -> DataSet {
        let mut w = DataSetWriter::new();
        w.put_str(tag::QUERY_RETRIEVE_LEVEL, VR::CS, level);
        for (t, vr, v) in keys {
            w.put_str(*t, *vr, v);
        }
        dataset::read(&w.encode(false), uid::IMPLICIT_VR_LE).unwrap()
    }

    #[test]
    fn plan_builds_filters_and_answers() {
        let id = ident(
            "SERIES",
            &[
                (tag::STUDY_INSTANCE_UID, VR::UI, "1.2.3"),
                (tag::MODALITY, VR::CS, "CT"),
                (tag::SERIES_DESCRIPTION, VR::LO, ""),
                (tag::SOP_INSTANCE_UID, VR::UI, "1.2.3.4"),
                (tag::MANUFACTURER, VR::LO, "ACME*"),
            ],
        );
        let plan = FindPlan::new(&id, Model::StudyRoot, None, 10).unwrap();
        assert_eq!(plan.query.level, Level::Series);
        assert_eq!(plan.query.filters.len(), 2);
        let json: Map<String, Json> = serde_json::from_str(
            r#"{"0020000E":{"vr":"UI","Value":["1.2.3.9"]},"00080060":{"vr":"CS","Value":["CT"]},
                "0008103E":{"vr":"LO","Value":["Head"]},"00080070":{"vr":"LO","Value":["ACME"]}}"#,
        )
        .unwrap();
        let out =
            dataset::read(&plan.answer(&json, "AE").encode(true), uid::EXPLICIT_VR_LE).unwrap();
        let tags: Vec<u32> = out.elements.iter().map(|e| e.tag).collect();
        assert_eq!(
            tags,
            vec![
                tag::SOP_INSTANCE_UID,
                tag::QUERY_RETRIEVE_LEVEL,
                tag::MODALITY,
                tag::MANUFACTURER,
                tag::SERIES_DESCRIPTION,
                tag::STUDY_INSTANCE_UID,
            ]
        );
        assert_eq!(out.str(tag::STUDY_INSTANCE_UID), Some("1.2.3"));
        assert_eq!(out.str(tag::SERIES_DESCRIPTION), Some("Head"));
        assert_eq!(
            out.str(tag::MANUFACTURER),
            None,
            "unsupported matching key comes back empty"
        );
        assert!(FindPlan::new(&ident("PATIENT", &[]), Model::StudyRoot, None, 1).is_err());
        assert!(FindPlan::new(&ident("BOGUS", &[]), Model::PatientRoot, None, 1).is_err());
        let bad = ident("STUDY", &[(tag::STUDY_DATE, VR::DA, "2020-13")]);
        assert!(FindPlan::new(&bad, Model::StudyRoot, None, 1).is_err());
    }
}
