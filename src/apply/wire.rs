//! JSON written the way the API server writes it (Go's `encoding/json`),
//! pure. A JSON-patch `test` is checked by the API server against the
//! object's own JSON, comparing strings by their bytes as encoded: Go
//! escapes `<`, `>`, `&`, U+2028, U+2029 (`\u003e`), serde_json does not.
//! A `test` of a hook like `cmd 2>/dev/null` written by serde_json would
//! never match, and the release it guards would fail forever. Also the
//! segments of the JSON pointers those patches (and managedFields) use.

use std::io;

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter, Serializer};

/// JSON-pointer escaping of one path segment.
pub(crate) fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..i])?;
            w.write_all(escaped.as_bytes())?;
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        match escape {
            // Go has no short forms for these two.
            CharEscape::Backspace => w.write_all(b"\\u0008"),
            CharEscape::FormFeed => w.write_all(b"\\u000c"),
            other => serde_json::ser::CompactFormatter.write_char_escape(w, other),
        }
    }
}

/// `value` as Go's `encoding/json` would write it (compact).
pub fn to_vec(value: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = Serializer::with_formatter(&mut out, GoFormatter);
    value.serialize(&mut ser).expect("JSON values serialize");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_are_escaped_as_go_escapes_them() {
        let v = json!({"s": "a && b 2>/dev/null <x> \u{2028}\u{2029} \u{8}\u{c}\n\t\u{1b} 中文 🚀 \"q\" \\"});
        assert_eq!(
            String::from_utf8(to_vec(&v)).unwrap(),
            r#"{"s":"a \u0026\u0026 b 2\u003e/dev/null \u003cx\u003e \u2028\u2029 \u0008\u000c\n\t\u001b 中文 🚀 \"q\" \\"}"#
        );
        // Still JSON, and the same value.
        let back: serde_json::Value = serde_json::from_slice(&to_vec(&v)).unwrap();
        assert_eq!(back, v);
    }
}
