//! Runtime configuration, from typed setters or from JSON.
//!
//! JSON configuration is strict: an unknown key or a value of the wrong type is rejected with a
//! message that names the key, and a rejected document changes nothing.

use crate::error::{Error, Result, Status};
use serde_json::{Map, Value};

/// The largest worker count accepted.
pub const MAX_WORKERS: u32 = 1024;
/// The longest thread-name prefix accepted (Linux limits thread names to 15 bytes).
pub const MAX_THREAD_NAME: usize = 10;

const KNOWN_KEYS: &str = "\"workers\", \"thread_name\", \"deterministic\", \"event_capacity\", \"max_agents\", \"starvation_ms\", \"max_history_bytes\"";

/// Settings for a [`crate::runtime::Runtime`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Worker threads; `0` means one per available core.
    pub workers: u32,
    /// Prefix of the names of the runtime's threads (`"<prefix>-w0"`, ...).
    pub thread_name: String,
    /// One worker, no aging, tools run one after another: reproducible scheduling for tests.
    pub deterministic: bool,
    /// Events kept for the host before the oldest are dropped (and counted).
    pub event_capacity: u32,
    /// Agents alive at once.
    pub max_agents: u32,
    /// A runnable job waiting longer than this runs next whatever its priority (0 = never).
    pub starvation_ms: u32,
    /// Bytes of history all agents together may hold (0 = no limit).
    pub max_history_bytes: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            workers: 0,
            thread_name: "agentos".to_string(),
            deterministic: false,
            event_capacity: 65_536,
            max_agents: 1_000_000,
            starvation_ms: 2_000,
            max_history_bytes: 0,
        }
    }
}

/// Aging levels gained by waiting `waited` at one level per `step` (saturated).
pub fn aging_levels(waited: std::time::Duration, step: std::time::Duration) -> u32 {
    u32::try_from(waited.as_nanos() / step.as_nanos().max(1)).unwrap_or(u32::MAX)
}

impl RuntimeConfig {
    /// The aging step (`starvation_ms`), `None` when aging is off: `0`, or deterministic mode.
    pub fn starvation_limit(&self) -> Option<std::time::Duration> {
        (!self.deterministic && self.starvation_ms > 0)
            .then(|| std::time::Duration::from_millis(u64::from(self.starvation_ms)))
    }

    /// The number of workers the runtime will start, resolving `0` to the available cores.
    pub fn effective_workers(&self) -> u32 {
        if self.deterministic {
            1
        } else if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
                .min(MAX_WORKERS)
        }
    }

    /// Sets the worker count (`0` = one per available core).
    pub fn set_workers(&mut self, n: u32) -> Result<()> {
        if n > MAX_WORKERS {
            return Err(Error::invalid(format!(
                "workers must be at most {MAX_WORKERS}, got {n}"
            )));
        }
        self.workers = n;
        Ok(())
    }

    /// Sets the thread-name prefix.
    pub fn set_thread_name(&mut self, name: &str) -> Result<()> {
        if name.is_empty() || name.len() > MAX_THREAD_NAME || name.contains('\0') {
            return Err(Error::invalid(format!(
                "thread_name must be 1 to {MAX_THREAD_NAME} bytes without NUL, got {name:?}"
            )));
        }
        self.thread_name = name.to_string();
        Ok(())
    }

    /// Applies the keys of a JSON object on top of the current settings.
    ///
    /// The whole document is validated before anything changes.
    pub fn apply_json(&mut self, json: &str) -> Result<()> {
        let value: Value = serde_json::from_str(json).map_err(|e| {
            Error::new(
                Status::InvalidJson,
                format!("config is not valid JSON: {e}"),
            )
        })?;
        let Value::Object(map) = value else {
            return Err(Error::new(
                Status::InvalidJson,
                format!("config must be a JSON object, got {}", json_kind(&value)),
            ));
        };
        let mut next = self.clone();
        next.apply_map(&map)?;
        *self = next;
        Ok(())
    }

    fn apply_map(&mut self, map: &Map<String, Value>) -> Result<()> {
        for (key, value) in map {
            match key.as_str() {
                "workers" => {
                    let n = value
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| wrong_type(key, "a non-negative integer", value))?;
                    self.set_workers(n).map_err(|e| {
                        Error::invalid(format!("config key \"workers\": {}", e.message()))
                    })?;
                }
                "thread_name" => {
                    let s = value
                        .as_str()
                        .ok_or_else(|| wrong_type(key, "a string", value))?;
                    self.set_thread_name(s).map_err(|e| {
                        Error::invalid(format!("config key \"thread_name\": {}", e.message()))
                    })?;
                }
                "max_history_bytes" => {
                    self.max_history_bytes = value
                        .as_u64()
                        .ok_or_else(|| wrong_type(key, "a non-negative integer", value))?;
                }
                "deterministic" => {
                    self.deterministic = value
                        .as_bool()
                        .ok_or_else(|| wrong_type(key, "a boolean", value))?;
                }
                "event_capacity" | "max_agents" | "starvation_ms" => {
                    let n = value
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| wrong_type(key, "a non-negative integer", value))?;
                    match key.as_str() {
                        "event_capacity" => self.event_capacity = n.max(1),
                        "max_agents" => self.max_agents = n.max(1),
                        _ => self.starvation_ms = n,
                    }
                }
                other => {
                    return Err(Error::new(
                        Status::InvalidJson,
                        format!("unknown config key \"{other}\" (known keys: {KNOWN_KEYS})"),
                    ))
                }
            }
        }
        Ok(())
    }
}

fn wrong_type(key: &str, expected: &str, got: &Value) -> Error {
    Error::new(
        Status::InvalidJson,
        format!(
            "config key \"{key}\" must be {expected}, got {}",
            json_kind(got)
        ),
    )
}

/// A short description of a JSON value's type, for error messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(n) if n.is_i64() && n.as_i64().unwrap_or(0) < 0 => "a negative number",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_sets_known_keys() {
        let mut c = RuntimeConfig::default();
        c.apply_json(r#"{"workers": 3, "thread_name": "team"}"#)
            .unwrap();
        assert_eq!(c.workers, 3);
        assert_eq!(c.thread_name, "team");
        assert_eq!(c.effective_workers(), 3);
    }

    #[test]
    fn unknown_key_is_named_and_nothing_changes() {
        let mut c = RuntimeConfig::default();
        let e = c.apply_json(r#"{"workers": 2, "wrokers": 3}"#).unwrap_err();
        assert_eq!(e.status(), Status::InvalidJson);
        assert!(e.message().contains("\"wrokers\""), "{}", e.message());
        assert_eq!(c, RuntimeConfig::default());
    }

    #[test]
    fn wrong_types_are_named() {
        let mut c = RuntimeConfig::default();
        for (doc, kind) in [
            (r#"{"workers": "4"}"#, "a string"),
            (r#"{"workers": -1}"#, "a negative number"),
            (r#"{"workers": 1.5}"#, "a fractional number"),
            (r#"{"thread_name": 7}"#, "a number"),
        ] {
            let e = c.apply_json(doc).unwrap_err();
            assert_eq!(e.status(), Status::InvalidJson, "{doc}");
            assert!(e.message().contains("config key \""), "{}", e.message());
            assert!(e.message().contains(kind), "{}", e.message());
        }
    }

    #[test]
    fn out_of_range_and_malformed() {
        let mut c = RuntimeConfig::default();
        let e = c.apply_json(r#"{"workers": 5000}"#).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument);
        assert!(e.message().contains("workers"));
        assert_eq!(c.apply_json("{").unwrap_err().status(), Status::InvalidJson);
        assert_eq!(
            c.apply_json("[]").unwrap_err().status(),
            Status::InvalidJson
        );
        assert!(c.set_thread_name("").is_err());
        assert!(c.set_thread_name("much-too-long-name").is_err());
    }

    #[test]
    fn zero_workers_means_available_cores() {
        let c = RuntimeConfig::default();
        assert!(c.effective_workers() >= 1);
    }
}
