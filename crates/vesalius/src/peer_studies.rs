//! The API's [`PeerStudies`] hook over the exchange's federation (issue 6): key images and
//! measurement reports on a study held at a peer are built from its metadata read through
//! the federation and stored at the peer (docs/exchange.md, "Key images and measurements on a
//! peer's study").

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use vesalius_api::ApiError;
use vesalius_api::annotate::PeerStudies;
use vesalius_auth::Caller;
use vesalius_exchange::federation::Federation;

/// [`PeerStudies`] through `Federation`.
pub struct FederatedStudies(pub Arc<Federation>);

fn api_error(e: vesalius_exchange::api::ApiError) -> ApiError {
    ApiError {
        kind: e.kind,
        message: e.message,
    }
}

impl PeerStudies for FederatedStudies {
    fn metadata<'a>(
        &'a self,
        caller: &'a Caller,
        peer: &'a str,
        study: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Value>, ApiError>> {
        async move {
            self.0
                .remote_study_metadata(caller, peer, study)
                .await
                .map_err(api_error)
        }
        .boxed()
    }

    fn creator(&self, caller: &Caller) -> String {
        // The peer names the caller `ISSUER/SUB` (vesalius_auth's peer authentication).
        format!(
            "{}/{}",
            self.0.site_name(),
            vesalius_auth::peer::OnBehalf::of(&caller.principal).sub
        )
    }

    fn store<'a>(
        &'a self,
        caller: &'a Caller,
        peer: &'a str,
        study: &'a str,
        sop_uid: &'a str,
        part10: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        async move {
            self.0
                .store_in_remote_study(caller, peer, study, sop_uid, part10)
                .await
                .map_err(api_error)
        }
        .boxed()
    }
}
