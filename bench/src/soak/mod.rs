//! soak: two ssepush instances on v3 with one tansu broker, thousands of streams with churn,
//! steady publishing over HTTP and Kafka, stalled clients, and faults (the broker and an
//! instance SIGKILLed and restarted), with a ledger that proves nothing was lost or duplicated.
//!
//! # Run
//! 1. Start the broker behind a [`gate`], then instances a and b (each with its own consumer
//!    group, so both read every record), and wait until both are ready.
//! 2. Open the lineages ([`lineage`]), spread over the users and over both instances, and wait
//!    until a first probe round reached every one of them: the whole path is live.
//! 3. The load: POSTs and produced records ([`publish`]), churn, stalled clients
//!    ([`stalled`]). RSS is read after the warm-up.
//! 4. The faults ([`faults`]), spread over the rest of the run, each with its recovery time.
//! 5. Publishing stops, churn stops, a last probe round must reach every stream, the streams
//!    drain until quiet; RSS is read again.
//! 6. The ledger ([`ledger`]) settles every message; the logs are scanned ([`logscan`]); the
//!    table is drawn ([`report`]).
//!
//! Every wait has a deadline, so the run ends by itself; every child process is killed when
//! dropped, so an error can't leave one behind.

pub mod dump;
pub mod faults;
pub mod gate;
pub mod instance;
pub mod ledger;
pub mod lineage;
pub mod logscan;
pub mod publish;
pub mod report;
pub mod rng;
pub mod rss_trace;
pub mod sent;
pub mod shared;
pub mod stalled;

use crate::http::metric;
use crate::procstat::{UNLIMITED_CLIENT, free_port};
use crate::scenario::now_us;
use crate::tansu::Broker;
use anyhow::{Context, Result, bail};
use faults::{Fault, FaultReport};
use instance::Instance;
use ledger::{BrokerLives, LineageLog, Us};
use lineage::{Live, Spec};
use publish::{Kafka, Prober};
use rng::Rng;
use sent::Register;
use shared::Shared;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The soak's users are `soak-u<n>`.
pub fn user_name(user: u32) -> String {
    format!("soak-u{user}")
}

/// Users only the stalled clients listen to start with this.
pub const FILLER_PREFIX: &str = "soak-stalled-";

/// The `n`th stalled clients' user.
pub fn filler_user(n: u32) -> String {
    format!("{FILLER_PREFIX}{n}")
}

/// Sizes and switches of a run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Length of the load phase, in minutes (setup and drain come on top).
    pub minutes: f64,
    /// Streams (lineages) across both instances.
    pub streams: usize,
    pub users: usize,
    pub faults: Vec<Fault>,
    pub ssepush: PathBuf,
    pub tansu: PathBuf,
    /// Extra flags for both instances.
    pub ssepush_args: Vec<String>,
    pub log_dir: PathBuf,
    /// Messages a second, half POSTed, half produced.
    pub rate: f64,
    /// Share of lineages that drop their stream every few seconds.
    pub churn_share: f64,
    pub stalled: usize,
    pub seed: u64,
}

/// Filler users for the stalled clients, and records a second to each.
const FILLERS: u32 = 4;
const FILLER_RATE: f64 = 10.0;

/// Concurrent POSTing tasks.
const POSTERS: usize = 8;

/// The longest a fault's recovery is waited for before it counts as missed.
const RECOVERY_CAP: Duration = Duration::from_secs(45);

/// The drain waits up to [`DRAIN_MAX`] for a final probe round to reach every stream, then until
/// no message arrived for [`DRAIN_QUIET`] (twice that at most).
const DRAIN_QUIET: Duration = Duration::from_secs(2);
const DRAIN_MAX: Duration = Duration::from_secs(60);

impl Config {
    pub fn load(&self) -> Duration {
        Duration::from_secs_f64(self.minutes * 60.0)
    }

    /// RSS is read after this much of the load: a quarter of it, 20 s to 2 min (on this
    /// machine RSS still climbs for 20-30 s after the streams open).
    pub fn warmup(&self) -> Duration {
        (self.load() / 4).clamp(Duration::from_secs(20), Duration::from_secs(120))
    }

    /// The instances keep history this long: shorter than the warm-up, so that the history
    /// has reached its steady size when RSS is first read and the drift measures leaks, not
    /// the history filling up. Every resume in the soak is seconds behind at most.
    pub fn history_ttl(&self) -> Duration {
        (self.warmup() * 2 / 3).max(Duration::from_secs(8))
    }

    /// When each fault is injected, from the start of the load: evenly over what follows the
    /// warm-up.
    fn fault_times(&self) -> Vec<Duration> {
        let (warm, load) = (self.warmup(), self.load());
        let k = self.faults.len() as u32;
        (1..=k)
            .map(|i| warm + (load.saturating_sub(warm)) * i / (k + 1))
            .collect()
    }
}

/// RSS readings of one instance process, in KiB.
#[derive(Debug, Clone)]
pub struct ProcessRss {
    pub instance: &'static str,
    /// Seconds into the load when it was started again; `None` for the first process.
    pub restarted_s: Option<f64>,
    pub start: Option<u64>,
    /// The warm-up reading, and when it was taken (s into the load).
    pub warm: Option<(u64, f64)>,
    /// The last reading: at the end, or just before it was killed.
    pub end: Option<u64>,
    pub killed: bool,
}

impl ProcessRss {
    /// Growth from the warm-up reading to the end, in percent; only for a process that lived
    /// from one to the other.
    pub fn drift_pct(&self) -> Option<f64> {
        match (self.warm, self.end, self.killed) {
            (Some((warm, _)), Some(end), false) => {
                Some((end as f64 - warm as f64) * 100.0 / warm.max(1) as f64)
            }
            _ => None,
        }
    }
}

/// Counters at the end of a run.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub reconnects_churn: u64,
    pub reconnects_dropped: u64,
    pub reconnects_home: u64,
    pub open_failures: u64,
    pub post_failures: u64,
    pub produce_failures: u64,
    pub filler_sent: u64,
    pub stalled_opened: u64,
    pub stalled_cut: u64,
    pub stalled_open: u64,
}

/// Everything the report needs.
#[derive(Debug, Clone)]
pub struct Run {
    pub cfg: Config,
    pub outcome: ledger::Outcome,
    pub rss: Vec<ProcessRss>,
    pub faults: Vec<FaultReport>,
    pub tally: Tally,
    pub logs: logscan::Scan,
    /// Setup, load, drain.
    pub phases: [Duration; 3],
    /// Whatever went wrong besides the figures (an instance that died on its own, ...).
    pub problems: Vec<String>,
    pub server_flags: Vec<String>,
    /// When the load started, on the soak's clock.
    pub load_start_us: Us,
    /// `ssepush_kafka_records_total` of each instance at the end.
    pub consumed: [Option<u64>; 2],
}

/// Runs the soak.
pub async fn run(cfg: &Config) -> Result<Run> {
    let t0 = Instant::now();
    let (wall0, us0) = (SystemTime::now(), now_us());
    prepare_log_dir(cfg)?;
    progress("starting tansu");
    let gate = gate::Gate::start()?;
    let mut broker =
        Broker::start_advertising(&cfg.tansu, &cfg.log_dir, publish::TOPIC, Some(gate.addr))
            .await?;
    gate.open(broker.addr);
    let lives = Arc::new(Mutex::new(BrokerLives {
        starts: vec![0],
        kills: Vec::new(),
    }));
    let server_flags = server_flags(cfg, gate.addr);
    let addrs = two_ports()?.map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)));
    let mut instances = Vec::new();
    let mut rss = Vec::new();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let mut flags = server_flags.clone();
        flags.extend(["--kafka-group".into(), format!("soak-{name}")]);
        progress(format!("starting instance {name} on {}", addrs[i]));
        let instance = Instance::start(name, &cfg.ssepush, addrs[i], flags, &cfg.log_dir).await?;
        rss.push(ProcessRss {
            instance: name,
            restarted_s: None,
            start: instance.rss_kib(),
            warm: None,
            end: None,
            killed: false,
        });
        instances.push(instance);
    }
    wait_ready(&instances).await?;
    let pids = rss_trace::Pids::default();
    for (i, instance) in instances.iter().enumerate() {
        pids.set(i, instance.pid());
    }

    let shared = Arc::new(Shared::new(addrs));
    let register = Arc::new(Register::default());
    let kafka = Kafka::new(gate.addr, register.clone(), shared.clone())?;
    let prober = Prober::new(kafka.clone(), cfg.users as u32);
    let mut rng = Rng::new(cfg.seed);

    progress(format!(
        "opening {} streams for {} users",
        cfg.streams, cfg.users
    ));
    let opening = Arc::new(Semaphore::new(128));
    let mut lineages = JoinSet::new();
    let mut live = Vec::with_capacity(cfg.streams);
    for j in 0..cfg.streams {
        let user = (j % cfg.users) as u32;
        let spec = Spec {
            user,
            home: (j / cfg.users + user as usize) % 2,
            churns: (rng.below(1000) as f64) < cfg.churn_share * 1000.0,
        };
        let l = Arc::new(Live::default());
        live.push(l.clone());
        lineages.spawn(lineage::run(
            spec,
            shared.clone(),
            l,
            rng.fork(j as u64),
            opening.clone(),
        ));
    }
    wait_connected(&live, Duration::from_secs(120)).await?;
    progress("all streams open; checking that a probe reaches every one");
    if let Err(behind) =
        faults::wait_recovered(&prober, &live, Instant::now(), Duration::from_secs(60)).await
    {
        bail!("{behind} streams got no probe within 60 s: the v3 path is not live");
    }
    let setup = t0.elapsed();

    // The load.
    progress(format!(
        "load for {:.1} min: {} msg/s, {:.0}% of streams churning, {} stalled clients, faults: {:?}",
        cfg.minutes,
        cfg.rate,
        cfg.churn_share * 100.0,
        cfg.stalled,
        cfg.faults
    ));
    let (load_start, load_start_us) = (Instant::now(), now_us());
    let sampling_stop = tokio_util::sync::CancellationToken::new();
    let sampler = tokio::spawn(rss_trace::sample(
        pids.clone(),
        load_start,
        sampling_stop.clone(),
    ));
    let at = |d: Duration| load_start + d;
    let mut publishers = JoinSet::new();
    let period = Duration::from_secs_f64(POSTERS as f64 / (cfg.rate / 2.0).max(0.1));
    for i in 0..POSTERS {
        publishers.spawn(publish::post_loop(
            shared.clone(),
            register.clone(),
            cfg.users as u32,
            period,
            i % 2,
            rng.fork(1_000_000 + i as u64),
        ));
    }
    publishers.spawn(publish::produce_loop(
        kafka.clone(),
        cfg.users as u32,
        cfg.rate / 2.0,
        FILLERS,
        FILLER_RATE,
        rng.fork(2_000_000),
    ));
    let mut stalled_clients = JoinSet::new();
    for i in 0..cfg.stalled {
        stalled_clients.spawn(stalled::run(i, FILLERS, shared.clone()));
    }

    let mut problems = Vec::new();
    tokio::time::sleep_until(at(cfg.warmup())).await;
    for (i, instance) in instances.iter_mut().enumerate() {
        if let Err(e) = instance.check_alive() {
            problems.push(format!("{e:#}"));
        }
        rss[i].warm = instance
            .rss_kib()
            .map(|kib| (kib, load_start.elapsed().as_secs_f64()));
    }
    progress(format!(
        "after warm-up: RSS a {:?} KiB, b {:?} KiB; {} messages so far",
        rss[0].warm.map(|w| w.0),
        rss[1].warm.map(|w| w.0),
        register.len()
    ));

    let mut reports = Vec::new();
    let mut rewarm: Option<(usize, Instant)> = None;
    for (fault, when) in cfg.faults.iter().zip(cfg.fault_times()) {
        tokio::time::sleep_until(at(when)).await;
        progress(format!("fault: {}", fault.name()));
        let report = match fault {
            Fault::Broker => {
                faults::broker(&mut broker, &gate, &lives, &prober, &live, RECOVERY_CAP).await
            }
            Fault::Instance => {
                let i = 1;
                rss[i].end = instances[i].rss_kib();
                rss[i].killed = true;
                pids.set(i, None);
                let report =
                    faults::instance(&mut instances[i], &prober, &live, RECOVERY_CAP).await;
                pids.set(i, instances[i].pid());
                shared.rehome.send_modify(|generation| *generation += 1);
                let back = load_start.elapsed();
                rss.push(ProcessRss {
                    instance: instances[i].name,
                    restarted_s: Some(back.as_secs_f64()),
                    start: instances[i].rss_kib(),
                    warm: None,
                    end: None,
                    killed: false,
                });
                // The new process's own warm-up reading, if the run leaves time for one.
                let left = cfg.load().saturating_sub(back);
                let warm = cfg.warmup().min(left / 2);
                if warm >= Duration::from_secs(5) {
                    rewarm = Some((rss.len() - 1, Instant::now() + warm));
                }
                report
            }
        };
        progress(format!(
            "{}: recovery {:?}{}",
            fault.name(),
            report.recovery,
            match (&report.error, report.behind) {
                (Some(e), _) => format!("; restart failed: {e}"),
                (None, 0) => String::new(),
                (None, n) => format!("; {n} streams never recovered"),
            }
        ));
        if let Some(e) = &report.error {
            problems.push(format!("{} failed: {e}", fault.name()));
        }
        reports.push(report);
    }
    if let Some((k, when)) = rewarm {
        tokio::time::sleep_until(when).await;
        let i = 1;
        rss[k].warm = instances[i]
            .rss_kib()
            .map(|kib| (kib, load_start.elapsed().as_secs_f64()));
    }
    tokio::time::sleep_until(at(cfg.load())).await;
    let load = load_start.elapsed();

    // Drain.
    progress("publishing stops; draining");
    let drain_start = Instant::now();
    shared.publish_stop.cancel();
    while tokio::time::timeout(Duration::from_secs(20), publishers.join_next())
        .await
        .is_ok_and(|r| r.is_some())
    {}
    kafka.settle(Duration::from_secs(12)).await;
    shared.churn_stop.cancel();
    // A last probe round through the whole path: once a stream has it, its instance has handed
    // everything before it in the partition to the hub.
    if let Err(behind) = faults::wait_recovered(&prober, &live, Instant::now(), DRAIN_MAX).await {
        problems.push(format!(
            "{behind} streams never got the final probe within {} s: the v3 path was not live at the end",
            DRAIN_MAX.as_secs()
        ));
    }
    let drain_deadline = Instant::now() + DRAIN_QUIET * 2;
    loop {
        let quiet_us = now_us().saturating_sub(shared.last_receipt_us.load(Relaxed));
        if quiet_us >= DRAIN_QUIET.as_micros() as u64 || Instant::now() >= drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for instance in instances.iter_mut() {
        if let Err(e) = instance.check_alive() {
            problems.push(format!("{e:#}"));
        }
    }
    for (k, reading) in rss.iter_mut().enumerate() {
        if !reading.killed {
            let i = if k == 0 { 0 } else { 1 };
            reading.end = instances[i].rss_kib();
        }
    }
    let drain = drain_start.elapsed();
    let mut consumed = [None; 2];
    for (i, instance) in instances.iter().enumerate() {
        consumed[i] = metric(instance.addr, "ssepush_kafka_records_total").await;
    }
    sampling_stop.cancel();
    let rss_tsv = sampler.await.unwrap_or_default();
    shared.stop.cancel();
    let mut logs: Vec<LineageLog> = Vec::with_capacity(cfg.streams);
    while let Some(joined) = lineages.join_next().await {
        logs.push(joined.context("a lineage task panicked")?);
    }
    while stalled_clients.join_next().await.is_some() {}
    for instance in instances.iter_mut() {
        instance.kill().await;
    }
    broker.stop().await;
    progress("settling the ledger");

    let lives = lives.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let windows: Vec<(Us, Us)> = reports.iter().map(|r| r.window(RECOVERY_CAP)).collect();
    let messages = register.snapshot();
    let outcome = ledger::evaluate(&messages, &logs, &lives, &windows);
    for (file, text) in [
        ("messages.tsv", dump::messages_tsv(&messages, &logs, &lives)),
        (
            "duplicates.tsv",
            dump::duplicates_tsv(&messages, &logs, &lives),
        ),
        ("rss.tsv", rss_tsv),
    ] {
        let path = cfg.log_dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    let wall = |us: Us| wall0 + Duration::from_micros(us.saturating_sub(us0));
    let wall_windows: Vec<_> = windows.iter().map(|&(a, b)| (wall(a), wall(b))).collect();
    let logs = logscan::scan(&logscan::server_logs(&cfg.log_dir), &wall_windows);
    let c = &shared.counters;
    let get = shared::Counters::get;
    Ok(Run {
        cfg: cfg.clone(),
        outcome,
        rss,
        faults: reports,
        tally: Tally {
            reconnects_churn: get(&c.reconnects_churn),
            reconnects_dropped: get(&c.reconnects_dropped),
            reconnects_home: get(&c.reconnects_home),
            open_failures: get(&c.open_failures),
            post_failures: get(&c.post_failures),
            produce_failures: get(&c.produce_failures),
            filler_sent: get(&c.filler_sent),
            stalled_opened: get(&c.stalled_opened),
            stalled_cut: get(&c.stalled_cut),
            stalled_open: get(&c.stalled_open),
        },
        logs,
        phases: [setup, load, drain],
        problems,
        server_flags,
        load_start_us,
        consumed,
    })
}

/// Flags both instances get (besides host, port and consumer group).
fn server_flags(cfg: &Config, broker: SocketAddr) -> Vec<String> {
    let mut flags: Vec<String> = vec![
        format!("--kafka-brokers={broker}"),
        "--kafka-session-timeout=2s".into(),
        // POSTs during the broker outage answer 503 sooner.
        "--kafka-timeout=3s".into(),
        format!("--history-ttl={}s", cfg.history_ttl().as_secs()),
        // Stalled clients are cut within seconds of their socket filling up.
        "--write-timeout=10s".into(),
        format!("--static-dir={}", cfg.log_dir.join("www").display()),
    ];
    // The lineages share 249 source addresses, the POSTs a few connections.
    flags.extend(UNLIMITED_CLIENT.iter().map(|f| f.to_string()));
    flags.extend(cfg.ssepush_args.iter().cloned());
    flags
}

/// Empties the previous run's logs and gives the instances a one-line web UI, so that they
/// don't warn about a missing one.
fn prepare_log_dir(cfg: &Config) -> Result<()> {
    let dir = &cfg.log_dir;
    std::fs::create_dir_all(dir.join("www"))
        .with_context(|| format!("create {}", dir.display()))?;
    for file in [
        "ssepush-a.log",
        "ssepush-b.log",
        "tansu.log",
        "messages.tsv",
        "duplicates.tsv",
        "rss.tsv",
    ] {
        let _ = std::fs::remove_file(dir.join(file));
    }
    std::fs::write(
        dir.join("www/index.html"),
        "<!doctype html><title>soak</title>\n",
    )?;
    Ok(())
}

/// Two different free ports.
fn two_ports() -> Result<[u16; 2]> {
    let first = free_port()?;
    for _ in 0..10 {
        let second = free_port()?;
        if second != first {
            return Ok([first, second]);
        }
    }
    bail!("no second free port")
}

/// Waits until both instances' `/readyz` says Kafka is there.
async fn wait_ready(instances: &[Instance]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for instance in instances {
        while !instance.ready().await {
            if Instant::now() > deadline {
                bail!("instance {} not ready within 60 s", instance.name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Waits until every lineage has a stream open.
async fn wait_connected(live: &[Arc<Live>], max: Duration) -> Result<()> {
    let deadline = Instant::now() + max;
    loop {
        let open = live.iter().filter(|l| l.connected.load(Relaxed)).count();
        if open == live.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "only {open} of {} streams opened within {max:?}",
                live.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A progress line on stderr (the table goes to stdout).
pub fn progress(msg: impl AsRef<str>) {
    eprintln!("[soak {:>7.1}s] {}", now_us() as f64 / 1e6, msg.as_ref());
}
