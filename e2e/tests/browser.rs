//! The built page against the real server, in headless Chromium.
//!
//! Needs `trunk build --release` first (dist/ at the workspace root, or `E2E_DIST`), and
//! chromium + chromedriver (`CHROMEDRIVER` overrides the driver's path). The server is the
//! `ssepush` binary, built by the test itself, as a child process. The screenshot lands in
//! `target/e2e/`; the server's log is kept and printed if the test fails.
//!
//! To cover another API version, add a step to [`scenario`] using the same helpers:
//! `page.open_and_connect(user, "v3")`, `publish(.., "v3", ..)`, `page.wait_for_text(..)`.

use std::ffi::OsStr;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator, wd::TimeoutConfiguration};
use futures_util::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use testkit::{Broker, TestServer};
use tokio::process::{Child, Command};

/// How long any single expectation may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(15);

/// Chromium flags: headless, and quiet on a closed network (no background fetches).
const CHROME_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1024,800",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// trunk's output, checked up front so a missing build fails with the fix in the message.
fn dist_dir() -> PathBuf {
    let dist =
        std::env::var_os("E2E_DIST").map_or_else(|| workspace_root().join("dist"), PathBuf::from);
    assert!(
        dist.join("index.html").is_file(),
        "{} is missing: build the UI first with `trunk build --release` at the workspace root \
         (or point E2E_DIST at a trunk dist directory)",
        dist.join("index.html").display()
    );
    dist
}

/// The real binary, with the built UI and the test broker; it can be stopped and started
/// again on the same address.
async fn start_server(dist: &Path, kafka: &str) -> TestServer {
    let group = format!("e2e-{}", std::process::id());
    let args: [&OsStr; 10] = [
        "--drain".as_ref(),
        "500ms".as_ref(),
        "--static-dir".as_ref(),
        dist.as_os_str(),
        "--kafka-brokers".as_ref(),
        kafka.as_ref(),
        "--kafka-group".as_ref(),
        group.as_ref(),
        "--kafka-session-timeout".as_ref(),
        "2s".as_ref(),
    ];
    TestServer::start(testkit::ssepush_binary(), args).await
}

/// chromedriver on a free port; killed when dropped.
struct Driver {
    _process: Child,
    url: String,
}

impl Driver {
    async fn start() -> Result<Self> {
        let binary = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let process = Command::new(&binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {binary} (install chromium-driver)"))?;
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(response) = http.get(format!("{url}/status")).send().await
                && response.status().is_success()
            {
                return Ok(Self {
                    _process: process,
                    url,
                });
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not answer on {url} within {PATIENCE:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new browser session with a fresh profile in `profile`.
    async fn session(&self, profile: &Path) -> Result<Client> {
        self.session_with(profile, &[]).await
    }

    /// [`Driver::session`] with more Chromium flags.
    async fn session_with(&self, profile: &Path, more: &[&str]) -> Result<Client> {
        let mut args: Vec<String> = CHROME_ARGS.iter().map(ToString::to_string).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(more.iter().map(ToString::to_string));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "args": args },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        Ok(ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await?)
    }
}

/// One browser tab showing the app.
struct Page<'a> {
    client: &'a Client,
    base: &'a str,
}

impl Page<'_> {
    /// Loads the app in the current tab and connects as `user` on `version`.
    async fn open_and_connect(&self, user: &str, version: &str) -> Result<()> {
        self.open_and_ask(user, version).await?;
        self.wait_state("live").await
    }

    /// Loads the app in the current tab and presses Connect as `user` on `version`, without
    /// waiting for the answer.
    async fn open_and_ask(&self, user: &str, version: &str) -> Result<()> {
        self.client.goto(&format!("{}/", self.base)).await?;
        let name = self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Id("username"))
            .await
            .with_context(|| format!("the app did not render at {}/", self.base))?;
        name.send_keys(user).await?;
        self.client
            .find(Locator::Id("version"))
            .await?
            .select_by_value(version)
            .await?;
        self.client
            .find(Locator::Id("connect"))
            .await?
            .click()
            .await?;
        Ok(())
    }

    /// Waits until the connection indicator says `state`.
    async fn wait_state(&self, state: &str) -> Result<()> {
        let script = format!(
            "return document.querySelector('#conn-state')?.dataset.state === {};",
            serde_json::to_string(state)?
        );
        self.wait_js(&format!("state {state:?}"), &script).await?;
        Ok(())
    }

    /// Runs `script` until it returns something other than `null`/`false`, and returns that.
    async fn wait_js(&self, what: &str, script: &str) -> Result<Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.client.execute(script, vec![]).await?;
            if !matches!(value, Value::Null | Value::Bool(false)) {
                return Ok(value);
            }
            if Instant::now() > deadline {
                let state = self
                    .client
                    .execute(
                        "return document.querySelector('#conn-state')?.dataset.state",
                        vec![],
                    )
                    .await
                    .unwrap_or_default();
                bail!("timed out waiting for {what} (connection state: {state})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until a message with exactly `text` is listed; returns its id.
    async fn wait_for_text(&self, text: &str) -> Result<String> {
        let script = format!(
            "const want = {};
             const li = [...document.querySelectorAll('#messages li.message')]
               .find(li => li.querySelector('.text').textContent === want);
             return li ? li.dataset.id : null;",
            serde_json::to_string(text)?
        );
        let id = self.wait_js(&format!("message {text:?}"), &script).await?;
        id.as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("message without id: {id}"))
    }

    /// Every message id listed, in order.
    async fn ids(&self) -> Result<Vec<String>> {
        let ids = self
            .client
            .execute(
                "return [...document.querySelectorAll('#messages li.message')]
                   .map(li => li.dataset.id);",
                vec![],
            )
            .await?;
        Ok(serde_json::from_value(ids)?)
    }

    async fn assert_no_duplicates(&self) -> Result<()> {
        let ids = self.ids().await?;
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        ensure!(unique.len() == ids.len(), "an id is listed twice: {ids:?}");
        Ok(())
    }
}

/// `POST /{version}/message` from outside the browser.
async fn publish(base: &str, version: &str, user: &str, body: &str) -> Result<wire::Published> {
    let response = reqwest::Client::new()
        .post(format!("{base}/{version}/message"))
        .query(&[("username", user)])
        .body(body.to_owned())
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    ensure!(status.is_success(), "publish answered {status}: {text}");
    Ok(serde_json::from_str(&text)?)
}

/// The user journey; returns on the first failed expectation.
async fn scenario(client: &Client, server: &mut TestServer, broker: &mut Broker) -> Result<()> {
    let user = format!("e2e-{}", std::process::id());
    let base = server.base.clone();
    let page = Page {
        client,
        base: &base,
    };

    // Tab 1: connect on v2, then a message published from outside shows up with its lines.
    let first_tab = client.window().await?;
    page.open_and_connect(&user, "v2").await?;
    let outside = "from outside\n  second line";
    let published = publish(&base, "v2", &user, outside).await?;
    let shown = page.wait_for_text(outside).await?;
    ensure!(
        shown == published.id,
        "listed as {shown}, published as {}",
        published.id
    );
    let last_id = client
        .find(Locator::Id("last-event-id"))
        .await?
        .text()
        .await?;
    ensure!(last_id == published.id, "last event id shows {last_id:?}");

    // Tab 2: the same user.
    let second_tab = client.new_window(true).await?.handle;
    client.switch_to_window(second_tab.clone()).await?;
    page.open_and_connect(&user, "v2").await?;

    // Back in tab 1: type a two-line message (Shift+Enter), send it with Enter.
    client.switch_to_window(first_tab.clone()).await?;
    let typed = "typed in the page\nwith Shift+Enter";
    let keys = format!(
        "typed in the page{}{}{}with Shift+Enter{}",
        Key::Shift,
        Key::Enter,
        Key::Null,
        Key::Enter
    );
    client
        .find(Locator::Id("message-text"))
        .await?
        .send_keys(&keys)
        .await?;
    let result = page
        .wait_js(
            "the send result",
            "const r = document.querySelector('#send-result').textContent;
             return r.startsWith('Sent') || r.startsWith('Not sent') ? r : null;",
        )
        .await?;
    ensure!(
        result
            .as_str()
            .is_some_and(|r| r.ends_with("delivered to 2 streams")),
        "send result: {result}"
    );
    let in_first = page.wait_for_text(typed).await?;
    let composer = client
        .find(Locator::Id("message-text"))
        .await?
        .prop("value")
        .await?;
    ensure!(
        composer.as_deref() == Some(""),
        "composer not cleared: {composer:?}"
    );

    // Tab 2 got it too, with the same id.
    client.switch_to_window(second_tab.clone()).await?;
    let in_second = page.wait_for_text(typed).await?;
    ensure!(
        in_first == in_second,
        "ids differ between tabs: {in_first} vs {in_second}"
    );
    page.assert_no_duplicates().await?;

    // The server restarts: the page says "reconnecting", then "live". The browser resumes
    // with Last-Event-ID on its own; a fresh server does not know that id and says so with a
    // resync event, which the page shows as a notice.
    client.switch_to_window(first_tab.clone()).await?;
    server.stop().await;
    page.wait_state("reconnecting").await?;
    server.start_again().await;
    page.wait_state("live").await?;
    let notice = format!("Resync after {in_first}");
    page.wait_js(
        "the resync notice",
        &format!(
            "return [...document.querySelectorAll('#messages li.notice')]
               .some(li => li.textContent.includes({}));",
            serde_json::to_string(&notice)?
        ),
    )
    .await?;
    client.switch_to_window(second_tab.clone()).await?;
    page.wait_state("live").await?;
    client.switch_to_window(first_tab.clone()).await?;

    let after = publish(&base, "v2", &user, "after the restart").await?;
    ensure!(
        after.delivered == Some(2),
        "after the restart {:?} streams got it",
        after.delivered
    );
    page.wait_for_text("after the restart").await?;
    page.assert_no_duplicates().await?;

    // Switching tab 2 to v1 closes its v2 stream, so v2 messages then reach tab 1 only. The
    // server notices a closed stream on its next write, so allow a few keep-alive periods.
    client.switch_to_window(second_tab).await?;
    client
        .find(Locator::Id("version"))
        .await?
        .select_by_value("v1")
        .await?;
    page.wait_js(
        "v1's greeting",
        "return document.querySelector('.who').textContent.endsWith('on v1')
           && [...document.querySelectorAll('#messages li.message .text')]
                .some(t => t.textContent === 'hi!');",
    )
    .await?;
    client.switch_to_window(first_tab).await?;
    let deadline = Instant::now() + PATIENCE;
    let mut probe = 0;
    loop {
        probe += 1;
        let published = publish(&base, "v2", &user, &format!("probe {probe}")).await?;
        if published.delivered == Some(1) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "v2 still has {:?} streams",
            published.delivered
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    page.wait_for_text(&format!("probe {probe}")).await?;
    page.assert_no_duplicates().await?;

    // v3: a record produced straight to Kafka shows up in the page.
    wait_ready(&base).await?;
    page.open_and_connect(&user, "v3").await?;
    let record = format!("{user}:🦀 howdy from kafka!\nwith: colons");
    let offset = broker.produce(record.as_bytes()).await;
    let shown = page
        .wait_for_text("🦀 howdy from kafka!\nwith: colons")
        .await?;
    ensure!(
        shown == format!("0-{offset}"),
        "v3 id {shown} is not the Kafka position 0-{offset}"
    );
    Ok(())
}

/// Waits until the server reports Kafka connected.
async fn wait_ready(base: &str) -> Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let response = reqwest::get(format!("{base}/readyz")).await?;
        if response.status() == 200 {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "kafka never ready: {}",
            response.text().await?
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_streams_and_sends() -> Result<()> {
    let dist = dist_dir();
    let mut broker = Broker::start().await;
    let mut server = start_server(&dist, &broker.addr).await;
    let driver = Driver::start().await?;
    let profile = tempfile::tempdir()?;
    let client = driver.session(profile.path()).await?;

    // Whatever happens in the scenario, keep a screenshot and close the browser.
    let outcome = AssertUnwindSafe(scenario(&client, &mut server, &mut broker))
        .catch_unwind()
        .await;
    let shot = save_screenshot(&client).await;
    let closed = client.close().await;
    drop(driver);
    if !matches!(outcome, Ok(Ok(()))) {
        server.keep_log();
    }
    server.stop().await;
    broker.down().await;

    match outcome {
        Ok(result) => result?,
        Err(panic) => std::panic::resume_unwind(panic),
    }
    let path = shot?;
    println!("screenshot: {}", path.display());
    closed?;
    Ok(())
}

async fn save_screenshot(client: &Client) -> Result<PathBuf> {
    let png = client.screenshot().await?;
    let dir = workspace_root().join("target/e2e");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("browser.png");
    std::fs::write(&path, png)?;
    Ok(path)
}

/// Tabs of one user on one origin, each with its own stream.
const TABS: usize = 8;

/// Over HTTPS the page's streams share one HTTP/2 connection, so eight tabs on one origin all
/// go live and all get a message. Over HTTP/1.1 the browser's six connections per origin run
/// out first, and the seventh tab waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_tabs_over_https_all_stream() -> Result<()> {
    let dist = dist_dir();
    let certs = tempfile::tempdir()?;
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let bin = testkit::ssepush_binary();
    let made = std::process::Command::new(&bin)
        .arg("self-signed")
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()?;
    ensure!(made.status.success(), "ssepush self-signed: {made:?}");
    let args: [&OsStr; 12] = [
        "--drain".as_ref(),
        "500ms".as_ref(),
        "--static-dir".as_ref(),
        dist.as_os_str(),
        "--kafka-brokers".as_ref(),
        "".as_ref(),
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
        "--tls-port".as_ref(),
        "0".as_ref(),
    ];
    let mut server = TestServer::start(bin, args).await;
    let https = format!(
        "https://localhost:{}",
        server.logged_addr("serving https").port()
    );
    let driver = Driver::start().await?;
    let profile = tempfile::tempdir()?;
    let client = driver
        .session_with(profile.path(), &["--ignore-certificate-errors"])
        .await?;
    let outcome = AssertUnwindSafe(tabs(&client, &server.base, &https))
        .catch_unwind()
        .await;
    let closed = client.close().await;
    drop(driver);
    if !matches!(outcome, Ok(Ok(()))) {
        server.keep_log();
    }
    server.stop().await;
    match outcome {
        Ok(result) => result?,
        Err(panic) => std::panic::resume_unwind(panic),
    }
    closed?;
    Ok(())
}

async fn tabs(client: &Client, http: &str, https: &str) -> Result<()> {
    // HTTP/1.1 first: six tabs go live, the seventh cannot get a connection.
    let user = "tabs-h1";
    let page = Page { client, base: http };
    let first = client.window().await?;
    for tab in 0..7 {
        if tab > 0 {
            let handle = client.new_window(true).await?.handle;
            client.switch_to_window(handle).await?;
        }
        if tab < 6 {
            page.open_and_connect(user, "v2").await?;
        } else {
            // Its page load waits for a connection too: a short page-load timeout ends the
            // navigation, or chromedriver would hold every later command behind it.
            client
                .update_timeouts(TimeoutConfiguration::new(
                    None,
                    Some(Duration::from_secs(3)),
                    None,
                ))
                .await?;
            let live = page.open_and_connect(user, "v2").await;
            client
                .update_timeouts(TimeoutConfiguration::new(None, Some(PATIENCE), None))
                .await?;
            ensure!(
                live.is_err(),
                "a seventh HTTP/1.1 tab went live: the browser's connection limit did not show"
            );
        }
    }
    // Close every tab but the first, so their HTTP/1.1 streams end.
    for handle in client.windows().await? {
        if handle != first {
            client.switch_to_window(handle).await?;
            client.close_window().await?;
        }
    }
    client.switch_to_window(first).await?;
    client.goto("about:blank").await?;

    // HTTPS: all eight tabs go live on one HTTP/2 connection.
    let user = "tabs-h2";
    let page = Page {
        client,
        base: https,
    };
    let mut handles = Vec::new();
    for tab in 0..TABS {
        if tab > 0 {
            let handle = client.new_window(true).await?.handle;
            client.switch_to_window(handle).await?;
        }
        handles.push(client.window().await?);
        page.open_and_connect(user, "v2").await?;
    }
    let protocol = client
        .execute(
            "return performance.getEntriesByType('navigation')[0].nextHopProtocol;",
            vec![],
        )
        .await?;
    ensure!(protocol == "h2", "the page came over {protocol}, not h2");
    let published = publish(http, "v2", user, "to every tab").await?;
    ensure!(
        published.delivered == Some(TABS),
        "{:?} of {TABS} streams got the message",
        published.delivered
    );
    for handle in handles {
        client.switch_to_window(handle).await?;
        page.wait_for_text("to every tab").await?;
    }
    Ok(())
}

/// The HS256 secret of the servers with authorization on (at least 32 bytes).
const SECRET: &str = "e2e-secret-0123456789-abcdefghijklmnop";

/// A server with authorization on (`--auth-secret`), the built UI and no Kafka; `more` flags
/// after those.
async fn start_auth_server(bin: &Path, dist: &Path, more: &[&str]) -> TestServer {
    let mut args: Vec<&OsStr> = vec![
        "--drain".as_ref(),
        "500ms".as_ref(),
        "--static-dir".as_ref(),
        dist.as_os_str(),
        "--kafka-brokers".as_ref(),
        "".as_ref(),
        "--auth-secret".as_ref(),
        SECRET.as_ref(),
    ];
    args.extend(more.iter().map(OsStr::new));
    TestServer::start(bin, args).await
}

/// `ssepush token ARGS`, signed with [`SECRET`].
fn mint(bin: &Path, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(bin)
        .arg("token")
        .args(args)
        .env("AUTH_SECRET", SECRET)
        .output()?;
    ensure!(out.status.success(), "ssepush token {args:?}: {out:?}");
    let token = String::from_utf8(out.stdout)?.trim().to_owned();
    ensure!(
        token.split('.').count() == 3,
        "ssepush token printed {token:?}"
    );
    Ok(token)
}

/// `POST /{version}/message` from outside the browser with `token`; the status and body.
async fn publish_with(
    base: &str,
    user: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String)> {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/v2/message"))
        .query(&[("username", user)])
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

impl Page<'_> {
    /// Pastes `token` into the token field and presses "Use token".
    async fn use_token(&self, token: &str) -> Result<()> {
        let field = self.client.find(Locator::Id("token")).await?;
        field.clear().await?;
        field.send_keys(token).await?;
        self.client
            .find(Locator::Id("use-token"))
            .await?
            .click()
            .await?;
        Ok(())
    }

    /// Waits until the text next to the token field contains `part`; returns that text.
    async fn wait_token_hint(&self, part: &str) -> Result<String> {
        let script = format!(
            "const t = document.querySelector('#token-hint')?.textContent ?? '';
             return t.includes({}) ? t : null;",
            serde_json::to_string(part)?
        );
        let hint = self
            .wait_js(&format!("{part:?} next to the token field"), &script)
            .await?;
        Ok(hint.as_str().unwrap_or_default().to_owned())
    }

    /// Types `text` into the composer and sends it with Enter; returns the new send result.
    async fn send(&self, text: &str) -> Result<String> {
        let before = self
            .client
            .find(Locator::Id("send-result"))
            .await?
            .text()
            .await?;
        self.client
            .find(Locator::Id("message-text"))
            .await?
            .send_keys(&format!("{text}{}", Key::Enter))
            .await?;
        let script = format!(
            "const r = document.querySelector('#send-result').textContent;
             return r !== {} && (r.startsWith('Sent') || r.startsWith('Not sent')) ? r : null;",
            serde_json::to_string(&before)?
        );
        let result = self.wait_js("the send result", &script).await?;
        Ok(result.as_str().unwrap_or_default().to_owned())
    }
}

/// Authorization on: the page asks for a token, says in plain words why a stream or a POST is
/// refused (401 without a token, 403 with someone else's), and streams and sends with a
/// token for its user. A token that runs out is announced, and a new one picks up after the
/// last message shown, so nothing published in between is missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_with_auth_asks_for_a_token() -> Result<()> {
    let dist = dist_dir();
    let bin = testkit::ssepush_binary();
    let mut server = start_auth_server(&bin, &dist, &["--token-expiry-notice", "30s"]).await;
    let driver = Driver::start().await?;
    let profile = tempfile::tempdir()?;
    let client = driver.session(profile.path()).await?;
    let outcome = AssertUnwindSafe(auth_scenario(&client, &server.base, &bin))
        .catch_unwind()
        .await;
    let shot = save_screenshot_as(&client, "browser-auth.png").await;
    let closed = client.close().await;
    drop(driver);
    if !matches!(outcome, Ok(Ok(()))) {
        server.keep_log();
    }
    server.stop().await;
    match outcome {
        Ok(result) => result?,
        Err(panic) => std::panic::resume_unwind(panic),
    }
    println!("screenshot: {}", shot?.display());
    closed?;
    Ok(())
}

async fn auth_scenario(client: &Client, base: &str, bin: &Path) -> Result<()> {
    let user = "alice";
    let page = Page { client, base };
    let token = mint(bin, &["--user", user, "--publish", user])?;
    let other = mint(bin, &["--user", "bob", "--publish", "bob"])?;

    // No token: the field is there, and the stream is refused with a 401 said in words.
    page.open_and_ask(user, "v2").await?;
    client
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Id("token"))
        .await
        .context("no token field with authorization on")?;
    page.wait_state("closed").await?;
    let hint = page.wait_token_hint("401").await?;
    ensure!(hint.contains("needs a token"), "401 hint: {hint:?}");

    // The user's token: live; a message POSTed from outside arrives, one sent here too.
    page.use_token(&token).await?;
    page.wait_state("live").await?;
    let (status, text) = publish_with(base, user, Some(&token), "from outside, signed").await?;
    ensure!(status == 200, "signed POST answered {status}: {text}");
    page.wait_for_text("from outside, signed").await?;
    let sent = page.send("from the page, signed").await?;
    ensure!(
        sent.ends_with("delivered to 1 stream"),
        "send result: {sent:?}"
    );
    page.wait_for_text("from the page, signed").await?;

    // The token is kept for the tab: a reload shows it in the field and streams with it.
    client.refresh().await?;
    let kept = page
        .wait_js(
            "the token field after a reload",
            "const f = document.querySelector('#token'); return f && f.value;",
        )
        .await?;
    ensure!(
        kept == token.as_str(),
        "after a reload the field holds {kept}"
    );

    // Another user's token: the stream is refused with a 403, and so is a POST.
    page.open_and_ask(user, "v2").await?;
    page.wait_state("live").await?;
    page.use_token(&other).await?;
    page.wait_state("closed").await?;
    let hint = page.wait_token_hint("403").await?;
    ensure!(
        hint.contains("does not allow you to read the stream of alice"),
        "403 hint: {hint:?}"
    );
    let sent = page.send("with bob's token").await?;
    ensure!(
        sent.starts_with("Not sent: 403") && sent.contains("publish to alice"),
        "send result with another user's token: {sent:?}"
    );

    // A token about to run out: the notice, the end of the stream, then a new token resumes
    // after the last message shown, with what was published in between.
    let short = mint(bin, &["--user", user, "--ttl", "6s"])?;
    page.use_token(&short).await?;
    page.wait_state("live").await?;
    let notice = page.wait_token_hint("Your token expires in").await?;
    ensure!(notice.contains("paste a new one"), "notice: {notice:?}");
    let (status, text) = publish_with(base, user, Some(&token), "before the end").await?;
    ensure!(status == 200, "POST answered {status}: {text}");
    page.wait_for_text("before the end").await?;
    let hint = page.wait_token_hint("401").await?;
    ensure!(hint.contains("expired"), "after expiry: {hint:?}");
    let (status, text) = publish_with(base, user, Some(&token), "while refused").await?;
    ensure!(status == 200, "POST answered {status}: {text}");
    page.use_token(&token).await?;
    page.wait_state("live").await?;
    page.wait_for_text("while refused").await?;
    page.assert_no_duplicates().await?;

    // A token-less POST from outside is refused too.
    let (status, _) = publish_with(base, user, None, "unsigned").await?;
    ensure!(status == 401, "a POST without a token answered {status}");
    Ok(())
}

async fn save_screenshot_as(client: &Client, name: &str) -> Result<PathBuf> {
    let png = client.screenshot().await?;
    let dir = workspace_root().join("target/e2e");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    std::fs::write(&path, png)?;
    Ok(path)
}

/// A page of another origin that POSTs with `Authorization` (so its browser sends a
/// preflight first) and opens an `EventSource` on the server given in its query, and puts
/// what happened in `window.outcome`.
const FOREIGN_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>foreign page</title></head><body><script>
const q = new URLSearchParams(location.search);
const server = q.get('server'), user = q.get('user'), token = q.get('token');
const user_q = 'username=' + encodeURIComponent(user);
window.outcome = { stream: 'pending', post: 'pending', messages: [] };
async function post() {
  try {
    const r = await fetch(server + '/v2/message?' + user_q, {
      method: 'POST',
      headers: { Authorization: 'Bearer ' + token },
      body: 'from another origin',
    });
    outcome.post = r.status + ' ' + (await r.text());
  } catch (e) {
    outcome.post = 'blocked: ' + e;
  }
}
const es = new EventSource(server + '/v2/sse?' + user_q + '&access_token=' + encodeURIComponent(token));
es.onopen = () => { outcome.stream = 'open'; post(); };
es.onmessage = (e) => outcome.messages.push(e.data);
// Refused by CORS, Chromium retries (readyState CONNECTING) rather than giving up: an error
// before any open is the refusal.
es.onerror = () => {
  if (outcome.stream === 'pending') {
    outcome.stream = 'refused';
    es.close();
    post();
  }
};
</script></body></html>
"#;

/// Serves [`FOREIGN_PAGE`] for any request on 127.0.0.1 until dropped; returns its origin.
async fn serve_foreign_page() -> Result<(String, tokio::task::JoinHandle<()>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The request head; the page needs nothing from it.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{FOREIGN_PAGE}",
                    FOREIGN_PAGE.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok((origin, task))
}

/// The foreign page's `window.outcome` once its POST has an answer.
async fn foreign_outcome(
    client: &Client,
    origin: &str,
    server: &str,
    user: &str,
    token: &str,
) -> Result<Value> {
    let url = reqwest::Url::parse_with_params(
        &format!("{origin}/"),
        &[("server", server), ("user", user), ("token", token)],
    )?;
    client.goto(url.as_str()).await?;
    let page = Page {
        client,
        base: origin,
    };
    page.wait_js(
        "the foreign page's POST",
        "return window.outcome && window.outcome.post !== 'pending' ? window.outcome : null;",
    )
    .await
}

/// CORS: a page of another origin may not POST (with `Authorization`) nor stream unless the
/// server lists its origin with `--cors-origin`; then both work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_origins_need_cors_origin() -> Result<()> {
    let dist = dist_dir();
    let bin = testkit::ssepush_binary();
    let (origin, page_server) = serve_foreign_page().await?;
    let driver = Driver::start().await?;
    let profile = tempfile::tempdir()?;
    let client = driver.session(profile.path()).await?;
    let outcome = AssertUnwindSafe(cors_scenario(&client, &bin, &dist, &origin))
        .catch_unwind()
        .await;
    let closed = client.close().await;
    drop(driver);
    page_server.abort();
    match outcome {
        Ok(result) => result?,
        Err(panic) => std::panic::resume_unwind(panic),
    }
    closed?;
    Ok(())
}

async fn cors_scenario(client: &Client, bin: &Path, dist: &Path, origin: &str) -> Result<()> {
    let user = "carol";
    let token = mint(bin, &["--user", user, "--publish", user])?;
    let other_origin = origin.replace("127.0.0.1", "localhost");

    // CORS off (the default), then only another origin listed: the browser refuses both.
    for flags in [&[][..], &["--cors-origin", other_origin.as_str()][..]] {
        let mut server = start_auth_server(bin, dist, flags).await;
        let seen = foreign_outcome(client, origin, &server.base, user, &token).await;
        server.stop().await;
        let seen = seen?;
        ensure!(
            seen["stream"] == "refused",
            "with {flags:?} the stream was not refused: {seen}"
        );
        ensure!(
            seen["post"]
                .as_str()
                .is_some_and(|p| p.starts_with("blocked")),
            "with {flags:?} the POST was not blocked: {seen}"
        );
    }

    // The page's origin listed: its POST is answered and its stream gets the message.
    let mut server = start_auth_server(bin, dist, &["--cors-origin", origin]).await;
    let seen = foreign_outcome(client, origin, &server.base, user, &token).await;
    let page = Page {
        client,
        base: origin,
    };
    let arrived = page
        .wait_js(
            "the message in the foreign page's stream",
            "return window.outcome.messages.includes('from another origin');",
        )
        .await;
    if seen.is_err() || arrived.is_err() {
        server.keep_log();
    }
    server.stop().await;
    let seen = seen?;
    ensure!(
        seen["stream"] == "open",
        "the listed origin's stream: {seen}"
    );
    ensure!(
        seen["post"].as_str().is_some_and(|p| p.starts_with("200 ")),
        "the listed origin's POST: {seen}"
    );
    arrived?;
    Ok(())
}
