//! v3's Kafka record parser (`server/src/kafka/record.rs`): no panic; it accepts exactly the
//! values that split at their first colon into a valid username and a non-empty message of at
//! most `max_message` bytes, and `encode` gives back the very value it accepted.
//!
//! Input: a flags byte (bit 0: the record has no value), `max_message` as two bytes
//! (little-endian), then the value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use server::kafka::record::{self, BadRecord};

fuzz_target!(|input: &[u8]| {
    let [flags, lo, hi, value @ ..] = input else {
        return;
    };
    let max_message = usize::from(u16::from_le_bytes([*lo, *hi]));
    if flags & 1 == 1 {
        assert_eq!(record::parse(None, max_message), Err(BadRecord::NoValue));
        return;
    }
    let parsed = record::parse(Some(value), max_message);
    // What the rules say, checked without the parser.
    let acceptable = std::str::from_utf8(value).ok().and_then(|v| {
        let (user, message) = v.split_once(':')?;
        let ok = wire::validate_username(user).is_ok()
            && !message.is_empty()
            && message.len() <= max_message;
        ok.then_some((user, message))
    });
    assert_eq!(parsed.as_ref().ok(), acceptable.as_ref(), "{value:?}");
    if let Ok((user, message)) = parsed {
        assert!(!user.contains(':') && user.len() <= wire::MAX_USERNAME_BYTES);
        let encoded = record::encode(user, message);
        assert_eq!(encoded.as_bytes(), value);
        assert_eq!(
            record::parse(Some(encoded.as_bytes()), max_message),
            Ok((user, message))
        );
    }
});
