//! Share links (see one study without an account) and guest upload links (upload into an
//! organisation's quarantine inbox).
//!
//! A link is `(id, secret)`: the id is public (URLs, audit), the secret is 32 random bytes of
//! which the directory keeps the SHA-256. A share link may further require a passcode (argon2id
//! like a password) and/or the patient's birth date; wrong answers are counted per link and lock
//! it for a while ([`super::AuthOptions::link_max_failures`]), because a 6-digit passcode or a
//! birth date is guessable while the secret is not (wrong secrets are refused but not counted). Every use is audited (`link-use`), successful
//! opens once per link, source and study per dedupe window.

use serde_json::json;
use vesalius_store::audit::{Actor, ActorKind, Outcome};
use vesalius_store::directory::{DirectoryChange, ShareLink, UploadLink};

use super::{Authenticator, Origin};
use crate::error::{Error, Result};
use crate::password;
use crate::policy::{Action, Resource, StudyRef};
use crate::principal::{Principal, PrincipalKind};
use crate::secret::{constant_time_eq, random_id, random_secret, sha256_hex};

/// Options of a new share link.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShareLinkOptions<'a> {
    /// View and download, not only view.
    pub allow_download: bool,
    /// A passcode the visitor must type (at least 4 characters).
    pub passcode: Option<&'a str>,
    /// Patient access: the birth date (YYYYMMDD) the visitor must type.
    pub birth_date: Option<&'a str>,
    /// Lifetime, ms (at most [`super::AuthOptions::max_link_ttl_ms`]).
    pub ttl_ms: i64,
}

fn link_actor(id: &str, name: &str, org: &str) -> Actor {
    Actor {
        kind: ActorKind::Link,
        id: id.to_owned(),
        name: name.to_owned(),
        org: org.to_owned(),
        role: String::new(),
    }
}

/// Lifetime of a share-link pass, ms (the link's own expiry ends it sooner).
pub const LINK_PASS_MS: i64 = 2 * 60 * 60 * 1000;

/// Prefix of guest upload tokens: `vsu_{link id}.{secret}`, sent as `Authorization: Bearer` by
/// STOW-RS clients.
pub const UPLOAD_TOKEN_PREFIX: &str = "vsu_";

/// The bearer token of an upload link.
pub fn upload_token(link_id: &str, secret: &str) -> String {
    format!("{UPLOAD_TOKEN_PREFIX}{link_id}.{secret}")
}

/// `(link id, secret)` of an upload token, `None` when `text` is not one.
pub fn parse_upload_token(text: &str) -> Option<(&str, &str)> {
    let (id, secret) = text.strip_prefix(UPLOAD_TOKEN_PREFIX)?.split_once('.')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

fn pass_mac(key: &[u8; 32], link_id: &str, expires_ms: i64) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(b"vesalius-share-pass\0");
    mac.update(link_id.as_bytes());
    mac.update(b"\0");
    mac.update(expires_ms.to_string().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Digits of a typed birth date (`1970-01-31`, `19700131`, `1970/01/31` compare alike).
fn date_digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

impl Authenticator {
    fn check_link_ttl(&self, ttl_ms: i64) -> Result<()> {
        if ttl_ms <= 0 || ttl_ms > self.opts.max_link_ttl_ms {
            return Err(Error::BadRequest(format!(
                "link lifetime must be between 1 ms and {} ms",
                self.opts.max_link_ttl_ms
            )));
        }
        Ok(())
    }

    /// Creates a share link on `study` (audited `share-create`); returns the record and the
    /// secret to hand out once (with the id, e.g. in a URL and a QR code).
    pub async fn create_share_link(
        &self,
        actor: &Principal,
        study: &StudyRef,
        opts: ShareLinkOptions<'_>,
        origin: Origin<'_>,
    ) -> Result<(ShareLink, String)> {
        self.require(
            actor,
            Action::CreateShareLink,
            &Resource::Study(study.clone()),
        )
        .await?;
        self.check_link_ttl(opts.ttl_ms)?;
        let passcode_hash = match opts.passcode {
            Some(p) if p.chars().count() < 4 || p.len() > password::MAX_LEN => {
                return Err(Error::BadRequest(
                    "passcodes have 4 to 1024 characters".into(),
                ));
            }
            Some(p) => {
                let (p, params) = (p.to_owned(), self.opts.password_params);
                Some(Self::blocking(move || password::hash(&p, params)).await??)
            }
            None => None,
        };
        let birth_date_check = match opts.birth_date.map(date_digits) {
            Some(d) if d.len() != 8 => {
                return Err(Error::BadRequest("birth dates are YYYYMMDD".into()));
            }
            d => d,
        };
        let now = self.now_ms();
        let secret = random_secret();
        let link = ShareLink {
            id: random_id(12),
            secret_hash: sha256_hex(&secret),
            org: study.org.clone(),
            study_uid: study.study_uid.clone(),
            allow_download: opts.allow_download,
            passcode_hash,
            birth_date_check,
            created_by: actor.actor.id.clone(),
            created_ms: now,
            expires_ms: now.saturating_add(opts.ttl_ms),
            revoked: false,
        };
        let mut ev = self.event(
            actor.actor.clone(),
            "share-create",
            Outcome::Success,
            origin,
            json!({
                "link_id": link.id,
                "allow_download": link.allow_download,
                "passcode": link.passcode_hash.is_some(),
                "birth_date_check": link.birth_date_check.is_some(),
                "expires_ms": link.expires_ms,
            }),
        );
        ev.org = study.org.clone();
        ev.study_uid = Some(study.study_uid.clone());
        ev.patient = study.patient.clone();
        self.dir
            .apply(vec![DirectoryChange::PutShareLink(link.clone())], vec![ev])
            .await?;
        Ok((link, secret))
    }

    /// Revokes a share link (audited `share-revoke`): its creator or a manager of its
    /// organisation.
    pub async fn revoke_share_link(
        &self,
        actor: &Principal,
        id: &str,
        origin: Origin<'_>,
    ) -> Result<()> {
        let link = self
            .dir
            .share_link(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("share link {id}")))?;
        let (org, study) = (link.org.clone(), Some(link.study_uid.clone()));
        let change = DirectoryChange::RevokeShareLink(link.id);
        self.revoke_link(actor, &link.created_by, org, study, change, origin)
            .await
    }

    /// Revokes a link of `org` made by `created_by`: its creator (a user) or a manager of the
    /// organisation may; audited `share-revoke` or `upload-link-revoke`.
    async fn revoke_link(
        &self,
        actor: &Principal,
        created_by: &str,
        org: String,
        study_uid: Option<String>,
        change: DirectoryChange,
        origin: Origin<'_>,
    ) -> Result<()> {
        if actor.actor.id != created_by || actor.user_id.is_none() {
            self.require(actor, Action::ManageOrg, &Resource::org(org.clone()))
                .await?;
        }
        let (action, id) = match &change {
            DirectoryChange::RevokeShareLink(id) => ("share-revoke", id.clone()),
            DirectoryChange::RevokeUploadLink(id) => ("upload-link-revoke", id.clone()),
            _ => return Err(Error::BadRequest("not a link revocation".into())),
        };
        let mut ev = self.event(
            actor.actor.clone(),
            action,
            Outcome::Success,
            origin,
            json!({ "link_id": id }),
        );
        ev.org = org;
        ev.study_uid = study_uid;
        self.dir.apply(vec![change], vec![ev]).await?;
        Ok(())
    }

    /// Opens a share link: checks the secret, expiry, revocation, passcode and birth date, with
    /// failures counted per link (locked after too many). Audited `link-use`.
    pub async fn share_link_open(
        &self,
        id: &str,
        secret: &str,
        passcode: Option<&str>,
        birth_date: Option<&str>,
        origin: Origin<'_>,
    ) -> Result<Principal> {
        let now = self.now_ms();
        let key = format!("link:{id}");
        let Some(link) = (if id.len() <= 64 {
            self.dir.share_link(id).await?
        } else {
            None
        }) else {
            return Err(self
                .link_refused(id, "", "unknown-link", origin, Error::BadCredentials)
                .await);
        };
        // A wrong secret is not counted: the secret cannot be guessed, and counting it would let
        // anyone who saw the link id (audit trail, logs) lock the patient out.
        if !(secret.len() <= 128 && constant_time_eq(sha256_hex(secret), &link.secret_hash)) {
            return Err(self
                .link_refused(id, &link.org, "wrong-secret", origin, Error::BadCredentials)
                .await);
        }
        if link.revoked {
            return Err(self
                .link_refused(id, &link.org, "revoked", origin, Error::Revoked("link"))
                .await);
        }
        if now >= link.expires_ms {
            return Err(self
                .link_refused(id, &link.org, "expired", origin, Error::Expired("link"))
                .await);
        }
        let locked = self.dir.throttle_state(&key, now).await?.locked_until_ms;
        if locked > now {
            return Err(self
                .link_refused(
                    id,
                    &link.org,
                    "locked",
                    origin,
                    Error::Locked { until_ms: locked },
                )
                .await);
        }
        if !self.check_link_answers(&link, passcode, birth_date).await? {
            let why = "wrong-passcode-or-birth-date";
            let o = &self.opts;
            let st = self
                .dir
                .throttle_fail(
                    &key,
                    now,
                    o.login_window_ms,
                    o.link_max_failures,
                    o.link_lockout_ms,
                )
                .await?;
            let why = if st.locked_until_ms > now {
                format!("{why}; link locked")
            } else {
                why.to_owned()
            };
            return Err(self
                .link_refused(id, &link.org, &why, origin, Error::BadCredentials)
                .await);
        }
        self.dir.throttle_reset(&key).await?;
        let p = Principal::share_link(&link.id, &link.org, &link.study_uid, link.allow_download);
        if self.dedupe.first_in_window(
            &format!("{id}@{}", origin.source),
            "link-use",
            &link.org,
            &link.study_uid,
            now,
        ) {
            let mut ev = self.event(
                p.actor.clone(),
                "link-use",
                Outcome::Success,
                origin,
                json!({ "link": "share" }),
            );
            ev.org = link.org.clone();
            ev.study_uid = Some(link.study_uid.clone());
            self.audit.append(vec![ev]).await?;
        }
        Ok(p)
    }

    async fn check_link_answers(
        &self,
        link: &ShareLink,
        passcode: Option<&str>,
        birth_date: Option<&str>,
    ) -> Result<bool> {
        if let Some(want) = &link.birth_date_check {
            let typed = birth_date.map(date_digits).unwrap_or_default();
            if !constant_time_eq(typed, want) {
                return Ok(false);
            }
        }
        match (&link.passcode_hash, passcode) {
            (None, _) => Ok(true),
            (Some(_), None) => Ok(false),
            (Some(h), Some(p)) => {
                let (h, p) = (h.clone(), p.to_owned());
                Self::blocking(move || password::verify(&p, &h)).await
            }
        }
    }

    /// Audits a refused link use and hands back the error to return.
    async fn link_refused(
        &self,
        id: &str,
        org: &str,
        why: &str,
        origin: Origin<'_>,
        err: Error,
    ) -> Error {
        let mut ev = self.event(
            link_actor(&super::truncate(id, 64), "link", org),
            "link-use",
            Outcome::Denied,
            origin,
            json!({ "reason": why }),
        );
        ev.org = org.to_owned();
        if let Err(e) = self.audit.append(vec![ev]).await {
            return e.into();
        }
        err
    }

    /// A pass for a share-link principal that [`Self::share_link_open`] just admitted: the value
    /// of [`crate::cookie::LINK_COOKIE`], `{link id}.{expiry ms}.{HMAC}`, so the visitor's next
    /// requests (the images of the page) need neither the secret nor the passcode again.
    /// Returns the pass and its lifetime in seconds; `None` for other principals.
    pub async fn share_link_pass(&self, p: &Principal) -> Result<Option<(String, i64)>> {
        let PrincipalKind::ShareLink { link_id, .. } = &p.kind else {
            return Ok(None);
        };
        let Some(link) = self.dir.share_link(link_id).await? else {
            return Ok(None);
        };
        let now = self.now_ms();
        let exp = link.expires_ms.min(now.saturating_add(LINK_PASS_MS));
        let mac = pass_mac(&self.opts.link_key.0, link_id, exp);
        Ok(Some((format!("{link_id}.{exp}.{mac}"), (exp - now) / 1000)))
    }

    /// The share-link principal of a pass made by [`Self::share_link_pass`], if the pass is
    /// genuine and unexpired and the link still valid (revocation ends passes at once).
    pub async fn from_share_link_pass(&self, pass: &str) -> Result<Principal> {
        let mut parts = pass.splitn(3, '.');
        let (Some(id), Some(exp), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::BadCredentials);
        };
        let exp: i64 = exp.parse().map_err(|_| Error::BadCredentials)?;
        if id.len() > 64 || !constant_time_eq(pass_mac(&self.opts.link_key.0, id, exp), mac) {
            return Err(Error::BadCredentials);
        }
        let now = self.now_ms();
        if now >= exp {
            return Err(Error::Expired("link pass"));
        }
        let link = self
            .dir
            .share_link(id)
            .await?
            .ok_or(Error::BadCredentials)?;
        if link.revoked {
            return Err(Error::Revoked("link"));
        }
        if now >= link.expires_ms {
            return Err(Error::Expired("link"));
        }
        Ok(Principal::share_link(
            &link.id,
            &link.org,
            &link.study_uid,
            link.allow_download,
        ))
    }

    /// Revokes a guest upload link (audited `upload-link-revoke`): its creator or a manager of
    /// its organisation.
    pub async fn revoke_upload_link(
        &self,
        actor: &Principal,
        id: &str,
        origin: Origin<'_>,
    ) -> Result<()> {
        let link = self
            .dir
            .upload_link(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("upload link {id}")))?;
        let change = DirectoryChange::RevokeUploadLink(link.id);
        self.revoke_link(actor, &link.created_by, link.org, None, change, origin)
            .await
    }

    /// Creates a guest upload link into `org` (audited `upload-link-create`).
    pub async fn create_upload_link(
        &self,
        actor: &Principal,
        org: &str,
        label: &str,
        max_bytes: u64,
        ttl_ms: i64,
        origin: Origin<'_>,
    ) -> Result<(UploadLink, String)> {
        self.require(actor, Action::CreateUploadLink, &Resource::org(org))
            .await?;
        self.check_link_ttl(ttl_ms)?;
        if max_bytes == 0 {
            return Err(Error::BadRequest(
                "an upload link needs a size limit".into(),
            ));
        }
        let now = self.now_ms();
        let secret = random_secret();
        let link = UploadLink {
            id: random_id(12),
            secret_hash: sha256_hex(&secret),
            org: org.to_owned(),
            label: label.to_owned(),
            max_bytes,
            used_bytes: 0,
            created_by: actor.actor.id.clone(),
            created_ms: now,
            expires_ms: now.saturating_add(ttl_ms),
            revoked: false,
        };
        let mut ev = self.event(
            actor.actor.clone(),
            "upload-link-create",
            Outcome::Success,
            origin,
            json!({ "link_id": link.id, "label": label, "max_bytes": max_bytes, "expires_ms": link.expires_ms }),
        );
        ev.org = org.to_owned();
        self.dir
            .apply(vec![DirectoryChange::PutUploadLink(link.clone())], vec![ev])
            .await?;
        Ok((link, secret))
    }

    /// Opens an upload link for an upload of `bytes` (the declared or, for streamed uploads, the
    /// maximum expected size): refused when the secret is wrong, the link revoked or expired, or
    /// `bytes` more than it still accepts. Refusals are audited (`link-use`).
    pub async fn upload_link_open(
        &self,
        id: &str,
        secret: &str,
        bytes: u64,
        origin: Origin<'_>,
    ) -> Result<Principal> {
        let link = match (id.len() <= 64).then_some(()) {
            Some(()) => self.dir.upload_link(id).await?,
            None => None,
        };
        let Some(link) = link.filter(|l| {
            secret.len() <= 128 && constant_time_eq(sha256_hex(secret), &l.secret_hash)
        }) else {
            return Err(self
                .link_refused(
                    id,
                    "",
                    "unknown-link-or-wrong-secret",
                    origin,
                    Error::BadCredentials,
                )
                .await);
        };
        if link.revoked {
            return Err(self
                .link_refused(id, &link.org, "revoked", origin, Error::Revoked("link"))
                .await);
        }
        if self.now_ms() >= link.expires_ms {
            return Err(self
                .link_refused(id, &link.org, "expired", origin, Error::Expired("link"))
                .await);
        }
        let remaining = link.max_bytes.saturating_sub(link.used_bytes);
        if bytes > remaining {
            return Err(self
                .link_refused(
                    id,
                    &link.org,
                    "too-large",
                    origin,
                    Error::TooLarge { bytes, remaining },
                )
                .await);
        }
        Ok(Principal::upload_link(&link.id, &link.org))
    }

    /// Records an accepted upload through an upload link: adds `bytes` to the link's total
    /// (atomically refused past its limit) and audits `upload` in the same transaction.
    pub async fn record_upload(
        &self,
        principal: &Principal,
        bytes: u64,
        study_uid: Option<&str>,
        origin: Origin<'_>,
    ) -> Result<()> {
        let PrincipalKind::UploadLink { link_id } = &principal.kind else {
            return Err(Error::Forbidden("not an upload link".into()));
        };
        let mut ev = self.event(
            principal.actor.clone(),
            "upload",
            Outcome::Success,
            origin,
            json!({ "bytes": bytes, "quarantine": true }),
        );
        ev.org = principal.org_str().to_owned();
        ev.study_uid = study_uid.map(str::to_owned);
        self.dir
            .apply(
                vec![DirectoryChange::AddUploadBytes {
                    id: link_id.clone(),
                    bytes,
                }],
                vec![ev],
            )
            .await?;
        Ok(())
    }
}
