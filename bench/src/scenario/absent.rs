//! absent-cpu: the server's CPU per Kafka record for a user with no stream on this instance:
//! the record's parse and its history insert (and, once the budget is full, an eviction).
//!
//! The consumer is proved live with a probe record; the server's idle CPU is read over a few
//! seconds while `/metrics` is polled as it is later. Then, per round: the server is paused
//! (SIGSTOP), `records` records for `users` users without streams are produced, the server is
//! resumed in front of that backlog, and its utime + stime until `/metrics` says it has read
//! them all, less the idle rate over the same time, is divided by the records.
//!
//! Then `kafka-floor` (next to `loadgen`) reads the same records with the Kafka client alone,
//! under the server's consumer settings, and does nothing with them: the part of the figure no
//! change to the server's own code can remove. Last, `insert-alone` parses the same records and
//! puts them in a v3 hub, in a process of its own with the server's allocator and default
//! history settings, without Kafka: the server's own share on its own, and how it grows with
//! the number of users (a user's entry and history are a cache miss once they are many).

use super::kafka::signal;
use super::records::{Producer, RECORDS_READ, probe_consumer, wait_for_metric};
use super::{median, progress};
use crate::http::metric;
use crate::procstat::{Binaries, CpuMark, Kind, Server, sibling_binary};
use crate::table::{Row, fmt_num};
use crate::tansu::Broker;
use anyhow::{Context, Result, ensure};
use futures_util::StreamExt;
use rdkafka::{
    ClientConfig, Message,
    consumer::{Consumer, StreamConsumer},
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Sizes for absent-cpu.
#[derive(Debug, Clone)]
pub struct Config {
    /// Records per round.
    pub records: u64,
    /// Users the records are spread over (none has a stream).
    pub users: u64,
    pub payload: usize,
    pub rounds: usize,
    pub topic: String,
    /// `kafka-floor` (default: next to this executable).
    pub floor: Option<PathBuf>,
    /// `insert-alone` (default: next to this executable).
    pub insert: Option<PathBuf>,
}

/// One round.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// CPU per record less the idle rate, user + kernel, in microseconds.
    pub us_per_record: f64,
    pub user_us_per_record: f64,
    pub sys_us_per_record: f64,
    pub records_per_sec: f64,
}

/// What absent-cpu measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub records: u64,
    pub users: u64,
    pub idle_us_per_sec: f64,
    pub rounds: Vec<Round>,
    pub rss_mib: f64,
    /// The Kafka client alone on the same records.
    pub floor: Result<FloorCpu, String>,
    /// Parse and history insert alone (`insert-alone`), per number of users.
    pub insert: Vec<(u64, Result<f64, String>)>,
}

pub async fn run(bins: &Binaries, cfg: &Config) -> Result<Outcome> {
    let broker = Broker::start_found(&bins.log_dir, &cfg.topic).await?;
    let mut producer = Producer::backlog(broker.addr, &cfg.topic)?;
    let mut extra = broker.server_args();
    // The server is paused while a backlog is produced: its group membership must outlast the
    // pause.
    extra.push("--kafka-session-timeout=60s".into());
    let server = Server::start(bins, Kind::Ssepush, &extra).await?;
    let (addr, pid) = (server.addr, server.pid());
    probe_consumer(&mut producer, addr, "probe", 1.0, Duration::from_secs(60)).await?;
    let mut read = metric(addr, RECORDS_READ).await.unwrap_or(0.0);

    // Idle: the same /metrics polling as below, nothing to read.
    let idle = CpuMark::now(pid)?;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let _ = metric::<f64>(addr, RECORDS_READ).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let idle = idle.since(pid)?;
    let idle_us_per_sec = idle.total_us() as f64 / idle.wall.as_secs_f64();
    progress(format!(
        "absent-cpu: idle {idle_us_per_sec:.0} us CPU per second"
    ));

    let pad = "x".repeat(cfg.payload.saturating_sub(20));
    let mut rounds = Vec::new();
    let mut seq = 0u64;
    for round in 0..cfg.rounds {
        signal(pid, "-STOP").await?;
        for _ in 0..cfg.records {
            let value = format!("a_{}:{seq} {pad}", seq % cfg.users);
            seq += 1;
            producer.send(value.as_bytes(), None).await?;
        }
        let acked = producer.flush(Duration::from_secs(300)).await;
        let mark = CpuMark::now(pid);
        signal(pid, "-CONT").await?;
        let (acked, mark) = (acked?, mark?);
        ensure!(
            acked == producer.sent(),
            "only {acked} of {} records were acknowledged",
            producer.sent()
        );
        let target = read + cfg.records as f64;
        let now = wait_for_metric(
            addr,
            RECORDS_READ,
            target,
            Duration::from_millis(200),
            Duration::from_secs(20),
            Duration::from_secs(600),
        )
        .await;
        let used = mark.since(pid)?;
        ensure!(
            now >= target,
            "round {round}: the server read {} of {} records",
            now - read,
            cfg.records
        );
        read = now;
        let wall = used.wall.as_secs_f64();
        let idle_share = idle_us_per_sec * wall;
        let n = cfg.records as f64;
        // The idle rate is split between user and kernel as it was measured.
        let idle_user = idle_share * idle.user_us as f64 / idle.total_us().max(1) as f64;
        let r = Round {
            us_per_record: (used.total_us() as f64 - idle_share) / n,
            user_us_per_record: (used.user_us as f64 - idle_user) / n,
            sys_us_per_record: (used.sys_us as f64 - (idle_share - idle_user)) / n,
            records_per_sec: n / wall,
        };
        progress(format!(
            "absent-cpu: round {} of {}: {r:?} (CPU {} us over {wall:.2} s)",
            round + 1,
            cfg.rounds,
            used.total_us()
        ));
        rounds.push(r);
    }
    let rss_mib = server.rss_kib()? as f64 / 1024.0;
    let held = |name| metric::<f64>(addr, name);
    progress(format!(
        "absent-cpu: at the end, RSS {rss_mib:.0} MiB, history {:.1} MiB charged in {} entries",
        held("ssepush_history_bytes").await.unwrap_or(f64::NAN) / (1 << 20) as f64,
        held("ssepush_history_messages{api=\"v3\"}")
            .await
            .unwrap_or(f64::NAN),
    ));
    server.stop().await;
    // Every record the server read: the probe and the rounds.
    let floor = floor(cfg, broker.addr, read as u64)
        .await
        .map_err(|e| format!("{e:#}"));
    broker.stop().await;
    let mut insert = Vec::new();
    for users in insert_users(cfg.users) {
        let us = insert_in_process(cfg, users)
            .await
            .map_err(|e| format!("{e:#}"));
        progress(format!(
            "absent-cpu: parse and history insert alone, {users} users: {us:?} us per record"
        ));
        insert.push((users, us));
    }
    Ok(Outcome {
        records: cfg.records,
        users: cfg.users,
        idle_us_per_sec,
        rounds,
        rss_mib,
        floor,
        insert,
    })
}

/// The user counts the in-process insert is measured at: a few, and the scenario's own.
fn insert_users(users: u64) -> Vec<u64> {
    let mut all = vec![1_000, 10_000, users, 400_000];
    all.sort_unstable();
    all.dedup();
    all
}

/// `insert-alone`'s options.
#[derive(Debug, Clone, clap::Parser)]
pub struct InsertOpts {
    /// Records per round.
    #[arg(long)]
    pub records: u64,
    #[arg(long)]
    pub rounds: usize,
    #[arg(long)]
    pub users: u64,
    #[arg(long)]
    pub payload: usize,
    /// The history budget in MiB [the server's default]; a large one never fills, for the
    /// cost without eviction.
    #[arg(long)]
    pub budget_mib: Option<usize>,
}

/// Runs `insert-alone` for `users` users in a process of its own, with the server's allocator.
async fn insert_in_process(cfg: &Config, users: u64) -> Result<f64> {
    let args = [
        ("--records", cfg.records.to_string()),
        ("--rounds", cfg.rounds.to_string()),
        ("--users", users.to_string()),
        ("--payload", cfg.payload.to_string()),
    ];
    run_sibling(cfg.insert.as_deref(), "insert-alone", &args).await
}

/// Runs the bench binary `name` (next to this one unless `explicit`) with `args`, in a
/// process of its own so that its CPU is all its own work, and reads its JSON output.
async fn run_sibling<T: serde::de::DeserializeOwned>(
    explicit: Option<&std::path::Path>,
    name: &str,
    args: &[(&str, String)],
) -> Result<T> {
    let bin = sibling_binary(explicit, name)?;
    let mut command = tokio::process::Command::new(&bin);
    for (flag, value) in args {
        command.args([flag, value.as_str()]);
    }
    let run = command.kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .with_context(|| format!("{name} ran over 600 s"))??;
    ensure!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).with_context(|| format!("{name}'s output"))
}

/// Parses `rounds` x `records` records like the rounds' and puts them in a v3 hub with the
/// server's default history settings; the median over the rounds (after one more first round,
/// which only fills the budget, as the server's first rounds do) of CPU per record, user +
/// kernel, in microseconds. Each round's records are made before its clock starts.
pub fn insert_alone(opts: &InsertOpts) -> Result<f64> {
    use server::hub::{HistoryMemory, Hub, Numbering, Position};
    let config = server::config::Config::from_args(["ssepush"])?;
    let hub = Hub::new(
        server::state::hub_config(&config, "v3", Numbering::Source, true),
        HistoryMemory::new(
            opts.budget_mib
                .map_or(config.history_max_bytes, |m| m << 20),
        ),
    );
    hub.open_lane(0, 0);
    let pad = "x".repeat(opts.payload.saturating_sub(20));
    let pid = std::process::id();
    let mut seq = 0u64;
    let mut per_record = Vec::new();
    for round in 0..=opts.rounds {
        let values: Vec<String> = (seq..seq + opts.records)
            .map(|s| format!("a_{}:{s} {pad}", s % opts.users))
            .collect();
        let mark = CpuMark::now(pid)?;
        for value in &values {
            let (user, text) = server::kafka::record::parse_event(
                Some(value.as_bytes()),
                config.max_body,
                config.max_frame_bytes,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            hub.publish_stamped(user, text, Position::new(0, seq), 0);
            seq += 1;
        }
        let used = mark.since(pid)?;
        if round > 0 {
            per_record.push(used.total_us() as f64 / opts.records as f64);
        }
    }
    median(&per_record).context("no rounds")
}

/// `kafka-floor`'s options.
#[derive(Debug, Clone, clap::Parser)]
pub struct FloorOpts {
    #[arg(long)]
    pub broker: std::net::SocketAddr,
    #[arg(long)]
    pub topic: String,
    /// Records to read from the topic's start.
    #[arg(long)]
    pub records: u64,
}

/// What reading the records alone cost, from the first record to the last.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct FloorCpu {
    pub us_per_record: f64,
    pub user_us_per_record: f64,
    pub sys_us_per_record: f64,
    pub records_per_sec: f64,
}

/// Runs `kafka-floor` in a process of its own, so its CPU is all it read.
async fn floor(cfg: &Config, broker: std::net::SocketAddr, records: u64) -> Result<FloorCpu> {
    progress(format!(
        "absent-cpu: the Kafka client alone reads the {records} records"
    ));
    let args = [
        ("--broker", broker.to_string()),
        ("--topic", cfg.topic.clone()),
        ("--records", records.to_string()),
    ];
    let cpu: FloorCpu = run_sibling(cfg.floor.as_deref(), "kafka-floor", &args).await?;
    progress(format!("absent-cpu: the Kafka client alone: {cpu:?}"));
    Ok(cpu)
}

/// The server's own consumer settings (defaults, this broker and topic), in a group of its own.
fn floor_config(opts: &FloorOpts) -> Result<ClientConfig> {
    let broker = opts.broker.to_string();
    let config = server::config::Config::from_args([
        "ssepush",
        "--kafka-brokers",
        &broker,
        "--kafka-topic",
        &opts.topic,
    ])?;
    let settings = server::kafka::Settings::from_config(&config).context("kafka switched off")?;
    let mut client = server::kafka::consumer_config(&settings);
    let group = format!("kafka-floor-{}", std::process::id());
    client.set("group.id", &group).set("client.id", &group);
    Ok(client)
}

/// Reads `opts.records` records and touches each one's payload, nothing more.
pub async fn read_only(opts: &FloorOpts) -> Result<FloorCpu> {
    let consumer: StreamConsumer = floor_config(opts)?.create()?;
    consumer.subscribe(&[&opts.topic])?;
    let pid = std::process::id();
    let first = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .context("no record within 60 s")??;
    let mark = CpuMark::now(pid)?;
    let mut bytes = first.payload().map_or(0, <[u8]>::len);
    drop(first);
    let mut messages = consumer.stream();
    for _ in 1..opts.records {
        let message = tokio::time::timeout(Duration::from_secs(60), messages.next())
            .await
            .context("the records stopped coming for 60 s")?
            .context("the stream ended")??;
        bytes += message.payload().map_or(0, <[u8]>::len);
    }
    let used = mark.since(pid)?;
    ensure!(bytes > 0, "the records were empty");
    let n = opts.records.saturating_sub(1).max(1) as f64;
    Ok(FloorCpu {
        us_per_record: used.total_us() as f64 / n,
        user_us_per_record: used.user_us as f64 / n,
        sys_us_per_record: used.sys_us as f64 / n,
        records_per_sec: n / used.wall.as_secs_f64(),
    })
}

/// Rows for absent-cpu.
pub fn rows(outcome: &Result<Outcome>) -> Vec<Row> {
    const S: &str = "absent-cpu";
    let o = match outcome {
        Ok(o) => o,
        Err(err) => return vec![Row::note(S, &format!("failed: {err:#}"), Some(false))],
    };
    let med = |f: fn(&Round) -> f64| median(&o.rounds.iter().map(f).collect::<Vec<_>>());
    let total = med(|r| r.us_per_record);
    let all: Vec<String> = o
        .rounds
        .iter()
        .map(|r| format!("{:.3}", r.us_per_record))
        .collect();
    let mut rows = vec![
        Row::target(
            S,
            &format!(
                "CPU per record, user without a stream (us, user + kernel, median of {} rounds of {} records, {} users)",
                o.rounds.len(),
                fmt_num(o.records as f64),
                fmt_num(o.users as f64)
            ),
            total,
            None,
            "<= 1",
            total.map(|t| t <= 1.0),
        ),
        Row::info(S, "of which user (us)", med(|r| r.user_us_per_record), None),
        Row::info(
            S,
            "of which kernel (us)",
            med(|r| r.sys_us_per_record),
            None,
        ),
        Row::info(
            S,
            "records read per second",
            med(|r| r.records_per_sec),
            None,
        ),
        Row::info(
            S,
            "idle CPU subtracted (us per second)",
            Some(o.idle_us_per_sec),
            None,
        ),
        Row::info(S, "RSS at the end (MiB)", Some(o.rss_mib), None),
        Row::note(S, &format!("every round (us): {}", all.join(" ")), None),
        match &o.floor {
            Ok(floor) => Row::info(
                S,
                "the Kafka client alone on the same records, the server's consumer settings (us per record, user + kernel)",
                Some(floor.us_per_record),
                None,
            ),
            Err(e) => Row::note(
                S,
                &format!("the Kafka client alone: failed: {e}"),
                Some(false),
            ),
        },
        Row::info(
            S,
            "the server's own share (us per record: the first figure less the Kafka client's)",
            total
                .zip(o.floor.as_ref().ok())
                .map(|(t, f)| t - f.us_per_record),
            None,
        ),
    ];
    for (users, us) in &o.insert {
        let metric = format!(
            "parse and history insert alone (insert-alone, no Kafka), {} users (us per record)",
            fmt_num(*users as f64)
        );
        rows.push(match us {
            Ok(us) => Row::info(S, &metric, Some(*us), None),
            Err(e) => Row::note(S, &format!("{metric}: failed: {e}"), Some(false)),
        });
    }
    rows
}
