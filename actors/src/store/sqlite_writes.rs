//! The state writer's statements on SQLite, run on its thread through the raw handle of one of
//! sea-orm's pooled connections: a prepared statement per table, a row at a time.
//!
//! Why raw: through sqlx each statement is a hop to the connection's worker thread (a channel
//! send, a wake-up, a mutex) and its SQL is built and parsed anew; a batch of 500
//! `task.created` spent more in those than in SQLite. The SQL is still sea-orm's own, built
//! from the entities and prepared once per batch for each table and set of columns; only its
//! execution is direct.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

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

/// Runs `write` in one immediate transaction on a connection of `db`'s pool, committed if it
/// succeeds and rolled back otherwise.
pub(super) async fn in_transaction<T>(
    db: &DatabaseConnection,
    write: impl AsyncFnOnce(&mut Direct<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let sqlx_error = |e: sqlx::Error| StoreError(e.to_string());
    let mut pooled = db
        .get_sqlite_connection_pool()
        .acquire()
        .await
        .map_err(sqlx_error)?;
    let (written, ended) = {
        let mut handle = pooled.lock_handle().await.map_err(sqlx_error)?;
        // SAFETY: the handle stays locked (sqlx does not touch it) until `connection`, made in
        // this block, is gone; a connection made from a handle does not close it when dropped.
        let connection =
            unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }?;
        let written = transaction(&connection, write).await;
        (written, connection.is_autocommit())
    };
    // A rollback that failed left the transaction open: the pool must not hand it out.
    if !ended {
        pooled.close_on_drop();
    }
    written
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
        // Held for the batch, since looking one up in the connection's cache hashes its SQL.
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
