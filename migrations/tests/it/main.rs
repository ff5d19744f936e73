//! Migrations go up, down and up again on SQLite, and on PostgreSQL where one is configured.

use migrations::{Migrator, MigratorTrait};
use sea_orm_migration::sea_orm::{ConnectionTrait, Database, DatabaseConnection};

async fn table_count(db: &DatabaseConnection) -> usize {
    let sql = match db.get_database_backend() {
        sea_orm_migration::sea_orm::DatabaseBackend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN \
             ('tasks','task_dependencies','agents','notifications','processed_messages','api_keys')"
        }
        _ => {
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_name IN \
             ('tasks','task_dependencies','agents','notifications','processed_messages','api_keys')"
        }
    };
    db.query_all_raw(sea_orm_migration::sea_orm::Statement::from_string(
        db.get_database_backend(),
        sql,
    ))
    .await
    .unwrap()
    .len()
}

async fn up_down_up(url: &str) {
    let db = Database::connect(url).await.unwrap();
    Migrator::up(&db, None).await.unwrap();
    assert_eq!(table_count(&db).await, 6);
    Migrator::up(&db, None)
        .await
        .expect("applying again is a no-op");
    Migrator::down(&db, None).await.unwrap();
    assert_eq!(table_count(&db).await, 0);
    Migrator::up(&db, None).await.unwrap();
    assert_eq!(table_count(&db).await, 6);
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
