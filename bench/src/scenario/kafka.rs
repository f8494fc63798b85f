//! kafka: records in topic `v3_messages` (`username:message`) consumed by ssepush and delivered
//! to `/v3/sse` streams; consume-and-deliver throughput, server and broker CPU.
//!
//! The records must be a backlog when the consumer reads them, yet every stream must already
//! be open, or a record for a user without a stream is delivered to nobody. So: the broker
//! (tansu) and the server start, the streams open, a probe record proves the consumer is live,
//! then the server is paused (SIGSTOP), the records are produced, and the server is resumed
//! (SIGCONT) in front of the whole backlog. The clock and the CPU readings start at the resume.
//!
//! Then latency, one message at a time on an otherwise idle topic: from producing a record to
//! its event on a stream, and from sending a `POST /v3/message` to its answer.

use super::{now_us, open_stream, parse_body, percentile, progress, wait_for_count};
use crate::http::{Publisher, SseStream};
use crate::procstat::{Binaries, CpuMark, Kind, Server};
use crate::sse::Item;
use crate::table::Row;
use crate::tansu::{Broker, find_tansu};
use anyhow::{Context, Result, bail, ensure};
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Sizes for kafka.
#[derive(Debug, Clone)]
pub struct Config {
    /// Records produced as the backlog.
    pub records: u64,
    /// Users (one `/v3/sse` stream each) the records are spread over.
    pub users: usize,
    /// Record message size in bytes (after `username:`).
    pub payload: usize,
    /// Stream opens in flight at once.
    pub concurrency: usize,
    /// The topic ssepush consumes.
    pub topic: String,
    /// Messages timed one at a time, for each of the two latencies.
    pub latency_samples: usize,
}

/// What the kafka run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub records: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub produce_per_sec: f64,
    pub per_sec: f64,
    pub cpu_us_per_msg: f64,
    /// Kernel share of the server's CPU, in percent.
    pub sys_pct: f64,
    pub broker_cpu_us_per_msg: f64,
    pub latency: Latency,
}

/// Milliseconds, one message at a time.
#[derive(Debug, Clone)]
pub struct Latency {
    pub samples: usize,
    /// From handing a record to the producer to its event on a stream.
    pub produce_to_stream_p50: f64,
    pub produce_to_stream_p99: f64,
    /// From sending `POST /v3/message` to its answer.
    pub post_p50: f64,
    pub post_p99: f64,
}

/// Why the scenario did not run.
pub enum Skip {
    /// Skipped on purpose or for a missing tool; the text says which.
    Skipped(String),
    /// It ran and failed.
    Failed(anyhow::Error),
}

/// Sends a signal to a process with `kill(1)` (the workspace forbids `unsafe`, so no libc).
pub(crate) async fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = tokio::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .await?;
    ensure!(status.success(), "kill {sig} {pid} failed");
    Ok(())
}

/// Produces each value as a record (no key), retrying while librdkafka's queue is full;
/// returns how many the broker acknowledged.
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    values: impl Iterator<Item = String>,
) -> Result<u64> {
    let mut pending = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for value in values {
        loop {
            match producer.send_result(FutureRecord::<(), _>::to(topic).payload(&value)) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    ensure!(
                        Instant::now() < deadline,
                        "producer queue stayed full for 120 s"
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((err, _)) => bail!("produce: {err}"),
            }
        }
    }
    let mut ok = 0;
    for delivery in pending {
        if let Ok(Ok(_)) = delivery.await {
            ok += 1;
        }
    }
    Ok(ok)
}

/// Runs kafka; `Err(Skip::Skipped)` when tansu is missing.
pub async fn run(bins: &Binaries, cfg: &Config) -> Result<Outcome, Skip> {
    let tansu = find_tansu().ok_or_else(|| {
        Skip::Skipped("tansu not on PATH (scripts/install-deps.sh installs it)".into())
    })?;
    run_with(bins, cfg, &tansu).await.map_err(Skip::Failed)
}

async fn run_with(bins: &Binaries, cfg: &Config, tansu: &Path) -> Result<Outcome> {
    let broker = Broker::start(tansu, &bins.log_dir, &cfg.topic).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr.to_string())
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000")
        .set("message.timeout.ms", "30000")
        .create()
        .context("create producer")?;
    let server = Server::start(bins, Kind::Ssepush, &broker.server_args()).await?;
    let addr = server.addr;

    let seen: Arc<Vec<AtomicU8>> = Arc::new((0..cfg.records).map(|_| AtomicU8::new(0)).collect());
    let received = Arc::new(AtomicU64::new(0));
    let last_receive = Arc::new(AtomicU64::new(0));
    let probe_seen = Arc::new(AtomicBool::new(false));
    let token = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(cfg.concurrency));
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let mut receivers = JoinSet::new();
    for user in 0..cfg.users {
        let (seen, received, last_receive, probe_seen, token, permits, opened_tx) = (
            seen.clone(),
            received.clone(),
            last_receive.clone(),
            probe_seen.clone(),
            token.clone(),
            permits.clone(),
            opened_tx.clone(),
        );
        receivers.spawn(async move {
            let permit = permits.acquire_owned().await;
            let path = format!("/v3/sse?username=k_{user}");
            let opened =
                open_stream(addr, &path, Kind::Ssepush, 4096, Duration::from_secs(30)).await;
            drop(permit);
            let mut stream = match opened {
                Ok(stream) => {
                    let _ = opened_tx.send(Ok(()));
                    stream
                }
                Err(err) => {
                    let _ = opened_tx.send(Err(format!("{err:#}")));
                    return;
                }
            };
            loop {
                let mut on_item = |item| {
                    let Item::Event(event) = item else { return };
                    if event.data == "probe" {
                        probe_seen.store(true, Ordering::Relaxed);
                    } else if let Some((seq, _)) = parse_body(&event.data) {
                        if let Some(n) = seen.get(seq as usize) {
                            let _ = n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                n.checked_add(1)
                            });
                        }
                        received.fetch_add(1, Ordering::Relaxed);
                        last_receive.fetch_max(now_us(), Ordering::Relaxed);
                    }
                };
                let read = tokio::select! {
                    () = token.cancelled() => None,
                    read = stream.read_items(&mut on_item) => Some(read),
                };
                if !matches!(read, Some(Ok(true))) {
                    return;
                }
            }
        });
    }
    drop(opened_tx);
    for _ in 0..cfg.users {
        match tokio::time::timeout(Duration::from_secs(120), opened_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(err))) => bail!("opening a /v3/sse stream failed: {err}"),
            Ok(None) | Err(_) => bail!("opening /v3/sse streams timed out"),
        }
    }
    progress(format!(
        "kafka: {} /v3/sse streams open; probing the consumer",
        cfg.users
    ));

    // The probe: proves the consumer is assigned and caught up before the backlog is built.
    let probe_deadline = Instant::now() + Duration::from_secs(60);
    while !probe_seen.load(Ordering::Relaxed) {
        ensure!(
            Instant::now() < probe_deadline,
            "the v3 consumer delivered no probe record within 60 s"
        );
        produce(
            &producer,
            &cfg.topic,
            std::iter::once("k_0:probe".to_string()),
        )
        .await?;
        let wait_until = Instant::now() + Duration::from_secs(3);
        while !probe_seen.load(Ordering::Relaxed) && Instant::now() < wait_until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let broker_pid = broker.pid().context("tansu is not running")?;
    signal(server.pid(), "-STOP").await?;
    let produce_start = Instant::now();
    let users = cfg.users as u64;
    let pad = "x".repeat(cfg.payload.saturating_sub(20));
    let values = (0..cfg.records).map(|seq| format!("k_{}:{seq} {} {pad}", seq % users, now_us()));
    let produced = produce(&producer, &cfg.topic, values).await;
    let produce_secs = produce_start.elapsed().as_secs_f64();
    let broker_cpu = CpuMark::now(broker_pid);
    let server_cpu = CpuMark::now(server.pid());
    let start_us = now_us();
    signal(server.pid(), "-CONT").await?;
    let produced = produced?;
    let (broker_cpu, server_cpu) = (broker_cpu?, server_cpu?);
    progress(format!(
        "kafka: {produced} records produced in {produce_secs:.1} s; server resumed"
    ));
    ensure!(
        produced == cfg.records,
        "only {produced} of {} records were produced",
        cfg.records
    );

    wait_for_count(
        &received,
        cfg.records,
        Duration::from_secs(5),
        Duration::from_secs(120),
    )
    .await;
    let server_used = server_cpu.since(server.pid())?;
    let broker_used = broker_cpu.since(broker_pid)?;
    token.cancel();
    while receivers.join_next().await.is_some() {}
    let latency = latency(addr, broker.addr, &cfg.topic, cfg.latency_samples).await?;
    server.stop().await;
    broker.stop().await;

    let (mut delivered, mut duplicated) = (0u64, 0u64);
    for n in seen.iter() {
        let n = u64::from(n.load(Ordering::Relaxed));
        delivered += n.min(1);
        duplicated += n.saturating_sub(1);
    }
    let span_s = last_receive
        .load(Ordering::Relaxed)
        .saturating_sub(start_us) as f64
        / 1e6;
    let outcome = Outcome {
        records: cfg.records,
        delivered,
        lost: cfg.records - delivered,
        duplicated,
        produce_per_sec: produced as f64 / produce_secs.max(1e-9),
        per_sec: delivered as f64 / span_s.max(1e-9),
        cpu_us_per_msg: server_used.total_us() as f64 / delivered.max(1) as f64,
        sys_pct: server_used.sys_pct(),
        broker_cpu_us_per_msg: broker_used.total_us() as f64 / delivered.max(1) as f64,
        latency,
    };
    progress(format!(
        "kafka: {delivered}/{} delivered at {:.0}/s, {:.2} us CPU/msg",
        cfg.records, outcome.per_sec, outcome.cpu_us_per_msg
    ));
    Ok(outcome)
}

/// Times `samples` records from producer to stream, then `samples` POSTs to their answers,
/// one at a time, each also awaited on the stream.
async fn latency(
    server: SocketAddr,
    broker: SocketAddr,
    topic: &str,
    samples: usize,
) -> Result<Latency> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.to_string())
        .set("linger.ms", "0")
        .set("socket.nagle.disable", "true")
        .set("message.timeout.ms", "10000")
        .create()
        .context("create producer")?;
    let mut stream = open_stream(
        server,
        "/v3/sse?username=latency",
        Kind::Ssepush,
        65536,
        Duration::from_secs(30),
    )
    .await?;
    let mut publisher = Publisher::new(server);
    let (mut produced, mut posted) = (Vec::new(), Vec::new());
    for i in 0..samples {
        let sent = Instant::now();
        let value = format!("latency:produced {i}");
        producer
            .send(
                FutureRecord::<(), _>::to(topic).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
        await_event(&mut stream, &format!("produced {i}")).await?;
        produced.push(sent.elapsed().as_micros() as u32);

        let sent = Instant::now();
        let text = format!("posted {i}");
        let (status, body) = publisher
            .post("/v3/message?username=latency", text.as_bytes())
            .await?;
        posted.push(sent.elapsed().as_micros() as u32);
        ensure!(
            status == 200,
            "v3 POST answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        await_event(&mut stream, &text).await?;
    }
    produced.sort_unstable();
    posted.sort_unstable();
    let ms = |v: &[u32], q| percentile(v, q).unwrap_or(f64::NAN) / 1000.0;
    let latency = Latency {
        samples,
        produce_to_stream_p50: ms(&produced, 0.5),
        produce_to_stream_p99: ms(&produced, 0.99),
        post_p50: ms(&posted, 0.5),
        post_p99: ms(&posted, 0.99),
    };
    progress(format!("kafka: latency {latency:?}"));
    Ok(latency)
}

/// Reads the stream until an event with `data` arrives (10 s at most).
async fn await_event(stream: &mut SseStream, data: &str) -> Result<()> {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut found = false;
        while !found {
            let open = stream
                .read_items(&mut |item| {
                    found |= matches!(&item, Item::Event(e) if e.data == data);
                })
                .await?;
            ensure!(open || found, "stream ended before {data:?}");
        }
        Ok(())
    })
    .await
    .with_context(|| format!("no event {data:?} within 10 s"))?
}

/// Rows for kafka; the baseline column is n/a.
pub fn rows(ours: &Result<Outcome, Skip>) -> Vec<Row> {
    const S: &str = "kafka";
    match ours {
        Err(Skip::Skipped(why)) => vec![Row::note(S, &format!("skipped: {why}"), None)],
        Err(Skip::Failed(err)) => vec![Row::note(S, &format!("failed: {err:#}"), Some(false))],
        Ok(o) => vec![
            Row::target(
                S,
                "consumed+delivered msg/s",
                Some(o.per_sec),
                None,
                ">= 50,000",
                Some(o.per_sec >= 50_000.0),
            ),
            Row::target(
                S,
                "server CPU per msg (us)",
                Some(o.cpu_us_per_msg),
                None,
                "<= 5",
                Some(o.cpu_us_per_msg <= 5.0),
            ),
            Row::info(S, "server kernel share of CPU (%)", Some(o.sys_pct), None),
            Row::info(
                S,
                "broker (tansu) CPU per msg while consumed (us)",
                Some(o.broker_cpu_us_per_msg),
                None,
            ),
            Row::info(
                S,
                "backlog produce rate (records/s)",
                Some(o.produce_per_sec),
                None,
            ),
            Row::zero(
                S,
                &format!("lost (of {})", crate::table::fmt_num(o.records as f64)),
                o.lost,
            ),
            Row::zero(S, "duplicated", o.duplicated),
            Row::target(
                S,
                "produce to stream p50 (ms)",
                Some(o.latency.produce_to_stream_p50),
                None,
                "< 20",
                Some(o.latency.produce_to_stream_p50 < 20.0),
            ),
            Row::target(
                S,
                "produce to stream p99 (ms)",
                Some(o.latency.produce_to_stream_p99),
                None,
                "< 100",
                Some(o.latency.produce_to_stream_p99 < 100.0),
            ),
            Row::target(
                S,
                "v3 POST answer p50 (ms)",
                Some(o.latency.post_p50),
                None,
                "< 20",
                Some(o.latency.post_p50 < 20.0),
            ),
            Row::info(S, "v3 POST answer p99 (ms)", Some(o.latency.post_p99), None),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The broker recipe and the backlog producer work against a real tansu.
    #[tokio::test]
    async fn tansu_takes_a_backlog() {
        let tansu = find_tansu().expect("tansu on PATH (scripts/install-deps.sh installs it)");
        let log_dir = std::env::temp_dir().join("bench-kafka-test");
        let broker = Broker::start(&tansu, &log_dir, "t").await.unwrap();
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", broker.addr.to_string())
            .set("linger.ms", "5")
            .create()
            .unwrap();
        let start = Instant::now();
        let n = produce(
            &producer,
            "t",
            (0..20_000).map(|i| format!("u_{}:{i} 0", i % 10)),
        )
        .await
        .unwrap();
        eprintln!("20000 records in {:?}", start.elapsed());
        assert_eq!(n, 20_000);
        broker.stop().await;
    }
}
