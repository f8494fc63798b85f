//! The `EventSource` behind a [`Session`], feeding [`AppState`].

use gloo_net::http::Request;
use leptos::prelude::*;
use leptos::task::spawn_local;
use send_wrapper::SendWrapper;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{AbortController, Event, EventSource, MessageEvent};

use crate::model::{Access, ConnState, expiring_notice, refusal, resync_notice};
use crate::state::{AppState, Session, now};

type Listener = Closure<dyn FnMut(Event)>;

/// An open `EventSource`, the Rust closures it calls and the controller of the request that
/// asks why the stream was refused. Dropping it closes the stream, aborts that request and
/// detaches the closures, so nothing outlives the component that made it.
struct Connection {
    source: EventSource,
    listeners: Vec<(&'static str, Listener)>,
    probe: AbortController,
}

impl Connection {
    fn open(url: &str, session: &Session, state: AppState) -> Result<Self, wasm_bindgen::JsValue> {
        let source = EventSource::new(url)?;
        let mut connection = Self {
            source,
            listeners: Vec::new(),
            probe: AbortController::new()?,
        };

        connection.listen("open", move |_| {
            state.conn.set(ConnState::Live);
            state.last_activity.set(Some(now()));
            state.auth_problem.set(None);
        })?;

        connection.listen("message", move |event| {
            let event: MessageEvent = event.unchecked_into();
            let text = event.data().as_string().unwrap_or_default();
            let id = Some(event.last_event_id()).filter(|id| !id.is_empty());
            let time = now();
            state.last_activity.set(Some(time.clone()));
            if id.is_some() {
                state.last_event_id.set(id.clone());
            }
            state.log.update(|log| {
                log.push_message(id, text, time);
            });
        })?;

        connection.listen(wire::RESYNC_EVENT, move |event| {
            let event: MessageEvent = event.unchecked_into();
            let data = event.data().as_string().unwrap_or_default();
            state
                .log
                .update(|log| log.push_notice(resync_notice(&data), now()));
        })?;

        connection.listen(wire::TOKEN_EXPIRING_EVENT, move |event| {
            let event: MessageEvent = event.unchecked_into();
            let data = event.data().as_string().unwrap_or_default();
            state.auth_required.set(true);
            state.token_notice.set(Some(expiring_notice(&data)));
        })?;

        let probe = connection.probe.clone();
        let (url, username, epoch) = (url.to_owned(), session.username.clone(), session.epoch);
        let sent_token = session.token.is_some();
        connection.listen("error", move |event| {
            let ready_state = event
                .target()
                .and_then(|t| t.dyn_into::<EventSource>().ok())
                .map_or(EventSource::CLOSED, |s| s.ready_state());
            state.conn.update(|c| *c = c.after_error(ready_state));
            if ready_state == EventSource::CLOSED {
                // The browser gave up for good: a non-200 answer, whose status `EventSource`
                // does not tell. Ask once more to read it.
                spawn_local(explain_refusal(
                    url.clone(),
                    username.clone(),
                    sent_token,
                    epoch,
                    probe.clone(),
                    state,
                ));
            }
        })?;

        Ok(connection)
    }

    fn listen(
        &mut self,
        kind: &'static str,
        handler: impl FnMut(Event) + 'static,
    ) -> Result<(), wasm_bindgen::JsValue> {
        let listener = Listener::new(handler);
        self.source
            .add_event_listener_with_callback(kind, listener.as_ref().unchecked_ref())?;
        self.listeners.push((kind, listener));
        Ok(())
    }
}

/// Requests the refused stream's URL again to read its status and one-line reason, then shows
/// a 401 or 403 in plain words next to the token field. A 200 this time (the refusal was
/// passing) is cut off at once; `probe` aborts the request if the stream is dropped first.
async fn explain_refusal(
    url: String,
    username: String,
    sent_token: bool,
    epoch: u64,
    probe: AbortController,
    state: AppState,
) {
    let signal = probe.signal();
    let Ok(response) = Request::get(&url).abort_signal(Some(&signal)).send().await else {
        return;
    };
    let status = response.status();
    if status == 200 {
        probe.abort();
        return;
    }
    let body = response.text().await.unwrap_or_default();
    let current = state
        .session
        .with_untracked(|s| s.as_ref().is_some_and(|s| s.epoch == epoch));
    if let Some(reason) = refusal(status, &body, Access::Subscribe, &username, sent_token)
        && current
    {
        state.auth_required.set(true);
        state.token_notice.set(None);
        state.auth_problem.set(Some(reason));
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.source.close();
        self.probe.abort();
        for (kind, listener) in &self.listeners {
            let _ = self
                .source
                .remove_event_listener_with_callback(kind, listener.as_ref().unchecked_ref());
        }
    }
}

/// Streams `session` into the shared state while mounted. Renders nothing; mounting a new
/// `Stream` (a new session) cleans this one up, which closes its `EventSource`.
#[component]
pub fn Stream(session: Session) -> impl IntoView {
    let state = expect_context::<AppState>();
    let url = crate::model::stream_url(
        session.version,
        &session.username,
        session.resume_after.as_deref(),
        session.token.as_deref(),
    );
    match Connection::open(&url, &session, state) {
        Ok(connection) => {
            // `EventSource` is not `Send`; the page is single-threaded, so this never moves.
            let connection = SendWrapper::new(connection);
            on_cleanup(move || drop(connection));
        }
        Err(error) => {
            state.conn.set(ConnState::Closed);
            let reason = error.as_string().unwrap_or_else(|| format!("{error:?}"));
            // Without the token: the log is on screen.
            let url = crate::model::stream_url(
                session.version,
                &session.username,
                session.resume_after.as_deref(),
                None,
            );
            state
                .log
                .update(|log| log.push_notice(format!("Could not open {url}: {reason}"), now()));
        }
    }
}
