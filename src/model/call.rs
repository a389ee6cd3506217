//! A model call as its caller sees it: the deltas to pull, the result to wait for, cancel.
//!
//! The I/O thread writes into a call; any number of caller threads read it. Deltas are kept in a
//! queue until pulled (and in full in the accumulator), so a caller that only waits for the
//! result loses nothing, and one that pulls sees every piece exactly once.

use super::hub::EndpointState;
use super::stream::{
    DeltaBatch, DeltaBuf, PendingQueue, StreamAccumulator, StreamDelta, StreamMeta,
};
use super::types::{ChatRequest, ChatResponse, Usage};
use crate::error::{Error, Status};
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Hooks into a call's life, all invoked on the I/O thread. They must not block.
pub trait CallObserver: Send + Sync {
    /// A streamed piece arrived (before it is queued for pulling). The piece is borrowed for
    /// the duration of the hook.
    fn on_delta(&self, _call: &CallInner, _delta: StreamDelta<'_>) {}
    /// The call's stream was cancelled to make room for a more urgent call; `snapshot` is the
    /// output kept, from which the call will continue.
    fn on_preempted(&self, _call: &CallInner, _snapshot: &str) {}
    /// A preempted call was admitted again and continues from its snapshot.
    fn on_resumed(&self, _call: &CallInner) {}
    /// The call is first in its endpoint's queue and cannot be admitted yet (the endpoint's
    /// concurrency or token budget is taken, or the server asked to wait). Called once per
    /// call. An agent then claims room on the endpoint (see [`super::room`]).
    fn on_waiting_for_room(&self, _call: &CallInner) {}
    /// The call, not started, is held in its queue while more urgent agents hold room on the
    /// endpoint (the highest claiming priority is `by`): its caller is paused at a safe point.
    /// Called once until the call is admitted.
    fn on_held_for_room(&self, _call: &CallInner, _by: i32) {}
    /// A call that was held for room was admitted.
    fn on_admitted_after_hold(&self, _call: &CallInner) {}
    /// The call finished (the result is already readable through the call).
    /// (The outcome is readable through [`CallInner::result`]; it is not copied for the hook.)
    fn on_finish(&self, _call: &CallInner) {}
}

/// Calls a closure for every delta.
pub struct DeltaFn(pub Box<dyn Fn(StreamDelta<'_>) + Send + Sync>);

impl CallObserver for DeltaFn {
    fn on_delta(&self, _call: &CallInner, delta: StreamDelta<'_>) {
        (self.0)(delta)
    }
}

/// How a call is scheduled.
#[derive(Default)]
pub struct CallOptions {
    /// Larger is more urgent.
    pub priority: i32,
    /// Attained service of the caller (tokens so far); less goes first within a priority.
    pub service: u64,
    /// Whether a more urgent call may cancel this one's stream and resume it later from its
    /// snapshot (streamed calls only).
    pub preemptible: bool,
    /// Hooks.
    pub observer: Option<Arc<dyn CallObserver>>,
    /// A request body rendered by the caller (used as is, except when continuing a snapshot).
    pub body: Option<Vec<u8>>,
    /// Characters of the prompt, when the request does not carry its messages (a rendered
    /// `body` stands for them); admission estimates tokens from it.
    pub prompt_chars: Option<usize>,
    /// No one reads this call's deltas (no puller, and the observer does not want them): a
    /// whole (non-streamed) answer is then not also queued as one delta.
    pub deltas_unread: bool,
    /// Since when the caller has been waiting for room for this call (an agent that went on
    /// from a pause at a safe point by aging): admission ages the call from then, not from
    /// when it was queued, so the wait is not counted twice.
    pub waiting_since: Option<Instant>,
}

/// Where a call is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for admission (limits) or for a retry's backoff.
    Queued,
    /// An HTTP attempt is in flight.
    InFlight,
    /// Finished: succeeded, failed or cancelled.
    Done,
}

pub(crate) struct CallState {
    pub(crate) phase: Phase,
    /// Deltas not pulled yet, as ranges into `acc`.
    pub(crate) pending: PendingQueue,
    /// Every piece across attempts (a preempted stream's snapshot plus its continuation).
    pub(crate) acc: StreamAccumulator,
    /// Model, usage and finish reason as reported so far.
    pub(crate) meta: StreamMeta,
    pub(crate) result: Option<Result<ChatResponse, Error>>,
    pub(crate) attempts: u32,
    pub(crate) retries: u32,
    /// Output kept from preempted attempts; the next attempt continues from it.
    pub(crate) snapshot: Option<String>,
    pub(crate) preemptions: u32,
    /// A whole (non-streamed) answer not yet queued as a delta: it is queued when first
    /// pulled, so a call no one pulls never copies its answer.
    whole_unqueued: bool,
}

/// The shared state of one call.
pub struct CallInner {
    /// Unique id within the runtime.
    pub id: u64,
    /// The endpoint it goes to.
    pub endpoint: Arc<EndpointState>,
    /// The request, immutable once submitted.
    pub request: ChatRequest,
    /// Scheduling priority (larger is more urgent).
    pub priority: i32,
    /// Attained service of the caller when the call was made.
    pub service: u64,
    /// Whether the call may be preempted (see [`CallOptions::preemptible`]).
    pub preemptible: bool,
    /// Whether the call may be held in its queue, not started, while more urgent agents hold
    /// room on its endpoint (its caller allows preemption; streamed or not).
    pub pausable: bool,
    /// See [`CallOptions::deltas_unread`].
    pub deltas_unread: bool,
    pub(crate) state: Mutex<CallState>,
    cond: Condvar,
    cancel: AtomicBool,
    /// Whether [`CallObserver::on_waiting_for_room`] has been called.
    waited_for_room: AtomicBool,
    /// Held in its queue for room since [`CallObserver::on_held_for_room`] was called.
    held_for_room: AtomicBool,
    observer: Option<Arc<dyn CallObserver>>,
    /// The response-cache key, for deterministic requests to a caching endpoint.
    pub cache_key: Option<Vec<u8>>,
    /// A body rendered by the caller.
    pub body: Option<Vec<u8>>,
    /// Characters of the prompt (messages plus 8 per message), for admission estimates.
    pub prompt_chars: usize,
    /// When the call was created.
    pub created: Instant,
    /// See [`CallOptions::waiting_since`].
    pub waiting_since: Option<Instant>,
}

/// What pulling a delta gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pull {
    /// The next piece, now in the caller's buffer.
    Delta,
    /// The call is finished and every delta has been pulled.
    End,
    /// Nothing arrived before the deadline.
    Timeout,
}

/// Attempt counts of a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attempts {
    /// HTTP attempts made.
    pub attempts: u32,
    /// Of which retries.
    pub retries: u32,
}

impl CallInner {
    pub(crate) fn new(
        id: u64,
        endpoint: Arc<EndpointState>,
        request: ChatRequest,
        opts: CallOptions,
    ) -> CallInner {
        let preemptible = opts.preemptible && request.stream;
        let cache_key = endpoint.cache_key(&request);
        let prompt_chars = opts
            .prompt_chars
            .unwrap_or_else(|| request.messages.iter().map(|m| m.content.len() + 8).sum());
        CallInner {
            id,
            endpoint,
            request,
            priority: opts.priority,
            service: opts.service,
            preemptible,
            pausable: opts.preemptible,
            deltas_unread: opts.deltas_unread,
            waiting_since: opts.waiting_since,
            state: Mutex::new(CallState {
                phase: Phase::Queued,
                pending: PendingQueue::new(),
                acc: StreamAccumulator::default(),
                meta: StreamMeta::default(),
                result: None,
                attempts: 0,
                retries: 0,
                snapshot: None,
                preemptions: 0,
                whole_unqueued: false,
            }),
            cond: Condvar::new(),
            cancel: AtomicBool::new(false),
            waited_for_room: AtomicBool::new(false),
            held_for_room: AtomicBool::new(false),
            observer: opts.observer,
            cache_key,
            prompt_chars,
            body: opts.body,
            created: Instant::now(),
        }
    }

    /// Asks for cancellation; the I/O thread completes the call with `CANCELLED`, keeping any
    /// partial output. Returns false when the call had already finished.
    pub fn request_cancel(&self) -> bool {
        self.cancel.store(true, Ordering::Release);
        self.state.lock().phase != Phase::Done
    }

    /// Whether cancellation was asked for.
    pub fn cancel_requested(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    /// Called by the I/O thread with the deltas of one read (and the usage reported so far):
    /// the observer sees each, then they are appended to the accumulator and queued for
    /// pulling. Allocates nothing once the call's buffers have grown to the answer's size.
    pub(crate) fn push_deltas(&self, deltas: &DeltaBatch, usage: Option<&super::types::Usage>) {
        if deltas.is_empty() && usage.is_none() {
            return;
        }
        if let Some(o) = &self.observer {
            for d in deltas.iter() {
                o.on_delta(self, d);
            }
        }
        {
            let mut g = self.state.lock();
            let s = &mut *g;
            for d in deltas.iter() {
                let p = s.acc.apply(d);
                s.pending.push_back(p);
            }
            if let Some(u) = usage {
                s.meta.usage = *u;
            }
        }
        if !deltas.is_empty() {
            self.cond.notify_all();
        }
    }

    /// Delivers a whole (non-streamed) answer as one delta: at once to an observer, when
    /// first pulled otherwise, never when no one reads deltas.
    pub(crate) fn deliver_whole(&self, r: &ChatResponse, arena: &bumpalo::Bump) {
        if self.deltas_unread {
            return;
        }
        if self.observer.is_some() {
            self.push_deltas(&DeltaBatch::from_response(r, arena), Some(&r.usage));
        } else {
            self.state.lock().whole_unqueued = true;
        }
    }

    /// Called by the I/O thread once, with the outcome.
    pub(crate) fn finish(&self, result: Result<ChatResponse, Error>) {
        let mut s = self.state.lock();
        if s.phase == Phase::Done {
            return;
        }
        s.phase = Phase::Done;
        s.result = Some(result);
        drop(s);
        self.cond.notify_all();
        if let Some(o) = &self.observer {
            o.on_finish(self);
        }
    }

    /// Called by the I/O thread when the call's stream is cancelled to make room: keeps the
    /// output so far as the snapshot to continue from.
    pub(crate) fn preempted(&self) -> String {
        let snapshot = {
            let mut s = self.state.lock();
            s.phase = Phase::Queued;
            s.preemptions += 1;
            let snap = s.acc.content.clone();
            s.snapshot = Some(snap.clone());
            snap
        };
        if let Some(o) = &self.observer {
            o.on_preempted(self, &snapshot);
        }
        snapshot
    }

    /// Called by the I/O thread when the call heads its endpoint's queue but cannot be
    /// admitted: tells the observer, the first time.
    pub(crate) fn waiting_for_room(&self) {
        if self.waited_for_room.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(o) = &self.observer {
            o.on_waiting_for_room(self);
        }
    }

    /// Called by the I/O thread when the call is held in its queue for room claimed by more
    /// urgent agents (the highest at priority `by`): tells the observer, once per hold.
    pub(crate) fn held_for_room(&self, by: i32) {
        if self.held_for_room.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(o) = &self.observer {
            o.on_held_for_room(self, by);
        }
    }

    /// Called by the I/O thread when the call is admitted: ends a hold, if there was one.
    pub(crate) fn admitted(&self) {
        if self.held_for_room.swap(false, Ordering::AcqRel) {
            if let Some(o) = &self.observer {
                o.on_admitted_after_hold(self);
            }
        }
    }

    /// Called by the I/O thread when a preempted call starts again.
    pub(crate) fn resumed(&self) {
        if let Some(o) = &self.observer {
            o.on_resumed(self);
        }
    }

    /// The snapshot to continue from, if the call was preempted.
    pub fn snapshot(&self) -> Option<String> {
        self.state.lock().snapshot.clone()
    }

    /// How many times the call was preempted.
    pub fn preemptions(&self) -> u32 {
        self.state.lock().preemptions
    }

    /// Whether the call's stream carries a (partial) tool call, which cannot be continued.
    pub(crate) fn has_tool_output(&self) -> bool {
        !self.state.lock().acc.tool_calls.is_empty()
    }

    /// Pulls the next delta into `out`, waiting until `deadline` (`None` = forever). `out`
    /// is only written on [`Pull::Delta`].
    pub fn next_delta(&self, deadline: Option<Instant>, out: &mut DeltaBuf) -> Pull {
        let mut s = self.state.lock();
        loop {
            if let Some(p) = s.pending.pop_front() {
                out.set(s.acc.view(&p));
                return Pull::Delta;
            }
            if s.phase == Phase::Done {
                if std::mem::take(&mut s.whole_unqueued) {
                    let st = &mut *s;
                    if let Some(Ok(r)) = &st.result {
                        let arena = bumpalo::Bump::new();
                        for d in DeltaBatch::from_response(r, &arena).iter() {
                            let p = st.acc.apply(d);
                            st.pending.push_back(p);
                        }
                        continue;
                    }
                }
                return Pull::End;
            }
            if crate::deadline::wait(&self.cond, &mut s, deadline)
                && s.pending.is_empty()
                && s.phase != Phase::Done
            {
                return Pull::Timeout;
            }
        }
    }

    /// Waits for the outcome until `deadline` (`None` = forever). `None` on timeout.
    pub fn wait(&self, deadline: Option<Instant>) -> Option<Result<ChatResponse, Error>> {
        let mut s = self.state.lock();
        loop {
            if let Some(r) = &s.result {
                return Some(r.clone());
            }
            if crate::deadline::wait(&self.cond, &mut s, deadline) && s.result.is_none() {
                return None;
            }
        }
    }

    /// Like [`CallInner::wait`], without copying the answer: `Ok(())` when it succeeded.
    pub fn wait_status(&self, deadline: Option<Instant>) -> Option<Result<(), Error>> {
        let mut s = self.state.lock();
        loop {
            match &s.result {
                Some(Ok(_)) => return Some(Ok(())),
                Some(Err(e)) => return Some(Err(e.clone())),
                None => {}
            }
            if crate::deadline::wait(&self.cond, &mut s, deadline) && s.result.is_none() {
                return None;
            }
        }
    }

    /// The outcome, if finished.
    pub fn result(&self) -> Option<Result<ChatResponse, Error>> {
        self.state.lock().result.clone()
    }

    /// The outcome with its usage, moved out for the call's only reader (an agent): no copy.
    /// Afterwards [`CallInner::result`] is `None`, [`CallInner::usage`] counts what was
    /// streamed and [`CallInner::partial`] is the output accumulated (for a failed call, the
    /// same as before).
    pub(crate) fn take_result(&self) -> Option<(Result<ChatResponse, Error>, Usage)> {
        let mut s = self.state.lock();
        let result = s.result.take()?;
        let usage = match &result {
            Ok(r) => r.usage,
            Err(_) => {
                let mut u = s.meta.usage;
                if u.completion_tokens == 0 {
                    u.completion_tokens = s.acc.estimated_tokens;
                }
                u
            }
        };
        Some((result, usage))
    }

    /// Everything received so far (the full answer once finished successfully; the partial
    /// output after a failure or cancellation).
    pub fn partial(&self) -> ChatResponse {
        let s = self.state.lock();
        match &s.result {
            Some(Ok(r)) => r.clone(),
            _ => s.acc.response(&s.meta),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.state.lock().phase
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> Attempts {
        let s = self.state.lock();
        Attempts {
            attempts: s.attempts,
            retries: s.retries,
        }
    }

    /// Usage of the call: the final usage once finished, else what has been reported so far.
    /// While a stream arrives and the provider has not reported its output count yet,
    /// `completion_tokens` is the running estimate counted from the output received.
    pub fn usage(&self) -> Usage {
        let s = self.state.lock();
        match &s.result {
            Some(Ok(r)) => r.usage,
            _ => {
                let mut u = s.meta.usage;
                if u.completion_tokens == 0 {
                    u.completion_tokens = s.acc.estimated_tokens;
                }
                u
            }
        }
    }

    /// Estimated tokens of the output received so far, kept up to date while a stream arrives.
    pub fn streamed_tokens(&self) -> u64 {
        self.state.lock().acc.estimated_tokens
    }
}

/// The error for a call cancelled by its caller.
pub(crate) fn cancelled_error(endpoint: &str, partial_deltas: u64) -> Error {
    Error::new(
        Status::Cancelled,
        format!("endpoint \"{endpoint}\": call cancelled ({partial_deltas} streamed pieces kept as partial output)"),
    )
}
