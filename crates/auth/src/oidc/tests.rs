//! OpenID Connect: the authorization request and the identity-to-user mapping. The code
//! exchange and ID-token verification need a real provider: they are exercised end to end by
//! the interop tests against npm `oidc-provider`.

use std::collections::HashMap;
use std::sync::Arc;

use vesalius_store::audit::{AuditFilter, Outcome};
use vesalius_store::directory::{DirectoryChange, Membership, Role, User};
use vesalius_store::memory_directory::{MemoryAuditLog, MemoryDirectory};
use vesalius_store::{AuditLog, Directory};

use super::pending::MAX_NEXT_LEN;
use super::*;
use crate::authenticator::{AuthOptions, Authenticator, Origin};
use crate::password::PasswordParams;

const DISCOVERY: &str = r#"{
    "issuer": "https://idp.example",
    "authorization_endpoint": "https://idp.example/auth",
    "token_endpoint": "https://idp.example/token",
    "jwks_uri": "https://idp.example/jwks",
    "response_types_supported": ["code"],
    "subject_types_supported": ["public"],
    "id_token_signing_alg_values_supported": ["RS256"]
}"#;

fn client() -> OidcClient {
    let opts = OidcOptions::new(
        "https://idp.example",
        "vesalius",
        "https://pacs.example/auth/oidc/callback",
    )
    .client_secret("s3cret");
    OidcClient::from_metadata_json(opts, DISCOVERY).unwrap()
}

#[test]
fn authorization_request_carries_state_nonce_and_pkce() {
    let c = client();
    let start = c.begin();
    let url = reqwest::Url::parse(&start.url).unwrap();
    assert_eq!(
        url.as_str().split('?').next(),
        Some("https://idp.example/auth")
    );
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "vesalius");
    assert_eq!(q["redirect_uri"], "https://pacs.example/auth/oidc/callback");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["state"], start.state);
    let scopes: Vec<&str> = q["scope"].split(' ').collect();
    assert_eq!(scopes, vec!["openid", "email", "profile"]);
    // The cookie carries the state, the nonce sent and the PKCE verifier of the challenge.
    let parts: Vec<&str> = start.cookie_value.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0], start.state);
    assert_eq!(parts[1], q["nonce"]);
    let challenge =
        PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(parts[2].into()));
    assert_eq!(challenge.as_str(), q["code_challenge"]);
    // Fresh every time.
    assert_ne!(c.begin().state, start.state);
    assert!(
        pending_cookie(&start.cookie_value, true)
            .contains("HttpOnly; SameSite=Lax; Path=/; Secure; Max-Age=600")
    );
    assert!(clear_pending_cookie(false).starts_with("vesalius_oidc=; HttpOnly; SameSite=Lax"));
    assert!(clear_pending_cookie(false).ends_with("Max-Age=0"));
}

#[test]
fn the_pending_login_keeps_only_same_site_paths_to_return_to() {
    let c = client();
    let start = c.begin_with_next(Some("/studies/1.2.3?view=a.b#x"));
    let p = PendingLogin::parse(&start.cookie_value).unwrap();
    assert_eq!(p.state, start.state);
    assert_eq!(p.next.as_deref(), Some("/studies/1.2.3?view=a.b#x"));
    for bad in [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "relative/path",
        "/a\nb",
        "/with space",
        "/caf\u{e9}",
        "",
    ] {
        let s = c.begin_with_next(Some(bad));
        assert_eq!(s.cookie_value.split('.').count(), 3, "{bad:?}");
        assert_eq!(PendingLogin::parse(&s.cookie_value).unwrap().next, None);
    }
    let long = format!("/{}", "a".repeat(MAX_NEXT_LEN));
    assert_eq!(safe_next(&long), None);
    // A cookie whose `next` was edited in the browser into an absolute URL is not one of ours.
    use base64::Engine;
    let forged = format!(
        "{}.{}",
        c.begin().cookie_value,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("https://evil.example")
    );
    assert_eq!(PendingLogin::parse(&forged), None);
    for garbage in ["", "a.b", "a.b.c.d.e", "a.b.c.!!!", "a b.c.d", "a..c"] {
        assert_eq!(PendingLogin::parse(garbage), None, "{garbage:?}");
    }
}

#[tokio::test]
async fn callbacks_without_the_matching_pending_login_are_refused() {
    let c = client();
    let start = c.begin();
    // Refused before any request to the provider (which does not exist here).
    let e = c
        .finish("code", "other-state", &start.cookie_value)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::OidcRejected(_)), "{e:?}");
    let e = c.finish("code", &start.state, "garbage").await.unwrap_err();
    assert!(matches!(e, Error::OidcRejected(_)), "{e:?}");
    assert_eq!(e.kind(), vesalius_core::ErrorKind::Unauthorized);
}

fn user(id: &str, email: &str) -> User {
    User {
        id: id.into(),
        username: id.into(),
        display_name: id.into(),
        email: email.into(),
        memberships: vec![Membership {
            org: "a".into(),
            role: Role::Clinician,
        }],
        password_hash: None,
        oidc: None,
        service: false,
        disabled: false,
        must_change_password: false,
        created_ms: 0,
        site_admin: false,
    }
}

fn identity(sub: &str, email: Option<&str>, verified: bool) -> OidcIdentity {
    OidcIdentity {
        issuer: "https://idp.example".into(),
        subject: sub.into(),
        email: email.map(Into::into),
        email_verified: verified,
        name: None,
    }
}

#[tokio::test]
async fn identities_map_to_users() {
    let log = Arc::new(MemoryAuditLog::new());
    let dir = Arc::new(MemoryDirectory::new(log.clone()));
    let mut linked = user("linked", "l@example.org");
    linked.oidc = Some(("https://idp.example".into(), "sub-1".into()));
    let mut twin1 = user("twin1", "twin@example.org");
    let twin2 = user("twin2", "TWIN@example.org");
    twin1.username = "twin-one".into();
    dir.apply(
        vec![
            DirectoryChange::PutUser(linked),
            DirectoryChange::PutUser(user("mail", "Dr.Mail@Example.org")),
            DirectoryChange::PutUser(twin1),
            DirectoryChange::PutUser(twin2),
        ],
        vec![],
    )
    .await
    .unwrap();
    let auth = Authenticator::new(
        dir.clone(),
        log.clone(),
        AuthOptions::new().password_params(PasswordParams::INSECURE_FOR_TESTS),
    );
    let here = Origin::new("10.0.0.1", "test");

    // Linked identity.
    let ok = auth
        .oidc_login(&identity("sub-1", None, false), true, here)
        .await
        .unwrap();
    assert_eq!(ok.user.id, "linked");
    let (p, _) = auth.from_session(&ok.cookie_secret).await.unwrap();
    assert_eq!(p.role, Some(Role::Clinician));

    // Unverified e-mail: refused; verified: linked once, then found by identity.
    let unverified = identity("sub-2", Some("dr.mail@example.org"), false);
    let refused = auth.oidc_login(&unverified, true, here).await.unwrap_err();
    assert!(matches!(refused, Error::Forbidden(_)), "{refused:?}");
    assert_eq!(refused.kind().http_status(), 403);
    let verified = identity("sub-2", Some("dr.mail@example.org"), true);
    assert!(
        auth.oidc_login(&verified, false, here).await.is_err(),
        "linking off"
    );
    let ok = auth.oidc_login(&verified, true, here).await.unwrap();
    assert_eq!(ok.user.id, "mail");
    let stored = dir.user("mail").await.unwrap().unwrap();
    assert_eq!(
        stored.oidc,
        Some(("https://idp.example".into(), "sub-2".into()))
    );
    // Another subject with the same e-mail cannot take the account over.
    let other = identity("sub-3", Some("dr.mail@example.org"), true);
    assert!(auth.oidc_login(&other, true, here).await.is_err());
    // Ambiguous e-mail: refused.
    let twin = identity("sub-4", Some("twin@example.org"), true);
    assert!(auth.oidc_login(&twin, true, here).await.is_err());

    let actions: Vec<(String, Outcome)> = log
        .search(&AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .rev()
        .map(|r| (r.event.action, r.event.outcome))
        .collect();
    let count = |a: &str, o: Outcome| actions.iter().filter(|(x, y)| x == a && *y == o).count();
    assert_eq!(count("login", Outcome::Success), 2);
    assert_eq!(count("oidc-link", Outcome::Success), 1);
    assert_eq!(count("login-failed", Outcome::Denied), 4);
}
