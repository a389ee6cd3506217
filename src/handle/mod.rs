//! A generation-checked handle registry.
//!
//! Objects that a runtime owns (agents, mailboxes, requests) are named across the C ABI by a
//! 64-bit [`Handle`]: a slot index in the low 32 bits and the slot's generation in the high 32
//! bits. Removing an object bumps the slot's generation, so an old handle to a reused slot is
//! recognised as stale instead of reaching the new occupant. Handle `0` is never issued, so C
//! callers can use it as "no handle".
//!
//! Lookups take a shared lock and clone an `Arc`, so a caller holding the result keeps the object
//! alive even if another thread removes it concurrently; nothing ever touches freed memory.

use parking_lot::RwLock;
use std::sync::Arc;

/// An opaque, generation-checked reference to an object in a [`Registry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(u64);

impl Handle {
    /// The value that never names an object.
    pub const NONE: Handle = Handle(0);

    /// Rebuilds a handle from its raw value (as received from C).
    pub const fn from_raw(raw: u64) -> Handle {
        Handle(raw)
    }

    /// The raw value passed across the C ABI.
    pub const fn raw(self) -> u64 {
        self.0
    }

    fn new(index: u32, generation: u32) -> Handle {
        Handle(((generation as u64) << 32) | index as u64)
    }

    fn index(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

struct Slot<T> {
    generation: u32,
    value: Option<Arc<T>>,
}

struct Slots<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    live: usize,
}

/// A thread-safe table of `Arc<T>` addressed by [`Handle`].
pub struct Registry<T> {
    inner: RwLock<Slots<T>>,
    capacity: usize,
    uid: u64,
    epoch: std::sync::atomic::AtomicU64,
}

static NEXT_REGISTRY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Why a handle could not be resolved or inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryError {
    /// The handle was never issued, or its object has been removed.
    Stale,
    /// The registry already holds its maximum number of objects.
    Full,
}

impl<T> Registry<T> {
    /// Creates a registry that holds at most `capacity` live objects (at most `u32::MAX`).
    pub fn with_capacity_limit(capacity: usize) -> Registry<T> {
        Registry {
            inner: RwLock::new(Slots {
                slots: Vec::new(),
                free: Vec::new(),
                live: 0,
            }),
            capacity: capacity.min(u32::MAX as usize),
            uid: NEXT_REGISTRY.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            epoch: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Stores `value` and returns its new handle.
    pub fn insert(&self, value: Arc<T>) -> Result<Handle, RegistryError> {
        let mut s = self.inner.write();
        if s.live >= self.capacity {
            return Err(RegistryError::Full);
        }
        s.live += 1;
        if let Some(index) = s.free.pop() {
            let slot = &mut s.slots[index as usize];
            slot.value = Some(value);
            return Ok(Handle::new(index, slot.generation));
        }
        let index = s.slots.len() as u32;
        s.slots.push(Slot {
            generation: 1,
            value: Some(value),
        });
        Ok(Handle::new(index, 1))
    }

    /// Resolves a handle to its object.
    pub fn get(&self, handle: Handle) -> Result<Arc<T>, RegistryError> {
        let s = self.inner.read();
        match s.slots.get(handle.index()) {
            Some(slot) if slot.generation == handle.generation() => {
                slot.value.clone().ok_or(RegistryError::Stale)
            }
            _ => Err(RegistryError::Stale),
        }
    }

    /// A process-wide unique id of this registry (for caches keyed by registry).
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// Changes whenever an object is removed: a cached lookup made at the same epoch is still
    /// valid.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Removes the object; later lookups of `handle` fail with [`RegistryError::Stale`].
    pub fn remove(&self, handle: Handle) -> Result<Arc<T>, RegistryError> {
        let mut s = self.inner.write();
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let index = handle.index();
        let slot = match s.slots.get_mut(index) {
            Some(slot) if slot.generation == handle.generation() && slot.value.is_some() => slot,
            _ => return Err(RegistryError::Stale),
        };
        let value = slot.value.take().ok_or(RegistryError::Stale)?;
        // Generation 0 is reserved so that handle 0 is never valid.
        slot.generation = match slot.generation.wrapping_add(1) {
            0 => 1,
            g => g,
        };
        s.free.push(index as u32);
        s.live -= 1;
        Ok(value)
    }

    /// The number of live objects.
    pub fn len(&self) -> usize {
        self.inner.read().live
    }

    /// Whether the registry holds no live objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes and returns every live object (used at shutdown).
    pub fn drain(&self) -> Vec<Arc<T>> {
        let mut s = self.inner.write();
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let mut out = Vec::with_capacity(s.live);
        let mut freed = Vec::new();
        for (i, slot) in s.slots.iter_mut().enumerate() {
            if let Some(v) = slot.value.take() {
                slot.generation = match slot.generation.wrapping_add(1) {
                    0 => 1,
                    g => g,
                };
                freed.push(i as u32);
                out.push(v);
            }
        }
        s.free.extend(freed);
        s.live = 0;
        out
    }

    /// A snapshot of every live object with its handle.
    pub fn snapshot(&self) -> Vec<(Handle, Arc<T>)> {
        let s = self.inner.read();
        s.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                slot.value
                    .as_ref()
                    .map(|v| (Handle::new(i as u32, slot.generation), v.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove() {
        let r = Registry::with_capacity_limit(10);
        let h = r.insert(Arc::new(7)).unwrap();
        assert_ne!(h, Handle::NONE);
        assert_eq!(*r.get(h).unwrap(), 7);
        assert_eq!(*r.remove(h).unwrap(), 7);
        assert_eq!(r.get(h), Err(RegistryError::Stale));
        assert_eq!(r.remove(h).map(|_| ()), Err(RegistryError::Stale));
        assert!(r.is_empty());
    }

    #[test]
    fn reused_slot_does_not_resolve_old_handle() {
        let r = Registry::with_capacity_limit(10);
        let old = r.insert(Arc::new("old")).unwrap();
        r.remove(old).unwrap();
        let new = r.insert(Arc::new("new")).unwrap();
        assert_eq!(old.index(), new.index(), "slot is reused");
        assert_ne!(old, new);
        assert_eq!(r.get(old), Err(RegistryError::Stale));
        assert_eq!(*r.get(new).unwrap(), "new");
    }

    #[test]
    fn none_and_garbage_handles_are_stale() {
        let r: Registry<u8> = Registry::with_capacity_limit(4);
        assert_eq!(r.get(Handle::NONE), Err(RegistryError::Stale));
        assert_eq!(
            r.get(Handle::from_raw(0xdead_beef_0000_0003)),
            Err(RegistryError::Stale)
        );
        let h = r.insert(Arc::new(1)).unwrap();
        // Same index, wrong generation.
        assert_eq!(
            r.get(Handle::from_raw(h.raw() + (1 << 32))),
            Err(RegistryError::Stale)
        );
    }

    #[test]
    fn capacity_limit_and_drain() {
        let r = Registry::with_capacity_limit(2);
        let a = r.insert(Arc::new(1)).unwrap();
        let _b = r.insert(Arc::new(2)).unwrap();
        assert_eq!(r.insert(Arc::new(3)), Err(RegistryError::Full));
        assert_eq!(r.snapshot().len(), 2);
        let drained = r.drain();
        assert_eq!(drained.len(), 2);
        assert_eq!(r.get(a), Err(RegistryError::Stale));
        assert!(r.insert(Arc::new(4)).is_ok());
    }

    #[test]
    fn object_outlives_concurrent_remove() {
        let r = Arc::new(Registry::with_capacity_limit(1000));
        let handles: Vec<Handle> = (0..1000).map(|i| r.insert(Arc::new(i)).unwrap()).collect();
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let r = r.clone();
                let handles = handles.clone();
                std::thread::spawn(move || {
                    let mut found = 0;
                    for h in &handles {
                        if let Ok(v) = r.get(*h) {
                            assert!(*v < 1000);
                            found += 1;
                        }
                    }
                    found
                })
            })
            .collect();
        for h in &handles {
            r.remove(*h).unwrap();
        }
        for t in readers {
            assert!(t.join().unwrap() <= 1000);
        }
        assert!(r.is_empty());
    }
}
