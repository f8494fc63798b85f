//! Spawning the processes under test and measuring them from outside, through `/proc`.
//!
//! Measuring from outside keeps both servers honest: neither needs instrumentation, and the
//! figures include everything the process does (allocator, runtime threads, librdkafka).

use crate::http;
use anyhow::{Context, Result, bail, ensure};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Raises this process's RLIMIT_NOFILE soft limit to the hard limit; children inherit it.
pub fn raise_fd_limit() -> Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX).context("raise RLIMIT_NOFILE")
}

/// Clock ticks per second for `/proc/<pid>/stat` times (`getconf CLK_TCK`, normally 100).
pub fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// Resident set size in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    line.split_whitespace()
        .nth(1)
        .context("empty VmRSS line")?
        .parse()
        .context("parse VmRSS")
}

/// User and system CPU time of the whole process (all threads), in microseconds.
pub fn cpu_times_us(pid: u32) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    let tck = clk_tck();
    Ok((utime * 1_000_000 / tck, stime * 1_000_000 / tck))
}

/// CPU used between two readings.
#[derive(Debug, Clone, Copy)]
pub struct CpuUsed {
    pub user_us: u64,
    pub sys_us: u64,
    pub wall: Duration,
}

impl CpuUsed {
    /// User plus system microseconds.
    pub fn total_us(&self) -> u64 {
        self.user_us + self.sys_us
    }

    /// The kernel's share in percent: on loopback the sender's system time includes much of
    /// the TCP delivery to the receiver, a floor no user-space change removes.
    pub fn sys_pct(&self) -> f64 {
        self.sys_us as f64 * 100.0 / self.total_us().max(1) as f64
    }
}

/// A CPU reading to take differences from.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    user_us: u64,
    sys_us: u64,
    at: Instant,
}

impl CpuMark {
    /// Reads the process's CPU times now.
    pub fn now(pid: u32) -> Result<Self> {
        let (user_us, sys_us) = cpu_times_us(pid)?;
        Ok(Self {
            user_us,
            sys_us,
            at: Instant::now(),
        })
    }

    /// CPU used since this mark, and the wall time elapsed.
    pub fn since(&self, pid: u32) -> Result<CpuUsed> {
        let (user_us, sys_us) = cpu_times_us(pid)?;
        Ok(CpuUsed {
            user_us: user_us.saturating_sub(self.user_us),
            sys_us: sys_us.saturating_sub(self.sys_us),
            wall: self.at.elapsed(),
        })
    }
}

/// A free loopback TCP port (bound then released; the race is acceptable on a bench box).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Which server a run targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The server under test.
    Ssepush,
    /// The naive reference server.
    Baseline,
}

impl Kind {
    /// A short name for logs and file names.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ssepush => "ssepush",
            Kind::Baseline => "baseline",
        }
    }
}

/// `explicit` when given, else the binary `name` next to this executable; it must exist.
pub fn sibling_binary(explicit: Option<&Path>, name: &str) -> Result<PathBuf> {
    let bin = match explicit {
        Some(path) => path.to_owned(),
        None => std::env::current_exe()?.with_file_name(name),
    };
    ensure!(
        bin.is_file(),
        "{} not found (cargo build --release -p bench)",
        bin.display()
    );
    Ok(bin)
}

/// Where the server binaries are and what extra arguments `ssepush` gets.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub ssepush: PathBuf,
    pub baseline: PathBuf,
    /// Extra arguments for every `ssepush` run (from `--ssepush-arg`).
    pub ssepush_args: Vec<String>,
    /// Directory for the servers' stderr logs.
    pub log_dir: PathBuf,
}

/// Starts each run's section of a log file.
const RUN_HEADER: &str = "--- bench run: ";

/// The last lines of the latest run in `log`, without ANSI colours, for error messages.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let run = text.rsplit(RUN_HEADER).next().unwrap_or_default();
    let mut plain = String::with_capacity(run.len());
    let mut chars = run.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip a CSI sequence: ESC [ parameters final-byte.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let lines: Vec<&str> = plain
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    // The last line that names an error says the most; else the last two lines.
    match lines
        .iter()
        .rev()
        .find(|l| l.to_ascii_lowercase().contains("error"))
    {
        Some(line) => line.trim().to_owned(),
        None => lines[lines.len().saturating_sub(2)..].join(" / "),
    }
}

/// A spawned child process, killed when dropped.
pub struct Spawned {
    child: Child,
    pub pid: u32,
}

impl Spawned {
    /// Spawns `program` with a clean environment, its output appended to `log`.
    pub fn new(program: &Path, args: &[String], log: &Path) -> Result<Self> {
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        // A header per run, so a failure can quote its own run's last lines.
        writeln!(out, "{RUN_HEADER}{} {}", program.display(), args.join(" "))?;
        let mut command = Command::new(program);
        command
            .args(args)
            // A clean environment, so a stray PORT or KAFKA_BROKERS cannot change the run.
            .env_clear()
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        for var in ["PATH", "HOME", "RUST_LOG", "RUST_BACKTRACE"] {
            if let Ok(value) = std::env::var(var) {
                command.env(var, value);
            }
        }
        // Allocator settings, for measuring their effect on RSS (e.g. MALLOC_ARENA_MAX=2).
        for (var, value) in std::env::vars() {
            if var.starts_with("MALLOC_") || var.starts_with("MIMALLOC_") || var == "GLIBC_TUNABLES"
            {
                command.env(var, value);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("spawn {}", program.display()))?;
        let pid = child.id().context("child has no pid")?;
        Ok(Self { child, pid })
    }

    /// Fails if the process has already exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("process {} exited: {status}", self.pid);
        }
        Ok(())
    }

    /// Kills the process and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Lifts ssepush's per-client limits, which the scenarios' single client would hit at once.
pub const UNLIMITED_CLIENT: &[&str] = &[
    "--max-streams-per-client=1000000",
    "--publish-rate=1000000000",
    "--publish-burst=1000000000",
];

/// A running server under test.
pub struct Server {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub process: Spawned,
}

impl Server {
    /// Starts `kind` on a free port with `extra` arguments and waits for `/healthz`.
    pub async fn start(bins: &Binaries, kind: Kind, extra: &[String]) -> Result<Self> {
        let port = free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut args: Vec<String> = vec![
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
        ];
        let program = match kind {
            Kind::Ssepush => {
                // Kafka off unless a scenario passes brokers (a later flag wins): an absent
                // broker would only add librdkafka's reconnect loop to the measured CPU.
                args.push("--kafka-brokers=".into());
                // Every load comes from 127.0.0.1: one client, as the per-client limits see it.
                args.extend(UNLIMITED_CLIENT.iter().map(|a| a.to_string()));
                args.extend(bins.ssepush_args.iter().cloned());
                &bins.ssepush
            }
            Kind::Baseline => &bins.baseline,
        };
        args.extend(extra.iter().cloned());
        std::fs::create_dir_all(&bins.log_dir)?;
        let log = bins.log_dir.join(format!("{}.log", kind.name()));
        let mut process = Spawned::new(program, &args, &log)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            process.check_alive().with_context(|| {
                format!(
                    "{} died ({}); see {}",
                    kind.name(),
                    log_tail(&log),
                    log.display()
                )
            })?;
            if let Ok(200) = http::get_status(addr, "/healthz").await {
                break;
            }
            if Instant::now() > deadline {
                bail!("{} did not answer /healthz within 20 s", kind.name());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            kind,
            addr,
            process,
        })
    }

    /// The server's pid, for `/proc` readings.
    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid())
    }

    /// Kills the server.
    pub async fn stop(self) {
        self.process.stop().await;
    }
}
