//! Memory: caches with byte bounds.
//!
//! - [`cache`]: the LRU response cache for deterministic model requests.

pub mod cache;
