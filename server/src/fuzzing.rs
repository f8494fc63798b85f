//! Thin wrappers that let the fuzz targets in `fuzz/` (a crate of its own, built by
//! cargo-fuzz) reach parsers that are private to the server. Not an API: nothing else may use
//! them.

use axum::http::{HeaderMap, Request};

use crate::{api::params::StreamQuery, error::AppError, hub::LastSeen};

/// A request head the fast path takes for itself.
#[derive(Debug)]
pub struct StreamHead {
    /// Bytes of the request head, the blank line included.
    pub len: usize,
    pub request: Request<()>,
    /// The client asked to close the connection after this response.
    pub close: bool,
}

/// The fast path's request-head parser: `Some` when it answers the request itself, `None`
/// when it leaves the connection to hyper.
pub fn parse_stream_request(buf: &[u8]) -> Option<StreamHead> {
    crate::serve::parse_stream_request(buf).map(|r| StreamHead {
        len: r.len,
        request: r.request.map(drop),
        close: r.close,
    })
}

/// What the stream and message handlers read from a request's query and headers.
#[derive(Debug)]
pub struct Query {
    pub username: Result<String, AppError>,
    pub wait_delivered: Result<bool, AppError>,
    pub last_seen: LastSeen,
}

/// `StreamQuery::parse`, then each question the handlers ask of it.
pub fn stream_query(query: &str, headers: &HeaderMap) -> Result<Query, AppError> {
    let q = StreamQuery::parse(query)?;
    Ok(Query {
        username: q.username().map(str::to_owned),
        wait_delivered: q.wait_delivered(),
        last_seen: q.last_seen(headers),
    })
}

/// Inputs the fuzz targets found, kept as tests so a stable `cargo test` catches them again.
#[cfg(test)]
mod tests {
    use super::*;
    use std::{fs, path::PathBuf};

    /// The committed inputs of a target: its seeds and regressions.
    fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut found = Vec::new();
        for kind in ["seeds", "regressions"] {
            let Ok(dir) = fs::read_dir(fuzz.join(kind).join(target)) else {
                continue;
            };
            for entry in dir {
                let path = entry.unwrap().path();
                found.push((path.clone(), fs::read(path).unwrap()));
            }
        }
        assert!(!found.is_empty(), "no inputs for {target}");
        found
    }

    #[test]
    fn committed_inputs_run_clean() {
        for (path, input) in inputs("stream_head") {
            if let Some(head) = parse_stream_request(&input) {
                assert!(head.len <= input.len(), "{path:?}");
            }
        }
        for (path, input) in inputs("query") {
            let mut parts = input.splitn(2, |&b| b == 0xFF);
            let query = String::from_utf8_lossy(parts.next().unwrap_or_default());
            let mut headers = HeaderMap::new();
            if let Some(v) = parts.next().and_then(|h| h.try_into().ok()) {
                headers.insert("last-event-id", v);
            }
            if let Ok(Query {
                username: Ok(name), ..
            }) = stream_query(&query, &headers)
            {
                assert!(wire::validate_username(&name).is_ok(), "{path:?}");
            }
        }
        for (path, input) in inputs("kafka_record") {
            if let [_, lo, hi, value @ ..] = &input[..] {
                let max = usize::from(u16::from_le_bytes([*lo, *hi]));
                if let Ok((user, message)) = crate::kafka::record::parse(Some(value), max) {
                    let encoded = crate::kafka::record::encode(user, message);
                    assert_eq!(encoded.as_bytes(), value, "{path:?}");
                }
            }
        }
    }

    /// `GET /v2/sse??u!s$…$#$ HTTP/1.1`: the fast path takes a target with a fragment and, like
    /// hyper for every other request, drops the fragment (found by stream_head, whose check
    /// expected the query to run to the end of the target).
    #[test]
    fn fragment_of_a_stream_target_is_dropped() {
        let input = include_bytes!("../../fuzz/regressions/stream_head/fragment_in_query");
        let head = parse_stream_request(input).unwrap();
        assert_eq!(head.len, input.len());
        assert_eq!(head.request.uri().path(), "/v2/sse");
        assert_eq!(
            head.request.uri().query(),
            Some("?u!s$$$$$$$$$$$$$$$$$$$$$$$")
        );
        let head = parse_stream_request(b"GET /v3/sse?username=a#b HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(head.request.uri().query(), Some("username=a"));
    }
}
