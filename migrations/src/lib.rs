//! switchyard's database schema as sea-orm migrations, each with its way back down.

#![warn(missing_docs)]

mod m0001_core;
mod m0002_activity_and_members;
mod m0003_orchestration;
mod m0004_pending_order;
mod m0005_conversations;
mod m0006_calendars;
mod m0007_delivery;
mod m0008_costs;
mod m0009_automations;
mod m0010_replay_checkpoints;
mod m0011_waiting_dependencies;

pub use sea_orm_migration::MigratorTrait;
use sea_orm_migration::prelude::*;

/// Every migration in order; `Migrator::up(db, None)` brings a database to the current schema.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_core::Migration),
            Box::new(m0002_activity_and_members::Migration),
            Box::new(m0003_orchestration::Migration),
            Box::new(m0004_pending_order::Migration),
            Box::new(m0005_conversations::Migration),
            Box::new(m0006_calendars::Migration),
            Box::new(m0007_delivery::Migration),
            Box::new(m0008_costs::Migration),
            Box::new(m0009_automations::Migration),
            Box::new(m0010_replay_checkpoints::Migration),
            Box::new(m0011_waiting_dependencies::Migration),
        ]
    }
}
