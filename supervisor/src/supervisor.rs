//! The supervising actor: starts children, watches them, restarts them by strategy.
//!
//! Supervision: a child's exit arrives as a ractor `SupervisionEvent`; the decision (restart
//! whom, after how long, or escalate) is taken in `on_exit`, and restarts are delivered back to
//! the mailbox as `SupervisorMsg::Restart` after the backoff, so the supervisor stays responsive.
//! Escalation returns `Err` from the event handler, which ractor reports to our own parent as a
//! failure and which kills our children with us.
//! Ordering: children start in spec order and restart in spec order.
//! Shutdown: stopping a supervisor stops its children (ractor terminates the linked subtree).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use indexmap::IndexMap;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};

use crate::child::ChildSpec;
use crate::policy::{Intensity, SupervisorConfig};
use crate::tree::{ActorStatus, Tree};

/// Errors a supervisor answers through its reply ports.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A sibling already has that name.
    #[error("a child named `{0}` already exists")]
    Duplicate(String),
    /// No child has that name.
    #[error("no child named `{0}`")]
    NotFound(String),
    /// The child's start function failed.
    #[error("child `{name}` failed to start: {reason}")]
    Start {
        /// The child.
        name: String,
        /// Why it did not start.
        reason: String,
    },
    /// The supervisor did not answer.
    #[error("supervisor unavailable: {0}")]
    Unavailable(String),
}

/// The supervising actor; it holds no state of its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct SupervisorActor;

/// What a supervisor is started with.
#[derive(Debug, Clone)]
pub struct SupervisorArgs {
    /// This supervisor's own path in the tree; children are registered under it.
    pub path: String,
    /// The shared tree view to keep up to date.
    pub tree: Tree,
    /// Strategy, intensity and backoff.
    pub config: SupervisorConfig,
    /// Static children, started in order.
    pub children: Vec<ChildSpec>,
}

/// Messages a supervisor accepts.
pub enum SupervisorMsg {
    /// Adds and starts a dynamic child.
    StartChild(ChildSpec, RpcReplyPort<Result<ActorCell, SupervisorError>>),
    /// Stops a child and forgets it.
    TerminateChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    /// Starts the named children again once their backoff has passed (sent to itself).
    Restart(Vec<String>),
}

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    dynamic: bool,
}

#[doc(hidden)]
pub struct SupervisorState {
    path: String,
    tree: Tree,
    config: SupervisorConfig,
    /// By name, in start order; a supervisor of many dynamic children finds each at once.
    children: IndexMap<String, Child>,
    /// The name of each running child, by actor id, for its exit event.
    names: HashMap<ActorId, String>,
    intensity: Intensity,
}

impl SupervisorState {
    fn child_path(&self, name: &str) -> String {
        format!("{}/{}", self.path, name)
    }

    fn child(&mut self, index: usize) -> &mut Child {
        &mut self.children[index]
    }

    /// Forgets child `index`. One-for-one restarts need no order among children, so the
    /// last takes its place (constant time with many dynamic children); the other strategies
    /// keep start order.
    fn forget(&mut self, index: usize) -> Option<Child> {
        let (name, child) = if self.config.strategy == crate::Strategy::OneForOne {
            self.children.swap_remove_index(index)?
        } else {
            self.children.shift_remove_index(index)?
        };
        if let Some(cell) = &child.cell {
            self.names.remove(&cell.get_id());
        }
        self.tree.remove(&self.child_path(&name));
        Some(child)
    }

    /// Clears child `index`'s cell: exit events of the old one are then recognised as stale.
    fn clear(&mut self, index: usize) -> Option<ActorCell> {
        let cell = self.child(index).cell.take()?;
        self.names.remove(&cell.get_id());
        Some(cell)
    }

    async fn start(
        &mut self,
        index: usize,
        myself: &ActorCell,
    ) -> Result<ActorCell, SupervisorError> {
        let path = self.child_path(&self.children[index].spec.name);
        self.tree.set_status(&path, ActorStatus::Starting);
        match self.children[index]
            .spec
            .start(path.clone(), myself.clone())
            .await
        {
            Ok(cell) => {
                self.tree.set_status(&path, ActorStatus::Running);
                let name = self.child(index).spec.name.clone();
                self.names.insert(cell.get_id(), name);
                self.child(index).cell = Some(cell.clone());
                Ok(cell)
            }
            Err(error) => {
                self.tree.set_status(&path, ActorStatus::Failed);
                // The child's own reason, not ractor's wrapping of it.
                let reason = match error {
                    ractor::SpawnErr::StartupFailed(inner) => inner.to_string(),
                    other => other.to_string(),
                };
                Err(SupervisorError::Start {
                    name: self.children[index].spec.name.clone(),
                    reason,
                })
            }
        }
    }

    /// Handles the exit of child `index`; `Err` means the restart intensity was exceeded.
    async fn on_exit(
        &mut self,
        index: usize,
        failed: bool,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let name = self.children[index].spec.name.clone();
        let path = self.child_path(&name);
        self.clear(index);
        if !self.children[index].spec.restart.applies(failed) {
            if self.children[index].dynamic {
                self.forget(index);
            } else {
                let status = if failed {
                    ActorStatus::Failed
                } else {
                    ActorStatus::Stopped
                };
                self.tree.set_status(&path, status);
            }
            return Ok(());
        }
        let attempt = self.intensity.record(Instant::now(), self.config.within);
        if attempt > self.config.max_restarts {
            self.tree.set_status(&path, ActorStatus::Failed);
            return Err(format!(
                "{}: more than {} restarts within {:?} (last: `{name}`)",
                self.path, self.config.max_restarts, self.config.within
            )
            .into());
        }
        let affected = self.config.strategy.affected(index, self.children.len());
        let mut names = Vec::new();
        for sibling in affected.rev() {
            if let Some(cell) = self.clear(sibling) {
                // Cleared first, so the exit event this stop causes is recognised as stale.
                let _ = cell
                    .stop_and_wait(Some("sibling restart".into()), Some(Duration::from_secs(5)))
                    .await;
            }
            let sibling_path = self.child_path(&self.children[sibling].spec.name);
            if sibling != index && self.children[sibling].spec.restart == crate::Restart::Temporary
            {
                self.forget(sibling);
                continue;
            }
            self.tree.set_status(&sibling_path, ActorStatus::Restarting);
            names.push(self.children[sibling].spec.name.clone());
        }
        names.reverse();
        let delay = self.config.backoff.delay(attempt, jitter());
        tracing::warn!(supervisor = %self.path, child = %name, failed, ?delay, restarting = ?names, "child stopped");
        myself.send_after(delay, move || SupervisorMsg::Restart(names));
        Ok(())
    }
}

/// A uniform number in [0.5, 1.0] for backoff jitter.
fn jitter() -> f64 {
    let mut bytes = [0u8; 2];
    // Without entropy we simply skip the jitter.
    if getrandom::fill(&mut bytes).is_err() {
        return 1.0;
    }
    0.5 + f64::from(u16::from_le_bytes(bytes)) / f64::from(u16::MAX) / 2.0
}

impl Actor for SupervisorActor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            path: args.path,
            tree: args.tree,
            config: args.config,
            children: args
                .children
                .into_iter()
                .map(|spec| {
                    let child = Child {
                        spec,
                        cell: None,
                        dynamic: false,
                    };
                    (child.spec.name.clone(), child)
                })
                .collect(),
            names: HashMap::new(),
            intensity: Intensity::default(),
        };
        // A (re)started supervisor has fresh children: their history went with the old ones.
        state.tree.remove_descendants(&state.path);
        for index in 0..state.children.len() {
            state.start(index, &myself.get_cell()).await?;
        }
        Ok(state)
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.tree.set_status(&state.path, ActorStatus::Running);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for child in state.children.values() {
            state
                .tree
                .set_status(&state.child_path(&child.spec.name), ActorStatus::Stopped);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::StartChild(spec, reply) => {
                let answer = if state.children.contains_key(&spec.name) {
                    Err(SupervisorError::Duplicate(spec.name))
                } else {
                    let child = Child {
                        spec,
                        cell: None,
                        dynamic: true,
                    };
                    let (index, _) = state.children.insert_full(child.spec.name.clone(), child);
                    let started = state.start(index, &myself.get_cell()).await;
                    if started.is_err() {
                        state.forget(index);
                    }
                    started
                };
                if reply.send(answer).is_err() {
                    tracing::debug!(supervisor = %state.path, "start_child caller went away");
                }
            }
            SupervisorMsg::TerminateChild(name, reply) => {
                let answer = match state.children.get_index_of(&name) {
                    None => Err(SupervisorError::NotFound(name)),
                    Some(index) => {
                        let cell = state.clear(index);
                        state.forget(index);
                        if let Some(cell) = cell {
                            let _ = cell.stop_and_wait(None, Some(Duration::from_secs(5))).await;
                        }
                        Ok(())
                    }
                };
                if reply.send(answer).is_err() {
                    tracing::debug!(supervisor = %state.path, "terminate_child caller went away");
                }
            }
            SupervisorMsg::Restart(names) => {
                for name in names {
                    let Some(index) = state.children.get_index_of(&name) else {
                        continue;
                    };
                    if state.children[index].cell.is_some() {
                        continue;
                    }
                    state.tree.count_restart(&state.child_path(&name));
                    if let Err(error) = state.start(index, &myself.get_cell()).await {
                        tracing::warn!(supervisor = %state.path, %error, "restart failed");
                        state.on_exit(index, true, &myself).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failed) = match &event {
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::error!(supervisor = %state.path, child = ?cell.get_name(), %error, "child failed");
                (cell, true)
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                tracing::info!(supervisor = %state.path, child = ?cell.get_name(), ?reason, "child stopped");
                (cell, false)
            }
            _ => return Ok(()),
        };
        let Some(index) = state
            .names
            .get(&cell.get_id())
            .and_then(|name| state.children.get_index_of(name))
        else {
            return Ok(());
        };
        state.on_exit(index, failed, &myself).await
    }
}

/// Asks `supervisor` to start a dynamic child, waiting at most `timeout`.
pub async fn start_child(
    supervisor: &ActorRef<SupervisorMsg>,
    spec: ChildSpec,
    timeout: Duration,
) -> Result<ActorCell, SupervisorError> {
    ractor::call_t!(
        supervisor,
        SupervisorMsg::StartChild,
        timeout.as_millis() as u64,
        spec
    )
    .map_err(|e| SupervisorError::Unavailable(e.to_string()))?
}

/// Asks `supervisor` to stop and forget the child `name`, waiting at most `timeout`.
pub async fn terminate_child(
    supervisor: &ActorRef<SupervisorMsg>,
    name: &str,
    timeout: Duration,
) -> Result<(), SupervisorError> {
    ractor::call_t!(
        supervisor,
        SupervisorMsg::TerminateChild,
        timeout.as_millis() as u64,
        name.to_owned()
    )
    .map_err(|e| SupervisorError::Unavailable(e.to_string()))?
}
