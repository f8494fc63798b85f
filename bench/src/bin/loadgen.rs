//! The load generator: spawns ssepush and the baseline, runs the scenarios, prints a markdown
//! table. `loadgen --help` lists the knobs; `--quick` is a smoke run of a minute or two.

use anyhow::{Context, Result};
use bench::procstat::{Binaries, Kind, clk_tck, raise_fd_limit};
use bench::scenario::{churn, drain, fanout, idle, idle_h2, kafka, progress, wide};
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
}

impl Args {
    /// An explicit flag, else the quick or the full default.
    fn size<T: Copy>(&self, explicit: Option<T>, full: T, quick: T) -> T {
        explicit.unwrap_or(if self.quick { quick } else { full })
    }

    fn wants(&self, scenario: Scenario) -> bool {
        self.scenario.is_empty() || self.scenario.contains(&scenario)
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
