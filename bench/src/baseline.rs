//! The reference server, written as the simplest tutorial would: one
//! `Arc<Mutex<HashMap<user, UnboundedSender<String>>>>`, one stream per user (a new stream
//! replaces the old sender), axum's `Sse` with `KeepAlive`. No optimisation on purpose: it is
//! what `ssepush` is measured against.

use axum::{
    Router,
    extract::{Query, State},
    response::sse::{Event, KeepAlive, Sse},
    routing::{get, post},
};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio_stream::wrappers::UnboundedReceiverStream;

/// Every connected user's sender.
type Users = Arc<Mutex<HashMap<String, UnboundedSender<String>>>>;

#[derive(Deserialize)]
struct UserQuery {
    username: String,
}

/// The baseline's routes. `keep_alive` matches ssepush's default so both send the same
/// keep-alive traffic.
pub fn router(keep_alive: Duration) -> Router {
    let users = Users::default();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/v2/sse",
            get(move |state, query| sse(state, query, keep_alive)),
        )
        .route("/v2/message", post(message))
        .with_state(users)
}

async fn sse(
    State(users): State<Users>,
    Query(query): Query<UserQuery>,
    keep_alive: Duration,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::unbounded_channel();
    users.lock().unwrap().insert(query.username, tx);
    let stream = UnboundedReceiverStream::new(rx).map(|msg| Ok(Event::default().data(msg)));
    Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive))
}

async fn message(
    State(users): State<Users>,
    Query(query): Query<UserQuery>,
    body: String,
) -> String {
    let delivered = match users.lock().unwrap().get(&query.username) {
        Some(tx) => usize::from(tx.send(body).is_ok()),
        None => 0,
    };
    format!("{{\"delivered\":{delivered}}}")
}
