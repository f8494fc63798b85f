//! drain: N streams on instance A, SIGTERM to A, and every client comes back to instance B
//! after the `retry:` A told it, as a browser would. The histogram of reconnect times B sees
//! shows whether A's clients return in a burst or spread out.

use super::{Kind, open_stream, progress};
use crate::http::SseStream;
use crate::procstat::{Binaries, Server};
use crate::sse::Item;
use crate::table::Row;
use anyhow::{Result, bail};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

#[derive(Debug, Clone)]
pub struct Config {
    pub streams: usize,
    pub concurrency: usize,
}

/// One run: reconnect times after the SIGTERM, in milliseconds, sorted.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub drain: Duration,
    pub reconnects_ms: Vec<u32>,
    pub failed: usize,
}

const BUCKET_MS: u32 = 250;

impl Outcome {
    /// The most reconnects B saw in any 100 ms.
    fn peak_per_100ms(&self) -> usize {
        let t = &self.reconnects_ms;
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..t.len() {
            while t[hi] - t[lo] >= 100 {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    fn histogram(&self) -> String {
        let Some(&last) = self.reconnects_ms.last() else {
            return "  (no reconnects)\n".into();
        };
        let buckets = (last / BUCKET_MS + 1) as usize;
        let mut counts = vec![0usize; buckets];
        for t in &self.reconnects_ms {
            counts[(t / BUCKET_MS) as usize] += 1;
        }
        let widest = counts.iter().copied().max().unwrap_or(1).max(1);
        let mut out = String::new();
        for (i, n) in counts.iter().enumerate() {
            let from = i as f64 * f64::from(BUCKET_MS) / 1000.0;
            let bar = "#".repeat(n * 50 / widest);
            out.push_str(&format!(
                "  {from:5.2}-{:5.2} s {n:6} {bar}\n",
                from + f64::from(BUCKET_MS) / 1000.0
            ));
        }
        out
    }
}

/// Opens a stream and reads up to its `retry:`, which says how long the client waits before
/// it reconnects.
async fn open_with_retry(server: std::net::SocketAddr, path: &str) -> Result<(SseStream, u64)> {
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut stream = SseStream::open(server, path, "", 512).await?;
        let mut retry = None;
        while retry.is_none() {
            let open = stream
                .read_items(&mut |item| {
                    if let Item::Retry(ms) = item {
                        retry = Some(ms);
                    }
                })
                .await?;
            if !open && retry.is_none() {
                bail!("stream ended before its retry:");
            }
        }
        Ok((stream, retry.unwrap_or(2000)))
    })
    .await?
}

async fn run_once(bins: &Binaries, cfg: &Config, drain: Duration) -> Result<Outcome> {
    let drain_arg = format!("--drain={}ms", drain.as_millis());
    let a = Server::start(bins, Kind::Ssepush, &[drain_arg]).await?;
    let b = Server::start(bins, Kind::Ssepush, &[]).await?;
    let (a_addr, b_addr) = (a.addr, b.addr);
    let (signalled_tx, signalled) = watch::channel(None::<Instant>);
    let opens = Arc::new(Semaphore::new(cfg.concurrency));
    let (ready_tx, mut ready) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let mut tasks = JoinSet::new();
    for i in 0..cfg.streams {
        let (opens, ready_tx, mut signalled) = (opens.clone(), ready_tx.clone(), signalled.clone());
        tasks.spawn(async move {
            let path = format!("/v2/sse?username=drain_{i}");
            let permit = opens.acquire_owned().await;
            let opened = open_with_retry(a_addr, &path).await;
            drop(permit);
            let Ok((mut stream, retry_ms)) = opened else {
                let _ = ready_tx.send(false);
                return None;
            };
            let _ = ready_tx.send(true);
            // Until A ends the stream (a clean end or a reset, either way the browser retries).
            while let Ok(true) = stream.read_items(&mut |_| {}).await {}
            tokio::time::sleep(Duration::from_millis(retry_ms)).await;
            let back =
                open_stream(b_addr, &path, Kind::Ssepush, 512, Duration::from_secs(30)).await;
            let since = signalled
                .wait_for(Option::is_some)
                .await
                .ok()?
                .unwrap_or_else(Instant::now);
            back.ok().map(|_stream| since.elapsed().as_millis() as u32)
        });
    }
    drop(ready_tx);
    let mut opened = 0;
    for _ in 0..cfg.streams {
        match ready.recv().await {
            Some(ok) => opened += usize::from(ok),
            None => break,
        }
    }
    if opened < cfg.streams {
        bail!("only {opened} of {} streams opened on A", cfg.streams);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = signalled_tx.send(Some(Instant::now()));
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &a.pid().to_string()])
        .status()
        .await?;
    if !status.success() {
        bail!("kill -TERM failed");
    }
    let mut reconnects_ms = Vec::with_capacity(cfg.streams);
    let mut failed = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        match joined {
            Ok(Some(ms)) => reconnects_ms.push(ms),
            _ => failed += 1,
        }
    }
    failed += tasks.len();
    tasks.abort_all();
    reconnects_ms.sort_unstable();
    a.stop().await;
    b.stop().await;
    Ok(Outcome {
        drain,
        reconnects_ms,
        failed,
    })
}

/// Runs with the given drain and with none, for contrast.
pub async fn run(bins: &Binaries, cfg: &Config, drain: Duration) -> Result<Vec<Outcome>> {
    let mut outcomes = Vec::new();
    for d in [Duration::ZERO, drain] {
        let o = run_once(bins, cfg, d).await?;
        progress(format!(
            "drain/--drain {:?}: {} reconnects to B, {} failed, busiest 100 ms had {}; by time since SIGTERM:\n{}",
            d,
            o.reconnects_ms.len(),
            o.failed,
            o.peak_per_100ms(),
            o.histogram()
        ));
        outcomes.push(o);
    }
    Ok(outcomes)
}

pub fn rows(outcomes: &Result<Vec<Outcome>>) -> Vec<Row> {
    const S: &str = "drain";
    let Ok(outcomes) = outcomes else {
        let e = outcomes
            .as_ref()
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        return vec![Row::note(S, &format!("failed: {e}"), Some(false))];
    };
    let mut rows = Vec::new();
    for o in outcomes {
        let pct = |q: f64| {
            let t = &o.reconnects_ms;
            t.get(((t.len() as f64 - 1.0) * q) as usize)
                .map(|ms| f64::from(*ms) / 1000.0)
        };
        let d = format!("--drain {}s", o.drain.as_secs_f64());
        rows.push(Row::info(
            S,
            &format!("reconnects in the busiest 100 ms ({d})"),
            Some(o.peak_per_100ms() as f64),
            None,
        ));
        rows.push(Row::info(
            S,
            &format!("reconnect time p1 (s, {d})"),
            pct(0.01),
            None,
        ));
        rows.push(Row::info(
            S,
            &format!("reconnect time p99 (s, {d})"),
            pct(0.99),
            None,
        ));
        rows.push(Row::info(
            S,
            &format!(
                "clients not back (of {}, {d})",
                o.reconnects_ms.len() + o.failed
            ),
            Some(o.failed as f64),
            None,
        ));
    }
    rows
}
