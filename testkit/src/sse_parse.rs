//! An event-stream parser that follows WHATWG HTML §9.2.6 "Interpreting an event stream" step
//! by step, to check what the server writes against what a browser reads.
//!
//! It is a reference, not a fast parser: it keeps a log of every field and comment it reads, so
//! a test can also check that nothing besides the expected fields reached the client.

/// A dispatched `MessageEvent`, as a page's listener would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `message` unless an `event:` field set another type.
    pub event_type: String,
    pub data: String,
    /// The event source's last event ID string when the event was dispatched.
    pub last_event_id: String,
}

/// Reads an event stream fed in chunks of bytes, split anywhere (inside a CRLF or a UTF-8
/// sequence too).
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of the line being read.
    line: Vec<u8>,
    /// The last chunk ended with a CR, so an LF opening the next one ends nothing.
    after_cr: bool,
    /// No line has ended yet: the stream's first bytes may still be a byte order mark.
    at_start: bool,
    data: String,
    event_type: String,
    last_event_id_buffer: String,
    /// The event source's last event ID string.
    pub last_event_id: String,
    /// The reconnection time in milliseconds, once a valid `retry:` field has set it.
    pub retry: Option<u64>,
    /// Events dispatched so far.
    pub events: Vec<Event>,
    /// Every field read so far, known or not, as `(name, value)` after the one leading space
    /// is stripped from the value.
    pub fields: Vec<(String, String)>,
    /// Every comment read so far: the line after its leading colon.
    pub comments: Vec<String>,
}

/// Parses a whole stream. The end of `stream` is the end of the stream: a last line or event
/// that was not terminated is discarded.
pub fn parse(stream: &[u8]) -> Parser {
    let mut parser = Parser::new();
    parser.feed(stream);
    parser
}

impl Parser {
    pub fn new() -> Self {
        Self {
            at_start: true,
            ..Self::default()
        }
    }

    /// Reads the next chunk of the stream. Complete lines are interpreted at once; the rest
    /// waits for the next chunk.
    pub fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            let after_cr = std::mem::replace(&mut self.after_cr, false);
            match b {
                b'\n' if after_cr => {}
                b'\n' => self.end_line(),
                b'\r' => {
                    self.end_line();
                    self.after_cr = true;
                }
                _ => self.line.push(b),
            }
        }
    }

    fn end_line(&mut self) {
        let mut bytes = std::mem::take(&mut self.line);
        // "The stream must then be decoded using the UTF-8 decode algorithm", which strips one
        // leading byte order mark. CR and LF are ASCII, so decoding line by line gives the
        // same text as decoding the whole stream: an incomplete sequence before an ASCII byte
        // becomes U+FFFD either way.
        if std::mem::replace(&mut self.at_start, false) && bytes.starts_with(b"\xEF\xBB\xBF") {
            bytes.drain(..3);
        }
        let line = String::from_utf8_lossy(&bytes);
        self.interpret(&line);
    }

    fn interpret(&mut self, line: &str) {
        if line.is_empty() {
            self.dispatch();
        } else if let Some(comment) = line.strip_prefix(':') {
            self.comments.push(comment.to_owned());
        } else if let Some((field, value)) = line.split_once(':') {
            let value = value.strip_prefix(' ').unwrap_or(value);
            self.process_field(field, value);
        } else {
            self.process_field(line, "");
        }
    }

    fn process_field(&mut self, field: &str, value: &str) {
        self.fields.push((field.to_owned(), value.to_owned()));
        match field {
            "event" => value.clone_into(&mut self.event_type),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => value.clone_into(&mut self.last_event_id_buffer),
            // Digits only (`u64::from_str` alone would take a leading `+`); a value too large
            // for a u64 is ignored as well (the spec sets no bound, browsers differ).
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok().or(self.retry);
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        self.last_event_id.clone_from(&self.last_event_id_buffer);
        let mut data = std::mem::take(&mut self.data);
        let event_type = std::mem::take(&mut self.event_type);
        if data.is_empty() {
            return;
        }
        if data.ends_with('\n') {
            data.pop();
        }
        self.events.push(Event {
            event_type: if event_type.is_empty() {
                "message".to_owned()
            } else {
                event_type
            },
            data,
            last_event_id: self.last_event_id.clone(),
        });
    }
}

/// One frame round-trip case: a payload, the id and event name the server may put in a frame,
/// the preamble's retry, and where to split the stream in two chunks (`split`/255 of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameCase {
    pub data: String,
    pub id: String,
    pub event: String,
    pub retry_ms: u64,
    pub split: u8,
}

impl FrameCase {
    /// The `frame_roundtrip` fuzz target's input: `data 0xFF id 0xFF event 0xFF tail`, each
    /// part decoded as UTF-8 with replacement (0xFF never occurs in UTF-8). The id loses CR, LF
    /// and NUL and the event name CR and LF, which the server never puts there. The tail's
    /// first four bytes (little-endian) are the retry in milliseconds, its fifth the split.
    pub fn decode(input: &[u8]) -> Self {
        let mut parts = input.splitn(4, |&b| b == 0xFF);
        let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let data = next();
        let id = next().replace(['\r', '\n', '\0'], "");
        let event = next().replace(['\r', '\n'], "");
        let tail = parts.next().unwrap_or_default();
        let mut retry = [0; 4];
        let n = tail.len().min(4);
        retry[..n].copy_from_slice(&tail[..n]);
        Self {
            data,
            id,
            event,
            retry_ms: u64::from(u32::from_le_bytes(retry)),
            split: tail.get(4).copied().unwrap_or(0),
        }
    }

    /// Checks the server's encoding of this case: `frames` are its `message(id, data)`,
    /// `named(event, data)` and `data_only(data)`, `preamble` what a stream opens with.
    ///
    /// Each frame alone reaches the parser as exactly one event with its data, type and id,
    /// and only its own fields; after the preamble in one stream (read whole, and in two chunks
    /// split at `split`), the three give the same events, the preamble's retry and comment, and
    /// no other field.
    pub fn check(&self, frames: [&[u8]; 3], preamble: &[u8]) {
        let Self {
            data,
            id,
            event,
            retry_ms,
            split,
        } = self;
        let event_type = if event.is_empty() { "message" } else { event };
        // One `data` field per line of what the client receives.
        let received = as_received(data);
        let data_fields = || {
            received
                .split('\n')
                .map(|l| ("data".to_owned(), l.to_owned()))
        };
        let field = |name: &str, value: &str| (name.to_owned(), value.to_owned());

        let alone = [
            ev("message", data, id),
            ev(event_type, data, ""),
            ev("message", data, ""),
        ];
        let heads = [vec![field("id", id)], vec![field("event", event)], vec![]];
        for ((frame, expected), head) in frames.iter().zip(alone).zip(heads) {
            assert!(!frame.contains(&b'\r'), "a frame holds a CR: {frame:?}");
            let p = parse(frame);
            assert_eq!(p.events, [expected], "{frame:?}");
            let fields: Vec<_> = head.into_iter().chain(data_fields()).collect();
            assert_eq!(p.fields, fields, "{frame:?}");
            assert!(p.comments.is_empty() && p.retry.is_none(), "{frame:?}");
        }

        let mut stream = preamble.to_vec();
        frames.iter().for_each(|f| stream.extend_from_slice(f));
        // named and data_only leave the last event id as message set it.
        let events = [
            ev("message", data, id),
            ev(event_type, data, id),
            ev("message", data, id),
        ];
        let mut fields = vec![field("retry", &retry_ms.to_string()), field("id", id)];
        fields.extend(data_fields());
        fields.push(field("event", event));
        fields.extend(data_fields());
        fields.extend(data_fields());
        for p in [parse(&stream), parse_split(&stream, *split)] {
            assert_eq!(p.events, events);
            assert_eq!(p.fields, fields);
            assert_eq!(p.comments, [" stream open"]);
            assert_eq!(p.retry, Some(*retry_ms));
            assert_eq!(p.last_event_id, *id);
        }
    }
}

/// What a client's `event.data` holds for a payload: every line break arrives as LF.
pub fn as_received(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

fn ev(event_type: &str, data: &str, last_event_id: &str) -> Event {
    Event {
        event_type: event_type.into(),
        data: as_received(data),
        last_event_id: last_event_id.into(),
    }
}

/// `stream` read in two chunks, split at `split`/255 of its length.
pub fn parse_split(stream: &[u8], split: u8) -> Parser {
    let mut parser = Parser::new();
    let (a, b) = stream.split_at(stream.len() * usize::from(split) / 255);
    parser.feed(a);
    parser.feed(b);
    parser
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event_type: &str, data: &str, last_event_id: &str) -> Event {
        Event {
            event_type: event_type.into(),
            data: data.into(),
            last_event_id: last_event_id.into(),
        }
    }

    fn events(stream: &str) -> Vec<Event> {
        parse(stream.as_bytes()).events
    }

    // The examples of §9.2.6, each with what the spec says it dispatches.

    #[test]
    fn spec_stock_ticker() {
        assert_eq!(
            events("data: YHOO\ndata: +2\ndata: 10\n\n"),
            [ev("message", "YHOO\n+2\n10", "")]
        );
    }

    #[test]
    fn spec_ids_and_leading_spaces() {
        let p = parse(
            b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n",
        );
        // The last block has no blank line after it, so it is never dispatched.
        assert_eq!(
            p.events,
            [
                ev("message", "first event", "1"),
                ev("message", "second event", "")
            ]
        );
        assert_eq!(p.comments, [" test stream"]);
        assert!(p.fields.contains(&("data".into(), " third event".into())));
        let p =
            parse(b"data: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n");
        assert_eq!(p.events[2], ev("message", " third event", ""));
    }

    #[test]
    fn spec_empty_data_and_trailing_block() {
        assert_eq!(
            events("data\n\ndata\ndata\n\ndata:"),
            [ev("message", "", ""), ev("message", "\n", "")]
        );
    }

    #[test]
    fn spec_space_after_colon_is_optional() {
        assert_eq!(
            events("data:test\n\ndata: test\n\n"),
            [ev("message", "test", ""), ev("message", "test", "")]
        );
    }

    #[test]
    fn every_line_ending_and_split_crlf() {
        let expected = [ev("message", "a\nb\nc", "")];
        assert_eq!(events("data: a\r\ndata: b\rdata: c\n\r\n"), expected);
        assert_eq!(events("data: a\rdata: b\rdata: c\r\r"), expected);
        // A CRLF split across two chunks is one line ending, not two.
        let mut p = Parser::new();
        p.feed(b"data: a\r");
        p.feed(b"\ndata: b\r");
        p.feed(b"\ndata: c\r");
        assert!(p.events.is_empty());
        p.feed(b"\n\r");
        assert_eq!(p.events, expected);
        // Two CRs are two line endings: the second one dispatches.
        assert_eq!(events("data: x\r\r"), [ev("message", "x", "")]);
    }

    #[test]
    fn byte_order_mark_only_at_the_start() {
        assert_eq!(events("\u{feff}data: a\n\n"), [ev("message", "a", "")]);
        // Only one is stripped: the second makes the field name `\u{feff}data`.
        let p = parse("\u{feff}\u{feff}data: a\n\n".as_bytes());
        assert!(p.events.is_empty());
        assert_eq!(p.fields, [("\u{feff}data".into(), "a".into())]);
        // One split across chunks is still stripped.
        let mut p = Parser::new();
        p.feed(b"\xEF\xBB");
        p.feed(b"\xBFdata: a\n\n");
        assert_eq!(p.events, [ev("message", "a", "")]);
        // Later in the stream it is data.
        assert_eq!(
            events("data: a\n\ndata: \u{feff}b\n\n")[1].data,
            "\u{feff}b"
        );
    }

    #[test]
    fn event_type_id_and_retry() {
        let p = parse(b"retry: 1500\nevent: resync\nid: 3-4\ndata: x\n\ndata: y\n\n");
        assert_eq!(p.retry, Some(1500));
        assert_eq!(
            p.events,
            [ev("resync", "x", "3-4"), ev("message", "y", "3-4")]
        );
        // An id with NUL is ignored; an empty one clears the last event id.
        let p = parse(b"id: 1\ndata: a\n\nid: 2\0\ndata: b\n\nid:\ndata: c\n\n");
        assert_eq!(
            p.events
                .iter()
                .map(|e| &e.last_event_id[..])
                .collect::<Vec<_>>(),
            ["1", "1", ""]
        );
        // The buffer is copied to the last event id even when nothing is dispatched.
        let p = parse(b"id: 9\n\n");
        assert!(p.events.is_empty());
        assert_eq!(p.last_event_id, "9");
        // retry: digits only.
        for bad in [
            "retry: 1.5",
            "retry: -1",
            "retry:  15",
            "retry: 1e3",
            "retry:",
            "retry",
        ] {
            let p = parse(format!("retry: 7\n{bad}\n\n").as_bytes());
            assert_eq!(p.retry, Some(7), "{bad}");
        }
        assert_eq!(parse(b"retry:15\n").retry, Some(15));
    }

    #[test]
    fn fields_comments_and_unknown_names() {
        let p = parse(b": hi\nfoo: bar\ndata\nData: x\nevent:: y\n\n");
        assert_eq!(p.comments, [" hi"]);
        assert_eq!(
            p.fields,
            [
                ("foo".into(), "bar".into()),
                ("data".into(), "".into()),
                ("Data".into(), "x".into()),
                ("event".into(), ": y".into()),
            ]
        );
        assert_eq!(p.events, [ev(": y", "", "")]);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        assert_eq!(events("data: a")[..], []);
        let p = parse(b"data: \xF0\x9F\xA6\ndata: \xFFz\n\n");
        assert_eq!(p.events, [ev("message", "\u{fffd}\n\u{fffd}z", "")]);
    }
}
