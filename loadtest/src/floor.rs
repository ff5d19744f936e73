//! The floor of the task scenarios: a plain rusqlite writer doing the rows a task's messages
//! write (bus log appends unless replayed, the task's insert and updates, processed ids, activity rows) in
//! batches on one connection, WAL and synchronous=FULL, as the node's durability demands,
//! into the node's own tables.
//! No actor, bus or ORM stands between the work and the disk: what the node could reach.

use std::path::Path;
use std::time::{Duration, Instant};

use migrations::{Migrator, MigratorTrait};
use rusqlite::{Connection, params};

use crate::report::{Latencies, Run, Timeline};

/// The rows one task's messages write.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Messages: each is a log append, a processed id and an activity row.
    pub messages: u32,
    /// Of those, the ones that update the task row (the first inserts it).
    pub updates: u32,
    /// Whether each message is appended to the bus's log too (not by a replay, which reads it).
    pub appends: bool,
}

/// `task.created` alone: one message that inserts the task.
pub const CREATED: Shape = Shape {
    messages: 1,
    updates: 0,
    appends: true,
};

/// A `task.created` replayed: its state rows without the log append.
pub const REPLAYED: Shape = Shape {
    appends: false,
    ..CREATED
};

/// create → assign → start → complete: four messages, an insert and three updates.
pub const LIFECYCLE: Shape = Shape {
    messages: 4,
    updates: 3,
    appends: true,
};

/// Tasks written per transaction.
const BATCH: u64 = 1000;

/// The bus's part: the log the messages are appended to.
const LOG: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = FULL;
    CREATE TABLE log (partition INTEGER, offset INTEGER, key TEXT, payload BLOB,
                      PRIMARY KEY (partition, offset));
";

/// Writes `tasks` tasks of `shape` into a fresh database at `path` with the node's own tables
/// (its migrations, indexes included); latency is each task's batch, from its first row to the
/// commit.
pub async fn run(path: &Path, tasks: u64, shape: Shape) -> anyhow::Result<Run> {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let store = actors::Store::connect(&url).await?;
    Migrator::up(store.connection(), None).await?;
    store.connection().clone().close().await?;
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || write(&path, tasks, shape)).await?
}

fn write(path: &Path, tasks: u64, shape: Shape) -> anyhow::Result<Run> {
    let mut db = Connection::open(path)?;
    db.execute_batch(LOG)?;
    let payload = vec![0x5a_u8; 200];
    let mut latencies = Latencies::new()?;
    let mut timeline = Timeline::default();
    let start = Instant::now();
    let mut offset = 0_i64;
    let mut first = 0;
    while first < tasks {
        let count = BATCH.min(tasks - first);
        let began = Instant::now();
        let txn = db.transaction()?;
        {
            let mut append = txn.prepare_cached(
                "INSERT INTO log (partition, offset, key, payload) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut insert = txn.prepare_cached(
                "INSERT INTO tasks (task_id, user, title, spec, priority, requirements, state,
                    agent_id, result, error, created_at, updated_at, contracts,
                    require_plan_approval, preferred_agent, attempts, max_attempts, inputs,
                    blocked_reason, note, generation)
                 VALUES (?1, 'load', ?1, 'true', 'normal', '{}', 'pending', NULL, NULL, NULL,
                    ?2, ?2, '[]', 0, NULL, 0, 3, '{}', NULL, NULL, 1)",
            )?;
            let mut update = txn.prepare_cached(
                "UPDATE tasks SET state = ?2, agent_id = 'w0', result = NULL, error = NULL,
                    updated_at = ?3, attempts = 1, inputs = '{}', blocked_reason = NULL,
                    note = NULL, generation = 1
                 WHERE task_id = ?1",
            )?;
            let mut processed = txn.prepare_cached(
                "INSERT INTO processed_messages (message_id, processed_at) VALUES (?1, ?2)",
            )?;
            let mut activity = txn.prepare_cached(
                "INSERT INTO activity (entity, message_id, kind, at, user)
                 VALUES (?1, ?2, 'task', ?3, 'load')",
            )?;
            for task in first..first + count {
                let id = format!("t{task}");
                for message in 0..shape.messages {
                    let message_id = format!("{id}-{message}");
                    if shape.appends {
                        append.execute(params![(task % 8) as i64, offset, id, payload])?;
                    }
                    offset += 1;
                    if message == 0 {
                        insert.execute(params![id, offset])?;
                    } else if message <= shape.updates {
                        update.execute(params![id, format!("state{message}"), offset])?;
                    }
                    processed.execute(params![message_id, offset])?;
                    activity.execute(params![format!("task/{id}"), message_id, offset])?;
                }
            }
        }
        txn.commit()?;
        for _ in 0..count {
            latencies.record(began.elapsed())?;
        }
        first += count;
        timeline.record(start.elapsed(), first);
    }
    Ok(Run {
        count: tasks,
        elapsed: start.elapsed().max(Duration::from_nanos(1)),
        latencies,
        timeline,
    })
}
