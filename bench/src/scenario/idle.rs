//! idle: N streams of distinct users held open; open rate and RSS per stream.

use super::{open_stream, percentile, progress};
use crate::procstat::{Binaries, Kind, Server};
use crate::table::Row;
use anyhow::Result;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Sizes for the idle scenario.
#[derive(Debug, Clone)]
pub struct Config {
    /// Streams to open, one user each.
    pub streams: usize,
    /// Opens in flight at once; bounded so the listen backlog is never what is measured.
    pub concurrency: usize,
    /// How long all streams are held (with keep-alives flowing) before checking they are open.
    pub hold: Duration,
}

/// What one idle run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub requested: u64,
    pub opened: u64,
    pub refused: u64,
    /// Streams that ended or failed while being held.
    pub dropped: u64,
    pub open_secs: f64,
    /// 99th percentile time to open one stream, in milliseconds (1 s SYN retries show here).
    pub open_p99_ms: f64,
    pub rss_before_kib: u64,
    pub rss_open_kib: u64,
    pub first_error: Option<String>,
}

impl Outcome {
    fn held(&self) -> u64 {
        self.opened - self.dropped
    }

    fn open_rate(&self) -> f64 {
        self.opened as f64 / self.open_secs.max(1e-9)
    }

    fn rss_per_stream_kib(&self) -> f64 {
        self.rss_open_kib.saturating_sub(self.rss_before_kib) as f64 / self.opened.max(1) as f64
    }
}

/// Runs the idle scenario against one server.
pub async fn run(bins: &Binaries, kind: Kind, cfg: &Config) -> Result<Outcome> {
    let server = Server::start(bins, kind, &[]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before_kib = server.rss_kib()?;
    let addr = server.addr;
    let token = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(cfg.concurrency));
    let dropped = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<u32, String>>();
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    for i in 0..cfg.streams {
        let (token, permits, dropped, tx) =
            (token.clone(), permits.clone(), dropped.clone(), tx.clone());
        tasks.spawn(async move {
            let permit = permits.acquire_owned().await;
            let began = Instant::now();
            let path = format!("/v2/sse?username=idle_{i}");
            let opened = open_stream(addr, &path, kind, 512, Duration::from_secs(30)).await;
            drop(permit);
            let mut stream = match opened {
                Ok(stream) => {
                    let _ = tx.send(Ok(began.elapsed().as_micros() as u32));
                    stream
                }
                Err(err) => {
                    let _ = tx.send(Err(format!("{err:#}")));
                    return;
                }
            };
            let mut ignore = |_| {};
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    read = stream.read_items(&mut ignore) => {
                        if !matches!(read, Ok(true)) {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }
        });
    }
    drop(tx);
    let (mut opened, mut refused, mut first_error) = (0u64, 0u64, None);
    let mut open_latencies = Vec::with_capacity(cfg.streams);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while opened + refused < cfg.streams as u64 {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Ok(latency))) => {
                opened += 1;
                open_latencies.push(latency);
            }
            Ok(Some(Err(err))) => {
                refused += 1;
                first_error.get_or_insert(err);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let open_secs = start.elapsed().as_secs_f64();
    open_latencies.sort_unstable();
    let open_p99_ms = percentile(&open_latencies, 0.99).unwrap_or(f64::NAN) / 1e3;
    let open_max_ms = percentile(&open_latencies, 1.0).unwrap_or(f64::NAN) / 1e3;
    progress(format!(
        "idle/{}: {opened} open, {refused} refused in {open_secs:.1} s \
         (open p99 {open_p99_ms:.1} ms, max {open_max_ms:.1} ms); holding",
        kind.name()
    ));
    tokio::time::sleep(cfg.hold).await;
    let rss_open_kib = server.rss_kib()?;
    let dropped = dropped.load(Ordering::Relaxed);
    token.cancel();
    while tasks.join_next().await.is_some() {}
    server.stop().await;
    Ok(Outcome {
        requested: cfg.streams as u64,
        opened,
        refused: refused + (cfg.streams as u64 - opened - refused),
        dropped,
        open_secs,
        open_p99_ms,
        rss_before_kib,
        rss_open_kib,
        first_error,
    })
}

/// The table rows for idle, ssepush against the baseline.
pub fn rows(ours: &Result<Outcome>, base: &Result<Outcome>) -> Vec<Row> {
    const S: &str = "idle";
    let Ok(o) = ours else {
        return vec![Row::note(
            S,
            &format!("ssepush failed: {:#}", ours.as_ref().err().unwrap()),
            Some(false),
        )];
    };
    let b = base.as_ref().ok();
    let mut rows = vec![
        Row::target(
            S,
            "streams held",
            Some(o.held() as f64),
            b.map(|b| b.held() as f64),
            &format!(">= {}", crate::table::fmt_num(o.requested as f64)),
            Some(o.held() == o.requested),
        ),
        Row::target(
            S,
            "refused + dropped",
            Some((o.refused + o.dropped) as f64),
            b.map(|b| (b.refused + b.dropped) as f64),
            "0",
            Some(o.refused + o.dropped == 0),
        ),
        Row::target(
            S,
            "open rate (streams/s)",
            Some(o.open_rate()),
            b.map(Outcome::open_rate),
            ">= 2,000",
            Some(o.open_rate() >= 2000.0),
        ),
        Row::info(
            S,
            "open latency p99 (ms)",
            Some(o.open_p99_ms),
            b.map(|b| b.open_p99_ms),
        ),
        Row::target(
            S,
            "RSS per idle stream (KiB)",
            Some(o.rss_per_stream_kib()),
            b.map(Outcome::rss_per_stream_kib),
            "<= 8",
            Some(o.rss_per_stream_kib() <= 8.0),
        ),
        Row::info(
            S,
            "RSS before opening (KiB)",
            Some(o.rss_before_kib as f64),
            b.map(|b| b.rss_before_kib as f64),
        ),
    ];
    for (name, outcome) in [("ssepush", Some(o)), ("baseline", b)] {
        if let Some(err) = outcome.and_then(|o| o.first_error.as_ref()) {
            rows.push(Row::note(S, &format!("{name} first refusal: {err}"), None));
        }
    }
    if let Err(err) = base {
        rows.push(Row::note(S, &format!("baseline failed: {err:#}"), None));
    }
    rows
}
