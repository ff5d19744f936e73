//! The notifier: records requested notifications, each once (by dedupe key).
//!
//! Supervision: a permanent child of the node; a storage error fails it and it is restarted.
//! Ordering: one message at a time; each delivery is settled here.
//! Shutdown: nothing held; an unsettled delivery is nacked on drop.
//! Delivery through channels (webhook, SMTP, SMS) with rate limits comes with its own issue;
//! until then notifications stay `pending` in the outbox table.

use crate::NodeContext;
use crate::edge::{self, Routed};
use crate::store::AppliedMessage;
use broker_adapters::Delivery;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use schemas::Envelope;

/// A `notification.requested` to record, and its delivery to settle.
pub struct Notify(pub Box<Envelope>, pub Delivery);

/// The notifier actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotifierActor;

impl Actor for NotifierActor {
    type Msg = Notify;
    type State = NodeContext;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        _myself: ActorRef<Notify>,
        ctx: NodeContext,
    ) -> Result<NodeContext, ActorProcessingErr> {
        Ok(ctx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Notify>,
        Notify(envelope, delivery): Notify,
        ctx: &mut NodeContext,
    ) -> Result<(), ActorProcessingErr> {
        let Routed::Notify(draft) = edge::command(&envelope) else {
            delivery.dead_letter(format!("`{}` is not a notification", envelope.type_name()));
            return Ok(());
        };
        let message = AppliedMessage {
            id: &envelope.id,
            key: &envelope.key,
            kind: envelope.type_name(),
            time: envelope.time,
            user: &envelope.user,
        };
        match ctx.store.save_notification(&message, &draft).await {
            Ok(_) => delivery.ack(),
            Err(error) => {
                delivery.nack(error.to_string());
                return Err(error.into());
            }
        }
        Ok(())
    }
}
