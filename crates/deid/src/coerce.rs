//! Reconciliation of a received object's patient identity with the local record, keeping the
//! original values: the guest upload inbox (issue 4) and patient link, merge and split
//! (issue 5, IHE Import Reconciliation Workflow, RAD TF-2 RAD-66 style coercion).
//!
//! An object from outside carries the sender's Patient ID; a user sets the local Patient ID
//! and Issuer of Patient ID (and, optionally, name, birth date and sex). The values replaced
//! are kept in the object, as PS3.3 C.12.1.1.9 prescribes for coerced attributes: one item of
//! Original Attributes Sequence (0400,0561) per change, with the old values in Modified
//! Attributes Sequence (0400,0550), the time, the modifying system and the reason `COERCE`
//! (PS3.3 C.12.1.1.9.2). The replaced Patient ID (with its issuer) also goes to Other Patient
//! IDs Sequence (0010,1002), once, so that it remains searchable as a patient identifier.
//!
//! Text is kept decoded in memory; when a new value is not plain ASCII and the object's
//! Specific Character Set (0008,0005) is not already UTF-8, the object is re-encoded as
//! `ISO_IR 192` (every other text value is re-encoded losslessly) and the old character set
//! is kept in the same Original Attributes Sequence item.

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
    /// Patient's Birth Date (0010,0030), `YYYYMMDD` or empty; `None` keeps the received one.
    pub birth_date: Option<String>,
    /// Patient's Sex (0010,0040), `M`, `F`, `O` or empty; `None` keeps the received one.
    pub sex: Option<String>,
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
    coerce(ds, who, system, now, false)
}

/// [`coerce_patient`] that changes the object even when it already carries `who`'s values: the
/// archive indexed it under another identity (a peer's unqualified Patient ID is indexed with
/// the issuer `peer:NAME`, docs/patients.md), and only a new version of the object re-indexes
/// it. The Original Attributes Sequence item then records Patient ID and Issuer of Patient ID
/// as they were (the same values), and an absent Issuer of Patient ID is written, empty.
pub fn coerce_patient_forced(
    ds: &mut InMemDicomObject,
    who: &PatientIdentity,
    system: &str,
    now: &str,
) -> bool {
    coerce(ds, who, system, now, true)
}

fn coerce(
    ds: &mut InMemDicomObject,
    who: &PatientIdentity,
    system: &str,
    now: &str,
    force: bool,
) -> bool {
    // The identity being replaced: `(issuer, id)` as the object carried it.
    let old_id = text(ds, tags::PATIENT_ID).filter(|s| !s.is_empty());
    let old_issuer = text(ds, tags::ISSUER_OF_PATIENT_ID).unwrap_or_default();
    let mut wanted = vec![
        (tags::PATIENT_ID, VR::LO, who.patient_id.clone()),
        (tags::ISSUER_OF_PATIENT_ID, VR::LO, who.issuer.clone()),
    ];
    for (tag, vr, value) in [
        (tags::PATIENT_NAME, VR::PN, &who.name),
        (tags::PATIENT_BIRTH_DATE, VR::DA, &who.birth_date),
        (tags::PATIENT_SEX, VR::CS, &who.sex),
    ] {
        if let Some(v) = value {
            wanted.push((tag, vr, v.clone()));
        }
    }
    let mut modified = InMemDicomObject::new_empty();
    let mut changed = false;
    let mut needs_utf8 = false;
    for (tag, vr, value) in &wanted {
        let old = ds.get(*tag).cloned();
        let old_text = text(ds, *tag);
        // An absent attribute and an empty one are the same value (PS3.5 7.4.3, type 2).
        if old_text.as_deref().unwrap_or("") == value.as_str() {
            continue;
        }
        changed = true;
        needs_utf8 |= !value.is_ascii();
        // PS3.3 C.12.1.1.9.2: the attributes as they were, empty when they were absent.
        modified.put(old.unwrap_or_else(|| DataElement::empty(*tag, *vr)));
        ds.put(DataElement::new(
            *tag,
            *vr,
            PrimitiveValue::from(value.as_str()),
        ));
    }
    if !changed && !force {
        return false;
    }
    if !changed {
        for (tag, vr) in [
            (tags::PATIENT_ID, VR::LO),
            (tags::ISSUER_OF_PATIENT_ID, VR::LO),
        ] {
            let old = ds
                .get(tag)
                .cloned()
                .unwrap_or_else(|| DataElement::empty(tag, vr));
            modified.put(old.clone());
            ds.put(old);
        }
    }
    // PS3.5 6.1.2.3: ISO_IR 192 (UTF-8) can hold any new value; the old character set is an
    // attribute modified like the others.
    let charset = text(ds, tags::SPECIFIC_CHARACTER_SET).unwrap_or_default();
    if needs_utf8 && charset != "ISO_IR 192" {
        modified.put(
            ds.get(tags::SPECIFIC_CHARACTER_SET)
                .cloned()
                .unwrap_or_else(|| DataElement::empty(tags::SPECIFIC_CHARACTER_SET, VR::CS)),
        );
        ds.put(DataElement::new(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from("ISO_IR 192"),
        ));
    }
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
    let listed = |ds: &InMemDicomObject, id: &str, issuer: &str| {
        ds.get(tags::OTHER_PATIENT_I_DS_SEQUENCE)
            .and_then(|e| e.value().items())
            .is_some_and(|items| {
                items.iter().any(|i| {
                    text(i, tags::PATIENT_ID).as_deref() == Some(id)
                        && text(i, tags::ISSUER_OF_PATIENT_ID).unwrap_or_default() == issuer
                })
            })
    };
    // Only an identifier the object no longer carries, and only once (a split back to it
    // leaves it listed: it was this patient's identifier at some point).
    let old_id = old_id.filter(|id| {
        let current = *id == who.patient_id && old_issuer == who.issuer;
        !current && !listed(ds, id, &old_issuer)
    });
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
            ..Default::default()
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

    #[test]
    fn demographics_issuer_only_changes_and_repeated_links() {
        let mut d = ds();
        let first = PatientIdentity {
            patient_id: "EXT-77".into(),
            issuer: "NORTH".into(),
            birth_date: Some("19800102".into()),
            sex: Some("F".into()),
            ..Default::default()
        };
        // Only the issuer and demographics change: the old identity (no issuer) is listed.
        assert!(coerce_patient(&mut d, &first, "VESALIUS", "20261123101500"));
        assert_eq!(
            text(&d, tags::PATIENT_BIRTH_DATE).as_deref(),
            Some("19800102")
        );
        assert_eq!(text(&d, tags::PATIENT_SEX).as_deref(), Some("F"));
        let orig = d.get(tags::ORIGINAL_ATTRIBUTES_SEQUENCE).unwrap();
        let m = &orig.value().items().unwrap()[0]
            .get(tags::MODIFIED_ATTRIBUTES_SEQUENCE)
            .unwrap()
            .value()
            .items()
            .unwrap()[0];
        // The absent birth date and sex are kept as empty attributes; the unchanged ID is not.
        assert_eq!(text(m, tags::PATIENT_BIRTH_DATE).as_deref(), Some(""));
        assert!(m.get(tags::PATIENT_ID).is_none());
        let others = |d: &InMemDicomObject| {
            d.get(tags::OTHER_PATIENT_I_DS_SEQUENCE)
                .map(|e| e.value().items().unwrap().len())
                .unwrap_or(0)
        };
        assert_eq!(others(&d), 1);
        // To another patient and back: two more items of Original Attributes Sequence; each
        // former identifier is listed once.
        let second = PatientIdentity {
            patient_id: "MRN9".into(),
            issuer: "NORTH".into(),
            ..Default::default()
        };
        assert!(coerce_patient(
            &mut d,
            &second,
            "VESALIUS",
            "20261123101600"
        ));
        assert!(coerce_patient(&mut d, &first, "VESALIUS", "20261123101700"));
        assert_eq!(
            d.get(tags::ORIGINAL_ATTRIBUTES_SEQUENCE)
                .unwrap()
                .value()
                .items()
                .unwrap()
                .len(),
            3
        );
        assert_eq!(others(&d), 3);
        assert!(coerce_patient(
            &mut d,
            &second,
            "VESALIUS",
            "20261123101800"
        ));
        assert_eq!(others(&d), 3);
    }

    #[test]
    fn non_ascii_names_switch_the_object_to_utf8_and_survive_a_round_trip() {
        let mut obj = FileDicomObject::new_empty_with_meta(
            dicom_object::meta::FileMetaTableBuilder::new()
                .transfer_syntax("1.2.840.10008.1.2.1")
                .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
                .media_storage_sop_instance_uid("2.25.1")
                .build()
                .unwrap(),
        );
        for e in ds() {
            obj.put(e);
        }
        obj.put(DataElement::new(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from("ISO_IR 100"),
        ));
        let bytes = write_object(&obj).unwrap();
        let who = PatientIdentity {
            patient_id: "MRN1".into(),
            name: Some("Müller^Zoë=王^小明".into()),
            ..Default::default()
        };
        let out = coerce_patient_bytes(&bytes, &who, "VESALIUS", "20261123101500").unwrap();
        let back = read_object(&out).unwrap();
        assert_eq!(
            text(&back, tags::PATIENT_NAME).as_deref(),
            Some("Müller^Zoë=王^小明")
        );
        assert_eq!(
            text(&back, tags::SPECIFIC_CHARACTER_SET).as_deref(),
            Some("ISO_IR 192")
        );
        let orig = back.get(tags::ORIGINAL_ATTRIBUTES_SEQUENCE).unwrap();
        let m = &orig.value().items().unwrap()[0]
            .get(tags::MODIFIED_ATTRIBUTES_SEQUENCE)
            .unwrap()
            .value()
            .items()
            .unwrap()[0];
        assert_eq!(
            text(m, tags::SPECIFIC_CHARACTER_SET).as_deref(),
            Some("ISO_IR 100")
        );
        // Unchanged bytes when nothing differs.
        assert_eq!(
            coerce_patient_bytes(&out, &who, "VESALIUS", "20261123101600").unwrap(),
            out
        );
    }

    #[test]
    fn a_forced_coercion_records_the_unchanged_identity() {
        let mut d = ds();
        let same = PatientIdentity {
            patient_id: "EXT-77".into(),
            ..Default::default()
        };
        assert!(!coerce_patient(&mut d, &same, "VESALIUS", "20261123101500"));
        assert!(coerce_patient_forced(
            &mut d,
            &same,
            "VESALIUS",
            "20261123101500"
        ));
        assert_eq!(text(&d, tags::ISSUER_OF_PATIENT_ID).as_deref(), Some(""));
        let item = &d
            .get(tags::ORIGINAL_ATTRIBUTES_SEQUENCE)
            .unwrap()
            .value()
            .items()
            .unwrap()[0];
        let m = &item
            .get(tags::MODIFIED_ATTRIBUTES_SEQUENCE)
            .unwrap()
            .value()
            .items()
            .unwrap()[0];
        assert_eq!(text(m, tags::PATIENT_ID).as_deref(), Some("EXT-77"));
        assert_eq!(text(m, tags::ISSUER_OF_PATIENT_ID).as_deref(), Some(""));
        // Nothing to list: the identifier is still the object's.
        assert!(d.get(tags::OTHER_PATIENT_I_DS_SEQUENCE).is_none());
    }
}
