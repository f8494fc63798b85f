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
