//! Message ids. Every id is a position `lane-seq` in its source's order: for v2 the lane is the
//! process's start time and seq a counter; for v3 the lane is the Kafka partition and seq the
//! offset, so a v3 id means the same message on every instance.

use std::{fmt, str::FromStr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub lane: u64,
    pub seq: u64,
}

impl Position {
    pub const fn new(lane: u64, seq: u64) -> Self {
        Self { lane, seq }
    }

    /// The id as text, without the allocation and formatter `to_string` costs on every
    /// record.
    pub fn id(&self) -> Id {
        let mut id = Id {
            buf: [0; crate::frame::MAX_ID_LEN],
            len: 0,
        };
        id.push_decimal(self.lane);
        id.buf[id.len] = b'-';
        id.len += 1;
        id.push_decimal(self.seq);
        id
    }
}

/// A [`Position`] as `lane-seq`.
pub struct Id {
    buf: [u8; crate::frame::MAX_ID_LEN],
    len: usize,
}

impl Id {
    fn push_decimal(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let digits = &digits[i..];
        self.buf[self.len..self.len + digits.len()].copy_from_slice(digits);
        self.len += digits.len();
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and '-' were written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id().as_str())
    }
}

impl FromStr for Position {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (lane, seq) = s.split_once('-').ok_or(())?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(lane) || !digits(seq) {
            return Err(());
        }
        Ok(Self::new(
            lane.parse().map_err(drop)?,
            seq.parse().map_err(drop)?,
        ))
    }
}

/// What a reconnecting client says it saw last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastSeen {
    /// A fresh connection: live messages only.
    Nothing,
    /// A well-formed id: replay what came after it.
    At(Position),
    /// An id this server can't place (malformed or too long): replay everything, after a resync.
    Unknown(String),
    /// A well-formed id past the end of its source lane (v3: its Kafka partition's log): from
    /// a topic since created anew, or from elsewhere. Replay everything, after a resync.
    PastEnd(Position),
}

impl LastSeen {
    /// Reads a `Last-Event-ID` value; an empty one means the client has none.
    pub fn parse(raw: Option<&str>) -> Self {
        match raw {
            None | Some("") => Self::Nothing,
            Some(s) if s.len() > wire::MAX_LAST_EVENT_ID_BYTES => {
                let mut cut = wire::MAX_LAST_EVENT_ID_BYTES;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                Self::Unknown(format!("{}…", &s[..cut]))
            }
            Some(s) => s
                .parse()
                .map_or_else(|()| Self::Unknown(s.to_owned()), Self::At),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let p = Position::new(1_795_000_000_000, 42);
        assert_eq!(p.to_string().parse::<Position>(), Ok(p));
        assert_eq!("0-7".parse::<Position>(), Ok(Position::new(0, 7)));
    }

    #[test]
    fn ids_are_decimal() {
        for (lane, seq) in [
            (0, 0),
            (7, 10),
            (1_795_000_000_000, 42),
            (u64::MAX, u64::MAX),
        ] {
            let id = Position::new(lane, seq).id();
            assert_eq!(id.as_str(), format!("{lane}-{seq}"));
        }
        assert_eq!(
            Position::new(u64::MAX, u64::MAX).id().as_str().len(),
            crate::frame::MAX_ID_LEN
        );
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "-",
            "1-",
            "-1",
            "1-2-3",
            "a-1",
            "+1-2",
            "1 -2",
            "99999999999999999999-1",
        ] {
            assert!(s.parse::<Position>().is_err(), "{s:?}");
        }
    }

    #[test]
    fn last_seen() {
        assert_eq!(LastSeen::parse(None), LastSeen::Nothing);
        assert_eq!(LastSeen::parse(Some("")), LastSeen::Nothing);
        assert_eq!(
            LastSeen::parse(Some("3-4")),
            LastSeen::At(Position::new(3, 4))
        );
        assert!(matches!(
            LastSeen::parse(Some("nope")),
            LastSeen::Unknown(_)
        ));
        let huge = "é".repeat(1_000_000);
        match LastSeen::parse(Some(&huge)) {
            LastSeen::Unknown(s) => assert!(s.len() <= wire::MAX_LAST_EVENT_ID_BYTES + 3),
            other => panic!("{other:?}"),
        }
    }
}
