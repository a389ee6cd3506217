//! Provider-neutral chat types: messages, tools, requests, responses and usage.
//!
//! Requests arrive as JSON in the OpenAI Chat Completions shape (the lingua franca of model
//! servers); each provider module translates to and from its own wire format.

use crate::config::json_kind;
use crate::error::{Error, Result, Status};
use serde_json::{json, Map, Value};

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Instructions.
    System,
    /// The user (or another agent).
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

impl Role {
    /// The OpenAI wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => return None,
        })
    }
}

/// A tool call requested by the model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolCall {
    /// Provider-assigned id, echoed back with the result.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as a JSON text.
    pub arguments: String,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// Author.
    pub role: Role,
    /// Text content (may be empty for a pure tool-call message).
    pub content: String,
    /// Tool calls (assistant messages only).
    pub tool_calls: Vec<ToolCall>,
    /// The call this message answers (tool messages only).
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A plain text message.
    pub fn text(role: Role, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// The OpenAI JSON form.
    pub fn to_openai_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("role".into(), json!(self.role.as_str()));
        if self.role == Role::Assistant && !self.tool_calls.is_empty() && self.content.is_empty() {
            m.insert("content".into(), Value::Null);
        } else {
            m.insert("content".into(), json!(self.content));
        }
        if !self.tool_calls.is_empty() {
            let calls: Vec<Value> = self
                .tool_calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function",
                           "function": {"name": c.name, "arguments": c.arguments}})
                })
                .collect();
            m.insert("tool_calls".into(), Value::Array(calls));
        }
        if let Some(id) = &self.tool_call_id {
            m.insert("tool_call_id".into(), json!(id));
        }
        Value::Object(m)
    }
}

/// A tool the model may call, shared: requests clone their tool lists at every step, and a
/// clone copies one pointer. Made by [`ToolSpec::new`]; its parts are read through
/// [`ToolDef`].
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec(std::sync::Arc<ToolDef>);

/// What a [`ToolSpec`] holds.
#[derive(Debug, PartialEq)]
pub struct ToolDef {
    /// Name.
    pub name: std::sync::Arc<str>,
    /// What it does, for the model.
    pub description: std::sync::Arc<str>,
    /// JSON schema of its parameters (read with [`ToolDef::parameters`]; fixed when made,
    /// so its text below never goes stale).
    parameters: std::sync::Arc<Value>,
    /// `parameters` as JSON text, written once: request bodies copy it rather than
    /// serializing the schema again at every step.
    parameters_json: std::sync::Arc<str>,
}

impl std::ops::Deref for ToolSpec {
    type Target = ToolDef;
    fn deref(&self) -> &ToolDef {
        &self.0
    }
}

impl ToolSpec {
    /// Whether `other` is this very definition (a clone of it), not merely an equal one.
    pub fn same_as(&self, other: &ToolSpec) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }

    /// A tool definition.
    pub fn new(
        name: impl Into<std::sync::Arc<str>>,
        description: impl Into<std::sync::Arc<str>>,
        parameters: std::sync::Arc<Value>,
    ) -> ToolSpec {
        let parameters_json = parameters.to_string().into();
        ToolSpec(std::sync::Arc::new(ToolDef {
            name: name.into(),
            description: description.into(),
            parameters,
            parameters_json,
        }))
    }
}

impl ToolDef {
    /// This definition with another description (the rest shared).
    pub fn with_description(&self, description: impl Into<std::sync::Arc<str>>) -> ToolSpec {
        ToolSpec(std::sync::Arc::new(ToolDef {
            name: self.name.clone(),
            description: description.into(),
            parameters: self.parameters.clone(),
            parameters_json: self.parameters_json.clone(),
        }))
    }

    /// The parameters' JSON schema.
    pub fn parameters(&self) -> &std::sync::Arc<Value> {
        &self.parameters
    }

    /// The parameters' schema as JSON text (what request bodies carry).
    pub fn parameters_json(&self) -> &str {
        &self.parameters_json
    }
}

/// A chat request, provider-neutral.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatRequest {
    /// Model name; `None` uses the endpoint's.
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Tools offered.
    pub tools: Vec<ToolSpec>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Output token limit; `None` uses the endpoint's default.
    pub max_tokens: Option<u32>,
    /// Stream the answer.
    pub stream: bool,
    /// OpenAI `response_format` (e.g. a JSON schema), passed through.
    pub response_format: Option<Value>,
    /// OpenAI `tool_choice`, passed through.
    pub tool_choice: Option<Value>,
}

fn bad(key: &str, expected: &str, got: &Value) -> Error {
    Error::new(
        Status::InvalidJson,
        format!(
            "request key \"{key}\" must be {expected}, got {}",
            json_kind(got)
        ),
    )
}

fn text_content(key: &str, v: &Value) -> Result<String> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        // OpenAI content parts: keep the text parts.
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                match p.get("text").and_then(Value::as_str) {
                    Some(t) => out.push_str(t),
                    None => return Err(bad(key, "a string or text parts", v)),
                }
            }
            Ok(out)
        }
        other => Err(bad(key, "a string", other)),
    }
}

impl ChatRequest {
    /// Parses an OpenAI-shaped request object. Unknown keys are rejected, naming the key.
    pub fn from_json(text: &str) -> Result<ChatRequest> {
        // Plain requests (messages of text, the common keys) are read straight into the
        // request; anything else, including every malformed request, takes the general path,
        // which names the offending key.
        if let Some(req) = fast::parse(text) {
            return Ok(req);
        }
        let v: Value = serde_json::from_str(text).map_err(|e| {
            Error::new(
                Status::InvalidJson,
                format!("request is not valid JSON: {e}"),
            )
        })?;
        ChatRequest::from_value(&v)
    }

    /// Parses an already-decoded request object.
    pub fn from_value(v: &Value) -> Result<ChatRequest> {
        let obj = v
            .as_object()
            .ok_or_else(|| bad("(request)", "an object", v))?;
        let mut req = ChatRequest::default();
        for (k, val) in obj {
            match k.as_str() {
                "model" => {
                    req.model = Some(val.as_str().ok_or_else(|| bad(k, "a string", val))?.into())
                }
                "messages" => {
                    let arr = val.as_array().ok_or_else(|| bad(k, "an array", val))?;
                    for (i, m) in arr.iter().enumerate() {
                        req.messages.push(parse_message(i, m)?);
                    }
                }
                "tools" => {
                    let arr = val.as_array().ok_or_else(|| bad(k, "an array", val))?;
                    for (i, t) in arr.iter().enumerate() {
                        req.tools.push(parse_tool(i, t)?);
                    }
                }
                "temperature" => {
                    req.temperature = Some(val.as_f64().ok_or_else(|| bad(k, "a number", val))?)
                }
                "max_tokens" | "max_completion_tokens" => {
                    req.max_tokens = Some(
                        val.as_u64()
                            .and_then(|n| u32::try_from(n).ok())
                            .ok_or_else(|| bad(k, "a non-negative integer", val))?,
                    )
                }
                "stream" => req.stream = val.as_bool().ok_or_else(|| bad(k, "a boolean", val))?,
                "response_format" => req.response_format = Some(val.clone()),
                "tool_choice" => req.tool_choice = Some(val.clone()),
                "stream_options" => {} // always set by the library when streaming
                other => {
                    return Err(Error::new(
                        Status::InvalidJson,
                        format!("unknown request key \"{other}\""),
                    ))
                }
            }
        }
        if req.messages.is_empty() {
            return Err(Error::new(
                Status::InvalidJson,
                "request key \"messages\" must be a non-empty array",
            ));
        }
        Ok(req)
    }
}

fn parse_message(i: usize, m: &Value) -> Result<ChatMessage> {
    let key = |f: &str| format!("messages[{i}].{f}");
    let obj = m
        .as_object()
        .ok_or_else(|| bad(&format!("messages[{i}]"), "an object", m))?;
    let role_v = obj.get("role").unwrap_or(&Value::Null);
    let role = role_v.as_str().and_then(Role::parse).ok_or_else(|| {
        bad(
            &key("role"),
            "one of \"system\", \"user\", \"assistant\", \"tool\"",
            role_v,
        )
    })?;
    let content = text_content(&key("content"), obj.get("content").unwrap_or(&Value::Null))?;
    let mut msg = ChatMessage::text(role, content);
    if let Some(calls) = obj.get("tool_calls") {
        let arr = calls
            .as_array()
            .ok_or_else(|| bad(&key("tool_calls"), "an array", calls))?;
        for (j, c) in arr.iter().enumerate() {
            let f = c.get("function").unwrap_or(c);
            let name = f.get("name").and_then(Value::as_str);
            let name = name.ok_or_else(|| {
                bad(
                    &format!("messages[{i}].tool_calls[{j}].function.name"),
                    "a string",
                    f,
                )
            })?;
            let arguments = match f.get("arguments") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "{}".to_string(),
            };
            msg.tool_calls.push(ToolCall {
                id: c
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                name: name.to_string(),
                arguments,
            });
        }
    }
    if let Some(id) = obj.get("tool_call_id") {
        msg.tool_call_id = Some(
            id.as_str()
                .ok_or_else(|| bad(&key("tool_call_id"), "a string", id))?
                .into(),
        );
    }
    if role == Role::Tool && msg.tool_call_id.is_none() {
        return Err(Error::new(
            Status::InvalidJson,
            format!(
                "request key \"{}\" is required for a tool message",
                key("tool_call_id")
            ),
        ));
    }
    Ok(msg)
}

fn parse_tool(i: usize, t: &Value) -> Result<ToolSpec> {
    let f = t.get("function").unwrap_or(t);
    let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
        bad(
            &format!("tools[{i}].function.name"),
            "a string",
            f.get("name").unwrap_or(&Value::Null),
        )
    })?;
    Ok(ToolSpec::new(
        name,
        f.get("description")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        std::sync::Arc::new(
            f.get("parameters")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        ),
    ))
}

/// Token usage and cost of one call (or a sum of calls).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// Prompt (input) tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Completion (output) tokens, reasoning included.
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's cache (Anthropic).
    pub cache_creation_tokens: u64,
    /// Completion tokens spent on hidden reasoning.
    pub reasoning_tokens: u64,
    /// Cost in US dollars from the endpoint's prices.
    pub cost_usd: f64,
}

impl Usage {
    /// Adds another usage to this one.
    pub fn add(&mut self, o: &Usage) {
        // Saturating: counts come from servers, which may send anything.
        self.prompt_tokens = self.prompt_tokens.saturating_add(o.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(o.completion_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(o.cached_tokens);
        self.cache_creation_tokens = self
            .cache_creation_tokens
            .saturating_add(o.cache_creation_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(o.reasoning_tokens);
        self.cost_usd += o.cost_usd;
    }

    /// JSON form.
    pub fn to_json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "cache_creation_tokens": self.cache_creation_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": self.cost_usd,
        })
    }
}

/// A model's answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatResponse {
    /// Text content.
    pub content: String,
    /// Tool calls requested.
    pub tool_calls: Vec<ToolCall>,
    /// Why generation stopped, normalised to OpenAI names: `stop`, `length`, `tool_calls`,
    /// `content_filter`.
    pub finish_reason: String,
    /// The model that answered.
    pub model: String,
    /// Usage of this call.
    pub usage: Usage,
}

impl ChatResponse {
    /// The assistant message to append to a history.
    pub fn to_message(&self) -> ChatMessage {
        ChatMessage {
            role: Role::Assistant,
            content: self.content.clone(),
            tool_calls: self.tool_calls.clone(),
            tool_call_id: None,
        }
    }

    /// [`ChatResponse::to_message`], moving the content and tool calls.
    pub fn into_message(self) -> ChatMessage {
        ChatMessage {
            role: Role::Assistant,
            content: self.content,
            tool_calls: self.tool_calls,
            tool_call_id: None,
        }
    }

    /// JSON form given to C callers.
    pub fn to_json(&self) -> Value {
        let calls: Vec<Value> = self
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "name": c.name, "arguments": c.arguments}))
            .collect();
        json!({
            "content": self.content,
            "tool_calls": calls,
            "finish_reason": self.finish_reason,
            "model": self.model,
            "usage": self.usage.to_json(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mutated_requests_never_make_the_fast_and_general_paths_disagree() {
        let general = |t: &str| {
            serde_json::from_str::<Value>(t)
                .ok()
                .and_then(|v| ChatRequest::from_value(&v).ok())
        };
        let bases = [
            r#"{"messages":[{"role":"user","content":"ping"}],"max_tokens":8}"#,
            r#"{"messages":[{"role":"system","content":"be \"brief\" \u00e9"},{"role":"tool","content":"42","tool_call_id":"c1"}],"model":"m","temperature":0.25,"stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":5}"#,
        ];
        // Byte-level mutations: whenever the fast path accepts a mutant, the general path
        // accepts it too and reads the same request.
        let alphabet = b"{}[]\":,\\ 0123456789.eE-+tfnulrsaxu";
        let mut accepted = 0;
        for t in crate::model::json_scan::mutants(&bases, 3000, 2, alphabet) {
            if let Some(fast) = fast::parse(&t) {
                assert_eq!(Some(fast), general(&t), "{t}");
                accepted += 1;
            }
        }
        assert!(accepted > 200, "{accepted}");
    }

    #[test]
    fn the_fast_path_reads_requests_exactly_as_the_general_path() {
        let general = |t: &str| {
            ChatRequest::from_value(&serde_json::from_str::<Value>(t).unwrap())
                .map_err(|e| (e.status(), e.message().to_string()))
        };
        let fast_and_general_agree = [
            r#"{"messages":[{"role":"user","content":"ping"}],"max_tokens":8}"#,
            r#"{"messages":[{"role":"system","content":"be \"brief\" \u00e9"},{"role":"user","content":"hi"}],
                "model":"m","temperature":0,"stream":true,"stream_options":{"include_usage":true}}"#,
            r#"{"messages":[{"role":"assistant","content":null},{"role":"tool","content":"42","tool_call_id":"c1"}],
                "max_completion_tokens":5,"temperature":0.5}"#,
            r#"{"max_completion_tokens":5,"max_tokens":7,"messages":[{"role":"user","content":"x"}]}"#,
        ];
        for t in fast_and_general_agree {
            let fast = fast::parse(t).unwrap_or_else(|| panic!("fast path declined {t}"));
            assert_eq!(Ok(fast), general(t), "{t}");
        }
        // Everything the fast path declines goes the general way, with its exact errors.
        let declined = [
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"parts"}]}]}"#,
            r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}]}"#,
            r#"{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","function":{"name":"f","arguments":"{}"}}]}]}"#,
            r#"{"messages":[{"role":"user","content":"x"}],"model":null}"#,
            r#"{"messages":[{"role":"user","content":"x"}],"temperature":null}"#,
            r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
            r#"{"messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
            r#"{"messages":[{"role":"robot","content":"x"}]}"#,
            r#"{"messages":[{"role":"tool","content":"x"}]}"#,
            r#"{"messages":[]}"#,
            r#"{"messages":[{"role":"user","content":"x"}],"extra":1}"#,
            r#"{"messages":[{"role":"user","content":"x","tool_call_id":null}]}"#,
            r#"[[{"role":"user","content":"hi"}]]"#,
            r#"{"messages":[["user","hi"]]}"#,
            r#"{"messages":[{"role":"user","role":"system","content":"x"}]}"#,
            r#"{"messages":[{"content":"x"}]}"#,
        ];
        for t in declined {
            assert!(fast::parse(t).is_none(), "fast path took {t}");
            let via_from_json =
                ChatRequest::from_json(t).map_err(|e| (e.status(), e.message().to_string()));
            assert_eq!(via_from_json, general(t), "{t}");
        }
        assert!(ChatRequest::from_json(
            r#"{"messages":[{"role":"user","content":"x"}],"model":null}"#
        )
        .is_err());
    }

    use super::*;

    #[test]
    fn parses_openai_request() {
        let r = ChatRequest::from_json(
            r#"{"model":"m","temperature":0,"max_tokens":64,"stream":true,
                "messages":[{"role":"system","content":"be brief"},
                            {"role":"user","content":[{"type":"text","text":"hi"}]},
                            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
                            {"role":"tool","tool_call_id":"c1","content":"42"}],
                "tools":[{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object"}}}]}"#,
        )
        .unwrap();
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.messages[1].content, "hi");
        assert_eq!(r.messages[2].tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(&*r.tools[0].name, "f");
        assert!(r.stream);
        assert_eq!(r.max_tokens, Some(64));
        let back = r.messages[2].to_openai_json();
        assert_eq!(back["content"], Value::Null);
        assert_eq!(back["tool_calls"][0]["function"]["name"], "f");
    }

    #[test]
    fn rejects_bad_requests_naming_the_key() {
        for (doc, needle) in [
            (r#"{"messages":[]}"#, "messages"),
            (
                r#"{"messages":[{"role":"robot","content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"messages":[{"role":"user","content":5}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"messages":[{"role":"tool","content":"x"}]}"#,
                "tool_call_id",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temprature":1}"#,
                "temprature",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                "stream",
            ),
            ("[1]", "request"),
            ("{", "JSON"),
        ] {
            let e = ChatRequest::from_json(doc).unwrap_err();
            assert_eq!(e.status(), Status::InvalidJson);
            assert!(e.message().contains(needle), "{doc}: {}", e.message());
        }
    }
}

/// The fast path of [`ChatRequest::from_json`]: plain requests read in one pass (see
/// `json_scan`), with no JSON tree. Returns `None` for anything it does not cover: other keys,
/// repeated keys, `null` where a value is expected, non-text content, and anything not proven
/// valid JSON.
mod fast {
    use super::{ChatMessage, ChatRequest, Role};
    use crate::model::json_scan::{Scanner, Seen};

    pub(super) fn parse(text: &str) -> Option<ChatRequest> {
        let mut s = Scanner::new(text);
        let mut r = ChatRequest::default();
        let (mut max_tokens, mut max_completion_tokens) = (None, None);
        let mut seen = Seen::default();
        s.object(|s, key| {
            match key {
                b"messages" => {
                    seen.first(0)?;
                    s.array(|s, _| {
                        let m = message(s)?;
                        r.messages.push(m);
                        Some(())
                    })?;
                }
                b"model" => {
                    seen.first(1)?;
                    r.model = Some(String::new());
                    s.string(r.model.as_mut()?)?;
                }
                b"temperature" => {
                    seen.first(2)?;
                    // Converted by serde_json, as the general path converts it.
                    r.temperature = Some(serde_json::from_str(s.number_text()?).ok()?);
                }
                b"max_tokens" => {
                    seen.first(3)?;
                    max_tokens = Some(u32::try_from(s.count()?).ok()?);
                }
                b"max_completion_tokens" => {
                    seen.first(4)?;
                    max_completion_tokens = Some(u32::try_from(s.count()?).ok()?);
                }
                b"stream" => {
                    seen.first(5)?;
                    r.stream = s.boolean()?;
                }
                // Always set by the library when streaming.
                b"stream_options" => {
                    seen.first(6)?;
                    s.skip_value()?;
                }
                _ => return None,
            }
            Some(())
        })?;
        if !s.at_end() || r.messages.is_empty() {
            return None;
        }
        r.max_tokens = max_tokens.or(max_completion_tokens);
        Some(r)
    }

    /// A message object: `role`, `content` (text or `null`), `tool_call_id` (text; required
    /// for a tool result), nothing else.
    fn message(s: &mut Scanner<'_>) -> Option<ChatMessage> {
        let mut role = None;
        let mut m = ChatMessage::text(Role::User, String::new());
        let mut seen = Seen::default();
        s.object(|s, key| {
            match key {
                b"role" => {
                    seen.first(0)?;
                    role = Some(Role::parse(s.plain_str()?)?);
                }
                b"content" => {
                    seen.first(1)?;
                    s.opt_string(&mut m.content)?;
                }
                b"tool_call_id" => {
                    seen.first(2)?;
                    let mut id = String::new();
                    s.string(&mut id)?;
                    m.tool_call_id = Some(id);
                }
                _ => return None,
            }
            Some(())
        })?;
        m.role = role?;
        if m.role == Role::Tool && m.tool_call_id.is_none() {
            return None;
        }
        Some(m)
    }
}
