//! The ingress hop (decode, route to the key's mailbox in its partition's shard, the mailbox
//! taking the message up and settling it) beside a raw ractor cast of the same bytes to an
//! actor that counts them, in the same run. The mailboxes here step the task's state machine
//! and write nothing: what is measured is the way to them, not the state writer behind them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actors::bench::{ApplyError, Kind, ShardActor, hop, task_shard};
use actors::domain::Effect;
use actors::domain::task::{self, Task};
use actors::edge::{self, Routed};
use actors::store::{Applied, StoreError};
use actors::{NodeContext, Ownership, Store};
use broker_adapters::{Bus, Delivery, EmbeddedBus, Outcome, Record, Settle};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use schemas::{Envelope, Message, TaskCreated};
use tokio::sync::Notify;

/// The node's allocator (`switchyard`'s `allocator.rs`), so the hop costs here what it does
/// in a node.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Messages per round, each of a key of its own, as the bus hands them out.
const ROUND: u64 = 10_000;

/// Counts what arrived, and wakes the round's waiter at each `ROUND`th.
#[derive(Default)]
struct Arrivals {
    count: AtomicU64,
    round_done: Notify,
}

impl Arrivals {
    fn arrived(&self) {
        if (self.count.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(ROUND) {
            self.round_done.notify_one();
        }
    }
}

/// The baseline's actor: counts the bytes it is cast.
struct Counter;

impl Actor for Counter {
    type Msg = Vec<u8>;
    type State = Arc<Arrivals>;
    type Arguments = Arc<Arrivals>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Vec<u8>>,
        arrivals: Arc<Arrivals>,
    ) -> Result<Arc<Arrivals>, ActorProcessingErr> {
        Ok(arrivals)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Vec<u8>>,
        _bytes: Vec<u8>,
        arrivals: &mut Arc<Arrivals>,
    ) -> Result<(), ActorProcessingErr> {
        arrivals.arrived();
        Ok(())
    }
}

/// Task mailboxes that take a message up and write nothing: the task it creates, unsaved and
/// forgotten, so the next round creates it again.
struct Unsaved;

impl Kind for Unsaved {
    type State = Task;

    async fn load(_store: &Store, _id: &str) -> Result<Option<Task>, StoreError> {
        Ok(None)
    }

    fn creates(_envelope: &Envelope) -> bool {
        true
    }

    async fn apply(
        _ctx: &NodeContext,
        _state: Option<&Task>,
        envelope: &Envelope,
    ) -> Result<(Task, Vec<Effect>, Applied), ApplyError> {
        let Routed::Task(_, command) = edge::command(envelope) else {
            unreachable!("the bench sends task.created only");
        };
        let step = task::step(None, &envelope.user, &command, envelope.time)
            .map_err(ApplyError::Refused)?;
        Ok((step.task, Vec::new(), Applied::Applied))
    }

    fn carry_out(_ctx: &NodeContext, _task: &Task, _effects: Vec<Effect>) {}
}

/// Tells the round how a delivery was settled.
struct Told(Arc<Arrivals>);

impl Settle for Told {
    fn settle(self: Box<Self>, outcome: Outcome) {
        assert!(matches!(outcome, Outcome::Ack), "{outcome:?}");
        self.0.arrived();
    }
}

/// `ROUND` encoded `task.created` envelopes, each of a task of its own.
fn envelopes() -> Vec<(String, Vec<u8>)> {
    (0..ROUND)
        .map(|i| {
            let envelope = Envelope::new(
                format!("0193a000-0000-7000-8000-{i:012}"),
                "bench",
                1_795_500_000_000,
                "u1",
                Message::TaskCreated(TaskCreated {
                    task_id: format!("t{i}"),
                    title: "compile the workspace".into(),
                    spec: "cargo build --release".into(),
                    ..Default::default()
                }),
            );
            (envelope.key.clone(), schemas::encode(&envelope))
        })
        .collect()
}

async fn context() -> (NodeContext, actors::testkit::TempStore) {
    let temp = actors::testkit::sqlite().await;
    let bus = EmbeddedBus::open(&temp.dir.path().join("bus.sqlite"))
        .await
        .expect("a bus");
    bus.create_topic(schemas::EVENTS_TOPIC, 1)
        .await
        .expect("the topic");
    let ownership = Ownership::default();
    ownership.add(&[0]);
    let ctx = NodeContext {
        store: temp.store.clone(),
        bus: Arc::new(bus),
        node_id: "bench".into(),
        root: "bench".into(),
        tree: Default::default(),
        partitions: 1,
        passivate_after: Duration::from_secs(600),
        assign_interval: Duration::from_secs(600),
        ownership,
        agent_timeout: Duration::from_secs(600),
        agent_signals: Default::default(),
        outcomes: Default::default(),
        cascades: Default::default(),
        assign_request: Default::default(),
        channels: Default::default(),
        notifier: Default::default(),
        budgets: Default::default(),
        clock: Default::default(),
        automation_grace: Duration::from_secs(60),
        caldav: None,
        models: Default::default(),
    };
    (ctx, temp)
}

fn ingress(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let messages = envelopes();
    let (ctx, _temp) = runtime.block_on(context());
    let arrivals = Arc::new(Arrivals::default());
    let (counter, _) = runtime
        .block_on(Actor::spawn(None, Counter, arrivals.clone()))
        .expect("the counter");
    let shard = task_shard(&ctx, 0);
    let (_shard, _) = runtime
        .block_on(Actor::spawn(
            Some(shard),
            ShardActor::<Unsaved>::default(),
            ctx.clone(),
        ))
        .expect("the shard");

    let mut group = c.benchmark_group("ingress");
    group.throughput(Throughput::Elements(ROUND));
    group.bench_function("raw ractor cast of the bytes", |b| {
        b.iter_custom(|rounds| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..rounds {
                    for (_, bytes) in &messages {
                        counter.cast(bytes.clone()).expect("the counter runs");
                    }
                    arrivals.round_done.notified().await;
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("hop: decode, route, mailbox", |b| {
        b.iter_custom(|rounds| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..rounds {
                    for (offset, (key, bytes)) in messages.iter().enumerate() {
                        let record = Record {
                            topic: schemas::EVENTS_TOPIC.into(),
                            partition: 0,
                            offset: Some(offset as u64),
                            key: key.clone(),
                            payload: bytes.clone(),
                            headers: Vec::new(),
                            timestamp: 0,
                        };
                        let delivery = Delivery::new(record, 1, Box::new(Told(arrivals.clone())));
                        assert!(hop(&ctx, delivery).is_none(), "the shard runs");
                    }
                    arrivals.round_done.notified().await;
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, ingress);
criterion_main!(benches);
