//! AgentOS: an agent-orchestration runtime with a Rust core, shipped as one C-ABI library.
//!
//! Agents are processes, a model call is an I/O syscall, and the context window is memory.
//! This crate is the core plus its C surface:
//!
//! - [`error`]: the status codes and the error type shared by every module.
//! - [`version`]: the crate version as numbers and as a C string.
//! - [`config`]: the runtime configuration, from typed setters or JSON.
//! - [`handle`]: the generation-checked handle registry used for runtime-owned objects.
//! - [`runtime`]: the runtime, its worker threads, its priority run queue and its events.
//! - [`model`]: providers, the curl-multi I/O thread, streaming, retries, limits, preemption.
//! - [`agent`]: agents and their turn loop.
//! - [`tools`]: the tool registry, argument schemas, and tool invocations.
//! - `ffi`: the `extern "C"` surface (the only module with raw pointers); see `include/agentos.h`.
//!
//! The core modules know nothing about the C ABI, so they can be tested as plain Rust.

#![deny(missing_docs)]

pub mod agent;
pub mod config;
pub mod context;
mod deadline;
pub mod error;
pub mod handle;
pub mod mem;
pub mod model;
pub mod msg;
pub mod runtime;
pub mod tools;
pub mod version;

pub mod ffi;

#[cfg(test)]
mod test_alloc;

pub use error::{Error, Result, Status};
