//! Writing into a study held at a peer (issue 6, docs/exchange.md "Key images and measurements
//! on a peer's study"): the hub's key image or measurement report goes to the study's home.
//!
//! - [`Federation::remote_study_metadata`] reads the study's instance metadata from the peer
//!   (WADO-RS `…/metadata`, signed for the user, never from the proxy's cache: the document is
//!   built from what the peer holds now).
//! - [`Federation::store_in_remote_study`] sends one Part 10 document by STOW-RS to the peer's
//!   `POST /dicom-web/studies/{study}` (PS3.18 10.5), signed by this site for the user (`sub`
//!   claims). The peer decides with its own policy: only a peer registered there with
//!   `may_query` may write for a user, only into a study of the organisation it acts in
//!   (`vesalius_auth::policy`, action `annotate`), and audits the write as that user
//!   (`peer:NAME for USER (ORG)`). Afterwards every cached answer of that peer about the study
//!   (metadata, series lists, searches) is dropped, so the viewer finds the new series at once.
//!
//! Whether the user may annotate at all is decided by the caller of these functions (the API's
//! key-image and measurement endpoints, with the user's role here); these only require a user
//! who may query in their organisation, like remote viewing.

use bytes::Bytes;
use serde_json::Value;
use vesalius_auth::peer::OnBehalf;
use vesalius_auth::{Action, Caller};
use vesalius_core::ErrorKind;

use super::{Federation, read_limited, require_user};
use crate::api::{ApiError, ApiResult};
use crate::client::{PeerClient, check_vesalius, parse_stow_answer, transport};
use crate::remote::peer_error;
use axum::http::{Method, header};

impl Federation {
    /// The instance metadata (DICOM JSON objects, PS3.18 F.2) of `study` at peer `peer_name`,
    /// read for `caller` (a user linked with that peer). The peer's refusals are passed on:
    /// 403 `forbidden`, 404 `not-found`; a peer that cannot be reached is `peer-unavailable`.
    pub async fn remote_study_metadata(
        &self,
        caller: &Caller,
        peer_name: &str,
        study: &str,
    ) -> ApiResult<Vec<Value>> {
        require_user(
            caller,
            &[Action::Query],
            "reading a peer's study needs a user allowed to query in an organisation",
        )?;
        let peer = self.peer_for(caller, peer_name).await?;
        check_uid(study)?;
        let url = PeerClient::url(&peer, &format!("/dicom-web/studies/{study}/metadata"))
            .map_err(peer_error)?;
        let (rb, _) = self.exchange.client().request(
            &peer,
            Method::GET,
            url,
            Some(OnBehalf::of(&caller.principal)),
        );
        let resp = rb
            .timeout(self.opts.view_timeout)
            .header(header::ACCEPT, "application/dicom+json")
            .send()
            .await
            .map_err(|e| peer_error(transport(&peer, e)))?;
        let status = resp.status();
        let body = read_limited(resp, self.opts.max_json_bytes, &peer)
            .await
            .map_err(peer_error)?;
        if !status.is_success() {
            return Err(refused(&peer.name, status.as_u16(), &body));
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(items)) if !items.is_empty() => Ok(items),
            _ => Err(ApiError::new(
                ErrorKind::PeerUnavailable,
                format!("peer {}: unreadable metadata of study {study}", peer.name),
            )),
        }
    }

    /// Stores `part10` (one document of `study`, SOP Instance UID `sop_uid`) at peer
    /// `peer_name` for `caller`, by STOW-RS into the study; then drops the proxy's cached
    /// answers about the study. A refusal by the peer's policy is 403 `forbidden` with the
    /// peer's reason; an instance the peer did not store is 409 `conflict`.
    pub async fn store_in_remote_study(
        &self,
        caller: &Caller,
        peer_name: &str,
        study: &str,
        sop_uid: &str,
        part10: Vec<u8>,
    ) -> ApiResult<()> {
        require_user(
            caller,
            &[Action::Query],
            "writing into a peer's study needs a user allowed to query in an organisation",
        )?;
        let peer = self.peer_for(caller, peer_name).await?;
        check_uid(study)?;
        check_vesalius(&peer).map_err(peer_error)?;
        // No `?org=`: a peer acting for a user writes into the organisation it acts in there.
        let url =
            PeerClient::url(&peer, &format!("/dicom-web/studies/{study}")).map_err(peer_error)?;
        let boundary = format!("vesalius-{}", uuid::Uuid::new_v4().simple());
        let mut body = Vec::with_capacity(part10.len() + 160);
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(&part10);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let (rb, _) = self.exchange.client().request(
            &peer,
            Method::POST,
            url,
            Some(OnBehalf::of(&caller.principal)),
        );
        let result = rb
            .timeout(self.opts.view_timeout)
            .header(
                header::CONTENT_TYPE,
                format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
            )
            .header(header::ACCEPT, "application/dicom+json")
            .body(Bytes::from(body))
            .send()
            .await;
        // Whatever the answer, what we cached about the study may be out of date now.
        self.forget_study(&peer.name, study);
        let resp = result.map_err(|e| peer_error(transport(&peer, e)))?;
        let status = resp.status();
        let answer = read_limited(resp, 1 << 20, &peer)
            .await
            .map_err(peer_error)?;
        // PS3.18 10.5.3: 200 stored, 202 some failed, 409 none stored.
        if !matches!(status.as_u16(), 200 | 202 | 409) {
            return Err(refused(&peer.name, status.as_u16(), &answer));
        }
        let outcome = parse_stow_answer(&answer).ok_or_else(|| {
            ApiError::new(
                ErrorKind::PeerUnavailable,
                format!("peer {}: unreadable STOW-RS answer", peer.name),
            )
        })?;
        if outcome.stored.iter().any(|s| s == sop_uid) {
            Ok(())
        } else {
            let reason = outcome
                .failed
                .first()
                .map(|(_, r)| format!(" (failure reason {r:#06x})"))
                .unwrap_or_default();
            Err(ApiError::new(
                ErrorKind::Conflict,
                format!("peer {} did not store the document{reason}", peer.name),
            ))
        }
    }

    /// Drops this node's cached answers of peer `peer` that may show `study`: anything under
    /// the study and every search of that peer (counts of series and instances change).
    fn forget_study(&self, peer: &str, study: &str) {
        let prefix = format!("{peer}\n");
        let under = format!("/studies/{study}");
        let dropped = self.cache.invalidate(|k| {
            let Some(rest) = k.strip_prefix(&prefix) else {
                return false;
            };
            let path = rest.split('\n').next().unwrap_or_default();
            path.contains(&under)
                || path.starts_with("/dicom-web/studies?")
                || path == "/dicom-web/studies"
        });
        tracing::debug!(
            peer,
            study,
            dropped,
            "remote cache entries dropped after a write"
        );
    }
}

/// The peer's refusal as the user reads it: the kind of its status (401/403 `forbidden`, 404
/// `not-found`, anything else `peer-unavailable`) and its own message when its body is the
/// usual `{"error", "message"}`.
fn refused(peer: &str, status: u16, body: &[u8]) -> ApiError {
    let said = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
    match status {
        401 | 403 => ApiError::new(
            ErrorKind::Forbidden,
            format!("the peer refused: {peer} answered {status}: {said}"),
        ),
        404 => ApiError::new(
            ErrorKind::NotFound,
            format!("the peer has no such study for you: {peer} answered 404: {said}"),
        ),
        _ => ApiError::new(
            ErrorKind::PeerUnavailable,
            format!("peer {peer} answered {status}: {said}"),
        ),
    }
}

fn check_uid(uid: &str) -> ApiResult<()> {
    if vesalius_core::uid::is_valid_uid(uid) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::BadRequest,
            format!("{uid:?} is not a valid UID"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_says_who_refused_and_why() {
        let e = refused(
            "spoke-a",
            403,
            br#"{"error":"forbidden","message":"peer:hub for dr (csc) may not annotate"}"#,
        );
        assert_eq!(e.kind, ErrorKind::Forbidden);
        assert_eq!(
            e.message,
            "the peer refused: spoke-a answered 403: peer:hub for dr (csc) may not annotate"
        );
        assert_eq!(refused("p", 404, b"gone").kind, ErrorKind::NotFound);
        assert_eq!(refused("p", 500, b"").kind, ErrorKind::PeerUnavailable);
    }
}
