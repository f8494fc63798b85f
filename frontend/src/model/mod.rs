//! Plain data and rules behind the page, free of DOM calls so they are unit-tested on their own
//! (in node under `wasm-bindgen-test-runner`, and natively).

mod api;
mod auth;
mod conn;
mod log;
mod send;
mod time;

pub use api::{ApiVersion, encode_component, message_url, stream_url, username_problem};
pub use auth::{Access, TOKEN_STORAGE_KEY, bearer, clean_token, expiring_notice, refusal};
pub use conn::ConnState;
pub use log::{Entry, EntryKind, MAX_ENTRIES, MAX_SEEN_IDS, MessageLog, resync_notice};
pub use send::{SendOutcome, enter_sends, first_line};
pub use time::clock;
