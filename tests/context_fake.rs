//! Context policies through agents, against a fake server: compact-and-retry on an overflow,
//! recall of masked results, the system prompt never dropped, tool calls never split.

#[path = "support/fake_server.rs"]
mod fake_server;

use agentos::agent::{AgentConfig, Sender};
use agentos::config::RuntimeConfig;
use agentos::handle::Handle;
use agentos::runtime::events::{Event, EventKind};
use agentos::runtime::Runtime;
use agentos::tools::{Tool, ToolHandler, ToolInvocation, ToolOutcome};
use agentos::Status;
use fake_server::{FakeServer, Reply};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Big;
impl ToolHandler for Big {
    fn invoke(&self, inv: Arc<ToolInvocation>) {
        let rows: Vec<String> = (0..300)
            .map(|i| format!("{{\"id\": \"INV-{i:04}-Q\", \"amount\": \"{}.{:02} EUR\", \"path\": \"/data/inv/{i}.pdf\"}}", 100 + i, i % 100))
            .collect();
        inv.complete(ToolOutcome::Ok(format!("[\n  {}\n]", rows.join(",\n  "))));
    }
}

fn setup(extra_agent: &str) -> (FakeServer, Runtime, Handle) {
    let srv = FakeServer::start();
    let mut c = RuntimeConfig::default();
    c.set_workers(2).unwrap();
    let rt = Runtime::start(c).unwrap();
    rt.shared()
        .models()
        .add_endpoint_json(
            &format!(r#"{{"name":"f","provider":"openai","base_url":"{}/v1","retry":{{"max_retries":0}}}}"#, srv.url()),
            false,
        )
        .unwrap();
    rt.shared()
        .tools()
        .add(Tool {
            name: "invoices".into(),
            description: "List invoices".into(),
            parameters: std::sync::Arc::new(serde_json::json!({"type": "object"})),
            timeout: Duration::ZERO,
            handler: Arc::new(Big),
        })
        .unwrap();
    let cfg = format!(
        r#"{{"name":"a","endpoint":"f","system":"SYSTEM PROMPT","tools":["invoices"],"stream":false{extra_agent}}}"#
    );
    let h = rt
        .shared()
        .create_agent(AgentConfig::from_json(&cfg).unwrap())
        .unwrap();
    (srv, rt, h)
}

fn turn_end(rt: &Runtime) -> (Vec<Event>, Event) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let e = rt.shared().events().next(Some(deadline)).expect("event");
        if e.kind == EventKind::TurnEnd {
            return (seen, e);
        }
        seen.push(e);
    }
}

fn body(srv: &FakeServer, i: usize) -> serde_json::Value {
    serde_json::from_str(&srv.requests()[i].json()).unwrap()
}

#[test]
fn compact_and_retry_on_a_provider_context_overflow() {
    let (srv, rt, h) = setup("");
    srv.push(Reply::openai_tool_call("c1", "invoices", "{}"));
    srv.push(Reply::json(
        400,
        r#"{"error":{"code":400,"message":"request (9030 tokens) exceeds the available context size (4096 tokens), try increasing it","type":"exceed_context_size_error"}}"#,
    ));
    srv.push(Reply::openai_text("INV-0007-Q is 107.07 EUR"));
    rt.shared()
        .agent(h)
        .unwrap()
        .deliver(Sender::Host, "what does INV-0007-Q cost?")
        .unwrap();
    let (events, end) = turn_end(&rt);
    assert_eq!(end.status, Status::Ok, "{}", end.text);
    let overflow = events
        .iter()
        .find(|e| e.kind == EventKind::Error)
        .expect("overflow event");
    assert_eq!(overflow.detail["context_overflow"], true);
    assert_eq!(overflow.detail["retrying"], true);
    // The retry sent a smaller prompt: the big result was masked, with its key and identifiers.
    let (first, retry) = (body(&srv, 1), body(&srv, 2));
    let size = |b: &serde_json::Value| b["messages"].to_string().len();
    assert!(
        size(&retry) < size(&first),
        "{} vs {}",
        size(&retry),
        size(&first)
    );
    let masked = retry["messages"][3]["content"].as_str().unwrap();
    assert!(masked.contains("key: c1"), "{masked}");
    assert!(masked.contains("INV-0007-Q"), "identifiers kept verbatim");
    assert_eq!(retry["messages"][0]["content"], "SYSTEM PROMPT");
    // The stored history is intact.
    let hist = rt.shared().agent(h).unwrap().history();
    assert!(hist[3].content.contains("/data/inv/299.pdf"));
}

#[test]
fn masked_results_come_back_with_recall() {
    let (srv, rt, h) = setup(r#","context":{"masking":{"keep_recent":0,"min_chars":100}}"#);
    srv.push(Reply::openai_tool_call("c1", "invoices", "{}"));
    srv.push(Reply::openai_tool_call("r1", "recall", r#"{"key":"c1"}"#));
    srv.push(Reply::openai_tool_call("r2", "recall", r#"{"key":"nope"}"#));
    srv.push(Reply::openai_text("done"));
    rt.shared()
        .agent(h)
        .unwrap()
        .deliver(Sender::Host, "go")
        .unwrap();
    let (events, end) = turn_end(&rt);
    assert_eq!(end.status, Status::Ok);
    let results: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::ToolResult)
        .collect();
    assert_eq!(results.len(), 3);
    assert!(
        results[1].text.contains("/data/inv/299.pdf"),
        "recall returns the full text"
    );
    assert!(results[2].text.contains("no tool result has the key"));
    // The recall tool is offered once something is hidden, not before.
    assert!(!body(&srv, 0)["tools"].to_string().contains("\"recall\""));
    assert!(body(&srv, 1)["tools"].to_string().contains("\"recall\""));
}

#[test]
fn a_tiny_window_never_drops_the_system_prompt_or_splits_tool_calls() {
    let (srv, rt, h) = setup(r#","context_limit":3000,"max_tokens":200"#);
    for i in 0..6 {
        srv.push(Reply::openai_tool_call(&format!("c{i}"), "invoices", "{}"));
    }
    srv.push(Reply::openai_text("done"));
    let a = rt.shared().agent(h).unwrap();
    a.deliver(Sender::Host, "first question").unwrap();
    let (_, end) = turn_end(&rt);
    assert_eq!(end.status, Status::Ok);
    for r in srv.requests() {
        let b: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        let msgs = b["messages"].as_array().unwrap();
        assert_eq!(msgs[0]["content"], "SYSTEM PROMPT");
        assert_eq!(msgs[1]["content"], "first question");
        for (i, m) in msgs.iter().enumerate() {
            if m["role"] == "tool" {
                let prev = &msgs[i - 1];
                assert!(
                    prev["role"] == "tool" || prev["tool_calls"].is_array(),
                    "orphan result"
                );
            }
            if m["tool_calls"].is_array() {
                assert_eq!(msgs[i + 1]["role"], "tool", "call without result");
            }
        }
    }
    let st = a.stats();
    assert!(
        st.tokens_sent_total * 3 < st.tokens_full_total,
        "{} vs {}",
        st.tokens_sent_total,
        st.tokens_full_total
    );
    let ctx = a.context_json();
    assert!(
        ctx["tokens_estimated"].as_u64().unwrap() <= ctx["limit_tokens"].as_u64().unwrap(),
        "{}",
        ctx["tokens_estimated"]
    );
}

#[test]
fn policies_are_validated_and_can_be_changed_at_run_time() {
    let (_srv, rt, h) = setup("");
    let a = rt.shared().agent(h).unwrap();
    let e = a.set_policy_json(r#"{"masking":{"keep":1}}"#).unwrap_err();
    assert!(e.message().contains("masking.keep"));
    a.set_policy_json(r#"{"all":false}"#).unwrap();
    let e = AgentConfig::from_json(r#"{"name":"b","endpoint":"f","context":{"windw":{}}}"#)
        .unwrap_err();
    assert!(e.message().contains("windw"), "{}", e.message());
    a.compact();
}

#[test]
fn memory_limits_refuse_messages_and_stop_turns_without_losing_history() {
    let (srv, rt, h) = setup(r#","max_history_bytes":20000"#);
    srv.push(Reply::openai_tool_call("c1", "invoices", "{}"));
    srv.set_default(Reply::openai_text("never needed"));
    let a = rt.shared().agent(h).unwrap();
    a.deliver(Sender::Host, "list the invoices").unwrap();
    // The tool result (tens of KB) takes the history past the limit: the turn stops cleanly.
    let (events, end) = turn_end(&rt);
    assert_eq!(end.status, Status::LimitExceeded, "{}", end.text);
    assert!(end.text.contains("max_history_bytes"), "{}", end.text);
    assert!(events.iter().any(|e| e.kind == EventKind::BudgetExceeded));
    let hist = a.history();
    assert_eq!(hist.len(), 4, "system, user, call and result kept whole");
    assert!(hist[3].content.contains("/data/inv/299.pdf"));
    // New messages are refused with a clear status; nothing is queued.
    let e = a.deliver(Sender::Host, "more").unwrap_err();
    assert_eq!(e.status(), Status::LimitExceeded);
    assert!(rt.shared().history_bytes() > 20_000);
    rt.shared().remove_agent(h).unwrap();
    assert_eq!(rt.shared().history_bytes(), 0);
}
