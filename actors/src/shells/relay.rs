//! Carrying out effects: the messages one entity's change means for others (the dependency
//! cascade, requeues, assignment), published under ids derived from their cause, so that
//! publishing one again (after a crash, or from the orchestrator's sweep) changes nothing.

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
                    let task_id = task.task_id.clone();
                    let _ = ctx
                        .agent_signals
                        .send(crate::AgentSignal { agent_id, task_id });
                }
            }
            Effect::Cascade(_) => {
                if let Some(task) = task.cloned() {
                    let ctx = ctx.clone();
                    tokio::spawn(async move { cascade(&ctx, &task).await });
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

/// Tells every task that depends on the finished `upstream`; whatever fails here the
/// orchestrator's sweep finds later (the dependency still waits).
async fn cascade(ctx: &NodeContext, upstream: &Task) {
    let dependents = match ctx.store.dependents(&upstream.task_id).await {
        Ok(dependents) => dependents,
        Err(error) => return tracing::warn!(task = %upstream.task_id, %error, "cascade deferred"),
    };
    for (downstream, user, dependency) in dependents {
        if let Err(error) = tell_dependent(ctx, &downstream, &user, &dependency, upstream).await {
            tracing::warn!(task = %upstream.task_id, %downstream, %error, "cascade deferred");
        }
    }
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
