//! The Anthropic Messages wire format.

use super::endpoint::Endpoint;
use super::sse::SseEvent;
use super::stream::{StreamAccumulator, StreamDelta};
use super::types::{ChatRequest, ChatResponse, Role, ToolCall, Usage};
use serde_json::{json, Map, Value};

/// The JSON body for a request. System messages become the top-level `system`; tool calls and
/// results become `tool_use` / `tool_result` blocks; consecutive same-role messages are merged,
/// as the API requires alternating roles.
pub fn build_body(req: &ChatRequest, ep: &Endpoint) -> Vec<u8> {
    let mut system = String::new();
    let mut messages: Vec<Value> = Vec::new();
    for msg in &req.messages {
        let (role, blocks) = match msg.role {
            Role::System => {
                if !system.is_empty() {
                    system.push_str("\n\n");
                }
                system.push_str(&msg.content);
                continue;
            }
            Role::User => ("user", vec![json!({"type": "text", "text": msg.content})]),
            Role::Tool => (
                "user",
                vec![json!({"type": "tool_result",
                            "tool_use_id": msg.tool_call_id.clone().unwrap_or_default(),
                            "content": msg.content})],
            ),
            Role::Assistant => {
                let mut b = Vec::new();
                if !msg.content.is_empty() {
                    b.push(json!({"type": "text", "text": msg.content}));
                }
                for c in &msg.tool_calls {
                    let input: Value =
                        serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
                    b.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
                }
                ("assistant", b)
            }
        };
        match messages.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(arr) = last["content"].as_array_mut() {
                    arr.extend(blocks);
                }
            }
            _ => messages.push(json!({"role": role, "content": blocks})),
        }
    }
    let mut m = Map::new();
    m.insert(
        "model".into(),
        json!(req.model.as_deref().unwrap_or(&ep.model)),
    );
    m.insert(
        "max_tokens".into(),
        json!(req.max_tokens.unwrap_or(ep.max_output_tokens)),
    );
    if !system.is_empty() {
        m.insert("system".into(), json!(system));
    }
    m.insert("messages".into(), Value::Array(messages));
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
            .collect();
        m.insert("tools".into(), Value::Array(tools));
    }
    if let Some(t) = req.temperature {
        m.insert("temperature".into(), json!(t));
    }
    if req.stream {
        m.insert("stream".into(), json!(true));
    }
    serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
}

fn usage_from(u: &Value, into: &mut Usage) {
    let set = |field: &mut u64, v: &Value| {
        if let Some(n) = v.as_u64() {
            *field = n;
        }
    };
    let cache_read = u["cache_read_input_tokens"].as_u64();
    let cache_write = u["cache_creation_input_tokens"].as_u64();
    if let Some(input) = u["input_tokens"].as_u64() {
        // Anthropic's input_tokens excludes cached tokens; ours includes them.
        into.prompt_tokens = input + cache_read.unwrap_or(0) + cache_write.unwrap_or(0);
    }
    set(&mut into.completion_tokens, &u["output_tokens"]);
    set(&mut into.cached_tokens, &u["cache_read_input_tokens"]);
    set(
        &mut into.cache_creation_tokens,
        &u["cache_creation_input_tokens"],
    );
}

fn finish_reason(stop: &str) -> String {
    match stop {
        "end_turn" | "stop_sequence" => "stop",
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        other => other,
    }
    .to_string()
}

/// Parses a complete (non-streamed) response.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("response is not valid JSON: {e}"))?;
    if let Some(msg) = error_text(&v) {
        return Err(msg);
    }
    let blocks = v["content"]
        .as_array()
        .ok_or_else(|| "response has no content".to_string())?;
    let mut r = ChatResponse {
        model: v["model"].as_str().unwrap_or_default().to_string(),
        finish_reason: finish_reason(v["stop_reason"].as_str().unwrap_or("end_turn")),
        ..Default::default()
    };
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => r.content.push_str(b["text"].as_str().unwrap_or_default()),
            Some("tool_use") => r.tool_calls.push(ToolCall {
                id: b["id"].as_str().unwrap_or_default().to_string(),
                name: b["name"].as_str().unwrap_or_default().to_string(),
                arguments: b["input"].to_string(),
            }),
            _ => {} // thinking and other blocks are not surfaced
        }
    }
    usage_from(&v["usage"], &mut r.usage);
    Ok(r)
}

/// Applies one SSE event to the accumulator, pushing the deltas it carries to `out`.
pub fn apply_event(
    ev: &SseEvent,
    acc: &mut StreamAccumulator,
    out: &mut Vec<StreamDelta>,
) -> Result<(), String> {
    let v: Value = serde_json::from_str(&ev.data)
        .map_err(|e| format!("stream event is not valid JSON: {e}"))?;
    if let Some(msg) = error_text(&v) {
        return Err(msg);
    }
    match v["type"].as_str().unwrap_or(ev.event.as_str()) {
        "message_start" => {
            let m = &v["message"];
            acc.model = m["model"].as_str().unwrap_or_default().to_string();
            usage_from(&m["usage"], &mut acc.usage);
        }
        "content_block_start" => {
            let b = &v["content_block"];
            if b["type"] == "tool_use" {
                let index = acc.tool_calls.len() as u32;
                out.push(StreamDelta::ToolCall {
                    index,
                    id: b["id"].as_str().map(str::to_string),
                    name: b["name"].as_str().map(str::to_string),
                    arguments: String::new(),
                });
            }
        }
        "content_block_delta" => {
            let d = &v["delta"];
            match d["type"].as_str() {
                Some("text_delta") => {
                    let t = d["text"].as_str().unwrap_or_default();
                    if !t.is_empty() {
                        out.push(StreamDelta::Text(t.to_string()));
                    }
                }
                Some("input_json_delta") => {
                    let index = acc.tool_calls.len().saturating_sub(1) as u32;
                    out.push(StreamDelta::ToolCall {
                        index,
                        id: None,
                        name: None,
                        arguments: d["partial_json"].as_str().unwrap_or_default().to_string(),
                    });
                }
                _ => {}
            }
        }
        "message_delta" => {
            if let Some(s) = v["delta"]["stop_reason"].as_str() {
                acc.finish_reason = Some(finish_reason(s));
            }
            usage_from(&v["usage"], &mut acc.usage);
        }
        "message_stop" => acc.done = true,
        _ => {} // ping, content_block_stop
    }
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
    use crate::model::types::ChatMessage;

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
    fn parses_response_and_stream_with_cache_usage() {
        let r = parse_response(br#"{"type":"message","model":"c","content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"t","name":"f","input":{"x":1}}],"stop_reason":"tool_use","usage":{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":20,"cache_creation_input_tokens":2}}"#).unwrap();
        assert_eq!(r.content, "hi");
        assert_eq!(r.tool_calls[0].arguments, "{\"x\":1}");
        assert_eq!(r.finish_reason, "tool_calls");
        assert_eq!(r.usage.prompt_tokens, 32);
        assert_eq!(r.usage.cached_tokens, 20);
        assert_eq!(r.usage.cache_creation_tokens, 2);

        let mut acc = StreamAccumulator::default();
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
            let mut out = Vec::new();
            apply_event(
                &SseEvent {
                    event: name.into(),
                    data: data.into(),
                },
                &mut acc,
                &mut out,
            )
            .unwrap();
            for d in &out {
                acc.apply(d);
            }
        }
        let r = acc.response();
        assert!(acc.done);
        assert_eq!(r.content, "Hi");
        assert_eq!(r.tool_calls[0].id, "tu");
        assert_eq!(r.tool_calls[0].arguments, "{\"x\":2}");
        assert_eq!(r.usage.completion_tokens, 7);
        assert_eq!(r.usage.prompt_tokens, 14);
        assert_eq!(r.finish_reason, "tool_calls");
        let mut out = Vec::new();
        let e = apply_event(
            &SseEvent {
                event: "error".into(),
                data:
                    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
                        .into(),
            },
            &mut acc,
            &mut out,
        );
        assert_eq!(e.unwrap_err(), "overloaded_error: Overloaded");
    }
}
