//! The orchestrator: gives pending tasks to the best agents with room (scored assignment of
//! `domain::assign`), and sweeps for what a crash or a silent agent left undone.
//!
//! Leadership: every node runs one, but only the node that owns partition 0 of the events topic
//! acts, so agents' capacity is counted in one place across the cluster.
//! Supervision: `scheduler`, a permanent child of the `orchestrator` supervisor. Its decisions are recorded in the store before
//! they are published, under ids derived from task and generation, so a restarted orchestrator
//! finds its unapplied decisions again, counts them against capacity and republishes them
//! without deciding twice; so does the pass after a failed one. A sweep publishes again the
//! unapplied decisions it holds.
//! Ordering: a request for a pass runs one at once when none is scheduled; the requests that
//! arrive while a pass runs share the next one, so under load passes run back to back and
//! never queue up. Requests share one message too (`AssignRequest`): at most one waits in
//! the mailbox however many changes ask. The sweep (silent agents, orphaned work, unheard
//! cascades) runs at start and then `assign_interval` after the last one ended.
//! Shutdown: nothing to flush; publishes are durable when they return.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use schemas::{AgentOffline, Message};

use crate::NodeContext;
use crate::domain::{agent, assign, task};
use crate::edge;
use crate::shells::relay::{self, derived_id};
use crate::store::now_ms;

/// Pending tasks looked at per pass.
const PASS_LIMIT: u64 = 500;
/// Unheard cascades repaired per sweep.
const SWEEP_LIMIT: u64 = 500;

/// The partition whose owner assigns for the whole cluster.
pub(crate) const LEADER_PARTITION: u32 = 0;

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Asks the node's orchestrator for a pass; if it is restarting, its start-up pass runs anyway.
pub fn poke(ctx: &NodeContext) {
    if !ctx.assign_request.ask() {
        return;
    }
    let sent = ractor::registry::where_is(ctx.path(crate::names::SCHEDULER)).is_some_and(|cell| {
        ActorRef::<OrchestratorMsg>::from(cell)
            .send_message(OrchestratorMsg::Assign)
            .is_ok()
    });
    if !sent {
        ctx.assign_request.answer();
    }
}

/// Tells the node's orchestrator that this node took partition 0, and so the lead: decisions
/// another leader recorded meanwhile count from the next pass.
pub(crate) fn took_the_lead(ctx: &NodeContext) {
    if let Some(cell) = ractor::registry::where_is(ctx.path(crate::names::SCHEDULER)) {
        let _ = ActorRef::<OrchestratorMsg>::from(cell).send_message(OrchestratorMsg::Lead);
    }
}

/// Whether an `Assign` waits in the orchestrator's mailbox, so a burst of changes sends one
/// rather than one each: 10M `task.created` that outran the passes once left 130 MiB of them.
#[derive(Clone, Default)]
pub struct AssignRequest(Arc<AtomicBool>);

impl AssignRequest {
    /// Asks; true if none was waiting, so the caller sends the `Assign`.
    fn ask(&self) -> bool {
        !self.0.swap(true, Ordering::AcqRel)
    }

    /// Takes the waiting request, so the next change asks again.
    fn answer(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Messages of the orchestrator.
pub enum OrchestratorMsg {
    /// Something changed that may allow an assignment.
    Assign,
    /// This node took the lead: read every recorded decision before the next pass.
    Lead,
    /// Run the assignment pass now (sent to itself).
    Run,
    /// Look for silent agents, orphaned tasks and unheard cascades (sent to itself).
    Sweep,
}

/// The orchestrator actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrchestratorActor;

#[doc(hidden)]
pub struct OrchestratorState {
    ctx: NodeContext,
    /// A `Run` is on its way: further requests share it.
    scheduled: bool,
    /// Whether decisions recorded by an earlier run still need publishing.
    republish: bool,
    /// Whether the decisions held in `reserved` go out again (a sweep asked).
    resend: bool,
    /// Decisions made and not yet seen applied: they count against agents' room. Read whole
    /// from the store when republishing, and kept here between passes, so a pass costs the
    /// decisions in flight rather than every pending task.
    reserved: Vec<assign::Decision>,
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
        // A request sent to a mailbox that died with its actor is answered by this start.
        ctx.assign_request.answer();
        myself.send_message(OrchestratorMsg::Sweep)?;
        Ok(OrchestratorState {
            ctx,
            scheduled: false,
            republish: true,
            resend: false,
            reserved: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<OrchestratorMsg>,
        message: OrchestratorMsg,
        state: &mut OrchestratorState,
    ) -> Result<(), ActorProcessingErr> {
        crate::chaos::strike(&myself);
        match message {
            OrchestratorMsg::Assign | OrchestratorMsg::Lead => {
                if matches!(message, OrchestratorMsg::Lead) {
                    state.republish = true;
                } else {
                    // Before the pass reads, so a change after this point asks again.
                    state.ctx.assign_request.answer();
                }
                if !state.scheduled {
                    // Queued behind the requests already waiting, which it then covers.
                    state.scheduled = true;
                    myself.send_message(OrchestratorMsg::Run)?;
                }
            }
            OrchestratorMsg::Run => {
                state.scheduled = false;
                run_pass(state).await;
            }
            OrchestratorMsg::Sweep => {
                if let Err(error) = sweep(&state.ctx).await {
                    tracing::warn!(%error, "sweep failed");
                }
                // Decisions not applied yet go out again; their ids make a second copy change
                // nothing. Those this actor holds: reading them all from the store would scan
                // every pending task (0.4 s a sweep at 200k, 1.7 s at 1.3M), and what a crash
                // or a failed pass lost is read whole anyway (`republish`).
                state.resend = true;
                run_pass(state).await;
                // The next one an interval after this one ends: a sweep slower than the
                // interval (a large table) would otherwise leave them queueing without end.
                myself.send_after(state.ctx.assign_interval, || OrchestratorMsg::Sweep);
            }
        }
        Ok(())
    }
}

async fn run_pass(state: &mut OrchestratorState) {
    if let Err(error) = pass(state).await {
        // Recorded decisions may not have gone out: the next pass publishes them again.
        state.republish = true;
        tracing::warn!(%error, "assignment pass failed");
    }
}

/// Whether this node leads: it owns the partition whose owner assigns and fires schedules.
pub(crate) fn leads(ctx: &NodeContext) -> bool {
    ctx.ownership.owns(LEADER_PARTITION)
}

async fn publish_assignment(
    ctx: &NodeContext,
    decision: &assign::Decision,
    user: &str,
) -> Result<(), Failure> {
    let id = derived_id(
        "assign",
        &[&decision.task_id, &decision.generation.to_string()],
    );
    let command = task::Command::Assign {
        agent_id: decision.agent_id.clone(),
    };
    relay::publish(
        ctx,
        id,
        user,
        edge::task_message(&decision.task_id, &command),
    )
    .await?;
    Ok(())
}

/// Publishes `decisions` again under their ids, so a copy that went out changes nothing.
async fn publish_again(ctx: &NodeContext, decisions: &[assign::Decision]) -> Result<(), Failure> {
    for decision in decisions {
        if let Some(task) = ctx.store.task_summary(&decision.task_id).await? {
            publish_assignment(ctx, decision, &task.user).await?;
        }
    }
    Ok(())
}

async fn pass(state: &mut OrchestratorState) -> Result<(), Failure> {
    let ctx = &state.ctx;
    if !leads(ctx) {
        // Another node leads; what this one decided is in the store for that node to find.
        state.republish = true;
        return Ok(());
    }
    let store = &ctx.store;
    let slots = store.agent_slots().await?;
    if !state.republish && slots.iter().all(|s| s.load >= s.max_concurrent) {
        // Nobody has room (counting only applied assignments): skip the scans.
        return Ok(());
    }
    if state.republish {
        state.reserved = store.reservations().await?;
        publish_again(ctx, &state.reserved).await?;
        state.republish = false;
        state.resend = false;
    } else {
        state.reserved = store
            .still_reserved(std::mem::take(&mut state.reserved))
            .await?;
        if state.resend {
            publish_again(ctx, &state.reserved).await?;
            state.resend = false;
        }
    }
    // A user whose model budget is spent: their tasks that need a model wait.
    let held: std::collections::BTreeSet<String> = store
        .cost_holds(ctx.clock.now())
        .await?
        .into_keys()
        .collect();
    metrics::gauge!("switchyard_cost_holds").set(held.len() as f64);
    let pending = store.pending_tasks(PASS_LIMIT, &held).await?;
    let decisions = assign::plan(&pending, &slots, &state.reserved);
    store.record_decisions(&decisions, now_ms()).await?;
    state.reserved.extend(decisions.iter().cloned());
    // Published together: the bus commits them as one batch.
    let published = decisions.iter().map(|decision| {
        let user = pending
            .iter()
            .find(|p| p.task_id == decision.task_id)
            .map_or("", |p| p.user.as_str());
        publish_assignment(ctx, decision, user)
    });
    for result in futures::future::join_all(published).await {
        result?;
    }
    Ok(())
}

/// Publishes what nobody else will: agents that fell silent go offline, tasks of offline agents
/// are requeued, and dependencies still waiting on finished upstream tasks are told.
async fn sweep(ctx: &NodeContext) -> Result<(), Failure> {
    if !leads(ctx) {
        return Ok(());
    }
    let store = &ctx.store;
    let timeout = ctx.agent_timeout.as_millis() as u64;
    let now = now_ms();
    for gone in store.silent_agents(now.saturating_sub(timeout)).await? {
        if !agent::silent(gone.last_heartbeat, now, timeout) {
            continue;
        }
        let id = derived_id(
            "offline",
            &[&gone.agent_id, &gone.last_heartbeat.to_string()],
        );
        let reason = format!("no heartbeat for {} ms", now - gone.last_heartbeat);
        let message = Message::AgentOffline(AgentOffline {
            agent_id: gone.agent_id.clone(),
            reason,
        });
        relay::publish(ctx, id, &gone.user, message).await?;
        tracing::info!(agent = %gone.agent_id, "offline: heartbeats stopped");
    }
    for orphan in store.orphaned_tasks().await? {
        let Some(agent_id) = orphan.agent_id.clone() else {
            continue;
        };
        let id = derived_id(
            "requeue",
            &[&orphan.task_id, &orphan.generation.to_string()],
        );
        let command = task::Command::Requeue {
            agent_id,
            reason: "its agent went offline".into(),
        };
        relay::publish(
            ctx,
            id,
            &orphan.user,
            edge::task_message(&orphan.task_id, &command),
        )
        .await?;
    }
    for unheard in store.unheard_cascades(SWEEP_LIMIT).await? {
        relay::tell_dependent(
            ctx,
            &unheard.downstream,
            &unheard.user,
            &unheard.dependency,
            &unheard.upstream,
        )
        .await?;
    }
    Ok(())
}
