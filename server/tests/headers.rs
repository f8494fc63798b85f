//! The web UI's security headers, and what the server keeps to itself.

mod common;

use common::{client, spawn};

/// trunk's loader, as `trunk build` injects it: an inline module script.
const LOADER: &str = "\nimport init from '/app-0123456789abcdef.js';\nawait init('/app-0123456789abcdef_bg.wasm');\n";
/// `printf "$LOADER" | sha256sum | xxd -r -p | base64`
const LOADER_HASH: &str = "'sha256-GA/s1Xk/VZ3hun94YbQ2WFWbC8Mykw4Q2ekaZW5zzvE='";

fn script_src(csp: &str) -> &str {
    csp.split(';')
        .map(str::trim)
        .find_map(|d| d.strip_prefix("script-src "))
        .unwrap_or_else(|| panic!("no script-src in {csp}"))
}

fn assert_ui_headers(response: &reqwest::Response) -> String {
    let h = response.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    let csp = h["content-security-policy"].to_str().unwrap().to_owned();
    for directive in [
        "default-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ] {
        assert!(
            csp.split("; ").any(|d| d == directive),
            "{directive} in {csp}"
        );
    }
    assert!(
        script_src(&csp).starts_with("'self' 'wasm-unsafe-eval'"),
        "{csp}"
    );
    csp
}

#[tokio::test]
async fn web_ui_gets_security_headers_and_api_does_not() {
    let dist = tempfile::tempdir().unwrap();
    let html = format!(
        "<!doctype html><html><head><link rel=\"modulepreload\" href=\"/app-0123456789abcdef.js\">\
         <script src=\"/other.js\"></script></head><body><script type=\"module\">{LOADER}</script></body></html>"
    );
    std::fs::write(dist.path().join("index.html"), html).unwrap();
    std::fs::write(dist.path().join("app.css"), "body {}").unwrap();
    let server = spawn(&["--static-dir", dist.path().to_str().unwrap()]).await;

    for path in ["/", "/index.html", "/a/client/route", "/app.css"] {
        let response = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let csp = assert_ui_headers(&response);
        // The inline loader is allowed by its hash, and nothing else inline is.
        assert_eq!(
            script_src(&csp),
            format!("'self' 'wasm-unsafe-eval' {LOADER_HASH}"),
            "{path}"
        );
    }

    // API answers (streams, POSTs, ops, API 404s) carry none of them.
    let stream = client()
        .get(server.url("/v2/sse?username=demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let post = server.post("v2", "demo", "hi").await;
    assert_eq!(post.status(), 200);
    let mut api = vec![stream, post];
    for path in ["/healthz", "/readyz", "/metrics", "/v2/nothing-here"] {
        api.push(client().get(server.url(path)).send().await.unwrap());
    }
    for response in &api {
        let h = response.headers();
        for name in [
            "content-security-policy",
            "x-frame-options",
            "x-content-type-options",
        ] {
            assert!(!h.contains_key(name), "{name} on {}", response.url());
        }
    }
    drop(api);
    server.stop().await;
}

#[tokio::test]
async fn missing_web_ui_answers_without_the_path() {
    // `spawn` gives `--static-dir /nonexistent`.
    let server = spawn(&[]).await;
    for path in ["/", "/favicon.svg"] {
        let response = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404);
        assert_ui_headers(&response);
        let body = response.text().await.unwrap();
        assert_eq!(body, "the web UI is not built on this server\n");
        assert!(!body.contains("nonexistent"), "{body}");
    }
    server.stop().await;
}

/// With Kafka down, `/readyz` and a v3 POST say so without the broker's address or
/// librdkafka's error text; those go to the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_failures_are_reported_without_details() {
    let brokers = "127.0.0.1:1";
    let server = spawn(&["--kafka-brokers", brokers, "--kafka-timeout", "500ms"]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let readiness = loop {
        let response = client().get(server.url("/readyz")).send().await.unwrap();
        assert_eq!(response.status(), 503);
        let body: wire::Readiness = response.json().await.unwrap();
        assert!(!body.ready);
        if body.reason != "kafka: connecting" {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "{body:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(readiness.reason, "kafka: unreachable");

    let response = server.post("v3", "demo", "nobody home").await;
    assert_eq!(response.status(), 503);
    let reason = response.text().await.unwrap();
    assert!(
        reason == "kafka is unavailable\n"
            || reason == "kafka is unavailable: no acknowledgement in time\n",
        "{reason:?}"
    );
    assert!(!reason.contains(brokers), "{reason:?}");
    server.stop().await;
}
