//! The priority run queue that the worker threads pop from.
//!
//! Order: higher `priority` first; within a priority, the lower `service` (attained service,
//! e.g. tokens consumed so far) first; then first-in, first-out. Closing the queue wakes every
//! blocked popper.

use parking_lot::{Condvar, Mutex};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A unit of work for a worker thread.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Where a job sits in the run order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunKey {
    /// Larger runs first.
    pub priority: i32,
    /// Attained service; smaller runs first within a priority.
    pub service: u64,
}

struct Entry {
    key: RunKey,
    seq: u64,
    job: Job,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // BinaryHeap is a max-heap: "greater" means "runs sooner".
    fn cmp(&self, other: &Self) -> Ordering {
        self.key
            .priority
            .cmp(&other.key.priority)
            .then_with(|| other.key.service.cmp(&self.key.service))
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

struct State {
    heap: BinaryHeap<Entry>,
    next_seq: u64,
    closed: bool,
}

/// A blocking, closable priority queue of [`Job`]s.
pub struct RunQueue {
    state: Mutex<State>,
    ready: Condvar,
}

/// Returned by [`RunQueue::push`] when the queue is closed; gives the job back.
pub struct Closed(pub Job);

impl Default for RunQueue {
    fn default() -> Self {
        RunQueue::new()
    }
}

impl RunQueue {
    /// An empty, open queue.
    pub fn new() -> RunQueue {
        RunQueue {
            state: Mutex::new(State {
                heap: BinaryHeap::new(),
                next_seq: 0,
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }

    /// Enqueues a job, waking one blocked popper.
    pub fn push(&self, key: RunKey, job: Job) -> Result<(), Closed> {
        let mut s = self.state.lock();
        if s.closed {
            return Err(Closed(job));
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        s.heap.push(Entry { key, seq, job });
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Takes the most urgent job, blocking until one arrives, the deadline passes, or the queue
    /// is closed and empty. Returns `None` on timeout or once closed and drained.
    pub fn pop(&self, deadline: Option<Instant>) -> Option<Job> {
        let mut s = self.state.lock();
        loop {
            if let Some(e) = s.heap.pop() {
                return Some(e.job);
            }
            if s.closed {
                return None;
            }
            match deadline {
                Some(d) => {
                    if self.ready.wait_until(&mut s, d).timed_out() {
                        return s.heap.pop().map(|e| e.job);
                    }
                }
                None => self.ready.wait(&mut s),
            }
        }
    }

    /// Takes the most urgent job without blocking.
    pub fn try_pop(&self) -> Option<Job> {
        self.state.lock().heap.pop().map(|e| e.job)
    }

    /// Closes the queue. With `discard`, queued jobs are dropped (not run) and returned count is
    /// how many were dropped; otherwise they stay to be drained by poppers.
    pub fn close(&self, discard: bool) -> usize {
        let dropped = {
            let mut s = self.state.lock();
            s.closed = true;
            if discard {
                std::mem::take(&mut s.heap).into_vec()
            } else {
                Vec::new()
            }
        };
        self.ready.notify_all();
        // Jobs are dropped outside the lock: their destructors may do anything.
        dropped.len()
    }

    /// Queued jobs.
    pub fn len(&self) -> usize {
        self.state.lock().heap.len()
    }

    /// Whether no job is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether [`RunQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex as StdMutex};

    fn recorder() -> (
        Arc<StdMutex<Vec<&'static str>>>,
        impl Fn(&'static str) -> Job,
    ) {
        let log = Arc::new(StdMutex::new(Vec::new()));
        let l2 = log.clone();
        (log, move |name| {
            let l = l2.clone();
            Box::new(move || l.lock().unwrap().push(name)) as Job
        })
    }

    #[test]
    fn priority_then_service_then_fifo() {
        let q = RunQueue::new();
        let (log, job) = recorder();
        let k = |priority, service| RunKey { priority, service };
        q.push(k(0, 5), job("low-a")).ok().unwrap();
        q.push(k(0, 5), job("low-b")).ok().unwrap();
        q.push(k(0, 1), job("low-less-service")).ok().unwrap();
        q.push(k(9, 100), job("high")).ok().unwrap();
        q.push(k(-3, 0), job("background")).ok().unwrap();
        while let Some(j) = q.try_pop() {
            j();
        }
        assert_eq!(
            *log.lock().unwrap(),
            vec!["high", "low-less-service", "low-a", "low-b", "background"]
        );
    }

    #[test]
    fn close_wakes_blocked_popper_and_rejects_push() {
        let q = Arc::new(RunQueue::new());
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.pop(None).is_none());
        std::thread::sleep(std::time::Duration::from_millis(20));
        q.close(true);
        assert!(t.join().unwrap());
        let (_, job) = recorder();
        assert!(q
            .push(
                RunKey {
                    priority: 0,
                    service: 0
                },
                job("late")
            )
            .is_err());
    }

    #[test]
    fn close_with_discard_drops_jobs_without_running_them() {
        let q = RunQueue::new();
        let (log, job) = recorder();
        for _ in 0..3 {
            q.push(
                RunKey {
                    priority: 0,
                    service: 0,
                },
                job("x"),
            )
            .ok()
            .unwrap();
        }
        assert_eq!(q.close(true), 3);
        assert!(q.pop(None).is_none());
        assert!(log.lock().unwrap().is_empty());
    }

    #[test]
    fn close_without_discard_drains() {
        let q = RunQueue::new();
        let (log, job) = recorder();
        q.push(
            RunKey {
                priority: 0,
                service: 0,
            },
            job("x"),
        )
        .ok()
        .unwrap();
        q.close(false);
        q.pop(None).unwrap()();
        assert!(q.pop(None).is_none());
        assert_eq!(log.lock().unwrap().len(), 1);
    }

    #[test]
    fn pop_times_out() {
        let q = RunQueue::new();
        let d = Instant::now() + std::time::Duration::from_millis(10);
        assert!(q.pop(Some(d)).is_none());
    }
}
