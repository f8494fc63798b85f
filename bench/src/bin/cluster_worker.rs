//! Holds one instance's streams for loadgen's `cluster` scenario (a process of its own, since a
//! process may hold 20,000 descriptors); see `bench::scenario::cluster`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bench::scenario::cluster::worker(bench::scenario::cluster::WorkerOpts::parse()).await
}
