//! `agentos_request`: a direct model call, without agents.

use super::error::agentos_error;
use super::runtime::agentos_runtime;
use super::status::agentos_status;
use super::string::into_c_string;
use super::{as_ref, non_null, str_arg, write_out};
use crate::error::{Error, Status};
use crate::model::call::{CallInner, CallObserver, CallOptions, DeltaFn, Pull};
use crate::model::stream::{DeltaBuf, StreamDelta};
use crate::model::types::ChatRequest;
use crate::runtime::Shared;
use parking_lot::Mutex;
use serde_json::json;
use std::ffi::{c_char, c_void};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A delta kind: the call is finished and every delta has been pulled.
pub const AGENTOS_DELTA_END: i32 = 0;
/// A delta kind: more answer text (UTF-8 bytes, not NUL-terminated inside a stream).
pub const AGENTOS_DELTA_TEXT: i32 = 1;
/// A delta kind: a piece of a tool call, as JSON
/// `{"index":0,"id":"call_1"|null,"name":"get_weather"|null,"arguments":"{\"ci"}`; `id` and `name`
/// come with a call's first piece, `arguments` arrives in pieces to be concatenated.
pub const AGENTOS_DELTA_TOOL_CALL: i32 = 2;

/// Called for every streamed piece, before the piece is queued for
/// `agentos_request_next_delta`: on the runtime's I/O thread, or on the thread inside
/// `agentos_request_run` when that call runs the transfer itself (see there). `data` is valid only during the call and is NUL-terminated;
/// `len` excludes the NUL. The callback must return quickly and must not block; it may call
/// `agentos_request_cancel` and the `const` readers, but never `agentos_request_free`,
/// `agentos_request_wait` or `agentos_runtime_free`.
pub type agentos_delta_fn = Option<
    unsafe extern "C" fn(user_data: *mut c_void, kind: i32, data: *const c_char, len: usize),
>;

/// Token usage and cost of a request. Set `struct_size = sizeof(agentos_usage)` before passing
/// it; the library fills only the fields that fit, so older callers keep working when fields
/// are appended.
#[repr(C)]
pub struct agentos_usage {
    /// Set by the caller to `sizeof(agentos_usage)`.
    pub struct_size: usize,
    /// Prompt (input) tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Completion (output) tokens, reasoning included.
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's cache (Anthropic).
    pub cache_creation_tokens: u64,
    /// Completion tokens spent on hidden reasoning.
    pub reasoning_tokens: u64,
    /// Cost in US dollars, from the endpoint's prices.
    pub cost_usd: f64,
    /// HTTP attempts made.
    pub attempts: u32,
    /// Of which retries.
    pub retries: u32,
}

struct Pending {
    endpoint: String,
    request: ChatRequest,
    priority: i32,
    callback: Option<std::sync::Arc<dyn CallObserver>>,
}

/// A model call. Build it from JSON, start it, then pull its streamed pieces and/or wait for it.
///
/// Ownership: created by `agentos_request_new`, freed by `agentos_request_free` (which cancels
/// it if still running). It stays safe to use and free after its runtime is freed: a request
/// then finishes with `AGENTOS_STATUS_SHUTDOWN`.
/// Thread safety: `agentos_request_cancel`, `agentos_request_usage`,
/// `agentos_request_result_json` and `agentos_request_text` may be called from any thread
/// concurrently. The others (set_*, start, wait, next_delta, free) need one thread at a time.
pub struct agentos_request {
    shared: Arc<Shared>,
    /// The request until it is started.
    pending: Mutex<Option<Pending>>,
    /// The call once started (set once, then read from any thread).
    call: OnceLock<Arc<CallInner>>,
    /// The pulling state (one puller at a time).
    pull: Mutex<Pulled>,
}

struct Pulled {
    /// The last pulled delta, NUL-terminated; borrowed by the caller until the next pull.
    text: Vec<u8>,
    /// The last pulled delta (reused).
    delta: DeltaBuf,
}

fn timeout_deadline(timeout_ms: i32) -> Option<Instant> {
    (timeout_ms >= 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64))
}

/// Writes a delta as C sees it into `out` (cleared first, NUL-terminated, the NUL not counted
/// in the returned length) and returns its kind: text bytes, or for a tool-call piece the JSON
/// `{"index":N,"id":...,"name":...,"arguments":"..."}` (id and name null after the first piece).
/// Reuses `out`'s capacity: no allocation once it has grown.
fn encode_delta(d: StreamDelta<'_>, out: &mut Vec<u8>) -> (i32, usize) {
    fn opt(out: &mut Vec<u8>, v: Option<&str>) {
        match v {
            Some(v) => serde_json::to_writer(&mut *out, v).expect("writing to a Vec"),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.clear();
    let kind = match d {
        StreamDelta::Text(t) => {
            out.extend_from_slice(t.as_bytes());
            AGENTOS_DELTA_TEXT
        }
        StreamDelta::ToolCall {
            index,
            id,
            name,
            arguments,
        } => {
            use std::io::Write;
            let _ = write!(out, "{{\"index\":{index},\"id\":");
            opt(out, id);
            out.extend_from_slice(b",\"name\":");
            opt(out, name);
            out.extend_from_slice(b",\"arguments\":");
            opt(out, Some(arguments));
            out.push(b'}');
            AGENTOS_DELTA_TOOL_CALL
        }
    };
    let len = out.len();
    out.push(0);
    (kind, len)
}

fn already_started() -> Error {
    Error::new(Status::Busy, "the request was already started")
}

fn not_started() -> Error {
    Error::invalid("the request has not been started (call agentos_request_start)")
}

/// Creates a request for the endpoint named `endpoint` (added with `agentos_runtime_add_endpoint`)
/// from an OpenAI-style JSON body:
/// `{"messages":[{"role":"system"|"user"|"assistant"|"tool","content":"...",
/// "tool_calls":[...],"tool_call_id":"..."}], "tools":[{"type":"function","function":{"name",
/// "description","parameters"}}], "temperature":0, "max_tokens":256, "stream":true,
/// "response_format":{...}, "tool_choice":..., "model":"override"}`.
/// The same body works for Anthropic endpoints; the library translates it.
///
/// The request is not sent until `agentos_request_start` (or `agentos_request_run`).
/// On success `*out` receives a request the caller frees with `agentos_request_free`.
/// Returns `OK`; `NULL_ARGUMENT`; `INVALID_UTF8`; `INVALID_JSON` (the message names the key);
/// `NOT_FOUND` (no such endpoint); `SHUTDOWN`. `err` may be NULL.
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_request_new(
    rt: *const agentos_runtime,
    endpoint: *const c_char,
    request_json: *const c_char,
    out: *mut *mut agentos_request,
    err: *mut *mut agentos_error,
) -> agentos_status {
    ffi_boundary!(err = err, {
        let rt = as_ref(rt, "rt")?;
        let endpoint = str_arg(endpoint, "endpoint")?;
        let json = str_arg(request_json, "request_json")?;
        non_null(out, "out")?;
        let shared = rt.inner.shared().clone();
        if shared.is_shut_down() {
            return Err(Error::new(Status::Shutdown, "the runtime is shutting down"));
        }
        shared.models().endpoint(endpoint)?;
        let request = ChatRequest::from_json(json)?;
        let req = agentos_request {
            shared,
            pending: Mutex::new(Some(Pending {
                endpoint: endpoint.to_string(),
                request,
                priority: 0,
                callback: None,
            })),
            call: OnceLock::new(),
            pull: Mutex::new(Pulled {
                text: Vec::new(),
                delta: DeltaBuf::new(),
            }),
        };
        write_out(out, Box::into_raw(Box::new(req)));
        Ok(())
    })
}

/// Sets the request's priority (larger is more urgent; default 0). Among requests waiting for
/// the same endpoint's limits, the most urgent is admitted first.
///
/// Returns `OK`, `NULL_ARGUMENT`, or `BUSY` when the request was already started.
/// Thread safety: one thread at a time per request.
#[no_mangle]
pub unsafe extern "C" fn agentos_request_set_priority(
    req: *mut agentos_request,
    priority: i32,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let req = as_ref(req, "req")?;
        let mut pending = req.pending.lock();
        let p = pending.as_mut().ok_or_else(already_started)?;
        p.priority = priority;
        Ok(())
    })
}

/// Installs a callback for streamed pieces (see `agentos_delta_fn` for the thread it runs on
/// and what it may call). Pieces are still queued for `agentos_request_next_delta` as well.
/// `user_data` is passed back untouched; the caller keeps it alive until the request finishes.
///
/// Returns `OK`, `NULL_ARGUMENT` (NULL `req` or `fn`), or `BUSY` when already started.
/// Thread safety: one thread at a time per request.
#[no_mangle]
pub unsafe extern "C" fn agentos_request_set_delta_callback(
    req: *mut agentos_request,
    callback: agentos_delta_fn,
    user_data: *mut c_void,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let req = as_ref(req, "req")?;
        let f = callback
            .ok_or_else(|| Error::new(Status::NullArgument, "argument `callback` is NULL"))?;
        let mut pending = req.pending.lock();
        let p = pending.as_mut().ok_or_else(already_started)?;
        let user = user_data as usize; // the caller vouches that user_data may cross threads
                                       // One buffer per request, reused for every piece (one
                                       // thread at a time delivers a call's pieces, so the
                                       // lock is never contended).
        let buf = parking_lot::Mutex::new(Vec::<u8>::new());
        p.callback = Some(std::sync::Arc::new(DeltaFn(Box::new(
            move |d: StreamDelta<'_>| {
                let mut text = buf.lock();
                let (kind, len) = encode_delta(d, &mut text);
                // SAFETY: the C callback's contract is documented on agentos_delta_fn.
                unsafe {
                    f(
                        user as *mut c_void,
                        kind,
                        text.as_ptr() as *const c_char,
                        len,
                    )
                };
            },
        ))));
        Ok(())
    })
}

/// Sends the request. Returns at once; the call runs on the runtime's I/O thread.
///
/// Returns `OK`; `NULL_ARGUMENT`; `BUSY` when already started; `NOT_FOUND` when the endpoint was
/// removed; `SHUTDOWN` when the runtime is stopping. `err` may be NULL.
/// Thread safety: one thread at a time per request.
#[no_mangle]
pub unsafe extern "C" fn agentos_request_start(
    req: *mut agentos_request,
    err: *mut *mut agentos_error,
) -> agentos_status {
    ffi_boundary!(err = err, {
        let req = as_ref(req, "req")?;
        let call = req.make_call()?;
        req.shared.models().submit(call)
    })
}

impl agentos_request {
    /// Turns the pending request into its call (once).
    fn make_call(&self) -> Result<Arc<CallInner>, Error> {
        // The lock is held until the call is set, so a concurrent agentos_request_cancel sees
        // either a request not started (nothing to cancel) or its call.
        let mut pending = self.pending.lock();
        let p = pending.take().ok_or_else(already_started)?;
        let opts = CallOptions {
            priority: p.priority,
            observer: p.callback,
            ..Default::default()
        };
        let call = self
            .shared
            .models()
            .new_call(&p.endpoint, p.request, opts)?;
        // The pending request was taken under the lock, so this is the only set.
        let _ = self.call.set(call.clone());
        drop(pending);
        Ok(call)
    }

    /// The call, once started (taking the same lock as `make_call`).
    fn started_call(&self) -> Option<&Arc<CallInner>> {
        let _pending = self.pending.lock();
        self.call.get()
    }
}

/// Waits until the request finishes or `timeout_ms` passes (negative = no limit), and returns
/// its outcome: `OK` when the model answered, else the failure (`HTTP`, `PROVIDER`, `TIMEOUT`,
/// `CANCELLED`, `LIMIT_EXCEEDED` for a spend-limit 429, `SHUTDOWN`...) with a message naming the
/// endpoint, the HTTP status and the provider's error text. Returns `TIMEOUT` with the message
/// "still running" when the wait expired first (the request keeps running). After a failure,
/// the partial output stays readable through `agentos_request_result_json`.
///
/// Returns `INVALID_ARGUMENT` when the request was never started. `err` may be NULL.
/// Thread safety: one thread at a time per request.
#[no_mangle]
pub unsafe extern "C" fn agentos_request_wait(
    req: *mut agentos_request,
    timeout_ms: i32,
    err: *mut *mut agentos_error,
) -> agentos_status {
    ffi_boundary!(err = err, {
        let req = as_ref(req, "req")?;
        let call = req.call.get().ok_or_else(not_started)?;
        match call.wait_status(timeout_deadline(timeout_ms)) {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e),
            None => Err(Error::new(
                Status::Timeout,
                format!("the request is still running after {timeout_ms} ms"),
            )),
        }
    })
}

/// Starts the request and waits for it without a time limit: the synchronous form.
/// Returns what `agentos_request_start` and then `agentos_request_wait` return.
///
/// When the endpoint has no client-side limits (RPM, TPM, concurrency), no server-imposed wait
/// is in force and the endpoint has no response cache, the transfer runs on the calling thread
/// itself, with connections kept for the next such call: no hand-off to the I/O thread. The
/// delta callback then runs on this thread. Retries, timeouts, cancellation (from any thread)
/// and runtime shutdown behave the same either way. If the endpoint's recent answers came
/// within 100 us (a fast local server), the thread first waits for the answer by yielding the
/// CPU (`sched_yield`) for up to twice that time, and then sleeps; a sleep and its wake-up can
/// cost more than such an answer takes. At most half the CPUs' worth of threads yield at once.
/// Thread safety: one thread at a time per request; others may cancel or read it meanwhile.
#[no_mangle]
pub unsafe extern "C" fn agentos_request_run(
    req: *mut agentos_request,
    err: *mut *mut agentos_error,
) -> agentos_status {
    ffi_boundary!(err = err, {
        let req = as_ref(req, "req")?;
        let call = req.make_call()?;
        req.shared.models().run(call)
    })
}

/// Pulls the next streamed piece, waiting up to `timeout_ms` (negative = no limit).
///
/// On `OK`, `*kind` is `AGENTOS_DELTA_TEXT` (text bytes), `AGENTOS_DELTA_TOOL_CALL` (JSON) or
/// `AGENTOS_DELTA_END` (finished, everything pulled; then `*data` is "" and `*len` 0: call
/// `agentos_request_wait` for the outcome). `*data` is NUL-terminated, owned by the request and
/// valid until the next `agentos_request_next_delta` or `agentos_request_free`. Every piece is
/// delivered exactly once; a non-streamed answer arrives as one piece. Returns `TIMEOUT` when
/// nothing arrived in time (out-parameters untouched), `INVALID_ARGUMENT` when not started,
/// `NULL_ARGUMENT`.
/// Thread safety: one thread at a time per request.
#[no_mangle]
pub unsafe extern "C" fn agentos_request_next_delta(
    req: *mut agentos_request,
    timeout_ms: i32,
    kind: *mut i32,
    data: *mut *const c_char,
    len: *mut usize,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let req = as_ref(req, "req")?;
        non_null(kind, "kind")?;
        non_null(data, "data")?;
        non_null(len, "len")?;
        let call = req.call.get().ok_or_else(not_started)?;
        let mut guard = req.pull.lock();
        let pulled = &mut *guard;
        let (k, n) = match call.next_delta(timeout_deadline(timeout_ms), &mut pulled.delta) {
            Pull::Timeout => {
                return Err(Error::new(
                    Status::Timeout,
                    "no streamed piece arrived in time",
                ))
            }
            Pull::End => {
                pulled.text.clear();
                pulled.text.push(0);
                (AGENTOS_DELTA_END, 0)
            }
            Pull::Delta => encode_delta(pulled.delta.delta(), &mut pulled.text),
        };
        write_out(kind, k);
        // The buffer stays put until the next pull, as documented.
        write_out(data, pulled.text.as_ptr() as *const c_char);
        write_out(len, n);
        Ok(())
    })
}

/// Asks a running request to stop. The I/O thread aborts the transfer; the request then
/// finishes with `AGENTOS_STATUS_CANCELLED`, and what streamed before stays readable.
/// Cancelling a finished or never-started request does nothing.
///
/// Returns `OK` or `NULL_ARGUMENT`.
/// Thread safety: any thread, concurrently with every other call on the request except free.
#[no_mangle]
pub unsafe extern "C" fn agentos_request_cancel(req: *const agentos_request) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let req = as_ref(req, "req")?;
        if let Some(call) = req.started_call() {
            req.shared.models().cancel(call);
        }
        Ok(())
    })
}

/// Reads the request's usage: final once finished, else what the provider reported so far.
/// While a stream arrives and the provider has not reported its output count yet,
/// `completion_tokens` is a running estimate counted from the output received.
/// `out->struct_size` must be set by the caller (at least `offsetof(cost_usd)+sizeof(double)`
/// of the first version); only fields within it are written.
///
/// Returns `OK`, `NULL_ARGUMENT`, or `INVALID_ARGUMENT` when `struct_size` is too small.
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_request_usage(
    req: *const agentos_request,
    out: *mut agentos_usage,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let req = as_ref(req, "req")?;
        non_null(out, "out")?;
        let (u, a) = match req.call.get() {
            Some(c) => (c.usage(), c.attempts()),
            None => (Default::default(), Default::default()),
        };
        fill_usage(out, &u, a.attempts, a.retries)
    })
}

/// Copies usage into a caller's size-prefixed `agentos_usage`.
pub(crate) unsafe fn fill_usage(
    out: *mut agentos_usage,
    u: &crate::model::types::Usage,
    attempts: u32,
    retries: u32,
) -> Result<(), Error> {
    let size = (*out).struct_size;
    // The first version of the struct ends after cost_usd.
    let v1 = std::mem::offset_of!(agentos_usage, attempts);
    if size < v1 {
        return Err(Error::invalid(format!(
            "out->struct_size {size} is too small for agentos_usage (at least {v1})"
        )));
    }
    let full = agentos_usage {
        struct_size: size.min(std::mem::size_of::<agentos_usage>()),
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        cached_tokens: u.cached_tokens,
        cache_creation_tokens: u.cache_creation_tokens,
        reasoning_tokens: u.reasoning_tokens,
        cost_usd: u.cost_usd,
        attempts,
        retries,
    };
    let n = size.min(std::mem::size_of::<agentos_usage>());
    std::ptr::copy_nonoverlapping(
        &full as *const agentos_usage as *const u8,
        out as *mut u8,
        n,
    );
    Ok(())
}

/// The request's state as JSON: `{"state":"created"|"queued"|"in_flight"|"done",
/// "status":"AGENTOS_STATUS_OK"|<failure>|null, "error":"..."|null, "content":"...",
/// "tool_calls":[{"id","name","arguments"}], "finish_reason":"...", "model":"...",
/// "usage":{...}, "attempts":N, "retries":N}`. `content` and `tool_calls` hold the full answer
/// once finished, the partial output after a failure or cancellation, and what has streamed so
/// far while running.
///
/// On success `*out` receives a string the caller frees with `agentos_string_free`.
/// Returns `OK` or `NULL_ARGUMENT`.
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_request_result_json(
    req: *const agentos_request,
    out: *mut *mut c_char,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let req = as_ref(req, "req")?;
        non_null(out, "out")?;
        let v = match req.call.get() {
            None => json!({"state": "created", "status": null, "error": null, "content": "",
                           "tool_calls": [], "finish_reason": "", "model": "",
                           "usage": crate::model::types::Usage::default().to_json(),
                           "attempts": 0, "retries": 0}),
            Some(call) => {
                let result = call.result();
                let resp = match &result {
                    Some(Ok(r)) => r.clone(),
                    _ => call.partial(),
                };
                let a = call.attempts();
                let mut v = resp.to_json();
                let state = match call.phase() {
                    crate::model::call::Phase::Queued => "queued",
                    crate::model::call::Phase::InFlight => "in_flight",
                    crate::model::call::Phase::Done => "done",
                };
                v["state"] = json!(state);
                v["status"] = match &result {
                    Some(Ok(_)) => json!(Status::Ok.name()),
                    Some(Err(e)) => json!(e.status().name()),
                    None => serde_json::Value::Null,
                };
                v["error"] = match &result {
                    Some(Err(e)) => json!(e.message()),
                    _ => serde_json::Value::Null,
                };
                v["attempts"] = json!(a.attempts);
                v["retries"] = json!(a.retries);
                v
            }
        };
        write_out(out, into_c_string(v.to_string()));
        Ok(())
    })
}

/// The answer's text so far (the whole answer once finished), as a new string the caller frees
/// with `agentos_string_free`.
///
/// Returns `OK` or `NULL_ARGUMENT`.
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_request_text(
    req: *const agentos_request,
    out: *mut *mut c_char,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let req = as_ref(req, "req")?;
        non_null(out, "out")?;
        let text = req
            .call
            .get()
            .map(|c| c.partial().content)
            .unwrap_or_default();
        write_out(out, into_c_string(text));
        Ok(())
    })
}

/// Frees a request, cancelling it first if it is still running (it then finishes on the I/O
/// thread without anyone waiting). `agentos_request_free(NULL)` does nothing.
///
/// Thread safety: once, when no other thread is using the request, and never from its delta
/// callback.
#[no_mangle]
pub unsafe extern "C" fn agentos_request_free(req: *mut agentos_request) {
    ffi_boundary!({
        if !req.is_null() {
            let req = Box::from_raw(req);
            if let Some(call) = req.call.get() {
                req.shared.models().cancel(call);
            }
            drop(req);
        }
    })
}
