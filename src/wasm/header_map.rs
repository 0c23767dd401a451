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
    if is_ascii(bytes) {
        // SAFETY: ASCII bytes are valid UTF-8.
        return Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Whether every byte is ASCII, eight at a time without a branch per word: header names and
/// values almost always are, and `str::from_utf8`'s general validation costs several times
/// more per byte in wasm (a 1 KB token is most of a request's bytes).
fn is_ascii(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    let mut seen = 0u64;
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        seen |= u64::from_le_bytes(word);
    }
    let rest = words.remainder().iter().fold(0u8, |a, &b| a | b);
    seen & 0x8080_8080_8080_8080 == 0 && rest < 0x80
}

/// A header value as a string: ASCII (the usual value) checked fast, other UTF-8 validated,
/// anything else lossily converted.
pub(crate) fn utf8(bytes: &[u8]) -> String {
    text(bytes).into_owned()
}
