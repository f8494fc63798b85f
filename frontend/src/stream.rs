//! The `EventSource` behind a [`Session`], feeding [`AppState`].

use leptos::prelude::*;
use send_wrapper::SendWrapper;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{Event, EventSource, MessageEvent};

use crate::model::{ConnState, resync_notice};
use crate::state::{AppState, Session, now};

type Listener = Closure<dyn FnMut(Event)>;

/// An open `EventSource` and the Rust closures it calls. Dropping it closes the stream and
/// detaches the closures, so nothing outlives the component that made it.
struct Connection {
    source: EventSource,
    listeners: Vec<(&'static str, Listener)>,
}

impl Connection {
    fn open(url: &str, state: AppState) -> Result<Self, wasm_bindgen::JsValue> {
        let source = EventSource::new(url)?;
        let mut connection = Self {
            source,
            listeners: Vec::new(),
        };

        connection.listen("open", move |_| {
            state.conn.set(ConnState::Live);
            state.last_activity.set(Some(now()));
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

        connection.listen("error", move |event| {
            let ready_state = event
                .target()
                .and_then(|t| t.dyn_into::<EventSource>().ok())
                .map_or(EventSource::CLOSED, |s| s.ready_state());
            state.conn.update(|c| *c = c.after_error(ready_state));
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

impl Drop for Connection {
    fn drop(&mut self) {
        self.source.close();
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
    );
    match Connection::open(&url, state) {
        Ok(connection) => {
            // `EventSource` is not `Send`; the page is single-threaded, so this never moves.
            let connection = SendWrapper::new(connection);
            on_cleanup(move || drop(connection));
        }
        Err(error) => {
            state.conn.set(ConnState::Closed);
            let reason = error.as_string().unwrap_or_else(|| format!("{error:?}"));
            state
                .log
                .update(|log| log.push_notice(format!("Could not open {url}: {reason}"), now()));
        }
    }
}
