//! The fast path's request-head parser (`parse_stream_request` in `server/src/serve.rs`): no
//! panic; a head it takes is a complete plain `GET` of a stream path in HTTP/1.1, no longer
//! than the input, with no body, upgrade or `Expect`, exactly as httparse reads it.
//!
//! Input: the first bytes of a connection, as the server peeks them (at most 4096).
#![no_main]

use libfuzzer_sys::fuzz_target;
use server::fuzzing::parse_stream_request;

/// The paths the fast path answers (`STREAM_PATHS` in serve.rs).
const STREAM_PATHS: [&str; 3] = ["/v1/sse", "/v2/sse", "/v3/sse"];

fuzz_target!(|input: &[u8]| {
    let Some(head) = parse_stream_request(input) else {
        return;
    };
    assert!(head.len <= input.len());
    assert!(input[..head.len].ends_with(b"\n"));
    let request = &head.request;
    assert_eq!(request.method(), http::Method::GET);
    assert_eq!(request.version(), http::Version::HTTP_11);
    assert!(
        STREAM_PATHS.contains(&request.uri().path()),
        "{:?}",
        request.uri()
    );

    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    assert_eq!(req.parse(input), Ok(httparse::Status::Complete(head.len)));
    assert_eq!(req.method, Some("GET"));
    assert_eq!(req.version, Some(1));
    let target = req.path.unwrap();
    // http::Uri drops a fragment (not allowed in a request target, but sent by some
    // clients), as it does for the requests hyper reads.
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    assert_eq!(request.uri().path(), path);
    assert_eq!(request.uri().query(), query);

    assert_eq!(request.headers().len(), req.headers.len());
    let mut close = false;
    for h in req.headers.iter() {
        let values: Vec<_> = request.headers().get_all(h.name).iter().collect();
        assert!(values.iter().any(|v| v.as_bytes() == h.value), "{}", h.name);
        let name = h.name.to_ascii_lowercase();
        assert!(!["transfer-encoding", "upgrade", "expect"].contains(&name.as_str()));
        if name == "content-length" {
            assert_eq!(h.value, b"0");
        }
        if name == "connection" {
            let tokens = std::str::from_utf8(h.value).unwrap().split(',');
            close |= tokens
                .map(str::trim)
                .any(|t| t.eq_ignore_ascii_case("close"));
        }
    }
    assert_eq!(head.close, close);
});
