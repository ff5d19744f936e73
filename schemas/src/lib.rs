//! switchyard's wire vocabulary: the envelope, the message types, the CBOR codec and the protos.
//!
//! Everything that crosses a process boundary is defined here and nowhere else.

#![warn(missing_docs)]

mod codec;
mod envelope;
mod error;
mod messages;
#[cfg(feature = "grpc")]
pub mod proto;

pub use codec::{MAX_ENVELOPE_BYTES, decode, decode_value, encode};
pub use envelope::{ENVELOPE_VERSION, Envelope, MAX_ID_BYTES};
pub use error::DecodeError;
pub use messages::{
    AgentHeartbeat, AgentOffline, AgentRegistered, Attachment, AutomationDefined,
    AutomationRunRequested, BudgetSet, CalendarBookRequested, CalendarBooked, CalendarConflict,
    Capabilities, Dependency, DependencyKind, InvocationRecorded, Message, MessageReceived,
    NotificationRequested, Priority, TaskAnswered, TaskApproved, TaskAssigned, TaskCancelled,
    TaskCompleted, TaskCreated, TaskDependencyAdded, TaskDependencyFailed, TaskDependencyResolved,
    TaskFailed, TaskHelpRequested, TaskOutput, TaskPlanApproved, TaskPlanRejected,
    TaskPlanSubmitted, TaskRequeued, TaskRetried, TaskReviewRequested, TaskRevisionRequested,
    TaskStarted,
};

/// The bus topic every event travels on (DESIGN §8).
pub const EVENTS_TOPIC: &str = "switchyard.events";

/// Re-exported so callers can build and read free-form CBOR values (such as task results).
pub use serde_cbor::Value as CborValue;
