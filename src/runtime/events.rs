//! The runtime's event stream: what agents and the scheduler did, pulled by the host.
//!
//! Events are kept in a bounded queue. When the host does not pull and the queue is full, the
//! oldest events are dropped and the next event pulled says how many (`dropped_before`), so a
//! loss is never silent. Messages and history are never carried only by events.

use crate::error::Status;
use crate::model::types::ToolCall;
use parking_lot::{Condvar, Mutex};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// What happened. The discriminant is the C `AGENTOS_EVENT_*` value (never renumbered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum EventKind {
    /// An agent started a turn (text: the incoming message).
    TurnStart = 1,
    /// An agent finished a turn (text: the final answer; status: how it ended).
    TurnEnd = 2,
    /// An agent sent a model request (json: step, messages, tools).
    ModelRequest = 3,
    /// A model answered (text: content; json: tool calls, usage).
    ModelResponse = 4,
    /// A streamed piece (text) — only for agents with `stream_events`.
    StreamDelta = 5,
    /// An agent called a tool (text: arguments; json: tool, call id).
    ToolCall = 6,
    /// A tool returned (text: result; status: OK or the failure).
    ToolResult = 7,
    /// An agent was preempted: paused at a safe point (detail `safe_point: true`), or its
    /// stream cancelled (text: the snapshot kept).
    Preempted = 8,
    /// A preempted agent went on, from its safe point or from its snapshot.
    Resumed = 9,
    /// An agent ran out of a budget (text: which).
    BudgetExceeded = 10,
    /// Something failed (status, text: message).
    Error = 11,
    /// An agent sent a message to another (text: the message; json: from, to).
    Message = 12,
}

impl EventKind {
    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::TurnStart => "turn_start",
            EventKind::TurnEnd => "turn_end",
            EventKind::ModelRequest => "model_request",
            EventKind::ModelResponse => "model_response",
            EventKind::StreamDelta => "stream_delta",
            EventKind::ToolCall => "tool_call",
            EventKind::ToolResult => "tool_result",
            EventKind::Preempted => "preempted",
            EventKind::Resumed => "resumed",
            EventKind::BudgetExceeded => "budget_exceeded",
            EventKind::Error => "error",
            EventKind::Message => "message",
        }
    }
}

/// An event's structured detail: a JSON value, or a function that builds it when it is first
/// read (events on the hot path are built for every step, and most are never looked at in
/// detail, or only as the JSON text handed to C). The value is boxed once made, which keeps
/// an event small enough to move without a `memcpy` call (it is moved a few times on its way
/// into the queue).
#[derive(Clone, Default)]
pub struct Detail {
    value: std::sync::OnceLock<Box<Value>>,
    make: Option<Make>,
}

/// How a detail is made when it is first read: by a function, or, for the details every
/// step of the agent loop makes, from the data itself (no function to allocate).
#[derive(Clone)]
enum Make {
    Fn(std::sync::Arc<dyn Fn() -> Value + Send + Sync>),
    /// `{"tool", "call_id"}` of `calls[index]`, with `"error"` for a result.
    ToolCall {
        calls: std::sync::Arc<[ToolCall]>,
        index: u32,
        error: Option<bool>,
    },
    /// `{"steps": n}`.
    Steps(u32),
    /// `{"from": name}`, or `{"from": null}`.
    From(Option<std::sync::Arc<str>>),
}

impl Detail {
    /// The detail (`null` when there is none).
    pub fn get(&self) -> &Value {
        self.value.get_or_init(|| {
            Box::new(match &self.make {
                Some(Make::Fn(f)) => f(),
                Some(Make::ToolCall {
                    calls,
                    index,
                    error,
                }) => {
                    let c = &calls[*index as usize];
                    let mut v = json!({"tool": c.name, "call_id": c.id});
                    if let Some(e) = error {
                        v["error"] = json!(e);
                    }
                    v
                }
                Some(Make::Steps(n)) => json!({ "steps": n }),
                Some(Make::From(v)) => json!({ "from": v.as_deref() }),
                None => Value::Null,
            })
        })
    }
}

impl std::fmt::Debug for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

impl std::ops::Index<&str> for Detail {
    type Output = Value;
    fn index(&self, key: &str) -> &Value {
        &self.get()[key]
    }
}

/// One event.
#[derive(Clone, Debug)]
pub struct Event {
    /// Sequence number, from 1, in order of emission.
    pub seq: u64,
    /// What happened.
    pub kind: EventKind,
    /// The agent's raw handle (0 for none).
    pub agent: u64,
    /// The agent's name (shared with the agent: events do not copy it).
    pub agent_name: std::sync::Arc<str>,
    /// The agent's turn number (0 for none).
    pub turn: u64,
    /// Outcome, where it applies.
    pub status: Status,
    /// The main text (see [`EventKind`]).
    pub text: String,
    /// Extra structured detail.
    pub detail: Detail,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Events dropped (queue full) just before this one.
    pub dropped_before: u64,
}

impl Event {
    /// A new event; `seq` and `time_ms` are filled in when emitted.
    #[inline]
    pub fn new(
        kind: EventKind,
        agent: u64,
        agent_name: impl Into<std::sync::Arc<str>>,
        turn: u64,
    ) -> Event {
        Event {
            seq: 0,
            kind,
            agent,
            agent_name: agent_name.into(),
            turn,
            status: Status::Ok,
            text: String::new(),
            detail: Detail::default(),
            time_ms: 0,
            dropped_before: 0,
        }
    }

    /// Sets the text.
    #[inline]
    pub fn text(mut self, t: impl Into<String>) -> Event {
        self.text = t.into();
        self
    }

    /// Sets the status.
    #[inline]
    pub fn status(mut self, s: Status) -> Event {
        self.status = s;
        self
    }

    /// Sets the detail.
    #[inline]
    pub fn detail(mut self, d: Value) -> Event {
        self.detail = Detail {
            value: std::sync::OnceLock::from(Box::new(d)),
            make: None,
        };
        self
    }

    /// Sets the detail to what `make` builds, when the detail is first read.
    #[inline]
    pub fn detail_with(self, make: impl Fn() -> Value + Send + Sync + 'static) -> Event {
        self.lazy_detail(Make::Fn(std::sync::Arc::new(make)))
    }

    /// Sets the detail to `{"tool": .., "call_id": ..}` of tool call `index` of `calls`, with
    /// `"error": e` when `error` is `Some(e)` (made when first read).
    #[inline]
    pub fn detail_tool_call(
        self,
        calls: std::sync::Arc<[ToolCall]>,
        index: usize,
        error: Option<bool>,
    ) -> Event {
        assert!(index < calls.len(), "tool call {index} of {}", calls.len());
        self.lazy_detail(Make::ToolCall {
            calls,
            index: index as u32,
            error,
        })
    }

    /// Sets the detail to `{"steps": steps}` (made when first read).
    #[inline]
    pub fn detail_steps(self, steps: u32) -> Event {
        self.lazy_detail(Make::Steps(steps))
    }

    /// Sets the detail to `{"from": from}`, `null` for none (made when first read).
    #[inline]
    pub fn detail_from(self, from: Option<std::sync::Arc<str>>) -> Event {
        self.lazy_detail(Make::From(from))
    }

    #[inline]
    fn lazy_detail(mut self, make: Make) -> Event {
        self.detail = Detail {
            value: std::sync::OnceLock::new(),
            make: Some(make),
        };
        self
    }

    /// The JSON form.
    pub fn to_json(&self) -> Value {
        json!({
            "seq": self.seq, "kind": self.kind.name(), "agent": self.agent,
            "agent_name": &*self.agent_name, "turn": self.turn, "status": self.status.name(),
            "text": self.text, "detail": self.detail.get(), "time_ms": self.time_ms,
            "dropped_before": self.dropped_before,
        })
    }
}

/// A callback that sees every event as it is emitted, on the emitting thread.
pub type EventCallback = Box<dyn Fn(&Event) + Send + Sync>;

struct Queue {
    events: VecDeque<Event>,
    next_seq: u64,
    dropped: u64,
    closed: bool,
    /// Queued events per kind (bit = kind), for [`EventQueue::wait_for`].
    queued: [u32; KIND_BITS],
    /// Threads waiting, per kind they wait for (in [`EventQueue::next`], every kind).
    waiting_kind: [u32; KIND_BITS],
}

/// Kinds are numbered below this (they are bits of a `u32` mask).
const KIND_BITS: usize = 32;

impl Queue {
    fn push(&mut self, ev: Event) {
        self.queued[ev.kind as usize] += 1;
        self.events.push_back(ev);
    }

    fn pop(&mut self) -> Option<Event> {
        let ev = self.events.pop_front()?;
        self.queued[ev.kind as usize] -= 1;
        Some(ev)
    }

    /// Whether an event of a kind in `mask` is queued.
    fn holds(&self, mask: u32) -> bool {
        (0..KIND_BITS).any(|k| mask & (1 << k) != 0 && self.queued[k] > 0)
    }

    /// Whether a waiter wants to hear of an event of `kind`.
    fn wanted(&self, kind: EventKind) -> bool {
        self.waiting_kind[kind as usize] > 0
    }

    fn count_waiter(&mut self, mask: u32, add: bool) {
        for k in 0..KIND_BITS {
            if mask & (1 << k) != 0 {
                if add {
                    self.waiting_kind[k] += 1;
                } else {
                    self.waiting_kind[k] -= 1;
                }
            }
        }
    }
}

/// How [`EventQueue::wait_for`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// An event of a kind waited for is queued.
    Ready,
    /// The deadline passed first.
    TimedOut,
    /// The queue was closed (runtime shutdown) with none queued.
    Closed,
}

/// The bounded event queue.
pub struct EventQueue {
    q: Mutex<Queue>,
    cond: Condvar,
    capacity: usize,
    callback: Mutex<Option<std::sync::Arc<EventCallback>>>,
    /// Whether `callback` is set: emitting looks at this, not the lock, when none is.
    has_callback: std::sync::atomic::AtomicBool,
}

impl EventQueue {
    /// A queue holding at most `capacity` events.
    pub fn new(capacity: usize) -> EventQueue {
        EventQueue {
            q: Mutex::new(Queue {
                events: VecDeque::new(),
                next_seq: 1,
                dropped: 0,
                closed: false,
                queued: [0; KIND_BITS],
                waiting_kind: [0; KIND_BITS],
            }),
            cond: Condvar::new(),
            capacity: capacity.max(1),
            callback: Mutex::new(None),
            has_callback: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Installs (or with `None` removes) the callback.
    pub fn set_callback(&self, cb: Option<EventCallback>) {
        let mut slot = self.callback.lock();
        *slot = cb.map(std::sync::Arc::new);
        self.has_callback
            .store(slot.is_some(), std::sync::atomic::Ordering::Release);
    }

    /// Emits an event.
    pub fn emit(&self, ev: Event) {
        self.emit_all(std::iter::once(ev));
    }

    /// Emits events in order, waking waiters once for all of them (only waiters that want
    /// one of them: see [`EventQueue::wait_for`]).
    pub fn emit_all(&self, events: impl IntoIterator<Item = Event>) {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // Copies only for a callback; otherwise the events move into the queue.
        let cb = if self.has_callback.load(std::sync::atomic::Ordering::Acquire) {
            self.callback.lock().clone()
        } else {
            None
        };
        let mut copies = Vec::new();
        let mut wake = false;
        {
            let mut q = self.q.lock();
            for mut ev in events {
                ev.time_ms = time_ms;
                ev.seq = q.next_seq;
                q.next_seq += 1;
                if q.events.len() >= self.capacity {
                    q.pop();
                    q.dropped += 1;
                }
                ev.dropped_before = std::mem::take(&mut q.dropped);
                if ev.dropped_before > 0 {
                    // Charge the drop to the oldest event still queued, which the host pulls
                    // next.
                    if let Some(front) = q.events.front_mut() {
                        front.dropped_before += ev.dropped_before;
                        ev.dropped_before = 0;
                    }
                }
                if cb.is_some() {
                    copies.push(ev.clone());
                }
                wake |= q.wanted(ev.kind);
                q.push(ev);
            }
        }
        if wake {
            self.cond.notify_all();
        }
        if let Some(cb) = cb {
            for ev in &copies {
                cb(ev);
            }
        }
    }

    /// Takes the next event, waiting until `deadline` (`None` = forever). `None` on timeout or
    /// once closed and empty.
    pub fn next(&self, deadline: Option<Instant>) -> Option<Event> {
        let mut q = self.q.lock();
        loop {
            if let Some(e) = q.pop() {
                return Some(e);
            }
            if q.closed {
                return None;
            }
            q.count_waiter(u32::MAX, true);
            let timed_out = crate::deadline::wait(&self.cond, &mut q, deadline);
            q.count_waiter(u32::MAX, false);
            if timed_out {
                return q.pop();
            }
        }
    }

    /// Waits until an event of a kind in `kinds` (bit `1 << kind`; 0 = any kind) is queued,
    /// taking none, or until `deadline` (`None` = forever). Other events do not wake the
    /// waiter: a host that only acts on turn ends is not woken, and does not compete for a
    /// CPU, at every step of every turn.
    pub fn wait_for(&self, kinds: u32, deadline: Option<Instant>) -> Waited {
        let mask = if kinds == 0 { u32::MAX } else { kinds };
        let mut q = self.q.lock();
        loop {
            if q.holds(mask) {
                return Waited::Ready;
            }
            if q.closed {
                return Waited::Closed;
            }
            q.count_waiter(mask, true);
            let timed_out = crate::deadline::wait(&self.cond, &mut q, deadline);
            q.count_waiter(mask, false);
            if timed_out {
                return if q.holds(mask) {
                    Waited::Ready
                } else {
                    Waited::TimedOut
                };
            }
        }
    }

    /// Wakes waiters for good (runtime shutdown); queued events can still be pulled.
    pub fn close(&self) {
        self.q.lock().closed = true;
        self.cond.notify_all();
    }

    /// Queued events.
    pub fn len(&self) -> usize {
        self.q.lock().events.len()
    }

    /// Whether none is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lazy_details_are_built_once_when_read() {
        let built = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let b = built.clone();
        let ev = Event::new(EventKind::ModelRequest, 1, "a", 1).detail_with(move || {
            b.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            json!({"step": 2, "context": {"masked": 1}})
        });
        let copy = ev.clone();
        assert_eq!(
            built.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "not built yet"
        );
        assert_eq!(ev.to_json()["detail"]["context"]["masked"], 1);
        assert_eq!(ev.detail["step"], 2);
        assert_eq!(
            built.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "built once"
        );
        assert_eq!(copy.detail["step"], 2);
        let plain = Event::new(EventKind::TurnStart, 1, "a", 1);
        assert!(plain.detail.get().is_null());
        assert_eq!(plain.to_json()["detail"], Value::Null);
    }
    use std::time::Duration;

    #[test]
    fn waiting_for_kinds_wakes_only_for_them_and_takes_nothing() {
        let q = std::sync::Arc::new(EventQueue::new(16));
        let end = 1 << EventKind::TurnEnd as u32;
        let soon = || Some(Instant::now() + Duration::from_millis(20));
        assert_eq!(q.wait_for(end, soon()), Waited::TimedOut);
        q.emit(Event::new(EventKind::TurnStart, 1, "a", 1));
        assert_eq!(
            q.wait_for(end, soon()),
            Waited::TimedOut,
            "other kinds do not count"
        );
        assert_eq!(q.wait_for(0, soon()), Waited::Ready, "0 waits for any kind");
        // A waiter blocked for turn ends is not woken by other events, then is by one.
        let (q2, woke) = (
            q.clone(),
            std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        );
        let w = woke.clone();
        let t = std::thread::spawn(move || {
            let r = q2.wait_for(end, Some(Instant::now() + Duration::from_secs(10)));
            w.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        });
        std::thread::sleep(Duration::from_millis(30));
        q.emit_all([
            Event::new(EventKind::ModelRequest, 1, "a", 1),
            Event::new(EventKind::ToolCall, 1, "a", 1),
        ]);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!woke.load(std::sync::atomic::Ordering::SeqCst));
        q.emit(Event::new(EventKind::TurnEnd, 1, "a", 1));
        assert_eq!(t.join().unwrap(), Waited::Ready);
        // Nothing was taken: the four events come out in order.
        let kinds: Vec<EventKind> = std::iter::from_fn(|| q.next(Some(Instant::now())))
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                EventKind::TurnStart,
                EventKind::ModelRequest,
                EventKind::ToolCall,
                EventKind::TurnEnd
            ]
        );
        assert_eq!(
            q.wait_for(end, soon()),
            Waited::TimedOut,
            "taken events no longer count"
        );
        // Events dropped for room no longer count either.
        let small = EventQueue::new(1);
        small.emit(Event::new(EventKind::TurnEnd, 1, "a", 1));
        small.emit(Event::new(EventKind::TurnStart, 1, "a", 2));
        assert_eq!(small.wait_for(end, soon()), Waited::TimedOut);
        small.close();
        assert_eq!(small.wait_for(end, None), Waited::Closed);
    }

    #[test]
    fn ordered_with_timeout_and_overflow_accounting() {
        let q = EventQueue::new(2);
        assert!(q
            .next(Some(Instant::now() + Duration::from_millis(5)))
            .is_none());
        for i in 0..3 {
            q.emit(Event::new(EventKind::TurnStart, 1, "a", i));
        }
        let first = q.next(None).unwrap();
        assert_eq!(first.turn, 1, "oldest dropped");
        assert_eq!(first.dropped_before, 1);
        assert_eq!(first.seq, 2);
        let second = q.next(None).unwrap();
        assert_eq!(second.turn, 2);
        assert_eq!(second.dropped_before, 0);
        assert_eq!(second.to_json()["kind"], "turn_start");
        q.close();
        assert!(q.next(None).is_none());
    }
}

#[cfg(test)]
mod size {
    /// Events are moved several times on their way into the queue: kept at 128 bytes or
    /// less, a move is a few vector stores rather than a `memcpy` call.
    #[test]
    fn an_event_stays_small() {
        assert!(
            std::mem::size_of::<super::Event>() <= 128,
            "{}",
            std::mem::size_of::<super::Event>()
        );
    }
}
