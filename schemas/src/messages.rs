//! The typed bodies of DESIGN §8, one struct per message type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_cbor::Value;

/// What an agent offers, or what a task requires: lists of free-form names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Repositories.
    #[serde(default)]
    pub repos: Vec<String>,
    /// Programming languages.
    #[serde(default)]
    pub languages: Vec<String>,
    /// Environments (e.g. `linux`, `gpu`).
    #[serde(default)]
    pub environments: Vec<String>,
    /// Tools (e.g. `cargo`).
    #[serde(default)]
    pub tools: Vec<String>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `agent.registered`: an agent announces itself and its capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRegistered {
    /// The agent's id.
    pub agent_id: String,
    /// Display name.
    pub name: String,
    /// What the agent offers.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Tasks the agent works on at once, at most.
    pub max_concurrent: u32,
}

/// `agent.heartbeat`: an agent is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHeartbeat {
    /// The agent's id.
    pub agent_id: String,
}

/// How urgent a task is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Whenever there is room.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Before normal work.
    High,
    /// Before everything else.
    Urgent,
}

impl Priority {
    /// The wire name of the priority.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }
}

/// How a task depends on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DependencyKind {
    /// Wait for the upstream task to complete.
    Blocks,
    /// Wait, and receive a named value of its result.
    Input,
    /// Informational only.
    Related,
}

/// One upstream task of a `task.created`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    /// The task's id.
    pub task_id: String,
    /// How it depends (wire key `type`).
    #[serde(rename = "type")]
    pub kind: DependencyKind,
    /// For `input`: the key of the upstream result value to receive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_key: Option<String>,
}

/// `task.created`: a new unit of work.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCreated {
    /// The task's id.
    pub task_id: String,
    /// Short title.
    pub title: String,
    /// What to do.
    pub spec: String,
    /// Urgency; `normal` when absent.
    #[serde(default)]
    pub priority: Priority,
    /// What an agent must offer to take it; all optional.
    #[serde(default)]
    pub requirements: Capabilities,
    /// Upstream tasks; optional.
    #[serde(default)]
    pub depends_on: Vec<Dependency>,
    /// Keys the result promises to carry, for downstream `input` dependencies; optional.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contracts: Vec<String>,
    /// Whether the agent must have a plan approved before it runs; optional.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_plan_approval: bool,
    /// How many times it may be tried in all (a failed task may be retried until then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// An agent to prefer when one qualifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_agent: Option<String>,
}

/// `task.assigned`: the orchestrator gave a task to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAssigned {
    /// The task's id.
    pub task_id: String,
    /// The agent's id.
    pub agent_id: String,
}

/// `task.started`: the agent began work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStarted {
    /// The task's id.
    pub task_id: String,
    /// The agent's id.
    pub agent_id: String,
}

/// `task.completed`: the task finished with a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCompleted {
    /// The task's id.
    pub task_id: String,
    /// The result, a map of free-form values.
    pub result: BTreeMap<String, Value>,
    /// The agent reporting it, if an agent does: checked against the task's agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

/// `task.failed`: the task finished with an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailed {
    /// The task's id.
    pub task_id: String,
    /// Why it failed.
    pub error: String,
    /// The agent reporting it, if an agent does: checked against the task's agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

/// `task.plan_submitted`: the agent proposes how it will do the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPlanSubmitted {
    /// The task's id.
    pub task_id: String,
    /// The agent's id.
    pub agent_id: String,
    /// The plan.
    pub plan: String,
}

/// `task.plan_approved`: a person accepts the plan; the agent runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPlanApproved {
    /// The task's id.
    pub task_id: String,
}

/// `task.plan_rejected`: a person sends the plan back with feedback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPlanRejected {
    /// The task's id.
    pub task_id: String,
    /// What to change.
    pub feedback: String,
}

/// `task.help_requested`: the agent needs a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskHelpRequested {
    /// The task's id.
    pub task_id: String,
    /// The agent's id.
    pub agent_id: String,
    /// What it asks.
    pub question: String,
}

/// `task.answered`: a person answered the agent; it carries on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAnswered {
    /// The task's id.
    pub task_id: String,
    /// The answer.
    pub answer: String,
}

/// `task.review_requested`: the agent submits its result for review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskReviewRequested {
    /// The task's id.
    pub task_id: String,
    /// The agent's id.
    pub agent_id: String,
    /// The result to review.
    pub result: BTreeMap<String, Value>,
}

/// `task.approved`: the reviewer accepts the result; the task is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskApproved {
    /// The task's id.
    pub task_id: String,
}

/// `task.revision_requested`: the reviewer wants changes; the agent carries on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRevisionRequested {
    /// The task's id.
    pub task_id: String,
    /// What to change.
    pub feedback: String,
}

/// `task.cancelled`: the task is called off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCancelled {
    /// The task's id.
    pub task_id: String,
    /// Why, if said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `task.retried`: a failed task goes back to the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRetried {
    /// The task's id.
    pub task_id: String,
}

/// `task.requeued`: the task's agent went away; it goes back to the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRequeued {
    /// The task's id.
    pub task_id: String,
    /// The agent that had it.
    pub agent_id: String,
    /// Why.
    pub reason: String,
}

/// `task.dependency_added`: the task gets another upstream task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDependencyAdded {
    /// The task's id.
    pub task_id: String,
    /// The new upstream.
    pub dependency: Dependency,
}

/// `task.dependency_resolved`: an upstream task completed; with the contract value an
/// `input` dependency receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDependencyResolved {
    /// The task's id.
    pub task_id: String,
    /// The upstream task's id.
    pub upstream: String,
    /// For `input`: the value under the dependency's contract key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// `task.dependency_failed`: an upstream task failed or was cancelled, or lacks a contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDependencyFailed {
    /// The task's id.
    pub task_id: String,
    /// The upstream task's id.
    pub upstream: String,
    /// What went wrong upstream.
    pub reason: String,
}

/// `task.output`: lines the agent's work printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOutput {
    /// The task's id.
    pub task_id: String,
    /// The agent's id.
    pub agent_id: String,
    /// The lines, in order.
    pub lines: Vec<String>,
}

/// `agent.offline`: the agent missed its heartbeats; its work is requeued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentOffline {
    /// The agent's id.
    pub agent_id: String,
    /// Why it counts as gone.
    pub reason: String,
}

/// `notification.requested`: send a message to a person on a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRequested {
    /// Channel name (e.g. `webhook`, `email`, `sms`).
    pub channel: String,
    /// Recipient address on that channel.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Message text.
    pub text: String,
    /// Repeats with the same key are sent once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_key: Option<String>,
}

/// One attachment of an inbound message: its metadata only, never its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// File name as the provider gave it.
    pub name: String,
    /// Media type, e.g. `image/png`.
    pub content_type: String,
    /// Size in bytes; 0 when the provider did not say.
    #[serde(default)]
    pub size: u64,
}

/// `message.received`: a person wrote to switchyard on a channel (SMS, Slack, Discord, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageReceived {
    /// The channel's name: `sms`, `slack`, `discord`, `telegram` or `email`.
    pub channel: String,
    /// The conversation on that channel (a phone number pair, a Slack channel, a chat id, ...).
    pub conversation: String,
    /// Who wrote it, as the provider names them.
    pub sender: String,
    /// The message's text.
    pub text: String,
    /// The provider's id of the message; a resent webhook carries the same one.
    pub provider_id: String,
    /// When it was received, ms since the Unix epoch.
    pub received: u64,
    /// Attachments' metadata.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

/// `calendar.book_requested`: someone asks calendar `calendar_id` for the slot `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarBookRequested {
    /// The calendar.
    pub calendar_id: String,
    /// The requester's id for this request: a resent request has the same one.
    pub request_id: String,
    /// What the slot is for.
    pub title: String,
    /// Its first millisecond (since the Unix epoch).
    pub start: u64,
    /// The millisecond after its last.
    pub end: u64,
}

/// `calendar.booked`: the slot of request `request_id` is booked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarBooked {
    /// The calendar.
    pub calendar_id: String,
    /// The request that got its slot.
    pub request_id: String,
}

/// `calendar.conflict`: the slot of request `request_id` overlaps a booking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarConflict {
    /// The calendar.
    pub calendar_id: String,
    /// The request that did not get its slot.
    pub request_id: String,
    /// The request whose booking is in the way.
    pub conflicts_with: String,
}

/// `invocation.recorded`: a model was invoked for `user` (the envelope's), at a cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationRecorded {
    /// The caller's id for this invocation: recorded once, however often it is sent.
    pub invocation_id: String,
    /// Who served it (`anthropic`, `openai`, …).
    pub provider: String,
    /// Which model.
    pub model: String,
    /// Tokens sent.
    pub tokens_in: u64,
    /// Tokens received.
    pub tokens_out: u64,
    /// What it cost, in US dollars.
    pub cost: f64,
    /// How long it took, ms.
    #[serde(default)]
    pub latency_ms: u64,
    /// The task it was for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
}

/// `budget.set`: the user's model budgets, in US dollars, from now on (admin keys only); one
/// left out keeps the configured one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetSet {
    /// Per day (UTC), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<f64>,
    /// Per calendar month (UTC), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<f64>,
}

/// `automation.defined`: tasks to create on a cron schedule (defining an id again replaces
/// it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutomationDefined {
    /// The automation's id.
    pub automation_id: String,
    /// A cron expression: five fields, or six with seconds first.
    pub schedule: String,
    /// The IANA zone the schedule is read in; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// What a run missed while no node was running comes to: `skip` (the default) or
    /// `catch_up` (one run for all that were missed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<String>,
    /// The tasks of each run; their `task_id`s name steps of a run, which `depends_on` may
    /// name. A run's task ids are `<automation_id>.<run>.<step>`.
    pub tasks: Vec<TaskCreated>,
    /// Whether it is paused (no scheduled runs; a run-now still runs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// `automation.run_requested`: run automation `automation_id` now, beside its schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutomationRunRequested {
    /// The automation.
    pub automation_id: String,
}

/// A typed message body; its variant decides the envelope's `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `agent.registered`.
    AgentRegistered(AgentRegistered),
    /// `agent.heartbeat`.
    AgentHeartbeat(AgentHeartbeat),
    /// `task.created`.
    TaskCreated(TaskCreated),
    /// `task.assigned`.
    TaskAssigned(TaskAssigned),
    /// `task.started`.
    TaskStarted(TaskStarted),
    /// `task.completed`.
    TaskCompleted(TaskCompleted),
    /// `task.failed`.
    TaskFailed(TaskFailed),
    /// `notification.requested`.
    NotificationRequested(NotificationRequested),
    /// `task.plan_submitted`.
    TaskPlanSubmitted(TaskPlanSubmitted),
    /// `task.plan_approved`.
    TaskPlanApproved(TaskPlanApproved),
    /// `task.plan_rejected`.
    TaskPlanRejected(TaskPlanRejected),
    /// `task.help_requested`.
    TaskHelpRequested(TaskHelpRequested),
    /// `task.answered`.
    TaskAnswered(TaskAnswered),
    /// `task.review_requested`.
    TaskReviewRequested(TaskReviewRequested),
    /// `task.approved`.
    TaskApproved(TaskApproved),
    /// `task.revision_requested`.
    TaskRevisionRequested(TaskRevisionRequested),
    /// `task.cancelled`.
    TaskCancelled(TaskCancelled),
    /// `task.retried`.
    TaskRetried(TaskRetried),
    /// `task.requeued`.
    TaskRequeued(TaskRequeued),
    /// `task.dependency_added`.
    TaskDependencyAdded(TaskDependencyAdded),
    /// `task.dependency_resolved`.
    TaskDependencyResolved(TaskDependencyResolved),
    /// `task.dependency_failed`.
    TaskDependencyFailed(TaskDependencyFailed),
    /// `task.output`.
    TaskOutput(TaskOutput),
    /// `agent.offline`.
    AgentOffline(AgentOffline),
    /// `message.received`.
    MessageReceived(MessageReceived),
    /// `calendar.book_requested`.
    CalendarBookRequested(CalendarBookRequested),
    /// `calendar.booked`.
    CalendarBooked(CalendarBooked),
    /// `calendar.conflict`.
    CalendarConflict(CalendarConflict),
    /// `invocation.recorded`.
    InvocationRecorded(InvocationRecorded),
    /// `budget.set`.
    BudgetSet(BudgetSet),
    /// `automation.defined`.
    AutomationDefined(AutomationDefined),
    /// `automation.run_requested`.
    AutomationRunRequested(AutomationRunRequested),
}

/// Expands `$apply` once per variant with its type name and the entity kind its routing key
/// names (`task/<task_id>`, `agent/<agent_id>`, `notify/<user>`,
/// `conversation/<channel>/<conversation>`, `calendar/<calendar_id>`, `costs/<user>`,
/// `automation/<automation_id>`), so the name table, the
/// decoder, the encoder and the routing cannot drift apart.
macro_rules! for_each_message {
    ($apply:ident) => {
        $apply! {
            AgentRegistered => "agent.registered", agent,
            AgentHeartbeat => "agent.heartbeat", agent,
            TaskCreated => "task.created", task,
            TaskAssigned => "task.assigned", task,
            TaskStarted => "task.started", task,
            TaskCompleted => "task.completed", task,
            TaskFailed => "task.failed", task,
            NotificationRequested => "notification.requested", notify,
            TaskPlanSubmitted => "task.plan_submitted", task,
            TaskPlanApproved => "task.plan_approved", task,
            TaskPlanRejected => "task.plan_rejected", task,
            TaskHelpRequested => "task.help_requested", task,
            TaskAnswered => "task.answered", task,
            TaskReviewRequested => "task.review_requested", task,
            TaskApproved => "task.approved", task,
            TaskRevisionRequested => "task.revision_requested", task,
            TaskCancelled => "task.cancelled", task,
            TaskRetried => "task.retried", task,
            TaskRequeued => "task.requeued", task,
            TaskDependencyAdded => "task.dependency_added", task,
            TaskDependencyResolved => "task.dependency_resolved", task,
            TaskDependencyFailed => "task.dependency_failed", task,
            TaskOutput => "task.output", task,
            AgentOffline => "agent.offline", agent,
            MessageReceived => "message.received", conversation,
            CalendarBookRequested => "calendar.book_requested", calendar,
            CalendarBooked => "calendar.booked", calendar,
            CalendarConflict => "calendar.conflict", calendar,
            InvocationRecorded => "invocation.recorded", costs,
            BudgetSet => "budget.set", costs,
            AutomationDefined => "automation.defined", automation,
            AutomationRunRequested => "automation.run_requested", automation,
        }
    };
}

/// The routing key of a body whose entity kind is `$kind`.
macro_rules! routing_key {
    (task, $m:expr, $user:expr) => {
        format!("task/{}", $m.task_id)
    };
    (agent, $m:expr, $user:expr) => {
        format!("agent/{}", $m.agent_id)
    };
    (notify, $m:expr, $user:expr) => {
        format!("notify/{}", $user)
    };
    (conversation, $m:expr, $user:expr) => {
        format!("conversation/{}/{}", $m.channel, $m.conversation)
    };
    (calendar, $m:expr, $user:expr) => {
        format!("calendar/{}", $m.calendar_id)
    };
    (costs, $m:expr, $user:expr) => {
        format!("costs/{}", $user)
    };
    (automation, $m:expr, $user:expr) => {
        format!("automation/{}", $m.automation_id)
    };
}

macro_rules! message_impl {
    ($($variant:ident => $name:literal, $kind:ident,)*) => {
        impl Message {
            /// Every message type this build knows.
            pub const TYPES: &'static [&'static str] = &[$($name),*];

            /// The envelope `type` of this message.
            pub fn type_name(&self) -> &'static str {
                match self { $(Message::$variant(_) => $name,)* }
            }

            /// Reads a body of the given `type`; `Ok(None)` when the type is unknown.
            pub(crate) fn from_body(kind: &str, body: Value) -> Result<Option<Self>, serde_cbor::Error> {
                Ok(Some(match kind {
                    $($name => Message::$variant(serde_cbor::value::from_value(body)?),)*
                    _ => return Ok(None),
                }))
            }

            /// Reads a body of the given `type` straight from `deserializer`; `Ok(None)` when the
            /// type is unknown.
            pub(crate) fn deserialize_body<'de, D: serde::Deserializer<'de>>(
                kind: &str,
                deserializer: D,
            ) -> Result<Option<Self>, D::Error> {
                Ok(Some(match kind {
                    $($name => Message::$variant(Deserialize::deserialize(deserializer)?),)*
                    _ => return Ok(None),
                }))
            }

            /// The body as a CBOR value.
            pub(crate) fn to_body(&self) -> Value {
                let value = match self {
                    $(Message::$variant(m) => serde_cbor::value::to_value(m),)*
                };
                value.expect("message bodies are plain data and always serialize")
            }

            /// The routing key this message must travel under; `user` is the envelope's owner.
            pub fn routing_key(&self, user: &str) -> String {
                match self {
                    $(Message::$variant(m) => { let _ = &m; routing_key!($kind, m, user) })*
                }
            }
        }
    };
}
for_each_message!(message_impl);
