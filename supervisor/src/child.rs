//! How to start one child, and when to restart it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ractor::{Actor, ActorCell, SpawnErr};

/// When a stopped child is started again (OTP's restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always restarted.
    Permanent,
    /// Restarted only when it failed (panicked or returned an error).
    Transient,
    /// Never restarted.
    Temporary,
}

impl Restart {
    /// Whether a child with this policy is restarted after stopping, failed or not.
    pub fn applies(self, failed: bool) -> bool {
        match self {
            Restart::Permanent => true,
            Restart::Transient => failed,
            Restart::Temporary => false,
        }
    }
}

/// The future a child's start function returns: the spawned actor, linked to the supervisor.
pub type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

type StartFn = dyn Fn(String, ActorCell) -> StartFuture + Send + Sync;

/// One child of a supervisor: its name, its restart policy and how to start it.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique among its siblings; the actor is registered as `<supervisor path>/<name>`.
    pub name: String,
    /// When the child is restarted.
    pub restart: Restart,
    start: Arc<StartFn>,
}

impl ChildSpec {
    /// A child started by `start(registered_name, supervisor)`, which must link it to the supervisor.
    pub fn new(
        name: impl Into<String>,
        restart: Restart,
        start: impl Fn(String, ActorCell) -> StartFuture + Send + Sync + 'static,
    ) -> Self {
        ChildSpec {
            name: name.into(),
            restart,
            start: Arc::new(start),
        }
    }

    /// A child that is `actor` spawned with arguments made fresh by `args` at every (re)start.
    pub fn actor<A, F>(name: impl Into<String>, restart: Restart, actor: A, args: F) -> Self
    where
        A: Actor + Clone,
        F: Fn() -> A::Arguments + Send + Sync + 'static,
    {
        ChildSpec::new(name, restart, move |registered, supervisor| {
            let actor = actor.clone();
            let args = args();
            Box::pin(async move {
                let (child, _) = supervisor
                    .spawn_linked(Some(registered), actor, args)
                    .await?;
                Ok(child.get_cell())
            })
        })
    }

    pub(crate) fn start(&self, registered: String, supervisor: ActorCell) -> StartFuture {
        (self.start)(registered, supervisor)
    }
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .finish_non_exhaustive()
    }
}
