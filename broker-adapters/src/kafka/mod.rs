//! The Kafka adapter (rdkafka): a topic is a Kafka topic, a partition a Kafka partition.
//!
//! Producer: acks=all with idempotence, Kafka's Java-compatible partitioner (`murmur2_random`,
//! the same hash as `partition_for`), the envelope's fields also as CloudEvents headers (the
//! caller's headers travel as Kafka headers). Consumers: see `subscription`; replay: see
//! `replay`. Topics are created through the admin client, never auto-created. A bus group on
//! a topic is the Kafka group `{topic}.group.{group}` (`group_id`).

mod replay;
mod subscription;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::bus::{
    Bus, BusError, Header, OutMessage, PublishError, Receipt, Replay, ReplayFrom, StartAt,
    SubscribeOptions, Subscription, dlq_topic,
};

/// How long a metadata or admin request may take before the broker counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Kafka's own default minimum for `session.timeout.ms`.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// How long a health check may take.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a publish may wait for the broker before it fails as unavailable.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// The Kafka bus; cheap to clone, clones share one producer.
#[derive(Clone)]
pub struct KafkaBus {
    inner: Arc<Inner>,
}

struct Inner {
    brokers: String,
    /// How long a consumer may go unheard before its group gives its partitions away.
    session_timeout: Duration,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Partition counts of topics known to exist.
    topics: Mutex<HashMap<String, u32>>,
}

impl KafkaBus {
    /// A bus on the Kafka cluster at `brokers` (`host:port,…`); connects lazily. Its consumers
    /// count as gone after `session_timeout` without a heartbeat (the failover time); brokers
    /// refuse values below their `group.min.session.timeout.ms` (6 s unless configured).
    pub fn connect(brokers: &str, session_timeout: Duration) -> Result<KafkaBus, BusError> {
        let producer: FutureProducer = client_config(brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "2")
            .set(
                "message.timeout.ms",
                PUBLISH_TIMEOUT.as_millis().to_string(),
            )
            .create()
            .map_err(|e| BusError::Broker(format!("kafka producer: {e}")))?;
        let admin = client_config(brokers)
            .create()
            .map_err(|e| BusError::Broker(format!("kafka admin client: {e}")))?;
        Ok(KafkaBus {
            inner: Arc::new(Inner {
                brokers: brokers.to_owned(),
                session_timeout,
                producer,
                admin,
                topics: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn brokers(&self) -> &str {
        &self.inner.brokers
    }

    /// The partition count of `topic`, from the cache or the broker.
    async fn topic(&self, topic: &str) -> Result<u32, BusError> {
        if let Some(partitions) = self.cached(topic) {
            return Ok(partitions);
        }
        let partitions = self.metadata(topic).await?;
        self.inner
            .topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.to_owned(), partitions);
        Ok(partitions)
    }

    fn cached(&self, topic: &str) -> Option<u32> {
        self.inner
            .topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .copied()
    }

    /// Asks the broker for `topic`'s partition count.
    async fn metadata(&self, topic: &str) -> Result<u32, BusError> {
        let bus = self.clone();
        let name = topic.to_owned();
        let metadata = tokio::task::spawn_blocking(move || {
            bus.inner
                .producer
                .client()
                .fetch_metadata(Some(&name), REQUEST_TIMEOUT)
        })
        .await
        .map_err(|e| BusError::Broker(e.to_string()))?
        .map_err(|e| unavailable(self.brokers(), &e))?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(BusError::UnknownTopic(topic.to_owned()));
        };
        match found.error() {
            None if !found.partitions().is_empty() => {}
            None
            | Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
                return Err(BusError::UnknownTopic(topic.to_owned()));
            }
            // A leader election, say: the topic is there, the broker not ready.
            Some(error) => {
                return Err(BusError::Unavailable(format!(
                    "kafka at {}: topic `{topic}`: {error:?}",
                    self.brokers()
                )));
            }
        }
        Ok(found.partitions().len() as u32)
    }
}

/// The Kafka consumer group of bus group `group` on `topic`. A bus group belongs to one topic,
/// as on the other buses; one Kafka group over several topics would stop all of them for a
/// rebalance whenever a member of any joins or leaves.
fn group_id(topic: &str, group: &str) -> String {
    format!("{topic}.group.{group}")
}

/// The settings every client of one cluster shares.
fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("socket.timeout.ms", "10000")
        .set("reconnect.backoff.max.ms", "2000")
        // Topics exist only once created with their partition count, never by a lookup.
        .set("allow.auto.create.topics", "false")
        // librdkafka's own log lines would go nowhere; errors reach callers as results.
        .set("log_level", "3");
    config
}

/// The broker could not be reached or did not answer.
fn unavailable(brokers: &str, error: &KafkaError) -> BusError {
    BusError::Unavailable(format!("kafka at {brokers}: {error}"))
}

/// A Kafka error as a bus error: transient unless the broker refused for good.
fn classify(brokers: &str, topic: &str, error: &KafkaError) -> BusError {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            BusError::UnknownTopic(topic.to_owned())
        }
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication,
        ) => BusError::Broker(format!("kafka at {brokers}: {error}")),
        _ => unavailable(brokers, error),
    }
}

/// Caller headers as Kafka headers.
fn to_kafka_headers(headers: &[Header]) -> OwnedHeaders {
    headers.iter().fold(
        OwnedHeaders::new_with_capacity(headers.len()),
        |h, (k, v)| {
            h.insert(KafkaHeader {
                key: k,
                value: Some(v.as_bytes()),
            })
        },
    )
}

/// Kafka headers as text pairs; values that are not UTF-8 are dropped.
fn from_kafka_headers(headers: Option<&rdkafka::message::BorrowedHeaders>) -> Vec<Header> {
    let Some(headers) = headers else {
        return Vec::new();
    };
    headers
        .iter()
        .filter_map(|h| {
            let value = std::str::from_utf8(h.value.unwrap_or_default()).ok()?;
            Some((h.key.to_owned(), value.to_owned()))
        })
        .collect()
}

#[async_trait]
impl Bus for KafkaBus {
    async fn create_topic(&self, topic: &str, partitions: u32) -> Result<(), BusError> {
        let partitions = partitions.max(1);
        let existing = match self.topic(topic).await {
            Ok(existing) => existing,
            Err(BusError::UnknownTopic(_)) => {
                let new = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(1));
                let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
                let results = self
                    .inner
                    .admin
                    .create_topics([&new], &options)
                    .await
                    .map_err(|e| classify(self.brokers(), topic, &e))?;
                for result in results {
                    match result {
                        Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((_, code)) => {
                            return Err(BusError::Broker(format!(
                                "kafka at {}: creating topic `{topic}`: {code}",
                                self.brokers()
                            )));
                        }
                    }
                }
                self.wait_for_topic(topic).await?
            }
            Err(e) => return Err(e),
        };
        BusError::check_partitions(topic, existing, partitions)
    }

    async fn partitions(&self, topic: &str) -> Result<u32, BusError> {
        self.topic(topic).await
    }

    async fn publish(&self, topic: &str, message: OutMessage) -> Result<Receipt, PublishError> {
        if let Err(error) = self.topic(topic).await {
            return Err(PublishError { message, error });
        }
        let record = FutureRecord::to(topic)
            .key(message.key.as_bytes())
            .payload(&message.payload)
            .headers(to_kafka_headers(&message.headers));
        match self.inner.producer.send(record, PUBLISH_TIMEOUT).await {
            Ok(delivery) => Ok(Receipt {
                partition: Some(delivery.partition as u32),
                offset: Some(delivery.offset as u64),
            }),
            Err((error, _)) => {
                let error = classify(self.brokers(), topic, &error);
                Err(PublishError { message, error })
            }
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
        if options.start == StartAt::Latest {
            let (brokers, topic, group) = (
                self.brokers().to_owned(),
                topic.to_owned(),
                group.to_owned(),
            );
            tokio::task::spawn_blocking(move || {
                subscription::start_new_group_at_end(&brokers, &topic, partitions, &group)
            })
            .await
            .map_err(|e| BusError::Broker(e.to_string()))??;
        }
        let subscription = subscription::KafkaSubscription::start(
            self.clone(),
            topic,
            dlq,
            partitions,
            group,
            options,
        )?;
        Ok(Box::new(subscription))
    }

    async fn replay(&self, topic: &str, from: ReplayFrom) -> Result<Box<dyn Replay>, BusError> {
        let partitions = self.topic(topic).await?;
        let replay = replay::KafkaReplay::start(self.brokers(), topic, partitions, from).await?;
        Ok(Box::new(replay))
    }

    async fn lag(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<std::collections::BTreeMap<u32, u64>, BusError> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::{Offset, TopicPartitionList};
        let partitions = self.topic(topic).await?;
        let (brokers, topic, group) = (
            self.brokers().to_owned(),
            topic.to_owned(),
            group.to_owned(),
        );
        let fail = {
            let brokers = brokers.clone();
            move |e: KafkaError| unavailable(&brokers, &e)
        };
        tokio::task::spawn_blocking(move || {
            // A consumer of the group that joins nothing: it only reads the group's offsets.
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", group_id(&topic, &group))
                .set("enable.auto.commit", "false")
                .create()
                .map_err(&fail)?;
            let mut wanted = TopicPartitionList::new();
            for p in 0..partitions {
                wanted.add_partition(&topic, p as i32);
            }
            let committed = consumer
                .committed_offsets(wanted, PING_TIMEOUT)
                .map_err(&fail)?;
            let mut lag = std::collections::BTreeMap::new();
            for p in 0..partitions {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, p as i32, PING_TIMEOUT)
                    .map_err(&fail)?;
                let done = match committed
                    .find_partition(&topic, p as i32)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(n)) => n,
                    _ => low,
                };
                lag.insert(p, u64::try_from(high - done).unwrap_or(0));
            }
            Ok(lag)
        })
        .await
        .map_err(|e| BusError::Broker(e.to_string()))?
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.probe().await?;
        let bus = self.clone();
        tokio::task::spawn_blocking(move || {
            bus.inner
                .producer
                .client()
                .fetch_metadata(None, PING_TIMEOUT)
        })
        .await
        .map_err(|e| BusError::Broker(e.to_string()))?
        .map(drop)
        .map_err(|e| unavailable(self.brokers(), &e))
    }

    async fn close(&self) -> Result<(), BusError> {
        let bus = self.clone();
        tokio::task::spawn_blocking(move || {
            bus.inner.producer.flush(Timeout::After(PUBLISH_TIMEOUT))
        })
        .await
        .map_err(|e| BusError::Broker(e.to_string()))?
        .map_err(|e| unavailable(self.brokers(), &e))
    }
}

impl KafkaBus {
    /// Connects to each bootstrap server over TCP, to name the exact problem when none
    /// answers (librdkafka only says "transport failure").
    async fn probe(&self) -> Result<(), BusError> {
        let mut problems = Vec::new();
        for address in self.brokers().split(',').map(str::trim) {
            let connect = tokio::net::TcpStream::connect(address);
            match tokio::time::timeout(PING_TIMEOUT, connect).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => problems.push(format!("{address}: {e}")),
                Err(_) => problems.push(format!("{address}: no answer")),
            }
        }
        Err(BusError::Unavailable(format!(
            "kafka: no bootstrap server reachable ({})",
            problems.join("; ")
        )))
    }

    /// Waits until a topic just created shows in the metadata; returns its partition count.
    async fn wait_for_topic(&self, topic: &str) -> Result<u32, BusError> {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            match self.topic(topic).await {
                Err(BusError::UnknownTopic(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }
}
