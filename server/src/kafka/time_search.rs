//! The first record of the history window, found by reading a few records when the broker's
//! answer can't be trusted.
//!
//! A broker without a time index (tansu) answers "the first offset stamped T or later" with the
//! log's start, whatever T. Reading from there and skipping old records costs a new instance
//! the whole topic: 2,000,000 old records took tens of seconds before its first live delivery.
//! So when the record at the broker's answer is older than the window, the window's start is
//! found by bisection over the offsets, reading one record per step (about 21 for 2,000,000).
//!
//! The same broker may report a high watermark short of the log's end (the base offset of the
//! last batch, plus one), so the records of that batch would count as produced after start-up,
//! live whatever their timestamp. The end is found by reading that batch.
//!
//! Bisection assumes timestamps rise with offsets, as they do for one producer's clock or for
//! broker-stamped topics. Where producers' clocks disagree it may land a little off: records
//! before it are not read, those after it are still kept or skipped by their own timestamp
//! until the first recent one ([`super::consumer`]).

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use std::time::{Duration, Instant};

use super::Settings;

/// Below this many records, reading and skipping them is cheaper than searching.
const WORTH_SEARCHING: i64 = 10_000;

/// How long one record may take to arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the history window starts and the log ends, as far as reading tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// The first offset stamped at the cutoff or later.
    pub window: i64,
    /// One past the last record at start-up.
    pub end: i64,
}

/// The first offset in `[from, to)` whose record is stamped `cutoff_ms` or later (`to` if
/// none), given that the broker said `from` and reported the high watermark `to`; and the
/// log's end. Keeps `from` when it is recent already, when the range is small, or when reading
/// fails.
pub async fn first_recent(
    settings: &Settings,
    partition: i32,
    (from, to): (i64, i64),
    cutoff_ms: i64,
) -> Found {
    let told = Found {
        window: from,
        end: to,
    };
    if to <= from {
        return told;
    }
    let settings = settings.clone();
    let searched = tokio::task::spawn_blocking(move || {
        let reader = Reader::new(&settings, partition)?;
        let end = reader.end_after(to - 1)?;
        if end - from < WORTH_SEARCHING {
            return Ok((from, end, 1));
        }
        let (window, steps) = reader.bisect(from, end, cutoff_ms)?;
        Ok::<_, anyhow::Error>((window, end, steps + 1))
    })
    .await;
    match searched {
        Ok(Ok((found, end, steps))) => {
            if end > to {
                tracing::info!(
                    partition,
                    high_watermark = to,
                    end,
                    "kafka: the log goes on past the high watermark the broker reported"
                );
            }
            if found > from {
                tracing::info!(
                    partition,
                    from,
                    found,
                    steps,
                    "kafka: the broker has no time index; found the history window's start by reading {steps} records"
                );
            }
            Found { window: found, end }
        }
        Ok(Err(e)) => {
            tracing::warn!(partition, error = %e, "kafka: searching for the history window's start failed; reading from {from}");
            told
        }
        Err(_) => told,
    }
}

struct Reader {
    consumer: BaseConsumer,
    topic: String,
    partition: i32,
}

impl Reader {
    fn new(settings: &Settings, partition: i32) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", format!("{}-window", settings.group))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "50")
            .create()?;
        Ok(Self {
            consumer,
            topic: settings.topic.clone(),
            partition,
        })
    }

    /// The offset and timestamp of the first record at `offset` or after.
    fn read_at(&self, offset: i64) -> anyhow::Result<(i64, Option<i64>)> {
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&self.topic, self.partition, Offset::Offset(offset))?;
        self.consumer.assign(&assignment)?;
        let deadline = Instant::now() + READ_TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(message) = self.consumer.poll(left) else {
                break;
            };
            let message = message?;
            if message.partition() == self.partition && message.offset() >= offset {
                return Ok((message.offset(), message.timestamp().to_millis()));
            }
        }
        anyhow::bail!("no record at offset {offset} within {READ_TIMEOUT:?}")
    }

    /// One past the last record of the batch holding `last` (the record before the reported
    /// high watermark), or of the first batch after it.
    fn end_after(&self, last: i64) -> anyhow::Result<i64> {
        let (mut end, _) = self.read_at(last)?;
        // The rest of its batch comes in the same fetch, or the next.
        while let Some(message) = self.consumer.poll(Duration::from_millis(500)) {
            let message = message?;
            if message.partition() == self.partition {
                end = end.max(message.offset());
            }
        }
        Ok(end + 1)
    }

    /// Bisection over `[from, to)`; also returns how many records were read.
    fn bisect(&self, from: i64, to: i64, cutoff_ms: i64) -> anyhow::Result<(i64, u32)> {
        let old = |stamp: Option<i64>| stamp.is_some_and(|t| t < cutoff_ms);
        let (first, stamp) = self.read_at(from)?;
        let mut steps = 1;
        if !old(stamp) {
            return Ok((from, steps));
        }
        // Records before `low` are old; the one at `high`, or the first after, is taken for
        // recent.
        let (mut low, mut high) = (first + 1, to);
        while low < high {
            let mid = low + (high - low) / 2;
            let (at, stamp) = self.read_at(mid)?;
            steps += 1;
            if old(stamp) && at < high {
                low = at + 1;
            } else {
                high = mid;
            }
        }
        Ok((low, steps))
    }
}
