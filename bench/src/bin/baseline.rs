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
    // The same listen backlog as ssepush's default, so both see the same connect bursts
    // (tokio's default of 1024 makes the idle scenario's opens wait out 1 s SYN retries).
    let addr = std::net::SocketAddr::new(args.host, args.port);
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    let app = bench::baseline::router(Duration::from_millis(args.keep_alive_ms));
    axum::serve(listener, app).await?;
    Ok(())
}
