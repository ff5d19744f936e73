//! What the orchestrator reads and records: pending work, agents' room, its own decisions,
//! dependencies that have not heard how their upstream finished, work held by agents that
//! went offline, and how a message fared.

use std::collections::{BTreeSet, HashMap, HashSet};

use sea_orm::ActiveValue::Set;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
};

use super::entities::{agents, assignments, task_dependencies, tasks};
use super::{IN_LIST_MAX, Store, StoreError, convert, in_list};
use crate::domain::assign::{AgentSlot, Decision, PendingTask};
use crate::domain::costs::requires_model;
use crate::domain::task::{Task, TaskState};
use crate::domain::{Dependency, Priority};

/// How a message fared once its mailbox took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It was applied.
    Applied,
    /// The domain refused it, for this reason.
    Refused(String),
}

/// A dependency that has not heard how its upstream finished.
#[derive(Debug, Clone, PartialEq)]
pub struct Cascade {
    /// The waiting task.
    pub downstream: String,
    /// Its owner.
    pub user: String,
    /// The dependency.
    pub dependency: Dependency,
    /// The finished upstream task.
    pub upstream: Task,
}

/// The states in which a task counts against its agent's capacity, as an SQL list.
fn occupying_states() -> String {
    quoted(TaskState::ALL.into_iter().filter(|s| s.occupies_agent()))
}

fn quoted(states: impl Iterator<Item = TaskState>) -> String {
    states
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    async fn rows(&self, sql: String) -> Result<Vec<sea_orm::QueryResult>, StoreError> {
        let db = self.connection();
        Ok(db
            .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
            .await?)
    }

    /// Up to `limit` pending tasks, most urgent and oldest first, leaving out the tasks that
    /// need a model of the users in `held` (their budget is spent). Those users' other tasks
    /// are read apart, so however many of theirs wait, nobody else's work is crowded out.
    pub async fn pending_tasks(
        &self,
        limit: u64,
        held: &BTreeSet<String>,
    ) -> Result<Vec<PendingTask>, StoreError> {
        let mut pending = Vec::new();
        for priority in Priority::ALL.into_iter().rev() {
            let left = limit.saturating_sub(pending.len() as u64);
            if left == 0 {
                break;
            }
            let query = || {
                tasks::Entity::find()
                    .filter(tasks::Column::State.eq(TaskState::Pending.as_str()))
                    .filter(tasks::Column::Priority.eq(priority.as_str()))
                    .order_by_asc(tasks::Column::CreatedAt)
                    .order_by_asc(tasks::Column::TaskId)
                    .limit(left)
            };
            let mut rows = if held.is_empty() {
                query().all(self.connection()).await?
            } else {
                let users = in_list(&held.iter().map(String::as_str).collect::<Vec<_>>());
                let mut free = query()
                    .filter(tasks::Column::User.is_not_in(users.clone()))
                    .all(self.connection())
                    .await?;
                let theirs = query()
                    .filter(tasks::Column::User.is_in(users))
                    .all(self.connection())
                    .await?;
                free.extend(theirs);
                free.sort_by(|a, b| (a.created_at, &a.task_id).cmp(&(b.created_at, &b.task_id)));
                free
            };
            rows.truncate(left as usize);
            pending.extend(
                rows.into_iter()
                    .map(|r| super::tasks::task_from_row(r, Vec::new()))
                    .filter(|t| !(held.contains(&t.user) && requires_model(&t.requirements)))
                    .map(|task| PendingTask {
                        task_id: task.task_id,
                        user: task.user,
                        priority: task.priority,
                        created_at: task.created_at,
                        requirements: task.requirements,
                        preferred_agent: task.preferred_agent,
                        generation: task.generation,
                    }),
            );
        }
        Ok(pending)
    }

    /// Those of `decisions` whose task is still pending in the decision's generation: made,
    /// maybe published, not yet applied.
    pub async fn still_reserved(
        &self,
        decisions: Vec<Decision>,
    ) -> Result<Vec<Decision>, StoreError> {
        let mut pending = std::collections::HashSet::new();
        for chunk in decisions.chunks(IN_LIST_MAX) {
            let ids: Vec<&str> = chunk.iter().map(|d| d.task_id.as_str()).collect();
            let rows: Vec<(String, i32)> = tasks::Entity::find()
                .select_only()
                .column(tasks::Column::TaskId)
                .column(tasks::Column::Generation)
                .filter(tasks::Column::TaskId.is_in(in_list(&ids)))
                .filter(tasks::Column::State.eq(TaskState::Pending.as_str()))
                .into_tuple()
                .all(self.connection())
                .await?;
            pending.extend(rows);
        }
        Ok(decisions
            .into_iter()
            .filter(|d| {
                let generation = i32::try_from(d.generation).unwrap_or(i32::MAX);
                pending.contains(&(d.task_id.clone(), generation))
            })
            .collect())
    }

    /// Online agents with the number of tasks each holds.
    pub async fn agent_slots(&self) -> Result<Vec<AgentSlot>, StoreError> {
        let agents = agents::Entity::find()
            .filter(agents::Column::Status.eq("online"))
            .order_by_asc(agents::Column::AgentId)
            .all(self.connection())
            .await?;
        if agents.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT agent_id, COUNT(*) AS n FROM tasks WHERE agent_id IS NOT NULL AND state IN ({}) GROUP BY agent_id",
            occupying_states()
        );
        let mut loads = HashMap::new();
        for row in self.rows(sql).await? {
            let agent: String = row.try_get("", "agent_id")?;
            let n: i64 = row.try_get("", "n")?;
            loads.insert(agent, n.max(0) as u32);
        }
        Ok(agents
            .into_iter()
            .map(|a| AgentSlot {
                load: loads.get(&a.agent_id).copied().unwrap_or(0),
                capabilities: convert::capabilities_from_text(&a.capabilities),
                max_concurrent: a.max_concurrent.max(0) as u32,
                online: a.status == "online",
                agent_id: a.agent_id,
                user: a.user,
            })
            .collect())
    }

    /// Decisions made for tasks that are still pending in the same generation: made, maybe
    /// published, not yet applied.
    pub async fn reservations(&self) -> Result<Vec<Decision>, StoreError> {
        let sql = format!(
            "SELECT a.task_id, a.generation, a.agent_id FROM assignments a \
             JOIN tasks t ON t.task_id = a.task_id AND t.generation = a.generation \
             WHERE t.state = '{}'",
            TaskState::Pending.as_str()
        );
        let mut decisions = Vec::new();
        for row in self.rows(sql).await? {
            let generation: i32 = row.try_get("", "generation")?;
            decisions.push(Decision {
                task_id: row.try_get("", "task_id")?,
                generation: generation.max(0) as u32,
                agent_id: row.try_get("", "agent_id")?,
            });
        }
        Ok(decisions)
    }

    /// Records decisions before they are published, so a restart finds them again.
    pub async fn record_decisions(
        &self,
        decisions: &[Decision],
        at: u64,
    ) -> Result<(), StoreError> {
        if decisions.is_empty() {
            return Ok(());
        }
        let rows = decisions.iter().map(|d| assignments::ActiveModel {
            task_id: Set(d.task_id.clone()),
            generation: Set(i32::try_from(d.generation).unwrap_or(i32::MAX)),
            agent_id: Set(d.agent_id.clone()),
            decided_at: Set(at as i64),
        });
        self.writes.record(rows.collect()).await
    }

    /// The cycle that new edges from each of `upstreams` to `task_id` would close among the
    /// stored dependencies, as the ids along it, if any.
    pub async fn cycle_through(
        &self,
        task_id: &str,
        upstreams: &[String],
    ) -> Result<Option<Vec<String>>, StoreError> {
        let mut edges: Vec<(String, String)> = upstreams
            .iter()
            .map(|u| (u.clone(), task_id.to_owned()))
            .collect();
        let mut seen = HashSet::new();
        let mut queue = upstreams.to_vec();
        while let Some(id) = queue.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            let further: Vec<String> = task_dependencies::Entity::find()
                .select_only()
                .column(task_dependencies::Column::DependsOn)
                .filter(task_dependencies::Column::TaskId.eq(id.as_str()))
                .into_tuple()
                .all(self.connection())
                .await?;
            for upstream in further {
                edges.push((upstream.clone(), id.clone()));
                queue.push(upstream);
            }
        }
        Ok(crate::domain::dag::find_cycle(&edges))
    }

    /// Whether any stored task depends on `task_id`.
    pub async fn has_dependents(&self, task_id: &str) -> Result<bool, StoreError> {
        let found = task_dependencies::Entity::find()
            .filter(task_dependencies::Column::DependsOn.eq(task_id))
            .one(self.connection())
            .await?;
        Ok(found.is_some())
    }

    /// The tasks that depend on any of `upstreams`: (task id, its owner, the dependency, which
    /// names its upstream); a query per 1024 upstreams and one per 1024 dependents.
    pub async fn dependents(
        &self,
        upstreams: &[String],
    ) -> Result<Vec<(String, String, Dependency)>, StoreError> {
        let mut found = Vec::new();
        for chunk in upstreams.chunks(IN_LIST_MAX) {
            let deps = task_dependencies::Entity::find()
                .filter(task_dependencies::Column::DependsOn.is_in(in_list(chunk)))
                .order_by_asc(task_dependencies::Column::TaskId)
                .all(self.connection())
                .await?;
            if deps.is_empty() {
                continue;
            }
            // A chunk of upstreams may have any number of dependents: their owners are read in
            // chunks too, well below either database's limit on bound values.
            let ids: Vec<&str> = deps
                .iter()
                .map(|d| d.task_id.as_str())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut owners: HashMap<String, String> = HashMap::new();
            for ids in ids.chunks(IN_LIST_MAX) {
                let rows = tasks::Entity::find()
                    .select_only()
                    .column(tasks::Column::TaskId)
                    .column(tasks::Column::User)
                    .filter(tasks::Column::TaskId.is_in(in_list(ids)))
                    .into_tuple::<(String, String)>()
                    .all(self.connection())
                    .await?;
                owners.extend(rows);
            }
            found.extend(deps.into_iter().filter_map(|d| {
                let user = owners.get(&d.task_id)?.clone();
                Some((
                    d.task_id.clone(),
                    user,
                    super::tasks::dependency_from_row(d),
                ))
            }));
        }
        Ok(found)
    }

    /// The query of `unheard_cascades`: it starts from the waiting dependencies (their partial
    /// index `dependencies_waiting`) rather than from every finished task.
    pub fn unheard_cascades_sql(&self, limit: u64) -> String {
        let finished =
            quoted([TaskState::Done, TaskState::Failed, TaskState::Cancelled].into_iter());
        // Without statistics SQLite sees no gain in a partial index and would read the whole
        // table (or, joined, every finished task): it is named. CROSS JOIN keeps the order
        // written in SQLite; PostgreSQL reads it as the inner join and plans it itself.
        let waiting = match self.connection().get_database_backend() {
            sea_orm::DatabaseBackend::Sqlite => {
                "task_dependencies d INDEXED BY dependencies_waiting"
            }
            _ => "task_dependencies d",
        };
        format!(
            "SELECT d.task_id, d.depends_on FROM {waiting} \
             CROSS JOIN tasks u CROSS JOIN tasks t \
             WHERE u.task_id = d.depends_on AND t.task_id = d.task_id \
             AND t.\"user\" = u.\"user\" \
             AND d.state = 'waiting' AND u.state IN ({finished}) LIMIT {limit}"
        )
    }

    /// Up to `limit` dependencies still waiting on an upstream task of the same user that has
    /// finished: what a cascade interrupted by a crash left unsaid.
    pub async fn unheard_cascades(&self, limit: u64) -> Result<Vec<Cascade>, StoreError> {
        let mut found = Vec::new();
        for row in self.rows(self.unheard_cascades_sql(limit)).await? {
            let downstream: String = row.try_get("", "task_id")?;
            let upstream: String = row.try_get("", "depends_on")?;
            let (Some(task), Some(upstream)) =
                (self.task(&downstream).await?, self.task(&upstream).await?)
            else {
                continue;
            };
            if let Some(dependency) = task
                .dependencies
                .iter()
                .find(|d| d.upstream == upstream.task_id)
            {
                found.push(Cascade {
                    downstream,
                    user: task.user.clone(),
                    dependency: dependency.clone(),
                    upstream,
                });
            }
        }
        Ok(found)
    }

    /// Tasks being worked on by agents that are offline.
    pub async fn orphaned_tasks(&self) -> Result<Vec<Task>, StoreError> {
        let worked = quoted(TaskState::ALL.into_iter().filter(|s| s.worked_on()));
        let sql = format!(
            "SELECT t.task_id FROM tasks t JOIN agents a ON a.agent_id = t.agent_id \
             WHERE a.status = 'offline' AND t.state IN ({worked})"
        );
        let mut ids = Vec::new();
        for row in self.rows(sql).await? {
            ids.push(row.try_get::<String>("", "task_id")?);
        }
        self.tasks(&ids).await
    }
}
