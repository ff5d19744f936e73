//! Reading a topic's stream (`<topic>.log`): replay, and the backfill of a new group.
//!
//! A stream has no end to ask for over AMQP, so a reader appends a marker of its own straight
//! to the stream (through the default exchange, so no group sees it) once it is attached, and
//! reads until it meets it. Every reader skips every marker. The stream is one sequence, so
//! replayed records are partition 0 and their offsets are stream offsets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::Consumer;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};

use super::link::Scratch;
use super::{RabbitBus, from_table, link, log_queue, short};
use crate::bus::{BusError, OutMessage, Record, Replay, ReplayFrom};

/// The header that marks a reader's end marker.
const MARKER: &str = "x-switchyard-marker";
/// The stream offset of a delivery, as RabbitMQ sets it.
const STREAM_OFFSET: &str = "x-stream-offset";
/// Stream messages read ahead.
const PREFETCH: u16 = 500;
/// Silence this long before the marker arrives means the broker is gone.
const STALL: Duration = Duration::from_secs(30);
/// Backfilled messages whose confirms are awaited together.
const WINDOW: usize = 500;

static MARKERS: AtomicU64 = AtomicU64::new(0);

/// An id no other reader or member uses.
pub(super) fn new_marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = MARKERS.fetch_add(1, Ordering::Relaxed);
    format!("{}-{nanos}-{n}", std::process::id())
}

/// A reader of a topic's stream, from a start up to its marker.
struct LogReader {
    bus: RabbitBus,
    topic: String,
    _channel: Scratch,
    consumer: Consumer,
    marker: String,
    /// The stream offset of the marker, once met.
    end: Option<u64>,
}

impl LogReader {
    async fn open(bus: &RabbitBus, topic: &str, start: AMQPValue) -> Result<LogReader, BusError> {
        let link = &bus.inner.link;
        let fail = |e: lapin::Error| link::classify(link.url(), topic, &e);
        let channel = link.scratch_channel().await?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .map_err(fail)?;
        let mut args = FieldTable::default();
        args.insert("x-stream-offset".into(), start);
        let consumer = channel
            .basic_consume(
                short(&log_queue(topic))?,
                "".into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await
            .map_err(fail)?;
        // Attached: whatever the marker follows, this reader will read.
        let marker = new_marker();
        let message = OutMessage {
            key: log_queue(topic),
            payload: Vec::new(),
            headers: vec![(MARKER.to_owned(), marker.clone())],
        };
        let confirm = bus.send("", &log_queue(topic), &message).await?;
        bus.confirmed(&log_queue(topic), confirm).await?;
        Ok(LogReader {
            bus: bus.clone(),
            topic: topic.to_owned(),
            _channel: channel,
            consumer,
            marker,
            end: None,
        })
    }

    /// The next record before the marker, or `None` at the marker.
    async fn next(&mut self) -> Result<Option<Record>, BusError> {
        loop {
            let url = self.bus.url();
            let delivery = tokio::time::timeout(STALL, self.consumer.next())
                .await
                .map_err(|_| {
                    BusError::Unavailable(format!(
                        "rabbitmq at {}: reading `{}` stalled",
                        link::redacted(url),
                        log_queue(&self.topic)
                    ))
                })?
                .ok_or(BusError::Closed)?
                .map_err(|e| link::classify(url, &self.topic, &e))?;
            // Acks are the stream's credit; they change nothing stored.
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            let table = delivery.properties.headers().as_ref();
            let header = |name: &str| table.and_then(|t| t.inner().get(name));
            let offset = match header(STREAM_OFFSET) {
                Some(AMQPValue::LongLongInt(o)) => Some((*o).max(0) as u64),
                _ => None,
            };
            match header(MARKER) {
                Some(AMQPValue::LongString(id)) if id.as_bytes() == self.marker.as_bytes() => {
                    self.end = offset;
                    return Ok(None);
                }
                Some(_) => continue,
                None => {}
            }
            let (mut headers, timestamp) = from_table(table, *delivery.properties.timestamp());
            headers.retain(|(k, _)| k != STREAM_OFFSET);
            return Ok(Some(Record {
                topic: self.topic.clone(),
                partition: 0,
                offset,
                key: delivery.routing_key.as_str().to_owned(),
                payload: delivery.data,
                headers,
                timestamp,
            }));
        }
    }
}

/// A replay of a topic's stream.
pub(super) struct StreamReplay {
    reader: LogReader,
    min_time: u64,
    done: bool,
}

impl StreamReplay {
    pub(super) async fn start(
        bus: &RabbitBus,
        topic: &str,
        from: ReplayFrom,
    ) -> Result<StreamReplay, BusError> {
        let first = || AMQPValue::LongString("first".into());
        let (start, min_time) = match from {
            ReplayFrom::Start => (first(), 0),
            ReplayFrom::Offsets(offsets) => (
                offsets
                    .get(&0)
                    .map_or_else(first, |o| AMQPValue::LongLongInt(*o as i64)),
                0,
            ),
            // The stream seeks by whole seconds; records are then filtered to the ms.
            ReplayFrom::Time(t) => (AMQPValue::Timestamp(t / 1000), t),
        };
        Ok(StreamReplay {
            reader: LogReader::open(bus, topic, start).await?,
            min_time,
            done: false,
        })
    }
}

#[async_trait]
impl Replay for StreamReplay {
    async fn next(&mut self) -> Result<Option<Record>, BusError> {
        while !self.done {
            match self.reader.next().await? {
                None => self.done = true,
                Some(record) if record.timestamp < self.min_time => {}
                Some(record) => return Ok(Some(record)),
            }
        }
        Ok(None)
    }
}

/// Where a backfill starts.
#[derive(Debug, Clone, Copy)]
pub(super) enum From {
    /// The stream's first message.
    First,
    /// Just after the end of an earlier backfill.
    After(u64),
}

/// Copies what the topic's stream holds from `from` into `exchange` (a new group's), in
/// order; returns how many it copied and the stream offset where the copy ended, for a later
/// one to go on from.
pub(super) async fn backfill(
    bus: &RabbitBus,
    topic: &str,
    exchange: &str,
    from: From,
) -> Result<(u64, Option<u64>), BusError> {
    let start = match from {
        From::First => AMQPValue::LongString("first".into()),
        From::After(offset) => AMQPValue::LongLongInt(offset as i64 + 1),
    };
    let mut reader = LogReader::open(bus, topic, start).await?;
    let mut confirms = Vec::with_capacity(WINDOW);
    let mut copied = 0u64;
    while let Some(record) = reader.next().await? {
        let message = OutMessage {
            key: record.key,
            payload: record.payload,
            headers: record.headers,
        };
        confirms.push(bus.send(exchange, &message.key, &message).await?);
        copied += 1;
        if confirms.len() == WINDOW {
            for confirm in confirms.drain(..) {
                bus.confirmed(exchange, confirm).await?;
            }
        }
    }
    for confirm in confirms {
        bus.confirmed(exchange, confirm).await?;
    }
    if copied > 0 {
        tracing::info!(
            topic,
            exchange,
            copied,
            "a new group starts with what the topic holds"
        );
    }
    Ok((copied, reader.end))
}
