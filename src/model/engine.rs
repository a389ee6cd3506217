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

use super::call::{cancelled_error, CallInner, Phase};
use super::limiter::Limiter;
use super::poller::{Poller, Ready, Waker};
use super::retry::rate_limit_info;
use super::transfer::{
    attempt_timeout, build_easy, failed_attempt, finish_call, forget_body, judge, plan_retry,
    reusable_after, Collector, Jitter, Verdict,
};
use crate::config::aging_levels;
use crate::error::{Error, Result, Status};
use crossbeam_channel::{Receiver, Sender};
use curl::easy::Easy2;
use curl::multi::{Easy2Handle, Events, Multi};
use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// How often in-flight transfers are checked for first-byte and idle timeouts.
const TIMEOUT_TICK: Duration = Duration::from_millis(20);
/// The longest the I/O thread sleeps: it drains its command queue at least this often.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Easy handles kept for reuse at most.
const EASY_POOL: usize = 1024;

thread_local! {
    /// Set on I/O threads. A plain `Cell` so asking costs no allocation on other threads.
    static ON_IO_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is an I/O thread (where blocking on a call would deadlock).
pub(crate) fn on_io_thread() -> bool {
    ON_IO_THREAD.with(|f| f.get())
}

enum Cmd {
    Submit(Arc<CallInner>),
    /// A call to start once the instant has passed (a retry after its backoff).
    SubmitAt(Arc<CallInner>, Instant),
    Cancel(u64),
}

/// A timer: when it is due, and a number that tells timers due at the same instant apart.
/// Ordered by due time, so the table's first entry is the next to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerId {
    at: Instant,
    n: u64,
}

type TimerFn = Box<dyn FnOnce() + Send>;

/// The timers, by when they are due. Any thread arms and disarms them under the lock (what a
/// disarmed timer holds is dropped by the thread that disarms it, usually the one that armed
/// it); the I/O thread runs those that come due. Tool timeouts, armed and disarmed for every
/// tool call, cost a lookup in a small map, not a message to the I/O thread each.
#[derive(Default)]
struct Timers(parking_lot::Mutex<BTreeMap<TimerId, TimerFn>>);

impl Timers {
    /// The due time of the next timer.
    fn next_due(&self) -> Option<Instant> {
        self.0.lock().first_key_value().map(|(id, _)| id.at)
    }

    /// Takes out the timers due at `now` or before, in due order.
    fn take_due(&self, now: Instant) -> Vec<TimerFn> {
        let mut t = self.0.lock();
        if !t.first_key_value().is_some_and(|(id, _)| id.at <= now) {
            return Vec::new();
        }
        let later = t.split_off(&TimerId {
            at: now,
            n: u64::MAX,
        });
        std::mem::replace(&mut *t, later).into_values().collect()
    }
}

/// Handle to the I/O thread.
pub struct Engine {
    tx: Sender<Cmd>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    /// The last timer number given out.
    timer_ids: std::sync::atomic::AtomicU64,
    timers: Arc<Timers>,
    thread: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl Engine {
    /// Starts the I/O thread. With `starvation_limit`, a call waiting for admission to its
    /// endpoint gains a priority level for each `starvation_limit` it has waited (aging; see
    /// `EndpointQueue::age`).
    pub fn start(thread_name: &str, starvation_limit: Option<Duration>) -> Result<Engine> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let io_err = |e: std::io::Error| {
            Error::new(Status::Io, format!("cannot set up the I/O thread: {e}"))
        };
        let waker = Arc::new(Waker::new().map_err(io_err)?);
        let poller = Poller::new().map_err(io_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, waker2) = (stop.clone(), waker.clone());
        let timers = Arc::new(Timers::default());
        let timers2 = timers.clone();
        let thread = std::thread::Builder::new()
            .name(thread_name.to_string())
            .spawn(move || {
                ON_IO_THREAD.with(|f| f.set(true));
                let mut io = IoLoop::new(rx, stop2, waker2, poller);
                io.timers = timers2;
                io.starvation_limit = starvation_limit;
                io.run();
            })
            .map_err(|e| Error::new(Status::Io, format!("could not start the I/O thread: {e}")))?;
        Ok(Engine {
            tx,
            waker,
            stop,
            timer_ids: std::sync::atomic::AtomicU64::new(0),
            timers,
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

    /// Queues a call for the I/O thread to start at `at` (a retry handed over after its first
    /// attempt ran elsewhere).
    pub fn submit_at(&self, call: Arc<CallInner>, at: Instant) -> Result<()> {
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::new(Status::Shutdown, "the runtime is shutting down"));
        }
        self.tx
            .send(Cmd::SubmitAt(call, at))
            .map_err(|_| Error::new(Status::Shutdown, "the I/O thread has stopped"))?;
        self.waker.wake();
        Ok(())
    }

    /// Runs `f` on the I/O thread at `at` (or soon after). Timers still pending at shutdown
    /// are dropped without running. A timer due later than the loop's longest sleep does not
    /// wake the thread: it is picked up at the next wake-up anyway (tool timeouts, armed for
    /// every tool call, would otherwise cost a wake-up each). Returns the timer's id, for
    /// [`Engine::cancel_timer`].
    pub fn schedule(&self, at: Instant, f: Box<dyn FnOnce() + Send>) -> Result<TimerId> {
        if self.stop.load(Ordering::Acquire) {
            return Err(Error::new(Status::Shutdown, "the runtime is shutting down"));
        }
        let id = TimerId {
            at,
            n: self.timer_ids.fetch_add(1, Ordering::Relaxed) + 1,
        };
        self.timers.0.lock().insert(id, f);
        // A shutdown that began meanwhile may have emptied the table before this insert: take
        // the timer back rather than leave it in a stopped engine.
        if self.stop.load(Ordering::Acquire) {
            let f = self.timers.0.lock().remove(&id);
            drop(f);
            return Err(Error::new(Status::Shutdown, "the runtime is shutting down"));
        }
        if at.saturating_duration_since(Instant::now()) <= MAX_SLEEP {
            self.waker.wake();
        }
        Ok(id)
    }

    /// How many timers are armed (not yet run or cancelled).
    pub fn timers_held(&self) -> usize {
        self.timers.0.lock().len()
    }

    /// Drops timer `id` without running it (nothing when it has run), on this thread: what
    /// it holds is released before this returns.
    pub fn cancel_timer(&self, id: TimerId) {
        let f = self.timers.0.lock().remove(&id);
        drop(f);
    }

    /// Asks the I/O thread for an admission pass at once (room claimed on an endpoint was
    /// given back, so calls held for it may go): every pass of its loop admits, so waking it
    /// is enough.
    pub fn nudge_admission(&self) {
        self.waker.wake();
    }

    /// Asks the I/O thread to cancel a call (its flag must already be set).
    pub fn cancel(&self, call_id: u64) {
        if self.tx.send(Cmd::Cancel(call_id)).is_ok() {
            self.waker.wake();
        }
    }

    /// Whether the I/O thread runs (not shut down).
    pub fn is_running(&self) -> bool {
        !self.stop.load(Ordering::Acquire)
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
    /// Since when it has been waiting, for aging: when it became ready, or earlier when its
    /// caller had already waited for room (see `CallOptions::waiting_since`).
    waiting_since: Instant,
    /// Priority levels gained by waiting (see [`EndpointQueue::age`]).
    boost: u32,
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
        self.rank()
            .cmp(&o.rank())
            .then_with(|| o.service.cmp(&self.service))
            .then_with(|| o.seq.cmp(&self.seq))
    }
}

impl Queued {
    /// The priority the queue orders by: the call's own, raised by aging.
    fn rank(&self) -> i64 {
        i64::from(self.priority) + i64::from(self.boost)
    }

    /// [`Queued::rank`] as a priority (for room claims), saturated.
    fn effective_priority(&self) -> i32 {
        self.rank().clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
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
    /// The head is held back: the free slots are kept for agents that claimed room on the
    /// endpoint (see `IoLoop::admit`); a release of that room wakes the loop.
    held_for_room: bool,
    /// When the aging of `ready` was last brought up to date.
    aged_at: Instant,
}

impl EndpointQueue {
    fn new(limiter: Limiter) -> EndpointQueue {
        EndpointQueue {
            limiter,
            ready: BinaryHeap::new(),
            delayed: Vec::new(),
            blocked_until: None,
            held_for_room: false,
            aged_at: Instant::now(),
        }
    }

    /// Aging: a call gains a priority level for each `limit` it has waited since it became
    /// ready, so a steady flow of more urgent calls delays it by a bounded time (about the
    /// difference of priorities, plus one, times `limit`, when the endpoint keeps up; longer
    /// under a backlog, whose calls age too) rather than forever, while calls
    /// queued at about the same time keep their priority order. The levels are brought up to
    /// date, and the heap rebuilt if any changed, at most every quarter of `limit` (one pass
    /// over the queue).
    fn age(&mut self, now: Instant, limit: Duration) {
        if now.saturating_duration_since(self.aged_at) < limit / 4 || self.ready.is_empty() {
            return;
        }
        self.aged_at = now;
        let level =
            |it: &Queued| aging_levels(now.saturating_duration_since(it.waiting_since), limit);
        if self.ready.iter().all(|it| level(it) == it.boost) {
            return;
        }
        let mut items = std::mem::take(&mut self.ready).into_vec();
        for it in &mut items {
            it.boost = level(it);
        }
        self.ready = BinaryHeap::from(items);
    }
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
    jitter: Jitter,
    last_tick: Instant,
    /// Shared with the [`Engine`] (see [`Timers`]).
    timers: Arc<Timers>,
    /// A concurrency slot was freed while calls waited for one: the next pass admits at once
    /// rather than after the loop's sleep (up to a second when nothing else is in flight).
    admit_now: bool,
    /// Easy handles ready for reuse, still configured for their endpoint and mode (newest
    /// last; emptied after a quiet second).
    idle_easy: Vec<IdleEasy>,
    /// When a transfer last ran.
    last_busy: Instant,
    poller: Poller,
    /// Aging of calls waiting for admission (see [`EndpointQueue::age`]); none: priority only.
    starvation_limit: Option<Duration>,
}

fn endpoint_key(call: &CallInner) -> usize {
    Arc::as_ptr(&call.endpoint) as usize
}

impl IoLoop {
    fn new(rx: Receiver<Cmd>, stop: Arc<AtomicBool>, waker: Arc<Waker>, poller: Poller) -> IoLoop {
        let epoch = Instant::now();
        let epfd = poller.raw();
        Poller::set(epfd, waker.fd(), WAKER_TAG, true, false);
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
            jitter: Jitter::new(),
            last_tick: Instant::now(),
            timers: Arc::default(),
            admit_now: false,
            starvation_limit: None,
            idle_easy: Vec::new(),
            last_busy: Instant::now(),
        }
    }

    fn run(mut self) {
        let mut ready: Vec<Ready> = Vec::new();
        loop {
            if self.stop.load(Ordering::Acquire) {
                self.shutdown_all();
                return;
            }
            let wait = self.poll_timeout(Instant::now());
            #[cfg(debug_assertions)]
            self.assert_no_missed_admission();
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
                    Cmd::SubmitAt(call, at) => self.enqueue(call, at),
                    Cmd::Cancel(id) => self.cancel(id),
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
        // Run outside the table's lock: a timer may arm or disarm others.
        for f in self.timers.take_due(now) {
            // A panicking timer must not take the I/O thread down.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
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

    /// Checked before every sleep (debug builds, so the whole test suite runs it): a queued
    /// call is never left waiting for a wake-up that will not come. Its queue either admits at
    /// once (`admit_now`), or is blocked until a time the sleep is bounded by, or waits for a
    /// concurrency slot that a transfer in flight will free (which sets `admit_now`). A queue
    /// with a free slot, no block and a call ready would sleep the loop's full second: the
    /// stall fixed in 8cfcd94, and any like it an added wait would bring.
    #[cfg(debug_assertions)]
    fn assert_no_missed_admission(&self) {
        if self.admit_now {
            return;
        }
        for q in self.queues.values() {
            // A queue held for room is woken when the room is given back.
            if q.ready.is_empty() || q.blocked_until.is_some() || q.held_for_room {
                continue;
            }
            assert!(
                !q.limiter.has_free_slot() && q.limiter.in_flight() > 0,
                "I/O loop about to sleep with {} call(s) ready, no block, and {} in flight of the \
                 endpoint's concurrency limit: nothing would wake it to admit them",
                q.ready.len(),
                q.limiter.in_flight()
            );
        }
    }

    fn poll_timeout(&self, now: Instant) -> Duration {
        if self.admit_now {
            return Duration::ZERO;
        }
        let mut wait = MAX_SLEEP;
        if !self.by_call.is_empty() {
            wait = wait.min(TIMEOUT_TICK);
        }
        if let Some(at) = self.timers.next_due() {
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
            // A head held for room may rise above the claims by aging: look again then (its
            // levels are refreshed every quarter limit).
            if let (true, Some(limit)) = (q.held_for_room, self.starvation_limit) {
                wait = wait.min(limit / 4);
            }
        }
        wait
    }

    fn enqueue(&mut self, call: Arc<CallInner>, ready_at: Instant) {
        let key = endpoint_key(&call);
        let limits = call.endpoint.config.limits;
        let q = self
            .queues
            .entry(key)
            .or_insert_with(|| EndpointQueue::new(Limiter::new(limits)));
        self.seq += 1;
        let mut item = Queued {
            priority: call.priority,
            service: call.service,
            seq: self.seq,
            ready_at,
            waiting_since: call.waiting_since.map_or(ready_at, |w| w.min(ready_at)),
            boost: 0,
            call,
        };
        // A call whose caller already waited (see `CallOptions::waiting_since`) starts with the
        // levels of that wait, not at the next refresh.
        if let Some(limit) = self.starvation_limit {
            item.boost = aging_levels(
                ready_at.saturating_duration_since(item.waiting_since),
                limit,
            );
        }
        if ready_at > Instant::now() {
            q.delayed.push(item);
        } else {
            q.ready.push(item);
            // Queued after this pass's admission (a retry without backoff, say): the next
            // pass admits it at once rather than after the loop's sleep.
            self.admit_now = true;
        }
    }

    fn admit(&mut self, now: Instant) {
        self.admit_now = false;
        let keys: Vec<usize> = self.queues.keys().copied().collect();
        let mut again = false;
        for key in keys {
            let mut preempt_for = None;
            let mut waiting = None;
            let mut held = None;
            let mut starts = Vec::new();
            let mut cancelled = Vec::new();
            {
                let q = self.queues.get_mut(&key).expect("queue");
                q.held_for_room = false;
                let (due, later): (Vec<_>, Vec<_>) =
                    q.delayed.drain(..).partition(|d| d.ready_at <= now);
                q.delayed = later;
                q.ready.extend(due);
                if let Some(limit) = self.starvation_limit {
                    q.age(now, limit);
                }
                if matches!(q.blocked_until, Some(t) if t > now) {
                    continue;
                }
                q.blocked_until = None;
                // What the server told callers on other threads (the caller-thread path) holds
                // here too.
                if let Some(top) = q.ready.peek() {
                    if let Some(until) = top.call.endpoint.server_block.until(now) {
                        q.limiter.block_until(until);
                    }
                }
                while let Some(top) = q.ready.peek() {
                    if top.call.cancel_requested() {
                        cancelled.push(q.ready.pop().expect("peeked").call);
                        continue;
                    }
                    // Token-aware preemption, first tier, for calls not started: a queued call is
                    // at a safe point. While more urgent agents hold room on the endpoint, a less
                    // urgent call does not take the slots they may need for their next calls
                    // (one per claimant, less their calls in flight); the rest of the endpoint
                    // stays in use.
                    // (A call that aging has raised is held only by claims above its raised
                    // priority.)
                    let p = top.effective_priority();
                    let room = top.call.endpoint.room.claims_above(p);
                    let concurrency = top.call.endpoint.config.limits.concurrency;
                    if room.0 > 0 && concurrency > 0 && top.call.pausable {
                        let urgent_in_flight = self
                            .slots
                            .iter()
                            .flatten()
                            .filter(|a| a.endpoint_key == key && a.call.priority > p)
                            .count();
                        let reserve = room.0.saturating_sub(urgent_in_flight) as u32;
                        let free = concurrency.saturating_sub(q.limiter.in_flight());
                        // (No free slot at all is the limiter's usual wait, below.)
                        if free > 0 && free <= reserve {
                            held = Some((top.call.clone(), room.1));
                            q.held_for_room = true;
                            break;
                        }
                    }
                    let est = estimate_tokens(&top.call);
                    match q.limiter.try_admit(now, est, top.call.id) {
                        Ok(()) => starts.push(q.ready.pop().expect("peeked").call),
                        Err(until) => {
                            waiting = Some(top.call.clone());
                            q.blocked_until = until;
                            if until.is_none() {
                                preempt_for = Some(top.call.priority);
                            }
                            break;
                        }
                    }
                }
            }
            // Token-aware preemption, first tier: the head's agent claims room on the endpoint,
            // and less urgent agents pause at their next safe point (see `super::room`).
            if let Some(call) = waiting {
                call.waiting_for_room();
            }
            if let Some((call, by)) = held {
                call.held_for_room(by);
            }
            // Second tier: the head waits for a concurrency slot that a less urgent,
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
        let easy = match build_easy(pooled, &call, snapshot.as_deref(), fresh) {
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
                call.admitted();
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
            // A freed slot lets the head of the queue try again at the next admission pass,
            // which comes at once.
            q.limiter.release(call_id, actual_tokens);
            self.admit_now |= !q.ready.is_empty();
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
                let c = easy.get_mut().take();
                if reusable_after(&call.endpoint.config, completed)
                    && self.idle_easy.len() < EASY_POOL
                {
                    forget_body(&mut easy);
                    self.idle_easy.push(IdleEasy {
                        endpoint: call.endpoint.clone(),
                        stream: call.request.stream,
                        easy,
                    });
                }
                c
            }
            // The handle could not be detached; the call still must finish.
            Err(_) => Collector::empty(),
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
            if let Some(err) = attempt_timeout(&a.call, a.handle.get_ref(), a.started, now) {
                expired.push((slot, err));
            }
        }
        for (slot, err) in expired {
            let Some((call, key, c)) = self.take_slot(slot, false) else {
                continue;
            };
            call.endpoint.observe_latency(c.started.elapsed());
            let verdict = failed_attempt(&c, err, true);
            self.apply(call, key, verdict);
        }
    }

    fn finish_transfer(&mut self, slot: usize, result: std::result::Result<(), curl::Error>) {
        let Some((call, key, c)) = self.take_slot(slot, result.is_ok()) else {
            return;
        };
        let now = Instant::now();
        let info = rate_limit_info(&c.headers, SystemTime::now());
        if let Some(q) = self.queues.get_mut(&key) {
            q.limiter.observe(now, &info);
        }
        call.endpoint.server_block.observe(now, &info);
        let verdict = judge(&call, &c, result);
        self.apply(call, key, verdict);
    }

    /// Acts on an attempt's verdict: finish the call, or queue its retry.
    fn apply(&mut self, call: Arc<CallInner>, key: usize, verdict: Verdict) {
        match verdict {
            Verdict::Success(r) => {
                let actual = super::transfer::succeed(&call, r);
                self.release(key, call.id, actual);
            }
            Verdict::Fail(e) => {
                self.release(key, call.id, None);
                finish_call(&call, Err(e));
            }
            Verdict::Retry {
                err,
                after,
                blocks_endpoint,
            } => {
                self.release(key, call.id, None);
                if let (true, Some(after)) = (blocks_endpoint, after) {
                    let until = Instant::now() + after;
                    call.endpoint.server_block.extend(until);
                    if let Some(q) = self.queues.get_mut(&key) {
                        q.limiter.block_until(until);
                    }
                }
                match plan_retry(&call, err, after, self.jitter.next01()) {
                    Ok(d) => self.enqueue(call, Instant::now() + d),
                    Err(e) => finish_call(&call, Err(e)),
                }
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
        // Dropped outside the lock (what they hold may take locks of its own).
        let pending = std::mem::take(&mut *self.timers.0.lock());
        drop(pending);
        while let Ok(cmd) = self.rx.try_recv() {
            if let Cmd::Submit(call) | Cmd::SubmitAt(call, _) = cmd {
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

fn estimate_tokens(call: &CallInner) -> u64 {
    let out = call
        .request
        .max_tokens
        .unwrap_or(call.endpoint.config.max_output_tokens) as usize;
    ((call.prompt_chars / 4) + out) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its drops: what a timer owns goes when the timer runs or is cancelled.
    struct Owned(Arc<AtomicUsize>);
    impl Drop for Owned {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn wait_until(what: impl Fn() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// An I/O loop not running (its commands' sender dropped), for driving its parts by hand.
    fn idle_loop() -> IoLoop {
        let (_tx, rx) = crossbeam_channel::unbounded();
        IoLoop::new(
            rx,
            Arc::new(AtomicBool::new(false)),
            Arc::new(Waker::new().unwrap()),
            Poller::new().unwrap(),
        )
    }

    /// A hub with endpoint "e" (one concurrency slot, nothing listening), and the endpoint.
    fn one_slot_endpoint() -> (
        crate::model::hub::ModelHub,
        Arc<crate::model::hub::EndpointState>,
    ) {
        let hub = crate::model::hub::ModelHub::new("test-io");
        hub.add_endpoint_json(
            r#"{"name":"e","provider":"openai","base_url":"http://127.0.0.1:9/v1","model":"m","limits":{"concurrency":1}}"#,
            false,
        )
        .unwrap();
        let ep = hub.endpoint("e").unwrap();
        (hub, ep)
    }

    #[test]
    fn a_waiting_call_gains_a_priority_level_per_starvation_limit() {
        let (hub, ep) = one_slot_endpoint();
        // (Ahead of the clock, so subtracting the waits never goes before the clock's start.)
        let now = Instant::now() + Duration::from_secs(10);
        let item = |priority: i32, seq: u64, waited_ms: u64| Queued {
            priority,
            service: 0,
            seq,
            ready_at: now - Duration::from_millis(waited_ms),
            waiting_since: now - Duration::from_millis(waited_ms),
            boost: 0,
            call: hub.new_call_to(
                ep.clone(),
                crate::model::types::ChatRequest::default(),
                crate::model::call::CallOptions::default(),
            ),
        };
        let mut q = EndpointQueue::new(Limiter::new(ep.config.limits));
        q.aged_at = now - Duration::from_secs(1);
        // (priority, seq, waited): 9 s at priority 1 is level 10; 3.5 s at 5 is 8; 2.5 s at 7
        // is 9 (ties with a fresh 9, which came later); 0.5 s at 1 stays 1.
        for (p, seq, waited) in [(1, 1, 9_000), (5, 2, 3_500), (7, 3, 2_500), (1, 4, 500)] {
            q.ready.push(item(p, seq, waited));
        }
        q.ready.push(item(9, 5, 0));
        q.ready.push(item(8, 6, 0));
        let limit = Duration::from_secs(1);
        q.age(now, limit);
        let order: Vec<u64> = std::iter::from_fn(|| q.ready.pop().map(|i| i.seq)).collect();
        assert_eq!(order, vec![1, 3, 5, 2, 6, 4]);
        // Brought up to date at most every quarter of the limit.
        q.ready.push(item(1, 7, 5_000));
        q.ready.push(item(3, 8, 0));
        q.age(now + limit / 8, limit);
        assert_eq!(q.ready.peek().unwrap().seq, 8, "not aged again yet");
        q.age(now + limit / 2, limit);
        assert_eq!(
            q.ready.peek().unwrap().seq,
            7,
            "5 s at priority 1 is level 6"
        );
    }

    /// A call whose caller already waited for room (an agent that went on from a pause by
    /// aging) is queued with the levels of that wait, so a claim it has aged past does not
    /// hold it again.
    #[test]
    fn a_call_queued_after_its_caller_waited_starts_with_that_waits_levels() {
        let (hub, ep) = one_slot_endpoint();
        let now = Instant::now();
        let call = |waiting_since| {
            hub.new_call_to(
                ep.clone(),
                crate::model::types::ChatRequest::default(),
                crate::model::call::CallOptions {
                    priority: 1,
                    waiting_since,
                    ..Default::default()
                },
            )
        };
        let mut io = idle_loop();
        io.starvation_limit = Some(Duration::from_millis(200));
        let before = now
            .checked_sub(Duration::from_millis(1_700))
            .expect("uptime");
        let (fresh, waited) = (call(None), call(Some(before)));
        io.enqueue(fresh.clone(), now);
        io.enqueue(waited.clone(), now);
        let q = io.queues.get_mut(&endpoint_key(&fresh)).unwrap();
        let top = q.ready.peek().unwrap();
        assert_eq!(top.call.id, waited.id);
        assert_eq!((top.boost, top.effective_priority()), (8, 9));
        q.ready.pop();
        assert_eq!(q.ready.peek().unwrap().boost, 0);
    }

    /// Calls waiting for an endpoint's concurrency slot are admitted as soon as one is freed:
    /// the loop does not sleep first (it used to, up to a second when no other transfer was in
    /// flight to wake it).
    #[test]
    fn a_slot_freed_while_calls_wait_is_given_out_without_sleeping() {
        let (hub, ep) = one_slot_endpoint();
        let call = || {
            hub.new_call_to(
                ep.clone(),
                crate::model::types::ChatRequest::default(),
                crate::model::call::CallOptions::default(),
            )
        };
        let mut io = idle_loop();
        let (a, b) = (call(), call());
        let key = endpoint_key(&a);
        let now = Instant::now();
        io.enqueue(a.clone(), now);
        io.enqueue(b.clone(), now);
        assert!(
            io.admit_now,
            "calls queued ready are admitted at the next pass"
        );
        // `a` holds the one slot (as an admission pass would have given it), `b` waits.
        io.admit_now = false;
        let q = io.queues.get_mut(&key).unwrap();
        q.limiter.try_admit(now, 1, a.id).unwrap();
        assert_eq!(q.ready.pop().unwrap().call.id, a.id);
        assert_eq!(
            q.limiter.try_admit(now, 1, b.id),
            Err(None),
            "no slot for b"
        );
        assert_eq!(io.poll_timeout(now), MAX_SLEEP, "nothing to do but wait");
        // `a` ends: the next pass comes at once and gives its slot to `b`.
        io.release(key, a.id, None);
        assert_eq!(io.poll_timeout(now), Duration::ZERO);
        io.admit(Instant::now());
        assert!(io.by_call.contains_key(&b.id), "b started");
        assert!(!io.admit_now, "nothing more waits for a slot");
        io.shutdown_all();
    }

    #[test]
    fn a_cancelled_timer_never_runs_and_lets_go_of_what_it_holds() {
        let engine = Engine::start("test-io", None).unwrap();
        let (ran, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (r, owned) = (ran.clone(), Owned(dropped.clone()));
        let id = engine
            .schedule(
                Instant::now() + Duration::from_secs(30),
                Box::new(move || {
                    let _owned = owned;
                    r.fetch_add(1, Ordering::SeqCst);
                }),
            )
            .unwrap();
        engine.cancel_timer(id);
        // A timer due now wakes the thread, which takes the cancellation with it.
        let (r2, due) = (ran.clone(), Arc::new(AtomicUsize::new(0)));
        let d2 = due.clone();
        let id2 = engine
            .schedule(
                Instant::now(),
                Box::new(move || {
                    d2.fetch_add(1, Ordering::SeqCst);
                    let _ = &r2;
                }),
            )
            .unwrap();
        assert_ne!(id, id2);
        assert!(wait_until(|| due.load(Ordering::SeqCst) == 1));
        assert!(wait_until(|| dropped.load(Ordering::SeqCst) == 1));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        // Cancelling a timer that has run changes nothing.
        engine.cancel_timer(id2);
        engine.shutdown();
        assert_eq!(due.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn every_cancelled_timer_lets_go_of_what_it_holds() {
        let engine = Engine::start("test-io", None).unwrap();
        let dropped = Arc::new(AtomicUsize::new(0));
        let later = Instant::now() + Duration::from_secs(30);
        for _ in 0..1000 {
            let owned = Owned(dropped.clone());
            let id = engine
                .schedule(later, Box::new(move || drop(owned)))
                .unwrap();
            engine.cancel_timer(id);
        }
        let due = Arc::new(AtomicUsize::new(0));
        let d2 = due.clone();
        engine
            .schedule(
                Instant::now(),
                Box::new(move || {
                    d2.fetch_add(1, Ordering::SeqCst);
                }),
            )
            .unwrap();
        assert!(wait_until(|| due.load(Ordering::SeqCst) == 1));
        assert!(wait_until(|| dropped.load(Ordering::SeqCst) == 1000));
        engine.shutdown();
    }
}
