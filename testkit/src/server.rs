//! The ssepush binary as a child process on a free loopback port, for the server's integration
//! tests and the browser suite alike.
//!
//! The server picks its own port (`--port 0`), so parallel tests cannot race for one; the
//! address comes from its `listening` log line. Start-up waits until `/healthz` answers 200.
//! [`TestServer::stop`] sends SIGTERM to the PID and expects a clean exit. The log goes to a
//! file; when the test fails it is kept on disk and its tail printed with the test's output.

use std::{
    ffi::{OsStr, OsString},
    fs::OpenOptions,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long start-up and a graceful stop may take on a busy machine.
const PATIENCE: Duration = Duration::from_secs(30);
/// Log lines printed with a failed test's output.
const TAIL_LINES: usize = 60;

pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    bin: PathBuf,
    args: Vec<OsString>,
    child: Option<Child>,
    log: PathBuf,
    dir: Option<tempfile::TempDir>,
    keep_log: bool,
    filter: Option<String>,
}

impl TestServer {
    /// Starts `bin` on 127.0.0.1 with `args` and waits until it is healthy.
    ///
    /// The child's `RUST_LOG` is `SSEPUSH_TEST_LOG`, or `info`; it must keep `server=info`,
    /// where the address is logged.
    pub async fn start<I, S>(bin: impl Into<PathBuf>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::start_logging(bin, args, None).await
    }

    /// [`start`](Self::start) with the child's `RUST_LOG` set to `filter`, for a test that
    /// reads the debug log.
    pub async fn start_logging<I, S>(bin: impl Into<PathBuf>, args: I, filter: Option<&str>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let dir = tempfile::Builder::new()
            .prefix("ssepush-test-")
            .tempdir()
            .expect("a temporary directory for the server log");
        let mut server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            base: String::new(),
            bin: bin.into(),
            args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
            child: None,
            log: dir.path().join("server.log"),
            dir: Some(dir),
            keep_log: false,
            filter: filter.map(str::to_owned),
        };
        server.launch(0).await;
        server
    }

    /// Starts the server again on the same address, with the same flags (and empty memory).
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again on a running server");
        self.launch(self.addr.port()).await;
    }

    async fn launch(&mut self, port: u16) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the server log file");
        let from = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let level = self
            .filter
            .clone()
            .unwrap_or_else(|| std::env::var("SSEPUSH_TEST_LOG").unwrap_or_else(|_| "info".into()));
        let child = Command::new(&self.bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(&self.args)
            .env("RUST_LOG", level)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a second log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.addr = self.wait_listening(from).await;
        self.base = format!("http://{}", self.addr);
        self.wait_healthy().await;
    }

    /// Reads the log from byte `from` until the `listening` line gives the address.
    async fn wait_listening(&mut self, from: u64) -> SocketAddr {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = self.log_text();
            let fresh = text.get(from as usize..).unwrap_or_default();
            if let Some(addr) = logged(fresh, "listening") {
                return addr;
            }
            if let Some(status) = self.exited() {
                self.fail(&format!("the server exited during start-up ({status})"));
            }
            if Instant::now() > deadline {
                self.fail("the server logged no listening address within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(head) = get_status_line(self.addr, "/healthz").await
                && head.split_whitespace().nth(1) == Some("200")
            {
                return;
            }
            if let Some(status) = self.exited() {
                self.fail(&format!(
                    "the server exited before it was healthy ({status})"
                ));
            }
            if Instant::now() > deadline {
                self.fail("/healthz did not answer 200 within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The address logged by the server's line with `message`, such as `serving https`.
    pub fn logged_addr(&self, message: &str) -> SocketAddr {
        logged(&self.log_text(), message)
            .unwrap_or_else(|| panic!("no {message:?} line with an address in the server log"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The PID of the running server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running server").id()
    }

    /// Sends SIGTERM and waits for the process to exit with status 0; returns how long that
    /// took. A server still running after 30 s is killed and the test fails.
    pub async fn stop(&mut self) -> Duration {
        let pid = self.pid();
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill(1)");
        assert!(sent.success(), "kill -TERM {pid}");
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                if !status.success() {
                    self.fail(&format!("the server exited with {status} after SIGTERM"));
                }
                return started.elapsed();
            }
            if started.elapsed() > PATIENCE {
                self.kill();
                self.fail("the server was still running 30 s after SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Ends the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().expect("waitpid")
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// File descriptors the server process holds open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("/proc/PID/fd")
            .count()
    }

    /// Everything the server has logged so far (stdout and stderr).
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Keeps the log file after the test even without a panic (for tests that fail by
    /// returning an error), and prints where it is.
    pub fn keep_log(&mut self) {
        self.keep_log = true;
    }

    fn fail(&mut self, why: &str) -> ! {
        self.keep_log = true;
        panic!("{why}; server log: {}", self.log.display());
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() || self.keep_log {
            if let Some(dir) = self.dir.take() {
                let _ = dir.keep();
            }
            eprintln!("{}", tail(&self.log, TAIL_LINES));
        }
    }
}

/// The address of the first line of `log` that says `message`: `addr=` in a text line,
/// `"addr":"..."` in a JSON one.
fn logged(log: &str, message: &str) -> Option<SocketAddr> {
    log.lines().filter(|l| l.contains(message)).find_map(|l| {
        let text = l
            .split("addr=")
            .nth(1)
            .and_then(|a| a.split_whitespace().next());
        let json = l
            .split("\"addr\":\"")
            .nth(1)
            .and_then(|a| a.split('"').next());
        text.or(json)?.parse().ok()
    })
}

/// The last `n` lines of the log at `path`, with a header naming the file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let shown = &lines[lines.len().saturating_sub(n)..];
    format!(
        "---- server log (last {} of {} lines), kept at {} ----\n{}",
        shown.len(),
        lines.len(),
        path.display(),
        shown.join("\n")
    )
}

/// `GET path` on a fresh connection; the response's status line.
async fn get_status_line(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') {
        let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// Builds the `ssepush` binary (dev profile) with the cargo running this test and returns its
/// path, so a suite outside the server package never runs a stale binary.
pub fn ssepush_binary() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .args(["build", "-p", "server", "--bin", "ssepush"])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo");
    assert!(output.status.success(), "cargo build -p server failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == "ssepush")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported the ssepush executable")
}
