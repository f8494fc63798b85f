//! Browser client for the SSE push service.
//!
//! # Layout
//! - [`model`]: URLs, validation, connection states and the message log; no DOM, unit-tested.
//! - `state`: [`AppState`], the signals every component shares through context.
//! - `stream`: the `EventSource` of the current session, closed on cleanup.
//! - `connect`, `status`, `messages`, `composer`: one component each.
//! - `token`: the token field (only when the server wants tokens) and its `sessionStorage`.

use leptos::prelude::*;

mod composer;
mod connect;
mod messages;
pub mod model;
mod state;
mod status;
mod stream;
mod token;

pub use state::{AppState, Session};

use composer::Composer;
use connect::ConnectForm;
use messages::MessageList;
use status::StatusBar;
use stream::Stream;
use token::TokenForm;

/// The whole page.
#[component]
pub fn App() -> impl IntoView {
    let state = AppState::new();
    provide_context(state);
    token::load_auth_info(state);

    view! {
        <header class="top">
            <h1>
                <img src="/favicon.svg" alt="" width="24" height="24" />
                "SSE push"
            </h1>
            <ConnectForm />
            <Show when=move || state.auth_required.get()>
                <TokenForm />
            </Show>
            <StatusBar />
        </header>
        <main>
            <MessageList />
        </main>
        <footer>
            <Composer />
        </footer>
        // Re-runs on every new session: the previous `Stream` is cleaned up (closing its
        // EventSource) before the next one opens.
        {move || state.session.get().map(|session| view! { <Stream session /> })}
    }
}
