//! Agents and the scheduler against a scriptable fake model server on 127.0.0.1.

#[path = "support/fake_server.rs"]
mod fake_server;

use agentos::agent::{AgentConfig, AgentState, Sender};
use agentos::config::RuntimeConfig;
use agentos::handle::Handle;
use agentos::runtime::events::{Event, EventKind};
use agentos::runtime::Runtime;
use agentos::tools::{Tool, ToolHandler, ToolInvocation, ToolOutcome};
use agentos::Status;
use fake_server::{FakeServer, Reply};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct FnTool(Box<dyn Fn(Arc<ToolInvocation>) + Send + Sync>);
impl ToolHandler for FnTool {
    fn invoke(&self, inv: Arc<ToolInvocation>) {
        (self.0)(inv)
    }
}

fn runtime(extra: &str) -> Runtime {
    let mut c = RuntimeConfig::default();
    c.apply_json(&format!(r#"{{"workers":2{extra}}}"#)).unwrap();
    Runtime::start(c).unwrap()
}

fn endpoint(rt: &Runtime, srv: &FakeServer, extra: &str) {
    let json = format!(
        r#"{{"name":"fake","provider":"openai","base_url":"{}/v1","model":"m","retry":{{"max_retries":0}}{extra}}}"#,
        srv.url()
    );
    rt.shared()
        .models()
        .add_endpoint_json(&json, false)
        .unwrap();
}

fn agent(rt: &Runtime, json: &str) -> Handle {
    rt.shared()
        .create_agent(AgentConfig::from_json(json).unwrap())
        .unwrap()
}

fn add_tool(
    rt: &Runtime,
    name: &str,
    schema: &str,
    f: impl Fn(Arc<ToolInvocation>) + Send + Sync + 'static,
) {
    rt.shared()
        .tools()
        .add(Tool {
            name: name.into(),
            description: format!("the {name} tool"),
            parameters: std::sync::Arc::new(serde_json::from_str(schema).unwrap()),
            timeout: Duration::ZERO,
            handler: Arc::new(FnTool(Box::new(f))),
        })
        .unwrap();
}

fn send(rt: &Runtime, h: Handle, text: &str) {
    rt.shared()
        .agent(h)
        .unwrap()
        .deliver(Sender::Host, text)
        .unwrap();
}

/// Pulls events until one matches, returning everything seen (the match last).
fn until(rt: &Runtime, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let ev = rt
            .shared()
            .events()
            .next(Some(deadline))
            .expect("event before the deadline");
        let done = pred(&ev);
        seen.push(ev);
        if done {
            return seen;
        }
    }
}

/// Where the first event of kind `k` of agent `h` is in `events` (panics, listing them, if
/// there is none).
fn position_of(events: &[Event], k: EventKind, h: Handle) -> usize {
    events
        .iter()
        .position(|e| e.kind == k && e.agent == h.raw())
        .unwrap_or_else(|| panic!("{k:?} of {h:?} in {events:?}"))
}

fn turn_end(rt: &Runtime, h: Handle) -> Event {
    until(rt, |e| e.kind == EventKind::TurnEnd && e.agent == h.raw())
        .pop()
        .unwrap()
}

const CITY: &str = r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false}"#;

#[test]
fn tool_loop_keeps_call_and_result_together_in_history() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    add_tool(&rt, "weather", CITY, |inv| {
        let city: serde_json::Value = serde_json::from_str(inv.arguments()).unwrap();
        inv.complete(ToolOutcome::Ok(format!(
            "sunny in {}",
            city["city"].as_str().unwrap()
        )));
    });
    let h = agent(
        &rt,
        r#"{"name":"a","endpoint":"fake","system":"be useful","tools":["weather"],"stream":false}"#,
    );
    srv.push(Reply::openai_tool_call(
        "c1",
        "weather",
        r#"{"city":"Paris"}"#,
    ));
    srv.push(Reply::openai_text("It is sunny in Paris."));
    send(&rt, h, "weather in Paris?");
    let end = turn_end(&rt, h);
    assert_eq!(end.status, Status::Ok);
    assert_eq!(end.text, "It is sunny in Paris.");
    let a = rt.shared().agent(h).unwrap();
    let hist = a.history_json();
    let roles: Vec<&str> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        vec!["system", "user", "assistant", "tool", "assistant"]
    );
    assert_eq!(hist[3]["content"], "sunny in Paris");
    assert_eq!(hist[3]["tool_call_id"], "c1");
    // The second request carried the tool result.
    let second: serde_json::Value = serde_json::from_str(&srv.requests()[1].json()).unwrap();
    assert_eq!(second["messages"][3]["content"], "sunny in Paris");
    assert_eq!(second["tools"][0]["function"]["name"], "weather");
    assert_eq!(a.state(), AgentState::Idle);
    assert_eq!(a.stats().tool_calls, 1);
}

#[test]
fn invalid_arguments_go_back_to_the_model_not_to_the_tool() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    let called = Arc::new(Mutex::new(0));
    let c2 = called.clone();
    add_tool(&rt, "weather", CITY, move |inv| {
        *c2.lock().unwrap() += 1;
        inv.complete(ToolOutcome::Ok("ok".into()));
    });
    let h = agent(
        &rt,
        r#"{"name":"a","endpoint":"fake","tools":["weather"],"stream":false}"#,
    );
    srv.push(Reply::openai_tool_call(
        "c1",
        "weather",
        r#"{"town":"Paris"}"#,
    ));
    srv.push(Reply::openai_text("sorry"));
    send(&rt, h, "weather?");
    let events = until(&rt, |e| e.kind == EventKind::TurnEnd);
    let result = events
        .iter()
        .find(|e| e.kind == EventKind::ToolResult)
        .unwrap();
    assert!(result.text.contains("invalid arguments"), "{}", result.text);
    assert!(result.text.contains("city"), "{}", result.text);
    assert_eq!(*called.lock().unwrap(), 0);
    let second: serde_json::Value = serde_json::from_str(&srv.requests()[1].json()).unwrap();
    assert!(second["messages"][2]["content"]
        .as_str()
        .unwrap()
        .contains("invalid arguments"));
}

#[test]
fn tools_that_finish_in_time_leave_no_timeout_timers_behind() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    add_tool(&rt, "quick", r#"{"type":"object"}"#, |inv| {
        inv.complete(ToolOutcome::Ok("done".into()));
    });
    // Completed later, from another thread: its timer goes too.
    add_tool(&rt, "later", r#"{"type":"object"}"#, |inv| {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            inv.complete(ToolOutcome::Ok("done later".into()));
        });
    });
    let h = agent(
        &rt,
        r#"{"name":"a","endpoint":"fake","tools":["quick","later"],"stream":false,"tool_timeout_ms":60000}"#,
    );
    let call = |tool: &str| {
        format!(
            r#"{{"id":"x","object":"chat.completion","model":"m","choices":[{{"index":0,"finish_reason":"tool_calls","message":{{"role":"assistant","content":null,"tool_calls":[{{"id":"c","type":"function","function":{{"name":"{tool}","arguments":"{{}}"}}}}]}}}}],"usage":{{"prompt_tokens":5,"completion_tokens":5}}}}"#
        )
    };
    for i in 0..10 {
        srv.push(Reply::json(
            200,
            &call(if i % 2 == 0 { "quick" } else { "later" }),
        ));
        srv.push(Reply::openai_text("ok"));
        send(&rt, h, "go");
        assert_eq!(turn_end(&rt, h).status, Status::Ok);
    }
    // Every timer was armed for a minute, and dropped when its call completed, before the
    // call's result went back to the agent: none is left once the turns have ended.
    let models = rt.shared().models();
    assert_eq!(models.pending_timers(), 0);
    // The count is real: a timer that is not cancelled is held until it is.
    let id = models
        .schedule(Instant::now() + Duration::from_secs(60), Box::new(|| {}))
        .unwrap();
    assert_eq!(models.pending_timers(), 1);
    models.cancel_timer(id);
    assert_eq!(models.pending_timers(), 0);
    // A timer due now runs on the I/O thread and is gone.
    let (tx, rx) = std::sync::mpsc::channel();
    models
        .schedule(Instant::now(), Box::new(move || tx.send(()).unwrap()))
        .unwrap();
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(models.pending_timers(), 0);
}

#[test]
fn parallel_tools_complete_later_from_other_threads_and_time_out() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    // "slow" completes from another thread after 100 ms; "never" never completes.
    add_tool(&rt, "slow", r#"{"type":"object"}"#, |inv| {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            assert!(inv.complete(ToolOutcome::Ok("slow done".into())));
        });
    });
    let kept: Arc<Mutex<Vec<Arc<ToolInvocation>>>> = Arc::default();
    let k2 = kept.clone();
    add_tool(&rt, "never", r#"{"type":"object"}"#, move |inv| {
        k2.lock().unwrap().push(inv)
    });
    // Two tool calls in one answer.
    let body = r#"{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","content":null,"tool_calls":[{"id":"s1","type":"function","function":{"name":"slow","arguments":"{}"}},{"id":"n1","type":"function","function":{"name":"never","arguments":"{}"}}]}}],"usage":{"prompt_tokens":5,"completion_tokens":5}}"#;
    let h2 = agent(
        &rt,
        r#"{"name":"b","endpoint":"fake","tools":["slow","never"],"stream":false,"tool_timeout_ms":300}"#,
    );
    srv.push(Reply::json(200, body));
    srv.push(Reply::openai_text("done"));
    let t0 = Instant::now();
    send(&rt, h2, "go");
    let end = turn_end(&rt, h2);
    assert_eq!(end.status, Status::Ok);
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let hist = rt.shared().agent(h2).unwrap().history_json();
    assert_eq!(hist[2]["content"], "slow done");
    assert!(hist[3]["content"]
        .as_str()
        .unwrap()
        .contains("timed out after 300 ms"));
    // Completing after the timeout is refused, not applied twice.
    assert!(!kept.lock().unwrap()[0].complete(ToolOutcome::Ok("late".into())));
}

#[test]
fn token_budget_stops_the_agent_with_limit_exceeded() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    let h = agent(
        &rt,
        r#"{"name":"a","endpoint":"fake","stream":false,"budget":{"tokens":10}}"#,
    );
    srv.push(Reply::openai_text("first answer uses thirteen tokens"));
    send(&rt, h, "one");
    assert_eq!(turn_end(&rt, h).status, Status::Ok);
    send(&rt, h, "two");
    let events = until(&rt, |e| e.kind == EventKind::TurnEnd);
    assert!(events.iter().any(|e| e.kind == EventKind::BudgetExceeded));
    assert_eq!(events.last().unwrap().status, Status::LimitExceeded);
    let a = rt.shared().agent(h).unwrap();
    assert_eq!(a.state(), AgentState::Finished);
    let e = a.deliver(Sender::Host, "three").unwrap_err();
    assert_eq!(e.status(), Status::LimitExceeded);
    assert_eq!(srv.request_count(), 1);
    // History intact: both user messages, one answer.
    assert_eq!(a.history().len(), 3);
}

#[test]
fn tool_call_budget_and_max_steps() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    add_tool(&rt, "t", r#"{"type":"object"}"#, |inv| {
        inv.complete(ToolOutcome::Ok("ok".into()));
    });
    srv.set_default(Reply::openai_tool_call("c", "t", "{}"));
    let h = agent(
        &rt,
        r#"{"name":"loop","endpoint":"fake","tools":["t"],"stream":false,"max_steps":3}"#,
    );
    send(&rt, h, "go");
    let end = turn_end(&rt, h);
    assert_eq!(end.status, Status::LimitExceeded);
    assert!(end.text.contains("max_steps (3)"), "{}", end.text);
    assert_eq!(srv.request_count(), 3);
    let b = agent(
        &rt,
        r#"{"name":"b","endpoint":"fake","tools":["t"],"stream":false,"budget":{"tool_calls":2}}"#,
    );
    send(&rt, b, "go");
    let end = turn_end(&rt, b);
    assert_eq!(end.status, Status::LimitExceeded);
    assert!(end.text.contains("tool-call budget of 2"), "{}", end.text);
    let hist = rt.shared().agent(b).unwrap().history_json();
    // Every assistant tool call in history has its result right after it.
    let msgs = hist.as_array().unwrap();
    for (i, m) in msgs.iter().enumerate() {
        if m["tool_calls"].is_array() {
            assert_eq!(msgs[i + 1]["role"], "tool");
        }
    }
}

#[test]
fn deterministic_mode_schedules_by_priority_then_fifo() {
    let srv = FakeServer::start();
    let rt = runtime(r#","deterministic":true"#);
    endpoint(&rt, &srv, "");
    srv.set_default(Reply::openai_text("ok"));
    let names = [("p1", 1), ("p5a", 5), ("p3", 3), ("p5b", 5), ("p0", 0)];
    let handles: Vec<Handle> = names
        .iter()
        .map(|(n, p)| {
            agent(
                &rt,
                &format!(r#"{{"name":"{n}","endpoint":"fake","stream":false,"priority":{p}}}"#),
            )
        })
        .collect();
    // Hold the single worker so every agent is queued before any runs.
    let gate = Arc::new(std::sync::Barrier::new(2));
    let g2 = gate.clone();
    rt.submit(
        agentos::runtime::run_queue::RunKey {
            priority: 100,
            service: 0,
        },
        Box::new(move || {
            g2.wait();
        }),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    for h in &handles {
        send(&rt, *h, "hi");
    }
    gate.wait();
    assert!(rt
        .shared()
        .wait_idle(Some(Instant::now() + Duration::from_secs(20))));
    let mut starts = Vec::new();
    while let Some(e) = rt.shared().events().next(Some(Instant::now())) {
        if e.kind == EventKind::TurnStart {
            starts.push(e.agent_name.to_string());
        }
    }
    assert_eq!(starts, vec!["p5a", "p5b", "p3", "p1", "p0"]);
}

#[test]
fn preemption_between_agents_loses_nothing() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, r#","limits":{"concurrency":1}"#);
    let low = agent(
        &rt,
        r#"{"name":"low","endpoint":"fake","priority":1,"stream_events":true}"#,
    );
    let high = agent(&rt, r#"{"name":"high","endpoint":"fake","priority":9}"#);
    srv.push(Reply::openai_stream(&["The ", "long ", "story"]).stall_after_events(3));
    srv.push(Reply::openai_stream(&["urgent"]));
    srv.push(Reply::openai_stream(&["goes ", "on."]));
    send(&rt, low, "tell a story");
    // Wait until the low agent's stream has delivered "The long " (its stream events).
    let mut events = Vec::new();
    let mut streamed = String::new();
    while streamed != "The long " {
        let mut batch = until(&rt, |e| e.kind == EventKind::StreamDelta);
        streamed.push_str(&batch.last().unwrap().text);
        events.append(&mut batch);
    }
    send(&rt, high, "urgent question");
    events.extend(until(&rt, |e| {
        e.kind == EventKind::TurnEnd && e.agent == low.raw()
    }));
    let kinds: Vec<(EventKind, String)> = events
        .iter()
        .map(|e| (e.kind, e.agent_name.to_string()))
        .collect();
    let pos = |k: EventKind, who: &str| {
        kinds
            .iter()
            .position(|(kk, n)| *kk == k && n == who)
            .unwrap_or_else(|| panic!("{k:?} {who} in {kinds:?}"))
    };
    assert!(pos(EventKind::Preempted, "low") < pos(EventKind::TurnEnd, "high"));
    // The resume is recorded. It starts the moment the urgent call frees the endpoint's one
    // slot, so its event may come before the urgent agent's TURN_END (a worker's next step):
    // the order of the calls is read off the server instead.
    pos(EventKind::Resumed, "low");
    let bodies: Vec<String> = srv.requests().iter().map(|r| r.json()).collect();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert!(bodies[0].contains("tell a story"), "{}", bodies[0]);
    assert!(
        bodies[1].contains("urgent question"),
        "the urgent call runs next: {}",
        bodies[1]
    );
    assert!(
        bodies[2].contains("tell a story") && bodies[2].contains("The long "),
        "then the low call continues from its snapshot: {}",
        bodies[2]
    );
    let snapshot = events
        .iter()
        .find(|e| e.kind == EventKind::Preempted)
        .unwrap()
        .text
        .clone();
    assert_eq!(snapshot, "The long ");
    let end = events.last().unwrap();
    assert_eq!(end.status, Status::Ok);
    assert_eq!(
        end.text,
        format!("{snapshot}goes on."),
        "snapshot + continuation"
    );
    let hist = rt.shared().agent(low).unwrap().history_json();
    assert_eq!(
        hist.as_array().unwrap().last().unwrap()["content"],
        "The long goes on."
    );
}

/// A one-tool-step agent ("low", priority 1) and an urgent agent ("high", priority 9) on the
/// fake endpoint (with `limits`): low's first call (a tool call) takes 300 ms; high is sent
/// its message once low's call is on the server; high's answer takes `high_delay`.
fn start_low_then_urgent(
    limits: &str,
    low_extra: &str,
    high_extra: &str,
    high_text: &str,
    high_delay: Duration,
) -> (FakeServer, Runtime, Handle, Handle) {
    start_low_then_urgent_in(
        runtime(""),
        limits,
        low_extra,
        high_extra,
        high_text,
        high_delay,
    )
}

/// [`start_low_then_urgent`] in runtime `rt`.
fn start_low_then_urgent_in(
    rt: Runtime,
    limits: &str,
    low_extra: &str,
    high_extra: &str,
    high_text: &str,
    high_delay: Duration,
) -> (FakeServer, Runtime, Handle, Handle) {
    let srv = FakeServer::start();
    endpoint(&rt, &srv, limits);
    add_tool(&rt, "work", r#"{"type":"object"}"#, |inv| {
        inv.complete(ToolOutcome::Ok("work done".into()));
    });
    let low = agent(
        &rt,
        &format!(
            r#"{{"name":"low","endpoint":"fake","priority":1,"tools":["work"],"stream":false{low_extra}}}"#
        ),
    );
    let high = agent(
        &rt,
        &format!(r#"{{"name":"high","endpoint":"fake","priority":9,"stream":false{high_extra}}}"#),
    );
    srv.push(Reply::openai_tool_call("w1", "work", "{}").delay(Duration::from_millis(300)));
    srv.push(Reply::openai_text("urgent answer").delay(high_delay));
    srv.push(Reply::openai_text("low answer"));
    send(&rt, low, "low task");
    assert!(srv.wait_for_requests(1, Duration::from_secs(10)));
    send(&rt, high, high_text);
    (srv, rt, low, high)
}

/// [`start_low_then_urgent`], and every event up to low's TURN_END.
fn low_then_urgent(
    limits: &str,
    low_extra: &str,
    high_extra: &str,
    high_text: &str,
    high_delay: Duration,
) -> (FakeServer, Runtime, Handle, Handle, Vec<Event>) {
    let (srv, rt, low, high) =
        start_low_then_urgent(limits, low_extra, high_extra, high_text, high_delay);
    let events = until(&rt, |e| {
        e.kind == EventKind::TurnEnd && e.agent == low.raw()
    });
    (srv, rt, low, high, events)
}

/// [`start_low_then_urgent`] on an endpoint with one slot, until low has paused at its safe
/// point (high's call waits for the slot, so high claims room); high's answer takes
/// `high_delay`.
fn low_paused(high_delay: Duration) -> (FakeServer, Runtime, Handle, Handle) {
    let (srv, rt, low, high) = start_low_then_urgent(
        r#","limits":{"concurrency":1}"#,
        "",
        "",
        "urgent task",
        high_delay,
    );
    until(&rt, |e| {
        e.kind == EventKind::Preempted && e.agent == low.raw()
    });
    (srv, rt, low, high)
}

#[test]
fn a_paused_agent_can_be_cancelled() {
    // high's answer takes long: low stays paused at its safe point meanwhile.
    let (srv, rt, low, high) = low_paused(Duration::from_secs(3));
    let a = rt.shared().agent(low).unwrap();
    assert_eq!(a.state(), AgentState::Paused);
    assert!(a.cancel());
    let end = turn_end(&rt, low);
    assert_eq!(end.status, Status::Cancelled);
    assert_eq!(a.state(), AgentState::Failed);
    // Its question, the tool call and the result stay.
    assert_eq!(a.history().len(), 3);
    // high's turn is unaffected; the server saw low's first call and high's, nothing after.
    let end = turn_end(&rt, high);
    assert_eq!(
        (end.status, end.text.as_str()),
        (Status::Ok, "urgent answer")
    );
    assert_eq!(srv.request_count(), 2);
}

#[test]
fn freeing_the_urgent_agent_gives_its_room_back() {
    let (srv, rt, low, high) = low_paused(Duration::from_secs(3));
    // high is freed with its call on the server: its turn is cancelled, its room given back,
    // and low goes on (its call waits only for high's cancelled call to leave the slot).
    assert!(srv.wait_for_requests(2, Duration::from_secs(10)));
    rt.shared().remove_agent(high).unwrap();
    let events = until(&rt, |e| {
        e.kind == EventKind::TurnEnd && e.agent == low.raw()
    });
    assert!(events
        .iter()
        .any(|e| e.kind == EventKind::Resumed && e.agent == low.raw()));
    let end = events.last().unwrap();
    assert_eq!((end.status, end.text.as_str()), (Status::Ok, "low answer"));
    assert_eq!(srv.request_count(), 3);
}

#[test]
fn an_urgent_turn_gives_its_room_back_while_its_tools_outlast_a_model_call() {
    // One slot. low's first call (a tool call) takes 300 ms; high is sent its message
    // meanwhile, waits for the slot and claims room, so low pauses at its next safe point.
    // high's answer asks for a tool that finishes only when the test lets it: past the claim
    // grace (about as long as a call here takes), high gives the room back, and low goes on
    // and finishes its turn while high's tool still runs.
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, r#","limits":{"concurrency":1}"#);
    add_tool(&rt, "work", r#"{"type":"object"}"#, |inv| {
        inv.complete(ToolOutcome::Ok("work done".into()));
    });
    let held: Arc<Mutex<Option<Arc<ToolInvocation>>>> = Arc::default();
    let hold = held.clone();
    add_tool(&rt, "slow", r#"{"type":"object"}"#, move |inv| {
        *hold.lock().unwrap() = Some(inv);
    });
    let low = agent(
        &rt,
        r#"{"name":"low","endpoint":"fake","priority":1,"tools":["work"],"stream":false}"#,
    );
    let high = agent(
        &rt,
        r#"{"name":"high","endpoint":"fake","priority":9,"tools":["slow"],"stream":false}"#,
    );
    srv.push(Reply::openai_tool_call("w1", "work", "{}").delay(Duration::from_millis(300)));
    srv.push(Reply::openai_tool_call("s1", "slow", "{}"));
    srv.push(Reply::openai_text("low answer"));
    srv.push(Reply::openai_text("urgent answer"));
    send(&rt, low, "low task");
    assert!(srv.wait_for_requests(1, Duration::from_secs(10)));
    send(&rt, high, "urgent task");
    let events = until(&rt, |e| {
        e.kind == EventKind::TurnEnd && e.agent == low.raw()
    });
    let paused = &events[position_of(&events, EventKind::Preempted, low)];
    assert_eq!(paused.detail["safe_point"], true, "{paused:?}");
    assert_eq!(paused.detail["by_priority"], 9);
    // low went on after high's tool had started, and finished while it still ran.
    let slow_started = position_of(&events, EventKind::ToolCall, high);
    let resumed = position_of(&events, EventKind::Resumed, low);
    assert!(slow_started < resumed, "{events:?}");
    let end = events.last().unwrap();
    assert_eq!((end.status, end.text.as_str()), (Status::Ok, "low answer"));
    let inv = held
        .lock()
        .unwrap()
        .take()
        .expect("high's tool is still running");
    assert_eq!(srv.request_count(), 3);
    // high's turn goes on once its tool finishes.
    inv.complete(ToolOutcome::Ok("slow done".into()));
    let end = turn_end(&rt, high);
    assert_eq!(
        (end.status, end.text.as_str()),
        (Status::Ok, "urgent answer")
    );
    assert_eq!(srv.request_count(), 4);
}

#[test]
fn a_paused_agent_gains_a_priority_level_per_starvation_limit_and_goes_on() {
    // Aging at safe points: low (priority 1) pauses under high's claim (9) while high's answer
    // takes 3 s; with starvation_ms 200 its priority rises a level every 200 ms, and past
    // high's it goes on (RESUMED, aged) while high's call is still on the server. Its call
    // then waits for the one slot like any other.
    let (srv, rt, low, high) = start_low_then_urgent_in(
        runtime(r#","starvation_ms":200"#),
        r#","limits":{"concurrency":1}"#,
        "",
        "",
        "urgent task",
        Duration::from_secs(3),
    );
    let events = until(&rt, |e| {
        e.kind == EventKind::TurnEnd && e.agent == low.raw()
    });
    let paused = position_of(&events, EventKind::Preempted, low);
    let resumed = position_of(&events, EventKind::Resumed, low);
    assert!(paused < resumed);
    // Once: its call ages from the pause, so admission does not hold it again for the claim.
    let count = |k| {
        events
            .iter()
            .filter(|e| e.kind == k && e.agent == low.raw())
            .count()
    };
    assert_eq!(
        (count(EventKind::Preempted), count(EventKind::Resumed)),
        (1, 1),
        "{events:?}"
    );
    assert_eq!(
        events[resumed].detail["aged"], true,
        "{:?}",
        events[resumed]
    );
    assert_eq!(events[resumed].detail["by_priority"], 9);
    // It went on before high's turn ended; its call then waited for high's to leave the slot.
    let high_end = position_of(&events, EventKind::TurnEnd, high);
    assert!(resumed < high_end, "{events:?}");
    let end = events.last().unwrap();
    assert_eq!((end.status, end.text.as_str()), (Status::Ok, "low answer"));
    assert_eq!(srv.request_count(), 3);
    // Its wake-up under the claim was dropped as it went on; no timer is left armed.
    let models = rt.shared().models();
    assert_eq!(models.endpoint("fake").unwrap().room.paused(), 0);
    assert_eq!(models.pending_timers(), 0);
}

#[test]
fn the_runtime_shuts_down_with_an_agent_paused_and_the_urgent_call_in_flight() {
    let (_srv, rt, _low, _high) = low_paused(Duration::from_secs(5));
    let t0 = Instant::now();
    drop(rt);
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
}

/// Checks the first tier of token-aware preemption in `events`: low paused at its safe point
/// (tool done, about to call the model) under high's claim, resumed once high's turn ended,
/// and lost nothing; the calls went low, high, low.
fn assert_paused_at_safe_point(
    srv: &FakeServer,
    rt: &Runtime,
    low: Handle,
    high: Handle,
    high_text: &str,
    events: &[Event],
) {
    let pos = |k: EventKind, h: Handle| position_of(events, k, h);
    let paused = &events[pos(EventKind::Preempted, low)];
    assert_eq!(paused.detail["safe_point"], true, "{paused:?}");
    assert_eq!(paused.detail["by_priority"], 9);
    assert_eq!(paused.text, "", "nothing was in flight: no snapshot");
    let resumed = &events[pos(EventKind::Resumed, low)];
    assert_eq!(resumed.detail["safe_point"], true);
    assert!(pos(EventKind::ToolResult, low) < pos(EventKind::Preempted, low));
    assert!(pos(EventKind::Preempted, low) < pos(EventKind::TurnEnd, high));
    assert!(pos(EventKind::TurnEnd, high) < pos(EventKind::Resumed, low));
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == EventKind::Preempted || e.kind == EventKind::Resumed)
            .count(),
        2,
        "one pause, one resume: {events:?}"
    );
    let end = events.last().unwrap();
    assert_eq!((end.status, end.text.as_str()), (Status::Ok, "low answer"));
    let bodies: Vec<String> = srv.requests().iter().map(|r| r.json()).collect();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert!(bodies[0].contains("low task") && !bodies[0].contains("work done"));
    assert!(
        bodies[1].contains(high_text) && !bodies[1].contains("low task"),
        "the urgent call: {}",
        bodies[1]
    );
    assert!(
        bodies[2].contains("low task") && bodies[2].contains("work done"),
        "low goes on with its tool result: {}",
        bodies[2]
    );
    let hist = rt.shared().agent(low).unwrap().history_json();
    let roles: Vec<&str> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, vec!["user", "assistant", "tool", "assistant"]);
    assert_eq!(
        rt.shared().agent(low).unwrap().state(),
        AgentState::Idle,
        "not left paused"
    );
}

#[test]
fn less_urgent_agent_pauses_at_a_safe_point_while_an_urgent_call_waits_for_room() {
    // Concurrency 1: high's call waits for low's slot, so high claims room; low's call is
    // not a stream (nothing to preempt), and low pauses once its tool is done.
    let (srv, rt, low, high, events) = low_then_urgent(
        r#","limits":{"concurrency":1}"#,
        "",
        "",
        "urgent task",
        Duration::from_millis(300),
    );
    assert_paused_at_safe_point(&srv, &rt, low, high, "urgent task", &events);
}

#[test]
fn an_urgent_agent_near_its_context_limit_makes_less_urgent_agents_pause() {
    // No limits: high's call is admitted at once, but its conversation fills over 90% of the
    // room its small context leaves for messages, so it claims room as it sends.
    let text =
        "Summarise the quarterly figures for every region and list the outliers. ".repeat(20);
    let tokens = agentos::context::tokens::message_tokens(
        &agentos::model::types::ChatMessage::text(agentos::model::types::Role::User, text.clone()),
    );
    // The room for messages: context_limit - max_tokens - 64 (no tools); the message fills 95%.
    let room = tokens * 100 / 95;
    let limit = room + 16 + 64;
    let (srv, rt, low, high, events) = low_then_urgent(
        "",
        "",
        &format!(r#","context_limit":{limit},"max_tokens":16"#),
        &text,
        Duration::from_millis(800),
    );
    assert_paused_at_safe_point(&srv, &rt, low, high, &text, &events);
}

#[test]
fn an_agent_that_is_not_preemptible_is_never_paused() {
    let (_srv, _rt, low, _high, events) = low_then_urgent(
        r#","limits":{"concurrency":1}"#,
        r#","preemptible":false"#,
        "",
        "urgent task",
        Duration::from_millis(300),
    );
    assert!(
        !events
            .iter()
            .any(|e| e.agent == low.raw()
                && matches!(e.kind, EventKind::Preempted | EventKind::Resumed)),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap().text, "low answer");
}

#[test]
fn a_queued_less_urgent_call_is_held_while_an_urgent_turn_needs_the_slot() {
    // One slot. lowA's call holds it; high (a tool loop) and lowB arrive meanwhile. high's
    // call waits for the slot, so high claims room. While high runs its tool (150 ms) the slot
    // is free, but lowB's queued call (at a safe point: not started) is held for high rather
    // than taking it, and goes once high's turn has ended.
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, r#","limits":{"concurrency":1}"#);
    add_tool(&rt, "work", r#"{"type":"object"}"#, |inv| {
        std::thread::sleep(Duration::from_millis(150));
        inv.complete(ToolOutcome::Ok("work done".into()));
    });
    let low_a = agent(
        &rt,
        r#"{"name":"lowa","endpoint":"fake","priority":1,"stream":false}"#,
    );
    let low_b = agent(
        &rt,
        r#"{"name":"lowb","endpoint":"fake","priority":1,"stream":false}"#,
    );
    let high = agent(
        &rt,
        r#"{"name":"high","endpoint":"fake","priority":9,"tools":["work"],"stream":false}"#,
    );
    srv.push(Reply::openai_text("a done").delay(Duration::from_millis(300)));
    srv.push(Reply::openai_tool_call("w1", "work", "{}").delay(Duration::from_millis(300)));
    srv.push(Reply::openai_text("urgent done").delay(Duration::from_millis(100)));
    srv.push(Reply::openai_text("b done"));
    send(&rt, low_a, "a task");
    assert!(srv.wait_for_requests(1, Duration::from_secs(10)));
    send(&rt, high, "urgent task");
    send(&rt, low_b, "b task");
    let events = until(&rt, |e| {
        e.kind == EventKind::TurnEnd && e.agent == low_b.raw()
    });
    let pos = |k: EventKind, h: Handle| position_of(&events, k, h);
    let held = &events[pos(EventKind::Preempted, low_b)];
    assert_eq!(held.detail["safe_point"], true, "{held:?}");
    assert_eq!(held.detail["by_priority"], 9);
    assert_eq!(
        events[pos(EventKind::Resumed, low_b)].detail["safe_point"],
        true
    );
    assert!(pos(EventKind::Preempted, low_b) < pos(EventKind::TurnEnd, high));
    assert!(pos(EventKind::TurnEnd, high) < pos(EventKind::Resumed, low_b));
    assert!(
        !events
            .iter()
            .any(|e| e.kind == EventKind::Preempted && e.agent != low_b.raw()),
        "{events:?}"
    );
    let bodies: Vec<String> = srv.requests().iter().map(|r| r.json()).collect();
    assert_eq!(bodies.len(), 4, "{bodies:?}");
    assert!(bodies[0].contains("a task"));
    assert!(bodies[1].contains("urgent task") && !bodies[1].contains("work done"));
    assert!(
        bodies[2].contains("work done"),
        "high's second call took the slot, not lowB's: {bodies:?}"
    );
    assert!(bodies[3].contains("b task"));
    let end = events.last().unwrap();
    assert_eq!((end.status, end.text.as_str()), (Status::Ok, "b done"));
    assert_eq!(rt.shared().agent(low_b).unwrap().state(), AgentState::Idle);
}

#[test]
fn stale_handles_cancel_and_shutdown_with_work_in_flight() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    let h = agent(&rt, r#"{"name":"a","endpoint":"fake"}"#);
    srv.push(Reply::openai_stream(&["partial"]).stall_after_events(2));
    send(&rt, h, "hang");
    until(&rt, |e| e.kind == EventKind::ModelRequest);
    std::thread::sleep(Duration::from_millis(100));
    assert!(rt.shared().agent(h).unwrap().cancel());
    let end = turn_end(&rt, h);
    assert_eq!(end.status, Status::Cancelled);
    let a = rt.shared().agent(h).unwrap();
    assert_eq!(a.state(), AgentState::Failed);
    assert_eq!(
        a.history().len(),
        1,
        "the user message stays; nothing half-written"
    );
    // Stale handle after removal; the name is free again.
    rt.shared().remove_agent(h).unwrap();
    assert_eq!(
        rt.shared().agent(h).err().unwrap().status(),
        Status::StaleHandle
    );
    assert_eq!(
        rt.shared().remove_agent(h).unwrap_err().status(),
        Status::StaleHandle
    );
    let h2 = agent(&rt, r#"{"name":"a","endpoint":"fake"}"#);
    assert_ne!(h, h2);
    // Shutdown with a call in flight completes without hanging.
    srv.push(Reply::openai_stream(&["x"]).stall_after_events(2));
    send(&rt, h2, "hang again");
    until(&rt, |e| e.kind == EventKind::ModelRequest);
    let t0 = Instant::now();
    drop(rt);
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn agents_message_each_other_by_name_and_answers_come_back() {
    let srv = FakeServer::start();
    let rt = runtime(r#","deterministic":true"#);
    endpoint(&rt, &srv, "");
    let boss = agent(
        &rt,
        r#"{"name":"boss","endpoint":"fake","tools":["send_message"],"stream":false}"#,
    );
    let _helper = agent(&rt, r#"{"name":"helper","endpoint":"fake","stream":false}"#);
    srv.push(Reply::openai_tool_call(
        "m1",
        "send_message",
        r#"{"to":"helper","text":"what is 2+2?"}"#,
    ));
    // After the tool call, the boss's next call and the helper's first call race to the server;
    // every later reply is the same, so the order of requests does not matter.
    srv.set_default(Reply::openai_text("4"));
    send(&rt, boss, "ask the helper");
    assert!(rt
        .shared()
        .wait_idle(Some(Instant::now() + Duration::from_secs(20))));
    let mut ends = Vec::new();
    let mut starts = Vec::new();
    let mut messages = 0;
    while let Some(e) = rt.shared().events().next(Some(Instant::now())) {
        match e.kind {
            EventKind::TurnEnd => ends.push((e.agent_name.to_string(), e.status)),
            EventKind::TurnStart => starts.push((e.agent_name.to_string(), e.text.clone())),
            EventKind::Message => messages += 1,
            _ => {}
        }
    }
    assert_eq!(messages, 1);
    ends.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        ends,
        vec![
            ("boss".to_string(), Status::Ok),
            ("boss".to_string(), Status::Ok),
            ("helper".to_string(), Status::Ok)
        ]
    );
    assert!(starts.contains(&("helper".to_string(), "what is 2+2?".to_string())));
    assert!(
        starts.contains(&("boss".to_string(), "4".to_string())),
        "the helper's answer came back: {starts:?}"
    );
    let boss_hist = rt.shared().agent(boss).unwrap().history_json();
    assert!(boss_hist.as_array().unwrap().iter().any(|m| m["content"]
        .as_str()
        .unwrap_or("")
        .contains("[message from agent helper]\n4")));
}

#[test]
fn freeing_a_busy_agent_drops_its_work_and_the_runtime_goes_idle() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    srv.push(Reply::openai_stream(&["x"]).stall_after_events(2));
    let h = agent(&rt, r#"{"name":"a","endpoint":"fake"}"#);
    send(&rt, h, "one");
    send(&rt, h, "two");
    send(&rt, h, "three");
    until(&rt, |e| e.kind == EventKind::ModelRequest);
    let a = rt.shared().agent(h).unwrap();
    rt.shared().remove_agent(h).unwrap();
    assert!(rt
        .shared()
        .wait_idle(Some(Instant::now() + Duration::from_secs(10))));
    assert_eq!(
        a.deliver(Sender::Host, "late").unwrap_err().status(),
        Status::StaleHandle
    );
    assert!(
        srv.request_count() <= 1,
        "queued messages were dropped, not run"
    );
}

#[test]
fn request_bodies_are_rendered_in_a_turn_arena_that_is_reset_when_the_turn_ends() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    add_tool(&rt, "weather", CITY, |inv| {
        inv.complete(ToolOutcome::Ok("sunny".into()));
    });
    let h = agent(
        &rt,
        r#"{"name":"a","endpoint":"fake","system":"sys","tools":["weather"],"stream":false}"#,
    );
    srv.push(Reply::openai_tool_call(
        "c1",
        "weather",
        r#"{"city":"Paris"}"#,
    ));
    srv.push(Reply::openai_text("done"));
    send(&rt, h, "weather?");
    assert_eq!(turn_end(&rt, h).status, Status::Ok);
    let st = rt.shared().agent(h).unwrap().stats();
    assert_eq!(st.arena_in_use, 0, "the arena is reset when the turn ends");
    assert!(st.arena_high_water > 0, "bodies were rendered in the arena");
    // The bodies the server got are the arena-rendered ones: valid JSON with the whole turn.
    let second: serde_json::Value = serde_json::from_str(&srv.requests()[1].json()).unwrap();
    assert_eq!(second["messages"][0]["content"], "sys");
    assert_eq!(
        second["messages"][2]["tool_calls"][0]["function"]["arguments"],
        r#"{"city":"Paris"}"#
    );
    assert_eq!(second["messages"][3]["tool_call_id"], "c1");
    assert_eq!(second["tools"][0]["function"]["name"], "weather");
    let rt_stats = rt.shared().stats_json();
    assert!(rt_stats["arena_high_water_total"].as_u64().unwrap() > 0);
}

/// Waits until both workers of a fresh runtime are parked waiting for work.
fn let_workers_park() {
    std::thread::sleep(Duration::from_millis(100));
}

#[test]
fn a_lone_agent_on_a_quick_endpoint_makes_its_calls_on_its_own_worker() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    add_tool(&rt, "weather", CITY, |inv| {
        inv.complete(ToolOutcome::Ok("sunny".into()));
    });
    let h = agent(
        &rt,
        r#"{"name":"a","endpoint":"fake","tools":["weather"],"stream":false}"#,
    );
    // The first calls go through the I/O thread: how quickly the endpoint answers is not known
    // yet. Once it is known to answer in under 2 ms, with the other worker idle, the agent's
    // worker makes its calls itself.
    warm_up(&rt, &srv, h);
    let models = rt.shared().models();
    let mut here = 0;
    for _ in 0..3 {
        let before = models.caller_thread_calls();
        let_workers_park();
        srv.push(Reply::openai_tool_call(
            "c1",
            "weather",
            r#"{"city":"Oslo"}"#,
        ));
        srv.push(Reply::openai_text("sunny in Oslo"));
        send(&rt, h, "weather?");
        let end = turn_end(&rt, h);
        assert_eq!(end.status, Status::Ok);
        assert_eq!(end.text, "sunny in Oslo");
        here += models.caller_thread_calls() - before;
    }
    assert!(here >= 5, "{here} of 6 calls ran on the worker");
    assert_eq!(models.io_threads(), 1);
    assert_eq!(rt.shared().agent(h).unwrap().stats().tool_calls, 3);
}

#[test]
fn a_worker_busy_with_a_slow_call_does_not_hold_up_other_agents() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    let slow = agent(&rt, r#"{"name":"slow","endpoint":"fake","stream":false}"#);
    let quick = agent(&rt, r#"{"name":"quick","endpoint":"fake","stream":false}"#);
    let_workers_park();
    srv.push(Reply::openai_text("late").delay(Duration::from_millis(1500)));
    srv.push(Reply::openai_text("soon"));
    send(&rt, slow, "take your time");
    assert!(srv.wait_for_requests(1, Duration::from_secs(10)));
    send(&rt, quick, "hurry");
    let first = until(&rt, |e| e.kind == EventKind::TurnEnd).pop().unwrap();
    assert_eq!(first.agent, quick.raw(), "the quick agent finished first");
    assert_eq!(first.text, "soon");
    assert_eq!(
        rt.shared().agent(slow).unwrap().state(),
        AgentState::WaitingModel
    );
    let end = turn_end(&rt, slow);
    assert_eq!((end.status, end.text.as_str()), (Status::Ok, "late"));
    // The endpoint is now known to answer slowly: even with a worker idle, calls go through
    // the I/O thread, and no worker sits out a long call.
    let_workers_park();
    srv.push(Reply::openai_text("again"));
    send(&rt, quick, "once more");
    assert_eq!(turn_end(&rt, quick).text, "again");
    assert_eq!(rt.shared().models().caller_thread_calls(), 0);
}

/// Runs turns until the endpoint is known to answer quickly, so calls run on the agent's
/// worker (with the other worker parked, see `let_workers_park`); returns how many it took.
/// Right after a turn ends its worker may still be finishing the step; a turn started then
/// goes through the I/O thread, which is correct but not what these tests look at.
fn warm_up(rt: &Runtime, srv: &FakeServer, h: Handle) -> u32 {
    let models = rt.shared().models();
    for n in 1..30 {
        let before = models.caller_thread_calls();
        let_workers_park();
        srv.push(Reply::openai_text("warm"));
        send(rt, h, "warm up");
        assert_eq!(turn_end(rt, h).status, Status::Ok);
        if models.caller_thread_calls() > before {
            return n;
        }
    }
    panic!("calls never ran on the agent's worker");
}

#[test]
fn a_tool_that_blocks_its_worker_still_times_out_and_the_turn_goes_on() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = Mutex::new(held);
    let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r2 = released.clone();
    add_tool(&rt, "stuck", r#"{"type":"object"}"#, move |inv| {
        // Blocks its thread until the test lets go (a badly behaved tool).
        let _ = held.lock().unwrap().recv_timeout(Duration::from_secs(15));
        r2.store(true, std::sync::atomic::Ordering::SeqCst);
        inv.complete(ToolOutcome::Ok("too late".into()));
    });
    let h = agent(
        &rt,
        r#"{"name":"a","endpoint":"fake","tools":["stuck"],"stream":false,"tool_timeout_ms":200}"#,
    );
    warm_up(&rt, &srv, h);
    let_workers_park();
    srv.push(Reply::openai_tool_call("c1", "stuck", "{}"));
    srv.push(Reply::openai_text("gave up on the tool"));
    send(&rt, h, "use the tool");
    let end = turn_end(&rt, h);
    assert_eq!(end.status, Status::Ok);
    assert_eq!(end.text, "gave up on the tool");
    assert!(
        !released.load(std::sync::atomic::Ordering::SeqCst),
        "the turn ended while the tool still held its thread"
    );
    let hist = rt.shared().agent(h).unwrap().history_json();
    let tool_msg = hist
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "tool")
        .unwrap()
        .clone();
    assert!(
        tool_msg["content"].as_str().unwrap().contains("timed out"),
        "{tool_msg}"
    );
    release.send(()).unwrap();
}

#[test]
fn a_retry_of_a_call_made_on_the_agents_worker_continues_on_the_io_thread() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(
        &rt,
        &srv,
        r#","retry":{"max_retries":2,"base_delay_ms":20,"max_delay_ms":40}"#,
    );
    let h = agent(&rt, r#"{"name":"a","endpoint":"fake","stream":false}"#);
    warm_up(&rt, &srv, h);
    let before = srv.request_count();
    let_workers_park();
    srv.push(Reply::status_error(503, "busy"));
    srv.push(Reply::openai_text("second try"));
    send(&rt, h, "again");
    let end = turn_end(&rt, h);
    assert_eq!((end.status, end.text.as_str()), (Status::Ok, "second try"));
    assert_eq!(srv.request_count() - before, 2);
    assert_eq!(rt.shared().models().totals().retries, 1);
}

#[test]
fn run_turn_runs_the_turn_on_the_calling_thread() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    let tool_thread = Arc::new(Mutex::new(None));
    let seen = tool_thread.clone();
    add_tool(&rt, "weather", CITY, move |inv| {
        *seen.lock().unwrap() = Some(std::thread::current().id());
        inv.complete(ToolOutcome::Ok("sunny".into()));
    });
    let h = agent(
        &rt,
        r#"{"name":"a","endpoint":"fake","tools":["weather"],"stream":false}"#,
    );
    srv.push(Reply::openai_tool_call(
        "c1",
        "weather",
        r#"{"city":"Oslo"}"#,
    ));
    srv.push(Reply::openai_text("sunny in Oslo"));
    let a = rt.shared().agent(h).unwrap();
    let models = rt.shared().models();
    let before = models.caller_thread_calls();
    assert_eq!(a.run_turn("weather?", None).unwrap(), "sunny in Oslo");
    // No time limit: both calls ran here, whatever the endpoint's speed, and so did the tool.
    assert_eq!(models.caller_thread_calls() - before, 2);
    assert_eq!(
        *tool_thread.lock().unwrap(),
        Some(std::thread::current().id())
    );
    assert_eq!(a.state(), AgentState::Idle);
    assert_eq!(a.history().len(), 4);
    // The turn's events went out as usual, in order, and the turn has ended by the time
    // run_turn returns.
    let kinds: Vec<EventKind> = until(&rt, |e| e.kind == EventKind::TurnEnd)
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::TurnStart,
            EventKind::ModelRequest,
            EventKind::ModelResponse,
            EventKind::ToolCall,
            EventKind::ToolResult,
            EventKind::ModelRequest,
            EventKind::ModelResponse,
            EventKind::TurnEnd
        ]
    );
}

#[test]
fn run_turn_reports_failures_and_waits_behind_queued_turns() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    add_tool(&rt, "noop", r#"{"type":"object"}"#, |inv| {
        inv.complete(ToolOutcome::Ok("{}".into()));
    });
    let h = agent(
        &rt,
        r#"{"name":"a","endpoint":"fake","tools":["noop"],"stream":false,"max_steps":1}"#,
    );
    let a = rt.shared().agent(h).unwrap();
    // The server's error comes back as the status and message of the turn.
    srv.push(Reply::status_error(500, "it broke"));
    let e = a.run_turn("one", None).unwrap_err();
    assert_eq!(e.status(), Status::Http);
    assert!(
        e.message().contains("500") && e.message().contains("it broke"),
        "{}",
        e.message()
    );
    assert_eq!(a.state(), AgentState::Failed);
    // max_steps.
    srv.push(Reply::openai_tool_call("c1", "noop", "{}"));
    let e = a.run_turn("two", None).unwrap_err();
    assert_eq!(e.status(), Status::LimitExceeded);
    assert!(e.message().contains("max_steps"), "{}", e.message());
    // A message sent earlier is answered first; run_turn waits for its own.
    srv.push(Reply::openai_text("first").delay(Duration::from_millis(300)));
    srv.push(Reply::openai_text("second"));
    send(&rt, h, "earlier");
    assert!(srv.wait_for_requests(3, Duration::from_secs(10)));
    assert_eq!(a.run_turn("later", None).unwrap(), "second");
    let hist = a.history_json();
    let contents: Vec<&str> = hist
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    let pos = |s: &str| contents.iter().position(|c| *c == s).unwrap();
    assert!(pos("earlier") < pos("first") && pos("first") < pos("later"));
    assert!(pos("later") < pos("second"));
}

#[test]
fn run_turn_with_a_time_limit_times_out_and_the_turn_goes_on() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    let h = agent(&rt, r#"{"name":"a","endpoint":"fake","stream":false}"#);
    let a = rt.shared().agent(h).unwrap();
    srv.push(Reply::openai_text("late").delay(Duration::from_millis(800)));
    let t0 = Instant::now();
    let e = a
        .run_turn(
            "take your time",
            Some(Instant::now() + Duration::from_millis(100)),
        )
        .unwrap_err();
    // The endpoint's speed is unknown, so with a time limit the call went to the I/O thread
    // and the wait ended on time.
    assert!(
        t0.elapsed() < Duration::from_millis(700),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(e.status(), Status::Timeout);
    assert!(e.message().contains("still running"), "{}", e.message());
    let end = turn_end(&rt, h);
    assert_eq!((end.status, end.text.as_str()), (Status::Ok, "late"));
    assert_eq!(rt.shared().models().caller_thread_calls(), 0);
}

#[test]
fn run_turn_ends_when_the_agent_is_cancelled_or_freed() {
    let srv = Arc::new(FakeServer::start());
    let rt = Arc::new(runtime(""));
    endpoint(&rt, &srv, "");
    let h = agent(&rt, r#"{"name":"a","endpoint":"fake","stream":false}"#);
    let a = rt.shared().agent(h).unwrap();
    // Cancelled from another thread while the calling thread waits for the model itself.
    srv.push(Reply::openai_text("never").delay(Duration::from_secs(5)));
    let (a2, srv_wait) = (a.clone(), srv.clone());
    let canceller = std::thread::spawn(move || {
        assert!(srv_wait.wait_for_requests(1, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(50));
        assert!(a2.cancel());
    });
    let t0 = Instant::now();
    let e = a.run_turn("hang", None).unwrap_err();
    canceller.join().unwrap();
    assert_eq!(e.status(), Status::Cancelled);
    assert!(t0.elapsed() < Duration::from_secs(4));
    assert_eq!(
        a.history().len(),
        1,
        "the message stays; nothing half-written"
    );
    // Freed while one turn runs and another message waits behind it: the running turn is
    // cancelled, the queued message is dropped with the agent, and both waiters hear of it.
    srv.push(Reply::openai_text("never").delay(Duration::from_secs(5)));
    let before = srv.request_count();
    send(&rt, h, "busy");
    assert!(srv.wait_for_requests(before + 1, Duration::from_secs(10)));
    let a3 = a.clone();
    let queued = std::thread::spawn(move || a3.run_turn("queued", None));
    wait_until(|| a.inbox_len() == 1);
    rt.shared().remove_agent(h).unwrap();
    let e = queued.join().unwrap().unwrap_err();
    assert_eq!(e.status(), Status::StaleHandle, "{}", e.message());
    assert_eq!(
        a.run_turn("after", None).unwrap_err().status(),
        Status::StaleHandle
    );
}

#[test]
fn run_turn_in_deterministic_mode_leaves_the_turn_to_the_worker() {
    let srv = FakeServer::start();
    let rt = runtime(r#","deterministic":true"#);
    endpoint(&rt, &srv, "");
    let h = agent(&rt, r#"{"name":"a","endpoint":"fake","stream":false}"#);
    srv.push(Reply::openai_text("hello"));
    let a = rt.shared().agent(h).unwrap();
    assert_eq!(a.run_turn("hi", None).unwrap(), "hello");
    assert_eq!(rt.shared().models().caller_thread_calls(), 0);
}

/// Polls `cond` until it holds (at most 10 s).
fn wait_until(cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "condition never held");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn run_turn_returns_when_its_own_turn_ends_and_leaves_later_turns_to_the_workers() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    let me: Arc<std::sync::OnceLock<Arc<agentos::agent::Agent>>> = Arc::default();
    let me2 = me.clone();
    // The tool queues a second message for its own agent while the first turn runs.
    add_tool(&rt, "enqueue", r#"{"type":"object"}"#, move |inv| {
        me2.get().unwrap().deliver(Sender::Host, "second").unwrap();
        inv.complete(ToolOutcome::Ok("queued".into()));
    });
    let h = agent(
        &rt,
        r#"{"name":"a","endpoint":"fake","tools":["enqueue"],"stream":false}"#,
    );
    let a = rt.shared().agent(h).unwrap();
    let _ = me.set(a.clone());
    srv.push(Reply::openai_tool_call("c1", "enqueue", "{}"));
    srv.push(Reply::openai_text("first done"));
    srv.push(Reply::openai_text("second done").delay(Duration::from_millis(1500)));
    let t0 = Instant::now();
    assert_eq!(a.run_turn("first", None).unwrap(), "first done");
    // The second turn's slow call was not run on this thread.
    assert!(
        t0.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t0.elapsed()
    );
    let end = until(&rt, |e| {
        e.kind == EventKind::TurnEnd && e.text == "second done"
    });
    assert_eq!(end.last().unwrap().status, Status::Ok);
}

#[test]
fn messages_queued_before_a_budget_runs_out_are_answered_not_left_waiting() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    add_tool(&rt, "noop", r#"{"type":"object"}"#, |inv| {
        inv.complete(ToolOutcome::Ok("{}".into()));
    });
    // The first answer (a tool call) reports 12 tokens: over the budget of 5, so the turn
    // stops before its next model call and the agent finishes.
    let h = agent(
        &rt,
        r#"{"name":"a","endpoint":"fake","tools":["noop"],"stream":false,"budget":{"tokens":5}}"#,
    );
    let a = rt.shared().agent(h).unwrap();
    srv.push(Reply::openai_tool_call("c1", "noop", "{}").delay(Duration::from_millis(300)));
    send(&rt, h, "first");
    assert!(srv.wait_for_requests(1, Duration::from_secs(10)));
    let a2 = a.clone();
    // (A time limit, so a regression fails the test instead of hanging it.)
    let queued = std::thread::spawn(move || {
        a2.run_turn("second", Some(Instant::now() + Duration::from_secs(10)))
    });
    wait_until(|| a.inbox_len() == 1);
    let e = queued.join().unwrap().unwrap_err();
    assert_eq!(e.status(), Status::LimitExceeded, "{}", e.message());
    assert!(e.message().contains("has finished"), "{}", e.message());
    assert_eq!(a.state(), AgentState::Finished);
    assert_eq!(a.inbox_len(), 0);
    assert!(rt
        .shared()
        .wait_idle(Some(Instant::now() + Duration::from_secs(10))));
    // The refusal is an event too, carrying the message.
    let refused = until(&rt, |e| {
        e.kind == EventKind::Error && e.text.contains("has finished")
    });
    assert!(refused
        .last()
        .unwrap()
        .detail
        .get()
        .to_string()
        .contains("second"));
}

#[test]
fn run_turn_from_the_agents_own_tool_is_refused_not_a_deadlock() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    let me: Arc<std::sync::OnceLock<Arc<agentos::agent::Agent>>> = Arc::default();
    let me2 = me.clone();
    let seen = Arc::new(Mutex::new(None));
    let seen2 = seen.clone();
    add_tool(&rt, "recurse", r#"{"type":"object"}"#, move |inv| {
        let r = me2
            .get()
            .unwrap()
            .run_turn("inner", Some(Instant::now() + Duration::from_secs(5)));
        *seen2.lock().unwrap() = Some(r.map_err(|e| e.status()));
        inv.complete(ToolOutcome::Ok("tried".into()));
    });
    let h = agent(
        &rt,
        r#"{"name":"a","endpoint":"fake","tools":["recurse"],"stream":false}"#,
    );
    let a = rt.shared().agent(h).unwrap();
    let _ = me.set(a.clone());
    srv.push(Reply::openai_tool_call("c1", "recurse", "{}"));
    srv.push(Reply::openai_text("outer done"));
    assert_eq!(a.run_turn("outer", None).unwrap(), "outer done");
    assert_eq!(*seen.lock().unwrap(), Some(Err(Status::InvalidArgument)));
}

#[test]
fn a_stateless_agent_starts_each_turn_from_its_system_prompt() {
    let srv = FakeServer::start();
    let rt = runtime("");
    endpoint(&rt, &srv, "");
    // The tool answers differently each time, in results of one length.
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let m = n.clone();
    add_tool(&rt, "weather", CITY, move |inv| {
        let i = m.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let text = format!("{{ \"sky\" : \"{}\" }}", ["aaaa", "bbbb"][i % 2]);
        inv.complete(ToolOutcome::Ok(text));
    });
    let h = agent(
        &rt,
        r#"{"name":"s","endpoint":"fake","system":"Be brief.","tools":["weather"],"stream":false,"keep_history":false}"#,
    );
    let a = rt.shared().agent(h).unwrap();
    for (question, sky) in [("weather in Oslo?", "aaaa"), ("weather in Rome?", "bbbb")] {
        srv.push(Reply::openai_tool_call("c1", "weather", r#"{"city":"X"}"#));
        srv.push(Reply::openai_text("done"));
        assert_eq!(a.run_turn(question, None).unwrap(), "done");
        // Only this turn: the system prompt, the question, the call, its result, the answer.
        let hist = a.history();
        assert_eq!(hist.len(), 5);
        assert_eq!(
            (&*hist[0].content, &*hist[1].content),
            ("Be brief.", question)
        );
        // The request after the tool call carried this turn's result (minified), and nothing
        // of the turn before, though the messages sit at the same places with the same
        // lengths (what views cached for the dropped ones must not be reused).
        let body = srv.requests().last().unwrap().json();
        let want = format!("{{\\\"sky\\\":\\\"{sky}\\\"}}");
        assert!(body.contains(&want), "{want} in {body}");
        assert!(
            !body.contains(if sky == "aaaa" { "bbbb" } else { "aaaa" }),
            "{body}"
        );
        assert!(
            !body.contains("Oslo") || question.contains("Oslo"),
            "{body}"
        );
    }
    // The history's byte count followed the cut, in the agent and in the runtime's total.
    let held: usize = a
        .history()
        .iter()
        .map(|m| {
            m.content.len()
                + m.tool_calls
                    .iter()
                    .map(|c| c.id.len() + c.name.len() + c.arguments.len())
                    .sum::<usize>()
                + m.tool_call_id.as_ref().map_or(0, String::len)
        })
        .sum();
    assert_eq!(a.stats().history_bytes, held);
    assert_eq!(rt.shared().history_bytes(), held as u64);
    // The counts still add up over the agent's life.
    assert_eq!((a.stats().turns, a.stats().tool_calls), (2, 2));
}

#[test]
fn a_stateless_agent_keeps_the_turn_an_answer_to_its_message_belongs_to() {
    let srv = FakeServer::start();
    let rt = runtime(r#","deterministic":true"#);
    endpoint(&rt, &srv, "");
    let boss = agent(
        &rt,
        r#"{"name":"boss","endpoint":"fake","tools":["send_message"],"stream":false,"keep_history":false,"max_history_bytes":400}"#,
    );
    let _helper = agent(&rt, r#"{"name":"helper","endpoint":"fake","stream":false}"#);
    srv.push(Reply::openai_tool_call(
        "m1",
        "send_message",
        r#"{"to":"helper","text":"what is 2+2?"}"#,
    ));
    srv.set_default(Reply::openai_text("4"));
    send(&rt, boss, "ask the helper");
    assert!(rt
        .shared()
        .wait_idle(Some(Instant::now() + Duration::from_secs(20))));
    // The helper's answer came back as a new turn that still sees the question it answers.
    let hist = rt.shared().agent(boss).unwrap().history_json().to_string();
    assert!(hist.contains("ask the helper"), "{hist}");
    assert!(hist.contains("what is 2+2?"), "{hist}");
    assert!(hist.contains(r"[message from agent helper]\n4"), "{hist}");
    // Over max_history_bytes as held, yet a new message fits: the turn it starts drops the
    // rest (the limit is checked against what the turn will hold).
    let held = rt.shared().agent(boss).unwrap().stats().history_bytes;
    assert!(held > 0);
    let long = "x".repeat(400 - 10);
    assert!(held + long.len() > 400);
    send(&rt, boss, &long);
    let refused = rt
        .shared()
        .agent(boss)
        .unwrap()
        .deliver(Sender::Host, &"y".repeat(401));
    assert_eq!(refused.unwrap_err().status(), Status::LimitExceeded);
    assert!(rt
        .shared()
        .wait_idle(Some(Instant::now() + Duration::from_secs(20))));
    let hist = rt.shared().agent(boss).unwrap().history();
    assert_eq!(hist.len(), 2, "the long message's turn alone");
}
