//! Single-process tests: ordering, wrap-around, limits, timeouts, close, zero copy.

#[path = "shm_common/mod.rs"]
mod common;

use agentos::msg::shm::{ShmError, ShmRing};
use common::{mapping_of, Rng};
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const NOW: Option<Duration> = Some(Duration::ZERO);

fn payload_for(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (seq as usize * 31 + j) as u8).collect()
}

#[test]
fn capacity_rounding_and_limits() {
    assert_eq!(ShmRing::create(1).unwrap().capacity(), 4096);
    assert_eq!(ShmRing::create(4096).unwrap().capacity(), 4096);
    assert_eq!(ShmRing::create(5000).unwrap().capacity(), 8192);
    assert!(matches!(ShmRing::create(2 << 30), Err(ShmError::TooLarge)));
    let r = ShmRing::create(4096).unwrap();
    assert_eq!(r.max_payload(), 2048 - 32);
    assert!(matches!(
        r.send(1, &vec![0; r.max_payload() + 1], None),
        Err(ShmError::TooLarge)
    ));
    assert!(matches!(
        r.send_with(1, 1 << 20, Some(Duration::from_secs(1)), |_| unreachable!()),
        Err(ShmError::TooLarge)
    ));
    // The largest message always fits in an empty ring, wherever the tail is.
    for shift in 0..40 {
        let small = vec![7u8; shift * 8];
        r.send(2, &small, None).unwrap();
        drop(r.recv(NOW).unwrap());
        let big = vec![shift as u8; r.max_payload()];
        r.send(3, &big, None).unwrap();
        let m = r.recv(NOW).unwrap();
        assert_eq!(m.payload(), &big[..]);
    }
    assert_eq!(r.pending(), 0);
}

#[test]
fn ordering_seq_and_kind() {
    let r = ShmRing::create(1 << 16).unwrap();
    for i in 0..100u64 {
        let seq = r.send(i as u32, &payload_for(i, i as usize), None).unwrap();
        assert_eq!(seq, i);
    }
    for i in 0..100u64 {
        let m = r.recv(NOW).unwrap();
        assert_eq!(m.seq(), i);
        assert_eq!(m.kind(), i as u32);
        assert_eq!(m.payload(), &payload_for(i, i as usize)[..]);
    }
    assert!(matches!(r.recv(NOW), Err(ShmError::Timeout)));
    assert_eq!(r.pending(), 0);
}

#[test]
fn exact_end_and_padding() {
    let r = ShmRing::create(4096).unwrap();
    // Two records of exactly 2048 bytes fill the ring to the last byte: no padding.
    let a = vec![1u8; 2048 - 32];
    assert_eq!(r.send(1, &a, None).unwrap(), 0);
    assert_eq!(r.send(1, &a, None).unwrap(), 1);
    assert_eq!(r.pending(), 4096);
    assert!(matches!(r.send(1, &[], None), Err(ShmError::Full)));
    drop(r.recv(NOW).unwrap());
    // Tail is exactly at the end: the next record goes at offset 0 without padding.
    assert_eq!(r.send(1, &a, None).unwrap(), 2);
    assert_eq!(r.pending(), 4096);
    drop(r.recv(NOW).unwrap());
    drop(r.recv(NOW).unwrap());
    assert_eq!(r.pending(), 0);
    // Tail at 2048 + 40 (one 8-byte record): 2008 bytes left to the end. A 2040-byte
    // record needs padding (2008) + 2040 = 4048 <= 4096 bytes.
    let r = ShmRing::create(4096).unwrap();
    r.send(1, &a, None).unwrap(); // 2048 at offset 0
    r.send(1, &[9; 8], None).unwrap(); // 40 at offset 2048
    drop(r.recv(NOW).unwrap());
    drop(r.recv(NOW).unwrap());
    let b = vec![5u8; 2008];
    r.send(2, &b, None).unwrap();
    assert_eq!(r.pending(), 2008 + 2040);
    let m = r.recv(NOW).unwrap();
    assert_eq!(m.kind(), 2);
    assert_eq!(m.payload(), &b[..]);
    drop(m);
    assert_eq!(r.pending(), 0);
    // A record that exactly fills the rest (2008 = 32 + 1976) needs no padding.
    let r = ShmRing::create(4096).unwrap();
    r.send(1, &a, None).unwrap();
    r.send(1, &[9; 8], None).unwrap();
    drop(r.recv(NOW).unwrap());
    drop(r.recv(NOW).unwrap());
    r.send(3, &vec![3u8; 1976], None).unwrap();
    assert_eq!(r.pending(), 2008);
    r.send(4, &[4u8; 1], None).unwrap(); // lands at offset 0
    assert_eq!(r.pending(), 2008 + 40);
    assert_eq!(r.recv(NOW).unwrap().kind(), 3);
    assert_eq!(r.recv(NOW).unwrap().payload(), &[4u8]);
}

/// Random sends and receives of varying sizes against a model queue, over many laps.
#[test]
fn wraparound_random_model() {
    for &cap in &[4096usize, 8192, 1 << 16] {
        let r = ShmRing::create(cap).unwrap();
        let mut rng = Rng(0x1234_5678 ^ cap as u64);
        let mut model: VecDeque<(u64, u32, Vec<u8>)> = VecDeque::new();
        let mut next_seq = 0u64;
        let mut bytes = 0usize;
        let mut fulls = 0;
        for _ in 0..60_000 {
            if rng.below(100) < 55 {
                let len = match rng.below(10) {
                    0 => 0,
                    1 => r.max_payload(),
                    2 => rng.below(r.max_payload() as u64 + 1) as usize,
                    _ => rng.below(200) as usize,
                };
                let p = payload_for(next_seq, len);
                match r.send(len as u32, &p, None) {
                    Ok(seq) => {
                        assert_eq!(seq, next_seq);
                        model.push_back((seq, len as u32, p));
                        next_seq += 1;
                        bytes += len;
                    }
                    Err(ShmError::Full) => {
                        fulls += 1;
                        // Full is only legitimate when less than one worst-case record is free.
                        assert!(
                            cap - r.pending() < 2 * (32 + len.next_multiple_of(8)),
                            "spurious Full"
                        );
                    }
                    Err(e) => panic!("send: {e}"),
                }
            } else {
                match r.recv(NOW) {
                    Ok(m) => {
                        let (seq, kind, p) = model.pop_front().expect("unexpected message");
                        assert_eq!(m.seq(), seq);
                        assert_eq!(m.kind(), kind);
                        assert_eq!(m.payload(), &p[..]);
                    }
                    Err(ShmError::Timeout) => assert!(model.is_empty()),
                    Err(e) => panic!("recv: {e}"),
                }
            }
            if model.is_empty() {
                assert_eq!(r.pending(), 0);
            }
        }
        while let Some((seq, _, p)) = model.pop_front() {
            let m = r.recv(NOW).unwrap();
            assert_eq!((m.seq(), m.payload()), (seq, &p[..]));
        }
        assert!(bytes > 20 * cap, "too few laps");
        assert!(fulls > 0);
        assert_eq!(r.corrupt(), 0);
        assert_eq!(r.abandoned(), 0);
    }
}

#[test]
fn full_and_send_timeout() {
    let r = ShmRing::create(4096).unwrap();
    let mut n = 0;
    loop {
        match r.send(0, &[1; 100], None) {
            Ok(_) => n += 1,
            Err(ShmError::Full) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(n, 4096 / 136);
    assert!(matches!(
        r.send(0, &[1; 100], Some(Duration::ZERO)),
        Err(ShmError::Full)
    ));
    let t = Instant::now();
    assert!(matches!(
        r.send(0, &[1; 100], Some(Duration::from_millis(50))),
        Err(ShmError::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(50));
    // A blocked sender proceeds as soon as the consumer frees space.
    std::thread::scope(|s| {
        let h = s.spawn(|| r.send(9, &[2; 100], Some(Duration::from_secs(10))));
        std::thread::sleep(Duration::from_millis(30));
        drop(r.recv(NOW).unwrap());
        assert_eq!(h.join().unwrap().unwrap(), n as u64);
    });
}

#[test]
fn recv_timeout_on_empty() {
    let r = ShmRing::create(4096).unwrap();
    assert!(matches!(r.recv(NOW), Err(ShmError::Timeout)));
    let t = Instant::now();
    assert!(matches!(
        r.recv(Some(Duration::from_millis(40))),
        Err(ShmError::Timeout)
    ));
    let e = t.elapsed();
    assert!(
        e >= Duration::from_millis(40) && e < Duration::from_secs(2),
        "{e:?}"
    );
    // A blocked receiver wakes when a message arrives.
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            r.send(5, b"hello", None).unwrap();
        });
        let m = r.recv(None).unwrap();
        assert_eq!(m.payload(), b"hello");
    });
}

#[test]
fn close_semantics() {
    let r = ShmRing::create(4096).unwrap();
    for i in 0..3u8 {
        r.send(0, &[i], None).unwrap();
    }
    assert!(!r.is_closed());
    r.close();
    assert!(r.is_closed());
    assert!(matches!(r.send(0, &[9], None), Err(ShmError::Closed)));
    assert!(matches!(
        r.send_with(0, 4, Some(Duration::from_secs(1)), |_| ()),
        Err(ShmError::Closed)
    ));
    for i in 0..3u8 {
        assert_eq!(r.recv(NOW).unwrap().payload(), &[i]); // drained first
    }
    assert!(matches!(r.recv(NOW), Err(ShmError::Closed)));
    assert!(matches!(r.recv(None), Err(ShmError::Closed)));

    // close() wakes a blocked receiver and a blocked sender.
    let r = ShmRing::create(4096).unwrap();
    std::thread::scope(|s| {
        let h = s.spawn(|| r.recv(None).map(|_| ()));
        std::thread::sleep(Duration::from_millis(30));
        r.close();
        assert!(matches!(h.join().unwrap(), Err(ShmError::Closed)));
    });
    let r = ShmRing::create(4096).unwrap();
    while r.send(0, &[0; 500], None).is_ok() {}
    std::thread::scope(|s| {
        let h = s.spawn(|| r.send(0, &[0; 500], None.or(Some(Duration::from_secs(30)))));
        std::thread::sleep(Duration::from_millis(30));
        r.close();
        assert!(matches!(h.join().unwrap(), Err(ShmError::Closed)));
    });
}

#[test]
fn zero_copy_views() {
    let r = ShmRing::create(1 << 14).unwrap();
    let mut filled_at = 0usize;
    let seq = r
        .send_with(7, 1000, None, |buf| {
            assert!(buf.iter().all(|&b| b == 0), "fill buffer must be zeroed");
            filled_at = buf.as_ptr() as usize;
            for (i, b) in buf.iter_mut().enumerate() {
                *b = i as u8;
            }
        })
        .unwrap();
    // The fill buffer is inside the memfd mapping: built in place.
    let name = mapping_of(filled_at).expect("fill buffer not in any mapping");
    assert!(
        name.contains("memfd:agentos-ring"),
        "fill buffer in {name:?}"
    );
    let m = r.recv(NOW).unwrap();
    assert_eq!(m.seq(), seq);
    let p = m.payload();
    // The view points at the very bytes the producer wrote, inside the shared mapping.
    assert_eq!(p.as_ptr() as usize, filled_at);
    let name = mapping_of(p.as_ptr() as usize).unwrap();
    assert!(name.contains("memfd:agentos-ring"), "payload in {name:?}");
    let end = p.as_ptr() as usize + p.len() - 1;
    assert_eq!(mapping_of(end), Some(name));
    assert!(p.iter().enumerate().all(|(i, &b)| b == i as u8));
    drop(m);

    // A second, independent mapping of the segment sees the same bytes: the view is the
    // shared memory itself, not a copy.
    r.send(1, &[0xAA; 64], None).unwrap();
    let m = r.recv(NOW).unwrap();
    let other = ShmRing::from_fd(r.dup_fd().unwrap()).unwrap();
    assert_eq!(other.pending(), r.pending());
    let len = 4096 + other.capacity();
    // SAFETY: a fresh read-only mapping of the test's own segment.
    let alias = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            r.fd().as_raw_fd(),
            0,
        )
    };
    assert_ne!(alias, libc::MAP_FAILED);
    let data_off = m.payload().as_ptr() as usize - (filled_at - 4096 - 32);
    // SAFETY: data_off is within the alias mapping; we write one byte the view will observe.
    unsafe { *(alias as *mut u8).add(data_off) = 0x55 };
    assert_eq!(m.payload()[0], 0x55);
    drop(m);
    // SAFETY: unmapping the alias made above.
    unsafe { libc::munmap(alias, len) };
}

#[test]
fn corrupt_record_is_skipped() {
    let r = ShmRing::create(4096).unwrap();
    r.send(1, b"first message", None).unwrap();
    r.send(2, b"second message", None).unwrap();
    let len = 4096 + r.capacity();
    // SAFETY: a fresh mapping of the test's own segment.
    let alias = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            r.fd().as_raw_fd(),
            0,
        )
    };
    assert_ne!(alias, libc::MAP_FAILED);
    // Flip one payload byte of the first record (data area at 4096, payload after 32 bytes).
    // SAFETY: inside the alias mapping.
    unsafe { *(alias as *mut u8).add(4096 + 32 + 3) ^= 0x01 };
    let m = r.recv(NOW).unwrap();
    assert_eq!(m.payload(), b"second message");
    assert_eq!(m.seq(), 1);
    drop(m);
    assert_eq!(r.corrupt(), 1);
    // Flip a bit of the kind field of the next record.
    r.send(3, b"third", None).unwrap();
    r.send(4, b"fourth", None).unwrap();
    let third_off = 2 * 48; // two 13/14-byte records of 48 bytes each
                            // SAFETY: inside the alias mapping.
    unsafe { *(alias as *mut u8).add(4096 + third_off + 12) ^= 0x80 };
    assert_eq!(r.recv(NOW).unwrap().payload(), b"fourth");
    assert_eq!(r.corrupt(), 2);
    assert!(matches!(r.recv(NOW), Err(ShmError::Timeout)));
    // SAFETY: unmapping the alias made above.
    unsafe { libc::munmap(alias, len) };
}

#[test]
fn fill_panic_abandons_record() {
    let r = ShmRing::create(4096).unwrap();
    r.send(1, b"before", None).unwrap();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r.send_with(2, 100, None, |buf| {
            buf[0] = 1;
            panic!("fill failed");
        })
    }));
    assert!(res.is_err());
    r.send(3, b"after", None).unwrap();
    assert_eq!(r.recv(NOW).unwrap().payload(), b"before");
    let m = r.recv(NOW).unwrap();
    assert_eq!((m.kind(), m.payload()), (3, &b"after"[..]));
    assert_eq!(m.seq(), 2);
    drop(m);
    assert_eq!(r.abandoned(), 1);
}

#[test]
fn attach_validation() {
    let r = ShmRing::create(8192).unwrap();
    let a = ShmRing::from_fd(r.dup_fd().unwrap()).unwrap();
    assert_eq!(a.capacity(), 8192);
    a.send(1, b"via attached handle", None).unwrap();
    assert_eq!(r.recv(NOW).unwrap().payload(), b"via attached handle");
    // dup_fd is inheritable (no FD_CLOEXEC), fd() is close-on-exec.
    let d = r.dup_fd().unwrap();
    // SAFETY: F_GETFD on open descriptors.
    unsafe {
        assert_eq!(
            libc::fcntl(d.as_raw_fd(), libc::F_GETFD) & libc::FD_CLOEXEC,
            0
        );
        assert_ne!(
            libc::fcntl(r.fd().as_raw_fd(), libc::F_GETFD) & libc::FD_CLOEXEC,
            0
        );
    }
    // A file that is not a ring.
    let f = std::fs::File::open("/proc/self/exe").unwrap();
    assert!(matches!(
        ShmRing::from_fd(f.into()),
        Err(ShmError::BadSegment(_))
    ));
    // A memfd of the right size but without seals / magic.
    let make = |seal: bool, magic: bool| {
        // SAFETY: plain syscalls creating a fresh memfd owned by the test.
        unsafe {
            let fd = libc::memfd_create(c"x".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING);
            assert!(fd >= 0);
            assert_eq!(libc::ftruncate(fd, 8192), 0);
            if magic {
                let m = *b"AGOSRING";
                assert_eq!(libc::pwrite(fd, m.as_ptr().cast(), 8, 0), 8);
            }
            if seal {
                assert_eq!(libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_SHRINK), 0);
            }
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
        }
    };
    for (seal, magic) in [(false, false), (true, false), (true, true)] {
        match ShmRing::from_fd(make(seal, magic)) {
            Err(ShmError::BadSegment(m)) => eprintln!("rejected: {m}"),
            other => panic!("accepted a bad segment: {other:?}"),
        }
    }
}

#[test]
#[should_panic(expected = "single consumer")]
fn second_view_panics() {
    let r = ShmRing::create(4096).unwrap();
    r.send(1, b"a", None).unwrap();
    r.send(1, b"b", None).unwrap();
    let _m = r.recv(NOW).unwrap();
    let _n = r.recv(NOW);
}

#[test]
fn error_display() {
    let errs = [
        ShmError::Full,
        ShmError::Timeout,
        ShmError::TooLarge,
        ShmError::Closed,
        ShmError::PeerGone,
        ShmError::Io(std::io::Error::from_raw_os_error(libc::EBADF)),
        ShmError::BadSegment("x".into()),
    ];
    for e in &errs {
        assert!(!e.to_string().is_empty());
        let _: &dyn std::error::Error = e;
    }
}

#[test]
fn multi_producer_threads() {
    const PRODUCERS: u32 = 4;
    const PER: u64 = 50_000;
    let r = ShmRing::create(1 << 16).unwrap();
    std::thread::scope(|s| {
        for id in 0..PRODUCERS {
            let r = &r;
            s.spawn(move || {
                let mut buf = [0u8; 64];
                for c in 0..PER {
                    buf[..4].copy_from_slice(&id.to_le_bytes());
                    buf[4..12].copy_from_slice(&c.to_le_bytes());
                    let len = 12 + (c % 40) as usize;
                    r.send(id, &buf[..len], Some(Duration::from_secs(30)))
                        .unwrap();
                }
            });
        }
        let mut next = [0u64; PRODUCERS as usize];
        for expected_seq in 0..PRODUCERS as u64 * PER {
            let m = r.recv(Some(Duration::from_secs(30))).unwrap();
            assert_eq!(m.seq(), expected_seq);
            let p = m.payload();
            let id = u32::from_le_bytes(p[..4].try_into().unwrap());
            let c = u64::from_le_bytes(p[4..12].try_into().unwrap());
            assert_eq!(m.kind(), id);
            assert_eq!(p.len(), 12 + (c % 40) as usize);
            assert_eq!(c, next[id as usize], "producer {id} out of order");
            next[id as usize] += 1;
        }
        assert!(next.iter().all(|&n| n == PER));
    });
    assert!(matches!(r.recv(NOW), Err(ShmError::Timeout)));
    assert_eq!((r.corrupt(), r.abandoned()), (0, 0));
}

#[test]
fn scribbled_header_is_an_error_not_a_crash() {
    let r = ShmRing::create(4096).unwrap();
    r.send(1, b"ok", None).unwrap();
    let len = 4096 + r.capacity();
    // SAFETY: a fresh mapping of the test's own segment.
    let alias = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            r.fd().as_raw_fd(),
            0,
        )
    };
    assert_ne!(alias, libc::MAP_FAILED);
    // tail lives on the second cache line of the header.
    let tail = unsafe { (alias as *mut u8).add(64).cast::<u64>() };
    for garbage in [u64::MAX, 3, 1 << 40 | 5000, 12345] {
        // SAFETY: inside the alias mapping, 8-aligned.
        unsafe { tail.write_volatile(garbage) };
        assert!(
            matches!(r.send(1, b"x", None), Err(ShmError::BadSegment(_))),
            "{garbage:#x}"
        );
        assert!(
            matches!(r.recv(NOW), Err(ShmError::BadSegment(_))),
            "{garbage:#x}"
        );
    }
    // A committed record whose length was scribbled over.
    let r2 = ShmRing::create(4096).unwrap();
    r2.send(1, b"payload", None).unwrap();
    // SAFETY: a fresh mapping of the test's own segment.
    let alias2 = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            r2.fd().as_raw_fd(),
            0,
        )
    };
    // SAFETY: the len field of the first record (data area at 4096, +8).
    unsafe {
        (alias2 as *mut u8)
            .add(4096 + 8)
            .cast::<u32>()
            .write_volatile(0xFFFF_0000)
    };
    assert!(matches!(r2.recv(NOW), Err(ShmError::BadSegment(_))));
    // SAFETY: unmapping the aliases made above.
    unsafe {
        libc::munmap(alias, len);
        libc::munmap(alias2, len);
    }
}
