//! What a streamed answer is made of: deltas, the batches providers decode them into, the
//! accumulator that rebuilds the full answer, and the buffer a caller pulls a delta into.
//!
//! Nothing here allocates per token. A provider decodes the pieces of one network read into a
//! [`DeltaBatch`] in a bump arena (reset after every read); the call appends them to its
//! [`StreamAccumulator`] and queues [`PendingDelta`] ranges into it; a puller copies the next
//! one into its own reusable [`DeltaBuf`]. Buffers grow to the size of the answer and keep
//! their capacity.

use super::json_text::unescape_into;
use super::types::{ChatResponse, ToolCall, Usage};
use bumpalo::collections::{String as BumpString, Vec as BumpVec};
use bumpalo::Bump;
use std::collections::VecDeque;

/// One piece of a streamed answer, borrowed from the buffer that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamDelta<'a> {
    /// More text.
    Text(&'a str),
    /// A piece of a tool call: the id and name arrive with the first piece of each call, the
    /// arguments in pieces.
    ToolCall {
        /// Which call (0-based, in order of appearance).
        index: u32,
        /// The call id, on the first piece.
        id: Option<&'a str>,
        /// The tool name, on the first piece.
        name: Option<&'a str>,
        /// A piece of the JSON arguments.
        arguments: &'a str,
    },
}

type Span = (u32, u32);

/// How far past the last tool call seen a piece's index may point.
const MAX_INDEX_GAP: usize = 16;

#[derive(Clone, Copy, Debug)]
enum Item {
    Text(Span),
    ToolCall {
        index: u32,
        id: Option<Span>,
        name: Option<Span>,
        arguments: Span,
    },
}

/// Deltas decoded from one read of the network, in a bump arena: one text buffer all pieces
/// are decoded into, and the spans that cut it into deltas. The arena's owner resets it once
/// the batch has been handed on, so decoding allocates nothing from the heap per token.
#[derive(Debug)]
pub struct DeltaBatch<'a> {
    text: BumpString<'a>,
    items: BumpVec<'a, Item>,
}

/// Where a string of a delta comes from.
#[derive(Clone, Copy)]
pub enum Piece<'a> {
    /// Plain text.
    Plain(&'a str),
    /// A JSON string literal, quotes included, decoded on the way in.
    Json(&'a str),
}

impl<'a> DeltaBatch<'a> {
    /// An empty batch whose buffers live in `arena`.
    pub fn new_in(arena: &'a Bump) -> DeltaBatch<'a> {
        DeltaBatch {
            text: BumpString::new_in(arena),
            items: BumpVec::new_in(arena),
        }
    }

    fn put(&mut self, p: Piece<'_>) -> Option<Span> {
        let start = self.text.len();
        match p {
            Piece::Plain(s) => self.text.push_str(s),
            Piece::Json(raw) => {
                if !unescape_into(raw, &mut self.text) {
                    return None;
                }
            }
        }
        Some((start as u32, self.text.len() as u32))
    }

    fn get(&self, s: Span) -> &str {
        &self.text[s.0 as usize..s.1 as usize]
    }

    /// Adds text; empty text adds nothing. A `Json` piece that is not a string literal (null,
    /// a number) adds nothing either.
    pub fn push_text(&mut self, text: Piece<'_>) {
        if let Some(span) = self.put(text) {
            if span.1 > span.0 {
                self.items.push(Item::Text(span));
            }
        }
    }

    /// Adds a piece of a tool call. Pieces that are not string literals count as absent (the
    /// arguments as empty).
    pub fn push_tool_call(
        &mut self,
        index: u32,
        id: Option<Piece<'_>>,
        name: Option<Piece<'_>>,
        arguments: Option<Piece<'_>>,
    ) {
        let id = id.and_then(|p| self.put(p));
        let name = name.and_then(|p| self.put(p));
        let at = self.text.len() as u32;
        let arguments = arguments.and_then(|p| self.put(p)).unwrap_or((at, at));
        self.items.push(Item::ToolCall {
            index,
            id,
            name,
            arguments,
        });
    }

    /// Number of deltas.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.text.clear();
        self.items.clear();
    }

    /// The deltas, in order.
    pub fn iter(&self) -> impl Iterator<Item = StreamDelta<'_>> + '_ {
        self.items.iter().map(move |it| match *it {
            Item::Text(s) => StreamDelta::Text(self.get(s)),
            Item::ToolCall {
                index,
                id,
                name,
                arguments,
            } => StreamDelta::ToolCall {
                index,
                id: id.map(|s| self.get(s)),
                name: name.map(|s| self.get(s)),
                arguments: self.get(arguments),
            },
        })
    }

    /// The text and tool calls of a whole (non-streamed) answer decoded into this batch, where
    /// each tool-call piece is one complete call.
    pub fn whole_answer(&self) -> (String, Vec<ToolCall>) {
        let mut content = String::new();
        let mut calls = Vec::new();
        for d in self.iter() {
            match d {
                StreamDelta::Text(t) => content.push_str(t),
                StreamDelta::ToolCall {
                    id,
                    name,
                    arguments,
                    ..
                } => calls.push(ToolCall {
                    id: id.unwrap_or_default().to_string(),
                    name: name.unwrap_or_default().to_string(),
                    arguments: arguments.to_string(),
                }),
            }
        }
        (content, calls)
    }

    /// The pieces a whole (non-streamed or cached) answer is delivered as: its text, then one
    /// piece per tool call.
    pub fn from_response(r: &ChatResponse, arena: &'a Bump) -> DeltaBatch<'a> {
        let mut b = DeltaBatch::new_in(arena);
        b.push_text(Piece::Plain(&r.content));
        for (i, tc) in r.tool_calls.iter().enumerate() {
            b.push_tool_call(
                i as u32,
                Some(Piece::Plain(&tc.id)),
                Some(Piece::Plain(&tc.name)),
                Some(Piece::Plain(&tc.arguments)),
            );
        }
        b
    }
}

/// What a stream has said about itself (everything but the deltas): model, usage, finish
/// reason, whether its end marker arrived, how many deltas it carried.
#[derive(Clone, Debug, Default)]
pub struct StreamMeta {
    /// Finish reason, once known.
    pub finish_reason: Option<String>,
    /// Model name, once known.
    pub model: String,
    /// Usage reported so far.
    pub usage: Usage,
    /// Whether the provider signalled the end of the stream.
    pub done: bool,
    /// Deltas seen.
    pub deltas: u64,
    /// Tool calls started (Anthropic numbers its blocks itself; this gives calls their index).
    pub tool_calls: u32,
}

impl StreamMeta {
    /// Whether any output (text or tool call) has arrived.
    pub fn has_output(&self) -> bool {
        self.deltas > 0
    }

    /// Records the model name the first time one is seen.
    pub fn set_model(&mut self, model: &str) {
        if self.model.is_empty() {
            self.model.push_str(model);
        }
    }

    /// Records the finish reason.
    pub fn set_finish_reason(&mut self, reason: &str) {
        match &mut self.finish_reason {
            Some(f) if f == reason => {}
            Some(f) => {
                f.clear();
                f.push_str(reason);
            }
            None => self.finish_reason = Some(reason.to_string()),
        }
    }
}

/// A delta waiting to be pulled: ranges into the call's [`StreamAccumulator`], which only
/// grows, so the ranges stay valid.
#[derive(Clone, Copy, Debug)]
pub enum PendingDelta {
    /// A range of the accumulated text.
    Text(usize, usize),
    /// A piece of tool call `index`: the id it carried, the range of the name added, the range
    /// of the arguments added.
    ToolCall {
        /// The call.
        index: u32,
        /// The id this piece carried, as a range of the accumulator's piece ids (a server that
        /// re-sends a different id does not change what earlier pieces said).
        id: Option<(usize, usize)>,
        /// The part of the name it added, if it carried one.
        name: Option<(usize, usize)>,
        /// The part of the arguments it added.
        arguments: (usize, usize),
    },
}

/// Rebuilds the answer from deltas across attempts (a preempted stream's snapshot plus its
/// continuation), and keeps a running token estimate of it.
#[derive(Clone, Debug, Default)]
pub struct StreamAccumulator {
    /// Text so far.
    pub content: String,
    /// Tool calls so far.
    pub tool_calls: Vec<ToolCall>,
    /// Deltas applied.
    pub deltas: u64,
    /// The ids tool-call pieces carried, one after another.
    piece_ids: String,
    /// Estimated tokens of the output so far (text and tool-call arguments), updated with every
    /// delta while the stream arrives.
    pub estimated_tokens: u64,
}

impl StreamAccumulator {
    /// Applies one delta, returning where it landed.
    pub fn apply(&mut self, d: StreamDelta<'_>) -> PendingDelta {
        self.deltas += 1;
        match d {
            StreamDelta::Text(t) => {
                let start = self.content.len();
                self.content.push_str(t);
                self.estimated_tokens += crate::context::tokens::estimate(t);
                PendingDelta::Text(start, self.content.len())
            }
            StreamDelta::ToolCall {
                index,
                id,
                name,
                arguments,
            } => {
                // An index far past the calls seen (a broken or hostile server) would allocate
                // without bound; it is taken as the next call instead.
                let i = if index as usize > self.tool_calls.len() + MAX_INDEX_GAP {
                    self.tool_calls.len()
                } else {
                    index as usize
                };
                let index = i as u32;
                while self.tool_calls.len() <= i {
                    self.tool_calls.push(ToolCall::default());
                }
                let call = &mut self.tool_calls[i];
                let id = id.map(|id| {
                    call.id.clear();
                    call.id.push_str(id);
                    let start = self.piece_ids.len();
                    self.piece_ids.push_str(id);
                    (start, self.piece_ids.len())
                });
                let name = name.map(|n| {
                    let start = call.name.len();
                    call.name.push_str(n);
                    (start, call.name.len())
                });
                let start = call.arguments.len();
                call.arguments.push_str(arguments);
                self.estimated_tokens += crate::context::tokens::estimate(arguments);
                PendingDelta::ToolCall {
                    index,
                    id,
                    name,
                    arguments: (start, call.arguments.len()),
                }
            }
        }
    }

    /// The delta a pending record refers to.
    pub fn view(&self, p: &PendingDelta) -> StreamDelta<'_> {
        match *p {
            PendingDelta::Text(a, b) => StreamDelta::Text(&self.content[a..b]),
            PendingDelta::ToolCall {
                index,
                id,
                name,
                arguments,
            } => {
                let call = &self.tool_calls[index as usize];
                StreamDelta::ToolCall {
                    index,
                    id: id.map(|(a, b)| &self.piece_ids[a..b]),
                    name: name.map(|(a, b)| &call.name[a..b]),
                    arguments: &call.arguments[arguments.0..arguments.1],
                }
            }
        }
    }

    /// Whether any output (text or tool call) has arrived.
    pub fn has_output(&self) -> bool {
        self.deltas > 0
    }

    /// The answer so far, with the stream's metadata.
    pub fn response(&self, meta: &StreamMeta) -> ChatResponse {
        ChatResponse {
            content: self.content.clone(),
            tool_calls: self.tool_calls.clone(),
            finish_reason: meta.finish_reason.clone().unwrap_or_default(),
            model: meta.model.clone(),
            usage: meta.usage,
        }
    }
}

/// Deltas queued for pulling, as ranges into an accumulator.
pub type PendingQueue = VecDeque<PendingDelta>;

/// A reusable buffer one pulled delta is copied into.
#[derive(Clone, Debug, Default)]
pub struct DeltaBuf {
    tool: bool,
    index: u32,
    text: String,
    id: String,
    has_id: bool,
    name: String,
    has_name: bool,
}

impl DeltaBuf {
    /// An empty buffer.
    pub fn new() -> DeltaBuf {
        DeltaBuf::default()
    }

    /// Copies `d` in, reusing the buffer's capacity.
    pub fn set(&mut self, d: StreamDelta<'_>) {
        self.text.clear();
        self.id.clear();
        self.name.clear();
        match d {
            StreamDelta::Text(t) => {
                self.tool = false;
                self.index = 0;
                self.text.push_str(t);
                self.has_id = false;
                self.has_name = false;
            }
            StreamDelta::ToolCall {
                index,
                id,
                name,
                arguments,
            } => {
                self.tool = true;
                self.index = index;
                self.text.push_str(arguments);
                self.has_id = id.is_some();
                self.id.push_str(id.unwrap_or_default());
                self.has_name = name.is_some();
                self.name.push_str(name.unwrap_or_default());
            }
        }
    }

    /// The delta held.
    pub fn delta(&self) -> StreamDelta<'_> {
        if self.tool {
            StreamDelta::ToolCall {
                index: self.index,
                id: self.has_id.then_some(self.id.as_str()),
                name: self.has_name.then_some(self.name.as_str()),
                arguments: &self.text,
            }
        } else {
            StreamDelta::Text(&self.text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_decodes_and_accumulator_keeps_ranges() {
        let arena = Bump::new();
        let mut b = DeltaBatch::new_in(&arena);
        b.push_text(Piece::Json(r#""Hel\nlo""#));
        b.push_text(Piece::Json("null"));
        b.push_text(Piece::Plain(""));
        b.push_tool_call(
            0,
            Some(Piece::Json(r#""c1""#)),
            Some(Piece::Plain("f")),
            Some(Piece::Json(r#""{\"a\"""#)),
        );
        b.push_tool_call(0, None, None, Some(Piece::Plain(":1}")));
        let got: Vec<_> = b.iter().collect();
        assert_eq!(
            got,
            vec![
                StreamDelta::Text("Hel\nlo"),
                StreamDelta::ToolCall {
                    index: 0,
                    id: Some("c1"),
                    name: Some("f"),
                    arguments: "{\"a\""
                },
                StreamDelta::ToolCall {
                    index: 0,
                    id: None,
                    name: None,
                    arguments: ":1}"
                },
            ]
        );
        let mut acc = StreamAccumulator::default();
        let pending: Vec<_> = b.iter().map(|d| acc.apply(d)).collect();
        let views: Vec<_> = pending.iter().map(|p| acc.view(p)).collect();
        assert_eq!(views, got);
        assert_eq!(acc.content, "Hel\nlo");
        assert_eq!(acc.tool_calls[0].arguments, "{\"a\":1}");
        assert!(acc.estimated_tokens > 0);
        let mut buf = DeltaBuf::new();
        for d in &got {
            buf.set(*d);
            assert_eq!(buf.delta(), *d);
        }
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    fn absurd_tool_call_index_becomes_the_next_call() {
        let mut acc = StreamAccumulator::default();
        let p = acc.apply(StreamDelta::ToolCall {
            index: 4_000_000_000,
            id: Some("c"),
            name: Some("f"),
            arguments: "{}",
        });
        assert_eq!(acc.tool_calls.len(), 1);
        assert!(matches!(
            acc.view(&p),
            StreamDelta::ToolCall { index: 0, .. }
        ));
        acc.apply(StreamDelta::ToolCall {
            index: 3,
            id: None,
            name: None,
            arguments: "",
        });
        assert_eq!(acc.tool_calls.len(), 4, "small gaps are kept as they are");
    }

    #[test]
    fn each_queued_piece_keeps_the_id_it_carried() {
        let mut acc = StreamAccumulator::default();
        let piece = |id| StreamDelta::ToolCall {
            index: 0,
            id: Some(id),
            name: None,
            arguments: "",
        };
        let first = acc.apply(piece("a"));
        let second = acc.apply(piece("b"));
        assert!(matches!(
            acc.view(&first),
            StreamDelta::ToolCall { id: Some("a"), .. }
        ));
        assert!(matches!(
            acc.view(&second),
            StreamDelta::ToolCall { id: Some("b"), .. }
        ));
        assert_eq!(acc.tool_calls[0].id, "b", "the call keeps the latest id");
    }

    #[test]
    fn whole_response_as_batch() {
        let r = ChatResponse {
            content: "hi".into(),
            tool_calls: vec![ToolCall {
                id: "c".into(),
                name: "f".into(),
                arguments: "{}".into(),
            }],
            ..Default::default()
        };
        let arena = Bump::new();
        let b = DeltaBatch::from_response(&r, &arena);
        assert_eq!(b.len(), 2);
        assert_eq!(b.iter().next(), Some(StreamDelta::Text("hi")));
    }
}
