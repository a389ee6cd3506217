//! Models: providers, the HTTP engine over libcurl, streaming, retries and limits.
//!
//! - [`types`]: provider-neutral messages, requests, responses, usage.
//! - [`endpoint`] and [`presets`]: endpoints described as data, built-in model presets.
//! - [`openai`] and [`anthropic`]: the two wire formats.
//! - [`sse`], [`json_text`] and [`stream`]: the incremental SSE parser, JSON string decoding,
//!   deltas and the stream accumulator (no allocation per token).
//! - [`retry`] and [`limiter`]: failure classification, backoff, rate-limit headers, the
//!   per-endpoint RPM/TPM/concurrency limiter.
//! - [`engine`]: the single I/O thread driving a curl multi handle.
//! - `transfer`: one HTTP attempt (easy-handle set-up, response collection, the verdict),
//!   shared by the I/O thread and `direct`, which runs synchronous calls on the caller's thread.
//! - [`call`] and [`hub`]: a call as its caller sees it; the runtime's endpoints and totals.

pub mod anthropic;
pub mod call;
mod curl_url;
pub(crate) mod direct;
pub mod endpoint;
pub mod engine;
pub mod hub;
pub mod json_text;
pub mod limiter;
pub mod openai;
pub(crate) mod json_scan;
mod openai_scan;
pub mod poller;
pub mod presets;
pub mod retry;
pub mod room;
pub mod sse;
pub mod stream;
pub(crate) mod transfer;
pub mod types;
