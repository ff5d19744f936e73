//! Conversations on inbound channels: one row per conversation (what its mailbox knows) and one
//! per message received in it, with the task it became, if any, so a reply can find its way
//! back.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Conversations {
    Table,
    Key,
    Channel,
    Conversation,
    Messages,
    Tasks,
    FirstAt,
    LastAt,
}

#[derive(DeriveIden)]
enum ConversationMessages {
    Table,
    MessageId,
    Key,
    Sender,
    Text,
    ProviderId,
    Received,
    Attachments,
    TaskId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Conversations::Table)
                    .if_not_exists()
                    .col(text(Conversations::Key).primary_key())
                    .col(text(Conversations::Channel))
                    .col(text(Conversations::Conversation))
                    .col(big_integer(Conversations::Messages))
                    .col(big_integer(Conversations::Tasks))
                    .col(big_integer(Conversations::FirstAt))
                    .col(big_integer(Conversations::LastAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ConversationMessages::Table)
                    .if_not_exists()
                    .col(text(ConversationMessages::MessageId).primary_key())
                    .col(text(ConversationMessages::Key))
                    .col(text(ConversationMessages::Sender))
                    .col(text(ConversationMessages::Text))
                    .col(text(ConversationMessages::ProviderId))
                    .col(big_integer(ConversationMessages::Received))
                    .col(text(ConversationMessages::Attachments))
                    .col(text_null(ConversationMessages::TaskId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("conversation_messages_by_key")
                    .table(ConversationMessages::Table)
                    .col(ConversationMessages::Key)
                    .col(ConversationMessages::Received)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("conversation_messages_by_task")
                    .table(ConversationMessages::Table)
                    .col(ConversationMessages::TaskId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ConversationMessages::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Conversations::Table).to_owned())
            .await
    }
}
