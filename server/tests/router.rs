//! Every 4xx and 5xx the router answers, called directly with `oneshot`: no socket, no
//! broker. Each is a status, `text/plain`, and one line that says why.

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
    response::Response,
};
use http_body_util::BodyExt;
use server::{AppState, Config, api, client::ClientAddr};
use std::convert::Infallible;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

fn state(args: &[&str]) -> AppState {
    let argv = [
        "ssepush",
        "--static-dir",
        "/nonexistent",
        "--kafka-brokers",
        "",
    ]
    .into_iter()
    .chain(args.iter().copied());
    AppState::new(Config::from_args(argv).unwrap(), CancellationToken::new()).unwrap()
}

fn request(method: Method, uri: &str, body: impl Into<Body>) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .body(body.into())
        .unwrap();
    request
        .extensions_mut()
        .insert(ClientAddr("192.0.2.1:40000".parse().unwrap()));
    request
}

fn get(uri: &str) -> Request<Body> {
    request(Method::GET, uri, Body::empty())
}

fn post(uri: &str, body: impl Into<Body>) -> Request<Body> {
    request(Method::POST, uri, body)
}

async fn send(router: &Router, request: Request<Body>) -> Response {
    router.clone().oneshot(request).await.unwrap()
}

/// Asserts the status, the plain-text type and a one-line reason containing `reason`.
async fn refused(response: Response, status: StatusCode, reason: &str) -> Response {
    assert_eq!(response.status(), status);
    let (parts, body) = response.into_parts();
    assert_eq!(
        parts.headers[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    let text = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
    assert!(text.contains(reason), "{text:?} should say {reason:?}");
    Response::from_parts(parts, Body::empty())
}

#[tokio::test]
async fn bad_requests_are_400() {
    let router = api::router(state(&[]));
    for uri in [
        "/v1/sse",
        "/v2/sse?username=",
        "/v3/sse?username=a%3Ab",
        "/v2/sse?username=%FF",
        "/v2/sse?username=a&username=b",
    ] {
        let response = send(&router, get(uri)).await;
        refused(response, StatusCode::BAD_REQUEST, "").await;
    }
    let response = send(&router, post("/v2/message?username=a", "")).await;
    refused(response, StatusCode::BAD_REQUEST, "empty").await;
    let response = send(&router, post("/v2/message?username=a", vec![0xff, 0xfe])).await;
    refused(response, StatusCode::BAD_REQUEST, "UTF-8").await;
    let response = send(&router, post("/v2/message?username=a&wait=x", "m")).await;
    refused(response, StatusCode::BAD_REQUEST, "wait").await;
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let router = api::router(state(&[]));
    for uri in ["/v2/nothing", "/v1", "/healthz/x", "/metrics/x"] {
        let response = send(&router, get(uri)).await;
        refused(response, StatusCode::NOT_FOUND, "no such endpoint").await;
    }
    // Outside the API, paths belong to the web UI, which this server has not got.
    let response = send(&router, get("/v4")).await;
    refused(response, StatusCode::NOT_FOUND, "the web UI is not built").await;
    for (method, uri) in [
        (Method::POST, "/v2/sse?username=a"),
        (Method::GET, "/v2/message?username=a"),
        (Method::DELETE, "/healthz"),
    ] {
        let response = send(&router, request(method, uri, Body::empty())).await;
        refused(response, StatusCode::METHOD_NOT_ALLOWED, "method").await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_that_never_arrives_is_408() {
    let router = api::router(state(&["--body-timeout", "1s"]));
    let never = futures_util::stream::pending::<Result<Vec<u8>, Infallible>>();
    let response = send(
        &router,
        post("/v2/message?username=a", Body::from_stream(never)),
    )
    .await;
    refused(response, StatusCode::REQUEST_TIMEOUT, "within 1s").await;
}

#[tokio::test]
async fn large_bodies_and_events_are_413() {
    let router = api::router(state(&["--max-body", "1000"]));
    let response = send(&router, post("/v2/message?username=a", vec![b'a'; 1001])).await;
    refused(response, StatusCode::PAYLOAD_TOO_LARGE, "1000 bytes").await;
    let router = api::router(state(&["--max-frame-bytes", "1KiB"]));
    for version in ["v2", "v3"] {
        let uri = format!("/{version}/message?username=a");
        let response = send(&router, post(&uri, vec![b'\n'; 200])).await;
        refused(response, StatusCode::PAYLOAD_TOO_LARGE, "as an event").await;
    }
}

#[tokio::test]
async fn limits_are_429_with_retry_after_where_a_wait_helps() {
    let router = api::router(state(&[
        "--max-streams-per-user",
        "1",
        "--max-streams-per-client",
        "2",
        "--publish-rate",
        "1",
        "--publish-burst",
        "1",
    ]));
    let _first = send(&router, get("/v2/sse?username=u")).await;
    let response = send(&router, get("/v2/sse?username=u")).await;
    refused(response, StatusCode::TOO_MANY_REQUESTS, "this user").await;
    let _second = send(&router, get("/v2/sse?username=w")).await;
    let response = send(&router, get("/v1/sse?username=x")).await;
    let response = refused(response, StatusCode::TOO_MANY_REQUESTS, "this client").await;
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    assert_eq!(
        send(&router, post("/v2/message?username=u", "one"))
            .await
            .status(),
        StatusCode::OK
    );
    let response = send(&router, post("/v2/message?username=u", "two")).await;
    let response = refused(response, StatusCode::TOO_MANY_REQUESTS, "publish limit").await;
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
}

#[tokio::test]
async fn unavailable_is_503() {
    let state = state(&["--max-streams", "1"]);
    let router = api::router(state.clone());
    let _held = send(&router, get("/v2/sse?username=a")).await;
    let response = send(&router, get("/v3/sse?username=b")).await;
    refused(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "limit of 1 open streams",
    )
    .await;
    let response = send(&router, post("/v3/message?username=a", "m")).await;
    refused(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "kafka is switched off",
    )
    .await;
    state.shutdown.cancel();
    for hub in state.hubs() {
        hub.close_all();
    }
    drop(_held);
    let response = send(&router, get("/v2/sse?username=c")).await;
    refused(response, StatusCode::SERVICE_UNAVAILABLE, "shutting down").await;
    let response = send(&router, get("/readyz")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}
