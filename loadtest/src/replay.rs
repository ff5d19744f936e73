//! The `replay` scenario: a topic of `task.created` events written by an in-process node
//! (embedded defaults), then rebuilt into a fresh SQLite database by `switchyard replay`,
//! beside the raw read of the same topic (each record read and decoded) in the same run, and
//! (`replay-writes`) beside the floor of the rows it wrote: a plain rusqlite writer doing them.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use actors::store::now_ms;
use anyhow::Context;
use broker_adapters::{Bus, EmbeddedBus, ReplayFrom};
use switchyard::Config;

use crate::node::{LoadNode, Marks, NodeOptions, Watcher, publish};
use crate::report::{Latencies, Report, Run, Timeline};
use crate::tasks::envelope;

/// The `replay` scenario's settings.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// How many events the topic holds.
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// Publishers writing the topic at once.
    #[arg(long, default_value_t = 32)]
    concurrency: u64,
    /// Give up waiting for the node to apply the topic after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<Vec<Report>> {
    let node = LoadNode::start(NodeOptions::default()).await?;
    let run = format!("lt{}", now_ms());
    let start = Instant::now();
    let watcher = Watcher::tasks_of(&node, start, args.events, "task.created", &run).await?;
    println!(
        "replay: writing a topic of {} task.created events, then replaying it",
        args.events
    );
    let published = Marks::new(start, args.events);
    let publishers = publish(
        &node.node,
        args.events,
        args.concurrency,
        Some(published.clone()),
        move |i| envelope(&run, i),
    );
    let deadline = start + Duration::from_secs(args.timeout_secs);
    watcher
        .run_of("applied live", deadline, publishers, &published)
        .await?;
    node.node.shutdown().await.context("stopping the node")?;
    let config = Config {
        data_dir: node.dir.path().to_owned(),
        ..Config::default()
    };
    let raw = raw_read(&config).await?;
    let into = format!(
        "sqlite://{}?mode=rwc",
        node.dir.path().join("replayed.sqlite").display()
    );
    let timeline = Mutex::new(Timeline::default());
    let started = Instant::now();
    let progress = |at: actors::Progress| {
        if at.read.is_multiple_of(1000) {
            let mut timeline = timeline.lock().unwrap_or_else(|e| e.into_inner());
            timeline.record(started.elapsed(), at.read);
        }
    };
    let summary = switchyard::replay(&config, ReplayFrom::Start, &into, false, &progress).await?;
    let elapsed = started.elapsed();
    let replayed = summary.replayed;
    anyhow::ensure!(
        replayed.records == raw.count && replayed.failed == 0,
        "the replay read {} records ({} not applied), the raw read {}",
        replayed.records,
        replayed.failed,
        raw.count
    );
    let run = Run {
        count: replayed.records,
        elapsed,
        latencies: Latencies::new()?,
        timeline: timeline.into_inner().unwrap_or_else(|e| e.into_inner()),
    };
    let floor = crate::floor::run(
        &node.dir.path().join("floor.sqlite"),
        replayed.records,
        crate::floor::REPLAYED,
    )
    .await?;
    let settings = serde_json::json!({
        "events": args.events,
        "applied": replayed.applied,
        "bus": "embedded",
    });
    Ok(vec![
        Report {
            scenario: "replay".into(),
            run: run.clone(),
            baseline: Some(raw),
            settings: settings.clone(),
        },
        Report {
            scenario: "replay-writes".into(),
            run,
            baseline: Some(floor),
            settings,
        },
    ])
}

/// The topic read by the bus's own replay, each record decoded: what a replay does before
/// its mailboxes.
async fn raw_read(config: &Config) -> anyhow::Result<Run> {
    let bus = EmbeddedBus::open(&config.data_dir.join("bus.sqlite")).await?;
    let started = Instant::now();
    let mut reader = bus.replay(schemas::EVENTS_TOPIC, ReplayFrom::Start).await?;
    let (mut count, mut timeline) = (0u64, Timeline::default());
    while let Some(record) = reader.next().await? {
        schemas::decode(&record.payload).context("a record of the topic")?;
        count += 1;
        if count.is_multiple_of(1000) {
            timeline.record(started.elapsed(), count);
        }
    }
    let elapsed = started.elapsed();
    bus.close().await?;
    Ok(Run {
        count,
        elapsed,
        latencies: Latencies::new()?,
        timeline,
    })
}
