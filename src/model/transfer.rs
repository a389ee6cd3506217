//! One HTTP attempt of a call, wherever it runs: the easy handle's set-up, the collector that
//! receives the response, and the verdict on how the attempt ended (succeed, fail, or retry).
//!
//! Shared by the I/O thread ([`super::engine`]) and the caller-thread path
//! ([`super::direct`]), so both classify failures, keep partial output and finish calls the
//! same way.

use super::anthropic;
use super::call::{CallInner, Phase};
use super::curl_url::{CurlHeaders, CurlUrl};
use super::endpoint::{Endpoint, Provider};
use super::openai;
use super::retry::{self, classify, FailureClass, Headers};
use super::sse::SseParser;
use super::stream::{DeltaBatch, StreamMeta};
use super::types::ChatResponse;
use crate::error::{Error, Result, Status};
use bumpalo::Bump;
use curl::easy::{Easy2, Handler, HttpVersion, WriteError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The largest non-streamed response body accepted.
pub const MAX_BODY: usize = 64 << 20;
/// libcurl's receive buffer per transfer (its default is 16 KiB).
const RECEIVE_BUFFER: usize = 4096;
/// The largest response buffer (and decoding arena) a reused collector keeps.
const KEEP_CAPACITY: usize = 256 << 10;
/// Request bodies larger than this go with an empty `Expect:` header (see
/// [`CurlHeaders`]).
const EXPECT_ABOVE: usize = 1024;

/// Receives one attempt's response.
pub(crate) struct Collector {
    /// The call (none while the handle waits in a pool).
    pub(crate) call: Option<Arc<CallInner>>,
    provider: Provider,
    stream: bool,
    pub(crate) status: u32,
    pub(crate) headers: Headers,
    body: Vec<u8>,
    /// The request body, when rendered for this attempt (reused across attempts and calls;
    /// libcurl sends it from here without a copy).
    request: Vec<u8>,
    sse: SseParser,
    sse_mode: Option<bool>,
    /// What this attempt's stream said about itself.
    pub(crate) meta: StreamMeta,
    /// Where a read's deltas (and a whole answer) are decoded: reset after every read, once
    /// its deltas are handed to the call, and when the collector is reused.
    arena: Bump,
    stream_error: Option<String>,
    pub(crate) first_byte: Option<Instant>,
    pub(crate) last_byte: Instant,
    /// When the attempt was set up.
    pub(crate) started: Instant,
    too_large: bool,
    /// The endpoint's parsed URL that the handle points at (set when the handle is
    /// configured; it must live as long as the handle, which owns the collector).
    url: Option<Arc<CurlUrl>>,
    /// The endpoint's header lists the handle points at, and whether at the one with
    /// `Expect:` (set when the handle is configured; they must live as long as the handle).
    request_headers: Option<(Arc<CurlHeaders>, bool)>,
}

impl Collector {
    pub(crate) fn new(call: Option<Arc<CallInner>>, provider: Provider, stream: bool) -> Collector {
        Collector {
            call,
            provider,
            stream,
            status: 0,
            headers: Headers::new(),
            body: Vec::new(),
            request: Vec::new(),
            sse: SseParser::new(),
            sse_mode: None,
            meta: StreamMeta::default(),
            arena: Bump::new(),
            stream_error: None,
            first_byte: None,
            last_byte: Instant::now(),
            started: Instant::now(),
            too_large: false,
            url: None,
            request_headers: None,
        }
    }

    /// Takes the finished attempt's collector out of its handle, leaving an empty one that
    /// keeps the handle's URL and header lists (the handle still points at them).
    pub(crate) fn take(&mut self) -> Collector {
        let mut c = std::mem::replace(self, Collector::empty());
        self.url = c.url.take();
        self.request_headers = c.request_headers.take();
        c
    }

    /// An empty collector, to swap in when a finished attempt's collector is taken out.
    pub(crate) fn empty() -> Collector {
        Collector::new(None, Provider::OpenAi, false)
    }

    /// Makes the collector ready for another attempt, keeping its buffers (those that grew
    /// past [`KEEP_CAPACITY`] are given back).
    pub(crate) fn reset(&mut self, call: Option<Arc<CallInner>>, provider: Provider, stream: bool) {
        self.call = call;
        self.provider = provider;
        self.stream = stream;
        self.status = 0;
        self.headers.clear();
        self.body.clear();
        if self.body.capacity() > KEEP_CAPACITY {
            self.body = Vec::new();
        }
        self.request.clear();
        if self.request.capacity() > KEEP_CAPACITY {
            self.request = Vec::new();
        }
        self.sse.clear();
        self.sse_mode = None;
        self.meta = StreamMeta::default();
        self.reset_arena();
        self.stream_error = None;
        self.first_byte = None;
        self.last_byte = Instant::now();
        self.started = self.last_byte;
        self.too_large = false;
    }

    /// Empties the arena, keeping its memory unless a large answer made it grow past
    /// [`KEEP_CAPACITY`].
    pub(crate) fn reset_arena(&mut self) {
        if self.arena.allocated_bytes() > KEEP_CAPACITY {
            self.arena = Bump::new();
        } else {
            self.arena.reset();
        }
    }
}

impl Handler for Collector {
    fn header(&mut self, data: &[u8]) -> bool {
        // Most lines are headers the library does not read: judged by their first letter
        // before anything else (see retry::is_read_header; 'h' for the status line; 'c' for
        // content-type, read only to recognise a stream).
        match data.first().map(|b| b | 0x20) {
            Some(b'h' | b'r' | b'x' | b'a') => {}
            Some(b'c') if self.stream => {}
            _ => return true,
        }
        let line = data.trim_ascii_end();
        if line.starts_with(b"HTTP/") {
            // A new status line (after 100-continue or a redirect) starts a fresh header set.
            self.status = status_code(line);
            self.headers.clear();
        } else if let Some(colon) = line.iter().position(|&b| b == b':') {
            // Only the headers the library reads are kept (most lines are not).
            let (name, value) = (line[..colon].trim_ascii(), &line[colon + 1..]);
            if retry::is_read_header(name)
                && (self.stream || !name.eq_ignore_ascii_case(b"content-type"))
            {
                match (std::str::from_utf8(name), std::str::from_utf8(value)) {
                    (Ok(name), Ok(value)) => self.headers.push(name, value),
                    // Header lines are ASCII in practice; anything else is decoded lossily.
                    _ => self.headers.push(
                        &String::from_utf8_lossy(name),
                        &String::from_utf8_lossy(value),
                    ),
                }
            }
        }
        true
    }

    fn write(&mut self, data: &[u8]) -> std::result::Result<usize, WriteError> {
        let now = Instant::now();
        self.first_byte.get_or_insert(now);
        self.last_byte = now;
        let sse = *self.sse_mode.get_or_insert_with(|| {
            self.stream
                && self.status / 100 == 2
                && self
                    .headers
                    .iter()
                    .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream"))
        });
        if sse {
            // The parser is moved out so events can borrow its buffers while `self` is
            // updated; moving it allocates nothing.
            // One event larger than a whole reply may be is a broken or hostile stream.
            if self.sse.buffered() + data.len() > MAX_BODY {
                self.too_large = true;
                return Ok(0); // aborts the transfer
            }
            let usage_before = self.meta.usage;
            self.reset_arena();
            let Collector {
                arena,
                sse,
                meta,
                stream_error,
                provider,
                call,
                ..
            } = self;
            let mut batch = DeltaBatch::new_in(arena);
            sse.feed(data, |ev| {
                if stream_error.is_some() {
                    return;
                }
                let r = match provider {
                    Provider::OpenAi => openai::apply_event(&ev, meta, &mut batch),
                    Provider::Anthropic => anthropic::apply_event(&ev, meta, &mut batch),
                };
                if let Err(e) = r {
                    *stream_error = Some(e);
                }
            });
            let usage_changed = meta.usage != usage_before;
            if !batch.is_empty() || usage_changed {
                if let Some(call) = call {
                    call.push_deltas(&batch, usage_changed.then_some(&meta.usage));
                }
            }
        } else {
            if self.body.len() + data.len() > MAX_BODY {
                self.too_large = true;
                return Ok(0); // aborts the transfer
            }
            self.body.extend_from_slice(data);
        }
        Ok(data.len())
    }
}

/// How an attempt ended, and what to do next.
pub(crate) enum Verdict {
    /// The model answered.
    Success(ChatResponse),
    /// The call fails with this error (not retried).
    Fail(Error),
    /// The attempt failed in a way worth retrying, after at least `after` when the server
    /// asked. `blocks_endpoint`: the server said the whole endpoint must wait that long (a 429
    /// with `retry-after`).
    Retry {
        err: Error,
        after: Option<Duration>,
        blocks_endpoint: bool,
    },
}

/// The verdict on an attempt that failed with `err` at the transport level (or by timeout): it
/// is retried unless output was already delivered (a stream that produced output is never
/// replayed) or `retryable` is false.
pub(crate) fn failed_attempt(c: &Collector, err: Error, retryable: bool) -> Verdict {
    if c.meta.has_output() {
        let msg = format!(
            "{} after {} streamed pieces; not replayed, the partial output is kept",
            err.message(),
            c.meta.deltas
        );
        Verdict::Fail(Error::new(err.status(), msg))
    } else if retryable {
        Verdict::Retry {
            err,
            after: None,
            blocks_endpoint: false,
        }
    } else {
        Verdict::Fail(err)
    }
}

/// The verdict on an attempt curl finished with `result`, from what `c` collected.
pub(crate) fn judge(
    call: &CallInner,
    c: &Collector,
    result: std::result::Result<(), curl::Error>,
) -> Verdict {
    let ep = &call.endpoint.config;
    let name = &ep.name;
    // How long the endpoint took, failures included (an endpoint that starts to hang or fail
    // slowly is no longer taken for a quick one).
    call.endpoint.observe_latency(c.started.elapsed());
    if let Err(e) = result {
        let (status, what) = if c.too_large {
            (
                Status::LimitExceeded,
                format!("response body exceeds {MAX_BODY} bytes"),
            )
        } else if e.is_operation_timedout() {
            (
                Status::Timeout,
                format!("total timeout: {}", e.description()),
            )
        } else {
            (
                Status::Http,
                format!("transport error: {}", e.description()),
            )
        };
        let err = Error::new(status, ep.redact(&format!("endpoint \"{name}\": {what}")));
        return failed_attempt(c, err, !c.too_large);
    }
    if c.status / 100 != 2 {
        let body = String::from_utf8_lossy(&c.body);
        let text = provider_error_text(ep.provider, &body);
        let class = classify(c.status, &c.headers, &body, SystemTime::now());
        let msg = ep.redact(&format!("endpoint \"{name}\": HTTP {}: {text}", c.status));
        return match class {
            FailureClass::SpendLimit => Verdict::Fail(Error::new(
                Status::LimitExceeded,
                format!("{msg} (spend limit: not retried)"),
            )),
            FailureClass::NonRetryable => Verdict::Fail(Error::new(Status::Http, msg)),
            FailureClass::Retryable { after } => Verdict::Retry {
                err: Error::new(Status::Http, msg),
                after,
                blocks_endpoint: c.status == 429 && after.is_some(),
            },
        };
    }
    // 2xx.
    if c.sse_mode == Some(true) {
        if let Some(e) = &c.stream_error {
            let err = Error::new(
                Status::Provider,
                ep.redact(&format!("endpoint \"{name}\": error event in stream: {e}")),
            );
            return failed_attempt(c, err, true);
        }
        if !c.meta.done || c.sse.has_partial() {
            let err = Error::new(
                Status::Http,
                format!("endpoint \"{name}\": stream ended before its end marker"),
            );
            return failed_attempt(c, err, true);
        }
        // The call's own accumulator holds every piece across attempts: a snapshot kept at
        // preemption plus its continuation.
        return Verdict::Success(call.state.lock().acc.response(&c.meta));
    }
    let parsed = match ep.provider {
        Provider::OpenAi => openai::parse_response_in(&c.body, &c.arena),
        Provider::Anthropic => anthropic::parse_response_in(&c.body, &c.arena),
    };
    match parsed {
        Ok(r) => {
            // A non-streamed answer is delivered as one delta too, so pullers see it.
            call.deliver_whole(&r, &c.arena);
            Verdict::Success(r)
        }
        Err(e) => Verdict::Fail(Error::new(
            Status::Provider,
            ep.redact(&format!(
                "endpoint \"{name}\": HTTP {}: malformed response: {e}",
                c.status
            )),
        )),
    }
}

/// A total, first-byte or idle-stream timeout of an attempt started at `started`, if one has
/// passed.
pub(crate) fn attempt_timeout(
    call: &CallInner,
    c: &Collector,
    started: Instant,
    now: Instant,
) -> Option<Error> {
    let t = &call.endpoint.config.timeouts;
    let elapsed = now.duration_since(started);
    let (what, limit) = match c.first_byte {
        _ if !t.total.is_zero() && elapsed > t.total => ("total", t.total),
        None if !t.first_byte.is_zero() && elapsed > t.first_byte => ("first byte", t.first_byte),
        Some(_) if !t.idle.is_zero() && now.duration_since(c.last_byte) > t.idle => {
            ("idle stream", t.idle)
        }
        _ => return None,
    };
    Some(Error::new(
        Status::Timeout,
        format!(
            "endpoint \"{}\": {what} timeout after {} ms",
            call.endpoint.config.name,
            limit.as_millis()
        ),
    ))
}

/// When the next total, first-byte or idle-stream check of an attempt is due (`None`: no such
/// timeout applies).
pub(crate) fn attempt_deadline(
    call: &CallInner,
    c: &Collector,
    started: Instant,
) -> Option<Instant> {
    let t = &call.endpoint.config.timeouts;
    let phase = match c.first_byte {
        None if !t.first_byte.is_zero() => Some(started + t.first_byte),
        Some(_) if !t.idle.is_zero() => Some(c.last_byte + t.idle),
        _ => None,
    };
    let total = (!t.total.is_zero()).then(|| started + t.total);
    phase.into_iter().chain(total).min()
}

/// Completes a successful call: prices it, records what it reported, fills the response cache
/// and finishes it. Returns the tokens it actually used (for the limiter), if reported.
pub(crate) fn succeed(call: &CallInner, mut r: ChatResponse) -> Option<u64> {
    let ep = &call.endpoint.config;
    r.usage.cost_usd = ep.prices.cost(&r.usage);
    // The answer itself is the call's outcome from now on (model and finish reason are read
    // from it, see CallInner::partial); only the usage is noted alongside.
    let retries = {
        let mut s = call.state.lock();
        s.meta.usage = r.usage;
        s.retries
    };
    let actual = r
        .usage
        .prompt_tokens
        .saturating_add(r.usage.completion_tokens);
    if let (Some(cache), Some(k)) = (&call.endpoint.cache, &call.cache_key) {
        if call.preemptions() == 0 {
            cache.put(k.clone(), r.clone());
        }
    }
    call.endpoint.record(&r.usage, true, retries);
    call.finish(Ok(r));
    (actual > 0).then_some(actual)
}

/// Decides on a retry after `err`: the delay before the next attempt (the retry is counted and
/// the call marked queued), or the error to finish the call with when retries are used up, the
/// server asks to wait too long, or the call was cancelled.
pub(crate) fn plan_retry(
    call: &CallInner,
    err: Error,
    after: Option<Duration>,
    rand01: f64,
) -> std::result::Result<Duration, Error> {
    let policy = call.endpoint.config.retry;
    let retries = call.state.lock().retries;
    let delay = if retries < policy.max_retries {
        policy.delay(retries, after, rand01)
    } else {
        None
    };
    match delay {
        Some(d) if !call.cancel_requested() => {
            let mut s = call.state.lock();
            s.retries += 1;
            s.phase = Phase::Queued;
            Ok(d)
        }
        _ => {
            let why = if retries >= policy.max_retries {
                format!("{} (gave up after {} retries)", err.message(), retries)
            } else if call.cancel_requested() {
                let n = call.state.lock().acc.deltas;
                return Err(super::call::cancelled_error(&call.endpoint.config.name, n));
            } else {
                format!(
                    "{} (server asked to wait longer than max_wait)",
                    err.message()
                )
            };
            Err(Error::new(err.status(), why))
        }
    }
}

/// Records the outcome in the endpoint totals and completes the call.
pub(crate) fn finish_call(call: &CallInner, result: Result<ChatResponse>) {
    let (usage, retries) = {
        let s = call.state.lock();
        (s.meta.usage, s.retries)
    };
    let (usage, ok) = match &result {
        Ok(r) => (r.usage, true),
        Err(_) => (usage, false),
    };
    call.endpoint.record(&usage, ok, retries);
    call.finish(result);
}

fn provider_error_text(provider: Provider, body: &str) -> String {
    let parsed = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| match provider {
            Provider::OpenAi => openai::error_text(&v),
            Provider::Anthropic => anthropic::error_text(&v),
        });
    parsed.unwrap_or_else(|| {
        let t = body.trim();
        if t.is_empty() {
            "(empty body)".to_string()
        } else {
            t.chars().take(500).collect()
        }
    })
}

/// Renders the body of the call's next attempt into `out`, built from the request with
/// `snapshot` (a preempted stream's output) appended as an assistant message the model
/// continues (assistant prefill, supported by OpenAI-compatible servers such as llama.cpp and
/// by Anthropic).
fn render_body(call: &CallInner, snapshot: Option<&str>, out: &mut Vec<u8>) {
    let ep = &call.endpoint.config;
    let with_snapshot;
    let request = match snapshot {
        None => &call.request,
        Some(snap) => {
            let mut r = call.request.clone();
            r.messages.push(super::types::ChatMessage::text(
                super::types::Role::Assistant,
                snap.to_string(),
            ));
            with_snapshot = r;
            &with_snapshot
        }
    };
    let written = match ep.provider {
        Provider::OpenAi => openai::write_body(request, ep, out),
        Provider::Anthropic => anthropic::write_body(request, ep, out),
    };
    written.expect("writing to a Vec cannot fail");
}

/// An easy handle for `call`'s next attempt: `pooled` is a handle from an earlier transfer,
/// with whether it is still configured for this endpoint and mode (then only the body and the
/// per-transfer flags are set). The body is the caller's rendered one, or one rendered into
/// the collector's reused buffer (with `snapshot` appended, when continuing a preempted
/// stream); either way libcurl sends it from where it is, without copying it.
pub(crate) fn build_easy(
    pooled: Option<(Easy2<Collector>, bool)>,
    call: &Arc<CallInner>,
    snapshot: Option<&str>,
    fresh_connection: bool,
) -> std::result::Result<Easy2<Collector>, curl::Error> {
    let ep = &call.endpoint.config;
    let stream = call.request.stream;
    let (mut easy, configured) = match pooled {
        Some((mut e, configured)) => {
            e.get_mut().reset(Some(call.clone()), ep.provider, stream);
            (e, configured)
        }
        None => (
            Easy2::new(Collector::new(Some(call.clone()), ep.provider, stream)),
            false,
        ),
    };
    if !configured {
        configure_easy(&mut easy, &call.endpoint, stream)?;
    }
    let body: &[u8] = match (&call.body, snapshot) {
        (Some(b), None) => b,
        _ => {
            let c = easy.get_mut();
            render_body(call, snapshot, &mut c.request);
            &c.request
        }
    };
    let (ptr, len) = (body.as_ptr(), body.len());
    // Large bodies go with the endpoint's list that has `Expect:`; a handle switches lists
    // only when a body's size class differs from the last one's.
    let expect = len > EXPECT_ABOVE;
    let raw = easy.raw();
    if let Some((headers, set)) = &mut easy.get_mut().request_headers {
        if *set != expect {
            headers.set_on(raw, expect)?;
            *set = expect;
        }
    }
    // SAFETY: the body outlives the transfer and is not touched during it: it is either the
    // call's own rendered body (the collector holds the call) or the collector's buffer,
    // which is only refilled here, before the next transfer of this handle. The size is set
    // first, so libcurl never reads the data as a C string.
    unsafe {
        let raw = easy.raw();
        let rc = curl_sys::curl_easy_setopt(
            raw,
            curl_sys::CURLOPT_POSTFIELDSIZE_LARGE,
            len as curl_sys::curl_off_t,
        );
        if rc != curl_sys::CURLE_OK {
            return Err(curl::Error::new(rc));
        }
        let rc = curl_sys::curl_easy_setopt(raw, curl_sys::CURLOPT_POSTFIELDS, ptr);
        if rc != curl_sys::CURLE_OK {
            return Err(curl::Error::new(rc));
        }
    }
    easy.fresh_connect(fresh_connection)?;
    Ok(easy)
}

/// The status code of an HTTP status line (`HTTP/1.1 200 OK`): its second word as a number,
/// 0 when that is not one.
fn status_code(line: &[u8]) -> u32 {
    let mut words = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let Some(code) = words.nth(1) else { return 0 };
    if code.is_empty() || code.len() > 9 || !code.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    code.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'))
}

/// Sets the options that depend only on the endpoint and the mode.
fn configure_easy(
    easy: &mut Easy2<Collector>,
    state: &super::hub::EndpointState,
    stream: bool,
) -> std::result::Result<(), curl::Error> {
    let ep = &state.config;
    match &state.curl_url {
        Some(url) => {
            url.set_on(easy)?;
            easy.get_mut().url = Some(url.clone());
        }
        None => easy.url(&ep.url())?,
    }
    if !state.proxy_env {
        // Said once here rather than looked up in the environment on every request.
        easy.proxy("")?;
        easy.noproxy("")?;
    }
    easy.post(true)?;
    let headers = state.curl_headers(stream).clone();
    headers.set_on(easy.raw(), false)?;
    easy.get_mut().request_headers = Some((headers, false));
    easy.http_version(HttpVersion::V2TLS)?;
    // Over TLS, wait for an HTTP/2 connection to multiplex on rather than opening another.
    if ep.base_url.starts_with("https:") {
        easy.pipewait(true)?;
    }
    easy.tcp_nodelay(true)?;
    // libcurl gives every transfer a 16 KiB receive buffer by default; model answers arrive
    // in small pieces, and with thousands of calls in flight that buffer dominated memory.
    easy.buffer_size(RECEIVE_BUFFER)?;
    easy.signal(false)?;
    if !ep.timeouts.connect.is_zero() {
        easy.connect_timeout(ep.timeouts.connect)?;
    }
    // The total timeout is checked with the first-byte and idle ones (`attempt_timeout`), not
    // by libcurl: a libcurl timeout costs it a timer set and looked up at every transfer step
    // (~1.1k instructions per request, measured).
    Ok(())
}

/// Points a handle that goes back to a pool at no body: the body it sent belongs to a call or
/// a buffer that may go away before the handle is used again.
pub(crate) fn forget_body(easy: &mut Easy2<Collector>) {
    // SAFETY: a null POSTFIELDS with size 0 is a valid setting; the handle is not in a transfer.
    unsafe {
        let raw = easy.raw();
        curl_sys::curl_easy_setopt(
            raw,
            curl_sys::CURLOPT_POSTFIELDSIZE_LARGE,
            0 as curl_sys::curl_off_t,
        );
        curl_sys::curl_easy_setopt(raw, curl_sys::CURLOPT_POSTFIELDS, std::ptr::null::<u8>());
    }
}

/// Whether an easy handle may be kept for another transfer after this one: only after a
/// plain-HTTP transfer that ran to its end. (With libcurl 7.72-8.4 a handle removed early, or
/// one whose HTTP/2 connection other streams still use, keeps its receive buffer, and resizing
/// the buffer would then fail.)
pub(crate) fn reusable_after(ep: &Endpoint, completed: bool) -> bool {
    completed && ep.base_url.starts_with("http:")
}

/// A small xorshift generator for backoff jitter.
pub(crate) struct Jitter(u64);

impl Jitter {
    /// Seeded from the clock.
    pub(crate) fn new() -> Jitter {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Jitter(seed | 1)
    }

    /// A number in [0, 1).
    pub(crate) fn next01(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_read_from_status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK"), 200);
        assert_eq!(status_code(b"HTTP/2 429"), 429);
        assert_eq!(status_code(b"HTTP/1.1   503   Service Unavailable"), 503);
        assert_eq!(status_code(b"HTTP/1.1"), 0);
        assert_eq!(status_code(b"HTTP/1.1 2x0 OK"), 0);
        assert_eq!(status_code(b"HTTP/1.1 99999999999 OK"), 0);
    }
    use crate::model::call::Pull;
    use crate::model::call::{CallOptions, DeltaFn};
    use crate::model::hub::ModelHub;
    use crate::model::stream::{DeltaBuf, StreamDelta};
    use crate::model::types::ChatRequest;
    use crate::test_alloc::allocations;
    use std::sync::atomic::Ordering;

    /// A collector for a streamed call whose observer reads every delta, as the C callback
    /// and agents do.
    fn collector(provider: &str) -> (Collector, Arc<CallInner>) {
        let hub = ModelHub::new("t");
        hub.add_endpoint_json(
            &format!(r#"{{"name":"e","provider":"{provider}","base_url":"http://127.0.0.1:9/v1","model":"m"}}"#),
            false,
        )
        .unwrap();
        let seen = std::sync::atomic::AtomicUsize::new(0);
        let opts = CallOptions {
            observer: Some(Arc::new(DeltaFn(Box::new(move |d: StreamDelta<'_>| {
                if let StreamDelta::Text(t) = d {
                    seen.fetch_add(t.len(), Ordering::Relaxed);
                }
            })))),
            ..Default::default()
        };
        let req = ChatRequest::from_json(
            r#"{"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        let call = hub.new_call("e", req, opts).unwrap();
        let p = call.endpoint.config.provider;
        let mut c = Collector::new(Some(call.clone()), p, true);
        assert!(c.header(b"HTTP/1.1 200 OK\r\n"));
        assert!(c.header(b"content-type: text/event-stream\r\n"));
        (c, call)
    }

    /// Feeds `events` (each split across two reads, to exercise buffering), pulling every
    /// delta after each read; returns the allocations made per event after the first `warm`.
    fn allocations_per_event(
        c: &mut Collector,
        call: &CallInner,
        events: &[String],
        warm: usize,
    ) -> f64 {
        let mut buf = DeltaBuf::new();
        let mut pulled = 0usize;
        let mut start = 0;
        for (i, ev) in events.iter().enumerate() {
            if i == warm {
                start = allocations();
            }
            let (a, b) = ev.as_bytes().split_at(ev.len() / 2);
            c.write(a).unwrap();
            c.write(b).unwrap();
            while call.next_delta(Some(Instant::now()), &mut buf) == Pull::Delta {
                pulled += usize::from(buf.delta() != StreamDelta::Text(""));
            }
        }
        let n = allocations() - start;
        assert!(
            pulled > events.len() / 2,
            "deltas were delivered ({pulled})"
        );
        n as f64 / (events.len() - warm) as f64
    }

    #[test]
    fn openai_stream_allocates_nothing_per_token() {
        let (mut c, call) = collector("openai");
        let mut events = vec![
            "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null},\"logprobs\":null,\"finish_reason\":null}]}\n\n".to_string(),
        ];
        for i in 0..4000 {
            let piece = match i % 4 {
                0 => format!("word{i} "),
                1 => "line\\n\\t\\\"quoted\\\" ".to_string(),
                2 => "caf\\u00e9 \\ud83d\\ude00 ".to_string(),
                _ => "é中 ".to_string(),
            };
            events.push(format!("data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"system_fingerprint\":\"b1\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{piece}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"));
        }
        events.push("data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n".into());
        for _ in 0..2000 {
            events.push("data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"k\\\": 1}\"}}]}}]}\n\n".into());
        }
        let per_event = allocations_per_event(&mut c, &call, &events, 200);
        // Buffers double as the answer grows: a handful of reallocations in 6000 events.
        assert!(
            per_event < 0.01,
            "{per_event} allocations per streamed event"
        );
        // Each read is decoded in the collector's arena, which is reset once the read's deltas
        // are handed on: it stays at one small chunk while the answer grows to tens of KB.
        assert!(
            c.arena.allocated_bytes() <= 8 << 10,
            "arena holds {} bytes",
            c.arena.allocated_bytes()
        );
        c.reset_arena();
        let s = call.state.lock();
        assert!(s.acc.content.len() > 40_000);
        assert_eq!(
            s.acc.tool_calls[0].arguments.len(),
            2000 * "{\"k\": 1}".len()
        );
        assert!(s
            .acc
            .content
            .contains("line\n\t\"quoted\" caf\u{e9} \u{1f600} é中 "));
        assert!(s.acc.estimated_tokens > 8000);
    }

    #[test]
    fn anthropic_stream_allocates_nothing_per_token() {
        let (mut c, call) = collector("anthropic");
        let mut events = vec![
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\",\"content\":[],\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n".to_string(),
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_string(),
        ];
        for i in 0..4000 {
            let piece = if i % 2 == 0 {
                "tok\\n\\\"x\\\" "
            } else {
                "caf\\u00e9 "
            };
            events.push(format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{piece}\"}}}}\n\n"));
            if i % 50 == 0 {
                events.push("event: ping\ndata: {\"type\": \"ping\"}\n\n".into());
            }
        }
        let per_event = allocations_per_event(&mut c, &call, &events, 200);
        assert!(
            per_event < 0.01,
            "{per_event} allocations per streamed event"
        );
        assert!(call.state.lock().acc.content.ends_with("caf\u{e9} "));
    }
}
