//! The little DER needed to read a `SubjectPublicKeyInfo` (PEM public keys) and the SPKI
//! inside an X.509 certificate. Definite, minimal lengths only, as BoringSSL's CBS parser.

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
}
