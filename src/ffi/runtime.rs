//! `agentos_runtime`: the scheduler and its worker threads.

use super::config::agentos_config;
use super::error::agentos_error;
use super::status::agentos_status;
use super::string::into_c_string;
use super::{as_ref, non_null, str_arg, write_out};
use crate::runtime::Runtime;

/// A running AgentOS runtime: worker threads around a priority run queue.
///
/// Ownership: created by `agentos_runtime_new`, freed by `agentos_runtime_free`.
/// Thread safety: every function taking a `const agentos_runtime *` may be called from any
/// thread concurrently. `agentos_runtime_free` must be the last call on it, made once, while no
/// other thread is inside a call on the same runtime.
pub struct agentos_runtime {
    pub(crate) inner: Runtime,
}

/// Starts a runtime with the settings in `cfg`: spawns the worker threads and returns at once.
///
/// `cfg` is only read; the caller still owns it and may free it right away. On success `*out`
/// receives a runtime the caller frees with `agentos_runtime_free`.
///
/// Returns `AGENTOS_STATUS_OK`; `AGENTOS_STATUS_NULL_ARGUMENT` (NULL `cfg` or `out`);
/// `AGENTOS_STATUS_IO` when the operating system refuses a thread (threads already started are
/// stopped and joined before returning). `err` may be NULL; on failure, when it is not, `*err`
/// receives a new error to free with `agentos_error_free`.
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_runtime_new(
    cfg: *const agentos_config,
    out: *mut *mut agentos_runtime,
    err: *mut *mut agentos_error,
) -> agentos_status {
    ffi_boundary!(err = err, {
        let cfg = as_ref(cfg, "cfg")?;
        non_null(out, "out")?;
        let inner = Runtime::start(cfg.inner.clone())?;
        write_out(out, Box::into_raw(Box::new(agentos_runtime { inner })));
        Ok(())
    })
}

/// Reads how many worker threads the runtime started.
///
/// Returns `AGENTOS_STATUS_OK` or `AGENTOS_STATUS_NULL_ARGUMENT`; `*out` is written only on
/// success.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_runtime_worker_count(
    rt: *const agentos_runtime,
    out: *mut u32,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        non_null(out, "out")?;
        write_out(out, rt.inner.worker_count());
        Ok(())
    })
}

/// Adds a model endpoint described by JSON:
/// `{"name":"local","provider":"openai"|"anthropic","base_url":"http://127.0.0.1:8091/v1",
/// "model":"local","api_key_env":"OPENAI_API_KEY","headers":{"x-name":"value"},
/// "preset":"gpt-4o-mini","context_window":N,"max_output_tokens":N,
/// "prices":{"input_per_mtok","output_per_mtok","cached_input_per_mtok","cache_write_per_mtok"},
/// "limits":{"rpm":N,"tpm":N,"concurrency":N},
/// "timeouts_ms":{"connect":N,"first_byte":N,"idle":N,"total":N},
/// "retry":{"max_retries":N,"base_delay_ms":N,"max_delay_ms":N,"max_wait_ms":N},
/// "cache":{"max_bytes":N}}`. With `cache.max_bytes` set, temperature-0 requests are answered
/// from an LRU cache when the same request was answered before (off by default).
/// Only `name`, `provider` and `base_url` are required; a known `model` (or `preset`) fills in
/// the context window, output limit and prices. The API key is read from the named environment
/// variable now, kept in memory only, and never appears in errors, events or logs.
/// Proxies follow libcurl's environment variables (`http_proxy`, `https_proxy`, `all_proxy`,
/// `no_proxy` and their upper-case forms but `HTTP_PROXY`). Whether any is set is checked now:
/// if none is, the endpoint's requests use no proxy (a variable set later is not seen); if one
/// is, libcurl reads them on every request as usual. Set them before adding the endpoint.
///
/// Returns `OK`; `NULL_ARGUMENT`; `INVALID_UTF8`; `INVALID_JSON` (unknown key or wrong type,
/// named in the message); `INVALID_ARGUMENT` (bad value, or the name is taken); `NOT_FOUND`
/// (unknown preset, or the key's environment variable is unset). `err` may be NULL.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_runtime_add_endpoint(
    rt: *const agentos_runtime,
    endpoint_json: *const std::ffi::c_char,
    err: *mut *mut agentos_error,
) -> agentos_status {
    ffi_boundary!(err = err, {
        let rt = as_ref(rt, "rt")?;
        let json = str_arg(endpoint_json, "endpoint_json")?;
        rt.inner.shared().models().add_endpoint_json(json, false)?;
        Ok(())
    })
}

/// Model usage totals as JSON: `{"runtime":{"usage":{...},"succeeded":N,"failed":N,
/// "retries":N,"caller_thread_calls":N},"endpoints":{"<name>":{...same, without
/// caller_thread_calls...}}}` where usage holds `prompt_tokens`, `completion_tokens`,
/// `cached_tokens`, `cache_creation_tokens`, `reasoning_tokens` and `cost_usd`.
/// `caller_thread_calls` counts the calls that ran on the thread that asked for them (a
/// `agentos_request_run`, or an agent's worker) instead of on the I/O thread.
///
/// On success `*out` receives a string the caller frees with `agentos_string_free`.
/// Returns `OK` or `NULL_ARGUMENT`.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_runtime_usage_json(
    rt: *const agentos_runtime,
    out: *mut *mut std::ffi::c_char,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        non_null(out, "out")?;
        let json = rt.inner.shared().models().usage_json().to_string();
        write_out(out, into_c_string(json));
        Ok(())
    })
}

/// Stops and frees a runtime. `agentos_runtime_free(NULL)` does nothing.
///
/// Shutdown order: model calls still queued or in flight finish with `AGENTOS_STATUS_SHUTDOWN`
/// (their partial output stays readable) and the I/O thread stops; the run queue is closed,
/// queued work that has not started is dropped, every worker finishes its current job, and all
/// threads are joined before this returns. Objects
/// created from the runtime that the caller still holds (documented per type) stay safe to
/// free afterwards, and their other calls return `AGENTOS_STATUS_SHUTDOWN`; objects that do not
/// belong to a runtime (configs, errors, strings) are unaffected. This makes any finaliser order
/// safe for garbage-collected hosts.
///
/// Thread safety: call once, from a thread that is not one of the runtime's own (such as inside
/// a callback it runs); if it is, the threads are detached instead of joined, to avoid a
/// deadlock. No other call on `rt` may be in progress or made afterwards.
#[no_mangle]
pub unsafe extern "C" fn agentos_runtime_free(rt: *mut agentos_runtime) {
    ffi_boundary!({
        if !rt.is_null() {
            // SAFETY: `rt` came from `agentos_runtime_new` and is freed once; dropping the
            // runtime stops and joins its threads.
            drop(Box::from_raw(rt));
        }
    })
}
