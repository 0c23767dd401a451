//! `check_time` and `audiences_allowed`.

use crate::jwt::{audiences_allowed, check_time, DEFAULT_CLOCK_SKEW_SECS};

use super::*;

fn jwt_with(payload: &str) -> Jwt {
    Jwt::parse(&unsigned(r#"{"alg":"HS256"}"#, payload, &[1])).unwrap()
}

fn times(nbf: u64, exp: u64) -> Jwt {
    jwt_with(&format!(r#"{{"nbf":{nbf},"exp":{exp}}}"#))
}

const SKEW: u64 = DEFAULT_CLOCK_SKEW_SECS;

#[test]
fn nbf_boundary_includes_the_skew() {
    let jwt = times(1_000, 0);
    assert_eq!(
        check_time(&jwt, 1_000 - SKEW, SKEW),
        Ok(()),
        "now + skew == nbf"
    );
    assert_eq!(
        check_time(&jwt, 1_000 - SKEW - 1, SKEW),
        Err(JwtStatus::JwtNotYetValid)
    );
    assert_eq!(check_time(&jwt, 999, 0), Err(JwtStatus::JwtNotYetValid));
    assert_eq!(check_time(&jwt, 1_000, 0), Ok(()));
}

#[test]
fn exp_boundary_includes_the_skew() {
    let jwt = times(0, 1_000);
    assert_eq!(
        check_time(&jwt, 1_000 + SKEW, SKEW),
        Ok(()),
        "now == exp + skew"
    );
    assert_eq!(
        check_time(&jwt, 1_000 + SKEW + 1, SKEW),
        Err(JwtStatus::JwtExpired)
    );
    assert_eq!(check_time(&jwt, 1_000, 0), Ok(()));
    assert_eq!(check_time(&jwt, 1_001, 0), Err(JwtStatus::JwtExpired));
}

#[test]
fn zero_exp_never_expires_and_absent_claims_always_pass() {
    assert_eq!(check_time(&times(0, 0), u64::MAX, 0), Ok(()));
    assert_eq!(check_time(&jwt_with("{}"), 0, 0), Ok(()));
    assert_eq!(check_time(&jwt_with("{}"), 4_000_000_000, SKEW), Ok(()));
}

#[test]
fn nbf_is_checked_before_exp() {
    let jwt = times(2_000, 1_000);
    assert_eq!(check_time(&jwt, 1_500, 0), Err(JwtStatus::JwtNotYetValid));
}

#[test]
fn huge_values_saturate_instead_of_wrapping() {
    let jwt = times(0, 18_446_744_073_709_549_568);
    assert_eq!(check_time(&jwt, u64::MAX - 1, 4096), Ok(()));
    assert_eq!(
        check_time(&times(u64::MAX / 2, 0), u64::MAX - 10, 100),
        Ok(())
    );
}

fn aud(list: &[&str]) -> Jwt {
    jwt_with(&serde_json::json!({ "aud": list }).to_string())
}

fn allowed(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn empty_allowed_list_allows_everything() {
    assert!(audiences_allowed(&aud(&[]), &[]));
    assert!(audiences_allowed(&aud(&["x"]), &[]));
}

#[test]
fn any_one_audience_matching_is_enough() {
    let jwt = aud(&["a", "b", "c"]);
    assert!(audiences_allowed(&jwt, &allowed(&["z", "b"])));
    assert!(!audiences_allowed(&jwt, &allowed(&["z", "y"])));
    assert!(!audiences_allowed(&aud(&[]), &allowed(&["a"])));
}

#[test]
fn scheme_and_trailing_slash_are_ignored_on_both_sides() {
    let cases = [
        ("https://svc.example.com/", "svc.example.com"),
        ("http://svc.example.com", "https://svc.example.com/"),
        ("svc.example.com/", "http://svc.example.com"),
        ("https://svc.example.com/api/", "svc.example.com/api"),
    ];
    for (token_aud, config_aud) in cases {
        assert!(
            audiences_allowed(&aud(&[token_aud]), &allowed(&[config_aud])),
            "{token_aud} vs {config_aud}"
        );
        assert!(
            audiences_allowed(&aud(&[config_aud]), &allowed(&[token_aud])),
            "{config_aud} vs {token_aud}"
        );
    }
}

#[test]
fn normalisation_is_exactly_envoys() {
    // Only one slash, only a leading scheme, case-sensitive, other schemes kept.
    assert!(!audiences_allowed(&aud(&["svc//"]), &allowed(&["svc"])));
    assert!(!audiences_allowed(&aud(&["svc//"]), &allowed(&["svc/"])));
    assert!(audiences_allowed(
        &aud(&["https://svc//"]),
        &allowed(&["svc//"])
    ));
    assert!(!audiences_allowed(
        &aud(&["x-https://svc"]),
        &allowed(&["svc"])
    ));
    assert!(!audiences_allowed(
        &aud(&["HTTPS://svc"]),
        &allowed(&["svc"])
    ));
    assert!(!audiences_allowed(
        &aud(&["grpc://svc"]),
        &allowed(&["svc"])
    ));
    assert!(!audiences_allowed(&aud(&["Svc"]), &allowed(&["svc"])));
    // The scheme alone, or a bare slash, normalise to "".
    assert!(audiences_allowed(
        &aud(&["http://"]),
        &allowed(&["https://"])
    ));
    assert!(audiences_allowed(&aud(&["/"]), &allowed(&[""])));
    assert!(!audiences_allowed(&aud(&["http://"]), &allowed(&["svc"])));
}

#[test]
fn string_aud_counts_as_a_list_of_one() {
    let jwt = jwt_with(r#"{"aud":"https://svc/"}"#);
    assert!(audiences_allowed(&jwt, &allowed(&["svc"])));
}
