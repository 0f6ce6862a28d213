//! OpenID Connect login (authorization code flow with PKCE) so a hospital can use its identity
//! provider, over the `openidconnect` crate.
//!
//! # Flow
//! 1. [`OidcClient::discover`] reads the provider's discovery document and keys (the binary
//!    does it in the background at start and retries until the provider answers).
//! 2. [`OidcClient::begin`] makes the authorization URL with a random `state`, `nonce` and PKCE
//!    challenge (S256). The state, nonce, PKCE verifier and the page to return to travel in a
//!    short-lived `HttpOnly` cookie ([`OIDC_COOKIE`], `SameSite=Lax` so it comes back on the
//!    provider's redirect; see [`pending`]): nothing is kept in the process, so any node can take
//!    the callback, and the cookie binds the callback to the browser that started (no login
//!    CSRF).
//! 3. [`OidcClient::finish`] checks the returned `state` against the cookie, exchanges the code
//!    (with the PKCE verifier and the client secret, HTTP Basic), and verifies the ID token:
//!    signature with the provider's keys, issuer, audience, expiry and nonce. Keys are fetched
//!    again (at most once a minute) when a token names a key we do not have, so a provider's key
//!    rotation needs no restart. The e-mail address and name come from the ID token or, when a
//!    provider follows OpenID Connect Core 5.4 and returns scope claims only from the UserInfo
//!    endpoint (npm `oidc-provider` does by default), from UserInfo, whose `sub` must equal the
//!    ID token's.
//! 4. [`crate::Authenticator::oidc_login`] maps the identity to a user: by the linked
//!    `(issuer, subject)`, or, once, by a **verified** e-mail address matching exactly one
//!    user without a linked identity (then linked, audited `oidc-link`). Users are not created
//!    automatically: an administrator creates them with their organisation, role and e-mail
//!    (`vesalius admin user create … --email … --no-password`).
//!
//! TLS is rustls with the ring provider and the system's root certificates (hospital identity
//! providers often sit under an internal CA installed there). Redirects are not followed
//! (OpenID Connect discovery and token requests never need them; following them invites SSRF).

mod login;
pub mod pending;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdTokenVerifier, CoreJsonWebKeySet,
    CoreProviderMetadata, CoreUserInfoClaims,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, JsonWebKeySetUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError,
    Scope, SignatureVerificationError, TokenResponse,
};

pub use login::NO_USER_MESSAGE;
pub use pending::{
    OIDC_COOKIE, PENDING_SECS, PendingLogin, clear_pending_cookie, pending_cookie, safe_next,
};

use crate::error::{Error, Result};
use crate::secret::constant_time_eq;

/// Settings of one identity provider.
#[derive(Debug, Clone)]
pub struct OidcOptions {
    /// The issuer URL (discovery at `{issuer}/.well-known/openid-configuration`).
    pub issuer: String,
    /// The client id registered with the provider.
    pub client_id: String,
    /// The client secret (confidential client), if any.
    pub client_secret: Option<String>,
    /// Where the provider redirects back, e.g.
    /// `https://pacs.example/api/v1/auth/oidc/callback`; registered with the provider as is.
    pub redirect_url: String,
    /// Scopes besides `openid` (default `email`, `profile`).
    pub scopes: Vec<String>,
    /// Whether a verified e-mail may link an identity to an existing user (default on).
    pub link_by_email: bool,
}

impl OidcOptions {
    /// Options with the default scopes and e-mail linking on.
    pub fn new(issuer: &str, client_id: &str, redirect_url: &str) -> Self {
        OidcOptions {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: None,
            redirect_url: redirect_url.to_owned(),
            scopes: vec!["email".into(), "profile".into()],
            link_by_email: true,
        }
    }

    /// Sets the client secret.
    pub fn client_secret(mut self, secret: &str) -> Self {
        self.client_secret = Some(secret.to_owned());
        self
    }
}

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// How often the provider's keys may be fetched again for a token signed by an unknown key.
const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// A configured OpenID Connect relying party.
#[derive(Debug)]
pub struct OidcClient {
    client: Client,
    http: reqwest::Client,
    opts: OidcOptions,
    issuer: IssuerUrl,
    jwks_uri: JsonWebKeySetUrl,
    /// The signing keys: from discovery, replaced when fetched again; with the time of the
    /// last fetch (rate limit).
    keys: Mutex<(CoreJsonWebKeySet, Option<Instant>)>,
}

/// What [`OidcClient::begin`] hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcStart {
    /// Where to redirect the browser.
    pub url: String,
    /// The `state` parameter in it.
    pub state: String,
    /// The pending login, to set as the [`OIDC_COOKIE`] value ([`pending_cookie`]).
    pub cookie_value: String,
}

/// A verified identity from the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcIdentity {
    /// The issuer.
    pub issuer: String,
    /// The subject at that issuer.
    pub subject: String,
    /// E-mail address, if given.
    pub email: Option<String>,
    /// Whether the provider says the e-mail is verified.
    pub email_verified: bool,
    /// Display name, if given.
    pub name: Option<String>,
}

/// The error and its sources, one line (the crate's own messages say little: "Request failed").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn provider(e: impl std::error::Error) -> Error {
    Error::OidcProvider(chain(&e))
}

fn rejected(e: impl std::error::Error) -> Error {
    Error::OidcRejected(chain(&e))
}

fn rejected_msg(m: &str) -> Error {
    Error::OidcRejected(m.to_owned())
}

impl OidcClient {
    /// Reads the provider's discovery document and signing keys.
    pub async fn discover(opts: OidcOptions) -> Result<Self> {
        let http = http_client()?;
        let issuer = IssuerUrl::new(opts.issuer.clone()).map_err(provider)?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &http)
            .await
            .map_err(provider)?;
        Self::from_metadata(opts, metadata, http)
    }

    /// A client from a discovery document already at hand (keys not fetched: ID tokens then
    /// verify only if the document's `jwks` was filled in, or once fetched for an unknown key).
    pub fn from_metadata_json(opts: OidcOptions, discovery_json: &str) -> Result<Self> {
        let metadata: CoreProviderMetadata =
            serde_json::from_str(discovery_json).map_err(provider)?;
        Self::from_metadata(opts, metadata, http_client()?)
    }

    fn from_metadata(
        opts: OidcOptions,
        metadata: CoreProviderMetadata,
        http: reqwest::Client,
    ) -> Result<Self> {
        let redirect = RedirectUrl::new(opts.redirect_url.clone()).map_err(provider)?;
        let issuer = metadata.issuer().clone();
        let jwks_uri = metadata.jwks_uri().clone();
        let keys = metadata.jwks().clone();
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(opts.client_id.clone()),
            opts.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect);
        Ok(OidcClient {
            client,
            http,
            opts,
            issuer,
            jwks_uri,
            keys: Mutex::new((keys, None)),
        })
    }

    /// The options.
    pub fn options(&self) -> &OidcOptions {
        &self.opts
    }

    /// Starts a login: the authorization URL and the pending-login cookie value.
    pub fn begin(&self) -> OidcStart {
        self.begin_with_next(None)
    }

    /// Starts a login that returns to `next` afterwards (kept only if [`safe_next`] accepts it).
    pub fn begin_with_next(&self, next: Option<&str>) -> OidcStart {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = self.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for s in &self.opts.scopes {
            req = req.add_scope(Scope::new(s.clone()));
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        let pending = PendingLogin {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            next: next.and_then(safe_next).map(str::to_owned),
        };
        OidcStart {
            url: url.to_string(),
            state: pending.state.clone(),
            cookie_value: pending.to_cookie_value(),
        }
    }

    /// Finishes a login from the callback's `code` and `state` and the pending-login cookie:
    /// exchanges the code and verifies the ID token. [`Error::OidcRejected`] for anything the
    /// browser or the provider's answers got wrong, [`Error::OidcProvider`] when the provider
    /// cannot be reached.
    pub async fn finish(
        &self,
        code: &str,
        state: &str,
        cookie_value: &str,
    ) -> Result<OidcIdentity> {
        let Some(pending) = PendingLogin::parse(cookie_value) else {
            return Err(rejected_msg("no pending login"));
        };
        if !constant_time_eq(state, &pending.state) {
            return Err(rejected_msg("state does not match the pending login"));
        }
        if code.is_empty() {
            return Err(rejected_msg("no authorization code"));
        }
        let token = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(provider)?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(_) => rejected(e),
                _ => provider(e),
            })?;
        let id_token = token
            .id_token()
            .ok_or_else(|| rejected_msg("the provider returned no ID token"))?;
        let nonce = Nonce::new(pending.nonce);
        let keys = self.keys.lock().expect("keys lock").0.clone();
        let claims = match id_token.claims(&self.verifier(keys), &nonce) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let keys = self.refresh_keys().await?;
                id_token
                    .claims(&self.verifier(keys), &nonce)
                    .map_err(rejected)?
            }
            other => other.map_err(rejected)?,
        };
        let mut identity = OidcIdentity {
            issuer: claims.issuer().to_string(),
            subject: claims.subject().to_string(),
            email: claims.email().map(|e| e.to_string()),
            email_verified: claims.email_verified().unwrap_or(false),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string()),
        };
        if identity.email.is_none()
            && let Ok(req) = self
                .client
                .user_info(token.access_token().clone(), Some(claims.subject().clone()))
        {
            // OpenID Connect Core 5.4: scope claims may be served by UserInfo only; the
            // crate checks that its `sub` is the ID token's.
            let info: CoreUserInfoClaims = req.request_async(&self.http).await.map_err(rejected)?;
            identity.email = info.email().map(|e| e.to_string());
            identity.email_verified = info.email_verified().unwrap_or(false);
            if identity.name.is_none() {
                identity.name = info.name().and_then(|n| n.get(None)).map(|n| n.to_string());
            }
        }
        Ok(identity)
    }

    fn verifier(&self, keys: CoreJsonWebKeySet) -> CoreIdTokenVerifier<'static> {
        let id = ClientId::new(self.opts.client_id.clone());
        match &self.opts.client_secret {
            Some(s) => CoreIdTokenVerifier::new_confidential_client(
                id,
                ClientSecret::new(s.clone()),
                self.issuer.clone(),
                keys,
            ),
            None => CoreIdTokenVerifier::new_public_client(id, self.issuer.clone(), keys),
        }
    }

    /// Fetches the provider's keys again (key rotation), at most once per
    /// [`KEY_REFRESH_INTERVAL`]; the keys to verify with.
    async fn refresh_keys(&self) -> Result<CoreJsonWebKeySet> {
        {
            let k = self.keys.lock().expect("keys lock");
            if k.1.is_some_and(|t| t.elapsed() < KEY_REFRESH_INTERVAL) {
                return Ok(k.0.clone());
            }
        }
        let fresh = CoreJsonWebKeySet::fetch_async(&self.jwks_uri, &self.http)
            .await
            .map_err(provider)?;
        tracing::info!(issuer = %self.issuer.as_str(), keys = fresh.keys().len(), "identity provider keys fetched again");
        *self.keys.lock().expect("keys lock") = (fresh.clone(), Some(Instant::now()));
        Ok(fresh)
    }
}

fn http_client() -> Result<reqwest::Client> {
    reqwest::ClientBuilder::new()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(provider)
}

#[cfg(test)]
mod tests;
