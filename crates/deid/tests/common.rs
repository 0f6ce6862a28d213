//! Helpers shared by the test modules, written independently of the crate's internals.

use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_object::InMemDicomObject;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The UID the crate must produce for `uid` under `key`, computed here from the documented
/// formula: `2.25.` + decimal of the first 16 bytes of HMAC-SHA256(key, uid) with the UUID
/// version-8 and variant bits set.
pub fn expected_uid(key: &str, uid: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    m.update(uid.as_bytes());
    let h = m.finalize().into_bytes();
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0F) | 0x80;
    b[8] = (b[8] & 0x3F) | 0x80;
    format!("2.25.{}", u128::from_be_bytes(b))
}

pub fn el(
    tag: Tag,
    vr: VR,
    v: impl Into<Value<InMemDicomObject>>,
) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, v)
}

pub fn seq(items: Vec<InMemDicomObject>) -> Value<InMemDicomObject> {
    Value::from(DataSetSequence::new(items, Length::UNDEFINED))
}

/// The string values of `tag` in `ds` (trailing padding removed), `None` when absent.
pub fn strs(ds: &InMemDicomObject, tag: Tag) -> Option<Vec<String>> {
    let e = ds.get(tag)?;
    match e.value() {
        Value::Primitive(p) => Some(
            p.to_multi_str()
                .iter()
                .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
                .collect(),
        ),
        _ => Some(vec![]),
    }
}

pub fn str1(ds: &InMemDicomObject, tag: Tag) -> Option<String> {
    strs(ds, tag).map(|v| v.join("\\"))
}

pub fn items(ds: &InMemDicomObject, tag: Tag) -> Option<&[InMemDicomObject]> {
    ds.get(tag)?.items()
}

pub fn is_empty_value(ds: &InMemDicomObject, tag: Tag) -> bool {
    match ds.get(tag).map(|e| e.value()) {
        Some(Value::Primitive(PrimitiveValue::Empty)) => true,
        Some(Value::Primitive(p)) => p
            .to_multi_str()
            .iter()
            .all(|s| s.trim_end_matches(['\0', ' ']).is_empty()),
        Some(Value::Sequence(s)) => s.items().is_empty(),
        _ => false,
    }
}

/// A minimal image-like data set of one patient.
pub fn instance(study: &str, series: &str, sop: &str) -> InMemDicomObject {
    use dicom_dictionary_std::tags;
    InMemDicomObject::from_element_iter([
        el(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2"),
        el(tags::SOP_INSTANCE_UID, VR::UI, sop),
        el(tags::STUDY_DATE, VR::DA, "20240312"),
        el(tags::MODALITY, VR::CS, "CT"),
        el(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "Smithson^John"),
        el(tags::STUDY_DESCRIPTION, VR::LO, "CT head Smithson 20240312"),
        el(tags::PATIENT_NAME, VR::PN, "Doe^Jane"),
        el(tags::PATIENT_ID, VR::LO, "PAT-0001"),
        el(tags::PATIENT_BIRTH_DATE, VR::DA, "19610423"),
        el(tags::PATIENT_SEX, VR::CS, "F"),
        el(tags::STUDY_INSTANCE_UID, VR::UI, study),
        el(tags::SERIES_INSTANCE_UID, VR::UI, series),
        el(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            "1.2.840.10008.1.4.1.1",
        ),
    ])
}

/// Tags of a data set, for diagnostics.
#[allow(dead_code)]
pub fn tag_list(ds: &InMemDicomObject) -> Vec<Tag> {
    ds.iter().map(|e| e.tag()).collect()
}
