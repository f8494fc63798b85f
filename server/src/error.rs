//! Errors at the HTTP edge: a status and a one-line plain-text reason.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use std::time::Duration;

use crate::{
    auth::Denied, budget::Full, hub::SubscribeError, publish_rate::Exceeded, refusals::Limit,
};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("message body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error(
        "message would be {size} bytes as an event (each line costs 7 more), over the limit of {limit}"
    )]
    FrameTooLarge { size: usize, limit: usize },
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
    #[error("server is at its limit of {0} open streams")]
    ServerFull(usize),
    #[error("request body not received within {}", humantime::format_duration(*.0))]
    BodyTimeout(std::time::Duration),
    #[error("this client is at its limit of {max} open streams")]
    ClientStreams { max: usize, retry_after: u64 },
    #[error(
        "this client is over its publish limit (rate {rate}/s, burst {burst}); retry in \
         {retry_after} s"
    )]
    PublishRate {
        rate: u32,
        burst: u32,
        retry_after: u64,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("{}", if *missing { NO_TOKEN } else { BAD_TOKEN })]
    Unauthorized { missing: bool },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    CrossOrigin(String),
    #[error("no such endpoint")]
    NotFound,
    #[error("method not allowed for this endpoint")]
    MethodNotAllowed,
}

const NO_TOKEN: &str = "a token is required: an `Authorization: Bearer` header, or for a stream \
                        the `access_token` query parameter or the token cookie";
/// One body for every invalid token, so the answer tells nothing about why.
const BAD_TOKEN: &str = "the token is not valid";

impl From<Denied> for AppError {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::Missing => Self::Unauthorized { missing: true },
            Denied::Invalid => Self::Unauthorized { missing: false },
            Denied::Forbidden(why) => Self::Forbidden(why),
        }
    }
}

impl From<wire::UsernameError> for AppError {
    fn from(e: wire::UsernameError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<Full> for AppError {
    fn from(full: Full) -> Self {
        match full {
            Full::Server { max } => Self::ServerFull(max),
            Full::Client { max, retry_after } => Self::ClientStreams { max, retry_after },
        }
    }
}

impl From<Exceeded> for AppError {
    fn from(e: Exceeded) -> Self {
        Self::PublishRate {
            rate: e.rate,
            burst: e.burst,
            retry_after: retry_after_secs(e.wait),
        }
    }
}

/// `Retry-After` for a wait: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl AppError {
    /// The limit that refused the request, if that is what this is.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            Self::ServerFull(_) => Some(Limit::Streams),
            Self::Subscribe(SubscribeError::UserLimit(_)) => Some(Limit::StreamsPerUser),
            Self::ClientStreams { .. } => Some(Limit::StreamsPerClient),
            Self::PublishRate { .. } => Some(Limit::PublishRate),
            Self::TooLarge(_) => Some(Limit::BodyBytes),
            Self::FrameTooLarge { .. } => Some(Limit::FrameBytes),
            Self::BodyTimeout(_) => Some(Limit::BodyTimeout),
            _ => None,
        }
    }

    /// Seconds the client should wait before trying again, if it is told.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::ClientStreams { retry_after, .. } | Self::PublishRate { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// `WWW-Authenticate` of a refusal by authorization (RFC 6750 §3).
    fn challenge(&self) -> Option<&'static str> {
        match self {
            Self::Unauthorized { missing: true } => Some(r#"Bearer realm="ssepush""#),
            Self::Unauthorized { missing: false } => {
                Some(r#"Bearer realm="ssepush", error="invalid_token""#)
            }
            Self::Forbidden(_) => Some(r#"Bearer realm="ssepush", error="insufficient_scope""#),
            _ => None,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) | Self::FrameTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Subscribe(SubscribeError::UserLimit(_))
            | Self::ClientStreams { .. }
            | Self::PublishRate { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Subscribe(SubscribeError::ShuttingDown)
            | Self::ServerFull(_)
            | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::CrossOrigin(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

/// Marks an answer made by an [`AppError`], with a short reason for `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct Rejected(pub &'static str);

impl AppError {
    /// A short, stable name for the metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::TooLarge(_) => "body_too_large",
            Self::FrameTooLarge { .. } => "frame_too_large",
            Self::Subscribe(SubscribeError::UserLimit(_)) => "streams_per_user",
            Self::Subscribe(SubscribeError::ShuttingDown) => "shutting_down",
            Self::ServerFull(_) => "server_full",
            Self::BodyTimeout(_) => "body_timeout",
            Self::ClientStreams { .. } => "streams_per_client",
            Self::PublishRate { .. } => "publish_rate",
            Self::Unavailable(_) => "unavailable",
            Self::Unauthorized { missing: true } => "no_token",
            Self::Unauthorized { missing: false } => "bad_token",
            Self::Forbidden(_) => "forbidden",
            Self::CrossOrigin(_) => "cross_origin",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Limits log their refusals themselves, throttled ([`crate::refusals`]).
        if status.is_server_error() && self.limit().is_none() {
            tracing::warn!(%status, reason = %self, "request refused");
        } else {
            tracing::debug!(%status, reason = %self, "request refused");
        }
        let body = format!("{self}\n");
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response();
        response.extensions_mut().insert(Rejected(self.reason()));
        if let Some(challenge) = self.challenge() {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
