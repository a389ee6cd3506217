//! `agentos_event`: what agents and the scheduler did, pulled by the host.

use super::agent::agentos_agent_id;
use super::runtime::agentos_runtime;
use super::status::agentos_status;
use super::string::{c_string, into_c_string};
use super::{as_ref, non_null, write_out};
use crate::error::{Error, Status};
use crate::runtime::events::{Event, Waited};
use std::ffi::{c_char, c_void, CString};
use std::time::{Duration, Instant};

/// Event kind: an agent started a turn; text is the incoming message.
pub const AGENTOS_EVENT_TURN_START: i32 = 1;
/// Event kind: an agent finished a turn; text is the answer, status how it ended.
pub const AGENTOS_EVENT_TURN_END: i32 = 2;
/// Event kind: an agent sent a model request.
pub const AGENTOS_EVENT_MODEL_REQUEST: i32 = 3;
/// Event kind: a model answered; text is its content (tool calls in the JSON form).
pub const AGENTOS_EVENT_MODEL_RESPONSE: i32 = 4;
/// Event kind: a streamed piece (agents with `stream_events` only); text is the piece.
pub const AGENTOS_EVENT_STREAM_DELTA: i32 = 5;
/// Event kind: an agent called a tool; text is the arguments.
pub const AGENTOS_EVENT_TOOL_CALL: i32 = 6;
/// Event kind: a tool returned; text is the result.
pub const AGENTOS_EVENT_TOOL_RESULT: i32 = 7;
/// Event kind: a more urgent agent needed room on the agent's endpoint. Either the agent
/// paused at a safe point, before its next model call or with that call queued and not started
/// (detail `{"safe_point": true, "by_priority": p}`, empty text), or its streaming generation
/// was cancelled (detail `{"safe_point": false, "snapshot_chars": n}`; text is the snapshot
/// kept, continued later).
pub const AGENTOS_EVENT_PREEMPTED: i32 = 8;
/// Event kind: a preempted agent went on: from its safe point once the room was given back
/// (detail `{"safe_point": true, "by_priority": p}`) or once aging raised it above the claim
/// (the same, with `"aged": true`), or from its snapshot (detail `{"safe_point": false}`).
pub const AGENTOS_EVENT_RESUMED: i32 = 9;
/// Event kind: an agent ran out of a budget; text says which.
pub const AGENTOS_EVENT_BUDGET_EXCEEDED: i32 = 10;
/// Event kind: something failed; status and text say what.
pub const AGENTOS_EVENT_ERROR: i32 = 11;
/// Event kind: an agent sent a message to another agent; text is the message.
pub const AGENTOS_EVENT_MESSAGE: i32 = 12;

/// One event. Ownership: from `agentos_runtime_next_event`, freed with `agentos_event_free`;
/// independent of the runtime (safe to read and free after it is freed).
/// Thread safety: immutable; read from any thread.
pub struct agentos_event {
    ev: Event,
    /// The text and the agent's name as C strings, made when first asked for (a host that
    /// drains events to find a turn's end reads only kinds and statuses).
    text: std::sync::OnceLock<CString>,
    agent_name: std::sync::OnceLock<CString>,
}

impl agentos_event {
    fn new(ev: Event) -> agentos_event {
        agentos_event {
            ev,
            text: std::sync::OnceLock::new(),
            agent_name: std::sync::OnceLock::new(),
        }
    }

    fn text(&self) -> &CString {
        self.text.get_or_init(|| c_string(&self.ev.text, "\\0"))
    }

    fn agent_name(&self) -> &CString {
        self.agent_name
            .get_or_init(|| c_string(&self.ev.agent_name, ""))
    }
}

/// Called for every event on the thread that emits it (a worker, the I/O thread, a thread
/// completing a tool, or the thread inside `agentos_agent_run`), in addition to the event being queued for `agentos_runtime_next_event`.
/// `ev` is borrowed for the duration of the call only. The callback must not block; it may call
/// the `agentos_event_*` readers and non-blocking functions, but not `agentos_runtime_free`,
/// `agentos_runtime_wait_idle`, or `agentos_runtime_next_event` or `agentos_runtime_wait_event`
/// with a wait.
pub type agentos_event_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, ev: *const agentos_event)>;

/// Takes the next event, waiting up to `timeout_ms` (negative = no limit). Events come in the
/// order they happened. When the host does not keep up and the queue (`event_capacity`) is full,
/// the oldest are dropped and the next event's JSON says how many (`dropped_before`).
///
/// On `OK`, `*out` receives an event to free with `agentos_event_free`. Returns `TIMEOUT` when
/// none arrived, `SHUTDOWN` when the runtime is stopping and no event is left, `NULL_ARGUMENT`.
/// Thread safety: any thread; concurrent callers each get different events.
#[no_mangle]
pub unsafe extern "C" fn agentos_runtime_next_event(
    rt: *const agentos_runtime,
    timeout_ms: i32,
    out: *mut *mut agentos_event,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        non_null(out, "out")?;
        let deadline =
            (timeout_ms >= 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64));
        let shared = rt.inner.shared();
        match shared.events().next(deadline) {
            Some(ev) => {
                write_out(out, Box::into_raw(Box::new(agentos_event::new(ev))));
                Ok(())
            }
            None if shared.is_shut_down() => {
                Err(Error::new(Status::Shutdown, "the runtime is shutting down"))
            }
            None => Err(Error::new(Status::Timeout, "no event arrived in time")),
        }
    })
}

/// Waits until an event of one of `kinds` is queued, or `timeout_ms` passes (negative = no
/// limit), without taking any: `kinds` is a mask of bits `1u << AGENTOS_EVENT_*` (0 = any
/// kind). Events of other kinds do not wake the caller. A host that acts only when a turn ends
/// waits with `1u << AGENTOS_EVENT_TURN_END` and then drains the queue with
/// `agentos_runtime_next_event(rt, 0, &ev)`, getting every event in order, instead of being
/// woken for each step of each turn (on a small machine each wake-up competes with the agents'
/// own work for a CPU).
///
/// Returns `OK` once such an event is queued (also when one already was; another thread's
/// `agentos_runtime_next_event` may still take it first), `TIMEOUT` when none was queued in
/// time, `SHUTDOWN` when the runtime is stopping and none is queued, `NULL_ARGUMENT`.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_runtime_wait_event(
    rt: *const agentos_runtime,
    kinds: u32,
    timeout_ms: i32,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        let deadline =
            (timeout_ms >= 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64));
        match rt.inner.shared().events().wait_for(kinds, deadline) {
            Waited::Ready => Ok(()),
            Waited::Closed => Err(Error::new(Status::Shutdown, "the runtime is shutting down")),
            Waited::TimedOut => Err(Error::new(
                Status::Timeout,
                "no event of those kinds arrived in time",
            )),
        }
    })
}

/// Installs an event callback (see `agentos_event_fn`), replacing any previous one; NULL
/// `callback` removes it. `user_data` must stay valid until the callback is replaced or the
/// runtime freed. Returns `OK` or `NULL_ARGUMENT` (NULL `rt`).
/// Thread safety: any thread; events being emitted concurrently may still reach the old callback.
#[no_mangle]
pub unsafe extern "C" fn agentos_runtime_set_event_callback(
    rt: *const agentos_runtime,
    callback: agentos_event_fn,
    user_data: *mut c_void,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        let user = user_data as usize;
        let cb = callback.map(|f| {
            Box::new(move |ev: &Event| {
                let view = agentos_event::new(ev.clone());
                // SAFETY: the callback contract is documented on agentos_event_fn.
                unsafe { f(user as *mut c_void, &view) };
            }) as crate::runtime::events::EventCallback
        });
        rt.inner.shared().events().set_callback(cb);
        Ok(())
    })
}

/// The event's kind (`AGENTOS_EVENT_*`), or 0 for NULL.
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_event_kind(ev: *const agentos_event) -> i32 {
    ffi_boundary!({
        if ev.is_null() {
            0
        } else {
            (*ev).ev.kind as i32
        }
    })
}

/// The agent the event is about (0 for none or NULL).
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_event_agent(ev: *const agentos_event) -> agentos_agent_id {
    ffi_boundary!({
        if ev.is_null() {
            0
        } else {
            (*ev).ev.agent
        }
    })
}

/// The name of the agent the event is about ("" for none), borrowed from `ev`; NULL for NULL.
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_event_agent_name(ev: *const agentos_event) -> *const c_char {
    ffi_boundary!({
        if ev.is_null() {
            std::ptr::null()
        } else {
            (*ev).agent_name().as_ptr()
        }
    })
}

/// The outcome the event reports (`AGENTOS_STATUS_OK` unless it reports a failure), or
/// `AGENTOS_STATUS_NULL_ARGUMENT` for NULL.
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_event_status(ev: *const agentos_event) -> i32 {
    ffi_boundary!({
        if ev.is_null() {
            Status::NullArgument.code()
        } else {
            (*ev).ev.status.code()
        }
    })
}

/// The event's text (see each kind), borrowed from `ev`, NUL-terminated; `*len` excludes the
/// NUL. Returns `OK` or `NULL_ARGUMENT`.
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_event_text(
    ev: *const agentos_event,
    text: *mut *const c_char,
    len: *mut usize,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let ev = as_ref(ev, "ev")?;
        non_null(text, "text")?;
        non_null(len, "len")?;
        let t = ev.text();
        write_out(text, t.as_ptr());
        write_out(len, t.as_bytes().len());
        Ok(())
    })
}

/// The whole event as JSON: `{"seq","kind","agent","agent_name","turn","status","text",
/// "detail","time_ms","dropped_before"}`. On success `*out` receives a string to free with
/// `agentos_string_free`. Returns `OK` or `NULL_ARGUMENT`.
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_event_json(
    ev: *const agentos_event,
    out: *mut *mut c_char,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let ev = as_ref(ev, "ev")?;
        non_null(out, "out")?;
        write_out(out, into_c_string(ev.ev.to_json().to_string()));
        Ok(())
    })
}

/// Frees an event. `agentos_event_free(NULL)` does nothing.
/// Thread safety: any thread, once per event.
#[no_mangle]
pub unsafe extern "C" fn agentos_event_free(ev: *mut agentos_event) {
    ffi_boundary!({
        if !ev.is_null() {
            drop(Box::from_raw(ev));
        }
    })
}
