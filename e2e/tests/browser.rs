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
        self.wait_state("live").await
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
