//! An incremental Server-Sent Events parser.
//!
//! Bytes arrive in arbitrary pieces: an event, a line, or a UTF-8 sequence may be split at any
//! byte. The parser buffers raw bytes and only decodes a complete event (terminated by a blank
//! line), so a split never corrupts text. Comment lines (`:`) are skipped; `data:` lines are
//! joined with `\n`, as the specification says.
//!
//! Events are handed out as borrowed views into the parser's own buffers, which keep their
//! capacity from event to event: once warmed up, parsing a stream allocates nothing.

/// One complete event, borrowed from the parser until the callback returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` field, or empty for the default `message` type.
    pub event: &'a str,
    /// The `data:` lines, joined with `\n`.
    pub data: &'a str,
}

/// Parser state; reuse one per stream.
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Position up to which `buf` has been scanned for a line end.
    scanned: usize,
    event: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// A parser with an empty buffer.
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Forgets any partial event, keeping the buffers (for the next stream).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.scanned = 0;
        self.event.clear();
        self.data.clear();
        self.has_data = false;
    }

    /// Feeds bytes, calling `on_event` for every event completed by them.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(SseEvent<'_>)) {
        // The buffer is taken out of `self` so lines can be borrowed from it while the field
        // state is updated; no per-line allocation.
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(bytes);
        let mut start = 0;
        let mut i = self.scanned;
        while i < buf.len() {
            let b = buf[i];
            if b != b'\n' && b != b'\r' {
                i += 1;
                continue;
            }
            // A lone '\r' at the end of the buffer may be the first half of "\r\n".
            if b == b'\r' && i + 1 == buf.len() {
                break;
            }
            let next = if b == b'\r' && buf[i + 1] == b'\n' {
                i + 2
            } else {
                i + 1
            };
            if self.line(&buf[start..i]) {
                on_event(SseEvent {
                    event: &self.event,
                    data: &self.data,
                });
                self.event.clear();
                self.data.clear();
            }
            start = next;
            i = next;
        }
        buf.drain(..start);
        self.scanned = i - start;
        self.buf = buf;
    }

    /// Bytes buffered for the event being received.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.data.len()
    }

    /// Whether bytes of an incomplete event are buffered (a stream that ends here was cut).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || self.has_data || !self.event.is_empty()
    }

    /// Takes one line into the field state; true when it completed an event (then `event`
    /// and `data` hold it until the caller clears them).
    fn line(&mut self, line: &[u8]) -> bool {
        if line.is_empty() {
            if !self.has_data {
                self.event.clear();
                return false;
            }
            self.has_data = false;
            return true;
        }
        if line[0] == b':' {
            return false;
        }
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.push_str(&value);
            }
            _ => {} // id, retry and unknown fields are not used by model providers
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owned copies of events, for comparison.
    type Owned = Vec<(String, String)>;

    fn own(out: &mut Owned) -> impl FnMut(SseEvent<'_>) + '_ {
        |e| out.push((e.event.to_string(), e.data.to_string()))
    }

    fn parse_in_pieces(input: &[u8], piece: usize) -> Owned {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            p.feed(chunk, own(&mut out));
        }
        out
    }

    #[test]
    fn events_survive_every_split_point() {
        let input = "event: message_start\ndata: {\"a\":\"h\u{e9}llo \u{1f600}\"}\n\n: keep-alive\n\ndata: line1\r\ndata: line2\r\n\r\ndata: [DONE]\n\n";
        let whole = parse_in_pieces(input.as_bytes(), input.len());
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].0, "message_start");
        assert_eq!(whole[0].1, "{\"a\":\"h\u{e9}llo \u{1f600}\"}");
        assert_eq!(whole[1], (String::new(), "line1\nline2".to_string()));
        assert_eq!(whole[2].1, "[DONE]");
        for piece in 1..input.len() {
            assert_eq!(
                parse_in_pieces(input.as_bytes(), piece),
                whole,
                "piece size {piece}"
            );
        }
        // Every two-way split too.
        for cut in 0..input.len() {
            let mut p = SseParser::new();
            let mut out = Vec::new();
            p.feed(&input.as_bytes()[..cut], own(&mut out));
            p.feed(&input.as_bytes()[cut..], own(&mut out));
            assert_eq!(out, whole, "cut at {cut}");
        }
    }

    #[test]
    fn truncated_stream_is_detected() {
        let mut p = SseParser::new();
        let mut n = 0;
        p.feed(b"data: {\"x\":1}\n\ndata: {\"x\"", |_| n += 1);
        assert_eq!(n, 1);
        assert!(p.has_partial());
        let mut q = SseParser::new();
        q.feed(b"data: 1\n\n", |_| {});
        assert!(!q.has_partial());
    }
}
