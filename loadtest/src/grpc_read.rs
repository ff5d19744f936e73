//! The `grpc-read` scenario: a node holding `--tasks` stored tasks answers `GetTask` for random
//! ids and walks `ListTasks` pages by state, beside the health service's `Check` on the same
//! server and channel (the hello-world of that gRPC stack) in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actors::store::entities::tasks;
use actors::store::now_ms;
use anyhow::Context;
use schemas::proto::tasks_client::TasksClient;
use schemas::proto::{GetTaskRequest, ListTasksRequest};
use sea_orm::{EntityTrait, PaginatorTrait};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::lifecycle::bearer;
use crate::node::{LoadNode, publish};
use crate::progress::Progress;
use crate::report::{Latencies, Report, Run, Timeline};

/// The `grpc-read` scenario's settings.
#[derive(Debug, clap::Args)]
pub struct GrpcReadArgs {
    /// Tasks stored before reading.
    #[arg(long, default_value_t = 10_000)]
    tasks: u64,
    /// `GetTask` calls (and as many health checks).
    #[arg(long, default_value_t = 20_000)]
    reads: u64,
    /// `ListTasks` pages walked, 100 tasks each.
    #[arg(long, default_value_t = 200)]
    pages: u64,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: u64,
}

/// Runs `calls` calls of `call`, `concurrency` at once; their latencies and the time taken.
async fn drive<F, Fut>(calls: u64, concurrency: u64, call: F) -> anyhow::Result<Run>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, call) = (next.clone(), call.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Latencies::new()?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= calls {
                    return anyhow::Ok(latencies);
                }
                let began = Instant::now();
                call(i).await?;
                latencies.record(began.elapsed())?;
            }
        }));
    }
    let mut latencies = Latencies::new()?;
    for worker in workers {
        latencies.merge(&worker.await??)?;
    }
    Ok(Run {
        count: calls,
        elapsed: start.elapsed(),
        latencies,
        timeline: Timeline::default(),
    })
}

pub async fn run(args: GrpcReadArgs) -> anyhow::Result<Vec<Report>> {
    let LoadNode {
        node,
        store,
        admin,
        grpc,
        dir: _dir,
    } = LoadNode::start(None).await?;
    let run = format!("gr{}", now_ms());

    println!("grpc-read: storing {} tasks", args.tasks);
    let publishers = {
        let run = run.clone();
        publish(&node, args.tasks, 256, move |i| {
            crate::tasks::envelope(&run, i)
        })
    };
    let mut progress = Progress::new("stored", args.tasks);
    loop {
        let stored = tasks::Entity::find().count(store.connection()).await?;
        progress.set(stored);
        if stored >= args.tasks {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress.finish();
    for publisher in publishers {
        publisher.await??;
    }

    let channel = Channel::from_shared(format!("http://{grpc}"))?
        .connect()
        .await
        .context("the node's gRPC")?;
    println!(
        "  {} GetTask and {} health checks, {} at a time",
        args.reads, args.reads, args.concurrency
    );
    let get = {
        let (client, admin, run, tasks) = (
            TasksClient::new(channel.clone()),
            admin.clone(),
            run.clone(),
            args.tasks,
        );
        drive(args.reads, args.concurrency, move |i| {
            let (mut client, admin) = (client.clone(), admin.clone());
            // A spread of ids over the whole table, not a hot few.
            let task_id = format!("{run}-{}", i.wrapping_mul(2_654_435_761) % tasks);
            async move {
                client
                    .get_task(bearer(&admin, GetTaskRequest { task_id }))
                    .await?;
                Ok(())
            }
        })
        .await?
    };
    let check = {
        let client = HealthClient::new(channel.clone());
        drive(args.reads, args.concurrency, move |_| {
            let mut client = client.clone();
            async move {
                client.check(HealthCheckRequest::default()).await?;
                Ok(())
            }
        })
        .await?
    };

    println!(
        "  {} ListTasks pages of pending tasks, one after another",
        args.pages
    );
    let mut tasks_client = TasksClient::new(channel);
    let mut latencies = Latencies::new()?;
    let (start, mut page_token) = (Instant::now(), String::new());
    for _ in 0..args.pages {
        let request = ListTasksRequest {
            state: Some("pending".into()),
            page_size: 100,
            page_token: page_token.clone(),
            agent_id: None,
        };
        let began = Instant::now();
        let page = tasks_client
            .list_tasks(bearer(&admin, request))
            .await?
            .into_inner();
        latencies.record(began.elapsed())?;
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    let list = Run {
        count: args.pages,
        elapsed: start.elapsed(),
        latencies,
        timeline: Timeline::default(),
    };
    node.shutdown().await.context("stopping the node")?;
    let settings = serde_json::json!({ "tasks": args.tasks, "concurrency": args.concurrency });
    Ok(vec![
        Report {
            scenario: "grpc-read".into(),
            run: get,
            baseline: Some(check),
            settings: settings.clone(),
        },
        Report {
            scenario: "grpc-list".into(),
            run: list,
            baseline: None,
            settings,
        },
    ])
}
