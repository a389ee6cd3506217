//! Channels between processes: two shared-memory rings, one each way.
//!
//! The parent creates a channel and hands the child a spec string naming two inherited file
//! descriptors (`agentos-shm:<to-child>,<from-child>`); nothing is named in the file system, so a
//! process can attach only to segments it was handed. A reader sees each message's bytes in place
//! in the segment. A bridge connects a channel to mailboxes, so the parent and the child use the
//! same mailbox API on both sides.

use super::mailbox::{Mailbox, Wait};
use super::message::Message;
use super::shm::{ShmError, ShmMessage, ShmRing};
use crate::error::{Error, Result, Status};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A duplex channel: `tx` carries this side's messages, `rx` the peer's.
pub struct Channel {
    tx: ShmRing,
    rx: ShmRing,
    view_out: AtomicBool,
    child_fds: parking_lot::Mutex<Vec<i32>>,
}

/// Maps a ring error to a status and a message.
pub fn shm_error(e: ShmError) -> Error {
    let status = match &e {
        ShmError::Full => Status::Busy,
        ShmError::Timeout => Status::Timeout,
        ShmError::TooLarge => Status::LimitExceeded,
        ShmError::Closed => Status::Closed,
        ShmError::PeerGone => Status::PeerGone,
        ShmError::Io(_) => Status::Io,
        ShmError::BadSegment(_) => Status::InvalidArgument,
    };
    Error::new(status, e.to_string())
}

/// A message received from a channel, read in place in shared memory.
pub struct View<'a> {
    msg: Option<ShmMessage<'a>>,
    flag: &'a AtomicBool,
}

impl View<'_> {
    /// The bytes, in the shared segment.
    pub fn payload(&self) -> &[u8] {
        self.msg.as_ref().map_or(&[], |m| m.payload())
    }

    /// The sender's kind tag.
    pub fn kind(&self) -> u32 {
        self.msg.as_ref().map_or(0, |m| m.kind())
    }
}

impl Drop for View<'_> {
    fn drop(&mut self) {
        drop(self.msg.take()); // releases the record
        self.flag.store(false, Ordering::Release);
    }
}

const SPEC_PREFIX: &str = "agentos-shm:";

impl Channel {
    /// A new channel with rings of `capacity` bytes each.
    pub fn create(capacity: usize) -> Result<Channel> {
        Ok(Channel {
            tx: ShmRing::create(capacity).map_err(shm_error)?,
            rx: ShmRing::create(capacity).map_err(shm_error)?,
            view_out: AtomicBool::new(false),
            child_fds: parking_lot::Mutex::new(Vec::new()),
        })
    }

    /// Makes inheritable descriptors for a child and returns the spec it attaches with. The
    /// descriptors stay open in this process until [`Channel::close_child_fds`] (call it once
    /// the child is started) or until the channel is dropped.
    pub fn child_spec(&self) -> Result<String> {
        let to_child = self.tx.dup_fd().map_err(shm_error)?.into_raw_fd();
        let from_child = self.rx.dup_fd().map_err(shm_error)?.into_raw_fd();
        self.child_fds.lock().extend([to_child, from_child]);
        Ok(format!("{SPEC_PREFIX}{to_child},{from_child}"))
    }

    /// Closes this process's copies of the descriptors made for a child.
    pub fn close_child_fds(&self) {
        for fd in self.child_fds.lock().drain(..) {
            // SAFETY: these descriptors were made by `child_spec` and are owned here.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }

    /// Attaches the child's side from a spec (the descriptors must have been inherited).
    pub fn attach(spec: &str) -> Result<Channel> {
        let bad = || {
            Error::invalid(format!(
                "not a channel spec: \"{spec}\" (expected {SPEC_PREFIX}<fd>,<fd>)"
            ))
        };
        let fds = spec.strip_prefix(SPEC_PREFIX).ok_or_else(bad)?;
        let (a, b) = fds.split_once(',').ok_or_else(bad)?;
        let (a, b): (i32, i32) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        for fd in [a, b] {
            // SAFETY: fcntl on an integer only queries it; a closed fd gives EBADF.
            if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(Error::new(
                    Status::InvalidArgument,
                    format!("descriptor {fd} of the spec is not open in this process"),
                ));
            }
        }
        // Work on duplicates: a spec that does not name channel segments must not close the
        // caller's descriptors. On success the originals are closed (the channel owns the dups).
        let dup = |fd: i32| -> Result<OwnedFd> {
            // SAFETY: fcntl(F_DUPFD_CLOEXEC) on an open descriptor returns a new one we own.
            let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
            if d < 0 {
                return Err(Error::new(
                    Status::Io,
                    format!(
                        "cannot duplicate descriptor {fd}: {}",
                        std::io::Error::last_os_error()
                    ),
                ));
            }
            // SAFETY: `d` is a fresh descriptor owned by nobody else.
            Ok(unsafe { OwnedFd::from_raw_fd(d) })
        };
        let rx = ShmRing::from_fd(dup(a)?).map_err(shm_error)?;
        let tx = ShmRing::from_fd(dup(b)?).map_err(shm_error)?;
        for fd in [a, b] {
            // SAFETY: the spec's descriptors were handed to this channel; closing them is ours.
            unsafe { libc::close(fd) };
        }
        Ok(Channel {
            rx,
            tx,
            view_out: AtomicBool::new(false),
            child_fds: parking_lot::Mutex::new(Vec::new()),
        })
    }

    /// Records the peer's pid, so a crashed peer is reported (`PEER_GONE`) instead of waited on.
    pub fn set_peer(&self, pid: i32) {
        self.tx.set_peer_pid(pid);
        self.rx.set_peer_pid(pid);
    }

    /// Sends `payload` (copied once, into the segment). `timeout`: `None` fails with `BUSY`
    /// when the ring is full.
    pub fn send(&self, kind: u32, payload: &[u8], timeout: Option<Duration>) -> Result<()> {
        self.tx
            .send(kind, payload, timeout)
            .map(|_| ())
            .map_err(shm_error)
    }

    /// Sends a message built in place: `fill` writes straight into the segment.
    pub fn send_with(
        &self,
        kind: u32,
        len: usize,
        timeout: Option<Duration>,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        self.tx
            .send_with(kind, len, timeout, fill)
            .map(|_| ())
            .map_err(shm_error)
    }

    /// Receives the next message as a view into the segment (one view at a time: `BUSY` while
    /// the previous one is alive). `timeout`: `None` waits as long as it takes.
    pub fn recv(&self, timeout: Option<Duration>) -> Result<View<'_>> {
        if self.view_out.swap(true, Ordering::AcqRel) {
            return Err(Error::new(
                Status::Busy,
                "the previous view of this channel is still held; free it first",
            ));
        }
        match self.rx.recv(timeout) {
            Ok(m) => Ok(View {
                msg: Some(m),
                flag: &self.view_out,
            }),
            Err(e) => {
                self.view_out.store(false, Ordering::Release);
                Err(shm_error(e))
            }
        }
    }

    /// Closes both directions; the peer's waits end with `CLOSED`.
    pub fn close(&self) {
        self.tx.close();
        self.rx.close();
    }

    /// Torn records of crashed writers skipped, and corrupt records refused, so far.
    pub fn skipped(&self) -> (u64, u64) {
        (self.rx.abandoned(), self.rx.corrupt())
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.close_child_fds();
    }
}

/// Frame of a bridged message: sender (u64) and correlation (u64), then the payload.
const FRAME: usize = 16;

/// Connects a channel to mailboxes: every message arriving on the channel is delivered to
/// `inbox` (header fields kept), and every message put into the returned outbox mailbox is sent
/// over the channel. One thread forwards incoming traffic; it stops when the channel closes,
/// the peer dies (an event-less `PEER_GONE` closes `inbox`), or `inbox` closes.
pub fn bridge(
    ch: Arc<Channel>,
    inbox: Arc<Mailbox>,
    outbox_id: u64,
) -> Result<(Arc<Mailbox>, std::thread::JoinHandle<Status>)> {
    let ch_out = ch.clone();
    let outbox = Arc::new(Mailbox::with_sink(
        outbox_id,
        Box::new(move |m: Message| {
            let h = m.header();
            let payload = m.payload();
            ch_out.send_with(
                h.kind,
                FRAME + payload.len(),
                Some(Duration::from_secs(30)),
                |buf| {
                    buf[..8].copy_from_slice(&h.sender.to_le_bytes());
                    buf[8..16].copy_from_slice(&h.correlation.to_le_bytes());
                    buf[FRAME..].copy_from_slice(payload);
                },
            )
        }),
    ));
    let thread = std::thread::Builder::new()
        .name("agentos-bridge".into())
        .spawn(move || loop {
            let r = ch.recv(Some(Duration::from_millis(200)));
            match r {
                Ok(view) => {
                    let p = view.payload();
                    if p.len() < FRAME {
                        continue; // not a bridged frame
                    }
                    let sender = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
                    let corr = u64::from_le_bytes(p[8..16].try_into().expect("8 bytes"));
                    let m = Message::copy_from(view.kind(), &p[FRAME..]);
                    drop(view);
                    let h = m.new_header(sender, inbox.id(), m.header().kind, corr);
                    if let Err(e) = inbox.put(m.deliver_as(h), Wait::Forever) {
                        return e.status();
                    }
                }
                Err(e) if e.status() == Status::Timeout => {
                    if inbox.is_closed() {
                        return Status::Closed;
                    }
                }
                Err(e) => {
                    inbox.close();
                    return e.status();
                }
            }
        })
        .map_err(|e| {
            Error::new(
                Status::Io,
                format!("could not start the bridge thread: {e}"),
            )
        })?;
    Ok((outbox, thread))
}
