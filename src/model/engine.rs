//! The HTTP engine: one I/O thread drives every model call through libcurl's multi interface.
//!
//! Calls are submitted from any thread through a channel, and the thread is woken through an
//! eventfd in its own epoll set (curl's sockets are watched there too, via the socket-action
//! API). Admission follows priority within each endpoint's limiter. Streamed bytes go through
//! the incremental SSE parser straight into the call (no thread per request). Connections are
//! reused from the multi handles' connection caches (keep-alive; HTTP/2 multiplexing where the
//! server offers it). Transfers are spread over several multi handles ("shards") once there
//! are many, because libcurl walks a whole cache per transfer; easy handles that completed a
//! plain-HTTP transfer are kept, still configured, for the next call to the same endpoint.

use super::anthropic;
use super::call::{cancelled_error, CallInner, Phase};
use super::endpoint::{Endpoint, Provider};
use super::limiter::Limiter;
use super::openai;
use super::poller::{Poller, Ready, Waker};
use super::retry::{classify, rate_limit_info, FailureClass, Headers};
use super::sse::{SseEvent, SseParser};
use super::stream::{DeltaBatch, StreamMeta};
use super::types::ChatResponse;
use crate::error::{Error, Result, Status};
use crossbeam_channel::{Receiver, Sender};
use curl::easy::{Easy2, Handler, HttpVersion, List, WriteError};
use curl::multi::{Easy2Handle, Events, Multi};
use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// The largest non-streamed response body accepted.
pub const MAX_BODY: usize = 64 << 20;
/// How often in-flight transfers are checked for first-byte and idle timeouts.
const TIMEOUT_TICK: Duration = Duration::from_millis(20);
/// Easy handles kept for reuse at most.
const EASY_POOL: usize = 1024;
/// libcurl's receive buffer per transfer (its default is 16 KiB).
const RECEIVE_BUFFER: usize = 4096;

thread_local! {
    /// Set on I/O threads. A plain `Cell` so asking costs no allocation on other threads.
    static ON_IO_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

enum Cmd {
    Submit(Arc<CallInner>),
    Cancel(u64),
    Timer(Instant, Box<dyn FnOnce() + Send>),
}

/// Handle to the I/O thread.
pub struct Engine {
    tx: Sender<Cmd>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl Engine {
    /// Starts the I/O thread.
    pub fn start(thread_name: &str) -> Result<Engine> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let io_err = |e: std::io::Error| {
            Error::new(Status::Io, format!("cannot set up the I/O thread: {e}"))
        };
        let waker = Arc::new(Waker::new().map_err(io_err)?);
        let poller = Poller::new().map_err(io_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, waker2) = (stop.clone(), waker.clone());
        let thread = std::thread::Builder::new()
            .name(thread_name.to_string())
            .spawn(move || {
                ON_IO_THREAD.with(|f| f.set(true));
                IoLoop::new(rx, stop2, waker2, poller).run();
            })
            .map_err(|e| Error::new(Status::Io, format!("could not start the I/O thread: {e}")))?;
        Ok(Engine {
            tx,
            waker,
            stop,
            thread: parking_lot::Mutex::new(Some(thread)),
        })
    }

    /// Queues a call for the I/O thread.
    pub fn submit(&self, call: Arc<CallInner>) -> Result<()> {
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::new(Status::Shutdown, "the runtime is shutting down"));
        }
        self.tx
            .send(Cmd::Submit(call))
            .map_err(|_| Error::new(Status::Shutdown, "the I/O thread has stopped"))?;
        self.waker.wake();
        Ok(())
    }

    /// Runs `f` on the I/O thread at `at` (or soon after). Timers still pending at shutdown
    /// are dropped without running.
    pub fn schedule(&self, at: Instant, f: Box<dyn FnOnce() + Send>) -> Result<()> {
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::new(Status::Shutdown, "the runtime is shutting down"));
        }
        self.tx
            .send(Cmd::Timer(at, f))
            .map_err(|_| Error::new(Status::Shutdown, "the I/O thread has stopped"))?;
        self.waker.wake();
        Ok(())
    }

    /// Asks the I/O thread to cancel a call (its flag must already be set).
    pub fn cancel(&self, call_id: u64) {
        if self.tx.send(Cmd::Cancel(call_id)).is_ok() {
            self.waker.wake();
        }
    }

    /// Stops the thread; unfinished calls complete with `SHUTDOWN`. Idempotent.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        self.waker.wake();
        if let Some(t) = self.thread.lock().take() {
            // A thread cannot join itself (shutdown from inside a delta callback).
            if !ON_IO_THREAD.with(|f| f.get()) {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Receives one attempt's response.
struct Collector {
    /// The call (none while the handle waits in the pool).
    call: Option<Arc<CallInner>>,
    provider: Provider,
    stream: bool,
    status: u32,
    headers: Headers,
    body: Vec<u8>,
    sse: SseParser,
    sse_mode: Option<bool>,
    /// What this attempt's stream said about itself.
    meta: StreamMeta,
    /// The deltas decoded from the current read, handed to the call after each read.
    batch: DeltaBatch,
    stream_error: Option<String>,
    first_byte: Option<Instant>,
    last_byte: Instant,
    too_large: bool,
}

impl Collector {
    fn new(call: Option<Arc<CallInner>>, provider: Provider, stream: bool) -> Collector {
        Collector {
            call,
            provider,
            stream,
            status: 0,
            headers: Headers::new(),
            body: Vec::new(),
            sse: SseParser::new(),
            sse_mode: None,
            meta: StreamMeta::default(),
            batch: DeltaBatch::new(),
            stream_error: None,
            first_byte: None,
            last_byte: Instant::now(),
            too_large: false,
        }
    }

    fn on_event(&mut self, ev: SseEvent<'_>) {
        if self.stream_error.is_some() {
            return;
        }
        let r = match self.provider {
            Provider::OpenAi => openai::apply_event(&ev, &mut self.meta, &mut self.batch),
            Provider::Anthropic => anthropic::apply_event(&ev, &mut self.meta, &mut self.batch),
        };
        if let Err(e) = r {
            self.stream_error = Some(e);
        }
    }
}

impl Handler for Collector {
    fn header(&mut self, data: &[u8]) -> bool {
        let line = String::from_utf8_lossy(data);
        let line = line.trim_end();
        if line.starts_with("HTTP/") {
            // A new status line (after 100-continue or a redirect) starts a fresh header set.
            self.status = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            self.headers.clear();
        } else if let Some((k, v)) = line.split_once(':') {
            self.headers.push(k, v);
        }
        true
    }

    fn write(&mut self, data: &[u8]) -> std::result::Result<usize, WriteError> {
        let now = Instant::now();
        self.first_byte.get_or_insert(now);
        self.last_byte = now;
        let sse = *self.sse_mode.get_or_insert_with(|| {
            self.stream
                && self.status / 100 == 2
                && self
                    .headers
                    .iter()
                    .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream"))
        });
        if sse {
            // The parser is moved out so events can borrow its buffers while `self` is
            // updated; moving it allocates nothing.
            // One event larger than a whole reply may be is a broken or hostile stream.
            if self.sse.buffered() + data.len() > MAX_BODY {
                self.too_large = true;
                return Ok(0); // aborts the transfer
            }
            let usage_before = self.meta.usage;
            let mut parser = std::mem::take(&mut self.sse);
            parser.feed(data, |ev| self.on_event(ev));
            self.sse = parser;
            let usage_changed = self.meta.usage != usage_before;
            if !self.batch.is_empty() || usage_changed {
                if let Some(call) = &self.call {
                    call.push_deltas(&self.batch, usage_changed.then_some(&self.meta.usage));
                }
                self.batch.clear();
            }
        } else {
            if self.body.len() + data.len() > MAX_BODY {
                self.too_large = true;
                return Ok(0); // aborts the transfer
            }
            self.body.extend_from_slice(data);
        }
        Ok(data.len())
    }
}

struct Active {
    handle: Easy2Handle<Collector>,
    call: Arc<CallInner>,
    endpoint_key: usize,
    shard: usize,
    started: Instant,
}

struct Queued {
    priority: i32,
    service: u64,
    seq: u64,
    ready_at: Instant,
    call: Arc<CallInner>,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == CmpOrdering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        self.priority
            .cmp(&o.priority)
            .then_with(|| o.service.cmp(&self.service))
            .then_with(|| o.seq.cmp(&self.seq))
    }
}

/// What the loop knows about an endpoint's connections: transfers running now, and the most
/// that ever ran at once (an upper bound on the connections libcurl keeps for it).
#[derive(Default)]
struct ConnCount {
    active: u32,
    known: u32,
}

impl ConnCount {
    /// Whether every connection the endpoint may have is busy, so a new transfer should open a
    /// fresh one without searching libcurl's connection cache. (libcurl walks every connection
    /// to the host looking for an idle one: with thousands of HTTP/1.1 requests in flight that
    /// search made fan-out quadratic.) Only for plain-HTTP endpoints: over TLS the transfer may
    /// multiplex on an HTTP/2 connection.
    fn all_busy(&self) -> bool {
        self.active >= self.known
    }
}

/// One endpoint's admission queue and limiter.
struct EndpointQueue {
    limiter: Limiter,
    ready: BinaryHeap<Queued>,
    /// Waiting for a backoff to pass: (ready_at, call).
    delayed: Vec<Queued>,
    /// Admission blocked until then by the limiter (None = until a slot frees).
    blocked_until: Option<Instant>,
}

/// Transfers a shard takes before another shard is opened.
const SHARD_TRANSFERS: usize = 64;
/// The most curl multi handles the loop drives.
const MAX_SHARDS: usize = 256;
/// The epoll tag of the loop's own waker.
const WAKER_TAG: u32 = u32::MAX;

/// One curl multi handle and its connection cache. libcurl 7.x walks the whole connection
/// cache for every finished transfer (`curl_multi_remove_handle` looks for the transfer's
/// connection by id) and for every new one (looking for an idle connection), so with
/// thousands of connections in one cache a burst of calls costs quadratic time. The loop
/// therefore spreads transfers over several multi handles, opening another only when every
/// open one has [`SHARD_TRANSFERS`] transfers, so a lightly loaded runtime keeps one handle
/// and one warm connection pool.
struct Shard {
    multi: Multi,
    /// curl's requested timeout deadline, as nanoseconds since the loop's epoch
    /// (u64::MAX = none).
    timer: Arc<std::sync::atomic::AtomicU64>,
    /// Transfers running on it.
    active: usize,
    /// The connection-cache size given to libcurl; grows with the peak number of transfers.
    max_connects: usize,
}

impl Shard {
    fn new(index: u32, epfd: std::os::fd::RawFd, epoch: Instant) -> Shard {
        let mut multi = Multi::new();
        // Multiplex on HTTP/2 connections where offered.
        let _ = multi.pipelining(false, true);
        let _ = multi.socket_function(move |socket, events, _token| {
            if events.remove() {
                Poller::remove(epfd, socket);
            } else {
                Poller::set(epfd, socket, index, events.input(), events.output());
            }
        });
        let timer = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
        let timer2 = timer.clone();
        let _ = multi.timer_function(move |t| {
            let at = t.map_or(u64::MAX, |d| (epoch.elapsed() + d).as_nanos() as u64);
            timer2.store(at, Ordering::Relaxed);
            true
        });
        Shard {
            multi,
            timer,
            active: 0,
            max_connects: 0,
        }
    }

    /// Whether curl's timeout has passed.
    fn timer_due(&self, epoch: Instant) -> bool {
        let at = self.timer.load(Ordering::Relaxed);
        at != u64::MAX && epoch.elapsed().as_nanos() as u64 >= at
    }

    /// Lets curl handle a due timeout.
    fn run_timeout(&mut self, epoch: Instant) -> std::result::Result<(), curl::MultiError> {
        if !self.timer_due(epoch) {
            return Ok(());
        }
        self.timer.store(u64::MAX, Ordering::Relaxed);
        self.multi.timeout().map(|_| ())
    }

    /// Keeps libcurl's connection cache at least twice the peak number of transfers. By
    /// default libcurl sizes it at four times the transfers *currently* added, so as a burst of
    /// thousands of calls drained, every finished transfer made it close the oldest idle
    /// connection, each time scanning every cached connection. Idle connections are instead
    /// kept for reuse (servers close the ones they no longer want; libcurl drops those when it
    /// finds them dead).
    fn grow_connection_cache(&mut self) {
        let want = (self.active * 2).max(64);
        if want > self.max_connects && self.multi.set_max_connects(want).is_ok() {
            self.max_connects = want;
        }
    }
}

/// An easy handle between transfers, still configured for one endpoint and mode: reusing it
/// for the same endpoint only sets the body and the per-transfer flags, as a raw libcurl loop
/// reusing its handle would (no URL parsing, no header list, no option setting per call).
struct IdleEasy {
    endpoint: Arc<super::hub::EndpointState>,
    stream: bool,
    easy: Easy2<Collector>,
}

/// The I/O thread's state. Fields drop in declaration order, which matters if the loop ever
/// unwinds: transfers first (detaching from their multi handles while those and their socket
/// callbacks are alive), then the multi handles, then the epoll descriptor their callbacks use.
struct IoLoop {
    slots: Vec<Option<Active>>,
    shards: Vec<Shard>,
    rx: Receiver<Cmd>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    epoch: Instant,
    free_slots: Vec<usize>,
    by_call: HashMap<u64, usize>,
    queues: HashMap<usize, EndpointQueue>,
    /// Connections per (endpoint, shard), as far as the loop can tell (kept while the
    /// endpoint idles).
    conns: HashMap<(usize, usize), ConnCount>,
    seq: u64,
    rng: u64,
    last_tick: Instant,
    timers: BinaryHeap<std::cmp::Reverse<(Instant, u64)>>,
    timer_fns: HashMap<u64, Box<dyn FnOnce() + Send>>,
    /// Easy handles ready for reuse, still configured for their endpoint and mode (newest
    /// last; emptied after a quiet second).
    idle_easy: Vec<IdleEasy>,
    /// When a transfer last ran.
    last_busy: Instant,
    poller: Poller,
}

fn endpoint_key(call: &CallInner) -> usize {
    Arc::as_ptr(&call.endpoint) as usize
}

impl IoLoop {
    fn new(rx: Receiver<Cmd>, stop: Arc<AtomicBool>, waker: Arc<Waker>, poller: Poller) -> IoLoop {
        let epoch = Instant::now();
        let epfd = poller.raw();
        Poller::set(epfd, waker.fd(), WAKER_TAG, true, false);
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        IoLoop {
            shards: vec![Shard::new(0, epfd, epoch)],
            rx,
            stop,
            waker,
            poller,
            epoch,
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_call: HashMap::new(),
            queues: HashMap::new(),
            conns: HashMap::new(),
            seq: 0,
            rng: seed | 1,
            last_tick: Instant::now(),
            timers: BinaryHeap::new(),
            timer_fns: HashMap::new(),
            idle_easy: Vec::new(),
            last_busy: Instant::now(),
        }
    }

    fn rand01(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn run(mut self) {
        let mut ready: Vec<Ready> = Vec::new();
        loop {
            if self.stop.load(Ordering::Acquire) {
                self.shutdown_all();
                return;
            }
            let wait = self.poll_timeout(Instant::now());
            self.poller.wait(wait, &mut ready);
            // The first multi-level error of each shard.
            let mut errors: Vec<Option<curl::MultiError>> = Vec::new();
            errors.resize_with(self.shards.len(), || None);
            for r in &ready {
                if r.tag == WAKER_TAG {
                    self.waker.drain();
                    continue;
                }
                let Some(shard) = self.shards.get_mut(r.tag as usize) else {
                    continue;
                };
                let mut ev = Events::new();
                ev.input(r.input).output(r.output).error(r.error);
                if let Err(e) = shard.multi.action(r.fd, &ev) {
                    errors[r.tag as usize].get_or_insert(e);
                }
            }
            for (i, shard) in self.shards.iter_mut().enumerate() {
                if let Err(e) = shard.run_timeout(self.epoch) {
                    errors[i].get_or_insert(e);
                }
            }
            while let Ok(cmd) = self.rx.try_recv() {
                match cmd {
                    Cmd::Submit(call) => self.enqueue(call, Instant::now()),
                    Cmd::Cancel(id) => self.cancel(id),
                    Cmd::Timer(at, f) => {
                        self.seq += 1;
                        self.timers.push(std::cmp::Reverse((at, self.seq)));
                        self.timer_fns.insert(self.seq, f);
                    }
                }
            }
            self.run_timers(Instant::now());
            self.admit(Instant::now());
            errors.resize_with(self.shards.len(), || None);
            for (i, shard) in self.shards.iter_mut().enumerate() {
                // New transfers ask for an immediate timeout to get started.
                if let Err(e) = shard.run_timeout(self.epoch) {
                    errors[i].get_or_insert(e);
                }
            }
            for (i, e) in errors.iter().enumerate() {
                if let Some(e) = e {
                    // A multi-level error is not tied to one transfer; fail the shard's.
                    let err = Error::new(Status::Internal, format!("curl multi error: {e}"));
                    for slot in 0..self.slots.len() {
                        if matches!(&self.slots[slot], Some(a) if a.shard == i) {
                            self.complete_slot(slot, Some(err.clone()));
                        }
                    }
                }
            }
            let mut done = Vec::new();
            for shard in &self.shards {
                shard.multi.messages(|m| {
                    if let (Ok(token), Some(result)) = (m.token(), m.result()) {
                        done.push((token, result));
                    }
                });
            }
            for (slot, result) in done {
                self.finish_transfer(slot, result);
            }
            let now = Instant::now();
            if now.duration_since(self.last_tick) >= TIMEOUT_TICK {
                self.last_tick = now;
                self.check_timeouts(now);
            }
        }
    }

    fn run_timers(&mut self, now: Instant) {
        while let Some(std::cmp::Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(f) = self.timer_fns.remove(&id) {
                // A panicking timer must not take the I/O thread down.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            }
        }
    }

    /// The shard for a new transfer: the first with room, so every burst fills the shards in
    /// the same order and finds the connections the last one left in each; a new shard when
    /// all are full; the least loaded once there are as many as allowed.
    fn pick_shard(&mut self) -> usize {
        if let Some(i) = self.shards.iter().position(|s| s.active < SHARD_TRANSFERS) {
            return i;
        }
        if self.shards.len() < MAX_SHARDS {
            let i = self.shards.len();
            self.shards
                .push(Shard::new(i as u32, self.poller.raw(), self.epoch));
            return i;
        }
        self.shards
            .iter()
            .enumerate()
            .min_by_key(|&(i, s)| (s.active, i))
            .map_or(0, |(i, _)| i)
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        let mut wait = Duration::from_secs(1);
        if !self.by_call.is_empty() {
            wait = wait.min(TIMEOUT_TICK);
        }
        if let Some(std::cmp::Reverse((at, _))) = self.timers.peek() {
            wait = wait.min(at.saturating_duration_since(now));
        }
        let elapsed = now.duration_since(self.epoch).as_nanos() as u64;
        for shard in &self.shards {
            let at = shard.timer.load(Ordering::Relaxed);
            if at != u64::MAX {
                wait = wait.min(Duration::from_nanos(at.saturating_sub(elapsed)));
            }
        }
        for q in self.queues.values() {
            for d in &q.delayed {
                wait = wait.min(d.ready_at.saturating_duration_since(now));
            }
            if let (Some(until), false) = (q.blocked_until, q.ready.is_empty()) {
                wait = wait.min(until.saturating_duration_since(now));
            }
        }
        wait
    }

    fn enqueue(&mut self, call: Arc<CallInner>, ready_at: Instant) {
        let key = endpoint_key(&call);
        let limits = call.endpoint.config.limits;
        let q = self.queues.entry(key).or_insert_with(|| EndpointQueue {
            limiter: Limiter::new(limits),
            ready: BinaryHeap::new(),
            delayed: Vec::new(),
            blocked_until: None,
        });
        self.seq += 1;
        let item = Queued {
            priority: call.priority,
            service: call.service,
            seq: self.seq,
            ready_at,
            call,
        };
        if ready_at > Instant::now() {
            q.delayed.push(item);
        } else {
            q.ready.push(item);
        }
    }

    fn admit(&mut self, now: Instant) {
        let keys: Vec<usize> = self.queues.keys().copied().collect();
        let mut again = false;
        for key in keys {
            let mut preempt_for = None;
            let mut starts = Vec::new();
            let mut cancelled = Vec::new();
            {
                let q = self.queues.get_mut(&key).expect("queue");
                let (due, later): (Vec<_>, Vec<_>) =
                    q.delayed.drain(..).partition(|d| d.ready_at <= now);
                q.delayed = later;
                q.ready.extend(due);
                if matches!(q.blocked_until, Some(t) if t > now) {
                    continue;
                }
                q.blocked_until = None;
                while let Some(top) = q.ready.peek() {
                    if top.call.cancel_requested() {
                        cancelled.push(q.ready.pop().expect("peeked").call);
                        continue;
                    }
                    let est = estimate_tokens(&top.call);
                    match q.limiter.try_admit(now, est, top.call.id) {
                        Ok(()) => starts.push(q.ready.pop().expect("peeked").call),
                        Err(until) => {
                            q.blocked_until = until;
                            if until.is_none() {
                                preempt_for = Some(top.call.priority);
                            }
                            break;
                        }
                    }
                }
            }
            // Token-aware preemption: the head waits for a concurrency slot that a less urgent,
            // preemptible stream holds. Cancel that stream, keep its output as a snapshot, and
            // queue it to continue later; the head gets the slot at the next pass.
            if let Some(priority) = preempt_for {
                if self.preempt_one(key, priority) {
                    again = true;
                }
            }
            for call in cancelled {
                let n = call.state.lock().acc.deltas;
                let e = cancelled_error(&call.endpoint.config.name, n);
                finish_call(&call, Err(e));
            }
            for call in starts {
                self.start_transfer(call, key);
            }
        }
        self.queues.retain(|_, q| {
            !q.ready.is_empty() || !q.delayed.is_empty() || q.limiter.in_flight() > 0
        });
        if again {
            self.admit(now);
        }
    }

    /// Preempts the least urgent preemptible stream on endpoint `key` whose priority is below
    /// `priority`. Returns whether one was preempted.
    fn preempt_one(&mut self, key: usize, priority: i32) -> bool {
        let victim = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().map(|a| (i, a)))
            .filter(|(_, a)| {
                a.endpoint_key == key
                    && a.call.preemptible
                    && a.call.priority < priority
                    && !a.call.cancel_requested()
                    && !a.call.has_tool_output()
            })
            .min_by_key(|(_, a)| (a.call.priority, std::cmp::Reverse(a.started)))
            .map(|(i, _)| i);
        let Some(slot) = victim else { return false };
        let Some((call, key, _collector)) = self.take_slot(slot, false) else {
            return false;
        };
        self.release(key, call.id, None);
        call.preempted();
        self.enqueue(call, Instant::now());
        true
    }

    fn start_transfer(&mut self, call: Arc<CallInner>, key: usize) {
        let ep = &call.endpoint.config;
        let stream = call.request.stream;
        let snapshot = call.state.lock().snapshot.clone().filter(|s| !s.is_empty());
        let resumed;
        let request = match &snapshot {
            // Continue from the snapshot: the partial answer goes last, as an assistant message
            // the model extends (assistant prefill, supported by OpenAI-compatible servers such
            // as llama.cpp and by Anthropic).
            Some(snap) => {
                let mut r = call.request.clone();
                r.messages.push(super::types::ChatMessage::text(
                    super::types::Role::Assistant,
                    snap.clone(),
                ));
                resumed = r;
                &resumed
            }
            None => &call.request,
        };
        let body: std::borrow::Cow<[u8]> = match (&call.body, &snapshot) {
            (Some(b), None) => std::borrow::Cow::Borrowed(b.as_slice()),
            _ => std::borrow::Cow::Owned(match ep.provider {
                Provider::OpenAi => openai::build_body(request, ep),
                Provider::Anthropic => anthropic::build_body(request, ep),
            }),
        };
        let shard = self.pick_shard();
        let counts = self.conns.entry((key, shard)).or_default();
        let fresh = ep.base_url.starts_with("http:") && counts.all_busy();
        // A handle last used for this endpoint and mode keeps its options; any other is reset.
        let recent = self.idle_easy.len().saturating_sub(8);
        let pooled = match self.idle_easy[recent..]
            .iter()
            .rposition(|i| i.stream == stream && Arc::ptr_eq(&i.endpoint, &call.endpoint))
        {
            Some(i) => Some((self.idle_easy.remove(recent + i).easy, true)),
            None => self.idle_easy.pop().map(|mut i| {
                i.easy.reset();
                (i.easy, false)
            }),
        };
        let easy = match build_easy(pooled, &call, ep, stream, &body, fresh) {
            Ok(e) => e,
            Err(e) => {
                self.release(key, call.id, None);
                let err = Error::new(
                    Status::Http,
                    format!("endpoint \"{}\": cannot set up the request: {e}", ep.name),
                );
                finish_call(&call, Err(err));
                return;
            }
        };
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        match self.shards[shard].multi.add2(easy) {
            Ok(mut handle) => {
                let _ = handle.set_token(slot);
                {
                    let mut s = call.state.lock();
                    s.phase = Phase::InFlight;
                    s.attempts += 1;
                }
                if snapshot.is_some() {
                    call.resumed();
                }
                self.by_call.insert(call.id, slot);
                let counts = self.conns.entry((key, shard)).or_default();
                counts.active += 1;
                counts.known = counts.known.max(counts.active);
                let sh = &mut self.shards[shard];
                sh.active += 1;
                sh.grow_connection_cache();
                self.slots[slot] = Some(Active {
                    handle,
                    call,
                    endpoint_key: key,
                    shard,
                    started: Instant::now(),
                });
            }
            Err(e) => {
                self.free_slots.push(slot);
                self.release(key, call.id, None);
                let err = Error::new(
                    Status::Http,
                    format!(
                        "endpoint \"{}\": curl refused the transfer: {e}",
                        call.endpoint.config.name
                    ),
                );
                finish_call(&call, Err(err));
            }
        }
    }

    fn release(&mut self, key: usize, call_id: u64, actual_tokens: Option<u64>) {
        if let Some(q) = self.queues.get_mut(&key) {
            // A freed slot lets the head of the queue try again at the next admission pass.
            q.limiter.release(call_id, actual_tokens);
        }
    }

    /// Removes a transfer from the multi handle, giving back its call and collector.
    /// `completed`: the transfer ran to its end (curl reported it done), so its handle may be
    /// reused.
    fn take_slot(
        &mut self,
        slot: usize,
        completed: bool,
    ) -> Option<(Arc<CallInner>, usize, Collector)> {
        let active = self.slots.get_mut(slot)?.take()?;
        self.free_slots.push(slot);
        self.by_call.remove(&active.call.id);
        if let Some(c) = self.conns.get_mut(&(active.endpoint_key, active.shard)) {
            c.active = c.active.saturating_sub(1);
        }
        let shard = &mut self.shards[active.shard];
        shard.active = shard.active.saturating_sub(1);
        let Active {
            handle,
            call,
            endpoint_key,
            shard,
            ..
        } = active;
        let collector = match self.shards[shard].multi.remove2(handle) {
            Ok(mut easy) => {
                let c = std::mem::replace(
                    easy.get_mut(),
                    Collector::new(None, Provider::OpenAi, false),
                );
                // Reused only after a plain-HTTP transfer that ran to its end: curl then has
                // freed the handle's receive buffer (with libcurl 7.72-8.4 a handle removed
                // early, or one whose HTTP/2 connection other streams still use, keeps it, and
                // resizing the buffer would then fail).
                if completed
                    && call.endpoint.config.base_url.starts_with("http:")
                    && self.idle_easy.len() < EASY_POOL
                {
                    self.idle_easy.push(IdleEasy {
                        endpoint: call.endpoint.clone(),
                        stream: call.request.stream,
                        easy,
                    });
                }
                c
            }
            // The handle could not be detached; the call still must finish.
            Err(_) => Collector::new(Some(call.clone()), Provider::OpenAi, false),
        };
        Some((call, endpoint_key, collector))
    }

    /// Ends an in-flight transfer early: with `None` as a cancellation, else as `err`.
    fn complete_slot(&mut self, slot: usize, err: Option<Error>) {
        let Some((call, key, c)) = self.take_slot(slot, false) else {
            return;
        };
        self.release(key, call.id, None);
        let err = err.unwrap_or_else(|| cancelled_error(&call.endpoint.config.name, c.meta.deltas));
        finish_call(&call, Err(err));
    }

    fn cancel(&mut self, call_id: u64) {
        if let Some(&slot) = self.by_call.get(&call_id) {
            self.complete_slot(slot, None);
            return;
        }
        // A queued call: remove it now rather than at its admission.
        let now = Instant::now();
        let mut cancelled = Vec::new();
        for q in self.queues.values_mut() {
            let items: Vec<Queued> = q.ready.drain().chain(q.delayed.drain(..)).collect();
            for it in items {
                if it.call.id == call_id {
                    cancelled.push(it.call);
                } else if it.ready_at > now {
                    q.delayed.push(it);
                } else {
                    q.ready.push(it);
                }
            }
        }
        for call in cancelled {
            let n = call.state.lock().acc.deltas;
            finish_call(&call, Err(cancelled_error(&call.endpoint.config.name, n)));
        }
    }

    fn check_timeouts(&mut self, now: Instant) {
        if !self.by_call.is_empty() {
            self.last_busy = now;
        } else if now.duration_since(self.last_busy) >= Duration::from_secs(1) {
            self.idle_easy = Vec::new();
        }
        let mut expired = Vec::new();
        for (slot, a) in self.slots.iter().enumerate() {
            let Some(a) = a else { continue };
            let t = &a.call.endpoint.config.timeouts;
            let c = a.handle.get_ref();
            let what = match c.first_byte {
                None if !t.first_byte.is_zero() && now.duration_since(a.started) > t.first_byte => {
                    Some(("first byte", t.first_byte))
                }
                Some(_) if !t.idle.is_zero() && now.duration_since(c.last_byte) > t.idle => {
                    Some(("idle stream", t.idle))
                }
                _ => None,
            };
            if let Some((what, limit)) = what {
                expired.push((slot, what, limit));
            }
        }
        for (slot, what, limit) in expired {
            let Some((call, key, c)) = self.take_slot(slot, false) else {
                continue;
            };
            let msg = format!(
                "endpoint \"{}\": {what} timeout after {} ms",
                call.endpoint.config.name,
                limit.as_millis()
            );
            self.after_failed_attempt(call, key, c, Error::new(Status::Timeout, msg), true);
        }
    }

    fn finish_transfer(&mut self, slot: usize, result: std::result::Result<(), curl::Error>) {
        let Some((call, key, c)) = self.take_slot(slot, result.is_ok()) else {
            return;
        };
        let ep = &call.endpoint.config;
        let name = ep.name.clone();
        let now = Instant::now();
        if let Some(q) = self.queues.get_mut(&key) {
            q.limiter
                .observe(now, &rate_limit_info(&c.headers, SystemTime::now()));
        }
        if let Err(e) = result {
            let (status, what) = if c.too_large {
                (
                    Status::LimitExceeded,
                    format!("response body exceeds {MAX_BODY} bytes"),
                )
            } else if e.is_operation_timedout() {
                (
                    Status::Timeout,
                    format!("total timeout: {}", e.description()),
                )
            } else {
                (
                    Status::Http,
                    format!("transport error: {}", e.description()),
                )
            };
            let retryable = !c.too_large;
            let err = Error::new(status, ep.redact(&format!("endpoint \"{name}\": {what}")));
            self.after_failed_attempt(call, key, c, err, retryable);
            return;
        }
        if c.status / 100 != 2 {
            let body = String::from_utf8_lossy(&c.body);
            let text = provider_error_text(ep.provider, &body);
            let class = classify(c.status, &c.headers, &body, SystemTime::now());
            let msg = ep.redact(&format!("endpoint \"{name}\": HTTP {}: {text}", c.status));
            match class {
                FailureClass::SpendLimit => {
                    self.release(key, call.id, None);
                    let e = Error::new(
                        Status::LimitExceeded,
                        format!("{msg} (spend limit: not retried)"),
                    );
                    finish_call(&call, Err(e));
                }
                FailureClass::NonRetryable => {
                    self.release(key, call.id, None);
                    finish_call(&call, Err(Error::new(Status::Http, msg)));
                }
                FailureClass::Retryable { after } => {
                    if let (Some(after), Some(q)) = (after, self.queues.get_mut(&key)) {
                        if c.status == 429 {
                            q.limiter.block_until(now + after);
                        }
                    }
                    self.schedule_retry(call, key, Error::new(Status::Http, msg), after);
                }
            }
            return;
        }
        // 2xx.
        if c.sse_mode == Some(true) {
            if let Some(e) = &c.stream_error {
                let err = Error::new(
                    Status::Provider,
                    ep.redact(&format!("endpoint \"{name}\": error event in stream: {e}")),
                );
                self.after_failed_attempt(call, key, c, err, true);
                return;
            }
            if !c.meta.done || c.sse.has_partial() {
                let err = Error::new(
                    Status::Http,
                    format!("endpoint \"{name}\": stream ended before its end marker"),
                );
                self.after_failed_attempt(call, key, c, err, true);
                return;
            }
            // The call's own accumulator holds every piece across attempts: a snapshot kept
            // at preemption plus its continuation.
            let r = call.state.lock().acc.response(&c.meta);
            self.succeed(call, key, r);
            return;
        }
        let parsed = match ep.provider {
            Provider::OpenAi => openai::parse_response(&c.body),
            Provider::Anthropic => anthropic::parse_response(&c.body),
        };
        match parsed {
            Ok(r) => {
                // A non-streamed answer is delivered as one delta too, so pullers see it.
                call.push_deltas(&DeltaBatch::from_response(&r), Some(&r.usage));
                self.succeed(call, key, r);
            }
            Err(e) => {
                self.release(key, call.id, None);
                let err = Error::new(
                    Status::Provider,
                    ep.redact(&format!(
                        "endpoint \"{name}\": HTTP {}: malformed response: {e}",
                        c.status
                    )),
                );
                finish_call(&call, Err(err));
            }
        }
    }

    fn succeed(&mut self, call: Arc<CallInner>, key: usize, mut r: ChatResponse) {
        let ep = &call.endpoint.config;
        r.usage.cost_usd = ep.prices.cost(&r.usage);
        {
            let mut s = call.state.lock();
            s.meta.usage = r.usage;
            s.meta.set_finish_reason(&r.finish_reason);
            s.meta.set_model(&r.model);
        }
        let actual = r
            .usage
            .prompt_tokens
            .saturating_add(r.usage.completion_tokens);
        self.release(key, call.id, (actual > 0).then_some(actual));
        if let (Some(cache), Some(k)) = (&call.endpoint.cache, &call.cache_key) {
            if call.preemptions() == 0 {
                cache.put(k.clone(), r.clone());
            }
        }
        finish_call(&call, Ok(r));
    }

    /// A transport-level failure: retry unless output was already delivered (never replay a
    /// stream that produced output) or `retryable` is false.
    fn after_failed_attempt(
        &mut self,
        call: Arc<CallInner>,
        key: usize,
        c: Collector,
        err: Error,
        retryable: bool,
    ) {
        if c.meta.has_output() {
            self.release(key, call.id, None);
            let msg = format!(
                "{} after {} streamed pieces; not replayed, the partial output is kept",
                err.message(),
                c.meta.deltas
            );
            finish_call(&call, Err(Error::new(err.status(), msg)));
        } else if retryable {
            self.schedule_retry(call, key, err, None);
        } else {
            self.release(key, call.id, None);
            finish_call(&call, Err(err));
        }
    }

    fn schedule_retry(
        &mut self,
        call: Arc<CallInner>,
        key: usize,
        err: Error,
        after: Option<Duration>,
    ) {
        self.release(key, call.id, None);
        let policy = call.endpoint.config.retry;
        let retries = call.state.lock().retries;
        let delay = if retries < policy.max_retries {
            let r = self.rand01();
            policy.delay(retries, after, r)
        } else {
            None
        };
        match delay {
            Some(d) if !call.cancel_requested() => {
                {
                    let mut s = call.state.lock();
                    s.retries += 1;
                    s.phase = Phase::Queued;
                }
                self.enqueue(call, Instant::now() + d);
            }
            _ => {
                let why = if retries >= policy.max_retries {
                    format!("{} (gave up after {} retries)", err.message(), retries)
                } else {
                    format!(
                        "{} (server asked to wait longer than max_wait)",
                        err.message()
                    )
                };
                finish_call(&call, Err(Error::new(err.status(), why)));
            }
        }
    }

    fn shutdown_all(&mut self) {
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_some() {
                self.complete_slot(
                    slot,
                    Some(Error::new(
                        Status::Shutdown,
                        "the runtime shut down during the call",
                    )),
                );
            }
        }
        for q in self.queues.values_mut() {
            for it in q.ready.drain().chain(q.delayed.drain(..)) {
                finish_call(
                    &it.call,
                    Err(Error::new(
                        Status::Shutdown,
                        "the runtime shut down before the call started",
                    )),
                );
            }
        }
        self.timer_fns.clear();
        while let Ok(cmd) = self.rx.try_recv() {
            if let Cmd::Submit(call) = cmd {
                finish_call(
                    &call,
                    Err(Error::new(
                        Status::Shutdown,
                        "the runtime shut down before the call started",
                    )),
                );
            }
        }
    }
}

/// Records the outcome in the endpoint totals and completes the call.
fn finish_call(call: &CallInner, result: Result<ChatResponse>) {
    let (usage, ok) = match &result {
        Ok(r) => (r.usage, true),
        Err(_) => (call.state.lock().meta.usage, false),
    };
    let retries = call.state.lock().retries;
    call.endpoint.record(&usage, ok, retries);
    call.finish(result);
}

fn provider_error_text(provider: Provider, body: &str) -> String {
    let parsed = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| match provider {
            Provider::OpenAi => openai::error_text(&v),
            Provider::Anthropic => anthropic::error_text(&v),
        });
    parsed.unwrap_or_else(|| {
        let t = body.trim();
        if t.is_empty() {
            "(empty body)".to_string()
        } else {
            t.chars().take(500).collect()
        }
    })
}

fn estimate_tokens(call: &CallInner) -> u64 {
    let chars: usize = call
        .request
        .messages
        .iter()
        .map(|m| m.content.len() + 8)
        .sum();
    let out = call
        .request
        .max_tokens
        .unwrap_or(call.endpoint.config.max_output_tokens) as usize;
    ((chars / 4) + out) as u64
}

/// An easy handle for `call`: `pooled` is a handle from an earlier transfer, with whether it
/// is still configured for this endpoint and mode (then only the body and the per-transfer
/// flags are set).
fn build_easy(
    pooled: Option<(Easy2<Collector>, bool)>,
    call: &Arc<CallInner>,
    ep: &Endpoint,
    stream: bool,
    body: &[u8],
    fresh_connection: bool,
) -> std::result::Result<Easy2<Collector>, curl::Error> {
    let collector = Collector::new(Some(call.clone()), ep.provider, stream);
    let (mut easy, configured) = match pooled {
        Some((mut e, configured)) => {
            *e.get_mut() = collector;
            (e, configured)
        }
        None => (Easy2::new(collector), false),
    };
    if !configured {
        configure_easy(&mut easy, ep, stream)?;
    }
    easy.post_fields_copy(body)?;
    easy.fresh_connect(fresh_connection)?;
    Ok(easy)
}

/// Sets the options that depend only on the endpoint and the mode.
fn configure_easy(
    easy: &mut Easy2<Collector>,
    ep: &Endpoint,
    stream: bool,
) -> std::result::Result<(), curl::Error> {
    easy.url(&ep.url())?;
    easy.post(true)?;
    let mut list = List::new();
    for h in ep.request_headers(stream) {
        list.append(&h)?;
    }
    easy.http_headers(list)?;
    easy.http_version(HttpVersion::V2TLS)?;
    // Over TLS, wait for an HTTP/2 connection to multiplex on rather than opening another.
    if ep.base_url.starts_with("https:") {
        easy.pipewait(true)?;
    }
    easy.tcp_nodelay(true)?;
    // libcurl gives every transfer a 16 KiB receive buffer by default; model answers arrive
    // in small pieces, and with thousands of calls in flight that buffer dominated memory.
    easy.buffer_size(RECEIVE_BUFFER)?;
    easy.signal(false)?;
    if !ep.timeouts.connect.is_zero() {
        easy.connect_timeout(ep.timeouts.connect)?;
    }
    if !ep.timeouts.total.is_zero() {
        easy.timeout(ep.timeouts.total)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::call::{CallOptions, DeltaFn, Pull};
    use crate::model::hub::ModelHub;
    use crate::model::stream::{DeltaBuf, StreamDelta};
    use crate::model::types::ChatRequest;
    use crate::test_alloc::allocations;

    /// A collector for a streamed call whose observer reads every delta, as the C callback
    /// and agents do.
    fn collector(provider: &str) -> (Collector, Arc<CallInner>) {
        let hub = ModelHub::new("t");
        hub.add_endpoint_json(
            &format!(r#"{{"name":"e","provider":"{provider}","base_url":"http://127.0.0.1:9/v1","model":"m"}}"#),
            false,
        )
        .unwrap();
        let seen = std::sync::atomic::AtomicUsize::new(0);
        let opts = CallOptions {
            observer: Some(Box::new(DeltaFn(Box::new(move |d: StreamDelta<'_>| {
                if let StreamDelta::Text(t) = d {
                    seen.fetch_add(t.len(), Ordering::Relaxed);
                }
            })))),
            ..Default::default()
        };
        let req = ChatRequest::from_json(
            r#"{"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        let call = hub.new_call("e", req, opts).unwrap();
        let p = call.endpoint.config.provider;
        let mut c = Collector::new(Some(call.clone()), p, true);
        assert!(c.header(b"HTTP/1.1 200 OK\r\n"));
        assert!(c.header(b"content-type: text/event-stream\r\n"));
        (c, call)
    }

    /// Feeds `events` (each split across two reads, to exercise buffering), pulling every
    /// delta after each read; returns the allocations made per event after the first `warm`.
    fn allocations_per_event(
        c: &mut Collector,
        call: &CallInner,
        events: &[String],
        warm: usize,
    ) -> f64 {
        let mut buf = DeltaBuf::new();
        let mut pulled = 0usize;
        let mut start = 0;
        for (i, ev) in events.iter().enumerate() {
            if i == warm {
                start = allocations();
            }
            let (a, b) = ev.as_bytes().split_at(ev.len() / 2);
            c.write(a).unwrap();
            c.write(b).unwrap();
            while call.next_delta(Some(Instant::now()), &mut buf) == Pull::Delta {
                pulled += usize::from(buf.delta() != StreamDelta::Text(""));
            }
        }
        let n = allocations() - start;
        assert!(
            pulled > events.len() / 2,
            "deltas were delivered ({pulled})"
        );
        n as f64 / (events.len() - warm) as f64
    }

    #[test]
    fn openai_stream_allocates_nothing_per_token() {
        let (mut c, call) = collector("openai");
        let mut events = vec![
            "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null},\"logprobs\":null,\"finish_reason\":null}]}\n\n".to_string(),
        ];
        for i in 0..4000 {
            let piece = match i % 4 {
                0 => format!("word{i} "),
                1 => "line\\n\\t\\\"quoted\\\" ".to_string(),
                2 => "caf\\u00e9 \\ud83d\\ude00 ".to_string(),
                _ => "é中 ".to_string(),
            };
            events.push(format!("data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"system_fingerprint\":\"b1\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{piece}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"));
        }
        events.push("data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n".into());
        for _ in 0..2000 {
            events.push("data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"k\\\": 1}\"}}]}}]}\n\n".into());
        }
        let per_event = allocations_per_event(&mut c, &call, &events, 200);
        // Buffers double as the answer grows: a handful of reallocations in 6000 events.
        assert!(
            per_event < 0.01,
            "{per_event} allocations per streamed event"
        );
        let s = call.state.lock();
        assert_eq!(
            s.acc.tool_calls[0].arguments.len(),
            2000 * "{\"k\": 1}".len()
        );
        assert!(s
            .acc
            .content
            .contains("line\n\t\"quoted\" caf\u{e9} \u{1f600} é中 "));
        assert!(s.acc.estimated_tokens > 8000);
    }

    #[test]
    fn anthropic_stream_allocates_nothing_per_token() {
        let (mut c, call) = collector("anthropic");
        let mut events = vec![
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\",\"content\":[],\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n".to_string(),
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_string(),
        ];
        for i in 0..4000 {
            let piece = if i % 2 == 0 {
                "tok\\n\\\"x\\\" "
            } else {
                "caf\\u00e9 "
            };
            events.push(format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{piece}\"}}}}\n\n"));
            if i % 50 == 0 {
                events.push("event: ping\ndata: {\"type\": \"ping\"}\n\n".into());
            }
        }
        let per_event = allocations_per_event(&mut c, &call, &events, 200);
        assert!(
            per_event < 0.01,
            "{per_event} allocations per streamed event"
        );
        assert!(call.state.lock().acc.content.ends_with("caf\u{e9} "));
    }
}
