//! Stalled clients: a stream opened with a 4 KiB receive buffer and never read, for a user the
//! filler keeps busy. The server must cut it (its queue overflows, or its socket takes nothing
//! for `--write-timeout`) without holding anyone else up; those cuts are the expected log lines.
//!
//! Each stalled client holds its stream for a while, then reads what is left to see whether
//! the server had closed it, and opens another. They connect from 127.0.0.251-254, outside the
//! lineages' source addresses, so the server's log names them.

use super::filler_user;
use super::shared::Shared;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// How long a stalled stream is held before the client looks: the server's write timeout
/// (10 s in the soak) plus the time the filler takes to fill the socket.
pub const HOLD: Duration = Duration::from_secs(30);

/// The first stalled client's source address; the others follow, four in all.
const FIRST_SOURCE: [u8; 4] = [127, 0, 0, 251];

/// Whether a stalled client's address is one of these.
pub fn is_stalled_source(ip: &str) -> bool {
    (0..4u8).any(|i| {
        let [a, b, c, d] = FIRST_SOURCE;
        ip == Ipv4Addr::new(a, b, c, d + i).to_string()
    })
}

/// Runs stalled client `i` (on instance `i % 2`, for filler user `i % fillers`) until stop.
pub async fn run(i: usize, fillers: u32, shared: Arc<Shared>) {
    let addr = shared.addrs[i % 2];
    let [a, b, c, d] = FIRST_SOURCE;
    let source = Ipv4Addr::new(a, b, c, d + (i % 4) as u8);
    let path = format!(
        "/v3/sse?username={}",
        filler_user(i as u32 % fillers.max(1))
    );
    while !shared.stop.is_cancelled() {
        let Ok(mut stream) = open(addr, source, &path).await else {
            tokio::select! {
                () = shared.stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        };
        shared.counters.stalled_opened.fetch_add(1, Relaxed);
        tokio::select! {
            () = shared.stop.cancelled() => return,
            () = tokio::time::sleep(HOLD) => {}
        }
        let counter = match closed_by_server(&mut stream).await {
            true => &shared.counters.stalled_cut,
            false => &shared.counters.stalled_open,
        };
        counter.fetch_add(1, Relaxed);
    }
}

/// Connects with a small receive buffer and sends the request; reads nothing.
async fn open(addr: SocketAddr, source: Ipv4Addr, path: &str) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let mut stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))??;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    Ok(stream)
}

/// Reads what is left: the server had closed the stream if the end comes within 3 s.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}
