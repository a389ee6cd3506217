//! What a streamed answer is made of, and the accumulator that rebuilds the full answer.

use super::types::{ChatResponse, ToolCall, Usage};

/// One piece of a streamed answer, as given to callers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamDelta {
    /// More text.
    Text(String),
    /// A piece of a tool call: the id and name arrive with the first piece of each call, the
    /// arguments in pieces.
    ToolCall {
        /// Which call (0-based, in order of appearance).
        index: u32,
        /// The call id, on the first piece.
        id: Option<String>,
        /// The tool name, on the first piece.
        name: Option<String>,
        /// A piece of the JSON arguments.
        arguments: String,
    },
}

/// The pieces a whole (non-streamed or cached) answer is delivered as: its text, then one piece
/// per tool call.
pub fn response_deltas(r: &ChatResponse) -> Vec<StreamDelta> {
    let mut deltas = Vec::with_capacity(1 + r.tool_calls.len());
    if !r.content.is_empty() {
        deltas.push(StreamDelta::Text(r.content.clone()));
    }
    for (i, tc) in r.tool_calls.iter().enumerate() {
        deltas.push(StreamDelta::ToolCall {
            index: i as u32,
            id: Some(tc.id.clone()),
            name: Some(tc.name.clone()),
            arguments: tc.arguments.clone(),
        });
    }
    deltas
}

/// Rebuilds a [`ChatResponse`] from deltas and stream metadata.
#[derive(Clone, Debug, Default)]
pub struct StreamAccumulator {
    /// Text so far.
    pub content: String,
    /// Tool calls so far.
    pub tool_calls: Vec<ToolCall>,
    /// Finish reason, once known.
    pub finish_reason: Option<String>,
    /// Model name, once known.
    pub model: String,
    /// Usage reported so far.
    pub usage: Usage,
    /// Whether the provider signalled the end of the stream.
    pub done: bool,
    /// Number of deltas applied.
    pub deltas: u64,
}

impl StreamAccumulator {
    /// Applies one delta.
    pub fn apply(&mut self, d: &StreamDelta) {
        self.deltas += 1;
        match d {
            StreamDelta::Text(t) => self.content.push_str(t),
            StreamDelta::ToolCall {
                index,
                id,
                name,
                arguments,
            } => {
                let i = *index as usize;
                while self.tool_calls.len() <= i {
                    self.tool_calls.push(ToolCall::default());
                }
                let call = &mut self.tool_calls[i];
                if let Some(id) = id {
                    call.id.clone_from(id);
                }
                if let Some(name) = name {
                    call.name.push_str(name);
                }
                call.arguments.push_str(arguments);
            }
        }
    }

    /// Whether any output (text or tool call) has arrived.
    pub fn has_output(&self) -> bool {
        self.deltas > 0
    }

    /// The answer so far.
    pub fn response(&self) -> ChatResponse {
        ChatResponse {
            content: self.content.clone(),
            tool_calls: self.tool_calls.clone(),
            finish_reason: self.finish_reason.clone().unwrap_or_default(),
            model: self.model.clone(),
            usage: self.usage,
        }
    }
}
