//! The naive reference server: `baseline --port 3001`.

use clap::Parser;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Naive SSE push server (axum + one Mutex<HashMap>) to benchmark against")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on.
    #[arg(long, default_value_t = 3001)]
    port: u16,
    /// Keep-alive comment interval in milliseconds.
    #[arg(long, default_value_t = 1000)]
    keep_alive_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind((args.host, args.port)).await?;
    let app = bench::baseline::router(Duration::from_millis(args.keep_alive_ms));
    axum::serve(listener, app).await?;
    Ok(())
}
