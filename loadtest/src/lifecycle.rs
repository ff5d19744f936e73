//! The `lifecycle` scenario: whole task lifecycles (create → assign → start → complete) through
//! an in-process node on the embedded defaults, worked by no-op workers on the real gRPC link;
//! then three-step DAGs submitted one at a time, from `SubmitDag` to the last step done.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actors::domain::task::TaskState;
use actors::store::entities::tasks;
use actors::store::now_ms;
use anyhow::Context;
use schemas::proto::{
    self, CreateKeyRequest, CreateTaskRequest, Dependency, Hello, NodeMessage, SubmitDagRequest,
    TaskRef, TaskResult, WorkerMessage, keys_client::KeysClient, node_message,
    tasks_client::TasksClient, worker_client::WorkerClient, worker_message,
};
use schemas::{Envelope, Message, TaskCreated};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::node::{LoadNode, publish};
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
    /// Three-step DAGs submitted one after another, for end-to-end latency.
    #[arg(long, default_value_t = 100)]
    dags: u64,
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

pub(crate) fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
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

pub async fn run(args: LifecycleArgs) -> anyhow::Result<Vec<Report>> {
    let LoadNode {
        node,
        store,
        admin,
        grpc,
        dir: temp,
    } = LoadNode::start(args.database_url.clone()).await?;
    let channel = Channel::from_shared(format!("http://{grpc}"))?
        .connect()
        .await
        .context("the node's gRPC")?;
    let mut keys = KeysClient::new(channel.clone());
    for w in 0..args.workers {
        let token = key(&mut keys, &admin, "agent", &format!("w{w}")).await?;
        let (channel, name, capacity) = (channel.clone(), format!("w{w}"), args.per_worker);
        tokio::spawn(async move {
            if let Err(error) = noop_worker(channel, token, name, capacity).await {
                eprintln!("worker stopped: {error:#}");
            }
        });
    }
    let user = key(&mut keys, &admin, "user", "").await?;
    let run = format!("lc{}", now_ms());
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);

    println!(
        "lifecycle: {} tasks over {} no-op workers on the gRPC link",
        args.tasks, args.workers
    );
    let start = Instant::now();
    let publishers = {
        let run = run.clone();
        publish(&node, args.tasks, args.concurrency, move |i| {
            created(&run, i)
        })
    };
    for publisher in publishers {
        publisher.await??;
    }
    let done = || {
        tasks::Entity::find()
            .filter(tasks::Column::State.eq(TaskState::Done.as_str()))
            .filter(tasks::Column::TaskId.starts_with(format!("{run}-")))
    };
    let mut progress = Progress::new("done", args.tasks);
    let mut timeline = Timeline::default();
    loop {
        let finished = done().count(store.connection()).await?;
        timeline.record(start.elapsed(), finished);
        progress.set(finished);
        if finished >= args.tasks {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {finished} of {} done in time",
            args.tasks
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    progress.finish();
    let elapsed = start.elapsed();
    let mut latencies = Latencies::new()?;
    for row in done().all(store.connection()).await? {
        latencies.record(Duration::from_millis(
            row.updated_at.saturating_sub(row.created_at).max(0) as u64,
        ))?;
    }
    let floor_path = temp.path().join("floor.sqlite");
    let floor = match args.database_url {
        Some(_) => None,
        None => Some(crate::floor::run(&floor_path, args.tasks, crate::floor::LIFECYCLE).await?),
    };
    let lifecycle = Report {
        scenario: "lifecycle".into(),
        run: Run {
            count: args.tasks,
            elapsed,
            latencies,
            timeline,
        },
        baseline: floor,
        settings: serde_json::json!({ "workers": args.workers, "per_worker": args.per_worker, "concurrency": args.concurrency }),
    };

    println!("dag: {} three-step DAGs, one at a time", args.dags);
    let mut tasks_client = TasksClient::new(channel);
    let mut latencies = Latencies::new()?;
    let mut dag_timeline = Timeline::default();
    let start = Instant::now();
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
        loop {
            if store
                .task(&ids[2])
                .await?
                .is_some_and(|t| t.state == TaskState::Done)
            {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "DAG {d} not done in time");
            tokio::time::sleep(Duration::from_micros(250)).await;
        }
        latencies.record(submitted.elapsed())?;
        dag_timeline.record(start.elapsed(), d + 1);
    }
    let dag = Report {
        scenario: "dag".into(),
        run: Run {
            count: args.dags,
            elapsed: start.elapsed(),
            latencies,
            timeline: dag_timeline,
        },
        baseline: None,
        settings: serde_json::json!({ "steps": 3, "workers": args.workers }),
    };
    node.shutdown().await.context("stopping the node")?;
    if args.keep {
        println!("kept the node's data directory: {}", temp.keep().display());
    }
    Ok(vec![lifecycle, dag])
}
