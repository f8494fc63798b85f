//! Query parameters and bodies, checked into the types handlers work with.

use axum::{
    body::Body,
    extract::{Query, rejection::QueryRejection},
    http::{HeaderMap, header},
};
use http_body_util::BodyExt;
use serde::Deserialize;

use crate::{error::AppError, hub::LastSeen};

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    username: Option<String>,
    /// For a browser's first request, which can't set `Last-Event-ID`.
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
}

impl StreamQuery {
    pub fn from_request(query: Result<Query<Self>, QueryRejection>) -> Result<Self, AppError> {
        query
            .map(|Query(q)| q)
            .map_err(|e| AppError::BadRequest(e.body_text()))
    }

    pub fn username(&self) -> Result<&str, AppError> {
        let name = self.username.as_deref().unwrap_or_default();
        wire::validate_username(name)?;
        Ok(name)
    }

    /// The `Last-Event-ID` header wins over the query parameter: the browser sets it on every
    /// reconnect with the newest id, while the query keeps the page's first value.
    pub fn last_seen(&self, headers: &HeaderMap) -> LastSeen {
        let header = headers
            .get("last-event-id")
            .map(|v| v.to_str().unwrap_or("\u{fffd}"));
        LastSeen::parse(header.or(self.last_event_id.as_deref()))
    }
}

/// Reads a message body: raw UTF-8 text, whatever its Content-Type, at most `limit` bytes.
pub async fn message_body(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<String, AppError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(AppError::TooLarge(limit));
    }
    // Read straight into one buffer sized from Content-Length: no frame list, no second copy.
    let mut bytes = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|_| AppError::BadRequest("could not read the request body".into()))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(AppError::TooLarge(limit));
            }
            bytes.extend_from_slice(&data);
        }
    }
    if bytes.is_empty() {
        return Err(AppError::BadRequest("message body is empty".into()));
    }
    String::from_utf8(bytes)
        .map_err(|_| AppError::BadRequest("message body is not valid UTF-8".into()))
}
