//! The `tasks` scenario: `task.created` events published onto the bus of an in-process node
//! (embedded defaults), measured from publish to the task's persisted state.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::store::entities::{processed_messages, tasks};
use actors::store::now_ms;
use anyhow::Context;
use schemas::{Capabilities, Envelope, Message, Priority, TaskCreated};
use sea_orm::{EntityTrait, PaginatorTrait};
use switchyard::{Config, Node};

use crate::progress::Progress;
use crate::report::{Latencies, Report, Run, Timeline};

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
    let temp = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_owned());
    let config = Config {
        data_dir,
        http: "127.0.0.1:0".parse()?,
        grpc: "127.0.0.1:0".parse()?,
        partitions: args.partitions,
        database_url: args.database_url.clone().unwrap_or_default(),
        ..Config::default()
    };
    let node = Node::start(&config).await?;
    let store = actors::Store::connect(&config.database_url()).await?;
    let bus = node.bus();
    let run = format!("lt{}", now_ms());
    let before = tasks::Entity::find().count(store.connection()).await?;

    println!(
        "tasks: publishing {} task.created events, {} at a time",
        args.events, args.concurrency
    );
    let published_at = Arc::new(Mutex::new(vec![0u64; args.events as usize]));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    // Sampled from the start, publishing included: the timeline, the progress shown, and when
    // the last task was persisted.
    let sampler = {
        let (store, events) = (store.clone(), args.events);
        tokio::spawn(async move {
            let mut timeline = Timeline::default();
            let mut progress = Progress::new("persisted", events);
            loop {
                let persisted = tasks::Entity::find().count(store.connection()).await? - before;
                timeline.record(start.elapsed(), persisted);
                progress.set(persisted);
                if persisted >= events {
                    progress.finish();
                    return anyhow::Ok((timeline, start.elapsed()));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut publishers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (bus, next, published_at, run) =
            (bus.clone(), next.clone(), published_at.clone(), run.clone());
        let (events, rate) = (args.events, args.rate);
        publishers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events {
                    return Ok::<_, anyhow::Error>(());
                }
                if rate > 0 {
                    let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let envelope = envelope(&run, i);
                actors::publish(bus.as_ref(), &envelope)
                    .await
                    .map_err(|e| anyhow::anyhow!(e.error))?;
                published_at.lock().expect("no publisher panics holding it")[i as usize] =
                    envelope.time;
            }
        }));
    }
    for publisher in publishers {
        publisher.await??;
    }
    println!("  published in {:.2?}", start.elapsed());

    let deadline = start + Duration::from_secs(args.timeout_secs);
    let Ok(sampled) = tokio::time::timeout_at(deadline.into(), sampler).await else {
        let persisted = tasks::Entity::find().count(store.connection()).await? - before;
        anyhow::bail!("only {persisted} of {} persisted in time", args.events);
    };
    let (timeline, elapsed) = sampled??;

    let published_at = published_at.lock().expect("publishers are done").clone();
    let mut latencies = Latencies::new()?;
    // A task's times are its messages' times; when the node wrote it is the processed id's.
    for row in processed_messages::Entity::find()
        .all(store.connection())
        .await?
    {
        let Some(i) = row
            .message_id
            .strip_prefix(&format!("{run}-"))
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        let persisted_ms = u64::try_from(row.processed_at).unwrap_or(0);
        latencies.record(Duration::from_millis(
            persisted_ms.saturating_sub(published_at[i]),
        ))?;
    }
    node.shutdown().await.context("stopping the node")?;
    let floor_path = temp.path().join("floor.sqlite");
    let floor = match args.database_url {
        Some(_) => None,
        None => Some(crate::floor::run(&floor_path, args.events, crate::floor::CREATED).await?),
    };
    Ok(Report {
        scenario: "tasks".into(),
        run: Run {
            count: args.events,
            elapsed,
            latencies,
            timeline,
        },
        baseline: floor,
        settings: serde_json::json!({
            "concurrency": args.concurrency,
            "partitions": args.partitions,
            "offered_rate": args.rate,
        }),
    })
}
