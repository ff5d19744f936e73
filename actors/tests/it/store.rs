//! Persistence: idempotent writes, outbox notifications, queries, keys, on every database.

use actors::credentials::Role;
use actors::domain::agent::Agent;
use actors::domain::assign::Decision;
use actors::domain::task::{NotificationDraft, Task, TaskState};
use actors::domain::{Capabilities, Dependency, DependencyKind, DependencyState, Map, Priority};
use actors::store::{Applied, AppliedMessage, Store, TaskFilter};
use actors::testkit::on_every_database;

/// A pending task of `u1` needing rust, with an input dependency on `up`.
pub(crate) fn task(id: &str, priority: Priority, created_at: u64) -> Task {
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
        dependencies: vec![Dependency {
            upstream: "up".into(),
            kind: DependencyKind::Input,
            contract_key: Some("k".into()),
            state: DependencyState::Waiting,
        }],
        contracts: vec!["out".into()],
        require_plan_approval: false,
        preferred_agent: None,
        attempts: 0,
        max_attempts: 3,
        state: TaskState::Pending,
        agent_id: None,
        inputs: Map::new(),
        result: None,
        error: None,
        blocked_reason: None,
        note: None,
        generation: 1,
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
        user: "u1",
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
        task_id: None,
    }
}

#[tokio::test]
async fn writes_are_idempotent_by_message_id() {
    on_every_database("idem", |store| async move {
        let t = task("t1", Priority::Normal, 1);
        assert_eq!(
            store
                .save_task(&msg("m1"), None, &t, &[], &[])
                .await
                .unwrap(),
            Applied::Applied
        );
        assert!(store.is_processed("m1").await.unwrap());
        let done = Task {
            state: TaskState::Done,
            ..t.clone()
        };
        assert_eq!(
            store
                .save_task(&msg("m1"), Some(&t), &done, &[draft("n")], &[])
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
        let again = Task {
            title: "another".into(),
            ..t.clone()
        };
        assert!(
            store
                .save_task(&msg("m1b"), None, &again, &[], &[])
                .await
                .is_err(),
            "a second creation of t1 under another message id fails"
        );
        assert_eq!(store.task("t1").await.unwrap().unwrap(), t);
        assert!(!store.is_processed("m1b").await.unwrap());
        assert_eq!(
            store
                .save_task(
                    &msg("m2"),
                    Some(&t),
                    &done,
                    &[draft("n")],
                    &["line 1".into()]
                )
                .await
                .unwrap(),
            Applied::Applied
        );
        assert_eq!(
            store.task("t1").await.unwrap().unwrap().state,
            TaskState::Done
        );
        assert_eq!(store.output("t1").await.unwrap(), ["line 1"]);
        // The same dedupe key from another message is the same notification.
        let notify = AppliedMessage {
            key: "notify/u1",
            ..msg("m3")
        };
        assert_eq!(
            store.save_notification(&notify, &draft("n")).await.unwrap(),
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
async fn dependents_of_many_upstreams_come_in_one_call() {
    on_every_database("dependents", |store| async move {
        let on = |upstreams: &[&str]| -> Vec<Dependency> {
            let first = task("x", Priority::Normal, 0).dependencies.remove(0);
            upstreams
                .iter()
                .map(|u| Dependency {
                    upstream: (*u).into(),
                    ..first.clone()
                })
                .collect()
        };
        for (id, upstreams) in [
            ("a", on(&["up"])),
            ("b", on(&["up2"])),
            ("c", on(&["up", "up2"])),
        ] {
            let waiting = Task {
                user: format!("owner-{id}"),
                dependencies: upstreams,
                ..task(id, Priority::Normal, 0)
            };
            store
                .save_task(&msg(&format!("m{id}")), None, &waiting, &[], &[])
                .await
                .unwrap();
        }
        let mut found: Vec<(String, String, String)> = store
            .dependents(&["up".into(), "up2".into(), "nobody".into()])
            .await
            .unwrap()
            .into_iter()
            .map(|(task, user, dependency)| (dependency.upstream, task, user))
            .collect();
        found.sort();
        let expected = [("up", "a"), ("up", "c"), ("up2", "b"), ("up2", "c")]
            .map(|(up, task)| (up.to_owned(), task.to_owned(), format!("owner-{task}")));
        assert_eq!(found, expected);
        // Past the first list of upstreams (1024), the next are read too.
        let many: Vec<String> = (0..1024)
            .map(|i| format!("nobody-{i}"))
            .chain(["up2".to_owned()])
            .collect();
        let mut second: Vec<String> = store
            .dependents(&many)
            .await
            .unwrap()
            .into_iter()
            .map(|(task, _, _)| task)
            .collect();
        second.sort();
        assert_eq!(second, ["b", "c"]);
        assert!(store.dependents(&[]).await.unwrap().is_empty());
        assert!(
            store
                .dependents(&["nobody".into()])
                .await
                .unwrap()
                .is_empty()
        );
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
                    None,
                    &task(id, *priority, i as u64),
                    &[],
                    &[],
                )
                .await
                .unwrap();
        }
        let pending: Vec<_> = store
            .pending_tasks(10, &Default::default())
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
            user: "u1",
        };
        store.save_agent(&registered, &agent).await.unwrap();
        let assigned = Task {
            state: TaskState::Assigned,
            agent_id: Some("a1".into()),
            ..task("b", Priority::Urgent, 1)
        };
        store
            .save_task(
                &msg("mb2"),
                Some(&task("b", Priority::Urgent, 1)),
                &assigned,
                &[],
                &[],
            )
            .await
            .unwrap();
        let slots = store.agent_slots().await.unwrap();
        assert_eq!(
            (slots.len(), slots[0].load, slots[0].max_concurrent),
            (1, 1, 3)
        );

        // A decision counts as a reservation while its task is pending in that generation.
        let decide = |task: &str, generation| Decision {
            task_id: task.into(),
            generation,
            agent_id: "a1".into(),
        };
        store
            .record_decisions(&[decide("c", 1), decide("a", 0)], 5)
            .await
            .unwrap();
        store.record_decisions(&[decide("c", 1)], 6).await.unwrap();
        assert_eq!(store.reservations().await.unwrap(), [decide("c", 1)]);

        // Dependents, and a cascade nobody told: `up` finished while `a`..`d` wait on it.
        let dependents = store.dependents(&["up".into()]).await.unwrap();
        assert_eq!(dependents.len(), 4);
        assert!(store.unheard_cascades(10).await.unwrap().is_empty());
        let up = Task {
            state: TaskState::Done,
            dependencies: Vec::new(),
            ..task("up", Priority::Normal, 9)
        };
        store
            .save_task(&msg("mup"), None, &up, &[], &[])
            .await
            .unwrap();
        let unheard = store.unheard_cascades(10).await.unwrap();
        assert_eq!(
            (unheard.len(), unheard[0].upstream.task_id.as_str()),
            (4, "up")
        );

        // An offline agent's running work is orphaned; a silent one is found.
        let silent = store.silent_agents(1).await.unwrap();
        assert_eq!(silent.len(), 1, "last heard at 0");
        let offline = Agent {
            online: false,
            ..agent.clone()
        };
        store
            .save_agent(
                &AppliedMessage {
                    id: "agent-off",
                    ..registered
                },
                &offline,
            )
            .await
            .unwrap();
        let orphans = store.orphaned_tasks().await.unwrap();
        assert_eq!(
            orphans
                .iter()
                .map(|t| t.task_id.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );

        let first = store
            .list_tasks(&TaskFilter::default(), 3, None)
            .await
            .unwrap();
        assert_eq!(
            first
                .tasks
                .iter()
                .map(|t| t.task_id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        let second = store
            .list_tasks(&TaskFilter::default(), 3, first.next.as_deref())
            .await
            .unwrap();
        assert_eq!(
            (
                second.tasks.len(),
                second.tasks[0].task_id.as_str(),
                second.next
            ),
            (2, "d", None)
        );
        let assigned = store
            .list_tasks(
                &TaskFilter {
                    user: Some("u1".into()),
                    state: Some(TaskState::Assigned),
                    agent_id: None,
                },
                10,
                None,
            )
            .await
            .unwrap();
        assert_eq!(assigned.tasks.len(), 1);
        assert!(
            store
                .list_tasks(
                    &TaskFilter {
                        user: Some("u2".into()),
                        ..Default::default()
                    },
                    10,
                    None
                )
                .await
                .unwrap()
                .tasks
                .is_empty()
        );
        let loaded = store.task("a").await.unwrap().unwrap();
        assert_eq!(
            (
                loaded.dependencies.len(),
                loaded.requirements.languages.len(),
                loaded.contracts.len()
            ),
            (1, 1, 1)
        );
    })
    .await;
}

#[tokio::test]
async fn pages_of_tasks_created_in_the_same_millisecond_hold_each_once() {
    on_every_database("same_ms", |store| async move {
        let ids: Vec<String> = (0..7).rev().map(|i| format!("s{i}")).collect();
        for id in &ids {
            let message = format!("create-{id}");
            store
                .save_task(
                    &msg(&message),
                    None,
                    &task(id, Priority::Normal, 5),
                    &[],
                    &[],
                )
                .await
                .unwrap();
        }
        let filter = TaskFilter {
            state: Some(TaskState::Pending),
            ..Default::default()
        };
        let (mut seen, mut token) = (Vec::new(), None);
        loop {
            let page = store
                .list_tasks(&filter, 3, token.as_deref())
                .await
                .unwrap();
            seen.extend(page.tasks.into_iter().map(|t| t.task_id));
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]);
    })
    .await;
}

#[tokio::test]
async fn keys_are_checked_by_hash() {
    on_every_database("keys", |store| async move {
        assert!(!store.has_admin_key().await.unwrap());
        let token = actors::credentials::new_token().unwrap();
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
        // Write 7 creates the task write 3 creates, which fails one of them on every database
        // (in a shared batch, at the insert); PostgreSQL also refuses write 11's NUL title.
        let postgres =
            store.connection().get_database_backend() == sea_orm::DatabaseBackend::Postgres;
        let writes = (0..20).map(|i| {
            let store = store.clone();
            let title = if i == 11 {
                "bad\0title".to_owned()
            } else {
                format!("title {i}")
            };
            let id = if i == 7 { 3 } else { i };
            let task = Task {
                title,
                ..task(&format!("b{id}"), Priority::Normal, i)
            };
            tokio::spawn(async move {
                store
                    .save_task(&msg(&format!("batch{i}")), None, &task, &[], &[])
                    .await
            })
        });
        let results = futures_join(writes.collect()).await;
        for (i, result) in results.iter().enumerate() {
            if i == 3 || i == 7 || (postgres && i == 11) {
                continue;
            }
            assert_eq!(*result.as_ref().unwrap(), Applied::Applied, "write {i}");
        }
        let twins = [&results[3], &results[7]];
        assert_eq!(
            twins.iter().filter(|r| r.is_err()).count(),
            1,
            "one of two creates of a task fails: {twins:?}"
        );
        let failed = if results[3].is_err() { 3 } else { 7 };
        assert!(
            !store.is_processed(&format!("batch{failed}")).await.unwrap(),
            "nothing of the failed create stays"
        );
        if postgres {
            assert!(results[11].is_err(), "the NUL title is refused");
            assert!(
                !store.is_processed("batch11").await.unwrap(),
                "nothing of it stays"
            );
        }
        let stored = store
            .list_tasks(&TaskFilter::default(), 100, None)
            .await
            .unwrap()
            .tasks
            .len();
        assert_eq!(stored, if postgres { 18 } else { 19 });
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

#[tokio::test]
async fn connections_to_postgres_send_without_waiting_for_acks() {
    let Some(store) = actors::testkit::postgres("nodelay").await else {
        return;
    };
    store.ping().await.unwrap();
    let url = std::env::var("SWITCHYARD_TEST_POSTGRES").unwrap();
    let port = url
        .rsplit_once('@')
        .and_then(|(_, host)| host.split('/').next())
        .and_then(|host| host.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(5432);
    // Other tests open connections meanwhile: one caught between its connect and its
    // TCP_NODELAY reads as off for a moment, so the flags are polled until all are on.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let flags = actors::store::nodelay_towards(port);
        if !flags.is_empty() && flags.iter().all(|on| *on) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "TCP_NODELAY on the connections to port {port}: {flags:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_due_notification_is_claimed_by_one_sender_and_comes_due_again_as_recorded() {
    use actors::store::Delivery;
    on_every_database("outbox", |store| async move {
        let notify = AppliedMessage {
            key: "notify/u1",
            ..msg("o1")
        };
        store.save_notification(&notify, &draft("o")).await.unwrap();
        // Recorded at the message's time (1): due from then.
        let due = store.due_notifications(10, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        let n = &due[0];
        assert!(store.claim_notification(n, 10, 1000).await.unwrap());
        assert!(
            !store.claim_notification(n, 10, 1000).await.unwrap(),
            "a second sender with the same read loses"
        );
        assert!(store.due_notifications(500, 10).await.unwrap().is_empty());
        // A lease that ran out frees it for the next read.
        let again = store.due_notifications(1010, 10).await.unwrap();
        assert_eq!(again.len(), 1);
        let retry = Delivery::Retry {
            error: "503".into(),
            due_at: 5000,
        };
        assert!(
            store
                .claim_notification(&again[0], 1010, 1000)
                .await
                .unwrap()
        );
        assert!(
            !store.record_delivery(n.id, 1010, &retry).await.unwrap(),
            "a sender whose lease passed on records nothing"
        );
        assert!(store.record_delivery(n.id, 2010, &retry).await.unwrap());
        assert!(store.due_notifications(4999, 10).await.unwrap().is_empty());
        let later = store.due_notifications(5000, 10).await.unwrap();
        assert_eq!((later[0].attempts, later[0].lease_until), (1, 0));
        assert_eq!(later[0].last_error.as_deref(), Some("503"));
        let sent = Delivery::Sent {
            destination: "sms:+1555".into(),
            provider_ref: "SM1".into(),
            at: 5001,
        };
        assert!(
            store
                .claim_notification(&later[0], 5000, 1000)
                .await
                .unwrap()
        );
        assert!(store.record_delivery(n.id, 6000, &sent).await.unwrap());
        let all = store.notifications(None).await.unwrap();
        assert_eq!((all[0].status.as_str(), all[0].attempts), ("sent", 2));
        assert_eq!(all[0].provider_ref.as_deref(), Some("SM1"));
        assert!(
            store
                .due_notifications(u64::MAX / 2, 10)
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}

#[tokio::test]
async fn pending_work_leaves_out_only_the_model_tasks_a_spent_budget_holds() {
    on_every_database("held", |store| async move {
        for (id, user, tools) in [
            ("held-model", "u9", vec!["model".to_string()]),
            ("held-plain", "u9", vec![]),
            ("free-model", "u1", vec!["model".to_string()]),
        ] {
            let mut t = task(id, Priority::Normal, 0);
            t.user = user.into();
            t.requirements.tools = tools;
            t.dependencies.clear();
            let message_id = format!("m{id}");
            let message = AppliedMessage {
                user,
                ..msg(&message_id)
            };
            store.save_task(&message, None, &t, &[], &[]).await.unwrap();
        }
        let pending = |held: &[&str]| {
            let store = store.clone();
            let held: std::collections::BTreeSet<String> =
                held.iter().map(|u| u.to_string()).collect();
            async move {
                let ids: Vec<String> = store
                    .pending_tasks(10, &held)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|p| p.task_id)
                    .collect();
                ids
            }
        };
        assert_eq!(
            pending(&[]).await,
            ["free-model", "held-model", "held-plain"]
        );
        assert_eq!(pending(&["u9"]).await, ["free-model", "held-plain"]);
    })
    .await;
}

#[tokio::test]
async fn the_digest_follows_the_state_and_not_its_delivery() {
    use actors::store::Delivery;
    on_every_database("digest", |store| async move {
        let empty = store.digest().await.unwrap();
        assert!(empty.tables.iter().all(|(_, rows)| *rows == 0), "{empty:?}");
        let t = task("t1", Priority::Normal, 1);
        store
            .save_task(&msg("m1"), None, &t, &[draft("n")], &[])
            .await
            .unwrap();
        let one = store.digest().await.unwrap();
        assert_ne!(one.hex, empty.hex);
        assert!(one.tables.contains(&("tasks", 1)) && one.tables.contains(&("notifications", 1)));
        // Sending the notification is the outside world's doing: the digest stays.
        let due = store.due_notifications(10, 10).await.unwrap();
        assert!(store.claim_notification(&due[0], 10, 1000).await.unwrap());
        let sent = Delivery::Sent {
            destination: "webhook:ops".into(),
            provider_ref: "r".into(),
            at: 11,
        };
        assert!(store.record_delivery(due[0].id, 1010, &sent).await.unwrap());
        assert_eq!(store.digest().await.unwrap(), one);
        let done = Task {
            state: TaskState::Done,
            ..t.clone()
        };
        store
            .save_task(&msg("m2"), Some(&t), &done, &[], &[])
            .await
            .unwrap();
        assert_ne!(store.digest().await.unwrap().hex, one.hex);
    })
    .await;
}

#[tokio::test]
async fn an_in_memory_state_database_is_refused_with_a_reason() {
    for url in ["sqlite::memory:", "sqlite://state.sqlite?mode=memory"] {
        let error = Store::connect(url).await.err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("must be a file")),
            "{url}: {error:?}"
        );
    }
}

#[tokio::test]
async fn what_the_writer_commits_on_sqlite_is_checkpointed_into_the_database_file() {
    let temp = actors::testkit::sqlite().await;
    let file = temp.dir.path().join("state.sqlite");
    let size = || std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let before = size();
    let spec = "x".repeat(2000);
    for i in 0..200 {
        let mut new = task(&format!("t{i}"), Priority::Normal, 1);
        new.spec = spec.clone();
        let id = format!("m{i}");
        let applied = temp.store.save_task(&msg(&id), None, &new, &[], &[]).await;
        assert_eq!(applied.unwrap(), Applied::Applied);
    }
    // 400 KB of rows sit in the WAL (far below SQLite's own threshold of 4 MB) until a
    // checkpoint copies them into the database file.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size() < before + 400_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint: the file stays at {} bytes (was {before})",
            size()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The sweep finds unheard cascades from the dependencies still waiting (an index), so its
/// cost follows the dependencies in flight rather than every task that ever finished.
#[tokio::test]
async fn unheard_cascades_are_read_from_the_waiting_dependencies() {
    use sea_orm::{ConnectionTrait, Statement};
    let temp = actors::testkit::sqlite().await;
    let sql = format!("EXPLAIN QUERY PLAN {}", temp.store.unheard_cascades_sql(10));
    let plan: Vec<String> = temp
        .store
        .connection()
        .query_all_raw(Statement::from_string(
            sea_orm::DatabaseBackend::Sqlite,
            sql,
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String>("", "detail").unwrap())
        .collect();
    assert!(plan[0].contains("dependencies_waiting"), "{plan:?}");
}

#[tokio::test]
async fn another_node_s_activity_is_read_in_position_order_on_a_shared_postgres() {
    use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
    use std::time::Duration;
    let Some(url) = actors::testkit::postgres_schema("order").await else {
        return;
    };
    let node_b = actors::testkit::migrated(&url).await;
    let node_a = Store::connect(&url).await.unwrap();
    let watcher = Store::connect(&url).await.unwrap();
    // Node A in the middle of its commit, as its writer does it: the order held, a position
    // taken.
    let a = node_a.connection().begin().await.unwrap();
    a.execute_unprepared(actors::store::HOLD_POSITION_ORDER)
        .await
        .unwrap();
    a.execute_unprepared(
        "INSERT INTO activity (entity, message_id, kind, at, \"user\") \
         VALUES ('task/a', 'from-a', 'task.test', 1, 'u1')",
    )
    .await
    .unwrap();
    // Node B applies a message meanwhile, through its writer.
    let b = tokio::spawn(async move {
        let message = AppliedMessage {
            id: "from-b",
            key: "task/b",
            kind: "task.test",
            time: 2,
            user: "u1",
        };
        let t = task("b", Priority::Normal, 2);
        node_b.save_task(&message, None, &t, &[], &[]).await
    });
    let waits_on_the_order = Statement::from_string(
        sea_orm::DbBackend::Postgres,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1937 \
         AND objid = 'activity'::regclass::oid AND NOT granted",
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let row = watcher
            .connection()
            .query_one_raw(waits_on_the_order.clone())
            .await
            .unwrap()
            .unwrap();
        if b.is_finished() || row.try_get_by_index::<i64>(0).unwrap() > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node B's write neither finished nor waited on the order of positions"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A watcher follows the log by position while A is uncommitted and after.
    let mut after = 0;
    let mut seen = Vec::new();
    let mut follow = async || {
        for row in watcher
            .activity_after(after, None, None, 100)
            .await
            .unwrap()
        {
            after = row.id;
            seen.push(row.message_id);
        }
    };
    follow().await;
    a.commit().await.unwrap();
    let applied = tokio::time::timeout(Duration::from_secs(10), b)
        .await
        .expect("node B's write finishes once A commits")
        .unwrap();
    assert_eq!(applied.unwrap(), Applied::Applied);
    follow().await;
    assert_eq!(seen, ["from-a", "from-b"], "every position, in order");
}

#[tokio::test]
async fn a_write_refused_after_its_first_rows_leaves_none_of_them_beside_its_batch() {
    use actors::domain::calendar::{Decision, Request};
    on_every_database("undo", |store| async move {
        let request = Request {
            request_id: "r1".into(),
            title: "standup".into(),
            start: 1000,
            end: 2000,
        };
        let decide = |id: &'static str| AppliedMessage {
            id,
            key: "calendar/c1",
            kind: "calendar.requested",
            time: 1,
            user: "u1",
        };
        let first = store
            .save_calendar_decision(&decide("first"), "c1", Some((&request, &Decision::Booked)))
            .await;
        assert_eq!(first.unwrap(), Applied::Applied);
        // A second decision of the same request is refused at its calendar row, after its
        // processed id and before its activity row were written; its neighbours are not.
        let writes = (0..20).map(|i| {
            let (store, request) = (store.clone(), request.clone());
            tokio::spawn(async move {
                if i == 10 {
                    let decided = Some((&request, &Decision::Booked));
                    return store
                        .save_calendar_decision(&decide("again"), "c1", decided)
                        .await;
                }
                let t = task(&format!("n{i}"), Priority::Normal, i);
                store
                    .save_task(&msg(&format!("neighbour{i}")), None, &t, &[], &[])
                    .await
            })
        });
        let results = futures_join(writes.collect()).await;
        for (i, result) in results.iter().enumerate() {
            if i == 10 {
                assert!(
                    result.is_err(),
                    "the second decision is refused: {result:?}"
                );
            } else {
                assert_eq!(*result.as_ref().unwrap(), Applied::Applied, "write {i}");
            }
        }
        assert!(
            !store.is_processed("again").await.unwrap(),
            "its processed id is undone"
        );
        let logged: Vec<String> = store
            .activity_after(0, None, None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.message_id)
            .collect();
        assert_eq!(logged.len(), 20, "{logged:?}");
        assert!(!logged.contains(&"again".to_owned()));
        assert_eq!(store.calendar_decisions("c1").await.unwrap().len(), 1);
    })
    .await;
}
