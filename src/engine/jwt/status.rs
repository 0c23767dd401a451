//! Envoy's jwt_verify_lib status codes and messages (`source/common/jwt/status.{h,cc}`).

/// Declares the enum, `ALL`, `message()` and `name()` from one table, so the four can never
/// disagree on order or spelling.
macro_rules! statuses {
    ($($variant:ident => $message:literal,)*) => {
        /// Envoy's jwt_verify_lib status, in Envoy's enum order (`code()` is the enum number).
        ///
        /// `message()` is Envoy's exact text: it becomes the 401/403 body and the log line, so
        /// users comparing against Envoy see the same words.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum JwtStatus {
            $($variant,)*
        }

        impl JwtStatus {
            /// Every status, in Envoy's enum order.
            pub const ALL: &'static [JwtStatus] = &[$(JwtStatus::$variant,)*];

            /// Envoy's message for this status (the 401/403 body).
            pub fn message(self) -> &'static str {
                match self {
                    $(JwtStatus::$variant => $message,)*
                }
            }

            /// The variant name, as Envoy spells the enumerator (useful as a metric label).
            pub fn name(self) -> &'static str {
                match self {
                    $(JwtStatus::$variant => stringify!($variant),)*
                }
            }

            /// Envoy's enum number.
            pub fn code(self) -> u32 {
                self as u32
            }
        }
    };
}

statuses! {
    Ok => "OK",
    JwtMissed => "Jwt is missing",
    JwtNotYetValid => "Jwt not yet valid",
    JwtExpired => "Jwt is expired",
    JwtBadFormat => "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
    JwtHeaderParseErrorBadBase64 => "Jwt header is an invalid Base64url encoded",
    JwtHeaderParseErrorBadJson => "Jwt header is an invalid JSON",
    JwtHeaderBadAlg => "Jwt header [alg] field is required and must be a string",
    JwtHeaderNotImplementedAlg => "Jwt header [alg] is not supported",
    JwtHeaderBadKid => "Jwt header [kid] field is not a string",
    JwtPayloadParseErrorBadBase64 => "Jwt payload is an invalid Base64url encoded",
    JwtPayloadParseErrorBadJson => "Jwt payload is an invalid JSON",
    JwtPayloadParseErrorIssNotString => "Jwt payload [iss] field is not a string",
    JwtPayloadParseErrorSubNotString => "Jwt payload [sub] field is not a string",
    JwtPayloadParseErrorIatNotInteger => "Jwt payload [iat] field is not an integer",
    JwtPayloadParseErrorIatOutOfRange => "Jwt payload [iat] field is not a positive 64 bit integer",
    JwtPayloadParseErrorNbfNotInteger => "Jwt payload [nbf] field is not an integer",
    JwtPayloadParseErrorNbfOutOfRange => "Jwt payload [nbf] field is not a positive 64 bit integer",
    JwtPayloadParseErrorExpNotInteger => "Jwt payload [exp] field is not an integer",
    JwtPayloadParseErrorExpOutOfRange => "Jwt payload [exp] field is not a positive 64 bit integer",
    JwtPayloadParseErrorJtiNotString => "Jwt payload [jti] field is not a string",
    JwtPayloadParseErrorAudNotString => "Jwt payload [aud] field is not a string or string list",
    JwtSignatureParseErrorBadBase64 => "Jwt signature is an invalid Base64url encoded",
    JwtEd25519SignatureWrongLength => "Jwt ED25519 signature is wrong length",
    JwtUnknownIssuer => "Jwt issuer is not configured",
    JwtAudienceNotAllowed => "Audiences in Jwt are not allowed",
    JwtVerificationFail => "Jwt verification fails",
    JwtMultipleTokens => "Found multiple Jwt tokens",
    JwksParseError => "Jwks is an invalid JSON",
    JwksNoKeys => "Jwks does not have [keys] field",
    JwksBadKeys => "[keys] in Jwks is not an array",
    JwksNoValidKeys => "Jwks doesn't have any valid public key",
    JwksKidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
    JwksRsaParseError => "Jwks RSA [n] or [e] field is missing or has a parse error",
    JwksEcCreateKeyFail => "Jwks EC create key fail",
    JwksEcXorYBadBase64 => "Jwks EC [x] or [y] field is an invalid Base64.",
    JwksEcParseError => "Jwks EC [x] and [y] fields have a parse error.",
    JwksOctBadBase64 => "Jwks Oct key is an invalid Base64",
    JwksOKPXBadBase64 => "Jwks OKP [x] field is an invalid Base64.",
    JwksOKPXWrongLength => "Jwks OKP [x] field is wrong length.",
    JwksFetchFail => "Jwks remote fetch is failed",
    JwksMissingKty => "[kty] is missing in [keys]",
    JwksBadKty => "[kty] is bad in [keys]",
    JwksNotImplementedKty => "[kty] is not supported in [keys]",
    JwksRSAKeyBadAlg => "[alg] is not started with [RS] or [PS] for an RSA key",
    JwksRSAKeyMissingN => "[n] field is missing for a RSA key",
    JwksRSAKeyBadN => "[n] field is not string for a RSA key",
    JwksRSAKeyMissingE => "[e] field is missing for a RSA key",
    JwksRSAKeyBadE => "[e] field is not string for a RSA key",
    JwksECKeyBadAlg => "[alg] is not started with [ES] for an EC key",
    JwksECKeyBadCrv => "[crv] field is not string for an EC key",
    JwksECKeyAlgOrCrvUnsupported => "[crv] or [alg] field is not supported for an EC key",
    JwksECKeyAlgNotCompatibleWithCrv => "[crv] field specified is not compatible with [alg] for an EC key",
    JwksECKeyMissingX => "[x] field is missing for an EC key",
    JwksECKeyBadX => "[x] field is not string for an EC key",
    JwksECKeyMissingY => "[y] field is missing for an EC key",
    JwksECKeyBadY => "[y] field is not string for an EC key",
    JwksHMACKeyBadAlg => "[alg] does not start with [HS] for an HMAC key",
    JwksHMACKeyMissingK => "[k] field is missing for an HMAC key",
    JwksHMACKeyBadK => "[k] field is not string for an HMAC key",
    JwksOKPKeyBadAlg => "[alg] is not [EdDSA] for an OKP key",
    JwksOKPKeyMissingCrv => "[crv] field is missing for an OKP key",
    JwksOKPKeyBadCrv => "[crv] field is not string for an OKP key",
    JwksOKPKeyCrvUnsupported => "[crv] field is not supported for an OKP key",
    JwksOKPKeyMissingX => "[x] field is missing for an OKP key",
    JwksOKPKeyBadX => "[x] field is not string for an OKP key",
    JwksX509BioWriteError => "X509 parse pubkey internal fails: memory allocation",
    JwksX509ParseError => "X509 parse pubkey fails",
    JwksX509GetPubkeyError => "X509 parse pubkey internal fails: get pubkey",
    JwksPemNotImplementedKty => "PEM Key type is not supported",
    JwksPemBadBase64 => "PEM pubkey parse fails",
    JwksPemGetRawEd25519Error => "PEM failed to get raw ED25519 key",
    JwksBioAllocError => "Failed to create BIO due to memory allocation failure",
}

impl std::fmt::Display for JwtStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for JwtStatus {}
