//! The token field, shown only when the server wants a token, and where the token is kept.

use gloo_net::http::Request;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::model::TOKEN_STORAGE_KEY;
use crate::state::AppState;

/// The tab's `sessionStorage`, when the browser allows it (it may not, e.g. with storage off).
fn session_storage() -> Option<web_sys::Storage> {
    window().session_storage().ok().flatten()
}

/// The token kept for this tab, if any.
pub fn stored_token() -> Option<String> {
    session_storage()?
        .get_item(TOKEN_STORAGE_KEY)
        .ok()
        .flatten()
        .filter(|t| !t.is_empty())
}

/// Keeps `token` for this tab (survives a reload, not shared with other tabs); `None` forgets it.
pub fn store_token(token: Option<&str>) {
    if let Some(storage) = session_storage() {
        let _ = match token {
            Some(token) => storage.set_item(TOKEN_STORAGE_KEY, token),
            None => storage.remove_item(TOKEN_STORAGE_KEY),
        };
    }
}

/// Asks the server whether it wants a token (`GET /auth`). A server without the endpoint, or
/// one that cannot be reached, leaves the page as it is without auth; a 401 or 403 seen later
/// still brings the token field up.
pub fn load_auth_info(state: AppState) {
    spawn_local(async move {
        let Ok(response) = Request::get("/auth").send().await else {
            return;
        };
        if !response.ok() {
            return;
        }
        let body = response.text().await.unwrap_or_default();
        if let Ok(info) = serde_json::from_str::<wire::AuthInfo>(&body)
            && info.required
        {
            state.auth_required.set(true);
        }
    });
}

#[component]
pub fn TokenForm() -> impl IntoView {
    let state = expect_context::<AppState>();
    let draft = RwSignal::new(state.token.get_untracked().unwrap_or_default());

    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        state.use_token(&draft.get_untracked());
    };
    let hint = Memo::new(move |_| {
        if let Some(problem) = state.auth_problem.get() {
            ("error", problem)
        } else if let Some(notice) = state.token_notice.get() {
            ("warn", notice)
        } else if state.token.with(Option::is_some) {
            ("", "Token in use for this tab.".to_owned())
        } else {
            (
                "",
                "This server wants a token: paste one to stream and send.".to_owned(),
            )
        }
    });

    view! {
        <form class="token" on:submit=on_submit aria-label="Access token">
            <div class="field grow">
                <label for="token">"Access token"</label>
                <input
                    id="token"
                    name="token"
                    type="password"
                    autocomplete="off"
                    autocapitalize="off"
                    spellcheck="false"
                    placeholder="paste a token (JWT)"
                    prop:value=move || draft.get()
                    on:input=move |ev| draft.set(event_target_value(&ev))
                    aria-describedby="token-hint"
                />
                <p
                    id="token-hint"
                    class=move || format!("hint {}", hint.read().0)
                    role="status"
                    aria-live="polite"
                >
                    {move || hint.read().1.clone()}
                </p>
            </div>
            <button id="use-token" type="submit">
                "Use token"
            </button>
        </form>
    }
}
