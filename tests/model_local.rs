//! End-to-end tests against a real local model (llama.cpp's server, started by
//! `scripts/local-model.sh start`; `scripts/test.sh` does this and sets AGENTOS_MODEL_URL).
//!
//! Without AGENTOS_MODEL_URL the tests are skipped with a message, unless
//! AGENTOS_REQUIRE_MODEL=1 (set by scripts/test.sh), in which case they fail.

use agentos::config::RuntimeConfig;
use agentos::model::call::Pull;
use agentos::model::stream::StreamDelta;
use agentos::model::types::ChatRequest;
use agentos::runtime::Runtime;
use std::time::{Duration, Instant};

fn model_runtime() -> Option<Runtime> {
    let url = match std::env::var("AGENTOS_MODEL_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            assert!(
                std::env::var("AGENTOS_REQUIRE_MODEL").as_deref() != Ok("1"),
                "AGENTOS_REQUIRE_MODEL=1 but AGENTOS_MODEL_URL is not set"
            );
            eprintln!("skipped: AGENTOS_MODEL_URL is not set (scripts/local-model.sh start)");
            return None;
        }
    };
    let mut c = RuntimeConfig::default();
    c.set_workers(1).unwrap();
    let rt = Runtime::start(c).unwrap();
    let ep = format!(
        r#"{{"name":"local","provider":"openai","base_url":"{url}","model":"local","max_output_tokens":128}}"#
    );
    rt.shared().models().add_endpoint_json(&ep, false).unwrap();
    Some(rt)
}

fn deadline() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(120))
}

#[test]
fn local_model_plain_answer() {
    let Some(rt) = model_runtime() else { return };
    let req = ChatRequest::from_json(
        r#"{"temperature":0,"max_tokens":16,"messages":[{"role":"user","content":"What is the capital of France? Answer with one word."}]}"#,
    )
    .unwrap();
    let call = rt.shared().models().start("local", req, 0).unwrap();
    let r = call.wait(deadline()).expect("finished").unwrap();
    assert!(r.content.contains("Paris"), "{:?}", r.content);
    assert!(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0);
}

#[test]
fn local_model_streamed_answer() {
    let Some(rt) = model_runtime() else { return };
    let req = ChatRequest::from_json(
        r#"{"stream":true,"temperature":0,"max_tokens":40,"messages":[{"role":"user","content":"Count from 1 to 5 separated by spaces."}]}"#,
    )
    .unwrap();
    let call = rt.shared().models().start("local", req, 0).unwrap();
    let mut pieces = Vec::new();
    loop {
        match call.next_delta(deadline()) {
            Pull::Delta(StreamDelta::Text(t)) => pieces.push(t),
            Pull::Delta(other) => panic!("unexpected {other:?}"),
            Pull::End => break,
            Pull::Timeout => panic!("timed out"),
        }
    }
    let r = call.wait(deadline()).unwrap().unwrap();
    assert!(pieces.len() > 2, "streamed in pieces: {pieces:?}");
    assert_eq!(pieces.concat(), r.content);
    assert!(r.content.contains("1 2 3 4 5"), "{:?}", r.content);
    assert!(r.usage.completion_tokens > 0, "usage chunk received");
}

#[test]
fn local_model_tool_call() {
    let Some(rt) = model_runtime() else { return };
    let req = ChatRequest::from_json(
        r#"{"temperature":0,"max_tokens":96,
            "tools":[{"type":"function","function":{"name":"get_weather","description":"Get the current weather for a city",
                      "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}],
            "messages":[{"role":"user","content":"What is the weather in Paris?"}]}"#,
    )
    .unwrap();
    let call = rt.shared().models().start("local", req.clone(), 0).unwrap();
    let r = call.wait(deadline()).unwrap().unwrap();
    assert_eq!(r.finish_reason, "tool_calls");
    assert_eq!(r.tool_calls[0].name, "get_weather");
    let args: serde_json::Value = serde_json::from_str(&r.tool_calls[0].arguments).unwrap();
    assert_eq!(args["city"], "Paris");

    // The same, streamed: arguments arrive in pieces and are reassembled.
    let mut streamed = req;
    streamed.stream = true;
    let call = rt.shared().models().start("local", streamed, 0).unwrap();
    let r = call.wait(deadline()).unwrap().unwrap();
    assert_eq!(r.tool_calls[0].name, "get_weather");
    let args: serde_json::Value = serde_json::from_str(&r.tool_calls[0].arguments).unwrap();
    assert_eq!(args["city"], "Paris");
}
