//! The client-side limiter of one endpoint: requests per minute, tokens per minute and
//! concurrency, corrected by the usage and rate-limit headers the server reports.
//!
//! Owned by the I/O thread, so it needs no lock.

use super::endpoint::Limits;
use super::retry::RateLimitInfo;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

/// Admission state of one endpoint.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    /// (admitted at, tokens charged, call id) within the last minute; kept only when an RPM or
    /// TPM limit is set.
    window: VecDeque<(Instant, u64, u64)>,
    /// Tokens charged in the window.
    used: u64,
    /// Where each call's latest entry is: entries popped before it plus its position.
    index: HashMap<u64, u64>,
    /// Entries popped from the window so far.
    popped: u64,
    in_flight: u32,
    blocked_until: Option<Instant>,
}

impl Limiter {
    /// A limiter enforcing `limits` (zeros are unlimited).
    pub fn new(limits: Limits) -> Limiter {
        Limiter {
            limits,
            window: VecDeque::new(),
            used: 0,
            index: HashMap::new(),
            popped: 0,
            in_flight: 0,
            blocked_until: None,
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(t, n, id)) = self.window.front() {
            if now.duration_since(t) < WINDOW {
                break;
            }
            self.window.pop_front();
            self.used = self.used.saturating_sub(n);
            if self.index.get(&id) == Some(&self.popped) {
                self.index.remove(&id);
            }
            self.popped += 1;
        }
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Whether a concurrency slot is free (ignores the per-minute budgets).
    pub fn has_free_slot(&self) -> bool {
        self.limits.concurrency == 0 || self.in_flight < self.limits.concurrency
    }

    /// Admits a call estimated at `tokens`, or says when to try again. `Err(None)` means "when a
    /// call in flight finishes".
    pub fn try_admit(
        &mut self,
        now: Instant,
        tokens: u64,
        call_id: u64,
    ) -> Result<(), Option<Instant>> {
        self.expire(now);
        if let Some(until) = self.blocked_until {
            if now < until {
                return Err(Some(until));
            }
            self.blocked_until = None;
        }
        if !self.has_free_slot() {
            return Err(None);
        }
        if self.limits.rpm > 0 && self.window.len() as u64 >= self.limits.rpm as u64 {
            return Err(self.window.front().map(|&(t, _, _)| t + WINDOW));
        }
        if self.limits.tpm > 0 {
            let used = self.used;
            // A call larger than the whole budget is admitted alone rather than never.
            if used > 0 && used + tokens > self.limits.tpm {
                let mut freed = 0;
                for &(t, n, _) in &self.window {
                    freed += n;
                    if used - freed + tokens <= self.limits.tpm {
                        return Err(Some(t + WINDOW));
                    }
                }
                return Err(self.window.back().map(|&(t, _, _)| t + WINDOW));
            }
        }
        self.in_flight += 1;
        if self.limits.rpm > 0 || self.limits.tpm > 0 {
            self.index
                .insert(call_id, self.popped + self.window.len() as u64);
            self.used = self.used.saturating_add(tokens);
            self.window.push_back((now, tokens, call_id));
        }
        Ok(())
    }

    /// A call finished: frees its slot and replaces its estimate by the real token count.
    pub fn release(&mut self, call_id: u64, actual_tokens: Option<u64>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let (Some(actual), Some(&at)) = (actual_tokens, self.index.get(&call_id)) {
            if let Some(entry) = self.window.get_mut((at - self.popped) as usize) {
                self.used = self.used.saturating_sub(entry.1).saturating_add(actual);
                entry.1 = actual;
            }
        }
    }

    /// Applies what the server reported: an exhausted bucket blocks admission until its reset.
    pub fn observe(&mut self, now: Instant, info: &RateLimitInfo) {
        if let Some(reset) = exhausted_for(info) {
            self.block_until(now + reset);
        }
    }

    /// Blocks admission until `until` (after a 429 with `retry-after`).
    pub fn block_until(&mut self, until: Instant) {
        self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
    }
}

/// How long the server says to wait when it reports an exhausted request or token bucket.
fn exhausted_for(info: &RateLimitInfo) -> Option<Duration> {
    let exhausted = info.remaining_requests == Some(0) || info.remaining_tokens == Some(0);
    exhausted.then(|| info.reset_after.unwrap_or(Duration::from_secs(1)))
}

/// The process-wide origin of [`ServerBlock`] times.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Until when the server told everyone to wait before sending to an endpoint again (an
/// exhausted rate-limit bucket, a 429 with `retry-after`). Shared by every thread that sends
/// to the endpoint: the I/O thread's limiter and callers running calls on their own thread.
#[derive(Debug, Default)]
pub struct ServerBlock {
    /// Nanoseconds after [`epoch`]; 0 = never blocked.
    until_ns: AtomicU64,
}

impl ServerBlock {
    /// Blocks the endpoint until at least `until`.
    pub fn extend(&self, until: Instant) {
        let ns = until.saturating_duration_since(epoch()).as_nanos().max(1) as u64;
        self.until_ns.fetch_max(ns, Ordering::AcqRel);
    }

    /// Applies a response's rate-limit headers (see [`Limiter::observe`]).
    pub fn observe(&self, now: Instant, info: &RateLimitInfo) {
        if let Some(reset) = exhausted_for(info) {
            self.extend(now + reset);
        }
    }

    /// The end of the block, when it is still in the future.
    pub fn until(&self, now: Instant) -> Option<Instant> {
        let ns = self.until_ns.load(Ordering::Acquire);
        if ns == 0 {
            return None;
        }
        let until = epoch() + Duration::from_nanos(ns);
        (until > now).then_some(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_and_rpm() {
        let mut l = Limiter::new(Limits {
            rpm: 2,
            tpm: 0,
            concurrency: 1,
        });
        let t0 = Instant::now();
        assert!(l.try_admit(t0, 10, 1).is_ok());
        assert_eq!(l.try_admit(t0, 10, 2), Err(None));
        l.release(1, Some(5));
        assert!(l.try_admit(t0, 10, 2).is_ok());
        l.release(2, None);
        assert_eq!(l.try_admit(t0, 10, 3), Err(Some(t0 + WINDOW)));
        assert!(l.try_admit(t0 + WINDOW, 10, 3).is_ok());
    }

    #[test]
    fn retried_call_is_corrected_after_its_first_entry_expires() {
        let mut l = Limiter::new(Limits {
            rpm: 0,
            tpm: 100,
            concurrency: 0,
        });
        let t0 = Instant::now();
        assert!(l.try_admit(t0, 40, 1).is_ok());
        l.release(1, None); // failed attempt, retried later
        let t1 = t0 + Duration::from_secs(30);
        assert!(l.try_admit(t1, 40, 1).is_ok());
        assert!(l.try_admit(t1, 20, 2).is_ok());
        // The first attempt leaves the window; the retry's entry is still found.
        let t2 = t0 + WINDOW;
        assert!(l.try_admit(t2, 30, 3).is_ok());
        assert_eq!(l.used, 90);
        l.release(1, Some(5));
        assert_eq!(l.used, 55);
        assert!(
            l.try_admit(t2, 45, 4).is_ok(),
            "the correction freed budget"
        );
        assert_eq!(l.try_admit(t2, 10, 5), Err(Some(t1 + WINDOW)));
    }

    #[test]
    fn unlimited_endpoints_keep_no_window() {
        let mut l = Limiter::new(Limits {
            rpm: 0,
            tpm: 0,
            concurrency: 0,
        });
        let t0 = Instant::now();
        for id in 0..1000 {
            assert!(l.try_admit(t0, 10, id).is_ok());
        }
        assert!(l.window.is_empty() && l.index.is_empty());
        assert_eq!(l.in_flight(), 1000);
    }

    #[test]
    fn tpm_is_corrected_by_actual_usage() {
        let mut l = Limiter::new(Limits {
            rpm: 0,
            tpm: 100,
            concurrency: 0,
        });
        let t0 = Instant::now();
        assert!(l.try_admit(t0, 90, 1).is_ok());
        assert!(l.try_admit(t0, 20, 2).is_err());
        l.release(1, Some(30)); // the estimate was high
        assert!(l.try_admit(t0, 20, 2).is_ok());
        // A single call over the whole budget is still admitted when alone.
        let mut solo = Limiter::new(Limits {
            rpm: 0,
            tpm: 10,
            concurrency: 0,
        });
        assert!(solo.try_admit(t0, 50, 1).is_ok());
    }

    #[test]
    fn headers_block_until_reset() {
        let mut l = Limiter::new(Limits::default());
        let t0 = Instant::now();
        l.observe(
            t0,
            &RateLimitInfo {
                remaining_requests: Some(0),
                remaining_tokens: None,
                reset_after: Some(Duration::from_secs(2)),
            },
        );
        assert_eq!(
            l.try_admit(t0, 1, 1),
            Err(Some(t0 + Duration::from_secs(2)))
        );
        assert!(l.try_admit(t0 + Duration::from_secs(2), 1, 1).is_ok());
    }
}
