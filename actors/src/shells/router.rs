//! Finds (or activates) the mailbox for a routing key.

use std::time::Duration;

use ractor::ActorRef;
use supervisor::{ChildSpec, Restart, SupervisorError, SupervisorMsg};

use crate::shells::entity::{AgentMailbox, EntityActor, EntityArgs, Kind, MailboxMsg, TaskMailbox};
use crate::{NodeContext, names};

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no mailbox could be found for a key.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RouteError {
    /// No actor handles keys of this shape: final.
    #[error("no route for key `{0}`")]
    NoRoute(String),
    /// The mailbox's supervisor is unavailable or refused: retry later.
    #[error("mailbox unavailable: {0}")]
    Unavailable(String),
}

/// The mailbox for `key` (`task/<id>`, `agent/<id>` or `notify/<user>`), whose messages
/// arrive on `partition`.
pub(crate) async fn mailbox(
    ctx: &NodeContext,
    key: &str,
    partition: u32,
) -> Result<ActorRef<MailboxMsg>, RouteError> {
    let (kind, id) = key
        .split_once('/')
        .ok_or_else(|| RouteError::NoRoute(key.to_owned()))?;
    match kind {
        "task" => entity::<TaskMailbox>(ctx, names::TASKS, id, partition).await,
        "agent" => entity::<AgentMailbox>(ctx, names::AGENTS, id, partition).await,
        "notify" => ractor::registry::where_is(ctx.path(names::NOTIFIER))
            .map(ActorRef::from)
            .ok_or_else(|| RouteError::Unavailable("notifier is restarting".into())),
        _ => Err(RouteError::NoRoute(key.to_owned())),
    }
}

/// A child name that keeps tree paths unambiguous whatever the id contains.
fn child_name(id: &str) -> String {
    id.replace('%', "%25").replace('/', "%2F")
}

async fn entity<K: Kind>(
    ctx: &NodeContext,
    supervisor: &str,
    id: &str,
    partition: u32,
) -> Result<ActorRef<MailboxMsg>, RouteError> {
    let supervisor_path = ctx.path(supervisor);
    let name = child_name(id);
    let path = format!("{supervisor_path}/{name}");
    if let Some(cell) = ractor::registry::where_is(path.clone()) {
        return Ok(cell.into());
    }
    let Some(sup) = ractor::registry::where_is(supervisor_path) else {
        return Err(RouteError::Unavailable(format!(
            "{supervisor} is restarting"
        )));
    };
    let args = EntityArgs {
        ctx: ctx.clone(),
        id: id.to_owned(),
        partition,
    };
    let spec = ChildSpec::actor(
        name,
        Restart::Transient,
        EntityActor::<K>::default(),
        move || args.clone(),
    );
    match supervisor::start_child(&ActorRef::<SupervisorMsg>::from(sup), spec, START_TIMEOUT).await
    {
        Ok(cell) => Ok(cell.into()),
        Err(SupervisorError::Duplicate(_)) => ractor::registry::where_is(path)
            .map(ActorRef::from)
            .ok_or_else(|| RouteError::Unavailable("mailbox is stopping".into())),
        Err(e) => Err(RouteError::Unavailable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn child_names_escape_slashes() {
        assert_eq!(super::child_name("a/b%c"), "a%2Fb%25c");
    }
}
