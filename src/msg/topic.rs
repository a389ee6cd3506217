//! Topics: publish once, deliver to every subscribed mailbox, sharing the payload.

use super::mailbox::{Mailbox, Wait};
use super::message::Message;
use crate::error::{Error, Result, Status};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// Subscriptions by topic name.
#[derive(Default)]
pub struct TopicBus {
    subs: RwLock<HashMap<Arc<str>, Vec<Weak<Mailbox>>>>,
}

impl TopicBus {
    /// Subscribes a mailbox to a topic (idempotent).
    pub fn subscribe(&self, topic: &str, mb: &Arc<Mailbox>) {
        let mut subs = self.subs.write();
        let list = subs.entry(Arc::from(topic)).or_default();
        list.retain(|w| w.strong_count() > 0);
        if !list
            .iter()
            .any(|w| w.upgrade().is_some_and(|m| m.id() == mb.id()))
        {
            list.push(Arc::downgrade(mb));
        }
    }

    /// Removes a subscription. Returns whether there was one.
    pub fn unsubscribe(&self, topic: &str, mailbox_id: u64) -> bool {
        let mut subs = self.subs.write();
        let Some(list) = subs.get_mut(topic) else {
            return false;
        };
        let before = list.len();
        list.retain(|w| w.upgrade().is_some_and(|m| m.id() != mailbox_id));
        before != list.len()
    }

    /// Delivers `msg` to every subscriber of `topic` (each delivery shares the payload).
    /// Returns how many got it; when some could not (full or closed), fails with the status of
    /// the first failure and a message giving the counts.
    pub fn publish(
        &self,
        topic: &str,
        sender: u64,
        kind: u32,
        msg: &Message,
        wait: Wait,
    ) -> Result<usize> {
        let targets: Vec<Arc<Mailbox>> = {
            let subs = self.subs.read();
            subs.get(topic)
                .map(|l| l.iter().filter_map(Weak::upgrade).collect())
                .unwrap_or_default()
        };
        let topic_name = crate::msg::message::TopicName::new(topic);
        let mut delivered = 0;
        let mut first_err: Option<Error> = None;
        let mut failed = 0;
        for mb in &targets {
            let mut h = msg.new_header(sender, mb.id(), kind, 0);
            h.topic = Some(topic_name.clone());
            match mb.put(msg.deliver_as(h), wait) {
                Ok(()) => delivered += 1,
                Err(e) => {
                    failed += 1;
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            None => Ok(delivered),
            Some(e) => Err(Error::new(
                e.status(),
                format!(
                    "topic \"{topic}\": delivered to {delivered} of {} subscribers; {failed} failed (first: {})",
                    targets.len(),
                    e.message()
                ),
            )),
        }
    }

    /// Subscribers of a topic.
    pub fn subscribers(&self, topic: &str) -> usize {
        self.subs
            .read()
            .get(topic)
            .map_or(0, |l| l.iter().filter(|w| w.strong_count() > 0).count())
    }
}

/// Whether a status means "some subscribers did not get it".
pub fn is_partial(status: Status) -> bool {
    matches!(status, Status::Busy | Status::Timeout | Status::Closed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::message::KIND_USER;

    #[test]
    fn fan_out_shares_the_payload() {
        let bus = TopicBus::default();
        let a = Arc::new(Mailbox::new(1, 4));
        let b = Arc::new(Mailbox::new(2, 1));
        bus.subscribe("news", &a);
        bus.subscribe("news", &b);
        bus.subscribe("news", &b);
        assert_eq!(bus.subscribers("news"), 2);
        let m = Message::copy_from(KIND_USER, b"big payload");
        assert_eq!(bus.publish("news", 9, KIND_USER, &m, Wait::No).unwrap(), 2);
        let ra = a.recv(Wait::No).unwrap();
        let rb = b.recv(Wait::No).unwrap();
        assert_eq!(ra.payload().as_ptr(), m.payload().as_ptr());
        assert_eq!(rb.payload().as_ptr(), m.payload().as_ptr());
        assert_eq!(ra.topic(), Some("news"));
        assert_eq!(ra.header().sender, 9);
        // b holds one message at most: a second publish reaches a but not b, and says so.
        b.put(Message::copy_from(KIND_USER, b"x"), Wait::No)
            .unwrap();
        let e = bus.publish("news", 9, KIND_USER, &m, Wait::No).unwrap_err();
        assert_eq!(e.status(), Status::Busy);
        assert!(
            e.message().contains("delivered to 1 of 2"),
            "{}",
            e.message()
        );
        assert!(is_partial(e.status()));
        assert!(bus.unsubscribe("news", 2));
        assert_eq!(bus.subscribers("news"), 1);
        drop(a);
        assert_eq!(bus.subscribers("news"), 0);
    }
}
