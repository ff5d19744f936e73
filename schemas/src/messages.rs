//! The typed bodies of DESIGN §8, one struct per message type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_cbor::Value;

/// What an agent offers, or what a task requires: lists of free-form names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    #[serde(default)]
    pub repos: Vec<String>,
    #[serde(default)]
    pub languages: Vec<String>,
    #[serde(default)]
    pub environments: Vec<String>,
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `agent.registered`: an agent announces itself and its capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRegistered {
    pub agent_id: String,
    pub name: String,
    #[serde(default)]
    pub capabilities: Capabilities,
    pub max_concurrent: u32,
}

/// `agent.heartbeat`: an agent is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHeartbeat {
    pub agent_id: String,
}

/// How urgent a task is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
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
    Blocks,
    Input,
    Related,
}

/// One upstream task of a `task.created`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub task_id: String,
    #[serde(rename = "type")]
    pub kind: DependencyKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_key: Option<String>,
}

/// `task.created`: a new unit of work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCreated {
    pub task_id: String,
    pub title: String,
    pub spec: String,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default)]
    pub requirements: Capabilities,
    #[serde(default)]
    pub depends_on: Vec<Dependency>,
}

/// `task.assigned`: the orchestrator gave a task to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAssigned {
    pub task_id: String,
    pub agent_id: String,
}

/// `task.started`: the agent began work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStarted {
    pub task_id: String,
    pub agent_id: String,
}

/// `task.completed`: the task finished with a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCompleted {
    pub task_id: String,
    pub result: BTreeMap<String, Value>,
}

/// `task.failed`: the task finished with an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailed {
    pub task_id: String,
    pub error: String,
}

/// `notification.requested`: send a message to a person on a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRequested {
    pub channel: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_key: Option<String>,
}

/// A typed message body; its variant decides the envelope's `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    AgentRegistered(AgentRegistered),
    AgentHeartbeat(AgentHeartbeat),
    TaskCreated(TaskCreated),
    TaskAssigned(TaskAssigned),
    TaskStarted(TaskStarted),
    TaskCompleted(TaskCompleted),
    TaskFailed(TaskFailed),
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
