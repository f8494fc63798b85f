//! The HTTP/1.1 event-stream fast path.
//!
//! Most of a busy server's connections are event streams that sit idle for minutes. hyper keeps
//! two 8 KiB buffers and a large state machine per connection for their whole life, more than
//! the stream itself costs. So a connection whose first request is a plain `GET` of an event
//! stream path is answered here: the request (read with `peek`, so nothing is consumed unless
//! this path takes it) goes through the same router, and the response is written straight to
//! the socket, chunk by chunk. Everything else, and anything here that is not a simple case, is
//! left to hyper untouched.

use axum::{
    body::{Body, HttpBody},
    http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version, header},
};
use bytes::Bytes;
use std::{
    future::poll_fn,
    io::{self, IoSlice},
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::SystemTime,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{Connection, Disconnect, Options, write_timed_out};
use crate::{api::STREAM_PATHS, client::ClientAddr, write_timeout::WriteTimeout};

impl Connection {
    /// Answers an event stream request taken off the socket's front.
    pub(super) async fn stream(self, mut tcp: TcpStream, head: StreamRequest) {
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
        self.options.metrics.count_rejection(&response);
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
                Event::Gone(None) => return,
                // The kernel gave up on unacknowledged data (TCP_USER_TIMEOUT): the peer
                // stopped taking bytes, like a write timeout.
                Event::Gone(Some(e)) => {
                    if e.kind() == io::ErrorKind::TimedOut {
                        write_timed_out(
                            &stop.options.refusals,
                            stop.peer,
                            stop.options.write_timeout,
                        );
                    }
                    return;
                }
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
    Gone(Option<io::Error>),
}

/// The next frame of `body`, or `Gone` once the client has closed the connection. Bytes the
/// client sends meanwhile are read and dropped.
fn poll_stream(tcp: &TcpStream, body: &mut Body, cx: &mut Context<'_>) -> Poll<Event> {
    for _ in 0..16 {
        match tcp.poll_read_ready(cx) {
            Poll::Pending => break,
            Poll::Ready(Err(e)) => return Poll::Ready(Event::Gone(Some(e))),
            Poll::Ready(Ok(())) => {
                let mut scratch = [0u8; 256];
                match tcp.try_read(&mut scratch) {
                    Ok(0) => return Poll::Ready(Event::Gone(None)),
                    Ok(_) => {}
                    // Readiness was cleared: the next poll registers for more.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Event::Gone(Some(e))),
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

/// How a connection's first bytes say it is to be served.
#[allow(
    clippy::large_enum_variant,
    reason = "short-lived and moved at once; a box would cost every stream an allocation"
)]
pub(super) enum First {
    /// A complete, plain HTTP/1.1 `GET` of an event stream: this path answers it.
    Stream(StreamRequest),
    /// The HTTP/2 connection preface (h2c with prior knowledge).
    Http2,
    /// Anything else: hyper's HTTP/1.1.
    Other,
}

/// What an HTTP/2 connection starts with (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits for the first bytes of a connection and, without consuming them, tells how it is to
/// be served.
pub(super) async fn peek_first(tcp: &TcpStream) -> io::Result<First> {
    let mut buf = vec![0; PEEK_LEN];
    let n = tcp.peek(&mut buf).await?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let seen = &buf[..n];
    // A preface cut short by the first segment is still one; hyper checks the rest.
    if HTTP2_PREFACE.starts_with(&seen[..n.min(HTTP2_PREFACE.len())]) && n >= 3 {
        return Ok(First::Http2);
    }
    Ok(parse_stream_request(seen).map_or(First::Other, First::Stream))
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
