//! Messages: an immutable, reference-counted payload with a per-delivery header.
//!
//! The payload is allocated once (one copy in from C, or built in place and sealed) and never
//! copied again: sending, cloning, publishing to a topic and replying all share it. Each delivery
//! gets its own small header (id, sender, recipient, topic, correlation id, time), so one payload
//! can go to many mailboxes at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Kind of a plain message.
pub const KIND_DATA: u32 = 0;
/// Kind of a reply (matched to its request by correlation id).
pub const KIND_REPLY: u32 = 1;
/// Kind of an agent's answer to a message.
pub const KIND_AGENT_ANSWER: u32 = 2;
/// Kind of an agent's failure notice (the payload is the error text).
pub const KIND_AGENT_ERROR: u32 = 3;
/// First kind free for applications.
pub const KIND_USER: u32 = 1000;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Allocates a process-wide unique id (message ids and correlation ids).
pub fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// The per-delivery header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Unique message id (process-wide).
    pub id: u64,
    /// Sending mailbox (0 = the host / anonymous).
    pub sender: u64,
    /// Receiving mailbox (0 until sent).
    pub recipient: u64,
    /// Topic it was published on, if any.
    pub topic: Option<TopicName>,
    /// What the message is (`KIND_*` or an application kind).
    pub kind: u32,
    /// Links a reply to its request (0 = none).
    pub correlation: u64,
    /// Nanoseconds since the Unix epoch when the header was made (from the coarse real-time
    /// clock: a few milliseconds of resolution).
    pub timestamp_ns: u64,
}

/// A topic name carried by a delivery, shared by every delivery of one publication and kept
/// NUL-terminated so C reads it in place.
#[derive(Clone, PartialEq, Eq)]
pub struct TopicName(Arc<str>);

impl TopicName {
    /// A topic name (NUL characters, impossible from C, are dropped).
    pub fn new(name: &str) -> TopicName {
        let mut s = String::with_capacity(name.len() + 1);
        s.extend(name.chars().filter(|&c| c != '\0'));
        s.push('\0');
        TopicName(Arc::from(s))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0[..self.0.len() - 1]
    }

    /// The name as a NUL-terminated C string, valid while this name lives.
    pub fn as_c_ptr(&self) -> *const std::ffi::c_char {
        self.0.as_ptr() as *const std::ffi::c_char
    }
}

impl std::fmt::Debug for TopicName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

struct Inner {
    header: Header,
    payload: Arc<Box<[u8]>>,
}

/// A message: a header plus shared bytes. Cloning raises a count; it never copies bytes.
#[derive(Clone)]
pub struct Message {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("header", &self.inner.header)
            .field("len", &self.inner.payload.len())
            .finish()
    }
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the live timespec. The coarse clock (a few ms of
    // resolution) reads a kernel-updated value without touching the time source: every
    // delivery gets a timestamp, so it must cost next to nothing.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    } else {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}

impl Message {
    /// A message owning `payload` (no copy).
    pub fn new(kind: u32, payload: Box<[u8]>) -> Message {
        Message {
            inner: Arc::new(Inner {
                header: Header {
                    id: next_id(),
                    sender: 0,
                    recipient: 0,
                    topic: None,
                    kind,
                    correlation: 0,
                    timestamp_ns: now_ns(),
                },
                payload: Arc::new(payload),
            }),
        }
    }

    /// A message copying `bytes` once.
    pub fn copy_from(kind: u32, bytes: &[u8]) -> Message {
        Message::new(kind, bytes.into())
    }

    /// The same bytes under a new header (one delivery). Nothing is copied.
    pub fn deliver_as(&self, header: Header) -> Message {
        Message {
            inner: Arc::new(Inner {
                header,
                payload: self.inner.payload.clone(),
            }),
        }
    }

    /// A fresh header for a delivery of this message.
    pub fn new_header(&self, sender: u64, recipient: u64, kind: u32, correlation: u64) -> Header {
        Header {
            id: next_id(),
            sender,
            recipient,
            topic: self.inner.header.topic.clone(),
            kind,
            correlation,
            timestamp_ns: now_ns(),
        }
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.inner.header
    }

    /// The bytes (shared by every clone and delivery).
    pub fn payload(&self) -> &[u8] {
        &self.inner.payload
    }

    /// The payload as text, if it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(self.payload()).ok()
    }

    /// The topic, for published messages.
    pub fn topic(&self) -> Option<&str> {
        self.inner.header.topic.as_ref().map(TopicName::as_str)
    }

    /// Gives up this reference as a raw pointer (for a C handle); take it back with
    /// [`Message::from_raw`] exactly once.
    pub fn into_raw(self) -> *const std::ffi::c_void {
        Arc::into_raw(self.inner) as *const std::ffi::c_void
    }

    /// Takes back a reference given up by [`Message::into_raw`].
    ///
    /// # Safety
    /// `p` must come from `into_raw` and not have been taken back already.
    pub unsafe fn from_raw(p: *const std::ffi::c_void) -> Message {
        Message {
            inner: Arc::from_raw(p as *const Inner),
        }
    }

    /// How many deliveries and clones share the bytes.
    pub fn payload_refs(&self) -> usize {
        Arc::strong_count(&self.inner.payload)
    }
}

/// A writable buffer that becomes a message when sealed: build large payloads in place.
pub struct MessageBuilder {
    buf: Box<[u8]>,
}

impl MessageBuilder {
    /// A zeroed buffer of `len` bytes.
    pub fn new(len: usize) -> MessageBuilder {
        MessageBuilder {
            buf: vec![0u8; len].into_boxed_slice(),
        }
    }

    /// The buffer to fill.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Seals the buffer into an immutable message (no copy).
    pub fn seal(self, kind: u32) -> Message {
        Message::new(kind, self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_share_the_payload() {
        let m = Message::copy_from(KIND_USER, b"hello");
        let d = m.deliver_as(m.new_header(1, 2, KIND_DATA, 7));
        assert_eq!(d.payload().as_ptr(), m.payload().as_ptr());
        assert_eq!(m.payload_refs(), 2);
        assert_eq!(d.header().recipient, 2);
        assert_ne!(d.header().id, m.header().id);
        let c = d.clone();
        assert_eq!(c.payload().as_ptr(), m.payload().as_ptr());
        let mut b = MessageBuilder::new(4);
        b.data_mut().copy_from_slice(b"abcd");
        let p = b.data_mut().as_ptr();
        let sealed = b.seal(KIND_DATA);
        assert_eq!(sealed.payload().as_ptr(), p, "sealing does not copy");
        assert_eq!(sealed.text(), Some("abcd"));
    }
}
