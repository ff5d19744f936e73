//! `switchyard.v1.Tasks`: reads, creation, graphs, every transition verb, and Watch.
//!
//! A verb is checked here against the caller's scope and, with the pure state machine, against
//! the task's current state (so an invalid transition is refused at once), then published as
//! its message and answered once the task's mailbox applied or refused it.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use actors::credentials::{Principal, Role};
use actors::domain::task::{self, Command, Task};
use actors::domain::{Map, dag};
use actors::edge;
use actors::store::{Outcome, TaskFilter};
use schemas::proto::{
    self, AddDependencyRequest, CreateTaskRequest, GetTaskRequest, ListTasksRequest,
    ListTasksResponse, SubmitDagRequest, SubmitDagResponse, TaskEvent, TaskRef, TaskResult,
    TaskText, WatchRequest, tasks_server::Tasks,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{convert, principal};
use crate::{GatewayContext, GatewayError};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;
/// How long a verb waits for its message to be applied before answering UNAVAILABLE.
const APPLY_WAIT: Duration = Duration::from_secs(10);
/// How often Watch looks for new events when this node committed nothing (writes of other
/// nodes are seen then); this node's own commits wake it at once.
const WATCH_POLL: Duration = Duration::from_millis(100);
/// Activity rows Watch reads at a time.
const WATCH_PAGE: u64 = 2000;
const SOURCE: &str = "gateway/grpc";

/// Whether `principal` may see `task`: admins all, users their own, agents their assignments.
pub(crate) fn may_see(principal: &Principal, task: &Task) -> bool {
    match principal.role {
        Role::Admin => true,
        Role::User => principal.user == task.user,
        Role::Agent => {
            principal.user == task.user
                && principal.agent_id.is_some()
                && principal.agent_id == task.agent_id
        }
    }
}

/// The task `task_id` if `principal` may see it; NOT_FOUND otherwise, so ids do not leak.
pub(crate) async fn visible_task(
    ctx: &GatewayContext,
    principal: &Principal,
    task_id: &str,
) -> Result<Task, GatewayError> {
    let task = ctx.node.task(task_id).await?;
    task.filter(|t| may_see(principal, t))
        .ok_or_else(|| GatewayError::NotFound(format!("no task `{task_id}`")))
}

/// Publishes `command` for task `task_id` of `user` and waits until it is applied.
async fn submit(
    ctx: &GatewayContext,
    user: &str,
    task_id: &str,
    command: &Command,
) -> Result<Task, GatewayError> {
    let envelope = ctx
        .node
        .envelope(SOURCE, user, edge::task_message(task_id, command));
    match ctx.node.submit(&envelope, APPLY_WAIT).await? {
        Some(Outcome::Applied) => ctx
            .node
            .store()
            .task(task_id)
            .await?
            .ok_or_else(|| GatewayError::Internal(format!("task `{task_id}` vanished"))),
        Some(Outcome::Refused(reason)) => Err(GatewayError::FailedPrecondition(reason)),
        None => Err(GatewayError::Unavailable(format!(
            "accepted as message `{}` but not applied within {} s",
            envelope.id,
            APPLY_WAIT.as_secs()
        ))),
    }
}

/// Who may use a verb.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Actor {
    /// The agent working on the task (or its user on the agent's behalf).
    Agent,
    /// The task's user (not an agent key).
    Owner,
}

/// Applies the command `make` builds (from the task and the acting agent's id) to task
/// `task_id` for `principal`, checked for scope and against the task's state.
pub(crate) async fn act(
    ctx: &GatewayContext,
    principal: &Principal,
    task_id: &str,
    actor: Actor,
    make: impl FnOnce(String) -> Command,
) -> Result<Task, GatewayError> {
    let task = visible_task(ctx, principal, task_id).await?;
    if principal.role == Role::Agent && actor == Actor::Owner {
        return Err(GatewayError::Forbidden(
            "an agent's key may only report on its own work".into(),
        ));
    }
    let agent_id = principal
        .agent_id
        .clone()
        .or_else(|| task.agent_id.clone())
        .unwrap_or_default();
    let command = make(agent_id);
    task::step(Some(&task), &task.user, &command, ctx.node.now_ms())?;
    submit(ctx, &task.user, task_id, &command).await
}

/// The user a create request is for: the key's, or for admin keys the one named.
fn owner(principal: &Principal, request: &CreateTaskRequest) -> Result<String, GatewayError> {
    match (
        principal.role,
        request.user.as_deref().filter(|u| !u.is_empty()),
    ) {
        (Role::Agent, _) => Err(GatewayError::Forbidden(
            "an agent's key cannot create tasks".into(),
        )),
        (Role::Admin, Some(user)) => Ok(user.to_owned()),
        (_, Some(user)) if user != principal.user => Err(GatewayError::Forbidden(format!(
            "this key may not create tasks for user `{user}`"
        ))),
        _ => Ok(principal.user.clone()),
    }
}

/// Checks a graph of new tasks for `user` and gives them upstream first.
async fn checked_graph(
    ctx: &GatewayContext,
    user: &str,
    requests: &[CreateTaskRequest],
) -> Result<Vec<task::NewTask>, GatewayError> {
    let tasks: Vec<task::NewTask> = requests
        .iter()
        .map(convert::new_task)
        .collect::<Result<_, _>>()?;
    let inside: Vec<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
    let mut existing = HashMap::new();
    for task in &tasks {
        if ctx
            .node
            .store()
            .task_summary(&task.task_id)
            .await?
            .is_some()
        {
            return Err(GatewayError::FailedPrecondition(format!(
                "task `{}` already exists",
                task.task_id
            )));
        }
        for d in &task.dependencies {
            if !inside.contains(&d.upstream.as_str()) && !existing.contains_key(&d.upstream) {
                let upstream = ctx
                    .node
                    .store()
                    .task_summary(&d.upstream)
                    .await?
                    .filter(|t| t.user == user);
                existing.insert(d.upstream.clone(), upstream.map(|t| t.contracts));
            }
        }
    }
    let nodes: Vec<dag::Node> = tasks
        .iter()
        .map(|t| dag::Node {
            task_id: t.task_id.clone(),
            upstream: t
                .dependencies
                .iter()
                .map(|d| (d.upstream.clone(), d.kind, d.contract_key.clone()))
                .collect(),
            contracts: t.contracts.clone(),
        })
        .collect();
    let order = dag::check(&nodes, |id| existing.get(id).cloned().flatten())?;
    Ok(order.into_iter().map(|i| tasks[i].clone()).collect())
}

fn text_verb(request: &Request<TaskText>) -> (String, String) {
    let r = request.get_ref();
    (r.task_id.clone(), r.text.clone())
}

fn result_of(request: &TaskResult) -> Map {
    request
        .result
        .as_ref()
        .map(convert::from_struct)
        .unwrap_or_default()
}

/// Sends `principal`'s task events after activity position `after` (of `entity` alone, if
/// given) to `events` until it closes: a page of the log and its tasks in three queries,
/// woken by this node's commits or, for other nodes', every `WATCH_POLL`.
async fn follow(
    ctx: &GatewayContext,
    principal: &Principal,
    entity: Option<&str>,
    mut after: i64,
    events: &tokio::sync::mpsc::Sender<Result<TaskEvent, Status>>,
) -> Result<(), GatewayError> {
    let store = ctx.node.store();
    let mut commits = store.commits();
    let user = (principal.role != Role::Admin).then(|| principal.user.clone());
    loop {
        commits.borrow_and_update();
        let rows = store
            .activity_after(after, entity, user.as_deref(), WATCH_PAGE)
            .await?;
        if rows.is_empty() {
            tokio::select! {
                () = events.closed() => return Ok(()),
                _ = commits.changed() => {}
                () = tokio::time::sleep(WATCH_POLL) => {}
            }
            continue;
        }
        let ids: Vec<String> = rows
            .iter()
            .filter_map(|r| r.entity.strip_prefix("task/").map(str::to_owned))
            .collect();
        let tasks: HashMap<String, Task> = store
            .tasks(&ids)
            .await?
            .into_iter()
            .filter(|t| may_see(principal, t))
            .map(|t| (t.task_id.clone(), t))
            .collect();
        for row in rows {
            after = row.id;
            let Some(task) = row
                .entity
                .strip_prefix("task/")
                .and_then(|id| tasks.get(id))
            else {
                continue;
            };
            let event = TaskEvent {
                message_id: row.message_id,
                r#type: row.kind,
                task_id: task.task_id.clone(),
                time: row.at,
                task: Some(convert::task(task.clone())),
            };
            if events.send(Ok(event)).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// `switchyard.v1.Tasks`.
#[derive(Clone)]
pub struct TasksService(pub GatewayContext);

type Answer = Result<Response<proto::Task>, Status>;

impl TasksService {
    async fn verb<T>(
        &self,
        request: &Request<T>,
        task_id: &str,
        actor: Actor,
        make: impl FnOnce(String) -> Command,
    ) -> Answer {
        let principal = principal(&self.0, request).await?;
        let task = act(&self.0, &principal, task_id, actor, make).await?;
        Ok(Response::new(convert::task(task)))
    }
}

#[tonic::async_trait]
impl Tasks for TasksService {
    async fn get_task(&self, request: Request<GetTaskRequest>) -> Answer {
        let principal = principal(&self.0, &request).await?;
        let task = visible_task(&self.0, &principal, &request.get_ref().task_id).await?;
        Ok(Response::new(convert::task(task)))
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let principal = principal(&self.0, &request).await?;
        let query = request.get_ref();
        let state = match query.state.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(name) => Some(
                task::TaskState::parse(name)
                    .ok_or_else(|| GatewayError::BadRequest(format!("unknown state `{name}`")))?,
            ),
        };
        let page_size = match query.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let asked_agent = query.agent_id.clone().filter(|a| !a.is_empty());
        let filter = TaskFilter {
            user: (principal.role != Role::Admin).then(|| principal.user.clone()),
            state,
            // An agent's key lists only its own assignments, whatever it asks for.
            agent_id: match principal.role {
                Role::Agent => Some(principal.agent_id.clone().unwrap_or_default()),
                _ => asked_agent,
            },
        };
        let token = Some(query.page_token.as_str()).filter(|t| !t.is_empty());
        if token.is_some_and(|t| !actors::store::is_page_token(t)) {
            return Err(GatewayError::BadRequest(format!(
                "`{}` is not a page token this node gave out",
                query.page_token
            ))
            .into());
        }
        let page = self
            .0
            .node
            .store()
            .list_tasks(&filter, u64::from(page_size), token)
            .await
            .map_err(GatewayError::from)?;
        let tasks = self
            .0
            .node
            .with_holds(page.tasks)
            .await
            .map_err(GatewayError::from)?;
        Ok(Response::new(ListTasksResponse {
            tasks: tasks.into_iter().map(convert::task).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn create_task(&self, request: Request<CreateTaskRequest>) -> Answer {
        let principal = principal(&self.0, &request).await?;
        let user = owner(&principal, request.get_ref())?;
        let graph = checked_graph(&self.0, &user, std::slice::from_ref(request.get_ref())).await?;
        let new = graph
            .into_iter()
            .next()
            .ok_or_else(|| GatewayError::Internal("empty graph".into()))?;
        let task = submit(&self.0, &user, &new.task_id.clone(), &Command::Create(new)).await?;
        Ok(Response::new(convert::task(task)))
    }

    async fn submit_dag(
        &self,
        request: Request<SubmitDagRequest>,
    ) -> Result<Response<SubmitDagResponse>, Status> {
        let principal = principal(&self.0, &request).await?;
        let requests = &request.get_ref().tasks;
        let Some(first) = requests.first() else {
            return Err(GatewayError::BadRequest("a graph needs at least one task".into()).into());
        };
        let user = owner(&principal, first)?;
        for r in requests {
            if owner(&principal, r)? != user {
                return Err(GatewayError::BadRequest(
                    "every task of a graph belongs to one user".into(),
                )
                .into());
            }
        }
        let graph = checked_graph(&self.0, &user, requests).await?;
        // Published together; answered once every one is applied.
        let envelopes: Vec<_> = graph
            .into_iter()
            .map(|new| {
                self.0.node.envelope(
                    SOURCE,
                    &user,
                    edge::task_message(&new.task_id.clone(), &Command::Create(new)),
                )
            })
            .collect();
        let outcomes = self
            .0
            .node
            .submit_all(&envelopes, APPLY_WAIT)
            .await
            .map_err(GatewayError::from)?;
        let mut tasks = Vec::with_capacity(envelopes.len());
        for (envelope, outcome) in envelopes.iter().zip(outcomes) {
            match outcome {
                Some(Outcome::Applied) => {}
                Some(Outcome::Refused(reason)) => {
                    return Err(GatewayError::FailedPrecondition(reason).into());
                }
                None => {
                    return Err(GatewayError::Unavailable(format!(
                        "message `{}` not applied in time",
                        envelope.id
                    ))
                    .into());
                }
            }
            let task_id = envelope.key.trim_start_matches("task/");
            if let Some(task) = self
                .0
                .node
                .store()
                .task(task_id)
                .await
                .map_err(GatewayError::from)?
            {
                tasks.push(convert::task(task));
            }
        }
        Ok(Response::new(SubmitDagResponse { tasks }))
    }

    async fn add_dependency(&self, request: Request<AddDependencyRequest>) -> Answer {
        let principal = principal(&self.0, &request).await?;
        let r = request.get_ref();
        let dependency = convert::dependency(
            r.dependency
                .as_ref()
                .ok_or_else(|| GatewayError::BadRequest("dependency is required".into()))?,
        )?;
        let task = visible_task(&self.0, &principal, &r.task_id).await?;
        let upstream = visible_task(&self.0, &principal, &dependency.upstream)
            .await
            .map_err(|_| {
                GatewayError::NotFound(format!(
                    "task `{}` depends on unknown task `{}`",
                    r.task_id, dependency.upstream
                ))
            })?;
        if let Some(key) = &dependency.contract_key
            && !upstream.contracts.contains(key)
        {
            return Err(GatewayError::FailedPrecondition(format!(
                "task `{}` wants contract `{key}` from `{}`, which does not promise it",
                task.task_id, upstream.task_id
            ))
            .into());
        }
        let cycle = self
            .0
            .node
            .store()
            .cycle_through(&task.task_id, std::slice::from_ref(&upstream.task_id))
            .await
            .map_err(GatewayError::from)?;
        if let Some(cycle) = cycle {
            return Err(GatewayError::FailedPrecondition(format!(
                "the dependency would close a cycle: {}",
                cycle.join(" → ")
            ))
            .into());
        }
        self.verb(&request, &r.task_id, Actor::Owner, |_| {
            Command::AddDependency(dependency)
        })
        .await
    }

    async fn start_task(&self, request: Request<TaskRef>) -> Answer {
        let id = request.get_ref().task_id.clone();
        self.verb(&request, &id, Actor::Agent, |agent_id| Command::Start {
            agent_id,
        })
        .await
    }

    async fn submit_plan(&self, request: Request<TaskText>) -> Answer {
        let (id, plan) = text_verb(&request);
        self.verb(&request, &id, Actor::Agent, |agent_id| {
            Command::SubmitPlan { agent_id, plan }
        })
        .await
    }

    async fn approve_plan(&self, request: Request<TaskRef>) -> Answer {
        let id = request.get_ref().task_id.clone();
        self.verb(&request, &id, Actor::Owner, |_| Command::ApprovePlan)
            .await
    }

    async fn reject_plan(&self, request: Request<TaskText>) -> Answer {
        let (id, feedback) = text_verb(&request);
        self.verb(&request, &id, Actor::Owner, |_| Command::RejectPlan {
            feedback,
        })
        .await
    }

    async fn request_help(&self, request: Request<TaskText>) -> Answer {
        let (id, question) = text_verb(&request);
        self.verb(&request, &id, Actor::Agent, |agent_id| {
            Command::RequestHelp { agent_id, question }
        })
        .await
    }

    async fn answer_task(&self, request: Request<TaskText>) -> Answer {
        let (id, answer) = text_verb(&request);
        self.verb(&request, &id, Actor::Owner, |_| Command::Answer { answer })
            .await
    }

    async fn request_review(&self, request: Request<TaskResult>) -> Answer {
        let (id, result) = (
            request.get_ref().task_id.clone(),
            result_of(request.get_ref()),
        );
        self.verb(&request, &id, Actor::Agent, |agent_id| {
            Command::RequestReview { agent_id, result }
        })
        .await
    }

    async fn approve_task(&self, request: Request<TaskRef>) -> Answer {
        let id = request.get_ref().task_id.clone();
        self.verb(&request, &id, Actor::Owner, |_| Command::Approve)
            .await
    }

    async fn request_revision(&self, request: Request<TaskText>) -> Answer {
        let (id, feedback) = text_verb(&request);
        self.verb(&request, &id, Actor::Owner, |_| Command::RequestRevision {
            feedback,
        })
        .await
    }

    async fn complete_task(&self, request: Request<TaskResult>) -> Answer {
        let (id, result) = (
            request.get_ref().task_id.clone(),
            result_of(request.get_ref()),
        );
        self.verb(&request, &id, Actor::Agent, |agent_id| Command::Complete {
            agent_id: Some(agent_id).filter(|a| !a.is_empty()),
            result,
        })
        .await
    }

    async fn fail_task(&self, request: Request<TaskText>) -> Answer {
        let (id, error) = text_verb(&request);
        self.verb(&request, &id, Actor::Agent, |agent_id| Command::Fail {
            agent_id: Some(agent_id).filter(|a| !a.is_empty()),
            error,
        })
        .await
    }

    async fn cancel_task(&self, request: Request<TaskText>) -> Answer {
        let (id, reason) = text_verb(&request);
        let reason = Some(reason).filter(|r| !r.is_empty());
        self.verb(&request, &id, Actor::Owner, |_| Command::Cancel { reason })
            .await
    }

    async fn retry_task(&self, request: Request<TaskRef>) -> Answer {
        let id = request.get_ref().task_id.clone();
        self.verb(&request, &id, Actor::Owner, |_| Command::Retry)
            .await
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<TaskEvent, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let principal = principal(&self.0, &request).await?;
        let task_id = Some(request.get_ref().task_id.clone()).filter(|t| !t.is_empty());
        if let Some(task_id) = &task_id {
            visible_task(&self.0, &principal, task_id).await?;
        }
        let ctx = self.0.clone();
        let start = ctx
            .node
            .store()
            .activity_end()
            .await
            .map_err(GatewayError::from)?;
        let (events, stream) = tokio::sync::mpsc::channel(4 * WATCH_PAGE as usize);
        tokio::spawn(async move {
            let entity = task_id.map(|t| format!("task/{t}"));
            if let Err(error) = follow(&ctx, &principal, entity.as_deref(), start, &events).await {
                let _ = events.send(Err(error.into())).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(stream),
        )))
    }
}
