//! A TCP gate in front of the broker: every Kafka client of the soak (both instances and the
//! publishers) connects through it, and it lets connections through only while the broker is
//! up with its topic.
//!
//! A restarted tansu listens before its topic exists, and accepts records for the missing
//! topic: clients that reconnect in that window (with metadata cached from before the kill)
//! write at offsets from 0, and creating the topic then starts the numbering again, so two
//! records end up with one offset. A Kafka broker comes back with its topics, or refuses such
//! records; the gate makes the restart look like that: closed from the kill until the topic is
//! created again.
//!
//! It runs on a thread of its own: the consumers' heartbeats pass through it, and on the soak's
//! busy runtime a late heartbeat would cost an instance its group membership.

use anyhow::{Context, Result};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Where open connections go, and what ends them when the gate closes.
type Open = Option<(SocketAddr, CancellationToken)>;

pub struct Gate {
    /// The address clients use as the broker's.
    pub addr: SocketAddr,
    open: Arc<Mutex<Open>>,
    /// Ends the gate's thread.
    stop: CancellationToken,
}

impl Gate {
    /// Listens on a free loopback port, closed.
    pub fn start() -> Result<Self> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let open: Arc<Mutex<Open>> = Arc::default();
        let stop = CancellationToken::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (state, stopped) = (open.clone(), stop.clone());
        std::thread::Builder::new()
            .name("soak-gate".into())
            .spawn(move || runtime.block_on(accept(listener, state, stopped)))
            .context("start the gate's thread")?;
        Ok(Self { addr, open, stop })
    }

    /// Lets connections through to `back` from now on.
    pub fn open(&self, back: SocketAddr) {
        *self.lock() = Some((back, CancellationToken::new()));
    }

    /// Refuses new connections and ends the ones open.
    pub fn close(&self) {
        if let Some((_, token)) = self.lock().take() {
            token.cancel();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.close();
        self.stop.cancel();
    }
}

/// Accepts until `stop`: through to the broker while open, dropped while closed (as a dead
/// broker's connections would be refused).
async fn accept(listener: std::net::TcpListener, state: Arc<Mutex<Open>>, stop: CancellationToken) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((front, _)) = accepted else {
            // A connection reset before it was accepted, or out of descriptors: go on.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let target = state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((back, token)) = target {
            tokio::spawn(forward(front, back, token));
        }
    }
}

/// Copies both ways between a client and the broker until either ends or the gate closes.
async fn forward(mut front: TcpStream, back: SocketAddr, closed: CancellationToken) {
    let Ok(mut back) = TcpStream::connect(back).await else {
        return;
    };
    let _ = front.set_nodelay(true);
    let _ = back.set_nodelay(true);
    tokio::select! {
        () = closed.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut front, &mut back) => {}
    }
}
