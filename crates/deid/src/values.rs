//! Values that replace or clean others: dummies per VR (action D), date shifting (the
//! modified-dates option) and the text scrubber of the clean action (C).

use dicom_core::smallvec::smallvec;
use dicom_core::value::PrimitiveValue;
use dicom_core::{Tag, VR};

/// The text of dummy string values.
pub const DUMMY_TEXT: &str = "ANONYMIZED";

/// A non-empty dummy value of `vr` (action D). UIDs are not handled here: a dummy UID must be
/// consistent across instances, so the engine replaces them with their pseudonym.
pub(crate) fn dummy(vr: VR) -> PrimitiveValue {
    match vr {
        VR::AE | VR::CS | VR::LO | VR::LT | VR::SH | VR::ST | VR::UC | VR::UT | VR::PN => {
            PrimitiveValue::from(DUMMY_TEXT)
        }
        VR::AS => PrimitiveValue::from("000Y"),
        VR::DA => PrimitiveValue::from("19000101"),
        VR::DT => PrimitiveValue::from("19000101000000"),
        VR::TM => PrimitiveValue::from("000000"),
        VR::DS | VR::IS => PrimitiveValue::from("0"),
        VR::UR => PrimitiveValue::from("urn:anonymized"),
        VR::UI => PrimitiveValue::from("2.25.0"),
        VR::FL | VR::OF => PrimitiveValue::F32(smallvec![0.0]),
        VR::FD | VR::OD => PrimitiveValue::F64(smallvec![0.0]),
        VR::SL => PrimitiveValue::I32(smallvec![0]),
        VR::SS => PrimitiveValue::I16(smallvec![0]),
        VR::SV => PrimitiveValue::I64(smallvec![0]),
        VR::UL | VR::OL => PrimitiveValue::U32(smallvec![0]),
        VR::US | VR::OW => PrimitiveValue::U16(smallvec![0]),
        VR::UV | VR::OV => PrimitiveValue::U64(smallvec![0]),
        VR::AT => PrimitiveValue::Tags(smallvec![Tag(0, 0)]),
        _ => PrimitiveValue::U8(smallvec![0, 0]),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    days_from_civil(
        if m == 12 { y + 1 } else { y },
        if m == 12 { 1 } else { m + 1 },
        1,
    ) - days_from_civil(y, m, 1)
}

/// Shifts the 8-digit date at the start of `s` (`YYYYMMDD`, as in DA and DT) by `days` and
/// keeps the rest (the time and offset of a DT). `None` when `s` does not start with a valid
/// full date (partial dates such as `YYYY` cannot be shifted by days).
pub(crate) fn shift_date_prefix(s: &str, days: i64) -> Option<String> {
    let s = s.trim_end_matches(['\0', ' ']);
    let digits = s.get(..8)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i64 = digits[..4].parse().ok()?;
    let m: i64 = digits[4..6].parse().ok()?;
    let d: i64 = digits[6..8].parse().ok()?;
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    let (y2, m2, d2) = civil_from_days(days_from_civil(y, m, d) + days);
    if !(0..=9999).contains(&y2) {
        return None;
    }
    Some(format!("{y2:04}{m2:02}{d2:02}{}", &s[8..]))
}

/// Shifts a DA value (also the ACR-NEMA form `YYYY.MM.DD` and query ranges `A-B`).
pub(crate) fn shift_da(s: &str, days: i64) -> Option<String> {
    let s = s.trim_end_matches(['\0', ' ']).trim_start();
    if let Some((a, b)) = s.split_once('-') {
        let part = |p: &str| {
            if p.is_empty() {
                Some(String::new())
            } else {
                shift_da(p, days)
            }
        };
        return Some(format!("{}-{}", part(a)?, part(b)?));
    }
    let compact: String = if s.len() == 10 && s.as_bytes()[4] == b'.' && s.as_bytes()[7] == b'.' {
        s.replace('.', "")
    } else {
        s.to_string()
    };
    if compact.len() != 8 {
        return None;
    }
    shift_date_prefix(&compact, days)
}

/// Removes from free text the values that the profile removes elsewhere in the data set
/// (PS3.15 E.3.5: "any information that is embedded in text … corresponding to the Attribute
/// information specified to be removed … shall also be removed"), and any run of six or more
/// digits (dates, record numbers, telephone numbers).
///
/// Terms match case-insensitively on word boundaries; each match becomes `***`, so a value
/// never grows beyond its VR's maximum length.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scrubber {
    terms: Vec<Vec<char>>,
}

/// Shortest term worth removing: shorter ones ("Li", "CT") would destroy ordinary text.
const MIN_TERM_CHARS: usize = 3;
const MIN_DIGIT_RUN: usize = 6;

fn lower(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

impl Scrubber {
    /// Adds one identifying value.
    pub fn add_term(&mut self, s: &str) {
        let t: Vec<char> = s.trim().chars().map(lower).collect();
        if t.len() >= MIN_TERM_CHARS
            && t.iter().any(|c| c.is_alphanumeric())
            && !self.terms.contains(&t)
        {
            self.terms.push(t);
        }
    }

    /// Adds a person name: the whole value, each component group, each component and each
    /// word of a component.
    pub fn add_person_name(&mut self, pn: &str) {
        for group in pn.split('=') {
            self.add_term(&group.replace('^', " "));
            for comp in group.split('^') {
                self.add_term(comp);
                for word in comp.split_whitespace() {
                    self.add_term(word);
                }
            }
        }
    }

    /// Adds a date in the forms people type: `YYYYMMDD`, `YYYY-MM-DD`, `DD.MM.YYYY`,
    /// `DD/MM/YYYY`, `MM/DD/YYYY`.
    pub fn add_date(&mut self, da: &str) {
        let da = da.trim();
        if da.len() < 8 || !da.as_bytes()[..8].iter().all(u8::is_ascii_digit) {
            return;
        }
        let (y, m, d) = (&da[..4], &da[4..6], &da[6..8]);
        for t in [
            format!("{y}{m}{d}"),
            format!("{y}-{m}-{d}"),
            format!("{d}.{m}.{y}"),
            format!("{d}/{m}/{y}"),
            format!("{m}/{d}/{y}"),
        ] {
            self.add_term(&t);
        }
    }

    /// Whether there is anything to remove besides digit runs.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The cleaned text, or `None` when nothing had to be removed.
    pub fn scrub(&self, text: &str) -> Option<String> {
        let orig: Vec<char> = text.chars().collect();
        let low: Vec<char> = orig.iter().map(|&c| lower(c)).collect();
        let n = low.len();
        let boundary = |i: usize| i == 0 || i >= n || !low[i].is_alphanumeric();
        let mut hit = vec![false; n];
        for t in &self.terms {
            if t.len() > n {
                continue;
            }
            for i in 0..=n - t.len() {
                if low[i..i + t.len()] == t[..]
                    && (i == 0 || boundary(i - 1))
                    && boundary(i + t.len())
                {
                    hit[i..i + t.len()].iter_mut().for_each(|h| *h = true);
                }
            }
        }
        let mut i = 0;
        while i < n {
            if orig[i].is_ascii_digit() {
                let start = i;
                while i < n && orig[i].is_ascii_digit() {
                    i += 1;
                }
                if i - start >= MIN_DIGIT_RUN {
                    hit[start..i].iter_mut().for_each(|h| *h = true);
                }
            } else {
                i += 1;
            }
        }
        if !hit.contains(&true) {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < n {
            if hit[i] {
                let start = i;
                while i < n && hit[i] {
                    i += 1;
                }
                out.push_str(&"***"[..(i - start).min(3)]);
            } else {
                out.push(orig[i]);
                i += 1;
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_shift_across_months_years_and_leap_days() {
        assert_eq!(shift_date_prefix("20240301", -1).unwrap(), "20240229");
        assert_eq!(shift_date_prefix("20230301", -1).unwrap(), "20230228");
        assert_eq!(shift_date_prefix("20240101", -366).unwrap(), "20221231");
        assert_eq!(
            shift_date_prefix("20240312101500.123+0100", -12).unwrap(),
            "20240229101500.123+0100"
        );
        assert_eq!(shift_da("2024.03.12", -12).unwrap(), "20240229");
        assert_eq!(
            shift_da("20240301-20240310", -1).unwrap(),
            "20240229-20240309"
        );
        assert_eq!(shift_da("20240301-", -1).unwrap(), "20240229-");
        assert!(shift_da("2024", -1).is_none());
        assert!(shift_da("20240230", -1).is_none());
        for z in [-800_000, -1, 0, 1, 19_000, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn scrubber_removes_names_ids_dates_on_word_boundaries() {
        let mut s = Scrubber::default();
        s.add_person_name("Smithson^John Paul^^Dr");
        s.add_term("MRN4711");
        s.add_date("19610423");
        s.add_term("Li");
        let out = s
            .scrub(
                "CT head for JOHN smithson (mrn4711), born 23.04.1961, ph 0123456789; Smithsonian",
            )
            .unwrap();
        assert_eq!(
            out,
            "CT head for *** *** (***), born ***, ph ***; Smithsonian"
        );
        assert_eq!(s.scrub("CT HEAD W/O CONTRAST"), None);
        assert!(!s.is_empty());
    }
}
