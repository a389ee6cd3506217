//! How a caller waiting in [`Agent::run_turn`](super::Agent::run_turn) learns that its
//! message's turn ended: a one-shot slot the agent fills when the turn ends.
//!
//! A mutex and condition variable rather than a channel: the waiter is often a host thread
//! that the library did not create, and blocking on a channel would leave thread-local state
//! behind on it.

use crate::error::Status;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What became of the message.
#[derive(Debug, PartialEq)]
pub enum TurnOutcome {
    /// Its turn ended with this status and text (the answer, or the failure's message).
    Ended(Status, String),
    /// It was dropped before its turn ended (the agent was freed).
    Dropped,
}

#[derive(Default)]
struct Slot {
    outcome: Mutex<Option<TurnOutcome>>,
    cond: Condvar,
    /// Set (under the lock) with the outcome: a look without the lock.
    answered: AtomicBool,
}

impl Slot {
    fn set(&self, outcome: TurnOutcome) {
        let mut o = self.outcome.lock();
        if o.is_none() {
            *o = Some(outcome);
            self.answered.store(true, Ordering::Release);
            self.cond.notify_all();
        }
    }
}

/// The agent's end: travels with the message and its turn. Dropped unanswered, it tells the
/// waiter the message is gone, so a wait never outlives its message.
pub struct TurnDone(Arc<Slot>);

impl TurnDone {
    /// Reports how the turn ended.
    pub fn answer(self, status: Status, text: String) {
        self.0.set(TurnOutcome::Ended(status, text));
    }
}

impl Drop for TurnDone {
    fn drop(&mut self) {
        self.0.set(TurnOutcome::Dropped);
    }
}

/// The caller's end.
pub struct TurnWaiter(Arc<Slot>);

impl TurnWaiter {
    /// A connected pair.
    pub fn new() -> (TurnDone, TurnWaiter) {
        let slot = Arc::new(Slot::default());
        (TurnDone(slot.clone()), TurnWaiter(slot))
    }

    /// Whether the outcome has come in (without waiting; still true once taken).
    pub fn is_answered(&self) -> bool {
        self.0.answered.load(Ordering::Acquire)
    }

    /// Waits for the outcome until `deadline` (`None`: no limit); `None` when it passed first.
    pub fn wait(&self, deadline: Option<Instant>) -> Option<TurnOutcome> {
        let mut o = self.0.outcome.lock();
        while o.is_none() {
            if crate::deadline::wait(&self.0.cond, &mut o, deadline) {
                break;
            }
        }
        o.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn answered_dropped_and_timed_out() {
        let (done, waiter) = TurnWaiter::new();
        let t = std::thread::spawn(move || done.answer(Status::Ok, "hi".into()));
        assert_eq!(
            waiter.wait(None),
            Some(TurnOutcome::Ended(Status::Ok, "hi".into()))
        );
        t.join().unwrap();
        let (done, waiter) = TurnWaiter::new();
        drop(done);
        assert_eq!(waiter.wait(None), Some(TurnOutcome::Dropped));
        let (_done, waiter) = TurnWaiter::new();
        let t0 = Instant::now();
        assert_eq!(
            waiter.wait(Some(Instant::now() + Duration::from_millis(30))),
            None
        );
        assert!(t0.elapsed() >= Duration::from_millis(30));
    }
}
