//! churn: many connect/disconnect cycles; the server's RSS must come back down (no leak).

use super::{open_stream, progress};
use crate::procstat::{Binaries, Kind, Server};
use crate::table::Row;
use anyhow::Result;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Sizes for churn.
#[derive(Debug, Clone)]
pub struct Config {
    /// Measured connect/disconnect cycles.
    pub cycles: u64,
    /// Cycles before the "before" RSS reading, so allocator and runtime warm-up is not
    /// mistaken for a leak.
    pub warmup: u64,
    /// Users the cycles rotate over (reconnecting users, as in real churn).
    pub users: u64,
    /// Cycles in flight at once.
    pub concurrency: usize,
    /// Wait after the last cycle before reading RSS, for the server to reap closed streams.
    pub settle: Duration,
}

/// What one churn run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub cycles: u64,
    pub failures: u64,
    pub per_sec: f64,
    pub rss_cold_kib: u64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub first_error: Option<String>,
}

impl Outcome {
    fn growth_pct(&self) -> f64 {
        (self.rss_after_kib as f64 - self.rss_before_kib as f64) * 100.0
            / self.rss_before_kib.max(1) as f64
    }
}

/// Runs churn against one server.
pub async fn run(bins: &Binaries, kind: Kind, cfg: &Config) -> Result<Outcome> {
    let server = Server::start(bins, kind, &[]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_cold_kib = server.rss_kib()?;
    let first_error = Arc::new(Mutex::new(None));
    cycles(server.addr, kind, cfg, 0, cfg.warmup, &first_error).await;
    tokio::time::sleep(cfg.settle).await;
    let rss_before_kib = server.rss_kib()?;
    let start = Instant::now();
    let failures = cycles(server.addr, kind, cfg, cfg.warmup, cfg.cycles, &first_error).await;
    let per_sec = cfg.cycles as f64 / start.elapsed().as_secs_f64();
    tokio::time::sleep(cfg.settle).await;
    let rss_after_kib = server.rss_kib()?;
    server.stop().await;
    let first_error = first_error.lock().unwrap().take();
    progress(format!(
        "churn/{}: {} cycles at {per_sec:.0}/s, {failures} failed, RSS {rss_before_kib} -> {rss_after_kib} KiB",
        kind.name(),
        cfg.cycles
    ));
    Ok(Outcome {
        cycles: cfg.cycles,
        failures,
        per_sec,
        rss_cold_kib,
        rss_before_kib,
        rss_after_kib,
        first_error,
    })
}

/// Runs `count` open-then-close cycles from `concurrency` workers; returns the failures.
async fn cycles(
    addr: SocketAddr,
    kind: Kind,
    cfg: &Config,
    offset: u64,
    count: u64,
    first_error: &Arc<Mutex<Option<String>>>,
) -> u64 {
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut workers = JoinSet::new();
    for _ in 0..cfg.concurrency {
        let (next, first_error, users) = (next.clone(), first_error.clone(), cfg.users.max(1));
        workers.spawn(async move {
            let mut failures = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || Instant::now() > deadline {
                    return failures;
                }
                let path = format!("/v2/sse?username=churn_{}", (offset + i) % users);
                if let Err(err) = open_stream(addr, &path, kind, 512, Duration::from_secs(10)).await
                {
                    failures += 1;
                    first_error
                        .lock()
                        .unwrap()
                        .get_or_insert_with(|| format!("{err:#}"));
                }
                // Dropping the stream closes the connection: the disconnect half of the cycle.
            }
        });
    }
    let mut failures = 0;
    while let Some(result) = workers.join_next().await {
        failures += result.unwrap_or(0);
    }
    // Cycles skipped by the deadline count as failures too.
    failures + count.saturating_sub(next.load(Ordering::Relaxed).min(count))
}

/// Rows for churn, ssepush against the baseline.
pub fn rows(ours: &Result<Outcome>, base: &Result<Outcome>) -> Vec<Row> {
    const S: &str = "churn";
    let Ok(o) = ours else {
        return vec![Row::note(
            S,
            &format!("ssepush failed: {:#}", ours.as_ref().err().unwrap()),
            Some(false),
        )];
    };
    let b = base.as_ref().ok();
    let mut rows = vec![
        Row::info(S, "cycles/s", Some(o.per_sec), b.map(|b| b.per_sec)),
        Row::target(
            S,
            &format!(
                "failed cycles (of {})",
                crate::table::fmt_num(o.cycles as f64)
            ),
            Some(o.failures as f64),
            b.map(|b| b.failures as f64),
            "0",
            Some(o.failures == 0),
        ),
        Row::info(
            S,
            "RSS cold (KiB)",
            Some(o.rss_cold_kib as f64),
            b.map(|b| b.rss_cold_kib as f64),
        ),
        Row::info(
            S,
            "RSS before, after warm-up (KiB)",
            Some(o.rss_before_kib as f64),
            b.map(|b| b.rss_before_kib as f64),
        ),
        Row::info(
            S,
            "RSS after (KiB)",
            Some(o.rss_after_kib as f64),
            b.map(|b| b.rss_after_kib as f64),
        ),
        Row::target(
            S,
            "RSS growth (%)",
            Some(o.growth_pct()),
            b.map(Outcome::growth_pct),
            "<= 10",
            Some(o.growth_pct() <= 10.0),
        ),
    ];
    for (name, outcome) in [("ssepush", Some(o)), ("baseline", b)] {
        if let Some(err) = outcome.and_then(|o| o.first_error.as_ref()) {
            rows.push(Row::note(S, &format!("{name} first failure: {err}"), None));
        }
    }
    if let Err(err) = base {
        rows.push(Row::note(S, &format!("baseline failed: {err:#}"), None));
    }
    rows
}
