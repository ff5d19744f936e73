//! Pure domain logic: functions from (state, message) to (new state, effects). No I/O.

pub mod agent;
pub mod assign;
pub mod task;

/// Why a message was refused by the domain; final, so the message is dead-lettered with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// What an applied message asks of the rest of the node, carried out after it is persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Assignment may now find work for someone: a task became pending or an agent has room.
    Assign,
}
