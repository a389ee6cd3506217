//! Agents: `agentos_agent_id` handles into a runtime.

use super::error::agentos_error;
use super::request::agentos_usage;
use super::runtime::agentos_runtime;
use super::status::agentos_status;
use super::string::into_c_string;
use super::{as_ref, non_null, str_arg, write_out};
use crate::agent::{AgentConfig, Sender};
use crate::error::{Error, Status};
use crate::handle::Handle;
use std::ffi::c_char;
use std::time::{Duration, Instant};

/// A generation-checked agent handle. 0 is never a valid agent. A handle of a freed agent (or of
/// a freed runtime's agent) gives `AGENTOS_STATUS_STALE_HANDLE`, never undefined behaviour.
pub type agentos_agent_id = u64;

/// Agent state: no work.
pub const AGENTOS_AGENT_IDLE: i32 = 0;
/// Agent state: has work, waiting for a worker.
pub const AGENTOS_AGENT_RUNNABLE: i32 = 1;
/// Agent state: waiting for the model.
pub const AGENTOS_AGENT_WAITING_MODEL: i32 = 2;
/// Agent state: waiting for its tools.
pub const AGENTOS_AGENT_RUNNING_TOOLS: i32 = 3;
/// Agent state: preempted by a more urgent agent: paused at a safe point until that agent's
/// turn ends, or its stream cancelled and waiting to continue from its snapshot.
pub const AGENTOS_AGENT_PAUSED: i32 = 4;
/// Agent state: stopped for good (a budget ran out); takes no more messages.
pub const AGENTOS_AGENT_FINISHED: i32 = 5;
/// Agent state: its last turn failed; a new message starts a new turn.
pub const AGENTOS_AGENT_FAILED: i32 = 6;

fn deadline(timeout_ms: i32) -> Option<Instant> {
    (timeout_ms >= 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64))
}

/// The checks a message from the host goes through: the runtime, the text, a live runtime,
/// the agent's handle.
///
/// # Safety
/// `rt` and `text` as documented on the calling functions.
unsafe fn host_message<'a>(
    rt: *const agentos_runtime,
    agent: agentos_agent_id,
    text: *const c_char,
) -> crate::error::Result<(std::sync::Arc<crate::agent::Agent>, &'a str)> {
    let rt = as_ref(rt, "rt")?;
    let text = str_arg(text, "text")?;
    let shared = rt.inner.shared();
    if shared.is_shut_down() {
        return Err(Error::new(Status::Shutdown, "the runtime is shutting down"));
    }
    Ok((shared.agent(Handle::from_raw(agent))?, text))
}

/// Creates an agent from a JSON config:
/// `{"name":"planner","endpoint":"local","system":"You plan.","tools":["get_weather",
/// "send_message"],"priority":5,"max_steps":8,"temperature":0,"max_tokens":256,"stream":true,
/// "preemptible":true,"stream_events":false,"context_limit":4096,"inbox_capacity":1024,
/// "tool_timeout_ms":30000,"budget":{"tokens":100000,"cost_usd":1.0,"tool_calls":20},
/// "model":"override","tool_first":false,"max_history_bytes":0,"keep_history":true,
/// "context":{...policies...}}`.
/// Only `name` and `endpoint` are required. `send_message` is the built-in tool for messaging
/// another agent by name; `recall` is offered when compaction hides a tool result.
/// `tool_first` requires a tool call in each turn's first model call (helps small models).
/// `priority` (larger is more urgent) orders the run queue and model admission. An agent whose
/// call cannot be admitted, or whose conversation fills 90% of the room its context leaves for
/// messages, claims room on its endpoint until its turn ends: `preemptible` agents of lower
/// priority on that endpoint pause at their safe points (state `PAUSED`, event `PREEMPTED`
/// with `safe_point: true`): before their next model call, or with that call queued and not
/// started, kept from the endpoint's free slots the urgent agents may need; they go on when
/// the room is given back (`RESUMED`), or once paused long enough: a paused agent gains a
/// priority level per `starvation_ms` (runtime config) paused, and goes on when no claim is
/// above that (`RESUMED` with `"aged": true`). Tools that run longer than a model call on the
/// endpoint lately takes (at least 20 ms, at most 5 s) give the room back early (not in
/// deterministic mode); a later call of the turn that cannot be admitted claims it again. A less urgent stream holding the slot an urgent call
/// waits for is cancelled and continued later from its snapshot.
/// `keep_history:false` makes the agent stateless: each turn starts from the system prompt
/// alone, the earlier turns' messages dropped as it starts (its usage and budgets still add
/// up over its life), except the turn brought by another agent's answer to a message this
/// agent sent, which continues the conversation that asked; `max_history_bytes` is checked
/// against what the message's turn will hold.
///
/// On success `*out` receives the agent's handle (free it with `agentos_agent_free`, or let
/// `agentos_runtime_free` free every agent).
/// Returns `OK`; `NULL_ARGUMENT`; `INVALID_UTF8`; `INVALID_JSON` (key named); `INVALID_ARGUMENT`
/// (bad value, or the name is taken); `NOT_FOUND` (unknown endpoint or tool);
/// `LIMIT_EXCEEDED` (max_agents); `SHUTDOWN`. `err` may be NULL.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_agent_new(
    rt: *const agentos_runtime,
    config_json: *const c_char,
    out: *mut agentos_agent_id,
    err: *mut *mut agentos_error,
) -> agentos_status {
    ffi_boundary!(err = err, {
        let rt = as_ref(rt, "rt")?;
        let json = str_arg(config_json, "config_json")?;
        non_null(out, "out")?;
        let config = AgentConfig::from_json(json)?;
        let h = rt.inner.shared().create_agent(config)?;
        write_out(out, h.raw());
        Ok(())
    })
}

/// Finds an agent by name. Returns `OK`, `NULL_ARGUMENT`, `INVALID_UTF8` or `NOT_FOUND`.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_agent_find(
    rt: *const agentos_runtime,
    name: *const c_char,
    out: *mut agentos_agent_id,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        let name = str_arg(name, "name")?;
        non_null(out, "out")?;
        let agent =
            rt.inner.shared().agent_by_name(name).ok_or_else(|| {
                Error::new(Status::NotFound, format!("no agent named \"{name}\""))
            })?;
        write_out(out, agent.handle());
        Ok(())
    })
}

/// Sends the agent a message from the host. The agent starts a turn for it when free (messages
/// queue in its inbox, in order); the outcome arrives as an `AGENTOS_EVENT_TURN_END` event whose
/// text is the answer. `text` is copied.
///
/// Returns `OK`; `NULL_ARGUMENT`; `INVALID_UTF8`; `STALE_HANDLE`; `BUSY` (inbox full: nothing
/// was queued); `LIMIT_EXCEEDED` (the agent finished: a budget ran out); `SHUTDOWN`.
/// `err` may be NULL.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_agent_send(
    rt: *const agentos_runtime,
    agent: agentos_agent_id,
    text: *const c_char,
    err: *mut *mut agentos_error,
) -> agentos_status {
    ffi_boundary!(err = err, {
        let (agent, text) = host_message(rt, agent, text)?;
        agent.deliver(Sender::Host, text)
    })
}

/// Sends the agent a message from the host and waits for the answer: the synchronous form of
/// `agentos_agent_send` plus waiting for the message's `AGENTOS_EVENT_TURN_END`. The message
/// queues behind any already in the agent's inbox; this returns when its own turn ends, or
/// when `timeout_ms` passes (negative = no limit). `text` is copied.
///
/// Where the turn runs: unless the runtime is deterministic, the calling thread steps the agent
/// itself instead of handing it to a worker, and runs a lone tool call, or a lone model call,
/// itself (with a time limit, only a call to an endpoint that has lately answered within
/// 2 ms; such a call waits for a quick answer as `agentos_request_run` does). A short turn
/// then needs no hand-off between threads. Everything else goes the usual
/// way: parallel tool calls run on workers, calls that wait for admission or are preemptible go
/// to the I/O thread, and workers step the agent when they complete. So tool callbacks may run
/// on this thread, and a time limit can be overrun by the work this thread runs itself (one
/// quick model attempt, bounded by the endpoint's timeouts, or one tool callback). The turn's
/// events are emitted as usual (read them or not: the event queue is bounded).
///
/// On `OK`, `*out_answer` (unless NULL) receives the final answer, to free with
/// `agentos_string_free`. Otherwise `*out_answer` is set to NULL and the status is the turn's:
/// `LIMIT_EXCEEDED` (max_steps or a budget), `CANCELLED` (`agentos_agent_cancel`, or the agent
/// freed during the turn), the model call's failure (`HTTP`, `PROVIDER`, `TIMEOUT`, ...), each
/// with its message in `err`; or `TIMEOUT` with "the turn is still running" when the wait
/// expired first (the turn goes on; its outcome arrives as a `TURN_END` event); `STALE_HANDLE`
/// (also when the agent is freed before the message's turn starts); `NULL_ARGUMENT`;
/// `INVALID_UTF8`; `BUSY` (inbox full: nothing was queued); `LIMIT_EXCEEDED` (nothing was
/// queued: the agent has finished, or the message would take its history past
/// `max_history_bytes`; or, for a message queued before the agent finished, the agent will
/// not answer it); `INVALID_ARGUMENT` (called from a tool callback of the same agent, whose
/// turn waits for that callback); `SHUTDOWN`. `err` may be NULL.
///
/// The calling thread runs work only for this message's turn, and only until `timeout_ms`
/// passes: when the turn has ended (or time is up), the work of later turns goes to the
/// workers and the call returns.
///
/// Thread safety: any thread, concurrently (also for the same agent: turns run one at a time,
/// in order). Not from a tool callback on a runtime with one worker: the callback holds the
/// only worker, and the turn may need it. A tool callback of another agent may call it.
#[no_mangle]
pub unsafe extern "C" fn agentos_agent_run(
    rt: *const agentos_runtime,
    agent: agentos_agent_id,
    text: *const c_char,
    timeout_ms: i32,
    out_answer: *mut *mut c_char,
    err: *mut *mut agentos_error,
) -> agentos_status {
    if !out_answer.is_null() {
        // SAFETY: the caller passes a valid `char **` or NULL.
        *out_answer = std::ptr::null_mut();
    }
    ffi_boundary!(err = err, {
        let (agent, text) = host_message(rt, agent, text)?;
        let answer = agent.run_turn(text, deadline(timeout_ms))?;
        if !out_answer.is_null() {
            write_out(out_answer, into_c_string(answer));
        }
        Ok(())
    })
}

/// Sends agent `to` a message on behalf of agent `from`, exactly as if `from` had called the
/// built-in `send_message` tool: `to` answers in a turn of its own, and its answer arrives in
/// `from`'s inbox as a new message (starting a turn there, whose answer is not sent back).
/// Lets a host route work between agents. Emits an `AGENTOS_EVENT_MESSAGE` event.
///
/// Returns `OK`; `NULL_ARGUMENT`; `INVALID_UTF8`; `STALE_HANDLE` (either agent);
/// `INVALID_ARGUMENT` (`from` == `to`); `BUSY`; `LIMIT_EXCEEDED`; `SHUTDOWN`. `err` may be NULL.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_agent_send_as(
    rt: *const agentos_runtime,
    from: agentos_agent_id,
    to: agentos_agent_id,
    text: *const c_char,
    err: *mut *mut agentos_error,
) -> agentos_status {
    ffi_boundary!(err = err, {
        let rt = as_ref(rt, "rt")?;
        let text = str_arg(text, "text")?;
        let shared = rt.inner.shared();
        if shared.is_shut_down() {
            return Err(Error::new(Status::Shutdown, "the runtime is shutting down"));
        }
        let sender = shared.agent(Handle::from_raw(from))?;
        let target = shared.agent(Handle::from_raw(to))?;
        if from == to {
            return Err(Error::invalid("an agent cannot message itself"));
        }
        target.deliver_from(&sender, text)
    })
}

/// Reads the agent's state (`AGENTOS_AGENT_*`).
/// Returns `OK`, `NULL_ARGUMENT` or `STALE_HANDLE`.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_agent_state(
    rt: *const agentos_runtime,
    agent: agentos_agent_id,
    out: *mut i32,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        non_null(out, "out")?;
        let a = rt.inner.shared().agent(Handle::from_raw(agent))?;
        write_out(out, a.state() as i32);
        Ok(())
    })
}

/// Reads the agent's model usage and cost over its life. `attempts` is the number of turns and
/// `retries` the number of tool calls. Set `out->struct_size` first (see `agentos_usage`).
/// Returns `OK`, `NULL_ARGUMENT`, `STALE_HANDLE` or `INVALID_ARGUMENT` (struct_size too small).
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_agent_usage(
    rt: *const agentos_runtime,
    agent: agentos_agent_id,
    out: *mut agentos_usage,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        non_null(out, "out")?;
        let st = rt.inner.shared().agent(Handle::from_raw(agent))?.stats();
        super::request::fill_usage(
            out,
            &st.usage,
            st.turns.min(u32::MAX as u64) as u32,
            st.tool_calls.min(u32::MAX as u64) as u32,
        )
    })
}

/// The agent's conversation as a JSON array of OpenAI-style messages (system prompt, user
/// messages, assistant answers and tool calls, tool results), in order.
///
/// On success `*out` receives a string to free with `agentos_string_free`.
/// Returns `OK`, `NULL_ARGUMENT` or `STALE_HANDLE`.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_agent_history_json(
    rt: *const agentos_runtime,
    agent: agentos_agent_id,
    out: *mut *mut c_char,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        non_null(out, "out")?;
        let a = rt.inner.shared().agent(Handle::from_raw(agent))?;
        write_out(out, into_c_string(a.history_json().to_string()));
        Ok(())
    })
}

/// Cancels the agent's current turn: its model call is aborted and pending tools are
/// completed as cancelled; the turn ends with `AGENTOS_STATUS_CANCELLED` (history keeps the
/// message; nothing half-written is added). Queued messages are kept. Does nothing when idle.
/// Returns `OK`, `NULL_ARGUMENT` or `STALE_HANDLE`.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_agent_cancel(
    rt: *const agentos_runtime,
    agent: agentos_agent_id,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        rt.inner.shared().agent(Handle::from_raw(agent))?.cancel();
        Ok(())
    })
}

/// Frees an agent: cancels its turn and makes its handle stale. Messages still queued for it
/// are dropped with it. Freeing again returns `STALE_HANDLE`.
/// Returns `OK`, `NULL_ARGUMENT` or `STALE_HANDLE`.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_agent_free(
    rt: *const agentos_runtime,
    agent: agentos_agent_id,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        rt.inner.shared().remove_agent(Handle::from_raw(agent))
    })
}

/// Waits until no agent has work (every inbox empty, no turn running), or `timeout_ms` passes
/// (negative = no limit). Returns `OK`, `TIMEOUT` or `NULL_ARGUMENT`.
/// Thread safety: any thread; never from a callback the runtime runs (it would wait for itself).
#[no_mangle]
pub unsafe extern "C" fn agentos_runtime_wait_idle(
    rt: *const agentos_runtime,
    timeout_ms: i32,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        if rt.inner.shared().wait_idle(deadline(timeout_ms)) {
            Ok(())
        } else {
            Err(Error::new(Status::Timeout, "agents still have work"))
        }
    })
}

/// Changes the agent's context policies: a JSON object applied on top of the current ones,
/// e.g. `{"masking":{"keep_recent":1},"window":{"enabled":false}}` (see the policy keys in the
/// README: budget, tool_outputs, masking, window, summaries, tool_selection,
/// retry_on_overflow; `{"all":false}` turns everything off). Takes effect at the next request.
/// Returns `OK`; `NULL_ARGUMENT`; `INVALID_UTF8`; `INVALID_JSON` (the message names the key,
/// nothing changes); `STALE_HANDLE`. `err` may be NULL.
/// Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_agent_set_context_policy(
    rt: *const agentos_runtime,
    agent: agentos_agent_id,
    policy_json: *const c_char,
    err: *mut *mut agentos_error,
) -> agentos_status {
    ffi_boundary!(err = err, {
        let rt = as_ref(rt, "rt")?;
        let json = str_arg(policy_json, "policy_json")?;
        rt.inner
            .shared()
            .agent(Handle::from_raw(agent))?
            .set_policy_json(json)
    })
}

/// The context the agent's next request would send, as JSON: `{"messages":[...],
/// "tokens":N,"tokens_estimated":N,"tokens_full":N,"limit_tokens":N,"tools_tokens":N,
/// "calibration":x,"stats":{"masked","truncated","deduped","minified","dropped","summarized"}}`.
/// `tokens` is the estimate corrected by what the provider has reported so far.
/// On success `*out` receives a string to free with `agentos_string_free`.
/// Returns `OK`, `NULL_ARGUMENT` or `STALE_HANDLE`. Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_agent_context_json(
    rt: *const agentos_runtime,
    agent: agentos_agent_id,
    out: *mut *mut c_char,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        non_null(out, "out")?;
        let a = rt.inner.shared().agent(Handle::from_raw(agent))?;
        write_out(out, into_c_string(a.context_json().to_string()));
        Ok(())
    })
}

/// Forces a compaction: the agent's next request drops old turns to a summary and masks every
/// old tool result (the stored history is untouched; masked results stay recallable).
/// Returns `OK`, `NULL_ARGUMENT` or `STALE_HANDLE`. Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_agent_compact(
    rt: *const agentos_runtime,
    agent: agentos_agent_id,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        rt.inner.shared().agent(Handle::from_raw(agent))?.compact();
        Ok(())
    })
}

/// The agent's counters as JSON: `{"state","turns","tool_calls","usage":{...},"history_len",
/// "history_bytes","tokens_full_total","tokens_sent_total","calibration","last_request":{...}}`
/// (`tokens_full_total` / `tokens_sent_total` are the estimated prompt tokens without and with
/// compaction, summed over every request).
/// On success `*out` receives a string to free with `agentos_string_free`.
/// Returns `OK`, `NULL_ARGUMENT` or `STALE_HANDLE`. Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_agent_stats_json(
    rt: *const agentos_runtime,
    agent: agentos_agent_id,
    out: *mut *mut c_char,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        non_null(out, "out")?;
        let a = rt.inner.shared().agent(Handle::from_raw(agent))?;
        write_out(out, into_c_string(a.stats_json().to_string()));
        Ok(())
    })
}

/// Runtime-wide counters as JSON: `{"agents","busy_agents","history_bytes","mailboxes",
/// "events_queued","jobs_run","models":{...as agentos_runtime_usage_json...}}`.
/// On success `*out` receives a string to free with `agentos_string_free`.
/// Returns `OK` or `NULL_ARGUMENT`. Thread safety: any thread, concurrently.
#[no_mangle]
pub unsafe extern "C" fn agentos_runtime_stats_json(
    rt: *const agentos_runtime,
    out: *mut *mut c_char,
) -> agentos_status {
    ffi_boundary!(err = std::ptr::null_mut(), {
        let rt = as_ref(rt, "rt")?;
        non_null(out, "out")?;
        write_out(
            out,
            into_c_string(rt.inner.shared().stats_json().to_string()),
        );
        Ok(())
    })
}
