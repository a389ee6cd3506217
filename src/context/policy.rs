//! Context policies: per agent, each on or off, from JSON.
//!
//! ```json
//! {"budget": {"enabled": true, "reserve_output": 0, "trigger": 0.8},
//!  "tool_outputs": {"enabled": true, "max_chars": 6000, "head": 2000, "tail": 1500,
//!                   "dedupe": true, "minify_json": true},
//!  "masking": {"enabled": true, "keep_recent": 3, "min_chars": 600},
//!  "window": {"enabled": true, "target": 0.6},
//!  "summaries": {"enabled": true, "max_items": 1000},
//!  "tool_selection": {"enabled": false, "max_tools": 8, "max_description": 200},
//!  "retry_on_overflow": true}
//! ```
//! Defaults are the values shown. `{"enabled": false}` turns one off; `{"all": false}` at the top
//! level starts from everything off.

use crate::config::json_kind;
use crate::error::{Error, Result, Status};
use serde_json::Value;

/// Keep the prompt within the window.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetPolicy {
    /// On or off. When off, nothing is dropped or summarized however long the history gets.
    pub enabled: bool,
    /// Tokens kept free for the answer (0 = the request's max_tokens, else 1024).
    pub reserve_output: u32,
    /// Compaction starts when the prompt passes this share of (window - reserve).
    pub trigger: f64,
}

/// Shrink tool outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolOutputPolicy {
    /// On or off.
    pub enabled: bool,
    /// Outputs longer than this are cut to head + tail with a marker.
    pub max_chars: usize,
    /// Characters kept from the start.
    pub head: usize,
    /// Characters kept from the end.
    pub tail: usize,
    /// Replace an output identical to an earlier one by a reference to it.
    pub dedupe: bool,
    /// Re-serialize pretty-printed JSON without whitespace.
    pub minify_json: bool,
}

/// Replace old tool results by a placeholder (key + digest); the `recall` tool brings the full
/// text back.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskingPolicy {
    /// On or off.
    pub enabled: bool,
    /// The most recent tool results kept whole.
    pub keep_recent: usize,
    /// Results shorter than this are never masked.
    pub min_chars: usize,
}

/// When over budget, drop the oldest turns (keeping the system prompt and first user message,
/// and never separating a tool call from its results), replaced by a summary.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowPolicy {
    /// On or off.
    pub enabled: bool,
    /// Drop down to this share of the budget, so compaction is rare and the prefix stable.
    pub target: f64,
}

/// Summaries of dropped turns and masked results keep identifiers, numbers, amounts, paths and
/// names verbatim (an extractive digest).
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryPolicy {
    /// On or off (off: dropped turns leave only a count behind).
    pub enabled: bool,
    /// Items kept per digest.
    pub max_items: usize,
}

/// Send only the tools a turn needs, with short descriptions.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSelectionPolicy {
    /// On or off.
    pub enabled: bool,
    /// At most this many tools per request (always keeping tools already called this turn).
    pub max_tools: usize,
    /// Descriptions cut to this many characters.
    pub max_description: usize,
}

/// An agent's context policies.
#[derive(Clone, Debug, PartialEq)]
pub struct ContextPolicy {
    /// See [`BudgetPolicy`].
    pub budget: BudgetPolicy,
    /// See [`ToolOutputPolicy`].
    pub tool_outputs: ToolOutputPolicy,
    /// See [`MaskingPolicy`].
    pub masking: MaskingPolicy,
    /// See [`WindowPolicy`].
    pub window: WindowPolicy,
    /// See [`SummaryPolicy`].
    pub summaries: SummaryPolicy,
    /// See [`ToolSelectionPolicy`].
    pub tool_selection: ToolSelectionPolicy,
    /// When a provider reports a context overflow, compact harder and retry (twice at most).
    pub retry_on_overflow: bool,
}

impl Default for ContextPolicy {
    fn default() -> Self {
        ContextPolicy {
            budget: BudgetPolicy {
                enabled: true,
                reserve_output: 0,
                trigger: 0.8,
            },
            tool_outputs: ToolOutputPolicy {
                enabled: true,
                max_chars: 6000,
                head: 2000,
                tail: 1500,
                dedupe: true,
                minify_json: true,
            },
            masking: MaskingPolicy {
                enabled: true,
                keep_recent: 3,
                min_chars: 600,
            },
            window: WindowPolicy {
                enabled: true,
                target: 0.6,
            },
            summaries: SummaryPolicy {
                enabled: true,
                max_items: 1000,
            },
            tool_selection: ToolSelectionPolicy {
                enabled: false,
                max_tools: 8,
                max_description: 200,
            },
            retry_on_overflow: true,
        }
    }
}

fn bad(key: &str, expected: &str, got: &Value) -> Error {
    Error::new(
        Status::InvalidJson,
        format!(
            "context policy key \"{key}\" must be {expected}, got {}",
            json_kind(got)
        ),
    )
}

fn unknown(key: &str) -> Error {
    Error::new(
        Status::InvalidJson,
        format!("unknown context policy key \"{key}\""),
    )
}

fn bool_of(k: &str, v: &Value) -> Result<bool> {
    v.as_bool().ok_or_else(|| bad(k, "a boolean", v))
}

fn usize_of(k: &str, v: &Value) -> Result<usize> {
    v.as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| bad(k, "a non-negative integer", v))
}

fn share_of(k: &str, v: &Value) -> Result<f64> {
    v.as_f64()
        .filter(|x| *x > 0.0 && *x <= 1.0)
        .ok_or_else(|| bad(k, "a number in (0, 1]", v))
}

impl ContextPolicy {
    /// Everything off: the full history is sent as is.
    pub fn off() -> ContextPolicy {
        let mut p = ContextPolicy::default();
        p.budget.enabled = false;
        p.tool_outputs.enabled = false;
        p.masking.enabled = false;
        p.window.enabled = false;
        p.summaries.enabled = false;
        p.tool_selection.enabled = false;
        p.retry_on_overflow = false;
        p
    }

    /// Applies a JSON object on top of `self` (strict: unknown keys are named).
    pub fn apply_json(&mut self, v: &Value) -> Result<()> {
        let obj = v
            .as_object()
            .ok_or_else(|| bad("(policy)", "an object", v))?;
        if let Some(all) = obj.get("all") {
            if !bool_of("all", all)? {
                *self = ContextPolicy::off();
            }
        }
        for (k, val) in obj {
            let sub = |name: &str| -> Result<&serde_json::Map<String, Value>> {
                val.as_object().ok_or_else(|| bad(name, "an object", val))
            };
            match k.as_str() {
                "all" => {}
                "retry_on_overflow" => self.retry_on_overflow = bool_of(k, val)?,
                "budget" => {
                    for (f, x) in sub(k)? {
                        let key = format!("budget.{f}");
                        match f.as_str() {
                            "enabled" => self.budget.enabled = bool_of(&key, x)?,
                            "reserve_output" => {
                                self.budget.reserve_output =
                                    usize_of(&key, x)?.min(u32::MAX as usize) as u32
                            }
                            "trigger" => self.budget.trigger = share_of(&key, x)?,
                            _ => return Err(unknown(&key)),
                        }
                    }
                }
                "tool_outputs" => {
                    for (f, x) in sub(k)? {
                        let key = format!("tool_outputs.{f}");
                        let t = &mut self.tool_outputs;
                        match f.as_str() {
                            "enabled" => t.enabled = bool_of(&key, x)?,
                            "max_chars" => t.max_chars = usize_of(&key, x)?.max(16),
                            "head" => t.head = usize_of(&key, x)?,
                            "tail" => t.tail = usize_of(&key, x)?,
                            "dedupe" => t.dedupe = bool_of(&key, x)?,
                            "minify_json" => t.minify_json = bool_of(&key, x)?,
                            _ => return Err(unknown(&key)),
                        }
                    }
                }
                "masking" => {
                    for (f, x) in sub(k)? {
                        let key = format!("masking.{f}");
                        match f.as_str() {
                            "enabled" => self.masking.enabled = bool_of(&key, x)?,
                            "keep_recent" => self.masking.keep_recent = usize_of(&key, x)?,
                            "min_chars" => self.masking.min_chars = usize_of(&key, x)?,
                            _ => return Err(unknown(&key)),
                        }
                    }
                }
                "window" => {
                    for (f, x) in sub(k)? {
                        let key = format!("window.{f}");
                        match f.as_str() {
                            "enabled" => self.window.enabled = bool_of(&key, x)?,
                            "target" => self.window.target = share_of(&key, x)?,
                            _ => return Err(unknown(&key)),
                        }
                    }
                }
                "summaries" => {
                    for (f, x) in sub(k)? {
                        let key = format!("summaries.{f}");
                        match f.as_str() {
                            "enabled" => self.summaries.enabled = bool_of(&key, x)?,
                            "max_items" => self.summaries.max_items = usize_of(&key, x)?,
                            _ => return Err(unknown(&key)),
                        }
                    }
                }
                "tool_selection" => {
                    for (f, x) in sub(k)? {
                        let key = format!("tool_selection.{f}");
                        let t = &mut self.tool_selection;
                        match f.as_str() {
                            "enabled" => t.enabled = bool_of(&key, x)?,
                            "max_tools" => t.max_tools = usize_of(&key, x)?.max(1),
                            "max_description" => t.max_description = usize_of(&key, x)?,
                            _ => return Err(unknown(&key)),
                        }
                    }
                }
                other => return Err(unknown(other)),
            }
        }
        Ok(())
    }

    /// Parses a policy document on top of the defaults.
    pub fn from_json(text: &str) -> Result<ContextPolicy> {
        let v: Value = serde_json::from_str(text).map_err(|e| {
            Error::new(
                Status::InvalidJson,
                format!("context policy is not valid JSON: {e}"),
            )
        })?;
        let mut p = ContextPolicy::default();
        p.apply_json(&v)?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_overrides_and_rejects_unknown_keys() {
        let p =
            ContextPolicy::from_json(r#"{"masking":{"keep_recent":1},"window":{"enabled":false}}"#)
                .unwrap();
        assert_eq!(p.masking.keep_recent, 1);
        assert!(!p.window.enabled);
        assert!(p.tool_outputs.enabled);
        let off = ContextPolicy::from_json(r#"{"all":false,"masking":{"enabled":true}}"#).unwrap();
        assert!(off.masking.enabled && !off.tool_outputs.enabled && !off.budget.enabled);
        for (doc, needle) in [
            (r#"{"maskng":{}}"#, "maskng"),
            (r#"{"masking":{"keep":1}}"#, "masking.keep"),
            (r#"{"budget":{"trigger":2}}"#, "budget.trigger"),
            (r#"{"masking":3}"#, "masking"),
        ] {
            let e = ContextPolicy::from_json(doc).unwrap_err();
            assert!(e.message().contains(needle), "{doc}: {}", e.message());
        }
    }
}
