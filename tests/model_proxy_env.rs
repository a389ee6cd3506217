//! Proxy environment variables still reach libcurl. Endpoints tell libcurl "no proxy" when the
//! environment names none (sparing it five variable look-ups per request), so this checks the
//! other case: with `http_proxy` set when the endpoint is added, requests go through the proxy
//! (here the scriptable fake server on 127.0.0.1, which sees the absolute-form request target),
//! on the caller's thread and on the I/O thread alike. A test binary of its own, with one test:
//! it changes the process environment (another test here would race with it).

#[path = "support/fake_server.rs"]
mod fake_server;
#[path = "support/model_setup.rs"]
mod model_setup;

use agentos::model::call::CallOptions;
use fake_server::{FakeServer, Reply};
use model_setup::{add_endpoint, request, runtime};
use std::time::Duration;

#[test]
fn http_proxy_from_the_environment_is_used() {
    // Whatever the machine's environment says (a no_proxy covering 127.0.0.1, an all_proxy),
    // only what this test sets counts.
    for v in [
        "http_proxy",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        std::env::remove_var(v);
    }
    let proxy = FakeServer::start();
    proxy.set_default(Reply::openai_text("through the proxy"));
    // Nothing listens on port 1: only the proxy can answer.
    std::env::set_var("http_proxy", proxy.url());
    let rt = runtime();
    add_endpoint(&rt, "far", "openai", "http://127.0.0.1:1", "");
    let models = rt.shared().models();

    // On this thread.
    let call = models
        .new_call("far", request(false), CallOptions::default())
        .unwrap();
    models.run(call.clone()).unwrap();
    assert_eq!(call.result().unwrap().unwrap().content, "through the proxy");

    // On the I/O thread.
    let call = models
        .new_call("far", request(false), CallOptions::default())
        .unwrap();
    models.submit(call.clone()).unwrap();
    let r = call.wait(Some(std::time::Instant::now() + Duration::from_secs(10)));
    assert_eq!(r.unwrap().unwrap().content, "through the proxy");

    let seen = proxy.requests();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "http://127.0.0.1:1/v1/chat/completions");
    }

    // An endpoint added once no proxy is named goes straight to its server, and keeps doing
    // so when one is named later (the environment is read when an endpoint is added).
    std::env::remove_var("http_proxy");
    let direct = FakeServer::start();
    direct.set_default(Reply::openai_text("direct"));
    add_endpoint(&rt, "near", "openai", &direct.url(), "");
    let call = models
        .new_call("near", request(false), CallOptions::default())
        .unwrap();
    models.run(call.clone()).unwrap();
    assert_eq!(call.result().unwrap().unwrap().content, "direct");
    std::env::set_var("http_proxy", proxy.url());
    let call = models
        .new_call("near", request(false), CallOptions::default())
        .unwrap();
    models.submit(call.clone()).unwrap();
    let r = call.wait(Some(std::time::Instant::now() + Duration::from_secs(10)));
    assert_eq!(r.unwrap().unwrap().content, "direct");
    assert_eq!(direct.request_count(), 2);
    assert!(direct
        .requests()
        .iter()
        .all(|r| r.path == "/v1/chat/completions"));
    assert_eq!(proxy.request_count(), 2);
}
