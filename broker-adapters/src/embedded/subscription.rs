//! A group member's consumer: one delivery in flight per partition, so per-key order holds
//! across nacks and redeliveries.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use super::group::Member;
use super::{EmbeddedBus, Topic};
use crate::bus::{
    Bus, BusError, Delivery, OutMessage, Outcome, Record, Settle, SubscribeOptions, Subscription,
};

/// Records fetched from disk at a time per partition.
const PREFETCH: u32 = 256;

struct Cursor {
    /// The next offset to deliver (the in-flight one while it is out).
    next: u64,
    in_flight: bool,
    buffer: VecDeque<Record>,
    /// A nacked message is not redelivered before this.
    not_before: Option<Instant>,
}

pub(crate) struct EmbeddedSubscription {
    bus: EmbeddedBus,
    topic: String,
    dlq: String,
    appended: watch::Receiver<u64>,
    member: Member,
    options: SubscribeOptions,
    cursors: HashMap<u32, Cursor>,
    order: Vec<u32>,
    turn: usize,
    attempts: HashMap<(u32, u64), u32>,
    settle_tx: mpsc::UnboundedSender<Settle>,
    settle_rx: mpsc::UnboundedReceiver<Settle>,
    /// The last scan found nothing deliverable and nothing has changed since.
    quiet: bool,
}

impl EmbeddedSubscription {
    pub(crate) fn new(
        bus: EmbeddedBus,
        topic: String,
        dlq: String,
        meta: Topic,
        member: Member,
        options: SubscribeOptions,
    ) -> Self {
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let mut sub = EmbeddedSubscription {
            bus,
            topic,
            dlq,
            appended: meta.appended,
            member,
            options,
            cursors: HashMap::new(),
            order: Vec::new(),
            turn: 0,
            attempts: HashMap::new(),
            settle_tx,
            settle_rx,
            quiet: false,
        };
        sub.rebalance();
        sub
    }

    /// Takes the current assignment: new partitions resume from the group's committed offset.
    fn rebalance(&mut self) {
        let assigned = self.member.assignment();
        self.cursors.retain(|p, _| assigned.contains(p));
        for partition in &assigned {
            let next = self.member.committed(*partition);
            self.cursors.entry(*partition).or_insert(Cursor {
                next,
                in_flight: false,
                buffer: VecDeque::new(),
                not_before: None,
            });
        }
        self.order = assigned;
    }

    async fn settle(&mut self, settle: Settle) -> Result<(), BusError> {
        let Some(cursor) = self.cursors.get_mut(&settle.partition) else {
            return Ok(()); // revoked meanwhile: the new owner redelivers it
        };
        if !cursor.in_flight || cursor.next != settle.offset {
            return Ok(());
        }
        cursor.in_flight = false;
        let position = (settle.partition, settle.offset);
        let reason = match settle.outcome {
            Outcome::Ack => None,
            Outcome::Nack(reason) => {
                let attempts = self.attempts.get(&position).copied().unwrap_or(1);
                if attempts < self.options.max_attempts {
                    self.attempts.insert(position, attempts + 1);
                    cursor.not_before = Some(Instant::now() + self.options.backoff(attempts + 1));
                    return Ok(());
                }
                Some(reason)
            }
            Outcome::DeadLetter(reason) => Some(reason),
        };
        if let Some(reason) = reason {
            let attempts = self.attempts.get(&position).copied().unwrap_or(1);
            let record = cursor.buffer.front().cloned();
            if let Some(record) = record {
                self.dead_letter(record, &reason, attempts).await?;
            }
        }
        let cursor = self
            .cursors
            .get_mut(&settle.partition)
            .expect("cursor checked above");
        cursor.buffer.pop_front();
        cursor.next = settle.offset + 1;
        self.attempts.remove(&position);
        self.member.commit(settle.partition, cursor.next);
        let next = cursor.next;
        self.bus
            .inner
            .store
            .commit(self.member.group(), &self.topic, settle.partition, next)
            .await
    }

    async fn dead_letter(
        &self,
        record: Record,
        reason: &str,
        attempts: u32,
    ) -> Result<(), BusError> {
        let mut headers = record.headers;
        headers.extend([
            ("dlq_reason".to_owned(), reason.to_owned()),
            ("dlq_attempts".to_owned(), attempts.to_string()),
            ("dlq_topic".to_owned(), record.topic),
            ("dlq_partition".to_owned(), record.partition.to_string()),
            ("dlq_offset".to_owned(), record.offset.to_string()),
        ]);
        tracing::warn!(topic = %self.topic, partition = record.partition, offset = record.offset, %reason, attempts, "dead-lettered");
        let message = OutMessage {
            key: record.key,
            payload: record.payload,
            headers,
        };
        self.bus
            .publish(&self.dlq, message)
            .await
            .map(drop)
            .map_err(|e| e.error)
    }

    /// How long to wait for news: until the next nacked message is due, at most a second.
    fn idle_wait(&self) -> Duration {
        let now = Instant::now();
        self.cursors
            .values()
            .filter_map(|c| c.not_before)
            .map(|t| t.saturating_duration_since(now))
            .fold(Duration::from_secs(1), Duration::min)
    }

    /// The next deliverable record, round-robin over owned partitions, if any is ready.
    async fn poll(&mut self) -> Result<Option<Delivery>, BusError> {
        for _ in 0..self.order.len() {
            self.turn = (self.turn + 1) % self.order.len();
            let partition = self.order[self.turn];
            let Some(cursor) = self.cursors.get_mut(&partition) else {
                continue;
            };
            if cursor.in_flight || cursor.not_before.is_some_and(|t| t > Instant::now()) {
                continue;
            }
            cursor.not_before = None;
            if cursor.buffer.is_empty() {
                cursor.buffer = self
                    .bus
                    .inner
                    .store
                    .fetch(&self.topic, partition, cursor.next, PREFETCH)
                    .await?
                    .into();
            }
            let Some(record) = cursor.buffer.front() else {
                continue;
            };
            cursor.next = record.offset;
            cursor.in_flight = true;
            let attempt = self
                .attempts
                .get(&(partition, record.offset))
                .copied()
                .unwrap_or(1);
            return Ok(Some(Delivery::new(
                record.clone(),
                attempt,
                self.settle_tx.clone(),
            )));
        }
        Ok(None)
    }
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn next(&mut self) -> Result<Delivery, BusError> {
        loop {
            while let Ok(settle) = self.settle_rx.try_recv() {
                self.settle(settle).await?;
                self.quiet = false;
            }
            if self.member.has_changed() {
                self.rebalance();
                self.quiet = false;
            }
            if self.appended.has_changed().unwrap_or(true) {
                self.appended.borrow_and_update();
                self.quiet = false;
            }
            // An idle consumer does not query the log until something changes.
            if !self.quiet {
                if let Some(delivery) = self.poll().await? {
                    return Ok(delivery);
                }
                self.quiet = true;
            }
            let idle = self.idle_wait();
            tokio::select! {
                settle = self.settle_rx.recv() => {
                    if let Some(settle) = settle {
                        self.settle(settle).await?;
                    }
                    self.quiet = false;
                }
                changed = self.appended.changed() => {
                    if changed.is_err() {
                        return Err(BusError::Closed);
                    }
                    self.quiet = false;
                }
                () = self.member.changed() => {
                    self.rebalance();
                    self.quiet = false;
                }
                () = tokio::time::sleep(idle) => {
                    let now = Instant::now();
                    if self.cursors.values().any(|c| c.not_before.is_some_and(|t| t <= now)) {
                        self.quiet = false;
                    }
                }
            }
        }
    }

    async fn close(mut self: Box<Self>) -> Result<(), BusError> {
        while let Ok(settle) = self.settle_rx.try_recv() {
            self.settle(settle).await?;
        }
        self.bus.flush().await
    }
}
