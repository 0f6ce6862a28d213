//! Asking a DICOM node what it holds (C-FIND SCU), in the node's Query/Retrieve Information
//! Model (its `query_model`, PS3.4 C.6):
//!
//! - **Study Root** (C.6.2, the default): one STUDY-level C-FIND with the Patient ID (and
//!   Issuer of Patient ID when given) among the study keys; a study's series are asked for with
//!   its Study Instance UID alone.
//! - **Patient Root** (C.6.1), for a PACS that answers only that model: the search is
//!   hierarchical (C.4.1.3.1), so first a PATIENT-level C-FIND for the Patient ID (and issuer),
//!   then, when the node holds that patient, a STUDY-level C-FIND carrying the Patient ID as the
//!   unique key of the level above and nothing else of the patient level; the patient's name and
//!   issuer come from the first answer. Series are asked for with the Patient ID and the Study
//!   Instance UID, and a C-MOVE or C-GET of a study carries both (C.4.2.2.1, [`study_keys`]).
//!
//! Answers whose Patient ID differs from the one asked for, or whose issuer differs from a given
//! one, are dropped (for nodes that match loosely or ignore the issuer).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use vesalius_core::tag;
use vesalius_dimse::scu;
use vesalius_store::query::{Level, QueryModel};
use vesalius_store::registry::DicomNode;

use super::anatomy::{self, AnatomicCode};
use super::{MAX_FIND_RESULTS, SeriesInfo, node_addr};
use crate::Error;
use crate::worker::Exchange;

/// One study a node answered with (C-FIND, study level).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStudy {
    /// Study Instance UID.
    pub study_uid: String,
    /// Patient ID.
    pub patient_id: String,
    /// Issuer of Patient ID.
    pub issuer: String,
    /// Patient's Name.
    pub patient_name: String,
    /// Study Date.
    pub study_date: String,
    /// Study Time.
    pub study_time: String,
    /// Accession Number.
    pub accession: String,
    /// Modalities in Study.
    pub modalities: Vec<String>,
    /// Study Description.
    pub description: String,
    /// Number of Study Related Instances, when answered.
    pub instances: Option<u64>,
    /// SOP Classes in Study (0008,0062), when answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sop_classes: Vec<String>,
    /// The codes of its Procedure Code Sequence (0008,1032), when answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub procedures: Vec<AnatomicCode>,
}

impl NodeStudy {
    /// Reads a C-FIND answer (DICOM JSON).
    pub fn of(answer: &Map<String, Json>) -> NodeStudy {
        let first = |t: u32| -> Option<&Json> {
            answer
                .get(&format!("{t:08X}"))?
                .get("Value")?
                .as_array()?
                .first()
        };
        let text = |t: u32| -> String {
            match first(t) {
                Some(Json::String(s)) => s.trim().to_owned(),
                Some(Json::Number(n)) => n.to_string(),
                Some(Json::Object(o)) => o
                    .get("Alphabetic")
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                _ => String::new(),
            }
        };
        let list = |t: u32| -> Vec<String> {
            answer
                .get(&format!("{t:08X}"))
                .and_then(|e| e.get("Value"))
                .and_then(Json::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m.as_str().map(|m| m.trim().to_owned()))
                        .filter(|m| !m.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let modalities = list(tag::MODALITIES_IN_STUDY);
        NodeStudy {
            study_uid: text(tag::STUDY_INSTANCE_UID),
            patient_id: text(tag::PATIENT_ID),
            issuer: text(tag::ISSUER_OF_PATIENT_ID),
            patient_name: text(tag::PATIENT_NAME),
            study_date: text(tag::STUDY_DATE),
            study_time: text(tag::STUDY_TIME),
            accession: text(tag::ACCESSION_NUMBER),
            modalities,
            description: text(tag::STUDY_DESCRIPTION),
            instances: text(tag::NUMBER_OF_STUDY_RELATED_INSTANCES).parse().ok(),
            sop_classes: list(tag::SOP_CLASSES_IN_STUDY),
            procedures: anatomy::procedure_codes(answer),
        }
    }
}

/// What to ask a node for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeQuery {
    /// Patient ID (required: a node is not browsed whole).
    pub patient_id: String,
    /// Issuer of Patient ID, "" for any.
    pub issuer: String,
    /// Study Date: `YYYYMMDD`, or a range `YYYYMMDD-YYYYMMDD` (either side may be open).
    pub study_date: String,
}

/// The keys naming one study in a C-MOVE, C-GET or lower-level C-FIND at `node`: its Study
/// Instance UID and, under Patient Root, the Patient ID (PS3.4 C.4.2.2.1: the unique keys of
/// every level above the one asked for). `None` under Patient Root without a Patient ID.
pub fn study_keys(node: &DicomNode, patient_id: &str, study: &str) -> Option<Vec<(u32, String)>> {
    let study = (tag::STUDY_INSTANCE_UID, study.to_owned());
    match node.query_model {
        QueryModel::Study => Some(vec![study]),
        QueryModel::Patient if patient_id.trim().is_empty() => None,
        QueryModel::Patient => Some(vec![(tag::PATIENT_ID, patient_id.trim().to_owned()), study]),
    }
}

/// Queries `node` for a patient's studies in its information model (module doc), calling as
/// `calling`, within `timeout` in all; at most [`MAX_FIND_RESULTS`] answers per C-FIND.
pub async fn find_studies(
    node: &DicomNode,
    calling: &str,
    q: &NodeQuery,
    timeout: Duration,
) -> Result<Vec<NodeStudy>, Error> {
    let found = match node.query_model {
        QueryModel::Study => {
            let keys = scu::study_find_keys(&q.patient_id, &q.issuer, &q.study_date);
            tokio::time::timeout(
                timeout,
                find(node, calling, QueryModel::Study, Level::Study, &keys),
            )
            .await
        }
        QueryModel::Patient => {
            tokio::time::timeout(timeout, find_patient_root(node, calling, q)).await
        }
    };
    let answers = found
        .map_err(|_| {
            Error::Unreachable(format!(
                "{}: no C-FIND answer within {} s",
                node.name,
                timeout.as_secs()
            ))
        })?
        .map_err(|e| dimse_error(node, "C-FIND", e))?;
    Ok(answers
        .into_iter()
        .filter(|s| !s.study_uid.is_empty() && s.patient_id == q.patient_id)
        .filter(|s| q.issuer.is_empty() || s.issuer.is_empty() || s.issuer == q.issuer)
        .collect())
}

/// One C-FIND at `node` in `model`, its answers read as studies.
async fn find(
    node: &DicomNode,
    calling: &str,
    model: QueryModel,
    level: Level,
    keys: &[(u32, String)],
) -> Result<Vec<NodeStudy>, vesalius_dimse::Error> {
    let (answers, _) = scu::find_limited(
        &node_addr(node),
        calling,
        &node.ae_title,
        model,
        level,
        keys,
        MAX_FIND_RESULTS,
    )
    .await?;
    Ok(answers.iter().map(NodeStudy::of).collect())
}

/// The Patient Root search (module doc): PATIENT level, then STUDY level for that patient.
async fn find_patient_root(
    node: &DicomNode,
    calling: &str,
    q: &NodeQuery,
) -> Result<Vec<NodeStudy>, vesalius_dimse::Error> {
    let patients = find(
        node,
        calling,
        QueryModel::Patient,
        Level::Patient,
        &scu::patient_find_keys(&q.patient_id, &q.issuer),
    )
    .await?;
    let Some(patient) = patients.into_iter().find(|p| {
        p.patient_id == q.patient_id
            && (q.issuer.is_empty() || p.issuer.is_empty() || p.issuer == q.issuer)
    }) else {
        return Ok(Vec::new());
    };
    let keys = scu::patient_root_study_keys(&q.patient_id, &q.study_date);
    let mut studies = find(node, calling, QueryModel::Patient, Level::Study, &keys).await?;
    for s in &mut studies {
        // A patient-level attribute is not a key of the STUDY level: the patient answer has it.
        if s.patient_id.is_empty() {
            s.patient_id = patient.patient_id.clone();
        }
        if s.patient_name.is_empty() {
            s.patient_name = patient.patient_name.clone();
        }
        if s.issuer.is_empty() {
            s.issuer = patient.issuer.clone();
        }
    }
    Ok(studies)
}

/// The model as audit events of node queries name it: `study-root` or `patient-root`.
pub fn audit_model(node: &DicomNode) -> &'static str {
    match node.query_model {
        QueryModel::Study => "study-root",
        QueryModel::Patient => "patient-root",
    }
}

pub(crate) fn dimse_error(node: &DicomNode, op: &str, e: vesalius_dimse::Error) -> Error {
    let mut msg = format!("{} ({}): {op}: {e}", node.name, node.ae_title);
    if matches!(e, vesalius_dimse::Error::NoPresentationContext(_)) {
        // The usual cause: a PACS that answers only the other information model.
        msg.push_str(&format!(
            " (the node does not accept the {} SOP class: if it answers only {}, set its query \
             model to {})",
            node.query_model.name(),
            match node.query_model {
                QueryModel::Study => "Patient Root",
                QueryModel::Patient => "Study Root",
            },
            match node.query_model {
                QueryModel::Study => "patient",
                QueryModel::Patient => "study",
            },
        ));
    }
    match e.kind() {
        vesalius_core::ErrorKind::Unavailable => Error::Unreachable(msg),
        _ => Error::Dimse(msg),
    }
}

impl Exchange {
    /// The Modality, Body Part Examined, Anatomic Region Sequence (0008,2218) and laterality
    /// (Laterality (0020,0060), Anatomic Region Modifier Sequence (0008,2220)) values of the
    /// series of `study` (of patient `patient_id`) at `node` (C-FIND, SERIES level, in the
    /// node's model). A node that cannot be reached is an error (the prefetch is retried); one
    /// that refuses the query, or does not answer the keys, gives none (an SCP returns no value
    /// for a key it does not support, PS3.4 C.4.1.1.3.2).
    pub(super) async fn series_info(
        &self,
        node: &DicomNode,
        patient_id: &str,
        study: &str,
    ) -> Result<SeriesInfo, Error> {
        let Some(mut keys) = study_keys(node, patient_id, study) else {
            return Ok(SeriesInfo::default());
        };
        keys.extend([
            (tag::SERIES_INSTANCE_UID, String::new()),
            (tag::MODALITY, String::new()),
            (tag::BODY_PART_EXAMINED, String::new()),
            // A zero-length sequence asks for the whole sequence (PS3.4 C.2.2.2.6).
            (tag::ANATOMIC_REGION_SEQUENCE, String::new()),
            // General Series module (PS3.3 C.7.3.1), an optional series-level key.
            (tag::LATERALITY, String::new()),
        ]);
        let addr = node_addr(node);
        let find = scu::find_limited(
            &addr,
            &self.options().ae_title,
            &node.ae_title,
            node.query_model,
            Level::Series,
            &keys,
            MAX_FIND_RESULTS,
        );
        let answers = match tokio::time::timeout(self.options().find_timeout, find).await {
            Ok(Ok((answers, _))) => answers,
            Ok(Err(e)) if e.kind() == vesalius_core::ErrorKind::Unavailable => {
                return Err(dimse_error(node, "C-FIND (series)", e));
            }
            Ok(Err(e)) => {
                tracing::info!("{}: series C-FIND for {study}: {e}", node.name);
                return Ok(SeriesInfo::default());
            }
            Err(_) => {
                return Err(Error::Unreachable(format!(
                    "{}: no series C-FIND answer within {} s",
                    node.name,
                    self.options().find_timeout.as_secs()
                )));
            }
        };
        let values = |t: u32| -> Vec<String> {
            let mut v: Vec<String> = answers
                .iter()
                .filter_map(|a| {
                    a.get(&format!("{t:08X}"))?
                        .get("Value")?
                        .as_array()?
                        .first()?
                        .as_str()
                        .map(|v| v.trim().to_owned())
                })
                .filter(|v| !v.is_empty())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let mut codes: Vec<AnatomicCode> = answers
            .iter()
            .flat_map(|a| anatomy::codes(a, tag::ANATOMIC_REGION_SEQUENCE))
            .collect();
        codes.sort();
        codes.dedup();
        let mut sides: Vec<anatomy::Side> = answers.iter().flat_map(anatomy::sides).collect();
        sides.sort();
        sides.dedup();
        Ok(SeriesInfo {
            modalities: values(tag::MODALITY),
            body_parts: values(tag::BODY_PART_EXAMINED),
            anatomic_regions: codes,
            sides,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(model: QueryModel) -> DicomNode {
        DicomNode {
            name: "pacs".into(),
            ae_title: "PACS".into(),
            host: "127.0.0.1".into(),
            port: 104,
            transfer_syntaxes: vec![],
            retrieve: Default::default(),
            query_model: model,
            org: "o".into(),
            description: String::new(),
            managed: false,
            created_ms: 0,
        }
    }

    #[test]
    fn a_study_is_named_by_the_keys_of_its_model() {
        let study = node(QueryModel::Study);
        assert_eq!(
            study_keys(&study, "P1", "1.2.3"),
            Some(vec![(tag::STUDY_INSTANCE_UID, "1.2.3".to_owned())])
        );
        let patient = node(QueryModel::Patient);
        assert_eq!(
            study_keys(&patient, " P1 ", "1.2.3"),
            Some(vec![
                (tag::PATIENT_ID, "P1".to_owned()),
                (tag::STUDY_INSTANCE_UID, "1.2.3".to_owned())
            ])
        );
        assert_eq!(study_keys(&patient, "", "1.2.3"), None);
    }

    #[test]
    fn patient_root_study_keys_name_nothing_else_of_the_patient() {
        let keys = scu::patient_root_study_keys("P1", "20200101-");
        assert!(keys.contains(&(tag::PATIENT_ID, "P1".to_owned())));
        assert!(keys.contains(&(tag::STUDY_DATE, "20200101-".to_owned())));
        assert!(keys.contains(&(tag::STUDY_INSTANCE_UID, String::new())));
        for t in [tag::PATIENT_NAME, tag::ISSUER_OF_PATIENT_ID] {
            assert!(keys.iter().all(|(k, _)| *k != t), "{t:08X}");
        }
        let p = scu::patient_find_keys("P1", "HOSP");
        assert_eq!(p[0], (tag::PATIENT_ID, "P1".to_owned()));
        assert_eq!(p[1], (tag::ISSUER_OF_PATIENT_ID, "HOSP".to_owned()));
    }

    #[test]
    fn node_study_from_a_find_answer() {
        let a: Map<String, Json> = serde_json::from_str(
            r#"{"0020000D":{"vr":"UI","Value":["1.2.3"]},"00100020":{"vr":"LO","Value":["P1"]},
                "00100010":{"vr":"PN","Value":[{"Alphabetic":"DOE^JO"}]},
                "00080061":{"vr":"CS","Value":["CT","SR"]},
                "00201208":{"vr":"IS","Value":[12]},"00080020":{"vr":"DA","Value":["20240101"]},
                "00080062":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.2"]},
                "00081032":{"vr":"SQ","Value":[{"00080100":{"vr":"SH","Value":["36510-6"]},
                                               "00080102":{"vr":"SH","Value":["LN"]}}]}}"#,
        )
        .unwrap();
        let s = NodeStudy::of(&a);
        assert_eq!(s.study_uid, "1.2.3");
        assert_eq!(s.patient_name, "DOE^JO");
        assert_eq!(s.modalities, ["CT", "SR"]);
        assert_eq!(s.instances, Some(12));
        assert_eq!(s.study_date, "20240101");
        assert_eq!(s.issuer, "");
        assert_eq!(s.sop_classes, ["1.2.840.10008.5.1.4.1.1.2"]);
        assert_eq!(s.procedures, [AnatomicCode::new("LN", "36510-6")]);
        let none = NodeStudy::of(&Map::new());
        assert!(none.procedures.is_empty());
    }
}
