//! The notifier's front: records each requested notification in the outbox, once per dedupe
//! key (a cache of recent keys in front of the store's unique key).
//!
//! Supervision: a permanent child of `notifier`; a storage error fails it and it is restarted
//! (the cache starts empty; the store still refuses a repeated key).
//! Ordering: one message at a time; each delivery is settled here.
//! Shutdown: nothing held; an unsettled delivery is nacked on drop.

use std::time::Duration;

use crate::NodeContext;
use crate::edge::{self, Routed};
use crate::store::AppliedMessage;
use broker_adapters::Delivery;
use moka::future::Cache;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use schemas::Envelope;

/// Dedupe keys remembered, and for how long.
const RECENT_KEYS: u64 = 100_000;
const RECENT_FOR: Duration = Duration::from_secs(3600);

/// A `notification.requested` to record, and its delivery to settle.
pub struct Notify(pub Box<Envelope>, pub Delivery);

/// The notifier's front actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotifierActor;

/// What it holds: the node, and the dedupe keys recorded lately.
pub struct NotifierState {
    ctx: NodeContext,
    recent: Cache<String, ()>,
}

impl Actor for NotifierActor {
    type Msg = Notify;
    type State = NotifierState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        _myself: ActorRef<Notify>,
        ctx: NodeContext,
    ) -> Result<NotifierState, ActorProcessingErr> {
        let recent = Cache::builder()
            .max_capacity(RECENT_KEYS)
            .time_to_live(RECENT_FOR)
            .build();
        Ok(NotifierState { ctx, recent })
    }

    async fn handle(
        &self,
        myself: ActorRef<Notify>,
        Notify(envelope, delivery): Notify,
        state: &mut NotifierState,
    ) -> Result<(), ActorProcessingErr> {
        crate::chaos::strike(&myself);
        let Routed::Notify(draft) = edge::command(&envelope) else {
            delivery.dead_letter(format!("`{}` is not a notification", envelope.type_name()));
            return Ok(());
        };
        if state.recent.contains_key(&draft.dedupe_key) {
            metrics::counter!("switchyard_notifications_deduplicated_total").increment(1);
            delivery.ack();
            return Ok(());
        }
        let message = AppliedMessage {
            id: &envelope.id,
            key: &envelope.key,
            kind: envelope.type_name(),
            time: envelope.time,
            user: &envelope.user,
        };
        match state.ctx.store.save_notification(&message, &draft).await {
            Ok(_) => {
                state.recent.insert(draft.dedupe_key, ()).await;
                delivery.ack();
            }
            Err(error) => {
                delivery.nack(error.to_string());
                return Err(error.into());
            }
        }
        Ok(())
    }
}
