//! Notification delivery: each notification's attempts, when it is next due, who holds it,
//! and how it went (sent where, with the provider's reference, or the last error).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Notifications {
    Table,
    TaskId,
    Attempts,
    DueAt,
    LeaseUntil,
    LastError,
    SentAt,
    Destination,
    ProviderRef,
    Status,
    CreatedAt,
}

const DUE_INDEX: &str = "notifications_due";

/// The columns added, each as SQLite wants it: one per statement.
fn columns() -> Vec<ColumnDef> {
    vec![
        text_null(Notifications::TaskId),
        integer(Notifications::Attempts).default(0).to_owned(),
        big_integer(Notifications::DueAt).default(0).to_owned(),
        big_integer(Notifications::LeaseUntil).default(0).to_owned(),
        text_null(Notifications::LastError),
        big_integer_null(Notifications::SentAt),
        text_null(Notifications::Destination),
        text_null(Notifications::ProviderRef),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for mut column in columns() {
            manager
                .alter_table(
                    Table::alter()
                        .table(Notifications::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        // What was recorded before is due from when it was recorded.
        let due = Query::update()
            .table(Notifications::Table)
            .value(Notifications::DueAt, Expr::col(Notifications::CreatedAt))
            .to_owned();
        manager.exec_stmt(due).await?;
        manager
            .create_index(
                Index::create()
                    .name(DUE_INDEX)
                    .table(Notifications::Table)
                    .col(Notifications::Status)
                    .col(Notifications::DueAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(DUE_INDEX)
                    .table(Notifications::Table)
                    .to_owned(),
            )
            .await?;
        for column in columns() {
            manager
                .alter_table(
                    Table::alter()
                        .table(Notifications::Table)
                        .drop_column(Alias::new(column.get_column_name()))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
