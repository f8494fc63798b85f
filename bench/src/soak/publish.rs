//! The publishers: `POST /v3/message` to either instance, records produced straight to the
//! topic, filler for the stalled clients' users, and the recovery probes.
//!
//! Each message is entered in the [`Register`] before it is sent, and acknowledged there when
//! the 200 (with its id) or the delivery report arrives. The producer does not retry
//! (`message.send.max.retries=0`) and is not idempotent: a retry after a broker kill could write
//! the same body twice, a duplicate of the harness's own making, while a send that fails is
//! simply never acknowledged, hence owed to nobody.

use super::ledger::Via;
use super::rng::Rng;
use super::sent::{self, Register};
use super::shared::Shared;
use super::{filler_user, user_name};
use crate::http::Publisher;
use anyhow::{Context, Result};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};

/// The topic the instances consume.
pub const TOPIC: &str = "v3_messages";

/// Filler body size: large enough that a stalled reader's socket fills within seconds.
const FILLER_LEN: usize = 2048;

/// Longest wait for a POST's answer; the server gives up on Kafka well before.
const POST_TIMEOUT: Duration = Duration::from_secs(15);

/// Produces soak records and notes their delivery reports in the register.
#[derive(Clone)]
pub struct Kafka {
    producer: FutureProducer,
    register: Arc<Register>,
    shared: Arc<Shared>,
    /// Records whose delivery report has not come back yet.
    pending: Arc<AtomicU64>,
}

impl Kafka {
    pub fn new(broker: SocketAddr, register: Arc<Register>, shared: Arc<Shared>) -> Result<Self> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", broker.to_string())
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .set("message.send.max.retries", "0")
            .set("message.timeout.ms", "10000")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "200000")
            .set("socket.nagle.disable", "true")
            .set("reconnect.backoff.max.ms", "500")
            .set("topic.metadata.refresh.interval.ms", "1000")
            .create()
            .context("create the Kafka producer")?;
        Ok(Self {
            producer,
            register,
            shared,
            pending: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Registers and produces one message for `user`.
    pub fn send(&self, user: u32, via: Via, probe: Option<u32>) {
        let (seq, sent_us) = self.register.add(user, via, 0);
        let value = format!("{}:{}", user_name(user), sent::body(seq, sent_us, probe));
        let record = FutureRecord::<(), _>::to(TOPIC).payload(&value);
        let failures = &self.shared.counters.produce_failures;
        match self.producer.send_result(record) {
            Ok(delivery) => {
                self.pending.fetch_add(1, Relaxed);
                let (register, pending, shared) = (
                    self.register.clone(),
                    self.pending.clone(),
                    self.shared.clone(),
                );
                tokio::spawn(async move {
                    match delivery.await {
                        Ok(Ok(d)) => register.ack(seq, d.offset as u64),
                        _ => {
                            shared.counters.produce_failures.fetch_add(1, Relaxed);
                        }
                    }
                    pending.fetch_sub(1, Relaxed);
                });
            }
            Err(_) => {
                failures.fetch_add(1, Relaxed);
            }
        }
    }

    /// Produces one filler record for stalled user `hot`; the ledger ignores these.
    fn send_filler(&self, hot: u32, n: u64) {
        let mut value = format!("{}:filler {n} ", filler_user(hot));
        value.extend(std::iter::repeat_n('f', FILLER_LEN));
        let record = FutureRecord::<(), _>::to(TOPIC).payload(&value);
        if self.producer.send_result(record).is_ok() {
            self.shared.counters.filler_sent.fetch_add(1, Relaxed);
        }
    }

    /// Waits until every delivery report is in, `max` at most.
    pub async fn settle(&self, max: Duration) {
        let deadline = Instant::now() + max;
        while self.pending.load(Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Produces `rate` messages a second to random users, and `filler_rate` filler records a
/// second to each of `fillers` stalled users, until `publish_stop`.
pub async fn produce_loop(
    kafka: Kafka,
    users: u32,
    rate: f64,
    fillers: u32,
    filler_rate: f64,
    mut rng: Rng,
) {
    let stop = kafka.shared.publish_stop.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut credit, mut filler_credit, mut filler_n) = (0.0f64, 0.0f64, 0u64);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let dt = last.elapsed().as_secs_f64();
        last = Instant::now();
        credit += rate * dt;
        filler_credit += filler_rate * f64::from(fillers) * dt;
        while credit >= 1.0 {
            credit -= 1.0;
            kafka.send(rng.below(u64::from(users)) as u32, Via::Kafka, None);
        }
        while filler_credit >= 1.0 && fillers > 0 {
            filler_credit -= 1.0;
            kafka.send_filler((filler_n % u64::from(fillers)) as u32, filler_n);
            filler_n += 1;
        }
    }
}

/// One POSTing task: every `period`, a message to a random user, to the instances in turn.
/// A POST that fails is never acknowledged; the next goes to the other instance.
pub async fn post_loop(
    shared: Arc<Shared>,
    register: Arc<Register>,
    users: u32,
    period: Duration,
    first: usize,
    mut rng: Rng,
) {
    let mut publishers = shared.addrs.map(Publisher::new);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut target = first;
    loop {
        tokio::select! {
            () = shared.publish_stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        target = 1 - target;
        let user = rng.below(u64::from(users)) as u32;
        let (seq, sent_us) = register.add(user, Via::Http, 1 + target as u8);
        let body = sent::body(seq, sent_us, None);
        let path = format!("/v3/message?username={}", user_name(user));
        let answer = tokio::time::timeout(
            POST_TIMEOUT,
            publishers[target].post(&path, body.as_bytes()),
        )
        .await;
        let offset = match answer {
            Ok(Ok((200, json))) => serde_json::from_slice::<wire::Published>(&json)
                .ok()
                .and_then(|p| offset_of(&p.id)),
            Ok(_) => None,
            Err(_) => {
                // Abandoned mid-exchange: the connection can't carry another request.
                publishers[target] = Publisher::new(shared.addrs[target]);
                None
            }
        };
        match offset {
            Some(offset) => register.ack(seq, offset),
            None => {
                shared.counters.post_failures.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The offset in a v3 id `partition-offset`.
fn offset_of(id: &str) -> Option<u64> {
    id.split_once('-')?.1.parse().ok()
}

/// Sends recovery probes: one record per user per round, so every lineage can show it is live.
pub struct Prober {
    kafka: Kafka,
    users: u32,
    next_round: AtomicU32,
}

impl Prober {
    pub fn new(kafka: Kafka, users: u32) -> Self {
        Self {
            kafka,
            users,
            next_round: AtomicU32::new(0),
        }
    }

    /// Produces a round and returns its number.
    pub fn round(&self) -> u32 {
        let round = self.next_round.fetch_add(1, Relaxed);
        for user in 0..self.users {
            self.kafka.send(user, Via::Probe, Some(round));
        }
        round
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn offsets_from_ids() {
        assert_eq!(super::offset_of("0-42"), Some(42));
        assert_eq!(super::offset_of("42"), None);
    }
}
