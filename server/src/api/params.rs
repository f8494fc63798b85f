//! Query parameters and bodies, checked into the types handlers work with.

use axum::{
    extract::{FromRequestParts, Request},
    http::{HeaderMap, header, request::Parts},
};
use http_body_util::BodyExt;
use percent_encoding::percent_decode_str;
use std::{borrow::Cow, str::Utf8Error, time::Duration};

use crate::{auth::Token, error::AppError, hub::LastSeen};

/// The query of the stream and message endpoints. Parsed by hand rather than through serde:
/// it is on every POST's path, and two optional fields don't need a deserializer.
#[derive(Debug, Default)]
pub struct StreamQuery {
    username: Option<String>,
    /// For a browser's first request, which can't set `Last-Event-ID`.
    last_event_id: Option<String>,
    /// A token for a request that cannot send headers (a browser's `EventSource`).
    access_token: Option<Token>,
    /// `delivered`: a v3 POST waits for this instance's consumer to count local deliveries.
    wait: Option<String>,
}

impl StreamQuery {
    /// Splits and decodes the query as `application/x-www-form-urlencoded`, like
    /// `form_urlencoded::parse`, except that a recognised key whose value does not decode to
    /// UTF-8 is refused: lossy decoding would turn `%FF` and `%FE` alike into U+FFFD, so two
    /// different names would reach the same user.
    pub fn parse(query: &str) -> Result<Self, AppError> {
        let mut q = Self::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            // A key that is not UTF-8 is not one of ours.
            let Ok(key) = form_decode(key) else { continue };
            let value = || {
                form_decode(value).map(Cow::into_owned).map_err(|_| {
                    AppError::BadRequest(format!("query parameter `{key}` is not valid UTF-8"))
                })
            };
            let repeated = match &*key {
                "username" => q.username.replace(value()?).is_some(),
                "lastEventId" => q.last_event_id.replace(value()?).is_some(),
                "wait" => q.wait.replace(value()?).is_some(),
                wire::ACCESS_TOKEN_PARAM => q.access_token.replace(Token(value()?)).is_some(),
                _ => continue,
            };
            if repeated {
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

    pub fn access_token(&self) -> Option<&Token> {
        self.access_token.as_ref()
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

/// Decodes one name or value of a form-encoded query: `+` is a space, `%XX` a byte, anything
/// else (a `%` without two hex digits too) stands for itself. Fails if the bytes are not UTF-8.
/// Borrows when there is nothing to decode, as in most queries.
fn form_decode(raw: &str) -> Result<Cow<'_, str>, Utf8Error> {
    if raw.contains('+') {
        let spaced = raw.replace('+', " ");
        let decoded = percent_decode_str(&spaced).decode_utf8()?;
        Ok(Cow::Owned(decoded.into_owned()))
    } else {
        percent_decode_str(raw).decode_utf8()
    }
}

/// Reads a message body: raw UTF-8 text, whatever its Content-Type, at most `limit` bytes,
/// all of it within `timeout`.
pub async fn message_body(
    request: Request,
    limit: usize,
    timeout: Duration,
) -> Result<String, AppError> {
    let deadline = tokio::time::Instant::now() + timeout;
    tokio::time::timeout_at(deadline, read_body(request, limit, deadline))
        .await
        .map_err(|_| AppError::BodyTimeout(timeout))?
}

/// How much of a body over the limit is still read (and dropped) before the 413 goes out.
///
/// Closing a socket with unread data makes the kernel send a reset, which can destroy the
/// answer before the client reads it: the client would see "connection reset" instead of the
/// reason. Reading the rest of a moderately large body first lets the 413 arrive; beyond this
/// much, the connection is closed at once.
const DRAIN_BEYOND_LIMIT: u64 = 1 << 20;

async fn read_body(
    request: Request,
    limit: usize,
    deadline: tokio::time::Instant,
) -> Result<String, AppError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = request.into_body();
    if let Some(n) = declared
        && n > limit as u64
    {
        if n <= limit as u64 + DRAIN_BEYOND_LIMIT {
            drain(&mut body, deadline).await;
        }
        return Err(AppError::TooLarge(limit));
    }
    // Read straight into one buffer sized from Content-Length: no frame list, no second copy.
    let mut bytes = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|_| AppError::BadRequest("could not read the request body".into()))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                drop(bytes);
                drain(&mut body, deadline).await;
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

/// Reads and drops up to [`DRAIN_BEYOND_LIMIT`] more of `body`, a little before `deadline` at
/// the latest, so the refusal still goes out within the body timeout.
async fn drain(body: &mut axum::body::Body, deadline: tokio::time::Instant) {
    let stop = deadline
        .checked_sub(Duration::from_millis(100))
        .unwrap_or(deadline);
    let _ = tokio::time::timeout_at(stop, async {
        let mut read = 0u64;
        while read <= DRAIN_BEYOND_LIMIT
            && let Some(Ok(frame)) = body.frame().await
        {
            read += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
    })
    .await;
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

    fn reason(query: &str) -> String {
        StreamQuery::parse(query).unwrap_err().to_string()
    }

    #[test]
    fn decoding_matches_form_urlencoded() {
        let q = StreamQuery::parse("&&username=a+b%2Bc%3d%&lastEventId=%30-%3&=x&k").unwrap();
        assert_eq!(q.username.as_deref(), Some("a b+c=%"));
        assert_eq!(q.last_event_id.as_deref(), Some("0-%3"));
        // Encoded keys are still recognised; a key without `=` has an empty value.
        let q = StreamQuery::parse("user%6Eame=%F0%9F%A6%80&lastEventId").unwrap();
        assert_eq!(q.username.as_deref(), Some("🦀"));
        assert_eq!(q.last_event_id.as_deref(), Some(""));
        // A literal U+FFFD is valid UTF-8 and passes through unchanged.
        let q = StreamQuery::parse("username=%EF%BF%BD").unwrap();
        assert_eq!(q.username.as_deref(), Some("\u{fffd}"));
    }

    #[test]
    fn invalid_utf8_is_refused_not_replaced() {
        for query in [
            "username=%FF",
            "username=%FE",
            "username=a%C3",
            "username=%ED%A0%80",
        ] {
            assert_eq!(
                reason(query),
                "query parameter `username` is not valid UTF-8",
                "{query}"
            );
        }
        assert_eq!(
            reason("username=demo&lastEventId=0-1%FF"),
            "query parameter `lastEventId` is not valid UTF-8"
        );
        // Keys and values the server does not read are not checked.
        let q = StreamQuery::parse("x=%FF&%FF=1&username=demo").unwrap();
        assert_eq!(q.username().unwrap(), "demo");
        // The duplicate check still applies.
        assert_eq!(
            reason("username=a&user%6Eame=a"),
            "query parameter `username` is given more than once"
        );
    }
}
