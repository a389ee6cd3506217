//! `agentos_channel`: a shared-memory channel between two processes.

use super::mailbox::agentos_mailbox_id;
use super::runtime::agentos_runtime;
use super::status::agentos_status;
use super::string::into_c_string;
use super::{as_ref, non_null, str_arg, write_out};
use crate::handle::Handle;
use crate::msg::channel::{Channel, View};
use std::ffi::c_char;
use std::sync::Arc;
use std::time::Duration;

/// A duplex channel between two processes over shared memory (two rings in memfd segments,
/// mode 0600, never named in the file system). Any number of threads may send; one thread at a
/// time receives. Wake-ups use futexes, never busy waiting. A message is delivered whole or
/// not at all: a record torn by a crashed writer, or failing its checksum, is skipped and never
/// delivered, and nothing a sender was told was sent is lost.
///
/// Ownership: from `agentos_channel_new` (parent) or `agentos_channel_attach` (child); freed with
/// `agentos_channel_free`. Independent of any runtime.
/// Thread safety: send from any thread; `agentos_channel_recv` from one thread at a time.
pub struct agentos_channel {
    ch: Arc<Channel>,
}

/// A received message, read in place in the shared segment.
/// Ownership: from `agentos_channel_recv`; must be freed with `agentos_shm_view_free` before
/// the next `agentos_channel_recv` on the same channel and before the channel is freed.
/// Thread safety: read from any thread while it is alive.
pub struct agentos_shm_view {
    // Borrows the channel's ring; the channel outlives it (documented contract).
    view: View<'static>,
    _ch: Arc<Channel>,
}

fn timeout(ms: i32) -> Option<Duration> {
    match ms {
        m if m < 0 => None,
        m => Some(Duration::from_millis(m as u64)),
    }
}

/// Creates a channel whose two rings hold `capacity` bytes each (rounded up to a power of two,
/// at least 4096; a message may take up to half). Returns `OK`, `NULL_ARGUMENT`,
/// `LIMIT_EXCEEDED` (capacity over 1 GiB) or `IO`. Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_channel_new(
    capacity: usize,
    out: *mut *mut agentos_channel,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        non_null(out, "out")?;
        let ch = Arc::new(Channel::create(capacity)?);
        write_out(out, Box::into_raw(Box::new(agentos_channel { ch })));
        Ok(())
    })
}

/// Prepares the channel for a child process: makes two inheritable descriptors and returns the
/// spec string (e.g. `"agentos-shm:7,8"`) the child passes to `agentos_channel_attach` — in an
/// environment variable or an argument across `exec`, or directly after `fork`. After starting
/// the child, call `agentos_channel_close_child_fds` in the parent.
/// On success `*out` receives a string to free with `agentos_string_free`.
/// Returns `OK`, `NULL_ARGUMENT` or `IO`. Thread safety: one thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_channel_child_spec(
    ch: *const agentos_channel,
    out: *mut *mut c_char,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let ch = as_ref(ch, "ch")?;
        non_null(out, "out")?;
        let spec = ch.ch.child_spec()?;
        write_out(out, into_c_string(spec));
        Ok(())
    })
}

/// Closes the parent's copies of the descriptors made by `agentos_channel_child_spec` (once the
/// child has them). Returns `OK` or `NULL_ARGUMENT`. Thread safety: one thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_channel_close_child_fds(
    ch: *const agentos_channel,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        as_ref(ch, "ch")?.ch.close_child_fds();
        Ok(())
    })
}

/// Attaches the child's end of a channel from the spec its parent handed it. Only descriptors
/// this process actually holds can be attached. Returns `OK`; `NULL_ARGUMENT`; `INVALID_UTF8`;
/// `INVALID_ARGUMENT` (not a spec, a descriptor not open here, or not a channel segment).
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_channel_attach(
    spec: *const c_char,
    out: *mut *mut agentos_channel,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let spec = str_arg(spec, "spec")?;
        non_null(out, "out")?;
        let ch = Arc::new(Channel::attach(spec)?);
        write_out(out, Box::into_raw(Box::new(agentos_channel { ch })));
        Ok(())
    })
}

/// Tells the channel the peer's process id, so that its death is reported as
/// `AGENTOS_STATUS_PEER_GONE` (after everything it sent has been received) instead of a wait.
/// Returns `OK` or `NULL_ARGUMENT`. Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_channel_set_peer(
    ch: *const agentos_channel,
    pid: i32,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        as_ref(ch, "ch")?.ch.set_peer(pid);
        Ok(())
    })
}

/// Sends `len` bytes at `data` (copied once, into the shared segment) tagged with `kind`. When
/// the ring is full: `timeout_ms` 0 fails at once with `BUSY`, positive waits that long
/// (`TIMEOUT`), negative waits as long as it takes. `OK` means the message is committed: the
/// peer will get it even if this process dies right after.
/// Returns `OK`, `NULL_ARGUMENT`, `BUSY`, `TIMEOUT`, `LIMIT_EXCEEDED` (over half the capacity),
/// `CLOSED`, `PEER_GONE`. Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_channel_send(
    ch: *const agentos_channel,
    kind: u32,
    data: *const u8,
    len: usize,
    timeout_ms: i32,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let ch = as_ref(ch, "ch")?;
        let bytes: &[u8] = if len == 0 {
            &[]
        } else {
            non_null(data, "data")?;
            std::slice::from_raw_parts(data, len)
        };
        let t = if timeout_ms == 0 {
            None
        } else {
            timeout(timeout_ms).or(Some(Duration::from_secs(u32::MAX as u64)))
        };
        ch.ch.send(kind, bytes, t)
    })
}

/// Receives the next message, waiting up to `timeout_ms` (negative = no limit). On `OK`, `*out`
/// receives a view of the bytes in place in the shared segment (no copy); free it with
/// `agentos_shm_view_free` before receiving again. Returns `OK`, `NULL_ARGUMENT`, `TIMEOUT`,
/// `BUSY` (a previous view is still held), `CLOSED`, `PEER_GONE` (the peer died and everything
/// it committed has been received). Thread safety: one receiving thread at a time.
#[no_mangle]
pub unsafe extern "C" fn agentos_channel_recv(
    ch: *const agentos_channel,
    timeout_ms: i32,
    out: *mut *mut agentos_shm_view,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let ch = as_ref(ch, "ch")?;
        non_null(out, "out")?;
        let view = ch.ch.recv(timeout(timeout_ms))?;
        // SAFETY: the view borrows the channel's ring, which the Arc kept in the view box keeps
        // alive; C must free the view before freeing the channel (documented).
        let view: View<'static> = std::mem::transmute::<View<'_>, View<'static>>(view);
        write_out(
            out,
            Box::into_raw(Box::new(agentos_shm_view {
                view,
                _ch: ch.ch.clone(),
            })),
        );
        Ok(())
    })
}

/// The view's bytes, in the shared segment: `*data` (NULL when empty) and `*len`, valid until
/// the view is freed. Returns `OK` or `NULL_ARGUMENT`. Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_shm_view_data(
    v: *const agentos_shm_view,
    data: *mut *const u8,
    len: *mut usize,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let v = as_ref(v, "view")?;
        non_null(data, "data")?;
        non_null(len, "len")?;
        let p = v.view.payload();
        write_out(
            data,
            if p.is_empty() {
                std::ptr::null()
            } else {
                p.as_ptr()
            },
        );
        write_out(len, p.len());
        Ok(())
    })
}

/// The kind the sender tagged the message with (0 for NULL). Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_shm_view_kind(v: *const agentos_shm_view) -> u32 {
    ffi_boundary!({ v.as_ref().map_or(0, |v| v.view.kind()) })
}

/// Releases a view (its space in the ring becomes free). NULL does nothing.
/// Thread safety: once per view.
#[no_mangle]
pub unsafe extern "C" fn agentos_shm_view_free(v: *mut agentos_shm_view) {
    ffi_boundary!({
        if !v.is_null() {
            drop(Box::from_raw(v));
        }
    })
}

/// Closes the channel in both directions: the peer's sends fail and its receives end with
/// `CLOSED` once drained. Returns `OK` or `NULL_ARGUMENT`. Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_channel_close(ch: *const agentos_channel) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        as_ref(ch, "ch")?.ch.close();
        Ok(())
    })
}

/// Connects the channel to the runtime's mailboxes, so both processes use the mailbox API:
/// every message arriving on the channel is delivered to mailbox `inbox` (sender and
/// correlation id preserved), and `*outbox` receives a new mailbox whose messages are sent over
/// the channel (to the peer's bridged inbox). A bridge thread forwards incoming traffic until
/// the channel closes or the peer dies, then closes `inbox` (waiters wake with `CLOSED`).
/// Incoming bytes are copied once out of shared memory into the message.
/// Returns `OK`, `NULL_ARGUMENT`, `STALE_HANDLE`, `IO`. Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_channel_bridge(
    rt: *const agentos_runtime,
    ch: *const agentos_channel,
    inbox: agentos_mailbox_id,
    outbox: *mut agentos_mailbox_id,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        let ch = as_ref(ch, "ch")?;
        non_null(outbox, "outbox")?;
        let shared = rt.inner.shared();
        let inbox = shared.mailbox(Handle::from_raw(inbox))?;
        let h = shared.bridge_channel(ch.ch.clone(), inbox)?;
        write_out(outbox, h.raw());
        Ok(())
    })
}

/// Frees a channel (closing it if the other side still uses it only when this was the last
/// reference: a bridge keeps its own). Free every view first. NULL does nothing.
/// Thread safety: once, with no call on it in progress.
#[no_mangle]
pub unsafe extern "C" fn agentos_channel_free(ch: *mut agentos_channel) {
    ffi_boundary!({
        if !ch.is_null() {
            drop(Box::from_raw(ch));
        }
    })
}
