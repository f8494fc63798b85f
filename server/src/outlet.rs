//! The socket end of an event stream that [`crate::serve`] answers itself: HTTP/1.1 chunk
//! framing, and the direct path on which a publisher writes a frame to the socket itself.
//!
//! Handing each frame to the stream's task costs a wake-up, a trip through the scheduler and a
//! poll of the whole body stack, more than the frame's own `write`. So when a stream has nothing
//! queued and nothing being written, the hub writes the frame here, on the publisher's thread.
//! Order holds because every writer first takes this outlet: the task marks it busy whenever it
//! holds data the socket has not taken yet, and a publisher only writes while it is idle.

use bytes::Bytes;
use std::{
    io::{self, IoSlice},
    sync::{Arc, Mutex, MutexGuard},
};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Where a publisher may write an event stream's frames directly.
#[derive(Default)]
pub struct Outlet {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Set once the response head is out, and taken away when the connection ends.
    socket: Option<Arc<TcpStream>>,
    /// The stream's task holds data not yet written: publishers must queue behind it.
    busy: bool,
    /// The tail of a direct write the socket took only in part; the task writes it next.
    pending: Option<Bytes>,
    /// A frame went out directly since the task last asked (keep-alives wait for silence).
    wrote: bool,
}

/// What became of a direct write.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// The socket took the whole frame.
    Whole,
    /// The socket took part of it; the rest is pending and the stream's task must be woken.
    Part,
    /// Nothing was written: queue the frame for the task.
    No,
}

impl Outlet {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets publishers write to `socket` from now on.
    pub fn open(&self, socket: Arc<TcpStream>) {
        self.state().socket = Some(socket);
    }

    /// Ends direct writes and lets go of the socket, so it closes with its connection.
    pub fn close(&self) {
        let mut state = self.state();
        state.socket = None;
        state.pending = None;
    }

    /// Writes `frame` as one chunk if the socket is open and idle and takes it without waiting.
    /// The caller must hold the lock that orders this stream's frames, with none queued.
    pub fn try_send(&self, frame: &[u8]) -> Sent {
        let mut state = self.state();
        if state.busy {
            return Sent::No;
        }
        let Some(socket) = &state.socket else {
            return Sent::No;
        };
        match try_write_chunk(socket, frame) {
            Ok(n) => {
                state.wrote = true;
                let whole = encoded_len(frame.len());
                if n == whole {
                    return Sent::Whole;
                }
                let mut chunk = Vec::with_capacity(whole);
                encode_chunk(frame, &mut chunk);
                state.pending = Some(Bytes::from(chunk).slice(n..));
                state.busy = true;
                Sent::Part
            }
            // Would block: the task waits for room. Any other error: its next write sees it.
            Err(_) => Sent::No,
        }
    }

    /// The stream's task took data to write; publishers queue until [`Outlet::written`].
    pub fn begin(&self) {
        let mut state = self.state();
        state.busy = true;
        // The task sends now, which resets its own silence clock.
        state.wrote = false;
    }

    /// For a keep-alive: claims the socket like [`Outlet::begin`], unless it is busy or a frame
    /// went out directly since the last call, which means the stream was not silent.
    pub fn begin_if_silent(&self) -> bool {
        let mut state = self.state();
        if state.busy || std::mem::take(&mut state.wrote) {
            return false;
        }
        state.busy = true;
        true
    }

    /// The tail of a partial direct write, for the task to write before anything else. The
    /// outlet stays busy until [`Outlet::written`].
    pub fn take_pending(&self) -> Option<Bytes> {
        self.state().pending.take()
    }

    pub fn has_pending(&self) -> bool {
        self.state().pending.is_some()
    }

    /// The task's write is done: publishers may write directly again.
    pub fn written(&self) {
        self.state().busy = false;
    }
}

/// The `{size}\r\n` line that starts a chunk; at most 16 hex digits and CRLF.
pub fn chunk_size_line(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        buf[digits - 1 - i] = HEX[(len >> (4 * i)) & 0xf];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    &buf[..digits + 2]
}

fn encoded_len(len: usize) -> usize {
    chunk_size_line(len, &mut [0; 18]).len() + len + 2
}

pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
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

/// Writes `data` as one chunk as far as the socket takes it without waiting.
fn try_write_chunk(tcp: &TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut size = [0u8; 18];
    let size = chunk_size_line(data.len(), &mut size);
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

/// Writes one chunk: at once without waiting in the usual case, else the rest when the socket
/// takes it.
pub async fn write_chunk(
    tcp: &TcpStream,
    data: &[u8],
    cut: Option<&CancellationToken>,
) -> io::Result<()> {
    let written = match try_write_chunk(tcp, data) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    if written == encoded_len(data.len()) {
        return Ok(());
    }
    let mut chunk = Vec::new();
    encode_chunk(data, &mut chunk);
    write_all(tcp, &chunk[written..], cut).await
}

/// Writes all of `buf`, unless the hub cuts the stream meanwhile: a client that stopped reading
/// leaves the write waiting on a full socket.
pub async fn write_all(
    tcp: &TcpStream,
    buf: &[u8],
    cut: Option<&CancellationToken>,
) -> io::Result<()> {
    let all = async {
        let mut rest = buf;
        while !rest.is_empty() {
            tcp.writable().await?;
            match tcp.try_write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    match cut {
        None => all.await,
        Some(cut) => tokio::select! {
            written = all => written,
            () = cut.cancelled() => {
                tracing::debug!("connection cut");
                Err(io::ErrorKind::ConnectionAborted.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{
        io::AsyncReadExt,
        net::{TcpListener, TcpStream},
    };

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
        assert_eq!(encoded_len(255), 2 + 2 + 255 + 2);
    }

    async fn pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Arc::new(server), client)
    }

    /// A publisher writes only to an open, idle outlet; a keep-alive only follows silence.
    #[tokio::test]
    async fn direct_writes_wait_their_turn() {
        let (server, mut client) = pair().await;
        let outlet = Outlet::default();
        assert_eq!(outlet.try_send(b"early"), Sent::No, "not open yet");
        outlet.open(server);
        outlet.begin();
        assert_eq!(outlet.try_send(b"a"), Sent::No, "the task is writing");
        outlet.written();
        assert_eq!(outlet.try_send(b"hello"), Sent::Whole);
        assert!(!outlet.begin_if_silent(), "a frame just went out");
        assert!(outlet.begin_if_silent());
        outlet.written();
        let mut buf = [0u8; 10];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"5\r\nhello\r\n");
        outlet.close();
        assert_eq!(outlet.try_send(b"late"), Sent::No);
    }

    /// A frame the socket takes only in part leaves its tail pending and the outlet busy, so
    /// nothing can slip in between.
    #[tokio::test]
    async fn a_partial_write_leaves_its_tail() {
        let (server, mut client) = pair().await;
        let outlet = Outlet::default();
        outlet.open(server.clone());
        let frame = vec![b'x'; 64 * 1024];
        let mut sent = 0usize;
        loop {
            match outlet.try_send(&frame) {
                Sent::Whole => sent += encoded_len(frame.len()),
                Sent::Part => break,
                Sent::No => panic!("refused before the socket filled"),
            }
        }
        assert_eq!(outlet.try_send(b"later"), Sent::No);
        let tail = outlet.take_pending().unwrap();
        assert!(!tail.is_empty() && tail.ends_with(b"\r\n"));
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        write_all(&server, &tail, None).await.unwrap();
        outlet.written();
        outlet.close();
        socket2::SockRef::from(&*server)
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        let all = reader.await.unwrap();
        let chunk = encoded_len(frame.len());
        assert_eq!(all.len(), sent + chunk, "whole chunks, nothing lost");
        assert!(all.chunks(chunk).all(|c| c.starts_with(b"10000\r\nxx")));
    }
}
