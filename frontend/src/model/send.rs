//! Sending: which key sends, and what a POST's answer means for the page.

use wire::Published;

/// Whether a keydown in the composer sends: plain Enter sends, Shift+Enter is a newline, and
/// Enter that confirms an IME composition does neither.
pub fn enter_sends(key: &str, shift: bool, composing: bool) -> bool {
    key == "Enter" && !shift && !composing
}

/// The first non-empty line of an error body, trimmed and kept short for inline display.
pub fn first_line(body: &str) -> &str {
    let line = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    match line.char_indices().nth(200) {
        Some((cut, _)) => &line[..cut],
        None => line,
    }
}

/// The outcome of a publish, ready for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    Sent(Published),
    Failed(String),
}

impl SendOutcome {
    /// Reads the answer of `POST /vN/message`: a 2xx carries `wire::Published` JSON; anything
    /// else carries a one-line reason.
    pub fn from_response(status: u16, status_text: &str, body: &str) -> Self {
        if (200..300).contains(&status) {
            match serde_json::from_str::<Published>(body) {
                Ok(published) => Self::Sent(published),
                Err(e) => Self::Failed(format!("{status}: unexpected answer ({e})")),
            }
        } else {
            let reason = match first_line(body) {
                "" => status_text,
                line => line,
            };
            Self::Failed(format!("{status} {reason}").trim_end().to_owned())
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Sent(p) => match p.delivered {
                Some(n) => {
                    let streams = if n == 1 { "stream" } else { "streams" };
                    format!("Sent as {} · delivered to {n} {streams}", p.id)
                }
                None => format!("Sent as {}", p.id),
            },
            Self::Failed(reason) => format!("Not sent: {reason}"),
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Self::Failed(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn enter_sends_shift_enter_does_not() {
        assert!(enter_sends("Enter", false, false));
        assert!(!enter_sends("Enter", true, false));
        assert!(!enter_sends("Enter", false, true));
        assert!(!enter_sends("a", false, false));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn send_outcomes() {
        let ok = SendOutcome::from_response(200, "OK", r#"{"id":"17-3","delivered":2}"#);
        assert_eq!(
            ok,
            SendOutcome::Sent(Published {
                id: "17-3".into(),
                delivered: Some(2)
            })
        );
        assert_eq!(ok.message(), "Sent as 17-3 · delivered to 2 streams");
        let one = SendOutcome::from_response(200, "OK", r#"{"id":"1","delivered":1}"#);
        assert!(one.message().ends_with("1 stream"));
        let v3 = SendOutcome::from_response(200, "OK", r#"{"id":"0-9"}"#);
        assert_eq!(v3.message(), "Sent as 0-9");

        let too_big = SendOutcome::from_response(413, "Payload Too Large", "body over 64 KiB\n");
        assert_eq!(too_big.message(), "Not sent: 413 body over 64 KiB");
        assert!(too_big.is_error());
        let bare = SendOutcome::from_response(503, "Service Unavailable", "");
        assert_eq!(bare.message(), "Not sent: 503 Service Unavailable");
        let garbled = SendOutcome::from_response(200, "OK", "<html>");
        assert!(garbled.is_error());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn first_line_skips_blank_lines_and_caps_length() {
        assert_eq!(first_line("\n  reason here \nmore"), "reason here");
        assert_eq!(first_line(""), "");
        assert_eq!(first_line(&"é".repeat(300)).chars().count(), 200);
    }
}
