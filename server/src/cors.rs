//! Which other origins' pages may use the API from a browser (`--cors-origin`).
//!
//! Without a listed origin nothing changes in the answers, so browsers keep pages of other
//! origins from reading them. Reading is not the only harm, though: a cross-origin POST with a
//! `text/plain` body needs no preflight, so a browser sends it and the message would be
//! published before the page is refused the answer. Such POSTs are refused here
//! ([`Origins::check_post`]).

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use std::sync::Arc;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Refuses lists the server cannot honour, naming the flag.
pub fn check(origins: &[String], credentials: bool) -> Result<(), String> {
    let any = origins.iter().any(|o| o == "*");
    if any && origins.len() > 1 {
        return Err("--cors-origin `*` cannot be combined with other origins".into());
    }
    if any && credentials {
        return Err(
            "--cors-credentials cannot be used with --cors-origin `*`: list the origins".into(),
        );
    }
    if credentials && origins.is_empty() {
        return Err("--cors-credentials needs at least one --cors-origin".into());
    }
    for origin in origins.iter().filter(|o| *o != "*") {
        let valid = origin.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme, "http" | "https")
                && !rest.is_empty()
                && !rest.contains(['/', '?', '#', ' '])
        }) && HeaderValue::from_str(origin).is_ok();
        if !valid {
            return Err(format!(
                "--cors-origin {origin:?} is not an origin like https://app.example.com or \
                 http://localhost:8080"
            ));
        }
    }
    Ok(())
}

/// The listed origins, shared by the CORS layer and the POST check.
#[derive(Clone, Default)]
pub struct Origins(Arc<List>);

#[derive(Default)]
struct List {
    any: bool,
    listed: Vec<String>,
    credentials: bool,
}

impl Origins {
    /// From flags that [`check`] accepted.
    pub fn new(origins: &[String], credentials: bool) -> Self {
        Self(Arc::new(List {
            any: origins.iter().any(|o| o == "*"),
            listed: origins
                .iter()
                .filter(|o| *o != "*")
                .map(|o| o.to_ascii_lowercase())
                .collect(),
            credentials,
        }))
    }

    /// The layer that answers preflights and adds the CORS headers; `None` when no origin is
    /// listed.
    pub fn layer(&self) -> Option<CorsLayer> {
        let list = &self.0;
        if !list.any && list.listed.is_empty() {
            return None;
        }
        let allow = if list.any {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(list.listed.iter().filter_map(|o| o.parse().ok()))
        };
        Some(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    HeaderName::from_static("last-event-id"),
                ])
                .expose_headers([header::RETRY_AFTER, header::WWW_AUTHENTICATE])
                .allow_credentials(list.credentials)
                .max_age(std::time::Duration::from_secs(600)),
        )
    }

    /// Refuses a browser's POST from a page of another origin that is not listed. Requests
    /// without an `Origin` (curl, servers) pass. `authority` is the request's own (HTTP/2
    /// sends `:authority` rather than `Host`).
    pub fn check_post(&self, headers: &HeaderMap, authority: Option<&str>) -> Result<(), String> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        // Set by the browser, never by a page; `trunk serve`'s proxy forwards it.
        if headers
            .get("sec-fetch-site")
            .is_some_and(|v| v == "same-origin")
        {
            return Ok(());
        }
        let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
        let list = &self.0;
        if list.any || list.listed.contains(&origin) {
            return Ok(());
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(authority)
            .map(str::to_ascii_lowercase);
        let authority = origin.split_once("://").map(|(_, rest)| rest);
        if host.is_some() && authority == host.as_deref() {
            return Ok(());
        }
        let shown: String = origin.chars().take(100).collect();
        Err(format!(
            "a page from {shown} may not post here; the server lists the origins it allows \
             with --cors-origin"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked() {
        assert!(check(&[], false).is_ok());
        assert!(check(&["*".into()], false).is_ok());
        assert!(
            check(
                &["http://localhost:8080".into(), "https://a.example".into()],
                true
            )
            .is_ok()
        );
        assert!(
            check(&["*".into()], true)
                .unwrap_err()
                .contains("cannot be used")
        );
        assert!(check(&["*".into(), "https://a.example".into()], false).is_err());
        assert!(check(&[], true).is_err());
        for bad in [
            "a.example",
            "https://a.example/path",
            "ftp://a.example",
            "https://",
        ] {
            assert!(check(&[bad.into()], false).is_err(), "{bad}");
        }
    }

    fn post(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cross_origin_posts_need_a_listed_origin() {
        let none = Origins::new(&[], false);
        assert!(none.check_post(&post(&[]), None).is_ok());
        let same = post(&[
            ("origin", "http://localhost:3000"),
            ("host", "localhost:3000"),
        ]);
        assert!(none.check_post(&same, None).is_ok());
        // HTTP/2: no Host header, the request's authority instead.
        let h2 = post(&[("origin", "https://localhost:3443")]);
        assert!(none.check_post(&h2, Some("localhost:3443")).is_ok());
        assert!(none.check_post(&h2, Some("other:3443")).is_err());
        let evil = post(&[
            ("origin", "https://evil.example"),
            ("host", "localhost:3000"),
        ]);
        assert!(
            none.check_post(&evil, None)
                .unwrap_err()
                .contains("evil.example")
        );
        let proxied = post(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:3000"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(none.check_post(&proxied, None).is_ok());
        let listed = Origins::new(&["https://Evil.example".into()], false);
        assert!(listed.check_post(&evil, None).is_ok());
        assert!(
            Origins::new(&["*".into()], false)
                .check_post(&evil, None)
                .is_ok()
        );
    }
}
