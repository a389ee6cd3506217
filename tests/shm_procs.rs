//! Cross-process tests: forked producers and consumers, crashes, SIGKILL, peer liveness.

#[path = "shm_common/mod.rs"]
mod common;

use agentos::msg::shm::{ShmError, ShmRing};
use common::*;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

const LONG: Option<Duration> = Some(Duration::from_secs(30));

/// 3 child producers (one attached through an inherited fd with from_fd) -> parent.
#[test]
fn children_produce_parent_consumes() {
    const CHILDREN: u32 = 3;
    const PER: u64 = 20_000;
    let ring = ShmRing::create(1 << 15).unwrap();
    let mut pids = Vec::new();
    for id in 0..CHILDREN {
        // Child 0 attaches from a raw inherited descriptor, like an exec'd child would.
        let raw = if id == 0 {
            ring.dup_fd().unwrap().into_raw_fd()
        } else {
            -1
        };
        let r = &ring;
        pids.push(fork_child(move || {
            let attached;
            let ring = if raw >= 0 {
                // SAFETY: `raw` is the inherited descriptor, owned by this child only.
                attached = match ShmRing::from_fd(unsafe { OwnedFd::from_raw_fd(raw) }) {
                    Ok(a) => a,
                    Err(_) => return 3,
                };
                &attached
            } else {
                r
            };
            let mut buf = [0u8; 64];
            for c in 0..PER {
                buf[..4].copy_from_slice(&id.to_le_bytes());
                buf[4..12].copy_from_slice(&c.to_le_bytes());
                buf[12..20].copy_from_slice(&mix(c ^ u64::from(id)).to_le_bytes());
                let len = 20 + (c % 37) as usize;
                if ring.send(id, &buf[..len], LONG).is_err() {
                    return 2;
                }
            }
            0
        }));
        if raw >= 0 {
            close(raw);
        }
    }
    let mut next = [0u64; CHILDREN as usize];
    for seq in 0..u64::from(CHILDREN) * PER {
        let m = ring.recv(LONG).unwrap();
        assert_eq!(m.seq(), seq);
        let p = m.payload();
        let id = u32::from_le_bytes(p[..4].try_into().unwrap());
        let c = u64::from_le_bytes(p[4..12].try_into().unwrap());
        assert_eq!(
            u64::from_le_bytes(p[12..20].try_into().unwrap()),
            mix(c ^ u64::from(id))
        );
        assert_eq!(p.len(), 20 + (c % 37) as usize);
        assert_eq!(c, next[id as usize], "child {id} out of order");
        next[id as usize] += 1;
    }
    for child in pids {
        assert_eq!(child.wait(), 0);
    }
    assert!(matches!(
        ring.recv(Some(Duration::ZERO)),
        Err(ShmError::Timeout)
    ));
    assert_eq!((ring.corrupt(), ring.abandoned()), (0, 0));
}

/// Parent produces, a child consumes and reports through its exit code.
#[test]
fn parent_produces_child_consumes() {
    const N: u64 = 50_000;
    let ring = ShmRing::create(1 << 14).unwrap();
    let parent = std::process::id() as i32;
    let r = &ring;
    let child = fork_child(move || {
        r.set_peer_pid(parent);
        for i in 0..N {
            let m = match r.recv(LONG) {
                Ok(m) => m,
                Err(_) => return 10,
            };
            if m.seq() != i || m.kind() != 7 {
                return 11;
            }
            let p = m.payload();
            if p.len() < 16 || u64::from_le_bytes(p[..8].try_into().unwrap()) != i {
                return 12;
            }
            if u64::from_le_bytes(p[8..16].try_into().unwrap()) != mix(i)
                || p.len() != 16 + (i % 97) as usize
            {
                return 13;
            }
        }
        // The parent closes after the last message.
        match r.recv(LONG) {
            Err(ShmError::Closed) => 0,
            _ => 14,
        }
    });
    ring.set_peer_pid(child.pid());
    let mut buf = [0u8; 256];
    for i in 0..N {
        let len = stream_msg(i, &mut buf);
        assert_eq!(ring.send(7, &buf[..len], LONG).unwrap(), i);
    }
    ring.close();
    assert_eq!(child.wait(), 0);
}

/// A producer that dies mid-write: its record is skipped, messages around it are delivered.
#[test]
fn crashed_writer_is_skipped() {
    for unwritten in [false, true] {
        let ring = ShmRing::create(1 << 14).unwrap();
        let (rd, wr) = pipe();
        let r = &ring;
        let child = fork_child(move || {
            for i in 0..10u64 {
                if r.send(1, &i.to_le_bytes(), LONG).is_err() {
                    return 2;
                }
            }
            let res = if unwritten {
                r.debug_reserve_unwritten(100)
            } else {
                r.debug_reserve_and_abandon(100)
            };
            if res.is_err() {
                return 3;
            }
            write_byte(wr, 1);
            // Dies without committing (no destructors run).
            0
        });
        assert_eq!(read_byte(rd), 1);
        close(rd);
        close(wr);
        // Other producers (here the parent) go on after the torn record.
        for i in 10..20u64 {
            ring.send(1, &i.to_le_bytes(), None).unwrap();
        }
        let t = Instant::now();
        for i in 0..20u64 {
            let m = ring.recv(LONG).unwrap();
            assert_eq!(m.kind(), 1, "torn record delivered");
            assert_eq!(m.payload(), &i.to_le_bytes());
            // seq 10 was the abandoned reservation.
            assert_eq!(m.seq(), if i < 10 { i } else { i + 1 });
        }
        eprintln!("unwritten={unwritten}: recovered in {:?}", t.elapsed());
        assert_eq!(ring.abandoned(), 1);
        assert_eq!(ring.corrupt(), 0);
        assert!(matches!(
            ring.recv(Some(Duration::ZERO)),
            Err(ShmError::Timeout)
        ));
        assert_eq!(ring.pending(), 0);
        assert_eq!(child.wait(), 0);
    }
}

/// With the peer set and no other producer: drain, skip the torn record, then PeerGone.
#[test]
fn peer_gone_after_drain() {
    for mode in 0..3 {
        let ring = ShmRing::create(1 << 14).unwrap();
        let r = &ring;
        let child = fork_child(move || {
            for i in 0..5u64 {
                if r.send(1, &i.to_le_bytes(), LONG).is_err() {
                    return 2;
                }
            }
            let res = match mode {
                0 => r.debug_reserve_and_abandon(64),
                1 => r.debug_reserve_unwritten(64),
                _ => Ok(0), // clean exit after sending
            };
            if res.is_err() {
                return 3;
            }
            0
        });
        ring.set_peer_pid(child.pid());
        for i in 0..5u64 {
            assert_eq!(ring.recv(LONG).unwrap().payload(), &i.to_le_bytes());
        }
        let t = Instant::now();
        match ring.recv(LONG) {
            Err(ShmError::PeerGone) => {}
            other => panic!("mode {mode}: expected PeerGone, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(ring.abandoned(), if mode < 2 { 1 } else { 0 });
        // Still PeerGone (not a hang) on later calls, also with an infinite timeout.
        assert!(matches!(ring.recv(None), Err(ShmError::PeerGone)));
        assert!(matches!(
            ring.recv(Some(Duration::ZERO)),
            Err(ShmError::PeerGone)
        ));
        assert_eq!(child.wait(), 0);
        // After the child is reaped (ESRCH) it is still reported.
        assert!(matches!(ring.recv(None), Err(ShmError::PeerGone)));
    }
}

/// A producer blocked on a full ring whose consumer died gets PeerGone.
#[test]
fn sender_sees_dead_consumer() {
    let ring = ShmRing::create(4096).unwrap();
    let r = &ring;
    let (rd, wr) = pipe();
    let child = fork_child(move || {
        // Become the consumer (records our pid), then die.
        let _ = r.recv(Some(Duration::ZERO));
        write_byte(wr, 1);
        0
    });
    assert_eq!(read_byte(rd), 1);
    close(rd);
    close(wr);
    while ring.send(0, &[0; 300], None).is_ok() {}
    let t = Instant::now();
    assert!(matches!(
        ring.send(0, &[0; 300], LONG),
        Err(ShmError::PeerGone)
    ));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(child.wait(), 0);
}

/// A child producer SIGKILLed mid-stream: the parent gets a gap-free, intact prefix, then
/// PeerGone. Repeated with kills at different moments to hit different windows.
#[test]
fn sigkill_mid_stream() {
    let mut rng = Rng(0xDEAD_BEEF);
    let rounds = 30;
    let mut total_abandoned = 0;
    for round in 0..rounds {
        let ring = ShmRing::create(if round % 2 == 0 { 4096 } else { 1 << 16 }).unwrap();
        let r = &ring;
        let child = fork_child(move || {
            let mut buf = [0u8; 256];
            let mut i = 0u64;
            loop {
                let len = stream_msg(i, &mut buf);
                if r.send(3, &buf[..len], LONG).is_err() {
                    return 2;
                }
                i += 1;
            }
        });
        ring.set_peer_pid(child.pid());
        let kill_after = 200 + rng.below(3000);
        let sleep_before_kill = rng.below(3) == 0;
        let mut next = 0u64;
        let mut killed = false;
        loop {
            if !killed && next == kill_after {
                if sleep_before_kill {
                    // Let the child run on a full ring / mid-send for a moment.
                    std::thread::sleep(Duration::from_micros(rng.below(500)));
                }
                // SAFETY: signalling our own child.
                assert_eq!(unsafe { libc::kill(child.pid(), libc::SIGKILL) }, 0);
                killed = true;
            }
            match ring.recv(LONG) {
                Ok(m) => {
                    assert_eq!(m.kind(), 3);
                    assert_eq!(check_stream_msg(m.payload()), next, "gap in stream");
                    next += 1;
                }
                Err(ShmError::PeerGone) => {
                    assert!(killed, "PeerGone before the kill");
                    break;
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(ring.corrupt(), 0);
        assert!(ring.abandoned() <= 1);
        total_abandoned += ring.abandoned();
        assert_eq!(child.wait(), 1000 + libc::SIGKILL);
        assert!(next >= kill_after);
    }
    eprintln!("sigkill: {rounds} rounds, {total_abandoned} torn records skipped");
}

/// Forking while other threads use (their own) rings: every child must run and exit.
#[test]
fn fork_while_other_threads_use_rings() {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = ShmRing::create(4096).unwrap();
                    for i in 0..50u64 {
                        r.send(1, &i.to_le_bytes(), None).unwrap();
                        assert_eq!(r.recv(Some(Duration::ZERO)).unwrap().seq(), i);
                    }
                }
            });
        }
        let ring = ShmRing::create(1 << 16).unwrap();
        for round in 0..100u64 {
            let r = &ring;
            let child = fork_child(move || {
                for i in 0..10u64 {
                    if r.send(2, &(round * 10 + i).to_le_bytes(), LONG).is_err() {
                        return 2;
                    }
                }
                0
            });
            for i in 0..10u64 {
                let m = ring.recv(Some(Duration::from_secs(20))).unwrap();
                assert_eq!(m.payload(), &(round * 10 + i).to_le_bytes());
            }
            assert_eq!(child.wait(), 0, "child {round}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}
