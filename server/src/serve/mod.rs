//! The accept loop: each connection is read just far enough to pick how it is served (the
//! HTTP/1.1 event-stream fast path, hyper's HTTP/1.1, or HTTP/2), each stream with a handle to
//! cut it, and shutdown that lets open connections finish.
//!
//! axum's own `serve` can't reach a connection from inside a request, and a subscriber that
//! stops reading leaves hyper waiting on a full socket forever. Owning the loop lets the hub
//! drop such a connection outright, and sets the listen backlog explicitly.

mod cut;
mod fast_path;
mod h2;
pub mod tls;

pub use cut::Disconnect;
use cut::ReleaseOnDrop;
use fast_path::First;
pub(crate) use fast_path::parse_stream_request;

use axum::{
    Router,
    http::{Method, Request},
};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
    service::TowerToHyperService,
};
use std::{io, net::SocketAddr, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpSocket, TcpStream},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::{
    api::STREAM_PATHS,
    client::ClientAddr,
    metrics::Metrics,
    refusals::{Limit, Refusals},
    write_timeout::WriteTimeout,
};

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

/// How connections are served.
#[derive(Clone)]
pub struct Options {
    /// How long open connections may take to finish once shutdown starts: the drain period,
    /// over which streams are ended, and the grace period after it.
    pub grace: Duration,
    /// How long a request head may take, from the connection's first wait for it to its end.
    pub head_timeout: Duration,
    /// How long a connection may go without the socket taking a byte it has to send.
    pub write_timeout: Duration,
    /// Where connections cut by the write timeout are counted.
    pub refusals: Refusals,
    /// Where refused requests are counted.
    pub metrics: Metrics,
}

impl Options {
    pub fn new(config: &crate::Config, refusals: Refusals, metrics: Metrics) -> Self {
        Self {
            grace: config.drain + config.shutdown_grace,
            head_timeout: config.head_timeout,
            write_timeout: config.write_timeout,
            refusals,
            metrics,
        }
    }
}

/// How a listener's connections start: as they come (HTTP/1.1 or h2c with prior knowledge), or
/// with a TLS handshake whose ALPN picks HTTP/2 or HTTP/1.1.
#[derive(Clone)]
pub enum Transport {
    Plain,
    Tls(tokio_rustls::TlsAcceptor),
}

/// Serves `app` until `shutdown` is cancelled, then lets open connections finish (their
/// streams end on the same token) for at most `options.grace`.
pub async fn serve(
    listener: TcpListener,
    transport: Transport,
    app: Router,
    shutdown: CancellationToken,
    options: Options,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.head_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let http = Arc::new(builder);
    // Shared: a stream's connection task stays small.
    let options = Arc::new(options);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    let mut last_accept_warning: Option<Instant> = None;
    loop {
        let (tcp, peer) = tokio::select! {
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
        // Peers that vanish without a word: idle ones are probed, and data the peer never
        // acknowledges ends the connection after the write timeout, not TCP's ~15 minutes.
        let socket = socket2::SockRef::from(&tcp);
        let _ = socket.set_tcp_keepalive(&keepalive);
        let _ = socket.set_tcp_user_timeout(Some(options.write_timeout));
        let handle = Disconnect::new(false);
        let conn = Connection {
            options: options.clone(),
            app: app.clone(),
            http: http.clone(),
            // Held for the connection's life, so shutdown waits for it.
            watcher: graceful.watcher(),
            handle: handle.clone(),
            peer,
        };
        let task = match &transport {
            Transport::Plain => tokio::spawn(conn.run(tcp, shutdown.clone())),
            Transport::Tls(tls) => tokio::spawn(conn.run_tls(tcp, tls.clone(), shutdown.clone())),
        };
        handle.set_task(task.abort_handle());
    }
    drop(listener);
    let grace = options.grace;
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

/// The largest request head, and what a connection buffers of a body at once; hyper's
/// default (~400 KB) would let each slow connection hold that much.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Idle connections are probed after this long, then every interval, up to the retries.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;

/// The first head's timeout is trimmed by the wait for its first byte only when that wait was
/// this long: below it, the cost of a builder per connection buys nothing.
const HEAD_TIME_WORTH_TRIMMING: Duration = Duration::from_millis(500);

/// What a connection task needs besides its socket.
struct Connection {
    options: Arc<Options>,
    app: Router,
    http: Arc<http1::Builder>,
    watcher: Watcher,
    handle: Disconnect,
    /// The TCP peer, given to every request as a [`ClientAddr`].
    peer: SocketAddr,
}

impl Connection {
    async fn run(self, tcp: TcpStream, shutdown: CancellationToken) {
        let _release = ReleaseOnDrop(self.handle.clone());
        let opened = Instant::now();
        let head_timeout = self.options.head_timeout;
        let first = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            first = tokio::time::timeout(head_timeout, fast_path::peek_first(&tcp)) => first,
        };
        match first {
            Ok(Ok(First::Stream(head))) => {
                drop(shutdown);
                self.stream(tcp, head).await;
            }
            Ok(Ok(First::Http2)) => {
                let io = WriteTimeout::new(tcp, self.options.write_timeout);
                self.http2(io, shutdown).await;
            }
            Ok(Ok(First::Other)) => {
                drop(shutdown);
                self.hyper(tcp, Some(opened)).await;
            }
            // Closed, failed or silent before sending a request: nothing to answer.
            Ok(Err(_)) | Err(_) => {}
        }
    }

    /// A TLS connection: the handshake, within the head timeout, then HTTP/2 or HTTP/1.1 as
    /// ALPN agreed. Event streams over TLS go through hyper.
    async fn run_tls(
        self,
        tcp: TcpStream,
        tls: tokio_rustls::TlsAcceptor,
        shutdown: CancellationToken,
    ) {
        let _release = ReleaseOnDrop(self.handle.clone());
        let opened = Instant::now();
        let io = WriteTimeout::new(tcp, self.options.write_timeout);
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            accepted = tokio::time::timeout(self.options.head_timeout, tls.accept(io)) => accepted,
        };
        let Ok(Ok(stream)) = accepted else {
            return;
        };
        if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
            self.http2(stream, shutdown).await;
        } else {
            drop(shutdown);
            self.http1(stream, Some(opened)).await;
        }
    }

    /// Hands the connection to hyper's HTTP/1.1, from its next unread byte on. `opened` is
    /// when the wait for the first request head started, if hyper is to read that head.
    async fn hyper(self, tcp: TcpStream, opened: Option<Instant>) {
        let io = WriteTimeout::new(tcp, self.options.write_timeout);
        self.http1(io, opened).await;
    }

    async fn http1<I>(self, io: I, opened: Option<Instant>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            options,
            app,
            http,
            watcher,
            handle,
            peer,
        } = self;
        // The first head's time started with the connection: what the wait for its first byte
        // took is not given again. Later heads each get the full time.
        let spent = opened.map_or(Duration::ZERO, |t| t.elapsed());
        let http = match options.head_timeout.checked_sub(spent) {
            Some(left) if spent >= HEAD_TIME_WORTH_TRIMMING => {
                let mut http = (*http).clone();
                http.header_read_timeout(left.max(Duration::from_millis(1)));
                Arc::new(http)
            }
            Some(_) => http,
            None => return,
        };
        let metrics = options.metrics.clone();
        let svc = app
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ClientAddr(peer));
                // Only streams are ever cut; other requests skip the extension.
                if is_stream_request(&req) {
                    req.extensions_mut().insert(handle.clone());
                }
                req
            })
            .map_response(move |response| {
                metrics.count_rejection(&response);
                response
            });
        let conn = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
        // Boxed so that the connection task of a stream, the common case, is not sized for it.
        if let Err(e) = Box::pin(watcher.watch(conn)).await {
            ended_with(&e, &options, peer);
        }
    }
}

/// Whether a request may become an event stream, the only kind that is ever cut.
fn is_stream_request<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET && STREAM_PATHS.contains(&req.uri().path())
}

/// Logs how a connection failed; a write timeout is counted.
fn ended_with(e: &hyper::Error, options: &Options, peer: SocketAddr) {
    let source = std::error::Error::source(e).and_then(|s| s.downcast_ref::<io::Error>());
    if source.is_some_and(|io| io.kind() == io::ErrorKind::TimedOut) {
        write_timed_out(&options.refusals, peer, options.write_timeout);
    } else {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

fn write_timed_out(refusals: &Refusals, peer: SocketAddr, timeout: Duration) {
    let reason = format!(
        "the socket took no bytes for {}; connection closed",
        humantime::format_duration(timeout)
    );
    refusals.note(Limit::WriteTimeout, peer.ip(), &reason);
}

#[cfg(test)]
mod tests;
