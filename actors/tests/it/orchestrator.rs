//! The orchestrator's decisions outlive it: one restarted before its decisions were applied
//! counts them against the agents' room and publishes them again under the same ids, rather
//! than deciding anew. No ingress runs here, so nothing it publishes is applied.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actors::domain::agent::Agent;
use actors::domain::task::Task;
use actors::domain::{Capabilities, Priority};
use actors::store::AppliedMessage;
use actors::{NodeContext, OrchestratorActor, Ownership, Store, names};
use broker_adapters::{Bus, EmbeddedBus, ReplayFrom};
use ractor::Actor;

fn message(id: &str) -> AppliedMessage<'_> {
    AppliedMessage {
        id,
        key: "test",
        kind: "test",
        time: actors::store::now_ms(),
        user: "u1",
    }
}

/// A pending task anyone can take, depending on nothing.
fn pending(id: &str, created_at: u64) -> Task {
    Task {
        requirements: Capabilities::default(),
        dependencies: Vec::new(),
        contracts: Vec::new(),
        ..crate::store::task(id, Priority::Normal, created_at)
    }
}

/// The `task.assigned` messages on the bus, as (message id, task id), in order.
async fn assignments(bus: &dyn Bus) -> Vec<(String, String)> {
    let mut replay = bus
        .replay(schemas::EVENTS_TOPIC, ReplayFrom::Start)
        .await
        .unwrap();
    let mut found = Vec::new();
    while let Some(record) = replay.next().await.unwrap() {
        let envelope = schemas::decode(&record.payload).unwrap();
        if let schemas::Message::TaskAssigned(m) = envelope.message {
            found.push((envelope.id, m.task_id));
        }
    }
    found
}

/// Agent `a1` of user `u1`, online, with room for `max_concurrent` tasks.
async fn register_agent(store: &Store, max_concurrent: u32) {
    let now = actors::store::now_ms();
    let agent = Agent {
        agent_id: "a1".into(),
        user: "u1".into(),
        name: "a1".into(),
        capabilities: Capabilities::default(),
        max_concurrent,
        online: true,
        last_heartbeat: now,
        registered_at: now,
    };
    store
        .save_agent(&message("register"), &agent)
        .await
        .unwrap();
}

/// A leading node's context on `temp`'s store and a one-partition embedded bus beside it,
/// under tree root `root`; its sweep waits a minute.
async fn context(temp: &actors::testkit::TempStore, root: &str) -> (NodeContext, Arc<EmbeddedBus>) {
    let bus = Arc::new(
        EmbeddedBus::open(&temp.dir.path().join("bus.sqlite"))
            .await
            .unwrap(),
    );
    bus.create_topic(schemas::EVENTS_TOPIC, 1).await.unwrap();
    let ownership = Ownership::default();
    ownership.add(&[0]);
    let ctx = NodeContext {
        store: temp.store.clone(),
        bus: bus.clone(),
        node_id: "n1".into(),
        root: root.into(),
        tree: Default::default(),
        partitions: 1,
        passivate_after: Duration::from_secs(60),
        assign_interval: Duration::from_secs(60),
        ownership,
        agent_timeout: Duration::from_secs(600),
        agent_signals: Default::default(),
        outcomes: Default::default(),
        cascades: Default::default(),
        assign_request: Default::default(),
        channels: Default::default(),
        notifier: Default::default(),
        budgets: Default::default(),
        clock: Default::default(),
        automation_grace: Duration::from_secs(60),
        caldav: None,
        models: Default::default(),
    };
    (ctx, bus)
}

/// Waits, at most 30 s, until `want` tasks were assigned on `bus`.
async fn wait_assignments(bus: &dyn Bus, want: usize) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = assignments(bus).await;
        if found.len() >= want {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{want} assignments wanted, found {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `ctx`'s orchestrator under its name.
async fn spawn(
    ctx: &NodeContext,
) -> (
    ractor::ActorRef<actors::OrchestratorMsg>,
    tokio::task::JoinHandle<()>,
) {
    Actor::spawn(
        Some(ctx.path(names::SCHEDULER)),
        OrchestratorActor,
        ctx.clone(),
    )
    .await
    .unwrap()
}

/// Runs an orchestrator until it has handled what it starts with (its start-up pass).
async fn run_once(ctx: &NodeContext) {
    let (orchestrator, handle) = spawn(ctx).await;
    orchestrator
        .drain_and_wait(Some(Duration::from_secs(30)))
        .await
        .unwrap();
    handle.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_orchestrator_counts_and_resends_its_unapplied_decisions() {
    let temp = actors::testkit::sqlite().await;
    let store: Store = temp.store.clone();
    let now = actors::store::now_ms();
    register_agent(&store, 2).await;
    for i in 0..5 {
        let task = pending(&format!("t{i}"), now + i);
        let id = format!("create-{i}");
        store
            .save_task(&message(&id), None, &task, &[], &[])
            .await
            .unwrap();
    }
    let (ctx, bus) = context(&temp, "orchestrator-test").await;

    run_once(&ctx).await;
    let first = assignments(bus.as_ref()).await;
    assert_eq!(first.len(), 2, "the agent's room: {first:?}");
    assert_eq!(first[0].1, "t0", "oldest first");

    // An urgent task arrives, then a new orchestrator starts: the two decisions still fill
    // the agent, so the urgent task waits, and they go out again unchanged.
    let urgent = Task {
        priority: Priority::Urgent,
        ..pending("urgent", now + 10)
    };
    store
        .save_task(&message("create-urgent"), None, &urgent, &[], &[])
        .await
        .unwrap();
    run_once(&ctx).await;
    let both = assignments(bus.as_ref()).await;
    assert_eq!(both.len(), 4, "{both:?}");
    let distinct: BTreeSet<&(String, String)> = both.iter().collect();
    assert_eq!(
        distinct,
        first.iter().collect(),
        "the same decisions, resent"
    );
    assert_eq!(store.reservations().await.unwrap().len(), 2);
}

/// Pokes share one request, and each burst of them still gets a pass: the sweep waits a
/// minute here, so every assignment after the start-up pass comes of a poke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_pokes_gets_a_pass_and_the_next_poke_another() {
    let temp = actors::testkit::sqlite().await;
    let now = actors::store::now_ms();
    register_agent(&temp.store, 10).await;
    let (ctx, bus) = context(&temp, "poke-test").await;
    let (orchestrator, handle) = spawn(&ctx).await;
    for (round, pokes) in [(0, 1000), (1, 1), (2, 1)] {
        let task = pending(&format!("t{round}"), now + round);
        let id = format!("create-{round}");
        temp.store
            .save_task(&message(&id), None, &task, &[], &[])
            .await
            .unwrap();
        for _ in 0..pokes {
            actors::poke(&ctx);
        }
        let found = wait_assignments(bus.as_ref(), round as usize + 1).await;
        assert_eq!(found[round as usize].1, format!("t{round}"));
    }
    orchestrator.stop(None);
    handle.await.unwrap();
}

/// A sweep publishes again, under the same id, a decision that was not applied (no ingress
/// runs here), and decides nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_publishes_an_unapplied_decision_again() {
    let temp = actors::testkit::sqlite().await;
    register_agent(&temp.store, 10).await;
    temp.store
        .save_task(
            &message("create-t0"),
            None,
            &pending("t0", actors::store::now_ms()),
            &[],
            &[],
        )
        .await
        .unwrap();
    let (ctx, bus) = context(&temp, "sweep-test").await;
    let ctx = NodeContext {
        assign_interval: Duration::from_millis(50),
        ..ctx
    };
    let (orchestrator, handle) = spawn(&ctx).await;
    let found = wait_assignments(bus.as_ref(), 3).await;
    assert!(found.iter().all(|f| f == &found[0]), "{found:?}");
    orchestrator.stop(None);
    handle.await.unwrap();
}

/// Taking the lead reads the decisions another leader recorded meanwhile: they fill the
/// agent, so this node publishes them again and decides nothing of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taking_the_lead_counts_the_decisions_recorded_meanwhile() {
    let temp = actors::testkit::sqlite().await;
    let now = actors::store::now_ms();
    register_agent(&temp.store, 2).await;
    let save = |task: Task| {
        let store = temp.store.clone();
        async move {
            let id = format!("create-{}", task.task_id);
            store
                .save_task(&message(&id), None, &task, &[], &[])
                .await
                .unwrap();
        }
    };
    save(pending("first", now)).await;
    let (ctx, bus) = context(&temp, "lead-test").await;
    let (orchestrator, handle) = spawn(&ctx).await;
    // The start-up pass gave `first` to a1: one place left.
    wait_assignments(bus.as_ref(), 1).await;
    // Meanwhile another leader gave `theirs` to a1; `older` waits.
    save(pending("older", now + 1)).await;
    let task = pending("theirs", now + 2);
    let theirs = actors::domain::assign::Decision {
        task_id: task.task_id.clone(),
        generation: task.generation,
        agent_id: "a1".into(),
    };
    save(task).await;
    temp.store.record_decisions(&[theirs], now).await.unwrap();
    orchestrator
        .send_message(actors::OrchestratorMsg::Lead)
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let found = loop {
        let found = assignments(bus.as_ref()).await;
        if found.iter().any(|(_, task)| task == "theirs") {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "`theirs` not published again: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(found.iter().all(|(_, task)| task != "older"), "{found:?}");
    orchestrator.stop(None);
    handle.await.unwrap();
}
