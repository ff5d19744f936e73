//! One suite of bus semantics (DESIGN §3); each adapter's module instantiates it with
//! `conformance_suite!` and a `Fixture` that reaches its real broker.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use broker_adapters::{Bus, Delivery, OutMessage, Record, ReplayFrom, SubscribeOptions, dlq_topic};

/// Access to one adapter's broker for the suite.
pub trait Fixture: Send + Sync {
    /// A bus handle; `restart` invalidates earlier ones.
    fn bus(&self) -> impl Future<Output = Arc<dyn Bus>> + Send;
    /// Restarts the broker (or reopens the embedded log) with every earlier handle dropped.
    fn restart(&self) -> impl Future<Output = ()> + Send;
}

static TOPICS: AtomicU32 = AtomicU32::new(0);

fn unique(name: &str) -> String {
    let n = TOPICS.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("conf.{name}.{n}.{nanos}")
}

fn msg(key: &str, payload: impl Into<Vec<u8>>) -> OutMessage {
    OutMessage {
        key: key.into(),
        payload: payload.into(),
        headers: vec![("ce_type".into(), "test".into())],
    }
}

const WAIT: Duration = Duration::from_secs(20);

async fn next(sub: &mut Box<dyn broker_adapters::Subscription>) -> Delivery {
    loop {
        let event = tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("a delivery in time")
            .expect("subscription works");
        if let broker_adapters::Event::Delivery(d) = event {
            return d;
        }
    }
}

/// Receives `n` deliveries, acking each.
async fn take(sub: &mut Box<dyn broker_adapters::Subscription>, n: usize) -> Vec<Record> {
    let mut out = Vec::new();
    while out.len() < n {
        let d = next(sub).await;
        out.push(d.record.clone());
        d.ack();
    }
    out
}

fn payloads(records: &[Record]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.payload.clone()).unwrap())
        .collect()
}

/// Joins group `g` on `topic` with default options.
async fn join(bus: &dyn Bus, topic: &str) -> Box<dyn broker_adapters::Subscription> {
    bus.subscribe(topic, "g", SubscribeOptions::default())
        .await
        .unwrap()
}

/// Publishes `m<i>` under key `k<i>` for each i.
async fn publish_numbered(bus: &dyn Bus, topic: &str, range: std::ops::Range<u32>) {
    for i in range {
        bus.publish(topic, msg(&format!("k{i}"), format!("m{i}")))
            .await
            .unwrap();
    }
}

async fn replay_all(bus: &dyn Bus, topic: &str, from: ReplayFrom) -> Vec<Record> {
    let mut replay = bus.replay(topic, from).await.unwrap();
    let mut out = Vec::new();
    while let Some(r) = replay.next().await.unwrap() {
        out.push(r);
    }
    out
}

pub async fn publish_subscribe(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("pubsub");
    bus.create_topic(&topic, 4).await.unwrap();
    bus.create_topic(&topic, 4)
        .await
        .expect("creating again alike is fine");
    assert!(
        bus.create_topic(&topic, 3).await.is_err(),
        "another partition count is refused"
    );
    let mut sub = join(bus.as_ref(), &topic).await;
    publish_numbered(bus.as_ref(), &topic, 0..20).await;
    let got = take(&mut sub, 20).await;
    assert_eq!(payloads(&got), (0..20).map(|i| format!("m{i}")).collect());
    assert_eq!(got[0].header("ce_type"), Some("test"));
    assert!(
        bus.publish("conf.never-created", msg("k", "x"))
            .await
            .is_err_and(|e| e.message.payload == b"x")
    );
    sub.close().await.unwrap();
}

pub async fn per_key_order(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("order");
    bus.create_topic(&topic, 4).await.unwrap();
    for i in 0..60 {
        bus.publish(
            &topic,
            msg(&format!("key{}", i % 3), format!("{}:{i}", i % 3)),
        )
        .await
        .unwrap();
    }
    let mut sub = join(bus.as_ref(), &topic).await;
    let got = take(&mut sub, 60).await;
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in &got {
        let text = String::from_utf8(r.payload.clone()).unwrap();
        let (_, seq) = text.split_once(':').unwrap();
        per_key
            .entry(r.key.clone())
            .or_default()
            .push(seq.parse().unwrap());
    }
    for (key, seqs) in per_key {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{key}: {seqs:?}");
        assert_eq!(seqs.len(), 20);
    }
    sub.close().await.unwrap();
}

pub async fn concurrent_publishers(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("concurrent");
    bus.create_topic(&topic, 4).await.unwrap();
    let mut tasks = Vec::new();
    for p in 0..4 {
        let bus = bus.clone();
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                bus.publish(
                    &topic,
                    msg(&format!("p{p}-{}", i % 5), format!("p{p}-m{i}")),
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut sub = join(bus.as_ref(), &topic).await;
    let got = take(&mut sub, 200).await;
    assert_eq!(payloads(&got).len(), 200);
    sub.close().await.unwrap();
}

pub async fn group_sharing_and_rebalance(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("group");
    bus.create_topic(&topic, 6).await.unwrap();
    let mut a = join(bus.as_ref(), &topic).await;
    let mut b = join(bus.as_ref(), &topic).await;
    publish_numbered(bus.as_ref(), &topic, 0..60).await;
    // Both members work, on disjoint partitions.
    let got_a = take(&mut a, 10).await;
    let got_b = take(&mut b, 10).await;
    let parts_a: BTreeSet<_> = got_a.iter().map(|r| r.partition).collect();
    let parts_b: BTreeSet<_> = got_b.iter().map(|r| r.partition).collect();
    assert!(parts_a.is_disjoint(&parts_b), "{parts_a:?} vs {parts_b:?}");
    // `b` leaves without closing (as if its process died): `a` takes over every partition.
    drop(b);
    let mut seen = payloads(&got_a);
    seen.extend(payloads(&got_b));
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() < 60 && tokio::time::Instant::now() < deadline {
        let d = next(&mut a).await;
        seen.insert(String::from_utf8(d.record.payload.clone()).unwrap());
        d.ack();
    }
    assert_eq!(seen.len(), 60, "every message reached the group");
    a.close().await.unwrap();
}

pub async fn nack_redelivers(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("nack");
    bus.create_topic(&topic, 1).await.unwrap();
    bus.publish(&topic, msg("k", "first")).await.unwrap();
    bus.publish(&topic, msg("k", "second")).await.unwrap();
    let mut sub = join(bus.as_ref(), &topic).await;
    let d = next(&mut sub).await;
    assert_eq!((d.record.payload.as_slice(), d.attempt), (&b"first"[..], 1));
    d.nack("not yet");
    let nacked = std::time::Instant::now();
    let d = next(&mut sub).await;
    assert!(
        nacked.elapsed() >= SubscribeOptions::default().redelivery_delay,
        "redelivery waits its backoff"
    );
    assert_eq!(
        (d.record.payload.as_slice(), d.attempt),
        (&b"first"[..], 2),
        "redelivered before the next"
    );
    d.ack();
    let d = next(&mut sub).await;
    assert_eq!(d.record.payload, b"second");
    drop(d); // as when a handler panics
    let d = next(&mut sub).await;
    assert_eq!(
        (d.record.payload.as_slice(), d.attempt),
        (&b"second"[..], 2),
        "an unsettled drop is a nack"
    );
    d.ack();
    sub.close().await.unwrap();
}

pub async fn dead_letters(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("dlq");
    bus.create_topic(&topic, 1).await.unwrap();
    for p in ["poison", "garbage", "fine"] {
        bus.publish(&topic, msg("k", p)).await.unwrap();
    }
    let mut sub = bus
        .subscribe(
            &topic,
            "g",
            SubscribeOptions {
                max_attempts: 3,
                redelivery_delay: Duration::from_millis(20),
                ..SubscribeOptions::default()
            },
        )
        .await
        .unwrap();
    for attempt in 1..=3 {
        let d = next(&mut sub).await;
        assert_eq!(
            (d.record.payload.as_slice(), d.attempt),
            (&b"poison"[..], attempt)
        );
        d.nack(format!("boom {attempt}"));
    }
    let d = next(&mut sub).await;
    assert_eq!(d.record.payload, b"garbage");
    d.dead_letter("undecodable");
    let d = next(&mut sub).await;
    assert_eq!(d.record.payload, b"fine");
    d.ack();
    sub.close().await.unwrap();
    let dead = replay_all(bus.as_ref(), &dlq_topic(&topic), ReplayFrom::Start).await;
    let summary: Vec<_> = dead
        .iter()
        .map(|r| {
            (
                r.payload.clone(),
                r.header("dlq_reason").unwrap().to_owned(),
                r.header("dlq_attempts").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (b"poison".to_vec(), "boom 3".to_owned(), "3".to_owned()),
            (
                b"garbage".to_vec(),
                "undecodable".to_owned(),
                "1".to_owned()
            )
        ]
    );
    assert_eq!(dead[0].header("dlq_topic"), Some(topic.as_str()));
    assert_eq!(
        dead[0].header("ce_type"),
        Some("test"),
        "original headers are kept"
    );
}

pub async fn replay_from_start_offset_and_time(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("replay");
    bus.create_topic(&topic, 1).await.unwrap();
    for i in 0..5 {
        bus.publish(&topic, msg("k", format!("early{i}")))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let middle = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(30)).await;
    for i in 0..5 {
        bus.publish(&topic, msg("k", format!("late{i}")))
            .await
            .unwrap();
    }
    let all = replay_all(bus.as_ref(), &topic, ReplayFrom::Start).await;
    assert_eq!(all.len(), 10);
    assert_eq!(
        all.iter().map(|r| r.offset.unwrap()).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    let from_offset = replay_all(bus.as_ref(), &topic, ReplayFrom::Offsets([(0, 7)].into())).await;
    assert_eq!(
        from_offset
            .iter()
            .map(|r| r.offset.unwrap())
            .collect::<Vec<_>>(),
        vec![7, 8, 9]
    );
    let from_time = replay_all(bus.as_ref(), &topic, ReplayFrom::Time(middle)).await;
    assert_eq!(
        payloads(&from_time),
        (0..5).map(|i| format!("late{i}")).collect()
    );
    // A replay is independent of groups: consuming does not change it.
    let mut sub = join(bus.as_ref(), &topic).await;
    take(&mut sub, 10).await;
    sub.close().await.unwrap();
    assert_eq!(
        replay_all(bus.as_ref(), &topic, ReplayFrom::Start)
            .await
            .len(),
        10
    );
}

pub async fn close_and_reopen_without_loss(f: &impl Fixture) {
    let topic = unique("reopen");
    {
        let bus = f.bus().await;
        bus.create_topic(&topic, 2).await.unwrap();
        publish_numbered(bus.as_ref(), &topic, 0..10).await;
        let mut sub = join(bus.as_ref(), &topic).await;
        let first = take(&mut sub, 4).await;
        assert_eq!(first.len(), 4);
        // One more delivered but never acked: it must come back.
        let _unacked = next(&mut sub).await;
        sub.close().await.unwrap();
    }
    f.restart().await;
    let bus = f.bus().await;
    let mut sub = join(bus.as_ref(), &topic).await;
    let rest = take(&mut sub, 6).await;
    assert_eq!(
        payloads(&rest).len(),
        6,
        "the unacked and the unread, each once"
    );
    sub.close().await.unwrap();
}

pub async fn restart_mid_stream(f: &impl Fixture) {
    let topic = unique("restart");
    let before = {
        let bus = f.bus().await;
        bus.create_topic(&topic, 3).await.unwrap();
        for i in 0..50 {
            bus.publish(&topic, msg(&format!("k{}", i % 7), format!("m{i}")))
                .await
                .unwrap();
        }
        let mut sub = join(bus.as_ref(), &topic).await;
        let got = take(&mut sub, 20).await;
        sub.close().await.unwrap();
        got
    };
    f.restart().await;
    let bus = f.bus().await;
    for i in 50..100 {
        bus.publish(&topic, msg(&format!("k{}", i % 7), format!("m{i}")))
            .await
            .unwrap();
    }
    let mut sub = join(bus.as_ref(), &topic).await;
    let after = take(&mut sub, 80).await;
    let mut seen = payloads(&before);
    seen.extend(payloads(&after));
    assert_eq!(seen, (0..100).map(|i| format!("m{i}")).collect());
    sub.close().await.unwrap();
}

pub async fn large_messages(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("large");
    bus.create_topic(&topic, 1).await.unwrap();
    let big: Vec<u8> = (0..900_000u32).map(|i| (i % 251) as u8).collect();
    bus.publish(&topic, msg("k", big.clone())).await.unwrap();
    let mut sub = join(bus.as_ref(), &topic).await;
    let d = next(&mut sub).await;
    assert_eq!(d.record.payload, big);
    d.ack();
    sub.close().await.unwrap();
}

pub async fn many_topics(f: &impl Fixture) {
    let bus = f.bus().await;
    let topics: Vec<String> = (0..40).map(|i| unique(&format!("many{i}"))).collect();
    for t in &topics {
        bus.create_topic(t, 2).await.unwrap();
        bus.publish(t, msg("k", t.clone())).await.unwrap();
    }
    for t in &topics {
        let mut sub = bus
            .subscribe(t, "g", SubscribeOptions::default())
            .await
            .unwrap();
        assert_eq!(take(&mut sub, 1).await[0].payload, t.as_bytes());
        sub.close().await.unwrap();
    }
}

/// Declares one `#[tokio::test]` per case, each calling `$fixture().await` for its fixture.
#[macro_export]
macro_rules! conformance_suite {
    ($fixture:expr) => {
        $crate::conformance_suite!(@cases $fixture;
            publish_subscribe, per_key_order, concurrent_publishers, group_sharing_and_rebalance,
            nack_redelivers, dead_letters, replay_from_start_offset_and_time,
            close_and_reopen_without_loss, restart_mid_stream, large_messages, many_topics);
    };
    (@cases $fixture:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(fixture) = $fixture.await {
                    $crate::conformance::$case(&fixture).await;
                }
            }
        )*
    };
}
