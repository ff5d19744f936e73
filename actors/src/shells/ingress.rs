//! The ingress: consumes the events topic, decodes each message and hands it to its mailbox,
//! and follows which partitions this node owns.
//!
//! Supervision: a permanent child of the node. A fatal bus error fails it and its supervisor
//! restarts it, re-joining the consumer group from the committed offsets; a transient one (the
//! broker is unreachable) is retried here with a backoff, so an outage restarts nothing.
//! Ordering: the bus has up to `IN_FLIGHT` messages of a partition out at once, never two of
//! one key; the mailbox settles each, so a key's messages are applied in order.
//! Ownership: on revocation the partitions' routing finishes and their mailboxes drain and stop
//! before the revocation is released, so the new owner's mailboxes load what this node wrote.
//! Shutdown: the loop runs one poll per message to itself, so a stop lands between messages;
//! closing the subscription commits what was acked, and anything unacked is redelivered.

use std::collections::HashMap;
use std::time::Duration;

use broker_adapters::{
    BusError, Delivery, Event, Revocation, StartAt, SubscribeOptions, Subscription,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use schemas::Envelope;
use tokio::task::JoinSet;

use crate::NodeContext;
use crate::shells::router::{self, RouteError};

/// The consumer group every node's ingress joins.
pub const INGRESS_GROUP: &str = "switchyard-node";

/// Redeliveries before a message is dead-lettered: with the bus's doubling backoff, about 16 s
/// of trying, so a restarting mailbox or a database blip does not dead-letter good messages.
const MAX_ATTEMPTS: u32 = 10;

/// Messages of one partition being routed or applied at once (of distinct keys): enough for
/// the state writer to commit large batches.
const IN_FLIGHT: usize = 512;

/// How long one poll waits before yielding to the mailbox.
const POLL: Duration = Duration::from_millis(250);

/// The longest wait between retries while the broker is unreachable.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// How long a revoked partition's work may take to settle before it is given up anyway
/// (longer than a shard's drain timeout, so every shard hears of it).
const REVOKE_GRACE: Duration = Duration::from_secs(15);

/// The ingress's hop for one delivery: decoded (an undecodable one is dead-lettered) and handed
/// to the mailbox of its key; given back when that mailbox's shard is not running yet.
/// Duplicates pass: the state writer finds a message applied before by its id.
pub fn hop(ctx: &NodeContext, delivery: Delivery) -> Option<(Box<Envelope>, Delivery)> {
    metrics::counter!("switchyard_bus_consumed_total", "topic" => schemas::EVENTS_TOPIC)
        .increment(1);
    let envelope = match schemas::decode(&delivery.record.payload) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::warn!(partition = delivery.record.partition, offset = ?delivery.record.offset, %error, "undecodable message");
            delivery.dead_letter(error.to_string());
            return None;
        }
    };
    // From the producer's clock to this node's: the bus's latency, roughly.
    let age = crate::store::now_ms().saturating_sub(envelope.time);
    metrics::histogram!("switchyard_bus_delivery_age_seconds", "topic" => schemas::EVENTS_TOPIC)
        .record(age as f64 / 1000.0);
    match router::try_deliver(ctx, Box::new(envelope), delivery).map_err(|u| *u) {
        Ok(()) => None,
        Err((RouteError::NotStarted(_), envelope, delivery)) => Some((envelope, delivery)),
        Err((error, _, delivery)) => {
            router::settle_unroutable(error, delivery);
            None
        }
    }
}

/// The ingress actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngressActor;

/// Polls for the next event (sent to itself).
pub struct Poll;

#[doc(hidden)]
pub struct IngressState {
    ctx: NodeContext,
    subscription: Option<Box<dyn Subscription>>,
    /// The routing of each partition's in-flight deliveries.
    routing: HashMap<u32, JoinSet<()>>,
    /// The wait before the next retry while the broker is unreachable; zero when it is fine.
    retry: Duration,
}

impl IngressState {
    async fn subscribe(&mut self) -> Result<(), BusError> {
        let subscription = self
            .ctx
            .bus
            .subscribe(
                schemas::EVENTS_TOPIC,
                INGRESS_GROUP,
                SubscribeOptions {
                    max_attempts: MAX_ATTEMPTS,
                    start: StartAt::Earliest,
                    in_flight: IN_FLIGHT,
                    ..SubscribeOptions::default()
                },
            )
            .await?;
        self.subscription = Some(subscription);
        Ok(())
    }

    /// Waits before the next try, doubling up to `MAX_RETRY`; logs the start of an outage.
    fn back_off(&mut self, myself: &ActorRef<Poll>, error: &BusError) {
        if self.retry.is_zero() {
            tracing::warn!(%error, "the bus is unreachable; retrying until it is back");
            self.retry = Duration::from_millis(100);
        } else {
            self.retry = (self.retry * 2).min(MAX_RETRY);
        }
        myself.send_after(self.retry, || Poll);
    }

    fn recovered(&mut self) {
        if !self.retry.is_zero() {
            tracing::info!("the bus is reachable again");
            self.retry = Duration::ZERO;
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        if let Some((envelope, delivery)) = hop(&self.ctx, delivery) {
            // Starting the partition's shard takes a round trip to its supervisor; other
            // partitions need not wait for it. Per-key order holds: the bus hands out a key's
            // next message only once this one is settled.
            let routing = self.routing.entry(delivery.record.partition).or_default();
            while routing.try_join_next().is_some() {}
            let ctx = self.ctx.clone();
            routing.spawn(async move { router::start_and_deliver(&ctx, envelope, delivery).await });
        }
    }

    async fn assigned(&mut self, partitions: &[u32]) {
        tracing::info!(?partitions, "partitions assigned");
        // A shard left from an earlier ownership (its drain timed out, or this ingress
        // restarted) holds state another owner may have changed since: it goes first.
        futures::future::join_all(partitions.iter().map(|p| router::drain(&self.ctx, *p))).await;
        self.ctx.ownership.add(partitions);
        if partitions.contains(&crate::shells::orchestrator::LEADER_PARTITION) {
            crate::shells::orchestrator::took_the_lead(&self.ctx);
        }
    }

    /// Lets the revoked partitions' work settle, then releases them to their new owner.
    async fn revoked(&mut self, revocation: Revocation) {
        let partitions = &revocation.partitions;
        tracing::info!(?partitions, "partitions revoked");
        self.ctx.ownership.remove(partitions);
        let routing: Vec<JoinSet<()>> = partitions
            .iter()
            .filter_map(|partition| self.routing.remove(partition))
            .collect();
        let ctx = &self.ctx;
        let settled = async {
            futures::future::join_all(routing.into_iter().map(JoinSet::join_all)).await;
            // Every shard is told, each waiting at most its own drain timeout.
            futures::future::join_all(partitions.iter().map(|p| router::drain(ctx, *p))).await;
        };
        if tokio::time::timeout(REVOKE_GRACE, settled).await.is_err() {
            tracing::warn!(?partitions, "revoked partitions did not settle in time");
        }
        drop(revocation);
    }
}

impl Actor for IngressActor {
    type Msg = Poll;
    type State = IngressState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Poll>,
        ctx: NodeContext,
    ) -> Result<IngressState, ActorProcessingErr> {
        // A restarted ingress starts from nothing: whatever it owned is re-assigned to it.
        ctx.ownership.clear();
        myself.send_message(Poll)?;
        Ok(IngressState {
            ctx,
            subscription: None,
            routing: HashMap::new(),
            retry: Duration::ZERO,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Poll>,
        state: &mut IngressState,
    ) -> Result<(), ActorProcessingErr> {
        state.ctx.ownership.clear();
        if let Some(subscription) = state.subscription.take() {
            subscription.close().await?;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Poll>,
        _poll: Poll,
        state: &mut IngressState,
    ) -> Result<(), ActorProcessingErr> {
        crate::chaos::strike(&myself);
        if state.subscription.is_none() {
            match state.subscribe().await {
                Ok(()) => state.recovered(),
                Err(error) if error.is_transient() => {
                    state.back_off(&myself, &error);
                    return Ok(());
                }
                Err(error) => return Err(error.into()),
            }
        }
        let Some(subscription) = state.subscription.as_mut() else {
            return Ok(());
        };
        if let Ok(event) = tokio::time::timeout(POLL, subscription.next()).await {
            match event {
                Ok(Event::Delivery(delivery)) => {
                    state.recovered();
                    state.deliver(delivery);
                }
                Ok(Event::Assigned(partitions)) => state.assigned(&partitions).await,
                Ok(Event::Revoked(revocation)) => state.revoked(revocation).await,
                Err(error) if error.is_transient() => {
                    state.back_off(&myself, &error);
                    return Ok(());
                }
                Err(error) => return Err(error.into()),
            }
        }
        myself.send_message(Poll)?;
        Ok(())
    }
}
