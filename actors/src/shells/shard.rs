//! The mailboxes of one partition's live tasks (or agents), hosted by one actor: each entity's
//! messages are applied one at a time and in order, different entities' side by side, so their
//! writes share the state writer's batches.
//!
//! Why not a ractor actor per entity: one costs about 10 KB before it holds any state (its
//! channels, its task, its registry and process-group entries) and its start is a round trip
//! through its supervisor; an entity here costs its state and a map entry.
//!
//! Supervision: transient children of the `tasks` / `agents` supervisors, named `p<partition>`.
//! An entity whose write failed forgets its state and reloads it with its next message (the
//! restart of that mailbox, counted in the tree); its delivery was nacked and comes back. A
//! shard that fails counts an attempt against the message it had in hand only: the messages
//! waiting in it are delivered again without counting one (`Waiting`), so a burst behind a
//! crash-looping shard is not dead-lettered for another message's fault.
//! Ordering: the bus hands out a key's next message only once this one is settled, and a
//! message for an entity that is busy waits in that entity's queue.
//! Shutdown: idle entities are passivated after `passivate_after`; when this node loses the
//! partition the ingress drains the shard, which finishes what it holds and stops.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use broker_adapters::Delivery;
use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use schemas::Envelope;
use supervisor::ActorStatus;
use tracing::Instrument;

use crate::NodeContext;
use crate::shells::entity::{Kind, apply_message};

/// Messages of a shard.
pub enum ShardMsg<S> {
    /// Apply this envelope to its entity and settle its delivery.
    Handle(Box<Envelope>, Waiting),
    /// An entity's message was applied: its state as known afterwards (`Ok(None)`: unknown;
    /// `Err`: untrusted, its mailbox restarts).
    Applied(String, Result<Option<Option<Box<S>>>, ()>),
    /// Passivate idle entities (sent to itself).
    Tick,
    /// Finish every message held, then answer and stop.
    Drain(RpcReplyPort<()>),
    /// The state of a live entity, if this shard holds it now (not while a message of it is
    /// being applied).
    Peek(String, RpcReplyPort<Option<S>>),
}

/// A delivery waiting in a shard, in its actor's queue or behind its entity's busy mailbox:
/// dropped there (the shard failed or stopped first), it is delivered again without counting
/// an attempt.
pub struct Waiting(Option<Delivery>);

impl Waiting {
    /// `delivery`, on its way into a shard.
    pub fn new(delivery: Delivery) -> Waiting {
        Waiting(Some(delivery))
    }

    /// The delivery, taken up: from here on a failure counts against it.
    fn take(mut self) -> Option<Delivery> {
        self.0.take()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(delivery) = self.0.take() {
            delivery.retry("its mailbox's shard stopped before taking it up");
        }
    }
}

/// The shard actor of entities of kind `K`.
pub struct ShardActor<K>(PhantomData<fn() -> K>);

impl<K> Default for ShardActor<K> {
    fn default() -> Self {
        ShardActor(PhantomData)
    }
}

impl<K> Clone for ShardActor<K> {
    fn clone(&self) -> Self {
        ShardActor(PhantomData)
    }
}

/// The name of the shard of `partition` under its supervisor.
pub(crate) fn shard_name(partition: u32) -> String {
    format!("p{partition}")
}

/// A tree name that keeps paths unambiguous whatever the id contains.
fn child_name(id: &str) -> String {
    id.replace('%', "%25").replace('/', "%2F")
}

/// One entity's mailbox.
struct Mailbox<S> {
    /// Its state once loaded (`Some(None)`: it does not exist); out while a message is applied.
    entity: Option<Option<Box<S>>>,
    /// A message of it is being applied.
    busy: bool,
    /// Messages that arrived while busy, in order.
    waiting: VecDeque<(Box<Envelope>, Waiting)>,
    last_active: Instant,
}

#[doc(hidden)]
pub struct ShardState<S> {
    ctx: NodeContext,
    /// The shard's tree path; its entities are shown below it.
    path: String,
    mailboxes: HashMap<String, Mailbox<S>>,
    /// Callers waiting for the shard to finish what it holds.
    draining: Vec<RpcReplyPort<()>>,
    /// Messages waiting behind a busy entity, in all its mailboxes.
    queued: usize,
}

impl<S: Send + Sync + 'static> ShardState<S> {
    /// The mailbox depth in the node's metrics: messages waiting in this shard.
    fn report_queued(&self) {
        metrics::gauge!("switchyard_mailbox_queued", "shard" => self.path.clone())
            .set(self.queued as f64);
    }

    fn entity_path(&self, id: &str) -> String {
        format!("{}/{}", self.path, child_name(id))
    }

    /// The entity id of a routing key (`task/<id>` → `<id>`).
    fn entity_id(key: &str) -> &str {
        key.split_once('/').map_or(key, |(_, id)| id)
    }

    fn handle<K: Kind<State = S>>(
        &mut self,
        myself: &ActorRef<ShardMsg<S>>,
        envelope: Box<Envelope>,
        delivery: Delivery,
    ) {
        let id = Self::entity_id(&envelope.key).to_owned();
        if !self.mailboxes.contains_key(&id) {
            self.ctx
                .tree
                .set_status(&self.entity_path(&id), ActorStatus::Running);
        }
        let mailbox = self.mailboxes.entry(id.clone()).or_insert(Mailbox {
            entity: None,
            busy: false,
            waiting: VecDeque::new(),
            last_active: Instant::now(),
        });
        mailbox.last_active = Instant::now();
        if mailbox.busy {
            mailbox
                .waiting
                .push_back((envelope, Waiting::new(delivery)));
            self.queued += 1;
            self.report_queued();
            return;
        }
        Self::start::<K>(&self.ctx, myself, id, mailbox, envelope, delivery);
    }

    /// Applies one message of `mailbox`'s entity in a task of its own, which reports back.
    fn start<K: Kind<State = S>>(
        ctx: &NodeContext,
        myself: &ActorRef<ShardMsg<S>>,
        id: String,
        mailbox: &mut Mailbox<S>,
        envelope: Box<Envelope>,
        delivery: Delivery,
    ) {
        mailbox.busy = true;
        let entity = mailbox.entity.take();
        let (ctx, myself) = (ctx.clone(), myself.clone());
        // The span of this message's handling: a child of the span that published it.
        let span = tracing::info_span!("apply", key = %envelope.key, id = %envelope.id, kind = envelope.type_name());
        crate::trace::continue_trace(&span, envelope.trace.as_deref());
        // Boxed before it is spawned: the future is large, and tokio moves what it is given.
        tokio::spawn(Box::pin(async move {
            let applying =
                apply_message::<K>(&ctx, &id, entity, envelope, delivery).instrument(span);
            // A panic fails this one message (its delivery, dropped, is nacked), as it failed
            // an actor of its own, and must not leave the entity busy for good.
            let after = match AssertUnwindSafe(applying).catch_unwind().await {
                Ok(Ok(after)) => Ok(after),
                Ok(Err(error)) => {
                    tracing::warn!(entity = %id, %error, "mailbox restarts");
                    Err(())
                }
                Err(_) => {
                    tracing::error!(entity = %id, "mailbox panicked; restarts");
                    Err(())
                }
            };
            // A shard that stopped meanwhile starts its entities afresh.
            let _ = myself.send_message(ShardMsg::Applied(id, after));
        }));
    }

    fn applied<K: Kind<State = S>>(
        &mut self,
        myself: &ActorRef<ShardMsg<S>>,
        id: String,
        after: Result<Option<Option<Box<S>>>, ()>,
    ) {
        let restarted = after.is_err();
        if restarted {
            self.ctx.tree.count_restart(&self.entity_path(&id));
        }
        if let Some(mailbox) = self.mailboxes.get_mut(&id) {
            mailbox.busy = false;
            mailbox.entity = after.ok().flatten();
            mailbox.last_active = Instant::now();
            if let Some((envelope, waiting)) = mailbox.waiting.pop_front()
                && let Some(delivery) = waiting.take()
            {
                Self::start::<K>(&self.ctx, myself, id, mailbox, envelope, delivery);
                self.queued -= 1;
                self.report_queued();
            }
        }
        self.answer_drain(myself);
    }

    /// Stops the entities idle for `passivate_after`.
    fn passivate(&mut self) {
        let limit = self.ctx.passivate_after;
        let idle: Vec<String> = self
            .mailboxes
            .iter()
            .filter(|(_, m)| !m.busy && m.waiting.is_empty() && m.last_active.elapsed() >= limit)
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            tracing::debug!(entity = %id, "passivating");
            self.mailboxes.remove(&id);
            self.ctx.tree.remove(&self.entity_path(&id));
        }
        give_back_slots(&mut self.mailboxes);
    }

    /// Answers the drain callers and stops, once nothing is being applied.
    fn answer_drain(&mut self, myself: &ActorRef<ShardMsg<S>>) {
        if self.draining.is_empty() || self.mailboxes.values().any(|m| m.busy) {
            return;
        }
        for caller in self.draining.drain(..) {
            let _ = caller.send(());
        }
        myself.stop(None);
    }
}

impl<K: Kind> Actor for ShardActor<K> {
    type Msg = ShardMsg<K::State>;
    type State = ShardState<K::State>;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        let tick = (ctx.passivate_after / 2).max(Duration::from_millis(10));
        myself.send_interval(tick, || ShardMsg::Tick);
        let path = myself
            .get_name()
            .ok_or_else(|| ActorProcessingErr::from("a shard needs its tree path as its name"))?;
        Ok(ShardState {
            ctx,
            path,
            mailboxes: HashMap::new(),
            draining: Vec::new(),
            queued: 0,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.ctx.tree.remove_descendants(&state.path);
        state.queued = 0;
        state.report_queued();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMsg::Handle(envelope, waiting) => {
                let Some(delivery) = waiting.take() else {
                    return Ok(());
                };
                crate::chaos::strike(&myself);
                state.handle::<K>(&myself, envelope, delivery)
            }
            ShardMsg::Applied(id, after) => state.applied::<K>(&myself, id, after),
            ShardMsg::Tick => state.passivate(),
            ShardMsg::Peek(id, caller) => {
                let live = state.mailboxes.get(&id).and_then(|m| m.entity.clone());
                let _ = caller.send(live.flatten().map(|entity| *entity));
            }
            ShardMsg::Drain(caller) => {
                state.draining.push(caller);
                state.answer_drain(&myself);
            }
        }
        Ok(())
    }
}

/// Shrinks `map` once most of its slots are empty: a table stays as large as the busiest
/// moment left it, and a burst of live entities would otherwise keep its memory for good.
fn give_back_slots<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 4 * map.len().max(256) {
        map.shrink_to(2 * map.len().max(256));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use broker_adapters::{Outcome, Record, Settle};

    use super::*;

    struct Told(Arc<Mutex<Option<Outcome>>>);

    impl Settle for Told {
        fn settle(self: Box<Self>, outcome: Outcome) {
            *self.0.lock().unwrap() = Some(outcome);
        }
    }

    /// A delivery waiting in a shard, and how it was settled.
    fn waiting() -> (Waiting, Arc<Mutex<Option<Outcome>>>) {
        let told = Arc::new(Mutex::new(None));
        let record = Record {
            topic: "t".into(),
            partition: 0,
            offset: Some(0),
            key: "task/a".into(),
            payload: Vec::new(),
            headers: Vec::new(),
            timestamp: 0,
        };
        let delivery = Delivery::new(record, 1, Box::new(Told(told.clone())));
        (Waiting::new(delivery), told)
    }

    #[test]
    fn a_table_emptied_after_a_burst_gives_its_slots_back() {
        let mut map: HashMap<u32, u32> = (0..100_000).map(|i| (i, i)).collect();
        let burst = map.capacity();
        give_back_slots(&mut map);
        assert_eq!(map.capacity(), burst, "full: nothing to give back");
        map.retain(|k, _| *k < 1000);
        give_back_slots(&mut map);
        assert!(map.capacity() < burst / 10, "{} of {burst}", map.capacity());
        assert_eq!(map.len(), 1000);
        let mut small: HashMap<u32, u32> = (0..500).map(|i| (i, i)).collect();
        small.retain(|k, _| *k < 10);
        give_back_slots(&mut small);
        assert!(small.capacity() >= 500, "a small table is left as it is");
    }

    #[test]
    fn a_message_dropped_waiting_in_a_shard_costs_no_attempt_and_one_taken_up_does() {
        let (queued, told) = waiting();
        drop(queued);
        let outcome = told.lock().unwrap().take();
        assert!(matches!(outcome, Some(Outcome::Retry(_))), "{outcome:?}");

        let (queued, told) = waiting();
        drop(queued.take());
        let outcome = told.lock().unwrap().take();
        assert!(matches!(outcome, Some(Outcome::Nack(_))), "{outcome:?}");
    }
}
