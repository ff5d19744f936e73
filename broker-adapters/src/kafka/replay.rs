//! Replay: a consumer outside any group, assigned every partition from the chosen start up to
//! each partition's end when the replay began.
//!
//! A start time is looked up with `offsets_for_times`, and records are also filtered by their
//! timestamp: some brokers (tansu 0.6) answer offset 0 for a partition with nothing at or
//! after the time. Records outside their key's partition are skipped: the subscription
//! forwards each to its key's partition, where the replay reads its copy.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{REQUEST_TIMEOUT, client_config, from_kafka_headers, unavailable};
use crate::bus::{BusError, Record, Replay, ReplayFrom};
use crate::partition::partition_for;

/// Silence this long while records remain means the broker is gone.
const STALL: Duration = Duration::from_secs(30);

pub(crate) struct KafkaReplay {
    consumer: StreamConsumer,
    brokers: String,
    partitions: u32,
    /// The end (exclusive) of each partition still being read.
    remaining: HashMap<u32, i64>,
    min_time: u64,
    /// Records between the starts and the ends.
    expected: u64,
}

/// A consumer that reads by assignment: its group id is never joined nor committed to, but
/// librdkafka's assign and offset lookups need one.
pub(super) fn outside_any_group(brokers: &str) -> rdkafka::ClientConfig {
    let mut config = client_config(brokers);
    config
        .set("group.id", "switchyard-replay")
        .set("enable.auto.commit", "false");
    config
}

/// Where each partition starts and ends: (partition, start, end), non-empty ranges only.
fn ranges(
    brokers: &str,
    topic: &str,
    partitions: u32,
    from: &ReplayFrom,
) -> Result<Vec<(u32, i64, i64)>, BusError> {
    let consumer: BaseConsumer = outside_any_group(brokers)
        .create()
        .map_err(|e| BusError::Broker(format!("kafka consumer: {e}")))?;
    let by_time = match from {
        ReplayFrom::Time(t) => {
            let mut wanted = TopicPartitionList::new();
            for partition in 0..partitions {
                wanted
                    .add_partition_offset(topic, partition as i32, Offset::Offset(*t as i64))
                    .map_err(|e| BusError::Broker(e.to_string()))?;
            }
            Some(
                consumer
                    .offsets_for_times(wanted, REQUEST_TIMEOUT)
                    .map_err(|e| unavailable(brokers, &e))?,
            )
        }
        _ => None,
    };
    let mut out = Vec::new();
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition as i32, REQUEST_TIMEOUT)
            .map_err(|e| unavailable(brokers, &e))?;
        let start = match from {
            ReplayFrom::Start => low,
            ReplayFrom::Offsets(offsets) => offsets
                .get(&partition)
                .map_or(low, |o| (*o as i64).max(low)),
            ReplayFrom::Time(_) => {
                let found = by_time.as_ref().and_then(|tpl| {
                    tpl.find_partition(topic, partition as i32)
                        .map(|e| e.offset())
                });
                match found {
                    Some(Offset::Offset(o)) => o.max(low),
                    Some(Offset::End) => high,
                    _ => low,
                }
            }
        };
        if start < high {
            out.push((partition, start, high));
        }
    }
    Ok(out)
}

impl KafkaReplay {
    pub(crate) async fn start(
        brokers: &str,
        topic: &str,
        partitions: u32,
        from: ReplayFrom,
    ) -> Result<KafkaReplay, BusError> {
        let (b, t, f) = (brokers.to_owned(), topic.to_owned(), from.clone());
        let ranges = tokio::task::spawn_blocking(move || ranges(&b, &t, partitions, &f))
            .await
            .map_err(|e| BusError::Broker(e.to_string()))??;
        let consumer: StreamConsumer = outside_any_group(brokers)
            .set("enable.partition.eof", "false")
            .create()
            .map_err(|e| BusError::Broker(format!("kafka consumer: {e}")))?;
        let mut tpl = TopicPartitionList::new();
        for (partition, start, _) in &ranges {
            tpl.add_partition_offset(topic, *partition as i32, Offset::Offset(*start))
                .map_err(|e| BusError::Broker(e.to_string()))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| BusError::Broker(format!("kafka assign: {e}")))?;
        Ok(KafkaReplay {
            consumer,
            brokers: brokers.to_owned(),
            partitions,
            expected: ranges
                .iter()
                .map(|(_, start, end)| (end - start) as u64)
                .sum(),
            remaining: ranges.into_iter().map(|(p, _, end)| (p, end)).collect(),
            min_time: match from {
                ReplayFrom::Time(t) => t,
                _ => 0,
            },
        })
    }
}

#[async_trait]
impl Replay for KafkaReplay {
    async fn next(&mut self) -> Result<Option<Record>, BusError> {
        while !self.remaining.is_empty() {
            let message = tokio::time::timeout(STALL, self.consumer.recv())
                .await
                .map_err(|_| {
                    BusError::Unavailable(format!("kafka at {}: replay stalled", self.brokers))
                })?
                .map_err(|e| unavailable(&self.brokers, &e))?;
            let partition = message.partition() as u32;
            let Some(end) = self.remaining.get(&partition).copied() else {
                continue;
            };
            if message.offset() + 1 >= end {
                self.remaining.remove(&partition);
            }
            if message.offset() >= end {
                continue;
            }
            let key = message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default();
            let timestamp = message.timestamp().to_millis().unwrap_or(0).max(0) as u64;
            let misplaced = !key.is_empty() && partition_for(&key, self.partitions) != partition;
            if timestamp < self.min_time || misplaced {
                continue;
            }
            return Ok(Some(Record {
                topic: message.topic().to_owned(),
                partition,
                offset: Some(message.offset() as u64),
                key,
                payload: message.payload().unwrap_or_default().to_vec(),
                headers: from_kafka_headers(message.headers()),
                timestamp,
            }));
        }
        Ok(None)
    }

    fn expected(&self) -> Option<u64> {
        Some(self.expected)
    }
}
