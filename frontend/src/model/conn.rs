//! Where a stream is, as the indicator shows it.

/// Where a stream is, as the indicator shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnState {
    /// The first connection attempt is in flight.
    Connecting,
    /// The stream is open.
    Live,
    /// The stream dropped and the browser is retrying on its own.
    Reconnecting,
    /// No stream: never connected, disconnected, or refused by the server.
    #[default]
    Closed,
}

impl ConnState {
    pub fn label(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Live => "live",
            Self::Reconnecting => "reconnecting",
            Self::Closed => "closed",
        }
    }

    /// The state after an `error` event, from `EventSource.readyState` at that moment:
    /// CONNECTING (0) means the browser will retry; CLOSED (2) means it gave up for good
    /// (a non-200 answer or a wrong content type).
    pub fn after_error(self, ready_state: u16) -> Self {
        match ready_state {
            0 if self == Self::Connecting => Self::Connecting,
            0 => Self::Reconnecting,
            2 => Self::Closed,
            _ => self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn error_events_map_to_states() {
        use ConnState::*;
        assert_eq!(Live.after_error(0), Reconnecting);
        assert_eq!(Reconnecting.after_error(0), Reconnecting);
        assert_eq!(Connecting.after_error(0), Connecting);
        assert_eq!(Live.after_error(2), Closed);
        assert_eq!(Connecting.after_error(2), Closed);
        assert_eq!(Live.after_error(1), Live);
    }
}
