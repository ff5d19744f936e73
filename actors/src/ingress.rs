//! The ingress: consumes the events topic, decodes each message and hands it to its mailbox.
//!
//! Supervision: a permanent child of the node; any bus error fails it and its supervisor
//! restarts it, re-joining the consumer group from the committed offsets.
//! Ordering: the bus gives one message per partition at a time; the mailbox settles it.
//! Shutdown: the loop runs one poll per message to itself, so a stop lands between messages;
//! closing the subscription commits what was acked, and anything unacked is redelivered.

use std::time::Duration;

use broker_adapters::{Delivery, SubscribeOptions, Subscription};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use schemas::Envelope;

use crate::NodeContext;
use crate::entity::MailboxMsg;
use crate::router::{self, RouteError};

/// The consumer group every node's ingress joins.
pub const INGRESS_GROUP: &str = "switchyard-node";

/// Redeliveries before a message is dead-lettered: with the bus's doubling backoff, about 16 s
/// of trying, so a restarting mailbox or a database blip does not dead-letter good messages.
const MAX_ATTEMPTS: u32 = 10;

/// How long one poll waits before yielding to the mailbox.
const POLL: Duration = Duration::from_millis(250);

/// The ingress actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngressActor;

/// Hands `envelope` to its mailbox, which settles `delivery`; settles it here if there is none.
async fn route(ctx: NodeContext, envelope: Envelope, delivery: Delivery) {
    match router::mailbox(&ctx, &envelope.key).await {
        Ok(mailbox) => {
            // On failure the message comes back inside the error and is dropped, which nacks
            // the delivery.
            let _ = mailbox.send_message(MailboxMsg::Handle(Box::new(envelope), delivery));
        }
        Err(RouteError::NoRoute(key)) => delivery.dead_letter(format!("no route for key `{key}`")),
        Err(error @ RouteError::Unavailable(_)) => delivery.nack(error.to_string()),
    }
}

/// Polls for the next message (sent to itself).
pub struct Poll;

#[doc(hidden)]
pub struct IngressState {
    ctx: NodeContext,
    subscription: Option<Box<dyn Subscription>>,
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
        let subscription = ctx
            .bus
            .subscribe(
                schemas::EVENTS_TOPIC,
                INGRESS_GROUP,
                SubscribeOptions {
                    max_attempts: MAX_ATTEMPTS,
                    ..SubscribeOptions::default()
                },
            )
            .await?;
        myself.send_message(Poll)?;
        Ok(IngressState {
            ctx,
            subscription: Some(subscription),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Poll>,
        state: &mut IngressState,
    ) -> Result<(), ActorProcessingErr> {
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
        let Some(subscription) = state.subscription.as_mut() else {
            return Ok(());
        };
        if let Ok(delivery) = tokio::time::timeout(POLL, subscription.next()).await {
            let delivery = delivery?;
            match schemas::decode(&delivery.record.payload) {
                Err(error) => {
                    tracing::warn!(offset = delivery.record.offset, %error, "undecodable message");
                    delivery.dead_letter(error.to_string());
                }
                Ok(envelope) => {
                    // Routing may have to start a mailbox; other partitions need not wait for
                    // that. Per-key order holds: the bus hands out a partition's next message
                    // only once this one is settled. So at most one task per partition runs.
                    tokio::spawn(route(state.ctx.clone(), envelope, delivery));
                }
            }
        }
        myself.send_message(Poll)?;
        Ok(())
    }
}
