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
use schemas::{AgentHeartbeat, AgentRegistered, Message, TaskRequeued, TaskStarted};
use tokio::sync::{Semaphore, mpsc, oneshot};
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
        let running = hello.running.contains(&task.task_id);
        let message = match (task.state, running) {
            // The worker runs it, but its start was lost with the last link: the worker's
            // word stands, so its next reports find the task running.
            (TaskState::Assigned, true) => Message::TaskStarted(TaskStarted {
                task_id: task.task_id.clone(),
                agent_id: agent_id.to_owned(),
            }),
            (TaskState::Assigned, false) | (_, true) => continue,
            (_, false) => Message::TaskRequeued(TaskRequeued {
                task_id: task.task_id.clone(),
                agent_id: agent_id.to_owned(),
                reason: "its worker came back without it".into(),
            }),
        };
        ctx.node
            .publish(&ctx.node.envelope(SOURCE, &principal.user, message))
            .await?;
    }
    Ok(())
}

/// What a link has told its worker: task id → (generation, state, updated_at) as last sent,
/// and the owner of each task the agent holds.
#[derive(Default)]
struct Sent(HashMap<String, ((u32, TaskState, u64), String)>);

/// A link's `Sent`, shared by its two halves: the reports on a task it holds need no lookup.
type SharedSent = Arc<std::sync::Mutex<Sent>>;

fn lock(sent: &SharedSent) -> std::sync::MutexGuard<'_, Sent> {
    sent.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sent {
    /// The owner of `task_id` if the agent holds it as last sent.
    fn owner(&self, task_id: &str) -> Option<String> {
        self.0.get(task_id).map(|(_, user)| user.clone())
    }

    /// What the worker must hear of `task` as it is now, if anything: a new assignment, a
    /// change to a task it holds, or the end of one it held (a finished one needs no word).
    fn news(&mut self, agent_id: &str, task: Task) -> Option<node_message::Kind> {
        let seen = (task.generation, task.state, task.updated_at);
        let held = task.agent_id.as_deref() == Some(agent_id) && task.state.occupies_agent();
        if !held {
            self.0.remove(&task.task_id)?;
            return (task.state != TaskState::Done)
                .then(|| node_message::Kind::Update(convert::task(task)));
        }
        let entry = (seen, task.user.clone());
        match self
            .0
            .insert(task.task_id.clone(), entry)
            .map(|(before, _)| before)
        {
            Some(before) if before == seen => None,
            Some(before) if before.0 == task.generation => {
                Some(node_message::Kind::Update(convert::task(task)))
            }
            _ if task.state == TaskState::Assigned => {
                Some(node_message::Kind::Assignment(convert::task(task)))
            }
            _ => None,
        }
    }
}

/// Which tasks a link looks at next.
enum Look {
    /// Everything the agent holds and everything sent before: at start, at least every
    /// `POLL`, and after missed signals.
    Everything,
    /// Only the tasks signalled as changed, as their latest change left them.
    Tasks(HashMap<String, Arc<Task>>),
}

/// Sends the agent's new assignments and changes to tasks sent before, until the link closes.
async fn push(ctx: GatewayContext, agent_id: String, out: Outbound, sent: SharedSent) {
    let mut changes = ctx.node.agent_changes(&agent_id);
    let mut look = Look::Everything;
    let mut last_full = tokio::time::Instant::now();
    loop {
        let store = ctx.node.store();
        if matches!(look, Look::Everything) {
            last_full = tokio::time::Instant::now();
            changes.reading_everything();
        }
        let tasks = match look {
            Look::Everything => match store.held_tasks(&agent_id).await {
                Ok(held) => {
                    let holding: HashSet<&str> = held.iter().map(|t| t.task_id.as_str()).collect();
                    let gone: Vec<String> = lock(&sent)
                        .0
                        .keys()
                        .filter(|id| !holding.contains(id.as_str()))
                        .cloned()
                        .collect();
                    store.task_summaries(&gone).await.map(|mut gone| {
                        gone.extend(held);
                        gone
                    })
                }
                Err(error) => Err(error),
            },
            Look::Tasks(changed) => Ok(changed.into_values().map(Arc::unwrap_or_clone).collect()),
        };
        let tasks = match tasks {
            Ok(tasks) => tasks,
            Err(error) => return tracing::warn!(%agent_id, %error, "worker link stopped"),
        };
        for task in tasks {
            let news = lock(&sent).news(&agent_id, task);
            if let Some(news) = news
                && out.send(send_kind(news)).await.is_err()
            {
                return;
            }
        }
        let first = tokio::select! {
            _ = out.closed() => return,
            _ = tokio::time::sleep(POLL) => {
                look = Look::Everything;
                continue;
            }
            first = changes.next() => first,
        };
        // The next look covers every change so far, however many arrived; a task's changes
        // come in the order they were committed, none older than the last full look's.
        let mut changed = HashMap::new();
        let mut next = Some(first);
        while let Some(task) = next.take() {
            changed.insert(task.task_id.clone(), task);
            next = changes.try_next();
        }
        // Changes made on other nodes send no signal here: a full look every `POLL` anyway.
        look = if changes.missed() || last_full.elapsed() >= POLL {
            Look::Everything
        } else {
            Look::Tasks(changed)
        };
    }
}

/// Publishes a report of agent `agent_id` on one of its tasks; the future tells its outcome.
async fn publish_report(
    ctx: &GatewayContext,
    principal: &Principal,
    agent_id: &str,
    task_id: &str,
    held_by: Option<String>,
    make: Box<dyn FnOnce(String) -> Command + Send>,
) -> Result<impl Future<Output = Result<Option<Outcome>, actors::ApiError>> + use<>, GatewayError> {
    // Scope only: the mailbox checks the report against the state it finds. A task this link
    // holds, owned by the agent's user, is in scope without a lookup.
    let user = match held_by.filter(|user| *user == principal.user) {
        Some(user) => user,
        None => {
            ctx.node
                .store()
                .task_summary(task_id)
                .await?
                .filter(|t| may_see(principal, t))
                .ok_or_else(|| GatewayError::NotFound(format!("no task `{task_id}`")))?
                .user
        }
    };
    let command = make(agent_id.to_owned());
    let envelope = ctx
        .node
        .envelope(SOURCE, &user, actors::edge::task_message(task_id, &command));
    Ok(ctx.node.publish_then_wait(&envelope, REPORT_WAIT).await?)
}

/// Turns the worker's reports into messages, in order, until the stream ends.
async fn listen(
    ctx: GatewayContext,
    principal: Principal,
    agent_id: String,
    mut inbound: Streaming<WorkerMessage>,
    out: Outbound,
    sent: SharedSent,
) {
    use worker_message::Kind;
    let in_flight = Arc::new(Semaphore::new(REPORTS_IN_FLIGHT));
    // When the latest report on each task is out: its next report waits for that.
    let mut last: HashMap<String, oneshot::Receiver<()>> = HashMap::new();
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
                (
                    r.task_id,
                    Box::new(move |agent_id| Command::Complete {
                        agent_id: Some(agent_id),
                        result,
                    }),
                )
            }
            Kind::Failed(r) => (
                r.task_id,
                Box::new(move |agent_id| Command::Fail {
                    agent_id: Some(agent_id),
                    error: r.text,
                }),
            ),
        };
        // A task's reports are published in order, each once the one before it is durable;
        // reports on different tasks go out side by side, up to `REPORTS_IN_FLIGHT`.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let previous = last.remove(&task_id);
        let held_by = lock(&sent).owner(&task_id);
        let (published_tx, published_rx) = oneshot::channel::<()>();
        let (ctx, principal, agent_id, out) = (
            ctx.clone(),
            principal.clone(),
            agent_id.clone(),
            out.clone(),
        );
        let key = task_id.clone();
        tokio::spawn(async move {
            if let Some(previous) = previous {
                // Dropped once the task's previous report is out (or failed).
                let _ = previous.await;
            }
            let published =
                publish_report(&ctx, &principal, &agent_id, &task_id, held_by, make).await;
            drop(published_tx);
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
        last.insert(key, published_rx);
        if last.len() > REPORTS_IN_FLIGHT {
            last.retain(|_, published| {
                matches!(
                    published.try_recv(),
                    Err(oneshot::error::TryRecvError::Empty)
                )
            });
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
        let sent = SharedSent::default();
        tokio::spawn(push(
            self.0.clone(),
            agent_id.clone(),
            out.clone(),
            sent.clone(),
        ));
        tokio::spawn(listen(
            self.0.clone(),
            principal,
            agent_id,
            inbound,
            out,
            sent,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(stream),
        )))
    }
}
