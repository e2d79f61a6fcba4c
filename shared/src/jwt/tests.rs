use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

const RSA_PRIVATE: &str = include_str!("../../testdata/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../../testdata/rsa_public.pem");
const EC_PRIVATE: &str = include_str!("../../testdata/ec_private.pem");
const EC_PUBLIC: &str = include_str!("../../testdata/ec_public.pem");
const ED_PRIVATE: &str = include_str!("../../testdata/ed25519_private.pem");
const ED_PUBLIC: &str = include_str!("../../testdata/ed25519_public.pem");
const JWKS: &str = include_str!("../../testdata/jwks.json");

fn now() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp() as u64
}

fn expect() -> Expectations {
    Expectations {
        audience: "herald".into(),
        issuer: None,
    }
}

fn claims() -> serde_json::Value {
    json!({ "sub": "alice", "aud": "herald", "exp": now() + 60, "ns": ["team-*"] })
}

fn sign(header: Header, claims: &serde_json::Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn verify(keys: &KeySet, token: &str) -> Result<UserClaims, TokenError> {
    keys.verify::<UserClaims>(token, &expect())
}

#[test]
fn hs256_checks_signature_and_claims() {
    let keys = KeySet::hs256(b"s3cret");
    let key = EncodingKey::from_secret(b"s3cret");
    let ok = verify(&keys, &sign(Header::default(), &claims(), &key)).unwrap();
    assert_eq!(ok.sub, "alice");

    let wrong_key = sign(
        Header::default(),
        &claims(),
        &EncodingKey::from_secret(b"other"),
    );
    assert!(matches!(
        verify(&keys, &wrong_key),
        Err(TokenError::Invalid(_))
    ));

    let mut expired = claims();
    expired["exp"] = json!(now() - 1);
    assert_eq!(
        verify(&keys, &sign(Header::default(), &expired, &key)).unwrap_err(),
        TokenError::Expired
    );

    let mut wrong_aud = claims();
    wrong_aud["aud"] = json!("someone-else");
    assert!(matches!(
        verify(&keys, &sign(Header::default(), &wrong_aud, &key)),
        Err(TokenError::Invalid(_))
    ));

    let mut not_yet = claims();
    not_yet["nbf"] = json!(now() + 60);
    assert!(matches!(
        verify(&keys, &sign(Header::default(), &not_yet, &key)),
        Err(TokenError::Invalid(_))
    ));

    let mut no_sub = claims();
    no_sub.as_object_mut().unwrap().remove("sub");
    assert!(matches!(
        verify(&keys, &sign(Header::default(), &no_sub, &key)),
        Err(TokenError::Invalid(_))
    ));

    assert!(matches!(
        verify(&keys, "not.a.jwt"),
        Err(TokenError::Invalid(_))
    ));
}

#[test]
fn the_issuer_is_checked_when_configured() {
    let keys = KeySet::hs256(b"k");
    let key = EncodingKey::from_secret(b"k");
    let mut with_iss = claims();
    with_iss["iss"] = json!("https://issuer.example");
    let token = sign(Header::default(), &with_iss, &key);
    let strict = |issuer: &str| Expectations {
        issuer: Some(issuer.into()),
        ..expect()
    };
    assert!(
        keys.verify::<UserClaims>(&token, &strict("https://issuer.example"))
            .is_ok()
    );
    assert!(
        keys.verify::<UserClaims>(&token, &strict("https://evil.example"))
            .is_err()
    );
    // jsonwebtoken checks `iss` only when the token has one: a token without
    // any must not pass for one from the expected issuer.
    let without_iss = sign(Header::default(), &claims(), &key);
    assert!(matches!(
        keys.verify::<UserClaims>(&without_iss, &strict("https://issuer.example")),
        Err(TokenError::Invalid(_))
    ));
    assert!(keys.verify::<UserClaims>(&without_iss, &expect()).is_ok());
}

#[test]
fn alg_none_is_refused() {
    let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
    let payload = jsonwebtoken::encode(
        &Header::default(),
        &claims(),
        &EncodingKey::from_secret(b"k"),
    )
    .unwrap()
    .split('.')
    .nth(1)
    .unwrap()
    .to_string();
    let token = format!("{header}.{payload}.");
    assert!(matches!(
        verify(&KeySet::hs256(b"k"), &token),
        Err(TokenError::Invalid(_))
    ));
}

#[test]
fn public_keys_from_pem_verify_their_algorithm_only() {
    let cases = [
        (
            RSA_PUBLIC,
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        ),
        (
            EC_PUBLIC,
            Algorithm::ES256,
            EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
        ),
        (
            ED_PUBLIC,
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap(),
        ),
    ];
    for (public, algorithm, private) in cases {
        let keys = KeySet::from_public_key_pem(public.as_bytes()).unwrap();
        assert_eq!(keys.algorithms(), HashSet::from([algorithm]));
        let token = sign(Header::new(algorithm), &claims(), &private);
        assert!(verify(&keys, &token).is_ok(), "{algorithm:?}");

        // An HS256 token is refused even when its "secret" is the public key
        // itself: the classic algorithm-confusion attack.
        let confused = sign(
            Header::default(),
            &claims(),
            &EncodingKey::from_secret(public.as_bytes()),
        );
        assert!(
            matches!(verify(&keys, &confused), Err(TokenError::Invalid(_))),
            "{algorithm:?}"
        );
    }
    assert!(matches!(
        KeySet::from_public_key_pem(b"garbage"),
        Err(KeyError::UnsupportedPem)
    ));
}

#[test]
fn jwks_keys_are_chosen_by_kid() {
    let keys = KeySet::from_jwks(JWKS.as_bytes()).unwrap();
    let ec = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
    let with_kid = |algorithm, kid: &str| Header {
        kid: Some(kid.into()),
        ..Header::new(algorithm)
    };

    assert!(
        verify(
            &keys,
            &sign(with_kid(Algorithm::ES256, "ec-1"), &claims(), &ec)
        )
        .is_ok()
    );
    let unknown = sign(with_kid(Algorithm::ES256, "ec-2"), &claims(), &ec);
    assert!(matches!(
        verify(&keys, &unknown),
        Err(TokenError::Invalid(_))
    ));
    let wrong_kid = sign(with_kid(Algorithm::ES256, "rsa-1"), &claims(), &ec);
    assert!(matches!(
        verify(&keys, &wrong_kid),
        Err(TokenError::Invalid(_))
    ));

    let ed = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap();
    assert!(
        verify(
            &keys,
            &sign(with_kid(Algorithm::EdDSA, "ed-1"), &claims(), &ed)
        )
        .is_ok()
    );
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    assert!(
        verify(
            &keys,
            &sign(with_kid(Algorithm::RS256, "rsa-1"), &claims(), &rsa)
        )
        .is_ok()
    );
}

#[test]
fn namespace_grants_match_exact_names_and_prefixes() {
    let claims = UserClaims {
        sub: "a".into(),
        exp: 0,
        iat: None,
        ns: vec!["team-*".into(), "lobby".into()],
        rpc: Vec::new(),
    };
    let ns = |s: &str| Namespace::parse(s).unwrap();
    assert!(claims.allows(&ns("team-42")));
    assert!(claims.allows(&ns("lobby")));
    assert!(!claims.allows(&ns("lobby2")));
    assert!(!claims.allows(&ns("admins")));
}

#[test]
fn dev_tokens_are_hs256_and_verify_like_any_other() {
    let user = mint_dev_token(b"s3cret", &claims()).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&user).unwrap().alg,
        Algorithm::HS256
    );
    let keys = KeySet::hs256(b"s3cret");
    let verified = verify(&keys, &user).unwrap();
    assert_eq!(verified.sub, "alice");
    assert_eq!(verified.ns, ["team-*"]);
    assert!(matches!(
        verify(&KeySet::hs256(b"other"), &user),
        Err(TokenError::Invalid(_))
    ));

    let service_claims = json!({ "sub": "demo", "aud": "herald-publisher", "exp": now() + 60,
                                 "scope": PUBLISH_SCOPE });
    let service = mint_dev_token(b"s3cret", &service_claims).unwrap();
    let expect = Expectations {
        audience: "herald-publisher".into(),
        issuer: None,
    };
    let verified: ServiceClaims = keys.verify(&service, &expect).unwrap();
    assert!(verified.has_scope(PUBLISH_SCOPE));
}

#[test]
fn provider_jwks_skip_encryption_and_unsupported_keys() {
    let mut set: serde_json::Value = serde_json::from_str(JWKS).unwrap();
    let keys = set["keys"].as_array_mut().unwrap();
    // Keycloak publishes its encryption key beside the signing keys.
    let mut enc = keys[0].clone();
    enc["kid"] = "enc-1".into();
    enc["use"] = "enc".into();
    enc["alg"] = "RSA-OAEP".into();
    keys.push(enc);
    keys.push(serde_json::json!({ "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" }));
    let json = serde_json::to_vec(&set).unwrap();
    assert!(
        KeySet::from_jwks(&json).is_err(),
        "a JWKS file stays strict"
    );
    let keys = KeySet::from_provider_jwks(&json).unwrap();
    assert_eq!(keys.len(), 3);
    assert!(keys.has_kid("rsa-1") && !keys.has_kid("enc-1") && !keys.has_kid("hmac"));
    assert!(matches!(
        KeySet::from_provider_jwks(br#"{"keys":[]}"#),
        Err(KeyError::EmptyJwks)
    ));
}
