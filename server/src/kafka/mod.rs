//! v3's Kafka side: a consumer that feeds every record of the topic into the v3 hub, and a
//! producer for `POST /v3/message`.
//!
//! Every instance must deliver every record to the streams it holds, so each instance reads all
//! partitions in a consumer group of its own. Offsets are stored only after a record has reached
//! the hub (at-least-once); the hub drops positions it already has, so redeliveries never reach
//! a stream twice.

mod calls;
mod consumer;
mod context;
mod log_ends;
mod producer;
mod recent;
pub mod record;
mod replay;
mod skipped;
mod start_ends;

pub use producer::Unavailable;

use crate::metrics::{Api, Metrics, Source};
use rdkafka::consumer::Consumer;
use std::{
    sync::{
        Arc, Mutex,
        atomic::{
            AtomicU64, AtomicUsize,
            Ordering::{Relaxed, SeqCst},
        },
    },
    time::Duration,
};
use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Config,
    hub::{Hub, LastSeen, Position},
};

#[derive(Debug, Clone)]
pub struct Settings {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    /// How long a produce may take before the POST gives up with 503.
    pub timeout: Duration,
    pub session_timeout: Duration,
    /// The longest a fetch waits at the broker for new records.
    pub fetch_wait: Duration,
    /// A partition read for the first time starts at the first record this recent.
    pub history_ttl: Duration,
    pub max_message: usize,
    /// The largest encoded event ([`crate::frame::message_len`]).
    pub max_frame: usize,
    /// Messages kept per user: also the most one resume reads back.
    pub history_len: usize,
    /// The most records of a partition one resume may read back.
    pub replay_max_records: u64,
    /// Readers (each one broker connection) reading back for resuming clients.
    pub replay_max_concurrent: usize,
    /// How long a resume may wait for its read-back.
    pub replay_timeout: Duration,
    /// Bytes of read-back events held at once, server-wide.
    pub replay_max_bytes: usize,
}

/// How long the consumer may go without partitions while the broker answers before it is
/// logged: a group join or rebalance takes a few seconds.
const NO_PARTITIONS_WARN: Duration = Duration::from_secs(30);

/// How long the consumer may go without partitions while the broker says the topic has some
/// before it joins its group again, at the least (twice the session timeout if longer); then
/// twice as long each time, up to [`REJOIN_MAX`]. A group that rejoined while the topic was
/// missing (a broker back without it, the topic created after) was seen to keep its empty
/// assignment for minutes after the topic came: librdkafka did not rejoin by itself.
const REJOIN_AFTER: Duration = Duration::from_secs(10);
const REJOIN_MAX: Duration = Duration::from_secs(300);

/// How far past a partition's high watermark an id must be to be taken for one the log never
/// held. Some brokers (tansu) report the last batch's base offset + 1 as the high watermark, so
/// ids inside that batch are past it. A batch holds far fewer records than this: one of 1 MiB
/// (Kafka's default limit) holds at most about 100,000 of the smallest records.
const PAST_END_MARGIN: u64 = 1_000_000;

/// The v3 consumer's client settings, for tools that read a topic as the server does (the
/// bench's `kafka-floor`).
pub fn consumer_config(settings: &Settings) -> rdkafka::ClientConfig {
    consumer::running_config(settings)
}

impl Settings {
    /// `None` when Kafka is switched off (`--kafka-brokers ""`).
    pub fn from_config(config: &Config) -> Option<Self> {
        let brokers = config.kafka_brokers.trim();
        if brokers.is_empty() {
            return None;
        }
        let group = config.kafka_group.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "localhost".into());
            format!("ssepush-{host}-{}", config.port)
        });
        Some(Self {
            brokers: brokers.to_owned(),
            topic: config.kafka_topic.clone(),
            group,
            timeout: config.kafka_timeout,
            session_timeout: config.kafka_session_timeout,
            fetch_wait: config.kafka_fetch_wait,
            history_ttl: config.history_ttl,
            max_message: config.max_body,
            max_frame: config.max_frame_bytes,
            history_len: config.history_len,
            replay_max_records: config.replay_max_records,
            replay_max_concurrent: config.replay_max_concurrent,
            replay_timeout: config.replay_timeout,
            replay_max_bytes: config.replay_max_bytes,
        })
    }
}

/// A handle on the running Kafka clients.
#[derive(Clone)]
pub struct Kafka {
    shared: Arc<Shared>,
}

struct Shared {
    settings: Settings,
    producer: producer::Producer,
    /// Reads back what resuming clients missed.
    replayer: replay::Replayer,
    hub: Hub,
    metrics: Metrics,
    status: Mutex<Status>,
    /// The consumer's blocking calls (watermarks, offset lookups, seeks).
    calls: calls::Calls,
    /// Where the partitions' logs ended at start-up.
    start_ends: start_ends::StartEnds,
    /// Where the partitions' logs end now, for resumes from past what was read here.
    log_ends: log_ends::LogEnds,
    consumer: Arc<consumer::KafkaConsumer>,
    /// Woken whenever the consumer has handed a record to the hub, while anyone waits.
    progress: Notify,
    /// POSTs waiting on `progress`: without any, a record wakes no one (`notify_waiters`
    /// takes a lock).
    waiting: AtomicUsize,
    records: AtomicU64,
    skipped: AtomicU64,
    tasks: TaskTracker,
}

#[derive(Debug, Clone)]
struct Status {
    connected: bool,
    /// What `/readyz` says: short, without broker addresses or librdkafka's text.
    reason: String,
    /// What the log says; compared to log only changes.
    detail: String,
    /// The topic's partitions, as last seen.
    partitions: Option<usize>,
}

/// [`Kafka::readiness`] from the broker's status and the partitions the consumer has.
fn readiness(status: &Status, assigned: usize, topic: &str) -> (bool, String) {
    if status.connected && assigned == 0 {
        let reason = format!(
            "kafka: the consumer has no partitions of {topic} (joining its group, which must be this instance's own)"
        );
        return (false, reason);
    }
    (status.connected, status.reason.clone())
}

/// What became of a record the consumer read.
#[derive(Debug, Clone, Copy)]
enum Handled {
    Delivered,
    Skipped,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct KafkaStats {
    pub connected: bool,
    /// Partitions the consumer has now.
    pub partitions: usize,
    pub records: u64,
    pub skipped: u64,
}

impl Kafka {
    /// Creates the clients and starts consuming. The broker need not be up: the clients keep
    /// retrying, `/readyz` reports the state, and v1/v2 are unaffected.
    pub fn start(
        settings: Settings,
        hub: Hub,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let producer = producer::Producer::new(&settings)?;
        let consumer = consumer::create(&settings, metrics.clone())?;
        tracing::info!(
            brokers = %settings.brokers,
            topic = %settings.topic,
            group = %settings.group,
            "kafka clients created"
        );
        let tasks = TaskTracker::new();
        let replayer = replay::Replayer::start(&settings, metrics.clone(), &tasks, &shutdown)?;
        let calls = calls::Calls::start("kafka-offsets")?;
        let start_ends = start_ends::StartEnds::ask(
            consumer.clone(),
            settings.topic.clone(),
            calls.clone(),
            &tasks,
            shutdown.clone(),
        );
        let kafka = Self {
            shared: Arc::new(Shared {
                settings,
                producer,
                replayer,
                hub,
                metrics,
                status: Mutex::new(Status {
                    connected: false,
                    reason: "kafka: connecting".into(),
                    detail: String::new(),
                    partitions: None,
                }),
                calls,
                start_ends,
                log_ends: log_ends::LogEnds::default(),
                consumer: consumer.clone(),
                progress: Notify::new(),
                waiting: AtomicUsize::new(0),
                records: AtomicU64::new(0),
                skipped: AtomicU64::new(0),
                tasks,
            }),
        };
        let tasks = &kafka.shared.tasks;
        tasks.spawn(consumer::run(consumer, kafka.clone(), shutdown.clone()));
        tasks.spawn(kafka.clone().watch_connection(shutdown));
        tasks.close();
        Ok(kafka)
    }

    /// Resolves once the consumer has made its final commit and stopped (after shutdown).
    pub async fn stopped(&self) {
        self.shared.tasks.wait().await;
    }

    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    /// Where the consumer's blocking calls run.
    fn calls(&self) -> &calls::Calls {
        &self.shared.calls
    }

    /// Where the partitions' logs ended at start-up, once known; `None` if the broker did not
    /// say within a few seconds of start-up.
    async fn start_ends(&self) -> Option<start_ends::Ends> {
        self.shared.start_ends.get().await
    }

    /// Resolves once a v3 stream may open: records produced from now on are read live,
    /// wherever the consumer starts reading. At most a few seconds after start-up.
    pub async fn started(&self) {
        self.start_ends().await;
    }

    /// A resume from an id well past the end of its partition's log names no record of this
    /// topic: it comes from one that was deleted and created anew (its offsets start over), or
    /// from elsewhere. Taken as it is, every record up to that offset would count as seen, and the
    /// client would get nothing, without a word, until the topic's offsets caught up with it.
    /// Asked of the broker only for ids past what this process has read.
    pub async fn place(&self, last: LastSeen) -> LastSeen {
        let LastSeen::At(p) = last else {
            return last;
        };
        if self
            .shared
            .hub
            .read_end(p.lane)
            .is_some_and(|end| p.seq < end)
        {
            return last;
        }
        let Ok(partition) = i32::try_from(p.lane) else {
            return last;
        };
        let ask = || async {
            consumer::watermarks(&self.shared.consumer, self, partition)
                .await
                .map(|(_, high)| high)
        };
        match self.shared.log_ends.high(partition, ask).await {
            Some(high) if u64::try_from(high).is_ok_and(|high| p.seq >= high + PAST_END_MARGIN) => {
                LastSeen::PastEnd(p)
            }
            _ => last,
        }
    }

    /// Reads back from the topic what a resuming stream missed and the history no longer has,
    /// and hands it to the stream (or a resync, past the bounds).
    pub async fn fill_gap(&self, gap: crate::hub::GapHandle) {
        let partitions = self.status().partitions;
        self.shared.replayer.fill(gap, partitions).await;
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.shared.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes of read-back events held now.
    pub fn replay_bytes(&self) -> usize {
        self.shared.replayer.budget().used()
    }

    /// The hub the consumer feeds.
    fn hub(&self) -> &Hub {
        &self.shared.hub
    }

    /// The consumer is done with a record: counts it, and wakes POSTs waiting for it.
    fn handled(&self, record: Handled) {
        let counter = match record {
            Handled::Delivered => {
                self.shared.metrics.published(Api::V3, Source::Kafka);
                &self.shared.records
            }
            Handled::Skipped => &self.shared.skipped,
        };
        counter.fetch_add(1, Relaxed);
        if self.shared.waiting.load(SeqCst) > 0 {
            self.shared.progress.notify_waiters();
        }
    }

    /// Produces a message for `user` and waits for Kafka's acknowledgement: where Kafka
    /// stored it.
    pub async fn publish(&self, user: &str, text: &str) -> Result<Position, Unavailable> {
        self.shared
            .producer
            .send(&self.shared.settings, user, text)
            .await
    }

    /// How many of this instance's streams the message at `position` was queued to, once its
    /// consumer has read it back; `None` if that takes longer than `patience`.
    pub async fn delivered_locally(
        &self,
        user: &str,
        position: Position,
        patience: Duration,
    ) -> Option<usize> {
        let deadline = tokio::time::Instant::now() + patience;
        let _waiting = Waiting::on(&self.shared.waiting);
        loop {
            let progressed = self.shared.progress.notified();
            tokio::pin!(progressed);
            progressed.as_mut().enable();
            if let Some(n) = self.shared.hub.delivered_count(user, position) {
                return Some(n);
            }
            tokio::time::timeout_at(deadline, progressed).await.ok()?;
        }
    }

    /// Whether the broker answers, the topic exists and the consumer has its partitions, with
    /// the reason. Without partitions an instance delivers no record, so it is not ready:
    /// before it has joined its group, while a rebalance lasts, and for good when another
    /// process shares its `--kafka-group` and has them all.
    pub fn readiness(&self) -> (bool, String) {
        let assigned = self.shared.consumer.context().assigned();
        readiness(&self.status(), assigned, &self.shared.settings.topic)
    }

    pub fn stats(&self) -> KafkaStats {
        KafkaStats {
            connected: self.status().connected,
            partitions: self.shared.consumer.context().assigned(),
            records: self.shared.records.load(Relaxed),
            skipped: self.shared.skipped.load(Relaxed),
        }
    }

    /// Asks the broker for the topic's metadata every couple of seconds; logs only changes.
    async fn watch_connection(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Since when the broker answers but the consumer has no partitions, and whether that
        // was logged.
        let mut without: Option<(tokio::time::Instant, bool)> = None;
        let mut rejoin = Rejoin::new(self.shared.settings.session_timeout);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let producer::Probe {
                connected,
                reason,
                detail,
                partitions,
            } = self.shared.producer.probe(&self.shared.settings).await;
            let mut status = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
            if status.connected != connected || (!connected && status.detail != detail) {
                if connected {
                    tracing::info!(reason = %detail, "kafka is ready");
                } else {
                    tracing::warn!(reason = %detail, "kafka is not ready; retrying every 2 s");
                }
            }
            *status = Status {
                connected,
                reason,
                detail,
                partitions: partitions.or(status.partitions),
            };
            drop(status);
            // Connected means the topic has partitions: the consumer should have some.
            let stranded = connected && self.shared.consumer.context().assigned() == 0;
            if rejoin.due(stranded) {
                self.rejoin_group();
            }
            without = match (stranded, without) {
                (false, Some((_, true))) => {
                    tracing::info!("kafka: the consumer has its partitions again");
                    None
                }
                (false, _) => None,
                (true, None) => Some((tokio::time::Instant::now(), false)),
                (true, Some((since, false))) if since.elapsed() >= NO_PARTITIONS_WARN => {
                    tracing::warn!(
                        group = %self.shared.settings.group,
                        secs = since.elapsed().as_secs(),
                        "kafka: the broker answers but the consumer has had no partitions for a while; v3 records reach no stream here and /readyz says 503 (another process in this group, or a broker that does not finish the rebalance)"
                    );
                    Some((since, true))
                }
                (true, kept) => kept,
            };
        }
    }

    /// Leaves the consumer group and joins it again, for a fresh assignment.
    fn rejoin_group(&self) {
        let consumer = &self.shared.consumer;
        let topic = &self.shared.settings.topic;
        tracing::warn!(
            group = %self.shared.settings.group,
            topic = %topic,
            "kafka: the topic has partitions but the consumer has had none for a while; joining the group again"
        );
        consumer.unsubscribe();
        if let Err(e) = consumer.subscribe(&[topic]) {
            tracing::warn!(error = %e, "kafka: subscribing again failed; retrying later");
        }
    }
}

/// When the consumer, without partitions of a topic that has some, joins its group again.
#[derive(Debug)]
struct Rejoin {
    first: Duration,
    wait: Duration,
    /// Since when it has been without, if it is.
    since: Option<tokio::time::Instant>,
}

impl Rejoin {
    fn new(session_timeout: Duration) -> Self {
        let first = REJOIN_AFTER.max(session_timeout * 2);
        Self {
            first,
            wait: first,
            since: None,
        }
    }

    /// Whether to rejoin now, told whether the consumer is without partitions it should have.
    /// Each rejoin doubles the wait for the next; having partitions again resets it.
    fn due(&mut self, without: bool) -> bool {
        let now = tokio::time::Instant::now();
        match (without, self.since) {
            (false, _) => {
                self.since = None;
                self.wait = self.first;
                false
            }
            (true, None) => {
                self.since = Some(now);
                false
            }
            (true, Some(since)) if now - since >= self.wait => {
                self.since = Some(now);
                self.wait = (self.wait * 2).min(REJOIN_MAX);
                true
            }
            (true, Some(_)) => false,
        }
    }
}

/// A POST counted in `waiting` while it lives. Counted before anything is checked, so a record
/// handed over after the check wakes it.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn on(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rejoins_after_a_while_without_partitions_then_less_often() {
        let mut rejoin = Rejoin::new(Duration::from_secs(2));
        let step = Duration::from_secs(2);
        let mut rejoined_at = Vec::new();
        for tick in 0..60u64 {
            if rejoin.due(true) {
                rejoined_at.push(tick * 2);
            }
            tokio::time::advance(step).await;
        }
        // 10 s, then 20 s and 40 s after that.
        assert_eq!(rejoined_at, vec![10, 30, 70]);
        // Partitions again: the next spell starts over.
        assert!(!rejoin.due(false));
        assert!(!rejoin.due(true));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(rejoin.due(true));
        // A rebalance's short spell without partitions never rejoins.
        let mut brief = Rejoin::new(Duration::from_secs(2));
        for _ in 0..10 {
            assert!(!brief.due(true));
            tokio::time::advance(step).await;
            assert!(!brief.due(false));
        }
        // A long session timeout waits longer first.
        let mut long = Rejoin::new(Duration::from_secs(30));
        assert!(!long.due(true));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!long.due(true));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(long.due(true));
    }

    #[test]
    fn ready_needs_the_broker_and_partitions() {
        let status = |connected| Status {
            connected,
            reason: "kafka connected; topic t has 1 partition(s)".into(),
            detail: String::new(),
            partitions: Some(1),
        };
        assert!(readiness(&status(true), 1, "t").0);
        let (ready, reason) = readiness(&status(true), 0, "t");
        assert!(!ready);
        assert!(reason.contains("no partitions of t"), "{reason}");
        assert!(!readiness(&status(false), 1, "t").0);
    }
}
