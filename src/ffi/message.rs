//! `agentos_message`: an immutable, reference-counted message, read in place.

use super::status::agentos_status;
use super::{as_mut, non_null, write_out};
use crate::error::{Error, Status};
use crate::msg::message::{Message, MessageBuilder};
use std::ffi::c_char;
use std::mem::ManuallyDrop;

/// A message: immutable bytes plus a header (id, sender, recipient, kind, topic, correlation id,
/// time). The bytes are shared, never copied, by every clone and every delivery.
///
/// Ownership: from `agentos_message_new`, `agentos_message_builder_seal`,
/// `agentos_message_clone`, `agentos_mailbox_recv` or `agentos_mailbox_request`; released with
/// `agentos_message_free`. A message does not depend on its runtime: it stays valid after the
/// runtime is freed. Thread safety: immutable; read it from any thread, free it once.
pub struct agentos_message {
    // Opaque: a handle is a message's own reference-counted pointer (no wrapper allocation).
    _opaque: [u8; 0],
}

/// A message borrowed from a C handle for the duration of a call.
pub(crate) struct MessageRef(ManuallyDrop<Message>);

impl std::ops::Deref for MessageRef {
    type Target = Message;
    fn deref(&self) -> &Message {
        &self.0
    }
}

impl agentos_message {
    /// Hands a message to C: the handle is the message's own reference.
    pub(crate) fn wrap(msg: Message) -> *mut agentos_message {
        msg.into_raw() as *mut agentos_message
    }

    /// Borrows the message behind a handle (NULL gives `None`).
    ///
    /// # Safety
    /// A non-NULL `p` must be a live handle from [`agentos_message::wrap`].
    pub(crate) unsafe fn borrow(p: *const agentos_message) -> Option<MessageRef> {
        (!p.is_null()).then(|| {
            MessageRef(ManuallyDrop::new(Message::from_raw(
                p as *const std::ffi::c_void,
            )))
        })
    }

    /// Borrows the message behind a handle, or fails with `NULL_ARGUMENT` naming `name`.
    ///
    /// # Safety
    /// As [`agentos_message::borrow`].
    pub(crate) unsafe fn borrow_arg(
        p: *const agentos_message,
        name: &str,
    ) -> crate::Result<MessageRef> {
        Self::borrow(p)
            .ok_or_else(|| Error::new(Status::NullArgument, format!("argument `{name}` is NULL")))
    }
}

/// A writable buffer that becomes a message when sealed, for building large payloads in place.
/// Ownership: from `agentos_message_builder_new`; consumed by `agentos_message_builder_seal` or
/// released by `agentos_message_builder_free`. Thread safety: one thread at a time.
pub struct agentos_message_builder {
    b: MessageBuilder,
}

/// Makes a message from `len` bytes at `data`, copied once (the only copy the message's bytes
/// will ever see). `data` may be NULL only when `len` is 0. `kind` is the application's own
/// tag (values from 1000 up are free; below are the library's).
///
/// On success `*out` receives a message to free with `agentos_message_free`.
/// Returns `OK` or `NULL_ARGUMENT`. Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_message_new(
    kind: u32,
    data: *const u8,
    len: usize,
    out: *mut *mut agentos_message,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        non_null(out, "out")?;
        let bytes: &[u8] = if len == 0 {
            &[]
        } else {
            non_null(data, "data")?;
            std::slice::from_raw_parts(data, len)
        };
        write_out(out, agentos_message::wrap(Message::copy_from(kind, bytes)));
        Ok(())
    })
}

/// Makes a zeroed, writable buffer of `len` bytes to fill in place (see
/// `agentos_message_builder_data`), then seal into a message without copying.
/// Returns `OK` or `NULL_ARGUMENT`. Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_message_builder_new(
    len: usize,
    out: *mut *mut agentos_message_builder,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        non_null(out, "out")?;
        if len > isize::MAX as usize {
            return Err(Error::new(Status::LimitExceeded, "message too large"));
        }
        let b = Box::new(agentos_message_builder {
            b: MessageBuilder::new(len),
        });
        write_out(out, Box::into_raw(b));
        Ok(())
    })
}

/// The builder's writable buffer: `*data` (valid until the builder is sealed or freed) and its
/// length. Returns `OK` or `NULL_ARGUMENT`. Thread safety: one thread at a time per builder.
#[no_mangle]
pub unsafe extern "C" fn agentos_message_builder_data(
    b: *mut agentos_message_builder,
    data: *mut *mut u8,
    len: *mut usize,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let b = as_mut(b, "builder")?;
        non_null(data, "data")?;
        non_null(len, "len")?;
        let buf = b.b.data_mut();
        write_out(len, buf.len());
        write_out(data, buf.as_mut_ptr());
        Ok(())
    })
}

/// Seals the builder into an immutable message (no copy: the buffer becomes the payload) and
/// frees the builder. On success `*out` receives the message.
/// Returns `OK` or `NULL_ARGUMENT` (then the builder is untouched). Thread safety: one thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_message_builder_seal(
    b: *mut agentos_message_builder,
    kind: u32,
    out: *mut *mut agentos_message,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        non_null(b, "builder")?;
        non_null(out, "out")?;
        let b = Box::from_raw(b);
        write_out(out, agentos_message::wrap(b.b.seal(kind)));
        Ok(())
    })
}

/// Frees an unsealed builder. `agentos_message_builder_free(NULL)` does nothing.
/// Thread safety: once per builder.
#[no_mangle]
pub unsafe extern "C" fn agentos_message_builder_free(b: *mut agentos_message_builder) {
    ffi_boundary!({
        if !b.is_null() {
            drop(Box::from_raw(b));
        }
    })
}

/// A borrowed view of the message's bytes: `*data` (NULL when empty) and `*len`, valid until
/// this `agentos_message` is freed (other clones do not matter). The bytes are never copied:
/// within a process, a receiver sees the very buffer the sender made.
/// Returns `OK` or `NULL_ARGUMENT`. Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_message_data(
    msg: *const agentos_message,
    data: *mut *const u8,
    len: *mut usize,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let m = agentos_message::borrow_arg(msg, "msg")?;
        non_null(data, "data")?;
        non_null(len, "len")?;
        let p = m.payload();
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

/// Another reference to the same message: raises a count, copies nothing. Free each reference
/// with `agentos_message_free`. The new reference is the same pointer value as `msg` (a handle
/// is the message's own counted pointer), so do not use handle addresses as identities; use
/// `agentos_message_id`. Returns `OK` or `NULL_ARGUMENT`. Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_message_clone(
    msg: *const agentos_message,
    out: *mut *mut agentos_message,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let m = agentos_message::borrow_arg(msg, "msg")?;
        non_null(out, "out")?;
        write_out(out, agentos_message::wrap(Message::clone(&m)));
        Ok(())
    })
}

/// The message's kind (0 for NULL). Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_message_kind(msg: *const agentos_message) -> u32 {
    ffi_boundary!({ agentos_message::borrow(msg).map_or(0, |m| m.header().kind) })
}

/// The message's unique id (0 for NULL). Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_message_id(msg: *const agentos_message) -> u64 {
    ffi_boundary!({ agentos_message::borrow(msg).map_or(0, |m| m.header().id) })
}

/// The sending mailbox (0 for the host, or for NULL). Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_message_sender(msg: *const agentos_message) -> u64 {
    ffi_boundary!({ agentos_message::borrow(msg).map_or(0, |m| m.header().sender) })
}

/// The receiving mailbox (0 before it was sent, or for NULL). Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_message_recipient(msg: *const agentos_message) -> u64 {
    ffi_boundary!({ agentos_message::borrow(msg).map_or(0, |m| m.header().recipient) })
}

/// The correlation id linking a reply to its request (0 for none, or for NULL).
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_message_correlation(msg: *const agentos_message) -> u64 {
    ffi_boundary!({ agentos_message::borrow(msg).map_or(0, |m| m.header().correlation) })
}

/// When the message (this delivery) was made, in nanoseconds since the Unix epoch, from the
/// coarse real-time clock (resolution of a few milliseconds); 0 for NULL.
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_message_timestamp_ns(msg: *const agentos_message) -> u64 {
    ffi_boundary!({ agentos_message::borrow(msg).map_or(0, |m| m.header().timestamp_ns) })
}

/// The topic a published message came through, borrowed from `msg`; NULL when it was not
/// published (or for NULL). Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_message_topic(msg: *const agentos_message) -> *const c_char {
    ffi_boundary!({
        // The name lives in the message's header, which this handle keeps alive.
        agentos_message::borrow(msg)
            .and_then(|m| m.header().topic.as_ref().map(|t| t.as_c_ptr()))
            .unwrap_or(std::ptr::null())
    })
}

/// Releases this reference to a message. `agentos_message_free(NULL)` does nothing.
/// Thread safety: any thread, once per reference.
#[no_mangle]
pub unsafe extern "C" fn agentos_message_free(msg: *mut agentos_message) {
    ffi_boundary!({
        if !msg.is_null() {
            drop(Message::from_raw(msg as *const std::ffi::c_void));
        }
    })
}
