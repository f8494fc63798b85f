//! The load generator: spawns ssepush and the baseline, runs the scenarios, prints a markdown
//! table. `loadgen --help` lists the knobs; `--quick` is a smoke run of a minute or two.

use anyhow::{Context, Result};
use bench::procstat::{Binaries, Kind, clk_tck, raise_fd_limit};
use bench::scenario::{
    absent, churn, cluster, drain, fanout, idle, idle_h2, kafka, memory, progress, startup, wide,
};
use bench::table::{Row, render};
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Idle,
    IdleH2,
    Drain,
    FanoutHttp,
    /// fanout-http with authorization on and off, both ssepush.
    FanoutAuth,
    Wide,
    Kafka,
    Churn,
    /// Start-up time with many records older than the history window (not in the default run).
    StartupRetention,
    /// RSS of an instance reading a cluster's traffic for users it does not serve (not in the
    /// default run).
    MemoryTraffic,
    /// CPU per Kafka record for users without a stream (not in the default run).
    AbsentCpu,
    /// Several instances, one broker, streams spread over them (not in the default run).
    Cluster,
}

impl Scenario {
    /// The issue-13 scenarios run only when named: together they take several minutes.
    fn on_request_only(self) -> bool {
        matches!(
            self,
            Self::StartupRetention | Self::MemoryTraffic | Self::AbsentCpu | Self::Cluster
        )
    }
}

#[derive(Parser, Debug)]
#[command(about = "Benchmarks ssepush against a naive baseline and prints a markdown table")]
struct Args {
    /// Scenarios to run (comma separated); all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    scenario: Vec<Scenario>,
    /// Small sizes for a smoke run (explicit size flags still win).
    #[arg(long)]
    quick: bool,
    /// Skip the kafka scenario.
    #[arg(long)]
    skip_kafka: bool,
    /// Exit 1 when a target is missed.
    #[arg(long)]
    strict: bool,
    /// The server under test (default: `ssepush` next to this binary).
    #[arg(long)]
    ssepush: Option<PathBuf>,
    /// The baseline server (default: `baseline` next to this binary).
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Extra argument for every ssepush run (repeatable), e.g. `--ssepush-arg=--queue-len=512`.
    #[arg(long, allow_hyphen_values = true)]
    ssepush_arg: Vec<String>,
    /// Where the servers' logs go.
    #[arg(long, default_value = "target/bench-logs")]
    log_dir: PathBuf,
    /// Also write the table to this file.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Stream opens in flight at once.
    #[arg(long, default_value_t = 256)]
    open_concurrency: usize,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,

    /// idle: streams [19000; quick 2000].
    #[arg(long)]
    idle_streams: Option<usize>,
    /// idle: seconds the streams are held [3; quick 2].
    #[arg(long)]
    idle_hold_secs: Option<u64>,

    /// fanout-http: users with one stream each [1000; quick 200].
    #[arg(long)]
    fanout_users: Option<usize>,
    /// fanout-http: messages per run [100000; quick 10000].
    #[arg(long)]
    fanout_messages: Option<u64>,
    /// fanout-http: concurrent publishers.
    #[arg(long, default_value_t = 32)]
    fanout_publishers: usize,
    /// fanout-http: runs per server, alternating [3; quick 1].
    #[arg(long)]
    fanout_runs: Option<usize>,

    /// wide: streams of the one user [1000; quick 200].
    #[arg(long)]
    wide_streams: Option<usize>,
    /// wide: messages per second.
    #[arg(long, default_value_t = 50)]
    wide_rate: u64,
    /// wide: seconds of publishing [10; quick 3].
    #[arg(long)]
    wide_secs: Option<u64>,

    /// kafka: records in the backlog [100000; quick 10000].
    #[arg(long)]
    kafka_records: Option<u64>,
    /// kafka: users (one /v3/sse stream each) [10000; quick 1000].
    #[arg(long)]
    kafka_users: Option<usize>,
    /// kafka: messages timed one at a time for latency [200; quick 50].
    #[arg(long)]
    kafka_latency_samples: Option<usize>,
    /// kafka: the topic ssepush consumes.
    #[arg(long, default_value = "v3_messages")]
    kafka_topic: String,

    /// idle-h2: streams over each protocol [10000; quick 2000].
    #[arg(long)]
    idle_h2_streams: Option<usize>,
    /// drain: streams on the instance that is stopped [5000; quick 1000].
    #[arg(long)]
    drain_streams: Option<usize>,
    /// drain: the stopped instance's --drain, in seconds (a run with 0 comes first).
    #[arg(long, default_value_t = 5)]
    drain_secs: u64,

    /// churn: measured connect/disconnect cycles [100000; quick 5000].
    #[arg(long)]
    churn_cycles: Option<u64>,
    /// churn: warm-up cycles before the "before" RSS reading [10000; quick 1000].
    #[arg(long)]
    churn_warmup: Option<u64>,
    /// churn: users the cycles rotate over.
    #[arg(long, default_value_t = 1000)]
    churn_users: u64,
    /// churn: cycles in flight at once.
    #[arg(long, default_value_t = 64)]
    churn_concurrency: usize,

    /// startup-retention: records older than the history window [2000000; quick 200000].
    #[arg(long)]
    startup_old: Option<u64>,
    /// startup-retention: records inside the history window.
    #[arg(long, default_value_t = 10_000)]
    startup_recent: u64,
    /// startup-retention: runs of each size, alternating [2; quick 1].
    #[arg(long)]
    startup_runs: Option<usize>,

    /// memory-traffic: distinct users [200000; quick 20000].
    #[arg(long)]
    memory_users: Option<u64>,
    /// memory-traffic: records per user.
    #[arg(long, default_value_t = 5)]
    memory_per_user: u64,
    /// memory-traffic: record message size in bytes.
    #[arg(long, default_value_t = 200)]
    memory_payload: usize,
    /// memory-traffic: --history-max-bytes, in MiB.
    #[arg(long, default_value_t = 64)]
    memory_budget_mib: u64,

    /// absent-cpu: records per round [1000000; quick 100000].
    #[arg(long)]
    absent_records: Option<u64>,
    /// absent-cpu: users the records are spread over.
    #[arg(long, default_value_t = 100_000)]
    absent_users: u64,
    /// absent-cpu: rounds [3; quick 1].
    #[arg(long)]
    absent_rounds: Option<usize>,

    /// cluster: ssepush instances.
    #[arg(long, default_value_t = 4)]
    cluster_instances: usize,
    /// cluster: streams per instance [15000; quick 1000].
    #[arg(long)]
    cluster_streams: Option<usize>,
    /// cluster: records per second across all users [20000; quick 2000].
    #[arg(long)]
    cluster_rate: Option<u64>,
    /// cluster: seconds of the measured steady window [60; quick 10].
    #[arg(long)]
    cluster_secs: Option<u64>,
    /// cluster: seconds of records for users without streams, for their CPU [10; quick 5].
    #[arg(long)]
    cluster_absent_secs: Option<u64>,
}

impl Args {
    /// An explicit flag, else the quick or the full default.
    fn size<T: Copy>(&self, explicit: Option<T>, full: T, quick: T) -> T {
        explicit.unwrap_or(if self.quick { quick } else { full })
    }

    fn wants(&self, scenario: Scenario) -> bool {
        if self.scenario.is_empty() {
            !scenario.on_request_only()
        } else {
            self.scenario.contains(&scenario)
        }
    }
}

fn fanout_config(args: &Args) -> fanout::Config {
    fanout::Config {
        users: args.size(args.fanout_users, 1_000, 200),
        messages: args.size(args.fanout_messages, 100_000, 10_000),
        publishers: args.fanout_publishers,
        payload: args.payload,
        runs: args.size(args.fanout_runs, 3, 1),
        concurrency: args.open_concurrency,
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let fd_limit = raise_fd_limit()?;
    let exe_dir = std::env::current_exe()?
        .parent()
        .context("exe has no directory")?
        .to_path_buf();
    let bins = Binaries {
        ssepush: args
            .ssepush
            .clone()
            .unwrap_or_else(|| exe_dir.join("ssepush")),
        baseline: args
            .baseline
            .clone()
            .unwrap_or_else(|| exe_dir.join("baseline")),
        ssepush_args: args.ssepush_arg.clone(),
        log_dir: args.log_dir.clone(),
    };
    progress(format!(
        "fd limit {fd_limit}, CLK_TCK {}, ssepush {}, baseline {}",
        clk_tck(),
        bins.ssepush.display(),
        bins.baseline.display()
    ));
    let mut rows: Vec<Row> = Vec::new();
    let mut sizes = Vec::new();

    if args.wants(Scenario::Idle) {
        let cfg = idle::Config {
            streams: args.size(args.idle_streams, 19_000, 2_000),
            concurrency: args.open_concurrency,
            hold: Duration::from_secs(args.size(args.idle_hold_secs, 3, 2)),
        };
        sizes.push(format!("idle {} streams", cfg.streams));
        let ours = idle::run(&bins, Kind::Ssepush, &cfg).await;
        let base = idle::run(&bins, Kind::Baseline, &cfg).await;
        rows.extend(idle::rows(&ours, &base));
    }

    if args.wants(Scenario::IdleH2) {
        let cfg = idle_h2::Config {
            streams: args.size(args.idle_h2_streams, 10_000, 2_000),
            per_connection: 100,
            hold: Duration::from_secs(args.size(args.idle_hold_secs, 3, 2)),
        };
        sizes.push(format!("idle-h2 {} streams", cfg.streams));
        let outcome = idle_h2::run(&bins, &cfg).await;
        rows.extend(idle_h2::rows(&outcome, cfg.per_connection));
    }

    if args.wants(Scenario::Drain) {
        let cfg = drain::Config {
            streams: args.size(args.drain_streams, 5_000, 1_000),
            concurrency: args.open_concurrency,
        };
        sizes.push(format!("drain {} streams", cfg.streams));
        let outcome = drain::run(&bins, &cfg, Duration::from_secs(args.drain_secs)).await;
        rows.extend(drain::rows(&outcome));
    }

    if args.wants(Scenario::FanoutHttp) {
        let cfg = fanout_config(&args);
        sizes.push(format!(
            "fanout-http {} users, {} msgs x {} runs, {} publishers",
            cfg.users, cfg.messages, cfg.runs, cfg.publishers
        ));
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for run in 0..cfg.runs {
            progress(format!("fanout-http run {} of {}", run + 1, cfg.runs));
            ours.push(fanout::run(&bins, Kind::Ssepush, &cfg, None).await);
            base.push(fanout::run(&bins, Kind::Baseline, &cfg, None).await);
        }
        rows.extend(fanout::rows(&ours, &base));
    }

    if args.wants(Scenario::FanoutAuth) {
        let cfg = fanout_config(&args);
        sizes.push(format!(
            "fanout-auth {} users, {} msgs x {} runs",
            cfg.users, cfg.messages, cfg.runs
        ));
        let tokens = fanout::Tokens::mint(&bins)?;
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for run in 0..cfg.runs {
            progress(format!("fanout-auth run {} of {}", run + 1, cfg.runs));
            on.push(fanout::run(&bins, Kind::Ssepush, &cfg, Some(&tokens)).await);
            off.push(fanout::run(&bins, Kind::Ssepush, &cfg, None).await);
        }
        rows.extend(fanout::auth_rows(&on, &off));
    }

    if args.wants(Scenario::Wide) {
        let cfg = wide::Config {
            streams: args.size(args.wide_streams, 1_000, 200),
            rate: args.wide_rate,
            secs: args.size(args.wide_secs, 10, 3),
            payload: args.payload,
            concurrency: args.open_concurrency,
        };
        sizes.push(format!(
            "wide {} streams, {} msg/s x {} s",
            cfg.streams, cfg.rate, cfg.secs
        ));
        rows.extend(wide::rows(&wide::run(&bins, &cfg).await));
    }

    if args.wants(Scenario::Kafka) {
        let cfg = kafka::Config {
            records: args.size(args.kafka_records, 100_000, 10_000),
            users: args.size(args.kafka_users, 10_000, 1_000),
            payload: args.payload,
            concurrency: args.open_concurrency,
            topic: args.kafka_topic.clone(),
            latency_samples: args.size(args.kafka_latency_samples, 200, 50),
        };
        sizes.push(format!(
            "kafka {} records, {} users",
            cfg.records, cfg.users
        ));
        let outcome = if args.skip_kafka {
            Err(kafka::Skip::Skipped("--skip-kafka".into()))
        } else {
            kafka::run(&bins, &cfg).await
        };
        if let Err(kafka::Skip::Skipped(why)) = &outcome {
            progress(format!("kafka: skipped: {why}"));
        }
        rows.extend(kafka::rows(&outcome));
    }

    if args.wants(Scenario::Churn) {
        let cfg = churn::Config {
            cycles: args.size(args.churn_cycles, 100_000, 5_000),
            warmup: args.size(args.churn_warmup, 10_000, 1_000),
            users: args.churn_users,
            concurrency: args.churn_concurrency,
            settle: Duration::from_secs(2),
        };
        sizes.push(format!(
            "churn {} cycles (+{} warm-up)",
            cfg.cycles, cfg.warmup
        ));
        let ours = churn::run(&bins, Kind::Ssepush, &cfg).await;
        let base = churn::run(&bins, Kind::Baseline, &cfg).await;
        rows.extend(churn::rows(&ours, &base));
    }

    if args.wants(Scenario::StartupRetention) {
        let cfg = startup::Config {
            old: args.size(args.startup_old, 2_000_000, 200_000),
            recent: args.startup_recent,
            payload: args.payload,
            runs: args.size(args.startup_runs, 2, 1),
            history_ttl_secs: 600,
            topic: args.kafka_topic.clone(),
        };
        sizes.push(format!(
            "startup-retention N = 0 and {} old + {} recent records x {} runs",
            cfg.old, cfg.recent, cfg.runs
        ));
        rows.extend(startup::rows(&startup::run(&bins, &cfg).await));
    }

    if args.wants(Scenario::MemoryTraffic) {
        let cfg = memory::Config {
            users: args.size(args.memory_users, 200_000, 20_000),
            per_user: args.memory_per_user,
            payload: args.memory_payload,
            budget_mib: args.memory_budget_mib,
            settle: Duration::from_secs(5),
            topic: args.kafka_topic.clone(),
        };
        sizes.push(format!(
            "memory-traffic {} users x {} records of {} B, budget {} MiB",
            cfg.users, cfg.per_user, cfg.payload, cfg.budget_mib
        ));
        rows.extend(memory::rows(&memory::run(&bins, &cfg).await));
    }

    if args.wants(Scenario::AbsentCpu) {
        let cfg = absent::Config {
            records: args.size(args.absent_records, 1_000_000, 100_000),
            users: args.absent_users,
            payload: args.payload,
            rounds: args.size(args.absent_rounds, 3, 1),
            topic: args.kafka_topic.clone(),
            floor: None,
            insert: None,
        };
        sizes.push(format!(
            "absent-cpu {} records x {} rounds over {} users",
            cfg.records, cfg.rounds, cfg.users
        ));
        rows.extend(absent::rows(&absent::run(&bins, &cfg).await));
    }

    if args.wants(Scenario::Cluster) {
        let cfg = cluster::Config {
            instances: args.cluster_instances,
            streams: args.size(args.cluster_streams, 15_000, 1_000),
            rate: args.size(args.cluster_rate, 20_000, 2_000),
            idle_secs: 5,
            warmup_secs: 5,
            steady_secs: args.size(args.cluster_secs, 60, 10),
            absent_secs: args.size(args.cluster_absent_secs, 10, 5),
            payload: args.payload,
            concurrency: args.open_concurrency,
            topic: args.kafka_topic.clone(),
            worker: None,
        };
        sizes.push(format!(
            "cluster {} instances x {} streams, {} records/s for {} s",
            cfg.instances, cfg.streams, cfg.rate, cfg.steady_secs
        ));
        rows.extend(cluster::rows(&cluster::run(&bins, &cfg).await));
    }

    let mut table = render(&rows);
    table.push_str(&format!(
        "\nSizes: {}. ratio = ssepush / baseline; CPU and RSS measured from /proc; fanout-http figures are medians of alternating runs.\n",
        sizes.join("; ")
    ));
    println!("{table}");
    if let Some(path) = &args.output {
        std::fs::write(path, &table).with_context(|| format!("write {}", path.display()))?;
    }
    if args.strict && rows.iter().any(|r| r.met == Some(false)) {
        std::process::exit(1);
    }
    Ok(())
}
