//! Attribute tags the archive reads, as `u32` values `0xGGGGEEEE` named after PS3.6 keywords.

#![allow(missing_docs)] // each constant is named after its PS3.6 keyword

/// A tag as `0xGGGGEEEE`.
pub type Tag = u32;

/// Builds a tag from its group and element.
pub const fn tag(group: u16, element: u16) -> Tag {
    ((group as u32) << 16) | element as u32
}

/// The group of a tag.
pub const fn group(t: Tag) -> u16 {
    (t >> 16) as u16
}

/// Formats a tag as `(GGGG,EEEE)`.
pub fn display(t: Tag) -> String {
    format!("({:04X},{:04X})", t >> 16, t & 0xFFFF)
}

pub const FILE_META_INFORMATION_GROUP_LENGTH: Tag = 0x0002_0000;
pub const FILE_META_INFORMATION_VERSION: Tag = 0x0002_0001;
pub const MEDIA_STORAGE_SOP_CLASS_UID: Tag = 0x0002_0002;
pub const MEDIA_STORAGE_SOP_INSTANCE_UID: Tag = 0x0002_0003;
pub const TRANSFER_SYNTAX_UID: Tag = 0x0002_0010;
pub const IMPLEMENTATION_CLASS_UID: Tag = 0x0002_0012;
pub const IMPLEMENTATION_VERSION_NAME: Tag = 0x0002_0013;
pub const SOURCE_APPLICATION_ENTITY_TITLE: Tag = 0x0002_0016;

pub const SPECIFIC_CHARACTER_SET: Tag = 0x0008_0005;
pub const IMAGE_TYPE: Tag = 0x0008_0008;
pub const SOP_CLASS_UID: Tag = 0x0008_0016;
pub const SOP_INSTANCE_UID: Tag = 0x0008_0018;
pub const STUDY_DATE: Tag = 0x0008_0020;
pub const SERIES_DATE: Tag = 0x0008_0021;
pub const CONTENT_DATE: Tag = 0x0008_0023;
pub const STUDY_TIME: Tag = 0x0008_0030;
pub const SERIES_TIME: Tag = 0x0008_0031;
pub const CONTENT_TIME: Tag = 0x0008_0033;
pub const ACCESSION_NUMBER: Tag = 0x0008_0050;
pub const QUERY_RETRIEVE_LEVEL: Tag = 0x0008_0052;
pub const RETRIEVE_AE_TITLE: Tag = 0x0008_0054;
pub const INSTANCE_AVAILABILITY: Tag = 0x0008_0056;
pub const FAILED_SOP_INSTANCE_UID_LIST: Tag = 0x0008_0058;
pub const MODALITY: Tag = 0x0008_0060;
pub const MODALITIES_IN_STUDY: Tag = 0x0008_0061;
pub const SOP_CLASSES_IN_STUDY: Tag = 0x0008_0062;
pub const MANUFACTURER: Tag = 0x0008_0070;
pub const INSTITUTION_NAME: Tag = 0x0008_0080;
pub const REFERRING_PHYSICIAN_NAME: Tag = 0x0008_0090;
pub const TIMEZONE_OFFSET_FROM_UTC: Tag = 0x0008_0201;
pub const RETRIEVE_URL: Tag = 0x0008_1190;
pub const STUDY_DESCRIPTION: Tag = 0x0008_1030;
pub const SERIES_DESCRIPTION: Tag = 0x0008_103E;
pub const FAILED_SOP_SEQUENCE: Tag = 0x0008_1198;
pub const REFERENCED_SOP_SEQUENCE: Tag = 0x0008_1199;
pub const WARNING_REASON: Tag = 0x0008_1196;
pub const FAILURE_REASON: Tag = 0x0008_1197;
pub const REFERENCED_SERIES_SEQUENCE: Tag = 0x0008_1115;
pub const REFERENCED_SOP_CLASS_UID: Tag = 0x0008_1150;
pub const REFERENCED_SOP_INSTANCE_UID: Tag = 0x0008_1155;
pub const CODE_VALUE: Tag = 0x0008_0100;
pub const CODING_SCHEME_DESIGNATOR: Tag = 0x0008_0102;
pub const CODE_MEANING: Tag = 0x0008_0104;
pub const LONG_CODE_VALUE: Tag = 0x0008_0119;
pub const ANATOMIC_REGION_SEQUENCE: Tag = 0x0008_2218;
pub const ANATOMIC_REGION_MODIFIER_SEQUENCE: Tag = 0x0008_2220;
pub const PROCEDURE_CODE_SEQUENCE: Tag = 0x0008_1032;
pub const REQUESTED_PROCEDURE_CODE_SEQUENCE: Tag = 0x0032_1064;
pub const REQUEST_ATTRIBUTES_SEQUENCE: Tag = 0x0040_0275;
pub const LATERALITY: Tag = 0x0020_0060;
pub const IMAGE_LATERALITY: Tag = 0x0020_0062;
pub const FRAME_ANATOMY_SEQUENCE: Tag = 0x0020_9071;
pub const FRAME_LATERALITY: Tag = 0x0020_9072;
pub const SHARED_FUNCTIONAL_GROUPS_SEQUENCE: Tag = 0x5200_9229;
pub const PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE: Tag = 0x5200_9230;

pub const PATIENT_NAME: Tag = 0x0010_0010;
pub const PATIENT_ID: Tag = 0x0010_0020;
pub const ISSUER_OF_PATIENT_ID: Tag = 0x0010_0021;
pub const PATIENT_BIRTH_DATE: Tag = 0x0010_0030;
pub const PATIENT_SEX: Tag = 0x0010_0040;
pub const OTHER_PATIENT_IDS: Tag = 0x0010_1000;
pub const NUMBER_OF_PATIENT_RELATED_STUDIES: Tag = 0x0020_1200;
pub const NUMBER_OF_PATIENT_RELATED_SERIES: Tag = 0x0020_1202;
pub const NUMBER_OF_PATIENT_RELATED_INSTANCES: Tag = 0x0020_1204;

pub const BODY_PART_EXAMINED: Tag = 0x0018_0015;
pub const STUDY_INSTANCE_UID: Tag = 0x0020_000D;
pub const SERIES_INSTANCE_UID: Tag = 0x0020_000E;
pub const STUDY_ID: Tag = 0x0020_0010;
pub const SERIES_NUMBER: Tag = 0x0020_0011;
pub const INSTANCE_NUMBER: Tag = 0x0020_0013;
pub const NUMBER_OF_STUDY_RELATED_SERIES: Tag = 0x0020_1206;
pub const NUMBER_OF_STUDY_RELATED_INSTANCES: Tag = 0x0020_1208;
pub const NUMBER_OF_SERIES_RELATED_INSTANCES: Tag = 0x0020_1209;

pub const SAMPLES_PER_PIXEL: Tag = 0x0028_0002;
pub const PHOTOMETRIC_INTERPRETATION: Tag = 0x0028_0004;
pub const PLANAR_CONFIGURATION: Tag = 0x0028_0006;
pub const NUMBER_OF_FRAMES: Tag = 0x0028_0008;
pub const ROWS: Tag = 0x0028_0010;
pub const COLUMNS: Tag = 0x0028_0011;
pub const BITS_ALLOCATED: Tag = 0x0028_0100;
pub const BITS_STORED: Tag = 0x0028_0101;
pub const PIXEL_REPRESENTATION: Tag = 0x0028_0103;
pub const WINDOW_CENTER: Tag = 0x0028_1050;
pub const WINDOW_WIDTH: Tag = 0x0028_1051;
pub const RESCALE_INTERCEPT: Tag = 0x0028_1052;
pub const RESCALE_SLOPE: Tag = 0x0028_1053;

pub const CONTENT_SEQUENCE: Tag = 0x0040_A730;
pub const CONCEPT_NAME_CODE_SEQUENCE: Tag = 0x0040_A043;
pub const CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE: Tag = 0x0040_A375;
pub const TRANSACTION_UID: Tag = 0x0008_1195;
pub const REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE: Tag = 0x0008_1111;

pub const FLOAT_PIXEL_DATA: Tag = 0x7FE0_0008;
pub const DOUBLE_FLOAT_PIXEL_DATA: Tag = 0x7FE0_0009;
pub const PIXEL_DATA: Tag = 0x7FE0_0010;

pub const ITEM: Tag = 0xFFFE_E000;
pub const ITEM_DELIMITATION: Tag = 0xFFFE_E00D;
pub const SEQUENCE_DELIMITATION: Tag = 0xFFFE_E0DD;

/// Group length tags `(gggg,0000)`, retired outside group 0002 but still sent.
pub const fn is_group_length(t: Tag) -> bool {
    t & 0xFFFF == 0
}
