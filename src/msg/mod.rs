//! Messages and mailboxes: zero-copy message passing inside a process, and a shared-memory
//! transport between processes.
//!
//! - [`message`]: immutable, reference-counted payloads with per-delivery headers.
//! - [`mailbox`]: bounded mailboxes with blocking or failing sends, receive with a deadline,
//!   request/reply by correlation id, and close.
//! - [`topic`]: publish/subscribe, fanned out without copying.
//! - [`shm`]: the cross-process shared-memory ring (multi-producer, single consumer).
//! - [`channel`]: duplex channels between processes, and bridges to mailboxes.

pub mod channel;
pub mod mailbox;
pub mod message;
pub mod shm;
pub mod topic;
