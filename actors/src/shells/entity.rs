//! One actor per live task or agent: a single-threaded mailbox that applies that entity's
//! messages in order and persists each with its message id.
//!
//! Supervision: children of the `tasks` / `agents` dynamic supervisors, transient. A storage
//! error fails the actor, which its supervisor restarts to reload state from the store.
//! Ordering: the bus hands out a key's next message only once this one is settled, so at most
//! one message is in this mailbox, and it is settled (ack, nack, dead-letter) here.
//! Shutdown: idle actors stop themselves after `passivate_after`, and the ingress drains and
//! stops those of a partition this node loses; an unsettled delivery in a dying mailbox is
//! nacked on drop and comes back.
//! Ownership: a message found already applied (redelivered after a crash or a rebalance) may
//! have been applied by another owner, so the state is reloaded from the store.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use broker_adapters::Delivery;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use schemas::Envelope;

use crate::NodeContext;
use crate::domain::{Effect, Refusal, agent, task};
use crate::edge::{self, Routed};
use crate::ownership::mailbox_group;
use crate::shells::relay;
use crate::store::{Applied, AppliedMessage, Outcome, Store, StoreError};

/// Messages of an entity mailbox.
pub enum MailboxMsg {
    /// Apply this envelope and settle its delivery.
    Handle(Box<Envelope>, Delivery),
    /// Check for idleness (sent to itself).
    Tick,
}

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
    type State: Send + Sync + 'static;

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
        store: &Store,
        state: Option<&Self::State>,
        envelope: &Envelope,
    ) -> impl Future<Output = Result<(Self::State, Vec<Effect>, Applied), ApplyError>> + Send;

    /// Carries out, once persisted, what applying a message to `state` asked for.
    fn carry_out(ctx: &NodeContext, state: &Self::State, effects: Vec<Effect>);
}

/// How the activity log records `envelope`.
fn applied_message(envelope: &Envelope) -> AppliedMessage<'_> {
    AppliedMessage {
        id: &envelope.id,
        key: &envelope.key,
        kind: envelope.type_name(),
        time: envelope.time,
        user: &envelope.user,
    }
}

fn misrouted(envelope: &Envelope) -> ApplyError {
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
        store: &Store,
        state: Option<&task::Task>,
        envelope: &Envelope,
    ) -> Result<(task::Task, Vec<Effect>, Applied), ApplyError> {
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
            if !new.dependencies.is_empty() && store.has_dependents(task_id).await? =>
        {
            new.dependencies
                .iter()
                .map(|d| d.upstream.clone())
                .collect()
        }
        _ => return Ok(None),
    };
    store.cycle_through(task_id, &upstreams).await
}

/// Agents: registration, heartbeats and going offline, of `domain::agent`.
pub struct AgentMailbox;

impl Kind for AgentMailbox {
    type State = agent::Agent;

    async fn load(store: &Store, id: &str) -> Result<Option<agent::Agent>, StoreError> {
        store.agent(id).await
    }

    async fn apply(
        store: &Store,
        state: Option<&agent::Agent>,
        envelope: &Envelope,
    ) -> Result<(agent::Agent, Vec<Effect>, Applied), ApplyError> {
        let Routed::Agent(_, command) = edge::command(envelope) else {
            return Err(misrouted(envelope));
        };
        let (agent, effects) = agent::step(state, &envelope.user, &command, envelope.time)
            .map_err(ApplyError::Refused)?;
        let applied = store.save_agent(&applied_message(envelope), &agent).await?;
        Ok((agent, effects, applied))
    }

    fn carry_out(ctx: &NodeContext, _agent: &agent::Agent, effects: Vec<Effect>) {
        relay::carry_out(ctx, None, effects);
    }
}

/// The mailbox actor of one entity of kind `K`.
pub struct EntityActor<K>(PhantomData<fn() -> K>);

impl<K> Default for EntityActor<K> {
    fn default() -> Self {
        EntityActor(PhantomData)
    }
}

impl<K> Clone for EntityActor<K> {
    fn clone(&self) -> Self {
        EntityActor(PhantomData)
    }
}

/// What an entity actor is started with.
#[derive(Clone)]
pub struct EntityArgs {
    pub ctx: NodeContext,
    pub id: String,
    /// The partition this entity's messages arrive on.
    pub partition: u32,
}

#[doc(hidden)]
pub struct EntityState<S> {
    ctx: NodeContext,
    id: String,
    /// The entity's state, once loaded (`Some(None)`: it does not exist).
    entity: Option<Option<S>>,
    last_active: Instant,
}

impl<S> EntityState<S> {
    /// Applies `envelope` and settles `delivery`; an error means the cached state can no
    /// longer be trusted (the actor restarts and reloads it).
    async fn handle<K: Kind<State = S>>(
        &mut self,
        envelope: Envelope,
        delivery: Delivery,
    ) -> Result<(), StoreError> {
        self.last_active = Instant::now();
        // A message applied before is found by the write itself (its id is recorded
        // with it), or, if the state it led to refuses it now, by the check below:
        // no read on the way of a new message.
        if self.entity.is_none() {
            // Loaded with the first message rather than at start, which the supervisor
            // waits for; and not at all for a message that creates the entity.
            self.entity = Some(if K::creates(&envelope) {
                None
            } else {
                K::load(&self.ctx.store, &self.id).await?
            });
        }
        let current = self.entity.as_ref().and_then(Option::as_ref);
        match K::apply(&self.ctx.store, current, &envelope).await {
            Ok((entity, effects, Applied::Applied)) => {
                delivery.ack();
                self.ctx.outcomes.settle(&envelope.id, Outcome::Applied);
                K::carry_out(&self.ctx, &entity, effects);
                self.entity = Some(Some(entity));
            }
            Ok((_, _, Applied::Duplicate)) => {
                self.applied_before::<K>(&envelope.id, delivery).await?;
            }
            Err(ApplyError::Refused(_)) if self.ctx.store.is_processed(&envelope.id).await? => {
                self.applied_before::<K>(&envelope.id, delivery).await?;
            }
            Err(ApplyError::Refused(refusal)) => {
                tracing::warn!(id = %envelope.id, kind = envelope.type_name(), %refusal, "refused");
                // Recorded for a caller waiting on the outcome; the dead letter keeps it too.
                if let Err(error) = self
                    .ctx
                    .store
                    .record_refusal(&envelope.id, &refusal.0)
                    .await
                {
                    delivery.nack(error.to_string());
                    return Err(error);
                }
                self.ctx
                    .outcomes
                    .settle(&envelope.id, Outcome::Refused(refusal.0.clone()));
                delivery.dead_letter(refusal.0);
            }
            Err(ApplyError::Store(error)) => {
                delivery.nack(error.to_string());
                // Our cached state may no longer match the store: restart to reload it.
                return Err(error);
            }
        }
        Ok(())
    }
    /// Settles a message found applied before (maybe by another owner): the state is read
    /// again from the store, which has what that application wrote.
    async fn applied_before<K: Kind<State = S>>(
        &mut self,
        message_id: &str,
        delivery: Delivery,
    ) -> Result<(), StoreError> {
        self.entity = Some(K::load(&self.ctx.store, &self.id).await?);
        delivery.ack();
        self.ctx.outcomes.settle(message_id, Outcome::Applied);
        Ok(())
    }
}

impl<K: Kind> Actor for EntityActor<K> {
    type Msg = MailboxMsg;
    type State = EntityState<K::State>;
    type Arguments = EntityArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MailboxMsg>,
        args: EntityArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let tick = (args.ctx.passivate_after / 2).max(Duration::from_millis(10));
        myself.send_interval(tick, || MailboxMsg::Tick);
        let group = mailbox_group(&args.ctx.root, args.partition);
        ractor::pg::join(group, vec![myself.get_cell()]);
        Ok(EntityState {
            ctx: args.ctx,
            id: args.id,
            entity: None,
            last_active: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<MailboxMsg>,
        message: MailboxMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MailboxMsg::Tick => {
                if state.last_active.elapsed() >= state.ctx.passivate_after {
                    tracing::debug!(id = %state.id, "passivating");
                    myself.stop(None);
                }
            }
            MailboxMsg::Handle(envelope, delivery) => {
                // Boxed: the actor's task is as large as the largest future it awaits inline,
                // and the store's are kilobytes; an idle mailbox should not carry them.
                Box::pin(state.handle::<K>(*envelope, delivery)).await?;
            }
        }
        Ok(())
    }
}
