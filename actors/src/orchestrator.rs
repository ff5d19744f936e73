//! The orchestrator: finds pending tasks an agent can take and publishes `task.assigned`.
//!
//! Leadership: every node runs one, but only the node that owns partition 0 of the events topic
//! assigns, so agents' capacity is counted in one place across the cluster.
//! Supervision: a permanent child of the node. Its only state is the assignments it published
//! that the tasks have not applied yet; a restart loses them, and the start-up pass finds the
//! still-pending tasks again (a second `task.assigned` for one task is refused by the task).
//! Ordering: assignment requests are coalesced into one pass every few milliseconds.
//! Shutdown: nothing to flush; publishes are durable when they return.

use std::collections::HashMap;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use schemas::{Envelope, Message, TaskAssigned};

use crate::NodeContext;
use crate::domain::assign;
use crate::store::now_ms;

/// Pending tasks looked at per pass.
const PASS_LIMIT: u64 = 500;
/// Requests arriving within this window share one pass.
const COALESCE: Duration = Duration::from_millis(5);

/// The partition whose owner assigns for the whole cluster.
pub(crate) const LEADER_PARTITION: u32 = 0;

/// Asks the node's orchestrator for a pass; if it is restarting, its start-up pass runs anyway.
pub(crate) fn poke(ctx: &NodeContext) {
    if let Some(cell) = ractor::registry::where_is(ctx.path(crate::names::ORCHESTRATOR)) {
        let _ = ActorRef::<OrchestratorMsg>::from(cell).send_message(OrchestratorMsg::Assign);
    }
}

/// Messages of the orchestrator.
pub enum OrchestratorMsg {
    /// Something changed that may allow an assignment.
    Assign,
    /// Run the assignment pass now (sent to itself).
    Run,
}

/// The orchestrator actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrchestratorActor;

#[doc(hidden)]
pub struct OrchestratorState {
    ctx: NodeContext,
    /// task id → agent id of published assignments not yet applied.
    reserved: HashMap<String, String>,
    scheduled: bool,
}

impl Actor for OrchestratorActor {
    type Msg = OrchestratorMsg;
    type State = OrchestratorState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<OrchestratorMsg>,
        ctx: NodeContext,
    ) -> Result<OrchestratorState, ActorProcessingErr> {
        myself.send_message(OrchestratorMsg::Assign)?;
        myself.send_interval(ctx.assign_interval, || OrchestratorMsg::Assign);
        Ok(OrchestratorState {
            ctx,
            reserved: HashMap::new(),
            scheduled: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<OrchestratorMsg>,
        message: OrchestratorMsg,
        state: &mut OrchestratorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            OrchestratorMsg::Assign => {
                if !state.scheduled {
                    state.scheduled = true;
                    myself.send_after(COALESCE, || OrchestratorMsg::Run);
                }
            }
            OrchestratorMsg::Run => {
                state.scheduled = false;
                if let Err(error) = pass(state).await {
                    // The next request or the periodic pass tries again.
                    tracing::warn!(%error, "assignment pass failed");
                }
            }
        }
        Ok(())
    }
}

async fn pass(
    state: &mut OrchestratorState,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if !state.ctx.ownership.owns(LEADER_PARTITION) {
        // Another node leads; what this one reserved is that node's to find again.
        state.reserved.clear();
        return Ok(());
    }
    let store = &state.ctx.store;
    let mut candidates = store.candidates().await?;
    if candidates.iter().all(|c| c.load >= c.max_concurrent) {
        // Nobody has room (counting only applied assignments): skip the pending-task scan.
        return Ok(());
    }
    let pending = store.pending_tasks(PASS_LIMIT).await?;
    state
        .reserved
        .retain(|task, _| pending.iter().any(|p| &p.task_id == task));
    for agent in state.reserved.values() {
        if let Some(c) = candidates.iter_mut().find(|c| &c.agent_id == agent) {
            c.load += 1;
        }
    }
    let open: Vec<_> = pending
        .into_iter()
        .filter(|p| !state.reserved.contains_key(&p.task_id))
        .collect();
    for (task_id, agent_id) in assign::first_fit(&open, &mut candidates) {
        let user = open
            .iter()
            .find(|p| p.task_id == task_id)
            .map(|p| p.user.clone())
            .unwrap_or_default();
        let envelope = Envelope::new(
            crate::new_message_id(),
            format!("node/{}/orchestrator", state.ctx.node_id),
            now_ms(),
            user,
            Message::TaskAssigned(TaskAssigned {
                task_id: task_id.clone(),
                agent_id: agent_id.clone(),
            }),
        );
        crate::publish(state.ctx.bus.as_ref(), &envelope).await?;
        tracing::info!(task = %task_id, agent = %agent_id, "assigned");
        state.reserved.insert(task_id, agent_id);
    }
    Ok(())
}
