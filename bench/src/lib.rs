//! Benchmark harness for `ssepush`: a load generator (`loadgen`), a naive reference server
//! (`baseline`) that speaks the same v2 API, and a soak with faults (`soak`).
//!
//! # Layout
//! - [`sse`]: an incremental Server-Sent Events parser (WHATWG HTML §9.2 line and field rules).
//! - [`http`]: a minimal HTTP/1.1 client over raw tokio TCP: SSE streams bound to spread
//!   source addresses, and keep-alive POST connections.
//! - [`procstat`]: spawning the servers under test and measuring them from outside
//!   (`/proc/<pid>/status` VmRSS, `/proc/<pid>/stat` utime + stime).
//! - [`table`]: the markdown result table, with ratios and targets.
//! - [`scenario`]: one module per scenario (idle, fanout-http, wide, kafka, churn).
//! - [`soak`]: the soak (`soak` binary): two instances, churn, faults, and a ledger.
//! - [`baseline`]: the reference server's router, written as the simplest tutorial would.
//! - [`tansu`]: a tansu broker child process that can be killed and started again.

pub mod baseline;
pub mod http;
pub mod procstat;
pub mod scenario;
pub mod soak;
pub mod sse;
pub mod table;
pub mod tansu;
