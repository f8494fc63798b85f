//! v3 records: `username:message`, split at the first colon, checked by the HTTP rules.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRecord {
    NoValue,
    TooLarge(usize),
    NotUtf8,
    NoColon,
    Username(wire::UsernameError),
    EmptyMessage,
    /// The message's encoded event would be larger than the frame limit.
    FrameTooLarge(usize),
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoValue => f.write_str("record has no value"),
            Self::TooLarge(limit) => write!(f, "value is larger than {limit} bytes"),
            Self::NotUtf8 => f.write_str("value is not valid UTF-8"),
            Self::NoColon => f.write_str("value has no ':' between username and message"),
            Self::Username(e) => e.fmt(f),
            Self::EmptyMessage => f.write_str("message is empty"),
            Self::FrameTooLarge(limit) => {
                write!(f, "message as an event would be larger than {limit} bytes")
            }
        }
    }
}

/// Splits a record value into `(username, message)`. `max_message` is the HTTP body limit; the
/// value may exceed it by the username and its colon.
pub fn parse(value: Option<&[u8]>, max_message: usize) -> Result<(&str, &str), BadRecord> {
    let value = value.ok_or(BadRecord::NoValue)?;
    let limit = max_message + wire::MAX_USERNAME_BYTES + 1;
    if value.len() > limit {
        return Err(BadRecord::TooLarge(limit));
    }
    let value = std::str::from_utf8(value).map_err(|_| BadRecord::NotUtf8)?;
    let (user, message) = value.split_once(':').ok_or(BadRecord::NoColon)?;
    wire::validate_username(user).map_err(BadRecord::Username)?;
    if message.is_empty() {
        return Err(BadRecord::EmptyMessage);
    }
    if message.len() > max_message {
        return Err(BadRecord::TooLarge(max_message));
    }
    Ok((user, message))
}

/// [`parse`], and the message's event must fit `max_frame` bytes ([`crate::frame::message_len`]).
pub fn parse_event(
    value: Option<&[u8]>,
    max_message: usize,
    max_frame: usize,
) -> Result<(&str, &str), BadRecord> {
    let (user, message) = parse(value, max_message)?;
    if crate::frame::message_len(message) > max_frame {
        return Err(BadRecord::FrameTooLarge(max_frame));
    }
    Ok((user, message))
}

/// The record value for a message POSTed to v3.
pub fn encode(user: &str, message: &str) -> String {
    let mut value = String::with_capacity(user.len() + 1 + message.len());
    value.push_str(user);
    value.push(':');
    value.push_str(message);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[u8]) -> Result<(&str, &str), BadRecord> {
        parse(Some(v), 16)
    }

    #[test]
    fn splits_at_the_first_colon() {
        assert_eq!(p("demo:🦀 howdy".as_bytes()), Ok(("demo", "🦀 howdy")));
        assert_eq!(p(b"demo:a:b\nc"), Ok(("demo", "a:b\nc")));
        assert_eq!(
            parse(Some(encode("u", "x:y").as_bytes()), 16),
            Ok(("u", "x:y"))
        );
    }

    #[test]
    fn refuses_bad_records() {
        assert_eq!(parse(None, 16), Err(BadRecord::NoValue));
        assert_eq!(p(b"no colon"), Err(BadRecord::NoColon));
        assert_eq!(
            p(b":msg"),
            Err(BadRecord::Username(wire::UsernameError::Missing))
        );
        assert_eq!(
            p(b"a\x01b:msg"),
            Err(BadRecord::Username(wire::UsernameError::ControlCharacter))
        );
        assert_eq!(p(b"demo:"), Err(BadRecord::EmptyMessage));
        assert_eq!(p(b"demo:\xff"), Err(BadRecord::NotUtf8));
        assert_eq!(p(b"demo:0123456789abcdefX"), Err(BadRecord::TooLarge(16)));
        assert!(matches!(p(&[b'a'; 200]), Err(BadRecord::TooLarge(_))));
    }
}
