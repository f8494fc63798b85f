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
    auth::{Expiry, expiry},
    budget::StreamPermit,
    frame,
    hub::{Closed, Next, Subscription},
    metrics::{Ended, StreamTrack},
};

/// About how much of a replay is read from the history at once.
const REPLAY_BATCH: usize = 64 * 1024;

/// A v2/v3 stream: the preamble and replay, then live frames from the hub, with keep-alive
/// comments only after a quiet interval. Dropping it unregisters the stream.
pub struct HubStream {
    first: Option<Bytes>,
    sub: Subscription,
    /// Fires at the earliest time a keep-alive may be due. It is not moved on each send (that
    /// costs a timer-wheel update per message); when it fires early it is re-armed from
    /// `last_sent`.
    keep_alive: Pin<Box<Sleep>>,
    keep_alive_every: Duration,
    last_sent: Instant,
    done: bool,
    /// When its token expires, with authorization on.
    expiry: Option<Expiry>,
    /// Reading back what the history lacks ([`Subscription::gap`]); the replay waits for it.
    gap: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    _permit: StreamPermit,
    track: StreamTrack,
}

impl HubStream {
    pub fn new(
        sub: Subscription,
        retry: Duration,
        keep_alive: Duration,
        (permit, track): (StreamPermit, StreamTrack),
    ) -> Self {
        let mut first = frame::preamble(jittered(retry));
        for notice in &sub.notices {
            first.extend_from_slice(notice);
        }
        let now = Instant::now();
        Self {
            first: Some(first.freeze()),
            sub,
            keep_alive: Box::pin(sleep_until(now + keep_alive)),
            keep_alive_every: keep_alive,
            last_sent: now,
            done: false,
            expiry: None,
            gap: None,
            _permit: permit,
            track,
        }
    }

    /// Ends the stream when its token expires, with a notice before.
    pub fn expires(mut self, expiry: Option<Expiry>) -> Self {
        self.expiry = expiry;
        self
    }

    /// Sends nothing of the replay until `read_back` has filled the subscription's gap.
    pub fn fills_gap(mut self, read_back: impl Future<Output = ()> + Send + 'static) -> Self {
        self.gap = Some(Box::pin(read_back));
        self
    }

    fn sent(&mut self, chunk: Bytes) -> Poll<Option<io::Result<Bytes>>> {
        self.last_sent = Instant::now();
        Poll::Ready(Some(Ok(chunk)))
    }

    /// A keep-alive once `keep_alive_every` has passed since the last send.
    fn poll_keep_alive(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            if self.keep_alive.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.last_sent + self.keep_alive_every;
            let now = Instant::now();
            if due <= now {
                self.keep_alive.as_mut().reset(now + self.keep_alive_every);
                return self.sent(Bytes::from_static(frame::KEEP_ALIVE));
            }
            // Something was sent since the timer was set: wait out the rest of the silence.
            self.keep_alive.as_mut().reset(due);
        }
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
        if let Some(expiry) = &mut self.expiry {
            match expiry.poll(cx) {
                Poll::Ready(Some(notice)) => return self.sent(notice),
                Poll::Ready(None) => {
                    self.done = true;
                    self.track.ends(Ended::TokenExpired);
                    return Poll::Ready(None);
                }
                Poll::Pending => {}
            }
        }
        if let Some(gap) = &mut self.gap {
            if gap.as_mut().poll(cx).is_pending() {
                // Shutdown or an overflow ends a stream still waiting for its read-back too.
                if let Poll::Ready(why) = self.sub.queue.poll_closed(cx) {
                    self.gap = None;
                    return self.closed(why);
                }
                return self.poll_keep_alive(cx);
            }
            self.gap = None;
            self.sub.gap_filled();
        }
        // A replay is read from the history a batch at a time, only when the connection has
        // sent the last one: a stream that stops reading holds one batch, not the history.
        if let Some(batch) = self.sub.replay_next(REPLAY_BATCH) {
            return self.sent(batch);
        }
        match self.sub.queue.poll_next(cx) {
            Poll::Ready(Next::Frames(frames, stamp)) => {
                self.track.writing(stamp);
                self.sent(frames)
            }
            Poll::Ready(Next::Closed(why)) => self.closed(why),
            Poll::Pending => self.poll_keep_alive(cx),
        }
    }
}

impl HubStream {
    /// The end of a stream the hub closed.
    fn closed(&mut self, why: Closed) -> Poll<Option<io::Result<Bytes>>> {
        self.done = true;
        match why {
            Closed::Shutdown => {
                self.track.ends(Ended::Shutdown);
                Poll::Ready(None)
            }
            Closed::Overflow => {
                // An error, not an end: the client must see a broken stream and resume.
                self.track.ends(Ended::Slow);
                Poll::Ready(Some(Err(io::Error::other("stream fell too far behind"))))
            }
        }
    }
}

/// The `retry:` a stream is told: `retry` ±50 %, at random, so that the clients of a server
/// that goes away do not all come back in the same instant.
pub fn jittered(retry: Duration) -> Duration {
    retry.mul_f64(0.5 + fastrand::f64())
}

/// v1's stream: `data: hi!` at once and then every `interval`, keep-alives in the silences
/// between, until shutdown; then it ends at a random moment within `drain`, so that v1's
/// clients, too, come back spread out. It ends earlier if its token expires.
pub fn v1(
    interval: Duration,
    keep_alive: Duration,
    retry: Duration,
    (shutdown, drain): (CancellationToken, Duration),
    permit: (StreamPermit, StreamTrack),
    expiry: Option<Expiry>,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    const HI: &str = "hi!";
    let mut first = BytesMut::from(&frame::preamble(jittered(retry))[..]);
    first.extend_from_slice(&frame::data_only(HI));
    let start = Instant::now();
    let state = (start + interval, start, shutdown, (permit, expiry));
    let rest = stream::unfold(
        state,
        move |(next_hi, last_sent, shutdown, (mut permit, mut expiry))| async move {
            let due = next_hi.min(last_sent + keep_alive);
            tokio::select! {
                () = shutdown.cancelled() => {
                    permit.1.ends(Ended::Shutdown);
                    tokio::time::sleep(drain.mul_f64(fastrand::f64())).await;
                    return None;
                }
                step = expiry::next(&mut expiry) => {
                    let Some(notice) = step else {
                        permit.1.ends(Ended::TokenExpired);
                        return None;
                    };
                    let now = Instant::now();
                    return Some((Ok(notice), (next_hi, now, shutdown, (permit, expiry))));
                }
                () = sleep_until(due) => {}
            }
            let now = Instant::now();
            let frame = if now >= next_hi {
                frame::data_only(HI)
            } else {
                Bytes::from_static(frame::KEEP_ALIVE)
            };
            let next_hi = if now >= next_hi {
                next_hi + interval
            } else {
                next_hi
            };
            Some((Ok(frame), (next_hi, now, shutdown, (permit, expiry))))
        },
    );
    stream::once(async move { Ok(first.freeze()) }).chain(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        budget::StreamBudget,
        hub::{HistoryMemory, Hub, HubConfig, LastSeen, Numbering},
        metrics::{Api, Metrics},
    };
    use axum::http::Version;

    async fn next_text(stream: &mut HubStream) -> String {
        let chunk = stream.next().await.unwrap().unwrap();
        String::from_utf8(chunk.to_vec()).unwrap()
    }

    /// A hub for one user's stream.
    fn test_hub(numbering: Numbering, backfill: bool) -> Hub {
        Hub::new(
            HubConfig {
                name: "test",
                history_len: 10,
                history_ttl: Duration::from_secs(60),
                queue_len: 10,
                max_streams_per_user: 1,
                numbering,
                backfill,
            },
            HistoryMemory::new(1 << 20),
        )
    }

    /// `sub`'s stream, keep-alives after `every` of silence.
    fn stream_of(sub: crate::hub::Subscription, api: Api, every: Duration) -> HubStream {
        let client = crate::client::ClientKey::V4(std::net::Ipv4Addr::LOCALHOST);
        let permit = StreamBudget::new(1, 1, 1).try_acquire(client).unwrap();
        let track = Metrics::default().stream(api, Version::HTTP_11);
        HubStream::new(sub, Duration::from_secs(2), every, (permit, track))
    }

    /// The keep-alive timer is not moved on every message, yet a keep-alive still comes only
    /// after a full interval of silence. On paused time, so a busy machine can't shift it.
    #[tokio::test(start_paused = true)]
    async fn keep_alive_only_after_a_full_silence() {
        let hub = test_hub(Numbering::Own, false);
        let sub = hub.subscribe("u", &LastSeen::Nothing, None).unwrap();
        let every = Duration::from_millis(300);
        let mut stream = stream_of(sub, Api::V2, every);
        let opened = Instant::now();
        assert!(next_text(&mut stream).await.starts_with(": stream open"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        hub.publish("u", "hi");
        let sent = Instant::now();
        assert!(next_text(&mut stream).await.contains("data: hi\n"));
        let keep_alive = tokio::time::timeout(Duration::from_secs(5), next_text(&mut stream))
            .await
            .unwrap();
        assert_eq!(keep_alive.as_bytes(), frame::KEEP_ALIVE);
        assert!(
            sent.elapsed() >= every,
            "keep-alive {:?} after the message",
            sent.elapsed()
        );
        assert!(opened.elapsed() >= every + Duration::from_millis(200));
    }

    /// A stream still waiting for its read-back from Kafka ends at shutdown like any other.
    #[tokio::test(start_paused = true)]
    async fn a_stream_waiting_for_its_read_back_ends_at_shutdown() {
        let hub = test_hub(Numbering::Source, true);
        hub.open_lane(0, 10);
        hub.publish_at("u", "m10", crate::hub::Position::new(0, 10));
        let sub = hub
            .subscribe("u", &LastSeen::parse(Some("0-4")), None)
            .unwrap();
        assert!(sub.gap().is_some());
        let mut stream =
            stream_of(sub, Api::V3, Duration::from_secs(1)).fills_gap(std::future::pending());
        assert!(next_text(&mut stream).await.starts_with(": stream open"));
        assert_eq!(next_text(&mut stream).await.as_bytes(), frame::KEEP_ALIVE);
        hub.close_all();
        let end = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
        assert!(matches!(end, Ok(None)), "{end:?}");
    }

    /// v1's exact rhythm on paused time: `hi!` at once and every interval, keep-alives in each
    /// silence of `keep_alive`, and the stream ends on shutdown.
    #[tokio::test(start_paused = true)]
    async fn v1_ticks_with_keep_alives_in_the_silences() {
        let client = crate::client::ClientKey::V4(std::net::Ipv4Addr::LOCALHOST);
        let permit = StreamBudget::new(1, 1, 1).try_acquire(client).unwrap();
        let shutdown = CancellationToken::new();
        let interval = Duration::from_secs(1);
        let keep_alive = Duration::from_millis(200);
        let stream = v1(
            interval,
            keep_alive,
            Duration::from_secs(2),
            (shutdown.clone(), Duration::from_secs(5)),
            (permit, Metrics::default().stream(Api::V1, Version::HTTP_11)),
            None,
        );
        tokio::pin!(stream);
        let start = Instant::now();
        let mut seen = Vec::new();
        while seen.len() < 12 {
            let Some(Ok(chunk)) = stream.next().await else {
                panic!("ended early");
            };
            let text = String::from_utf8(chunk.to_vec()).unwrap();
            let at = start.elapsed().as_millis();
            seen.push((at, text));
        }
        let hi = "data: hi!\n\n";
        let ka = ": keep-alive-text\n\n";
        let retry: u64 = seen[0].1[": stream open\nretry: ".len()..]
            .split('\n')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1000..=3000).contains(&retry), "retry {retry} is 2 s ±50 %");
        assert!(seen[0].1.ends_with(hi));
        let expected = [
            (200, ka),
            (400, ka),
            (600, ka),
            (800, ka),
            (1000, hi),
            (1200, ka),
            (1400, ka),
            (1600, ka),
            (1800, ka),
            (2000, hi),
            (2200, ka),
        ];
        let got: Vec<(u128, &str)> = seen[1..].iter().map(|(t, s)| (*t, s.as_str())).collect();
        assert_eq!(got, expected);
        // It ends within the drain period, not at once (time is paused: the sleep is exact).
        shutdown.cancel();
        let cancelled = Instant::now();
        assert!(stream.next().await.is_none());
        assert!(cancelled.elapsed() <= Duration::from_secs(5));
    }

    #[test]
    fn retry_is_jittered_within_half_either_way() {
        let retry = Duration::from_secs(2);
        let seen: Vec<Duration> = (0..1000).map(|_| jittered(retry)).collect();
        assert!(seen.iter().all(|d| *d >= retry / 2 && *d < retry * 3 / 2));
        let (min, max) = (seen.iter().min().unwrap(), seen.iter().max().unwrap());
        assert!(*max - *min > retry / 2, "spread {min:?}..{max:?}");
    }
}
