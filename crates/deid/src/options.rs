//! What a de-identification run does: the project key, the PS3.15 E.3 options in use and the
//! choices the standard leaves to the de-identifier.

use std::fmt;

use serde::Serialize;

/// The options of the Basic Application Level Confidentiality Profile (PS3.15 E.3) that have a
/// column in Table E.1-1, with their codes from CID 7050 (PS3.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileOption {
    /// Retain Safe Private Option (E.3.10): keep the private attributes known to be safe.
    RetainSafePrivate,
    /// Retain UIDs Option (E.3.9).
    RetainUids,
    /// Retain Device Identity Option (E.3.8).
    RetainDeviceIdentity,
    /// Retain Institution Identity Option.
    RetainInstitutionIdentity,
    /// Retain Patient Characteristics Option (E.3.7): age, sex, size, weight and the like.
    RetainPatientCharacteristics,
    /// Retain Longitudinal Temporal Information with Full Dates Option (E.3.6).
    RetainLongitudinalFullDates,
    /// Retain Longitudinal Temporal Information with Modified Dates Option (E.3.6): dates are
    /// shifted by a per-patient number of days derived from the project key.
    RetainLongitudinalModifiedDates,
    /// Clean Descriptors Option (E.3.5): free-text descriptions are kept after removing the
    /// values the profile removes elsewhere in the data set.
    CleanDescriptors,
    /// Clean Structured Content Option (E.3.4): SR content is kept and cleaned recursively.
    CleanStructuredContent,
    /// Clean Graphics Option (E.3.3). A column of the table, but not implemented: graphics,
    /// curves and overlays are always removed (or replaced) as the Basic Profile says.
    CleanGraphics,
}

impl ProfileOption {
    /// Every option, in the column order of Table E.1-1.
    pub const ALL: [ProfileOption; 10] = [
        ProfileOption::RetainSafePrivate,
        ProfileOption::RetainUids,
        ProfileOption::RetainDeviceIdentity,
        ProfileOption::RetainInstitutionIdentity,
        ProfileOption::RetainPatientCharacteristics,
        ProfileOption::RetainLongitudinalFullDates,
        ProfileOption::RetainLongitudinalModifiedDates,
        ProfileOption::CleanDescriptors,
        ProfileOption::CleanStructuredContent,
        ProfileOption::CleanGraphics,
    ];

    /// The kebab-case name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileOption::RetainSafePrivate => "retain-safe-private",
            ProfileOption::RetainUids => "retain-uids",
            ProfileOption::RetainDeviceIdentity => "retain-device-identity",
            ProfileOption::RetainInstitutionIdentity => "retain-institution-identity",
            ProfileOption::RetainPatientCharacteristics => "retain-patient-characteristics",
            ProfileOption::RetainLongitudinalFullDates => "retain-longitudinal-full-dates",
            ProfileOption::RetainLongitudinalModifiedDates => "retain-longitudinal-modified-dates",
            ProfileOption::CleanDescriptors => "clean-descriptors",
            ProfileOption::CleanStructuredContent => "clean-structured-content",
            ProfileOption::CleanGraphics => "clean-graphics",
        }
    }

    /// The (code value, code meaning) of this option in CID 7050, scheme DCM.
    pub fn code(self) -> (&'static str, &'static str) {
        match self {
            ProfileOption::RetainSafePrivate => ("113111", "Retain Safe Private Option"),
            ProfileOption::RetainUids => ("113110", "Retain UIDs Option"),
            ProfileOption::RetainDeviceIdentity => ("113109", "Retain Device Identity Option"),
            ProfileOption::RetainInstitutionIdentity => {
                ("113112", "Retain Institution Identity Option")
            }
            ProfileOption::RetainPatientCharacteristics => {
                ("113108", "Retain Patient Characteristics Option")
            }
            ProfileOption::RetainLongitudinalFullDates => (
                "113106",
                "Retain Longitudinal Temporal Information Full Dates Option",
            ),
            ProfileOption::RetainLongitudinalModifiedDates => (
                "113107",
                "Retain Longitudinal Temporal Information Modified Dates Option",
            ),
            ProfileOption::CleanDescriptors => ("113105", "Clean Descriptors Option"),
            ProfileOption::CleanStructuredContent => ("113104", "Clean Structured Content Option"),
            ProfileOption::CleanGraphics => ("113103", "Clean Graphics Option"),
        }
    }
}

impl fmt::Display for ProfileOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The CID 7050 code of the profile itself.
pub const BASIC_PROFILE_CODE: (&str, &str) =
    ("113100", "Basic Application Confidentiality Profile");

/// The default largest date shift of the modified-dates option, in days.
pub const DEFAULT_MAX_DATE_SHIFT_DAYS: u32 = 365;

/// How to de-identify: the project key and the profile options.
///
/// Everything that replaces an identifier (UIDs, Patient ID and Name, AE titles, the date
/// shift) is derived from the key with HMAC-SHA256, so the same key gives the same
/// pseudonyms in every run and on every machine, and without the key they cannot be linked
/// back. Keep one key per project; a key is a secret like a password.
///
/// ```
/// use vesalius_deid::DeidOptions;
/// let opts = DeidOptions::new("project key from the vault")
///     .retain_patient_characteristics(true)
///     .retain_modified_dates(180)
///     .clean_descriptors(true);
/// assert_eq!(opts.enabled().len(), 3);
/// ```
#[derive(Clone)]
pub struct DeidOptions {
    pub(crate) key: Vec<u8>,
    enabled: Vec<ProfileOption>,
    pub(crate) max_date_shift_days: u32,
    pub(crate) prefer_removal: bool,
    pub(crate) pseudonym_prefix: String,
}

impl fmt::Debug for DeidOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeidOptions")
            .field("key", &"<redacted>")
            .field("enabled", &self.enabled)
            .field("max_date_shift_days", &self.max_date_shift_days)
            .field("prefer_removal", &self.prefer_removal)
            .field("pseudonym_prefix", &self.pseudonym_prefix)
            .finish()
    }
}

impl DeidOptions {
    /// The Basic Profile alone, with the project key `key` (must not be empty).
    pub fn new(key: impl AsRef<[u8]>) -> Self {
        DeidOptions {
            key: key.as_ref().to_vec(),
            enabled: Vec::new(),
            max_date_shift_days: DEFAULT_MAX_DATE_SHIFT_DAYS,
            prefer_removal: false,
            pseudonym_prefix: "ANON".into(),
        }
    }

    /// Turns an option on or off. The two longitudinal temporal options exclude each other:
    /// turning one on turns the other off.
    pub fn option(mut self, option: ProfileOption, on: bool) -> Self {
        self.enabled.retain(|&o| o != option);
        if on {
            let other = match option {
                ProfileOption::RetainLongitudinalFullDates => {
                    Some(ProfileOption::RetainLongitudinalModifiedDates)
                }
                ProfileOption::RetainLongitudinalModifiedDates => {
                    Some(ProfileOption::RetainLongitudinalFullDates)
                }
                _ => None,
            };
            self.enabled.retain(|&o| Some(o) != other);
            self.enabled.push(option);
            self.enabled.sort();
        }
        self
    }

    /// Retain Longitudinal Temporal Information with Full Dates.
    pub fn retain_full_dates(self, on: bool) -> Self {
        self.option(ProfileOption::RetainLongitudinalFullDates, on)
    }

    /// Retain Longitudinal Temporal Information with Modified Dates: every date of a patient is
    /// moved back by the same number of days, 1 to `max_shift_days` (0 means the default,
    /// [`DEFAULT_MAX_DATE_SHIFT_DAYS`]), derived from the key and the patient.
    pub fn retain_modified_dates(mut self, max_shift_days: u32) -> Self {
        self.max_date_shift_days = if max_shift_days == 0 {
            DEFAULT_MAX_DATE_SHIFT_DAYS
        } else {
            max_shift_days
        };
        self.option(ProfileOption::RetainLongitudinalModifiedDates, true)
    }

    /// Retain Patient Characteristics.
    pub fn retain_patient_characteristics(self, on: bool) -> Self {
        self.option(ProfileOption::RetainPatientCharacteristics, on)
    }

    /// Retain Device Identity.
    pub fn retain_device_identity(self, on: bool) -> Self {
        self.option(ProfileOption::RetainDeviceIdentity, on)
    }

    /// Retain Institution Identity.
    pub fn retain_institution_identity(self, on: bool) -> Self {
        self.option(ProfileOption::RetainInstitutionIdentity, on)
    }

    /// Retain UIDs.
    pub fn retain_uids(self, on: bool) -> Self {
        self.option(ProfileOption::RetainUids, on)
    }

    /// Clean Descriptors.
    pub fn clean_descriptors(self, on: bool) -> Self {
        self.option(ProfileOption::CleanDescriptors, on)
    }

    /// Clean Structured Content.
    pub fn clean_structured_content(self, on: bool) -> Self {
        self.option(ProfileOption::CleanStructuredContent, on)
    }

    /// Retain Safe Private: keep the private attributes of [`crate::SAFE_PRIVATE`].
    pub fn retain_safe_private(self, on: bool) -> Self {
        self.option(ProfileOption::RetainSafePrivate, on)
    }

    /// How to read the combined codes (X/Z, X/D, Z/D, X/Z/D, X/Z/U*), which depend on the
    /// attribute's Type in the IOD. By default (`false`) the choice that keeps any IOD
    /// conformant is made: X/Z → Z, Z/D, X/D and X/Z/D → D, X/Z/U* → U*. With `true` the
    /// first alternative is taken (X, or Z for Z/D), which removes more but may leave a
    /// Type 1 or 2 attribute missing.
    pub fn prefer_removal(mut self, on: bool) -> Self {
        self.prefer_removal = on;
        self
    }

    /// The prefix of patient pseudonyms (default `ANON`): Patient ID becomes
    /// `{prefix}-{20 hex digits}` and Patient's Name the same string.
    pub fn pseudonym_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.pseudonym_prefix = prefix.into();
        self
    }

    /// The options in use, in column order.
    pub fn enabled(&self) -> &[ProfileOption] {
        &self.enabled
    }

    /// Whether `option` is in use.
    pub fn is_enabled(&self, option: ProfileOption) -> bool {
        self.enabled.contains(&option)
    }

    /// Whether combined codes resolve to removal (see [`DeidOptions::prefer_removal`]).
    pub fn prefers_removal(&self) -> bool {
        self.prefer_removal
    }

    /// The largest date shift in days of the modified-dates option.
    pub fn max_date_shift_days(&self) -> u32 {
        self.max_date_shift_days
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_options_exclude_each_other() {
        let o = DeidOptions::new("k")
            .retain_full_dates(true)
            .retain_modified_dates(10);
        assert_eq!(
            o.enabled(),
            &[ProfileOption::RetainLongitudinalModifiedDates]
        );
        let o = o.retain_full_dates(true);
        assert_eq!(o.enabled(), &[ProfileOption::RetainLongitudinalFullDates]);
        assert_eq!(o.retain_full_dates(false).enabled(), &[]);
    }

    #[test]
    fn debug_redacts_the_key() {
        let s = format!("{:?}", DeidOptions::new("very secret"));
        assert!(!s.contains("very secret"), "{s}");
    }

    #[test]
    fn codes_are_cid_7050_and_meanings_fit_lo() {
        let mut seen = std::collections::HashSet::new();
        for o in ProfileOption::ALL {
            let (v, m) = o.code();
            assert!(v.starts_with("1131") && seen.insert(v));
            assert!(m.len() <= 64, "{m}");
        }
    }
}
