//! Automations: their definitions, which are due, and each one's schedule advanced by the one
//! sender that fired it.

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::batch::Changes;
use super::entities::automations::{self, Column as C};
use super::{Applied, AppliedMessage, Store, StoreError};

/// An automation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Automation {
    /// Its id.
    pub automation_id: String,
    /// Whose tasks it creates.
    pub user: String,
    /// Its cron expression.
    pub schedule: String,
    /// The zone the schedule is read in.
    pub time_zone: String,
    /// `skip` or `catch_up`.
    pub missed: String,
    /// The tasks of a run, as the JSON list of `task.created` bodies it was defined with.
    pub tasks: String,
    /// Whether its schedule is paused.
    pub paused: bool,
    /// When its next scheduled run is due, ms; none while paused.
    pub next_run_at: Option<u64>,
    /// Its last run's label.
    pub last_run: Option<String>,
    /// When that run fired, ms.
    pub last_run_at: Option<u64>,
}

impl Store {
    /// Persists `automation` (a new definition) as the effect of `message`.
    pub async fn save_automation(
        &self,
        message: &AppliedMessage<'_>,
        automation: &Automation,
    ) -> Result<Applied, StoreError> {
        let mut changes = Changes::new(message.id, message.activity());
        changes.automation = Some(automations::ActiveModel {
            automation_id: Set(automation.automation_id.clone()),
            user: Set(automation.user.clone()),
            schedule: Set(automation.schedule.clone()),
            time_zone: Set(automation.time_zone.clone()),
            missed: Set(automation.missed.clone()),
            tasks: Set(automation.tasks.clone()),
            paused: Set(automation.paused),
            next_run_at: Set(automation.next_run_at.map(|t| t as i64)),
            last_run: NotSet,
            last_run_at: NotSet,
            defined_at: Set(message.time as i64),
        });
        self.writes.write(changes).await
    }

    /// Records `message` as applied with nothing else to write (a run-now that fired).
    pub async fn record_applied(
        &self,
        message: &AppliedMessage<'_>,
    ) -> Result<Applied, StoreError> {
        self.writes
            .write(Changes::new(message.id, message.activity()))
            .await
    }

    /// Automation `automation_id`, if defined.
    pub async fn automation(&self, automation_id: &str) -> Result<Option<Automation>, StoreError> {
        Ok(automations::Entity::find_by_id(automation_id.to_owned())
            .one(self.connection())
            .await?
            .map(from_row))
    }

    /// The automations whose next run is due at `now`, soonest first.
    pub async fn due_automations(&self, now: u64) -> Result<Vec<Automation>, StoreError> {
        Ok(automations::Entity::find()
            .filter(C::NextRunAt.lte(now as i64))
            .order_by_asc(C::NextRunAt)
            .all(self.connection())
            .await?
            .into_iter()
            .map(from_row)
            .collect())
    }

    /// Moves automation `automation_id` from its run due at `due` to `next`, noting `fired`
    /// (the run's label, and when) if it fired: false if another node moved it first.
    pub async fn advance_automation(
        &self,
        automation_id: &str,
        due: u64,
        next: Option<u64>,
        fired: Option<(&str, u64)>,
    ) -> Result<bool, StoreError> {
        let mut update = automations::Entity::update_many()
            .col_expr(C::NextRunAt, Expr::value(next.map(|t| t as i64)))
            .filter(C::AutomationId.eq(automation_id))
            .filter(C::NextRunAt.eq(due as i64));
        if let Some((run, at)) = fired {
            update = update
                .col_expr(C::LastRun, Expr::value(run.to_owned()))
                .col_expr(C::LastRunAt, Expr::value(at as i64));
        }
        Ok(update.exec(self.connection()).await?.rows_affected == 1)
    }
}

fn from_row(row: automations::Model) -> Automation {
    Automation {
        automation_id: row.automation_id,
        user: row.user,
        schedule: row.schedule,
        time_zone: row.time_zone,
        missed: row.missed,
        tasks: row.tasks,
        paused: row.paused,
        next_run_at: row.next_run_at.map(|t| t.max(0) as u64),
        last_run: row.last_run,
        last_run_at: row.last_run_at.map(|t| t.max(0) as u64),
    }
}
