//! The DICOM JSON Model (PS3.18 Annex F.2), written from a parsed [`DataSet`].
//!
//! Text is decoded with the data set's Specific Character Set; numbers become JSON numbers; person
//! names become `{"Alphabetic", "Ideographic", "Phonetic"}` objects; small binary values are sent
//! inline (base64), large ones as a `BulkDataURI`. The URI is written *relative*
//! (`bulkdata/{offset}-{length}`, or `bulkdata/7FE00010` for Pixel Data) because the instance's
//! absolute URL is only known when a request arrives: [`absolutize_bulk_uris`] rewrites it then.

use base64::Engine;
use dicom_core::VR;
use serde_json::{Map, Number, Value as Json};

use crate::charset::CharacterSet;
use crate::parse::{DataSet, PixelDataLocation, Value};
use crate::tag;

/// The prefix of relative BulkDataURIs as stored.
pub const RELATIVE_BULK_PREFIX: &str = "bulkdata/";

/// Converts a data set (and its top-level pixel data location) to a DICOM JSON object.
pub fn dataset_to_json(ds: &DataSet, pixel: Option<&PixelDataLocation>) -> Map<String, Json> {
    let cs = CharacterSet::from_value(ds.bytes(tag::SPECIFIC_CHARACTER_SET));
    let mut obj = level_to_json(ds, &cs);
    if let Some(p) = pixel {
        let vr = match p.tag {
            tag::FLOAT_PIXEL_DATA => "OF",
            tag::DOUBLE_FLOAT_PIXEL_DATA => "OD",
            _ => {
                if ds.u16(tag::BITS_ALLOCATED).unwrap_or(8) > 8
                    && !matches!(p.value, Value::Encapsulated { .. })
                {
                    "OW"
                } else {
                    "OB"
                }
            }
        };
        let uri = match &p.value {
            Value::Bulk { offset, length } => format!("{RELATIVE_BULK_PREFIX}{offset}-{length}"),
            _ => format!("{RELATIVE_BULK_PREFIX}{:08X}", p.tag),
        };
        let mut el = Map::new();
        el.insert("vr".into(), Json::String(vr.into()));
        el.insert("BulkDataURI".into(), Json::String(uri));
        obj.insert(format!("{:08X}", p.tag), Json::Object(el));
    }
    obj
}

fn level_to_json(ds: &DataSet, cs: &CharacterSet) -> Map<String, Json> {
    let mut obj = Map::new();
    for el in &ds.elements {
        if tag::is_group_length(el.tag) {
            continue;
        }
        let mut out = Map::new();
        out.insert("vr".into(), Json::String(el.vr.to_string().into()));
        match &el.value {
            Value::Items(items) => {
                let arr: Vec<Json> = items
                    .iter()
                    .map(|i| Json::Object(level_to_json(i, cs)))
                    .collect();
                if !arr.is_empty() {
                    out.insert("Value".into(), Json::Array(arr));
                }
            }
            Value::Bulk { offset, length } => {
                out.insert(
                    "BulkDataURI".into(),
                    Json::String(format!("{RELATIVE_BULK_PREFIX}{offset}-{length}")),
                );
            }
            Value::Encapsulated { .. } => {
                out.insert(
                    "BulkDataURI".into(),
                    Json::String(format!("{RELATIVE_BULK_PREFIX}{:08X}", el.tag)),
                );
            }
            Value::Bytes(b) => {
                if let Some((key, v)) = bytes_to_json(el.vr, b, cs) {
                    out.insert(key.into(), v);
                }
            }
        }
        obj.insert(format!("{:08X}", el.tag), Json::Object(out));
    }
    obj
}

/// The JSON for a primitive value: `("Value", [...])` or `("InlineBinary", "...")`.
fn bytes_to_json(vr: VR, b: &[u8], cs: &CharacterSet) -> Option<(&'static str, Json)> {
    if b.is_empty() {
        return None;
    }
    let values: Vec<Json> = match vr {
        VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN => {
            let enc = base64::engine::general_purpose::STANDARD.encode(b);
            return Some(("InlineBinary", Json::String(enc)));
        }
        VR::US => b
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]).into())
            .collect(),
        VR::SS => b
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]).into())
            .collect(),
        VR::UL => b
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()).into())
            .collect(),
        VR::SL => b
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()).into())
            .collect(),
        VR::UV => b
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()).into())
            .collect(),
        VR::SV => b
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()).into())
            .collect(),
        VR::FL => b
            .chunks_exact(4)
            .map(|c| float(f64::from(f32::from_le_bytes(c.try_into().unwrap()))))
            .collect(),
        VR::FD => b
            .chunks_exact(8)
            .map(|c| float(f64::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        VR::AT => b
            .chunks_exact(4)
            .map(|c| {
                let g = u16::from_le_bytes([c[0], c[1]]);
                let e = u16::from_le_bytes([c[2], c[3]]);
                Json::String(format!("{g:04X}{e:04X}"))
            })
            .collect(),
        VR::PN => {
            let text = cs.decode(b).text;
            split_values(&text, VR::PN)
                .map(|v| {
                    if v.is_empty() {
                        return Json::Null;
                    }
                    let mut m = Map::new();
                    for (name, group) in ["Alphabetic", "Ideographic", "Phonetic"]
                        .iter()
                        .zip(v.split('='))
                    {
                        if !group.is_empty() {
                            m.insert((*name).into(), Json::String(group.to_owned()));
                        }
                    }
                    Json::Object(m)
                })
                .collect()
        }
        VR::DS => {
            let text = String::from_utf8_lossy(b);
            split_values(&text, vr)
                .map(|v| match v.parse::<f64>() {
                    Ok(f) => float(f),
                    Err(_) if v.is_empty() => Json::Null,
                    // Not a number: keep the text rather than lose it.
                    Err(_) => Json::String(v.to_owned()),
                })
                .collect()
        }
        VR::IS => {
            let text = String::from_utf8_lossy(b);
            split_values(&text, vr)
                .map(|v| match v.parse::<i64>() {
                    Ok(i) => i.into(),
                    Err(_) if v.is_empty() => Json::Null,
                    Err(_) => Json::String(v.to_owned()),
                })
                .collect()
        }
        _ => {
            let text = if is_charset_text(vr) {
                cs.decode(b).text
            } else {
                String::from_utf8_lossy(b).into_owned()
            };
            split_values(&text, vr)
                .map(|v| {
                    if v.is_empty() {
                        Json::Null
                    } else {
                        Json::String(v.to_owned())
                    }
                })
                .collect()
        }
    };
    if values.iter().all(Json::is_null) {
        return None;
    }
    Some(("Value", Json::Array(values)))
}

fn float(f: f64) -> Json {
    Number::from_f64(f).map_or(Json::Null, Json::Number)
}

/// VRs whose text is in the Specific Character Set (PS3.5 6.1.2.3).
pub fn is_charset_text(vr: VR) -> bool {
    matches!(
        vr,
        VR::SH | VR::LO | VR::UC | VR::ST | VR::LT | VR::UT | VR::PN
    )
}

/// Splits a text value into its values, trimming padding as PS3.5 6.2 allows per VR.
pub fn split_values(text: &str, vr: VR) -> impl Iterator<Item = &str> {
    let single = matches!(vr, VR::LT | VR::ST | VR::UT | VR::UR);
    let text = text.trim_end_matches(['\0', ' ']);
    let parts: Vec<&str> = if single {
        vec![text]
    } else {
        text.split('\\').collect()
    };
    parts.into_iter().map(move |p| {
        if matches!(vr, VR::LT | VR::ST | VR::UT) {
            p.trim_end_matches(' ')
        } else {
            p.trim_matches(|c| c == ' ' || c == '\0')
        }
    })
}

/// Rewrites relative BulkDataURIs in stored metadata to absolute ones under `instance_url`.
pub fn absolutize_bulk_uris(json: &str, instance_url: &str) -> String {
    let needle = "\"BulkDataURI\":\"bulkdata/";
    if !json.contains(needle) {
        return json.to_owned();
    }
    json.replace(
        needle,
        &format!("\"BulkDataURI\":\"{instance_url}/bulkdata/"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Element;
    use crate::tag::Tag;

    fn el(tag: Tag, vr: VR, v: &[u8]) -> Element {
        Element {
            tag,
            vr,
            value: Value::Bytes(v.to_vec()),
        }
    }

    #[test]
    fn json_model() {
        let ds = DataSet {
            elements: vec![
                el(tag::SPECIFIC_CHARACTER_SET, VR::CS, b"ISO_IR 100"),
                el(tag::MODALITIES_IN_STUDY, VR::CS, b"CT\\MR "),
                el(tag::PATIENT_NAME, VR::PN, b"M\xfcller^Hans=^=^ "),
                el(tag::ROWS, VR::US, &512u16.to_le_bytes()),
                el(tag::RESCALE_INTERCEPT, VR::DS, b"-1024 "),
                el(tag::INSTANCE_NUMBER, VR::IS, b" 7"),
                el(tag::STUDY_INSTANCE_UID, VR::UI, b"1.2.3\0"),
            ],
        };
        let j = Json::Object(dataset_to_json(&ds, None));
        assert_eq!(j["00080061"]["Value"], serde_json::json!(["CT", "MR"]));
        assert_eq!(j["00100010"]["Value"][0]["Alphabetic"], "Müller^Hans");
        assert_eq!(j["00280010"]["Value"][0], 512);
        assert_eq!(j["00281052"]["Value"][0], -1024.0);
        assert_eq!(j["00200013"]["Value"][0], 7);
        assert_eq!(j["0020000D"]["Value"][0], "1.2.3");
        assert_eq!(j["0020000D"]["vr"], "UI");
    }

    #[test]
    fn bulk_uris_become_absolute() {
        let s = r#"{"7FE00010":{"vr":"OW","BulkDataURI":"bulkdata/100-20"}}"#;
        let out = absolutize_bulk_uris(s, "http://h/dicom-web/studies/1/series/2/instances/3");
        assert!(
            out.contains("\"http://h/dicom-web/studies/1/series/2/instances/3/bulkdata/100-20\"")
        );
    }
}
