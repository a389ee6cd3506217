//! Context and memory: token counting, context policies and compaction.
//!
//! - [`tokens`]: token estimates, calibrated from what providers report.
//! - [`digest`]: extractive digests that keep identifiers, numbers, amounts, paths and names.
//! - [`policy`]: per-agent policies (budget, tool outputs, masking, window, summaries, tools).
//! - [`compact`]: the view of a history that a model call sends.

pub mod compact;
pub mod digest;
pub mod policy;
pub mod tokens;
