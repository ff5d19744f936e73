//! The SQLite log: one writer thread that group-commits, and reads through a small pool.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use tokio::sync::{mpsc, oneshot, watch};

use super::headers;
use crate::bus::{BusError, OutMessage, PublishError, Record, ReplayFrom};

/// Operations the writer thread carries out, in arrival order, a batch per transaction.
enum Op {
    Append {
        topic: String,
        partition: u32,
        message: OutMessage,
        reply: oneshot::Sender<Result<u64, PublishError>>,
    },
    Commit {
        group: String,
        topic: String,
        partition: u32,
        next_offset: u64,
    },
    CreateTopic {
        topic: String,
        partitions: u32,
        reply: oneshot::Sender<Result<(u32, watch::Receiver<u64>), BusError>>,
    },
    Flush {
        reply: oneshot::Sender<Result<(), BusError>>,
    },
}

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 1024;

/// Records of a partition kept in memory after their commit: a consumer's prefetch.
const RECENT: usize = 1024;

/// Bytes of payload and key a partition keeps in memory at most: envelopes may be large.
const RECENT_BYTES: usize = 4 << 20;

/// Handle to the log; clones share the writer and the pool.
#[derive(Clone)]
pub(crate) struct Store {
    pool: SqlitePool,
    writer: mpsc::Sender<Op>,
    committed: Committed,
}

/// Every partition's end as committed, by topic: readers skip partitions with nothing new,
/// and a consumer that keeps up reads the latest records from memory, not from the file.
type Committed = Arc<RwLock<Tails>>;

/// Each partition's tail, by topic.
type Tails = HashMap<String, HashMap<u32, Tail>>;

/// The end of one partition: its next offset and its last records, up to `RECENT` of them
/// and `RECENT_BYTES`.
#[derive(Default)]
struct Tail {
    end: u64,
    recent: VecDeque<Record>,
    bytes: usize,
}

/// What a record holds in memory, roughly.
fn size(record: &Record) -> usize {
    record.payload.len() + record.key.len()
}

impl Tail {
    /// Adds the record committed at the end.
    fn push(&mut self, record: Record) {
        self.end = record.offset.map_or(self.end, |o| o + 1);
        self.bytes += size(&record);
        self.recent.push_back(record);
        while self.recent.len() > RECENT || self.bytes > RECENT_BYTES {
            match self.recent.pop_front() {
                Some(oldest) => self.bytes -= size(&oldest),
                None => break,
            }
        }
    }

    /// Up to `limit` records from `from` on, unless some of them are no longer held.
    fn read(&self, from: u64, limit: u32) -> Option<Vec<Record>> {
        let first = self.end.checked_sub(self.recent.len() as u64)?;
        let skip = usize::try_from(from.checked_sub(first)?).ok()?;
        Some(
            self.recent
                .iter()
                .skip(skip)
                .take(limit as usize)
                .cloned()
                .collect(),
        )
    }
}

/// A topic found on disk at open: name, partitions, append notifications.
pub(crate) type OpenTopic = (String, u32, watch::Receiver<u64>);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    headers BLOB NOT NULL,
    ts INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS records_position ON records (topic, partition, offset);
CREATE TABLE IF NOT EXISTS group_offsets (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)
);
";

fn storage(error: impl std::fmt::Display) -> BusError {
    BusError::Broker(format!("embedded log: {error}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    /// Opens the log, creating the file and tables if needed, and starts the writer.
    pub(crate) async fn open(path: &Path) -> Result<(Store, Vec<OpenTopic>), BusError> {
        let committed = Committed::default();
        let (writer, topics) = {
            let (path, committed) = (path.to_owned(), committed.clone());
            tokio::task::spawn_blocking(move || Writer::open(&path, committed))
                .await
                .map_err(storage)??
        };
        let options = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10))
            .read_only(true)
            // A read's rows leave sqlx's worker thread in one go: at its default of 50, a
            // page of a replay waited ten times for the reading task to be polled, which on a
            // node busy applying what it read tripled the read.
            .row_buffer_size(4096);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(storage)?;
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        std::thread::Builder::new()
            .name("bus-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| storage(format!("no thread for the writer: {e}")))?;
        Ok((
            Store {
                pool,
                writer: tx,
                committed,
            },
            topics,
        ))
    }

    async fn request<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, BusError>>) -> Op,
    ) -> Result<T, BusError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(op(reply))
            .await
            .map_err(|_| BusError::Closed)?;
        answer.await.map_err(|_| BusError::Closed)?
    }

    /// Creates a topic (if absent); returns its partition count as stored.
    pub(crate) async fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
    ) -> Result<(u32, watch::Receiver<u64>), BusError> {
        self.request(|reply| Op::CreateTopic {
            topic: topic.to_owned(),
            partitions,
            reply,
        })
        .await
    }

    /// Appends to a partition; returns the offset once the record is durable.
    pub(crate) async fn append(
        &self,
        topic: &str,
        partition: u32,
        message: OutMessage,
    ) -> Result<u64, PublishError> {
        let (reply, answer) = oneshot::channel();
        let op = Op::Append {
            topic: topic.to_owned(),
            partition,
            message,
            reply,
        };
        if let Err(mpsc::error::SendError(op)) = self.writer.send(op).await {
            let Op::Append { message, .. } = op else {
                unreachable!("we sent an append")
            };
            return Err(PublishError {
                message,
                error: BusError::Closed,
            });
        }
        // The writer always answers before dropping an append; a dropped reply means it died
        // mid-batch, and then the message may or may not be stored, which at-least-once allows.
        answer.await.unwrap_or_else(|_| {
            Err(PublishError {
                message: OutMessage {
                    key: String::new(),
                    payload: Vec::new(),
                    headers: Vec::new(),
                },
                error: BusError::Closed,
            })
        })
    }

    /// Records a group's next offset for a partition; durable with the writer's next batch.
    pub(crate) async fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> Result<(), BusError> {
        let op = Op::Commit {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
            next_offset,
        };
        self.writer.send(op).await.map_err(|_| BusError::Closed)
    }

    /// Waits until everything sent to the writer so far is durable.
    pub(crate) async fn flush(&self) -> Result<(), BusError> {
        self.request(|reply| Op::Flush { reply }).await
    }

    /// A group's committed next offsets on a topic, by partition.
    pub(crate) async fn committed(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<HashMap<u32, u64>, BusError> {
        let rows = sqlx::query(
            "SELECT partition, next_offset FROM group_offsets WHERE grp = ? AND topic = ?",
        )
        .bind(group)
        .bind(topic)
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<i64, _>(0) as u32, r.get::<i64, _>(1) as u64))
            .collect())
    }

    /// The next offset of a partition (0 if it has no records), as of the last commit.
    pub(crate) fn end(&self, topic: &str, partition: u32) -> u64 {
        self.tail(topic, partition, |tail| tail.end).unwrap_or(0)
    }

    /// What `read` finds in the tail of a partition, if the writer committed to it.
    fn tail<T>(&self, topic: &str, partition: u32, read: impl FnOnce(&Tail) -> T) -> Option<T> {
        let committed = self
            .committed
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        committed.get(topic)?.get(&partition).map(read)
    }

    /// Up to `limit` records of one partition from `from` on: from memory if the partition's
    /// tail holds them, else from the file.
    pub(crate) async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        limit: u32,
    ) -> Result<Vec<Record>, BusError> {
        match self.tail(topic, partition, |tail| tail.read(from, limit)) {
            Some(Some(records)) => Ok(records),
            _ => self.fetch_stored(topic, partition, from, limit).await,
        }
    }

    /// Up to `limit` records of one partition from `from` on, read from the file.
    async fn fetch_stored(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        limit: u32,
    ) -> Result<Vec<Record>, BusError> {
        let rows = sqlx::query(
            "SELECT seq, partition, offset, key, payload, headers, ts FROM records
             WHERE topic = ? AND partition = ? AND offset >= ? ORDER BY offset LIMIT ?",
        )
        .bind(topic)
        .bind(i64::from(partition))
        .bind(from as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        Ok(rows.iter().map(|r| to_record(topic, r).1).collect())
    }

    /// Up to `limit` records of a topic in publish order after `after_seq`, up to `end_seq`,
    /// with the sequence number of the last one read (filtered out or not).
    pub(crate) async fn scan(
        &self,
        topic: &str,
        after_seq: i64,
        end_seq: i64,
        from: &ReplayFrom,
        limit: u32,
    ) -> Result<(Vec<Record>, Option<i64>), BusError> {
        let min_ts = match from {
            ReplayFrom::Time(t) => *t as i64,
            _ => 0,
        };
        let rows = sqlx::query(
            // `+topic`: a range of `seq` read in order, where SQLite would otherwise read the
            // topic's every record through its position index and sort them, for each page.
            "SELECT seq, partition, offset, key, payload, headers, ts FROM records
             WHERE +topic = ? AND seq > ? AND seq <= ? AND ts >= ?
             ORDER BY seq LIMIT ?",
        )
        .bind(topic)
        .bind(after_seq)
        .bind(end_seq)
        .bind(min_ts)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        let records = rows.iter().map(|r| to_record(topic, r));
        let last = records.clone().next_back().map(|(seq, _)| seq);
        let wanted = records
            .filter(|(_, r)| match from {
                ReplayFrom::Offsets(offsets) => {
                    r.offset.unwrap_or(0) >= offsets.get(&r.partition).copied().unwrap_or(0)
                }
                _ => true,
            })
            .map(|(_, r)| r)
            .collect();
        Ok((wanted, last))
    }

    /// How many records `scan` finds from `from` up to sequence number `end_seq`.
    pub(crate) async fn count(
        &self,
        topic: &str,
        end_seq: i64,
        from: &ReplayFrom,
    ) -> Result<u64, BusError> {
        let min_ts = match from {
            ReplayFrom::Time(t) => *t as i64,
            _ => 0,
        };
        let count = |sql: &'static str| sqlx::query(sql).bind(topic).bind(end_seq).bind(min_ts);
        let all: i64 =
            count("SELECT COUNT(*) FROM records WHERE topic = ? AND seq <= ? AND ts >= ?")
                .fetch_one(&self.pool)
                .await
                .map_err(storage)?
                .get(0);
        let mut passed_over = 0i64;
        if let ReplayFrom::Offsets(offsets) = from {
            for (partition, offset) in offsets {
                let before: i64 = count(
                    "SELECT COUNT(*) FROM records WHERE topic = ? AND seq <= ? AND ts >= ?
                     AND partition = ? AND offset < ?",
                )
                .bind(i64::from(*partition))
                .bind(i64::try_from(*offset).unwrap_or(i64::MAX))
                .fetch_one(&self.pool)
                .await
                .map_err(storage)?
                .get(0);
                passed_over += before;
            }
        }
        Ok((all - passed_over).max(0) as u64)
    }

    /// The sequence number of the topic's newest record (0 when empty).
    pub(crate) async fn last_seq(&self, topic: &str) -> Result<i64, BusError> {
        sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM records WHERE topic = ?")
            .bind(topic)
            .fetch_one(&self.pool)
            .await
            .map(|r| r.get(0))
            .map_err(storage)
    }

    /// Checks that the file can be read.
    pub(crate) async fn ping(&self) -> Result<(), BusError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(storage)
    }
}

fn to_record(topic: &str, row: &sqlx::sqlite::SqliteRow) -> (i64, Record) {
    let headers: Vec<u8> = row.get(5);
    (
        row.get(0),
        Record {
            topic: topic.to_owned(),
            partition: row.get::<i64, _>(1) as u32,
            offset: Some(row.get::<i64, _>(2) as u64),
            key: row.get(3),
            payload: row.get(4),
            headers: headers::decode(&headers),
            timestamp: row.get::<i64, _>(6) as u64,
        },
    )
}

/// The single writer, on a thread of its own: owns the write connection and the next offset
/// of every partition. Its statements run on that thread, not through sqlx, where each was a
/// hop to the connection's worker thread and back.
struct Writer {
    conn: rusqlite::Connection,
    next: HashMap<(String, u32), u64>,
    watches: HashMap<String, watch::Sender<u64>>,
    committed: Committed,
}

impl Writer {
    /// Opens the log's file for writing (creating it and its tables if needed) and reads what
    /// it holds: the topics, and every partition's next offset.
    fn open(path: &Path, committed: Committed) -> Result<(Writer, Vec<OpenTopic>), BusError> {
        let conn = rusqlite::Connection::open(path).map_err(storage)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(storage)?;
        let journal: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(storage)?;
        if !journal.eq_ignore_ascii_case("wal") {
            return Err(storage(format!(
                "{} stays in journal mode {journal}, not WAL",
                path.display()
            )));
        }
        // FULL: a publish that returned survives power loss, not just a process crash.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(storage)?;
        conn.execute_batch(SCHEMA).map_err(storage)?;
        let mut writer = Writer {
            conn,
            next: HashMap::new(),
            watches: HashMap::new(),
            committed,
        };
        let topics: Vec<(String, i64)> = writer
            .conn
            .prepare("SELECT name, partitions FROM topics")
            .and_then(|mut read| {
                read.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(storage)?;
        let topics = topics
            .into_iter()
            .map(|(name, partitions)| {
                let appended = writer.watch(&name);
                (name, partitions as u32, appended)
            })
            .collect();
        let ends: Vec<(String, u32, i64)> = writer
            .conn
            .prepare(
                "SELECT topic, partition, MAX(offset) + 1 FROM records GROUP BY topic, partition",
            )
            .and_then(|mut read| {
                read.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(storage)?;
        for (topic, partition, next) in ends {
            writer.next.insert((topic, partition), next as u64);
        }
        {
            let mut tails = writer.tails();
            for ((topic, partition), next) in &writer.next {
                let partitions = tails.entry(topic.clone()).or_default();
                partitions.entry(*partition).or_default().end = *next;
            }
        }
        Ok((writer, topics))
    }

    fn tails(&self) -> std::sync::RwLockWriteGuard<'_, Tails> {
        self.committed
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Shows readers the records `fresh`, just committed: each moves its partition's end.
    fn publish(&self, fresh: Vec<Record>) {
        let mut tails = self.tails();
        for record in fresh {
            // Looked up before it is made: a topic's name is not copied for every record.
            let partitions = match tails.get_mut(&record.topic) {
                Some(partitions) => partitions,
                None => tails.entry(record.topic.clone()).or_default(),
            };
            partitions.entry(record.partition).or_default().push(record);
        }
    }

    fn watch(&mut self, topic: &str) -> watch::Receiver<u64> {
        self.watches
            .entry(topic.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn run(mut self, mut ops: mpsc::Receiver<Op>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while ops.blocking_recv_many(&mut batch, MAX_BATCH) > 0 {
            self.write(std::mem::take(&mut batch));
        }
    }

    /// Writes one batch in one transaction, then answers every request in it.
    fn write(&mut self, batch: Vec<Op>) {
        let now = now_ms();
        let mut next = HashMap::new();
        match self.transact(&batch, &mut next, now) {
            Ok(answers) => {
                self.next.extend(next);
                self.committed_batch(batch, answers, now);
            }
            Err(error) => failed(batch, &error),
        }
    }

    /// Shows readers what `batch` appended, then answers its requests and wakes the
    /// consumers of the topics it appended to.
    fn committed_batch(&mut self, batch: Vec<Op>, answers: Vec<u64>, now: u64) {
        let mut fresh = Vec::new();
        let mut appended = Vec::new();
        let mut flushed = Vec::new();
        for (op, answer) in batch.into_iter().zip(answers) {
            match op {
                Op::Append {
                    topic,
                    partition,
                    message,
                    reply,
                } => {
                    fresh.push(Record {
                        topic,
                        partition,
                        offset: Some(answer),
                        key: message.key,
                        payload: message.payload,
                        headers: message.headers,
                        timestamp: now,
                    });
                    appended.push((reply, answer));
                }
                Op::CreateTopic { topic, reply, .. } => {
                    let _ = reply.send(Ok((answer as u32, self.watch(&topic))));
                }
                Op::Flush { reply } => flushed.push(reply),
                Op::Commit { .. } => {}
            }
        }
        let mut touched: Vec<String> = fresh.iter().map(|r| r.topic.clone()).collect();
        self.publish(fresh);
        for (reply, offset) in appended {
            let _ = reply.send(Ok(offset));
        }
        for reply in flushed {
            let _ = reply.send(Ok(()));
        }
        touched.sort_unstable();
        touched.dedup();
        for topic in touched {
            if let Some(watch) = self.watches.get(&topic) {
                watch.send_modify(|n| *n += 1);
            }
        }
    }

    /// The transaction of one batch: an answer per op (an append's offset, a topic's
    /// partition count, 0 otherwise); the partitions' new next offsets go into `next`.
    fn transact(
        &mut self,
        batch: &[Op],
        next: &mut HashMap<(String, u32), u64>,
        now: u64,
    ) -> Result<Vec<u64>, BusError> {
        let now = now as i64;
        // A rollback that failed left a transaction open: end it, or no batch could begin.
        if !self.conn.is_autocommit() {
            self.conn.execute_batch("ROLLBACK").map_err(storage)?;
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(storage)?;
        let mut answers = Vec::with_capacity(batch.len());
        for op in batch {
            let answer = match op {
                Op::Append {
                    topic,
                    partition,
                    message,
                    ..
                } => {
                    let position = (topic.clone(), *partition);
                    let stored = self.next.get(&position).copied().unwrap_or(0);
                    let offset = next.entry(position).or_insert(stored);
                    let at = *offset;
                    *offset += 1;
                    tx.prepare_cached(
                        "INSERT INTO records (topic, partition, offset, key, payload, headers, ts)
                         VALUES (?, ?, ?, ?, ?, ?, ?)",
                    )
                    .and_then(|mut insert| {
                        insert.execute(rusqlite::params![
                            topic,
                            partition,
                            at as i64,
                            message.key,
                            message.payload,
                            headers::encode(&message.headers),
                            now
                        ])
                    })
                    .map_err(storage)?;
                    at
                }
                Op::Commit {
                    group,
                    topic,
                    partition,
                    next_offset,
                } => {
                    tx.prepare_cached(
                        "INSERT INTO group_offsets (grp, topic, partition, next_offset)
                         VALUES (?, ?, ?, ?)
                         ON CONFLICT (grp, topic, partition)
                         DO UPDATE SET next_offset = MAX(next_offset, excluded.next_offset)",
                    )
                    .and_then(|mut upsert| {
                        upsert.execute(rusqlite::params![
                            group,
                            topic,
                            partition,
                            *next_offset as i64
                        ])
                    })
                    .map_err(storage)?;
                    0
                }
                Op::CreateTopic {
                    topic, partitions, ..
                } => {
                    tx.execute(
                        "INSERT OR IGNORE INTO topics (name, partitions) VALUES (?, ?)",
                        rusqlite::params![topic, partitions],
                    )
                    .map_err(storage)?;
                    tx.query_row(
                        "SELECT partitions FROM topics WHERE name = ?",
                        [topic],
                        |row| row.get::<_, i64>(0),
                    )
                    .map_err(storage)? as u64
                }
                Op::Flush { .. } => 0,
            };
            answers.push(answer);
        }
        tx.commit().map_err(storage)?;
        Ok(answers)
    }
}

/// Tells every request of `batch` that it failed with `error`.
fn failed(batch: Vec<Op>, error: &BusError) {
    for op in batch {
        match op {
            Op::Append { message, reply, .. } => {
                let error = error.clone();
                let _ = reply.send(Err(PublishError { message, error }));
            }
            Op::CreateTopic { reply, .. } => {
                let _ = reply.send(Err(error.clone()));
            }
            Op::Flush { reply } => {
                let _ = reply.send(Err(error.clone()));
            }
            Op::Commit { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{RECENT, RECENT_BYTES, Store};
    use crate::bus::OutMessage;

    fn message(i: usize) -> OutMessage {
        OutMessage {
            key: format!("k{i}"),
            payload: vec![i as u8; 1 + i % 7],
            headers: vec![("n".to_owned(), i.to_string())],
        }
    }

    /// Offsets of partition 0 served from memory, given the records appended to it.
    async fn from_memory(store: &Store, appended: u64) -> Vec<u64> {
        let mut served = Vec::new();
        let first = appended - RECENT as u64;
        for from in [0, first - 1, first, appended - 1, appended] {
            let read = store.tail("t", 0, |tail| tail.read(from, 64)).flatten();
            if read.is_some() {
                served.push(from);
            }
            let stored = store.fetch_stored("t", 0, from, 64).await.unwrap();
            assert_eq!(store.fetch("t", 0, from, 64).await.unwrap(), stored);
            if let Some(read) = read {
                assert_eq!(read, stored, "from {from}");
            }
        }
        served
    }

    #[tokio::test]
    async fn a_partition_s_latest_records_are_read_from_memory_as_the_file_holds_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.sqlite");
        let (store, _) = Store::open(&path).await.unwrap();
        store.create_topic("t", 2).await.unwrap();
        let appended = 2 * (RECENT + 300);
        let appends = (0..appended).map(|i| store.append("t", (i % 2) as u32, message(i)));
        for offset in futures::future::join_all(appends).await {
            offset.unwrap();
        }
        let appended = (appended / 2) as u64;
        assert_eq!(store.end("t", 0), appended);
        // The older half is read from the file; the latest, and the end, from memory.
        assert_eq!(
            from_memory(&store, appended).await,
            [appended - RECENT as u64, appended - 1, appended]
        );
        store.flush().await.unwrap();
        drop(store);

        // Reopened, nothing is in memory but each partition's end.
        let (store, _) = Store::open(&path).await.unwrap();
        assert_eq!(store.end("t", 0), appended);
        assert_eq!(from_memory(&store, appended).await, [appended]);
    }

    #[tokio::test]
    async fn a_partition_keeps_no_more_than_its_bytes_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join("bus.sqlite")).await.unwrap();
        store.create_topic("t", 1).await.unwrap();
        let big = |i: usize| OutMessage {
            key: format!("k{i}"),
            payload: vec![i as u8; RECENT_BYTES / 4],
            headers: Vec::new(),
        };
        for i in 0..10 {
            store.append("t", 0, big(i)).await.unwrap();
        }
        let held = store.tail("t", 0, |tail| (tail.recent.len(), tail.bytes));
        assert_eq!(held, Some((3, 3 * (RECENT_BYTES / 4 + 2))));
        // The older ones are read from the file, as written.
        assert!(store.tail("t", 0, |t| t.read(6, 1)).flatten().is_none());
        assert_eq!(
            store.fetch("t", 0, 6, 1).await.unwrap()[0].payload,
            big(6).payload
        );
        assert_eq!(
            store.fetch("t", 0, 7, 1).await.unwrap()[0].payload,
            big(7).payload
        );
    }
}
