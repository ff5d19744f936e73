//! The `grpc-read` scenario: a node holding `--tasks` stored tasks answers `GetTask` for random
//! ids and walks `ListTasks` pages by state, beside the health service's `Check` on the same
//! server and channel (the hello-world of that gRPC stack) in the same run.

use std::time::{Duration, Instant};

use actors::store::now_ms;
use anyhow::Context;
use schemas::proto::tasks_client::TasksClient;
use schemas::proto::{GetTaskRequest, ListTasksRequest};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::drive::drive;
use crate::node::{LoadNode, NodeOptions, Watcher, bearer, publish};
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
    /// Node data directory, kept afterwards (default: a fresh temporary one).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
}

pub async fn run(args: GrpcReadArgs) -> anyhow::Result<Vec<Report>> {
    let node = LoadNode::start(NodeOptions {
        data_dir: args.data_dir.clone(),
        ..NodeOptions::default()
    })
    .await?;
    let admin = node.admin.clone();
    let run = format!("gr{}", now_ms());

    println!("grpc-read: storing {} tasks", args.tasks);
    let start = Instant::now();
    let watcher = Watcher::tasks_of(&node, start, args.tasks, "task.created", &run).await?;
    let publishers = {
        let run = run.clone();
        publish(&node.node, args.tasks, 256, None, move |i| {
            crate::tasks::envelope(&run, i)
        })
    };
    let deadline = start + Duration::from_secs(3600);
    watcher.wait_all("stored", deadline).await?;
    for publisher in publishers {
        publisher.await??;
    }

    let channel = node.channel().await?;
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
    node.node.shutdown().await.context("stopping the node")?;
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
