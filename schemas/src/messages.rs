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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// `task.failed`: the task finished with an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailed {
    /// The task's id.
    pub task_id: String,
    /// Why it failed.
    pub error: String,
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
}

/// Expands `$apply` once per variant with its type name and payload type, so the
/// name table, the decoder and the encoder cannot drift apart.
macro_rules! for_each_message {
    ($apply:ident) => {
        $apply! {
            AgentRegistered => "agent.registered",
            AgentHeartbeat => "agent.heartbeat",
            TaskCreated => "task.created",
            TaskAssigned => "task.assigned",
            TaskStarted => "task.started",
            TaskCompleted => "task.completed",
            TaskFailed => "task.failed",
            NotificationRequested => "notification.requested",
        }
    };
}

macro_rules! message_impl {
    ($($variant:ident => $name:literal,)*) => {
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

            /// The body as a CBOR value.
            pub(crate) fn to_body(&self) -> Value {
                let value = match self {
                    $(Message::$variant(m) => serde_cbor::value::to_value(m),)*
                };
                value.expect("message bodies are plain data and always serialize")
            }
        }
    };
}
for_each_message!(message_impl);

impl Message {
    /// The routing key this message must travel under; `user` is the envelope's owner.
    pub fn routing_key(&self, user: &str) -> String {
        match self {
            Message::AgentRegistered(m) => format!("agent/{}", m.agent_id),
            Message::AgentHeartbeat(m) => format!("agent/{}", m.agent_id),
            Message::TaskCreated(m) => format!("task/{}", m.task_id),
            Message::TaskAssigned(m) => format!("task/{}", m.task_id),
            Message::TaskStarted(m) => format!("task/{}", m.task_id),
            Message::TaskCompleted(m) => format!("task/{}", m.task_id),
            Message::TaskFailed(m) => format!("task/{}", m.task_id),
            Message::NotificationRequested(_) => format!("notify/{user}"),
        }
    }
}
