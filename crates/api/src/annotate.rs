//! Where a key image or measurement report is written (issue 6): the study's home.
//!
//! `POST /api/v1/studies/{study}/key-images` and `…/measurements` write into a study held
//! here (the ingest path, [`Home::Here`]) or, with `?peer=NAME`, into a study held at a peer
//! and viewed through this site's proxy ([`Home::Peer`]). For a peer's study the document is
//! built the same way from the study's metadata as the peer holds it, and stored **at the
//! peer** by STOW-RS under the user's identity ([`PeerStudies`], wired to the exchange's
//! federation by the binary): a radiologist's notes belong with the study, where its other
//! readers find them, not in a copy here. Unmarking a key image there
//! (`DELETE …/key-images/{sop}?peer=NAME`) stores a rejection note (and a replacement key
//! image document) the same way; the peer lets a peer's user withdraw only the key image
//! documents it stored for that user (`Annotated::creator`, `vesalius_store::key_objects`).
//!
//! Rights for a peer's study: here, the user must be a user (session or token) whose role may
//! annotate their own organisation's studies (403 `forbidden` otherwise, audited denied); the
//! peer then decides with its own policy (a peer registered there with `may_query`, acting for
//! the user) and audits it there; its refusal is passed on as 403 with its reason. Both sides
//! audit: here `key-images` / `measurements` with `details.peer` (success, denied or failure),
//! there the `store` of the document by `peer:NAME for USER (ORG)`.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value as Json_, json};
use vesalius_auth::{Action, Caller, PrincipalKind};
use vesalius_core::ErrorKind;
use vesalius_store::audit::Outcome;
use vesalius_store::key_objects::{self, Rejections};

use crate::key_images::{audit, ingest_document, json_str, writable_study};
use crate::{ApiError, Services};

/// Reading and writing studies held at a peer, for a user of this site (implemented over the
/// exchange's federation and wired in by the binary; `vesalius_api` does not depend on the
/// exchange).
pub trait PeerStudies: Send + Sync {
    /// The instance metadata (DICOM JSON objects) of `study` at `peer`, read for `caller`.
    fn metadata<'a>(
        &'a self,
        caller: &'a Caller,
        peer: &'a str,
        study: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Json_>, ApiError>>;

    /// The actor id under which `peer` knows `caller` when this site writes for it there
    /// (`SITE/ACTOR`, [`vesalius_auth::peer::OnBehalf`]): the creator a key image document
    /// stored there names (`vesalius_store::key_objects`).
    fn creator(&self, caller: &Caller) -> String;

    /// Stores `part10` (the document `sop_uid` of `study`) at `peer` for `caller`.
    fn store<'a>(
        &'a self,
        caller: &'a Caller,
        peer: &'a str,
        study: &'a str,
        sop_uid: &'a str,
        part10: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), ApiError>>;
}

/// [`PeerStudies`] as an option of the API ([`crate::ApiOptions::peer_studies`]).
#[derive(Clone)]
pub struct PeerStudiesHook(pub Arc<dyn PeerStudies>);

impl std::fmt::Debug for PeerStudiesHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerStudiesHook")
    }
}

/// The query of the annotation endpoints: `?peer=NAME` for a study held at that peer.
#[derive(Deserialize, Default)]
pub(crate) struct AtPeer {
    #[serde(default)]
    pub(crate) peer: Option<String>,
}

/// An image of the study that a document may reference.
pub(crate) struct Image {
    pub(crate) series_uid: String,
    pub(crate) sop_class_uid: String,
    pub(crate) sop_uid: String,
    /// Where its Frame of Reference UID (0020,0052) is read from (a reformat's measurement
    /// names the frame of reference of its series, PS3.3 C.18.9 SCOORD3D): see
    /// [`Image::frame_of_reference`].
    pub(crate) frame: FrameOf,
}

/// An image's Frame of Reference UID: known (read from a peer's parsed metadata), or in the
/// stored DICOM JSON text of an instance held here, parsed only when asked (a key image or a
/// measurement on an acquired image never needs it).
pub(crate) enum FrameOf {
    Known(String),
    Metadata(String),
}

impl Image {
    /// The image's Frame of Reference UID, "" when none.
    pub(crate) fn frame_of_reference(&self) -> Result<String, ApiError> {
        match &self.frame {
            FrameOf::Known(uid) => Ok(uid.clone()),
            FrameOf::Metadata(text) => {
                let json: Json_ =
                    serde_json::from_str(text).map_err(crate::key_images::internal)?;
                Ok(json_str(&json, "00200052"))
            }
        }
    }
}

/// Where the study lives.
pub(crate) enum Home {
    /// Here, owned by `owner`.
    Here {
        owner: String,
        patient: Option<(String, String)>,
    },
    /// At the peer of that name.
    Peer(String),
}

/// A study the caller may annotate: where it is, its instances by SOP Instance UID and the
/// DICOM JSON of one of them (patient and study attributes of new documents).
pub(crate) struct Annotated {
    pub(crate) study: String,
    pub(crate) home: Home,
    pub(crate) images: BTreeMap<String, Image>,
    pub(crate) source: Json_,
    /// The study's current Key Object Selection Documents (DICOM JSON).
    pub(crate) key_objects: Vec<Json_>,
    /// The caller as the study's home knows it: the creator its key image documents name
    /// (`vesalius_store::key_objects`): the user's id here, `SITE/ACTOR` at a peer.
    pub(crate) creator: String,
}

/// The creator of the key image documents a caller makes in a study held here: the user (a
/// token's user), else the actor.
pub(crate) fn local_creator(c: &Caller) -> String {
    c.principal
        .user_id
        .clone()
        .unwrap_or_else(|| c.principal.actor.id.clone())
}

/// The study `study` as the caller may annotate it, here or (with `peer`) at that peer; `kind`
/// and `detail` name the request in the audit event of a refusal.
pub(crate) async fn annotated_study(
    sv: &Services,
    c: &Caller,
    study: &str,
    peer: Option<&str>,
    kind: &str,
    detail: Json_,
) -> Result<Annotated, ApiError> {
    let Some(peer) = peer.filter(|p| !p.is_empty()) else {
        let (owner, metas, study_ref) = writable_study(sv, c, study, kind, detail).await?;
        let source = serde_json::from_str(&metas[0].json).map_err(crate::key_images::internal)?;
        let key_objects = metas
            .iter()
            .filter(|m| m.instance.sop_class_uid == key_objects::KEY_OBJECT_SELECTION)
            .map(|m| serde_json::from_str(&m.json).map_err(crate::key_images::internal))
            .collect::<Result<Vec<Json_>, _>>()?;
        let images = metas
            .into_iter()
            .map(|m| {
                let i = m.instance;
                let image = Image {
                    series_uid: i.series_uid,
                    sop_class_uid: i.sop_class_uid,
                    sop_uid: i.sop_instance_uid.clone(),
                    frame: FrameOf::Metadata(m.json),
                };
                (i.sop_instance_uid, image)
            })
            .collect();
        return Ok(Annotated {
            study: study.to_owned(),
            home: Home::Here {
                owner,
                patient: study_ref.patient,
            },
            images,
            source,
            key_objects,
            creator: local_creator(c),
        });
    };
    let user = matches!(
        c.principal.kind,
        PrincipalKind::Session { .. } | PrincipalKind::Token { .. }
    );
    if !user || !crate::allowed_in_own_org(c, Action::Annotate) {
        let mut d = detail;
        d["peer"] = json!(peer);
        audit(sv, c.event(kind, Outcome::Denied, c.org(), Some(study), d)).await;
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!(
                "{} may not annotate studies (a peer's study is annotated by users whose role \
                 may annotate their organisation's studies)",
                c.principal.actor.name
            ),
        ));
    }
    let hook = hook(sv)?;
    let metas = match hook.0.metadata(c, peer, study).await {
        Ok(m) => m,
        Err(e) => {
            // The peer's refusal to show the study (or its absence) is this request's answer,
            // audited here like a refused write.
            let mut d = detail;
            d["peer"] = json!(peer);
            d["error"] = json!(e.message);
            let outcome = if e.kind == ErrorKind::Forbidden {
                Outcome::Denied
            } else {
                Outcome::Failure
            };
            audit(sv, c.event(kind, outcome, c.org(), Some(study), d)).await;
            return Err(e);
        }
    };
    let mut images = BTreeMap::new();
    for m in &metas {
        let (series_uid, sop_class_uid, sop_uid) = (
            json_str(m, "0020000E"),
            json_str(m, "00080016"),
            json_str(m, "00080018"),
        );
        if series_uid.is_empty() || sop_class_uid.is_empty() || sop_uid.is_empty() {
            continue;
        }
        images.insert(
            sop_uid.clone(),
            Image {
                series_uid,
                sop_class_uid,
                sop_uid,
                frame: FrameOf::Known(json_str(m, "00200052")),
            },
        );
    }
    let key_objects = metas
        .iter()
        .filter(|m| key_objects::is_key_object(m))
        .cloned()
        .collect();
    Ok(Annotated {
        study: study.to_owned(),
        home: Home::Peer(peer.to_owned()),
        images,
        source: metas.into_iter().next().unwrap_or_default(),
        key_objects,
        creator: hook.0.creator(c),
    })
}

fn hook(sv: &Services) -> Result<&PeerStudiesHook, ApiError> {
    sv.options.peer_studies.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorKind::NotFound,
            "this site has no peers to write to".to_owned(),
        )
    })
}

impl Annotated {
    /// The images named by `sops`, in that order; 400 `bad-request` for one that is not an
    /// instance of the study.
    pub(crate) fn images<'a>(
        &self,
        sops: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<&Image>, ApiError> {
        sops.map(|uid| {
            self.images.get(uid).ok_or_else(|| {
                crate::key_images::bad(format!("{uid} is not an instance of study {}", self.study))
            })
        })
        .collect()
    }

    /// The organisation an event about the study is recorded under (its owner here; the
    /// caller's for a study at a peer, which is then named in `detail`).
    pub(crate) fn audit_org(&self, c: &Caller, detail: &mut Json_) -> String {
        match &self.home {
            Home::Here { owner, .. } => owner.clone(),
            Home::Peer(peer) => {
                detail["peer"] = json!(peer);
                c.org().to_owned()
            }
        }
    }

    /// Saves the document (`sop_uid`, Part 10 `bytes`) at the study's home and audits `kind`
    /// with `detail`: here through the ingest path; at a peer by STOW-RS for the user (a
    /// refusal or failure there is audited here too, and passed on). Here, the ingest may
    /// carry out only rejections of the caller's own key image documents
    /// ([`Rejections::KeyImagesOf`] the caller, or anyone's with `any_creator`: an
    /// administrator's unmark); at a peer, the peer applies the same rule to its caller.
    pub(crate) async fn save(
        &self,
        sv: &Services,
        c: &Caller,
        sop_uid: &str,
        bytes: Vec<u8>,
        kind: &str,
        detail: Json_,
    ) -> Result<(), ApiError> {
        self.save_as(sv, c, sop_uid, bytes, kind, detail, false)
            .await
    }

    /// [`Annotated::save`], for any creator's key images when `any_creator` (an administrator
    /// of the study's organisation, here).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn save_as(
        &self,
        sv: &Services,
        c: &Caller,
        sop_uid: &str,
        bytes: Vec<u8>,
        kind: &str,
        mut detail: Json_,
        any_creator: bool,
    ) -> Result<(), ApiError> {
        let rejections = Rejections::KeyImagesOf((!any_creator).then(|| self.creator.clone()));
        let study = self.study.as_str();
        let (org, patient, result) = match &self.home {
            Home::Here { owner, patient } => {
                // The ingest path's error is the answer; only successes are audited here.
                ingest_document(sv, c, owner, study, sop_uid, &bytes, rejections).await?;
                (owner.clone(), patient.clone(), Ok(()))
            }
            Home::Peer(peer) => {
                detail["peer"] = json!(peer);
                let r = hook(sv)?.0.store(c, peer, study, sop_uid, bytes).await;
                let pid = json_str(&self.source, "00100020");
                let patient = (!pid.is_empty()).then(|| (json_str(&self.source, "00100021"), pid));
                (c.org().to_owned(), patient, r)
            }
        };
        let outcome = match &result {
            Ok(()) => Outcome::Success,
            Err(e) if e.kind == ErrorKind::Forbidden => Outcome::Denied,
            Err(e) => {
                detail["error"] = json!(e.message);
                Outcome::Failure
            }
        };
        let mut ev = c.event(kind, outcome, &org, Some(study), detail);
        ev.patient = patient;
        audit(sv, ev).await;
        result
    }
}
