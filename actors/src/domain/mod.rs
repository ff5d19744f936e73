//! Pure domain logic: functions from (state, command, now) to (new state, effects), in the
//! domain's own types. No I/O, no wire types: `command` maps wire messages to commands at the
//! edge, and the actor shells carry out the effects.

pub mod agent;
pub mod assign;
pub mod automation;
pub mod calendar;
pub mod conversation;
pub mod costs;
pub mod dag;
pub mod notify;
pub mod task;

use std::collections::BTreeMap;

/// A free-form value: a task's result, a contract value.
pub type Value = serde_json::Value;

/// A map of free-form values by name.
pub type Map = BTreeMap<String, Value>;

/// Why a command was refused by the domain; final, so the message is dead-lettered with it
/// (and a gRPC caller gets it as FAILED_PRECONDITION).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// What an agent offers, or what a task requires: lists of names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Repositories.
    pub repos: Vec<String>,
    /// Programming languages.
    pub languages: Vec<String>,
    /// Environments (e.g. `linux`, `gpu`).
    pub environments: Vec<String>,
    /// Tools (e.g. `cargo`).
    pub tools: Vec<String>,
    /// Free-form tags.
    pub tags: Vec<String>,
}

/// How urgent a task is; the order is the order of assignment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
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
    /// Every priority, lowest first.
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Urgent,
    ];

    /// The priority's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }

    /// The priority named `name`, if any.
    pub fn parse(name: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// How a task depends on an upstream task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencyKind {
    /// Wait for the upstream to complete.
    Blocks,
    /// Wait, and receive the value under a contract key of its result.
    Input,
    /// Informational only.
    Related,
}

impl DependencyKind {
    /// Whether the downstream task waits for it.
    pub fn blocks(self) -> bool {
        matches!(self, DependencyKind::Blocks | DependencyKind::Input)
    }

    /// The kind's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyKind::Blocks => "blocks",
            DependencyKind::Input => "input",
            DependencyKind::Related => "related",
        }
    }

    /// The kind named `name`, if any.
    pub fn parse(name: &str) -> Option<DependencyKind> {
        [
            DependencyKind::Blocks,
            DependencyKind::Input,
            DependencyKind::Related,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }
}

/// Where an upstream dependency stands, from the downstream task's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependencyState {
    /// The upstream has not completed.
    Waiting,
    /// The upstream completed (and any contract value was received).
    Resolved,
    /// The upstream failed or was cancelled, or lacked the contract value; the reason.
    Failed(String),
}

/// One upstream task of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The upstream task's id.
    pub upstream: String,
    /// How the task depends on it.
    pub kind: DependencyKind,
    /// For `Input`: the key of the upstream result value to receive.
    pub contract_key: Option<String>,
    /// Where it stands.
    pub state: DependencyState,
}

/// What a finished task means for the tasks that depend on it.
#[derive(Debug, Clone, PartialEq)]
pub enum Finished {
    /// It completed with this result.
    Completed(Map),
    /// It failed with this error.
    Failed(String),
    /// It was called off.
    Cancelled,
}

/// What an applied command asks of the rest of the node, carried out once it is persisted.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Assignment may now find work for someone: a task became pending or an agent has room.
    Assign,
    /// Tell the tasks that depend on this one how it finished.
    Cascade(Finished),
    /// Ask the upstream tasks whether they already finished (a task created or given a new
    /// dependency after its upstream completed hears it this way).
    CheckUpstreams,
    /// Tell the agent's worker, if it is linked to this node, that its task changed.
    NotifyAgent(String),
    /// The agent is gone: requeue the tasks it holds.
    RequeueTasksOf(String),
}
