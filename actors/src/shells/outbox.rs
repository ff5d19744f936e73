//! The outbox: delivers recorded notifications. Each due one is claimed for a lease, held
//! while its user's quiet hours last, resolved to a channel and recipient (a task's `default`
//! notification goes back into the conversation the task came from), and sent through that
//! channel's provider mailbox; a failure is retried with a doubling wait, and one given up
//! after trying is marked `failed` and dead-lettered with its reason (one with nowhere to go,
//! no provider or no address, is marked `failed` with the reason only).
//!
//! Supervision: a permanent child of `notifier`. Everything it knows is in the store: a
//! restart finds the due notifications again, and one claimed by a sender that died is free
//! again when its lease ends.
//! Ordering: none between notifications; each one's attempts one after another.
//! Shutdown: sends in flight finish in their own tasks; their leases keep others off.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use broker_adapters::{OutMessage, dlq_topic};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use schemas::{EVENTS_TOPIC, Envelope, Message, NotificationRequested};

use super::provider::{CallError, ProviderHandle};
use crate::domain::notify::{self, Preferences};
use crate::providers::{Outgoing, Provider};
use crate::store::{Delivery, Notification, Store};
use crate::{NodeContext, outbound};

/// The channels a provider can be configured for (`[notifier.<channel>]`).
const PROVIDERS: [&str; 5] = ["webhook", "email", "sms", "slack", "telegram"];

/// Notifications in the senders' hands at once, at most.
const IN_FLIGHT: usize = 1024;

/// How delivery is done: the policy, each user's preferences, each channel's provider.
#[derive(Clone, Debug)]
pub struct Notifier {
    /// How often the outbox looks for due notifications.
    pub poll: Duration,
    /// How long a claimed notification is held by its sender.
    pub lease: Duration,
    /// Attempts before one is given up.
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles with each one.
    pub retry_initial: Duration,
    /// The longest wait between attempts.
    pub retry_max: Duration,
    /// How each configured user wants to be reached.
    pub preferences: BTreeMap<String, Preferences>,
    /// Each channel's provider and its mailbox.
    pub providers: BTreeMap<String, Channel>,
}

/// An outbound channel: its provider, called through the provider's mailbox.
#[derive(Clone)]
pub struct Channel {
    /// What sends.
    pub provider: Arc<dyn Provider>,
    /// The mailbox every call to it goes through.
    pub mailbox: ProviderHandle,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Channel({})", self.mailbox.name())
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            poll: Duration::from_millis(250),
            lease: Duration::from_secs(300),
            max_attempts: 8,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            preferences: BTreeMap::new(),
            providers: BTreeMap::new(),
        }
    }
}

/// What the outbox is told.
pub enum OutboxMsg {
    /// Look for due notifications.
    Tick,
    /// A send of notification `id` finished, one way or the other.
    Done(i64),
}

/// The outbox actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutboxActor;

/// The node, and the notifications being sent now.
pub struct OutboxState {
    ctx: NodeContext,
    in_flight: HashSet<i64>,
}

impl Actor for OutboxActor {
    type Msg = OutboxMsg;
    type State = OutboxState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<OutboxMsg>,
        ctx: NodeContext,
    ) -> Result<OutboxState, ActorProcessingErr> {
        myself.send_interval(ctx.notifier.poll, || OutboxMsg::Tick);
        Ok(OutboxState {
            ctx,
            in_flight: HashSet::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<OutboxMsg>,
        message: OutboxMsg,
        state: &mut OutboxState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            OutboxMsg::Done(id) => {
                state.in_flight.remove(&id);
            }
            OutboxMsg::Tick => {
                let room = IN_FLIGHT.saturating_sub(state.in_flight.len());
                // A node with no provider leaves the outbox to nodes that have one.
                if room == 0 || state.ctx.notifier.providers.is_empty() {
                    return Ok(());
                }
                let (store, notifier) = (&state.ctx.store, &state.ctx.notifier);
                let now = state.ctx.clock.now();
                let lease = notifier.lease.as_millis() as u64;
                // A read error is the database's hiccup: the next tick tries again.
                let due = match store.due_notifications(now, room as u64).await {
                    Ok(due) => due,
                    Err(error) => {
                        tracing::warn!(%error, "reading due notifications");
                        return Ok(());
                    }
                };
                for notification in due {
                    if state.in_flight.contains(&notification.id) {
                        continue;
                    }
                    match store.claim_notification(&notification, now, lease).await {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(error) => {
                            tracing::warn!(%error, "claiming a notification");
                            return Ok(());
                        }
                    }
                    state.in_flight.insert(notification.id);
                    let (ctx, outbox) = (state.ctx.clone(), myself.clone());
                    let claimed = now + lease;
                    tokio::spawn(async move {
                        let id = notification.id;
                        deliver(&ctx, notification, claimed).await;
                        let _ = outbox.send_message(OutboxMsg::Done(id));
                    });
                }
            }
        }
        Ok(())
    }
}

/// Carries out one attempt at `notification`, claimed until `claimed`, and records how it
/// went unless the claim passed to another sender meanwhile.
async fn deliver(ctx: &NodeContext, notification: Notification, claimed: u64) {
    let delivery = attempt(ctx, &notification).await;
    let channel = notification.channel.clone();
    let outcome = match &delivery {
        Delivery::Sent { .. } => "sent",
        Delivery::Retry { .. } => "retry",
        Delivery::Held { .. } => "held",
        Delivery::Deferred { .. } => "deferred",
        Delivery::Failed { .. } => "failed",
    };
    metrics::counter!("switchyard_notifications_total", "channel" => channel, "outcome" => outcome)
        .increment(1);
    // What was tried and failed can be sent again; what has nowhere to go cannot.
    if let Delivery::Failed {
        error,
        attempted: true,
    } = &delivery
    {
        tracing::warn!(id = notification.id, %error, "a notification was given up");
        dead_letter(ctx, &notification, error).await;
    }
    match ctx
        .store
        .record_delivery(notification.id, claimed, &delivery)
        .await
    {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            id = notification.id,
            "a notification's lease ran out before its delivery was recorded"
        ),
        // The lease runs out and the attempt is made again.
        Err(error) => {
            tracing::warn!(id = notification.id, %error, "recording a notification's delivery")
        }
    }
}

/// What one attempt at `n` comes to.
async fn attempt(ctx: &NodeContext, n: &Notification) -> Delivery {
    let (store, notifier, clock) = (&ctx.store, &ctx.notifier, &ctx.clock);
    let now = clock.now();
    let preferences = notifier.preferences.get(&n.user);
    if let Some(p) = preferences
        && let Some(until) = p.quiet_hours.and_then(|q| q.held_until(p.time_zone, now))
    {
        return Delivery::Held { until };
    }
    let origin = match origin(store, n).await {
        Ok(origin) => origin,
        Err(error) => return retry(notifier, n, error, now),
    };
    let origin = origin.as_ref().map(|(c, id)| (c.as_str(), id.as_str()));
    let destination = match notify::destination(&n.channel, &n.to, preferences, origin) {
        Ok(destination) => destination,
        Err(error) => {
            return Delivery::Failed {
                error,
                attempted: false,
            };
        }
    };
    // A reply into a conversation no provider here can carry goes the user's own way.
    let destination = match (
        notifier.providers.contains_key(&destination.channel),
        origin,
    ) {
        (false, Some(_)) => {
            notify::destination(&n.channel, &n.to, preferences, None).unwrap_or(destination)
        }
        _ => destination,
    };
    let Some(channel) = notifier.providers.get(&destination.channel) else {
        let error = format!(
            "no provider is configured for channel `{0}` ([notifier.{0}])",
            destination.channel
        );
        // A channel switchyard can send on may be configured on another node (or later).
        if PROVIDERS.contains(&destination.channel.as_str()) {
            let due_at = now + notifier.retry_max.as_millis() as u64;
            return Delivery::Deferred { error, due_at };
        }
        return Delivery::Failed {
            error,
            attempted: false,
        };
    };
    let outgoing = Outgoing {
        user: n.user.clone(),
        to: destination.to.clone(),
        subject: n.subject.clone(),
        text: n.text.clone(),
        dedupe_key: n.dedupe_key.clone(),
    };
    match channel.mailbox.send(&channel.provider, outgoing).await {
        // The provider is busy, not failing: not an attempt.
        Err(error @ CallError::QueueFull { .. }) => Delivery::Deferred {
            error: error.to_string(),
            due_at: clock.now() + notifier.retry_initial.as_millis() as u64,
        },
        Ok(provider_ref) => Delivery::Sent {
            destination: format!("{}:{}", destination.channel, destination.to),
            provider_ref,
            at: clock.now(),
        },
        Err(error) if error.is_transient() && n.attempts + 1 < notifier.max_attempts => {
            retry(notifier, n, error.to_string(), clock.now())
        }
        Err(error) => Delivery::Failed {
            error: format!("after {} attempts: {error}", n.attempts + 1),
            attempted: true,
        },
    }
}

fn retry(notifier: &Notifier, n: &Notification, error: String, now: u64) -> Delivery {
    let due_at = notify::retry_at(
        n.attempts + 1,
        now,
        notifier.retry_initial.as_millis() as u64,
        notifier.retry_max.as_millis() as u64,
    );
    Delivery::Retry { error, due_at }
}

/// The conversation (`channel`, `conversation`) a `default` notification's task came from.
async fn origin(store: &Store, n: &Notification) -> Result<Option<(String, String)>, String> {
    let Some(task_id) = n
        .task_id
        .as_deref()
        .filter(|_| n.channel == notify::DEFAULT_CHANNEL)
    else {
        return Ok(None);
    };
    let message = store
        .message_of_task(task_id)
        .await
        .map_err(|e| e.to_string())?;
    Ok(message.and_then(|m| {
        let (channel, conversation) = m.key.strip_prefix("conversation/")?.split_once('/')?;
        Some((channel.to_owned(), conversation.to_owned()))
    }))
}

/// Publishes given-up notification `n` on the events' dead-letter topic with `reason`, as the
/// `notification.requested` that would send it again.
async fn dead_letter(ctx: &NodeContext, n: &Notification, reason: &str) {
    let message = Message::NotificationRequested(NotificationRequested {
        channel: n.channel.clone(),
        to: n.to.clone(),
        subject: n.subject.clone(),
        text: n.text.clone(),
        dedupe_key: Some(n.dedupe_key.clone()),
    });
    let envelope = Envelope::new(
        format!("notification-{}", n.id),
        format!("node/{}/notifier", ctx.node_id),
        ctx.clock.now(),
        n.user.clone(),
        message,
    );
    let mut out: OutMessage = outbound::message(&envelope);
    out.headers.extend([
        ("dlq_reason".to_owned(), reason.to_owned()),
        ("dlq_attempts".to_owned(), (n.attempts + 1).to_string()),
        ("dlq_topic".to_owned(), "notifications".to_owned()),
    ]);
    if let Err(error) = ctx.bus.publish(&dlq_topic(EVENTS_TOPIC), out).await {
        tracing::warn!(id = n.id, %error, "dead-lettering a notification");
    }
}
