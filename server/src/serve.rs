//! The accept loop: HTTP/1.1 connections served by hyper, each with a handle to cut it.
//!
//! axum's own `serve` can't reach a connection from inside a request, and a subscriber that
//! stops reading leaves hyper waiting on a full socket forever. Owning the loop lets the hub
//! drop such a connection outright, and sets the listen backlog explicitly.

use axum::Router;
use hyper::{Request, body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use std::{io, net::SocketAddr, time::Duration};
use tokio::{
    net::{TcpListener, TcpSocket},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Cuts the TCP connection a request arrived on. Found in request extensions.
#[derive(Clone)]
pub struct Disconnect(CancellationToken);

impl Disconnect {
    pub fn token(&self) -> CancellationToken {
        self.0.clone()
    }
}

/// Binds with an explicit backlog: tokio's default is small, and a burst of connects beyond it
/// waits out 1 s SYN retries.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Serves `app` until `shutdown` is cancelled, then lets open connections finish (their
/// streams end on the same token) for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let mut last_accept_warning: Option<Instant> = None;
    loop {
        let (tcp, _peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning, and warn once a second.
                    if last_accept_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(error = %e, "accept failed");
                        last_accept_warning = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let cut = CancellationToken::new();
        let handle = Disconnect(cut.clone());
        let svc = app.clone().map_request(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(handle.clone());
            req
        });
        let conn = graceful
            .watch(builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(svc)));
        tokio::spawn(async move {
            tokio::select! {
                result = conn => if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                () = cut.cancelled() => tracing::debug!("connection cut"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "connections still open after the grace period; closing them"
        );
    }
}
