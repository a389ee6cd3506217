//! An incremental Server-Sent Events parser.
//!
//! Bytes arrive in arbitrary pieces: an event, a line, or a UTF-8 sequence may be split at any
//! byte. The parser buffers raw bytes and only decodes a complete event (terminated by a blank
//! line), so a split never corrupts text. Comment lines (`:`) are skipped; `data:` lines are
//! joined with `\n`, as the specification says.

/// One complete event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or empty for the default `message` type.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
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

    /// Feeds bytes, calling `on_event` for every event completed by them.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(SseEvent)) {
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
            if let Some(ev) = self.line(&buf[start..i]) {
                on_event(ev);
            }
            start = next;
            i = next;
        }
        buf.drain(..start);
        self.scanned = i - start;
        self.buf = buf;
    }

    /// Whether bytes of an incomplete event are buffered (a stream that ends here was cut).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || self.has_data || !self.event.is_empty()
    }

    fn line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            if !self.has_data {
                self.event.clear();
                return None;
            }
            self.has_data = false;
            return Some(SseEvent {
                event: std::mem::take(&mut self.event),
                data: std::mem::take(&mut self.data),
            });
        }
        if line[0] == b':' {
            return None;
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
            b"event" => self.event = value.into_owned(),
            _ => {} // id, retry and unknown fields are not used by model providers
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            p.feed(chunk, |e| out.push(e));
        }
        out
    }

    #[test]
    fn events_survive_every_split_point() {
        let input = "event: message_start\ndata: {\"a\":\"h\u{e9}llo \u{1f600}\"}\n\n: keep-alive\n\ndata: line1\r\ndata: line2\r\n\r\ndata: [DONE]\n\n";
        let whole = parse_in_pieces(input.as_bytes(), input.len());
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].event, "message_start");
        assert_eq!(whole[0].data, "{\"a\":\"h\u{e9}llo \u{1f600}\"}");
        assert_eq!(whole[1].data, "line1\nline2");
        assert_eq!(whole[2].data, "[DONE]");
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
            p.feed(&input.as_bytes()[..cut], |e| out.push(e));
            p.feed(&input.as_bytes()[cut..], |e| out.push(e));
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
