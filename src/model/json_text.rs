//! Small JSON helpers for the response path: decoding string literals into reused buffers, and
//! taking only the first element of an array without collecting it.
//!
//! Streamed text arrives as JSON string literals, usually with escapes (`\n`, `\"`, `\u00e9`).
//! Deserializing them into owned strings would allocate per token; instead the fields are
//! borrowed as raw JSON ([`serde_json::value::RawValue`]) and decoded here, appending to a buffer
//! that keeps its capacity.

use serde::de::{Deserialize, Deserializer, IgnoredAny, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// A growable UTF-8 buffer [`unescape_into`] can decode into: a `String`, or a string in a
/// bump arena.
pub trait TextOut {
    /// Bytes held.
    fn text_len(&self) -> usize;
    /// Appends text.
    fn append(&mut self, s: &str);
    /// Appends one character.
    fn append_char(&mut self, c: char);
    /// Cuts back to `len` bytes (a character boundary).
    fn cut(&mut self, len: usize);
}

/// The same four one-liners for each string type.
macro_rules! text_out {
    ($($t:ty),*) => {$(
        impl TextOut for $t {
            fn text_len(&self) -> usize {
                self.len()
            }
            fn append(&mut self, s: &str) {
                self.push_str(s)
            }
            fn append_char(&mut self, c: char) {
                self.push(c)
            }
            fn cut(&mut self, len: usize) {
                self.truncate(len)
            }
        }
    )*};
}

text_out!(String, bumpalo::collections::String<'_>);

/// Appends the decoded contents of the JSON string literal `raw` (quotes included) to `out`.
/// Returns false, leaving `out` unchanged, when `raw` is not a well-formed string literal.
/// Lone surrogates in `\u` escapes become U+FFFD.
pub fn unescape_into(raw: &str, out: &mut impl TextOut) -> bool {
    unescape(raw, out, true)
}

/// [`unescape_into`], refusing lone surrogates as serde_json does (for readers whose answers
/// must equal serde's).
pub(crate) fn unescape_strict(raw: &str, out: &mut impl TextOut) -> bool {
    unescape(raw, out, false)
}

fn unescape(raw: &str, out: &mut impl TextOut, replace_lone_surrogates: bool) -> bool {
    let b = raw.as_bytes();
    if b.len() < 2 || b[0] != b'"' || b[b.len() - 1] != b'"' {
        return false;
    }
    let start_len = out.text_len();
    let body = &raw[1..raw.len() - 1];
    let bytes = body.as_bytes();
    let mut i = 0;
    let mut run = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        out.append(&body[run..i]);
        let Some((c, next)) = escape_at(bytes, i, replace_lone_surrogates) else {
            out.cut(start_len);
            return false;
        };
        out.append_char(c);
        i = next;
        run = i;
    }
    out.append(&body[run..]);
    true
}

/// The escape sequence at `bytes[i]` (a backslash) inside a JSON string literal: the character
/// it stands for and the index just past it; `None` when it is malformed. A `\u` escape of a
/// lone surrogate gives U+FFFD with `replace_lone_surrogates`, `None` without.
#[inline]
pub(crate) fn escape_at(
    bytes: &[u8],
    i: usize,
    replace_lone_surrogates: bool,
) -> Option<(char, usize)> {
    let c = match *bytes.get(i + 1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let hi = hex4(bytes, i + 2)?;
            let mut next = i + 6;
            let decoded = if (0xD800..0xDC00).contains(&hi) {
                // A high surrogate: a low one must follow as another \u escape.
                let lo = if bytes.get(next) == Some(&b'\\') && bytes.get(next + 1) == Some(&b'u') {
                    hex4(bytes, next + 2).filter(|lo| (0xDC00..0xE000).contains(lo))
                } else {
                    None
                };
                lo.and_then(|lo| {
                    next += 6;
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                })
            } else {
                char::from_u32(hi)
            };
            let c = match decoded {
                Some(c) => c,
                None if replace_lone_surrogates => '\u{fffd}',
                None => return None,
            };
            return Some((c, next));
        }
        _ => return None,
    };
    Some((c, i + 2))
}

/// The value of four hex digits at `at`.
pub(crate) fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let digits = b.get(at..at + 4)?;
    let mut v = 0u32;
    for &d in digits {
        v = v * 16 + (d as char).to_digit(16)?;
    }
    Some(v)
}

/// Writes `value` as JSON into `out` (a string literal, a number, a tree): how the request
/// writers put each value on the wire without building a document first.
pub fn write_json<W: std::io::Write, T: serde::Serialize + ?Sized>(
    out: &mut W,
    value: &T,
) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::other)
}

/// Writes `s` as a JSON string literal, escaped exactly as serde_json escapes it (`"`, `\\`,
/// the short escapes, other control characters as `\\u00XX`), in as few writes as the
/// escapes allow: request bodies are mostly strings, and the general serializer's set-up
/// cost more than the copying.
pub fn write_str<W: std::io::Write>(out: &mut W, s: &str) -> std::io::Result<()> {
    let bytes = s.as_bytes();
    let mut start = 0;
    out.write_all(b"\"")?;
    loop {
        let i = plain_run(bytes, start);
        if start < i {
            out.write_all(&bytes[start..i])?;
        }
        let Some(&b) = bytes.get(i) else { break };
        match b {
            b'"' => out.write_all(b"\\\"")?,
            b'\\' => out.write_all(b"\\\\")?,
            b'\n' => out.write_all(b"\\n")?,
            b'\r' => out.write_all(b"\\r")?,
            b'\t' => out.write_all(b"\\t")?,
            0x08 => out.write_all(b"\\b")?,
            0x0c => out.write_all(b"\\f")?,
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.write_all(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 0xf) as usize],
                ])?
            }
        }
        start = i + 1;
    }
    out.write_all(b"\"")
}

/// The index of the first byte at or after `from` that a JSON string literal cannot hold as
/// it is (see [`NEEDS_ESCAPE`]), or `bytes.len()`. Eight bytes at a time: strings are most of
/// every request and response body.
#[inline]
pub(crate) fn plain_run(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // Per byte, the high bit of each term is set for a zero byte of `w ^ c` (that is, a
        // byte equal to c) or for a byte below 0x20; bytes at or above 0x80 never match. Only
        // the lowest flagged byte is exact, and only it is used.
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let hits = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | w.wrapping_sub(ONES * 0x20) & !w)
            & HIGH;
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && !NEEDS_ESCAPE[bytes[i] as usize] {
        i += 1;
    }
    i
}

/// Bytes a JSON string literal cannot hold as they are (a quote, a backslash, a control
/// character): escaped when writing, the end of a plain run when reading.
pub(crate) static NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Describes why `what` (a response or stream event) could not be read: not JSON at all, or
/// JSON of an unexpected shape.
pub fn describe(what: &str, e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Data => format!("{what} has an unexpected shape: {e}"),
        _ => format!("{what} is not valid JSON: {e}"),
    }
}

/// A string borrowed from the input when it has no escapes (owned otherwise). Unlike
/// `Option<Cow<str>>`, which serde always deserializes as owned, this borrows inside an
/// `Option` too: reading a chunk's `model` or an event's `type` allocates nothing.
#[derive(Debug)]
pub struct Str<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A count read leniently, as providers differ: an unsigned integer; a negative one as 0; a
/// float truncated; a numeric string parsed; anything else (null, text, objects) as absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count(pub Option<u64>);

impl Count {
    /// The value, or 0.
    pub fn get(self) -> u64 {
        self.0.unwrap_or(0)
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a count")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Count, E> {
                Ok(Count(Some(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Count, E> {
                Ok(Count(Some(v.max(0) as u64)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Count, E> {
                Ok(Count((v.is_finite() && v >= 0.0).then_some(v as u64)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Count, E> {
                Ok(Count(v.trim().parse().ok()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_unit<E>(self) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Count, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// The first element of a JSON array (the rest are skipped without being collected); `None`
/// for an empty array or `null`.
pub struct First<T>(pub Option<T>);

impl<T> Default for First<T> {
    fn default() -> Self {
        First(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = First<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(First(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let first = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::{plain_run, NEEDS_ESCAPE};

    #[test]
    fn plain_run_stops_where_the_byte_table_does() {
        // Every position of every special byte, among plain bytes of all kinds (ASCII,
        // multi-byte UTF-8, DEL, bytes just above the control range).
        let fillers: [&[u8]; 4] = [
            b"abcdefghijklmnopqrstuvwx",
            "é€😀ü".as_bytes(),
            b"\x7f !#[]~",
            b"0123456789ABCDEF",
        ];
        for filler in fillers {
            for len in 0..filler.len() {
                for at in 0..=len {
                    for special in (0u8..0x20).chain([b'"', b'\\']) {
                        let mut v = filler[..len].to_vec();
                        v.insert(at, special);
                        v.extend_from_slice(filler);
                        let expect = v.iter().position(|&b| NEEDS_ESCAPE[b as usize]).unwrap();
                        assert_eq!(plain_run(&v, 0), expect, "{v:?}");
                        assert_eq!(plain_run(&v, at), at);
                    }
                }
                assert_eq!(plain_run(&filler[..len], 0), len);
            }
        }
        assert_eq!(plain_run(b"", 0), 0);
        assert_eq!(plain_run(b"abc", 3), 3);
        // Every byte value at every position of two words, alone and before a second special.
        let expect = |v: &[u8]| {
            v.iter()
                .position(|&b| NEEDS_ESCAPE[b as usize])
                .unwrap_or(v.len())
        };
        for b in 0..=255u8 {
            for at in 0..16 {
                let mut v = vec![b'a'; 20];
                v[at] = b;
                assert_eq!(plain_run(&v, 0), expect(&v), "{b:#x} at {at}");
                v[(at + 3).min(19)] = b'"';
                assert_eq!(plain_run(&v, 0), expect(&v), "{b:#x} at {at}, quote after");
                let mut w = vec![0xa0u8, 0xa2, 0xdc, 0xff, 0x80, 0x7f, 0x21, 0x5d, 0xa0, 0xa2];
                w.insert(at.min(w.len()), b);
                assert_eq!(
                    plain_run(&w, 0),
                    expect(&w),
                    "{b:#x} at {at} among high bytes"
                );
            }
        }
    }

    #[test]
    fn write_str_escapes_like_serde_json() {
        let mut all: String = (0u8..128).map(char::from).collect();
        all.push_str("café ☺ 😀 \u{7f}\u{2028}");
        for s in [all.as_str(), "", "plain", "\"", "a\\b", "\n\n", "end\u{1}"] {
            let mut ours = Vec::new();
            super::write_str(&mut ours, s).unwrap();
            assert_eq!(ours, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    use super::*;

    fn dec(raw: &str) -> Option<String> {
        let mut s = String::from("pre:");
        unescape_into(raw, &mut s).then(|| s[4..].to_string())
    }

    #[test]
    fn decodes_like_serde_json() {
        for lit in [
            r#""""#,
            r#""plain""#,
            r#""a\nb\t\"q\" \\ \/ \b\f\r""#,
            r#""caf\u00e9 \u4e2d \ud83d\ude00 end""#,
            "\"raw utf-8: é 😀\"",
        ] {
            let want: String = serde_json::from_str(lit).unwrap();
            assert_eq!(dec(lit).as_deref(), Some(want.as_str()), "{lit}");
        }
    }

    #[test]
    fn rejects_non_strings_and_keeps_buffer() {
        for bad in ["1", "null", "\"abc", r#""bad \x""#, r#""\u12""#, ""] {
            let mut s = String::from("keep");
            assert!(!unescape_into(bad, &mut s), "{bad}");
            assert_eq!(s, "keep");
        }
        assert_eq!(
            dec(r#""lone \ud800 x""#).as_deref(),
            Some("lone \u{fffd} x")
        );
    }

    #[test]
    fn str_borrows_inside_option() {
        #[derive(serde::Deserialize)]
        struct T<'a> {
            #[serde(borrow)]
            a: Option<Str<'a>>,
            #[serde(borrow)]
            b: Option<Str<'a>>,
        }
        let t: T = serde_json::from_str(r#"{"a":"plain","b":"esc\n"}"#).unwrap();
        assert!(matches!(t.a.as_ref().unwrap().0, Cow::Borrowed("plain")));
        assert_eq!(&*t.b.unwrap(), "esc\n");
    }

    #[test]
    fn counts_are_read_leniently() {
        #[derive(serde::Deserialize)]
        struct T {
            a: Count,
            b: Count,
            c: Count,
            d: Count,
            e: Count,
            f: Count,
            #[serde(default)]
            g: Count,
        }
        let t: T =
            serde_json::from_str(r#"{"a":12,"b":12.7,"c":-3,"d":"42","e":null,"f":{"x":[1]}}"#)
                .unwrap();
        assert_eq!(
            [t.a, t.b, t.c, t.d, t.e, t.f, t.g].map(Count::get),
            [12, 12, 0, 42, 0, 0, 0]
        );
        assert_eq!(t.e.0, None);
    }

    #[test]
    fn first_takes_one_element() {
        let v: First<u32> = serde_json::from_str("[7, {\"x\": [1]}, 9]").unwrap();
        assert_eq!(v.0, Some(7));
        let e: First<u32> = serde_json::from_str("[]").unwrap();
        assert_eq!(e.0, None);
        let n: First<u32> = serde_json::from_str("null").unwrap();
        assert_eq!(n.0, None);
    }
}
