//! Group commit for state writes: writes that arrive while a transaction commits share the
//! next one, each in its own savepoint, so one failing write does not undo its neighbours and
//! one fsync serves many messages.

use std::future::Future;
use std::pin::Pin;

use sea_orm::{DatabaseConnection, DatabaseTransaction, TransactionTrait};
use tokio::sync::{mpsc, oneshot};

use super::{Applied, StoreError};

/// Most writes sharing one transaction.
const MAX_BATCH: usize = 256;

/// The future of one write, borrowing its transaction.
pub(crate) type WriteFuture<'t> =
    Pin<Box<dyn Future<Output = Result<Applied, StoreError>> + Send + 't>>;

/// The future of one step of a write, borrowing its transaction.
pub(crate) type StepFuture<'t> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 't>>;

/// One write: what to do inside a transaction.
pub(crate) type Write = Box<dyn for<'t> FnOnce(&'t DatabaseTransaction) -> WriteFuture<'t> + Send>;

struct Job {
    write: Write,
    reply: oneshot::Sender<Result<Applied, StoreError>>,
}

/// Handle to the writer task; clones share it.
#[derive(Clone, Debug)]
pub(crate) struct Batcher {
    jobs: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the writer task on `db`.
    pub(crate) fn start(db: DatabaseConnection) -> Batcher {
        let (jobs, queue) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(db, queue));
        Batcher { jobs }
    }

    /// Runs `write` in the next batch; returns once that batch is committed.
    pub(crate) async fn write(&self, write: Write) -> Result<Applied, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError("the state writer has stopped".into());
        self.jobs
            .send(Job { write, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Makes a `Write` from a closure, pinning down its higher-ranked lifetime.
pub(crate) fn write<F>(f: F) -> Write
where
    F: for<'t> FnOnce(&'t DatabaseTransaction) -> WriteFuture<'t> + Send + 'static,
{
    Box::new(f)
}

async fn run(db: DatabaseConnection, mut queue: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let (writes, replies): (Vec<_>, Vec<_>) =
            jobs.drain(..).map(|j| (j.write, j.reply)).unzip();
        let results = commit(&db, writes).await;
        for (reply, result) in replies.into_iter().zip(results) {
            // The writer gave up waiting: its delivery is redelivered and found processed.
            let _ = reply.send(result);
        }
    }
}

/// Runs the writes in one transaction; every result fails if the commit does.
async fn commit(db: &DatabaseConnection, writes: Vec<Write>) -> Vec<Result<Applied, StoreError>> {
    let count = writes.len();
    let all_failed = |error: StoreError| vec![Err(error); count];
    let txn = match db.begin().await {
        Ok(txn) => txn,
        Err(error) => return all_failed(error.into()),
    };
    let mut results = Vec::with_capacity(count);
    for write in writes {
        results.push(in_savepoint(&txn, write).await);
    }
    match txn.commit().await {
        Ok(()) => results,
        Err(error) => all_failed(error.into()),
    }
}

async fn in_savepoint(txn: &DatabaseTransaction, write: Write) -> Result<Applied, StoreError> {
    let savepoint = txn.begin().await?;
    match write(&savepoint).await {
        Ok(applied) => {
            savepoint.commit().await?;
            Ok(applied)
        }
        Err(error) => {
            // Undo this write alone; if even that fails, the whole batch fails at commit.
            let _ = savepoint.rollback().await;
            Err(error)
        }
    }
}
