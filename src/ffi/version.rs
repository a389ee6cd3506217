//! Library version queries.

use crate::version;
use std::ffi::c_char;

/// The library's version as `"MAJOR.MINOR.PATCH"`.
///
/// Returns static storage: never NULL, never to be freed. Compare with `AGENTOS_VERSION_STRING`
/// or, better, compare `agentos_version_number()` with `AGENTOS_VERSION_NUMBER` at start-up to
/// catch a header/library mismatch.
/// Thread safety: any thread, any time.
#[no_mangle]
pub extern "C" fn agentos_version() -> *const c_char {
    ffi_boundary!({ version::VERSION_CSTR.as_ptr() as *const c_char })
}

/// The library's version as `MAJOR * 1000000 + MINOR * 1000 + PATCH`, the same encoding as the
/// `AGENTOS_VERSION_NUMBER` macro.
///
/// Thread safety: any thread, any time.
#[no_mangle]
pub extern "C" fn agentos_version_number() -> u32 {
    ffi_boundary!({ version::NUMBER })
}
