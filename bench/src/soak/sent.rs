//! The register of every message published during a soak, numbered in order, and the body
//! format that carries the number to the clients.
//!
//! A body is `soak <seq> <sent_us> <tag>`: the sequence number makes each body unique and
//! leads straight back to the register entry, the send time gives the delay without a lookup,
//! and the tag says whether it is a probe of a recovery round.

use super::ledger::{Ack, Message, Us, Via};
use crate::scenario::now_us;
use std::sync::Mutex;

/// Bodies are padded to about this many bytes, like a short chat message.
const BODY_LEN: usize = 64;

/// What a body says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Body {
    pub seq: u32,
    pub sent_us: Us,
    /// The recovery round, for a probe.
    pub probe: Option<u32>,
}

/// A body for message `seq`, sent now; `probe` marks a recovery probe of that round.
pub fn body(seq: u32, sent_us: Us, probe: Option<u32>) -> String {
    let mut text = match probe {
        Some(round) => format!("soak {seq} {sent_us} probe-{round}"),
        None => format!("soak {seq} {sent_us} msg"),
    };
    if text.len() + 1 < BODY_LEN {
        text.push(' ');
        text.extend(std::iter::repeat_n('.', BODY_LEN - text.len()));
    }
    text
}

/// Reads a body back; `None` for anything else.
pub fn parse(data: &str) -> Option<Body> {
    let mut parts = data.split(' ');
    if parts.next()? != "soak" {
        return None;
    }
    let seq = parts.next()?.parse().ok()?;
    let sent_us = parts.next()?.parse().ok()?;
    let probe = parts
        .next()?
        .strip_prefix("probe-")
        .and_then(|r| r.parse().ok());
    Some(Body {
        seq,
        sent_us,
        probe,
    })
}

/// Every message published, by sequence number.
#[derive(Default)]
pub struct Register {
    messages: Mutex<Vec<Message>>,
}

impl Register {
    /// Records a message about to be sent to `user` by `producer` (see [`Message::producer`])
    /// and returns its sequence number and the send time, taken under the lock so that numbers
    /// rise with send times.
    pub fn add(&self, user: u32, via: Via, producer: u8) -> (u32, Us) {
        let mut messages = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        let sent_us = now_us();
        messages.push(Message {
            user,
            via,
            producer,
            sent_us,
            ack: None,
        });
        ((messages.len() - 1) as u32, sent_us)
    }

    /// Records the acknowledgement of message `seq`, naming `offset`.
    pub fn ack(&self, seq: u32, offset: u64) {
        let at_us = now_us();
        let mut messages = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = messages.get_mut(seq as usize) {
            m.ack = Some(Ack { at_us, offset });
        }
    }

    /// How many messages were published so far.
    pub fn len(&self) -> usize {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether nothing was published yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the register, for the ledger.
    pub fn snapshot(&self) -> Vec<Message> {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_are_padded() {
        let b = body(42, 123_456, None);
        assert_eq!(b.len(), BODY_LEN);
        assert_eq!(
            parse(&b),
            Some(Body {
                seq: 42,
                sent_us: 123_456,
                probe: None
            })
        );
        assert_eq!(parse(&body(7, 1, Some(3))).unwrap().probe, Some(3));
        assert_eq!(parse("hello"), None);
        assert_eq!(parse("soak x 1 msg"), None);
    }
}
