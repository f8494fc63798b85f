//! Handles that cut a stream from outside: the hub drops a subscriber that stopped reading,
//! and the socket under it must go too, or hyper waits on a full socket forever.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicBool, Ordering::Relaxed},
};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

/// Cuts the TCP connection a request arrived on. Found in request extensions.
///
/// Only event streams ever need cutting, so the token and whatever watches it are made on the
/// first call to [`Disconnect::token`]: other connections pay nothing for it while they run.
#[derive(Clone)]
pub struct Disconnect(Arc<Cut>);

struct Cut {
    token: OnceLock<CancellationToken>,
    /// The connection is over: a cancelled token then only releases [`abort_on_cut`].
    ended: AtomicBool,
    /// The connection's task, set right after it is spawned.
    task: OnceLock<AbortHandle>,
    /// The connection watches the token itself (the stream path) instead of a helper task.
    watched: bool,
}

impl Disconnect {
    pub(super) fn new(watched: bool) -> Self {
        Self(Arc::new(Cut {
            token: OnceLock::new(),
            ended: AtomicBool::new(false),
            task: OnceLock::new(),
            watched,
        }))
    }

    pub fn token(&self) -> CancellationToken {
        self.0
            .token
            .get_or_init(|| {
                let token = CancellationToken::new();
                if !self.0.watched {
                    tokio::spawn(abort_on_cut(token.clone(), self.0.clone()));
                }
                token
            })
            .clone()
    }

    /// A cut for one HTTP/2 stream, whose task watches `token` itself.
    pub(super) fn stream(token: CancellationToken) -> Self {
        let cut = Self::new(true);
        let _ = cut.0.token.set(token);
        cut
    }

    /// The connection's task, aborted on a cut.
    pub(super) fn set_task(&self, task: AbortHandle) {
        let _ = self.0.task.set(task);
    }

    pub(super) fn issued(&self) -> Option<&CancellationToken> {
        self.0.token.get()
    }
}

/// Aborts a connection's task once its token is cancelled: by the hub, or by the connection
/// itself as it ends, which lets this task go.
async fn abort_on_cut(token: CancellationToken, cut: Arc<Cut>) {
    token.cancelled().await;
    if cut.ended.load(Relaxed) {
        return;
    }
    loop {
        if let Some(task) = cut.task.get() {
            tracing::debug!("connection cut");
            task.abort();
            return;
        }
        // Cancelled before the accept loop stored the handle: it is about to.
        tokio::task::yield_now().await;
    }
}

/// Cancels a connection's token when its task ends or is aborted, so a helper task waiting on
/// the token ends too.
pub(super) struct ReleaseOnDrop(pub(super) Disconnect);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.0.ended.store(true, Relaxed);
        if let Some(token) = self.0.issued() {
            token.cancel();
        }
    }
}
