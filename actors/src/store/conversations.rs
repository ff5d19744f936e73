//! Conversations: each one's state, and the messages received in it with the tasks they became.

use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::batch::Changes;
use super::entities::{conversation_messages, conversations};
use super::{Applied, AppliedMessage, Store, StoreError};
use crate::domain::conversation::Conversation;

/// A received message as its conversation's mailbox records it.
pub struct InboundRow<'a> {
    /// The message as it arrived.
    pub message: &'a schemas::MessageReceived,
    /// The task it became, if any.
    pub task_id: Option<&'a str>,
}

/// A recorded inbound message, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// The message id it arrived under.
    pub message_id: String,
    /// Its conversation's routing key.
    pub key: String,
    /// Who wrote it.
    pub sender: String,
    /// What they wrote.
    pub text: String,
    /// The provider's id of it.
    pub provider_id: String,
    /// When it was received (ms).
    pub received: u64,
    /// The task it became, if any.
    pub task_id: Option<String>,
}

impl Store {
    /// The conversation of routing key `key`, if any message was received in it.
    pub async fn conversation(&self, key: &str) -> Result<Option<Conversation>, StoreError> {
        Ok(conversations::Entity::find_by_id(key.to_owned())
            .one(self.connection())
            .await?
            .map(|row| Conversation {
                channel: row.channel,
                conversation: row.conversation,
                messages: row.messages.max(0) as u64,
                tasks: row.tasks.max(0) as u64,
                first_at: row.first_at.max(0) as u64,
                last_at: row.last_at.max(0) as u64,
            }))
    }

    /// The messages received in conversation `key`, oldest first.
    pub async fn conversation_messages(
        &self,
        key: &str,
    ) -> Result<Vec<InboundMessage>, StoreError> {
        use conversation_messages::Column as C;
        Ok(conversation_messages::Entity::find()
            .filter(C::Key.eq(key))
            .order_by_asc(C::Received)
            .order_by_asc(C::MessageId)
            .all(self.connection())
            .await?
            .into_iter()
            .map(inbound_from_row)
            .collect())
    }

    /// The message a task was created from, if it was: the way back to its conversation.
    pub async fn message_of_task(
        &self,
        task_id: &str,
    ) -> Result<Option<InboundMessage>, StoreError> {
        use conversation_messages::Column as C;
        Ok(conversation_messages::Entity::find()
            .filter(C::TaskId.eq(task_id))
            .one(self.connection())
            .await?
            .map(inbound_from_row))
    }

    /// Persists `conversation` and its new message `row` as the effect of `message`.
    pub async fn save_conversation(
        &self,
        message: &AppliedMessage<'_>,
        conversation: &Conversation,
        row: &InboundRow<'_>,
    ) -> Result<Applied, StoreError> {
        let received = row.message;
        let mut changes = Changes::new(message.id, message.activity());
        changes.conversation = Some(conversations::ActiveModel {
            key: Set(message.key.to_owned()),
            channel: Set(conversation.channel.clone()),
            conversation: Set(conversation.conversation.clone()),
            messages: Set(conversation.messages as i64),
            tasks: Set(conversation.tasks as i64),
            first_at: Set(conversation.first_at as i64),
            last_at: Set(conversation.last_at as i64),
        });
        let attachments: Vec<serde_json::Value> = received
            .attachments
            .iter()
            .map(|a| serde_json::json!({"name": a.name, "content_type": a.content_type, "size": a.size}))
            .collect();
        changes.inbound = Some(conversation_messages::ActiveModel {
            message_id: Set(message.id.to_owned()),
            key: Set(message.key.to_owned()),
            sender: Set(received.sender.clone()),
            text: Set(received.text.clone()),
            provider_id: Set(received.provider_id.clone()),
            received: Set(received.received as i64),
            attachments: Set(serde_json::Value::Array(attachments).to_string()),
            task_id: Set(row.task_id.map(str::to_owned)),
        });
        self.writes.write(changes).await
    }
}

fn inbound_from_row(row: conversation_messages::Model) -> InboundMessage {
    InboundMessage {
        message_id: row.message_id,
        key: row.key,
        sender: row.sender,
        text: row.text,
        provider_id: row.provider_id,
        received: row.received.max(0) as u64,
        task_id: row.task_id,
    }
}
