//! Applies Table E.1-1 to a data set and, recursively, to the items of its sequences.
//!
//! Before anything changes, the engine reads the patient identity (for the pseudonym and the
//! date shift) and gathers the values the profile is about to remove, so that the clean action
//! can remove them from the free text it keeps. Then every attribute is looked up in the table
//! and its code resolved for the options in use ([`crate::table::Row::code`]) into one of the
//! concrete actions of [`Act`].

use std::collections::{BTreeSet, HashMap, HashSet};

use dicom_core::header::{HasLength, Header};
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::options::{DeidOptions, ProfileOption};
use crate::private::{self, SAFE_PRIVATE};
use crate::pseudonym::{ae_pseudonym, date_shift_days, patient_pseudonym, pseudonymous_uid};
use crate::report::{Applied, DeidReport, WarningKind};
use crate::table::{self, Code};
use crate::values::{Scrubber, dummy, shift_da, shift_date_prefix};

/// What is done to one attribute, after resolving the combined codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    Remove,
    Empty,
    Dummy,
    Keep,
    Clean,
    /// Replace UIDs; on a sequence (X/Z/U*), apply the profile to its items.
    Uid,
}

/// The concrete action of `code` (see [`DeidOptions::prefer_removal`]).
pub(crate) fn act(code: Code, prefer_removal: bool) -> Act {
    match (code, prefer_removal) {
        (Code::X, _) => Act::Remove,
        (Code::Z, _) => Act::Empty,
        (Code::D, _) => Act::Dummy,
        (Code::K, _) => Act::Keep,
        (Code::C, _) => Act::Clean,
        (Code::U, _) => Act::Uid,
        (Code::ZD, false) => Act::Dummy,
        (Code::ZD, true) => Act::Empty,
        (Code::XZ, false) => Act::Empty,
        (Code::XD | Code::XZD, false) => Act::Dummy,
        (Code::XZUStar, false) => Act::Uid,
        (Code::XZ | Code::XD | Code::XZD | Code::XZUStar, true) => Act::Remove,
    }
}

/// Inside a sequence that is being cleaned (C), attributes the table does not list are cleaned
/// too when they hold free text (e.g. Text Value (0040,A160) of an SR content item).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Profile,
    Clean,
}

fn text(ds: &InMemDicomObject, tag: Tag) -> String {
    ds.get(tag)
        .and_then(|e| e.value().to_str().ok())
        .map(|v| v.trim_end_matches(['\0', ' ']).trim().to_string())
        .unwrap_or_default()
}

/// The identity of the patient of `ds` (see [`crate::pseudonym`]).
pub(crate) fn patient_identity(ds: &InMemDicomObject) -> String {
    let id = text(ds, tags::PATIENT_ID);
    if !id.is_empty() {
        return format!("{}\\{id}", text(ds, tags::ISSUER_OF_PATIENT_ID));
    }
    format!(
        "name:{}\\{}",
        text(ds, tags::PATIENT_NAME),
        text(ds, tags::PATIENT_BIRTH_DATE)
    )
}

fn map_strings(p: &PrimitiveValue, mut f: impl FnMut(&str) -> String) -> PrimitiveValue {
    match p {
        PrimitiveValue::Empty => PrimitiveValue::Empty,
        PrimitiveValue::Str(s) => PrimitiveValue::Str(f(s)),
        other => PrimitiveValue::Strs(other.to_multi_str().iter().map(|s| f(s)).collect()),
    }
}

fn is_text(vr: VR) -> bool {
    matches!(
        vr,
        VR::LO | VR::SH | VR::ST | VR::LT | VR::UT | VR::UC | VR::PN | VR::UR
    )
}

fn sequence(items: impl Into<dicom_core::value::C<InMemDicomObject>>) -> Value<InMemDicomObject> {
    // Lengths are recomputed by the writer: items may have changed size.
    Value::from(DataSetSequence::new(items, Length::UNDEFINED))
}

/// The de-identification of one data set (and everything nested in it).
pub(crate) struct Engine<'a> {
    opts: &'a DeidOptions,
    scrubber: Scrubber,
    shift_days: i64,
    private_removed: usize,
    removed_creators: BTreeSet<String>,
    pub(crate) report: DeidReport,
}

impl<'a> Engine<'a> {
    /// Prepares the de-identification of `ds`: the patient's date shift and the values to
    /// scrub from cleaned text.
    pub(crate) fn new(opts: &'a DeidOptions, ds: &InMemDicomObject) -> Self {
        let identity = patient_identity(ds);
        let mut e = Engine {
            opts,
            scrubber: Scrubber::default(),
            shift_days: date_shift_days(&opts.key, &identity, opts.max_date_shift_days),
            private_removed: 0,
            removed_creators: BTreeSet::new(),
            report: DeidReport {
                options: opts.enabled().to_vec(),
                ..DeidReport::default()
            },
        };
        e.gather(ds);
        e
    }

    fn act_of(&self, code: Code) -> Act {
        act(code, self.opts.prefer_removal)
    }

    fn uid_of(&self, uid: &str) -> String {
        pseudonymous_uid(&self.opts.key, uid)
    }

    /// Collects the identifying values the profile removes or replaces, at any depth.
    fn gather(&mut self, ds: &InMemDicomObject) {
        for e in ds.iter() {
            let tag = e.tag();
            if tag.group() & 1 == 1 {
                continue;
            }
            if let Value::Sequence(seq) = e.value() {
                for item in seq.items() {
                    self.gather(item);
                }
                continue;
            }
            let Some(row) = table::lookup(tag) else {
                continue;
            };
            if matches!(
                self.act_of(row.code(self.opts.enabled())),
                Act::Keep | Act::Clean
            ) {
                continue;
            }
            let Value::Primitive(p) = e.value() else {
                continue;
            };
            for v in p.to_multi_str().iter() {
                match e.vr() {
                    VR::PN => self.scrubber.add_person_name(v),
                    VR::LO | VR::SH | VR::AE | VR::UC => self.scrubber.add_term(v),
                    VR::ST if v.chars().count() <= 64 => self.scrubber.add_term(v),
                    VR::DA | VR::DT => self.scrubber.add_date(v),
                    _ => {}
                }
            }
        }
    }

    /// Applies the profile to every attribute of `ds`.
    pub(crate) fn dataset(&mut self, ds: &mut InMemDicomObject, mode: Mode) {
        let identity = patient_identity(ds);
        let keep_private: HashSet<Tag> = if self.opts.is_enabled(ProfileOption::RetainSafePrivate) {
            private::safe_tags(ds, SAFE_PRIVATE)
        } else {
            HashSet::new()
        };
        // Creators are removed before the elements of their blocks: read them first.
        let creators: HashMap<Tag, String> = ds
            .tags()
            .filter(|t| t.group() & 1 == 1 && t.element() >= 0x1000)
            .filter_map(|t| private::creator_of(ds, t).map(|c| (t, c)))
            .collect();
        let all: Vec<Tag> = ds.tags().collect();
        for tag in all {
            if tag.element() == 0x0000 {
                // Group lengths (retired in data sets) would be wrong after the changes.
                ds.remove_element(tag);
            } else if tag.group() & 1 == 1 {
                if keep_private.contains(&tag) {
                    self.report.count(Applied::Kept);
                } else {
                    if !private::is_creator(tag) {
                        self.private_removed += 1;
                        if let Some(c) = creators.get(&tag) {
                            self.removed_creators.insert(c.clone());
                        }
                    }
                    ds.remove_element(tag);
                    self.report.count(Applied::Removed);
                }
            } else if tag == tags::PATIENT_ID || tag == tags::PATIENT_NAME {
                // Z (Patient's Name) and Z/D (Patient ID) allow a dummy: the keyed pseudonym
                // keeps one patient's instances together.
                let p = patient_pseudonym(&self.opts.key, &self.opts.pseudonym_prefix, &identity);
                let vr = if tag == tags::PATIENT_NAME {
                    VR::PN
                } else {
                    VR::LO
                };
                ds.put(DataElement::new(tag, vr, PrimitiveValue::from(p)));
                self.report.count(Applied::Pseudonymised);
            } else if let Some(row) = table::lookup(tag) {
                let a = self.act_of(row.code(self.opts.enabled()));
                self.apply(ds, tag, a);
            } else {
                self.unlisted(ds, tag, mode);
            }
        }
    }

    fn items(
        &mut self,
        seq: DataSetSequence<InMemDicomObject>,
        mode: Mode,
    ) -> Value<InMemDicomObject> {
        let mut items = seq.into_items();
        for item in items.iter_mut() {
            self.dataset(item, mode);
        }
        sequence(items)
    }

    /// The pseudonyms of the UIDs of `p`. The Retain UIDs option needs no check here: it
    /// turns the U rows into K before this is reached, and a D (dummy) never keeps a UID.
    fn uids(&self, p: &PrimitiveValue) -> PrimitiveValue {
        map_strings(p, |u| self.uid_of(u))
    }

    /// Applies `a` to the attribute `tag` of `ds`.
    fn apply(&mut self, ds: &mut InMemDicomObject, tag: Tag, a: Act) {
        let Some(elem) = ds.take(tag) else {
            return;
        };
        let vr = elem.vr();
        let value = elem.into_value();
        let (applied, new): (Applied, Option<Value<InMemDicomObject>>) = match (a, value) {
            (Act::Remove, _) => (Applied::Removed, None),
            (Act::Empty, Value::Sequence(_)) => (Applied::Emptied, Some(sequence(Vec::new()))),
            (Act::Empty, _) => (Applied::Emptied, Some(PrimitiveValue::Empty.into())),
            (Act::Dummy, Value::Sequence(seq)) => {
                let mut items = seq.into_items();
                for item in items.iter_mut() {
                    self.dummy_dataset(item);
                }
                (Applied::Dummy, Some(sequence(items)))
            }
            (Act::Dummy, Value::Primitive(p)) if vr == VR::UI && !p.is_empty() => {
                (Applied::Dummy, Some(self.uids(&p).into()))
            }
            (Act::Dummy, _) => (Applied::Dummy, Some(dummy(vr).into())),
            (Act::Keep, Value::Sequence(seq)) => {
                (Applied::Kept, Some(self.items(seq, Mode::Profile)))
            }
            (Act::Clean, Value::Sequence(seq)) => {
                (Applied::Cleaned, Some(self.items(seq, Mode::Clean)))
            }
            (Act::Uid, Value::Sequence(seq)) => {
                (Applied::UidReplaced, Some(self.items(seq, Mode::Profile)))
            }
            (Act::Uid, Value::Primitive(p)) => (Applied::UidReplaced, Some(self.uids(&p).into())),
            (Act::Clean, Value::Primitive(p)) => match self.clean(tag, vr, &p) {
                Some(v) => (Applied::Cleaned, Some(v.into())),
                None => (Applied::Removed, None),
            },
            (Act::Keep | Act::Clean | Act::Uid, v) => (Applied::Kept, Some(v)),
        };
        self.report.count(applied);
        if let Some(v) = new {
            ds.put(DataElement::new(tag, vr, v));
        }
    }

    /// Replaces every value in `ds` by a dummy of its VR (action D on a sequence applies "to
    /// the Sequence and all of its contents", PS3.15 E.1.1), keeping the structure.
    fn dummy_dataset(&mut self, ds: &mut InMemDicomObject) {
        let all: Vec<Tag> = ds.tags().collect();
        for tag in all {
            let Some(elem) = ds.take(tag) else {
                continue;
            };
            if tag.group() & 1 == 1 || tag.element() == 0x0000 {
                continue;
            }
            let vr = elem.vr();
            let v: Value<InMemDicomObject> = match elem.into_value() {
                Value::Sequence(seq) => {
                    let mut items = seq.into_items();
                    for item in items.iter_mut() {
                        self.dummy_dataset(item);
                    }
                    sequence(items)
                }
                Value::Primitive(p) if vr == VR::UI && !p.is_empty() => self.uids(&p).into(),
                _ => dummy(vr).into(),
            };
            ds.put(DataElement::new(tag, vr, v));
        }
    }

    /// The cleaned value of a non-sequence attribute, or `None` when it must go.
    fn clean(&mut self, tag: Tag, vr: VR, p: &PrimitiveValue) -> Option<PrimitiveValue> {
        let shifting = self
            .opts
            .is_enabled(ProfileOption::RetainLongitudinalModifiedDates);
        match vr {
            VR::DA | VR::DT if shifting => Some(self.shift(tag, vr, p)),
            VR::AE => Some(map_strings(p, |ae| ae_pseudonym(&self.opts.key, ae))),
            VR::UI => Some(self.uids(p)),
            vr if is_text(vr) => Some(map_strings(p, |s| {
                self.scrubber.scrub(s).unwrap_or_else(|| s.to_string())
            })),
            VR::OB | VR::OW | VR::OF | VR::OD | VR::OL | VR::OV | VR::UN => {
                self.report.warn(
                    WarningKind::BinaryRemoved,
                    format!(
                        "({:04X},{:04X}) is binary and cannot be cleaned; removed",
                        tag.group(),
                        tag.element()
                    ),
                );
                None
            }
            // TM (a shift by whole days leaves times alone), CS, AS, numbers.
            _ => Some(p.clone()),
        }
    }

    /// Moves every date of a DA or DT value by the patient's shift.
    fn shift(&mut self, tag: Tag, vr: VR, p: &PrimitiveValue) -> PrimitiveValue {
        let days = self.shift_days;
        let mut failed = false;
        let v = map_strings(p, |s| {
            let r = if vr == VR::DA {
                shift_da(s, days)
            } else {
                shift_date_prefix(s, days)
            };
            r.unwrap_or_else(|| {
                failed |= !s.trim_end_matches(['\0', ' ']).is_empty();
                String::new()
            })
        });
        if failed {
            self.report.warn(
                WarningKind::DateNotShifted,
                format!(
                    "({:04X},{:04X}) holds a partial or invalid date; emptied",
                    tag.group(),
                    tag.element()
                ),
            );
        }
        v
    }

    /// An attribute the table does not list: kept, except that its sequences are processed,
    /// its dates shifted under the modified-dates option (PS3.15 E.1.1 note 4 suggests handling
    /// dates by VR) and its free text cleaned inside cleaned sequences.
    fn unlisted(&mut self, ds: &mut InMemDicomObject, tag: Tag, mode: Mode) {
        let Some(e) = ds.get(tag) else {
            return;
        };
        let vr = e.vr();
        let shifting = self
            .opts
            .is_enabled(ProfileOption::RetainLongitudinalModifiedDates);
        let wanted = match e.value() {
            Value::Sequence(_) => true,
            Value::Primitive(_) => {
                (shifting && matches!(vr, VR::DA | VR::DT)) || (mode == Mode::Clean && is_text(vr))
            }
            Value::PixelSequence(_) => false,
        };
        if !wanted {
            return;
        }
        let Some(elem) = ds.take(tag) else {
            return;
        };
        let v: Value<InMemDicomObject> = match elem.into_value() {
            Value::Sequence(seq) => self.items(seq, mode),
            Value::Primitive(p) => {
                let c = self.clean(tag, vr, &p).unwrap_or(PrimitiveValue::Empty);
                if c != p {
                    self.report.count(Applied::Cleaned);
                }
                c.into()
            }
            other => other,
        };
        ds.put(DataElement::new(tag, vr, v));
    }

    /// Adds the warning about removed private attributes, if any were removed.
    pub(crate) fn finish(mut self) -> DeidReport {
        if self.private_removed > 0 {
            let creators: Vec<String> = self.removed_creators.iter().cloned().collect();
            self.report.warn(
                WarningKind::PrivateAttributesRemoved,
                format!(
                    "removed {} private attributes (creators: {})",
                    self.private_removed,
                    if creators.is_empty() {
                        "none".to_string()
                    } else {
                        creators.join(", ")
                    }
                ),
            );
        }
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_codes_resolve_to_conformant_or_removing_actions() {
        assert_eq!(act(Code::XZ, false), Act::Empty);
        assert_eq!(act(Code::XZ, true), Act::Remove);
        assert_eq!(act(Code::ZD, false), Act::Dummy);
        assert_eq!(act(Code::ZD, true), Act::Empty);
        assert_eq!(act(Code::XZD, false), Act::Dummy);
        assert_eq!(act(Code::XZUStar, false), Act::Uid);
        assert_eq!(act(Code::XZUStar, true), Act::Remove);
        assert_eq!(act(Code::K, true), Act::Keep);
    }
}
