//! Persistence: the current state of tasks, agents and notifications, on SQLite or PostgreSQL.
//!
//! Every applied message is written in one transaction together with its id in
//! `processed_messages` and a row of the activity log, so a redelivered message is recognised
//! and changes nothing, and one applied twice would show.

mod agents;
mod automations;
mod batch;
mod calendars;
mod checkpoints;
mod conversations;
mod convert;
mod costs;
mod digest;
#[allow(missing_docs)] // sea-orm derives the columns, relations and active models
pub mod entities;
mod members;
mod nagle;
mod notifications;
mod orchestration;
mod sqlite_busy;
mod sqlite_writes;
mod tasks;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectOptions, Database, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use entities::{activity, processed_messages, refusals};

pub use automations::Automation;
pub use batch::HOLD_POSITION_ORDER;
pub use conversations::{InboundMessage, InboundRow};
pub use costs::{Invocation, ModelTotal, totals};
pub use digest::Digest;
pub use members::Member;
pub use nagle::nodelay_towards;
pub use notifications::{Delivery, Notification, status as notification_status};
pub use orchestration::{Cascade, Outcome};
pub use tasks::{TaskFilter, TaskPage, is_page_token};

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
    /// The user it acts for.
    pub user: &'a str,
}

impl AppliedMessage<'_> {
    fn activity(&self) -> activity::ActiveModel {
        activity::ActiveModel {
            entity: Set(self.key.to_owned()),
            message_id: Set(self.id.to_owned()),
            kind: Set(self.kind.to_owned()),
            at: Set(self.time as i64),
            user: Set(self.user.to_owned()),
            ..Default::default()
        }
    }
}

/// One row of the activity log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityRow {
    /// Its position in the log.
    pub id: i64,
    /// The entity (routing key).
    pub entity: String,
    /// The applied message's id.
    pub message_id: String,
    /// The applied message's type.
    pub kind: String,
    /// The message's time, ms since the Unix epoch.
    pub at: u64,
    /// The user it acted for.
    pub user: String,
}

/// Connections of a SQLite database's pool, for reads and the writes outside the writer's
/// batches.
const SQLITE_READERS: u32 = 8;

/// Rows a SQLite query hands over at once.
const READ_AHEAD_ROWS: usize = 4096;

/// Most values one `IN (…)` list holds: far below either database's limit on bound values.
const IN_LIST_MAX: usize = 1024;

/// `values` as an `IN (…)` list, padded with repeats of the last to a power of two. Each
/// connection keeps the statements it ran prepared, one per list length; padded, the lengths
/// are a dozen, not a thousand (a list of a thousand held about 100 KB of compiled statement).
fn in_list<T: Clone>(values: &[T]) -> Vec<T> {
    let mut list = values.to_vec();
    if let Some(last) = values.last() {
        list.resize(values.len().next_power_of_two(), last.clone());
    }
    list
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
        let sqlite = url.starts_with("sqlite:");
        // The state writer opens the file again on a connection of its own.
        if sqlite && (url.contains(":memory:") || url.contains("mode=memory")) {
            return Err(StoreError(format!(
                "{url}: the state database must be a file, not in memory"
            )));
        }
        let port = nagle::postgres_port(url);
        let mut options = ConnectOptions::new(url);
        options
            .sqlx_logging(false)
            .acquire_timeout(Duration::from_secs(10))
            // A ping on every checkout is a round trip to the connection before each query;
            // one idle this long may have been dropped by a server or a proxy, and is tried.
            .test_before_acquire_if_idle_for(Duration::from_secs(30))
            .map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    // A query's rows leave sqlx's worker thread in one go: at its default of
                    // 50, each scan of an assignment pass (hundreds of rows) waited several
                    // times for its task to be polled on a busy node (a pass: 62 → 40 ms).
                    .row_buffer_size(READ_AHEAD_ROWS)
            })
            // Once connected (the busy timeout above covers connecting), waits for a lock in
            // short steps.
            .map_sqlx_sqlite_pool_opts(|pool| {
                pool.after_connect(|connection, _meta| {
                    Box::pin(async move { sqlite_busy::install(connection).await })
                })
            })
            .map_sqlx_postgres_pool_opts(move |pool| {
                pool.after_connect(move |_connection, _meta| {
                    Box::pin(async move {
                        nagle::disable_towards(port);
                        Ok(())
                    })
                })
            });
        if sqlite {
            // sea-orm's default for SQLite is one connection, which every read then waits
            // for; in WAL mode readers run side by side, and the writer has its own.
            options.max_connections(SQLITE_READERS);
        }
        let db = Database::connect(options).await?;
        Ok(Store {
            writes: batch::Batcher::start(db.clone())?,
            db,
        })
    }

    /// Changes each time this process commits a batch of state writes: readers that follow
    /// the state (Watch) look again then rather than on a timer.
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.writes.commits()
    }

    /// The underlying connection, for migrations.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await.map_err(Into::into)
    }

    /// Whether any message was applied to this database.
    pub async fn holds_state(&self) -> Result<bool, StoreError> {
        Ok(processed_messages::Entity::find()
            .one(&self.db)
            .await?
            .is_some())
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

    /// Up to `limit` activity rows after position `after`, of one entity or one user (or all).
    pub async fn activity_after(
        &self,
        after: i64,
        entity: Option<&str>,
        user: Option<&str>,
        limit: u64,
    ) -> Result<Vec<ActivityRow>, StoreError> {
        let mut query = activity::Entity::find()
            .filter(activity::Column::Id.gt(after))
            .order_by_asc(activity::Column::Id)
            .limit(limit);
        if let Some(entity) = entity {
            query = query.filter(activity::Column::Entity.eq(entity));
        }
        if let Some(user) = user {
            query = query.filter(activity::Column::User.eq(user));
        }
        Ok(query
            .all(&self.db)
            .await?
            .into_iter()
            .map(|a| ActivityRow {
                id: a.id,
                entity: a.entity,
                message_id: a.message_id,
                kind: a.kind,
                at: a.at.max(0) as u64,
                user: a.user,
            })
            .collect())
    }

    /// The last position of the activity log (0 when empty).
    pub async fn activity_end(&self) -> Result<i64, StoreError> {
        let last = activity::Entity::find()
            .select_only()
            .column_as(activity::Column::Id.max(), "last")
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await?;
        Ok(last.flatten().unwrap_or(0))
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

    /// Records that the domain refused message `message_id`, and why.
    pub async fn record_refusal(&self, message_id: &str, reason: &str) -> Result<(), StoreError> {
        let row = refusals::ActiveModel {
            message_id: Set(message_id.to_owned()),
            reason: Set(reason.to_owned()),
            at: Set(now_ms() as i64),
        };
        refusals::Entity::insert(row)
            .on_conflict_do_nothing()
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// Whether message `message_id` was applied or refused, once either happened.
    pub async fn outcome(&self, message_id: &str) -> Result<Option<Outcome>, StoreError> {
        if self.is_processed(message_id).await? {
            return Ok(Some(Outcome::Applied));
        }
        Ok(refusals::Entity::find_by_id(message_id.to_owned())
            .one(&self.db)
            .await?
            .map(|r| Outcome::Refused(r.reason)))
    }
}

#[cfg(test)]
mod tests {
    use super::in_list;

    #[test]
    fn an_in_list_is_padded_to_a_power_of_two_with_what_it_holds() {
        assert!(in_list::<u32>(&[]).is_empty());
        for n in 1..=1024u32 {
            let values: Vec<u32> = (0..n).collect();
            let list = in_list(&values);
            assert!(list.len().is_power_of_two() && list.len() < 2 * n as usize);
            assert_eq!(&list[..n as usize], &values[..]);
            assert!(list[n as usize..].iter().all(|v| *v == n - 1));
        }
        let lengths: std::collections::BTreeSet<usize> = (1..=1024u32)
            .map(|n| in_list(&(0..n).collect::<Vec<_>>()).len())
            .collect();
        assert_eq!(lengths.len(), 11);
    }
}
