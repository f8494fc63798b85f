//! wide: one user with many streams (tabs, devices), a steady message rate; the cost of each
//! delivery when one message fans out to every stream of a user.

use super::{message_body, now_us, open_stream, parse_body, percentile, progress, wait_for_count};
use crate::http::Publisher;
use crate::procstat::{Binaries, CpuMark, Kind, Server};
use crate::sse::Item;
use crate::table::Row;
use anyhow::{Result, bail};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Sizes for wide.
#[derive(Debug, Clone)]
pub struct Config {
    /// Streams of the one user.
    pub streams: usize,
    /// Messages per second.
    pub rate: u64,
    /// Seconds of publishing.
    pub secs: u64,
    /// Message body size in bytes.
    pub payload: usize,
    /// Stream opens in flight at once.
    pub concurrency: usize,
}

/// What the wide run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub expected: u64,
    pub deliveries: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub per_sec: f64,
    pub cpu_us_per_delivery: f64,
    /// Kernel share of that CPU, in percent.
    pub sys_pct: f64,
    pub p99_us: f64,
}

/// What one stream saw.
struct StreamTally {
    counts: Vec<u8>,
    latencies: Vec<u32>,
}

/// Runs wide against `ssepush` (the baseline allows one stream per user, so it has no run).
pub async fn run(bins: &Binaries, cfg: &Config) -> Result<Outcome> {
    let extra = [
        "--max-streams-per-user".to_string(),
        cfg.streams.to_string(),
    ];
    let server = Server::start(bins, Kind::Ssepush, &extra).await?;
    let addr = server.addr;
    let messages = cfg.rate * cfg.secs;
    let received = Arc::new(AtomicU64::new(0));
    let last_receive = Arc::new(AtomicU64::new(0));
    let token = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(cfg.concurrency));
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let mut receivers = JoinSet::new();
    for _ in 0..cfg.streams {
        let (received, last_receive, token, permits, opened_tx) = (
            received.clone(),
            last_receive.clone(),
            token.clone(),
            permits.clone(),
            opened_tx.clone(),
        );
        receivers.spawn(async move {
            let mut tally = StreamTally {
                counts: vec![0; messages as usize],
                latencies: Vec::new(),
            };
            let permit = permits.acquire_owned().await;
            let opened = open_stream(
                addr,
                "/v2/sse?username=wide",
                Kind::Ssepush,
                4096,
                Duration::from_secs(30),
            )
            .await;
            drop(permit);
            let mut stream = match opened {
                Ok(stream) => {
                    let _ = opened_tx.send(Ok(()));
                    stream
                }
                Err(err) => {
                    let _ = opened_tx.send(Err(format!("{err:#}")));
                    return tally;
                }
            };
            loop {
                let mut on_item = |item| {
                    let Item::Event(event) = item else { return };
                    let Some((seq, sent)) = parse_body(&event.data) else {
                        return;
                    };
                    let now = now_us();
                    if let Some(count) = tally.counts.get_mut(seq as usize) {
                        *count = count.saturating_add(1);
                    }
                    tally
                        .latencies
                        .push(now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
                    received.fetch_add(1, Ordering::Relaxed);
                    last_receive.fetch_max(now, Ordering::Relaxed);
                };
                let read = tokio::select! {
                    () = token.cancelled() => None,
                    read = stream.read_items(&mut on_item) => Some(read),
                };
                if !matches!(read, Some(Ok(true))) {
                    return tally;
                }
            }
        });
    }
    drop(opened_tx);
    for _ in 0..cfg.streams {
        match tokio::time::timeout(Duration::from_secs(120), opened_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(err))) => bail!("opening a stream failed: {err}"),
            Ok(None) | Err(_) => bail!("opening streams timed out"),
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let cpu = CpuMark::now(server.pid())?;
    let start_us = now_us();
    let mut publisher = Publisher::new(addr);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / cfg.rate.max(1) as f64));
    let mut failed_posts = 0;
    for seq in 0..messages {
        ticker.tick().await;
        let body = message_body(seq, cfg.payload);
        let post = publisher.post("/v2/message?username=wide", body.as_bytes());
        if !matches!(
            tokio::time::timeout(Duration::from_secs(10), post).await,
            Ok(Ok((200, _)))
        ) {
            failed_posts += 1;
        }
    }
    let expected = messages * cfg.streams as u64;
    wait_for_count(
        &received,
        expected,
        Duration::from_secs(3),
        Duration::from_secs(60),
    )
    .await;
    let cpu = cpu.since(server.pid())?;
    token.cancel();
    let (mut deliveries, mut duplicated) = (0u64, 0u64);
    let mut latencies = Vec::new();
    while let Some(tally) = receivers.join_next().await {
        let tally = tally?;
        for &n in &tally.counts {
            deliveries += u64::from(n.min(1));
            duplicated += u64::from(n.saturating_sub(1));
        }
        latencies.extend(tally.latencies);
    }
    server.stop().await;
    latencies.sort_unstable();
    let span_s = last_receive
        .load(Ordering::Relaxed)
        .saturating_sub(start_us) as f64
        / 1e6;
    let outcome = Outcome {
        expected,
        deliveries,
        lost: expected - deliveries,
        duplicated,
        per_sec: deliveries as f64 / span_s.max(1e-9),
        cpu_us_per_delivery: cpu.total_us() as f64 / deliveries.max(1) as f64,
        sys_pct: cpu.sys_pct(),
        p99_us: percentile(&latencies, 0.99).unwrap_or(f64::NAN),
    };
    progress(format!(
        "wide: {deliveries}/{expected} deliveries ({failed_posts} failed POSTs), {:.2} us CPU each",
        outcome.cpu_us_per_delivery
    ));
    Ok(outcome)
}

/// Rows for wide; the baseline column is n/a.
pub fn rows(ours: &Result<Outcome>) -> Vec<Row> {
    const S: &str = "wide";
    match ours {
        Err(err) => vec![Row::note(
            S,
            &format!("ssepush failed: {err:#}"),
            Some(false),
        )],
        Ok(o) => vec![
            Row::info(S, "deliveries/s", Some(o.per_sec), None),
            Row::target(
                S,
                "server CPU per delivery (us)",
                Some(o.cpu_us_per_delivery),
                None,
                "<= 3",
                Some(o.cpu_us_per_delivery <= 3.0),
            ),
            Row::info(S, "server kernel share of CPU (%)", Some(o.sys_pct), None),
            Row::info(S, "p99 latency (us)", Some(o.p99_us), None),
            Row::zero(S, "lost", o.lost),
            Row::zero(S, "duplicated", o.duplicated),
        ],
    }
}
