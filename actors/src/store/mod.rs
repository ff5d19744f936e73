//! Persistence: the current state of tasks, agents and notifications, on SQLite or PostgreSQL.
//!
//! Every applied message is written in one transaction together with its id in
//! `processed_messages`, so a redelivered message is recognised and changes nothing.

mod batch;
mod convert;
#[allow(missing_docs)] // sea-orm derives the columns, relations and active models
pub mod entities;
pub mod keys;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectOptions, ConnectionTrait, Database,
    DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait, Order, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, TryInsertResult,
};

pub use convert::cbor_to_json;
use entities::{
    activity, agents, cluster_members, notifications, processed_messages, task_dependencies, tasks,
};

use crate::domain::agent::Agent;
use crate::domain::assign::{Candidate, PendingTask};
use crate::domain::task::{NotificationDraft, Task, TaskState};

/// A database failure; transient as far as callers can tell, so the message is retried.
#[derive(Debug, Clone, thiserror::Error)]
#[error("database: {0}")]
pub struct StoreError(pub String);

impl From<DbErr> for StoreError {
    fn from(error: DbErr) -> Self {
        StoreError(error.to_string())
    }
}

/// Whether a write applied the message or found it already applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The message changed the state.
    Applied,
    /// The message had been applied before; nothing changed.
    Duplicate,
}

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

/// The message a state write applies, as the activity log records it.
#[derive(Debug, Clone, Copy)]
pub struct AppliedMessage<'a> {
    /// The message's id.
    pub id: &'a str,
    /// The entity it applies to: its routing key, e.g. `task/t1`.
    pub key: &'a str,
    /// Its type, e.g. `task.created`.
    pub kind: &'a str,
    /// Its time (the producer's clock), ms since the Unix epoch.
    pub time: u64,
}

impl AppliedMessage<'_> {
    fn activity(&self) -> activity::ActiveModel {
        activity::ActiveModel {
            entity: Set(self.key.to_owned()),
            message_id: Set(self.id.to_owned()),
            kind: Set(self.kind.to_owned()),
            at: Set(self.time as i64),
            ..Default::default()
        }
    }
}

/// A page of tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPage {
    /// The tasks of this page.
    pub tasks: Vec<Task>,
    /// Pass back to get the next page; `None` on the last.
    pub next: Option<String>,
}

/// A recorded notification, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Whose it is.
    pub user: String,
    /// Channel name.
    pub channel: String,
    /// Recipient.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Its deduplication key.
    pub dedupe_key: String,
    /// `pending` until delivered.
    pub status: String,
}

/// Handle to the state database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    writes: batch::Batcher,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    /// Connects to `url` (`sqlite://…?mode=rwc` or `postgres://…`); SQLite runs in WAL mode.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let mut options = ConnectOptions::new(url);
        options
            .sqlx_logging(false)
            .acquire_timeout(Duration::from_secs(10))
            .map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
            });
        let db = Database::connect(options).await?;
        Ok(Store {
            writes: batch::Batcher::start(db.clone()),
            db,
        })
    }

    /// The underlying connection, for migrations.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await.map_err(Into::into)
    }

    /// Whether the message with this id was already applied.
    pub async fn is_processed(&self, message_id: &str) -> Result<bool, StoreError> {
        Ok(
            processed_messages::Entity::find_by_id(message_id.to_owned())
                .one(&self.db)
                .await?
                .is_some(),
        )
    }

    /// The task `task_id`, if it exists.
    pub async fn task(&self, task_id: &str) -> Result<Option<Task>, StoreError> {
        let Some(row) = tasks::Entity::find_by_id(task_id.to_owned())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let deps = task_dependencies::Entity::find()
            .filter(task_dependencies::Column::TaskId.eq(task_id))
            .all(&self.db)
            .await?;
        Ok(Some(task_from_row(row, deps)))
    }

    /// Persists `task` as the effect of `message`, with the notifications it caused and a
    /// line in the task's activity log.
    pub async fn save_task(
        &self,
        message: &AppliedMessage<'_>,
        task: &Task,
        created: bool,
        notifications: &[NotificationDraft],
    ) -> Result<Applied, StoreError> {
        let (task, notifications) = (task.clone(), notifications.to_vec());
        let activity = message.activity();
        let cause = message.id.to_owned();
        self.save_once(message.id, move |txn| {
            Box::pin(async move {
                upsert_task(txn, &task, created).await?;
                for draft in &notifications {
                    insert_notification(txn, &cause, draft).await?;
                }
                activity::Entity::insert(activity)
                    .exec_without_returning(txn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    /// The message ids in an entity's activity log (`task/t1`, say), oldest first; a message
    /// applied twice would show twice.
    pub async fn activity(&self, entity: &str) -> Result<Vec<String>, StoreError> {
        Ok(activity::Entity::find()
            .filter(activity::Column::Entity.eq(entity))
            .order_by_asc(activity::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|a| a.message_id)
            .collect())
    }

    /// Message ids that appear more than once in the activity log: messages applied twice.
    pub async fn applied_twice(&self) -> Result<Vec<String>, StoreError> {
        let rows = activity::Entity::find()
            .select_only()
            .column(activity::Column::MessageId)
            .group_by(activity::Column::MessageId)
            .having(Expr::cust("COUNT(*) > 1"))
            .into_tuple::<String>()
            .all(&self.db)
            .await?;
        Ok(rows)
    }

    /// The agent `agent_id`, if registered.
    pub async fn agent(&self, agent_id: &str) -> Result<Option<Agent>, StoreError> {
        Ok(agents::Entity::find_by_id(agent_id.to_owned())
            .one(&self.db)
            .await?
            .map(agent_from_row))
    }

    /// Persists `agent` as the effect of `message`, with a line in its activity log.
    pub async fn save_agent(
        &self,
        message: &AppliedMessage<'_>,
        agent: &Agent,
    ) -> Result<Applied, StoreError> {
        let row = agent_to_row(agent);
        let activity = message.activity();
        self.save_once(message.id, move |txn| {
            Box::pin(async move {
                agents::Entity::insert(row)
                    .on_conflict(
                        OnConflict::column(agents::Column::AgentId)
                            .update_columns([
                                agents::Column::Name,
                                agents::Column::Capabilities,
                                agents::Column::MaxConcurrent,
                                agents::Column::Status,
                                agents::Column::LastHeartbeat,
                            ])
                            .to_owned(),
                    )
                    .exec_without_returning(txn)
                    .await?;
                activity::Entity::insert(activity)
                    .exec_without_returning(txn)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    /// Records a requested notification as the effect of message `message_id`.
    pub async fn save_notification(
        &self,
        message_id: &str,
        draft: &NotificationDraft,
    ) -> Result<Applied, StoreError> {
        let (cause, draft) = (message_id.to_owned(), draft.clone());
        self.save_once(message_id, move |txn| {
            Box::pin(async move { insert_notification(txn, &cause, &draft).await })
        })
        .await
    }

    /// Runs `write` with the next batch of state writes, unless message `message_id` was
    /// applied before; its id is recorded in the same savepoint.
    async fn save_once<F>(&self, message_id: &str, write: F) -> Result<Applied, StoreError>
    where
        F: for<'t> FnOnce(&'t DatabaseTransaction) -> batch::StepFuture<'t> + Send + 'static,
    {
        let message_id = message_id.to_owned();
        self.writes
            .write(batch::write(move |txn| {
                Box::pin(async move {
                    if mark_processed(txn, &message_id).await? == Applied::Duplicate {
                        return Ok(Applied::Duplicate);
                    }
                    write(txn).await?;
                    Ok(Applied::Applied)
                })
            }))
            .await
    }

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
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// The members seen at or after `since` (ms since the Unix epoch), by node id.
    pub async fn members(&self, since: u64) -> Result<Vec<Member>, StoreError> {
        let rows = cluster_members::Entity::find()
            .filter(cluster_members::Column::SeenAt.gte(since as i64))
            .order_by_asc(cluster_members::Column::NodeId)
            .all(&self.db)
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

    /// Notifications in the order they were recorded, optionally only one user's.
    pub async fn notifications(&self, user: Option<&str>) -> Result<Vec<Notification>, StoreError> {
        let mut query = notifications::Entity::find().order_by_asc(notifications::Column::Id);
        if let Some(user) = user {
            query = query.filter(notifications::Column::User.eq(user));
        }
        Ok(query
            .all(&self.db)
            .await?
            .into_iter()
            .map(|n| Notification {
                user: n.user,
                channel: n.channel,
                to: n.recipient,
                subject: n.subject,
                dedupe_key: n.dedupe_key,
                status: n.status,
            })
            .collect())
    }

    /// Up to `limit` pending tasks, most urgent first, then oldest first.
    pub async fn pending_tasks(&self, limit: u64) -> Result<Vec<PendingTask>, StoreError> {
        let rank = Expr::cust(
            "CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 ELSE 3 END",
        );
        let rows = tasks::Entity::find()
            .filter(tasks::Column::State.eq(TaskState::Pending.as_str()))
            .order_by(rank, Order::Asc)
            .order_by_asc(tasks::Column::CreatedAt)
            .order_by_asc(tasks::Column::TaskId)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| PendingTask {
                task_id: r.task_id,
                user: r.user,
                requirements: convert::capabilities_from_text(&r.requirements),
            })
            .collect())
    }

    /// Online agents with the number of tasks each is working on.
    pub async fn candidates(&self) -> Result<Vec<Candidate>, StoreError> {
        let agents = agents::Entity::find()
            .filter(agents::Column::Status.eq("online"))
            .order_by_asc(agents::Column::RegisteredAt)
            .order_by_asc(agents::Column::AgentId)
            .all(&self.db)
            .await?;
        let busy: Vec<&str> = TaskState::ALL
            .into_iter()
            .filter(|s| s.occupies_agent())
            .map(TaskState::as_str)
            .collect();
        let mut candidates = Vec::with_capacity(agents.len());
        for agent in agents {
            let load = tasks::Entity::find()
                .filter(tasks::Column::AgentId.eq(agent.agent_id.as_str()))
                .filter(tasks::Column::State.is_in(busy.clone()))
                .count(&self.db)
                .await?;
            candidates.push(Candidate {
                agent_id: agent.agent_id,
                user: agent.user,
                capabilities: convert::capabilities_from_text(&agent.capabilities),
                max_concurrent: agent.max_concurrent.max(0) as u32,
                load: load as u32,
            });
        }
        Ok(candidates)
    }

    /// Tasks in creation order, optionally in one state and of one user, a page at a time.
    pub async fn list_tasks(
        &self,
        user: Option<&str>,
        state: Option<TaskState>,
        page_size: u64,
        page_token: Option<&str>,
    ) -> Result<TaskPage, StoreError> {
        let mut query = tasks::Entity::find()
            .order_by_asc(tasks::Column::CreatedAt)
            .order_by_asc(tasks::Column::TaskId)
            .limit(page_size + 1);
        if let Some(user) = user {
            query = query.filter(tasks::Column::User.eq(user));
        }
        if let Some(state) = state {
            query = query.filter(tasks::Column::State.eq(state.as_str()));
        }
        if let Some((created, task_id)) = page_token.and_then(parse_token) {
            query = query.filter(
                Condition::any()
                    .add(tasks::Column::CreatedAt.gt(created))
                    .add(
                        Condition::all()
                            .add(tasks::Column::CreatedAt.eq(created))
                            .add(tasks::Column::TaskId.gt(task_id)),
                    ),
            );
        }
        let mut rows = query.all(&self.db).await?;
        let next = if rows.len() as u64 > page_size {
            rows.truncate(page_size as usize);
            rows.last()
                .map(|r| format!("{}:{}", r.created_at, r.task_id))
        } else {
            None
        };
        Ok(TaskPage {
            tasks: rows
                .into_iter()
                .map(|r| task_from_row(r, Vec::new()))
                .collect(),
            next,
        })
    }
}

async fn upsert_task(
    db: &impl ConnectionTrait,
    task: &Task,
    created: bool,
) -> Result<(), StoreError> {
    tasks::Entity::insert(task_to_row(task))
        .on_conflict(
            OnConflict::column(tasks::Column::TaskId)
                .update_columns([
                    tasks::Column::State,
                    tasks::Column::AgentId,
                    tasks::Column::Result,
                    tasks::Column::Error,
                    tasks::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    if created && !task.depends_on.is_empty() {
        let rows = task
            .depends_on
            .iter()
            .map(|d| task_dependencies::ActiveModel {
                task_id: Set(task.task_id.clone()),
                depends_on: Set(d.task_id.clone()),
                kind: Set(convert::dependency_kind_to_text(d.kind).to_owned()),
                contract_key: Set(d.contract_key.clone()),
            });
        task_dependencies::Entity::insert_many(rows)
            .on_conflict_do_nothing()
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

fn parse_token(token: &str) -> Option<(i64, String)> {
    let (created, task_id) = token.split_once(':')?;
    Some((created.parse().ok()?, task_id.to_owned()))
}

async fn mark_processed(
    db: &impl ConnectionTrait,
    message_id: &str,
) -> Result<Applied, StoreError> {
    let row = processed_messages::ActiveModel {
        message_id: Set(message_id.to_owned()),
        processed_at: Set(now_ms() as i64),
    };
    let result = processed_messages::Entity::insert(row)
        .on_conflict_do_nothing()
        .exec_without_returning(db)
        .await?;
    Ok(match result {
        TryInsertResult::Inserted(n) if n > 0 => Applied::Applied,
        _ => Applied::Duplicate,
    })
}

async fn insert_notification(
    db: &impl ConnectionTrait,
    cause: &str,
    draft: &NotificationDraft,
) -> Result<(), StoreError> {
    let row = notifications::ActiveModel {
        user: Set(draft.user.clone()),
        channel: Set(draft.channel.clone()),
        recipient: Set(draft.to.clone()),
        subject: Set(draft.subject.clone()),
        text: Set(draft.text.clone()),
        dedupe_key: Set(draft.dedupe_key.clone()),
        status: Set("pending".into()),
        cause: Set(cause.to_owned()),
        created_at: Set(now_ms() as i64),
        ..Default::default()
    };
    // A repeated dedupe key is the same notification asked for again: keep the first.
    notifications::Entity::insert(row)
        .on_conflict_do_nothing_on([notifications::Column::DedupeKey])
        .exec_without_returning(db)
        .await?;
    Ok(())
}

fn task_to_row(task: &Task) -> tasks::ActiveModel {
    tasks::ActiveModel {
        task_id: Set(task.task_id.clone()),
        user: Set(task.user.clone()),
        title: Set(task.title.clone()),
        spec: Set(task.spec.clone()),
        priority: Set(task.priority.as_str().to_owned()),
        requirements: Set(convert::capabilities_to_text(&task.requirements)),
        state: Set(task.state.as_str().to_owned()),
        agent_id: Set(task.agent_id.clone()),
        result: Set(task.result.as_ref().map(convert::result_to_text)),
        error: Set(task.error.clone()),
        created_at: Set(task.created_at as i64),
        updated_at: Set(task.updated_at as i64),
    }
}

fn task_from_row(row: tasks::Model, deps: Vec<task_dependencies::Model>) -> Task {
    Task {
        state: TaskState::parse(&row.state).unwrap_or(TaskState::Pending),
        priority: convert::priority_from_text(&row.priority),
        requirements: convert::capabilities_from_text(&row.requirements),
        depends_on: deps
            .into_iter()
            .map(|d| convert::dependency_from_row(d.depends_on, &d.kind, d.contract_key))
            .collect(),
        result: row.result.as_deref().map(convert::result_from_text),
        task_id: row.task_id,
        user: row.user,
        title: row.title,
        spec: row.spec,
        agent_id: row.agent_id,
        error: row.error,
        created_at: row.created_at.max(0) as u64,
        updated_at: row.updated_at.max(0) as u64,
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

fn agent_from_row(row: agents::Model) -> Agent {
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
