//! `agentos_config`: runtime settings, built before `agentos_runtime_new`.

use super::error::agentos_error;
use super::status::agentos_status;
use super::{as_mut, non_null, str_arg, write_out};
use crate::config::RuntimeConfig;

/// Settings for a runtime, built with typed setters and/or JSON.
///
/// Ownership: created by `agentos_config_new`, freed by `agentos_config_free`. A runtime copies
/// what it needs, so the config may be freed (or reused) right after `agentos_runtime_new`.
/// Thread safety: not synchronised. Use one config from one thread at a time; concurrent
/// `agentos_runtime_new` calls that only read the same config are fine.
pub struct agentos_config {
    pub(crate) inner: RuntimeConfig,
}

/// Creates a config holding the defaults: one worker per available core, thread names
/// prefixed `"agentos"`.
///
/// On success `*out` receives a config the caller frees with `agentos_config_free`.
/// Returns `AGENTOS_STATUS_OK`, or `AGENTOS_STATUS_NULL_ARGUMENT` when `out` is NULL (then
/// nothing is allocated).
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_config_new(out: *mut *mut agentos_config) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        non_null(out, "out")?;
        let cfg = Box::new(agentos_config {
            inner: RuntimeConfig::default(),
        });
        write_out(out, Box::into_raw(cfg));
        Ok(())
    })
}

/// Applies the keys of a JSON object to `cfg`, leaving keys it does not mention unchanged.
///
/// Keys: `"workers"` (integer 0..=1024; 0 = one per available core), `"thread_name"` (string,
/// 1..=10 bytes, the prefix of the runtime's thread names), `"deterministic"` (boolean: one
/// worker, fixed order, tools run in turn — for reproducible tests), `"event_capacity"` (events
/// kept for `agentos_runtime_next_event`, default 65536), `"max_agents"` (default 1000000),
/// `"starvation_ms"` (aging: a job waiting this long for a worker runs next whatever its
/// priority; a model call waiting for admission to its endpoint, or an agent paused at a safe
/// point for a more urgent one, gains a priority level for each `starvation_ms` it waits, so
/// more urgent work that keeps arriving can no longer delay it forever: by about (their
/// priority - its priority + 1) x `starvation_ms` when the endpoint keeps up with them, longer
/// under a backlog, where they age too; 0 = no aging, as in deterministic mode; default 2000)
/// and `"max_history_bytes"` (all agents' history together; 0 = no limit).
///
/// The document is validated as a whole before anything changes: on any error `cfg` is exactly
/// as before. Returns `AGENTOS_STATUS_OK`; `AGENTOS_STATUS_NULL_ARGUMENT` (NULL `cfg` or
/// `json`); `AGENTOS_STATUS_INVALID_UTF8`; `AGENTOS_STATUS_INVALID_JSON` (not JSON, not an
/// object, an unknown key, or a value of the wrong type — the message names the key);
/// `AGENTOS_STATUS_INVALID_ARGUMENT` (a value out of range — the message names the key).
///
/// `err` may be NULL. On failure, when it is not, `*err` receives a new error that the caller
/// frees with `agentos_error_free`.
/// Thread safety: one thread at a time per `cfg`.
#[no_mangle]
pub unsafe extern "C" fn agentos_config_set_json(
    cfg: *mut agentos_config,
    json: *const std::ffi::c_char,
    err: *mut *mut agentos_error,
) -> agentos_status {
    ffi_boundary!(err = err, {
        let cfg = as_mut(cfg, "cfg")?;
        let json = str_arg(json, "json")?;
        cfg.inner.apply_json(json)
    })
}

/// Sets the number of worker threads; `0` means one per available core (the default).
///
/// Returns `AGENTOS_STATUS_OK`, `AGENTOS_STATUS_NULL_ARGUMENT` (NULL `cfg`), or
/// `AGENTOS_STATUS_INVALID_ARGUMENT` when `n` exceeds 1024 (then `cfg` is unchanged).
/// Thread safety: one thread at a time per `cfg`.
#[no_mangle]
pub unsafe extern "C" fn agentos_config_set_workers(
    cfg: *mut agentos_config,
    n: u32,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        as_mut(cfg, "cfg")?.inner.set_workers(n)
    })
}

/// Sets the prefix of the runtime's thread names (1 to 10 bytes of UTF-8; default `"agentos"`).
/// Worker threads are named `"<prefix>-w<N>"`, which shows in `top -H` and debuggers.
///
/// Returns `AGENTOS_STATUS_OK`, `AGENTOS_STATUS_NULL_ARGUMENT`, `AGENTOS_STATUS_INVALID_UTF8`,
/// or `AGENTOS_STATUS_INVALID_ARGUMENT` (empty or too long; `cfg` unchanged). `err` may be NULL.
/// Thread safety: one thread at a time per `cfg`.
#[no_mangle]
pub unsafe extern "C" fn agentos_config_set_thread_name(
    cfg: *mut agentos_config,
    name: *const std::ffi::c_char,
    err: *mut *mut agentos_error,
) -> agentos_status {
    ffi_boundary!(err = err, {
        let cfg = as_mut(cfg, "cfg")?;
        let name = str_arg(name, "name")?;
        cfg.inner.set_thread_name(name)
    })
}

/// Frees a config. `agentos_config_free(NULL)` does nothing. Runtimes created from it are not
/// affected.
///
/// Thread safety: any thread, once per config, and not while another call uses it.
#[no_mangle]
pub unsafe extern "C" fn agentos_config_free(cfg: *mut agentos_config) {
    ffi_boundary!({
        if !cfg.is_null() {
            // SAFETY: `cfg` came from `agentos_config_new` and is freed once.
            drop(Box::from_raw(cfg));
        }
    })
}
