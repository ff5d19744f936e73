//! A group member's consumer: lanes filled from the log on demand, never two deliveries of
//! one key in flight, so per-key order holds across nacks and redeliveries.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;

use super::group::Member;
use super::{EmbeddedBus, Topic};
use crate::bus::{BusError, Event, Revocation, SubscribeOptions, Subscription};
use crate::inbox::{Done, Entry, Inbox, spawn_publish};

/// Records fetched from disk at a time per partition; a lane is topped up when it holds
/// fewer than this, so a wide `in_flight` window stays full.
const PREFETCH: u32 = 1024;
/// Acked offsets are written this often (and at close).
const COMMIT_EVERY: Duration = Duration::from_millis(100);

pub(crate) struct EmbeddedSubscription {
    bus: EmbeddedBus,
    topic: String,
    dlq: String,
    appended: watch::Receiver<u64>,
    member: Member,
    inbox: Inbox<()>,
    /// The next offset to read from disk, per owned partition.
    fetch_from: HashMap<u32, u64>,
    events: VecDeque<Event>,
    /// The last scan found nothing deliverable and nothing has changed since.
    quiet: bool,
    /// Acked next offsets not yet written to the log's file, by partition.
    unwritten: HashMap<u32, u64>,
    written: Instant,
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
        let mut sub = EmbeddedSubscription {
            bus,
            topic,
            dlq,
            appended: meta.appended,
            member,
            inbox: Inbox::new(options),
            fetch_from: HashMap::new(),
            events: VecDeque::new(),
            quiet: false,
            unwritten: HashMap::new(),
            written: Instant::now(),
        };
        sub.rebalance();
        sub
    }

    /// Takes the current assignment: new partitions resume from the group's committed offset.
    fn rebalance(&mut self) {
        let assigned = self.member.assignment();
        let revoked: Vec<u32> = self
            .inbox
            .partitions()
            .into_iter()
            .filter(|p| !assigned.contains(p))
            .collect();
        for partition in &revoked {
            self.inbox.revoke(*partition);
            self.fetch_from.remove(partition);
        }
        if !revoked.is_empty() {
            // In memory the new owner starts at once; nobody waits for this.
            self.events
                .push_back(Event::Revoked(Revocation::new(revoked).0));
        }
        let added: Vec<u32> = assigned
            .into_iter()
            .filter(|p| !self.inbox.owns(*p))
            .collect();
        for partition in &added {
            self.inbox.assign(*partition);
            self.fetch_from
                .insert(*partition, self.member.committed(*partition));
            // A partition taken over may hold a backlog: read it without waiting for news.
            self.quiet = false;
        }
        if !added.is_empty() {
            self.events.push_back(Event::Assigned(added));
        }
    }

    fn settle(&mut self, done: Done<()>) {
        let entry = match done {
            Done::Ack(entry) => entry,
            Done::DeadLetter(message, ticket) => {
                let retry = self.inbox.retry_delay();
                spawn_publish(&self.bus, &self.dlq, message, ticket, retry);
                return;
            }
        };
        let partition = entry.record.partition;
        let next = entry.record.offset.unwrap_or(0) + 1;
        self.member.commit(partition, next);
        self.unwritten.insert(partition, next);
    }

    /// Writes the group's offsets moved since the last write, at most every `COMMIT_EVERY`
    /// unless `now`: a crash in between means redeliveries, never a loss.
    async fn write_commits(&mut self, now: bool) -> Result<(), BusError> {
        if self.unwritten.is_empty() || (!now && self.written.elapsed() < COMMIT_EVERY) {
            return Ok(());
        }
        let unwritten: Vec<(u32, u64)> = self.unwritten.iter().map(|(p, n)| (*p, *n)).collect();
        for (partition, next) in unwritten {
            self.bus
                .inner
                .store
                .commit(self.member.group(), &self.topic, partition, next)
                .await?;
            // Forgotten only once handed to the writer, so a cancelled call loses nothing.
            if self.unwritten.get(&partition) == Some(&next) {
                self.unwritten.remove(&partition);
            }
        }
        self.written = Instant::now();
        Ok(())
    }

    fn apply_reports(&mut self) {
        while let Some(report) = self.inbox.try_report() {
            for done in self.inbox.apply(report) {
                self.settle(done);
            }
            self.quiet = false;
        }
    }

    /// Tops up the lane of every owned partition that runs low.
    async fn refill(&mut self) -> Result<(), BusError> {
        for (partition, from) in self.fetch_from.iter_mut() {
            let store = &self.bus.inner.store;
            let queued = self.inbox.queued(*partition) as u32;
            if queued >= PREFETCH || *from >= store.end(&self.topic, *partition) {
                continue;
            }
            let records = self
                .bus
                .inner
                .store
                .fetch(&self.topic, *partition, *from, PREFETCH - queued)
                .await?;
            for record in records {
                *from = record.offset.unwrap_or(*from) + 1;
                let entry = Entry {
                    record,
                    token: (),
                    attempts: 0,
                };
                self.inbox.push(*partition, entry);
            }
        }
        Ok(())
    }

    /// How long to wait for news: until the next nacked message is due, at most a second.
    fn idle_wait(&self) -> Duration {
        let commits = (!self.unwritten.is_empty()).then(|| self.written + COMMIT_EVERY);
        self.inbox
            .next_due()
            .into_iter()
            .chain(commits)
            .min()
            .map_or(Duration::from_secs(1), |t| {
                t.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_secs(1))
    }
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn next(&mut self) -> Result<Event, BusError> {
        loop {
            self.apply_reports();
            self.write_commits(false).await?;
            if self.member.has_changed() {
                self.rebalance();
            }
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            if self.appended.has_changed().unwrap_or(true) {
                self.appended.borrow_and_update();
                self.quiet = false;
            }
            // What is in memory goes out before the log is read again, so a busy consumer
            // reads in large batches; an idle one does not query until something changes.
            if let Some(delivery) = self.inbox.next_delivery() {
                return Ok(Event::Delivery(delivery));
            }
            if !self.quiet {
                self.refill().await?;
                self.quiet = true;
                if let Some(delivery) = self.inbox.next_delivery() {
                    return Ok(Event::Delivery(delivery));
                }
            }
            let idle = self.idle_wait();
            tokio::select! {
                report = self.inbox.report() => {
                    for done in self.inbox.apply(report) {
                        self.settle(done);
                    }
                    self.quiet = false;
                }
                changed = self.appended.changed() => {
                    if changed.is_err() {
                        return Err(BusError::Closed);
                    }
                    self.quiet = false;
                }
                () = self.member.changed() => self.rebalance(),
                () = tokio::time::sleep(idle) => {}
            }
        }
    }

    async fn close(mut self: Box<Self>) -> Result<(), BusError> {
        self.apply_reports();
        self.write_commits(true).await?;
        self.bus.inner.store.flush().await
    }
}
