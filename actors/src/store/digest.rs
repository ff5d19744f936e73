//! A digest of the state the bus's messages made: every domain row, without row ids, clocks
//! of the node that applied it, or what delivery and scheduling did outward (notifications'
//! delivery, automations' runs, assignment bookkeeping), rendered canonically and sorted
//! byte-wise, so the same messages give the same digest on SQLite and PostgreSQL, whichever
//! node applied them.

use sea_orm::{EntityTrait, Select};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::entities::*;
use super::{Store, StoreError};

/// A state's digest and how many rows of each table it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// SHA-256 over every table's sorted rows, hex.
    pub hex: String,
    /// Each table with its row count, in a fixed order.
    pub tables: Vec<(&'static str, u64)>,
}

impl Store {
    /// The digest of the state in this database.
    pub async fn digest(&self) -> Result<Digest, StoreError> {
        let mut hash = Sha256::new();
        let mut counts = Vec::new();
        for (name, rows) in self.canonical_rows().await? {
            hash.update(name.as_bytes());
            hash.update(b"\n");
            for row in &rows {
                hash.update(row.as_bytes());
                hash.update(b"\n");
            }
            counts.push((name, rows.len() as u64));
        }
        Ok(Digest {
            hex: hex::encode(hash.finalize()),
            tables: counts,
        })
    }

    /// Each table the digest covers with its rows rendered canonically, sorted.
    pub async fn canonical_rows(&self) -> Result<Vec<(&'static str, Vec<String>)>, StoreError> {
        let db = self.connection();
        let tables: Vec<(&'static str, Vec<Value>)> = vec![
            (
                "tasks",
                rows(db, tasks::Entity::find(), |t| {
                    json!([
                        t.task_id,
                        t.user,
                        t.title,
                        t.spec,
                        t.priority,
                        t.requirements,
                        t.state,
                        t.agent_id,
                        t.result,
                        t.error,
                        t.created_at,
                        t.updated_at,
                        t.contracts,
                        t.require_plan_approval,
                        t.preferred_agent,
                        t.attempts,
                        t.max_attempts,
                        t.inputs,
                        t.blocked_reason,
                        t.note,
                        t.generation,
                    ])
                })
                .await?,
            ),
            (
                "task_dependencies",
                rows(db, task_dependencies::Entity::find(), |d| {
                    json!([
                        d.task_id,
                        d.depends_on,
                        d.kind,
                        d.contract_key,
                        d.state,
                        d.reason,
                    ])
                })
                .await?,
            ),
            (
                "task_output",
                rows(db, task_output::Entity::find(), |o| {
                    json!([o.task_id, o.agent_id, o.line, o.at,])
                })
                .await?,
            ),
            (
                "agents",
                rows(db, agents::Entity::find(), |a| {
                    json!([
                        a.agent_id,
                        a.user,
                        a.name,
                        a.capabilities,
                        a.max_concurrent,
                        a.status,
                        a.last_heartbeat,
                        a.registered_at,
                    ])
                })
                .await?,
            ),
            // What was asked for; how its delivery went is the outside world's doing.
            (
                "notifications",
                rows(db, notifications::Entity::find(), |n| {
                    json!([
                        n.user,
                        n.channel,
                        n.recipient,
                        n.subject,
                        n.text,
                        n.dedupe_key,
                        n.cause,
                        n.created_at,
                        n.task_id,
                    ])
                })
                .await?,
            ),
            (
                "processed_messages",
                rows(db, processed_messages::Entity::find(), |p| {
                    json!([p.message_id])
                })
                .await?,
            ),
            (
                "refusals",
                rows(db, refusals::Entity::find(), |r| {
                    json!([r.message_id, r.reason])
                })
                .await?,
            ),
            (
                "activity",
                rows(db, activity::Entity::find(), |a| {
                    json!([a.entity, a.message_id, a.kind, a.at, a.user,])
                })
                .await?,
            ),
            (
                "conversations",
                rows(db, conversations::Entity::find(), |c| {
                    json!([
                        c.key,
                        c.channel,
                        c.conversation,
                        c.messages,
                        c.tasks,
                        c.first_at,
                        c.last_at,
                    ])
                })
                .await?,
            ),
            (
                "conversation_messages",
                rows(db, conversation_messages::Entity::find(), |m| {
                    json!([
                        m.message_id,
                        m.key,
                        m.sender,
                        m.text,
                        m.provider_id,
                        m.received,
                        m.attachments,
                        m.task_id,
                    ])
                })
                .await?,
            ),
            (
                "calendar_requests",
                rows(db, calendar_requests::Entity::find(), |r| {
                    json!([
                        r.calendar_id,
                        r.request_id,
                        r.user,
                        r.title,
                        r.start,
                        r.end,
                        r.booked,
                        r.conflicts_with,
                    ])
                })
                .await?,
            ),
            (
                "invocations",
                rows(db, invocations::Entity::find(), |i| {
                    json!([
                        i.user,
                        i.invocation_id,
                        i.provider,
                        i.model,
                        i.tokens_in,
                        i.tokens_out,
                        i.cost_micros,
                        i.latency_ms,
                        i.task_id,
                        i.at,
                    ])
                })
                .await?,
            ),
            (
                "cost_ledgers",
                rows(db, cost_ledgers::Entity::find(), |l| {
                    json!([
                        l.user,
                        l.day,
                        l.month,
                        l.daily_micros,
                        l.monthly_micros,
                        l.daily_budget,
                        l.monthly_budget,
                        l.hold_reason,
                        l.hold_until,
                    ])
                })
                .await?,
            ),
            // The definitions; their runs follow the clock of whoever fired them.
            (
                "automations",
                rows(db, automations::Entity::find(), |a| {
                    json!([
                        a.automation_id,
                        a.user,
                        a.schedule,
                        a.time_zone,
                        a.missed,
                        a.tasks,
                        a.paused,
                        a.defined_at,
                    ])
                })
                .await?,
            ),
        ];
        Ok(tables
            .into_iter()
            .map(|(name, rows)| {
                let mut rendered: Vec<String> = rows.iter().map(Value::to_string).collect();
                rendered.sort_unstable();
                (name, rendered)
            })
            .collect())
    }
}

/// Every row of `query`, as `project` renders it.
async fn rows<E: EntityTrait>(
    db: &sea_orm::DatabaseConnection,
    query: Select<E>,
    project: impl Fn(E::Model) -> Value,
) -> Result<Vec<Value>, StoreError> {
    Ok(query.all(db).await?.into_iter().map(project).collect())
}
