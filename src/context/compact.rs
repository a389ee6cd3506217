//! Building the context a model call sends: the agent's full history, shaped by its policies.
//!
//! The stored history is never changed: compaction only shapes the view sent to the model, so
//! nothing is lost and the `recall` tool can always bring back a masked or cut tool result.
//! The view is a pure function of the history and the policies, so the prompt prefix stays
//! stable from one turn to the next (a result is masked once, when it ages out; old turns are
//! dropped in large steps, only when the budget demands it), which keeps provider prompt caches
//! warm.

use super::digest;
use super::policy::ContextPolicy;
use super::tokens::message_tokens;
use crate::model::types::{ChatMessage, Role};
use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

/// What compaction did to one view.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ViewStats {
    /// Estimated tokens of the full history (messages only).
    pub tokens_full: u64,
    /// Estimated tokens of the view (messages only).
    pub tokens_sent: u64,
    /// Tool results replaced by a placeholder.
    pub masked: usize,
    /// Tool results cut to head and tail.
    pub truncated: usize,
    /// Tool results replaced by a reference to an identical earlier one.
    pub deduped: usize,
    /// Tool results re-serialized without JSON whitespace.
    pub minified: usize,
    /// Messages dropped by the sliding window.
    pub dropped: usize,
    /// Whether a summary of dropped messages was added.
    pub summarized: bool,
}

/// The messages to send and what it took to get them.
#[derive(Clone, Debug, Default)]
pub struct View<'a> {
    /// The messages: borrowed from the history where the view leaves them as they are.
    pub messages: Vec<Cow<'a, ChatMessage>>,
    /// Statistics.
    pub stats: ViewStats,
}

fn char_prefix(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn char_suffix(s: &str, n: usize) -> &str {
    let count = s.chars().count();
    if count <= n {
        return s;
    }
    match s.char_indices().nth(count - n) {
        Some((i, _)) => &s[i..],
        None => s,
    }
}

fn minify(s: &str) -> Option<String> {
    let t = s.trim_start();
    if !(t.starts_with('{') || t.starts_with('[')) || !s.contains(['\n', ' ']) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(s).ok()?;
    let out = serde_json::to_string(&v).ok()?;
    (out.len() < s.len()).then_some(out)
}

/// The tool outputs a view has seen, by a hash of their text: the first (position, id)
/// with each hash. A handful (most views) are kept in a list, searched in order; past that,
/// in a map keyed by the hash itself.
#[derive(Default)]
struct SeenOutputs<'a> {
    few: Vec<(u64, (usize, &'a str))>,
    many: HashMap<u64, (usize, &'a str), BuildHasherDefault<HashIsKey>>,
}

impl<'a> SeenOutputs<'a> {
    /// Past this many outputs, the map.
    const FEW: usize = 16;

    fn get(&self, hash: u64) -> Option<(usize, &'a str)> {
        if self.many.is_empty() {
            self.few.iter().find(|(h, _)| *h == hash).map(|(_, v)| *v)
        } else {
            self.many.get(&hash).copied()
        }
    }

    /// Remembers `first` under `hash` unless the hash is known.
    fn insert_first(&mut self, hash: u64, first: (usize, &'a str)) {
        if !self.many.is_empty() {
            self.many.entry(hash).or_insert(first);
        } else if self.get(hash).is_none() {
            if self.few.len() < Self::FEW {
                self.few.push((hash, first));
            } else {
                self.many.extend(self.few.drain(..));
                self.many.insert(hash, first);
            }
        }
    }
}

fn digest_line(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!("\nKey items (verbatim): {}", items.join(" | "))
    }
}

/// What building a view computes per message that the next step can reuse (the history only
/// grows, so it stays valid): minified JSON and extracted digests. Kept by each agent, so a step
/// costs work for its new messages, not for the whole conversation.
#[derive(Clone, Debug, Default)]
pub struct ViewCache {
    msgs: Vec<MsgCache>,
    tokens: super::tokens::MessageTokens,
}

impl ViewCache {
    /// [`build_view`] of `history`, reusing what earlier calls computed for its messages (token
    /// counts, minified JSON, digests, rewritten contents): `history` must be the same
    /// conversation from call to call, grown by appending.
    pub fn view<'a>(
        &mut self,
        history: &'a [ChatMessage],
        policy: &ContextPolicy,
        limit: u64,
        level: u32,
    ) -> View<'a> {
        let counts = self.tokens.sync(history);
        build_view_counted(history, counts, Some(&mut self.msgs), policy, limit, level)
    }

    /// Forgets what was computed for the messages from index `len` on: the history was cut
    /// back to `len` messages and will grow with different ones.
    pub fn truncate(&mut self, len: usize) {
        self.msgs.truncate(len);
        self.tokens.truncate(len);
    }
}

#[derive(Clone, Debug, Default)]
struct MsgCache {
    /// The content's length when cached (a message that changed starts over).
    len: usize,
    /// The minified content (when minifying shortens it), and its length in characters.
    minified: Option<Option<(std::sync::Arc<str>, usize)>>,
    /// The content's length in characters.
    chars: Option<usize>,
    /// A hash of the content.
    hash: Option<u64>,
    /// Rewritten contents (masked or cut) by what produced them, with their estimated tokens.
    rewritten: Vec<(RewriteKey, std::sync::Arc<str>, u64)>,
    /// (what, max items, start, end) of the text digested, and the items.
    digests: Vec<(DigestKey, Vec<String>)>,
}

/// What was digested: (what, max items, start, end).
type DigestKey = (u8, usize, usize, usize);
/// What rewrote a message: (masked or cut, with digests, max items, the policy's numbers).
type RewriteKey = (u8, bool, usize, [usize; 3]);

/// A digest of the whole content (masking, summaries).
const WHOLE: u8 = 0;
/// A digest of a cut middle (tool outputs) of the raw text.
const MIDDLE_RAW: u8 = 1;
/// A digest of a cut middle of the minified text.
const MIDDLE_MINIFIED: u8 = 2;
/// A digest of the content and the tool-call arguments (summaries of dropped turns).
const WITH_CALLS: u8 = 3;

/// Optional access to a [`ViewCache`]'s per-message entries: computes directly without them.
struct Memo<'c>(Option<&'c mut Vec<MsgCache>>);

impl Memo<'_> {
    fn slot(&mut self, i: usize, content: &str) -> Option<&mut MsgCache> {
        let msgs = self.0.as_deref_mut()?;
        if msgs.len() <= i {
            msgs.resize_with(i + 1, MsgCache::default);
        }
        let slot = &mut msgs[i];
        if slot.len != content.len() {
            *slot = MsgCache {
                len: content.len(),
                ..Default::default()
            };
        }
        Some(slot)
    }

    /// The minified form of message `i`'s content, if minifying shortens it, with its length
    /// in characters.
    fn minify(&mut self, i: usize, content: &str) -> Option<(std::sync::Arc<str>, usize)> {
        let make = || {
            minify(content).map(|m| {
                let n = m.chars().count();
                (std::sync::Arc::<str>::from(m), n)
            })
        };
        match self.slot(i, content) {
            Some(slot) => slot.minified.get_or_insert_with(make).clone(),
            None => make(),
        }
    }

    /// Message `i`'s content as `make` rewrites it (for `key`), with its estimated tokens.
    fn rewrite(
        &mut self,
        i: usize,
        content: &str,
        key: RewriteKey,
        make: impl FnOnce(&mut Self) -> String,
    ) -> (std::sync::Arc<str>, u64) {
        if let Some(slot) = self.slot(i, content) {
            if let Some((_, text, tokens)) = slot.rewritten.iter().find(|(k, _, _)| *k == key) {
                return (text.clone(), *tokens);
            }
        }
        let text: std::sync::Arc<str> = make(self).into();
        let tokens = super::tokens::estimate(&text);
        if let Some(slot) = self.slot(i, content) {
            slot.rewritten.push((key, text.clone(), tokens));
        }
        (text, tokens)
    }

    /// A hash of message `i`'s content.
    fn hash(&mut self, i: usize, content: &str) -> u64 {
        let make = || {
            use std::hash::{BuildHasher, BuildHasherDefault};
            BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .hash_one(content)
        };
        match self.slot(i, content) {
            Some(slot) => *slot.hash.get_or_insert_with(make),
            None => make(),
        }
    }

    /// Message `i`'s content length in characters.
    fn chars(&mut self, i: usize, content: &str) -> usize {
        match self.slot(i, content) {
            Some(slot) => *slot.chars.get_or_insert_with(|| content.chars().count()),
            None => content.chars().count(),
        }
    }

    /// The digest items of `text[start..end]` for message `i`, where `text` is its content
    /// (`what` = WHOLE or MIDDLE_RAW) or its minified content (MIDDLE_MINIFIED).
    #[allow(clippy::too_many_arguments)]
    fn extract(
        &mut self,
        i: usize,
        content: &str,
        what: u8,
        text: &str,
        start: usize,
        end: usize,
        max_items: usize,
    ) -> Vec<String> {
        let key = (what, max_items, start, end);
        match self.slot(i, content) {
            Some(slot) => {
                if let Some((_, items)) = slot.digests.iter().find(|(k, _)| *k == key) {
                    return items.clone();
                }
                let items = digest::extract(&text[start..end], max_items);
                slot.digests.push((key, items.clone()));
                items
            }
            None => digest::extract(&text[start..end], max_items),
        }
    }

    /// The digest items of message `i`'s content and tool-call arguments, as `make_text`
    /// joins them (built only when not cached).
    fn extract_with(
        &mut self,
        i: usize,
        content: &str,
        max_items: usize,
        make_text: impl FnOnce() -> String,
    ) -> Vec<String> {
        let key = (WITH_CALLS, max_items, 0, 0);
        match self.slot(i, content) {
            Some(slot) => {
                if let Some((_, items)) = slot.digests.iter().find(|(k, _)| *k == key) {
                    return items.clone();
                }
                let items = digest::extract(&make_text(), max_items);
                slot.digests.push((key, items.clone()));
                items
            }
            None => digest::extract(&make_text(), max_items),
        }
    }
}

/// Builds the view of `history` to send, under `limit` tokens for messages (the window minus
/// the output reserve and the tool definitions). `level` raises aggressiveness after a
/// provider reported an overflow (or a forced compaction): 1 masks every tool result (recent
/// ones too; they stay recallable), 2 also drops old turns down to half the target. With the
/// budget on, a view still over `limit` is rebuilt at the next level.
pub fn build_view<'a>(
    history: &'a [ChatMessage],
    policy: &ContextPolicy,
    limit: u64,
    level: u32,
) -> View<'a> {
    let counts: Vec<u64> = history.iter().map(message_tokens).collect();
    build_view_counted(history, &counts, None, policy, limit, level)
}

/// [`build_view`] with the messages' token counts known (`counts[i]` for `history[i]`) and,
/// with `cache`, per-message results of earlier views to reuse.
fn build_view_counted<'a>(
    history: &'a [ChatMessage],
    counts: &[u64],
    mut cache: Option<&mut Vec<MsgCache>>,
    policy: &ContextPolicy,
    limit: u64,
    level: u32,
) -> View<'a> {
    debug_assert_eq!(history.len(), counts.len());
    let mut level = level.min(3);
    loop {
        let memo = Memo(cache.as_deref_mut());
        let v = build_view_at(history, counts, memo, policy, limit, level);
        if !policy.budget.enabled || v.stats.tokens_sent <= limit || level >= 3 {
            return v;
        }
        level += 1;
    }
}

/// The tool whose call `id` the result at `at` answers: the nearest earlier assistant message
/// with that call (results follow their call, so this is a short walk back).
fn tool_name<'h>(history: &'h [ChatMessage], at: usize, id: &str) -> &'h str {
    history[..at]
        .iter()
        .rev()
        .flat_map(|m| m.tool_calls.iter())
        .find(|c| c.id == id)
        .map_or("tool", |c| c.name.as_str())
}

/// A hasher for keys that are hashes already: passes the `u64` through.
#[derive(Default)]
struct HashIsKey(u64);

impl std::hash::Hasher for HashIsKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used for u64 keys; fold anything else in.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

fn build_view_at<'a>(
    history: &'a [ChatMessage],
    counts: &[u64],
    mut memo: Memo<'_>,
    policy: &ContextPolicy,
    limit: u64,
    level: u32,
) -> View<'a> {
    let mut stats = ViewStats::default();
    // Digests shrink as pressure rises: all of them at level 0, a half at 1, a quarter at 2,
    // none at 3 (keys stay, so everything remains recallable).
    let max_items = if level >= 3 {
        0
    } else {
        policy.summaries.max_items >> level
    };
    let summaries = policy.summaries.enabled && max_items > 0;
    // The most recent tool results (the last `keep_recent`) start at `recent_start`.
    let keep_recent = if level >= 1 {
        0
    } else {
        policy.masking.keep_recent
    };
    let recent_start = if keep_recent == 0 {
        usize::MAX
    } else {
        history
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, m)| m.role == Role::Tool)
            .take(keep_recent)
            .last()
            .map_or(usize::MAX, |(i, _)| i)
    };

    // Tool outputs seen so far, by a hash of their text (cached per message): the first
    // (position, id) with that hash. The key is already a hash: it is used as is.
    let mut seen_outputs = SeenOutputs::default();
    let mut out: Vec<Cow<'a, ChatMessage>> = Vec::with_capacity(history.len());
    // The token count of each message of `out`.
    let mut out_tokens: Vec<u64> = Vec::with_capacity(history.len());
    for (i, m) in history.iter().enumerate() {
        let count = counts.get(i).copied().unwrap_or_else(|| message_tokens(m));
        stats.tokens_full += count;
        if m.role != Role::Tool {
            out.push(Cow::Borrowed(m));
            out_tokens.push(count);
            continue;
        }
        let id = m.tool_call_id.as_deref().unwrap_or("");
        // The rewritten content, with its estimated tokens when known.
        let mut content: Option<(std::sync::Arc<str>, Option<u64>)> = None;
        let to = &policy.tool_outputs;
        if to.enabled && to.dedupe {
            let hash = memo.hash(i, &m.content);
            let same = seen_outputs
                .get(hash)
                .filter(|(j, _)| history[*j].content == m.content);
            if let Some((_, first)) = same {
                content = Some((
                    format!("[identical to the result of call {first}]").into(),
                    None,
                ));
                stats.deduped += 1;
            }
            // (Two different texts with one hash: only the first is remembered, so the
            // second is never deduplicated; a missed saving, never a wrong one.)
            seen_outputs.insert_first(hash, (i, id));
        }
        let mask = policy.masking.enabled
            && i < recent_start
            && content.is_none()
            && m.content.len() >= policy.masking.min_chars // a cheap bound first
            && memo.chars(i, &m.content) >= policy.masking.min_chars;
        if mask {
            let key = (0, summaries, max_items, [0; 3]);
            let (text, tokens) = memo.rewrite(i, &m.content, key, |memo| {
                let tool = tool_name(history, i, id);
                let digest = if summaries {
                    let c = &m.content;
                    digest_line(&memo.extract(i, c, WHOLE, c, 0, c.len(), max_items))
                } else {
                    String::new()
                };
                format!(
                    "[result of {tool} masked to save context ({} chars); key: {id}; call recall with this key for the full text]{digest}",
                    memo.chars(i, &m.content)
                )
            });
            content = Some((text, Some(tokens)));
            stats.masked += 1;
        }
        if content.is_none() && to.enabled {
            // Only a message that changes is copied: minified, or cut to head and tail.
            let minified = if to.minify_json {
                memo.minify(i, &m.content)
            } else {
                None
            };
            if minified.is_some() {
                stats.minified += 1;
            }
            let (text, n): (&str, usize) = match &minified {
                Some((min, n)) => (min, *n),
                None => (&m.content, memo.chars(i, &m.content)),
            };
            if n > to.max_chars && to.head + to.tail < n {
                let minified_flag = u8::from(minified.is_some());
                let key = (
                    1 + minified_flag,
                    summaries,
                    max_items,
                    [to.max_chars, to.head, to.tail],
                );
                let (cut, tokens) = memo.rewrite(i, &m.content, key, |memo| {
                    let head = char_prefix(text, to.head);
                    let tail = char_suffix(text, to.tail);
                    let (start, end) = (head.len(), text.len() - tail.len());
                    let digest = if summaries {
                        let what = if minified_flag == 1 {
                            MIDDLE_MINIFIED
                        } else {
                            MIDDLE_RAW
                        };
                        let items = memo.extract(i, &m.content, what, text, start, end, max_items);
                        digest_line(&items)
                    } else {
                        String::new()
                    };
                    format!(
                        "{head}\n[... {} chars omitted; key: {id}; call recall with this key for the full text{digest} ...]\n{tail}",
                        n - to.head - to.tail
                    )
                });
                content = Some((cut, Some(tokens)));
                stats.truncated += 1;
            } else if let Some((min, _)) = &minified {
                content = Some((min.clone(), None));
            }
        }
        match content {
            Some((text, tokens)) => {
                // Not m.clone(): that would copy the (long) text being replaced.
                let msg = ChatMessage {
                    role: m.role,
                    content: text.to_string(),
                    tool_calls: m.tool_calls.clone(),
                    tool_call_id: m.tool_call_id.clone(),
                };
                out_tokens.push(match tokens {
                    // A tool result has no tool calls: its count is the overhead plus its text.
                    Some(t) if msg.tool_calls.is_empty() => super::tokens::MESSAGE_OVERHEAD + t,
                    _ => message_tokens(&msg),
                });
                out.push(Cow::Owned(msg));
            }
            None => {
                out.push(Cow::Borrowed(m));
                out_tokens.push(count);
            }
        }
    }

    let mut tokens: u64 = out_tokens.iter().sum();
    let over = policy.budget.enabled && tokens as f64 > policy.budget.trigger * limit as f64;
    if policy.window.enabled && (over || level >= 2) {
        let target = if level >= 2 {
            policy.window.target / 2.0
        } else {
            policy.window.target
        };
        // At the last level every droppable turn goes: its digest then lives in the summary,
        // which keeps as many items as fit (oldest first).
        let goal = if level >= 3 {
            0
        } else {
            (target * limit as f64) as u64
        };
        // Protect the system prompt(s) and the first user message.
        let mut start = out.iter().take_while(|m| m.role == Role::System).count();
        if out.get(start).is_some_and(|m| m.role == Role::User) {
            start += 1;
        }
        // Groups: an assistant message with tool calls plus its results; any other message alone.
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut i = start;
        while i < out.len() {
            let mut j = i + 1;
            if !out[i].tool_calls.is_empty() {
                while j < out.len() && out[j].role == Role::Tool {
                    j += 1;
                }
            }
            groups.push((i, j));
            i = j;
        }
        // Never drop the last two groups (the current question and the latest step).
        let droppable = groups.len().saturating_sub(2);
        let mut drop_to = start;
        let mut dropped_tokens = 0u64;
        for &(a, b) in groups.iter().take(droppable) {
            if tokens - dropped_tokens <= goal {
                break;
            }
            dropped_tokens += out_tokens[a..b].iter().sum::<u64>();
            drop_to = b;
        }
        if drop_to > start {
            let dropped = out.drain(start..drop_to).count();
            out_tokens.drain(start..drop_to);
            stats.dropped = dropped;
            // The digest is taken from the stored history, not the masked view, so identifiers
            // from masked results survive too.
            let originals = &history[start..drop_to];
            let mut summary = format!(
                "[Summary of {} earlier messages, removed to fit the context window. Tool results can be recalled by key.]",
                dropped
            );
            if policy.summaries.enabled {
                // One digest per dropped message, de-duplicated. Under the last-resort level
                // (digests elsewhere dropped) the summary keeps as many items as still fit.
                let per_message = policy.summaries.max_items;
                let mut seen = std::collections::HashSet::new();
                let mut items = Vec::new();
                for (k, m) in originals.iter().enumerate() {
                    let found = memo.extract_with(start + k, &m.content, per_message, || {
                        let mut text = m.content.clone();
                        for c in &m.tool_calls {
                            text.push('\n');
                            text.push_str(&c.arguments);
                        }
                        text
                    });
                    for it in found {
                        if seen.insert(it.clone()) {
                            items.push(it);
                        }
                    }
                }
                let keys: Vec<&str> = originals
                    .iter()
                    .filter_map(|m| m.tool_call_id.as_deref())
                    .collect();
                let rest: u64 = out_tokens.iter().sum();
                let mut room = if summaries {
                    u64::MAX
                } else {
                    (limit as f64 * 0.98) as u64
                }
                .saturating_sub(rest)
                .saturating_sub(
                    super::tokens::estimate(&summary)
                        + super::tokens::estimate(&keys.join(", "))
                        + 16,
                );
                let mut kept = Vec::new();
                for it in &items {
                    let cost = super::tokens::estimate(it) + 1;
                    if cost > room {
                        break;
                    }
                    room -= cost;
                    kept.push(it.as_str());
                }
                if !kept.is_empty() {
                    summary.push_str(&format!("\nKey items (verbatim): {}", kept.join(" | ")));
                }
                if !keys.is_empty() {
                    summary.push_str(&format!("\nRecallable keys: {}", keys.join(", ")));
                }
                stats.summarized = true;
            }
            let summary = ChatMessage::text(Role::User, summary);
            out_tokens.insert(start, message_tokens(&summary));
            out.insert(start, Cow::Owned(summary));
            tokens = out_tokens.iter().sum();
        }
    }
    stats.tokens_sent = tokens;
    View {
        messages: out,
        stats,
    }
}

/// Whether a provider error means the prompt did not fit the context window.
pub fn is_context_overflow(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "exceed_context_size",
        "context_length_exceeded",
        "maximum context length",
        "prompt is too long",
        "context window",
        "too many tokens",
        "exceeds the available context size",
    ]
    .iter()
    .any(|n| m.contains(n))
}

/// Finds the full text of a tool result by its key (the tool call id).
pub fn recall<'a>(history: &'a [ChatMessage], key: &str) -> Option<&'a str> {
    history
        .iter()
        .find(|m| m.role == Role::Tool && m.tool_call_id.as_deref() == Some(key))
        .map(|m| m.content.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::types::ToolCall;

    fn call(id: &str) -> ChatMessage {
        let mut m = ChatMessage::text(Role::Assistant, "");
        m.tool_calls.push(ToolCall {
            id: id.into(),
            name: "fetch".into(),
            arguments: "{}".into(),
        });
        m
    }

    fn result(id: &str, text: &str) -> ChatMessage {
        let mut m = ChatMessage::text(Role::Tool, text);
        m.tool_call_id = Some(id.into());
        m
    }

    fn history(n: usize) -> Vec<ChatMessage> {
        let mut h = vec![
            ChatMessage::text(Role::System, "sys"),
            ChatMessage::text(Role::User, "first question"),
        ];
        for i in 0..n {
            h.push(call(&format!("c{i}")));
            let big = format!(
                "{{\n  \"id\": \"ORD-{i:05}-X\",\n  \"rows\": [{}]\n}}",
                "1, ".repeat(400) + "1"
            );
            h.push(result(&format!("c{i}"), &big));
            h.push(ChatMessage::text(Role::Assistant, format!("noted {i}")));
        }
        h.push(ChatMessage::text(Role::User, "last question"));
        h
    }

    #[test]
    fn off_sends_everything_verbatim() {
        let h = history(5);
        let v = build_view(&h, &ContextPolicy::off(), 1_000, 0);
        assert!(v.messages.iter().map(|m| &**m).eq(h.iter()));
        assert_eq!(v.stats.tokens_full, v.stats.tokens_sent);
    }

    #[test]
    fn masking_keeps_recent_results_and_digests_old_ones() {
        let h = history(6);
        let mut p = ContextPolicy::off();
        p.masking.enabled = true;
        p.masking.keep_recent = 2;
        p.masking.min_chars = 100;
        p.summaries.enabled = true;
        let v = build_view(&h, &p, 1_000_000, 0);
        assert_eq!(v.stats.masked, 4);
        let masked = &v.messages[3];
        assert!(masked.content.contains("key: c0"), "{}", masked.content);
        assert!(
            masked.content.contains("ORD-00000-X"),
            "identifier kept verbatim"
        );
        assert_eq!(
            v.messages[h.len() - 3].content,
            h[h.len() - 3].content,
            "recent kept whole"
        );
        assert!(v.stats.tokens_sent * 2 < v.stats.tokens_full);
        assert_eq!(recall(&h, "c0"), Some(h[3].content.as_str()));
    }

    #[test]
    fn tool_outputs_minify_dedupe_and_truncate() {
        let mut h = history(2);
        let dup = h[3].content.clone();
        h.push(call("dup"));
        h.push(result("dup", &dup));
        let mut p = ContextPolicy::off();
        p.tool_outputs.enabled = true;
        p.tool_outputs.max_chars = 300;
        p.tool_outputs.head = 100;
        p.tool_outputs.tail = 100;
        let v = build_view(&h, &p, 1_000_000, 0);
        assert!(v.stats.minified >= 1 && v.stats.deduped == 1 && v.stats.truncated >= 1);
        assert_eq!(
            v.messages.last().unwrap().content,
            "[identical to the result of call c0]"
        );
        assert!(v.messages[3].content.contains("chars omitted; key: c0"));
        assert!(
            !v.messages[3].content.contains("\n  \""),
            "pretty JSON minified"
        );
    }

    /// Duplicates are found whether the view has seen a few outputs (a list) or many (a map).
    #[test]
    fn dedupe_finds_repeats_among_few_and_many_outputs() {
        for n in [3, 16, 17, 40] {
            let mut h = history(n);
            // Each output distinct, then two repeats: of the first and of the last.
            let (first, last) = (h[3].content.clone(), h[h.len() - 3].content.clone());
            h.push(call("again0"));
            h.push(result("again0", &first));
            h.push(call("again1"));
            h.push(result("again1", &last));
            let mut p = ContextPolicy::off();
            p.tool_outputs.enabled = true;
            let v = build_view(&h, &p, u64::MAX / 4, 0);
            assert_eq!(v.stats.deduped, 2, "{n} outputs");
            let k = v.messages.len();
            assert_eq!(
                v.messages[k - 3].content,
                "[identical to the result of call c0]"
            );
            assert_eq!(
                v.messages[k - 1].content,
                format!("[identical to the result of call c{}]", n - 1)
            );
        }
    }

    #[test]
    fn a_view_cache_kept_across_steps_gives_the_same_views() {
        let full = history(30);
        let mut p = ContextPolicy::default();
        p.tool_outputs.max_chars = 300;
        p.tool_outputs.head = 100;
        p.tool_outputs.tail = 80;
        let mut cache = ViewCache::default();
        // The conversation grows step by step; every level, several limits.
        for n in (3..full.len()).step_by(3) {
            let h = &full[..n];
            for level in 0..4 {
                for limit in [400, 2_000, 1_000_000] {
                    let plain = build_view(h, &p, limit, level);
                    let cached = cache.view(h, &p, limit, level);
                    assert_eq!(
                        cached.messages, plain.messages,
                        "n={n} level={level} limit={limit}"
                    );
                    assert_eq!(cached.stats.tokens_sent, plain.stats.tokens_sent);
                    assert_eq!(cached.stats.masked, plain.stats.masked);
                    assert_eq!(cached.stats.dropped, plain.stats.dropped);
                }
            }
        }
        assert!(!cache.msgs.is_empty(), "the cache was used");
    }

    #[test]
    fn window_never_splits_calls_from_results_and_keeps_system_and_first_user() {
        let h = history(20);
        let mut p = ContextPolicy::off();
        p.budget.enabled = true;
        p.window.enabled = true;
        p.summaries.enabled = true;
        let full: u64 = h.iter().map(message_tokens).sum();
        let v = build_view(&h, &p, full / 4, 0);
        assert!(v.stats.dropped > 0 && v.stats.summarized);
        // With cached counts the view is the same.
        let cached = ViewCache::default().view(&h, &p, full / 4, 0);
        assert_eq!(cached.messages, v.messages);
        assert_eq!(cached.stats.tokens_sent, v.stats.tokens_sent);
        assert_eq!(cached.stats.tokens_full, v.stats.tokens_full);
        assert_eq!(v.messages[0].content, "sys");
        assert_eq!(v.messages[1].content, "first question");
        assert!(v.messages[2].content.starts_with("[Summary of"));
        assert!(
            v.messages[2].content.contains("ORD-00000-X"),
            "dropped identifiers survive in the summary"
        );
        assert_eq!(v.messages.last().unwrap().content, "last question");
        for (i, m) in v.messages.iter().enumerate() {
            if m.role == Role::Tool {
                let prev = &v.messages[i - 1];
                assert!(
                    prev.role == Role::Tool || !prev.tool_calls.is_empty(),
                    "a result lost its call at {i}"
                );
            }
            if !m.tool_calls.is_empty() {
                assert_eq!(
                    v.messages[i + 1].role,
                    Role::Tool,
                    "a call lost its result at {i}"
                );
            }
        }
        assert!(v.stats.tokens_sent <= (full as f64 / 4.0 * 0.6) as u64 + 2_000);
        // Level 2 (after an overflow) goes further.
        let v2 = build_view(&h, &p, full / 4, 2);
        assert!(v2.stats.tokens_sent < v.stats.tokens_sent);
    }

    #[test]
    fn overflow_errors_are_recognised() {
        assert!(is_context_overflow("endpoint \"x\": HTTP 400: exceed_context_size_error: request (5030 tokens) exceeds the available context size (4096 tokens)"));
        assert!(is_context_overflow(
            "invalid_request_error: This model's maximum context length is 128000 tokens"
        ));
        assert!(is_context_overflow(
            "prompt is too long: 210000 tokens > 200000 maximum"
        ));
        assert!(!is_context_overflow("rate limited"));
    }
}
