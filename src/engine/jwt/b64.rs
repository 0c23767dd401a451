//! Base64url decoding with the exact leniency of Abseil's `WebSafeBase64Unescape`, which
//! Envoy uses for every JWT segment and every JWK field. A stricter decoder would turn
//! tokens Envoy accepts into 401s (padded segments are common in hand-rolled issuers).
//!
//! Accepted, as Abseil does: ASCII whitespace anywhere; no padding, or exactly the right
//! number of `=` (or `.`) pad characters, possibly mixed with whitespace; non-zero
//! trailing bits. Rejected: a lone final character (6 bits), characters outside the
//! URL-safe alphabet (`+` and `/` included), data after padding, wrong pad counts.

/// Value of each byte in the URL-safe alphabet, or `INVALID`.
const INVALID: u8 = 0xff;
const TABLE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut i = 0;
    while i < alphabet.len() {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// `absl::ascii_isspace`: space, \t, \n, \v, \f, \r.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn is_pad(c: u8) -> bool {
    c == b'=' || c == b'.'
}

/// Decodes like `absl::WebSafeBase64Unescape`; `None` where Abseil returns false.
pub(crate) fn decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut n = 0u8;
    let mut pos = input.len();
    for (i, &c) in input.iter().enumerate() {
        let v = TABLE[usize::from(c)];
        if v != INVALID {
            acc = (acc << 6) | u32::from(v);
            n += 1;
            if n == 4 {
                out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
                acc = 0;
                n = 0;
            }
        } else if is_pad(c) {
            pos = i;
            break;
        } else if !is_space(c) {
            return None;
        }
    }
    let expected_pads = match n {
        0 => 0,
        2 => {
            out.push((acc >> 4) as u8);
            2
        }
        3 => {
            out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]);
            1
        }
        // One character carries only 6 bits: not a byte.
        _ => return None,
    };
    let mut pads = 0;
    for &c in input.get(pos..).unwrap_or_default() {
        if is_pad(c) {
            pads += 1;
        } else if !is_space(c) {
            return None;
        }
    }
    (pads == 0 || pads == expected_pads).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::decode;

    fn d(s: &str) -> Option<Vec<u8>> {
        decode(s.as_bytes())
    }

    #[test]
    fn decodes_unpadded_and_padded() {
        assert_eq!(d("").unwrap(), b"");
        assert_eq!(d("QQ").unwrap(), b"A");
        assert_eq!(d("QQ==").unwrap(), b"A");
        assert_eq!(d("QUI").unwrap(), b"AB");
        assert_eq!(d("QUI=").unwrap(), b"AB");
        assert_eq!(d("QUJD").unwrap(), b"ABC");
        assert_eq!(d("-_-_").unwrap(), vec![0xfb, 0xff, 0xbf]);
    }

    #[test]
    fn abseil_leniencies() {
        // Whitespace anywhere, '.' as pad, non-zero trailing bits.
        assert_eq!(d(" Q U\nJD\t").unwrap(), b"ABC");
        assert_eq!(d("QQ..").unwrap(), b"A");
        assert_eq!(d("QQ= =").unwrap(), b"A");
        assert_eq!(d("QR").unwrap(), b"A");
    }

    #[test]
    fn rejections() {
        assert!(d("Q").is_none(), "6 bits are not a byte");
        assert!(d("QUJDR").is_none());
        assert!(d("QQ=").is_none(), "one pad where two are due");
        assert!(d("QQ===").is_none());
        assert!(d("QUJD=").is_none(), "pad after a full group");
        assert!(d("QQ==QQ").is_none(), "data after padding");
        assert!(d("a+b/").is_none(), "standard alphabet is not URL-safe");
        assert!(d("QQ\0").is_none());
        assert!(d("=").is_none());
    }
}
