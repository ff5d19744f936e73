//! The node as the gateways see it: one narrow interface for publishing messages, learning
//! how they fared, reading state and hearing about an agent's tasks.

use std::time::{Duration, Instant};

use broker_adapters::Bus;
use schemas::{Envelope, Message};

use crate::domain::task::{Task, TaskState};
use crate::store::{Outcome, Store, StoreError, now_ms};
use crate::{CallError, NodeContext, new_message_id};

/// How often a caller waiting for an outcome looks in the store, for a message applied by
/// another node's mailbox (this node's mailboxes tell it at once).
const STORE_POLL: Duration = Duration::from_millis(250);

/// Why a message could not be handed to the node.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The bus did not take it; retry.
    #[error("bus: {0}")]
    Bus(String),
    /// The database failed; retry.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The message is larger than any node reads: final.
    #[error("the message is {size} bytes encoded; at most {max} are taken")]
    TooLarge {
        /// Its encoded size.
        size: usize,
        /// The most a node decodes.
        max: usize,
    },
}

/// Handle to a running node for its front doors; cheap to clone.
#[derive(Clone)]
pub struct NodeApi {
    ctx: NodeContext,
}

impl NodeApi {
    /// The interface to the node running with `ctx`.
    pub fn new(ctx: &NodeContext) -> NodeApi {
        NodeApi { ctx: ctx.clone() }
    }

    /// The state database, for reads and keys.
    pub fn store(&self) -> &Store {
        &self.ctx.store
    }

    /// The task `task_id` with its dependencies, if it exists: as its live mailbox holds it
    /// when it has one on this node (no database read), else from the store.
    pub async fn task(&self, task_id: &str) -> Result<Option<Task>, StoreError> {
        let task = match crate::shells::router::live_task(&self.ctx, task_id).await {
            Some(mut task) => {
                // In the store's order, so a read does not depend on where it was answered from.
                task.dependencies
                    .sort_by(|a, b| a.upstream.cmp(&b.upstream));
                Some(task)
            }
            None => self.ctx.store.task(task_id).await?,
        };
        match task {
            Some(task) => Ok(self.with_holds(vec![task]).await?.pop()),
            None => Ok(None),
        }
    }

    /// Waits until model provider `provider`'s limit allows one more call: `Ok(None)` at once
    /// if it has none here, else how long the call waited.
    pub async fn acquire_model(&self, provider: &str) -> Result<Option<Duration>, CallError> {
        let Some(mailbox) = self.ctx.models.get(provider) else {
            return Ok(None);
        };
        let asked = Instant::now();
        mailbox
            .run(|| Box::pin(async { Ok::<(), ()>(()) }))
            .await?
            .map_err(|()| CallError::Interrupted {
                provider: provider.to_owned(),
            })?;
        Ok(Some(asked.elapsed()))
    }

    /// The model budgets in force for `user`: set at run time, else configured.
    pub async fn budget(&self, user: &str) -> Result<crate::domain::costs::Budget, StoreError> {
        let ledger = self.ctx.store.ledger(user).await?;
        Ok(ledger.budget(self.ctx.budgets.budget(user)))
    }

    /// `tasks`, each that waits on its user's spent model budget saying why.
    pub async fn with_holds(&self, mut tasks: Vec<Task>) -> Result<Vec<Task>, StoreError> {
        let waits = |t: &Task| {
            t.state == TaskState::Pending
                && t.blocked_reason.is_none()
                && crate::domain::costs::requires_model(&t.requirements)
        };
        if !tasks.iter().any(waits) {
            return Ok(tasks);
        }
        let holds = self.ctx.store.cost_holds(self.ctx.clock.now()).await?;
        for task in tasks.iter_mut().filter(|t| waits(t)) {
            task.blocked_reason = holds.get(&task.user).cloned();
        }
        Ok(tasks)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.ctx.node_id
    }

    /// The bus, for its health and partitions.
    pub fn bus(&self) -> &dyn Bus {
        self.ctx.bus.as_ref()
    }

    /// Publishes `envelope`; returns once the bus holds it durably. One too large for a node
    /// to read back is refused, so nothing it says ends in the dead-letter topic unheard.
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), ApiError> {
        let message = crate::outbound::message(envelope);
        if message.payload.len() > schemas::MAX_ENVELOPE_BYTES {
            return Err(ApiError::TooLarge {
                size: message.payload.len(),
                max: schemas::MAX_ENVELOPE_BYTES,
            });
        }
        crate::outbound::publish_message(self.ctx.bus.as_ref(), message)
            .await
            .map(|_| ())
            .map_err(|e| ApiError::Bus(e.error.to_string()))
    }

    /// The node's clock, ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.ctx.clock.now()
    }

    /// A fresh message id.
    pub fn new_message_id(&self) -> String {
        new_message_id()
    }

    /// The members heard from recently (within the cluster actor's time to live).
    pub async fn live_members(&self) -> Result<Vec<crate::store::Member>, StoreError> {
        let since = now_ms().saturating_sub(crate::shells::cluster::MEMBER_TTL.as_millis() as u64);
        self.ctx.store.members(since).await
    }

    /// Creates a key for `user` with `role` (and `agent_id`, for an agent's): the key, shown
    /// once, and its id.
    pub async fn create_key(
        &self,
        user: &str,
        role: crate::credentials::Role,
        agent_id: Option<&str>,
    ) -> Result<(String, String), StoreError> {
        let key = crate::credentials::new_token()?;
        let key_id = self.ctx.store.add_key(&key, user, role, agent_id).await?;
        Ok((key, key_id))
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

    /// Publishes `envelope` and waits until it is applied or refused, at most `wait`; `None`
    /// if neither happened by then (it stays on the bus and is applied later).
    pub async fn submit(
        &self,
        envelope: &Envelope,
        wait: Duration,
    ) -> Result<Option<Outcome>, ApiError> {
        let mut outcomes = self
            .submit_all(std::slice::from_ref(envelope), wait)
            .await?;
        Ok(outcomes.pop().flatten())
    }

    /// Publishes `envelopes` together and waits for each one's outcome, as `submit` does.
    pub async fn submit_all(
        &self,
        envelopes: &[Envelope],
        wait: Duration,
    ) -> Result<Vec<Option<Outcome>>, ApiError> {
        // Told at once by a mailbox on this node; another node's is found in the store.
        let mut told: Vec<_> = envelopes
            .iter()
            .map(|e| self.ctx.outcomes.expect(&e.id))
            .collect();
        let waited = async {
            let published =
                futures::future::join_all(envelopes.iter().map(|e| self.publish(e))).await;
            published.into_iter().collect::<Result<Vec<()>, _>>()?;
            let deadline = Instant::now() + wait;
            let mut outcomes = Vec::with_capacity(envelopes.len());
            for (envelope, told) in envelopes.iter().zip(&mut told) {
                outcomes.push(self.outcome(&envelope.id, told, deadline).await?);
            }
            Ok(outcomes)
        }
        .await;
        for envelope in envelopes {
            self.ctx.outcomes.forget(&envelope.id);
        }
        waited
    }

    /// Publishes `envelope`; the future returned waits for its outcome as `submit` does, so a
    /// caller can publish several messages in order and learn how they fared later.
    pub async fn publish_then_wait(
        &self,
        envelope: &Envelope,
        wait: Duration,
    ) -> Result<impl Future<Output = Result<Option<Outcome>, ApiError>> + Send + use<>, ApiError>
    {
        let mut told = self.ctx.outcomes.expect(&envelope.id);
        if let Err(error) = self.publish(envelope).await {
            self.ctx.outcomes.forget(&envelope.id);
            return Err(error);
        }
        let (api, id, deadline) = (self.clone(), envelope.id.clone(), Instant::now() + wait);
        Ok(async move {
            let outcome = api.outcome(&id, &mut told, deadline).await;
            api.ctx.outcomes.forget(&id);
            outcome
        })
    }

    async fn outcome(
        &self,
        id: &str,
        told: &mut tokio::sync::oneshot::Receiver<Outcome>,
        deadline: Instant,
    ) -> Result<Option<Outcome>, ApiError> {
        loop {
            let poll = tokio::time::sleep(
                STORE_POLL.min(deadline.saturating_duration_since(Instant::now())),
            );
            tokio::select! {
                outcome = &mut *told => if let Ok(outcome) = outcome { return Ok(Some(outcome)) },
                () = poll => {}
            }
            if let Some(outcome) = self.ctx.store.outcome(id).await? {
                return Ok(Some(outcome));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Changes to `agent_id`'s tasks from now on (from mailboxes on this node).
    pub fn agent_changes(&self, agent_id: &str) -> crate::agent_signals::AgentChanges {
        self.ctx.agent_signals.listen(agent_id)
    }

    /// How often a worker must send a heartbeat to stay online (a third of the timeout).
    pub fn heartbeat_interval(&self) -> Duration {
        self.ctx.agent_timeout / 3
    }
}
