//! The orchestration domain: what a task carries beyond its state (contracts, plan mode,
//! attempts, resolved inputs, why it is blocked), where each dependency stands, the
//! orchestrator's assignment decisions, messages the domain refused (so a caller learns why),
//! worker output, and the owner of each activity row.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Contracts,
    RequirePlanApproval,
    PreferredAgent,
    Attempts,
    MaxAttempts,
    Inputs,
    BlockedReason,
    Note,
    Generation,
}

#[derive(DeriveIden)]
enum TaskDependencies {
    Table,
    State,
    Reason,
}

#[derive(DeriveIden)]
enum Assignments {
    Table,
    TaskId,
    Generation,
    AgentId,
    DecidedAt,
}

#[derive(DeriveIden)]
enum Refusals {
    Table,
    MessageId,
    Reason,
    At,
}

#[derive(DeriveIden)]
enum TaskOutput {
    Table,
    Id,
    TaskId,
    AgentId,
    Line,
    At,
}

#[derive(DeriveIden)]
enum Activity {
    Table,
    User,
}

/// Columns added to existing tables: (table, column definition).
fn added_columns() -> Vec<(DynIden, ColumnDef)> {
    vec![
        (
            Tasks::Table.into_iden(),
            text(Tasks::Contracts).default("[]").to_owned(),
        ),
        (
            Tasks::Table.into_iden(),
            boolean(Tasks::RequirePlanApproval)
                .default(false)
                .to_owned(),
        ),
        (
            Tasks::Table.into_iden(),
            text_null(Tasks::PreferredAgent).to_owned(),
        ),
        (
            Tasks::Table.into_iden(),
            integer(Tasks::Attempts).default(0).to_owned(),
        ),
        (
            Tasks::Table.into_iden(),
            integer(Tasks::MaxAttempts).default(3).to_owned(),
        ),
        (
            Tasks::Table.into_iden(),
            text(Tasks::Inputs).default("{}").to_owned(),
        ),
        (
            Tasks::Table.into_iden(),
            text_null(Tasks::BlockedReason).to_owned(),
        ),
        (Tasks::Table.into_iden(), text_null(Tasks::Note).to_owned()),
        (
            Tasks::Table.into_iden(),
            integer(Tasks::Generation).default(0).to_owned(),
        ),
        (
            TaskDependencies::Table.into_iden(),
            text(TaskDependencies::State).default("waiting").to_owned(),
        ),
        (
            TaskDependencies::Table.into_iden(),
            text_null(TaskDependencies::Reason).to_owned(),
        ),
        (
            Activity::Table.into_iden(),
            text(Activity::User).default("").to_owned(),
        ),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds only one at a time.
        for (table, mut column) in added_columns() {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(Assignments::Table)
                    .if_not_exists()
                    .col(text(Assignments::TaskId))
                    .col(integer(Assignments::Generation))
                    .col(text(Assignments::AgentId))
                    .col(big_integer(Assignments::DecidedAt))
                    .primary_key(
                        Index::create()
                            .col(Assignments::TaskId)
                            .col(Assignments::Generation),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Refusals::Table)
                    .if_not_exists()
                    .col(text(Refusals::MessageId).primary_key())
                    .col(text(Refusals::Reason))
                    .col(big_integer(Refusals::At))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TaskOutput::Table)
                    .if_not_exists()
                    .col(big_pk_auto(TaskOutput::Id))
                    .col(text(TaskOutput::TaskId))
                    .col(text(TaskOutput::AgentId))
                    .col(text(TaskOutput::Line))
                    .col(big_integer(TaskOutput::At))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("task_output_by_task")
                    .table(TaskOutput::Table)
                    .col(TaskOutput::TaskId)
                    .col(TaskOutput::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("dependencies_by_upstream")
                    .table(TaskDependencies::Table)
                    .col(Alias::new("depends_on"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("activity_by_user")
                    .table(Activity::Table)
                    .col(Activity::User)
                    .col(Alias::new("id"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            TaskOutput::Table.into_iden(),
            Refusals::Table.into_iden(),
            Assignments::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        for index in ["activity_by_user", "dependencies_by_upstream"] {
            manager
                .drop_index(Index::drop().name(index).to_owned())
                .await?;
        }
        for (table, column) in added_columns() {
            let name = Alias::new(column.get_column_name());
            manager
                .alter_table(Table::alter().table(table).drop_column(name).to_owned())
                .await?;
        }
        Ok(())
    }
}
