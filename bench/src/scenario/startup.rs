//! startup-retention: how long a new ssepush takes from process start to its first live
//! delivery when the topic holds many records older than the history window.
//!
//! Per run: a fresh broker, then N records stamped (CreateTime) an hour before the history
//! window, then `recent` records stamped now, for other users. Then ssepush starts (the clock
//! starts just before the spawn) in a group with no committed offset; as soon as it answers,
//! a stream for user `live` opens, and a record for `live` is produced every 5 ms. The time to
//! the first event on that stream is the start-up time. Runs alternate N = 0 and N = old.
//! The live records produced meanwhile arrive together, so the stream's queue is made long.

use super::records::{Producer, wall_ms};
use super::{median, open_stream, progress};
use crate::procstat::{Binaries, Kind, Server, cpu_times_us};
use crate::sse::Item;
use crate::table::{Row, fmt_num};
use crate::tansu::{Broker, find_tansu};
use anyhow::{Context, Result, ensure};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Sizes for startup-retention.
#[derive(Debug, Clone)]
pub struct Config {
    /// Records older than the history window (the N of the comparison).
    pub old: u64,
    /// Records inside the history window.
    pub recent: u64,
    /// Record message size in bytes (after `username:`).
    pub payload: usize,
    /// Runs of each N, alternating.
    pub runs: usize,
    /// The server's `--history-ttl`, in seconds.
    pub history_ttl_secs: u64,
    pub topic: String,
}

/// One start-up.
#[derive(Debug, Clone)]
pub struct Start {
    pub old: u64,
    /// Seconds the backlog (old and recent) took to produce and acknowledge.
    pub produce_secs: f64,
    /// From spawn to `/healthz` answering.
    pub healthz_secs: f64,
    /// From spawn to the first event on the live stream.
    pub first_live_secs: f64,
    /// Server CPU from its start to the first live event (user + kernel).
    pub cpu_secs: f64,
    pub rss_mib: f64,
}

/// What startup-retention measured: every run, in the order run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub cfg_old: u64,
    pub recent: u64,
    pub starts: Vec<Start>,
}

impl Outcome {
    fn median_of(&self, old: u64, f: impl Fn(&Start) -> f64) -> Option<f64> {
        let v: Vec<f64> = self.starts.iter().filter(|s| s.old == old).map(f).collect();
        median(&v)
    }
}

pub async fn run(bins: &Binaries, cfg: &Config) -> Result<Outcome> {
    let tansu = find_tansu().context("tansu not on PATH (scripts/install-deps.sh installs it)")?;
    let mut starts = Vec::new();
    for run in 0..cfg.runs {
        for old in [0, cfg.old] {
            progress(format!(
                "startup-retention: run {} of {}, N = {old}",
                run + 1,
                cfg.runs
            ));
            let start = one(bins, cfg, &tansu, old).await?;
            progress(format!("startup-retention: {start:?}"));
            starts.push(start);
        }
    }
    Ok(Outcome {
        cfg_old: cfg.old,
        recent: cfg.recent,
        starts,
    })
}

async fn one(bins: &Binaries, cfg: &Config, tansu: &Path, old: u64) -> Result<Start> {
    let broker = Broker::start(tansu, &bins.log_dir, &cfg.topic).await?;
    let mut producer = Producer::backlog(broker.addr, &cfg.topic)?;
    let pad = "x".repeat(cfg.payload.saturating_sub(16));
    // An hour before the window opens, as the server will see it.
    let old_ts = wall_ms() - (cfg.history_ttl_secs as i64 + 3600) * 1000;
    let produce_start = Instant::now();
    for i in 0..old {
        let value = format!("o_{}:{i} {pad}", i % 100_000);
        producer.send(value.as_bytes(), Some(old_ts)).await?;
    }
    for i in 0..cfg.recent {
        let value = format!("r_{}:{i} {pad}", i % 1_000);
        producer.send(value.as_bytes(), Some(wall_ms())).await?;
    }
    let acked = producer.flush(Duration::from_secs(600)).await?;
    let produce_secs = produce_start.elapsed().as_secs_f64();
    ensure!(
        acked == old + cfg.recent,
        "only {acked} of {} records were acknowledged",
        old + cfg.recent
    );
    progress(format!(
        "startup-retention: {old} old + {} recent records produced in {produce_secs:.1} s",
        cfg.recent
    ));
    drop(producer);

    let mut live = Producer::steady(broker.addr, &cfg.topic)?;
    let mut extra = broker.server_args();
    extra.extend([
        "--kafka-group".into(),
        "startup-retention".into(),
        format!("--history-ttl={}s", cfg.history_ttl_secs),
        // The live records pile up while the old ones are skipped; the stream must not be
        // cut for falling behind before the first of them arrives.
        "--queue-len=1000000".into(),
    ]);
    let spawned = Instant::now();
    let server = Server::start(bins, Kind::Ssepush, &extra).await?;
    let healthz_secs = spawned.elapsed().as_secs_f64();
    let mut stream = open_stream(
        server.addr,
        "/v3/sse?username=live",
        Kind::Ssepush,
        65536,
        Duration::from_secs(30),
    )
    .await?;
    // Records for `live` every 5 ms from now on, until the first one arrives.
    let stop = CancellationToken::new();
    let producing = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            let mut k = 0u64;
            while !stop.is_cancelled() {
                tick.tick().await;
                let value = format!("live:{k}");
                live.send(value.as_bytes(), None).await?;
                k += 1;
            }
            anyhow::Ok(())
        })
    };
    let first = tokio::time::timeout(Duration::from_secs(600), async {
        let mut got = false;
        while !got {
            let open = stream
                .read_items(&mut |item| got |= matches!(item, Item::Event(_)))
                .await?;
            ensure!(open || got, "the live stream ended");
        }
        anyhow::Ok(())
    })
    .await;
    let first_live_secs = spawned.elapsed().as_secs_f64();
    stop.cancel();
    let (user_us, sys_us) = cpu_times_us(server.pid())?;
    let rss_mib = server.rss_kib()? as f64 / 1024.0;
    first
        .context("no live event within 600 s")?
        .context("reading the live stream")?;
    producing.await??;
    server.stop().await;
    broker.stop().await;
    Ok(Start {
        old,
        produce_secs,
        healthz_secs,
        first_live_secs,
        cpu_secs: (user_us + sys_us) as f64 / 1e6,
        rss_mib,
    })
}

/// Rows for startup-retention.
pub fn rows(outcome: &Result<Outcome>) -> Vec<Row> {
    const S: &str = "startup-retention";
    let o = match outcome {
        Ok(o) => o,
        Err(err) => return vec![Row::note(S, &format!("failed: {err:#}"), Some(false))],
    };
    let n = fmt_num(o.cfg_old as f64);
    let zero = o.median_of(0, |s| s.first_live_secs);
    let many = o.median_of(o.cfg_old, |s| s.first_live_secs);
    let ratio = zero.zip(many).map(|(z, m)| m / z);
    let mut rows = vec![
        Row::info(
            S,
            &format!(
                "start to first live delivery, N = 0 old + {} recent (s)",
                fmt_num(o.recent as f64)
            ),
            zero,
            None,
        ),
        Row::info(
            S,
            &format!("start to first live delivery, N = {n} old (s)"),
            many,
            None,
        ),
        Row::target(
            S,
            &format!("ratio N = {n} / N = 0"),
            ratio,
            None,
            "<= 1.5",
            ratio.map(|r| r <= 1.5),
        ),
    ];
    for old in [0, o.cfg_old] {
        let label = fmt_num(old as f64);
        rows.push(Row::info(
            S,
            &format!("server CPU to first live delivery, N = {label} (s)"),
            o.median_of(old, |s| s.cpu_secs),
            None,
        ));
        rows.push(Row::info(
            S,
            &format!("start to /healthz, N = {label} (s)"),
            o.median_of(old, |s| s.healthz_secs),
            None,
        ));
    }
    if let Some(p) = o.median_of(o.cfg_old, |s| s.produce_secs) {
        rows.push(Row::info(
            S,
            &format!("producing the N = {n} backlog (records/s)"),
            Some((o.cfg_old + o.recent) as f64 / p.max(1e-9)),
            None,
        ));
    }
    let all: Vec<String> = o
        .starts
        .iter()
        .map(|s| format!("{}:{:.2}", fmt_num(s.old as f64), s.first_live_secs))
        .collect();
    rows.push(Row::note(
        S,
        &format!("every run, N:seconds in order: {}", all.join(" ")),
        None,
    ));
    rows
}
