//! The activity log (one row per message applied to an entity, deliberately without a unique
//! key, so a message applied twice shows as two rows) and the cluster's members.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Activity {
    Table,
    Id,
    Entity,
    MessageId,
    Kind,
    At,
}

#[derive(DeriveIden)]
enum ClusterMembers {
    Table,
    NodeId,
    Instance,
    Http,
    Grpc,
    Partitions,
    StartedAt,
    SeenAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Activity::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Activity::Id))
                    .col(text(Activity::Entity))
                    .col(text(Activity::MessageId))
                    .col(text(Activity::Kind))
                    .col(big_integer(Activity::At))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("activity_by_entity")
                    .table(Activity::Table)
                    .col(Activity::Entity)
                    .col(Activity::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ClusterMembers::Table)
                    .if_not_exists()
                    .col(text(ClusterMembers::NodeId).primary_key())
                    .col(text(ClusterMembers::Instance))
                    .col(text(ClusterMembers::Http))
                    .col(text(ClusterMembers::Grpc))
                    .col(text(ClusterMembers::Partitions))
                    .col(big_integer(ClusterMembers::StartedAt))
                    .col(big_integer(ClusterMembers::SeenAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ClusterMembers::Table.into_iden(),
            Activity::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
