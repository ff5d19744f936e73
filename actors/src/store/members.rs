//! Cluster members: each node, its addresses and the partitions it owns, as last recorded.

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::entities::cluster_members;
use super::{Store, StoreError};

/// A node of the cluster as it last recorded itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The node's configured id.
    pub node_id: String,
    /// A random id of the running process, telling two nodes with one id apart.
    pub instance: String,
    /// Its HTTP address.
    pub http: String,
    /// Its gRPC address.
    pub grpc: String,
    /// The events topic's partitions it owns.
    pub partitions: Vec<u32>,
    /// When it started, ms since the Unix epoch.
    pub started_at: u64,
    /// When it last recorded itself.
    pub seen_at: u64,
}

impl Store {
    /// Records (or refreshes) a cluster member.
    pub async fn record_member(&self, member: &Member) -> Result<(), StoreError> {
        let partitions: Vec<String> = member.partitions.iter().map(u32::to_string).collect();
        let row = cluster_members::ActiveModel {
            node_id: Set(member.node_id.clone()),
            instance: Set(member.instance.clone()),
            http: Set(member.http.clone()),
            grpc: Set(member.grpc.clone()),
            partitions: Set(partitions.join(",")),
            started_at: Set(member.started_at as i64),
            seen_at: Set(member.seen_at as i64),
        };
        cluster_members::Entity::insert(row)
            .on_conflict(
                OnConflict::column(cluster_members::Column::NodeId)
                    .update_columns([
                        cluster_members::Column::Instance,
                        cluster_members::Column::Http,
                        cluster_members::Column::Grpc,
                        cluster_members::Column::Partitions,
                        cluster_members::Column::StartedAt,
                        cluster_members::Column::SeenAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(self.connection())
            .await?;
        Ok(())
    }

    /// The members seen at or after `since` (ms since the Unix epoch), by node id.
    pub async fn members(&self, since: u64) -> Result<Vec<Member>, StoreError> {
        let rows = cluster_members::Entity::find()
            .filter(cluster_members::Column::SeenAt.gte(since as i64))
            .order_by_asc(cluster_members::Column::NodeId)
            .all(self.connection())
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Member {
                node_id: r.node_id,
                instance: r.instance,
                http: r.http,
                grpc: r.grpc,
                partitions: r
                    .partitions
                    .split(',')
                    .filter_map(|p| p.parse().ok())
                    .collect(),
                started_at: r.started_at.max(0) as u64,
                seen_at: r.seen_at.max(0) as u64,
            })
            .collect())
    }
}
