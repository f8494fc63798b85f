//! Where a request's token comes from: `Authorization: Bearer`, a cookie, or the
//! `access_token` query parameter (a browser's `EventSource` cannot set headers).

use axum::http::{HeaderMap, header};
use std::fmt;

/// A token as sent, kept out of every log line: its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// What the request offered.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered<'a> {
    None,
    Token(&'a str),
    /// An `Authorization` header that is not a bearer token: refused like a bad token.
    Malformed,
}

/// The bearer token of the `Authorization` header, if there is one.
pub fn bearer(headers: &HeaderMap) -> Offered<'_> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Offered::None;
    };
    let Ok(value) = value.to_str() else {
        return Offered::Malformed;
    };
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => match token.trim() {
            "" => Offered::Malformed,
            token => Offered::Token(token),
        },
        _ => Offered::Malformed,
    }
}

/// The value of cookie `name`, from any `Cookie` header.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// The token a stream request offers: the header first, then the cookie, then the query.
pub fn for_stream<'a>(
    headers: &'a HeaderMap,
    cookie_name: &str,
    query: Option<&'a Token>,
) -> Offered<'a> {
    match bearer(headers) {
        Offered::None => {}
        offered => return offered,
    }
    if let Some(value) = cookie(headers, cookie_name) {
        return Offered::Token(value);
    }
    query.map_or(Offered::None, |t| Offered::Token(&t.0))
}

/// Redacts the value of `access_token` in a request target, for logs.
pub fn redacted(target: &str) -> std::borrow::Cow<'_, str> {
    let Some((path, query)) = target.split_once('?') else {
        return target.into();
    };
    if !query.contains(wire::ACCESS_TOKEN_PARAM) {
        return target.into();
    }
    let pairs: Vec<&str> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key == wire::ACCESS_TOKEN_PARAM => "access_token=REDACTED",
            _ => pair,
        })
        .collect();
    format!("{path}?{}", pairs.join("&")).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn header_then_cookie_then_query() {
        let q = Token("q".into());
        let h = headers(&[("authorization", "Bearer h"), ("cookie", "t=c")]);
        assert_eq!(for_stream(&h, "t", Some(&q)), Offered::Token("h"));
        let h = headers(&[("cookie", "a=1; t=c"), ("cookie", "z=2")]);
        assert_eq!(for_stream(&h, "t", Some(&q)), Offered::Token("c"));
        assert_eq!(for_stream(&h, "other", Some(&q)), Offered::Token("q"));
        assert_eq!(for_stream(&h, "other", None), Offered::None);
    }

    #[test]
    fn odd_authorization_headers_are_malformed() {
        for value in ["Basic abc", "Bearer", "Bearer  ", "token"] {
            let h = headers(&[("authorization", value)]);
            assert_eq!(bearer(&h), Offered::Malformed, "{value}");
        }
        let h = headers(&[("authorization", "bearer x.y.z")]);
        assert_eq!(bearer(&h), Offered::Token("x.y.z"));
    }

    #[test]
    fn debug_and_logged_targets_hide_the_token() {
        assert_eq!(format!("{:?}", Token("secret".into())), "Token(..)");
        assert_eq!(
            redacted("/v2/sse?username=a&access_token=abc.def&x=1"),
            "/v2/sse?username=a&access_token=REDACTED&x=1"
        );
        assert_eq!(redacted("/v2/sse?username=a"), "/v2/sse?username=a");
    }
}
