//! Replay: the events topic read again from a position, each record handed to its mailbox
//! through the same router and mailboxes as the live ingress, so state is rebuilt by the one
//! implementation of the rules. The node's bus during a replay is a `Quiet` bus: what the
//! mailboxes would publish outward (derived events, calendar outcomes) is counted, not sent;
//! those events are on the topic already and are replayed in their turn.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use broker_adapters::{
    Bus, BusError, Delivery, OutMessage, Outcome, PublishError, Receipt, Replay, ReplayFrom,
    Settle, SubscribeOptions, Subscription,
};
use tokio::sync::Semaphore;

use crate::NodeContext;
use crate::shells::router::{self, RouteError};

/// Records in the mailboxes' hands at once, at most.
const IN_FLIGHT: usize = 1024;

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

/// Tells the replay how one record fared.
struct Told(Arc<Tally>);

struct Tally {
    applied: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    window: Semaphore,
}

impl Settle for Told {
    fn settle(self: Box<Self>, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Ack => &self.0.applied,
            Outcome::DeadLetter(_) => &self.0.refused,
            Outcome::Nack(_) => &self.0.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.0.window.add_permits(1);
    }
}

/// Replays the events topic from `from` through the mailboxes of `ctx` (whose bus is a
/// `Quiet` over `source`), telling `progress` the records read so far.
pub async fn replay(
    ctx: &NodeContext,
    source: &dyn Bus,
    from: ReplayFrom,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Replayed, BusError> {
    let tally = Arc::new(Tally {
        applied: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        window: Semaphore::new(IN_FLIGHT),
    });
    let mut reader = source.replay(schemas::EVENTS_TOPIC, from).await?;
    let mut records = 0u64;
    while let Some(record) = reader.next().await? {
        records += 1;
        progress(records);
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
        let delivery = Delivery::new(record, 1, Box::new(Told(tally.clone())));
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
    Ok(Replayed {
        records,
        applied: tally.applied.load(Ordering::Relaxed),
        refused: tally.refused.load(Ordering::Relaxed),
        failed: tally.failed.load(Ordering::Relaxed),
    })
}
