//! Group commit for state writes: the writes that arrive while a transaction commits share the
//! next one, so one fsync serves hundreds of messages. On PostgreSQL a batch is a multi-row
//! statement per table; on SQLite, prepared statements run on the writer's own thread
//! (`sqlite_writes`). If the shared transaction fails, each write is tried again alone, so one
//! bad write does not fail its neighbours.

use std::collections::{BTreeMap, HashSet};

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    QuerySelect, TransactionTrait,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::entities::{
    activity, agents, assignments, automations, calendar_requests, conversation_messages,
    conversations, cost_ledgers, invocations, notifications, processed_messages,
    replay_checkpoints, task_dependencies, task_output, tasks,
};
use super::sqlite_writes;
use super::{Applied, StoreError, now_ms};

/// Most writes sharing one transaction.
const MAX_BATCH: usize = 1024;

/// Rows per statement: within SQLite's 32766 bound parameters for every table here.
const ROWS_PER_STATEMENT: usize = 1000;

/// The rows one applied message writes, all or none of them, with its id.
#[derive(Clone)]
pub(crate) struct Changes {
    pub message_id: String,
    pub task: Option<tasks::ActiveModel>,
    /// The task is new: written only if no task has its id (its mailbox did not look).
    pub creates_task: bool,
    pub agent: Option<agents::ActiveModel>,
    pub dependencies: Vec<task_dependencies::ActiveModel>,
    pub notifications: Vec<notifications::ActiveModel>,
    pub output: Vec<task_output::ActiveModel>,
    pub conversation: Option<conversations::ActiveModel>,
    pub inbound: Option<conversation_messages::ActiveModel>,
    pub calendar_request: Option<calendar_requests::ActiveModel>,
    pub invocation: Option<invocations::ActiveModel>,
    pub ledger: Option<cost_ledgers::ActiveModel>,
    pub automation: Option<automations::ActiveModel>,
    pub activity: activity::ActiveModel,
}

impl Changes {
    /// A message that writes its activity row and nothing else yet; boxed, as it is large
    /// and the futures that hold it on its way to the writer are spawned and moved.
    pub(crate) fn new(message_id: &str, activity: activity::ActiveModel) -> Box<Changes> {
        Box::new(Changes {
            message_id: message_id.to_owned(),
            task: None,
            creates_task: false,
            agent: None,
            dependencies: Vec::new(),
            notifications: Vec::new(),
            output: Vec::new(),
            conversation: None,
            inbound: None,
            calendar_request: None,
            invocation: None,
            ledger: None,
            automation: None,
            activity,
        })
    }
}

/// What the writer is asked to write.
enum Work {
    /// The rows of one applied message.
    Message(Box<Changes>),
    /// The orchestrator's decisions, recorded before they are published.
    Decisions(Vec<assignments::ActiveModel>),
    /// A replay's checkpoint.
    Checkpoint(Checkpoint),
}

/// Where a replay of a topic has settled everything before, by partition.
pub(crate) struct Checkpoint {
    pub topic: String,
    /// Where the replay started.
    pub started_from: String,
    /// Each partition's next offset to read.
    pub next: BTreeMap<u32, u64>,
}

struct Job {
    work: Work,
    reply: oneshot::Sender<Result<Applied, StoreError>>,
}

/// Handle to the writer task; clones share it.
#[derive(Clone, Debug)]
pub(crate) struct Batcher {
    jobs: mpsc::Sender<Job>,
    commits: watch::Receiver<u64>,
}

impl Batcher {
    /// Starts the writer on `db`, on a thread of its own: on the node's runtime each of its
    /// steps waited behind the hundreds of mailboxes its last commit woke, and on SQLite it
    /// runs its statements itself rather than hopping to sqlx's worker thread for each.
    pub(crate) fn start(db: DatabaseConnection) -> Result<Batcher, StoreError> {
        let (jobs, queue) = mpsc::channel(4 * MAX_BATCH);
        let (committed, commits) = watch::channel(0);
        std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || {
                // Built here, so that a thread that fails to start drops no runtime in the
                // caller's async context.
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(run(db, queue, committed)),
                    // Its queue closes with it: every write is told the writer stopped.
                    Err(error) => tracing::error!(%error, "no runtime for the state writer"),
                }
            })
            .map_err(|e| StoreError(format!("no thread for the state writer: {e}")))?;
        Ok(Batcher { jobs, commits })
    }

    /// A count of the batches committed, which changes after each commit.
    pub(crate) fn commits(&self) -> watch::Receiver<u64> {
        self.commits.clone()
    }

    /// Writes `changes` in the next batch, unless its message was applied before; returns
    /// once that batch is committed.
    pub(crate) async fn write(&self, changes: Box<Changes>) -> Result<Applied, StoreError> {
        self.submit(Work::Message(changes)).await
    }

    /// Records the orchestrator's decisions (a decision recorded before is kept) in the next
    /// batch: the state database has one writer, so nobody waits on its lock.
    pub(crate) async fn record(
        &self,
        decisions: Vec<assignments::ActiveModel>,
    ) -> Result<(), StoreError> {
        self.submit(Work::Decisions(decisions)).await.map(drop)
    }

    /// Records a replay's checkpoint (replacing each partition's) in the next batch.
    pub(crate) async fn checkpoint(&self, checkpoint: Checkpoint) -> Result<(), StoreError> {
        self.submit(Work::Checkpoint(checkpoint)).await.map(drop)
    }

    async fn submit(&self, work: Work) -> Result<Applied, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError("the state writer has stopped".into());
        self.jobs
            .send(Job { work, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Where the writer writes.
enum Target {
    /// PostgreSQL, through sea-orm's pool.
    Pool(DatabaseConnection),
    /// SQLite, on the writer's own connection.
    Sqlite(sqlite_writes::Writer),
}

async fn run(
    db: DatabaseConnection,
    mut queue: mpsc::Receiver<Job>,
    committed: watch::Sender<u64>,
) {
    let mut target = match db.get_database_backend() {
        DbBackend::Sqlite => Target::Sqlite(sqlite_writes::Writer::of(&db)),
        _ => Target::Pool(db),
    };
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let (batch, replies): (Vec<_>, Vec<_>) = jobs.drain(..).map(|j| (j.work, j.reply)).unzip();
        let results = commit(&mut target, &batch).await;
        committed.send_modify(|n| *n = n.wrapping_add(1));
        for (reply, result) in replies.into_iter().zip(results) {
            // The writer gave up waiting: its delivery is redelivered and found processed.
            let _ = reply.send(result);
        }
    }
}

/// Commits the batch together or, if that fails, each write alone; a result per write.
async fn commit(target: &mut Target, batch: &[Work]) -> Vec<Result<Applied, StoreError>> {
    match commit_together(target, batch).await {
        Ok(results) => results,
        Err(error) if batch.len() > 1 => {
            tracing::debug!(%error, writes = batch.len(), "a shared write failed; writing each alone");
            let mut results = Vec::with_capacity(batch.len());
            for work in batch {
                let alone = commit_together(target, std::slice::from_ref(work)).await;
                results.push(alone.and_then(|mut results| results.remove(0)));
            }
            results
        }
        Err(error) => vec![Err(error)],
    }
}

/// Writes the batch in one transaction: every message's rows unless it was applied before
/// (a write that creates a task whose id is taken fails alone), every decision and every
/// checkpoint.
async fn commit_together(
    target: &mut Target,
    work: &[Work],
) -> Result<Vec<Result<Applied, StoreError>>, StoreError> {
    let db = match target {
        Target::Sqlite(writer) => {
            return writer
                .in_transaction(async |txn| write(txn, work).await)
                .await;
        }
        Target::Pool(db) => db,
    };
    let txn = db.begin().await?;
    let results = write(&mut SeaOrm(&txn), work).await?;
    txn.commit().await?;
    Ok(results)
}

/// The statements a batch needs, in the transaction that commits it.
pub(super) trait Statements {
    /// Which of `ids` some row of `E` holds in `column`.
    async fn found<E: EntityTrait>(
        &mut self,
        column: E::Column,
        ids: &[&str],
    ) -> Result<HashSet<String>, StoreError>;

    /// Inserts `rows`, with `on_conflict` if given.
    async fn insert<E: EntityTrait>(
        &mut self,
        rows: Vec<E::ActiveModel>,
        on_conflict: Option<OnConflict>,
    ) -> Result<(), StoreError>;

    /// Makes the activity positions taken from here on commit after every smaller one, for
    /// readers that follow the log by position (Watch).
    async fn hold_position_order(&mut self) -> Result<(), StoreError>;
}

/// Takes the PostgreSQL advisory lock on the order of this store's activity positions, held
/// to the commit. A sequence hands out positions as rows are inserted, but transactions commit
/// in their own order: without it, a reader of the log by position could see another node's
/// position 101 while 100 is still uncommitted, and never read 100. Keyed by the table, so
/// stores in other schemas of the same database do not wait on each other.
pub const HOLD_POSITION_ORDER: &str =
    "SELECT pg_advisory_xact_lock(1937, 'activity'::regclass::oid::int)";

/// Statements through sea-orm: multi-row, `ROWS_PER_STATEMENT` rows each.
struct SeaOrm<'a, C>(&'a C);

impl<C: ConnectionTrait> Statements for SeaOrm<'_, C> {
    async fn found<E: EntityTrait>(
        &mut self,
        column: E::Column,
        ids: &[&str],
    ) -> Result<HashSet<String>, StoreError> {
        let mut found = HashSet::new();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let rows: Vec<String> = E::find()
                .select_only()
                .column(column)
                .filter(column.is_in(super::in_list(chunk)))
                .into_tuple()
                .all(self.0)
                .await?;
            found.extend(rows);
        }
        Ok(found)
    }

    async fn insert<E: EntityTrait>(
        &mut self,
        mut rows: Vec<E::ActiveModel>,
        on_conflict: Option<OnConflict>,
    ) -> Result<(), StoreError> {
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(ROWS_PER_STATEMENT));
            let mut insert = E::insert_many(std::mem::replace(&mut rows, rest));
            if let Some(on_conflict) = &on_conflict {
                insert = insert.on_conflict(on_conflict.clone());
            }
            insert.exec_without_returning(self.0).await?;
        }
        Ok(())
    }

    async fn hold_position_order(&mut self) -> Result<(), StoreError> {
        if self.0.get_database_backend() == DbBackend::Postgres {
            self.0.execute_unprepared(HOLD_POSITION_ORDER).await?;
        }
        Ok(())
    }
}

/// The statements of one batch on `txn`; a result per write, in the order of `work`.
async fn write(
    txn: &mut impl Statements,
    work: &[Work],
) -> Result<Vec<Result<Applied, StoreError>>, StoreError> {
    let mut batch = Vec::new();
    let mut decisions = Vec::new();
    // The latest checkpoint of each partition: PostgreSQL refuses to upsert a row twice in
    // one statement.
    let mut checkpoints = BTreeMap::new();
    for item in work {
        match item {
            Work::Message(changes) => batch.push(changes.as_ref()),
            Work::Decisions(rows) => decisions.extend(rows.iter().cloned()),
            Work::Checkpoint(c) => checkpoints.extend(c.next.iter().map(|(partition, next)| {
                (
                    (c.topic.as_str(), *partition),
                    (c.started_from.as_str(), *next),
                )
            })),
        }
    }
    let ids: Vec<&str> = batch.iter().map(|c| c.message_id.as_str()).collect();
    let column = processed_messages::Column::MessageId;
    let mut done = txn
        .found::<processed_messages::Entity>(column, &ids)
        .await?;
    let taken = existing_tasks(txn, &batch).await?;
    let results: Vec<Result<Applied, StoreError>> = batch
        .iter()
        .map(|c| {
            if !done.insert(c.message_id.clone()) {
                Ok(Applied::Duplicate)
            } else if c.creates_task && taken.contains(&c.message_id) {
                Err(StoreError(format!(
                    "message `{}` creates a task that exists already",
                    c.message_id
                )))
            } else {
                Ok(Applied::Applied)
            }
        })
        .collect();
    let fresh: Vec<&Changes> = batch
        .iter()
        .zip(&results)
        .filter(|(_, r)| matches!(r, Ok(Applied::Applied)))
        .map(|(c, _)| *c)
        .collect();
    let now = now_ms() as i64;
    let processed = fresh.iter().map(|c| processed_messages::ActiveModel {
        message_id: Set(c.message_id.clone()),
        processed_at: Set(now),
    });
    txn.insert::<processed_messages::Entity>(processed.collect(), None)
        .await?;
    {
        use tasks::Column as C;
        // New tasks are plain inserts: one that appeared meanwhile (another node) fails.
        let (created, updated): (Vec<&Changes>, Vec<&Changes>) =
            fresh.iter().partition(|c| c.creates_task);
        let rows = created.iter().filter_map(|c| c.task.clone()).collect();
        txn.insert::<tasks::Entity>(rows, None).await?;
        let rows = updated.iter().filter_map(|c| c.task.clone()).collect();
        let update = OnConflict::column(C::TaskId)
            .update_columns([
                C::State,
                C::AgentId,
                C::Result,
                C::Error,
                C::UpdatedAt,
                C::Attempts,
                C::Inputs,
                C::BlockedReason,
                C::Note,
                C::Generation,
            ])
            .to_owned();
        txn.insert::<tasks::Entity>(rows, Some(update)).await?;
    }
    {
        use agents::Column as C;
        let rows = fresh.iter().filter_map(|c| c.agent.clone()).collect();
        let update = OnConflict::column(C::AgentId)
            .update_columns([
                C::Name,
                C::Capabilities,
                C::MaxConcurrent,
                C::Status,
                C::LastHeartbeat,
            ])
            .to_owned();
        txn.insert::<agents::Entity>(rows, Some(update)).await?;
    }
    {
        use task_dependencies::Column as C;
        let rows = fresh.iter().flat_map(|c| c.dependencies.clone()).collect();
        let update = OnConflict::columns([C::TaskId, C::DependsOn])
            .update_columns([C::State, C::Reason])
            .to_owned();
        txn.insert::<task_dependencies::Entity>(rows, Some(update))
            .await?;
    }
    // A repeated dedupe key is the same notification asked for again: keep the first.
    let rows = fresh.iter().flat_map(|c| c.notifications.clone()).collect();
    let keep_first = OnConflict::column(notifications::Column::DedupeKey)
        .do_nothing()
        .to_owned();
    txn.insert::<notifications::Entity>(rows, Some(keep_first))
        .await?;
    let rows = fresh.iter().flat_map(|c| c.output.clone()).collect();
    txn.insert::<task_output::Entity>(rows, None).await?;
    {
        use conversations::Column as C;
        let rows = fresh
            .iter()
            .filter_map(|c| c.conversation.clone())
            .collect();
        let update = OnConflict::column(C::Key)
            .update_columns([C::Messages, C::Tasks, C::FirstAt, C::LastAt])
            .to_owned();
        txn.insert::<conversations::Entity>(rows, Some(update))
            .await?;
    }
    let rows = fresh.iter().filter_map(|c| c.inbound.clone()).collect();
    txn.insert::<conversation_messages::Entity>(rows, None)
        .await?;
    // A request is decided once: the primary key refuses a second decision of it.
    let rows = fresh
        .iter()
        .filter_map(|c| c.calendar_request.clone())
        .collect();
    txn.insert::<calendar_requests::Entity>(rows, None).await?;
    // An invocation is recorded once: its ledger counted it only if it was new.
    let rows = fresh.iter().filter_map(|c| c.invocation.clone()).collect();
    txn.insert::<invocations::Entity>(rows, None).await?;
    {
        use cost_ledgers::Column as C;
        let rows = fresh.iter().filter_map(|c| c.ledger.clone()).collect();
        let update = OnConflict::column(C::User)
            .update_columns([
                C::Day,
                C::Month,
                C::DailyMicros,
                C::MonthlyMicros,
                C::DailyBudget,
                C::MonthlyBudget,
                C::HoldReason,
                C::HoldUntil,
            ])
            .to_owned();
        txn.insert::<cost_ledgers::Entity>(rows, Some(update))
            .await?;
    }
    {
        use automations::Column as C;
        let rows = fresh.iter().filter_map(|c| c.automation.clone()).collect();
        // Defined again: replaced whole, its last run kept.
        let update = OnConflict::column(C::AutomationId)
            .update_columns([
                C::User,
                C::Schedule,
                C::TimeZone,
                C::Missed,
                C::Tasks,
                C::Paused,
                C::NextRunAt,
                C::DefinedAt,
            ])
            .to_owned();
        txn.insert::<automations::Entity>(rows, Some(update))
            .await?;
    }
    let keep_first =
        OnConflict::columns([assignments::Column::TaskId, assignments::Column::Generation])
            .do_nothing()
            .to_owned();
    txn.insert::<assignments::Entity>(decisions, Some(keep_first))
        .await?;
    {
        use replay_checkpoints::Column as C;
        let latest = OnConflict::columns([C::Topic, C::Partition])
            .update_columns([C::NextOffset, C::StartedFrom])
            .to_owned();
        let rows = checkpoints
            .into_iter()
            .map(
                |((topic, partition), (started_from, next))| replay_checkpoints::ActiveModel {
                    topic: Set(topic.to_owned()),
                    partition: Set(partition as i32),
                    next_offset: Set(i64::try_from(next).unwrap_or(i64::MAX)),
                    started_from: Set(started_from.to_owned()),
                },
            )
            .collect();
        txn.insert::<replay_checkpoints::Entity>(rows, Some(latest))
            .await?;
    }
    // Last, so that nothing after it can wait on another transaction while it holds the
    // order of positions.
    txn.hold_position_order().await?;
    let rows = fresh.iter().map(|c| c.activity.clone()).collect();
    txn.insert::<activity::Entity>(rows, None).await?;
    // Results in the order of `work`: a message's own, and `Applied` for decisions.
    let mut results = results.into_iter();
    Ok(work
        .iter()
        .map(|item| match item {
            Work::Message(_) => results.next().unwrap_or(Ok(Applied::Applied)),
            Work::Decisions(_) | Work::Checkpoint(_) => Ok(Applied::Applied),
        })
        .collect())
}

/// The message ids of `batch` that create a task whose id is taken.
async fn existing_tasks(
    txn: &mut impl Statements,
    batch: &[&Changes],
) -> Result<HashSet<String>, StoreError> {
    let creates: Vec<(&str, &str)> = batch
        .iter()
        .filter(|c| c.creates_task)
        .filter_map(|c| match c.task.as_ref().map(|t| &t.task_id) {
            Some(Set(id)) => Some((id.as_str(), c.message_id.as_str())),
            _ => None,
        })
        .collect();
    let ids: Vec<&str> = creates.iter().map(|(task_id, _)| *task_id).collect();
    let found = txn
        .found::<tasks::Entity>(tasks::Column::TaskId, &ids)
        .await?;
    Ok(creates
        .iter()
        .filter(|(task_id, _)| found.contains(*task_id))
        .map(|(_, message_id)| (*message_id).to_owned())
        .collect())
}
