//! Bad input gets a 4xx with a one-line reason; limits answer 429/503; nothing panics.

mod common;

use common::{client, spawn};

async fn expect(response: reqwest::Response, status: u16, reason: &str) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let body = response.text().await.unwrap();
    assert_eq!(body.matches('\n').count(), 1, "one line: {body:?}");
    assert!(body.contains(reason), "{body:?} should mention {reason:?}");
}

#[tokio::test]
async fn bad_usernames_are_400() {
    let server = spawn(&[]).await;
    for version in ["v1", "v2", "v3"] {
        let url = server.url(&format!("/{version}/sse"));
        expect(client().get(&url).send().await.unwrap(), 400, "missing").await;
        let cases = [
            ("", "missing"),
            (&*"a".repeat(65), "longer than 64"),
            ("a\u{1}b", "control"),
            ("a:b", "':'"),
            ("a\u{202E}b", "invisible or formatting character (U+202E)"),
            ("a\u{200B}b", "invisible or formatting character (U+200B)"),
            ("a\u{A0}b", "invisible or formatting character (U+00A0)"),
        ];
        for (name, reason) in cases {
            let response = client()
                .get(&url)
                .query(&[("username", name)])
                .send()
                .await
                .unwrap();
            expect(response, 400, reason).await;
        }
    }
    expect(server.post("v2", "a:b", "hi").await, 400, "':'").await;
    // Invalid UTF-8 is refused, not decoded to U+FFFD (which made %FF and %FE one user).
    for (version, method, query, key) in [
        ("v1", "GET", "username=%FF", "username"),
        ("v2", "GET", "username=%FE", "username"),
        ("v3", "GET", "username=demo&lastEventId=%C3", "lastEventId"),
        ("v2", "POST", "username=%FF", "username"),
    ] {
        let path = if method == "GET" { "sse" } else { "message" };
        let url = server.url(&format!("/{version}/{path}?{query}"));
        let request = if method == "GET" {
            client().get(&url)
        } else {
            client().post(&url).body("hi")
        };
        let reason = format!("query parameter `{key}` is not valid UTF-8");
        expect(request.send().await.unwrap(), 400, &reason).await;
    }
    let response = client()
        .get(server.url("/v2/sse?username=%ZZ&username=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn bodies() {
    let server = spawn(&[]).await;
    expect(
        server.post("v2", "demo", vec![b'a'; 100 * 1024]).await,
        413,
        "65536 bytes",
    )
    .await;
    assert_eq!(
        server
            .post("v2", "demo", vec![b'a'; 64 * 1024])
            .await
            .status(),
        200
    );
    expect(server.post("v2", "demo", "").await, 400, "empty").await;
    expect(
        server.post("v2", "demo", vec![0xff, 0xfe]).await,
        400,
        "UTF-8",
    )
    .await;
    // A body without Content-Length is cut off at the limit too.
    let chunks =
        futures_util::stream::iter((0..40).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 4096])));
    let response = client()
        .post(server.url("/v2/message?username=demo"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    expect(response, 413, "larger").await;
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let server = spawn(&[]).await;
    expect(
        client().get(server.url("/v2/nope")).send().await.unwrap(),
        404,
        "no such endpoint",
    )
    .await;
    expect(
        client().get(server.url("/v4/sse")).send().await.unwrap(),
        404,
        "not built",
    )
    .await;
    expect(
        client()
            .delete(server.url("/v2/sse?username=a"))
            .send()
            .await
            .unwrap(),
        405,
        "not allowed",
    )
    .await;
    expect(
        client()
            .get(server.url("/v2/message?username=a"))
            .send()
            .await
            .unwrap(),
        405,
        "not allowed",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn stream_limits() {
    let server = spawn(&["--max-streams-per-user", "2", "--max-streams", "3"]).await;
    let _a = server.open("v2", "demo").await;
    let _b = server.open("v2", "demo").await;
    let third = client()
        .get(server.url("/v2/sse?username=demo"))
        .send()
        .await
        .unwrap();
    expect(third, 429, "limit 2").await;
    let _c = server.open("v1", "other").await;
    let full = client()
        .get(server.url("/v2/sse?username=else"))
        .send()
        .await
        .unwrap();
    expect(full, 503, "limit of 3 open streams").await;
    let limited = |limit: &str| format!("ssepush_limited_total{{limit=\"{limit}\"}}");
    assert_eq!(server.metric(&limited("streams_per_user")).await, 1);
    assert_eq!(server.metric(&limited("streams")).await, 1);
    drop(_c);
    // The slot comes back once the closed stream is noticed.
    let mut reopened = None;
    for _ in 0..50 {
        let r = client()
            .get(server.url("/v2/sse?username=else"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            reopened = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(reopened.is_some());
    server.stop().await;
}
