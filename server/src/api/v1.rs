//! v1: a fixed `hi!` ticker, the first API generation.

use axum::{
    body::Body,
    extract::{Query, State, rejection::QueryRejection},
    response::Response,
};

use super::{channel::sse_response, params::StreamQuery};
use crate::{error::AppError, state::AppState, stream};

#[tracing::instrument(level = "debug", skip_all, fields(user))]
pub async fn sse(
    State(state): State<AppState>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let query = StreamQuery::from_request(query)?;
    let user = query.username()?;
    tracing::Span::current().record("user", user);
    let permit = state
        .budget
        .try_acquire()
        .ok_or(AppError::ServerFull(state.budget.max()))?;
    let c = &state.config;
    let body = stream::v1(
        c.v1_interval,
        c.keep_alive,
        c.retry,
        state.shutdown.clone(),
        permit,
    );
    Ok(sse_response(Body::from_stream(body)))
}
