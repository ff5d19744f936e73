//! Persistence: idempotent writes, outbox notifications, queries, keys, on every database.

use actors::domain::agent::Agent;
use actors::domain::task::{NotificationDraft, Task, TaskState};
use actors::store::keys::Role;
use actors::store::{Applied, AppliedMessage, Store};
use migrations::{Migrator, MigratorTrait};
use schemas::{Capabilities, Priority};
use sea_orm::ConnectionTrait;

/// Runs `check` on a fresh SQLite store and, if configured, a fresh PostgreSQL schema.
async fn on_every_database<F, Fut>(name: &str, check: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("s.sqlite").display()
    ))
    .await
    .unwrap();
    Migrator::up(sqlite.connection(), None).await.unwrap();
    check(sqlite).await;

    let Some(url) = broker_adapters::testkit::postgres_url() else {
        return;
    };
    let schema = format!("actors_it_{name}_{}", std::process::id());
    let admin = Store::connect(&url).await.unwrap();
    let reset = format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}");
    admin.connection().execute_unprepared(&reset).await.unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let pg = Store::connect(&format!("{url}{sep}options=-c%20search_path%3D{schema}"))
        .await
        .unwrap();
    Migrator::up(pg.connection(), None).await.unwrap();
    check(pg).await;
    admin
        .connection()
        .execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

fn task(id: &str, priority: Priority, created_at: u64) -> Task {
    Task {
        task_id: id.into(),
        user: "u1".into(),
        title: format!("title {id}"),
        spec: "spec".into(),
        priority,
        requirements: Capabilities {
            languages: vec!["rust".into()],
            ..Default::default()
        },
        depends_on: vec![schemas::Dependency {
            task_id: "up".into(),
            kind: schemas::DependencyKind::Input,
            contract_key: Some("k".into()),
        }],
        state: TaskState::Pending,
        agent_id: None,
        result: None,
        error: None,
        created_at,
        updated_at: created_at,
    }
}

fn msg(id: &str) -> AppliedMessage<'_> {
    AppliedMessage {
        id,
        key: "task/t1",
        kind: "task.test",
        time: 1,
    }
}

fn draft(key: &str) -> NotificationDraft {
    NotificationDraft {
        user: "u1".into(),
        channel: "default".into(),
        to: "u1".into(),
        subject: "s".into(),
        text: "t".into(),
        dedupe_key: key.into(),
    }
}

#[tokio::test]
async fn writes_are_idempotent_by_message_id() {
    on_every_database("idem", |store| async move {
        let t = task("t1", Priority::Normal, 1);
        assert_eq!(
            store.save_task(&msg("m1"), &t, true, &[]).await.unwrap(),
            Applied::Applied
        );
        assert!(store.is_processed("m1").await.unwrap());
        let done = Task {
            state: TaskState::Done,
            ..t.clone()
        };
        assert_eq!(
            store
                .save_task(&msg("m1"), &done, false, &[draft("n")])
                .await
                .unwrap(),
            Applied::Duplicate
        );
        assert_eq!(
            store.task("t1").await.unwrap().unwrap(),
            t,
            "a duplicate writes nothing"
        );
        assert!(store.notifications(None).await.unwrap().is_empty());
        assert_eq!(
            store
                .save_task(&msg("m2"), &done, false, &[draft("n")])
                .await
                .unwrap(),
            Applied::Applied
        );
        assert_eq!(
            store.task("t1").await.unwrap().unwrap().state,
            TaskState::Done
        );
        // The same dedupe key from another message is the same notification.
        assert_eq!(
            store.save_notification("m3", &draft("n")).await.unwrap(),
            Applied::Applied
        );
        assert_eq!(store.notifications(Some("u1")).await.unwrap().len(), 1);
        assert_eq!(
            store.activity("task/t1").await.unwrap(),
            ["m1", "m2"],
            "the activity log has each applied message once"
        );
        assert!(store.applied_twice().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn queries_order_filter_and_page() {
    on_every_database("queries", |store| async move {
        for (i, (id, priority)) in [
            ("a", Priority::Low),
            ("b", Priority::Urgent),
            ("c", Priority::Normal),
            ("d", Priority::Urgent),
        ]
        .iter()
        .enumerate()
        {
            store
                .save_task(
                    &msg(&format!("m{id}")),
                    &task(id, *priority, i as u64),
                    true,
                    &[],
                )
                .await
                .unwrap();
        }
        let pending: Vec<_> = store
            .pending_tasks(10)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.task_id)
            .collect();
        assert_eq!(pending, ["b", "d", "c", "a"]);

        let agent = Agent {
            agent_id: "a1".into(),
            user: "u1".into(),
            name: "n".into(),
            capabilities: Capabilities::default(),
            max_concurrent: 3,
            online: true,
            last_heartbeat: 0,
            registered_at: 0,
        };
        let registered = AppliedMessage {
            id: "agent-msg",
            key: "agent/a1",
            kind: "agent.registered",
            time: 1,
        };
        store.save_agent(&registered, &agent).await.unwrap();
        let assigned = Task {
            state: TaskState::Assigned,
            agent_id: Some("a1".into()),
            ..task("b", Priority::Urgent, 1)
        };
        store
            .save_task(&msg("mb2"), &assigned, false, &[])
            .await
            .unwrap();
        let candidates = store.candidates().await.unwrap();
        assert_eq!(
            (
                candidates.len(),
                candidates[0].load,
                candidates[0].max_concurrent
            ),
            (1, 1, 3)
        );

        let first = store.list_tasks(None, None, 3, None).await.unwrap();
        assert_eq!(
            first
                .tasks
                .iter()
                .map(|t| t.task_id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        let second = store
            .list_tasks(None, None, 3, first.next.as_deref())
            .await
            .unwrap();
        assert_eq!(
            (
                second.tasks.len(),
                second.tasks[0].task_id.as_str(),
                second.next
            ),
            (1, "d", None)
        );
        let assigned = store
            .list_tasks(Some("u1"), Some(TaskState::Assigned), 10, None)
            .await
            .unwrap();
        assert_eq!(assigned.tasks.len(), 1);
        assert!(
            store
                .list_tasks(Some("u2"), None, 10, None)
                .await
                .unwrap()
                .tasks
                .is_empty()
        );
        let loaded = store.task("a").await.unwrap().unwrap();
        assert_eq!(
            (loaded.depends_on.len(), loaded.requirements.languages.len()),
            (1, 1)
        );
    })
    .await;
}

#[tokio::test]
async fn keys_are_checked_by_hash() {
    on_every_database("keys", |store| async move {
        assert!(!store.has_admin_key().await.unwrap());
        let token = actors::store::keys::new_token().unwrap();
        store
            .add_key(&token, "admin", Role::Admin, None)
            .await
            .unwrap();
        assert!(store.has_admin_key().await.unwrap());
        let principal = store.authenticate(&token).await.unwrap().unwrap();
        assert_eq!(
            (principal.role, principal.may_act_for("anyone")),
            (Role::Admin, true)
        );
        assert_eq!(store.authenticate("sy_not-a-key").await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn concurrent_writes_share_a_commit_but_fail_alone() {
    on_every_database("batch", |store| async move {
        // PostgreSQL refuses NUL in text, which makes one write of the batch fail there.
        let postgres =
            store.connection().get_database_backend() == sea_orm::DatabaseBackend::Postgres;
        let writes = (0..20).map(|i| {
            let store = store.clone();
            let title = if i == 7 {
                "bad\0title".to_owned()
            } else {
                format!("title {i}")
            };
            let task = Task {
                title,
                ..task(&format!("b{i}"), Priority::Normal, i)
            };
            tokio::spawn(async move {
                store
                    .save_task(&msg(&format!("batch{i}")), &task, true, &[])
                    .await
            })
        });
        let results = futures_join(writes.collect()).await;
        for (i, result) in results.iter().enumerate() {
            if postgres && i == 7 {
                assert!(result.is_err(), "the NUL title is refused");
                assert!(
                    !store.is_processed("batch7").await.unwrap(),
                    "nothing of it stays"
                );
            } else {
                assert_eq!(*result.as_ref().unwrap(), Applied::Applied, "write {i}");
            }
        }
        let stored = store
            .list_tasks(None, None, 100, None)
            .await
            .unwrap()
            .tasks
            .len();
        assert_eq!(stored, if postgres { 19 } else { 20 });
    })
    .await;
}

async fn futures_join(
    handles: Vec<tokio::task::JoinHandle<Result<Applied, actors::store::StoreError>>>,
) -> Vec<Result<Applied, actors::store::StoreError>> {
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}
