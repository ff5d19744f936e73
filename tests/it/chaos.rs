//! Chaos under load: panics injected at random into task, agent, orchestrator, notifier and
//! ingress actors (the `chaos` feature's `SWITCHYARD_CHAOS`, compiled only into test builds),
//! a crash loop that exceeds its supervisor's intensity, and a broker killed and restarted
//! while the load runs. Nothing accepted is lost, nothing is applied twice, the tree recovers
//! and every actor runs again.

use schemas::proto::ActorNode;

use crate::brokers::Broker;
use crate::harness::*;
use crate::load::{Load, random_ms};
use crate::recovery::accounted;

/// Where panics strike: tree path prefixes and the chance per message handled (a few strikes
/// each in the test's load: at 0.005 a task shard restarting into a burst of 500 waiting
/// messages was struck again almost surely, and crash-looped past the test's deadline once
/// the node took 3k events in the 12 s). The scheduler
/// crash-loops 4 times 4 s in, one past its supervisor's 3 restarts in 5 s: the orchestrator
/// escalates once, to the root, which restarts it. The ingress fails once 6 s in, at least,
/// and a task shard once 5 s in (at 0.001 a run of ~2.6k events went without a task-shard
/// strike once: about e^-2.6, 7% of runs).
const CHAOS: &str = "node/orchestrator/tasks/=0.001;node/orchestrator/tasks/=burst:1@5000;\
                     node/agents/=0.05;node/notifier/requests=0.03;node/ingress=0.0001;\
                     node/ingress=burst:1@6000;node/orchestrator/scheduler=burst:4@4000";

/// Strikes so far by actor path, from the node's `switchyard_chaos_strikes_total`.
async fn strikes(node: &Proc, token: &str) -> Vec<(String, f64)> {
    let all = metrics_at(&format!("http://127.0.0.1:{}", node.http), token).await;
    all.into_iter()
        .filter_map(|(series, n)| {
            let path = series.strip_prefix("switchyard_chaos_strikes_total{path=\"")?;
            Some((path.strip_suffix("\"}")?.to_owned(), n))
        })
        .collect()
}

fn all_running(node: &ActorNode, path: &str, out: &mut Vec<String>) {
    let here = format!("{path}/{}", node.name);
    if node.status != "running" {
        out.push(format!("{here}: {}", node.status));
    }
    for child in &node.children {
        all_running(child, &here, out);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_panics_under_load_lose_nothing_and_the_tree_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let mut node = Proc::launch_on(dir.path(), ports, &[], &[("SWITCHYARD_CHAOS", CHAOS)]).await;
    let load = Load::start(dir.path().to_owned(), ports).await;
    tokio::time::sleep(std::time::Duration::from_secs(12)).await;
    let done = load.finish().await;
    assert!(node.alive(), "the node survived the chaos");
    eprintln!(
        "{} events accepted, {} tasks done",
        done.accepted.len(),
        done.tasks
    );
    accounted(dir.path(), &done.accepted).await;

    let mut client = node.client().await;
    let struck = strikes(&node, &client.token).await;
    let under = |prefix: &str| -> f64 {
        struck
            .iter()
            .filter(|(path, _)| path.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    };
    eprintln!("strikes: {struck:?}");
    for prefix in [
        "node/orchestrator/tasks/",
        "node/agents/",
        "node/notifier/requests",
        "node/ingress",
    ] {
        assert!(under(prefix) > 0.0, "nothing struck {prefix}: {struck:?}");
    }
    assert_eq!(under("node/orchestrator/scheduler"), 4.0, "{struck:?}");
    // Four in a row are one past the orchestrator's intensity: it escalated to the root,
    // which restarted it whole.
    let log = node.log();
    assert!(
        log.contains("node/orchestrator: more than 3 restarts"),
        "no escalation in the log"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let root = client.tree().await.unwrap();
        let mut not_running = Vec::new();
        all_running(&root, "", &mut not_running);
        let orchestrator = root.children.iter().find(|c| c.name == "orchestrator");
        if not_running.is_empty() {
            assert!(
                orchestrator.is_some_and(|o| o.restart_count >= 1),
                "the root never restarted the orchestrator: {orchestrator:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not running: {not_running:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The broker killed while the load runs and restarted a moment later.
async fn broker_killed_under_load(mut broker: Broker) {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let mut node = Proc::launch_on(dir.path(), ports, &broker.flags(), &[]).await;
    let load = Load::start(dir.path().to_owned(), ports).await;
    tokio::time::sleep(random_ms(1000, 3000)).await;
    broker.kill();
    tokio::time::sleep(random_ms(1000, 3000)).await;
    broker.restart().await;
    tokio::time::sleep(random_ms(1000, 2000)).await;
    let done = load.finish().await;
    assert!(node.alive(), "the node survived the outage");
    accounted(dir.path(), &done.accepted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_broker_killed_under_load_loses_nothing() {
    if let Some(broker) = Broker::kafka(broker_adapters::testkit::TansuBuild::RegistrySqlite).await
    {
        broker_killed_under_load(broker).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_broker_killed_under_load_loses_nothing() {
    if let Some(broker) = Broker::rabbit().await {
        broker_killed_under_load(broker).await;
    }
}
