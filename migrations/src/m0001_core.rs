//! The first schema: tasks and their dependencies, agents, notifications, processed message
//! ids (idempotency) and API keys.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    TaskId,
    User,
    Title,
    Spec,
    Priority,
    Requirements,
    State,
    AgentId,
    Result,
    Error,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum TaskDependencies {
    Table,
    TaskId,
    DependsOn,
    Kind,
    ContractKey,
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    AgentId,
    User,
    Name,
    Capabilities,
    MaxConcurrent,
    Status,
    LastHeartbeat,
    RegisteredAt,
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    Id,
    User,
    Channel,
    Recipient,
    Subject,
    Text,
    DedupeKey,
    Status,
    Cause,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ProcessedMessages {
    Table,
    MessageId,
    ProcessedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    KeyHash,
    User,
    Role,
    AgentId,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tasks::Table)
                    .if_not_exists()
                    .col(text(Tasks::TaskId).primary_key())
                    .col(text(Tasks::User))
                    .col(text(Tasks::Title))
                    .col(text(Tasks::Spec))
                    .col(text(Tasks::Priority))
                    .col(text(Tasks::Requirements))
                    .col(text(Tasks::State))
                    .col(text_null(Tasks::AgentId))
                    .col(text_null(Tasks::Result))
                    .col(text_null(Tasks::Error))
                    .col(big_integer(Tasks::CreatedAt))
                    .col(big_integer(Tasks::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("tasks_by_state")
                    .table(Tasks::Table)
                    .col(Tasks::State)
                    .col(Tasks::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("tasks_by_agent")
                    .table(Tasks::Table)
                    .col(Tasks::AgentId)
                    .col(Tasks::State)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TaskDependencies::Table)
                    .if_not_exists()
                    .col(text(TaskDependencies::TaskId))
                    .col(text(TaskDependencies::DependsOn))
                    .col(text(TaskDependencies::Kind))
                    .col(text_null(TaskDependencies::ContractKey))
                    .primary_key(
                        Index::create()
                            .col(TaskDependencies::TaskId)
                            .col(TaskDependencies::DependsOn),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Agents::Table)
                    .if_not_exists()
                    .col(text(Agents::AgentId).primary_key())
                    .col(text(Agents::User))
                    .col(text(Agents::Name))
                    .col(text(Agents::Capabilities))
                    .col(integer(Agents::MaxConcurrent))
                    .col(text(Agents::Status))
                    .col(big_integer(Agents::LastHeartbeat))
                    .col(big_integer(Agents::RegisteredAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Notifications::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Notifications::Id))
                    .col(text(Notifications::User))
                    .col(text(Notifications::Channel))
                    .col(text(Notifications::Recipient))
                    .col(text(Notifications::Subject))
                    .col(text(Notifications::Text))
                    .col(text_uniq(Notifications::DedupeKey))
                    .col(text(Notifications::Status))
                    .col(text(Notifications::Cause))
                    .col(big_integer(Notifications::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ProcessedMessages::Table)
                    .if_not_exists()
                    .col(text(ProcessedMessages::MessageId).primary_key())
                    .col(big_integer(ProcessedMessages::ProcessedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .if_not_exists()
                    .col(text(ApiKeys::KeyHash).primary_key())
                    .col(text(ApiKeys::User))
                    .col(text(ApiKeys::Role))
                    .col(text_null(ApiKeys::AgentId))
                    .col(big_integer(ApiKeys::CreatedAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ApiKeys::Table.into_iden(),
            ProcessedMessages::Table.into_iden(),
            Notifications::Table.into_iden(),
            Agents::Table.into_iden(),
            TaskDependencies::Table.into_iden(),
            Tasks::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
