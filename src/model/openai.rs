//! The OpenAI Chat Completions wire format.

use super::endpoint::Endpoint;
use super::json_text::{write_json, write_str, Count, First, Str};
use super::sse::SseEvent;
use super::stream::{DeltaBatch, Piece, StreamMeta};
use super::types::{ChatMessage, ChatRequest, ChatResponse, Usage};
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// The JSON body for a request (see [`write_body`]).
pub fn build_body(req: &ChatRequest, ep: &Endpoint) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_body(req, ep, &mut out).expect("writing to a Vec cannot fail");
    out
}

/// Writes the JSON body for a request straight into `out`, from the request's own fields: no
/// intermediate JSON tree, so rendering into an arena allocates nothing on the heap.
pub fn write_body<W: std::io::Write>(
    req: &ChatRequest,
    ep: &Endpoint,
    out: &mut W,
) -> std::io::Result<()> {
    write_body_with(req, &req.messages, ep, out)
}

/// [`write_body`] with the conversation given separately (`req.messages` is ignored), so a
/// caller can send a view that borrows most messages from elsewhere.
pub fn write_body_with<W: std::io::Write, M: std::borrow::Borrow<ChatMessage>>(
    req: &ChatRequest,
    messages: &[M],
    ep: &Endpoint,
    out: &mut W,
) -> std::io::Result<()> {
    out.write_all(b"{")?;
    let model = req.model.as_deref().unwrap_or(&ep.model);
    if !model.is_empty() {
        out.write_all(b"\"model\":")?;
        write_str(out, model)?;
        out.write_all(b",")?;
    }
    out.write_all(b"\"messages\":[")?;
    for (i, m) in messages.iter().map(std::borrow::Borrow::borrow).enumerate() {
        let m: &ChatMessage = m;
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(b"{\"role\":")?;
        write_str(out, m.role.as_str())?;
        out.write_all(b",\"content\":")?;
        if m.role == crate::model::types::Role::Assistant
            && !m.tool_calls.is_empty()
            && m.content.is_empty()
        {
            out.write_all(b"null")?;
        } else {
            write_str(out, &m.content)?;
        }
        if !m.tool_calls.is_empty() {
            out.write_all(b",\"tool_calls\":[")?;
            for (j, c) in m.tool_calls.iter().enumerate() {
                if j > 0 {
                    out.write_all(b",")?;
                }
                out.write_all(b"{\"id\":")?;
                write_str(out, &c.id)?;
                out.write_all(b",\"type\":\"function\",\"function\":{\"name\":")?;
                write_str(out, &c.name)?;
                out.write_all(b",\"arguments\":")?;
                write_str(out, &c.arguments)?;
                out.write_all(b"}}")?;
            }
            out.write_all(b"]")?;
        }
        if let Some(id) = &m.tool_call_id {
            out.write_all(b",\"tool_call_id\":")?;
            write_str(out, id)?;
        }
        out.write_all(b"}")?;
    }
    out.write_all(b"]")?;
    if !req.tools.is_empty() {
        out.write_all(b",\"tools\":[")?;
        for (i, t) in req.tools.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            out.write_all(b"{\"type\":\"function\",\"function\":{\"name\":")?;
            write_str(out, &t.name)?;
            out.write_all(b",\"description\":")?;
            write_str(out, &t.description)?;
            out.write_all(b",\"parameters\":")?;
            out.write_all(t.parameters_json().as_bytes())?;
            out.write_all(b"}}")?;
        }
        out.write_all(b"]")?;
    }
    if let Some(t) = req.temperature {
        out.write_all(b",\"temperature\":")?;
        write_json(out, &t)?;
    }
    out.write_all(b",\"max_tokens\":")?;
    write_json(out, &req.max_tokens.unwrap_or(ep.max_output_tokens))?;
    if let Some(rf) = &req.response_format {
        out.write_all(b",\"response_format\":")?;
        write_json(out, rf)?;
    }
    if let Some(tc) = &req.tool_choice {
        out.write_all(b",\"tool_choice\":")?;
        write_json(out, tc)?;
    }
    if req.stream {
        out.write_all(b",\"stream\":true,\"stream_options\":{\"include_usage\":true}")?;
    }
    out.write_all(b"}")
}

/// Token counts as OpenAI reports them (every field optional: servers differ).
#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Count,
    #[serde(default)]
    completion_tokens: Count,
    prompt_tokens_details: Option<PromptDetails>,
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize, Default)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Count,
}

#[derive(Deserialize, Default)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Count,
}

impl WireUsage {
    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.get(),
            completion_tokens: self.completion_tokens.get(),
            cached_tokens: self
                .prompt_tokens_details
                .as_ref()
                .map_or(0, |d| d.cached_tokens.get()),
            cache_creation_tokens: 0,
            reasoning_tokens: self
                .completion_tokens_details
                .as_ref()
                .map_or(0, |d| d.reasoning_tokens.get()),
            cost_usd: 0.0,
        }
    }
}

/// A complete response, borrowed from the body.
#[derive(Deserialize)]
struct Response<'a> {
    #[serde(borrow)]
    model: Option<Str<'a>>,
    #[serde(borrow, default)]
    choices: First<Choice<'a>>,
    usage: Option<WireUsage>,
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    message: Option<Message<'a>>,
    #[serde(borrow)]
    delta: Option<Message<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Str<'a>>,
}

/// A message (complete) or a delta (streamed): the text and tool calls as raw JSON, decoded
/// into the caller's buffers.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: ToolCalls<'a>,
}

#[derive(Deserialize)]
struct WireToolCall<'a> {
    #[serde(default)]
    index: Count,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    function: Option<WireFunction<'a>>,
}

#[derive(Deserialize)]
struct WireFunction<'a> {
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
}

/// A raw JSON value as a delta piece: string literals are decoded, `null` is absent, any
/// other value (arguments sent as an object) is taken as its JSON text.
fn piece(v: Option<&RawValue>) -> Option<Piece<'_>> {
    let raw = v?.get();
    match raw.as_bytes().first() {
        Some(b'"') => Some(Piece::Json(raw)),
        Some(b'n') => None,
        _ => Some(Piece::Plain(raw)),
    }
}

/// Adds a message's text: a string, or the text parts of an array of content parts (as some
/// servers send); any other value carries no text.
fn push_content(v: Option<&RawValue>, out: &mut DeltaBatch<'_>) {
    #[derive(Deserialize)]
    struct Part<'a> {
        #[serde(borrow)]
        text: Option<&'a RawValue>,
    }
    let Some(raw) = v.map(RawValue::get) else {
        return;
    };
    match raw.as_bytes().first() {
        Some(b'"') => out.push_text(Piece::Json(raw)),
        Some(b'[') => {
            for part in serde_json::from_str::<Vec<Part>>(raw).unwrap_or_default() {
                if let Some(t) = part.text.map(RawValue::get).filter(|t| t.starts_with('"')) {
                    out.push_text(Piece::Json(t));
                }
            }
        }
        _ => {}
    }
}

/// A `tool_calls` array, deserialized in place: the first calls inline, any further ones in a
/// vector (streams send one call per chunk, so the vector is only used by whole answers with
/// many parallel calls). Borrowing the array as raw JSON instead would make serde_json
/// allocate a nesting stack for every chunk.
#[derive(Default)]
struct ToolCalls<'a> {
    inline: [Option<WireToolCall<'a>>; 2],
    more: Vec<WireToolCall<'a>>,
}

impl<'a> ToolCalls<'a> {
    fn iter(&self) -> impl Iterator<Item = &WireToolCall<'a>> {
        self.inline.iter().flatten().chain(self.more.iter())
    }

    /// Adds every call to `batch`, as one piece each.
    fn push_into(&self, batch: &mut DeltaBatch<'_>) {
        for (n, c) in self.iter().enumerate() {
            let f = c.function.as_ref();
            batch.push_tool_call(
                c.index
                    .0
                    .map_or(n as u32, |i| i.min(u32::MAX as u64) as u32),
                piece(c.id),
                piece(f.and_then(|f| f.name)),
                piece(f.and_then(|f| f.arguments)),
            );
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ToolCalls<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ToolCalls<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of tool calls")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(ToolCalls::default())
            }
            // Anything but an array carries no calls.
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(ToolCalls::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(ToolCalls::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(ToolCalls::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(ToolCalls::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(ToolCalls::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(ToolCalls::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut calls = ToolCalls::default();
                let mut n = 0;
                while let Some(c) = seq.next_element::<WireToolCall<'de>>()? {
                    match calls.inline.get_mut(n) {
                        Some(slot) => *slot = Some(c),
                        None => calls.more.push(c),
                    }
                    n += 1;
                }
                Ok(calls)
            }
        }
        d.deserialize_any(V)
    }
}

/// The error text of a body that failed to deserialize or carries an `error` object.
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
    // The plain shape in one pass; anything else (and every error) by the general parser.
    if let Some(r) = super::openai_scan::scan_response(text) {
        return Ok(r);
    }
    parse_text_in(text, arena)
}

/// The general parser alone (tests compare the fast path with it).
#[cfg(test)]
pub(crate) fn parse_response_general(body: &[u8]) -> Result<ChatResponse, String> {
    let text =
        std::str::from_utf8(body).map_err(|e| format!("response is not valid UTF-8: {e}"))?;
    parse_text_in(text, &bumpalo::Bump::new())
}

/// The general parser: typed serde over the borrowed text, the answer decoded in `arena`.
fn parse_text_in(text: &str, arena: &bumpalo::Bump) -> Result<ChatResponse, String> {
    let v: Response = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Err(error_of(text).unwrap_or_else(|| super::json_text::describe("response", &e)))
        }
    };
    if v.error.is_some() {
        if let Some(msg) = error_of(text) {
            return Err(msg);
        }
    }
    let choice = v
        .choices
        .0
        .ok_or_else(|| "response has no choices".to_string())?;
    let mut batch = DeltaBatch::new_in(arena);
    if let Some(m) = choice.message.as_ref().or(choice.delta.as_ref()) {
        push_content(m.content, &mut batch);
        m.tool_calls.push_into(&mut batch);
    }
    let mut r = ChatResponse {
        finish_reason: choice
            .finish_reason
            .as_deref()
            .unwrap_or("stop")
            .to_string(),
        model: v.model.as_deref().unwrap_or_default().to_string(),
        usage: v.usage.as_ref().map(WireUsage::usage).unwrap_or_default(),
        ..Default::default()
    };
    let (content, mut tool_calls) = batch.whole_answer();
    for c in &mut tool_calls {
        if c.arguments.is_empty() {
            c.arguments.push_str("{}");
        }
    }
    r.content = content;
    r.tool_calls = tool_calls;
    Ok(r)
}

/// One streamed chunk, borrowed from the event's data.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow)]
    model: Option<Str<'a>>,
    #[serde(borrow, default)]
    choices: First<Choice<'a>>,
    usage: Option<WireUsage>,
    error: Option<IgnoredAny>,
}

/// Applies one SSE event: metadata to `meta`, the deltas it carries to `out`. Allocates
/// nothing once the buffers are warm. Returns the provider's error text when the event is an
/// error.
pub fn apply_event(
    ev: &SseEvent<'_>,
    meta: &mut StreamMeta,
    out: &mut DeltaBatch<'_>,
) -> Result<(), String> {
    if ev.data == "[DONE]" {
        meta.done = true;
        return Ok(());
    }
    // JSON that is not an object (a keep-alive "ping", say) carries nothing.
    if !ev.data.trim_start().starts_with('{') && serde_json::from_str::<IgnoredAny>(ev.data).is_ok()
    {
        return Ok(());
    }
    let v: Chunk = match serde_json::from_str(ev.data) {
        Ok(v) => v,
        Err(e) => {
            return Err(
                error_of(ev.data).unwrap_or_else(|| super::json_text::describe("stream event", &e))
            )
        }
    };
    if v.error.is_some() {
        if let Some(msg) = error_of(ev.data) {
            return Err(msg);
        }
    }
    if let Some(m) = &v.model {
        meta.set_model(m);
    }
    if let Some(u) = &v.usage {
        meta.usage = u.usage();
    }
    if let Some(choice) = v.choices.0 {
        let before = out.len();
        if let Some(d) = choice.delta.as_ref().or(choice.message.as_ref()) {
            push_content(d.content, out);
            d.tool_calls.push_into(out);
        }
        meta.deltas += (out.len() - before) as u64;
        if let Some(f) = &choice.finish_reason {
            meta.set_finish_reason(f);
        }
    }
    Ok(())
}

/// The error text of an OpenAI-style error object, if `v` is one.
pub fn error_text(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    if e.is_null() {
        return None;
    }
    let msg = e["message"]
        .as_str()
        .map(str::to_string)
        .or_else(|| e.as_str().map(str::to_string))
        .unwrap_or_else(|| e.to_string());
    let kind = e["type"].as_str().or_else(|| e["code"].as_str());
    Some(match kind {
        Some(k) => format!("{k}: {msg}"),
        None => msg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::stream::StreamAccumulator;
    use crate::model::types::{ChatMessage, Role};
    use serde_json::json;

    #[test]
    fn body_has_stream_options_and_tools() {
        let ep = Endpoint::from_json(
            r#"{"name":"a","provider":"openai","base_url":"http://x/v1","model":"m"}"#,
        )
        .unwrap();
        let mut req = ChatRequest {
            messages: vec![ChatMessage::text(Role::User, "hi")],
            stream: true,
            ..Default::default()
        };
        let schema = json!({"type":"object","properties":{"q":{"type":"string","description":"a \"quoted\" word"}},"required":["q"]});
        req.tools.push(crate::model::types::ToolSpec::new(
            "f",
            "d",
            std::sync::Arc::new(schema.clone()),
        ));
        let v: Value = serde_json::from_slice(&build_body(&req, &ep)).unwrap();
        assert_eq!(v["model"], "m");
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["tools"][0]["function"]["name"], "f");
        // The schema is carried as written once when the tool was defined.
        assert_eq!(v["tools"][0]["function"]["parameters"], schema);
    }

    #[test]
    fn written_body_has_every_field() {
        let ep = Endpoint::from_json(
            r#"{"name":"a","provider":"openai","base_url":"http://x/v1","model":"m"}"#,
        )
        .unwrap();
        let req = ChatRequest::from_json(
            r#"{"temperature":0,"max_tokens":9,"stream":true,"tool_choice":"auto","response_format":{"type":"json_object"},
                "messages":[{"role":"system","content":"s \"q\" \n"},{"role":"user","content":"hi ünï"},
                {"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
                {"role":"tool","tool_call_id":"c","content":"r"}],
                "tools":[{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object"}}}]}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&build_body(&req, &ep)).unwrap();
        assert_eq!(
            v,
            json!({
                "model": "m",
                "messages": [
                    {"role": "system", "content": "s \"q\" \n"},
                    {"role": "user", "content": "hi ünï"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                    {"role": "tool", "content": "r", "tool_call_id": "c"}
                ],
                "tools": [{"type": "function", "function": {"name": "f", "description": "d",
                           "parameters": {"type": "object"}}}],
                "temperature": 0.0,
                "max_tokens": 9,
                "response_format": {"type": "json_object"},
                "tool_choice": "auto",
                "stream": true,
                "stream_options": {"include_usage": true}
            })
        );
    }

    #[test]
    fn parses_tool_call_response() {
        let r = parse_response(br#"{"model":"x","choices":[{"finish_reason":"tool_calls","message":{"content":"","tool_calls":[{"id":"c","type":"function","function":{"name":"get","arguments":"{\"a\":1}"}}]}}],"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":3}}}"#).unwrap();
        assert_eq!(r.tool_calls[0].name, "get");
        assert_eq!(r.usage.cached_tokens, 3);
        assert_eq!(r.finish_reason, "tool_calls");
        assert!(
            parse_response(br#"{"error":{"message":"bad","type":"invalid_request_error"}}"#)
                .unwrap_err()
                .contains("bad")
        );
        assert!(parse_response(b"{not json").is_err());
    }

    /// Feeds events through the provider into an accumulator, as the engine does.
    fn replay(events: &[&str]) -> (StreamAccumulator, StreamMeta, Vec<Result<(), String>>) {
        let mut acc = StreamAccumulator::default();
        let mut meta = StreamMeta::default();
        let arena = bumpalo::Bump::new();
        let mut batch = DeltaBatch::new_in(&arena);
        let mut results = Vec::new();
        for e in events {
            let ev = SseEvent { event: "", data: e };
            results.push(apply_event(&ev, &mut meta, &mut batch));
            for d in batch.iter() {
                acc.apply(d);
            }
            batch.clear();
        }
        (acc, meta, results)
    }

    #[test]
    fn stream_accumulates_text_tool_calls_usage() {
        let (acc, meta, results) = replay(&[
            r#"{"model":"m","choices":[{"delta":{"role":"assistant","content":null}}]}"#,
            r#"{"choices":[{"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo\n\u00e9\"q\""},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"c2","function":{"name":"g","arguments":""}},{"index":2,"id":"c3","function":{"name":"h","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"prompt_tokens_details":null},"timings":{"a":1}}"#,
            "[DONE]",
        ]);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let r = acc.response(&meta);
        assert!(meta.done);
        assert_eq!(meta.deltas, 6);
        assert_eq!(r.content, "Hello\n\u{e9}\"q\"");
        assert_eq!(r.tool_calls.len(), 3);
        assert_eq!(r.tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(r.tool_calls[0].id, "c1");
        assert_eq!(r.tool_calls[2].name, "h");
        assert_eq!(r.finish_reason, "tool_calls");
        assert_eq!(r.usage.prompt_tokens, 9);
        assert_eq!(r.model, "m");
    }

    #[test]
    fn lenient_about_what_servers_vary_in() {
        let (acc, meta, results) = replay(&[
            "\"ping\"",
            r#"{"choices":[{"delta":{"content":[{"type":"text","text":"Hi "},{"type":"image_url","image_url":{}},{"type":"text","text":"there"}]}}]}"#,
            r#"{"choices":[{"delta":{"content":true,"tool_calls":{}}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":"0","id":"c","function":{"name":"f","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":12.0,"completion_tokens":-1}}"#,
            "[DONE]",
        ]);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let r = acc.response(&meta);
        assert_eq!(r.content, "Hi there");
        assert_eq!(r.tool_calls[0].name, "f");
        assert_eq!((r.usage.prompt_tokens, r.usage.completion_tokens), (12, 0));
        let whole = parse_response(
            br#"{"choices":[{"message":{"content":[{"type":"text","text":"part"}]}}],"usage":{"prompt_tokens":"3"}}"#,
        )
        .unwrap();
        assert_eq!(
            (whole.content.as_str(), whole.usage.prompt_tokens),
            ("part", 3)
        );
    }

    #[test]
    fn stream_errors_are_reported() {
        let (_, _, results) = replay(&[
            r#"{"error":{"code":500,"message":"boom","type":"server_error"}}"#,
            r#"{"choices":[{"delta":{"content":"x"}}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":7}]}}]}"#,
        ]);
        assert_eq!(results[0].as_ref().unwrap_err(), "server_error: boom");
        assert!(results[1].as_ref().unwrap_err().contains("not valid JSON"));
        assert!(results[2]
            .as_ref()
            .unwrap_err()
            .contains("unexpected shape"));
    }
}
