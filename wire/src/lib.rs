//! Types and rules that the server and the browser client must agree on.
//!
//! Keeping them in one crate means the page refuses exactly the usernames the server refuses,
//! and both sides read the same JSON shapes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest accepted username, in bytes of UTF-8.
pub const MAX_USERNAME_BYTES: usize = 64;

/// Event type sent before a replay when the client's `Last-Event-ID` is older than the retained
/// history, so the client knows some messages are gone for good.
pub const RESYNC_EVENT: &str = "resync";

/// Longest `Last-Event-ID` (header or `lastEventId` query parameter) the server reads; longer
/// ids are treated as unknown.
pub const MAX_LAST_EVENT_ID_BYTES: usize = 128;

/// Why a username is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsernameError {
    Missing,
    TooLong,
    ControlCharacter,
    Colon,
}

impl fmt::Display for UsernameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("username is missing or empty"),
            Self::TooLong => write!(f, "username is longer than {MAX_USERNAME_BYTES} bytes"),
            Self::ControlCharacter => f.write_str("username contains a control character"),
            // v3 records are `username:message`, split at the first colon.
            Self::Colon => f.write_str("username contains ':', which is reserved"),
        }
    }
}

impl std::error::Error for UsernameError {}

/// Checks a username against the rules every API version applies.
pub fn validate_username(name: &str) -> Result<(), UsernameError> {
    if name.is_empty() {
        Err(UsernameError::Missing)
    } else if name.len() > MAX_USERNAME_BYTES {
        Err(UsernameError::TooLong)
    } else if name.chars().any(char::is_control) {
        Err(UsernameError::ControlCharacter)
    } else if name.contains(':') {
        Err(UsernameError::Colon)
    } else {
        Ok(())
    }
}

/// Body of a successful `POST /vN/message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The SSE `id:` the message carries; usable as `Last-Event-ID`.
    pub id: String,
    /// How many open streams the message was queued to on the instance that answered. Always
    /// there on v2; on v3 only when the POST asked for it with `wait=delivered`, since it
    /// means waiting for the instance's consumer to read the record back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<usize>,
}

/// Body of `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why the server is (not) ready, e.g. "kafka connected" or "kafka unreachable: ...".
    pub reason: String,
}

/// Data of a `resync` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resync {
    /// The id the client asked to resume after.
    pub last_event_id: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(validate_username("demo"), Ok(()));
        assert_eq!(validate_username("Zoë 🦀 名前"), Ok(()));
        assert_eq!(validate_username(""), Err(UsernameError::Missing));
        assert_eq!(validate_username(&"a".repeat(64)), Ok(()));
        assert_eq!(
            validate_username(&"a".repeat(65)),
            Err(UsernameError::TooLong)
        );
        assert_eq!(
            validate_username("é".repeat(33).as_str()),
            Err(UsernameError::TooLong)
        );
        assert_eq!(
            validate_username("a\nb"),
            Err(UsernameError::ControlCharacter)
        );
        assert_eq!(
            validate_username("a\u{7f}"),
            Err(UsernameError::ControlCharacter)
        );
        assert_eq!(validate_username("a:b"), Err(UsernameError::Colon));
    }
}
