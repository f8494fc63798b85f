//! A socket that gives up on a peer that stops taking bytes.
//!
//! hyper waits on a full socket for as long as it stays full: a client that stops reading
//! would hold its connection, and whatever response it was sent, forever. Wrapped in
//! [`WriteTimeout`], a write that makes no progress for the timeout fails instead, and the
//! connection ends.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

pub struct WriteTimeout<T> {
    inner: T,
    timeout: Duration,
    /// Armed while a write waits on the socket; made on the first wait, then reused.
    stalled: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl<T> WriteTimeout<T> {
    pub fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            stalled: None,
            waiting: false,
        }
    }

    /// Maps a write's outcome: progress disarms the timer, a wait arms it (once per stall)
    /// and fails when it fires.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.waiting = false;
            return polled;
        }
        let deadline = Instant::now() + self.timeout;
        let sleep = match &mut self.stalled {
            Some(sleep) => {
                if !self.waiting {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => self
                .stalled
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.waiting = true;
        ready!(sleep.as_mut().poll(cx));
        tracing::debug!(timeout = ?self.timeout, "the peer took no bytes; closing");
        Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A peer that never reads: the write fails once the timeout passes without progress,
    /// and not before, on paused time.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_fails_after_the_timeout() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut w = WriteTimeout::new(near, Duration::from_secs(30));
        let start = Instant::now();
        w.write_all(&[0; 64]).await.unwrap();
        let err = w.write_all(&[0; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        // A reader that takes a byte now and then keeps it alive past the timeout.
        let (near, mut far2) = tokio::io::duplex(8);
        let mut w = WriteTimeout::new(near, Duration::from_secs(30));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                far2.read_exact(&mut buf).await.unwrap();
            }
        });
        let start = Instant::now();
        w.write_all(&[1; 80]).await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(180));
        reader.await.unwrap();
        drop(far.read(&mut [0; 64]).await);
    }
}
