//! The notifier: records requested notifications, each once (by dedupe key).
//!
//! Supervision: a permanent child of the node; a storage error fails it and it is restarted.
//! Ordering: one message at a time; each delivery is settled here.
//! Shutdown: nothing held; an unsettled delivery is nacked on drop.
//! Delivery through channels (webhook, SMTP, SMS) with rate limits comes with its own issue;
//! until then notifications stay `pending` in the outbox table.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use schemas::Message;

use crate::NodeContext;
use crate::domain::task::NotificationDraft;
use crate::entity::MailboxMsg;

/// The notifier actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotifierActor;

impl Actor for NotifierActor {
    type Msg = MailboxMsg;
    type State = NodeContext;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        _myself: ActorRef<MailboxMsg>,
        ctx: NodeContext,
    ) -> Result<NodeContext, ActorProcessingErr> {
        Ok(ctx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<MailboxMsg>,
        message: MailboxMsg,
        ctx: &mut NodeContext,
    ) -> Result<(), ActorProcessingErr> {
        let MailboxMsg::Handle(envelope, delivery) = message else {
            return Ok(());
        };
        let Message::NotificationRequested(request) = &envelope.message else {
            delivery.dead_letter(format!("`{}` is not a notification", envelope.type_name()));
            return Ok(());
        };
        let draft = NotificationDraft {
            user: envelope.user.clone(),
            channel: request.channel.clone(),
            to: request.to.clone(),
            subject: request.subject.clone(),
            text: request.text.clone(),
            dedupe_key: request
                .dedupe_key
                .clone()
                .unwrap_or_else(|| envelope.id.clone()),
        };
        match ctx.store.save_notification(&envelope.id, &draft).await {
            Ok(_) => delivery.ack(),
            Err(error) => {
                delivery.nack(error.to_string());
                return Err(error.into());
            }
        }
        Ok(())
    }
}
