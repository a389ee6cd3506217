//! The priority run queue that the worker threads pop from.
//!
//! Order: higher `priority` first; within a priority, the lower `service` (attained service:
//! tokens consumed so far) first; then first-in, first-out. Aging stops starvation: a job that
//! has waited longer than the starvation limit runs next, whatever its priority. Closing the
//! queue wakes every blocked popper.

use parking_lot::{Condvar, Mutex};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

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

/// Heap order: "greater" runs sooner.
type Order = (i32, Reverse<u64>, Reverse<u64>);

struct State {
    jobs: HashMap<u64, Job>,
    heap: BinaryHeap<Order>,
    ages: VecDeque<(Instant, u64)>,
    next_seq: u64,
    closed: bool,
    /// Poppers blocked waiting for a job.
    idle: usize,
}

/// A blocking, closable priority queue of [`Job`]s.
pub struct RunQueue {
    state: Mutex<State>,
    ready: Condvar,
    starvation_limit: Option<Duration>,
}

/// Returned by [`RunQueue::push`] when the queue is closed; gives the job back.
pub struct Closed(pub Job);

impl Default for RunQueue {
    fn default() -> Self {
        RunQueue::new(None)
    }
}

impl State {
    /// Takes the next job: the oldest if it is starving, else the most urgent.
    fn take(&mut self, starvation_limit: Option<Duration>) -> Option<Job> {
        // Drop age entries of jobs already taken.
        while let Some(&(_, seq)) = self.ages.front() {
            if self.jobs.contains_key(&seq) {
                break;
            }
            self.ages.pop_front();
        }
        if let (Some(limit), Some(&(at, seq))) = (starvation_limit, self.ages.front()) {
            if at.elapsed() >= limit {
                self.ages.pop_front();
                return self.jobs.remove(&seq);
            }
        }
        while let Some((_, _, Reverse(seq))) = self.heap.pop() {
            if let Some(job) = self.jobs.remove(&seq) {
                return Some(job);
            }
        }
        None
    }
}

impl RunQueue {
    /// An empty, open queue. With `starvation_limit`, a job waiting longer than that runs next.
    pub fn new(starvation_limit: Option<Duration>) -> RunQueue {
        RunQueue {
            state: Mutex::new(State {
                jobs: HashMap::new(),
                heap: BinaryHeap::new(),
                ages: VecDeque::new(),
                next_seq: 0,
                closed: false,
                idle: 0,
            }),
            ready: Condvar::new(),
            starvation_limit,
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
        s.jobs.insert(seq, job);
        s.heap
            .push((key.priority, Reverse(key.service), Reverse(seq)));
        if self.starvation_limit.is_some() {
            s.ages.push_back((Instant::now(), seq));
        }
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Takes the next job, blocking until one arrives, the deadline passes, or the queue is
    /// closed and empty. Returns `None` on timeout or once closed and drained.
    pub fn pop(&self, deadline: Option<Instant>) -> Option<Job> {
        let mut s = self.state.lock();
        loop {
            if let Some(job) = s.take(self.starvation_limit) {
                return Some(job);
            }
            if s.closed {
                return None;
            }
            s.idle += 1;
            let timed_out = crate::deadline::wait(&self.ready, &mut s, deadline);
            s.idle -= 1;
            if timed_out {
                return s.take(self.starvation_limit);
            }
        }
    }

    /// Whether nothing is queued and at least one popper is blocked waiting for work: a job
    /// pushed now would start at once on that popper.
    pub fn idle_and_empty(&self) -> bool {
        let s = self.state.lock();
        s.jobs.is_empty() && s.idle > 0 && !s.closed
    }

    /// Takes the next job without blocking.
    pub fn try_pop(&self) -> Option<Job> {
        self.state.lock().take(self.starvation_limit)
    }

    /// Closes the queue. With `discard`, queued jobs are dropped (not run) and the count of
    /// dropped jobs returned; otherwise they stay to be drained by poppers.
    pub fn close(&self, discard: bool) -> usize {
        let dropped: Vec<Job> = {
            let mut s = self.state.lock();
            s.closed = true;
            if discard {
                s.heap.clear();
                s.ages.clear();
                s.jobs.drain().map(|(_, j)| j).collect()
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
        self.state.lock().jobs.len()
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

    type Log = Arc<StdMutex<Vec<&'static str>>>;

    fn recorder() -> (Log, impl Fn(&'static str) -> Job) {
        let log: Log = Arc::new(StdMutex::new(Vec::new()));
        let l2 = log.clone();
        (log, move |name| {
            let l = l2.clone();
            Box::new(move || l.lock().unwrap().push(name)) as Job
        })
    }

    fn k(priority: i32, service: u64) -> RunKey {
        RunKey { priority, service }
    }

    #[test]
    fn priority_then_service_then_fifo() {
        let q = RunQueue::new(None);
        let (log, job) = recorder();
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
    fn aging_runs_a_starving_job_first() {
        let q = RunQueue::new(Some(Duration::from_millis(30)));
        let (log, job) = recorder();
        q.push(k(0, 0), job("old-low")).ok().unwrap();
        std::thread::sleep(Duration::from_millis(40));
        q.push(k(9, 0), job("new-high")).ok().unwrap();
        while let Some(j) = q.try_pop() {
            j();
        }
        assert_eq!(*log.lock().unwrap(), vec!["old-low", "new-high"]);
    }

    #[test]
    fn close_wakes_blocked_popper_and_rejects_push() {
        let q = Arc::new(RunQueue::new(None));
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.pop(None).is_none());
        std::thread::sleep(Duration::from_millis(20));
        q.close(true);
        assert!(t.join().unwrap());
        let (_, job) = recorder();
        assert!(q.push(k(0, 0), job("late")).is_err());
    }

    #[test]
    fn close_with_discard_drops_jobs_without_running_them() {
        let q = RunQueue::new(Some(Duration::from_secs(1)));
        let (log, job) = recorder();
        for _ in 0..3 {
            q.push(k(0, 0), job("x")).ok().unwrap();
        }
        assert_eq!(q.close(true), 3);
        assert!(q.pop(None).is_none());
        assert!(log.lock().unwrap().is_empty());
    }

    #[test]
    fn close_without_discard_drains() {
        let q = RunQueue::new(None);
        let (log, job) = recorder();
        q.push(k(0, 0), job("x")).ok().unwrap();
        q.close(false);
        q.pop(None).unwrap()();
        assert!(q.pop(None).is_none());
        assert_eq!(log.lock().unwrap().len(), 1);
    }

    #[test]
    fn pop_times_out() {
        let q = RunQueue::new(None);
        let d = Instant::now() + Duration::from_millis(10);
        assert!(q.pop(Some(d)).is_none());
    }
}
