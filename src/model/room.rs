//! Room on an endpoint for urgent agents: the first tier of token-aware preemption.
//!
//! An agent *claims room* on its endpoint when its model call cannot be admitted (the
//! endpoint's concurrency or token budget is taken) or when its context nears its limit (a
//! large call that should not wait behind others). Until the claim is released (when that
//! agent's turn ends, or once its tools have run for the endpoint's claim grace, about as long
//! as a model call there takes), every preemptible agent of lower priority on the same
//! endpoint pauses at its next safe point:
//!
//! - before it would start another model call: it asks [`Room::wait_if_claimed_above`], which
//!   registers a wake-up and says by whom it is held. Releasing the last claim above a waiting
//!   agent's priority runs the wake-ups (outside the lock); the woken agents look again and go
//!   on, or wait again under a newer claim;
//! - or with its call queued, not started: the I/O thread keeps that call from taking the
//!   endpoint's free slots the claimants may need for their next calls (one per claimant, less
//!   their calls in flight), and admits it when the room is given back.
//!
//! A paused agent ages: it gains a priority level for each starvation limit it has been
//! paused, and goes on once no claim is above that (see `Agent::pause_at_safe_point`).
//!
//! Pausing frees nothing already in flight. When the urgent call still cannot be admitted,
//! the second tier applies (the I/O thread cancels a less urgent stream and keeps its output
//! as a snapshot, see `engine::IoLoop::preempt_one`).

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI32, Ordering};

/// A function that wakes one paused agent (schedules it to look again).
pub type Wake = Box<dyn FnOnce() + Send>;

/// No claim: below every priority an agent can have.
const NONE: i32 = i32::MIN;

/// The claims on one endpoint and the agents paused under them.
pub struct Room {
    /// The highest priority holding a claim ([`NONE`] for none): the one load an agent's safe
    /// point costs when nothing is claimed.
    top: AtomicI32,
    inner: Mutex<Claims>,
}

/// Thousands of agents may claim and pause at once (a busy endpoint): every operation is
/// logarithmic or constant in their number.
#[derive(Default)]
struct Claims {
    /// Each claimant's priority.
    held: HashMap<u64, i32>,
    /// How many claims each priority has (the highest is the room's top).
    by_priority: BTreeMap<i32, u32>,
    /// Each paused agent's wake-up (the latest kept).
    paused: HashMap<u64, Wake>,
}

impl Claims {
    fn top(&self) -> i32 {
        self.by_priority.keys().next_back().copied().unwrap_or(NONE)
    }

    fn count(&mut self, priority: i32, add: bool) {
        if add {
            *self.by_priority.entry(priority).or_insert(0) += 1;
        } else if let Some(n) = self.by_priority.get_mut(&priority) {
            *n -= 1;
            if *n == 0 {
                self.by_priority.remove(&priority);
            }
        }
    }
}

impl Default for Room {
    fn default() -> Room {
        Room {
            top: AtomicI32::new(NONE),
            inner: Mutex::new(Claims::default()),
        }
    }
}

impl Room {
    /// `claimant` (an agent's handle) claims room at `priority`. Claiming again keeps one
    /// claim, at the higher priority.
    pub fn claim(&self, claimant: u64, priority: i32) {
        let mut c = self.inner.lock();
        let old = c.held.get(&claimant).copied();
        if old.is_some_and(|p| p >= priority) {
            return;
        }
        c.held.insert(claimant, priority);
        if let Some(p) = old {
            c.count(p, false);
        }
        c.count(priority, true);
        self.top.store(c.top(), Ordering::Release);
    }

    /// Drops `claimant`'s claim (nothing if it holds none). Agents paused under a claim that
    /// is now gone, or lowered, are woken on this thread, after the lock is let go.
    pub fn release(&self, claimant: u64) {
        let wakes = {
            let mut c = self.inner.lock();
            let Some(p) = c.held.remove(&claimant) else {
                return;
            };
            c.count(p, false);
            let top = c.top();
            self.top.store(top, Ordering::Release);
            if top >= p {
                // An equal or higher claim still holds: no one paused may go on yet.
                return;
            }
            // Every paused agent looks again: those still below a claim wait again.
            std::mem::take(&mut c.paused)
        };
        for (_, wake) in wakes {
            wake();
        }
    }

    /// How many claimants hold a claim above `priority`, and the highest claiming priority
    /// (`(0, _)` for none).
    pub fn claims_above(&self, priority: i32) -> (usize, i32) {
        if !self.claimed_above(priority) {
            return (0, NONE);
        }
        let c = self.inner.lock();
        let n = c
            .by_priority
            .range(priority.saturating_add(1)..)
            .map(|(_, &n)| n as usize)
            .sum();
        (n, c.top())
    }

    /// Whether a claim above `priority` is held (a lock-free look, for the common case).
    pub fn claimed_above(&self, priority: i32) -> bool {
        self.top.load(Ordering::Acquire) > priority
    }

    /// At a safe point of `agent` (priority `priority`): if a claim above `priority` is held,
    /// keeps `wake` to run when that changes and returns the highest claiming priority (the
    /// agent pauses); otherwise returns `None` and drops `wake` (the agent goes on). Checked
    /// and registered under one lock, so a release cannot slip in between.
    pub fn wait_if_claimed_above(&self, agent: u64, priority: i32, wake: Wake) -> Option<i32> {
        let mut c = self.inner.lock();
        let top = c.top();
        if top <= priority {
            return None;
        }
        c.paused.insert(agent, wake);
        Some(top)
    }

    /// Drops `agent`'s wake-up, if it has one (it went on without waiting for a release).
    pub fn forget(&self, agent: u64) {
        self.inner.lock().paused.remove(&agent);
    }

    /// How many agents are paused here (for tests and stats).
    pub fn paused(&self) -> usize {
        self.inner.lock().paused.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    fn counter() -> (Arc<AtomicUsize>, impl Fn() -> Wake) {
        let n = Arc::new(AtomicUsize::new(0));
        let m = n.clone();
        (n, move || {
            let m = m.clone();
            Box::new(move || {
                m.fetch_add(1, Ordering::SeqCst);
            })
        })
    }

    #[test]
    fn only_agents_below_a_claim_pause_and_a_release_wakes_them_once() {
        let room = Room::default();
        let (woken, wake) = counter();
        assert!(!room.claimed_above(i32::MIN + 1));
        assert_eq!(room.wait_if_claimed_above(1, 0, wake()), None, "no claim");
        room.claim(100, 5);
        assert!(room.claimed_above(4) && !room.claimed_above(5));
        assert_eq!(
            room.wait_if_claimed_above(2, 5, wake()),
            None,
            "equal goes on"
        );
        assert_eq!(
            room.wait_if_claimed_above(3, 9, wake()),
            None,
            "higher goes on"
        );
        assert_eq!(room.wait_if_claimed_above(1, 0, wake()), Some(5));
        // Asking again while paused keeps one wake-up per agent.
        assert_eq!(room.wait_if_claimed_above(1, 0, wake()), Some(5));
        assert_eq!(room.paused(), 1);
        assert_eq!(woken.load(Ordering::SeqCst), 0);
        room.release(100);
        assert_eq!(woken.load(Ordering::SeqCst), 1, "woken once");
        assert_eq!(room.paused(), 0);
        assert!(!room.claimed_above(i32::MIN + 1));
        room.release(100);
        assert_eq!(
            woken.load(Ordering::SeqCst),
            1,
            "a second release is nothing"
        );
    }

    #[test]
    fn a_forgotten_agent_is_not_woken() {
        let room = Room::default();
        let (woken, wake) = counter();
        room.claim(100, 5);
        assert_eq!(room.wait_if_claimed_above(1, 0, wake()), Some(5));
        assert_eq!(room.wait_if_claimed_above(2, 0, wake()), Some(5));
        // Agent 1 went on by itself (aging raised it above the claim).
        room.forget(1);
        assert_eq!(room.paused(), 1);
        room.release(100);
        assert_eq!(woken.load(Ordering::SeqCst), 1, "only agent 2 is woken");
    }

    #[test]
    fn claims_stack_and_the_highest_holds_until_released() {
        let room = Room::default();
        let (woken, wake) = counter();
        room.claim(100, 5);
        room.claim(200, 8);
        room.claim(100, 3); // a claimant's claim keeps its higher priority
        assert_eq!(room.wait_if_claimed_above(1, 6, wake()), Some(8));
        // When the 8 goes, the paused agent (at 6) is woken to look again: the claim left (5)
        // is below it, so it goes on.
        room.release(200);
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        assert_eq!(room.wait_if_claimed_above(1, 6, wake()), None);
        assert_eq!(room.wait_if_claimed_above(2, 1, wake()), Some(5));
        room.release(100);
        assert_eq!(woken.load(Ordering::SeqCst), 2);
        assert!(!room.claimed_above(0));
    }

    #[test]
    fn a_wake_up_may_claim_or_wait_again_without_deadlock() {
        // Wake-ups run after the lock is let go: one that asks the room again must not hang.
        let room = Arc::new(Room::default());
        room.claim(100, 5);
        let r = room.clone();
        let again = Arc::new(AtomicUsize::new(0));
        let a = again.clone();
        let wake: Wake = Box::new(move || {
            r.claim(300, 7);
            let w: Wake = Box::new(|| {});
            if r.wait_if_claimed_above(1, 0, w).is_some() {
                a.fetch_add(1, Ordering::SeqCst);
            }
        });
        assert_eq!(room.wait_if_claimed_above(1, 0, wake), Some(5));
        room.release(100);
        assert_eq!(
            again.load(Ordering::SeqCst),
            1,
            "paused again under the new claim"
        );
        assert_eq!(room.paused(), 1);
    }
}
