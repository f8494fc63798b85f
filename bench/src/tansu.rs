//! A tansu broker (a Kafka-protocol broker with in-memory storage) as a child process on a free
//! loopback port, for the kafka scenario and the soak.
//!
//! Not `testkit::Broker`: that one is for tests (it panics on failure and discards the broker's
//! output), while a bench run must report a failure in its table and keep tansu's log next to
//! the servers' logs. The soak also kills the broker and starts it again on the same port, so
//! the clients' bootstrap address stays valid; memory storage starts empty each time, so the
//! topic is created again.

use crate::procstat::{Spawned, free_port, log_tail};
use anyhow::{Context, Result, ensure};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Finds `tansu` on PATH.
pub fn find_tansu() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|p| p.is_file())
    })
}

/// A tansu broker with in-memory storage and one single-partition topic.
pub struct Broker {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it tells clients to connect: its own address, or a proxy's in front of it.
    advertised: SocketAddr,
    tansu: PathBuf,
    log: PathBuf,
    topic: String,
    process: Option<Spawned>,
}

impl Broker {
    /// Starts a broker on a free port, its output appended to `log_dir/tansu.log`, and creates
    /// [`Broker::start`] with the tansu on PATH.
    pub async fn start_found(log_dir: &Path, topic: &str) -> Result<Self> {
        let tansu =
            find_tansu().context("tansu not on PATH (scripts/install-deps.sh installs it)")?;
        Self::start(&tansu, log_dir, topic).await
    }

    /// The flags that make ssepush read this broker's topic.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--kafka-brokers".into(),
            self.addr.to_string(),
            "--kafka-topic".into(),
            self.topic.clone(),
        ]
    }

    /// `topic` with one partition.
    pub async fn start(tansu: &Path, log_dir: &Path, topic: &str) -> Result<Self> {
        Self::start_advertising(tansu, log_dir, topic, None).await
    }

    /// Like [`Broker::start`], but clients are told to connect to `advertised` (a proxy in
    /// front of the broker) when it is given.
    pub async fn start_advertising(
        tansu: &Path,
        log_dir: &Path,
        topic: &str,
        advertised: Option<SocketAddr>,
    ) -> Result<Self> {
        std::fs::create_dir_all(log_dir)?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let mut broker = Self {
            addr,
            advertised: advertised.unwrap_or(addr),
            tansu: tansu.to_owned(),
            log: log_dir.join("tansu.log"),
            topic: topic.to_owned(),
            process: None,
        };
        broker.up().await?;
        Ok(broker)
    }

    /// The broker's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// Kills the broker with SIGKILL (its memory storage dies with it) and reaps it.
    pub async fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop().await;
        }
    }

    /// Starts the broker again on the same address, empty, and creates the topic again.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await;
        self.up().await
    }

    /// Stops the broker for good.
    pub async fn stop(mut self) {
        self.kill().await;
    }

    async fn up(&mut self) -> Result<()> {
        let url = format!("tcp://{}", self.addr);
        let advertised = format!("tcp://{}", self.advertised);
        let args: Vec<String> = [
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised,
            "--storage-engine",
            "memory://tansu/",
        ]
        .map(String::from)
        .to_vec();
        let process = self
            .process
            .insert(Spawned::new(&self.tansu, &args, &self.log)?);
        // Wait for the port before `topic create`, which retries for ~20 s against a closed one.
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            process.check_alive().with_context(|| {
                format!(
                    "tansu died ({}); see {}",
                    log_tail(&self.log),
                    self.log.display()
                )
            })?;
            ensure!(
                Instant::now() < deadline,
                "tansu did not listen within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = tokio::process::Command::new(&self.tansu)
            .args([
                "topic",
                "create",
                "--broker",
                &url,
                "--partitions",
                "1",
                &self.topic,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await?;
        ensure!(
            status.success(),
            "tansu topic create {} failed: {status}",
            self.topic
        );
        Ok(())
    }
}
