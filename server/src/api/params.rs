//! Query parameters and bodies, checked into the types handlers work with.

use axum::{
    extract::{FromRequestParts, Request},
    http::{HeaderMap, header, request::Parts},
};
use http_body_util::BodyExt;

use crate::{error::AppError, hub::LastSeen};

/// The query of the stream and message endpoints. Parsed by hand rather than through serde:
/// it is on every POST's path, and two optional fields don't need a deserializer.
#[derive(Debug, Default)]
pub struct StreamQuery {
    username: Option<String>,
    /// For a browser's first request, which can't set `Last-Event-ID`.
    last_event_id: Option<String>,
    /// `delivered`: a v3 POST waits for this instance's consumer to count local deliveries.
    wait: Option<String>,
}

impl StreamQuery {
    pub fn parse(query: &str) -> Result<Self, AppError> {
        let mut q = Self::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match &*key {
                "username" => &mut q.username,
                "lastEventId" => &mut q.last_event_id,
                "wait" => &mut q.wait,
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(AppError::BadRequest(format!(
                    "query parameter `{key}` is given more than once"
                )));
            }
        }
        Ok(q)
    }

    /// Whether the POST asked to wait for local delivery (`wait=delivered`).
    pub fn wait_delivered(&self) -> Result<bool, AppError> {
        match self.wait.as_deref() {
            None => Ok(false),
            Some("delivered") => Ok(true),
            Some(_) => Err(AppError::BadRequest(
                "query parameter `wait` takes only `delivered`".into(),
            )),
        }
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

impl<S: Send + Sync> FromRequestParts<S> for StreamQuery {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        Self::parse(parts.uri.query().unwrap_or_default())
    }
}

/// Reads a message body: raw UTF-8 text, whatever its Content-Type, at most `limit` bytes.
pub async fn message_body(request: Request, limit: usize) -> Result<String, AppError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(AppError::TooLarge(limit));
    }
    let mut body = request.into_body();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_fields_decoded_once_each() {
        let q = StreamQuery::parse("username=a%20b&x=1&lastEventId=0-7").unwrap();
        assert_eq!(q.username().unwrap(), "a b");
        assert_eq!(q.last_event_id.as_deref(), Some("0-7"));
        assert!(StreamQuery::parse("").unwrap().username().is_err());
        assert!(StreamQuery::parse("username=a&username=b").is_err());
        assert!(!q.wait_delivered().unwrap());
        let waits = StreamQuery::parse("username=a&wait=delivered").unwrap();
        assert!(waits.wait_delivered().unwrap());
        assert!(
            StreamQuery::parse("wait=x")
                .unwrap()
                .wait_delivered()
                .is_err()
        );
    }
}
