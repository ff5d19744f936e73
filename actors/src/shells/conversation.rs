//! A conversation's mailbox: records each message received in it and, where its channel's
//! rules say so, creates the task the message asks for, owned by the channel's user.
//!
//! Durability: the task is published before the message is recorded, under ids derived from
//! the message, so a crash between the two publishes it again and the task's mailbox finds it
//! applied; nothing acknowledged is lost.

use schemas::{Envelope, Message};

use crate::NodeContext;
use crate::domain::conversation::{self, Conversation, TaskRequest};
use crate::domain::{Effect, Refusal};
use crate::edge::{self, Routed};
use crate::shells::entity::{ApplyError, Kind, applied_message, misrouted};
use crate::shells::relay::derived_id;
use crate::store::{Applied, InboundRow, Store, StoreError, now_ms};

/// Conversations: `domain::conversation` per `conversation/<channel>/<id>` key.
pub struct ConversationMailbox;

impl Kind for ConversationMailbox {
    type State = Conversation;

    async fn load(store: &Store, id: &str) -> Result<Option<Conversation>, StoreError> {
        store.conversation(&format!("conversation/{id}")).await
    }

    async fn apply(
        ctx: &NodeContext,
        state: Option<&Conversation>,
        envelope: &Envelope,
    ) -> Result<(Conversation, Vec<Effect>, Applied), ApplyError> {
        let (Routed::Conversation(inbound), Message::MessageReceived(received)) =
            (edge::command(envelope), &envelope.message)
        else {
            return Err(misrouted(envelope));
        };
        let rules = ctx.channels.get(&inbound.channel);
        if let Some(rules) = rules.filter(|r| r.user != envelope.user) {
            return Err(ApplyError::Refused(Refusal(format!(
                "message.received on `{}` belongs to its user `{}`, not `{}`",
                inbound.channel, rules.user, envelope.user
            ))));
        }
        let (next, request) = conversation::step(state, &inbound, rules);
        let task_id = match request {
            Some(request) => Some(create_task(ctx, envelope, request).await?),
            None => None,
        };
        let row = InboundRow {
            message: received,
            task_id: task_id.as_deref(),
        };
        let applied = ctx
            .store
            .save_conversation(&applied_message(envelope), &next, &row)
            .await?;
        Ok((next, Vec::new(), applied))
    }

    fn carry_out(_ctx: &NodeContext, _state: &Conversation, _effects: Vec<Effect>) {}
}

/// Publishes the task `request` of the message `envelope`; returns its id. Both ids derive from
/// the message's, so publishing it again creates nothing new.
async fn create_task(
    ctx: &NodeContext,
    envelope: &Envelope,
    request: TaskRequest,
) -> Result<String, ApplyError> {
    let task_id = derived_id("msg", &[&envelope.id]);
    let message = Message::TaskCreated(schemas::TaskCreated {
        task_id: task_id.clone(),
        title: request.title,
        spec: request.spec,
        ..Default::default()
    });
    let mut task = Envelope::new(
        derived_id("task-from", &[&envelope.id]),
        format!("node/{}/conversations", ctx.node_id),
        now_ms(),
        request.user,
        message,
    );
    // The conversation travels on with the task, and the message that caused it.
    task.corr = Some(envelope.key.clone());
    task.cause = Some(envelope.id.clone());
    task.trace = crate::trace::traceparent(&tracing::Span::current()).or(envelope.trace.clone());
    crate::publish(ctx.bus.as_ref(), &task)
        .await
        .map_err(|e| ApplyError::Store(StoreError(format!("publishing its task: {e}"))))?;
    Ok(task_id)
}
