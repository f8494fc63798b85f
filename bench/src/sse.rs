//! An incremental Server-Sent Events parser following WHATWG HTML §9.2.6.
//!
//! The load generator must count exactly what a browser would see, so this parser keeps the
//! browser's rules rather than a convenient subset: lines end at CRLF, LF or CR (a CRLF split
//! across two network chunks counts once), one space after the colon is stripped, data lines
//! are joined with LF, an event with an empty data buffer is not dispatched, an `id` with NUL is
//! ignored, `retry` counts only when all ASCII digits, and a trailing event without its blank
//! line is discarded at end of stream (simply never dispatched here).

/// One thing the parser reports: a dispatched event, a comment or a valid `retry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A dispatched event.
    Event(Event),
    /// A comment line, without its leading colon. Servers use these as keep-alives.
    Comment(String),
    /// A `retry:` field made only of ASCII digits, in milliseconds.
    Retry(u64),
}

/// A dispatched event, as `MessageEvent` would show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` type, `message` when none was given.
    pub event_type: String,
    /// The data lines joined with LF, without the final LF.
    pub data: String,
    /// The last event id in force when the event was dispatched (carries over between events).
    pub last_event_id: String,
}

/// Parser state for one stream. Feed it body bytes in whatever chunks the network delivers.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended in CR, so a leading LF in the next chunk belongs to it.
    after_cr: bool,
    /// At least one line was processed; the BOM is stripped only from the first one.
    seen_line: bool,
    data: String,
    event_type: String,
    last_event_id: String,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last event id, what a reconnecting client sends as `Last-Event-ID`.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Parses one chunk of the body, reporting each item to `out` as it completes.
    pub fn feed(&mut self, chunk: &[u8], out: &mut impl FnMut(Item)) {
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            self.line.extend_from_slice(&rest[..pos]);
            let was_cr = rest[pos] == b'\r';
            rest = &rest[pos + 1..];
            self.process_line(out);
            if was_cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(rest);
    }

    fn process_line(&mut self, out: &mut impl FnMut(Item)) {
        let mut bytes = std::mem::take(&mut self.line);
        if !self.seen_line {
            self.seen_line = true;
            if bytes.starts_with(b"\xEF\xBB\xBF") {
                bytes.drain(..3);
            }
        }
        let line = String::from_utf8_lossy(&bytes);
        if line.is_empty() {
            self.dispatch(out);
        } else if let Some(comment) = line.strip_prefix(':') {
            out(Item::Comment(comment.to_owned()));
        } else {
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (&*line, ""),
            };
            match field {
                "event" => value.clone_into(&mut self.event_type),
                "data" => {
                    self.data.push_str(value);
                    self.data.push('\n');
                }
                "id" if !value.contains('\0') => value.clone_into(&mut self.last_event_id),
                "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                    if let Ok(ms) = value.parse() {
                        out(Item::Retry(ms));
                    }
                }
                _ => {}
            }
        }
        // Reuse the line buffer's allocation.
        bytes.clear();
        self.line = bytes;
    }

    fn dispatch(&mut self, out: &mut impl FnMut(Item)) {
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        if self.data.ends_with('\n') {
            self.data.pop();
        }
        let event_type = if self.event_type.is_empty() {
            "message".to_owned()
        } else {
            std::mem::take(&mut self.event_type)
        };
        out(Item::Event(Event {
            event_type,
            data: std::mem::take(&mut self.data),
            last_event_id: self.last_event_id.clone(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<Item> {
        let mut parser = Parser::new();
        let mut items = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut |item| items.push(item));
        }
        items
    }

    fn event(data: &str, id: &str) -> Item {
        Item::Event(Event {
            event_type: "message".into(),
            data: data.into(),
            last_event_id: id.into(),
        })
    }

    #[test]
    fn three_line_endings_and_split_crlf() {
        let items = parse_chunks(&[b"data: a\r", b"\ndata: b\rdata: c\n\r", b"\n"]);
        assert_eq!(items, vec![event("a\nb\nc", "")]);
    }

    #[test]
    fn split_anywhere_gives_the_same_items() {
        let stream: &[u8] =
            b"retry: 2000\r\n: hello\r\n\r\nid: 7\r\ndata: x\r\ndata:y\r\n\r\n: ka\n\n";
        let whole = parse_chunks(&[stream]);
        for cut in 0..stream.len() {
            assert_eq!(
                parse_chunks(&[&stream[..cut], &stream[cut..]]),
                whole,
                "cut {cut}"
            );
        }
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse_chunks(&bytewise), whole);
        assert_eq!(
            whole,
            vec![
                Item::Retry(2000),
                Item::Comment(" hello".into()),
                event("x\ny", "7"),
                Item::Comment(" ka".into()),
            ]
        );
    }

    #[test]
    fn fields_and_ids() {
        let items = parse_chunks(&[
            b"\xEF\xBB\xBFid: 1\ndata\n\nid: a\0b\nevent: tick\ndata:  two spaces\n\nid\ndata: z\n\n",
        ]);
        assert_eq!(
            items,
            vec![
                event("", "1"),
                Item::Event(Event {
                    event_type: "tick".into(),
                    data: " two spaces".into(),
                    last_event_id: "1".into(),
                }),
                event("z", ""),
            ]
        );
    }

    #[test]
    fn invalid_retry_empty_data_and_unterminated_event() {
        let items = parse_chunks(&[b"retry: 12a\nretry:\nid: 3\n\nevent: x\n\ndata: lost"]);
        assert!(items.is_empty(), "{items:?}");
    }
}
