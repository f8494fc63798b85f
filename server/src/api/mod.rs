//! HTTP routes. v2 and v3 share one set of handlers ([`channel`]); v1 is a fixed ticker.

mod channel;
mod ops;
pub(crate) mod params;
mod v1;

pub use channel::{Channel, Sink};

use axum::{
    Router,
    extract::Request,
    response::{IntoResponse, Response},
    routing::get,
};
use tower::ServiceExt;
use tower_http::trace::TraceLayer;
use tracing::Level;

use crate::{assets, error::AppError, metrics::Api, state::AppState};

/// The event-stream endpoints. The accept loop answers plain `GET`s of these itself
/// ([`crate::serve`]); a test below checks each is routed.
pub const STREAM_PATHS: [&str; 3] = ["/v1/sse", "/v2/sse", "/v3/sse"];

/// Paths that belong to the API: unknown ones among them are 404s, never the web UI.
const API_PREFIXES: [&str; 7] = [
    "/v1", "/v2", "/v3", "/healthz", "/readyz", "/metrics", "/auth",
];

pub fn router(state: AppState) -> Router {
    let v2 = Channel::new(Api::V2, state.v2.clone(), Sink::Local, &state);
    let v3_sink = match state.kafka.clone() {
        Some(kafka) => Sink::Kafka(kafka),
        None => Sink::KafkaOff,
    };
    let v3 = Channel::new(Api::V3, state.v3.clone(), v3_sink, &state);
    let cors = state.origins.layer();
    let assets = assets::service(&state.config.static_dir);
    let router = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/auth", get(ops::auth_info))
        .route("/v1/sse", get(v1::sse))
        .with_state(state)
        .merge(channel::routes("/v2", v2))
        .merge(channel::routes("/v3", v3))
        .fallback(move |req: Request| fallback(assets.clone(), req))
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed });
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    // Request logs cost ~3% of the CPU per POST even when the filter drops them (a span and a
    // wrapped body each), so the layer is there only when the filter at start-up shows them.
    if tracing::enabled!(target: "tower_http::trace", Level::DEBUG) {
        router.layer(TraceLayer::new_for_http().make_span_with(request_span))
    } else {
        router
    }
}

/// tower-http's default request span, with the token in the query redacted.
fn request_span(req: &Request) -> tracing::Span {
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    tracing::debug_span!(
        "request",
        method = %req.method(),
        uri = %crate::auth::redacted(target),
        version = ?req.version(),
    )
}

async fn fallback(assets: assets::Service, req: Request) -> Response {
    let path = req.uri().path();
    let is_api = API_PREFIXES.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    });
    if is_api {
        return AppError::NotFound.into_response();
    }
    match assets.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use axum::{body::Body, http::StatusCode};
    use tokio_util::sync::CancellationToken;

    /// The one list of stream paths matches the routes: each opens an event stream, and each
    /// lies under an API prefix (so a typo in it could never fall through to the web UI).
    #[tokio::test]
    async fn every_stream_path_is_routed() {
        let config = Config::from_args(["ssepush", "--kafka-brokers", ""]).unwrap();
        let router = router(AppState::new(config, CancellationToken::new()).unwrap());
        for path in STREAM_PATHS {
            let request = Request::get(format!("{path}?username=a"))
                .body(Body::empty())
                .unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(
                response.headers()["content-type"],
                "text/event-stream",
                "{path}"
            );
            assert!(API_PREFIXES.iter().any(|p| path.starts_with(p)), "{path}");
        }
    }
}
