//! `agentos_error`: the detail behind a failed call.

use super::status::agentos_status;
use crate::error::Error;
use std::ffi::{c_char, CString};

/// Detail about a failed call: its status and a human-readable message.
///
/// Ownership: created by the library and handed to the caller through an `agentos_error **err`
/// out-parameter; the caller frees it with `agentos_error_free`.
/// Thread safety: immutable; may be read from any thread, and freed from any one thread.
pub struct agentos_error {
    status: agentos_status,
    message: CString,
}

impl agentos_error {
    fn from_error(e: &Error) -> agentos_error {
        // Interior NULs cannot cross into C; show them instead of truncating the message.
        let text = e.message().replace('\0', "\\0");
        agentos_error {
            status: e.status().code(),
            message: CString::new(text).unwrap_or_default(),
        }
    }
}

/// Hands `e` to the caller through `err` (when not NULL) and returns its status.
pub(crate) fn report(err: *mut *mut agentos_error, e: Error) -> agentos_status {
    if !err.is_null() {
        let boxed = Box::into_raw(Box::new(agentos_error::from_error(&e)));
        // SAFETY: the caller passed a writable `agentos_error **` (documented contract).
        unsafe { err.write(boxed) };
    }
    e.status().code()
}

/// The status of a failed call. Returns `AGENTOS_STATUS_NULL_ARGUMENT` when `err` is NULL.
///
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_error_status(err: *const agentos_error) -> i32 {
    ffi_boundary!({
        if err.is_null() {
            super::status::AGENTOS_STATUS_NULL_ARGUMENT
        } else {
            // SAFETY: non-NULL `err` points to a live error (documented contract).
            unsafe { (*err).status }
        }
    })
}

/// The message of a failed call, NUL-terminated UTF-8.
///
/// Ownership: the string belongs to `err` and is valid until `agentos_error_free(err)`; do not
/// free it. Returns a static empty string when `err` is NULL (never returns NULL).
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_error_message(err: *const agentos_error) -> *const c_char {
    ffi_boundary!({
        if err.is_null() {
            c"".as_ptr()
        } else {
            // SAFETY: non-NULL `err` points to a live error (documented contract).
            unsafe { (*err).message.as_ptr() }
        }
    })
}

/// Frees an error. `agentos_error_free(NULL)` does nothing.
///
/// Ownership: takes `err`; it and its message must not be used afterwards.
/// Thread safety: any thread, but only once per error.
#[no_mangle]
pub unsafe extern "C" fn agentos_error_free(err: *mut agentos_error) {
    ffi_boundary!({
        if !err.is_null() {
            // SAFETY: `err` came from `report` via Box::into_raw and is freed once.
            drop(unsafe { Box::from_raw(err) });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;
    use std::ffi::CStr;

    #[test]
    fn report_fills_err_and_returns_status() {
        unsafe {
            let mut err: *mut agentos_error = std::ptr::null_mut();
            let s = report(&mut err, Error::new(Status::NotFound, "no such\0thing"));
            assert_eq!(s, Status::NotFound.code());
            assert!(!err.is_null());
            assert_eq!(agentos_error_status(err), s);
            let msg = CStr::from_ptr(agentos_error_message(err));
            assert_eq!(msg.to_str().unwrap(), "no such\\0thing");
            agentos_error_free(err);
            // NULL err: status still returned, nothing written.
            assert_eq!(
                report(std::ptr::null_mut(), Error::invalid("x")),
                Status::InvalidArgument.code()
            );
            agentos_error_free(std::ptr::null_mut());
            assert_eq!(
                agentos_error_status(std::ptr::null()),
                Status::NullArgument.code()
            );
            assert!(CStr::from_ptr(agentos_error_message(std::ptr::null()))
                .to_bytes()
                .is_empty());
        }
    }
}
