//! One ssepush instance as a child process on a fixed loopback port, so it can be SIGKILLed and
//! started again where its clients expect it.

use crate::http;
use crate::procstat::{Spawned, log_tail, rss_kib};
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long start-up may take on a busy machine.
const START_PATIENCE: Duration = Duration::from_secs(30);

pub struct Instance {
    /// `a` or `b`, in logs and the table.
    pub name: &'static str,
    pub addr: SocketAddr,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    process: Option<Spawned>,
}

impl Instance {
    /// Starts `program` on `addr` with `args` (besides host and port), its output appended to
    /// `log_dir/ssepush-<name>.log`, and waits for `/healthz`.
    pub async fn start(
        name: &'static str,
        program: &Path,
        addr: SocketAddr,
        args: Vec<String>,
        log_dir: &Path,
    ) -> Result<Self> {
        let mut instance = Self {
            name,
            addr,
            program: program.to_owned(),
            args,
            log: log_dir.join(format!("ssepush-{name}.log")),
            process: None,
        };
        instance.launch().await?;
        Ok(instance)
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The running process's pid.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// Resident set size in KiB, if it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        self.pid().and_then(|pid| rss_kib(pid).ok())
    }

    /// SIGKILL, and reap.
    pub async fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop().await;
        }
    }

    /// Starts it again on the same address with the same flags (and empty memory).
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await;
        self.launch().await
    }

    /// Fails if it died on its own.
    pub fn check_alive(&mut self) -> Result<()> {
        match &mut self.process {
            Some(process) => process
                .check_alive()
                .with_context(|| format!("instance {} died ({})", self.name, log_tail(&self.log))),
            None => bail!("instance {} is not running", self.name),
        }
    }

    /// Whether `/readyz` answers 200 (Kafka connected, topic there).
    pub async fn ready(&self) -> bool {
        matches!(http::get_status(self.addr, "/readyz").await, Ok(200))
    }

    async fn launch(&mut self) -> Result<()> {
        let mut args: Vec<String> = vec![
            "--host".into(),
            self.addr.ip().to_string(),
            "--port".into(),
            self.addr.port().to_string(),
        ];
        args.extend(self.args.iter().cloned());
        let process = self
            .process
            .insert(Spawned::new(&self.program, &args, &self.log)?);
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            process.check_alive().with_context(|| {
                format!(
                    "instance {} died at start ({}); see {}",
                    self.name,
                    log_tail(&self.log),
                    self.log.display()
                )
            })?;
            if let Ok(200) = http::get_status(self.addr, "/healthz").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "instance {} did not answer /healthz within {START_PATIENCE:?}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
