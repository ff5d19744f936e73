//! A Kafka consumer-group member.
//!
//! A dedicated thread polls an rdkafka `BaseConsumer`, because a rebalance runs inside `poll`
//! and must be able to wait: on revocation it hands the consumer a `Revocation` and waits
//! (bounded) until it is released, then commits what was acked in those partitions, so the
//! next owner starts after the last handled message. Records go into the shared lanes
//! (`inbox`), never two of one key in flight. Acked offsets are committed contiguously: a
//! partition's committed offset never passes a record still open in its lane; commits run
//! every 200 ms and at revocation and close. A record in a partition other than its key's (an outside producer
//! with another partitioner) is republished, which puts it in its key's partition, then
//! committed, so one key never has two owners.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::{KafkaBus, client_config, from_kafka_headers, group_id, unavailable};
use crate::bus::{
    BusError, Event, OutMessage, Outcome, Record, Revocation, StartAt, SubscribeOptions,
    Subscription,
};
use crate::inbox::{Done, Entry, Inbox, dead_letter_message, spawn_publish};
use crate::partition::partition_for;

/// How long dropping a subscription waits for its member to leave the group.
const LEAVE_WAIT: Duration = Duration::from_secs(2);
/// How long a revocation may be held before the rebalance goes on without it.
const REVOKE_GRACE: Duration = Duration::from_secs(15);
/// Acked offsets are committed this often (and at every revocation and close).
const COMMIT_EVERY: Duration = Duration::from_millis(200);
/// A partition with this many records waiting is paused until it drains to `RESUME_BELOW`.
const PAUSE_ABOVE: usize = 2000;
const RESUME_BELOW: usize = 200;

/// What to do with a record when it reaches the front of its lane.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Hand it to the consumer.
    Deliver,
    /// It sits in a partition other than its key's: republish it, then commit it.
    Forward,
    /// It has no key, so no owner: dead-letter it.
    NoKey,
}

/// From the poll thread to the subscription.
enum Incoming {
    Record(Record),
    Assigned(Vec<u32>),
    Revoked(Revocation),
    Error(BusError),
}

/// From the subscription to the poll thread.
enum Command {
    Pause(u32),
    Resume(u32),
}

/// The next offsets to commit, shared by the handlers (acks), the subscription (dead letters,
/// forwards) and the poll thread (commits).
#[derive(Default)]
struct Acked {
    owned: HashSet<u32>,
    /// The epoch of each partition's lane (`Inbox::assign`): a late ack from a lane of an
    /// earlier assignment must not move the offset.
    epochs: HashMap<u32, u64>,
    /// Offsets in each partition's lane not settled yet: the commit stops at the first.
    open: HashMap<u32, BTreeSet<u64>>,
    /// One past each partition's highest settled offset.
    settled: HashMap<u32, i64>,
    dirty: bool,
}

impl Acked {
    /// Notes that `offset` entered `partition`'s lane.
    fn opened(&mut self, partition: u32, offset: Option<u64>) {
        if let (true, Some(offset)) = (self.owned.contains(&partition), offset) {
            self.open.entry(partition).or_default().insert(offset);
        }
    }

    /// Settles `offset` of `partition`, if the partition is still ours in the same
    /// assignment (`epoch`; `None`: the current one).
    fn advance(&mut self, partition: u32, epoch: Option<u64>, offset: Option<u64>) {
        let current = epoch.is_none_or(|e| self.epochs.get(&partition) == Some(&e));
        if let (true, true, Some(offset)) = (current, self.owned.contains(&partition), offset) {
            if let Some(open) = self.open.get_mut(&partition) {
                open.remove(&offset);
            }
            let settled = self.settled.entry(partition).or_insert(0);
            *settled = (*settled).max(offset as i64 + 1);
            self.dirty = true;
        }
    }

    /// The offset to commit for each partition with settled records: the first one still
    /// open, else one past the last settled.
    fn next(&self) -> impl Iterator<Item = (u32, i64)> + '_ {
        self.settled.iter().map(|(partition, settled)| {
            let first_open = self.open.get(partition).and_then(|o| o.first());
            let next = first_open.map_or(*settled, |o| (*o as i64).min(*settled));
            (*partition, next)
        })
    }

    fn forget(&mut self, partition: u32) {
        self.owned.remove(&partition);
        self.epochs.remove(&partition);
        self.open.remove(&partition);
        self.settled.remove(&partition);
    }
}

type SharedAcked = Arc<Mutex<Acked>>;

fn lock(acked: &SharedAcked) -> std::sync::MutexGuard<'_, Acked> {
    acked.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The consumer's context: runs the rebalance callbacks on the poll thread.
struct Context {
    topic: String,
    incoming: mpsc::Sender<Incoming>,
    acked: SharedAcked,
    closing: Arc<AtomicBool>,
}

impl ClientContext for Context {}

impl Context {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<u32> {
        tpl.elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition() as u32)
            .collect()
    }

    /// Commits the acked offsets of `partitions` (all owned ones when `None`).
    fn commit(
        &self,
        consumer: &BaseConsumer<Context>,
        partitions: Option<&[u32]>,
        mode: CommitMode,
    ) {
        let mut acked = lock(&self.acked);
        let mut tpl = TopicPartitionList::new();
        for (partition, next) in acked.next() {
            if partitions.is_none_or(|ps| ps.contains(&partition)) {
                let _ =
                    tpl.add_partition_offset(&self.topic, partition as i32, Offset::Offset(next));
            }
        }
        acked.dirty = false;
        drop(acked);
        if tpl.count() > 0
            && let Err(error) = consumer.commit(&tpl, mode)
        {
            tracing::warn!(topic = %self.topic, %error, "committing offsets failed; they are committed again later");
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Context>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions = self.partitions(tpl);
        if !self.closing.load(Ordering::Relaxed) {
            let (revocation, mut released) = Revocation::new(partitions.clone());
            if self
                .incoming
                .blocking_send(Incoming::Revoked(revocation))
                .is_ok()
            {
                let deadline = Instant::now() + REVOKE_GRACE;
                while released.try_recv() == Err(tokio::sync::oneshot::error::TryRecvError::Empty)
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        self.commit(consumer, Some(&partitions), CommitMode::Sync);
        let mut acked = lock(&self.acked);
        for partition in &partitions {
            acked.forget(*partition);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Context>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        // librdkafka keeps a partition paused across revocation; a fresh lane starts empty.
        let _ = consumer.resume(tpl);
        let partitions = self.partitions(tpl);
        lock(&self.acked).owned.extend(&partitions);
        if !partitions.is_empty() {
            let _ = self.incoming.blocking_send(Incoming::Assigned(partitions));
        }
    }
}

/// The poll thread: fetches, serves rebalances, commits, and obeys pause / resume.
fn poll_loop(
    consumer: BaseConsumer<Context>,
    commands: std_mpsc::Receiver<Command>,
    stop: Arc<AtomicBool>,
    brokers: String,
) {
    let context = consumer.context();
    let incoming = context.incoming.clone();
    let mut last_commit = Instant::now();
    let mut last_error: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        while let Ok(command) = commands.try_recv() {
            let (partition, pause) = match command {
                Command::Pause(p) => (p, true),
                Command::Resume(p) => (p, false),
            };
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&context.topic, partition as i32);
            // A partition revoked meanwhile cannot be paused; nothing is lost by that.
            let _ = if pause {
                consumer.pause(&tpl)
            } else {
                consumer.resume(&tpl)
            };
        }
        let sent = match consumer.poll(Duration::from_millis(100)) {
            None => Ok(()),
            Some(Ok(message)) => {
                let record = Record {
                    topic: message.topic().to_owned(),
                    partition: message.partition() as u32,
                    offset: Some(message.offset() as u64),
                    key: message
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default(),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers: from_kafka_headers(message.headers()),
                    timestamp: message.timestamp().to_millis().unwrap_or(0).max(0) as u64,
                };
                last_error = None;
                incoming.blocking_send(Incoming::Record(record))
            }
            // Reported once a second at most: librdkafka keeps retrying by itself.
            Some(Err(error)) if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) => {
                last_error = Some(Instant::now());
                incoming.blocking_send(Incoming::Error(unavailable(&brokers, &error)))
            }
            Some(Err(_)) => Ok(()),
        };
        if sent.is_err() {
            break; // the subscription is gone
        }
        if last_commit.elapsed() >= COMMIT_EVERY && lock(&context.acked).dirty {
            context.commit(&consumer, None, CommitMode::Async);
            last_commit = Instant::now();
        }
    }
    context.closing.store(true, Ordering::Relaxed);
    context.commit(&consumer, None, CommitMode::Sync);
    // Dropping the consumer leaves the group (its revocation commits again, harmlessly).
}

/// Commits the current end of every partition the group has no committed offset for, so a
/// new group starts where it was when it first subscribed (librdkafka's `latest` would be
/// resolved later, after the first assignment, skipping what was published meanwhile).
pub(super) fn start_new_group_at_end(
    brokers: &str,
    topic: &str,
    partitions: u32,
    group: &str,
) -> Result<(), BusError> {
    let consumer: BaseConsumer = client_config(brokers)
        .set("group.id", group_id(topic, group))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| BusError::Broker(format!("kafka consumer: {e}")))?;
    let mut all = TopicPartitionList::new();
    for partition in 0..partitions {
        all.add_partition(topic, partition as i32);
    }
    let committed = consumer
        .committed_offsets(all, super::REQUEST_TIMEOUT)
        .map_err(|e| unavailable(brokers, &e))?;
    let mut ends = TopicPartitionList::new();
    for element in committed.elements_for_topic(topic) {
        if let Offset::Offset(_) = element.offset() {
            continue;
        }
        let (_, high) = consumer
            .fetch_watermarks(topic, element.partition(), super::REQUEST_TIMEOUT)
            .map_err(|e| unavailable(brokers, &e))?;
        ends.add_partition_offset(topic, element.partition(), Offset::Offset(high))
            .map_err(|e| BusError::Broker(e.to_string()))?;
    }
    if ends.count() > 0
        && let Err(error) = consumer.commit(&ends, CommitMode::Sync)
    {
        use rdkafka::error::RDKafkaErrorCode::{
            IllegalGeneration, RebalanceInProgress, UnknownMemberId,
        };
        match error.rdkafka_error_code() {
            // The group has live members, so it is not new: its positions stand.
            Some(UnknownMemberId | IllegalGeneration | RebalanceInProgress) => {}
            _ => return Err(unavailable(brokers, &error)),
        }
    }
    Ok(())
}

pub(crate) struct KafkaSubscription {
    bus: KafkaBus,
    topic: String,
    dlq: String,
    partitions: u32,
    inbox: Inbox<Route>,
    incoming: mpsc::Receiver<Incoming>,
    commands: std_mpsc::Sender<Command>,
    acked: SharedAcked,
    paused: BTreeSet<u32>,
    events: VecDeque<Event>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Disconnected once the poll thread has left the group.
    left: std_mpsc::Receiver<()>,
}

impl KafkaSubscription {
    pub(crate) fn start(
        bus: KafkaBus,
        topic: &str,
        dlq: String,
        partitions: u32,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Self, BusError> {
        let (incoming_tx, incoming) = mpsc::channel(1024);
        let acked = SharedAcked::default();
        let context = Context {
            topic: topic.to_owned(),
            incoming: incoming_tx,
            acked: acked.clone(),
            closing: Arc::new(AtomicBool::new(false)),
        };
        let reset = match options.start {
            StartAt::Earliest => "earliest",
            StartAt::Latest => "latest",
        };
        let session = bus.inner.session_timeout;
        let consumer: BaseConsumer<Context> = client_config(bus.brokers())
            .set("group.id", group_id(topic, group))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", reset)
            .set("session.timeout.ms", session.as_millis().to_string())
            .set(
                "heartbeat.interval.ms",
                (session / 6).as_millis().to_string(),
            )
            .set("partition.assignment.strategy", "roundrobin")
            .set("fetch.wait.max.ms", "50")
            .create_with_context(context)
            .map_err(|e| BusError::Broker(format!("kafka consumer: {e}")))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| BusError::Broker(format!("kafka subscribe to `{topic}`: {e}")))?;
        let (commands, commands_rx) = std_mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let (leaving, left) = std_mpsc::channel();
        let thread = {
            let (stop, brokers) = (stop.clone(), bus.brokers().to_owned());
            std::thread::Builder::new()
                .name(format!("kafka-{group}"))
                .spawn(move || {
                    poll_loop(consumer, commands_rx, stop, brokers);
                    drop(leaving);
                })
                .map_err(|e| BusError::Broker(format!("starting the kafka poll thread: {e}")))?
        };
        let hook_acked = acked.clone();
        let hook = Arc::new(
            move |partition: u32, epoch: u64, offset: Option<u64>, outcome: &Outcome| {
                if *outcome == Outcome::Ack {
                    lock(&hook_acked).advance(partition, Some(epoch), offset);
                }
            },
        );
        Ok(KafkaSubscription {
            bus,
            topic: topic.to_owned(),
            dlq,
            partitions,
            inbox: Inbox::with_hook(options, hook),
            incoming,
            commands,
            acked,
            paused: BTreeSet::new(),
            events: VecDeque::new(),
            stop,
            thread: Some(thread),
            left,
        })
    }

    fn receive(&mut self, incoming: Incoming) -> Result<(), BusError> {
        match incoming {
            Incoming::Record(record) => {
                let partition = record.partition;
                let route = if record.key.is_empty() {
                    Route::NoKey
                } else if partition_for(&record.key, self.partitions) != partition {
                    Route::Forward
                } else {
                    Route::Deliver
                };
                let offset = record.offset;
                let entry = Entry {
                    record,
                    token: route,
                    attempts: 0,
                };
                // A record of a partition revoked meanwhile is the next owner's.
                let pushed = self.inbox.push(partition, entry);
                if pushed {
                    lock(&self.acked).opened(partition, offset);
                }
                if pushed
                    && self.inbox.queued(partition) > PAUSE_ABOVE
                    && self.paused.insert(partition)
                {
                    let _ = self.commands.send(Command::Pause(partition));
                }
            }
            Incoming::Assigned(partitions) => {
                for partition in &partitions {
                    let epoch = self.inbox.assign(*partition);
                    lock(&self.acked).epochs.insert(*partition, epoch);
                }
                self.events.push_back(Event::Assigned(partitions));
            }
            Incoming::Revoked(revocation) => {
                for partition in &revocation.partitions {
                    self.inbox.revoke(*partition);
                    self.paused.remove(partition);
                }
                self.events.push_back(Event::Revoked(revocation));
            }
            Incoming::Error(error) => return Err(error),
        }
        Ok(())
    }

    /// Carries out a settled record: an acked one moves its partition's offset; a dead
    /// letter is published first, and reports back as acked.
    fn settle(&mut self, done: Done<Route>) {
        match done {
            Done::Ack(entry) => {
                let partition = entry.record.partition;
                lock(&self.acked).advance(partition, None, entry.record.offset);
                self.maybe_resume(partition);
            }
            Done::DeadLetter(message, ticket) => {
                let retry = self.inbox.retry_delay();
                spawn_publish(&self.bus, &self.dlq, message, ticket, retry);
            }
        }
    }

    fn maybe_resume(&mut self, partition: u32) {
        if self.paused.contains(&partition) && self.inbox.queued(partition) < RESUME_BELOW {
            self.paused.remove(&partition);
            let _ = self.commands.send(Command::Resume(partition));
        }
    }

    /// Starts settling the due records that are not for the consumer: a misplaced one is
    /// republished into its key's partition, a keyless one dead-lettered.
    fn settle_misrouted(&mut self) {
        while let Some((record, ticket)) = self.inbox.claim(|route| *route != Route::Deliver) {
            if record.key.is_empty() {
                let message = dead_letter_message(&record, "record has no key, so no owner", 1);
                spawn_publish(
                    &self.bus,
                    &self.dlq,
                    message,
                    ticket,
                    self.inbox.retry_delay(),
                );
                continue;
            }
            let mut headers = record.headers.clone();
            headers.push((
                "forwarded_from".to_owned(),
                format!("{}:{}", record.partition, record.offset.unwrap_or(0)),
            ));
            let message = OutMessage {
                key: record.key.clone(),
                payload: record.payload,
                headers,
            };
            spawn_publish(
                &self.bus,
                &self.topic,
                message,
                ticket,
                self.inbox.retry_delay(),
            );
        }
    }

    fn shut_down(&mut self) -> Option<std::thread::JoinHandle<()>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take()
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self) -> Result<Event, BusError> {
        loop {
            while let Some(report) = self.inbox.try_report() {
                for done in self.inbox.apply(report) {
                    self.settle(done);
                }
            }
            while let Ok(incoming) = self.incoming.try_recv() {
                self.receive(incoming)?;
            }
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            self.settle_misrouted();
            if let Some(delivery) = self.inbox.next_delivery() {
                return Ok(Event::Delivery(delivery));
            }
            let due = self.inbox.next_due().map_or(Duration::from_secs(1), |t| {
                t.saturating_duration_since(Instant::now())
            });
            tokio::select! {
                report = self.inbox.report() => {
                    for done in self.inbox.apply(report) {
                        self.settle(done);
                    }
                }
                incoming = self.incoming.recv() => match incoming {
                    Some(incoming) => self.receive(incoming)?,
                    None => return Err(BusError::Closed),
                },
                () = tokio::time::sleep(due) => {}
            }
        }
    }

    async fn close(mut self: Box<Self>) -> Result<(), BusError> {
        while let Some(report) = self.inbox.try_report() {
            for done in self.inbox.apply(report) {
                self.settle(done);
            }
        }
        if let Some(thread) = self.shut_down() {
            // The poll thread commits and leaves the group; it may be blocked handing over a
            // record, so keep draining until it is done.
            let joined = tokio::task::spawn_blocking(move || thread.join());
            tokio::pin!(joined);
            loop {
                tokio::select! {
                    result = &mut joined => {
                        return result
                            .map_err(|e| BusError::Broker(e.to_string()))?
                            .map_err(|_| BusError::Broker("the kafka poll thread panicked".into()));
                    }
                    incoming = self.incoming.recv() => {
                        if let Some(Incoming::Revoked(revocation)) = incoming {
                            drop(revocation);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        // The thread sees the flag within one poll, commits what was acked and leaves the
        // group; a handover it is blocked on fails once the channel is closed. Waiting (a
        // little) for the leave means a member that joins next is given the partitions at
        // once: tansu holds a join that overlaps a leave for a session timeout, or longer.
        if self.shut_down().is_some() {
            self.incoming.close();
            while self.incoming.try_recv().is_ok() {}
            let _ = self.left.recv_timeout(LEAVE_WAIT);
        }
    }
}
