//! `agentos_status`: the result code of every fallible call.

use crate::error::Status;
use std::ffi::c_char;

/// The result of a fallible call: `AGENTOS_STATUS_OK` (0) or one of the `AGENTOS_STATUS_*`
/// codes. Codes are fixed forever: never renumbered, never reused.
pub type agentos_status = i32;

/// Success.
pub const AGENTOS_STATUS_OK: agentos_status = 0;
/// An argument had a value outside its documented range.
pub const AGENTOS_STATUS_INVALID_ARGUMENT: agentos_status = 1;
/// A required pointer argument was NULL.
pub const AGENTOS_STATUS_NULL_ARGUMENT: agentos_status = 2;
/// A handle referred to an object that was already freed or removed.
pub const AGENTOS_STATUS_STALE_HANDLE: agentos_status = 3;
/// A string argument was not valid UTF-8.
pub const AGENTOS_STATUS_INVALID_UTF8: agentos_status = 4;
/// A JSON argument could not be parsed or had the wrong shape; the message names the key.
pub const AGENTOS_STATUS_INVALID_JSON: agentos_status = 5;
/// A named object does not exist.
pub const AGENTOS_STATUS_NOT_FOUND: agentos_status = 6;
/// The operation would block and was asked not to (a full queue, a held resource).
pub const AGENTOS_STATUS_BUSY: agentos_status = 7;
/// A deadline passed before the operation completed.
pub const AGENTOS_STATUS_TIMEOUT: agentos_status = 8;
/// The operation was cancelled.
pub const AGENTOS_STATUS_CANCELLED: agentos_status = 9;
/// A configured limit (size, count, budget) was exceeded.
pub const AGENTOS_STATUS_LIMIT_EXCEEDED: agentos_status = 10;
/// An operating-system I/O error.
pub const AGENTOS_STATUS_IO: agentos_status = 11;
/// An HTTP transport error or an unexpected HTTP status.
pub const AGENTOS_STATUS_HTTP: agentos_status = 12;
/// The model provider reported an error.
pub const AGENTOS_STATUS_PROVIDER: agentos_status = 13;
/// The runtime is shutting down or was freed.
pub const AGENTOS_STATUS_SHUTDOWN: agentos_status = 14;
/// A Rust panic was caught at the C boundary (a bug in AgentOS; please report it).
pub const AGENTOS_STATUS_PANIC: agentos_status = 15;
/// An internal invariant was broken (a bug in AgentOS; please report it).
pub const AGENTOS_STATUS_INTERNAL: agentos_status = 16;
/// The mailbox, channel or peer was closed (messages queued before the close can still be
/// received).
pub const AGENTOS_STATUS_CLOSED: agentos_status = 17;
/// The process at the other end of a channel died (what it sent before is still delivered).
pub const AGENTOS_STATUS_PEER_GONE: agentos_status = 18;

/// Names a status code: `agentos_status_str(AGENTOS_STATUS_TIMEOUT)` is
/// `"AGENTOS_STATUS_TIMEOUT"`.
///
/// Returns a static, NUL-terminated string; never NULL and never to be freed. Codes this library
/// does not know give `"AGENTOS_STATUS_UNKNOWN"`.
///
/// Thread safety: callable from any thread at any time, even without a runtime.
#[no_mangle]
pub extern "C" fn agentos_status_str(status: i32) -> *const c_char {
    ffi_boundary!({ status_cstr(status).as_ptr() })
}

fn status_cstr(status: i32) -> &'static std::ffi::CStr {
    Status::from_code(status).map_or(c"AGENTOS_STATUS_UNKNOWN", Status::c_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn constants_match_core_codes_and_names() {
        let pairs = [
            (AGENTOS_STATUS_OK, Status::Ok),
            (AGENTOS_STATUS_INVALID_ARGUMENT, Status::InvalidArgument),
            (AGENTOS_STATUS_NULL_ARGUMENT, Status::NullArgument),
            (AGENTOS_STATUS_STALE_HANDLE, Status::StaleHandle),
            (AGENTOS_STATUS_INVALID_UTF8, Status::InvalidUtf8),
            (AGENTOS_STATUS_INVALID_JSON, Status::InvalidJson),
            (AGENTOS_STATUS_NOT_FOUND, Status::NotFound),
            (AGENTOS_STATUS_BUSY, Status::Busy),
            (AGENTOS_STATUS_TIMEOUT, Status::Timeout),
            (AGENTOS_STATUS_CANCELLED, Status::Cancelled),
            (AGENTOS_STATUS_LIMIT_EXCEEDED, Status::LimitExceeded),
            (AGENTOS_STATUS_IO, Status::Io),
            (AGENTOS_STATUS_HTTP, Status::Http),
            (AGENTOS_STATUS_PROVIDER, Status::Provider),
            (AGENTOS_STATUS_SHUTDOWN, Status::Shutdown),
            (AGENTOS_STATUS_PANIC, Status::Panic),
            (AGENTOS_STATUS_INTERNAL, Status::Internal),
            (AGENTOS_STATUS_CLOSED, Status::Closed),
            (AGENTOS_STATUS_PEER_GONE, Status::PeerGone),
        ];
        assert_eq!(pairs.len(), Status::ALL.len());
        for (c, s) in pairs {
            assert_eq!(c, s.code());
            let name = unsafe { CStr::from_ptr(agentos_status_str(c)) };
            assert_eq!(name.to_str().unwrap(), s.name());
        }
        for unknown in [-1, 19, i32::MAX, i32::MIN] {
            let name = unsafe { CStr::from_ptr(agentos_status_str(unknown)) };
            assert_eq!(name.to_str().unwrap(), "AGENTOS_STATUS_UNKNOWN");
        }
    }
}
