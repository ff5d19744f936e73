//! What every adapter's subscription shares: a lane per owned partition with one delivery in
//! flight, redelivery after a backoff, attempt counting, and the dead-letter decision.
//!
//! Adapters fill the lanes from their broker and carry out what a settled delivery comes to
//! (`Done`): commit or ack an acked one; publish a dead-lettered one to `<topic>.dlq` first.
//! Publishing happens in a task of its own (`spawn_publish`) that reports back, and the
//! record stays at the front of its lane until it does, so a subscription's `next` can be
//! cancelled at any point without losing a record.

use std::collections::{BTreeMap, VecDeque};
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
    /// Handled (or dead-lettered, or forwarded): commit or ack it.
    Ack(Entry<T>),
    /// Publish this to the dead-letter topic and report to the ticket (`spawn_publish`).
    DeadLetter(OutMessage, Ticket),
}

struct Lane<T> {
    queue: VecDeque<Entry<T>>,
    /// The ticket of the front entry while it is out with a handler.
    in_flight: Option<u64>,
    /// A nacked front entry is not redelivered before this.
    not_before: Option<Instant>,
    /// Being handed over: settle what is out, deliver nothing more.
    held: bool,
    /// Which opening of the lane this is: a partition revoked and assigned again gets a new
    /// one, so late outcomes of the old opening can be told apart.
    epoch: u64,
}

impl<T> Default for Lane<T> {
    fn default() -> Self {
        Lane {
            queue: VecDeque::new(),
            in_flight: None,
            not_before: None,
            held: false,
            epoch: 0,
        }
    }
}

/// A settle report: partition, ticket, outcome.
type Report = (u32, u64, Outcome);

/// Told of every outcome as the handler settles it, before the inbox hears of it; for an
/// adapter that must act even while its subscription is not being polled. It is given the
/// record's partition, the epoch of the lane it came from (see `Inbox::assign`) and offset.
pub(crate) type Hook = std::sync::Arc<dyn Fn(u32, u64, Option<u64>, &Outcome) + Send + Sync>;

/// Reports the outcome of the work on a lane's front record back to its inbox.
pub(crate) struct Ticket {
    reports: mpsc::UnboundedSender<Report>,
    partition: u32,
    ticket: u64,
}

impl Ticket {
    pub(crate) fn report(self, outcome: Outcome) {
        // If the subscription is gone, the message is redelivered to the next owner anyway.
        let _ = self.reports.send((self.partition, self.ticket, outcome));
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

    /// Opens a lane for `partition` (if not open); returns its epoch.
    pub(crate) fn assign(&mut self, partition: u32) -> u64 {
        self.next_ticket += 1;
        let epoch = self.next_ticket;
        self.lanes
            .entry(partition)
            .or_insert_with(|| Lane {
                epoch,
                ..Lane::default()
            })
            .epoch
    }

    /// Closes the lane of `partition`; its entries (settled or not) are the next owner's.
    pub(crate) fn revoke(&mut self, partition: u32) -> Vec<Entry<T>> {
        self.lanes
            .remove(&partition)
            .map(|lane| lane.queue.into())
            .unwrap_or_default()
    }

    /// Stops delivering from `partition`'s lane; its in-flight delivery may still settle.
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

    /// Records waiting in `partition`'s lane (0 if it has none).
    pub(crate) fn queued(&self, partition: u32) -> usize {
        self.lanes.get(&partition).map_or(0, |l| l.queue.len())
    }

    /// Appends to `partition`'s lane; false (dropping the entry) if the lane is not open.
    pub(crate) fn push(&mut self, partition: u32, entry: Entry<T>) -> bool {
        match self.lanes.get_mut(&partition) {
            Some(lane) => {
                lane.queue.push_back(entry);
                true
            }
            None => false,
        }
    }

    /// How long to wait before retrying a failed publish.
    pub(crate) fn retry_delay(&self) -> std::time::Duration {
        self.options.redelivery_delay
    }

    fn ticket(&mut self, partition: u32) -> Ticket {
        self.next_ticket += 1;
        Ticket {
            reports: self.reports_tx.clone(),
            partition,
            ticket: self.next_ticket,
        }
    }

    /// The next deliverable record, round-robin over lanes, if any is ready.
    pub(crate) fn next_delivery(&mut self) -> Option<Delivery> {
        let now = Instant::now();
        let ready = |lane: &Lane<T>| {
            !lane.held
                && lane.in_flight.is_none()
                && !lane.queue.is_empty()
                && lane.not_before.is_none_or(|t| t <= now)
        };
        let partition = self
            .lanes
            .range(self.turn.saturating_add(1)..)
            .chain(self.lanes.range(..=self.turn))
            .find(|(_, lane)| ready(lane))
            .map(|(p, _)| *p)?;
        self.turn = partition;
        let ticket = self.ticket(partition);
        let lane = self.lanes.get_mut(&partition)?;
        lane.in_flight = Some(ticket.ticket);
        lane.not_before = None;
        let epoch = lane.epoch;
        let entry = lane.queue.front_mut()?;
        entry.attempts += 1;
        let settle = DeliveryTicket {
            ticket,
            hook: self.hook.clone().map(|h| (h, epoch, entry.record.offset)),
        };
        Some(Delivery::new(
            entry.record.clone(),
            entry.attempts,
            Box::new(settle),
        ))
    }

    /// Claims a due front record that `pick` chooses, instead of delivering it: for records
    /// the adapter settles itself (forwards, say) and reports on through the ticket.
    pub(crate) fn claim_front(&mut self, pick: impl Fn(&T) -> bool) -> Option<(Record, Ticket)> {
        let now = Instant::now();
        let partition = self.lanes.iter().find_map(|(partition, lane)| {
            let due =
                !lane.held && lane.in_flight.is_none() && lane.not_before.is_none_or(|t| t <= now);
            (due && lane.queue.front().is_some_and(|e| pick(&e.token))).then_some(*partition)
        })?;
        let ticket = self.ticket(partition);
        let lane = self.lanes.get_mut(&partition)?;
        lane.in_flight = Some(ticket.ticket);
        lane.not_before = None;
        Some((lane.queue.front()?.record.clone(), ticket))
    }

    /// When the earliest nacked record becomes deliverable again, if any waits.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.lanes
            .values()
            .filter(|l| l.in_flight.is_none() && !l.queue.is_empty())
            .filter_map(|l| l.not_before)
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

    /// Applies a settle report; `None` when it needs nothing from the adapter (a retry, or a
    /// stale report from a lane revoked meanwhile).
    pub(crate) fn apply(&mut self, (partition, ticket, outcome): Report) -> Option<Done<T>> {
        let lane = self.lanes.get_mut(&partition)?;
        if lane.in_flight != Some(ticket) {
            return None;
        }
        lane.in_flight = None;
        let attempts = lane.queue.front()?.attempts;
        let reason = match outcome {
            Outcome::Ack => return lane.queue.pop_front().map(Done::Ack),
            Outcome::Nack(_) if attempts < self.options.max_attempts => {
                lane.not_before = Some(Instant::now() + self.options.backoff(attempts + 1));
                return None;
            }
            Outcome::Nack(reason) | Outcome::DeadLetter(reason) => reason,
        };
        // The record stays at the front, in flight, until its dead letter is published.
        let message = dead_letter_message(&lane.queue.front()?.record, &reason, attempts);
        let ticket = self.ticket(partition);
        self.lanes.get_mut(&partition)?.in_flight = Some(ticket.ticket);
        Some(Done::DeadLetter(message, ticket))
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

    fn record(partition: u32, offset: u64) -> Record {
        Record {
            topic: "t".into(),
            partition,
            offset: Some(offset),
            key: "k".into(),
            payload: Vec::new(),
            headers: Vec::new(),
            timestamp: 0,
        }
    }

    fn inbox(max_attempts: u32) -> Inbox<u64> {
        let mut inbox = Inbox::new(SubscribeOptions {
            max_attempts,
            redelivery_delay: Duration::ZERO,
            ..SubscribeOptions::default()
        });
        for p in 0..2 {
            inbox.assign(p);
            for o in 0..2 {
                let entry = Entry {
                    record: record(p, o),
                    token: o,
                    attempts: 0,
                };
                assert!(inbox.push(p, entry));
            }
        }
        inbox
    }

    #[test]
    fn one_in_flight_per_lane_and_round_robin() {
        let mut inbox = inbox(3);
        let a = inbox.next_delivery().unwrap();
        let b = inbox.next_delivery().unwrap();
        assert_ne!(a.record.partition, b.record.partition);
        assert!(inbox.next_delivery().is_none(), "both lanes busy");
        let a_partition = a.record.partition;
        a.ack();
        let report = inbox.try_report().unwrap();
        assert!(matches!(inbox.apply(report), Some(Done::Ack(e)) if e.token == 0));
        let c = inbox.next_delivery().unwrap();
        assert_eq!(
            (c.record.partition, c.record.offset),
            (a_partition, Some(1))
        );
        drop(b);
    }

    #[test]
    fn nacks_retry_then_dead_letter_and_stale_reports_are_ignored() {
        let mut inbox = inbox(2);
        inbox.revoke(1);
        let d = inbox.next_delivery().unwrap();
        assert_eq!(d.attempt, 1);
        d.nack("x");
        let report = inbox.try_report().unwrap();
        assert!(inbox.apply(report).is_none(), "retried");
        let d = inbox.next_delivery().unwrap();
        assert_eq!((d.record.offset, d.attempt), (Some(0), 2));
        drop(d); // an unsettled drop is a nack
        let report = inbox.try_report().unwrap();
        let Some(Done::DeadLetter(message, ticket)) = inbox.apply(report) else {
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
        assert!(matches!(inbox.apply(report), Some(Done::Ack(e)) if e.token == 0));
        let d = inbox.next_delivery().unwrap();
        inbox.revoke(0);
        d.ack();
        let report = inbox.try_report().unwrap();
        assert!(inbox.apply(report).is_none(), "revoked meanwhile");
    }
}
