//! Replay: the events topic read again from a position, each record handed to its mailbox
//! through the same router and mailboxes as the live ingress, so state is rebuilt by the one
//! implementation of the rules. The node's bus during a replay is a `Quiet` bus: what the
//! mailboxes would publish outward (derived events, calendar outcomes) is counted, not sent;
//! those events are on the topic already and are replayed in their turn.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use broker_adapters::{
    Bus, BusError, Delivery, OutMessage, Outcome, PublishError, Receipt, Replay, ReplayFrom,
    Settle, SubscribeOptions, Subscription,
};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::NodeContext;
use crate::shells::router::{self, RouteError};
use crate::store::Store;

/// Records in the mailboxes' hands at once, at most.
const IN_FLIGHT: usize = 4096;

/// A bus that reads from `inner` and publishes nothing, counting what it was asked to publish.
pub struct Quiet {
    inner: Arc<dyn Bus>,
    suppressed: AtomicU64,
}

impl Quiet {
    /// Reads through `inner`.
    pub fn new(inner: Arc<dyn Bus>) -> Quiet {
        Quiet {
            inner,
            suppressed: AtomicU64::new(0),
        }
    }

    /// Publishes suppressed so far.
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Bus for Quiet {
    async fn create_topic(&self, _topic: &str, _partitions: u32) -> Result<(), BusError> {
        Ok(())
    }

    async fn partitions(&self, topic: &str) -> Result<u32, BusError> {
        self.inner.partitions(topic).await
    }

    async fn publish(&self, _topic: &str, _message: OutMessage) -> Result<Receipt, PublishError> {
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        Ok(Receipt {
            partition: None,
            offset: None,
        })
    }

    async fn subscribe(
        &self,
        topic: &str,
        _group: &str,
        _options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, BusError> {
        Err(BusError::Broker(format!(
            "a replay reads `{topic}` with `replay`, never as a group member"
        )))
    }

    async fn replay(&self, topic: &str, from: ReplayFrom) -> Result<Box<dyn Replay>, BusError> {
        self.inner.replay(topic, from).await
    }

    async fn lag(&self, topic: &str, group: &str) -> Result<BTreeMap<u32, u64>, BusError> {
        self.inner.lag(topic, group).await
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.inner.ping().await
    }

    async fn close(&self) -> Result<(), BusError> {
        Ok(())
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Records read.
    pub records: u64,
    /// Records their mailboxes applied (or found applied before).
    pub applied: u64,
    /// Records refused or undecodable: dead-lettered when they were live, left out here.
    pub refused: u64,
    /// Records a mailbox could not apply now (a database error): a second run applies them.
    pub failed: u64,
}

/// How far a replay has read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Records read so far.
    pub read: u64,
    /// Records the replay reads in all, when the bus told it beforehand.
    pub expected: Option<u64>,
}

/// How often the checkpoint is written to the target database: after this long or this many
/// records, whichever comes first.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
const CHECKPOINT_RECORDS: u64 = 256;

/// Where a resumed replay goes on from: `from`, past what `checkpoint` says is settled. A
/// replay from a time starts at that time again (a checkpoint names only the partitions it
/// read, and the others would start at their first record).
pub fn resume_from(from: ReplayFrom, checkpoint: &BTreeMap<u32, u64>) -> ReplayFrom {
    match from {
        ReplayFrom::Start if !checkpoint.is_empty() => ReplayFrom::Offsets(checkpoint.clone()),
        ReplayFrom::Offsets(mut offsets) => {
            for (partition, next) in checkpoint {
                let at = offsets.entry(*partition).or_insert(0);
                *at = (*at).max(*next);
            }
            ReplayFrom::Offsets(offsets)
        }
        from => from,
    }
}

/// The offsets of one partition read and not settled yet, and the next to read.
#[derive(Debug, Default)]
struct Lane {
    unsettled: BTreeSet<u64>,
    next: u64,
    /// A record without an offset was read: this partition has no checkpoint.
    blind: bool,
}

/// Tells the replay how one record fared.
struct Told {
    tally: Arc<Tally>,
    /// The record's partition and offset, when it has one.
    position: Option<(u32, u64)>,
}

struct Tally {
    applied: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    window: Semaphore,
    lanes: Mutex<BTreeMap<u32, Lane>>,
}

impl Tally {
    fn new(window: usize) -> Arc<Tally> {
        Arc::new(Tally {
            applied: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            window: Semaphore::new(window),
            lanes: Mutex::new(BTreeMap::new()),
        })
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Lane>> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes a record of `partition` at `offset` read; what tells how it fared.
    fn read(self: &Arc<Self>, partition: u32, offset: Option<u64>) -> Told {
        let mut lanes = self.lanes();
        let lane = lanes.entry(partition).or_default();
        match offset {
            Some(offset) => {
                lane.unsettled.insert(offset);
                lane.next = offset + 1;
            }
            None => lane.blind = true,
        }
        Told {
            tally: self.clone(),
            position: offset.map(|o| (partition, o)),
        }
    }

    /// Each partition's first offset not settled yet: everything before it is applied or
    /// refused. A record that failed stays unsettled, so a resumed replay reads it again.
    fn checkpoint(&self) -> BTreeMap<u32, u64> {
        self.lanes()
            .iter()
            .filter(|(_, lane)| !lane.blind)
            .map(|(p, lane)| (*p, lane.unsettled.first().copied().unwrap_or(lane.next)))
            .collect()
    }
}

impl Settle for Told {
    fn settle(self: Box<Self>, outcome: Outcome) {
        let failed = matches!(outcome, Outcome::Nack(_) | Outcome::Retry(_));
        let counter = match outcome {
            Outcome::Ack => &self.tally.applied,
            Outcome::DeadLetter(_) => &self.tally.refused,
            Outcome::Nack(_) | Outcome::Retry(_) => &self.tally.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        // A record that failed stays unsettled: the checkpoint never passes it.
        if !failed
            && let Some((partition, offset)) = self.position
            && let Some(lane) = self.tally.lanes().get_mut(&partition)
        {
            lane.unsettled.remove(&offset);
        }
        self.tally.window.add_permits(1);
    }
}

/// Replays the events topic from `from` through the mailboxes of `ctx` (whose bus is a
/// `Quiet` over `source`), telling `progress` how far it read; the checkpoint of what is
/// settled is kept in `ctx`'s store as it goes, for `resume_from`, with `started_from`, the
/// start of the replay it belongs to.
pub async fn replay(
    ctx: &NodeContext,
    source: &dyn Bus,
    from: ReplayFrom,
    started_from: &str,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Replayed, BusError> {
    let tally = Tally::new(IN_FLIGHT);
    let mut reader = source.replay(schemas::EVENTS_TOPIC, from).await?;
    let expected = reader.expected();
    let mut read = 0u64;
    let mut saved = Instant::now();
    // The checkpoint being written: the reading goes on meanwhile, and the next is taken
    // once it is written.
    let mut saving: Option<JoinHandle<Result<(), BusError>>> = None;
    while let Some(record) = reader.next().await? {
        read += 1;
        progress(Progress { read, expected });
        let due = read.is_multiple_of(CHECKPOINT_RECORDS) || saved.elapsed() >= CHECKPOINT_EVERY;
        if due && saving.as_ref().is_none_or(JoinHandle::is_finished) {
            if let Some(previous) = saving.take() {
                joined(previous).await?;
            }
            let (store, checkpoint) = (ctx.store.clone(), tally.checkpoint());
            let started_from = started_from.to_owned();
            saving = Some(tokio::spawn(async move {
                save_checkpoint(&store, &started_from, &checkpoint).await
            }));
            saved = Instant::now();
        }
        tally
            .window
            .acquire()
            .await
            .map_err(|e| BusError::Broker(e.to_string()))?
            .forget();
        let envelope = match schemas::decode(&record.payload) {
            Ok(envelope) => envelope,
            Err(_) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                tally.window.add_permits(1);
                continue;
            }
        };
        let told = tally.read(record.partition, record.offset);
        let delivery = Delivery::new(record, 1, Box::new(told));
        match router::try_deliver(ctx, Box::new(envelope), delivery).map_err(|u| *u) {
            Ok(()) => {}
            // The first record of a shard: started, then handed over, before the next.
            Err((RouteError::NotStarted(_), envelope, delivery)) => {
                router::start_and_deliver(ctx, envelope, delivery).await;
            }
            Err((error, _, delivery)) => router::settle_unroutable(error, delivery),
        }
    }
    // Every record settled: the whole window is back.
    let all = tally
        .window
        .acquire_many(IN_FLIGHT as u32)
        .await
        .map_err(|e| BusError::Broker(e.to_string()))?;
    drop(all);
    if let Some(previous) = saving {
        joined(previous).await?;
    }
    save_checkpoint(&ctx.store, started_from, &tally.checkpoint()).await?;
    Ok(Replayed {
        records: read,
        applied: tally.applied.load(Ordering::Relaxed),
        refused: tally.refused.load(Ordering::Relaxed),
        failed: tally.failed.load(Ordering::Relaxed),
    })
}

async fn save_checkpoint(
    store: &Store,
    started_from: &str,
    checkpoint: &BTreeMap<u32, u64>,
) -> Result<(), BusError> {
    store
        .save_replay_checkpoint(schemas::EVENTS_TOPIC, started_from, checkpoint)
        .await
        .map_err(|e| BusError::Broker(format!("saving the replay's checkpoint: {e}")))
}

/// The outcome of a checkpoint's write.
async fn joined(saving: JoinHandle<Result<(), BusError>>) -> Result<(), BusError> {
    saving
        .await
        .map_err(|e| BusError::Broker(format!("saving the replay's checkpoint: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_goes_on_past_the_checkpoint_and_never_before_the_start_asked_for() {
        let checkpoint = BTreeMap::from([(0, 10), (2, 4)]);
        assert_eq!(
            resume_from(ReplayFrom::Start, &checkpoint),
            ReplayFrom::Offsets(checkpoint.clone())
        );
        assert_eq!(
            resume_from(ReplayFrom::Start, &BTreeMap::new()),
            ReplayFrom::Start
        );
        assert_eq!(
            resume_from(ReplayFrom::Offsets([(0, 20), (1, 3)].into()), &checkpoint),
            ReplayFrom::Offsets([(0, 20), (1, 3), (2, 4)].into())
        );
        assert_eq!(
            resume_from(ReplayFrom::Time(5), &checkpoint),
            ReplayFrom::Time(5)
        );
    }

    #[test]
    fn the_checkpoint_stops_at_the_first_record_not_settled() {
        let tally = Tally::new(8);
        let told = |offset| Box::new(tally.read(0, Some(offset)));
        let (a, b, c) = (told(5), told(6), told(7));
        assert_eq!(tally.checkpoint(), BTreeMap::from([(0, 5)]));
        b.settle(Outcome::Ack);
        assert_eq!(
            tally.checkpoint(),
            BTreeMap::from([(0, 5)]),
            "5 is not settled"
        );
        a.settle(Outcome::DeadLetter("refused".into()));
        assert_eq!(tally.checkpoint(), BTreeMap::from([(0, 7)]));
        c.settle(Outcome::Nack("database".into()));
        assert_eq!(
            tally.checkpoint(),
            BTreeMap::from([(0, 7)]),
            "a failed record is read again"
        );
        told(8).settle(Outcome::Ack);
        assert_eq!(tally.checkpoint(), BTreeMap::from([(0, 7)]));
        let _ = (tally.read(1, Some(3)), tally.read(1, None));
        assert_eq!(
            tally.checkpoint(),
            BTreeMap::from([(0, 7)]),
            "a partition with a record of no offset has no checkpoint"
        );
    }
}
