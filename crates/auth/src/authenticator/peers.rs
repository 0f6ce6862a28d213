//! Peer sites: a request token signed with the calling site's key ([`crate::peer`]), checked
//! against the peer registry.

use serde_json::json;
use vesalius_store::audit::Outcome;
use vesalius_store::registry::Peer;

use super::{Authenticator, Origin, anonymous};
use crate::caller::Caller;
use crate::error::{Error, Result};
use crate::peer::{self, PeerAuthError, PeerClaims, PeerRequest};
use crate::principal::Principal;

/// How far the clocks of two sites may disagree, ms (see [`crate::peer`], "Clock skew").
pub const PEER_MAX_SKEW_MS: i64 = 60_000;

impl Authenticator {
    /// The caller of a peer request: `token` is the `Vesalius-Peer` token, `method` and
    /// `path_and_query` the request's as received. The token must verify
    /// ([`peer::verify_request`], with [`PEER_MAX_SKEW_MS`]) against the issuer's entry in the
    /// registry and this site's identity ([`Self::with_registry`], [`Self::with_peer_identity`];
    /// without both every peer token is refused as `not-configured`). The caller acts as
    /// [`Principal::peer`] in the peer's registered organisation, with its access resolved; the
    /// [`PeerRequest`] carries the token's `jti` to sign the answer with.
    ///
    /// Refusals are [`Error::Peer`] and audited as `login-failed` (denied, anonymous actor named
    /// by the token's unverified `iss`, details `{"reason": code, "credential": "peer-token"}`).
    /// A registry that cannot be read is an [`Error::Store`], not audited.
    pub async fn authenticate_peer(
        &self,
        token: &str,
        method: &str,
        path_and_query: &str,
        origin: Origin<'_>,
    ) -> Result<(Caller, PeerRequest)> {
        let (rec, claims) = match self.verify_peer(token, method, path_and_query).await {
            Ok(x) => x,
            Err(Error::Peer(e)) => return Err(self.peer_refused(token, e, origin).await),
            Err(e) => return Err(e),
        };
        let mut principal = Principal::peer(&rec.name, &rec.org, rec.may_query);
        if let Some(user) = claims.on_behalf() {
            // A search or view on behalf of one of the peer's users: audited as that user at
            // that peer, so "who saw this patient" names the person, not only the site.
            principal.actor.id = format!("{}/{}", rec.name, user.sub);
            principal.actor.name =
                format!("peer:{} for {} ({})", rec.name, user.sub_name, user.sub_org);
            if let crate::principal::PrincipalKind::Peer { for_user, .. } = &mut principal.kind {
                *for_user = true;
            }
        }
        let access = self.access(&principal).await?;
        let caller = Caller {
            principal,
            access,
            source: origin.source.to_owned(),
            user_agent: origin.user_agent.to_owned(),
        };
        let request = PeerRequest {
            jti: claims.jti.clone(),
            claims,
        };
        Ok((caller, request))
    }

    async fn verify_peer(
        &self,
        token: &str,
        method: &str,
        path_and_query: &str,
    ) -> Result<(Peer, PeerClaims)> {
        let (Some(registry), Some(identity)) = (&self.registry, &self.identity) else {
            return Err(PeerAuthError::NotConfigured.into());
        };
        let parsed = peer::parse(token)?;
        // A plain DICOMweb peer is only ever called by us; it has no key to sign with.
        let Some(rec) = registry
            .peer(&parsed.claims.iss)
            .await?
            .filter(|p| p.kind == vesalius_store::registry::PeerKind::Vesalius)
        else {
            return Err(PeerAuthError::UnknownPeer(parsed.claims.iss).into());
        };
        let claims = peer::verify_parsed(
            parsed,
            Some(&rec.public_key),
            &identity.public_key(),
            method,
            path_and_query,
            self.now_ms(),
            PEER_MAX_SKEW_MS,
        )?;
        Ok((rec, claims))
    }

    /// Audits a refused peer token and hands back the error to return.
    async fn peer_refused(&self, token: &str, e: PeerAuthError, origin: Origin<'_>) -> Error {
        // Who the token claims to be: unverified, for the record only.
        let claimed = peer::parse(token).map(|t| t.claims.iss).unwrap_or_default();
        tracing::info!(peer = %claimed, source = origin.source, reason = e.code(), "peer request refused");
        let ev = self.event(
            anonymous(&claimed),
            "login-failed",
            Outcome::Denied,
            origin,
            json!({ "reason": e.code(), "credential": "peer-token" }),
        );
        if let Err(err) = self.audit.append(vec![ev]).await {
            tracing::warn!(error = %err, "could not audit a refused peer request");
        }
        e.into()
    }
}

#[cfg(test)]
mod tests;
