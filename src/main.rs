//! The `switchyard` command line: run a node (more subcommands arrive with their issues).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard::Node;
use switchyard::config::{Config, Overrides};
use tracing_subscriber::EnvFilter;

/// switchyard: an actor-model message backbone for task and agent orchestration.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the bus consumer, the actors, and the HTTP and gRPC servers.
    Node {
        /// TOML configuration file; `SWITCHYARD_*` variables and flags override it.
        #[arg(long, env = "SWITCHYARD_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Directory for the embedded bus, the SQLite database and admin.token [default: ./switchyard-data]
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// HTTP listen address [default: 127.0.0.1:8080]
        #[arg(long, value_name = "ADDR")]
        http: Option<std::net::SocketAddr>,
        /// gRPC listen address [default: 127.0.0.1:50051]
        #[arg(long, value_name = "ADDR")]
        grpc: Option<std::net::SocketAddr>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SWITCHYARD_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,h2=warn,hyper=warn,tower=warn,sqlx=warn")),
        )
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Node {
            config,
            data_dir,
            http,
            grpc,
        } => {
            let overrides = Overrides {
                data_dir,
                http,
                grpc,
            };
            let config =
                Config::load(config.as_deref(), overrides).context("reading the configuration")?;
            runtime.block_on(run_node(config))
        }
    }
}

async fn run_node(config: Config) -> anyhow::Result<()> {
    let mut node = Node::start(&config).await?;
    tracing::info!(
        data_dir = %config.data_dir.display(),
        http = %config.http,
        grpc = %config.grpc,
        "node started"
    );
    tokio::select! {
        signal = shutdown_signal() => signal?,
        () = node.failed() => {
            // Exit non-zero so that whatever runs the node (systemd, Kubernetes) restarts it.
            anyhow::bail!("the supervision tree failed: too many restarts; see the log above");
        }
    }
    tracing::info!("shutting down");
    node.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
