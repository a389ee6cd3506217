//! Waiting on a condition variable with an optional deadline, the one shape every blocking
//! call here has (`None` waits without limit).

use parking_lot::{Condvar, MutexGuard};
use std::time::Instant;

/// Waits on `cond` with `guard` until woken or `deadline` passes (`None`: no limit). Returns
/// whether the deadline passed (never for `None`). Callers re-check their condition either way:
/// wake-ups may be spurious.
pub(crate) fn wait<T: ?Sized>(
    cond: &Condvar,
    guard: &mut MutexGuard<'_, T>,
    deadline: Option<Instant>,
) -> bool {
    match deadline {
        Some(d) => cond.wait_until(guard, d).timed_out(),
        None => {
            cond.wait(guard);
            false
        }
    }
}
