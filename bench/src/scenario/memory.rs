//! memory-traffic: the RSS of an instance that reads a cluster's traffic but serves none of
//! its users: `users` distinct users × `per_user` records each, no streams, with the history
//! budget set (`--history-max-bytes`). The records are produced while the server reads (as a
//! cluster's traffic would arrive), users in rounds (every user's first record, then every
//! user's second, ...). RSS is read when the server has read them all and again after a pause,
//! along with the server's own accounting of its history.

use super::progress;
use super::records::{Producer, RECORDS_READ, probe_consumer, wait_for_metric};
use crate::http::metric;
use crate::procstat::{Binaries, Kind, Server, rss_kib};
use crate::table::{Row, fmt_num};
use crate::tansu::Broker;
use anyhow::{Result, ensure};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Sizes for memory-traffic.
#[derive(Debug, Clone)]
pub struct Config {
    pub users: u64,
    pub per_user: u64,
    /// Record message size in bytes (after `username:`).
    pub payload: usize,
    /// `--history-max-bytes`, in MiB.
    pub budget_mib: u64,
    /// How long to wait after the last record before the second reading.
    pub settle: Duration,
    pub topic: String,
}

/// What memory-traffic measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub records: u64,
    pub read: u64,
    pub budget_mib: u64,
    pub rss_start_mib: f64,
    pub rss_peak_mib: f64,
    pub rss_done_mib: f64,
    pub rss_settled_mib: f64,
    pub history_mib: f64,
    pub history_messages: f64,
    pub evicted: f64,
    pub produce_secs: f64,
    pub read_secs: f64,
}

pub async fn run(bins: &Binaries, cfg: &Config) -> Result<Outcome> {
    let broker = Broker::start_found(&bins.log_dir, &cfg.topic).await?;
    let mut producer = Producer::backlog(broker.addr, &cfg.topic)?;
    let mut extra = broker.server_args();
    extra.push(format!("--history-max-bytes={}MiB", cfg.budget_mib));
    let server = Server::start(bins, Kind::Ssepush, &extra).await?;
    let addr = server.addr;
    probe_consumer(&mut producer, addr, "probe", 1.0, Duration::from_secs(60)).await?;
    let base = metric(addr, RECORDS_READ).await.unwrap_or(0.0);
    let rss_start = server.rss_kib()?;
    progress(format!(
        "memory-traffic: consumer live; RSS {} MiB; producing {} x {} records",
        rss_start / 1024,
        cfg.users,
        cfg.per_user
    ));

    // The peak, sampled every 100 ms while the records arrive.
    let peak = Arc::new(AtomicU64::new(rss_start));
    let sampler = {
        let (peak, pid) = (peak.clone(), server.pid());
        tokio::spawn(async move {
            while let Ok(rss) = rss_kib(pid) {
                peak.fetch_max(rss, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let records = cfg.users * cfg.per_user;
    let pad = "x".repeat(cfg.payload.saturating_sub(20));
    let start = Instant::now();
    for round in 0..cfg.per_user {
        for user in 0..cfg.users {
            let value = format!("m_{user}:{round} {pad}");
            producer.send(value.as_bytes(), None).await?;
        }
    }
    let acked = producer.flush(Duration::from_secs(300)).await?;
    let produce_secs = start.elapsed().as_secs_f64();
    ensure!(
        acked >= records,
        "only {acked} of {records} records were acknowledged"
    );
    let read = wait_for_metric(
        addr,
        RECORDS_READ,
        base + records as f64,
        Duration::from_millis(200),
        Duration::from_secs(20),
        Duration::from_secs(600),
    )
    .await;
    let read_secs = start.elapsed().as_secs_f64();
    let rss_done = server.rss_kib()?;
    progress(format!(
        "memory-traffic: {} records read in {read_secs:.1} s (produced in {produce_secs:.1} s); RSS {} MiB",
        read - base,
        rss_done / 1024
    ));
    tokio::time::sleep(cfg.settle).await;
    let rss_settled = server.rss_kib()?;
    sampler.abort();
    // Where the memory is, for a look afterwards: the mappings, largest resident first.
    save_smaps(server.pid(), &bins.log_dir.join("memory-traffic-smaps.txt"));
    let m = |name: &'static str| async move { metric(addr, name).await.unwrap_or(f64::NAN) };
    let outcome = Outcome {
        records,
        read: (read - base).max(0.0) as u64,
        budget_mib: cfg.budget_mib,
        rss_start_mib: rss_start as f64 / 1024.0,
        rss_peak_mib: peak.load(Ordering::Relaxed) as f64 / 1024.0,
        rss_done_mib: rss_done as f64 / 1024.0,
        rss_settled_mib: rss_settled as f64 / 1024.0,
        history_mib: m("ssepush_history_bytes").await / 1048576.0,
        history_messages: m("ssepush_history_messages{api=\"v3\"}").await,
        evicted: m("ssepush_history_evicted_total").await,
        produce_secs,
        read_secs,
    };
    progress(format!("memory-traffic: {outcome:?}"));
    server.stop().await;
    broker.stop().await;
    Ok(outcome)
}

/// Rows for memory-traffic.
pub fn rows(outcome: &Result<Outcome>) -> Vec<Row> {
    const S: &str = "memory-traffic";
    let o = match outcome {
        Ok(o) => o,
        Err(err) => return vec![Row::note(S, &format!("failed: {err:#}"), Some(false))],
    };
    let limit = (o.budget_mib + 64) as f64;
    vec![
        Row::target(
            S,
            &format!(
                "records read (of {}, no streams)",
                fmt_num(o.records as f64)
            ),
            Some(o.read as f64),
            None,
            &fmt_num(o.records as f64),
            Some(o.read >= o.records),
        ),
        Row::info(
            S,
            "RSS before the records (MiB)",
            Some(o.rss_start_mib),
            None,
        ),
        Row::target(
            S,
            &format!("RSS after reading them (MiB), budget {} MiB", o.budget_mib),
            Some(o.rss_done_mib),
            None,
            &format!("<= {limit}"),
            Some(o.rss_done_mib <= limit),
        ),
        Row::target(
            S,
            "RSS peak while reading (MiB)",
            Some(o.rss_peak_mib),
            None,
            &format!("<= {limit}"),
            Some(o.rss_peak_mib <= limit),
        ),
        Row::info(S, "RSS after a pause (MiB)", Some(o.rss_settled_mib), None),
        Row::info(
            S,
            "history held, as the server counts it (MiB)",
            Some(o.history_mib),
            None,
        ),
        Row::info(S, "history messages held", Some(o.history_messages), None),
        Row::info(S, "evicted by the budget", Some(o.evicted), None),
        Row::info(
            S,
            "records read per second",
            Some(o.read as f64 / o.read_secs.max(1e-9)),
            None,
        ),
    ]
}

/// Writes the process's mappings with their resident sizes, largest first, to `path`
/// (best effort: it is for reading afterwards, not a figure of the table).
fn save_smaps(pid: u32, path: &std::path::Path) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return;
    };
    let mut maps: Vec<(u64, String)> = Vec::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            maps.push((0, line.to_owned()));
        } else if let (Some(rss), Some(last)) = (line.strip_prefix("Rss:"), maps.last_mut()) {
            last.0 = rss
                .trim()
                .trim_end_matches(" kB")
                .trim()
                .parse()
                .unwrap_or(0);
        }
    }
    maps.sort_by_key(|m| std::cmp::Reverse(m.0));
    let total: u64 = maps.iter().map(|m| m.0).sum();
    let mut out = format!("total Rss {total} kB in {} mappings\n", maps.len());
    for (rss, line) in maps.iter().take(40) {
        out.push_str(&format!("{rss:>8} kB  {line}\n"));
    }
    let _ = std::fs::write(path, out);
}
