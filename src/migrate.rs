//! `switchyard migrate up|down N|status`: the state database's migrations, for operators who
//! run them before a rollout (a node also runs them at start-up).

use anyhow::Context;
use migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};

use crate::doctor::redacted;

/// What to do with the migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Apply every pending migration.
    Up,
    /// Revert the last `n` applied migrations.
    Down(u32),
    /// Only show each migration's status.
    Status,
}

/// Carries out `action` on the database at `url`; answers the lines to print: each
/// migration, `applied` or `pending`, after what was done.
pub async fn run(url: &str, action: Action) -> anyhow::Result<Vec<String>> {
    let db = connect(url).await?;
    let done = match action {
        Action::Up => {
            let before = pending(&db).await?;
            Migrator::up(&db, None).await.context("migrating up")?;
            format!("applied {before} migration(s)")
        }
        Action::Down(n) => {
            let applied = Migrator::get_applied_migrations(&db)
                .await
                .context("reading the applied migrations")?
                .len() as u32;
            anyhow::ensure!(
                n <= applied,
                "only {applied} migration(s) are applied; cannot revert {n}"
            );
            Migrator::down(&db, Some(n))
                .await
                .context("migrating down")?;
            format!("reverted {n} migration(s)")
        }
        Action::Status => String::new(),
    };
    let mut lines: Vec<String> = Some(done).filter(|d| !d.is_empty()).into_iter().collect();
    for migration in Migrator::get_migration_with_status(&db)
        .await
        .context("reading the migrations' status")?
    {
        let status = match migration.status() {
            sea_orm_migration::MigrationStatus::Applied => "applied",
            sea_orm_migration::MigrationStatus::Pending => "pending",
        };
        lines.push(format!("{} {status}", migration.name()));
    }
    Ok(lines)
}

async fn pending(db: &DatabaseConnection) -> anyhow::Result<usize> {
    Ok(Migrator::get_pending_migrations(db)
        .await
        .context("reading the pending migrations")?
        .len())
}

async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url);
    options.sqlx_logging(false);
    Database::connect(options)
        .await
        .with_context(|| format!("connecting to the database {}", redacted(url)))
}
