//! A cross-process shared-memory message ring: many producers, one consumer, zero copy.
//!
//! An agent team running isolated in a child process talks to its parent through a
//! [`ShmRing`]. The ring lives in an anonymous `memfd` segment that a process can only reach
//! through a file descriptor it was handed (inherited across `fork`/`exec`, or sent over a Unix
//! socket): nothing is named in `/dev/shm`.
//!
//! # Guarantees
//!
//! - **Zero copy.** [`ShmRing::recv`] returns a [`ShmMessage`] whose [`payload`](ShmMessage::payload)
//!   points into the mapping; [`ShmRing::send_with`] lets the producer build the payload in place.
//! - **No busy waiting.** Blocked peers sleep on shared (cross-process) futexes. A sleeper
//!   registers in `consumer_waiting` / `producers_waiting` before sleeping; a waker swaps the
//!   counter to 0 and makes the `FUTEX_WAKE` syscall only if it was non-zero, so there is at most
//!   one wake syscall per sleep, and none while nobody sleeps. Before sleeping, `recv` re-checks
//!   the ring 64 times with a spin hint and 16 times after `sched_yield` (about 5-10 µs in
//!   total), which keeps ping-pong latency low without burning a core. While blocked on a
//!   possibly dead writer or with a peer pid set, a waiter wakes every 20 ms to check liveness.
//! - **No torn or corrupt message is delivered.** A record is delivered only once its producer
//!   committed it (release/acquire on the record's state word) and its 64-bit checksum (over
//!   sequence number, length, kind, writer pid and payload) matches. A record that fails the
//!   check is skipped and counted in [`ShmRing::corrupt`].
//! - **A crashed producer is detected.** A record whose writer died mid-write (state "writing",
//!   writer pid dead), or a reservation whose producer died before writing anything, is skipped,
//!   counted in [`ShmRing::abandoned`], and the ring keeps working for the other producers.
//! - **No acknowledged message is lost.** Once `send` returned `Ok(seq)` the record is committed
//!   and will be delivered to the consumer (unless the consumer itself stops receiving). Errors
//!   (`Full`, `Timeout`, `Closed`, `PeerGone`) never consume or damage committed records, and
//!   [`ShmError::PeerGone`] is reported by `recv` only once everything committed was drained.
//! - **A dead peer is reported** as [`ShmError::PeerGone`] instead of a silent hang: set the
//!   peer with [`ShmRing::set_peer_pid`]; producers also watch the pid of the process that last
//!   called `recv`. `send` checks liveness only while it waits for space (a `send` that finds
//!   room succeeds without a syscall, even if nobody will read the message).
//!
//! # Rules
//!
//! - **One consumer.** Only one thread of one process may receive. Within one handle this is
//!   enforced: calling [`ShmRing::recv`] while another `recv` runs or a [`ShmMessage`] of the same
//!   handle is alive **panics** (like a `RefCell` double borrow); drop the message first. Across
//!   handles or processes it is not enforced.
//! - Producers may be any number of threads and processes; a `ShmRing` is `Send + Sync`.
//! - All processes must share one PID namespace (liveness is checked with `kill(pid, 0)`,
//!   `waitid(.., WNOWAIT)` and `/proc/<pid>/stat`).
//! - After `fork`, the child may use the inherited handle (the cached pid is reset by a
//!   `pthread_atfork` handler, so call `fork` through libc, not a raw `clone`), provided no
//!   other thread of the parent was inside a `send` on that same handle at the moment of the
//!   fork (the handle's producer mutex would be inherited locked). A child that gets the
//!   segment's fd (inherited across `exec`, or over a Unix socket) and calls
//!   [`ShmRing::from_fd`] has no such restriction. The send and receive paths do not allocate.
//!
//! # Memory layout (version 1)
//!
//! ```text
//! offset 0     header, 4096 bytes, every group on its own 64-byte cache line:
//!   line 0     magic "AGOSRING" (u64), version (u32), header_size (u32), capacity (u64),
//!              slot_count (u32)                                   -- written once at creation
//!   line 1     tail: AtomicU64 = seq32 << 32 | pos32              -- producers, CAS
//!   line 2     head: AtomicU64 = seq32 << 32 | pos32, head_seq: AtomicU64 (full sequence number
//!              of the record at head)                             -- consumer
//!   line 3     data_seq: AtomicU32 (futex), consumer_waiting: AtomicU32
//!   line 4     space_seq: AtomicU32 (futex), producers_waiting: AtomicU32
//!   line 5     closed: AtomicU32 (0 open, 1 closed by consumer, 2 by producer side),
//!              consumer_pid: AtomicI32, abandoned: AtomicU64, corrupt: AtomicU64
//!   line 6..   64 producer slots of 32 bytes: pid: AtomicI32, total: AtomicU32,
//!              from: AtomicU64 (reservation announcements, see below)
//! offset 4096  data area, `capacity` bytes (a power of two, 4096 ..= 1 GiB)
//! ```
//!
//! `pos32` is a byte position modulo 2^32 (the capacity divides 2^32, so `pos32 % capacity` is the
//! offset in the data area), `seq32` the low half of the record sequence number. Packing both in
//! one word lets a single CAS reserve space *and* take the next sequence number, so sequence
//! numbers are consecutive and increase in ring (delivery) order.
//!
//! Records are 8-byte aligned and never wrap. A record is a 32-byte header followed by `len`
//! payload bytes, padded to 8:
//!
//! ```text
//! +0  stamp: AtomicU64 = writer_pid << 32 | (seq & 0xFF_FFFF) << 8 | state
//!         state: 0 free, 1 writing, 2 committed, 3 padding, 4 abandoned
//! +8  len: u32     +12 kind: u32     +16 seq: u64     +24 checksum: u64
//! ```
//!
//! When a record does not fit before the end of the data area, the same CAS reserves the rest
//! of the area as padding (only its stamp word is written) plus the record at offset 0. The
//! largest payload is therefore `capacity / 2 - 32` bytes ([`ShmRing::max_payload`]), so that a
//! padded reservation always fits in an empty ring.
//!
//! # Protocol
//!
//! The free part of the data area is kept zeroed: the consumer zeroes every record it releases
//! (header and payload), so a stamp word is either 0 or was written by the current owner.
//!
//! *Send.* Under a per-handle mutex (threads of one process take turns for a few instructions,
//! processes race lock-free on the CAS): announce the intended reservation (`from` = tail word,
//! `total` bytes) in this process's slot, CAS `tail`, write the header with the stamp set to
//! "writing" (a CAS from 0), clear the announcement. Then, outside the lock: fill the payload,
//! store the checksum, CAS the stamp to "committed" (release), and wake the consumer if it sleeps.
//!
//! *Recv.* Look at the stamp at `head`. Committed and checksum valid: deliver a view. Dropping
//! the view zeroes the record, advances `head` (release) and wakes producers if any sleep.
//! Padding, abandoned or corrupt records are released and skipped. While the head record stays
//! "writing", every ~20 ms the consumer checks whether the writer pid is alive; a dead writer's
//! record is skipped. While the head stamp stays 0 although `tail` is past it (a producer died
//! between its tail CAS and its first header write), the consumer looks for the announcement of
//! that reservation (matched by sequence number); if every announcer is dead, the announced size
//! tells how much to skip.
//!
//! The segment is sealed (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`) so no process can shrink
//! it under another one's mapping (which would raise `SIGBUS`); [`ShmRing::from_fd`] requires
//! the seals. All positions and lengths read from shared memory are bounds-checked before use,
//! so a misbehaving peer can corrupt messages but cannot make this process access memory
//! outside the mapping.

use std::fmt;
use std::io;
use std::mem::{self, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;
use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const MAGIC: u64 = u64::from_le_bytes(*b"AGOSRING");
const VERSION: u32 = 1;
const HEADER_SIZE: usize = 4096;
const MIN_CAPACITY: usize = 4096;
const MAX_CAPACITY: usize = 1 << 30;
const SLOT_COUNT: usize = 64;
const REC_HDR: u32 = 32;

const ST_WRITING: u32 = 1;
const ST_COMMITTED: u32 = 2;
const ST_PADDING: u32 = 3;
const ST_ABANDONED: u32 = 4;

/// How often a blocked peer re-checks liveness of writers and peers.
const POLL_SLICE: Duration = Duration::from_millis(20);
/// How many times `recv` re-checks the ring before it goes to sleep.
const SPIN_CHECKS: u32 = 64;
/// How many times `recv` then yields the CPU and re-checks before it goes to sleep.
const YIELD_CHECKS: u32 = 16;

/// The errors of [`ShmRing`] operations.
#[derive(Debug)]
pub enum ShmError {
    /// The ring has no room for the message and the caller did not want to wait.
    Full,
    /// The wait (for space, or for a message) timed out.
    Timeout,
    /// The message is larger than [`ShmRing::max_payload`] (`capacity / 2 - 32` bytes), or the
    /// requested capacity is larger than 1 GiB.
    TooLarge,
    /// The ring was closed with [`ShmRing::close`] (and, for `recv`, nothing is left to read).
    Closed,
    /// The peer process is dead (and, for `recv`, everything it committed was delivered).
    PeerGone,
    /// A system call failed.
    Io(io::Error),
    /// The segment is not a valid ring, or its shared state is corrupt beyond repair.
    BadSegment(String),
}

impl fmt::Display for ShmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShmError::Full => f.write_str("shared-memory ring is full"),
            ShmError::Timeout => f.write_str("timed out waiting on the shared-memory ring"),
            ShmError::TooLarge => f.write_str("message or capacity too large for the ring"),
            ShmError::Closed => f.write_str("shared-memory ring is closed"),
            ShmError::PeerGone => f.write_str("peer process of the shared-memory ring is gone"),
            ShmError::Io(e) => write!(f, "shared-memory ring I/O error: {e}"),
            ShmError::BadSegment(m) => write!(f, "bad shared-memory ring segment: {m}"),
        }
    }
}

impl std::error::Error for ShmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ShmError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ShmError {
    fn from(e: io::Error) -> Self {
        ShmError::Io(e)
    }
}

fn bad(msg: &str) -> ShmError {
    ShmError::BadSegment(msg.to_string())
}

// ---------------------------------------------------------------------------------------------
// Shared layout
// ---------------------------------------------------------------------------------------------

#[repr(C, align(64))]
struct Meta {
    magic: u64,
    version: u32,
    header_size: u32,
    capacity: u64,
    slot_count: u32,
}

#[repr(C, align(64))]
struct TailLine {
    tail: AtomicU64,
}

#[repr(C, align(64))]
struct HeadLine {
    head: AtomicU64,
    head_seq: AtomicU64,
}

#[repr(C, align(64))]
struct DataLine {
    data_seq: AtomicU32,
    consumer_waiting: AtomicU32,
}

#[repr(C, align(64))]
struct SpaceLine {
    space_seq: AtomicU32,
    producers_waiting: AtomicU32,
}

#[repr(C, align(64))]
struct StateLine {
    closed: AtomicU32,
    consumer_pid: AtomicI32,
    abandoned: AtomicU64,
    corrupt: AtomicU64,
}

/// A producer process's reservation announcement.
#[repr(C)]
struct Slot {
    /// Owning process, 0 when free.
    pid: AtomicI32,
    /// Bytes of the announced reservation (padding included), 0 when nothing is announced.
    total: AtomicU32,
    /// The tail word the reservation starts from.
    from: AtomicU64,
    _reserved: [u64; 2],
}

#[repr(C)]
struct Header {
    meta: Meta,
    tail: TailLine,
    head: HeadLine,
    data: DataLine,
    space: SpaceLine,
    state: StateLine,
    slots: [Slot; SLOT_COUNT],
}

#[repr(C)]
struct RecHdr {
    stamp: AtomicU64,
    len: AtomicU32,
    kind: AtomicU32,
    seq: AtomicU64,
    checksum: AtomicU64,
}

const _: () = assert!(size_of::<Header>() <= HEADER_SIZE);
const _: () = assert!(size_of::<RecHdr>() == REC_HDR as usize);
const _: () = assert!(size_of::<Slot>() == 32);

fn pack(seq32: u32, pos: u32) -> u64 {
    (u64::from(seq32) << 32) | u64::from(pos)
}

fn word_seq(w: u64) -> u32 {
    (w >> 32) as u32
}

fn word_pos(w: u64) -> u32 {
    w as u32
}

fn make_stamp(state: u32, seq32: u32, pid: i32) -> u64 {
    (u64::from(pid as u32) << 32) | (u64::from(seq32 & 0xFF_FFFF) << 8) | u64::from(state)
}

fn stamp_state(s: u64) -> u32 {
    (s & 0xFF) as u32
}

fn stamp_matches(s: u64, seq32: u32) -> bool {
    s != 0 && ((s >> 8) & 0xFF_FFFF) as u32 == seq32 & 0xFF_FFFF
}

fn stamp_pid(s: u64) -> i32 {
    (s >> 32) as u32 as i32
}

fn rec_size(len: u32) -> u32 {
    REC_HDR + len.next_multiple_of(8)
}

/// 64-bit checksum over a record's identity and payload. Every step is a bijection of the
/// running state, so any change confined to one 8-byte word is always detected.
fn checksum(seq: u64, len: u32, kind: u32, pid: i32, payload: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    fn step(h: u64, w: u64) -> u64 {
        (h ^ w).wrapping_mul(K).rotate_left(29)
    }
    let mut h = 0xCBF2_9CE4_8422_2325;
    h = step(h, seq);
    h = step(h, (u64::from(len) << 32) | u64::from(kind));
    h = step(h, u64::from(pid as u32));
    let mut chunks = payload.chunks_exact(8);
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        h = step(h, u64::from_le_bytes(b));
    }
    let rem = chunks.remainder();
    if !rem.is_empty() {
        let mut b = [0u8; 8];
        b[..rem.len()].copy_from_slice(rem);
        h = step(h, u64::from_le_bytes(b));
    }
    // murmur3 fmix64
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

// ---------------------------------------------------------------------------------------------
// OS helpers
// ---------------------------------------------------------------------------------------------

static CACHED_PID: AtomicI32 = AtomicI32::new(0);
/// 0: atfork handler not registered, 1: being registered, 2: registered, 3: registration failed.
static ATFORK_STATE: AtomicU8 = AtomicU8::new(0);

extern "C" fn reset_cached_pid() {
    CACHED_PID.store(0, Ordering::Relaxed);
}

/// The calling process's pid. It is cached only once a `pthread_atfork` child handler that
/// clears the cache is registered. Lock free on purpose (no `Once`): a child forked while
/// another thread was registering must not block on state inherited from that thread; it just
/// keeps calling `getpid`.
fn current_pid() -> i32 {
    if ATFORK_STATE.load(Ordering::Acquire) == 2 {
        let p = CACHED_PID.load(Ordering::Relaxed);
        if p != 0 {
            return p;
        }
        // SAFETY: getpid has no preconditions.
        let p = unsafe { libc::getpid() };
        CACHED_PID.store(p, Ordering::Relaxed);
        return p;
    }
    if ATFORK_STATE
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        // SAFETY: registers a handler that only stores to an atomic (async-signal-safe).
        let rc = unsafe { libc::pthread_atfork(None, None, Some(reset_cached_pid)) };
        ATFORK_STATE.store(if rc == 0 { 2 } else { 3 }, Ordering::Release);
    }
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// True when `pid` is known dead: no such process, or a zombie (exited, not yet reaped).
/// Allocation free, so it may run in a forked child.
fn is_dead(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } == -1 && errno() == libc::ESRCH {
        return true;
    }
    // A zombie child of ours: look without reaping it (WNOWAIT), so its parent's waitpid
    // still gets the status.
    // SAFETY: siginfo_t is plain data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { mem::zeroed() };
    // SAFETY: `info` is a valid, writable siginfo_t.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: waitid filled `info` (or left it zeroed); si_pid reads the pid field.
    if r == 0 && unsafe { info.si_pid() } == pid {
        return true;
    }
    matches!(proc_state(pid), Some(b'Z' | b'X'))
}

/// The state letter of `/proc/<pid>/stat`, read without allocating.
fn proc_state(pid: i32) -> Option<u8> {
    let mut path = [0u8; 32];
    let mut n = 0;
    for &b in b"/proc/" {
        path[n] = b;
        n += 1;
    }
    let mut digits = [0u8; 10];
    let mut d = 0;
    let mut v = pid as u32;
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        path[n] = digits[d];
        n += 1;
    }
    for &b in b"/stat" {
        path[n] = b;
        n += 1;
    }
    // SAFETY: `path` is NUL-terminated (zero-initialised, at most 26 bytes used).
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 512];
    // SAFETY: `buf` is writable for its full length; `fd` is open.
    let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: `fd` was opened above and is closed exactly once.
    unsafe { libc::close(fd) };
    let text = buf.get(..usize::try_from(got).ok()?)?;
    let close = text.iter().rposition(|&b| b == b')')?;
    text.get(close + 2).copied()
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 (in the shared mapping) for the whole call; `tsp`
    // is null or points to a live timespec. Not FUTEX_PRIVATE_FLAG: waiters are cross-process.
    // EINTR, EAGAIN and ETIMEDOUT are all fine: callers re-check their condition.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT as libc::c_long,
            libc::c_long::from(expected),
            tsp,
            ptr::null::<u32>(),
            0 as libc::c_long,
        );
    }
}

fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32 for the call; FUTEX_WAKE reads no other argument.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE as libc::c_long,
            libc::c_long::from(i32::MAX),
            ptr::null::<libc::timespec>(),
            ptr::null::<u32>(),
            0 as libc::c_long,
        );
    }
}

fn cvt(r: libc::c_int) -> Result<libc::c_int, ShmError> {
    if r < 0 {
        Err(ShmError::Io(io::Error::last_os_error()))
    } else {
        Ok(r)
    }
}

fn map_segment(fd: &OwnedFd, len: usize) -> Result<*mut u8, ShmError> {
    // SAFETY: a fresh shared mapping of an fd we own; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(ShmError::Io(io::Error::last_os_error()));
    }
    Ok(p.cast())
}

// ---------------------------------------------------------------------------------------------
// The ring
// ---------------------------------------------------------------------------------------------

/// This handle's producer slot, valid for the process `pid` (a forked child takes its own).
struct ProducerSlot {
    pid: i32,
    slot: Option<usize>,
}

/// What the consumer found at `head` when it cannot deliver.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StallKind {
    /// `head == tail`.
    Empty,
    /// The head record is being written by `pid`.
    Writing(i32),
    /// Space at head is reserved but its header is not written yet.
    Unwritten,
}

#[derive(Clone, Copy)]
struct Stall {
    kind: StallKind,
    head: u64,
    tail: u64,
    stamp: u64,
}

enum Poll {
    Ready {
        head: u64,
        size: u32,
        payload: *const u8,
        len: usize,
        kind: u32,
        seq: u64,
    },
    Skipped,
    Stall(Stall),
}

/// A reserved record, header written, payload not yet committed.
struct Reservation {
    rec_off: u32,
    len: u32,
    seq32: u32,
    seq: u64,
    pid: i32,
}

/// A shared-memory message ring: many producers (threads or processes), one consumer.
///
/// See the [module documentation](self) for the guarantees, the layout and the protocol.
/// `ShmRing` is `Send + Sync`: producers may share one handle across threads.
pub struct ShmRing {
    fd: OwnedFd,
    base: *mut u8,
    map_len: usize,
    cap: u32,
    producer: Mutex<ProducerSlot>,
    peer_pid: AtomicI32,
    recv_busy: AtomicBool,
    is_consumer: AtomicBool,
}

// SAFETY: the mapping is process-wide shared memory; every mutable word in it is accessed
// through atomics, and payload bytes are only touched by the party the ring protocol gives
// them to (the reserving producer, then the consumer). Handle-local state is atomics or a Mutex.
unsafe impl Send for ShmRing {}
// SAFETY: as above; `&ShmRing` methods synchronise through atomics and the producer mutex, and
// the single-consumer rule is enforced per handle by `recv_busy`.
unsafe impl Sync for ShmRing {}

impl fmt::Debug for ShmRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmRing")
            .field("fd", &self.fd.as_raw_fd())
            .field("capacity", &self.cap)
            .field("pending", &self.pending())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl ShmRing {
    /// Creates a new ring in a fresh sealed `memfd` segment.
    ///
    /// `capacity` (bytes of the data area) is rounded up to a power of two, at least 4096;
    /// more than 1 GiB gives [`ShmError::TooLarge`]. The descriptor is close-on-exec; hand a
    /// child [`ShmRing::dup_fd`], or send [`ShmRing::fd`] over a Unix socket.
    pub fn create(capacity: usize) -> Result<ShmRing, ShmError> {
        let cap = capacity
            .max(MIN_CAPACITY)
            .checked_next_power_of_two()
            .filter(|&c| c <= MAX_CAPACITY)
            .ok_or(ShmError::TooLarge)?;
        let total = HEADER_SIZE + cap;
        // SAFETY: the name is a valid NUL-terminated string.
        let raw = unsafe {
            libc::memfd_create(
                c"agentos-ring".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        let raw = cvt(raw)?;
        // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain syscalls on a descriptor we own.
        cvt(unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) })?;
        // SAFETY: as above.
        cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), total as libc::off_t) })?;
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: as above.
        cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
        let base = map_segment(&fd, total)?;
        let meta = Meta {
            magic: MAGIC,
            version: VERSION,
            header_size: HEADER_SIZE as u32,
            capacity: cap as u64,
            slot_count: SLOT_COUNT as u32,
        };
        // SAFETY: `base` is a fresh, page-aligned, zero-filled mapping of at least HEADER_SIZE
        // bytes that no other process can see yet; Meta sits at offset 0. All other header words
        // start at zero, which is their initial value.
        unsafe { ptr::write(base.cast::<Meta>(), meta) };
        Ok(ShmRing::from_parts(fd, base, total, cap as u32))
    }

    /// Attaches to a ring segment handed over as a file descriptor.
    ///
    /// Validates the size, the seals, the magic, the version and the capacity; a mismatch is
    /// [`ShmError::BadSegment`].
    pub fn from_fd(fd: OwnedFd) -> Result<ShmRing, ShmError> {
        // SAFETY: stat is plain data; fstat fills it.
        let mut st: libc::stat = unsafe { mem::zeroed() };
        // SAFETY: `st` is writable; `fd` is open.
        cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
        let size = usize::try_from(st.st_size).map_err(|_| bad("negative size"))?;
        if !(HEADER_SIZE + MIN_CAPACITY..=HEADER_SIZE + MAX_CAPACITY).contains(&size) {
            return Err(bad("segment size out of range"));
        }
        // SAFETY: plain fcntl on an open descriptor.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(bad("segment is not sealed against shrinking"));
        }
        let base = map_segment(&fd, size)?;
        // SAFETY: the mapping is at least HEADER_SIZE bytes and page aligned; Meta is written
        // once at creation and only read afterwards.
        let meta = unsafe { ptr::read(base.cast::<Meta>()) };
        let cap = meta.capacity as usize;
        let problem = if meta.magic != MAGIC {
            Some("bad magic")
        } else if meta.version != VERSION {
            Some("unsupported version")
        } else if meta.header_size as usize != HEADER_SIZE || meta.slot_count as usize != SLOT_COUNT
        {
            Some("unexpected header layout")
        } else if !cap.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap) {
            Some("bad capacity")
        } else if HEADER_SIZE + cap != size {
            Some("segment size does not match capacity")
        } else {
            None
        };
        if let Some(p) = problem {
            // SAFETY: unmapping the mapping made above, which nothing references.
            unsafe { libc::munmap(base.cast(), size) };
            return Err(bad(p));
        }
        Ok(ShmRing::from_parts(fd, base, size, cap as u32))
    }

    fn from_parts(fd: OwnedFd, base: *mut u8, map_len: usize, cap: u32) -> ShmRing {
        ShmRing {
            fd,
            base,
            map_len,
            cap,
            producer: Mutex::new(ProducerSlot { pid: 0, slot: None }),
            peer_pid: AtomicI32::new(0),
            recv_busy: AtomicBool::new(false),
            is_consumer: AtomicBool::new(false),
        }
    }

    /// The segment's file descriptor (close-on-exec), e.g. to send over a Unix socket.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A duplicate of the segment's descriptor without close-on-exec, for a child to inherit.
    pub fn dup_fd(&self) -> Result<OwnedFd, ShmError> {
        // SAFETY: F_DUPFD on an open descriptor returns a new descriptor (no FD_CLOEXEC).
        let raw = cvt(unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD, 0) })?;
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    }

    /// Bytes in the data area (a power of two).
    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// The largest payload a message may have: `capacity / 2 - 32` bytes.
    pub fn max_payload(&self) -> usize {
        (self.cap / 2 - REC_HDR) as usize
    }

    fn hdr(&self) -> &Header {
        // SAFETY: `base` maps at least HEADER_SIZE bytes for the life of `self`, page aligned;
        // every field that other processes write is an atomic.
        unsafe { &*self.base.cast::<Header>() }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: the data area starts HEADER_SIZE bytes into the mapping.
        unsafe { self.base.add(HEADER_SIZE) }
    }

    fn mask(&self) -> u32 {
        self.cap - 1
    }

    /// The stamp word at data offset `off` (8-aligned, `off + 8 <= cap`).
    fn stamp_at(&self, off: u32) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= self.cap);
        // SAFETY: in bounds and 8-aligned (checked above; the data area is page aligned).
        unsafe { &*self.data().add(off as usize).cast::<AtomicU64>() }
    }

    /// The record header at data offset `off` (8-aligned, `off + 32 <= cap`).
    fn rec(&self, off: u32) -> &RecHdr {
        assert!(off % 8 == 0 && off + REC_HDR <= self.cap);
        // SAFETY: in bounds and 8-aligned (checked above); all fields are atomics.
        unsafe { &*self.data().add(off as usize).cast::<RecHdr>() }
    }

    /// Records the peer's pid: a blocked `recv`/`send` returns [`ShmError::PeerGone`] once
    /// this process is dead (and, for `recv`, nothing committed is left). 0 clears it.
    pub fn set_peer_pid(&self, pid: i32) {
        self.peer_pid.store(pid, Ordering::Relaxed);
    }

    /// Closes the ring for everyone and wakes all waiters. `send` then returns
    /// [`ShmError::Closed`]; `recv` delivers what is left, then returns `Closed`.
    pub fn close(&self) {
        let h = self.hdr();
        let who = if self.is_consumer.load(Ordering::Relaxed) {
            1
        } else {
            2
        };
        let _ = h
            .state
            .closed
            .compare_exchange(0, who, Ordering::AcqRel, Ordering::Acquire);
        h.data.data_seq.fetch_add(1, Ordering::Release);
        h.space.space_seq.fetch_add(1, Ordering::Release);
        futex_wake_all(&h.data.data_seq);
        futex_wake_all(&h.space.space_seq);
    }

    /// Whether [`ShmRing::close`] was called by any process.
    pub fn is_closed(&self) -> bool {
        self.hdr().state.closed.load(Ordering::Acquire) != 0
    }

    /// How many records were skipped because their producer died before committing them (or
    /// panicked while filling them).
    pub fn abandoned(&self) -> u64 {
        self.hdr().state.abandoned.load(Ordering::Relaxed)
    }

    /// How many committed records were skipped because their checksum did not match.
    pub fn corrupt(&self) -> u64 {
        self.hdr().state.corrupt.load(Ordering::Relaxed)
    }

    /// Bytes reserved between head and tail (committed or still being written), headers and
    /// padding included; approximate while others are active.
    pub fn pending(&self) -> usize {
        let h = self.hdr();
        // Head first: tail can only be newer, so the difference never wraps.
        let hd = word_pos(h.head.head.load(Ordering::Acquire));
        let t = word_pos(h.tail.tail.load(Ordering::Acquire));
        t.wrapping_sub(hd).min(self.cap) as usize
    }

    // -----------------------------------------------------------------------------------------
    // Producer side
    // -----------------------------------------------------------------------------------------

    /// Sends a copy of `payload` tagged with `kind`; returns the message's sequence number.
    ///
    /// When the ring is full: with `timeout == None` (or zero) returns [`ShmError::Full`] at
    /// once; otherwise waits for space up to `timeout`, then returns [`ShmError::Timeout`].
    /// While waiting, returns [`ShmError::PeerGone`] if the consumer (the peer pid, or the
    /// last process that called `recv`) is dead, and [`ShmError::Closed`] if the ring closes.
    /// Payloads over [`ShmRing::max_payload`] give [`ShmError::TooLarge`].
    pub fn send(
        &self,
        kind: u32,
        payload: &[u8],
        timeout: Option<Duration>,
    ) -> Result<u64, ShmError> {
        self.send_with(kind, payload.len(), timeout, |buf| {
            buf.copy_from_slice(payload)
        })
    }

    /// Sends a `len`-byte message built in place: `fill` writes the payload directly into the
    /// segment (the buffer it gets is zero-filled). Waiting and errors as for [`ShmRing::send`].
    ///
    /// If `fill` panics, the record is marked abandoned (the consumer skips it) and the panic
    /// continues.
    pub fn send_with(
        &self,
        kind: u32,
        len: usize,
        timeout: Option<Duration>,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<u64, ShmError> {
        let res = self.reserve_blocking(kind, len, timeout)?;
        let writing = make_stamp(ST_WRITING, res.seq32, res.pid);
        let guard = AbandonOnDrop {
            ring: self,
            off: res.rec_off,
            writing,
            abandoned: make_stamp(ST_ABANDONED, res.seq32, res.pid),
        };
        let start = res.rec_off + REC_HDR;
        // SAFETY: [start, start + len) lies inside the data area (checked when reserving) and
        // belongs exclusively to this reservation until it is committed.
        let buf = unsafe { std::slice::from_raw_parts_mut(self.data().add(start as usize), len) };
        fill(buf);
        let sum = checksum(res.seq, res.len, kind, res.pid, buf);
        let rec = self.rec(res.rec_off);
        rec.checksum.store(sum, Ordering::Relaxed);
        let committed = make_stamp(ST_COMMITTED, res.seq32, res.pid);
        let ok = rec
            .stamp
            .compare_exchange(writing, committed, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok();
        mem::forget(guard);
        self.notify_consumer();
        if ok {
            Ok(res.seq)
        } else {
            Err(bad(
                "reservation was revoked by the consumer (writer thought dead)",
            ))
        }
    }

    fn notify_consumer(&self) {
        let h = self.hdr();
        fence(Ordering::SeqCst);
        // Only the first committer after the consumer went to sleep makes the syscall.
        if h.data.consumer_waiting.load(Ordering::Relaxed) > 0
            && h.data.consumer_waiting.swap(0, Ordering::SeqCst) > 0
        {
            h.data.data_seq.fetch_add(1, Ordering::Release);
            futex_wake_all(&h.data.data_seq);
        }
    }

    fn reserve_blocking(
        &self,
        kind: u32,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<Reservation, ShmError> {
        if len > self.max_payload() {
            return Err(ShmError::TooLarge);
        }
        let len = len as u32;
        let h = self.hdr();
        let pid = current_pid();
        let deadline = timeout
            .filter(|t| !t.is_zero())
            .map(|t| Instant::now().checked_add(t));
        let mut last_probe: Option<Instant> = None;
        loop {
            if let Some(r) = self.reserve(kind, len, pid, true)? {
                return Ok(r);
            }
            let Some(deadline) = deadline else {
                return Err(ShmError::Full);
            };
            let seen = h.space.space_seq.load(Ordering::Acquire);
            h.space.producers_waiting.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let full = !self.has_space(len)?;
            let now = Instant::now();
            let remaining = match deadline {
                Some(d) if now >= d => None,
                Some(d) => Some(d - now),
                None => Some(POLL_SLICE),
            };
            if full && !self.is_closed() {
                if let Some(rem) = remaining {
                    futex_wait(&h.space.space_seq, seen, Some(rem.min(POLL_SLICE)));
                }
            }
            if self.is_closed() {
                return Err(ShmError::Closed);
            }
            if full && remaining.is_none() {
                return Err(ShmError::Timeout);
            }
            let now = Instant::now();
            if last_probe.map_or(true, |t| now.duration_since(t) >= POLL_SLICE) {
                last_probe = Some(now);
                if self.consumer_gone() && !self.has_space(len)? {
                    return Err(ShmError::PeerGone);
                }
            }
        }
    }

    fn consumer_gone(&self) -> bool {
        let peer = self.peer_pid.load(Ordering::Relaxed);
        if peer > 0 && is_dead(peer) {
            return true;
        }
        let c = self.hdr().state.consumer_pid.load(Ordering::Relaxed);
        c > 0 && c != current_pid() && is_dead(c)
    }

    /// (padding, record offset, total bytes) for a record of `size` bytes at tail offset `off`.
    fn layout(&self, off: u32, size: u32) -> (u32, u32, u32) {
        if off + size <= self.cap {
            (0, off, size)
        } else {
            let pad = self.cap - off;
            (pad, 0, pad + size)
        }
    }

    /// A consistent (tail, bytes used) snapshot. Tail is read before head, so a producer
    /// preempted between the two loads may see head already past its stale tail: that only
    /// means the tail moved on, and the snapshot is retaken. Head past an unchanged tail is
    /// corruption.
    fn snapshot(&self) -> Result<(u64, u32), ShmError> {
        let h = self.hdr();
        loop {
            let t = h.tail.tail.load(Ordering::Acquire);
            let hd = h.head.head.load(Ordering::Acquire);
            let used = word_pos(t).wrapping_sub(word_pos(hd));
            if used <= self.cap && word_pos(t) % 8 == 0 {
                return Ok((t, used));
            }
            if h.tail.tail.load(Ordering::Acquire) == t {
                return Err(bad("head/tail out of range"));
            }
        }
    }

    fn has_space(&self, len: u32) -> Result<bool, ShmError> {
        let (t, used) = self.snapshot()?;
        let (_, _, total) = self.layout(word_pos(t) & self.mask(), rec_size(len));
        Ok(u64::from(used) + u64::from(total) <= u64::from(self.cap))
    }

    fn lock_producer(&self) -> MutexGuard<'_, ProducerSlot> {
        self.producer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves space for a record and writes its header ("writing"). `Ok(None)` when full.
    /// With `write_header == false` (test hook) only the tail CAS happens and the announcement
    /// stays, as if the producer died right after reserving.
    fn reserve(
        &self,
        kind: u32,
        len: u32,
        pid: i32,
        write_header: bool,
    ) -> Result<Option<Reservation>, ShmError> {
        let h = self.hdr();
        let mut st = self.lock_producer();
        if st.pid != pid {
            st.pid = pid;
            st.slot = self.claim_slot(pid);
        }
        let slot = st.slot.map(|i| &h.slots[i]);
        let clear = |s: Option<&Slot>| {
            if let Some(s) = s {
                s.total.store(0, Ordering::Release);
            }
        };
        let size = rec_size(len);
        loop {
            if self.is_closed() {
                clear(slot);
                return Err(ShmError::Closed);
            }
            let (w, used) = match self.snapshot() {
                Ok(snap) => snap,
                Err(e) => {
                    clear(slot);
                    return Err(e);
                }
            };
            let (p, s) = (word_pos(w), word_seq(w));
            let off = p & self.mask();
            let (pad, rec_off, total) = self.layout(off, size);
            if u64::from(used) + u64::from(total) > u64::from(self.cap) {
                clear(slot);
                return Ok(None);
            }
            if let Some(sl) = slot {
                sl.from.store(w, Ordering::Relaxed);
                sl.total.store(total, Ordering::Release);
            }
            let next = pack(s.wrapping_add(1), p.wrapping_add(total));
            if h.tail
                .tail
                .compare_exchange(w, next, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // The consumer cannot pass this record before it is committed, so head_seq is at
            // most our sequence number and less than 2^32 behind it.
            let base = h.head.head_seq.load(Ordering::Acquire);
            let seq = base.wrapping_add(u64::from(s.wrapping_sub(base as u32)));
            if !write_header {
                return Ok(Some(Reservation {
                    rec_off,
                    len,
                    seq32: s,
                    seq,
                    pid,
                }));
            }
            let mut revoked = false;
            if pad > 0 {
                revoked |= self
                    .stamp_at(off)
                    .compare_exchange(
                        0,
                        make_stamp(ST_PADDING, s, pid),
                        Ordering::SeqCst,
                        Ordering::Relaxed,
                    )
                    .is_err();
            }
            let rec = self.rec(rec_off);
            rec.len.store(len, Ordering::Relaxed);
            rec.kind.store(kind, Ordering::Relaxed);
            rec.seq.store(seq, Ordering::Relaxed);
            rec.checksum.store(0, Ordering::Relaxed);
            revoked |= rec
                .stamp
                .compare_exchange(
                    0,
                    make_stamp(ST_WRITING, s, pid),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                )
                .is_err();
            clear(slot);
            if revoked {
                return Err(bad(
                    "reservation was revoked by the consumer (writer thought dead)",
                ));
            }
            return Ok(Some(Reservation {
                rec_off,
                len,
                seq32: s,
                seq,
                pid,
            }));
        }
    }

    /// Claims a free producer slot for `pid`, or reclaims one whose owner died with no
    /// unresolved announcement. `None` when all are taken (sending still works; only a crash
    /// between reserving and writing the header is then unrecoverable).
    fn claim_slot(&self, pid: i32) -> Option<usize> {
        let h = self.hdr();
        for (i, s) in h.slots.iter().enumerate() {
            if s.pid
                .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                s.total.store(0, Ordering::Release);
                return Some(i);
            }
        }
        let head_seq = word_seq(h.head.head.load(Ordering::Acquire));
        for (i, s) in h.slots.iter().enumerate() {
            let owner = s.pid.load(Ordering::Acquire);
            if owner <= 0 || owner == pid || !is_dead(owner) {
                continue;
            }
            let total = s.total.load(Ordering::Acquire);
            let from_seq = word_seq(s.from.load(Ordering::Acquire));
            let resolved = total == 0 || (head_seq.wrapping_sub(from_seq) as i32) > 0;
            if resolved
                && s.pid
                    .compare_exchange(owner, pid, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                s.total.store(0, Ordering::Release);
                return Some(i);
            }
        }
        None
    }

    /// Test hook: reserves a record of `len` payload bytes and leaves it in state "writing"
    /// without committing it, as a producer that dies mid-write would. Returns its sequence
    /// number. Not part of the API.
    #[doc(hidden)]
    pub fn debug_reserve_and_abandon(&self, len: usize) -> Result<u64, ShmError> {
        let r = self.reserve_blocking(0, len, None)?;
        Ok(r.seq)
    }

    /// Test hook: reserves space for `len` payload bytes (tail CAS and announcement only) and
    /// writes nothing, as a producer that dies right after its reservation CAS would. Returns
    /// the sequence number. Not part of the API.
    #[doc(hidden)]
    pub fn debug_reserve_unwritten(&self, len: usize) -> Result<u64, ShmError> {
        if len > self.max_payload() {
            return Err(ShmError::TooLarge);
        }
        match self.reserve(0, len as u32, current_pid(), false)? {
            Some(r) => Ok(r.seq),
            None => Err(ShmError::Full),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Consumer side
    // -----------------------------------------------------------------------------------------

    /// Receives the next message, as a view into the segment (zero copy). Dropping the view
    /// releases its space.
    ///
    /// `timeout`: `None` waits forever, `Some(Duration::ZERO)` only tries. Errors:
    /// [`ShmError::Timeout`]; [`ShmError::Closed`] when the ring is closed and empty;
    /// [`ShmError::PeerGone`] when the peer set with [`ShmRing::set_peer_pid`] is dead and
    /// nothing committed is left (an uncommitted record of a dead writer is skipped, never
    /// delivered); [`ShmError::BadSegment`] when the shared state is corrupt beyond repair.
    ///
    /// # Panics
    ///
    /// Only one consumer may receive: panics if another `recv` on this handle is running or a
    /// [`ShmMessage`] from it is still alive.
    pub fn recv(&self, timeout: Option<Duration>) -> Result<ShmMessage<'_>, ShmError> {
        if self.recv_busy.swap(true, Ordering::Acquire) {
            panic!("ShmRing::recv: another recv or ShmMessage is active on this handle (single consumer)");
        }
        let guard = RecvGuard(&self.recv_busy);
        self.is_consumer.store(true, Ordering::Relaxed);
        let h = self.hdr();
        let me = current_pid();
        if h.state.consumer_pid.load(Ordering::Relaxed) != me {
            h.state.consumer_pid.store(me, Ordering::Relaxed);
        }
        let try_only = timeout.is_some_and(|t| t.is_zero());
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let forever = deadline.is_none();
        let mut spins = 0u32;
        let mut last_probe: Option<Instant> = None;
        let mut peer_dead = false;
        let mut unwritten_since: Option<(u64, Instant)> = None;
        loop {
            let closed = self.is_closed();
            let stall = match self.poll_head()? {
                Poll::Ready {
                    head,
                    size,
                    payload,
                    len,
                    kind,
                    seq,
                } => {
                    mem::forget(guard);
                    return Ok(ShmMessage {
                        ring: self,
                        head,
                        size,
                        payload,
                        len,
                        kind,
                        seq,
                    });
                }
                Poll::Skipped => {
                    spins = 0;
                    continue;
                }
                Poll::Stall(s) => s,
            };
            if stall.kind == StallKind::Empty {
                if closed {
                    return Err(ShmError::Closed);
                }
                if peer_dead {
                    return Err(ShmError::PeerGone);
                }
            }
            if !try_only && spins < SPIN_CHECKS + YIELD_CHECKS {
                spins += 1;
                if spins <= SPIN_CHECKS {
                    std::hint::spin_loop();
                } else {
                    // Lets a peer that shares this CPU run (cheap when nobody else is runnable).
                    std::thread::yield_now();
                }
                continue;
            }
            let now = Instant::now();
            if stall.kind == StallKind::Unwritten {
                match unwritten_since {
                    Some((hw, _)) if hw == stall.head => {}
                    _ => unwritten_since = Some((stall.head, now)),
                }
            } else {
                unwritten_since = None;
            }
            if last_probe.map_or(true, |t| now.duration_since(t) >= POLL_SLICE) {
                last_probe = Some(now);
                if self.probe(&stall)? {
                    continue;
                }
                if !peer_dead {
                    let peer = self.peer_pid.load(Ordering::Relaxed);
                    if peer > 0 && is_dead(peer) {
                        peer_dead = true;
                        continue;
                    }
                }
            }
            // A reservation nobody can resolve while the peer is dead: report rather than hang.
            if peer_dead {
                if let Some((_, since)) = unwritten_since {
                    if now.duration_since(since) >= POLL_SLICE {
                        return Err(ShmError::PeerGone);
                    }
                }
            }
            let remaining = match deadline {
                Some(d) if now >= d => return Err(ShmError::Timeout),
                Some(d) => Some(d - now),
                None => None,
            };
            if try_only {
                return Err(ShmError::Timeout);
            }
            let needs_polling =
                stall.kind != StallKind::Empty || self.peer_pid.load(Ordering::Relaxed) > 0;
            let slice = match (remaining, needs_polling) {
                (Some(r), true) => Some(r.min(POLL_SLICE)),
                (Some(r), false) => Some(r),
                (None, true) => Some(POLL_SLICE),
                (None, false) => None,
            };
            debug_assert!(forever || slice.is_some());
            let seen = h.data.data_seq.load(Ordering::Acquire);
            h.data.consumer_waiting.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if !self.stall_changed(&stall) {
                futex_wait(&h.data.data_seq, seen, slice);
            }
            // Single consumer: nobody else sleeps on data_seq, so clear our registration.
            h.data.consumer_waiting.store(0, Ordering::Relaxed);
        }
    }

    /// Whether anything the consumer waits on changed since `stall` was observed.
    fn stall_changed(&self, stall: &Stall) -> bool {
        let h = self.hdr();
        if h.tail.tail.load(Ordering::SeqCst) != stall.tail || self.is_closed() {
            return true;
        }
        if stall.kind == StallKind::Empty {
            return false;
        }
        let off = word_pos(stall.head) & self.mask();
        self.stamp_at(off).load(Ordering::SeqCst) != stall.stamp
    }

    /// Looks at the record at head: deliver it, skip it, or report why it cannot.
    fn poll_head(&self) -> Result<Poll, ShmError> {
        let h = self.hdr();
        let head = h.head.head.load(Ordering::Acquire);
        let tail = h.tail.tail.load(Ordering::Acquire);
        let (hpos, hseq32) = (word_pos(head), word_seq(head));
        let avail = word_pos(tail).wrapping_sub(hpos);
        if avail == 0 {
            return Ok(Poll::Stall(Stall {
                kind: StallKind::Empty,
                head,
                tail,
                stamp: 0,
            }));
        }
        if avail > self.cap || hpos % 8 != 0 {
            return Err(bad("head/tail out of range"));
        }
        let off = hpos & self.mask();
        let stamp = self.stamp_at(off).load(Ordering::Acquire);
        if !stamp_matches(stamp, hseq32) {
            return Ok(Poll::Stall(Stall {
                kind: StallKind::Unwritten,
                head,
                tail,
                stamp,
            }));
        }
        let state = stamp_state(stamp);
        if state == ST_PADDING {
            let pad = self.cap - off;
            if pad > avail {
                return Err(bad("padding record past tail"));
            }
            self.release(head, pad, false);
            return Ok(Poll::Skipped);
        }
        if !matches!(state, ST_WRITING | ST_COMMITTED | ST_ABANDONED) {
            return Err(bad("unknown record state"));
        }
        if off + REC_HDR > self.cap {
            return Err(bad("record header past the end of the data area"));
        }
        if state == ST_WRITING {
            return Ok(Poll::Stall(Stall {
                kind: StallKind::Writing(stamp_pid(stamp)),
                head,
                tail,
                stamp,
            }));
        }
        let rec = self.rec(off);
        let len = rec.len.load(Ordering::Relaxed);
        let size = self.checked_size(off, len, avail)?;
        if state == ST_ABANDONED {
            self.release(head, size, true);
            h.state.abandoned.fetch_add(1, Ordering::Relaxed);
            return Ok(Poll::Skipped);
        }
        let kind = rec.kind.load(Ordering::Relaxed);
        let seq = rec.seq.load(Ordering::Relaxed);
        let sum = rec.checksum.load(Ordering::Relaxed);
        // SAFETY: [off + 32, off + 32 + len) is inside the data area (checked_size) and the
        // committed record is not written by anyone until the consumer releases it.
        let payload = unsafe { self.data().add((off + REC_HDR) as usize) };
        // SAFETY: as above.
        let bytes = unsafe { std::slice::from_raw_parts(payload, len as usize) };
        let expected_seq = h.head.head_seq.load(Ordering::Relaxed);
        if seq != expected_seq || checksum(seq, len, kind, stamp_pid(stamp), bytes) != sum {
            self.release(head, size, true);
            h.state.corrupt.fetch_add(1, Ordering::Relaxed);
            return Ok(Poll::Skipped);
        }
        Ok(Poll::Ready {
            head,
            size,
            payload,
            len: len as usize,
            kind,
            seq,
        })
    }

    /// The full size of a record with payload `len` at `off`, checked against the data area
    /// and the reserved bytes.
    fn checked_size(&self, off: u32, len: u32, avail: u32) -> Result<u32, ShmError> {
        if len as usize > self.max_payload() {
            return Err(bad("record length out of range"));
        }
        let size = rec_size(len);
        if off + size > self.cap || size > avail {
            return Err(bad("record extends past its reservation"));
        }
        Ok(size)
    }

    /// Tries to resolve a stall by detecting a dead producer. True when a record was skipped.
    fn probe(&self, stall: &Stall) -> Result<bool, ShmError> {
        match stall.kind {
            StallKind::Empty => Ok(false),
            StallKind::Writing(pid) => {
                if !is_dead(pid) {
                    return Ok(false);
                }
                let off = word_pos(stall.head) & self.mask();
                // Re-check: it may have been committed just before the writer died.
                let stamp = self.stamp_at(off).load(Ordering::Acquire);
                if stamp != stall.stamp {
                    return Ok(true);
                }
                let avail = word_pos(self.hdr().tail.tail.load(Ordering::Acquire))
                    .wrapping_sub(word_pos(stall.head));
                let size =
                    self.checked_size(off, self.rec(off).len.load(Ordering::Relaxed), avail)?;
                self.release(stall.head, size, true);
                self.hdr().state.abandoned.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            StallKind::Unwritten => self.recover_unwritten(stall.head),
        }
    }

    /// Head is reserved but its header is unwritten. If every process that announced this
    /// reservation is dead, skip it using the announced size.
    fn recover_unwritten(&self, head: u64) -> Result<bool, ShmError> {
        let h = self.hdr();
        let (hpos, hseq32) = (word_pos(head), word_seq(head));
        let mut ends = [0u32; SLOT_COUNT];
        let mut n = 0;
        for s in &h.slots {
            let pid = s.pid.load(Ordering::Acquire);
            if pid <= 0 || s.total.load(Ordering::Acquire) == 0 {
                continue;
            }
            if word_seq(s.from.load(Ordering::Acquire)) != hseq32 {
                continue;
            }
            if !is_dead(pid) {
                return Ok(false);
            }
            // The owner is dead, so the slot is stable now: read it again.
            let total = s.total.load(Ordering::Acquire);
            let from = s.from.load(Ordering::Acquire);
            if total == 0 || word_seq(from) != hseq32 {
                continue;
            }
            let end = word_pos(from).wrapping_add(total);
            if !ends[..n].contains(&end) {
                ends[n] = end;
                n += 1;
            }
        }
        let tail = h.tail.tail.load(Ordering::Acquire);
        let avail = word_pos(tail).wrapping_sub(hpos);
        let fits = |end: u32| {
            let size = end.wrapping_sub(hpos);
            size > 0 && size <= avail && size % 8 == 0
        };
        let end = match n {
            0 => return Ok(false),
            1 => ends[0],
            _ => {
                // Several dead announcers (losers of the CAS that died before retrying): keep
                // the one whose end is where the next reservation starts.
                let next_seq = hseq32.wrapping_add(1);
                let consistent = |end: u32| {
                    fits(end)
                        && (end == word_pos(tail)
                            || stamp_matches(
                                self.stamp_at(end & self.mask()).load(Ordering::Acquire),
                                next_seq,
                            ))
                };
                let mut found = None;
                for &e in &ends[..n] {
                    if consistent(e) {
                        if found.is_some() {
                            return Ok(false);
                        }
                        found = Some(e);
                    }
                }
                match found {
                    Some(e) => e,
                    None => return Ok(false),
                }
            }
        };
        if !fits(end) {
            return Ok(false);
        }
        let off = hpos & self.mask();
        if stamp_matches(self.stamp_at(off).load(Ordering::Acquire), hseq32) {
            return Ok(true); // written after all
        }
        self.release(head, end.wrapping_sub(hpos), true);
        h.state.abandoned.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Zeroes `size` bytes at head, advances head (and the sequence number when `bump`), and
    /// wakes producers waiting for space.
    fn release(&self, head: u64, size: u32, bump: bool) {
        let h = self.hdr();
        let (hpos, hseq32) = (word_pos(head), word_seq(head));
        let mut off = hpos & self.mask();
        let mut left = size;
        while left > 0 {
            let n = left.min(self.cap - off);
            // SAFETY: [off, off + n) is inside the data area; it is the released reservation,
            // which no producer writes until head has moved past it (release store below).
            unsafe { ptr::write_bytes(self.data().add(off as usize), 0, n as usize) };
            left -= n;
            off = (off + n) & self.mask();
        }
        let next_seq32 = if bump {
            let s = h.head.head_seq.load(Ordering::Relaxed);
            h.head.head_seq.store(s.wrapping_add(1), Ordering::Relaxed);
            hseq32.wrapping_add(1)
        } else {
            hseq32
        };
        h.head
            .head
            .store(pack(next_seq32, hpos.wrapping_add(size)), Ordering::Release);
        fence(Ordering::SeqCst);
        if h.space.producers_waiting.load(Ordering::Relaxed) > 0
            && h.space.producers_waiting.swap(0, Ordering::SeqCst) > 0
        {
            h.space.space_seq.fetch_add(1, Ordering::Release);
            futex_wake_all(&h.space.space_seq);
        }
    }
}

impl Drop for ShmRing {
    fn drop(&mut self) {
        let me = current_pid();
        let st = self.producer.get_mut().unwrap_or_else(|e| e.into_inner());
        if st.pid == me {
            if let Some(i) = st.slot {
                let s = &self.hdr().slots[i];
                s.total.store(0, Ordering::Release);
                let _ = s
                    .pid
                    .compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
            }
        }
        // SAFETY: unmapping our own mapping; no references into it outlive `self` (messages
        // borrow the ring).
        unsafe { libc::munmap(self.base.cast(), self.map_len) };
    }
}

/// Marks a reserved record abandoned if its producer unwinds before committing.
struct AbandonOnDrop<'r> {
    ring: &'r ShmRing,
    off: u32,
    writing: u64,
    abandoned: u64,
}

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.ring.rec(self.off).stamp.compare_exchange(
            self.writing,
            self.abandoned,
            Ordering::SeqCst,
            Ordering::Relaxed,
        );
        self.ring.notify_consumer();
    }
}

/// Clears the receive flag on every exit of `recv` that returns no message.
struct RecvGuard<'r>(&'r AtomicBool);

impl Drop for RecvGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A received message: a view of a committed record inside the segment. Dropping it releases
/// the record's space to the producers.
pub struct ShmMessage<'a> {
    ring: &'a ShmRing,
    head: u64,
    size: u32,
    payload: *const u8,
    len: usize,
    kind: u32,
    seq: u64,
}

// SAFETY: the view only reads the record it owns until drop, and its drop (head store,
// futex wake) may run on any thread; the ring itself is Sync.
unsafe impl Send for ShmMessage<'_> {}
// SAFETY: shared access only reads the immutable record.
unsafe impl Sync for ShmMessage<'_> {}

impl ShmMessage<'_> {
    /// The payload bytes, in place in the shared segment (no copy).
    pub fn payload(&self) -> &[u8] {
        // SAFETY: the record stays reserved for this view until it is dropped; its bytes were
        // bounds-checked and checksum-verified, and no producer writes them meanwhile.
        unsafe { std::slice::from_raw_parts(self.payload, self.len) }
    }

    /// The kind tag given to `send`.
    pub fn kind(&self) -> u32 {
        self.kind
    }

    /// The message's sequence number (consecutive per ring, in delivery order; equal to what
    /// `send` returned).
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl fmt::Debug for ShmMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmMessage")
            .field("seq", &self.seq)
            .field("kind", &self.kind)
            .field("len", &self.len)
            .finish()
    }
}

impl Drop for ShmMessage<'_> {
    fn drop(&mut self) {
        self.ring.release(self.head, self.size, true);
        self.ring.recv_busy.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    //! In-crate tests (the full suite, with benchmarks and SIGKILL rounds, was developed
    //! alongside; these keep the essentials in the main test run).

    use super::*;

    const NOW: Option<Duration> = Some(Duration::ZERO);
    const LONG: Option<Duration> = Some(Duration::from_secs(30));

    /// Forks a child that runs `f` and `_exit`s with its result (101 on panic).
    fn fork_child(f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child runs only `f` (allocation-free ring calls) and then _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
            // SAFETY: ends the child without running the test harness or destructors.
            unsafe { libc::_exit(code) };
        }
        pid
    }

    fn wait_child(pid: i32) -> i32 {
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            1000
        }
    }

    #[test]
    fn order_wrap_and_limits() {
        let r = ShmRing::create(4096).unwrap();
        assert_eq!(r.capacity(), 4096);
        assert!(matches!(
            r.send(0, &vec![0; r.max_payload() + 1], None),
            Err(ShmError::TooLarge)
        ));
        assert!(matches!(r.recv(NOW), Err(ShmError::Timeout)));
        let mut next = 0u64;
        let mut delivered = 0u64;
        for round in 0..2000u64 {
            // Varying sizes, including 0 and the maximum, so records hit the end exactly,
            // need padding, and wrap many times.
            let len = ((round * 7919) % (r.max_payload() as u64 + 1)) as usize;
            let len = if round % 5 == 0 { 0 } else { len };
            let p: Vec<u8> = (0..len).map(|i| (i as u64 + round) as u8).collect();
            loop {
                match r.send(round as u32, &p, None) {
                    Ok(seq) => {
                        assert_eq!(seq, next);
                        next += 1;
                        break;
                    }
                    Err(ShmError::Full) => {
                        let m = r.recv(NOW).unwrap();
                        assert_eq!(m.seq(), delivered);
                        delivered += 1;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        while delivered < next {
            assert_eq!(r.recv(NOW).unwrap().seq(), delivered);
            delivered += 1;
        }
        assert_eq!(r.pending(), 0);
        assert!(matches!(
            r.send(0, &[1; 3000], None),
            Err(ShmError::TooLarge)
        ));
        r.close();
        assert!(matches!(r.send(0, b"x", None), Err(ShmError::Closed)));
        assert!(matches!(r.recv(None), Err(ShmError::Closed)));
    }

    #[test]
    fn zero_copy_address_range() {
        let r = ShmRing::create(1 << 14).unwrap();
        let data = r.data() as usize..r.data() as usize + r.capacity();
        let mut at = 0;
        r.send_with(1, 100, None, |buf| {
            at = buf.as_ptr() as usize;
            buf.fill(0xAB);
        })
        .unwrap();
        assert!(data.contains(&at) && data.contains(&(at + 99)));
        let m = r.recv(NOW).unwrap();
        let p = m.payload();
        assert_eq!(p.as_ptr() as usize, at);
        assert!(data.contains(&(p.as_ptr() as usize + p.len() - 1)));
        assert!(p.iter().all(|&b| b == 0xAB));
    }

    #[test]
    fn threads_exactly_once_in_order() {
        let r = ShmRing::create(1 << 14).unwrap();
        const PER: u64 = 20_000;
        std::thread::scope(|s| {
            for id in 0..4u64 {
                let r = &r;
                s.spawn(move || {
                    for c in 0..PER {
                        r.send(id as u32, &c.to_le_bytes(), LONG).unwrap();
                    }
                });
            }
            let mut next = [0u64; 4];
            for _ in 0..4 * PER {
                let m = r.recv(LONG).unwrap();
                let c = u64::from_le_bytes(m.payload().try_into().unwrap());
                assert_eq!(c, next[m.kind() as usize]);
                next[m.kind() as usize] += 1;
            }
        });
        assert_eq!((r.corrupt(), r.abandoned()), (0, 0));
    }

    #[test]
    fn crashed_producers_are_skipped_then_peer_gone() {
        for unwritten in [false, true] {
            let ring = ShmRing::create(1 << 14).unwrap();
            let r = &ring;
            let child = fork_child(move || {
                for i in 0..5u64 {
                    if r.send(1, &i.to_le_bytes(), LONG).is_err() {
                        return 2;
                    }
                }
                let res = if unwritten {
                    r.debug_reserve_unwritten(40)
                } else {
                    r.debug_reserve_and_abandon(40)
                };
                i32::from(res.is_err())
            });
            ring.set_peer_pid(child);
            for i in 0..5u64 {
                let m = ring.recv(LONG).unwrap();
                assert_eq!((m.kind(), m.payload()), (1, &i.to_le_bytes()[..]));
            }
            assert!(matches!(ring.recv(LONG), Err(ShmError::PeerGone)));
            assert_eq!(ring.abandoned(), 1);
            assert_eq!(wait_child(child), 0);
            // The ring still works after skipping the torn record.
            ring.send(2, b"after", None).unwrap();
            assert_eq!(ring.recv(NOW).unwrap().payload(), b"after");
        }
    }

    #[test]
    fn sigkilled_producer_leaves_intact_prefix() {
        for round in 0..5u64 {
            let ring = ShmRing::create(4096).unwrap();
            let r = &ring;
            let child = fork_child(move || {
                let mut i = 0u64;
                loop {
                    let mut buf = [0u8; 64];
                    buf[..8].copy_from_slice(&i.to_le_bytes());
                    let len = 8 + (i % 50) as usize;
                    if r.send(3, &buf[..len], LONG).is_err() {
                        return 2;
                    }
                    i += 1;
                }
            });
            ring.set_peer_pid(child);
            let mut next = 0u64;
            loop {
                if next == 500 + round * 300 {
                    // SAFETY: signalling our own child.
                    unsafe { libc::kill(child, libc::SIGKILL) };
                }
                match ring.recv(LONG) {
                    Ok(m) => {
                        let p = m.payload();
                        assert_eq!(u64::from_le_bytes(p[..8].try_into().unwrap()), next);
                        assert_eq!(p.len(), 8 + (next % 50) as usize);
                        next += 1;
                    }
                    Err(ShmError::PeerGone) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            assert!(next >= 500 + round * 300);
            assert_eq!(ring.corrupt(), 0);
            assert_eq!(wait_child(child), 1000);
        }
    }
}
