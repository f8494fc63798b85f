//! The end of a stream whose token expires: a `token-expiring` event shortly before, then the
//! end, so the client can fetch a new token and resume with `Last-Event-ID` in time.

use bytes::Bytes;
use std::{
    future::poll_fn,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};
use tokio::time::{Instant, Sleep, sleep_until};

use crate::frame;

#[derive(Debug)]
pub struct Expiry {
    /// Set for the notice first, then for the end.
    timer: Pin<Box<Sleep>>,
    end: Instant,
    noticed: bool,
}

impl Expiry {
    /// Ends at `at` (wall-clock, as the token says), with the notice `notice` before.
    pub fn new(at: SystemTime, notice: Duration) -> Self {
        let left = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let now = Instant::now();
        let end = now + left;
        let warn = end.checked_sub(notice).unwrap_or(now).max(now);
        Self {
            timer: Box::pin(sleep_until(warn)),
            end,
            noticed: false,
        }
    }

    /// `Ready(Some(event))` when the notice is due, `Ready(None)` when the stream must end.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if self.noticed {
            return Poll::Ready(None);
        }
        self.noticed = true;
        self.timer.as_mut().reset(self.end);
        let left = self.end.saturating_duration_since(Instant::now());
        let secs = left.as_secs() + u64::from(left.subsec_millis() >= 500);
        Poll::Ready(Some(frame::named(
            wire::TOKEN_EXPIRING_EVENT,
            &secs.to_string(),
        )))
    }
}

/// The next step of an optional expiry; never resolves without one.
pub async fn next(expiry: &mut Option<Expiry>) -> Option<Bytes> {
    match expiry {
        Some(expiry) => poll_fn(|cx| expiry.poll(cx)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn notice_then_end_at_the_expiry() {
        let start = Instant::now();
        let mut expiry = Some(Expiry::new(
            SystemTime::now() + Duration::from_secs(100),
            Duration::from_secs(30),
        ));
        let notice = next(&mut expiry).await.unwrap();
        assert_eq!(&notice[..], b"event: token-expiring\ndata: 30\n\n");
        let waited = start.elapsed().as_secs_f64();
        assert!((69.0..71.0).contains(&waited), "{waited}");
        assert_eq!(next(&mut expiry).await, None);
        let waited = start.elapsed().as_secs_f64();
        assert!((99.0..101.0).contains(&waited), "{waited}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_near_its_end_is_noticed_at_once() {
        let start = Instant::now();
        let mut expiry = Some(Expiry::new(
            SystemTime::now() + Duration::from_secs(10),
            Duration::from_secs(30),
        ));
        let notice = next(&mut expiry).await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(&notice[..], b"event: token-expiring\ndata: 10\n\n");
        assert_eq!(next(&mut expiry).await, None);
        assert!(start.elapsed() >= Duration::from_secs(9));
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_expiry_nothing_comes() {
        let mut none = None;
        let waited = tokio::time::timeout(Duration::from_secs(3600), next(&mut none)).await;
        assert!(waited.is_err());
    }
}
