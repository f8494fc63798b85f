//! The API generations and their URLs, and the username rules the server applies.

use std::fmt;

/// The server's API generations; each has its own stream and publish endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ApiVersion {
    /// A fixed greeting every 5 s; no ids, no publishing.
    V1,
    /// In-memory fan-out with ids and replay.
    #[default]
    V2,
    /// The same shapes as v2, routed through Kafka.
    V3,
}

impl ApiVersion {
    pub const ALL: [Self; 3] = [Self::V1, Self::V2, Self::V3];

    /// The path segment, also used as the `<select>` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
            Self::V3 => "v3",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == value)
    }

    /// What the option says about the version, so the choice is clear without the docs.
    pub fn description(self) -> &'static str {
        match self {
            Self::V1 => "v1 · greeting",
            Self::V2 => "v2 · with replay",
            Self::V3 => "v3 · via Kafka",
        }
    }

    /// v1 has no publish endpoint.
    pub fn can_send(self) -> bool {
        self != Self::V1
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Percent-encodes a query component the way `encodeURIComponent` does for everything that
/// matters here: only RFC 3986 unreserved characters stay as they are.
pub fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(byte >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(byte & 0xf)]));
        }
    }
    out
}

/// The stream URL. `resume_after` asks the server to replay what came after that id; the
/// browser's own reconnects send `Last-Event-ID` instead, this is for a fresh `EventSource`.
/// `token` goes in the query (`access_token`), since `EventSource` cannot set headers.
pub fn stream_url(
    version: ApiVersion,
    username: &str,
    resume_after: Option<&str>,
    token: Option<&str>,
) -> String {
    let mut url = format!("/{version}/sse?username={}", encode_component(username));
    if let Some(id) = resume_after.filter(|id| !id.is_empty() && version != ApiVersion::V1) {
        url.push_str("&lastEventId=");
        url.push_str(&encode_component(id));
    }
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        url.push('&');
        url.push_str(wire::ACCESS_TOKEN_PARAM);
        url.push('=');
        url.push_str(&encode_component(token));
    }
    url
}

/// The publish URL for `username` on `version`.
pub fn message_url(version: ApiVersion, username: &str) -> String {
    format!("/{version}/message?username={}", encode_component(username))
}

/// Why the server would refuse this username, in the words the server uses.
pub fn username_problem(name: &str) -> Option<String> {
    wire::validate_username(name).err().map(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn urls_encode_the_username() {
        assert_eq!(
            stream_url(ApiVersion::V2, "demo", None, None),
            "/v2/sse?username=demo"
        );
        assert_eq!(
            stream_url(ApiVersion::V3, "Zoë & co/+?", None, None),
            "/v3/sse?username=Zo%C3%AB%20%26%20co%2F%2B%3F"
        );
        assert_eq!(
            message_url(ApiVersion::V2, "a b"),
            "/v2/message?username=a%20b"
        );
        assert_eq!(encode_component("A-z_0.9~"), "A-z_0.9~");
        assert_eq!(encode_component("🦀"), "%F0%9F%A6%80");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn stream_url_resumes_only_where_ids_exist() {
        assert_eq!(
            stream_url(ApiVersion::V2, "u", Some("1795790000000-42"), None),
            "/v2/sse?username=u&lastEventId=1795790000000-42"
        );
        assert_eq!(
            stream_url(ApiVersion::V2, "u", Some(""), None),
            "/v2/sse?username=u"
        );
        assert_eq!(
            stream_url(ApiVersion::V1, "u", Some("7"), None),
            "/v1/sse?username=u"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn stream_url_carries_the_token() {
        assert_eq!(
            stream_url(ApiVersion::V2, "u", Some("5-1"), Some("a.b+/=")),
            "/v2/sse?username=u&lastEventId=5-1&access_token=a.b%2B%2F%3D"
        );
        assert_eq!(
            stream_url(ApiVersion::V1, "u", None, Some("t")),
            "/v1/sse?username=u&access_token=t"
        );
        assert_eq!(
            stream_url(ApiVersion::V2, "u", None, Some("")),
            "/v2/sse?username=u"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn versions_round_trip() {
        for v in ApiVersion::ALL {
            assert_eq!(ApiVersion::parse(v.as_str()), Some(v));
        }
        assert_eq!(ApiVersion::parse("v4"), None);
        assert!(!ApiVersion::V1.can_send());
        assert!(ApiVersion::V2.can_send() && ApiVersion::V3.can_send());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn username_problems_use_the_shared_rules() {
        assert_eq!(username_problem("demo"), None);
        assert_eq!(
            username_problem("").as_deref(),
            Some("username is missing or empty")
        );
        assert_eq!(
            username_problem("a:b").as_deref(),
            Some("username contains ':', which is reserved")
        );
        assert!(
            username_problem(&"x".repeat(65))
                .unwrap()
                .contains("longer than 64")
        );
    }
}
