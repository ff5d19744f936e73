//! What every adapter's subscription shares: a lane per owned partition with up to
//! `in_flight` deliveries out at once but never two of one key, redelivery after a backoff,
//! attempt counting, the dead-letter decision, and contiguous release of settled records.
//!
//! Adapters fill the lanes from their broker and carry out what a settled delivery comes to
//! (`Done`): commit or ack an acked one; publish a dead-lettered one to `<topic>.dlq` first.
//! A record settled before an earlier one of its partition waits for it (as Confluent's
//! parallel consumer commits), so a committed offset never passes unfinished work.
//! Publishing happens in a task of its own (`spawn_publish`) that reports back, and the
//! record stays in its lane until it does, so a subscription's `next` can be cancelled at
//! any point without losing a record.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::bus::{Delivery, OutMessage, Outcome, Record, Settle, SubscribeOptions};

/// A record waiting in its lane, with what the adapter needs to settle it with the broker.
pub(crate) struct Entry<T> {
    pub record: Record,
    pub token: T,
    /// Deliveries made so far (a broker's own redelivery count where it has one).
    pub attempts: u32,
}

/// What a settled delivery comes to.
pub(crate) enum Done<T> {
    /// Handled (or dead-lettered, or forwarded), and so is every earlier record of its
    /// partition: commit or ack it.
    Ack(Entry<T>),
    /// Publish this to the dead-letter topic and report to the ticket (`spawn_publish`).
    DeadLetter(OutMessage, Ticket),
}

/// Where a record in its lane stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Not out: ready, delayed after a nack, or behind an earlier record of its key.
    Waiting,
    /// Out with a handler (or its dead letter being published) under this ticket.
    Out(u64),
    /// Settled; leaves the lane once every record before it has.
    Settled,
}

struct Slot<T> {
    entry: Entry<T>,
    stage: Stage,
}

struct Lane<T> {
    /// The partition's records in offset order, from the oldest unreleased one.
    slots: VecDeque<Slot<T>>,
    /// The sequence number of `slots[0]`.
    base: u64,
    /// Records whose key has no earlier unsettled record, by sequence number.
    ready: VecDeque<u64>,
    /// Nacked records and when they may go out again; still counted in `out`.
    delayed: Vec<(Instant, u64)>,
    /// Every key with an unsettled record, and its later records waiting their turn.
    behind: HashMap<String, VecDeque<u64>>,
    /// Records out with handlers or waiting for their redelivery: the window's fill.
    out: usize,
    /// Being handed over: settle what is out, deliver nothing more.
    held: bool,
    /// Which opening of the lane this is: a partition revoked and assigned again gets a new
    /// one, so late outcomes of the old opening can be told apart.
    epoch: u64,
}

impl<T> Lane<T> {
    fn new(epoch: u64) -> Self {
        Lane {
            slots: VecDeque::new(),
            base: 0,
            ready: VecDeque::new(),
            delayed: Vec::new(),
            behind: HashMap::new(),
            out: 0,
            held: false,
            epoch,
        }
    }

    fn push(&mut self, entry: Entry<T>) {
        let seq = self.base + self.slots.len() as u64;
        match self.behind.get_mut(&entry.record.key) {
            Some(waiting) => waiting.push_back(seq),
            None => {
                self.behind
                    .insert(entry.record.key.clone(), VecDeque::new());
                self.ready.push_back(seq);
            }
        }
        self.slots.push_back(Slot {
            entry,
            stage: Stage::Waiting,
        });
    }

    fn slot(&mut self, seq: u64) -> Option<&mut Slot<T>> {
        let index = seq.checked_sub(self.base)?;
        self.slots.get_mut(usize::try_from(index).ok()?)
    }

    /// The next record that may go out now: a nacked one whose wait is over (it still counts
    /// against the window, and holds back its partition's commits), else the first ready one
    /// if the window has room.
    fn next_ready(&self, now: Instant, in_flight: usize) -> Option<u64> {
        if self.held {
            return None;
        }
        if let Some((_, seq)) = self.delayed.iter().find(|(due, _)| *due <= now) {
            return Some(*seq);
        }
        if self.out >= in_flight {
            return None;
        }
        self.ready.front().copied()
    }

    /// Takes `seq` (as `next_ready` chose it) out under `ticket`.
    fn take(&mut self, seq: u64, ticket: u64) -> Option<&mut Slot<T>> {
        match self.delayed.iter().position(|(_, s)| *s == seq) {
            Some(index) => {
                self.delayed.swap_remove(index);
            }
            None => {
                self.ready.pop_front();
                self.out += 1;
            }
        }
        let slot = self.slot(seq)?;
        slot.stage = Stage::Out(ticket);
        Some(slot)
    }

    /// Marks `seq` settled, lets its key's next record go, and releases the settled records
    /// at the front.
    fn settle(&mut self, seq: u64) -> Vec<Done<T>> {
        self.out = self.out.saturating_sub(1);
        let Some(slot) = self.slot(seq) else {
            return Vec::new();
        };
        slot.stage = Stage::Settled;
        let key = slot.entry.record.key.clone();
        match self.behind.get_mut(&key).and_then(VecDeque::pop_front) {
            Some(next) => self.ready.push_back(next),
            None => {
                self.behind.remove(&key);
            }
        }
        let mut released = Vec::new();
        while self
            .slots
            .front()
            .is_some_and(|s| s.stage == Stage::Settled)
        {
            if let Some(slot) = self.slots.pop_front() {
                self.base += 1;
                released.push(Done::Ack(slot.entry));
            }
        }
        released
    }
}

/// A settle report: partition, ticket, the record's sequence number in its lane, outcome.
pub(crate) struct Report {
    partition: u32,
    ticket: u64,
    seq: u64,
    outcome: Outcome,
}

/// Told of every outcome as the handler settles it, before the inbox hears of it; for an
/// adapter that must act even while its subscription is not being polled. It is given the
/// record's partition, the epoch of the lane it came from (see `Inbox::assign`) and offset.
pub(crate) type Hook = std::sync::Arc<dyn Fn(u32, u64, Option<u64>, &Outcome) + Send + Sync>;

/// Reports the outcome of the work on one record back to its inbox.
pub(crate) struct Ticket {
    reports: mpsc::UnboundedSender<Report>,
    partition: u32,
    ticket: u64,
    seq: u64,
}

impl Ticket {
    pub(crate) fn report(self, outcome: Outcome) {
        // If the subscription is gone, the message is redelivered to the next owner anyway.
        let _ = self.reports.send(Report {
            partition: self.partition,
            ticket: self.ticket,
            seq: self.seq,
            outcome,
        });
    }
}

/// A delivery's ticket, which also tells the inbox's hook.
struct DeliveryTicket {
    ticket: Ticket,
    hook: Option<(Hook, u64, Option<u64>)>,
}

impl Settle for DeliveryTicket {
    fn settle(self: Box<Self>, outcome: Outcome) {
        if let Some((hook, epoch, offset)) = &self.hook {
            hook(self.ticket.partition, *epoch, *offset, &outcome);
        }
        self.ticket.report(outcome);
    }
}

/// The longest wait between two tries of a publish for a settled record.
const MAX_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// Publishes `message` to `topic` in a task of its own, trying again with a doubling wait
/// until the broker takes it, then reports `Ack` to `ticket`. The record's partition waits
/// meanwhile: a record is never skipped. A fault no retry fixes (a message too large, say) is
/// logged as an error each time, for an operator to act on. The task ends early if the
/// subscription is gone.
pub(crate) fn spawn_publish<B: crate::bus::Bus + Clone>(
    bus: &B,
    topic: &str,
    message: OutMessage,
    ticket: Ticket,
    first_wait: std::time::Duration,
) {
    let (bus, topic) = (bus.clone(), topic.to_owned());
    tokio::spawn(async move {
        let mut wait = first_wait.max(std::time::Duration::from_millis(10));
        loop {
            match bus
                .publish(&topic, message.clone())
                .await
                .map_err(|e| e.error)
            {
                Ok(_) => return ticket.report(Outcome::Ack),
                Err(error) if error.is_transient() => {
                    tracing::warn!(%error, "publishing a settled record failed; retrying");
                }
                Err(error) => {
                    tracing::error!(%error, "publishing a settled record is refused; its partition waits until this is fixed");
                }
            }
            if ticket.reports.is_closed() {
                return;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_RETRY);
        }
    });
}

/// The lanes of one subscription.
pub(crate) struct Inbox<T> {
    options: SubscribeOptions,
    lanes: BTreeMap<u32, Lane<T>>,
    /// The partition served last, for round-robin.
    turn: u32,
    next_ticket: u64,
    reports_tx: mpsc::UnboundedSender<Report>,
    reports: mpsc::UnboundedReceiver<Report>,
    hook: Option<Hook>,
}

impl<T> Inbox<T> {
    pub(crate) fn new(options: SubscribeOptions) -> Self {
        let (reports_tx, reports) = mpsc::unbounded_channel();
        Inbox {
            options,
            lanes: BTreeMap::new(),
            turn: 0,
            next_ticket: 0,
            reports_tx,
            reports,
            hook: None,
        }
    }

    /// An inbox whose deliveries also tell `hook` their outcome.
    pub(crate) fn with_hook(options: SubscribeOptions, hook: Hook) -> Self {
        Inbox {
            hook: Some(hook),
            ..Inbox::new(options)
        }
    }

    fn in_flight(&self) -> usize {
        self.options.in_flight.max(1)
    }

    /// Opens a lane for `partition` (if not open); returns its epoch.
    pub(crate) fn assign(&mut self, partition: u32) -> u64 {
        self.next_ticket += 1;
        let epoch = self.next_ticket;
        self.lanes
            .entry(partition)
            .or_insert_with(|| Lane::new(epoch))
            .epoch
    }

    /// Closes the lane of `partition`; its records (settled or not) are the next owner's.
    pub(crate) fn revoke(&mut self, partition: u32) {
        self.lanes.remove(&partition);
    }

    /// Stops delivering from `partition`'s lane; its in-flight deliveries may still settle.
    pub(crate) fn hold(&mut self, partition: u32) {
        if let Some(lane) = self.lanes.get_mut(&partition) {
            lane.held = true;
        }
    }

    /// The partitions with an open lane.
    pub(crate) fn partitions(&self) -> Vec<u32> {
        self.lanes.keys().copied().collect()
    }

    /// Whether `partition` has an open lane.
    pub(crate) fn owns(&self, partition: u32) -> bool {
        self.lanes.contains_key(&partition)
    }

    /// Records in `partition`'s lane not yet released (0 if it has none).
    pub(crate) fn queued(&self, partition: u32) -> usize {
        self.lanes.get(&partition).map_or(0, |l| l.slots.len())
    }

    /// Appends to `partition`'s lane; false (dropping the entry) if the lane is not open.
    pub(crate) fn push(&mut self, partition: u32, entry: Entry<T>) -> bool {
        match self.lanes.get_mut(&partition) {
            Some(lane) => {
                lane.push(entry);
                true
            }
            None => false,
        }
    }

    /// How long to wait before retrying a failed publish.
    pub(crate) fn retry_delay(&self) -> std::time::Duration {
        self.options.redelivery_delay
    }

    fn ticket(&mut self, partition: u32, seq: u64) -> Ticket {
        self.next_ticket += 1;
        Ticket {
            reports: self.reports_tx.clone(),
            partition,
            ticket: self.next_ticket,
            seq,
        }
    }

    /// The next partition (round-robin) with a record that may go out now and that `pick`
    /// chooses, and that record's sequence number.
    fn next_ready(&mut self, pick: impl Fn(&T) -> bool) -> Option<(u32, u64)> {
        let (now, in_flight) = (Instant::now(), self.in_flight());
        let order: Vec<u32> = self
            .lanes
            .range(self.turn.saturating_add(1)..)
            .chain(self.lanes.range(..=self.turn))
            .map(|(p, _)| *p)
            .collect();
        order.into_iter().find_map(|partition| {
            let lane = self.lanes.get_mut(&partition)?;
            let seq = lane.next_ready(now, in_flight)?;
            pick(&lane.slot(seq)?.entry.token).then_some((partition, seq))
        })
    }

    /// The next deliverable record, round-robin over lanes, if any is ready.
    pub(crate) fn next_delivery(&mut self) -> Option<Delivery> {
        let (partition, seq) = self.next_ready(|_| true)?;
        self.turn = partition;
        let ticket = self.ticket(partition, seq);
        let hook = self.hook.clone();
        let lane = self.lanes.get_mut(&partition)?;
        let epoch = lane.epoch;
        let slot = lane.take(seq, ticket.ticket)?;
        slot.entry.attempts += 1;
        let settle = DeliveryTicket {
            ticket,
            hook: hook.map(|h| (h, epoch, slot.entry.record.offset)),
        };
        Some(Delivery::new(
            slot.entry.record.clone(),
            slot.entry.attempts,
            Box::new(settle),
        ))
    }

    /// Claims a record that may go out now and that `pick` chooses, instead of delivering
    /// it: for records the adapter settles itself (forwards, say) and reports on through the
    /// ticket.
    pub(crate) fn claim(&mut self, pick: impl Fn(&T) -> bool) -> Option<(Record, Ticket)> {
        let (partition, seq) = self.next_ready(pick)?;
        let ticket = self.ticket(partition, seq);
        let slot = self.lanes.get_mut(&partition)?.take(seq, ticket.ticket)?;
        Some((slot.entry.record.clone(), ticket))
    }

    /// When the earliest nacked record becomes deliverable again, if any waits.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.lanes
            .values()
            .filter(|l| !l.held)
            .flat_map(|l| l.delayed.iter().map(|(due, _)| *due))
            .min()
    }

    /// Waits for the next settle report.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn report(&mut self) -> Report {
        // The inbox holds a sender itself, so the channel never closes.
        match self.reports.recv().await {
            Some(report) => report,
            None => std::future::pending().await,
        }
    }

    /// A settle report that has already arrived, if any.
    pub(crate) fn try_report(&mut self) -> Option<Report> {
        self.reports.try_recv().ok()
    }

    /// Applies a settle report: what the adapter must now carry out, in offset order
    /// (nothing for a retry, a record still waiting on an earlier one, or a stale report
    /// from a lane revoked meanwhile).
    pub(crate) fn apply(&mut self, report: Report) -> Vec<Done<T>> {
        let Report {
            partition,
            ticket,
            seq,
            outcome,
        } = report;
        let max_attempts = self.options.max_attempts;
        let backoff = |attempts: u32| self.options.backoff(attempts);
        let Some(lane) = self.lanes.get_mut(&partition) else {
            return Vec::new();
        };
        let Some(slot) = lane.slot(seq) else {
            return Vec::new();
        };
        if slot.stage != Stage::Out(ticket) {
            return Vec::new();
        }
        let attempts = slot.entry.attempts;
        let retry = matches!(outcome, Outcome::Retry(_));
        let reason = match outcome {
            Outcome::Ack => return lane.settle(seq),
            Outcome::Nack(_) | Outcome::Retry(_) if retry || attempts < max_attempts => {
                // A retry is handed out again as the same attempt: the message is not at fault.
                let delay = if retry {
                    slot.entry.attempts = attempts.saturating_sub(1);
                    backoff(1)
                } else {
                    backoff(attempts + 1)
                };
                slot.stage = Stage::Waiting;
                let due = Instant::now() + delay;
                lane.delayed.push((due, seq));
                return Vec::new();
            }
            Outcome::Nack(reason) | Outcome::Retry(reason) | Outcome::DeadLetter(reason) => reason,
        };
        metrics::counter!("switchyard_dead_letters_total", "topic" => slot.entry.record.topic.clone())
            .increment(1);
        // The record stays out, holding its key, until its dead letter is published.
        let message = dead_letter_message(&slot.entry.record, &reason, attempts);
        let ticket = self.ticket(partition, seq);
        if let Some(slot) = self.lanes.get_mut(&partition).and_then(|l| l.slot(seq)) {
            slot.stage = Stage::Out(ticket.ticket);
        }
        vec![Done::DeadLetter(message, ticket)]
    }
}

/// The message that carries `record` to its dead-letter topic: the original key, payload and
/// headers, plus why and where it came from.
pub(crate) fn dead_letter_message(record: &Record, reason: &str, attempts: u32) -> OutMessage {
    let mut headers = record.headers.clone();
    headers.extend([
        ("dlq_reason".to_owned(), reason.to_owned()),
        ("dlq_attempts".to_owned(), attempts.to_string()),
        ("dlq_topic".to_owned(), record.topic.clone()),
        ("dlq_partition".to_owned(), record.partition.to_string()),
    ]);
    if let Some(offset) = record.offset {
        headers.push(("dlq_offset".to_owned(), offset.to_string()));
    }
    tracing::warn!(topic = %record.topic, partition = record.partition, offset = ?record.offset, %reason, attempts, "dead-lettered");
    OutMessage {
        key: record.key.clone(),
        payload: record.payload.clone(),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record(partition: u32, offset: u64, key: &str) -> Record {
        Record {
            topic: "t".into(),
            partition,
            offset: Some(offset),
            key: key.into(),
            payload: Vec::new(),
            headers: Vec::new(),
            timestamp: 0,
        }
    }

    fn options(max_attempts: u32, in_flight: usize) -> SubscribeOptions {
        SubscribeOptions {
            max_attempts,
            redelivery_delay: Duration::ZERO,
            in_flight,
            ..SubscribeOptions::default()
        }
    }

    /// An inbox with `keys` queued, in order, on each of `partitions`.
    fn inbox(options: SubscribeOptions, partitions: u32, keys: &[&str]) -> Inbox<u64> {
        let mut inbox = Inbox::new(options);
        for p in 0..partitions {
            inbox.assign(p);
            for (o, key) in keys.iter().enumerate() {
                let entry = Entry {
                    record: record(p, o as u64, key),
                    token: o as u64,
                    attempts: 0,
                };
                assert!(inbox.push(p, entry));
            }
        }
        inbox
    }

    fn offsets(done: &[Done<u64>]) -> Vec<u64> {
        done.iter()
            .map(|d| match d {
                Done::Ack(e) => e.token,
                Done::DeadLetter(..) => panic!("a dead letter"),
            })
            .collect()
    }

    fn settle(inbox: &mut Inbox<u64>, delivery: Delivery) -> Vec<u64> {
        delivery.ack();
        let report = inbox.try_report().unwrap();
        offsets(&inbox.apply(report))
    }

    #[test]
    fn one_in_flight_per_lane_and_round_robin() {
        let mut inbox = inbox(options(3, 1), 2, &["a", "b"]);
        let a = inbox.next_delivery().unwrap();
        let b = inbox.next_delivery().unwrap();
        assert_ne!(a.record.partition, b.record.partition);
        assert!(inbox.next_delivery().is_none(), "both lanes busy");
        let a_partition = a.record.partition;
        assert_eq!(settle(&mut inbox, a), vec![0]);
        let c = inbox.next_delivery().unwrap();
        assert_eq!(
            (c.record.partition, c.record.offset),
            (a_partition, Some(1))
        );
        drop(b);
    }

    #[test]
    fn many_in_flight_but_one_per_key_and_released_in_offset_order() {
        let mut inbox = inbox(options(3, 8), 1, &["a", "b", "a", "c"]);
        let a0 = inbox.next_delivery().unwrap();
        let b1 = inbox.next_delivery().unwrap();
        let c3 = inbox.next_delivery().unwrap();
        assert_eq!([&a0, &b1, &c3].map(|d| d.record.offset.unwrap()), [0, 1, 3]);
        assert!(
            inbox.next_delivery().is_none(),
            "a's second waits for a's first"
        );
        assert_eq!(
            settle(&mut inbox, c3),
            Vec::<u64>::new(),
            "held behind 0 and 1"
        );
        assert_eq!(settle(&mut inbox, a0), vec![0]);
        let a2 = inbox.next_delivery().unwrap();
        assert_eq!(a2.record.offset, Some(2));
        assert_eq!(settle(&mut inbox, a2), Vec::<u64>::new(), "held behind 1");
        assert_eq!(settle(&mut inbox, b1), vec![1, 2, 3]);
        assert_eq!(inbox.queued(0), 0);
    }

    #[test]
    fn the_window_bounds_what_is_out() {
        let mut inbox = inbox(options(3, 2), 1, &["a", "b", "c"]);
        let first = inbox.next_delivery().unwrap();
        let _second = inbox.next_delivery().unwrap();
        assert!(inbox.next_delivery().is_none(), "two out at most");
        settle(&mut inbox, first);
        assert_eq!(inbox.next_delivery().unwrap().record.offset, Some(2));
    }

    #[test]
    fn a_nacked_record_keeps_its_key_and_holds_back_the_release() {
        let mut inbox = inbox(options(3, 8), 1, &["a", "a", "b"]);
        let a0 = inbox.next_delivery().unwrap();
        let b2 = inbox.next_delivery().unwrap();
        a0.nack("x");
        let report = inbox.try_report().unwrap();
        assert!(inbox.apply(report).is_empty(), "retried");
        assert_eq!(settle(&mut inbox, b2), Vec::<u64>::new());
        let again = inbox.next_delivery().unwrap();
        assert_eq!((again.record.offset, again.attempt), (Some(0), 2));
        assert_eq!(settle(&mut inbox, again), vec![0]);
        let a1 = inbox.next_delivery().unwrap();
        assert_eq!(settle(&mut inbox, a1), vec![1, 2]);
    }

    #[test]
    fn a_record_waiting_for_redelivery_still_fills_the_window() {
        let mut inbox = inbox(
            SubscribeOptions {
                redelivery_delay: Duration::from_secs(60),
                ..options(3, 1)
            },
            1,
            &["a", "b"],
        );
        inbox.next_delivery().unwrap().nack("x");
        let report = inbox.try_report().unwrap();
        assert!(inbox.apply(report).is_empty());
        assert!(inbox.next_delivery().is_none(), "b waits behind a's retry");
        assert!(inbox.next_due().is_some());
    }

    #[test]
    fn nacks_retry_then_dead_letter_and_stale_reports_are_ignored() {
        let mut inbox = inbox(options(2, 1), 2, &["a", "b"]);
        inbox.revoke(1);
        let d = inbox.next_delivery().unwrap();
        assert_eq!(d.attempt, 1);
        d.nack("x");
        let report = inbox.try_report().unwrap();
        assert!(inbox.apply(report).is_empty(), "retried");
        let d = inbox.next_delivery().unwrap();
        assert_eq!((d.record.offset, d.attempt), (Some(0), 2));
        drop(d); // an unsettled drop is a nack
        let report = inbox.try_report().unwrap();
        let mut done = inbox.apply(report);
        let Some(Done::DeadLetter(message, ticket)) = done.pop() else {
            panic!("dead-lettered after max attempts")
        };
        let reason = message.headers.iter().find(|(k, _)| k == "dlq_reason");
        assert_eq!(reason.unwrap().1, "dropped without being settled");
        assert!(
            inbox.next_delivery().is_none(),
            "held until the dead letter is out"
        );
        ticket.report(Outcome::Ack);
        let report = inbox.try_report().unwrap();
        assert_eq!(offsets(&inbox.apply(report)), vec![0]);
        let d = inbox.next_delivery().unwrap();
        inbox.revoke(0);
        d.ack();
        let report = inbox.try_report().unwrap();
        assert!(inbox.apply(report).is_empty(), "revoked meanwhile");
    }

    #[test]
    fn a_retry_comes_back_as_the_same_attempt_and_is_never_dead_lettered() {
        let mut inbox = inbox(options(2, 1), 1, &["a"]);
        for _ in 0..5 {
            let d = inbox.next_delivery().expect("handed out again");
            assert_eq!((d.record.offset, d.attempt), (Some(0), 1));
            d.retry("its mailbox is restarting");
            let report = inbox.try_report().unwrap();
            assert!(inbox.apply(report).is_empty(), "neither settled nor dead");
        }
        // A nack after the retries still counts from the first attempt.
        inbox.next_delivery().unwrap().nack("x");
        let report = inbox.try_report().unwrap();
        assert!(inbox.apply(report).is_empty(), "one attempt of two spent");
        assert_eq!(inbox.next_delivery().unwrap().attempt, 2);
    }

    #[test]
    fn claimed_records_are_settled_through_their_ticket() {
        let mut inbox = inbox(options(3, 8), 1, &["a", "b"]);
        assert!(inbox.claim(|token| *token == 1).is_none(), "b is not first");
        let (record, ticket) = inbox.claim(|token| *token == 0).expect("a is first");
        assert_eq!(record.offset, Some(0));
        let b = inbox.next_delivery().unwrap();
        assert_eq!(settle(&mut inbox, b), Vec::<u64>::new(), "held behind a");
        ticket.report(Outcome::Ack);
        let report = inbox.try_report().unwrap();
        assert_eq!(offsets(&inbox.apply(report)), vec![0, 1]);
    }
}
