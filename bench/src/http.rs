//! A minimal HTTP/1.1 client over raw tokio TCP, just enough for the load generator.
//!
//! A full client (hyper, reqwest) would cost the load generator CPU that the server under test
//! needs on a 2-core machine, and it would hide the socket: here every connection is bound to a
//! source address spread over 127.0.0.2-127.0.0.250 so 20,000 streams never run out of
//! ephemeral ports, and bodies are decoded (chunked, length or close-delimited) straight into
//! the SSE parser.

use crate::sse::{Item, Parser};
use anyhow::{Context, Result, bail, ensure};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Source addresses 127.0.0.2 ..= 127.0.0.250: 249 of them, each with its own port range.
const FIRST_SOURCE: u32 = u32::from_be_bytes([127, 0, 0, 2]);
const SOURCE_COUNT: u32 = 249;
static NEXT_SOURCE: AtomicU32 = AtomicU32::new(0);

/// The next source address, round robin.
fn next_source() -> Ipv4Addr {
    let n = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % SOURCE_COUNT;
    Ipv4Addr::from(FIRST_SOURCE + n)
}

/// Connects to `server` from the next loopback source address.
pub async fn connect(server: SocketAddr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    let source = next_source();
    socket
        .bind(SocketAddr::from((source, 0)))
        .with_context(|| format!("bind {source}"))?;
    let stream = socket
        .connect(server)
        .await
        .with_context(|| format!("connect {server} from {source}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// How a response body ends.
#[derive(Debug)]
enum Body {
    Chunked(Chunked),
    Length(usize),
    UntilClose,
}

/// The parts of a response head the client needs.
#[derive(Debug)]
struct Head {
    status: u16,
    content_type: String,
    body: Body,
    close: bool,
}

/// Reads a response head from `stream` into `buf`; on return `buf` holds only body bytes.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Head> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = response.parse(buf)? {
            let status = response.code.unwrap_or(0);
            let mut content_type = String::new();
            let mut chunked = false;
            let mut length = None;
            let mut close = false;
            for header in response.headers.iter() {
                let value = String::from_utf8_lossy(header.value).to_ascii_lowercase();
                match header.name.to_ascii_lowercase().as_str() {
                    "content-type" => content_type = value,
                    "transfer-encoding" => chunked = value.contains("chunked"),
                    "content-length" => length = Some(value.trim().parse()?),
                    "connection" => close = value.contains("close"),
                    _ => {}
                }
            }
            let body = match (chunked, length) {
                (true, _) => Body::Chunked(Chunked::default()),
                (false, Some(n)) => Body::Length(n),
                (false, None) => Body::UntilClose,
            };
            buf.drain(..len);
            return Ok(Head {
                status,
                content_type,
                body,
                close,
            });
        }
        ensure!(buf.len() < 64 * 1024, "response head over 64 KiB");
        if stream.read_buf(buf).await? == 0 {
            bail!("connection closed before the response head");
        }
    }
}

/// An open `text/event-stream` response being read.
pub struct SseStream {
    stream: TcpStream,
    /// Read buffer; small for idle streams, larger where throughput matters.
    buf: Box<[u8]>,
    /// Body bytes that arrived with the head.
    pending: Vec<u8>,
    body: Body,
    parser: Parser,
}

impl SseStream {
    /// Opens `GET path` and checks for a 200 `text/event-stream` response.
    ///
    /// `last_event_id` is sent as `Last-Event-ID` when non-empty, as a browser does on reconnect.
    pub async fn open(
        server: SocketAddr,
        path: &str,
        last_event_id: &str,
        buf_size: usize,
    ) -> Result<Self> {
        let mut stream = connect(server).await?;
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {server}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"
        );
        if !last_event_id.is_empty() {
            request.push_str(&format!("Last-Event-ID: {last_event_id}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut pending = Vec::with_capacity(1024);
        let head = read_head(&mut stream, &mut pending).await?;
        ensure!(head.status == 200, "status {}", head.status);
        ensure!(
            head.content_type.starts_with("text/event-stream"),
            "content-type {:?}",
            head.content_type
        );
        Ok(Self {
            stream,
            buf: vec![0; buf_size].into_boxed_slice(),
            pending,
            body: head.body,
            parser: Parser::new(),
        })
    }

    /// The last event id seen, for a resuming reconnect.
    pub fn last_event_id(&self) -> &str {
        self.parser.last_event_id()
    }

    /// Waits for the next network read and reports every item it completes.
    ///
    /// Returns `Ok(false)` when the body ended cleanly.
    pub async fn read_items(&mut self, out: &mut impl FnMut(Item)) -> Result<bool> {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            let open = self.decode(&pending, out)?;
            return Ok(open);
        }
        let n = self.stream.read(&mut self.buf).await?;
        if n == 0 {
            return match self.body {
                Body::UntilClose => Ok(false),
                _ => bail!("connection closed inside the body"),
            };
        }
        let Self {
            buf, body, parser, ..
        } = self;
        Self::decode_into(body, parser, &buf[..n], out)
    }

    fn decode(&mut self, data: &[u8], out: &mut impl FnMut(Item)) -> Result<bool> {
        Self::decode_into(&mut self.body, &mut self.parser, data, out)
    }

    fn decode_into(
        body: &mut Body,
        parser: &mut Parser,
        data: &[u8],
        out: &mut impl FnMut(Item),
    ) -> Result<bool> {
        match body {
            Body::Chunked(chunked) => {
                chunked.decode(data, &mut |part| parser.feed(part, out))?;
                Ok(!chunked.is_done())
            }
            Body::Length(remaining) => {
                let take = data.len().min(*remaining);
                parser.feed(&data[..take], out);
                *remaining -= take;
                Ok(*remaining > 0)
            }
            Body::UntilClose => {
                parser.feed(data, out);
                Ok(true)
            }
        }
    }
}

/// A keep-alive HTTP/1.1 connection for POSTs, reconnecting when the server closes it.
pub struct Publisher {
    server: SocketAddr,
    /// Extra header lines (each ending in CRLF) for every request, such as `Authorization`.
    headers: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    request: Vec<u8>,
}

impl Publisher {
    /// A publisher for `server`; it connects on first use.
    pub fn new(server: SocketAddr) -> Self {
        Self {
            server,
            headers: String::new(),
            stream: None,
            buf: Vec::with_capacity(4096),
            request: Vec::with_capacity(512),
        }
    }

    /// A publisher whose POSTs carry `Authorization: Bearer {token}`.
    pub fn with_token(server: SocketAddr, token: &str) -> Self {
        let mut publisher = Self::new(server);
        publisher.headers = format!("Authorization: Bearer {token}\r\n");
        publisher
    }

    /// POSTs `body` as text to `path`; returns the status and the response body.
    pub async fn post(&mut self, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => self.stream.insert(connect(self.server).await?),
        };
        self.request.clear();
        self.request.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
                self.server,
                body.len(),
                self.headers
            )
            .as_bytes(),
        );
        self.request.extend_from_slice(body);
        let result = Self::exchange(stream, &self.request, &mut self.buf).await;
        match result {
            Ok((status, body, close)) => {
                if close {
                    self.stream = None;
                }
                Ok((status, body))
            }
            Err(err) => {
                self.stream = None;
                Err(err)
            }
        }
    }

    async fn exchange(
        stream: &mut TcpStream,
        request: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(u16, Vec<u8>, bool)> {
        buf.clear();
        stream.write_all(request).await?;
        let head = read_head(stream, buf).await?;
        let mut body = Vec::new();
        match head.body {
            Body::Length(n) => {
                while buf.len() < n {
                    if stream.read_buf(buf).await? == 0 {
                        bail!("connection closed inside the body");
                    }
                }
                body.extend_from_slice(&buf[..n]);
            }
            Body::Chunked(mut chunked) => loop {
                chunked.decode(buf, &mut |part| body.extend_from_slice(part))?;
                if chunked.is_done() {
                    break;
                }
                buf.clear();
                if stream.read_buf(buf).await? == 0 {
                    bail!("connection closed inside the body");
                }
            },
            Body::UntilClose => {
                stream.read_to_end(buf).await?;
                body.extend_from_slice(buf);
                return Ok((head.status, body, true));
            }
        }
        Ok((head.status, body, head.close))
    }
}

/// `GET path` on a fresh connection; returns the status. Used to poll `/healthz`.
pub async fn get_status(server: SocketAddr, path: &str) -> Result<u16> {
    let mut stream = TcpStream::connect(server).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    Ok(read_head(&mut stream, &mut buf).await?.status)
}

/// `GET path` on a fresh connection; returns the status and the body. Used to read `/metrics`.
pub async fn get(server: SocketAddr, path: &str) -> Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(server).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    let head = read_head(&mut stream, &mut buf).await?;
    stream.read_to_end(&mut buf).await?;
    let body = match head.body {
        Body::Chunked(mut chunked) => {
            let mut body = Vec::new();
            chunked.decode(&buf, &mut |part| body.extend_from_slice(part))?;
            body
        }
        Body::Length(n) => buf[..n.min(buf.len())].to_vec(),
        Body::UntilClose => buf,
    };
    Ok((head.status, body))
}

/// Where a chunked body decoder is.
#[derive(Debug, Default)]
enum ChunkState {
    /// Reading the hex size.
    #[default]
    Size,
    /// Skipping a chunk extension up to LF.
    Extension,
    /// Expecting the LF after the size line's CR.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting the CR (or bare LF) after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line; an empty one ends the body.
    TrailerStart,
    /// Inside a trailer line.
    TrailerLine,
    /// Expecting the final LF.
    TrailerLf,
    /// The body ended.
    Done,
}

/// A streaming `Transfer-Encoding: chunked` decoder.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
    size: usize,
    any_digit: bool,
}

impl Chunked {
    /// True once the last chunk and the trailer were read.
    pub fn is_done(&self) -> bool {
        matches!(self.state, ChunkState::Done)
    }

    /// Decodes `input`, handing each run of body bytes to `out`.
    pub fn decode<'a>(&mut self, input: &'a [u8], out: &mut impl FnMut(&'a [u8])) -> Result<()> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = (b as char).to_digit(16).unwrap_or(0) as usize;
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(digit))
                            .context("chunk size overflow")?;
                        self.any_digit = true;
                    }
                    b';' | b' ' | b'\t' => self.state = ChunkState::Extension,
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => self.end_size()?,
                    _ => bail!("bad chunk size byte {b:#x}"),
                },
                ChunkState::Extension => {
                    if b == b'\n' {
                        self.end_size()?;
                    }
                }
                ChunkState::SizeLf => {
                    ensure!(b == b'\n', "expected LF after chunk size");
                    self.end_size()?;
                }
                ChunkState::Data => {
                    let take = (input.len() - i).min(self.size);
                    out(&input[i..i + take]);
                    self.size -= take;
                    i += take;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => match b {
                    b'\r' => self.state = ChunkState::DataLf,
                    b'\n' => self.state = ChunkState::Size,
                    _ => bail!("expected CRLF after chunk data"),
                },
                ChunkState::DataLf => {
                    ensure!(b == b'\n', "expected LF after chunk data");
                    self.state = ChunkState::Size;
                }
                ChunkState::TrailerStart => match b {
                    b'\r' => self.state = ChunkState::TrailerLf,
                    b'\n' => self.state = ChunkState::Done,
                    _ => self.state = ChunkState::TrailerLine,
                },
                ChunkState::TrailerLine => {
                    if b == b'\n' {
                        self.state = ChunkState::TrailerStart;
                    }
                }
                ChunkState::TrailerLf => {
                    ensure!(b == b'\n', "expected LF after trailer");
                    self.state = ChunkState::Done;
                }
                ChunkState::Done => bail!("bytes after the end of a chunked body"),
            }
            i += 1;
        }
        Ok(())
    }

    fn end_size(&mut self) -> Result<()> {
        ensure!(self.any_digit, "empty chunk size");
        self.any_digit = false;
        self.state = if self.size == 0 {
            ChunkState::TrailerStart
        } else {
            ChunkState::Data
        };
        Ok(())
    }
}

/// A value from a server's `/metrics`: the first series named exactly `name`.
pub async fn metric<T: std::str::FromStr>(addr: SocketAddr, name: &str) -> Option<T> {
    let (status, body) = get(addr, "/metrics").await.ok()?;
    if status != 200 {
        return None;
    }
    String::from_utf8_lossy(&body).lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_split_anywhere() {
        let wire: &[u8] = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        for cut in 0..wire.len() {
            let mut decoder = Chunked::default();
            let mut body = Vec::new();
            decoder
                .decode(&wire[..cut], &mut |p| body.extend_from_slice(p))
                .unwrap();
            decoder
                .decode(&wire[cut..], &mut |p| body.extend_from_slice(p))
                .unwrap();
            assert_eq!(body, b"hello 0123456789", "cut {cut}");
            assert!(decoder.is_done());
        }
    }
}
