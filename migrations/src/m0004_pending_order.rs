//! The orchestrator's scan: pending tasks read in the order they are assigned (priority, then
//! age), from an index rather than a sort of every pending task.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    State,
    Priority,
    CreatedAt,
    TaskId,
}

const INDEX: &str = "tasks_pending_order";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Tasks::Table)
                    .col(Tasks::State)
                    .col(Tasks::Priority)
                    .col(Tasks::CreatedAt)
                    .col(Tasks::TaskId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(Tasks::Table).to_owned())
            .await
    }
}
