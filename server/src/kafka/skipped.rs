//! Log lines for bad records, throttled per partition: a topic full of them must not flood the
//! log. The counter in `/metrics` stays exact; this only decides what is written.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::record::BadRecord;

/// Bad records logged one by one per partition and period; the rest are counted.
const LOGGED_PER_PERIOD: u32 = 5;

pub struct SkippedLog {
    period: Duration,
    since: Instant,
    partitions: HashMap<i32, Counts>,
}

#[derive(Default)]
struct Counts {
    logged: u32,
    muted: u64,
}

impl SkippedLog {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            since: Instant::now(),
            partitions: HashMap::new(),
        }
    }

    /// Notes a skipped record; returns whether it was logged on its own.
    pub fn record(&mut self, partition: i32, offset: i64, why: &BadRecord) -> bool {
        self.flush();
        let counts = self.partitions.entry(partition).or_default();
        if counts.logged < LOGGED_PER_PERIOD {
            counts.logged += 1;
            tracing::warn!(partition, offset, reason = %why, "skipping bad kafka record");
            if counts.logged == LOGGED_PER_PERIOD {
                tracing::warn!(
                    partition,
                    "more bad kafka records on this partition are only counted for now"
                );
            }
            return true;
        }
        counts.muted += 1;
        false
    }

    /// Reports the counts of a period that has ended.
    pub fn flush(&mut self) {
        if self.since.elapsed() < self.period {
            return;
        }
        self.since = Instant::now();
        for (partition, counts) in self.partitions.drain() {
            if counts.muted > 0 {
                tracing::warn!(
                    partition,
                    skipped = counts.muted,
                    period = ?self.period,
                    "skipped more bad kafka records than were logged"
                );
            }
        }
    }

    #[cfg(test)]
    fn muted(&self, partition: i32) -> u64 {
        self.partitions.get(&partition).map_or(0, |c| c.muted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_few_per_partition_then_counts() {
        let mut log = SkippedLog::new(Duration::from_secs(3600));
        let logged = (0..2000)
            .filter(|&i| log.record(0, i, &BadRecord::NoColon))
            .count();
        assert_eq!(logged, LOGGED_PER_PERIOD as usize);
        assert_eq!(log.muted(0), 2000 - u64::from(LOGGED_PER_PERIOD));
        assert!(
            log.record(1, 0, &BadRecord::NoColon),
            "partitions are apart"
        );
    }

    #[test]
    fn a_new_period_logs_again() {
        let mut log = SkippedLog::new(Duration::ZERO);
        for i in 0..100 {
            assert!(log.record(0, i, &BadRecord::NoColon));
        }
    }
}
