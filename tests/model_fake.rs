//! The model layer against a scriptable fake server on 127.0.0.1: every reply shape and every
//! failure path, over real HTTP through libcurl.

#[path = "support/fake_server.rs"]
mod fake_server;
#[path = "support/model_setup.rs"]
mod model_setup;

use agentos::model::call::{CallInner, Pull};
use agentos::model::stream::{DeltaBuf, StreamDelta};
use agentos::model::types::ChatRequest;
use agentos::Status;
use fake_server::{FakeServer, Reply};
use model_setup::{add_endpoint, request, runtime};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn wait(call: &CallInner) -> Result<agentos::model::types::ChatResponse, agentos::Error> {
    call.wait(Some(Instant::now() + Duration::from_secs(20)))
        .expect("call did not finish in 20 s")
}

#[test]
fn plain_openai_answer_with_usage_and_cost() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(
        &rt,
        "oa",
        "openai",
        &srv.url(),
        r#","prices":{"input_per_mtok":1000000,"output_per_mtok":2000000}"#,
    );
    srv.push(Reply::openai_text("hello there"));
    let call = rt.shared().models().start("oa", request(false), 0).unwrap();
    let r = wait(&call).unwrap();
    assert_eq!(r.content, "hello there");
    assert_eq!(r.usage.prompt_tokens, 11);
    assert_eq!(r.usage.completion_tokens, 2);
    assert!(
        (r.usage.cost_usd - (11.0 + 2.0 * 2.0)).abs() < 1e-6,
        "{}",
        r.usage.cost_usd
    );
    let req = srv.last_request().unwrap();
    assert_eq!(req.path, "/v1/chat/completions");
    let body: serde_json::Value = serde_json::from_str(&req.json()).unwrap();
    assert_eq!(body["model"], "fake-model");
    assert_eq!(body["messages"][0]["content"], "hi");
    let totals = rt.shared().models().totals();
    assert_eq!(totals.succeeded, 1);
    assert_eq!(totals.usage.prompt_tokens, 11);
}

#[test]
fn streamed_openai_answer_pulls_every_piece_and_reuses_the_connection() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(&rt, "oa", "openai", &srv.url(), "");
    for _ in 0..3 {
        srv.push(Reply::openai_stream(&["Hel", "lo, ", "wor", "ld"]).split_writes(5));
    }
    for _ in 0..3 {
        let call = rt.shared().models().start("oa", request(true), 0).unwrap();
        let mut text = String::new();
        let mut buf = DeltaBuf::new();
        loop {
            match call.next_delta(Some(Instant::now() + Duration::from_secs(20)), &mut buf) {
                Pull::Delta => match buf.delta() {
                    StreamDelta::Text(t) => text.push_str(t),
                    other => panic!("unexpected {other:?}"),
                },
                Pull::End => break,
                Pull::Timeout => panic!("timeout"),
            }
        }
        assert_eq!(text, "Hello, world");
        let r = wait(&call).unwrap();
        assert_eq!(r.content, "Hello, world");
        assert_eq!(r.finish_reason, "stop");
        assert_eq!(r.usage.completion_tokens, 4);
        let body: serde_json::Value =
            serde_json::from_str(&srv.last_request().unwrap().json()).unwrap();
        assert_eq!(body["stream_options"]["include_usage"], true);
    }
    assert_eq!(
        srv.connections_accepted(),
        1,
        "keep-alive reuses one connection"
    );
}

#[test]
fn streamed_parallel_tool_calls_are_assembled() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(&rt, "oa", "openai", &srv.url(), "");
    let events = vec![
        r#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}"#.to_string() + "\n\n",
        r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c0","type":"function","function":{"name":"weather","arguments":"{\"ci"}}]}}]}"#.to_string() + "\n\n",
        r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"c1","type":"function","function":{"name":"time","arguments":"{\"tz\":"}}]}}]}"#.to_string() + "\n\n",
        r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\":\"Paris\"}"}}]}}]}"#.to_string() + "\n\n",
        r#"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"\"UTC\"}"}}]}}]}"#.to_string() + "\n\n",
        r#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#.to_string() + "\n\n",
        r#"data: {"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":9}}"#.to_string() + "\n\n",
        "data: [DONE]\n\n".to_string(),
    ];
    srv.push(Reply::sse(events).split_writes(3));
    let call = rt.shared().models().start("oa", request(true), 0).unwrap();
    let r = wait(&call).unwrap();
    assert_eq!(r.tool_calls.len(), 2);
    assert_eq!(r.tool_calls[0].name, "weather");
    assert_eq!(r.tool_calls[0].arguments, r#"{"city":"Paris"}"#);
    assert_eq!(r.tool_calls[1].id, "c1");
    assert_eq!(r.tool_calls[1].arguments, r#"{"tz":"UTC"}"#);
    assert_eq!(r.finish_reason, "tool_calls");
}

#[test]
fn anthropic_plain_stream_and_tool_use() {
    std::env::set_var("AGENTOS_TEST_ANTHROPIC_KEY", "sk-ant-test-secret");
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(
        &rt,
        "an",
        "anthropic",
        &srv.url(),
        r#","api_key_env":"AGENTOS_TEST_ANTHROPIC_KEY""#,
    );
    srv.push(Reply::anthropic_text("bonjour"));
    let r = wait(&rt.shared().models().start("an", request(false), 0).unwrap()).unwrap();
    assert_eq!(r.content, "bonjour");
    assert_eq!(r.usage.cached_tokens, 3);
    let req = srv.last_request().unwrap();
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(req.header("x-api-key"), Some("sk-ant-test-secret"));
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));

    srv.push(Reply::anthropic_stream(&["bon", "jour"]).split_writes(7));
    let r = wait(&rt.shared().models().start("an", request(true), 0).unwrap()).unwrap();
    assert_eq!(r.content, "bonjour");
    assert_eq!(r.usage.completion_tokens, 2);

    srv.push(Reply::anthropic_tool_use("tu1", "lookup", r#"{"q":"x"}"#));
    let r = wait(&rt.shared().models().start("an", request(false), 0).unwrap()).unwrap();
    assert_eq!(r.tool_calls[0].name, "lookup");
    assert_eq!(r.finish_reason, "tool_calls");

    srv.push(Reply::anthropic_stream_tool_use(
        "tu2",
        "lookup",
        &[r#"{"q":"#, r#""y"}"#],
    ));
    let r = wait(&rt.shared().models().start("an", request(true), 0).unwrap()).unwrap();
    assert_eq!(r.tool_calls[0].id, "tu2");
    assert_eq!(r.tool_calls[0].arguments, r#"{"q":"y"}"#);
}

#[test]
fn retries_429_with_retry_after_then_5xx_then_succeeds() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(&rt, "oa", "openai", &srv.url(), "");
    srv.push(Reply::status_error(429, "slow down").header("retry-after", "0.2"));
    srv.push(Reply::status_error(500, "oops"));
    srv.push(Reply::status_error(503, "busy"));
    srv.push(Reply::openai_text("finally"));
    let t0 = Instant::now();
    let call = rt.shared().models().start("oa", request(false), 0).unwrap();
    let r = wait(&call).unwrap();
    assert_eq!(r.content, "finally");
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "retry-after honoured"
    );
    let a = call.attempts();
    assert_eq!((a.attempts, a.retries), (4, 3));
    assert_eq!(srv.request_count(), 4);
    assert_eq!(rt.shared().models().totals().retries, 3);
}

/// A retry without backoff is queued after the I/O loop's admission pass; it must be
/// admitted at the next pass, not after the loop's sleep (nothing else is in flight to wake
/// it). Debug builds check before every sleep that no ready call is left without a wake-up
/// (`assert_no_missed_admission`): without the fix the I/O thread stops there and the call
/// never finishes.
#[test]
fn retry_without_backoff_is_admitted_without_waiting_for_a_wake_up() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(
        &rt,
        "oa",
        "openai",
        &srv.url(),
        r#","retry":{"max_retries":3,"base_delay_ms":0,"max_delay_ms":0}"#,
    );
    for _ in 0..3 {
        srv.push(Reply::status_error(503, "busy"));
    }
    srv.push(Reply::openai_text("after three"));
    let call = rt.shared().models().start("oa", request(false), 0).unwrap();
    let r = wait(&call).unwrap();
    assert_eq!(r.content, "after three");
    let a = call.attempts();
    assert_eq!((a.attempts, a.retries), (4, 3));
    assert_eq!(srv.request_count(), 4);
}

#[test]
fn anthropic_529_is_retried_and_gives_up_after_max_retries() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(&rt, "an", "anthropic", &srv.url(), "");
    srv.set_default(Reply::json(
        529,
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    ));
    let call = rt.shared().models().start("an", request(false), 0).unwrap();
    let e = wait(&call).unwrap_err();
    assert_eq!(e.status(), Status::Http);
    assert!(e.message().contains("\"an\""), "{}", e.message());
    assert!(e.message().contains("529"), "{}", e.message());
    assert!(e.message().contains("Overloaded"), "{}", e.message());
    assert!(
        e.message().contains("gave up after 3 retries"),
        "{}",
        e.message()
    );
    assert_eq!(srv.request_count(), 4);
}

#[test]
fn spend_limit_429_is_never_retried() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(&rt, "oa", "openai", &srv.url(), "");
    srv.push(Reply::json(429, r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#).header("retry-after", "0"));
    srv.set_default(Reply::openai_text("must not be reached"));
    let e = wait(&rt.shared().models().start("oa", request(false), 0).unwrap()).unwrap_err();
    assert_eq!(e.status(), Status::LimitExceeded);
    assert!(e.message().contains("quota"), "{}", e.message());
    assert_eq!(srv.request_count(), 1);
}

#[test]
fn non_retryable_4xx_reports_endpoint_status_and_provider_text() {
    let srv = FakeServer::start();
    let rt = runtime();
    std::env::set_var("AGENTOS_TEST_OPENAI_KEY", "sk-very-secret-key");
    add_endpoint(
        &rt,
        "oa",
        "openai",
        &srv.url(),
        r#","api_key_env":"AGENTOS_TEST_OPENAI_KEY""#,
    );
    srv.push(Reply::json(400, r#"{"error":{"message":"bad key sk-very-secret-key in request","type":"invalid_request_error"}}"#));
    let e = wait(&rt.shared().models().start("oa", request(false), 0).unwrap()).unwrap_err();
    assert_eq!(e.status(), Status::Http);
    assert!(
        e.message().contains("endpoint \"oa\": HTTP 400"),
        "{}",
        e.message()
    );
    assert!(
        e.message().contains("invalid_request_error"),
        "{}",
        e.message()
    );
    assert!(
        !e.message().contains("sk-very-secret-key"),
        "key leaked: {}",
        e.message()
    );
    assert_eq!(srv.request_count(), 1);
}

#[test]
fn reset_mid_stream_keeps_partial_output_and_is_not_replayed() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(&rt, "oa", "openai", &srv.url(), "");
    srv.push(Reply::openai_stream(&["one ", "two ", "three"]).reset_after_events(3));
    srv.set_default(Reply::openai_stream(&["replayed"]));
    let call = rt.shared().models().start("oa", request(true), 0).unwrap();
    let e = wait(&call).unwrap_err();
    assert_eq!(e.status(), Status::Http, "{e}");
    assert!(
        e.message().contains("partial output is kept"),
        "{}",
        e.message()
    );
    assert_eq!(call.partial().content, "one two ");
    assert_eq!(
        srv.request_count(),
        1,
        "a stream with output is never replayed"
    );
    // Everything delivered is still pullable.
    let mut text = String::new();
    let mut buf = DeltaBuf::new();
    while let Pull::Delta = call.next_delta(Some(Instant::now()), &mut buf) {
        if let StreamDelta::Text(t) = buf.delta() {
            text.push_str(t);
        }
    }
    assert_eq!(text, "one two ");
}

#[test]
fn reset_before_output_is_retried() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(&rt, "oa", "openai", &srv.url(), "");
    srv.push(Reply::openai_stream(&["x"]).reset_after_events(0));
    srv.push(Reply::openai_stream(&["second ", "try"]));
    let call = rt.shared().models().start("oa", request(true), 0).unwrap();
    assert_eq!(wait(&call).unwrap().content, "second try");
    assert_eq!(call.attempts().retries, 1);
}

#[test]
fn truncated_sse_is_an_error_with_partial_output() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(&rt, "oa", "openai", &srv.url(), "");
    srv.push(Reply::openai_stream(&["al", "pha", "beta"]).truncate_after_events(3));
    let call = rt.shared().models().start("oa", request(true), 0).unwrap();
    let e = wait(&call).unwrap_err();
    assert!(
        e.message().contains("ended before its end marker"),
        "{}",
        e.message()
    );
    assert_eq!(call.partial().content, "alpha");
    assert_eq!(srv.request_count(), 1);
}

#[test]
fn malformed_json_reply_is_a_provider_error() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(&rt, "oa", "openai", &srv.url(), "");
    srv.push(Reply::raw_body(
        200,
        "application/json",
        b"{\"choices\": [".to_vec(),
    ));
    let e = wait(&rt.shared().models().start("oa", request(false), 0).unwrap()).unwrap_err();
    assert_eq!(e.status(), Status::Provider);
    assert!(
        e.message().contains("malformed response"),
        "{}",
        e.message()
    );
    // A malformed event inside a stream, after output: kept, not replayed.
    srv.push(Reply::sse(vec![
        "data: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\n".into(),
        "data: {broken\n\n".into(),
    ]));
    let call = rt.shared().models().start("oa", request(true), 0).unwrap();
    let e = wait(&call).unwrap_err();
    assert_eq!(e.status(), Status::Provider);
    assert_eq!(call.partial().content, "ok");
}

#[test]
fn stalled_stream_hits_the_idle_timeout() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(
        &rt,
        "oa",
        "openai",
        &srv.url(),
        r#","timeouts_ms":{"idle":300}"#,
    );
    srv.push(Reply::openai_stream(&["tick ", "tock"]).stall_after_events(2));
    let call = rt.shared().models().start("oa", request(true), 0).unwrap();
    let e = wait(&call).unwrap_err();
    assert_eq!(e.status(), Status::Timeout);
    assert!(
        e.message().contains("idle stream timeout"),
        "{}",
        e.message()
    );
    assert_eq!(call.partial().content, "tick ");
}

#[test]
fn large_bodies_go_without_waiting_for_100_continue_on_the_io_thread() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(&rt, "oa", "openai", &srv.url(), "");
    // The I/O thread's pooled handles keep their header lists across calls (and switch
    // between them as body sizes alternate); past 1 MiB libcurl would otherwise ask for
    // `100 Continue`.
    let big = "x".repeat((1 << 20) + 100);
    for (i, size) in [5usize, big.len(), 5, big.len(), 2000]
        .into_iter()
        .enumerate()
    {
        srv.push(Reply::openai_text(&format!("answer {i}")));
        let req = agentos::model::types::ChatRequest::from_json(
            &serde_json::json!({"messages": [{"role": "user", "content": &big[..size]}]})
                .to_string(),
        )
        .unwrap();
        let call = rt.shared().models().start("oa", req, 0).unwrap();
        assert_eq!(wait(&call).unwrap().content, format!("answer {i}"));
        let got = srv.last_request().unwrap();
        assert_eq!(got.header("expect"), None, "request {i} ({size} bytes)");
        assert!(got.body.len() > size, "request {i} sent whole");
    }
}

#[test]
fn total_timeout_ends_a_stream_that_keeps_coming() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(
        &rt,
        "oa",
        "openai",
        &srv.url(),
        r#","timeouts_ms":{"first_byte":5000,"idle":5000,"total":400}"#,
    );
    // An event every 100 ms: never idle for long, but 30 of them take 3 s.
    let pieces: Vec<String> = (0..30).map(|i| format!("p{i} ")).collect();
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    srv.push(Reply::openai_stream(&pieces).chunk_delay(Duration::from_millis(100)));
    let call = rt.shared().models().start("oa", request(true), 0).unwrap();
    let e = wait(&call).unwrap_err();
    assert_eq!(e.status(), Status::Timeout);
    assert!(
        e.message().contains("total timeout after 400 ms"),
        "{}",
        e.message()
    );
    let partial = call.partial().content;
    assert!(partial.starts_with("p0 "), "{partial:?}");
    assert!(
        !partial.contains("p29"),
        "cut, not read to its end: {partial:?}"
    );
}

#[test]
fn first_byte_timeout_is_retried_then_reported() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(
        &rt,
        "oa",
        "openai",
        &srv.url(),
        r#","timeouts_ms":{"first_byte":150},"retry":{"max_retries":1,"base_delay_ms":1}"#,
    );
    srv.set_default(Reply::openai_text("late").delay(Duration::from_secs(3)));
    let call = rt.shared().models().start("oa", request(false), 0).unwrap();
    let e = wait(&call).unwrap_err();
    assert_eq!(e.status(), Status::Timeout);
    assert!(
        e.message().contains("first byte timeout"),
        "{}",
        e.message()
    );
    assert_eq!(call.attempts().attempts, 2);
}

#[test]
fn ten_megabyte_reply_arrives_whole() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(&rt, "oa", "openai", &srv.url(), "");
    let big = "x".repeat(10 << 20);
    srv.push(Reply::openai_text(&big));
    let r = wait(&rt.shared().models().start("oa", request(false), 0).unwrap()).unwrap();
    assert_eq!(r.content.len(), 10 << 20);
}

#[test]
fn cancel_in_flight_and_queued_calls() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(
        &rt,
        "oa",
        "openai",
        &srv.url(),
        r#","limits":{"concurrency":1}"#,
    );
    srv.push(Reply::openai_stream(&["a", "b"]).stall_after_events(2));
    let models = rt.shared().models();
    let first = models.start("oa", request(true), 0).unwrap();
    let queued = models.start("oa", request(true), 0).unwrap();
    // Wait until the first has produced output.
    assert!(matches!(
        first.next_delta(
            Some(Instant::now() + Duration::from_secs(10)),
            &mut DeltaBuf::new()
        ),
        Pull::Delta
    ));
    models.cancel(&queued);
    let e = wait(&queued).unwrap_err();
    assert_eq!(e.status(), Status::Cancelled);
    models.cancel(&first);
    let e = wait(&first).unwrap_err();
    assert_eq!(e.status(), Status::Cancelled);
    assert_eq!(first.partial().content, "a");
    assert_eq!(srv.request_count(), 1);
}

/// Adds endpoint "oa" with one concurrency slot on `srv` and starts a call ("hi") the server
/// answers after `ms` milliseconds (every later call gets "ok" at once); returns once that
/// call is on the server, holding the slot.
fn behind_a_blocker(rt: &agentos::runtime::Runtime, srv: &FakeServer, ms: u64) -> Arc<CallInner> {
    add_endpoint(
        rt,
        "oa",
        "openai",
        &srv.url(),
        r#","limits":{"concurrency":1}"#,
    );
    srv.push(Reply::openai_text("blocker").delay(Duration::from_millis(ms)));
    srv.set_default(Reply::openai_text("ok"));
    let blocker = rt.shared().models().start("oa", request(false), 0).unwrap();
    assert!(srv.wait_for_requests(1, Duration::from_secs(10)));
    blocker
}

/// A request of one user message, `text`.
fn said(text: &str) -> ChatRequest {
    ChatRequest::from_json(&format!(
        r#"{{"messages":[{{"role":"user","content":"{text}"}}]}}"#
    ))
    .unwrap()
}

/// The first message's text of each request the server got, in the order they came.
fn first_contents(srv: &FakeServer) -> Vec<String> {
    srv.requests()
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.json()).unwrap()["messages"][0]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn concurrency_limit_admits_by_priority() {
    let srv = FakeServer::start();
    let rt = runtime();
    let blocker = behind_a_blocker(&rt, &srv, 300);
    let models = rt.shared().models();
    let mut low = said("low");
    low.temperature = Some(0.0);
    let low_call = models.start("oa", low, 1).unwrap();
    let high_call = models.start("oa", said("high"), 9).unwrap();
    for c in [&blocker, &low_call, &high_call] {
        wait(c).unwrap();
    }
    let order = first_contents(&srv);
    assert_eq!(order, vec!["hi", "high", "low"]);
}

#[test]
fn waiting_for_admission_raises_a_calls_priority_a_level_per_starvation_limit() {
    // Aging at admission: a call gains a priority level for each starvation_ms it waits.
    // "mid" (priority 8) and "low" (1) wait 1.5 s behind the blocker (starvation_ms 200): mid
    // ranks 15 and goes before the urgent calls (9) queued 700 ms after it, which rank 13 by
    // then; low ranks 8 and still waits for them.
    let srv = FakeServer::start();
    let mut config = agentos::config::RuntimeConfig::default();
    config.set_workers(1).unwrap();
    config.starvation_ms = 200;
    let rt = agentos::runtime::Runtime::start(config).unwrap();
    let blocker = behind_a_blocker(&rt, &srv, 1500);
    let models = rt.shared().models();
    let mut calls = vec![
        blocker,
        models.start("oa", said("mid"), 8).unwrap(),
        models.start("oa", said("low"), 1).unwrap(),
    ];
    std::thread::sleep(Duration::from_millis(700));
    for n in 1..=3 {
        calls.push(models.start("oa", said(&format!("high{n}")), 9).unwrap());
    }
    for c in &calls {
        wait(c).unwrap();
    }
    let order = first_contents(&srv);
    // (By priority alone: hi, high1, high2, high3, mid, low.)
    assert_eq!(order, vec!["hi", "mid", "high1", "high2", "high3", "low"]);
}

#[test]
fn shutdown_completes_calls_in_flight() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(&rt, "oa", "openai", &srv.url(), "");
    srv.push(Reply::openai_stream(&["x"]).stall_after_events(2));
    let call: Arc<CallInner> = rt.shared().models().start("oa", request(true), 0).unwrap();
    assert!(matches!(
        call.next_delta(
            Some(Instant::now() + Duration::from_secs(10)),
            &mut DeltaBuf::new()
        ),
        Pull::Delta
    ));
    drop(rt);
    let e = wait(&call).unwrap_err();
    assert_eq!(e.status(), Status::Shutdown);
    assert_eq!(call.partial().content, "x");
}

#[test]
fn connection_refused_is_retried_then_reported() {
    // Bind then drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rt = runtime();
    add_endpoint(
        &rt,
        "dead",
        "openai",
        &format!("http://127.0.0.1:{port}"),
        "",
    );
    let call = rt
        .shared()
        .models()
        .start("dead", request(false), 0)
        .unwrap();
    let e = wait(&call).unwrap_err();
    assert_eq!(e.status(), Status::Http);
    assert!(e.message().contains("\"dead\""), "{}", e.message());
    assert!(e.message().contains("transport error"), "{}", e.message());
    assert_eq!(call.attempts().attempts, 4);
}

#[test]
fn urgent_call_preempts_a_streaming_call_which_resumes_from_its_snapshot() {
    use agentos::model::call::CallOptions;
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(
        &rt,
        "oa",
        "openai",
        &srv.url(),
        r#","limits":{"concurrency":1}"#,
    );
    srv.push(Reply::openai_stream(&["Once ", "upon ", "NEVER-SENT"]).stall_after_events(3));
    srv.push(Reply::openai_stream(&["urgent ", "answer"]));
    srv.push(Reply::openai_stream(&["a ", "time."]));
    let models = rt.shared().models();
    let low = models
        .new_call(
            "oa",
            request(true),
            CallOptions {
                priority: 1,
                preemptible: true,
                ..Default::default()
            },
        )
        .unwrap();
    models.submit(low.clone()).unwrap();
    // Wait until the low-priority stream has produced "Once upon ".
    let mut seen = String::new();
    let mut buf = DeltaBuf::new();
    while seen != "Once upon " {
        match low.next_delta(Some(Instant::now() + Duration::from_secs(10)), &mut buf) {
            Pull::Delta => match buf.delta() {
                StreamDelta::Text(t) => seen.push_str(t),
                other => panic!("unexpected {other:?}"),
            },
            other => panic!("unexpected {other:?}"),
        }
    }
    let high = models
        .new_call(
            "oa",
            request(true),
            CallOptions {
                priority: 9,
                ..Default::default()
            },
        )
        .unwrap();
    models.submit(high.clone()).unwrap();
    assert_eq!(wait(&high).unwrap().content, "urgent answer");
    let r = wait(&low).unwrap();
    assert_eq!(low.preemptions(), 1);
    assert_eq!(low.snapshot().as_deref(), Some("Once upon "));
    assert_eq!(r.content, "Once upon a time.", "snapshot + continuation");
    // The high-priority call ran while the low one waited, and the resumed request carried the
    // snapshot as an assistant prefill.
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 3);
    let resumed: serde_json::Value = serde_json::from_str(&reqs[2].json()).unwrap();
    let msgs = resumed["messages"].as_array().unwrap();
    assert_eq!(msgs.last().unwrap()["role"], "assistant");
    assert_eq!(msgs.last().unwrap()["content"], "Once upon ");
    // Every delta is pulled exactly once: the rest of the low call's output.
    let mut rest = String::new();
    while let Pull::Delta = low.next_delta(Some(Instant::now()), &mut buf) {
        if let StreamDelta::Text(t) = buf.delta() {
            rest.push_str(t);
        }
    }
    assert_eq!(seen + &rest, "Once upon a time.");
}

#[test]
fn rate_limit_headers_hold_back_the_next_call() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(&rt, "oa", "openai", &srv.url(), "");
    srv.push(
        Reply::openai_text("first")
            .header("x-ratelimit-remaining-requests", "0")
            .header("x-ratelimit-reset-requests", "300ms"),
    );
    srv.push(Reply::openai_text("second"));
    let models = rt.shared().models();
    wait(&models.start("oa", request(false), 0).unwrap()).unwrap();
    let t0 = Instant::now();
    wait(&models.start("oa", request(false), 0).unwrap()).unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "held back {:?}",
        t0.elapsed()
    );
}

#[test]
fn response_format_and_tool_choice_are_sent() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(&rt, "oa", "openai", &srv.url(), "");
    srv.push(Reply::openai_text("{\"n\":1}"));
    let req = ChatRequest::from_json(
        r#"{"messages":[{"role":"user","content":"json please"}],"tool_choice":"none",
            "response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"object","properties":{"n":{"type":"integer"}}}}}}"#,
    )
    .unwrap();
    wait(&rt.shared().models().start("oa", req, 0).unwrap()).unwrap();
    let body: serde_json::Value =
        serde_json::from_str(&srv.last_request().unwrap().json()).unwrap();
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(
        body["response_format"]["json_schema"]["schema"]["properties"]["n"]["type"],
        "integer"
    );
    assert_eq!(body["tool_choice"], "none");
}

#[test]
fn deterministic_requests_are_served_from_the_response_cache() {
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(
        &rt,
        "oa",
        "openai",
        &srv.url(),
        r#","cache":{"max_bytes":100000}"#,
    );
    add_endpoint(&rt, "nocache", "openai", &srv.url(), "");
    srv.set_default(Reply::openai_text("cached answer"));
    let models = rt.shared().models();
    // temperature 0 (see `request`): the second identical request never reaches the server.
    let a = wait(&models.start("oa", request(false), 0).unwrap()).unwrap();
    let b = wait(&models.start("oa", request(true), 0).unwrap()).unwrap();
    assert_eq!(a.content, "cached answer");
    assert_eq!(
        b.content, "cached answer",
        "a streamed request is served too"
    );
    assert_eq!(b.usage.prompt_tokens, 0, "a hit costs nothing");
    assert_eq!(srv.request_count(), 1);
    // Different messages, a non-zero temperature, or an endpoint without a cache: no hit.
    let mut other = request(false);
    other.messages[0].content = "something else".into();
    wait(&models.start("oa", other, 0).unwrap()).unwrap();
    let mut warm = request(false);
    warm.temperature = Some(0.7);
    wait(&models.start("oa", warm.clone(), 0).unwrap()).unwrap();
    wait(&models.start("oa", warm, 0).unwrap()).unwrap();
    wait(&models.start("nocache", request(false), 0).unwrap()).unwrap();
    assert_eq!(srv.request_count(), 5);
    let usage = models.usage_json();
    assert_eq!(usage["endpoints"]["oa"]["cache"]["hits"], 1);
    assert_eq!(usage["endpoints"]["oa"]["cache"]["misses"], 2);
    assert!(usage["endpoints"]["nocache"].get("cache").is_none());
}

#[test]
fn hundreds_of_concurrent_calls_spread_over_shards_and_reuse_their_connections() {
    // More transfers than one curl multi handle takes (64): the I/O thread opens more, and
    // a second burst reuses the connections of the first instead of opening new ones.
    let srv = FakeServer::start();
    let rt = runtime();
    add_endpoint(&rt, "oa", "openai", &srv.url(), "");
    srv.set_default(Reply::openai_text("pong").delay(Duration::from_millis(300)));
    let models = rt.shared().models();
    const N: usize = 600;
    for round in 0..2 {
        let calls: Vec<_> = (0..N)
            .map(|_| models.start("oa", request(false), 0).unwrap())
            .collect();
        for c in &calls {
            assert_eq!(wait(c).unwrap().content, "pong", "round {round}");
        }
        let accepted = srv.connections_accepted();
        assert!(
            (N..=N + N / 10).contains(&accepted),
            "round {round}: {accepted} connections for {N} concurrent calls"
        );
    }
    assert_eq!(models.totals().succeeded, 2 * N as u64);
}

#[test]
fn reused_handles_go_to_their_own_endpoint_and_mode() {
    // Easy handles are kept configured for the endpoint and mode they last served; calls that
    // alternate between two endpoints and between plain and streamed must each still reach the
    // right server, in the right mode.
    let (s1, s2) = (FakeServer::start(), FakeServer::start());
    let rt = runtime();
    add_endpoint(&rt, "one", "openai", &s1.url(), "");
    add_endpoint(&rt, "two", "openai", &s2.url(), "");
    s1.set_default(Reply::openai_text("from one"));
    s2.set_default(Reply::openai_text("from two"));
    let models = rt.shared().models();
    let mut streamed = 0;
    for i in 0..12 {
        let (ep, want) = if i % 3 == 0 {
            ("two", "from two")
        } else {
            ("one", "from one")
        };
        let stream = i % 2 == 0;
        if stream {
            // A streamed call gets a streamed reply from its own server.
            let srv = if ep == "one" { &s1 } else { &s2 };
            srv.push(Reply::openai_stream(&["str", "eamed ", ep]));
            streamed += 1;
        }
        let r = wait(&models.start(ep, request(stream), 0).unwrap()).unwrap();
        let expect = if stream {
            format!("streamed {ep}")
        } else {
            want.to_string()
        };
        assert_eq!(r.content, expect, "call {i}");
    }
    assert_eq!(s1.requests().len() + s2.requests().len(), 12);
    assert_eq!(s2.requests().len(), 4);
    let all: Vec<_> = s1.requests().into_iter().chain(s2.requests()).collect();
    let stream_flags = all
        .iter()
        .filter(|r| r.json().contains("\"stream\":true"))
        .count();
    assert_eq!(stream_flags, streamed);
    // The Accept header (set per mode on the handle) matches each request's own mode.
    for r in &all {
        let wants_stream = r.json().contains("\"stream\":true");
        let accept = r.header("accept").unwrap_or_default();
        assert_eq!(accept.contains("event-stream"), wants_stream, "{accept}");
    }
}
