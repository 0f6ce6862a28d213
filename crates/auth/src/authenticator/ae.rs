//! DICOM associations: the calling AE title, the called AE title and the peer address decide
//! whether an association is accepted, and as whom.

use std::net::IpAddr;

use serde_json::json;
use vesalius_store::audit::{Actor, ActorKind, Outcome};

use super::{Authenticator, Origin};
use crate::net::addr_allowed;
use crate::principal::Principal;

/// Why an association is refused, with its A-ASSOCIATE-RJ fields (PS3.8 9.3.4, Table 9-21).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AeRejection {
    /// The calling AE title is not known on this site.
    #[error("calling AE title {0:?} not recognized")]
    CallingNotRecognized(String),
    /// The calling AE title is known, but not from this address.
    #[error("calling AE title {ae:?} not allowed from {addr}")]
    AddressNotAllowed {
        /// The calling AE title.
        ae: String,
        /// The peer's address.
        addr: IpAddr,
    },
    /// The called AE title is not one of this site's.
    #[error("called AE title {0:?} not recognized")]
    CalledNotRecognized(String),
    /// The directory could not be read: try again later.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
}

impl AeRejection {
    /// Result: 1 rejected-permanent, 2 rejected-transient.
    pub fn result(&self) -> u8 {
        match self {
            AeRejection::Unavailable(_) => 2,
            _ => 1,
        }
    }

    /// Source: 1 DICOM UL service-user, 3 DICOM UL service-provider (presentation related).
    pub fn source(&self) -> u8 {
        match self {
            AeRejection::Unavailable(_) => 3,
            _ => 1,
        }
    }

    /// Reason: 3 calling-AE-title-not-recognized, 7 called-AE-title-not-recognized (source 1);
    /// 1 temporary-congestion (source 3). An address outside the allow-list is answered as an
    /// unrecognized caller, so that the answer does not confirm the title exists.
    pub fn reason(&self) -> u8 {
        match self {
            AeRejection::CallingNotRecognized(_) | AeRejection::AddressNotAllowed { .. } => 3,
            AeRejection::CalledNotRecognized(_) => 7,
            AeRejection::Unavailable(_) => 1,
        }
    }
}

/// Most characters of an AE title (PS3.5 Table 6.2-1, AE).
const AE_MAX: usize = 16;

impl Authenticator {
    /// Accepts or refuses an association request: the called AE title must be one of the
    /// site's ([`super::AuthOptions::local_ae_titles`]), the calling AE title must be known
    /// (`Directory::ae`) and the peer address in its allow-list. Refusals are audited
    /// (`association-rejected`); accepted associations are audited by what they do.
    pub async fn from_ae(
        &self,
        calling_ae: &str,
        called_ae: &str,
        peer: IpAddr,
    ) -> Result<Principal, AeRejection> {
        // PS3.5 6.2: leading and trailing spaces are not significant.
        let calling = calling_ae.trim();
        let called = called_ae.trim();
        let rejection = if !self.opts.local_ae_titles.is_empty()
            && !self.opts.local_ae_titles.iter().any(|t| t.trim() == called)
        {
            AeRejection::CalledNotRecognized(called.to_owned())
        } else if calling.is_empty() || calling.chars().count() > AE_MAX {
            AeRejection::CallingNotRecognized(calling.to_owned())
        } else {
            match self.dir.ae(calling).await {
                Err(e) => AeRejection::Unavailable(e.to_string()),
                Ok(None) => AeRejection::CallingNotRecognized(calling.to_owned()),
                Ok(Some(ae)) if !addr_allowed(peer, &ae.allowed_addrs) => {
                    AeRejection::AddressNotAllowed {
                        ae: calling.to_owned(),
                        addr: peer,
                    }
                }
                Ok(Some(ae)) => return Ok(Principal::ae(&ae.ae_title, &ae.org, ae.may_query)),
            }
        };
        let source = peer.to_string();
        let ev = self.event(
            Actor {
                kind: ActorKind::Anonymous,
                id: String::new(),
                name: super::truncate(calling, AE_MAX),
                org: String::new(),
                role: String::new(),
            },
            "association-rejected",
            Outcome::Denied,
            Origin::new(&source, ""),
            json!({
                "called_ae": super::truncate(called, AE_MAX),
                "reason": rejection.to_string(),
                "rj_result": rejection.result(),
                "rj_source": rejection.source(),
                "rj_reason": rejection.reason(),
            }),
        );
        if let Err(e) = self.audit.append(vec![ev]).await {
            tracing::warn!(error = %e, "could not audit a rejected association");
        }
        Err(rejection)
    }
}
