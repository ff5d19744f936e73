//! What a task's or an agent's mailbox does with one message: load the entity if need be,
//! step its pure state machine, persist the result with the message id, settle the delivery
//! and carry out the effects. `shard.rs` hosts the mailboxes.
//!
//! Ownership: a message found already applied (redelivered after a crash or a rebalance) may
//! have been applied by another owner, so the state is reloaded from the store.

use broker_adapters::Delivery;
use schemas::Envelope;

use crate::NodeContext;
use crate::domain::{Effect, Refusal, agent, task};
use crate::edge::{self, Routed};
use crate::shells::relay;
use crate::store::{Applied, AppliedMessage, Outcome, Store, StoreError};

/// Why a message could not be applied.
pub enum ApplyError {
    /// The domain said no: final.
    Refused(Refusal),
    /// The database failed: retry.
    Store(StoreError),
}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> Self {
        ApplyError::Store(e)
    }
}

/// A kind of entity with a mailbox per instance.
pub trait Kind: Send + Sync + 'static {
    /// The entity's current state.
    type State: Clone + Send + Sync + 'static;

    /// Loads an entity's state, `None` if it does not exist yet.
    fn load(
        store: &Store,
        id: &str,
    ) -> impl Future<Output = Result<Option<Self::State>, StoreError>> + Send;

    /// Whether `envelope` creates its entity: a mailbox that has not loaded its state then
    /// need not look for it, because the write fails if the entity exists after all.
    fn creates(_envelope: &Envelope) -> bool {
        false
    }

    /// Applies and persists one message; returns the new state and the effects to carry out.
    fn apply(
        ctx: &NodeContext,
        state: Option<&Self::State>,
        envelope: &Envelope,
    ) -> impl Future<Output = Result<(Self::State, Vec<Effect>, Applied), ApplyError>> + Send;

    /// Carries out, once persisted, what applying a message to `state` asked for.
    fn carry_out(ctx: &NodeContext, state: &Self::State, effects: Vec<Effect>);
}

/// How the activity log records `envelope`.
pub(crate) fn applied_message(envelope: &Envelope) -> AppliedMessage<'_> {
    AppliedMessage {
        id: &envelope.id,
        key: &envelope.key,
        kind: envelope.type_name(),
        time: envelope.time,
        user: &envelope.user,
    }
}

pub(crate) fn misrouted(envelope: &Envelope) -> ApplyError {
    ApplyError::Refused(Refusal(format!(
        "`{}` does not apply to `{}`",
        envelope.type_name(),
        envelope.key
    )))
}

/// Tasks: the state machine of `domain::task`.
pub struct TaskMailbox;

impl Kind for TaskMailbox {
    type State = task::Task;

    async fn load(store: &Store, id: &str) -> Result<Option<task::Task>, StoreError> {
        store.task(id).await
    }

    fn creates(envelope: &Envelope) -> bool {
        matches!(envelope.message, schemas::Message::TaskCreated(_))
    }

    async fn apply(
        ctx: &NodeContext,
        state: Option<&task::Task>,
        envelope: &Envelope,
    ) -> Result<(task::Task, Vec<Effect>, Applied), ApplyError> {
        let store = &ctx.store;
        let Routed::Task(task_id, command) = edge::command(envelope) else {
            return Err(misrouted(envelope));
        };
        if state.is_none() && !matches!(command, task::Command::Create(_)) {
            let refusal = format!("{}: no task `{task_id}`", command.name());
            return Err(ApplyError::Refused(Refusal(refusal)));
        }
        if let Some(cycle) = closes_cycle(store, &task_id, &command).await? {
            let refusal = format!(
                "{}: it would close a cycle: {}",
                command.name(),
                cycle.join(" → ")
            );
            return Err(ApplyError::Refused(Refusal(refusal)));
        }
        let step = task::step(state, &envelope.user, &command, envelope.time)
            .map_err(ApplyError::Refused)?;
        let output = match &command {
            task::Command::Output { lines, .. } => lines.as_slice(),
            _ => &[],
        };
        let applied = store
            .save_task(
                &applied_message(envelope),
                state,
                &step.task,
                &step.notifications,
                output,
            )
            .await?;
        Ok((step.task, step.effects, applied))
    }

    fn carry_out(ctx: &NodeContext, task: &task::Task, effects: Vec<Effect>) {
        relay::carry_out(ctx, Some(task), effects);
    }
}

/// The cycle that the upstream edges `command` adds to task `task_id` would close, if any.
/// A new task closes one only if a stored task already waits on it, which is looked up first.
async fn closes_cycle(
    store: &Store,
    task_id: &str,
    command: &task::Command,
) -> Result<Option<Vec<String>>, StoreError> {
    let upstreams: Vec<String> = match command {
        task::Command::AddDependency(dependency) => vec![dependency.upstream.clone()],
        task::Command::Create(new)
            if !new.dependencies.is_empty() && Box::pin(store.has_dependents(task_id)).await? =>
        {
            new.dependencies
                .iter()
                .map(|d| d.upstream.clone())
                .collect()
        }
        _ => return Ok(None),
    };
    Box::pin(store.cycle_through(task_id, &upstreams)).await
}

/// Agents: registration, heartbeats and going offline, of `domain::agent`.
pub struct AgentMailbox;

impl Kind for AgentMailbox {
    type State = agent::Agent;

    async fn load(store: &Store, id: &str) -> Result<Option<agent::Agent>, StoreError> {
        store.agent(id).await
    }

    async fn apply(
        ctx: &NodeContext,
        state: Option<&agent::Agent>,
        envelope: &Envelope,
    ) -> Result<(agent::Agent, Vec<Effect>, Applied), ApplyError> {
        let Routed::Agent(_, command) = edge::command(envelope) else {
            return Err(misrouted(envelope));
        };
        let (agent, effects) = agent::step(state, &envelope.user, &command, envelope.time)
            .map_err(ApplyError::Refused)?;
        let applied = ctx
            .store
            .save_agent(&applied_message(envelope), &agent)
            .await?;
        Ok((agent, effects, applied))
    }

    fn carry_out(ctx: &NodeContext, _agent: &agent::Agent, effects: Vec<Effect>) {
        relay::carry_out(ctx, None, effects);
    }
}

/// Applies `envelope` to the entity `entity` (`None`: not loaded yet; `Some(None)`: it does not
/// exist) and settles `delivery`. Returns the entity as known afterwards (`None`: unknown, to
/// be loaded with the next message), or an error when its state can no longer be trusted (the
/// mailbox forgets it and reloads it with its next message).
pub(crate) async fn apply_message<K: Kind>(
    ctx: &NodeContext,
    id: &str,
    entity: Option<Option<Box<K::State>>>,
    envelope: Box<Envelope>,
    delivery: Delivery,
) -> Result<Option<Option<Box<K::State>>>, StoreError> {
    // The rare awaits (a load, a duplicate, a refusal) are boxed: this future is moved whole
    // when its message is spawned, and it is as large as its largest await.
    // A message applied before is found by the write itself (its id is recorded with it), or,
    // if the state it led to refuses it now, by the check below: no read on the way of a new
    // message.
    let loaded = entity.is_some() || !K::creates(&envelope);
    let current = match entity {
        Some(entity) => entity,
        // Loaded with the first message, and not at all for a message that creates the entity.
        None if K::creates(&envelope) => None,
        None => Box::pin(K::load(&ctx.store, id)).await?.map(Box::new),
    };
    match K::apply(ctx, current.as_deref(), &envelope).await {
        Ok((entity, effects, Applied::Applied)) => {
            delivery.ack();
            ctx.outcomes.settle(&envelope.id, Outcome::Applied);
            K::carry_out(ctx, &entity, effects);
            Ok(Some(Some(Box::new(entity))))
        }
        Ok((_, _, Applied::Duplicate)) => {
            Box::pin(applied_before::<K>(ctx, id, &envelope.id, delivery)).await
        }
        Err(ApplyError::Refused(_)) if Box::pin(ctx.store.is_processed(&envelope.id)).await? => {
            Box::pin(applied_before::<K>(ctx, id, &envelope.id, delivery)).await
        }
        Err(ApplyError::Refused(refusal)) => {
            tracing::warn!(id = %envelope.id, kind = envelope.type_name(), %refusal, "refused");
            // Recorded for a caller waiting on the outcome; the dead letter keeps it too.
            let recorded = Box::pin(ctx.store.record_refusal(&envelope.id, &refusal.0)).await;
            if let Err(error) = recorded {
                delivery.nack(error.to_string());
                return Err(error);
            }
            ctx.outcomes
                .settle(&envelope.id, Outcome::Refused(refusal.0.clone()));
            delivery.dead_letter(refusal.0);
            // A refused create that skipped the load knows nothing of an entity that exists.
            Ok(loaded.then_some(current))
        }
        Err(ApplyError::Store(error)) => {
            delivery.nack(error.to_string());
            Err(error)
        }
    }
}

/// Settles a message found applied before (maybe by another owner): the state is read again
/// from the store, which has what that application wrote.
async fn applied_before<K: Kind>(
    ctx: &NodeContext,
    id: &str,
    message_id: &str,
    delivery: Delivery,
) -> Result<Option<Option<Box<K::State>>>, StoreError> {
    let entity = K::load(&ctx.store, id).await?.map(Box::new);
    delivery.ack();
    ctx.outcomes.settle(message_id, Outcome::Applied);
    Ok(Some(entity))
}
