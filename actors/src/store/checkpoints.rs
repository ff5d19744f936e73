//! Replay checkpoints: per partition of a topic, the offset a resumed replay goes on from.

use std::collections::BTreeMap;

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::entities::replay_checkpoints as checkpoints;
use super::{Store, StoreError};

impl Store {
    /// Where a replay of `topic` into this database has settled everything before, by
    /// partition, and where that replay started (`None` and empty when none ran).
    pub async fn replay_checkpoint(
        &self,
        topic: &str,
    ) -> Result<(Option<String>, BTreeMap<u32, u64>), StoreError> {
        let rows = checkpoints::Entity::find()
            .filter(checkpoints::Column::Topic.eq(topic))
            .all(self.connection())
            .await?;
        let started_from = rows.first().map(|r| r.started_from.clone());
        let next = rows
            .into_iter()
            .map(|r| (r.partition.max(0) as u32, r.next_offset.max(0) as u64))
            .collect();
        Ok((started_from, next))
    }

    /// Records `checkpoint` for a replay of `topic` that started from `started_from`: each
    /// partition's next offset to read.
    pub async fn save_replay_checkpoint(
        &self,
        topic: &str,
        started_from: &str,
        checkpoint: &BTreeMap<u32, u64>,
    ) -> Result<(), StoreError> {
        if checkpoint.is_empty() {
            return Ok(());
        }
        let rows = checkpoint
            .iter()
            .map(|(partition, offset)| checkpoints::ActiveModel {
                topic: Set(topic.to_owned()),
                partition: Set(*partition as i32),
                next_offset: Set(i64::try_from(*offset).unwrap_or(i64::MAX)),
                started_from: Set(started_from.to_owned()),
            });
        let upsert =
            OnConflict::columns([checkpoints::Column::Topic, checkpoints::Column::Partition])
                .update_columns([
                    checkpoints::Column::NextOffset,
                    checkpoints::Column::StartedFrom,
                ])
                .to_owned();
        checkpoints::Entity::insert_many(rows)
            .on_conflict(upsert)
            .exec_without_returning(self.connection())
            .await?;
        Ok(())
    }
}
