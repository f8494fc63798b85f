//! The consume loop: records into the v3 hub, offsets stored only after that.
//!
//! Per partition it decides three things the broker does not say outright:
//! - **Where to start.** On a partition's first assignment in this process, reading starts at
//!   the later of the committed offset and the first record inside the history window (but not
//!   past the log's end at start-up), so a new instance is current within seconds whatever the
//!   topic holds. After that no record is ever dropped for its timestamp: producers' clocks are
//!   theirs.
//! - **Redelivery.** After a rebalance the consumer reads again from the committed offset; the
//!   hub drops positions a user already has.
//! - **A topic created anew.** Its offsets start over, so old positions mean nothing. The
//!   signs: the consumer jumps back within one assignment (librdkafka resets a position past
//!   the log's end); a new assignment starts below the offset the broker last confirmed
//!   committing (the broker lost it with the topic); a known position comes back with other
//!   content; or the high watermark falls below the highest one the broker reported before,
//!   and below our position. A high watermark below our position alone is no sign: some
//!   brokers report the base offset of the last batch as the high watermark.
//!
//! Offsets are committed from this loop, not by librdkafka on its own, so that nothing is
//! committed between a broker outage and the next record: a broker that came back empty must
//! not be handed our old position, which would point past its new log.

use crate::{hub::now_ms, metrics::Metrics};
use futures_util::{FutureExt, StreamExt};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    message::BorrowedMessage,
};
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tokio_util::sync::CancellationToken;

use super::{
    Handled, Kafka, Settings,
    context::{Context, Throttle},
    recent::Recent,
    record,
    skipped::SkippedLog,
};
use crate::hub::Position;

pub type KafkaConsumer = StreamConsumer<Context>;

/// How long a blocking metadata or offset request may take.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How often stored offsets are committed.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// Consumer settings for at-least-once delivery in a group of this instance's own.
pub fn config(settings: &Settings) -> ClientConfig {
    let session = settings.session_timeout.as_millis().max(1000);
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group)
        .set("client.id", &settings.group)
        .set("enable.partition.eof", "false")
        // Offsets are stored by hand once a record is in the hub, and committed by the loop.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // With no committed offset, start at the beginning; the loop then skips ahead to the
        // history window.
        .set("auto.offset.reset", "earliest")
        // Some brokers answer a fetch only when this runs out, even when records arrive
        // sooner: it bounds the delay from produce to stream.
        .set(
            "fetch.wait.max.ms",
            settings.fetch_wait.as_millis().max(1).to_string(),
        )
        .set("socket.nagle.disable", "true")
        // librdkafka pre-fetches up to 100,000 records or 64 MiB per partition ahead of the
        // loop; freed, that memory stays with the allocator. A few MiB keep the loop fed.
        .set("queued.max.messages.kbytes", "2048")
        .set("queued.min.messages", "2000")
        // Past those bounds librdkafka waits this long before fetching again (default 1 s,
        // which cut reading a backlog from tansu from ~130,000 to ~24,000 records/s).
        .set("fetch.queue.backoff.ms", "10")
        .set("session.timeout.ms", session.to_string())
        .set("heartbeat.interval.ms", (session / 3).to_string())
        .set("topic.metadata.refresh.interval.ms", "2000")
        .set("reconnect.backoff.max.ms", "2000");
    config
}

/// [`config`] as the running consumer has it: with the statistics its lag metrics come from.
pub fn running_config(settings: &Settings) -> ClientConfig {
    let mut config = config(settings);
    // Consumer lag per partition for /metrics.
    config.set("statistics.interval.ms", "5000");
    config
}

pub fn create(settings: &Settings, metrics: Metrics) -> anyhow::Result<Arc<KafkaConsumer>> {
    let config = running_config(settings);
    let consumer: KafkaConsumer =
        config.create_with_context(Context::new("consumer").with_lag_into(metrics))?;
    consumer.subscribe(&[&settings.topic])?;
    Ok(Arc::new(consumer))
}

/// What the loop knows of one partition.
struct Partition {
    /// The assignment under which the current read started.
    assignment: u64,
    /// The offset expected next.
    next: i64,
    /// Until the first record kept: which records before the history window are skipped.
    opening: Option<Opening>,
    /// The highest high watermark the broker reported.
    max_high: i64,
    /// What the last records read were.
    recent: Recent,
    /// Set when the partition was read again from its start (its topic was created anew),
    /// until the first record from there arrives.
    rewound: Option<Rewound>,
}

/// Where a partition created anew is read from again. librdkafka retries a commit that was in
/// flight when the broker died, against the broker that comes back: the group's committed
/// offset is then one of the old numbering, and the next assignment starts there, past the new
/// log's end, in silence until the new offsets pass it. The rewind is repeated when a read
/// starts past it or nothing comes from it.
struct Rewound {
    to: i64,
    /// When it was last sought.
    at: Instant,
    /// How often it was sought again: bounded, in case the log's start has moved past it.
    again: u32,
}

impl Rewound {
    /// Seeks the rewind again and counts it; the callers check [`REWIND_AGAIN`].
    async fn seek_again(&mut self, consumer: &Arc<KafkaConsumer>, kafka: &Kafka, partition: i32) {
        self.again += 1;
        self.at = Instant::now();
        if let Err(e) = rewind(consumer, kafka, partition, self.to).await {
            tracing::warn!(partition, error = %e, "kafka rewind failed; retrying");
        }
    }
}

/// How often a rewind is sought again before a read past it is taken as it is.
const REWIND_AGAIN: u32 = 5;

/// Records handled between two looks at the loop's timers and shutdown: a backlog is read
/// without a `select!` (and its timer and cancellation polls) per record.
const BATCH: usize = 256;

pub async fn run(consumer: Arc<KafkaConsumer>, kafka: Kafka, shutdown: CancellationToken) {
    let mut state = LoopState {
        errors: Throttle::new(Duration::from_secs(10)),
        skipped: SkippedLog::new(Duration::from_secs(10)),
        partitions: HashMap::new(),
        outage: false,
        handled: Vec::new(),
    };
    // More consume errors than this a second: a client failing on every poll, which would
    // otherwise spin. Such a flood is slowed down.
    let flood = Throttle::up_to(100, Duration::from_secs(1));
    let mut check = tokio::time::interval(Duration::from_secs(2));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut commit = tokio::time::interval(COMMIT_INTERVAL);
    commit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One stream and one cancellation future for the loop's life: made per record, each
    // registers and unregisters a waker under a lock.
    let mut messages = consumer.stream();
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    loop {
        let message = tokio::select! {
            () = &mut cancelled => break,
            _ = check.tick() => {
                state.skipped.flush();
                if restart_recreated_partitions(&consumer, &kafka, &mut state.partitions).await {
                    note_committed(&consumer, &kafka, &state.partitions).await;
                }
                continue;
            }
            _ = commit.tick() => {
                if !state.outage {
                    commit_stored(&consumer, &state.errors);
                }
                continue;
            }
            m = messages.next() => m,
        };
        let Some(mut message) = message else { break };
        for handled in 1.. {
            match message {
                Ok(m) => state.handle(&consumer, &kafka, &m).await,
                Err(e) => {
                    state.outage = true;
                    if state.errors.allow() {
                        tracing::warn!(error = %e, "kafka consume error (repeats are muted for 10 s)");
                    }
                    // Errors are queued events, one per failed connect and the like: drain
                    // them at once, or the assignment queued behind an outage's errors waits
                    // its turn (a pause per error once held it back ~30 s). Only a flood is
                    // slowed down.
                    if !flood.allow() {
                        tokio::select! {
                            () = &mut cancelled => break,
                            () = tokio::time::sleep(Duration::from_millis(100)) => {}
                        }
                    }
                }
            }
            if handled == BATCH {
                break;
            }
            match messages.next().now_or_never().flatten() {
                Some(m) => message = m,
                None => break,
            }
        }
        state.store_handled(&consumer, &kafka.settings().topic);
    }
    state.store_handled(&consumer, &kafka.settings().topic);
    drop(messages);
    state.skipped.flush();
    final_commit(consumer).await;
}

/// What the consume loop carries from one record to the next.
struct LoopState {
    errors: Throttle,
    skipped: SkippedLog,
    partitions: HashMap<i32, Partition>,
    /// Set by a consume error (the broker went away), cleared by the next record.
    outage: bool,
    /// Per partition, the offset after the last record handled since offsets were last
    /// stored: stored once per batch rather than per record.
    handled: Vec<(i32, i64)>,
}

impl LoopState {
    async fn handle(
        &mut self,
        consumer: &Arc<KafkaConsumer>,
        kafka: &Kafka,
        message: &BorrowedMessage<'_>,
    ) {
        let settings = kafka.settings();
        let hub = kafka.hub();
        let (partition, offset) = (message.partition(), message.offset());
        let lane = partition as u64;
        let parsed =
            record::parse_event(message.payload(), settings.max_message, settings.max_frame);
        let assignment = consumer.context().assignments();
        match self.partitions.get_mut(&partition) {
            None => {
                let first = (offset, message.timestamp().to_millis());
                let opening = Opening::look_up(consumer, kafka, partition, first).await;
                self.partitions.insert(
                    partition,
                    Partition {
                        assignment,
                        next: offset,
                        opening: Some(opening),
                        max_high: -1,
                        recent: Recent::default(),
                        rewound: None,
                    },
                );
            }
            Some(p) => {
                if let Some(r) = &mut p.rewound {
                    if offset > r.to && r.again < REWIND_AGAIN {
                        // Skipped: read again from the rewind. Records fetched before the
                        // last seek may still come for a moment.
                        if r.at.elapsed() >= Duration::from_secs(1) {
                            tracing::warn!(
                                partition,
                                offset,
                                rewound_to = r.to,
                                "kafka partition read from past its new start (an offset committed before the topic was created anew); reading from its start again"
                            );
                            r.seek_again(consumer, kafka, partition).await;
                        }
                        return;
                    }
                    if offset > r.to {
                        // Given up (the log's start moved past it): what was not read is a gap.
                        hub.open_lane(lane, offset as u64);
                    }
                    p.rewound = None;
                }
                let new_read = p.assignment != assignment;
                let recreated = offset < p.next && {
                    // Is this the record we read at this offset before?
                    let same = p.recent.same(offset, message.payload()).or_else(|| {
                        let (user, text) = parsed.as_ref().ok()?;
                        hub.knows(user, Position::new(lane, offset as u64), text)
                    });
                    // Within one read, only librdkafka's reset of a position past the log's
                    // end goes back. After a rebalance, reading resumes at the committed
                    // offset: below what the broker confirmed, it lost that with the topic.
                    let below_commit = consumer
                        .context()
                        .committed(partition)
                        .is_some_and(|c| offset < c);
                    same != Some(true) && (same == Some(false) || !new_read || below_commit)
                };
                if recreated {
                    tracing::warn!(
                        partition,
                        offset,
                        expected = p.next,
                        "kafka partition starts over (topic created anew); forgetting its old positions"
                    );
                    forget_partition(kafka, consumer, partition, p);
                    p.max_high = -1;
                }
                if (recreated || new_read) && p.opening.is_none() {
                    // A read that starts past what we had leaves a gap: the lane says so.
                    hub.open_lane(lane, offset as u64);
                }
                p.assignment = assignment;
            }
        }
        self.outage = false;
        let p = self.partitions.get_mut(&partition).expect("inserted above");
        p.next = offset + 1;
        p.recent.push(offset, message.payload());
        let keep = match &p.opening {
            None => true,
            Some(opening) => {
                let kept = opening.keeps(offset, message.timestamp().to_millis());
                if kept {
                    opening.log(partition, offset, settings.history_ttl);
                    hub.open_lane(lane, offset as u64);
                    p.opening = None;
                }
                kept
            }
        };
        if keep {
            match parsed {
                Ok((user, text)) => {
                    // Delays are measured from the record's timestamp; a missing or negative
                    // one counts from now.
                    let sent = message
                        .timestamp()
                        .to_millis()
                        .and_then(|t| u64::try_from(t).ok())
                        .unwrap_or_else(now_ms);
                    hub.publish_stamped(user, text, Position::new(lane, offset as u64), sent);
                    kafka.handled(Handled::Delivered);
                }
                Err(why) => {
                    self.skipped.record(partition, offset, &why);
                    kafka.handled(Handled::Skipped);
                }
            }
        }
        match self.handled.iter_mut().find(|(q, _)| *q == partition) {
            Some((_, next)) => *next = offset + 1,
            None => self.handled.push((partition, offset + 1)),
        }
    }

    /// Stores the offsets of the records handled since the last call, for the next commit.
    fn store_handled(&mut self, consumer: &KafkaConsumer, topic: &str) {
        if self.handled.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(self.handled.len());
        for (partition, next) in self.handled.drain(..) {
            if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(next)) {
                tracing::warn!(error = %e, "kafka offset store failed");
            }
        }
        if let Err(e) = consumer.store_offsets(&tpl)
            && self.errors.allow()
        {
            tracing::warn!(error = %e, "kafka offset store failed");
        }
    }
}

/// Where reading a partition starts, the first time this process reads it: at the later of
/// the offset it was handed (the committed one) and the first record inside the history
/// window, but not past the log's end at start-up. Brokers without a time index (tansu)
/// answer the window lookup with the log's start, so records read before the log end seen at
/// start-up are also skipped while they are older than the window, up to the first one that
/// is not.
struct Opening {
    /// Found by the broker's time index; the consumer was moved there.
    skip_below: i64,
    /// The high watermark at start-up: records from here on are live.
    catch_up_end: i64,
    /// Milliseconds since the epoch where the history window began at start-up.
    cutoff_ms: i64,
    /// The offset the consumer was handed first.
    first: i64,
}

impl Opening {
    /// `offset` and `stamp` are the first record's the consumer was handed.
    async fn look_up(
        consumer: &Arc<KafkaConsumer>,
        kafka: &Kafka,
        partition: i32,
        (offset, stamp): (i64, Option<i64>),
    ) -> Self {
        let settings = kafka.settings();
        let cutoff_ms = now_millis().saturating_sub(settings.history_ttl.as_millis() as i64);
        // The end at start-up, not now: streams opened since are owed what was produced
        // meanwhile, whatever its timestamp.
        let end = match kafka.start_ends().await {
            // Not there at start-up: all of it came later.
            Some(ends) => Some(ends.get(&partition).copied().unwrap_or(0)),
            None => watermarks(consumer, kafka, partition)
                .await
                .map(|(_, high)| high),
        };
        let catch_up_end = end.unwrap_or(offset);
        let window = match window_start(consumer, kafka, partition, cutoff_ms).await {
            Ok(Some(found)) if found <= offset && stamp.is_some_and(|t| t < cutoff_ms) => {
                // The first record is older than the window. A broker without a time index
                // (tansu) gives the log's start for any time; where the window starts is then
                // known only by reading the partition, which took seconds for 2,000,000 old
                // records. Reading starts at the log's end at start-up instead: resumes from
                // before it are read back from Kafka.
                let far = now_millis().saturating_add(86_400_000);
                match window_start(consumer, kafka, partition, far).await {
                    Ok(Some(_)) => {
                        tracing::info!(
                            partition,
                            end = catch_up_end,
                            "kafka: the broker has no time index; reading starts at the log's end at start-up, and resumes from before it are read back from Kafka"
                        );
                        catch_up_end
                    }
                    _ => found,
                }
            }
            Ok(Some(found)) => not_past(found, end),
            Ok(None) => catch_up_end,
            Err(e) => {
                tracing::warn!(partition, error = %e, "kafka: could not look up the history window's first offset");
                offset
            }
        };
        if window > offset {
            let (consumer, topic) = (consumer.clone(), settings.topic.clone());
            let seek = kafka
                .calls()
                .run(move || {
                    consumer.seek(&topic, partition, Offset::Offset(window), REQUEST_TIMEOUT)
                })
                .await;
            // Not fatal: records below the window are skipped as they arrive.
            if let Ok(Err(e)) = seek {
                tracing::debug!(partition, error = %e, "kafka seek to the history window failed");
            }
        }
        Self {
            skip_below: window,
            catch_up_end,
            cutoff_ms,
            first: offset,
        }
    }

    /// Whether the record at `offset`, stamped `timestamp`, is the first one kept.
    fn keeps(&self, offset: i64, timestamp: Option<i64>) -> bool {
        let old = offset < self.skip_below
            || (offset < self.catch_up_end && timestamp.is_some_and(|t| t < self.cutoff_ms));
        !old
    }

    fn log(&self, partition: i32, offset: i64, history_ttl: Duration) {
        if offset <= self.first {
            tracing::info!(partition, offset, "kafka partition: reading from offset");
        } else {
            tracing::info!(
                partition,
                offset,
                skipped = offset - self.first,
                ?history_ttl,
                "kafka partition: reading from the history window; older records were skipped"
            );
        }
    }
}

/// Where the history window starts, as the broker's time index `found` it, but never past the
/// log's `end` at start-up: what was produced since is live whatever its timestamp. After a
/// quiet spell longer than the window, the first record stamped inside it may come after
/// records from a producer whose clock runs behind.
fn not_past(found: i64, end: Option<i64>) -> i64 {
    end.map_or(found, |end| found.min(end))
}

/// The offset of the partition's first record stamped `since` or later; `None` when none is
/// that recent.
async fn window_start(
    consumer: &Arc<KafkaConsumer>,
    kafka: &Kafka,
    partition: i32,
    since: i64,
) -> anyhow::Result<Option<i64>> {
    let (consumer, topic) = (consumer.clone(), kafka.settings().topic.clone());
    kafka
        .calls()
        .run(move || {
            let mut query = TopicPartitionList::new();
            query.add_partition_offset(&topic, partition, Offset::Offset(since))?;
            let found = consumer.offsets_for_times(query, REQUEST_TIMEOUT)?;
            let elem = found
                .find_partition(&topic, partition)
                .ok_or_else(|| anyhow::anyhow!("no answer for the partition"))?;
            elem.error()?;
            match elem.offset() {
                Offset::Offset(o) => Ok(Some(o)),
                Offset::End => Ok(None),
                other => anyhow::bail!("unexpected offset {other:?}"),
            }
        })
        .await?
}

/// A partition whose high watermark fell below the highest one seen, and below our position,
/// was created anew (some brokers then answer fetches past the end with silence rather than
/// an error): read it again from its start. Returns whether the broker answered at all.
async fn restart_recreated_partitions(
    consumer: &Arc<KafkaConsumer>,
    kafka: &Kafka,
    partitions: &mut HashMap<i32, Partition>,
) -> bool {
    let mut reachable = false;
    for (&partition, p) in partitions.iter_mut() {
        let Some((low, high)) = watermarks(consumer, kafka, partition).await else {
            continue;
        };
        reachable = true;
        if let Some(r) = &mut p.rewound
            && high > r.to
            && r.at.elapsed() >= REWIND_PATIENCE.max(kafka.settings().fetch_wait * 3)
            && r.again < REWIND_AGAIN
        {
            // The log holds records from where it was rewound, and none came: a later
            // assignment moved the read (to a committed offset of the old numbering).
            tracing::warn!(
                partition,
                rewound_to = r.to,
                high,
                "kafka partition: nothing read since it was read from its start again; seeking its start again"
            );
            r.seek_again(consumer, kafka, partition).await;
            continue;
        }
        if high >= p.max_high || high >= p.next {
            p.max_high = p.max_high.max(high);
            continue;
        }
        tracing::warn!(
            partition,
            next = p.next,
            high,
            highest_seen = p.max_high,
            "kafka partition was created anew; reading it from the start"
        );
        forget_partition(kafka, consumer, partition, p);
        // Typically between a revoke and the next assignment. The old numbering is gone all the
        // same: the next assignment's read is checked against the rewind like any other, and
        // the rewind is sought again if nothing comes from there.
        if let Err(e) = rewind(consumer, kafka, partition, low).await {
            tracing::warn!(partition, error = %e, "kafka rewind failed; seeking it again if nothing comes from there");
        }
        kafka.hub().open_lane(partition as u64, low as u64);
        p.next = low;
        p.opening = None;
        p.max_high = high;
        p.rewound = Some(Rewound {
            to: low,
            at: Instant::now(),
            again: 0,
        });
    }
    reachable
}

/// Asks the broker for the group's committed offsets, for [`Context::committed`]. A broker that
/// holds none (it came back empty) leaves the last one it confirmed in place: a read that then
/// starts below it is one of a topic created anew. A partition being read again from its
/// start is left out until the first record from there: the group's offset may still be one
/// of the old numbering (a commit librdkafka retried against the new broker).
async fn note_committed(
    consumer: &Arc<KafkaConsumer>,
    kafka: &Kafka,
    partitions: &HashMap<i32, Partition>,
) {
    let mut tpl = TopicPartitionList::new();
    for (&partition, p) in partitions {
        if p.rewound.is_none() {
            tpl.add_partition(&kafka.settings().topic, partition);
        }
    }
    if tpl.count() == 0 {
        return;
    }
    let asked = consumer.clone();
    let Ok(Ok(committed)) = kafka
        .calls()
        .run(move || asked.committed_offsets(tpl, REQUEST_TIMEOUT))
        .await
    else {
        return;
    };
    for e in committed.elements() {
        if let Offset::Offset(offset) = e.offset() {
            consumer.context().confirm_committed(e.partition(), offset);
        }
    }
}

/// How long a rewind may bring nothing, while the log holds records from there, before it is
/// sought again; at least three fetch waits. The checks come every 2 s.
const REWIND_PATIENCE: Duration = Duration::from_millis(1500);

/// Moves the consumer to `offset` of `partition` and stores that offset, or the next commit
/// would write the stale position back.
async fn rewind(
    consumer: &Arc<KafkaConsumer>,
    kafka: &Kafka,
    partition: i32,
    offset: i64,
) -> anyhow::Result<()> {
    let (consumer, topic) = (consumer.clone(), kafka.settings().topic.clone());
    kafka
        .calls()
        .run(move || {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, partition, Offset::Offset(offset))?;
            consumer.store_offsets(&tpl)?;
            consumer.seek(&topic, partition, Offset::Offset(offset), REQUEST_TIMEOUT)?;
            Ok(())
        })
        .await?
}

/// Forgets what this process knew of a partition whose topic was created anew: the hub's
/// positions on it, the offset last committed, and the records last read.
fn forget_partition(kafka: &Kafka, consumer: &KafkaConsumer, partition: i32, p: &mut Partition) {
    kafka.hub().reset_lane(partition as u64);
    consumer.context().forget_committed(partition);
    p.recent.clear();
}

/// A partition's low and high watermarks, asked on the consumer's calls thread.
pub(super) async fn watermarks(
    consumer: &Arc<KafkaConsumer>,
    kafka: &Kafka,
    partition: i32,
) -> Option<(i64, i64)> {
    let (consumer, topic) = (consumer.clone(), kafka.settings().topic.clone());
    kafka
        .calls()
        .run(move || consumer.fetch_watermarks(&topic, partition, REQUEST_TIMEOUT))
        .await
        .ok()?
        .ok()
}

/// Commits the offsets stored so far, without waiting. librdkafka reports no result for such a
/// commit: the checks ask the broker what it holds ([`note_committed`]).
fn commit_stored(consumer: &KafkaConsumer, errors: &Throttle) {
    match consumer.commit_consumer_state(CommitMode::Async) {
        Ok(()) => {}
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        )) => {}
        Err(e) => {
            if errors.allow() {
                tracing::warn!(error = %e, "kafka offset commit failed");
            }
        }
    }
}

/// A plain thread, not the blocking pool: a sync commit against a broker that just went away
/// can block for good, and the runtime would then never finish shutting down. The caller
/// bounds the wait; a commit still pending when the process exits is simply redelivered.
async fn final_commit(consumer: Arc<KafkaConsumer>) {
    let (done, result) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("kafka-final-commit".into())
        .spawn(move || {
            let _ = done.send(consumer.commit_consumer_state(CommitMode::Sync));
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "kafka final commit not started");
        return;
    }
    match result.await {
        Ok(Ok(())) => tracing::info!("kafka offsets committed; consumer stopped"),
        Ok(Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        ))) => {
            tracing::info!("kafka consumer stopped; no new offsets to commit")
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "kafka final commit failed"),
        Err(_) => tracing::warn!("kafka final commit thread ended without an answer"),
    }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A topic quiet for longer than the window: offsets 0-99 are old. After start-up (log end
    /// 100), a producer whose clock runs an hour behind writes 100-104, then another 105.
    #[test]
    fn records_produced_after_start_up_are_live_whatever_their_stamp() {
        let now = 10_000_000;
        let cutoff_ms = now - 600_000;
        let stamp = |offset: i64| match offset {
            105 => now,
            _ => now - 3_600_000,
        };
        // The time index finds 105, the first record stamped inside the window.
        let window = not_past(105, Some(100));
        assert_eq!(window, 100);
        let opening = Opening {
            skip_below: window,
            catch_up_end: 100,
            cutoff_ms,
            first: 0,
        };
        let first_kept = (window..106).find(|&o| opening.keeps(o, Some(stamp(o))));
        assert_eq!(first_kept, Some(100));
        // With the end unknown, the time index decides; inside the log it always does.
        assert_eq!(not_past(105, None), 105);
        assert_eq!(not_past(40, Some(100)), 40);
    }

    #[test]
    fn consumer_config_is_at_least_once_in_its_own_group() {
        let config_ = crate::config::Config::from_args([
            "ssepush",
            "--kafka-brokers",
            "b:9092",
            "--kafka-group",
            "ssepush-host-3000",
            "--kafka-session-timeout",
            "6s",
            "--kafka-fetch-wait",
            "10ms",
        ])
        .unwrap();
        let settings = Settings::from_config(&config_).unwrap();
        let c = config(&settings);
        assert_eq!(c.get("group.id"), Some("ssepush-host-3000"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("session.timeout.ms"), Some("6000"));
        assert_eq!(c.get("heartbeat.interval.ms"), Some("2000"));
        assert_eq!(c.get("fetch.wait.max.ms"), Some("10"));
    }
}
