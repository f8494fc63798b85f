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
    /// A format character (invisible, or reordering the text around it, like U+202E) or a
    /// space or line separator other than the ASCII space: two names that look the same, or a
    /// name that shows as something else, must not be two different users.
    Invisible(char),
    Colon,
}

impl fmt::Display for UsernameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("username is missing or empty"),
            Self::TooLong => write!(f, "username is longer than {MAX_USERNAME_BYTES} bytes"),
            Self::ControlCharacter => f.write_str("username contains a control character"),
            Self::Invisible(c) => write!(
                f,
                "username contains an invisible or formatting character (U+{:04X})",
                u32::from(*c)
            ),
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
    } else if name
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b':' || b == b' ')
    {
        // Printable ASCII without a colon: no control, format or odd space character is ASCII
        // besides the controls.
        Ok(())
    } else if name.chars().any(char::is_control) {
        Err(UsernameError::ControlCharacter)
    } else if let Some(c) = name.chars().find(|&c| is_format(c) || is_odd_space(c)) {
        Err(UsernameError::Invisible(c))
    } else if name.contains(':') {
        Err(UsernameError::Colon)
    } else {
        Ok(())
    }
}

/// Unicode general category Cf (format), as of Unicode 16.0 (DerivedGeneralCategory.txt; no Cf
/// was added between 15.0 and 16.0): 170 code points, sorted, as inclusive ranges. These are
/// invisible or change how the text around them is shown: soft hyphen, zero-width space and
/// joiners, bidirectional marks, embeddings, overrides and isolates, word joiner and invisible
/// operators, byte order mark, interlinear annotation, tag characters.
const FORMAT: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),   // SOFT HYPHEN
    (0x0600, 0x0605),   // ARABIC NUMBER SIGN..ARABIC NUMBER MARK ABOVE
    (0x061C, 0x061C),   // ARABIC LETTER MARK
    (0x06DD, 0x06DD),   // ARABIC END OF AYAH
    (0x070F, 0x070F),   // SYRIAC ABBREVIATION MARK
    (0x0890, 0x0891),   // ARABIC POUND MARK ABOVE..ARABIC PIASTRE MARK ABOVE
    (0x08E2, 0x08E2),   // ARABIC DISPUTED END OF AYAH
    (0x180E, 0x180E),   // MONGOLIAN VOWEL SEPARATOR
    (0x200B, 0x200F),   // ZERO WIDTH SPACE..RIGHT-TO-LEFT MARK
    (0x202A, 0x202E),   // LEFT-TO-RIGHT EMBEDDING..RIGHT-TO-LEFT OVERRIDE
    (0x2060, 0x2064),   // WORD JOINER..INVISIBLE PLUS
    (0x2066, 0x206F),   // LEFT-TO-RIGHT ISOLATE..NOMINAL DIGIT SHAPES
    (0xFEFF, 0xFEFF),   // ZERO WIDTH NO-BREAK SPACE (byte order mark)
    (0xFFF9, 0xFFFB),   // INTERLINEAR ANNOTATION ANCHOR..TERMINATOR
    (0x110BD, 0x110BD), // KAITHI NUMBER SIGN
    (0x110CD, 0x110CD), // KAITHI NUMBER SIGN ABOVE
    (0x13430, 0x1343F), // EGYPTIAN HIEROGLYPH VERTICAL JOINER..END WALLED ENCLOSURE
    (0x1BCA0, 0x1BCA3), // SHORTHAND FORMAT LETTER OVERLAP..SHORTHAND FORMAT UP STEP
    (0x1D173, 0x1D17A), // MUSICAL SYMBOL BEGIN BEAM..MUSICAL SYMBOL END PHRASE
    (0xE0001, 0xE0001), // LANGUAGE TAG
    (0xE0020, 0xE007F), // TAG SPACE..CANCEL TAG
];

/// Whether `c` is a format character (general category Cf).
fn is_format(c: char) -> bool {
    let c = u32::from(c);
    FORMAT
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Whether `c` is a separator (general categories Zs, Zl, Zp) other than the ASCII space: the
/// no-break, en, em, thin, hair, ideographic and other spaces look like U+0020 or like nothing,
/// and the line and paragraph separators break lines. Zs, Zl and Zp are exactly the
/// `White_Space` characters that are not controls, and controls are refused before this.
fn is_odd_space(c: char) -> bool {
    c != ' ' && c.is_whitespace() && !c.is_control()
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

/// Body of `GET /auth`: whether this server wants a token, so the page shows its token field
/// only when one is needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthInfo {
    /// Streams and POSTs need a token (`access_token` query parameter, cookie, or
    /// `Authorization: Bearer`).
    pub required: bool,
}

/// Event type sent shortly before a stream's token expires; its data is the number of whole
/// seconds left. The stream then ends when the token expires: the client fetches a new token
/// and reconnects with `Last-Event-ID`, missing nothing.
pub const TOKEN_EXPIRING_EVENT: &str = "token-expiring";

/// Query parameter that carries a token where headers cannot be set (`EventSource`).
pub const ACCESS_TOKEN_PARAM: &str = "access_token";

/// Body of `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why the server is (not) ready, e.g. "kafka connected; ..." or "kafka: unreachable". Short
    /// and generic: it is public, so broker addresses and error details go to the log only.
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
    fn every_ascii_character_is_judged_alike_with_or_without_others() {
        for b in 0u8..128 {
            let c = char::from(b);
            let ascii = format!("a{c}b");
            // The same character in a name that is not all ASCII takes the general path.
            let mixed = format!("é{c}b");
            let ok = validate_username(&ascii).is_ok();
            assert_eq!(ok, validate_username(&mixed).is_ok(), "{b:#04x}");
            assert_eq!(
                ok,
                (b.is_ascii_graphic() && c != ':') || c == ' ',
                "{b:#04x}"
            );
        }
    }

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
        assert_eq!(validate_username("a b"), Ok(()));
    }

    /// Every format character and every separator but U+0020, at the start, middle and end.
    #[test]
    fn invisible_and_formatting_characters() {
        // Format characters (Cf): the ends of every range and some inside.
        let format = [
            0xAD, 0x600, 0x605, 0x61C, 0x6DD, 0x70F, 0x890, 0x891, 0x8E2, 0x180E, 0x200B, 0x200C,
            0x200D, 0x200E, 0x200F, 0x202A, 0x202E, 0x2060, 0x2064, 0x2066, 0x2069, 0x206F, 0xFEFF,
            0xFFF9, 0xFFFB, 0x110BD, 0x110CD, 0x13430, 0x1343F, 0x1BCA0, 0x1BCA3, 0x1D173, 0x1D17A,
            0xE0001, 0xE0020, 0xE0041, 0xE007F,
        ];
        // Spaces other than U+0020 (Zs), and the line and paragraph separators (Zl, Zp).
        let spaces = [
            0xA0, 0x1680, 0x2000, 0x2007, 0x200A, 0x202F, 0x205F, 0x3000, 0x2028, 0x2029,
        ];
        let refused = format
            .into_iter()
            .chain(spaces)
            .map(|c| char::from_u32(c).unwrap());
        for c in refused {
            for name in [format!("{c}ab"), format!("a{c}b"), format!("ab{c}")] {
                assert_eq!(
                    validate_username(&name),
                    Err(UsernameError::Invisible(c)),
                    "{name:?}"
                );
            }
        }
        // Neighbours of the ranges stay allowed.
        let neighbours = [
            0xAC, 0xAE, 0x5FF, 0x606, 0x2010, 0x2065, 0x2070, 0xFEFE, 0xFFFC, 0x13440, 0x1BCA4,
            0x1D172, 0x1D17B, 0xE0000, 0xE0080, 0x1681, 0x2030, 0x3001,
        ];
        for c in neighbours.map(|c| char::from_u32(c).unwrap()) {
            assert_eq!(validate_username(&format!("a{c}b")), Ok(()), "{c:?}");
        }
    }

    #[test]
    fn format_table_is_sorted_and_counts_170() {
        assert!(FORMAT.windows(2).all(|w| w[0].1 < w[1].0));
        assert!(FORMAT.iter().all(|(lo, hi)| lo <= hi));
        let count: u32 = FORMAT.iter().map(|(lo, hi)| hi - lo + 1).sum();
        assert_eq!(count, 170);
    }

    #[test]
    fn invisible_reason_names_the_code_point() {
        assert_eq!(
            validate_username("a\u{202E}b").unwrap_err().to_string(),
            "username contains an invisible or formatting character (U+202E)"
        );
        assert_eq!(
            UsernameError::Invisible('\u{E0041}').to_string(),
            "username contains an invisible or formatting character (U+E0041)"
        );
    }
}
