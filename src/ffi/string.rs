//! Strings the library hands to C.

use std::ffi::{c_char, CString};

/// Gives C a library-owned string; the caller frees it with `agentos_string_free`.
pub(crate) fn into_c_string(s: String) -> *mut c_char {
    if s.contains('\0') {
        c_string(&s, "\\0").into_raw()
    } else {
        // Moved, not copied.
        CString::new(s).unwrap_or_default().into_raw()
    }
}

/// `text` as a C string, with any NUL replaced by `nul` (one allocation when there is none).
pub(crate) fn c_string(text: &str, nul: &str) -> CString {
    if text.contains('\0') {
        CString::new(text.replace('\0', nul)).unwrap_or_default()
    } else {
        CString::new(text).unwrap_or_default()
    }
}

/// Frees a string that the library returned to the caller (documented as "free with
/// `agentos_string_free`"). `agentos_string_free(NULL)` does nothing.
///
/// Ownership: takes `s`. Never pass a string from `malloc`, and never free the library's strings
/// with `free()`: they come from a different allocator's bookkeeping.
/// Thread safety: any thread, once per string.
#[no_mangle]
pub unsafe extern "C" fn agentos_string_free(s: *mut c_char) {
    ffi_boundary!({
        if !s.is_null() {
            // SAFETY: `s` came from `into_c_string` (CString::into_raw) and is freed once.
            drop(unsafe { CString::from_raw(s) });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = into_c_string("hello\0world".to_string());
        let s = unsafe { std::ffi::CStr::from_ptr(p) }
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(s, "hello\\0world");
        unsafe {
            agentos_string_free(p);
            agentos_string_free(std::ptr::null_mut());
        }
    }
}
