//! The bus contract shared by every adapter.

use async_trait::async_trait;
use tokio::sync::mpsc;

/// A name / value pair carried beside the payload (broker headers).
pub type Header = (String, String);

/// Attempts before a nacked message goes to the dead-letter topic, unless configured.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// The dead-letter topic of `topic`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    /// Routing key; decides the partition and so the order.
    pub key: String,
    /// The bytes (an encoded envelope for switchyard's own topics).
    pub payload: Vec<u8>,
    /// Broker headers.
    pub headers: Vec<Header>,
}

/// A stored message, as consumers and replays see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The topic it was published on.
    pub topic: String,
    /// Its partition, decided by its key.
    pub partition: u32,
    /// Its position in the partition, from 0.
    pub offset: u64,
    /// Routing key.
    pub key: String,
    /// The bytes.
    pub payload: Vec<u8>,
    /// Broker headers.
    pub headers: Vec<Header>,
    /// When the broker stored it, ms since the Unix epoch.
    pub timestamp: u64,
}

impl Record {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom {
    /// The first record of every partition.
    Start,
    /// This offset in every partition.
    Offset(u64),
    /// The first record stored at or after this time (ms since the Unix epoch).
    Time(u64),
}

/// How a subscription behaves.
#[derive(Debug, Clone, Copy)]
pub struct SubscribeOptions {
    /// Delivery attempts before a nacked message is dead-lettered.
    pub max_attempts: u32,
    /// Wait before redelivering a nacked message; doubles with each attempt, up to 32 times.
    pub redelivery_delay: std::time::Duration,
}

impl SubscribeOptions {
    /// The wait before delivery attempt `attempt` (2 or more) of a nacked message.
    pub fn backoff(&self, attempt: u32) -> std::time::Duration {
        self.redelivery_delay * (1u32 << attempt.saturating_sub(2).min(5))
    }
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            redelivery_delay: std::time::Duration::from_millis(100),
        }
    }
}

/// Why a bus operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The topic was never created.
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    /// The topic exists with another partition count.
    #[error("topic `{topic}` has {existing} partitions, not {requested}")]
    PartitionMismatch {
        /// The topic.
        topic: String,
        /// Its partitions.
        existing: u32,
        /// The partitions asked for.
        requested: u32,
    },
    /// The storage or the broker failed.
    #[error("bus storage: {0}")]
    Storage(String),
    /// The bus or subscription was closed.
    #[error("bus closed")]
    Closed,
}

/// A publish that failed, with the unsent message given back.
#[derive(Debug, thiserror::Error)]
#[error("publish failed: {error}")]
pub struct PublishError {
    /// The message, unsent.
    pub message: OutMessage,
    /// Why.
    pub error: BusError,
}

/// What the handler made of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handled: commit past it.
    Ack,
    /// Failed for now: deliver it again (dead-lettered after `max_attempts`).
    Nack(String),
    /// Can never succeed (undecodable, say): dead-letter it now.
    DeadLetter(String),
}

/// A settled delivery, sent back to the subscription that handed it out.
#[derive(Debug)]
pub struct Settle {
    /// Partition of the settled record.
    pub partition: u32,
    /// Offset of the settled record.
    pub offset: u64,
    /// What the handler made of it.
    pub outcome: Outcome,
}

/// One message handed to a consumer; settle it with `ack`, `nack` or `dead_letter`.
///
/// Dropping it unsettled (its handler panicked, say) nacks it, so it is never lost and its
/// partition never stalls.
#[derive(Debug)]
pub struct Delivery {
    /// The stored message.
    pub record: Record,
    /// 1 on first delivery, then counting redeliveries.
    pub attempt: u32,
    settle: Option<mpsc::UnboundedSender<Settle>>,
}

impl Delivery {
    /// A delivery that reports its outcome on `settle`.
    pub fn new(record: Record, attempt: u32, settle: mpsc::UnboundedSender<Settle>) -> Self {
        Delivery {
            record,
            attempt,
            settle: Some(settle),
        }
    }

    /// Handled: the offset may be committed.
    pub fn ack(self) {
        self.finish(Outcome::Ack);
    }

    /// Failed for now: deliver again, or dead-letter once attempts run out.
    pub fn nack(self, reason: impl Into<String>) {
        self.finish(Outcome::Nack(reason.into()));
    }

    /// Can never succeed: send to the dead-letter topic with `reason`.
    pub fn dead_letter(self, reason: impl Into<String>) {
        self.finish(Outcome::DeadLetter(reason.into()));
    }

    fn finish(mut self, outcome: Outcome) {
        self.settle_with(outcome);
    }

    fn settle_with(&mut self, outcome: Outcome) {
        if let Some(settle) = self.settle.take() {
            // If the subscription is gone, the message is redelivered to the next owner anyway.
            let _ = settle.send(Settle {
                partition: self.record.partition,
                offset: self.record.offset,
                outcome,
            });
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.settle_with(Outcome::Nack("dropped without being settled".into()));
    }
}

/// A group member's stream of deliveries.
#[async_trait]
pub trait Subscription: Send {
    /// The next delivery from a partition this member owns.
    ///
    /// # Cancel safety
    /// Cancel safe: a delivery is handed out only when this returns.
    async fn next(&mut self) -> Result<Delivery, BusError>;

    /// Commits what was acked and leaves the group; unacked deliveries go to the next owner.
    async fn close(self: Box<Self>) -> Result<(), BusError>;
}

/// A read of a topic independent of any group, ending at the topic's end when it began.
#[async_trait]
pub trait Replay: Send {
    /// The next record in publish order, or `None` at the end.
    async fn next(&mut self) -> Result<Option<Record>, BusError>;
}

/// A broker: topics of keyed partitions, consumer groups, at-least-once delivery, replay.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Creates `topic` with `partitions` partitions; succeeds if it already exists alike.
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError>;

    /// Appends a message; returns its (partition, offset) once the broker holds it durably.
    async fn publish(&self, topic: &str, message: OutMessage) -> Result<(u32, u64), PublishError>;

    /// Joins consumer group `group` on `topic`.
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, BusError>;

    /// Reads `topic` from `from` up to its current end, outside any group.
    async fn replay(&self, topic: &str, from: ReplayFrom) -> Result<Box<dyn Replay>, BusError>;

    /// Checks that the broker is reachable.
    async fn ping(&self) -> Result<(), BusError>;
}
