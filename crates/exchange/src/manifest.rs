//! Study manifests (docs/exchange.md): the sender lists what it sent (SOP Instance UID, size,
//! SHA-256), the receiver answers what it holds with the same hash, what is missing and what
//! differs, and whether the study is complete. A resumed transfer asks first and sends only the
//! missing; the last manifest of a study (`final`) marks it complete at the receiver.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use vesalius_store::Index;
use vesalius_store::model::StoredInstance;
use vesalius_store::query::{Access, Scope};

/// Most entries one manifest may list (a study with more is described in several manifests).
pub const MAX_ENTRIES: usize = 100_000;

/// One instance of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// SHA-256 hex of the Part 10 bytes as stored at the sender.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// What the sender posts to `POST /api/v1/exchange/manifest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Study Instance UID.
    pub study_uid: String,
    /// The transfer's priority (carried to the receiver: the hub sees a stroke study as such).
    pub priority: i32,
    /// The sender has nothing more pending for this study: when everything listed is present,
    /// the receiver marks the study complete and raises "study complete".
    #[serde(rename = "final")]
    pub final_: bool,
    /// The instances.
    pub instances: Vec<ManifestEntry>,
}

/// The receiver's answer (signed with its site key, header `X-Vesalius-Signature`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestAnswer {
    /// Study Instance UID.
    pub study_uid: String,
    /// Listed instances held with the same SHA-256: as the current version, or as a prior
    /// version the receiver superseded (a patient link at the receiver rewrote it).
    pub present: Vec<String>,
    /// Listed instances not held.
    pub missing: Vec<String>,
    /// Listed instances held with different bytes (the receiver keeps both versions when the
    /// sender sends again; DESIGN.md).
    pub mismatched: Vec<String>,
    /// Everything listed is present.
    pub complete: bool,
    /// Instances of the study the receiver holds in all (listed or not).
    pub held: u64,
}

/// Compares `manifest` with what `index` holds of the study within `access`.
pub async fn check(
    index: &dyn Index,
    access: Option<Access>,
    manifest: &Manifest,
) -> vesalius_store::Result<ManifestAnswer> {
    let access_again = access.clone();
    let held: Vec<StoredInstance> = index
        .instances(&Scope {
            access,
            ..Scope::study(manifest.study_uid.clone())
        })
        .await?;
    let by_sop: HashMap<&str, &StoredInstance> = held
        .iter()
        .map(|i| (i.sop_instance_uid.as_str(), i))
        .collect();
    let mut a = ManifestAnswer {
        study_uid: manifest.study_uid.clone(),
        held: held.len() as u64,
        ..Default::default()
    };
    let mut differ = Vec::new();
    for e in &manifest.instances {
        match by_sop.get(e.sop_instance_uid.as_str()) {
            Some(i) if i.sha256.eq_ignore_ascii_case(&e.sha256) => {
                a.present.push(e.sop_instance_uid.clone())
            }
            Some(_) => differ.push(e),
            None => a.missing.push(e.sop_instance_uid.clone()),
        }
    }
    if !differ.is_empty() {
        // The sender's bytes may be held as a prior version that the receiver superseded
        // itself (a patient link rewrote the instance, docs/patients.md): they were delivered,
        // and sending them again would undo the receiver's change.
        let prior: HashSet<(String, String)> = index
            .prior_versions(&Scope {
                access: access_again,
                ..Scope::study(manifest.study_uid.clone())
            })
            .await?
            .into_iter()
            .map(|p| {
                (
                    p.instance.sop_instance_uid,
                    p.instance.sha256.to_ascii_lowercase(),
                )
            })
            .collect();
        for e in differ {
            let key = (e.sop_instance_uid.clone(), e.sha256.to_ascii_lowercase());
            if prior.contains(&key) {
                a.present.push(key.0);
            } else {
                a.mismatched.push(key.0);
            }
        }
    }
    a.complete = a.missing.is_empty() && a.mismatched.is_empty();
    Ok(a)
}
