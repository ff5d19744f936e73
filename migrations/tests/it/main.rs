//! Migrations go up, down and up again on SQLite, and on PostgreSQL where one is configured.

use migrations::{Migrator, MigratorTrait};
use sea_orm_migration::sea_orm::{ConnectionTrait, Database, DatabaseConnection};

/// Every table, column and index of the current schema, one line each, sorted (the
/// migrations' own bookkeeping table left out).
async fn schema(db: &DatabaseConnection) -> Vec<String> {
    let sql = match db.get_database_backend() {
        sea_orm_migration::sea_orm::DatabaseBackend::Sqlite => {
            // The statement that made each table and index: its columns and constraints too.
            "SELECT type || ' ' || name || ': ' || COALESCE(sql, '') AS line FROM sqlite_master \
             WHERE name NOT LIKE 'sqlite_%' AND name <> 'seaql_migrations'"
        }
        _ => {
            "SELECT 'column ' || table_name || '.' || column_name || ': ' || data_type AS line \
             FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name <> 'seaql_migrations' \
             UNION ALL SELECT 'index ' || indexname || ': ' || indexdef FROM pg_indexes \
             WHERE schemaname = current_schema() AND tablename <> 'seaql_migrations'"
        }
    };
    let rows = db
        .query_all_raw(sea_orm_migration::sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql,
        ))
        .await
        .unwrap();
    let mut lines: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String>("", "line").unwrap())
        .collect();
    lines.sort();
    lines
}

/// The tables every migration together makes.
const TABLES: [&str; 15] = [
    "activity",
    "agents",
    "api_keys",
    "assignments",
    "calendar_requests",
    "cluster_members",
    "conversation_messages",
    "conversations",
    "notifications",
    "processed_messages",
    "refusals",
    "replay_checkpoints",
    "task_dependencies",
    "task_output",
    "tasks",
];

/// Each migration's `down` undoes exactly its `up`: stepping down one at a time passes through
/// the schemas that stepping up made, back to nothing, and up again to the same end.
async fn up_down_up(url: &str) {
    let db = Database::connect(url).await.unwrap();
    let steps = Migrator::migrations().len();
    let mut after_up = vec![schema(&db).await];
    for _ in 0..steps {
        Migrator::up(&db, Some(1)).await.unwrap();
        after_up.push(schema(&db).await);
    }
    assert!(
        after_up[0].is_empty(),
        "a fresh database: {:?}",
        after_up[0]
    );
    let last = after_up.last().unwrap();
    for table in TABLES {
        assert!(
            last.iter().any(|l| l.contains(&format!(" {table}"))),
            "table {table} in {last:#?}"
        );
    }
    Migrator::up(&db, None)
        .await
        .expect("applying again is a no-op");
    for step in (0..steps).rev() {
        Migrator::down(&db, Some(1)).await.unwrap();
        assert_eq!(
            schema(&db).await,
            after_up[step],
            "down to migration {step}"
        );
    }
    Migrator::up(&db, None).await.unwrap();
    assert_eq!(&schema(&db).await, last, "up again");
}

#[tokio::test]
async fn sqlite_up_down_up() {
    let dir = std::env::temp_dir().join(format!("switchyard-migrations-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("state.sqlite").display());
    up_down_up(&url).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn postgres_up_down_up() {
    let Some(url) = broker_adapters::testkit::postgres_url() else {
        return;
    };
    // A schema of its own, so the test neither sees nor drops anything else.
    let admin = Database::connect(&url).await.unwrap();
    admin
        .execute_unprepared(
            "DROP SCHEMA IF EXISTS migrations_it CASCADE; CREATE SCHEMA migrations_it",
        )
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    up_down_up(&format!(
        "{url}{sep}options=-c%20search_path%3Dmigrations_it"
    ))
    .await;
    admin
        .execute_unprepared("DROP SCHEMA migrations_it CASCADE")
        .await
        .unwrap();
}
