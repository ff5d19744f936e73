//! A RabbitMQ consumer-group member.
//!
//! Safety comes from the broker: each partition queue has single-active-consumer, so however
//! many members are registered on it, one receives. Balance comes from the members: each
//! announces itself every `HEARTBEAT` on the group's fanout exchange `T.group.G.members`, and
//! registers only on the partitions that fall to it among the members it hears (partition p
//! goes to the (p mod n)-th member by id). A partition that no longer falls to it is revoked:
//! its lane is held, the consumer gets a `Revocation`, and once that is released (or after a
//! grace) the partition's channel closes, which returns its unacked messages to the queue
//! for the next registered member. RabbitMQ 3.10 does not tell a waiting consumer when it
//! becomes active, so `Assigned` means registered; until the previous owner lets go, the
//! broker keeps delivering to it alone.
//!
//! A nack is held here and redelivered after its backoff, keeping the queue's order; attempts
//! are counted here (the broker's `x-delivery-count` also counts the prefetched messages a
//! handover returns, which were never tried). Each partition has a channel of its own, so
//! closing it returns only its messages. Connecting, registering and announcing run in tasks
//! of their own, so `next` can be cancelled at any point.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Acker, BasicProperties, Channel, Connection, ExchangeKind};
use tokio::sync::{mpsc, oneshot};

use super::{RabbitBus, from_table, group_exchange, link, partition_queue, short};
use crate::bus::{BusError, Event, Record, Revocation, SubscribeOptions, Subscription};
use crate::inbox::{Done, Entry, Inbox, spawn_publish};

/// How often a member announces itself.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// A member not heard from for this long is gone.
const MEMBER_TTL: Duration = Duration::from_secs(3);
/// A new member listens this long before it registers, to learn who else is there.
const JOIN_GRACE: Duration = Duration::from_millis(1200);
/// How long a revocation may be held before the partition is let go anyway.
const REVOKE_GRACE: Duration = Duration::from_secs(15);
/// Messages the broker sends ahead per partition.
const PREFETCH: u16 = 256;

/// From the consumer tasks to the subscription.
enum Incoming {
    /// This member is now registered on the partition (registration `.1`) through a channel.
    Registered(u32, u64, Channel),
    /// A message of a partition, from registration `.1`.
    Message(u32, u64, Box<lapin::message::Delivery>),
    Member {
        id: String,
        leaving: bool,
    },
    Lost(String),
}

/// The live connection of a member.
struct Session {
    connection: Arc<Connection>,
    control: Channel,
    members_exchange: String,
    /// The registration and consuming channel of each partition this member is registered on.
    partitions: BTreeMap<u32, (u64, Channel)>,
    /// Partitions whose registration is under way, with its id.
    registering: BTreeMap<u32, u64>,
    next_registration: u64,
    incoming_tx: mpsc::UnboundedSender<Incoming>,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    heard: HashMap<String, Instant>,
    started: Instant,
    /// Announces this member every `HEARTBEAT`, whether or not `next` is being called.
    announcer: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.announcer.abort();
        let connection = self.connection.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // Unacked messages return to their queues with the connection.
            runtime.spawn(async move {
                let _ = connection.close(200, "closed".into()).await;
            });
        }
    }
}

/// Announces `id` (or its leaving) on the group's members exchange.
async fn announce(
    control: &Channel,
    exchange: &str,
    id: &str,
    leaving: bool,
) -> Result<(), lapin::Error> {
    let mut properties = BasicProperties::default();
    if leaving {
        let mut headers = FieldTable::default();
        headers.insert("leaving".into(), AMQPValue::Boolean(true));
        properties = properties.with_headers(headers);
    }
    control
        .basic_publish(
            exchange.into(),
            "".into(),
            BasicPublishOptions::default(),
            id.as_bytes(),
            properties,
        )
        .await
        .map(drop)
}

impl Session {
    /// Opens a connection of the member's own and joins the group's membership; a failure
    /// part-way closes what was opened.
    async fn open(
        bus: RabbitBus,
        topic: String,
        group: String,
        id: String,
    ) -> Result<Session, BusError> {
        let connection = bus.inner.link.dedicated().await?;
        let members_exchange = format!("{}.members", group_exchange(&topic, &group));
        let join = async {
            Session::join(&connection, &members_exchange)
                .await
                .map_err(|error| link::classify(bus.url(), &topic, &error))
        };
        match link::answered(bus.url(), "joining the group", join).await {
            Ok((control, incoming_tx, incoming)) => {
                let announcer = {
                    let (control, exchange) = (control.clone(), members_exchange.clone());
                    tokio::spawn(async move {
                        let mut beat = tokio::time::interval(HEARTBEAT);
                        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        loop {
                            beat.tick().await;
                            if announce(&control, &exchange, &id, false).await.is_err() {
                                return; // the connection is gone; the consumers notice it too
                            }
                        }
                    })
                };
                Ok(Session {
                    connection: Arc::new(connection),
                    control,
                    members_exchange,
                    partitions: BTreeMap::new(),
                    registering: BTreeMap::new(),
                    next_registration: 0,
                    incoming_tx,
                    incoming,
                    heard: HashMap::new(),
                    started: Instant::now(),
                    announcer,
                })
            }
            Err(error) => {
                // Not awaited: a broker that did not answer the join may not answer this.
                tokio::spawn(async move {
                    let _ = connection.close(200, "failed to join".into()).await;
                });
                Err(error)
            }
        }
    }

    /// Declares the members exchange and this member's queue on it, and forwards what it
    /// hears.
    async fn join(
        connection: &Connection,
        members_exchange: &str,
    ) -> Result<
        (
            Channel,
            mpsc::UnboundedSender<Incoming>,
            mpsc::UnboundedReceiver<Incoming>,
        ),
        lapin::Error,
    > {
        let control = connection.create_channel().await?;
        let transient = ExchangeDeclareOptions {
            auto_delete: true,
            ..ExchangeDeclareOptions::default()
        };
        control
            .exchange_declare(
                members_exchange.into(),
                ExchangeKind::Fanout,
                transient,
                FieldTable::default(),
            )
            .await?;
        let exclusive = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        let queue = control
            .queue_declare("".into(), exclusive, FieldTable::default())
            .await?;
        control
            .queue_bind(
                queue.name().clone(),
                members_exchange.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        };
        let consumer = control
            .basic_consume(
                queue.name().clone(),
                "".into(),
                no_ack,
                FieldTable::default(),
            )
            .await?;
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        tokio::spawn(forward(consumer, incoming_tx.clone(), |d| {
            Incoming::Member {
                id: String::from_utf8_lossy(&d.data).into_owned(),
                leaving: d
                    .properties
                    .headers()
                    .as_ref()
                    .is_some_and(|h| h.inner().contains_key("leaving")),
            }
        }));
        Ok((control, incoming_tx, incoming))
    }
}

/// Partitions being handed over: released when the consumer drops their `Revocation`.
struct Handover {
    partitions: Vec<u32>,
    released: oneshot::Receiver<()>,
    deadline: Instant,
}

pub(crate) struct RabbitSubscription {
    bus: RabbitBus,
    topic: String,
    dlq: String,
    group: String,
    partitions: u32,
    id: String,
    inbox: Inbox<Acker>,
    /// Settled messages the inbox released, in order, until they are acked to the broker:
    /// kept here so a cancelled `next` loses none of them.
    released: VecDeque<Done<Acker>>,
    session: Option<Session>,
    /// A connection being opened, while there is no session.
    connecting: Option<tokio::task::JoinHandle<Result<Session, BusError>>>,
    handovers: Vec<Handover>,
    events: VecDeque<Event>,
}

/// Forwards a consumer's deliveries until its channel closes.
async fn forward(
    mut consumer: lapin::Consumer,
    tx: mpsc::UnboundedSender<Incoming>,
    wrap: impl Fn(lapin::message::Delivery) -> Incoming,
) {
    while let Some(delivery) = consumer.next().await {
        let incoming = match delivery {
            Ok(delivery) => wrap(delivery),
            Err(error) => Incoming::Lost(error.to_string()),
        };
        if tx.send(incoming).is_err() {
            break;
        }
    }
}

impl RabbitSubscription {
    pub(crate) async fn start(
        bus: RabbitBus,
        topic: &str,
        dlq: String,
        partitions: u32,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Self, BusError> {
        let mut subscription = RabbitSubscription {
            bus,
            topic: topic.to_owned(),
            dlq,
            group: group.to_owned(),
            partitions,
            id: super::stream::new_marker(),
            inbox: Inbox::new(options),
            released: VecDeque::new(),
            session: None,
            connecting: None,
            handovers: Vec::new(),
            events: VecDeque::new(),
        };
        subscription.connect().await?;
        Ok(subscription)
    }

    /// Opens a session, in a task of its own so that a cancelled call leaves nothing half
    /// open: a later call finds the task and waits for it again.
    async fn connect(&mut self) -> Result<(), BusError> {
        let (bus, topic, group, id) = (
            self.bus.clone(),
            self.topic.clone(),
            self.group.clone(),
            self.id.clone(),
        );
        let connecting = self
            .connecting
            .get_or_insert_with(|| tokio::spawn(Session::open(bus, topic, group, id)));
        let opened = connecting
            .await
            .map_err(|e| BusError::Broker(format!("connecting to rabbitmq: {e}")));
        self.connecting = None;
        self.session = Some(opened??);
        Ok(())
    }

    /// The partitions that fall to this member among the members it hears now.
    fn wanted(&self, session: &Session) -> BTreeSet<u32> {
        let now = Instant::now();
        let mut members: Vec<&str> = session
            .heard
            .iter()
            .filter(|(_, at)| now.duration_since(**at) < MEMBER_TTL)
            .map(|(id, _)| id.as_str())
            .chain([self.id.as_str()])
            .collect();
        members.sort_unstable();
        members.dedup();
        let index = members.iter().position(|m| *m == self.id).unwrap_or(0) as u32;
        let count = members.len() as u32;
        (0..self.partitions)
            .filter(|p| p % count == index)
            .collect()
    }

    /// Registers on partitions that fall to this member and starts handing over the others.
    async fn rebalance(&mut self) -> Result<(), BusError> {
        let Some(session) = &self.session else {
            return Ok(());
        };
        if session.started.elapsed() < JOIN_GRACE {
            return Ok(());
        }
        let wanted = self.wanted(session);
        let handing: BTreeSet<u32> = self
            .handovers
            .iter()
            .flat_map(|h| h.partitions.iter().copied())
            .collect();
        let registered: BTreeSet<u32> = session
            .partitions
            .keys()
            .chain(session.registering.keys())
            .copied()
            .collect();
        let released: Vec<u32> = registered
            .iter()
            .filter(|p| !wanted.contains(p) && !handing.contains(p))
            .copied()
            .collect();
        if !released.is_empty() {
            for partition in &released {
                self.inbox.hold(*partition);
            }
            let (revocation, released_rx) = Revocation::new(released.clone());
            self.handovers.push(Handover {
                partitions: released,
                released: released_rx,
                deadline: Instant::now() + REVOKE_GRACE,
            });
            self.events.push_back(Event::Revoked(revocation));
        }
        for partition in wanted.difference(&registered) {
            self.register(*partition)?;
        }
        Ok(())
    }

    /// Registers on `partition` in a task of its own, which reports `Registered` and then
    /// forwards the partition's messages (so a cancelled `next` leaves nothing half done).
    fn register(&mut self, partition: u32) -> Result<(), BusError> {
        let queue = short(&partition_queue(&self.topic, &self.group, partition))?;
        let Some(session) = self.session.as_mut() else {
            return Ok(());
        };
        session.next_registration += 1;
        let registration = session.next_registration;
        session.registering.insert(partition, registration);
        let (connection, tx) = (session.connection.clone(), session.incoming_tx.clone());
        tokio::spawn(async move {
            let consumer = async {
                let channel = connection.create_channel().await?;
                channel
                    .basic_qos(PREFETCH, BasicQosOptions::default())
                    .await?;
                let consumer = channel
                    .basic_consume(
                        queue,
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                Ok::<_, lapin::Error>((channel, consumer))
            };
            // A registration left unanswered would keep its partition from this member for
            // good: the connection is lost instead, and the member connects again.
            match link::in_time("a consumer's registration", consumer).await {
                Err(unanswered) => {
                    let _ = tx.send(Incoming::Lost(unanswered));
                }
                Ok(Ok((channel, consumer))) => {
                    if tx
                        .send(Incoming::Registered(partition, registration, channel))
                        .is_ok()
                    {
                        forward(consumer, tx, move |d| {
                            Incoming::Message(partition, registration, Box::new(d))
                        })
                        .await;
                    }
                }
                Ok(Err(error)) => {
                    let _ = tx.send(Incoming::Lost(error.to_string()));
                }
            }
        });
        Ok(())
    }

    /// Lets go of handed-over partitions whose revocation was released or ran out of time.
    async fn finish_handovers(&mut self) -> Result<(), BusError> {
        // Acks of the last deliveries reach the broker before their channel closes.
        self.apply_reports().await?;
        let now = Instant::now();
        let mut done = Vec::new();
        self.handovers.retain_mut(|h| {
            let finished = !matches!(
                h.released.try_recv(),
                Err(oneshot::error::TryRecvError::Empty)
            ) || now >= h.deadline;
            if finished {
                done.extend(&h.partitions);
            }
            !finished
        });
        for partition in done {
            self.inbox.revoke(partition);
            if let Some((_, channel)) = self
                .session
                .as_mut()
                .and_then(|s| s.partitions.remove(&partition))
            {
                tokio::spawn(async move {
                    let _ = channel.close(200, "partition handed over".into()).await;
                });
            }
        }
        Ok(())
    }

    fn receive(&mut self, incoming: Incoming) -> Result<(), BusError> {
        match incoming {
            Incoming::Registered(partition, registration, channel) => {
                if let Some(session) = self.session.as_mut() {
                    session.registering.remove(&partition);
                    session
                        .partitions
                        .insert(partition, (registration, channel));
                    self.inbox.assign(partition);
                    self.events.push_back(Event::Assigned(vec![partition]));
                }
            }
            Incoming::Message(partition, registration, delivery) => {
                let current = self
                    .session
                    .as_ref()
                    .and_then(|s| s.partitions.get(&partition))
                    .is_some_and(|(r, _)| *r == registration);
                if !current {
                    // From a registration let go meanwhile: its channel returns it.
                    return Ok(());
                }
                let table = delivery.properties.headers().as_ref();
                let (mut headers, timestamp) = from_table(table, *delivery.properties.timestamp());
                headers.retain(|(k, _)| k != "x-delivery-count");
                let delivery = *delivery;
                let record = Record {
                    topic: self.topic.clone(),
                    partition,
                    offset: None,
                    key: delivery.routing_key.as_str().to_owned(),
                    payload: delivery.data,
                    headers,
                    timestamp,
                };
                let entry = Entry {
                    record,
                    token: delivery.acker,
                    attempts: 0,
                };
                // A message of a partition let go meanwhile returns to the queue with its
                // channel.
                self.inbox.push(partition, entry);
            }
            Incoming::Member { id, leaving } => {
                if let Some(session) = self.session.as_mut()
                    && id != self.id
                {
                    if leaving {
                        session.heard.remove(&id);
                    } else {
                        session.heard.insert(id, Instant::now());
                    }
                }
            }
            Incoming::Lost(reason) => return Err(self.lose(&reason)),
        }
        Ok(())
    }

    /// The connection is gone: every partition with it (the broker returns their unacked
    /// messages); the next call reconnects.
    fn lose(&mut self, reason: &str) -> BusError {
        // Their acks cannot reach the broker any more; it delivers them again.
        self.released.clear();
        if let Some(session) = self.session.take() {
            let partitions: Vec<u32> = session.partitions.keys().copied().collect();
            for partition in &partitions {
                self.inbox.revoke(*partition);
            }
            self.handovers.clear();
            if !partitions.is_empty() {
                self.events
                    .push_back(Event::Revoked(Revocation::new(partitions).0));
            }
            drop(session);
        }
        BusError::Unavailable(format!(
            "rabbitmq at {}: {reason}",
            link::redacted(self.bus.url())
        ))
    }

    /// Carries out the settled messages, in order: an acked one is acked to the broker; a
    /// dead letter is published first, and reports back as acked. Each leaves `released` only
    /// once carried out, so a cancelled call resumes where it stopped.
    async fn settle_released(&mut self) -> Result<(), BusError> {
        while let Some(done) = self.released.front() {
            if let Done::Ack(entry) = done
                && let Err(error) = entry.token.ack(BasicAckOptions::default()).await
            {
                // The connection is gone, and the unacked messages with it back to their
                // queues: a duplicate, never a loss.
                return Err(self.lose(&error.to_string()));
            }
            if let Some(Done::DeadLetter(message, ticket)) = self.released.pop_front() {
                let retry = self.inbox.retry_delay();
                spawn_publish(&self.bus, &self.dlq, message, ticket, retry);
            }
        }
        Ok(())
    }

    async fn apply_reports(&mut self) -> Result<(), BusError> {
        while let Some(report) = self.inbox.try_report() {
            self.released.extend(self.inbox.apply(report));
        }
        self.settle_released().await
    }
}

#[async_trait]
impl Subscription for RabbitSubscription {
    async fn next(&mut self) -> Result<Event, BusError> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            if self.session.is_none() {
                self.connect().await?;
            }
            self.apply_reports().await?;
            self.finish_handovers().await?;
            while let Some(incoming) = self
                .session
                .as_mut()
                .and_then(|s| s.incoming.try_recv().ok())
            {
                self.receive(incoming)?;
            }
            self.rebalance().await?;
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            if let Some(delivery) = self.inbox.next_delivery() {
                return Ok(Event::Delivery(delivery));
            }
            let wake = self
                .inbox
                .next_due()
                .into_iter()
                .chain(self.handovers.iter().map(|h| h.deadline))
                .min()
                .map_or(HEARTBEAT, |t| t.saturating_duration_since(Instant::now()));
            let Some(session) = self.session.as_mut() else {
                continue;
            };
            let handing_over = !self.handovers.is_empty();
            let wake = wake.min(HEARTBEAT);
            tokio::select! {
                report = self.inbox.report() => {
                    self.released.extend(self.inbox.apply(report));
                    self.settle_released().await?;
                }
                incoming = session.incoming.recv() => {
                    if let Some(incoming) = incoming {
                        self.receive(incoming)?;
                    }
                }
                // A released revocation is noticed within a few ms.
                () = tokio::time::sleep(if handing_over { Duration::from_millis(5) } else { wake }) => {}
            }
        }
    }

    async fn close(mut self: Box<Self>) -> Result<(), BusError> {
        self.apply_reports().await?;
        if let Some(session) = self.session.take() {
            let exchange = &session.members_exchange;
            let _ = announce(&session.control, exchange, &self.id, true).await;
            session.announcer.abort();
            // Unacked messages return to their queues with the connection.
            let _ = session.connection.close(200, "closed".into()).await;
        }
        Ok(())
    }
}

impl Drop for RabbitSubscription {
    fn drop(&mut self) {
        // Acks the handlers gave that have not reached the broker yet (a cancelled `next`
        // leaves them here) go out before the connection closes, so a subscription dropped
        // unclosed redelivers only what was never acked.
        while let Some(report) = self.inbox.try_report() {
            self.released.extend(self.inbox.apply(report));
        }
        let acks: Vec<Acker> = self
            .released
            .drain(..)
            .filter_map(|done| match done {
                Done::Ack(entry) => Some(entry.token),
                Done::DeadLetter(..) => None,
            })
            .collect();
        if let (Some(session), Ok(runtime)) =
            (self.session.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                for acker in acks {
                    if acker.ack(BasicAckOptions::default()).await.is_err() {
                        break;
                    }
                }
                // Closes the connection, which returns what is still unacked.
                drop(session);
            });
        }
    }
}
