//! The bus contract shared by every adapter.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::oneshot;

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

/// Where the broker put a published message, as far as it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Receipt {
    /// The partition, where the broker reports one (RabbitMQ does not).
    pub partition: Option<u32>,
    /// The offset in that partition, where the broker reports one.
    pub offset: Option<u64>,
}

/// A stored message, as consumers and replays see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The topic it was published on.
    pub topic: String,
    /// Its partition, decided by its key.
    pub partition: u32,
    /// Its position in the partition, where the broker has one (a RabbitMQ queue has none).
    pub offset: Option<u64>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayFrom {
    /// The first record of every partition.
    Start,
    /// These offsets, by partition; partitions not named start at their first record.
    Offsets(BTreeMap<u32, u64>),
    /// The first record stored at or after this time (ms since the Unix epoch).
    Time(u64),
}

/// Where a group with no committed position starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// At the first record still stored.
    #[default]
    Earliest,
    /// At the end: only what is published after the group first joins.
    Latest,
}

/// How a subscription behaves.
#[derive(Debug, Clone, Copy)]
pub struct SubscribeOptions {
    /// Delivery attempts before a nacked message is dead-lettered.
    pub max_attempts: u32,
    /// Wait before redelivering a nacked message; doubles with each attempt, up to 32 times.
    pub redelivery_delay: Duration,
    /// Where a new group starts.
    pub start: StartAt,
    /// Deliveries of one partition out with handlers at once; never two of one key, so
    /// per-key order holds whatever this is, and offsets are committed contiguously.
    pub in_flight: usize,
}

impl SubscribeOptions {
    /// The wait before delivery attempt `attempt` (2 or more) of a nacked message.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.redelivery_delay * (1u32 << attempt.saturating_sub(2).min(5))
    }
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            redelivery_delay: Duration::from_millis(100),
            start: StartAt::Earliest,
            in_flight: 1,
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
    /// The broker cannot be reached or did not answer in time: retry later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker or the storage refused or failed in a way a retry will not fix.
    #[error("broker: {0}")]
    Broker(String),
    /// The bus or subscription was closed.
    #[error("bus closed")]
    Closed,
}

impl BusError {
    /// `Ok` if a topic with `existing` partitions serves a request for `requested`.
    pub fn check_partitions(topic: &str, existing: u32, requested: u32) -> Result<(), BusError> {
        if existing == requested {
            Ok(())
        } else {
            Err(BusError::PartitionMismatch {
                topic: topic.to_owned(),
                existing,
                requested,
            })
        }
    }

    /// Whether retrying later may succeed (the broker is down, say), as opposed to a fault
    /// that needs someone to act.
    pub fn is_transient(&self) -> bool {
        matches!(self, BusError::Unavailable(_))
    }
}

/// A publish that failed, with the unsent message given back.
#[derive(Debug, thiserror::Error)]
#[error("publish failed: {error}")]
pub struct PublishError {
    /// The message, unsent (or of unknown fate: at-least-once allows sending it again).
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
    /// Not handled, through no fault of the message (its mailbox is restarting): deliver it
    /// again after the first redelivery delay, without counting an attempt.
    Retry(String),
    /// Can never succeed (undecodable, say): dead-letter it now.
    DeadLetter(String),
}

/// How an adapter learns what became of a delivery it handed out.
pub trait Settle: Send + Sync {
    /// Reports the outcome; called exactly once.
    fn settle(self: Box<Self>, outcome: Outcome);
}

/// One message handed to a consumer; settle it with `ack`, `nack` or `dead_letter`.
///
/// Dropping it unsettled (its handler panicked, say) nacks it, so it is never lost and its
/// partition never stalls.
pub struct Delivery {
    /// The stored message.
    pub record: Record,
    /// 1 on first delivery, then counting redeliveries.
    pub attempt: u32,
    settle: Option<Box<dyn Settle>>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("record", &self.record)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// A delivery that reports its outcome through `settle`.
    pub fn new(record: Record, attempt: u32, settle: Box<dyn Settle>) -> Self {
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

    /// Not handled, through no fault of the message: deliver again, not counted as an attempt.
    pub fn retry(self, reason: impl Into<String>) {
        self.finish(Outcome::Retry(reason.into()));
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
            settle.settle(outcome);
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.settle_with(Outcome::Nack("dropped without being settled".into()));
    }
}

/// Partitions taken away from this member; the new owner may start once this is dropped.
///
/// Hold it until the work of those partitions has settled (their mailboxes stopped, say), so
/// that one key never has two owners at once. Adapters wait for it only for a bounded time.
#[derive(Debug)]
pub struct Revocation {
    /// The partitions revoked.
    pub partitions: Vec<u32>,
    _done: Option<oneshot::Sender<()>>,
}

impl Revocation {
    /// A revocation, and what completes when it is dropped.
    pub fn new(partitions: Vec<u32>) -> (Revocation, oneshot::Receiver<()>) {
        let (done, released) = oneshot::channel();
        (
            Revocation {
                partitions,
                _done: Some(done),
            },
            released,
        )
    }
}

/// What a subscription hands its consumer.
#[derive(Debug)]
pub enum Event {
    /// A message to handle.
    Delivery(Delivery),
    /// These partitions are now this member's (in addition to those it had).
    Assigned(Vec<u32>),
    /// These partitions are no longer this member's; see `Revocation`.
    Revoked(Revocation),
}

/// A group member's stream of deliveries and ownership changes.
#[async_trait]
pub trait Subscription: Send {
    /// The next event: a delivery from a partition this member owns, or an ownership change.
    ///
    /// A transient error (`BusError::is_transient`) means the broker is unreachable: call
    /// again later and the subscription carries on where it was.
    ///
    /// # Cancel safety
    /// Cancel safe: an event is handed out only when this returns.
    async fn next(&mut self) -> Result<Event, BusError>;

    /// Commits what was acked and leaves the group; unacked deliveries go to the next owner.
    async fn close(self: Box<Self>) -> Result<(), BusError>;
}

/// A read of a topic independent of any group, ending at the topic's end when it began.
#[async_trait]
pub trait Replay: Send {
    /// The next record, in order within its partition, or `None` at the end.
    async fn next(&mut self) -> Result<Option<Record>, BusError>;

    /// How many records the replay reads at most, when the broker tells it beforehand.
    fn expected(&self) -> Option<u64> {
        None
    }
}

/// A broker: topics of keyed partitions, consumer groups, at-least-once delivery, replay.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Creates `topic` with `partitions` partitions; succeeds if it already exists alike.
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError>;

    /// The partition count of an existing topic; `UnknownTopic` if there is none.
    async fn partitions(&self, topic: &str) -> Result<u32, BusError>;

    /// Publishes a message; returns once the broker holds it durably.
    async fn publish(&self, topic: &str, message: OutMessage) -> Result<Receipt, PublishError>;

    /// Makes group `group` exist on `topic` without joining it, so that what is published
    /// from now on reaches it (and with `StartAt::Earliest`, what the topic held before it):
    /// for a consumer that must not miss what is published before it first subscribes.
    /// Subscribing does it too. Groups that read the topic's log need nothing (the default):
    /// they start where `start` says when first subscribed.
    async fn declare_group(
        &self,
        _topic: &str,
        _group: &str,
        _start: crate::StartAt,
    ) -> Result<(), BusError> {
        Ok(())
    }

    /// Joins consumer group `group` on `topic`.
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, BusError>;

    /// Reads `topic` from `from` up to its end when the replay begins, outside any group.
    async fn replay(&self, topic: &str, from: ReplayFrom) -> Result<Box<dyn Replay>, BusError>;

    /// Records of each partition of `topic` that group `group` has yet to consume: the end of
    /// the partition less the group's committed offset (RabbitMQ: the messages ready in the
    /// group's queue of that partition, so delivered but unsettled ones do not count).
    async fn lag(&self, topic: &str, group: &str) -> Result<BTreeMap<u32, u64>, BusError>;

    /// Checks that the broker is reachable and usable, naming the problem if not.
    async fn ping(&self) -> Result<(), BusError>;

    /// Waits until everything published is durable, then releases the connection.
    async fn close(&self) -> Result<(), BusError>;
}
