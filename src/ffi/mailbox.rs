//! Mailboxes: `agentos_mailbox_id` handles into a runtime.

use super::agent::agentos_agent_id;
use super::error::agentos_error;
use super::message::agentos_message;
use super::runtime::agentos_runtime;
use super::status::agentos_status;
use super::{as_ref, non_null, str_arg, write_out};
use crate::error::{Error, Status};
use crate::handle::Handle;
use crate::msg::mailbox::Wait;
use std::ffi::c_char;

/// A generation-checked mailbox handle (0 means "the host, no mailbox"). A handle of a freed
/// mailbox gives `AGENTOS_STATUS_STALE_HANDLE`, never undefined behaviour.
pub type agentos_mailbox_id = u64;

fn wait(timeout_ms: i32) -> Wait {
    Wait::from_ms(timeout_ms as i64)
}

/// Creates a mailbox holding at most `capacity` messages (at least 1).
/// On success `*out` receives its handle; free it with `agentos_mailbox_free` (or let
/// `agentos_runtime_free` close and free every mailbox).
/// Returns `OK`, `NULL_ARGUMENT` or `SHUTDOWN`. Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_mailbox_new(
    rt: *const agentos_runtime,
    capacity: usize,
    out: *mut agentos_mailbox_id,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        non_null(out, "out")?;
        let h = rt.inner.shared().create_mailbox(capacity)?;
        write_out(out, h.raw());
        Ok(())
    })
}

/// Closes a mailbox: senders get `CLOSED`, and blocked receivers and requesters wake with
/// `CLOSED`. Messages already queued can still be received. Closing twice is fine.
/// Returns `OK`, `NULL_ARGUMENT` or `STALE_HANDLE`. Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_mailbox_close(
    rt: *const agentos_runtime,
    mailbox: agentos_mailbox_id,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        rt.inner
            .shared()
            .mailbox(Handle::from_raw(mailbox))?
            .close();
        Ok(())
    })
}

/// Closes and frees a mailbox: waiters wake with `CLOSED`, queued messages are released, and
/// the handle goes stale. Returns `OK`, `NULL_ARGUMENT` or `STALE_HANDLE`.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_mailbox_free(
    rt: *const agentos_runtime,
    mailbox: agentos_mailbox_id,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        rt.inner.shared().remove_mailbox(Handle::from_raw(mailbox))
    })
}

/// Sends `msg` to mailbox `to`, from mailbox `from` (0 = the host). Only a reference moves:
/// the receiver reads the very bytes the sender made. The caller keeps its own reference to
/// `msg`. When `to` is full: `timeout_ms` 0 fails at once with `BUSY`; a positive value blocks
/// up to that long (`TIMEOUT`); a negative value blocks until there is room.
///
/// Returns `OK`; `NULL_ARGUMENT`; `STALE_HANDLE`; `BUSY`; `TIMEOUT`; `CLOSED`. A message is
/// either queued (OK) or not (any failure): never half-sent. `err` may be NULL.
/// Thread safety: any thread, concurrently; per sender, messages arrive in the order sent.
#[no_mangle]
pub unsafe extern "C" fn agentos_mailbox_send(
    rt: *const agentos_runtime,
    from: agentos_mailbox_id,
    to: agentos_mailbox_id,
    msg: *const agentos_message,
    timeout_ms: i32,
    err: *mut *mut agentos_error,
) -> agentos_status {
    ffi_boundary!(err = err, {
        let rt = as_ref(rt, "rt")?;
        let m = agentos_message::borrow_arg(msg, "msg")?;
        rt.inner
            .shared()
            .send_message(from, Handle::from_raw(to), &m, wait(timeout_ms))
    })
}

/// Receives the oldest message: waits up to `timeout_ms` (0 = try once, negative = no limit).
/// On `OK`, `*out` receives a message to free with `agentos_message_free`.
/// Returns `OK`; `TIMEOUT` (nothing arrived); `CLOSED` (closed and empty); `STALE_HANDLE`;
/// `NULL_ARGUMENT`. Thread safety: any thread; concurrent receivers each get different messages.
#[no_mangle]
pub unsafe extern "C" fn agentos_mailbox_recv(
    rt: *const agentos_runtime,
    mailbox: agentos_mailbox_id,
    timeout_ms: i32,
    out: *mut *mut agentos_message,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        non_null(out, "out")?;
        let m = rt
            .inner
            .shared()
            .with_mailbox(Handle::from_raw(mailbox), |mb| mb.recv(wait(timeout_ms)))?;
        write_out(out, agentos_message::wrap(m));
        Ok(())
    })
}

/// Sends `msg` from mailbox `from` to mailbox `to` as a request (with a fresh correlation id)
/// and waits up to `timeout_ms` for the reply, which is returned in `*reply` instead of being
/// queued in `from`. Other traffic to `from` stays queued for `agentos_mailbox_recv`. An agent's
/// mailbox (see `agentos_agent_mailbox`) answers requests with the agent's answer.
///
/// Returns `OK`; `NULL_ARGUMENT`; `STALE_HANDLE`; `BUSY`; `TIMEOUT`; `CLOSED`. `err` may be NULL.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_mailbox_request(
    rt: *const agentos_runtime,
    from: agentos_mailbox_id,
    to: agentos_mailbox_id,
    msg: *const agentos_message,
    timeout_ms: i32,
    reply: *mut *mut agentos_message,
    err: *mut *mut agentos_error,
) -> agentos_status {
    ffi_boundary!(err = err, {
        let rt = as_ref(rt, "rt")?;
        let m = agentos_message::borrow_arg(msg, "msg")?;
        non_null(reply, "reply")?;
        let r = rt.inner.shared().request(
            Handle::from_raw(from),
            Handle::from_raw(to),
            &m,
            wait(timeout_ms),
        )?;
        write_out(reply, agentos_message::wrap(r));
        Ok(())
    })
}

/// Answers `request` (a message received by mailbox `from`) with the bytes of `reply`, sent to
/// the request's sender with the request's correlation id.
/// Returns `OK`; `NULL_ARGUMENT`; `INVALID_ARGUMENT` (the request came from the host);
/// `STALE_HANDLE`; `BUSY`; `TIMEOUT`; `CLOSED`. `err` may be NULL.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_mailbox_reply(
    rt: *const agentos_runtime,
    from: agentos_mailbox_id,
    request: *const agentos_message,
    reply: *const agentos_message,
    timeout_ms: i32,
    err: *mut *mut agentos_error,
) -> agentos_status {
    ffi_boundary!(err = err, {
        let rt = as_ref(rt, "rt")?;
        let req = agentos_message::borrow_arg(request, "request")?;
        let rep = agentos_message::borrow_arg(reply, "reply")?;
        rt.inner.shared().reply(from, &req, &rep, wait(timeout_ms))
    })
}

/// Answers `request` by sending `reply` to mailbox `to` with the request's correlation id,
/// from mailbox `from` — for replies that travel a different way than the request came, such as
/// back over a channel bridge (`to` = the bridge's outbox).
/// Returns `OK`; `NULL_ARGUMENT`; `STALE_HANDLE`; `BUSY`; `TIMEOUT`; `CLOSED`. `err` may be NULL.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_mailbox_reply_to(
    rt: *const agentos_runtime,
    from: agentos_mailbox_id,
    to: agentos_mailbox_id,
    request: *const agentos_message,
    reply: *const agentos_message,
    timeout_ms: i32,
    err: *mut *mut agentos_error,
) -> agentos_status {
    ffi_boundary!(err = err, {
        let rt = as_ref(rt, "rt")?;
        let req = agentos_message::borrow_arg(request, "request")?;
        let rep = agentos_message::borrow_arg(reply, "reply")?;
        let shared = rt.inner.shared();
        let target = shared.mailbox(Handle::from_raw(to))?;
        let h = rep.new_header(
            from,
            to,
            crate::msg::message::KIND_REPLY,
            req.header().correlation,
        );
        target.put(rep.deliver_as(h), wait(timeout_ms))
    })
}

/// Subscribes a mailbox to a topic (idempotent). Returns `OK`, `NULL_ARGUMENT`,
/// `INVALID_UTF8` or `STALE_HANDLE`. Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_mailbox_subscribe(
    rt: *const agentos_runtime,
    mailbox: agentos_mailbox_id,
    topic: *const c_char,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        let topic = str_arg(topic, "topic")?;
        let shared = rt.inner.shared();
        let mb = shared.mailbox(Handle::from_raw(mailbox))?;
        shared.topics().subscribe(topic, &mb);
        Ok(())
    })
}

/// Removes a subscription. Returns `OK`, `NULL_ARGUMENT`, `INVALID_UTF8`, or `NOT_FOUND` when
/// the mailbox was not subscribed. Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_mailbox_unsubscribe(
    rt: *const agentos_runtime,
    mailbox: agentos_mailbox_id,
    topic: *const c_char,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        let topic = str_arg(topic, "topic")?;
        if rt.inner.shared().topics().unsubscribe(topic, mailbox) {
            Ok(())
        } else {
            Err(Error::new(
                Status::NotFound,
                format!("mailbox {mailbox:#x} is not subscribed to \"{topic}\""),
            ))
        }
    })
}

/// Publishes `msg` on `topic` from mailbox `from` (0 = the host): every subscriber gets a
/// delivery sharing the same bytes. `timeout_ms` applies per full subscriber as in
/// `agentos_mailbox_send`. On `OK`, `*delivered` (may be NULL) receives the subscriber count.
/// When some subscribers could not take it, returns that failure (`BUSY`, `TIMEOUT`, `CLOSED`)
/// with a message giving how many did and did not get it.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_runtime_publish(
    rt: *const agentos_runtime,
    from: agentos_mailbox_id,
    topic: *const c_char,
    msg: *const agentos_message,
    timeout_ms: i32,
    delivered: *mut usize,
    err: *mut *mut agentos_error,
) -> agentos_status {
    ffi_boundary!(err = err, {
        let rt = as_ref(rt, "rt")?;
        let topic = str_arg(topic, "topic")?;
        let m = agentos_message::borrow_arg(msg, "msg")?;
        let n = rt.inner.shared().topics().publish(
            topic,
            from,
            m.header().kind,
            &m,
            wait(timeout_ms),
        )?;
        if !delivered.is_null() {
            write_out(delivered, n);
        }
        Ok(())
    })
}

/// Messages waiting in a mailbox. Returns `OK`, `NULL_ARGUMENT` or `STALE_HANDLE`.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_mailbox_len(
    rt: *const agentos_runtime,
    mailbox: agentos_mailbox_id,
    out: *mut usize,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        non_null(out, "out")?;
        write_out(
            out,
            rt.inner.shared().mailbox(Handle::from_raw(mailbox))?.len(),
        );
        Ok(())
    })
}

/// The agent's mailbox (made on first use). A message sent to it (UTF-8 text) starts a turn;
/// the agent's answer is sent back to the sending mailbox with the message's correlation id, as
/// kind 2 (answer) or 3 (failure; the text starts with the status name). So
/// `agentos_mailbox_request(rt, mine, agent_mailbox, question, timeout, &answer, &err)` asks an
/// agent and waits for its answer.
/// Returns `OK`, `NULL_ARGUMENT` or `STALE_HANDLE`. Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_agent_mailbox(
    rt: *const agentos_runtime,
    agent: agentos_agent_id,
    out: *mut agentos_mailbox_id,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        non_null(out, "out")?;
        let shared = rt.inner.shared();
        let a = shared.agent(Handle::from_raw(agent))?;
        let h = shared.agent_mailbox(&a)?;
        write_out(out, h.raw());
        Ok(())
    })
}
