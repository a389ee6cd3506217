//! The OpenAI Chat Completions wire format.

use super::endpoint::Endpoint;
use super::sse::SseEvent;
use super::stream::{StreamAccumulator, StreamDelta};
use super::types::{ChatRequest, ChatResponse, ToolCall, Usage};
use serde_json::{json, Map, Value};

/// The JSON body for a request.
pub fn build_body(req: &ChatRequest, ep: &Endpoint) -> Vec<u8> {
    let mut m = Map::new();
    let model = req.model.as_deref().unwrap_or(&ep.model);
    if !model.is_empty() {
        m.insert("model".into(), json!(model));
    }
    m.insert(
        "messages".into(),
        Value::Array(req.messages.iter().map(|x| x.to_openai_json()).collect()),
    );
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters}})
            })
            .collect();
        m.insert("tools".into(), Value::Array(tools));
    }
    if let Some(t) = req.temperature {
        m.insert("temperature".into(), json!(t));
    }
    m.insert(
        "max_tokens".into(),
        json!(req.max_tokens.unwrap_or(ep.max_output_tokens)),
    );
    if let Some(rf) = &req.response_format {
        m.insert("response_format".into(), rf.clone());
    }
    if let Some(tc) = &req.tool_choice {
        m.insert("tool_choice".into(), tc.clone());
    }
    if req.stream {
        m.insert("stream".into(), json!(true));
        m.insert("stream_options".into(), json!({"include_usage": true}));
    }
    serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
}

fn usage_from(u: &Value) -> Usage {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    Usage {
        prompt_tokens: n(&u["prompt_tokens"]),
        completion_tokens: n(&u["completion_tokens"]),
        cached_tokens: n(&u["prompt_tokens_details"]["cached_tokens"]),
        cache_creation_tokens: 0,
        reasoning_tokens: n(&u["completion_tokens_details"]["reasoning_tokens"]),
        cost_usd: 0.0,
    }
}

/// Writes the JSON body for a request straight into `out`, from the request's own fields: no
/// intermediate JSON tree, so rendering into an arena allocates nothing on the heap. Same
/// content as [`build_body`].
pub fn write_body<W: std::io::Write>(
    req: &ChatRequest,
    ep: &Endpoint,
    out: &mut W,
) -> std::io::Result<()> {
    fn s<W: std::io::Write>(out: &mut W, v: &str) -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, v).map_err(std::io::Error::other)
    }
    fn v<W: std::io::Write>(out: &mut W, x: &Value) -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, x).map_err(std::io::Error::other)
    }
    out.write_all(b"{")?;
    let model = req.model.as_deref().unwrap_or(&ep.model);
    if !model.is_empty() {
        out.write_all(b"\"model\":")?;
        s(out, model)?;
        out.write_all(b",")?;
    }
    out.write_all(b"\"messages\":[")?;
    for (i, m) in req.messages.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(b"{\"role\":")?;
        s(out, m.role.as_str())?;
        out.write_all(b",\"content\":")?;
        if m.role == crate::model::types::Role::Assistant
            && !m.tool_calls.is_empty()
            && m.content.is_empty()
        {
            out.write_all(b"null")?;
        } else {
            s(out, &m.content)?;
        }
        if !m.tool_calls.is_empty() {
            out.write_all(b",\"tool_calls\":[")?;
            for (j, c) in m.tool_calls.iter().enumerate() {
                if j > 0 {
                    out.write_all(b",")?;
                }
                out.write_all(b"{\"id\":")?;
                s(out, &c.id)?;
                out.write_all(b",\"type\":\"function\",\"function\":{\"name\":")?;
                s(out, &c.name)?;
                out.write_all(b",\"arguments\":")?;
                s(out, &c.arguments)?;
                out.write_all(b"}}")?;
            }
            out.write_all(b"]")?;
        }
        if let Some(id) = &m.tool_call_id {
            out.write_all(b",\"tool_call_id\":")?;
            s(out, id)?;
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
            s(out, &t.name)?;
            out.write_all(b",\"description\":")?;
            s(out, &t.description)?;
            out.write_all(b",\"parameters\":")?;
            v(out, &t.parameters)?;
            out.write_all(b"}}")?;
        }
        out.write_all(b"]")?;
    }
    if let Some(t) = req.temperature {
        write!(out, ",\"temperature\":")?;
        v(out, &json!(t))?;
    }
    write!(
        out,
        ",\"max_tokens\":{}",
        req.max_tokens.unwrap_or(ep.max_output_tokens)
    )?;
    if let Some(rf) = &req.response_format {
        out.write_all(b",\"response_format\":")?;
        v(out, rf)?;
    }
    if let Some(tc) = &req.tool_choice {
        out.write_all(b",\"tool_choice\":")?;
        v(out, tc)?;
    }
    if req.stream {
        out.write_all(b",\"stream\":true,\"stream_options\":{\"include_usage\":true}")?;
    }
    out.write_all(b"}")
}

/// Parses a complete (non-streamed) response.
pub fn parse_response(body: &[u8]) -> Result<ChatResponse, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("response is not valid JSON: {e}"))?;
    if let Some(msg) = error_text(&v) {
        return Err(msg);
    }
    let choice = v["choices"]
        .get(0)
        .ok_or_else(|| "response has no choices".to_string())?;
    let msg = &choice["message"];
    let mut tool_calls = Vec::new();
    if let Some(calls) = msg["tool_calls"].as_array() {
        for c in calls {
            let args = &c["function"]["arguments"];
            tool_calls.push(ToolCall {
                id: c["id"].as_str().unwrap_or_default().to_string(),
                name: c["function"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                arguments: match args {
                    Value::String(s) => s.clone(),
                    Value::Null => "{}".to_string(),
                    other => other.to_string(),
                },
            });
        }
    }
    Ok(ChatResponse {
        content: msg["content"].as_str().unwrap_or_default().to_string(),
        tool_calls,
        finish_reason: choice["finish_reason"]
            .as_str()
            .unwrap_or("stop")
            .to_string(),
        model: v["model"].as_str().unwrap_or_default().to_string(),
        usage: usage_from(&v["usage"]),
    })
}

/// Applies one SSE event to the accumulator, pushing the deltas it carries to `out`.
/// Returns the provider's error text when the event is an error.
pub fn apply_event(
    ev: &SseEvent,
    acc: &mut StreamAccumulator,
    out: &mut Vec<StreamDelta>,
) -> Result<(), String> {
    if ev.data == "[DONE]" {
        acc.done = true;
        return Ok(());
    }
    let v: Value = serde_json::from_str(&ev.data)
        .map_err(|e| format!("stream event is not valid JSON: {e}"))?;
    if let Some(msg) = error_text(&v) {
        return Err(msg);
    }
    if let Some(m) = v["model"].as_str() {
        if acc.model.is_empty() {
            acc.model = m.to_string();
        }
    }
    if v["usage"].is_object() {
        acc.usage = usage_from(&v["usage"]);
    }
    if let Some(choice) = v["choices"].get(0) {
        let delta = &choice["delta"];
        if let Some(t) = delta["content"].as_str() {
            if !t.is_empty() {
                out.push(StreamDelta::Text(t.to_string()));
            }
        }
        if let Some(calls) = delta["tool_calls"].as_array() {
            for c in calls {
                out.push(StreamDelta::ToolCall {
                    index: c["index"].as_u64().unwrap_or(0) as u32,
                    id: c["id"].as_str().map(str::to_string),
                    name: c["function"]["name"].as_str().map(str::to_string),
                    arguments: c["function"]["arguments"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                });
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            acc.finish_reason = Some(f.to_string());
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
    use crate::model::types::{ChatMessage, Role};

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
        req.tools.push(crate::model::types::ToolSpec {
            name: "f".into(),
            description: "d".into(),
            parameters: json!({"type":"object"}),
        });
        let v: Value = serde_json::from_slice(&build_body(&req, &ep)).unwrap();
        assert_eq!(v["model"], "m");
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["tools"][0]["function"]["name"], "f");
    }

    #[test]
    fn written_body_equals_built_body() {
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
        let mut written = Vec::new();
        write_body(&req, &ep, &mut written).unwrap();
        let a: Value = serde_json::from_slice(&written).unwrap();
        let b: Value = serde_json::from_slice(&build_body(&req, &ep)).unwrap();
        assert_eq!(a, b);
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

    #[test]
    fn stream_accumulates_text_tool_calls_usage() {
        let mut acc = StreamAccumulator::default();
        let events = [
            r#"{"model":"m","choices":[{"delta":{"role":"assistant","content":null}}]}"#,
            r#"{"choices":[{"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"delta":{"content":"lo"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4}}"#,
            "[DONE]",
        ];
        for e in events {
            let mut out = Vec::new();
            apply_event(
                &SseEvent {
                    event: String::new(),
                    data: e.into(),
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
        assert_eq!(r.content, "Hello");
        assert_eq!(r.tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(r.tool_calls[0].id, "c1");
        assert_eq!(r.finish_reason, "tool_calls");
        assert_eq!(r.usage.prompt_tokens, 9);
        assert_eq!(r.model, "m");
        let mut out = Vec::new();
        let err = apply_event(
            &SseEvent {
                event: String::new(),
                data: r#"{"error":{"code":500,"message":"boom","type":"server_error"}}"#.into(),
            },
            &mut acc,
            &mut out,
        );
        assert_eq!(err.unwrap_err(), "server_error: boom");
    }
}
