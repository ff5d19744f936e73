//! Replay checkpoints: per partition of a topic, the offset a resumed replay goes on from.

use std::collections::BTreeMap;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::batch::Checkpoint;
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
    /// partition's next offset to read. Written by the state writer, in its next batch, so it
    /// never waits for the database's lock.
    pub async fn save_replay_checkpoint(
        &self,
        topic: &str,
        started_from: &str,
        checkpoint: &BTreeMap<u32, u64>,
    ) -> Result<(), StoreError> {
        if checkpoint.is_empty() {
            return Ok(());
        }
        self.writes
            .checkpoint(Checkpoint {
                topic: topic.to_owned(),
                started_from: started_from.to_owned(),
                next: checkpoint.clone(),
            })
            .await
    }
}
