//! Response bodies of the SSE endpoints.

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, stream};
use std::{
    convert::Infallible,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::{
    budget::StreamPermit,
    frame,
    hub::{Closed, Next, Subscription},
};

/// A v2/v3 stream: the preamble and replay, then live frames from the hub, with keep-alive
/// comments only after a quiet interval. Dropping it unregisters the stream.
pub struct HubStream {
    first: Option<Bytes>,
    sub: Subscription,
    keep_alive: Pin<Box<Sleep>>,
    keep_alive_every: Duration,
    done: bool,
    _permit: StreamPermit,
}

impl HubStream {
    pub fn new(
        sub: Subscription,
        retry: Duration,
        keep_alive: Duration,
        permit: StreamPermit,
    ) -> Self {
        let mut first = frame::preamble(retry);
        for frame in &sub.replay {
            first.extend_from_slice(frame);
        }
        Self {
            first: Some(first.freeze()),
            sub,
            keep_alive: Box::pin(sleep_until(Instant::now() + keep_alive)),
            keep_alive_every: keep_alive,
            done: false,
            _permit: permit,
        }
    }

    fn sent(&mut self, chunk: Bytes) -> Poll<Option<io::Result<Bytes>>> {
        let next = Instant::now() + self.keep_alive_every;
        self.keep_alive.as_mut().reset(next);
        Poll::Ready(Some(Ok(chunk)))
    }
}

impl Stream for HubStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(first) = self.first.take() {
            return self.sent(first);
        }
        match self.sub.queue.poll_next(cx) {
            Poll::Ready(Next::Frames(frames)) => self.sent(frames),
            Poll::Ready(Next::Closed(Closed::Shutdown)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Next::Closed(Closed::Overflow)) => {
                // An error, not an end: the client must see a broken stream and resume.
                self.done = true;
                Poll::Ready(Some(Err(io::Error::other("stream fell too far behind"))))
            }
            Poll::Pending => match self.keep_alive.as_mut().poll(cx) {
                Poll::Ready(()) => self.sent(Bytes::from_static(frame::KEEP_ALIVE)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// v1's stream: `data: hi!` at once and then every `interval`, keep-alives in the silences
/// between, until shutdown.
pub fn v1(
    interval: Duration,
    keep_alive: Duration,
    retry: Duration,
    shutdown: CancellationToken,
    permit: StreamPermit,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    const HI: &str = "hi!";
    let mut first = BytesMut::from(&frame::preamble(retry)[..]);
    first.extend_from_slice(&frame::data_only(HI));
    let start = Instant::now();
    let state = (start + interval, start, shutdown, permit);
    let rest = stream::unfold(
        state,
        move |(next_hi, last_sent, shutdown, permit)| async move {
            let due = next_hi.min(last_sent + keep_alive);
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = sleep_until(due) => {}
            }
            let now = Instant::now();
            if now >= next_hi {
                Some((
                    Ok(frame::data_only(HI)),
                    (next_hi + interval, now, shutdown, permit),
                ))
            } else {
                Some((
                    Ok(Bytes::from_static(frame::KEEP_ALIVE)),
                    (next_hi, now, shutdown, permit),
                ))
            }
        },
    );
    stream::once(async move { Ok(first.freeze()) }).chain(rest)
}
