//! The state writer's statements on SQLite, run on its thread on a connection of its own to
//! the pool's database file: a prepared statement per table, a row at a time.
//!
//! Why raw: through sqlx each statement is a hop to the connection's worker thread (a channel
//! send, a wake-up, a mutex) and its SQL is built and parsed anew; a batch of 500
//! `task.created` spent more in those than in SQLite. Why a connection of its own: through the
//! pool a commit first waited for the reads on its connection (600 µs of a 1.3 ms commit at
//! 2k tasks/s), and the statements prepared were lost with each batch. The SQL is still sea-orm's
//! own, built from the entities and prepared once for each table and set of columns; only its
//! execution is direct. Why checkpoints on another thread: copying the WAL back into the
//! database in the commit that crossed SQLite's threshold held that commit, and every write
//! waiting on it, for the copy and its fsyncs.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::OpenFlags;
use rusqlite::types::{ToSql, ToSqlOutput, Value as Sqlite, ValueRef};
use sea_orm::sea_query::{OnConflict, Value};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbBackend, EntityTrait, Insert, Iterable,
    QueryFilter, QuerySelect, QueryTrait,
};

use super::StoreError;
use super::batch::Statements;

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError(error.to_string())
    }
}

/// Statements held by one connection: every table's insert and lookup, with room to spare.
const STATEMENTS: usize = 64;

/// The least time between two checkpoints while commits come: the WAL grows by a few MB at
/// most in between, and its copy into the database is not repeated for every commit.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// The writer's connection to a SQLite database, opened when first needed and again after a
/// transaction failed to end, and the thread that checkpoints what it commits.
pub(super) struct Writer {
    path: PathBuf,
    connection: Option<rusqlite::Connection>,
    checkpoints: Option<Checkpoints>,
}

impl Writer {
    /// The writer of the database file behind `db`'s pool.
    pub(super) fn of(db: &DatabaseConnection) -> Writer {
        let options = db.get_sqlite_connection_pool().connect_options();
        Writer {
            path: options.get_filename().to_owned(),
            connection: None,
            checkpoints: None,
        }
    }

    /// Runs `write` in one immediate transaction, committed if it succeeds and rolled back
    /// otherwise.
    pub(super) async fn in_transaction<T>(
        &mut self,
        write: impl AsyncFnOnce(&mut Direct<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.checkpoints.is_none() {
            self.checkpoints = Some(Checkpoints::start(&self.path)?);
        }
        let connection = match &mut self.connection {
            Some(connection) => connection,
            empty => empty.insert(open(&self.path)?),
        };
        let written = transaction(connection, write).await;
        // A rollback that failed left the transaction open: the next batch starts afresh.
        if !connection.is_autocommit() {
            self.connection = None;
        }
        if written.is_ok()
            && let Some(checkpoints) = &self.checkpoints
        {
            checkpoints.committed();
        }
        written
    }
}

/// A thread that copies the WAL of a database back into it after commits, on a connection of
/// its own, without waiting for readers or the writer (a passive checkpoint).
struct Checkpoints {
    /// Holds one "committed since" mark; dropped with the writer, which ends the thread.
    commits: mpsc::SyncSender<()>,
}

impl Checkpoints {
    fn start(path: &Path) -> Result<Checkpoints, StoreError> {
        let connection = open(path)?;
        let (commits, committed) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("state-checkpoints".into())
            .spawn(move || {
                while committed.recv().is_ok() {
                    let checkpoint = "PRAGMA wal_checkpoint(PASSIVE)";
                    if let Err(error) = connection.query_row(checkpoint, [], |_| Ok(())) {
                        tracing::warn!(%error, "a checkpoint of the state database failed");
                    }
                    std::thread::sleep(CHECKPOINT_EVERY);
                }
            })
            .map_err(|e| StoreError(format!("no thread for the state checkpoints: {e}")))?;
        Ok(Checkpoints { commits })
    }

    /// Asks for a checkpoint, unless one is asked for already.
    fn committed(&self) {
        let _ = self.commits.try_send(());
    }
}

/// A connection to `path` as the pool's are made (sqlx's defaults and the store's options):
/// WAL, every commit synced, foreign keys on, waiting out another writer's lock in short steps;
/// and no checkpoints of its own (`Checkpoints` does them).
fn open(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = rusqlite::Connection::open_with_flags(path, flags)?;
    connection.busy_handler(Some(super::sqlite_busy::wait_a_step))?;
    let journal: String =
        connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !journal.eq_ignore_ascii_case("wal") {
        return Err(StoreError(format!(
            "{} stays in journal mode {journal}, not WAL",
            path.display()
        )));
    }
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.pragma_update(None, "wal_autocheckpoint", 0)?;
    connection.set_prepared_statement_cache_capacity(STATEMENTS);
    Ok(connection)
}

async fn transaction<T>(
    connection: &rusqlite::Connection,
    write: impl AsyncFnOnce(&mut Direct<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let txn =
        rusqlite::Transaction::new_unchecked(connection, rusqlite::TransactionBehavior::Immediate)?;
    // Dropped uncommitted, the transaction rolls back.
    let written = write(&mut Direct(&txn)).await?;
    txn.commit()?;
    Ok(written)
}

/// Statements run directly on a connection in a transaction.
pub(super) struct Direct<'a>(&'a rusqlite::Connection);

impl Statements for Direct<'_> {
    async fn found<E: EntityTrait>(
        &mut self,
        column: E::Column,
        ids: &[&str],
    ) -> Result<HashSet<String>, StoreError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let sql = E::find()
            .select_only()
            .column(column)
            .filter(column.eq(""))
            .build(DbBackend::Sqlite)
            .sql;
        let mut lookup = self.0.prepare_cached(&sql)?;
        let mut found = HashSet::new();
        for id in ids {
            if lookup.exists([*id])? {
                found.insert((*id).to_owned());
            }
        }
        Ok(found)
    }

    /// Nothing to hold: a SQLite file has one writing transaction at a time.
    async fn hold_position_order(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn insert<E: EntityTrait>(
        &mut self,
        rows: Vec<E::ActiveModel>,
        on_conflict: Option<OnConflict>,
    ) -> Result<(), StoreError> {
        let columns: Vec<E::Column> = E::Column::iter().collect();
        if columns.len() > 64 {
            return Err(StoreError(format!(
                "`{}` has more columns than the writer can mark",
                E::default().table_name()
            )));
        }
        // A statement by the columns a row sets: rows of one table mostly set the same ones.
        // Held for the call, since looking one up in the connection's cache hashes its SQL.
        let mut inserts: HashMap<u64, rusqlite::CachedStatement<'_>> = HashMap::new();
        for mut row in rows {
            let set = columns
                .iter()
                .enumerate()
                .filter(|(_, c)| !row.is_not_set(**c))
                .fold(0u64, |mask, (i, _)| mask | 1 << i);
            let insert = match inserts.entry(set) {
                Entry::Occupied(held) => held.into_mut(),
                Entry::Vacant(vacant) => {
                    let sql = insert_sql::<E>(row.clone(), on_conflict.clone(), set)?;
                    vacant.insert(self.0.prepare_cached(&sql)?)
                }
            };
            // Taken in the order sea-orm writes the columns: the entity's.
            let values = columns
                .iter()
                .filter_map(|c| row.take(*c).into_value().map(Bound));
            insert.execute(rusqlite::params_from_iter(values))?;
        }
        Ok(())
    }
}

/// The SQL sea-orm writes to insert `row` (whose set columns are `set`), with its values as
/// parameters.
fn insert_sql<E: EntityTrait>(
    row: E::ActiveModel,
    on_conflict: Option<OnConflict>,
    set: u64,
) -> Result<String, StoreError> {
    let mut insert = Insert::<E::ActiveModel>::one(row);
    if let Some(on_conflict) = on_conflict {
        insert = insert.on_conflict(on_conflict);
    }
    let statement = insert.build(DbBackend::Sqlite);
    let parameters = statement.values.map_or(0, |v| v.0.len());
    // Every parameter is a column's value, or the values taken from the row would not fit.
    if parameters != set.count_ones() as usize {
        return Err(StoreError(format!(
            "an insert into `{}` has {parameters} parameters for {} columns",
            E::default().table_name(),
            set.count_ones()
        )));
    }
    Ok(statement.sql)
}

/// A column's value, bound as SQLite stores what sqlx would have bound.
struct Bound(Value);

impl ToSql for Bound {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let integer = |v: Option<i64>| v.map_or(Sqlite::Null, Sqlite::Integer);
        Ok(match &self.0 {
            Value::String(text) => match text {
                Some(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
                None => ToSqlOutput::Owned(Sqlite::Null),
            },
            Value::BigInt(v) => ToSqlOutput::Owned(integer(*v)),
            Value::Int(v) => ToSqlOutput::Owned(integer(v.map(i64::from))),
            Value::Bool(v) => ToSqlOutput::Owned(integer(v.map(i64::from))),
            Value::Double(v) => ToSqlOutput::Owned(v.map_or(Sqlite::Null, Sqlite::Real)),
            Value::Bytes(v) => match v {
                Some(bytes) => ToSqlOutput::Borrowed(ValueRef::Blob(bytes)),
                None => ToSqlOutput::Owned(Sqlite::Null),
            },
            other => {
                let unsupported = format!("the state writer binds no {other:?}");
                return Err(rusqlite::Error::ToSqlConversionFailure(unsupported.into()));
            }
        })
    }
}
