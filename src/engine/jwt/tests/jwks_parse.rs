//! `Jwks::parse`: documents, every key error status, mixed sets, PEM, X.509 maps.

use serde_json::{json, Value};

use super::*;

fn load(doc: &Value) -> Result<Jwks, JwtStatus> {
    Jwks::parse(&doc.to_string())
}

/// The status a single-key document fails with.
fn key_err(jwk: Value) -> JwtStatus {
    load(&json!({ "keys": [jwk] })).unwrap_err()
}

fn with(mut jwk: Value, field: &str, value: Value) -> Value {
    jwk[field] = value;
    jwk
}

fn without(mut jwk: Value, field: &str) -> Value {
    jwk.as_object_mut().unwrap().remove(field);
    jwk
}

#[test]
fn document_level_errors() {
    use JwtStatus::*;
    assert_eq!(Jwks::parse("not json").unwrap_err(), JwksParseError);
    assert_eq!(Jwks::parse("").unwrap_err(), JwksParseError);
    assert_eq!(Jwks::parse("[]").unwrap_err(), JwksParseError);
    assert_eq!(Jwks::parse(r#"{"keys":[]"#).unwrap_err(), JwksParseError);
    assert_eq!(load(&json!({})).unwrap_err(), JwksNoKeys);
    assert_eq!(load(&json!({"key": []})).unwrap_err(), JwksNoKeys);
    assert_eq!(load(&json!({"keys": {}})).unwrap_err(), JwksBadKeys);
    assert_eq!(load(&json!({"keys": "k"})).unwrap_err(), JwksBadKeys);
    assert_eq!(load(&json!({"keys": []})).unwrap_err(), JwksNoValidKeys);
    assert_eq!(
        load(&json!({"keys": [1, "x", null, []]})).unwrap_err(),
        JwksNoValidKeys
    );
}

#[test]
fn all_keys_invalid_reports_the_first_keys_error() {
    let doc = json!({"keys": [{"kty": 1}, {"n": "x"}, {"kty": "RSA"}]});
    assert_eq!(load(&doc).unwrap_err(), JwtStatus::JwksBadKty);
}

#[test]
fn mixed_valid_and_invalid_keys_keep_the_valid_ones() {
    let ec = Key::p256();
    let doc = json!({"keys": [
        {"kty": "RSA", "kid": "bad-rsa"},
        "not an object",
        ec.jwk(Some("good"), Some("ES256")),
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": 7},
        {"kty": "XYZ"},
    ]});
    let jwks = load(&doc).unwrap();
    assert_eq!(jwks.len(), 1);
    assert!(!jwks.is_empty());
    assert!(jwks.has_kid("good"));
    assert!(!jwks.has_kid("bad-rsa"));
    let skipped: Vec<_> = jwks
        .skipped()
        .iter()
        .map(|s| (s.index, s.kid.clone(), s.status))
        .collect();
    assert_eq!(
        skipped,
        vec![
            (0, Some("bad-rsa".to_owned()), JwtStatus::JwksRSAKeyMissingN),
            (3, None, JwtStatus::JwksEcParseError),
            (4, None, JwtStatus::JwksNotImplementedKty),
        ]
    );
    let token = token(&ec, "ES256", Some("good"), &claims());
    assert_eq!(jwks.verify(&Jwt::parse(&token).unwrap()), Ok(()));
}

#[test]
fn kty_errors() {
    use JwtStatus::*;
    assert_eq!(key_err(json!({"kid": "k"})), JwksMissingKty);
    assert_eq!(key_err(json!({"kty": 3})), JwksBadKty);
    assert_eq!(key_err(json!({"kty": null})), JwksBadKty);
    assert_eq!(key_err(json!({"kty": "rsa"})), JwksNotImplementedKty);
    assert_eq!(key_err(json!({"kty": "OCT"})), JwksNotImplementedKty);
}

#[test]
fn rsa_key_errors() {
    use JwtStatus::*;
    let jwk = Key::Rsa(rsa_a()).jwk(None, None);
    for alg in ["ES256", "R", "HS256", "rs256"] {
        assert_eq!(
            key_err(with(jwk.clone(), "alg", json!(alg))),
            JwksRSAKeyBadAlg,
            "{alg}"
        );
    }
    assert_eq!(key_err(without(jwk.clone(), "n")), JwksRSAKeyMissingN);
    assert_eq!(key_err(with(jwk.clone(), "n", json!(5))), JwksRSAKeyBadN);
    assert_eq!(key_err(without(jwk.clone(), "e")), JwksRSAKeyMissingE);
    assert_eq!(
        key_err(with(jwk.clone(), "e", json!(65537))),
        JwksRSAKeyBadE
    );
    // alg is checked before n and e.
    assert_eq!(
        key_err(json!({"kty": "RSA", "alg": "ES256"})),
        JwksRSAKeyBadAlg
    );
    for (field, value) in [
        ("n", "a+b/"),
        ("n", "A"),
        ("n", ""),
        ("e", "AQAB="),
        ("e", "Ew"),   // 19: a valid exponent, but Envoy accepts only 3 and 65537
        ("e", "AQ"),   // 1
        ("e", ""),     // 0
        ("e", "AQAD"), // 65539
    ] {
        assert_eq!(
            key_err(with(jwk.clone(), field, json!(value))),
            JwksRsaParseError,
            "{field}={value}"
        );
    }
    // An even modulus is not an RSA key.
    let mut n = rsa_a().public.n().to_bytes_be();
    *n.last_mut().unwrap() &= 0xfe;
    assert_eq!(key_err(with(jwk, "n", json!(b64(&n)))), JwksRsaParseError);
}

#[test]
fn rsa_exponent_3_and_65537_accepted_with_leading_zeros() {
    let jwk = Key::Rsa(rsa_a()).jwk(None, None);
    for e in ["Aw", "AAM", "AQAB", "AAEAAQ", "AAAAAQAB"] {
        assert_eq!(
            load(&json!({"keys": [with(jwk.clone(), "e", json!(e))]}))
                .unwrap()
                .len(),
            1,
            "{e}"
        );
    }
}

#[test]
fn rsa_alg_prefixes_accepted() {
    let jwk = Key::Rsa(rsa_a()).jwk(None, None);
    for alg in ["RS256", "PS512", "RS", "PS999"] {
        assert!(
            load(&json!({"keys": [with(jwk.clone(), "alg", json!(alg))]})).is_ok(),
            "{alg}"
        );
    }
}

#[test]
fn ec_key_errors() {
    use JwtStatus::*;
    let jwk = Key::p256().jwk(None, None);
    assert_eq!(
        key_err(with(jwk.clone(), "alg", json!("RS256"))),
        JwksECKeyBadAlg
    );
    assert_eq!(
        key_err(with(jwk.clone(), "alg", json!("E"))),
        JwksECKeyBadAlg
    );
    assert_eq!(
        key_err(with(jwk.clone(), "crv", json!(256))),
        JwksECKeyBadCrv
    );
    assert_eq!(
        key_err(with(jwk.clone(), "crv", json!("P-999"))),
        JwksECKeyAlgOrCrvUnsupported
    );
    assert_eq!(
        key_err(with(without(jwk.clone(), "crv"), "alg", json!("ES256K"))),
        JwksECKeyAlgOrCrvUnsupported
    );
    assert_eq!(
        key_err(with(jwk.clone(), "alg", json!("ES384"))),
        JwksECKeyAlgNotCompatibleWithCrv
    );
    assert_eq!(
        key_err(with(jwk.clone(), "alg", json!("ES256K"))),
        JwksECKeyAlgNotCompatibleWithCrv
    );
    assert_eq!(key_err(without(jwk.clone(), "x")), JwksECKeyMissingX);
    assert_eq!(key_err(with(jwk.clone(), "x", json!([]))), JwksECKeyBadX);
    assert_eq!(key_err(without(jwk.clone(), "y")), JwksECKeyMissingY);
    assert_eq!(key_err(with(jwk.clone(), "y", json!(1))), JwksECKeyBadY);
    assert_eq!(
        key_err(with(jwk.clone(), "x", json!("a+b"))),
        JwksEcXorYBadBase64
    );
    assert_eq!(
        key_err(with(jwk.clone(), "y", json!("Q"))),
        JwksEcXorYBadBase64
    );
    // Not on the curve, coordinate too long, or empty.
    let mut x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    x[31] ^= 1;
    assert_eq!(
        key_err(with(jwk.clone(), "x", json!(b64(&x)))),
        JwksEcParseError
    );
    assert_eq!(
        key_err(with(jwk.clone(), "x", json!(b64(&[1u8; 33])))),
        JwksEcParseError
    );
    assert_eq!(key_err(with(jwk.clone(), "x", json!(""))), JwksEcParseError);
    // A P-256 point declared as P-384.
    assert_eq!(key_err(with(jwk, "crv", json!("P-384"))), JwksEcParseError);
}

#[test]
fn ec_curve_from_alg_or_crv_or_default() {
    // Neither alg nor crv: P-256, as Envoy assumes.
    let p256 = Key::p256();
    let jwks = load(&json!({"keys": [without(p256.jwk(None, None), "crv")]})).unwrap();
    assert_eq!(
        jwks.verify(&Jwt::parse(&token(&p256, "ES256", None, &claims())).unwrap()),
        Ok(())
    );
    // alg alone picks the curve.
    let p384 = Key::p384();
    let jwks = load(&json!({"keys": [without(p384.jwk(None, Some("ES384")), "crv")]})).unwrap();
    assert_eq!(
        jwks.verify(&Jwt::parse(&token(&p384, "ES384", None, &claims())).unwrap()),
        Ok(())
    );
    let p521 = Key::p521();
    let jwks = load(&json!({"keys": [without(p521.jwk(None, Some("ES512")), "crv")]})).unwrap();
    assert_eq!(
        jwks.verify(&Jwt::parse(&token(&p521, "ES512", None, &claims())).unwrap()),
        Ok(())
    );
}

#[test]
fn ec_coordinates_are_big_integers() {
    // BN_bin2bn: an extra leading zero byte changes nothing.
    let key = Key::p256();
    let jwk = key.jwk(None, None);
    let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    let jwks =
        load(&json!({"keys": [with(jwk, "x", json!(b64(&[&[0u8][..], &x].concat())))]})).unwrap();
    assert_eq!(
        jwks.verify(&Jwt::parse(&token(&key, "ES256", None, &claims())).unwrap()),
        Ok(())
    );
}

#[test]
fn oct_key_errors() {
    use JwtStatus::*;
    let jwk = Key::hmac(b"secret").jwk(None, None);
    for alg in ["RS256", "HS", "HS1", "hs256"] {
        assert_eq!(
            key_err(with(jwk.clone(), "alg", json!(alg))),
            JwksHMACKeyBadAlg,
            "{alg}"
        );
    }
    assert_eq!(key_err(without(jwk.clone(), "k")), JwksHMACKeyMissingK);
    assert_eq!(key_err(with(jwk.clone(), "k", json!(12))), JwksHMACKeyBadK);
    for k in ["", "a+b", "A", "  "] {
        assert_eq!(
            key_err(with(jwk.clone(), "k", json!(k))),
            JwksOctBadBase64,
            "{k:?}"
        );
    }
}

#[test]
fn okp_key_errors() {
    use JwtStatus::*;
    let jwk = Key::ed().jwk(None, None);
    assert_eq!(
        key_err(with(jwk.clone(), "alg", json!("ES256"))),
        JwksOKPKeyBadAlg
    );
    assert_eq!(
        key_err(with(jwk.clone(), "alg", json!("Ed25519"))),
        JwksOKPKeyBadAlg
    );
    assert_eq!(key_err(without(jwk.clone(), "crv")), JwksOKPKeyMissingCrv);
    assert_eq!(
        key_err(with(jwk.clone(), "crv", json!(1))),
        JwksOKPKeyBadCrv
    );
    for crv in ["X25519", "Ed448", "ed25519"] {
        assert_eq!(
            key_err(with(jwk.clone(), "crv", json!(crv))),
            JwksOKPKeyCrvUnsupported,
            "{crv}"
        );
    }
    assert_eq!(key_err(without(jwk.clone(), "x")), JwksOKPKeyMissingX);
    assert_eq!(
        key_err(with(jwk.clone(), "x", json!(false))),
        JwksOKPKeyBadX
    );
    assert_eq!(
        key_err(with(jwk.clone(), "x", json!("a+b"))),
        JwksOKPXBadBase64
    );
    assert_eq!(
        key_err(with(jwk.clone(), "x", json!(b64(&[1u8; 31])))),
        JwksOKPXWrongLength
    );
    assert_eq!(
        key_err(with(jwk, "x", json!(b64(&[1u8; 33])))),
        JwksOKPXWrongLength
    );
}

#[test]
fn non_string_kid_and_alg_are_ignored() {
    let key = Key::p256();
    let jwk = with(
        with(key.jwk(None, None), "kid", json!(1)),
        "alg",
        json!(["ES384"]),
    );
    let jwks = load(&json!({"keys": [jwk]})).unwrap();
    assert!(!jwks.has_kid("1"));
    let token = token(&key, "ES256", Some("any"), &claims());
    assert_eq!(jwks.verify(&Jwt::parse(&token).unwrap()), Ok(()));
}

#[test]
fn unknown_members_and_use_are_ignored() {
    let key = Key::ed();
    let jwk = with(
        with(key.jwk(Some("k"), None), "use", json!("enc")),
        "x5c",
        json!(["junk"]),
    );
    assert_eq!(
        load(&json!({"keys": [jwk], "extra": true})).unwrap().len(),
        1
    );
}

#[test]
fn trailing_commas_are_tolerated_like_envoy() {
    let key = Key::hmac(b"s");
    let jwk = key.jwk(Some("k"), None).to_string();
    let inner = jwk.trim_end_matches('}');
    let text = format!("{{\"keys\": [ {inner}, }},\n ],\n}}");
    let jwks = Jwks::parse(&text).unwrap();
    assert!(jwks.has_kid("k"));
    assert_eq!(
        Jwks::parse(r#"{"keys":[,]}"#).unwrap_err(),
        JwtStatus::JwksParseError
    );
}

#[test]
fn len_has_kid_and_default() {
    let jwks = jwks_of(&[
        Key::hmac(b"1").jwk(Some("a"), None),
        Key::hmac(b"2").jwk(Some("b"), None),
        Key::hmac(b"3").jwk(None, None),
    ]);
    assert_eq!(jwks.len(), 3);
    assert!(jwks.has_kid("a") && jwks.has_kid("b"));
    assert!(!jwks.has_kid("c") && !jwks.has_kid(""));
    let empty = Jwks::default();
    assert_eq!(empty.len(), 0);
    assert!(empty.is_empty() && !empty.has_kid("a"));
}

#[test]
fn debug_never_prints_key_material() {
    let secret = b"very-secret-hmac-key";
    let jwks = jwks_of(&[Key::hmac(secret).jwk(Some("k"), Some("HS256"))]);
    let debug = format!("{jwks:?}");
    assert!(debug.contains("oct") && debug.contains("HS256"), "{debug}");
    assert!(
        !debug.contains(&b64(secret)) && !debug.contains("very-secret"),
        "{debug}"
    );
}

// PEM public keys (Envoy's Jwks::createFrom(..., PEM)).

fn assert_pem_verifies(key: &Key, alg: &str) {
    let jwks = Jwks::parse(&key.pem()).unwrap();
    assert_eq!(jwks.len(), 1);
    assert!(!jwks.has_kid(""));
    let token = token(key, alg, Some("any-kid"), &claims());
    assert_eq!(jwks.verify(&Jwt::parse(&token).unwrap()), Ok(()), "{alg}");
}

#[test]
fn pem_keys_of_every_type_verify() {
    assert_pem_verifies(&Key::Rsa(rsa_a()), "RS256");
    assert_pem_verifies(&Key::Rsa(rsa_a()), "PS512");
    assert_pem_verifies(&Key::p256(), "ES256");
    assert_pem_verifies(&Key::p384(), "ES384");
    assert_pem_verifies(&Key::p521(), "ES512");
    assert_pem_verifies(&Key::ed(), "EdDSA");
}

#[test]
fn pem_block_is_found_among_other_text() {
    let key = Key::p256();
    let text = format!(
        "a comment\r\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n{}trailing",
        key.pem().replace('\n', "\r\n")
    );
    let jwks = Jwks::parse(&text).unwrap();
    assert_eq!(
        jwks.verify(&Jwt::parse(&token(&key, "ES256", None, &claims())).unwrap()),
        Ok(())
    );
    assert_eq!(Jwks::from_pem(&key.pem()).unwrap().len(), 1);
}

#[test]
fn pem_errors() {
    use JwtStatus::*;
    let rsa_pem = Key::Rsa(rsa_a()).pem();
    assert_eq!(
        Jwks::parse("-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n").unwrap_err(),
        JwksPemBadBase64
    );
    assert_eq!(
        Jwks::parse("-----BEGIN PUBLIC KEY-----\nAAAA\n").unwrap_err(),
        JwksPemBadBase64
    );
    assert_eq!(
        Jwks::parse(&rsa_pem.replace("PUBLIC KEY", "RSA PUBLIC KEY")).unwrap_err(),
        JwksPemBadBase64
    );
    assert_eq!(
        Jwks::from_pem("no block at all").unwrap_err(),
        JwksPemBadBase64
    );
    // Well-formed base64 of something that is not an SPKI.
    assert_eq!(
        Jwks::parse(&pem("PUBLIC KEY", &[0x30, 0x00])).unwrap_err(),
        JwksPemBadBase64
    );
    // An unknown algorithm, an RSA key without NULL parameters, an EC point off the curve.
    let unknown = spki(&[0x2a, 0x03], None, &[1, 2, 3]);
    assert_eq!(
        Jwks::parse(&pem("PUBLIC KEY", &unknown)).unwrap_err(),
        JwksPemBadBase64
    );
    let n = rsa_a().public.n().to_bytes_be();
    let rsa_key = seq(&[tlv(0x02, &[&[0u8][..], &n].concat()), tlv(0x02, &[1, 0, 1])]);
    let no_null = spki(OID_RSA, None, &rsa_key);
    assert_eq!(
        Jwks::parse(&pem("PUBLIC KEY", &no_null)).unwrap_err(),
        JwksPemBadBase64
    );
    let off_curve = ec_spki(OID_P384, &[&[4u8][..], &[1u8; 96]].concat());
    assert_eq!(
        Jwks::parse(&pem("PUBLIC KEY", &off_curve)).unwrap_err(),
        JwksPemBadBase64
    );
    // Parsable but not a JWT key type: X25519.
    let x25519 = spki(&[0x2b, 0x65, 0x6e], None, &[9u8; 32]);
    assert_eq!(
        Jwks::parse(&pem("PUBLIC KEY", &x25519)).unwrap_err(),
        JwksPemNotImplementedKty
    );
}

#[test]
fn pem_rsa_key_skips_the_jwk_exponent_rule() {
    // Envoy checks e in {3, 65537} only for JWKs; a PEM key with e = 17 loads.
    let n = rsa_a().public.n().to_bytes_be();
    let key = seq(&[tlv(0x02, &[&[0u8][..], &n].concat()), tlv(0x02, &[17])]);
    let der = spki(OID_RSA, Some(tlv(0x05, &[])), &key);
    assert_eq!(Jwks::parse(&pem("PUBLIC KEY", &der)).unwrap().len(), 1);
    // ...but not an even one.
    let key = seq(&[tlv(0x02, &[&[0u8][..], &n].concat()), tlv(0x02, &[16])]);
    let der = spki(OID_RSA, Some(tlv(0x05, &[])), &key);
    assert_eq!(
        Jwks::parse(&pem("PUBLIC KEY", &der)).unwrap_err(),
        JwtStatus::JwksPemBadBase64
    );
}

#[test]
fn pem_p224_key_loads_but_never_verifies() {
    let der = ec_spki(OID_P224, &[&[4u8][..], &[1u8; 56]].concat());
    let jwks = Jwks::parse(&pem("PUBLIC KEY", &der)).unwrap();
    assert_eq!(jwks.len(), 1);
    let token = token(&Key::p256(), "ES256", None, &claims());
    assert_eq!(
        jwks.verify(&Jwt::parse(&token).unwrap()),
        Err(JwtStatus::JwtVerificationFail)
    );
}

#[test]
fn pem_rsa_spki_built_by_hand_matches_the_crates() {
    use rsa::pkcs8::EncodePublicKey as _;
    let k = rsa_a();
    assert_eq!(
        rsa_spki(k),
        k.public.to_public_key_der().unwrap().as_bytes()
    );
}

// Envoy's X.509 map: {"kid": "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"}.

fn cert_pem(spki: Vec<u8>) -> String {
    pem("CERTIFICATE", &certificate(spki))
}

#[test]
fn x509_map_loads_rsa_keys_under_their_kids() {
    let k = rsa_a();
    let doc = json!({"kid-a": cert_pem(rsa_spki(k)), "kid-b": cert_pem(rsa_spki(rsa_b()))});
    let jwks = load(&doc).unwrap();
    assert_eq!(jwks.len(), 2);
    assert!(jwks.has_kid("kid-a") && jwks.has_kid("kid-b"));
    let key = Key::Rsa(k);
    let ok = token(&key, "RS256", Some("kid-a"), &claims());
    assert_eq!(jwks.verify(&Jwt::parse(&ok).unwrap()), Ok(()));
    let other_kid = token(&key, "RS256", Some("kid-b"), &claims());
    assert_eq!(
        jwks.verify(&Jwt::parse(&other_kid).unwrap()),
        Err(JwtStatus::JwtVerificationFail)
    );
}

#[test]
fn x509_map_errors() {
    use JwtStatus::*;
    let good = cert_pem(rsa_spki(rsa_a()));
    let garbage = pem("CERTIFICATE", &[0x30, 0x03, 0x02, 0x01, 0x01]);
    assert_eq!(
        load(&json!({"a": good, "b": garbage})).unwrap_err(),
        JwksX509ParseError
    );
    let not_base64 = format!(
        "{}!!!!{}",
        "-----BEGIN CERTIFICATE-----\n", "\n-----END CERTIFICATE-----\n"
    );
    assert_eq!(
        load(&json!({ "a": not_base64 })).unwrap_err(),
        JwksX509ParseError
    );
    let ec = Key::p256();
    let Key::P256(sk) = &ec else { unreachable!() };
    let ec_cert = cert_pem(ec_spki(
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        sk.verifying_key().to_encoded_point(false).as_bytes(),
    ));
    assert_eq!(
        load(&json!({ "a": ec_cert })).unwrap_err(),
        JwksX509GetPubkeyError
    );
    // Not every member a certificate: not an X.509 map at all.
    assert_eq!(load(&json!({"a": good, "b": 1})).unwrap_err(), JwksNoKeys);
    assert_eq!(load(&json!({ "": good })).unwrap_err(), JwksNoKeys);
    let no_final_newline = good.trim_end().to_owned();
    assert_eq!(
        load(&json!({ "a": no_final_newline })).unwrap_err(),
        JwksNoKeys
    );
}
