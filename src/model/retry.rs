//! Failure classification, retry timing and rate-limit headers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What to do about a failed HTTP attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// Transient: retry, after at least `after` when the server said so.
    Retryable {
        /// A server-requested minimum delay.
        after: Option<Duration>,
    },
    /// Permanent for this request (bad request, auth, not found, context overflow...).
    NonRetryable,
    /// A 429 caused by exhausted credit or quota: retrying cannot help, never retry.
    SpendLimit,
}

/// Retry settings of an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Delay before the first retry (doubled each time).
    pub base_delay: Duration,
    /// Upper bound of a computed delay (a server's `retry-after` may exceed it, up to `max_wait`).
    pub max_delay: Duration,
    /// The longest server-requested wait honoured; longer waits fail the call instead.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_wait: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with "equal jitter": half fixed, half random, capped at `max_delay`.
    /// `retry` is 0 for the first retry. `rand01` is a uniform sample in `[0, 1)`.
    pub fn backoff(&self, retry: u32, rand01: f64) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32.checked_shl(retry.min(30)).unwrap_or(u32::MAX));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        half + half.mul_f64(rand01.clamp(0.0, 1.0))
    }

    /// The delay before retry number `retry`, honouring a server-requested minimum. `None` when
    /// the server asks for longer than `max_wait`.
    pub fn delay(
        &self,
        retry: u32,
        server_after: Option<Duration>,
        rand01: f64,
    ) -> Option<Duration> {
        let computed = self.backoff(retry, rand01);
        match server_after {
            Some(after) if after > self.max_wait => None,
            Some(after) => Some(after.max(computed.min(after + self.base_delay))),
            None => Some(computed),
        }
    }
}

/// Classifies an HTTP error response. `headers` are (lower-case name, value) pairs.
pub fn classify(status: u32, headers: &Headers, body: &str, now: SystemTime) -> FailureClass {
    let after = retry_after(headers, now);
    match status {
        429 if is_spend_limit(body) => FailureClass::SpendLimit,
        408 | 409 | 425 | 429 | 500 | 502 | 503 | 504 | 520..=524 | 529 => {
            FailureClass::Retryable { after }
        }
        _ => FailureClass::NonRetryable,
    }
}

/// Whether a 429 body says the account is out of credit rather than rate limited.
pub fn is_spend_limit(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    [
        "insufficient_quota",
        "billing",
        "credit balance",
        "spend limit",
        "spending limit",
        "exceeded your current quota",
        "budget",
    ]
    .iter()
    .any(|needle| b.contains(needle))
}

/// Whether the library reads a response header of this name (any case): the content type,
/// `retry-after(-ms)` and the rate-limit families. Transfers keep only these (and skip lines
/// by their first letter first: keep that filter in step when adding a name here).
pub fn is_read_header(name: &[u8]) -> bool {
    let starts = |p: &[u8]| name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p);
    name.eq_ignore_ascii_case(b"content-type")
        || name.eq_ignore_ascii_case(b"retry-after")
        || name.eq_ignore_ascii_case(b"retry-after-ms")
        || starts(b"x-ratelimit-")
        || starts(b"anthropic-ratelimit-")
}

/// A response's headers in one buffer of `name:value` lines, names in lower case and values
/// trimmed: a response costs one growing buffer, not two strings per header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    buf: String,
    /// Whether any `x-ratelimit-*` or `anthropic-ratelimit-*` header arrived (most responses
    /// have none, and then nothing needs scanning for them).
    rate_limits: bool,
}

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Forgets every header, keeping the buffer.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.rate_limits = false;
    }

    /// Adds a header (`name` is stored in lower case; line breaks in either part and colons in
    /// the name are dropped).
    pub fn push(&mut self, name: &str, value: &str) {
        let (name, value) = (name.trim_ascii(), value.trim_ascii());
        let start = self.buf.len();
        if name
            .bytes()
            .all(|b| b.is_ascii() && !matches!(b, b'\n' | b'\r' | b':'))
        {
            // The usual case: an ASCII name, lower-cased in place.
            self.buf.push_str(name);
            self.buf[start..].make_ascii_lowercase();
        } else {
            self.buf.extend(
                name.chars()
                    .filter(|c| !matches!(c, '\n' | '\r' | ':'))
                    .map(|c| c.to_ascii_lowercase()),
            );
        }
        let name = &self.buf.as_bytes()[start..];
        self.rate_limits |= matches!(name.first(), Some(b'x' | b'a'))
            && (name.starts_with(b"x-ratelimit-") || name.starts_with(b"anthropic-ratelimit-"));
        self.buf.push(':');
        if value.bytes().any(|b| matches!(b, b'\n' | b'\r')) {
            self.buf
                .extend(value.chars().filter(|c| !matches!(c, '\n' | '\r')));
        } else {
            self.buf.push_str(value);
        }
        self.buf.push('\n');
    }

    /// The value of the last header called `name` (lower case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .filter(|(k, _)| *k == name)
            .last()
            .map(|(_, v)| v)
    }

    /// Every (name, value), in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.buf.lines().filter_map(|l| l.split_once(':'))
    }

    /// Headers from (name, value) pairs.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (k, v) in pairs {
            h.push(k, v);
        }
        h
    }
}

/// The wait a server requested: `retry-after-ms`, `retry-after` (seconds or HTTP date), or for a
/// rate limit the reset of an exhausted `x-ratelimit-*` / `anthropic-ratelimit-*` bucket.
pub fn retry_after(headers: &Headers, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
    {
        if ms >= 0.0 && ms.is_finite() {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    if let Some(v) = headers.get("retry-after") {
        if let Ok(secs) = v.parse::<f64>() {
            if secs >= 0.0 && secs.is_finite() {
                return Some(Duration::from_secs_f64(secs));
            }
        }
        if let Some(at) = parse_http_date(v) {
            return Some(at.duration_since(now).unwrap_or(Duration::ZERO));
        }
    }
    rate_limit_reset(headers, now)
}

/// Rate-limit state reported by headers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimitInfo {
    /// Requests left in the current window.
    pub remaining_requests: Option<u64>,
    /// Tokens left in the current window.
    pub remaining_tokens: Option<u64>,
    /// When the exhausted bucket (if any) refills.
    pub reset_after: Option<Duration>,
}

/// Reads `x-ratelimit-*` (OpenAI) and `anthropic-ratelimit-*` headers.
pub fn rate_limit_info(headers: &Headers, now: SystemTime) -> RateLimitInfo {
    if !headers.rate_limits {
        return RateLimitInfo::default();
    }
    let num = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| headers.get(n).and_then(|v| v.parse::<u64>().ok()))
    };
    RateLimitInfo {
        remaining_requests: num(&[
            "x-ratelimit-remaining-requests",
            "anthropic-ratelimit-requests-remaining",
        ]),
        remaining_tokens: num(&[
            "x-ratelimit-remaining-tokens",
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-ratelimit-input-tokens-remaining",
        ]),
        reset_after: rate_limit_reset(headers, now),
    }
}

fn rate_limit_reset(headers: &Headers, now: SystemTime) -> Option<Duration> {
    let exhausted = |remaining: &str| headers.get(remaining).is_some_and(|v| v == "0");
    let pairs = [
        (
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ),
        ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
        (
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
        ),
        (
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-ratelimit-tokens-reset",
        ),
        (
            "anthropic-ratelimit-input-tokens-remaining",
            "anthropic-ratelimit-input-tokens-reset",
        ),
        (
            "anthropic-ratelimit-output-tokens-remaining",
            "anthropic-ratelimit-output-tokens-reset",
        ),
    ];
    pairs
        .iter()
        .filter(|(rem, _)| exhausted(rem))
        .filter_map(|(_, reset)| headers.get(reset))
        .filter_map(|v| {
            parse_go_duration(v).or_else(|| {
                parse_rfc3339(v).map(|t| t.duration_since(now).unwrap_or(Duration::ZERO))
            })
        })
        .max()
}

/// Parses OpenAI's reset durations such as `"1s"`, `"6m0s"`, `"250ms"`, `"1h2m3.5s"`.
pub fn parse_go_duration(v: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = v.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn to_system_time(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: f64) -> Option<SystemTime> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s >= 61.0 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + (h * 3600 + mi * 60) as i64;
    if secs < 0 {
        return None;
    }
    Some(UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_secs_f64(s))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form `retry-after` uses.
pub fn parse_http_date(v: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: u32 = parts[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])? as u32
        + 1;
    let year: i64 = parts[3].parse().ok()?;
    let hms: Vec<u32> = parts[4]
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<Vec<u32>>>()?;
    if hms.len() != 3 {
        return None;
    }
    to_system_time(year, month, day, hms[0], hms[1], hms[2] as f64)
}

/// Parses an RFC 3339 UTC time (`2024-05-01T12:00:30Z`), the form Anthropic's resets use.
pub fn parse_rfc3339(v: &str) -> Option<SystemTime> {
    let v = v.trim().strip_suffix('Z')?;
    let (date, time) = v.split_once('T')?;
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || t.len() != 3 {
        return None;
    }
    to_system_time(
        d[0].parse().ok()?,
        d[1].parse().ok()?,
        d[2].parse().ok()?,
        t[0].parse().ok()?,
        t[1].parse().ok()?,
        t[2].parse().ok()?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_headers_the_library_reads_are_kept() {
        for name in [
            "Content-Type",
            "retry-after",
            "Retry-After-Ms",
            "x-ratelimit-remaining-requests",
            "Anthropic-RateLimit-Tokens-Reset",
        ] {
            assert!(is_read_header(name.as_bytes()), "{name}");
            // The collector's first-letter filter lets every one of them through.
            assert!(matches!(
                name.as_bytes()[0] | 0x20,
                b'c' | b'r' | b'x' | b'a'
            ));
        }
        for name in [
            "Content-Length",
            "Date",
            "Server",
            "x-ratelimit",
            "retry",
            "",
            "x-request-id",
        ] {
            assert!(!is_read_header(name.as_bytes()), "{name}");
        }
    }

    fn h(pairs: &[(&str, &str)]) -> Headers {
        Headers::from_pairs(pairs)
    }

    #[test]
    fn headers_keep_the_last_value_in_lower_case() {
        let mut hs = h(&[
            ("Retry-After", " 3 "),
            ("x-a", "1"),
            ("X-A", "2:with colon"),
        ]);
        assert_eq!(hs.get("retry-after"), Some("3"));
        assert_eq!(hs.get("x-a"), Some("2:with colon"));
        assert_eq!(hs.get("missing"), None);
        assert_eq!(hs.iter().count(), 3);
        hs.push("Bad:Name\n", "v\r\nx");
        assert_eq!(hs.get("badname"), Some("vx"));
        hs.clear();
        assert_eq!(hs.iter().count(), 0);
    }

    #[test]
    fn classification() {
        let now = SystemTime::now();
        assert_eq!(
            classify(400, &Headers::new(), "", now),
            FailureClass::NonRetryable
        );
        assert_eq!(
            classify(401, &Headers::new(), "", now),
            FailureClass::NonRetryable
        );
        for s in [500, 502, 503, 504, 529, 408] {
            assert_eq!(
                classify(s, &Headers::new(), "", now),
                FailureClass::Retryable { after: None },
                "{s}"
            );
        }
        assert_eq!(
            classify(
                429,
                &h(&[("retry-after", "2")]),
                "{\"error\":{\"type\":\"rate_limit_error\"}}",
                now
            ),
            FailureClass::Retryable {
                after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(
            classify(429, &Headers::new(), "{\"error\":{\"code\":\"insufficient_quota\",\"message\":\"You exceeded your current quota\"}}", now),
            FailureClass::SpendLimit
        );
        assert_eq!(
            classify(
                429,
                &Headers::new(),
                "{\"type\":\"error\",\"error\":{\"message\":\"Your credit balance is too low\"}}",
                now
            ),
            FailureClass::SpendLimit
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(now));
        assert_eq!(
            retry_after(&h(&[("retry-after", "Sun, 06 Nov 1994 08:49:47 GMT")]), now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_after(&h(&[("retry-after", "1.5")]), now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(&h(&[("retry-after-ms", "250")]), now),
            Some(Duration::from_millis(250))
        );
        assert_eq!(retry_after(&h(&[("retry-after", "soon")]), now), None);
        assert_eq!(
            retry_after(
                &h(&[
                    ("x-ratelimit-remaining-tokens", "0"),
                    ("x-ratelimit-reset-tokens", "6m0s")
                ]),
                now
            ),
            Some(Duration::from_secs(360))
        );
        assert_eq!(
            retry_after(
                &h(&[
                    ("x-ratelimit-remaining-tokens", "10"),
                    ("x-ratelimit-reset-tokens", "6m0s")
                ]),
                now
            ),
            None
        );
        assert_eq!(
            retry_after(
                &h(&[
                    ("anthropic-ratelimit-requests-remaining", "0"),
                    ("anthropic-ratelimit-requests-reset", "1994-11-06T08:50:07Z")
                ]),
                now
            ),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_go_duration("1h2m3.5s"),
            Some(Duration::from_secs_f64(3723.5))
        );
        assert_eq!(parse_go_duration("x"), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_cap() {
        let p = RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            max_wait: Duration::from_secs(10),
        };
        assert_eq!(p.backoff(0, 0.0), Duration::from_millis(50));
        assert_eq!(p.backoff(0, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 0.0), Duration::from_millis(200));
        assert_eq!(
            p.backoff(10, 0.99).max(Duration::from_millis(1000)),
            Duration::from_millis(1000)
        );
        assert!(p.backoff(40, 0.5) <= Duration::from_millis(1000));
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(2)), 0.5),
            Some(Duration::from_secs(2))
        );
        assert_eq!(p.delay(0, Some(Duration::from_secs(60)), 0.5), None);
    }

    #[test]
    fn rate_limit_headers() {
        let info = rate_limit_info(
            &h(&[
                ("x-ratelimit-remaining-requests", "7"),
                ("x-ratelimit-remaining-tokens", "1200"),
            ]),
            SystemTime::now(),
        );
        assert_eq!(info.remaining_requests, Some(7));
        assert_eq!(info.remaining_tokens, Some(1200));
        assert_eq!(info.reset_after, None);
    }
}
