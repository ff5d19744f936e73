//! Embedded bus publish → consume, beside a raw SQLite append of the same bytes with the same
//! durability (WAL, synchronous=FULL, one commit per message), in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker_adapters::{Bus, EmbeddedBus, Event, OutMessage, SubscribeOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Row};

const MESSAGES: u64 = 500;
const PAYLOAD: usize = 200;

fn message(i: u64) -> OutMessage {
    OutMessage {
        key: format!("task/{}", i % 64),
        payload: vec![b'x'; PAYLOAD],
        headers: vec![("ce_type".into(), "bench".into())],
    }
}

/// Publishes `MESSAGES` with `publishers` concurrent publishers, then consumes and acks them all.
async fn embedded(publishers: u64) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let bus = Arc::new(
        EmbeddedBus::open(&dir.path().join("bus.sqlite"))
            .await
            .unwrap(),
    );
    bus.create_topic("bench", 8).await.unwrap();
    let mut sub = bus
        .subscribe("bench", "g", SubscribeOptions::default())
        .await
        .unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in (p..MESSAGES).step_by(publishers as usize) {
                    bus.publish("bench", message(i)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let mut acked = 0;
    while acked < MESSAGES {
        if let Event::Delivery(d) = sub.next().await.unwrap() {
            d.ack();
            acked += 1;
        }
    }
    let elapsed = start.elapsed();
    sub.close().await.unwrap();
    elapsed
}

/// The same bytes appended to SQLite directly, one durable commit each, then read back.
async fn raw_sqlite() -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("raw.sqlite"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE log (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, payload BLOB NOT NULL)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let start = Instant::now();
    for i in 0..MESSAGES {
        let m = message(i);
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("INSERT INTO log (key, payload) VALUES (?, ?)")
            .bind(m.key)
            .bind(m.payload)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let rows = sqlx::query("SELECT seq, key, payload FROM log ORDER BY seq")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows.len() as u64, MESSAGES);
    std::hint::black_box(
        rows.iter()
            .map(|r| r.get::<Vec<u8>, _>(2).len())
            .sum::<usize>(),
    );
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("publish_then_consume_500x200B");
    group.throughput(Throughput::Elements(MESSAGES));
    group.sample_size(10);
    group.bench_function("raw_sqlite_append_1_writer", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| runtime.block_on(raw_sqlite())).sum())
    });
    for publishers in [1, 32] {
        group.bench_function(format!("embedded_bus_{publishers}_publishers"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| runtime.block_on(embedded(publishers)))
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
