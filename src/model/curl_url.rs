//! libcurl settings that spare it work it would otherwise repeat on every request, all
//! decided once per endpoint, when it is added (see `hub::EndpointState`):
//!
//! - the endpoint's URL, parsed once into a `CURLU` handle shared by all its easy handles
//!   (`CURLOPT_CURLU`): given the URL as text, libcurl 7.81 parses it again for every
//!   transfer (about 6,000 instructions); given a handle, it copies it;
//! - no proxy, when the environment names none: without a proxy setting libcurl looks up
//!   five or six proxy variables on every request. When any is set, libcurl reads them on
//!   every request as usual;
//! - the request headers, built once into libcurl lists shared by all its easy handles (a
//!   handle set up per call, as over TLS, no longer builds its own), with and without an empty
//!   `Expect:` (see [`CurlHeaders`]).
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

/// A libcurl header list, owned; freed on drop.
struct SList(*mut curl_sys::curl_slist);

// SAFETY: libcurl only reads a list set with CURLOPT_HTTPHEADER, and nothing here changes it
// after it is built, so it may be read by transfers on any thread.
unsafe impl Send for SList {}
unsafe impl Sync for SList {}

impl SList {
    /// `None` if a line holds a NUL byte or libcurl is out of memory.
    fn new<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<SList> {
        let mut list = SList(std::ptr::null_mut());
        for line in lines {
            let c = CString::new(line).ok()?;
            // SAFETY: `list.0` is null or a list from curl_slist_append; libcurl copies the line.
            let next = unsafe { curl_sys::curl_slist_append(list.0, c.as_ptr()) };
            if next.is_null() {
                return None;
            }
            list.0 = next;
        }
        Some(list)
    }
}

impl Drop for SList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: built by curl_slist_append and freed once, here.
            unsafe { curl_sys::curl_slist_free_all(self.0) };
        }
    }
}

/// An endpoint's request headers for one mode (plain or streamed), as two libcurl lists: the
/// headers alone, and with an empty `Expect:` for large bodies, so libcurl sends them without
/// first waiting for `100 Continue` (it asks for one above 1 MiB, above 1 KiB in older
/// releases). Small bodies go without it: every custom header costs libcurl a scan of the list
/// for each header it checks, ~1.3k instructions per request (measured).
pub(crate) struct CurlHeaders {
    plain: SList,
    with_expect: SList,
}

impl CurlHeaders {
    /// `None` if a header holds a NUL byte (or libcurl is out of memory).
    pub(crate) fn new(lines: &[String]) -> Option<CurlHeaders> {
        Some(CurlHeaders {
            plain: SList::new(lines.iter().map(String::as_str))?,
            with_expect: SList::new(lines.iter().map(String::as_str).chain(["Expect:"]))?,
        })
    }

    /// Points the easy handle `easy` at one of the lists (with `expect`, the one with
    /// `Expect:`). They must outlive every transfer of the handle (its collector holds a
    /// reference; see `transfer::Collector::request_headers`).
    pub(crate) fn set_on(
        &self,
        easy: *mut curl_sys::CURL,
        expect: bool,
    ) -> Result<(), curl::Error> {
        let list = if expect {
            &self.with_expect
        } else {
            &self.plain
        };
        // SAFETY: `easy` is a live easy handle; the list stays valid while `self` lives, and
        // libcurl only reads it.
        let rc = unsafe { curl_sys::curl_easy_setopt(easy, curl_sys::CURLOPT_HTTPHEADER, list.0) };
        if rc == curl_sys::CURLE_OK {
            Ok(())
        } else {
            Err(curl::Error::new(rc))
        }
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

    #[test]
    fn header_lists_refuse_nul_bytes() {
        assert!(CurlHeaders::new(&["Content-Type: application/json".into()]).is_some());
        assert!(CurlHeaders::new(&[]).is_some());
        assert!(CurlHeaders::new(&["x-bad: a\0b".into()]).is_none());
    }
}
