//! The token optimizer, measured: replays long, tool-heavy conversations
//! (`benches/context_data/conversations.json`) through each context policy alone and through
//! the combined defaults, and prints the prompt tokens sent (against the policy-off baseline)
//! and retention: the share of needed facts still present, verbatim (in a message, a masked
//! result's digest or a summary) in the prompt of the call that needs them.
//!
//!   cargo bench --bench context_eval [-- WINDOW_TOKENS]
//!
//! Diagnostics: `EVAL_DEBUG=1` shows, for each lost fact, where it nearly survived and whether
//! the digest of the message that introduced it holds it; `DIGEST_STATS=1` prints, per
//! conversation, the tokens of tool outputs against the tokens of their digests.
//!
//! Every assistant message in a conversation is a model call; its prompt is everything before
//! it. Tokens are the library's estimates (the same for every policy, so ratios compare).

use agentos::context::compact::{build_view, ViewCache};
use agentos::context::policy::ContextPolicy;
use agentos::model::types::{ChatMessage, ChatRequest, Role};
use serde_json::Value;

struct Conversation {
    id: String,
    messages: Vec<ChatMessage>,
    facts: Vec<(String, usize, usize)>,
}

fn load() -> Vec<Conversation> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/context_data/conversations.json"
    );
    let text = std::fs::read_to_string(path).expect("benches/context_data/conversations.json");
    let v: Value = serde_json::from_str(&text).expect("valid JSON");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|c| {
            let req = ChatRequest::from_value(&serde_json::json!({"messages": c["messages"]}))
                .expect("messages");
            let facts = c["needed_facts"]
                .as_array()
                .expect("needed_facts")
                .iter()
                .map(|f| {
                    (
                        f["fact"].as_str().unwrap().to_string(),
                        f["introduced_at"].as_u64().unwrap() as usize,
                        f["needed_at"].as_u64().unwrap() as usize,
                    )
                })
                .collect();
            Conversation {
                id: c["id"].as_str().unwrap_or("?").to_string(),
                messages: req.messages,
                facts,
            }
        })
        .collect()
}

fn contains(view: &[std::borrow::Cow<'_, ChatMessage>], fact: &str) -> bool {
    view.iter().any(|m| {
        m.content.contains(fact) || m.tool_calls.iter().any(|c| c.arguments.contains(fact))
    })
}

struct Outcome {
    sent: u64,
    full: u64,
    kept: usize,
    facts: usize,
    calls: usize,
    lost: Vec<String>,
}

/// Replays every conversation; with `cached`, each keeps its token counts and view cache from
/// call to call, as an agent does.
fn replay(convs: &[Conversation], policy: &ContextPolicy, limit: u64, cached: bool) -> Outcome {
    let mut o = Outcome {
        sent: 0,
        full: 0,
        kept: 0,
        facts: 0,
        calls: 0,
        lost: Vec::new(),
    };
    for c in convs {
        let mut cache = ViewCache::default();
        for (i, m) in c.messages.iter().enumerate() {
            if m.role != Role::Assistant {
                continue;
            }
            let prompt = &c.messages[..i];
            let view = if cached {
                cache.view(prompt, policy, limit, 0)
            } else {
                build_view(prompt, policy, limit, 0)
            };
            o.sent += view.stats.tokens_sent;
            o.full += view.stats.tokens_full;
            o.calls += 1;
            for (fact, _, needed_at) in &c.facts {
                // The answer at needed_at + 1 is generated from the prompt [0, needed_at + 1).
                if i == needed_at + 1 {
                    o.facts += 1;
                    if contains(&view.messages, fact) {
                        o.kept += 1;
                    } else {
                        let st = view.stats;
                        if std::env::var("EVAL_DEBUG").is_ok() {
                            let intro = c
                                .facts
                                .iter()
                                .find(|f| &f.0 == fact)
                                .map(|f| f.1)
                                .unwrap_or(0);
                            let items =
                                agentos::context::digest::extract(&c.messages[intro].content, 1000);
                            eprintln!(
                                "  digest of msg {intro}: {} items, has fact: {}, first: {:?}",
                                items.len(),
                                items.iter().any(|x| x == fact),
                                &items[..items.len().min(8)]
                            );
                            let prefix = &fact[..fact.len().min(20)];
                            for (k, vm) in view.messages.iter().enumerate() {
                                if let Some(p) = vm.content.find(prefix) {
                                    eprintln!(
                                        "  near miss in view msg {k} ({:?}): ...{}...",
                                        vm.role,
                                        &vm.content
                                            [p.saturating_sub(60)..(p + 120).min(vm.content.len())]
                                    );
                                }
                            }
                        }
                        o.lost.push(format!(
                            "{}: {fact} (sent {} of limit {limit}, dropped {}, summary {})",
                            c.id, st.tokens_sent, st.dropped, st.summarized
                        ));
                    }
                }
            }
        }
    }
    o
}

fn main() {
    let window: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(32_768);
    let limit = window - 4_096; // the output reserve
    let convs = load();
    let n_msgs: usize = convs.iter().map(|c| c.messages.len()).sum();
    let n_facts: usize = convs.iter().map(|c| c.facts.len()).sum();
    println!(
        "{} conversations, {} messages, {} needed facts; window {} tokens ({} for messages)",
        convs.len(),
        n_msgs,
        n_facts,
        window,
        limit
    );
    let off = ContextPolicy::off();
    let mut rows: Vec<(&str, ContextPolicy)> = vec![("off (baseline)", off.clone())];
    let mut p = off.clone();
    p.tool_outputs.enabled = true;
    rows.push(("tool outputs (cut, dedupe, minify)", p));
    let mut p = off.clone();
    p.masking.enabled = true;
    rows.push(("observation masking, no digest", p.clone()));
    p.summaries.enabled = true;
    rows.push(("observation masking + digest", p));
    let mut p = off.clone();
    p.budget.enabled = true;
    p.window.enabled = true;
    rows.push(("sliding window, no summary", p.clone()));
    p.summaries.enabled = true;
    rows.push(("sliding window + summary", p));
    rows.push(("combined defaults", ContextPolicy::default()));
    if std::env::var("DIGEST_STATS").is_ok() {
        for c in &convs {
            let (mut raw, mut dig) = (0u64, 0u64);
            let mut sample = Vec::new();
            for m in c.messages.iter().filter(|m| m.role == Role::Tool) {
                raw += agentos::context::tokens::estimate(&m.content);
                let items = agentos::context::digest::extract(&m.content, 1000);
                dig += agentos::context::tokens::estimate(&items.join(" | "));
                if sample.len() < 30 {
                    sample.extend(items.into_iter().take(6));
                }
            }
            eprintln!(
                "{}: tool output tokens {raw}, digest tokens {dig}; sample {:?}",
                c.id,
                &sample[..sample.len().min(30)]
            );
        }
    }
    let base = replay(&convs, &off, limit, true).sent.max(1);
    println!(
        "{:<36} {:>12} {:>8} {:>12} {:>10}",
        "policy", "prompt tok", "cut", "retention", "calls"
    );
    for (name, p) in &rows {
        let o = replay(&convs, p, limit, true);
        println!(
            "{:<36} {:>12} {:>7.2}x {:>5}/{:<3} {:>3.0}% {:>6}",
            name,
            o.sent,
            base as f64 / o.sent.max(1) as f64,
            o.kept,
            o.facts,
            100.0 * o.kept as f64 / o.facts.max(1) as f64,
            o.calls
        );
        if !o.lost.is_empty() && o.lost.len() <= 12 {
            println!("    lost: {}", o.lost.join("; "));
        } else if !o.lost.is_empty() {
            println!(
                "    lost: {} facts (first: {})",
                o.lost.len(),
                o.lost[..5].join("; ")
            );
        }
        let _ = o.full;
    }
    // What building the views costs per call, with and without the per-agent caches (token
    // counts and view cache), for the combined defaults. Both must send the same.
    let calls = replay(&convs, &ContextPolicy::default(), limit, true)
        .calls
        .max(1);
    let mut per_call = Vec::new();
    let mut sent = Vec::new();
    for cached in [false, true] {
        let t = std::time::Instant::now();
        let o = replay(&convs, &ContextPolicy::default(), limit, cached);
        per_call.push(t.elapsed().as_secs_f64() * 1e3 / calls as f64);
        sent.push((o.sent, o.kept));
    }
    assert_eq!(sent[0], sent[1], "cached and uncached views differ");
    println!(
        "view building per call (combined defaults): {:.2} ms without caches, {:.2} ms with the per-agent caches (token counts, view cache)",
        per_call[0], per_call[1]
    );
}
