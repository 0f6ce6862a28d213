//! [`PeerClient`]: signed HTTP requests to peer sites (docs/exchange.md).
//!
//! Every request carries `Authorization: Vesalius-Peer <token>` signed with this site's key and
//! bound to the peer's key, the method and the path (`vesalius_auth::peer`). JSON answers of the
//! exchange API are signed by the peer (`X-Vesalius-Signature` over the token's `jti` and the
//! body) and checked here against the peer's registered key, so an answer — a manifest's "I hold
//! these instances with these hashes" above all — is proof that the peer itself gave it.
//! Plain `http` is refused unless the host is a loopback address.
//!
//! A plain DICOMweb peer ([`PeerKind::Dicomweb`], e.g. Orthanc) gets standard requests
//! instead: STOW-RS and QIDO-RS under its service root, with its own credentials (HTTP Basic or
//! a bearer token, [`PeerAuth`]), no signature and no manifest.
//!
//! STOW-RS bodies go out with `Content-Encoding: gzip` (RFC 9110 8.4.1.3) when
//! [`ContentEncoding::Gzip`] is chosen (`[exchange] content_encoding`), or, with
//! [`ContentEncoding::Auto`] (the default), when the link to the peer is slow
//! ([`PeerClient::fast_link`]): its round trip, the shortest of the signed requests of the last
//! minute (pings, manifests; pings make up at least three samples), is at least
//! `slow_link_rtt` (10 ms) or unknown. A LAN or the same machine answers below that and gets plain bodies: there, compressing costs more
//! CPU time (~6 ms per MB at both ends together) than it saves on the wire; a regional link is
//! far above it. The multipart body is compressed as it streams (flate2's fastest level), never
//! held whole twice. The instances' bytes are unchanged, so the receiver stores, and manifests
//! hash, exactly what was sent. A peer that answers 415 to a coded body is sent plain from then
//! on (RFC 9110 15.5.16). Plain DICOMweb peers are always sent plain (Orthanc ignores the
//! header and stores nothing).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_compression::Level;
use async_compression::tokio::bufread::GzipEncoder;
use bytes::Bytes;
use futures::stream;
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::io::{ReaderStream, StreamReader};
use vesalius_auth::peer::{self, HASH_CREATOR, HASH_CREATOR_TAG, HASH_TAG, OnBehalf, SiteIdentity};
use vesalius_store::registry::{Peer, PeerAuth, PeerKind};

use crate::manifest::{Manifest, ManifestAnswer};
use crate::{Error, now_ms};

/// The header carrying a transfer's priority to the receiver.
pub const PRIORITY_HEADER: &str = "x-vesalius-priority";

/// What a peer answers to a ping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingAnswer {
    /// Its site name.
    pub site: String,
    /// Its public key.
    pub public_key: String,
    /// Its clock, ms since the Unix epoch.
    pub time_ms: i64,
    /// The name it knows us by.
    pub peer_name: String,
    /// The organisation our deliveries land in there.
    pub org: String,
}

/// The outcome of one STOW-RS request: per SOP Instance UID, stored or the failure reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StowOutcome {
    /// SOP Instance UIDs the peer stored (ReferencedSOPSequence).
    pub stored: Vec<String>,
    /// `(SOP Instance UID, FailureReason)` it refused (FailedSOPSequence).
    pub failed: Vec<(String, u16)>,
    /// `(SOP Instance UID, SHA-256)` of what a Vesalius peer stored, from its answer's private
    /// hash elements ([`HASH_TAG`]); filled only when the answer's
    /// signature verified against the peer's key, so it is the peer's own statement.
    pub hashes: Vec<(String, String)>,
}

/// What a plain DICOMweb peer answered to a QIDO-RS ping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QidoPing {
    /// The HTTP status (200 or 204).
    pub status: u16,
    /// Studies in the answer (at most 1: the request asks for one).
    pub studies: usize,
}

/// The content coding of STOW-RS bodies sent to peers (`[exchange] content_encoding`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContentEncoding {
    /// gzip when the link to the peer is slow ([`PeerClient::fast_link`]), as is otherwise.
    #[default]
    Auto,
    /// gzip at the fastest level (RFC 9110 8.4.1.3), always.
    Gzip,
    /// As is, always.
    Identity,
}

impl ContentEncoding {
    /// `auto`, `gzip` or `identity`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentEncoding::Auto => "auto",
            ContentEncoding::Gzip => "gzip",
            ContentEncoding::Identity => "identity",
        }
    }
}

/// How long a round-trip sample counts for [`ContentEncoding::Auto`].
const RTT_WINDOW: Duration = Duration::from_secs(60);
/// Samples kept per peer.
const RTT_SAMPLES: usize = 16;
/// Samples a link is classed from (pings make up the difference).
const MIN_SAMPLES: usize = 3;
/// The default round trip from which a link is slow (see [`PeerClient::fast_link`]).
pub const SLOW_LINK_RTT: Duration = Duration::from_millis(10);

/// Round trips of recent signed requests, per peer: the shortest of them estimates the link's
/// own (the others include the peer's work and queueing).
#[derive(Default)]
struct Links {
    samples: HashMap<String, VecDeque<(Instant, Duration)>>,
    /// The last classification per peer, to log its changes.
    fast: HashMap<String, bool>,
}

impl Links {
    fn record(&mut self, peer: &str, rtt: Duration) {
        let q = self.samples.entry(peer.to_owned()).or_default();
        if q.len() == RTT_SAMPLES {
            q.pop_front();
        }
        q.push_back((Instant::now(), rtt));
    }

    /// How many samples of `peer` the window holds.
    fn recent(&self, peer: &str) -> usize {
        let now = Instant::now();
        self.samples.get(peer).map_or(0, |q| {
            q.iter()
                .filter(|(at, _)| now.duration_since(*at) < RTT_WINDOW)
                .count()
        })
    }

    /// The shortest round trip of the window, if any.
    fn rtt(&self, peer: &str) -> Option<Duration> {
        let now = Instant::now();
        self.samples
            .get(peer)?
            .iter()
            .filter(|(at, _)| now.duration_since(*at) < RTT_WINDOW)
            .map(|(_, d)| *d)
            .min()
    }
}

/// Bytes of a compressed body handed to the connection at once.
const CODED_CHUNK: usize = 64 << 10;

/// The client.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    identity: Arc<SiteIdentity>,
    encoding: ContentEncoding,
    /// A link is slow from this round trip on.
    slow_link_rtt: Duration,
    /// Peers that refused a coded body (415): sent plain from then on.
    plain_only: Arc<Mutex<HashSet<String>>>,
    /// Round trips seen per peer ([`ContentEncoding::Auto`]).
    links: Arc<Mutex<Links>>,
}

impl PeerClient {
    /// A client signing as `identity`, with `timeout` for each whole request.
    pub fn new(identity: Arc<SiteIdentity>, timeout: Duration) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(16)
            .build()
            .map_err(|e| Error::Peer(format!("HTTP client: {e}")))?;
        Ok(PeerClient {
            http,
            identity,
            encoding: ContentEncoding::default(),
            slow_link_rtt: SLOW_LINK_RTT,
            plain_only: Arc::default(),
            links: Arc::default(),
        })
    }

    /// Sets the content coding of STOW-RS bodies (default auto).
    pub fn content_encoding(mut self, encoding: ContentEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Sets the round trip from which a link is slow (default 10 ms: a signed ping to a busy
    /// site on the same machine took up to 5 ms on this project's 2-core machine, a regional
    /// link takes 10–40 ms).
    pub fn slow_link_rtt(mut self, rtt: Duration) -> Self {
        self.slow_link_rtt = rtt;
        self
    }

    /// The shortest round trip to `peer` of the last minute's signed requests, if any.
    pub fn rtt(&self, peer: &str) -> Option<Duration> {
        self.links.lock().expect("lock").rtt(peer)
    }

    /// Whether the link to `peer` is fast: a Vesalius peer whose round trip (the shortest of the
    /// last minute's signed requests, with pings when there are fewer than three) is below
    /// `slow_link_rtt`, as a LAN or the same machine is. A slow link (a regional one, or not
    /// known, or a plain DICOMweb peer, which is not pinged) gets gzip-coded bodies
    /// ([`ContentEncoding::Auto`]) and the small requests a cut costs little of.
    pub async fn fast_link(&self, peer: &Peer) -> bool {
        if peer.kind != PeerKind::Vesalius {
            return false;
        }
        // At least three samples (pings when the window holds fewer): the shortest is the
        // link's (one may wait behind other work, the first on a new connection).
        let recent = self.links.lock().expect("lock").recent(&peer.name);
        for _ in recent..MIN_SAMPLES {
            if self.ping(peer).await.is_err() {
                break;
            }
        }
        let fast = self
            .rtt(&peer.name)
            .is_some_and(|rtt| rtt < self.slow_link_rtt);
        let mut links = self.links.lock().expect("lock");
        if links.fast.insert(peer.name.clone(), fast) != Some(fast) {
            tracing::info!(
                peer = %peer.name,
                rtt_us = links.rtt(&peer.name).map(|d| d.as_micros() as u64),
                "{}",
                if fast {
                    "fast link to this peer: STOW-RS bodies sent plain (with content_encoding \
                     auto), large requests"
                } else {
                    "slow link to this peer: STOW-RS bodies gzip-coded (with content_encoding \
                     auto), small requests"
                }
            );
        }
        fast
    }

    /// Whether STOW-RS bodies to `peer` (a Vesalius site) are gzip-coded now.
    async fn compress_for(&self, peer: &Peer) -> bool {
        let auto = match self.encoding {
            ContentEncoding::Gzip => true,
            ContentEncoding::Identity => false,
            ContentEncoding::Auto => !self.fast_link(peer).await,
        };
        auto && !self.plain_only.lock().expect("lock").contains(&peer.name)
    }

    /// This site's identity.
    pub fn identity(&self) -> &SiteIdentity {
        &self.identity
    }

    pub(crate) fn url(peer: &Peer, path: &str) -> Result<Url, Error> {
        let base = peer.base_url.trim_end_matches('/');
        let url = Url::parse(&format!("{base}{path}"))
            .map_err(|e| Error::Peer(format!("peer {} URL {base:?}: {e}", peer.name)))?;
        check_scheme(&url)?;
        Ok(url)
    }

    pub(crate) fn request(
        &self,
        peer: &Peer,
        method: Method,
        url: Url,
        on_behalf: Option<OnBehalf>,
    ) -> (reqwest::RequestBuilder, String) {
        let path_and_query = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let token = self.identity.sign_request(
            &peer.public_key,
            method.as_str(),
            &path_and_query,
            on_behalf,
            now_ms(),
        );
        let jti = peer::token_jti(&token).unwrap_or_default();
        let rb = self.http.request(method, url).header(
            reqwest::header::AUTHORIZATION,
            format!("{} {token}", peer::AUTH_SCHEME),
        );
        (rb, jti)
    }

    /// Sends a signed JSON request and checks the signed JSON answer.
    async fn signed_json<T: DeserializeOwned>(
        &self,
        peer: &Peer,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, Error> {
        self.signed_json_for(peer, method, path, body, None).await
    }

    /// [`Self::signed_json`] on behalf of a local user.
    pub(crate) async fn signed_json_for<T: DeserializeOwned>(
        &self,
        peer: &Peer,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        on_behalf: Option<OnBehalf>,
    ) -> Result<T, Error> {
        check_vesalius(peer)?;
        let url = Self::url(peer, path)?;
        let (mut rb, jti) = self.request(peer, method, url, on_behalf);
        if let Some(b) = body {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let sent = Instant::now();
        let resp = rb.send().await.map_err(|e| transport(peer, e))?;
        self.links
            .lock()
            .expect("lock")
            .record(&peer.name, sent.elapsed());
        let status = resp.status();
        let sig = resp
            .headers()
            .get(peer::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = resp.bytes().await.map_err(|e| transport(peer, e))?;
        if !status.is_success() {
            return Err(Error::Refused {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
            });
        }
        let sig = sig.ok_or_else(|| {
            Error::Peer(format!("peer {} answered without a signature", peer.name))
        })?;
        peer::verify_response(&peer.public_key, &jti, &bytes, &sig).map_err(|e| {
            Error::Peer(format!(
                "peer {}: the answer's signature does not verify ({})",
                peer.name,
                e.code()
            ))
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Peer(format!("peer {}: unreadable answer: {e}", peer.name)))
    }

    /// `GET /api/v1/exchange/ping`: reachability, authentication both ways, clock.
    pub async fn ping(&self, peer: &Peer) -> Result<PingAnswer, Error> {
        self.signed_json(peer, Method::GET, "/api/v1/exchange/ping", None)
            .await
    }

    /// `POST /api/v1/exchange/manifest`.
    pub async fn manifest(&self, peer: &Peer, m: &Manifest) -> Result<ManifestAnswer, Error> {
        let body = serde_json::to_vec(m).expect("serialisable");
        self.signed_json(peer, Method::POST, "/api/v1/exchange/manifest", Some(body))
            .await
    }

    /// `GET {root}/studies?limit=1` of a plain DICOMweb peer (QIDO-RS, PS3.18 10.6): reachable
    /// and our credentials accepted.
    pub async fn qido_ping(&self, peer: &Peer) -> Result<QidoPing, Error> {
        let url = Self::url(peer, "/studies?limit=1")?;
        let resp = self
            .plain_request(peer, Method::GET, url)
            .header(reqwest::header::ACCEPT, "application/dicom+json")
            .send()
            .await
            .map_err(|e| transport(peer, e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| transport(peer, e))?;
        match status {
            // PS3.18 8.3.3.1: 204 when nothing matches.
            204 => Ok(QidoPing { status, studies: 0 }),
            200 => {
                let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Peer(format!(
                        "peer {}: unreadable QIDO-RS answer: {e}",
                        peer.name
                    ))
                })?;
                Ok(QidoPing {
                    status,
                    studies: v.as_array().map_or(0, Vec::len),
                })
            }
            _ => Err(Error::Refused {
                status,
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
            }),
        }
    }

    /// An unsigned request to a plain DICOMweb peer, with its credentials.
    fn plain_request(&self, peer: &Peer, method: Method, url: Url) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, url);
        match &peer.auth {
            PeerAuth::None => rb,
            PeerAuth::Basic { username, password } => rb.basic_auth(username, Some(password)),
            PeerAuth::Bearer { token } => rb.bearer_auth(token),
        }
    }

    /// STOW-RS of `parts` (Part 10 objects) into the peer's `studies/{study}` (with `?org=`
    /// when a Vesalius peer's record names the organisation to deliver into), carrying
    /// `priority` to a Vesalius peer.
    pub async fn stow(
        &self,
        peer: &Peer,
        study_uid: Option<&str>,
        priority: i32,
        parts: Vec<Bytes>,
    ) -> Result<StowOutcome, Error> {
        // Plain DICOMweb servers are sent plain: PS3.18 does not require decoding request
        // content codings, and Orthanc 1.10 (with its DICOMweb plug-in) ignores
        // `Content-Encoding: gzip`, answering 200 with nothing stored.
        let coded = peer.kind == PeerKind::Vesalius && self.compress_for(peer).await;
        match self
            .stow_once(peer, study_uid, priority, &parts, coded)
            .await
        {
            Err(Error::Refused { status: 415, .. }) if coded => {
                tracing::warn!(
                    peer = %peer.name,
                    "the peer refused a gzip-coded STOW-RS body (415): sending plain from now on"
                );
                self.plain_only
                    .lock()
                    .expect("lock")
                    .insert(peer.name.clone());
                self.stow_once(peer, study_uid, priority, &parts, false)
                    .await
            }
            r => r,
        }
    }

    async fn stow_once(
        &self,
        peer: &Peer,
        study_uid: Option<&str>,
        priority: i32,
        parts: &[Bytes],
        coded: bool,
    ) -> Result<StowOutcome, Error> {
        let mut path = match (peer.kind, study_uid) {
            (PeerKind::Vesalius, Some(s)) => format!("/dicom-web/studies/{s}"),
            (PeerKind::Vesalius, None) => "/dicom-web/studies".to_owned(),
            (PeerKind::Dicomweb, Some(s)) => format!("/studies/{s}"),
            (PeerKind::Dicomweb, None) => "/studies".to_owned(),
        };
        if peer.kind == PeerKind::Vesalius
            && let Some(org) = &peer.remote_org
        {
            path.push_str(&format!("?org={org}"));
        }
        let url = Self::url(peer, &path)?;
        let boundary = format!("vesalius-{}", uuid::Uuid::new_v4().simple());
        let mut pieces: Vec<Bytes> = Vec::with_capacity(parts.len() * 3 + 1);
        for p in parts {
            pieces.push(Bytes::from(format!(
                "--{boundary}\r\nContent-Type: application/dicom\r\n\r\n"
            )));
            pieces.push(p.clone());
            pieces.push(Bytes::from_static(b"\r\n"));
        }
        pieces.push(Bytes::from(format!("--{boundary}--\r\n")));
        let plain = stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
        let body = if coded {
            let enc = GzipEncoder::with_quality(StreamReader::new(plain), Level::Fastest);
            reqwest::Body::wrap_stream(ReaderStream::with_capacity(enc, CODED_CHUNK))
        } else {
            reqwest::Body::wrap_stream(plain)
        };
        let (mut rb, jti) = match peer.kind {
            PeerKind::Vesalius => {
                let (rb, jti) = self.request(peer, Method::POST, url, None);
                (rb.header(PRIORITY_HEADER, priority.to_string()), Some(jti))
            }
            PeerKind::Dicomweb => (self.plain_request(peer, Method::POST, url), None),
        };
        if coded {
            rb = rb.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        let resp = rb
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
            )
            .header(reqwest::header::ACCEPT, "application/dicom+json")
            .body(body)
            .send()
            .await
            .map_err(|e| transport(peer, e))?;
        let status = resp.status();
        let sig = resp
            .headers()
            .get(peer::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = resp.bytes().await.map_err(|e| transport(peer, e))?;
        // PS3.18 10.5.3: 200 all stored, 202 some failed, 409 none stored; other statuses are
        // the request's failure (authentication, size, server trouble).
        if !matches!(status.as_u16(), 200 | 202 | 409) {
            return Err(Error::Refused {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
            });
        }
        let mut outcome = parse_stow_answer(&bytes)
            .ok_or_else(|| Error::Peer(format!("peer {}: unreadable STOW-RS answer", peer.name)))?;
        // A Vesalius peer signs its answer: the hashes count only when the signature verifies
        // (an unsigned answer, from an older peer, leaves the verification to a manifest).
        match (jti, sig) {
            (Some(jti), Some(sig)) => {
                peer::verify_response(&peer.public_key, &jti, &bytes, &sig).map_err(|e| {
                    Error::Peer(format!(
                        "peer {}: the STOW-RS answer's signature does not verify ({})",
                        peer.name,
                        e.code()
                    ))
                })?;
            }
            _ => outcome.hashes.clear(),
        }
        Ok(outcome)
    }
}

pub(crate) fn transport(peer: &Peer, e: reqwest::Error) -> Error {
    Error::Unreachable(format!("peer {}: {e}", peer.name))
}

/// Refuses a plain DICOMweb peer where the exchange API of a Vesalius site is needed.
pub(crate) fn check_vesalius(peer: &Peer) -> Result<(), Error> {
    if peer.kind != PeerKind::Vesalius {
        return Err(Error::Peer(format!(
            "peer {} is a plain DICOMweb server: it has no exchange API",
            peer.name
        )));
    }
    Ok(())
}

/// Plain HTTP only to loopback (issue 5): anything else must be HTTPS.
pub fn check_scheme(url: &Url) -> Result<(), Error> {
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = url.host_str().unwrap_or("");
            let h = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = h.eq_ignore_ascii_case("localhost")
                || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(Error::Peer(format!(
                    "{url}: plain HTTP is allowed only to loopback; use https"
                )))
            }
        }
        s => Err(Error::Peer(format!("{url}: unsupported scheme {s}"))),
    }
}

/// Reads ReferencedSOPSequence (0008,1199) and FailedSOPSequence (0008,1198) of a STOW-RS
/// answer in DICOM JSON (PS3.18 10.5.3.1).
pub fn parse_stow_answer(bytes: &[u8]) -> Option<StowOutcome> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let items = |tag: &str| -> Vec<serde_json::Value> {
        v.get(tag)
            .and_then(|s| s.get("Value"))
            .and_then(|s| s.as_array())
            .cloned()
            .unwrap_or_default()
    };
    let text = |item: &serde_json::Value, tag: &str| -> Option<String> {
        item.get(tag)?
            .get("Value")?
            .get(0)?
            .as_str()
            .map(str::to_owned)
    };
    let mut out = StowOutcome::default();
    for it in items("00081199") {
        if let Some(uid) = text(&it, "00081155") {
            // The receiving site's private hash element, under its own Private Creator only.
            if text(&it, HASH_CREATOR_TAG).as_deref() == Some(HASH_CREATOR)
                && let Some(sha) = text(&it, HASH_TAG)
            {
                out.hashes.push((uid.clone(), sha));
            }
            out.stored.push(uid);
        }
    }
    for it in items("00081198") {
        if let Some(uid) = text(&it, "00081155") {
            let reason = it
                .get("00081197")
                .and_then(|r| r.get("Value"))
                .and_then(|r| r.get(0))
                .and_then(|r| r.as_u64())
                .unwrap_or(0x0110) as u16;
            out.failed.push((uid, reason));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stow_answer_hashes_are_read_under_our_private_creator_only() {
        let sha = "ab".repeat(32);
        let answer = serde_json::json!({
            "00081199": {"vr": "SQ", "Value": [
                {"00081155": {"vr": "UI", "Value": ["1.2.3"]},
                 "00090010": {"vr": "LO", "Value": ["VESALIUS 1.0"]},
                 "00091001": {"vr": "LO", "Value": [sha]}},
                {"00081155": {"vr": "UI", "Value": ["1.2.4"]},
                 "00090010": {"vr": "LO", "Value": ["SOMEONE ELSE"]},
                 "00091001": {"vr": "LO", "Value": [sha]}},
                {"00081155": {"vr": "UI", "Value": ["1.2.5"]}}
            ]}
        });
        let o = parse_stow_answer(answer.to_string().as_bytes()).expect("parsed");
        assert_eq!(o.stored, ["1.2.3", "1.2.4", "1.2.5"]);
        assert_eq!(o.hashes, [("1.2.3".to_owned(), sha)]);
    }

    #[test]
    fn the_link_round_trip_is_the_shortest_recent_sample() {
        let mut l = Links::default();
        assert_eq!(l.rtt("hub"), None);
        for ms in [9, 3, 12] {
            l.record("hub", Duration::from_millis(ms));
        }
        l.record("other", Duration::from_millis(1));
        assert_eq!(l.rtt("hub"), Some(Duration::from_millis(3)));
        // Only the newest RTT_SAMPLES count: a link that got slow is seen as slow.
        for _ in 0..RTT_SAMPLES {
            l.record("hub", Duration::from_millis(40));
        }
        assert_eq!(l.rtt("hub"), Some(Duration::from_millis(40)));
        assert_eq!(l.rtt("other"), Some(Duration::from_millis(1)));
    }

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(check_scheme(&Url::parse("http://127.0.0.1:8080/").unwrap()).is_ok());
        assert!(check_scheme(&Url::parse("http://[::1]:8080/").unwrap()).is_ok());
        assert!(check_scheme(&Url::parse("http://localhost/").unwrap()).is_ok());
        assert!(check_scheme(&Url::parse("https://hub.example.org/").unwrap()).is_ok());
        assert!(check_scheme(&Url::parse("http://hub.example.org/").unwrap()).is_err());
        assert!(check_scheme(&Url::parse("http://10.0.0.1/").unwrap()).is_err());
        assert!(check_scheme(&Url::parse("ftp://127.0.0.1/").unwrap()).is_err());
    }

    #[test]
    fn stow_answer_parsed() {
        let body = br#"{"00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.3"]}}]},
            "00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.4"]},"00081197":{"vr":"US","Value":[49442]}}]}}"#;
        let o = parse_stow_answer(body).unwrap();
        assert_eq!(o.stored, vec!["1.2.3"]);
        assert_eq!(o.failed, vec![("1.2.4".to_owned(), 49442)]);
    }
}
