//! Carrying out effects: the messages one entity's change means for others (the dependency
//! cascade, requeues, assignment), published under ids derived from their cause, so that
//! publishing one again (after a crash, or from the orchestrator's sweep) changes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use schemas::{Envelope, Message};

use crate::NodeContext;
use crate::domain::task::{self, Task};
use crate::domain::{Dependency, Effect};
use crate::edge;
use crate::store::now_ms;

/// A message id derived from `kind` and the parts naming its cause.
pub(crate) fn derived_id(kind: &str, parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    format!("{kind}-{}", &hex::encode(hash.finalize())[..32])
}

/// Publishes `message` for `user` under `id`, from this node's orchestrator.
pub(crate) async fn publish(
    ctx: &NodeContext,
    id: String,
    user: &str,
    message: Message,
) -> Result<(), String> {
    let envelope = Envelope::new(
        id,
        format!("node/{}/orchestrator", ctx.node_id),
        now_ms(),
        user.to_owned(),
        message,
    );
    crate::publish(ctx.bus.as_ref(), &envelope)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Tells `downstream` (a task of `user`) how `upstream` finished, once per upstream
/// generation. Another user's task of that id is none of its business: to `downstream` it does
/// not exist, so its dependency waits on.
pub(crate) async fn tell_dependent(
    ctx: &NodeContext,
    downstream: &str,
    user: &str,
    dependency: &Dependency,
    upstream: &Task,
) -> Result<(), String> {
    let Some(finished) = upstream.finished().filter(|_| upstream.user == user) else {
        return Ok(());
    };
    let command = task::resolution(dependency, &upstream.task_id, &finished);
    let id = derived_id(
        "after",
        &[
            &upstream.task_id,
            &upstream.generation.to_string(),
            upstream.state.as_str(),
            downstream,
        ],
    );
    publish(ctx, id, user, edge::task_message(downstream, &command)).await
}

/// Carries out `effects` of a change to `task` (`None` for other entities) in the background.
pub(crate) fn carry_out(ctx: &NodeContext, task: Option<&Task>, effects: Vec<Effect>) {
    for effect in effects {
        match effect {
            Effect::Assign | Effect::RequeueTasksOf(_) => crate::shells::orchestrator::poke(ctx),
            Effect::NotifyAgent(agent_id) => {
                // Nobody listening is fine: a worker link also polls.
                if let Some(task) = task {
                    ctx.agent_signals.tell(&agent_id, task);
                }
            }
            Effect::Cascade(_) => {
                if let Some(task) = task.cloned()
                    && ctx.cascades.push(task)
                {
                    let ctx = ctx.clone();
                    tokio::spawn(async move { drain_cascades(&ctx).await });
                }
            }
            Effect::CheckUpstreams => {
                if let Some(task) = task.cloned() {
                    let ctx = ctx.clone();
                    tokio::spawn(async move { check_upstreams(&ctx, &task).await });
                }
            }
        }
    }
}

/// Finished tasks whose dependents are still to be told, shared by the node's mailboxes: one
/// drain at a time tells them, and whatever finishes meanwhile waits for its next read, so
/// under load one read of the dependents serves many finished tasks.
#[derive(Clone, Default)]
pub struct Cascades(Arc<Mutex<CascadeQueue>>);

#[derive(Default)]
struct CascadeQueue {
    waiting: Vec<Task>,
    draining: bool,
}

impl Cascades {
    fn queue(&self) -> std::sync::MutexGuard<'_, CascadeQueue> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues finished `task`; true when no drain is running, so the caller starts one.
    fn push(&self, task: Task) -> bool {
        let mut queue = self.queue();
        queue.waiting.push(task);
        !std::mem::replace(&mut queue.draining, true)
    }

    /// The tasks queued so far, or `None` (the drain ends) when there are none.
    fn take(&self) -> Option<Vec<Task>> {
        let mut queue = self.queue();
        if queue.waiting.is_empty() {
            queue.draining = false;
            return None;
        }
        Some(std::mem::take(&mut queue.waiting))
    }
}

/// Tells the dependents of the queued finished tasks, a batch at a time, until none is left.
async fn drain_cascades(ctx: &NodeContext) {
    use futures::FutureExt;
    while let Some(finished) = ctx.cascades.take() {
        // A batch that panics must not end the drain: `draining` would stay set, and no
        // cascade on this node would be told but by the sweep.
        let told = std::panic::AssertUnwindSafe(cascade(ctx, &finished));
        if told.catch_unwind().await.is_err() {
            tracing::error!(
                tasks = finished.len(),
                "a batch of cascades panicked; the sweep tells them"
            );
        }
    }
}

/// Tells every task that depends on one of the `finished` upstreams; whatever fails here the
/// orchestrator's sweep finds later (the dependency still waits).
async fn cascade(ctx: &NodeContext, finished: &[Task]) {
    let ids: Vec<String> = finished.iter().map(|t| t.task_id.clone()).collect();
    let dependents = match ctx.store.dependents(&ids).await {
        Ok(dependents) => dependents,
        Err(error) => return tracing::warn!(tasks = ids.len(), %error, "cascades deferred"),
    };
    let mut by_upstream: HashMap<&str, Vec<(&String, &String, &Dependency)>> = HashMap::new();
    for (downstream, user, dependency) in &dependents {
        let entry = by_upstream.entry(dependency.upstream.as_str()).or_default();
        entry.push((downstream, user, dependency));
    }
    // Each finish is told, a task that finished twice in the batch (two generations) too.
    let told = finished.iter().flat_map(|upstream| {
        let waiting = by_upstream.get(upstream.task_id.as_str());
        waiting
            .into_iter()
            .flatten()
            .map(move |&(downstream, user, dependency)| async move {
                if let Err(error) = tell_dependent(ctx, downstream, user, dependency, upstream).await
                {
                    tracing::warn!(task = %upstream.task_id, %downstream, %error, "cascade deferred");
                }
            })
    });
    // Published together: the bus commits them as one batch.
    futures::future::join_all(told).await;
}

/// Tells `task` about the upstream tasks that finished before it depended on them.
async fn check_upstreams(ctx: &NodeContext, task: &Task) {
    for dependency in &task.dependencies {
        // How it finished is on the task's own row; its dependencies are not needed.
        match ctx.store.task_summary(&dependency.upstream).await {
            Ok(Some(upstream)) => {
                if let Err(error) =
                    tell_dependent(ctx, &task.task_id, &task.user, dependency, &upstream).await
                {
                    tracing::warn!(task = %task.task_id, %error, "upstream check deferred");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(task = %task.task_id, %error, "upstream check deferred"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::task::{Command, NewTask, step};

    fn finished(id: &str) -> Task {
        let new = NewTask {
            task_id: id.into(),
            title: id.into(),
            spec: "true".into(),
            priority: Default::default(),
            requirements: Default::default(),
            dependencies: Vec::new(),
            contracts: Vec::new(),
            require_plan_approval: false,
            preferred_agent: None,
            max_attempts: None,
        };
        step(None, "u1", &Command::Create(new), 0).unwrap().task
    }

    fn ids(tasks: Option<Vec<Task>>) -> Option<Vec<String>> {
        tasks.map(|t| t.into_iter().map(|t| t.task_id).collect())
    }

    #[test]
    fn what_finishes_during_a_drain_waits_for_its_next_batch() {
        let cascades = Cascades::default();
        assert!(
            cascades.push(finished("a")),
            "the first finish starts a drain"
        );
        assert!(!cascades.push(finished("b")), "a drain is running");
        assert_eq!(ids(cascades.take()), Some(vec!["a".into(), "b".into()]));
        assert!(!cascades.push(finished("c")), "the drain still runs");
        assert_eq!(ids(cascades.take()), Some(vec!["c".into()]));
        assert_eq!(ids(cascades.take()), None, "nothing left: the drain ends");
        assert!(
            cascades.push(finished("d")),
            "the next finish starts a new drain"
        );
    }
}
