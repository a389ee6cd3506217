//! Set-up shared by the model-layer tests: a one-worker runtime, an endpoint on the fake
//! server with quick retries, and a one-message request.

use agentos::config::RuntimeConfig;
use agentos::model::types::ChatRequest;
use agentos::runtime::Runtime;

/// A runtime with one worker.
pub fn runtime() -> Runtime {
    let mut c = RuntimeConfig::default();
    c.set_workers(1).unwrap();
    Runtime::start(c).unwrap()
}

/// Adds endpoint `name` for `provider` at `url` (the fake server's), with 3 quick retries;
/// `extra` is appended to its JSON (`,"key":value...`).
pub fn add_endpoint(rt: &Runtime, name: &str, provider: &str, url: &str, extra: &str) {
    let base = if provider == "openai" {
        format!("{url}/v1")
    } else {
        url.to_string()
    };
    let json = format!(
        r#"{{"name":"{name}","provider":"{provider}","base_url":"{base}","model":"fake-model",
            "retry":{{"max_retries":3,"base_delay_ms":10,"max_delay_ms":50}}{extra}}}"#
    );
    rt.shared()
        .models()
        .add_endpoint_json(&json, false)
        .unwrap();
}

/// A request saying "hi", deterministic (temperature 0), streamed or not.
pub fn request(stream: bool) -> ChatRequest {
    ChatRequest::from_json(&format!(
        r#"{{"messages":[{{"role":"user","content":"hi"}}],"stream":{stream},"temperature":0}}"#
    ))
    .unwrap()
}
