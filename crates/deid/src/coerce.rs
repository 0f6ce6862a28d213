//! Reconciliation of a received object's patient identity with the local record, keeping the
//! original values (issue 4, guest upload inbox).
//!
//! An object uploaded from outside carries the sender's Patient ID; before it enters the
//! archive a user sets the local Patient ID and Issuer of Patient ID (and, optionally, the
//! name). The values replaced are kept in the object, as PS3.3 C.12.1.1.9 prescribes for
//! coerced attributes: one item of Original Attributes Sequence (0400,0561) with the old
//! values in Modified Attributes Sequence (0400,0550), the time, the modifying system and the
//! reason `COERCE`. The sender's Patient ID also goes to Other Patient IDs Sequence
//! (0010,1002) so that it remains searchable as a patient identifier.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject, OpenFileOptions};

use crate::Error;

/// The local identity to give a patient.
#[derive(Debug, Clone, Default)]
pub struct PatientIdentity {
    /// Patient ID (0010,0020).
    pub patient_id: String,
    /// Issuer of Patient ID (0010,0021).
    pub issuer: String,
    /// Patient's Name (0010,0010); `None` keeps the received name.
    pub name: Option<String>,
}

/// Reads a Part 10 object from memory.
pub fn read_object(bytes: &[u8]) -> Result<FileDicomObject<InMemDicomObject>, Error> {
    OpenFileOptions::new()
        .from_reader(bytes)
        .map_err(|source| Error::ReadBytes {
            source: Box::new(source),
        })
}

/// Writes a Part 10 object (preamble, file meta, data set) to memory.
pub fn write_object(obj: &FileDicomObject<InMemDicomObject>) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    obj.write_all(&mut out)
        .map_err(|source| Error::WriteBytes {
            source: Box::new(source),
        })?;
    Ok(out)
}

fn text(ds: &InMemDicomObject, tag: Tag) -> Option<String> {
    ds.get(tag)
        .and_then(|e| e.value().to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
}

/// Gives the data set `who`'s identity, keeping the replaced values (see the module doc).
/// `system` names the modifying system (Modifying System (0400,0563)); `now` is the DICOM
/// DateTime of the change (YYYYMMDDHHMMSS). Returns whether anything changed.
pub fn coerce_patient(
    ds: &mut InMemDicomObject,
    who: &PatientIdentity,
    system: &str,
    now: &str,
) -> bool {
    let mut wanted = vec![
        (tags::PATIENT_ID, VR::LO, who.patient_id.clone()),
        (tags::ISSUER_OF_PATIENT_ID, VR::LO, who.issuer.clone()),
    ];
    if let Some(n) = &who.name {
        wanted.push((tags::PATIENT_NAME, VR::PN, n.clone()));
    }
    let mut modified = InMemDicomObject::new_empty();
    let mut changed = false;
    for (tag, vr, value) in &wanted {
        let old = ds.get(*tag).cloned();
        if old
            .as_ref()
            .and_then(|e| e.value().to_str().ok())
            .as_deref()
            .map(|s| s.trim_end_matches(['\0', ' ']))
            == Some(value.as_str())
        {
            continue;
        }
        changed = true;
        // PS3.3 C.12.1.1.9.2: the attributes as they were, empty when they were absent.
        modified.put(old.unwrap_or_else(|| DataElement::empty(*tag, *vr)));
        ds.put(DataElement::new(
            *tag,
            *vr,
            PrimitiveValue::from(value.as_str()),
        ));
    }
    if !changed {
        return false;
    }
    let old_id = modified
        .get(tags::PATIENT_ID)
        .and_then(|e| e.value().to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .filter(|s| !s.is_empty());
    let old_issuer = modified
        .get(tags::ISSUER_OF_PATIENT_ID)
        .and_then(|e| e.value().to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default();
    let item = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::MODIFIED_ATTRIBUTES_SEQUENCE,
            VR::SQ,
            DataSetSequence::new(vec![modified], Length::UNDEFINED),
        ),
        DataElement::new(
            tags::ATTRIBUTE_MODIFICATION_DATE_TIME,
            VR::DT,
            PrimitiveValue::from(now),
        ),
        DataElement::new(tags::MODIFYING_SYSTEM, VR::LO, PrimitiveValue::from(system)),
        DataElement::new(
            tags::SOURCE_OF_PREVIOUS_VALUES,
            VR::LO,
            PrimitiveValue::from(""),
        ),
        // PS3.3 C.12.1.1.9.2, Reason for the Attribute Modification: COERCE.
        DataElement::new(
            tags::REASON_FOR_THE_ATTRIBUTE_MODIFICATION,
            VR::CS,
            PrimitiveValue::from("COERCE"),
        ),
    ]);
    append_item(ds, tags::ORIGINAL_ATTRIBUTES_SEQUENCE, item);
    if let Some(id) = old_id {
        let other = InMemDicomObject::from_element_iter([
            DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(id)),
            DataElement::new(
                tags::ISSUER_OF_PATIENT_ID,
                VR::LO,
                PrimitiveValue::from(old_issuer),
            ),
            // PS3.3 C.7.1.1: Type of Patient ID (0010,0022), TEXT for a plain identifier.
            DataElement::new(
                tags::TYPE_OF_PATIENT_ID,
                VR::CS,
                PrimitiveValue::from("TEXT"),
            ),
        ]);
        append_item(ds, tags::OTHER_PATIENT_I_DS_SEQUENCE, other);
    }
    true
}

/// Appends `item` to sequence `tag`, creating it.
fn append_item(ds: &mut InMemDicomObject, tag: Tag, item: InMemDicomObject) {
    let mut items: Vec<InMemDicomObject> = ds
        .get(tag)
        .and_then(|e| e.value().items().map(|i| i.to_vec()))
        .unwrap_or_default();
    items.push(item);
    ds.put(DataElement::new(
        tag,
        VR::SQ,
        DataSetSequence::new(items, Length::UNDEFINED),
    ));
}

/// [`coerce_patient`] on a Part 10 object in memory; the bytes back unchanged when nothing
/// differs.
pub fn coerce_patient_bytes(
    bytes: &[u8],
    who: &PatientIdentity,
    system: &str,
    now: &str,
) -> Result<Vec<u8>, Error> {
    let mut obj = read_object(bytes)?;
    if !coerce_patient(&mut obj, who, system, now) {
        return Ok(bytes.to_vec());
    }
    write_object(&obj)
}

/// The received Patient ID of a data set, for display.
pub fn patient_id(ds: &InMemDicomObject) -> Option<String> {
    text(ds, tags::PATIENT_ID)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds() -> InMemDicomObject {
        InMemDicomObject::from_element_iter([
            DataElement::new(
                tags::PATIENT_NAME,
                VR::PN,
                PrimitiveValue::from("Guest^Ann"),
            ),
            DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from("EXT-77")),
        ])
    }

    #[test]
    fn coercion_keeps_the_originals() {
        let mut d = ds();
        let who = PatientIdentity {
            patient_id: "MRN123".into(),
            issuer: "NORTH".into(),
            name: None,
        };
        assert!(coerce_patient(&mut d, &who, "VESALIUS", "20261123101500"));
        assert_eq!(text(&d, tags::PATIENT_ID).as_deref(), Some("MRN123"));
        assert_eq!(
            text(&d, tags::ISSUER_OF_PATIENT_ID).as_deref(),
            Some("NORTH")
        );
        assert_eq!(text(&d, tags::PATIENT_NAME).as_deref(), Some("Guest^Ann"));
        let orig = d.get(tags::ORIGINAL_ATTRIBUTES_SEQUENCE).unwrap();
        let item = &orig.value().items().unwrap()[0];
        let m = &item
            .get(tags::MODIFIED_ATTRIBUTES_SEQUENCE)
            .unwrap()
            .value()
            .items()
            .unwrap()[0];
        assert_eq!(text(m, tags::PATIENT_ID).as_deref(), Some("EXT-77"));
        assert_eq!(text(m, tags::ISSUER_OF_PATIENT_ID).as_deref(), Some(""));
        assert_eq!(
            text(item, tags::REASON_FOR_THE_ATTRIBUTE_MODIFICATION).as_deref(),
            Some("COERCE")
        );
        let other = d.get(tags::OTHER_PATIENT_I_DS_SEQUENCE).unwrap();
        assert_eq!(
            text(&other.value().items().unwrap()[0], tags::PATIENT_ID).as_deref(),
            Some("EXT-77")
        );
        // Applying the same identity again changes nothing.
        assert!(!coerce_patient(&mut d, &who, "VESALIUS", "20261123101600"));
    }
}
