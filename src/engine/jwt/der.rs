//! The little DER needed to read a `SubjectPublicKeyInfo` (PEM public keys) and the SPKI
//! inside an X.509 certificate. Definite, minimal lengths only, as BoringSSL's CBS parser.
//!
//! And the little DER written for the host's signature check (`host_verify`): an RSA or EC
//! SPKI, built once per key at load, and an `ECDSA-Sig-Value` per ES* verification.

pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const BIT_STRING: u8 = 0x03;
pub(crate) const NULL: u8 = 0x05;
pub(crate) const OID: u8 = 0x06;
/// `[0] EXPLICIT` (the X.509 version).
pub(crate) const CONTEXT_0: u8 = 0xa0;

/// A cursor over DER bytes.
#[derive(Clone, Copy)]
pub(crate) struct Der<'a>(pub(crate) &'a [u8]);

impl<'a> Der<'a> {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Next element's tag, without consuming it.
    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// Reads one element of any tag: (tag, contents).
    pub(crate) fn any(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        // Multi-byte tags never occur in the structures read here.
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let bytes = rest.get(..n)?;
            if bytes.first() == Some(&0) {
                return None;
            }
            let len = bytes.iter().fold(0usize, |a, &b| (a << 8) | usize::from(b));
            if len < 0x80 {
                return None;
            }
            (len, rest.get(n..)?)
        };
        let contents = rest.get(..len)?;
        self.0 = rest.get(len..)?;
        Some((tag, contents))
    }

    /// Reads one element that must have `tag`.
    pub(crate) fn expect(&mut self, tag: u8) -> Option<Der<'a>> {
        match self.any()? {
            (t, c) if t == tag => Some(Der(c)),
            _ => None,
        }
    }

    /// A non-negative, minimally encoded INTEGER, as big-endian bytes without sign byte.
    pub(crate) fn unsigned_integer(&mut self) -> Option<&'a [u8]> {
        let bytes = self.expect(INTEGER)?.0;
        match bytes {
            [] => None,
            [b, ..] if b & 0x80 != 0 => None,
            [0, next, ..] if next & 0x80 == 0 => None,
            [0, rest @ ..] if !rest.is_empty() => Some(rest),
            _ => Some(bytes),
        }
    }

    /// A BIT STRING's bytes; it must have no unused bits.
    pub(crate) fn bit_string_bytes(&mut self) -> Option<&'a [u8]> {
        match self.expect(BIT_STRING)?.0 {
            [0, rest @ ..] => Some(rest),
            _ => None,
        }
    }
}

/// Parsed `SubjectPublicKeyInfo`: algorithm OID, its parameters element (if any), key bytes.
pub(crate) struct Spki<'a> {
    pub(crate) algorithm: &'a [u8],
    pub(crate) params: Option<(u8, &'a [u8])>,
    pub(crate) key: &'a [u8],
}

pub(crate) fn parse_spki(mut der: Der<'_>) -> Option<Spki<'_>> {
    let mut spki = der.expect(SEQUENCE)?;
    let mut alg = spki.expect(SEQUENCE)?;
    let algorithm = alg.expect(OID)?.0;
    let params = if alg.is_empty() {
        None
    } else {
        Some(alg.any()?)
    };
    if !alg.is_empty() {
        return None;
    }
    let key = spki.bit_string_bytes()?;
    spki.is_empty().then_some(Spki {
        algorithm,
        params,
        key,
    })
}

/// The SPKI element (with its header) of an X.509 certificate, as raw DER.
pub(crate) fn certificate_spki(mut der: Der<'_>) -> Option<Der<'_>> {
    let mut cert = der.expect(SEQUENCE)?;
    let mut tbs = cert.expect(SEQUENCE)?;
    // signatureAlgorithm and signatureValue must follow the TBS part.
    cert.expect(SEQUENCE)?;
    cert.bit_string_bytes()?;
    if !cert.is_empty() {
        return None;
    }
    if tbs.peek_tag() == Some(CONTEXT_0) {
        tbs.any()?;
    }
    // Any INTEGER: negative serials exist in the wild and BoringSSL accepts them.
    tbs.expect(INTEGER)?;
    tbs.expect(SEQUENCE)?; // signature
    tbs.expect(SEQUENCE)?; // issuer
    tbs.expect(SEQUENCE)?; // validity
    tbs.expect(SEQUENCE)?; // subject
    let before = tbs;
    let (tag, _) = tbs.any()?;
    if tag != SEQUENCE {
        return None;
    }
    let spki_len = before.0.len() - tbs.0.len();
    Some(Der(before.0.get(..spki_len)?))
}

// ---- Writing -------------------------------------------------------------------------

/// Appends one element: tag, minimal definite length, contents.
pub(crate) fn write_tlv(out: &mut Vec<u8>, tag: u8, contents: &[u8]) {
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        let significant = bytes.get(start..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(contents);
}

fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(contents.len() + 6);
    write_tlv(&mut out, tag, contents);
    out
}

/// A non-negative INTEGER from big-endian magnitude bytes, minimally encoded: leading zero
/// bytes dropped, one `00` added when the high bit is set, zero as `02 01 00`.
pub(crate) fn write_unsigned_integer(out: &mut Vec<u8>, magnitude: &[u8]) {
    let start = magnitude
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(magnitude.len());
    let value = magnitude.get(start..).unwrap_or_default();
    match value.first() {
        None => write_tlv(out, INTEGER, &[0]),
        Some(b) if b & 0x80 != 0 => {
            let mut padded = Vec::with_capacity(value.len() + 1);
            padded.push(0);
            padded.extend_from_slice(value);
            write_tlv(out, INTEGER, &padded);
        }
        Some(_) => write_tlv(out, INTEGER, value),
    }
}

/// `SubjectPublicKeyInfo { AlgorithmIdentifier { algorithm, params }, BIT STRING key }`.
fn spki(algorithm: &[u8], params: &[u8], key: &[u8]) -> Vec<u8> {
    let mut alg = tlv(OID, algorithm);
    alg.extend_from_slice(params);
    let mut bits = Vec::with_capacity(key.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(key);
    let mut body = tlv(SEQUENCE, &alg);
    write_tlv(&mut body, BIT_STRING, &bits);
    tlv(SEQUENCE, &body)
}

/// An RSA SPKI (RFC 3279: rsaEncryption, NULL parameters, `RSAPublicKey { n, e }`) from
/// the big-endian modulus and exponent.
pub(crate) fn rsa_spki(rsa_oid: &[u8], n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut ints = Vec::with_capacity(n.len() + e.len() + 12);
    write_unsigned_integer(&mut ints, n);
    write_unsigned_integer(&mut ints, e);
    spki(rsa_oid, &[NULL, 0], &tlv(SEQUENCE, &ints))
}

/// An EC SPKI (RFC 5480: id-ecPublicKey, namedCurve) for a SEC1 point.
pub(crate) fn ec_spki(ec_oid: &[u8], curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
    spki(ec_oid, &tlv(OID, curve_oid), point)
}

/// `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` from big-endian r and s.
pub(crate) fn ecdsa_signature(r: &[u8], s: &[u8]) -> Vec<u8> {
    let mut ints = Vec::with_capacity(r.len() + s.len() + 6);
    write_unsigned_integer(&mut ints, r);
    write_unsigned_integer(&mut ints, s);
    tlv(SEQUENCE, &ints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_must_be_minimal_and_definite() {
        assert_eq!(Der(&[0x02, 0x01, 0x05]).any(), Some((0x02, &[5u8][..])));
        assert!(
            Der(&[0x02, 0x81, 0x01, 0x05]).any().is_none(),
            "long form for a short length"
        );
        assert!(
            Der(&[0x30, 0x80, 0x00, 0x00]).any().is_none(),
            "indefinite length"
        );
        assert!(Der(&[0x02, 0x02, 0x05]).any().is_none(), "truncated");
        assert!(Der(&[0x1f, 0x01, 0x00]).any().is_none(), "multi-byte tag");
    }

    #[test]
    fn unsigned_integers() {
        assert_eq!(
            Der(&[0x02, 0x02, 0x00, 0x80]).unsigned_integer(),
            Some(&[0x80u8][..])
        );
        assert_eq!(
            Der(&[0x02, 0x01, 0x00]).unsigned_integer(),
            Some(&[0u8][..])
        );
        assert!(
            Der(&[0x02, 0x01, 0x80]).unsigned_integer().is_none(),
            "negative"
        );
        assert!(
            Der(&[0x02, 0x02, 0x00, 0x01]).unsigned_integer().is_none(),
            "not minimal"
        );
        assert!(Der(&[0x02, 0x00]).unsigned_integer().is_none());
    }

    fn int(magnitude: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_unsigned_integer(&mut out, magnitude);
        out
    }

    #[test]
    fn integers_are_written_minimally() {
        assert_eq!(int(&[]), [0x02, 0x01, 0x00], "zero");
        assert_eq!(
            int(&[0, 0, 0]),
            [0x02, 0x01, 0x00],
            "zero with leading zeros"
        );
        assert_eq!(int(&[0x7f]), [0x02, 0x01, 0x7f]);
        assert_eq!(
            int(&[0x80]),
            [0x02, 0x02, 0x00, 0x80],
            "high bit: sign byte"
        );
        assert_eq!(int(&[0, 0, 0x12, 0x34]), [0x02, 0x02, 0x12, 0x34]);
        assert_eq!(int(&[0, 0xff, 0x01]), [0x02, 0x03, 0x00, 0xff, 0x01]);
        // What is written reads back, through the strict reader.
        for m in [&[1u8][..], &[0x80, 0], &[0, 0, 0x7f, 0xff], &[0xff; 67]] {
            let out = int(m);
            let start = m.iter().position(|&b| b != 0).unwrap();
            assert_eq!(Der(&out).unsigned_integer(), Some(&m[start..]), "{m:02x?}");
        }
    }

    #[test]
    fn lengths_are_written_minimally() {
        let mut out = Vec::new();
        write_tlv(&mut out, 0x04, &[7; 0x7f]);
        assert_eq!(&out[..2], [0x04, 0x7f]);
        for (len, header) in [
            (0x80usize, &[0x04u8, 0x81, 0x80][..]),
            (0xff, &[0x04, 0x81, 0xff]),
            (0x100, &[0x04, 0x82, 0x01, 0x00]),
            (0x1_0000, &[0x04, 0x83, 0x01, 0x00, 0x00]),
        ] {
            let contents = vec![7u8; len];
            let mut out = Vec::new();
            write_tlv(&mut out, 0x04, &contents);
            assert_eq!(&out[..header.len()], header, "{len}");
            assert_eq!(Der(&out).any(), Some((0x04, &contents[..])), "{len}");
        }
    }

    #[test]
    fn ecdsa_signatures() {
        // High bit on r, leading zeros on s.
        let mut r = vec![0x80u8; 32];
        r[31] = 1;
        let mut s = vec![0u8; 32];
        s[31] = 5;
        let sig = ecdsa_signature(&r, &s);
        let mut want = vec![0x30, 0x26, 0x02, 0x21, 0x00];
        want.extend_from_slice(&r);
        want.extend_from_slice(&[0x02, 0x01, 0x05]);
        assert_eq!(sig, want);
        // P-521 sizes: 2 x (2 + 67) = 138 content bytes, a long-form SEQUENCE length.
        let big = [0xffu8; 66];
        let sig = ecdsa_signature(&big, &big);
        assert_eq!(&sig[..6], [0x30, 0x81, 138, 0x02, 67, 0x00]);
        let mut seq = Der(&sig).expect(SEQUENCE).unwrap();
        assert_eq!(seq.unsigned_integer(), Some(&big[..]));
        assert_eq!(seq.unsigned_integer(), Some(&big[..]));
        assert!(seq.is_empty());
        // Zero (never sent: the verifier rejects it first) is still well formed.
        assert_eq!(
            ecdsa_signature(&[0; 32], &[1]),
            [0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01]
        );
    }

    #[test]
    fn written_spki_reads_back() {
        let rsa_oid = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
        let der = rsa_spki(&rsa_oid, &[0xc1; 256], &[1, 0, 1]);
        let spki = parse_spki(Der(&der)).unwrap();
        assert_eq!(spki.algorithm, rsa_oid);
        assert_eq!(spki.params, Some((NULL, &[][..])));
        let mut key = Der(spki.key).expect(SEQUENCE).unwrap();
        assert_eq!(key.unsigned_integer(), Some(&[0xc1u8; 256][..]));
        assert_eq!(key.unsigned_integer(), Some(&[1u8, 0, 1][..]));
        assert!(key.is_empty());
    }
}
