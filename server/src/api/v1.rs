//! v1: a fixed `hi!` ticker, the first API generation.

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, Version},
    response::Response,
};

use super::{channel::sse_response, params::StreamQuery};
use crate::{auth, client::Client, error::AppError, metrics::Api, state::AppState, stream};

#[tracing::instrument(level = "debug", skip_all, fields(user))]
pub async fn sse(
    State(state): State<AppState>,
    Client(client): Client,
    query: StreamQuery,
    version: Version,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let token = state.auth.stream_token(&headers, query.access_token())?;
    let user = query.username()?;
    tracing::Span::current().record("user", user);
    let grant = auth::subscribe(token, user)?;
    let permit = state
        .budget
        .try_acquire(client)
        .map_err(|full| state.refusals.noted(full.into(), client))?;
    let c = &state.config;
    let body = stream::v1(
        c.v1_interval,
        c.keep_alive,
        c.retry,
        (state.shutdown.clone(), c.drain),
        (permit, state.metrics.stream(Api::V1, version)),
        grant.expiry,
    );
    Ok(sse_response(Body::from_stream(body)))
}
