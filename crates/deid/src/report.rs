//! What a de-identification did to one instance.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::options::ProfileOption;

/// What was done to an attribute. Attributes in sequences count separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Applied {
    /// Removed (X).
    Removed,
    /// Replaced by a zero-length value or an empty sequence (Z).
    Emptied,
    /// Replaced by a dummy value (D).
    Dummy,
    /// Kept (K; sequences are cleaned recursively).
    Kept,
    /// Cleaned (C): dates shifted, free text scrubbed, AE titles replaced, sequences cleaned.
    Cleaned,
    /// UIDs replaced by their keyed pseudonyms (U).
    UidReplaced,
    /// Patient ID or Patient's Name replaced by the keyed patient pseudonym.
    Pseudonymised,
}

/// Why an instance needs a human look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WarningKind {
    /// Burned In Annotation (0028,0301) is YES: identifying text may be in the pixels, which
    /// this de-identifier does not clean.
    BurnedInAnnotation,
    /// Burned In Annotation is absent in a kind of image that often carries burned-in text
    /// (secondary capture, ultrasound).
    PossibleBurnedInAnnotation,
    /// Recognizable Visual Features (0028,0302) is YES (e.g. a face can be reconstructed).
    RecognizableVisualFeatures,
    /// Private attributes were removed (they are unknown, or not on the safe list).
    PrivateAttributesRemoved,
    /// A date could not be shifted (not a full date) and was emptied instead.
    DateNotShifted,
    /// A binary attribute that should have been cleaned was removed (binary cannot be cleaned).
    BinaryRemoved,
}

/// One warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// What kind.
    pub kind: WarningKind,
    /// Details for a person.
    pub message: String,
}

/// The outcome of de-identifying one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeidReport {
    /// The new SOP Instance UID, if the instance has one.
    pub sop_instance_uid: Option<String>,
    /// The options used.
    pub options: Vec<ProfileOption>,
    /// How many attributes (at any depth) had each action applied.
    pub counts: BTreeMap<Applied, usize>,
    /// What needs a human look.
    pub warnings: Vec<Warning>,
}

impl DeidReport {
    pub(crate) fn count(&mut self, a: Applied) {
        *self.counts.entry(a).or_default() += 1;
    }

    pub(crate) fn warn(&mut self, kind: WarningKind, message: impl Into<String>) {
        self.warnings.push(Warning {
            kind,
            message: message.into(),
        });
    }

    /// Whether any warning of `kind` was raised.
    pub fn has_warning(&self, kind: WarningKind) -> bool {
        self.warnings.iter().any(|w| w.kind == kind)
    }

    /// The count of `a`.
    pub fn counted(&self, a: Applied) -> usize {
        self.counts.get(&a).copied().unwrap_or(0)
    }
}
