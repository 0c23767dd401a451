//! `Jwt::parse`: every status reachable from a token string, in Envoy's order.

use serde_json::json;

use super::*;

const H: &str = r#"{"alg":"RS256","kid":"k1"}"#;
const P: &str = r#"{"iss":"i","sub":"s"}"#;
const SIG: &[u8] = &[1, 2, 3];

fn header_err(header: &str) -> JwtStatus {
    parse_err(&unsigned(header, P, SIG))
}

fn payload_err(payload: &str) -> JwtStatus {
    parse_err(&unsigned(H, payload, SIG))
}

fn parsed(payload: &str) -> Jwt {
    Jwt::parse(&unsigned(H, payload, SIG)).unwrap()
}

#[test]
fn well_formed_token_fields() {
    let payload = r#"{"iss":"https://i","sub":"alice","aud":["a","b"],"exp":200,"nbf":100,"iat":90,"jti":"j1","x":{"y":1}}"#;
    let token = unsigned(r#"{"alg":"ES256","kid":"k9","typ":"JWT"}"#, payload, SIG);
    let jwt = Jwt::parse(&token).unwrap();
    assert_eq!(jwt.alg, "ES256");
    assert_eq!(jwt.kid.as_deref(), Some("k9"));
    assert_eq!(jwt.iss, "https://i");
    assert_eq!(jwt.sub, "alice");
    assert_eq!(jwt.audiences, vec!["a", "b"]);
    assert_eq!((jwt.exp, jwt.nbf, jwt.iat), (200, 100, 90));
    assert_eq!(jwt.jti, "j1");
    assert_eq!(jwt.payload["x"], json!({"y": 1}));
    assert_eq!(jwt.payload_b64, b64(payload.as_bytes()));
    assert_eq!(jwt.signature, SIG);
    assert_eq!(
        jwt.signing_input,
        token.rsplit_once('.').unwrap().0,
        "the signature covers header.payload as sent"
    );
}

#[test]
fn absent_claims_default_to_empty_and_zero() {
    let jwt = Jwt::parse(&unsigned(r#"{"alg":"HS256"}"#, "{}", SIG)).unwrap();
    assert_eq!(jwt.kid, None);
    assert_eq!(
        (jwt.iss.as_str(), jwt.sub.as_str(), jwt.jti.as_str()),
        ("", "", "")
    );
    assert!(jwt.audiences.is_empty());
    assert_eq!((jwt.exp, jwt.nbf, jwt.iat), (0, 0, 0));
}

#[test]
fn bad_format_unless_exactly_three_non_empty_sections() {
    for token in [
        "", "abc", "a.b", "a.b.c.d", "a.b.", ".a.b", "..", "a..b", "....",
    ] {
        assert_eq!(parse_err(token), JwtStatus::JwtBadFormat, "{token:?}");
    }
    let good = unsigned(H, P, SIG);
    assert_eq!(parse_err(&format!("{good}.x")), JwtStatus::JwtBadFormat);
}

#[test]
fn empty_signature_is_bad_format() {
    let token = format!("{}.{}.", b64(H.as_bytes()), b64(P.as_bytes()));
    assert_eq!(parse_err(&token), JwtStatus::JwtBadFormat);
}

#[test]
fn empty_sections_are_skipped_like_absl_skip_empty() {
    let (h, rest) = unsigned(H, P, SIG)
        .split_once('.')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap();
    for token in [
        format!("{h}..{rest}"),
        format!(".{h}.{rest}."),
        format!("..{h}.{rest}"),
    ] {
        let jwt = Jwt::parse(&token).unwrap();
        assert_eq!(
            jwt.signing_input,
            format!("{h}.{}", rest.split('.').next().unwrap())
        );
    }
}

#[test]
fn header_bad_base64() {
    for h in ["e+J", "eyJ/", "Q", "QQ=", "QUJD="] {
        let token = format!("{h}.{}.{}", b64(P.as_bytes()), b64(SIG));
        assert_eq!(
            parse_err(&token),
            JwtStatus::JwtHeaderParseErrorBadBase64,
            "{h}"
        );
    }
}

#[test]
fn header_bad_json() {
    for h in [
        "not json",
        "[]",
        r#""alg""#,
        r#"{"alg":"RS256""#,
        " ",
        r#"{"alg":"RS256"}x"#,
        r#"{"alg":"RS256","alg":"RS256"}"#,
    ] {
        assert_eq!(header_err(h), JwtStatus::JwtHeaderParseErrorBadJson, "{h}");
    }
    // A `null` header is protobuf's empty Struct: no `alg` (e2e_jwt_differential checks it).
    assert_eq!(header_err("null"), JwtStatus::JwtHeaderBadAlg);
}

#[test]
fn header_alg_required_and_string() {
    for h in [
        "{}",
        r#"{"alg":256}"#,
        r#"{"alg":null}"#,
        r#"{"alg":["RS256"]}"#,
        r#"{"kid":"k"}"#,
    ] {
        assert_eq!(header_err(h), JwtStatus::JwtHeaderBadAlg, "{h}");
    }
}

#[test]
fn header_alg_not_implemented() {
    for alg in [
        "none", "HS1", "ES256K", "rs256", "RS", "", "Ed25519", "PS256 ",
    ] {
        let h = json!({ "alg": alg }).to_string();
        assert_eq!(
            header_err(&h),
            JwtStatus::JwtHeaderNotImplementedAlg,
            "{alg}"
        );
    }
}

#[test]
fn header_kid_must_be_string() {
    for h in [
        r#"{"alg":"RS256","kid":1}"#,
        r#"{"alg":"RS256","kid":null}"#,
        r#"{"alg":"RS256","kid":{}}"#,
    ] {
        assert_eq!(header_err(h), JwtStatus::JwtHeaderBadKid, "{h}");
    }
    // alg is checked before kid.
    assert_eq!(
        header_err(r#"{"alg":"none","kid":1}"#),
        JwtStatus::JwtHeaderNotImplementedAlg
    );
    assert_eq!(header_err(r#"{"kid":1}"#), JwtStatus::JwtHeaderBadAlg);
}

#[test]
fn empty_kid_is_no_kid() {
    let jwt = Jwt::parse(&unsigned(r#"{"alg":"RS256","kid":""}"#, P, SIG)).unwrap();
    assert_eq!(jwt.kid, None);
}

#[test]
fn payload_bad_base64_and_json() {
    let token = format!("{}.{}.{}", b64(H.as_bytes()), "p+y", b64(SIG));
    assert_eq!(parse_err(&token), JwtStatus::JwtPayloadParseErrorBadBase64);
    for p in ["x", "[1]", r#""s""#, "1", "{", r#"{"a":1}}"#] {
        assert_eq!(
            payload_err(p),
            JwtStatus::JwtPayloadParseErrorBadJson,
            "{p}"
        );
    }
}

#[test]
fn string_claims_type_checks() {
    let cases = [
        (r#"{"iss":1}"#, JwtStatus::JwtPayloadParseErrorIssNotString),
        (
            r#"{"iss":null}"#,
            JwtStatus::JwtPayloadParseErrorIssNotString,
        ),
        (
            r#"{"sub":true}"#,
            JwtStatus::JwtPayloadParseErrorSubNotString,
        ),
        (r#"{"jti":5}"#, JwtStatus::JwtPayloadParseErrorJtiNotString),
        (
            r#"{"jti":["a"]}"#,
            JwtStatus::JwtPayloadParseErrorJtiNotString,
        ),
    ];
    for (p, status) in cases {
        assert_eq!(payload_err(p), status, "{p}");
    }
}

#[test]
fn time_claims_type_and_range_checks() {
    use JwtStatus::*;
    let cases = [
        (r#"{"iat":"1"}"#, JwtPayloadParseErrorIatNotInteger),
        (r#"{"iat":-1}"#, JwtPayloadParseErrorIatOutOfRange),
        (r#"{"nbf":true}"#, JwtPayloadParseErrorNbfNotInteger),
        (r#"{"nbf":-0.5}"#, JwtPayloadParseErrorNbfOutOfRange),
        (r#"{"exp":null}"#, JwtPayloadParseErrorExpNotInteger),
        (r#"{"exp":{}}"#, JwtPayloadParseErrorExpNotInteger),
        (r#"{"exp":1e20}"#, JwtPayloadParseErrorExpOutOfRange),
        (
            r#"{"exp":18446744073709551615}"#,
            JwtPayloadParseErrorExpOutOfRange,
        ),
        (
            r#"{"exp":-9223372036854775808}"#,
            JwtPayloadParseErrorExpOutOfRange,
        ),
    ];
    for (p, status) in cases {
        assert_eq!(payload_err(p), status, "{p}");
    }
}

#[test]
fn time_claims_are_doubles_truncated_like_protobuf_struct() {
    assert_eq!(parsed(r#"{"exp":1.9}"#).exp, 1);
    assert_eq!(parsed(r#"{"exp":1e9}"#).exp, 1_000_000_000);
    assert_eq!(parsed(r#"{"nbf":-0.0}"#).nbf, 0);
    assert_eq!(
        parsed(r#"{"iat":9007199254740993}"#).iat,
        9_007_199_254_740_992
    );
    assert_eq!(
        parsed(r#"{"exp":18446744073709549568}"#).exp,
        18_446_744_073_709_549_568
    );
}

#[test]
fn audience_claim_shapes() {
    assert_eq!(parsed(r#"{"aud":"one"}"#).audiences, vec!["one"]);
    assert_eq!(parsed(r#"{"aud":["a","b"]}"#).audiences, vec!["a", "b"]);
    assert!(parsed(r#"{"aud":[]}"#).audiences.is_empty());
    for p in [
        r#"{"aud":5}"#,
        r#"{"aud":["a",1]}"#,
        r#"{"aud":{"a":"b"}}"#,
        r#"{"aud":null}"#,
        r#"{"aud":[["a"]]}"#,
    ] {
        assert_eq!(
            payload_err(p),
            JwtStatus::JwtPayloadParseErrorAudNotString,
            "{p}"
        );
    }
}

#[test]
fn payload_checks_run_in_envoys_order() {
    use JwtStatus::*;
    let cases = [
        (
            r#"{"aud":1,"jti":1,"exp":"x","nbf":"x","iat":"x","sub":1,"iss":1}"#,
            JwtPayloadParseErrorIssNotString,
        ),
        (
            r#"{"aud":1,"jti":1,"exp":"x","nbf":"x","iat":"x","sub":1}"#,
            JwtPayloadParseErrorSubNotString,
        ),
        (
            r#"{"aud":1,"jti":1,"exp":"x","nbf":"x","iat":-1}"#,
            JwtPayloadParseErrorIatOutOfRange,
        ),
        (
            r#"{"aud":1,"jti":1,"exp":"x","nbf":-1}"#,
            JwtPayloadParseErrorNbfOutOfRange,
        ),
        (
            r#"{"aud":1,"jti":1,"exp":-1}"#,
            JwtPayloadParseErrorExpOutOfRange,
        ),
        (r#"{"aud":1,"jti":1}"#, JwtPayloadParseErrorJtiNotString),
    ];
    for (p, status) in cases {
        assert_eq!(payload_err(p), status, "{p}");
    }
}

#[test]
fn sections_are_checked_header_then_payload_then_signature() {
    // A broken header wins over a broken payload, which wins over a broken signature.
    assert_eq!(
        parse_err(&format!("{}.p+y.s+g", b64(b"{}"))),
        JwtStatus::JwtHeaderBadAlg
    );
    assert_eq!(
        parse_err(&format!(
            "{}.{}.s+g",
            b64(H.as_bytes()),
            b64(br#"{"iss":1}"#)
        )),
        JwtStatus::JwtPayloadParseErrorIssNotString
    );
}

#[test]
fn signature_bad_base64() {
    for sig in ["a+b", "a/b", "A", "AAAAA", "AA=A", "AAAA="] {
        let token = format!("{}.{}.{sig}", b64(H.as_bytes()), b64(P.as_bytes()));
        assert_eq!(
            parse_err(&token),
            JwtStatus::JwtSignatureParseErrorBadBase64,
            "{sig}"
        );
    }
}

#[test]
fn padded_sections_are_accepted_like_envoy() {
    let pad = |s: &[u8]| base64::engine::general_purpose::URL_SAFE.encode(s);
    let header = r#"{"alg":"ES256","kk":1}"#; // 22 bytes: two pad characters
    let payload = r#"{"sub":"abc"}"#; // 13 bytes: two pad characters
    let token = format!(
        "{}.{}.{}",
        pad(header.as_bytes()),
        pad(payload.as_bytes()),
        pad(&[7, 7])
    );
    assert!(token.contains('='));
    let jwt = Jwt::parse(&token).unwrap();
    assert_eq!(jwt.sub, "abc");
    assert_eq!(jwt.signature, vec![7, 7]);
}

#[test]
fn json_trailing_commas_are_accepted_like_protobuf_legacy_mode() {
    let jwt = Jwt::parse(&unsigned(
        r#"{"alg":"RS256",}"#,
        r#"{"aud":["a","b",],"sub":"s",}"#,
        SIG,
    ))
    .unwrap();
    assert_eq!(jwt.audiences, vec!["a", "b"]);
    assert_eq!(
        header_err(r#"{"alg":"RS256",,}"#),
        JwtStatus::JwtHeaderParseErrorBadJson
    );
}

#[test]
fn debug_does_not_leak_the_signature() {
    let jwt = Jwt::parse(&unsigned(H, P, &[0xab; 40])).unwrap();
    let debug = format!("{jwt:?}");
    assert!(debug.contains("RS256"));
    assert!(!debug.contains("171"), "{debug}");
    assert!(!debug.contains(&b64(&[0xab; 40])));
}
