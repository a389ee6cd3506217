//! Agents: the turn loop (context → model → tools → context) run by the scheduler.
//!
//! An agent is driven by small steps on the runtime's workers. A step never blocks: it starts
//! a model call (which runs on the I/O thread) or dispatches tools (which complete from any
//! thread), records what it is waiting for, and returns. Whatever finishes next schedules the
//! agent again, at its priority and attained service. All side effects that could call back
//! into the agent (events, model submission, tools, messages to other agents) run after the
//! agent's lock is released.

pub mod config;
mod turn_waiter;

use crate::context::compact::{is_context_overflow, recall, ViewCache, ViewStats};
use crate::context::tokens;
use crate::error::{Error, Result, Status};
use crate::model::call::{CallInner, CallObserver, CallOptions};
use crate::model::hub::EndpointState;
use crate::model::stream::StreamDelta;
use crate::model::types::{
    ChatMessage, ChatRequest, ChatResponse, Role, ToolCall, ToolSpec, Usage,
};
use crate::runtime::events::{Event, EventKind};
use crate::runtime::run_queue::RunKey;
use crate::runtime::Shared;
use crate::tools::{schema, Tool, ToolInvocation, ToolOutcome, SEND_MESSAGE};

/// The built-in tool that brings back a masked or cut tool result by its key.
pub const RECALL: &str = "recall";
pub use config::{AgentConfig, Budget};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;
use turn_waiter::{TurnDone, TurnOutcome, TurnWaiter};

/// What an agent is doing. The discriminant is the C `AGENTOS_AGENT_*` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum AgentState {
    /// No work.
    Idle = 0,
    /// Has work and waits for a worker.
    Runnable = 1,
    /// Waiting for a model answer.
    WaitingModel = 2,
    /// Waiting for tools.
    RunningTools = 3,
    /// Preempted by a more urgent agent: paused at a safe point, or its stream cancelled and
    /// waiting to continue from the snapshot.
    Paused = 4,
    /// Stopped for good (a budget ran out); accepts no more messages.
    Finished = 5,
    /// Its last turn failed; a new message starts a new turn.
    Failed = 6,
}

impl AgentState {
    fn is_busy(self) -> bool {
        !matches!(
            self,
            AgentState::Idle | AgentState::Finished | AgentState::Failed
        )
    }

    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            AgentState::Idle => "idle",
            AgentState::Runnable => "runnable",
            AgentState::WaitingModel => "waiting_model",
            AgentState::RunningTools => "running_tools",
            AgentState::Paused => "paused",
            AgentState::Finished => "finished",
            AgentState::Failed => "failed",
        }
    }
}

/// Who sent a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sender {
    /// The host program.
    Host,
    /// Another agent (raw handle, name).
    Agent(u64, String),
    /// A mailbox (raw handle), with the correlation id its answer must carry.
    Mailbox(u64, u64),
}

struct Incoming {
    from: Sender,
    text: String,
    /// An answer to a message this agent sent: it starts a turn but is not answered back
    /// (otherwise two agents would reply to each other's replies forever).
    is_reply: bool,
    /// Told how the message's turn ended, for a caller waiting in [`Agent::run_turn`].
    /// Dropped unanswered (the agent freed first), it tells the waiter so.
    done: Option<TurnDone>,
}

/// Who is stepping an agent, which decides what work it may run itself.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stepper {
    /// A runtime worker: it keeps a lone quick call or tool only while another worker is
    /// idle (see [`Shared::worker_may_linger`]).
    Worker,
    /// A caller waiting in [`Agent::run_turn`]: it blocks for the turn anyway, so it runs
    /// a lone call or tool itself; with a time limit, only calls that answer quickly.
    Caller { quick_calls_only: bool },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    NeedModel,
    WaitingModel,
    RunningTools,
}

struct Turn {
    number: u64,
    from: Sender,
    is_reply: bool,
    steps: u32,
    phase: Phase,
    call: Option<Arc<CallInner>>,
    assistant: Option<ChatMessage>,
    /// The assistant message's tool calls, one copy shared by the events that describe them.
    calls: Arc<[ToolCall]>,
    pending: Vec<Option<ToolOutcome>>,
    invocations: Vec<Arc<ToolInvocation>>,
    cancelled: bool,
    /// Where the outcome goes, when a caller waits for this turn.
    done: Option<TurnDone>,
    /// Compact-and-retry rounds after context overflows this turn.
    overflow_retries: u32,
    /// The room this (urgent) turn claimed on the agent's endpoint, held until it ends: less
    /// urgent agents pause at their safe points meanwhile (see [`crate::model::room`]). While
    /// the turn's tools run, it is held only for the endpoint's claim grace
    /// ([`EndpointState::claim_grace`]): tools that run longer give it back, and a later call
    /// that cannot be admitted claims again.
    room: Option<RoomClaim>,
    /// The timer that gives the room back if the tools outlast the grace.
    room_timer: Option<crate::model::engine::TimerId>,
    /// Paused at a safe point under another agent's claim (the highest claiming priority
    /// when it paused): the next step that goes on records the resume.
    paused_by: Option<i32>,
    /// When the pause at a safe point began (for its aging, see
    /// [`Agent::pause_at_safe_point`]; kept after going on by aging, for the call and the
    /// later safe points under the same claim), and the timer that has the agent look again
    /// when its priority next rises.
    paused_since: Option<Instant>,
    pause_timer: Option<crate::model::engine::TimerId>,
}

/// A claim of room on an endpoint, released when dropped. Dropped outside the agent's lock
/// (see [`Action::ReleaseRoom`]): releasing wakes paused agents, which take their own locks,
/// and the I/O thread, which may hold queued calls for the room.
struct RoomClaim {
    endpoint: Arc<EndpointState>,
    claimant: u64,
    shared: Weak<Shared>,
}

impl Drop for RoomClaim {
    fn drop(&mut self) {
        self.endpoint.room.release(self.claimant);
        if let Some(shared) = self.shared.upgrade() {
            shared.models().nudge_admission();
        }
    }
}

struct Inner {
    /// Events raised while this thread steps the agent (a tool finishing inside the step
    /// loop), emitted with the next step's events, first.
    deferred: Vec<Event>,
    state: AgentState,
    history: Vec<ChatMessage>,
    inbox: VecDeque<Incoming>,
    turn: Option<Turn>,
    usage: Usage,
    service: u64,
    tool_calls: u64,
    turns: u64,
    busy: bool,
    last_status: Status,
    /// Freed by the host: takes no more messages and drops its inbox.
    retired: bool,
    /// Extra compaction (0 normal; raised by overflows and forced compaction).
    compact_level: u32,
    /// What compaction did to the last request.
    last_view: ViewStats,
    /// Estimated prompt tokens without and with compaction, summed over every request.
    tokens_full_total: u64,
    tokens_sent_total: u64,
    /// Learns the ratio between estimates and the provider's counts.
    calibration: tokens::Calibration,
    /// The context policies (from the config; changeable at run time).
    policy: crate::context::policy::ContextPolicy,
    /// Compact as hard as possible for the next request (forced compaction).
    force_compaction: bool,
    /// Bytes of text in `history` as last added to the runtime's total (after every step).
    history_bytes: usize,
    /// Bytes of text in `history` now, kept as messages are appended (see `push_history`).
    held_bytes: usize,
    /// Where request bodies are rendered.
    body: BodyArena,
    /// What building views computed per message (token counts, minified JSON, digests,
    /// rewritten contents), reused from step to step.
    view_cache: ViewCache,
    /// Token estimates of the tool schemas offered (read while planning a request).
    tool_tokens: std::cell::RefCell<tokens::ToolTokens>,
    /// What connects the agent's model calls back to it, made at its first call and shared
    /// by all of them.
    observer: Option<Arc<dyn CallObserver>>,
}

/// An agent.
pub struct Agent {
    /// The name, shared with the agent's events.
    name: Arc<str>,
    /// The endpoint's name, shared with its model-request events.
    endpoint: Arc<str>,
    handle: AtomicU64,
    mailbox: AtomicU64,
    /// Its configuration.
    pub config: AgentConfig,
    inner: Mutex<Inner>,
    scheduled: AtomicBool,
    shared: Weak<Shared>,
}

/// Counters of an agent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AgentStats {
    /// Model usage and cost.
    pub usage: Usage,
    /// Tool calls made.
    pub tool_calls: u64,
    /// Turns started.
    pub turns: u64,
    /// Messages in history.
    pub history_len: usize,
    /// Bytes of text held in the history.
    pub history_bytes: usize,
    /// Estimated prompt tokens had every request carried the full history.
    pub tokens_full_total: u64,
    /// Estimated prompt tokens actually sent after compaction.
    pub tokens_sent_total: u64,
    /// What compaction did to the last request.
    pub last_view: ViewStats,
    /// The learned ratio between the provider's token counts and the estimates.
    pub calibration: f64,
    /// Bytes rendered in the turn arena during the current turn (0 between turns: the arena
    /// is reset when a turn ends, and after each body is handed to its call).
    pub arena_in_use: usize,
    /// The largest the turn arena has been.
    pub arena_high_water: usize,
}

/// What a step produces: its actions in order, and the events they emit (kept apart so an
/// event is moved once into the queue's buffer, not through every action).
struct StepOut {
    actions: Vec<Action>,
    events: Vec<Event>,
}

impl StepOut {
    /// Emits `ev` at this point among the step's actions.
    fn emit(&mut self, ev: Event) {
        self.events.push(ev);
        self.actions.push(Action::Emit);
    }

    /// Adds an action other than an event.
    fn push(&mut self, a: Action) {
        debug_assert!(
            !matches!(a, Action::Emit),
            "events go through StepOut::emit"
        );
        self.actions.push(a);
    }

    fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.events.is_empty()
    }
}

enum Action {
    /// The step's next event (in [`StepOut::events`]) goes out here.
    Emit,
    StartCall(Arc<CallInner>),
    RunTool(Arc<Tool>, Arc<ToolInvocation>),
    /// A message to another agent (boxed: rare, and the largest action).
    Deliver(Box<Delivery>),
    CancelCall(Arc<CallInner>),
    Mail {
        mailbox: u64,
        correlation: u64,
        ok: bool,
        text: String,
    },
    /// Tells the caller waiting for a turn how it ended (after the turn's events are out).
    Answer(TurnDone, Status, String),
    /// Releases the room a turn claimed (outside the agent's lock: it wakes paused agents).
    ReleaseRoom(RoomClaim),
}

/// What [`Action::Deliver`] delivers.
struct Delivery {
    to: String,
    from: Sender,
    text: String,
    is_reply: bool,
}

impl Agent {
    /// A new idle agent. Its handle is set by [`Agent::set_handle`] once registered.
    pub fn new(config: AgentConfig, shared: &Arc<Shared>) -> Agent {
        let policy = config.context.clone();
        let mut history = Vec::new();
        if !config.system.is_empty() {
            history.push(ChatMessage::text(Role::System, config.system.clone()));
        }
        let held_bytes = history_bytes(&history);
        let agent = Agent {
            name: config.name.as_str().into(),
            endpoint: config.endpoint.as_str().into(),
            handle: AtomicU64::new(0),
            mailbox: AtomicU64::new(0),
            config,
            inner: Mutex::new(Inner {
                deferred: Vec::new(),
                state: AgentState::Idle,
                history,
                inbox: VecDeque::new(),
                turn: None,
                usage: Usage::default(),
                service: 0,
                tool_calls: 0,
                turns: 0,
                busy: false,
                last_status: Status::Ok,
                retired: false,
                compact_level: 0,
                last_view: ViewStats::default(),
                tokens_full_total: 0,
                tokens_sent_total: 0,
                calibration: tokens::Calibration::default(),
                policy,
                force_compaction: false,
                history_bytes: 0,
                held_bytes,
                body: BodyArena::default(),
                view_cache: Default::default(),
                tool_tokens: Default::default(),
                observer: None,
            }),
            scheduled: AtomicBool::new(false),
            shared: Arc::downgrade(shared),
        };
        // Estimate the tool schemas now, once, rather than inside the first turn.
        {
            let g = agent.inner.lock();
            agent.request_plan(&g, shared, agent.endpoint_state(shared).as_deref());
        }
        agent
    }

    /// Records the registry handle.
    pub fn set_handle(&self, raw: u64) {
        self.handle.store(raw, Ordering::Relaxed);
    }

    /// Messages waiting in the inbox (not counting the one whose turn is running).
    pub fn inbox_len(&self) -> usize {
        self.inner.lock().inbox.len()
    }

    /// The raw registry handle.
    pub fn handle(&self) -> u64 {
        self.handle.load(Ordering::Relaxed)
    }

    /// The agent's mailbox handle, once made.
    pub fn mailbox(&self) -> Option<u64> {
        Some(self.mailbox.load(Ordering::Acquire)).filter(|h| *h != 0)
    }

    /// Records the agent's mailbox; returns the existing one if another was set first.
    pub fn set_mailbox(&self, h: u64) -> Option<u64> {
        self.mailbox
            .compare_exchange(0, h, Ordering::AcqRel, Ordering::Acquire)
            .err()
    }

    /// Delivers a mailbox message: its text starts a turn, and the answer goes back to the
    /// sending mailbox with the message's correlation id (or its id when it has none).
    pub fn deliver_mail(self: &Arc<Self>, m: &crate::msg::message::Message) -> Result<()> {
        let text = m.text().ok_or_else(|| {
            Error::new(
                Status::InvalidUtf8,
                format!(
                    "agent \"{}\": message payload is not UTF-8",
                    self.config.name
                ),
            )
        })?;
        let h = m.header();
        let corr = if h.correlation != 0 {
            h.correlation
        } else {
            h.id
        };
        let from = if h.sender == 0 {
            Sender::Host
        } else {
            Sender::Mailbox(h.sender, corr)
        };
        self.deliver(from, text)
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The current state.
    pub fn state(&self) -> AgentState {
        self.inner.lock().state
    }

    /// Counters.
    pub fn stats(&self) -> AgentStats {
        let g = self.inner.lock();
        AgentStats {
            usage: g.usage,
            tool_calls: g.tool_calls,
            turns: g.turns,
            history_len: g.history.len(),
            history_bytes: g.history_bytes,
            tokens_full_total: g.tokens_full_total,
            tokens_sent_total: g.tokens_sent_total,
            last_view: g.last_view,
            calibration: g.calibration.ratio(),
            arena_in_use: g.body.in_use,
            arena_high_water: g.body.high_water,
        }
    }

    /// How the last turn ended.
    pub fn last_status(&self) -> Status {
        self.inner.lock().last_status
    }

    /// The conversation so far, as OpenAI-style JSON messages.
    pub fn history_json(&self) -> Value {
        Value::Array(
            self.inner
                .lock()
                .history
                .iter()
                .map(ChatMessage::to_openai_json)
                .collect(),
        )
    }

    /// A copy of the conversation.
    pub fn history(&self) -> Vec<ChatMessage> {
        self.inner.lock().history.clone()
    }

    /// Queues a message; the agent starts a turn for it when it is free. Fails with `BUSY` when
    /// the inbox is full and `LIMIT_EXCEEDED` when the agent has finished (budget spent).
    pub fn deliver(self: &Arc<Self>, from: Sender, text: &str) -> Result<()> {
        let shared = self.shared()?;
        self.queue_message(&shared, from, text, false, None)?;
        self.schedule(&shared);
        Ok(())
    }

    /// Sends the agent a message from the host and waits until the turn it starts has ended
    /// (after any turns queued before it), or until `deadline`. Returns the final answer, or
    /// the turn's failure (status and message). On `TIMEOUT` the turn goes on; its outcome
    /// arrives as a `TurnEnd` event.
    ///
    /// Unless the runtime is deterministic, the calling thread steps the agent itself instead
    /// of queueing it for a worker, and runs a lone model call (with a deadline: only to an
    /// endpoint that answers quickly) or a lone tool itself, as a worker would: a short turn
    /// then needs no hand-off between threads. Whatever it does not run here (parallel tools,
    /// calls that must queue for admission or the I/O thread) goes the usual way, and workers
    /// step the agent when it completes. The turn's events are emitted as usual.
    pub fn run_turn(self: &Arc<Self>, text: &str, deadline: Option<Instant>) -> Result<String> {
        let shared = self.shared()?;
        if InTool::is(self.handle()) {
            // Its turn is waiting for the very tool this thread is running.
            return Err(Error::invalid(format!(
                "agent \"{}\": a turn cannot be run from one of its own tool callbacks (it would wait for itself); use agentos_agent_send",
                self.config.name
            )));
        }
        let (done, waiter) = TurnWaiter::new();
        self.queue_message(&shared, Sender::Host, text, false, Some(done))?;
        if shared.config().deterministic {
            self.schedule(&shared);
        } else {
            // The caller stops running work itself once its own turn has ended (the work
            // of later turns goes to the workers) or its time is up.
            let mine = || !waiter.is_answered() && deadline.map_or(true, |d| Instant::now() < d);
            self.step_as(
                &shared,
                Stepper::Caller {
                    quick_calls_only: deadline.is_some(),
                },
                &mine,
            );
        }
        match waiter.wait(deadline) {
            Some(TurnOutcome::Ended(Status::Ok, answer)) => Ok(answer),
            Some(TurnOutcome::Ended(status, message)) => Err(Error::new(status, message)),
            None => Err(Error::new(
                Status::Timeout,
                format!(
                    "agent \"{}\": the turn is still running (its outcome arrives as a TURN_END event)",
                    self.config.name
                ),
            )),
            Some(TurnOutcome::Dropped) => Err(Error::new(
                Status::StaleHandle,
                format!(
                    "agent \"{}\" was freed before the message's turn ended",
                    self.config.name
                ),
            )),
        }
    }

    fn deliver_message(self: &Arc<Self>, from: Sender, text: &str, is_reply: bool) -> Result<()> {
        let shared = self.shared()?;
        self.queue_message(&shared, from, text, is_reply, None)?;
        self.schedule(&shared);
        Ok(())
    }

    /// Puts a message in the inbox (without scheduling the agent).
    fn queue_message(
        self: &Arc<Self>,
        shared: &Shared,
        from: Sender,
        text: &str,
        is_reply: bool,
        done: Option<TurnDone>,
    ) -> Result<()> {
        {
            let mut g = self.inner.lock();
            if g.retired {
                return Err(Error::new(
                    Status::StaleHandle,
                    format!("agent \"{}\" was freed", self.config.name),
                ));
            }
            if g.state == AgentState::Finished {
                return Err(Error::new(
                    Status::LimitExceeded,
                    format!(
                        "agent \"{}\" has finished (a budget ran out) and takes no more messages",
                        self.config.name
                    ),
                ));
            }
            // What the agent will hold when this message's turn starts: a stateless agent
            // drops its earlier turns then (but keeps them for an answer to its own message).
            let held = if self.config.keep_history || is_reply {
                g.history_bytes
            } else {
                self.config.system.len()
            };
            let limit = self.config.max_history_bytes;
            if limit > 0 && (held + text.len()) as u64 > limit {
                return Err(Error::new(
                    Status::LimitExceeded,
                    format!(
                        "agent \"{}\": the message would take its history past max_history_bytes ({limit}; {held} held)",
                        self.config.name
                    ),
                ));
            }
            let total_limit = shared.config().max_history_bytes;
            let others = shared
                .history_bytes()
                .saturating_sub(g.history_bytes as u64);
            if total_limit > 0 && others + (held + text.len()) as u64 > total_limit {
                return Err(Error::new(
                    Status::LimitExceeded,
                    format!("the runtime's agents hold {} bytes of history; max_history_bytes is {total_limit}", shared.history_bytes()),
                ));
            }
            if g.inbox.len() >= self.config.inbox_capacity {
                return Err(Error::new(
                    Status::Busy,
                    format!(
                        "agent \"{}\": inbox full ({} messages)",
                        self.config.name, self.config.inbox_capacity
                    ),
                ));
            }
            g.inbox.push_back(Incoming {
                from,
                text: text.to_string(),
                is_reply,
                done,
            });
            if g.turn.is_none() {
                self.set_state(&mut g, shared, AgentState::Runnable);
            }
            if !g.busy {
                g.busy = true;
                shared.agent_busy_changed(true);
            }
        }
        Ok(())
    }

    /// Queues a message from agent `from` (as if it had called `send_message`): the answer goes
    /// back to `from` as a new message. Emits a `message` event.
    pub fn deliver_from(self: &Arc<Self>, from: &Agent, text: &str) -> Result<()> {
        let shared = self.shared()?;
        self.deliver_message(
            Sender::Agent(from.handle(), from.config.name.clone()),
            text,
            false,
        )?;
        shared.events().emit(
            from.event(EventKind::Message, 0)
                .text(text)
                .detail(json!({"from": from.config.name, "to": self.config.name})),
        );
        Ok(())
    }

    /// Counters as JSON (see `agentos_agent_stats_json`).
    pub fn stats_json(&self) -> Value {
        let st = self.stats();
        let v = st.last_view;
        json!({
            "state": self.state().name(), "turns": st.turns, "tool_calls": st.tool_calls,
            "usage": st.usage.to_json(), "history_len": st.history_len, "history_bytes": st.history_bytes,
            "tokens_full_total": st.tokens_full_total, "tokens_sent_total": st.tokens_sent_total,
            "calibration": st.calibration,
            "arena_in_use": st.arena_in_use, "arena_high_water": st.arena_high_water,
            "last_request": {"tokens_full": v.tokens_full, "tokens_sent": v.tokens_sent, "masked": v.masked,
                             "truncated": v.truncated, "deduped": v.deduped, "minified": v.minified,
                             "dropped": v.dropped, "summarized": v.summarized},
        })
    }

    /// Forces the next request to compact as hard as it can (old turns dropped to a summary,
    /// every old tool result masked); afterwards every old result stays masked.
    pub fn compact(&self) {
        let mut g = self.inner.lock();
        g.force_compaction = true;
        g.compact_level = g.compact_level.max(1);
    }

    /// Replaces the context policies (a JSON object applied on top of the current ones).
    pub fn set_policy_json(&self, json: &str) -> Result<()> {
        let v: Value = serde_json::from_str(json).map_err(|e| {
            Error::new(
                Status::InvalidJson,
                format!("context policy is not valid JSON: {e}"),
            )
        })?;
        let mut g = self.inner.lock();
        let mut p = g.policy.clone();
        p.apply_json(&v)?;
        g.policy = p;
        Ok(())
    }

    /// The context the next request would send, as JSON: the messages after compaction, their
    /// estimated tokens, the limit, and what compaction did.
    pub fn context_json(&self) -> Value {
        let Ok(shared) = self.shared() else {
            return Value::Null;
        };
        let mut g = self.inner.lock();
        let endpoint = self.endpoint_state(&shared);
        let (tools, limit) = self.request_plan(&g, &shared, endpoint.as_deref());
        let level = if g.force_compaction {
            2
        } else {
            g.compact_level
        };
        let g = &mut *g;
        let view = g.view_cache.view(&g.history, &g.policy, limit, level);
        let st = view.stats;
        json!({
            "limit_tokens": limit,
            "tokens": g.calibration.correct(st.tokens_sent),
            "tokens_estimated": st.tokens_sent,
            "tokens_full": st.tokens_full,
            "tools_tokens": g.tool_tokens.borrow_mut().tools_tokens(&tools),
            "tokens_exact": tokens::EXACT_AVAILABLE.then(|| {
                let model = self.config.model.clone().unwrap_or_else(|| {
                    endpoint.as_ref().map(|e| e.config.model.clone()).unwrap_or_default()
                });
                let text: String = view.messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n");
                tokens::exact(&model, &text)
            }).flatten(),
            "calibration": g.calibration.ratio(),
            "stats": {"masked": st.masked, "truncated": st.truncated, "deduped": st.deduped,
                      "minified": st.minified, "dropped": st.dropped, "summarized": st.summarized},
            "messages": view.messages.iter().map(|m| m.to_openai_json()).collect::<Vec<_>>(),
        })
    }

    /// Frees the agent's work: drops its inbox, cancels its turn, and takes no more messages.
    pub fn retire(self: &Arc<Self>) {
        {
            let mut g = self.inner.lock();
            g.retired = true;
            g.inbox.clear();
        }
        self.cancel();
        if let Ok(shared) = self.shared() {
            // Let a step settle the busy count even when there was no turn to cancel.
            self.schedule(&shared);
        }
    }

    /// Cancels the current turn (its model call or tools); queued messages stay queued.
    pub fn cancel(self: &Arc<Self>) -> bool {
        let Ok(shared) = self.shared() else {
            return false;
        };
        let (call, invs) = {
            let mut g = self.inner.lock();
            let Some(turn) = g.turn.as_mut() else {
                return false;
            };
            turn.cancelled = true;
            (turn.call.clone(), turn.invocations.clone())
        };
        if let Some(c) = call {
            shared.models().cancel(&c);
        }
        for inv in invs {
            inv.complete(ToolOutcome::Err("cancelled".into()));
        }
        self.schedule(&shared);
        true
    }

    fn shared(&self) -> Result<Arc<Shared>> {
        self.shared
            .upgrade()
            .ok_or_else(|| Error::new(Status::Shutdown, "the runtime was freed"))
    }

    /// Sets the state. The runtime's busy count is updated by `deliver` (idle -> busy) and at
    /// the end of `step`, after the step's events are emitted (busy -> idle), so that
    /// `wait_idle` never returns before the events of the work it waited for.
    fn set_state(&self, g: &mut Inner, _shared: &Shared, state: AgentState) {
        g.state = state;
    }

    fn has_work(g: &Inner) -> bool {
        g.state.is_busy() || !g.inbox.is_empty() || g.turn.is_some()
    }

    /// Puts the agent on the run queue unless it is already there (or this thread is running
    /// its work and steps it next anyway, see [`Agent::step`]).
    pub fn schedule(self: &Arc<Self>, shared: &Shared) {
        if SteppingHere::is(self) {
            return;
        }
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let key = RunKey {
            priority: self.config.priority,
            service: self.inner.lock().service,
        };
        let me = self.clone();
        if shared.submit(key, Box::new(move || me.step())).is_err() {
            self.scheduled.store(false, Ordering::Release);
        }
    }

    /// One scheduling step (runs on a worker). When the step's only wait is a model call or a
    /// single tool that this worker may run itself (see [`Shared::worker_may_linger`]), the
    /// agent stays on the worker: it runs that work here and steps again, with no hand-off to
    /// the I/O thread or another worker.
    pub fn step(self: &Arc<Self>) {
        self.scheduled.store(false, Ordering::Release);
        let Ok(shared) = self.shared() else { return };
        self.step_as(&shared, Stepper::Worker, &|| true);
    }

    /// Steps the agent, and keeps running the lone call or tool `stepper` may run itself
    /// and stepping again until the agent waits for work elsewhere, or `keep_going` says this
    /// thread should stop running work (which then goes the usual way).
    fn step_as(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        stepper: Stepper,
        keep_going: &dyn Fn() -> bool,
    ) {
        let shared = shared.clone();
        // A step makes a handful of actions and events; the buffers serve every step of this
        // loop, and the thread keeps them for its next loop (eight events are past the
        // allocator's fast sizes: allocating them costs a consolidation of its free lists).
        let mut out = StepBuffers::take();
        loop {
            let went_idle = {
                let mut g = self.inner.lock();
                self.advance(&mut g, &shared, &mut out);
                let bytes = g.held_bytes;
                debug_assert_eq!(bytes, history_bytes(&g.history));
                if bytes != g.history_bytes {
                    shared.add_history_bytes(bytes as i64 - g.history_bytes as i64);
                    g.history_bytes = bytes;
                }
                let busy = Self::has_work(&g);
                let went_idle = g.busy && !busy;
                g.busy = busy;
                went_idle
            };
            let here = self.perform(&shared, &mut out, stepper);
            if went_idle {
                shared.agent_busy_changed(false);
            }
            let Some(work) = here else { break };
            if !keep_going() {
                self.dispatch(&shared, work);
                break;
            }
            // While this thread runs the work, wake-ups it raises itself for this agent (the
            // call's finish, a tool completing before it returns) are not queued: the loop steps
            // the agent right after. Wake-ups from other threads (a tool's timeout, a
            // cancellation, a message) queue the agent as usual, so another worker steps it
            // even while this one is held up, say by a tool that blocks.
            let not_run = {
                let _here = SteppingHere::enter(self);
                match work {
                    // Its retries, if any, continue on the I/O thread: a worker never sits
                    // out a backoff.
                    Here::Call(call) => {
                        (!shared.models().run_vetted_here(&call, false)).then_some(Here::Call(call))
                    }
                    Here::Tool(tool, inv) => {
                        run_tool(&shared, self, tool, inv, true);
                        None
                    }
                }
            };
            // Dispatched after leaving the guard, so a failure to hand it over schedules
            // the agent again rather than being taken for a wake-up this loop handles.
            if let Some(work) = not_run {
                self.dispatch(&shared, work);
                break;
            }
        }
        StepBuffers::give_back(out);
    }

    /// Sends work that will not run on this worker the usual way: a call to the I/O thread,
    /// a tool to the run queue.
    fn dispatch(self: &Arc<Self>, shared: &Arc<Shared>, work: Here) {
        match work {
            Here::Call(call) => {
                if let Err(e) = shared.models().submit(call.clone()) {
                    call.finish(Err(e));
                    self.schedule(shared);
                }
            }
            Here::Tool(tool, inv) => run_tool(shared, self, tool, inv, false),
        }
    }

    #[inline]
    fn event(&self, kind: EventKind, turn: u64) -> Event {
        Event::new(kind, self.handle(), self.name.clone(), turn)
    }

    fn budget_exceeded(&self, g: &Inner) -> Option<String> {
        let b = &self.config.budget;
        let tokens = g.usage.prompt_tokens + g.usage.completion_tokens;
        if b.tokens > 0 && tokens >= b.tokens {
            return Some(format!(
                "token budget of {} spent ({tokens} used)",
                b.tokens
            ));
        }
        if b.cost_usd > 0.0 && g.usage.cost_usd >= b.cost_usd {
            return Some(format!(
                "cost budget of ${} spent (${:.6} used)",
                b.cost_usd, g.usage.cost_usd
            ));
        }
        None
    }

    fn end_turn(
        &self,
        g: &mut Inner,
        shared: &Shared,
        status: Status,
        text: String,
        out: &mut StepOut,
    ) {
        let Some(mut turn) = g.turn.take() else {
            return;
        };
        g.last_status = status;
        // The turn's scratch memory goes in one step.
        g.body.end_turn();
        out.emit(
            self.event(EventKind::TurnEnd, turn.number)
                .status(status)
                .text(text.clone())
                .detail_steps(turn.steps),
        );
        self.answer_sender(
            shared,
            turn.from,
            turn.is_reply,
            turn.done.take(),
            status,
            text,
            out,
        );
        for id in [turn.room_timer.take(), turn.pause_timer.take()]
            .into_iter()
            .flatten()
        {
            shared.models().cancel_timer(id);
        }
        // The room goes back after the turn's end is out: the agents it wakes record their
        // resumes after it.
        if let Some(claim) = turn.room.take() {
            out.push(Action::ReleaseRoom(claim));
        }
        let next = if status == Status::Ok {
            AgentState::Idle
        } else {
            AgentState::Failed
        };
        self.set_state(g, shared, next);
    }

    /// Tells whoever sent the message a turn answered how it ended: a waiting caller, the
    /// agent that asked (unless this was its answer), or the mailbox the request came from.
    #[allow(clippy::too_many_arguments)]
    fn answer_sender(
        &self,
        shared: &Shared,
        from: Sender,
        is_reply: bool,
        done: Option<TurnDone>,
        status: Status,
        text: String,
        out: &mut StepOut,
    ) {
        // Whether the sender is told below too (an agent that asked, a mailbox).
        let told = match &from {
            Sender::Agent(..) => !is_reply,
            Sender::Mailbox(..) => true,
            Sender::Host => false,
        };
        if let Some(done) = done {
            if !told {
                // The usual case (a host's message): the waiting caller takes the text itself.
                out.push(Action::Answer(done, status, text));
                return;
            }
            out.push(Action::Answer(done, status, text.clone()));
        }
        match from {
            Sender::Agent(_, name) if !is_reply => {
                let reply = if status == Status::Ok {
                    text
                } else {
                    format!(
                        "(agent {} could not answer: {}: {text})",
                        self.config.name,
                        status.name()
                    )
                };
                shared.agent_busy_changed(true); // a message in flight counts as work until delivered
                out.push(Action::Deliver(Box::new(Delivery {
                    to: name,
                    from: Sender::Agent(self.handle(), self.config.name.clone()),
                    text: reply,
                    is_reply: true,
                })));
            }
            Sender::Mailbox(mailbox, correlation) => {
                shared.agent_busy_changed(true); // a message in flight counts as work until delivered
                out.push(Action::Mail {
                    mailbox,
                    correlation,
                    ok: status == Status::Ok,
                    text: if status == Status::Ok {
                        text
                    } else {
                        format!("{}: {text}", status.name())
                    },
                });
            }
            _ => {}
        }
    }

    fn advance(self: &Arc<Self>, g: &mut Inner, shared: &Arc<Shared>, out: &mut StepOut) {
        for ev in g.deferred.drain(..) {
            out.emit(ev);
        }
        loop {
            if g.turn.is_none() {
                if g.retired {
                    g.inbox.clear();
                }
                if g.state == AgentState::Finished {
                    // Messages queued before the agent finished are answered, not left to
                    // wait forever: each sender learns the agent will not take them.
                    while let Some(msg) = g.inbox.pop_front() {
                        let why = format!(
                            "agent \"{}\" has finished (a budget ran out); the message was not answered",
                            self.config.name
                        );
                        out.emit(
                            self.event(EventKind::Error, 0)
                                .status(Status::LimitExceeded)
                                .text(why.clone())
                                .detail(json!({"undelivered": msg.text})),
                        );
                        self.answer_sender(
                            shared,
                            msg.from,
                            msg.is_reply,
                            msg.done,
                            Status::LimitExceeded,
                            why,
                            out,
                        );
                    }
                    return;
                }
                let Some(msg) = g.inbox.pop_front() else {
                    let st = if g.state == AgentState::Failed {
                        AgentState::Failed
                    } else {
                        AgentState::Idle
                    };
                    self.set_state(g, shared, st);
                    return;
                };
                g.turns += 1;
                // A stateless agent starts afresh, except for an answer to a message it sent:
                // that continues the turn that asked.
                if !self.config.keep_history && !msg.is_reply {
                    g.forget_turns();
                }
                let content = match &msg.from {
                    Sender::Host | Sender::Mailbox(..) => msg.text.clone(),
                    Sender::Agent(_, name) => format!("[message from agent {name}]\n{}", msg.text),
                };
                g.push_history(ChatMessage::text(Role::User, content));
                let from_json = match &msg.from {
                    Sender::Host => None,
                    Sender::Agent(_, n) => Some(n.as_str().into()),
                    Sender::Mailbox(m, _) => Some(format!("mailbox:{m:#x}").into()),
                };
                out.emit(
                    self.event(EventKind::TurnStart, g.turns)
                        .text(msg.text)
                        .detail_from(from_json),
                );
                g.turn = Some(Turn {
                    number: g.turns,
                    from: msg.from,
                    is_reply: msg.is_reply,
                    steps: 0,
                    phase: Phase::NeedModel,
                    call: None,
                    assistant: None,
                    calls: no_calls(),
                    pending: Vec::new(),
                    invocations: Vec::new(),
                    cancelled: false,
                    overflow_retries: 0,
                    room: None,
                    room_timer: None,
                    paused_by: None,
                    paused_since: None,
                    pause_timer: None,
                    done: msg.done,
                });
                self.set_state(g, shared, AgentState::Runnable);
            }
            let (number, phase, cancelled) = {
                let t = g.turn.as_ref().expect("turn");
                (t.number, t.phase, t.cancelled)
            };
            if cancelled && phase != Phase::WaitingModel {
                // Tools still pending are completed as cancelled by `cancel`; drop the turn.
                self.end_turn(
                    g,
                    shared,
                    Status::Cancelled,
                    "the turn was cancelled".into(),
                    out,
                );
                continue;
            }
            match phase {
                Phase::NeedModel => {
                    let limit = self.config.max_history_bytes;
                    let now = if limit > 0 { g.held_bytes as u64 } else { 0 };
                    if limit > 0 && now > limit {
                        let why =
                            format!("history holds {now} bytes, over max_history_bytes ({limit})");
                        out.emit(
                            self.event(EventKind::BudgetExceeded, number)
                                .status(Status::LimitExceeded)
                                .text(why.clone()),
                        );
                        self.end_turn(g, shared, Status::LimitExceeded, why, out);
                        continue;
                    }
                    if let Some(why) = self.budget_exceeded(g) {
                        out.emit(
                            self.event(EventKind::BudgetExceeded, number)
                                .status(Status::LimitExceeded)
                                .text(why.clone()),
                        );
                        self.end_turn(g, shared, Status::LimitExceeded, why, out);
                        self.set_state(g, shared, AgentState::Finished);
                        continue;
                    }
                    let steps = g.turn.as_ref().expect("turn").steps;
                    if steps >= self.config.max_steps {
                        let why = format!(
                            "max_steps ({}) reached without a final answer",
                            self.config.max_steps
                        );
                        self.end_turn(g, shared, Status::LimitExceeded, why, out);
                        continue;
                    }
                    let endpoint = self.endpoint_state(shared);
                    // A safe point: nothing of this agent is in flight.
                    if let Some(ep) = &endpoint {
                        if self.pause_at_safe_point(g, shared, ep, number, out) {
                            return;
                        }
                    }
                    let PreparedCall {
                        endpoint,
                        request,
                        body,
                        n_messages,
                        prompt_chars,
                    } = self.prepare_call(g, shared, endpoint);
                    let view = g.last_view;
                    let opts = CallOptions {
                        priority: self.config.priority,
                        service: g.service,
                        preemptible: self.config.preemptible,
                        observer: Some(
                            g.observer
                                .get_or_insert_with(|| {
                                    Arc::new(AgentObserver(Arc::downgrade(self)))
                                })
                                .clone(),
                        ),
                        body,
                        prompt_chars: Some(prompt_chars),
                        // An agent's calls are not pulled; its observer wants deltas only
                        // for stream events.
                        deltas_unread: !self.config.stream_events,
                        // Gone on from a pause by aging: its call ages from the pause.
                        waiting_since: g.turn.as_ref().and_then(|t| t.paused_since),
                    };
                    let models = shared.models();
                    let made = match endpoint {
                        Some(ep) => Ok(models.new_call_to(ep, request, opts)),
                        // Gone since the agent was made: new_call reports it by name.
                        None => models.new_call(&self.config.endpoint, request, opts),
                    };
                    match made {
                        Ok(call) => {
                            let t = g.turn.as_mut().expect("turn");
                            t.steps += 1;
                            t.phase = Phase::WaitingModel;
                            t.call = Some(call.clone());
                            let step = t.steps;
                            self.set_state(g, shared, AgentState::WaitingModel);
                            let endpoint = self.endpoint.clone();
                            out.emit(
                                self.event(EventKind::ModelRequest, number)
                                    .detail_with(move || json!({"step": step, "messages": n_messages, "endpoint": &*endpoint,
                                        "context": {"tokens_full": view.tokens_full, "tokens_sent": view.tokens_sent,
                                                    "masked": view.masked, "truncated": view.truncated, "deduped": view.deduped,
                                                    "minified": view.minified, "dropped": view.dropped, "summarized": view.summarized}})),
                            );
                            out.push(Action::StartCall(call));
                            return;
                        }
                        Err(e) => {
                            out.emit(
                                self.event(EventKind::Error, number)
                                    .status(e.status())
                                    .text(e.message()),
                            );
                            self.end_turn(g, shared, e.status(), e.message().to_string(), out);
                            continue;
                        }
                    }
                }
                Phase::WaitingModel => {
                    let call = g.turn.as_ref().and_then(|t| t.call.clone()).expect("call");
                    let Some((result, u)) = call.take_result() else {
                        if cancelled {
                            out.push(Action::CancelCall(call));
                        }
                        return;
                    };
                    g.turn.as_mut().expect("turn").call = None;
                    g.usage.add(&u);
                    g.service = g
                        .service
                        .saturating_add(u.prompt_tokens.saturating_add(u.completion_tokens));
                    match result {
                        Err(e)
                            if g.policy.retry_on_overflow
                                && is_context_overflow(e.message())
                                && g.turn.as_ref().is_some_and(|t| t.overflow_retries < 2) =>
                        {
                            // Compact harder and try again; the failed call does not count as a step.
                            let t = g.turn.as_mut().expect("turn");
                            t.overflow_retries += 1;
                            t.steps -= 1;
                            t.phase = Phase::NeedModel;
                            let level = t.overflow_retries;
                            g.compact_level = g.compact_level.max(level);
                            out.emit(
                                self.event(EventKind::Error, number)
                                    .status(e.status())
                                    .text(e.message())
                                    .detail(json!({"context_overflow": true, "compact_level": level, "retrying": true})),
                            );
                        }
                        Err(e) => {
                            let partial = call.partial().content;
                            out.emit(
                                self.event(EventKind::Error, number)
                                    .status(e.status())
                                    .text(e.message())
                                    .detail(json!({"partial_output": partial})),
                            );
                            self.end_turn(g, shared, e.status(), e.message().to_string(), out);
                        }
                        Ok(r) => {
                            let sent = g.last_view.tokens_sent;
                            g.calibration.observe(sent, r.usage.prompt_tokens);
                            self.on_model_answer(g, shared, r, number, out)
                        }
                    }
                }
                Phase::RunningTools => {
                    let t = g.turn.as_mut().expect("turn");
                    if t.pending.iter().any(Option::is_none) {
                        return;
                    }
                    let assistant = t.assistant.take().expect("assistant message");
                    let results: Vec<ChatMessage> = assistant
                        .tool_calls
                        .iter()
                        .zip(t.pending.drain(..))
                        .map(|(tc, out)| ChatMessage {
                            role: Role::Tool,
                            content: out.expect("result").into_text(),
                            tool_calls: Vec::new(),
                            tool_call_id: Some(tc.id.clone()),
                        })
                        .collect();
                    t.invocations.clear();
                    t.calls = no_calls();
                    t.phase = Phase::NeedModel;
                    if let Some(id) = t.room_timer.take() {
                        shared.models().cancel_timer(id);
                    }
                    // The call and its results enter the history together: never split.
                    g.push_history(assistant);
                    for r in results {
                        g.push_history(r);
                    }
                }
            }
        }
    }

    fn on_model_answer(
        self: &Arc<Self>,
        g: &mut Inner,
        shared: &Arc<Shared>,
        mut r: ChatResponse,
        number: u64,
        out: &mut StepOut,
    ) {
        // The answer moves into the history; the events keep one copy of the tool calls.
        let calls: Arc<[ToolCall]> = if r.tool_calls.is_empty() {
            no_calls()
        } else {
            r.tool_calls.as_slice().into()
        };
        let (finish_reason, usage) = (std::mem::take(&mut r.finish_reason), r.usage);
        let text = r.content.clone();
        let mut msg = r.into_message();
        let all = calls.clone();
        out.emit(
            self.event(EventKind::ModelResponse, number).text(text).detail_with(move || json!({
                "tool_calls": all.iter().map(|c| json!({"id": c.id, "name": c.name, "arguments": c.arguments})).collect::<Vec<_>>(),
                "finish_reason": finish_reason, "usage": usage.to_json()})),
        );
        if msg.tool_calls.is_empty() {
            let text = msg.content.clone();
            g.push_history(msg);
            self.end_turn(g, shared, Status::Ok, text, out);
            return;
        }
        let n = msg.tool_calls.len() as u64;
        let limit = self.config.budget.tool_calls;
        if limit > 0 && g.tool_calls + n > limit {
            let why = format!(
                "tool-call budget of {limit} spent ({} used, {n} more requested)",
                g.tool_calls
            );
            out.emit(
                self.event(EventKind::BudgetExceeded, number)
                    .status(Status::LimitExceeded)
                    .text(why.clone()),
            );
            self.end_turn(g, shared, Status::LimitExceeded, why, out);
            self.set_state(g, shared, AgentState::Finished);
            return;
        }
        g.tool_calls += n;
        // Some servers stream the markdown fence a model wraps its tool call in as text; kept
        // in the history, it teaches the model to keep calling. Drop content that is only that.
        if is_only_a_fence(&msg.content) {
            msg.content.clear();
        }
        let mut pending = vec![None; msg.tool_calls.len()];
        let mut invocations = Vec::new();
        for (i, tc) in msg.tool_calls.iter().enumerate() {
            out.emit(
                self.event(EventKind::ToolCall, number)
                    .text(tc.arguments.clone())
                    .detail_tool_call(calls.clone(), i, None),
            );
            let resolved = match self.resolve_tool(shared, &tc.name, &tc.arguments) {
                Resolved::Recall(key) => {
                    let outcome = match recall(&g.history, &key) {
                        Some(text) => ToolOutcome::Ok(text.to_string()),
                        None => ToolOutcome::Err(format!("no tool result has the key \"{key}\"")),
                    };
                    Resolved::Now(outcome, None)
                }
                other => other,
            };
            match resolved {
                Resolved::Now(outcome, deliver) => {
                    if let Some((to, text)) = deliver {
                        out.emit(
                            self.event(EventKind::Message, number)
                                .text(text.clone())
                                .detail(json!({"from": self.config.name, "to": to})),
                        );
                        shared.agent_busy_changed(true); // a message in flight counts as work until delivered
                        out.push(Action::Deliver(Box::new(Delivery {
                            to,
                            from: Sender::Agent(self.handle(), self.config.name.clone()),
                            text,
                            is_reply: false,
                        })));
                    }
                    out.emit(self.tool_result_event(number, &calls, i, &outcome));
                    pending[i] = Some(outcome);
                }
                Resolved::Recall(_) => unreachable!("recall is resolved above"),
                Resolved::Run(tool) => {
                    let weak = Arc::downgrade(self);
                    let inv = Arc::new(ToolInvocation::new(
                        self.handle(),
                        self.name.clone(),
                        calls.clone(),
                        i,
                        Box::new(move |outcome| {
                            if let Some(agent) = weak.upgrade() {
                                agent.tool_finished(number, i, outcome);
                            }
                        }),
                    ));
                    invocations.push(inv.clone());
                    out.push(Action::RunTool(tool, inv));
                }
            }
        }
        let t = g.turn.as_mut().expect("turn");
        t.assistant = Some(msg);
        t.calls = calls;
        t.pending = pending;
        t.invocations = invocations;
        t.phase = Phase::RunningTools;
        if !t.invocations.is_empty() {
            self.limit_room_while_tools_run(t, shared);
        }
        self.set_state(g, shared, AgentState::RunningTools);
    }

    /// With room claimed as its tools start, the turn keeps it only for the endpoint's claim
    /// grace: tools that run longer than a model call there takes would keep the less urgent
    /// agents paused (and the slots kept for the claim idle) for nothing. A timer gives the
    /// room back then, unless the tools finished first (the timer is cancelled as the turn
    /// goes on).
    /// (Not in deterministic mode, where nothing may depend on the wall clock: the claim lasts
    /// the turn there.)
    fn limit_room_while_tools_run(self: &Arc<Self>, t: &mut Turn, shared: &Shared) {
        let Some(claim) = &t.room else { return };
        if shared.config().deterministic {
            return;
        }
        let grace = claim.endpoint.claim_grace();
        let (weak, number, step) = (Arc::downgrade(self), t.number, t.steps);
        let timer = shared.models().schedule(
            Instant::now() + grace,
            Box::new(move || {
                if let Some(agent) = weak.upgrade() {
                    agent.give_back_room_during_tools(number, step);
                }
            }),
        );
        t.room_timer = timer.ok();
    }

    /// The claim grace ran out with step `step` of turn `number` still running its tools:
    /// the room goes back, on a worker (this runs on the I/O thread, and releasing wakes every
    /// agent paused under the claim).
    fn give_back_room_during_tools(&self, number: u64, step: u32) {
        let claim = {
            let mut g = self.inner.lock();
            let Some(t) = g.turn.as_mut() else { return };
            if t.number != number || t.steps != step || t.phase != Phase::RunningTools {
                return;
            }
            t.room_timer = None;
            t.room.take()
        };
        let (Some(claim), Ok(shared)) = (claim, self.shared()) else {
            return;
        };
        let key = RunKey {
            priority: self.config.priority,
            service: 0,
        };
        // (Refused at shutdown, the job and its claim are dropped here.)
        let _ = shared.submit(key, Box::new(move || drop(claim)));
    }

    /// The event for the result of tool call `index` of `calls`.
    fn tool_result_event(
        &self,
        turn: u64,
        calls: &Arc<[ToolCall]>,
        index: usize,
        outcome: &ToolOutcome,
    ) -> Event {
        let status = if outcome.is_err() {
            Status::Provider
        } else {
            Status::Ok
        };
        self.event(EventKind::ToolResult, turn)
            .status(status)
            .text(outcome.text())
            .detail_tool_call(calls.clone(), index, Some(outcome.is_err()))
    }

    fn resolve_tool(&self, shared: &Shared, name: &str, arguments: &str) -> Resolved {
        let err = |m: String| Resolved::Now(ToolOutcome::Err(m), None);
        if !self.config.tools.iter().any(|t| t == name) && name != RECALL {
            return err(format!(
                "unknown tool \"{name}\"; available: {}",
                self.config.tools.join(", ")
            ));
        }
        let arguments = if arguments.trim().is_empty() {
            "{}"
        } else {
            arguments
        };
        let not_json = |e: &dyn std::fmt::Display| {
            err(format!(
                "invalid arguments for \"{name}\": not valid JSON ({e})"
            ))
        };
        if name != RECALL && name != SEND_MESSAGE {
            let Some(tool) = shared.tools().get(name) else {
                return err(format!("tool \"{name}\" is not registered"));
            };
            return match schema::validate_text(&tool.parameters, arguments) {
                Ok(()) => Resolved::Run(tool),
                Err(schema::TextError::Json(e)) => not_json(&e),
                Err(schema::TextError::Schema(e)) => {
                    err(format!("invalid arguments for \"{name}\": {e}"))
                }
            };
        }
        let args: Value = match serde_json::from_str(arguments) {
            Ok(v) => v,
            Err(e) => return not_json(&e),
        };
        if name == RECALL {
            // Resolved by the agent itself (it holds the history); see `resolve_recall`.
            return Resolved::Recall(args["key"].as_str().unwrap_or_default().to_string());
        }
        // What is left is send_message.
        if let Err(e) = schema::validate(&crate::tools::send_message_schema(), &args) {
            return err(format!("invalid arguments for \"{name}\": {e}"));
        }
        let to = args["to"].as_str().unwrap_or_default().to_string();
        let text = args["text"].as_str().unwrap_or_default().to_string();
        if to == self.config.name {
            return err("an agent cannot message itself".into());
        }
        if shared.agent_by_name(&to).is_none() {
            return err(format!("no agent named \"{to}\""));
        }
        let reply = format!("delivered to {to}; its answer will arrive later as a new message");
        Resolved::Now(ToolOutcome::Ok(reply), Some((to, text)))
    }

    fn tool_finished(self: &Arc<Self>, turn: u64, index: usize, outcome: ToolOutcome) {
        let Ok(shared) = self.shared() else { return };
        let event = {
            let mut g = self.inner.lock();
            let Some(t) = g.turn.as_mut() else { return };
            if t.number != turn
                || t.phase != Phase::RunningTools
                || index >= t.pending.len()
                || t.pending[index].is_some()
            {
                return;
            }
            if index >= t.calls.len() {
                return;
            }
            let ev = self.tool_result_event(turn, &t.calls, index, &outcome);
            t.pending[index] = Some(outcome);
            if SteppingHere::is(self) {
                // This thread steps the agent next (see `step_as`): the event goes out with
                // that step's, and the step needs no scheduling.
                g.deferred.push(ev);
                return;
            }
            ev
        };
        shared.events().emit(event);
        self.schedule(&shared);
    }

    /// Whether the agent gets the built-in `recall` tool (masking or cutting can hide text).
    fn has_recall(&self, g: &Inner) -> bool {
        let p = &g.policy;
        !self.config.tools.is_empty() && (p.masking.enabled || p.tool_outputs.enabled)
    }

    /// The token limit for the messages of a request: the context window, less the output
    /// reserve and the tool definitions.
    fn message_limit(
        &self,
        g: &Inner,
        endpoint: Option<&EndpointState>,
        tools: &[ToolSpec],
    ) -> u64 {
        let window = match self.config.context_limit {
            0 => endpoint.map_or(8_192, |e| e.config.context_window),
            n => n,
        } as u64;
        let reserve = match g.policy.budget.reserve_output {
            0 => self.config.max_tokens.unwrap_or(1_024) as u64,
            n => n as u64,
        };
        window
            .saturating_sub(reserve)
            .saturating_sub(g.tool_tokens.borrow_mut().tools_tokens(tools))
    }

    /// Claims room on `ep` for the current turn (once per turn, or again after the tools gave
    /// it back; see [`crate::model::room`]): until the turn ends, less urgent preemptible
    /// agents on the endpoint pause at their safe points.
    fn claim_room(&self, g: &mut Inner, ep: &Arc<EndpointState>) {
        let Some(t) = g.turn.as_mut() else { return };
        if t.room.is_some() {
            return;
        }
        ep.room.claim(self.handle(), self.config.priority);
        t.room = Some(RoomClaim {
            endpoint: ep.clone(),
            claimant: self.handle(),
            shared: self.shared.clone(),
        });
    }

    /// At a safe point (about to start a model call, nothing in flight): a preemptible agent
    /// pauses while a more urgent agent holds a claim of room on its endpoint. Returns true when
    /// it pauses (state `Paused`, a `PREEMPTED` event the first time); it is stepped again when
    /// the claim goes. Going on after a pause records the `RESUMED` event.
    ///
    /// Aging, as at admission: a paused agent gains a priority level for each starvation limit
    /// it has been paused (a timer has it look again at each level), so urgent agents claiming
    /// room one after another cannot keep it paused forever; it goes on once no claim is above
    /// its raised priority (its `RESUMED` then says `"aged": true`).
    fn pause_at_safe_point(
        self: &Arc<Self>,
        g: &mut Inner,
        shared: &Shared,
        ep: &EndpointState,
        number: u64,
        out: &mut StepOut,
    ) -> bool {
        let priority = self.config.priority;
        if !self.config.preemptible || !ep.room.claimed_above(priority) {
            // The usual case: one load.
            return self.go_on_after_pause(g, shared, ep, number, out, false);
        }
        let now = Instant::now();
        let limit = shared.starvation_limit();
        let t = g.turn.as_mut().expect("turn");
        let levels = match (limit, t.paused_since) {
            (Some(limit), Some(since)) => {
                crate::config::aging_levels(now.saturating_duration_since(since), limit)
            }
            _ => 0,
        };
        let raised = priority.saturating_add(i32::try_from(levels).unwrap_or(i32::MAX));
        let Some(by) = ep
            .room
            .wait_if_claimed_above(self.handle(), raised, self.waker())
        else {
            // Under a claim still, it goes on by its aging.
            let aged = ep.room.claimed_above(priority);
            return self.go_on_after_pause(g, shared, ep, number, out, aged);
        };
        let t = g.turn.as_mut().expect("turn");
        if t.paused_by.is_none() {
            t.paused_by = Some(by);
            out.emit(
                self.event(EventKind::Preempted, number)
                    .detail(json!({"safe_point": true, "by_priority": by})),
            );
        }
        let since = *t.paused_since.get_or_insert(now);
        if let Some(limit) = limit {
            // Look again when the priority next rises.
            let level = levels.saturating_add(1);
            let timer = shared
                .models()
                .schedule(since + limit.saturating_mul(level), self.waker());
            if let Some(old) = std::mem::replace(&mut t.pause_timer, timer.ok()) {
                shared.models().cancel_timer(old);
            }
        }
        self.set_state(g, shared, AgentState::Paused);
        true
    }

    /// A function that has the agent stepped again (if it still exists), for whoever wakes it
    /// from elsewhere: a released claim, a timer.
    fn waker(self: &Arc<Self>) -> Box<dyn FnOnce() + Send> {
        let weak = Arc::downgrade(self);
        Box::new(move || {
            if let Some(agent) = weak.upgrade() {
                if let Ok(shared) = agent.shared() {
                    agent.schedule(&shared);
                }
            }
        })
    }

    /// Not pausing at this safe point: if the agent was paused, it records the resume (`aged`:
    /// it goes on under a claim its aging rose above) and drops what the pause kept.
    fn go_on_after_pause(
        &self,
        g: &mut Inner,
        shared: &Shared,
        ep: &EndpointState,
        number: u64,
        out: &mut StepOut,
        aged: bool,
    ) -> bool {
        let Some(t) = g.turn.as_mut() else {
            return false;
        };
        if !aged {
            // No claim above it: a later pause ages from its own start. (Gone on by aging, it
            // keeps its age: its call and its next safe points under the same claim count it.)
            t.paused_since = None;
        }
        let Some(by) = t.paused_by.take() else {
            return false;
        };
        if let Some(id) = t.pause_timer.take() {
            shared.models().cancel_timer(id);
        }
        let mut detail = json!({"safe_point": true, "by_priority": by});
        if aged {
            // Still under a claim: its wake-up there is no longer wanted.
            ep.room.forget(self.handle());
            detail["aged"] = json!(true);
        }
        out.emit(self.event(EventKind::Resumed, number).detail(detail));
        false
    }

    /// The agent's endpoint (`None`: removed since the agent was made).
    fn endpoint_state(&self, shared: &Shared) -> Option<Arc<EndpointState>> {
        shared.models().endpoint(&self.config.endpoint).ok()
    }

    /// The tools a request offers (before `recall`, which is added only when the view hides
    /// something) and the token limit for the view's messages, on `endpoint` (the agent's,
    /// looked up once by the caller). Shared by requests and by [`Agent::context_json`], so
    /// the context reported is the context sent.
    fn request_plan(
        &self,
        g: &Inner,
        shared: &Shared,
        endpoint: Option<&EndpointState>,
    ) -> (Vec<ToolSpec>, u64) {
        let mut tools: Vec<ToolSpec> = Vec::with_capacity(self.config.tools.len() + 1);
        for name in &self.config.tools {
            if name == SEND_MESSAGE {
                tools.push(send_message_spec());
            } else if let Some(spec) = shared.tools().spec(name) {
                tools.push(spec);
            }
        }
        let sel = &g.policy.tool_selection;
        if sel.enabled {
            select_tools(&mut tools, &g.history, sel.max_tools, sel.max_description);
        }
        // Room for the recall tool's definition.
        let limit = self.message_limit(g, endpoint, &tools).saturating_sub(64);
        // The calibration scales the estimate; compaction works in estimated tokens.
        let limit = (limit as f64 / g.calibration.ratio().max(0.25)) as u64;
        (tools, limit)
    }

    /// Builds the next request: the view of the history under the context policies, rendered
    /// into the body arena. Messages the view leaves unchanged are borrowed from the history,
    /// not copied. The returned request carries its messages only when the call may need to
    /// render itself again (a preemptible stream continues from a snapshot; a caching
    /// endpoint keys on the body); otherwise the body is all it sends.
    fn prepare_call(
        &self,
        g: &mut Inner,
        shared: &Shared,
        endpoint: Option<Arc<EndpointState>>,
    ) -> PreparedCall {
        let (mut tools, limit) = self.request_plan(g, shared, endpoint.as_deref());
        let level = if std::mem::take(&mut g.force_compaction) {
            2
        } else {
            g.compact_level
        };
        let with_recall = self.has_recall(g);
        let first_step = g.turn.as_ref().is_some_and(|t| t.steps == 0);
        let view = g.view_cache.view(&g.history, &g.policy, limit, level);
        let st = view.stats;
        g.last_view = st;
        g.tokens_full_total += st.tokens_full;
        g.tokens_sent_total += st.tokens_sent;
        // Nearing its context limit (the conversation fills 90% of the room the window leaves
        // for messages), the agent claims room on its endpoint: a large call that should not
        // queue behind less urgent agents' calls.
        let near_limit = limit > 0 && st.tokens_full.saturating_mul(10) >= limit.saturating_mul(9);
        // `recall` is offered only when this view actually hides something (small models are
        // easily distracted by tools they do not need, and every definition costs tokens).
        if with_recall && st.masked + st.truncated + st.deduped + st.dropped > 0 {
            tools.push(recall_spec());
        }
        let tool_choice =
            (self.config.tool_first && first_step && !tools.is_empty()).then(|| json!("required"));
        let mut request = ChatRequest {
            model: self.config.model.clone(),
            messages: Vec::new(),
            tools,
            temperature: self.config.temperature,
            max_tokens: self.config.max_tokens,
            stream: self.config.stream,
            response_format: None,
            tool_choice,
        };
        let body = endpoint
            .as_ref()
            .and_then(|ep| g.body.render(&ep.config, &request, &view.messages));
        let n_messages = view.messages.len();
        let prompt_chars = view.messages.iter().map(|m| m.content.len() + 8).sum();
        let needs_messages = body.is_none()
            || (self.config.preemptible && self.config.stream)
            || endpoint.as_ref().is_some_and(|ep| ep.cache.is_some());
        if needs_messages {
            request.messages = view.messages.into_iter().map(Cow::into_owned).collect();
        }
        if let (true, Some(ep)) = (near_limit, &endpoint) {
            self.claim_room(g, ep);
        }
        PreparedCall {
            endpoint,
            request,
            body,
            n_messages,
            prompt_chars,
        }
    }

    /// Carries out a step's actions (taking them all, and their events, out of `out`). Returns
    /// the one model call or tool this worker may run itself, after the other actions;
    /// everything else is dispatched.
    fn perform(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        out: &mut StepOut,
        stepper: Stepper,
    ) -> Option<Here> {
        let StepOut { actions, events } = out;
        let tools = actions
            .iter()
            .filter(|a| matches!(a, Action::RunTool(..)))
            .count();
        let calls = actions
            .iter()
            .filter(|a| matches!(a, Action::StartCall(_)))
            .count();
        // Parallel tool calls run concurrently, so only a lone call or tool stays here.
        let mut here = None;
        let may_stay = |shared: &Shared| {
            tools + calls == 1 && (stepper != Stepper::Worker || shared.worker_may_linger())
        };
        // A worker must not sit out a model call of seconds; a waiting caller may, unless it
        // has a time limit to keep.
        let quick_enough = |call: &CallInner| match stepper {
            Stepper::Caller {
                quick_calls_only: false,
            } => true,
            _ => call.endpoint.answers_quickly(),
        };
        // Consecutive events go out together (one wake-up of whoever waits for events),
        // before any other action, so their order relative to it is kept.
        let mut events = events.drain(..);
        let mut due = 0;
        for a in actions.drain(..) {
            if let Action::Emit = a {
                due += 1;
                continue;
            }
            if due > 0 {
                shared.events().emit_all(events.by_ref().take(due));
                due = 0;
            }
            match a {
                Action::Emit => unreachable!("handled above"),
                Action::StartCall(call) => {
                    if quick_enough(&call)
                        && may_stay(shared)
                        && crate::model::direct::DirectCalls::eligible(&call)
                    {
                        here = Some(Here::Call(call));
                    } else {
                        self.dispatch(shared, Here::Call(call));
                    }
                }
                Action::CancelCall(call) => shared.models().cancel(&call),
                // A waiter that gave up (timed out) finds the outcome unread; nothing more.
                Action::Answer(done, status, text) => done.answer(status, text),
                Action::Mail {
                    mailbox,
                    correlation,
                    ok,
                    text,
                } => {
                    use crate::msg::message::{Message, KIND_AGENT_ANSWER, KIND_AGENT_ERROR};
                    let kind = if ok {
                        KIND_AGENT_ANSWER
                    } else {
                        KIND_AGENT_ERROR
                    };
                    let msg = Message::copy_from(kind, text.as_bytes());
                    let from = self.mailbox().unwrap_or(0);
                    let h = msg.new_header(from, mailbox, kind, correlation);
                    let r = shared
                        .mailbox(crate::handle::Handle::from_raw(mailbox))
                        .and_then(|mb| mb.put(msg.deliver_as(h), crate::msg::mailbox::Wait::No));
                    shared.agent_busy_changed(false);
                    if let Err(e) = r {
                        shared.events().emit(
                            self.event(EventKind::Error, 0)
                                .status(e.status())
                                .text(format!(
                                    "answer to mailbox {mailbox:#x} not delivered: {}",
                                    e.message()
                                ))
                                .detail(json!({"undelivered": text})),
                        );
                    }
                }
                Action::ReleaseRoom(claim) => drop(claim),
                Action::RunTool(tool, inv) => {
                    if may_stay(shared) {
                        here = Some(Here::Tool(tool, inv));
                    } else {
                        run_tool(shared, self, tool, inv, false);
                    }
                }
                Action::Deliver(d) => {
                    let Delivery {
                        to,
                        from,
                        text,
                        is_reply,
                    } = *d;
                    let target = shared.agent_by_name(&to);
                    let r = match target {
                        Some(agent) => agent.deliver_message(from, &text, is_reply),
                        None => Err(Error::new(
                            Status::NotFound,
                            format!("no agent named \"{to}\""),
                        )),
                    };
                    shared.agent_busy_changed(false);
                    if let Err(e) = r {
                        shared.events().emit(
                            self.event(EventKind::Error, 0)
                                .status(e.status())
                                .text(format!(
                                    "message to \"{to}\" not delivered: {}",
                                    e.message()
                                ))
                                .detail(json!({"undelivered": text})),
                        );
                    }
                }
            }
        }
        debug_assert_eq!(events.len(), due, "one event per Action::Emit");
        if due > 0 {
            shared.events().emit_all(events);
        }
        here
    }
}

thread_local! {
    /// The action and event buffers of this thread's last step loop (see [`StepBuffers`]).
    static STEP_BUFFERS: std::cell::RefCell<Option<StepOut>> =
        const { std::cell::RefCell::new(None) };
}

/// The buffers a step loop gathers its actions and events in, kept per thread between loops.
/// A loop nested in another (a tool run here that runs another agent's turn) finds none kept
/// and makes its own.
struct StepBuffers;

impl StepBuffers {
    fn take() -> StepOut {
        STEP_BUFFERS
            .try_with(|b| b.borrow_mut().take())
            .ok()
            .flatten()
            .unwrap_or_else(|| StepOut {
                actions: Vec::with_capacity(8),
                events: Vec::with_capacity(8),
            })
    }

    /// Keeps `out` (empty: every action was carried out) for the thread's next step loop.
    fn give_back(out: StepOut) {
        debug_assert!(out.is_empty());
        if out.is_empty() {
            let _ = STEP_BUFFERS.try_with(|b| *b.borrow_mut() = Some(out));
        }
    }
}

thread_local! {
    /// The agent whose work this thread is running itself (its address; 0 for none).
    static STEPPING_HERE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as running an agent's work until dropped (also when unwinding).
struct SteppingHere(usize);

impl SteppingHere {
    fn enter(agent: &Arc<Agent>) -> SteppingHere {
        SteppingHere(STEPPING_HERE.with(|c| c.replace(Arc::as_ptr(agent) as usize)))
    }

    fn is(agent: &Arc<Agent>) -> bool {
        STEPPING_HERE.with(|c| c.get()) == Arc::as_ptr(agent) as usize
    }
}

impl Drop for SteppingHere {
    fn drop(&mut self) {
        STEPPING_HERE.with(|c| c.set(self.0));
    }
}

thread_local! {
    /// The agent (raw handle; 0 for none) whose tool callback this thread is running.
    static IN_TOOL: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as running a tool of an agent until dropped.
struct InTool(u64);

impl InTool {
    fn enter(agent: u64) -> InTool {
        InTool(IN_TOOL.with(|c| c.replace(agent)))
    }

    /// Whether this thread is inside a tool callback of `agent`.
    fn is(agent: u64) -> bool {
        agent != 0 && IN_TOOL.with(|c| c.get()) == agent
    }
}

impl Drop for InTool {
    fn drop(&mut self) {
        IN_TOOL.with(|c| c.set(self.0));
    }
}

/// Work a worker may run itself instead of handing it off.
enum Here {
    Call(Arc<CallInner>),
    Tool(Arc<Tool>, Arc<ToolInvocation>),
}

/// A request ready to go: what [`Agent::prepare_call`] builds.
struct PreparedCall {
    /// The agent's endpoint, looked up once for the body and the call (none if removed).
    endpoint: Option<Arc<EndpointState>>,
    request: ChatRequest,
    body: Option<Vec<u8>>,
    n_messages: usize,
    /// Characters of the messages sent (for the admission estimate when the request does not
    /// carry its messages).
    prompt_chars: usize,
}

/// The turn's arena, where request bodies are rendered, and its accounting.
#[derive(Default)]
struct BodyArena {
    arena: bumpalo::Bump,
    /// Bytes rendered this turn (0 between turns).
    in_use: usize,
    /// Size of the last body rendered (the next is sized from it).
    last_body: usize,
    /// The most the arena ever held in one turn (capacity of its chunks).
    high_water: usize,
}

impl BodyArena {
    /// Renders the body of `request` with `messages` as its conversation. The call gets its
    /// own copy and the arena is reset at once, so thousands of agents mid-turn hold one
    /// body's worth each, not one per step.
    fn render(
        &mut self,
        ep: &crate::model::endpoint::Endpoint,
        request: &ChatRequest,
        messages: &[Cow<'_, ChatMessage>],
    ) -> Option<Vec<u8>> {
        use crate::model::endpoint::Provider;
        let bytes = {
            // Sized from the last body (bodies grow by a message or two per step), so the
            // body is written once, without regrowing.
            let hint = self.last_body + self.last_body / 4 + 256;
            let mut buf = bumpalo::collections::Vec::with_capacity_in(hint, &self.arena);
            let mut w = ArenaWriter(&mut buf);
            match ep.provider {
                Provider::OpenAi => {
                    crate::model::openai::write_body_with(request, messages, ep, &mut w)
                }
                Provider::Anthropic => {
                    crate::model::anthropic::write_body_with(request, messages, ep, &mut w)
                }
            }
            .ok()?;
            self.in_use += buf.len();
            buf.as_slice().to_vec()
        };
        self.last_body = bytes.len();
        self.high_water = self.high_water.max(self.arena.allocated_bytes());
        self.arena.reset();
        Some(bytes)
    }

    /// The turn's scratch memory goes in one step.
    fn end_turn(&mut self) {
        self.arena.reset();
        self.in_use = 0;
    }
}

enum Resolved {
    Now(ToolOutcome, Option<(String, String)>),
    Run(Arc<Tool>),
    Recall(String),
}

/// `io::Write` into an arena vector.
struct ArenaWriter<'a, 'b>(&'a mut bumpalo::collections::Vec<'b, u8>);

impl std::io::Write for ArenaWriter<'_, '_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        // The copying form: bumpalo's `extend_from_slice` clones element by element.
        self.0.extend_from_slice_copy(data);
        Ok(data.len())
    }
    // Inlined at every call site of the body writers (the default loops over `write`).
    #[inline]
    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.extend_from_slice_copy(data);
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The built-in `recall` tool's definition (made once).
/// An empty list of tool calls (one, shared: an answer without calls allocates none).
fn no_calls() -> Arc<[ToolCall]> {
    static NONE: std::sync::OnceLock<Arc<[ToolCall]>> = std::sync::OnceLock::new();
    NONE.get_or_init(|| Arc::new([])).clone()
}

fn recall_spec() -> ToolSpec {
    static SPEC: std::sync::OnceLock<ToolSpec> = std::sync::OnceLock::new();
    SPEC.get_or_init(|| ToolSpec::new(
        RECALL,
        "Get back the full text of an earlier tool result that was masked or cut to save context, by its key.",
        std::sync::Arc::new(json!({"type": "object", "properties": {"key": {"type": "string", "description": "The key shown in the placeholder"}}, "required": ["key"]})),
    ))
    .clone()
}

/// The built-in `send_message` tool's definition (made once).
fn send_message_spec() -> ToolSpec {
    static SPEC: std::sync::OnceLock<ToolSpec> = std::sync::OnceLock::new();
    SPEC.get_or_init(|| {
        ToolSpec::new(
            SEND_MESSAGE,
            "Send a message to another agent by name. Its answer arrives later as a new message.",
            crate::tools::send_message_schema(),
        )
    })
    .clone()
}

/// Whether `text` is empty but for markdown code fences (```` ``` ```` or ```` ```json ````,
/// any number of them) and whitespace. (`strip_prefix` in a loop rather than
/// `trim_start_matches`, which builds a substring searcher on every call.)
fn is_only_a_fence(text: &str) -> bool {
    let mut t = text.trim();
    while let Some(rest) = t.strip_prefix("```json") {
        t = rest;
    }
    t.trim_matches(|c: char| c == '`' || c.is_whitespace())
        .is_empty()
}

fn history_bytes(h: &[ChatMessage]) -> usize {
    h.iter().map(message_bytes).sum()
}

/// Bytes of text in one message (content, tool calls, tool call id).
fn message_bytes(m: &ChatMessage) -> usize {
    m.content.len()
        + m.tool_calls
            .iter()
            .map(|c| c.id.len() + c.name.len() + c.arguments.len())
            .sum::<usize>()
        + m.tool_call_id.as_ref().map_or(0, String::len)
}

impl Inner {
    /// Drops every message but the system prompt (a stateless agent's turn starts from it
    /// alone), with what views computed for them and any raised compaction.
    fn forget_turns(&mut self) {
        let keep = usize::from(self.history.first().is_some_and(|m| m.role == Role::System));
        self.history.truncate(keep);
        self.held_bytes = history_bytes(&self.history);
        self.view_cache.truncate(keep);
        self.compact_level = 0;
    }

    /// Appends to the history, keeping its byte count current (no pass over the history).
    fn push_history(&mut self, m: ChatMessage) {
        self.held_bytes += message_bytes(&m);
        self.history.push(m);
    }
}

/// Keeps the tools most relevant to the conversation's recent messages (and every tool called
/// recently, so a tool call the model makes never goes to a tool it was not shown), and
/// shortens descriptions.
fn select_tools(
    tools: &mut Vec<ToolSpec>,
    history: &[ChatMessage],
    max_tools: usize,
    max_description: usize,
) {
    let recent: Vec<&ChatMessage> = history.iter().rev().take(6).collect();
    let text: String = recent
        .iter()
        .map(|m| m.content.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    let called: std::collections::HashSet<&str> = history
        .iter()
        .rev()
        .take(20)
        .flat_map(|m| m.tool_calls.iter().map(|c| c.name.as_str()))
        .collect();
    if tools.len() > max_tools {
        let score = |t: &ToolSpec| -> usize {
            let name: &str = &t.name;
            if name == RECALL || name == SEND_MESSAGE || called.contains(name) {
                return usize::MAX;
            }
            let words = t
                .name
                .split(['_', '-'])
                .chain(t.description.split_whitespace());
            words
                .filter(|w| w.len() > 3 && text.contains(&w.to_lowercase()))
                .count()
        };
        tools.sort_by_key(|t| std::cmp::Reverse(score(t)));
        tools.truncate(max_tools);
    }
    for t in tools.iter_mut() {
        if t.description.chars().count() > max_description {
            let short: String = t.description.chars().take(max_description).collect();
            *t = t.with_description(short + "...");
        }
    }
}

/// Runs a tool call: `here` on this thread (also in deterministic mode), else as a job on the
/// run queue. Its timeout is armed first, so a tool that blocks still times out (the timer
/// holds the invocation weakly: a finished one is freed at once).
fn run_tool(
    shared: &Arc<Shared>,
    agent: &Arc<Agent>,
    tool: Arc<Tool>,
    inv: Arc<ToolInvocation>,
    here: bool,
) {
    let timeout = if tool.timeout.is_zero() {
        agent.config.tool_timeout
    } else {
        tool.timeout
    };
    if !timeout.is_zero() {
        let weak = Arc::downgrade(&inv);
        let ms = timeout.as_millis();
        let timer = shared.models().schedule(
            Instant::now() + timeout,
            Box::new(move || {
                if let Some(inv) = weak.upgrade() {
                    inv.complete(ToolOutcome::Err(format!(
                        "the tool timed out after {ms} ms"
                    )));
                }
            }),
        );
        // A tool that finishes in time takes its timer with it.
        if let Ok(id) = timer {
            let models = Arc::downgrade(shared);
            inv.arm(Box::new(move || {
                if let Some(shared) = models.upgrade() {
                    shared.models().cancel_timer(id);
                }
            }));
        }
    }
    let of_agent = agent.handle();
    let job = move || {
        let _in_tool = InTool::enter(of_agent);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tool.handler.invoke(inv.clone())
        }));
        if r.is_err() {
            inv.complete(ToolOutcome::Err("the tool panicked".into()));
        }
    };
    if here || shared.config().deterministic {
        job();
    } else {
        let key = RunKey {
            priority: agent.config.priority,
            service: 0,
        };
        let _ = shared.submit(key, Box::new(job));
    }
}

/// Connects an agent's model call back to the agent.
struct AgentObserver(Weak<Agent>);

impl AgentObserver {
    /// Runs `f` under the agent's lock when `call` is the call its turn waits on (not one left
    /// over from a cancelled turn), then emits the event `f` returns, if any, once the lock is
    /// let go.
    fn on_current_call(
        &self,
        call: &CallInner,
        f: impl FnOnce(&Arc<Agent>, &mut Inner, &Shared) -> Option<Event>,
    ) {
        let Some(agent) = self.0.upgrade() else {
            return;
        };
        let Ok(shared) = agent.shared() else { return };
        let event = {
            let mut g = agent.inner.lock();
            let current = g
                .turn
                .as_ref()
                .and_then(|t| t.call.as_ref())
                .is_some_and(|c| c.id == call.id);
            if !current {
                return;
            }
            f(&agent, &mut g, &shared)
        };
        if let Some(ev) = event {
            shared.events().emit(ev);
        }
    }
}

impl CallObserver for AgentObserver {
    fn on_delta(&self, call: &CallInner, delta: StreamDelta<'_>) {
        let Some(agent) = self.0.upgrade() else {
            return;
        };
        if !agent.config.stream_events {
            return;
        }
        if let (StreamDelta::Text(t), Ok(shared)) = (delta, agent.shared()) {
            let turn = agent.inner.lock().turns;
            shared.events().emit(
                agent
                    .event(EventKind::StreamDelta, turn)
                    .text(t)
                    .detail(json!({"call": call.id})),
            );
        }
    }

    fn on_preempted(&self, _call: &CallInner, snapshot: &str) {
        let Some(agent) = self.0.upgrade() else {
            return;
        };
        let Ok(shared) = agent.shared() else { return };
        let turn = {
            let mut g = agent.inner.lock();
            agent.set_state(&mut g, &shared, AgentState::Paused);
            g.turns
        };
        shared.events().emit(
            agent
                .event(EventKind::Preempted, turn)
                .text(snapshot)
                .detail(json!({"safe_point": false, "snapshot_chars": snapshot.chars().count()})),
        );
    }

    fn on_waiting_for_room(&self, call: &CallInner) {
        self.on_current_call(call, |agent, g, _| {
            agent.claim_room(g, &call.endpoint);
            None
        });
    }

    fn on_held_for_room(&self, call: &CallInner, by: i32) {
        self.on_current_call(call, |agent, g, shared| {
            // Already paused (its stream preempted, continuing later): nothing more to say.
            let t = g.turn.as_mut()?;
            if g.state == AgentState::Paused || t.paused_by.is_some() {
                return None;
            }
            t.paused_by = Some(by);
            agent.set_state(g, shared, AgentState::Paused);
            Some(
                agent
                    .event(EventKind::Preempted, g.turns)
                    .detail(json!({"safe_point": true, "by_priority": by})),
            )
        });
    }

    fn on_admitted_after_hold(&self, call: &CallInner) {
        self.on_current_call(call, |agent, g, shared| {
            let by = g.turn.as_mut()?.paused_by.take()?;
            agent.set_state(g, shared, AgentState::WaitingModel);
            Some(
                agent
                    .event(EventKind::Resumed, g.turns)
                    .detail(json!({"safe_point": true, "by_priority": by})),
            )
        });
    }

    fn on_resumed(&self, _call: &CallInner) {
        let Some(agent) = self.0.upgrade() else {
            return;
        };
        let Ok(shared) = agent.shared() else { return };
        let turn = {
            let mut g = agent.inner.lock();
            agent.set_state(&mut g, &shared, AgentState::WaitingModel);
            g.turns
        };
        shared.events().emit(
            agent
                .event(EventKind::Resumed, turn)
                .detail(json!({"safe_point": false})),
        );
    }

    fn on_finish(&self, _call: &CallInner) {
        if let Some(agent) = self.0.upgrade() {
            if let Ok(shared) = agent.shared() {
                agent.schedule(&shared);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fence_only_content_is_recognised() {
        for t in [
            "",
            "  ",
            "```",
            "```json",
            "```json\n```",
            "```json```json\n``` ",
            "\n```\n```\n",
        ] {
            assert!(super::is_only_a_fence(t), "{t:?}");
        }
        for t in ["hi", "```json\n{}\n```", "json", "```jsonx```"] {
            assert!(!super::is_only_a_fence(t), "{t:?}");
        }
    }
}
