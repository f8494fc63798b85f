//! The soak: two ssepush instances on v3 with a tansu broker, thousands of churning streams,
//! publishing over HTTP and Kafka, stalled clients, the broker and an instance SIGKILLed and
//! restarted, and a ledger proving nothing was lost or duplicated. Prints a markdown table,
//! writes it to `--output`, and exits 1 if a target was missed (2 if the run itself failed).
//! `scripts/soak.sh [MINUTES]` builds and runs it; `soak --help` lists the knobs.

use anyhow::{Context, Result};
use bench::procstat::raise_fd_limit;
use bench::soak::faults::Fault;
use bench::soak::{self, Config, progress};
use bench::tansu::find_tansu;
use clap::{Parser, ValueEnum};
use std::path::PathBuf;

/// Streams by default; runs shorter than [`SHORT_RUN`] minutes open [`SHORT_STREAMS`].
const STREAMS: usize = 5_000;
const SHORT_STREAMS: usize = 2_000;
const SHORT_RUN: f64 = 2.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FaultArg {
    Broker,
    Instance,
    /// No faults.
    None,
}

#[derive(Parser, Debug)]
#[command(
    about = "Soak test: two ssepush instances on v3 with a tansu broker, churning streams, faults, and a ledger of every message",
    after_help = "Exit status: 0 if every target was met, 1 if one was missed, 2 if the run failed."
)]
struct Args {
    /// Minutes of load, faults included (setup and drain take about a minute more).
    #[arg(default_value_t = 15.0)]
    minutes: f64,
    /// SSE streams across both instances [default: 5000; 2000 for runs under 2 minutes, which
    /// CI runs on busy 2-core machines].
    #[arg(long)]
    streams: Option<usize>,
    /// Users the streams are spread over [default: a fifth of the streams].
    #[arg(long)]
    users: Option<usize>,
    /// Faults to inject, comma separated, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "broker,instance"
    )]
    faults: Vec<FaultArg>,
    /// The server under test [default: `ssepush` next to this binary].
    #[arg(long)]
    ssepush: Option<PathBuf>,
    /// Extra argument for both instances (repeatable), e.g. `--ssepush-arg=--queue-len=512`.
    #[arg(long, allow_hyphen_values = true)]
    ssepush_arg: Vec<String>,
    /// Messages a second, half POSTed to the instances, half produced to the topic.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Share of streams that disconnect every 2-8 s and resume with Last-Event-ID.
    #[arg(long, default_value_t = 0.3)]
    churn: f64,
    /// Stalled clients (a stream never read).
    #[arg(long, default_value_t = 8)]
    stalled: usize,
    /// Seed for the random choices [default: the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// Where the servers' and the broker's logs go.
    #[arg(long, default_value = "target/soak-logs")]
    log_dir: PathBuf,
    /// Also write the summary to this file.
    #[arg(long, default_value = "target/soak-results.md")]
    output: PathBuf,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let code = match run(Args::parse()).await {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("soak failed: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

async fn run(args: Args) -> Result<bool> {
    anyhow::ensure!(args.minutes > 0.0, "MINUTES must be positive");
    let fd_limit = raise_fd_limit()?;
    let exe_dir = std::env::current_exe()?
        .parent()
        .context("exe has no directory")?
        .to_path_buf();
    let streams = args.streams.unwrap_or(if args.minutes < SHORT_RUN {
        SHORT_STREAMS
    } else {
        STREAMS
    });
    let faults = args
        .faults
        .iter()
        .filter_map(|f| match f {
            FaultArg::Broker => Some(Fault::Broker),
            FaultArg::Instance => Some(Fault::Instance),
            FaultArg::None => None,
        })
        .collect();
    let cfg = Config {
        minutes: args.minutes,
        streams,
        users: args.users.unwrap_or(streams / 5).clamp(1, streams.max(1)),
        faults,
        ssepush: args.ssepush.unwrap_or_else(|| exe_dir.join("ssepush")),
        tansu: find_tansu().context("tansu not on PATH (scripts/install-deps.sh installs it)")?,
        ssepush_args: args.ssepush_arg,
        log_dir: args.log_dir,
        rate: args.rate,
        churn_share: args.churn.clamp(0.0, 1.0),
        stalled: args.stalled,
        seed: args.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        }),
    };
    progress(format!(
        "fd limit {fd_limit}; ssepush {}; logs in {}; seed {}",
        cfg.ssepush.display(),
        cfg.log_dir.display(),
        cfg.seed
    ));
    let run = soak::run(&cfg).await?;
    let (table, all_met) = soak::report::render(&run);
    println!("{table}");
    if let Some(dir) = args.output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.output, &table)
        .with_context(|| format!("write {}", args.output.display()))?;
    progress(format!(
        "summary written to {}; every target {}",
        args.output.display(),
        if all_met { "met" } else { "NOT met" }
    ));
    Ok(all_met)
}
