//! The `lifecycle` scenario: whole task lifecycles (create → assign → start → complete) through
//! an in-process node on the embedded defaults, worked by no-op workers on the real gRPC link,
//! each timed from its `task.created` publish until the Watch stream tells it completed; and
//! the `dag` scenario: three-step DAGs submitted one at a time, from `SubmitDag` to the last
//! step done.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actors::store::now_ms;
use anyhow::Context;
use schemas::proto::{
    self, CreateKeyRequest, CreateTaskRequest, Dependency, Hello, NodeMessage, SubmitDagRequest,
    TaskRef, TaskResult, WorkerMessage, keys_client::KeysClient, node_message,
    tasks_client::TasksClient, worker_client::WorkerClient, worker_message,
};
use schemas::{Envelope, Message, TaskCreated};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::node::{LoadNode, Marks, NodeOptions, Watcher, bearer, publish};
use crate::progress::Progress;
use crate::report::{Latencies, Report, Run, Timeline};

/// The `lifecycle` scenario's settings.
#[derive(Debug, clap::Args)]
pub struct LifecycleArgs {
    /// Tasks run through their whole lifecycle.
    #[arg(long, default_value_t = 2000)]
    tasks: u64,
    /// No-op workers, each an agent on its own link.
    #[arg(long, default_value_t = 4)]
    workers: u32,
    /// Tasks each worker holds at once.
    #[arg(long, default_value_t = 64)]
    per_worker: u32,
    /// Publishers of `task.created` running at once.
    #[arg(long, default_value_t = 32)]
    concurrency: u64,
    /// The node's state database (default: SQLite in its data directory); a PostgreSQL URL
    /// measures the same work on PostgreSQL, without the SQLite floor beside it.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Keep the node's data directory (its bus log and state) to look into afterwards.
    #[arg(long)]
    keep: bool,
}

async fn key(
    keys: &mut KeysClient<Channel>,
    admin: &str,
    role: &str,
    agent_id: &str,
) -> anyhow::Result<String> {
    let request = CreateKeyRequest {
        role: role.into(),
        user: "load".into(),
        agent_id: agent_id.into(),
    };
    Ok(keys
        .create_key(bearer(admin, request))
        .await?
        .into_inner()
        .key)
}

/// A worker that starts and completes every assignment at once, promising `out`.
async fn noop_worker(
    channel: Channel,
    token: String,
    name: String,
    capacity: u32,
) -> anyhow::Result<()> {
    let (out, stream) = mpsc::channel(1024);
    let send = |kind| WorkerMessage { kind: Some(kind) };
    let hello = Hello {
        name,
        capabilities: None,
        max_concurrent: capacity,
        running: Vec::new(),
    };
    out.send(send(worker_message::Kind::Hello(hello))).await?;
    let request = bearer(&token, tokio_stream::wrappers::ReceiverStream::new(stream));
    let mut inbound = WorkerClient::new(channel).link(request).await?.into_inner();
    while let Some(NodeMessage { kind }) = inbound.message().await? {
        if let Some(node_message::Kind::Welcome(welcome)) = &kind {
            let (out, every) = (
                out.clone(),
                Duration::from_millis(u64::from(welcome.heartbeat_ms.max(100))),
            );
            tokio::spawn(async move {
                let beat = || send(worker_message::Kind::Heartbeat(proto::Heartbeat {}));
                while out.send(beat()).await.is_ok() {
                    tokio::time::sleep(every).await;
                }
            });
        }
        if let Some(node_message::Kind::Assignment(task)) = kind {
            let result = TaskResult {
                task_id: task.task_id.clone(),
                result: Some(prost_types::Struct {
                    fields: BTreeMap::from([(
                        "out".to_owned(),
                        prost_types::Value {
                            kind: Some(prost_types::value::Kind::StringValue(task.task_id.clone())),
                        },
                    )]),
                }),
            };
            out.send(send(worker_message::Kind::Started(TaskRef {
                task_id: task.task_id,
            })))
            .await?;
            out.send(send(worker_message::Kind::Completed(result)))
                .await?;
        }
    }
    Ok(())
}

fn created(run: &str, i: u64) -> Envelope {
    Envelope::new(
        format!("{run}-create-{i}"),
        "loadtest",
        now_ms(),
        "load",
        Message::TaskCreated(TaskCreated {
            task_id: format!("{run}-{i}"),
            title: format!("load {i}"),
            spec: "true".into(),
            contracts: vec!["out".into()],
            ..Default::default()
        }),
    )
}

fn step(id: String, upstream: Option<String>) -> CreateTaskRequest {
    CreateTaskRequest {
        task_id: id.clone(),
        title: id,
        spec: "true".into(),
        contracts: vec!["out".into()],
        depends_on: upstream
            .map(|u| Dependency {
                task_id: u,
                r#type: "input".into(),
                contract_key: "out".into(),
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// Starts `workers` no-op workers on `node`, each an agent of user `load` holding up to
/// `capacity` tasks; returns a user key of `load`.
async fn start_workers(node: &LoadNode, workers: u32, capacity: u32) -> anyhow::Result<String> {
    let channel = node.channel().await?;
    let mut keys = KeysClient::new(channel.clone());
    for w in 0..workers {
        let token = key(&mut keys, &node.admin, "agent", &format!("w{w}")).await?;
        let (channel, name) = (channel.clone(), format!("w{w}"));
        tokio::spawn(async move {
            if let Err(error) = noop_worker(channel, token, name, capacity).await {
                eprintln!("worker stopped: {error:#}");
            }
        });
    }
    key(&mut keys, &node.admin, "user", "").await
}

pub async fn run(args: LifecycleArgs) -> anyhow::Result<Report> {
    let node = LoadNode::start(NodeOptions {
        database_url: args.database_url.clone(),
        ..NodeOptions::default()
    })
    .await?;
    start_workers(&node, args.workers, args.per_worker).await?;
    let run = format!("lc{}", now_ms());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.timeout_secs);
    let watcher = Watcher::tasks_of(&node, start, args.tasks, "task.completed", &run).await?;
    println!(
        "lifecycle: {} tasks over {} no-op workers on the gRPC link",
        args.tasks, args.workers
    );
    let published = Marks::new(start, args.tasks);
    let publishers = {
        let run = run.clone();
        publish(
            &node.node,
            args.tasks,
            args.concurrency,
            Some(published.clone()),
            move |i| created(&run, i),
        )
    };
    let measured = watcher
        .run_of("done", deadline, publishers, &published)
        .await?;
    node.node.shutdown().await.context("stopping the node")?;
    let floor = match args.database_url {
        Some(_) => None,
        None => {
            let path = node.dir.path().join("floor.sqlite");
            Some(crate::floor::run(&path, args.tasks, crate::floor::LIFECYCLE).await?)
        }
    };
    if args.keep {
        println!(
            "kept the node's data directory: {}",
            node.dir.keep().display()
        );
    }
    Ok(Report {
        scenario: "lifecycle".into(),
        run: measured,
        baseline: floor,
        settings: serde_json::json!({ "workers": args.workers, "per_worker": args.per_worker, "concurrency": args.concurrency }),
    })
}

/// The `dag` scenario's settings.
#[derive(Debug, clap::Args)]
pub struct DagArgs {
    /// Three-step DAGs submitted one after another.
    #[arg(long, default_value_t = 100)]
    dags: u64,
    /// No-op workers, each an agent on its own link.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// The node's state database (default: SQLite in its data directory).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

/// The number of the DAG whose last step a `task.completed` of `id` finishes.
fn last_step(run: &str, id: &str) -> Option<u64> {
    let (dag, step) = id
        .strip_prefix(run)?
        .strip_prefix("-dag")?
        .split_once('-')?;
    (step == "2").then(|| dag.parse().ok()).flatten()
}

/// Three-step DAGs (each step the next one's input) submitted one at a time, each timed
/// from `SubmitDag` until the Watch stream tells its last step completed.
pub async fn run_dags(args: DagArgs) -> anyhow::Result<Report> {
    let node = LoadNode::start(NodeOptions {
        database_url: args.database_url.clone(),
        ..NodeOptions::default()
    })
    .await?;
    let user = start_workers(&node, args.workers, 4).await?;
    let run = format!("dag{}", now_ms());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.timeout_secs);
    let watcher = {
        let run = run.clone();
        Watcher::start(&node, start, args.dags, move |event| {
            (event.r#type == "task.completed")
                .then(|| last_step(&run, &event.task_id))
                .flatten()
        })
        .await?
    };
    println!("dag: {} three-step DAGs, one at a time", args.dags);
    let mut tasks_client = TasksClient::new(node.channel().await?);
    let mut latencies = Latencies::new()?;
    let mut timeline = Timeline::default();
    let mut progress = Progress::new("done", args.dags);
    for d in 0..args.dags {
        let ids: Vec<String> = (0..3).map(|s| format!("{run}-dag{d}-{s}")).collect();
        let graph = vec![
            step(ids[0].clone(), None),
            step(ids[1].clone(), Some(ids[0].clone())),
            step(ids[2].clone(), Some(ids[1].clone())),
        ];
        let submitted = Instant::now();
        tasks_client
            .submit_dag(bearer(&user, SubmitDagRequest { tasks: graph }))
            .await?;
        watcher.wait_for(d, deadline).await?;
        latencies.record(submitted.elapsed())?;
        timeline.record(start.elapsed(), d + 1);
        progress.set(d + 1);
    }
    progress.finish();
    let elapsed = start.elapsed();
    node.node.shutdown().await.context("stopping the node")?;
    Ok(Report {
        scenario: "dag".into(),
        run: Run {
            count: args.dags,
            elapsed,
            latencies,
            timeline,
        },
        baseline: None,
        settings: serde_json::json!({ "steps": 3, "workers": args.workers }),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_last_step_of_a_dag_is_numbered_by_its_dag() {
        assert_eq!(super::last_step("r1", "r1-dag12-2"), Some(12));
        assert_eq!(super::last_step("r1", "r1-dag12-1"), None);
        assert_eq!(super::last_step("r1", "r2-dag12-2"), None);
    }
}
