//! The mounted `App` in a real browser (the test runner's headless Chromium): validation,
//! the v1 send lock, and a stream the server refuses ending up "closed".
#![cfg(target_family = "wasm")]

use std::time::Duration;

use frontend::App;
use leptos::mount::mount_to;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use web_sys::{
    Event, EventInit, HtmlButtonElement, HtmlElement, HtmlInputElement, HtmlSelectElement,
    HtmlTextAreaElement,
};

wasm_bindgen_test_configure!(run_in_browser);

/// Mounts a fresh `App` in its own element and returns that element; the app unmounts when
/// the handle (second value) is dropped.
fn mount() -> (HtmlElement, impl Drop) {
    let document = leptos::prelude::document();
    let root: HtmlElement = document.create_element("div").unwrap().unchecked_into();
    document.body().unwrap().append_child(&root).unwrap();
    let handle = mount_to(root.clone(), App);
    (root, handle)
}

fn find<T: JsCast>(root: &HtmlElement, selector: &str) -> T {
    root.query_selector(selector)
        .unwrap()
        .unwrap_or_else(|| panic!("no element matches {selector}"))
        .unchecked_into()
}

fn text(root: &HtmlElement, selector: &str) -> String {
    find::<HtmlElement>(root, selector)
        .text_content()
        .unwrap_or_default()
}

/// Sets a field's value the way typing does, firing a bubbling `input` (and `change`) event.
fn type_into(input: &HtmlInputElement, value: &str) {
    input.set_value(value);
    fire(input, "input");
}

fn fire(target: &web_sys::EventTarget, kind: &str) {
    let init = EventInit::new();
    init.set_bubbles(true);
    let event = Event::new_with_event_init_dict(kind, &init).unwrap();
    target.dispatch_event(&event).unwrap();
}

async fn sleep(duration: Duration) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        leptos::prelude::window()
            .set_timeout_with_callback_and_timeout_and_arguments_0(
                &resolve,
                duration.as_millis() as i32,
            )
            .unwrap();
    });
    JsFuture::from(promise).await.unwrap();
}

/// Polls `check` until it holds or `limit` passes.
async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let step = Duration::from_millis(20);
    let mut waited = Duration::ZERO;
    while waited < limit {
        if check() {
            return true;
        }
        sleep(step).await;
        waited += step;
    }
    check()
}

#[wasm_bindgen_test]
async fn refused_usernames_say_why() {
    let (root, _app) = mount();
    let input: HtmlInputElement = find(&root, "#username");

    type_into(&input, "a:b");
    assert!(
        eventually(Duration::from_secs(2), || text(&root, "#username-hint")
            .contains("reserved"))
        .await,
        "hint: {}",
        text(&root, "#username-hint")
    );
    assert_eq!(input.get_attribute("aria-invalid").as_deref(), Some("true"));

    type_into(&input, "");
    assert!(
        eventually(Duration::from_secs(2), || {
            text(&root, "#username-hint") == "username is missing or empty"
        })
        .await
    );

    type_into(&input, "demo");
    assert!(
        eventually(Duration::from_secs(2), || {
            input.get_attribute("aria-invalid").as_deref() == Some("false")
        })
        .await
    );
}

#[wasm_bindgen_test]
async fn v1_cannot_send() {
    let (root, _app) = mount();
    type_into(&find(&root, "#username"), "demo");
    let textarea: HtmlTextAreaElement = find(&root, "#message-text");
    assert!(eventually(Duration::from_secs(2), || !textarea.disabled()).await);

    let select: HtmlSelectElement = find(&root, "#version");
    select.set_value("v1");
    fire(&select, "change");
    assert!(eventually(Duration::from_secs(2), || textarea.disabled()).await);
    assert!(text(&root, "#send-result").contains("choose v2 or v3"));
    assert!(find::<HtmlButtonElement>(&root, "#send").disabled());
}

#[wasm_bindgen_test]
async fn refused_stream_ends_closed() {
    // The test runner's server answers /v2/sse with 404, which makes EventSource give up.
    let (root, _app) = mount();
    type_into(&find(&root, "#username"), "demo");
    find::<HtmlButtonElement>(&root, "#connect").click();
    let state = || find::<HtmlElement>(&root, "#conn-state").get_attribute("data-state");
    assert!(
        eventually(Duration::from_secs(2), || text(&root, ".who")
            == "demo on v2")
        .await,
        "Connect did not start a stream"
    );
    assert!(
        eventually(Duration::from_secs(10), || state().as_deref()
            == Some("closed"))
        .await,
        "state stayed {:?}",
        state()
    );
    assert_eq!(
        text(&root, "#connect"),
        "Connect",
        "a refused stream can be retried"
    );
}

#[wasm_bindgen_test]
async fn no_token_field_without_auth() {
    // The test runner's server answers /auth with 404: a server without authorization.
    let (root, _app) = mount();
    sleep(Duration::from_millis(300)).await;
    assert!(find::<HtmlElement>(&root, "#username").is_connected());
    assert!(
        root.query_selector("#token").unwrap().is_none(),
        "a token field without authorization"
    );
}
