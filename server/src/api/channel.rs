//! The v2/v3 endpoints: `GET {prefix}/sse` and `POST {prefix}/message`, one implementation for
//! both versions. What differs is where a POST goes ([`Sink`]).

use axum::{
    Json, Router,
    body::Body,
    extract::{Extension, FromRef, Request, State},
    http::{HeaderMap, HeaderValue, Version, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use std::{sync::Arc, time::Duration};

use super::params::{StreamQuery, message_body};
use crate::{
    auth::{self, Auth},
    budget::StreamBudget,
    client::{Client, ClientKey, TrustedProxies},
    cors::Origins,
    error::AppError,
    hub::{Hub, Unfilled},
    kafka::Kafka,
    metrics::{Api, Metrics, Source},
    publish_rate::PublishRate,
    refusals::Refusals,
    serve::Disconnect,
    state::AppState,
    stream::HubStream,
};

/// Where a POSTed message goes before it reaches the hub.
#[derive(Clone)]
pub enum Sink {
    /// Straight into this process's hub (v2).
    Local,
    /// Into Kafka; every instance's consumer then feeds its own hub (v3).
    Kafka(Kafka),
    /// Kafka is switched off on this server: POSTs are refused (v3 without brokers).
    KafkaOff,
}

#[derive(Clone)]
pub struct Channel {
    api: Api,
    hub: Hub,
    sink: Sink,
    metrics: Metrics,
    budget: StreamBudget,
    trusted: TrustedProxies,
    publish_rate: PublishRate,
    refusals: Refusals,
    auth: Auth,
    origins: Origins,
    limits: Arc<Limits>,
}

struct Limits {
    retry: Duration,
    keep_alive: Duration,
    max_body: usize,
    max_frame: usize,
    body_timeout: Duration,
}

impl Channel {
    pub fn new(api: Api, hub: Hub, sink: Sink, state: &AppState) -> Self {
        let c = &state.config;
        Self {
            api,
            hub,
            sink,
            metrics: state.metrics.clone(),
            budget: state.budget.clone(),
            trusted: state.trusted.clone(),
            publish_rate: state.publish_rate.clone(),
            refusals: state.refusals.clone(),
            auth: state.auth.clone(),
            origins: state.origins.clone(),
            limits: Arc::new(Limits {
                retry: c.retry,
                keep_alive: c.keep_alive,
                max_body: c.max_body,
                max_frame: c.max_frame_bytes,
                body_timeout: c.body_timeout,
            }),
        }
    }
}

impl FromRef<Channel> for TrustedProxies {
    fn from_ref(channel: &Channel) -> Self {
        channel.trusted.clone()
    }
}

pub fn routes(prefix: &str, channel: Channel) -> Router {
    Router::new()
        .route(&format!("{prefix}/sse"), get(subscribe))
        .route(&format!("{prefix}/message"), post(publish))
        .with_state(channel)
}

/// Headers every event stream carries; compression must never touch these responses.
pub fn sse_response(body: Body) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[tracing::instrument(level = "debug", skip_all, fields(hub = channel.hub.name(), user))]
async fn subscribe(
    State(channel): State<Channel>,
    Client(client): Client,
    query: StreamQuery,
    version: Version,
    headers: HeaderMap,
    disconnect: Option<Extension<Disconnect>>,
) -> Result<Response, AppError> {
    let refusals = channel.refusals.clone();
    open_stream(channel, client, query, (version, headers), disconnect)
        .await
        .map_err(|e| refusals.noted(e, client))
}

/// [`subscribe`]; a refusal by a limit is counted there.
async fn open_stream(
    channel: Channel,
    client: ClientKey,
    query: StreamQuery,
    (version, headers): (Version, HeaderMap),
    disconnect: Option<Extension<Disconnect>>,
) -> Result<Response, AppError> {
    let token = channel.auth.stream_token(&headers, query.access_token())?;
    let user = query.username()?;
    tracing::Span::current().record("user", user);
    let grant = auth::subscribe(token, user)?;
    let mut last = query.last_seen(&headers);
    let permit = channel.budget.try_acquire(client)?;
    if let Sink::Kafka(kafka) = &channel.sink {
        kafka.started().await;
        last = kafka.place(last).await;
    }
    let sub = channel
        .hub
        .subscribe(user, &last, disconnect.map(|Extension(d)| d.token()))?;
    tracing::debug!(?last, replaying = sub.replaying(), "stream opened");
    let limits = &channel.limits;
    let track = channel.metrics.stream(channel.api, version);
    let kafka = match &channel.sink {
        Sink::Kafka(kafka) => Some(kafka.clone()),
        Sink::Local | Sink::KafkaOff => None,
    };
    let gap = sub.gap();
    let mut body =
        HubStream::new(sub, limits.retry, limits.keep_alive, (permit, track)).expires(grant.expiry);
    if let Some(gap) = gap {
        body = body.fills_gap(async move {
            match kafka {
                Some(kafka) => kafka.fill_gap(gap).await,
                None => gap.fill(Err(Unfilled::Unavailable)),
            }
        });
    }
    Ok(sse_response(Body::from_stream(body)))
}

#[tracing::instrument(level = "debug", skip_all, fields(hub = channel.hub.name(), user))]
async fn publish(
    State(channel): State<Channel>,
    Client(client): Client,
    query: StreamQuery,
    request: Request,
) -> Result<Json<wire::Published>, AppError> {
    let refusals = channel.refusals.clone();
    publish_message(channel, client, query, request)
        .await
        .map_err(|e| refusals.noted(e, client))
}

/// [`publish`]; a refusal by a limit is counted there.
async fn publish_message(
    channel: Channel,
    client: ClientKey,
    query: StreamQuery,
    request: Request,
) -> Result<Json<wire::Published>, AppError> {
    // First: every POST takes a token, whatever becomes of it.
    let limits = &channel.limits;
    if let Err(e) = channel.publish_rate.check(client) {
        // The body is read all the same, within the usual limits, so that the connection can
        // carry the client's next request: hyper closes one whose body was left unread.
        let _ = message_body(request, limits.max_body, limits.body_timeout).await;
        return Err(e.into());
    }
    let allowed = channel
        .origins
        .check_post(
            request.headers(),
            request.uri().authority().map(|a| a.as_str()),
        )
        .map_err(AppError::CrossOrigin)
        .and_then(|()| Ok(channel.auth.bearer(request.headers())?))
        .and_then(|token| {
            let user = query.username()?;
            auth::publish(token.as_ref(), user)?;
            Ok(user)
        });
    let user = match allowed {
        Ok(user) => user,
        Err(e) => {
            // Read like a rate-limited one's, so the refusal reaches the client.
            let _ = message_body(request, limits.max_body, limits.body_timeout).await;
            return Err(e);
        }
    };
    tracing::Span::current().record("user", user);
    let wait = query.wait_delivered()?;
    let text = message_body(request, limits.max_body, limits.body_timeout).await?;
    let size = crate::frame::message_len(&text);
    let limit = limits.max_frame;
    if size > limit {
        return Err(AppError::FrameTooLarge { size, limit });
    }
    match &channel.sink {
        Sink::Local => {
            let d = channel.hub.publish(user, &text);
            channel.metrics.published(channel.api, Source::Http);
            Ok(Json(wire::Published {
                id: d.position.to_string(),
                delivered: Some(d.delivered),
            }))
        }
        Sink::Kafka(kafka) => {
            let position = kafka
                .publish(user, &text)
                .await
                .map_err(|e| AppError::Unavailable(e.to_string()))?;
            channel.metrics.published(channel.api, Source::Http);
            let delivered = match wait {
                // Not found within the wait: this instance's consumer is behind, so none yet.
                true => Some(
                    kafka
                        .delivered_locally(user, position, LOCAL_DELIVERY_PATIENCE)
                        .await
                        .unwrap_or(0),
                ),
                false => None,
            };
            Ok(Json(wire::Published {
                id: position.to_string(),
                delivered,
            }))
        }
        Sink::KafkaOff => Err(AppError::Unavailable(
            "kafka is switched off on this server".into(),
        )),
    }
}

/// How long a v3 POST with `wait=delivered` waits for this instance's consumer.
const LOCAL_DELIVERY_PATIENCE: Duration = Duration::from_secs(1);
