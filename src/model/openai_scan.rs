//! A one-pass reader for the usual shape of a non-streamed OpenAI chat completion.
//!
//! Every non-streamed answer is parsed, on the caller's thread for direct calls, and typed
//! serde spends most of its time on machinery (a visitor per key, raw-value captures scanned
//! twice). This reader walks the bytes once and decodes only what a [`ChatResponse`] keeps.
//! It is a fast path, not a second parser to trust: it gives up (`None`) on anything beyond
//! the plain shape — an `error` key, content parts, non-string arguments, duplicate keys,
//! numbers that are not plain counts, escaped keys, deep nesting — and on any JSON it cannot
//! prove valid, and then [`super::openai::parse_response_in`] decides. A unit test checks that
//! whenever it answers, the general parser gives the same response.

use super::json_scan::{Scanner, Seen};
use super::types::{ChatResponse, ToolCall, Usage};

/// Reads `text` when it has the plain shape; `None` leaves it to the general parser.
pub(crate) fn scan_response(text: &str) -> Option<ChatResponse> {
    let mut s = Scanner::new(text);
    let mut r = ChatResponse::default();
    let mut have_choice = false;
    let mut finish_reason = None;
    let mut seen = Seen::default();
    s.object(|s, key| {
        match key {
            b"model" => {
                seen.first(0)?;
                s.opt_string(&mut r.model)?;
            }
            b"choices" => {
                seen.first(1)?;
                have_choice = s.choices(&mut r, &mut finish_reason)?;
            }
            b"usage" => {
                seen.first(2)?;
                if !s.null() {
                    r.usage = s.usage()?;
                }
            }
            b"error" => return None,
            _ => s.skip_value()?,
        }
        Some(())
    })?;
    if !s.at_end() || !have_choice {
        return None;
    }
    r.finish_reason = finish_reason.unwrap_or_else(|| "stop".to_string());
    Some(r)
}

/// The response-specific readers.
impl Scanner<'_> {
    /// `choices`: the first choice read into `r`, the others skipped. Whether there was one.
    fn choices(&mut self, r: &mut ChatResponse, finish: &mut Option<String>) -> Option<bool> {
        let mut have = false;
        self.array(|s, n| {
            if n > 0 {
                return s.skip_value();
            }
            have = true;
            let mut seen = Seen::default();
            s.object(|s, key| {
                match key {
                    b"message" => {
                        seen.first(0)?;
                        if !s.null() {
                            s.message(r)?;
                        }
                    }
                    b"finish_reason" => {
                        seen.first(1)?;
                        if !s.null() {
                            let mut f = String::new();
                            s.string(&mut f)?;
                            *finish = Some(f);
                        }
                    }
                    // A whole answer has no deltas; leave odd ones to the general parser.
                    b"delta" => return None,
                    _ => s.skip_value()?,
                }
                Some(())
            })
        })?;
        Some(have)
    }

    fn message(&mut self, r: &mut ChatResponse) -> Option<()> {
        let mut seen = Seen::default();
        self.object(|s, key| {
            match key {
                b"content" => {
                    seen.first(0)?;
                    s.opt_string(&mut r.content)?;
                }
                b"tool_calls" => {
                    seen.first(1)?;
                    if !s.null() {
                        s.array(|s, _| {
                            let call = s.tool_call()?;
                            r.tool_calls.push(call);
                            Some(())
                        })?;
                    }
                }
                _ => s.skip_value()?,
            }
            Some(())
        })
    }

    fn tool_call(&mut self) -> Option<ToolCall> {
        let mut call = ToolCall::default();
        let mut seen = Seen::default();
        self.object(|s, key| {
            match key {
                b"id" => {
                    seen.first(0)?;
                    s.opt_string(&mut call.id)?;
                }
                b"function" => {
                    seen.first(1)?;
                    if !s.null() {
                        let mut f = Seen::default();
                        s.object(|s, key| {
                            match key {
                                b"name" => {
                                    f.first(0)?;
                                    s.opt_string(&mut call.name)?;
                                }
                                b"arguments" => {
                                    f.first(1)?;
                                    s.opt_string(&mut call.arguments)?;
                                }
                                _ => s.skip_value()?,
                            }
                            Some(())
                        })?;
                    }
                }
                // A whole answer's calls carry no index; leave any to the general parser.
                b"index" => return None,
                _ => s.skip_value()?,
            }
            Some(())
        })?;
        if call.arguments.is_empty() {
            call.arguments.push_str("{}");
        }
        Some(call)
    }

    fn usage(&mut self) -> Option<Usage> {
        let mut u = Usage::default();
        let mut seen = Seen::default();
        self.object(|s, key| {
            match key {
                b"prompt_tokens" => {
                    seen.first(0)?;
                    u.prompt_tokens = s.count()?;
                }
                b"completion_tokens" => {
                    seen.first(1)?;
                    u.completion_tokens = s.count()?;
                }
                b"prompt_tokens_details" => {
                    seen.first(2)?;
                    if !s.null() {
                        u.cached_tokens = s.detail(b"cached_tokens")?;
                    }
                }
                b"completion_tokens_details" => {
                    seen.first(3)?;
                    if !s.null() {
                        u.reasoning_tokens = s.detail(b"reasoning_tokens")?;
                    }
                }
                _ => s.skip_value()?,
            }
            Some(())
        })?;
        Some(u)
    }

    /// A details object: the count under `name` (0 when absent), the rest skipped.
    fn detail(&mut self, name: &[u8]) -> Option<u64> {
        let mut n = 0;
        let mut seen = Seen::default();
        self.object(|s, key| {
            if key == name {
                seen.first(0)?;
                n = s.count()?;
                Some(())
            } else {
                s.skip_value()
            }
        })?;
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::openai::parse_response_general;

    const PLAIN: &str = r#"{"id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "bench", "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "pong"}}], "usage": {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12}}"#;
    const TOOL: &str = r#"{"id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "bench", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null, "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "step", "arguments": "{\"n\": 0}"}}]}}], "usage": {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12}}"#;
    const LLAMA: &str = r#"{"choices":[{"finish_reason":"tool_calls","index":0,"message":{"role":"assistant","content":"","tool_calls":[{"type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"},"id":"Xy12"},{"type":"function","function":{"name":"get_time","arguments":""},"id":"Zz9"}]}}],"created":1764000000,"model":"qwen2.5-1.5b","system_fingerprint":"b1-abc","object":"chat.completion","usage":{"completion_tokens":31,"prompt_tokens":250,"total_tokens":281,"prompt_tokens_details":{"cached_tokens":200},"completion_tokens_details":{"reasoning_tokens":3}},"id":"chatcmpl-1","timings":{"prompt_n":50,"prompt_ms":12.5,"predicted_per_second":1.5e2,"x":[true,false,null,-0.5E-3,{"a":[]}]}}"#;
    const ESCAPES: &str = r#"{"model":"m\u00e9","choices":[{"message":{"content":"line\nnext \"q\" \\ \/ \b\f\r\t \u263A \ud83d\ude00 caf\u00e9 é"}},{"message":{"content":"second choice ignored"}}]}"#;

    /// Fast-path answers must equal the general parser's, on every input.
    fn agree(text: &str) -> bool {
        match scan_response(text) {
            Some(fast) => {
                let general = parse_response_general(text.as_bytes()).unwrap_or_else(|e| {
                    panic!("fast path took what the parser rejects ({e}): {text}")
                });
                assert_eq!(fast, general, "{text}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn the_usual_shapes_take_the_fast_path_and_agree() {
        for text in [PLAIN, TOOL, LLAMA, ESCAPES] {
            assert!(agree(text), "fast path declined: {text}");
        }
        let r = scan_response(LLAMA).unwrap();
        assert_eq!(r.tool_calls.len(), 2);
        assert_eq!(r.tool_calls[1].arguments, "{}");
        assert_eq!(r.usage.cached_tokens, 200);
        assert_eq!(r.usage.reasoning_tokens, 3);
        assert_eq!(
            scan_response(ESCAPES)
                .unwrap()
                .content
                .chars()
                .filter(|c| *c == '😀')
                .count(),
            1
        );
        // No finish reason: "stop"; no usage: zero.
        let bare = r#"{"choices":[{"message":{"content":"x"}}]}"#;
        assert!(agree(bare));
        assert_eq!(scan_response(bare).unwrap().finish_reason, "stop");
    }

    #[test]
    fn anything_unusual_is_left_to_the_general_parser() {
        for text in [
            r#"{"error":{"message":"nope"}}"#,
            r#"{"choices":[]}"#,
            r#"{"choices":null}"#,
            r#"{"model":"a","model":"b","choices":[{"message":{"content":"x"}}]}"#,
            r#"{"choices":[{"message":{"content":[{"type":"text","text":"x"}]}}]}"#,
            r#"{"choices":[{"message":{"tool_calls":[{"id":"a","function":{"name":"f","arguments":{"x":1}}}]}}]}"#,
            r#"{"choices":[{"message":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f"}}]}}]}"#,
            r#"{"choices":[{"delta":{"content":"x"}}]}"#,
            r#"{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":1.5}}"#,
            r#"{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":"7"}}"#,
            r#"{"ch\u006fices":[{"message":{"content":"x"}}]}"#,
            r#"{"choices":[{"message":{"content":"\ud800"}}]}"#,
            r#"{"choices":[{"message":{"content":"x"}}]} trailing"#,
            r#"{"choices":[{"message":{"content":"x"}}],"created":01}"#,
            r#"{"choices":[{"message":{"content":"x"}}],"created":-}"#,
            r#"{"choices":[{"message":{"content":"x"}}],"t":tru}"#,
            r#"{"choices":[{"message":{"content":"x"}}],}"#,
            r#"{"choices":[{"message":{"content":"tab	inside"}}]}"#,
            r#"[1,2]"#,
            "",
        ] {
            assert!(scan_response(text).is_none(), "fast path took: {text}");
        }
        let deep = format!(
            r#"{{"choices":[{{"message":{{"content":"x"}}}}],"x":{}1{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(scan_response(&deep).is_none());
    }

    #[test]
    fn mutated_answers_never_make_the_paths_disagree() {
        // Byte-level mutations of real shapes: whenever the fast path accepts a mutant, the
        // general parser must accept it too, with the same result.
        let alphabet = b"{}[]\":,\\ 0123456789.eE-+tfnulrsaxu\n";
        let mut accepted = 0;
        for text in
            crate::model::json_scan::mutants(&[PLAIN, TOOL, LLAMA, ESCAPES], 3000, 3, alphabet)
        {
            accepted += agree(&text) as u32;
        }
        // Many mutants stay valid (in skipped values, in text): the comparison was exercised.
        assert!(accepted > 1000, "{accepted}");
    }
}
