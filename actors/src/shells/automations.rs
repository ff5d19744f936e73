//! The automations actor: records `automation.defined`, fires a run at once on
//! `automation.run_requested`, and on the node that leads fires each scheduled run when it is
//! due, a missed one as its policy says. A run is its tasks published as `task.created` under
//! ids derived from the automation and the run, so a run fired twice (a crash before its
//! schedule moved on, two nodes at once) creates each task once.
//!
//! Supervision: a permanent child of `orchestrator`; everything it knows is in the store.
//! Ordering: one message at a time; each delivery is settled here.
//! Shutdown: nothing held; a run fired but not yet recorded fires again, to the same ids.

use std::time::Duration;

use broker_adapters::Delivery;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use schemas::{AutomationDefined, Envelope, Message, TaskCreated};

use crate::NodeContext;
use crate::domain::automation::{self, Missed, Schedule};
use crate::domain::{Refusal, dag};
use crate::edge;
use crate::shells::entity::applied_message;
use crate::shells::relay::derived_id;
use crate::store::{Automation, StoreError};

/// How often due automations are looked for.
const TICK: Duration = Duration::from_millis(500);

/// What the automations actor is told.
pub enum AutomationsMsg {
    /// An `automation.*` message and its delivery.
    Apply(Box<Envelope>, Delivery),
    /// Look for due runs.
    Tick,
}

/// The automations actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct AutomationsActor;

impl Actor for AutomationsActor {
    type Msg = AutomationsMsg;
    type State = NodeContext;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<AutomationsMsg>,
        ctx: NodeContext,
    ) -> Result<NodeContext, ActorProcessingErr> {
        myself.send_interval(TICK, || AutomationsMsg::Tick);
        Ok(ctx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<AutomationsMsg>,
        message: AutomationsMsg,
        ctx: &mut NodeContext,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AutomationsMsg::Apply(envelope, delivery) => match apply(ctx, &envelope).await {
                Ok(()) => delivery.ack(),
                Err(Failure::Refused(Refusal(reason))) => {
                    ctx.store.record_refusal(&envelope.id, &reason).await?;
                    delivery.dead_letter(reason);
                }
                Err(Failure::Transient(error)) => delivery.nack(error),
            },
            AutomationsMsg::Tick => {
                if crate::shells::orchestrator::leads(ctx) {
                    tick(ctx).await;
                }
            }
        }
        Ok(())
    }
}

enum Failure {
    Refused(Refusal),
    Transient(String),
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Transient(error.to_string())
    }
}

async fn apply(ctx: &NodeContext, envelope: &Envelope) -> Result<(), Failure> {
    let message = applied_message(envelope);
    match &envelope.message {
        Message::AutomationDefined(m) => {
            let automation =
                define(m, &envelope.user, ctx.clock.now()).map_err(Failure::Refused)?;
            ctx.store.save_automation(&message, &automation).await?;
            tracing::info!(automation = %m.automation_id, next = ?automation.next_run_at, "defined");
        }
        Message::AutomationRunRequested(m) => {
            // Another user's automation is, to this user, none.
            let automation = ctx
                .store
                .automation(&m.automation_id)
                .await?
                .filter(|a| a.user == envelope.user)
                .ok_or_else(|| {
                    Failure::Refused(Refusal(format!(
                        "automation.run_requested: no automation `{}`",
                        m.automation_id
                    )))
                })?;
            let run = automation::requested_run(&envelope.id);
            fire(ctx, &automation, &run).await?;
            ctx.store.record_applied(&message).await?;
        }
        other => {
            return Err(Failure::Refused(Refusal(format!(
                "`{}` is not an automation's",
                other.type_name()
            ))));
        }
    }
    Ok(())
}

/// The stored form of definition `m` of `user` at `now`, or why it is refused.
fn define(m: &AutomationDefined, user: &str, now: u64) -> Result<Automation, Refusal> {
    let zone = m.time_zone.clone().unwrap_or_default();
    let schedule = Schedule::parse(&m.schedule, &zone)?;
    let missed = Missed::parse(m.missed.as_deref().unwrap_or_default())?;
    let steps: Vec<&str> = m.tasks.iter().map(|t| t.task_id.as_str()).collect();
    automation::check_ids(&m.automation_id, &steps, schemas::MAX_ID_BYTES)?;
    order(&m.tasks)?;
    let tasks = serde_json::to_string(&m.tasks)
        .map_err(|e| Refusal(format!("automation `{}`: {e}", m.automation_id)))?;
    Ok(Automation {
        automation_id: m.automation_id.clone(),
        user: user.to_owned(),
        schedule: m.schedule.clone(),
        time_zone: zone,
        missed: missed.as_str().to_owned(),
        tasks,
        paused: m.paused,
        next_run_at: (!m.paused).then(|| schedule.next_after(now)).flatten(),
        last_run: None,
        last_run_at: None,
    })
}

/// The steps in an order where each comes after those it depends on, or why they cannot run:
/// a step may depend only on steps of the same run.
fn order(steps: &[TaskCreated]) -> Result<Vec<usize>, Refusal> {
    let nodes: Vec<dag::Node> = steps
        .iter()
        .map(|step| {
            let new = edge::new_task(step);
            dag::Node {
                task_id: new.task_id,
                upstream: new
                    .dependencies
                    .into_iter()
                    .map(|d| (d.upstream, d.kind, d.contract_key))
                    .collect(),
                contracts: new.contracts,
            }
        })
        .collect();
    dag::check(&nodes, |_| None)
}

/// Fires each due scheduled run once, as its policy says.
async fn tick(ctx: &NodeContext) {
    let now = ctx.clock.now();
    let due = match ctx.store.due_automations(now).await {
        Ok(due) => due,
        Err(error) => return tracing::warn!(%error, "reading due automations"),
    };
    for automation in due {
        let Some(scheduled) = automation.next_run_at else {
            continue;
        };
        let (schedule, missed) = match (
            Schedule::parse(&automation.schedule, &automation.time_zone),
            Missed::parse(&automation.missed),
        ) {
            (Ok(schedule), Ok(missed)) => (schedule, missed),
            _ => continue,
        };
        let grace = ctx.automation_grace.as_millis() as u64;
        let plan = automation::due(&schedule, missed, scheduled, now, grace);
        let run = plan.fire.map(automation::scheduled_run);
        if let Some(run) = &run
            && let Err(error) = fire(ctx, &automation, run).await
        {
            // Tried again on the next tick, to the same ids.
            tracing::warn!(automation = %automation.automation_id, error = %error.reason(), "firing a run");
            continue;
        }
        if plan.fire.is_none() {
            tracing::info!(automation = %automation.automation_id, scheduled, "a missed run skipped");
        }
        let fired = run.as_deref().map(|r| (r, now));
        let id = &automation.automation_id;
        if let Err(error) = ctx
            .store
            .advance_automation(id, scheduled, plan.next, fired)
            .await
        {
            tracing::warn!(automation = %id, %error, "moving an automation's schedule on");
        }
    }
}

impl Failure {
    fn reason(&self) -> String {
        match self {
            Failure::Refused(Refusal(reason)) | Failure::Transient(reason) => reason.clone(),
        }
    }
}

/// Publishes run `run` of `automation`: its tasks, upstream steps first, each under an id
/// derived from the automation, the run and the step.
async fn fire(ctx: &NodeContext, automation: &Automation, run: &str) -> Result<(), Failure> {
    let steps: Vec<TaskCreated> = serde_json::from_str(&automation.tasks)
        .map_err(|e| Failure::Refused(Refusal(format!("a stored automation: {e}"))))?;
    let id = &automation.automation_id;
    let task_id = |step: &str| automation::run_task_id(id, run, step);
    for i in order(&steps).map_err(Failure::Refused)? {
        let mut task = steps[i].clone();
        let step = std::mem::take(&mut task.task_id);
        task.task_id = task_id(&step);
        for dependency in &mut task.depends_on {
            dependency.task_id = task_id(&dependency.task_id);
        }
        let mut envelope = Envelope::new(
            derived_id("automation", &[id, run, &step]),
            format!("node/{}/automations", ctx.node_id),
            ctx.clock.now(),
            automation.user.clone(),
            Message::TaskCreated(task),
        );
        envelope.corr = Some(format!("automation/{id}"));
        crate::publish(ctx.bus.as_ref(), &envelope)
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?;
    }
    tracing::info!(automation = %id, %run, "fired");
    Ok(())
}
