#![allow(dead_code)]
//! Helpers shared by the integration tests.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// A forked child. Dropping it without [`Child::wait`] (e.g. when the test panics) kills and
/// reaps it, so a failing test never leaves a process behind holding the test's pipes.
pub struct Child {
    pid: i32,
    reaped: bool,
}

impl Child {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits up to 60 s; returns the exit code, 1000 + signal if killed by a signal, or 3000
    /// if it had to be killed because it hung.
    pub fn wait(mut self) -> i32 {
        self.reaped = true;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut status = 0;
        loop {
            // SAFETY: plain waitpid on our own child.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            assert!(r >= 0, "waitpid failed");
            if r == self.pid {
                break;
            }
            if std::time::Instant::now() > deadline {
                // SAFETY: killing and reaping our own hung child.
                unsafe {
                    libc::kill(self.pid, libc::SIGKILL);
                    libc::waitpid(self.pid, &mut status, 0);
                }
                return 3000;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else if libc::WIFSIGNALED(status) {
            1000 + libc::WTERMSIG(status)
        } else {
            2000
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// Forks; the child runs `f` and `_exit`s with its return value (101 if it panicked).
pub fn fork_child(f: impl FnOnce() -> i32) -> Child {
    // SAFETY: the child only runs `f` (simple, allocation-free ring code) and then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = catch_unwind(AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: terminate the child without running the parent's destructors or test harness.
        unsafe { libc::_exit(code) };
    }
    Child { pid, reaped: false }
}

/// A pipe (read end, write end).
pub fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

pub fn write_byte(fd: i32, b: u8) {
    // SAFETY: writing one byte from a live buffer.
    assert_eq!(unsafe { libc::write(fd, (&b as *const u8).cast(), 1) }, 1);
}

pub fn read_byte(fd: i32) -> u8 {
    let mut b = 0u8;
    // SAFETY: reading one byte into a live buffer.
    assert_eq!(unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) }, 1);
    b
}

pub fn close(fd: i32) {
    // SAFETY: closing a descriptor the test owns.
    unsafe { libc::close(fd) };
}

/// A small deterministic PRNG (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A payload checksum for the tests' own message format.
pub fn mix(x: u64) -> u64 {
    let mut h = x ^ 0x9E37_79B9_7F4A_7C15;
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// Builds the message `i` of a stream into `buf`: [i][mix(i)][filler of (i % 97) bytes].
/// Returns the length used.
pub fn stream_msg(i: u64, buf: &mut [u8]) -> usize {
    let fill = (i % 97) as usize;
    buf[..8].copy_from_slice(&i.to_le_bytes());
    buf[8..16].copy_from_slice(&mix(i).to_le_bytes());
    for b in &mut buf[16..16 + fill] {
        *b = i as u8;
    }
    16 + fill
}

/// Checks a stream message; returns its index.
pub fn check_stream_msg(p: &[u8]) -> u64 {
    assert!(p.len() >= 16, "short message");
    let i = u64::from_le_bytes(p[..8].try_into().unwrap());
    assert_eq!(
        u64::from_le_bytes(p[8..16].try_into().unwrap()),
        mix(i),
        "bad checksum"
    );
    assert_eq!(p.len(), 16 + (i % 97) as usize, "bad length for {i}");
    assert!(p[16..].iter().all(|&b| b == i as u8), "bad filler for {i}");
    i
}

/// The name of the /proc/self/maps mapping containing `addr`.
pub fn mapping_of(addr: usize) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let range = parts.next()?;
        let (a, b) = range.split_once('-')?;
        let a = usize::from_str_radix(a, 16).ok()?;
        let b = usize::from_str_radix(b, 16).ok()?;
        if (a..b).contains(&addr) {
            let name: Vec<&str> = line.split_whitespace().skip(5).collect();
            return Some(name.join(" "));
        }
    }
    None
}
