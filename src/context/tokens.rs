//! Token counting.
//!
//! Without exact encodings (the default build), counts are estimated from the text's shape:
//! runs of letters cost about one token per four characters, runs of digits one per three,
//! each punctuation mark one, whitespace nothing beyond the first space of a run, and every
//! message a fixed overhead. A [`Calibration`] then scales estimates by what a provider actually
//! reported (`prompt_tokens`), so the estimate converges on the real tokenizer of the model in
//! use. Counts are cached per message.

use crate::model::types::{ChatMessage, ToolSpec};
use std::sync::atomic::{AtomicU64, Ordering};

/// Tokens every message costs beyond its content (role and separators).
pub const MESSAGE_OVERHEAD: u64 = 4;

/// Estimates the tokens of a text.
pub fn estimate(text: &str) -> u64 {
    // Most texts (JSON, code, English) are ASCII: classified by table, byte by byte.
    if text.is_ascii() {
        count_runs(text.bytes().map(|b| ASCII_CLASS[b as usize]))
    } else {
        count_runs(text.chars().map(classify))
    }
}

/// What a character contributes: runs of letters, digits and spaces are counted by length;
/// punctuation and non-ASCII letters are a token each.
#[derive(PartialEq, Clone, Copy)]
enum Class {
    Alpha,
    Digit,
    Space,
    Other,
    /// A non-ASCII letter (these tokenize about one per character).
    Wide,
}

fn classify(c: char) -> Class {
    if c.is_alphabetic() {
        if c.is_ascii() {
            Class::Alpha
        } else {
            Class::Wide
        }
    } else if c.is_ascii_digit() {
        Class::Digit
    } else if c.is_whitespace() {
        Class::Space
    } else {
        Class::Other
    }
}

/// [`classify`] for every ASCII byte.
static ASCII_CLASS: [Class; 128] = {
    let mut t = [Class::Other; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphabetic() {
            Class::Alpha
        } else if c.is_ascii_digit() {
            Class::Digit
        } else if matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
            Class::Space
        } else {
            Class::Other
        };
        b += 1;
    }
    t
};

fn count_runs(classes: impl Iterator<Item = Class>) -> u64 {
    let mut tokens = 0u64;
    let mut run = 0u64;
    let mut class = Class::Space;
    let flush = |class: Class, run: u64, tokens: &mut u64| match class {
        Class::Alpha => *tokens += run.div_ceil(4),
        Class::Digit => *tokens += run.div_ceil(3),
        Class::Space => *tokens += run.saturating_sub(1).div_ceil(4),
        Class::Other | Class::Wide => {}
    };
    for k in classes {
        if matches!(k, Class::Other | Class::Wide) {
            flush(class, run, &mut tokens);
            run = 0;
            class = Class::Space;
            tokens += 1;
            continue;
        }
        if k != class {
            flush(class, run, &mut tokens);
            run = 0;
            class = k;
        }
        run += 1;
    }
    flush(class, run, &mut tokens);
    tokens
}

/// The exact token count of `text` for an OpenAI-family `model` (o200k for gpt-4o, gpt-4.1,
/// o-series; cl100k for gpt-4 and gpt-3.5), when the library is built with the `exact-tokens`
/// feature; `None` otherwise, or for other models.
pub fn exact(model: &str, text: &str) -> Option<u64> {
    #[cfg(feature = "exact-tokens")]
    {
        let bpe = tiktoken_rs::bpe_for_model(model).ok()?;
        Some(bpe.encode_ordinary(text).len() as u64)
    }
    #[cfg(not(feature = "exact-tokens"))]
    {
        let _ = (model, text);
        None
    }
}

/// Exact tokens where available (see [`exact`]), else the estimate.
pub fn count(model: &str, text: &str) -> u64 {
    exact(model, text).unwrap_or_else(|| estimate(text))
}

/// Whether exact counting is compiled in.
pub const EXACT_AVAILABLE: bool = cfg!(feature = "exact-tokens");

/// Estimated tokens of one message, tool calls included.
pub fn message_tokens(m: &ChatMessage) -> u64 {
    let mut t = MESSAGE_OVERHEAD + estimate(&m.content);
    for c in &m.tool_calls {
        t += 3 + estimate(&c.name) + estimate(&c.arguments);
    }
    t
}

/// The token counts of a history's messages, each counted once: the cache behind "counts are
/// cached per message". Histories grow by appending, so a step counts only its new messages; a
/// message whose text changed size since it was counted is counted again.
#[derive(Clone, Debug, Default)]
pub struct MessageTokens {
    /// Per message: its count.
    counts: Vec<u64>,
    /// Per message: the shape it was counted at (content bytes, tool-call bytes), to notice a
    /// message that changed.
    shapes: Vec<(usize, usize)>,
}

fn shape(m: &ChatMessage) -> (usize, usize) {
    let calls = m
        .tool_calls
        .iter()
        .map(|c| c.name.len() + c.arguments.len() + 1)
        .sum();
    (m.content.len(), calls)
}

impl MessageTokens {
    /// Brings the cache in line with `history` and returns one count per message.
    pub fn sync(&mut self, history: &[ChatMessage]) -> &[u64] {
        self.counts.truncate(history.len());
        self.shapes.truncate(history.len());
        for (i, m) in history.iter().enumerate().take(self.counts.len()) {
            let s = shape(m);
            if self.shapes[i] != s {
                self.counts[i] = message_tokens(m);
                self.shapes[i] = s;
            }
        }
        for m in &history[self.counts.len()..] {
            self.counts.push(message_tokens(m));
            self.shapes.push(shape(m));
        }
        &self.counts
    }

    /// Forgets the counts from message `len` on (the history was cut back to `len`).
    pub fn truncate(&mut self, len: usize) {
        self.counts.truncate(len);
        self.shapes.truncate(len);
    }
}

/// Estimated tokens of the tool definitions sent with a request.
pub fn tools_tokens(tools: &[ToolSpec]) -> u64 {
    tools
        .iter()
        .map(|t| tool_tokens(t, schema_tokens(t.parameters())))
        .sum()
}

fn tool_tokens(t: &ToolSpec, schema: u64) -> u64 {
    8 + estimate(&t.name) + estimate(&t.description) + schema
}

fn schema_tokens(schema: &serde_json::Value) -> u64 {
    estimate(&schema.to_string())
}

/// [`tools_tokens`] with each tool definition estimated once: an agent offers the same tools
/// step after step, and serializing every schema at every step cost more than the rest of the
/// estimate. Definitions are recognised by identity (a [`ToolSpec`] is one shared `Arc`); the
/// cache keeps them alive, so an address is never reused while cached.
#[derive(Clone, Debug, Default)]
pub struct ToolTokens {
    tools: Vec<(ToolSpec, u64)>,
}

impl ToolTokens {
    /// Estimated tokens of `tools`' definitions.
    pub fn tools_tokens(&mut self, tools: &[ToolSpec]) -> u64 {
        // Tools come and go rarely; start over if the cache holds many no longer offered.
        if self.tools.len() > 2 * tools.len() + 16 {
            self.tools.clear();
        }
        let mut total = 0;
        for t in tools {
            let known = self
                .tools
                .iter()
                .find(|(c, _)| c.same_as(t))
                .map(|(_, n)| *n);
            total += known.unwrap_or_else(|| {
                let n = tool_tokens(t, schema_tokens(t.parameters()));
                self.tools.push((t.clone(), n));
                n
            });
        }
        total
    }
}

/// Learns how far estimates are from a provider's real counts.
#[derive(Debug)]
pub struct Calibration {
    /// The ratio real/estimated, in millionths (1_000_000 = estimates are right).
    ratio_micros: AtomicU64,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration {
            ratio_micros: AtomicU64::new(1_000_000),
        }
    }
}

impl Calibration {
    /// Folds in one observation: the estimate for a prompt and the provider's count for it.
    /// An exponential moving average, bounded to 0.25x..4x.
    pub fn observe(&self, estimated: u64, reported: u64) {
        if estimated == 0 || reported == 0 {
            return;
        }
        let sample = (reported as f64 / estimated as f64).clamp(0.25, 4.0);
        let old = self.ratio_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let new = old * 0.7 + sample * 0.3;
        self.ratio_micros
            .store((new * 1e6) as u64, Ordering::Relaxed);
    }

    /// The current ratio real/estimated.
    pub fn ratio(&self) -> f64 {
        self.ratio_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// An estimate corrected by what was learned.
    pub fn correct(&self, estimated: u64) -> u64 {
        (estimated as f64 * self.ratio()).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ascii_table_classifies_like_the_char_rules() {
        for b in 0u8..128 {
            assert!(ASCII_CLASS[b as usize] == classify(b as char), "byte {b}");
        }
        // And the two paths count the same.
        let text = "Hello, world!  42 tabs\tand\nlines {\"k\": [1, 2.5e3]} x";
        assert_eq!(estimate(text), count_runs(text.chars().map(classify)));
    }

    use crate::model::types::{Role, ToolCall};

    #[test]
    fn tool_definition_estimates_are_cached_by_identity() {
        let schema = std::sync::Arc::new(
            serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        );
        let t = |name: &str, p: &std::sync::Arc<serde_json::Value>| {
            ToolSpec::new(name, "looks things up", p.clone())
        };
        let tools = vec![t("a", &schema), t("b", &schema)];
        let mut cache = ToolTokens::default();
        assert_eq!(cache.tools_tokens(&tools), tools_tokens(&tools));
        assert_eq!(cache.tools_tokens(&tools), tools_tokens(&tools));
        assert_eq!(cache.tools.len(), 2, "each definition estimated once");
        // A definition made again (new name, description or schema) is a new entry, even if
        // equal to a cached one.
        let other = std::sync::Arc::new(serde_json::json!({"type": "object"}));
        let more = vec![tools[0].clone(), t("a", &schema), t("c", &other)];
        assert_eq!(cache.tools_tokens(&more), tools_tokens(&more));
        assert_eq!(cache.tools.len(), 4);
    }

    #[test]
    fn message_counts_are_cached_and_follow_the_history() {
        let mut h = vec![
            ChatMessage::text(Role::System, "be brief"),
            ChatMessage::text(Role::User, "what is 2+2?"),
        ];
        let mut cache = MessageTokens::default();
        let fresh = |h: &[ChatMessage]| h.iter().map(message_tokens).collect::<Vec<_>>();
        assert_eq!(cache.sync(&h), fresh(&h));
        let mut call = ChatMessage::text(Role::Assistant, "");
        call.tool_calls.push(ToolCall {
            id: "c1".into(),
            name: "calc".into(),
            arguments: r#"{"expr":"2+2"}"#.into(),
        });
        h.push(call);
        h.push(ChatMessage::text(Role::Tool, "4"));
        assert_eq!(cache.sync(&h), fresh(&h));
        // A message that changed is counted again; a shorter history drops its counts.
        h[1].content = "what is two plus two, in words, please?".into();
        h[2].tool_calls[0].arguments.push_str(", more arguments");
        assert_eq!(cache.sync(&h), fresh(&h));
        h.truncate(2);
        assert_eq!(cache.sync(&h), fresh(&h));
        assert_eq!(cache.counts.len(), 2);
    }

    #[test]
    fn estimates_have_the_right_shape() {
        assert_eq!(estimate(""), 0);
        assert_eq!(estimate("hello"), 2);
        assert_eq!(estimate("hello world"), 4);
        assert_eq!(estimate("12345"), 2);
        assert_eq!(estimate("{\"a\":1}"), 7);
        // English prose lands near the usual four characters per token.
        let prose = "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.";
        let t = estimate(prose);
        assert!((14..=24).contains(&t), "{t}");
    }

    #[test]
    #[cfg(feature = "exact-tokens")]
    fn exact_counts_match_the_reference_encodings() {
        // Reference counts from OpenAI's tiktoken.
        assert_eq!(exact("gpt-4", "hello world"), Some(2));
        assert_eq!(exact("gpt-4", "tiktoken is great!"), Some(6));
        assert_eq!(exact("gpt-4o", "hello world"), Some(2));
        assert_eq!(exact("qwen2.5", "hello world"), None, "not an OpenAI model");
        // The estimate stays within a reasonable band of the real count on prose.
        let prose = "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.";
        let real = exact("gpt-4o", prose).unwrap() as f64;
        let est = estimate(prose) as f64;
        assert!(
            (est / real - 1.0).abs() < 0.35,
            "estimate {est} vs exact {real}"
        );
    }

    #[test]
    fn count_falls_back_to_the_estimate() {
        assert_eq!(
            count("some-local-model", "hello world"),
            estimate("hello world")
        );
        assert_eq!(EXACT_AVAILABLE, exact("gpt-4", "x").is_some());
    }

    #[test]
    fn calibration_converges() {
        let c = Calibration::default();
        for _ in 0..30 {
            c.observe(100, 130);
        }
        assert!((c.ratio() - 1.3).abs() < 0.01, "{}", c.ratio());
        assert_eq!(c.correct(100), 130);
        c.observe(0, 5);
        assert!((c.ratio() - 1.3).abs() < 0.01);
    }
}
