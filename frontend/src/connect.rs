//! The username field, the version selector and the Connect/Disconnect button.

use leptos::prelude::*;

use crate::model::ApiVersion;
use crate::state::AppState;

/// Shown under the field until there is a problem to show instead.
const NAME_HINT: &str = "Up to 64 bytes; no ':' or control characters.";

#[component]
pub fn ConnectForm() -> impl IntoView {
    let state = expect_context::<AppState>();
    let problem = Memo::new(move |_| state.name_problem());
    let connected = Memo::new(move |_| state.is_connected_to_draft());

    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if connected.get_untracked() {
            state.disconnect();
        } else {
            state.connect();
        }
    };
    let on_version = move |ev: leptos::ev::Event| {
        if let Some(version) = ApiVersion::parse(&event_target_value(&ev)) {
            state.draft_version.set(version);
            // A version switch while streaming is a request for the other stream now; the
            // username needs an explicit Connect because it changes on every keystroke.
            if state.session.get_untracked().is_some() {
                state.connect();
            }
        }
    };

    view! {
        <form class="connect" on:submit=on_submit aria-label="Connection">
            <div class="field grow">
                <label for="username">"Username"</label>
                <input
                    id="username"
                    name="username"
                    type="text"
                    autocomplete="username"
                    autocapitalize="off"
                    spellcheck="false"
                    placeholder="e.g. demo"
                    prop:value=move || state.draft_name.get()
                    on:input=move |ev| {
                        state.draft_name.set(event_target_value(&ev));
                        state.name_touched.set(true);
                    }
                    aria-invalid=move || problem.get().is_some().to_string()
                    aria-describedby="username-hint"
                />
                <p id="username-hint" class="hint" class:error=move || problem.get().is_some()>
                    {move || problem.get().unwrap_or_else(|| NAME_HINT.to_owned())}
                </p>
            </div>
            <div class="field">
                <label for="version">"API version"</label>
                <select id="version" name="version" on:change=on_version>
                    {ApiVersion::ALL
                        .map(|v| {
                            view! {
                                <option
                                    value=v.as_str()
                                    selected=move || state.draft_version.get() == v
                                >
                                    {v.description()}
                                </option>
                            }
                        })}
                </select>
            </div>
            <button id="connect" type="submit" class:secondary=move || connected.get()>
                {move || if connected.get() { "Disconnect" } else { "Connect" }}
            </button>
        </form>
    }
}
