//! The message box: Enter sends, Shift+Enter starts a new line.

use gloo_net::http::Request;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::model::{Access, SendOutcome, bearer, enter_sends, message_url, refusal};
use crate::state::AppState;

#[component]
pub fn Composer() -> impl IntoView {
    let state = expect_context::<AppState>();
    let text = RwSignal::new(String::new());
    let sending = RwSignal::new(false);
    let outcome = RwSignal::new(None::<SendOutcome>);
    let target = Memo::new(move |_| state.send_target());
    let blocked = move || target.with(Result::is_err);
    // A refusal is about the token it was sent with: a new token clears it.
    Effect::new(move |seen: Option<()>| {
        state.token.track();
        if seen.is_some() {
            outcome.set(None);
        }
    });

    let send = move || {
        let Ok((username, version)) = target.get_untracked() else {
            return;
        };
        let body = text.get_untracked();
        if body.is_empty() || sending.get_untracked() {
            return;
        }
        sending.set(true);
        let token = state.token.get_untracked();
        spawn_local(async move {
            let url = message_url(version, &username);
            let result = publish(&url, &username, token.as_deref(), body, state).await;
            if !result.is_error() {
                text.set(String::new());
            }
            outcome.set(Some(result));
            sending.set(false);
        });
    };

    view! {
        <form
            class="composer"
            aria-label="Send a message"
            on:submit=move |ev| {
                ev.prevent_default();
                send();
            }
        >
            <div class="field grow">
                <label for="message-text">
                    {move || match target.get() {
                        Ok((user, version)) => format!("Message to {user} on {version}"),
                        Err(_) => "Message".to_owned(),
                    }}
                </label>
                <textarea
                    id="message-text"
                    name="message"
                    rows="2"
                    placeholder="Enter sends · Shift+Enter for a new line"
                    prop:value=move || text.get()
                    prop:disabled=blocked
                    on:input=move |ev| text.set(event_target_value(&ev))
                    on:keydown=move |ev| {
                        if enter_sends(&ev.key(), ev.shift_key(), ev.is_composing()) {
                            ev.prevent_default();
                            send();
                        }
                    }
                    aria-describedby="send-result"
                ></textarea>
            </div>
            <button
                id="send"
                type="submit"
                prop:disabled=move || blocked() || sending.get() || text.with(String::is_empty)
            >
                {move || if sending.get() { "Sending…" } else { "Send" }}
            </button>
            <p
                id="send-result"
                class="hint"
                class:error=move || outcome.with(|o| o.as_ref().is_some_and(SendOutcome::is_error))
                aria-live="polite"
            >
                {move || match target.get() {
                    Err(why) => why.to_owned(),
                    Ok(_) => outcome.with(|o| o.as_ref().map(SendOutcome::message)).unwrap_or_default(),
                }}
            </p>
        </form>
    }
}

/// `POST`s `body` as raw text, with `token` as `Authorization: Bearer`, and reads the
/// server's answer. A 401 or 403 says in plain words what is wrong with the token (and brings
/// the token field up, should `GET /auth` have been missed).
async fn publish(
    url: &str,
    username: &str,
    token: Option<&str>,
    body: String,
    state: AppState,
) -> SendOutcome {
    let mut request = Request::post(url);
    if let Some(token) = token {
        request = request.header("Authorization", &bearer(token));
    }
    let request = match request.body(body) {
        Ok(request) => request,
        Err(e) => return SendOutcome::Failed(e.to_string()),
    };
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            match refusal(status, &body, Access::Publish, username, token.is_some()) {
                Some(reason) => {
                    state.auth_required.set(true);
                    SendOutcome::Failed(reason)
                }
                None => SendOutcome::from_response(status, &response.status_text(), &body),
            }
        }
        Err(e) => SendOutcome::Failed(format!("network error: {e}")),
    }
}
