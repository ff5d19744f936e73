//! The task state machine (DESIGN §5, seed 003's table): which command moves a task from which
//! state to which, and what that asks of the rest of the node.

use super::{
    Capabilities, Dependency, DependencyState, Effect, Finished, Map, Priority, Refusal, Value,
};

/// How a refusal of a result that lacks a promised contract ends: waiting will not fix it.
pub const CONTRACT_MISSING: &str = "which the result lacks";

/// Attempts a task gets unless it says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskState {
    /// Waiting for an agent.
    Pending,
    /// Waiting for upstream tasks.
    Blocked,
    /// Given to an agent that has not started.
    Assigned,
    /// Being worked on.
    Running,
    /// The agent is writing a plan.
    Planning,
    /// A plan waits for approval.
    PlanReview,
    /// The result waits for review.
    Review,
    /// The agent asked a person for help.
    NeedsHuman,
    /// Finished with a result.
    Done,
    /// Finished with an error (retried while attempts last).
    Failed,
    /// Called off.
    Cancelled,
}

impl TaskState {
    /// Every state, for parsing and listing.
    pub const ALL: [TaskState; 11] = [
        TaskState::Pending,
        TaskState::Blocked,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Planning,
        TaskState::PlanReview,
        TaskState::Review,
        TaskState::NeedsHuman,
        TaskState::Done,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    /// The state's name as stored and shown to clients.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Blocked => "blocked",
            TaskState::Assigned => "assigned",
            TaskState::Running => "running",
            TaskState::Planning => "planning",
            TaskState::PlanReview => "plan_review",
            TaskState::Review => "review",
            TaskState::NeedsHuman => "needs_human",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// The state named `name`, if any.
    pub fn parse(name: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether an agent holds a task in this state (it counts against the agent's capacity).
    pub fn occupies_agent(self) -> bool {
        matches!(
            self,
            TaskState::Assigned
                | TaskState::Running
                | TaskState::Planning
                | TaskState::PlanReview
                | TaskState::Review
                | TaskState::NeedsHuman
        )
    }

    /// Whether the agent is working (so a dead agent's task goes back to the queue).
    pub fn worked_on(self) -> bool {
        matches!(
            self,
            TaskState::Assigned | TaskState::Running | TaskState::Planning
        )
    }

    /// Whether nothing moves a task on from here (a failed task may still be retried).
    pub fn is_final(self) -> bool {
        matches!(self, TaskState::Done | TaskState::Cancelled)
    }
}

/// A task as the domain sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Client-chosen id.
    pub task_id: String,
    /// Owning user.
    pub user: String,
    /// Short title.
    pub title: String,
    /// What to do.
    pub spec: String,
    /// Urgency.
    pub priority: Priority,
    /// What an agent must (or should) offer.
    pub requirements: Capabilities,
    /// Upstream tasks and where each stands.
    pub dependencies: Vec<Dependency>,
    /// Keys its result promises, for downstream `input` dependencies.
    pub contracts: Vec<String>,
    /// Whether a plan must be approved before it runs.
    pub require_plan_approval: bool,
    /// An agent to prefer when one qualifies.
    pub preferred_agent: Option<String>,
    /// Times it was started.
    pub attempts: u32,
    /// Times it may be started in all.
    pub max_attempts: u32,
    /// Where it is in its life.
    pub state: TaskState,
    /// The agent holding it, if any.
    pub agent_id: Option<String>,
    /// Values received from `input` dependencies, by contract key.
    pub inputs: Map,
    /// The result, once done (or submitted for review).
    pub result: Option<Map>,
    /// The error, once failed.
    pub error: Option<String>,
    /// Why it is blocked, while it is.
    pub blocked_reason: Option<String>,
    /// The last plan, question, answer or feedback exchanged about it.
    pub note: Option<String>,
    /// Times it became pending: names its assignment, so a decision resent is recognised.
    pub generation: u32,
    /// When it was created, ms since the Unix epoch (the creating message's time).
    pub created_at: u64,
    /// When it last changed (the changing message's time).
    pub updated_at: u64,
}

/// A task as created, before any state.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Client-chosen id.
    pub task_id: String,
    /// Short title.
    pub title: String,
    /// What to do.
    pub spec: String,
    /// Urgency.
    pub priority: Priority,
    /// What an agent must (or should) offer.
    pub requirements: Capabilities,
    /// Upstream tasks (their state is ignored: every one starts waiting).
    pub dependencies: Vec<Dependency>,
    /// Keys its result promises.
    pub contracts: Vec<String>,
    /// Whether a plan must be approved before it runs.
    pub require_plan_approval: bool,
    /// An agent to prefer.
    pub preferred_agent: Option<String>,
    /// Times it may be started in all (`DEFAULT_MAX_ATTEMPTS` when unset).
    pub max_attempts: Option<u32>,
}

/// What can happen to a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// A new task.
    Create(NewTask),
    /// The orchestrator gives it to an agent.
    Assign {
        /// The agent.
        agent_id: String,
    },
    /// The agent begins (planning first, if a plan must be approved).
    Start {
        /// The agent.
        agent_id: String,
    },
    /// The agent proposes a plan.
    SubmitPlan {
        /// The agent.
        agent_id: String,
        /// The plan.
        plan: String,
    },
    /// A person accepts the plan.
    ApprovePlan,
    /// A person sends the plan back.
    RejectPlan {
        /// What to change.
        feedback: String,
    },
    /// The agent asks a person for help.
    RequestHelp {
        /// The agent.
        agent_id: String,
        /// The question.
        question: String,
    },
    /// A person answers.
    Answer {
        /// The answer.
        answer: String,
    },
    /// The agent submits its result for review.
    RequestReview {
        /// The agent.
        agent_id: String,
        /// The result.
        result: Map,
    },
    /// The reviewer accepts the result.
    Approve,
    /// The reviewer wants changes.
    RequestRevision {
        /// What to change.
        feedback: String,
    },
    /// The work finishes with a result.
    Complete {
        /// The agent reporting it, if an agent does (it must hold the task).
        agent_id: Option<String>,
        /// The result.
        result: Map,
    },
    /// The work failed.
    Fail {
        /// The agent reporting it, if an agent does (it must hold the task).
        agent_id: Option<String>,
        /// Why.
        error: String,
    },
    /// Call it off.
    Cancel {
        /// Why, if said.
        reason: Option<String>,
    },
    /// Try a failed task again.
    Retry,
    /// Its agent went away: back to the queue.
    Requeue {
        /// The agent that had it.
        agent_id: String,
        /// Why.
        reason: String,
    },
    /// Another upstream task.
    AddDependency(Dependency),
    /// An upstream task completed, with the contract value an `input` dependency receives.
    ResolveDependency {
        /// The upstream task.
        upstream: String,
        /// The contract value, if the dependency has a contract key and the result had it.
        value: Option<Value>,
    },
    /// An upstream task failed, was cancelled, or lacked a contract value.
    FailDependency {
        /// The upstream task.
        upstream: String,
        /// What went wrong.
        reason: String,
    },
    /// Lines the agent's work printed (they do not change the task's state).
    Output {
        /// The agent.
        agent_id: String,
        /// The lines, in order.
        lines: Vec<String>,
    },
}

impl Command {
    /// The command's name in refusals: its message type.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Create(_) => "task.created",
            Command::Assign { .. } => "task.assigned",
            Command::Start { .. } => "task.started",
            Command::SubmitPlan { .. } => "task.plan_submitted",
            Command::ApprovePlan => "task.plan_approved",
            Command::RejectPlan { .. } => "task.plan_rejected",
            Command::RequestHelp { .. } => "task.help_requested",
            Command::Answer { .. } => "task.answered",
            Command::RequestReview { .. } => "task.review_requested",
            Command::Approve => "task.approved",
            Command::RequestRevision { .. } => "task.revision_requested",
            Command::Complete { .. } => "task.completed",
            Command::Fail { .. } => "task.failed",
            Command::Cancel { .. } => "task.cancelled",
            Command::Retry => "task.retried",
            Command::Requeue { .. } => "task.requeued",
            Command::AddDependency(_) => "task.dependency_added",
            Command::ResolveDependency { .. } => "task.dependency_resolved",
            Command::FailDependency { .. } => "task.dependency_failed",
            Command::Output { .. } => "task.output",
        }
    }
}

/// A notification to record because of a transition (an outbox row, written with the task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationDraft {
    /// Whose notification it is.
    pub user: String,
    /// Channel name.
    pub channel: String,
    /// Recipient on that channel.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Message text.
    pub text: String,
    /// One notification per key, however often it is asked for.
    pub dedupe_key: String,
    /// The task it is about, if any: a task from a conversation is answered there.
    pub task_id: Option<String>,
}

/// The outcome of applying one command to a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskStep {
    /// The task after the command.
    pub task: Task,
    /// Notifications to record with it.
    pub notifications: Vec<NotificationDraft>,
    /// What to do once it is persisted.
    pub effects: Vec<Effect>,
}

/// A task built from `new` for `user` at `now`: blocked while any blocking dependency waits.
fn create(new: &NewTask, user: &str, now: u64) -> Task {
    let dependencies: Vec<Dependency> = new
        .dependencies
        .iter()
        .map(|d| Dependency {
            state: DependencyState::Waiting,
            ..d.clone()
        })
        .collect();
    let mut task = Task {
        task_id: new.task_id.clone(),
        user: user.to_owned(),
        title: new.title.clone(),
        spec: new.spec.clone(),
        priority: new.priority,
        requirements: new.requirements.clone(),
        dependencies,
        contracts: new.contracts.clone(),
        require_plan_approval: new.require_plan_approval,
        preferred_agent: new.preferred_agent.clone(),
        attempts: 0,
        max_attempts: new.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS).max(1),
        state: TaskState::Blocked,
        agent_id: None,
        inputs: Map::new(),
        result: None,
        error: None,
        blocked_reason: None,
        note: None,
        generation: 0,
        created_at: now,
        updated_at: now,
    };
    unblock_if_ready(&mut task);
    task
}

/// Moves a blocked task to pending once every blocking dependency is resolved; otherwise
/// says why it waits.
fn unblock_if_ready(task: &mut Task) -> bool {
    if task.state != TaskState::Blocked {
        return false;
    }
    let blocking: Vec<&Dependency> = task
        .dependencies
        .iter()
        .filter(|d| d.kind.blocks() && d.state != DependencyState::Resolved)
        .collect();
    if blocking.is_empty() {
        task.state = TaskState::Pending;
        task.blocked_reason = None;
        task.generation += 1;
        return true;
    }
    let failed: Vec<String> = blocking
        .iter()
        .filter_map(|d| match &d.state {
            DependencyState::Failed(reason) => Some(format!("upstream `{}` {reason}", d.upstream)),
            _ => None,
        })
        .collect();
    task.blocked_reason = Some(if failed.is_empty() {
        let waiting: Vec<String> = blocking
            .iter()
            .map(|d| format!("`{}`", d.upstream))
            .collect();
        format!("waiting for {}", waiting.join(", "))
    } else {
        failed.join("; ")
    });
    false
}

/// Applies `command` from `user` at `now` (the message's time) to `task` (`None` if it does
/// not exist yet).
pub fn step(
    task: Option<&Task>,
    user: &str,
    command: &Command,
    now: u64,
) -> Result<TaskStep, Refusal> {
    let kind = command.name();
    let Some(task) = task else {
        let Command::Create(new) = command else {
            return Err(Refusal(format!("{kind}: no such task")));
        };
        if new.dependencies.iter().any(|d| d.upstream == new.task_id) {
            return Err(Refusal(format!(
                "{kind}: task `{}` cannot depend on itself",
                new.task_id
            )));
        }
        let task = create(new, user, now);
        let mut effects = Vec::new();
        if !task.dependencies.is_empty() {
            effects.push(Effect::CheckUpstreams);
        }
        if task.state == TaskState::Pending {
            effects.push(Effect::Assign);
        }
        return Ok(TaskStep {
            task,
            notifications: Vec::new(),
            effects,
        });
    };
    if task.user != user {
        return Err(Refusal(format!(
            "{kind}: task `{}` belongs to another user",
            task.task_id
        )));
    }
    let mut next = Task {
        updated_at: now,
        ..task.clone()
    };
    let mut effects = Vec::new();
    let mut notifications = Vec::new();
    let expect = |allowed: &[TaskState]| expect_state(task, kind, allowed);
    let expect_agent = |agent_id: &str| expect_agent(task, kind, agent_id);
    match command {
        Command::Create(_) => {
            return Err(Refusal(format!(
                "{kind}: task `{}` already exists",
                task.task_id
            )));
        }
        Command::Assign { agent_id } => {
            expect(&[TaskState::Pending])?;
            next.state = TaskState::Assigned;
            next.agent_id = Some(agent_id.clone());
            effects.push(Effect::NotifyAgent(agent_id.clone()));
        }
        Command::Start { agent_id } => {
            expect(&[TaskState::Assigned])?;
            expect_agent(agent_id)?;
            next.attempts += 1;
            next.state = if task.require_plan_approval {
                TaskState::Planning
            } else {
                TaskState::Running
            };
        }
        Command::SubmitPlan { agent_id, plan } => {
            expect(&[TaskState::Planning])?;
            expect_agent(agent_id)?;
            next.state = TaskState::PlanReview;
            next.note = Some(plan.clone());
        }
        Command::ApprovePlan => {
            expect(&[TaskState::PlanReview])?;
            next.state = TaskState::Running;
            effects.extend(task.agent_id.clone().map(Effect::NotifyAgent));
        }
        Command::RejectPlan { feedback } => {
            expect(&[TaskState::PlanReview])?;
            next.state = TaskState::Planning;
            next.note = Some(feedback.clone());
            effects.extend(task.agent_id.clone().map(Effect::NotifyAgent));
        }
        Command::RequestHelp { agent_id, question } => {
            expect(&[TaskState::Running])?;
            expect_agent(agent_id)?;
            next.state = TaskState::NeedsHuman;
            next.note = Some(question.clone());
            notifications.push(notice(task, "needs help", "needs_human", now));
        }
        Command::Answer { answer } => {
            expect(&[TaskState::NeedsHuman])?;
            next.state = TaskState::Running;
            next.note = Some(answer.clone());
            effects.extend(task.agent_id.clone().map(Effect::NotifyAgent));
        }
        Command::RequestReview { agent_id, result } => {
            expect(&[TaskState::Running])?;
            expect_agent(agent_id)?;
            check_contracts(task, kind, result)?;
            next.state = TaskState::Review;
            next.result = Some(result.clone());
        }
        Command::Approve => {
            expect(&[TaskState::Review])?;
            next.state = TaskState::Done;
            let result = task.result.clone().unwrap_or_default();
            finish(
                &mut effects,
                &mut notifications,
                task,
                "done",
                Finished::Completed(result),
                now,
            );
        }
        Command::RequestRevision { feedback } => {
            expect(&[TaskState::Review])?;
            next.state = TaskState::Running;
            next.note = Some(feedback.clone());
            effects.extend(task.agent_id.clone().map(Effect::NotifyAgent));
        }
        Command::Complete { agent_id, result } => {
            expect(&[TaskState::Running])?;
            if let Some(agent_id) = agent_id {
                expect_agent(agent_id)?;
            }
            check_contracts(task, kind, result)?;
            next.state = TaskState::Done;
            next.result = Some(result.clone());
            finish(
                &mut effects,
                &mut notifications,
                task,
                "done",
                Finished::Completed(result.clone()),
                now,
            );
        }
        Command::Fail { agent_id, error } => {
            expect(&[TaskState::Assigned, TaskState::Running, TaskState::Planning])?;
            if let Some(agent_id) = agent_id {
                expect_agent(agent_id)?;
            }
            fail(
                &mut next,
                &mut effects,
                &mut notifications,
                task,
                error,
                now,
            );
        }
        Command::Cancel { reason } => {
            if task.state.is_final() {
                return Err(Refusal(format!(
                    "{kind}: task `{}` is {}, which is final",
                    task.task_id,
                    task.state.as_str()
                )));
            }
            next.state = TaskState::Cancelled;
            next.error = reason.clone();
            effects.extend(task.agent_id.clone().map(Effect::NotifyAgent));
            finish(
                &mut effects,
                &mut notifications,
                task,
                "cancelled",
                Finished::Cancelled,
                now,
            );
        }
        Command::Retry => {
            expect(&[TaskState::Failed])?;
            if task.attempts >= task.max_attempts {
                return Err(Refusal(format!(
                    "{kind}: task `{}` used all {} attempts",
                    task.task_id, task.max_attempts
                )));
            }
            next.state = TaskState::Pending;
            next.agent_id = None;
            next.error = None;
            next.generation += 1;
            effects.push(Effect::Assign);
        }
        Command::Requeue { agent_id, reason } => {
            if !task.state.worked_on() || task.agent_id.as_deref() != Some(agent_id) {
                return Err(Refusal(format!(
                    "{kind}: task `{}` is {} with `{}`, not being worked on by `{agent_id}`",
                    task.task_id,
                    task.state.as_str(),
                    task.agent_id.as_deref().unwrap_or("nobody")
                )));
            }
            next.note = Some(reason.clone());
            if task.attempts >= task.max_attempts {
                // Every attempt was started and none finished: no further one is due.
                let error = format!(
                    "{reason}, after all {} attempts were started",
                    task.max_attempts
                );
                fail(
                    &mut next,
                    &mut effects,
                    &mut notifications,
                    task,
                    &error,
                    now,
                );
            } else {
                next.state = TaskState::Pending;
                next.agent_id = None;
                next.generation += 1;
                effects.push(Effect::Assign);
            }
        }
        Command::AddDependency(dependency) => {
            expect(&[TaskState::Pending, TaskState::Blocked])?;
            if dependency.upstream == task.task_id {
                return Err(Refusal(format!(
                    "{kind}: task `{}` cannot depend on itself",
                    task.task_id
                )));
            }
            if task
                .dependencies
                .iter()
                .any(|d| d.upstream == dependency.upstream)
            {
                return Err(Refusal(format!(
                    "{kind}: task `{}` already depends on `{}`",
                    task.task_id, dependency.upstream
                )));
            }
            next.dependencies.push(Dependency {
                state: DependencyState::Waiting,
                ..dependency.clone()
            });
            if dependency.kind.blocks() {
                next.state = TaskState::Blocked;
                unblock_if_ready(&mut next);
            }
            effects.push(Effect::CheckUpstreams);
        }
        Command::ResolveDependency { upstream, value } => {
            let dependency = dependency_mut(&mut next, kind, upstream)?;
            match (&dependency.contract_key, value) {
                (Some(key), None) => {
                    dependency.state =
                        DependencyState::Failed(format!("completed without contract `{key}`"));
                }
                (Some(key), Some(value)) => {
                    dependency.state = DependencyState::Resolved;
                    let key = key.clone();
                    next.inputs.insert(key, value.clone());
                }
                (None, _) => dependency.state = DependencyState::Resolved,
            }
            if unblock_if_ready(&mut next) {
                effects.push(Effect::Assign);
            }
        }
        Command::FailDependency { upstream, reason } => {
            dependency_mut(&mut next, kind, upstream)?.state =
                DependencyState::Failed(reason.clone());
            unblock_if_ready(&mut next);
        }
        Command::Output { agent_id, .. } => {
            expect_agent(agent_id)?;
            next.updated_at = task.updated_at;
        }
    }
    Ok(TaskStep {
        task: next,
        notifications,
        effects,
    })
}

fn dependency_mut<'t>(
    task: &'t mut Task,
    kind: &str,
    upstream: &str,
) -> Result<&'t mut Dependency, Refusal> {
    let id = task.task_id.clone();
    task.dependencies
        .iter_mut()
        .find(|d| d.upstream == upstream)
        .ok_or_else(|| {
            Refusal(format!(
                "{kind}: task `{id}` does not depend on `{upstream}`"
            ))
        })
}

/// Refuses a result that lacks a promised contract key.
fn check_contracts(task: &Task, kind: &str, result: &Map) -> Result<(), Refusal> {
    match task.contracts.iter().find(|key| !result.contains_key(*key)) {
        None => Ok(()),
        Some(key) => Err(Refusal(format!(
            "{kind}: task `{}` promised contract `{key}`, {CONTRACT_MISSING}",
            task.task_id
        ))),
    }
}

/// `next` (once `task`) fails with `error`, and says so as every finish does.
fn fail(
    next: &mut Task,
    effects: &mut Vec<Effect>,
    notifications: &mut Vec<NotificationDraft>,
    task: &Task,
    error: &str,
    now: u64,
) {
    next.state = TaskState::Failed;
    next.error = Some(error.to_owned());
    let finished = Finished::Failed(error.to_owned());
    finish(effects, notifications, task, "failed", finished, now);
}

/// The effects of a task finishing: its dependents hear of it, its agent has room again, and
/// its owner is told.
fn finish(
    effects: &mut Vec<Effect>,
    notifications: &mut Vec<NotificationDraft>,
    task: &Task,
    outcome: &str,
    finished: Finished,
    now: u64,
) {
    effects.push(Effect::Cascade(finished));
    effects.push(Effect::Assign);
    notifications.push(notice(task, outcome, "finished", now));
}

fn notice(task: &Task, outcome: &str, topic: &str, _now: u64) -> NotificationDraft {
    NotificationDraft {
        user: task.user.clone(),
        channel: "default".into(),
        to: task.user.clone(),
        subject: format!("task {} {outcome}", task.task_id),
        text: format!("{} ({outcome})", task.title),
        dedupe_key: format!("task/{}/{topic}/{}", task.task_id, task.generation),
        task_id: Some(task.task_id.clone()),
    }
}

fn expect_state(task: &Task, kind: &str, allowed: &[TaskState]) -> Result<(), Refusal> {
    if allowed.contains(&task.state) {
        return Ok(());
    }
    let allowed: Vec<_> = allowed.iter().map(|s| s.as_str()).collect();
    Err(Refusal(format!(
        "{kind}: task `{}` is {}, but must be {}",
        task.task_id,
        task.state.as_str(),
        allowed.join(" or ")
    )))
}

fn expect_agent(task: &Task, kind: &str, agent_id: &str) -> Result<(), Refusal> {
    if task.agent_id.as_deref() == Some(agent_id) {
        return Ok(());
    }
    Err(Refusal(format!(
        "{kind}: task `{}` is assigned to `{}`, not `{agent_id}`",
        task.task_id,
        task.agent_id.as_deref().unwrap_or("nobody")
    )))
}

impl Task {
    /// How it finished, if it has.
    pub fn finished(&self) -> Option<Finished> {
        match self.state {
            TaskState::Done => Some(Finished::Completed(self.result.clone().unwrap_or_default())),
            TaskState::Failed => Some(Finished::Failed(
                self.error
                    .clone()
                    .unwrap_or_else(|| "no reason given".into()),
            )),
            TaskState::Cancelled => Some(Finished::Cancelled),
            _ => None,
        }
    }
}

/// What an upstream task's finishing means for one dependency on it: the command the
/// dependent task applies.
pub fn resolution(dependency: &Dependency, upstream: &str, finished: &Finished) -> Command {
    let upstream = upstream.to_owned();
    match finished {
        Finished::Completed(result) => Command::ResolveDependency {
            value: dependency
                .contract_key
                .as_ref()
                .and_then(|key| result.get(key).cloned()),
            upstream,
        },
        Finished::Failed(error) => Command::FailDependency {
            upstream,
            reason: format!("failed: {error}"),
        },
        Finished::Cancelled => Command::FailDependency {
            upstream,
            reason: "was cancelled".into(),
        },
    }
}

#[cfg(test)]
mod tests;
