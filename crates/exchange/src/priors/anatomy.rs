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
}
