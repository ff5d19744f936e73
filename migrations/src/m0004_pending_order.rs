//! Reads in the order they are served, from an index rather than a sort of every task: the
//! orchestrator's pending tasks (priority, then age), and `ListTasks` pages (age, then id),
//! whole or by state or by user. The pages by state replace `tasks_by_state` (state, age).

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
    User,
}

const PENDING: &str = "tasks_pending_order";
const REPLACED: &str = "tasks_by_state";

/// The indexes this migration adds, by name, with their columns.
fn indexes() -> [(&'static str, Vec<Tasks>); 4] {
    use Tasks::*;
    [
        (PENDING, vec![State, Priority, CreatedAt, TaskId]),
        ("tasks_by_state_page", vec![State, CreatedAt, TaskId]),
        ("tasks_by_user_page", vec![User, CreatedAt, TaskId]),
        ("tasks_page", vec![CreatedAt, TaskId]),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, columns) in indexes() {
            let mut index = Index::create().name(name).table(Tasks::Table).to_owned();
            for column in columns {
                index.col(column);
            }
            manager.create_index(index).await?;
        }
        manager
            .drop_index(Index::drop().name(REPLACED).table(Tasks::Table).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(REPLACED)
                    .table(Tasks::Table)
                    .col(Tasks::State)
                    .col(Tasks::CreatedAt)
                    .to_owned(),
            )
            .await?;
        for (name, _) in indexes() {
            manager
                .drop_index(Index::drop().name(name).table(Tasks::Table).to_owned())
                .await?;
        }
        Ok(())
    }
}
