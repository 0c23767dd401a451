//! The adapter's parser of proxy-wasm's serialized header map (src/wasm/header_map.rs, which
//! has no hostcalls), natively: well-formed maps, and truncated or lying buffers from a host
//! never panic.

#[path = "../src/wasm/header_map.rs"]
mod header_map;

fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend((k.len() as u32).to_le_bytes());
        out.extend((v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend(*k);
        out.push(0);
        out.extend(*v);
        out.push(0);
    }
    out
}

fn pairs(buf: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    header_map::for_each_pair(buf, |k, v| out.push((k.to_string(), header_map::utf8(v))));
    out
}

#[test]
fn reads_every_pair_in_order() {
    let buf = serialize(&[
        (b":path", b"/a?b=c"),
        (b"authorization", b"Bearer x.y.z"),
        (b"x-empty", b""),
        (b"x-bin", b"\xff\xfe"),
    ]);
    let got = pairs(&buf);
    assert_eq!(got.len(), 4);
    assert_eq!(got[0], (":path".into(), "/a?b=c".into()));
    assert_eq!(got[1], ("authorization".into(), "Bearer x.y.z".into()));
    assert_eq!(got[2], ("x-empty".into(), String::new()));
    // Not UTF-8: converted lossily, as the adapter always did.
    assert_eq!(got[3].1, "\u{fffd}\u{fffd}");
    assert!(pairs(&serialize(&[])).is_empty());
}

#[test]
fn malformed_buffers_stop_the_walk_without_panicking() {
    let good = serialize(&[(b"a", b"1"), (b"b", b"2")]);
    // Every truncation: a prefix of the pairs at most, never a panic.
    for cut in 0..good.len() {
        let got = pairs(&good[..cut]);
        assert!(got.len() <= 2, "cut {cut}: {got:?}");
        if let Some(first) = got.first() {
            assert_eq!(first, &("a".to_string(), "1".to_string()));
        }
    }
    // A count or sizes larger than the buffer, up to u32::MAX.
    let mut lying = good.clone();
    lying[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(pairs(&lying).is_empty());
    let mut huge_key = good.clone();
    huge_key[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(pairs(&huge_key).is_empty());
    let mut huge_value = good;
    huge_value[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(pairs(&huge_value), vec![("a".to_string(), "1".to_string())]);
}

/// The ASCII fast path and the general path agree with a lossy conversion for a non-ASCII
/// byte at every position of every length around the word size: valid UTF-8 (`é`, a 4-byte
/// emoji), a lone continuation byte, 0xFF, and a sequence cut at the end.
#[test]
fn values_convert_as_lossy_utf8_wherever_the_non_ascii_byte_is() {
    let odd: [&[u8]; 5] = [
        "é".as_bytes(),
        "🦀".as_bytes(),
        &[0x80],
        &[0xff],
        &[0xe2, 0x82],
    ];
    for len in 0..24 {
        assert_eq!(header_map::utf8(&vec![b'a'; len]), "a".repeat(len));
        for at in 0..=len {
            for bytes in odd {
                let mut v = vec![b'a'; len];
                v.splice(at..at, bytes.iter().copied());
                assert_eq!(
                    header_map::utf8(&v),
                    String::from_utf8_lossy(&v),
                    "len {len}, at {at}, {bytes:?}"
                );
            }
        }
    }
}
