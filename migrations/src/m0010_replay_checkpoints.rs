//! Replay checkpoints: in a database being rebuilt by `switchyard replay`, the offset of each
//! partition up to which every record is settled, where `--resume` goes on from, and the
//! `--from` of the replay that left it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ReplayCheckpoints {
    Table,
    Topic,
    Partition,
    NextOffset,
    StartedFrom,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ReplayCheckpoints::Table)
                    .if_not_exists()
                    .col(text(ReplayCheckpoints::Topic))
                    .col(integer(ReplayCheckpoints::Partition))
                    .col(big_integer(ReplayCheckpoints::NextOffset))
                    .col(text(ReplayCheckpoints::StartedFrom))
                    .primary_key(
                        Index::create()
                            .col(ReplayCheckpoints::Topic)
                            .col(ReplayCheckpoints::Partition),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ReplayCheckpoints::Table).to_owned())
            .await
    }
}
