//! Endpoints: where and how to reach a model, described as JSON.
//!
//! ```json
//! {"name": "local", "provider": "openai", "base_url": "http://127.0.0.1:8091/v1",
//!  "model": "local", "api_key_env": "OPENAI_API_KEY", "headers": {"x-team": "a"},
//!  "preset": "qwen2.5-coder-0.5b-instruct", "context_window": 4096, "max_output_tokens": 512,
//!  "prices": {"input_per_mtok": 0, "output_per_mtok": 0, "cached_input_per_mtok": 0, "cache_write_per_mtok": 0},
//!  "limits": {"rpm": 600, "tpm": 200000, "concurrency": 8},
//!  "timeouts_ms": {"connect": 5000, "first_byte": 60000, "idle": 30000, "total": 600000},
//!  "retry": {"max_retries": 3, "base_delay_ms": 500, "max_delay_ms": 30000, "max_wait_ms": 120000},
//!  "cache": {"max_bytes": 0}}
//! ```
//!
//! The API key is read from the named environment variable when the endpoint is added. It is
//! kept only in memory, sent only in the auth header, and never appears in `Debug` output,
//! events or error messages.

use super::presets::{self, Prices};
use super::retry::RetryPolicy;
use crate::config::json_kind;
use crate::error::{Error, Result, Status};
use serde_json::{Map, Value};
use std::fmt;
use std::time::Duration;

/// The wire protocol of an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI Chat Completions (also llama.cpp, vLLM, Ollama, OpenRouter).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

/// Client-side limits; 0 means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: u32,
    /// Tokens per minute (prompt estimate + max output, corrected by reported usage).
    pub tpm: u64,
    /// Requests in flight at once.
    pub concurrency: u32,
}

/// Timeouts; zero disables one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP/TLS connect.
    pub connect: Duration,
    /// From sending the request to the first response byte.
    pub first_byte: Duration,
    /// Longest silence while the response streams.
    pub idle: Duration,
    /// Whole attempt.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(120),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

/// A configured model endpoint.
#[derive(Clone)]
pub struct Endpoint {
    /// Unique name within a runtime.
    pub name: String,
    /// Wire protocol.
    pub provider: Provider,
    /// Base URL without the route (`.../v1` for OpenAI, the host for Anthropic).
    pub base_url: String,
    /// Default model.
    pub model: String,
    api_key: Option<String>,
    /// Name of the environment variable the key came from (safe to show).
    pub api_key_env: Option<String>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Context window of the model.
    pub context_window: u32,
    /// Default output limit.
    pub max_output_tokens: u32,
    /// Prices.
    pub prices: Prices,
    /// Client-side limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Bytes of the response cache for deterministic requests (0 = off, the default).
    pub cache_bytes: usize,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn bad(key: &str, expected: &str, got: &Value) -> Error {
    Error::new(
        Status::InvalidJson,
        format!(
            "endpoint key \"{key}\" must be {expected}, got {}",
            json_kind(got)
        ),
    )
}

fn get_u64(key: &str, v: &Value) -> Result<u64> {
    v.as_u64()
        .ok_or_else(|| bad(key, "a non-negative integer", v))
}

fn get_u32(key: &str, v: &Value) -> Result<u32> {
    get_u64(key, v).and_then(|n| u32::try_from(n).map_err(|_| bad(key, "at most 4294967295", v)))
}

fn get_f64(key: &str, v: &Value) -> Result<f64> {
    v.as_f64()
        .filter(|x| *x >= 0.0)
        .ok_or_else(|| bad(key, "a non-negative number", v))
}

fn get_str<'a>(key: &str, v: &'a Value) -> Result<&'a str> {
    v.as_str().ok_or_else(|| bad(key, "a string", v))
}

fn sub_object<'a>(key: &str, v: &'a Value) -> Result<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| bad(key, "an object", v))
}

fn unknown(key: &str) -> Error {
    Error::new(
        Status::InvalidJson,
        format!("unknown endpoint key \"{key}\""),
    )
}

impl Endpoint {
    /// Parses an endpoint description; reads the API key from the environment.
    pub fn from_json(text: &str) -> Result<Endpoint> {
        let v: Value = serde_json::from_str(text).map_err(|e| {
            Error::new(
                Status::InvalidJson,
                format!("endpoint is not valid JSON: {e}"),
            )
        })?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("(endpoint)", "an object", &v))?;
        let field = |k: &str| obj.get(k);
        let name = get_str("name", field("name").unwrap_or(&Value::Null))?.to_string();
        if name.is_empty() || name.len() > 128 {
            return Err(Error::invalid(
                "endpoint key \"name\" must be 1 to 128 bytes",
            ));
        }
        let provider = match get_str("provider", field("provider").unwrap_or(&Value::Null))? {
            "openai" => Provider::OpenAi,
            "anthropic" => Provider::Anthropic,
            other => {
                return Err(Error::invalid(format!(
                    "endpoint key \"provider\" must be \"openai\" or \"anthropic\", got \"{other}\""
                )))
            }
        };
        let base_url = get_str("base_url", field("base_url").unwrap_or(&Value::Null))?
            .trim_end_matches('/')
            .to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(Error::invalid(format!(
                "endpoint key \"base_url\" must start with http:// or https://, got \"{base_url}\""
            )));
        }
        let model = match field("model") {
            Some(m) => get_str("model", m)?.to_string(),
            None => String::new(),
        };
        let preset_name = match field("preset") {
            Some(p) => Some(get_str("preset", p)?.to_string()),
            None => None,
        };
        let preset = match &preset_name {
            Some(p) => Some(presets::find(p).ok_or_else(|| {
                Error::new(
                    Status::NotFound,
                    format!("endpoint key \"preset\": no built-in preset \"{p}\""),
                )
            })?),
            None => presets::find(&model),
        };
        let mut ep = Endpoint {
            name,
            provider,
            base_url,
            model,
            api_key: None,
            api_key_env: None,
            headers: Vec::new(),
            context_window: preset.map_or(8_192, |p| p.context_window),
            max_output_tokens: preset.map_or(1_024, |p| p.max_output_tokens.min(4_096)),
            prices: preset.map(|p| p.prices).unwrap_or_default(),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            cache_bytes: 0,
        };
        for (k, val) in obj {
            match k.as_str() {
                "name" | "provider" | "base_url" | "model" | "preset" => {}
                "api_key_env" => {
                    let var = get_str(k, val)?;
                    let key = std::env::var(var).map_err(|_| {
                        Error::new(
                            Status::NotFound,
                            format!("endpoint \"{}\": environment variable {var} (api_key_env) is not set", ep.name),
                        )
                    })?;
                    ep.api_key = Some(key);
                    ep.api_key_env = Some(var.to_string());
                }
                "headers" => {
                    for (h, hv) in sub_object(k, val)? {
                        let hv = get_str(&format!("headers.{h}"), hv)?;
                        if h.contains([':', '\r', '\n']) || hv.contains(['\r', '\n']) {
                            return Err(Error::invalid(format!(
                                "endpoint key \"headers.{h}\" is not a valid header"
                            )));
                        }
                        ep.headers.push((h.clone(), hv.to_string()));
                    }
                }
                "context_window" => ep.context_window = get_u32(k, val)?,
                "max_output_tokens" => ep.max_output_tokens = get_u32(k, val)?,
                "prices" => {
                    for (pk, pv) in sub_object(k, val)? {
                        let key = format!("prices.{pk}");
                        match pk.as_str() {
                            "input_per_mtok" => ep.prices.input_per_mtok = get_f64(&key, pv)?,
                            "output_per_mtok" => ep.prices.output_per_mtok = get_f64(&key, pv)?,
                            "cached_input_per_mtok" => {
                                ep.prices.cached_input_per_mtok = get_f64(&key, pv)?
                            }
                            "cache_write_per_mtok" => {
                                ep.prices.cache_write_per_mtok = get_f64(&key, pv)?
                            }
                            _ => return Err(unknown(&key)),
                        }
                    }
                }
                "limits" => {
                    for (lk, lv) in sub_object(k, val)? {
                        let key = format!("limits.{lk}");
                        match lk.as_str() {
                            "rpm" => ep.limits.rpm = get_u32(&key, lv)?,
                            "tpm" => ep.limits.tpm = get_u64(&key, lv)?,
                            "concurrency" => ep.limits.concurrency = get_u32(&key, lv)?,
                            _ => return Err(unknown(&key)),
                        }
                    }
                }
                "timeouts_ms" => {
                    for (tk, tv) in sub_object(k, val)? {
                        let key = format!("timeouts_ms.{tk}");
                        let d = Duration::from_millis(get_u64(&key, tv)?);
                        match tk.as_str() {
                            "connect" => ep.timeouts.connect = d,
                            "first_byte" => ep.timeouts.first_byte = d,
                            "idle" => ep.timeouts.idle = d,
                            "total" => ep.timeouts.total = d,
                            _ => return Err(unknown(&key)),
                        }
                    }
                }
                "retry" => {
                    for (rk, rv) in sub_object(k, val)? {
                        let key = format!("retry.{rk}");
                        match rk.as_str() {
                            "max_retries" => ep.retry.max_retries = get_u32(&key, rv)?.min(100),
                            "base_delay_ms" => {
                                ep.retry.base_delay = Duration::from_millis(get_u64(&key, rv)?)
                            }
                            "max_delay_ms" => {
                                ep.retry.max_delay = Duration::from_millis(get_u64(&key, rv)?)
                            }
                            "max_wait_ms" => {
                                ep.retry.max_wait = Duration::from_millis(get_u64(&key, rv)?)
                            }
                            _ => return Err(unknown(&key)),
                        }
                    }
                }
                "cache" => {
                    for (ck, cv) in sub_object(k, val)? {
                        let key = format!("cache.{ck}");
                        match ck.as_str() {
                            "max_bytes" => ep.cache_bytes = get_u64(&key, cv)? as usize,
                            _ => return Err(unknown(&key)),
                        }
                    }
                }
                other => return Err(unknown(other)),
            }
        }
        Ok(ep)
    }

    /// The URL requests are posted to.
    pub fn url(&self) -> String {
        match self.provider {
            Provider::OpenAi => format!("{}/chat/completions", self.base_url),
            Provider::Anthropic if self.base_url.ends_with("/v1") => {
                format!("{}/messages", self.base_url)
            }
            Provider::Anthropic => format!("{}/v1/messages", self.base_url),
        }
    }

    /// Request headers, the auth header included (a large body's empty `Expect:` is added
    /// per request, see `transfer::RequestHeaders`).
    pub fn request_headers(&self, stream: bool) -> Vec<String> {
        let mut h = vec!["Content-Type: application/json".to_string()];
        // A plain answer is JSON whatever the request accepts (libcurl sends `*/*`); each
        // custom header costs libcurl a scan of the list on every request.
        if stream {
            h.push("Accept: text/event-stream".to_string());
        }
        match (self.provider, &self.api_key) {
            (Provider::OpenAi, Some(k)) => h.push(format!("Authorization: Bearer {k}")),
            (Provider::Anthropic, Some(k)) => h.push(format!("x-api-key: {k}")),
            _ => {}
        }
        if self.provider == Provider::Anthropic {
            h.push("anthropic-version: 2023-06-01".to_string());
        }
        for (k, v) in &self.headers {
            h.push(format!("{k}: {v}"));
        }
        h
    }

    /// Removes the API key (and anything the caller names) from a text before it is shown.
    pub fn redact(&self, text: &str) -> String {
        match &self.api_key {
            Some(k) if !k.is_empty() => text.replace(k.as_str(), "<redacted>"),
            _ => text.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_endpoint_and_hides_key() {
        std::env::set_var("AGENTOS_TEST_KEY_1", "sk-secret-123");
        let ep = Endpoint::from_json(
            r#"{"name":"oa","provider":"openai","base_url":"https://api.example.com/v1/","model":"gpt-4o-mini",
                "api_key_env":"AGENTOS_TEST_KEY_1","headers":{"x-team":"a"},
                "limits":{"rpm":60,"tpm":1000,"concurrency":2},"timeouts_ms":{"connect":100},
                "retry":{"max_retries":1}}"#,
        )
        .unwrap();
        assert_eq!(ep.url(), "https://api.example.com/v1/chat/completions");
        assert_eq!(ep.context_window, 128_000);
        assert_eq!(ep.prices.input_per_mtok, 0.15);
        assert_eq!(ep.limits.concurrency, 2);
        assert_eq!(ep.timeouts.connect, Duration::from_millis(100));
        assert_eq!(ep.retry.max_retries, 1);
        assert!(!format!("{ep:?}").contains("sk-secret"));
        assert!(ep
            .request_headers(false)
            .iter()
            .any(|h| h == "Authorization: Bearer sk-secret-123"));
        assert_eq!(ep.redact("bad key sk-secret-123!"), "bad key <redacted>!");
    }

    #[test]
    fn rejects_bad_endpoints_naming_the_key() {
        for (doc, needle) in [
            (r#"{"provider":"openai","base_url":"http://x"}"#, "name"),
            (
                r#"{"name":"a","provider":"grok","base_url":"http://x"}"#,
                "provider",
            ),
            (
                r#"{"name":"a","provider":"openai","base_url":"ftp://x"}"#,
                "base_url",
            ),
            (
                r#"{"name":"a","provider":"openai","base_url":"http://x","limits":{"rpn":1}}"#,
                "limits.rpn",
            ),
            (
                r#"{"name":"a","provider":"openai","base_url":"http://x","limits":{"rpm":"1"}}"#,
                "limits.rpm",
            ),
            (
                r#"{"name":"a","provider":"openai","base_url":"http://x","api_key_env":"AGENTOS_SURELY_UNSET"}"#,
                "AGENTOS_SURELY_UNSET",
            ),
            (
                r#"{"name":"a","provider":"openai","base_url":"http://x","colour":1}"#,
                "colour",
            ),
        ] {
            let e = Endpoint::from_json(doc).unwrap_err();
            assert!(e.message().contains(needle), "{doc}: {}", e.message());
        }
    }

    #[test]
    fn anthropic_url() {
        let ep = Endpoint::from_json(
            r#"{"name":"a","provider":"anthropic","base_url":"http://127.0.0.1:9"}"#,
        )
        .unwrap();
        assert_eq!(ep.url(), "http://127.0.0.1:9/v1/messages");
    }
}
