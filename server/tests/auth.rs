//! Authorization switched on: who may read and publish, the answers to bad tokens, expiry,
//! the operator's endpoints, other keys than a secret, and CORS. Tokens are made by the
//! `ssepush token` subcommand, bad ones by hand.

mod common;

use common::{client, events, next, spawn};
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{StatusCode, header};
use serde_json::json;
use std::{path::Path, process::Command, time::Duration};

const SECRET: &str = "a-secret-of-at-least-32-bytes-for-tests";
const BIN: &str = env!("CARGO_BIN_EXE_ssepush");

/// `ssepush token` with `args`.
fn mint(args: &[&str]) -> String {
    token(&[args, &["--auth-secret", SECRET]].concat())
}

/// `ssepush token` with `args` only.
fn token(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("token")
        .args(args)
        .env_remove("AUTH_SECRET")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn hs(alg: Algorithm, secret: &str, claims: serde_json::Value) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap()
}

async fn auth_server(more: &[&str]) -> common::TestServer {
    let mut args = vec!["--auth-secret", SECRET];
    args.extend_from_slice(more);
    spawn(&args).await
}

/// GET `path` with an optional bearer token: status, `WWW-Authenticate`, body (the first line
/// of a stream's).
async fn get(
    server: &common::TestServer,
    path: &str,
    bearer: Option<&str>,
) -> (StatusCode, String, String) {
    let mut request = client().get(server.url(path));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = if status == 200 && path.contains("/sse") {
        String::new()
    } else {
        response.text().await.unwrap()
    };
    (status, challenge, body)
}

/// A v2 stream of `user` opened as a browser's `EventSource` does, with the token in the
/// query, resuming after `last` if given.
async fn stream_by_query(
    server: &common::TestServer,
    user: &str,
    token: &str,
    last: Option<&str>,
) -> common::Events {
    let mut request = client()
        .get(server.url("/v2/sse"))
        .query(&[("username", user), ("access_token", token)]);
    if let Some(id) = last {
        request = request.header("last-event-id", id);
    }
    events(request.send().await.unwrap())
}

async fn post(
    server: &common::TestServer,
    user: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut request = client()
        .post(server.url("/v2/message"))
        .query(&[("username", user)])
        .body("hi");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn streams_need_a_token_for_their_user() {
    let server = auth_server(&[]).await;
    let ann = mint(&["--user", "ann"]);
    let bob = mint(&["--user", "bob"]);
    let watcher = mint(&["--subscribe", "ann", "--subscribe", "cy"]);
    let anyone = mint(&["--subscribe", "*"]);
    for version in ["v1", "v2", "v3"] {
        let path = format!("/{version}/sse?username=ann");
        let (status, challenge, body) = get(&server, &path, None).await;
        assert_eq!(status, 401, "{version}");
        assert_eq!(challenge, r#"Bearer realm="ssepush""#);
        assert!(body.starts_with("a token is required"), "{body}");
        let (status, challenge, body) = get(&server, &path, Some(&bob)).await;
        assert_eq!(status, 403, "{version}");
        assert!(challenge.contains("insufficient_scope"));
        assert_eq!(
            body,
            "this token may not read the streams of user \"ann\"\n"
        );
        for token in [&ann, &watcher, &anyone] {
            assert_eq!(get(&server, &path, Some(token)).await.0, 200, "{version}");
        }
    }
    // The query parameter (a browser's EventSource) and the cookie work like the header.
    let mut by_query = stream_by_query(&server, "ann", &ann, None).await;
    let by_cookie = client()
        .get(server.url("/v2/sse?username=ann"))
        .header(header::COOKIE, format!("theme=dark; ssepush_token={ann}"))
        .send()
        .await
        .unwrap();
    let mut by_cookie = events(by_cookie);
    let publisher = mint(&["--publish", "ann"]);
    let (status, _) = post(
        &server,
        "ann",
        &[("authorization", &format!("Bearer {publisher}"))],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(next(&mut by_query, 5).await.data, "hi");
    assert_eq!(next(&mut by_cookie, 5).await.data, "hi");
    server.stop().await;
}

#[tokio::test]
async fn every_bad_token_gets_the_same_401_and_the_reason_only_in_the_debug_log() {
    let server = common::TestServer::from(
        testkit::TestServer::start_logging(
            BIN,
            [
                "--static-dir",
                "/nonexistent",
                "--kafka-brokers",
                "",
                "--auth-secret",
                SECRET,
            ],
            Some("info,server=debug,tower_http=debug"),
        )
        .await,
    );
    let t = now();
    let ok = json!({"sub": "ann", "exp": t + 600});
    let es_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let es_token = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &ok,
        &EncodingKey::from_ec_pem(es_key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let unsigned = {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
        let head = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = B64.encode(ok.to_string());
        format!("{head}.{body}.")
    };
    let good = hs(Algorithm::HS256, SECRET, ok.clone());
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
        parts[1] = B64.encode(json!({"sub": "ann", "exp": t + 600, "subscribe": "*"}).to_string());
        parts.join(".")
    };
    let bad: Vec<(&str, String)> = vec![
        (
            "another secret",
            hs(
                Algorithm::HS256,
                "another-secret-of-32-bytes-or-more!!",
                ok.clone(),
            ),
        ),
        ("tampered claims", tampered),
        ("HS384", hs(Algorithm::HS384, SECRET, ok.clone())),
        ("ES256", es_token),
        ("alg none", unsigned),
        (
            "expired",
            hs(
                Algorithm::HS256,
                SECRET,
                json!({"sub": "ann", "exp": t - 5}),
            ),
        ),
        (
            "not yet valid",
            hs(
                Algorithm::HS256,
                SECRET,
                json!({"sub": "ann", "exp": t + 600, "nbf": t + 300}),
            ),
        ),
        (
            "no exp",
            hs(Algorithm::HS256, SECRET, json!({"sub": "ann"})),
        ),
        ("malformed", "not-a-token".into()),
        ("three junk parts", "a.b.c".into()),
    ];
    let mut bodies = std::collections::BTreeSet::new();
    for (what, token) in &bad {
        let (status, challenge, body) = get(&server, "/v2/sse?username=ann", Some(token)).await;
        assert_eq!(status, 401, "{what}");
        assert_eq!(
            challenge, r#"Bearer realm="ssepush", error="invalid_token""#,
            "{what}"
        );
        bodies.insert(body);
        let query = format!("/v2/sse?username=ann&access_token={token}");
        assert_eq!(
            get(&server, &query, None).await.0,
            401,
            "{what} in the query"
        );
    }
    let basic = client()
        .get(server.url("/v2/sse?username=ann"))
        .basic_auth("ann", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    bodies.insert(basic.text().await.unwrap());
    assert_eq!(bodies.len(), 1, "one body for all: {bodies:?}");
    assert_eq!(bodies.first().unwrap(), "the token is not valid\n");
    // The good one still works, through the query too.
    let query = format!("/v2/sse?username=ann&access_token={good}");
    assert_eq!(get(&server, &query, None).await.0, 200);
    let log = server.log_text();
    for reason in [
        "ExpiredSignature",
        "ImmatureSignature",
        "InvalidSignature",
        "InvalidAlgorithm",
    ] {
        assert!(log.contains(reason), "the debug log names {reason}");
    }
    assert!(
        log.contains("access_token=REDACTED"),
        "the request log shows the query"
    );
    for (what, token) in &bad {
        let signature = token.rsplit('.').next().unwrap();
        if signature.len() > 8 {
            assert!(!log.contains(signature), "{what}'s token is in the log");
        }
    }
    assert!(
        !log.contains(good.rsplit('.').next().unwrap()),
        "a token is in the log"
    );
    server.stop().await;
}

#[tokio::test]
async fn publishing_needs_a_publish_claim_in_the_header() {
    let server = auth_server(&[]).await;
    let bearer = |token: &str| format!("Bearer {token}");
    let (status, body) = post(&server, "ann", &[]).await;
    assert_eq!(
        (status.as_u16(), body.starts_with("a token is required")),
        (401, true)
    );
    let reader = mint(&["--user", "ann"]);
    let (status, body) = post(&server, "ann", &[("authorization", &bearer(&reader))]).await;
    assert_eq!(status, 403);
    assert_eq!(body, "this token may not publish to user \"ann\"\n");
    let for_bob = mint(&["--publish", "bob"]);
    assert_eq!(
        post(&server, "ann", &[("authorization", &bearer(&for_bob))])
            .await
            .0,
        403
    );
    assert_eq!(
        post(&server, "bob", &[("authorization", &bearer(&for_bob))])
            .await
            .0,
        200
    );
    let everyone = mint(&["--publish", "*"]);
    assert_eq!(
        post(&server, "ann", &[("authorization", &bearer(&everyone))])
            .await
            .0,
        200
    );
    // A cookie never publishes: any site's form could send it.
    let cookie = format!("ssepush_token={everyone}");
    assert_eq!(post(&server, "ann", &[("cookie", &cookie)]).await.0, 401);
    let bad = hs(
        Algorithm::HS256,
        SECRET,
        json!({"publish": "*", "exp": now() - 1}),
    );
    let (status, body) = post(&server, "ann", &[("authorization", &bearer(&bad))]).await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (401, "the token is not valid\n")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires_and_resumes_with_a_new_one() {
    let server = auth_server(&["--token-expiry-notice", "2s"]).await;
    let publisher = format!("Bearer {}", mint(&["--publish", "*"]));
    let short = mint(&["--user", "ann", "--ttl", "4s"]);
    let mut stream = stream_by_query(&server, "ann", &short, None).await;
    // v1's ticker ends the same way.
    let v1 = client()
        .get(server.url("/v1/sse?username=ann"))
        .bearer_auth(&short)
        .send()
        .await
        .unwrap();
    let v1 = events(v1);
    assert_eq!(
        post(&server, "ann", &[("authorization", &publisher)])
            .await
            .0,
        200
    );
    let first = next(&mut stream, 5).await;
    assert_eq!(first.data, "hi");
    let notice = next(&mut stream, 10).await;
    assert_eq!(notice.event, wire::TOKEN_EXPIRING_EVENT);
    let left: u64 = notice.data.parse().unwrap();
    assert!(left <= 2, "{left}");
    // Then the stream ends, cleanly.
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
    let v1_events = tokio::time::timeout(Duration::from_secs(10), v1.collect::<Vec<_>>())
        .await
        .expect("v1's stream ends too");
    let kinds: Vec<&str> = v1_events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        ["message", wire::TOKEN_EXPIRING_EVENT],
        "{v1_events:?}"
    );
    // Sent while the client has no stream; it resumes with a new token and misses nothing.
    assert_eq!(
        post(&server, "ann", &[("authorization", &publisher)])
            .await
            .0,
        200
    );
    let fresh = mint(&["--user", "ann"]);
    let mut resumed = stream_by_query(&server, "ann", &fresh, Some(&first.id)).await;
    let missed = next(&mut resumed, 5).await;
    assert_eq!(
        (missed.event.as_str(), missed.data.as_str()),
        ("message", "hi")
    );
    assert_ne!(missed.id, first.id);
    let operator = publisher.strip_prefix("Bearer ");
    let metrics = common::metrics_text(&server.base, operator).await;
    assert!(
        metrics.contains(r#"ssepush_streams_closed_total{api="v2",reason="token_expired"} 1"#)
            && metrics
                .contains(r#"ssepush_streams_closed_total{api="v1",reason="token_expired"} 1"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_need_an_operator_token_or_their_own_address() {
    let server = auth_server(&[]).await;
    assert_eq!(get(&server, "/metrics", None).await.0, 401);
    let reader = mint(&["--user", "ann", "--publish", "ann"]);
    assert_eq!(get(&server, "/metrics", Some(&reader)).await.0, 403);
    let operator = mint(&["--publish", "*"]);
    let (status, _, body) = get(&server, "/metrics", Some(&operator)).await;
    assert_eq!(status, 200);
    assert!(body.contains("ssepush_streams_open"));
    // Health and the page's question stay open.
    assert_eq!(get(&server, "/healthz", None).await.0, 200);
    let (_, _, info) = get(&server, "/auth", None).await;
    assert_eq!(
        serde_json::from_str::<wire::AuthInfo>(&info).unwrap(),
        wire::AuthInfo { required: true }
    );
    server.stop().await;

    let server = auth_server(&["--metrics-addr", "127.0.0.1:0"]).await;
    assert_eq!(get(&server, "/metrics", Some(&operator)).await.0, 404);
    let addr = server.logged_addr("serving metrics");
    let text = client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), 200);
    assert!(text.text().await.unwrap().contains("ssepush_streams_open"));
    server.stop().await;

    let open = spawn(&[]).await;
    let (_, _, info) = get(&open, "/auth", None).await;
    assert_eq!(
        serde_json::from_str::<wire::AuthInfo>(&info).unwrap(),
        wire::AuthInfo { required: false }
    );
    assert_eq!(get(&open, "/metrics", None).await.0, 200);
    open.stop().await;
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// ES256 and RS256: the server holds only the public key, `ssepush token` signs with the
/// private one, and the key's type picks the algorithm.
#[tokio::test]
async fn public_keys_verify_es256_and_rs256() {
    let dir = tempfile::tempdir().unwrap();
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ec_private = write(dir.path(), "ec.pem", &ec.serialize_pem());
    let ec_public = write(dir.path(), "ec.pub.pem", &ec.public_key_pem());
    let rsa_private = dir.path().join("rsa.pem").to_str().unwrap().to_owned();
    let rsa_public = dir.path().join("rsa.pub.pem").to_str().unwrap().to_owned();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &rsa_private,
    ]);
    openssl(&["pkey", "-in", &rsa_private, "-pubout", "-out", &rsa_public]);
    for (public, private, other) in [
        (&ec_public, &ec_private, &rsa_private),
        (&rsa_public, &rsa_private, &ec_private),
    ] {
        let server = spawn(&["--auth-public-key", public]).await;
        let sign = |key: &str| token(&["--user", "ann", "--auth-private-key", key]);
        let path = "/v2/sse?username=ann";
        assert_eq!(
            get(&server, path, Some(&sign(private))).await.0,
            200,
            "{public}"
        );
        assert_eq!(
            get(&server, path, Some(&sign(other))).await.0,
            401,
            "{public}"
        );
        let hs256 = hs(
            Algorithm::HS256,
            SECRET,
            json!({"sub": "ann", "exp": now() + 60}),
        );
        assert_eq!(get(&server, path, Some(&hs256)).await.0, 401, "{public}");
        server.stop().await;
    }
}

async fn preflight(server: &common::TestServer, origin: &str) -> reqwest::Response {
    client()
        .request(
            reqwest::Method::OPTIONS,
            server.url("/v2/message?username=ann"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn other_origins_are_refused_unless_listed() {
    const APP: &str = "http://app.example:8080";
    let server = auth_server(&[]).await;
    let publisher = format!("Bearer {}", mint(&["--publish", "*"]));
    let response = preflight(&server, APP).await;
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let (status, body) = post(
        &server,
        "ann",
        &[("origin", APP), ("authorization", &publisher)],
    )
    .await;
    assert_eq!(status, 403);
    assert!(body.contains("--cors-origin"), "{body}");
    // The same page from the server's own origin is fine.
    let own = server.base.clone();
    assert_eq!(
        post(
            &server,
            "ann",
            &[("origin", &own), ("authorization", &publisher)]
        )
        .await
        .0,
        200
    );
    server.stop().await;

    let server = auth_server(&["--cors-origin", APP]).await;
    let response = preflight(&server, APP).await;
    assert_eq!(response.status(), 200);
    let h = response.headers();
    assert_eq!(h["access-control-allow-origin"], APP);
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let response = client()
        .post(server.url("/v2/message?username=ann"))
        .header("origin", APP)
        .header("authorization", &publisher)
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], APP);
    // Streams answered by the HTTP/1.1 fast path carry the header too.
    let ann = mint(&["--user", "ann"]);
    let stream = client()
        .get(server.url("/v2/sse?username=ann"))
        .header("origin", APP)
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["access-control-allow-origin"], APP);
    // An unlisted one is still refused.
    let evil = preflight(&server, "https://evil.example").await;
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    let (status, _) = post(
        &server,
        "ann",
        &[
            ("origin", "https://evil.example"),
            ("authorization", &publisher),
        ],
    )
    .await;
    assert_eq!(status, 403);
    server.stop().await;
}

/// Settings that cannot be honoured stop the server at start-up, with the reason.
#[test]
fn unsafe_settings_are_refused_at_start_up() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--cors-origin", "*", "--cors-credentials"],
            "--cors-credentials cannot be used with --cors-origin `*`",
        ),
        (
            &["--auth-secret", "short"],
            "--auth-secret must be at least 32 bytes",
        ),
        (&["--cors-origin", "evil.example"], "is not an origin"),
        (
            &["--auth-public-key", "/nonexistent.pem", "--port", "0"],
            "cannot read /nonexistent.pem",
        ),
    ];
    for (args, reason) in cases {
        let out = Command::new(BIN)
            .args(["--kafka-brokers", ""])
            .args(*args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
    // `ssepush token` refuses a short secret too, and a token for nobody.
    let out = Command::new(BIN)
        .args(["token", "--user", "a", "--auth-secret", "short"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(BIN)
        .args(["token", "--auth-secret", SECRET])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs --user, --subscribe or --publish")
    );
}

/// The server remembers tokens it verified (a publisher sends the same one with every POST),
/// yet a remembered token is refused once it expires, like any other.
#[tokio::test]
async fn a_remembered_token_still_expires() {
    let server = auth_server(&[]).await;
    let short = format!("Bearer {}", mint(&["--publish", "*", "--ttl", "3s"]));
    for _ in 0..3 {
        let (status, _) = post(&server, "ann", &[("authorization", &short)]).await;
        assert_eq!(status, 200);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, body) = post(&server, "ann", &[("authorization", &short)]).await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (401, "the token is not valid\n")
    );
    server.stop().await;
}
