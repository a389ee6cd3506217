//! A one-pass JSON reader for fast paths: validating primitives (objects, arrays, strings,
//! counts, skipped values) that readers of known shapes are built from (see `openai_scan`
//! and the request reader in `types`). A reader gives up (`None`) on anything beyond its
//! shape and on any JSON it cannot prove valid, and the general (serde) parser decides; the
//! primitives make that easy: every method returns `None` rather than guess.

use super::json_text::{escape_at, hex4, plain_run, unescape_strict};

/// Which known keys an object has had (duplicates are left to the general parser, which
/// rejects them).
#[derive(Default)]
pub(crate) struct Seen(u32);

impl Seen {
    pub(crate) fn first(&mut self, bit: u32) -> Option<()> {
        let mask = 1 << bit;
        if self.0 & mask != 0 {
            return None;
        }
        self.0 |= mask;
        Some(())
    }
}

/// Deeper than this, the general parser decides (it has its own limit).
const MAX_DEPTH: u32 = 64;

pub(crate) struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    depth: u32,
}

impl<'a> Scanner<'a> {
    /// A reader at the start of `text`.
    pub(crate) fn new(text: &'a str) -> Scanner<'a> {
        Scanner {
            text,
            b: text.as_bytes(),
            i: 0,
            depth: 0,
        }
    }

    /// Whether only whitespace is left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.ws();
        self.i == self.b.len()
    }

    pub(crate) fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            // Tokens start above the space; most calls stop at the first byte.
            if c > b' ' || !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                return;
            }
            self.i += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    pub(crate) fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    pub(crate) fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    pub(crate) fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.ws();
        self.b[self.i..]
            .starts_with(word)
            .then(|| self.i += word.len())
    }

    /// Consumes a `null` if one is next.
    pub(crate) fn null(&mut self) -> bool {
        self.ws();
        if self.b.get(self.i..self.i + 4) == Some(b"null") {
            self.i += 4;
            return true;
        }
        false
    }

    /// An object: calls `field` with each key (raw bytes; keys with escapes give up), the
    /// scanner positioned at the value, which `field` must consume.
    pub(crate) fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, &[u8]) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        if self.peek()? == b'}' {
            self.i += 1;
            self.depth -= 1;
            return Some(());
        }
        loop {
            let (start, end) = self.key_span()?;
            self.eat(b':')?;
            let key = &self.b[start..end];
            field(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    self.depth -= 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An array: calls `item` with the index of each element, the scanner positioned at it.
    pub(crate) fn array(
        &mut self,
        mut item: impl FnMut(&mut Self, usize) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'[')?;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        if self.peek()? == b']' {
            self.i += 1;
            self.depth -= 1;
            return Some(());
        }
        let mut n = 0;
        loop {
            item(self, n)?;
            n += 1;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    self.depth -= 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An object key: the span between its quotes. Keys are plain in practice; one with an
    /// escape or a control character gives up (the general parser decides).
    fn key_span(&mut self) -> Option<(usize, usize)> {
        self.ws();
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        let start = self.i + 1;
        let end = plain_run(self.b, start);
        if self.b.get(end) != Some(&b'"') {
            return None;
        }
        self.i = end + 1;
        Some((start, end))
    }

    /// A string literal, validated: the span between its quotes and whether it has escapes.
    pub(crate) fn string_span(&mut self) -> Option<(usize, usize, bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            // Plain characters in one run; stop at a quote, an escape or a control.
            self.i = plain_run(self.b, self.i);
            let c = *self.b.get(self.i)?;
            match c {
                b'"' => {
                    self.i += 1;
                    return Some((start, self.i - 1, escaped));
                }
                b'\\' => {
                    escaped = true;
                    match *self.b.get(self.i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            hex4(self.b, self.i + 2)?;
                            self.i += 6;
                        }
                        _ => return None,
                    }
                }
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
    }

    /// A string literal, decoded onto `out` in one pass (escapes as strictly as serde_json:
    /// no lone surrogates). On failure `out` is left as it was.
    pub(crate) fn string(&mut self, out: &mut String) -> Option<()> {
        let before = out.len();
        let r = self.string_into(out);
        if r.is_none() {
            out.truncate(before);
        }
        r
    }

    fn string_into(&mut self, out: &mut String) -> Option<()> {
        self.eat(b'"')?;
        let start = self.i;
        // Runs start and end next to ASCII bytes (quotes, escapes) of a &str: always on
        // character boundaries, so slicing the text needs no UTF-8 check.
        let mut run = start;
        loop {
            self.i = plain_run(self.b, self.i);
            match *self.b.get(self.i)? {
                b'"' => {
                    let text = self.text.get(run..self.i)?;
                    if run == start && out.is_empty() {
                        // One allocation of the exact size (most strings are read into a
                        // new String, and have no escapes).
                        *out = text.to_owned();
                    } else {
                        out.push_str(text);
                    }
                    self.i += 1;
                    return Some(());
                }
                b'\\' => {
                    out.push_str(self.text.get(run..self.i)?);
                    let (c, next) = escape_at(self.b, self.i, false)?;
                    out.push(c);
                    self.i = next;
                    run = next;
                }
                _ => return None, // a control character
            }
        }
    }

    /// A string literal, skipped, that decodes as strictly as [`Scanner::string`] (no lone
    /// surrogates): what a general parser decoding it would accept.
    pub(crate) fn skip_string_strict(&mut self) -> Option<()> {
        let (start, end, escaped) = self.string_span()?;
        if !escaped {
            return Some(());
        }
        unescape_strict(self.text.get(start - 1..end + 1)?, &mut String::new()).then_some(())
    }

    /// A string literal without escapes, borrowed from the text (one with escapes gives up).
    pub(crate) fn plain_str(&mut self) -> Option<&'a str> {
        let (start, end, escaped) = self.string_span()?;
        if escaped {
            return None;
        }
        self.text.get(start..end)
    }

    /// A string or `null` (left empty); anything else gives up.
    pub(crate) fn opt_string(&mut self, out: &mut String) -> Option<()> {
        if self.null() {
            return Some(());
        }
        self.string(out)
    }

    /// A plain non-negative integer (no sign, fraction or exponent; those give up).
    pub(crate) fn count(&mut self) -> Option<u64> {
        self.ws();
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.b.get(self.i).copied() {
            v = v.checked_mul(10)?.checked_add((d - b'0') as u64)?;
            self.i += 1;
        }
        let len = self.i - start;
        let leading_zero = len > 1 && self.b[start] == b'0';
        let more = matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E'));
        (len > 0 && !leading_zero && !more).then_some(v)
    }

    /// Any JSON value, validated and skipped.
    pub(crate) fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(|s, _| s.skip_value()),
            b'[' => self.array(|s, _| s.skip_value()),
            b'"' => self.string_span().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    /// A number's text, validated by the JSON grammar (for the caller to convert).
    pub(crate) fn number_text(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.i;
        self.number()?;
        self.text.get(start..self.i)
    }

    /// A `true` or `false`.
    pub(crate) fn boolean(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|_| true),
            b'f' => self.literal(b"false").map(|_| false),
            _ => None,
        }
    }

    /// A number by the JSON grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
    pub(crate) fn number(&mut self) -> Option<()> {
        let b = self.b;
        let digits = |i: &mut usize| {
            let start = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i > start
        };
        let mut i = self.i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => {
                digits(&mut i);
            }
            _ => return None,
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if !digits(&mut i) {
                return None;
            }
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            if !digits(&mut i) {
                return None;
            }
        }
        self.i = i;
        Some(())
    }
}

/// Byte-level mutants of `bases` for the fast-path tests: `per_base` of each, every one with
/// up to `max_edits` replaced, inserted or removed bytes from `alphabet`, from a fixed-seed
/// generator (the same mutants every run). Mutants that are not UTF-8 are left out.
#[cfg(test)]
pub(crate) fn mutants(
    bases: &[&str],
    per_base: usize,
    max_edits: u64,
    alphabet: &[u8],
) -> Vec<String> {
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut out = Vec::new();
    for base in bases {
        for _ in 0..per_base {
            let mut b = base.as_bytes().to_vec();
            for _ in 0..1 + next() % max_edits {
                let at = (next() as usize) % b.len();
                let c = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 => b[at] = c,
                    1 => b.insert(at, c),
                    _ => {
                        b.remove(at);
                    }
                }
            }
            if let Ok(t) = String::from_utf8(b) {
                out.push(t);
            }
        }
    }
    out
}
