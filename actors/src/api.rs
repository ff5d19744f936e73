//! The node as the gateways see it: one narrow interface for publishing messages, learning
//! how they fared, reading state and hearing about an agent's tasks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker_adapters::Bus;
use schemas::{Envelope, Message};
use tokio::sync::broadcast;

use crate::store::{Outcome, Store, StoreError, now_ms};
use crate::{NodeContext, new_message_id};

/// Why a message could not be handed to the node.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The bus did not take it; retry.
    #[error("bus: {0}")]
    Bus(String),
    /// The database failed; retry.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Handle to a running node for its front doors; cheap to clone.
#[derive(Clone)]
pub struct NodeApi {
    store: Store,
    bus: Arc<dyn Bus>,
    node_id: String,
    agent_signals: broadcast::Sender<String>,
    agent_timeout: Duration,
}

impl NodeApi {
    /// The interface to the node running with `ctx`.
    pub fn new(ctx: &NodeContext) -> NodeApi {
        NodeApi {
            store: ctx.store.clone(),
            bus: ctx.bus.clone(),
            node_id: ctx.node_id.clone(),
            agent_signals: ctx.agent_signals.clone(),
            agent_timeout: ctx.agent_timeout,
        }
    }

    /// The state database, for reads and keys.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The bus, for its health and partitions.
    pub fn bus(&self) -> &dyn Bus {
        self.bus.as_ref()
    }

    /// Publishes `envelope`; returns once the bus holds it durably.
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), ApiError> {
        crate::publish(self.bus.as_ref(), envelope)
            .await
            .map(|_| ())
            .map_err(|e| ApiError::Bus(e.error.to_string()))
    }

    /// An envelope for `message` from `source` on behalf of `user`, with a fresh id and now.
    pub fn envelope(&self, source: &str, user: &str, message: Message) -> Envelope {
        Envelope::new(
            new_message_id(),
            source.to_owned(),
            now_ms(),
            user.to_owned(),
            message,
        )
    }

    /// Waits until message `id` is applied or refused, at most `wait`; `None` if neither yet.
    pub async fn outcome(&self, id: &str, wait: Duration) -> Result<Option<Outcome>, StoreError> {
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(outcome) = self.store.outcome(id).await? {
                return Ok(Some(outcome));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Ids of agents whose tasks change from now on (from mailboxes on this node).
    pub fn agent_signals(&self) -> broadcast::Receiver<String> {
        self.agent_signals.subscribe()
    }

    /// How often a worker must send a heartbeat to stay online (a third of the timeout).
    pub fn heartbeat_interval(&self) -> Duration {
        self.agent_timeout / 3
    }
}
