//! JSON string literals for the text the engine writes by hand (the decision log, claims
//! forwarded as protobuf JSON), without serde_json's serializer, which the module otherwise
//! does not need (about 14 KB).

/// Which characters besides `"`, `\` and the controls become escapes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escapes {
    /// RFC 8259's minimum: `\n` `\r` `\t`, other controls as `\u00XX`.
    Json,
    /// As protobuf's JSON printer: also `\b` `\f`, and DEL, `<`, `>` as `\u00XX`.
    Protobuf,
}

/// Appends `text` as a quoted JSON string; non-ASCII characters go through as they are.
pub(crate) fn push_json_string(out: &mut String, text: &str, escapes: Escapes) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let protobuf = escapes == Escapes::Protobuf;
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' if protobuf => out.push_str("\\b"),
            '\u{c}' if protobuf => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (protobuf && matches!(c, '\u{7f}' | '<' | '>')) => {
                let n = c as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[n >> 4]));
                out.push(char::from(HEX[n & 15]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str, escapes: Escapes) -> String {
        let mut out = String::new();
        push_json_string(&mut out, text, escapes);
        out
    }

    #[test]
    fn escapes_per_style() {
        let text = "a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{1}i\u{7f}j<k>lé";
        assert_eq!(
            json(text, Escapes::Json),
            "\"a\\\"b\\\\c\\nd\\re\\tf\\u0008g\\u000ch\\u0001i\u{7f}j<k>lé\""
        );
        assert_eq!(
            json(text, Escapes::Protobuf),
            "\"a\\\"b\\\\c\\nd\\re\\tf\\bg\\fh\\u0001i\\u007fj\\u003ck\\u003elé\""
        );
    }

    #[test]
    fn every_control_reads_back() {
        // Whatever a request or a claim carries, serde_json reads the literal back as the same text.
        let ascii: String = (0u32..0x80).filter_map(char::from_u32).collect();
        for text in [ascii.as_str(), "q\"b\\s", "ünï😀", ""] {
            for escapes in [Escapes::Json, Escapes::Protobuf] {
                let back: String = serde_json::from_str(&json(text, escapes)).unwrap();
                assert_eq!(back, text);
            }
        }
    }
}
