//! HTTP/2 connections (h2c with prior knowledge, or TLS with ALPN `h2`), served by hyper.
//!
//! Many streams share one connection, so cutting one must not end the others. hyper runs each
//! stream as a task it hands to an executor; [`StreamTasks`] runs it beside a watch, and
//! dropping the task makes h2 reset that stream (`RST_STREAM`, `CANCEL`). The watch ends it
//! when the hub cuts the stream (its reader fell behind) or when its data has waited for
//! flow-control window longer than the write timeout (the peer stopped reading this stream).
//! A connection left without streams is closed after the head timeout, like an idle HTTP/1.1
//! keep-alive connection.

use axum::body::{Body, HttpBody};
use http_body::Frame;
use hyper::{body::Incoming, server::conn::http2};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use std::{
    convert::Infallible,
    future::Future,
    pin::{Pin, pin},
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{Connection, Disconnect, MAX_HEAD_BYTES, Options, is_stream_request};
use crate::{client::ClientAddr, refusals::Limit};

/// Streams one client may have open on one connection; the per-client stream limit applies
/// on top.
const MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// What h2 buffers for one stream beyond its flow-control window.
const MAX_SEND_BUFFER: usize = 64 * 1024;
/// A PING after this long without frames, and the connection closes if it gets no answer.
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(20);

tokio::task_local! {
    /// The stream whose task is running: read by the request handler inside it.
    static STREAM: Arc<StreamCut>;
}

/// One HTTP/2 stream's cut and its progress.
struct StreamCut {
    token: CancellationToken,
    started: Instant,
    /// Milliseconds after `started` (plus one) since which a frame has waited for window; 0
    /// while none waits.
    waiting_since: AtomicU64,
}

impl StreamCut {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
    }

    fn stalled_for(&self) -> Duration {
        match self.waiting_since.load(Relaxed) {
            0 => Duration::ZERO,
            since => Duration::from_millis(self.now_ms().saturating_sub(since)),
        }
    }
}

/// Live streams of one connection, for closing it once it has been idle.
#[derive(Default)]
struct Activity {
    streams: AtomicUsize,
    /// When the last stream ended, as milliseconds since the connection opened.
    idle_since: AtomicU64,
}

/// hyper's executor for one connection's streams.
#[derive(Clone)]
struct StreamTasks {
    options: Arc<Options>,
    peer: std::net::SocketAddr,
    activity: Arc<Activity>,
    opened: Instant,
}

impl<F> hyper::rt::Executor<F> for StreamTasks
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        let cut = Arc::new(StreamCut {
            token: CancellationToken::new(),
            started: Instant::now(),
            waiting_since: AtomicU64::new(0),
        });
        let tasks = self.clone();
        tasks.activity.streams.fetch_add(1, Relaxed);
        tokio::spawn(STREAM.scope(cut.clone(), async move {
            tokio::select! {
                _ = stream => {}
                () = watch(&cut, &tasks.options, tasks.peer) => {
                    tracing::debug!("http/2 stream cut");
                }
            }
            let idle = u64::try_from(tasks.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
            tasks.activity.idle_since.store(idle, Relaxed);
            tasks.activity.streams.fetch_sub(1, Relaxed);
        }));
    }
}

/// Returns when the stream is to be reset: the hub cut it, or a frame has waited for window
/// longer than the write timeout (checked every half of it).
async fn watch(cut: &StreamCut, options: &Options, peer: std::net::SocketAddr) {
    let period = options.write_timeout / 2;
    loop {
        tokio::select! {
            () = cut.token.cancelled() => return,
            () = tokio::time::sleep(period) => {
                if cut.stalled_for() >= options.write_timeout {
                    let reason = format!(
                        "an HTTP/2 stream got no flow-control window for {}; stream reset",
                        humantime::format_duration(options.write_timeout)
                    );
                    options.refusals.note(Limit::WriteTimeout, peer.ip(), &reason);
                    return;
                }
            }
        }
    }
}

/// A response body that records when a frame it gave waits: hyper polls it again only once
/// the frame is on its way.
struct Watched {
    inner: Body,
    cut: Arc<StreamCut>,
}

impl HttpBody for Watched {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.cut.waiting_since.store(0, Relaxed);
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && frame.data_ref().is_some_and(|d| !d.is_empty())
        {
            let now = self.cut.now_ms();
            self.cut.waiting_since.store(now, Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Connection {
    /// Serves an HTTP/2 connection until it ends, or until shutdown and its streams have
    /// ended.
    pub(super) async fn http2<I>(self, io: I, shutdown: CancellationToken)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            options,
            app,
            watcher,
            peer,
            ..
        } = self;
        let activity = Arc::new(Activity::default());
        let tasks = StreamTasks {
            options: options.clone(),
            peer,
            activity: activity.clone(),
            opened: Instant::now(),
        };
        let mut builder = http2::Builder::new(tasks.clone());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .max_header_list_size(MAX_HEAD_BYTES as u32)
            .max_send_buf_size(MAX_SEND_BUFFER)
            .keep_alive_interval(PING_INTERVAL)
            .keep_alive_timeout(PING_TIMEOUT);
        let metrics = options.metrics.clone();
        let svc = tower::service_fn(move |mut req: axum::http::Request<Incoming>| {
            let (app, metrics) = (app.clone(), metrics.clone());
            async move {
                req.extensions_mut().insert(ClientAddr(peer));
                let cut = STREAM.try_with(Arc::clone).ok();
                if let Some(cut) = &cut
                    && is_stream_request(&req)
                {
                    req.extensions_mut()
                        .insert(Disconnect::stream(cut.token.clone()));
                }
                let Ok(response) = app.oneshot(req).await;
                metrics.count_rejection(&response);
                Ok::<_, Infallible>(match cut {
                    Some(cut) => response.map(|inner| Body::new(Watched { inner, cut })),
                    None => response,
                })
            }
        });
        let mut conn =
            pin!(builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc)));
        let idle_limit = options.head_timeout;
        let mut closing = false;
        let result = loop {
            tokio::select! {
                result = conn.as_mut() => break result,
                () = shutdown.cancelled(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = tokio::time::sleep(idle_limit), if !closing => {
                    let idle_ms = activity.idle_since.load(Relaxed);
                    let now_ms = u64::try_from(tasks.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
                    let idle = Duration::from_millis(now_ms.saturating_sub(idle_ms));
                    if activity.streams.load(Relaxed) == 0 && idle >= idle_limit {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        };
        drop(watcher);
        if let Err(e) = result {
            super::ended_with(&e, &options, peer);
        }
    }
}
