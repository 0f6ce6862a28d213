//! Walks the whole of Table E.1-1: one data set holds every attribute of the table (a value
//! of its VR; an item with nested attributes where the VR is SQ), and each option set's
//! result is checked row by row against the action the row's code prescribes.

use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use vesalius_deid::table::{Code, ROWS, Row, TagPattern, lookup};
use vesalius_deid::{
    Applied, DUMMY_TEXT, DeidOptions, ProfileOption, WarningKind, deidentify_dataset,
};

use crate::common::{el, expected_uid, is_empty_value, items, seq, str1, strs};

const KEY: &str = "table walk key";
const NESTED_UID: &str = "1.2.826.0.1.3680043.9.7431.999999";
const DATE: &str = "20240312";
const DATETIME: &str = "20240312101500";
const TIME: &str = "101500";
/// An attribute the table does not list (checked below), holding a date.
const UNLISTED_DATE: Tag = Tag(0x0014, 0x3076);

fn row_uid(tag: Tag) -> String {
    format!(
        "1.2.826.0.1.3680043.9.7431.{}.{}",
        tag.group(),
        tag.element()
    )
}

fn nested_item() -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        el(tags::CODE_VALUE, VR::SH, "R-1234"),
        el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, NESTED_UID),
        el(tags::ACCESSION_NUMBER, VR::SH, "ACC-NESTED"),
        el(tags::TEXT_VALUE, VR::UT, "seen by Smithson"),
    ])
}

/// A value of `vr` that differs from every dummy and mentions a name the profile removes.
fn sample(tag: Tag, vr: VR) -> Value<InMemDicomObject> {
    let s = |v: &str| -> Value<InMemDicomObject> { PrimitiveValue::from(v).into() };
    match vr {
        VR::SQ => seq(vec![nested_item()]),
        VR::PN => s("Smithson^John"),
        VR::LO | VR::SH => s("seen by Smithson"),
        VR::ST | VR::LT | VR::UT | VR::UC => s("CT head, seen by Smithson"),
        VR::UR => s("http://smithson.example/x"),
        VR::AE => s("CTSCANNER01"),
        VR::AS => s("045Y"),
        VR::CS => s("SAMPLE"),
        VR::DA => s(DATE),
        VR::DT => s(DATETIME),
        VR::TM => s(TIME),
        VR::DS => s("12.5"),
        VR::IS => s("42"),
        VR::UI => s(&row_uid(tag)),
        VR::FL | VR::OF => PrimitiveValue::from(7.0f32).into(),
        VR::FD | VR::OD => PrimitiveValue::from(7.0f64).into(),
        VR::SL => PrimitiveValue::from(7i32).into(),
        VR::SS => PrimitiveValue::from(7i16).into(),
        VR::SV => PrimitiveValue::from(7i64).into(),
        VR::UL | VR::OL => PrimitiveValue::from(7u32).into(),
        VR::US | VR::OW => PrimitiveValue::from(7u16).into(),
        VR::UV | VR::OV => PrimitiveValue::from(7u64).into(),
        VR::AT => PrimitiveValue::Tags([Tag(0x0010, 0x0010)].into_iter().collect()).into(),
        _ => PrimitiveValue::from(vec![1u8, 2, 3, 4]).into(),
    }
}

fn exact(r: &Row) -> Option<Tag> {
    match r.pattern {
        TagPattern::Exact(t) => Some(t),
        _ => None,
    }
}

/// Every attribute of the table, a representative of each repeating group and private block,
/// and a few attributes the table does not list (which must survive).
fn full_dataset() -> InMemDicomObject {
    let mut ds = InMemDicomObject::new_empty();
    for r in ROWS {
        if let Some(t) = exact(r) {
            ds.put(el(t, r.vr, sample(t, r.vr)));
        }
    }
    ds.put(el(tags::PATIENT_NAME, VR::PN, "Doe^Jane"));
    ds.put(el(tags::PATIENT_ID, VR::LO, "PAT-0001"));
    // Repeating groups: overlay plane 1 (6002), curve 5000; Overlay Rows is not in the table.
    ds.put(el(
        Tag(0x6002, 0x3000),
        VR::OW,
        PrimitiveValue::U16([1u16, 2].into_iter().collect()),
    ));
    ds.put(el(Tag(0x6002, 0x4000), VR::LT, "overlay by Smithson"));
    ds.put(el(
        Tag(0x6002, 0x0010),
        VR::US,
        PrimitiveValue::from(512u16),
    ));
    ds.put(el(
        Tag(0x5000, 0x3000),
        VR::OB,
        PrimitiveValue::from(vec![1u8, 2]),
    ));
    // Private: an unknown block and a block with one safe attribute (PS3.15 Table E.3.10-1).
    ds.put(el(Tag(0x0009, 0x0010), VR::LO, "ACME SECRET"));
    ds.put(el(Tag(0x0009, 0x1001), VR::LO, "Smithson"));
    ds.put(el(Tag(0x0019, 0x0010), VR::LO, "SIEMENS MR HEADER"));
    ds.put(el(Tag(0x0019, 0x100C), VR::IS, "1000"));
    ds.put(el(Tag(0x0019, 0x100A), VR::US, PrimitiveValue::from(3u16)));
    // Not in the table.
    ds.put(el(tags::ROWS, VR::US, PrimitiveValue::from(512u16)));
    ds.put(el(UNLISTED_DATE, VR::DA, DATE));
    ds
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Exp {
    Removed,
    Empty,
    Dummy,
    Kept,
    Cleaned,
    Uid,
}

/// The documented reading of the codes (DeidOptions::prefer_removal).
fn expected(code: Code, prefer_removal: bool) -> Exp {
    match (code, prefer_removal) {
        (Code::X, _) => Exp::Removed,
        (Code::Z, _) => Exp::Empty,
        (Code::D, _) => Exp::Dummy,
        (Code::K, _) => Exp::Kept,
        (Code::C, _) => Exp::Cleaned,
        (Code::U, _) => Exp::Uid,
        (Code::ZD, false) | (Code::XD, false) | (Code::XZD, false) => Exp::Dummy,
        (Code::ZD, true) => Exp::Empty,
        (Code::XZ, false) => Exp::Empty,
        (Code::XZUStar, false) => Exp::Uid,
        (_, true) => Exp::Removed,
    }
}

fn patient_pseudonym(identity: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    m.update(b"vesalius-deid:patient\0");
    m.update(identity.as_bytes());
    let h = m.finalize().into_bytes();
    let hex: String = h[..10].iter().map(|b| format!("{b:02X}")).collect();
    format!("ANON-{hex}")
}

struct Check<'a> {
    out: &'a InMemDicomObject,
    opts: &'a DeidOptions,
    failures: Vec<String>,
    shifted_dates: Vec<String>,
}

impl Check<'_> {
    fn fail(&mut self, r: &Row, what: String) {
        self.failures
            .push(format!("{} {}: {what}", r.pattern, r.name));
    }

    /// The nested item of a sequence whose contents had the profile applied (K, C, U*).
    fn nested_profiled(&mut self, r: &Row, clean: bool) {
        let Some(it) = items(self.out, exact(r).unwrap()) else {
            return self.fail(r, "sequence missing".into());
        };
        let Some(item) = it.first() else {
            return self.fail(r, "item missing".into());
        };
        let keep_uids = self.opts.is_enabled(ProfileOption::RetainUids);
        let want_uid = if keep_uids {
            NESTED_UID.to_string()
        } else {
            expected_uid(KEY, NESTED_UID)
        };
        let got = (
            str1(item, tags::CODE_VALUE),
            str1(item, tags::REFERENCED_SOP_INSTANCE_UID),
            is_empty_value(item, tags::ACCESSION_NUMBER),
            str1(item, tags::TEXT_VALUE),
        );
        let text_ok = match &got.3 {
            Some(t) if clean => !t.to_lowercase().contains("smithson"),
            Some(t) => t == "seen by Smithson",
            None => false,
        };
        if got.0.as_deref() != Some("R-1234")
            || got.1.as_deref() != Some(&want_uid)
            || !got.2
            || !text_ok
        {
            self.fail(
                r,
                format!("nested item not processed by the profile (clean={clean}): {got:?}"),
            );
        }
    }

    fn row(&mut self, r: &Row, exp: Exp) {
        let binary = matches!(
            r.vr,
            VR::OB | VR::OW | VR::UN | VR::OF | VR::OD | VR::OL | VR::OV
        );
        // Binary cannot be cleaned: the documented outcome of C on binary is removal.
        let exp = if exp == Exp::Cleaned && binary {
            Exp::Removed
        } else {
            exp
        };
        let t = exact(r).unwrap();
        let out = self.out;
        let present = out.get(t).is_some();
        let orig = sample(t, r.vr);
        let now = out.get(t).map(|e| e.value().clone());
        let is_seq = r.vr == VR::SQ;
        match exp {
            Exp::Removed => {
                if present {
                    self.fail(r, "expected removed".into());
                }
            }
            _ if !present => self.fail(r, format!("expected {exp:?}, was removed")),
            Exp::Empty => {
                if !is_empty_value(out, t) {
                    self.fail(r, format!("expected zero length, got {now:?}"));
                }
            }
            Exp::Dummy if is_seq => {
                let it = items(out, t).unwrap_or(&[]);
                let ok = it.len() == 1
                    && str1(&it[0], tags::CODE_VALUE).as_deref() == Some(DUMMY_TEXT)
                    && str1(&it[0], tags::TEXT_VALUE).as_deref() == Some(DUMMY_TEXT)
                    && str1(&it[0], tags::REFERENCED_SOP_INSTANCE_UID)
                        == Some(expected_uid(KEY, NESTED_UID));
                if !ok {
                    self.fail(r, "expected a dummy item (every value replaced)".into());
                }
            }
            Exp::Dummy if r.vr == VR::UI => {
                if str1(out, t) != Some(expected_uid(KEY, &row_uid(t))) {
                    self.fail(
                        r,
                        format!("expected a dummy (remapped) UID, got {:?}", str1(out, t)),
                    );
                }
            }
            Exp::Dummy => {
                if is_empty_value(out, t) || now.as_ref() == Some(&orig) {
                    self.fail(r, format!("expected a non-empty dummy, got {now:?}"));
                }
            }
            Exp::Kept if is_seq => self.nested_profiled(r, false),
            Exp::Kept => {
                if now.as_ref() != Some(&orig) {
                    self.fail(r, format!("expected kept, got {now:?}"));
                }
            }
            Exp::Uid if is_seq => self.nested_profiled(r, false),
            Exp::Uid => {
                if str1(out, t) != Some(expected_uid(KEY, &row_uid(t))) {
                    self.fail(r, format!("expected the keyed UID, got {:?}", str1(out, t)));
                }
            }
            Exp::Cleaned => self.cleaned(r, t, now, orig),
        }
    }

    fn cleaned(
        &mut self,
        r: &Row,
        t: Tag,
        now: Option<Value<InMemDicomObject>>,
        orig: Value<InMemDicomObject>,
    ) {
        let s = str1(self.out, t).unwrap_or_default();
        match r.vr {
            VR::SQ => self.nested_profiled(r, true),
            VR::DA | VR::DT => {
                let full = if r.vr == VR::DA { DATE } else { DATETIME };
                let ok = s.len() == full.len() && s[..8] < *DATE && s[8..] == full[8..];
                if !ok
                    || !self
                        .opts
                        .is_enabled(ProfileOption::RetainLongitudinalModifiedDates)
                {
                    self.fail(
                        r,
                        format!("expected a date shifted into the past, got {s:?}"),
                    );
                }
                self.shifted_dates.push(s[..8.min(s.len())].to_string());
            }
            VR::AE => {
                if !(s.starts_with("DEID") && s.len() == 16) {
                    self.fail(r, format!("expected an AE pseudonym, got {s:?}"));
                }
            }
            VR::LO | VR::SH | VR::ST | VR::LT | VR::UT | VR::UC | VR::PN | VR::UR => {
                if s.to_lowercase().contains("smithson") || s.is_empty() {
                    self.fail(
                        r,
                        format!("expected the name scrubbed from the text, got {s:?}"),
                    );
                }
            }
            _ => {
                if now.as_ref() != Some(&orig) {
                    self.fail(r, format!("expected unchanged by cleaning, got {now:?}"));
                }
            }
        }
    }
}

fn option_sets() -> Vec<(String, DeidOptions)> {
    let selectable: Vec<ProfileOption> = ProfileOption::ALL
        .into_iter()
        .filter(|&o| o != ProfileOption::CleanGraphics)
        .collect();
    let mut sets = vec![
        ("basic".to_string(), DeidOptions::new(KEY)),
        (
            "basic, prefer removal".to_string(),
            DeidOptions::new(KEY).prefer_removal(true),
        ),
    ];
    for &o in &selectable {
        sets.push((o.to_string(), DeidOptions::new(KEY).option(o, true)));
    }
    let all = selectable
        .iter()
        .fold(DeidOptions::new(KEY), |acc, &o| acc.option(o, true));
    sets.push((
        "all, full dates".into(),
        all.clone().retain_full_dates(true),
    ));
    sets.push((
        "all, modified dates, prefer removal".into(),
        all.retain_modified_dates(30).prefer_removal(true),
    ));
    sets
}

#[test]
fn every_row_of_the_table_is_applied_under_every_option_set() {
    assert!(
        lookup(UNLISTED_DATE).is_none(),
        "the control attribute must not be in the table"
    );
    let identity = "seen by Smithson\\PAT-0001"; // Issuer of Patient ID \ Patient ID
    for (label, opts) in option_sets() {
        let mut ds = full_dataset();
        let report = deidentify_dataset(&mut ds, &opts).unwrap();
        let mut c = Check {
            out: &ds,
            opts: &opts,
            failures: Vec::new(),
            shifted_dates: Vec::new(),
        };
        let mut checked = 0;
        for r in ROWS {
            let Some(t) = exact(r) else { continue };
            checked += 1;
            if t == tags::PATIENT_ID || t == tags::PATIENT_NAME {
                if str1(&ds, t) != Some(patient_pseudonym(identity)) {
                    c.fail(
                        r,
                        format!("expected the patient pseudonym, got {:?}", str1(&ds, t)),
                    );
                }
                continue;
            }
            let exp = expected(r.code(opts.enabled()), opts.prefers_removal());
            c.row(r, exp);
        }
        assert_eq!(checked, ROWS.len() - 4, "every exact row checked");

        // One shift per patient: all cleaned dates moved together.
        c.shifted_dates.dedup();
        assert!(
            c.shifted_dates.len() <= 1,
            "{label}: dates shifted differently: {:?}",
            c.shifted_dates
        );
        let shifting = opts.is_enabled(ProfileOption::RetainLongitudinalModifiedDates);
        assert_eq!(!c.shifted_dates.is_empty(), shifting, "{label}");

        // Repeating groups and private attributes.
        for t in [
            Tag(0x6002, 0x3000),
            Tag(0x6002, 0x4000),
            Tag(0x5000, 0x3000),
        ] {
            assert!(ds.get(t).is_none(), "{label}: {t} must be removed");
        }
        assert!(
            ds.get(Tag(0x6002, 0x0010)).is_some(),
            "{label}: Overlay Rows is not in the table"
        );
        assert!(ds.get(Tag(0x0009, 0x1001)).is_none() && ds.get(Tag(0x0009, 0x0010)).is_none());
        assert!(
            ds.get(Tag(0x0019, 0x100A)).is_none(),
            "{label}: not on the safe list"
        );
        let safe = opts.is_enabled(ProfileOption::RetainSafePrivate);
        assert_eq!(
            ds.get(Tag(0x0019, 0x100C)).is_some(),
            safe,
            "{label}: safe B value"
        );
        assert_eq!(
            ds.get(Tag(0x0019, 0x0010)).is_some(),
            safe,
            "{label}: its creator"
        );
        assert!(report.has_warning(WarningKind::PrivateAttributesRemoved));

        // Unlisted attributes stay; unlisted dates move with the modified-dates option.
        assert_eq!(
            strs(&ds, tags::ROWS),
            Some(vec!["512".to_string()]),
            "{label}"
        );
        let unlisted = str1(&ds, UNLISTED_DATE).unwrap();
        assert_eq!(
            unlisted != DATE,
            shifting,
            "{label}: unlisted date {unlisted}"
        );
        if shifting {
            assert_eq!(c.shifted_dates, vec![unlisted.clone()], "{label}");
        }

        // What de-identification adds (PS3.15 E.1.1 item 6, E.3.6).
        assert_eq!(
            str1(&ds, tags::PATIENT_IDENTITY_REMOVED).as_deref(),
            Some("YES")
        );
        let codes: Vec<String> = items(&ds, tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
            .unwrap()
            .iter()
            .map(|i| str1(i, tags::CODE_VALUE).unwrap())
            .collect();
        let mut want = vec!["113100".to_string()];
        want.extend(opts.enabled().iter().map(|o| o.code().0.to_string()));
        assert_eq!(codes, want, "{label}");
        let temporal = str1(&ds, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED).unwrap();
        let want_temporal = if opts.is_enabled(ProfileOption::RetainLongitudinalFullDates) {
            "UNMODIFIED"
        } else if shifting {
            "MODIFIED"
        } else {
            "REMOVED"
        };
        assert_eq!(temporal, want_temporal, "{label}");
        assert!(
            report.counted(Applied::Removed) > 100,
            "{label}: {:?}",
            report.counts
        );
        assert_eq!(report.counted(Applied::Pseudonymised), 2, "{label}");

        assert!(
            c.failures.is_empty(),
            "{label}: {} rows wrong:\n{}",
            c.failures.len(),
            c.failures.join("\n")
        );
    }
}

#[test]
fn clean_graphics_is_refused() {
    let mut ds = full_dataset();
    let opts = DeidOptions::new(KEY).option(ProfileOption::CleanGraphics, true);
    let err = deidentify_dataset(&mut ds, &opts).unwrap_err();
    assert!(err.to_string().contains("clean-graphics"), "{err}");
    assert!(ds.get(tags::PATIENT_NAME).is_some(), "nothing changed");
    let err = deidentify_dataset(&mut ds, &DeidOptions::new("")).unwrap_err();
    assert_eq!(err.kind(), vesalius_core::ErrorKind::BadRequest);
}

#[test]
fn every_option_column_is_exercised() {
    // The option sets above must reach every (option, code) pair the table has.
    let sets = option_sets();
    for r in ROWS {
        for (o, _) in r.options.iter() {
            if o == ProfileOption::CleanGraphics {
                continue;
            }
            assert!(
                sets.iter().any(|(_, s)| s.enabled() == [o]),
                "{o} of {} is not run on its own",
                r.name
            );
        }
    }
}
