//! The bounded queue between the hub and one open stream.
//!
//! Publishers never wait on it: a frame is pushed under a short per-stream lock, and a stream
//! whose queue is full is closed on the spot. Its frames are freed at once and its connection is
//! cut, so a client that stopped reading costs nothing more; it reconnects and resumes from
//! history with `Last-Event-ID`.

use bytes::{Bytes, BytesMut};
use std::{
    collections::VecDeque,
    sync::Mutex,
    task::{Context, Poll, Waker},
};
use tokio_util::sync::CancellationToken;

/// Why a queue stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The client fell `capacity` frames behind.
    Overflow,
    /// The server is shutting down: end the stream cleanly.
    Shutdown,
}

/// Polled result for the stream side.
#[derive(Debug)]
pub enum Next {
    /// Frames to send, and when the oldest of them was published (ms since the Unix epoch).
    Frames(Bytes, u64),
    Closed(Closed),
}

/// Now, in milliseconds since the Unix epoch: how frames are stamped when published.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub struct StreamQueue {
    capacity: usize,
    state: Mutex<State>,
    /// Cuts the stream's TCP connection; needed because a stalled connection's body is never
    /// polled again, so ending the body alone would not free it.
    disconnect: Option<CancellationToken>,
}

#[derive(Default)]
struct State {
    /// Each frame with the time it was published (ms since the Unix epoch).
    frames: VecDeque<(Bytes, u64)>,
    closed: Option<Closed>,
    waker: Option<Waker>,
}

/// Frames coalesced into one write are capped at about this many bytes.
const MAX_BATCH_BYTES: usize = 64 * 1024;

impl StreamQueue {
    pub fn new(capacity: usize, disconnect: Option<CancellationToken>) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::default(),
            disconnect,
        }
    }

    /// Queues a frame published at `stamp` (ms since the Unix epoch). Returns `false` when
    /// the stream is (now) closed.
    pub fn push(&self, frame: Bytes, stamp: u64) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.closed.is_some() {
            return false;
        }
        if state.frames.len() >= self.capacity {
            state.frames = VecDeque::new();
            state.closed = Some(Closed::Overflow);
            let waker = state.waker.take();
            drop(state);
            if let Some(token) = &self.disconnect {
                token.cancel();
            }
            if let Some(waker) = waker {
                waker.wake();
            }
            return false;
        }
        state.frames.push_back((frame, stamp));
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Frames waiting to be sent.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .frames
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends the stream cleanly once what is queued has been sent.
    pub fn close(&self, why: Closed) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.closed.get_or_insert(why);
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether the stream was closed, leaving what is queued; wakes the caller when it is.
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<Closed> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(why) = state.closed {
            return Poll::Ready(why);
        }
        match &mut state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Everything queued, coalesced into one chunk so a burst costs one write.
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Next> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.frames.len() {
            0 => {}
            1 => {
                let (frame, stamp) = state.frames.pop_front().unwrap_or_default();
                return Poll::Ready(Next::Frames(frame, stamp));
            }
            _ => {
                let mut batch = BytesMut::new();
                let oldest = state.frames.front().map_or(0, |(_, stamp)| *stamp);
                while let Some((frame, _)) = state.frames.front() {
                    if !batch.is_empty() && batch.len() + frame.len() > MAX_BATCH_BYTES {
                        break;
                    }
                    batch.extend_from_slice(frame);
                    state.frames.pop_front();
                }
                if state.frames.is_empty() {
                    // Give back the capacity a burst grew, so idle streams stay small.
                    state.frames = VecDeque::new();
                }
                return Poll::Ready(Next::Frames(batch.freeze(), oldest));
            }
        }
        if let Some(why) = state.closed {
            return Poll::Ready(Next::Closed(why));
        }
        match &mut state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn poll(q: &StreamQueue) -> Poll<Next> {
        q.poll_next(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn coalesces_and_overflows() {
        let token = CancellationToken::new();
        let q = StreamQueue::new(2, Some(token.clone()));
        assert!(matches!(poll(&q), Poll::Pending));
        assert!(q.push(Bytes::from_static(b"a"), 1));
        assert!(q.push(Bytes::from_static(b"b"), 2));
        match poll(&q) {
            Poll::Ready(Next::Frames(b, oldest)) => assert_eq!((&b[..], oldest), (&b"ab"[..], 1)),
            other => panic!("{other:?}"),
        }
        assert!(q.push(Bytes::from_static(b"c"), 3));
        assert!(q.push(Bytes::from_static(b"d"), 4));
        assert!(!token.is_cancelled());
        assert!(!q.push(Bytes::from_static(b"e"), 5));
        assert!(token.is_cancelled());
        assert!(matches!(
            poll(&q),
            Poll::Ready(Next::Closed(Closed::Overflow))
        ));
        assert!(!q.push(Bytes::from_static(b"f"), 6));
    }

    #[test]
    fn shutdown_drains_first() {
        let q = StreamQueue::new(8, None);
        q.push(Bytes::from_static(b"x"), 0);
        q.close(Closed::Shutdown);
        assert!(matches!(poll(&q), Poll::Ready(Next::Frames(..))));
        assert!(matches!(
            poll(&q),
            Poll::Ready(Next::Closed(Closed::Shutdown))
        ));
    }
}
