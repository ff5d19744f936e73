//! switchyard's load generator: drives a scenario and reports throughput and latency
//! percentiles, beside the raw client doing the same work where the scenario has one.

// The allocator comes with the `switchyard` library (`src/allocator.rs`).
mod actors_memory;
mod bus;
mod chart;
mod drive;
mod floor;
mod grpc_read;
mod ingest_http;
mod lifecycle;
mod node;
mod progress;
mod replay;
mod report;
mod tasks;
mod webhook;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Load scenarios for switchyard, reported as msgs/s and latency percentiles.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Also write the results as JSON to this file.
    #[arg(long, global = true, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also draw the results as an SVG chart (throughput over time, latency percentiles).
    #[arg(long, global = true, value_name = "FILE.svg")]
    chart: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Scenario {
    /// task.created events through an in-process node, publish to persisted state.
    Tasks(tasks::TasksArgs),
    /// Publish and consume through a bus adapter, and through its raw client in the same run.
    Bus(bus::BusArgs),
    /// Whole task lifecycles worked by no-op workers over the gRPC link, beside the rusqlite
    /// floor of the same rows.
    Lifecycle(lifecycle::LifecycleArgs),
    /// Three-step DAGs one at a time, from SubmitDag to the last step done.
    Dag(lifecycle::DagArgs),
    /// Resident memory per live task actor, and while idle ones passivate.
    Actors(actors_memory::ActorsArgs),
    /// POST /v1/events beside an axum hello-world that decodes the same bodies.
    IngestHttp(ingest_http::IngestArgs),
    /// Signed Slack webhooks beside an axum hello-world, then POST /v1/events beside its own.
    Webhook(webhook::WebhookArgs),
    /// GetTask on a node holding many tasks beside the health check on the same server, then
    /// ListTasks pages by state.
    GrpcRead(grpc_read::GrpcReadArgs),
    /// A topic rebuilt into a fresh database by `switchyard replay`, beside the raw read of it,
    /// then beside a plain rusqlite writer doing the rows it wrote.
    Replay(replay::ReplayArgs),
}

fn main() -> anyhow::Result<()> {
    // First, before the node opens its databases: SQLite takes an allocator only then.
    switchyard::sqlite_on_jemalloc();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    let reports = runtime.block_on(async {
        match cli.scenario {
            Scenario::Tasks(args) => tasks::run(args).await.map(|r| vec![r]),
            Scenario::Bus(args) => bus::run(args).await.map(|r| vec![r]),
            Scenario::Lifecycle(args) => lifecycle::run(args).await.map(|r| vec![r]),
            Scenario::Dag(args) => lifecycle::run_dags(args).await.map(|r| vec![r]),
            Scenario::Actors(args) => actors_memory::run(args).await,
            Scenario::IngestHttp(args) => ingest_http::run(args).await.map(|r| vec![r]),
            Scenario::GrpcRead(args) => grpc_read::run(args).await,
            Scenario::Webhook(args) => webhook::run(args).await,
            Scenario::Replay(args) => replay::run(args).await,
        }
    })?;
    report::finish(&reports, cli.json.as_deref(), cli.chart.as_deref())
}
