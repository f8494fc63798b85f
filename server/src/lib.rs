//! ssepush: a Server-Sent Events push service.
//!
//! # Layout
//! - [`config`]: flags and env vars.
//! - [`client`]: who a request comes from, for the per-client limits.
//! - [`frame`]: the SSE wire format.
//! - [`hub`]: the per-user registry, history and bounded per-stream queues.
//! - [`kafka`]: v3's consumer and producer.
//! - [`stream`]: SSE response bodies built on the hub.
//! - [`auth`]: opt-in JWT authorization; [`cors`]: which other origins' pages may call.
//! - [`api`]: HTTP routes; v2 and v3 share one implementation.
//! - [`serve`]: the accept loop and graceful shutdown.
//! - [`assets`]: the built web UI.

pub mod api;
pub mod assets;
pub mod auth;
pub mod budget;
pub mod client;
pub mod config;
pub mod cors;
pub mod drain;
pub mod error;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod hub;
pub mod kafka;
pub mod metrics;
pub mod publish_rate;
pub mod refusals;
pub mod serve;
pub mod state;
pub mod stream;
pub mod write_timeout;

pub use config::Config;
pub use state::AppState;

use std::{future::Future, time::Duration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves on `listener` until `shutdown` resolves, then ends every stream cleanly and returns
/// once connections have closed or the grace period has passed.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let token = CancellationToken::new();
    let state = AppState::new(config, token.clone())?;
    let grace = state.config.shutdown_grace;
    let options = serve::Options::new(&state.config, state.refusals.clone(), state.metrics.clone());
    tokio::spawn(sweep(state.clone(), token.clone()));
    tokio::spawn(settle_held(state.v3.clone(), token.clone()));
    tokio::spawn({
        let (state, token) = (state.clone(), token.clone());
        async move {
            tokio::select! {
                () = shutdown => tracing::info!("shutting down"),
                () = token.cancelled() => {}
            }
            token.cancel();
            drain::end_streams(&state.hubs(), state.config.drain).await;
        }
    });
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let https = match (&state.config.tls_cert, &state.config.tls_key) {
        (Some(cert), Some(key)) => {
            let acceptor = serve::tls::acceptor(cert, key)?;
            let addr = std::net::SocketAddr::new(state.config.host, state.config.tls_port);
            let listener = serve::bind(addr, state.config.backlog)
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            tracing::info!(addr = %listener.local_addr()?, "serving https");
            Some((listener, serve::Transport::Tls(acceptor)))
        }
        _ => None,
    };
    let kafka_stopped = async {
        if let Some(kafka) = &state.kafka {
            token.cancelled().await;
            if tokio::time::timeout(grace, kafka.stopped()).await.is_err() {
                tracing::warn!(
                    "kafka consumer did not stop in time; its last offsets may be redelivered"
                );
            }
        }
    };
    let metrics_listener = match state.config.metrics_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for metrics: {e}"))?;
            tracing::info!(addr = %listener.local_addr()?, "serving metrics");
            Some(listener)
        }
        None => None,
    };
    let metrics_only = async {
        if let Some(listener) = metrics_listener {
            let app = axum::Router::new()
                .route("/metrics", axum::routing::get(metrics::handler))
                .with_state(state.clone());
            let stop = token.clone().cancelled_owned();
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::warn!(error = %e, "metrics listener failed");
            }
        }
    };
    let app = api::router(state.clone());
    let plain = serve::serve(
        listener,
        serve::Transport::Plain,
        app.clone(),
        token.clone(),
        options.clone(),
    );
    let secure = async {
        if let Some((listener, transport)) = https {
            serve::serve(listener, transport, app, token.clone(), options).await;
        }
    };
    tokio::join!(plain, secure, kafka_stopped, metrics_only);
    tracing::info!("stopped");
    Ok(())
}

/// Decides v3 streams held on an id that either numbering of a Kafka partition may have issued
/// ([`hub::Hub::settle_held`]) when no record moves their partition on.
async fn settle_held(hub: hub::Hub, token: CancellationToken) {
    let mut tick = tokio::time::interval(hub::HELD_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = tick.tick() => hub.settle_held(),
        }
    }
}

/// Expires history, forgets idle users and publishers whose buckets have refilled, so memory
/// follows the live load; reports refusals that no log line has yet.
async fn sweep(state: AppState, token: CancellationToken) {
    let period =
        (state.config.history_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = tick.tick() => {
                state.hubs().iter().for_each(|hub| hub.sweep());
                state.publish_rate.sweep();
                state.refusals.flush();
            }
        }
    }
}
