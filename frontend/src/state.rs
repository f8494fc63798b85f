//! The page's shared state, provided once by [`crate::App`] and read with `expect_context`.

use leptos::prelude::*;

use crate::model::{ApiVersion, ConnState, MessageLog, clean_token, clock, username_problem};

/// One requested stream. A new value (even with the same user and version) means a new
/// `EventSource`: the old one is closed when its component is cleaned up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub username: String,
    pub version: ApiVersion,
    /// Replay what came after this id (a reconnect of the same user and version).
    pub resume_after: Option<String>,
    /// Makes every connect distinct, so "Connect" after a refused stream retries.
    pub epoch: u64,
    /// The token the stream is opened with (`access_token`), when the server wants one.
    pub token: Option<String>,
}

/// Everything the components share. All fields are signals, so the struct is `Copy`.
#[derive(Debug, Clone, Copy)]
pub struct AppState {
    /// The username field as typed.
    pub draft_name: RwSignal<String>,
    /// Set once the user typed or pressed Connect, so an empty field is not an error at load.
    pub name_touched: RwSignal<bool>,
    /// The version selector.
    pub draft_version: RwSignal<ApiVersion>,
    /// The stream being shown, if any.
    pub session: RwSignal<Option<Session>>,
    pub conn: RwSignal<ConnState>,
    /// `MessageEvent.lastEventId` of the newest message: what the browser sends on reconnect.
    pub last_event_id: RwSignal<Option<String>>,
    /// Time of the last sign of life (open or message). Keep-alive comments are invisible to
    /// `EventSource`, so this is the closest thing to a heartbeat the page can show.
    pub last_activity: RwSignal<Option<String>>,
    pub log: RwSignal<MessageLog>,
    /// Whether the server wants a token (`GET /auth`, or a 401/403 seen since). Off, the page
    /// shows no token field.
    pub auth_required: RwSignal<bool>,
    /// The token in use for this tab, kept in `sessionStorage`.
    pub token: RwSignal<Option<String>>,
    /// Why the server refused the stream (401/403), in plain words.
    pub auth_problem: RwSignal<Option<String>>,
    /// The last `token-expiring` notice of the current stream.
    pub token_notice: RwSignal<Option<String>>,
    /// Which user and version the log belongs to; switching either starts a fresh log.
    log_owner: StoredValue<Option<(String, ApiVersion)>>,
    next_epoch: StoredValue<u64>,
}

impl AppState {
    pub fn new() -> Self {
        Self {
            draft_name: RwSignal::new(String::new()),
            name_touched: RwSignal::new(false),
            draft_version: RwSignal::new(ApiVersion::default()),
            session: RwSignal::new(None),
            conn: RwSignal::new(ConnState::Closed),
            last_event_id: RwSignal::new(None),
            last_activity: RwSignal::new(None),
            log: RwSignal::new(MessageLog::default()),
            auth_required: RwSignal::new(false),
            token: RwSignal::new(crate::token::stored_token()),
            auth_problem: RwSignal::new(None),
            token_notice: RwSignal::new(None),
            log_owner: StoredValue::new(None),
            next_epoch: StoredValue::new(0),
        }
    }

    /// Why the typed username would be refused, once it is worth saying.
    pub fn name_problem(&self) -> Option<String> {
        if self.name_touched.get() {
            username_problem(&self.draft_name.get())
        } else {
            None
        }
    }

    /// Whether the stream shown is the one the form describes and still alive, i.e. whether
    /// the main button disconnects rather than (re)connects.
    pub fn is_connected_to_draft(&self) -> bool {
        let conn = self.conn.get();
        self.session.with(|s| {
            s.as_ref().is_some_and(|s| {
                s.username == *self.draft_name.read() && s.version == self.draft_version.get()
            })
        }) && conn != ConnState::Closed
    }

    /// Opens a stream for what the form says, replacing any current one. Returns false (and
    /// shows the reason) when the username is refused.
    pub fn connect(&self) -> bool {
        self.name_touched.set(true);
        let username = self.draft_name.get_untracked();
        if username_problem(&username).is_some() {
            return false;
        }
        let version = self.draft_version.get_untracked();
        let owner = Some((username.clone(), version));
        let resume_after = if self.log_owner.get_value() == owner {
            // Same user and version as the messages on screen: continue after the last one.
            self.last_event_id.get_untracked()
        } else {
            self.log_owner.set_value(owner);
            self.log.set(MessageLog::default());
            self.last_event_id.set(None);
            self.last_activity.set(None);
            None
        };
        self.open(username, version, resume_after);
        true
    }

    /// Replaces the current stream with a new one for `username` on `version`, with the
    /// current token.
    fn open(&self, username: String, version: ApiVersion, resume_after: Option<String>) {
        let epoch = self.next_epoch.get_value();
        self.next_epoch.set_value(epoch + 1);
        self.auth_problem.set(None);
        self.token_notice.set(None);
        self.conn.set(ConnState::Connecting);
        self.session.set(Some(Session {
            username,
            version,
            resume_after,
            epoch,
            token: self.token.get_untracked(),
        }));
    }

    /// Takes `pasted` as this tab's token (an empty one forgets it). A stream already shown,
    /// live or refused, is opened again with it, continuing after the last message shown, so
    /// a token renewed before or after the old one expired misses nothing.
    pub fn use_token(&self, pasted: &str) {
        let token = clean_token(pasted);
        crate::token::store_token(token.as_deref());
        self.token.set(token);
        if let Some(session) = self.session.get_untracked() {
            let resume_after = self.last_event_id.get_untracked();
            self.open(session.username, session.version, resume_after);
        }
    }

    pub fn disconnect(&self) {
        self.session.set(None);
        self.conn.set(ConnState::Closed);
        self.auth_problem.set(None);
        self.token_notice.set(None);
    }

    /// Where the composer publishes: the open stream's user and version, or else the form's.
    /// `Err` says why sending is not possible.
    pub fn send_target(&self) -> Result<(String, ApiVersion), &'static str> {
        let (username, version) = match self.session.get() {
            Some(s) => (s.username, s.version),
            None => (self.draft_name.get(), self.draft_version.get()),
        };
        if !version.can_send() {
            Err("v1 only streams a greeting; choose v2 or v3 to send.")
        } else if username_problem(&username).is_some() {
            Err("Enter a valid username to send.")
        } else {
            Ok((username, version))
        }
    }
}

impl Default for AppState {
    fn default() -> Self {
        Self::new()
    }
}

/// The local wall-clock time as `HH:MM:SS`.
pub fn now() -> String {
    let date = js_sys::Date::new_0();
    clock(date.get_hours(), date.get_minutes(), date.get_seconds())
}
