//! The runtime's model layer: its endpoints, its I/O engine, and usage totals.

use super::call::{CallInner, CallOptions};
use super::endpoint::Endpoint;
use super::engine::Engine;
use super::types::{ChatRequest, Usage};
use crate::error::{Error, Result, Status};
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counters of one endpoint (or of the whole runtime).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CallStats {
    /// Token usage and cost of successful calls (and of failed calls that reported usage).
    pub usage: Usage,
    /// Calls that succeeded.
    pub succeeded: u64,
    /// Calls that failed (cancellations included).
    pub failed: u64,
    /// HTTP attempts that were retried.
    pub retries: u64,
}

impl CallStats {
    fn to_json(self) -> Value {
        json!({"usage": self.usage.to_json(), "succeeded": self.succeeded,
               "failed": self.failed, "retries": self.retries})
    }
}

/// An endpoint and its running totals.
pub struct EndpointState {
    /// The configuration.
    pub config: Endpoint,
    stats: Mutex<CallStats>,
    runtime_stats: Arc<Mutex<CallStats>>,
    /// The response cache, when the endpoint enables one.
    pub cache: Option<crate::mem::cache::ResponseCache>,
    /// Until when the server told every sender to wait.
    pub server_block: super::limiter::ServerBlock,
    /// How long successful calls have been taking lately (microseconds, a moving average;
    /// 0 until one succeeds).
    recent_latency_us: AtomicU64,
    /// The request URL parsed once by libcurl, shared by every handle set up for the endpoint
    /// (`None` if libcurl refused it: handles then get the URL as text).
    pub(crate) curl_url: Option<Arc<super::curl_url::CurlUrl>>,
    /// Whether the environment named a proxy (or exemptions) when the endpoint was added; if
    /// not, its handles are told "no proxy" once.
    pub(crate) proxy_env: bool,
    /// The request headers as libcurl lists, for plain and for streamed requests, shared by
    /// every handle set up for the endpoint.
    curl_headers: [Arc<super::curl_url::CurlHeaders>; 2],
    /// Urgent agents' claims on the endpoint, under which less urgent agents pause at their
    /// safe points (see [`super::room`]).
    pub room: super::room::Room,
}

impl EndpointState {
    /// The request-header lists for plain (`stream` false) or streamed requests.
    pub(crate) fn curl_headers(&self, stream: bool) -> &Arc<super::curl_url::CurlHeaders> {
        &self.curl_headers[usize::from(stream)]
    }

    /// The cache key of a request, when it is deterministic (temperature 0) and the endpoint
    /// caches: the exact non-streaming request body, which covers model, parameters, tools
    /// and messages.
    pub fn cache_key(&self, req: &super::types::ChatRequest) -> Option<Vec<u8>> {
        self.cache.as_ref()?;
        if req.temperature != Some(0.0) {
            return None;
        }
        let mut r = req.clone();
        r.stream = false;
        Some(match self.config.provider {
            super::endpoint::Provider::OpenAi => super::openai::build_body(&r, &self.config),
            super::endpoint::Provider::Anthropic => super::anthropic::build_body(&r, &self.config),
        })
    }
}

/// Finishes a call with `SHUTDOWN` when dropped still holding it.
struct ShutdownGuard(Option<Arc<CallInner>>);

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.finish(Err(Error::new(
                Status::Shutdown,
                "the runtime shut down before the call was answered",
            )));
        }
    }
}

/// The longest recent call latency for which an agent's worker makes the call itself.
const QUICK_CALL: std::time::Duration = std::time::Duration::from_millis(2);
/// Endpoints whose recent latency is at most this get their answers waited for by yielding
/// (twice the latency then stays within [`SPIN_MAX`], so the answer usually comes while the
/// thread yields; a slower endpoint's answer would mostly come after, the yielding wasted).
const SPIN_LATENCY: std::time::Duration = std::time::Duration::from_micros(100);
/// The longest a call yields before it sleeps in poll.
const SPIN_MAX: std::time::Duration = std::time::Duration::from_micros(200);
/// The least and the most an agent keeps a claim of room while its tools run (see
/// [`EndpointState::claim_grace`]).
const CLAIM_GRACE_MIN: std::time::Duration = std::time::Duration::from_millis(20);
const CLAIM_GRACE_MAX: std::time::Duration = std::time::Duration::from_secs(5);

impl EndpointState {
    /// Folds a successful call's duration into the recent latency (1/8 weight).
    pub(crate) fn observe_latency(&self, took: std::time::Duration) {
        let us = (took.as_micros() as u64).max(1);
        let old = self.recent_latency_us.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { old - old / 8 + us / 8 };
        self.recent_latency_us.store(new, Ordering::Relaxed);
    }

    /// How long a caller-thread call to this endpoint may wait for its answer by yielding the
    /// CPU rather than sleeping: twice the recent latency, when that is under
    /// [`SPIN_LATENCY`], at most [`SPIN_MAX`]; `None` for slower endpoints and before the
    /// first answer. See `direct::attempt`.
    pub fn spin_window(&self) -> Option<std::time::Duration> {
        let us = self.recent_latency_us.load(Ordering::Relaxed);
        (us > 0 && us <= SPIN_LATENCY.as_micros() as u64)
            .then(|| std::time::Duration::from_micros(2 * us).min(SPIN_MAX))
    }

    /// Whether calls to this endpoint have lately been quick (under 2 ms), so a worker may
    /// make one itself instead of handing it to the I/O thread. Unknown until a call succeeds.
    pub fn answers_quickly(&self) -> bool {
        let us = self.recent_latency_us.load(Ordering::Relaxed);
        us > 0 && us < QUICK_CALL.as_micros() as u64
    }

    /// How long an agent holding a claim of room on this endpoint keeps it while its tools
    /// run: about as long as a model call here takes lately (within [`CLAIM_GRACE_MIN`] and
    /// [`CLAIM_GRACE_MAX`]; the longest before any call succeeded). Tools that take longer
    /// than that would keep less urgent agents waiting longer than a call of theirs takes.
    pub fn claim_grace(&self) -> std::time::Duration {
        let us = self.recent_latency_us.load(Ordering::Relaxed);
        if us == 0 {
            return CLAIM_GRACE_MAX;
        }
        std::time::Duration::from_micros(us).clamp(CLAIM_GRACE_MIN, CLAIM_GRACE_MAX)
    }

    /// Records a finished call.
    pub(crate) fn record(&self, usage: &Usage, ok: bool, retries: u32) {
        for stats in [&mut *self.stats.lock(), &mut *self.runtime_stats.lock()] {
            stats.usage.add(usage);
            if ok {
                stats.succeeded += 1;
            } else {
                stats.failed += 1;
            }
            stats.retries += retries as u64;
        }
    }

    /// This endpoint's totals.
    pub fn stats(&self) -> CallStats {
        *self.stats.lock()
    }
}

/// Endpoints, the I/O engine and totals of one runtime.
pub struct ModelHub {
    endpoints: RwLock<BTreeMap<String, Arc<EndpointState>>>,
    /// The I/O thread's engine, once the first call needs it (kept after shutdown, stopped:
    /// every use past the start is one load, no lock).
    engine: std::sync::OnceLock<Engine>,
    /// Held while the engine starts (one start, however many callers race to it).
    engine_start: Mutex<()>,
    totals: Arc<Mutex<CallStats>>,
    next_call: AtomicU64,
    thread_name: String,
    /// Aging of calls waiting for admission (see [`Engine::start`]).
    starvation_limit: Option<std::time::Duration>,
    shut_down: std::sync::atomic::AtomicBool,
    /// Synchronous calls running on their callers' threads.
    direct: super::direct::DirectCalls,
    /// Calls run on their callers' threads so far.
    direct_runs: AtomicU64,
}

impl ModelHub {
    /// A hub with no endpoints; the I/O thread starts with the first call. Calls are
    /// admitted by priority alone (see [`ModelHub::with_starvation_limit`]).
    pub fn new(thread_name: &str) -> ModelHub {
        ModelHub::with_starvation_limit(thread_name, None)
    }

    /// A hub whose calls gain a priority level for each `starvation_limit` they wait for
    /// admission to their endpoint (aging: a steady flow of more urgent calls cannot keep a
    /// call waiting forever).
    pub fn with_starvation_limit(
        thread_name: &str,
        starvation_limit: Option<std::time::Duration>,
    ) -> ModelHub {
        ModelHub {
            starvation_limit,
            endpoints: RwLock::new(BTreeMap::new()),
            engine: std::sync::OnceLock::new(),
            engine_start: Mutex::new(()),
            totals: Arc::new(Mutex::new(CallStats::default())),
            next_call: AtomicU64::new(1),
            thread_name: format!("{thread_name}-io"),
            shut_down: std::sync::atomic::AtomicBool::new(false),
            direct: Default::default(),
            direct_runs: AtomicU64::new(0),
        }
    }

    /// Adds (or with `replace`, replaces) an endpoint described by JSON.
    pub fn add_endpoint_json(&self, json: &str, replace: bool) -> Result<String> {
        let ep = Endpoint::from_json(json)?;
        self.add_endpoint(ep, replace)
    }

    /// Adds (or with `replace`, replaces) an endpoint.
    pub fn add_endpoint(&self, ep: Endpoint, replace: bool) -> Result<String> {
        let mut map = self.endpoints.write();
        if !replace && map.contains_key(&ep.name) {
            return Err(Error::invalid(format!(
                "endpoint \"{}\" already exists",
                ep.name
            )));
        }
        let headers = |stream: bool| {
            super::curl_url::CurlHeaders::new(&ep.request_headers(stream))
                .map(Arc::new)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "endpoint \"{}\": a header holds a NUL byte",
                        ep.name
                    ))
                })
        };
        let curl_headers = [headers(false)?, headers(true)?];
        let name = ep.name.clone();
        let cache =
            (ep.cache_bytes > 0).then(|| crate::mem::cache::ResponseCache::new(ep.cache_bytes));
        map.insert(
            name.clone(),
            Arc::new(EndpointState {
                stats: Mutex::new(CallStats::default()),
                runtime_stats: self.totals.clone(),
                cache,
                server_block: Default::default(),
                recent_latency_us: AtomicU64::new(0),
                curl_url: super::curl_url::CurlUrl::parse(&ep.url()).map(Arc::new),
                proxy_env: super::curl_url::proxy_env_set(),
                curl_headers,
                room: Default::default(),
                config: ep,
            }),
        );
        Ok(name)
    }

    /// Looks an endpoint up by name.
    pub fn endpoint(&self, name: &str) -> Result<Arc<EndpointState>> {
        self.endpoints
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::new(Status::NotFound, format!("no endpoint named \"{name}\"")))
    }

    /// Asks the I/O thread, if it runs, for an admission pass at once: room claimed on an
    /// endpoint was given back (see [`super::room`]).
    pub(crate) fn nudge_admission(&self) {
        if let Some(e) = self.engine.get() {
            e.nudge_admission();
        }
    }

    fn engine(&self) -> Result<&Engine> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(Error::new(Status::Shutdown, "the runtime is shutting down"));
        }
        if let Some(e) = self.engine.get() {
            return Ok(e);
        }
        let _starting = self.engine_start.lock();
        if let Some(e) = self.engine.get() {
            return Ok(e);
        }
        // Checked again under the lock shutdown also takes: a shutdown that has stopped the
        // engine never sees one started after it.
        if self.shut_down.load(Ordering::Acquire) {
            return Err(Error::new(Status::Shutdown, "the runtime is shutting down"));
        }
        let engine = Engine::start(&self.thread_name, self.starvation_limit)?;
        Ok(self.engine.get_or_init(|| engine))
    }

    /// Creates a call; it starts when passed to [`ModelHub::submit`].
    pub fn new_call(
        &self,
        endpoint: &str,
        request: ChatRequest,
        opts: CallOptions,
    ) -> Result<Arc<CallInner>> {
        Ok(self.new_call_to(self.endpoint(endpoint)?, request, opts))
    }

    /// Creates a call to an endpoint already looked up (see [`ModelHub::new_call`]).
    pub fn new_call_to(
        &self,
        endpoint: Arc<EndpointState>,
        request: ChatRequest,
        opts: CallOptions,
    ) -> Arc<CallInner> {
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        Arc::new(CallInner::new(id, endpoint, request, opts))
    }

    /// Runs `f` on the I/O thread at `at` (timers for tool timeouts and the like).
    pub fn schedule(
        &self,
        at: std::time::Instant,
        f: Box<dyn FnOnce() + Send>,
    ) -> Result<super::engine::TimerId> {
        self.engine()?.schedule(at, f)
    }

    /// How many timers (tool timeouts and the like) are armed: not yet run or cancelled.
    pub fn pending_timers(&self) -> usize {
        self.engine.get().map_or(0, |e| e.timers_held())
    }

    /// Drops a timer [`ModelHub::schedule`] made, unless it has run.
    pub fn cancel_timer(&self, id: super::engine::TimerId) {
        if let Ok(e) = self.engine() {
            e.cancel_timer(id);
        }
    }

    /// Hands a call to the I/O thread. When that fails (the runtime is shutting down, the I/O
    /// thread cannot start), the call is finished with the error too, so nobody waits on it
    /// forever.
    pub fn submit(&self, call: Arc<CallInner>) -> Result<()> {
        let r = self.submit_to_engine(call.clone());
        if let Err(e) = &r {
            call.finish(Err(e.clone()));
        }
        r
    }

    fn submit_to_engine(&self, call: Arc<CallInner>) -> Result<()> {
        if let (Some(cache), Some(key)) = (&call.endpoint.cache, &call.cache_key) {
            if let Some(mut r) = cache.get(key) {
                // Served from memory: no tokens spent, nothing billed. Delivered from the I/O
                // thread like any answer, so callbacks never run inside the caller's submit.
                r.usage = super::types::Usage::default();
                // If shutdown drops the timer before it runs, the call still finishes.
                let pending = ShutdownGuard(Some(call.clone()));
                return self
                    .engine()?
                    .schedule(
                        std::time::Instant::now(),
                        Box::new(move || {
                            let mut pending = pending;
                            let c = pending.0.take().expect("runs once");
                            let arena = bumpalo::Bump::new();
                            c.push_deltas(
                                &super::stream::DeltaBatch::from_response(&r, &arena),
                                None,
                            );
                            c.endpoint.record(&r.usage, true, 0);
                            c.finish(Ok(r));
                        }),
                    )
                    .map(|_| ());
            }
        }
        self.engine()?.submit(call)
    }

    /// Runs a call to its end and waits for it: the synchronous form of [`ModelHub::submit`].
    /// The answer is then readable through [`CallInner::result`].
    /// When nothing about the call needs the I/O thread's admission queue (see
    /// [`super::direct::DirectCalls::eligible`]), the transfer runs on this thread with no
    /// hand-off; otherwise the call goes to the I/O thread and this thread waits. Either way
    /// the call finishes exactly as through `submit`, and another thread may cancel it.
    pub fn run(&self, call: Arc<CallInner>) -> Result<()> {
        if self.shut_down.load(Ordering::Acquire) {
            let e = Error::new(Status::Shutdown, "the runtime is shutting down");
            call.finish(Err(e.clone()));
            return Err(e);
        }
        if !self.try_run_here(&call, true) {
            self.submit(call.clone())?;
        }
        call.wait_status(None)
            .unwrap_or_else(|| Err(Error::new(Status::Internal, "the call never finished")))
    }

    /// Runs `call` on this thread when it may (see [`super::direct::DirectCalls::eligible`];
    /// never on the I/O thread nor once shutting down) and returns true; returns false, leaving
    /// the call untouched, otherwise. With `retries_here` false, a call that must be retried is
    /// handed to the I/O thread for its backoff and later attempts (the caller must not wait
    /// here), so it may still be running when this returns.
    pub(crate) fn try_run_here(&self, call: &Arc<CallInner>, retries_here: bool) -> bool {
        super::direct::DirectCalls::eligible(call) && self.run_vetted_here(call, retries_here)
    }

    /// [`ModelHub::try_run_here`] for a call its caller has just found eligible (and not
    /// handed anywhere since): only a cancellation or shutdown since then is looked for.
    pub(crate) fn run_vetted_here(&self, call: &Arc<CallInner>, retries_here: bool) -> bool {
        if self.shut_down.load(Ordering::Acquire)
            || call.cancel_requested()
            || super::engine::on_io_thread()
        {
            return false;
        }
        self.direct_runs.fetch_add(1, Ordering::Relaxed);
        if let Some(backoff) = self.direct.run(call, &self.shut_down, retries_here) {
            let r = self
                .engine()
                .and_then(|e| e.submit_at(call.clone(), std::time::Instant::now() + backoff));
            if let Err(e) = r {
                call.finish(Err(e));
            }
        }
        true
    }

    /// How many calls ran on their callers' threads (see [`ModelHub::run`]) rather than on
    /// the I/O thread.
    pub fn caller_thread_calls(&self) -> u64 {
        self.direct_runs.load(Ordering::Relaxed)
    }

    /// Starts a call and returns it.
    pub fn start(
        &self,
        endpoint: &str,
        request: ChatRequest,
        priority: i32,
    ) -> Result<Arc<CallInner>> {
        let opts = CallOptions {
            priority,
            ..Default::default()
        };
        let call = self.new_call(endpoint, request, opts)?;
        self.submit(call.clone())?;
        Ok(call)
    }

    /// Asks the I/O thread to cancel a call.
    pub fn cancel(&self, call: &CallInner) {
        if call.request_cancel() {
            self.direct.wake(call.id);
            if let Some(engine) = self.engine.get() {
                engine.cancel(call.id);
            }
        }
    }

    /// Runtime-wide totals.
    pub fn totals(&self) -> CallStats {
        *self.totals.lock()
    }

    /// Totals per endpoint and for the runtime, as JSON.
    pub fn usage_json(&self) -> Value {
        let eps: serde_json::Map<String, Value> = self
            .endpoints
            .read()
            .iter()
            .map(|(k, v)| {
                let mut j = v.stats().to_json();
                if let Some(c) = &v.cache {
                    let st = c.stats();
                    j["cache"] = json!({"hits": st.hits, "misses": st.misses, "evictions": st.evictions,
                                        "entries": st.entries, "bytes": st.bytes, "max_bytes": st.max_bytes});
                }
                (k.clone(), j)
            })
            .collect();
        let mut runtime = self.totals().to_json();
        runtime["caller_thread_calls"] = json!(self.caller_thread_calls());
        json!({"runtime": runtime, "endpoints": eps})
    }

    /// The number of threads the model layer runs (0 until the first call, then 1).
    pub fn io_threads(&self) -> u32 {
        u32::from(self.engine.get().is_some_and(Engine::is_running))
    }

    /// Stops the I/O thread; calls not finished complete with `SHUTDOWN`.
    pub fn shutdown(&self) {
        self.shut_down.store(true, Ordering::Release);
        self.direct.shutdown();
        // A start under way finishes first (any later one sees `shut_down`); the lock is let go
        // before joining the I/O thread, which may itself be shutting down from a callback.
        drop(self.engine_start.lock());
        if let Some(e) = self.engine.get() {
            e.shutdown();
        }
    }
}

impl Drop for ModelHub {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn endpoint() -> Arc<EndpointState> {
        let hub = ModelHub::new("test-io");
        hub.add_endpoint_json(
            r#"{"name":"e","provider":"openai","base_url":"http://127.0.0.1:9/v1","model":"m"}"#,
            false,
        )
        .unwrap();
        hub.endpoint("e").unwrap()
    }

    #[test]
    fn an_endpoint_whose_header_holds_a_nul_byte_is_refused_when_added() {
        let hub = ModelHub::new("test-io");
        let e = hub
            .add_endpoint_json(
                r#"{"name":"e","provider":"openai","base_url":"http://127.0.0.1:9/v1","headers":{"x-a":"b\u0000c"}}"#,
                false,
            )
            .unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument);
        assert!(e.message().contains("NUL"), "{e}");
        assert!(hub.endpoint("e").is_err(), "not added");
    }

    #[test]
    fn only_endpoints_that_answer_in_microseconds_are_waited_for_by_yielding() {
        let ep = endpoint();
        // Nothing known before the first answer: sleep as usual.
        assert_eq!(ep.spin_window(), None);
        ep.observe_latency(Duration::from_micros(40));
        assert_eq!(ep.spin_window(), Some(Duration::from_micros(80)));
        // Twice the latency, but never longer than SPIN_MAX.
        let ep = endpoint();
        ep.observe_latency(SPIN_LATENCY);
        assert_eq!(ep.spin_window(), Some(SPIN_MAX));
        // An endpoint whose answers mostly come after the longest yielding is slept for.
        let ep = endpoint();
        ep.observe_latency(SPIN_LATENCY + Duration::from_micros(1));
        assert_eq!(ep.spin_window(), None);
        // So is one that takes longer still (a real model).
        let ep = endpoint();
        ep.observe_latency(Duration::from_millis(300));
        assert_eq!(ep.spin_window(), None);
        // And one that slows down stops being yielded for once its recent latency is long.
        let ep = endpoint();
        ep.observe_latency(Duration::from_micros(40));
        for _ in 0..20 {
            ep.observe_latency(Duration::from_millis(50));
        }
        assert_eq!(ep.spin_window(), None);
    }
}
