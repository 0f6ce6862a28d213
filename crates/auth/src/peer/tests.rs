//! Tokens and answer signatures: the round trip and every refusal.

use super::*;

const NOW: i64 = 1_700_000_000_000;
const SKEW: i64 = 60_000;
const PATH: &str = "/dicomweb/studies?org=a&limit=10";

struct Sites {
    hub: SiteIdentity,
    clinic: SiteIdentity,
}

fn sites() -> Sites {
    Sites {
        hub: SiteIdentity::from_site_key("hub", &SiteKey::generate()),
        clinic: SiteIdentity::from_site_key("clinic", &SiteKey::generate()),
    }
}

/// The clinic's registry: it knows the hub under its key.
fn registered(hub: &SiteIdentity) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| (name == "hub").then(|| hub.public_key())
}

fn check(
    s: &Sites,
    token: &str,
    method: &str,
    path: &str,
    now: i64,
) -> Result<PeerClaims, PeerAuthError> {
    verify_request(
        token,
        &s.clinic.public_key(),
        registered(&s.hub),
        method,
        path,
        now,
        SKEW,
    )
}

fn token(s: &Sites) -> String {
    s.hub
        .sign_request(&s.clinic.public_key(), "GET", PATH, None, NOW)
}

/// Splits a token, lets `f` edit the claims JSON, and re-encodes it with the old signature.
fn edit_claims(token: &str, f: impl FnOnce(&mut serde_json::Value)) -> String {
    let (c, sig) = token.split_once('.').unwrap();
    let mut v: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).unwrap()).unwrap();
    f(&mut v);
    format!(
        "{}.{sig}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
    )
}

/// A token with the given claims, signed by `by`.
fn signed(by: &SiteIdentity, claims: &serde_json::Value) -> String {
    let bytes = serde_json::to_vec(claims).unwrap();
    let sig = by.signing.sign(&bytes);
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&bytes),
        URL_SAFE_NO_PAD.encode(sig.to_bytes())
    )
}

fn claims_of(token: &str) -> serde_json::Value {
    let (c, _) = token.split_once('.').unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).unwrap()).unwrap()
}

#[test]
fn round_trip() {
    let s = sites();
    let on_behalf = OnBehalf {
        sub: "u1".into(),
        sub_org: "radiology".into(),
        sub_name: "alice".into(),
    };
    let t = s.hub.sign_request(
        &s.clinic.public_key(),
        "GET",
        PATH,
        Some(on_behalf.clone()),
        NOW,
    );
    let c = check(&s, &t, "GET", PATH, NOW + 1_000).unwrap();
    assert_eq!(c.iss, "hub");
    assert_eq!(c.iss_pk, s.hub.public_key());
    assert_eq!(c.aud, s.clinic.public_key());
    assert_eq!((c.iat, c.exp), (NOW, NOW + TOKEN_TTL_MS));
    assert_eq!(c.jti.len(), 32);
    assert!(c.jti.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!((c.m.as_str(), c.p.as_str()), ("GET", PATH));
    assert_eq!(c.on_behalf(), Some(on_behalf));
    assert_eq!(token_jti(&t), Some(c.jti.clone()));
    // Without a user, no sub claims at all.
    let t = token(&s);
    let c = check(&s, &t, "GET", PATH, NOW).unwrap();
    assert_eq!(c.on_behalf(), None);
    assert!(claims_of(&t).get("sub").is_none());
    // Fresh jti every time.
    assert_ne!(token_jti(&token(&s)), token_jti(&token(&s)));
    // Usable within the skew on both sides.
    assert!(check(&s, &t, "GET", PATH, NOW - SKEW).is_ok());
    assert!(check(&s, &t, "GET", PATH, NOW + TOKEN_TTL_MS + SKEW).is_ok());
}

#[test]
fn same_site_key_same_public_key() {
    let key = SiteKey::generate();
    let a = SiteIdentity::from_site_key("hub", &key);
    let b = SiteIdentity::from_site_key("hub", &key);
    assert_eq!(a.public_key(), b.public_key());
    assert!(a.public_key().starts_with("ed25519:"));
    assert_eq!(a.public_key().len(), "ed25519:".len() + 43);
    assert!(valid_public_key(&a.public_key()));
    assert!(!valid_public_key("ed25519:abc"));
    // The peer key is derived, not the site key itself.
    assert_ne!(
        URL_SAFE_NO_PAD
            .decode(&a.public_key()["ed25519:".len()..])
            .unwrap(),
        hex::decode(key.public_hex()).unwrap()
    );
    let other = SiteIdentity::from_site_key("hub", &SiteKey::generate());
    assert_ne!(a.public_key(), other.public_key());
    // The seed never shows in Debug.
    assert!(!format!("{a:?}").contains(&hex::encode(key.derive_key(KEY_PURPOSE))));
}

#[test]
fn unknown_issuer() {
    let s = sites();
    let stranger = SiteIdentity::from_site_key("stranger", &SiteKey::generate());
    let t = stranger.sign_request(&s.clinic.public_key(), "GET", PATH, None, NOW);
    assert_eq!(
        check(&s, &t, "GET", PATH, NOW),
        Err(PeerAuthError::UnknownPeer("stranger".into()))
    );
}

#[test]
fn wrong_key() {
    let s = sites();
    // Another key calling itself "hub", with its own key in iss_pk.
    let impostor = SiteIdentity::from_site_key("hub", &SiteKey::generate());
    let t = impostor.sign_request(&s.clinic.public_key(), "GET", PATH, None, NOW);
    assert_eq!(
        check(&s, &t, "GET", PATH, NOW),
        Err(PeerAuthError::WrongKey)
    );
    // ...or claiming the hub's key but signing with its own.
    let mut c = claims_of(&t);
    c["iss_pk"] = s.hub.public_key().into();
    let t = signed(&impostor, &c);
    assert_eq!(
        check(&s, &t, "GET", PATH, NOW),
        Err(PeerAuthError::BadSignature)
    );
    // A registered key that is not a key refuses everything from that peer.
    let t = token(&s);
    let broken = verify_request(
        &t,
        &s.clinic.public_key(),
        |_| Some("ed25519:nonsense".into()),
        "GET",
        PATH,
        NOW,
        SKEW,
    );
    assert_eq!(broken, Err(PeerAuthError::WrongKey));
}

#[test]
fn tampered_claims() {
    let s = sites();
    let t = token(&s);
    let edited = edit_claims(&t, |v| v["p"] = "/dicomweb/studies?org=b".into());
    assert_eq!(
        check(&s, &edited, "GET", "/dicomweb/studies?org=b", NOW),
        Err(PeerAuthError::BadSignature)
    );
    let edited = edit_claims(&t, |v| v["exp"] = (NOW + 200_000).into());
    assert_eq!(
        check(&s, &edited, "GET", PATH, NOW),
        Err(PeerAuthError::BadSignature)
    );
}

#[test]
fn tampered_signature() {
    let s = sites();
    let t = token(&s);
    let (c, sig) = t.split_once('.').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
    raw[10] ^= 1;
    let t2 = format!("{c}.{}", URL_SAFE_NO_PAD.encode(&raw));
    assert_eq!(
        check(&s, &t2, "GET", PATH, NOW),
        Err(PeerAuthError::BadSignature)
    );
    let t3 = format!("{c}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
    assert_eq!(
        check(&s, &t3, "GET", PATH, NOW),
        Err(PeerAuthError::BadSignature)
    );
}

#[test]
fn other_audience() {
    let s = sites();
    let elsewhere = SiteIdentity::from_site_key("elsewhere", &SiteKey::generate());
    let t = s
        .hub
        .sign_request(&elsewhere.public_key(), "GET", PATH, None, NOW);
    assert_eq!(
        check(&s, &t, "GET", PATH, NOW),
        Err(PeerAuthError::WrongAudience)
    );
}

#[test]
fn other_path_or_method() {
    let s = sites();
    let t = token(&s);
    for (m, p) in [
        ("GET", "/dicomweb/studies?org=a&limit=11"),
        ("GET", "/dicomweb/studies"),
        ("GET", "/dicomweb/studies?limit=10&org=a"),
        ("POST", PATH),
        ("get", PATH),
    ] {
        assert_eq!(
            check(&s, &t, m, p, NOW),
            Err(PeerAuthError::WrongRequest),
            "{m} {p}"
        );
    }
}

#[test]
fn expired_and_not_yet_valid() {
    let s = sites();
    let t = token(&s);
    let late = NOW + TOKEN_TTL_MS + SKEW + 1;
    assert_eq!(
        check(&s, &t, "GET", PATH, late),
        Err(PeerAuthError::Expired)
    );
    let early = NOW - SKEW - 1;
    assert_eq!(
        check(&s, &t, "GET", PATH, early),
        Err(PeerAuthError::NotYetValid)
    );
    // A signed token claiming too long a life is refused however fresh.
    let mut c = claims_of(&t);
    c["exp"] = (NOW + MAX_LIFETIME_MS + 1).into();
    assert_eq!(
        check(&s, &signed(&s.hub, &c), "GET", PATH, NOW),
        Err(PeerAuthError::Malformed("lifetime over 300 s"))
    );
    c["exp"] = (NOW - 1).into();
    assert!(matches!(
        check(&s, &signed(&s.hub, &c), "GET", PATH, NOW),
        Err(PeerAuthError::Malformed(_))
    ));
    // Extreme values do not overflow.
    c["iat"] = i64::MIN.into();
    c["exp"] = i64::MAX.into();
    assert!(matches!(
        check(&s, &signed(&s.hub, &c), "GET", PATH, NOW),
        Err(PeerAuthError::Malformed(_))
    ));
}

#[test]
fn garbage_and_oversized() {
    let s = sites();
    let good = token(&s);
    let (c, sig) = good.split_once('.').unwrap();
    let long_path = format!("/x?{}", "a".repeat(MAX_TOKEN_BYTES));
    let huge = s
        .hub
        .sign_request(&s.clinic.public_key(), "GET", &long_path, None, NOW);
    for bad in [
        String::new(),
        "garbage".into(),
        ".".into(),
        c.to_string(),
        format!("{c}.{sig}.x"),
        format!("{c}.!!"),
        format!("{c}.{}", URL_SAFE_NO_PAD.encode([1u8; 63])),
        format!("{c}=.{sig}"),
        format!("{}.{sig}", URL_SAFE_NO_PAD.encode(b"[1,2]")),
        format!("{}.{sig}", URL_SAFE_NO_PAD.encode(b"{\"iss\":\"hub\"}")),
        "x".repeat(MAX_TOKEN_BYTES + 1),
        huge,
    ] {
        let r = check(&s, &bad, "GET", PATH, NOW);
        assert!(
            matches!(r, Err(PeerAuthError::Malformed(_))),
            "{bad:.40}: {r:?}"
        );
    }
    // A jti that could not be echoed into an answer safely.
    let mut v = claims_of(&good);
    v["jti"] = "a\nb".into();
    assert_eq!(
        check(&s, &signed(&s.hub, &v), "GET", PATH, NOW),
        Err(PeerAuthError::Malformed("jti"))
    );
}

#[test]
fn codes_are_stable() {
    let all = [
        (PeerAuthError::Malformed("x"), "malformed"),
        (PeerAuthError::UnknownPeer("x".into()), "unknown-peer"),
        (PeerAuthError::WrongKey, "wrong-key"),
        (PeerAuthError::BadSignature, "bad-signature"),
        (PeerAuthError::WrongAudience, "wrong-audience"),
        (PeerAuthError::WrongRequest, "wrong-request"),
        (PeerAuthError::Expired, "expired"),
        (PeerAuthError::NotYetValid, "not-yet-valid"),
        (PeerAuthError::NotConfigured, "not-configured"),
    ];
    for (e, code) in all {
        assert_eq!(e.code(), code);
        assert_eq!(e.kind().http_status(), 401);
    }
}

#[test]
fn authorization_header() {
    assert_eq!(peer_token("Vesalius-Peer abc.def"), Some("abc.def"));
    assert_eq!(peer_token("vesalius-peer  abc.def "), Some("abc.def"));
    assert_eq!(peer_token("Bearer abc.def"), None);
    assert_eq!(peer_token("Vesalius-Peer "), None);
}

#[test]
fn answer_signatures() {
    let s = sites();
    let body = br#"{"missing":[]}"#;
    let sig = s.clinic.sign_response("00ff", body);
    let pk = s.clinic.public_key();
    assert_eq!(verify_response(&pk, "00ff", body, &sig), Ok(()));
    assert_eq!(
        verify_response(&pk, "00fe", body, &sig),
        Err(PeerAuthError::BadSignature),
        "another request's answer"
    );
    assert_eq!(
        verify_response(&pk, "00ff", br#"{"missing":[1]}"#, &sig),
        Err(PeerAuthError::BadSignature),
        "another body"
    );
    assert_eq!(
        verify_response(&s.hub.public_key(), "00ff", body, &sig),
        Err(PeerAuthError::BadSignature),
        "another site"
    );
    let mut raw = URL_SAFE_NO_PAD.decode(&sig).unwrap();
    raw[0] ^= 0x80;
    assert_eq!(
        verify_response(&pk, "00ff", body, &URL_SAFE_NO_PAD.encode(&raw)),
        Err(PeerAuthError::BadSignature)
    );
    assert!(matches!(
        verify_response(&pk, "00ff", body, "not base64!"),
        Err(PeerAuthError::Malformed(_))
    ));
    assert_eq!(
        verify_response("ed25519:", "00ff", body, &sig),
        Err(PeerAuthError::WrongKey)
    );
    // A request signature is no answer signature, and the other way round.
    let t = token(&s);
    let (_, req_sig) = t.split_once('.').unwrap();
    assert!(verify_response(&s.hub.public_key(), "00ff", body, req_sig).is_err());
}
