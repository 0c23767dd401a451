use serde_json::Value;

use crate::jwt::JwtStatus;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/vectors/jwt-status-strings.json"
);

#[test]
fn every_status_matches_envoys_name_message_and_code() {
    let Ok(text) = std::fs::read_to_string(VECTORS) else {
        eprintln!("skipping: {VECTORS} is not present");
        return;
    };
    let doc: Value = serde_json::from_str(&text).unwrap();
    let statuses = doc["statuses"].as_array().unwrap();
    assert_eq!(statuses.len(), JwtStatus::ALL.len());
    for (vector, status) in statuses.iter().zip(JwtStatus::ALL) {
        assert_eq!(vector["name"], status.name(), "{status:?}");
        assert_eq!(vector["message"], status.message(), "{status:?}");
        assert_eq!(vector["code"], status.code(), "{status:?}");
        assert_eq!(
            format!("{status:?}"),
            status.name(),
            "variant named as in Envoy"
        );
    }
}

#[test]
fn codes_are_the_enum_order() {
    for (i, status) in JwtStatus::ALL.iter().enumerate() {
        assert_eq!(status.code() as usize, i);
    }
    assert_eq!(JwtStatus::Ok.message(), "OK");
    assert_eq!(
        JwtStatus::JwksKidAlgMismatch.to_string(),
        "Jwks doesn't have key to match kid or alg from Jwt"
    );
}
