//! Model costs: each user's ledger, every invocation recorded, the holds on model tasks, and
//! totals per period.

use std::collections::BTreeMap;

use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::batch::Changes;
use super::entities::{cost_ledgers, invocations};
use super::notifications::notification_row;
use super::{Applied, AppliedMessage, Store, StoreError};
use crate::domain::costs::{Budget, Hold, Ledger, Periods};
use crate::domain::task::NotificationDraft;

/// One model invocation, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The caller's id of it.
    pub invocation_id: String,
    /// Who served it.
    pub provider: String,
    /// Which model.
    pub model: String,
    /// Tokens sent.
    pub tokens_in: u64,
    /// Tokens received.
    pub tokens_out: u64,
    /// Its cost, micro-dollars.
    pub cost: u64,
    /// How long it took, ms.
    pub latency_ms: u64,
    /// The task it was for.
    pub task_id: Option<String>,
    /// When, ms.
    pub at: u64,
}

/// Totals of one provider and model over a period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelTotal {
    /// Who served them.
    pub provider: String,
    /// Which model.
    pub model: String,
    /// Invocations.
    pub invocations: u64,
    /// Tokens sent.
    pub tokens_in: u64,
    /// Tokens received.
    pub tokens_out: u64,
    /// Micro-dollars.
    pub cost: u64,
}

impl Store {
    /// The ledger of `user`, empty if nothing was recorded for them.
    pub async fn ledger(&self, user: &str) -> Result<Ledger, StoreError> {
        let Some(row) = cost_ledgers::Entity::find_by_id(user.to_owned())
            .one(self.connection())
            .await?
        else {
            return Ok(Ledger::default());
        };
        let micros = |v: Option<i64>| v.map(|v| v.max(0) as u64);
        Ok(Ledger {
            periods: Periods {
                day: row.day,
                month: row.month,
            },
            daily: row.daily_micros.max(0) as u64,
            monthly: row.monthly_micros.max(0) as u64,
            set: Budget {
                daily: micros(row.daily_budget),
                monthly: micros(row.monthly_budget),
            },
            hold: match (row.hold_reason, row.hold_until) {
                (Some(reason), Some(until)) => Some(Hold {
                    reason,
                    until: until.max(0) as u64,
                }),
                _ => None,
            },
        })
    }

    /// Whether invocation `invocation_id` of `user` was recorded.
    pub async fn invocation_known(
        &self,
        user: &str,
        invocation_id: &str,
    ) -> Result<bool, StoreError> {
        Ok(
            invocations::Entity::find_by_id((user.to_owned(), invocation_id.to_owned()))
                .one(self.connection())
                .await?
                .is_some(),
        )
    }

    /// Persists `ledger` of `user` as the effect of `message`, with the invocation it
    /// recorded and the notification it asked for, if any.
    pub async fn save_costs(
        &self,
        message: &AppliedMessage<'_>,
        ledger: &Ledger,
        invocation: Option<&Invocation>,
        notification: Option<&NotificationDraft>,
    ) -> Result<Applied, StoreError> {
        let user = message.user;
        let mut changes = Changes::new(message.id, message.activity());
        let micros = |v: Option<u64>| v.map(|v| v as i64);
        changes.ledger = Some(cost_ledgers::ActiveModel {
            user: Set(user.to_owned()),
            day: Set(ledger.periods.day),
            month: Set(ledger.periods.month),
            daily_micros: Set(ledger.daily as i64),
            monthly_micros: Set(ledger.monthly as i64),
            daily_budget: Set(micros(ledger.set.daily)),
            monthly_budget: Set(micros(ledger.set.monthly)),
            hold_reason: Set(ledger.hold.as_ref().map(|h| h.reason.clone())),
            hold_until: Set(ledger.hold.as_ref().map(|h| h.until as i64)),
        });
        changes.invocation = invocation.map(|i| invocations::ActiveModel {
            user: Set(user.to_owned()),
            invocation_id: Set(i.invocation_id.clone()),
            provider: Set(i.provider.clone()),
            model: Set(i.model.clone()),
            tokens_in: Set(i.tokens_in as i64),
            tokens_out: Set(i.tokens_out as i64),
            cost_micros: Set(i.cost as i64),
            latency_ms: Set(i.latency_ms as i64),
            task_id: Set(i.task_id.clone()),
            at: Set(i.at as i64),
        });
        changes.notifications = notification
            .map(|draft| notification_row(message.id, draft, message.time))
            .into_iter()
            .collect();
        self.writes.write(changes).await
    }

    /// Each user whose model tasks are held at `now`, with the reason.
    pub async fn cost_holds(&self, now: u64) -> Result<BTreeMap<String, String>, StoreError> {
        Ok(cost_ledgers::Entity::find()
            .filter(cost_ledgers::Column::HoldUntil.gt(now as i64))
            .all(self.connection())
            .await?
            .into_iter()
            .filter_map(|row| Some((row.user, row.hold_reason?)))
            .collect())
    }

    /// The invocations of `user` in `[start, end)` (ms), oldest first.
    pub async fn invocations(
        &self,
        user: &str,
        start: u64,
        end: u64,
    ) -> Result<Vec<Invocation>, StoreError> {
        use invocations::Column as C;
        Ok(invocations::Entity::find()
            .filter(C::User.eq(user))
            .filter(C::At.gte(start as i64))
            .filter(C::At.lt(end.min(i64::MAX as u64) as i64))
            .order_by_asc(C::At)
            .order_by_asc(C::InvocationId)
            .all(self.connection())
            .await?
            .into_iter()
            .map(|r| Invocation {
                invocation_id: r.invocation_id,
                provider: r.provider,
                model: r.model,
                tokens_in: r.tokens_in.max(0) as u64,
                tokens_out: r.tokens_out.max(0) as u64,
                cost: r.cost_micros.max(0) as u64,
                latency_ms: r.latency_ms.max(0) as u64,
                task_id: r.task_id,
                at: r.at.max(0) as u64,
            })
            .collect())
    }
}

/// `invocations` summed per provider and model, in name order.
pub fn totals(invocations: &[Invocation]) -> Vec<ModelTotal> {
    let mut by_model: BTreeMap<(&str, &str), ModelTotal> = BTreeMap::new();
    for i in invocations {
        let total = by_model
            .entry((&i.provider, &i.model))
            .or_insert_with(|| ModelTotal {
                provider: i.provider.clone(),
                model: i.model.clone(),
                ..ModelTotal::default()
            });
        total.invocations += 1;
        total.tokens_in = total.tokens_in.saturating_add(i.tokens_in);
        total.tokens_out = total.tokens_out.saturating_add(i.tokens_out);
        total.cost = total.cost.saturating_add(i.cost);
    }
    by_model.into_values().collect()
}
