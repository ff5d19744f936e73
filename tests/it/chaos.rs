//! Chaos under load: panics injected at random into task, agent, orchestrator, notifier and
//! ingress actors (the `chaos` feature's `SWITCHYARD_CHAOS`, compiled only into test builds),
//! a crash loop that exceeds its supervisor's intensity, and a broker killed and restarted
//! while the load runs. Nothing accepted is lost, nothing is applied twice, the tree recovers
//! and shows its restarts over gRPC.

use schemas::proto::ActorNode;

use crate::brokers::Broker;
use crate::harness::*;
use crate::load::{Load, random_ms};
use crate::recovery::accounted;

/// Where panics strike: tree path prefixes and the chance per message handled. The scheduler
/// crash-loops 4 times 4 s in, one past its supervisor's 3 restarts in 5 s: the orchestrator
/// escalates once, to the root, which restarts it. The ingress fails once 6 s in, at least.
const CHAOS: &str = "node/orchestrator/tasks/=0.002;node/agents/=0.05;\
                     node/notifier/requests=0.01;node/ingress=0.0001;node/ingress=burst:1@6000;\
                     node/orchestrator/scheduler=burst:4@4000";

fn find<'a>(node: &'a ActorNode, path: &[&str]) -> &'a ActorNode {
    match path.split_first() {
        None => node,
        Some((first, rest)) => find(
            node.children
                .iter()
                .find(|c| c.name == *first)
                .unwrap_or_else(|| panic!("no {first} in the tree")),
            rest,
        ),
    }
}

/// Restarts of the actor at `path` and of everything below it, summed (a supervisor that
/// escalated starts its children afresh, with no restarts).
fn restarts(root: &ActorNode, path: &[&str]) -> u32 {
    fn below(node: &ActorNode) -> u32 {
        node.restart_count + node.children.iter().map(below).sum::<u32>()
    }
    below(find(root, path))
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
    let root = client.tree().await.unwrap();
    let struck = [
        ("task shards", restarts(&root, &["orchestrator", "tasks"])),
        ("agent shards", restarts(&root, &["agents"])),
        ("notifier", restarts(&root, &["notifier"])),
        ("ingress", restarts(&root, &["ingress"])),
        // The scheduler's crash loop escalated: the orchestrator was restarted whole.
        ("orchestrator", find(&root, &["orchestrator"]).restart_count),
    ];
    eprintln!("restarts: {struck:?}");
    for (what, n) in struck {
        assert!(n > 0, "{what} never restarted: {struck:?}");
    }
    let mut not_running = Vec::new();
    all_running(&root, "", &mut not_running);
    assert!(not_running.is_empty(), "{not_running:?}");
    let panics = node.log().matches("chaos: struck").count();
    assert!(panics >= 5, "{panics} panics struck");
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
