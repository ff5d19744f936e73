//! The `switchyard` command line: run a node, or check what it needs (more subcommands arrive
//! with their issues).

use std::path::PathBuf;
use std::process::ExitCode;

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

/// Where a node's configuration comes from: a file, `SWITCHYARD_*` variables, flags.
#[derive(clap::Args)]
struct Settings {
    /// TOML configuration file; SWITCHYARD_* variables and flags override it
    #[arg(long, env = "SWITCHYARD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
}

impl Settings {
    fn load(self) -> anyhow::Result<Config> {
        Config::load(self.config.as_deref(), self.overrides).context("reading the configuration")
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the bus consumer, the actors, and the HTTP and gRPC servers.
    Node(Settings),
    /// Check that the configured bus and database can be reached; exit 0 only if both can.
    Doctor(Settings),
}

/// The log filter unless `SWITCHYARD_LOG` says otherwise. Broker clients' own lines are off:
/// what they report reaches switchyard as errors, which it logs once, with context.
const DEFAULT_LOG: &str =
    "info,h2=warn,hyper=warn,tower=warn,sqlx=warn,librdkafka=off,rdkafka=off,lapin=off";

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SWITCHYARD_LOG")
                .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
        )
        .init();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Node(settings) => {
            let config = settings.load()?;
            runtime.block_on(run_node(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor(settings) => {
            let config = settings.load()?;
            Ok(runtime.block_on(doctor(config)))
        }
    }
}

async fn run_node(config: Config) -> anyhow::Result<()> {
    let mut node = Node::start(&config).await?;
    tracing::info!(
        node_id = %config.node_id,
        bus = %config.bus,
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

async fn doctor(config: Config) -> ExitCode {
    let checks = switchyard::doctor::run(&config).await;
    let mut healthy = true;
    for check in &checks {
        match &check.result {
            Ok(detail) => println!("{}: OK, {detail}", check.part),
            Err(problem) => {
                healthy = false;
                println!("{}: PROBLEM: {problem}", check.part);
            }
        }
    }
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
