//! The runtime: worker threads around a priority [`RunQueue`].
//!
//! A [`Runtime`] owns its threads. Dropping it (or calling [`Runtime::shutdown`]) closes the run
//! queue, wakes and joins every worker, and drops the jobs that never ran. Objects that hold an
//! `Arc` of the runtime's [`Shared`] state outlive the threads safely and see
//! [`Status::Shutdown`] afterwards.

pub mod events;
pub mod run_queue;

use crate::agent::{Agent, AgentConfig};
use crate::config::RuntimeConfig;
use crate::error::{Error, Result, Status};
use crate::handle::{Handle, Registry, RegistryError};
use crate::model::hub::ModelHub;
use crate::msg::mailbox::{Mailbox, Wait};
use crate::msg::message::{Message, KIND_REPLY};
use crate::msg::topic::TopicBus;
use crate::tools::ToolRegistry;
use events::EventQueue;
use parking_lot::Mutex;
use run_queue::{Job, RunKey, RunQueue};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What happens to queued work at shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Run every job already queued, then stop.
    Drain,
    /// Drop queued jobs without running them, then stop.
    Cancel,
}

/// State shared between the runtime, its workers and runtime-owned objects.
pub struct Shared {
    config: RuntimeConfig,
    models: ModelHub,
    tools: ToolRegistry,
    events: EventQueue,
    agents: Registry<Agent>,
    agent_names: parking_lot::RwLock<HashMap<String, Handle>>,
    mailboxes: Registry<Mailbox>,
    topics: TopicBus,
    bridges: Mutex<Vec<JoinHandle<Status>>>,
    busy_agents: Mutex<usize>,
    history_bytes: AtomicU64,
    idle_cond: parking_lot::Condvar,
    queue: RunQueue,
    shutdown: AtomicBool,
    jobs_run: AtomicU64,
    workers_started: AtomicU64,
}

/// The last mailbox this thread looked up: (registry uid, registry epoch, handle, mailbox).
type MailboxCache = Option<(u64, u64, u64, Arc<Mailbox>)>;

thread_local! {
    /// A one-entry lookup cache: hot send/receive loops touch no shared lock or count.
    static MAILBOX_CACHE: std::cell::RefCell<MailboxCache> = const { std::cell::RefCell::new(None) };
    /// The address of the [`Shared`] whose worker the current thread is (0 on other threads).
    /// A plain `Cell` so that asking costs no allocation on threads the library does not own.
    static WORKER_OF: Cell<usize> = const { Cell::new(0) };
}

impl Shared {
    /// Whether shutdown has begun.
    pub fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// The configuration the runtime was started with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The aging step of the run queue, model-call admission and pauses at safe points
    /// (`None`: no aging).
    pub fn starvation_limit(&self) -> Option<Duration> {
        self.config.starvation_limit()
    }

    /// Whether the calling thread is one of this runtime's workers.
    pub fn on_worker_thread(&self) -> bool {
        WORKER_OF.with(|w| w.get() == self as *const Shared as usize)
    }

    /// Enqueues a job for the workers.
    pub fn submit(&self, key: RunKey, job: Job) -> Result<()> {
        if self.is_shut_down() {
            return Err(Error::new(Status::Shutdown, "the runtime is shutting down"));
        }
        self.queue
            .push(key, job)
            .map_err(|_| Error::new(Status::Shutdown, "the runtime is shutting down"))
    }

    /// Whether a worker may spend a while on one job without holding anyone up: the runtime
    /// is not deterministic, nothing is queued, and another worker is idle to take whatever
    /// arrives meanwhile.
    pub(crate) fn worker_may_linger(&self) -> bool {
        !self.config.deterministic && self.on_worker_thread() && self.queue.idle_and_empty()
    }

    /// The model layer: endpoints, the I/O thread, usage totals.
    pub fn models(&self) -> &ModelHub {
        &self.models
    }

    /// The registered tools.
    pub fn tools(&self) -> &ToolRegistry {
        &self.tools
    }

    /// The event stream.
    pub fn events(&self) -> &EventQueue {
        &self.events
    }

    /// Creates an agent and returns its handle.
    pub fn create_agent(self: &Arc<Self>, config: AgentConfig) -> Result<Handle> {
        if self.is_shut_down() {
            return Err(Error::new(Status::Shutdown, "the runtime is shutting down"));
        }
        self.models.endpoint(&config.endpoint)?;
        for t in &config.tools {
            if !self.tools.exists(t) {
                return Err(Error::new(
                    Status::NotFound,
                    format!("agent \"{}\": no tool named \"{t}\"", config.name),
                ));
            }
        }
        let mut names = self.agent_names.write();
        if names.contains_key(&config.name) {
            return Err(Error::invalid(format!(
                "an agent named \"{}\" already exists",
                config.name
            )));
        }
        let name = config.name.clone();
        let agent = Arc::new(Agent::new(config, self));
        let h = self.agents.insert(agent.clone()).map_err(|_| {
            Error::new(
                Status::LimitExceeded,
                format!("max_agents ({}) reached", self.config.max_agents),
            )
        })?;
        agent.set_handle(h.raw());
        names.insert(name, h);
        Ok(h)
    }

    /// Resolves an agent handle.
    pub fn agent(&self, h: Handle) -> Result<Arc<Agent>> {
        self.agents.get(h).map_err(|e| match e {
            RegistryError::Stale | RegistryError::Full => Error::new(
                Status::StaleHandle,
                format!(
                    "agent handle {:#x} is stale (freed or never issued)",
                    h.raw()
                ),
            ),
        })
    }

    /// Finds an agent by name.
    pub fn agent_by_name(&self, name: &str) -> Option<Arc<Agent>> {
        let h = *self.agent_names.read().get(name)?;
        self.agents.get(h).ok()
    }

    /// Removes an agent: cancels its turn; its handle becomes stale.
    pub fn remove_agent(&self, h: Handle) -> Result<()> {
        let agent = self.agent(h)?;
        let mut names = self.agent_names.write();
        self.agents
            .remove(h)
            .map_err(|_| Error::new(Status::StaleHandle, "agent handle is stale"))?;
        names.remove(agent.name());
        drop(names);
        if let Some(mb) = agent.mailbox() {
            let _ = self.remove_mailbox(Handle::from_raw(mb));
        }
        agent.retire();
        self.add_history_bytes(-(agent.stats().history_bytes as i64));
        Ok(())
    }

    /// Creates a mailbox holding at most `capacity` messages.
    pub fn create_mailbox(&self, capacity: usize) -> Result<Handle> {
        if self.is_shut_down() {
            return Err(Error::new(Status::Shutdown, "the runtime is shutting down"));
        }
        self.insert_mailbox(Arc::new(Mailbox::new(0, capacity)))
    }

    fn insert_mailbox(&self, mb: Arc<Mailbox>) -> Result<Handle> {
        let h = self
            .mailboxes
            .insert(mb.clone())
            .map_err(|_| Error::new(Status::LimitExceeded, "too many mailboxes"))?;
        mb.set_id(h.raw());
        Ok(h)
    }

    /// Resolves a mailbox handle.
    pub fn mailbox(&self, h: Handle) -> Result<Arc<Mailbox>> {
        self.mailboxes.get(h).map_err(|_| {
            Error::new(
                Status::StaleHandle,
                format!(
                    "mailbox handle {:#x} is stale (freed or never issued)",
                    h.raw()
                ),
            )
        })
    }

    /// Runs `f` on a mailbox. Repeated lookups of the same mailbox from one thread are served
    /// from a thread-local cache, valid while no mailbox of this runtime has been removed since
    /// (so a freed mailbox is never reached through it).
    pub fn with_mailbox<R>(&self, h: Handle, f: impl FnOnce(&Mailbox) -> Result<R>) -> Result<R> {
        let uid = self.mailboxes.uid();
        let epoch = self.mailboxes.epoch();
        let mut f = Some(f);
        // Hit: run `f` on the cached mailbox without touching its reference count. (A nested
        // call from inside `f`, e.g. a mailbox sink sending on, finds the cache borrowed and
        // takes the slow path below.)
        let hit = MAILBOX_CACHE.with(|c| {
            let Ok(c) = c.try_borrow() else { return None };
            match &*c {
                Some((u, e, hh, mb)) if *u == uid && *e == epoch && *hh == h.raw() => {
                    Some((f.take().expect("f"))(mb))
                }
                _ => None,
            }
        });
        if let Some(r) = hit {
            return r;
        }
        let mb = self.mailbox(h)?;
        MAILBOX_CACHE.with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                *c = Some((uid, epoch, h.raw(), mb.clone()));
            }
        });
        (f.take().expect("f"))(&mb)
    }

    /// Closes and removes a mailbox: its waiters wake with `CLOSED`, its handle goes stale.
    pub fn remove_mailbox(&self, h: Handle) -> Result<()> {
        let mb = self.mailboxes.remove(h).map_err(|_| {
            Error::new(
                Status::StaleHandle,
                format!("mailbox handle {:#x} is stale", h.raw()),
            )
        })?;
        mb.close();
        Ok(())
    }

    /// Sends `msg` from mailbox `from` (0 = the host) to mailbox `to`. The payload is shared.
    pub fn send_message(&self, from: u64, to: Handle, msg: &Message, wait: Wait) -> Result<()> {
        let h = msg.new_header(from, to.raw(), msg.header().kind, msg.header().correlation);
        self.with_mailbox(to, |target| target.put(msg.deliver_as(h), wait))
    }

    /// Sends a request from mailbox `from` to `to` and waits for the reply.
    pub fn request(&self, from: Handle, to: Handle, msg: &Message, wait: Wait) -> Result<Message> {
        let me = self.mailbox(from)?;
        let target = self.mailbox(to)?;
        let corr = me.expect_reply()?;
        let h = msg.new_header(from.raw(), to.raw(), msg.header().kind, corr);
        if let Err(e) = target.put(msg.deliver_as(h), wait) {
            me.cancel_reply(corr);
            return Err(e);
        }
        me.await_reply(corr, wait)
    }

    /// Answers `request` (received by mailbox `from`) with `reply`, to the request's sender.
    pub fn reply(&self, from: u64, request: &Message, reply: &Message, wait: Wait) -> Result<()> {
        let rh = request.header();
        if rh.sender == 0 {
            return Err(Error::invalid(
                "the request came from the host, which has no mailbox to reply to",
            ));
        }
        let target = self.mailbox(Handle::from_raw(rh.sender))?;
        let h = reply.new_header(from, rh.sender, KIND_REPLY, rh.correlation);
        target.put(reply.deliver_as(h), wait)
    }

    /// Connects a channel to mailbox `inbox`; returns the outbox mailbox whose messages go
    /// over the channel. The bridge thread ends when the channel or `inbox` closes.
    pub fn bridge_channel(
        &self,
        ch: Arc<crate::msg::channel::Channel>,
        inbox: Arc<Mailbox>,
    ) -> Result<Handle> {
        if self.is_shut_down() {
            return Err(Error::new(Status::Shutdown, "the runtime is shutting down"));
        }
        let (outbox, thread) = crate::msg::channel::bridge(ch, inbox, 0)?;
        let h = self.insert_mailbox(outbox)?;
        self.bridges.lock().push(thread);
        Ok(h)
    }

    /// The topic bus.
    pub fn topics(&self) -> &TopicBus {
        &self.topics
    }

    /// The mailbox through which messages reach an agent (created on first use): a message put
    /// there starts a turn, and the agent's answer goes to the sender's mailbox.
    pub fn agent_mailbox(self: &Arc<Self>, agent: &Arc<Agent>) -> Result<Handle> {
        if let Some(h) = agent.mailbox() {
            return Ok(Handle::from_raw(h));
        }
        let weak = Arc::downgrade(agent);
        let mb = Arc::new(Mailbox::with_sink(
            0,
            Box::new(move |m: Message| {
                let agent = weak
                    .upgrade()
                    .ok_or_else(|| Error::new(Status::StaleHandle, "the agent was freed"))?;
                agent.deliver_mail(&m)
            }),
        ));
        let h = self.insert_mailbox(mb)?;
        if let Some(existing) = agent.set_mailbox(h.raw()) {
            // Another thread won the race; keep its mailbox.
            let _ = self.mailboxes.remove(h);
            return Ok(Handle::from_raw(existing));
        }
        Ok(h)
    }

    /// Runtime-wide counters as JSON (see `agentos_runtime_stats_json`).
    pub fn stats_json(&self) -> serde_json::Value {
        let agents = self.agents.snapshot();
        let stats: Vec<_> = agents.iter().map(|(_, a)| a.stats()).collect();
        let history_bytes: usize = stats.iter().map(|s| s.history_bytes).sum();
        let arena_high_water: usize = stats.iter().map(|s| s.arena_high_water).sum();
        serde_json::json!({
            "agents": agents.len(),
            "busy_agents": *self.busy_agents.lock(),
            "history_bytes": history_bytes,
            "max_history_bytes": self.config.max_history_bytes,
            "arena_high_water_total": arena_high_water,
            "mailboxes": self.mailboxes.len(),
            "events_queued": self.events.len(),
            "jobs_run": self.jobs_run(),
            "models": self.models.usage_json(),
        })
    }

    /// Agents alive.
    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    /// Bytes of history all agents hold.
    pub fn history_bytes(&self) -> u64 {
        self.history_bytes.load(Ordering::Relaxed)
    }

    /// Applies a change in an agent's history size; returns the new total.
    pub(crate) fn add_history_bytes(&self, delta: i64) -> u64 {
        if delta >= 0 {
            self.history_bytes
                .fetch_add(delta as u64, Ordering::Relaxed)
                + delta as u64
        } else {
            let d = delta.unsigned_abs();
            self.history_bytes
                .fetch_sub(d, Ordering::Relaxed)
                .saturating_sub(d)
        }
    }

    /// Called by agents when they start or stop having work.
    pub(crate) fn agent_busy_changed(&self, busy: bool) {
        let mut n = self.busy_agents.lock();
        if busy {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.idle_cond.notify_all();
            }
        }
    }

    /// Waits until no agent has work, or `deadline` passes. Returns whether all are idle.
    pub fn wait_idle(&self, deadline: Option<Instant>) -> bool {
        let mut n = self.busy_agents.lock();
        while *n > 0 {
            if crate::deadline::wait(&self.idle_cond, &mut n, deadline) {
                return *n == 0;
            }
        }
        true
    }

    /// Jobs completed by the workers so far.
    pub fn jobs_run(&self) -> u64 {
        self.jobs_run.load(Ordering::Relaxed)
    }
}

/// A running AgentOS runtime.
pub struct Runtime {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Runtime {
    /// Starts the runtime's worker threads.
    pub fn start(config: RuntimeConfig) -> Result<Runtime> {
        let n = config.effective_workers();
        let starvation = config.starvation_limit();
        let shared = Arc::new(Shared {
            models: ModelHub::with_starvation_limit(&config.thread_name, starvation),
            tools: ToolRegistry::default(),
            events: EventQueue::new(config.event_capacity as usize),
            agents: Registry::with_capacity_limit(config.max_agents as usize),
            agent_names: parking_lot::RwLock::new(HashMap::new()),
            mailboxes: Registry::with_capacity_limit(u32::MAX as usize),
            topics: TopicBus::default(),
            bridges: Mutex::new(Vec::new()),
            busy_agents: Mutex::new(0),
            history_bytes: AtomicU64::new(0),
            idle_cond: parking_lot::Condvar::new(),
            config,
            queue: RunQueue::new(starvation),
            shutdown: AtomicBool::new(false),
            jobs_run: AtomicU64::new(0),
            workers_started: AtomicU64::new(0),
        });
        let rt = Runtime {
            shared: shared.clone(),
            workers: Mutex::new(Vec::with_capacity(n as usize)),
        };
        for i in 0..n {
            let s = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{}-w{}", shared.config.thread_name, i))
                .spawn(move || worker_loop(&s));
            match spawned {
                Ok(h) => {
                    shared.workers_started.fetch_add(1, Ordering::Relaxed);
                    rt.workers.lock().push(h);
                }
                Err(e) => {
                    // `rt` is dropped here, which stops and joins the workers already started.
                    return Err(Error::new(
                        Status::Io,
                        format!("could not start worker thread {i} of {n}: {e}"),
                    ));
                }
            }
        }
        Ok(rt)
    }

    /// The shared state, for objects that must outlive the threads.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The number of worker threads started.
    pub fn worker_count(&self) -> u32 {
        self.shared.workers_started.load(Ordering::Relaxed) as u32
    }

    /// Enqueues a job; see [`Shared::submit`].
    pub fn submit(&self, key: RunKey, job: Job) -> Result<()> {
        self.shared.submit(key, job)
    }

    /// Stops the workers and joins them. Idempotent.
    ///
    /// When called from one of the runtime's own workers the threads are detached instead of
    /// joined, since a thread cannot join itself; they exit as soon as their current job returns.
    pub fn shutdown(&self, mode: ShutdownMode) {
        self.shared.shutdown.store(true, Ordering::Release);
        // Model calls still in flight complete with SHUTDOWN; their partial output is kept.
        self.shared.models.shutdown();
        self.shared.events.close();
        for mb in self.shared.mailboxes.drain() {
            mb.close();
        }
        // Bridges notice their closed inbox within one poll interval.
        let bridges = std::mem::take(&mut *self.shared.bridges.lock());
        if !self.shared.on_worker_thread() {
            for b in bridges {
                let _ = b.join();
            }
        }
        self.shared.queue.close(mode == ShutdownMode::Cancel);
        let handles = std::mem::take(&mut *self.workers.lock());
        if self.shared.on_worker_thread() {
            return; // detach: dropping the JoinHandles
        }
        for h in handles {
            // A worker that panicked outside a job has already stopped; nothing more to do.
            let _ = h.join();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown(ShutdownMode::Cancel);
    }
}

fn worker_loop(shared: &Shared) {
    WORKER_OF.with(|w| w.set(shared as *const Shared as usize));
    while let Some(job) = shared.queue.pop(None) {
        // A panicking job must not take the worker down with it.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        shared.jobs_run.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    fn cfg(workers: u32) -> RuntimeConfig {
        let mut c = RuntimeConfig::default();
        c.set_workers(workers).unwrap();
        c
    }

    #[test]
    fn starts_requested_workers_and_runs_jobs() {
        let rt = Runtime::start(cfg(3)).unwrap();
        assert_eq!(rt.worker_count(), 3);
        let count = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let c = count.clone();
            rt.submit(
                RunKey {
                    priority: 0,
                    service: 0,
                },
                Box::new(move || {
                    c.fetch_add(1, Ordering::SeqCst);
                }),
            )
            .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while count.load(Ordering::SeqCst) < 100 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(count.load(Ordering::SeqCst), 100);
    }

    #[test]
    fn drain_runs_everything_queued() {
        let rt = Runtime::start(cfg(1)).unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(std::sync::Barrier::new(2));
        let g = gate.clone();
        rt.submit(
            RunKey {
                priority: 0,
                service: 0,
            },
            Box::new(move || {
                g.wait();
            }),
        )
        .unwrap();
        for _ in 0..10 {
            let c = count.clone();
            rt.submit(
                RunKey {
                    priority: 0,
                    service: 0,
                },
                Box::new(move || {
                    c.fetch_add(1, Ordering::SeqCst);
                }),
            )
            .unwrap();
        }
        gate.wait();
        rt.shutdown(ShutdownMode::Drain);
        assert_eq!(count.load(Ordering::SeqCst), 10);
        let e = rt
            .submit(
                RunKey {
                    priority: 0,
                    service: 0,
                },
                Box::new(|| {}),
            )
            .unwrap_err();
        assert_eq!(e.status(), Status::Shutdown);
    }

    #[test]
    fn panicking_job_does_not_kill_worker() {
        let rt = Runtime::start(cfg(1)).unwrap();
        rt.submit(
            RunKey {
                priority: 0,
                service: 0,
            },
            Box::new(|| panic!("job panics")),
        )
        .unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        rt.submit(
            RunKey {
                priority: 0,
                service: 0,
            },
            Box::new(move || {
                tx.send(()).unwrap();
            }),
        )
        .unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn shutdown_from_a_worker_does_not_deadlock() {
        let rt = Arc::new(Runtime::start(cfg(2)).unwrap());
        let (tx, rx) = crossbeam_channel::bounded(1);
        let r2 = rt.clone();
        rt.submit(
            RunKey {
                priority: 0,
                service: 0,
            },
            Box::new(move || {
                r2.shutdown(ShutdownMode::Cancel);
                tx.send(()).unwrap();
            }),
        )
        .unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(rt.shared().is_shut_down());
    }
}
