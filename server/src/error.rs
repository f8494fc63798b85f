//! Errors at the HTTP edge: a status and a one-line plain-text reason.

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::{hub::SubscribeError, refusals::Limit};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("message body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
    #[error("server is at its limit of {0} open streams")]
    ServerFull(usize),
    #[error("{0}")]
    Unavailable(String),
    #[error("no such endpoint")]
    NotFound,
    #[error("method not allowed for this endpoint")]
    MethodNotAllowed,
}

impl From<wire::UsernameError> for AppError {
    fn from(e: wire::UsernameError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl AppError {
    /// The limit that refused the request, if that is what this is.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            Self::ServerFull(_) => Some(Limit::Streams),
            Self::Subscribe(SubscribeError::UserLimit(_)) => Some(Limit::StreamsPerUser),
            _ => None,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Subscribe(SubscribeError::UserLimit(_)) => StatusCode::TOO_MANY_REQUESTS,
            Self::Subscribe(SubscribeError::ShuttingDown)
            | Self::ServerFull(_)
            | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
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
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    }
}
