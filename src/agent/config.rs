//! An agent's configuration, from JSON.
//!
//! ```json
//! {"name": "planner", "endpoint": "local", "model": "override", "system": "You plan.",
//!  "tools": ["get_weather", "send_message"], "priority": 5, "context_limit": 4096,
//!  "max_steps": 8, "temperature": 0, "max_tokens": 256, "stream": true, "preemptible": true,
//!  "stream_events": false, "inbox_capacity": 1024, "tool_timeout_ms": 30000, "tool_first": false,
//!  "budget": {"tokens": 100000, "cost_usd": 1.0, "tool_calls": 20},
//!  "context": {"masking": {"keep_recent": 2}}}
//! ```

use crate::config::json_kind;
use crate::error::{Error, Result, Status};
use serde_json::Value;
use std::time::Duration;

/// Limits that stop an agent when reached; 0 means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Budget {
    /// Prompt + completion tokens over the agent's life.
    pub tokens: u64,
    /// Dollars over the agent's life.
    pub cost_usd: f64,
    /// Tool calls over the agent's life.
    pub tool_calls: u64,
}

/// How an agent behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// Unique name within the runtime (other agents message it by this name).
    pub name: String,
    /// The endpoint its model calls go to.
    pub endpoint: String,
    /// Model override (else the endpoint's).
    pub model: Option<String>,
    /// The system prompt.
    pub system: String,
    /// Tools it may call (registered tools, or the built-in `send_message`).
    pub tools: Vec<String>,
    /// Larger is more urgent, for the run queue and model admission.
    pub priority: i32,
    /// Context limit in tokens (0 = the endpoint's context window).
    pub context_limit: u32,
    /// Model calls allowed per turn.
    pub max_steps: u32,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Output limit per call.
    pub max_tokens: Option<u32>,
    /// Stream model answers.
    pub stream: bool,
    /// Allow more urgent agents to preempt this agent: it pauses at its safe points while one
    /// holds a claim of room on its endpoint, and its streams may be cancelled and continued
    /// later from their snapshots.
    pub preemptible: bool,
    /// Emit a `stream_delta` event per streamed piece.
    pub stream_events: bool,
    /// Messages that may wait in the inbox.
    pub inbox_capacity: usize,
    /// Default timeout of a tool call (a tool's own timeout, when set, wins).
    pub tool_timeout: Duration,
    /// Budgets.
    pub budget: Budget,
    /// How the context sent to the model is shaped (see [`crate::context::policy`]).
    pub context: crate::context::policy::ContextPolicy,
    /// Require a tool call in the first model call of each turn (`tool_choice: "required"`);
    /// later calls of the turn are free to answer. Helps small models that would otherwise
    /// describe a tool call instead of making it.
    pub tool_first: bool,
    /// Bytes of history the agent may hold (0 = no limit). A message that would pass it is
    /// refused with `LIMIT_EXCEEDED`; a turn that grows past it ends with that status.
    pub max_history_bytes: u64,
    /// Keep the conversation from turn to turn (the default). When false the agent is
    /// stateless: each turn starts from the system prompt alone, the earlier turns' messages
    /// dropped as it starts (a classifier or extractor answering one request at a time); an
    /// answer from an agent it messaged continues the conversation that asked.
    pub keep_history: bool,
}

fn bad(key: &str, expected: &str, got: &Value) -> Error {
    Error::new(
        Status::InvalidJson,
        format!(
            "agent key \"{key}\" must be {expected}, got {}",
            json_kind(got)
        ),
    )
}

fn u64_of(key: &str, v: &Value) -> Result<u64> {
    v.as_u64()
        .ok_or_else(|| bad(key, "a non-negative integer", v))
}

fn u32_of(key: &str, v: &Value) -> Result<u32> {
    u64_of(key, v).and_then(|n| u32::try_from(n).map_err(|_| bad(key, "a 32-bit integer", v)))
}

impl AgentConfig {
    /// Parses a configuration; unknown keys and wrong types are rejected, naming the key.
    pub fn from_json(text: &str) -> Result<AgentConfig> {
        let v: Value = serde_json::from_str(text).map_err(|e| {
            Error::new(
                Status::InvalidJson,
                format!("agent config is not valid JSON: {e}"),
            )
        })?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("(agent)", "an object", &v))?;
        let str_of = |k: &str| -> Result<String> {
            let val = obj.get(k).unwrap_or(&Value::Null);
            val.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(k, "a string", val))
        };
        let name = str_of("name")?;
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
            return Err(Error::invalid(
                "agent key \"name\" must be 1 to 64 printable characters",
            ));
        }
        let mut c = AgentConfig {
            name,
            endpoint: str_of("endpoint")?,
            model: None,
            system: String::new(),
            tools: Vec::new(),
            priority: 0,
            context_limit: 0,
            max_steps: 8,
            temperature: None,
            max_tokens: None,
            stream: true,
            preemptible: true,
            stream_events: false,
            inbox_capacity: 1024,
            tool_timeout: Duration::from_secs(30),
            budget: Budget::default(),
            context: crate::context::policy::ContextPolicy::default(),
            tool_first: false,
            max_history_bytes: 0,
            keep_history: true,
        };
        for (k, val) in obj {
            match k.as_str() {
                "name" | "endpoint" => {}
                "model" => {
                    c.model = Some(
                        val.as_str()
                            .ok_or_else(|| bad(k, "a string", val))?
                            .to_string(),
                    )
                }
                "system" => {
                    c.system = val
                        .as_str()
                        .ok_or_else(|| bad(k, "a string", val))?
                        .to_string()
                }
                "tools" => {
                    let arr = val
                        .as_array()
                        .ok_or_else(|| bad(k, "an array of tool names", val))?;
                    for (i, t) in arr.iter().enumerate() {
                        c.tools.push(
                            t.as_str()
                                .ok_or_else(|| bad(&format!("tools[{i}]"), "a string", t))?
                                .to_string(),
                        );
                    }
                }
                "priority" => {
                    c.priority = val
                        .as_i64()
                        .and_then(|p| i32::try_from(p).ok())
                        .ok_or_else(|| bad(k, "a 32-bit integer", val))?
                }
                "context_limit" => c.context_limit = u32_of(k, val)?,
                "max_steps" => {
                    c.max_steps = u32_of(k, val)?;
                    if c.max_steps == 0 {
                        return Err(Error::invalid("agent key \"max_steps\" must be at least 1"));
                    }
                }
                "temperature" => {
                    c.temperature = Some(val.as_f64().ok_or_else(|| bad(k, "a number", val))?)
                }
                "max_tokens" => c.max_tokens = Some(u32_of(k, val)?),
                "stream" => c.stream = val.as_bool().ok_or_else(|| bad(k, "a boolean", val))?,
                "preemptible" => {
                    c.preemptible = val.as_bool().ok_or_else(|| bad(k, "a boolean", val))?
                }
                "stream_events" => {
                    c.stream_events = val.as_bool().ok_or_else(|| bad(k, "a boolean", val))?
                }
                "inbox_capacity" => c.inbox_capacity = u32_of(k, val)?.max(1) as usize,
                "max_history_bytes" => c.max_history_bytes = u64_of(k, val)?,
                "tool_timeout_ms" => c.tool_timeout = Duration::from_millis(u64_of(k, val)?),
                "budget" => {
                    let b = val.as_object().ok_or_else(|| bad(k, "an object", val))?;
                    for (bk, bv) in b {
                        let key = format!("budget.{bk}");
                        match bk.as_str() {
                            "tokens" => c.budget.tokens = u64_of(&key, bv)?,
                            "tool_calls" => c.budget.tool_calls = u64_of(&key, bv)?,
                            "cost_usd" => {
                                c.budget.cost_usd = bv
                                    .as_f64()
                                    .filter(|x| *x >= 0.0)
                                    .ok_or_else(|| bad(&key, "a non-negative number", bv))?
                            }
                            _ => {
                                return Err(Error::new(
                                    Status::InvalidJson,
                                    format!("unknown agent key \"{key}\""),
                                ))
                            }
                        }
                    }
                }
                "tool_first" => {
                    c.tool_first = val.as_bool().ok_or_else(|| bad(k, "a boolean", val))?
                }
                "keep_history" => {
                    c.keep_history = val.as_bool().ok_or_else(|| bad(k, "a boolean", val))?
                }
                "context" => c.context.apply_json(val).map_err(|e| {
                    Error::new(
                        e.status(),
                        format!("agent key \"context\": {}", e.message()),
                    )
                })?,
                other => {
                    return Err(Error::new(
                        Status::InvalidJson,
                        format!("unknown agent key \"{other}\""),
                    ))
                }
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let c = AgentConfig::from_json(
            r#"{"name":"a","endpoint":"e","priority":-2,"tools":["t"],"budget":{"tokens":10,"cost_usd":0.5}}"#,
        )
        .unwrap();
        assert_eq!(c.priority, -2);
        assert_eq!(c.budget.tokens, 10);
        assert!(c.stream && c.preemptible && c.keep_history);
        let c =
            AgentConfig::from_json(r#"{"name":"a","endpoint":"e","keep_history":false}"#).unwrap();
        assert!(!c.keep_history);
        for (doc, needle) in [
            (r#"{"endpoint":"e"}"#, "name"),
            (r#"{"name":"a"}"#, "endpoint"),
            (r#"{"name":"a","endpoint":"e","priorty":1}"#, "priorty"),
            (r#"{"name":"a","endpoint":"e","tools":[1]}"#, "tools[0]"),
            (
                r#"{"name":"a","endpoint":"e","budget":{"dollars":1}}"#,
                "budget.dollars",
            ),
            (r#"{"name":"a","endpoint":"e","max_steps":0}"#, "max_steps"),
            (
                r#"{"name":"a","endpoint":"e","keep_history":1}"#,
                "keep_history",
            ),
        ] {
            let e = AgentConfig::from_json(doc).unwrap_err();
            assert!(e.message().contains(needle), "{doc}: {}", e.message());
        }
    }
}
