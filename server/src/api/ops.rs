//! Liveness and readiness.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};

use crate::state::AppState;

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
