//! Liveness, readiness, metrics, and whether this server wants tokens.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};

use crate::{auth, error::AppError, state::AppState};

pub async fn auth_info(State(state): State<AppState>) -> Json<wire::AuthInfo> {
    Json(wire::AuthInfo {
        required: state.auth.is_on(),
    })
}

/// `/metrics` on the main port: not there when --metrics-addr serves it, and with
/// authorization on only for a token that may publish to everyone.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.config.metrics_addr.is_some() {
        return AppError::NotFound.into_response();
    }
    let allowed = state
        .auth
        .bearer(&headers)
        .and_then(|token| auth::operate(token.as_ref()));
    if let Err(denied) = allowed {
        return AppError::from(denied).into_response();
    }
    crate::metrics::handler(State(state)).await
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (ready, reason) = if state.shutdown.is_cancelled() {
        (false, "shutting down".to_owned())
    } else {
        match &state.kafka {
            Some(kafka) => kafka.readiness(),
            None => (true, "serving; kafka is switched off".to_owned()),
        }
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(wire::Readiness { ready, reason }))
}
