//! The message list: newest last, following new arrivals unless the reader scrolled up.

use leptos::html;
use leptos::prelude::*;

use crate::model::{Entry, EntryKind};
use crate::state::AppState;

/// How close to the bottom (in CSS pixels) still counts as "following".
const STICK_SLACK: i32 = 32;

#[component]
pub fn MessageList() -> impl IntoView {
    let state = expect_context::<AppState>();
    let scroller = NodeRef::<html::Div>::new();
    // Not a signal: nothing renders from it, it only steers the effect below.
    let follow = StoredValue::new(true);
    let unseen = RwSignal::new(false);

    let scroll_to_end = move || {
        if let Some(el) = scroller.get_untracked() {
            el.set_scroll_top(el.scroll_height());
        }
        follow.set_value(true);
        unseen.set(false);
    };

    let on_scroll = move |_| {
        if let Some(el) = scroller.get_untracked() {
            let at_end = el.scroll_height() - el.scroll_top() - el.client_height() <= STICK_SLACK;
            follow.set_value(at_end);
            if at_end {
                unseen.set(false);
            }
        }
    };

    Effect::new(move |_| {
        let newest = state.log.with(|log| log.last_seq());
        if scroller.get().is_none() || newest.is_none() {
            return;
        }
        if follow.get_value() {
            // After the list has rendered the new row.
            request_animation_frame(scroll_to_end);
        } else {
            unseen.set(true);
        }
    });

    let entries = move || {
        state
            .log
            .with(|log| log.entries().cloned().collect::<Vec<_>>())
    };
    let empty = move || state.log.with(|log| log.is_empty());

    view! {
        <section class="messages" aria-labelledby="messages-title">
            <h2 id="messages-title" class="visually-hidden">"Messages"</h2>
            <div class="scroller" node_ref=scroller on:scroll=on_scroll tabindex="0">
                <Show when=empty>
                    <p class="empty">
                        {move || {
                            if state.session.with(Option::is_some) {
                                "No messages yet."
                            } else {
                                "Connect to start streaming."
                            }
                        }}
                    </p>
                </Show>
                <ol id="messages" aria-live="polite" aria-relevant="additions">
                    <For each=entries key=|e| e.seq children=|e| view! { <EntryRow entry=e /> } />
                </ol>
            </div>
            <Show when=move || unseen.get()>
                <button class="jump" type="button" on:click=move |_| scroll_to_end()>
                    "New messages ↓"
                </button>
            </Show>
        </section>
    }
}

/// One message or notice.
#[component]
fn EntryRow(entry: Entry) -> impl IntoView {
    let Entry {
        kind, text, time, ..
    } = entry;
    match kind {
        EntryKind::Message { id } => {
            let data_id = id.clone();
            view! {
            <li class="message" data-id=data_id>
                <p class="meta">
                    <time>{time}</time>
                    {id.map(|id| view! { <code class="id">{id}</code> })}
                </p>
                <p class="text">{text}</p>
            </li>
            }
            .into_any()
        }
        EntryKind::Notice => view! {
            <li class="notice" role="note">
                <p class="meta">
                    <time>{time}</time>
                </p>
                <p class="text">{text}</p>
            </li>
        }
        .into_any(),
    }
}
