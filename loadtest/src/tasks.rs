//! The `tasks` scenario: `task.created` events published onto the bus of an in-process node
//! (embedded defaults), measured from publish to the moment the node's `Watch` stream tells
//! the task was applied and written.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actors::store::now_ms;
use anyhow::Context;
use schemas::{Capabilities, Envelope, Message, Priority, TaskCreated};
use switchyard::Config;

use crate::node::{LoadNode, Marks, NodeOptions, Watcher, publish};
use crate::report::Report;

/// The `tasks` scenario's settings.
#[derive(Debug, clap::Args)]
pub struct TasksArgs {
    /// How many events to publish.
    #[arg(long, default_value_t = 1000)]
    events: u64,
    /// Publishers running at once.
    #[arg(long, default_value_t = 32)]
    concurrency: u64,
    /// Offered load in events/s (0: as fast as the publishers go). Below capacity, latency
    /// shows the pipeline itself rather than a backlog.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Partitions of the events topic (a fresh data directory takes any; an existing one keeps its own).
    #[arg(long, default_value_t = Config::default().partitions)]
    partitions: u32,
    /// Node data directory (default: a fresh temporary one).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The node's state database (default: SQLite in its data directory); a PostgreSQL URL
    /// measures the same work on PostgreSQL, without the SQLite floor beside it.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Give up waiting for persistence after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

pub(crate) fn envelope(run: &str, i: u64) -> Envelope {
    Envelope::new(
        format!("{run}-{i}"),
        "loadtest",
        now_ms(),
        "loadtest",
        Message::TaskCreated(TaskCreated {
            task_id: format!("{run}-{i}"),
            title: format!("load {i}"),
            spec: "true".into(),
            priority: Priority::Normal,
            requirements: Capabilities::default(),
            depends_on: Vec::new(),
            ..Default::default()
        }),
    )
}

pub async fn run(args: TasksArgs) -> anyhow::Result<Report> {
    let options = NodeOptions {
        database_url: args.database_url.clone(),
        partitions: Some(args.partitions),
        data_dir: args.data_dir.clone(),
        ..NodeOptions::default()
    };
    let node = LoadNode::start(options).await?;
    let run = format!("lt{}", now_ms());
    let start = Instant::now();
    // Persisted means told on the Watch stream: the node's mailbox applied and wrote it.
    let watcher = Watcher::tasks_of(&node, start, args.events, "task.created", &run).await?;
    println!(
        "tasks: publishing {} task.created events, {} at a time",
        args.events, args.concurrency
    );
    let published = Marks::new(start, args.events);
    let publishers = if args.rate == 0 {
        let run = run.clone();
        publish(
            &node.node,
            args.events,
            args.concurrency,
            Some(published.clone()),
            move |i| envelope(&run, i),
        )
    } else {
        paced(&node, &run, &args, start, published.clone())
    };
    let deadline = start + Duration::from_secs(args.timeout_secs);
    let measured = watcher
        .run_of("persisted", deadline, publishers, &published)
        .await?;
    node.node.shutdown().await.context("stopping the node")?;
    let floor = match args.database_url {
        Some(_) => None,
        None => {
            let path = node.dir.path().join("floor.sqlite");
            Some(crate::floor::run(&path, args.events, crate::floor::CREATED).await?)
        }
    };
    Ok(Report {
        scenario: "tasks".into(),
        run: measured,
        baseline: floor,
        settings: serde_json::json!({
            "concurrency": args.concurrency,
            "partitions": args.partitions,
            "offered_rate": args.rate,
        }),
    })
}

/// Publishers that offer `args.rate` events a second in all, each marked as it goes.
fn paced(
    node: &LoadNode,
    run: &str,
    args: &TasksArgs,
    start: Instant,
    published: Arc<Marks>,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let next = Arc::new(AtomicU64::new(0));
    (0..args.concurrency.max(1))
        .map(|_| {
            let (bus, next, published, run) = (
                node.node.bus(),
                next.clone(),
                published.clone(),
                run.to_owned(),
            );
            let (events, rate) = (args.events, args.rate);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= events {
                        return Ok(());
                    }
                    let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                    let envelope = envelope(&run, i);
                    published.mark(i);
                    actors::publish(bus.as_ref(), &envelope)
                        .await
                        .map_err(|e| anyhow::anyhow!(e.error))?;
                }
            })
        })
        .collect()
}
