//! librdkafka's blocking calls (metadata, watermarks, offset lookups, seeks) on a thread of
//! their own per caller, not on tokio's blocking pool.
//!
//! The pool starts another thread whenever calls overlap, as they do while a broker is down and
//! each call waits out its timeout. glibc gives each new thread that allocates (librdkafka does,
//! with `malloc`) an arena of its own and keeps it: after one broker outage the soak saw two
//! more arenas, about 400 KiB of RSS that never went away. A fixed thread per caller allocates
//! in one arena from start-up on.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::mpsc,
};

type Job = Box<dyn FnOnce() + Send>;

/// A cheap `Clone` handle on one thread that runs blocking calls in turn. The thread ends when
/// the last handle is dropped.
#[derive(Clone)]
pub struct Calls {
    jobs: mpsc::Sender<Job>,
}

/// The call did not run to its end: it panicked, or its thread is gone.
#[derive(Debug, thiserror::Error)]
#[error("the blocking call did not complete")]
pub struct Lost;

impl Calls {
    /// Starts the thread, named `name`.
    pub fn start(name: &str) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                for job in queue {
                    job();
                }
            })?;
        Ok(Self { jobs })
    }

    /// Runs `call` on the thread, after the calls queued before it.
    pub async fn run<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Lost> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // A panic drops `done`: the caller gets `Lost`, and the thread lives on.
            if let Ok(value) = catch_unwind(AssertUnwindSafe(call)) {
                let _ = done.send(value);
            }
        });
        self.jobs.send(job).map_err(|_| Lost)?;
        result.await.map_err(|_| Lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_calls_in_turn_on_one_named_thread_and_survives_a_panic() {
        let calls = Calls::start("test-calls").unwrap();
        let name = calls
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("test-calls"));
        let id = calls.run(|| std::thread::current().id()).await.unwrap();
        assert!(calls.run(|| -> u8 { panic!("in a call") }).await.is_err());
        assert_eq!(calls.run(|| std::thread::current().id()).await.unwrap(), id);
        assert_eq!(calls.run(|| 7).await.unwrap(), 7);
    }
}
