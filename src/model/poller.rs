//! A thin epoll set plus an eventfd waker, for the I/O thread's curl socket-action loop.
//!
//! curl tells us which sockets to watch (its socket callback) and when to time out (its timer
//! callback); we wait on them all with one `epoll_wait`, so each wake-up costs O(ready sockets),
//! not O(transfers).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Wakes the I/O thread from any thread (an eventfd).
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    /// A new, unsignalled waker.
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd takes no pointers; the returned fd is owned from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Waker {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Signals the waker.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. A full counter (EAGAIN)
        // means it is already signalled, which is all we want.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            )
        };
    }

    /// Clears the signal.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own non-blocking eventfd.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                &mut v as *mut u64 as *mut libc::c_void,
                8,
            )
        };
    }

    /// The descriptor to watch.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Readiness of one descriptor.
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    /// The descriptor.
    pub fd: RawFd,
    /// The tag it was registered with.
    pub tag: u32,
    /// Readable (or hung up).
    pub input: bool,
    /// Writable.
    pub output: bool,
    /// Error condition.
    pub error: bool,
}

/// An epoll set.
pub struct Poller {
    epfd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Poller {
    /// A new, empty set.
    pub fn new() -> io::Result<Poller> {
        // SAFETY: no pointers; the fd is owned from here on.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller {
            // SAFETY: fresh descriptor.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
        })
    }

    /// The epoll descriptor (for the socket callback, which runs on the same thread).
    pub fn raw(&self) -> RawFd {
        self.epfd.as_raw_fd()
    }

    /// Watches `fd` for input and/or output (adds it, or changes its interest); readiness
    /// reports carry `tag` (e.g. which curl multi handle owns the socket).
    pub fn set(epfd: RawFd, fd: RawFd, tag: u32, input: bool, output: bool) {
        let mut flags = 0u32;
        if input {
            flags |= libc::EPOLLIN as u32;
        }
        if output {
            flags |= libc::EPOLLOUT as u32;
        }
        let mut ev = libc::epoll_event {
            events: flags,
            u64: (tag as u64) << 32 | fd as u32 as u64,
        };
        // Add first: curl removes a connection's socket when its transfer ends and asks for it
        // again when the next transfer starts, so adding is the common case (one system call);
        // a change of interest on a watched socket falls back to modifying it.
        // SAFETY: `ev` is a live epoll_event; the kernel copies it.
        unsafe {
            if libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) < 0
                && io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST)
            {
                libc::epoll_ctl(epfd, libc::EPOLL_CTL_MOD, fd, &mut ev);
            }
        }
    }

    /// Stops watching `fd` (errors ignored: curl may already have closed it).
    pub fn remove(epfd: RawFd, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as above.
        unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Waits up to `timeout` and returns the ready descriptors.
    pub fn wait(&mut self, timeout: Duration, out: &mut Vec<Ready>) {
        out.clear();
        // Round up so a 0.4 ms timer does not become a busy 0 ms loop.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: `events` has `len` initialised slots the kernel may write to.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                ms,
            )
        };
        for ev in self.events.iter().take(n.max(0) as usize) {
            let e = ev.events;
            out.push(Ready {
                fd: ev.u64 as u32 as RawFd,
                tag: (ev.u64 >> 32) as u32,
                input: e & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32 != 0,
                output: e & libc::EPOLLOUT as u32 != 0,
                error: e & libc::EPOLLERR as u32 != 0,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waker_wakes_the_poller() {
        let mut p = Poller::new().unwrap();
        let w = Waker::new().unwrap();
        Poller::set(p.raw(), w.fd(), 7, true, false);
        let mut ready = Vec::new();
        p.wait(Duration::from_millis(1), &mut ready);
        assert!(ready.is_empty());
        w.wake();
        p.wait(Duration::from_secs(5), &mut ready);
        assert_eq!(ready.len(), 1);
        assert!(ready[0].input);
        assert_eq!((ready[0].fd, ready[0].tag), (w.fd(), 7));
        w.drain();
        p.wait(Duration::from_millis(1), &mut ready);
        assert!(ready.is_empty());
    }
}
