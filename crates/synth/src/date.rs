//! Calendar arithmetic for synthetic DA/TM values, without a clock or a date crate.

/// A proleptic Gregorian calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// The date `days` days after 1970-01-01 (H. Hinnant's `civil_from_days`).
    pub fn from_days(days: i64) -> Self {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// Days since 1970-01-01 (H. Hinnant's `days_from_civil`).
    pub fn to_days(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `n` days later (or earlier, for negative `n`).
    pub fn plus_days(self, n: i64) -> Self {
        Self::from_days(self.to_days() + n)
    }

    /// DICOM DA form, `YYYYMMDD`.
    pub fn da(self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }

    /// Completed years between `self` (a birth date) and `on`.
    pub fn age_on(self, on: Date) -> u32 {
        let mut age = on.year - self.year;
        if (on.month, on.day) < (self.month, self.day) {
            age -= 1;
        }
        age.max(0) as u32
    }
}

/// DICOM TM form `HHMMSS` of a number of seconds after midnight (wrapping at 24 h).
pub(crate) fn tm(seconds: u32) -> String {
    let s = seconds % 86_400;
    format!("{:02}{:02}{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_days() {
        for d in [-800_000_i64, -1, 0, 1, 59, 60, 10_957, 19_723, 20_000] {
            assert_eq!(Date::from_days(d).to_days(), d);
        }
        assert_eq!(Date::from_days(0).da(), "19700101");
        assert_eq!(Date::from_days(19_782).da(), "20240229");
        assert_eq!(Date::from_days(19_783).da(), "20240301");
    }

    #[test]
    fn ages_and_times() {
        let born = Date {
            year: 1980,
            month: 6,
            day: 15,
        };
        assert_eq!(
            born.age_on(Date {
                year: 2024,
                month: 6,
                day: 14
            }),
            43
        );
        assert_eq!(
            born.age_on(Date {
                year: 2024,
                month: 6,
                day: 15
            }),
            44
        );
        assert_eq!(tm(3661), "010101");
    }
}
