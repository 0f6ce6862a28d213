//! Files on disk: meta follows the new SOP Instance UID, pixel data is untouched, the output
//! is named by the new UIDs.

use dicom_core::VR;
use dicom_core::value::PrimitiveValue;
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, open_file};
use vesalius_deid::{DeidOptions, IMPLEMENTATION_CLASS_UID, deidentify_file};

use crate::common::{el, expected_uid, instance, str1};

#[test]
fn a_file_is_written_under_its_new_uids_with_matching_meta() {
    let dir = tempfile::tempdir().unwrap();
    let sop = "1.2.826.0.1.3680043.9.7431.5.5.5";
    let mut ds = instance(
        "1.2.826.0.1.3680043.9.7431.5",
        "1.2.826.0.1.3680043.9.7431.5.5",
        sop,
    );
    let pixels: Vec<u16> = (0..64u16).collect();
    ds.put(el(tags::ROWS, VR::US, PrimitiveValue::from(8u16)));
    ds.put(el(tags::COLUMNS, VR::US, PrimitiveValue::from(8u16)));
    ds.put(el(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(pixels.iter().copied().collect()),
    ));
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
        .media_storage_sop_instance_uid(sop)
        .transfer_syntax("1.2.840.10008.1.2.1")
        .source_application_entity_title("HOSPITAL_PACS")
        .build()
        .unwrap();
    let input = dir.path().join("in.dcm");
    ds.with_exact_meta(meta).write_to_file(&input).unwrap();

    let out = dir.path().join("out");
    let opts = DeidOptions::new("file key");
    let outcome = deidentify_file(&input, &out, &opts).unwrap();
    let new_sop = expected_uid("file key", sop);
    assert_eq!(
        outcome.report.sop_instance_uid.as_deref(),
        Some(new_sop.as_str())
    );
    assert_eq!(
        outcome.output,
        out.join(expected_uid("file key", "1.2.826.0.1.3680043.9.7431.5"))
            .join(expected_uid("file key", "1.2.826.0.1.3680043.9.7431.5.5"))
            .join(format!("{new_sop}.dcm"))
    );

    let back = open_file(&outcome.output).unwrap();
    assert_eq!(back.meta().media_storage_sop_instance_uid(), new_sop);
    assert_eq!(back.meta().source_application_entity_title(), None);
    assert_eq!(
        back.meta().implementation_class_uid(),
        IMPLEMENTATION_CLASS_UID
    );
    assert_eq!(str1(&back, tags::SOP_INSTANCE_UID).unwrap(), new_sop);
    assert_eq!(
        str1(&back, tags::PATIENT_IDENTITY_REMOVED).as_deref(),
        Some("YES")
    );
    let px = back
        .get(tags::PIXEL_DATA)
        .unwrap()
        .value()
        .to_bytes()
        .unwrap()
        .to_vec();
    let want: Vec<u8> = pixels.iter().flat_map(|p| p.to_le_bytes()).collect();
    assert_eq!(px, want, "pixel data unchanged");
    // The input is left alone.
    let original = open_file(&input).unwrap();
    assert_eq!(str1(&original, tags::SOP_INSTANCE_UID).unwrap(), sop);
}

#[test]
fn a_non_dicom_file_is_an_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("notes.txt");
    std::fs::write(&input, "not dicom").unwrap();
    let err = deidentify_file(&input, dir.path(), &DeidOptions::new("k")).unwrap_err();
    assert_eq!(err.kind(), vesalius_core::ErrorKind::InvalidDicom);
    assert!(err.to_string().contains("notes.txt"));
}
