//! The task state machine (DESIGN §5): which message moves a task from which state to which.

use std::collections::BTreeMap;

use schemas::{Capabilities, CborValue, Dependency, Envelope, Message, Priority};

use super::{Effect, Refusal};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Waiting for an agent (or for its dependencies).
    Pending,
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
    /// Finished with an error.
    Failed,
    /// Called off.
    Cancelled,
}

impl TaskState {
    /// Every state, for parsing and listing.
    pub const ALL: [TaskState; 10] = [
        TaskState::Pending,
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

    /// Whether an agent is working on a task in this state (it counts against capacity).
    pub fn occupies_agent(self) -> bool {
        matches!(
            self,
            TaskState::Assigned | TaskState::Running | TaskState::Planning | TaskState::PlanReview
        )
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
    /// What an agent must offer.
    pub requirements: Capabilities,
    /// Upstream tasks.
    pub depends_on: Vec<Dependency>,
    /// Where it is in its life.
    pub state: TaskState,
    /// The agent it is assigned to, if any.
    pub agent_id: Option<String>,
    /// The result, once done.
    pub result: Option<BTreeMap<String, CborValue>>,
    /// The error, once failed.
    pub error: Option<String>,
    /// When it was created, ms since the Unix epoch.
    pub created_at: u64,
    /// When it last changed, ms since the Unix epoch.
    pub updated_at: u64,
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
}

/// The outcome of applying one message to a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskStep {
    /// The task after the message.
    pub task: Task,
    /// Notifications to record with it.
    pub notifications: Vec<NotificationDraft>,
    /// What to do once it is persisted.
    pub effects: Vec<Effect>,
}

/// Applies `envelope` (a `task.*` message) to `task` (`None` if it does not exist yet).
pub fn step(task: Option<&Task>, envelope: &Envelope, now: u64) -> Result<TaskStep, Refusal> {
    if let Some(task) = task
        && task.user != envelope.user
    {
        return Err(Refusal(format!(
            "task `{}` belongs to another user",
            task.task_id
        )));
    }
    let kind = envelope.type_name();
    let unknown = || Refusal(format!("{kind}: no task `{}`", task_key(envelope)));
    let mut notifications = Vec::new();
    let mut effects = Vec::new();
    let next = match (&envelope.message, task) {
        (Message::TaskCreated(created), None) => {
            effects.push(Effect::Assign);
            Task {
                task_id: created.task_id.clone(),
                user: envelope.user.clone(),
                title: created.title.clone(),
                spec: created.spec.clone(),
                priority: created.priority,
                requirements: created.requirements.clone(),
                depends_on: created.depends_on.clone(),
                state: TaskState::Pending,
                agent_id: None,
                result: None,
                error: None,
                created_at: now,
                updated_at: now,
            }
        }
        (Message::TaskCreated(created), Some(_)) => {
            return Err(Refusal(format!(
                "task.created: task `{}` already exists",
                created.task_id
            )));
        }
        (Message::TaskAssigned(assigned), Some(task)) => {
            expect_state(task, kind, &[TaskState::Pending])?;
            Task {
                state: TaskState::Assigned,
                agent_id: Some(assigned.agent_id.clone()),
                updated_at: now,
                ..task.clone()
            }
        }
        (Message::TaskStarted(started), Some(task)) => {
            expect_state(task, kind, &[TaskState::Assigned])?;
            expect_agent(task, kind, &started.agent_id)?;
            Task {
                state: TaskState::Running,
                updated_at: now,
                ..task.clone()
            }
        }
        (Message::TaskCompleted(completed), Some(task)) => {
            expect_state(task, kind, &[TaskState::Running])?;
            effects.push(Effect::Assign);
            notifications.push(finished(task, "done"));
            Task {
                state: TaskState::Done,
                result: Some(completed.result.clone()),
                updated_at: now,
                ..task.clone()
            }
        }
        (Message::TaskFailed(failed), Some(task)) => {
            expect_state(task, kind, &[TaskState::Assigned, TaskState::Running])?;
            effects.push(Effect::Assign);
            notifications.push(finished(task, "failed"));
            Task {
                state: TaskState::Failed,
                error: Some(failed.error.clone()),
                updated_at: now,
                ..task.clone()
            }
        }
        (
            Message::TaskAssigned(_)
            | Message::TaskStarted(_)
            | Message::TaskCompleted(_)
            | Message::TaskFailed(_),
            None,
        ) => return Err(unknown()),
        (other, _) => {
            return Err(Refusal(format!(
                "`{}` is not a task message",
                other.type_name()
            )));
        }
    };
    Ok(TaskStep {
        task: next,
        notifications,
        effects,
    })
}

fn task_key(envelope: &Envelope) -> &str {
    envelope.key.strip_prefix("task/").unwrap_or(&envelope.key)
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

fn finished(task: &Task, outcome: &str) -> NotificationDraft {
    NotificationDraft {
        user: task.user.clone(),
        channel: "default".into(),
        to: task.user.clone(),
        subject: format!("task {} {outcome}", task.task_id),
        text: format!("{} ({outcome})", task.title),
        dedupe_key: format!("task/{}/finished", task.task_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{TaskAssigned, TaskCompleted, TaskCreated, TaskFailed, TaskStarted};

    fn env(message: Message) -> Envelope {
        Envelope::new("m", "test", 0, "u1", message)
    }

    fn created() -> Message {
        Message::TaskCreated(TaskCreated {
            task_id: "t1".into(),
            title: "compile".into(),
            spec: "cargo build".into(),
            priority: Priority::Normal,
            requirements: Capabilities::default(),
            depends_on: vec![],
        })
    }

    fn assigned(agent: &str) -> Message {
        Message::TaskAssigned(TaskAssigned {
            task_id: "t1".into(),
            agent_id: agent.into(),
        })
    }

    fn started(agent: &str) -> Message {
        Message::TaskStarted(TaskStarted {
            task_id: "t1".into(),
            agent_id: agent.into(),
        })
    }

    /// Runs `messages` from nothing; returns the final task or the first refusal.
    fn run(messages: Vec<Message>) -> Result<TaskStep, String> {
        let mut task: Option<Task> = None;
        let mut last = None;
        for (i, m) in messages.into_iter().enumerate() {
            let s = step(task.as_ref(), &env(m), i as u64).map_err(|r| r.0)?;
            task = Some(s.task.clone());
            last = Some(s);
        }
        last.ok_or_else(|| "no messages".into())
    }

    #[test]
    fn happy_path_ends_done_with_a_notification() {
        let completed = Message::TaskCompleted(TaskCompleted {
            task_id: "t1".into(),
            result: BTreeMap::new(),
        });
        let s = run(vec![created(), assigned("a1"), started("a1"), completed]).unwrap();
        assert_eq!(s.task.state, TaskState::Done);
        assert_eq!(s.task.agent_id.as_deref(), Some("a1"));
        assert_eq!(s.notifications.len(), 1);
        assert_eq!(s.notifications[0].dedupe_key, "task/t1/finished");
        assert_eq!(s.effects, vec![Effect::Assign]);
    }

    #[test]
    fn failure_records_the_error() {
        let failed = Message::TaskFailed(TaskFailed {
            task_id: "t1".into(),
            error: "exit 2".into(),
        });
        let s = run(vec![created(), assigned("a1"), failed]).unwrap();
        assert_eq!(
            (s.task.state, s.task.error.as_deref()),
            (TaskState::Failed, Some("exit 2"))
        );
    }

    #[test]
    fn refusals_name_the_states() {
        assert_eq!(
            run(vec![created(), started("a1")]).unwrap_err(),
            "task.started: task `t1` is pending, but must be assigned"
        );
        assert_eq!(
            run(vec![created(), assigned("a1"), started("a2")]).unwrap_err(),
            "task.started: task `t1` is assigned to `a1`, not `a2`"
        );
        assert_eq!(
            run(vec![created(), created()]).unwrap_err(),
            "task.created: task `t1` already exists"
        );
        assert_eq!(
            run(vec![assigned("a1")]).unwrap_err(),
            "task.assigned: no task `t1`"
        );
        assert_eq!(
            run(vec![created(), assigned("a1"), assigned("a1")]).unwrap_err(),
            "task.assigned: task `t1` is assigned, but must be pending"
        );
    }

    #[test]
    fn another_users_message_is_refused() {
        let task = step(None, &env(created()), 0).unwrap().task;
        let foreign = Envelope::new("m2", "test", 0, "u2", assigned("a1"));
        assert!(
            step(Some(&task), &foreign, 1)
                .unwrap_err()
                .0
                .contains("another user")
        );
    }

    #[test]
    fn state_names_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
        }
    }
}
