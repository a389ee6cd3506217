//! Tools implemented in C: `agentos_runtime_add_tool` and `agentos_tool_call`.

use super::agent::agentos_agent_id;
use super::error::agentos_error;
use super::runtime::agentos_runtime;
use super::status::agentos_status;
use super::string::c_string;
use super::{as_ref, non_null, str_arg, write_out};
use crate::error::{Error, Status};
use crate::tools::{Tool, ToolHandler, ToolInvocation, ToolOutcome};
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::Arc;
use std::time::Duration;

/// Returned by a tool callback that called `agentos_tool_call_complete` before returning.
pub const AGENTOS_TOOL_DONE: i32 = 0;
/// Returned by a tool callback that keeps the call and completes it later, from any thread.
pub const AGENTOS_TOOL_PENDING: i32 = 1;

/// One call of a C tool, handed to its callback.
///
/// Ownership: the library creates it; `agentos_tool_call_complete` consumes and frees it, so
/// the callback (or whoever it hands the call to) must call that exactly once, now or later.
/// A call completed after its timeout is accepted and freed, but its result is discarded.
/// Thread safety: the readers may be called from any thread until the call is completed.
pub struct agentos_tool_call {
    inv: Arc<ToolInvocation>,
    /// The tool's name (the registered tool's own copy: calls are resolved by name).
    name: Arc<CStr>,
    arguments: CString,
}

/// A C tool. Called on a worker thread (or, in deterministic mode, on the worker running the
/// agent), or on the thread inside `agentos_agent_run` when that call runs the turn itself,
/// with the arguments already checked against the tool's schema. Return
/// `AGENTOS_TOOL_DONE` after completing the call, or `AGENTOS_TOOL_PENDING` to complete it later
/// from any thread, so that a slow tool never holds a worker. The callback may call any
/// non-blocking `agentos_*` function, but not `agentos_runtime_free` or
/// `agentos_runtime_wait_idle`.
pub type agentos_tool_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, call: *mut agentos_tool_call) -> i32>;

struct CTool {
    f: unsafe extern "C" fn(*mut c_void, *mut agentos_tool_call) -> i32,
    user_data: usize,
    /// The name as C reads it, made once.
    name: Arc<CStr>,
}

impl ToolHandler for CTool {
    fn invoke(&self, inv: Arc<ToolInvocation>) {
        debug_assert_eq!(self.name.to_bytes(), inv.tool().as_bytes());
        let handle = Box::new(agentos_tool_call {
            inv: inv.clone(),
            name: self.name.clone(),
            arguments: c_string(inv.arguments(), "\\u0000"),
        });
        // SAFETY: the callback's contract is documented on agentos_tool_fn; the handle is
        // owned by C from here until agentos_tool_call_complete.
        let rc = unsafe { (self.f)(self.user_data as *mut c_void, Box::into_raw(handle)) };
        if rc == AGENTOS_TOOL_DONE && !inv.is_done() {
            inv.complete(ToolOutcome::Err(
                "the tool returned without a result (AGENTOS_TOOL_DONE but never completed)".into(),
            ));
        }
    }
}

/// Registers a tool implemented in C, usable by agents that list its `name` in their `tools`.
///
/// `parameters_json` is the JSON schema of its arguments (an object schema); arguments the
/// model sends that do not match go back to the model as an error result and never reach
/// `callback`. `timeout_ms` bounds each call (0 = the agent's `tool_timeout_ms`): when it
/// passes, the model gets a timeout error. `user_data` is passed to every call; the caller keeps
/// it alive until the runtime is freed. Strings are copied.
///
/// Returns `OK`; `NULL_ARGUMENT` (a NULL string or callback); `INVALID_UTF8`; `INVALID_JSON`
/// (the schema); `INVALID_ARGUMENT` (bad or taken name; `send_message` is built in).
/// `err` may be NULL.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_runtime_add_tool(
    rt: *const agentos_runtime,
    name: *const c_char,
    description: *const c_char,
    parameters_json: *const c_char,
    timeout_ms: u32,
    callback: agentos_tool_fn,
    user_data: *mut c_void,
    err: *mut *mut agentos_error,
) -> agentos_status {
    ffi_boundary!(err = err, {
        let rt = as_ref(rt, "rt")?;
        let name = str_arg(name, "name")?;
        let description = str_arg(description, "description")?;
        let params = str_arg(parameters_json, "parameters_json")?;
        let f = callback
            .ok_or_else(|| Error::new(Status::NullArgument, "argument `callback` is NULL"))?;
        let parameters: serde_json::Value = serde_json::from_str(params).map_err(|e| {
            Error::new(
                Status::InvalidJson,
                format!("tool \"{name}\": parameters_json is not valid JSON: {e}"),
            )
        })?;
        rt.inner.shared().tools().add(Tool {
            name: name.to_string(),
            description: description.to_string(),
            parameters: std::sync::Arc::new(parameters),
            timeout: Duration::from_millis(timeout_ms as u64),
            handler: Arc::new(CTool {
                f,
                user_data: user_data as usize,
                name: c_string(name, "").into(),
            }),
        })
    })
}

/// The tool's name. Borrowed from `call`; valid until the call is completed. NULL for NULL.
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_tool_call_name(call: *const agentos_tool_call) -> *const c_char {
    ffi_boundary!({
        if call.is_null() {
            std::ptr::null()
        } else {
            (*call).name.as_ptr()
        }
    })
}

/// The arguments as JSON text (already validated against the tool's schema), borrowed from
/// `call` and valid until the call is completed; NUL-terminated, `*len` excludes the NUL.
/// Returns `OK` or `NULL_ARGUMENT`.
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_tool_call_arguments(
    call: *const agentos_tool_call,
    json: *mut *const c_char,
    len: *mut usize,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let call = as_ref(call, "call")?;
        non_null(json, "json")?;
        non_null(len, "len")?;
        write_out(json, call.arguments.as_ptr());
        write_out(len, call.arguments.as_bytes().len());
        Ok(())
    })
}

/// The agent that made the call. Returns 0 for NULL.
/// Thread safety: any thread.
#[no_mangle]
pub unsafe extern "C" fn agentos_tool_call_agent(
    call: *const agentos_tool_call,
) -> agentos_agent_id {
    ffi_boundary!({
        match call.as_ref() {
            Some(c) => c.inv.agent,
            None => 0,
        }
    })
}

/// Completes a tool call with its result text (given to the model), or with an error text when
/// `is_error` is true. Consumes and frees `call` in every case except a NULL `call`.
///
/// Returns `OK`; `NULL_ARGUMENT` (NULL `call`, or NULL `result` — the call is then completed
/// with an error so the agent is not left waiting); `INVALID_UTF8` (likewise); `TIMEOUT` when
/// the call had already timed out (or its turn was cancelled): the result is discarded.
/// Thread safety: any thread, once per call.
#[no_mangle]
pub unsafe extern "C" fn agentos_tool_call_complete(
    call: *mut agentos_tool_call,
    result: *const c_char,
    is_error: bool,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        non_null(call, "call")?;
        // SAFETY: `call` came from Box::into_raw in CTool::invoke and is completed once.
        let call = Box::from_raw(call);
        let text = match str_arg(result, "result") {
            Ok(t) => t.to_string(),
            Err(e) => {
                call.inv.complete(ToolOutcome::Err(format!(
                    "the tool gave no valid result: {}",
                    e.message()
                )));
                return Err(e);
            }
        };
        let outcome = if is_error {
            ToolOutcome::Err(text)
        } else {
            ToolOutcome::Ok(text)
        };
        if call.inv.complete(outcome) {
            Ok(())
        } else {
            Err(Error::new(
                Status::Timeout,
                "the tool call had already timed out or been cancelled; the result was discarded",
            ))
        }
    })
}
