//! Parses records like absent-cpu's and puts them in a v3 hub, with no Kafka and no server
//! around it: the server's own share of a record for a user without a stream, measured alone
//! (see `bench::scenario::absent`). It allocates as the server does.

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let opts = bench::scenario::absent::InsertOpts::parse();
    let us = bench::scenario::absent::insert_alone(&opts)?;
    println!("{}", serde_json::to_string(&us)?);
    Ok(())
}
