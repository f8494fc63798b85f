//! The connection indicator, the last event id and the last sign of life.

use leptos::prelude::*;

use crate::state::AppState;

#[component]
pub fn StatusBar() -> impl IntoView {
    let state = expect_context::<AppState>();
    let label = move || state.conn.get().label();
    let who = move || {
        state.session.with(|s| match s {
            Some(s) => format!("{} on {}", s.username, s.version),
            None => "not connected".to_owned(),
        })
    };

    view! {
        <section class="status" aria-label="Connection status">
            <p class="state">
                <span class=move || format!("dot {}", label()) aria-hidden="true"></span>
                <span id="conn-state" role="status" data-state=label>
                    {label}
                </span>
                <span class="who">{who}</span>
            </p>
            <dl>
                <div>
                    <dt>"Last event id"</dt>
                    <dd id="last-event-id">
                        <code>{move || state.last_event_id.get().unwrap_or_else(|| "—".into())}</code>
                    </dd>
                </div>
                <div>
                    <dt>"Last activity"</dt>
                    <dd id="last-activity">
                        {move || state.last_activity.get().unwrap_or_else(|| "—".into())}
                    </dd>
                </div>
            </dl>
        </section>
    }
}
