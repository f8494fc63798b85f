//! idle-h2: idle streams over HTTP/2 (h2c, many streams per connection) next to the same
//! number over HTTP/1.1 (one connection each), on fresh ssepush processes: RSS per stream.
//!
//! HTTP/1.1 streams take the server's own lean path; HTTP/2 streams go through hyper's h2,
//! which holds more per stream but shares one connection among many.

use super::{Kind, open_stream, progress};
use crate::procstat::{Binaries, Server};
use crate::table::Row;
use anyhow::{Context, Result, bail};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

#[derive(Debug, Clone)]
pub struct Config {
    pub streams: usize,
    /// HTTP/2 streams sharing one connection (the server allows 128).
    pub per_connection: usize,
    pub hold: Duration,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub streams: usize,
    pub h1_kib_per_stream: f64,
    pub h2_kib_per_stream: f64,
}

/// Opens `count` streams on one h2c connection and keeps reading them until the set is
/// aborted; returns once all have answered 200.
async fn h2_connection(
    server: std::net::SocketAddr,
    first_user: usize,
    count: usize,
    tasks: &mut JoinSet<()>,
) -> Result<()> {
    let tcp = TcpStream::connect(server).await?;
    let (client, conn) = h2::client::handshake(tcp).await?;
    tasks.spawn(async move {
        let _ = conn.await;
    });
    for i in 0..count {
        let request = axum::http::Request::get(format!(
            "http://{server}/v2/sse?username=h2idle_{}",
            first_user + i
        ))
        .body(())?;
        let mut client = client.clone().ready().await?;
        let (response, _) = client.send_request(request, true)?;
        let response = tokio::time::timeout(Duration::from_secs(30), response)
            .await
            .context("h2 response timed out")??;
        if response.status() != 200 {
            bail!("h2 stream answered {}", response.status());
        }
        let mut body = response.into_body();
        tasks.spawn(async move {
            while let Some(Ok(data)) = body.data().await {
                let _ = body.flow_control().release_capacity(data.len());
            }
        });
    }
    Ok(())
}

async fn measure_h2(bins: &Binaries, cfg: &Config) -> Result<f64> {
    let server = Server::start(bins, Kind::Ssepush, &[]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss_kib()?;
    let mut tasks = JoinSet::new();
    let mut opened = 0;
    while opened < cfg.streams {
        let count = cfg.per_connection.min(cfg.streams - opened);
        h2_connection(server.addr, opened, count, &mut tasks).await?;
        opened += count;
    }
    tokio::time::sleep(cfg.hold).await;
    let after = server.rss_kib()?;
    tasks.abort_all();
    server.stop().await;
    Ok(after.saturating_sub(before) as f64 / opened as f64)
}

async fn measure_h1(bins: &Binaries, cfg: &Config) -> Result<f64> {
    let server = Server::start(bins, Kind::Ssepush, &[]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss_kib()?;
    let mut streams = Vec::with_capacity(cfg.streams);
    for i in 0..cfg.streams {
        let path = format!("/v2/sse?username=h1idle_{i}");
        streams.push(
            open_stream(
                server.addr,
                &path,
                Kind::Ssepush,
                512,
                Duration::from_secs(30),
            )
            .await?,
        );
    }
    tokio::time::sleep(cfg.hold).await;
    let after = server.rss_kib()?;
    drop(streams);
    server.stop().await;
    Ok(after.saturating_sub(before) as f64 / cfg.streams as f64)
}

pub async fn run(bins: &Binaries, cfg: &Config) -> Result<Outcome> {
    let h1 = measure_h1(bins, cfg).await?;
    let h2 = measure_h2(bins, cfg).await?;
    progress(format!(
        "idle-h2: {} streams: {h1:.2} KiB each over HTTP/1.1, {h2:.2} KiB each over HTTP/2 \
         ({} per connection)",
        cfg.streams, cfg.per_connection
    ));
    Ok(Outcome {
        streams: cfg.streams,
        h1_kib_per_stream: h1,
        h2_kib_per_stream: h2,
    })
}

pub fn rows(outcome: &Result<Outcome>, per_connection: usize) -> Vec<Row> {
    const S: &str = "idle-h2";
    match outcome {
        Err(e) => vec![Row::note(S, &format!("failed: {e:#}"), Some(false))],
        Ok(o) => vec![
            Row::info(
                S,
                &format!("RSS per idle stream, HTTP/1.1 (KiB; {} streams)", o.streams),
                Some(o.h1_kib_per_stream),
                None,
            ),
            Row::info(
                S,
                &format!("RSS per idle stream, HTTP/2, {per_connection} per connection (KiB)"),
                Some(o.h2_kib_per_stream),
                None,
            ),
        ],
    }
}
