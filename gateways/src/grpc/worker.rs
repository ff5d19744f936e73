//! `switchyard.v1.Worker/Link`: an agent's worker process on a bidirectional stream.
//!
//! The worker authenticates with its agent's key and says hello (registering the agent); from
//! then on each heartbeat and report becomes its message on the bus, and the node sends the
//! agent's assignments with their resolved inputs, and changes to the tasks it sent, as they
//! happen (signalled by this node's mailboxes, polled otherwise).

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actors::credentials::{Principal, Role};
use actors::domain::task::{Command, Task, TaskState};
use actors::store::Outcome;
use schemas::proto::{
    Hello, NodeMessage, Refused, Welcome, WorkerMessage, node_message, worker_message,
    worker_server::Worker,
};
use schemas::{AgentHeartbeat, AgentRegistered, Message, TaskRequeued};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::tasks::may_see;
use super::{convert, principal};
use crate::{GatewayContext, GatewayError};

/// How often the link looks for changes it was not signalled about.
const POLL: Duration = Duration::from_millis(250);
/// How long a report may take to be applied before the worker hears nothing of it.
const REPORT_WAIT: Duration = Duration::from_secs(30);
/// Reports of one link being published at once.
const REPORTS_IN_FLIGHT: usize = 256;
/// How long registering may take.
const REGISTER_WAIT: Duration = Duration::from_secs(10);
const SOURCE: &str = "gateway/worker";

type Outbound = mpsc::Sender<Result<NodeMessage, Status>>;

/// `switchyard.v1.Worker`.
#[derive(Clone)]
pub struct WorkerService(pub GatewayContext);

fn send_kind(kind: node_message::Kind) -> Result<NodeMessage, Status> {
    Ok(NodeMessage { kind: Some(kind) })
}

/// Registers the agent of the link, and requeues what it held but no longer runs.
async fn register(
    ctx: &GatewayContext,
    principal: &Principal,
    agent_id: &str,
    hello: &Hello,
) -> Result<(), GatewayError> {
    let message = Message::AgentRegistered(AgentRegistered {
        agent_id: agent_id.to_owned(),
        name: hello.name.clone(),
        capabilities: actors::edge::capabilities_to_wire(&convert::capabilities(
            hello.capabilities.as_ref(),
        )),
        max_concurrent: hello.max_concurrent.max(1),
    });
    let envelope = ctx.node.envelope(SOURCE, &principal.user, message);
    match ctx.node.submit(&envelope, REGISTER_WAIT).await? {
        Some(Outcome::Applied) => {}
        Some(Outcome::Refused(reason)) => return Err(GatewayError::FailedPrecondition(reason)),
        None => {
            return Err(GatewayError::Unavailable(
                "registration not applied in time".into(),
            ));
        }
    }
    let worked: Vec<TaskState> = TaskState::ALL
        .into_iter()
        .filter(|s| s.worked_on())
        .collect();
    for task in ctx.node.store().tasks_of_agent(agent_id, &worked).await? {
        if task.state == TaskState::Assigned || hello.running.contains(&task.task_id) {
            continue;
        }
        let message = Message::TaskRequeued(TaskRequeued {
            task_id: task.task_id.clone(),
            agent_id: agent_id.to_owned(),
            reason: "its worker came back without it".into(),
        });
        ctx.node
            .publish(&ctx.node.envelope(SOURCE, &principal.user, message))
            .await?;
    }
    Ok(())
}

/// Sends the agent's new assignments and changes to tasks sent before, until the link closes.
async fn push(ctx: GatewayContext, agent_id: String, out: Outbound) {
    let mut signals = ctx.node.agent_signals();
    // task id → (generation, state, updated_at) as last sent.
    let mut sent: HashMap<String, (u32, TaskState, u64)> = HashMap::new();
    let seen = |t: &Task| (t.generation, t.state, t.updated_at);
    loop {
        let store = ctx.node.store();
        let held = match store.held_tasks(&agent_id).await {
            Ok(tasks) => tasks,
            Err(error) => return tracing::warn!(%agent_id, %error, "worker link stopped"),
        };
        let mut holding = HashSet::new();
        for task in held {
            holding.insert(task.task_id.clone());
            let before = sent.insert(task.task_id.clone(), seen(&task));
            let kind = match before {
                Some(before) if before.0 == task.generation && before == seen(&task) => continue,
                Some(before) if before.0 == task.generation => {
                    node_message::Kind::Update(convert::task(task))
                }
                _ if task.state == TaskState::Assigned => {
                    node_message::Kind::Assignment(convert::task(task))
                }
                _ => continue,
            };
            if out.send(send_kind(kind)).await.is_err() {
                return;
            }
        }
        // Tasks no longer held were finished, cancelled or requeued: the worker hears the end.
        let gone: Vec<String> = sent
            .keys()
            .filter(|id| !holding.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            sent.remove(&id);
            let Ok(Some(task)) = store.task(&id).await else {
                continue;
            };
            if task.state != TaskState::Done
                && out
                    .send(send_kind(node_message::Kind::Update(convert::task(task))))
                    .await
                    .is_err()
            {
                return;
            }
        }
        let signalled = async {
            loop {
                match signals.recv().await {
                    Ok(id) if id != agent_id => continue,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                    // Ours, or we fell behind and may have missed ours.
                    _ => return,
                }
            }
        };
        tokio::select! {
            _ = out.closed() => return,
            _ = tokio::time::sleep(POLL) => {}
            () = signalled => {}
        }
    }
}

/// Publishes a report of agent `agent_id` on one of its tasks; the future tells its outcome.
async fn publish_report(
    ctx: &GatewayContext,
    principal: &Principal,
    agent_id: &str,
    task_id: &str,
    make: Box<dyn FnOnce(String) -> Command + Send>,
) -> Result<impl Future<Output = Result<Option<Outcome>, actors::ApiError>> + use<>, GatewayError> {
    // Scope only: the mailbox checks the report against the state it finds.
    let task = ctx
        .node
        .store()
        .task_summary(task_id)
        .await?
        .filter(|t| may_see(principal, t))
        .ok_or_else(|| GatewayError::NotFound(format!("no task `{task_id}`")))?;
    let command = make(agent_id.to_owned());
    let envelope = ctx.node.envelope(
        SOURCE,
        &task.user,
        actors::edge::task_message(task_id, &command),
    );
    Ok(ctx.node.publish_then_wait(&envelope, REPORT_WAIT).await?)
}

/// Turns the worker's reports into messages, in order, until the stream ends.
async fn listen(
    ctx: GatewayContext,
    principal: Principal,
    agent_id: String,
    mut inbound: Streaming<WorkerMessage>,
    out: Outbound,
) {
    use worker_message::Kind;
    let in_flight = Arc::new(Semaphore::new(REPORTS_IN_FLIGHT));
    // The latest report on each task, which its next report waits for.
    let mut last: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        let report = match inbound.message().await {
            Ok(Some(WorkerMessage { kind: Some(kind) })) => kind,
            Ok(Some(WorkerMessage { kind: None })) => continue,
            Ok(None) | Err(_) => return,
        };
        let (task_id, make): (String, Box<dyn FnOnce(String) -> Command + Send>) = match report {
            Kind::Heartbeat(_) => {
                let message = Message::AgentHeartbeat(AgentHeartbeat {
                    agent_id: agent_id.clone(),
                });
                if let Err(error) = ctx
                    .node
                    .publish(&ctx.node.envelope(SOURCE, &principal.user, message))
                    .await
                {
                    tracing::warn!(%agent_id, %error, "heartbeat not published");
                }
                continue;
            }
            Kind::Hello(_) => continue,
            Kind::Started(r) => (r.task_id, Box::new(|agent_id| Command::Start { agent_id })),
            Kind::Output(r) => (
                r.task_id,
                Box::new(move |agent_id| Command::Output {
                    agent_id,
                    lines: r.lines,
                }),
            ),
            Kind::Plan(r) => (
                r.task_id,
                Box::new(move |agent_id| Command::SubmitPlan {
                    agent_id,
                    plan: r.text,
                }),
            ),
            Kind::Help(r) => (
                r.task_id,
                Box::new(move |agent_id| Command::RequestHelp {
                    agent_id,
                    question: r.text,
                }),
            ),
            Kind::Review(r) => {
                let result = r
                    .result
                    .as_ref()
                    .map(convert::from_struct)
                    .unwrap_or_default();
                (
                    r.task_id,
                    Box::new(move |agent_id| Command::RequestReview { agent_id, result }),
                )
            }
            Kind::Completed(r) => {
                let result = r
                    .result
                    .as_ref()
                    .map(convert::from_struct)
                    .unwrap_or_default();
                (r.task_id, Box::new(move |_| Command::Complete { result }))
            }
            Kind::Failed(r) => (
                r.task_id,
                Box::new(move |_| Command::Fail { error: r.text }),
            ),
        };
        // A task's reports are published in order, each once the one before it is durable;
        // reports on different tasks go out side by side, up to `REPORTS_IN_FLIGHT`.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let previous = last.remove(&task_id);
        let (ctx, principal, agent_id, out) = (
            ctx.clone(),
            principal.clone(),
            agent_id.clone(),
            out.clone(),
        );
        let key = task_id.clone();
        let report = tokio::spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let published = publish_report(&ctx, &principal, &agent_id, &task_id, make).await;
            drop(permit);
            let reason = match published {
                Ok(outcome) => match outcome.await {
                    Ok(Some(Outcome::Refused(reason))) => reason,
                    Ok(_) => return,
                    Err(error) => error.to_string(),
                },
                Err(error) => error.to_string(),
            };
            let refused = Refused { task_id, reason };
            let _ = out
                .send(send_kind(node_message::Kind::Refused(refused)))
                .await;
        });
        last.insert(key, report);
        if last.len() > REPORTS_IN_FLIGHT {
            last.retain(|_, report| !report.is_finished());
        }
    }
}

#[tonic::async_trait]
impl Worker for WorkerService {
    type LinkStream = Pin<Box<dyn Stream<Item = Result<NodeMessage, Status>> + Send>>;

    async fn link(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        let principal = principal(&self.0, &request).await?;
        let agent_id = match (principal.role, &principal.agent_id) {
            (Role::Agent, Some(agent_id)) => agent_id.clone(),
            _ => {
                return Err(
                    GatewayError::Forbidden("the worker link takes an agent's key".into()).into(),
                );
            }
        };
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(WorkerMessage {
                kind: Some(worker_message::Kind::Hello(hello)),
            }) => hello,
            _ => return Err(GatewayError::BadRequest("a worker says hello first".into()).into()),
        };
        register(&self.0, &principal, &agent_id, &hello).await?;
        tracing::info!(%agent_id, name = %hello.name, "worker linked");
        let (out, stream) = mpsc::channel(64);
        let welcome = Welcome {
            agent_id: agent_id.clone(),
            heartbeat_ms: self.0.node.heartbeat_interval().as_millis() as u32,
        };
        let _ = out
            .send(send_kind(node_message::Kind::Welcome(welcome)))
            .await;
        tokio::spawn(push(self.0.clone(), agent_id.clone(), out.clone()));
        tokio::spawn(listen(self.0.clone(), principal, agent_id, inbound, out));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(stream),
        )))
    }
}
