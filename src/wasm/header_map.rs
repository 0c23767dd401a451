//! proxy-wasm's serialized header map: a little-endian u32 count, each pair's name and value
//! sizes (u32 each), then each name and value followed by a NUL. No hostcalls here, so the
//! parser is also tested natively (`tests/header_map_format.rs` includes this file).

use std::borrow::Cow;

/// Calls `f` with each (name, value) of a serialized header map, in order. A malformed
/// buffer ends the walk (what was read stays read), never a panic. A name that is not
/// UTF-8 is passed lossily converted; the value is passed as bytes (see [`utf8`]).
pub(crate) fn for_each_pair(buf: &[u8], mut f: impl FnMut(&str, &[u8])) {
    let word = |at: usize| -> Option<usize> {
        let b = buf.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let Some(count) = word(0) else { return };
    let Some(mut at) = count.checked_mul(8).and_then(|n| n.checked_add(4)) else {
        return;
    };
    for i in 0..count {
        let sizes = 4 + 8 * i;
        let (Some(klen), Some(vlen)) = (word(sizes), word(sizes + 4)) else {
            return;
        };
        let key_end = at.saturating_add(klen);
        let key = buf.get(at..key_end);
        at = key_end.saturating_add(1);
        let value_end = at.saturating_add(vlen);
        let value = buf.get(at..value_end);
        at = value_end.saturating_add(1);
        let (Some(key), Some(value)) = (key, value) else {
            return;
        };
        f(&text(key), value);
    }
}

fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// A header value as a string: validated once (the fast path for the usual, valid value;
/// a 1 KB token is most of a request's bytes), lossily converted otherwise.
pub(crate) fn utf8(bytes: &[u8]) -> String {
    text(bytes).into_owned()
}
