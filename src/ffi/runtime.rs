//! `agentos_runtime`: the scheduler and its worker threads.

use super::config::agentos_config;
use super::error::agentos_error;
use super::status::agentos_status;
use super::{as_ref, non_null, write_out};
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

/// Stops and frees a runtime. `agentos_runtime_free(NULL)` does nothing.
///
/// Shutdown order: the run queue is closed, queued work that has not started is dropped, every
/// worker finishes its current job, and all threads are joined before this returns. Objects
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
