//! Status codes and the crate-wide error type.
//!
//! The numeric value of every [`Status`] is part of the C ABI: codes are never renumbered or
//! reused. New codes are only ever appended.

use std::fmt;

/// The outcome class of an operation. The discriminant is the C `agentos_status` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// An argument had a value outside its documented range.
    InvalidArgument = 1,
    /// A required pointer argument was NULL.
    NullArgument = 2,
    /// A handle referred to an object that was already freed or removed.
    StaleHandle = 3,
    /// A string argument was not valid UTF-8.
    InvalidUtf8 = 4,
    /// A JSON argument could not be parsed, or did not have the expected shape.
    InvalidJson = 5,
    /// A named object does not exist.
    NotFound = 6,
    /// The operation would block (a full queue, a held resource) and was asked not to.
    Busy = 7,
    /// A deadline passed before the operation completed.
    Timeout = 8,
    /// The operation was cancelled.
    Cancelled = 9,
    /// A configured limit (size, count, budget) was exceeded.
    LimitExceeded = 10,
    /// An operating-system I/O error.
    Io = 11,
    /// An HTTP transport error, or an unexpected HTTP status.
    Http = 12,
    /// The model provider reported an error.
    Provider = 13,
    /// The runtime is shutting down or was freed.
    Shutdown = 14,
    /// A Rust panic was caught at the C boundary.
    Panic = 15,
    /// An internal invariant was broken (a bug in AgentOS).
    Internal = 16,
    /// The mailbox, channel or peer was closed.
    Closed = 17,
    /// The process at the other end of a channel died.
    PeerGone = 18,
}

impl Status {
    /// Every status, in code order.
    pub const ALL: [Status; 19] = [
        Status::Ok,
        Status::InvalidArgument,
        Status::NullArgument,
        Status::StaleHandle,
        Status::InvalidUtf8,
        Status::InvalidJson,
        Status::NotFound,
        Status::Busy,
        Status::Timeout,
        Status::Cancelled,
        Status::LimitExceeded,
        Status::Io,
        Status::Http,
        Status::Provider,
        Status::Shutdown,
        Status::Panic,
        Status::Internal,
        Status::Closed,
        Status::PeerGone,
    ];

    /// The numeric code used across the C ABI.
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The status with the given code, if the code is known.
    pub fn from_code(code: i32) -> Option<Status> {
        usize::try_from(code)
            .ok()
            .and_then(|i| Status::ALL.get(i).copied())
    }

    /// The C constant name, e.g. `"AGENTOS_STATUS_NOT_FOUND"`.
    pub fn name(self) -> &'static str {
        self.c_name().to_str().unwrap_or("AGENTOS_STATUS_UNKNOWN")
    }

    /// The same name, NUL-terminated (what `agentos_status_str` returns).
    pub const fn c_name(self) -> &'static std::ffi::CStr {
        match self {
            Status::Ok => c"AGENTOS_STATUS_OK",
            Status::InvalidArgument => c"AGENTOS_STATUS_INVALID_ARGUMENT",
            Status::NullArgument => c"AGENTOS_STATUS_NULL_ARGUMENT",
            Status::StaleHandle => c"AGENTOS_STATUS_STALE_HANDLE",
            Status::InvalidUtf8 => c"AGENTOS_STATUS_INVALID_UTF8",
            Status::InvalidJson => c"AGENTOS_STATUS_INVALID_JSON",
            Status::NotFound => c"AGENTOS_STATUS_NOT_FOUND",
            Status::Busy => c"AGENTOS_STATUS_BUSY",
            Status::Timeout => c"AGENTOS_STATUS_TIMEOUT",
            Status::Cancelled => c"AGENTOS_STATUS_CANCELLED",
            Status::LimitExceeded => c"AGENTOS_STATUS_LIMIT_EXCEEDED",
            Status::Io => c"AGENTOS_STATUS_IO",
            Status::Http => c"AGENTOS_STATUS_HTTP",
            Status::Provider => c"AGENTOS_STATUS_PROVIDER",
            Status::Shutdown => c"AGENTOS_STATUS_SHUTDOWN",
            Status::Panic => c"AGENTOS_STATUS_PANIC",
            Status::Internal => c"AGENTOS_STATUS_INTERNAL",
            Status::Closed => c"AGENTOS_STATUS_CLOSED",
            Status::PeerGone => c"AGENTOS_STATUS_PEER_GONE",
        }
    }
}

/// An error: a [`Status`] plus a human-readable message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

impl Error {
    /// Creates an error. `status` should not be [`Status::Ok`].
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
        }
    }

    /// Shorthand for an [`Status::InvalidArgument`] error.
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(Status::InvalidArgument, message)
    }

    /// The status class.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status.name(), self.message)
    }
}

impl std::error::Error for Error {}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_dense_and_stable() {
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(s.code(), i as i32);
            assert_eq!(Status::from_code(i as i32), Some(*s));
        }
        assert_eq!(Status::from_code(-1), None);
        assert_eq!(Status::from_code(19), None);
        assert_eq!(Status::Closed.code(), 17);
        // A few codes pinned explicitly: they are ABI.
        assert_eq!(Status::Ok.code(), 0);
        assert_eq!(Status::StaleHandle.code(), 3);
        assert_eq!(Status::Internal.code(), 16);
    }

    #[test]
    fn display_names_status_and_message() {
        let e = Error::new(Status::NotFound, "no agent named \"x\"");
        assert_eq!(
            e.to_string(),
            "AGENTOS_STATUS_NOT_FOUND: no agent named \"x\""
        );
    }
}
