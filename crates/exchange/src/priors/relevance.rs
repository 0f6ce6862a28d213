//! Relevant priors: which of a patient's studies at a node matter for the study that arrived
//! (`prefetch:NODE?match=modality,body-part,description,procedure,laterality`). Pure functions
//! over what a node answers at study level (C-FIND, Study Root) and, when that does not tell,
//! the Modality (0008,0060), Body Part Examined (0018,0015), Anatomic Region Sequence and
//! Laterality (0020,0060) of the study's series (a series-level C-FIND the caller makes on
//! demand: [`choose_priors`] says for which study).
//!
//! Every criterion of the rule must hold:
//! - `modality`: the prior's Modalities in Study (0008,0061) include a modality of the arriving
//!   study (its image modalities: SR, KO, PR and other non-image objects do not count when the
//!   study has images). When the node does not answer Modalities in Study (an optional key that
//!   DCMTK's dcmqrscp, for one, does not support), its series' Modality values stand in.
//! - `body-part`: the prior shows a body region of the arriving study. Regions come from Body
//!   Part Examined (the defined terms of PS3.16 CID 4031 and their combinations such as
//!   `HEADNECK`), from the codes of the Anatomic Region Sequence (0008,2218: SNOMED CT or SRT
//!   concepts of CID 4031, read as the Body Part Examined term PS3.16 Annex L gives them,
//!   [`super::anatomy`]) or from words of a Study Description (`BRAIN` and `SKULL` are the head,
//!   `THORAX` and `LUNG` the chest, …, [`regions`]). The arriving study's regions are those of
//!   its Body Part Examined and coded anatomy, else its description's. The prior's Study
//!   Description decides when it names a region; otherwise its series' Body Part Examined and
//!   Anatomic Region Sequence do; a prior with none of these is not relevant.
//!
//! - `description`: the two Study Descriptions share a keyword (a word of three or more letters
//!   that is not a modality code or a filler such as `WITH`, `CONTRAST`).
//! - `procedure`: the prior shares a coded procedure with the arriving study: the same Coding
//!   Scheme Designator and Code Value (PS3.3 8.8) among the prior's Procedure Code Sequence
//!   (0008,1032, General Study module, PS3.3 C.7.2.1; a study-level C-FIND return key) and the
//!   arriving study's Procedure Code Sequence and Requested Procedure Code Sequence (0032,1064,
//!   also in the items of its Request Attributes Sequence (0040,0275), PS3.3 Table 10-9). A
//!   shared code makes `body-part` and `description` hold whatever the texts say (the same
//!   examination shows the same anatomy); without one, they decide when listed, and `procedure`
//!   listed without them keeps only priors sharing a code (a prior whose node answers no
//!   codes, such as DCMTK's `dcmqrscp`, then is not relevant).
//! - `laterality`: the prior is not of the other side. The arriving study's side comes from
//!   Laterality (0020,0060, PS3.3 C.7.3.1), Image Laterality (0020,0062) and the laterality
//!   codes (PS3.16 CID 244: left 7771000, right 24028007, both 51440002, or their SNOMED-RT
//!   form) of the Anatomic Region Modifier Sequence (0008,2220) inside its Anatomic Region
//!   Sequence, else from its description (`LEFT`, `LT`, `RIGHT`, `RT`, `BILATERAL`); the
//!   prior's from its Study Description, else from its series (Laterality and the modifier
//!   codes). A left study keeps left, bilateral and side-less priors and drops right ones (and
//!   the other way round); a bilateral or unpaired (`U`) arriving study keeps every side.
//!
//! A criterion that is false without the series decides (no query is made); the series are
//! asked for only when everything else holds.
//!
//! A criterion the arriving study gives nothing to compare with (no body part and no region in
//! its description; no description keywords) is not applied: missing data never hides priors.

use std::collections::{BTreeSet, HashMap};

use vesalius_store::registry::{Prefetch, PriorMatch};

use super::anatomy::{self, AnatomicCode, Side};
use super::{NodeStudy, years_ago};

/// Modalities of objects that are not images of the patient (PS3.3 C.7.3.1.1.1): they do not
/// say what the study shows.
const NOT_IMAGES: &[&str] = &[
    "SR", "KO", "PR", "SEG", "REG", "RWV", "DOC", "PLAN", "RTPLAN", "RTRECORD", "FID", "AU", "ECG",
    "HD",
];

/// Body regions and the words (Body Part Examined defined terms, description words) naming them.
const REGIONS: &[(&str, &[&str])] = &[
    (
        "HEAD",
        &[
            "HEAD",
            "BRAIN",
            "SKULL",
            "CRANIUM",
            "CRANIAL",
            "CEREBRAL",
            "CEREBELLUM",
            "CIRCLEOFWILLIS",
            "NEURO",
            "HEADNECK",
            "ORBIT",
            "SINUS",
            "SINUSES",
            "IAC",
            "FACE",
            "JAW",
            "TMJ",
        ],
    ),
    (
        "NECK",
        &[
            "NECK", "HEADNECK", "CAROTID", "THYROID", "LARYNX", "PHARYNX", "CSPINE",
        ],
    ),
    (
        "CHEST",
        &[
            "CHEST",
            "THORAX",
            "THORACIC",
            "LUNG",
            "LUNGS",
            "PULMONARY",
            "CHESTABDOMEN",
            "CHESTABDPELVIS",
            "RIB",
            "RIBS",
            "STERNUM",
            "TSPINE",
        ],
    ),
    (
        "HEART",
        &["HEART", "CARDIAC", "CORONARY", "CORONARYARTERY", "AORTA"],
    ),
    ("BREAST", &["BREAST", "BREASTS", "MAMMO", "MAMMOGRAPHY"]),
    (
        "ABDOMEN",
        &[
            "ABDOMEN",
            "ABD",
            "ABDOMINAL",
            "LIVER",
            "PANCREAS",
            "KIDNEY",
            "KIDNEYS",
            "RENAL",
            "SPLEEN",
            "ADRENAL",
            "ABDOMENPELVIS",
            "CHESTABDOMEN",
            "CHESTABDPELVIS",
        ],
    ),
    (
        "PELVIS",
        &[
            "PELVIS",
            "PELVIC",
            "HIP",
            "HIPS",
            "PROSTATE",
            "BLADDER",
            "UTERUS",
            "SACRUM",
            "ABDOMENPELVIS",
            "CHESTABDPELVIS",
        ],
    ),
    (
        "SPINE",
        &[
            "SPINE", "SPINAL", "CSPINE", "TSPINE", "LSPINE", "SSPINE", "LUMBAR", "COCCYX",
        ],
    ),
    ("SHOULDER", &["SHOULDER", "CLAVICLE", "SCAPULA"]),
    (
        "ARM",
        &["ARM", "UPPEREXTREMITY", "HUMERUS", "FOREARM", "ELBOW"],
    ),
    ("HAND", &["HAND", "WRIST", "FINGER", "FINGERS", "THUMB"]),
    ("KNEE", &["KNEE", "KNEES", "PATELLA"]),
    (
        "LEG",
        &["LEG", "LOWEREXTREMITY", "FEMUR", "THIGH", "TIBIA", "FIBULA"],
    ),
    (
        "FOOT",
        &["FOOT", "FEET", "ANKLE", "TOE", "HEEL", "CALCANEUS"],
    ),
    ("WHOLEBODY", &["WHOLEBODY"]),
];

/// Words that say nothing about what a study shows.
const FILLERS: &[&str] = &[
    "WITH",
    "WITHOUT",
    "AND",
    "THE",
    "FOR",
    "CONTRAST",
    "NON",
    "PLAIN",
    "STUDY",
    "EXAM",
    "ROUTINE",
    "PROTOCOL",
    "SCAN",
    "IMAGING",
    "VIEW",
    "VIEWS",
    "LEFT",
    "RIGHT",
    "BILATERAL",
    "ENHANCED",
    "UNENHANCED",
    "SERIES",
];

/// Modality codes: "CT HEAD" and "MR HEAD" share no description keyword.
const MODALITY_WORDS: &[&str] = &[
    "CT", "MR", "MRI", "PET", "SPECT", "CR", "DX", "XR", "MG", "US", "NM", "PT", "XA", "RF", "OT",
    "SC", "CTA", "MRA",
];

/// The upper-case words of a text (letters and digits).
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_uppercase)
}

/// The body regions a Body Part Examined value or a description names (the table `REGIONS`).
pub fn regions(text: &str) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    for w in words(text) {
        for (region, terms) in REGIONS {
            if terms.contains(&w.as_str()) {
                out.insert(*region);
            }
        }
    }
    out
}

/// The keywords of a Study Description (see the module doc).
pub fn keywords(text: &str) -> BTreeSet<String> {
    words(text)
        .filter(|w| w.chars().count() >= 3 && !w.chars().all(|c| c.is_ascii_digit()))
        .filter(|w| !FILLERS.contains(&w.as_str()) && !MODALITY_WORDS.contains(&w.as_str()))
        .collect()
}

/// What the arriving study says of itself (from the instance whose arrival made the prefetch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArrivingStudy {
    /// Its modalities (0008,0060 of its instances).
    pub modalities: Vec<String>,
    /// Body Part Examined (0018,0015).
    pub body_part: String,
    /// The codes of its Anatomic Region Sequence (0008,2218).
    pub anatomic_region: Vec<AnatomicCode>,
    /// Study Description (0008,1030).
    pub description: String,
    /// Its coded procedures: Procedure Code Sequence (0008,1032) and Requested Procedure Code
    /// Sequence (0032,1064) ([`anatomy::procedure_codes`]).
    pub procedures: Vec<AnatomicCode>,
    /// The sides it states: Laterality (0020,0060), Image Laterality (0020,0062), Anatomic
    /// Region Modifier Sequence (0008,2220) ([`anatomy::sides`]).
    pub sides: Vec<Side>,
}

impl ArrivingStudy {
    /// Its side: the one its attributes state, else the one its description names.
    fn side(&self) -> Option<Side> {
        anatomy::side(&self.sides).or_else(|| anatomy::side(&Side::of_text(&self.description)))
    }

    /// The image modalities (all of them when it has only non-image objects).
    fn image_modalities(&self) -> BTreeSet<String> {
        let all: BTreeSet<String> = self
            .modalities
            .iter()
            .map(|m| m.trim().to_uppercase())
            .filter(|m| !m.is_empty())
            .collect();
        let images: BTreeSet<String> = all
            .iter()
            .filter(|m| !NOT_IMAGES.contains(&m.as_str()))
            .cloned()
            .collect();
        if images.is_empty() { all } else { images }
    }

    /// Its body regions: those of Body Part Examined and of the Anatomic Region Sequence, else
    /// its description's.
    fn regions(&self) -> BTreeSet<&'static str> {
        let mut r = regions(&self.body_part);
        r.extend(regions(&anatomy::body_parts(&self.anatomic_region)));
        if r.is_empty() {
            regions(&self.description)
        } else {
            r
        }
    }
}

/// What a series-level C-FIND of a prior study answered: the distinct Modality, Body Part
/// Examined and Anatomic Region values of its series (empty when the node does not return them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesInfo {
    /// Modality (0008,0060) values.
    pub modalities: Vec<String>,
    /// Body Part Examined (0018,0015) values.
    pub body_parts: Vec<String>,
    /// The codes of the Anatomic Region Sequence (0008,2218) items.
    pub anatomic_regions: Vec<AnatomicCode>,
    /// The sides of its series: Laterality (0020,0060) and the Anatomic Region Modifier
    /// Sequence (0008,2220) of their Anatomic Region Sequence items.
    pub sides: Vec<Side>,
}

/// Whether `prior` is relevant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every criterion holds.
    Relevant,
    /// Some criterion does not hold.
    NotRelevant,
    /// Only its series can tell (no Modalities in Study, or a description naming no region or,
    /// for `laterality`, no side).
    NeedSeries,
}

/// Judges `prior` against `current` by `criteria`; `series` is what its series-level C-FIND
/// answered, when it was asked for.
pub fn relevance(
    prior: &NodeStudy,
    current: &ArrivingStudy,
    criteria: &[PriorMatch],
    series: Option<&SeriesInfo>,
) -> Verdict {
    let mut need_series = false;
    // The same coded procedure (PS3.3 C.7.2.1 Procedure Code Sequence): the prior is an
    // instance of the same examination, whatever its text says of the anatomy.
    let same_procedure = criteria.contains(&PriorMatch::Procedure)
        && prior
            .procedures
            .iter()
            .any(|p| current.procedures.iter().any(|c| anatomy::same_code(p, c)));
    for c in criteria {
        let holds = match c {
            PriorMatch::Modality => {
                let cur = current.image_modalities();
                let has = |m: &String| cur.contains(&m.trim().to_uppercase());
                if cur.is_empty() {
                    true
                } else if !prior.modalities.is_empty() {
                    prior.modalities.iter().any(has)
                } else if let Some(s) = series {
                    s.modalities.iter().any(has)
                } else {
                    need_series = true;
                    true
                }
            }
            PriorMatch::BodyPart | PriorMatch::Description if same_procedure => true,
            PriorMatch::BodyPart => {
                let cur = current.regions();
                let named = regions(&prior.description);
                if cur.is_empty() || cur.contains("WHOLEBODY") {
                    true
                } else if !named.is_empty() {
                    named.contains("WHOLEBODY") || !named.is_disjoint(&cur)
                } else if let Some(s) = series {
                    let coded = anatomy::body_parts(&s.anatomic_regions);
                    s.body_parts.iter().chain([&coded]).any(|p| {
                        let r = regions(p);
                        r.contains("WHOLEBODY") || !r.is_disjoint(&cur)
                    })
                } else {
                    need_series = true;
                    true
                }
            }
            PriorMatch::Description => {
                let cur = keywords(&current.description);
                cur.is_empty() || !keywords(&prior.description).is_disjoint(&cur)
            }
            PriorMatch::Procedure => {
                // Alone it must hold; beside `body-part` or `description` a prior without a
                // shared code is left to them.
                current.procedures.is_empty()
                    || same_procedure
                    || criteria
                        .iter()
                        .any(|m| matches!(m, PriorMatch::BodyPart | PriorMatch::Description))
            }
            PriorMatch::Laterality => match current.side() {
                // Nothing to compare with, or both sides: any prior will do.
                None | Some(Side::Both) | Some(Side::Unpaired) => true,
                Some(side) => {
                    let named = anatomy::side(&Side::of_text(&prior.description));
                    let prior_side = match (named, series) {
                        (Some(s), _) => Some(s),
                        (None, Some(info)) => anatomy::side(&info.sides),
                        (None, None) => {
                            need_series = true;
                            None
                        }
                    };
                    // Only the other side alone is not relevant: a bilateral prior shows this
                    // side too, and one of no stated side may.
                    match prior_side {
                        Some(Side::Left) => side == Side::Left,
                        Some(Side::Right) => side == Side::Right,
                        _ => true,
                    }
                }
            },
        };
        if !holds {
            return Verdict::NotRelevant;
        }
    }
    if need_series {
        Verdict::NeedSeries
    } else {
        Verdict::Relevant
    }
}

/// What [`choose_priors`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The priors to hold here, most recent first (at most the rule's `max`).
    pub chosen: Vec<NodeStudy>,
    /// Candidates (other studies within `years`) judged not relevant before `max` was reached.
    pub not_relevant: usize,
    /// A study whose series are needed to go on: ask the node, add the answer to `series` and
    /// call again.
    pub need_series: Option<String>,
}

/// The priors to hold: the most recent of `found` other than `current_uid`, within
/// `rule.years` (by Study Date, counted back from `now_ms`) when set, relevant to `current` by
/// `rule.matching`, at most `rule.max`. Most recent first. `series` holds what the series-level
/// C-FINDs made so far answered (by Study Instance UID).
pub fn choose_priors(
    found: &[NodeStudy],
    current_uid: &str,
    current: &ArrivingStudy,
    rule: &Prefetch,
    now_ms: i64,
    series: &HashMap<String, SeriesInfo>,
) -> Selection {
    let oldest = rule.years.map(|y| years_ago(now_ms, y));
    let mut candidates: Vec<&NodeStudy> = found
        .iter()
        .filter(|s| s.study_uid != current_uid)
        .filter(|s| {
            oldest
                .as_deref()
                .is_none_or(|o| !s.study_date.is_empty() && s.study_date.as_str() >= o)
        })
        .collect();
    candidates.sort_by(|a, b| {
        (&b.study_date, &b.study_time, &b.study_uid).cmp(&(
            &a.study_date,
            &a.study_time,
            &a.study_uid,
        ))
    });
    candidates.dedup_by(|a, b| a.study_uid == b.study_uid);
    let mut out = Selection::default();
    for s in candidates {
        if out.chosen.len() >= rule.max as usize {
            break;
        }
        match relevance(s, current, &rule.matching, series.get(&s.study_uid)) {
            Verdict::Relevant => out.chosen.push(s.clone()),
            Verdict::NotRelevant => out.not_relevant += 1,
            Verdict::NeedSeries => {
                out.need_series = Some(s.study_uid.clone());
                return out;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study(uid: &str, date: &str, modalities: &[&str], description: &str) -> NodeStudy {
        NodeStudy {
            study_uid: uid.into(),
            patient_id: "P1".into(),
            study_date: date.into(),
            modalities: modalities.iter().map(|m| m.to_string()).collect(),
            description: description.into(),
            ..Default::default()
        }
    }

    fn ct_head() -> ArrivingStudy {
        ArrivingStudy {
            modalities: vec!["CT".into()],
            body_part: "HEAD".into(),
            description: "CT HEAD WO CONTRAST".into(),
            ..Default::default()
        }
    }

    /// 2026-12-07T12:00Z
    const NOW: i64 = 1_796_644_800_000;

    fn uids(s: &Selection) -> Vec<&str> {
        s.chosen.iter().map(|s| s.study_uid.as_str()).collect()
    }

    fn rule(max: u32, years: Option<u32>, matching: &[PriorMatch]) -> Prefetch {
        let mut r = Prefetch::new("pacs");
        r.max = max;
        r.years = years;
        r.matching = matching.to_vec();
        r
    }

    #[test]
    fn regions_and_keywords() {
        assert_eq!(regions("BRAIN"), ["HEAD"].into());
        assert_eq!(regions("HEADNECK"), ["HEAD", "NECK"].into());
        assert_eq!(regions("MR Knee left"), ["KNEE"].into());
        assert!(regions("Study 1").is_empty());
        assert_eq!(
            keywords("CT HEAD W/O CONTRAST 2"),
            ["HEAD".to_owned()].into()
        );
        assert!(keywords("CT").is_empty());
    }

    /// The scenario of the interop test: a CT head prior, an MR knee and a CT head older than
    /// `years`; a CT head arrives.
    #[test]
    fn only_the_recent_ct_head_is_relevant() {
        let found = vec![
            study("ct-head-2023", "20230601", &["CT"], "CT HEAD WO CONTRAST"),
            study("mr-knee-2024", "20240603", &["MR"], "MR KNEE"),
            study("ct-head-2015", "20150101", &["CT"], "CT HEAD WO CONTRAST"),
            study("new", "20261207", &["CT"], "CT HEAD WO CONTRAST"),
        ];
        let none = HashMap::new();
        let m = [PriorMatch::Modality, PriorMatch::BodyPart];
        let s = choose_priors(&found, "new", &ct_head(), &rule(3, Some(5), &m), NOW, &none);
        assert_eq!(uids(&s), ["ct-head-2023"]);
        assert_eq!((s.not_relevant, s.need_series), (1, None));
        // Without `years` the old one is relevant too, most recent first.
        let s = choose_priors(&found, "new", &ct_head(), &rule(3, None, &m), NOW, &none);
        assert_eq!(uids(&s), ["ct-head-2023", "ct-head-2015"]);
        // Without criteria every study counts (the earlier behaviour).
        let s = choose_priors(
            &found,
            "new",
            &ct_head(),
            &rule(2, Some(5), &[]),
            NOW,
            &none,
        );
        assert_eq!(uids(&s), ["mr-knee-2024", "ct-head-2023"]);
        // Each criterion on its own.
        let s = choose_priors(
            &found,
            "new",
            &ct_head(),
            &rule(3, Some(5), &[PriorMatch::Modality]),
            NOW,
            &none,
        );
        assert_eq!(uids(&s), ["ct-head-2023"]);
        let mr_head = study("mr-head", "20250101", &["MR", "SR"], "MRI BRAIN");
        let found2 = [found.clone(), vec![mr_head]].concat();
        let by_part = rule(3, Some(5), &[PriorMatch::BodyPart]);
        let s = choose_priors(&found2, "new", &ct_head(), &by_part, NOW, &none);
        assert_eq!(uids(&s), ["mr-head", "ct-head-2023"]);
        let by_words = rule(3, Some(5), &[PriorMatch::Description]);
        let s = choose_priors(&found2, "new", &ct_head(), &by_words, NOW, &none);
        assert_eq!(uids(&s), ["ct-head-2023"], "BRAIN is not the word HEAD");
    }

    #[test]
    fn the_most_recent_relevant_up_to_max() {
        let found: Vec<NodeStudy> = (0..6)
            .map(|i| {
                let (m, d) = if i % 2 == 0 {
                    ("CT", "CT HEAD")
                } else {
                    ("MR", "MR HEAD")
                };
                study(&format!("s{i}"), &format!("2026010{i}"), &[m], d)
            })
            .collect();
        let r = rule(2, None, &[PriorMatch::Modality]);
        let s = choose_priors(&found, "x", &ct_head(), &r, NOW, &HashMap::new());
        assert_eq!(uids(&s), ["s4", "s2"]);
        // Judging stops at `max`: s0 is never looked at.
        assert_eq!(s.not_relevant, 2);
    }

    fn parts(p: &[&str]) -> SeriesInfo {
        SeriesInfo {
            modalities: vec!["CT".into()],
            body_parts: p.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        }
    }

    /// A node that answers no Modalities in Study (dcmqrscp): the series' modalities decide,
    /// asked for only when the description already matches.
    #[test]
    fn without_modalities_in_study_the_series_tell() {
        let found = vec![
            study("ct", "20260101", &[], "CT HEAD WO CONTRAST"),
            study("knee", "20260102", &[], "MR KNEE"),
        ];
        let r = rule(3, None, &[PriorMatch::Modality, PriorMatch::BodyPart]);
        let mut series = HashMap::new();
        let s = choose_priors(&found, "x", &ct_head(), &r, NOW, &series);
        assert_eq!(
            s.need_series.as_deref(),
            Some("ct"),
            "the knee is decided by its words"
        );
        assert_eq!(s.not_relevant, 1);
        series.insert("ct".to_owned(), parts(&[]));
        let s = choose_priors(&found, "x", &ct_head(), &r, NOW, &series);
        assert_eq!((uids(&s), s.need_series.clone()), (vec!["ct"], None));
        let mut mr = parts(&[]);
        mr.modalities = vec!["MR".into()];
        series.insert("ct".to_owned(), mr);
        let s = choose_priors(&found, "x", &ct_head(), &r, NOW, &series);
        assert!(s.chosen.is_empty() && s.not_relevant == 2);
    }

    #[test]
    fn a_description_without_a_region_asks_for_the_series() {
        let found = vec![
            study("vague", "20260101", &["CT"], "Study 1"),
            study("chest", "20250101", &["CT"], "CT CHEST"),
        ];
        let r = rule(3, None, &[PriorMatch::Modality, PriorMatch::BodyPart]);
        let mut series = HashMap::new();
        let s = choose_priors(&found, "x", &ct_head(), &r, NOW, &series);
        assert_eq!(s.need_series.as_deref(), Some("vague"));
        assert!(s.chosen.is_empty());
        series.insert("vague".to_owned(), parts(&["BRAIN", ""]));
        let s = choose_priors(&found, "x", &ct_head(), &r, NOW, &series);
        assert_eq!((uids(&s), s.need_series.clone()), (vec!["vague"], None));
        assert_eq!(s.not_relevant, 1, "the chest is not the head");
        // Series of another region, or none answered: not relevant.
        series.insert("vague".to_owned(), parts(&["ABDOMEN"]));
        assert!(
            choose_priors(&found, "x", &ct_head(), &r, NOW, &series)
                .chosen
                .is_empty()
        );
        series.insert("vague".to_owned(), parts(&[]));
        assert!(
            choose_priors(&found, "x", &ct_head(), &r, NOW, &series)
                .chosen
                .is_empty()
        );
        // A prior that fails the modality is never asked about.
        let r = rule(3, None, &[PriorMatch::Modality, PriorMatch::BodyPart]);
        let mr = vec![study("vague-mr", "20260101", &["MR"], "Study 1")];
        let s = choose_priors(&mr, "x", &ct_head(), &r, NOW, &HashMap::new());
        assert_eq!((s.chosen.len(), s.need_series), (0, None));
    }

    #[test]
    fn what_the_arriving_study_does_not_say_is_not_applied() {
        let prior = study("p", "20250101", &["CT"], "CT KNEE");
        let unknown = ArrivingStudy {
            modalities: vec!["CT".into()],
            body_part: String::new(),
            description: "Emergency".into(),
            ..Default::default()
        };
        let all = [PriorMatch::Modality, PriorMatch::BodyPart];
        assert_eq!(relevance(&prior, &unknown, &all, None), Verdict::Relevant);
        // Its description names the region when Body Part Examined is empty.
        let described = ArrivingStudy {
            description: "CT Brain".into(),
            ..unknown.clone()
        };
        assert_eq!(
            relevance(&prior, &described, &all, None),
            Verdict::NotRelevant
        );
        // A structured report beside the images does not make an SR prior relevant; when the
        // node answers no modalities, the series decide.
        let with_sr = ArrivingStudy {
            modalities: vec!["CT".into(), "SR".into()],
            ..ct_head()
        };
        let sr = study("sr", "20250101", &["SR"], "CT HEAD REPORT");
        let m = [PriorMatch::Modality];
        assert_eq!(relevance(&sr, &with_sr, &m, None), Verdict::NotRelevant);
        let silent = study("s", "20250101", &[], "CT HEAD");
        assert_eq!(relevance(&silent, &with_sr, &m, None), Verdict::NeedSeries);
        let reports = SeriesInfo {
            modalities: vec!["SR".into()],
            ..Default::default()
        };
        let got = relevance(&silent, &with_sr, &m, Some(&reports));
        assert_eq!(got, Verdict::NotRelevant);
        let nothing = SeriesInfo::default();
        let got = relevance(&silent, &with_sr, &m, Some(&nothing));
        assert_eq!(got, Verdict::NotRelevant, "nothing answered: not relevant");
        // Whole-body studies cover every region.
        let pet = study("pet", "20250101", &["PT", "CT"], "PET-CT WHOLEBODY");
        let b = [PriorMatch::BodyPart];
        assert_eq!(relevance(&pet, &ct_head(), &b, None), Verdict::Relevant);
    }

    fn coded(codes: &[(&str, &str)]) -> Vec<AnatomicCode> {
        codes.iter().map(|(s, v)| AnatomicCode::new(s, v)).collect()
    }

    /// A prior with a coded Anatomic Region only (no Body Part Examined, a description naming
    /// no region): its series' codes decide, against the arriving study's body part or codes.
    #[test]
    fn coded_anatomy_of_the_prior_series() {
        let found = vec![
            study("brain", "20260101", &["CT"], "Study 1"),
            study("knee", "20250101", &["CT"], "Study 2"),
        ];
        let r = rule(3, None, &[PriorMatch::Modality, PriorMatch::BodyPart]);
        let mut series = HashMap::new();
        let coded_series = |codes: &[(&str, &str)]| SeriesInfo {
            modalities: vec!["CT".into()],
            anatomic_regions: coded(codes),
            ..Default::default()
        };
        series.insert("brain".to_owned(), coded_series(&[("SCT", "12738006")]));
        series.insert("knee".to_owned(), coded_series(&[("SRT", "T-D9200")]));
        let s = choose_priors(&found, "x", &ct_head(), &r, NOW, &series);
        assert_eq!((uids(&s), s.not_relevant), (vec!["brain"], 1));
        // The arriving study coded too (no Body Part Examined, no description).
        let coded_head = ArrivingStudy {
            modalities: vec!["CT".into()],
            anatomic_region: coded(&[("SRT", "T-D1100")]),
            ..Default::default()
        };
        let s = choose_priors(&found, "x", &coded_head, &r, NOW, &series);
        assert_eq!(uids(&s), ["brain"]);
        let coded_knee = ArrivingStudy {
            modalities: vec!["CT".into()],
            anatomic_region: coded(&[("SCT", "49076000")]),
            description: "CT HEAD".into(),
            ..Default::default()
        };
        let s = choose_priors(&found, "x", &coded_knee, &r, NOW, &series);
        assert_eq!(uids(&s), ["knee"], "the codes win over the description");
        // Codes of another scheme or not in the table say nothing: the prior has no region.
        series.insert("brain".to_owned(), coded_series(&[("FMA", "50801")]));
        let s = choose_priors(&found, "x", &ct_head(), &r, NOW, &series);
        assert!(s.chosen.is_empty(), "{s:?}");
        // Body Part Examined and codes of one series both count.
        let mut both = coded_series(&[("SCT", "72696002")]);
        both.body_parts = vec!["HEAD".into()];
        series.insert("brain".to_owned(), both);
        let s = choose_priors(&found, "x", &ct_head(), &r, NOW, &series);
        assert_eq!(uids(&s), ["brain"]);
        // Coded whole body covers every region.
        series.insert("knee".to_owned(), coded_series(&[("SCT", "38266002")]));
        let s = choose_priors(&found, "x", &ct_head(), &r, NOW, &series);
        assert_eq!(uids(&s), ["brain", "knee"]);
    }

    fn with_codes(mut s: NodeStudy, codes: &[(&str, &str)]) -> NodeStudy {
        s.procedures = coded(codes);
        s
    }

    /// (a) Coded procedures: the same scheme and code value make `body-part` and `description`
    /// hold whatever the texts say; alone, `procedure` keeps only priors sharing a code.
    #[test]
    fn coded_procedures() {
        let knee = ArrivingStudy {
            modalities: vec!["MR".into()],
            body_part: "KNEE".into(),
            description: "MR KNEE WO".into(),
            procedures: coded(&[("LN", "36510-6"), ("99LOCAL", "MRKNEE")]),
            ..Default::default()
        };
        // Same code, a description naming no region (and another body region's word).
        let same = with_codes(
            study("same", "20250101", &["MR"], "MR LE jt"),
            &[("ln", "36510-6")],
        );
        let other = with_codes(
            study("other", "20250101", &["MR"], "MR HEAD"),
            &[("LN", "24590-2")],
        );
        let knee_text = with_codes(
            study("text", "20250101", &["MR"], "MR KNEE"),
            &[("LN", "1")],
        );
        let uncoded = study("uncoded", "20250101", &["MR"], "MR KNEE");
        use PriorMatch::{BodyPart, Description, Modality, Procedure};
        let bp = [BodyPart, Procedure];
        assert_eq!(relevance(&same, &knee, &bp, None), Verdict::Relevant);
        // Without `procedure` the codes are not read: the description names no region.
        assert_eq!(
            relevance(&same, &knee, &[BodyPart], None),
            Verdict::NeedSeries
        );
        assert_eq!(relevance(&other, &knee, &bp, None), Verdict::NotRelevant);
        // A different code leaves the decision to `body-part`.
        assert_eq!(relevance(&knee_text, &knee, &bp, None), Verdict::Relevant);
        assert_eq!(relevance(&uncoded, &knee, &bp, None), Verdict::Relevant);
        // `description` too.
        let d = [Description, Procedure];
        assert_eq!(relevance(&same, &knee, &d, None), Verdict::Relevant);
        assert_eq!(
            relevance(&same, &knee, &[Description], None),
            Verdict::NotRelevant
        );
        // Alone: a shared code or nothing.
        let p = [Procedure];
        assert_eq!(relevance(&same, &knee, &p, None), Verdict::Relevant);
        assert_eq!(relevance(&knee_text, &knee, &p, None), Verdict::NotRelevant);
        assert_eq!(relevance(&uncoded, &knee, &p, None), Verdict::NotRelevant);
        // The modality still applies.
        let ct = with_codes(study("ct", "20250101", &["CT"], "CT"), &[("LN", "36510-6")]);
        assert_eq!(
            relevance(&ct, &knee, &[Modality, Procedure], None),
            Verdict::NotRelevant
        );
        // The same value in another scheme is another code.
        let scheme = with_codes(study("s", "20250101", &["MR"], "MR"), &[("SCT", "36510-6")]);
        assert_eq!(relevance(&scheme, &knee, &p, None), Verdict::NotRelevant);
        // An arriving study without codes: not applied.
        let plain = ArrivingStudy {
            procedures: vec![],
            ..knee.clone()
        };
        assert_eq!(relevance(&uncoded, &plain, &p, None), Verdict::Relevant);
        assert_eq!(relevance(&other, &plain, &bp, None), Verdict::NotRelevant);
        // In a selection: the coded prior counts without a series query.
        let found = vec![same.clone(), other.clone()];
        let r = rule(3, None, &[Modality, BodyPart, Procedure]);
        let s = choose_priors(&found, "x", &knee, &r, NOW, &HashMap::new());
        assert_eq!(
            (uids(&s), s.not_relevant, s.need_series.clone()),
            (vec!["same"], 1, None)
        );
    }

    fn sided(sides: &[Side], description: &str) -> ArrivingStudy {
        ArrivingStudy {
            modalities: vec!["MR".into()],
            body_part: "KNEE".into(),
            description: description.into(),
            sides: sides.to_vec(),
            ..Default::default()
        }
    }

    /// (b) Laterality: a left knee keeps left, bilateral and side-less priors, not right ones.
    #[test]
    fn laterality() {
        let l = [PriorMatch::Laterality];
        let left = sided(&[Side::Left], "MR KNEE");
        let prior = |d: &str| study("p", "20250101", &["MR"], d);
        assert_eq!(
            relevance(&prior("MR KNEE LEFT"), &left, &l, None),
            Verdict::Relevant
        );
        assert_eq!(
            relevance(&prior("MR knee (Lt)"), &left, &l, None),
            Verdict::Relevant
        );
        assert_eq!(
            relevance(&prior("MR KNEE RIGHT"), &left, &l, None),
            Verdict::NotRelevant
        );
        assert_eq!(
            relevance(&prior("MR KNEE RT"), &left, &l, None),
            Verdict::NotRelevant
        );
        assert_eq!(
            relevance(&prior("MR KNEES BILATERAL"), &left, &l, None),
            Verdict::Relevant
        );
        assert_eq!(
            relevance(&prior("MR KNEE LEFT RIGHT"), &left, &l, None),
            Verdict::Relevant
        );
        // The description names no side: the series tell.
        let unsaid = prior("MR KNEE");
        assert_eq!(relevance(&unsaid, &left, &l, None), Verdict::NeedSeries);
        let series = |sides: &[Side]| SeriesInfo {
            sides: sides.to_vec(),
            ..Default::default()
        };
        let got = |sides: &[Side]| relevance(&unsaid, &left, &l, Some(&series(sides)));
        assert_eq!(got(&[Side::Right]), Verdict::NotRelevant);
        assert_eq!(got(&[Side::Left]), Verdict::Relevant);
        assert_eq!(got(&[Side::Left, Side::Right]), Verdict::Relevant);
        assert_eq!(got(&[Side::Both]), Verdict::Relevant);
        assert_eq!(
            got(&[Side::Unpaired]),
            Verdict::Relevant,
            "no side: may show it"
        );
        assert_eq!(
            got(&[]),
            Verdict::Relevant,
            "nothing answered: no side known"
        );
        // A right study: the mirror image; from its description when its attributes are silent.
        let right = sided(&[], "MR KNEE RT");
        assert_eq!(
            relevance(&prior("MR KNEE LEFT"), &right, &l, None),
            Verdict::NotRelevant
        );
        assert_eq!(
            relevance(&prior("MR KNEE RIGHT"), &right, &l, None),
            Verdict::Relevant
        );
        // The attributes win over the description.
        let attr = sided(&[Side::Left], "MR KNEE RIGHT");
        assert_eq!(
            relevance(&prior("MR KNEE RIGHT"), &attr, &l, None),
            Verdict::NotRelevant
        );
        // Bilateral, unpaired or no side: every prior, no series asked for.
        for cur in [
            sided(&[Side::Both], ""),
            sided(&[Side::Left, Side::Right], ""),
            sided(&[Side::Unpaired], "MR PELVIS"),
            sided(&[], "MR KNEE"),
        ] {
            for d in ["MR KNEE RIGHT", "MR KNEE LEFT", "MR KNEE"] {
                assert_eq!(
                    relevance(&prior(d), &cur, &l, None),
                    Verdict::Relevant,
                    "{cur:?} {d}"
                );
            }
        }
        // With the other criteria: a left knee arrives; the right knee and the left head are
        // dropped, the left knee and a knee whose series say left are kept.
        let found = vec![
            study("right-knee", "20260601", &["MR"], "MR KNEE RIGHT"),
            study("left-head", "20260501", &["MR"], "MR BRAIN LEFT"),
            study("left-knee", "20250101", &["MR"], "MR KNEE LEFT"),
            study("knee", "20240101", &["MR"], "MR KNEE"),
        ];
        let r = rule(
            3,
            None,
            &[
                PriorMatch::Modality,
                PriorMatch::BodyPart,
                PriorMatch::Laterality,
            ],
        );
        let s = choose_priors(&found, "x", &left, &r, NOW, &HashMap::new());
        assert_eq!(s.need_series.as_deref(), Some("knee"));
        let mut info = HashMap::new();
        info.insert("knee".to_owned(), series(&[Side::Left]));
        let s = choose_priors(&found, "x", &left, &r, NOW, &info);
        assert_eq!((uids(&s), s.not_relevant), (vec!["left-knee", "knee"], 2));
        info.insert("knee".to_owned(), series(&[Side::Right]));
        let s = choose_priors(&found, "x", &left, &r, NOW, &info);
        assert_eq!((uids(&s), s.not_relevant), (vec!["left-knee"], 3));
    }
}
