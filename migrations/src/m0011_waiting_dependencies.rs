//! The dependencies still waiting, in an index of their own: the orchestrator's sweep looks
//! for waiting ones whose upstream finished, and without it read every finished task to find
//! them, a read that grows with every task ever done; with it, with the dependencies in
//! flight. Partial (only the waiting rows), so it stays as small as what it serves.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX dependencies_waiting ON task_dependencies (depends_on, task_id) \
                 WHERE state = 'waiting'",
            )
            .await
            .map(drop)
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX dependencies_waiting")
            .await
            .map(drop)
    }
}
