//! Automations: each one's schedule, policy and task template, when it is next due, and its
//! last run.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Automations {
    Table,
    AutomationId,
    User,
    Schedule,
    TimeZone,
    Missed,
    Tasks,
    Paused,
    NextRunAt,
    LastRun,
    LastRunAt,
    DefinedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Automations::Table)
                    .if_not_exists()
                    .col(text(Automations::AutomationId).primary_key())
                    .col(text(Automations::User))
                    .col(text(Automations::Schedule))
                    .col(text(Automations::TimeZone))
                    .col(text(Automations::Missed))
                    .col(text(Automations::Tasks))
                    .col(boolean(Automations::Paused))
                    .col(big_integer_null(Automations::NextRunAt))
                    .col(text_null(Automations::LastRun))
                    .col(big_integer_null(Automations::LastRunAt))
                    .col(big_integer(Automations::DefinedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("automations_due")
                    .table(Automations::Table)
                    .col(Automations::NextRunAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Automations::Table).to_owned())
            .await
    }
}
