//! cluster: several ssepush instances on v3 on one box (separate processes, each its own
//! consumer group), one tansu broker, streams spread over the instances, Kafka records at a
//! steady rate across all users.
//!
//! User `c_u` (u < instances × streams) has one stream, on instance `u % instances`. Live
//! record `seq` goes to user `c_{seq % users}`, so it is local on instance `seq % instances`
//! and absent on the others. Each instance's streams are held by a worker process of their own
//! (`cluster-worker`, next to `loadgen`): a process may hold 20,000 descriptors. A record's
//! value carries its seq and the wall-clock microseconds it was stamped with; its CreateTime is
//! set from the same reading, and a worker measures the delay to the moment it reads the
//! event. Workers count every seq they own, so lost and duplicated are exact.
//!
//! Phases: idle (each instance's idle CPU), warm-up, steady (the measured window: delivered
//! per second, delay, CPU and RSS per instance), idle again, then records at the same rate for
//! users with no stream anywhere, which gives each instance's CPU per absent-user record, and
//! idle once more. Each window's CPU is set against the idle CPU measured on both sides of it:
//! 15,000 streams' keep-alives take ten times what the records do, and drift over a run. CPU
//! per local-user record is what the steady window's CPU leaves once idle and the absent
//! records (at that measured cost) are taken out.

use super::records::{Producer, RECORDS_READ, wait_for_metric, wall_us};
use super::{median, now_us, open_stream, percentile, progress};
use crate::http::metric;
use crate::procstat::{Binaries, CpuMark, Kind, Server, log_tail, raise_fd_limit, sibling_binary};
use crate::sse::Item;
use crate::table::{Row, fmt_num};
use crate::tansu::Broker;
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Sizes for cluster.
#[derive(Debug, Clone)]
pub struct Config {
    pub instances: usize,
    /// Streams (one user each) per instance.
    pub streams: usize,
    /// Records per second, across all users.
    pub rate: u64,
    pub idle_secs: u64,
    pub warmup_secs: u64,
    pub steady_secs: u64,
    pub absent_secs: u64,
    pub payload: usize,
    /// Stream opens in flight at once, per worker.
    pub concurrency: usize,
    pub topic: String,
    /// The worker binary (default: `cluster-worker` next to this executable).
    pub worker: Option<PathBuf>,
}

/// One instance's figures.
#[derive(Debug, Clone)]
pub struct Instance {
    pub rss_mib: f64,
    pub idle_us_per_sec: f64,
    /// Steady window, less idle, per record read.
    pub us_per_record: f64,
    pub local_us_per_record: f64,
    pub absent_us_per_record: f64,
    pub worker_cpu_pct: f64,
}

/// What cluster measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub instances: Vec<Instance>,
    pub streams: usize,
    pub target_rate: u64,
    pub produced_per_sec: f64,
    pub delivered_per_sec: f64,
    pub produced: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub foreign: u64,
    pub delay_p50_ms: f64,
    pub delay_p99_ms: f64,
    pub delay_max_ms: f64,
    pub steady_secs: f64,
    pub absent_records: u64,
    pub broker_cpu_pct: f64,
    pub producer_cpu_pct: f64,
}

/// The worker's report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub opened: u64,
    pub events: u64,
    /// Events with a seq another instance owns (never expected).
    pub foreign: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub steady_delivered: u64,
    /// Microseconds from CreateTime to read, per steady seq, first arrival.
    pub delays_us: Vec<u32>,
}

/// The worker's options (`cluster-worker --help`).
#[derive(Debug, Clone, clap::Parser)]
#[command(about = "Holds one cluster instance's streams for loadgen's cluster scenario")]
pub struct WorkerOpts {
    #[arg(long)]
    pub server: SocketAddr,
    #[arg(long)]
    pub instance: u64,
    #[arg(long)]
    pub instances: u64,
    #[arg(long)]
    pub streams: u64,
    /// Seqs at or above this are not tracked.
    #[arg(long)]
    pub max_seq: u64,
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

/// The worker: opens its streams, says `open <ok> <failed>` on stdout, counts events until a
/// line `report <steady from> <steady to> <produced>` arrives on stdin, then prints its
/// [`Report`] as one JSON line and returns.
pub async fn worker(opts: WorkerOpts) -> Result<()> {
    raise_fd_limit()?;
    let slots = (opts.max_seq / opts.instances + 1) as usize;
    let counts: Arc<Vec<AtomicU8>> = Arc::new((0..slots).map(|_| AtomicU8::new(0)).collect());
    let delays: Arc<Vec<AtomicU32>> =
        Arc::new((0..slots).map(|_| AtomicU32::new(u32::MAX)).collect());
    let events = Arc::new(AtomicU64::new(0));
    let foreign = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(Semaphore::new(opts.concurrency));
    let token = CancellationToken::new();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    for j in 0..opts.streams {
        let user = opts.instance + opts.instances * j;
        let (counts, delays, events, foreign, permits, token, opened_tx) = (
            counts.clone(),
            delays.clone(),
            events.clone(),
            foreign.clone(),
            permits.clone(),
            token.clone(),
            opened_tx.clone(),
        );
        let (instance, instances) = (opts.instance, opts.instances);
        let server = opts.server;
        tokio::spawn(async move {
            let permit = permits.acquire_owned().await;
            let path = format!("/v3/sse?username=c_{user}");
            let opened =
                open_stream(server, &path, Kind::Ssepush, 8192, Duration::from_secs(60)).await;
            drop(permit);
            let _ = opened_tx.send(opened.is_ok());
            drop(opened_tx);
            let Ok(mut stream) = opened else { return };
            loop {
                let mut on_item = |item| {
                    let Item::Event(event) = item else { return };
                    let now = wall_us();
                    events.fetch_add(1, Ordering::Relaxed);
                    let mut parts = event.data.split(' ');
                    let (Some(Ok(seq)), Some(Ok(sent))) = (
                        parts.next().map(str::parse::<u64>),
                        parts.next().map(str::parse::<u64>),
                    ) else {
                        return;
                    };
                    if seq % instances != instance {
                        foreign.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    let i = (seq / instances) as usize;
                    let Some(n) = counts.get(i) else { return };
                    let before = n
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
                        .unwrap_or(u8::MAX);
                    if before == 0 {
                        let delay = now.saturating_sub(sent).min(u64::from(u32::MAX - 1));
                        delays[i].store(delay as u32, Ordering::Relaxed);
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
    let (mut ok, mut failed) = (0u64, 0u64);
    // Every task answers once (and keeps its sender while it reads, so count the answers).
    for _ in 0..opts.streams {
        match opened_rx.recv().await {
            Some(true) => ok += 1,
            Some(false) => failed += 1,
            None => break,
        }
    }
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("open {ok} {failed}\n").as_bytes())
        .await?;
    stdout.flush().await?;

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let line = lines.next_line().await?.context("stdin closed")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad command {line:?}"))?;
    let [s0, s1, produced] = fields[..] else {
        bail!("bad command {line:?}");
    };
    let mut report = Report {
        opened: ok,
        events: events.load(Ordering::Relaxed),
        foreign: foreign.load(Ordering::Relaxed),
        ..Report::default()
    };
    let mut seq = opts.instance;
    while seq < produced.min(opts.max_seq) {
        let i = (seq / opts.instances) as usize;
        let n = u64::from(counts[i].load(Ordering::Relaxed));
        if n == 0 {
            report.lost += 1;
        } else {
            report.delivered += 1;
            report.duplicated += n - 1;
            if (s0..s1).contains(&seq) {
                report.steady_delivered += 1;
                report.delays_us.push(delays[i].load(Ordering::Relaxed));
            }
        }
        seq += opts.instances;
    }
    token.cancel();
    let json = serde_json::to_string(&report)?;
    stdout.write_all(format!("{json}\n").as_bytes()).await?;
    stdout.flush().await?;
    Ok(())
}

/// A worker process and its pipes.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Worker {
    fn spawn(program: &PathBuf, args: &[String], log: &std::path::Path) -> Result<Self> {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {}", program.display()))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn line(&mut self, max: Duration) -> Result<String> {
        tokio::time::timeout(max, self.stdout.next_line())
            .await
            .context("worker timed out")??
            .context("worker closed its stdout")
    }
}

/// Each instance's records read, from `/metrics`.
async fn read_counts(servers: &[Server]) -> Vec<f64> {
    let mut out = Vec::new();
    for s in servers {
        out.push(metric(s.addr, RECORDS_READ).await.unwrap_or(f64::NAN));
    }
    out
}

/// Produces records at `rate` per second until `stop`, numbering them from `seq` on;
/// `value(seq)` makes each one's text after the seq. Returns the producer.
fn produce_at_rate(
    mut producer: Producer,
    rate: u64,
    seq: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    value: impl Fn(u64, u64) -> String + Send + 'static,
) -> tokio::task::JoinHandle<Result<Producer>> {
    tokio::spawn(async move {
        let start = Instant::now();
        let first = seq.load(Ordering::Relaxed);
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let due = first + (start.elapsed().as_secs_f64() * rate as f64) as u64;
            let mut s = seq.load(Ordering::Relaxed);
            while s < due {
                let us = wall_us();
                let text = value(s, us);
                producer
                    .send(text.as_bytes(), Some((us / 1000) as i64))
                    .await?;
                s += 1;
                seq.store(s, Ordering::Relaxed);
            }
        }
        Ok(producer)
    })
}

pub async fn run(bins: &Binaries, cfg: &Config) -> Result<Outcome> {
    let worker_bin = sibling_binary(cfg.worker.as_deref(), "cluster-worker")?;
    let k = cfg.instances;
    let users = (k * cfg.streams) as u64;
    let broker = Broker::start_found(&bins.log_dir, &cfg.topic).await?;
    let mut servers = Vec::new();
    for i in 0..k {
        let mut b = bins.clone();
        b.log_dir = bins.log_dir.join(format!("cluster-{i}"));
        let mut extra = broker.server_args();
        extra.push(format!("--kafka-group=cluster-{i}"));
        extra.push(format!("--max-streams={}", cfg.streams + 100));
        servers.push(Server::start(&b, Kind::Ssepush, &extra).await?);
    }
    // Enough seq slots for every live record the run can produce, with room to spare.
    let max_seq = cfg.rate * (cfg.warmup_secs + cfg.steady_secs + 30) * 2 + 1_000;
    let mut workers = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let args: Vec<String> = vec![
            format!("--server={}", server.addr),
            format!("--instance={i}"),
            format!("--instances={k}"),
            format!("--streams={}", cfg.streams),
            format!("--max-seq={max_seq}"),
            format!("--concurrency={}", cfg.concurrency),
        ];
        let log = bins.log_dir.join(format!("cluster-{i}")).join("worker.log");
        workers.push(Worker::spawn(&worker_bin, &args, &log)?);
    }
    for (i, w) in workers.iter_mut().enumerate() {
        let line = w.line(Duration::from_secs(600)).await.with_context(|| {
            format!(
                "worker {i} ({})",
                log_tail(&bins.log_dir.join(format!("cluster-{i}/worker.log")))
            )
        })?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        ensure!(
            fields.len() == 3 && fields[0] == "open" && fields[2] == "0",
            "worker {i}: {line}"
        );
    }
    progress(format!(
        "cluster: {k} instances, {} streams open; probing the consumers",
        users
    ));

    let mut producer = Producer::steady(broker.addr, &cfg.topic)?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        producer.send(b"probe:probe", None).await?;
        producer.flush(Duration::from_secs(10)).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if read_counts(&servers).await.iter().all(|&n| n >= 1.0) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "not every instance's consumer read a probe within 90 s"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base = read_counts(&servers).await;
    let pids: Vec<u32> = servers.iter().map(Server::pid).collect();
    let worker_pids: Vec<u32> = workers.iter().filter_map(Worker::pid).collect();
    let broker_pid = broker.pid().context("tansu is not running")?;
    let idle_rate = idle_rates(&pids, cfg.idle_secs).await?;
    progress(format!("cluster: idle CPU (us/s) {idle_rate:.0?}"));

    // Live records, warm-up then steady.
    let pad = "x".repeat(cfg.payload.saturating_sub(24));
    let seq = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let live = {
        let pad = pad.clone();
        produce_at_rate(
            producer,
            cfg.rate,
            seq.clone(),
            stop.clone(),
            move |s, us| format!("c_{}:{s} {us} {pad}", s % users),
        )
    };
    tokio::time::sleep(Duration::from_secs(cfg.warmup_secs)).await;
    let s0 = seq.load(Ordering::Relaxed);
    let (steady_marks, worker_marks, broker_mark) = (
        marks(&pids)?,
        marks(&worker_pids)?,
        CpuMark::now(broker_pid)?,
    );
    let own_mark = CpuMark::now(std::process::id())?;
    let t0 = now_us();
    tokio::time::sleep(Duration::from_secs(cfg.steady_secs)).await;
    let s1 = seq.load(Ordering::Relaxed);
    let steady_secs = (now_us() - t0) as f64 / 1e6;
    let steady_used: Vec<_> = steady_marks
        .iter()
        .zip(&pids)
        .map(|(m, &p)| m.since(p))
        .collect::<Result<_>>()?;
    let worker_used: Vec<_> = worker_marks
        .iter()
        .zip(&worker_pids)
        .map(|(m, &p)| m.since(p))
        .collect::<Result<_>>()?;
    let broker_used = broker_mark.since(broker_pid)?;
    let own_used = own_mark.since(std::process::id())?;
    let rss: Vec<f64> = servers
        .iter()
        .map(|s| s.rss_kib().map(|r| r as f64 / 1024.0))
        .collect::<Result<_>>()?;
    stop.store(true, Ordering::Relaxed);
    let producer = live.await??;
    let produced = seq.load(Ordering::Relaxed);
    let acked = producer.flush(Duration::from_secs(60)).await?;
    progress(format!(
        "cluster: steady {} records in {steady_secs:.1} s ({:.0}/s); {produced} produced, {acked} acknowledged",
        s1 - s0,
        (s1 - s0) as f64 / steady_secs
    ));
    for (i, s) in servers.iter().enumerate() {
        let got = wait_for_metric(
            s.addr,
            RECORDS_READ,
            base[i] + produced as f64,
            Duration::from_millis(200),
            Duration::from_secs(20),
            Duration::from_secs(300),
        )
        .await;
        if got < base[i] + produced as f64 {
            progress(format!(
                "cluster: instance {i} read {} of {produced} live records",
                got - base[i]
            ));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Records for users with no stream anywhere, at the same rate. Their cost is a few percent
    // of what 15,000 streams' keep-alives take, which drifts over a run: the idle CPU it is
    // set against is measured just before and just after.
    let idle_before = idle_rates(&pids, cfg.idle_secs).await?;
    let before = read_counts(&servers).await;
    let absent_marks = marks(&pids)?;
    let absent_seq = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let absent = produce_at_rate(
        producer,
        cfg.rate,
        absent_seq.clone(),
        stop.clone(),
        move |s, us| format!("z_{}:{s} {us} {pad}", s % users),
    );
    tokio::time::sleep(Duration::from_secs(cfg.absent_secs)).await;
    stop.store(true, Ordering::Relaxed);
    let producer = absent.await??;
    let absent_records = absent_seq.load(Ordering::Relaxed);
    producer.flush(Duration::from_secs(60)).await?;
    let mut absent_used = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let target = before[i] + absent_records as f64;
        let got = wait_for_metric(
            s.addr,
            RECORDS_READ,
            target,
            Duration::from_millis(100),
            Duration::from_secs(20),
            Duration::from_secs(300),
        )
        .await;
        let used = absent_marks[i].since(pids[i])?;
        ensure!(
            got >= target,
            "instance {i} read {} of {absent_records} absent-user records",
            got - before[i]
        );
        absent_used.push(used);
    }
    let idle_after = idle_rates(&pids, cfg.idle_secs).await?;
    let absent_cost: Vec<f64> = absent_used
        .iter()
        .enumerate()
        .map(|(i, used)| {
            let idle = (idle_before[i] + idle_after[i]) / 2.0;
            (used.total_us() as f64 - idle * used.wall.as_secs_f64()) / absent_records as f64
        })
        .collect();
    progress(format!(
        "cluster: {absent_records} absent-user records; idle CPU before {idle_before:.0?}, after {idle_after:.0?} (us/s); CPU per record (us) {absent_cost:.2?}"
    ));

    // The workers' counts.
    let mut reports = Vec::new();
    for (i, w) in workers.iter_mut().enumerate() {
        w.stdin
            .write_all(format!("report {s0} {s1} {produced}\n").as_bytes())
            .await?;
        w.stdin.flush().await?;
        let line = w.line(Duration::from_secs(120)).await?;
        let report: Report =
            serde_json::from_str(&line).with_context(|| format!("worker {i}'s report"))?;
        reports.push(report);
    }
    drop(workers);
    for s in servers {
        s.stop().await;
    }
    broker.stop().await;

    let steady = s1 - s0;
    let mut instances = Vec::new();
    for i in 0..k {
        let local = (s0..s1).filter(|s| s % k as u64 == i as u64).count() as f64;
        let absent_n = steady as f64 - local;
        // The idle CPU measured before the warm-up and after the steady window.
        let idle = (idle_rate[i] + idle_before[i]) / 2.0;
        let net = steady_used[i].total_us() as f64 - idle * steady_used[i].wall.as_secs_f64();
        instances.push(Instance {
            rss_mib: rss[i],
            idle_us_per_sec: idle,
            us_per_record: net / steady.max(1) as f64,
            local_us_per_record: (net - absent_n * absent_cost[i]) / local.max(1.0),
            absent_us_per_record: absent_cost[i],
            worker_cpu_pct: worker_used
                .get(i)
                .map_or(f64::NAN, |u| u.total_us() as f64 / 1e4 / steady_secs),
        });
    }
    let mut delays: Vec<u32> = reports.iter().flat_map(|r| r.delays_us.clone()).collect();
    delays.sort_unstable();
    let ms = |q| percentile(&delays, q).map_or(f64::NAN, |v| v / 1000.0);
    let outcome = Outcome {
        instances,
        streams: cfg.streams,
        target_rate: cfg.rate,
        produced_per_sec: steady as f64 / steady_secs,
        delivered_per_sec: reports.iter().map(|r| r.steady_delivered).sum::<u64>() as f64
            / steady_secs,
        produced,
        lost: reports.iter().map(|r| r.lost).sum(),
        duplicated: reports.iter().map(|r| r.duplicated).sum(),
        foreign: reports.iter().map(|r| r.foreign).sum(),
        delay_p50_ms: ms(0.5),
        delay_p99_ms: ms(0.99),
        delay_max_ms: delays.last().map_or(f64::NAN, |&v| f64::from(v) / 1000.0),
        steady_secs,
        absent_records,
        broker_cpu_pct: broker_used.total_us() as f64 / 1e4 / steady_secs,
        producer_cpu_pct: own_used.total_us() as f64 / 1e4 / steady_secs,
    };
    progress(format!("cluster: {outcome:?}"));
    Ok(outcome)
}

fn marks(pids: &[u32]) -> Result<Vec<CpuMark>> {
    pids.iter().map(|&p| CpuMark::now(p)).collect()
}

/// Each instance's CPU per second over `secs` with nothing to read.
async fn idle_rates(pids: &[u32], secs: u64) -> Result<Vec<f64>> {
    let start = marks(pids)?;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    start
        .iter()
        .zip(pids)
        .map(|(m, &p)| {
            let used = m.since(p)?;
            Ok(used.total_us() as f64 / used.wall.as_secs_f64())
        })
        .collect()
}

/// Rows for cluster.
pub fn rows(outcome: &Result<Outcome>) -> Vec<Row> {
    const S: &str = "cluster";
    let o = match outcome {
        Ok(o) => o,
        Err(err) => return vec![Row::note(S, &format!("failed: {err:#}"), Some(false))],
    };
    let target = o.target_rate as f64;
    let mut rows = vec![
        Row::target(
            S,
            &format!(
                "records produced per second (steady {:.0} s)",
                o.steady_secs
            ),
            Some(o.produced_per_sec),
            None,
            &format!(">= {}", fmt_num(target * 0.99)),
            Some(o.produced_per_sec >= target * 0.99),
        ),
        Row::target(
            S,
            &format!(
                "delivered per second ({} instances x {} streams)",
                o.instances.len(),
                fmt_num(o.streams as f64)
            ),
            Some(o.delivered_per_sec),
            None,
            &format!(">= {}", fmt_num(target * 0.99)),
            Some(o.delivered_per_sec >= target * 0.99),
        ),
        Row::info(
            S,
            "delay CreateTime to client read p50 (ms)",
            Some(o.delay_p50_ms),
            None,
        ),
        Row::info(
            S,
            "delay CreateTime to client read p99 (ms)",
            Some(o.delay_p99_ms),
            None,
        ),
        Row::info(
            S,
            "delay CreateTime to client read max (ms)",
            Some(o.delay_max_ms),
            None,
        ),
        Row::zero(
            S,
            &format!("lost (of {} live records)", fmt_num(o.produced as f64)),
            o.lost,
        ),
        Row::zero(S, "duplicated", o.duplicated),
    ];
    if o.foreign > 0 {
        rows.push(Row::zero(S, "events on the wrong instance", o.foreign));
    }
    for (i, inst) in o.instances.iter().enumerate() {
        let p = format!("instance {i}:");
        rows.push(Row::info(
            S,
            &format!("{p} CPU per record, local user (us, derived)"),
            Some(inst.local_us_per_record),
            None,
        ));
        rows.push(Row::info(
            S,
            &format!(
                "{p} CPU per record, absent user (us, {} at the same rate)",
                fmt_num(o.absent_records as f64)
            ),
            Some(inst.absent_us_per_record),
            None,
        ));
        rows.push(Row::info(
            S,
            &format!("{p} CPU per record, all (us)"),
            Some(inst.us_per_record),
            None,
        ));
        rows.push(Row::info(
            S,
            &format!("{p} RSS (MiB)"),
            Some(inst.rss_mib),
            None,
        ));
    }
    let idle = median(
        &o.instances
            .iter()
            .map(|i| i.idle_us_per_sec)
            .collect::<Vec<_>>(),
    );
    rows.push(Row::info(S, "instance idle CPU, median (us/s)", idle, None));
    let workers: f64 = o.instances.iter().map(|i| i.worker_cpu_pct).sum();
    rows.push(Row::info(
        S,
        "stream workers' CPU, all (% of a core)",
        Some(workers),
        None,
    ));
    rows.push(Row::info(
        S,
        "tansu CPU (% of a core)",
        Some(o.broker_cpu_pct),
        None,
    ));
    rows.push(Row::info(
        S,
        "loadgen (producer) CPU (% of a core)",
        Some(o.producer_cpu_pct),
        None,
    ));
    rows
}
