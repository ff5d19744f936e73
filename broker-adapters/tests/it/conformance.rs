//! One suite of bus semantics (DESIGN §3), in the spirit of Watermill's universal pub/sub
//! tests; each adapter's module instantiates it with `conformance_suite!` and a `Fixture`
//! that reaches its real broker.
//!
//! Every payload is unique within a case and stands for the message's id: each case checks
//! the exact set received (nothing lost, nothing foreign), after removing the duplicates an
//! at-least-once bus may give.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use broker_adapters::{
    Bus, BusError, Delivery, Event, OutMessage, Record, ReplayFrom, StartAt, SubscribeOptions,
    Subscription, dlq_topic,
};

/// Access to one adapter's broker for the suite.
pub trait Fixture: Send + Sync {
    /// The current bus handle.
    fn bus(&self) -> impl Future<Output = Arc<dyn Bus>> + Send;
    /// Closes the current handle and opens a new one; the broker keeps running.
    fn reopen(&self) -> impl Future<Output = ()> + Send;
    /// Kills the broker (SIGKILL) and starts it again; for embedded, drops the adapter without
    /// a flush, so the next `bus` opens the log anew.
    fn restart(&self) -> impl Future<Output = ()> + Send;
    /// Removes what the case left on a shared broker.
    fn cleanup(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

type Sub = Box<dyn Subscription>;

static TOPICS: AtomicU32 = AtomicU32::new(0);

fn unique(name: &str) -> String {
    let n = TOPICS.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("conf.{name}.{n}.{nanos}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn msg(key: &str, payload: impl Into<Vec<u8>>) -> OutMessage {
    OutMessage {
        key: key.into(),
        payload: payload.into(),
        headers: vec![("ce_type".into(), "test".into())],
    }
}

/// The longest any single wait in the suite may take.
const WAIT: Duration = Duration::from_secs(30);

/// Fast redelivery, for cases that nack on purpose.
fn quick(max_attempts: u32) -> SubscribeOptions {
    SubscribeOptions {
        max_attempts,
        redelivery_delay: Duration::from_millis(20),
        ..SubscribeOptions::default()
    }
}

fn text(record: &Record) -> String {
    String::from_utf8(record.payload.clone()).unwrap()
}

fn names(prefix: &str, range: std::ops::Range<u32>) -> BTreeSet<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

/// The next delivery, skipping ownership events.
async fn next(sub: &mut Sub) -> Delivery {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, sub.next())
            .await
            .expect("a delivery in time")
            .expect("the subscription works");
        if let Event::Delivery(d) = event {
            return d;
        }
    }
}

/// Whether a delivery arrives within `window` (settled by `f` if so).
async fn delivery_within(sub: &mut Sub, window: Duration) -> Option<Delivery> {
    let deadline = Instant::now() + window;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Err(_) => return None,
            Ok(Ok(Event::Delivery(d))) => return Some(d),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("the subscription failed: {e}"),
        }
    }
}

/// Receives and acks until every payload of `expected` has arrived; panics on any other
/// payload. Returns everything received, duplicates included, in arrival order.
async fn receive_exactly(sub: &mut Sub, expected: &BTreeSet<String>) -> Vec<Record> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    while !expected.is_subset(&seen) {
        let d = next(sub).await;
        let payload = text(&d.record);
        assert!(
            expected.contains(&payload),
            "unexpected message `{payload}`"
        );
        seen.insert(payload);
        out.push(d.record.clone());
        d.ack();
    }
    out
}

/// Joins group `group` on `topic`.
async fn join(bus: &dyn Bus, topic: &str, group: &str, options: SubscribeOptions) -> Sub {
    bus.subscribe(topic, group, options)
        .await
        .unwrap_or_else(|e| panic!("joining {group} on {topic}: {e}"))
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
    let mut replay = bus.replay(topic, from.clone()).await.unwrap();
    let expected = replay.expected();
    let mut out = Vec::new();
    while let Some(r) = replay.next().await.unwrap() {
        out.push(r);
    }
    // What a broker says beforehand is what the replay reads at most, and all of it from
    // the start (a broker's time lookup may start early; the replay filters by time then).
    if let Some(expected) = expected {
        let read = out.len() as u64;
        assert!(
            expected >= read,
            "{expected} expected from {from:?}, {read} read"
        );
        if from == ReplayFrom::Start {
            assert_eq!(expected, read, "expected from the start");
        }
    }
    out
}

/// Removes later duplicates (by payload), keeping first arrivals in order.
fn first_arrivals(records: &[Record]) -> Vec<Record> {
    let mut seen = BTreeSet::new();
    records
        .iter()
        .filter(|r| seen.insert(r.payload.clone()))
        .cloned()
        .collect()
}

/// Drives the members until their assignments are disjoint and cover `partitions`, so that
/// the cases that follow see a settled group. Returns each member's partitions.
async fn settle_group(members: &mut [Sub], partitions: u32) -> Vec<BTreeSet<u32>> {
    let mut owned = vec![BTreeSet::new(); members.len()];
    let deadline = Instant::now() + WAIT;
    loop {
        let union: BTreeSet<u32> = owned.iter().flatten().copied().collect();
        let total: usize = owned.iter().map(BTreeSet::len).sum();
        if union.len() == partitions as usize && total == partitions as usize {
            return owned;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not settle: {owned:?}"
        );
        for (i, member) in members.iter_mut().enumerate() {
            match tokio::time::timeout(Duration::from_millis(50), member.next()).await {
                Ok(Ok(Event::Assigned(ps))) => owned[i].extend(ps),
                Ok(Ok(Event::Revoked(r))) => {
                    for p in &r.partitions {
                        owned[i].remove(p);
                    }
                }
                Ok(Ok(Event::Delivery(d))) => panic!("no message was published yet: {d:?}"),
                Ok(Err(e)) => panic!("the subscription failed: {e}"),
                Err(_) => {}
            }
        }
    }
}

pub async fn publish_subscribe(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("pubsub");
    bus.create_topic(&topic, 4).await.unwrap();
    bus.create_topic(&topic, 4)
        .await
        .expect("creating again alike is fine");
    assert!(
        matches!(
            bus.create_topic(&topic, 3).await,
            Err(BusError::PartitionMismatch { existing: 4, .. })
        ),
        "another partition count is refused"
    );
    assert_eq!(bus.partitions(&topic).await.unwrap(), 4);
    let unknown = bus.partitions("conf.never-created").await;
    assert!(
        matches!(unknown, Err(BusError::UnknownTopic(_))),
        "{unknown:?}"
    );
    let mut sub = join(bus.as_ref(), &topic, "g", SubscribeOptions::default()).await;
    publish_numbered(bus.as_ref(), &topic, 0..20).await;
    let got = receive_exactly(&mut sub, &names("m", 0..20)).await;
    assert_eq!(got[0].header("ce_type"), Some("test"));
    assert!(got.iter().all(|r| r.topic == topic && r.partition < 4));
    let refused = bus.publish("conf.never-created", msg("k", "x")).await;
    assert!(
        refused.is_err_and(|e| e.message.payload == b"x"),
        "a publish to a missing topic fails and gives the message back"
    );
    sub.close().await.unwrap();
}

pub async fn per_key_order(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("order");
    bus.create_topic(&topic, 4).await.unwrap();
    for i in 0..60 {
        let key = format!("key{}", i % 3);
        bus.publish(&topic, msg(&key, format!("{}:{i}", i % 3)))
            .await
            .unwrap();
    }
    let mut sub = join(bus.as_ref(), &topic, "g", SubscribeOptions::default()).await;
    let expected = (0..60).map(|i| format!("{}:{i}", i % 3)).collect();
    let got = first_arrivals(&receive_exactly(&mut sub, &expected).await);
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in &got {
        let (_, seq) = text(r)
            .split_once(':')
            .map(|(k, s)| (k.to_owned(), s.to_owned()))
            .unwrap();
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
        let (bus, topic) = (bus.clone(), topic.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let key = format!("p{p}-{}", i % 5);
                bus.publish(&topic, msg(&key, format!("p{p}-m{i}")))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut sub = join(bus.as_ref(), &topic, "g", SubscribeOptions::default()).await;
    let expected = (0..4)
        .flat_map(|p| (0..50).map(move |i| format!("p{p}-m{i}")))
        .collect();
    receive_exactly(&mut sub, &expected).await;
    sub.close().await.unwrap();
}

pub async fn group_sharing_and_rebalance(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("group");
    bus.create_topic(&topic, 6).await.unwrap();
    let a = join(bus.as_ref(), &topic, "g", SubscribeOptions::default()).await;
    let b = join(bus.as_ref(), &topic, "g", SubscribeOptions::default()).await;
    let mut members = [a, b];
    let owned = settle_group(&mut members, 6).await;
    assert!(
        owned.iter().all(|o| !o.is_empty()),
        "both members own partitions: {owned:?}"
    );
    let [mut a, b] = members;
    publish_numbered(bus.as_ref(), &topic, 0..60).await;
    let mut b = b;
    // Both members work, each on its own partitions only.
    let mut seen = BTreeSet::new();
    for _ in 0..5 {
        for (i, sub) in [&mut a, &mut b].into_iter().enumerate() {
            let d = next(sub).await;
            assert!(
                owned[i].contains(&d.record.partition),
                "member {i} got {:?}",
                d.record
            );
            seen.insert(text(&d.record));
            d.ack();
        }
    }
    // `b` goes away without closing (as if its process died): `a` takes over its partitions.
    drop(b);
    let expected = names("m", 0..60);
    while !expected.is_subset(&seen) {
        let d = next(&mut a).await;
        assert!(expected.contains(&text(&d.record)));
        seen.insert(text(&d.record));
        d.ack();
    }
    a.close().await.unwrap();
}

pub async fn two_groups_each_get_everything(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("twogroups");
    bus.create_topic(&topic, 3).await.unwrap();
    let mut one = join(bus.as_ref(), &topic, "g1", SubscribeOptions::default()).await;
    let mut two = join(bus.as_ref(), &topic, "g2", SubscribeOptions::default()).await;
    publish_numbered(bus.as_ref(), &topic, 0..30).await;
    let expected = names("m", 0..30);
    receive_exactly(&mut one, &expected).await;
    receive_exactly(&mut two, &expected).await;
    one.close().await.unwrap();
    two.close().await.unwrap();
}

pub async fn nack_redelivers(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("nack");
    bus.create_topic(&topic, 1).await.unwrap();
    bus.publish(&topic, msg("k", "first")).await.unwrap();
    bus.publish(&topic, msg("k", "second")).await.unwrap();
    let mut sub = join(bus.as_ref(), &topic, "g", SubscribeOptions::default()).await;
    let d = next(&mut sub).await;
    assert_eq!((d.record.payload.as_slice(), d.attempt), (&b"first"[..], 1));
    d.nack("not yet");
    let nacked = Instant::now();
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

pub async fn redelivery_count_visible_to_the_handler(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("count");
    bus.create_topic(&topic, 1).await.unwrap();
    bus.publish(&topic, msg("k", "again")).await.unwrap();
    let mut sub = join(bus.as_ref(), &topic, "g", quick(10)).await;
    for attempt in 1..=4 {
        let d = next(&mut sub).await;
        assert_eq!(d.attempt, attempt);
        if attempt < 4 {
            d.nack(format!("try {attempt}"));
        } else {
            d.ack();
        }
    }
    assert!(
        delivery_within(&mut sub, Duration::from_millis(300))
            .await
            .is_none()
    );
    sub.close().await.unwrap();
}

pub async fn no_ack_holds_the_next_message_of_that_key(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("hold");
    bus.create_topic(&topic, 2).await.unwrap();
    bus.publish(&topic, msg("same", "one")).await.unwrap();
    bus.publish(&topic, msg("same", "two")).await.unwrap();
    let mut sub = join(bus.as_ref(), &topic, "g", SubscribeOptions::default()).await;
    let held = next(&mut sub).await;
    assert_eq!(held.record.payload, b"one");
    assert!(
        delivery_within(&mut sub, Duration::from_millis(500))
            .await
            .is_none(),
        "the key's next message waits while the first is unsettled"
    );
    held.ack();
    let d = next(&mut sub).await;
    assert_eq!(d.record.payload, b"two");
    d.ack();
    sub.close().await.unwrap();
}

/// A wide window: different keys of one partition out at once, never two of one key.
fn wide() -> SubscribeOptions {
    SubscribeOptions {
        in_flight: 8,
        ..SubscribeOptions::default()
    }
}

pub async fn many_in_flight_but_one_per_key(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("window");
    bus.create_topic(&topic, 1).await.unwrap();
    for (key, payload) in [("a", "a1"), ("b", "b1"), ("c", "c1"), ("a", "a2")] {
        bus.publish(&topic, msg(key, payload)).await.unwrap();
    }
    let mut sub = join(bus.as_ref(), &topic, "g", wide()).await;
    let mut out = Vec::new();
    for _ in 0..3 {
        out.push(next(&mut sub).await);
    }
    let payloads: BTreeSet<String> = out.iter().map(|d| text(&d.record)).collect();
    let first: BTreeSet<String> = ["a1", "b1", "c1"].map(String::from).into();
    assert_eq!(payloads, first, "three keys out at once");
    assert!(
        delivery_within(&mut sub, Duration::from_millis(300))
            .await
            .is_none(),
        "a2 waits while a1 is out"
    );
    let a1 = out.remove(0);
    assert_eq!(a1.record.payload, b"a1");
    a1.ack();
    let a2 = next(&mut sub).await;
    assert_eq!(a2.record.payload, b"a2");
    a2.ack();
    out.into_iter().for_each(Delivery::ack);
    sub.close().await.unwrap();
}

pub async fn commits_never_pass_unfinished_work(f: &impl Fixture) {
    let topic = unique("contiguous");
    {
        let bus = f.bus().await;
        bus.create_topic(&topic, 1).await.unwrap();
        for key in ["x", "y", "z"] {
            bus.publish(&topic, msg(key, key)).await.unwrap();
        }
        let mut sub = join(bus.as_ref(), &topic, "g", wide()).await;
        let mut out = Vec::new();
        for _ in 0..3 {
            out.push(next(&mut sub).await);
        }
        assert_eq!(out[0].record.payload, b"x");
        let x = out.remove(0);
        out.into_iter().for_each(Delivery::ack);
        // Later records settled, the first not: a commit must not pass it.
        let _ = delivery_within(&mut sub, Duration::from_millis(300)).await;
        sub.close().await.unwrap();
        drop(x);
    }
    f.reopen().await;
    let bus = f.bus().await;
    let mut sub = join(bus.as_ref(), &topic, "g", wide()).await;
    let again = next(&mut sub).await;
    assert_eq!(
        again.record.payload, b"x",
        "the unfinished record comes back first"
    );
    again.ack();
    sub.close().await.unwrap();
}

pub async fn dead_letters(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("dlq");
    bus.create_topic(&topic, 1).await.unwrap();
    for p in ["poison", "garbage", "fine"] {
        bus.publish(&topic, msg("k", p)).await.unwrap();
    }
    let mut sub = join(bus.as_ref(), &topic, "g", quick(3)).await;
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
                text(r),
                r.header("dlq_reason").unwrap().to_owned(),
                r.header("dlq_attempts").unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [("poison", "boom 3", "3"), ("garbage", "undecodable", "1")];
    assert_eq!(
        summary,
        expected.map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
    assert_eq!(dead[0].header("dlq_topic"), Some(topic.as_str()));
    assert_eq!(dead[0].key, "k");
    assert_eq!(
        dead[0].header("ce_type"),
        Some("test"),
        "original headers are kept"
    );
}

pub async fn poison_message_never_blocks_its_partition(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("poison");
    bus.create_topic(&topic, 1).await.unwrap();
    bus.publish(&topic, msg("k", "poison")).await.unwrap();
    for i in 0..5 {
        bus.publish(&topic, msg(&format!("k{}", i % 2), format!("good{i}")))
            .await
            .unwrap();
    }
    let mut sub = join(bus.as_ref(), &topic, "g", quick(3)).await;
    let mut good = BTreeSet::new();
    let expected = names("good", 0..5);
    while good != expected {
        let d = next(&mut sub).await;
        if d.record.payload == b"poison" {
            d.nack("always fails");
        } else {
            good.insert(text(&d.record));
            d.ack();
        }
    }
    sub.close().await.unwrap();
    let dead = replay_all(bus.as_ref(), &dlq_topic(&topic), ReplayFrom::Start).await;
    assert_eq!(dead.iter().map(text).collect::<Vec<_>>(), ["poison"]);
}

pub async fn forced_failures(f: &impl Fixture) {
    // As Dapr's conformance tests do: fail the 1st, the 2nd and every 5th delivery.
    let bus = f.bus().await;
    let topic = unique("forced");
    bus.create_topic(&topic, 2).await.unwrap();
    for i in 0..30 {
        bus.publish(
            &topic,
            msg(&format!("k{}", i % 3), format!("{}:{i}", i % 3)),
        )
        .await
        .unwrap();
    }
    let mut sub = join(bus.as_ref(), &topic, "g", quick(10)).await;
    let expected: BTreeSet<String> = (0..30).map(|i| format!("{}:{i}", i % 3)).collect();
    let (mut deliveries, mut acked, mut redelivered) = (0u32, Vec::new(), 0);
    while acked.len() < expected.len() {
        let d = next(&mut sub).await;
        deliveries += 1;
        if d.attempt > 1 {
            redelivered += 1;
        }
        if deliveries <= 2 || deliveries % 5 == 0 {
            d.nack(format!("forced failure of delivery {deliveries}"));
        } else {
            assert!(expected.contains(&text(&d.record)));
            acked.push(d.record.clone());
            d.ack();
        }
    }
    assert!(redelivered >= 2, "failed deliveries came back");
    let got = first_arrivals(&acked);
    assert_eq!(got.len(), 30, "each message acked once");
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in &got {
        let seq = text(r).split_once(':').unwrap().1.parse().unwrap();
        per_key.entry(r.key.clone()).or_default().push(seq);
    }
    for (key, seqs) in per_key {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{key}: {seqs:?}");
    }
    sub.close().await.unwrap();
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
    let middle = now_ms();
    tokio::time::sleep(Duration::from_millis(30)).await;
    for i in 0..5 {
        bus.publish(&topic, msg("k", format!("late{i}")))
            .await
            .unwrap();
    }
    let all = replay_all(bus.as_ref(), &topic, ReplayFrom::Start).await;
    let order: Vec<String> = all.iter().map(text).collect();
    let published: Vec<String> = (0..5)
        .map(|i| format!("early{i}"))
        .chain((0..5).map(|i| format!("late{i}")))
        .collect();
    assert_eq!(order, published, "a partition replays in publish order");
    let offsets: Vec<u64> = all
        .iter()
        .map(|r| r.offset.expect("replays have offsets"))
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    let from = ReplayFrom::Offsets([(0, offsets[7])].into());
    let from_offset = replay_all(bus.as_ref(), &topic, from).await;
    assert_eq!(
        from_offset.iter().map(text).collect::<Vec<_>>(),
        published[7..]
    );
    let from_time = replay_all(bus.as_ref(), &topic, ReplayFrom::Time(middle)).await;
    assert_eq!(
        from_time.iter().map(text).collect::<Vec<_>>(),
        published[5..]
    );
    let future = replay_all(bus.as_ref(), &topic, ReplayFrom::Time(now_ms() + 60_000)).await;
    assert!(
        future.is_empty(),
        "nothing is newer than the future: {future:?}"
    );
    // A replay is independent of groups: consuming does not change it.
    let mut sub = join(bus.as_ref(), &topic, "g", SubscribeOptions::default()).await;
    receive_exactly(&mut sub, &published.iter().cloned().collect()).await;
    sub.close().await.unwrap();
    assert_eq!(
        replay_all(bus.as_ref(), &topic, ReplayFrom::Start)
            .await
            .len(),
        10
    );
}

pub async fn replay_keeps_order_per_partition(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("replayorder");
    bus.create_topic(&topic, 3).await.unwrap();
    for i in 0..45 {
        bus.publish(
            &topic,
            msg(&format!("k{}", i % 9), format!("{}:{i}", i % 9)),
        )
        .await
        .unwrap();
    }
    let all = replay_all(bus.as_ref(), &topic, ReplayFrom::Start).await;
    assert_eq!(all.len(), 45);
    let mut per_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in &all {
        per_partition
            .entry(r.partition)
            .or_default()
            .push(r.offset.unwrap());
        per_key
            .entry(r.key.clone())
            .or_default()
            .push(text(r).split_once(':').unwrap().1.parse().unwrap());
    }
    for offsets in per_partition.values() {
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    }
    for seqs in per_key.values() {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }
}

pub async fn new_group_starts_at_earliest_or_latest(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("start");
    bus.create_topic(&topic, 2).await.unwrap();
    publish_numbered(bus.as_ref(), &topic, 0..5).await;
    let mut early = join(bus.as_ref(), &topic, "early", SubscribeOptions::default()).await;
    receive_exactly(&mut early, &names("m", 0..5)).await;
    let latest = SubscribeOptions {
        start: StartAt::Latest,
        ..SubscribeOptions::default()
    };
    let mut late = [join(bus.as_ref(), &topic, "late", latest).await];
    settle_group(&mut late, 2).await;
    let [mut late] = late;
    publish_numbered(bus.as_ref(), &topic, 5..10).await;
    receive_exactly(&mut late, &names("m", 5..10)).await;
    receive_exactly(&mut early, &names("m", 5..10)).await;
    early.close().await.unwrap();
    late.close().await.unwrap();
}

pub async fn close_and_reopen_without_loss(f: &impl Fixture) {
    let topic = unique("reopen");
    {
        let bus = f.bus().await;
        bus.create_topic(&topic, 1).await.unwrap();
        publish_numbered(bus.as_ref(), &topic, 0..10).await;
        let mut sub = join(bus.as_ref(), &topic, "g", SubscribeOptions::default()).await;
        receive_exactly(&mut sub, &names("m", 0..4)).await;
        // One more delivered but never acked: it must come back.
        let unacked = next(&mut sub).await;
        assert_eq!(unacked.record.payload, b"m4");
        sub.close().await.unwrap();
    }
    f.reopen().await;
    let bus = f.bus().await;
    let mut sub = join(bus.as_ref(), &topic, "g", SubscribeOptions::default()).await;
    let rest = receive_exactly(&mut sub, &names("m", 4..10)).await;
    assert_eq!(rest.len(), 6, "the unacked and the unread, each once");
    sub.close().await.unwrap();
}

pub async fn close_and_reopen_in_a_loop(f: &impl Fixture) {
    let topic = unique("loop");
    f.bus().await.create_topic(&topic, 2).await.unwrap();
    for round in 0..4 {
        let bus = f.bus().await;
        let mut sub = join(bus.as_ref(), &topic, "g", SubscribeOptions::default()).await;
        publish_numbered(bus.as_ref(), &topic, round..round + 1).await;
        let got = receive_exactly(&mut sub, &names("m", round..round + 1)).await;
        assert_eq!(got.len(), 1, "round {round}");
        sub.close().await.unwrap();
        f.reopen().await;
    }
}

pub async fn publisher_close_loses_nothing(f: &impl Fixture) {
    let topic = unique("pubclose");
    {
        let bus = f.bus().await;
        bus.create_topic(&topic, 2).await.unwrap();
        let publishes = (0..50).map(|i| {
            let (bus, topic) = (bus.clone(), topic.clone());
            async move {
                bus.publish(&topic, msg(&format!("k{i}"), format!("m{i}")))
                    .await
            }
        });
        for published in futures::future::join_all(publishes).await {
            published.unwrap();
        }
    }
    f.reopen().await;
    let bus = f.bus().await;
    let mut sub = join(bus.as_ref(), &topic, "g", SubscribeOptions::default()).await;
    receive_exactly(&mut sub, &names("m", 0..50)).await;
    sub.close().await.unwrap();
}

pub async fn topic_isolation(f: &impl Fixture) {
    let bus = f.bus().await;
    let (one, two) = (unique("iso1"), unique("iso2"));
    for t in [&one, &two] {
        bus.create_topic(t, 2).await.unwrap();
    }
    let mut sub_one = join(bus.as_ref(), &one, "g", SubscribeOptions::default()).await;
    let mut sub_two = join(bus.as_ref(), &two, "g", SubscribeOptions::default()).await;
    for i in 0..10 {
        bus.publish(&one, msg(&format!("k{i}"), format!("one{i}")))
            .await
            .unwrap();
        bus.publish(&two, msg(&format!("k{i}"), format!("two{i}")))
            .await
            .unwrap();
    }
    receive_exactly(&mut sub_one, &names("one", 0..10)).await;
    receive_exactly(&mut sub_two, &names("two", 0..10)).await;
    sub_one.close().await.unwrap();
    sub_two.close().await.unwrap();
}

/// A group name on one topic is a group of its own: a member joining the same name on another
/// topic takes nothing from it, not even for a rebalance, while it holds a delivery unsettled.
pub async fn group_names_per_topic(f: &impl Fixture) {
    let bus = f.bus().await;
    let (one, two) = (unique("name1"), unique("name2"));
    for t in [&one, &two] {
        bus.create_topic(t, 2).await.unwrap();
    }
    let mut sub_one = join(bus.as_ref(), &one, "g", SubscribeOptions::default()).await;
    publish_numbered(bus.as_ref(), &one, 0..1).await;
    let held = next(&mut sub_one).await;
    let mut sub_two = join(bus.as_ref(), &two, "g", SubscribeOptions::default()).await;
    publish_numbered(bus.as_ref(), &two, 1..2).await;
    receive_exactly(&mut sub_two, &names("m", 1..2)).await;
    while let Ok(event) = tokio::time::timeout(Duration::from_millis(500), sub_one.next()).await {
        match event.expect("the subscription works") {
            Event::Revoked(r) => panic!("`g` on {two} revoked {:?} of `g` on {one}", r.partitions),
            Event::Delivery(d) => panic!("nothing else was published: {d:?}"),
            Event::Assigned(_) => {}
        }
    }
    held.ack();
    sub_one.close().await.unwrap();
    sub_two.close().await.unwrap();
}

pub async fn cancel_subscription_mid_stream(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("cancel");
    bus.create_topic(&topic, 2).await.unwrap();
    publish_numbered(bus.as_ref(), &topic, 0..20).await;
    let mut sub = join(bus.as_ref(), &topic, "g", SubscribeOptions::default()).await;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for _ in 0..5 {
        let d = next(&mut sub).await;
        seen.insert(text(&d.record));
        d.ack();
    }
    // Cancel a `next` in the middle of waiting, then drop the subscription unclosed.
    let _ = tokio::time::timeout(Duration::from_millis(1), sub.next()).await;
    drop(sub);
    let mut sub = join(bus.as_ref(), &topic, "g", SubscribeOptions::default()).await;
    let expected = names("m", 0..20);
    let rest: BTreeSet<String> = expected.difference(&seen).cloned().collect();
    receive_exactly(&mut sub, &rest).await;
    sub.close().await.unwrap();
}

pub async fn concurrent_close_of_many_subscriptions(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("manyclose");
    bus.create_topic(&topic, 2).await.unwrap();
    let mut subs = Vec::new();
    for g in 0..8 {
        subs.push(
            join(
                bus.as_ref(),
                &topic,
                &format!("g{g}"),
                SubscribeOptions::default(),
            )
            .await,
        );
    }
    publish_numbered(bus.as_ref(), &topic, 0..2).await;
    for sub in &mut subs {
        receive_exactly(sub, &names("m", 0..2)).await;
    }
    let closes = subs.into_iter().map(|s| s.close());
    let closed = tokio::time::timeout(WAIT, futures::future::join_all(closes))
        .await
        .expect("every close finishes");
    assert!(closed.iter().all(Result::is_ok), "{closed:?}");
}

pub async fn many_members_subscribe_at_once(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("members");
    bus.create_topic(&topic, 6).await.unwrap();
    let joins = (0..4).map(|_| join(bus.as_ref(), &topic, "g", SubscribeOptions::default()));
    let mut members: Vec<Sub> = futures::future::join_all(joins).await;
    let owned = settle_group(&mut members, 6).await;
    publish_numbered(bus.as_ref(), &topic, 0..48).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let workers: Vec<_> = members
        .into_iter()
        .zip(owned)
        .map(|(mut sub, owned)| {
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    let Ok(Ok(event)) = tokio::time::timeout(WAIT, sub.next()).await else {
                        break;
                    };
                    if let Event::Delivery(d) = event {
                        assert!(
                            owned.contains(&d.record.partition),
                            "{:?} not owned",
                            d.record
                        );
                        if tx.send(text(&d.record)).is_err() {
                            break;
                        }
                        d.ack();
                    }
                }
                sub
            })
        })
        .collect();
    let expected = names("m", 0..48);
    let mut seen = BTreeSet::new();
    while !expected.is_subset(&seen) {
        let payload = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(expected.contains(&payload));
        seen.insert(payload);
    }
    drop(rx);
    for worker in workers {
        worker.abort();
    }
}

pub async fn trace_context_carried(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("trace");
    bus.create_topic(&topic, 1).await.unwrap();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut message = msg("k", "traced");
    message
        .headers
        .push(("traceparent".into(), traceparent.into()));
    bus.publish(&topic, message).await.unwrap();
    let mut sub = join(bus.as_ref(), &topic, "g", quick(1)).await;
    let d = next(&mut sub).await;
    assert_eq!(d.record.header("traceparent"), Some(traceparent));
    d.dead_letter("to see the trace survive dead-lettering");
    sub.close().await.unwrap();
    let replayed = replay_all(bus.as_ref(), &topic, ReplayFrom::Start).await;
    assert_eq!(replayed[0].header("traceparent"), Some(traceparent));
    // The dead letter is published in the background and may land after `close` returns (an
    // unpublished one leaves its record uncommitted, so nothing is lost): polled for.
    let deadline = Instant::now() + WAIT;
    let dead = loop {
        let dead = replay_all(bus.as_ref(), &dlq_topic(&topic), ReplayFrom::Start).await;
        if !dead.is_empty() || Instant::now() >= deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        dead.first().and_then(|d| d.header("traceparent")),
        Some(traceparent)
    );
}

pub async fn unknown_envelope_fields_tolerated(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("unknown");
    bus.create_topic(&topic, 1).await.unwrap();
    let envelope = schemas::Envelope::new(
        "id-1",
        "test",
        1,
        "u1",
        schemas::Message::AgentHeartbeat(schemas::AgentHeartbeat {
            agent_id: "a1".into(),
        }),
    );
    let mut value: serde_cbor::Value = serde_cbor::from_slice(&schemas::encode(&envelope)).unwrap();
    let serde_cbor::Value::Map(map) = &mut value else {
        panic!("an envelope is a map")
    };
    map.insert(
        serde_cbor::Value::Text("x_future_field".into()),
        serde_cbor::Value::Array(vec![serde_cbor::Value::Integer(7)]),
    );
    let bytes = serde_cbor::to_vec(&value).unwrap();
    bus.publish(
        &topic,
        OutMessage {
            key: envelope.key.clone(),
            payload: bytes.clone(),
            headers: envelope.headers(),
        },
    )
    .await
    .unwrap();
    let mut sub = join(bus.as_ref(), &topic, "g", SubscribeOptions::default()).await;
    let d = next(&mut sub).await;
    assert_eq!(d.record.payload, bytes, "bytes travel untouched");
    assert_eq!(schemas::decode(&d.record.payload).unwrap(), envelope);
    assert_eq!(d.record.header("ce_id"), Some("id-1"));
    d.ack();
    sub.close().await.unwrap();
}

pub async fn restart_mid_stream(f: &impl Fixture) {
    let topic = unique("restart");
    f.bus().await.create_topic(&topic, 3).await.unwrap();
    const COUNT: u32 = 120;
    let seen = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let publisher = async {
        for i in 0..COUNT {
            let message = msg(&format!("k{}", i % 7), format!("m{i}"));
            // Retry through the outage: at-least-once allows sending again.
            let deadline = Instant::now() + WAIT * 2;
            while let Err(e) = f.bus().await.publish(&topic, message.clone()).await {
                assert!(Instant::now() < deadline, "publish never recovered: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let subscriber = async {
        let expected = names("m", 0..COUNT);
        let deadline = Instant::now() + WAIT * 4;
        let mut current = f.bus().await;
        let mut sub = join(current.as_ref(), &topic, "g", SubscribeOptions::default()).await;
        loop {
            if expected.is_subset(&seen.lock().unwrap()) {
                break;
            }
            if Instant::now() >= deadline {
                let seen = seen.lock().unwrap();
                let missing: Vec<&String> = expected.difference(&seen).collect();
                panic!(
                    "the subscriber never caught up: {} missing {missing:?}",
                    missing.len()
                );
            }
            let bus = f.bus().await;
            if !Arc::ptr_eq(&bus, &current) {
                // The embedded log was reopened: follow it.
                match bus
                    .subscribe(&topic, "g", SubscribeOptions::default())
                    .await
                {
                    Ok(new) => (sub, current) = (new, bus),
                    Err(_) => continue,
                }
            }
            match tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
                Ok(Ok(Event::Delivery(d))) => {
                    let payload = text(&d.record);
                    assert!(expected.contains(&payload), "unexpected `{payload}`");
                    seen.lock().unwrap().insert(payload);
                    d.ack();
                }
                Ok(Err(e)) if !e.is_transient() && e != BusError::Closed => {
                    panic!("the subscription failed for good: {e}")
                }
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => {}
            }
        }
        sub
    };
    let restarts = async {
        for at in [COUNT / 4, COUNT / 2] {
            while seen.lock().unwrap().len() < at as usize {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            f.restart().await;
        }
    };
    let ((), sub, ()) = tokio::join!(publisher, subscriber, restarts);
    let _ = sub.close().await;
}

pub async fn large_messages(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("large");
    bus.create_topic(&topic, 1).await.unwrap();
    let big: Vec<u8> = (0..900_000u32).map(|i| (i % 251) as u8).collect();
    bus.publish(&topic, msg("k", big.clone())).await.unwrap();
    let mut sub = join(bus.as_ref(), &topic, "g", SubscribeOptions::default()).await;
    let d = next(&mut sub).await;
    assert_eq!(d.record.payload, big);
    d.ack();
    sub.close().await.unwrap();
}

pub async fn many_topics(f: &impl Fixture) {
    let bus = f.bus().await;
    let topics: Vec<String> = (0..30).map(|i| unique(&format!("many{i}"))).collect();
    for t in &topics {
        bus.create_topic(t, 2).await.unwrap();
        bus.publish(t, msg("k", t.clone())).await.unwrap();
    }
    let joins = topics
        .iter()
        .map(|t| join(bus.as_ref(), t, "g", SubscribeOptions::default()));
    let subs = futures::future::join_all(joins).await;
    let receives = subs
        .into_iter()
        .zip(&topics)
        .map(|(mut sub, t)| async move {
            receive_exactly(&mut sub, &[t.clone()].into()).await;
            sub.close().await.unwrap();
        });
    futures::future::join_all(receives).await;
}

/// The group's lag: what it has yet to consume, summed over the partitions, once it is `want`.
async fn wait_lag(bus: &dyn Bus, topic: &str, group: &str, want: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let lag = bus.lag(topic, group).await.unwrap();
        if lag.values().sum::<u64>() == want {
            assert_eq!(lag.len(), 4, "one figure per partition: {lag:?}");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag {lag:?}, want {want} in all"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The lag counts what a group has yet to consume: what arrived while no member read, until
/// a member reads and settles it.
pub async fn consumer_lag(f: &impl Fixture) {
    let bus = f.bus().await;
    let topic = unique("lag");
    bus.create_topic(&topic, 4).await.unwrap();
    let mut sub = join(bus.as_ref(), &topic, "g", SubscribeOptions::default()).await;
    publish_numbered(bus.as_ref(), &topic, 0..5).await;
    receive_exactly(&mut sub, &names("m", 0..5)).await;
    sub.close().await.unwrap();
    wait_lag(bus.as_ref(), &topic, "g", 0).await;
    publish_numbered(bus.as_ref(), &topic, 5..8).await;
    wait_lag(bus.as_ref(), &topic, "g", 3).await;
    let mut sub = join(bus.as_ref(), &topic, "g", SubscribeOptions::default()).await;
    receive_exactly(&mut sub, &names("m", 5..8)).await;
    // Settled, and committed at the latest when the member leaves.
    sub.close().await.unwrap();
    wait_lag(bus.as_ref(), &topic, "g", 0).await;
}

/// Declares one `#[tokio::test]` per case, each calling `$fixture().await` for its fixture;
/// with no case list, every case.
#[macro_export]
macro_rules! conformance_suite {
    ($fixture:expr) => {
        $crate::conformance_suite!($fixture;
            publish_subscribe, per_key_order, concurrent_publishers, group_sharing_and_rebalance,
            two_groups_each_get_everything, nack_redelivers,
            redelivery_count_visible_to_the_handler, no_ack_holds_the_next_message_of_that_key,
            many_in_flight_but_one_per_key, commits_never_pass_unfinished_work, dead_letters, poison_message_never_blocks_its_partition, forced_failures,
            replay_from_start_offset_and_time, replay_keeps_order_per_partition,
            new_group_starts_at_earliest_or_latest, close_and_reopen_without_loss,
            close_and_reopen_in_a_loop, publisher_close_loses_nothing, topic_isolation,
            group_names_per_topic, cancel_subscription_mid_stream, concurrent_close_of_many_subscriptions,
            many_members_subscribe_at_once, trace_context_carried,
            unknown_envelope_fields_tolerated, restart_mid_stream, large_messages, many_topics,
            consumer_lag);
    };
    ($fixture:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(fixture) = $fixture.await {
                    $crate::conformance::$case(&fixture).await;
                    $crate::conformance::Fixture::cleanup(&fixture).await;
                }
            }
        )*
    };
}
