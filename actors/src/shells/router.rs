//! Hands a message to the mailbox of its routing key, starting the key's shard if need be.

use std::time::Duration;

use broker_adapters::Delivery;
use ractor::ActorRef;
use schemas::Envelope;
use supervisor::{ChildSpec, Restart, SupervisorError, SupervisorMsg};

use crate::domain::task::Task;
use crate::shells::automations::AutomationsMsg;
use crate::shells::calendar::CalendarMailbox;
use crate::shells::conversation::ConversationMailbox;
use crate::shells::costs::CostMailbox;
use crate::shells::entity::{AgentMailbox, Kind, TaskMailbox};
use crate::shells::notifier::Notify;
use crate::shells::shard::{ShardActor, ShardMsg, Waiting, shard_name};
use crate::{NodeContext, names};

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a drained shard may take to finish what it holds.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a message found no mailbox; it comes back inside the error, unsettled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RouteError {
    /// No actor handles keys of this shape: final.
    #[error("no route for key `{0}`")]
    NoRoute(String),
    /// The mailbox's shard is not running yet: the caller may start it and try again.
    #[error("no shard running for key `{0}`")]
    NotStarted(String),
    /// The mailbox's supervisor is unavailable or refused: retry later.
    #[error("mailbox unavailable: {0}")]
    Unavailable(String),
}

/// What a message is routed to.
#[derive(Clone, Copy)]
enum Route {
    Tasks,
    Agents,
    Conversations,
    Calendars,
    Costs,
    Notifier,
    Automations,
}

fn route_of(key: &str) -> Option<Route> {
    match key.split_once('/')?.0 {
        "task" => Some(Route::Tasks),
        "agent" => Some(Route::Agents),
        "conversation" => Some(Route::Conversations),
        "calendar" => Some(Route::Calendars),
        "costs" => Some(Route::Costs),
        "notify" => Some(Route::Notifier),
        "automation" => Some(Route::Automations),
        _ => None,
    }
}

/// A message that found no mailbox, with the reason.
type Undelivered = Box<(RouteError, Box<Envelope>, Delivery)>;

/// Hands `envelope` to its mailbox without waiting, if that mailbox's shard is running;
/// otherwise gives the message back with the reason.
pub(crate) fn try_deliver(
    ctx: &NodeContext,
    envelope: Box<Envelope>,
    delivery: Delivery,
) -> Result<(), Undelivered> {
    match route_of(&envelope.key) {
        None => Err(Box::new((
            RouteError::NoRoute(envelope.key.clone()),
            envelope,
            delivery,
        ))),
        Some(Route::Tasks) => to_shard::<TaskMailbox>(ctx, names::TASKS, envelope, delivery),
        Some(Route::Agents) => to_shard::<AgentMailbox>(ctx, names::AGENTS, envelope, delivery),
        Some(Route::Conversations) => {
            to_shard::<ConversationMailbox>(ctx, names::CONVERSATIONS, envelope, delivery)
        }
        Some(Route::Calendars) => {
            to_shard::<CalendarMailbox>(ctx, names::CALENDARS, envelope, delivery)
        }
        Some(Route::Costs) => to_shard::<CostMailbox>(ctx, names::COSTS, envelope, delivery),
        Some(Route::Automations) => {
            match ractor::registry::where_is(ctx.path(names::AUTOMATIONS)) {
                Some(cell) => {
                    let apply = AutomationsMsg::Apply(envelope, delivery);
                    let _ = ActorRef::<AutomationsMsg>::from(cell).send_message(apply);
                    Ok(())
                }
                None => Err(Box::new((
                    RouteError::Unavailable("automations is restarting".into()),
                    envelope,
                    delivery,
                ))),
            }
        }
        Some(Route::Notifier) => match ractor::registry::where_is(ctx.path(names::REQUESTS)) {
            // A send fails only if the actor stopped meanwhile; the message is then dropped,
            // which nacks the delivery (and so everywhere below).
            Some(cell) => {
                let _ = ActorRef::<Notify>::from(cell).send_message(Notify(envelope, delivery));
                Ok(())
            }
            None => Err(Box::new((
                RouteError::Unavailable("notifier is restarting".into()),
                envelope,
                delivery,
            ))),
        },
    }
}

fn to_shard<K: Kind>(
    ctx: &NodeContext,
    kind: &str,
    envelope: Box<Envelope>,
    delivery: Delivery,
) -> Result<(), Undelivered> {
    let path = shard_path(ctx, kind, delivery.record.partition);
    let Some(cell) = ractor::registry::where_is(path) else {
        return Err(Box::new((
            RouteError::NotStarted(envelope.key.clone()),
            envelope,
            delivery,
        )));
    };
    let _ = ActorRef::<ShardMsg<K::State>>::from(cell)
        .send_message(ShardMsg::Handle(envelope, Waiting::new(delivery)));
    Ok(())
}

/// Starts the shard of `envelope`'s mailbox (one started meanwhile is fine), then hands the
/// message to it: for a message `try_deliver` found no running shard for.
pub(crate) async fn start_and_deliver(
    ctx: &NodeContext,
    envelope: Box<Envelope>,
    delivery: Delivery,
) {
    let partition = delivery.record.partition;
    let started = match route_of(&envelope.key) {
        Some(Route::Agents) => start_shard::<AgentMailbox>(ctx, names::AGENTS, partition).await,
        Some(Route::Conversations) => {
            start_shard::<ConversationMailbox>(ctx, names::CONVERSATIONS, partition).await
        }
        Some(Route::Calendars) => {
            start_shard::<CalendarMailbox>(ctx, names::CALENDARS, partition).await
        }
        Some(Route::Costs) => start_shard::<CostMailbox>(ctx, names::COSTS, partition).await,
        _ => start_shard::<TaskMailbox>(ctx, names::TASKS, partition).await,
    };
    if let Err(error) = started {
        return settle_unroutable(error, delivery);
    }
    if let Err(undelivered) = try_deliver(ctx, envelope, delivery) {
        let (error, _, delivery) = *undelivered;
        settle_unroutable(error, delivery);
    }
}

/// Settles a delivery that found no mailbox: dead-lettered if none can exist, else delivered
/// again without counting an attempt, since a mailbox restarting is no fault of the message
/// (counted, a burst of messages for a shard waiting out its restart delay used up their
/// attempts together and was dead-lettered).
pub(crate) fn settle_unroutable(error: RouteError, delivery: Delivery) {
    match error {
        RouteError::NoRoute(_) => delivery.dead_letter(error.to_string()),
        RouteError::NotStarted(_) | RouteError::Unavailable(_) => delivery.retry(error.to_string()),
    }
}

/// The tree path (and registered name) of the shard of `partition` under the supervisor `kind`.
pub(crate) fn shard_path(ctx: &NodeContext, kind: &str, partition: u32) -> String {
    format!("{}/{}", ctx.path(kind), shard_name(partition))
}

/// Starts the shard of `partition` under the supervisor `kind` (a shard that started
/// meanwhile is fine).
async fn start_shard<K: Kind>(
    ctx: &NodeContext,
    kind: &str,
    partition: u32,
) -> Result<(), RouteError> {
    let Some(sup) = ractor::registry::where_is(ctx.path(kind)) else {
        return Err(RouteError::Unavailable(format!("{kind} is restarting")));
    };
    let args = ctx.clone();
    let spec = ChildSpec::actor(
        shard_name(partition),
        Restart::Transient,
        ShardActor::<K>::default(),
        move || args.clone(),
    );
    match supervisor::start_child(&ActorRef::<SupervisorMsg>::from(sup), spec, START_TIMEOUT).await
    {
        Ok(_) | Err(SupervisorError::Duplicate(_)) => Ok(()),
        Err(e) => Err(RouteError::Unavailable(e.to_string())),
    }
}

/// How long a read waits for a live mailbox's state before it reads the store instead.
const PEEK_TIMEOUT: Duration = Duration::from_millis(500);

/// The state of task `task_id` as its live mailbox on this node holds it, if it has one there
/// and is not applying a message right now. Looked for in the shard of the partition the
/// events topic's partitioner gives its key; a bus that partitions otherwise finds none.
pub(crate) async fn live_task(ctx: &NodeContext, task_id: &str) -> Option<Task> {
    let key = format!("task/{task_id}");
    let partition = broker_adapters::partition_for(&key, ctx.partitions);
    if !ctx.ownership.owns(partition) {
        return None;
    }
    let cell = ractor::registry::where_is(shard_path(ctx, names::TASKS, partition))?;
    let shard = ActorRef::<ShardMsg<Task>>::from(cell);
    let peek = |reply| ShardMsg::Peek(task_id.to_owned(), reply);
    match shard.call(peek, Some(PEEK_TIMEOUT)).await {
        Ok(ractor::rpc::CallResult::Success(live)) => live,
        _ => None,
    }
}

/// Lets the mailboxes of `partition` finish what they hold, then stops them.
pub(crate) async fn drain(ctx: &NodeContext, partition: u32) {
    drain_shard::<TaskMailbox>(ctx, names::TASKS, partition).await;
    drain_shard::<AgentMailbox>(ctx, names::AGENTS, partition).await;
    drain_shard::<ConversationMailbox>(ctx, names::CONVERSATIONS, partition).await;
    drain_shard::<CalendarMailbox>(ctx, names::CALENDARS, partition).await;
    drain_shard::<CostMailbox>(ctx, names::COSTS, partition).await;
}

async fn drain_shard<K: Kind>(ctx: &NodeContext, kind: &str, partition: u32) {
    let Some(cell) = ractor::registry::where_is(shard_path(ctx, kind, partition)) else {
        return;
    };
    let shard = ActorRef::<ShardMsg<K::State>>::from(cell);
    if let Err(error) = shard.call(ShardMsg::Drain, Some(DRAIN_TIMEOUT)).await {
        // Stopped anyway, so no state of it outlives the ownership: what it still applies
        // settles on its own, and what waited in it is nacked.
        tracing::warn!(%kind, partition, %error, "a shard did not drain in time; stopping it");
        shard.stop(None);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use broker_adapters::{Outcome, Record, Settle};

    use super::*;

    struct Told(Arc<Mutex<Option<Outcome>>>);

    impl Settle for Told {
        fn settle(self: Box<Self>, outcome: Outcome) {
            *self.0.lock().unwrap() = Some(outcome);
        }
    }

    fn settled(error: RouteError) -> Option<Outcome> {
        let told = Arc::new(Mutex::new(None));
        let record = Record {
            topic: "t".into(),
            partition: 0,
            offset: Some(0),
            key: "task/a".into(),
            payload: Vec::new(),
            headers: Vec::new(),
            timestamp: 0,
        };
        settle_unroutable(
            error,
            Delivery::new(record, 1, Box::new(Told(told.clone()))),
        );
        told.lock().unwrap().take()
    }

    #[test]
    fn a_restarting_mailbox_costs_the_message_no_attempt_and_a_missing_route_dead_letters() {
        for waiting in [
            RouteError::NotStarted("task/a".into()),
            RouteError::Unavailable("tasks is restarting".into()),
        ] {
            assert!(
                matches!(settled(waiting), Some(Outcome::Retry(_))),
                "delivered again, not counted"
            );
        }
        assert!(matches!(
            settled(RouteError::NoRoute("nobody/a".into())),
            Some(Outcome::DeadLetter(_))
        ));
    }
}
