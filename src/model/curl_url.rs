//! Two libcurl settings that spare it work it would otherwise repeat on every request, both
//! decided once per endpoint, when it is added (see `hub::EndpointState`):
//!
//! - the endpoint's URL, parsed once into a `CURLU` handle shared by all its easy handles
//!   (`CURLOPT_CURLU`): given the URL as text, libcurl 7.81 parses it again for every
//!   transfer (about 6,000 instructions); given a handle, it copies it;
//! - no proxy, when the environment names none: without a proxy setting libcurl looks up
//!   five or six proxy variables on every request. When any is set, libcurl reads them on
//!   every request as usual.
//!
//! `curl-sys` does not declare the URL API (libcurl 7.62+), so its three functions are
//! declared here.

use curl::easy::Easy2;
use std::ffi::{c_char, c_int, c_uint, CString};
use std::ptr::NonNull;

/// libcurl's opaque URL handle.
#[repr(C)]
struct Curlu {
    _private: [u8; 0],
}

extern "C" {
    fn curl_url() -> *mut Curlu;
    fn curl_url_set(url: *mut Curlu, part: c_int, content: *const c_char, flags: c_uint) -> c_int;
    fn curl_url_cleanup(url: *mut Curlu);
}

/// `CURLUPART_URL`: the whole URL.
const CURLUPART_URL: c_int = 0;
/// `CURLOPT_CURLU` (an object-pointer option, number 282).
const CURLOPT_CURLU: curl_sys::CURLoption = curl_sys::CURLOPTTYPE_OBJECTPOINT + 282;

/// A URL parsed by libcurl, owned; freed on drop.
pub(crate) struct CurlUrl(NonNull<Curlu>);

// SAFETY: libcurl documents that it uses a handle set with CURLOPT_CURLU, and its contents,
// read-only; nothing here changes it after `parse`, so it may be read from any thread.
unsafe impl Send for CurlUrl {}
unsafe impl Sync for CurlUrl {}

impl CurlUrl {
    /// Parses `url` (scheme required); `None` if libcurl refuses it (then the URL goes in as
    /// text).
    pub(crate) fn parse(url: &str) -> Option<CurlUrl> {
        let text = CString::new(url).ok()?;
        // SAFETY: curl_url returns a new handle or NULL; curl_url_set copies the string.
        unsafe {
            let h = NonNull::new(curl_url())?;
            let handle = CurlUrl(h);
            (curl_url_set(h.as_ptr(), CURLUPART_URL, text.as_ptr(), 0) == 0).then_some(handle)
        }
    }

    /// Points `easy` at this URL. The handle must outlive every transfer of `easy` (its
    /// collector holds a reference; see `transfer::Collector::url`).
    pub(crate) fn set_on<H>(&self, easy: &mut Easy2<H>) -> Result<(), curl::Error> {
        // SAFETY: the option takes a CURLU pointer, which stays valid while `self` lives.
        let rc = unsafe { curl_sys::curl_easy_setopt(easy.raw(), CURLOPT_CURLU, self.0.as_ptr()) };
        if rc == curl_sys::CURLE_OK {
            Ok(())
        } else {
            Err(curl::Error::new(rc))
        }
    }
}

impl Drop for CurlUrl {
    fn drop(&mut self) {
        // SAFETY: the handle came from curl_url and is freed once.
        unsafe { curl_url_cleanup(self.0.as_ptr()) }
    }
}

/// The variables libcurl reads to pick a proxy for HTTP(S) (`http_proxy` has no upper-case
/// form: libcurl ignores `HTTP_PROXY` on purpose) and to exempt hosts.
const PROXY_VARS: [&str; 7] = [
    "http_proxy",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// Whether the environment names a proxy (or proxy exemptions) for libcurl to read.
pub(crate) fn proxy_env_set() -> bool {
    PROXY_VARS.iter().any(|v| std::env::var_os(v).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_urls_and_refuses_junk() {
        assert!(CurlUrl::parse("http://127.0.0.1:8080/v1/chat/completions").is_some());
        assert!(CurlUrl::parse("https://api.example.com/v1/messages").is_some());
        assert!(CurlUrl::parse("no scheme here").is_none());
        assert!(CurlUrl::parse("http://a\0b").is_none());
    }
}
