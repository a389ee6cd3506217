//! Mailboxes, topics and agents on messages: ordering, no loss under concurrency,
//! backpressure, timeouts, close, zero copy.

#[path = "support/fake_server.rs"]
mod fake_server;

use agentos::config::RuntimeConfig;
use agentos::handle::Handle;
use agentos::msg::mailbox::Wait;
use agentos::msg::message::{Message, KIND_AGENT_ANSWER, KIND_USER};
use agentos::runtime::Runtime;
use agentos::Status;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn runtime() -> Runtime {
    let mut c = RuntimeConfig::default();
    c.set_workers(2).unwrap();
    Runtime::start(c).unwrap()
}

fn soon(ms: u64) -> Wait {
    Wait::Until(Instant::now() + Duration::from_millis(ms))
}

#[test]
fn producers_times_messages_each_received_exactly_once_in_per_sender_order() {
    let rt = runtime();
    let shared = rt.shared().clone();
    let inbox = shared.create_mailbox(64).unwrap();
    const P: u32 = 4;
    const M: u32 = 20_000;
    let producers: Vec<_> = (0..P)
        .map(|p| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let me = shared.create_mailbox(1).unwrap();
                for i in 0..M {
                    let mut bytes = p.to_le_bytes().to_vec();
                    bytes.extend_from_slice(&i.to_le_bytes());
                    let m = Message::copy_from(KIND_USER, &bytes);
                    // A small mailbox: senders block on backpressure, never lose a message.
                    shared
                        .send_message(me.raw(), inbox, &m, Wait::Forever)
                        .unwrap();
                }
                me.raw()
            })
        })
        .collect();
    let mb = shared.mailbox(inbox).unwrap();
    let mut next: HashMap<u64, u32> = HashMap::new();
    for _ in 0..P * M {
        let m = mb.recv(soon(10_000)).unwrap();
        let p = u32::from_le_bytes(m.payload()[0..4].try_into().unwrap());
        let i = u32::from_le_bytes(m.payload()[4..8].try_into().unwrap());
        let expected = next.entry(m.header().sender).or_insert(0);
        assert_eq!(i, *expected, "producer {p}: out of order or duplicated");
        *expected += 1;
    }
    let senders: Vec<u64> = producers.into_iter().map(|t| t.join().unwrap()).collect();
    for s in senders {
        assert_eq!(next[&s], M);
    }
    assert_eq!(mb.recv(Wait::No).unwrap_err().status(), Status::Timeout);
}

#[test]
fn zero_copy_in_process_and_through_topics() {
    let rt = runtime();
    let s = rt.shared();
    let a = s.create_mailbox(4).unwrap();
    let b = s.create_mailbox(4).unwrap();
    let big = vec![7u8; 1 << 20];
    let m = Message::copy_from(KIND_USER, &big);
    s.send_message(0, a, &m, Wait::No).unwrap();
    let got = s.mailbox(a).unwrap().recv(Wait::No).unwrap();
    assert_eq!(
        got.payload().as_ptr(),
        m.payload().as_ptr(),
        "the receiver sees the sender's buffer"
    );
    s.topics().subscribe("t", &s.mailbox(a).unwrap());
    s.topics().subscribe("t", &s.mailbox(b).unwrap());
    assert_eq!(
        s.topics().publish("t", 0, KIND_USER, &m, Wait::No).unwrap(),
        2
    );
    for mb in [a, b] {
        let r = s.mailbox(mb).unwrap().recv(Wait::No).unwrap();
        assert_eq!(r.payload().as_ptr(), m.payload().as_ptr());
        assert_eq!(r.topic(), Some("t"));
    }
}

#[test]
fn request_reply_timeout_close_and_stale_handles() {
    let rt = runtime();
    let s = rt.shared().clone();
    let client = s.create_mailbox(4).unwrap();
    let server = s.create_mailbox(4).unwrap();
    let s2 = s.clone();
    let t = std::thread::spawn(move || {
        let mb = s2.mailbox(server).unwrap();
        let req = mb.recv(soon(10_000)).unwrap();
        let mut answer = req.payload().to_vec();
        answer.reverse();
        s2.reply(
            server.raw(),
            &req,
            &Message::copy_from(KIND_USER, &answer),
            Wait::No,
        )
        .unwrap();
    });
    let reply = s
        .request(
            client,
            server,
            &Message::copy_from(KIND_USER, b"abc"),
            soon(10_000),
        )
        .unwrap();
    t.join().unwrap();
    assert_eq!(reply.payload(), b"cba");
    // Nobody answers: the request times out and leaves nothing behind.
    let e = s
        .request(
            client,
            server,
            &Message::copy_from(KIND_USER, b"x"),
            soon(50),
        )
        .unwrap_err();
    assert_eq!(e.status(), Status::Timeout);
    // Close wakes a blocked receiver with CLOSED.
    let s3 = s.clone();
    let waiter = std::thread::spawn(move || s3.mailbox(client).unwrap().recv(Wait::Forever));
    std::thread::sleep(Duration::from_millis(30));
    s.remove_mailbox(client).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap_err().status(), Status::Closed);
    let e = s
        .send_message(0, client, &Message::copy_from(KIND_USER, b"x"), Wait::No)
        .unwrap_err();
    assert_eq!(e.status(), Status::StaleHandle);
    assert_eq!(
        s.mailbox(Handle::from_raw(0)).err().unwrap().status(),
        Status::StaleHandle
    );
}

#[test]
fn an_agent_answers_a_mailbox_request() {
    use fake_server::{FakeServer, Reply};
    let srv = FakeServer::start();
    let rt = runtime();
    let s = rt.shared().clone();
    s.models()
        .add_endpoint_json(
            &format!(
                r#"{{"name":"f","provider":"openai","base_url":"{}/v1"}}"#,
                srv.url()
            ),
            false,
        )
        .unwrap();
    srv.push(Reply::openai_text("pong"));
    let h = s
        .create_agent(
            agentos::agent::AgentConfig::from_json(r#"{"name":"a","endpoint":"f","stream":false}"#)
                .unwrap(),
        )
        .unwrap();
    let agent = s.agent(h).unwrap();
    let agent_mb = s.agent_mailbox(&agent).unwrap();
    assert_eq!(
        s.agent_mailbox(&agent).unwrap(),
        agent_mb,
        "one mailbox per agent"
    );
    let me = s.create_mailbox(4).unwrap();
    let answer = s
        .request(
            me,
            agent_mb,
            &Message::copy_from(KIND_USER, b"ping"),
            soon(20_000),
        )
        .unwrap();
    assert_eq!(answer.payload(), b"pong");
    assert_eq!(answer.header().kind, KIND_AGENT_ANSWER);
    assert_eq!(answer.header().sender, agent_mb.raw());
    // A plain send: the answer arrives in the sender's mailbox.
    srv.push(Reply::openai_text("second"));
    s.send_message(
        me.raw(),
        agent_mb,
        &Message::copy_from(KIND_USER, b"again"),
        Wait::No,
    )
    .unwrap();
    let m = s.mailbox(me).unwrap().recv(soon(20_000)).unwrap();
    assert_eq!(m.payload(), b"second");
    // Non-UTF-8 text is refused at the door.
    let e = s
        .send_message(
            me.raw(),
            agent_mb,
            &Message::copy_from(KIND_USER, &[0xff, 0xfe]),
            Wait::No,
        )
        .unwrap_err();
    assert_eq!(e.status(), Status::InvalidUtf8);
    let _ = Arc::strong_count(&agent);
}
