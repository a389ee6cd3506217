//! Mailboxes: bounded queues of messages, with request/reply and close.
//!
//! Full-mailbox policy is the sender's choice per call: fail at once with `BUSY`, or block until
//! there is room or a deadline passes (`TIMEOUT`). Receiving blocks with a deadline; a receiver
//! spins briefly before sleeping, so a busy pipeline hands messages over without a system call.
//! Closing wakes every waiter with `CLOSED`; messages already queued can still be received.

use super::message::{next_id, Message};
use crate::error::{Error, Result, Status};
use crossbeam_queue::ArrayQueue;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Do not wait (`BUSY` when full, `TIMEOUT` when empty).
    No,
    /// Wait until this instant.
    Until(Instant),
    /// Wait as long as it takes.
    Forever,
}

impl Wait {
    /// From C's convention: negative = forever, 0 = no wait, else milliseconds.
    pub fn from_ms(ms: i64) -> Wait {
        match ms {
            m if m < 0 => Wait::Forever,
            0 => Wait::No,
            m => Wait::Until(Instant::now() + Duration::from_millis(m as u64)),
        }
    }
}

/// Delivers a message somewhere other than the queue (an agent's inbox).
pub type Sink = Box<dyn Fn(Message) -> Result<()> + Send + Sync>;

/// A bounded mailbox.
///
/// The queue is a lock-free array (`crossbeam_queue::ArrayQueue`): a send and a receive touch
/// no lock while the queue is neither empty nor full. Only a receiver that has to sleep, or a
/// sender that has to wait for room, takes the mutex, and the other side takes it to wake them
/// only when someone is actually asleep.
pub struct Mailbox {
    id: AtomicU64,
    queue: ArrayQueue<Message>,
    closed: AtomicBool,
    /// Receivers asleep (or about to sleep) on `not_empty`.
    sleeping_receivers: AtomicUsize,
    /// Senders asleep (or about to sleep) on `not_full`.
    sleeping_senders: AtomicUsize,
    /// Requests in flight; while zero, deliveries skip the reply table entirely.
    pending_requests: AtomicUsize,
    lock: Mutex<HashMap<u64, Option<Message>>>,
    not_empty: Condvar,
    not_full: Condvar,
    reply_ready: Condvar,
    sink: Option<Sink>,
}

/// Spins this many times on an empty mailbox before sleeping.
const SPIN: u32 = 4_000;

fn closed_error(id: u64) -> Error {
    Error::new(Status::Closed, format!("mailbox {id:#x} is closed"))
}

impl Mailbox {
    /// A mailbox holding at most `capacity` messages (at least 1).
    pub fn new(id: u64, capacity: usize) -> Mailbox {
        Mailbox::build(id, capacity, None)
    }

    /// A mailbox whose messages go to `sink` instead of a queue (an agent's mailbox).
    pub fn with_sink(id: u64, sink: Sink) -> Mailbox {
        Mailbox::build(id, 1, Some(sink))
    }

    fn build(id: u64, capacity: usize, sink: Option<Sink>) -> Mailbox {
        Mailbox {
            id: AtomicU64::new(id),
            queue: ArrayQueue::new(capacity.max(1)),
            closed: AtomicBool::new(false),
            sleeping_receivers: AtomicUsize::new(0),
            sleeping_senders: AtomicUsize::new(0),
            pending_requests: AtomicUsize::new(0),
            lock: Mutex::new(HashMap::new()),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            reply_ready: Condvar::new(),
            sink,
        }
    }

    /// The mailbox's handle.
    pub fn id(&self) -> u64 {
        self.id.load(Ordering::Relaxed)
    }

    /// Records the handle the registry gave the mailbox.
    pub fn set_id(&self, id: u64) {
        self.id.store(id, Ordering::Relaxed);
    }

    /// Messages queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether none is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether [`Mailbox::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn wake(&self, sleepers: &AtomicUsize, cv: &Condvar) {
        // SeqCst pairs with the sleeper's increment-then-recheck under the lock.
        std::sync::atomic::fence(Ordering::SeqCst);
        if sleepers.load(Ordering::SeqCst) > 0 {
            let _g = self.lock.lock();
            cv.notify_all();
        }
    }

    /// Queues a delivery (`msg` already carries its header). Replies to this mailbox's own
    /// pending requests go to the waiting requester, not the queue.
    pub fn put(&self, msg: Message, wait: Wait) -> Result<()> {
        if self.is_closed() {
            return Err(closed_error(self.id()));
        }
        if let Some(sink) = &self.sink {
            return sink(msg);
        }
        // Any delivery carrying the correlation id of a pending request is its reply (an agent
        // answers with its own kinds).
        let corr = msg.header().correlation;
        if corr != 0 && self.pending_requests.load(Ordering::Acquire) > 0 {
            let mut replies = self.lock.lock();
            if let Some(slot) = replies.get_mut(&corr) {
                *slot = Some(msg);
                drop(replies);
                self.reply_ready.notify_all();
                return Ok(());
            }
        }
        let mut msg = match self.queue.push(msg) {
            Ok(()) => {
                self.wake(&self.sleeping_receivers, &self.not_empty);
                return Ok(());
            }
            Err(m) => m,
        };
        // Full: fail, or sleep until a receiver makes room.
        loop {
            let deadline = match wait {
                Wait::No => {
                    return Err(Error::new(
                        Status::Busy,
                        format!(
                            "mailbox {:#x} is full ({} messages)",
                            self.id(),
                            self.queue.capacity()
                        ),
                    ))
                }
                Wait::Until(d) => Some(d),
                Wait::Forever => None,
            };
            let mut g = self.lock.lock();
            self.sleeping_senders.fetch_add(1, Ordering::SeqCst);
            let r = self.queue.push(msg);
            let timed_out = match r {
                Ok(()) => {
                    self.sleeping_senders.fetch_sub(1, Ordering::SeqCst);
                    drop(g);
                    self.wake(&self.sleeping_receivers, &self.not_empty);
                    return Ok(());
                }
                Err(m) => {
                    msg = m;
                    if self.is_closed() {
                        self.sleeping_senders.fetch_sub(1, Ordering::SeqCst);
                        return Err(closed_error(self.id()));
                    }
                    crate::deadline::wait(&self.not_full, &mut g, deadline)
                }
            };
            self.sleeping_senders.fetch_sub(1, Ordering::SeqCst);
            drop(g);
            if timed_out {
                return match self.queue.push(msg) {
                    Ok(()) => {
                        self.wake(&self.sleeping_receivers, &self.not_empty);
                        Ok(())
                    }
                    Err(_) => Err(Error::new(
                        Status::Timeout,
                        format!("mailbox {:#x} stayed full until the deadline", self.id()),
                    )),
                };
            }
            if self.is_closed() {
                return Err(closed_error(self.id()));
            }
        }
    }

    fn take(&self) -> Option<Message> {
        let m = self.queue.pop()?;
        self.wake(&self.sleeping_senders, &self.not_full);
        Some(m)
    }

    /// Takes the oldest message, waiting as `wait` says. `CLOSED` once closed and empty.
    pub fn recv(&self, wait: Wait) -> Result<Message> {
        if let Some(m) = self.take() {
            return Ok(m);
        }
        if wait != Wait::No {
            // Spin briefly: in a busy pipeline the next message is usually nanoseconds away.
            for _ in 0..SPIN {
                if !self.queue.is_empty() || self.is_closed() {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        loop {
            if let Some(m) = self.take() {
                return Ok(m);
            }
            if self.is_closed() {
                return Err(closed_error(self.id()));
            }
            let deadline = match wait {
                Wait::No => {
                    return Err(Error::new(
                        Status::Timeout,
                        format!("mailbox {:#x} is empty", self.id()),
                    ))
                }
                Wait::Until(d) => Some(d),
                Wait::Forever => None,
            };
            let mut g = self.lock.lock();
            self.sleeping_receivers.fetch_add(1, Ordering::SeqCst);
            let timed_out = if !self.queue.is_empty() || self.is_closed() {
                false
            } else {
                crate::deadline::wait(&self.not_empty, &mut g, deadline)
            };
            self.sleeping_receivers.fetch_sub(1, Ordering::SeqCst);
            drop(g);
            if timed_out {
                if let Some(m) = self.take() {
                    return Ok(m);
                }
                if self.is_closed() {
                    return Err(closed_error(self.id()));
                }
                return Err(Error::new(
                    Status::Timeout,
                    format!("no message in mailbox {:#x} before the deadline", self.id()),
                ));
            }
        }
    }

    /// Registers a pending request; returns its correlation id.
    pub fn expect_reply(&self) -> Result<u64> {
        if self.is_closed() {
            return Err(closed_error(self.id()));
        }
        let corr = next_id();
        self.lock.lock().insert(corr, None);
        self.pending_requests.fetch_add(1, Ordering::AcqRel);
        Ok(corr)
    }

    fn forget(&self, replies: &mut HashMap<u64, Option<Message>>, corr: u64) -> Option<Message> {
        let r = replies.remove(&corr);
        if r.is_some() {
            self.pending_requests.fetch_sub(1, Ordering::AcqRel);
        }
        r.flatten()
    }

    /// Waits for the reply to `corr`.
    pub fn await_reply(&self, corr: u64, wait: Wait) -> Result<Message> {
        let mut g = self.lock.lock();
        loop {
            if let Some(Some(_)) = g.get(&corr) {
                return Ok(self.forget(&mut g, corr).expect("reply"));
            }
            if self.is_closed() {
                self.forget(&mut g, corr);
                return Err(closed_error(self.id()));
            }
            let timed_out = match wait {
                Wait::No => true,
                Wait::Until(d) => self.reply_ready.wait_until(&mut g, d).timed_out(),
                Wait::Forever => {
                    self.reply_ready.wait(&mut g);
                    false
                }
            };
            if timed_out && !matches!(g.get(&corr), Some(Some(_))) {
                self.forget(&mut g, corr);
                return Err(Error::new(Status::Timeout, "no reply before the deadline"));
            }
        }
    }

    /// Forgets a pending request (the send failed).
    pub fn cancel_reply(&self, corr: u64) {
        let mut g = self.lock.lock();
        self.forget(&mut g, corr);
    }

    /// Closes the mailbox and wakes every waiter.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _g = self.lock.lock();
        self.not_empty.notify_all();
        self.not_full.notify_all();
        self.reply_ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::message::{KIND_DATA, KIND_REPLY, KIND_USER};
    use std::sync::Arc;

    fn msg(n: u32) -> Message {
        Message::copy_from(KIND_USER, &n.to_le_bytes())
    }

    #[test]
    fn fifo_backpressure_timeouts_and_close() {
        let mb = Arc::new(Mailbox::new(1, 2));
        mb.put(msg(1), Wait::No).unwrap();
        mb.put(msg(2), Wait::No).unwrap();
        assert_eq!(mb.put(msg(3), Wait::No).unwrap_err().status(), Status::Busy);
        let t0 = Instant::now();
        let e = mb
            .put(
                msg(3),
                Wait::Until(Instant::now() + Duration::from_millis(30)),
            )
            .unwrap_err();
        assert_eq!(e.status(), Status::Timeout);
        assert!(t0.elapsed() >= Duration::from_millis(25));
        // A blocked sender proceeds when the receiver makes room.
        let mb2 = mb.clone();
        let t = std::thread::spawn(move || mb2.put(msg(3), Wait::Forever));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(mb.recv(Wait::No).unwrap().payload(), &1u32.to_le_bytes());
        t.join().unwrap().unwrap();
        assert_eq!(mb.recv(Wait::No).unwrap().payload(), &2u32.to_le_bytes());
        assert_eq!(mb.recv(Wait::No).unwrap().payload(), &3u32.to_le_bytes());
        assert_eq!(mb.recv(Wait::No).unwrap_err().status(), Status::Timeout);
        // Close wakes a blocked receiver.
        let mb3 = mb.clone();
        let t = std::thread::spawn(move || mb3.recv(Wait::Forever));
        std::thread::sleep(Duration::from_millis(20));
        mb.close();
        assert_eq!(t.join().unwrap().unwrap_err().status(), Status::Closed);
        assert_eq!(
            mb.put(msg(4), Wait::No).unwrap_err().status(),
            Status::Closed
        );
    }

    #[test]
    fn queued_messages_survive_close() {
        let mb = Mailbox::new(1, 4);
        mb.put(msg(9), Wait::No).unwrap();
        mb.close();
        assert_eq!(mb.recv(Wait::No).unwrap().payload(), &9u32.to_le_bytes());
        assert_eq!(mb.recv(Wait::Forever).unwrap_err().status(), Status::Closed);
    }

    #[test]
    fn replies_bypass_the_queue() {
        let me = Arc::new(Mailbox::new(1, 4));
        let corr = me.expect_reply().unwrap();
        me.put(msg(5), Wait::No).unwrap(); // ordinary traffic stays queued
        let reply = msg(6);
        let h = reply.new_header(2, 1, KIND_REPLY, corr);
        let me2 = me.clone();
        let t = std::thread::spawn(move || me2.await_reply(corr, Wait::Forever));
        std::thread::sleep(Duration::from_millis(10));
        me.put(reply.deliver_as(h), Wait::No).unwrap();
        assert_eq!(t.join().unwrap().unwrap().payload(), &6u32.to_le_bytes());
        assert_eq!(me.len(), 1);
        let late = me.expect_reply().unwrap();
        let e = me
            .await_reply(
                late,
                Wait::Until(Instant::now() + Duration::from_millis(10)),
            )
            .unwrap_err();
        assert_eq!(e.status(), Status::Timeout);
        let _ = KIND_DATA;
    }
}
