//! The protobuf wire format, the small subset the gRPC ext_authz messages need: varints,
//! length-delimited fields and nested messages to write; a bounds-checked field reader that
//! skips what it does not know. Hand-written so the module carries no protobuf runtime
//! (the wasm size budget); public so the test authorizer speaks the same bytes.
//!
//! The reader never trusts a length: every length is checked against the bytes left before
//! anything is sliced or allocated, varints longer than 10 bytes are refused, groups are
//! skipped with an explicit depth limit, and field number 0 or wire types 6 and 7 are errors,
//! as protobuf's own parser treats them.

use std::fmt;

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Builds one message.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.raw_varint((u64::from(field) << 3) | u64::from(wire));
    }

    /// A varint field (int32/int64 negatives as 10-byte two's complement, as protobuf does);
    /// proto3 omits zero.
    pub fn varint(&mut self, field: u32, v: u64) -> &mut Self {
        if v != 0 {
            self.key(field, 0);
            self.raw_varint(v);
        }
        self
    }

    /// A bool field (omitted when false).
    pub fn bool(&mut self, field: u32, v: bool) -> &mut Self {
        self.varint(field, u64::from(v))
    }

    /// A length-delimited field, written even when empty (for map entries and oneofs).
    pub fn bytes_always(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.key(field, 2);
        self.raw_varint(v.len() as u64);
        self.buf.extend_from_slice(v);
        self
    }

    /// A `bytes` / `string` field; proto3 omits empty ones.
    pub fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        if !v.is_empty() {
            self.bytes_always(field, v);
        }
        self
    }

    pub fn string(&mut self, field: u32, v: &str) -> &mut Self {
        self.bytes(field, v.as_bytes())
    }

    /// A nested message, built by `f` (always written: presence matters for messages).
    pub fn message(&mut self, field: u32, f: impl FnOnce(&mut Writer)) -> &mut Self {
        let mut inner = Writer::new();
        f(&mut inner);
        self.bytes_always(field, &inner.buf)
    }

    /// One entry of a `map<string, string>` field.
    pub fn map_entry(&mut self, field: u32, key: &str, value: &str) -> &mut Self {
        self.message(field, |e| {
            e.string(1, key).string(2, value);
        })
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// One field's value as read from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Value<'a> {
    /// The bytes of a length-delimited field; a wrong wire type is an error (protobuf's
    /// parser fails on a known field of the wrong type).
    pub fn bytes(self) -> Result<&'a [u8], DecodeError> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(DecodeError(
                "a length-delimited field has another wire type",
            )),
        }
    }

    /// A `string` field: UTF-8 is required (proto3 `string`).
    pub fn string(self) -> Result<String, DecodeError> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_string)
            .map_err(|_| DecodeError("a string field is not UTF-8"))
    }

    pub fn varint(self) -> Result<u64, DecodeError> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => Err(DecodeError("a varint field has another wire type")),
        }
    }
}

/// Reads the fields of one message in order.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Nesting of groups skipped inside one message (protobuf's default recursion limit).
const MAX_GROUP_DEPTH: usize = 100;

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(DecodeError("truncated varint"));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(DecodeError("varint longer than 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(DecodeError("a field runs past the end of the message"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn key(&mut self) -> Result<(u32, u8), DecodeError> {
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| DecodeError("field number too large"))?;
        if field == 0 {
            return Err(DecodeError("field number 0"));
        }
        Ok((field, (key & 7) as u8))
    }

    fn value(&mut self, wire: u8) -> Result<Value<'a>, DecodeError> {
        Ok(match wire {
            0 => Value::Varint(self.varint()?),
            1 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| DecodeError("length too large"))?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                let mut a = [0u8; 4];
                a.copy_from_slice(b);
                Value::Fixed32(u32::from_le_bytes(a))
            }
            _ => return Err(DecodeError("invalid wire type")),
        })
    }

    /// Skips a group whose start tag (field `field`) was just read.
    fn skip_group(&mut self, field: u32) -> Result<(), DecodeError> {
        let mut open = vec![field];
        while let Some(&top) = open.last() {
            let (f, wire) = self.key()?;
            match wire {
                3 => {
                    if open.len() >= MAX_GROUP_DEPTH {
                        return Err(DecodeError("groups nested too deeply"));
                    }
                    open.push(f);
                }
                4 if f == top => {
                    open.pop();
                }
                4 => return Err(DecodeError("mismatched end of group")),
                w => {
                    self.value(w)?;
                }
            }
        }
        Ok(())
    }

    /// The next field (`None` at the end). Unknown groups are skipped here.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, DecodeError> {
        loop {
            if self.pos >= self.buf.len() {
                return Ok(None);
            }
            let (field, wire) = self.key()?;
            match wire {
                3 => self.skip_group(field)?,
                4 => return Err(DecodeError("end of group without a start")),
                w => return Ok(Some((field, self.value(w)?))),
            }
        }
    }
}

/// Calls `f` for every field of `buf`, stopping at the first error.
pub fn for_each_field<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(u32, Value<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    // One copy of the loop for every caller (a `dyn` call per field): the module's size.
    fields_dyn(buf, &mut f)
}

fn fields_dyn<'a>(
    buf: &'a [u8],
    f: &mut dyn FnMut(u32, Value<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(buf);
    while let Some((field, value)) = r.next_field()? {
        f(field, value)?;
    }
    Ok(())
}

/// The 5-byte gRPC message prefix (uncompressed) followed by `message`.
pub fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(buf: &[u8]) -> Result<Vec<(u32, Value<'_>)>, DecodeError> {
        let mut out = Vec::new();
        for_each_field(buf, |f, v| {
            out.push((f, v));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn round_trip() {
        let mut w = Writer::new();
        w.varint(1, 150)
            .string(2, "hi")
            .string(3, "")
            .message(4, |m| {
                m.varint(1, u64::MAX);
            })
            .map_entry(5, "k", "");
        let bytes = w.into_bytes();
        assert_eq!(&bytes[..3], &[0x08, 0x96, 0x01]);
        let f = fields(&bytes).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f[0], (1, Value::Varint(150)));
        assert_eq!(f[1], (2, Value::Bytes(b"hi")));
        let inner = fields(f[2].1.bytes().unwrap()).unwrap();
        assert_eq!(inner, [(1, Value::Varint(u64::MAX))]);
    }

    #[test]
    fn hostile_input_is_an_error_never_a_panic() {
        let cases: &[&[u8]] = &[
            &[0x0a],             // length missing
            &[0x0a, 0x05, 1, 2], // length past the end
            &[
                0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ], // 2^64-ish length
            &[
                0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
            ], // 11-byte varint
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ], // > 64 bits
            &[0x00, 0x01],       // field 0
            &[0x0e],             // wire type 6
            &[0x0c],             // end group without start
            &[0x0b, 0x14],       // group 1 ended as 2
            &[0x0b],             // group never ended
            &[0x09, 1, 2, 3],    // fixed64 truncated
            &[0x0d, 1],          // fixed32 truncated
        ];
        for c in cases {
            assert!(fields(c).is_err(), "{c:?}");
        }
        let deep: Vec<u8> = std::iter::repeat_n(0x0b, 10_000).collect();
        assert!(fields(&deep).is_err());
        // A well-formed group is skipped.
        assert_eq!(
            fields(&[0x0b, 0x10, 0x01, 0x0c, 0x08, 0x01]).unwrap().len(),
            1
        );
        // Every prefix of a valid message, and garbage, never panics.
        let mut w = Writer::new();
        w.message(1, |m| {
            m.string(1, &"x".repeat(300)).varint(2, 7);
        });
        let good = w.into_bytes();
        for i in 0..good.len() {
            let _ = fields(&good[..i]);
        }
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let junk: Vec<u8> = (0..64)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = fields(&junk);
        }
    }

    #[test]
    fn grpc_frame_prefix() {
        assert_eq!(grpc_frame(b"ab"), [0, 0, 0, 0, 2, b'a', b'b']);
    }
}
