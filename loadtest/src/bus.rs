//! The `bus` scenario: N messages of B bytes published through an adapter with W in flight
//! and consumed by one group member, acking each; then the raw client (a SQLite append,
//! rdkafka, lapin) doing the same with the same durability, in the same run.
//!
//! Each payload carries its index and its send time, so latency is send → delivered to the
//! consumer. Throughput counts from the first send to the last delivery.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use broker_adapters::{Bus, EmbeddedBus, Event, KafkaBus, OutMessage, RabbitBus, SubscribeOptions};
use futures::{StreamExt, TryStreamExt};

use crate::report::{Latencies, Report, Run};

/// Which adapter to drive.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Adapter {
    Embedded,
    Kafka,
    Rabbitmq,
}

/// The `bus` scenario's settings.
#[derive(Debug, clap::Args)]
pub struct BusArgs {
    /// The adapter to drive (and whose raw client to compare with).
    #[arg(long, value_enum, default_value_t = Adapter::Embedded)]
    adapter: Adapter,
    /// Messages to send.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Payload bytes per message (at least 16).
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// Publishes in flight at once (awaiting their broker's confirmation).
    #[arg(long, default_value_t = 1000)]
    window: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    /// RabbitMQ URL.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A payload of `size` bytes: index, send time, filler.
fn payload(i: u64, size: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(size.max(16));
    bytes.extend_from_slice(&i.to_le_bytes());
    bytes.extend_from_slice(&now_ns().to_le_bytes());
    bytes.resize(size.max(16), b'x');
    bytes
}

/// Reads a payload's index and how long ago it was sent.
fn received(bytes: &[u8]) -> Option<(u64, Duration)> {
    let index = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let sent = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((index, Duration::from_nanos(now_ns().saturating_sub(sent))))
}

/// Counts distinct deliveries and their latencies until all `count` have arrived.
struct Tally {
    count: u64,
    seen: HashSet<u64>,
    latencies: Latencies,
}

impl Tally {
    fn new(count: u64) -> anyhow::Result<Tally> {
        Ok(Tally {
            count,
            seen: HashSet::with_capacity(count as usize),
            latencies: Latencies::new()?,
        })
    }

    /// Notes a delivery; true once everything arrived.
    fn note(&mut self, bytes: &[u8]) -> anyhow::Result<bool> {
        if let Some((index, latency)) = received(bytes)
            && self.seen.insert(index)
        {
            self.latencies.record(latency)?;
        }
        Ok(self.seen.len() as u64 >= self.count)
    }

    fn run(self, elapsed: Duration) -> Run {
        Run {
            count: self.count,
            elapsed,
            latencies: self.latencies,
            timeline: Default::default(),
        }
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}.{}", now_ns())
}

pub async fn run(args: BusArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.size >= 16, "--size must be at least 16 bytes");
    let temp = tempfile::tempdir()?;
    let (name, bus): (&str, Arc<dyn Bus>) = match args.adapter {
        Adapter::Embedded => (
            "embedded",
            Arc::new(EmbeddedBus::open(&temp.path().join("bus.sqlite")).await?),
        ),
        Adapter::Kafka => {
            let session = broker_adapters::kafka::DEFAULT_SESSION_TIMEOUT;
            (
                "kafka",
                Arc::new(KafkaBus::connect(&args.kafka_brokers, session)?),
            )
        }
        Adapter::Rabbitmq => ("rabbitmq", Arc::new(RabbitBus::connect(&args.amqp_url))),
    };
    println!(
        "bus {name}: {} messages of {} bytes, {} in flight, {} partitions",
        args.messages, args.size, args.window, args.partitions
    );
    let topic = unique("loadtest.bus");
    let run = through_adapter(bus, &topic, &args)
        .await
        .context("through the adapter")?;
    if let Adapter::Rabbitmq = args.adapter {
        // Queues outlive their consumers on RabbitMQ: leave the broker as it was.
        let bus = RabbitBus::connect(&args.amqp_url);
        bus.delete_topic(&topic, &["loadtest"]).await?;
        bus.delete_topic(&broker_adapters::dlq_topic(&topic), &[])
            .await?;
    }
    let baseline = match args.adapter {
        Adapter::Embedded => raw::sqlite(&temp.path().join("raw.sqlite"), &args).await,
        Adapter::Kafka => raw::kafka(&args).await,
        Adapter::Rabbitmq => raw::amqp(&args).await,
    }
    .context("through the raw client")?;
    Ok(Report {
        scenario: format!("bus-{name}"),
        run,
        baseline: Some(baseline),
        settings: serde_json::json!({
            "messages": args.messages,
            "size": args.size,
            "window": args.window,
            "partitions": args.partitions,
        }),
    })
}

async fn through_adapter(bus: Arc<dyn Bus>, topic: &str, args: &BusArgs) -> anyhow::Result<Run> {
    bus.create_topic(topic, args.partitions).await?;
    let mut subscription = bus
        .subscribe(topic, "loadtest", SubscribeOptions::default())
        .await?;
    // Publish only once the group owns every partition, so joining is not measured.
    let mut owned = 0;
    while owned < args.partitions {
        match tokio::time::timeout(Duration::from_secs(60), subscription.next()).await? {
            Ok(Event::Assigned(partitions)) => owned += partitions.len() as u32,
            Ok(_) => {}
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => return Err(e.into()),
        }
    }
    let mut tally = Tally::new(args.messages)?;
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        loop {
            if let Event::Delivery(delivery) = subscription.next().await? {
                let done = tally.note(&delivery.record.payload)?;
                delivery.ack();
                if done {
                    let elapsed = start.elapsed();
                    subscription.close().await?;
                    return Ok::<_, anyhow::Error>(tally.run(elapsed));
                }
            }
        }
    });
    let size = args.size;
    futures::stream::iter(0..args.messages)
        .map(|i| {
            let (bus, topic) = (bus.clone(), topic.to_owned());
            async move {
                let message = OutMessage {
                    key: format!("k{}", i % 1024),
                    payload: payload(i, size),
                    headers: Vec::new(),
                };
                bus.publish(&topic, message).await.map_err(|e| e.error)
            }
        })
        .buffer_unordered(args.window)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    println!("  switchyard published in {:.2?}", start.elapsed());
    let run = consumer.await??;
    bus.close().await?;
    Ok(run)
}

/// The raw clients, doing the same work with the same durability.
mod raw {
    use std::path::Path;

    use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
    use rdkafka::message::Message;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use sqlx::Connection;
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous,
    };

    use super::*;

    /// Appends to one SQLite table (WAL, synchronous=FULL), a transaction per window, while a
    /// second connection reads the rows back in order.
    pub async fn sqlite(path: &Path, args: &BusArgs) -> anyhow::Result<Run> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let mut writer = SqliteConnection::connect_with(&options).await?;
        sqlx::raw_sql("CREATE TABLE log (seq INTEGER PRIMARY KEY, key TEXT, payload BLOB)")
            .execute(&mut writer)
            .await?;
        let mut reader = SqliteConnection::connect_with(&options).await?;
        let mut tally = Tally::new(args.messages)?;
        let start = Instant::now();
        let consumer = tokio::spawn(async move {
            let mut after = 0i64;
            loop {
                let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
                    "SELECT seq, payload FROM log WHERE seq > ? ORDER BY seq LIMIT 512",
                )
                .bind(after)
                .fetch_all(&mut reader)
                .await?;
                if rows.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                for (seq, payload) in rows {
                    after = seq;
                    if tally.note(&payload)? {
                        return Ok::<_, anyhow::Error>(tally.run(start.elapsed()));
                    }
                }
            }
        });
        let mut i = 0;
        while i < args.messages {
            let mut tx = writer.begin().await?;
            for _ in 0..args.window.min((args.messages - i) as usize) {
                sqlx::query("INSERT INTO log (key, payload) VALUES (?, ?)")
                    .bind(format!("k{}", i % 1024))
                    .bind(payload(i, args.size))
                    .execute(&mut *tx)
                    .await?;
                i += 1;
            }
            tx.commit().await?;
        }
        println!("  raw client published in {:.2?}", start.elapsed());
        consumer.await?
    }

    /// rdkafka with the adapter's producer settings (acks=all, idempotence, murmur2_random)
    /// and a group consumer committing what it handled every 200 ms.
    pub async fn kafka(args: &BusArgs) -> anyhow::Result<Run> {
        let topic = unique("loadtest.raw");
        let session = broker_adapters::kafka::DEFAULT_SESSION_TIMEOUT;
        KafkaBus::connect(&args.kafka_brokers, session)?
            .create_topic(&topic, args.partitions)
            .await?;
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", &args.kafka_brokers);
        let producer: FutureProducer = config
            .clone()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "2")
            .create()?;
        let consumer: StreamConsumer = config
            .set("group.id", "loadtest-raw")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "50")
            .create()?;
        consumer.subscribe(&[&topic])?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while consumer.assignment()?.count() < args.partitions as usize {
            anyhow::ensure!(Instant::now() < deadline, "the raw consumer never joined");
            // Polling drives the join; nothing is published yet.
            let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
        }
        let mut tally = Tally::new(args.messages)?;
        let start = Instant::now();
        let reader = tokio::spawn(async move {
            let mut last_commit = Instant::now();
            loop {
                let message = consumer.recv().await?;
                let done = tally.note(message.payload().unwrap_or_default())?;
                consumer.store_offset_from_message(&message)?;
                if done || last_commit.elapsed() > Duration::from_millis(200) {
                    consumer.commit_consumer_state(CommitMode::Async)?;
                    last_commit = Instant::now();
                }
                if done {
                    return Ok::<_, anyhow::Error>(tally.run(start.elapsed()));
                }
            }
        });
        let size = args.size;
        futures::stream::iter(0..args.messages)
            .map(|i| {
                let (producer, topic) = (producer.clone(), topic.clone());
                async move {
                    let key = format!("k{}", i % 1024);
                    let bytes = payload(i, size);
                    let record = FutureRecord::to(&topic).key(&key).payload(&bytes);
                    producer
                        .send(record, Duration::from_secs(30))
                        .await
                        .map(drop)
                        .map_err(|(e, _)| anyhow::anyhow!(e))
                }
            })
            .buffer_unordered(args.window)
            .try_for_each(|_| async { Ok(()) })
            .await?;
        println!("  raw client published in {:.2?}", start.elapsed());
        reader.await?
    }

    /// lapin with the adapter's topology and durability: a fanout exchange feeding a stream
    /// and a consistent-hash exchange over one durable quorum queue per partition, persistent
    /// messages, publisher confirms with the window in flight, a consumer per queue acking
    /// each message.
    pub async fn amqp(args: &BusArgs) -> anyhow::Result<Run> {
        use lapin::options::*;
        use lapin::types::{AMQPValue, FieldTable};
        let name = unique("loadtest.raw");
        let connection = lapin::Connection::connect(&args.amqp_url, Default::default()).await?;
        let setup = connection.create_channel().await?;
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let hash = format!("{name}.hash");
        setup
            .exchange_declare(
                name.as_str().into(),
                lapin::ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        setup
            .exchange_declare(
                hash.as_str().into(),
                lapin::ExchangeKind::Custom("x-consistent-hash".into()),
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        setup
            .exchange_bind(
                hash.as_str().into(),
                name.as_str().into(),
                "".into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let log = format!("{name}.log");
        let queues: Vec<String> = (0..args.partitions)
            .map(|p| format!("{name}.p{p}"))
            .collect();
        let declare = |queue: String, kind: &'static str, exchange: String, key: &'static str| {
            let setup = setup.clone();
            async move {
                let mut arguments = FieldTable::default();
                arguments.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
                setup
                    .queue_declare(queue.as_str().into(), durable, arguments)
                    .await?;
                setup
                    .queue_bind(
                        queue.as_str().into(),
                        exchange.as_str().into(),
                        key.into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
            }
        };
        declare(log.clone(), "stream", name.clone(), "").await?;
        for queue in &queues {
            declare(queue.clone(), "quorum", hash.clone(), "1").await?;
        }
        let (deliveries, mut delivered) = tokio::sync::mpsc::unbounded_channel();
        for queue in &queues {
            let channel = connection.create_channel().await?;
            channel.basic_qos(256, BasicQosOptions::default()).await?;
            let mut consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let deliveries = deliveries.clone();
            tokio::spawn(async move {
                let _channel = channel;
                while let Some(Ok(delivery)) = consumer.next().await {
                    if deliveries.send(delivery).is_err() {
                        break;
                    }
                }
            });
        }
        let mut tally = Tally::new(args.messages)?;
        let start = Instant::now();
        let reader = tokio::spawn(async move {
            while let Some(delivery) = delivered.recv().await {
                let done = tally.note(&delivery.data)?;
                delivery.acker.ack(BasicAckOptions::default()).await?;
                if done {
                    return Ok::<_, anyhow::Error>(tally.run(start.elapsed()));
                }
            }
            anyhow::bail!("the raw consumers stopped")
        });
        let publishing = connection.create_channel().await?;
        publishing
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let mut in_flight = futures::stream::FuturesUnordered::new();
        for i in 0..args.messages {
            if in_flight.len() >= args.window
                && let Some(confirm) = in_flight.next().await
            {
                anyhow::ensure!(
                    matches!(confirm?, lapin::Confirmation::Ack(_)),
                    "a publish was refused"
                );
            }
            let properties = lapin::BasicProperties::default().with_delivery_mode(2);
            let confirm = publishing
                .basic_publish(
                    name.as_str().into(),
                    format!("k{}", i % 1024).as_str().into(),
                    BasicPublishOptions::default(),
                    &payload(i, args.size),
                    properties,
                )
                .await?;
            in_flight.push(confirm);
        }
        while let Some(confirm) = in_flight.next().await {
            anyhow::ensure!(
                matches!(confirm?, lapin::Confirmation::Ack(_)),
                "a publish was refused"
            );
        }
        println!("  raw client published in {:.2?}", start.elapsed());
        let run = reader.await??;
        for queue in queues.iter().chain([&log]) {
            setup
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in [&hash, &name] {
            setup
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(run)
    }
}
