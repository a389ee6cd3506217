//! Tools: a registry of named tools with JSON-schema-checked arguments, and the invocation
//! object through which a tool finishes, now or later, from any thread.

pub mod schema;

use crate::error::{Error, Result, Status};
use crate::model::types::{ToolCall, ToolSpec};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The name of the built-in tool that sends a message to another agent.
pub const SEND_MESSAGE: &str = "send_message";

/// The result of a tool call, as given back to the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolOutcome {
    /// The tool's output.
    Ok(String),
    /// An error text for the model (invalid arguments, failure, timeout...).
    Err(String),
}

impl ToolOutcome {
    /// The text the model sees.
    pub fn text(&self) -> String {
        match self {
            ToolOutcome::Ok(t) => t.clone(),
            ToolOutcome::Err(e) => format!("ERROR: {e}"),
        }
    }

    /// [`ToolOutcome::text`], taking the outcome (an `Ok` text moves, uncopied).
    pub fn into_text(self) -> String {
        match self {
            ToolOutcome::Ok(t) => t,
            ToolOutcome::Err(e) => format!("ERROR: {e}"),
        }
    }

    /// Whether this is an error.
    pub fn is_err(&self) -> bool {
        matches!(self, ToolOutcome::Err(_))
    }
}

/// Runs a tool. `invoke` may complete the invocation before returning, or keep it and complete
/// it later from any thread.
pub trait ToolHandler: Send + Sync {
    /// Starts the tool.
    fn invoke(&self, inv: Arc<ToolInvocation>);
}

/// A registered tool.
pub struct Tool {
    /// Name the model calls it by.
    pub name: String,
    /// Description for the model.
    pub description: String,
    /// JSON schema of the arguments (shared with every request that offers the tool).
    pub parameters: Arc<Value>,
    /// How long a call may take before it fails with a timeout result.
    pub timeout: Duration,
    /// The implementation.
    pub handler: Arc<dyn ToolHandler>,
}

type Done = Box<dyn FnOnce(ToolOutcome) + Send>;

/// What an invocation still has to do: deliver its outcome, and then disarm its timeout.
#[derive(Default)]
struct Pending {
    done: Option<Done>,
    disarm: Option<Box<dyn FnOnce() + Send>>,
}

/// One call of a tool.
pub struct ToolInvocation {
    /// The agent's raw handle.
    pub agent: u64,
    /// The agent's name.
    pub agent_name: Arc<str>,
    /// The model's tool calls (shared with the agent's turn), and which one this is.
    calls: Arc<[ToolCall]>,
    index: usize,
    pending: Mutex<Pending>,
}

impl ToolInvocation {
    /// A new invocation of `calls[index]`; `on_done` receives the outcome exactly once.
    ///
    /// # Panics
    /// When `index` is out of `calls`' range.
    pub fn new(
        agent: u64,
        agent_name: Arc<str>,
        calls: Arc<[ToolCall]>,
        index: usize,
        on_done: Done,
    ) -> ToolInvocation {
        assert!(index < calls.len(), "tool call {index} of {}", calls.len());
        ToolInvocation {
            agent,
            agent_name,
            calls,
            index,
            pending: Mutex::new(Pending {
                done: Some(on_done),
                disarm: None,
            }),
        }
    }

    /// The model's call id.
    pub fn call_id(&self) -> &str {
        &self.calls[self.index].id
    }

    /// The tool's name.
    pub fn tool(&self) -> &str {
        &self.calls[self.index].name
    }

    /// The arguments, as JSON text (already validated against the schema).
    pub fn arguments(&self) -> &str {
        &self.calls[self.index].arguments
    }

    /// Completes the call. Returns false when it was already completed (for example by its
    /// timeout), in which case `outcome` is discarded.
    pub fn complete(&self, outcome: ToolOutcome) -> bool {
        let Pending { done, disarm } = std::mem::take(&mut *self.pending.lock());
        let Some(f) = done else { return false };
        // The timeout goes first: once the outcome is delivered, the turn may end before
        // this thread runs again, and nothing of the call should outlive it.
        if let Some(disarm) = disarm {
            disarm();
        }
        f(outcome);
        true
    }

    /// Gives the call what cancels its timeout, run when it completes, before the outcome is
    /// delivered (at once, when it already has): a timer left to run out would keep its share
    /// of memory for the whole timeout after a quick tool is long done.
    pub fn arm(&self, disarm: Box<dyn FnOnce() + Send>) {
        let mut p = self.pending.lock();
        if p.done.is_some() {
            // One timeout per call; a second would replace the first, which is cancelled.
            debug_assert!(p.disarm.is_none(), "a tool call armed twice");
            let replaced = p.disarm.replace(disarm);
            drop(p);
            if let Some(replaced) = replaced {
                replaced();
            }
        } else {
            drop(p);
            disarm();
        }
    }

    /// Whether the call was completed.
    pub fn is_done(&self) -> bool {
        self.pending.lock().done.is_none()
    }
}

/// The tools of a runtime, by name.
#[derive(Default)]
pub struct ToolRegistry {
    tools: RwLock<BTreeMap<String, Registered>>,
}

/// A registered tool and its definition as requests offer it (built once).
struct Registered {
    tool: Arc<Tool>,
    spec: ToolSpec,
}

impl ToolRegistry {
    /// Adds a tool. The name must be 1–64 of `[A-Za-z0-9_-]` and not taken (nor built in); the
    /// parameters must be a JSON object schema.
    pub fn add(&self, tool: Tool) -> Result<()> {
        let ok_name = !tool.name.is_empty()
            && tool.name.len() <= 64
            && tool
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok_name {
            return Err(Error::invalid(format!(
                "tool name \"{}\" must be 1 to 64 characters of A-Z a-z 0-9 _ -",
                tool.name
            )));
        }
        if tool.name == SEND_MESSAGE {
            return Err(Error::invalid(format!(
                "tool name \"{SEND_MESSAGE}\" is built in"
            )));
        }
        if !tool.parameters.is_object() {
            return Err(Error::new(
                Status::InvalidJson,
                "tool parameters must be a JSON schema object",
            ));
        }
        let mut t = self.tools.write();
        if t.contains_key(&tool.name) {
            return Err(Error::invalid(format!(
                "tool \"{}\" already exists",
                tool.name
            )));
        }
        let spec = ToolSpec::new(
            tool.name.as_str(),
            tool.description.as_str(),
            tool.parameters.clone(),
        );
        t.insert(
            tool.name.clone(),
            Registered {
                tool: Arc::new(tool),
                spec,
            },
        );
        Ok(())
    }

    /// Looks a tool up.
    pub fn get(&self, name: &str) -> Option<Arc<Tool>> {
        self.tools.read().get(name).map(|r| r.tool.clone())
    }

    /// A tool's definition as a request offers it (a cheap clone of shared parts).
    pub fn spec(&self, name: &str) -> Option<ToolSpec> {
        self.tools.read().get(name).map(|r| r.spec.clone())
    }

    /// Whether a tool exists (registered or built in).
    pub fn exists(&self, name: &str) -> bool {
        name == SEND_MESSAGE || self.tools.read().contains_key(name)
    }
}

/// The schema of the built-in `send_message` tool.
pub fn send_message_schema() -> Arc<Value> {
    static SCHEMA: std::sync::OnceLock<Arc<Value>> = std::sync::OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(serde_json::json!({
                "type": "object",
                "properties": {
                    "to": {"type": "string", "description": "Name of the agent to message"},
                    "text": {"type": "string", "description": "The message"}
                },
                "required": ["to", "text"]
            }))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An invocation of one call, and the log its outcome (and, once armed, its disarming)
    /// is written to.
    fn invocation() -> (ToolInvocation, Arc<Mutex<Vec<String>>>) {
        let calls: Arc<[ToolCall]> = vec![ToolCall {
            id: "c1".into(),
            name: "t".into(),
            arguments: "{}".into(),
        }]
        .into();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let l2 = log.clone();
        let inv = ToolInvocation::new(
            7,
            "a".into(),
            calls,
            0,
            Box::new(move |o| l2.lock().push(o.into_text())),
        );
        (inv, log)
    }

    fn disarm(log: &Arc<Mutex<Vec<String>>>) -> Box<dyn FnOnce() + Send> {
        let l = log.clone();
        Box::new(move || l.lock().push("disarmed".into()))
    }

    #[test]
    fn the_timer_is_disarmed_once_before_the_outcome_goes_out() {
        let (inv, log) = invocation();
        assert_eq!(
            (inv.call_id(), inv.tool(), inv.arguments()),
            ("c1", "t", "{}")
        );
        inv.arm(disarm(&log));
        assert!(
            log.lock().is_empty(),
            "nothing runs while the call is pending"
        );
        assert!(inv.complete(ToolOutcome::Ok("r".into())));
        // A second completion (say the timeout's) is refused and disarms nothing more.
        assert!(!inv.complete(ToolOutcome::Err("timed out".into())));
        assert_eq!(*log.lock(), vec!["disarmed".to_string(), "r".to_string()]);
    }

    #[test]
    fn arming_a_completed_call_disarms_at_once() {
        let (inv, log) = invocation();
        assert!(inv.complete(ToolOutcome::Ok("quick".into())));
        inv.arm(disarm(&log));
        assert_eq!(
            *log.lock(),
            vec!["quick".to_string(), "disarmed".to_string()]
        );
        assert!(inv.is_done());
    }

    #[test]
    fn a_timeout_completion_also_disarms() {
        let (inv, log) = invocation();
        inv.arm(disarm(&log));
        assert!(inv.complete(ToolOutcome::Err("timed out".into())));
        assert!(!inv.complete(ToolOutcome::Ok("late".into())));
        assert_eq!(
            *log.lock(),
            vec!["disarmed".to_string(), "ERROR: timed out".to_string()]
        );
    }

    #[test]
    fn completing_from_many_threads_delivers_and_disarms_once() {
        for _ in 0..50 {
            let (inv, log) = invocation();
            let inv = Arc::new(inv);
            let disarms = Arc::new(AtomicUsize::new(0));
            let d = disarms.clone();
            inv.arm(Box::new(move || {
                d.fetch_add(1, Ordering::SeqCst);
            }));
            let threads: Vec<_> = (0..4)
                .map(|i| {
                    let inv = inv.clone();
                    std::thread::spawn(move || inv.complete(ToolOutcome::Ok(format!("{i}"))))
                })
                .collect();
            let won = threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|&w| w)
                .count();
            assert_eq!(won, 1);
            assert_eq!(log.lock().len(), 1);
            assert_eq!(disarms.load(Ordering::SeqCst), 1);
        }
    }
}
