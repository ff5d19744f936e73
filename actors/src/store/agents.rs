//! Agents: loading, saving an applied command, listing.

use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::batch::Changes;
use super::entities::agents;
use super::{Applied, AppliedMessage, Store, StoreError, convert};
use crate::domain::agent::Agent;

impl Store {
    /// The agent `agent_id`, if registered.
    pub async fn agent(&self, agent_id: &str) -> Result<Option<Agent>, StoreError> {
        Ok(agents::Entity::find_by_id(agent_id.to_owned())
            .one(self.connection())
            .await?
            .map(agent_from_row))
    }

    /// Registered agents by id, optionally only one user's.
    pub async fn agents(&self, user: Option<&str>) -> Result<Vec<Agent>, StoreError> {
        let mut query = agents::Entity::find().order_by_asc(agents::Column::AgentId);
        if let Some(user) = user {
            query = query.filter(agents::Column::User.eq(user));
        }
        Ok(query
            .all(self.connection())
            .await?
            .into_iter()
            .map(agent_from_row)
            .collect())
    }

    /// Online agents last heard of before `before` (ms since the Unix epoch).
    pub async fn silent_agents(&self, before: u64) -> Result<Vec<Agent>, StoreError> {
        Ok(agents::Entity::find()
            .filter(agents::Column::Status.eq("online"))
            .filter(agents::Column::LastHeartbeat.lt(before as i64))
            .all(self.connection())
            .await?
            .into_iter()
            .map(agent_from_row)
            .collect())
    }

    /// Persists `agent` as the effect of `message`, with a row in the activity log.
    pub async fn save_agent(
        &self,
        message: &AppliedMessage<'_>,
        agent: &Agent,
    ) -> Result<Applied, StoreError> {
        let mut changes = Changes::new(message.id, message.activity());
        changes.agent = Some(agent_to_row(agent));
        self.writes.write(changes).await
    }
}

fn agent_to_row(agent: &Agent) -> agents::ActiveModel {
    agents::ActiveModel {
        agent_id: Set(agent.agent_id.clone()),
        user: Set(agent.user.clone()),
        name: Set(agent.name.clone()),
        capabilities: Set(convert::capabilities_to_text(&agent.capabilities)),
        max_concurrent: Set(i32::try_from(agent.max_concurrent).unwrap_or(i32::MAX)),
        status: Set(if agent.online { "online" } else { "offline" }.into()),
        last_heartbeat: Set(agent.last_heartbeat as i64),
        registered_at: Set(agent.registered_at as i64),
    }
}

pub(super) fn agent_from_row(row: agents::Model) -> Agent {
    Agent {
        capabilities: convert::capabilities_from_text(&row.capabilities),
        online: row.status == "online",
        max_concurrent: row.max_concurrent.max(0) as u32,
        last_heartbeat: row.last_heartbeat.max(0) as u64,
        registered_at: row.registered_at.max(0) as u64,
        agent_id: row.agent_id,
        user: row.user,
        name: row.name,
    }
}
