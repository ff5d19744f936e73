//! The RabbitMQ adapter (lapin).
//!
//! A topic `T` is a durable fanout exchange named `T`, which outside producers publish to with
//! the envelope's key as routing key. Bound to it:
//! - `T.log`, a stream queue that keeps every message, for replay (start, offset, time);
//! - per consumer group `G`, a consistent-hash exchange `T.group.G` (plugin
//!   `rabbitmq_consistent_hash_exchange`) spreading keys over N durable quorum queues
//!   `T.group.G.p<i>`, each with single-active-consumer, so one member owns a partition.
//!
//! The partition count is kept as the `x-max-length` of an empty queue `T.partitions`: AMQP
//! cannot read arguments back, but RabbitMQ refuses a declare that differs in one, naming
//! the current value, which is how the count is checked and learnt.
//! A new group starting at the earliest message is filled from `T.log` before it is bound;
//! what is published in the moment between the last copy and the binding is copied after
//! it, behind newer messages routed straight to the group, so a key's order holds for a group
//! declared (`Bus::declare_group`) before its publishers start, as the node does.
//! Publishes wait for publisher confirms; concurrent publishes share one channel, so their
//! confirms are windowed. Connections are re-established on demand after a broker outage.

mod link;
mod stream;
mod subscription;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use lapin::options::{
    BasicPublishOptions, ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation, ExchangeKind, PublisherConfirm};

use crate::bus::{
    Bus, BusError, Header, OutMessage, PublishError, Receipt, Replay, ReplayFrom, SubscribeOptions,
    Subscription, dlq_topic,
};
use link::Link;

/// The header that carries the publish time in ms (AMQP's own timestamp has whole seconds).
const PUBLISHED_MS: &str = "x-switchyard-published-ms";
/// How long a publish may wait for its confirm.
const PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Copy passes into a new group's queues before it is bound, at most.
const MAX_COPY_PASSES: usize = 8;
/// A copy pass that copied this many messages or fewer leaves a gap small enough to bind.
const CAUGHT_UP: u64 = 8;
/// The consistent-hash exchange type.
const CONSISTENT_HASH: &str = "x-consistent-hash";

/// The queue whose `x-max-length` records `topic`'s partition count.
fn partitions_queue(topic: &str) -> String {
    format!("{topic}.partitions")
}

/// The stream queue of `topic`.
fn log_queue(topic: &str) -> String {
    format!("{topic}.log")
}

/// The consistent-hash exchange of `group` on `topic`.
fn group_exchange(topic: &str, group: &str) -> String {
    format!("{topic}.group.{group}")
}

/// Partition queue `partition` of `group` on `topic`.
fn partition_queue(topic: &str, group: &str, partition: u32) -> String {
    format!("{topic}.group.{group}.p{partition}")
}

/// A name as AMQP wants it; names longer than 255 bytes are refused, not truncated.
fn short(name: &str) -> Result<ShortString, BusError> {
    ShortString::try_new(name.to_owned())
        .map_err(|_| BusError::Broker(format!("`{name}` is longer than AMQP's 255 bytes")))
}

/// The RabbitMQ bus; cheap to clone, clones share one publishing connection.
#[derive(Clone)]
pub struct RabbitBus {
    inner: Arc<Inner>,
}

struct Inner {
    link: Link,
    /// Partition counts of topics known to exist.
    topics: Mutex<HashMap<String, u32>>,
}

impl RabbitBus {
    /// A bus on the RabbitMQ at `url` (`amqp://user:pass@host:port/vhost`); connects lazily.
    pub fn connect(url: &str) -> RabbitBus {
        RabbitBus {
            inner: Arc::new(Inner {
                link: Link::new(url),
                topics: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn url(&self) -> &str {
        self.inner.link.url()
    }

    fn cached(&self, topic: &str) -> Option<u32> {
        self.inner
            .topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .copied()
    }

    fn remember(&self, topic: &str, partitions: u32) {
        self.inner
            .topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.to_owned(), partitions);
    }

    /// The partition count of `topic`, from the cache or the broker.
    async fn topic(&self, topic: &str) -> Result<u32, BusError> {
        if let Some(partitions) = self.cached(topic) {
            return Ok(partitions);
        }
        let channel = self.inner.link.scratch_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declaring = channel.queue_declare(
            short(&partitions_queue(topic))?,
            passive,
            FieldTable::default(),
        );
        self.inner
            .link
            .request("looking up a topic", topic, declaring)
            .await?;
        // No topic has 0 partitions, so this declare is refused with the real count.
        let partitions = match declare_partitions(&self.inner.link, topic, 0).await {
            Err(BusError::PartitionMismatch { existing, .. }) => existing,
            Err(e) => return Err(e),
            Ok(()) => {
                return Err(BusError::Broker(format!(
                    "queue `{}` does not record a partition count",
                    partitions_queue(topic)
                )));
            }
        };
        self.remember(topic, partitions);
        Ok(partitions)
    }
}

/// Records `topic`'s partition count; a different recorded count is a `PartitionMismatch`
/// naming it.
async fn declare_partitions(link: &Link, topic: &str, partitions: u32) -> Result<(), BusError> {
    let channel = link.scratch_channel().await?;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(partitions as i32));
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let declaring = channel.queue_declare(short(&partitions_queue(topic))?, durable, args);
    let declared = link.ask("declaring a topic", declaring).await?;
    match declared {
        Ok(_) => Ok(()),
        Err(error) => match link::reply_code(&error) {
            Some((406, text)) => Err(BusError::PartitionMismatch {
                topic: topic.to_owned(),
                existing: current_value(&text).ok_or_else(|| {
                    BusError::Broker(format!("topic `{topic}` exists differently: {text}"))
                })?,
                requested: partitions,
            }),
            _ => Err(link::classify(link.url(), topic, &error)),
        },
    }
}

/// Declares the topic's exchange, which producers publish to.
async fn declare_topic_exchange(link: &Link, topic: &str) -> Result<(), BusError> {
    let channel = link.scratch_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let declaring = channel.exchange_declare(
        short(topic)?,
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    );
    link.request("declaring a topic's exchange", topic, declaring)
        .await
}

/// The current value in RabbitMQ's "inequivalent arg" refusal, e.g. "… but current is the
/// value '4' of type 'signedint'".
fn current_value(text: &str) -> Option<u32> {
    let rest = &text[text.find("current is")?..];
    let start = rest.find('\'')? + 1;
    let end = start + rest[start..].find('\'')?;
    rest[start..end].parse().ok()
}

/// Declares `topic`'s stream and binds it, so every message is kept for replay.
async fn declare_log(link: &Link, topic: &str) -> Result<(), BusError> {
    let channel = link.scratch_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let log = short(&log_queue(topic))?;
    let declaring = channel.queue_declare(log.clone(), durable, args);
    link.request("declaring a topic's stream", topic, declaring)
        .await?;
    let binding = channel.queue_bind(
        log,
        short(topic)?,
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    link.request("binding a topic's stream", topic, binding)
        .await
}

/// The queue whose existence says `group` was set up completely (bound, backfilled).
fn ready_queue(topic: &str, group: &str) -> String {
    format!("{topic}.group.{group}.ready")
}

/// Whether `group` was set up completely before.
async fn group_ready(link: &Link, topic: &str, group: &str) -> Result<bool, BusError> {
    let channel = link.scratch_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let looking = channel.queue_declare(
        short(&ready_queue(topic, group))?,
        passive,
        FieldTable::default(),
    );
    let found = link.ask("looking up a group", looking).await?;
    match found {
        Ok(_) => Ok(true),
        Err(error) if link::reply_code(&error).is_some_and(|(code, _)| code == 404) => Ok(false),
        Err(error) => Err(link::classify(link.url(), topic, &error)),
    }
}

/// Records that `group` is set up completely.
async fn mark_group_ready(link: &Link, topic: &str, group: &str) -> Result<(), BusError> {
    let channel = link.scratch_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let declaring = channel.queue_declare(
        short(&ready_queue(topic, group))?,
        durable,
        FieldTable::default(),
    );
    link.request("marking a group ready", topic, declaring)
        .await
        .map(drop)
}

/// Declares `group`'s consistent-hash exchange and partition queues (not yet bound to the
/// topic).
async fn declare_group_queues(
    link: &Link,
    topic: &str,
    group: &str,
    partitions: u32,
) -> Result<(), BusError> {
    let exchange = group_exchange(topic, group);
    let channel = link.scratch_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let declaring = channel.exchange_declare(
        short(&exchange)?,
        ExchangeKind::Custom(CONSISTENT_HASH.into()),
        durable,
        FieldTable::default(),
    );
    link.request("declaring a group's exchange", topic, declaring)
        .await?;
    for partition in 0..partitions {
        let queue = short(&partition_queue(topic, group, partition))?;
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let declaring = channel.queue_declare(queue.clone(), durable, args);
        link.request("declaring a group's partition", topic, declaring)
            .await?;
        // Binding key "1": each queue takes an equal share of the hash space.
        let binding = channel.queue_bind(
            queue,
            short(&exchange)?,
            "1".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        );
        link.request("binding a group's partition", topic, binding)
            .await?;
    }
    Ok(())
}

/// Binds `group`'s exchange to the topic: from now on it receives every message.
async fn bind_group(link: &Link, topic: &str, group: &str) -> Result<(), BusError> {
    let channel = link.scratch_channel().await?;
    let binding = channel.exchange_bind(
        short(&group_exchange(topic, group))?,
        short(topic)?,
        "".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    );
    link.request("binding a group to its topic", topic, binding)
        .await
}

/// Caller headers as an AMQP table, plus the publish time.
fn to_table(headers: &[Header], published_ms: u64) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in headers {
        if let Ok(name) = ShortString::try_new(name.clone()) {
            table.insert(
                name,
                AMQPValue::LongString(LongString::from(value.as_bytes())),
            );
        }
    }
    table.insert(
        PUBLISHED_MS.into(),
        AMQPValue::LongLongInt(published_ms as i64),
    );
    table
}

/// An AMQP table as text headers (our own publish-time header left out), and the publish
/// time in ms where known.
fn from_table(table: Option<&FieldTable>, amqp_timestamp: Option<u64>) -> (Vec<Header>, u64) {
    let mut headers = Vec::new();
    let mut published = amqp_timestamp.map_or(0, |s| s * 1000);
    for (name, value) in table.into_iter().flat_map(FieldTable::inner) {
        if name.as_str() == PUBLISHED_MS {
            if let AMQPValue::LongLongInt(ms) = value {
                published = (*ms).max(0) as u64;
            }
            continue;
        }
        let text = match value {
            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            AMQPValue::ShortString(s) => s.as_str().to_owned(),
            AMQPValue::Boolean(b) => b.to_string(),
            AMQPValue::ShortShortInt(n) => n.to_string(),
            AMQPValue::ShortShortUInt(n) => n.to_string(),
            AMQPValue::ShortInt(n) => n.to_string(),
            AMQPValue::ShortUInt(n) => n.to_string(),
            AMQPValue::LongInt(n) => n.to_string(),
            AMQPValue::LongUInt(n) => n.to_string(),
            AMQPValue::LongLongInt(n) => n.to_string(),
            AMQPValue::Timestamp(n) => n.to_string(),
            _ => continue,
        };
        headers.push((name.as_str().to_owned(), text));
    }
    (headers, published)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl RabbitBus {
    /// Sends `message` to `exchange` (a topic, a group's exchange, or "" with a queue's name as
    /// routing key); the returned confirm resolves once the broker has it. Sends on one
    /// channel keep their order, so a caller may send many and await their confirms after.
    async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        message: &OutMessage,
    ) -> Result<PublisherConfirm, BusError> {
        let channel = self.inner.link.publish_channel().await?;
        let content_type = message
            .headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map_or("application/octet-stream", |(_, v)| v.as_str());
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(short(content_type)?)
            .with_headers(to_table(&message.headers, now_ms()));
        channel
            .basic_publish(
                short(exchange)?,
                short(routing_key)?,
                BasicPublishOptions::default(),
                &message.payload,
                properties,
            )
            .await
            .map_err(|e| self.failed(exchange, &e))
    }

    /// Waits for a confirm of `send`.
    async fn confirmed(&self, exchange: &str, confirm: PublisherConfirm) -> Result<(), BusError> {
        match confirm.await.map_err(|e| self.failed(exchange, &e))? {
            Confirmation::Ack(_) => Ok(()),
            Confirmation::Nack(_) => Err(BusError::Unavailable(format!(
                "rabbitmq at {}: the broker refused to take the message",
                link::redacted(self.url())
            ))),
            Confirmation::NotRequested => Err(BusError::Broker(
                "rabbitmq: publisher confirms are off".into(),
            )),
        }
    }

    /// A publishing error; a refusal closed the channel, so the next publish opens another.
    fn failed(&self, exchange: &str, error: &lapin::Error) -> BusError {
        self.inner.link.reset_publisher();
        link::classify(self.url(), exchange, error)
    }

    /// Publishes to `exchange` and waits for the confirm, at most `PUBLISH_TIMEOUT` (a
    /// broker under a resource alarm blocks publishers rather than refusing them).
    async fn publish_to(&self, exchange: &str, message: &OutMessage) -> Result<(), BusError> {
        let publish = async {
            let confirm = self.send(exchange, &message.key, message).await?;
            self.confirmed(exchange, confirm).await
        };
        tokio::time::timeout(PUBLISH_TIMEOUT, publish)
            .await
            .unwrap_or_else(|_| {
                Err(BusError::Unavailable(format!(
                    "rabbitmq at {}: no publisher confirm within {} s",
                    link::redacted(self.url()),
                    PUBLISH_TIMEOUT.as_secs()
                )))
            })
    }
}

impl RabbitBus {
    /// Deletes `topic` (its exchange and stream) and the named groups' exchanges and queues,
    /// with every message they hold; what does not exist is skipped.
    pub async fn delete_topic(&self, topic: &str, groups: &[&str]) -> Result<(), BusError> {
        let channel = self.inner.link.scratch_channel().await?;
        let fail = |e: lapin::Error| link::classify(self.url(), topic, &e);
        let partitions = self.topic(topic).await.unwrap_or(0);
        for group in groups {
            channel
                .queue_delete(
                    short(&ready_queue(topic, group))?,
                    QueueDeleteOptions::default(),
                )
                .await
                .map_err(fail)?;
            for partition in 0..partitions {
                let queue = short(&partition_queue(topic, group, partition))?;
                channel
                    .queue_delete(queue, QueueDeleteOptions::default())
                    .await
                    .map_err(fail)?;
            }
            let exchange = short(&group_exchange(topic, group))?;
            channel
                .exchange_delete(exchange, ExchangeDeleteOptions::default())
                .await
                .map_err(fail)?;
        }
        for queue in [log_queue(topic), partitions_queue(topic)] {
            channel
                .queue_delete(short(&queue)?, QueueDeleteOptions::default())
                .await
                .map_err(fail)?;
        }
        channel
            .exchange_delete(short(topic)?, ExchangeDeleteOptions::default())
            .await
            .map_err(fail)?;
        self.inner
            .topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(topic);
        Ok(())
    }
}

#[async_trait]
impl Bus for RabbitBus {
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError> {
        let partitions = partitions.max(1);
        if let Some(existing) = self.cached(topic) {
            return BusError::check_partitions(topic, existing, partitions);
        }
        declare_partitions(&self.inner.link, topic, partitions).await?;
        declare_topic_exchange(&self.inner.link, topic).await?;
        declare_log(&self.inner.link, topic).await?;
        self.remember(topic, partitions);
        Ok(())
    }

    async fn partitions(&self, topic: &str) -> Result<u32, BusError> {
        self.topic(topic).await
    }

    async fn publish(&self, topic: &str, message: OutMessage) -> Result<Receipt, PublishError> {
        let published = match self.topic(topic).await {
            Ok(_) => self.publish_to(topic, &message).await,
            Err(error) => Err(error),
        };
        match published {
            Ok(()) => Ok(Receipt::default()),
            Err(error) => Err(PublishError { message, error }),
        }
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, BusError> {
        let partitions = self.topic(topic).await?;
        let dlq = dlq_topic(topic);
        self.create_topic(&dlq, 1).await?;
        self.declare_group(topic, group, options.start).await?;
        let subscription = subscription::RabbitSubscription::start(
            self.clone(),
            topic,
            dlq,
            partitions,
            group,
            options,
        )
        .await?;
        Ok(Box::new(subscription))
    }

    /// A new group's queues are filled from the stream before they are bound to the topic.
    /// Copy passes repeat while publishers add more, so that what is published between the
    /// last pass and the binding, copied after the binding by one pass more (and so behind
    /// messages routed straight to the group), is what a few milliseconds bring at most.
    async fn declare_group(
        &self,
        topic: &str,
        group: &str,
        start: crate::StartAt,
    ) -> Result<(), BusError> {
        let partitions = self.topic(topic).await?;
        let link = &self.inner.link;
        let new = !group_ready(link, topic, group).await?;
        // Declared and bound again each time (alike, it changes nothing): a deleted queue
        // comes back.
        declare_group_queues(link, topic, group, partitions).await?;
        if new && start == crate::StartAt::Earliest {
            let exchange = group_exchange(topic, group);
            let mut from = stream::From::First;
            for _ in 0..MAX_COPY_PASSES {
                let (copied, end) = stream::backfill(self, topic, &exchange, from).await?;
                from = end.map_or(from, stream::From::After);
                if copied <= CAUGHT_UP {
                    break;
                }
            }
            bind_group(link, topic, group).await?;
            // Whatever came between the last pass and the binding: the group may see a few
            // messages twice, never miss one.
            stream::backfill(self, topic, &exchange, from).await?;
        } else {
            bind_group(link, topic, group).await?;
        }
        // Only now: set-up cut short is done again (a few messages twice, none missed).
        mark_group_ready(link, topic, group).await
    }

    async fn replay(&self, topic: &str, from: ReplayFrom) -> Result<Box<dyn Replay>, BusError> {
        self.topic(topic).await?;
        Ok(Box::new(
            stream::StreamReplay::start(self, topic, from).await?,
        ))
    }

    async fn lag(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<std::collections::BTreeMap<u32, u64>, BusError> {
        let partitions = self.topic(topic).await?;
        let channel = self.inner.link.scratch_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let mut lag = std::collections::BTreeMap::new();
        for p in 0..partitions {
            let looking = channel.queue_declare(
                short(&partition_queue(topic, group, p))?,
                passive,
                FieldTable::default(),
            );
            let queue = self
                .inner
                .link
                .request("looking up a group's partition", topic, looking)
                .await?;
            lag.insert(p, u64::from(queue.message_count()));
        }
        Ok(lag)
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.inner.link.check().await
    }

    async fn close(&self) -> Result<(), BusError> {
        // Every publish waited for its confirm, so nothing is left to flush.
        self.inner.link.close().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_current_value_of_a_refusal() {
        let text = "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue \
                    't.partitions' in vhost '/': received '3' but current is '4'";
        assert_eq!(super::current_value(text), Some(4));
        assert_eq!(super::current_value("no such text"), None);
    }
}
