//! The C surface. This is the only module with `extern "C"`, raw pointers and pointer casts.
//!
//! Every exported function body is wrapped in `ffi_boundary!`, so a Rust panic never unwinds
//! into C. Each file covers one C type; each function checks its pointers, converts, and calls
//! the core.

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

/// Wraps the body of every exported function in `catch_unwind`.
///
/// - `ffi_boundary!(err = ERR_PTR, { ... Ok(()) })`: for functions that return a status. The body
///   returns `Result<(), Error>`; an error or a panic is written to `*ERR_PTR` (when not NULL) and
///   its status returned.
/// - `ffi_boundary!({ ... })`: for functions returning anything else; a panic yields the type's
///   [`PanicValue`] (NULL, 0, or nothing).
macro_rules! ffi_boundary {
    (err = $err:expr, $body:block) => {{
        let err_out: *mut *mut $crate::ffi::error::agentos_error = $err;
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(
            || -> ::std::result::Result<(), $crate::error::Error> { $body },
        )) {
            Ok(Ok(())) => $crate::ffi::status::AGENTOS_STATUS_OK,
            Ok(Err(e)) => $crate::ffi::error::report(err_out, e),
            Err(payload) => $crate::ffi::error::report(err_out, $crate::ffi::panic_error(payload)),
        }
    }};
    ($body:block) => {{
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| $body)) {
            Ok(v) => v,
            Err(_) => $crate::ffi::PanicValue::panic_value(),
        }
    }};
}

// Declaration order is the order of the generated header.
pub mod status;
pub mod error;
pub mod string;
pub mod version;
pub mod config;
pub mod runtime;
pub mod request;
pub mod agent;
pub mod tool;
pub mod event;
pub mod message;
pub mod mailbox;
pub mod channel;

use crate::error::{Error, Status};
use std::ffi::{c_char, CStr};

/// The value a non-status function returns when its body panics.
pub trait PanicValue {
    /// The value returned instead of unwinding.
    fn panic_value() -> Self;
}

impl PanicValue for () {
    fn panic_value() -> Self {}
}
impl PanicValue for u32 {
    fn panic_value() -> Self {
        0
    }
}
impl PanicValue for u64 {
    fn panic_value() -> Self {
        0
    }
}
impl PanicValue for i32 {
    fn panic_value() -> Self {
        status::AGENTOS_STATUS_PANIC
    }
}
impl<T> PanicValue for *const T {
    fn panic_value() -> Self {
        std::ptr::null()
    }
}
impl<T> PanicValue for *mut T {
    fn panic_value() -> Self {
        std::ptr::null_mut()
    }
}

/// Turns a caught panic payload into an error.
pub(crate) fn panic_error(payload: Box<dyn std::any::Any + Send>) -> Error {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_string());
    Error::new(
        Status::Panic,
        format!("internal panic caught at the C boundary: {what}"),
    )
}

/// Fails with `NULL_ARGUMENT` naming the parameter when `p` is NULL.
pub(crate) fn non_null<T>(p: *const T, name: &str) -> Result<(), Error> {
    if p.is_null() {
        Err(Error::new(
            Status::NullArgument,
            format!("argument `{name}` is NULL"),
        ))
    } else {
        Ok(())
    }
}

/// Borrows a shared reference from a C pointer, checking for NULL.
///
/// # Safety
/// `p` must be NULL or point to a live `T` for the returned lifetime.
pub(crate) unsafe fn as_ref<'a, T>(p: *const T, name: &str) -> Result<&'a T, Error> {
    non_null(p, name)?;
    Ok(&*p)
}

/// Borrows an exclusive reference from a C pointer, checking for NULL.
///
/// # Safety
/// `p` must be NULL or point to a live `T` not aliased for the returned lifetime.
pub(crate) unsafe fn as_mut<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T, Error> {
    non_null(p, name)?;
    Ok(&mut *p)
}

/// Reads a NUL-terminated UTF-8 C string argument.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string that lives for the returned lifetime.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str, Error> {
    non_null(p, name)?;
    CStr::from_ptr(p).to_str().map_err(|e| {
        Error::new(
            Status::InvalidUtf8,
            format!(
                "argument `{name}` is not valid UTF-8 (bad byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// Writes an out-parameter. Call only once the operation has succeeded.
///
/// # Safety
/// `out` must have been checked non-NULL and be valid for writes.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) {
    out.write(value);
}
