//! Instructions the server executes per delivered message, counted by valgrind's callgrind:
//! exact and independent of the machine's load, unlike CPU time, so two builds can be told
//! apart by a few percent (this machine's VM has no hardware counters for `perf`).
//!
//! For each binary it runs the same v2 load twice, with 0 and with `MESSAGES` POSTs (one stream
//! per user, `USERS` users, the POSTs on one keep-alive connection), and reports
//! `(Ir(MESSAGES) - Ir(0)) / MESSAGES`: start-up, stream set-up and shutdown cancel out.
//!
//!     cargo run --release -p bench --example instructions_per_message -- BINARY [BINARY...]
//!
//! With `IPM_AUTH=1` the servers run with authorization on (`--auth-secret`): the streams send
//! a token in the `access_token` query, the POSTs one in `Authorization`, as a browser does.
//!
//! Needs `valgrind` (`apt-get install valgrind`). With `IPM_KEEP=1` the callgrind files are
//! kept for `callgrind_annotate`.

use anyhow::{Context, Result, bail};
use bench::http::{Publisher, SseStream, get_status};
use bench::sse::Item;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const USERS: usize = 100;
const MESSAGES: u64 = 20_000;

#[tokio::main]
async fn main() -> Result<()> {
    let binaries: Vec<String> = std::env::args().skip(1).collect();
    if binaries.is_empty() {
        bail!("usage: instructions_per_message BINARY [BINARY...]");
    }
    let mut results = Vec::new();
    for binary in &binaries {
        let idle = run(binary, 0).await?;
        let loaded = run(binary, MESSAGES).await?;
        let per_message = (loaded as f64 - idle as f64) / MESSAGES as f64;
        eprintln!("{binary}: Ir {idle} with 0 messages, {loaded} with {MESSAGES}");
        results.push((binary, per_message));
    }
    println!("| binary | instructions per delivered message | vs first |");
    println!("|---|---:|---:|");
    let first = results[0].1;
    for (binary, per_message) in &results {
        let delta = (per_message / first - 1.0) * 100.0;
        println!("| {binary} | {per_message:.0} | {delta:+.2} % |");
    }
    Ok(())
}

/// Total instructions of one server run under callgrind with `messages` POSTs.
async fn run(binary: &str, messages: u64) -> Result<u64> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let out = std::env::temp_dir().join(format!("callgrind.{port}.out"));
    let secret = "instructions-per-message-secret-0123456789";
    let tokens = match std::env::var_os("IPM_AUTH") {
        Some(_) => {
            let sign = |args: &[&str]| -> Result<String> {
                let out = Command::new(binary)
                    .arg("token")
                    .args(args)
                    .args(["--auth-secret", secret])
                    .output()?;
                Ok(String::from_utf8(out.stdout)?.trim().to_owned())
            };
            Some((sign(&["--subscribe", "*"])?, sign(&["--publish", "*"])?))
        }
        None => None,
    };
    let auth_args: Vec<String> = match &tokens {
        Some(_) => vec!["--auth-secret".into(), secret.into()],
        None => Vec::new(),
    };
    let mut child = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            &format!("--callgrind-out-file={}", out.display()),
            binary,
            "--host=127.0.0.1",
            &format!("--port={port}"),
            "--kafka-brokers=",
            "--static-dir=/nonexistent",
            "--max-streams-per-client=1000000",
            "--publish-rate=1000000000",
            "--publish-burst=1000000000",
            "--drain=0s",
        ])
        .args(&auth_args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("valgrind (apt-get install valgrind)")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while get_status(addr, "/healthz").await.ok() != Some(200) {
        if Instant::now() > deadline {
            bail!("{binary} under valgrind did not answer /healthz");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for user in 0..USERS {
        let query = tokens
            .as_ref()
            .map_or(String::new(), |(read, _)| format!("&access_token={read}"));
        let path = format!("/v2/sse?username=ipm{user}{query}");
        let mut stream = SseStream::open(addr, &path, "", 16 * 1024).await?;
        let received = received.clone();
        readers.push(tokio::spawn(async move {
            while let Ok(true) = stream
                .read_items(&mut |item| {
                    if matches!(item, Item::Event(_)) {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .await
            {}
        }));
    }
    let mut publisher = match &tokens {
        Some((_, publish)) => Publisher::with_token(addr, publish),
        None => Publisher::new(addr),
    };
    let body = "x".repeat(64);
    for seq in 0..messages {
        let path = format!("/v2/message?username=ipm{}", seq % USERS as u64);
        let (status, _) = publisher.post(&path, body.as_bytes()).await?;
        if status != 200 {
            bail!("POST answered {status}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.load(Ordering::Relaxed) < messages {
        if Instant::now() > deadline {
            bail!(
                "{} of {messages} delivered",
                received.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(publisher);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let status = child.wait()?;
    for reader in readers {
        reader.abort();
    }
    if !status.success() {
        bail!("{binary} exited with {status}");
    }
    total_ir(&out)
}

/// The `summary:` (or `totals:`) line of a callgrind output file.
fn total_ir(path: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(path)?;
    // `IPM_KEEP=1` keeps the files for `callgrind_annotate`.
    if std::env::var_os("IPM_KEEP").is_none() {
        let _ = std::fs::remove_file(path);
    } else {
        eprintln!("kept {}", path.display());
    }
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary: ")
                .or_else(|| l.strip_prefix("totals: "))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no summary line in the callgrind output")
}
