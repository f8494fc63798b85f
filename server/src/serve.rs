//! The accept loop: HTTP/1.1 connections, each with a handle to cut it.
//!
//! axum's own `serve` can't reach a connection from inside a request, and a subscriber that
//! stops reading leaves hyper waiting on a full socket forever. Owning the loop lets the hub
//! drop such a connection outright, and sets the listen backlog explicitly.
//!
//! Most of a busy server's connections are event streams that sit idle for minutes. hyper keeps
//! two 8 KiB buffers and a large state machine per connection for their whole life, more than
//! the stream itself costs. So a connection whose first request is a plain `GET` of an event
//! stream path is answered here: the request (read with `peek`, so nothing is consumed unless
//! this path takes it) goes through the same router, and the response is written straight to
//! the socket, chunk by chunk. Everything else, and anything here that is not a simple case, is
//! left to hyper untouched.

use axum::{
    Router,
    body::{Body, HttpBody},
    http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version, header},
};
use bytes::Bytes;
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
    service::TowerToHyperService,
};
use std::{
    future::poll_fn,
    io::{self, IoSlice},
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::{Duration, SystemTime},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
    task::AbortHandle,
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::{
    api::STREAM_PATHS,
    client::ClientAddr,
    refusals::{Limit, Refusals},
    write_timeout::WriteTimeout,
};

/// Cuts the TCP connection a request arrived on. Found in request extensions.
///
/// Only event streams ever need cutting, so the token and whatever watches it are made on the
/// first call to [`Disconnect::token`]: other connections pay nothing for it while they run.
#[derive(Clone)]
pub struct Disconnect(Arc<Cut>);

struct Cut {
    token: OnceLock<CancellationToken>,
    /// The connection is over: a cancelled token then only releases [`abort_on_cut`].
    ended: AtomicBool,
    /// The connection's task, set right after it is spawned.
    task: OnceLock<AbortHandle>,
    /// The connection watches the token itself (the stream path) instead of a helper task.
    watched: bool,
}

impl Disconnect {
    fn new(watched: bool) -> Self {
        Self(Arc::new(Cut {
            token: OnceLock::new(),
            ended: AtomicBool::new(false),
            task: OnceLock::new(),
            watched,
        }))
    }

    pub fn token(&self) -> CancellationToken {
        self.0
            .token
            .get_or_init(|| {
                let token = CancellationToken::new();
                if !self.0.watched {
                    tokio::spawn(abort_on_cut(token.clone(), self.0.clone()));
                }
                token
            })
            .clone()
    }

    fn issued(&self) -> Option<&CancellationToken> {
        self.0.token.get()
    }
}

/// Aborts a connection's task once its token is cancelled: by the hub, or by the connection
/// itself as it ends, which lets this task go.
async fn abort_on_cut(token: CancellationToken, cut: Arc<Cut>) {
    token.cancelled().await;
    if cut.ended.load(Relaxed) {
        return;
    }
    loop {
        if let Some(task) = cut.task.get() {
            tracing::debug!("connection cut");
            task.abort();
            return;
        }
        // Cancelled before the accept loop stored the handle: it is about to.
        tokio::task::yield_now().await;
    }
}

/// Cancels a connection's token when its task ends or is aborted, so a helper task waiting on
/// the token ends too.
struct ReleaseOnDrop(Disconnect);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.0.ended.store(true, Relaxed);
        if let Some(token) = self.0.issued() {
            token.cancel();
        }
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

/// How connections are served.
#[derive(Clone)]
pub struct Options {
    /// How long open connections may take to finish once shutdown starts.
    pub grace: Duration,
    /// How long a request head may take, from the connection's first wait for it to its end.
    pub head_timeout: Duration,
    /// How long a connection may go without the socket taking a byte it has to send.
    pub write_timeout: Duration,
    /// Where connections cut by the write timeout are counted.
    pub refusals: Refusals,
}

impl Options {
    pub fn new(config: &crate::Config, refusals: Refusals) -> Self {
        Self {
            grace: config.shutdown_grace,
            head_timeout: config.head_timeout,
            write_timeout: config.write_timeout,
            refusals,
        }
    }
}

/// Serves `app` until `shutdown` is cancelled, then lets open connections finish (their
/// streams end on the same token) for at most `options.grace`.
pub async fn serve(
    listener: TcpListener,
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
        let task = tokio::spawn(conn.run(tcp, shutdown.clone()));
        let _ = handle.0.task.set(task.abort_handle());
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
            first = tokio::time::timeout(head_timeout, peek_stream_request(&tcp)) => first,
        };
        drop(shutdown);
        match first {
            Ok(Ok(Some(head))) => self.stream(tcp, head).await,
            Ok(Ok(None)) => self.hyper(tcp, Some(opened)).await,
            // Closed, failed or silent before sending a request: nothing to answer.
            Ok(Err(_)) | Err(_) => {}
        }
    }

    /// Hands the connection to hyper, from its next unread byte on. `opened` is when the wait
    /// for the first request head started, if hyper is to read that head.
    async fn hyper(self, tcp: TcpStream, opened: Option<Instant>) {
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
        let svc = app.map_request(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ClientAddr(peer));
            // Only streams are ever cut; other requests skip the extension.
            if req.method() == Method::GET && STREAM_PATHS.contains(&req.uri().path()) {
                req.extensions_mut().insert(handle.clone());
            }
            req
        });
        let io = TokioIo::new(WriteTimeout::new(tcp, options.write_timeout));
        let conn = http.serve_connection(io, TowerToHyperService::new(svc));
        // Boxed so that the connection task of a stream, the common case, is not sized for it.
        if let Err(e) = Box::pin(watcher.watch(conn)).await {
            let source = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<io::Error>());
            if source.is_some_and(|io| io.kind() == io::ErrorKind::TimedOut) {
                write_timed_out(&options.refusals, peer, options.write_timeout);
            } else {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
    }

    /// Answers an event stream request taken off the socket's front.
    async fn stream(self, mut tcp: TcpStream, head: StreamRequest) {
        // Consume exactly the head that was peeked; anything after it stays for hyper.
        let mut consumed = vec![0; head.len];
        if tcp.read_exact(&mut consumed).await.is_err() {
            return;
        }
        drop(consumed);
        // This connection watches its own token: no helper task per stream.
        let handle = Disconnect::new(true);
        let mut request = head.request;
        request.extensions_mut().insert(handle.clone());
        request.extensions_mut().insert(ClientAddr(self.peer));
        let Ok(response) = self.app.clone().oneshot(request).await;
        let stop = Stop {
            cut: handle.issued().cloned(),
            options: self.options.clone(),
            peer: self.peer,
        };
        drop(handle);
        let (parts, mut body) = response.into_parts();
        if let Some(len) = body.size_hint().exact() {
            // A complete answer (a refusal): send it, then carry on as a normal connection.
            let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
                return;
            };
            let mut out = Vec::with_capacity(256 + bytes.len());
            encode_head(&parts, Framing::Length(len), head.close, &mut out);
            out.extend_from_slice(&bytes);
            if write_all(&mut tcp, &out, &stop).await.is_err() {
                return;
            }
            drop(out);
            if head.close {
                let _ = tcp.shutdown().await;
            } else {
                self.hyper(tcp, None).await;
            }
            return;
        }
        let _watcher = self.watcher;
        let mut out = Vec::with_capacity(512);
        encode_head(&parts, Framing::Chunked, head.close, &mut out);
        drop(parts);
        // The first frames (preamble, replay) are ready at once: they go out with the head.
        let Some(end) = take_ready(&mut body, &mut out) else {
            return;
        };
        if write_all(&mut tcp, &out, &stop).await.is_err() {
            return;
        }
        drop(out);
        if end {
            let _ = tcp.shutdown().await;
            return;
        }
        loop {
            match poll_fn(|cx| poll_stream(&tcp, &mut body, cx)).await {
                Event::Data(data) => {
                    if write_chunk(&mut tcp, &data, &stop).await.is_err() {
                        return;
                    }
                }
                Event::End => {
                    if write_all(&mut tcp, b"0\r\n\r\n", &stop).await.is_ok() {
                        let _ = tcp.shutdown().await;
                    }
                    return;
                }
                // An error, not an end: the client must see a broken stream and resume.
                Event::Failed(e) => {
                    tracing::debug!(error = %e, "stream ended with an error");
                    return;
                }
                Event::Gone => return,
            }
        }
    }
}

/// Encodes the frames `body` has ready without waiting. `Some(true)` when the body ended (its
/// last chunk is encoded too), `None` when it failed.
fn take_ready(body: &mut Body, out: &mut Vec<u8>) -> Option<bool> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // Bounded, so a long replay goes out in pieces rather than as one huge buffer.
    while out.len() < MAX_FIRST_WRITE {
        match Pin::new(&mut *body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    encode_chunk(&data, out);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!(error = %e, "stream ended with an error");
                return None;
            }
            Poll::Ready(None) => {
                out.extend_from_slice(b"0\r\n\r\n");
                return Some(true);
            }
            Poll::Pending => return Some(false),
        }
    }
    Some(false)
}

/// What [`take_ready`] gathers for the first write at most (one more frame may pass it).
const MAX_FIRST_WRITE: usize = 64 * 1024;

/// What a streaming connection waits for.
enum Event {
    Data(Bytes),
    End,
    Failed(axum::Error),
    /// The client closed the connection or it failed.
    Gone,
}

/// The next frame of `body`, or `Gone` once the client has closed the connection. Bytes the
/// client sends meanwhile are read and dropped.
fn poll_stream(tcp: &TcpStream, body: &mut Body, cx: &mut Context<'_>) -> Poll<Event> {
    for _ in 0..16 {
        match tcp.poll_read_ready(cx) {
            Poll::Pending => break,
            Poll::Ready(Err(_)) => return Poll::Ready(Event::Gone),
            Poll::Ready(Ok(())) => {
                let mut scratch = [0u8; 256];
                match tcp.try_read(&mut scratch) {
                    Ok(0) => return Poll::Ready(Event::Gone),
                    Ok(_) => {}
                    // Readiness was cleared: the next poll registers for more.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Poll::Ready(Event::Gone),
                }
            }
        }
    }
    loop {
        return match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(Event::End),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Event::Failed(e)),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if !data.is_empty() => Poll::Ready(Event::Data(data)),
                // Trailers and empty frames have nothing to send.
                _ => continue,
            },
        };
    }
}

/// An event stream request read off the front of a connection.
pub(crate) struct StreamRequest {
    /// Bytes of the request head.
    pub(crate) len: usize,
    pub(crate) request: Request<Body>,
    /// The client asked to close the connection after this response.
    pub(crate) close: bool,
}

/// Request heads larger than this go to hyper.
const PEEK_LEN: usize = 4096;

/// Waits for the first bytes of a connection and, without consuming them, checks for a
/// complete, plain `GET` of an event stream. `Ok(None)` means "anything else: ask hyper".
async fn peek_stream_request(tcp: &TcpStream) -> io::Result<Option<StreamRequest>> {
    let mut buf = vec![0; PEEK_LEN];
    let n = tcp.peek(&mut buf).await?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(parse_stream_request(&buf[..n]))
}

pub(crate) fn parse_stream_request(buf: &[u8]) -> Option<StreamRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return None,
    };
    if req.method != Some("GET") || req.version != Some(1) {
        return None;
    }
    let target = req.path?;
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if !STREAM_PATHS.contains(&path) {
        return None;
    }
    let uri: Uri = target.parse().ok()?;
    let mut map = HeaderMap::with_capacity(req.headers.len());
    let mut close = false;
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        if name == header::CONTENT_LENGTH {
            // A GET with a body is left to hyper.
            if value.as_bytes() != b"0" {
                return None;
            }
        } else if name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::EXPECT
        {
            return None;
        } else if name == header::CONNECTION {
            let value = value.to_str().ok()?;
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    return None;
                }
            }
        }
        map.append(name, value);
    }
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = map;
    Some(StreamRequest {
        len,
        request,
        close,
    })
}

enum Framing {
    Length(u64),
    Chunked,
}

/// The status line and headers, as hyper would write them (lowercase names, a `date`).
fn encode_head(
    parts: &axum::http::response::Parts,
    framing: Framing,
    close: bool,
    out: &mut Vec<u8>,
) {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !parts.headers.contains_key(header::DATE) {
        put_header(
            out,
            b"date",
            httpdate::fmt_http_date(SystemTime::now()).as_bytes(),
        );
    }
    match framing {
        Framing::Length(n) => put_header(out, b"content-length", n.to_string().as_bytes()),
        Framing::Chunked => put_header(out, b"transfer-encoding", b"chunked"),
    }
    if close {
        put_header(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The `{size}\r\n` line that starts a chunk; at most 16 hex digits and CRLF.
fn chunk_size_line(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        buf[digits - 1 - i] = HEX[(len >> (4 * i)) & 0xf];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    &buf[..digits + 2]
}

fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        // An empty chunk would end the body.
        return;
    }
    let mut size = [0u8; 18];
    out.extend_from_slice(chunk_size_line(data.len(), &mut size));
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Chunks up to this size are assembled on the stack and sent with one plain `write`, which
/// costs the kernel noticeably less than a `writev` of three pieces.
const SMALL_CHUNK: usize = 4096;

/// Writes one chunk: at once without waiting in the usual case, else the rest when the socket
/// takes it.
async fn write_chunk(tcp: &mut TcpStream, data: &Bytes, stop: &Stop) -> io::Result<()> {
    let mut size = [0u8; 18];
    let size = chunk_size_line(data.len(), &mut size);
    let total = size.len() + data.len() + 2;
    let written = match try_write_chunk(tcp, size, data) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    if written == total {
        return Ok(());
    }
    let mut chunk = Vec::with_capacity(total);
    encode_chunk(data, &mut chunk);
    write_all(tcp, &chunk[written..], stop).await
}

/// What ends a write on the stream path early.
struct Stop {
    /// The hub cut the stream: a client that stopped reading leaves the write waiting on a
    /// full socket.
    cut: Option<CancellationToken>,
    /// The write timeout, and where its cuts are counted.
    options: Arc<Options>,
    peer: SocketAddr,
}

/// Writes all of `buf`, unless the hub cuts the stream or the socket takes nothing for the
/// write timeout.
async fn write_all(tcp: &mut TcpStream, buf: &[u8], stop: &Stop) -> io::Result<()> {
    let timeout = stop.options.write_timeout;
    let mut write = WriteTimeout::new(tcp, timeout);
    let written = match &stop.cut {
        None => write.write_all(buf).await,
        Some(cut) => tokio::select! {
            written = write.write_all(buf) => written,
            () = cut.cancelled() => {
                tracing::debug!("connection cut");
                Err(io::ErrorKind::ConnectionAborted.into())
            }
        },
    };
    if let Err(e) = &written
        && e.kind() == io::ErrorKind::TimedOut
    {
        write_timed_out(&stop.options.refusals, stop.peer, timeout);
    }
    written
}

fn write_timed_out(refusals: &Refusals, peer: SocketAddr, timeout: Duration) {
    let reason = format!(
        "the socket took no bytes for {}; connection closed",
        humantime::format_duration(timeout)
    );
    refusals.note(Limit::WriteTimeout, peer.ip(), &reason);
}

/// Writes `size` (the chunk's size line), `data` and CRLF as far as the socket takes them now.
fn try_write_chunk(tcp: &TcpStream, size: &[u8], data: &[u8]) -> io::Result<usize> {
    if data.len() <= SMALL_CHUNK {
        let mut buf = [0u8; SMALL_CHUNK + 20];
        let n = size.len() + data.len() + 2;
        buf[..size.len()].copy_from_slice(size);
        buf[size.len()..n - 2].copy_from_slice(data);
        buf[n - 2..n].copy_from_slice(b"\r\n");
        tcp.try_write(&buf[..n])
    } else {
        tcp.try_write_vectored(&[
            IoSlice::new(size),
            IoSlice::new(data),
            IoSlice::new(b"\r\n"),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AppState, Config, api};
    use tokio::io::AsyncReadExt;

    struct Running {
        addr: SocketAddr,
        state: AppState,
        token: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start(args: &[&str]) -> Running {
        let mut argv = vec![
            "ssepush",
            "--static-dir",
            "/nonexistent",
            "--kafka-brokers",
            "",
        ];
        argv.extend_from_slice(args);
        let config = Config::from_args(argv).unwrap();
        let listener = bind("127.0.0.1:0".parse().unwrap(), 128).unwrap();
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let state = AppState::new(config, token.clone()).unwrap();
        let app = api::router(state.clone());
        let mut options = Options::new(&state.config, state.refusals.clone());
        options.grace = Duration::from_secs(2);
        let task = tokio::spawn(serve(listener, app, token.clone(), options));
        Running {
            addr,
            state,
            token,
            task,
        }
    }

    impl Running {
        async fn stop(self) {
            self.token.cancel();
            for hub in self.state.hubs() {
                hub.close_all();
            }
            tokio::time::timeout(Duration::from_secs(5), self.task)
                .await
                .unwrap()
                .unwrap();
        }
    }

    /// Reads until `needle` has arrived; returns everything read.
    async fn read_until(tcp: &mut TcpStream, needle: &str) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        tokio::time::timeout(Duration::from_secs(5), async {
            while !String::from_utf8_lossy(&seen).contains(needle) {
                let n = tcp.read(&mut buf).await.unwrap();
                assert!(
                    n > 0,
                    "closed before {needle:?}: {:?}",
                    String::from_utf8_lossy(&seen)
                );
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .unwrap();
        String::from_utf8(seen).unwrap()
    }

    async fn wait_streams(state: &AppState, n: usize) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while state.v2.stats().streams != n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stream_head_and_chunks_on_the_wire() {
        let server = start(&[]).await;
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"GET /v2/sse?username=w HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let head = read_until(&mut tcp, "retry: ").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        for line in [
            "content-type: text/event-stream\r\n",
            "cache-control: no-cache\r\n",
            "x-accel-buffering: no\r\n",
            "transfer-encoding: chunked\r\n",
            "date: ",
        ] {
            assert!(head.contains(line), "{line:?} missing in {head}");
        }
        wait_streams(&server.state, 1).await;
        server.state.v2.publish("w", "hello");
        let more = read_until(&mut tcp, "data: hello\n\n\r\n").await;
        assert!(more.contains("\r\nid: "), "{more}");
        server.stop().await;
        // A clean end: the last chunk, then EOF.
        let rest = read_until(&mut tcp, "0\r\n\r\n").await;
        assert!(rest.ends_with("0\r\n\r\n"), "{rest}");
        assert_eq!(tcp.read(&mut [0u8; 16]).await.unwrap(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refusal_keeps_the_connection_for_hyper() {
        let server = start(&[]).await;
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"GET /v2/sse?username=a%3Ab HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let refused = read_until(&mut tcp, "\r\n\r\n").await;
        assert!(
            refused.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{refused}"
        );
        assert!(refused.contains("content-length: "), "{refused}");
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let ok = read_until(&mut tcp, "ok\n").await;
        assert!(ok.contains("HTTP/1.1 200 OK\r\n"), "{ok}");
        server.stop().await;
    }

    /// A stalled stream is cut, on this module's path (HTTP/1.1) and on hyper's (HTTP/1.0).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stalled_streams_are_cut_on_both_paths() {
        for version in ["1.1", "1.0"] {
            stalled_stream_is_cut(version).await;
        }
    }

    async fn stalled_stream_is_cut(version: &str) {
        let server = start(&["--queue-len", "8"]).await;
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut tcp = socket.connect(server.addr).await.unwrap();
        let request = format!("GET /v2/sse?username=slow HTTP/{version}\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let head = read_until(&mut tcp, "retry: ").await;
        assert!(
            head.starts_with(&format!("HTTP/{version} 200 OK\r\n")),
            "{head}"
        );
        assert_eq!(head.contains("chunked"), version == "1.1", "{head}");
        wait_streams(&server.state, 1).await;
        // Paced, so the connection keeps up until the socket and hyper's buffer are full.
        let body = "x".repeat(60 * 1024);
        for _ in 0..2000 {
            server.state.v2.publish("slow", &body);
            if server.state.v2.stats().slow_closed > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(server.state.v2.stats().slow_closed, 1, "HTTP/{version}");
        wait_streams(&server.state, 0).await;
        // Without reading a byte: the connection, and the stream body it holds, are dropped.
        tokio::time::timeout(Duration::from_secs(2), async {
            while server.state.budget.open() != 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("HTTP/{version}: the stalled connection was not cut"));
        let mut sink = vec![0u8; 1 << 16];
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match tcp.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "HTTP/{version}: stalled connection still open"
        );
        server.stop().await;
    }

    /// A reader that stops, on a queue too long to overflow: the write timeout cuts it, on
    /// this module's path (HTTP/1.1) and on hyper's (HTTP/1.0).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stalled_streams_are_cut_by_the_write_timeout_on_both_paths() {
        for version in ["1.1", "1.0"] {
            let server = start(&["--queue-len", "100000", "--write-timeout", "500ms"]).await;
            let socket = TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            let mut tcp = socket.connect(server.addr).await.unwrap();
            let request = format!("GET /v2/sse?username=stuck HTTP/{version}\r\n\r\n");
            tcp.write_all(request.as_bytes()).await.unwrap();
            read_until(&mut tcp, "retry: ").await;
            wait_streams(&server.state, 1).await;
            let body = "x".repeat(16 * 1024);
            // A few MB: more than the socket buffers hold, far fewer frames than the queue.
            for _ in 0..256 {
                server.state.v2.publish("stuck", &body);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::timeout(Duration::from_secs(20), async {
                while server.state.budget.open() != 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("HTTP/{version}: the stalled stream was not cut"));
            assert_eq!(server.state.v2.stats().slow_closed, 0, "HTTP/{version}");
            let cut = server.state.refusals.total(Limit::WriteTimeout);
            assert_eq!(cut, 1, "HTTP/{version}: counted in /metrics");
            server.stop().await;
        }
    }

    #[test]
    fn chunk_sizes() {
        let mut buf = [0u8; 18];
        assert_eq!(chunk_size_line(0, &mut buf), b"0\r\n");
        assert_eq!(chunk_size_line(1, &mut buf), b"1\r\n");
        assert_eq!(chunk_size_line(255, &mut buf), b"ff\r\n");
        assert_eq!(chunk_size_line(4096, &mut buf), b"1000\r\n");
        assert_eq!(
            chunk_size_line(usize::MAX, &mut buf),
            b"ffffffffffffffff\r\n"
        );
    }

    #[test]
    fn only_plain_stream_gets_are_taken() {
        let take = |s: &str| parse_stream_request(s.as_bytes()).is_some();
        assert!(take("GET /v2/sse?username=a HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(take("GET /v1/sse HTTP/1.1\r\n\r\n"));
        assert!(!take("GET /v2/sse HTTP/1.0\r\n\r\n"));
        assert!(!take("POST /v2/sse HTTP/1.1\r\n\r\n"));
        assert!(!take("GET /v2/message HTTP/1.1\r\n\r\n"));
        assert!(!take("GET /v2/sse HTTP/1.1\r\nHost: x\r\n"));
        assert!(!take(
            "GET /v2/sse HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!take("GET /v2/sse HTTP/1.1\r\nContent-Length: 3\r\n\r\n"));
        let r =
            parse_stream_request(b"GET /v3/sse HTTP/1.1\r\nConnection: Close\r\n\r\nGET").unwrap();
        assert!(r.close);
        assert_eq!(r.len, 43);
        assert_eq!(r.request.uri().path(), "/v3/sse");
    }
}
