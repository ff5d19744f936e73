//! Model costs: every invocation recorded, and each user's ledger (the current periods'
//! totals, budgets set at run time, and the hold on their model tasks while one is spent).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Invocations {
    Table,
    User,
    InvocationId,
    Provider,
    Model,
    TokensIn,
    TokensOut,
    CostMicros,
    LatencyMs,
    TaskId,
    At,
}

#[derive(DeriveIden)]
enum CostLedgers {
    Table,
    User,
    Day,
    Month,
    DailyMicros,
    MonthlyMicros,
    DailyBudget,
    MonthlyBudget,
    HoldReason,
    HoldUntil,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Invocations::Table)
                    .if_not_exists()
                    .col(text(Invocations::User))
                    .col(text(Invocations::InvocationId))
                    .col(text(Invocations::Provider))
                    .col(text(Invocations::Model))
                    .col(big_integer(Invocations::TokensIn))
                    .col(big_integer(Invocations::TokensOut))
                    .col(big_integer(Invocations::CostMicros))
                    .col(big_integer(Invocations::LatencyMs))
                    .col(text_null(Invocations::TaskId))
                    .col(big_integer(Invocations::At))
                    .primary_key(
                        Index::create()
                            .col(Invocations::User)
                            .col(Invocations::InvocationId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("invocations_by_time")
                    .table(Invocations::Table)
                    .col(Invocations::User)
                    .col(Invocations::At)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CostLedgers::Table)
                    .if_not_exists()
                    .col(text(CostLedgers::User).primary_key())
                    .col(big_integer(CostLedgers::Day))
                    .col(big_integer(CostLedgers::Month))
                    .col(big_integer(CostLedgers::DailyMicros))
                    .col(big_integer(CostLedgers::MonthlyMicros))
                    .col(big_integer_null(CostLedgers::DailyBudget))
                    .col(big_integer_null(CostLedgers::MonthlyBudget))
                    .col(text_null(CostLedgers::HoldReason))
                    .col(big_integer_null(CostLedgers::HoldUntil))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(CostLedgers::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Invocations::Table).to_owned())
            .await
    }
}
