//! Migrated temporary stores for tests: a SQLite file in a directory of its own, and a
//! PostgreSQL schema of its own on the shared test server.

use migrations::{Migrator, MigratorTrait};
use sea_orm::ConnectionTrait;

use crate::Store;

/// A migrated store on a fresh SQLite file; the directory lives as long as the value.
pub struct TempStore {
    /// The store.
    pub store: Store,
    /// Its directory (removed on drop).
    pub dir: tempfile::TempDir,
}

/// A migrated store on a fresh SQLite file.
pub async fn sqlite() -> TempStore {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("state.sqlite").display()
    );
    let store = migrated(&url).await;
    TempStore { store, dir }
}

/// A URL on the test PostgreSQL whose search path is a fresh, empty schema named after `name`
/// and this process; `None` when PostgreSQL tests are opted out (it fails, naming what to
/// start, when they are not and the server is missing).
pub async fn postgres_schema(name: &str) -> Option<String> {
    let url = broker_adapters::testkit::postgres_url()?;
    let schema = format!("sy_{name}_{}", std::process::id());
    let admin = Store::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} ({e}): start it, or run ./scripts/test"));
    let reset = format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}");
    admin
        .connection()
        .execute_unprepared(&reset)
        .await
        .expect("a fresh schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{sep}options=-c%20search_path%3D{schema}"))
}

/// A migrated store on a fresh PostgreSQL schema, unless PostgreSQL tests are opted out.
pub async fn postgres(name: &str) -> Option<Store> {
    Some(migrated(&postgres_schema(name).await?).await)
}

/// Connects to `url` and migrates it.
pub async fn migrated(url: &str) -> Store {
    let store = Store::connect(url)
        .await
        .expect("connecting to the test database");
    Migrator::up(store.connection(), None)
        .await
        .expect("migrating the test database");
    store
}

/// Runs `check` on a fresh SQLite store, then on a fresh PostgreSQL schema.
pub async fn on_every_database<F, Fut>(name: &str, check: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let sqlite = sqlite().await;
    check(sqlite.store.clone()).await;
    if let Some(pg) = postgres(name).await {
        check(pg).await;
    }
}
