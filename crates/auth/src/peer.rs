//! Site-to-site authentication (issue 5): every request one Vesalius site makes of another
//! carries a token signed with the calling site's key, and the answers that matter come back
//! signed with the answering site's key.
//!
//! # Keys
//! A site's peer key is an Ed25519 key pair whose seed is derived from the site key
//! ([`SiteKey::derive_key`]`("peer-ed25519")`, [`SiteIdentity::from_site_key`]): every node of a
//! site, and every restart, has the same key, and the site keeps one secret file. The public key
//! is written `ed25519:` + unpadded base64url of its 32 bytes ([`SiteIdentity::public_key`]);
//! each site registers the other's public key with its [`vesalius_store::registry::Peer`].
//!
//! # Request tokens
//! Sent as `Authorization: Vesalius-Peer <token>` ([`AUTH_SCHEME`]), where
//! `token = b64url(claims) "." b64url(signature)`: the claims are a JSON object
//! ([`PeerClaims`]) and the signature is Ed25519 over exactly the claims bytes that were
//! encoded (the receiver never re-serialises). The claims bind the token to
//! - `iss`: the calling site's name, which is the name the receiver registered it under, and
//!   `iss_pk`: its public key, which must equal the registered one;
//! - `aud`: the receiver's public key (a token for one site is worthless at another);
//! - `m`, `p`: the HTTP method and the path and query exactly as sent (the receiver compares them
//!   with its request's `uri.path_and_query()`; a proxy that rewrites paths breaks this);
//! - `iat`, `exp`: issue and expiry time, **ms** since the Unix epoch; tokens are made with a
//!   lifetime of [`TOKEN_TTL_MS`] (2 min) and refused when it exceeds [`MAX_LIFETIME_MS`];
//! - `jti`: 128 random bits, hex, naming the request (the answer's signature covers it);
//! - optionally `sub`, `sub_org`, `sub_name`: the user at the calling site on whose behalf a
//!   federated query runs ([`OnBehalf`]), for the receiver's audit trail. The receiver trusts
//!   them only as the calling site's statement.
//!
//! [`verify_request`] accepts a token only when it is at most [`MAX_TOKEN_BYTES`], the issuer is
//! registered, `iss_pk` is its registered key, the signature verifies with that key (strict
//! Ed25519: no malleable signatures, no weak keys), `aud` is the receiver's key, `m`/`p` are the
//! request's, and the time rule holds.
//!
//! # Clock skew
//! With `max_skew` (60 s at the [`crate::Authenticator`]): valid while
//! `iat - max_skew <= now <= exp + max_skew`. Sites must keep their clocks within a minute of
//! each other (NTP); beyond that, every request fails with `not-yet-valid` or `expired`.
//!
//! # Replay
//! The receiver does not remember tokens, so a captured token can be replayed, but only against
//! the same site, for the same method and path and query, while `now` is within
//! `[iat - skew, exp + skew]` (4 minutes for tokens made here). The request **body is not
//! signed**: within that window a captured token would carry another body to the same path.
//! Both need the plain text of a request, so peers must be reached over HTTPS except on loopback
//! (a [`vesalius_store::registry::Peer::base_url`] is plain `http` only on loopback), and
//! handlers should keep peer deliveries idempotent (instances are keyed by their UIDs).
//!
//! # Signed answers
//! The answering site signs `"vesalius-peer-response\n" + jti + "\n" + hex(sha256(body))`
//! ([`SiteIdentity::sign_response`]) and sends the base64url signature in
//! `X-Vesalius-Signature` ([`SIGNATURE_HEADER`]); the caller checks it with the peer's registered
//! key and its own request's `jti` ([`verify_response`]), so an answer (a manifest answer, a
//! ping) provably comes from the peer it meant and belongs to that request. The status line and
//! headers are not signed: what must be trusted goes into the body. Request claims are JSON
//! objects (they start with `{`) and answers start with `vesalius-peer-response`, so neither
//! signature can be passed off as the other.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vesalius_core::ErrorKind;

use crate::audit_chain::SiteKey;
use crate::principal::Principal;

/// The `Authorization` scheme of peer requests.
pub const AUTH_SCHEME: &str = "Vesalius-Peer";
/// The header carrying an answer's signature (lower case, as HTTP/2 sends it).
pub const SIGNATURE_HEADER: &str = "x-vesalius-signature";
/// Private Creator (0009,0010) of the block whose (0009,1001) holds a stored instance's SHA-256
/// in a site's STOW-RS answers to peers (PS3.5 7.8.1; signed with [`SIGNATURE_HEADER`]).
pub const HASH_CREATOR: &str = "VESALIUS 1.0";
/// The DICOM JSON key of [`HASH_CREATOR`]'s Private Creator element.
pub const HASH_CREATOR_TAG: &str = "00090010";
/// The DICOM JSON key of the SHA-256 element (LO, 64 hex digits).
pub const HASH_TAG: &str = "00091001";
/// The purpose under which the peer key's seed is derived from the site key.
pub const KEY_PURPOSE: &str = "peer-ed25519";
/// Prefix of public keys.
pub const KEY_PREFIX: &str = "ed25519:";
/// Lifetime of the tokens [`SiteIdentity::sign_request`] makes, ms.
pub const TOKEN_TTL_MS: i64 = 120_000;
/// Longest lifetime (`exp - iat`) a token may claim, ms.
pub const MAX_LIFETIME_MS: i64 = 300_000;
/// Longest token accepted, bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Label of the message an answer's signature covers.
const RESPONSE_LABEL: &str = "vesalius-peer-response";
/// Longest `jti` accepted (tokens made here use 32 hex digits).
const MAX_JTI: usize = 64;

/// Why a peer token or signature is refused. [`PeerAuthError::code`] is the stable name sent to
/// the caller and written into the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerAuthError {
    /// Not a token: too long, not `b64url.b64url`, not JSON claims, a signature of the wrong
    /// length, a lifetime over [`MAX_LIFETIME_MS`].
    #[error("malformed peer token: {0}")]
    Malformed(&'static str),
    /// `iss` names no registered peer.
    #[error("unknown peer {0:?}")]
    UnknownPeer(String),
    /// `iss_pk` is not the key registered for `iss` (or the registered key is unusable).
    #[error("the token's key is not the peer's registered key")]
    WrongKey,
    /// The signature does not verify with the peer's key.
    #[error("bad signature")]
    BadSignature,
    /// `aud` is not this site's key.
    #[error("the token is meant for another site")]
    WrongAudience,
    /// `m` or `p` is not this request's method or path and query.
    #[error("the token is for another request")]
    WrongRequest,
    /// `exp` (plus the allowed skew) has passed.
    #[error("the token has expired")]
    Expired,
    /// `iat` lies further in the future than the allowed skew.
    #[error("the token is not yet valid")]
    NotYetValid,
    /// This site has no peer identity or no peer registry configured.
    #[error("peer authentication is not configured here")]
    NotConfigured,
}

impl PeerAuthError {
    /// The stable kebab-case code.
    pub fn code(&self) -> &'static str {
        match self {
            PeerAuthError::Malformed(_) => "malformed",
            PeerAuthError::UnknownPeer(_) => "unknown-peer",
            PeerAuthError::WrongKey => "wrong-key",
            PeerAuthError::BadSignature => "bad-signature",
            PeerAuthError::WrongAudience => "wrong-audience",
            PeerAuthError::WrongRequest => "wrong-request",
            PeerAuthError::Expired => "expired",
            PeerAuthError::NotYetValid => "not-yet-valid",
            PeerAuthError::NotConfigured => "not-configured",
        }
    }

    /// The kind: always [`ErrorKind::Unauthorized`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Unauthorized
    }
}

/// The user at the calling site on whose behalf a request runs (a federated query), as the
/// calling site states it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnBehalf {
    /// The user's id (or token id) at the calling site.
    pub sub: String,
    /// Their organisation at the calling site.
    pub sub_org: String,
    /// Their display name (username).
    pub sub_name: String,
}

impl OnBehalf {
    /// The actor of a local principal, to send along with a federated request.
    pub fn of(principal: &Principal) -> Self {
        OnBehalf {
            sub: principal.actor.id.clone(),
            sub_org: principal.actor.org.clone(),
            sub_name: principal.actor.name.clone(),
        }
    }
}

/// The claims of a request token (see the module docs for each field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerClaims {
    /// The calling site's name.
    pub iss: String,
    /// The calling site's public key.
    pub iss_pk: String,
    /// The receiving site's public key.
    pub aud: String,
    /// Issued at, ms since the Unix epoch.
    pub iat: i64,
    /// Expires at, ms since the Unix epoch.
    pub exp: i64,
    /// Random request id (hex).
    pub jti: String,
    /// HTTP method.
    pub m: String,
    /// Path and query, exactly as sent.
    pub p: String,
    /// On-behalf user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// On-behalf user's organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_org: Option<String>,
    /// On-behalf user's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_name: Option<String>,
}

impl PeerClaims {
    /// The on-behalf user, when the token names one.
    pub fn on_behalf(&self) -> Option<OnBehalf> {
        self.sub.as_ref().map(|sub| OnBehalf {
            sub: sub.clone(),
            sub_org: self.sub_org.clone().unwrap_or_default(),
            sub_name: self.sub_name.clone().unwrap_or_default(),
        })
    }
}

/// A verified peer request, as the HTTP layer hands it to handlers (a request extension) so
/// they can sign their answer with [`SiteIdentity::sign_response`] over `jti`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRequest {
    /// The token's `jti`.
    pub jti: String,
    /// All its claims.
    pub claims: PeerClaims,
}

/// This site's peer key pair and name.
#[derive(Clone)]
pub struct SiteIdentity {
    name: String,
    signing: SigningKey,
    public: String,
}

impl std::fmt::Debug for SiteIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteIdentity")
            .field("name", &self.name)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl SiteIdentity {
    /// The identity of site `name`: the key pair whose seed is
    /// `key.derive_key(`[`KEY_PURPOSE`]`)`, the same on every node and after every restart.
    pub fn from_site_key(name: &str, key: &SiteKey) -> SiteIdentity {
        let signing = SigningKey::from_bytes(&key.derive_key(KEY_PURPOSE));
        let public = encode_public_key(&signing.verifying_key());
        SiteIdentity {
            name: name.to_owned(),
            signing,
            public,
        }
    }

    /// The site's name (the `iss` of its tokens).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key, `ed25519:` + unpadded base64url: what peers register for this site.
    pub fn public_key(&self) -> String {
        self.public.clone()
    }

    /// A token for a request `method path_and_query` to the site whose public key is
    /// `audience_pk`, valid for [`TOKEN_TTL_MS`] from `now_ms`; send it as
    /// `Authorization: Vesalius-Peer <token>`. The `jti` of the token is in
    /// [`token_jti`]`(&token)`, to check the answer with.
    pub fn sign_request(
        &self,
        audience_pk: &str,
        method: &str,
        path_and_query: &str,
        on_behalf: Option<OnBehalf>,
        now_ms: i64,
    ) -> String {
        let mut jti = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut jti);
        let (sub, sub_org, sub_name) = match on_behalf {
            Some(o) => (Some(o.sub), Some(o.sub_org), Some(o.sub_name)),
            None => (None, None, None),
        };
        let claims = PeerClaims {
            iss: self.name.clone(),
            iss_pk: self.public.clone(),
            aud: audience_pk.to_owned(),
            iat: now_ms,
            exp: now_ms.saturating_add(TOKEN_TTL_MS),
            jti: hex::encode(jti),
            m: method.to_owned(),
            p: path_and_query.to_owned(),
            sub,
            sub_org,
            sub_name,
        };
        let bytes = serde_json::to_vec(&claims).expect("claims serialise");
        let sig = self.signing.sign(&bytes);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&bytes),
            URL_SAFE_NO_PAD.encode(sig.to_bytes())
        )
    }

    /// The signature of an answer to the request named `jti` with body `body`: the value of the
    /// [`SIGNATURE_HEADER`].
    pub fn sign_response(&self, jti: &str, body: &[u8]) -> String {
        let sig = self.signing.sign(&response_message(jti, body));
        URL_SAFE_NO_PAD.encode(sig.to_bytes())
    }
}

/// The token of an `Authorization: Vesalius-Peer <token>` header value (scheme
/// case-insensitive), if it has that scheme.
pub fn peer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case(AUTH_SCHEME) && !token.is_empty()).then_some(token)
}

/// Whether `s` is a well-formed public key (`ed25519:` + base64url of a valid point).
pub fn valid_public_key(s: &str) -> bool {
    parse_public_key(s).is_some()
}

/// The `jti` of a token this site made (unverified: for the sender, to check the answer).
pub fn token_jti(token: &str) -> Option<String> {
    parse(token).ok().map(|t| t.claims.jti)
}

fn encode_public_key(key: &VerifyingKey) -> String {
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(key.to_bytes()))
}

fn parse_public_key(s: &str) -> Option<VerifyingKey> {
    let b64 = s.trim().strip_prefix(KEY_PREFIX)?;
    let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(b64).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

fn response_message(jti: &str, body: &[u8]) -> Vec<u8> {
    format!(
        "{RESPONSE_LABEL}\n{jti}\n{}",
        hex::encode(Sha256::digest(body))
    )
    .into_bytes()
}

/// A token taken apart, not yet verified.
pub(crate) struct ParsedToken {
    /// The claims bytes the signature covers.
    bytes: Vec<u8>,
    /// Those bytes, parsed.
    pub(crate) claims: PeerClaims,
    signature: Signature,
}

/// Takes a token apart, within [`MAX_TOKEN_BYTES`].
pub(crate) fn parse(token: &str) -> Result<ParsedToken, PeerAuthError> {
    use PeerAuthError::Malformed;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Malformed("longer than 8 KiB"));
    }
    let (claims_b64, sig_b64) = token.split_once('.').ok_or(Malformed("no '.'"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(claims_b64)
        .map_err(|_| Malformed("claims are not base64url"))?;
    let sig: [u8; 64] = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| Malformed("signature is not base64url"))?
        .try_into()
        .map_err(|_| Malformed("signature is not 64 bytes"))?;
    let claims: PeerClaims =
        serde_json::from_slice(&bytes).map_err(|_| Malformed("claims are not the JSON object"))?;
    let jti_ok = !claims.jti.is_empty()
        && claims.jti.len() <= MAX_JTI
        && claims
            .jti
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !jti_ok {
        return Err(Malformed("jti"));
    }
    Ok(ParsedToken {
        bytes,
        claims,
        signature: Signature::from_bytes(&sig),
    })
}

/// Verifies a parsed token against the issuer's registered key `registered_pk` (`None`: not
/// registered); see [`verify_request`].
pub(crate) fn verify_parsed(
    t: ParsedToken,
    registered_pk: Option<&str>,
    own_pk: &str,
    method: &str,
    path_and_query: &str,
    now_ms: i64,
    max_skew_ms: i64,
) -> Result<PeerClaims, PeerAuthError> {
    let c = &t.claims;
    let registered = registered_pk.ok_or_else(|| PeerAuthError::UnknownPeer(c.iss.clone()))?;
    let key = parse_public_key(registered).ok_or_else(|| {
        tracing::warn!(peer = %c.iss, "the registered public key of this peer is unusable");
        PeerAuthError::WrongKey
    })?;
    if parse_public_key(&c.iss_pk) != Some(key) {
        return Err(PeerAuthError::WrongKey);
    }
    key.verify_strict(&t.bytes, &t.signature)
        .map_err(|_| PeerAuthError::BadSignature)?;
    // Signed by the peer from here on: the rest is about whether it is meant for this request.
    let own = parse_public_key(own_pk).ok_or(PeerAuthError::NotConfigured)?;
    if parse_public_key(&c.aud) != Some(own) {
        return Err(PeerAuthError::WrongAudience);
    }
    if c.m != method || c.p != path_and_query {
        return Err(PeerAuthError::WrongRequest);
    }
    match c.exp.checked_sub(c.iat) {
        Some(life) if (0..=MAX_LIFETIME_MS).contains(&life) => {}
        _ => return Err(PeerAuthError::Malformed("lifetime over 300 s")),
    }
    if now_ms < c.iat.saturating_sub(max_skew_ms) {
        return Err(PeerAuthError::NotYetValid);
    }
    if now_ms > c.exp.saturating_add(max_skew_ms) {
        return Err(PeerAuthError::Expired);
    }
    Ok(t.claims)
}

/// Verifies a request token (see the module docs): `own_pk` is this site's public key,
/// `peer_pk_of` gives the registered public key of a peer by name, `method` and
/// `path_and_query` are the request's as received.
pub fn verify_request(
    token: &str,
    own_pk: &str,
    peer_pk_of: impl Fn(&str) -> Option<String>,
    method: &str,
    path_and_query: &str,
    now_ms: i64,
    max_skew_ms: i64,
) -> Result<PeerClaims, PeerAuthError> {
    let t = parse(token)?;
    let registered = peer_pk_of(&t.claims.iss);
    verify_parsed(
        t,
        registered.as_deref(),
        own_pk,
        method,
        path_and_query,
        now_ms,
        max_skew_ms,
    )
}

/// Verifies the signature `sig` ([`SIGNATURE_HEADER`]) of an answer with body `body` to the
/// request named `jti`, made by the peer whose registered public key is `peer_pk`.
pub fn verify_response(
    peer_pk: &str,
    jti: &str,
    body: &[u8],
    sig: &str,
) -> Result<(), PeerAuthError> {
    let key = parse_public_key(peer_pk).ok_or(PeerAuthError::WrongKey)?;
    let sig: [u8; 64] = URL_SAFE_NO_PAD
        .decode(sig.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(PeerAuthError::Malformed("answer signature"))?;
    key.verify_strict(&response_message(jti, body), &Signature::from_bytes(&sig))
        .map_err(|_| PeerAuthError::BadSignature)
}

#[cfg(test)]
mod tests;
