//! PS3.15 Table E.1-1 "Application Level Confidentiality Profile Attributes" encoded as data.
//!
//! Each [`Row`] names the attributes it covers ([`TagPattern`]), the action of the Basic
//! Profile ([`Code`]) and, per option, the action that replaces it when the option is used
//! ([`OptionCodes`]). The rows themselves live in `rows.rs`, one attribute per line, with
//! their provenance. [`lookup`] finds the row of a tag; [`Row::code`] resolves the code for a
//! set of options (PS3.15 E.3: "A requirement for an Option, when implemented, overrides any
//! requirement for the underlying Profile").

mod rows;

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use dicom_core::{Tag, VR};
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

use crate::options::ProfileOption;

pub use rows::ROWS;

/// An action code of PS3.15 Table E.1-1 (the list above the table in E.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// Replace with a non-zero length value that may be a dummy value, consistent with the VR.
    D,
    /// Replace with a zero-length value, or a non-zero length dummy value consistent with the VR.
    Z,
    /// Remove.
    X,
    /// Keep (unchanged for non-sequence attributes, cleaned for sequences).
    K,
    /// Clean: replace with values of similar meaning known not to identify.
    C,
    /// Replace with a non-zero length UID that is internally consistent within a set of instances.
    U,
    /// Z unless D is required to maintain IOD conformance (Type 2 versus Type 1).
    ZD,
    /// X unless Z is required to maintain IOD conformance (Type 3 versus Type 2).
    XZ,
    /// X unless D is required to maintain IOD conformance (Type 3 versus Type 1).
    XD,
    /// X unless Z or D is required to maintain IOD conformance (Type 3, 2, 1).
    XZD,
    /// X unless Z or replacement of the contained instance UIDs (U) is required (sequences).
    XZUStar,
}

impl Code {
    /// The code as printed in the standard (`"X/Z/U*"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::D => "D",
            Code::Z => "Z",
            Code::X => "X",
            Code::K => "K",
            Code::C => "C",
            Code::U => "U",
            Code::ZD => "Z/D",
            Code::XZ => "X/Z",
            Code::XD => "X/D",
            Code::XZD => "X/Z/D",
            Code::XZUStar => "X/Z/U*",
        }
    }

    /// Parses a code as printed in the standard.
    pub fn parse(s: &str) -> Option<Code> {
        ALL_CODES.iter().copied().find(|c| c.as_str() == s)
    }
}

/// Every code, in declaration order.
pub const ALL_CODES: [Code; 11] = [
    Code::D,
    Code::Z,
    Code::X,
    Code::K,
    Code::C,
    Code::U,
    Code::ZD,
    Code::XZ,
    Code::XD,
    Code::XZD,
    Code::XZUStar,
];

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The attributes a row covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagPattern {
    /// One attribute.
    Exact(Tag),
    /// A repeating group (PS3.5 7.6): the tags `t` with `t & mask == value` in the even groups
    /// `xx00`–`xx1E` of the group range, e.g. Overlay Data (60xx,3000).
    Mask {
        /// The fixed bits.
        value: u32,
        /// Which bits are fixed.
        mask: u32,
    },
    /// Every private attribute (odd group), "(gggg,eeee) where gggg is odd".
    Private,
}

impl TagPattern {
    /// Whether `tag` is covered.
    pub fn matches(&self, tag: Tag) -> bool {
        match *self {
            TagPattern::Exact(t) => t == tag,
            TagPattern::Mask { value, mask } => {
                let group_low = tag.group() & 0x00FF;
                tag_u32(tag) & mask == value && group_low & 1 == 0 && group_low <= 0x1E
            }
            TagPattern::Private => tag.group() & 1 == 1,
        }
    }
}

impl fmt::Display for TagPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TagPattern::Exact(t) => write!(f, "({:04X},{:04X})", t.group(), t.element()),
            TagPattern::Mask { value, mask } => {
                let hex = format!("{value:08X}");
                let masked: String = hex
                    .chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if (mask >> (28 - 4 * i)) & 0xF == 0 {
                            'x'
                        } else {
                            c
                        }
                    })
                    .collect();
                write!(f, "({},{})", &masked[..4], &masked[4..])
            }
            TagPattern::Private => f.write_str("(gggg,eeee) where gggg is odd"),
        }
    }
}

fn tag_u32(t: Tag) -> u32 {
    (u32::from(t.group()) << 16) | u32::from(t.element())
}

/// The option columns of a row: the code an option puts in place of the Basic Profile's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OptionCodes([Option<Code>; ProfileOption::ALL.len()]);

/// A row without option entries (the starting point of the builders in `rows.rs`).
pub(crate) const O: OptionCodes = OptionCodes([None; ProfileOption::ALL.len()]);

impl OptionCodes {
    /// The code in the column of `option`, if the table has one.
    pub fn get(&self, option: ProfileOption) -> Option<Code> {
        self.0[option as usize]
    }

    /// The columns with an entry.
    pub fn iter(&self) -> impl Iterator<Item = (ProfileOption, Code)> + '_ {
        ProfileOption::ALL
            .iter()
            .filter_map(|&o| self.get(o).map(|c| (o, c)))
    }

    const fn with(mut self, option: ProfileOption, code: Code) -> Self {
        self.0[option as usize] = Some(code);
        self
    }

    pub(crate) const fn safe_private(self, c: Code) -> Self {
        self.with(ProfileOption::RetainSafePrivate, c)
    }
    pub(crate) const fn uids(self, c: Code) -> Self {
        self.with(ProfileOption::RetainUids, c)
    }
    pub(crate) const fn device(self, c: Code) -> Self {
        self.with(ProfileOption::RetainDeviceIdentity, c)
    }
    pub(crate) const fn institution(self, c: Code) -> Self {
        self.with(ProfileOption::RetainInstitutionIdentity, c)
    }
    pub(crate) const fn patient_chars(self, c: Code) -> Self {
        self.with(ProfileOption::RetainPatientCharacteristics, c)
    }
    pub(crate) const fn full_dates(self, c: Code) -> Self {
        self.with(ProfileOption::RetainLongitudinalFullDates, c)
    }
    pub(crate) const fn modified_dates(self, c: Code) -> Self {
        self.with(ProfileOption::RetainLongitudinalModifiedDates, c)
    }
    pub(crate) const fn descriptors(self, c: Code) -> Self {
        self.with(ProfileOption::CleanDescriptors, c)
    }
    pub(crate) const fn structured(self, c: Code) -> Self {
        self.with(ProfileOption::CleanStructuredContent, c)
    }
    pub(crate) const fn graphics(self, c: Code) -> Self {
        self.with(ProfileOption::CleanGraphics, c)
    }
}

/// One row of Table E.1-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// The attributes covered.
    pub pattern: TagPattern,
    /// The attribute name as the standard prints it.
    pub name: &'static str,
    /// The VR of the attribute (PS3.6; the first one where PS3.6 lists several).
    pub vr: VR,
    /// The action of the Basic Profile.
    pub basic: Code,
    /// The option columns.
    pub options: OptionCodes,
}

impl Row {
    /// The code that applies when the options `enabled` are in use.
    ///
    /// An option's entry overrides the Basic Profile (PS3.15 E.3). Where two enabled options
    /// both have an entry, K (retain) wins over C (clean): the table never gives the same
    /// attribute K and C from different options (a unit test checks), except for the two
    /// longitudinal temporal options, which exclude each other.
    pub fn code(&self, enabled: &[ProfileOption]) -> Code {
        let mut best: Option<Code> = None;
        for &o in enabled {
            match (self.options.get(o), best) {
                (Some(Code::K), _) => return Code::K,
                (Some(c), None) => best = Some(c),
                _ => {}
            }
        }
        best.unwrap_or(self.basic)
    }
}

pub(crate) const fn row(tag: u32, name: &'static str, vr: VR, basic: Code, o: OptionCodes) -> Row {
    Row {
        pattern: TagPattern::Exact(Tag((tag >> 16) as u16, tag as u16)),
        name,
        vr,
        basic,
        options: o,
    }
}

pub(crate) const fn mask(
    value: u32,
    mask: u32,
    name: &'static str,
    vr: VR,
    basic: Code,
    o: OptionCodes,
) -> Row {
    Row {
        pattern: TagPattern::Mask { value, mask },
        name,
        vr,
        basic,
        options: o,
    }
}

pub(crate) const fn private(name: &'static str, basic: Code, o: OptionCodes) -> Row {
    Row {
        pattern: TagPattern::Private,
        name,
        vr: VR::UN,
        basic,
        options: o,
    }
}

/// The row that covers `tag`, if any: exact rows first, then repeating groups, then the
/// private row for odd groups.
pub fn lookup(tag: Tag) -> Option<&'static Row> {
    static EXACT: OnceLock<HashMap<Tag, &'static Row>> = OnceLock::new();
    let exact = EXACT.get_or_init(|| {
        ROWS.iter()
            .filter_map(|r| match r.pattern {
                TagPattern::Exact(t) => Some((t, r)),
                _ => None,
            })
            .collect()
    });
    if let Some(r) = exact.get(&tag) {
        return Some(r);
    }
    ROWS.iter()
        .find(|r| !matches!(r.pattern, TagPattern::Exact(_)) && r.pattern.matches(tag))
}

impl Serialize for Row {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Columns<'a>(&'a OptionCodes);
        impl Serialize for Columns<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                for (o, c) in self.0.iter() {
                    m.serialize_entry(o.as_str(), &c)?;
                }
                m.end()
            }
        }
        let mut st = s.serialize_struct("Row", 5)?;
        st.serialize_field("tag", &self.pattern.to_string())?;
        st.serialize_field("name", self.name)?;
        st.serialize_field("vr", &self.vr.to_string())?;
        st.serialize_field("basic", &self.basic)?;
        st.serialize_field("options", &Columns(&self.options))?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_unique_and_sorted() {
        let tags: Vec<Tag> = ROWS
            .iter()
            .filter_map(|r| match r.pattern {
                TagPattern::Exact(t) => Some(t),
                _ => None,
            })
            .collect();
        assert!(tags.len() > 650, "{} exact rows", tags.len());
        assert!(
            tags.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
    }

    #[test]
    fn no_row_has_both_keep_and_clean_from_independent_options() {
        for r in ROWS {
            let mut cols: Vec<_> = r.options.iter().collect();
            cols.retain(|(o, _)| {
                !matches!(
                    o,
                    ProfileOption::RetainLongitudinalFullDates
                        | ProfileOption::RetainLongitudinalModifiedDates
                )
            });
            let k = cols.iter().any(|(_, c)| *c == Code::K);
            let c = cols.iter().any(|(_, c)| *c == Code::C);
            assert!(!(k && c), "{} has K and C", r.name);
        }
    }

    #[test]
    fn lookup_exact_mask_private() {
        assert_eq!(lookup(Tag(0x0010, 0x0010)).unwrap().name, "Patient's Name");
        assert_eq!(lookup(Tag(0x6002, 0x3000)).unwrap().name, "Overlay Data");
        assert_eq!(lookup(Tag(0x501E, 0x0005)).unwrap().name, "Curve Data");
        assert!(
            lookup(Tag(0x6020, 0x3000)).is_none(),
            "above the repeating range"
        );
        assert!(
            lookup(Tag(0x6000, 0x0010)).is_none(),
            "Overlay Rows is not in the table"
        );
        assert_eq!(
            lookup(Tag(0x0009, 0x1001)).unwrap().name,
            "Private Attributes"
        );
        assert!(lookup(Tag(0x7FE0, 0x0010)).is_none());
    }

    #[test]
    fn options_override_the_basic_profile() {
        let date = lookup(Tag(0x0008, 0x0022)).unwrap();
        assert_eq!(date.code(&[]), Code::XZ);
        assert_eq!(
            date.code(&[ProfileOption::RetainLongitudinalFullDates]),
            Code::K
        );
        assert_eq!(
            date.code(&[ProfileOption::RetainLongitudinalModifiedDates]),
            Code::C
        );
        assert_eq!(date.code(&[ProfileOption::RetainUids]), Code::XZ);
    }

    #[test]
    fn patterns_print_like_the_standard() {
        let overlay = lookup(Tag(0x6000, 0x3000)).unwrap();
        assert_eq!(overlay.pattern.to_string(), "(60xx,3000)");
        let curve = lookup(Tag(0x5000, 0x0000)).unwrap();
        assert_eq!(curve.pattern.to_string(), "(50xx,xxxx)");
        for c in ALL_CODES {
            assert_eq!(Code::parse(c.as_str()), Some(c));
        }
    }
}
