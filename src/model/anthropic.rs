//! The Anthropic Messages wire format.

use super::endpoint::Endpoint;
use super::json_text::{write_json, write_str, Count, Str};
use super::sse::SseEvent;
use super::stream::{DeltaBatch, Piece, StreamMeta};
use super::types::{ChatMessage, ChatRequest, ChatResponse, Role, Usage};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::io::Write;

/// The JSON body for a request (see [`write_body`]).
pub fn build_body(req: &ChatRequest, ep: &Endpoint) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_body(req, ep, &mut out).expect("writing to a Vec cannot fail");
    out
}

/// Tool-call arguments as a `tool_use` input: the JSON object as sent, or `{}` when the model
/// produced something that is not a JSON object.
fn tool_input(arguments: &str) -> &str {
    let t = arguments.trim();
    if t.starts_with('{') && serde_json::from_str::<IgnoredAny>(t).is_ok() {
        t
    } else {
        "{}"
    }
}

/// Writes the JSON body for a request straight into `out`, with no intermediate JSON tree (so
/// rendering into an arena allocates nothing on the heap). System messages become the
/// top-level `system`; tool calls and results become `tool_use` / `tool_result` blocks;
/// consecutive same-role messages are merged, as the API requires alternating roles.
pub fn write_body<W: Write>(req: &ChatRequest, ep: &Endpoint, out: &mut W) -> std::io::Result<()> {
    write_body_with(req, &req.messages, ep, out)
}

/// [`write_body`] with the conversation given separately (`req.messages` is ignored), so a
/// caller can send a view that borrows most messages from elsewhere.
pub fn write_body_with<W: Write, M: std::borrow::Borrow<ChatMessage>>(
    req: &ChatRequest,
    messages: &[M],
    ep: &Endpoint,
    out: &mut W,
) -> std::io::Result<()> {
    let messages = || {
        messages
            .iter()
            .map(std::borrow::Borrow::<ChatMessage>::borrow)
    };
    out.write_all(b"{\"model\":")?;
    write_str(out, req.model.as_deref().unwrap_or(&ep.model))?;
    write!(
        out,
        ",\"max_tokens\":{}",
        req.max_tokens.unwrap_or(ep.max_output_tokens)
    )?;
    let mut systems = messages().filter(|m| m.role == Role::System && !m.content.is_empty());
    if let Some(first) = systems.next() {
        out.write_all(b",\"system\":")?;
        match systems.next() {
            None => write_str(out, &first.content)?,
            Some(_) => {
                // Several system messages (rare): joined by blank lines.
                let joined: Vec<&str> = messages()
                    .filter(|m| m.role == Role::System && !m.content.is_empty())
                    .map(|m| m.content.as_str())
                    .collect();
                write_str(out, &joined.join("\n\n"))?;
            }
        }
    }
    out.write_all(b",\"messages\":[")?;
    let mut open: Option<&str> = None;
    let mut first_block = true;
    for msg in messages() {
        let role = match msg.role {
            Role::System => continue,
            Role::User | Role::Tool => "user",
            Role::Assistant => "assistant",
        };
        // The API rejects empty text blocks and messages without blocks; such messages (an
        // empty user text, an assistant turn with neither text nor tool calls) are left out.
        let has_blocks = match msg.role {
            Role::User => !msg.content.is_empty(),
            Role::Assistant => !msg.content.is_empty() || !msg.tool_calls.is_empty(),
            _ => true,
        };
        if !has_blocks {
            continue;
        }
        if open != Some(role) {
            if open.is_some() {
                out.write_all(b"]},")?;
            }
            write!(out, "{{\"role\":\"{role}\",\"content\":[")?;
            open = Some(role);
            first_block = true;
        }
        let mut block = |out: &mut W| -> std::io::Result<()> {
            if !std::mem::replace(&mut first_block, false) {
                out.write_all(b",")?;
            }
            Ok(())
        };
        match msg.role {
            Role::System => {}
            Role::User => {
                block(out)?;
                out.write_all(b"{\"type\":\"text\",\"text\":")?;
                write_str(out, &msg.content)?;
                out.write_all(b"}")?;
            }
            Role::Tool => {
                block(out)?;
                out.write_all(b"{\"type\":\"tool_result\",\"tool_use_id\":")?;
                write_str(out, msg.tool_call_id.as_deref().unwrap_or_default())?;
                out.write_all(b",\"content\":")?;
                write_str(out, &msg.content)?;
                out.write_all(b"}")?;
            }
            Role::Assistant => {
                if !msg.content.is_empty() {
                    block(out)?;
                    out.write_all(b"{\"type\":\"text\",\"text\":")?;
                    write_str(out, &msg.content)?;
                    out.write_all(b"}")?;
                }
                for c in &msg.tool_calls {
                    block(out)?;
                    out.write_all(b"{\"type\":\"tool_use\",\"id\":")?;
                    write_str(out, &c.id)?;
                    out.write_all(b",\"name\":")?;
                    write_str(out, &c.name)?;
                    out.write_all(b",\"input\":")?;
                    out.write_all(tool_input(&c.arguments).as_bytes())?;
                    out.write_all(b"}")?;
                }
            }
        }
    }
    if open.is_some() {
        out.write_all(b"]}")?;
    }
    out.write_all(b"]")?;
    if !req.tools.is_empty() {
        out.write_all(b",\"tools\":[")?;
        for (i, t) in req.tools.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            out.write_all(b"{\"name\":")?;
            write_str(out, &t.name)?;
            out.write_all(b",\"description\":")?;
            write_str(out, &t.description)?;
            out.write_all(b",\"input_schema\":")?;
            out.write_all(t.parameters_json().as_bytes())?;
            out.write_all(b"}")?;
        }
        out.write_all(b"]")?;
    }
    if let Some(t) = req.temperature {
        out.write_all(b",\"temperature\":")?;
        write_json(out, &t)?;
    }
    if req.stream {
        out.write_all(b",\"stream\":true")?;
    }
    out.write_all(b"}")
}

/// Token counts as Anthropic reports them.
#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Count,
    #[serde(default)]
    output_tokens: Count,
    #[serde(default)]
    cache_read_input_tokens: Count,
    #[serde(default)]
    cache_creation_input_tokens: Count,
}

impl WireUsage {
    /// Merges what this report says into `into` (streams report input and output separately).
    fn merge_into(&self, into: &mut Usage) {
        if let Some(input) = self.input_tokens.0 {
            // Anthropic's input_tokens excludes cached tokens; ours includes them.
            into.prompt_tokens = input
                .saturating_add(self.cache_read_input_tokens.get())
                .saturating_add(self.cache_creation_input_tokens.get());
        }
        if let Some(n) = self.output_tokens.0 {
            into.completion_tokens = n;
        }
        if let Some(n) = self.cache_read_input_tokens.0 {
            into.cached_tokens = n;
        }
        if let Some(n) = self.cache_creation_input_tokens.0 {
            into.cache_creation_tokens = n;
        }
    }
}

fn finish_reason(stop: &str) -> &str {
    match stop {
        "end_turn" | "stop_sequence" => "stop",
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        other => other,
    }
}

/// A content block (complete, or announced by `content_block_start`).
#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
}

/// A complete (non-streamed) response, borrowed from the body.
#[derive(Deserialize)]
struct Response<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    model: Option<Str<'a>>,
    #[serde(borrow)]
    content: Option<Vec<Block<'a>>>,
    #[serde(borrow)]
    stop_reason: Option<Str<'a>>,
    usage: Option<WireUsage>,
    error: Option<IgnoredAny>,
}

/// A string literal or `null` as a delta piece.
fn piece(v: Option<&RawValue>) -> Option<Piece<'_>> {
    let raw = v?.get();
    raw.starts_with('"').then_some(Piece::Json(raw))
}

/// The error text of a body that failed to deserialize or is an error.
fn error_of(text: &str) -> Option<String> {
    error_text(&serde_json::from_str::<Value>(text).ok()?)
}

/// Parses a complete (non-streamed) response.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, String> {
    parse_response_in(body, &bumpalo::Bump::new())
}

/// [`parse_response`], decoding in `arena` (the collector's, reset after the call).
pub fn parse_response_in(body: &[u8], arena: &bumpalo::Bump) -> Result<ChatResponse, String> {
    let text =
        std::str::from_utf8(body).map_err(|e| format!("response is not valid UTF-8: {e}"))?;
    let v: Response = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Err(error_of(text).unwrap_or_else(|| super::json_text::describe("response", &e)))
        }
    };
    if v.error.is_some() || v.kind.as_deref() == Some("error") {
        if let Some(msg) = error_of(text) {
            return Err(msg);
        }
    }
    let blocks = v
        .content
        .ok_or_else(|| "response has no content".to_string())?;
    let mut batch = DeltaBatch::new_in(arena);
    for b in &blocks {
        match b.kind.as_deref() {
            Some("text") => {
                if let Some(p) = piece(b.text) {
                    batch.push_text(p);
                }
            }
            Some("tool_use") => batch.push_tool_call(
                0,
                piece(b.id),
                piece(b.name),
                Some(Piece::Plain(b.input.map_or("{}", RawValue::get))),
            ),
            _ => {} // thinking and other blocks are not surfaced
        }
    }
    let mut r = ChatResponse {
        model: v.model.as_deref().unwrap_or_default().to_string(),
        finish_reason: finish_reason(v.stop_reason.as_deref().unwrap_or("end_turn")).to_string(),
        ..Default::default()
    };
    (r.content, r.tool_calls) = batch.whole_answer();
    if let Some(u) = &v.usage {
        u.merge_into(&mut r.usage);
    }
    Ok(r)
}

/// One streamed event, borrowed from its data.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    message: Option<MessageInfo<'a>>,
    #[serde(borrow)]
    content_block: Option<Block<'a>>,
    #[serde(borrow)]
    delta: Option<EventDelta<'a>>,
    usage: Option<WireUsage>,
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct MessageInfo<'a> {
    #[serde(borrow)]
    model: Option<Str<'a>>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct EventDelta<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    partial_json: Option<&'a RawValue>,
    #[serde(borrow)]
    stop_reason: Option<Str<'a>>,
}

/// Applies one SSE event: metadata to `meta`, the deltas it carries to `out`. Allocates
/// nothing once the buffers are warm.
pub fn apply_event(
    ev: &SseEvent<'_>,
    meta: &mut StreamMeta,
    out: &mut DeltaBatch<'_>,
) -> Result<(), String> {
    // JSON that is not an object carries nothing.
    if !ev.data.trim_start().starts_with('{') && serde_json::from_str::<IgnoredAny>(ev.data).is_ok()
    {
        return Ok(());
    }
    let v: Event = match serde_json::from_str(ev.data) {
        Ok(v) => v,
        Err(e) => {
            return Err(
                error_of(ev.data).unwrap_or_else(|| super::json_text::describe("stream event", &e))
            )
        }
    };
    if v.error.is_some() || v.kind.as_deref() == Some("error") {
        if let Some(msg) = error_of(ev.data) {
            return Err(msg);
        }
    }
    let before = out.len();
    match v.kind.as_deref().unwrap_or(ev.event) {
        "message_start" => {
            if let Some(m) = &v.message {
                if let Some(model) = &m.model {
                    meta.set_model(model);
                }
                if let Some(u) = &m.usage {
                    u.merge_into(&mut meta.usage);
                }
            }
        }
        "content_block_start" => {
            if let Some(b) = &v.content_block {
                if b.kind.as_deref() == Some("tool_use") {
                    out.push_tool_call(meta.tool_calls, piece(b.id), piece(b.name), None);
                    meta.tool_calls += 1;
                }
            }
        }
        "content_block_delta" => {
            if let Some(d) = &v.delta {
                match d.kind.as_deref() {
                    Some("text_delta") => {
                        if let Some(p) = piece(d.text) {
                            out.push_text(p);
                        }
                    }
                    Some("input_json_delta") => out.push_tool_call(
                        meta.tool_calls.saturating_sub(1),
                        None,
                        None,
                        piece(d.partial_json),
                    ),
                    _ => {}
                }
            }
        }
        "message_delta" => {
            if let Some(r) = v.delta.as_ref().and_then(|d| d.stop_reason.as_deref()) {
                meta.set_finish_reason(finish_reason(r));
            }
            if let Some(u) = &v.usage {
                u.merge_into(&mut meta.usage);
            }
        }
        "message_stop" => meta.done = true,
        _ => {} // ping, content_block_stop
    }
    meta.deltas += (out.len() - before) as u64;
    Ok(())
}

/// The error text of an Anthropic error object, if `v` is one.
pub fn error_text(v: &Value) -> Option<String> {
    if v["type"] != "error" && v.get("error").is_none() {
        return None;
    }
    super::openai::error_text(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::stream::StreamAccumulator;
    use crate::model::types::{ChatMessage, ToolCall};

    #[test]
    fn body_moves_system_and_merges_tool_results() {
        let ep = Endpoint::from_json(r#"{"name":"a","provider":"anthropic","base_url":"http://x","model":"claude-sonnet-4"}"#).unwrap();
        let mut asst = ChatMessage::text(Role::Assistant, "");
        asst.tool_calls.push(ToolCall {
            id: "t1".into(),
            name: "f".into(),
            arguments: "{\"a\":1}".into(),
        });
        asst.tool_calls.push(ToolCall {
            id: "t2".into(),
            name: "f".into(),
            arguments: "{\"a\":2}".into(),
        });
        let mut r1 = ChatMessage::text(Role::Tool, "one");
        r1.tool_call_id = Some("t1".into());
        let mut r2 = ChatMessage::text(Role::Tool, "two");
        r2.tool_call_id = Some("t2".into());
        let req = ChatRequest {
            messages: vec![
                ChatMessage::text(Role::System, "sys"),
                ChatMessage::text(Role::User, "hi"),
                asst,
                r1,
                r2,
            ],
            ..Default::default()
        };
        let v: Value = serde_json::from_slice(&build_body(&req, &ep)).unwrap();
        assert_eq!(v["system"], "sys");
        assert_eq!(v["messages"].as_array().unwrap().len(), 3);
        assert_eq!(v["messages"][1]["content"][1]["input"]["a"], 2);
        assert_eq!(v["messages"][2]["content"].as_array().unwrap().len(), 2);
        assert_eq!(v["messages"][2]["content"][1]["tool_use_id"], "t2");
        assert_eq!(v["max_tokens"], 4096);
    }

    #[test]
    fn written_body_is_exact() {
        let ep = Endpoint::from_json(
            r#"{"name":"a","provider":"anthropic","base_url":"http://x","model":"claude"}"#,
        )
        .unwrap();
        let req = ChatRequest::from_json(
            r#"{"temperature":0.5,"max_tokens":9,"stream":true,
                "messages":[{"role":"system","content":"one"},{"role":"system","content":"two \"q\""},
                {"role":"user","content":"hi"},{"role":"assistant","content":""},{"role":"user","content":""},{"role":"user","content":"again"},
                {"role":"assistant","content":"let me see","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"not json"}}]},
                {"role":"tool","tool_call_id":"c","content":"r"}],
                "tools":[{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object"}}}]}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&build_body(&req, &ep)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "model": "claude", "max_tokens": 9, "system": "one\n\ntwo \"q\"",
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "let me see"},
                        {"type": "tool_use", "id": "c", "name": "f", "input": {}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c", "content": "r"}]}
                ],
                "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
                "temperature": 0.5,
                "stream": true
            })
        );
    }

    #[test]
    fn parses_response_and_stream_with_cache_usage() {
        let r = parse_response(br#"{"type":"message","model":"c","content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"t","name":"f","input":{"x":1}}],"stop_reason":"tool_use","usage":{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":20,"cache_creation_input_tokens":2}}"#).unwrap();
        assert_eq!(r.content, "hi");
        assert_eq!(r.tool_calls[0].arguments, "{\"x\":1}");
        assert_eq!(r.finish_reason, "tool_calls");
        assert_eq!(r.usage.prompt_tokens, 32);
        assert_eq!(r.usage.cached_tokens, 20);
        assert_eq!(r.usage.cache_creation_tokens, 2);

        let mut acc = StreamAccumulator::default();
        let mut meta = StreamMeta::default();
        let arena = bumpalo::Bump::new();
        let mut out = DeltaBatch::new_in(&arena);
        for (name, data) in [
            (
                "message_start",
                r#"{"type":"message_start","message":{"model":"c","usage":{"input_tokens":11,"output_tokens":1,"cache_read_input_tokens":3}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"tu","name":"f","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"x\":"}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"2}"}}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":7}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ] {
            apply_event(&SseEvent { event: name, data }, &mut meta, &mut out).unwrap();
            for d in out.iter() {
                acc.apply(d);
            }
            out.clear();
        }
        let r = acc.response(&meta);
        assert!(meta.done);
        assert_eq!(r.content, "Hi");
        assert_eq!(r.tool_calls[0].id, "tu");
        assert_eq!(r.tool_calls[0].arguments, "{\"x\":2}");
        assert_eq!(r.usage.completion_tokens, 7);
        assert_eq!(r.usage.prompt_tokens, 14);
        assert_eq!(r.finish_reason, "tool_calls");
        let e = apply_event(
            &SseEvent {
                event: "error",
                data: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            },
            &mut meta,
            &mut out,
        );
        assert_eq!(e.unwrap_err(), "overloaded_error: Overloaded");
    }
}
