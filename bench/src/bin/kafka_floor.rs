//! Reads a topic's records with the Kafka client alone and does nothing with them: what
//! librdkafka and rdkafka cost per record, for loadgen's absent-cpu scenario to set beside the
//! server's figure (see `bench::scenario::absent::floor`).

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = bench::scenario::absent::FloorOpts::parse();
    let cpu = bench::scenario::absent::read_only(&opts).await?;
    println!("{}", serde_json::to_string(&cpu)?);
    Ok(())
}
