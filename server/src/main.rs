use server::{
    Config,
    config::{Command, LogFormat},
    serve,
};
use std::{io::IsTerminal, net::SocketAddr};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_command_line();
    if let Some(command) = &config.command {
        return run_tool(command);
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stdout().is_terminal()).init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    // Every stream is a socket; the soft limit is often 1024 while the hard one allows ~20k.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
    let addr = SocketAddr::new(config.host, config.port);
    let listener = serve::bind(addr, config.backlog)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    server::run(listener, config, shutdown_signal()).await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn run_tool(command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Token(args) => {
            println!("{}", server::auth::mint::token(args)?);
            Ok(())
        }
        Command::SelfSigned { cert, key, names } => {
            use std::os::unix::fs::OpenOptionsExt;
            let (cert_pem, key_pem) = serve::tls::self_signed(names)?;
            std::fs::write(cert, cert_pem)?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(key)?;
            std::io::Write::write_all(&mut file, key_pem.as_bytes())?;
            println!(
                "wrote {} and {} for {}",
                cert.display(),
                key.display(),
                names.join(", ")
            );
            Ok(())
        }
    }
}
