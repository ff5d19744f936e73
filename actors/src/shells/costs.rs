//! A user's cost mailbox (`costs/<user>`): records each model invocation once, keeps the day's
//! and the month's totals against the user's budgets, and holds the user's model tasks while
//! a budget is spent (the scheduler reads the hold), telling the user once; a raised budget or
//! a new period releases them.

use schemas::{Envelope, Message};

use crate::NodeContext;
use crate::domain::Effect;
use crate::domain::costs::{Budget, Ledger, micros};
use crate::shells::entity::{ApplyError, Kind, applied_message, misrouted};
use crate::store::{Applied, Invocation, Store, StoreError};

/// Cost ledgers: `domain::costs` per `costs/<user>` key.
pub struct CostMailbox;

impl Kind for CostMailbox {
    type State = Ledger;

    async fn load(store: &Store, user: &str) -> Result<Option<Ledger>, StoreError> {
        // Every user has a ledger: one never charged is empty.
        store.ledger(user).await.map(Some)
    }

    async fn apply(
        ctx: &NodeContext,
        state: Option<&Ledger>,
        envelope: &Envelope,
    ) -> Result<(Ledger, Vec<Effect>, Applied), ApplyError> {
        let mut ledger = state.cloned().unwrap_or_default();
        let user = envelope.user.as_str();
        let configured = ctx.budgets.budget(user);
        let (change, invocation) = match &envelope.message {
            Message::InvocationRecorded(m) => {
                let cost = micros(m.cost, "cost").map_err(ApplyError::Refused)?;
                if ctx.store.invocation_known(user, &m.invocation_id).await? {
                    // Sent again under another message id: counted once.
                    let applied = ctx
                        .store
                        .save_costs(&applied_message(envelope), &ledger, None, None)
                        .await?;
                    return Ok((ledger, Vec::new(), applied));
                }
                let invocation = Invocation {
                    invocation_id: m.invocation_id.clone(),
                    provider: m.provider.clone(),
                    model: m.model.clone(),
                    tokens_in: m.tokens_in,
                    tokens_out: m.tokens_out,
                    cost,
                    latency_ms: m.latency_ms,
                    task_id: m.task_id.clone(),
                    at: envelope.time,
                };
                let change = ledger.record(user, cost, envelope.time, configured);
                (change, Some(invocation))
            }
            Message::BudgetSet(m) => {
                let amount = |d: Option<f64>, what| d.map(|d| micros(d, what)).transpose();
                let set = Budget {
                    daily: amount(m.daily, "daily").map_err(ApplyError::Refused)?,
                    monthly: amount(m.monthly, "monthly").map_err(ApplyError::Refused)?,
                };
                (
                    ledger.set_budget(user, set, envelope.time, configured),
                    None,
                )
            }
            _ => return Err(misrouted(envelope)),
        };
        let applied = ctx
            .store
            .save_costs(
                &applied_message(envelope),
                &ledger,
                invocation.as_ref(),
                change.notification.as_ref(),
            )
            .await?;
        if let Some(hold) = &ledger.hold
            && change.notification.is_some()
        {
            tracing::info!(%user, reason = %hold.reason, "holding model tasks");
        }
        let effects = if change.released {
            vec![Effect::Assign]
        } else {
            Vec::new()
        };
        Ok((ledger, effects, applied))
    }

    fn carry_out(ctx: &NodeContext, _state: &Ledger, effects: Vec<Effect>) {
        crate::shells::relay::carry_out(ctx, None, effects);
    }
}
