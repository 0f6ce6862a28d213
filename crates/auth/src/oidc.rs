//! OpenID Connect login (authorization code flow with PKCE) so a hospital can use its identity
//! provider, over the `openidconnect` crate.
//!
//! # Flow
//! 1. [`OidcClient::discover`] reads the provider's discovery document and keys once at start.
//! 2. [`OidcClient::begin`] makes the authorization URL with a random `state`, `nonce` and PKCE
//!    challenge (S256). The state, nonce and PKCE verifier travel in a short-lived `HttpOnly`
//!    cookie ([`OIDC_COOKIE`], `SameSite=Lax` so it comes back on the provider's redirect):
//!    nothing is kept in the process, so any node can take the callback, and the cookie binds
//!    the callback to the browser that started (no login CSRF).
//! 3. [`OidcClient::finish`] checks the returned `state` against the cookie, exchanges the code
//!    (with the PKCE verifier), and verifies the ID token: signature with the provider's keys,
//!    issuer, audience, expiry and nonce.
//! 4. [`crate::Authenticator::oidc_login`] maps the identity to a user: by the linked
//!    `(issuer, subject)`, or, once, by a **verified** e-mail address matching exactly one
//!    user without a linked identity (then linked, audited `oidc-link`). Users are not created
//!    automatically: an administrator creates them with their organisation and role.
//!
//! TLS is rustls with the ring provider and the system's root certificates (hospital identity
//! providers often sit under an internal CA installed there). Redirects are not followed
//! (OpenID Connect discovery and token requests never need them; following them invites SSRF).

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse,
};
use serde_json::json;
use vesalius_store::audit::Outcome;
use vesalius_store::directory::{DirectoryChange, User};

use crate::authenticator::{Authenticator, LoginOk, Origin};
use crate::error::{Error, Result};
use crate::secret::constant_time_eq;

/// The cookie holding the pending login (state, nonce, PKCE verifier).
pub const OIDC_COOKIE: &str = "vesalius_oidc";
/// Lifetime of a pending login, seconds.
pub const PENDING_SECS: i64 = 600;

/// Settings of one identity provider.
#[derive(Debug, Clone)]
pub struct OidcOptions {
    /// The issuer URL (discovery at `{issuer}/.well-known/openid-configuration`).
    pub issuer: String,
    /// The client id registered with the provider.
    pub client_id: String,
    /// The client secret (confidential client), if any.
    pub client_secret: Option<String>,
    /// Where the provider redirects back, e.g. `https://pacs.example/auth/oidc/callback`.
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

/// A configured OpenID Connect relying party.
#[derive(Debug, Clone)]
pub struct OidcClient {
    client: Client,
    http: reqwest::Client,
    opts: OidcOptions,
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

/// The `Set-Cookie` value for a pending login (`SameSite=Lax`: it must come back on the
/// provider's top-level redirect).
pub fn pending_cookie(value: &str, secure: bool) -> String {
    format!(
        "{OIDC_COOKIE}={value}; HttpOnly; SameSite=Lax; Path=/{}; Max-Age={PENDING_SECS}",
        if secure { "; Secure" } else { "" }
    )
}

fn provider(e: impl std::fmt::Display) -> Error {
    Error::OidcProvider(e.to_string())
}

fn rejected(e: impl std::fmt::Display) -> Error {
    Error::OidcRejected(e.to_string())
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
    /// verify only if the document's `jwks` was filled in).
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
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(opts.client_id.clone()),
            opts.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect);
        Ok(OidcClient { client, http, opts })
    }

    /// The options.
    pub fn options(&self) -> &OidcOptions {
        &self.opts
    }

    /// Starts a login: the authorization URL and the pending-login cookie value.
    pub fn begin(&self) -> OidcStart {
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
        // All three are base64url, so '.' separates them unambiguously.
        let cookie_value = format!(
            "{}.{}.{}",
            state.secret(),
            nonce.secret(),
            verifier.secret()
        );
        OidcStart {
            url: url.to_string(),
            state: state.secret().clone(),
            cookie_value,
        }
    }

    /// Finishes a login from the callback's `code` and `state` and the pending-login cookie:
    /// exchanges the code and verifies the ID token.
    pub async fn finish(
        &self,
        code: &str,
        state: &str,
        cookie_value: &str,
    ) -> Result<OidcIdentity> {
        let mut parts = cookie_value.split('.');
        let (Some(want_state), Some(nonce), Some(verifier), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(rejected("no pending login"));
        };
        if !constant_time_eq(state, want_state) {
            return Err(rejected("state does not match the pending login"));
        }
        let token = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(provider)?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(rejected)?;
        let id_token = token
            .id_token()
            .ok_or_else(|| rejected("the provider returned no ID token"))?;
        let claims = id_token
            .claims(
                &self.client.id_token_verifier(),
                &Nonce::new(nonce.to_owned()),
            )
            .map_err(rejected)?;
        Ok(OidcIdentity {
            issuer: claims.issuer().to_string(),
            subject: claims.subject().to_string(),
            email: claims.email().map(|e| e.to_string()),
            email_verified: claims.email_verified().unwrap_or(false),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string()),
        })
    }
}

fn http_client() -> Result<reqwest::Client> {
    reqwest::ClientBuilder::new()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(provider)
}

impl Authenticator {
    /// Logs in the user an OpenID Connect identity belongs to (see the module docs for the
    /// mapping). Audited `login` (method `oidc`), `oidc-link` when an identity is linked, and
    /// `login-failed` when no user matches.
    pub async fn oidc_login(
        &self,
        identity: &OidcIdentity,
        link_by_email: bool,
        origin: Origin<'_>,
    ) -> Result<LoginOk> {
        let dir = self.directory();
        if let Some(user) = dir
            .user_by_oidc(&identity.issuer, &identity.subject)
            .await?
        {
            if user.disabled {
                return Err(self.oidc_failed(identity, "disabled", origin).await);
            }
            return self
                .start_oidc_session(user, identity, origin, Vec::new(), Vec::new())
                .await;
        }
        let email = identity
            .email
            .as_deref()
            .filter(|e| link_by_email && identity.email_verified && !e.is_empty());
        let Some(email) = email else {
            return Err(self.oidc_failed(identity, "unknown-identity", origin).await);
        };
        let matches: Vec<User> = dir
            .users()
            .await?
            .into_iter()
            .filter(|u| u.email.eq_ignore_ascii_case(email))
            .collect();
        let [user] = matches.as_slice() else {
            return Err(self
                .oidc_failed(identity, "no-unique-email-match", origin)
                .await);
        };
        if user.disabled || user.oidc.is_some() || user.service {
            return Err(self
                .oidc_failed(identity, "email-user-not-linkable", origin)
                .await);
        }
        let mut linked = user.clone();
        linked.oidc = Some((identity.issuer.clone(), identity.subject.clone()));
        let org = linked
            .memberships
            .first()
            .map(|m| m.org.clone())
            .unwrap_or_default();
        let mut ev = self.event(
            crate::authenticator::user_actor(&linked, &org, None),
            "oidc-link",
            Outcome::Success,
            origin,
            json!({ "issuer": identity.issuer, "subject": identity.subject, "email": email }),
        );
        ev.org = org;
        let changes = vec![DirectoryChange::PutUser(linked.clone())];
        self.start_oidc_session(linked, identity, origin, changes, vec![ev])
            .await
    }

    async fn start_oidc_session(
        &self,
        user: User,
        identity: &OidcIdentity,
        origin: Origin<'_>,
        changes: Vec<DirectoryChange>,
        events: Vec<vesalius_store::audit::AuditEvent>,
    ) -> Result<LoginOk> {
        let details = json!({ "method": "oidc", "issuer": identity.issuer });
        self.start_session(user, "login", details, origin, changes, events)
            .await
    }

    async fn oidc_failed(&self, identity: &OidcIdentity, why: &str, origin: Origin<'_>) -> Error {
        let ev = self.event(
            crate::authenticator::anonymous(&identity.subject),
            "login-failed",
            Outcome::Denied,
            origin,
            json!({ "reason": why, "method": "oidc", "issuer": identity.issuer }),
        );
        match self.audit_log().append(vec![ev]).await {
            Ok(()) => Error::BadCredentials,
            Err(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests;
