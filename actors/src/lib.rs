//! switchyard's domain actors, their pure state machines, and persistence.
//!
//! `domain` is pure; `store` is the database; `shells` are the actors that run the first
//! against the second and the bus. The node's tree is composed from these by the root crate.

#![warn(missing_docs)]

pub mod agent_signals;
pub mod api;
pub mod budgets;
pub mod chaos;
mod clock;
pub mod credentials;
pub mod domain;
pub mod edge;
mod outbound;
mod outcomes;
mod ownership;
pub mod providers;
pub mod secret;
mod shells;
pub mod signature;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod trace;
pub mod tree;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use broker_adapters::Bus;

pub use api::{ApiError, NodeApi};
pub use clock::Clock;
pub use outbound::publish;
pub use outcomes::Outcomes;
pub use ownership::Ownership;
pub use shells::automations::AutomationsActor;
pub use shells::calendar::CalDavBackend;
pub use shells::cluster;
pub use shells::entity::{AgentMailbox, TaskMailbox};
pub use shells::ingress::{INGRESS_GROUP, IngressActor};
pub use shells::notifier::{NotifierActor, Notify};
pub use shells::orchestrator::{AssignRequest, OrchestratorActor, OrchestratorMsg, poke};
pub use shells::outbox::{Channel, Notifier, OutboxActor};
pub use shells::provider::{CallError, ProviderActor, ProviderArgs, ProviderHandle, mailbox};
pub use shells::relay::Cascades;
pub use shells::replay::{Progress, Quiet, Replayed, replay, resume_from};
pub use store::Store;

/// What the benchmarks drive directly, below the node: the ingress's hop and a shard of
/// mailboxes of a kind of their own. Not an interface to build on.
#[doc(hidden)]
pub mod bench {
    pub use crate::shells::entity::{ApplyError, Kind};
    pub use crate::shells::ingress::hop;
    pub use crate::shells::shard::{ShardActor, ShardMsg};

    /// The name (tree path) of the task shard of `partition`, where the router looks for it.
    pub fn task_shard(ctx: &crate::NodeContext, partition: u32) -> String {
        crate::shells::router::shard_path(ctx, crate::tree::names::TASKS, partition)
    }
}

/// Everything the node's actors share: storage, the bus, and where they sit in the tree.
#[derive(Clone)]
pub struct NodeContext {
    /// The state database.
    pub store: Store,
    /// The event bus.
    pub bus: Arc<dyn Bus>,
    /// This node's id, used in message sources.
    pub node_id: String,
    /// The root of the supervision tree (`node`); children live at `node/<name>`.
    pub root: String,
    /// Partitions of the events topic.
    pub partitions: u32,
    /// The live view of the supervision tree, where mailboxes show themselves.
    pub tree: supervisor::Tree,
    /// How long an entity's mailbox may sit idle before it is passivated.
    pub passivate_after: Duration,
    /// How often the orchestrator re-checks for assignable work even if nothing told it to.
    pub assign_interval: Duration,
    /// The partitions of the events topic this node owns now.
    pub ownership: Ownership,
    /// How long an agent may go without a heartbeat before it counts as offline.
    pub agent_timeout: Duration,
    /// Changes to agents' tasks, for their workers' links on this node.
    pub agent_signals: agent_signals::AgentSignals,
    /// Callers waiting for messages to be applied here.
    pub outcomes: Outcomes,
    /// Finished tasks whose dependents are still to be told.
    pub cascades: Cascades,
    /// Whether the orchestrator has a request for a pass waiting.
    pub assign_request: AssignRequest,
    /// What each inbound channel's messages may become, by channel name.
    pub channels: Arc<BTreeMap<String, domain::conversation::Rules>>,
    /// How notifications are delivered, and through which providers.
    pub notifier: Arc<Notifier>,
    /// The configured model budgets.
    pub budgets: Arc<budgets::CostsConfig>,
    /// The time of the node's timed work (retries, quiet hours, automations).
    pub clock: Clock,
    /// Each model provider's mailbox, holding its limit, by provider.
    pub models: Arc<BTreeMap<String, ProviderHandle>>,
    /// The CalDAV server holding calendars, if they are not kept in the database alone.
    pub caldav: Option<CalDavBackend>,
    /// How late a scheduled automation run may fire and still be on time; later, it was
    /// missed and its policy decides.
    pub automation_grace: Duration,
}

pub use tree::names;

/// A fresh message id: a UUIDv7, so ids sort by creation time.
pub fn new_message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl NodeContext {
    /// The tree path (and registered name) of the part `name` of the node's tree.
    pub fn path(&self, name: &str) -> String {
        let relative = tree::relative_path(name).unwrap_or(name);
        format!("{}/{relative}", self.root)
    }
}
