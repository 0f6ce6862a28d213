//! Coded anatomy: the Anatomic Region Sequence (0008,2218) of an image (PS3.3 10.5, the General
//! Anatomy macros) read as the Body Part Examined defined term it stands for, so that
//! relevant-prior matching ([`super::relevance`]) sees one vocabulary whichever way a modality
//! said what it imaged.
//!
//! The correspondence is PS3.16 Annex L ("Correspondence of Anatomic Region Codes and Body Part
//! Examined Defined Terms"), for the regions of CID 4031 "Common Anatomic Regions": each row
//! gives the Body Part Examined term, its SNOMED CT concept (coding scheme `SCT`) and, where
//! there is one, the SNOMED-RT style code of the earlier editions (`SRT`, also written `SNM3`
//! or `99SDM` by older equipment). Where PS3.16 changed the concept of a term over the years
//! (CHEST, ABDOMEN, PELVIS, KNEE, HIP, …), both concepts are listed. Codes of other schemes, and
//! concepts not listed, name no term: matching falls back to Body Part Examined and the
//! description, as it does without the sequence.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use vesalius_core::tag;

/// One coded concept of an Anatomic Region Sequence item (PS3.3 8.8, Code Sequence macro).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AnatomicCode {
    /// Coding Scheme Designator (0008,0102), e.g. `SCT` or `SRT`.
    pub scheme: String,
    /// Code Value (0008,0100), or Long Code Value (0008,0119).
    pub value: String,
}

impl AnatomicCode {
    /// A code of `scheme`.
    pub fn new(scheme: &str, value: &str) -> Self {
        AnatomicCode {
            scheme: scheme.trim().to_owned(),
            value: value.trim().to_owned(),
        }
    }

    /// The Body Part Examined defined term the code corresponds to (PS3.16 Annex L), if any.
    pub fn body_part(&self) -> Option<&'static str> {
        let value = self.value.as_str();
        match self.scheme.to_ascii_uppercase().as_str() {
            "SCT" => ANNEX_L.iter().find(|r| r.1.contains(&value)).map(|r| r.0),
            "SRT" | "SNM3" | "99SDM" => ANNEX_L
                .iter()
                .find(|r| !r.2.is_empty() && r.2 == value)
                .map(|r| r.0),
            _ => None,
        }
    }
}

/// The codes of the items of sequence `seq` in a DICOM JSON object (PS3.18 F.2), e.g. a C-FIND
/// answer or an instance's metadata; items without a code value or scheme are skipped.
pub fn codes(object: &Map<String, Json>, seq: u32) -> Vec<AnatomicCode> {
    let Some(items) = object
        .get(&format!("{seq:08X}"))
        .and_then(|e| e.get("Value"))
        .and_then(Json::as_array)
    else {
        return Vec::new();
    };
    let text = |item: &Json, t: u32| -> String {
        item.get(format!("{t:08X}"))
            .and_then(|e| e.get("Value"))
            .and_then(Json::as_array)
            .and_then(|v| v.first())
            .and_then(Json::as_str)
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    items
        .iter()
        .filter_map(|item| {
            let mut value = text(item, tag::CODE_VALUE);
            if value.is_empty() {
                value = text(item, tag::LONG_CODE_VALUE);
            }
            let scheme = text(item, tag::CODING_SCHEME_DESIGNATOR);
            (!value.is_empty() && !scheme.is_empty()).then(|| AnatomicCode::new(&scheme, &value))
        })
        .collect()
}

/// The Body Part Examined terms `codes` correspond to, joined by spaces (for
/// [`super::relevance::regions`]).
pub fn body_parts(codes: &[AnatomicCode]) -> String {
    let mut terms: Vec<&str> = codes.iter().filter_map(AnatomicCode::body_part).collect();
    terms.sort_unstable();
    terms.dedup();
    terms.join(" ")
}

/// Whether two codes are the same concept: the same Coding Scheme Designator (compared without
/// regard to case) and Code Value (PS3.3 8.8: a code is identified by the pair; Code Meaning
/// is display text and does not count).
pub fn same_code(a: &AnatomicCode, b: &AnatomicCode) -> bool {
    a.scheme.eq_ignore_ascii_case(&b.scheme) && a.value == b.value
}

/// The coded procedures of an instance (DICOM JSON): Procedure Code Sequence (0008,1032, General
/// Study module, PS3.3 C.7.2.1), Requested Procedure Code Sequence (0032,1064) at the top level
/// and in the items of the Request Attributes Sequence (0040,0275, PS3.3 Table 10-9), without
/// repeats.
pub fn procedure_codes(object: &Map<String, Json>) -> Vec<AnatomicCode> {
    let mut out = codes(object, tag::PROCEDURE_CODE_SEQUENCE);
    out.extend(codes(object, tag::REQUESTED_PROCEDURE_CODE_SEQUENCE));
    for item in items(object, tag::REQUEST_ATTRIBUTES_SEQUENCE) {
        out.extend(codes(item, tag::REQUESTED_PROCEDURE_CODE_SEQUENCE));
    }
    out.sort_by_key(|c| (c.scheme.to_ascii_uppercase(), c.value.clone()));
    out.dedup_by(|a, b| same_code(a, b));
    out
}

/// The items of sequence `seq` of a DICOM JSON object.
fn items(object: &Map<String, Json>, seq: u32) -> impl Iterator<Item = &Map<String, Json>> {
    object
        .get(&format!("{seq:08X}"))
        .and_then(|e| e.get("Value"))
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(Json::as_object)
}

/// A side of the body a study shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// Left (`L`).
    Left,
    /// Right (`R`).
    Right,
    /// Both sides (`B`, bilateral).
    Both,
    /// An unpaired body part (`U`): no side.
    Unpaired,
}

impl Side {
    /// A Laterality (0020,0060: `R` or `L` of a paired body part, General Series module, PS3.3
    /// C.7.3.1) or Image Laterality (0020,0062: `R`, `L`, `U` unpaired, `B` both, e.g. the DX
    /// Anatomy Imaged and Mammography Image modules, PS3.3 C.8.11.2 and C.8.11.7) value.
    pub fn of_attribute(value: &str) -> Option<Side> {
        match value.trim().to_ascii_uppercase().as_str() {
            "L" => Some(Side::Left),
            "R" => Some(Side::Right),
            "B" => Some(Side::Both),
            "U" => Some(Side::Unpaired),
            _ => None,
        }
    }

    /// A laterality code of an Anatomic Region Modifier Sequence (0008,2220) item: the concepts
    /// of PS3.16 CID 244 "Laterality" (also in CID 2 "Anatomic Modifier"), in SNOMED CT
    /// (`SCT`) or their SNOMED-RT form (`SRT`, `SNM3`, `99SDM`). Unilateral (66459002, G-A103)
    /// says no side.
    pub fn of_code(code: &AnatomicCode) -> Option<Side> {
        let table: &[(&str, &str, Side)] = &[
            ("7771000", "G-A101", Side::Left),
            ("24028007", "G-A100", Side::Right),
            ("51440002", "G-A102", Side::Both),
        ];
        let value = code.value.as_str();
        match code.scheme.to_ascii_uppercase().as_str() {
            "SCT" => table.iter().find(|r| r.0 == value).map(|r| r.2),
            "SRT" | "SNM3" | "99SDM" => table.iter().find(|r| r.1 == value).map(|r| r.2),
            _ => None,
        }
    }

    /// The sides the words of a text name: `LEFT`/`LT`, `RIGHT`/`RT`, `BILATERAL`/`BILAT`/`BOTH`
    /// (single letters are too ambiguous in free text).
    pub fn of_text(text: &str) -> Vec<Side> {
        let mut out: Vec<Side> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter_map(|w| match w.to_uppercase().as_str() {
                "LEFT" | "LT" => Some(Side::Left),
                "RIGHT" | "RT" => Some(Side::Right),
                "BILATERAL" | "BILAT" | "BOTH" => Some(Side::Both),
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The side that `sides` (of one study, from any source) add up to: both when they include both
/// or left and right, else the one side named; `None` when they name no side (nothing, or
/// unpaired only).
pub fn side(sides: &[Side]) -> Option<Side> {
    let has = |s| sides.contains(&s);
    match (has(Side::Left), has(Side::Right)) {
        _ if has(Side::Both) => Some(Side::Both),
        (true, true) => Some(Side::Both),
        (true, false) => Some(Side::Left),
        (false, true) => Some(Side::Right),
        (false, false) => None,
    }
}

/// The sides an instance or a C-FIND answer (DICOM JSON) states: Laterality (0020,0060), Image
/// Laterality (0020,0062) and the laterality codes of the Anatomic Region Modifier Sequence
/// (0008,2220) in the items of its Anatomic Region Sequence (0008,2218, PS3.3 10.5); for an
/// enhanced multi-frame object also Frame Laterality (0020,9072) and the Anatomic Region
/// Sequence of its Frame Anatomy (see [`frame_anatomy`]); without repeats.
pub fn sides(object: &Map<String, Json>) -> Vec<Side> {
    let mut out: Vec<Side> = [tag::LATERALITY, tag::IMAGE_LATERALITY]
        .into_iter()
        .filter_map(|t| Side::of_attribute(&first_text(object, t)))
        .collect();
    let mut regions: Vec<&Map<String, Json>> =
        items(object, tag::ANATOMIC_REGION_SEQUENCE).collect();
    for frame in frame_anatomy(object) {
        out.extend(Side::of_attribute(&first_text(
            frame,
            tag::FRAME_LATERALITY,
        )));
        regions.extend(items(frame, tag::ANATOMIC_REGION_SEQUENCE));
    }
    for region in regions {
        out.extend(
            codes(region, tag::ANATOMIC_REGION_MODIFIER_SEQUENCE)
                .iter()
                .filter_map(Side::of_code),
        );
    }
    out.sort();
    out.dedup();
    out
}

/// The Frame Anatomy Sequence (0020,9071) items of an enhanced multi-frame object (PS3.3
/// C.7.6.16.2.8, Frame Anatomy Functional Group: Frame Laterality (0020,9072) and the Anatomic
/// Region Sequence of the frames), in its Shared Functional Groups Sequence (5200,9229) and in
/// each item of its Per-frame Functional Groups Sequence (5200,9230).
pub fn frame_anatomy(object: &Map<String, Json>) -> impl Iterator<Item = &Map<String, Json>> {
    items(object, tag::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
        .chain(items(object, tag::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE))
        .flat_map(|group| items(group, tag::FRAME_ANATOMY_SEQUENCE))
}

/// The first value of `t` in `object` as text ("" when absent).
fn first_text(object: &Map<String, Json>, t: u32) -> String {
    object
        .get(&format!("{t:08X}"))
        .and_then(|e| e.get("Value"))
        .and_then(Json::as_array)
        .and_then(|v| v.first())
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// PS3.16 Annex L, for the terms relevant-prior matching knows a region of: (Body Part
/// Examined defined term, SNOMED CT concept ids, SNOMED-RT style code or "").
const ANNEX_L: &[(&str, &[&str], &str)] = &[
    ("ABDOMEN", &["818981001", "113345001"], "T-D4000"),
    ("ABDOMENPELVIS", &["818982008"], "R-FAB57"),
    ("ADRENAL", &["23451007"], "T-B3000"),
    ("ANKLE", &["70258002", "344001"], "T-15750"),
    ("AORTA", &["15825003"], "T-42000"),
    ("ARM", &["40983000"], "T-D8200"),
    ("BLADDER", &["89837001"], "T-74000"),
    ("BRAIN", &["12738006"], "T-A0100"),
    ("BREAST", &["76752008"], "T-04000"),
    ("CALCANEUS", &["80144004"], "T-12770"),
    ("CAROTID", &["69105007"], "T-45010"),
    ("CEREBELLUM", &["113305005"], "T-A6000"),
    ("CHEST", &["816094009", "43799004", "51185008"], "T-D3000"),
    ("CHESTABDOMEN", &["416550000"], "R-FAB55"),
    ("CHESTABDPELVIS", &["416775004"], "R-FAB56"),
    ("CIRCLEOFWILLIS", &["11453005"], "T-45526"),
    ("CLAVICLE", &["51299004"], "T-12310"),
    ("COCCYX", &["64688005"], "T-11BF0"),
    ("CORONARYARTERY", &["41801008"], "T-43000"),
    ("CSPINE", &["122494005"], "T-11501"),
    ("ELBOW", &["16953009", "76248009"], "T-15430"),
    ("FACE", &["89545001"], "T-D1200"),
    ("FEMUR", &["71341001"], "T-12710"),
    ("FINGER", &["7569003"], "T-D8800"),
    ("FOOT", &["56459004"], "T-D9700"),
    ("HAND", &["85562004"], "T-D8700"),
    ("HEAD", &["69536005"], "T-D1100"),
    ("HEADNECK", &["774007"], "T-D1000"),
    ("HEART", &["80891009"], "T-32000"),
    ("HIP", &["24136001", "29836001"], "T-D2500"),
    ("HUMERUS", &["85050009"], "T-12410"),
    ("IAC", &["361078006"], "T-AB959"),
    ("JAW", &["661005"], "T-D1213"),
    ("KIDNEY", &["64033007"], "T-71000"),
    ("KNEE", &["72696002", "49076000"], "T-D9200"),
    ("LARYNX", &["4596009"], "T-24100"),
    ("LEG", &["30021000"], "T-D9400"),
    ("LIVER", &["10200004"], "T-62000"),
    ("LSPINE", &["122496007"], "T-11503"),
    ("LUNG", &["39607008"], "T-28000"),
    ("NECK", &["45048000"], "T-D1600"),
    ("ORBIT", &["363654007"], "T-D14AE"),
    ("PANCREAS", &["15776009"], "T-65000"),
    ("PATELLA", &["64234005"], "T-12730"),
    ("PELVIS", &["816092008", "12921003"], "T-D6000"),
    ("PROSTATE", &["41216001"], "T-92000"),
    ("RIB", &["113197003"], "T-11300"),
    ("SACRUM", &["54735007"], "T-11AD0"),
    ("SCAPULA", &["79601000"], "T-12280"),
    ("SHOULDER", &["16982005"], "T-D2220"),
    ("SKULL", &["89546000"], "T-11100"),
    ("SPINE", &["421060004"], "T-D04FF"),
    ("SPLEEN", &["78961009"], "T-C3000"),
    ("STERNUM", &["56873002"], "T-11210"),
    ("THIGH", &["68367000"], "T-D9100"),
    ("THUMB", &["76505004"], "T-D8810"),
    ("THYROID", &["69748006"], "T-B6000"),
    ("TOE", &["29707007"], "T-D9800"),
    ("TSPINE", &["122495006"], "T-11502"),
    ("UTERUS", &["35039007"], "T-83000"),
    ("WHOLEBODY", &["38266002"], "T-D0010"),
    ("WRIST", &["74670003", "8205005"], "T-D8600"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::priors::relevance::regions;

    #[test]
    fn codes_of_cid_4031_name_their_body_part() {
        let sct = |v: &str| AnatomicCode::new("SCT", v).body_part();
        let srt = |v: &str| AnatomicCode::new("SRT", v).body_part();
        assert_eq!(sct("69536005"), Some("HEAD"));
        assert_eq!(srt("T-D1100"), Some("HEAD"));
        assert_eq!(sct("12738006"), Some("BRAIN"));
        assert_eq!(srt("T-A0100"), Some("BRAIN"));
        assert_eq!(sct("51185008"), Some("CHEST"));
        assert_eq!(sct("43799004"), Some("CHEST"));
        assert_eq!(sct("816094009"), Some("CHEST"));
        assert_eq!(srt("T-D04FF"), Some("SPINE"));
        assert_eq!(srt("T-D3000"), Some("CHEST"));
        assert_eq!(sct("818981001"), Some("ABDOMEN"));
        assert_eq!(sct("113345001"), Some("ABDOMEN"));
        assert_eq!(sct("72696002"), Some("KNEE"));
        assert_eq!(sct("49076000"), Some("KNEE"));
        assert_eq!(
            AnatomicCode::new("SNM3", "T-D9200").body_part(),
            Some("KNEE")
        );
        assert_eq!(
            AnatomicCode::new("sct", "38266002").body_part(),
            Some("WHOLEBODY")
        );
        // Another scheme, a code not listed, a T-code under SCT: nothing.
        assert_eq!(AnatomicCode::new("FMA", "69536005").body_part(), None);
        assert_eq!(sct("123456789"), None);
        assert_eq!(sct("T-D1100"), None);
        assert_eq!(srt(""), None);
    }

    /// Every term of the table is one relevant-prior matching knows a region of, and the
    /// table has no concept twice.
    #[test]
    fn every_term_has_a_region_and_every_code_one_term() {
        let mut seen = std::collections::HashSet::new();
        for (term, sct, srt) in ANNEX_L {
            assert!(!regions(term).is_empty(), "{term} has no region");
            for c in sct.iter().copied().chain((!srt.is_empty()).then_some(*srt)) {
                assert!(seen.insert(c), "{c} twice");
            }
        }
    }

    #[test]
    fn codes_from_dicom_json() {
        let o: Map<String, Json> = serde_json::from_str(
            r#"{"00082218": {"vr": "SQ", "Value": [
                  {"00080100": {"vr": "SH", "Value": ["12738006"]},
                   "00080102": {"vr": "SH", "Value": ["SCT"]},
                   "00080104": {"vr": "LO", "Value": ["Brain"]}},
                  {"00080119": {"vr": "UC", "Value": ["72696002"]},
                   "00080102": {"vr": "SH", "Value": ["SCT "]}},
                  {"00080100": {"vr": "SH", "Value": ["T-D3000"]}},
                  {}]}}"#,
        )
        .unwrap();
        let c = codes(&o, tag::ANATOMIC_REGION_SEQUENCE);
        assert_eq!(
            c,
            [
                AnatomicCode::new("SCT", "12738006"),
                AnatomicCode::new("SCT", "72696002")
            ]
        );
        assert_eq!(body_parts(&c), "BRAIN KNEE");
        assert!(codes(&Map::new(), tag::ANATOMIC_REGION_SEQUENCE).is_empty());
        let empty: Map<String, Json> =
            serde_json::from_str(r#"{"00082218": {"vr": "SQ"}}"#).unwrap();
        assert!(codes(&empty, tag::ANATOMIC_REGION_SEQUENCE).is_empty());
    }

    #[test]
    fn sides_from_attributes_codes_and_words() {
        assert_eq!(Side::of_attribute(" l"), Some(Side::Left));
        assert_eq!(Side::of_attribute("R"), Some(Side::Right));
        assert_eq!(Side::of_attribute("B"), Some(Side::Both));
        assert_eq!(Side::of_attribute("U"), Some(Side::Unpaired));
        assert_eq!(Side::of_attribute(""), None);
        assert_eq!(Side::of_attribute("LEFT"), None);
        let code = |s: &str, v: &str| Side::of_code(&AnatomicCode::new(s, v));
        assert_eq!(code("SCT", "7771000"), Some(Side::Left));
        assert_eq!(code("SCT", "24028007"), Some(Side::Right));
        assert_eq!(code("SCT", "51440002"), Some(Side::Both));
        assert_eq!(code("SRT", "G-A101"), Some(Side::Left));
        assert_eq!(code("SNM3", "G-A100"), Some(Side::Right));
        assert_eq!(code("SCT", "66459002"), None, "unilateral names no side");
        assert_eq!(code("SCT", "G-A101"), None);
        assert_eq!(code("FMA", "7771000"), None);
        assert_eq!(Side::of_text("MR Knee left"), [Side::Left]);
        assert_eq!(Side::of_text("XR HANDS BILAT"), [Side::Both]);
        assert_eq!(Side::of_text("RT and LT"), [Side::Left, Side::Right]);
        assert!(Side::of_text("MR L KNEE, BRIGHT").is_empty());
        assert_eq!(side(&[Side::Left]), Some(Side::Left));
        assert_eq!(side(&[Side::Right, Side::Unpaired]), Some(Side::Right));
        assert_eq!(side(&[Side::Left, Side::Right]), Some(Side::Both));
        assert_eq!(side(&[Side::Left, Side::Both]), Some(Side::Both));
        assert_eq!(side(&[Side::Unpaired]), None);
        assert_eq!(side(&[]), None);
    }

    #[test]
    fn sides_and_procedures_from_dicom_json() {
        let o: Map<String, Json> = serde_json::from_str(
            r#"{"00200060": {"vr": "CS", "Value": ["L"]},
                "00082218": {"vr": "SQ", "Value": [
                  {"00080100": {"vr": "SH", "Value": ["72696002"]},
                   "00080102": {"vr": "SH", "Value": ["SCT"]},
                   "00082220": {"vr": "SQ", "Value": [
                     {"00080100": {"vr": "SH", "Value": ["24028007"]},
                      "00080102": {"vr": "SH", "Value": ["SCT"]}}]}}]},
                "00081032": {"vr": "SQ", "Value": [
                  {"00080100": {"vr": "SH", "Value": ["36510-6"]},
                   "00080102": {"vr": "SH", "Value": ["LN"]},
                   "00080104": {"vr": "LO", "Value": ["MR Knee"]}}]},
                "00400275": {"vr": "SQ", "Value": [
                  {"00321064": {"vr": "SQ", "Value": [
                    {"00080100": {"vr": "SH", "Value": ["MRKNEE"]},
                     "00080102": {"vr": "SH", "Value": ["99LOCAL"]}},
                    {"00080100": {"vr": "SH", "Value": ["36510-6"]},
                     "00080102": {"vr": "SH", "Value": ["ln"]}}]}}]}}"#,
        )
        .unwrap();
        assert_eq!(sides(&o), [Side::Left, Side::Right]);
        assert_eq!(side(&sides(&o)), Some(Side::Both));
        let p = procedure_codes(&o);
        assert_eq!(
            p,
            [
                AnatomicCode::new("99LOCAL", "MRKNEE"),
                AnatomicCode::new("LN", "36510-6")
            ],
            "nested codes read, the same code in another case once"
        );
        assert!(same_code(
            &AnatomicCode::new("ln", "36510-6"),
            &AnatomicCode::new("LN", "36510-6")
        ));
        assert!(!same_code(
            &AnatomicCode::new("LN", "36510-6"),
            &AnatomicCode::new("LN", "36510-7")
        ));
        let i: Map<String, Json> = serde_json::from_str(
            r#"{"00200062": {"vr": "CS", "Value": ["B"]},
                "00321064": {"vr": "SQ", "Value": [
                  {"00080100": {"vr": "SH", "Value": ["X1"]},
                   "00080102": {"vr": "SH", "Value": ["99L"]}}]}}"#,
        )
        .unwrap();
        assert_eq!(sides(&i), [Side::Both]);
        assert_eq!(procedure_codes(&i), [AnatomicCode::new("99L", "X1")]);
        assert!(sides(&Map::new()).is_empty());
        assert!(procedure_codes(&Map::new()).is_empty());
    }

    #[test]
    fn sides_of_enhanced_multi_frame_objects_from_frame_anatomy() {
        // An enhanced MR of the left knee: no Laterality, no Image Laterality; Frame Laterality
        // in the shared functional groups (PS3.3 C.7.6.16.2.8).
        let shared: Map<String, Json> = serde_json::from_str(
            r#"{"52009229": {"vr": "SQ", "Value": [
                  {"00209071": {"vr": "SQ", "Value": [
                    {"00209072": {"vr": "CS", "Value": ["L"]},
                     "00082218": {"vr": "SQ", "Value": [
                       {"00080100": {"vr": "SH", "Value": ["72696002"]},
                        "00080102": {"vr": "SH", "Value": ["SCT"]}}]}}]}}]}}"#,
        )
        .unwrap();
        assert_eq!(sides(&shared), [Side::Left]);
        assert_eq!(frame_anatomy(&shared).count(), 1);
        // Per frame: one frame right, one left (a bilateral acquisition), the side of one
        // coded in its region's modifier beside a Frame Laterality `U` (unpaired: no side).
        let per_frame: Map<String, Json> = serde_json::from_str(
            r#"{"52009230": {"vr": "SQ", "Value": [
                  {"00209071": {"vr": "SQ", "Value": [{"00209072": {"vr": "CS", "Value": ["R"]}}]}},
                  {"00209071": {"vr": "SQ", "Value": [
                    {"00209072": {"vr": "CS", "Value": ["U"]},
                     "00082218": {"vr": "SQ", "Value": [
                       {"00080100": {"vr": "SH", "Value": ["72696002"]},
                        "00080102": {"vr": "SH", "Value": ["SCT"]},
                        "00082220": {"vr": "SQ", "Value": [
                          {"00080100": {"vr": "SH", "Value": ["7771000"]},
                           "00080102": {"vr": "SH", "Value": ["SCT"]}}]}}]}}]}}]}}"#,
        )
        .unwrap();
        assert_eq!(sides(&per_frame), [Side::Left, Side::Right, Side::Unpaired]);
        assert_eq!(side(&sides(&per_frame)), Some(Side::Both));
    }
}
