//! Private attributes (odd groups) and the safe list of the Retain Safe Private Option.
//!
//! Without the option every private attribute is removed (Table E.1-1, row "Private
//! Attributes", X). With it, the attributes listed in [`SAFE_PRIVATE`] are kept together with
//! the Private Creator elements that reserve their blocks (PS3.15 E.3.10); all others are
//! removed. A private attribute is identified by its group, its Private Creator string and the
//! low byte of its element number (PS3.5 7.8.1), never by its tag alone, since the block a
//! creator reserves differs from file to file.

use std::collections::HashSet;

use dicom_core::Tag;
use dicom_object::InMemDicomObject;

/// One private attribute known to be safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SafePrivate {
    /// The group (odd).
    pub group: u16,
    /// The Private Creator string that reserves the block.
    pub creator: &'static str,
    /// The element number within the block (the `xx` of `(gggg,xxee)` is the block, this is `ee`).
    pub element: u8,
    /// What it holds.
    pub name: &'static str,
}

const fn safe(group: u16, creator: &'static str, element: u8, name: &'static str) -> SafePrivate {
    SafePrivate {
        group,
        creator,
        element,
        name,
    }
}

/// The safe private attributes kept by the Retain Safe Private Option: a small subset of the
/// examples of PS3.15 Table E.3.10-1 "Safe Private Attributes" (technique and pixel-value
/// scaling factors of CT, MR diffusion and PET, no free text). Vendors do not guarantee them
/// to be safe; extend the list only with attributes documented by the vendor.
pub static SAFE_PRIVATE: &[SafePrivate] = &[
    safe(0x0019, "GEMS_ACQU_01", 0x23, "Table Speed [mm/rotation]"),
    safe(0x0019, "GEMS_ACQU_01", 0x24, "Mid Scan Time [sec]"),
    safe(
        0x0019,
        "GEMS_ACQU_01",
        0x27,
        "Rotation Speed (Gantry Period)",
    ),
    safe(0x0043, "GEMS_PARM_01", 0x27, "Scan Pitch Ratio"),
    safe(
        0x0043,
        "GEMS_PARM_01",
        0x39,
        "Slop_int_6..9 (first value is the b value)",
    ),
    safe(
        0x0045,
        "GEMS_HELIOS_01",
        0x01,
        "Number of Macro Rows in Detector",
    ),
    safe(0x0045, "GEMS_HELIOS_01", 0x02, "Macro width at ISO Center"),
    safe(0x0019, "SIEMENS MR HEADER", 0x0C, "B Value"),
    safe(
        0x0019,
        "SIEMENS MR HEADER",
        0x0D,
        "Diffusion Directionality",
    ),
    safe(
        0x0019,
        "SIEMENS MR HEADER",
        0x0E,
        "Diffusion Gradient Direction",
    ),
    safe(0x0019, "SIEMENS MR HEADER", 0x27, "B Matrix"),
    safe(0x2001, "Philips Imaging DD 001", 0x03, "Diffusion B-Factor"),
    safe(
        0x2001,
        "Philips Imaging DD 001",
        0x04,
        "Diffusion Direction",
    ),
    safe(0x7053, "Philips PET Private Group", 0x00, "SUV Factor"),
    safe(
        0x7053,
        "Philips PET Private Group",
        0x09,
        "Activity Concentration Factor",
    ),
    safe(0x01F1, "ELSCINT1", 0x26, "Pitch"),
    safe(0x01F1, "ELSCINT1", 0x27, "Rotation Time"),
];

/// Whether `tag` is a Private Creator element, `(gggg,0010)`–`(gggg,00FF)` of an odd group.
pub(crate) fn is_creator(tag: Tag) -> bool {
    tag.group() & 1 == 1 && (0x0010..=0x00FF).contains(&tag.element())
}

/// The Private Creator string that reserves the block of the private data element `tag`.
pub(crate) fn creator_of(ds: &InMemDicomObject, tag: Tag) -> Option<String> {
    let block = tag.element() >> 8;
    if tag.group() & 1 == 0 || block < 0x10 {
        return None;
    }
    let e = ds.get(Tag(tag.group(), block))?;
    let s = e.value().to_str().ok()?;
    Some(s.trim_end_matches(['\0', ' ']).trim_start().to_string())
}

/// The private tags of `ds` to keep: the safe data elements and the creators of their blocks.
pub(crate) fn safe_tags(ds: &InMemDicomObject, list: &[SafePrivate]) -> HashSet<Tag> {
    let mut keep = HashSet::new();
    for tag in ds.tags() {
        if tag.group() & 1 == 0 || tag.element() < 0x1000 {
            continue;
        }
        let Some(creator) = creator_of(ds, tag) else {
            continue;
        };
        let low = (tag.element() & 0xFF) as u8;
        if list
            .iter()
            .any(|s| s.group == tag.group() && s.element == low && s.creator == creator)
        {
            keep.insert(tag);
            keep.insert(Tag(tag.group(), tag.element() >> 8));
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use dicom_core::{DataElement, VR};

    use super::*;

    #[test]
    fn keeps_safe_elements_by_creator_not_by_tag() {
        let ds = InMemDicomObject::from_element_iter([
            DataElement::new(Tag(0x0019, 0x0010), VR::LO, "SIEMENS MR HEADER "),
            DataElement::new(Tag(0x0019, 0x0011), VR::LO, "SOMEONE ELSE"),
            DataElement::new(Tag(0x0019, 0x100C), VR::IS, "1000"),
            DataElement::new(Tag(0x0019, 0x1008), VR::CS, "IMAGE NUM 4"),
            DataElement::new(Tag(0x0019, 0x110C), VR::LO, "Dr Who"),
        ]);
        let keep = safe_tags(&ds, SAFE_PRIVATE);
        let mut keep: Vec<_> = keep.into_iter().collect();
        keep.sort();
        assert_eq!(keep, vec![Tag(0x0019, 0x0010), Tag(0x0019, 0x100C)]);
        assert!(is_creator(Tag(0x0019, 0x0011)));
        assert!(!is_creator(Tag(0x0019, 0x1011)));
    }
}
