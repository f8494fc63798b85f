//! Reading back from Kafka what a resuming v3 client missed and the history no longer has
//! ([`crate::hub::Gap`]).
//!
//! A reconnect storm (an instance died, and its clients all come back here) must not open a
//! broker connection per client, as one consumer per client would. A few readers, each with one
//! consumer kept for the life of the process (`--replay-max-concurrent`), take the queued gaps;
//! a reader takes every queued gap on the same partition at once and reads the span they cover
//! a single time, handing each stream the records of its own user. A gap spanning more than
//! `--replay-max-records`, one whose first record has left the topic, or one not read within
//! `--replay-timeout` gets a resync instead.

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
    error::KafkaResult,
};
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    sync::{Notify, oneshot},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    Settings,
    context::{Context, Throttle},
    record,
};
use crate::{
    frame,
    hub::{BackfillBudget, Backfilled, Gap, GapHandle, Position, Unfilled},
    metrics::Metrics,
};

/// How long a metadata request of a reader may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A read that has had neither a record nor an error for this long may have started inside
/// the log's last batch, which some brokers (tansu) answer with nothing: it starts earlier.
const QUIET: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Replayer {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    queue: Mutex<VecDeque<Request>>,
    queued: Notify,
    budget: BackfillBudget,
    metrics: Metrics,
    /// Where the readers' watermark lookups run.
    calls: super::calls::Calls,
}

/// One stream's gap, waiting for a reader.
struct Request {
    user: Arc<str>,
    gap: Gap,
    deadline: Instant,
    reply: oneshot::Sender<Result<Backfilled, Unfilled>>,
    /// What was read for it so far; an error once it no longer fits.
    read: Result<Backfilled, Unfilled>,
}

impl Request {
    fn answer(self, result: Result<Backfilled, Unfilled>) {
        let _ = self.reply.send(result);
    }

    /// Answers with what was read.
    fn finish(self) {
        let _ = self.reply.send(self.read);
    }

    /// Whether anyone still waits for it.
    fn wanted(&self, now: Instant) -> bool {
        !self.reply.is_closed() && self.deadline > now
    }
}

impl Replayer {
    /// Starts `--replay-max-concurrent` readers; each connects on its first gap.
    pub fn start(
        settings: &Settings,
        metrics: Metrics,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: &CancellationToken,
    ) -> std::io::Result<Self> {
        let replayer = Self {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                queue: Mutex::default(),
                queued: Notify::new(),
                budget: BackfillBudget::new(settings.replay_max_bytes),
                metrics,
                calls: super::calls::Calls::start("kafka-replay")?,
            }),
        };
        for n in 0..settings.replay_max_concurrent {
            tasks.spawn(reader(replayer.inner.clone(), n, shutdown.clone()));
        }
        Ok(replayer)
    }

    pub fn budget(&self) -> &BackfillBudget {
        &self.inner.budget
    }

    /// Reads back stream `gap`'s missed records and hands them to it, or a resync when that
    /// can't be done within the bounds. `partitions` is the topic's count, when known.
    pub async fn fill(&self, handle: GapHandle, partitions: Option<usize>) {
        let settings = &self.inner.settings;
        let deadline = Instant::now() + settings.replay_timeout;
        // No such partition: an id from another topic.
        let missing = partitions.is_some_and(|n| handle.last().lane >= n as u64);
        let bounds = async {
            match missing {
                true => Some(Err(Unfilled::Gone)),
                false => handle.bounds().await.map(Ok),
            }
        };
        let result = match tokio::time::timeout_at(deadline, bounds).await {
            // The stream is gone.
            Ok(None) => return,
            Err(_) => Err(Unfilled::Timeout),
            Ok(Some(Err(why))) => Err(why),
            Ok(Some(Ok(gap))) if gap.span() == 0 => Ok(Backfilled::new(&self.inner.budget, 0)),
            Ok(Some(Ok(gap))) if gap.span() > settings.replay_max_records => Err(Unfilled::TooFar),
            Ok(Some(Ok(gap))) => self.read(handle.user(), gap, deadline).await,
        };
        let outcome = match &result {
            Ok(read) => {
                self.inner.metrics.replayed(read.len() as u64);
                "filled"
            }
            Err(why) => why.name(),
        };
        self.inner.metrics.replay(outcome);
        tracing::debug!(user = handle.user(), outcome, "kafka read-back");
        handle.fill(result);
    }

    async fn read(&self, user: &str, gap: Gap, deadline: Instant) -> Result<Backfilled, Unfilled> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            user: Arc::from(user),
            gap,
            deadline,
            reply,
            read: Ok(Backfilled::new(
                &self.inner.budget,
                self.inner.settings.history_len,
            )),
        };
        self.inner.lock().push_back(request);
        self.inner.queued.notify_one();
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            // Shutdown dropped it.
            Ok(Err(_)) => Err(Unfilled::Unavailable),
            Err(_) => Err(Unfilled::Timeout),
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Request>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The oldest queued gap still wanted, with every other queued gap on its partition whose
    /// span together with the rest stays within `--replay-max-records`.
    fn take_batch(&self) -> Vec<Request> {
        let now = Instant::now();
        let mut queue = self.lock();
        queue.retain(|r| r.wanted(now));
        let Some(first) = queue.pop_front() else {
            return Vec::new();
        };
        let lane = first.gap.lane;
        let (mut low, mut high) = (first.gap.after, first.gap.until);
        let mut batch = vec![first];
        let mut rest = VecDeque::with_capacity(queue.len());
        for r in queue.drain(..) {
            let (l, h) = (low.min(r.gap.after), high.max(r.gap.until));
            if r.gap.lane == lane && h - l <= self.settings.replay_max_records {
                (low, high) = (l, h);
                batch.push(r);
            } else {
                rest.push_back(r);
            }
        }
        *queue = rest;
        batch
    }
}

type ReplayConsumer = StreamConsumer<Context>;

/// A reader's consumer and the partitions it was given, all paused but the one being read.
///
/// Partitions are only ever added, never taken away: librdkafka 2.12 can abort
/// (`rd_kafka_assignment_partition_stopped`) when an assignment changes again while an earlier
/// change is still stopping a partition, as an `assign` or `unassign` per read did once the
/// broker had been away. A read moves to its start with a seek instead.
struct Partitions {
    consumer: Arc<ReplayConsumer>,
    topic: String,
    assigned: Vec<i32>,
}

impl Partitions {
    fn list(&self, partition: i32, offset: Option<u64>) -> KafkaResult<TopicPartitionList> {
        let mut list = TopicPartitionList::new();
        match offset {
            Some(o) => {
                list.add_partition_offset(&self.topic, partition, Offset::Offset(o as i64))?
            }
            None => {
                list.add_partition(&self.topic, partition);
            }
        }
        Ok(list)
    }

    /// Fetches `partition` from `offset` on. Records fetched from where it was before are
    /// dropped by librdkafka (a seek starts a new fetch version).
    fn read_from(&mut self, partition: i32, offset: u64) -> KafkaResult<()> {
        if !self.assigned.contains(&partition) {
            self.consumer
                .incremental_assign(&self.list(partition, Some(offset))?)?;
            self.assigned.push(partition);
            return Ok(());
        }
        // Asynchronous (no timeout): it takes effect before the resume queued after it.
        self.consumer.seek(
            &self.topic,
            partition,
            Offset::Offset(offset as i64),
            Duration::ZERO,
        )?;
        self.consumer.resume(&self.list(partition, None)?)
    }

    /// Stops fetching `partition` until the next read of it.
    fn pause(&self, partition: i32) -> KafkaResult<()> {
        self.consumer.pause(&self.list(partition, None)?)
    }
}

/// Settings for a reader: no group membership (partitions are assigned by hand), no commits,
/// and an error rather than a jump when an offset has left the topic.
fn consumer_config(settings: &Settings, n: usize) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", format!("{}-replay", settings.group))
        .set("client.id", format!("{}-replay-{n}", settings.group))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", "100")
        .set("socket.nagle.disable", "true")
        .set("reconnect.backoff.max.ms", "2000");
    config
}

async fn reader(inner: Arc<Inner>, n: usize, shutdown: CancellationToken) {
    let mut partitions: Option<Partitions> = None;
    let errors = Throttle::new(Duration::from_secs(10));
    loop {
        let batch = inner.take_batch();
        if batch.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = inner.queued.notified() => continue,
            }
        }
        if partitions.is_none() {
            let created = consumer_config(&inner.settings, n)
                .create_with_context::<_, ReplayConsumer>(Context::new("replay"));
            match created {
                Ok(c) => {
                    partitions = Some(Partitions {
                        consumer: Arc::new(c),
                        topic: inner.settings.topic.clone(),
                        assigned: Vec::new(),
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kafka read-back: could not create a consumer");
                    for r in batch {
                        r.answer(Err(Unfilled::Unavailable));
                    }
                    continue;
                }
            }
        }
        let Some(reader) = partitions.as_mut() else {
            continue;
        };
        let read = tokio::select! {
            () = shutdown.cancelled() => return,
            read = read_batch(&inner, reader, batch, &errors) => read,
        };
        // Stop fetching until the next batch.
        if let Some(partition) = read
            && let Err(e) = reader.pause(partition)
        {
            tracing::debug!(error = %e, "kafka read-back: pause failed");
        }
    }
}

/// Where a read starts: at `from`, or earlier while the broker answers past it or not at all,
/// 1, 8, 64, ... records back, but never before `earliest`.
struct Start {
    from: u64,
    earliest: u64,
    at: u64,
    back: u64,
}

impl Start {
    fn can_step_back(&self) -> bool {
        self.at > self.earliest
    }

    /// Moves the start further back and returns it.
    fn step_back(&mut self) -> u64 {
        self.at = self.from.saturating_sub(self.back).max(self.earliest);
        self.back = self.back.saturating_mul(8);
        self.at
    }
}

/// Reads one partition once over the span of every gap in `batch`, handing each its user's
/// records as soon as the read passes its end. Returns the partition it fetched from.
async fn read_batch(
    inner: &Inner,
    partitions: &mut Partitions,
    mut batch: Vec<Request>,
    errors: &Throttle,
) -> Option<i32> {
    let settings = &inner.settings;
    let consumer = partitions.consumer.clone();
    let lane = batch[0].gap.lane;
    let Ok(partition) = i32::try_from(lane) else {
        for r in batch {
            r.answer(Err(Unfilled::Gone));
        }
        return None;
    };
    let low = {
        let (consumer, topic) = (consumer.clone(), settings.topic.clone());
        inner
            .calls
            .run(move || consumer.fetch_watermarks(&topic, partition, REQUEST_TIMEOUT))
            .await
    };
    let low = match low {
        Ok(Ok((low, _))) => low,
        Ok(Err(e)) => {
            if errors.allow() {
                tracing::warn!(partition, error = %e, "kafka read-back: no watermarks");
            }
            for r in batch {
                r.answer(Err(Unfilled::Unavailable));
            }
            return None;
        }
        Err(_) => return None,
    };
    // A gap whose first record left the topic can't be filled.
    let (gone, kept): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .partition(|r| (r.gap.after as i64).saturating_add(1) < low);
    for r in gone {
        r.answer(Err(Unfilled::Gone));
    }
    batch = kept;
    let from = batch.iter().map(|r| r.gap.after + 1).min()?;
    let deadline = batch
        .iter()
        .map(|r| r.deadline)
        .max()
        .unwrap_or_else(Instant::now);
    let mut start = Start {
        from,
        // Stepping back reads records no gap needs: at most the bound a gap has.
        earliest: from
            .saturating_sub(settings.replay_max_records)
            .max(low.max(0) as u64),
        at: from,
        back: 1,
    };
    if let Err(e) = partitions.read_from(partition, start.at) {
        tracing::warn!(partition, error = %e, "kafka read-back: assign failed");
        for r in batch {
            r.answer(Err(Unfilled::Unavailable));
        }
        return None;
    }
    // Errors are queued events, one per failed connect and the like: drained at once, or a
    // read after an outage waits out every error the outage queued. Only a flood is slowed.
    let flood = Throttle::up_to(100, Duration::from_secs(1));
    let mut first = true;
    let mut quiet_since_error = true;
    let mut last: Option<i64> = None;
    let mut read = 0u64;
    while !batch.is_empty() {
        let wait = match first && quiet_since_error && start.can_step_back() {
            true => deadline.min(Instant::now() + QUIET),
            false => deadline,
        };
        let message = match tokio::time::timeout_at(wait, consumer.recv()).await {
            Err(_) if wait < deadline => {
                // Nothing at all: the read may have started inside the log's last batch.
                if partitions.read_from(partition, start.step_back()).is_err() {
                    break;
                }
                continue;
            }
            Err(_) => break,
            Ok(Err(e)) => {
                quiet_since_error = false;
                if errors.allow() {
                    tracing::warn!(partition, error = %e, "kafka read-back: consume error");
                }
                if !flood.allow() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
            Ok(Ok(m)) => m,
        };
        let offset = message.offset();
        if message.partition() != partition || offset < start.at as i64 {
            continue;
        }
        // Some brokers (tansu) answer a fetch from inside a batch with the next batch, leaving
        // out the rest of the first: a read that begins past `from` begins again earlier, until
        // it covers `from` or starts at the log's start.
        if std::mem::take(&mut first) && offset > from as i64 && start.can_step_back() {
            first = true;
            if partitions.read_from(partition, start.step_back()).is_err() {
                break;
            }
            continue;
        }
        // Each offset once: the same broker may hand the last batch out again.
        if last.is_some_and(|l| offset <= l) {
            continue;
        }
        last = Some(offset);
        read += 1;
        if offset < from as i64 {
            continue;
        }
        let offset = offset as u64;
        let parsed =
            record::parse_event(message.payload(), settings.max_message, settings.max_frame);
        if let Ok((user, text)) = parsed {
            let position = Position::new(lane, offset);
            let mut event = None;
            for r in batch.iter_mut() {
                if *r.user != *user || offset <= r.gap.after || offset > r.gap.until {
                    continue;
                }
                let event = event
                    .get_or_insert_with(|| frame::message(position.id().as_str(), text))
                    .clone();
                if let Ok(read) = &mut r.read
                    && let Err(why) = read.push(position, event)
                {
                    r.read = Err(why);
                }
            }
        }
        let now = Instant::now();
        let mut open = Vec::with_capacity(batch.len());
        for r in batch {
            if !r.wanted(now) {
                r.answer(Err(Unfilled::Timeout));
            } else if r.read.is_err() || offset >= r.gap.until {
                r.finish();
            } else {
                open.push(r);
            }
        }
        batch = open;
    }
    inner.metrics.replay_read(read);
    for r in batch {
        r.answer(Err(Unfilled::Timeout));
    }
    Some(partition)
}
