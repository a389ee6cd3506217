//! Synchronous calls driven on the caller's own thread.
//!
//! `agentos_request_run` blocks its caller for the whole call anyway. When nothing needs the
//! I/O thread's arbitration (the endpoint has no client-side limits and no server-imposed
//! wait, the call is not preemptible and not a response-cache candidate), the caller drives
//! the transfer itself: a curl multi handle (holding the connections) and an easy handle still
//! configured for the endpoint, reused across calls the way a raw libcurl loop reuses its
//! handle, with no thread hand-off. Each attempt is judged, retried, timed out and cancelled
//! exactly as on the I/O thread (see [`super::transfer`]); cancellation and runtime shutdown
//! wake the caller through `curl_multi_wakeup`.

use super::call::{cancelled_error, CallInner, Phase};
use super::hub::EndpointState;
use super::retry::rate_limit_info;
use super::transfer::{
    attempt_deadline, attempt_timeout, build_easy, failed_attempt, finish_call, forget_body, judge,
    plan_retry, reusable_after, succeed, Collector, Jitter, Verdict,
};
use crate::error::{Error, Status};
use curl::easy::Easy2;
use curl::multi::{Multi, MultiWaker};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Idle caller-side connections kept per runtime at most.
const IDLE_CONNS: usize = 16;
/// The longest one wait lasts (cancellation and shutdown wake the caller sooner).
const MAX_WAIT: Duration = Duration::from_secs(1);

/// A multi handle (and so a connection cache) plus an easy handle kept configured for one
/// endpoint.
struct DirectConn {
    endpoint: Arc<EndpointState>,
    multi: Multi,
    /// An easy handle still configured for the endpoint, and the mode (streamed or not) it
    /// is configured for.
    easy: Option<(Easy2<Collector>, bool)>,
}

// SAFETY: libcurl handles are not tied to a thread; they must only not be used by two threads
// at once. A `DirectConn` is used by the one caller that took it out of the pool, and the pool
// hands it to one caller at a time (it has no callbacks installed on the multi handle).
unsafe impl Send for DirectConn {}

/// Calls running on their callers' threads, and the connections kept for the next ones.
#[derive(Default)]
pub(crate) struct DirectCalls {
    idle: Mutex<Vec<DirectConn>>,
    /// Wakers of the calls running now that may sleep in poll, with their call ids (a few at
    /// a time: one per thread running a call, so a list beats a hashed map). A call registers
    /// only before it first sleeps (see [`Sleeper`]): one answered while its thread yields,
    /// looking at the cancel and shutdown flags each time, never takes the lock.
    running: Mutex<Vec<(u64, MultiWaker)>>,
    /// Threads yielding for a quick answer now (see [`SpinSlot`]).
    spinners: AtomicUsize,
}

/// Leave to wait for an answer by yielding the CPU. Only so many threads at once (half the
/// CPUs, at least one): many callers yielding at once keep the CPUs from the server they wait
/// for (measured: 16 threads on 2 vCPUs lost 5-25% of their calls per second), so the others
/// sleep in poll as before.
struct SpinSlot<'a>(&'a AtomicUsize);

impl<'a> SpinSlot<'a> {
    fn take(spinners: &'a AtomicUsize) -> Option<SpinSlot<'a>> {
        static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let max = *MAX.get_or_init(|| {
            std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
        });
        if spinners.fetch_add(1, Ordering::AcqRel) < max {
            Some(SpinSlot(spinners))
        } else {
            spinners.fetch_sub(1, Ordering::AcqRel);
            None
        }
    }
}

impl Drop for SpinSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl DirectCalls {
    /// Whether `call` may run on its caller's thread: nothing about it needs the I/O thread's
    /// admission queue (no RPM, TPM or concurrency limit, no server-imposed wait), it cannot be
    /// preempted, it is not a response-cache candidate, and it has not started.
    pub(crate) fn eligible(call: &CallInner) -> bool {
        let ep = &call.endpoint;
        let limits = ep.config.limits;
        limits.rpm == 0
            && limits.tpm == 0
            && limits.concurrency == 0
            && !call.preemptible
            && !call.cancel_requested()
            && call.cache_key.is_none()
            && ep.server_block.until(Instant::now()).is_none()
            && {
                let s = call.state.lock();
                s.attempts == 0 && s.phase == Phase::Queued
            }
    }

    /// Runs `call` on this thread; `shut_down` is the runtime's shutdown flag. With
    /// `retries_here`, the call runs to its end here, backing off between attempts; without,
    /// a retry is not waited for here: the call is returned (counted and queued) with its
    /// backoff, for the I/O thread to go on with.
    pub(crate) fn run(
        &self,
        call: &Arc<CallInner>,
        shut_down: &AtomicBool,
        retries_here: bool,
    ) -> Option<Duration> {
        let mut handed_over = None;
        let mut conn = self.checkout(&call.endpoint);
        let mut sleeper = Sleeper {
            calls: self,
            call: call.id,
            registered: false,
        };
        let mut jitter = None;
        loop {
            // Wait while the server has told everyone to hold off sending to the endpoint.
            let server_wait = call.endpoint.server_block.until(Instant::now());
            let verdict =
                match server_wait.and_then(|t| pause(&conn, call, shut_down, t, &mut sleeper)) {
                    Some(e) => Verdict::Fail(e),
                    None => attempt(&mut conn, call, shut_down, &self.spinners, &mut sleeper),
                };
            match verdict {
                Verdict::Success(r) => {
                    succeed(call, r);
                    break;
                }
                Verdict::Fail(e) => {
                    finish_call(call, Err(e));
                    break;
                }
                Verdict::Retry {
                    err,
                    after,
                    blocks_endpoint,
                } => {
                    if let (true, Some(after)) = (blocks_endpoint, after) {
                        call.endpoint.server_block.extend(Instant::now() + after);
                    }
                    let r = jitter.get_or_insert_with(Jitter::new).next01();
                    let stop = match plan_retry(call, err, after, r) {
                        Ok(delay) if !retries_here => {
                            handed_over = Some(delay);
                            break;
                        }
                        Ok(delay) => {
                            pause(&conn, call, shut_down, Instant::now() + delay, &mut sleeper)
                        }
                        Err(e) => Some(e),
                    };
                    if let Some(e) = stop {
                        finish_call(call, Err(e));
                        break;
                    }
                }
            }
        }
        drop(sleeper);
        self.checkin(conn, shut_down);
        handed_over
    }

    /// Wakes the caller running call `id`, if it runs on its caller's thread, so it sees a
    /// cancellation.
    pub(crate) fn wake(&self, id: u64) {
        if let Some((_, w)) = self.running.lock().iter().find(|(i, _)| *i == id) {
            let _ = w.wakeup();
        }
    }

    /// Wakes every caller-thread call (they then see the shutdown flag) and closes the idle
    /// connections.
    pub(crate) fn shutdown(&self) {
        for (_, w) in self.running.lock().iter() {
            let _ = w.wakeup();
        }
        self.idle.lock().clear();
    }

    /// A connection for `endpoint`: the most recent idle one for it, else a new one.
    fn checkout(&self, endpoint: &Arc<EndpointState>) -> DirectConn {
        let mut idle = self.idle.lock();
        match idle
            .iter()
            .rposition(|c| Arc::ptr_eq(&c.endpoint, endpoint))
        {
            Some(i) => idle.swap_remove(i),
            None => DirectConn {
                endpoint: endpoint.clone(),
                multi: Multi::new(),
                easy: None,
            },
        }
    }

    fn checkin(&self, conn: DirectConn, shut_down: &AtomicBool) {
        let mut idle = self.idle.lock();
        // Checked under the lock, so a connection never outlives a shutdown that cleared it.
        if shut_down.load(Ordering::Acquire) {
            return;
        }
        if idle.len() >= IDLE_CONNS {
            idle.remove(0);
        }
        idle.push(conn);
    }
}

/// A caller-thread call's registration for wake-ups (a cancellation, shutdown), made before
/// its thread first sleeps in poll and taken back when the call is done.
struct Sleeper<'a> {
    calls: &'a DirectCalls,
    call: u64,
    registered: bool,
}

impl Sleeper<'_> {
    /// Registers `multi`'s waker, the first time. Returns true when it did: the caller must
    /// look at the stop flags again before sleeping (a wake-up sent before the registration
    /// found nobody to wake).
    fn register(&mut self, multi: &Multi) -> bool {
        if self.registered {
            return false;
        }
        self.calls.running.lock().push((self.call, multi.waker()));
        self.registered = true;
        true
    }
}

impl Drop for Sleeper<'_> {
    fn drop(&mut self) {
        if self.registered {
            let mut running = self.calls.running.lock();
            if let Some(i) = running.iter().position(|(id, _)| *id == self.call) {
                running.swap_remove(i);
            }
        }
    }
}

/// Why a call must stop now, if it must: cancelled by its caller, or the runtime shut down.
fn stop_reason(call: &CallInner, shut_down: &AtomicBool, deltas: u64) -> Option<Error> {
    if call.cancel_requested() {
        Some(cancelled_error(&call.endpoint.config.name, deltas))
    } else if shut_down.load(Ordering::Acquire) {
        Some(Error::new(
            Status::Shutdown,
            "the runtime shut down during the call",
        ))
    } else {
        None
    }
}

/// Waits until `until`; returns early with the error to end the call with when it is
/// cancelled or the runtime shuts down (`None`: the time passed).
fn pause(
    conn: &DirectConn,
    call: &CallInner,
    shut_down: &AtomicBool,
    until: Instant,
    sleeper: &mut Sleeper<'_>,
) -> Option<Error> {
    loop {
        let deltas = call.state.lock().acc.deltas;
        if let Some(e) = stop_reason(call, shut_down, deltas) {
            return Some(e);
        }
        let now = Instant::now();
        if now >= until {
            return None;
        }
        if sleeper.register(&conn.multi) {
            continue;
        }
        // With no transfer added, curl_multi_poll just waits (or is woken).
        let _ = conn.multi.poll(&mut [], (until - now).min(MAX_WAIT));
    }
}

/// Makes one HTTP attempt of `call` on `conn` and judges it.
fn attempt(
    conn: &mut DirectConn,
    call: &Arc<CallInner>,
    shut_down: &AtomicBool,
    spinners: &AtomicUsize,
    sleeper: &mut Sleeper<'_>,
) -> Verdict {
    let ep = &call.endpoint.config;
    let stream = call.request.stream;
    let pooled = match conn.easy.take() {
        Some((e, mode)) if mode == stream => Some((e, true)),
        Some((mut e, _)) => {
            e.reset();
            Some((e, false))
        }
        None => None,
    };
    let easy = match build_easy(pooled, call, None, false) {
        Ok(e) => e,
        Err(e) => {
            return Verdict::Fail(Error::new(
                Status::Http,
                format!("endpoint \"{}\": cannot set up the request: {e}", ep.name),
            ))
        }
    };
    {
        let mut s = call.state.lock();
        s.phase = Phase::InFlight;
        s.attempts += 1;
    }
    let handle = match conn.multi.add2(easy) {
        Ok(h) => h,
        Err(e) => {
            return Verdict::Fail(Error::new(
                Status::Http,
                format!("endpoint \"{}\": curl refused the transfer: {e}", ep.name),
            ))
        }
    };
    let started = Instant::now();
    // An endpoint that answers in microseconds (a local server) usually has the answer moments
    // after the request went out. Sleeping in poll for it costs more than the wait on a small
    // machine: the wake-up tends to move this thread to another CPU (an inter-processor
    // interrupt, slow in a VM). Within the window, the thread yields the CPU instead (often to
    // the server itself, on the same CPU) and looks again; past it, it sleeps as usual. The
    // slot is taken when the first look finds no answer, and given back when the yielding ends.
    let window = call.endpoint.spin_window();
    let mut spin: Option<(Instant, Option<SpinSlot<'_>>)> = None;
    let mut result = None;
    // The attempt ended early: Ok(error) ends the call, Err(error) is a timeout to judge.
    let mut early: Option<std::result::Result<Error, Error>> = None;
    loop {
        if let Err(e) = conn.multi.perform() {
            early = Some(Ok(Error::new(
                Status::Internal,
                format!("curl multi error: {e}"),
            )));
            break;
        }
        conn.multi.messages(|m| {
            if let Some(r) = m.result_for2(&handle) {
                result = Some(r);
            }
        });
        if result.is_some() {
            break;
        }
        let now = Instant::now();
        let c = handle.get_ref();
        if let Some(e) = stop_reason(call, shut_down, c.meta.deltas) {
            early = Some(Ok(e));
            break;
        }
        if let Some(e) = attempt_timeout(call, c, started, now) {
            early = Some(Err(e));
            break;
        }
        if let Some(w) = window {
            let (until, slot) = spin.get_or_insert_with(|| (started + w, SpinSlot::take(spinners)));
            if slot.is_some() && now < *until {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
                continue;
            }
            *slot = None;
        }
        if sleeper.register(&conn.multi) {
            continue;
        }
        // A millisecond past the deadline, so the check above sees it passed.
        let wait = attempt_deadline(call, c, started).map_or(MAX_WAIT, |d| {
            (d.saturating_duration_since(now) + Duration::from_millis(1)).min(MAX_WAIT)
        });
        if let Err(e) = conn.multi.poll(&mut [], wait) {
            early = Some(Ok(Error::new(
                Status::Internal,
                format!("curl multi error: {e}"),
            )));
            break;
        }
    }
    let completed = matches!(result, Some(Ok(())));
    let mut easy = match conn.multi.remove2(handle) {
        Ok(easy) => easy,
        Err(e) => {
            // The transfer cannot be detached: this multi handle is unusable from now on.
            conn.multi = Multi::new();
            return Verdict::Fail(Error::new(
                Status::Internal,
                format!("endpoint \"{}\": curl multi error: {e}", ep.name),
            ));
        }
    };
    let c = easy.get_ref();
    let verdict = match (early, result) {
        (Some(Ok(e)), _) => Verdict::Fail(e),
        (Some(Err(timeout)), _) => {
            call.endpoint.observe_latency(c.started.elapsed());
            failed_attempt(c, timeout, true)
        }
        (None, Some(result)) => {
            let info = rate_limit_info(&c.headers, SystemTime::now());
            call.endpoint.server_block.observe(Instant::now(), &info);
            judge(call, c, result)
        }
        (None, None) => unreachable!("the loop ends with a result or an early stop"),
    };
    // The handle (and its collector's buffers) is kept for the next call, without the call;
    // what the answer was decoded into is released.
    easy.get_mut().call = None;
    easy.get_mut().reset_arena();
    if reusable_after(ep, completed) {
        forget_body(&mut easy);
        conn.easy = Some((easy, stream));
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_so_many_threads_yield_at_once_and_a_slot_comes_back_when_dropped() {
        let spinners = AtomicUsize::new(0);
        let max = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
        let held: Vec<SpinSlot<'_>> = (0..max)
            .map(|_| SpinSlot::take(&spinners).unwrap())
            .collect();
        assert!(
            SpinSlot::take(&spinners).is_none(),
            "past the cap: sleep instead"
        );
        assert_eq!(
            spinners.load(Ordering::Relaxed),
            max,
            "a refused take leaves no count"
        );
        drop(held);
        assert_eq!(spinners.load(Ordering::Relaxed), 0);
        assert!(SpinSlot::take(&spinners).is_some());
        assert_eq!(spinners.load(Ordering::Relaxed), 0, "dropped at once");
    }
}
