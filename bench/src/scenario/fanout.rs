//! fanout-http: one stream per user, messages POSTed by concurrent keep-alive publishers;
//! throughput, send-to-receive latency, server CPU per delivery, loss and duplication.

use super::{
    median, message_body, now_us, open_stream, parse_body, percentile, progress, wait_for_count,
};
use crate::http::{Publisher, SseStream};
use crate::procstat::{Binaries, CpuMark, Kind, Server};
use crate::sse::Item;
use crate::table::Row;
use anyhow::{Result, bail};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Sizes for fanout-http.
#[derive(Debug, Clone)]
pub struct Config {
    /// Users, each with one open stream.
    pub users: usize,
    /// Messages in total, spread round robin over the users.
    pub messages: u64,
    /// Concurrent publishers, each on its own keep-alive connection.
    pub publishers: usize,
    /// Message body size in bytes.
    pub payload: usize,
    /// Runs per server, alternating ssepush and baseline.
    pub runs: usize,
    /// Stream opens in flight at once.
    pub concurrency: usize,
}

/// What one fanout-http run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// POSTs answered 200.
    pub sent: u64,
    pub failed_posts: u64,
    /// Distinct messages received.
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Streams that ended and were reopened (with `Last-Event-ID`).
    pub reconnects: u64,
    pub per_sec: f64,
    pub cpu_us_per_msg: f64,
    /// Kernel share of that CPU, in percent.
    pub sys_pct: f64,
    /// The load generator's own CPU per delivered message, over the same window: when it
    /// nears the machine's spare capacity, the generator rather than the server sets the pace.
    pub loadgen_us_per_msg: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

/// Shared receive-side bookkeeping.
struct Tally {
    /// Receipts per sequence number, saturating at 255.
    seen: Vec<AtomicU8>,
    received: AtomicU64,
    last_receive_us: AtomicU64,
    reconnects: AtomicU64,
}

/// Authorization for a run: the server's secret and the tokens the clients send, made by
/// `ssepush token` as a user would.
#[derive(Debug, Clone)]
pub struct Tokens {
    secret: String,
    /// May read every stream; sent as the `access_token` query parameter, as a browser does.
    read: String,
    /// May publish to everyone; sent in the `Authorization` header.
    publish: String,
}

impl Tokens {
    pub fn mint(bins: &Binaries) -> Result<Self> {
        let secret = format!("bench-secret-{:032x}", std::process::id());
        let sign = |args: &[&str]| -> Result<String> {
            let out = std::process::Command::new(&bins.ssepush)
                .arg("token")
                .args(args)
                .args(["--ttl", "1h", "--auth-secret", &secret])
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "ssepush token: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(String::from_utf8(out.stdout)?.trim().to_owned())
        };
        Ok(Self {
            read: sign(&["--subscribe", "*"])?,
            publish: sign(&["--publish", "*"])?,
            secret,
        })
    }
}

/// Runs fanout-http once against one server, with authorization on when `tokens` are given.
pub async fn run(
    bins: &Binaries,
    kind: Kind,
    cfg: &Config,
    tokens: Option<&Tokens>,
) -> Result<Outcome> {
    let extra: Vec<String> = match tokens {
        Some(t) => vec!["--auth-secret".into(), t.secret.clone()],
        None => Vec::new(),
    };
    let server = Server::start(bins, kind, &extra).await?;
    let query_token = tokens.map_or(String::new(), |t| format!("&access_token={}", t.read));
    let publish_token = tokens.map(|t| t.publish.clone());
    let addr = server.addr;
    let tally = Arc::new(Tally {
        seen: (0..cfg.messages).map(|_| AtomicU8::new(0)).collect(),
        received: AtomicU64::new(0),
        last_receive_us: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
    });
    let token = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(cfg.concurrency));
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let mut receivers = JoinSet::new();
    for user in 0..cfg.users {
        let (tally, token, permits, opened_tx, query_token) = (
            tally.clone(),
            token.clone(),
            permits.clone(),
            opened_tx.clone(),
            query_token.clone(),
        );
        receivers.spawn(async move {
            let path = format!("/v2/sse?username=fan_{user}{query_token}");
            let permit = permits.acquire_owned().await;
            let first = open_stream(addr, &path, kind, 16 * 1024, Duration::from_secs(30)).await;
            drop(permit);
            let stream = match first {
                Ok(stream) => {
                    let _ = opened_tx.send(Ok(()));
                    stream
                }
                Err(err) => {
                    let _ = opened_tx.send(Err(format!("{err:#}")));
                    return Vec::new();
                }
            };
            receive(stream, addr, &path, &tally, &token).await
        });
    }
    drop(opened_tx);
    for _ in 0..cfg.users {
        match tokio::time::timeout(Duration::from_secs(120), opened_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(err))) => bail!("opening a stream failed: {err}"),
            Ok(None) | Err(_) => bail!("opening streams timed out"),
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let cpu = CpuMark::now(server.pid())?;
    let own_cpu = CpuMark::now(std::process::id())?;
    let start_us = now_us();
    let next_seq = Arc::new(AtomicU64::new(0));
    let failed: Arc<Vec<AtomicU8>> =
        Arc::new((0..cfg.messages).map(|_| AtomicU8::new(0)).collect());
    let mut publishers = JoinSet::new();
    for _ in 0..cfg.publishers {
        let (next_seq, failed, cfg) = (next_seq.clone(), failed.clone(), cfg.clone());
        let publish_token = publish_token.clone();
        publishers.spawn(async move {
            let mut publisher = match &publish_token {
                Some(token) => Publisher::with_token(addr, token),
                None => Publisher::new(addr),
            };
            let mut errors = 0u64;
            loop {
                let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                if seq >= cfg.messages {
                    return errors;
                }
                let path = format!("/v2/message?username=fan_{}", seq % cfg.users as u64);
                let body = message_body(seq, cfg.payload);
                let ok = matches!(
                    tokio::time::timeout(
                        Duration::from_secs(10),
                        publisher.post(&path, body.as_bytes())
                    )
                    .await,
                    Ok(Ok((200, _)))
                );
                if !ok {
                    failed[seq as usize].store(1, Ordering::Relaxed);
                    errors += 1;
                }
            }
        });
    }
    let mut failed_posts = 0;
    while let Some(errors) = publishers.join_next().await {
        failed_posts += errors?;
    }
    let sent = cfg.messages - failed_posts;
    let drained = wait_for_count(
        &tally.received,
        sent,
        Duration::from_secs(3),
        Duration::from_secs(60),
    )
    .await;
    let cpu = cpu.since(server.pid())?;
    let own_cpu = own_cpu.since(std::process::id())?;
    token.cancel();
    let mut latencies = Vec::with_capacity(cfg.messages as usize);
    while let Some(part) = receivers.join_next().await {
        latencies.extend(part?);
    }
    server.stop().await;

    let (mut delivered, mut lost, mut duplicated) = (0, 0, 0);
    for (seen, failed) in tally.seen.iter().zip(failed.iter()) {
        let n = u64::from(seen.load(Ordering::Relaxed));
        if n > 0 {
            delivered += 1;
            duplicated += n - 1;
        } else if failed.load(Ordering::Relaxed) == 0 {
            lost += 1;
        }
    }
    latencies.sort_unstable();
    let span_s = tally
        .last_receive_us
        .load(Ordering::Relaxed)
        .saturating_sub(start_us) as f64
        / 1e6;
    let outcome = Outcome {
        sent,
        failed_posts,
        delivered,
        lost,
        duplicated,
        reconnects: tally.reconnects.load(Ordering::Relaxed),
        per_sec: delivered as f64 / span_s.max(1e-9),
        cpu_us_per_msg: cpu.total_us() as f64 / delivered.max(1) as f64,
        sys_pct: cpu.sys_pct(),
        loadgen_us_per_msg: own_cpu.total_us() as f64 / delivered.max(1) as f64,
        p50_us: percentile(&latencies, 0.5).unwrap_or(f64::NAN),
        p99_us: percentile(&latencies, 0.99).unwrap_or(f64::NAN),
        p999_us: percentile(&latencies, 0.999).unwrap_or(f64::NAN),
    };
    progress(format!(
        "fanout-http/{}: {delivered}/{sent} delivered{} at {:.0}/s, {:.2} us CPU/msg, p99 {} us",
        kind.name(),
        if drained { "" } else { " (not drained)" },
        outcome.per_sec,
        outcome.cpu_us_per_msg,
        outcome.p99_us
    ));
    Ok(outcome)
}

/// Reads a user's stream until cancelled, reopening it with `Last-Event-ID` when the server
/// closes it (as a browser would). Returns the latencies seen, in microseconds.
async fn receive(
    mut stream: SseStream,
    addr: std::net::SocketAddr,
    path: &str,
    tally: &Tally,
    token: &CancellationToken,
) -> Vec<u32> {
    let mut latencies = Vec::new();
    let mut last_id = String::new();
    let mut reopen_budget = 1000;
    loop {
        let mut on_item = |item| {
            if let Item::Event(event) = item {
                let now = now_us();
                if let Some((seq, sent)) = parse_body(&event.data) {
                    latencies.push(now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
                    if let Some(seen) = tally.seen.get(seq as usize) {
                        let _ = seen.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                            n.checked_add(1)
                        });
                    }
                    tally.received.fetch_add(1, Ordering::Relaxed);
                    tally.last_receive_us.fetch_max(now, Ordering::Relaxed);
                }
                last_id = event.last_event_id;
            }
        };
        let read = tokio::select! {
            () = token.cancelled() => None,
            read = stream.read_items(&mut on_item) => Some(read),
        };
        let Some(read) = read else { return latencies };
        if matches!(read, Ok(true)) {
            continue;
        }
        // The stream ended: reopen, resuming after the last id, a bounded number of times.
        loop {
            if reopen_budget == 0 || token.is_cancelled() {
                return latencies;
            }
            reopen_budget -= 1;
            tally.reconnects.fetch_add(1, Ordering::Relaxed);
            match SseStream::open(addr, path, &last_id, 16 * 1024).await {
                Ok(s) => {
                    stream = s;
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// Fanout rows: medians over the runs, loss and duplication summed over them.
pub fn rows(ours: &[Result<Outcome>], base: &[Result<Outcome>]) -> Vec<Row> {
    const S: &str = "fanout-http";
    let ok = |runs: &[Result<Outcome>]| {
        runs.iter()
            .filter_map(|r| r.as_ref().ok())
            .cloned()
            .collect::<Vec<_>>()
    };
    let (o, b) = (ok(ours), ok(base));
    let med =
        |runs: &[Outcome], f: fn(&Outcome) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let sum = |runs: &[Outcome], f: fn(&Outcome) -> u64| {
        (!runs.is_empty()).then(|| runs.iter().map(f).sum::<u64>() as f64)
    };
    let mut rows = Vec::new();
    if o.is_empty() {
        rows.push(Row::note(S, "ssepush failed every run", Some(false)));
    } else {
        let cpu = med(&o, |r| r.cpu_us_per_msg);
        let cpu_base = med(&b, |r| r.cpu_us_per_msg);
        let p99 = med(&o, |r| r.p99_us);
        let p99_base = med(&b, |r| r.p99_us);
        let lost = sum(&o, |r| r.lost + r.failed_posts);
        let dup = sum(&o, |r| r.duplicated);
        rows.extend([
            Row::info(
                S,
                "successful runs",
                Some(o.len() as f64),
                Some(b.len() as f64),
            ),
            Row::info(
                S,
                "delivered/s (median)",
                med(&o, |r| r.per_sec),
                med(&b, |r| r.per_sec),
            ),
            Row::target(
                S,
                "server CPU per delivered msg (us, median)",
                cpu,
                cpu_base,
                "<= 0.9 x baseline",
                cpu.zip(cpu_base).map(|(c, cb)| c <= 0.9 * cb),
            ),
            Row::info(
                S,
                "server kernel share of CPU (%, median)",
                med(&o, |r| r.sys_pct),
                med(&b, |r| r.sys_pct),
            ),
            Row::info(
                S,
                "p50 latency (us, median)",
                med(&o, |r| r.p50_us),
                med(&b, |r| r.p50_us),
            ),
            Row::info(
                S,
                "load generator CPU per msg (us, median)",
                med(&o, |r| r.loadgen_us_per_msg),
                med(&b, |r| r.loadgen_us_per_msg),
            ),
            Row::target(
                S,
                "p99 latency (us, median)",
                p99,
                p99_base,
                "<= baseline",
                p99.zip(p99_base).map(|(p, pb)| p <= pb),
            ),
            Row::info(
                S,
                "p99.9 latency (us, median)",
                med(&o, |r| r.p999_us),
                med(&b, |r| r.p999_us),
            ),
            Row::target(
                S,
                "lost (all runs)",
                lost,
                sum(&b, |r| r.lost + r.failed_posts),
                "0",
                lost.map(|l| l == 0.0),
            ),
            Row::target(
                S,
                "duplicated (all runs)",
                dup,
                sum(&b, |r| r.duplicated),
                "0",
                dup.map(|d| d == 0.0),
            ),
            Row::info(
                S,
                "stream reconnects (all runs)",
                sum(&o, |r| r.reconnects),
                sum(&b, |r| r.reconnects),
            ),
        ]);
    }
    for (name, runs) in [("ssepush", ours), ("baseline", base)] {
        if let Some(Err(err)) = runs.iter().find(|r| r.is_err()) {
            rows.push(Row::note(S, &format!("{name} run failed: {err:#}"), None));
        }
    }
    rows
}

/// fanout-auth rows: the same load with authorization on (`ours`) and off (`base`), both
/// ssepush. A token is checked once per stream and once per POST; here every message is a POST.
pub fn auth_rows(on: &[Result<Outcome>], off: &[Result<Outcome>]) -> Vec<Row> {
    const S: &str = "fanout-auth";
    let ok = |runs: &[Result<Outcome>]| {
        runs.iter()
            .filter_map(|r| r.as_ref().ok())
            .cloned()
            .collect::<Vec<_>>()
    };
    let (o, b) = (ok(on), ok(off));
    let med =
        |runs: &[Outcome], f: fn(&Outcome) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    if o.is_empty() || b.is_empty() {
        return vec![Row::note(
            S,
            "a run failed with auth on or off",
            Some(false),
        )];
    }
    let lost: u64 = o
        .iter()
        .map(|r| r.lost + r.failed_posts + r.duplicated)
        .sum();
    vec![
        Row::note(
            S,
            "ssepush column: auth on (HS256); baseline column: auth off",
            None,
        ),
        Row::info(
            S,
            "delivered/s (median)",
            med(&o, |r| r.per_sec),
            med(&b, |r| r.per_sec),
        ),
        Row::info(
            S,
            "server CPU per delivered msg (us, median)",
            med(&o, |r| r.cpu_us_per_msg),
            med(&b, |r| r.cpu_us_per_msg),
        ),
        Row::info(
            S,
            "p99 latency (us, median)",
            med(&o, |r| r.p99_us),
            med(&b, |r| r.p99_us),
        ),
        Row::target(
            S,
            "lost + failed + duplicated, auth on",
            Some(lost as f64),
            None,
            "0",
            Some(lost == 0),
        ),
    ]
}
