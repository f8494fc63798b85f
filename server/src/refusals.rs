//! Requests refused by a limit: a counter per limit for `/metrics`, and a log line at most once
//! a period per limit, so that a client hammering a limit can't flood the log. A line names the
//! client it was written for and how many refusals of that limit went unlogged before it; what
//! is still unlogged when refusals stop is reported by [`Refusals::flush`], which the periodic
//! sweep calls.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use crate::{client::ClientKey, error::AppError};

/// The limits whose refusals are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `--max-streams`, across the server (503).
    Streams,
    /// `--max-streams-per-user`, per user and API version (429).
    StreamsPerUser,
    /// `--max-streams-per-client`, per client across all versions (429).
    StreamsPerClient,
    /// `--publish-rate` and `--publish-burst`, per client across v2 and v3 (429).
    PublishRate,
    /// `--max-body` (413).
    BodyBytes,
    /// `--max-frame-bytes`: the body's encoded event (413).
    FrameBytes,
    /// `--body-timeout` (408).
    BodyTimeout,
    /// `--write-timeout`: a connection closed because its socket took nothing.
    WriteTimeout,
}

impl Limit {
    pub const ALL: [Self; 8] = [
        Self::Streams,
        Self::StreamsPerUser,
        Self::StreamsPerClient,
        Self::PublishRate,
        Self::BodyBytes,
        Self::FrameBytes,
        Self::BodyTimeout,
        Self::WriteTimeout,
    ];

    /// The `limit` label in `/metrics` and in the log.
    pub fn name(self) -> &'static str {
        match self {
            Self::Streams => "streams",
            Self::StreamsPerUser => "streams_per_user",
            Self::StreamsPerClient => "streams_per_client",
            Self::PublishRate => "publish_rate",
            Self::BodyBytes => "body_bytes",
            Self::FrameBytes => "frame_bytes",
            Self::BodyTimeout => "body_timeout",
            Self::WriteTimeout => "write_timeout",
        }
    }
}

/// How often each limit may write a log line.
const PERIOD: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Refusals(Arc<Inner>);

struct Inner {
    start: Instant,
    period_ms: u64,
    counters: [Counter; Limit::ALL.len()],
}

#[derive(Default)]
struct Counter {
    total: AtomicU64,
    /// Refusals since the last line.
    unlogged: AtomicU64,
    /// When the next line may be written, in ms since `start`.
    next_line: AtomicU64,
}

impl Default for Refusals {
    fn default() -> Self {
        Self::with_period(PERIOD)
    }
}

impl Refusals {
    fn with_period(period: Duration) -> Self {
        Self(Arc::new(Inner {
            start: Instant::now(),
            period_ms: period.as_millis() as u64,
            counters: Default::default(),
        }))
    }

    /// Counts `error` if a limit refused the request, and logs it unless this limit has logged
    /// within the period. Gives `error` back.
    pub fn noted(&self, error: AppError, client: ClientKey) -> AppError {
        if let Some(limit) = error.limit() {
            self.note(limit, client, &error);
        }
        error
    }

    /// Counts a refusal by `limit` of `client` (as far as it is known: a connection's peer),
    /// and logs it unless this limit has logged within the period.
    pub fn note(
        &self,
        limit: Limit,
        client: impl std::fmt::Display,
        reason: &dyn std::fmt::Display,
    ) {
        let counter = &self.0.counters[limit as usize];
        counter.total.fetch_add(1, Relaxed);
        if self.claim_line(counter) {
            let before = counter.unlogged.swap(0, Relaxed);
            tracing::warn!(
                limit = limit.name(),
                %client,
                %reason,
                refused_since_last_line = before,
                "request refused by a limit"
            );
        } else {
            counter.unlogged.fetch_add(1, Relaxed);
        }
    }

    /// Whether the caller may write this limit's line now; at most one caller per period is
    /// told yes.
    fn claim_line(&self, counter: &Counter) -> bool {
        let now = self.0.start.elapsed().as_millis() as u64;
        let next = counter.next_line.load(Relaxed);
        now >= next
            && counter
                .next_line
                .compare_exchange(next, now + self.0.period_ms, Relaxed, Relaxed)
                .is_ok()
    }

    /// Logs the refusals no line has reported yet, for limits whose period has passed.
    pub fn flush(&self) {
        for limit in Limit::ALL {
            let counter = &self.0.counters[limit as usize];
            if counter.unlogged.load(Relaxed) > 0 && self.claim_line(counter) {
                let unlogged = counter.unlogged.swap(0, Relaxed);
                if unlogged > 0 {
                    tracing::warn!(
                        limit = limit.name(),
                        refused_since_last_line = unlogged,
                        "requests refused by a limit"
                    );
                }
            }
        }
    }

    /// Refusals by this limit since start-up.
    pub fn total(&self, limit: Limit) -> u64 {
        self.0.counters[limit as usize].total.load(Relaxed)
    }

    #[cfg(test)]
    fn unlogged(&self, limit: Limit) -> u64 {
        self.0.counters[limit as usize].unlogged.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const CLIENT: ClientKey = ClientKey::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn counts_every_refusal_and_logs_once_a_period() {
        let refusals = Refusals::with_period(Duration::from_secs(3600));
        for _ in 0..1000 {
            let e = refusals.noted(AppError::ServerFull(5), CLIENT);
            assert!(matches!(e, AppError::ServerFull(5)));
        }
        assert_eq!(refusals.total(Limit::Streams), 1000);
        // The first was logged; the rest wait for the next line.
        assert_eq!(refusals.unlogged(Limit::Streams), 999);
        assert_eq!(refusals.total(Limit::StreamsPerUser), 0);
        // Other errors are no limit's refusals.
        refusals.noted(AppError::NotFound, CLIENT);
        assert_eq!(refusals.total(Limit::Streams), 1000);
        refusals.flush();
        assert_eq!(refusals.unlogged(Limit::Streams), 999, "period not over");
    }

    #[test]
    fn a_new_period_logs_what_went_unlogged() {
        let refusals = Refusals::with_period(Duration::ZERO);
        refusals.noted(AppError::ServerFull(5), CLIENT);
        refusals.noted(AppError::ServerFull(5), CLIENT);
        assert_eq!(refusals.unlogged(Limit::Streams), 0);
        let refusals = Refusals::with_period(Duration::from_millis(20));
        refusals.noted(AppError::ServerFull(5), CLIENT);
        refusals.noted(AppError::ServerFull(5), CLIENT);
        assert_eq!(refusals.unlogged(Limit::Streams), 1);
        std::thread::sleep(Duration::from_millis(30));
        refusals.flush();
        assert_eq!(refusals.unlogged(Limit::Streams), 0);
        assert_eq!(refusals.total(Limit::Streams), 2);
    }
}
